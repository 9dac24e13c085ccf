//! Hot reload of `policies/*.toml`: on SIGHUP, on a change to the directory, and on the
//! admin console's `RELOAD`.
//!
//! Every trigger goes through [`reload`]: the whole directory is loaded and validated as a
//! new set, and only a valid set replaces the one in force ([`super::PolicyStore::replace`]
//! swaps an `Arc`, so sessions see either the old or the new set, never a mix). An invalid
//! set is rejected with one `warn!` line naming every problem by file and line, counted in
//! `pgpolyglot_policy_reload_failures_total`, and the old set keeps running.
//!
//! [`watch`] is the background task behind the first two triggers. It polls rather than
//! using inotify: a poll every `policy_watch_interval` (2 s by default) of a handful of
//! small files costs nothing, needs no extra crate, and works the same on every filesystem
//! (including bind mounts and ConfigMap symlink swaps, where file events are unreliable).
//! It compares a hash of the `*.toml` files' names and contents, so a change reloads once,
//! a `touch` alone does not, and an invalid set that stays unchanged is reported once, not
//! on every poll.

use super::store::PolicySet;
use crate::admin::metrics::Metrics;
use crate::config::policy::PolicyErrors;
use crate::context::ProxyContext;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};
use xxhash_rust::xxh3::Xxh3;

/// What asked for a reload (it is logged and reported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// SIGHUP.
    Signal,
    /// The watcher saw the policy directory change.
    FileChange,
    /// The admin console's `RELOAD`.
    Admin,
}

impl fmt::Display for ReloadTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReloadTrigger::Signal => "SIGHUP",
            ReloadTrigger::FileChange => "file change",
            ReloadTrigger::Admin => "admin RELOAD",
        })
    }
}

/// A reload that replaced the policy set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub trigger: ReloadTrigger,
    /// Generation of the set now in force.
    pub generation: u64,
    /// Generation of the set it replaced.
    pub previous_generation: u64,
    /// Policies in the new set.
    pub policies: usize,
    /// Whether the new set differs from the old one (a reload of unchanged files still
    /// installs a new generation).
    pub changed: bool,
}

impl fmt::Display for ReloadOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policies reloaded ({}): generation {} replaces {}, {} polic{}, {}",
            self.trigger,
            self.generation,
            self.previous_generation,
            self.policies,
            if self.policies == 1 { "y" } else { "ies" },
            if self.changed { "changed" } else { "unchanged" }
        )
    }
}

/// A reload that was rejected; the set in force is untouched.
#[derive(Debug, thiserror::Error)]
#[error("policy reload ({trigger}) rejected, generation {kept_generation} keeps running: {errors}")]
pub struct ReloadError {
    pub trigger: ReloadTrigger,
    /// Generation of the set still in force.
    pub kept_generation: u64,
    /// Every problem, by file and line.
    pub errors: PolicyErrors,
}

/// Serializes reloads, so two triggers at once cannot both read generation N and both
/// install N + 1. Process-wide rather than per proxy: reloads are rare and quick.
static RELOAD_LOCK: Mutex<()> = Mutex::new(());

/// Load and validate `ctx.config.policies`; install the result if it is valid, otherwise
/// keep the set in force. Logs and counts either way. Reads files: from async code, call it
/// through `spawn_blocking` if the policy directory may be slow (a network filesystem).
pub fn reload(ctx: &ProxyContext, trigger: ReloadTrigger) -> Result<ReloadOutcome, ReloadError> {
    let _guard = RELOAD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let current = ctx.policies.current();
    match PolicySet::load(&ctx.config.policies, current.generation + 1) {
        Ok(set) => {
            let outcome = ReloadOutcome {
                trigger,
                generation: set.generation,
                previous_generation: current.generation,
                policies: set.policies.len(),
                changed: set.policies != current.policies,
            };
            ctx.policies.replace(set);
            // The catalog reads the types of the policies' key columns (binary-bound keys
            // are decoded with them): re-read it for the new set.
            if outcome.changed {
                ctx.catalog.schema_changed();
            }
            Metrics::inc(&ctx.metrics.policy_reloads);
            info!(
                %trigger,
                generation = outcome.generation,
                policies = outcome.policies,
                changed = outcome.changed,
                dir = %ctx.config.policies.display(),
                "policies reloaded"
            );
            Ok(outcome)
        }
        Err(errors) => {
            Metrics::inc(&ctx.metrics.policy_reload_failures);
            let issues: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            warn!(
                %trigger,
                kept_generation = current.generation,
                problems = issues.len(),
                issues = %issues.join("; "),
                "policy reload rejected; the policies in force keep running"
            );
            Err(ReloadError {
                trigger,
                kept_generation: current.generation,
                errors,
            })
        }
    }
}

/// The reload task: SIGHUP, and a poll of the policy directory every
/// `policy_watch_interval` (`0s`: no polling). Runs until `shutdown` turns true.
///
/// SIGHUP is registered, and the directory's first fingerprint taken, before this returns
/// (not when the task first runs): a SIGHUP sent once `server::start` has returned is never
/// lost to the default action, which would end the process, and a file changed just after
/// the start-up load is seen as a change. Spawn the returned future.
pub fn watch(
    ctx: Arc<ProxyContext>,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot handle SIGHUP; policies reload on file change and RELOAD only");
            None
        }
    };
    let polling = !ctx.config.policy_watch_interval.is_zero();
    let last = polling.then(|| fingerprint(&ctx.config.policies));
    run(ctx, shutdown, hangup, last)
}

async fn run(
    ctx: Arc<ProxyContext>,
    mut shutdown: watch::Receiver<bool>,
    mut hangup: Option<tokio::signal::unix::Signal>,
    mut last: Option<u64>,
) {
    let interval = ctx.config.policy_watch_interval;
    let polling = !interval.is_zero();
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; the first comparison is one interval from now.
    ticker.tick().await;
    loop {
        tokio::select! {
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { break },
            Some(()) = next_hangup(&mut hangup) => {
                // What SIGHUP loads is not a change for the poll to reload again. Taken
                // before loading, so an edit racing the load is at worst loaded twice.
                if polling {
                    last = Some(fingerprint_off_thread(&ctx).await);
                }
                reload_off_thread(&ctx, ReloadTrigger::Signal).await;
            }
            _ = ticker.tick(), if polling => {
                let now = fingerprint_off_thread(&ctx).await;
                if last != Some(now) {
                    last = Some(now);
                    reload_off_thread(&ctx, ReloadTrigger::FileChange).await;
                }
            }
        }
    }
}

/// The next SIGHUP; never, when SIGHUP could not be registered.
async fn next_hangup(hangup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangup {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// [`reload`] on the blocking pool (it reads files). The outcome is already logged.
async fn reload_off_thread(ctx: &Arc<ProxyContext>, trigger: ReloadTrigger) {
    let ctx = Arc::clone(ctx);
    if let Err(e) = tokio::task::spawn_blocking(move || reload(&ctx, trigger)).await {
        warn!(error = %e, %trigger, "policy reload task failed");
    }
}

async fn fingerprint_off_thread(ctx: &Arc<ProxyContext>) -> u64 {
    let ctx = Arc::clone(ctx);
    tokio::task::spawn_blocking(move || fingerprint(&ctx.config.policies))
        .await
        // A panicked hash is "unknown": differs from any real one, so the next poll reloads.
        .unwrap_or(0)
}

/// Hash of the names and contents of the `*.toml` files [`PolicySet::load`] would read
/// (in the same order), including why one could not be read. A missing directory hashes
/// like an empty one, as it loads like one.
pub fn fingerprint(dir: &Path) -> u64 {
    let mut h = Xxh3::new();
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            h.update(format!("unreadable directory: {e}").as_bytes());
            return h.digest();
        }
    };
    files.sort();
    for f in files {
        let name = f.as_os_str().as_encoded_bytes();
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name);
        match std::fs::read(&f) {
            Ok(bytes) => {
                h.update(&(bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Err(e) => h.update(format!("unreadable: {e}").as_bytes()),
        }
    }
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::sync::atomic::Ordering::Relaxed;

    const GOOD: &str = "tables = [\"public.accounts\"]\n[cache]\nwindow = \"10s\"\n";
    const BAD: &str = "tables = [\"public.docs\"]\n[search]\ncolumns = [\"body\"]\nmax_candidate_fraction = 2.0\n";

    fn context(dir: &Path) -> ProxyContext {
        let config = Config {
            policies: dir.to_path_buf(),
            http: String::new(),
            ..Config::default()
        };
        let set = PolicySet::load(dir, 1).expect("initial policies");
        ProxyContext::new(config, set).expect("context").0
    }

    #[test]
    fn valid_set_replaces_invalid_set_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), GOOD).unwrap();
        let ctx = context(dir.path());
        assert_eq!(ctx.policies.current().generation, 1);

        // Unchanged files: a new generation, reported as unchanged.
        let out = reload(&ctx, ReloadTrigger::Admin).unwrap();
        assert_eq!((out.generation, out.previous_generation), (2, 1));
        assert!(!out.changed);
        assert_eq!(
            out.to_string(),
            "policies reloaded (admin RELOAD): generation 2 replaces 1, 1 policy, unchanged"
        );

        std::fs::write(dir.path().join("b.toml"), BAD).unwrap();
        let err = reload(&ctx, ReloadTrigger::Signal).unwrap_err();
        assert_eq!(err.kept_generation, 2);
        assert_eq!(err.errors.0.len(), 1);
        let text = err.to_string();
        assert!(
            text.starts_with(
                "policy reload (SIGHUP) rejected, generation 2 keeps running: 1 problem(s)"
            ),
            "{text}"
        );
        assert!(text.contains("b.toml:4: 2: must be in (0, 1]"), "{text}");
        let set = ctx.policies.current();
        assert_eq!((set.generation, set.policies.len()), (2, 1));
        assert_eq!(ctx.metrics.policy_reload_failures.load(Relaxed), 1);

        std::fs::write(dir.path().join("b.toml"), BAD.replace("2.0", "0.5")).unwrap();
        let out = reload(&ctx, ReloadTrigger::FileChange).unwrap();
        assert_eq!((out.generation, out.policies), (3, 2));
        assert!(out.changed);
        assert!(ctx
            .policies
            .current()
            .policy_for("public", "docs")
            .is_some());
        assert_eq!(ctx.metrics.policy_reloads.load(Relaxed), 2);
    }

    #[test]
    fn fingerprint_follows_names_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let missing = fingerprint(&dir.path().join("none"));
        assert_eq!(missing, fingerprint(dir.path()), "missing loads like empty");
        std::fs::write(dir.path().join("a.toml"), GOOD).unwrap();
        let one = fingerprint(dir.path());
        assert_ne!(one, missing);
        // Other files are not policies.
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        assert_eq!(fingerprint(dir.path()), one);
        // Same content rewritten: no change.
        std::fs::write(dir.path().join("a.toml"), GOOD).unwrap();
        assert_eq!(fingerprint(dir.path()), one);
        std::fs::write(dir.path().join("a.toml"), GOOD.replace("10s", "20s")).unwrap();
        assert_ne!(fingerprint(dir.path()), one);
        std::fs::rename(dir.path().join("a.toml"), dir.path().join("b.toml")).unwrap();
        let renamed = fingerprint(dir.path());
        std::fs::write(dir.path().join("b.toml"), GOOD).unwrap();
        assert_ne!(fingerprint(dir.path()), renamed);
    }
}
