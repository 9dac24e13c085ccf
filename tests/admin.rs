//! The operator's surfaces end to end: statistics recorded from real traffic, the admin
//! console (`SHOW ...`, `EXPLAIN ROUTE`, authentication), `/metrics` checked with the
//! reference Prometheus parser against the workload that produced it.

mod common;

use common::*;
use pgpolyglot::config::Config;
use pgpolyglot::server::ServerHandle;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio_postgres::{NoTls, SimpleQueryMessage};

const ACCOUNTS: i32 = 1000;

/// The tests that use `accounts` run one at a time: they share one cluster, and each drops
/// and recreates the table (two at once collide in the catalog, or drop it under each other).
static ACCOUNTS_TABLE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Recreates `accounts`; the table is the caller's until the guard is dropped.
#[must_use = "hold the guard for the whole test"]
async fn setup_accounts(
    pg: &pgpolyglot::embedded_pg::EmbeddedPostgres,
) -> tokio::sync::MutexGuard<'static, ()> {
    let guard = ACCOUNTS_TABLE.lock().await;
    let c = connect(pg, APP_USER, APP_DB).await;
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS accounts;
         CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance int NOT NULL);
         INSERT INTO accounts SELECT g, 'owner ' || g, 100 FROM generate_series(1, {ACCOUNTS}) g;"
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    guard
}

fn policy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("accounts.toml"),
        "tables = [\"public.accounts\"]\n[cache]\nstore = \"memory\"\n",
    )
    .unwrap();
    dir
}

async fn start_proxy(
    pg: &pgpolyglot::embedded_pg::EmbeddedPostgres,
    policies: &Path,
) -> ServerHandle {
    let mut config: Config = proxy_config(&pg.url("postgres", APP_DB));
    config.http = "127.0.0.1:0".into();
    config.policies = policies.to_path_buf();
    config.stats.interval = Duration::from_millis(50);
    let handle = proxy_with(config).await;
    // Hot keys are recorded only once the primary keys are known.
    within("catalog load", 30, async {
        while handle.context().catalog.generation() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    handle
}

async fn client_via(
    handle: &ServerHandle,
    user: &str,
    password: Option<&str>,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(handle.local_addr().port())
        .user(user)
        .dbname(db);
    if let Some(p) = password {
        config.password(p);
    }
    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Rows of a simple query as maps column → text.
async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<HashMap<String, Option<String>>> {
    let msgs = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", pg_error(&e)));
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), r.get(i).map(str::to_string)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Zipf(s) over 1..=n by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf = Vec::with_capacity(n);
        for k in 1..=n {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        let total = acc;
        cdf.iter_mut().for_each(|c| *c /= total);
        Zipf { cdf }
    }
    fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.gen();
        self.cdf.partition_point(|&c| c < u) + 1
    }
}

async fn wait_for_snapshot(handle: &ServerHandle, events: u64) {
    let view = handle.context().stats_view.clone().expect("stats on");
    within("statistics to catch up", 30, async {
        while view.snapshot().counters.events < events {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Names `owner` as the key of `accounts` and reloads the policies.
fn make_owner_the_key(handle: &ServerHandle, policies: &Path) {
    use pgpolyglot::placement::{reload, ReloadTrigger};
    std::fs::write(
        policies.join("accounts.toml"),
        "tables = [\"public.accounts\"]\nkey = \"owner\"\n[cache]\nstore = \"memory\"\n",
    )
    .unwrap();
    reload(handle.context(), ReloadTrigger::Admin).expect("valid policy set");
}

/// Once the statistics have seen `events` events, `owner 7` must be a hot key of `accounts`
/// with `reads` reads (`context` says how it was read, for the failure message).
async fn assert_owner7_reads(handle: &ServerHandle, events: u64, reads: &str, context: &str) {
    let admin = client_via(handle, "postgres", None, "pgpolyglot")
        .await
        .unwrap();
    wait_for_snapshot(handle, events).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hot = rows(&admin, "SHOW HOT_KEYS public.accounts LIMIT 10").await;
    let owner7 = hot
        .iter()
        .find(|r| r["key"].as_deref() == Some("owner 7"))
        .unwrap_or_else(|| panic!("owner 7 not recorded ({context}): {hot:?}"));
    assert_eq!(owner7["reads"].as_deref(), Some(reads), "{hot:?}");
}

/// A session resolves each statement shape's key column once and remembers it; a policy
/// reload that names another key column must reach sessions already running the shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_column_set_by_a_reload_reaches_running_sessions() {
    let pg = shared_cluster().await;
    let _accounts = setup_accounts(&pg).await;
    let policies = policy_dir();
    let handle = start_proxy(&pg, policies.path()).await;
    let app = client_via(&handle, APP_USER, None, APP_DB).await.unwrap();
    // Inlined, so the key is read from the text whatever the column's type (a binary `$1`
    // needs the key column's type, which the catalog reads only after the reload).
    let by_owner = "SELECT id FROM accounts WHERE owner = 'owner 7'";
    // `owner` is not the key: nothing recorded.
    for _ in 0..20 {
        app.simple_query(by_owner).await.unwrap();
    }
    make_owner_the_key(&handle, policies.path());
    // The same statement, same session: now `owner` is the key.
    for _ in 0..15 {
        app.simple_query(by_owner).await.unwrap();
    }
    // 35 statements and 15 keys.
    assert_owner7_reads(&handle, 50, "15", "inlined, after the reload").await;
}

/// A policy `key` that is not the primary key, bound in binary format (tokio-postgres binds
/// every parameter so) without a type in the Parse: the proxy prints it with the column's
/// type, which the catalog reads again after the reload that named the column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_key_bound_in_binary_is_recorded() {
    let pg = shared_cluster().await;
    let _accounts = setup_accounts(&pg).await;
    let policies = policy_dir();
    let handle = start_proxy(&pg, policies.path()).await;
    make_owner_the_key(&handle, policies.path());
    let catalog = &handle.context().catalog;
    within("the catalog to read the type of `owner`", 30, async {
        while catalog.snapshot().key_type("public", "accounts", "owner") != Some(25) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let app = client_via(&handle, APP_USER, None, APP_DB).await.unwrap();
    let by_owner = app
        .prepare("SELECT id FROM accounts WHERE owner = $1")
        .await
        .unwrap();
    for _ in 0..12 {
        let r = app.query(&by_owner, &[&"owner 7"]).await.unwrap();
        assert_eq!(r.len(), 1);
    }
    assert_owner7_reads(&handle, 12, "12", "bound in binary").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_keys_follow_a_zipf_workload() {
    let pg = shared_cluster().await;
    let _accounts = setup_accounts(&pg).await;
    let policies = policy_dir();
    let handle = start_proxy(&pg, policies.path()).await;
    let app = client_via(&handle, APP_USER, None, APP_DB).await.unwrap();

    // Point reads, half with the key inlined (simple protocol), half bound in binary
    // (tokio-postgres' extended protocol); plus writes by key.
    let zipf = Zipf::new(ACCOUNTS as usize, 1.1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut reads: HashMap<i32, u64> = HashMap::new();
    let by_id = app
        .prepare("SELECT owner, balance FROM accounts WHERE id = $1")
        .await
        .unwrap();
    for i in 0..4000 {
        let id = zipf.sample(&mut rng) as i32;
        *reads.entry(id).or_default() += 1;
        if i % 2 == 0 {
            app.simple_query(&format!("SELECT * FROM accounts WHERE id = {id}"))
                .await
                .unwrap();
        } else {
            let r = app.query(&by_id, &[&id]).await.unwrap();
            assert_eq!(r.len(), 1);
        }
    }
    for _ in 0..30 {
        app.execute(
            "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
            &[&2i32],
        )
        .await
        .unwrap();
    }
    // Not a key: must not show up as a hot key.
    for _ in 0..500 {
        app.simple_query("SELECT * FROM accounts WHERE owner = 'owner 999'")
            .await
            .unwrap();
    }

    let admin = client_via(&handle, "postgres", None, "pgpolyglot")
        .await
        .unwrap();
    wait_for_snapshot(&handle, 4000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hot = rows(&admin, "SHOW HOT_KEYS accounts LIMIT 10").await;
    assert_eq!(hot.len(), 10, "{hot:?}");

    let mut truth: Vec<(i32, u64)> = reads.iter().map(|(k, v)| (*k, *v)).collect();
    truth.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let tenth = truth[9].1;
    for row in &hot {
        assert_eq!(row["table"].as_deref(), Some("public.accounts"));
        let key: i32 = row["key"].as_deref().unwrap().parse().unwrap();
        let got_reads: u64 = row["reads"].as_deref().unwrap().parse().unwrap();
        // 1000 keys fit the sketch: counts are exact.
        assert_eq!(got_reads, reads[&key], "reads of key {key}");
        assert!(
            reads[&key] >= tenth,
            "key {key} ({}) is not among the true top 10 {truth:?}",
            reads[&key]
        );
    }
    assert_eq!(
        hot[0]["key"].as_deref(),
        Some(truth[0].0.to_string().as_str())
    );
    let key2 = rows(&admin, "SHOW HOT_KEYS public.accounts LIMIT 1000")
        .await
        .into_iter()
        .find(|r| r["key"].as_deref() == Some("2"))
        .expect("key 2 listed");
    assert_eq!(key2["writes"].as_deref(), Some("30"));
    assert!(
        !rows(&admin, "SHOW HOT_KEYS LIMIT 1000")
            .await
            .iter()
            .any(|r| r["key"].as_deref() == Some("owner 999")),
        "a non-key column was recorded as a key"
    );

    // Query shapes: the inlined reads share one shape whatever the literal.
    let queries = rows(&admin, "SHOW QUERIES LIMIT 50").await;
    let inlined = queries
        .iter()
        .find(|q| q["query"].as_deref() == Some("select * from accounts where id = $?"))
        .unwrap_or_else(|| panic!("{queries:?}"));
    assert_eq!(inlined["calls"].as_deref(), Some("2000"));
    assert_eq!(inlined["rows"].as_deref(), Some("2000"));
    // Postgres answers, and the cache too once keys were placed (that depends on when the
    // change feed started streaming).
    let shape_routes = inlined["routes"].as_deref().unwrap_or_default();
    assert!(
        shape_routes.split(',').any(|r| r == "postgres")
            && shape_routes
                .split(',')
                .all(|r| r == "postgres" || r == "cache"),
        "{shape_routes}"
    );
    let update = queries
        .iter()
        .find(|q| {
            q["query"]
                .as_deref()
                .is_some_and(|t| t.starts_with("update accounts"))
        })
        .unwrap();
    assert_eq!(update["calls"].as_deref(), Some("30"));
    assert_eq!(update["rows"].as_deref(), Some("30"));
    let routes = rows(&admin, "SHOW ROUTES").await;
    let pg_route = routes
        .iter()
        .find(|r| r["route"].as_deref() == Some("postgres"))
        .unwrap();
    let calls: u64 = routes
        .iter()
        .filter(|r| matches!(r["route"].as_deref(), Some("postgres" | "cache")))
        .map(|r| r["calls"].as_deref().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(calls >= 4530, "{routes:?}");
    assert!(pg_route["p50_ms"].is_some());

    let clients = rows(&admin, "SHOW CLIENTS").await;
    assert!(
        clients.iter().any(
            |c| c["user"].as_deref() == Some(APP_USER) && c["state"].as_deref() == Some("idle")
        ),
        "{clients:?}"
    );
    assert!(clients.iter().any(|c| c["admin"].as_deref() == Some("t")));
    let policies_rows = rows(&admin, "SHOW POLICIES").await;
    assert_eq!(policies_rows.len(), 1);
    assert_eq!(
        policies_rows[0]["tables"].as_deref(),
        Some("public.accounts")
    );
    let stores = rows(&admin, "SHOW STORES").await;
    assert_eq!(stores[0]["store"].as_deref(), Some("postgres"));
    assert_eq!(stores[0]["state"].as_deref(), Some("up"));
    let plan = rows(&admin, "SHOW PLAN").await;
    assert!(
        plan.iter()
            .any(|p| p["key"].as_deref() == Some(truth[0].0.to_string().as_str())),
        "{plan:?}"
    );
    // Keys may or may not be placed yet (that depends on when the change feed started
    // streaming); whatever is listed is a key of the policy's table in its store.
    let placements = rows(&admin, "SHOW PLACEMENTS").await;
    assert!(
        placements
            .iter()
            .all(|p| p["table"].as_deref() == Some("public.accounts")
                && p["store"].as_deref() == Some("memory")
                && p["key"]
                    .as_deref()
                    .is_some_and(|k| k.parse::<i64>().is_ok())),
        "{placements:?}"
    );

    // The JSON API serves the same rows.
    let body = http_get(
        handle.http_addr().unwrap(),
        "/api/hot_keys?table=accounts&limit=3",
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert_eq!(json[0]["key"], serde_json::json!(truth[0].0.to_string()));
    handle.shutdown().await;
}

/// Sends a raw StartupMessage with `params` (in order, repeats allowed) and returns
/// everything the proxy answers until it closes the connection, lossily as text.
async fn raw_startup(addr: std::net::SocketAddr, params: &[(&str, &str)]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut body = (3u32 << 16).to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend(body);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&packet).await.unwrap();
    let mut out = Vec::new();
    within("the proxy to close", 30, s.read_to_end(&mut out))
        .await
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// GET over HTTP/1.1 on loopback; returns the body of a 200 response.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    body.to_string()
}

fn parse_prometheus(text: &str) -> Vec<serde_json::Value> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/prom_parse.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

fn sample(samples: &[serde_json::Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_match_the_workload() {
    let pg = shared_cluster().await;
    let policies = policy_dir();
    let handle = start_proxy(&pg, policies.path()).await;
    let app = client_via(&handle, APP_USER, None, APP_DB).await.unwrap();
    app.batch_execute("CREATE TEMP TABLE m (id int PRIMARY KEY)")
        .await
        .unwrap();
    let ins = app.prepare("INSERT INTO m VALUES ($1)").await.unwrap();
    for i in 0..100 {
        app.execute(&ins, &[&i]).await.unwrap();
    }
    for _ in 0..50 {
        app.simple_query("SELECT * FROM m WHERE id = 1")
            .await
            .unwrap();
    }
    for _ in 0..5 {
        assert!(app
            .simple_query("SELECT * FROM no_such_table")
            .await
            .is_err());
    }
    app.batch_execute("BEGIN; SELECT 1; COMMIT").await.unwrap();
    // COPY FROM STDIN over the extended protocol (tokio-postgres sends a Sync that Postgres
    // ignores during copy-in): must not shift the pairing of later statements.
    {
        use futures_util::SinkExt;
        let sink = app
            .copy_in::<_, bytes::Bytes>("COPY m FROM STDIN")
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        let rows: String = (1000..1010).map(|i| format!("{i}\n")).collect();
        sink.send(bytes::Bytes::from(rows)).await.unwrap();
        assert_eq!(sink.finish().await.unwrap(), 10);
    }
    let n = app.query_one("SELECT count(*) FROM m", &[]).await.unwrap();
    assert_eq!(n.get::<_, i64>(0), 110);
    let text = http_get(handle.http_addr().unwrap(), "/metrics").await;
    let samples = parse_prometheus(&text);
    let route = [("route", "postgres")];
    // 1 CREATE + 100 Executes + 50 reads + 5 failures + 1 multi-statement Query + COPY + count.
    let statements = sample(&samples, "pgpolyglot_route_statements_total", &route);
    assert_eq!(statements, 159.0, "{text}");
    assert_eq!(
        sample(&samples, "pgpolyglot_route_errors_total", &route),
        5.0
    );
    assert_eq!(
        sample(&samples, "pgpolyglot_route_rows_total", &route),
        100.0 + 50.0 + 1.0 + 10.0 + 1.0
    );
    assert_eq!(
        sample(&samples, "pgpolyglot_route_latency_seconds_count", &route),
        statements
    );
    assert_eq!(
        sample(
            &samples,
            "pgpolyglot_route_latency_seconds_bucket",
            &[("route", "postgres"), ("le", "+Inf")]
        ),
        statements
    );
    assert_eq!(
        sample(
            &samples,
            "pgpolyglot_route_statements_total",
            &[("route", "cache")]
        ),
        0.0
    );
    // tokio-postgres may send the next statement as soon as it has an ErrorResponse (or a
    // CommandComplete), before the ReadyForQuery behind it reached the proxy: such a
    // statement is, rightly, "pipelined". Each reason's count is exact up to those.
    let reason = |r: &str| {
        sample(
            &samples,
            "pgpolyglot_route_decisions_total",
            &[("reason", r)],
        )
    };
    let pipelined = reason("pipelined");
    assert!(pipelined <= 8.0, "{text}");
    let writes = 100.0 + 1.0 + 1.0 + 1.0; // INSERTs, CREATE, BEGIN;..;COMMIT, COPY
    assert!(
        (writes - pipelined..=writes).contains(&reason("not a read")),
        "{text}"
    );
    assert!(
        (50.0 - pipelined..=50.0).contains(&reason("no policy")),
        "{text}"
    );
    let decisions: f64 = samples
        .iter()
        .filter(|s| s["name"] == "pgpolyglot_route_decisions_total")
        .filter_map(|s| s["value"].as_f64())
        .sum();
    assert_eq!(decisions, statements, "one decision per statement");
    assert_eq!(
        sample(&samples, "pgpolyglot_client_connections_active", &[]),
        1.0
    );
    assert_eq!(sample(&samples, "pgpolyglot_policies_loaded", &[]), 1.0);
    assert_eq!(sample(&samples, "pgpolyglot_stats_dropped_total", &[]), 0.0);
    assert_eq!(
        sample(&samples, "pgpolyglot_store_up", &[("store", "postgres")]),
        1.0
    );
    // No per-key or per-client labels anywhere.
    for s in &samples {
        for k in s["labels"].as_object().unwrap().keys() {
            assert!(
                ["kind", "route", "le", "reason", "store"].contains(&k.as_str()),
                "label {k} in {s}"
            );
        }
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_route_gives_the_reason() {
    let pg = shared_cluster().await;
    let policies = policy_dir();
    let handle = start_proxy(&pg, policies.path()).await;
    let app = client_via(&handle, APP_USER, None, APP_DB).await.unwrap();
    let cases = [
        ("SELECT * FROM accounts WHERE id = 1", "key not placed"),
        ("SELECT * FROM accounts WHERE id = $1", "key not placed"),
        ("SELECT * FROM accounts", "not a point read"),
        (
            "SELECT * FROM accounts WHERE id = 1 FOR UPDATE",
            "locking clause",
        ),
        (
            "SELECT *, random() FROM accounts WHERE id = 1",
            "volatile function",
        ),
        ("UPDATE accounts SET balance = 0 WHERE id = 1", "not a read"),
        ("SELECT * FROM orders WHERE id = 1", "no policy"),
        (
            "SELECT * FROM accounts WHERE owner LIKE 'a%'",
            "not in policy",
        ),
        ("SELEKT 1", "not parsed"),
    ];
    for (sql, reason) in cases {
        let r = rows(&app, &format!("EXPLAIN ROUTE {sql}")).await;
        assert_eq!(r.len(), 1, "{sql}");
        assert_eq!(r[0]["route"].as_deref(), Some("postgres"), "{sql}");
        assert_eq!(r[0]["reason"].as_deref(), Some(reason), "{sql}: {r:?}");
    }
    let r = rows(&app, "explain route SELECT * FROM accounts WHERE id = 1").await;
    assert!(r[0]["policy"]
        .as_deref()
        .unwrap()
        .contains("accounts.toml (public.accounts)"));
    // Inside a transaction block, and pipelined with other statements.
    let msgs = app.simple_query("BEGIN").await.unwrap();
    drop(msgs);
    let r = rows(&app, "EXPLAIN ROUTE SELECT * FROM accounts WHERE id = 1").await;
    assert_eq!(r[0]["reason"].as_deref(), Some("in transaction block"));
    app.simple_query("COMMIT").await.unwrap();
    let (a, b, c) = tokio::join!(
        app.simple_query("SELECT 1 AS one"),
        app.simple_query("EXPLAIN ROUTE SELECT * FROM accounts WHERE id = 7"),
        app.simple_query("SELECT 3 AS three"),
    );
    let first_row = |m: Vec<SimpleQueryMessage>, col: &str| {
        m.into_iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(col).map(str::to_string),
            _ => None,
        })
    };
    assert_eq!(first_row(a.unwrap(), "one").as_deref(), Some("1"));
    // Sent behind an unanswered query, or answered first: either is right.
    let reason = first_row(b.unwrap(), "reason");
    assert!(
        matches!(
            reason.as_deref(),
            Some("key not placed") | Some("pipelined")
        ),
        "{reason:?}"
    );
    assert_eq!(first_row(c.unwrap(), "three").as_deref(), Some("3"));
    // The admin console answers it too.
    let admin = client_via(&handle, "postgres", None, "pgpolyglot")
        .await
        .unwrap();
    let r = rows(&admin, "EXPLAIN ROUTE SELECT * FROM accounts WHERE id = 1").await;
    assert_eq!(r[0]["reason"].as_deref(), Some("key not placed"));
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_console_authenticates_through_postgres() {
    let pg = shared_cluster().await;
    let policies = policy_dir();
    let mut config: Config = proxy_config(&pg.url("postgres", "postgres"));
    config.policies = policies.path().to_path_buf();
    config.admin_users = vec!["postgres".into(), SCRAM_USER.into(), MD5_USER.into()];
    let handle = proxy_with(config).await;
    connect(&pg, "postgres", "postgres")
        .await
        .batch_execute(&format!("GRANT pg_monitor TO {SCRAM_USER}"))
        .await
        .unwrap();

    let e = client_via(&handle, APP_USER, None, "pgpolyglot")
        .await
        .unwrap_err();
    let db = e.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "28000", "{}", pg_error(&e));
    assert!(db.message().contains("admin console"));
    // In admin_users, authenticated, but neither superuser nor pg_monitor.
    let e = client_via(&handle, MD5_USER, Some(MD5_PASSWORD), "pgpolyglot")
        .await
        .unwrap_err();
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("42501"),
        "{}",
        pg_error(&e)
    );
    // A repeated `user` parameter: Postgres authenticates the last one, so must the proxy.
    let reply = raw_startup(
        handle.local_addr(),
        &[
            ("user", "postgres"),
            ("database", "pgpolyglot"),
            ("user", APP_USER),
        ],
    )
    .await;
    assert!(
        reply.contains("28000"),
        "the console opened for {APP_USER}: {reply:?}"
    );

    let e = client_via(&handle, SCRAM_USER, Some("wrong"), "pgpolyglot")
        .await
        .unwrap_err();
    let direct = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={SCRAM_USER} password=wrong dbname=postgres",
            pg.port()
        ),
        NoTls,
    )
    .await
    .err()
    .expect("wrong password fails directly too");
    assert_eq!(pg_error(&e), pg_error(&direct), "Postgres's own error");

    let admin = client_via(&handle, SCRAM_USER, Some(SCRAM_PASSWORD), "pgpolyglot")
        .await
        .unwrap();
    assert_eq!(rows(&admin, "SHOW ROUTES").await.len(), 3);
    // Bad commands are errors; the session goes on.
    let e = admin.simple_query("SHOW NOTHING").await.unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "42601");
    // The extended protocol is refused with a clear error; the session goes on.
    let e = admin.query("SHOW ROUTES", &[]).await.unwrap_err();
    assert_eq!(
        e.as_db_error().unwrap().code().code(),
        "0A000",
        "{}",
        pg_error(&e)
    );
    assert_eq!(rows(&admin, "show hot_keys").await.len(), 0);
    assert_eq!(rows(&admin, "SHOW HELP").await.len(), 11);

    // psql prints the views as ordinary tables.
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &handle.local_addr().port().to_string(),
            "-U",
            "postgres",
            "-d",
            "pgpolyglot",
            "-c",
            "SHOW ROUTES",
        ])
        .output()
        .expect("psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("  route   | calls | rows | errors | p50_ms | p99_ms | max_ms"),
        "{stdout}"
    );
    assert!(stdout.contains("(3 rows)"), "{stdout}");
    handle.shutdown().await;
}
