//! One replication session's streaming loop, and the outbox that hands events to the consumer.
//!
//! The loop never blocks on the consumer: events wait in the outbox while the loop keeps
//! answering the server (status updates, keepalive replies), so a slow consumer cannot make
//! the walsender time out. Past [`OUTBOX_HIGH_WATER`] queued events it stops reading the
//! socket, which pushes back on the server through TCP instead of growing memory.
//!
//! Every `select!` branch is cancel-safe: `read_buf` (socket), `Sender::reserve` (channel),
//! `Interval::tick` and `watch::Receiver::changed`; writes happen only inside branch bodies.

use super::assemble::Assembler;
use super::conn::{server_error, Frame, ReplConnection};
use super::event::{FeedEvent, Transaction};
use super::lsn::system_to_pg_time;
use super::status::Shared;
use super::walproto::{self, ServerMessage, StatusUpdate};
use super::CdcError;
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tracing::{debug, trace};

/// Events queued before the loop stops reading from the server.
pub const OUTBOX_HIGH_WATER: usize = 1024;

/// Events waiting for room in the consumer's channel.
pub(crate) struct Outbox {
    queue: VecDeque<FeedEvent>,
    tx: mpsc::Sender<FeedEvent>,
}

/// The consumer dropped its receiver.
#[derive(Debug)]
pub(crate) struct ConsumerGone;

impl Outbox {
    pub fn new(tx: mpsc::Sender<FeedEvent>) -> Self {
        Outbox {
            queue: VecDeque::new(),
            tx,
        }
    }

    pub fn push(&mut self, event: FeedEvent) {
        self.queue.push_back(event);
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Waits for room and delivers the oldest event; with nothing queued, waits until the
    /// consumer drops its receiver. `Err` means the consumer is gone.
    /// Cancel-safe: nothing is taken from the queue until the channel has a slot.
    pub async fn deliver_one(&mut self, shared: &Shared) -> Result<(), ConsumerGone> {
        if self.queue.is_empty() {
            self.tx.closed().await;
            return Err(ConsumerGone);
        }
        let permit = self.tx.reserve().await.map_err(|_| ConsumerGone)?;
        if let Some(event) = self.queue.pop_front() {
            if let FeedEvent::Commit(txn) = &event {
                let mut s = shared.lock();
                s.delivered = s.delivered.max(txn.end_lsn);
                s.transactions += 1;
                s.changes += txn.changes.len() as u64;
            }
            permit.send(event);
        }
        Ok(())
    }
}

/// How a session ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    Shutdown,
    ConsumerGone,
}

/// Streams until shutdown, the consumer leaving, or an error (which ends the session).
pub(crate) async fn run(
    conn: &mut ReplConnection,
    shared: &Shared,
    outbox: &mut Outbox,
    assembler: &mut Assembler,
    status_interval: Duration,
    timeout: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<SessionEnd, CdcError> {
    let mut ticker = tokio::time::interval(status_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        // Handle what is already buffered before waiting for more.
        while outbox.len() < OUTBOX_HIGH_WATER {
            let Some(frame) = conn.next_frame()? else {
                break;
            };
            if handle_frame(frame, shared, outbox, assembler)? {
                send_status(conn, shared, false).await?;
            }
        }
        let reading = outbox.len() < OUTBOX_HIGH_WATER;
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    // Confirm what was acknowledged so a restart resumes right after it.
                    send_status(conn, shared, false).await?;
                    return Ok(SessionEnd::Shutdown);
                }
            }
            delivered = outbox.deliver_one(shared) => {
                if delivered.is_err() {
                    return Ok(SessionEnd::ConsumerGone);
                }
            }
            filled = conn.fill(), if reading => {
                filled?;
                last_heard = Instant::now();
                shared.saw_server(None);
            }
            _ = ticker.tick() => {
                if !reading {
                    // Silence is ours (back-pressure), not the server's.
                    last_heard = Instant::now();
                }
                if last_heard.elapsed() > timeout {
                    return Err(CdcError::Timeout(format!(
                        "no message from the server for {timeout:?}"
                    )));
                }
                send_status(conn, shared, true).await?;
            }
        }
    }
}

/// Handles one frame; returns whether the server asked for a status update now.
fn handle_frame(
    frame: Frame,
    shared: &Shared,
    outbox: &mut Outbox,
    assembler: &mut Assembler,
) -> Result<bool, CdcError> {
    match frame.tag {
        b'd' => {}
        b'E' => return Err(server_error(&frame.body)),
        b'N' => {
            debug!(notice = %String::from_utf8_lossy(&frame.body), "server notice");
            return Ok(false);
        }
        b'c' => return Err(CdcError::Protocol("the server ended the stream".into())),
        b'S' => return Ok(false),
        other => {
            return Err(CdcError::Protocol(format!(
                "unexpected message {:?} while streaming",
                other as char
            )))
        }
    }
    match walproto::parse(&frame.body)? {
        ServerMessage::XLogData {
            start,
            wal_end,
            data,
            ..
        } => {
            trace!(%start, %wal_end, len = data.len(), "XLogData");
            shared.saw_server(Some(wal_end));
            if let Some(txn) = assembler.apply_bytes(data)? {
                committed(txn, shared, outbox);
            }
            Ok(false)
        }
        ServerMessage::Keepalive {
            wal_end,
            reply_requested,
            ..
        } => {
            trace!(%wal_end, reply_requested, "keepalive");
            shared.saw_server(Some(wal_end));
            if !assembler.in_transaction() {
                shared.idle_at(wal_end);
            }
            Ok(reply_requested)
        }
    }
}

/// Queues a committed transaction, skipping one already received (re-sent after a reconnect)
/// and ones without changes (their end only moves the idle position).
fn committed(txn: Transaction, shared: &Shared, outbox: &mut Outbox) {
    let mut s = shared.lock();
    if txn.end_lsn <= s.received {
        debug!(end_lsn = %txn.end_lsn, "transaction already received; skipped");
        return;
    }
    s.received = txn.end_lsn;
    if txn.changes.is_empty() {
        s.idle_wal_end = s.idle_wal_end.max(txn.end_lsn);
        s.settle();
        return;
    }
    s.inflight.push_back((txn.end_lsn, txn.commit_time));
    drop(s);
    outbox.push(FeedEvent::Commit(txn));
}

/// Sends a standby status update confirming the applied position.
pub(crate) async fn send_status(
    conn: &mut ReplConnection,
    shared: &Shared,
    reply_requested: bool,
) -> Result<(), CdcError> {
    let update = {
        let s = shared.lock();
        let applied = s.applied();
        StatusUpdate {
            written: s.server_wal_end.max(applied),
            flushed: applied,
            applied,
            time: system_to_pg_time(SystemTime::now()),
            reply_requested,
        }
    };
    trace!(flushed = %update.flushed, "status update");
    conn.send_copy_data(&update.encode()).await
}
