//! The proxy's tokio runtime: how many worker threads it has and how the kernel schedules them.
//!
//! Why this is not tokio's default (one worker per core, normal scheduling): the proxy
//! usually shares its cores with the clients and Postgres backends it relays between, and
//! each of its sends wakes one of them. Measured on a 2-core machine with pgbench and
//! Postgres beside it (`benches/results/runtime-*.md`), one worker per core made the two
//! workers wake each other through futexes for work the other had just taken, and the
//! proxy, waking before its peers had run, answered one message per wake-up where PgBouncer
//! (one thread, which runs when the others are done) answered a handful. Half the cores and
//! `SCHED_BATCH` (the kernel does not let the proxy's wake-ups preempt a running process, so
//! its work is batched behind them) raised passthrough throughput 15–30 %, with no added
//! latency at one client (a wake-up onto an idle core runs at once either way).

use crate::config::ThreadScheduling;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use tokio::runtime::{Builder, Runtime};
use tracing::warn;

/// The worker count `configured` means: itself, or for 0 half the cores (at least one).
pub fn worker_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(1)
}

/// A multi-thread runtime with `worker_threads` workers (0: see [`worker_threads`]) whose
/// threads, blocking pool included, run under `scheduling`.
pub fn build(worker_threads_setting: usize, scheduling: ThreadScheduling) -> io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    builder
        .worker_threads(worker_threads(worker_threads_setting))
        .thread_name("pgpolyglot-worker")
        .enable_all();
    if scheduling == ThreadScheduling::Batch {
        // Blocking-pool threads come and go: say it once, not per thread.
        static WARNED: AtomicBool = AtomicBool::new(false);
        builder.on_thread_start(|| {
            if let Err(e) = set_batch_scheduling() {
                if !WARNED.swap(true, Relaxed) {
                    warn!(error = %e, "could not set SCHED_BATCH on runtime threads; they stay SCHED_OTHER");
                }
            }
        });
    }
    builder.build()
}

/// Puts the calling thread under `SCHED_BATCH` (no privilege needed: it only gives up
/// wake-up preemption). Elsewhere than Linux there is nothing to set.
#[cfg(target_os = "linux")]
fn set_batch_scheduling() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the call's duration; pid 0 is this thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_batch_scheduling() -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_half_the_cores_and_never_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(worker_threads(0), (cores / 2).max(1));
        assert_eq!(worker_threads(3), 3);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn batch_runtime_threads_run_under_sched_batch() {
        for (scheduling, expected) in [
            (ThreadScheduling::Batch, libc::SCHED_BATCH),
            (ThreadScheduling::Normal, libc::SCHED_OTHER),
        ] {
            let rt = build(1, scheduling).expect("runtime");
            // SAFETY: querying the calling thread's policy has no preconditions.
            let policy = rt.block_on(async {
                tokio::spawn(async { unsafe { libc::sched_getscheduler(0) } })
                    .await
                    .expect("task")
            });
            assert_eq!(policy, expected, "{scheduling:?}");
        }
    }
}
