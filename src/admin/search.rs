//! What operators see of the search store: its rows in `SHOW STORES` and `SHOW PLACEMENTS`,
//! `SHOW MIGRATIONS` (index builds and their progress; the dashboard shows it as is), and
//! its `/metrics` lines. Reads published state and atomics only.

use super::table::{Cell, ColumnType as T, ResultTable};
use crate::config::policy::SearchStoreKind;
use crate::context::ProxyContext;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

/// `SHOW STORES` rows: each search store in use (embedded tantivy, Elasticsearch) and the
/// feed that keeps them fresh.
pub fn store_rows(ctx: &ProxyContext, t: &mut ResultTable) {
    let search = &ctx.search;
    let tables = search.tables();
    if tables.is_empty() {
        return;
    }
    let c = &search.counters;
    for kind in [SearchStoreKind::Embedded, SearchStoreKind::Elasticsearch] {
        let mine: Vec<_> = tables
            .iter()
            .filter(|x| x.meta.policy.store == kind)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let ready = mine.iter().filter(|x| x.ready.load(Relaxed)).count();
        let down = mine.iter().filter(|x| x.store_down.load(Relaxed)).count();
        let (role, location) = match kind {
            SearchStoreKind::Embedded => (
                "search (tantivy)",
                ctx.config.stores.embedded.dir.display().to_string(),
            ),
            SearchStoreKind::Elasticsearch => (
                "search (Elasticsearch API)",
                ctx.config
                    .stores
                    .elasticsearch
                    .as_ref()
                    .map_or_else(|| "not configured".to_string(), |e| e.url.clone()),
            ),
        };
        let state = if down > 0 {
            "down"
        } else if ready > 0 {
            "up"
        } else {
            "not serving"
        };
        t.push(vec![
            kind.name().into(),
            role.into(),
            location.into(),
            state.into(),
            format!(
                "{ready} of {} indexes ready, {down} unavailable",
                mine.len()
            )
            .into(),
        ]);
    }
    t.push(vec![
        "search (all stores)".into(),
        "narrowing".into(),
        Cell::Null,
        "counters".into(),
        format!(
            "{} narrowed, {} candidates handed to postgres, {} too many; {} rows backfilled, {} re-read from the feed, {} rebuilds, {} indexer errors, {} store errors",
            c.narrowed.load(Relaxed),
            c.candidates.load(Relaxed),
            c.too_many.load(Relaxed),
            c.backfilled_rows.load(Relaxed),
            c.refetched_rows.load(Relaxed),
            c.rebuilds.load(Relaxed),
            c.errors.load(Relaxed),
            c.store_errors.load(Relaxed),
        )
        .into(),
    ]);
    if let Some(f) = search.feed().map(|f| f.status()) {
        t.push(vec![
            "change feed (search)".into(),
            "freshness".into(),
            format!("slot {}, publication {}", f.slot, f.publication).into(),
            f.state.as_str().into(),
            format!(
                "applied {}, lag {} bytes / {} ms, {} tables, {} transactions, {} resets",
                f.applied_lsn,
                f.lag_bytes,
                f.lag_ms,
                f.tables.len(),
                f.transactions,
                f.resets
            )
            .into(),
        ]);
    }
}

/// `SHOW PLACEMENTS` rows: one per indexed table (`key` is `*`: the whole table).
pub fn placement_rows(ctx: &ProxyContext, t: &mut ResultTable) {
    for x in ctx.search.tables() {
        let docs = x.index.as_ref().map(|i| i.num_docs() as i64);
        t.push(vec![
            x.meta.name.to_string().into(),
            "*".into(),
            x.meta.policy.store.name().into(),
            docs.into(),
            x.status().into(),
        ]);
    }
}

/// `SHOW MIGRATIONS`: index builds and their progress.
pub fn migrations(ctx: &ProxyContext) -> ResultTable {
    let mut t = ResultTable::new(&[
        ("table", T::Text),
        ("store", T::Text),
        ("columns", T::Text),
        ("state", T::Text),
        ("backfilled_rows", T::Int8),
        ("documents", T::Int8),
        ("detail", T::Text),
    ]);
    for x in ctx.search.tables() {
        let p = x.progress();
        let state = if x.index.is_none() {
            "not indexed"
        } else if x.store_down.load(Relaxed) {
            "store unavailable"
        } else if x.ready.load(Relaxed) {
            "ready"
        } else {
            "backfilling"
        };
        t.push(vec![
            x.meta.name.to_string().into(),
            x.meta.policy.store.name().into(),
            x.meta.columns.join(",").into(),
            state.into(),
            (p.backfilled_rows as i64).into(),
            x.index
                .as_ref()
                .map(|i| i.num_docs() as i64)
                .map_or(Cell::Null, Cell::from),
            x.status().into(),
        ]);
    }
    t
}

/// `/metrics` lines of the search store.
pub fn metrics(ctx: &ProxyContext, out: &mut String) {
    let search = &ctx.search;
    let c = &search.counters;
    fn line(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    for (name, help, v) in [
        (
            "pgpolyglot_search_narrowed_total",
            "Statements restricted to the search store's candidate keys.",
            &c.narrowed,
        ),
        (
            "pgpolyglot_search_candidates_total",
            "Candidate keys handed to Postgres by narrowed statements.",
            &c.candidates,
        ),
        (
            "pgpolyglot_search_too_many_total",
            "Text predicates passed through because the candidates exceeded max_candidate_fraction.",
            &c.too_many,
        ),
        (
            "pgpolyglot_search_backfilled_rows_total",
            "Rows read by index backfills.",
            &c.backfilled_rows,
        ),
        (
            "pgpolyglot_search_refetched_rows_total",
            "Rows re-read because the change feed reported them changed.",
            &c.refetched_rows,
        ),
        (
            "pgpolyglot_search_feed_transactions_total",
            "Change-feed transactions applied to the search indexes.",
            &c.feed_transactions,
        ),
        (
            "pgpolyglot_search_rebuilds_total",
            "Index rebuilds started (first build, truncate, feed reset, layout change).",
            &c.rebuilds,
        ),
        (
            "pgpolyglot_search_errors_total",
            "Indexer steps that failed and were retried.",
            &c.errors,
        ),
        (
            "pgpolyglot_search_store_errors_total",
            "Search store calls that failed (the table's text predicates went to Postgres).",
            &c.store_errors,
        ),
    ] {
        line(out, name, "counter", help, v.load(Relaxed));
    }
    let tables = search.tables();
    if tables.is_empty() {
        return;
    }
    let labelled = [
        (
            "pgpolyglot_search_index_ready",
            "1 when the table's index is complete and used.",
        ),
        (
            "pgpolyglot_search_index_documents",
            "Documents in the table's index (last commit).",
        ),
        (
            "pgpolyglot_search_index_backfilled_rows",
            "Rows the table's current backfill has read.",
        ),
        (
            "pgpolyglot_search_index_store_down",
            "1 while the table's search store is unavailable (broken or being re-validated).",
        ),
    ];
    for (i, (name, help)) in labelled.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for x in &tables {
            let value = match i {
                0 => u64::from(x.ready.load(Relaxed)),
                1 => x.index.as_ref().map_or(0, |ix| ix.num_docs()),
                2 => x.progress().backfilled_rows,
                _ => u64::from(x.store_down.load(Relaxed)),
            };
            let label = x.meta.name.to_string().replace(['\\', '"', '\n'], "_");
            let _ = writeln!(out, "{name}{{table=\"{label}\"}} {value}");
        }
    }
    if let Some(h) = search.feed().map(|f| f.health()) {
        line(
            out,
            "pgpolyglot_search_feed_lag_ms",
            "gauge",
            "Lag of the search store's change feed (commit to applied).",
            h.lag_ms,
        );
    }
}
