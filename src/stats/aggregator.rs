//! The off-hot-path side: drains the queue, updates the sketches, publishes snapshots.
//!
//! One aggregator per proxy, owned by one background task ([`StatsAggregator::run`]); it is
//! the only writer of every structure here, so nothing needs a lock. Events are stamped
//! with the drain time. Time is a parameter of [`StatsAggregator::drain_at`], so tests drive
//! the clock; a clock that goes backwards is treated as standing still.

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::sql::TableRef;

use super::decay::DecayClock;
use super::event::Event;
use super::recorder::Shared;
use super::routes::RouteSet;
use super::shapes::{ShapeSet, ShapeSlot};
use super::snapshot::{
    sort_hot_keys, HotKey, QueryStats, RouteLatency, RouteStats, Snapshot, StatsCounters,
    StatsHandle, TableStats,
};
use super::tables::{TableSet, TableSlot};
use super::StatsConfig;

/// Events applied between two yields of [`StatsAggregator::run`], so a full queue does not
/// hold a runtime worker for long (4096 events take well under a millisecond).
const DRAIN_BATCH: usize = 4096;

/// How often [`StatsAggregator::run`] drains the queue (snapshots are published every
/// `interval`, 1 s by default): 65,536 queued events per 50 ms carry about 1.3M events/s.
const DRAIN_PERIOD: Duration = Duration::from_millis(50);

/// While no event arrives, a snapshot is published only every this many intervals.
const IDLE_PUBLISH_EVERY: u32 = 10;

/// Publishing waits at least this many times as long as the previous one took (a snapshot
/// of 100k keys per table takes tens of milliseconds).
const PUBLISH_COST_FACTOR: u32 = 50;

/// Minimum time between two "statistics dropped" warnings.
const DROP_WARN_EVERY: Duration = Duration::from_secs(60);

pub struct StatsAggregator {
    config: StatsConfig,
    rx: Receiver<Event>,
    shared: Arc<Shared>,
    handle: StatsHandle,
    decay: DecayClock,
    /// Windows are aligned to this instant.
    start: Instant,
    /// Index of the current window.
    window: u64,
    /// Time of the latest drain: "now" for everything read.
    now: Instant,
    /// `decay.weight(now)`, computed once per drain.
    weight: f64,
    tables: TableSet,
    shapes: ShapeSet,
    routes: RouteSet,
    events: u64,
}

impl std::fmt::Debug for StatsAggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsAggregator")
            .field("tables", &self.tables.len())
            .field("shapes", &self.shapes.len())
            .field("events", &self.events)
            .finish()
    }
}

impl StatsAggregator {
    pub(crate) fn new(
        config: StatsConfig,
        rx: Receiver<Event>,
        shared: Arc<Shared>,
        seed: u64,
        now: Instant,
    ) -> Self {
        let handle = StatsHandle::new(
            Snapshot::empty(now, config.half_life, config.window),
            Arc::clone(&shared),
        );
        StatsAggregator {
            decay: DecayClock::new(now, config.half_life),
            tables: TableSet::new(config.max_tables, config.top_k_per_table, seed),
            shapes: ShapeSet::new(config.max_shapes),
            routes: RouteSet::default(),
            config,
            rx,
            shared,
            handle,
            start: now,
            window: 0,
            now,
            weight: 1.0,
            events: 0,
        }
    }

    /// Where readers get published snapshots.
    pub fn handle(&self) -> StatsHandle {
        self.handle.clone()
    }

    pub fn config(&self) -> &StatsConfig {
        &self.config
    }

    /// The time statistics are read at: that of the latest drain.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Applies every pending event, stamped now. Returns how many.
    pub fn drain(&mut self) -> usize {
        self.drain_at(Instant::now(), usize::MAX)
    }

    /// Applies at most `max_events` pending events, stamped `now`. Returns how many.
    pub fn drain_at(&mut self, now: Instant, max_events: usize) -> usize {
        self.advance(now);
        let mut n = 0;
        while n < max_events {
            let Ok(event) = self.rx.try_recv() else {
                break;
            };
            self.apply(event);
            n += 1;
        }
        self.events += n as u64;
        n
    }

    /// Moves the clock: rebases decay weights when due, rolls windows when one ended.
    fn advance(&mut self, now: Instant) {
        let now = now.max(self.now);
        self.now = now;
        if let Some(factor) = self.decay.rebase(now) {
            self.tables.scale(factor);
            self.shapes.scale(factor);
        }
        self.weight = self.decay.weight(now);
        let window = window_index(self.start, now, self.config.window);
        if window > self.window {
            self.window = window;
            self.shapes.roll(window);
            self.routes.roll(window);
        }
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Key(k) => self
                .tables
                .offer(k.parts(), k.access, self.weight, self.now),
            Event::Statement(s) => {
                self.shapes.record(&s, self.weight, self.window, self.now);
                self.routes.record(&s, self.window);
            }
        }
    }

    /// The hottest keys of `table` (all tables when `None`), hottest first, from the full
    /// sketches.
    pub fn hot_keys(&self, table: Option<&TableRef>, limit: usize) -> Vec<HotKey> {
        let mut keys = match table {
            Some(t) => match self.tables.get(t) {
                Some((slot, _)) => self.table_hot_keys(slot, limit),
                None => Vec::new(),
            },
            None => self
                .tables
                .iter()
                .flat_map(|(slot, _)| self.table_hot_keys(slot, limit))
                .collect(),
        };
        sort_hot_keys(&mut keys);
        keys.truncate(limit);
        keys
    }

    fn table_hot_keys(&self, t: &TableSlot, limit: usize) -> Vec<HotKey> {
        t.keys
            .top(limit)
            .into_iter()
            .map(|(c, stored)| HotKey {
                table: Arc::clone(&t.table),
                key: c.key.as_str().into(),
                score: self.score(stored),
                error: self.score(c.error),
                reads: c.reads,
                writes: c.writes,
                last_seen: c.last_seen,
            })
            .collect()
    }

    /// Every tracked table, hottest first, each with its `keys_per_table` hottest keys.
    pub fn tables(&self, keys_per_table: usize) -> Vec<TableStats> {
        let mut tables: Vec<(&TableSlot, f64)> = self.tables.iter().collect();
        tables.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.table.cmp(&b.0.table)));
        tables
            .into_iter()
            .map(|(t, stored)| TableStats {
                table: Arc::clone(&t.table),
                score: self.score(stored),
                reads: t.reads,
                writes: t.writes,
                tracked_keys: t.keys.len(),
                last_seen: t.last_seen,
                hot_keys: self.table_hot_keys(t, keys_per_table),
            })
            .collect()
    }

    /// The `limit` busiest shapes by decayed call count.
    pub fn queries(&self, limit: usize) -> Vec<QueryStats> {
        if limit == 0 {
            return Vec::new();
        }
        let mut shapes: Vec<(&ShapeSlot, f64)> = self.shapes.iter().collect();
        let order = |a: &(&ShapeSlot, f64), b: &(&ShapeSlot, f64)| {
            b.1.total_cmp(&a.1)
                .then_with(|| a.0.fingerprint.cmp(&b.0.fingerprint))
        };
        if limit < shapes.len() {
            shapes.select_nth_unstable_by(limit - 1, order);
            shapes.truncate(limit);
        }
        shapes.sort_by(order);
        shapes
            .into_iter()
            .map(|(s, stored)| QueryStats {
                fingerprint: s.fingerprint,
                normalized: Arc::clone(&s.normalized),
                kind: s.kind,
                score: self.score(stored),
                calls: s.calls,
                rows: s.rows,
                errors: s.errors,
                first_seen: s.first_seen,
                last_seen: s.last_seen,
                routes: s
                    .routes(self.window)
                    .into_iter()
                    .map(|(route, latency)| RouteLatency {
                        route,
                        calls: s.route_calls.get(route.index()).copied().unwrap_or(0),
                        latency,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Totals per route, in `Route::ALL` order.
    pub fn routes(&self) -> Vec<RouteStats> {
        self.routes.stats(self.window)
    }

    pub fn counters(&self) -> StatsCounters {
        use std::sync::atomic::Ordering::Relaxed;
        StatsCounters {
            events: self.events,
            dropped_keys: self.shared.dropped_keys.load(Relaxed),
            dropped_statements: self.shared.dropped_statements.load(Relaxed),
            oversized_keys: self.shared.oversized_keys.load(Relaxed),
            evicted_tables: self.tables.evicted,
            evicted_shapes: self.shapes.evicted,
            untracked_keys: self.tables.untracked,
            untracked_statements: self.shapes.untracked,
            tables: self.tables.len(),
            shapes: self.shapes.len(),
        }
    }

    /// Everything, as of the latest drain.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            taken_at: self.now,
            half_life: self.config.half_life,
            window: self.config.window,
            tables: self.tables(self.config.snapshot_keys_per_table),
            queries: self.queries(usize::MAX),
            routes: self.routes(),
            counters: self.counters(),
        }
    }

    /// Builds a snapshot and makes it the one [`StatsHandle::snapshot`] returns.
    pub fn publish(&self) {
        self.handle.store(Arc::new(self.snapshot()));
    }

    /// The background task: drains the queue every [`DRAIN_PERIOD`] (or `interval`, if
    /// shorter), in batches with yields between them, and publishes a snapshot every
    /// `interval` — while nothing arrives, only every [`IDLE_PUBLISH_EVERY`] intervals (the
    /// counts only decay meanwhile), and never so often that publishing (which copies every
    /// tracked key) takes more than 1/[`PUBLISH_COST_FACTOR`] of the time. On shutdown
    /// (`true` sent, or the sender dropped) it drains and publishes once more, then returns.
    ///
    /// Draining more often than publishing is what lets a bounded queue carry a busy proxy:
    /// a queue drained once a second drops everything past its capacity in that second
    /// (at 100k statements/s, most of them), which skews the scores placement reads.
    /// Each drain takes at most `channel_capacity` events: if producers outpace the
    /// aggregator, the queue stays full and the excess is dropped and counted on the hot
    /// path, rather than this task never getting to publish.
    pub async fn run(mut self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let interval = interval.max(Duration::from_millis(1));
        let mut tick = tokio::time::interval(interval.min(DRAIN_PERIOD));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut warned: Option<(Instant, u64)> = None;
        let mut published = Instant::now();
        let mut published_events = 0u64;
        let mut publish_took = Duration::ZERO;
        let mut stop = *shutdown.borrow();
        loop {
            if !stop {
                stop = tokio::select! {
                    _ = tick.tick() => false,
                    changed = shutdown.changed() => changed.is_err() || *shutdown.borrow(),
                };
            }
            let mut budget = self.config.channel_capacity;
            loop {
                let n = self.drain_at(Instant::now(), DRAIN_BATCH.min(budget));
                budget = budget.saturating_sub(n);
                if n < DRAIN_BATCH || budget == 0 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let since = self.now.saturating_duration_since(published);
            let due = since >= interval
                && (self.events != published_events || since >= interval * IDLE_PUBLISH_EVERY)
                && since >= publish_took * PUBLISH_COST_FACTOR;
            if stop || due {
                let started = Instant::now();
                published = self.now;
                published_events = self.events;
                self.publish();
                publish_took = started.elapsed();
                warned = self.warn_if_dropping(warned);
            }
            if stop {
                break;
            }
        }
    }

    /// Logs a warning when events were dropped, at most once per [`DROP_WARN_EVERY`].
    fn warn_if_dropping(&self, warned: Option<(Instant, u64)>) -> Option<(Instant, u64)> {
        let dropped = self.handle.dropped();
        let since = warned.map_or(0, |(_, d)| d);
        let due =
            warned.is_none_or(|(at, _)| self.now.saturating_duration_since(at) >= DROP_WARN_EVERY);
        if dropped > since && due {
            tracing::warn!(
                dropped = dropped - since,
                total = dropped,
                "statistics queue full: events dropped (queries were not delayed)"
            );
            return Some((self.now, dropped));
        }
        warned
    }

    /// Stored (forward-decayed) value → score at the latest drain.
    fn score(&self, stored: f64) -> f64 {
        stored / self.weight
    }
}

/// Which window `now` falls in (windows of length `window` from `start`).
fn window_index(start: Instant, now: Instant, window: Duration) -> u64 {
    let w = window.as_nanos().max(1);
    u64::try_from(now.saturating_duration_since(start).as_nanos() / w).unwrap_or(u64::MAX)
}
