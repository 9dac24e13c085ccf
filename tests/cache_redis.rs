//! The Redis tier (L2) with two proxy instances sharing one real `redis-server`: images one
//! proxy filled are served by the other byte for byte; concurrent writers through either proxy
//! and straight to Postgres never make a read staler than the contract; a Redis restart that
//! restores old images from disk, a FLUSHALL, and Redis going away never serve a stale row.
//!
//! Each test starts its own redis-server on a free loopback port (a throwaway directory, no
//! persistence unless the test asks), its own database, and two proxies with their own
//! replication slots.

mod common;

use common::wire::{BackendMessage, Startup, WireClient};
use common::*;
use pgpolyglot::server::ServerHandle;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

const MAX_STALENESS_MS: u64 = 1000;

/// A redis-server of the test's own.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(dir: PathBuf, port: u16) -> Redis {
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(["--dbfilename", "dump.rdb"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let r = Redis {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops and starts again on the same port and directory (loading `dump.rdb` if any).
    fn restart(&mut self) {
        self.stop();
        let mut again = Redis::start(self.dir.clone(), self.port);
        self.child = again.child.take();
        // `again` owns nothing now; keep its Drop from removing the directory.
        again.dir = PathBuf::new();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Fixture {
    pg: std::sync::Arc<EmbeddedPostgres>,
    a: ServerHandle,
    b: ServerHandle,
    db: tokio_postgres::Client,
    name: String,
    redis: Redis,
    policies: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.policies);
    }
}

/// Two proxies on one policy, except that proxy B may keep nothing in its own memory
/// (`max_bytes = 1`): every row B serves from the cache comes from Redis.
async fn fixture(name: &str, schema_sql: &str) -> Fixture {
    let pg = shared_cluster().await;
    let db = database_with(&pg, name, schema_sql).await;
    let tmp = std::env::temp_dir().join(format!("pgpolyglot-l2-{name}-{}", std::process::id()));
    let redis = Redis::start(tmp.join("redis"), free_port());
    let policy_dir = |suffix: &str, max_bytes: &str| {
        let dir = tmp.join(format!("policies-{suffix}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("cache.toml"),
            format!(
                "tables = [\"public.*\"]\n\n[cache]\nstore = \"redis\"\npromote_after = 1\n\
                 window = \"10s\"\nmax_bytes = \"{max_bytes}\"\n\
                 max_staleness = \"{MAX_STALENESS_MS}ms\"\n"
            ),
        )
        .unwrap();
        dir
    };
    let proxy = |suffix: &str, max_bytes: &str| {
        let mut config = proxy_config(&pg.url("postgres", name));
        config.policies = policy_dir(suffix, max_bytes);
        config.change_feed.slot = format!("{name}_{suffix}");
        config.change_feed.publication = format!("{name}_pub_{suffix}");
        config.change_feed.status_interval = Duration::from_millis(100);
        config.change_feed.timeout = Duration::from_secs(10);
        config.stats.interval = Duration::from_millis(100);
        config.stores.redis = Some(pgpolyglot::config::RedisSettings {
            url: redis.url(),
            namespace: name.to_string(),
            timeout: Duration::from_millis(500),
            ttl: Duration::from_secs(60),
        });
        config
    };
    let a = proxy_with(proxy("a", "64MiB")).await;
    let b = proxy_with(proxy("b", "1")).await;
    Fixture {
        pg,
        a,
        b,
        db,
        name: name.to_string(),
        redis,
        policies: tmp.clone(),
    }
}

fn hits(p: &ServerHandle) -> u64 {
    p.context().cache.counters.hits.load(Relaxed)
}

fn l2_hits(p: &ServerHandle) -> u64 {
    p.context()
        .cache
        .l2
        .as_ref()
        .map_or(0, |l| l.counters.hits.load(Relaxed))
}

async fn wire(addr: impl tokio::net::ToSocketAddrs, db: &str) -> WireClient {
    WireClient::connect_with(
        addr,
        &Startup {
            user: "postgres",
            database: db,
            ..Startup::default()
        },
    )
    .await
    .expect("connect")
}

fn value(msgs: &[BackendMessage]) -> Option<String> {
    msgs.iter()
        .find_map(|m| m.columns())
        .and_then(|cols| cols[0].clone())
        .map(|b| String::from_utf8(b).unwrap())
}

fn frames(msgs: &[BackendMessage]) -> Vec<Vec<u8>> {
    msgs.iter().map(BackendMessage::to_frame).collect()
}

/// Runs `sql` through `proxy` until the cache answers; returns the answer.
async fn until_served(proxy: &ServerHandle, c: &mut WireClient, sql: &str) -> Vec<BackendMessage> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = hits(proxy);
        let m = c.simple_query(sql).await.unwrap();
        if hits(proxy) > before {
            return m;
        }
        assert!(Instant::now() < deadline, "never served: {sql}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An image proxy A filled is served by proxy B from Redis, identical to Postgres's answer;
/// a write through A is never served stale by B beyond `max_staleness`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_shared_between_proxies() {
    let fx = fixture(
        "l2_shared",
        "CREATE TABLE kv (id int4 PRIMARY KEY, v text, t timestamptz DEFAULT '2024-01-01 00:00+00');
         INSERT INTO kv SELECT g, 'v' || g FROM generate_series(1, 50) g;",
    )
    .await;
    let mut a = wire(fx.a.local_addr(), &fx.name).await;
    let mut b = wire(fx.b.local_addr(), &fx.name).await;
    let mut d = wire(("127.0.0.1", fx.pg.port()), &fx.name).await;
    let sql = "SELECT * FROM kv WHERE id = 7";
    until_served(&fx.a, &mut a, sql).await;
    // B never read key 7: its first read can only come from Redis (or Postgres).
    let deadline = Instant::now() + Duration::from_secs(30);
    let from_b = loop {
        let before = l2_hits(&fx.b);
        let m = b.simple_query(sql).await.unwrap();
        if l2_hits(&fx.b) > before {
            break m;
        }
        assert!(Instant::now() < deadline, "B never read key 7 from Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(frames(&from_b), frames(&d.simple_query(sql).await.unwrap()));

    // A write through A: B's answers change within max_staleness.
    a.simple_query("UPDATE kv SET v = 'new' WHERE id = 7")
        .await
        .unwrap();
    let written = Instant::now();
    loop {
        let started = written.elapsed();
        let v = value(
            &b.simple_query("SELECT v FROM kv WHERE id = 7")
                .await
                .unwrap(),
        );
        if v.as_deref() == Some("new") {
            break;
        }
        assert!(
            started <= Duration::from_millis(MAX_STALENESS_MS),
            "B still read {v:?} {started:?} after the write through A"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And A's session reads its own write at once.
    assert_eq!(
        value(
            &a.simple_query("SELECT v FROM kv WHERE id = 7")
                .await
                .unwrap()
        )
        .as_deref(),
        Some("new")
    );
}

/// Writers through A, through B and straight to Postgres; readers through both: no reader
/// sees a value older than `max_staleness`, and each writer reads its own writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_never_serve_stale() {
    let fx = fixture(
        "l2_fresh",
        "CREATE TABLE kv (id int8 PRIMARY KEY, v int8 NOT NULL);
         INSERT INTO kv SELECT g, 0 FROM generate_series(1, 10) g;",
    )
    .await;
    let url = |h: &ServerHandle| {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={}",
            h.local_addr().port(),
            fx.name
        )
    };
    let connect_to = |u: String| async move {
        let (c, conn) = tokio_postgres::connect(&u, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    };
    // Warm through both.
    for h in [&fx.a, &fx.b] {
        let c = connect_to(url(h)).await;
        let s = c.prepare("SELECT v FROM kv WHERE id = $1").await.unwrap();
        within("warm", 30, async {
            loop {
                let before = hits(h);
                for k in 1..=10i64 {
                    c.query_one(&s, &[&k]).await.unwrap();
                }
                if hits(h) >= before + 10 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }
    let history = std::sync::Arc::new(std::sync::Mutex::new(vec![
        vec![(Instant::now(), 0i64)];
        11
    ]));
    let deadline = Instant::now() + Duration::from_secs(4);
    let violations = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for (i, target) in [
        url(&fx.a),
        url(&fx.b),
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={}",
            fx.pg.port(),
            fx.name
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let c = connect_to(target).await;
        let history = history.clone();
        let violations = violations.clone();
        tasks.push(tokio::spawn(async move {
            let upd = c
                .prepare("UPDATE kv SET v = v + 1 WHERE id = $1 RETURNING v")
                .await
                .unwrap();
            let sel = c.prepare("SELECT v FROM kv WHERE id = $1").await.unwrap();
            let mut n = 0i64;
            while Instant::now() < deadline {
                let k = 1 + (n * 3 + i as i64) % 4;
                n += 1;
                let v: i64 = c.query_one(&upd, &[&k]).await.unwrap().get(0);
                history.lock().unwrap()[k as usize].push((Instant::now(), v));
                let back: i64 = c.query_one(&sel, &[&k]).await.unwrap().get(0);
                if back < v {
                    violations
                        .lock()
                        .unwrap()
                        .push(format!("writer {i}: wrote {v} to {k}, read back {back}"));
                }
            }
        }));
    }
    for (i, target) in [url(&fx.a), url(&fx.b)].into_iter().enumerate() {
        let c = connect_to(target).await;
        let history = history.clone();
        let violations = violations.clone();
        tasks.push(tokio::spawn(async move {
            let sel = c.prepare("SELECT v FROM kv WHERE id = $1").await.unwrap();
            let mut n = 0i64;
            while Instant::now() < deadline {
                let k = 1 + (n + i as i64) % 8;
                n += 1;
                let started = Instant::now();
                let v: i64 = c.query_one(&sel, &[&k]).await.unwrap().get(0);
                let bound = started.checked_sub(Duration::from_millis(MAX_STALENESS_MS));
                let must = history.lock().unwrap()[k as usize]
                    .iter()
                    .filter(|(t, _)| bound.is_some_and(|b| *t <= b))
                    .map(|(_, v)| *v)
                    .max()
                    .unwrap_or(0);
                if v < must {
                    violations
                        .lock()
                        .unwrap()
                        .push(format!("reader {i}: key {k} read {v}, must see {must}"));
                }
            }
        }));
    }
    let (ha, hb) = (hits(&fx.a), hits(&fx.b));
    for t in tasks {
        within("workload", 30, t).await.unwrap();
    }
    let v = violations.lock().unwrap().clone();
    eprintln!(
        "two proxies: A served {}, B served {}, Redis hits A {} B {}; {} violations",
        hits(&fx.a) - ha,
        hits(&fx.b) - hb,
        l2_hits(&fx.a),
        l2_hits(&fx.b),
        v.len()
    );
    assert!(v.is_empty(), "{v:#?}");
    assert!(
        hits(&fx.a) > ha && hits(&fx.b) > hb,
        "a proxy served nothing"
    );
}

/// Redis restarted from an old dump (old images, old epoch), then emptied by FLUSHALL, then
/// gone: no read through either proxy ever returns the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarts_flushes_and_outages_never_serve_stale() {
    let mut fx = fixture(
        "l2_restart",
        "CREATE TABLE kv (id int4 PRIMARY KEY, v text);
         INSERT INTO kv SELECT g, 'old' FROM generate_series(1, 20) g;",
    )
    .await;
    let mut a = wire(fx.a.local_addr(), &fx.name).await;
    // Images of every key in Redis, then a dump of them on disk.
    for k in 1..=20 {
        until_served(&fx.a, &mut a, &format!("SELECT v FROM kv WHERE id = {k}")).await;
    }
    let puts =
        fx.a.context()
            .cache
            .l2
            .as_ref()
            .unwrap()
            .counters
            .puts
            .load(Relaxed);
    assert!(puts >= 20, "A stored {puts} images in Redis");
    assert!(fx.redis.cli(&["SAVE"]).contains("OK"));
    // Every row changes (straight to Postgres). Then wait until the proxies' own change logs
    // have forgotten it (LOG_RETENTION), so only the epoch can keep the old images out.
    fx.db
        .batch_execute("UPDATE kv SET v = 'new'")
        .await
        .unwrap();
    tokio::time::sleep(pgpolyglot::cache::store::LOG_RETENTION + Duration::from_secs(1)).await;
    // Redis comes back with the old images.
    fx.redis.restart();
    // Reads through A (its own memory, refilled) and B (Redis only) until B has looked into
    // Redis at least 40 more times: never the old value.
    let lookups = |h: &ServerHandle| {
        let c = &h.context().cache.l2.as_ref().unwrap().counters;
        c.hits.load(Relaxed) + c.misses.load(Relaxed)
    };
    let check = |label: &'static str| {
        let a_addr = fx.a.local_addr();
        let b_addr = fx.b.local_addr();
        let name = fx.name.clone();
        let b = &fx.b;
        async move {
            let mut a = wire(a_addr, &name).await;
            let mut bc = wire(b_addr, &name).await;
            let start = lookups(b);
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut round = 0;
            while lookups(b) < start + 40 {
                assert!(
                    Instant::now() < deadline,
                    "{label}: B never looked into Redis"
                );
                for k in 1..=20 {
                    let sql = format!("SELECT v FROM kv WHERE id = {k}");
                    for c in [&mut a, &mut bc] {
                        let v = value(&c.simple_query(&sql).await.unwrap());
                        assert_eq!(v.as_deref(), Some("new"), "{label}, round {round}, key {k}");
                    }
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    check("after a restart from an old dump").await;
    let l2 = fx.b.context().cache.l2.as_ref().unwrap();

    fx.redis.cli(&["FLUSHALL"]);
    check("after FLUSHALL").await;

    // Redis gone: Postgres (or L1) answers, errors are counted, nothing fails.
    fx.redis.stop();
    fx.db
        .batch_execute("UPDATE kv SET v = 'newer' WHERE id <= 5")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(MAX_STALENESS_MS + 200)).await;
    let mut b = wire(fx.b.local_addr(), &fx.name).await;
    for k in 1..=20 {
        let v = value(
            &b.simple_query(&format!("SELECT v FROM kv WHERE id = {k}"))
                .await
                .unwrap(),
        );
        let want = if k <= 5 { "newer" } else { "new" };
        assert_eq!(v.as_deref(), Some(want), "Redis down, key {k}");
    }
    assert!(
        l2.counters.errors.load(Relaxed) > 0 || !l2.usable(),
        "Redis went away unnoticed"
    );
}
