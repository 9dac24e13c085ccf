//! Differential test: the proxy must be invisible.
//!
//! The Transparency contract (DESIGN.md) says a client sees through the proxy exactly what it
//! would see from Postgres. This test checks that literally: every statement of the corpus
//! (`common/diff_corpus.rs`) runs once directly against Postgres and once through the proxy,
//! and the complete sequences of backend messages must be equal byte for byte:
//! RowDescription, DataRow, CommandComplete, ErrorResponse/NoticeResponse (every field),
//! EmptyQueryResponse, ParameterStatus, NotificationResponse, COPY messages, ReadyForQuery.
//!
//! Two runs, each on fresh connections and fresh databases:
//! - text: simple Query (statements with parameters use the extended protocol, text results);
//! - binary: extended protocol, all result columns binary, parameters sent as text
//!   (multi-statement entries, which the extended protocol cannot carry, use simple Query).
//!
//! Isolation: the direct side works in database `diff_direct`, the proxy side in `diff_proxy`,
//! both created (again for each run) with `TEMPLATE diff_template`, which already holds the
//! tables, types and sequences the corpus reads. Objects copied from the template keep their
//! OIDs, so both sides report the same table and type OIDs for them.
//!
//! What is normalized, and why (nothing else is):
//! - BackendKeyData: values zeroed; the proxy hands out its own cancel keys.
//! - NotificationResponse: the sender's pid zeroed; it names a different backend per side.
//! - RowDescription table and type OIDs of objects the corpus creates itself (OID >= 16384 and
//!   not in the template): the two sides create them at different points of the cluster-wide
//!   OID counter, so each side's new OIDs are replaced by their order of first appearance on
//!   that side (`NEW_OID_BASE + n`). Both sides must therefore show the same *pattern*.

mod common;
#[path = "common/diff_corpus.rs"]
mod diff_corpus;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use common::wire::{BackendMessage, Startup, WireClient, WireError};
use common::{EmbeddedPgOptions, EmbeddedPostgres};
use diff_corpus::Stmt;

/// First OID the server hands out to user objects (`FirstNormalObjectId`).
const FIRST_NORMAL_OID: u32 = 16384;
/// Normalized new OIDs become `NEW_OID_BASE + order of first appearance`.
const NEW_OID_BASE: u32 = 0xF000_0000;
/// Report at most this many differences in detail.
const MAX_REPORTED: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Run {
    Text,
    Binary,
}

/// How one statement was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    Simple,
    ExtendedText,
    ExtendedBinary,
}

/// Rewrites the per-side values listed in the module docs.
struct Normalizer {
    template_oids: Arc<HashSet<u32>>,
    new_oids: HashMap<u32, u32>,
}

impl Normalizer {
    fn new(template_oids: Arc<HashSet<u32>>) -> Self {
        Normalizer {
            template_oids,
            new_oids: HashMap::new(),
        }
    }

    fn oid(&mut self, oid: u32) -> u32 {
        if oid < FIRST_NORMAL_OID || self.template_oids.contains(&oid) {
            return oid;
        }
        let next = NEW_OID_BASE + self.new_oids.len() as u32;
        *self.new_oids.entry(oid).or_insert(next)
    }

    fn normalize(&mut self, mut msgs: Vec<BackendMessage>) -> Vec<BackendMessage> {
        for msg in &mut msgs {
            match msg.tag {
                b'T' => {
                    for at in msg.field_oid_offsets() {
                        for pos in [at, at + 6] {
                            let raw = &mut msg.body[pos..pos + 4];
                            let oid = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
                            raw.copy_from_slice(&self.oid(oid).to_be_bytes());
                        }
                    }
                }
                b'K' => msg.body.iter_mut().for_each(|b| *b = 0),
                b'A' if msg.body.len() >= 4 => msg.body[..4].copy_from_slice(&[0; 4]),
                _ => {}
            }
        }
        msgs
    }
}

/// One side (direct or proxied) of a run.
struct Side {
    client: WireClient,
    norm: Normalizer,
}

impl Side {
    async fn connect(
        addr: std::net::SocketAddr,
        db: &str,
        template_oids: &Arc<HashSet<u32>>,
    ) -> Result<(Self, Vec<BackendMessage>), WireError> {
        let startup = Startup {
            user: "postgres",
            database: db,
            password: None,
            params: &[("application_name", "differential")],
            early: &[],
        };
        let mut client = WireClient::connect_with(addr, &startup).await?;
        client.timeout = std::time::Duration::from_secs(120);
        let mut norm = Normalizer::new(template_oids.clone());
        let startup_msgs = norm.normalize(client.startup.clone());
        Ok((Side { client, norm }, startup_msgs))
    }

    async fn run(&mut self, stmt: &Stmt, run: Run) -> Result<Vec<BackendMessage>, WireError> {
        let copy: Vec<&[u8]> = stmt.copy_in.iter().map(Vec::as_slice).collect();
        let params: Vec<Option<&[u8]>> = stmt
            .params
            .iter()
            .flatten()
            .map(|p| p.as_deref().map(str::as_bytes))
            .collect();
        let c = &mut self.client;
        let msgs = match mode_of(stmt, run) {
            Mode::Simple => c.simple_query_copy(&stmt.sql, &copy).await?,
            Mode::ExtendedText => c.extended_copy(&stmt.sql, &params, &[], &[], &copy).await?,
            Mode::ExtendedBinary => {
                c.extended_copy(&stmt.sql, &params, &[], &[1], &copy)
                    .await?
            }
        };
        Ok(self.norm.normalize(msgs))
    }
}

fn mode_of(stmt: &Stmt, run: Run) -> Mode {
    match (run, stmt.multi, stmt.params.is_some()) {
        (_, true, _) => Mode::Simple,
        (Run::Text, false, false) => Mode::Simple,
        (Run::Text, false, true) => Mode::ExtendedText,
        (Run::Binary, false, _) => Mode::ExtendedBinary,
    }
}

/// Index of the first differing message (or the shorter length).
fn first_difference(a: &[BackendMessage], b: &[BackendMessage]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

fn render_list(out: &mut String, label: &str, msgs: &[BackendMessage], diff_at: usize) {
    const FULL: usize = 40;
    let (from, to) = if msgs.len() <= FULL {
        (0, msgs.len())
    } else {
        (diff_at.saturating_sub(5), (diff_at + 15).min(msgs.len()))
    };
    let _ = writeln!(out, "  {label} ({} messages):", msgs.len());
    if from > 0 {
        let _ = writeln!(out, "    ... {from} earlier messages (equal on both sides)");
    }
    for (j, msg) in msgs.iter().enumerate().take(to).skip(from) {
        let mark = if j == diff_at { ">>" } else { "  " };
        let _ = writeln!(out, "  {mark}[{j}] {msg:?}");
    }
    if to < msgs.len() {
        let _ = writeln!(out, "    ... {} more messages", msgs.len() - to);
    }
}

fn render_statement(stmt: &Stmt) -> String {
    let mut text = stmt.sql.clone();
    if let Some(params) = &stmt.params {
        let shown: Vec<String> = params
            .iter()
            .map(|p| match p {
                None => "NULL".into(),
                Some(v) if v.len() > 60 => {
                    let head: String = v.chars().take(60).collect();
                    format!("{head:?}..({} bytes)", v.len())
                }
                Some(v) => format!("{v:?}"),
            })
            .collect();
        let _ = write!(text, "   -- params: [{}]", shown.join(", "));
    }
    if !stmt.copy_in.is_empty() {
        let sizes: Vec<usize> = stmt.copy_in.iter().map(Vec::len).collect();
        let _ = write!(text, "   -- COPY data bytes: {sizes:?}");
    }
    text
}

fn render_diff(
    what: &str,
    run: Run,
    mode: Mode,
    direct: &[BackendMessage],
    proxied: &[BackendMessage],
) -> String {
    let at = first_difference(direct, proxied);
    let mut out =
        format!("{what}\n  run: {run:?}, sent as {mode:?}, first difference at message {at}\n");
    render_list(&mut out, "direct", direct, at);
    render_list(&mut out, "proxy", proxied, at);
    out
}

/// Results of the whole test, reported at the end.
#[derive(Default)]
struct Report {
    compared: HashMap<(Run, Mode), usize>,
    differences: Vec<String>,
}

impl Report {
    fn count(&self, run: Run) -> usize {
        self.compared
            .iter()
            .filter(|((r, _), _)| *r == run)
            .map(|(_, n)| n)
            .sum()
    }

    fn breakdown(&self, run: Run) -> String {
        let parts: Vec<String> = [Mode::Simple, Mode::ExtendedText, Mode::ExtendedBinary]
            .into_iter()
            .filter_map(|m| self.compared.get(&(run, m)).map(|n| format!("{n} {m:?}")))
            .collect();
        parts.join(" + ")
    }
}

/// (Re)creates `diff_direct` and `diff_proxy` from the template.
async fn fresh_databases(admin: &tokio_postgres::Client) {
    for db in ["diff_direct", "diff_proxy"] {
        // Separate statements: DROP/CREATE DATABASE cannot run in a (multi-statement) block.
        for sql in [
            format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            format!("CREATE DATABASE {db} TEMPLATE diff_template"),
        ] {
            common::within(&sql, 60, admin.batch_execute(&sql))
                .await
                .unwrap_or_else(|e| panic!("{sql}: {}", common::pg_error(&e)));
        }
    }
}

/// Creates `diff_template` and returns the OIDs (>= 16384) of its relations and types.
async fn create_template(pg: &EmbeddedPostgres, admin: &tokio_postgres::Client) -> HashSet<u32> {
    admin
        .batch_execute("CREATE DATABASE diff_template")
        .await
        .unwrap_or_else(|e| panic!("creating diff_template: {}", common::pg_error(&e)));
    let tpl = common::connect(pg, "postgres", "diff_template").await;
    tpl.batch_execute(diff_corpus::TEMPLATE_SQL)
        .await
        .unwrap_or_else(|e| panic!("filling diff_template: {}", common::pg_error(&e)));
    let rows = tpl
        .query(
            "SELECT oid FROM pg_class WHERE oid >= 16384 \
             UNION SELECT oid FROM pg_type WHERE oid >= 16384",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("reading template OIDs: {}", common::pg_error(&e)));
    // Dropping the client closes its session; CREATE DATABASE ... TEMPLATE waits for that.
    drop(tpl);
    rows.iter().map(|r| r.get::<_, u32>(0)).collect()
}

/// Checks the test client's md5 path against Postgres itself, so that auth tests built on it
/// fail for the proxy's reasons, not the harness's.
async fn check_md5_client(pg: &EmbeddedPostgres) {
    let addr = ("127.0.0.1", pg.port());
    let good = Startup {
        user: common::MD5_USER,
        database: "postgres",
        password: Some(common::MD5_PASSWORD),
        params: &[],
        early: &[],
    };
    let client = WireClient::connect_with(addr, &good)
        .await
        .unwrap_or_else(|e| panic!("md5 login with the right password: {e}"));
    assert_eq!(
        client.startup.last().and_then(|m| m.ready_status()),
        Some(b'I')
    );
    client.terminate().await.expect("terminate");
    let bad = Startup {
        password: Some("wrong"),
        ..good
    };
    match WireClient::connect_with(addr, &bad).await {
        Err(WireError::Server(msg)) => assert_eq!(msg.sqlstate().as_deref(), Some("28P01")),
        Err(e) => panic!("md5 login with a wrong password: unexpected {e}"),
        Ok(_) => panic!("md5 login with a wrong password succeeded"),
    }
}

/// With `DIFFERENTIAL_DUMP=1`: prints what Postgres answered to each statement (first and
/// last messages), to review what the corpus really exercises.
fn dump_statement(i: usize, stmt: &Stmt, run: Run, msgs: &[BackendMessage]) {
    println!("#{i} [{run:?}] {}", render_statement(stmt));
    let shown: Vec<usize> = if msgs.len() <= 8 {
        (0..msgs.len()).collect()
    } else {
        (0..4).chain(msgs.len() - 3..msgs.len()).collect()
    };
    for (n, j) in shown.iter().enumerate() {
        if n > 0 && *j != shown[n - 1] + 1 {
            println!("      ... {} more", j - shown[n - 1] - 1);
        }
        println!("      {:?}", msgs[*j]);
    }
}

/// One run of the corpus on fresh databases and connections; records into `report`.
async fn run_corpus(
    pg: &EmbeddedPostgres,
    admin: &tokio_postgres::Client,
    template_oids: &Arc<HashSet<u32>>,
    corpus: &[Stmt],
    run: Run,
    report: &mut Report,
) {
    let dump = std::env::var_os("DIFFERENTIAL_DUMP").is_some();
    fresh_databases(admin).await;
    let proxy = common::proxy(&pg.url("postgres", "diff_proxy")).await;
    let direct_addr = std::net::SocketAddr::from(([127, 0, 0, 1], pg.port()));
    let (mut direct, direct_startup) = Side::connect(direct_addr, "diff_direct", template_oids)
        .await
        .unwrap_or_else(|e| panic!("{run:?} run: connecting directly: {e}"));
    let (mut proxied, proxied_startup) =
        match Side::connect(proxy.local_addr(), "diff_proxy", template_oids).await {
            Ok(side) => side,
            Err(e) => {
                report.differences.push(format!(
                    "{run:?} run: connecting through the proxy failed: {e}"
                ));
                proxy.shutdown().await;
                return;
            }
        };
    if direct_startup != proxied_startup {
        report.differences.push(render_diff(
            "startup (authentication result up to the first ReadyForQuery)",
            run,
            Mode::Simple,
            &direct_startup,
            &proxied_startup,
        ));
    }
    for (i, stmt) in corpus.iter().enumerate() {
        let mode = mode_of(stmt, run);
        let (d, p) = tokio::join!(direct.run(stmt, run), proxied.run(stmt, run));
        let d = d.unwrap_or_else(|e| {
            panic!(
                "{run:?} run: statement #{i} failed directly: {e}\n{}",
                stmt.sql
            )
        });
        *report.compared.entry((run, mode)).or_default() += 1;
        if dump {
            dump_statement(i, stmt, run, &d);
        }
        match p {
            Ok(p) if p == d => {}
            Ok(p) => report.differences.push(render_diff(
                &format!("statement #{i}: {}", render_statement(stmt)),
                run,
                mode,
                &d,
                &p,
            )),
            Err(e) => {
                report.differences.push(format!(
                    "statement #{i}: {}\n  run: {run:?}, sent as {mode:?}: the proxy side failed \
                     ({e}); the rest of this run is skipped",
                    render_statement(stmt)
                ));
                break;
            }
        }
    }
    let _ = direct.client.terminate().await;
    let _ = proxied.client.terminate().await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_is_byte_for_byte_transparent() {
    let pg = common::cluster_with(EmbeddedPgOptions {
        // Autovacuum could change plans or physical row order on one side only.
        extra_conf: vec![("autovacuum".into(), "off".into())],
        ..EmbeddedPgOptions::default()
    })
    .await;
    check_md5_client(&pg).await;
    let admin = common::connect(&pg, "postgres", "postgres").await;
    let template_oids = Arc::new(create_template(&pg, &admin).await);
    let corpus = diff_corpus::corpus();
    assert!(
        corpus.len() >= 200,
        "corpus has only {} statements",
        corpus.len()
    );

    let mut report = Report::default();
    for run in [Run::Text, Run::Binary] {
        common::within(
            &format!("{run:?} run of the differential corpus"),
            900,
            run_corpus(&pg, &admin, &template_oids, &corpus, run, &mut report),
        )
        .await;
    }

    println!(
        "differential: {} statements, text and binary, {} differences \
         (text run: {}; binary run: {}; startup compared in both)",
        corpus.len(),
        report.differences.len(),
        report.breakdown(Run::Text),
        report.breakdown(Run::Binary),
    );
    if !report.differences.is_empty() {
        let shown: Vec<&str> = report
            .differences
            .iter()
            .take(MAX_REPORTED)
            .map(String::as_str)
            .collect();
        panic!(
            "{} differences between direct Postgres and the proxy (first {} shown):\n\n{}",
            report.differences.len(),
            shown.len(),
            shown.join("\n")
        );
    }
    assert_eq!(report.count(Run::Text), corpus.len(), "text run incomplete");
    assert_eq!(
        report.count(Run::Binary),
        corpus.len(),
        "binary run incomplete"
    );
}
