//! The feed's shared state: what the streaming task has received and delivered, what the
//! consumer has acknowledged, and the status derived from both.
//!
//! Two positions matter and are kept apart on purpose:
//! - **acknowledged**: the `end_lsn` of the last transaction the consumer says it applied
//!   ([`super::FeedHandle::ack`]), clamped to what was actually delivered;
//! - **applied** (what the slot is confirmed up to): the acknowledged position, or, once every
//!   received transaction is acknowledged, the server's WAL end as reported by a keepalive that
//!   arrived outside a transaction (the heartbeat: WAL written by tables nobody watches does not
//!   pin the slot). It never moves backwards, so the slot is never confirmed lower than before.
//!
//! One `std::sync::Mutex` guards it all: critical sections are a few field updates, and the
//! consumer's `ack` must never wait on the network.

use super::event::TableName;
use super::lsn::Lsn;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// Where the feed is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedState {
    /// Setting up the publication, slot and connection for the first time.
    Starting,
    /// Connected and streaming changes.
    Streaming,
    /// The connection broke (or could not be made); retrying with back-off.
    Reconnecting,
    /// Shut down (or its consumer went away); it will not deliver again.
    Stopped,
}

impl FeedState {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedState::Starting => "starting",
            FeedState::Streaming => "streaming",
            FeedState::Reconnecting => "reconnecting",
            FeedState::Stopped => "stopped",
        }
    }
}

/// A snapshot of the feed for metrics, `SHOW STORES` and the stores' trust decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedStatus {
    pub state: FeedState,
    pub slot: String,
    pub publication: String,
    /// Tables in the publication (those asked for that exist and have a replica identity).
    pub tables: Vec<TableName>,
    /// The slot is confirmed up to here: every transaction committed before it has been
    /// delivered to and acknowledged by the consumer.
    pub applied_lsn: Lsn,
    /// `end_lsn` of the last transaction the consumer acknowledged.
    pub acked_lsn: Lsn,
    /// `end_lsn` of the last transaction handed to the consumer's channel.
    pub delivered_lsn: Lsn,
    /// How far the server's walsender had read the WAL, as of its last message.
    pub server_wal_end: Lsn,
    /// `server_wal_end - applied_lsn`: WAL the consumer has not caught up with (0 when caught
    /// up). Counts only what the walsender has read, not WAL it has yet to decode.
    pub lag_bytes: u64,
    /// Age (now minus server commit time) of the oldest transaction the feed has received but
    /// the consumer has not acknowledged; 0 when there is none. It does not see transactions
    /// the server has not sent yet (a broken feed shows `state`, not lag), and it compares the
    /// server's clock with ours.
    pub lag_ms: u64,
    /// Milliseconds since the last message from the server (`None` before the first). The feed
    /// pings every `status_interval`, so a healthy feed stays near or below that.
    pub silence_ms: Option<u64>,
    /// Reset events sent so far.
    pub resets: u64,
    /// Transactions and changes delivered so far (empty transactions are not delivered).
    pub transactions: u64,
    pub changes: u64,
    /// The last error that broke (or kept from starting) a replication session.
    pub last_error: Option<String>,
    /// ParameterStatus of the replication connection (`TimeZone`, `DateStyle`, ...): the
    /// settings under which the text values in changes were produced.
    pub server_params: BTreeMap<String, String>,
}

/// [`FeedStatus`]'s serving-relevant part, cheap enough to read per statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedHealth {
    pub state: FeedState,
    pub applied_lsn: Lsn,
    pub lag_ms: u64,
    pub silence_ms: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub state: FeedState,
    /// Highest position known to be safe besides `acked`: the slot's confirmed position when
    /// the feed attached, and idle positions once everything before them was acknowledged.
    pub floor: Lsn,
    pub acked: Lsn,
    pub delivered: Lsn,
    /// `end_lsn` of the last transaction received (delivered or still queued).
    pub received: Lsn,
    /// Server WAL end reported while no transaction was open: every commit before it has been
    /// received.
    pub idle_wal_end: Lsn,
    pub server_wal_end: Lsn,
    /// Received, not yet acknowledged transactions: `(end_lsn, commit time)`, oldest first.
    pub inflight: VecDeque<(Lsn, SystemTime)>,
    pub last_message: Option<Instant>,
    pub resets: u64,
    pub transactions: u64,
    pub changes: u64,
    pub last_error: Option<String>,
    pub requested_tables: Vec<TableName>,
    pub published_tables: Vec<TableName>,
    pub server_params: BTreeMap<String, String>,
    /// Set when the publication had to be created while a slot existed: decoding would fail
    /// on the gap, so the next session recreates the slot.
    pub recreate_slot: bool,
}

impl Inner {
    /// See the module docs. Never moves backwards: an idle position, once earned, stays
    /// valid (later transactions all end after it).
    pub fn applied(&self) -> Lsn {
        self.floor.max(self.acked)
    }

    /// Folds the idle WAL end into the floor once nothing received is unacknowledged.
    pub fn settle(&mut self) {
        if self.inflight.is_empty() {
            self.floor = self.floor.max(self.idle_wal_end);
        }
    }
}

pub(crate) struct Shared {
    pub slot: String,
    pub publication: String,
    inner: Mutex<Inner>,
    state_tx: watch::Sender<FeedState>,
}

impl Shared {
    pub fn new(slot: String, publication: String, tables: Vec<TableName>) -> Self {
        let (state_tx, _) = watch::channel(FeedState::Starting);
        Shared {
            slot,
            publication,
            inner: Mutex::new(Inner {
                state: FeedState::Starting,
                floor: Lsn::ZERO,
                acked: Lsn::ZERO,
                delivered: Lsn::ZERO,
                received: Lsn::ZERO,
                idle_wal_end: Lsn::ZERO,
                server_wal_end: Lsn::ZERO,
                inflight: VecDeque::new(),
                last_message: None,
                resets: 0,
                transactions: 0,
                changes: 0,
                last_error: None,
                requested_tables: tables,
                published_tables: Vec::new(),
                server_params: BTreeMap::new(),
                recreate_slot: false,
            }),
            state_tx,
        }
    }

    /// The state, recovering from a poisoned lock (a panic elsewhere must not stop acks).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_state(&self, state: FeedState) {
        self.lock().state = state;
        self.state_tx.send_replace(state);
    }

    pub fn subscribe_state(&self) -> watch::Receiver<FeedState> {
        self.state_tx.subscribe()
    }

    /// The consumer applied everything up to `lsn` (clamped to what was delivered).
    pub fn ack(&self, lsn: Lsn) {
        let mut s = self.lock();
        let lsn = lsn.min(s.delivered);
        if lsn > s.acked {
            s.acked = lsn;
        }
        let acked = s.acked;
        while s.inflight.front().is_some_and(|(end, _)| *end <= acked) {
            s.inflight.pop_front();
        }
        s.settle();
    }

    /// Any message from the server: the connection is alive and the server is at `wal_end`.
    pub fn saw_server(&self, wal_end: Option<Lsn>) {
        let mut s = self.lock();
        s.last_message = Some(Instant::now());
        if let Some(w) = wal_end {
            s.server_wal_end = s.server_wal_end.max(w);
        }
    }

    /// The server is at `wal_end` and no transaction is open: all commits before it are here.
    pub fn idle_at(&self, wal_end: Lsn) {
        let mut s = self.lock();
        s.idle_wal_end = s.idle_wal_end.max(wal_end);
        s.settle();
    }

    /// The few fields a serving decision needs, without copying lists.
    pub fn health(&self) -> FeedHealth {
        let s = self.lock();
        let lag_ms = s.inflight.front().map_or(0, |(_, commit_time)| {
            SystemTime::now()
                .duration_since(*commit_time)
                .unwrap_or(Duration::ZERO)
                .as_millis() as u64
        });
        FeedHealth {
            state: s.state,
            applied_lsn: s.applied(),
            lag_ms,
            silence_ms: s.last_message.map(|t| t.elapsed().as_millis() as u64),
        }
    }

    pub fn status(&self) -> FeedStatus {
        let s = self.lock();
        let applied = s.applied();
        let now = SystemTime::now();
        let lag_ms = s.inflight.front().map_or(0, |(_, commit_time)| {
            now.duration_since(*commit_time)
                .unwrap_or(Duration::ZERO)
                .as_millis() as u64
        });
        FeedStatus {
            state: s.state,
            slot: self.slot.clone(),
            publication: self.publication.clone(),
            tables: s.published_tables.clone(),
            applied_lsn: applied,
            acked_lsn: s.acked,
            delivered_lsn: s.delivered,
            server_wal_end: s.server_wal_end,
            lag_bytes: s.server_wal_end.bytes_after(applied),
            lag_ms,
            silence_ms: s.last_message.map(|t| t.elapsed().as_millis() as u64),
            resets: s.resets,
            transactions: s.transactions,
            changes: s.changes,
            last_error: s.last_error.clone(),
            server_params: s.server_params.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new("s".into(), "p".into(), Vec::new())
    }

    #[test]
    fn acks_are_clamped_to_delivered_and_monotonic() {
        let sh = shared();
        {
            let mut s = sh.lock();
            s.inflight.push_back((Lsn(10), SystemTime::now()));
            s.inflight.push_back((Lsn(20), SystemTime::now()));
            s.delivered = Lsn(10);
            s.server_wal_end = Lsn(20);
        }
        sh.ack(Lsn(99));
        let st = sh.status();
        assert_eq!(st.acked_lsn, Lsn(10));
        assert_eq!(st.applied_lsn, Lsn(10));
        assert_eq!(st.lag_bytes, 10);
        sh.ack(Lsn(5));
        assert_eq!(sh.status().acked_lsn, Lsn(10));
    }

    #[test]
    fn idle_wal_end_counts_only_when_nothing_is_outstanding() {
        let sh = shared();
        let old = SystemTime::now() - Duration::from_secs(2);
        {
            let mut s = sh.lock();
            s.inflight.push_back((Lsn(10), old));
            s.delivered = Lsn(10);
        }
        sh.saw_server(Some(Lsn(50)));
        sh.idle_at(Lsn(50));
        let st = sh.status();
        assert_eq!(st.applied_lsn, Lsn(0));
        assert!(st.lag_ms >= 2000, "{}", st.lag_ms);
        sh.ack(Lsn(10));
        let st = sh.status();
        assert_eq!(st.applied_lsn, Lsn(50));
        assert_eq!((st.lag_bytes, st.lag_ms), (0, 0));
        // A new unacknowledged transaction does not move the applied position back.
        {
            let mut s = sh.lock();
            s.inflight.push_back((Lsn(60), SystemTime::now()));
            s.delivered = Lsn(60);
        }
        sh.saw_server(Some(Lsn(60)));
        let st = sh.status();
        assert_eq!(st.applied_lsn, Lsn(50));
        assert_eq!(st.lag_bytes, 10);
    }

    #[test]
    fn state_changes_are_published() {
        let sh = shared();
        let rx = sh.subscribe_state();
        sh.set_state(FeedState::Streaming);
        assert_eq!(*rx.borrow(), FeedState::Streaming);
        assert_eq!(sh.status().state, FeedState::Streaming);
        assert_eq!(FeedState::Stopped.as_str(), "stopped");
    }
}
