//! Real clients through the proxy, compared with the same clients talking to Postgres
//! directly: tokio-postgres (extended protocol, binary results, pipelining, COPY, LISTEN/NOTIFY,
//! notices, errors), psql (simple protocol, multi-statement strings, `\copy` both ways, errors),
//! pgbench (TPC-B in every query mode, then the balance invariants), and psycopg 3 (text and
//! binary results).

mod common;

use common::{connect, shared_cluster, within, EmbeddedPostgres};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::process::Command;
use tokio_postgres::{AsyncMessage, NoTls};

/// A tokio-postgres client through the proxy, with its connection's async messages
/// (notices, notifications) forwarded to the returned channel.
async fn client_via(
    addr: SocketAddr,
    user: &str,
    db: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>,
) {
    let url = format!("postgres://{user}@{}:{}/{db}", addr.ip(), addr.port());
    let (client, mut connection) = within(
        "connect through proxy",
        30,
        tokio_postgres::connect(&url, NoTls),
    )
    .await
    .unwrap_or_else(|e| panic!("connect through the proxy: {e}"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            let _ = tx.send(m);
        }
    });
    (client, rx)
}

async fn fresh_db(pg: &EmbeddedPostgres, name: &str) {
    let admin = connect(pg, "postgres", "postgres").await;
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_extended_binary_pipelined() {
    let pg = shared_cluster().await;
    fresh_db(&pg, "tp_ext").await;
    let proxy = common::proxy(&pg.url("postgres", "tp_ext")).await;
    let (client, _msgs) = client_via(proxy.local_addr(), "postgres", "tp_ext").await;
    let direct = connect(&pg, "postgres", "tp_ext").await;

    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[],
                                 meta jsonb, at timestamptz, uid uuid, data bytea)",
        )
        .await
        .unwrap();
    let insert = client
        .prepare("INSERT INTO items VALUES ($1, $2, $3::text::numeric, $4, $5::text::jsonb, $6::text::timestamptz, $7::text::uuid, $8) RETURNING id")
        .await
        .unwrap();
    // Pipelined: all inserts in flight at once on one connection.
    let futures = (1..=50).map(|i| {
        let client = &client;
        let insert = &insert;
        async move {
            let name = if i % 7 == 0 {
                None
            } else {
                Some(format!("item {i}"))
            };
            let tags = vec![format!("t{}", i % 3), "x".to_string()];
            let meta = format!("{{\"n\": {i}, \"odd\": {}}}", i % 2 == 1);
            let at = format!("2026-01-{:02} 10:00:00+00", 1 + i % 28);
            let uid = format!("00000000-0000-0000-0000-{i:012}");
            let data: Vec<u8> = (0..i as u8).collect();
            let price = format!("{}.{:02}", i * 3, i % 100);
            let row = client
                .query_one(insert, &[&i, &name, &price, &tags, &meta, &at, &uid, &data])
                .await
                .unwrap();
            row.get::<_, i32>(0)
        }
    });
    let ids = futures_util::future::join_all(futures).await;
    assert_eq!(ids, (1..=50).collect::<Vec<_>>());

    // Binary results through the proxy equal binary results directly.
    let sql = "SELECT id, name, tags, data, meta::text, at::text, uid::text, price::text FROM items ORDER BY id";
    let via: Vec<_> = client.query(sql, &[]).await.unwrap();
    let dir: Vec<_> = direct.query(sql, &[]).await.unwrap();
    assert_eq!(via.len(), 50);
    for (a, b) in via.iter().zip(dir.iter()) {
        assert_eq!(a.get::<_, i32>(0), b.get::<_, i32>(0));
        assert_eq!(a.get::<_, Option<String>>(1), b.get::<_, Option<String>>(1));
        assert_eq!(a.get::<_, Vec<String>>(2), b.get::<_, Vec<String>>(2));
        assert_eq!(a.get::<_, Vec<u8>>(3), b.get::<_, Vec<u8>>(3));
        for c in 4..8 {
            assert_eq!(a.get::<_, String>(c), b.get::<_, String>(c));
        }
    }

    // Named statements reused, parameters of several types, an error with its SQLSTATE.
    let stmt = client
        .prepare("SELECT count(*) FROM items WHERE id > $1 AND name IS NOT NULL")
        .await
        .unwrap();
    for bound in [0, 10, 49] {
        let a: i64 = client.query_one(&stmt, &[&bound]).await.unwrap().get(0);
        let b: i64 = direct
            .query_one(
                "SELECT count(*) FROM items WHERE id > $1 AND name IS NOT NULL",
                &[&bound],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(a, b);
    }
    let err = client
        .query("INSERT INTO items (id) VALUES (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505");
    let err = client.query("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22012");

    // Transaction with rollback, then the session is still usable.
    let mut client = client;
    let tx = client.transaction().await.unwrap();
    tx.execute("DELETE FROM items", &[]).await.unwrap();
    tx.rollback().await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 50);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_copy_notify_notice() {
    let pg = shared_cluster().await;
    fresh_db(&pg, "tp_copy").await;
    let proxy = common::proxy(&pg.url("postgres", "tp_copy")).await;
    let (client, mut msgs) = client_via(proxy.local_addr(), "postgres", "tp_copy").await;
    client
        .batch_execute("CREATE TABLE c (id int, v text)")
        .await
        .unwrap();

    // COPY IN: 20,000 rows in many CopyData messages.
    let sink = client.copy_in("COPY c FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in 0..20 {
        let mut data = String::new();
        for i in 0..1000 {
            let id = chunk * 1000 + i;
            data.push_str(&format!("{id}\tvalue {id}\n"));
        }
        sink.send(bytes::Bytes::from(data)).await.unwrap();
    }
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, 20_000);

    // COPY OUT returns exactly what went in.
    let stream = client
        .copy_out("COPY (SELECT * FROM c ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let out: Vec<u8> = stream
        .map(|r| r.unwrap().to_vec())
        .collect::<Vec<_>>()
        .await
        .concat();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 20_000);
    assert_eq!(text.lines().nth(12_345), Some("12345\tvalue 12345"));

    // LISTEN/NOTIFY to self, and a NOTICE from a DO block.
    client.batch_execute("LISTEN chan").await.unwrap();
    client.batch_execute("NOTIFY chan, 'hello'").await.unwrap();
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'notice from do: %', 42; END $$")
        .await
        .unwrap();
    let mut got_notify = false;
    let mut got_notice = false;
    while !(got_notify && got_notice) {
        match within("async messages", 10, msgs.recv()).await {
            Some(AsyncMessage::Notification(n)) => {
                assert_eq!((n.channel(), n.payload()), ("chan", "hello"));
                // The proxy passes the backend pid through unchanged.
                let pid: i32 = client
                    .query_one("SELECT pg_backend_pid()", &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(n.process_id(), pid);
                got_notify = true;
            }
            Some(AsyncMessage::Notice(n)) => {
                assert_eq!(n.message(), "notice from do: 42");
                got_notice = true;
            }
            Some(_) => {}
            None => panic!("connection closed before notify/notice"),
        }
    }
    proxy.shutdown().await;
}

fn psql(
    pg: &EmbeddedPostgres,
    port: u16,
    db: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(pg.bin_dir().join("psql"));
    cmd.args([
        "-X",
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
        "-d",
        db,
    ])
    .args(args)
    .env("PGCONNECT_TIMEOUT", "10")
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("psql is installed (apt-get install postgresql-client)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_simple_protocol_multi_statement_copy_and_errors() {
    let pg = shared_cluster().await;
    for db in ["psql_direct", "psql_proxy"] {
        fresh_db(&pg, db).await;
    }
    let proxy = common::proxy(&pg.url("postgres", "psql_proxy")).await;
    let dir = tempfile::tempdir().unwrap();
    let csv_in = dir.path().join("in.csv");
    std::fs::write(
        &csv_in,
        (1..=500)
            .map(|i| format!("{i},name {i},\"quoted, {i}\"\n"))
            .collect::<String>(),
    )
    .unwrap();
    let script = format!(
        "CREATE TABLE t (id int primary key, name text, note text);
\\copy t FROM '{}' WITH (FORMAT csv)
SELECT count(*), sum(id) FROM t; SELECT name FROM t WHERE id IN (1, 250, 500) ORDER BY id;
BEGIN; UPDATE t SET name = upper(name) WHERE id < 10; SAVEPOINT s; DELETE FROM t; ROLLBACK TO s; COMMIT;
SELECT string_agg(name, ',' ORDER BY id) FROM t WHERE id < 12;
SELECT 1/0;
SELECT * FROM missing_table;
SELEC broken syntax;
\\copy (SELECT * FROM t ORDER BY id) TO '{{OUT}}' WITH (FORMAT csv)
SELECT 'done';
",
        csv_in.display()
    );
    let mut outputs = Vec::new();
    for (db, port) in [
        ("psql_direct", pg.port()),
        ("psql_proxy", proxy.local_addr().port()),
    ] {
        let out_file = dir.path().join(format!("{db}.csv"));
        let script = script.replace("{OUT}", &out_file.display().to_string());
        let (_, stdout, stderr) = psql(&pg, port, db, &["-e"], Some(&script));
        let copied = std::fs::read_to_string(&out_file).unwrap();
        outputs.push((stdout, stderr, copied));
    }
    let (direct, proxied) = (&outputs[0], &outputs[1]);
    assert_eq!(direct.0, proxied.0, "stdout differs");
    assert_eq!(direct.1, proxied.1, "stderr (errors) differs");
    assert_eq!(direct.2, proxied.2, "\\copy out differs");
    assert!(direct.1.contains("division by zero"), "{}", direct.1);
    assert!(direct.1.contains("syntax error"), "{}", direct.1);
    assert_eq!(direct.2.lines().count(), 500);
    assert!(direct.0.contains("NAME 1,NAME 2"), "{}", direct.0);

    // -c with several statements is one simple Query message.
    let (ok, out, _) = psql(
        &pg,
        proxy.local_addr().port(),
        "psql_proxy",
        &["-At", "-c", "SELECT 1; SELECT 2"],
        None,
    );
    assert!(ok);
    assert_eq!(out.trim(), "1\n2");
    proxy.shutdown().await;
}

fn pgbench(pg: &EmbeddedPostgres, port: u16, db: &str, args: &[&str]) -> String {
    let out = Command::new(pg.bin_dir().join("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(args)
        .arg(db)
        .output()
        .expect("pgbench is installed (apt-get install postgresql-contrib / postgresql)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "pgbench {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout + &stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_all_modes_keeps_invariants() {
    let pg = shared_cluster().await;
    fresh_db(&pg, "bench").await;
    let proxy = common::proxy(&pg.url("postgres", "bench")).await;
    let port = proxy.local_addr().port();
    pgbench(&pg, port, "bench", &["-i", "-s", "1", "-q"]);
    let mut total = 0u64;
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench(
            &pg,
            port,
            "bench",
            &["-n", "-M", mode, "-c", "4", "-j", "2", "-t", "200"],
        );
        let processed: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|l| l.split('/').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no transaction count in:\n{out}"));
        assert_eq!(processed, 800, "{mode}:\n{out}");
        assert!(
            out.contains("number of failed transactions: 0")
                || !out.contains("failed transactions"),
            "{out}"
        );
        total += processed;
    }
    let direct = connect(&pg, "postgres", "bench").await;
    let row = direct
        .query_one(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts)::bigint,
                    (SELECT sum(bbalance) FROM pgbench_branches)::bigint,
                    (SELECT sum(tbalance) FROM pgbench_tellers)::bigint,
                    (SELECT coalesce(sum(delta), 0) FROM pgbench_history)::bigint,
                    (SELECT count(*) FROM pgbench_history)",
            &[],
        )
        .await
        .unwrap();
    let (a, b, t, h, n): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(n as u64, total);
    assert_eq!(a, h, "accounts vs history");
    assert_eq!(b, h, "branches vs history");
    assert_eq!(t, h, "tellers vs history");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_text_and_binary_match_direct() {
    let pg = shared_cluster().await;
    fresh_db(&pg, "pyd").await;
    let proxy = common::proxy(&pg.url("postgres", "pyd")).await;
    let direct_dsn = pg.url("postgres", "pyd");
    let proxy_dsn = format!(
        "postgres://postgres@127.0.0.1:{}/pyd",
        proxy.local_addr().port()
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/psycopg_parity.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(direct_dsn)
            .arg(proxy_dsn)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "psycopg parity failed (install with: pip install -r tests/requirements.txt)\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("0 differences"), "{stdout}");
    proxy.shutdown().await;
}
