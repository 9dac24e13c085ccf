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
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;
use tracing::warn;

/// The worker count `configured` means: itself, or for 0 half the cores (at least one).
pub fn worker_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(1)
}

/// The proxy's runtime: tokio's current-thread scheduler when it has one worker, the
/// multi-thread one otherwise.
///
/// Why current-thread for one worker: a multi-thread runtime with a single worker still pays
/// for work stealing it never does (an injection queue checked on every tick, atomic task
/// state, two clock reads per batch of tasks to tune its global-queue interval) and runs the
/// future given to `block_on` on a thread that is not the worker. Measured with callgrind on
/// `pgbench -S -M prepared` passthrough, the current-thread scheduler executes 6 % fewer
/// instructions per transaction (10,683 → 10,076). The one thing it cannot do is
/// `block_in_place`; the embedded search index, whose writes may block, hands them to the
/// blocking pool instead (`crate::search::index`).
///
/// A current-thread runtime runs only while a thread is inside [`ProxyRuntime::block_on`]:
/// `serve` calls it on the main thread; a program that embeds the proxy (the load benchmark)
/// uses [`ProxyRuntime::start_background`] to give it a thread of its own.
pub struct ProxyRuntime {
    runtime: Runtime,
    scheduling: ThreadScheduling,
    current_thread: bool,
}

impl ProxyRuntime {
    /// Runs `f` to completion on the calling thread. With one worker the calling thread *is*
    /// the worker, so it is put under the runtime's scheduling policy first.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        if self.current_thread {
            apply_scheduling(self.scheduling);
        }
        self.runtime.block_on(f)
    }

    /// The handle tasks are spawned through.
    pub fn handle(&self) -> &Handle {
        self.runtime.handle()
    }

    /// Whether this is the one-worker current-thread runtime.
    pub fn is_current_thread(&self) -> bool {
        self.current_thread
    }

    /// Drives the runtime from a thread of its own until the returned value is dropped.
    pub fn start_background(self) -> io::Result<BackgroundRuntime> {
        let handle = self.runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("pgpolyglot-worker".into())
            .spawn(move || {
                self.block_on(async {
                    let _ = stopped.await;
                });
                self.runtime.shutdown_background();
            })?;
        Ok(BackgroundRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A [`ProxyRuntime`] driven by a thread of its own; dropping it stops the runtime without
/// waiting for its tasks (as `Runtime::shutdown_background`) and joins the thread.
pub struct BackgroundRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundRuntime {
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The runtime for `worker_threads_setting` workers (0: see [`worker_threads`]) whose
/// threads, blocking pool included, run under `scheduling`.
pub fn build(
    worker_threads_setting: usize,
    scheduling: ThreadScheduling,
) -> io::Result<ProxyRuntime> {
    let workers = worker_threads(worker_threads_setting);
    let current_thread = workers == 1;
    let mut builder = if current_thread {
        Builder::new_current_thread()
    } else {
        let mut b = Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.thread_name("pgpolyglot-worker").enable_all();
    if scheduling == ThreadScheduling::Batch {
        builder.on_thread_start(|| apply_scheduling(ThreadScheduling::Batch));
    }
    Ok(ProxyRuntime {
        runtime: builder.build()?,
        scheduling,
        current_thread,
    })
}

/// Puts the calling thread under `scheduling`; a failure is logged once and the thread keeps
/// its policy.
fn apply_scheduling(scheduling: ThreadScheduling) {
    // Blocking-pool threads come and go: say it once, not per thread.
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = set_scheduling(scheduling) {
        if !WARNED.swap(true, Relaxed) {
            warn!(error = %e, ?scheduling, "could not set the runtime threads' scheduling policy; they keep theirs");
        }
    }
}

/// Puts the calling thread under `SCHED_BATCH` or `SCHED_OTHER` (no privilege needed for
/// either: batch only gives up wake-up preemption). Elsewhere than Linux there is nothing to
/// set.
#[cfg(target_os = "linux")]
fn set_scheduling(scheduling: ThreadScheduling) -> io::Result<()> {
    let policy = match scheduling {
        ThreadScheduling::Batch => libc::SCHED_BATCH,
        ThreadScheduling::Normal => libc::SCHED_OTHER,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the call's duration; pid 0 is this thread.
    let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_scheduling(_: ThreadScheduling) -> io::Result<()> {
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
    fn runtime_threads_run_under_the_configured_policy() {
        for workers in [1, 2] {
            for (scheduling, expected) in [
                (ThreadScheduling::Batch, libc::SCHED_BATCH),
                (ThreadScheduling::Normal, libc::SCHED_OTHER),
            ] {
                let rt = build(workers, scheduling).expect("runtime");
                assert_eq!(rt.is_current_thread(), workers == 1);
                // SAFETY: querying the calling thread's policy has no preconditions.
                let policy = rt.block_on(async {
                    tokio::spawn(async { unsafe { libc::sched_getscheduler(0) } })
                        .await
                        .expect("task")
                });
                assert_eq!(policy, expected, "{workers} workers, {scheduling:?}");
            }
        }
    }

    #[test]
    fn a_background_runtime_runs_spawned_tasks_until_dropped() {
        for workers in [1, 2] {
            let rt = build(workers, ThreadScheduling::Normal)
                .expect("runtime")
                .start_background()
                .expect("thread");
            let (tx, rx) = std::sync::mpsc::channel();
            // A task that needs the runtime's timer and I/O driver turning, not just a poll.
            rt.handle().spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
            });
            let ran_on = rx
                .recv_timeout(std::time::Duration::from_secs(5))
                .expect("the spawned task ran");
            assert_eq!(
                ran_on.as_deref(),
                Some("pgpolyglot-worker"),
                "{workers} workers"
            );
            // Dropping stops the runtime: a task spawned afterwards never runs.
            let handle = rt.handle().clone();
            drop(rt);
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            drop(handle.spawn(async move {
                let _ = tx.send(());
            }));
            assert!(rx
                .recv_timeout(std::time::Duration::from_millis(200))
                .is_err());
        }
    }
}
