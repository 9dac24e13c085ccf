//! Text predicates narrowed by the search stores — embedded tantivy, and Elasticsearch as
//! spoken by two independent ES-API servers (osmem-server, noida-db) — against real
//! PostgreSQL: every generated query gives through the proxy exactly what it gives straight
//! from Postgres (rows, order, command tags, errors), before and after writes made through
//! the proxy and straight to Postgres; most of them were actually narrowed (the counter
//! moved), so a proxy that relayed everything could not pass; the index survives a proxy
//! restart and picks up what changed while the proxy was down; a search server killed in
//! the middle of a workload fails no query, and once it is back the index is rebuilt and
//! used again.

mod common;

use common::*;
use pgpolyglot::es_server::{EsKind, EsServer};
use pgpolyglot::server::ServerHandle;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio_postgres::SimpleQueryMessage;

/// Rows in the generated corpus (noida-db gets fewer: it is slow beyond a few thousand
/// documents).
const ROWS: i64 = 3000;
const NOIDA_ROWS: i64 = 1000;

/// A deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    /// Zipf-like: index `i` with weight about 1/(i+1).
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        let i = ((n as f64 + 1.0).powf(u) - 1.0) as usize;
        i.min(n - 1)
    }
}

/// The vocabulary: common words first (Zipf), then stems, stop words, unicode, and text
/// full of LIKE and regex metacharacters.
const WORDS: &[&str] = &[
    "data",
    "proxy",
    "query",
    "index",
    "search",
    "cache",
    "latency",
    "postgres",
    "replication",
    "running",
    "runs",
    "ran",
    "runner",
    "cats",
    "cat",
    "caching",
    "cached",
    "indexes",
    "indexing",
    "the",
    "a",
    "of",
    "and",
    "is",
    "with",
    "café",
    "Café",
    "straße",
    "STRASSE",
    "İstanbul",
    "istanbul",
    "naïve",
    "\u{212A}elvin",
    "kelvin",
    "Ωmega",
    "日本語",
    "emoji🙂",
    "100%",
    "50%off",
    "under_score",
    "a_b",
    "back\\slash",
    "c:\\path",
    "it's",
    "o'clock",
    "\"quoted\"",
    "dot.com",
    "a+b",
    "(paren)",
    "[bracket]",
    "x*y",
    "q?",
    "caret^",
    "dollar$",
    "pipe|bar",
    "brace{2}",
    "tab\there",
    "zebra",
    "quokka",
    "xylophone",
    "jumping",
    "jumped",
    "databases",
    "database",
    "PostgreSQL",
    "Elasticsearch",
    "tantivy",
    "trigram",
];

fn sentence(rng: &mut Rng, min: usize, max: usize) -> String {
    let n = min + rng.below(max - min + 1);
    let mut words = Vec::with_capacity(n);
    for _ in 0..n {
        let w = WORDS[rng.zipf(WORDS.len())];
        words.push(match rng.below(10) {
            0 => w.to_uppercase(),
            1 => {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default()
            }
            _ => w.to_string(),
        });
    }
    words.join(if rng.chance(10) { ", " } else { " " })
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn corpus_sql(seed: u64, rows: i64) -> String {
    let mut rng = Rng(seed);
    let mut sql = String::from(
        "CREATE TABLE docs (id bigint PRIMARY KEY, title text, body text, n int NOT NULL);\n",
    );
    for chunk in (1..=rows).collect::<Vec<_>>().chunks(500) {
        sql.push_str("INSERT INTO docs VALUES ");
        let rows: Vec<String> = chunk
            .iter()
            .map(|id| {
                let title = if rng.chance(5) {
                    "NULL".to_string()
                } else {
                    quote(&sentence(&mut rng, 1, 5))
                };
                let body = if rng.chance(5) {
                    "NULL".to_string()
                } else {
                    quote(&sentence(&mut rng, 3, 40))
                };
                format!("({id}, {title}, {body}, {})", rng.below(100))
            })
            .collect();
        sql.push_str(&rows.join(", "));
        sql.push_str(";\n");
    }
    sql.push_str("ANALYZE docs;\n");
    sql
}

/// A substring of a vocabulary word (at least `min` chars), with its case changed sometimes.
fn fragment(rng: &mut Rng, min: usize) -> String {
    let w: Vec<char> = WORDS[rng.zipf(WORDS.len())].chars().collect();
    if w.len() <= min {
        return w.iter().collect();
    }
    let len = min + rng.below(w.len() - min + 1);
    let start = rng.below(w.len() - len + 1);
    let s: String = w[start..start + len].iter().collect();
    if rng.chance(20) {
        s.to_uppercase()
    } else {
        s
    }
}

/// The tail of one vocabulary word, a space, and the head of another (or of the same).
fn across_words(rng: &mut Rng) -> String {
    let a: Vec<char> = WORDS[rng.zipf(WORDS.len())].chars().collect();
    let b: Vec<char> = WORDS[rng.zipf(WORDS.len())].chars().collect();
    let tail = 1 + rng.below(a.len());
    let head = 1 + rng.below(b.len());
    let mut s: String = a[a.len() - tail..].iter().collect();
    s.push(' ');
    s.extend(&b[..head]);
    s
}

/// LIKE-escapes `%`, `_` and `\` in a fragment.
fn like_literal(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Regex-escapes ARE metacharacters in a fragment.
fn regex_literal(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn predicate(rng: &mut Rng) -> String {
    let col = if rng.chance(60) { "body" } else { "title" };
    let a = fragment(rng, 3);
    let b = fragment(rng, 2);
    match rng.below(16) {
        0 => format!("{col} LIKE {}", quote(&format!("%{}%", like_literal(&a)))),
        1 => format!("{col} LIKE {}", quote(&format!("{}%", like_literal(&a)))),
        2 => format!(
            "{col} LIKE {}",
            quote(&format!("%{}_{}%", like_literal(&a), like_literal(&b)))
        ),
        3 => format!(
            "{col} LIKE {} ESCAPE '!'",
            quote(&format!(
                "%{}%",
                a.replace('!', "!!").replace('%', "!%").replace('_', "!_")
            ))
        ),
        4 | 5 => format!("{col} ILIKE {}", quote(&format!("%{}%", like_literal(&a)))),
        6 => format!(
            "{col} ILIKE {} AND {col} NOT ILIKE {}",
            quote(&format!("%{}%", like_literal(&a))),
            quote(&format!("%{}%", like_literal(&b)))
        ),
        7 => format!("{col} ~ {}", quote(&regex_literal(&a))),
        8 => format!("{col} ~* {}", quote(&regex_literal(&a))),
        9 => format!(
            "{col} ~ {}",
            quote(&format!("{}.*{}", regex_literal(&a), regex_literal(&b)))
        ),
        10 => format!(
            "{col} ~* {}",
            quote(&format!(
                "{}|{}",
                regex_literal(&a),
                regex_literal(&fragment(rng, 3))
            ))
        ),
        // Runs across a word boundary (the end of one word, a space, the start of the
        // next): narrowed through the index's words when they are rare enough.
        11 => format!(
            "{col} ILIKE {}",
            quote(&format!("%{}%", like_literal(&across_words(rng))))
        ),
        12 => format!("{col} ~ {}", quote(&regex_literal(&across_words(rng)))),
        _ => {
            let cfg = if rng.chance(70) { "english" } else { "simple" };
            let w1 = WORDS[rng.zipf(WORDS.len())].replace(['\'', '\\'], "");
            let w2 = WORDS[rng.zipf(WORDS.len())].replace(['\'', '\\'], "");
            let prefix: String = w1.chars().filter(|c| c.is_alphanumeric()).take(3).collect();
            let (func, text) = match rng.below(6) {
                0 => ("to_tsquery", format!("'{w1}' & '{w2}'")),
                1 => ("to_tsquery", format!("'{w1}' | !'{w2}'")),
                2 => ("to_tsquery", format!("{prefix}:*")),
                3 => ("plainto_tsquery", format!("{w1} {w2}")),
                4 => ("phraseto_tsquery", format!("{w1} {w2}")),
                _ => (
                    "websearch_to_tsquery",
                    format!("\"{w1} {w2}\" or {w2} -{w1}"),
                ),
            };
            let q = format!("{func}('{cfg}', {})", quote(&text));
            format!("to_tsvector('{cfg}', {col}) @@ {q}")
        }
    }
}

fn statement(rng: &mut Rng) -> String {
    let p = predicate(rng);
    match rng.below(6) {
        0 | 1 => format!("SELECT id, title FROM docs WHERE {p} ORDER BY id"),
        2 => format!("SELECT count(*) FROM docs WHERE {p}"),
        3 => format!("SELECT id, n FROM docs WHERE {p} AND n % 3 = 0 ORDER BY id DESC LIMIT 7"),
        4 => {
            format!("SELECT n, count(*) FROM docs WHERE {p} GROUP BY n ORDER BY 2 DESC, 1 LIMIT 5")
        }
        _ => format!(
            "SELECT id FROM docs WHERE {p} AND {} ORDER BY id",
            predicate(rng)
        ),
    }
}

/// What a client sees of one simple query: rows (text), command tags, or the error.
async fn outcome(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.simple_query(sql).await {
        Ok(msgs) => {
            let mut out = String::new();
            for m in msgs {
                match m {
                    SimpleQueryMessage::Row(r) => {
                        let vals: Vec<Option<&str>> = (0..r.len()).map(|i| r.get(i)).collect();
                        out.push_str(&format!("{vals:?}\n"));
                    }
                    SimpleQueryMessage::CommandComplete(n) => out.push_str(&format!("-- {n}\n")),
                    _ => {}
                }
            }
            out
        }
        Err(e) => format!("ERROR {}", pg_error(&e)),
    }
}

/// `EXPLAIN ROUTE <sql>`'s row: route, reason, policy, detail, ...
async fn explain(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let msgs = client
        .simple_query(&format!("EXPLAIN ROUTE {sql}"))
        .await
        .unwrap();
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .expect("EXPLAIN ROUTE returns a row")
}

struct Fixture {
    pg: std::sync::Arc<EmbeddedPostgres>,
    db: tokio_postgres::Client,
    name: String,
    /// The test's own directory: policies in `policies/`, the embedded index in `data/`;
    /// removed with the fixture.
    dir: PathBuf,
    rows: i64,
    /// The Elasticsearch-API server's URL when the policy uses `store = "elasticsearch"`.
    elastic: Option<String>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A test's directory under the system's temporary one, unique per test and process.
fn test_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pgpolyglot-search-{name}-{}", std::process::id()))
}

async fn fixture(name: &str, seed: u64, fraction: f64) -> Fixture {
    fixture_on(name, seed, fraction, ROWS, None).await
}

async fn fixture_on(
    name: &str,
    seed: u64,
    fraction: f64,
    rows: i64,
    elastic: Option<String>,
) -> Fixture {
    let pg = shared_cluster().await;
    let db = database_with(&pg, name, &corpus_sql(seed, rows)).await;
    let store = if elastic.is_some() {
        "elasticsearch"
    } else {
        "embedded"
    };
    let dir = test_dir(name);
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("docs.toml"),
        format!(
            "tables = [\"public.docs\"]\n\n[search]\nstore = \"{store}\"\n\
             columns = [\"title\", \"body\"]\npredicates = [\"like\", \"ilike\", \"regex\", \"fts\"]\n\
             max_candidate_fraction = {fraction}\nmax_staleness = \"2s\"\n"
        ),
    )
    .unwrap();
    Fixture {
        pg,
        db,
        name: name.to_string(),
        dir,
        rows,
        elastic,
    }
}

impl Fixture {
    fn policies(&self) -> PathBuf {
        self.dir.join("policies")
    }

    async fn proxy(&self) -> ServerHandle {
        self.proxy_backfilling_at(None).await
    }

    /// The proxy, with the backfill throttled to `rate` rows per second if given.
    async fn proxy_backfilling_at(&self, rate: Option<u32>) -> ServerHandle {
        let mut config = proxy_config(&self.pg.url("postgres", &self.name));
        if let Some(rate) = rate {
            config.stores.embedded.backfill_rows_per_second = rate;
        }
        config.policies = self.policies();
        config.stores.embedded.dir = self.dir.join("data");
        config.stores.elasticsearch =
            self.elastic
                .clone()
                .map(|url| pgpolyglot::config::ElasticsearchSettings {
                    url,
                    index_prefix: format!("test-{}", self.name),
                    // The emulators are Python servers on a machine the tests load: a search
                    // slower than the 1 s default would send statements to Postgres (correct,
                    // but the parity tests also count how many were narrowed).
                    timeout: Duration::from_secs(10),
                    ..Default::default()
                });
        config.change_feed.slot = format!("{}_slot", self.name);
        config.change_feed.publication = format!("{}_pub", self.name);
        config.change_feed.status_interval = Duration::from_millis(100);
        proxy_with(config).await
    }

    async fn through(&self, proxy: &ServerHandle) -> tokio_postgres::Client {
        let url = format!(
            "host=127.0.0.1 port={} user=postgres dbname={}",
            proxy.local_addr().port(),
            self.name
        );
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connecting through the proxy");
        tokio::spawn(conn);
        client
    }
}

/// Waits until the docs index is complete and the search feed has applied everything
/// committed so far.
async fn caught_up(proxy: &ServerHandle, db: &tokio_postgres::Client) {
    let lsn: String = db
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let target: pgpolyglot::cdc::Lsn = lsn.parse().unwrap();
    let search = &proxy.context().search;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = search
            .table("public", "docs")
            .is_some_and(|t| t.ready.load(Relaxed));
        let applied = search.feed().map(|f| f.health().applied_lsn);
        if ready && applied.is_some_and(|a| a >= target) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the search index did not catch up: ready={ready} applied={applied:?} target={target} status={:?}",
            search.table("public", "docs").map(|t| t.status())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The index holds one document per row (no duplicates left by a rebuild or a backfill).
async fn assert_one_document_per_row(proxy: &ServerHandle, db: &tokio_postgres::Client) {
    let rows: i64 = db
        .query_one("SELECT count(*) FROM docs", &[])
        .await
        .unwrap()
        .get(0);
    let t = proxy.context().search.table("public", "docs").unwrap();
    let docs = t.index.as_ref().unwrap().num_docs();
    assert_eq!(
        docs, rows as u64,
        "documents in the index vs rows in the table"
    );
}

/// Runs `count` generated statements through the proxy and directly; returns how many
/// differed (each printed) — the caller asserts zero.
async fn compare(
    seed: u64,
    count: usize,
    proxied: &tokio_postgres::Client,
    direct: &tokio_postgres::Client,
) -> usize {
    let mut rng = Rng(seed);
    let mut differ = 0;
    for _ in 0..count {
        let sql = statement(&mut rng);
        let want = outcome(direct, &sql).await;
        let got = outcome(proxied, &sql).await;
        if want != got {
            differ += 1;
            eprintln!("DIFFERS: {sql}\n  direct: {want:.400}\n  proxy:  {got:.400}");
        }
    }
    differ
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_queries_match_postgres_before_and_after_writes() {
    let f = fixture("search_parity", 0x5eed_0001, 0.5).await;
    parity(&f, "tantivy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_queries_match_postgres_on_osmem_server() {
    let es = EsServer::start(EsKind::Osmem).await.expect("osmem-server");
    let f = fixture_on(
        "search_parity_osmem",
        0x5eed_0001,
        0.5,
        ROWS,
        Some(es.url()),
    )
    .await;
    parity(&f, EsKind::Osmem.name()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_queries_match_postgres_on_noida_db() {
    let es = EsServer::start(EsKind::Noida).await.expect("noida-db");
    let f = fixture_on(
        "search_parity_noida",
        0x5eed_0004,
        0.5,
        NOIDA_ROWS,
        Some(es.url()),
    )
    .await;
    parity(&f, EsKind::Noida.name()).await;
}

/// 400 generated statements, 60 writes (half through the proxy, read back at once), 300
/// more statements: no difference from Postgres, and at least half narrowed each time.
async fn parity(f: &Fixture, store: &str) {
    let proxy = f.proxy().await;
    caught_up(&proxy, &f.db).await;
    assert_one_document_per_row(&proxy, &f.db).await;
    let proxied = f.through(&proxy).await;
    let counters = &proxy.context().search.counters;

    let before = counters.narrowed.load(Relaxed);
    let differ = compare(11, 400, &proxied, &f.db).await;
    let narrowed = counters.narrowed.load(Relaxed) - before;
    assert_eq!(
        differ, 0,
        "{store}: results differ from Postgres (see stderr)"
    );
    assert!(
        narrowed >= 200,
        "{store}: only {narrowed} of 400 statements were narrowed (too_many={}, store_errors={}, reasons: {})",
        counters.too_many.load(Relaxed),
        counters.store_errors.load(Relaxed),
        reasons(&proxy)
    );
    eprintln!("{store}, before writes: 400 statements, {narrowed} narrowed");
    let explained = explain(
        &proxied,
        "SELECT id FROM docs WHERE body LIKE '%quokka%' ORDER BY id",
    )
    .await;
    assert_eq!(
        &explained[..2],
        ["search", "narrowed by search index"],
        "{explained:?}"
    );
    assert!(explained[3].contains("candidate keys"), "{explained:?}");

    // Writes through the proxy (read back at once: the session's fence) and straight to
    // Postgres (read back once the feed caught up).
    let mut rng = Rng(0xfeed);
    for i in 0..60 {
        let id = 1 + rng.below(f.rows as usize) as i64;
        let text = quote(&sentence(&mut rng, 2, 12));
        let sql = match i % 4 {
            0 => format!("UPDATE docs SET body = {text} WHERE id = {id}"),
            1 => format!("UPDATE docs SET title = {text}, body = NULL WHERE id = {id}"),
            2 => format!("DELETE FROM docs WHERE id = {id}"),
            _ => format!(
                "INSERT INTO docs VALUES ({}, {text}, {text}, 1)",
                f.rows + 1 + i64::from(i)
            ),
        };
        let through_proxy = i % 2 == 0;
        let client = if through_proxy { &proxied } else { &f.db };
        client.batch_execute(&sql).await.unwrap();
        if through_proxy {
            // Read-your-writes: the very next statement on this session must see it.
            let check = "SELECT id, title FROM docs WHERE body ILIKE '%e%' AND title ILIKE '%a%' ORDER BY id";
            assert_eq!(
                outcome(&proxied, check).await,
                outcome(&f.db, check).await,
                "after {sql}"
            );
        }
    }
    caught_up(&proxy, &f.db).await;
    assert_one_document_per_row(&proxy, &f.db).await;
    let before = counters.narrowed.load(Relaxed);
    let differ = compare(12, 300, &proxied, &f.db).await;
    let narrowed_after = counters.narrowed.load(Relaxed) - before;
    assert_eq!(
        differ, 0,
        "{store}: results differ from Postgres after writes (see stderr)"
    );
    assert!(
        narrowed_after >= 150,
        "{store}: only {narrowed_after} of 300 narrowed after writes (too_many={}, store_errors={}, reasons: {})",
        counters.too_many.load(Relaxed),
        counters.store_errors.load(Relaxed),
        reasons(&proxy)
    );
    eprintln!("{store}, after writes: 300 statements, {narrowed_after} narrowed");
    proxy.shutdown().await;
}

/// Route decisions so far, for failure messages.
fn reasons(proxy: &ServerHandle) -> String {
    let m = &proxy.context().metrics;
    pgpolyglot::router::Reason::ALL
        .iter()
        .map(|r| format!("{}={}", r.label(), m.route_reasons[r.index()].load(Relaxed)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A generated statement with its string literals (but text search configurations, which
/// stay literal) turned into `$n` parameters, as an application would write it.
fn parameterize(sql: &str) -> (String, Vec<String>) {
    let chars: Vec<char> = sql.chars().collect();
    let (mut out, mut params) = (String::new(), Vec::new());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '\'' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let (mut value, mut j) = (String::new(), i + 1);
        loop {
            if chars[j] == '\'' {
                if chars.get(j + 1) == Some(&'\'') {
                    value.push('\'');
                    j += 2;
                    continue;
                }
                break;
            }
            value.push(chars[j]);
            j += 1;
        }
        if value == "english" || value == "simple" {
            out.extend(&chars[i..=j]);
        } else {
            params.push(value);
            out.push_str(&format!("${}", params.len()));
        }
        i = j + 1;
    }
    (out, params)
}

/// What a client sees of one extended-protocol query: rows (each value by its type), the
/// row count, or the error. `unnamed`: one Parse/Bind/Describe/Execute/Sync batch on the
/// unnamed statement with declared `text` parameters (tokio-postgres's `query_typed`);
/// otherwise a named statement prepared first (Parse/Describe/Sync), then
/// Bind/Execute/Sync (`query`).
async fn outcome_extended(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[String],
    unnamed: bool,
) -> String {
    use tokio_postgres::types::{ToSql, Type};
    let result = if unnamed {
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
            .iter()
            .map(|p| (p as &(dyn ToSql + Sync), Type::TEXT))
            .collect();
        client.query_typed(sql, &typed).await
    } else {
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        client.query(sql, &refs).await
    };
    match result {
        Ok(rows) => {
            let mut out = String::new();
            for r in &rows {
                let vals: Vec<String> = (0..r.len())
                    .map(|i| match *r.columns()[i].type_() {
                        Type::INT4 => format!("{:?}", r.get::<_, Option<i32>>(i)),
                        Type::INT8 => format!("{:?}", r.get::<_, Option<i64>>(i)),
                        _ => format!("{:?}", r.get::<_, Option<String>>(i)),
                    })
                    .collect();
                out.push_str(&format!("{vals:?}\n"));
            }
            out.push_str(&format!("-- {}\n", rows.len()));
            out
        }
        Err(e) => format!("ERROR {}", pg_error(&e)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_statements_are_narrowed_with_bound_patterns() {
    let f = fixture("search_extended", 0x5eed_0005, 0.5).await;
    let proxy = f.proxy().await;
    caught_up(&proxy, &f.db).await;
    let proxied = f.through(&proxy).await;
    let counters = &proxy.context().search.counters;
    for (seed, unnamed) in [(31, true), (32, false)] {
        let mut rng = Rng(seed);
        let before = counters.narrowed.load(Relaxed);
        let mut differ = 0;
        for _ in 0..200 {
            let (sql, params) = parameterize(&statement(&mut rng));
            let want = outcome_extended(&f.db, &sql, &params, unnamed).await;
            let got = outcome_extended(&proxied, &sql, &params, unnamed).await;
            if want != got {
                differ += 1;
                eprintln!("DIFFERS: {sql} {params:?}\n  direct: {want:.400}\n  proxy:  {got:.400}");
            }
        }
        let narrowed = counters.narrowed.load(Relaxed) - before;
        let style = if unnamed { "unnamed" } else { "named" };
        eprintln!("extended ({style}): 200 statements, {narrowed} narrowed");
        assert_eq!(
            differ, 0,
            "{style}: results differ from Postgres (see stderr)"
        );
        if unnamed {
            assert!(narrowed >= 100, "{style}: only {narrowed} of 200 narrowed");
        } else {
            // A statement prepared in an earlier batch is relayed as it is: Postgres fixed
            // its result type and parameter types when it parsed it.
            assert_eq!(
                narrowed, 0,
                "{style}: Bind of an earlier statement narrowed"
            );
        }
    }
    // The proxy's own statement never outlives a batch, and the client's statements are
    // the client's: the unnamed one still holds the client's text.
    let leftover = "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '%pgpolyglot%'";
    assert_eq!(
        outcome(&proxied, leftover).await,
        outcome(&f.db, leftover).await
    );
    assert!(outcome(&proxied, leftover).await.contains("[Some(\"0\")]"));
    let sql = "SELECT id FROM docs WHERE body ILIKE $1 ORDER BY id";
    let pattern = vec!["%quokka%".to_string()];
    let narrowed = counters.narrowed.load(Relaxed);
    assert_eq!(
        outcome_extended(&proxied, sql, &pattern, true).await,
        outcome_extended(&f.db, sql, &pattern, true).await
    );
    assert_eq!(counters.narrowed.load(Relaxed), narrowed + 1);
    // A write through the proxy, then the same statement: read-your-writes holds.
    proxied
        .execute(
            "UPDATE docs SET body = 'a quokka appears' WHERE id = 7",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        outcome_extended(&proxied, sql, &pattern, true).await,
        outcome_extended(&f.db, sql, &pattern, true).await
    );
    // Once the index has the write, the session's fence is met and narrowing resumes.
    caught_up(&proxy, &f.db).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let narrowed = counters.narrowed.load(Relaxed);
        assert_eq!(
            outcome_extended(&proxied, sql, &pattern, true).await,
            outcome_extended(&f.db, sql, &pattern, true).await
        );
        if counters.narrowed.load(Relaxed) > narrowed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "narrowing did not resume after the write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A pattern declared bpchar is not narrowed (Postgres would drop its trailing blanks on
    // the way to text), nor a NULL pattern; both still answer as Postgres does.
    let blank = "%quokka appears ".to_string();
    let null: Option<String> = None;
    let sql = "SELECT id FROM docs WHERE body LIKE $1 ORDER BY id";
    let narrowed = counters.narrowed.load(Relaxed);
    let mut seen = Vec::new();
    for client in [&proxied, &f.db] {
        let ids = |rows: Vec<tokio_postgres::Row>| -> Vec<i64> {
            rows.iter().map(|r| r.get(0)).collect()
        };
        let bpchar = client
            .query_typed(sql, &[(&blank, tokio_postgres::types::Type::BPCHAR)])
            .await
            .map(ids)
            .map_err(|e| pg_error(&e));
        let nulls = client
            .query_typed(sql, &[(&null, tokio_postgres::types::Type::TEXT)])
            .await
            .map(ids)
            .map_err(|e| pg_error(&e));
        seen.push((bpchar, nulls));
    }
    eprintln!("bpchar and NULL patterns: {:?}", seen[1]);
    assert_eq!(seen[1], (Ok(vec![7]), Ok(vec![])), "direct");
    assert_eq!(seen[0], seen[1]);
    assert_eq!(counters.narrowed.load(Relaxed), narrowed);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_survives_a_restart_and_catches_up() {
    let f = fixture("search_restart", 0x5eed_0002, 0.5).await;
    // More rows than one backfill batch (5,000), with keys whose text order differs from
    // their numeric order, so batches must follow the key's own order.
    f.db.batch_execute(
        "INSERT INTO docs SELECT g, 'filler ' || g, 'filler text ' || g, 0 FROM generate_series(10001, 22000) g",
    )
    .await
    .unwrap();
    let proxy = f.proxy().await;
    caught_up(&proxy, &f.db).await;
    assert_one_document_per_row(&proxy, &f.db).await;
    let first_backfill = proxy
        .context()
        .search
        .counters
        .backfilled_rows
        .load(Relaxed);
    assert_eq!(first_backfill, ROWS as u64 + 12_000, "rows backfilled");
    let sql = "SELECT id FROM docs WHERE body LIKE '%filler text 21999%' ORDER BY id";
    let proxied = f.through(&proxy).await;
    assert_eq!(outcome(&proxied, sql).await, outcome(&f.db, sql).await);
    drop(proxied);
    proxy.shutdown().await;

    // Changes while no proxy runs: the slot keeps them.
    f.db.batch_execute(
        "UPDATE docs SET body = 'restart marker quokkaquokka' WHERE id <= 20;
         DELETE FROM docs WHERE id BETWEEN 21 AND 40;
         INSERT INTO docs VALUES (100001, 'late arrival', 'quokkaquokka again', 5);",
    )
    .await
    .unwrap();

    let proxy = f.proxy().await;
    caught_up(&proxy, &f.db).await;
    let search = &proxy.context().search;
    assert_eq!(
        search.counters.backfilled_rows.load(Relaxed),
        0,
        "the index on disk should have been reused, not rebuilt"
    );
    let proxied = f.through(&proxy).await;
    let before = search.counters.narrowed.load(Relaxed);
    for sql in [
        "SELECT id FROM docs WHERE body LIKE '%quokkaquokka%' ORDER BY id",
        "SELECT id FROM docs WHERE to_tsvector('simple', body) @@ to_tsquery('simple', 'quokkaquokka') ORDER BY id",
        "SELECT count(*) FROM docs WHERE body ~ 'marker' AND id < 100",
    ] {
        assert_eq!(outcome(&proxied, sql).await, outcome(&f.db, sql).await, "{sql}");
    }
    assert_eq!(search.counters.narrowed.load(Relaxed) - before, 3);
    assert_eq!(compare(21, 100, &proxied, &f.db).await, 0);

    // TRUNCATE: the index is rebuilt, and meanwhile nothing is narrowed wrongly.
    proxied
        .batch_execute("TRUNCATE docs; INSERT INTO docs VALUES (1, 'only one', 'quokkaquokka', 1)")
        .await
        .unwrap();
    let sql = "SELECT id FROM docs WHERE body LIKE '%quokka%' ORDER BY id";
    assert_eq!(outcome(&proxied, sql).await, outcome(&f.db, sql).await);
    caught_up(&proxy, &f.db).await;
    assert_eq!(outcome(&proxied, sql).await, outcome(&f.db, sql).await);
    assert!(search.counters.rebuilds.load(Relaxed) >= 1);
    assert_one_document_per_row(&proxy, &f.db).await;
    proxy.shutdown().await;
}

/// DDL that bypasses the proxy and changes what the index was built from rebuilds it: a table
/// rewrite (`VACUUM FULL`: new relfilenode) and a column type change; results stay Postgres's
/// meanwhile. Removing the policy drops the index and its directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_and_type_changes_rebuild_and_a_removed_policy_drops_the_index() {
    let f = fixture("search_ddl", 0x5eed_0006, 0.5).await;
    let proxy = f.proxy().await;
    caught_up(&proxy, &f.db).await;
    let search = &proxy.context().search;
    let proxied = f.through(&proxy).await;
    let sql = "SELECT id FROM docs WHERE body LIKE '%quokka%' ORDER BY id";
    f.db.batch_execute("UPDATE docs SET body = body || ' quokkaquokka' WHERE id % 97 = 0")
        .await
        .unwrap();
    caught_up(&proxy, &f.db).await;
    assert_eq!(outcome(&proxied, sql).await, outcome(&f.db, sql).await);

    for ddl in [
        "VACUUM FULL docs",
        "ALTER TABLE docs ALTER COLUMN body TYPE varchar(100000)",
    ] {
        let backfilled = search.counters.backfilled_rows.load(Relaxed);
        f.db.batch_execute(ddl).await.unwrap();
        // Meanwhile (before and during the rebuild) answers are Postgres's.
        assert_eq!(
            outcome(&proxied, sql).await,
            outcome(&f.db, sql).await,
            "{ddl}"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while search.counters.backfilled_rows.load(Relaxed) < backfilled + f.rows as u64 {
            assert!(Instant::now() < deadline, "{ddl}: no rebuild started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        caught_up(&proxy, &f.db).await;
        assert_one_document_per_row(&proxy, &f.db).await;
        let before = search.counters.narrowed.load(Relaxed);
        assert_eq!(
            outcome(&proxied, sql).await,
            outcome(&f.db, sql).await,
            "{ddl}"
        );
        assert_eq!(
            search.counters.narrowed.load(Relaxed) - before,
            1,
            "{ddl}: the rebuilt index is used"
        );
    }

    let dir = search
        .table("public", "docs")
        .and_then(|t| t.index.as_ref().map(|ix| ix.location()))
        .expect("the index's directory");
    assert!(std::path::Path::new(&dir).is_dir());
    std::fs::remove_file(f.policies().join("docs.toml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while search.table("public", "docs").is_some() || std::path::Path::new(&dir).exists() {
        assert!(
            Instant::now() < deadline,
            "the index was not dropped with its policy ({dir})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = search.counters.narrowed.load(Relaxed);
    assert_eq!(outcome(&proxied, sql).await, outcome(&f.db, sql).await);
    assert_eq!(search.counters.narrowed.load(Relaxed), before);
    proxy.shutdown().await;
}

/// Writes, through the proxy and straight to Postgres, while a backfill of several batches
/// runs (each batch read ahead on a second connection while the previous one is indexed):
/// afterwards every row has exactly one document, and each written row is found by its new
/// text, narrowed, with Postgres's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_backfill_are_not_lost() {
    let f = fixture("search_backfill_writes", 0x5eed_0005, 0.5).await;
    f.db.batch_execute(
        "INSERT INTO docs SELECT g, 'filler ' || g, 'filler text ' || g, 0 FROM generate_series(10001, 40000) g",
    )
    .await
    .unwrap();
    // 33,000 rows at 5,000 rows/s: seven batches over more than six seconds.
    let proxy = f.proxy_backfilling_at(Some(5_000)).await;
    let proxied = f.through(&proxy).await;
    let search = &proxy.context().search;
    let mut rng = Rng(0xbacf);
    let mut markers = Vec::new();
    let started = Instant::now();
    let mut i = 0u32;
    while started.elapsed() < Duration::from_secs(3) {
        let id = if rng.chance(20) {
            1 + rng.below(ROWS as usize) as i64
        } else {
            10_001 + rng.below(30_000) as i64
        };
        let marker = format!("quokkabf{i}");
        let sql = match i % 3 {
            0 | 1 => format!("UPDATE docs SET body = 'moved {marker}' WHERE id = {id}"),
            _ => format!("DELETE FROM docs WHERE id = {id}"),
        };
        let sql = if i.is_multiple_of(7) {
            format!(
                "INSERT INTO docs VALUES ({}, 'new', 'inserted {marker}', 2)",
                50_000 + i
            )
        } else {
            sql
        };
        if !sql.starts_with("DELETE") {
            markers.push(marker);
        }
        let client = if i.is_multiple_of(2) { &proxied } else { &f.db };
        client.batch_execute(&sql).await.unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = search.table("public", "docs").unwrap();
    assert!(
        !t.ready.load(Relaxed),
        "the backfill ended before the writes did: they did not overlap it"
    );
    caught_up(&proxy, &f.db).await;
    assert_one_document_per_row(&proxy, &f.db).await;
    // A session that wrote nothing (the writer's is fenced until its writes are applied).
    let proxied = f.through(&proxy).await;
    let mut differ = 0;
    let mut not_narrowed = 0;
    for m in &markers {
        let sql = format!("SELECT id, body FROM docs WHERE body LIKE '%{m}' ORDER BY id");
        let before = search.counters.narrowed.load(Relaxed);
        let (got, want) = (outcome(&proxied, &sql).await, outcome(&f.db, &sql).await);
        if got != want {
            eprintln!("{sql}\n  proxy:    {got}\n  postgres: {want}");
            differ += 1;
        }
        if search.counters.narrowed.load(Relaxed) == before {
            eprintln!("not narrowed: {sql}: {:?}", explain(&proxied, &sql).await);
            not_narrowed += 1;
        }
    }
    assert_eq!(
        differ,
        0,
        "{differ} of {} written rows answered differently",
        markers.len()
    );
    assert_eq!(not_narrowed, 0, "every marker query is narrowed");
    eprintln!(
        "{i} writes during the backfill, {} markers checked",
        markers.len()
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_candidates_and_bad_patterns_pass_through() {
    let f = fixture("search_passthrough", 0x5eed_0003, 0.01).await;
    let proxy = f.proxy().await;
    caught_up(&proxy, &f.db).await;
    let proxied = f.through(&proxy).await;
    let counters = &proxy.context().search.counters;
    let before = counters.narrowed.load(Relaxed);
    for sql in [
        // Common word: more than 1 % of rows.
        "SELECT count(*) FROM docs WHERE body ILIKE '%data%'",
        // Too short to narrow.
        "SELECT count(*) FROM docs WHERE body LIKE '%ca%'",
        // Invalid regex: Postgres's own error.
        "SELECT count(*) FROM docs WHERE body ~ 'quokka(' ",
        "SELECT count(*) FROM docs WHERE body ~ 'zzzq{2,1}'",
        // Trailing escape: Postgres's own error.
        "SELECT count(*) FROM docs WHERE body LIKE 'quokka\\'",
        // tsquery syntax error.
        "SELECT count(*) FROM docs WHERE to_tsvector('english', body) @@ to_tsquery('english', 'quokka &')",
        // Stop words only: Postgres's notice and no rows.
        "SELECT count(*) FROM docs WHERE to_tsvector('english', body) @@ to_tsquery('english', 'the & a')",
        // Inside a transaction block.
        "BEGIN; SELECT count(*) FROM docs WHERE body LIKE '%quokka%'; COMMIT",
    ] {
        assert_eq!(outcome(&proxied, sql).await, outcome(&f.db, sql).await, "{sql}");
    }
    let narrowed = counters.narrowed.load(Relaxed) - before;
    assert!(
        narrowed <= 1,
        "{narrowed} narrowed (only the stop-word query may be)"
    );
    assert!(counters.too_many.load(Relaxed) >= 1);
    for (sql, reason) in [
        (
            "SELECT count(*) FROM docs WHERE body ILIKE '%data%'",
            "too many search candidates",
        ),
        (
            "SELECT count(*) FROM docs WHERE body LIKE '%ca%'",
            "not narrowable by search index",
        ),
        (
            "SELECT count(*) FROM docs WHERE body ~ 'quokka('",
            "not narrowable by search index",
        ),
    ] {
        let explained = explain(&proxied, sql).await;
        assert_eq!(
            &explained[..2],
            ["postgres", reason],
            "{sql}: {explained:?}"
        );
    }
    proxy.shutdown().await;
}

/// Case-insensitive predicates are narrowed only where the column's collation maps case
/// the way the index folds it. Under ICU's Lithuanian rules `lower('PARÌS')` is
/// `pari` + U+0307 + U+0300 + `s`, so `ILIKE '%pari%'` matches a row whose folded text
/// (`parìs`) holds no `pari`: narrowing would drop it. Such a table passes ILIKE and `~*`
/// through; its case-sensitive LIKE is still narrowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_insensitive_predicates_pass_through_under_other_case_rules() {
    let pg = shared_cluster().await;
    let name = "search_case_rules";
    let sql = "CREATE TABLE docs (id int PRIMARY KEY, title text, body text COLLATE \"lt-x-icu\");
         INSERT INTO docs VALUES (1, 'capital', 'PARÌS in spring'), (2, 'capital', 'paris in autumn');
         INSERT INTO docs SELECT g, 'filler', 'quiet words number ' || g FROM generate_series(3, 400) g;";
    let db = database_with(&pg, name, sql).await;
    let f = Fixture {
        pg,
        db,
        name: name.to_string(),
        dir: test_dir(name),
        rows: 400,
        elastic: None,
    };
    std::fs::create_dir_all(f.policies()).unwrap();
    std::fs::write(
        f.policies().join("docs.toml"),
        "tables = [\"public.docs\"]\n\n[search]\nstore = \"embedded\"\n\
         columns = [\"title\", \"body\"]\npredicates = [\"like\", \"ilike\", \"regex\"]\n\
         max_candidate_fraction = 0.5\nmax_staleness = \"2s\"\n",
    )
    .unwrap();
    let proxy = f.proxy().await;
    caught_up(&proxy, &f.db).await;
    let proxied = f.through(&proxy).await;

    let ilike = "SELECT id FROM docs WHERE body ILIKE '%pari%' ORDER BY id";
    let direct = outcome(&f.db, ilike).await;
    assert!(
        direct.starts_with("[Some(\"1\")]"),
        "Postgres matches PARÌS under lt-x-icu: {direct}"
    );
    for sql in [
        ilike,
        "SELECT id FROM docs WHERE body ~* 'PARI' ORDER BY id",
        "SELECT id FROM docs WHERE title ILIKE '%CAPITAL%' ORDER BY id",
        "SELECT id FROM docs WHERE body LIKE '%PARÌS%' ORDER BY id",
    ] {
        assert_eq!(
            outcome(&proxied, sql).await,
            outcome(&f.db, sql).await,
            "{sql}"
        );
    }
    for (sql, route) in [
        (ilike, "postgres"),
        (
            "SELECT id FROM docs WHERE body ~* 'PARI' ORDER BY id",
            "postgres",
        ),
        (
            "SELECT id FROM docs WHERE body LIKE '%PARÌS%' ORDER BY id",
            "search",
        ),
        (
            "SELECT id FROM docs WHERE body ~ 'PARÌS' ORDER BY id",
            "search",
        ),
    ] {
        let explained = explain(&proxied, sql).await;
        assert_eq!(explained[0], route, "{sql}: {explained:?}");
    }
    proxy.shutdown().await;
}

/// The search server dies in the middle of a workload: no statement fails or differs (they
/// pass through), writes made meanwhile are not lost once it is back (the index is rebuilt
/// and used again), and a proxy restart reuses what the server holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_server_killed_mid_workload_fails_no_query() {
    let es = std::sync::Arc::new(tokio::sync::Mutex::new(
        EsServer::start(EsKind::Osmem).await.expect("osmem-server"),
    ));
    let url = es.lock().await.url();
    let f = fixture_on("search_es_down", 0x5eed_0005, 0.5, ROWS, Some(url)).await;
    let proxy = f.proxy().await;
    caught_up(&proxy, &f.db).await;
    let proxied = f.through(&proxy).await;
    let search = &proxy.context().search;
    let counters = &search.counters;
    let before = counters.narrowed.load(Relaxed);
    assert_eq!(compare(51, 100, &proxied, &f.db).await, 0);
    assert!(counters.narrowed.load(Relaxed) - before >= 50);

    // Killed while statements run.
    let killer = {
        let es = std::sync::Arc::clone(&es);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            es.lock().await.kill().await;
        })
    };
    assert_eq!(
        compare(52, 200, &proxied, &f.db).await,
        0,
        "while the server died"
    );
    killer.await.unwrap();
    assert_eq!(
        compare(53, 100, &proxied, &f.db).await,
        0,
        "while the server is down"
    );
    assert!(counters.store_errors.load(Relaxed) >= 1);
    let explained = explain(
        &proxied,
        "SELECT id FROM docs WHERE body LIKE '%quokka%' ORDER BY id",
    )
    .await;
    assert_eq!(explained[0], "postgres", "{explained:?}");
    assert!(
        explained[1] == "search store unavailable" || explained[1] == "index not ready",
        "{explained:?}"
    );

    // Writes while it is down, through the proxy and straight to Postgres.
    proxied
        .batch_execute(
            "UPDATE docs SET body = 'written while the store was down quokkaquokka' WHERE id <= 10;
             DELETE FROM docs WHERE id BETWEEN 11 AND 20",
        )
        .await
        .unwrap();
    f.db.batch_execute("INSERT INTO docs VALUES (900001, 'direct', 'quokkaquokka direct', 1)")
        .await
        .unwrap();
    let sql = "SELECT id FROM docs WHERE body LIKE '%quokkaquokka%' ORDER BY id";
    assert_eq!(outcome(&proxied, sql).await, outcome(&f.db, sql).await);

    // Back (empty: osmem keeps nothing): rebuilt, then narrowing again, nothing lost.
    es.lock()
        .await
        .restart()
        .await
        .expect("osmem-server restarts");
    caught_up(&proxy, &f.db).await;
    assert!(
        !search
            .table("public", "docs")
            .unwrap()
            .store_down
            .load(Relaxed),
        "store still marked down after the rebuild"
    );
    let before = counters.narrowed.load(Relaxed);
    assert_eq!(outcome(&proxied, sql).await, outcome(&f.db, sql).await);
    assert_eq!(
        compare(54, 100, &proxied, &f.db).await,
        0,
        "after the server came back"
    );
    assert!(
        counters.narrowed.load(Relaxed) - before >= 50,
        "the index is not used again after the server came back"
    );
    assert_one_document_per_row(&proxy, &f.db).await;
    drop(proxied);
    proxy.shutdown().await;

    // A new proxy reuses the server's index (no backfill) and catches up.
    f.db.batch_execute("UPDATE docs SET title = 'after restart quokkaquokka' WHERE id = 30")
        .await
        .unwrap();
    let proxy = f.proxy().await;
    caught_up(&proxy, &f.db).await;
    assert_eq!(
        proxy
            .context()
            .search
            .counters
            .backfilled_rows
            .load(Relaxed),
        0,
        "the server's index should have been reused"
    );
    let proxied = f.through(&proxy).await;
    let sql = "SELECT id FROM docs WHERE title LIKE '%quokkaquokka%' ORDER BY id";
    assert_eq!(outcome(&proxied, sql).await, outcome(&f.db, sql).await);
    assert_eq!(compare(55, 100, &proxied, &f.db).await, 0);
    proxy.shutdown().await;
}
