//! Shared harness for the end-to-end tests: a throwaway PostgreSQL with the roles the tests
//! expect, a proxy in front of it, and a raw wire client ([`wire`]).
//!
//! Every test binary includes this module (`mod common;`) and uses only part of it, hence
//! `allow(dead_code)`. Everything here starts on random loopback ports and is torn down by
//! `Drop` (even when a test panics); nothing touches the machine's own PostgreSQL or Redis.
//!
//! Roles in a [`cluster`] (all host connections are 127.0.0.1 or ::1):
//!
//! | role        | password    | auth over TCP   | notes                                       |
//! |-------------|-------------|-----------------|---------------------------------------------|
//! | `postgres`  | —           | trust           | superuser                                   |
//! | `app`       | —           | trust           | LOGIN REPLICATION; owns database `app`      |
//! | `md5user`   | `md5pass`   | md5             | password stored as an md5 hash              |
//! | `scramuser` | `scrampass` | scram-sha-256   |                                             |
//! | any other   | —           | trust           |                                             |
//!
//! Unix-socket connections are trust for everyone.

#![allow(dead_code)]

pub mod md5;
pub mod wire;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use pgpolyglot::embedded_pg::{EmbeddedPgOptions, EmbeddedPostgres};

pub const MD5_USER: &str = "md5user";
pub const MD5_PASSWORD: &str = "md5pass";
pub const SCRAM_USER: &str = "scramuser";
pub const SCRAM_PASSWORD: &str = "scrampass";
pub const APP_USER: &str = "app";
pub const APP_DB: &str = "app";

/// `pg_hba.conf` for [`cluster`]: first match wins, so the password roles come first.
pub const TEST_HBA: &str = "\
local all all trust
host all md5user 127.0.0.1/32 md5
host all md5user ::1/128 md5
host all scramuser 127.0.0.1/32 scram-sha-256
host all scramuser ::1/128 scram-sha-256
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
local replication all trust
host replication all 127.0.0.1/32 trust
host replication all ::1/128 trust
";

/// Starts a cluster with [`TEST_HBA`] and the test roles. Panics with a clear message
/// (e.g. the install command when the server binaries are missing).
pub async fn cluster() -> EmbeddedPostgres {
    cluster_with(EmbeddedPgOptions::default()).await
}

/// [`cluster`] with extra options; `opts.hba` defaults to [`TEST_HBA`].
pub async fn cluster_with(mut opts: EmbeddedPgOptions) -> EmbeddedPostgres {
    if opts.hba.is_none() {
        opts.hba = Some(TEST_HBA.to_string());
    }
    let pg = within("starting PostgreSQL", 120, EmbeddedPostgres::start(opts))
        .await
        .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e}"));
    create_test_roles(&pg).await;
    pg
}

async fn create_test_roles(pg: &EmbeddedPostgres) {
    let client = connect(pg, "postgres", "postgres").await;
    let setup = format!(
        "SET password_encryption = 'md5';
         CREATE ROLE {MD5_USER} LOGIN PASSWORD '{MD5_PASSWORD}';
         SET password_encryption = 'scram-sha-256';
         CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{SCRAM_PASSWORD}';
         CREATE ROLE {APP_USER} LOGIN REPLICATION;"
    );
    client
        .batch_execute(&setup)
        .await
        .unwrap_or_else(|e| panic!("creating test roles: {}", pg_error(&e)));
    client
        .batch_execute(&format!("CREATE DATABASE {APP_DB} OWNER {APP_USER}"))
        .await
        .unwrap_or_else(|e| panic!("creating database {APP_DB}: {}", pg_error(&e)));
}

/// One cluster shared by the tests of a test binary that run at the same time. It is
/// dropped (stopped and deleted) when the last test holding it finishes; a later test then
/// starts a fresh one. Tests sharing it must not depend on each other's objects.
pub async fn shared_cluster() -> Arc<EmbeddedPostgres> {
    static SHARED: tokio::sync::Mutex<Weak<EmbeddedPostgres>> =
        tokio::sync::Mutex::const_new(Weak::new());
    let mut slot = SHARED.lock().await;
    if let Some(pg) = slot.upgrade() {
        return pg;
    }
    let pg = Arc::new(cluster().await);
    *slot = Arc::downgrade(&pg);
    pg
}

/// A tokio-postgres client (no TLS) driven on a spawned task; panics on failure.
pub async fn connect(pg: &EmbeddedPostgres, user: &str, db: &str) -> tokio_postgres::Client {
    within(
        &format!("connecting to {}", pg.url(user, db)),
        30,
        pg.connect(user, db),
    )
    .await
    .unwrap_or_else(|e| panic!("connecting as {user} to {db}: {e}"))
}

/// Creates database `name` on `pg`, runs `schema_sql` in it, and returns a superuser
/// connection to it (each test on a shared cluster works in a database of its own).
pub async fn database_with(
    pg: &EmbeddedPostgres,
    name: &str,
    schema_sql: &str,
) -> tokio_postgres::Client {
    let admin = connect(pg, "postgres", "postgres").await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    let db = connect(pg, "postgres", name).await;
    db.batch_execute(schema_sql)
        .await
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    db
}

/// A tokio-postgres error with the server's SQLSTATE, message, detail and hint (its `Display`
/// says only "db error").
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} {}: {}{}{}",
            db.severity(),
            db.code().code(),
            db.message(),
            db.detail()
                .map(|d| format!("\nDETAIL: {d}"))
                .unwrap_or_default(),
            db.hint()
                .map(|h| format!("\nHINT: {h}"))
                .unwrap_or_default(),
        ),
        None => format!("{e:?}"),
    }
}

/// Starts the proxy on a random loopback port in front of `upstream_url`: a plain relay,
/// with no placement policies and no HTTP endpoint (its default port would collide between
/// tests running in parallel). `handle.local_addr()` is where clients connect;
/// `handle.shutdown().await` stops it.
pub async fn proxy(upstream_url: &str) -> pgpolyglot::server::ServerHandle {
    proxy_with(proxy_config(upstream_url)).await
}

/// The config [`proxy`] uses, for tests that change a field or two first.
pub fn proxy_config(upstream_url: &str) -> pgpolyglot::config::Config {
    pgpolyglot::config::Config {
        listen: "127.0.0.1:0".into(),
        upstream: upstream_url.into(),
        http: String::new(),
        // A directory that does not exist means "no policies" (the repo's examples stay out).
        policies: PathBuf::from("/nonexistent/pgpolyglot-tests-no-policies"),
        // Tests shut the proxy down with clients still connected; don't wait for them long.
        shutdown_grace: Duration::from_secs(1),
        ..pgpolyglot::config::Config::default()
    }
}

/// Starts the proxy with a full config (set `listen` to `127.0.0.1:0`).
pub async fn proxy_with(config: pgpolyglot::config::Config) -> pgpolyglot::server::ServerHandle {
    within("starting the proxy", 60, pgpolyglot::server::start(config))
        .await
        .expect("the proxy failed to start")
}

/// Runs `fut` with a deadline; panics naming `what` when it is exceeded (tests never hang).
pub async fn within<F: Future>(what: &str, secs: u64, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as `server.crt` and
/// `server.key` (PEM) into `dir`. Returns `(cert, key)`.
pub fn tls_files(dir: &Path) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("generating a self-signed certificate");
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    std::fs::write(&cert, certified.cert.pem()).expect("writing server.crt");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("writing server.key");
    (cert, key)
}
