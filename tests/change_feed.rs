//! The change feed against real PostgreSQL clusters: values and commit order, whole
//! transactions, rollbacks, resume after a restart, a dropped slot, heartbeats on idle
//! tables, lag, publication changes, and password-authenticated replication users.
//!
//! Every test makes its own database, tables, slot and publication on the shared cluster (the
//! password test starts its own, with replication lines in pg_hba.conf), and every wait is
//! bounded by `within`.

mod common;

use common::*;
use pgpolyglot::cdc::{
    ChangeFeed, ChangeKind, FeedEvent, FeedHandle, FeedState, Lsn, ResetReason, TableName,
    Transaction, Value,
};
use pgpolyglot::server::ServerHandle;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A database of its own on the shared cluster and a proxy context pointing at it.
struct Fixture {
    pg: std::sync::Arc<EmbeddedPostgres>,
    proxy: ServerHandle,
    /// Superuser connection to the test's database.
    db: tokio_postgres::Client,
    name: String,
}

async fn fixture(name: &str, schema_sql: &str) -> Fixture {
    let pg = shared_cluster().await;
    let db = database_with(&pg, name, schema_sql).await;
    let mut config = proxy_config(&pg.url("postgres", name));
    config.change_feed.slot = format!("{name}_slot");
    config.change_feed.publication = format!("{name}_pub");
    config.change_feed.status_interval = Duration::from_millis(200);
    config.change_feed.timeout = Duration::from_secs(10);
    let proxy = proxy_with(config).await;
    Fixture {
        pg,
        proxy,
        db,
        name: name.to_string(),
    }
}

struct Feed {
    handle: FeedHandle,
    rx: mpsc::Receiver<FeedEvent>,
    stop: watch::Sender<bool>,
}

impl Feed {
    async fn stop(self) {
        let _ = self.stop.send(true);
        within("feed stops", 20, self.handle.wait_for(FeedState::Stopped)).await;
    }
}

fn start_feed(proxy: &ServerHandle, tables: &[&str]) -> Feed {
    let (stop, shutdown) = watch::channel(false);
    let tables = tables
        .iter()
        .map(|t| TableName::new("public", *t))
        .collect();
    let (handle, rx) = ChangeFeed::start(proxy.context().clone(), tables, shutdown);
    Feed { handle, rx, stop }
}

async fn next_event(feed: &mut Feed) -> FeedEvent {
    let status = feed.handle.status();
    within(
        &format!("waiting for a feed event (status: {status:?})"),
        30,
        feed.rx.recv(),
    )
    .await
    .expect("the feed's channel closed")
}

async fn next_commit(feed: &mut Feed) -> Transaction {
    match next_event(feed).await {
        FeedEvent::Commit(t) => t,
        other => panic!("expected a commit, got {other:?}"),
    }
}

/// A new feed's first event: the slot was created. Also waits until it streams.
async fn expect_slot_created(feed: &mut Feed) {
    match next_event(feed).await {
        FeedEvent::Reset {
            reason: ResetReason::SlotCreated { .. },
        } => {}
        other => panic!("expected Reset(SlotCreated), got {other:?}"),
    }
    within(
        "feed streaming",
        30,
        feed.handle.wait_for(FeedState::Streaming),
    )
    .await;
}

async fn exec(c: &tokio_postgres::Client, sql: &str) {
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", pg_error(&e)));
}

fn key_of(t: &Transaction, i: usize) -> Option<String> {
    t.changes[i].key.first().and_then(|(_, v)| v.clone())
}

fn new_value(t: &Transaction, i: usize, column: &str) -> Value {
    t.changes[i]
        .new_row
        .as_ref()
        .and_then(|row| row.iter().find(|(c, _)| c == column))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no column {column} in change {i} of {t:?}"))
}

async fn confirmed_flush(c: &tokio_postgres::Client, slot: &str) -> Lsn {
    let row = c
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    let text: Option<String> = row.get(0);
    text.and_then(|t| t.parse().ok()).unwrap_or(Lsn::ZERO)
}

async fn wait_caught_up(handle: &FeedHandle) {
    within("lag returns to zero", 20, async {
        loop {
            let s = handle.status();
            if s.lag_bytes == 0 && s.lag_ms == 0 && s.server_wal_end > Lsn::ZERO {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn changes_arrive_whole_and_in_commit_order_with_their_values() {
    let fx = fixture(
        "cf_order",
        "CREATE TABLE t (id int PRIMARY KEY, name text, n numeric, flag bool, ts timestamp,
                         data jsonb, arr int[], note text);",
    )
    .await;
    let mut feed = start_feed(&fx.proxy, &["t"]);
    expect_slot_created(&mut feed).await;

    // One exec per transaction: statements of one simple Query share a transaction.
    for sql in [
        "INSERT INTO t VALUES (1, 'it''s \"quoted\" ü 😀', 1.50, true, '2024-01-02 03:04:05',
                               '{\"a\": [1, null]}', '{1,2,3}', NULL)",
        "BEGIN;
         UPDATE t SET name = 'second' WHERE id = 1;
         INSERT INTO t (id) VALUES (2);
         DELETE FROM t WHERE id = 1;
         COMMIT;",
        "BEGIN; INSERT INTO t (id) VALUES (99); ROLLBACK;",
        "UPDATE t SET id = 3 WHERE id = 2",
    ] {
        exec(&fx.db, sql).await;
    }
    // Commit order, not begin order: A begins first but commits after B.
    let other = connect(&fx.pg, "postgres", &fx.name).await;
    exec(&fx.db, "BEGIN; INSERT INTO t (id) VALUES (10);").await;
    exec(&other, "INSERT INTO t (id) VALUES (11);").await;
    exec(&fx.db, "COMMIT").await;
    exec(&fx.db, "TRUNCATE t").await;

    let table = TableName::new("public", "t");
    let t1 = next_commit(&mut feed).await;
    assert_eq!(t1.changes.len(), 1);
    assert_eq!(t1.changes[0].table, table);
    assert_eq!(t1.changes[0].kind, ChangeKind::Insert);
    assert_eq!(
        t1.changes[0].key,
        vec![("id".to_string(), Some("1".into()))]
    );
    let expect = [
        ("id", Value::Text("1".into())),
        ("name", Value::Text("it's \"quoted\" ü 😀".into())),
        ("n", Value::Text("1.50".into())),
        ("flag", Value::Text("t".into())),
        ("ts", Value::Text("2024-01-02 03:04:05".into())),
        ("data", Value::Text("{\"a\": [1, null]}".into())),
        ("arr", Value::Text("{1,2,3}".into())),
        ("note", Value::Null),
    ];
    for (column, value) in expect {
        assert_eq!(new_value(&t1, 0, column), value, "column {column}");
    }
    assert!(t1.end_lsn > t1.commit_lsn);

    let t2 = next_commit(&mut feed).await;
    let kinds: Vec<_> = t2.changes.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        vec![ChangeKind::Update, ChangeKind::Insert, ChangeKind::Delete]
    );
    assert_eq!(key_of(&t2, 0).as_deref(), Some("1"));
    assert_eq!(new_value(&t2, 0, "name"), Value::Text("second".into()));
    assert_eq!(new_value(&t2, 1, "name"), Value::Null);
    assert_eq!(key_of(&t2, 2).as_deref(), Some("1"));
    assert!(t2.changes[2].new_row.is_none());
    assert!(t2.commit_lsn > t1.commit_lsn);

    // The rolled-back insert of 99 never arrives; the key change carries the old key.
    let t3 = next_commit(&mut feed).await;
    assert_eq!(t3.changes.len(), 1);
    assert_eq!(t3.changes[0].kind, ChangeKind::Update);
    assert_eq!(key_of(&t3, 0).as_deref(), Some("2"));
    assert_eq!(new_value(&t3, 0, "id"), Value::Text("3".into()));

    let t4 = next_commit(&mut feed).await;
    assert_eq!(new_value(&t4, 0, "id"), Value::Text("11".into()));
    let t5 = next_commit(&mut feed).await;
    assert_eq!(new_value(&t5, 0, "id"), Value::Text("10".into()));
    let t6 = next_commit(&mut feed).await;
    assert_eq!(t6.changes.len(), 1);
    assert_eq!(t6.changes[0].kind, ChangeKind::Truncate);
    assert_eq!(t6.changes[0].table, table);
    let all = [&t1, &t2, &t3, &t4, &t5, &t6];
    assert!(all.windows(2).all(|w| w[0].end_lsn <= w[1].commit_lsn));

    // Unacknowledged, the feed lags; acknowledged, it catches up and confirms.
    let s = feed.handle.status();
    assert_eq!(s.state, FeedState::Streaming);
    assert_eq!(s.delivered_lsn, t6.end_lsn);
    assert!(s.applied_lsn < t1.end_lsn, "{s:?}");
    assert!(s.lag_bytes > 0, "{s:?}");
    feed.handle.ack(t6.end_lsn);
    wait_caught_up(&feed.handle).await;
    let s = feed.handle.status();
    assert!(s.applied_lsn >= t6.end_lsn, "{s:?}");
    assert_eq!((s.transactions, s.changes, s.resets), (6, 8, 1));
    let slot = format!("{}_slot", fx.name);
    within("slot confirmed past the last commit", 20, async {
        while confirmed_flush(&fx.db, &slot).await < t6.end_lsn {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(matches!(
        feed.rx.try_recv(),
        Err(mpsc::error::TryRecvError::Empty)
    ));
    feed.stop().await;
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn a_restarted_feed_resumes_after_the_last_acknowledged_commit() {
    let fx = fixture("cf_resume", "CREATE TABLE r (id int PRIMARY KEY);").await;
    let slot = format!("{}_slot", fx.name);
    let mut feed = start_feed(&fx.proxy, &["r"]);
    expect_slot_created(&mut feed).await;
    for id in 1..=3 {
        exec(&fx.db, &format!("INSERT INTO r VALUES ({id})")).await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_commit(&mut feed).await);
    }
    // Applied 1 and 2 only.
    let acked = got[1].end_lsn;
    feed.handle.ack(acked);
    let stopping = std::time::Instant::now();
    feed.stop().await;
    // The server answered the end of the stream (no waiting out the 2 s bound).
    assert!(
        stopping.elapsed() < Duration::from_millis(1500),
        "{:?}",
        stopping.elapsed()
    );
    let confirmed = confirmed_flush(&fx.db, &slot).await;
    assert_eq!(confirmed, acked, "the slot is confirmed exactly to the ack");

    exec(
        &fx.db,
        "INSERT INTO r VALUES (4); INSERT INTO r VALUES (5);",
    )
    .await;
    let mut feed = start_feed(&fx.proxy, &["r"]);
    let mut ids = Vec::new();
    while ids.len() < 3 {
        let t = match next_event(&mut feed).await {
            FeedEvent::Commit(t) => t,
            FeedEvent::Reset { reason } => panic!("unexpected reset on resume: {reason}"),
        };
        assert!(t.commit_lsn >= acked, "re-delivered before the ack: {t:?}");
        for (i, c) in t.changes.iter().enumerate() {
            ids.push(key_of(&t, i).unwrap_or_default());
            assert_eq!(c.kind, ChangeKind::Insert);
        }
        feed.handle.ack(t.end_lsn);
    }
    assert_eq!(ids, ["3", "4", "5"]);
    assert_eq!(feed.handle.status().resets, 0);
    feed.stop().await;
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn a_broken_connection_resets_and_resumes_without_duplicates() {
    let fx = fixture("cf_broken", "CREATE TABLE b (id int PRIMARY KEY);").await;
    let slot = format!("{}_slot", fx.name);
    let mut feed = start_feed(&fx.proxy, &["b"]);
    expect_slot_created(&mut feed).await;
    exec(&fx.db, "INSERT INTO b VALUES (1)").await;
    // Delivered, not acknowledged: the server will send it again after the reconnect.
    let first = next_commit(&mut feed).await;
    let killed: bool = fx
        .db
        .query_one(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
              WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)))
        .get(0);
    assert!(killed);
    match next_event(&mut feed).await {
        FeedEvent::Reset {
            reason: ResetReason::ConnectionLost { error },
        } => assert!(!error.is_empty()),
        other => panic!("expected Reset(ConnectionLost), got {other:?}"),
    }
    // Nothing is lost meanwhile: the slot keeps what the feed has not confirmed.
    exec(&fx.db, "INSERT INTO b VALUES (2)").await;
    within(
        "streaming again",
        30,
        feed.handle.wait_for(FeedState::Streaming),
    )
    .await;
    let next = next_commit(&mut feed).await;
    assert_eq!(
        key_of(&next, 0).as_deref(),
        Some("2"),
        "no duplicate of {first:?}"
    );
    assert!(next.commit_lsn >= first.end_lsn);
    feed.handle.ack(next.end_lsn);
    wait_caught_up(&feed.handle).await;
    let s = feed.handle.status();
    assert_eq!((s.resets, s.transactions), (2, 2));
    feed.stop().await;
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn a_dropped_slot_resets_the_feed_which_recreates_it_and_continues() {
    let fx = fixture("cf_drop", "CREATE TABLE d (id int PRIMARY KEY);").await;
    let slot = format!("{}_slot", fx.name);
    let mut feed = start_feed(&fx.proxy, &["d"]);
    expect_slot_created(&mut feed).await;
    exec(&fx.db, "INSERT INTO d VALUES (1)").await;
    let t = next_commit(&mut feed).await;
    feed.handle.ack(t.end_lsn);

    // The feed reconnects quickly, so terminate and drop until the drop wins the race.
    within("dropping the slot", 30, async {
        loop {
            let _ = fx
                .db
                .execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
                      WHERE slot_name = $1 AND active_pid IS NOT NULL",
                    &[&slot],
                )
                .await;
            if fx
                .db
                .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let mut reasons = Vec::new();
    loop {
        match next_event(&mut feed).await {
            FeedEvent::Reset { reason } => {
                let lost = matches!(reason, ResetReason::SlotLost { .. });
                reasons.push(reason);
                if lost {
                    break;
                }
            }
            FeedEvent::Commit(t) => panic!("no commit expected before the reset: {t:?}"),
        }
    }
    assert!(
        matches!(reasons[0], ResetReason::ConnectionLost { .. }),
        "{reasons:?}"
    );
    within("slot recreated", 20, async {
        while confirmed_flush(&fx.db, &slot).await == Lsn::ZERO {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    exec(&fx.db, "INSERT INTO d VALUES (2)").await;
    let t = next_commit(&mut feed).await;
    assert_eq!(key_of(&t, 0).as_deref(), Some("2"));
    let s = feed.handle.status();
    assert_eq!(s.state, FeedState::Streaming);
    assert_eq!(s.resets as usize, 1 + reasons.len());
    assert!(s.last_error.is_some());
    feed.stop().await;
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn a_dropped_publication_is_recreated_with_a_fresh_slot() {
    let fx = fixture("cf_nopub", "CREATE TABLE x (id int PRIMARY KEY);").await;
    let mut feed = start_feed(&fx.proxy, &["x"]);
    expect_slot_created(&mut feed).await;
    exec(&fx.db, &format!("DROP PUBLICATION {}_pub", fx.name)).await;
    // The server cannot decode this change without the publication: the stream breaks.
    exec(&fx.db, "INSERT INTO x VALUES (1)").await;
    let mut reasons = Vec::new();
    while !matches!(reasons.last(), Some(ResetReason::SlotLost { .. })) {
        match next_event(&mut feed).await {
            FeedEvent::Reset { reason } => reasons.push(reason),
            FeedEvent::Commit(t) => panic!("no commit expected before the reset: {t:?}"),
        }
    }
    exec(&fx.db, "INSERT INTO x VALUES (2)").await;
    let t = next_commit(&mut feed).await;
    assert_eq!(key_of(&t, 0).as_deref(), Some("2"));
    let published: i64 = fx
        .db
        .query_one(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1",
            &[&format!("{}_pub", fx.name)],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)))
        .get(0);
    assert_eq!(published, 1);
    feed.stop().await;
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn idle_watched_tables_do_not_pin_the_slot() {
    let fx = fixture(
        "cf_idle",
        "CREATE TABLE watched (id int PRIMARY KEY);
         CREATE TABLE elsewhere (id int PRIMARY KEY, pad text);",
    )
    .await;
    let slot = format!("{}_slot", fx.name);
    let mut feed = start_feed(&fx.proxy, &["watched"]);
    expect_slot_created(&mut feed).await;
    let before = confirmed_flush(&fx.db, &slot).await;
    for i in 0..20 {
        exec(
            &fx.db,
            &format!(
                "INSERT INTO elsewhere SELECT g, repeat('x', 100) FROM generate_series({}, {}) g",
                i * 100,
                i * 100 + 99
            ),
        )
        .await;
    }
    let row = fx
        .db
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    let target: Lsn = row.get::<_, String>(0).parse().expect("an LSN");
    assert!(target > before);
    within("confirmed_flush_lsn advances on idle tables", 30, async {
        while confirmed_flush(&fx.db, &slot).await < target {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    wait_caught_up(&feed.handle).await;
    let s = feed.handle.status();
    assert!(s.applied_lsn >= target, "{s:?}");
    assert!(s.silence_ms.is_some_and(|ms| ms < 5_000), "{s:?}");
    assert!(matches!(
        feed.rx.try_recv(),
        Err(mpsc::error::TryRecvError::Empty)
    ));
    feed.stop().await;
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn the_table_set_can_change_and_unsafe_tables_are_never_published() {
    let fx = fixture(
        "cf_tables",
        "CREATE TABLE a (id int PRIMARY KEY);
         CREATE TABLE b (id int PRIMARY KEY, v text);
         CREATE TABLE nokey (v text);
         INSERT INTO nokey VALUES ('x');",
    )
    .await;
    let mut feed = start_feed(&fx.proxy, &["a"]);
    expect_slot_created(&mut feed).await;
    exec(
        &fx.db,
        "INSERT INTO a VALUES (1); INSERT INTO b VALUES (1, 'no');",
    )
    .await;
    let t = next_commit(&mut feed).await;
    assert_eq!(t.changes[0].table.name, "a");

    let changed = within(
        "set_tables",
        30,
        feed.handle.set_tables(vec![
            TableName::new("public", "a"),
            TableName::new("public", "b"),
            TableName::new("public", "nokey"),
            TableName::new("public", "missing"),
        ]),
    )
    .await
    .expect("set_tables");
    let names: Vec<_> = changed.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let skipped: Vec<_> = changed
        .skipped
        .iter()
        .map(|(t, _)| t.name.as_str())
        .collect();
    assert_eq!(skipped, ["missing", "nokey"]);
    assert!(changed.from_lsn > t.end_lsn);
    // Updates of the table without a key still work: it was not published.
    exec(&fx.db, "UPDATE nokey SET v = 'y'; DELETE FROM nokey;").await;
    exec(&fx.db, "INSERT INTO b VALUES (2, 'yes');").await;
    let t = next_commit(&mut feed).await;
    assert_eq!(t.changes[0].table.name, "b");
    assert_eq!(key_of(&t, 0).as_deref(), Some("2"));
    assert!(t.commit_lsn >= changed.from_lsn);

    feed.handle
        .set_tables(Vec::new())
        .await
        .expect("set_tables");
    assert!(feed.handle.status().tables.is_empty());
    exec(
        &fx.db,
        "INSERT INTO a VALUES (3); INSERT INTO b VALUES (3, 'no');",
    )
    .await;
    let row = fx
        .db
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    let target: Lsn = row.get::<_, String>(0).parse().expect("an LSN");
    feed.handle.ack(t.end_lsn);
    within("idle position passes the unpublished inserts", 30, async {
        while feed.handle.status().applied_lsn < target {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(matches!(
        feed.rx.try_recv(),
        Err(mpsc::error::TryRecvError::Empty)
    ));
    feed.stop().await;
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn password_users_with_replication_can_run_the_feed() {
    let hba = format!(
        "host replication {SCRAM_USER} 127.0.0.1/32 scram-sha-256\n\
         host replication {MD5_USER} 127.0.0.1/32 md5\n{TEST_HBA}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = tls_files(dir.path());
    let pg = cluster_with(EmbeddedPgOptions {
        hba: Some(hba),
        tls: Some((cert, key)),
        ..Default::default()
    })
    .await;
    let admin = connect(&pg, "postgres", "postgres").await;
    // SCRAM over TLS (the upstream URL's sslmode), md5 over plain TCP.
    for (user, password, sslmode) in [
        (SCRAM_USER, SCRAM_PASSWORD, "require"),
        (MD5_USER, MD5_PASSWORD, "disable"),
    ] {
        let db = format!("{user}_db");
        exec(&admin, &format!("ALTER ROLE {user} REPLICATION")).await;
        exec(&admin, &format!("CREATE DATABASE {db} OWNER {user}")).await;
        let owner = connect(&pg, "postgres", &db).await;
        exec(
            &owner,
            &format!("CREATE TABLE p (id int PRIMARY KEY, v text); ALTER TABLE p OWNER TO {user};"),
        )
        .await;

        let url = format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{db}?sslmode={sslmode}",
            pg.port()
        );
        let proxy = proxy_with({
            let mut c = proxy_config(&url);
            c.change_feed.status_interval = Duration::from_millis(200);
            c.change_feed.slot = format!("{user}_slot");
            c.change_feed.publication = format!("{user}_pub");
            c
        })
        .await;
        let mut feed = start_feed(&proxy, &["p"]);
        expect_slot_created(&mut feed).await;
        let (walsender_user, ssl) = walsender(&admin, &feed.handle).await;
        assert_eq!(walsender_user, user);
        assert_eq!(ssl, sslmode == "require", "{user}: TLS as sslmode says");
        exec(&owner, "INSERT INTO p VALUES (1, 'via password auth')").await;
        let t = next_commit(&mut feed).await;
        assert_eq!(
            new_value(&t, 0, "v"),
            Value::Text("via password auth".into()),
            "{user}"
        );
        feed.stop().await;
        proxy.shutdown().await;

        // A wrong password keeps the feed from starting and says why.
        let bad = format!("postgres://{user}:wrong@127.0.0.1:{}/{db}", pg.port());
        let proxy = proxy_with(proxy_config(&bad)).await;
        let feed = start_feed(&proxy, &["p"]);
        let error = within("the auth failure is reported", 20, async {
            loop {
                if let Some(e) = feed.handle.status().last_error {
                    return e;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(error.contains("password authentication failed"), "{error}");
        assert_eq!(feed.handle.status().state, FeedState::Starting);
        feed.stop().await;
        proxy.shutdown().await;
    }
}

/// The user the feed's walsender runs as and whether its connection uses TLS.
async fn walsender(admin: &tokio_postgres::Client, handle: &FeedHandle) -> (String, bool) {
    let slot = handle.status().slot;
    let row = admin
        .query_one(
            "SELECT r.usename::text, r.application_name, l.ssl
               FROM pg_stat_replication r
               JOIN pg_replication_slots s ON s.active_pid = r.pid
               JOIN pg_stat_ssl l ON l.pid = r.pid
              WHERE s.slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    assert_eq!(row.get::<_, String>(1), "pgpolyglot-cdc");
    (row.get(0), row.get(2))
}
