//! The admin views: one function per `SHOW` command, each producing a [`ResultTable`] that
//! the admin console sends as a result set and the HTTP API as JSON. Reads only published
//! snapshots and atomics; never blocks a session.

use super::table::{Cell, ColumnType as T, ResultTable};
use crate::context::ProxyContext;
use crate::stats::{LatencySummary, Snapshot};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

/// Default row limit of `SHOW HOT_KEYS` and `SHOW QUERIES`.
pub const DEFAULT_LIMIT: usize = 20;

/// One admin view and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum View {
    /// `SHOW HOT_KEYS [table] [LIMIT n]`.
    HotKeys {
        table: Option<String>,
        limit: usize,
    },
    /// `SHOW QUERIES [LIMIT n]`.
    Queries {
        limit: usize,
    },
    Routes,
    Stores,
    Policies,
    Placements,
    Clients,
    Plan,
    /// `SHOW MIGRATIONS`: search index builds and their progress.
    Migrations,
}

impl View {
    /// Every view name, as in `SHOW <NAME>` (lowercase) and `/api/<name>`.
    pub const NAMES: [&'static str; 9] = [
        "hot_keys",
        "queries",
        "routes",
        "stores",
        "policies",
        "placements",
        "clients",
        "plan",
        "migrations",
    ];

    /// The view called `name` (case-insensitive) with an optional table and limit.
    pub fn from_name(name: &str, table: Option<String>, limit: Option<usize>) -> Option<View> {
        Some(match name.to_ascii_lowercase().as_str() {
            "hot_keys" => View::HotKeys {
                table,
                limit: limit.unwrap_or(DEFAULT_LIMIT),
            },
            "queries" => View::Queries {
                limit: limit.unwrap_or(DEFAULT_LIMIT),
            },
            "routes" => View::Routes,
            "stores" => View::Stores,
            "policies" => View::Policies,
            "placements" => View::Placements,
            "clients" => View::Clients,
            "plan" => View::Plan,
            "migrations" => View::Migrations,
            _ => return None,
        })
    }
}

/// Produce a view's rows.
pub fn render(ctx: &ProxyContext, view: &View) -> ResultTable {
    let snapshot = ctx.stats_view.as_ref().map(|h| h.snapshot());
    match view {
        View::HotKeys { table, limit } => hot_keys(snapshot.as_deref(), table.as_deref(), *limit),
        View::Queries { limit } => queries(snapshot.as_deref(), *limit),
        View::Routes => routes(snapshot.as_deref()),
        View::Stores => stores(ctx, snapshot.as_deref()),
        View::Policies => policies(ctx),
        View::Placements => placements(ctx),
        View::Clients => clients(ctx),
        View::Migrations => super::search::migrations(ctx),
        View::Plan => {
            crate::placement::planner::plan_table(&ctx.policies.current(), snapshot.as_deref())
        }
    }
}

fn ms(us: u64) -> Cell {
    Cell::Float(us as f64 / 1000.0)
}

fn ago(now: Instant, then: Instant) -> Cell {
    Cell::Float(now.saturating_duration_since(then).as_secs_f64())
}

fn latency_cells(l: &LatencySummary) -> [Cell; 3] {
    if l.count == 0 {
        [Cell::Null, Cell::Null, Cell::Null]
    } else {
        [ms(l.p50_us), ms(l.p99_us), ms(l.max_us)]
    }
}

/// Matches `table` as the user typed it against a tracked table's display name: exact, or
/// an unqualified name against any schema.
fn table_matches(filter: &str, schema: Option<&str>, name: &str) -> bool {
    let filter = filter.trim_matches('"');
    match filter.split_once('.') {
        Some((s, n)) => schema.unwrap_or("public") == s && name == n,
        None => name == filter,
    }
}

fn hot_keys(snapshot: Option<&Snapshot>, table: Option<&str>, limit: usize) -> ResultTable {
    let mut t = ResultTable::new(&[
        ("table", T::Text),
        ("key", T::Text),
        ("score", T::Float8),
        ("error", T::Float8),
        ("reads", T::Int8),
        ("writes", T::Int8),
        ("last_seen_s", T::Float8),
    ]);
    let Some(s) = snapshot else { return t };
    let mut keys: Vec<_> = s
        .tables
        .iter()
        .filter(|ts| {
            table.is_none_or(|f| table_matches(f, ts.table.schema.as_deref(), &ts.table.name))
        })
        .flat_map(|ts| ts.hot_keys.iter().take(limit))
        .collect();
    keys.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.table.cmp(&b.table))
            .then_with(|| a.key.cmp(&b.key))
    });
    for k in keys.into_iter().take(limit) {
        t.push(vec![
            k.table.to_string().into(),
            k.key.to_string().into(),
            k.score.into(),
            k.error.into(),
            k.reads.into(),
            k.writes.into(),
            ago(s.taken_at, k.last_seen),
        ]);
    }
    t
}

fn queries(snapshot: Option<&Snapshot>, limit: usize) -> ResultTable {
    let mut t = ResultTable::new(&[
        ("fingerprint", T::Text),
        ("query", T::Text),
        ("kind", T::Text),
        ("calls", T::Int8),
        ("rows", T::Int8),
        ("errors", T::Int8),
        ("score", T::Float8),
        ("routes", T::Text),
        ("p50_ms", T::Float8),
        ("p99_ms", T::Float8),
        ("max_ms", T::Float8),
    ]);
    let Some(s) = snapshot else { return t };
    for q in s.queries(limit) {
        let routes: Vec<&str> = q.routes.iter().map(|r| r.route.name()).collect();
        // The route with the most recent samples speaks for the shape's latency.
        let main = q
            .routes
            .iter()
            .max_by_key(|r| r.latency.count)
            .map(|r| r.latency)
            .unwrap_or_default();
        let [p50, p99, max] = latency_cells(&main);
        t.push(vec![
            format!("{:016x}", q.fingerprint).into(),
            q.normalized.to_string().into(),
            q.kind.into(),
            q.calls.into(),
            q.rows.into(),
            q.errors.into(),
            q.score.into(),
            routes.join(",").into(),
            p50,
            p99,
            max,
        ]);
    }
    t
}

fn routes(snapshot: Option<&Snapshot>) -> ResultTable {
    let mut t = ResultTable::new(&[
        ("route", T::Text),
        ("calls", T::Int8),
        ("rows", T::Int8),
        ("errors", T::Int8),
        ("p50_ms", T::Float8),
        ("p99_ms", T::Float8),
        ("max_ms", T::Float8),
    ]);
    for route in crate::stats::Route::ALL {
        let r = snapshot.and_then(|s| s.routes.iter().find(|r| r.route == route));
        let (calls, rows, errors, lat) = r.map_or((0, 0, 0, LatencySummary::default()), |r| {
            (r.calls, r.rows, r.errors, r.latency)
        });
        let [p50, p99, max] = latency_cells(&lat);
        t.push(vec![
            route.name().into(),
            calls.into(),
            rows.into(),
            errors.into(),
            p50,
            p99,
            max,
        ]);
    }
    t
}

fn stores(ctx: &ProxyContext, snapshot: Option<&Snapshot>) -> ResultTable {
    let mut t = ResultTable::new(&[
        ("store", T::Text),
        ("role", T::Text),
        ("address", T::Text),
        ("state", T::Text),
        ("detail", T::Text),
    ]);
    let m = &ctx.metrics;
    let upstream_state = if m.upstream_last_connect_failed.load(Relaxed) {
        "down"
    } else {
        "up"
    };
    t.push(vec![
        "postgres".into(),
        "source of truth".into(),
        ctx.upstream.addr().into(),
        upstream_state.into(),
        format!(
            "{} connect errors since start",
            m.upstream_connect_errors.load(Relaxed)
        )
        .into(),
    ]);
    t.push(vec![
        "stats".into(),
        "access statistics".into(),
        Cell::Null,
        if snapshot.is_some() { "up" } else { "off" }.into(),
        snapshot
            .map(|s| {
                format!(
                    "{} tables, {} shapes, {} events, {} dropped",
                    s.counters.tables,
                    s.counters.shapes,
                    s.counters.events,
                    s.counters.dropped()
                )
            })
            .into(),
    ]);
    cache_rows(ctx, &mut t);
    super::search::store_rows(ctx, &mut t);
    // Stores the policies ask for that this build or configuration does not run.
    let set = ctx.policies.current();
    let mut wanted: Vec<&'static str> = Vec::new();
    for p in &set.policies {
        if let Some(c) = &p.cache {
            if c.store.name() == "redis" && ctx.cache.l2.is_none() {
                wanted.push("redis");
            }
        }
        if let Some(s) = &p.search {
            if s.store.name() == "elasticsearch" && ctx.config.stores.elasticsearch.is_none() {
                wanted.push(s.store.name());
            }
        }
    }
    wanted.sort_unstable();
    wanted.dedup();
    for store in wanted {
        let (role, detail) = match store {
            "redis" => (
                "cache (L2)",
                "named by a policy but [stores.redis] is not configured: served from the in-process L1 only",
            ),
            _ => (
                "search",
                "named by a policy but [stores.elasticsearch] is not configured: those text predicates go to postgres un-narrowed",
            ),
        };
        t.push(vec![
            store.into(),
            role.into(),
            Cell::Null,
            "not serving".into(),
            detail.into(),
        ]);
    }
    t
}

/// The in-process cache and the change feed that keeps it fresh.
fn cache_rows(ctx: &ProxyContext, t: &mut ResultTable) {
    let cache = &ctx.cache;
    let schema = cache.schema();
    if schema.is_empty() && cache.feed().is_none() {
        return;
    }
    let c = &cache.counters;
    let totals = &cache.store.totals;
    let feed = cache.feed().map(|f| f.status());
    let serving = feed
        .as_ref()
        .is_some_and(|f| f.state == crate::cdc::FeedState::Streaming);
    let servable = schema.tables().filter(|m| m.unservable.is_none()).count();
    t.push(vec![
        "memory".into(),
        "cache (L1)".into(),
        Cell::Null,
        if serving { "up" } else { "not serving" }.into(),
        format!(
            "{} entries, {} bytes; {} hits, {} misses ({} answered by coalesced fetches: {} fetches, {} failed); {} of {} tables servable; {} fill batches, {} fill errors, {} stale fills dropped, {} rows from the feed",
            totals.entries.load(Relaxed),
            totals.bytes.load(Relaxed),
            c.hits.load(Relaxed),
            c.misses.load(Relaxed),
            c.coalesced.load(Relaxed),
            c.coalesced_fetches.load(Relaxed),
            c.coalesce_errors.load(Relaxed),
            servable,
            schema.len(),
            c.fill_batches.load(Relaxed),
            c.fill_errors.load(Relaxed),
            totals.fills_dropped_stale.load(Relaxed),
            totals.feed_images.load(Relaxed),
        )
        .into(),
    ]);
    if let Some(l2) = cache.l2.as_ref() {
        let c = &l2.counters;
        t.push(vec![
            "redis".into(),
            "cache (L2)".into(),
            Cell::Null,
            if l2.usable() { "up" } else { "not serving" }.into(),
            format!(
                "{} hits, {} misses, {} refused, {} puts, {} invalidations, {} errors, breaker opened {} times, {} epoch changes",
                c.hits.load(Relaxed),
                c.misses.load(Relaxed),
                c.refused.load(Relaxed),
                c.puts.load(Relaxed),
                c.invalidations.load(Relaxed),
                c.errors.load(Relaxed),
                c.breaker_opened.load(Relaxed),
                c.epoch_changes.load(Relaxed),
            )
            .into(),
        ]);
    }
    if let Some(f) = feed {
        t.push(vec![
            "change feed".into(),
            "freshness".into(),
            format!("slot {}, publication {}", f.slot, f.publication).into(),
            f.state.as_str().into(),
            format!(
                "applied {}, lag {} bytes / {} ms, {} tables, {} transactions, {} resets{}",
                f.applied_lsn,
                f.lag_bytes,
                f.lag_ms,
                f.tables.len(),
                f.transactions,
                f.resets,
                f.last_error
                    .map(|e| format!(", last error: {e}"))
                    .unwrap_or_default()
            )
            .into(),
        ]);
    }
}

fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) || ms == 0 {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}

fn policies(ctx: &ProxyContext) -> ResultTable {
    let mut t = ResultTable::new(&[
        ("file", T::Text),
        ("tables", T::Text),
        ("key", T::Text),
        ("cache_store", T::Text),
        ("promote_after", T::Int8),
        ("window", T::Text),
        ("demote_after_idle", T::Text),
        ("max_keys", T::Int8),
        ("max_bytes", T::Int8),
        ("max_staleness", T::Text),
        ("search_store", T::Text),
        ("search_columns", T::Text),
        ("predicates", T::Text),
        ("max_candidate_fraction", T::Float8),
        ("generation", T::Int8),
    ]);
    let set = ctx.policies.current();
    for p in &set.policies {
        let c = p.cache.as_ref();
        let s = p.search.as_ref();
        t.push(vec![
            p.file.display().to_string().into(),
            p.tables.join(",").into(),
            p.key.clone().into(),
            c.map(|c| c.store.name()).into(),
            c.map(|c| i64::from(c.promote_after)).into(),
            c.map(|c| duration_text(c.window)).into(),
            c.map(|c| duration_text(c.demote_after_idle)).into(),
            c.map(|c| c.max_keys).into(),
            c.map(|c| c.max_bytes).into(),
            c.map(|c| duration_text(c.max_staleness)).into(),
            s.map(|s| s.store.name()).into(),
            s.map(|s| s.columns.join(",")).into(),
            s.map(|s| {
                s.predicates
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .into(),
            s.map(|s| s.max_candidate_fraction).into(),
            set.generation.into(),
        ]);
    }
    t
}

/// What each store holds. Nothing is placed yet: keys and indexes move into stores with the
/// cache and search issues, and this view will list them.
/// Keys the planner placed in the cache, and for how many output profiles a row image is in
/// memory (0: being fetched, or refused by `max_bytes`).
fn placements(ctx: &ProxyContext) -> ResultTable {
    let mut t = ResultTable::new(&[
        ("table", T::Text),
        ("key", T::Text),
        ("store", T::Text),
        ("images", T::Int8),
        ("status", T::Text),
    ]);
    let cache = &ctx.cache;
    let schema = cache.schema();
    let profiles = cache.profiles.all();
    let mut rows = cache.placed_keys();
    rows.sort();
    for (table, key) in rows {
        let Some(meta) = schema.by_oid(table) else {
            continue;
        };
        let images = profiles
            .iter()
            .filter(|&&profile| {
                cache.store.contains(&crate::cache::store::EntryKey {
                    table,
                    profile,
                    key: key.as_str().into(),
                })
            })
            .count();
        t.push(vec![
            meta.qualified().into(),
            key.into(),
            "memory".into(),
            (images as i64).into(),
            "placed".into(),
        ]);
    }
    // Tables a cache policy names that the cache will never serve, and why: otherwise an
    // operator sees only that nothing gets placed.
    let mut unservable: Vec<_> = schema
        .tables()
        .filter_map(|m| m.unservable.map(|why| (m.qualified(), why)))
        .collect();
    unservable.sort();
    for (table, why) in unservable {
        t.push(vec![
            table.into(),
            "*".into(),
            "memory".into(),
            0i64.into(),
            format!("not servable: {why}").into(),
        ]);
    }
    super::search::placement_rows(ctx, &mut t);
    t
}

fn clients(ctx: &ProxyContext) -> ResultTable {
    let mut t = ResultTable::new(&[
        ("id", T::Int8),
        ("user", T::Text),
        ("database", T::Text),
        ("application_name", T::Text),
        ("peer", T::Text),
        ("tls", T::Bool),
        ("admin", T::Bool),
        ("state", T::Text),
        ("backend_pid", T::Int8),
        ("connected_s", T::Float8),
    ]);
    let now = SystemTime::now();
    for s in ctx.sessions.list() {
        let state = if s.admin {
            "admin"
        } else {
            match s.shared.txn_status.load(Relaxed) {
                b'I' => "idle",
                b'T' => "in transaction",
                b'E' => "failed transaction",
                _ => "unknown",
            }
        };
        let pid = s.shared.backend_pid.load(Relaxed);
        t.push(vec![
            s.id.into(),
            s.user.clone().into(),
            s.database.clone().into(),
            s.application_name.clone().into(),
            s.peer.to_string().into(),
            s.tls.into(),
            s.admin.into(),
            state.into(),
            if pid == 0 {
                Cell::Null
            } else {
                i64::from(pid).into()
            },
            now.duration_since(s.connected_at)
                .unwrap_or_default()
                .as_secs_f64()
                .into(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in View::NAMES {
            assert!(View::from_name(n, None, None).is_some(), "{n}");
            assert!(View::from_name(&n.to_uppercase(), None, None).is_some());
        }
        assert_eq!(View::from_name("bogus", None, None), None);
    }

    #[test]
    fn table_filter() {
        assert!(table_matches("accounts", Some("public"), "accounts"));
        assert!(table_matches("accounts", None, "accounts"));
        assert!(table_matches("public.accounts", None, "accounts"));
        assert!(!table_matches("app.accounts", Some("public"), "accounts"));
    }
}
