//! The hot-path side: hands events to a bounded channel and returns.
//!
//! A session calls [`StatsRecorder::record_key`] for every key of a classified point read
//! or write and [`StatsRecorder::record_statement`] once per statement. Neither may slow the
//! query down, so each does a bounded amount of work: a length check, one allocation (key
//! events) or one reference-count increment (statement events), and one `try_send` on a
//! `std::sync::mpsc::sync_channel` (a lock-free array queue preallocated to
//! `channel_capacity`). When the queue is full, because the aggregator is behind, the event is
//! dropped and a relaxed atomic counter says so; nothing ever waits. Events carry no
//! timestamp: the aggregator stamps them when it drains (at most one drain interval later,
//! which against a 60 s half-life and window is noise) and the hot path saves a clock read.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use crate::sql::{Shape, TableRef};

use super::event::{Access, Event, KeyEvent, Route, StatementEvent};

/// Counters shared by every recorder clone and the aggregator.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) dropped_keys: AtomicU64,
    pub(crate) dropped_statements: AtomicU64,
    /// Key events not sent because the key or table name exceeded `max_key_len`.
    pub(crate) oversized_keys: AtomicU64,
}

/// Records accesses from sessions. Cheap to clone (one per session); `Send + Sync`.
#[derive(Clone, Debug)]
pub struct StatsRecorder {
    /// `None`: statistics are off and every call returns at once.
    tx: Option<SyncSender<Event>>,
    shared: Arc<Shared>,
    max_key_len: usize,
}

impl StatsRecorder {
    pub(crate) fn new(tx: SyncSender<Event>, shared: Arc<Shared>, max_key_len: usize) -> Self {
        StatsRecorder {
            tx: Some(tx),
            shared,
            max_key_len,
        }
    }

    /// A recorder that records nothing (statistics off), for configurations and benchmarks
    /// without an aggregator.
    pub fn disabled() -> Self {
        StatsRecorder {
            tx: None,
            shared: Arc::default(),
            max_key_len: 0,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Records one access of `key` (its text as Postgres would print it, e.g. from
    /// `KeyRef::as_text`) in `table`. Keys or table names longer than `max_key_len` bytes
    /// are not recorded (counted in `oversized_keys`): a hot key that long is no cache
    /// candidate, and the cap bounds what the queue and the sketches can hold.
    pub fn record_key(&self, table: &TableRef, key: &str, access: Access) {
        let Some(tx) = &self.tx else {
            return;
        };
        let schema = table.schema.as_deref();
        let table_len = schema.map_or(0, str::len) + table.name.len();
        if key.len() > self.max_key_len || table_len > self.max_key_len {
            self.shared.oversized_keys.fetch_add(1, Relaxed);
            return;
        }
        let Some(event) = KeyEvent::new(schema, &table.name, key, access) else {
            self.shared.oversized_keys.fetch_add(1, Relaxed);
            return;
        };
        if tx.try_send(Event::Key(event)).is_err() {
            self.shared.dropped_keys.fetch_add(1, Relaxed);
        }
    }

    /// Records one executed statement: where it was served, how long it took (from receipt
    /// to the last byte of the response), rows returned or affected, and whether it failed.
    /// The shape's fingerprint identifies it; its normalized text is copied only when the
    /// aggregator first sees the shape.
    pub fn record_statement(
        &self,
        shape: &Arc<Shape>,
        route: Route,
        latency: Duration,
        rows: u64,
        error: bool,
    ) {
        let Some(tx) = &self.tx else {
            return;
        };
        let event = Event::Statement(StatementEvent {
            shape: Arc::clone(shape),
            route,
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            rows,
            error,
        });
        if tx.try_send(event).is_err() {
            self.shared.dropped_statements.fetch_add(1, Relaxed);
        }
    }

    /// Events dropped because the queue was full (or the aggregator gone), keys and
    /// statements together.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped_keys.load(Relaxed) + self.shared.dropped_statements.load(Relaxed)
    }
}
