//! The text-search benchmark: what narrowing with the embedded index is worth next to
//! Postgres scanning, Postgres with a pg_trgm GIN index, and Postgres with a tsvector GIN
//! index, on one generated `docs(id, title, body)` table, in one run.
//!
//! ```text
//! PGPOLYGLOT_BENCH_WORKLOADS=search PGPOLYGLOT_BENCH_OUT=search cargo bench --bench load
//! ```
//!
//! Knobs: `PGPOLYGLOT_BENCH_SEARCH_ROWS` (default 1,000,000), `PGPOLYGLOT_BENCH_SEARCH_ITERS`
//! (iterations per indexed cell, default 40; scans get a quarter, at least 3),
//! `PGPOLYGLOT_BENCH_SEARCH_STORES` (`embedded` by default; `osmem` adds the Elasticsearch
//! store on osmem-server, an in-memory Python emulator that held ~9 GB at 100,000 rows — run
//! it with `PGPOLYGLOT_BENCH_SEARCH_ROWS=100000`, a million rows would not fit in memory).
//!
//! Three copies of the same rows: `docs` (no index but its primary key: what the proxy
//! narrows, and what a sequential scan reads), `docs_trgm` (+ `gin (body gin_trgm_ops)`),
//! `docs_fts` (+ `gin (to_tsvector('english', body))`). One client, statements in sequence;
//! the word searched changes every iteration (rare words for the selective queries, so each
//! matches a few hundred rows; frequent words for the common ones). Latencies are client
//! round trips. The index's backfill rate is measured from the proxy's start to the index
//! being complete.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use pgpolyglot::embedded_pg::EmbeddedPostgres;

use crate::process::{BenchResult, Context};
use crate::targets::{Target, TargetEnv, TargetKind};

/// The database the search benchmark lives in.
pub const SEARCH_DB: &str = "bench_search";
/// Distinct words; word `n` appears with probability about 1/(n ln N) (Zipf, exponent 1).
const VOCABULARY: u32 = 10_000;

/// One query kind: its label, whether it is selective, and its text for a table and word.
struct QueryKind {
    label: &'static str,
    selective: bool,
    /// Which direct index serves it: "trgm" or "fts".
    gin: &'static str,
    sql: fn(&str, &str) -> String,
}

const QUERIES: &[QueryKind] = &[
    QueryKind {
        label: "ILIKE selective",
        selective: true,
        gin: "trgm",
        sql: |t, w| format!("SELECT id, title FROM {t} WHERE body ILIKE '%{w}%' ORDER BY id"),
    },
    QueryKind {
        label: "ILIKE common",
        selective: false,
        gin: "trgm",
        sql: |t, w| format!("SELECT count(*) FROM {t} WHERE body ILIKE '%{w}%'"),
    },
    QueryKind {
        label: "regex selective",
        selective: true,
        gin: "trgm",
        sql: |t, w| format!("SELECT id FROM {t} WHERE body ~ '{w} [a-z]+' ORDER BY id"),
    },
    QueryKind {
        label: "regex common",
        selective: false,
        gin: "trgm",
        sql: |t, w| format!("SELECT count(*) FROM {t} WHERE body ~ '{w} [a-z]+'"),
    },
    QueryKind {
        label: "@@ selective",
        selective: true,
        gin: "fts",
        sql: |t, w| {
            format!(
                "SELECT id, title FROM {t} WHERE to_tsvector('english', body) @@ to_tsquery('english', '{w}') ORDER BY id"
            )
        },
    },
    QueryKind {
        label: "@@ common",
        selective: false,
        gin: "fts",
        sql: |t, w| {
            format!(
                "SELECT count(*) FROM {t} WHERE to_tsvector('english', body) @@ to_tsquery('english', '{w}')"
            )
        },
    },
];

/// The policy of the `pgpolyglot-search` target.
pub const SEARCH_POLICY: &str = "tables = [\"public.docs\"]\n\n[search]\nstore = \"embedded\"\n\
columns = [\"title\", \"body\"]\npredicates = [\"like\", \"ilike\", \"regex\", \"fts\"]\n\
fts_configs = [\"english\"]\n\
max_candidate_fraction = 0.05\nmax_staleness = \"5s\"\n";

/// Word `n` of the vocabulary: four syllables (SQL and Rust agree).
fn word(n: u32) -> String {
    const SYL: [&str; 10] = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "xu"];
    let mut s = String::new();
    let mut x = n;
    for _ in 0..4 {
        s.push_str(SYL[(x % 10) as usize]);
        x /= 10;
    }
    s
}

const WORD_SQL: &str = "CREATE FUNCTION bench_word(n int) RETURNS text IMMUTABLE LANGUAGE sql AS $$
  SELECT (ARRAY['ka','lo','mi','ne','ru','sa','ti','vo','ze','xu'])[n % 10 + 1]
      || (ARRAY['ka','lo','mi','ne','ru','sa','ti','vo','ze','xu'])[n / 10 % 10 + 1]
      || (ARRAY['ka','lo','mi','ne','ru','sa','ti','vo','ze','xu'])[n / 100 % 10 + 1]
      || (ARRAY['ka','lo','mi','ne','ru','sa','ti','vo','ze','xu'])[n / 1000 % 10 + 1] $$;
CREATE FUNCTION bench_words(k int, salt bigint) RETURNS text VOLATILE LANGUAGE sql AS $$
  SELECT string_agg(bench_word(least(floor(power(10000, random()))::int - 1, 9999)), ' ')
    FROM generate_series(1, k) WHERE salt IS NOT NULL $$;";

async fn prepare(pg: &EmbeddedPostgres, rows: u64) -> BenchResult<()> {
    let admin = pg
        .connect("postgres", "postgres")
        .await
        .context(|| "connecting".to_string())?;
    admin
        .batch_execute(&format!("CREATE DATABASE {SEARCH_DB}"))
        .await
        .context(|| format!("CREATE DATABASE {SEARCH_DB}"))?;
    let c = pg
        .connect("postgres", SEARCH_DB)
        .await
        .context(|| format!("connecting to {SEARCH_DB}"))?;
    let started = Instant::now();
    c.batch_execute(&format!(
        "SET maintenance_work_mem = '1GB'; SELECT setseed(0.42);
         {WORD_SQL}
         CREATE EXTENSION pg_trgm;
         CREATE TABLE docs (id bigint PRIMARY KEY, title text, body text);
         INSERT INTO docs SELECT g, bench_words(4, g), bench_words(30, g)
           FROM generate_series(1, {rows}) g;
         CREATE TABLE docs_trgm AS SELECT * FROM docs;
         ALTER TABLE docs_trgm ADD PRIMARY KEY (id);
         CREATE INDEX ON docs_trgm USING gin (body gin_trgm_ops);
         CREATE TABLE docs_fts AS SELECT * FROM docs;
         ALTER TABLE docs_fts ADD PRIMARY KEY (id);
         CREATE INDEX ON docs_fts USING gin (to_tsvector('english', body));"
    ))
    .await
    .context(|| "generating the docs tables".to_string())?;
    c.batch_execute("VACUUM ANALYZE")
        .await
        .context(|| "VACUUM ANALYZE".to_string())?;
    eprintln!(
        "load: search tables ready ({rows} rows ×3, GIN indexes) in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// p50 and p99 of a sample, in milliseconds.
fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

struct Cell {
    p50: f64,
    p99: f64,
    n: usize,
}

pub async fn run(pg: &EmbeddedPostgres, env: &TargetEnv, out_name: &str) -> BenchResult<()> {
    let rows: u64 = std::env::var("PGPOLYGLOT_BENCH_SEARCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let iters: usize = std::env::var("PGPOLYGLOT_BENCH_SEARCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    prepare(pg, rows).await?;

    // Targets: the peers, then the search target (whose backfill is timed).
    let mut running: Vec<Box<dyn Target>> = Vec::new();
    for kind in [TargetKind::PgbouncerSession, TargetKind::Pgpolyglot] {
        match kind.start(env).await {
            Ok(t) => running.push(t),
            Err(e) => eprintln!("load: {} failed to start: {e}", kind.name()),
        }
    }
    // Each search target builds its index alone (timed), one after the other.
    let kinds: Vec<TargetKind> = std::env::var("PGPOLYGLOT_BENCH_SEARCH_STORES")
        .unwrap_or_else(|_| "embedded".into())
        .split(',')
        .map(|s| match s.trim() {
            "embedded" => Ok(TargetKind::PgpolyglotSearch),
            "osmem" => Ok(TargetKind::PgpolyglotSearchOsmem),
            other => Err(format!(
                "PGPOLYGLOT_BENCH_SEARCH_STORES: unknown store {other:?} (embedded, osmem)"
            )),
        })
        .collect::<BenchResult<_>>()?;
    let mut searches: Vec<(Box<dyn Target>, f64)> = Vec::new();
    for kind in kinds {
        let started = Instant::now();
        let search = kind.start(env).await?;
        let deadline = started + Duration::from_secs(3600);
        loop {
            match search.search_progress() {
                Some((true, _)) => break,
                Some((false, n)) if Instant::now() > deadline => {
                    return Err(format!(
                        "{}: the index was not built within an hour ({n} rows)",
                        kind.name()
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let backfill_s = started.elapsed().as_secs_f64();
        eprintln!(
            "load: {}: index built: {rows} rows in {backfill_s:.1} s = {:.0} rows/s",
            kind.name(),
            rows as f64 / backfill_s
        );
        searches.push((search, backfill_s));
    }

    // (label, port, table for trgm queries, table for fts queries)
    let mut columns: Vec<(String, u16, &str, &str)> = vec![
        ("direct (seq scan)".into(), env.pg_port, "docs", "docs"),
        ("direct + pg_trgm GIN".into(), env.pg_port, "docs_trgm", "-"),
        ("direct + tsvector GIN".into(), env.pg_port, "-", "docs_fts"),
    ];
    for t in &running {
        columns.push((format!("{} (seq scan)", t.name()), t.port(), "docs", "docs"));
    }
    let first_search = columns.len();
    for (search, _) in &searches {
        columns.push((search.name().to_string(), search.port(), "docs", "docs"));
    }

    let mut clients = Vec::new();
    for (_, port, _, _) in &columns {
        let (client, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname={SEARCH_DB}"),
            tokio_postgres::NoTls,
        )
        .await
        .context(|| format!("connecting to port {port}"))?;
        tokio::spawn(conn);
        clients.push(client);
    }
    // Rare words (ids near the end of the vocabulary) and frequent ones (the first few).
    // `bench_words` draws ids 0..=VOCABULARY-2 (`floor(10000^r) - 1` with r < 1): the last
    // id never occurs, so the rare words start one below it.
    let rare: Vec<String> = (0..200).map(|i| word(VOCABULARY - 2 - i * 3)).collect();
    let common: Vec<String> = (0..20).map(|i| word(i % 5)).collect();

    let mut results: Vec<Vec<Option<Cell>>> = Vec::new();
    for q in QUERIES {
        let mut row = Vec::new();
        for (ci, (label, _, trgm_table, fts_table)) in columns.iter().enumerate() {
            let table = if q.gin == "fts" {
                fts_table
            } else {
                trgm_table
            };
            if *table == "-" {
                row.push(None);
                continue;
            }
            let scans = label.contains("seq scan")
                || (!q.selective && label.starts_with("pgpolyglot-search"));
            let n = if scans { (iters / 4).max(3) } else { iters };
            let words = if q.selective { &rare } else { &common };
            let mut sample = Vec::with_capacity(n);
            for i in 0..n {
                let sql = (q.sql)(table, &words[i % words.len()]);
                let t0 = Instant::now();
                clients[ci]
                    .simple_query(&sql)
                    .await
                    .context(|| format!("{label}: {sql}"))?;
                sample.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            let (p50, p99) = percentiles(sample);
            eprintln!(
                "load: {:<16} {:<26} p50 {p50:9.2} ms  p99 {p99:9.2} ms",
                q.label, label
            );
            row.push(Some(Cell { p50, p99, n }));
        }
        results.push(row);
    }
    let summaries: Vec<String> = searches
        .iter()
        .filter_map(|(s, _)| s.search_summary())
        .collect();
    let builds: Vec<(String, f64)> = searches
        .iter()
        .map(|(s, secs)| (s.name().to_string(), *secs))
        .collect();
    drop(clients);
    drop(searches);
    drop(running);

    let md = markdown(
        &columns,
        first_search,
        &results,
        rows,
        &builds,
        &summaries.join("\n\n"),
    );
    println!("{md}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&dir).context(|| "creating benches/results".to_string())?;
    std::fs::write(dir.join(format!("{out_name}.md")), md)
        .context(|| format!("writing benches/results/{out_name}.md"))?;
    Ok(())
}

fn markdown(
    columns: &[(String, u16, &str, &str)],
    first_search: usize,
    results: &[Vec<Option<Cell>>],
    rows: u64,
    builds: &[(String, f64)],
    narrowed: &str,
) -> String {
    let mut md = String::new();
    let stores: Vec<&str> = builds
        .iter()
        .map(|(name, _)| {
            if name.ends_with("osmem") {
                "Elasticsearch API on osmem-server 0.1.6, a Python emulator"
            } else {
                "embedded tantivy"
            }
        })
        .collect();
    let _ = writeln!(
        md,
        "# Text search: pgpolyglot ({}) vs Postgres\n",
        stores.join("; ")
    );
    let _ = writeln!(
        md,
        "{} · {} cores · {rows} rows in `docs(id, title, body)` (30-word bodies, Zipf vocabulary of {VOCABULARY} words) · one client, latency per statement (client round trip)\n",
        crate::process::utc_now(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (name, secs) in builds {
        let store = if name.ends_with("osmem") {
            "the Elasticsearch store (osmem-server 0.1.6)"
        } else {
            "tantivy"
        };
        let _ = writeln!(
            md,
            "Backfill of `{name}` into {store} (policy columns `title`, `body`; trigrams, words and `english` lexemes: the queries' only configuration): {rows} rows in {secs:.1} s = **{:.0} rows/s**.\n",
            rows as f64 / secs
        );
    }
    let _ = writeln!(md, "p50 / p99 in ms (iterations):\n");
    let mut head = String::from("| query |");
    let mut rule = String::from("|---|");
    for (label, ..) in columns {
        let _ = write!(head, " {label} |");
        rule.push_str("---:|");
    }
    for (label, ..) in &columns[first_search..] {
        let _ = write!(head, " {label} vs seq scan (p50) | {label} vs GIN (p50) |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for (q, row) in QUERIES.iter().zip(results) {
        let mut line = format!("| {} |", q.label);
        for cell in row {
            match cell {
                Some(c) => {
                    let _ = write!(line, " {:.2} / {:.2} ({}) |", c.p50, c.p99, c.n);
                }
                None => line.push_str(" — |"),
            }
        }
        let p50 = |i: usize| row.get(i).and_then(|c| c.as_ref()).map(|c| c.p50);
        let gin = if q.gin == "trgm" { p50(1) } else { p50(2) };
        for si in first_search..columns.len() {
            let search = p50(si);
            let ratio = |base: Option<f64>| match (base, search) {
                (Some(b), Some(s)) if s > 0.0 && b >= s => format!("{:.1}× faster", b / s),
                (Some(b), Some(s)) if b > 0.0 => format!("{:.1}× slower", s / b),
                _ => "—".into(),
            };
            let _ = write!(line, " {} | {} |", ratio(p50(0)), ratio(gin));
        }
        line.push('\n');
        md.push_str(&line);
    }
    let _ = writeln!(md, "\n{narrowed}\n");
    let _ = writeln!(
        md,
        "Common-word statements match more than the policy's `max_candidate_fraction` (5 %) of rows, so pgpolyglot passes them through un-narrowed (a sequential scan, like `direct`); the index is for selective predicates."
    );
    md
}
