//! Policy hot reload, end to end: a change to the policy directory (polled) and SIGHUP to
//! the real binary install a valid set as a new generation; an invalid set is rejected,
//! counted, and the old set keeps running, as `/api/policies` and `/metrics` show.
//!
//! The proxy never needs its upstream here (no client connects), so these tests point it
//! at a closed port instead of starting PostgreSQL.

mod common;

use common::within;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NO_UPSTREAM: &str = "postgres://postgres@127.0.0.1:1/postgres";

const ACCOUNTS: &str = "tables = [\"public.accounts\"]\n[cache]\nstore = \"memory\"\n";
const DOCS: &str = "tables = [\"public.docs\"]\n[search]\ncolumns = [\"title\", \"body\"]\n";
/// Line 3 is wrong: an unparsable duration.
const BAD: &str = "tables = [\"public.notes\"]\n[cache]\nwindow = \"ten seconds\"\n";

/// `GET path` → (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// `/api/policies` as (file name, generation) pairs.
async fn api_policies(addr: SocketAddr) -> Vec<(String, i64)> {
    let (status, body) = http_get(addr, "/api/policies")
        .await
        .expect("GET /api/policies");
    assert_eq!(status, 200, "{body}");
    let rows: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    rows.as_array()
        .expect("array")
        .iter()
        .map(|r| {
            let file = Path::new(r["file"].as_str().expect("file"))
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            (file, r["generation"].as_i64().expect("generation"))
        })
        .collect()
}

/// A counter's value in `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (_, body) = http_get(addr, "/metrics").await.expect("GET /metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after `secs`.
async fn eventually<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, secs, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changes_reload_valid_sets_and_keep_the_old_set_on_invalid_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("accounts.toml"), ACCOUNTS).unwrap();
    let mut config = common::proxy_config(NO_UPSTREAM);
    config.policies = dir.path().to_path_buf();
    config.http = "127.0.0.1:0".into();
    config.policy_watch_interval = Duration::from_millis(100);
    let proxy = common::proxy_with(config).await;
    let ctx = proxy.context().clone();
    let http = proxy.http_addr().expect("HTTP endpoint");
    assert_eq!(ctx.policies.current().generation, 1);
    assert_eq!(api_policies(http).await, [("accounts.toml".into(), 1)]);

    // A second valid file: reloaded once, and in force.
    std::fs::write(dir.path().join("docs.toml"), DOCS).unwrap();
    eventually("the new file is loaded", 10, || async {
        ctx.policies.current().generation == 2
    })
    .await;
    let set = ctx.policies.current();
    assert_eq!(set.policies.len(), 2);
    let docs = set.policy_for("public", "docs").expect("docs is covered");
    assert!(docs.policy.search.is_some());
    assert_eq!(
        api_policies(http).await,
        [("accounts.toml".into(), 2), ("docs.toml".into(), 2)]
    );
    assert_eq!(metric(http, "pgpolyglot_policy_reloads_total").await, 1);

    // An invalid file: rejected once (not on every poll), the old set keeps running.
    std::fs::write(dir.path().join("notes.toml"), BAD).unwrap();
    eventually("the invalid file is rejected", 10, || async {
        metric(http, "pgpolyglot_policy_reload_failures_total").await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metric(http, "pgpolyglot_policy_reload_failures_total").await,
        1
    );
    let set = ctx.policies.current();
    assert_eq!((set.generation, set.policies.len()), (2, 2));
    assert!(set.policy_for("public", "notes").is_none());
    assert_eq!(
        api_policies(http).await,
        [("accounts.toml".into(), 2), ("docs.toml".into(), 2)]
    );

    // Fixed: reloads.
    std::fs::write(
        dir.path().join("notes.toml"),
        BAD.replace("ten seconds", "10s"),
    )
    .unwrap();
    eventually("the fixed file is loaded", 10, || async {
        ctx.policies.current().generation == 3
    })
    .await;
    assert!(ctx
        .policies
        .current()
        .policy_for("public", "notes")
        .is_some());
    assert_eq!(metric(http, "pgpolyglot_policy_reloads_total").await, 2);

    // Rewriting a file with the same content is no change; removing one is.
    std::fs::write(dir.path().join("docs.toml"), DOCS).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(ctx.policies.current().generation, 3);
    std::fs::remove_file(dir.path().join("docs.toml")).unwrap();
    eventually("the removal is loaded", 10, || async {
        ctx.policies.current().generation == 4
    })
    .await;
    assert!(ctx
        .policies
        .current()
        .policy_for("public", "docs")
        .is_none());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reload_reports_the_outcome_or_every_problem() {
    use pgpolyglot::placement::{reload, ReloadTrigger};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("accounts.toml"), ACCOUNTS).unwrap();
    let mut config = common::proxy_config(NO_UPSTREAM);
    config.policies = dir.path().to_path_buf();
    config.policy_watch_interval = Duration::ZERO;
    let proxy = common::proxy_with(config).await;
    let ctx = proxy.context().clone();

    std::fs::write(dir.path().join("notes.toml"), BAD).unwrap();
    std::fs::write(
        dir.path().join("x.toml"),
        "tables = [\"t\"]\n[cache]\nstor = \"memory\"\n",
    )
    .unwrap();
    // Polling is off: nothing happens until asked.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ctx.metrics
            .policy_reload_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let err = reload(&ctx, ReloadTrigger::Admin).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(
            "policy reload (admin RELOAD) rejected, generation 1 keeps running: 2 problem(s)"
        ),
        "{text}"
    );
    assert!(text.contains("notes.toml:3: invalid duration"), "{text}");
    assert!(text.contains("x.toml:3:"), "{text}");
    assert_eq!(ctx.policies.current().generation, 1);

    std::fs::remove_file(dir.path().join("notes.toml")).unwrap();
    std::fs::write(dir.path().join("x.toml"), DOCS).unwrap();
    let out = reload(&ctx, ReloadTrigger::Admin).unwrap();
    assert_eq!(
        out.to_string(),
        "policies reloaded (admin RELOAD): generation 2 replaces 1, 2 policies, changed"
    );
    assert_eq!(ctx.policies.current().generation, 2);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary() {
    use nix::sys::signal::{kill, Signal};
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("accounts.toml"), ACCOUNTS).unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = dir.path().join("pgpolyglot.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{}\"\nupstream = \"{NO_UPSTREAM}\"\nhttp = \"{http}\"\n\
             policies = \"{}\"\npolicy_watch_interval = \"0s\"\n",
            free_port(),
            policies.display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgpolyglot"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_remove("PGPOLYGLOT_LISTEN")
        .env_remove("PGPOLYGLOT_UPSTREAM")
        .env_remove("PGPOLYGLOT_POLICIES")
        .env_remove("PGPOLYGLOT_HTTP")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("the proxy binary serves HTTP", 30, || async {
        http_get(http, "/health").await.is_ok()
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
    assert_eq!(api_policies(http).await, [("accounts.toml".into(), 1)]);

    // Watching is off: a change waits for SIGHUP.
    std::fs::write(policies.join("docs.toml"), DOCS).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api_policies(http).await, [("accounts.toml".into(), 1)]);
    kill(pid, Signal::SIGHUP).unwrap();
    eventually("SIGHUP reloads", 10, || async {
        api_policies(http).await.len() == 2
    })
    .await;
    assert_eq!(
        api_policies(http).await,
        [("accounts.toml".into(), 2), ("docs.toml".into(), 2)]
    );

    // An invalid set on SIGHUP: rejected, the process and the old set keep running.
    std::fs::write(policies.join("notes.toml"), BAD).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    eventually("SIGHUP with an invalid set is rejected", 10, || async {
        metric(http, "pgpolyglot_policy_reload_failures_total").await == 1
    })
    .await;
    assert!(child.try_wait().unwrap().is_none(), "the proxy exited");
    assert_eq!(
        api_policies(http).await,
        [("accounts.toml".into(), 2), ("docs.toml".into(), 2)]
    );
    assert_eq!(metric(http, "pgpolyglot_policy_reloads_total").await, 1);

    kill(pid, Signal::SIGTERM).unwrap();
    let status = within("the proxy exits on SIGTERM", 15, child.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
