//! What readers see: immutable snapshots, swapped in whole.
//!
//! The admin console, the HTTP API and (later) the placement planner read statistics while
//! the aggregator keeps writing them. Rather than sharing the aggregator behind a lock, the
//! aggregator builds a [`Snapshot`] after each drain and swaps an `Arc` to it into a
//! [`StatsHandle`]; a reader takes a read lock only long enough to clone that `Arc`, then
//! reads at leisure. The hot path never touches this lock.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::sql::TableRef;

use super::event::Route;
use super::recorder::Shared;
use super::window::LatencySummary;

/// A hot key of one table.
#[derive(Clone, Debug, PartialEq)]
pub struct HotKey {
    pub table: Arc<TableRef>,
    /// The key's text as Postgres would print it.
    pub key: Box<str>,
    /// Decayed access count at the snapshot time: each access counts
    /// `2^(-age / half_life)`. Space-Saving may overestimate it, by at most `error`.
    pub score: f64,
    /// Upper bound of the overestimation in `score` (0 for keys tracked since the sketch
    /// had room); `score - error` is a guaranteed lower bound.
    pub error: f64,
    /// Exact reads and writes since this key last entered the sketch.
    pub reads: u64,
    pub writes: u64,
    pub last_seen: Instant,
}

/// One tracked table and its hottest keys.
#[derive(Clone, Debug, PartialEq)]
pub struct TableStats {
    pub table: Arc<TableRef>,
    /// Decayed key accesses (all keys, tracked or not).
    pub score: f64,
    /// Exact key accesses since the table was admitted.
    pub reads: u64,
    pub writes: u64,
    /// Keys in the table's sketch (at most `top_k_per_table`).
    pub tracked_keys: usize,
    pub last_seen: Instant,
    /// Hottest keys first, at most `snapshot_keys_per_table` of them.
    pub hot_keys: Vec<HotKey>,
}

/// Latency of one shape on one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteLatency {
    pub route: Route,
    /// Calls on this route since the shape was admitted.
    pub calls: u64,
    /// Over the previous complete window plus the current one (`latency.count` samples).
    pub latency: LatencySummary,
}

/// One query shape.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryStats {
    pub fingerprint: u64,
    /// Normalized text (literals replaced by `$?`), cut at `MAX_SHAPE_TEXT` bytes.
    pub normalized: Arc<str>,
    /// Statement kind name (`read`, `write`, ...).
    pub kind: &'static str,
    /// Decayed call count at the snapshot time (the sort order).
    pub score: f64,
    /// Cumulative since the shape was admitted (`first_seen`).
    pub calls: u64,
    pub rows: u64,
    pub errors: u64,
    pub first_seen: Instant,
    pub last_seen: Instant,
    /// Routes with latency samples in the visible windows, in `Route::ALL` order.
    pub routes: Vec<RouteLatency>,
}

/// Totals of one route over all shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteStats {
    pub route: Route,
    /// Cumulative since the aggregator started.
    pub calls: u64,
    pub rows: u64,
    pub errors: u64,
    /// Over the previous complete window plus the current one.
    pub latency: LatencySummary,
}

/// Health of the statistics pipeline itself. All counts are cumulative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsCounters {
    /// Events the aggregator applied.
    pub events: u64,
    /// Events dropped on the hot path because the queue was full.
    pub dropped_keys: u64,
    pub dropped_statements: u64,
    /// Keys not recorded because they (or their table name) exceeded `max_key_len`.
    pub oversized_keys: u64,
    /// Tables and shapes that lost their slot to a newcomer.
    pub evicted_tables: u64,
    pub evicted_shapes: u64,
    /// Events not counted because of a 64-bit hash collision with a tracked entry.
    pub untracked_keys: u64,
    pub untracked_statements: u64,
    /// Currently tracked.
    pub tables: usize,
    pub shapes: usize,
}

impl StatsCounters {
    pub fn dropped(&self) -> u64 {
        self.dropped_keys + self.dropped_statements
    }
}

/// Everything the aggregator knew at `taken_at`.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub taken_at: Instant,
    pub half_life: Duration,
    /// Latency summaries cover the previous complete window (this long) plus the current,
    /// partial one.
    pub window: Duration,
    /// Tables by decayed score, hottest first.
    pub tables: Vec<TableStats>,
    /// Shapes by decayed call count, busiest first (all tracked shapes).
    pub queries: Vec<QueryStats>,
    /// One entry per route, in `Route::ALL` order.
    pub routes: Vec<RouteStats>,
    pub counters: StatsCounters,
}

impl Snapshot {
    /// A snapshot with nothing recorded.
    pub fn empty(taken_at: Instant, half_life: Duration, window: Duration) -> Self {
        Snapshot {
            taken_at,
            half_life,
            window,
            tables: Vec::new(),
            queries: Vec::new(),
            routes: Vec::new(),
            counters: StatsCounters::default(),
        }
    }

    /// The hottest keys of `table` (or of all tables), hottest first. Limited to the
    /// `snapshot_keys_per_table` keys per table the snapshot holds; the aggregator's own
    /// `hot_keys` sees the whole sketch.
    pub fn hot_keys(&self, table: Option<&TableRef>, limit: usize) -> Vec<HotKey> {
        let mut keys: Vec<HotKey> = match table {
            Some(t) => self
                .tables
                .iter()
                .filter(|s| *s.table == *t)
                .flat_map(|s| s.hot_keys.iter().take(limit).cloned())
                .collect(),
            None => self
                .tables
                .iter()
                .flat_map(|s| s.hot_keys.iter().take(limit).cloned())
                .collect(),
        };
        sort_hot_keys(&mut keys);
        keys.truncate(limit);
        keys
    }

    /// The `limit` busiest shapes.
    pub fn queries(&self, limit: usize) -> &[QueryStats] {
        self.queries.get(..limit).unwrap_or(&self.queries)
    }

    pub fn routes(&self) -> &[RouteStats] {
        &self.routes
    }
}

/// Hottest first; ties by table and key so output is stable.
pub(crate) fn sort_hot_keys(keys: &mut [HotKey]) {
    keys.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.table.cmp(&b.table))
            .then_with(|| a.key.cmp(&b.key))
    });
}

/// Where readers get the latest [`Snapshot`]. Cheap to clone; `Send + Sync`.
#[derive(Clone, Debug)]
pub struct StatsHandle {
    slot: Arc<RwLock<Arc<Snapshot>>>,
    shared: Arc<Shared>,
}

impl StatsHandle {
    pub(crate) fn new(initial: Snapshot, shared: Arc<Shared>) -> Self {
        StatsHandle {
            slot: Arc::new(RwLock::new(Arc::new(initial))),
            shared,
        }
    }

    /// The latest published snapshot. Holds the lock only to clone an `Arc`.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let guard = self.slot.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&guard)
    }

    pub(crate) fn store(&self, snapshot: Arc<Snapshot>) {
        let mut guard = self.slot.write().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut *guard, snapshot);
        drop(guard);
        // The previous snapshot may be large; free it (if no reader holds it) unlocked.
        drop(old);
    }

    /// Events dropped on the hot path so far, live (not as of the last snapshot).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped_keys.load(Relaxed) + self.shared.dropped_statements.load(Relaxed)
    }
}
