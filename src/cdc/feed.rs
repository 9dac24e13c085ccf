//! The change feed component: owns the publication, the slot and the replication session,
//! reconnects with back-off, and hands the consumer whole transactions and resets.
//!
//! Acknowledgement: delivery into the channel is *not* treated as applied. The consumer calls
//! [`FeedHandle::ack`] with a transaction's `end_lsn` once it has applied it (and everything
//! before it); only then may the slot be confirmed past it. A crash between delivery and ack
//! therefore re-delivers on restart (at-least-once across restarts, exactly-once within one
//! feed's life), and nothing acknowledged is ever sent again.
//!
//! Resets: a [`FeedEvent::Reset`] is queued when a streaming session breaks (the stores missed
//! nothing yet, but they are not being kept fresh until the feed is back), when the slot had
//! to be created or recreated (changes before it are unknown), when someone else moved the
//! slot, and when the stream could not be decoded. Repeated failures while reconnecting do not
//! repeat the reset.

use super::assemble::{AssembleError, Assembler};
use super::conn::ReplConnection;
use super::event::{FeedEvent, ResetReason, TableName};
use super::lsn::Lsn;
use super::setup::{self, PublicationOutcome};
use super::status::{FeedHealth, FeedState, FeedStatus, Shared};
use super::stream::{self, Outbox, SessionEnd};
use super::CdcError;
use crate::config::ChangeFeedSettings;
use crate::context::ProxyContext;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// Events buffered in the consumer's channel.
pub const CHANNEL_CAPACITY: usize = 256;
/// First reconnect delay; doubles per failure up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a stopping feed waits for the server to confirm the end of the stream.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on setting up one session (side queries, connect, slot creation, START).
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts change feeds.
pub struct ChangeFeed;

impl ChangeFeed {
    /// Starts a feed for `tables` with the `[change_feed]` settings of `ctx`. The task runs
    /// until `shutdown` turns true (or its sender is dropped) or the receiver is dropped.
    pub fn start(
        ctx: Arc<ProxyContext>,
        tables: Vec<TableName>,
        shutdown: watch::Receiver<bool>,
    ) -> (FeedHandle, mpsc::Receiver<FeedEvent>) {
        let settings = ctx.config.change_feed.clone();
        Self::start_with(ctx, settings, tables, shutdown)
    }

    /// [`ChangeFeed::start`] with explicit settings (another slot, say).
    pub fn start_with(
        ctx: Arc<ProxyContext>,
        settings: ChangeFeedSettings,
        tables: Vec<TableName>,
        shutdown: watch::Receiver<bool>,
    ) -> (FeedHandle, mpsc::Receiver<FeedEvent>) {
        let shared = Arc::new(Shared::new(
            settings.slot.clone(),
            settings.publication.clone(),
            normalize(tables),
        ));
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let handle = FeedHandle {
            ctx: ctx.clone(),
            shared: shared.clone(),
            pub_lock: Arc::new(tokio::sync::Mutex::new(())),
        };
        let task = FeedTask {
            ctx,
            settings,
            shared,
            pub_lock: handle.pub_lock.clone(),
            outbox: Outbox::new(tx),
            assembler: None,
            shutdown,
            seen_slot: false,
            max_confirmed: Lsn::ZERO,
        };
        tokio::spawn(task.run());
        (handle, rx)
    }
}

fn normalize(mut tables: Vec<TableName>) -> Vec<TableName> {
    tables.sort();
    tables.dedup();
    tables
}

/// Cheap to clone; every clone controls the same feed.
#[derive(Clone)]
pub struct FeedHandle {
    ctx: Arc<ProxyContext>,
    shared: Arc<Shared>,
    /// Serializes publication changes between `set_tables` and session set-up.
    pub_lock: Arc<tokio::sync::Mutex<()>>,
}

/// What [`FeedHandle::set_tables`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablesChanged {
    /// Tables now published.
    pub tables: Vec<TableName>,
    /// Tables asked for but not published, with the reason (missing, no replica identity).
    pub skipped: Vec<(TableName, String)>,
    /// The server's WAL position after the change: changes to newly added tables are
    /// delivered from here on, so rows read at or after it can be kept fresh by the feed.
    pub from_lsn: Lsn,
}

impl FeedHandle {
    /// The consumer has applied every delivered transaction whose `end_lsn` is at most `lsn`.
    /// Never waits. Positions beyond what was delivered are clamped to it.
    pub fn ack(&self, lsn: Lsn) {
        self.shared.ack(lsn);
    }

    pub fn status(&self) -> FeedStatus {
        self.shared.status()
    }

    /// State, applied position, lag and silence: what a serving decision reads.
    pub fn health(&self) -> FeedHealth {
        self.shared.health()
    }

    /// The tables the feed was asked to watch.
    pub fn tables(&self) -> Vec<TableName> {
        self.shared.lock().requested_tables.clone()
    }

    /// Changes the watched tables: updates the publication now (the running session picks
    /// the change up in WAL order, no reconnect) and remembers the set for later sessions.
    pub async fn set_tables(&self, tables: Vec<TableName>) -> Result<TablesChanged, CdcError> {
        let tables = normalize(tables);
        self.shared.lock().requested_tables = tables.clone();
        tokio::time::timeout(SETUP_TIMEOUT, self.publish(tables))
            .await
            .map_err(|_| {
                CdcError::Timeout(format!(
                    "changing the publication took over {SETUP_TIMEOUT:?}"
                ))
            })?
    }

    async fn publish(&self, tables: Vec<TableName>) -> Result<TablesChanged, CdcError> {
        let _guard = self.pub_lock.lock().await;
        let client = crate::side::connect(&self.ctx).await?;
        let outcome = setup::ensure_publication(&client, &self.shared.publication, &tables).await?;
        let from_lsn = setup::current_wal_lsn(&client).await?;
        let mut s = self.shared.lock();
        if outcome.created {
            // The running slot would fail on the gap where the publication did not exist.
            s.recreate_slot = true;
        }
        s.published_tables = outcome.tables.clone();
        Ok(TablesChanged {
            tables: outcome.tables,
            skipped: outcome.skipped,
            from_lsn,
        })
    }

    /// Waits until the feed is in `state` (returns at once if it already is).
    pub async fn wait_for(&self, state: FeedState) {
        let mut rx = self.shared.subscribe_state();
        let _ = rx.wait_for(|s| *s == state).await;
    }
}

struct FeedTask {
    ctx: Arc<ProxyContext>,
    settings: ChangeFeedSettings,
    shared: Arc<Shared>,
    pub_lock: Arc<tokio::sync::Mutex<()>>,
    outbox: Outbox,
    /// Created on first use so `max_transaction_changes` comes from the settings.
    assembler: Option<Assembler>,
    shutdown: watch::Receiver<bool>,
    /// A slot has existed during this feed's life (a missing slot is then "lost").
    seen_slot: bool,
    /// Highest position this feed has confirmed (to detect a slot moved by someone else).
    max_confirmed: Lsn,
}

/// How a failed session should be reported.
enum Failure {
    /// Before streaming started: retry quietly.
    Setup(CdcError),
    /// While streaming: continuity is lost.
    Stream(CdcError),
}

impl FeedTask {
    async fn run(mut self) {
        let mut backoff = BACKOFF_START;
        info!(slot = %self.settings.slot, publication = %self.settings.publication, "change feed starting");
        loop {
            if *self.shutdown.borrow() {
                break;
            }
            match self.session().await {
                Ok(SessionEnd::Shutdown) => break,
                Ok(SessionEnd::ConsumerGone) => {
                    info!(slot = %self.settings.slot, "change feed consumer gone; stopping");
                    break;
                }
                Err(failure) => {
                    let (error, streamed) = match failure {
                        Failure::Setup(e) => (e, false),
                        Failure::Stream(e) => (e, true),
                    };
                    warn!(slot = %self.settings.slot, error = %error, retry_in = ?backoff, "change feed session failed");
                    self.shared.lock().last_error = Some(error.to_string());
                    if streamed {
                        backoff = BACKOFF_START;
                        self.reset(reset_reason(&error));
                    }
                    if self.shared.lock().state != FeedState::Starting {
                        self.shared.set_state(FeedState::Reconnecting);
                    }
                    if !self.pause(backoff).await {
                        break;
                    }
                    backoff = next_backoff(backoff);
                }
            }
        }
        self.shared.set_state(FeedState::Stopped);
        info!(slot = %self.settings.slot, "change feed stopped");
    }

    /// Sleeps `delay` (with jitter) while still delivering queued events; false on shutdown
    /// or when the consumer is gone.
    async fn pause(&mut self, delay: Duration) -> bool {
        let jitter = rand::random::<f64>() * 0.2 + 0.9;
        let sleep = tokio::time::sleep(delay.mul_f64(jitter));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        return false;
                    }
                }
                delivered = self.outbox.deliver_one(&self.shared) => {
                    if delivered.is_err() {
                        return false;
                    }
                }
            }
        }
    }

    fn reset(&mut self, reason: ResetReason) {
        warn!(slot = %self.settings.slot, reason = %reason, "change feed reset: stores must be flushed");
        self.shared.lock().resets += 1;
        self.outbox.push(FeedEvent::Reset { reason });
    }

    /// Sets up and runs one replication session.
    async fn session(&mut self) -> Result<SessionEnd, Failure> {
        // Set-up can wait on the server (slot creation waits for running transactions to
        // end), so it is bounded and gives way to shutdown.
        let mut shutdown = self.shutdown.clone();
        let attached = tokio::select! {
            attached = tokio::time::timeout(SETUP_TIMEOUT, self.attach()) => attached,
            _ = shutdown.wait_for(|stop| *stop) => return Ok(SessionEnd::Shutdown),
        };
        let mut conn = match attached {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(Failure::Setup(e)),
            Err(_) => {
                return Err(Failure::Setup(CdcError::Timeout(format!(
                    "setting up the replication session took over {SETUP_TIMEOUT:?}"
                ))))
            }
        };
        self.shared.set_state(FeedState::Streaming);
        info!(slot = %self.settings.slot, "change feed streaming");
        let assembler = self
            .assembler
            .get_or_insert_with(|| Assembler::new(self.settings.max_transaction_changes));
        assembler.new_session(conn.output.clone());
        let result = stream::run(
            &mut conn,
            &self.shared,
            &mut self.outbox,
            assembler,
            self.settings.status_interval,
            self.settings.timeout,
            &mut self.shutdown,
        )
        .await;
        let applied = self.shared.lock().applied();
        self.max_confirmed = self.max_confirmed.max(applied);
        match result {
            Ok(end) => {
                conn.finish_streaming(FINISH_TIMEOUT).await;
                conn.terminate().await;
                Ok(end)
            }
            Err(e) => Err(Failure::Stream(e)),
        }
    }

    /// Publication, slot, connection, `START_REPLICATION`.
    async fn attach(&mut self) -> Result<ReplConnection, CdcError> {
        let slot = self.settings.slot.clone();
        let publication = self.settings.publication.clone();
        let (pub_outcome, slot_info) = {
            let _guard = self.pub_lock.lock().await;
            let client = crate::side::connect(&self.ctx).await?;
            let tables = self.shared.lock().requested_tables.clone();
            let outcome: PublicationOutcome =
                setup::ensure_publication(&client, &publication, &tables).await?;
            let mut info = setup::slot_info(&client, &slot).await?;
            if let Some(i) = &info {
                setup::check_slot_is_ours(&slot, i, &self.ctx.upstream.database)?;
                let recreate = self.shared.lock().recreate_slot;
                let lost = i.wal_status.as_deref() == Some("lost");
                if outcome.created || recreate || lost {
                    warn!(
                        slot,
                        lost,
                        publication_created = outcome.created || recreate,
                        "dropping the replication slot to recreate it"
                    );
                    setup::drop_slot(&client, &slot).await?;
                    info = None;
                    self.seen_slot = true;
                }
            }
            if info.is_none() {
                // A fresh slot is created below: it starts after the publication exists.
                self.shared.lock().recreate_slot = false;
            }
            self.shared.lock().published_tables = outcome.tables.clone();
            (outcome, info)
        };
        debug!(tables = pub_outcome.tables.len(), "publication ready");

        let mut conn = ReplConnection::connect(&self.ctx).await?;
        let system = conn.identify_system().await?;
        // The settings text output depends on, as this session has them (role and database
        // defaults included), pinned so a configuration reload cannot change them mid-stream
        // (a reported one would not even be reported then): what the text values of its
        // changes are printed under.
        // A server that refuses (a locale `SET` cannot take back, say) leaves the session
        // without them: its changes then only invalidate.
        let names = crate::cache::profile::REPORTED
            .iter()
            .chain(crate::cache::profile::UNREPORTED.iter());
        let mut pinned = true;
        for name in names {
            match conn.pin_setting(name).await {
                Ok(_) => {}
                Err(e @ CdcError::Server { .. }) => {
                    warn!(setting = name, error = %e, "change feed: cannot pin an output setting; its rows will not be stored, only invalidate");
                    pinned = false;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        conn.output = pinned.then(|| Arc::new(conn.params.clone()));
        debug!(system_id = %system.system_id, timeline = system.timeline, xlogpos = %system.xlogpos, "IDENTIFY_SYSTEM");
        let start = match slot_info {
            Some(info) => {
                let confirmed = info.confirmed_flush.unwrap_or(Lsn::ZERO);
                let applied = self.shared.lock().applied();
                if self.seen_slot && confirmed > self.max_confirmed.max(applied) {
                    self.reset(ResetReason::SlotMoved {
                        confirmed_flush: confirmed,
                    });
                }
                self.seen_slot = true;
                let mut s = self.shared.lock();
                s.floor = s.floor.max(confirmed);
                s.applied()
            }
            None => {
                let consistent_point = conn.create_logical_slot(&slot).await?;
                info!(slot, %consistent_point, "replication slot created");
                let reason = if self.seen_slot {
                    ResetReason::SlotLost { consistent_point }
                } else {
                    ResetReason::SlotCreated { consistent_point }
                };
                self.seen_slot = true;
                self.reset(reason);
                let mut s = self.shared.lock();
                s.floor = s.floor.max(consistent_point);
                Lsn::ZERO
            }
        };
        {
            let mut s = self.shared.lock();
            s.server_wal_end = s.server_wal_end.max(system.xlogpos);
            s.server_params = conn.params.clone();
        }
        conn.start_replication(&slot, start, &publication).await?;
        info!(slot, %start, "replication started");
        Ok(conn)
    }
}

fn reset_reason(error: &CdcError) -> ResetReason {
    match error {
        CdcError::Assemble(AssembleError::UnknownRelation(oid)) => {
            ResetReason::UnknownRelation { oid: *oid }
        }
        CdcError::Assemble(e) => ResetReason::Decode {
            error: e.to_string(),
        },
        CdcError::WalProto(e) => ResetReason::Decode {
            error: e.to_string(),
        },
        other => ResetReason::ConnectionLost {
            error: other.to_string(),
        },
    }
}

fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut d = BACKOFF_START;
        let mut seen = vec![d];
        for _ in 0..10 {
            d = next_backoff(d);
            seen.push(d);
        }
        assert_eq!(seen[1], Duration::from_millis(200));
        assert_eq!(*seen.last().unwrap(), BACKOFF_MAX);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn decode_failures_and_unknown_relations_have_their_own_reasons() {
        assert_eq!(
            reset_reason(&CdcError::Assemble(AssembleError::UnknownRelation(7))),
            ResetReason::UnknownRelation { oid: 7 }
        );
        assert!(matches!(
            reset_reason(&CdcError::Assemble(AssembleError::NestedBegin)),
            ResetReason::Decode { .. }
        ));
        assert!(matches!(
            reset_reason(&CdcError::Closed),
            ResetReason::ConnectionLost { .. }
        ));
    }

    #[test]
    fn tables_are_sorted_and_deduplicated() {
        let t = |n: &str| TableName::new("public", n);
        assert_eq!(
            normalize(vec![t("b"), t("a"), t("b")]),
            vec![t("a"), t("b")]
        );
    }
}
