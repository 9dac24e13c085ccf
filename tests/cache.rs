//! The cache store against real PostgreSQL: answers served from the proxy's memory are byte
//! for byte what Postgres sends (types, NULLs, text and binary, simple and extended, several
//! output settings); the proxy's own writes are never read back stale and writes that bypass
//! it show up within `max_staleness`; a role Postgres refuses gets Postgres's error, never a
//! cached row; a broken change feed means pass-through.
//!
//! Every test checks that the cache actually answered (the hit counter moved), so a proxy
//! that relayed everything could not pass. Each test has its own database, slot and
//! publication on the shared cluster.

mod common;

use common::wire::{frame, BackendMessage, Startup, WireClient};
use common::*;
use pgpolyglot::server::ServerHandle;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAX_STALENESS_MS: u64 = 1000;

/// A table `kv (id int4 PRIMARY KEY, v text)` with rows 1..=10, `v` = 'v' || id.
const KV_TEN_ROWS: &str = "CREATE TABLE kv (id int4 PRIMARY KEY, v text);
     INSERT INTO kv SELECT g, 'v' || g FROM generate_series(1, 10) g;";

/// (label, start-up parameters, SET statements) of one output-settings round.
type SettingsRound<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
/// (label, parameters, parameter formats, result formats, describe) of one extended case.
type ExtendedCase<'a> = (&'a str, Vec<Option<&'a [u8]>>, Vec<i16>, Vec<i16>, bool);
/// Per key: (when the commit was acknowledged, the value it wrote).
type History = Arc<Mutex<Vec<Vec<(Instant, i64)>>>>;

struct Fixture {
    pg: Arc<EmbeddedPostgres>,
    proxy: ServerHandle,
    /// Superuser connection straight to Postgres.
    db: tokio_postgres::Client,
    name: String,
    _policies: PolicyDir,
}

/// A policy directory removed when the test ends.
struct PolicyDir(PathBuf);

impl Drop for PolicyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn fixture(name: &str, schema_sql: &str) -> Fixture {
    fixture_on(shared_cluster().await, name, schema_sql).await
}

/// [`fixture`] on a cluster of the test's own.
async fn fixture_on(pg: Arc<EmbeddedPostgres>, name: &str, schema_sql: &str) -> Fixture {
    fixture_with_policy(pg, name, schema_sql, "").await
}

/// [`fixture_on`] with `cache_lines` (TOML) added to the policy's `[cache]` section (later
/// keys of the same name are not allowed: give only keys the default section lacks, or
/// `promote_after`, which it then leaves out).
async fn fixture_with_policy(
    pg: Arc<EmbeddedPostgres>,
    name: &str,
    schema_sql: &str,
    cache_lines: &str,
) -> Fixture {
    let db = database_with(&pg, name, schema_sql).await;
    let promote = if cache_lines.contains("promote_after") {
        ""
    } else {
        "promote_after = 1\n"
    };
    let dir = std::env::temp_dir().join(format!("pgpolyglot-cache-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cache.toml"),
        format!(
            "tables = [\"public.*\"]\n\n[cache]\nstore = \"memory\"\n{promote}\
             window = \"10s\"\ndemote_after_idle = \"5m\"\nmax_keys = 10000\n\
             max_bytes = \"64MiB\"\nmax_staleness = \"{MAX_STALENESS_MS}ms\"\n{cache_lines}"
        ),
    )
    .unwrap();
    let mut config = proxy_config(&pg.url("postgres", name));
    config.policies = dir.clone();
    config.change_feed.slot = format!("{name}_slot");
    config.change_feed.publication = format!("{name}_pub");
    config.change_feed.status_interval = Duration::from_millis(100);
    config.change_feed.timeout = Duration::from_secs(10);
    config.stats.interval = Duration::from_millis(100);
    let proxy = proxy_with(config).await;
    Fixture {
        pg,
        proxy,
        db,
        name: name.to_string(),
        _policies: PolicyDir(dir),
    }
}

impl Fixture {
    /// The cache's counters, for failure messages.
    fn cache_state(&self) -> String {
        let ctx = self.proxy.context();
        let c = &ctx.cache.counters;
        let reasons: Vec<String> = pgpolyglot::router::Reason::ALL
            .iter()
            .map(|r| {
                format!(
                    "{}={}",
                    r.label(),
                    ctx.metrics.route_reasons[r.index()].load(Relaxed)
                )
            })
            .collect();
        format!(
            "hits {} misses {} (coalesced {} in {} fetches, {} failed) fill requests {} batches {} errors {} entries {} feed {:?}; reasons {}",
            c.hits.load(Relaxed),
            c.misses.load(Relaxed),
            c.coalesced.load(Relaxed),
            c.coalesced_fetches.load(Relaxed),
            c.coalesce_errors.load(Relaxed),
            c.fill_requests.load(Relaxed),
            c.fill_batches.load(Relaxed),
            c.fill_errors.load(Relaxed),
            ctx.cache.store.len(),
            ctx.cache.feed().map(|f| f.health()),
            reasons.join(", ")
        )
    }

    fn hits(&self) -> u64 {
        self.proxy.context().cache.counters.hits.load(Relaxed)
    }

    /// The proxy's admin console.
    async fn wire_console(&self) -> WireClient {
        WireClient::connect_with(
            self.proxy.local_addr(),
            &Startup {
                user: "postgres",
                database: "pgpolyglot",
                ..Startup::default()
            },
        )
        .await
        .expect("connect to the admin console")
    }

    async fn wire_proxy(&self, user: &str, params: &[(&str, &str)]) -> WireClient {
        WireClient::connect_with(
            self.proxy.local_addr(),
            &Startup {
                user,
                database: &self.name,
                params,
                ..Startup::default()
            },
        )
        .await
        .expect("connect through the proxy")
    }

    async fn wire_direct(&self, user: &str, params: &[(&str, &str)]) -> WireClient {
        WireClient::connect_with(
            ("127.0.0.1", self.pg.port()),
            &Startup {
                user,
                database: &self.name,
                params,
                ..Startup::default()
            },
        )
        .await
        .expect("connect to Postgres")
    }
}

/// Runs `sql` through the proxy until the cache answers it (the statement's key gets hot,
/// the migrator fills it); returns that answer.
async fn simple_until_served(fx: &Fixture, c: &mut WireClient, sql: &str) -> Vec<BackendMessage> {
    until_served(fx, c, sql, async |c: &mut WireClient| {
        c.simple_query(sql).await.expect("query")
    })
    .await
}

/// Repeats `read` on `c` until the cache answers it (the hit counter moves during it);
/// returns that answer. Fails the test after 30 s, naming `what`.
async fn until_served(
    fx: &Fixture,
    c: &mut WireClient,
    what: &str,
    mut read: impl AsyncFnMut(&mut WireClient) -> Vec<BackendMessage>,
) -> Vec<BackendMessage> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = fx.hits();
        let msgs = read(c).await;
        if fx.hits() > before {
            return msgs;
        }
        assert!(
            Instant::now() < deadline,
            "the cache never served {what}: {}\nlast answer: {}",
            fx.cache_state(),
            render(&msgs)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

async fn until_ready(c: &mut WireClient) -> Vec<BackendMessage> {
    let mut out = Vec::new();
    loop {
        let m = c.read_message().await.expect("read");
        let done = m.tag == b'Z';
        out.push(m);
        if done {
            return out;
        }
    }
}

/// Parse a named statement (answered by Postgres) and Sync.
async fn prepare(c: &mut WireClient, name: &str, sql: &str, types: &[u32]) -> Vec<BackendMessage> {
    let mut parse = cstr(name);
    parse.extend(cstr(sql));
    parse.extend((types.len() as i16).to_be_bytes());
    for t in types {
        parse.extend(t.to_be_bytes());
    }
    c.queue(b'P', &parse).await.unwrap();
    c.queue(b'S', &[]).await.unwrap();
    c.flush().await.unwrap();
    until_ready(c).await
}

/// Bind, Describe portal (optional), Execute, Sync on a prepared statement.
async fn bind_execute(
    c: &mut WireClient,
    stmt: &str,
    params: &[Option<&[u8]>],
    param_formats: &[i16],
    result_formats: &[i16],
    describe: bool,
) -> Vec<BackendMessage> {
    let mut bind = cstr("");
    bind.extend(cstr(stmt));
    bind.extend((param_formats.len() as i16).to_be_bytes());
    for f in param_formats {
        bind.extend(f.to_be_bytes());
    }
    bind.extend((params.len() as i16).to_be_bytes());
    for p in params {
        match p {
            Some(v) => {
                bind.extend((v.len() as i32).to_be_bytes());
                bind.extend(*v);
            }
            None => bind.extend((-1i32).to_be_bytes()),
        }
    }
    bind.extend((result_formats.len() as i16).to_be_bytes());
    for f in result_formats {
        bind.extend(f.to_be_bytes());
    }
    c.queue(b'B', &bind).await.unwrap();
    if describe {
        let mut d = vec![b'P'];
        d.extend(cstr(""));
        c.queue(b'D', &d).await.unwrap();
    }
    let mut e = cstr("");
    e.extend(0i32.to_be_bytes());
    c.queue(b'E', &e).await.unwrap();
    c.queue(b'S', &[]).await.unwrap();
    c.flush().await.unwrap();
    until_ready(c).await
}

/// Fails the test if `msgs` hold an ErrorResponse (`what`: the statement, for the message).
#[track_caller]
fn assert_no_error(msgs: &[BackendMessage], what: &str) {
    assert!(
        msgs.iter().all(|m| m.tag != b'E'),
        "{what}: {}",
        render(msgs)
    );
}

/// The rows an admin console command answers, each column as text.
async fn console_rows(console: &mut WireClient, command: &str) -> Vec<Vec<String>> {
    let msgs = console.simple_query(command).await.expect(command);
    msgs.iter()
        .filter_map(BackendMessage::columns)
        .map(|row| {
            row.into_iter()
                .map(|c| String::from_utf8_lossy(&c.unwrap_or_default()).into_owned())
                .collect()
        })
        .collect()
}

fn render(msgs: &[BackendMessage]) -> String {
    msgs.iter()
        .map(|m| format!("{}:{:?}", m.tag as char, String::from_utf8_lossy(&m.body)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_same(what: &str, proxy: &[BackendMessage], direct: &[BackendMessage]) {
    let p: Vec<Vec<u8>> = proxy.iter().map(BackendMessage::to_frame).collect();
    let d: Vec<Vec<u8>> = direct.iter().map(BackendMessage::to_frame).collect();
    assert!(
        p == d,
        "{what}: cached answer differs from Postgres's\n--- proxy\n{}\n--- direct\n{}",
        render(proxy),
        render(direct)
    );
}

const TYPES_SCHEMA: &str = "
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE t (
  id int4 PRIMARY KEY, s text, v varchar(10), c char(3), i2 int2, i8 int8, f4 float4,
  f8 float8, n numeric(10,2), b bool, d date, ts timestamp, tstz timestamptz(3), iv interval,
  tm time, tmtz timetz, by bytea, u uuid, j json, jb jsonb, ai int4[], at text[], ip inet,
  m money, dom posint, e mood, r int4range, big numeric);
INSERT INTO t VALUES
 (1, 'héllo ''quoted''', 'short', 'ab', -32768, 9223372036854775807, 1.1, 0.3333333333333333, 12345.67, true,
  '2024-02-29', '2024-02-29 13:14:15.123456', '2024-07-01 23:59:59.999+02', '1 year 2 mons 3 days 04:05:06.5',
  '23:59:59', '12:00:00+05:30', '\\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{\"a\": [1, 2.50]}', '{\"b\": null, \"a\": 1}', '{1,NULL,3}', '{\"x y\",NULL,\"\"}', '10.0.0.1/8',
  '12.34', 7, 'happy', '[1,10)', 1e30),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, '', '', '', 0, 0, 'NaN', '-Infinity', 0, false, 'infinity', '-infinity', 'infinity',
  '-1 days', '00:00', '00:00+00', '\\x', '00000000-0000-0000-0000-000000000000', 'null', '[]',
  '{}', '{}', '::1', '-0.01', 1, 'sad', 'empty', -0.000001);
";

/// Simple and extended, text and binary, for every row and a missing key, under several
/// output settings: the cache's answers equal Postgres's byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_are_byte_identical_to_postgres() {
    let fx = fixture("cache_types", TYPES_SCHEMA).await;
    let settings: [SettingsRound<'_>; 3] = [
        ("defaults", &[], ""),
        (
            "New York, SQL/DMY, sql_standard intervals",
            &[],
            "SET TimeZone = 'America/New_York'; SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'sql_standard'",
        ),
        (
            "start-up extra_float_digits=0, bytea_output=escape, German dates",
            &[("extra_float_digits", "0"), ("bytea_output", "escape")],
            "SET DateStyle = 'German'; SET TimeZone = 'Asia/Kolkata'",
        ),
    ];
    for (label, params, set_sql) in settings {
        let mut p = fx.wire_proxy("postgres", params).await;
        let mut d = fx.wire_direct("postgres", params).await;
        if !set_sql.is_empty() {
            p.simple_query(set_sql).await.unwrap();
            d.simple_query(set_sql).await.unwrap();
        }
        for sql in [
            "SELECT * FROM t WHERE id = 1",
            "SELECT * FROM t WHERE id = 2",
            "SELECT * FROM public.t WHERE id = '3'",
            "SELECT s AS label, tstz, id, id AS again FROM t WHERE id = 1",
            "SELECT * FROM t WHERE id = 4",
            // IN lists ordered by the key: each key once, missing ones skipped.
            "SELECT * FROM t WHERE id IN (3, 4, 1, 2, 1) ORDER BY id",
            "SELECT id, s FROM t WHERE id IN (2, 1) ORDER BY t.id DESC",
        ] {
            let served = simple_until_served(&fx, &mut p, sql).await;
            let direct = d.simple_query(sql).await.unwrap();
            assert_same(&format!("{label}: {sql}"), &served, &direct);
        }
        // Without ORDER BY the row order is the plan's: Postgres answers.
        let unordered = "SELECT * FROM t WHERE id IN (1, 2)";
        let before = fx.hits();
        assert_same(
            &format!("{label}: {unordered}"),
            &p.simple_query(unordered).await.unwrap(),
            &d.simple_query(unordered).await.unwrap(),
        );
        assert_eq!(fx.hits(), before, "an unordered IN list was served");
        let in_sql = "SELECT * FROM t WHERE id IN ($1, $2, $3) ORDER BY id DESC";
        assert_same(
            "prepare IN",
            &prepare(&mut p, "s_in", in_sql, &[]).await,
            &prepare(&mut d, "s_in", in_sql, &[]).await,
        );
        let (k1, k3, k4) = (1i32.to_be_bytes(), 3i32.to_be_bytes(), 4i32.to_be_bytes());
        let in_params: Vec<Option<&[u8]>> = vec![Some(&k1), Some(&k4), Some(&k3)];
        let served = until_served(&fx, &mut p, &format!("{label}: IN list"), async |c| {
            bind_execute(c, "s_in", &in_params, &[1], &[1], true).await
        })
        .await;
        let direct = bind_execute(&mut d, "s_in", &in_params, &[1], &[1], true).await;
        assert_same(&format!("{label}: IN list, binary"), &served, &direct);
        // `$1` declared int8 makes the list's common type int8, so `$2` (left to Postgres) is
        // an int8 too: a 4-byte binary value for it is Postgres's error, not a cached row.
        let mix_sql = "SELECT * FROM t WHERE id IN ($1, $2) ORDER BY id";
        assert_same(
            "prepare mixed IN",
            &prepare(&mut p, "s_mix", mix_sql, &[20, 0]).await,
            &prepare(&mut d, "s_mix", mix_sql, &[20, 0]).await,
        );
        let k1_8 = 1i64.to_be_bytes();
        let mix_params: Vec<Option<&[u8]>> = vec![Some(&k1_8), Some(&k3)];
        let before = fx.hits();
        assert_same(
            &format!("{label}: mixed IN list, binary"),
            &bind_execute(&mut p, "s_mix", &mix_params, &[1], &[], true).await,
            &bind_execute(&mut d, "s_mix", &mix_params, &[1], &[], true).await,
        );
        assert_eq!(
            fx.hits(),
            before,
            "a mixed IN list with an undeclared binary parameter was served"
        );
        for c in [&mut p, &mut d] {
            c.simple_query("DEALLOCATE s_in; DEALLOCATE s_mix")
                .await
                .unwrap();
        }
        // Extended protocol on a statement Postgres prepared: text and binary parameters,
        // text, binary and mixed results, with and without Describe.
        let stmt_sql = "SELECT * FROM t WHERE id = $1";
        assert_same(
            "prepare",
            &prepare(&mut p, "s1", stmt_sql, &[]).await,
            &prepare(&mut d, "s1", stmt_sql, &[]).await,
        );
        let ncols = 28;
        let mixed: Vec<i16> = (0..ncols).map(|i| (i % 2) as i16).collect();
        let one = 1i32.to_be_bytes();
        let cases: Vec<ExtendedCase<'_>> = vec![
            (
                "text param, text results",
                vec![Some(b"1")],
                vec![],
                vec![],
                true,
            ),
            (
                "binary param, binary results",
                vec![Some(&one)],
                vec![1],
                vec![1],
                true,
            ),
            (
                "text param, mixed results",
                vec![Some(b"3")],
                vec![0],
                mixed.clone(),
                true,
            ),
            ("no describe", vec![Some(b"2")], vec![], vec![1], false),
            ("missing key", vec![Some(b"4")], vec![], vec![], true),
        ];
        for (what, params, pf, rf, describe) in cases {
            let served = until_served(&fx, &mut p, &format!("{label}: {what}"), async |c| {
                bind_execute(c, "s1", &params, &pf, &rf, describe).await
            })
            .await;
            let direct = bind_execute(&mut d, "s1", &params, &pf, &rf, describe).await;
            assert_same(&format!("{label}: {what}"), &served, &direct);
        }
    }
}

/// The proxy's own writes are read back at once (read-your-writes through the fence and the
/// immediate invalidation); writes straight to Postgres show up within `max_staleness`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_never_staler_than_the_contract() {
    let fx = fixture(
        "cache_fresh",
        "CREATE TABLE kv (id int8 PRIMARY KEY, v int8 NOT NULL);
         INSERT INTO kv SELECT g, 0 FROM generate_series(1, 20) g;",
    )
    .await;
    let addr = fx.proxy.local_addr();
    let proxy_url = format!(
        "host={} port={} user=postgres dbname={}",
        addr.ip(),
        addr.port(),
        fx.name
    );
    let through = |url: String| async move {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect through the proxy");
        tokio::spawn(conn);
        c
    };
    // Warm every key.
    let warm = through(proxy_url.clone()).await;
    let read = warm
        .prepare("SELECT v FROM kv WHERE id = $1")
        .await
        .unwrap();
    within("keys warm up", 30, async {
        loop {
            let before = fx.hits();
            for k in 1..=20i64 {
                warm.query_one(&read, &[&k]).await.unwrap();
            }
            if fx.hits() >= before + 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let hits_before = fx.hits();

    // Committed values per key, with the time the commit was acknowledged.
    let history: History = Arc::new(Mutex::new(vec![vec![(Instant::now(), 0)]; 21]));
    let deadline = Instant::now() + Duration::from_secs(4);
    let ryw_violations = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // Writers through the proxy, each reading its write back at once.
    for w in 0..2i64 {
        let c = through(proxy_url.clone()).await;
        let history = history.clone();
        let violations = ryw_violations.clone();
        tasks.push(tokio::spawn(async move {
            let upd = c
                .prepare("UPDATE kv SET v = v + 1 WHERE id = $1 RETURNING v")
                .await
                .unwrap();
            let sel = c.prepare("SELECT v FROM kv WHERE id = $1").await.unwrap();
            let mut i = 0i64;
            while Instant::now() < deadline {
                let k = 1 + (i * 7 + w) % 5;
                i += 1;
                let v: i64 = c.query_one(&upd, &[&k]).await.unwrap().get(0);
                history.lock().unwrap()[k as usize].push((Instant::now(), v));
                let back: i64 = c.query_one(&sel, &[&k]).await.unwrap().get(0);
                if back < v {
                    violations.lock().unwrap().push((k, v, back));
                }
            }
        }));
    }
    // Writers straight to Postgres.
    for w in 0..2i64 {
        let c = connect(&fx.pg, "postgres", &fx.name).await;
        let history = history.clone();
        tasks.push(tokio::spawn(async move {
            let upd = c
                .prepare("UPDATE kv SET v = v + 1 WHERE id = $1 RETURNING v")
                .await
                .unwrap();
            let mut i = 0i64;
            while Instant::now() < deadline {
                let k = 1 + (i * 3 + w) % 5;
                i += 1;
                let v: i64 = c.query_one(&upd, &[&k]).await.unwrap().get(0);
                history.lock().unwrap()[k as usize].push((Instant::now(), v));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    // Readers through the proxy: no value older than what was committed max_staleness ago.
    let stale_reads = Arc::new(Mutex::new(Vec::new()));
    let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for r in 0..2i64 {
        let c = through(proxy_url.clone()).await;
        let history = history.clone();
        let stale = stale_reads.clone();
        let reads = reads.clone();
        tasks.push(tokio::spawn(async move {
            let sel = c.prepare("SELECT v FROM kv WHERE id = $1").await.unwrap();
            let mut i = 0i64;
            while Instant::now() < deadline {
                let k = 1 + (i + r) % 10;
                i += 1;
                let started = Instant::now();
                let v: i64 = c.query_one(&sel, &[&k]).await.unwrap().get(0);
                reads.fetch_add(1, Relaxed);
                let bound = started.checked_sub(Duration::from_millis(MAX_STALENESS_MS));
                let must_see = history.lock().unwrap()[k as usize]
                    .iter()
                    .filter(|(t, _)| bound.is_some_and(|b| *t <= b))
                    .map(|(_, v)| *v)
                    .max()
                    .unwrap_or(0);
                if v < must_see {
                    stale.lock().unwrap().push((k, v, must_see));
                }
            }
        }));
    }
    for t in tasks {
        within("workload", 30, t).await.unwrap();
    }
    let ryw = ryw_violations.lock().unwrap().clone();
    let stale = stale_reads.lock().unwrap().clone();
    let served = fx.hits() - hits_before;
    eprintln!(
        "freshness: {} reads, {served} served from cache, {} read-your-writes violations, {} stale reads",
        reads.load(Relaxed),
        ryw.len(),
        stale.len()
    );
    assert!(
        ryw.is_empty(),
        "read-your-writes violations (key, wrote, read): {ryw:?}"
    );
    assert!(
        stale.is_empty(),
        "reads staler than max_staleness (key, read, must see): {stale:?}"
    );
    assert!(served > 0, "the cache served nothing during the workload");
    // After the writers stop, the cache converges on Postgres's values.
    let direct: Vec<i64> = fx
        .db
        .query("SELECT v FROM kv ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    within("cache converges", 10, async {
        loop {
            let mut all = true;
            for k in 1..=20i64 {
                let v: i64 = warm.query_one(&read, &[&k]).await.unwrap().get(0);
                all &= v == direct[(k - 1) as usize];
            }
            if all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// A role without SELECT gets Postgres's permission error, never the cached row; GRANT and
/// REVOKE through the proxy take effect at once.
/// Tables whose keys the cache cannot track exactly are never served from it: a key with a
/// nondeterministic collation (`'ALICE'` finds the row `'alice'`), and a replica identity
/// index other than the primary key (a key UPDATE made elsewhere would send no old key). A
/// plain table beside them is served, so the cache is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_cache_cannot_track_exactly_are_never_served() {
    let fx = fixture(
        "cache_untrackable",
        "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         CREATE TABLE names (name text COLLATE ci PRIMARY KEY, v int);
         INSERT INTO names VALUES ('alice', 1);
         CREATE TABLE moved (id int PRIMARY KEY, u int NOT NULL, v text);
         CREATE UNIQUE INDEX moved_u ON moved (u);
         ALTER TABLE moved REPLICA IDENTITY USING INDEX moved_u;
         INSERT INTO moved VALUES (1, 10, 'one');
         CREATE TABLE plain (id int PRIMARY KEY, v text);
         INSERT INTO plain VALUES (1, 'control');",
    )
    .await;
    let mut proxied = fx.wire_proxy("postgres", &[]).await;
    let mut direct = fx.wire_direct("postgres", &[]).await;
    simple_until_served(&fx, &mut proxied, "SELECT * FROM plain WHERE id = 1").await;
    let reads = [
        "SELECT * FROM names WHERE name = 'ALICE'",
        "SELECT * FROM moved WHERE id = 1",
    ];
    for round in 0..30 {
        if round == 20 {
            // A key UPDATE that bypasses the proxy.
            direct
                .simple_query("UPDATE moved SET id = 2 WHERE id = 1")
                .await
                .expect("update");
        }
        for sql in reads {
            let before = fx.hits();
            let got = proxied.simple_query(sql).await.expect("query");
            assert_eq!(fx.hits(), before, "{sql}: served from the cache");
            let want = direct.simple_query(sql).await.expect("query");
            assert_same(sql, &got, &want);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Output that depends on the catalog rather than on the row: renaming an enum label (no row
/// changes, so nothing reaches the change feed) is noticed within the 1 s schema refresh,
/// and columns whose output is an object name (`regclass`) are never served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_changes_that_alter_output_reach_the_cache() {
    let fx = fixture(
        "cache_catalog_output",
        "CREATE TYPE mood AS ENUM ('sad', 'ok');
         CREATE TYPE pair AS (a int, m mood);
         CREATE TABLE feelings (id int PRIMARY KEY, m mood, ms mood[], p pair);
         INSERT INTO feelings VALUES (1, 'sad', '{sad,ok}', '(1,sad)');
         CREATE TABLE named (id int PRIMARY KEY, r regclass);
         INSERT INTO named VALUES (1, 'feelings');",
    )
    .await;
    let read = "SELECT * FROM feelings WHERE id = 1";
    let mut proxied = fx.wire_proxy("postgres", &[]).await;
    let mut direct = fx.wire_direct("postgres", &[]).await;
    let served = simple_until_served(&fx, &mut proxied, read).await;
    assert_same(read, &served, &direct.simple_query(read).await.unwrap());
    assert!(render(&served).contains("sad"), "{}", render(&served));

    // Made directly on Postgres, as a migration run elsewhere would.
    direct
        .simple_query("ALTER TYPE mood RENAME VALUE 'sad' TO 'blue'")
        .await
        .expect("rename the label");
    let renamed = Instant::now();
    let want = direct.simple_query(read).await.unwrap();
    assert!(render(&want).contains("blue"), "{}", render(&want));
    loop {
        let got = proxied.simple_query(read).await.unwrap();
        if renamed.elapsed() > Duration::from_millis(2500) {
            assert_same("2.5 s after the rename", &got, &want);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Served again, with the new label.
    let served = simple_until_served(&fx, &mut proxied, read).await;
    assert_same("served after the rename", &served, &want);

    let named = "SELECT * FROM named WHERE id = 1";
    for _ in 0..20 {
        let before = fx.hits();
        let got = proxied.simple_query(named).await.unwrap();
        assert_eq!(
            fx.hits(),
            before,
            "a regclass column was served from the cache"
        );
        assert_same(named, &got, &direct.simple_query(named).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `EXPLAIN ANALYZE` runs its statement: of a prepared write (`EXECUTE`), it owes the session
/// a fence like the write itself, so the next read sees the new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyze_of_a_prepared_write_is_a_write() {
    let fx = fixture(
        "cache_explain_write",
        "CREATE TABLE kv (id int PRIMARY KEY, v int NOT NULL); INSERT INTO kv VALUES (1, 0);
         CREATE ROLE cp_reader LOGIN; GRANT SELECT ON kv TO cp_reader;",
    )
    .await;
    let read = "SELECT v FROM kv WHERE id = 1";
    let mut c = fx.wire_proxy("postgres", &[]).await;
    c.simple_query("PREPARE w(int) AS UPDATE kv SET v = $1 WHERE id = 1")
        .await
        .expect("prepare");
    for round in 1..=8 {
        simple_until_served(&fx, &mut c, read).await;
        c.simple_query(&format!("EXPLAIN ANALYZE EXECUTE w({round})"))
            .await
            .expect("explain analyze");
        let got = c.simple_query(read).await.unwrap();
        let value = got
            .iter()
            .find_map(|m| m.columns())
            .and_then(|cols| cols[0].clone());
        assert_eq!(
            value.as_deref(),
            Some(round.to_string().as_bytes()),
            "round {round}: the session read its own write stale:\n{}",
            render(&got)
        );
    }
}

/// A session whose reads met a fence takes its next fences as soon as its writes end (at the
/// ReadyForQuery that ends them) rather than when it next reads, but never before they
/// commit: a write inside a transaction block that names no key (an `EXECUTE` of a
/// SQL-prepared UPDATE, so only the fence keeps the cached row from the session) gets its
/// fence at COMMIT. While the block stays open, another commit moves the change feed past
/// any position taken then; the read right after COMMIT must still see the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_taken_when_writes_end_counts_from_their_commit() {
    let fx = fixture(
        "cache_eager_fence",
        "CREATE TABLE kv (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO kv VALUES (1, 0), (2, 0);",
    )
    .await;
    let read = "SELECT v FROM kv WHERE id = 1";
    let mut c = fx.wire_proxy("postgres", &[]).await;
    let other = connect(&fx.pg, "postgres", &fx.name).await;
    c.simple_query("PREPARE w(int) AS UPDATE kv SET v = $1 WHERE id = 1")
        .await
        .expect("prepare");
    for round in 1..=6 {
        simple_until_served(&fx, &mut c, read).await;
        c.simple_query("BEGIN").await.unwrap();
        c.simple_query(&format!("EXECUTE w({round})"))
            .await
            .unwrap();
        other
            .batch_execute("UPDATE kv SET v = v + 1 WHERE id = 2")
            .await
            .unwrap();
        // Time for the fence service to answer a ticket and the feed to apply that commit.
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.simple_query("COMMIT").await.unwrap();
        let got = c.simple_query(read).await.unwrap();
        assert_eq!(
            first_value(&got),
            Some(round.to_string().into_bytes()),
            "round {round}: the session read its own committed write stale:\n{}",
            render(&got)
        );
    }
}

/// The first value of the first row of a simple-query answer.
fn first_value(msgs: &[BackendMessage]) -> Option<Vec<u8>> {
    msgs.iter()
        .find_map(|m| m.columns())
        .and_then(|cols| cols.into_iter().next().flatten())
}

/// `COMMIT PREPARED` makes a prepared transaction's writes visible: the session that
/// committed it reads them, not the image cached (correctly) while it was only prepared.
/// And a REVOKE in a prepared transaction takes effect at `COMMIT PREPARED`: from then on
/// nothing is served to the role (the privilege answer read while it was only prepared,
/// still "allowed", is forgotten).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_prepared_fences_the_session_and_rereads_privileges() {
    // A cluster of its own: a prepared transaction holds back the creation of every
    // replication slot on the cluster (other tests' change feeds would wait for it), and
    // PREPARE TRANSACTION needs max_prepared_transactions.
    let pg = cluster_with(EmbeddedPgOptions {
        extra_conf: vec![("max_prepared_transactions".into(), "4".into())],
        ..EmbeddedPgOptions::default()
    })
    .await;
    let fx = fixture_on(
        Arc::new(pg),
        "cache_commit_prepared",
        "CREATE TABLE kv (id int PRIMARY KEY, v int NOT NULL); INSERT INTO kv VALUES (1, 0);
         CREATE ROLE cp_reader LOGIN; GRANT SELECT ON kv TO cp_reader;",
    )
    .await;
    let read = "SELECT v FROM kv WHERE id = 1";
    let mut c = fx.wire_proxy("postgres", &[]).await;
    // The change feed must be streaming before a transaction is prepared: creating its
    // replication slot waits for every open transaction, prepared ones included.
    simple_until_served(&fx, &mut c, read).await;
    for round in 1..=6 {
        let steps = [
            "BEGIN".to_string(),
            format!("UPDATE kv SET v = {round} WHERE id = 1"),
            format!("PREPARE TRANSACTION 'cp_{round}'"),
        ];
        for stmt in &steps {
            let got = c.simple_query(stmt).await.expect("query");
            assert_no_error(&got, stmt);
        }
        // Prepared, not committed: the old value, from the cache.
        let got = simple_until_served(&fx, &mut c, read).await;
        let old = (round - 1).to_string();
        assert_eq!(
            first_value(&got).as_deref(),
            Some(old.as_bytes()),
            "{}",
            render(&got)
        );
        let commit = format!("COMMIT PREPARED 'cp_{round}'");
        let got = c.simple_query(&commit).await.expect("commit prepared");
        assert_no_error(&got, &commit);
        let got = c.simple_query(read).await.expect("query");
        assert_eq!(
            first_value(&got).as_deref(),
            Some(round.to_string().as_bytes()),
            "round {round}: the session read its own committed write stale:\n{}",
            render(&got)
        );
    }

    let mut reader = fx.wire_proxy("cp_reader", &[]).await;
    for round in 1..=3 {
        simple_until_served(&fx, &mut reader, read).await;
        for stmt in [
            "BEGIN".to_string(),
            "REVOKE SELECT ON kv FROM cp_reader".to_string(),
            format!("PREPARE TRANSACTION 'rv_{round}'"),
        ] {
            let got = c.simple_query(&stmt).await.expect("query");
            assert_no_error(&got, &stmt);
        }
        // Only prepared: the reader may still read, and the cache may answer.
        simple_until_served(&fx, &mut reader, read).await;
        let commit = format!("COMMIT PREPARED 'rv_{round}'");
        let got = c.simple_query(&commit).await.expect("commit prepared");
        assert_no_error(&got, &commit);
        let before = fx.hits();
        let refused = reader.simple_query(read).await.expect("query");
        assert_eq!(
            refused[0].sqlstate().as_deref(),
            Some("42501"),
            "round {round}: {}",
            render(&refused)
        );
        assert_eq!(
            fx.hits(),
            before,
            "round {round}: served after COMMIT PREPARED of a REVOKE"
        );
        let got = c
            .simple_query("GRANT SELECT ON kv TO cp_reader")
            .await
            .expect("grant");
        assert_no_error(&got, "GRANT");
    }
}

/// `DEALLOCATE` that fails (here: in an aborted transaction block) leaves every statement
/// in place; a later Parse of such a name gets Postgres's "already exists" error, never an
/// answer from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deallocate_leaves_the_names_in_postgres() {
    let fx = fixture("cache_failed_deallocate", KV_TEN_ROWS).await;
    let sql = "SELECT v, id FROM kv WHERE id = $1";
    let mut p = fx.wire_proxy("postgres", &[]).await;
    let mut d = fx.wire_direct("postgres", &[]).await;
    let unnamed = vec![
        parse_msg("", sql),
        bind_msg("", "7"),
        execute_msg(),
        sync_msg(),
    ];
    until_served(&fx, &mut p, "the unnamed Parse batch", async |c| {
        batch(c, &unnamed).await
    })
    .await;
    for (i, deallocate) in ["DEALLOCATE ALL", "DEALLOCATE s_keep_1"]
        .into_iter()
        .enumerate()
    {
        let name = format!("s_keep_{i}");
        for c in [&mut p, &mut d] {
            let got = prepare(c, &name, sql, &[]).await;
            assert_eq!(got[0].tag, b'1', "{}", render(&got));
            for stmt in ["BEGIN", "SELECT 1 / 0", deallocate, "ROLLBACK"] {
                c.simple_query(stmt).await.expect("query");
            }
        }
        let again = vec![
            parse_msg(&name, sql),
            bind_msg(&name, "7"),
            execute_msg(),
            sync_msg(),
        ];
        let via = batch(&mut p, &again).await;
        assert_same(deallocate, &via, &batch(&mut d, &again).await);
        assert_eq!(
            via[0].sqlstate().as_deref(),
            Some("42P05"),
            "{}",
            render(&via)
        );
    }
}

/// A Bind of a statement SQL `PREPARE` made, and an Execute of a cursor SQL `DECLARE`
/// opened, run queries, never DDL: they get Postgres's answers through the proxy and leave
/// the cache as it was (they used to count as unclassified statements, after each of which
/// the cache forgot every key and re-read the catalog).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_cursors_made_in_sql_keep_the_cache() {
    let fx = fixture("cache_sql_prepared", KV_TEN_ROWS).await;
    let read = "SELECT v FROM kv WHERE id = 3";
    let mut reader = fx.wire_proxy("postgres", &[]).await;
    simple_until_served(&fx, &mut reader, read).await;
    let mut p = fx.wire_proxy("postgres", &[]).await;
    let mut d = fx.wire_direct("postgres", &[]).await;
    let prepare_sql = "PREPARE from_sql(int4) AS SELECT v, id FROM kv WHERE id = $1";
    for c in [&mut p, &mut d] {
        let got = c.simple_query(prepare_sql).await.expect("PREPARE");
        assert_no_error(&got, prepare_sql);
    }
    let mut fetch = cstr("cur");
    fetch.extend(2i32.to_be_bytes());
    let fetch_two = [(b'E', fetch), sync_msg()];
    for round in 0..3 {
        let via = bind_execute(&mut p, "from_sql", &[Some(b"4")], &[], &[], true).await;
        let direct = bind_execute(&mut d, "from_sql", &[Some(b"4")], &[], &[], true).await;
        assert_same("Bind of a statement SQL PREPARE made", &via, &direct);
        assert_no_error(&via, "Bind of from_sql");
        for c in [&mut p, &mut d] {
            for sql in [
                "BEGIN",
                "DECLARE cur CURSOR FOR SELECT v FROM kv ORDER BY id",
            ] {
                assert_no_error(&c.simple_query(sql).await.expect("query"), sql);
            }
        }
        let via = batch(&mut p, &fetch_two).await;
        assert_same(
            "Execute of a SQL cursor",
            &via,
            &batch(&mut d, &fetch_two).await,
        );
        assert_eq!(
            via.iter().filter(|m| m.tag == b'D').count(),
            2,
            "{}",
            render(&via)
        );
        for c in [&mut p, &mut d] {
            assert_no_error(&c.simple_query("COMMIT").await.expect("COMMIT"), "COMMIT");
        }
        // The other session is still served, at once: nothing was flushed.
        assert!(
            served_at_once(&fx, &mut reader, read).await,
            "round {round}: the cache stopped serving after a SQL-prepared statement or cursor ran: {}",
            fx.cache_state()
        );
    }
}

/// A named statement answered from the cache, dropped by a `DEALLOCATE` run through the
/// extended protocol and made again by SQL `PREPARE` as a write, runs as that write: the
/// cache never answers its Bind with the old query's rows. (It did: the proxy still held
/// the old statement, served the read, and the write never reached Postgres.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_redefined_by_sql_run_as_redefined() {
    let fx = fixture("cache_redefined", KV_TEN_ROWS).await;
    let read = "SELECT v FROM kv WHERE id = $1";
    for round in 1..=3 {
        // A session of its own each round: the write's Bind, of a name the proxy lost
        // track of, is unclassified, and a session that sent one is not served again
        // (it may have changed any setting).
        let mut p = fx.wire_proxy("postgres", &[]).await;
        assert_no_error(&prepare(&mut p, "s", read, &[]).await, read);
        let what = format!("round {round}: the named statement");
        until_served(&fx, &mut p, &what, async |c| {
            let got = bind_execute(c, "s", &[Some(b"5")], &[], &[], false).await;
            assert_no_error(&got, "Bind of s");
            got
        })
        .await;
        p.queue(b'P', &parse_msg("", "DEALLOCATE s").1)
            .await
            .unwrap();
        let got = bind_execute(&mut p, "", &[], &[], &[], false).await;
        assert_no_error(&got, "DEALLOCATE s (extended protocol)");
        let prepare_write =
            "PREPARE s(int4) AS UPDATE kv SET v = v || '+' WHERE id = $1 RETURNING v";
        assert_no_error(&p.simple_query(prepare_write).await.unwrap(), prepare_write);
        let wrote = bind_execute(&mut p, "s", &[Some(b"5")], &[], &[], false).await;
        let want = format!("v5{}", "+".repeat(round));
        assert_eq!(
            first_value(&wrote).as_deref(),
            Some(want.as_bytes()),
            "round {round}: {}",
            render(&wrote)
        );
        assert_eq!(
            wrote
                .iter()
                .find_map(BackendMessage::command_tag)
                .as_deref(),
            Some("UPDATE 1"),
            "round {round}: {}",
            render(&wrote)
        );
        let row = fx
            .db
            .query_one("SELECT v FROM kv WHERE id = 5", &[])
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, String>(0),
            want,
            "round {round}: the write was lost"
        );
    }
}

/// Messages a client pipelines behind its StartupMessage are forwarded before the proxy
/// reads anything: a statement they prepared is unknown to it, so a later Bind of the name
/// counts as unclassified (here DDL, after which the cache forgets its keys), never as a
/// statement SQL `PREPARE` made (a query or write, which would leave the cache as it is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_prepared_before_authentication_ended_are_unknown() {
    let fx = fixture("cache_early", KV_TEN_ROWS).await;
    let read = "SELECT v FROM kv WHERE id = 3";
    let mut reader = fx.wire_proxy("postgres", &[]).await;
    for round in 1..=3 {
        simple_until_served(&fx, &mut reader, read).await;
        let (tag, parse) = parse_msg("early", &format!("CREATE TABLE made_early_{round} (x int)"));
        let mut early = frame(tag, &parse);
        early.extend(frame(b'S', &[]));
        let mut c = WireClient::connect_with(
            fx.proxy.local_addr(),
            &Startup {
                user: "postgres",
                database: &fx.name,
                early: &early,
                ..Startup::default()
            },
        )
        .await
        .expect("connect through the proxy");
        let parsed = until_ready(&mut c).await;
        assert_eq!(parsed[0].tag, b'1', "round {round}: {}", render(&parsed));
        let made = bind_execute(&mut c, "early", &[], &[], &[], false).await;
        assert_no_error(
            &made,
            "Bind of a statement parsed before authentication ended",
        );
        assert_eq!(
            fx.proxy.context().cache.store.len(),
            0,
            "round {round}: DDL run by name kept the cache: {}",
            fx.cache_state()
        );
    }
}

/// A Query sent inside an extended-protocol batch that failed is discarded by Postgres
/// (without a ReadyForQuery). The proxy cannot know whether it ran, so its `DEALLOCATE ALL`
/// is not taken as having emptied the session's statements: a DDL statement bound later
/// counts as unclassified (the cache forgets its keys), never as one SQL `PREPARE` made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_inside_a_failed_batch_is_not_taken_as_run() {
    let fx = fixture("cache_query_in_batch", KV_TEN_ROWS).await;
    let read = "SELECT v FROM kv WHERE id = 3";
    let mut reader = fx.wire_proxy("postgres", &[]).await;
    for round in 1..=3 {
        simple_until_served(&fx, &mut reader, read).await;
        let mut c = fx.wire_proxy("postgres", &[]).await;
        let ddl = format!("CREATE TABLE made_in_batch_{round} (x int)");
        assert_no_error(&prepare(&mut c, "ddl", &ddl, &[]).await, &ddl);
        let (tag, parse) = parse_msg("", "SELEC 1");
        c.queue(tag, &parse).await.unwrap();
        c.queue(b'Q', &cstr("DEALLOCATE ALL")).await.unwrap();
        c.queue(b'S', &[]).await.unwrap();
        c.flush().await.unwrap();
        let failed = until_ready(&mut c).await;
        assert_eq!(
            failed[0].sqlstate().as_deref(),
            Some("42601"),
            "round {round}: {}",
            render(&failed)
        );
        let made = bind_execute(&mut c, "ddl", &[], &[], &[], false).await;
        assert_no_error(&made, "Bind of the statement the discarded DEALLOCATE left");
        assert_eq!(
            fx.proxy.context().cache.store.len(),
            0,
            "round {round}: DDL run by name kept the cache: {}",
            fx.cache_state()
        );
    }
}

/// A `Parse Bind Execute Sync` batch that reaches the proxy in two reads, the Parse first:
/// the Parse has gone to Postgres, so the rest goes there too, and the client gets exactly
/// Postgres's answers (the cache answered the Bind, leaving Postgres's ParseComplete to
/// turn up in front of the next answer and its transaction open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_split_after_its_parse_is_answered_by_postgres() {
    let fx = fixture("cache_split_batch", KV_TEN_ROWS).await;
    let sql = "SELECT v, id FROM kv WHERE id = $1";
    let mut p = fx.wire_proxy("postgres", &[]).await;
    let mut d = fx.wire_direct("postgres", &[]).await;
    let whole = vec![
        parse_msg("", sql),
        bind_msg("", "7"),
        execute_msg(),
        sync_msg(),
    ];
    until_served(&fx, &mut p, "the batch", async |c| batch(c, &whole).await).await;
    for round in 1..=3 {
        let mut answers = Vec::new();
        for c in [&mut p, &mut d] {
            let (tag, body) = &whole[0];
            c.queue(*tag, body).await.unwrap();
            c.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut got = batch(c, &whole[1..]).await;
            got.extend(c.simple_query("SELECT 1").await.expect("next query"));
            answers.push(got);
        }
        assert_same(
            &format!("round {round}: split batch"),
            &answers[0],
            &answers[1],
        );
    }
}

/// Sends one Query written in bytes (another client encoding than UTF-8).
async fn raw_query(c: &mut WireClient, sql: &[u8]) -> Vec<BackendMessage> {
    let mut q = sql.to_vec();
    q.push(0);
    c.queue(b'Q', &q).await.unwrap();
    c.flush().await.unwrap();
    until_ready(c).await
}

/// Whether the cache answers `sql` for `c` within three tries, none of which waits.
async fn served_at_once(fx: &Fixture, c: &mut WireClient, sql: &str) -> bool {
    let before = fx.hits();
    for _ in 0..3 {
        let got = c.simple_query(sql).await.expect("read");
        assert_no_error(&got, sql);
        if fx.hits() > before {
            return true;
        }
    }
    false
}

/// A LATIN1 session's statements are read as Postgres reads them (byte b is U+00b): a
/// write naming a non-ASCII key drops exactly that key at once, and neither its reads nor
/// its writes make the cache forget anything else (they were unclassified, and each one
/// flushed the whole cache). A statement pipelined behind `SET client_encoding` is not
/// read in an encoding that may no longer hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_statements_are_read_as_postgres_reads_them() {
    let fx = fixture(
        "cache_latin1",
        "CREATE TABLE tk (k text PRIMARY KEY, v int4);
         INSERT INTO tk VALUES ('plain', 1), ('\u{e9}', 1), ('\u{c3}\u{a9}', 1);",
    )
    .await;
    // UTF-8 readers of the three keys: 'plain', 'é' and 'Ã©' (whose LATIN1 bytes C3 A9
    // are also the UTF-8 bytes of 'é').
    let plain = "SELECT v FROM tk WHERE k = 'plain'";
    let e_acute = "SELECT v FROM tk WHERE k = '\u{e9}'";
    let mojibake = "SELECT v FROM tk WHERE k = '\u{c3}\u{a9}'";
    let mut reader = fx.wire_proxy("postgres", &[]).await;
    for sql in [plain, e_acute, mojibake] {
        simple_until_served(&fx, &mut reader, sql).await;
    }
    let mut p = fx
        .wire_proxy("postgres", &[("client_encoding", "LATIN1")])
        .await;
    let mut d = fx
        .wire_direct("postgres", &[("client_encoding", "LATIN1")])
        .await;

    let read = b"SELECT k, v FROM tk WHERE k = '\xe9'";
    let via = raw_query(&mut p, read).await;
    assert_same("LATIN1 read", &via, &raw_query(&mut d, read).await);
    assert_no_error(&via, "LATIN1 read");
    assert!(
        served_at_once(&fx, &mut reader, plain).await,
        "a LATIN1 read made the cache forget its keys: {}",
        fx.cache_state()
    );

    let write = b"UPDATE tk SET v = v + 1 WHERE k = '\xe9'";
    let via = raw_query(&mut p, write).await;
    assert_no_error(&via, "LATIN1 write");
    let got = reader.simple_query(e_acute).await.expect("read");
    assert_eq!(
        first_value(&got).as_deref(),
        Some(&b"2"[..]),
        "the key a LATIN1 write named was served stale: {}",
        render(&got)
    );
    assert!(
        served_at_once(&fx, &mut reader, plain).await,
        "a LATIN1 write made the cache forget other keys: {}",
        fx.cache_state()
    );

    // A UTF-8 session switches to LATIN1 and, without waiting, writes the key whose LATIN1
    // bytes read as 'é' in UTF-8: Postgres changes 'Ã©', and so must the cache.
    let mut switcher = fx.wire_proxy("postgres", &[]).await;
    switcher
        .queue(b'Q', b"SET client_encoding TO 'LATIN1'\0")
        .await
        .unwrap();
    let mut q = b"UPDATE tk SET v = v + 10 WHERE k = '\xc3\xa9'".to_vec();
    q.push(0);
    switcher.queue(b'Q', &q).await.unwrap();
    switcher.flush().await.unwrap();
    assert_no_error(&until_ready(&mut switcher).await, "SET client_encoding");
    assert_no_error(&until_ready(&mut switcher).await, "pipelined LATIN1 write");
    let got = reader.simple_query(mojibake).await.expect("read");
    assert_eq!(
        first_value(&got).as_deref(),
        Some(&b"11"[..]),
        "a write pipelined behind SET client_encoding was read in the old encoding: {}",
        render(&got)
    );

    // A UTF-8 session sets LATIN1 inside a transaction block, then pipelines ROLLBACK (which
    // restores UTF8) and a UTF-8 write of 'é' in a new block, left open: the key must be
    // dropped at once (not only when the change feed applies the commit), so the next read
    // of 'é' is not answered from the cache.
    simple_until_served(&fx, &mut reader, e_acute).await;
    let mut undo = fx.wire_proxy("postgres", &[]).await;
    for sql in ["BEGIN", "SET client_encoding TO 'LATIN1'"] {
        assert_no_error(&undo.simple_query(sql).await.expect(sql), sql);
    }
    let write = "UPDATE tk SET v = v + 100 WHERE k = '\u{e9}'";
    for sql in ["ROLLBACK", "BEGIN", write] {
        undo.queue(b'Q', &cstr(sql)).await.unwrap();
    }
    undo.flush().await.unwrap();
    for sql in ["ROLLBACK", "BEGIN", write] {
        assert_no_error(&until_ready(&mut undo).await, sql);
    }
    let before = fx.hits();
    reader.simple_query(e_acute).await.expect("read");
    assert_eq!(
        fx.hits(),
        before,
        "a write pipelined behind a ROLLBACK that restored UTF8 was read as LATIN1: \
         the key it names stayed in the cache"
    );
    assert_no_error(
        &undo.simple_query("COMMIT").await.expect("COMMIT"),
        "COMMIT",
    );

    // The same switch made by a FunctionCall of set_config, with a LATIN1 write of 'Ã©'
    // behind it.
    simple_until_served(&fx, &mut reader, mojibake).await;
    let set_config: u32 = fx
        .db
        .query_one(
            "SELECT 'set_config(text,text,boolean)'::regprocedure::oid",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut call = set_config.to_be_bytes().to_vec();
    call.extend(0i16.to_be_bytes());
    call.extend(3i16.to_be_bytes());
    for arg in [&b"client_encoding"[..], b"LATIN1", b"f"] {
        call.extend((arg.len() as i32).to_be_bytes());
        call.extend(arg);
    }
    call.extend(0i16.to_be_bytes());
    let mut caller = fx.wire_proxy("postgres", &[]).await;
    caller.queue(b'F', &call).await.unwrap();
    caller.queue(b'Q', b"BEGIN\0").await.unwrap();
    let mut q = b"UPDATE tk SET v = v + 1000 WHERE k = '\xc3\xa9'".to_vec();
    q.push(0);
    caller.queue(b'Q', &q).await.unwrap();
    caller.flush().await.unwrap();
    assert_no_error(&until_ready(&mut caller).await, "FunctionCall set_config");
    assert_no_error(&until_ready(&mut caller).await, "BEGIN");
    assert_no_error(&until_ready(&mut caller).await, "pipelined LATIN1 write");
    let before = fx.hits();
    reader.simple_query(mojibake).await.expect("read");
    assert_eq!(
        fx.hits(),
        before,
        "a write pipelined behind a FunctionCall of set_config was read in the old \
         encoding: the key it names stayed in the cache"
    );
    assert_no_error(
        &caller.simple_query("COMMIT").await.expect("COMMIT"),
        "COMMIT",
    );
    let got = reader.simple_query(mojibake).await.expect("read");
    assert_eq!(
        first_value(&got).as_deref(),
        Some(&b"1011"[..]),
        "{}",
        render(&got)
    );

    // A LATIN1 session binds the key as a parameter: bytes C3 A9 are 'Ã©' once Postgres
    // has converted them, not the 'é' they spell in UTF-8.
    simple_until_served(&fx, &mut reader, mojibake).await;
    let bound_write = "UPDATE tk SET v = v + 1 WHERE k = $1";
    assert_no_error(&p.simple_query("BEGIN").await.expect("BEGIN"), "BEGIN");
    assert_no_error(&prepare(&mut p, "w", bound_write, &[]).await, bound_write);
    let got = bind_execute(&mut p, "w", &[Some(b"\xc3\xa9")], &[], &[], false).await;
    assert_eq!(
        got.iter().find_map(BackendMessage::command_tag).as_deref(),
        Some("UPDATE 1")
    );
    let before = fx.hits();
    reader.simple_query(mojibake).await.expect("read");
    assert_eq!(
        fx.hits(),
        before,
        "a LATIN1 session's bound key was read as UTF-8: the key it names stayed in the cache"
    );
    assert_no_error(&p.simple_query("COMMIT").await.expect("COMMIT"), "COMMIT");
}

/// A `RESET ALL` that a rollback undoes leaves the session's settings as they were: a session
/// with `extra_float_digits = 0` keeps getting Postgres's answers, and one that really reset
/// is served from the cache again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_a_rollback_restores_keep_the_cache_away() {
    let fx = fixture(
        "cache_reset_rollback",
        "CREATE TABLE fl (id int PRIMARY KEY, f float8); INSERT INTO fl VALUES (1, 1.0 / 3);",
    )
    .await;
    let read = "SELECT f FROM fl WHERE id = 1";
    let mut warm = fx.wire_proxy("postgres", &[]).await;
    simple_until_served(&fx, &mut warm, read).await;

    let mut c = fx.wire_proxy("postgres", &[]).await;
    let mut direct = fx.wire_direct("postgres", &[]).await;
    let cases: [&[&str]; 3] = [
        &["BEGIN", "RESET ALL", "ROLLBACK"],
        &["BEGIN", "RESET ALL", "SELECT 1 / 0", "ROLLBACK"],
        // One Query: its error rolls the RESET back too.
        &["RESET ALL; SELECT 1 / 0"],
    ];
    for steps in cases {
        let setup = steps.join(" / ");
        for s in [&mut c, &mut direct] {
            s.simple_query("SET extra_float_digits = 0")
                .await
                .expect("set");
        }
        for stmt in steps {
            c.simple_query(stmt).await.expect("query");
            direct.simple_query(stmt).await.expect("query");
        }
        let want = direct.simple_query(read).await.unwrap();
        assert!(
            render(&want).contains("0.333333333333333\""),
            "{}",
            render(&want)
        );
        for _ in 0..5 {
            let before = fx.hits();
            let got = c.simple_query(read).await.unwrap();
            assert_eq!(fx.hits(), before, "{setup}: served from the cache");
            assert_same(&setup, &got, &want);
        }
    }
    c.simple_query("RESET ALL").await.expect("reset");
    let served = simple_until_served(&fx, &mut c, read).await;
    assert_same(
        "after RESET ALL",
        &served,
        &warm.simple_query(read).await.unwrap(),
    );
}

/// Point reads that Postgres answers with an error or a NOTICE get exactly that, never a
/// cached row: another database's table, a key spelled as `int4in` refuses it (or as only
/// PostgreSQL 16 reads it), an alias Postgres truncates, and a parameter the statement does
/// not use but Postgres still reads with its declared type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_postgres_refuses_get_its_answer() {
    let fx = fixture(
        "cache_refused_reads",
        "CREATE TABLE kv (id int PRIMARY KEY, v text); INSERT INTO kv VALUES (1, 'one');",
    )
    .await;
    let mut proxied = fx.wire_proxy("postgres", &[]).await;
    let mut direct = fx.wire_direct("postgres", &[]).await;
    simple_until_served(&fx, &mut proxied, "SELECT * FROM kv WHERE id = 1").await;
    let long_alias = "a".repeat(70);
    let reads = [
        "SELECT * FROM otherdb.public.kv WHERE id = 1".to_string(),
        "SELECT * FROM kv WHERE id = '1\u{a0}'".to_string(),
        "SELECT * FROM kv WHERE id = 0x1".to_string(),
        "SELECT * FROM kv WHERE id = 0_1".to_string(),
        format!("SELECT v AS {long_alias} FROM kv WHERE id = 1"),
    ];
    // Every case is checked before the test fails, so one run names all that broke.
    let mut served = Vec::new();
    for sql in &reads {
        let before = fx.hits();
        let got = proxied.simple_query(sql).await.expect("query");
        if fx.hits() != before {
            served.push(sql.clone());
        } else {
            assert_same(sql, &got, &direct.simple_query(sql).await.expect("query"));
        }
    }
    // A declared parameter the text does not use is still read as an int4.
    let sql = "SELECT * FROM kv WHERE id = $1";
    for c in [&mut proxied, &mut direct] {
        prepare(c, "two", sql, &[23, 23]).await;
    }
    for params in [[b"1".as_slice(), b"abc"], [b"1", b"2"]] {
        let p: Vec<Option<&[u8]>> = params.iter().map(|v| Some(*v)).collect();
        let before = fx.hits();
        let got = bind_execute(&mut proxied, "two", &p, &[], &[], true).await;
        let want = bind_execute(&mut direct, "two", &p, &[], &[], true).await;
        if fx.hits() != before {
            served.push(format!("{sql} with {params:?}"));
        } else {
            assert_same("unused parameter", &got, &want);
        }
    }
    assert!(served.is_empty(), "served from the cache: {served:#?}");
}

/// A temporary table that shadows a cached one is what Postgres reads from then on in that
/// session: created with `CREATE TEMP TABLE`, by naming `pg_temp`, or inside a
/// multi-statement Query, it ends cache service for the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_tables_that_shadow_a_cached_table_end_cache_service() {
    let fx = fixture(
        "cache_temp_shadow",
        "CREATE TABLE users (id int PRIMARY KEY, name text); INSERT INTO users VALUES (1, 'real');",
    )
    .await;
    let read = "SELECT * FROM users WHERE id = 1";
    let mut warm = fx.wire_proxy("postgres", &[]).await;
    let served = simple_until_served(&fx, &mut warm, read).await;
    assert!(render(&served).contains("real"), "{}", render(&served));
    for shadow in [
        "CREATE TEMP TABLE users (id int PRIMARY KEY, name text); INSERT INTO users VALUES (1, 'shadow')",
        "CREATE TABLE pg_temp.users (id int PRIMARY KEY, name text); INSERT INTO pg_temp.users VALUES (1, 'shadow')",
        "SELECT 1; CREATE TEMP TABLE users (id int PRIMARY KEY, name text); INSERT INTO users VALUES (1, 'shadow')",
    ] {
        let mut c = fx.wire_proxy("postgres", &[]).await;
        // The session is served from the cache first (the previous round's DDL flushed it)...
        let first = simple_until_served(&fx, &mut c, read).await;
        assert!(render(&first).contains("real"), "{}", render(&first));
        // ...and once its temporary table shadows `users`, Postgres answers it.
        c.simple_query(shadow).await.expect("shadowing statements");
        // Once the cache serves `users` again (another session sees it), and for as long as
        // the session's own write fence could have held it back, Postgres answers.
        simple_until_served(&fx, &mut warm, read).await;
        for _ in 0..15 {
            let before = fx.hits();
            let after = c.simple_query(read).await.expect("query");
            assert_eq!(fx.hits(), before, "{shadow}: served from the cache");
            assert!(
                render(&after).contains("shadow") && !render(&after).contains("real"),
                "{shadow}: {}",
                render(&after)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_postgres_refuses_never_get_cached_rows() {
    let fx = fixture(
        "cache_acl",
        "CREATE TABLE secret (id int4 PRIMARY KEY, v text);
         INSERT INTO secret VALUES (1, 'classified');
         CREATE ROLE reader LOGIN;",
    )
    .await;
    let mut admin = fx.wire_proxy("postgres", &[]).await;
    let sql = "SELECT * FROM secret WHERE id = 1";
    simple_until_served(&fx, &mut admin, sql).await;

    let mut reader = fx.wire_proxy("reader", &[]).await;
    let mut reader_direct = fx.wire_direct("reader", &[]).await;
    for _ in 0..5 {
        let before = fx.hits();
        let via_proxy = reader.simple_query(sql).await.unwrap();
        let direct = reader_direct.simple_query(sql).await.unwrap();
        assert_eq!(
            fx.hits(),
            before,
            "a refused role was answered from the cache"
        );
        assert_eq!(via_proxy[0].sqlstate().as_deref(), Some("42501"));
        assert_same("permission error", &via_proxy, &direct);
    }
    // GRANT through the proxy: the reader is served (from the cache, eventually).
    admin
        .simple_query("GRANT SELECT ON secret TO reader")
        .await
        .unwrap();
    let served = simple_until_served(&fx, &mut reader, sql).await;
    assert_same(
        "granted",
        &served,
        &reader_direct.simple_query(sql).await.unwrap(),
    );
    // REVOKE through the proxy: refused at once.
    admin
        .simple_query("REVOKE SELECT ON secret FROM reader")
        .await
        .unwrap();
    let before = fx.hits();
    let refused = reader.simple_query(sql).await.unwrap();
    assert_eq!(refused[0].sqlstate().as_deref(), Some("42501"));
    assert_eq!(fx.hits(), before);
    // A role switched with SET ROLE is never served either.
    admin
        .simple_query("GRANT SELECT ON secret TO reader")
        .await
        .unwrap();
    let mut switched = fx.wire_proxy("postgres", &[]).await;
    switched.simple_query("SET ROLE reader").await.unwrap();
    admin
        .simple_query("REVOKE SELECT ON secret FROM reader")
        .await
        .unwrap();
    let before = fx.hits();
    let refused = switched.simple_query(sql).await.unwrap();
    assert_eq!(refused[0].sqlstate().as_deref(), Some("42501"));
    assert_eq!(fx.hits(), before);
}

/// A REVOKE or a row-level-security switch inside a transaction block takes effect for the
/// cache at COMMIT, not at the statement: a catalog read between the two (the cache reads it
/// again right after the statement) still shows the old privileges and table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privilege_and_table_changes_count_from_their_commit() {
    let fx = fixture(
        "cache_acl_txn",
        "CREATE TABLE secret (id int4 PRIMARY KEY, v text);
         INSERT INTO secret VALUES (1, 'classified');
         CREATE ROLE txn_reader LOGIN;
         GRANT SELECT ON secret TO txn_reader;",
    )
    .await;
    let sql = "SELECT * FROM secret WHERE id = 1";
    let mut admin = fx.wire_proxy("postgres", &[]).await;
    let mut reader = fx.wire_proxy("txn_reader", &[]).await;
    let mut reader_direct = fx.wire_direct("txn_reader", &[]).await;
    let mut console = fx.wire_console().await;
    for round in 1..=3 {
        // REVOKE inside a transaction block: until COMMIT the reader may still read (and
        // the cache may answer, as Postgres would); from COMMIT on, never.
        simple_until_served(&fx, &mut reader, sql).await;
        admin.simple_query("BEGIN").await.unwrap();
        admin
            .simple_query("REVOKE SELECT ON secret FROM txn_reader")
            .await
            .unwrap();
        let before_commit = simple_until_served(&fx, &mut reader, sql).await;
        assert!(
            render(&before_commit).contains("classified"),
            "round {round}: {}",
            render(&before_commit)
        );
        admin.simple_query("COMMIT").await.unwrap();
        let before = fx.hits();
        let refused = reader.simple_query(sql).await.unwrap();
        assert_eq!(
            refused[0].sqlstate().as_deref(),
            Some("42501"),
            "round {round}: {}",
            render(&refused)
        );
        assert_eq!(fx.hits(), before, "round {round}: served after REVOKE");
        admin
            .simple_query("GRANT SELECT ON secret TO txn_reader")
            .await
            .unwrap();

        // Row-level security switched on inside a transaction block: from COMMIT on, the
        // reader (no policy) sees no row, and the cache never answers for the table.
        simple_until_served(&fx, &mut reader, sql).await;
        admin.simple_query("BEGIN").await.unwrap();
        admin
            .simple_query("ALTER TABLE secret ENABLE ROW LEVEL SECURITY")
            .await
            .unwrap();
        // Long enough for the catalog to be read again while the change is uncommitted.
        tokio::time::sleep(Duration::from_millis(300)).await;
        admin.simple_query("COMMIT").await.unwrap();
        for i in 0..20 {
            let before = fx.hits();
            let via_proxy = reader.simple_query(sql).await.unwrap();
            let direct = reader_direct.simple_query(sql).await.unwrap();
            assert_eq!(
                fx.hits(),
                before,
                "round {round}, read {i}: served under RLS"
            );
            assert_same(&format!("round {round}, read {i}"), &via_proxy, &direct);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // The operator is told why the table gets nothing placed (once the catalog has
        // been read again, at most a second after the commit).
        let unservable: Vec<String> = ["public.secret", "*", "memory", "0"]
            .into_iter()
            .chain(["not servable: row-level security"])
            .map(String::from)
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let placements = console_rows(&mut console, "SHOW PLACEMENTS").await;
            if placements.contains(&unservable) {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: {placements:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        admin
            .simple_query("ALTER TABLE secret DISABLE ROW LEVEL SECURITY")
            .await
            .unwrap();
    }
}

/// With the change feed's connection gone, reads pass through; writes made meanwhile are
/// never hidden by the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_feed_means_pass_through() {
    let fx = fixture(
        "cache_feed",
        "CREATE TABLE kv (id int4 PRIMARY KEY, v int4);
         INSERT INTO kv VALUES (1, 0);",
    )
    .await;
    let mut c = fx.wire_proxy("postgres", &[]).await;
    let sql = "SELECT v FROM kv WHERE id = 1";
    simple_until_served(&fx, &mut c, sql).await;
    for round in 1..=3 {
        // Cut the feed, then write straight to Postgres.
        fx.db
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = '{}_slot' AND active_pid IS NOT NULL;
                 UPDATE kv SET v = {round} WHERE id = 1;",
                fx.name
            ))
            .await
            .unwrap();
        let cut = Instant::now();
        let new = round.to_string();
        let mut served_new = false;
        while cut.elapsed() < Duration::from_secs(10) {
            let started = cut.elapsed();
            let before = fx.hits();
            let msgs = c.simple_query(sql).await.unwrap();
            let v = msgs
                .iter()
                .find_map(|m| m.columns())
                .and_then(|cols| cols[0].clone())
                .map(|b| String::from_utf8(b).unwrap());
            let from_cache = fx.hits() > before;
            assert!(
                started <= Duration::from_millis(MAX_STALENESS_MS) || v.as_deref() == Some(&*new),
                "round {round}: read {v:?} {started:?} after the write (from cache: {from_cache})"
            );
            served_new |= from_cache && v.as_deref() == Some(&*new);
            if served_new && started > Duration::from_millis(MAX_STALENESS_MS) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            served_new,
            "round {round}: the cache never served again after the feed came back"
        );
    }
}

/// Sends `frames` as one write and reads up to ReadyForQuery.
async fn batch(c: &mut WireClient, frames: &[(u8, Vec<u8>)]) -> Vec<BackendMessage> {
    for (t, body) in frames {
        c.queue(*t, body).await.unwrap();
    }
    c.flush().await.unwrap();
    until_ready(c).await
}

fn parse_msg(name: &str, sql: &str) -> (u8, Vec<u8>) {
    let mut b = cstr(name);
    b.extend(cstr(sql));
    b.extend(0i16.to_be_bytes());
    (b'P', b)
}

fn bind_msg(stmt: &str, key: &str) -> (u8, Vec<u8>) {
    let mut b = cstr("");
    b.extend(cstr(stmt));
    b.extend(0i16.to_be_bytes());
    b.extend(1i16.to_be_bytes());
    b.extend((key.len() as i32).to_be_bytes());
    b.extend(key.as_bytes());
    b.extend(0i16.to_be_bytes());
    (b'B', b)
}

fn describe_msg(kind: u8, name: &str) -> (u8, Vec<u8>) {
    let mut b = vec![kind];
    b.extend(cstr(name));
    (b'D', b)
}

fn execute_msg() -> (u8, Vec<u8>) {
    let mut b = cstr("");
    b.extend(0i32.to_be_bytes());
    (b'E', b)
}

fn sync_msg() -> (u8, Vec<u8>) {
    (b'S', Vec::new())
}

/// `Parse Bind Describe Execute Sync` batches (unnamed statements, named ones never sent to
/// Postgres) answered from the cache; whatever later needs the statement in Postgres
/// (Describe, a Bind that misses, a second Parse of the name, DEALLOCATE, EXECUTE) behaves
/// exactly as it does directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_batches_are_served_and_their_statements_materialize() {
    let fx = fixture(
        "cache_parse",
        "CREATE TABLE kv (id int4 PRIMARY KEY, v text);
         INSERT INTO kv SELECT g, 'v' || g FROM generate_series(1, 100) g;",
    )
    .await;
    let sql = "SELECT v, id FROM kv WHERE id = $1";
    let mut p = fx.wire_proxy("postgres", &[]).await;
    let mut d = fx.wire_direct("postgres", &[]).await;
    let unnamed = |key: &str| {
        vec![
            parse_msg("", sql),
            bind_msg("", key),
            describe_msg(b'P', ""),
            execute_msg(),
            sync_msg(),
        ]
    };
    // Unnamed statements, as pgbench -M extended and many drivers send them.
    let served = until_served(&fx, &mut p, "the unnamed Parse batch", async |c| {
        batch(c, &unnamed("7")).await
    })
    .await;
    assert_same(
        "unnamed Parse batch",
        &served,
        &batch(&mut d, &unnamed("7")).await,
    );
    // The unnamed statement exists only in the proxy now: a Bind of it that Postgres must
    // answer (a key nobody read yet) materializes it first.
    let rebind = vec![bind_msg("", "55"), execute_msg(), sync_msg()];
    let before = fx.hits();
    let via = batch(&mut p, &rebind).await;
    assert_eq!(fx.hits(), before, "key 55 was not placed yet");
    assert_same(
        "Bind of a virtual unnamed statement",
        &via,
        &batch(&mut d, &rebind).await,
    );

    // A named statement Postgres never saw: its first batch is served...
    let named = |key: &str| {
        vec![
            parse_msg("s_named", sql),
            bind_msg("s_named", key),
            describe_msg(b'P', ""),
            execute_msg(),
            sync_msg(),
        ]
    };
    // (warm key 7 stays hot; a fresh name each time until one is served)
    let before = fx.hits();
    let via = batch(&mut p, &named("7")).await;
    assert!(fx.hits() > before, "the named Parse batch was not served");
    assert_same("named Parse batch", &via, &batch(&mut d, &named("7")).await);
    // ...then described by Postgres (ParameterDescription + RowDescription)...
    let describe = vec![describe_msg(b'S', "s_named"), sync_msg()];
    assert_same(
        "Describe of a virtual statement",
        &batch(&mut p, &describe).await,
        &batch(&mut d, &describe).await,
    );
    // ...a second Parse of the name fails as it does directly (42P05)...
    let again = vec![parse_msg("s_named", sql), sync_msg()];
    let via = batch(&mut p, &again).await;
    assert_eq!(via[0].sqlstate().as_deref(), Some("42P05"));
    assert_same("re-Parse", &via, &batch(&mut d, &again).await);
    // ...Binds of it (served or not) answer as directly...
    let via = batch(&mut p, &named_execute_batch()).await;
    assert_same(
        "Bind of the materialized statement",
        &via,
        &batch(&mut d, &named_execute_batch()).await,
    );
    // ...and SQL-level EXECUTE / DEALLOCATE see a virtual one too.
    let n2 = vec![
        parse_msg("s_two", sql),
        bind_msg("s_two", "7"),
        execute_msg(),
        sync_msg(),
    ];
    let before = fx.hits();
    let via = batch(&mut p, &n2).await;
    assert!(
        fx.hits() > before,
        "the second named Parse batch was not served"
    );
    assert_same(
        "named Parse batch, no Describe",
        &via,
        &batch(&mut d, &n2).await,
    );
    for q in [
        "EXECUTE s_two(7)",
        "DEALLOCATE s_two",
        "DEALLOCATE s_two",
        "SELECT count(*) FROM pg_prepared_statements WHERE name = 's_named'",
    ] {
        let via = p.simple_query(q).await.unwrap();
        let direct = d.simple_query(q).await.unwrap();
        assert_same(q, &via, &direct);
    }
    // SQL `EXECUTE` / `DEALLOCATE` of a virtual statement sent through the extended protocol
    // (a Parse of that text, unnamed): Postgres must have the statement by then. New
    // sessions each time: after the failed `DEALLOCATE` above this one answers no named
    // Parse itself, and an `EXECUTE` (a possible write) fences its session.
    let no_params = {
        let mut b = cstr("");
        b.extend(cstr(""));
        b.extend([0u8; 6]);
        (b'B', b)
    };
    for (name, sql_of_name) in [
        ("s_three", "EXECUTE s_three(7)"),
        ("s_four", "DEALLOCATE s_four"),
    ] {
        let mut p = fx.wire_proxy("postgres", &[]).await;
        let mut d = fx.wire_direct("postgres", &[]).await;
        let served = vec![
            parse_msg(name, sql),
            bind_msg(name, "7"),
            execute_msg(),
            sync_msg(),
        ];
        let before = fx.hits();
        let via = batch(&mut p, &served).await;
        assert!(
            fx.hits() > before,
            "{name}: the named Parse batch was not served"
        );
        assert_same(name, &via, &batch(&mut d, &served).await);
        let run = vec![
            parse_msg("", sql_of_name),
            no_params.clone(),
            execute_msg(),
            sync_msg(),
        ];
        let via = batch(&mut p, &run).await;
        assert_same(
            &format!("{sql_of_name} through the extended protocol"),
            &via,
            &batch(&mut d, &run).await,
        );
    }
}

fn named_execute_batch() -> Vec<(u8, Vec<u8>)> {
    vec![bind_msg("s_named", "7"), execute_msg(), sync_msg()]
}

/// Reads `SELECT v FROM kv WHERE id = 1` through `addr` until the cache serves the value
/// `want`; every read after `since + max_staleness` must return `want`.
async fn converge(proxy: &ServerHandle, db: &str, want: &str, since: Instant, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut c = loop {
        // Right after a restart the proxy (or Postgres) may not accept yet.
        match WireClient::connect_with(
            proxy.local_addr(),
            &Startup {
                user: "postgres",
                database: db,
                ..Startup::default()
            },
        )
        .await
        {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{label}: cannot connect: {e}"),
        }
    };
    loop {
        let started = since.elapsed();
        let before = proxy.context().cache.counters.hits.load(Relaxed);
        let msgs = match c.simple_query("SELECT v FROM kv WHERE id = 1").await {
            Ok(m) => m,
            Err(e) => panic!("{label}: {e}"),
        };
        let served = proxy.context().cache.counters.hits.load(Relaxed) > before;
        let v = msgs
            .iter()
            .find_map(|m| m.columns())
            .and_then(|cols| cols[0].clone())
            .map(|b| String::from_utf8(b).unwrap());
        assert!(
            v.as_deref() == Some(want) || started <= Duration::from_millis(MAX_STALENESS_MS),
            "{label}: read {v:?} {started:?} after the write (from cache: {served})"
        );
        if served && v.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: the cache never served again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A proxy restart (same slot: changes made while it was down come through the feed) and an
/// upstream restart (the feed reconnects and resumes) never let a stale row be served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_and_upstream_restarts_never_serve_stale() {
    let mut pg = cluster().await;
    let admin = connect(&pg, "postgres", "postgres").await;
    admin
        .batch_execute(
            "CREATE TABLE kv (id int4 PRIMARY KEY, v text); INSERT INTO kv VALUES (1, 'a');",
        )
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("pgpolyglot-cache-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = PolicyDir(dir.clone());
    std::fs::write(
        dir.join("cache.toml"),
        format!(
            "tables = [\"public.kv\"]\n[cache]\npromote_after = 1\nmax_staleness = \"{MAX_STALENESS_MS}ms\"\n"
        ),
    )
    .unwrap();
    let config = || {
        let mut c = proxy_config(&pg.url("postgres", "postgres"));
        c.policies = dir.clone();
        c.change_feed.status_interval = Duration::from_millis(100);
        c.change_feed.timeout = Duration::from_secs(5);
        c.stats.interval = Duration::from_millis(100);
        c
    };
    let proxy = proxy_with(config()).await;
    converge(&proxy, "postgres", "a", Instant::now(), "first start").await;

    // The proxy goes away; a write lands while it is down; it comes back on the same slot.
    proxy.shutdown().await;
    admin
        .batch_execute("UPDATE kv SET v = 'b' WHERE id = 1")
        .await
        .unwrap();
    let written = Instant::now();
    let proxy = proxy_with(config()).await;
    converge(&proxy, "postgres", "b", written, "after a proxy restart").await;

    // Postgres restarts under the proxy; a write right after it.
    pg.restart().await.expect("restart the upstream");
    let admin = connect(&pg, "postgres", "postgres").await;
    admin
        .batch_execute("UPDATE kv SET v = 'c' WHERE id = 1")
        .await
        .unwrap();
    let written = Instant::now();
    converge(
        &proxy,
        "postgres",
        "c",
        written,
        "after an upstream restart",
    )
    .await;
    proxy.shutdown().await;
}

/// Answers from the cache go out only between Postgres's frames: a listening session
/// reading cached rows while bursts of large notifications arrive (frames that span the
/// proxy's reads, so answers often wait behind a half-forwarded one) gets every answer whole
/// and in order, and every notification intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_never_split_a_notification() {
    let fx = fixture(
        "cache_notify_interleave",
        "CREATE TABLE kv (id int4 PRIMARY KEY, v text); INSERT INTO kv VALUES (1, 'one');",
    )
    .await;
    let read = "SELECT v FROM kv WHERE id = 1";
    let mut listener = fx.wire_proxy("postgres", &[]).await;
    let got = listener.simple_query("LISTEN burst").await.expect("listen");
    assert_no_error(&got, "LISTEN");
    simple_until_served(&fx, &mut listener, read).await;

    const BURSTS: usize = 20;
    const PER_BURST: usize = 40;
    let mut notifier = fx.wire_direct("postgres", &[]).await;
    let notify = tokio::spawn(async move {
        for b in 0..BURSTS {
            // Distinct payloads (Postgres folds identical ones), ~8 kB each, one commit.
            let sql = format!(
                "SELECT count(pg_notify('burst', lpad('{b}-' || g, 7900, 'x'))) \
                 FROM generate_series(1, {PER_BURST}) g"
            );
            let got = notifier.simple_query(&sql).await.expect("notify");
            assert_no_error(&got, &sql);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let mut seen = std::collections::HashSet::new();
    let hits_before = fx.hits();
    let mut reads = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < BURSTS * PER_BURST {
        assert!(
            Instant::now() < deadline,
            "{} of {} notifications after {reads} reads",
            seen.len(),
            BURSTS * PER_BURST
        );
        let msgs = listener.simple_query(read).await.expect("read");
        reads += 1;
        let mut answer = Vec::new();
        for m in &msgs {
            match m.notification() {
                Some(n) => {
                    assert_eq!(n.channel, "burst");
                    assert_eq!(n.payload.len(), 7900, "a notification was cut");
                    let tail = n.payload.trim_start_matches('x').to_string();
                    assert!(seen.insert(tail.clone()), "{tail} delivered twice");
                }
                None => answer.push(m),
            }
        }
        let tags: Vec<u8> = answer.iter().map(|m| m.tag).collect();
        assert_eq!(tags, b"TDCZ", "read {reads}: {}", render(&msgs));
        assert_eq!(first_value(&msgs).as_deref(), Some(&b"one"[..]));
    }
    notify.await.expect("notifier");
    assert!(
        fx.hits() - hits_before > reads as u64 / 2,
        "the reads were not answered from the cache: {} hits of {reads}",
        fx.hits() - hits_before
    );
}

/// Never places a key and coalesces misses: every answer the cache gives was fetched for it.
const COALESCE_ONLY: &str = "promote_after = 1000000\ncoalesce_misses = true\n";

/// The first column of each DataRow, as text.
fn first_column(msgs: &[BackendMessage]) -> Vec<Option<String>> {
    msgs.iter()
        .filter_map(BackendMessage::columns)
        .map(|row| {
            row.into_iter()
                .next()
                .flatten()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        })
        .collect()
}

/// Misses fetched together (`coalesce_misses`): answers byte-identical to Postgres's for
/// every type, text and binary, simple and extended, rows and missing keys; a write made
/// straight to Postgres is seen by the very next read (the fetch's snapshot follows the
/// statement, whatever the change feed has applied); concurrent sessions share fetches and
/// get their own rows; a fetch that fails leaves the answer to Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_fetched_together_answer_as_postgres_does() {
    let fx = fixture_with_policy(
        shared_cluster().await,
        "cache_coalesce",
        TYPES_SCHEMA,
        COALESCE_ONLY,
    )
    .await;
    let ctx = fx.proxy.context();
    let coalesced = || ctx.cache.counters.coalesced.load(Relaxed);
    let mut proxy = fx.wire_proxy("postgres", &[]).await;
    let mut direct = fx.wire_direct("postgres", &[]).await;

    // The first coalesced answer: the feed streams and the table is ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    while coalesced() == 0 {
        assert!(
            Instant::now() < deadline,
            "no miss was ever answered by a coalesced fetch: {}",
            fx.cache_state()
        );
        proxy
            .simple_query("SELECT * FROM t WHERE id = 1")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every type, NULLs, a missing key; simple protocol, all columns and a projection.
    for id in 1..=4 {
        for sql in [
            format!("SELECT * FROM t WHERE id = {id}"),
            format!("SELECT jb, id AS key, tstz FROM t WHERE id = {id}"),
        ] {
            let before = coalesced();
            let p = proxy.simple_query(&sql).await.unwrap();
            let d = direct.simple_query(&sql).await.unwrap();
            assert_same(&sql, &p, &d);
            assert!(
                coalesced() > before,
                "{sql}: not fetched: {}",
                fx.cache_state()
            );
        }
    }
    // Extended protocol, text and binary results.
    let sql = "SELECT * FROM t WHERE id = $1";
    assert_no_error(&prepare(&mut proxy, "q", sql, &[23]).await, sql);
    assert_no_error(&prepare(&mut direct, "q", sql, &[23]).await, sql);
    for id in ["1", "2", "3", "4"] {
        for formats in [vec![0i16], vec![1i16]] {
            let before = coalesced();
            let params = [Some(id.as_bytes())];
            let p = bind_execute(&mut proxy, "q", &params, &[0], &formats, true).await;
            let d = bind_execute(&mut direct, "q", &params, &[0], &formats, true).await;
            let what = format!("{sql} with {id}, result format {formats:?}");
            assert_same(&what, &p, &d);
            assert!(
                coalesced() > before,
                "{what}: not fetched: {}",
                fx.cache_state()
            );
        }
    }
    assert_eq!(
        fx.hits(),
        0,
        "nothing is placed: no answer may count as a hit"
    );

    // A write straight to Postgres, then at once a read through the proxy: always the new
    // value (a fetch never reuses a snapshot taken before the statement arrived).
    let mut fetched_rounds = 0;
    for round in 0..40i64 {
        fx.db
            .execute("UPDATE t SET i8 = $1 WHERE id = 1", &[&round])
            .await
            .unwrap();
        let before = coalesced();
        let got = proxy
            .simple_query("SELECT i8 FROM t WHERE id = 1")
            .await
            .unwrap();
        assert_eq!(
            first_column(&got),
            vec![Some(round.to_string())],
            "round {round}: a stale row"
        );
        fetched_rounds += usize::from(coalesced() > before);
    }
    // Without coalescing none is; a loaded machine may time a few fetches out (then
    // Postgres answers and the table's misses skip fetches for a second).
    assert!(
        fetched_rounds >= 10,
        "only {fetched_rounds} of 40 reads after a write were fetched: {}",
        fx.cache_state()
    );

    // A session that writes through the proxy reads its write back at once: its fence keeps
    // it away from memory, not from a fetch (which starts after the read arrived).
    let mut fetched_rounds = 0;
    for round in 0..20i64 {
        let write = format!("UPDATE t SET i8 = {round} WHERE id = 3");
        assert_no_error(&proxy.simple_query(&write).await.unwrap(), &write);
        let before = coalesced();
        let got = proxy
            .simple_query("SELECT i8 FROM t WHERE id = 3")
            .await
            .unwrap();
        assert_eq!(
            first_column(&got),
            vec![Some(round.to_string())],
            "round {round}: the session's own write not read back"
        );
        fetched_rounds += usize::from(coalesced() > before);
    }
    assert!(
        fetched_rounds >= 5,
        "only {fetched_rounds} of 20 reads after the session's own write were fetched: {}",
        fx.cache_state()
    );
    // Direct gets the same row again (the last part compares id 3 byte for byte).
    fx.db
        .execute("UPDATE t SET i8 = 0 WHERE id = 3", &[])
        .await
        .unwrap();

    // Sessions at once, each reading its own keys: every answer is that key's row, and
    // misses share fetches.
    let fetches = || ctx.cache.counters.coalesced_fetches.load(Relaxed);
    let (answered_before, fetches_before) = (coalesced(), fetches());
    let url = format!(
        "host=127.0.0.1 port={} user=postgres dbname={}",
        fx.proxy.local_addr().port(),
        fx.name
    );
    let mut tasks = Vec::new();
    for task in 0..16i32 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let stmt = client
                .prepare("SELECT id, i2 FROM t WHERE id = $1")
                .await
                .unwrap();
            for i in 0..40 {
                // Keys 1..=3 exist (i2: -32768, NULL, 0), 4 and 5 do not.
                let id = (task + i) % 5 + 1;
                let rows = client.query(&stmt, &[&id]).await.unwrap();
                let got: Vec<(i32, Option<i16>)> =
                    rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                let want = match id {
                    1 => vec![(1, Some(-32768))],
                    2 => vec![(2, None)],
                    3 => vec![(3, Some(0))],
                    _ => vec![],
                };
                assert_eq!(got, want, "task {task}, key {id}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("a reading session failed");
    }
    let (answered, fetched) = (coalesced() - answered_before, fetches() - fetches_before);
    assert!(
        answered >= 64,
        "only {answered} of 640 concurrent reads were fetched: {}",
        fx.cache_state()
    );
    assert!(
        fetched < answered,
        "{answered} misses took {fetched} fetches: none was shared"
    );

    // The fetcher's connection killed under it: answers stay right (from Postgres, then from
    // fetches on a new connection).
    fx.db
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'pgpolyglot' AND backend_type = 'client backend' \
             AND datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
    let before = coalesced();
    let deadline = Instant::now() + Duration::from_secs(30);
    while coalesced() == before {
        assert!(
            Instant::now() < deadline,
            "fetches never resumed after their connection was killed: {}",
            fx.cache_state()
        );
        let p = proxy
            .simple_query("SELECT * FROM t WHERE id = 3")
            .await
            .unwrap();
        let d = direct
            .simple_query("SELECT * FROM t WHERE id = 3")
            .await
            .unwrap();
        assert_same("after the fetcher's connection was killed", &p, &d);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `w`: every column type whose text the feed prints exactly; `nb`: only types whose binary
/// form the proxy derives from that text. The database's TimeZone has a non-zero offset, so
/// timestamptz text carries one.
const FEED_ROWS_SCHEMA: &str = "
-- Sessions and the feed print timestamptz with a +05:30 offset.
ALTER DATABASE cache_feed_rows SET timezone TO 'Asia/Kolkata';
CREATE TABLE w (
  id int4 PRIMARY KEY, s text, v varchar(10), c char(3), i2 int2, i8 int8, f4 float4,
  f8 float8, n numeric(10,2), b bool, d date, ts timestamp, tstz timestamptz(3), iv interval,
  tm time, tmtz timetz, by bytea, u uuid, j json, jb jsonb, ai int4[], at text[], ip inet,
  m money, big numeric);
-- Big values of s are stored out of line, so a change that leaves s alone omits it.
ALTER TABLE w ALTER COLUMN s SET STORAGE EXTERNAL;
INSERT INTO w VALUES
 (1, 'héllo ''quoted''', 'short', 'ab', -32768, 9223372036854775807, 1.1, 0.3333333333333333, 12345.67, true,
  '2024-02-29', '2024-02-29 13:14:15.123456', '2024-07-01 23:59:59.999+02', '1 year 2 mons 3 days 04:05:06.5',
  '23:59:59', '12:00:00+05:30', '\\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{\"a\": [1, 2.50]}', '{\"b\": null, \"a\": 1}', '{1,NULL,3}', '{\"x y\",NULL,\"\"}', '10.0.0.1/8',
  '12.34', 1e30),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, '', '', '', 0, 0, 'NaN', '-Infinity', 0, false, 'infinity', '-infinity', 'infinity',
  '-1 days', '00:00', '00:00+00', '\\x', '00000000-0000-0000-0000-000000000000', 'null', '[]',
  '{}', '{}', '::1', '-0.01', -0.000001);
CREATE TABLE nb (
  id int4 PRIMARY KEY, s text, v varchar(10), c char(3), nm name, i2 int2, i8 int8, o oid,
  f4 float4, f8 float8, b bool, by bytea, u uuid, j json, jb jsonb, d date, ts timestamp,
  tstz timestamptz, n numeric(10,2), big numeric);
INSERT INTO nb VALUES
 (1, 'ü', 'x', 'ab', 'n', 7, -7, 4000000000, 1.1, -0.1, true, '\\xdeadbeef',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '[1, 2]', '{\"k\": [true]}', '2024-02-29',
  '2024-02-29 13:14:15.123456', '2024-07-01 23:59:59.999+02', 12345.67, 1e30),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL),
 (3, '', '', '', '', 0, 0, 0, '-Infinity', 1e-300, false, '\\x',
  '00000000-0000-0000-0000-000000000000', 'null', '[]', '2000-01-01', '2000-01-01',
  '2000-01-01 00:00:00+00', 0, 0);
";

/// Writes that bypass the proxy reach it as the feed's new rows, and those rows are served
/// at once (no migrator read in between) with the bytes Postgres sends: text for every
/// type, binary where the proxy derives it (elsewhere a binary read waits for the
/// migrator); inserts and deletes of placed keys too. A session with other output settings
/// is not answered from them, and a change that leaves a TOASTed value out only removes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_feed_printed_are_served_as_postgres_sends_them() {
    let fx = fixture("cache_feed_rows", FEED_ROWS_SCHEMA).await;
    let ctx = fx.proxy.context();
    let mut p = fx.wire_proxy("postgres", &[]).await;
    let mut d = fx.wire_direct("postgres", &[]).await;
    let one = 1i32.to_be_bytes();
    for c in [&mut p, &mut d] {
        assert_no_error(
            &prepare(c, "nb_bin", "SELECT * FROM nb WHERE id = $1", &[]).await,
            "prepare",
        );
    }
    // Every key hot and in memory, 4 (no row yet) included.
    for table in ["w", "nb"] {
        for id in 1..=4 {
            simple_until_served(
                &fx,
                &mut p,
                &format!("SELECT * FROM {table} WHERE id = {id}"),
            )
            .await;
        }
    }
    until_served(&fx, &mut p, "a binary read of nb 1", async |c| {
        bind_execute(c, "nb_bin", &[Some(&one)], &[1], &[1], true).await
    })
    .await;
    let images_before = ctx.cache.store.totals.feed_images.load(Relaxed);
    let fills_before = ctx.cache.counters.fill_batches.load(Relaxed);
    fx.db
        .batch_execute(
            "BEGIN;
             UPDATE w SET s = s || ' and more', f8 = f8 * 3, tstz = tstz + interval '1 hour' WHERE id = 1;
             UPDATE w SET i8 = 5, at = '{a,b}' WHERE id = 2;
             DELETE FROM w WHERE id = 3;
             INSERT INTO w (id, s, d, n) VALUES (4, 'new', '2025-01-01', 1.5);
             UPDATE nb SET s = s || '!', f4 = 2.5, u = 'ffffffff-0000-0000-0000-00000000000f' WHERE id = 1;
             UPDATE nb SET o = 1, d = '0044-03-15 BC', ts = 'infinity', tstz = '-infinity', n = 5.1, big = 'NaN' WHERE id = 2;
             DELETE FROM nb WHERE id = 3;
             INSERT INTO nb (id, jb, by, d, ts, tstz, n, big) VALUES (4, '{\"z\": 1}', '\\x00', '12345-06-07',
               '1999-12-31 23:59:59.5', '1970-01-01 00:00:00.000001+00', -0.01, -123456789.123456789);
             COMMIT;",
        )
        .await
        .unwrap();
    until("the feed's rows stored", || {
        ctx.cache.store.totals.feed_images.load(Relaxed) >= images_before + 8
    })
    .await;
    for table in ["w", "nb"] {
        for id in 1..=4 {
            let sql = format!("SELECT * FROM {table} WHERE id = {id}");
            let before = fx.hits();
            let served = p.simple_query(&sql).await.unwrap();
            assert!(
                fx.hits() > before,
                "{sql} was not served from the feed's row: {}",
                fx.cache_state()
            );
            assert_same(&sql, &served, &d.simple_query(&sql).await.unwrap());
        }
    }
    for id in 1..=4i32 {
        let key = id.to_be_bytes();
        let before = fx.hits();
        let served = bind_execute(&mut p, "nb_bin", &[Some(&key)], &[1], &[1], true).await;
        assert!(
            fx.hits() > before,
            "binary read of nb {id} not served from the feed's row: {}",
            fx.cache_state()
        );
        let direct = bind_execute(&mut d, "nb_bin", &[Some(&key)], &[1], &[1], true).await;
        assert_same(&format!("nb {id}, binary"), &served, &direct);
    }
    assert_eq!(
        ctx.cache.counters.fill_batches.load(Relaxed),
        fills_before,
        "the migrator read rows the feed had given"
    );
    // `w` has types whose binary form is not derived: a binary read waits for the migrator,
    // then gets Postgres's bytes.
    for c in [&mut p, &mut d] {
        assert_no_error(
            &prepare(c, "w_bin", "SELECT * FROM w WHERE id = $1", &[]).await,
            "prepare",
        );
    }
    let served = until_served(&fx, &mut p, "a binary read of w 1", async |c| {
        bind_execute(c, "w_bin", &[Some(&one)], &[1], &[1], true).await
    })
    .await;
    let direct = bind_execute(&mut d, "w_bin", &[Some(&one)], &[1], &[1], true).await;
    assert_same("w 1, binary", &served, &direct);
    // Other output settings: answered as Postgres answers them, never from the feed's text.
    let set = "SET TimeZone = 'America/New_York'; SET DateStyle = 'SQL, DMY'";
    let mut p2 = fx.wire_proxy("postgres", &[]).await;
    let mut d2 = fx.wire_direct("postgres", &[]).await;
    p2.simple_query(set).await.unwrap();
    d2.simple_query(set).await.unwrap();
    let sql = "SELECT * FROM w WHERE id = 1";
    simple_until_served(&fx, &mut p2, sql).await;
    let images = ctx.cache.store.totals.feed_images.load(Relaxed);
    fx.db
        .batch_execute("UPDATE w SET tstz = tstz + interval '1 day' WHERE id = 1")
        .await
        .unwrap();
    until("the feed's row for key 1 stored", || {
        ctx.cache.store.totals.feed_images.load(Relaxed) > images
    })
    .await;
    let served = simple_until_served(&fx, &mut p2, sql).await;
    assert_same(
        "New York session",
        &served,
        &d2.simple_query(sql).await.unwrap(),
    );
    // A big value stored out of line, then an update that leaves it out of the change:
    // the key's image is removed, not rebuilt without it.
    let oid: u32 = fx
        .db
        .query_one("SELECT 'w'::regclass::oid", &[])
        .await
        .unwrap()
        .get(0);
    let profile = 0;
    fx.db
        .batch_execute(
            "UPDATE w SET s = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 300) g) WHERE id = 2",
        )
        .await
        .unwrap();
    until("the big row stored from the feed", || {
        let stored = ctx.cache.store.get_parts(oid, profile, "2");
        let len = stored
            .as_ref()
            .and_then(|e| e.row.as_ref())
            .and_then(|r| r.text[1].as_ref().map(|v| v.len()));
        len == Some(9600)
    })
    .await;
    let images = ctx.cache.store.totals.feed_images.load(Relaxed);
    fx.db
        .batch_execute("UPDATE w SET i8 = 6 WHERE id = 2")
        .await
        .unwrap();
    until("the key removed", || {
        ctx.cache.store.get_parts(oid, profile, "2").is_none()
    })
    .await;
    assert_eq!(
        ctx.cache.store.totals.feed_images.load(Relaxed),
        images,
        "an image was built without the TOASTed value"
    );
    let sql = "SELECT * FROM w WHERE id = 2";
    let served = simple_until_served(&fx, &mut p, sql).await;
    assert_same(
        "after unchanged TOAST",
        &served,
        &d.simple_query(sql).await.unwrap(),
    );
}

/// Polls `done` every 20 ms until it holds (fails the test after 30 s).
async fn until(what: &str, done: impl Fn() -> bool) {
    within(what, 30, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// One read of `SELECT v FROM flip WHERE id = k` during the type flips below.
struct FlipRead {
    started: Instant,
    finished: Instant,
    key: i64,
    binary: bool,
    type_oid: u32,
    value: Vec<u8>,
    /// The cache's hit counter moved during the read (any session's hit counts).
    any_hit_during_read: bool,
}

/// One `ALTER TABLE flip ALTER COLUMN v TYPE ...`: sent at, acknowledged at, the new type.
struct Flip {
    sent: Instant,
    done: Instant,
    type_oid: u32,
    through_proxy: bool,
}

const FLIP_TYPES: [(&str, u32); 3] = [("int8", 20), ("text", 25), ("int4", 23)];

/// What `value` must be for key `key` in `format` under type `oid`: the row is `100000 + key`
/// whatever its type, so text answers agree across types and binary ones differ in length.
fn flip_value_ok(oid: u32, binary: bool, key: i64, value: &[u8]) -> bool {
    let want = 100_000 + key;
    match (oid, binary) {
        (_, false) | (25, true) => value == want.to_string().as_bytes(),
        (23, true) => value == (want as i32).to_be_bytes(),
        (20, true) => value == want.to_be_bytes(),
        _ => false,
    }
}

/// `SELECT v FROM flip WHERE id = key` in binary (extended protocol, unnamed statement,
/// Describe) or text (simple protocol).
async fn flip_read(c: &mut WireClient, key: i64, binary: bool) -> Vec<BackendMessage> {
    if !binary {
        return c
            .simple_query(&format!("SELECT v FROM flip WHERE id = {key}"))
            .await
            .expect("simple read");
    }
    let (_, mut bind) = bind_msg("", &key.to_string());
    // bind_msg asks for text results (no format codes): ask for binary instead.
    bind.truncate(bind.len() - 2);
    bind.extend(1i16.to_be_bytes());
    bind.extend(1i16.to_be_bytes());
    batch(
        c,
        &[
            parse_msg("", "SELECT v FROM flip WHERE id = $1"),
            (b'B', bind),
            describe_msg(b'P', ""),
            execute_msg(),
            sync_msg(),
        ],
    )
    .await
}

/// Reads keys 1..=20 round-robin through `c` until `stop` (see [`flip_read`]).
async fn flip_reader(
    hits: impl Fn() -> u64,
    mut c: WireClient,
    binary: bool,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<FlipRead> {
    let mut out = Vec::new();
    let mut key = 0i64;
    while !stop.load(Relaxed) {
        key = key % 20 + 1;
        let started = Instant::now();
        let before = hits();
        let msgs = flip_read(&mut c, key, binary).await;
        let any_hit_during_read = hits() > before;
        assert_no_error(&msgs, "read during the type flips");
        let fields = msgs
            .iter()
            .find_map(BackendMessage::fields)
            .expect("a row description");
        let value = msgs
            .iter()
            .find_map(BackendMessage::columns)
            .and_then(|cols| cols.into_iter().next().flatten())
            .expect("one non-null value");
        out.push(FlipRead {
            started,
            finished: Instant::now(),
            key,
            binary,
            type_oid: fields.first().expect("one field").type_oid,
            value,
            any_hit_during_read,
        });
    }
    out
}

/// Column type changes racing cached reads: `ALTER COLUMN v TYPE` flips between int4, int8
/// and text (the table rewritten each time) while four sessions read through the proxy in
/// binary and text. No answer ever pairs a row description with a value of another type (a
/// fill that read its description before a flip and its rows after it must not get in), and
/// an answer to a read that started after a flip was acknowledged has the new type (or that
/// of a later flip sent before the read ended): at once
/// when the flip went through the proxy, 3 s after it when it went straight to Postgres
/// (descriptions are re-read every second; the rest is slack for a loaded machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_type_flips_never_tear_or_outlive_their_commit() {
    let fx = fixture(
        "cache_type_flips",
        "CREATE TABLE flip (id int4 PRIMARY KEY, v int4);
         INSERT INTO flip SELECT g, 100000 + g FROM generate_series(1, 20) g;",
    )
    .await;
    let mut warm = fx.wire_proxy("postgres", &[]).await;
    simple_until_served(&fx, &mut warm, "SELECT v FROM flip WHERE id = 1").await;
    // Binary answers are the ones a tear would show in: make sure the cache gives them too.
    until_served(
        &fx,
        &mut warm,
        "a binary read",
        async |c: &mut WireClient| {
            let msgs = flip_read(c, 2, true).await;
            assert_no_error(&msgs, "binary warm-up read");
            msgs
        },
    )
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for binary in [true, true, false, false] {
        let c = fx.wire_proxy("postgres", &[]).await;
        let ctx = fx.proxy.context().clone();
        let hits = move || ctx.cache.counters.hits.load(Relaxed);
        readers.push(tokio::spawn(flip_reader(hits, c, binary, stop.clone())));
    }
    let hits_before = fx.hits();
    let mut proxied = fx.wire_proxy("postgres", &[]).await;
    let mut direct = fx.wire_direct("postgres", &[]).await;
    // After a flip straight to Postgres: descriptions are re-read every second; the rest is
    // slack for a machine busy with the other tests. Reads in the second after it are checked.
    let margin = Duration::from_millis(1000 + 2000);
    let mut flips = Vec::new();
    for round in 0..15 {
        // Twelve flips through the proxy, then three straight to Postgres.
        let through_proxy = round < 12;
        let (name, type_oid) = FLIP_TYPES[round % 3];
        let ddl = format!("ALTER TABLE flip ALTER COLUMN v TYPE {name} USING v::{name}");
        let c = if through_proxy {
            &mut proxied
        } else {
            &mut direct
        };
        let sent = Instant::now();
        assert_no_error(&c.simple_query(&ddl).await.expect("flip"), &ddl);
        flips.push(Flip {
            sent,
            done: Instant::now(),
            type_oid,
            through_proxy,
        });
        let pause = if through_proxy {
            Duration::from_millis(400)
        } else {
            margin + Duration::from_secs(1)
        };
        tokio::time::sleep(pause).await;
    }
    stop.store(true, Relaxed);
    let mut reads = Vec::new();
    for r in readers {
        reads.extend(r.await.expect("reader"));
    }
    let served = fx.hits() - hits_before;

    let mut checked_after_flip = 0;
    let mut checked_after_direct_flip = 0;
    for r in &reads {
        assert!(
            flip_value_ok(r.type_oid, r.binary, r.key, &r.value),
            "key {} ({}, a hit during the read: {}): type {} with value {:?}",
            r.key,
            if r.binary { "binary" } else { "text" },
            r.any_hit_during_read,
            r.type_oid,
            r.value
        );
        // The last flip acknowledged before this read started. The answer may also show a
        // later flip sent before the read ended (Postgres can run the read after it commits).
        let Some(i) = flips.iter().rposition(|f| f.done <= r.started) else {
            continue;
        };
        let f = &flips[i];
        if !f.through_proxy && r.started < f.done + margin {
            continue;
        }
        let allowed: Vec<u32> = std::iter::once(f.type_oid)
            .chain(
                flips[i + 1..]
                    .iter()
                    .filter(|later| later.sent < r.finished)
                    .map(|later| later.type_oid),
            )
            .collect();
        checked_after_flip += 1;
        if !f.through_proxy {
            checked_after_direct_flip += 1;
        }
        assert!(
            allowed.contains(&r.type_oid),
            "a read started {:?} after flip {i} ({}) was acknowledged answered type {} (allowed: {allowed:?}; key {}, a hit during the read: {})",
            r.started - f.done,
            if f.through_proxy { "through the proxy" } else { "straight to Postgres" },
            r.type_oid,
            r.key,
            r.any_hit_during_read
        );
    }
    assert!(
        served >= 100,
        "too few reads served from the cache to race the flips ({served} of {}): {}",
        reads.len(),
        fx.cache_state()
    );
    assert!(
        checked_after_flip >= 100 && checked_after_direct_flip >= 10,
        "only {checked_after_flip} reads fell after a flip ({checked_after_direct_flip} after direct ones)"
    );
    // How long the old type outlived each flip made straight to Postgres (informational).
    let lags: Vec<Duration> = flips
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.through_proxy)
        .filter_map(|(i, f)| {
            let next = flips.get(i + 1).map(|n| n.sent);
            reads
                .iter()
                .filter(|r| r.started >= f.done && next.is_none_or(|n| r.finished < n))
                .filter(|r| r.type_oid != f.type_oid)
                .map(|r| r.started - f.done)
                .max()
        })
        .collect();
    eprintln!(
        "type flips: {} reads ({served} from the cache), {checked_after_flip} checked against the flip before them; old type read up to {lags:?} after flips straight to Postgres",
        reads.len()
    );
}
