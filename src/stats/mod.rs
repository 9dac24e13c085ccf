//! Access statistics: which keys are hot, which query shapes run, how fast, on which route.
//!
//! ## Why
//!
//! Placement (which keys to serve from the cache, which predicates from the search store)
//! is decided from what the proxy observes, and operators need to see the same numbers
//! (`SHOW HOT_KEYS`, `SHOW QUERIES`, `SHOW ROUTES`, `/metrics`, the dashboard). Observing
//! must cost the query next to nothing and must never wait, and the statistics must fit in
//! memory fixed by configuration whatever the key space or the SQL clients send.
//!
//! ## Data flow
//!
//! ```text
//!  hot path (sessions)                  background task (StatsAggregator::run)
//!
//!  record_key ───────┐                  ┌▶ tables: a Space-Saving top-K sketch each
//!                    ├▶ bounded ─▶ drain ┼▶ shapes: calls, rows, errors, hdr latency per route
//!  record_statement ─┘   queue          └▶ routes: totals, hdr latency
//!    full queue: count as dropped,               │ drain every 50 ms, publish every interval
//!    move on, never wait                         ▼
//!                                   StatsHandle::snapshot() -> Arc<Snapshot>   (readers)
//! ```
//!
//! - [`recorder`]: the hot path. One length check, at most one allocation, one
//!   `try_send`; a full queue increments a counter ([`StatsRecorder::dropped`]).
//! - [`aggregator`]: the single writer; applies events stamped with the drain time, and
//!   publishes a [`Snapshot`] ([`StatsAggregator::run`] drains every 50 ms and publishes
//!   every interval).
//! - `decay`: exponential decay with a configurable half-life, done lazily with *forward
//!   decay* (weights grow instead of counters shrinking; one global epoch), so nothing is
//!   rescanned per tick and orders stay comparable.
//! - `topk`: Space-Saving, exactly `top_k_per_table` counters per table; `tables` and
//!   `shapes` bound the number of tables and shapes the same way (least used slot reused).
//! - `window`: latency histograms (hdrhistogram, µs, 2 significant digits) per shape and
//!   route and per route, kept for the current and the previous complete window and
//!   reported merged.
//! - [`snapshot`]: the read side, an `Arc<Snapshot>` behind a `RwLock` held only to clone
//!   the `Arc`.
//!
//! ## Scores
//!
//! A score is a decayed count: each access contributes `2^(-age / half_life)`. A key read
//! `r` times per second for a long time has a score of about `r · half_life / ln 2`
//! (≈ 86.6 · r with the default 60 s). Scores are Space-Saving estimates: an overestimate
//! by at most [`HotKey::error`].
//!
//! ## Memory bound
//!
//! - queue: `channel_capacity` × 48 bytes preallocated, plus per queued key event the
//!   table and key text (each capped at `max_key_len`);
//! - keys: `max_tables` × `top_k_per_table` × (about 100 bytes + key length), allocated as
//!   keys arrive;
//! - shapes: `max_shapes` × (about 300 bytes + normalized text up to 2 KiB), plus per shape
//!   and route used in the current or previous window, a histogram of about 4 KiB for
//!   latencies below 10 ms (up to about 13 KiB once a statement took an hour).

pub mod aggregator;
mod decay;
mod event;
mod hash;
mod heap;
pub mod recorder;
mod routes;
mod shapes;
pub mod snapshot;
mod tables;
mod topk;
mod window;

#[cfg(test)]
mod tests;

use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use aggregator::StatsAggregator;
pub use decay::decayed;
pub use event::{Access, Route};
pub use recorder::StatsRecorder;
pub use shapes::MAX_SHAPE_TEXT;
pub use snapshot::{
    HotKey, QueryStats, RouteLatency, RouteStats, Snapshot, StatsCounters, StatsHandle, TableStats,
};
pub use window::LatencySummary;

/// Largest accepted `channel_capacity`: the queue is preallocated (48 bytes a slot).
pub const MAX_CHANNEL_CAPACITY: usize = 1 << 24;

/// Largest accepted `max_key_len` (lengths travel as `u16`).
pub const MAX_KEY_LEN: usize = u16::MAX as usize - 1;

/// Limits and time constants of the statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsConfig {
    /// After this long without access, a key's (table's, shape's) score has halved.
    /// Default 60 s.
    pub half_life: Duration,
    /// Space-Saving counters per table: the most keys tracked per table. Keys whose decayed
    /// count exceeds 1/`top_k_per_table` of the table's are guaranteed to be tracked.
    /// Default 1000.
    pub top_k_per_table: usize,
    /// Tables tracked at once; the least used one makes room for a new one. Default 1000.
    pub max_tables: usize,
    /// Query shapes tracked at once, likewise. Default 10 000.
    pub max_shapes: usize,
    /// Events queued between the hot path and the aggregator; beyond, events are dropped
    /// and counted. Default 65 536 (drained every 50 ms: about 1.3M events/s; 3 MiB).
    pub channel_capacity: usize,
    /// Length of a latency window; summaries cover the previous complete window plus the
    /// current one. Default 60 s.
    pub window: Duration,
    /// Hot keys per table kept in each published [`Snapshot`]. Default 100.
    pub snapshot_keys_per_table: usize,
    /// Keys (and schema-plus-table names) longer than this many bytes are not recorded.
    /// Default 128.
    pub max_key_len: usize,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            half_life: Duration::from_secs(60),
            top_k_per_table: 1000,
            max_tables: 1000,
            max_shapes: 10_000,
            channel_capacity: 65_536,
            window: Duration::from_secs(60),
            snapshot_keys_per_table: 100,
            max_key_len: 128,
        }
    }
}

/// A [`StatsConfig`] that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatsConfigError {
    #[error("stats {0} must be greater than zero")]
    Zero(&'static str),
    #[error("stats {name} must be at most {max}")]
    TooLarge { name: &'static str, max: usize },
}

impl StatsConfig {
    pub fn validate(&self) -> Result<(), StatsConfigError> {
        let zero = [
            ("half_life", self.half_life.is_zero()),
            ("window", self.window.is_zero()),
            ("top_k_per_table", self.top_k_per_table == 0),
            ("max_tables", self.max_tables == 0),
            ("max_shapes", self.max_shapes == 0),
            ("channel_capacity", self.channel_capacity == 0),
            ("max_key_len", self.max_key_len == 0),
        ];
        if let Some(&(name, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(StatsConfigError::Zero(name));
        }
        let limits = [
            (
                "channel_capacity",
                self.channel_capacity,
                MAX_CHANNEL_CAPACITY,
            ),
            ("max_key_len", self.max_key_len, MAX_KEY_LEN),
            // Slot numbers are u32.
            ("top_k_per_table", self.top_k_per_table, u32::MAX as usize),
            ("max_tables", self.max_tables, u32::MAX as usize),
            ("max_shapes", self.max_shapes, u32::MAX as usize),
        ];
        if let Some(&(name, _, max)) = limits.iter().find(|(_, v, max)| v > max) {
            return Err(StatsConfigError::TooLarge { name, max });
        }
        Ok(())
    }
}

/// Creates the recorder (clone it into every session) and its aggregator (move it into a
/// background task running [`StatsAggregator::run`]; keep a [`StatsHandle`] for readers).
pub fn new(config: StatsConfig) -> Result<(StatsRecorder, StatsAggregator), StatsConfigError> {
    new_at(config, Instant::now())
}

/// [`new`] with the aggregator's clock starting at `now` (windows are aligned to it).
pub fn new_at(
    config: StatsConfig,
    now: Instant,
) -> Result<(StatsRecorder, StatsAggregator), StatsConfigError> {
    config.validate()?;
    let (tx, rx) = sync_channel(config.channel_capacity);
    let shared = Arc::new(recorder::Shared::default());
    let recorder = StatsRecorder::new(tx, Arc::clone(&shared), config.max_key_len);
    let seed = rand::random::<u64>();
    Ok((
        recorder,
        StatsAggregator::new(config, rx, shared, seed, now),
    ))
}
