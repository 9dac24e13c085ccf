//! `pgpolyglot demo`: a throwaway PostgreSQL from the system's binaries, a small sample
//! schema, and the proxy in front of it. Prints the psql command; Ctrl-C removes everything.

use crate::config::Config;
use crate::embedded_pg::{EmbeddedPgOptions, EmbeddedPostgres};
use crate::server;

/// The sample schema: an accounts table for point reads and a docs table for text search.
pub const SAMPLE_SQL: &str = r#"
CREATE TABLE accounts (
    id      bigint PRIMARY KEY,
    name    text NOT NULL,
    email   text NOT NULL UNIQUE,
    balance numeric(12,2) NOT NULL DEFAULT 0,
    created timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00'
);
INSERT INTO accounts (id, name, email, balance, created)
SELECT g, 'user ' || g, 'user' || g || '@example.com', (g * 37 % 10000) / 100.0,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'
FROM generate_series(1, 10000) g;

CREATE TABLE docs (
    id    bigint PRIMARY KEY,
    title text NOT NULL,
    body  text
);
INSERT INTO docs (id, title, body)
SELECT g,
       (ARRAY['Postgres', 'Redis', 'Search', 'Proxy', 'Cache'])[1 + g % 5] || ' note ' || g,
       'Document ' || g || ' talks about ' ||
       (ARRAY['replication', 'indexes', 'latency', 'caching', 'full text search'])[1 + g % 5]
FROM generate_series(1, 5000) g;
ANALYZE;
"#;

/// The example policies shipped in `policies/`, built into the binary: the demo uses them
/// when it runs where there is no `policies/` directory with any (outside a checkout).
const BUILT_IN_POLICIES: [(&str, &str); 2] = [
    ("accounts.toml", include_str!("../policies/accounts.toml")),
    ("docs.toml", include_str!("../policies/docs.toml")),
];

/// `dir` when it holds at least one policy file (an operator's edits to `policies/` apply
/// to the demo); otherwise the built-in examples, written under `scratch`.
fn demo_policies(
    dir: &std::path::Path,
    scratch: &std::path::Path,
) -> Result<std::path::PathBuf, String> {
    let has_policy = std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.path().extension().is_some_and(|x| x == "toml"))
    });
    if has_policy {
        return Ok(dir.to_path_buf());
    }
    let built_in = scratch.join("policies");
    std::fs::create_dir_all(&built_in)
        .map_err(|e| format!("creating {}: {e}", built_in.display()))?;
    for (name, text) in BUILT_IN_POLICIES {
        let path = built_in.join(name);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    println!(
        "no policy files in {}: using the built-in examples ({})",
        dir.display(),
        built_in.display()
    );
    Ok(built_in)
}

pub async fn run(listen: String) -> Result<(), String> {
    println!("starting a throwaway PostgreSQL from the system's binaries...");
    let pg = EmbeddedPostgres::start(EmbeddedPgOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let admin = pg
        .connect("postgres", "postgres")
        .await
        .map_err(|e| e.to_string())?;
    admin
        .batch_execute("CREATE DATABASE demo")
        .await
        .map_err(|e| format!("creating the demo database: {e}"))?;
    let demo = pg
        .connect("postgres", "demo")
        .await
        .map_err(|e| e.to_string())?;
    demo.batch_execute(SAMPLE_SQL)
        .await
        .map_err(|e| format!("loading sample data: {e}"))?;

    // The search indexes are as throwaway as the database.
    let data = tempfile::Builder::new()
        .prefix("pgpolyglot-demo-")
        .tempdir()
        .map_err(|e| format!("creating a directory for the search indexes: {e}"))?;
    let mut config = Config {
        listen: listen.clone(),
        upstream: pg.url("postgres", "demo"),
        shutdown_grace: std::time::Duration::from_secs(2),
        ..Config::default()
    };
    config.stores.embedded.dir = data.path().join("search");
    config.policies = demo_policies(&config.policies, data.path())?;
    let handle = match server::start(config.clone()).await {
        Ok(h) => h,
        Err(server::ServerError::Bind { .. }) => {
            println!("{listen} or the HTTP port is taken; using free ports instead");
            config.listen = "127.0.0.1:0".into();
            config.http = "127.0.0.1:0".into();
            server::start(config).await.map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    let addr = handle.local_addr();
    println!();
    println!(
        "pgpolyglot demo is running (PostgreSQL {} on port {}).",
        pg.bin_dir().display(),
        pg.port()
    );
    println!("Connect through the proxy with:");
    println!();
    println!(
        "    psql \"postgres://postgres@{}:{}/demo\"",
        addr.ip(),
        addr.port()
    );
    println!();
    println!("Try:  SELECT * FROM accounts WHERE id = 42;");
    println!("      SELECT id, title FROM docs WHERE title ILIKE '%note 4242%';");
    println!("      SELECT count(*) FROM docs WHERE to_tsvector('english', body) @@ to_tsquery('english', 'document & 4242');");
    println!("      EXPLAIN ROUTE SELECT id FROM docs WHERE body ~ 'Document 42[0-9]';");
    println!("      EXPLAIN ROUTE SELECT * FROM accounts WHERE id = 42;");
    println!();
    println!("Admin console (SHOW HOT_KEYS, SHOW QUERIES, SHOW ROUTES, SHOW PLAN, RELOAD, ...):");
    println!();
    println!(
        "    psql \"postgres://postgres@{}:{}/pgpolyglot\"",
        addr.ip(),
        addr.port()
    );
    if let Some(http) = handle.http_addr() {
        println!();
        println!(
            "Dashboard: http://{http}/   Metrics: http://{http}/metrics   API: http://{http}/api"
        );
    }
    println!();
    println!("Press Ctrl-C to stop; the throwaway database is deleted.");
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    println!("stopping...");
    handle.shutdown().await;
    drop(pg);
    drop(data);
    println!("done: proxy stopped, throwaway PostgreSQL and search indexes removed.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_policies_stand_in_only_for_a_directory_without_any() {
        let scratch = tempfile::tempdir().unwrap();
        let missing = scratch.path().join("nowhere");
        let used = demo_policies(&missing, scratch.path()).unwrap();
        assert_ne!(used, missing);
        let set = crate::placement::PolicySet::load(&used, 1).unwrap();
        let tables: Vec<&str> = set
            .policies
            .iter()
            .flat_map(|p| p.tables.iter().map(String::as_str))
            .collect();
        assert_eq!(tables, ["public.accounts", "public.docs"]);

        let own = tempfile::tempdir().unwrap();
        std::fs::write(own.path().join("mine.toml"), "tables = [\"t\"]\n").unwrap();
        assert_eq!(
            demo_policies(own.path(), scratch.path()).unwrap(),
            own.path()
        );
    }
}
