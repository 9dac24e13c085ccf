//! `pgpolyglot plan` end to end: the binary reads the policies from disk and the live
//! statistics from a running proxy's HTTP endpoint, and prints what it would place.

mod common;

use common::{shared_cluster, within};
use pgpolyglot::sql::TableRef;
use pgpolyglot::stats::Access;
use std::path::Path;
use std::process::Output;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NO_UPSTREAM: &str = "postgres://postgres@127.0.0.1:1/postgres";

const ACCOUNTS: &str = "tables = [\"accounts\"]\n[cache]\npromote_after = 3\nwindow = \"10s\"\n";

async fn hot_keys_body(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /api/hot_keys?limit=1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

/// Runs `pgpolyglot plan --config <dir>/pgpolyglot.toml` with `http` and `policies` set.
async fn run_plan(dir: &Path, http: &str, policies: &Path) -> Output {
    let cfg = dir.join("pgpolyglot.toml");
    std::fs::write(
        &cfg,
        format!("http = \"{http}\"\npolicies = \"{}\"\n", policies.display()),
    )
    .expect("writing the config");
    let plan = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgpolyglot"))
        .args(["plan", "--config"])
        .arg(&cfg)
        .env_remove("PGPOLYGLOT_POLICIES")
        .env_remove("PGPOLYGLOT_HTTP")
        .output();
    within("pgpolyglot plan", 30, plan)
        .await
        .expect("running pgpolyglot plan")
}

/// The rows of the plan's text table whose first two columns are `table` and `key`.
fn rows_for<'a>(stdout: &'a str, table: &str, key: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .filter(|l| {
            let mut cols = l.split_whitespace();
            cols.next() == Some(table) && cols.next() == Some(key)
        })
        .collect()
}

/// Statistics recorded straight into a running proxy (as sessions record them), planned
/// by the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_promotes_the_hot_key_of_the_live_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("accounts.toml"), ACCOUNTS).unwrap();
    let mut config = common::proxy_config(NO_UPSTREAM);
    config.policies = policies.clone();
    config.http = "127.0.0.1:0".into();
    config.stats.interval = Duration::from_millis(50);
    let proxy = common::proxy_with(config).await;
    let http = proxy.http_addr().expect("HTTP endpoint");
    let stats = &proxy.context().stats;
    let accounts = TableRef::new(None, "accounts");
    for _ in 0..60 {
        stats.record_key(&accounts, "42", Access::Read);
    }
    stats.record_key(&accounts, "7", Access::Read);
    stats.record_key(&TableRef::new(Some("public"), "other"), "1", Access::Read);
    within("the keys reach the statistics", 10, async {
        while !hot_keys_body(http).await.contains("\"key\":\"7\"") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    let out = run_plan(dir.path(), &http.to_string(), &policies).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let hot = rows_for(&stdout, "public.accounts", "42");
    assert_eq!(hot.len(), 1, "{stdout}");
    let cols: Vec<&str> = hot[0].split_whitespace().collect();
    assert_eq!(&cols[2..4], ["memory", "promote"], "{stdout}");
    assert!(hot[0].ends_with("accounts.toml"), "{stdout}");
    // 60 reads just now: ~6.9 reads per 10 s at the rate a 60 s half-life implies.
    assert!(hot[0].contains("reads per 10s"), "{stdout}");
    assert!(
        rows_for(&stdout, "public.accounts", "7").is_empty(),
        "{stdout}"
    );
    assert!(!stdout.contains("public.other"), "{stdout}");
    assert!(
        stdout.contains(
            "1 key(s) to promote, 0 table(s) to index, 0 skipped; from 3 hot key(s) on 2 table(s)"
        ),
        "{stdout}"
    );
    proxy.shutdown().await;
}

/// Point reads by a real client through the proxy make a key hot, and `plan` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_after_point_reads_through_the_proxy() {
    let pg = shared_cluster().await;
    let admin = common::connect(&pg, "postgres", "postgres").await;
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS plan_accounts;
             CREATE TABLE plan_accounts (id int PRIMARY KEY, name text);
             INSERT INTO plan_accounts SELECT g, 'n' || g FROM generate_series(1, 100) g;",
        )
        .await
        .expect("creating plan_accounts");
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("accounts.toml"),
        ACCOUNTS.replace("\"accounts\"", "\"public.plan_accounts\""),
    )
    .unwrap();
    let mut config = common::proxy_config(&pg.url("postgres", "postgres"));
    config.policies = policies.clone();
    config.http = "127.0.0.1:0".into();
    config.stats.interval = Duration::from_millis(50);
    let proxy = common::proxy_with(config).await;
    let http = proxy.http_addr().expect("HTTP endpoint");
    let url = format!("postgres://postgres@{}/postgres", proxy.local_addr());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connecting through the proxy");
    tokio::spawn(conn);
    for _ in 0..60 {
        let row = client
            .query_one(
                "SELECT id, name FROM plan_accounts WHERE id = $1",
                &[&42i32],
            )
            .await
            .expect("point read");
        assert_eq!(row.get::<_, String>(1), "n42");
    }
    within("the reads reach the statistics", 15, async {
        while !hot_keys_body(http).await.contains("\"key\":\"42\"") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    let out = run_plan(dir.path(), &http.to_string(), &policies).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hot = rows_for(&stdout, "public.plan_accounts", "42");
    assert_eq!(hot.len(), 1, "{stdout}");
    assert!(hot[0].contains(" promote "), "{stdout}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_explains_an_unreachable_proxy_and_invalid_policies() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("accounts.toml"), ACCOUNTS).unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = run_plan(dir.path(), &closed.to_string(), &policies).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot read statistics from the proxy at http://{closed}"
        )),
        "{stderr}"
    );

    std::fs::write(
        policies.join("bad.toml"),
        "tables = [\"t\"]\n[cache]\nwindow = \"soon\"\n",
    )
    .unwrap();
    let out = run_plan(dir.path(), &closed.to_string(), &policies).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.toml:3: invalid duration"), "{stderr}");
    assert!(out.stdout.is_empty());
}
