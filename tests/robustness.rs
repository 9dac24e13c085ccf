//! The proxy under abuse and failure: cancel, TLS on both sides, authentication relay (md5,
//! SCRAM, wrong passwords), the upstream going down and coming back, clients vanishing
//! mid-COPY, oversized and malformed frames, unknown message types, invalid UTF-8, the
//! connection limit, 200 concurrent sessions, the HTTP endpoint, and SIGTERM.

mod common;

use common::wire::{frame, WireClient};
use common::{connect, shared_cluster, within, EmbeddedPgOptions};
use pgpolyglot::config::Config;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::NoTls;

fn config_for(upstream: String) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        http: String::new(),
        upstream,
        ..Config::default()
    }
}

/// Read every backend frame until the server closes; returns (type, body) pairs.
async fn read_until_close(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut all = Vec::new();
    let _ = within("read until close", 20, s.read_to_end(&mut all)).await;
    let mut out = Vec::new();
    let mut i = 0;
    while i + 5 <= all.len() {
        let len = u32::from_be_bytes([all[i + 1], all[i + 2], all[i + 3], all[i + 4]]) as usize;
        let end = (i + 1 + len).min(all.len());
        out.push((all[i], all[i + 5..end].to_vec()));
        i = end;
    }
    out
}

fn error_code(body: &[u8]) -> String {
    body.split(|&b| b == 0)
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_reaches_the_right_backend() {
    let pg = shared_cluster().await;
    let proxy = common::proxy_with(config_for(pg.url("postgres", "postgres"))).await;
    let url = format!("postgres://postgres@{}/postgres", proxy.local_addr());
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let token = client.cancel_token();
    let started = std::time::Instant::now();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    within("cancel", 10, token.cancel_query(NoTls))
        .await
        .unwrap();
    let err = within("cancelled query", 10, sleeper)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014", "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        proxy
            .context()
            .metrics
            .cancel_requests_forwarded
            .load(Relaxed),
        1
    );

    // A cancel with a wrong secret is ignored, as Postgres does.
    let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
    s.write_all(&pgpolyglot::protocol::messages::cancel_request(1, 2))
        .await
        .unwrap();
    assert!(read_until_close(&mut s).await.is_empty());
    proxy.shutdown().await;
}

fn psql_cmd(port: u16, user: &str, extra_env: &[(&str, &str)], sql: &str) -> std::process::Output {
    let bin = pgpolyglot::embedded_pg::find_bin_dir()
        .unwrap()
        .join("psql");
    let mut c = Command::new(bin);
    c.args([
        "-X",
        "-At",
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        user,
        "-d",
        "postgres",
        "-c",
        sql,
    ])
    .env("PGCONNECT_TIMEOUT", "10");
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.output().expect("psql is installed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_towards_clients_and_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::tls_files(dir.path());
    let pg = common::cluster_with(EmbeddedPgOptions {
        tls: Some((cert.clone(), key.clone())),
        ..EmbeddedPgOptions::default()
    })
    .await;
    // Client side TLS terminated by the proxy; upstream TLS with sslmode=require.
    let mut config = config_for(format!(
        "{}?sslmode=require",
        pg.url("postgres", "postgres")
    ));
    config.tls_cert = Some(cert);
    config.tls_key = Some(key);
    let proxy = common::proxy_with(config).await;
    let port = proxy.local_addr().port();
    let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let out = tokio::task::spawn_blocking(move || {
        psql_cmd(port, "postgres", &[("PGSSLMODE", "require")], sql)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "t",
        "upstream leg must be TLS"
    );
    assert_eq!(
        proxy.context().metrics.client_tls_handshakes.load(Relaxed),
        1
    );

    // SCRAM through a TLS client leg and a TLS upstream leg: works when the client does not
    // insist on channel binding (the proxy's certificate is not the upstream's).
    let out = tokio::task::spawn_blocking(move || {
        psql_cmd(
            port,
            common::SCRAM_USER,
            &[
                ("PGSSLMODE", "require"),
                ("PGPASSWORD", common::SCRAM_PASSWORD),
                ("PGCHANNELBINDING", "disable"),
            ],
            "SELECT current_user",
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        common::SCRAM_USER
    );
    proxy.shutdown().await;

    // Without a certificate the proxy answers SSLRequest with 'N', like a server with ssl=off.
    let proxy = common::proxy_with(config_for(pg.url("postgres", "postgres"))).await;
    let port = proxy.local_addr().port();
    let out = tokio::task::spawn_blocking(move || {
        psql_cmd(port, "postgres", &[("PGSSLMODE", "require")], "SELECT 1")
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not support SSL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::task::spawn_blocking(move || {
        psql_cmd(port, "postgres", &[("PGSSLMODE", "prefer")], "SELECT 1")
    })
    .await
    .unwrap();
    assert!(out.status.success());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_md5_scram_and_wrong_passwords_are_postgres_own() {
    let pg = shared_cluster().await;
    let proxy = common::proxy_with(config_for(pg.url("postgres", "postgres"))).await;
    let via = proxy.local_addr().port();
    for (user, good) in [
        (common::MD5_USER, common::MD5_PASSWORD),
        (common::SCRAM_USER, common::SCRAM_PASSWORD),
    ] {
        let url = format!("postgres://{user}:{good}@127.0.0.1:{via}/postgres");
        let (client, conn) = tokio_postgres::connect(&url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        tokio::spawn(conn);
        let who: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user);

        let mut errors = Vec::new();
        for port in [pg.port(), via] {
            let url = format!("postgres://{user}:wrong@127.0.0.1:{port}/postgres");
            let err = tokio_postgres::connect(&url, NoTls)
                .await
                .err()
                .expect("wrong password must fail");
            let db = err
                .as_db_error()
                .expect("a server error, not a client-side one")
                .clone();
            errors.push((
                db.code().code().to_string(),
                db.message().to_string(),
                db.severity().to_string(),
            ));
        }
        assert_eq!(errors[0], errors[1], "{user}");
        assert_eq!(errors[0].0, "28P01");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_then_back() {
    let mut pg = common::cluster().await;
    let proxy = common::proxy_with(config_for(pg.url("postgres", "postgres"))).await;
    let url = format!("postgres://postgres@{}/postgres", proxy.local_addr());
    let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    c.simple_query("SELECT 1").await.unwrap();

    pg.stop().await.unwrap();
    // The open session sees Postgres's own shutdown error, then a closed connection.
    assert!(c.simple_query("SELECT 1").await.is_err());
    // A new connection gets a clear FATAL from the proxy.
    let err = tokio_postgres::connect(&url, NoTls)
        .await
        .err()
        .expect("upstream is down");
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a FATAL ErrorResponse, got {err}"));
    assert_eq!(db.code().code(), "08001");
    assert!(
        db.message().contains("could not connect to the upstream"),
        "{}",
        db.message()
    );
    assert_eq!(db.severity(), "FATAL");

    pg.restart().await.unwrap();
    let (c, conn) = within("reconnect", 30, tokio_postgres::connect(&url, NoTls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert!(
        proxy
            .context()
            .metrics
            .upstream_connect_errors
            .load(Relaxed)
            >= 1
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_copy_loses_nothing_else() {
    let pg = shared_cluster().await;
    let admin = connect(&pg, "postgres", "postgres").await;
    admin
        .batch_execute("DROP TABLE IF EXISTS midcopy; CREATE TABLE midcopy (id int, v text)")
        .await
        .unwrap();
    let proxy = common::proxy_with(config_for(pg.url("postgres", "postgres"))).await;
    let metrics = &proxy.context().metrics;

    let mut c = WireClient::connect(proxy.local_addr(), "postgres", "postgres")
        .await
        .unwrap();
    c.send(b'Q', b"COPY midcopy FROM STDIN\0").await.unwrap();
    let m = c.read_message().await.unwrap();
    assert_eq!(m.tag, b'G', "CopyInResponse expected");
    for i in 0..1000 {
        c.queue(b'd', format!("{i}\trow {i}\n").as_bytes())
            .await
            .unwrap();
    }
    // Half a CopyData frame, then the client vanishes.
    c.send_raw(&[b'd', 0, 0, 1, 0, b'4', b'2']).await.unwrap();
    drop(c);

    // Another session works meanwhile, and the aborted COPY left no rows.
    let url = format!("postgres://postgres@{}/postgres", proxy.local_addr());
    let (other, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = other
            .query_one("SELECT count(*) FROM midcopy", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
        let copying: i64 = other
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY midcopy%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if copying == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "upstream COPY session was not ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metrics.client_connections_active.load(Relaxed), 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_others_carry_on() {
    let pg = shared_cluster().await;
    let mut config = config_for(pg.url("postgres", "postgres"));
    config.max_message_bytes = 1024 * 1024;
    let proxy = common::proxy_with(config).await;
    let addr = proxy.local_addr();
    let url = format!("postgres://postgres@{addr}/postgres");
    let (bystander, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);

    // Oversized Query: FATAL 08P01 naming the limit, connection closed, nothing forwarded.
    let mut c = WireClient::connect(addr, "postgres", "postgres")
        .await
        .unwrap();
    let mut big = vec![b'Q'];
    big.extend_from_slice(&(2u32 * 1024 * 1024).to_be_bytes());
    big.extend_from_slice(b"SELECT ");
    c.send_raw(&big).await.unwrap();
    let m = c.read_message().await.unwrap();
    assert_eq!(m.tag, b'E');
    assert_eq!(m.sqlstate().as_deref(), Some("08P01"));
    assert!(m.error_field(b'M').unwrap().contains("max_message_bytes"));
    assert!(c.read_message().await.is_err(), "connection must be closed");

    // A length below 4 in a frame header.
    let mut c = WireClient::connect(addr, "postgres", "postgres")
        .await
        .unwrap();
    c.send_raw(&[b'Q', 0, 0, 0, 2]).await.unwrap();
    let m = c.read_message().await.unwrap();
    assert_eq!(m.sqlstate().as_deref(), Some("08P01"));

    // Malformed startup packets: too short, too long, unterminated, wrong protocol.
    for packet in [
        vec![0, 0, 0, 3],
        vec![0, 1, 0, 0, 0, 3, 0, 0],
        {
            let mut p = vec![0, 0, 0, 14, 0, 3, 0, 0];
            p.extend_from_slice(b"user\0x");
            p
        },
        vec![0, 0, 0, 9, 0, 2, 0, 0, 0],
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&packet).await.unwrap();
        let msgs = read_until_close(&mut s).await;
        assert_eq!(msgs.len(), 1, "{packet:?}: {msgs:?}");
        assert_eq!(msgs[0].0, b'E');
        let code = error_code(&msgs[0].1);
        assert!(code == "08P01" || code == "0A000", "{packet:?}: {code}");
    }

    // Unknown message type: Postgres's own FATAL, relayed.
    let mut c = WireClient::connect(addr, "postgres", "postgres")
        .await
        .unwrap();
    c.send(b'y', b"junk").await.unwrap();
    let m = c.read_message().await.unwrap();
    assert_eq!(m.tag, b'E');
    assert_eq!(m.sqlstate().as_deref(), Some("08P01"));
    assert!(m
        .error_field(b'M')
        .unwrap()
        .contains("invalid frontend message type"));

    // Invalid UTF-8 in a query: the same error as directly, and the session goes on.
    let mut via = WireClient::connect(addr, "postgres", "postgres")
        .await
        .unwrap();
    let mut direct = WireClient::connect(("127.0.0.1", pg.port()), "postgres", "postgres")
        .await
        .unwrap();
    let bad = b"SELECT '\xff\xfe'\0";
    let (a, b) = (
        bad_query(&mut via, bad).await,
        bad_query(&mut direct, bad).await,
    );
    assert_eq!(a, b);
    assert_eq!(a[0].sqlstate().as_deref(), Some("22021"));
    let ok = via.simple_query("SELECT 1").await.unwrap();
    assert_eq!(ok.last().unwrap().ready_status(), Some(b'I'));

    // A client that vanishes in the middle of a frame.
    let mut c = WireClient::connect(addr, "postgres", "postgres")
        .await
        .unwrap();
    c.send_raw(&[b'Q', 0, 0, 0, 100, b'S', b'E']).await.unwrap();
    drop(c);

    let one: i32 = bystander.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    proxy.shutdown().await;
}

async fn bad_query(c: &mut WireClient, q: &[u8]) -> Vec<common::wire::BackendMessage> {
    c.send_raw(&frame(b'Q', q)).await.unwrap();
    let mut out = Vec::new();
    loop {
        let m = c.read_message().await.unwrap();
        let done = m.tag == b'Z';
        out.push(m);
        if done {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_200_concurrent_sessions() {
    let pg = shared_cluster().await;
    let mut config = config_for(pg.url("postgres", "postgres"));
    config.max_client_conn = 2;
    let proxy = common::proxy_with(config).await;
    let url = format!("postgres://postgres@{}/postgres", proxy.local_addr());
    let mut held = Vec::new();
    for _ in 0..2 {
        let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(conn);
        held.push(c);
    }
    let err = tokio_postgres::connect(&url, NoTls)
        .await
        .err()
        .expect("third connection refused");
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(db.code().code(), "53300");
    assert_eq!(db.message(), "sorry, too many clients already");
    drop(held);
    proxy.shutdown().await;

    let proxy = common::proxy_with(config_for(pg.url("postgres", "postgres"))).await;
    let url = format!("postgres://postgres@{}/postgres", proxy.local_addr());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let (c, conn) = tokio_postgres::connect(&url, NoTls).await?;
                tokio::spawn(conn);
                let row = c
                    .query_one("SELECT $1::int * 2, pg_sleep(0.2)::text", &[&i])
                    .await?;
                Ok::<i32, tokio_postgres::Error>(row.get(0))
            })
        })
        .collect();
    let mut sum = 0i64;
    for t in tasks {
        sum += within("200 sessions", 60, t).await.unwrap().unwrap() as i64;
    }
    assert_eq!(sum, (0..200).map(|i| i * 2).sum::<i64>());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_and_metrics() {
    let pg = shared_cluster().await;
    let mut config = config_for(pg.url("postgres", "postgres"));
    config.http = "127.0.0.1:0".into();
    let proxy = common::proxy_with(config).await;
    let http = proxy.http_addr().unwrap();
    let url = format!("postgres://postgres@{}/postgres", proxy.local_addr());
    let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    for i in 0..5 {
        c.simple_query(&format!("SELECT {i}")).await.unwrap();
    }
    c.simple_query("CREATE TEMP TABLE x (a int)").await.unwrap();

    let get = |path: &'static str| async move {
        let mut s = TcpStream::connect(http).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let health = get("/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"upstream_reachable\":true"));
    let metrics = get("/metrics").await;
    let reads: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pgpolyglot_statements_total{kind=\"read\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(reads >= 5, "{metrics}");
    assert!(
        metrics.contains("pgpolyglot_statements_total{kind=\"ddl\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgpolyglot_client_connections_active 1"),
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_and_lets_sessions_finish() {
    let pg = shared_cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = dir.path().join("pgpolyglot.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nupstream = \"{}\"\nhttp = \"\"\nshutdown_grace = \"20s\"\npolicies = \"{}\"\n",
            pg.url("postgres", "postgres"),
            dir.path().join("no-policies").display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgpolyglot"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let client = within("proxy binary starts", 30, async {
        loop {
            if let Ok((c, conn)) = tokio_postgres::connect(&url, NoTls).await {
                tokio::spawn(conn);
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused; the open session still works.
    assert!(tokio_postgres::connect(&url, NoTls).await.is_err());
    let v: i32 = client.query_one("SELECT 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
    drop(client);
    let status = within("proxy exits after its last session", 15, child.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
