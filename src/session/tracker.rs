//! Matches each statement a client sends with the response that completes it, to measure
//! its latency and rows and to record where it was served.
//!
//! The frontend direction pushes an entry when it forwards a Query, an Execute or a Sync;
//! the backend direction pops entries as CommandComplete, ErrorResponse, EmptyQueryResponse,
//! PortalSuspended and ReadyForQuery come back. Postgres answers strictly in order, so a
//! FIFO is enough:
//!
//! - a simple Query (which may hold several statements) completes at its ReadyForQuery,
//!   with the rows of all its CommandCompletes and failed if any ErrorResponse came;
//! - an Execute completes at its CommandComplete / EmptyQueryResponse / PortalSuspended /
//!   ErrorResponse; after an error Postgres skips to the next Sync, so Executes still
//!   queued before that Sync's ReadyForQuery were never run and are dropped unrecorded.
//!
//! Both directions run in one task, so the mutex is never contended; it only makes the
//! shared queue `Sync`. The queue is bounded: a client that pipelines more than
//! [`MAX_PENDING`] messages without reading loses its latency samples (not its queries)
//! until the responses catch up.

use super::state::PreparedStatement;
use super::statements::{Lookup, StatementBook};
use crate::cache::fence::FenceService;
use crate::context::ProxyContext;
use crate::sql::Shape;
use crate::stats::Route;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most entries queued per session.
pub const MAX_PENDING: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A Query or FunctionCall: ends at ReadyForQuery.
    Simple,
    /// An Execute: ends at its own completion message.
    Execute,
    /// A Sync: its ReadyForQuery closes the extended-protocol batch.
    Sync,
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    /// For a Sync: an Execute was sent in its batch (so its ReadyForQuery may report a new
    /// transaction state).
    batch_executed: bool,
    shape: Option<Arc<Shape>>,
    route: Route,
    /// When it was forwarded; `None` for a Sync, which is never timed (saves a clock read
    /// per extended-protocol batch).
    start: Option<Instant>,
    rows: u64,
    error: bool,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Entry>,
    /// Batches ended by the client (Queries, FunctionCalls and Syncs forwarded) and by
    /// Postgres (ReadyForQuery received, the start-up one excepted).
    batches_sent: u64,
    batches_done: u64,
    /// The queue overflowed: track nothing until every outstanding ReadyForQuery arrived.
    desynced: bool,
    /// Prepared statements, confirmed by Postgres's answers.
    book: StatementBook,
    /// An Execute was sent since the last Sync.
    executed_since_sync: bool,
    /// A statement that may change the schema or privileges was sent: the number of the
    /// batch whose ReadyForQuery follows its commit (or rollback).
    schema_change_due: Option<u64>,
    /// A statement that may change client_encoding was sent: the number of the batch whose
    /// ReadyForQuery answers it. Until then, statement text may be in either encoding.
    encoding_change_due: Option<u64>,
    /// Such a statement was sent since the session was last idle outside a transaction
    /// block: the block's end may undo it (`SET LOCAL`, or a `SET` rolled back).
    encoding_set_in_block: bool,
    /// A statement that may write was sent: the number of the batch whose ReadyForQuery
    /// follows its commit (or rollback).
    write_due: Option<u64>,
    /// A freshness-fence ticket taken when every write sent so far had ended (`None` once
    /// another may-write statement is sent).
    fence_ticket: Option<u64>,
    /// Take [`Self::fence_ticket`] as soon as writes end, rather than when the next read
    /// asks: set once this session's reads have been kept from a store by a fence.
    eager_fence: bool,
}

impl Inner {
    fn outstanding(&self) -> u64 {
        self.batches_sent.saturating_sub(self.batches_done)
    }

    /// `due` moved to at least the next batch end (the Query itself, or the Sync after an
    /// Execute), for a statement about to be forwarded.
    fn due_at_next_batch_end(&self, due: Option<u64>) -> Option<u64> {
        let next = self.batches_sent + 1;
        Some(due.map_or(next, |d| d.max(next)))
    }
}

/// One session's statements in flight.
#[derive(Debug, Default)]
pub struct StatementTracker {
    inner: Mutex<Inner>,
    /// The book holds statements only the proxy has, as of the last call: every frontend
    /// message that names a statement asks [`Self::materialize`], and without any (the
    /// common case) the relay skips finding the names and taking the lock for each.
    has_virtuals: AtomicBool,
}

/// What a ReadyForQuery ended.
#[derive(Debug, Default)]
pub struct Ready {
    /// The simple Query it completed, if any.
    pub completed: Option<Completed>,
    /// A schema or privilege change sent earlier has committed (or rolled back).
    pub schema_changed: bool,
}

/// A statement whose response has completed.
#[derive(Debug)]
pub struct Completed {
    pub shape: Option<Arc<Shape>>,
    pub route: Route,
    pub latency_us: u64,
    pub rows: u64,
    pub error: bool,
}

impl StatementTracker {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut guard);
        self.has_virtuals.store(guard.book.has_virtuals(), Relaxed);
        r
    }

    fn push(&self, kind: Kind, shape: Option<Arc<Shape>>, route: Route) {
        self.with(|s| {
            if kind != Kind::Execute {
                s.batches_sent += 1;
            }
            if s.desynced {
                return;
            }
            let batch_executed = match kind {
                Kind::Execute => {
                    s.executed_since_sync = true;
                    false
                }
                Kind::Sync => std::mem::take(&mut s.executed_since_sync),
                Kind::Simple => false,
            };
            if s.queue.len() >= MAX_PENDING {
                s.queue.clear();
                s.desynced = true;
                return;
            }
            s.queue.push_back(Entry {
                kind,
                batch_executed,
                shape,
                route,
                start: (kind != Kind::Sync).then(Instant::now),
                rows: 0,
                error: false,
            });
        })
    }

    /// A Query or FunctionCall is about to be forwarded inside an extended-protocol batch
    /// (after a Parse, Bind, Describe, Execute or Close, before the Sync). Postgres runs it,
    /// or, after an error earlier in the batch, discards it without a ReadyForQuery: the
    /// proxy cannot tell which, so it stops pairing answers with what it sent (until the
    /// counts agree again, which they may never do) and forgets which statements exist.
    pub fn query_inside_batch(&self) {
        self.with(|s| {
            s.queue.clear();
            s.desynced = true;
            s.book.forget(None);
            s.book.names_may_be_lost();
        })
    }

    /// A Query (or FunctionCall, with no shape) was forwarded.
    pub fn query(&self, shape: Option<Arc<Shape>>, route: Route) {
        self.push(Kind::Simple, shape, route)
    }

    /// An Execute was forwarded.
    pub fn execute(&self, shape: Option<Arc<Shape>>, route: Route) {
        self.push(Kind::Execute, shape, route)
    }

    /// A Sync was forwarded.
    pub fn sync(&self) {
        self.push(Kind::Sync, None, Route::Postgres)
    }

    /// CopyDone or CopyFail from the client. Postgres ignores Sync messages that arrive
    /// during copy-in mode (libpq and tokio-postgres send one right after the Execute that
    /// starts a COPY FROM STDIN), so they get no ReadyForQuery: forget the Sync entries
    /// queued after the last statement.
    pub fn copy_end(&self) {
        self.with(|s| {
            while s.queue.back().is_some_and(|e| e.kind == Kind::Sync) {
                s.queue.pop_back();
                s.batches_sent = s.batches_sent.saturating_sub(1);
            }
        })
    }

    /// CommandComplete (`rows` from its tag), EmptyQueryResponse or PortalSuspended
    /// (`rows` 0), or ErrorResponse (`error`).
    pub fn completion(&self, rows: u64, error: bool) -> Option<Completed> {
        self.with(|s| {
            let front = s.queue.front_mut()?;
            match front.kind {
                Kind::Simple => {
                    front.rows += rows;
                    front.error |= error;
                    None
                }
                Kind::Execute => {
                    let mut e = s.queue.pop_front()?;
                    e.rows = rows;
                    e.error = error;
                    Some(finish(e))
                }
                // An error at Sync (e.g. a failed implicit commit) belongs to no statement.
                Kind::Sync => None,
            }
        })
    }

    /// ReadyForQuery, reporting the session `idle` (not in a transaction block) or not:
    /// completes a simple Query, or closes an extended batch (dropping Executes that
    /// Postgres skipped after an error), and says whether a schema change sent earlier has
    /// now committed or rolled back (reported once; inside a transaction block it waits for
    /// the block's end). One lock per ReadyForQuery: this runs for every relayed statement.
    ///
    /// When it ends the batch of this session's last write outside a transaction block, a
    /// session whose reads have met fences takes a fence ticket from `fences` now: the
    /// position that answers it is past the write, and asking while the client reads its
    /// answer saves the next read waiting for the question too.
    pub fn ready(&self, idle: bool, fences: &FenceService) -> Ready {
        self.with(|s| {
            if s.outstanding() == 0 {
                // The start-up ReadyForQuery, or one the proxy lost count of.
                return Ready::default();
            }
            let batch = s.batches_done;
            s.book.batch_done(batch);
            s.batches_done += 1;
            if s.encoding_change_due
                .is_some_and(|due| s.batches_done >= due)
            {
                s.encoding_change_due = None;
            }
            if idle && s.outstanding() == 0 {
                s.encoding_set_in_block = false;
            }
            if idle && s.write_due.is_some_and(|due| s.batches_done >= due) {
                s.write_due = None;
                if s.eager_fence {
                    s.fence_ticket = Some(fences.request());
                }
            }
            let schema_changed = match s.schema_change_due {
                Some(due) if idle && s.batches_done >= due => {
                    s.schema_change_due = None;
                    true
                }
                _ => false,
            };
            let mut completed = None;
            if s.desynced {
                if s.outstanding() == 0 {
                    s.desynced = false;
                }
            } else {
                while let Some(e) = s.queue.pop_front() {
                    match e.kind {
                        Kind::Simple => {
                            completed = Some(finish(e));
                            break;
                        }
                        Kind::Sync => break,
                        Kind::Execute => continue,
                    }
                }
            }
            Ready {
                completed,
                schema_changed,
            }
        })
    }

    /// A statement that may change the schema or privileges (DDL, GRANT, REVOKE, DO, ...)
    /// is about to be forwarded (as a Query, or an Execute): the ReadyForQuery that ends its
    /// batch is the first moment another session can rely on it having committed.
    pub fn schema_change_sent(&self) {
        self.with(|s| {
            s.schema_change_due = s.due_at_next_batch_end(s.schema_change_due);
        })
    }

    /// A statement that may write is about to be forwarded (as a Query, an Execute or a
    /// FunctionCall): a fence ticket taken before it has ended no longer covers the session.
    pub fn write_sent(&self) {
        self.with(|s| {
            s.write_due = s.due_at_next_batch_end(s.write_due);
            s.fence_ticket = None;
        })
    }

    /// The fence ticket taken after every write this session sent had ended, if any.
    pub fn fence_ticket(&self) -> Option<u64> {
        self.with(|s| s.fence_ticket)
    }

    /// This session's reads met a fence: from now on take tickets as soon as writes end.
    pub fn eager_fences(&self) {
        self.with(|s| s.eager_fence = true)
    }

    /// A statement that may change client_encoding is about to be forwarded (as a Query,
    /// an Execute or a FunctionCall).
    pub fn encoding_change_sent(&self) {
        self.with(|s| {
            s.encoding_change_due = s.due_at_next_batch_end(s.encoding_change_due);
            s.encoding_set_in_block = true;
        })
    }

    /// A statement that may change client_encoding is unanswered: the encoding the last
    /// ParameterStatus named may not be the one the next statement is written in.
    pub fn encoding_unsettled(&self) -> bool {
        self.with(|s| s.encoding_change_due.is_some())
    }

    /// client_encoding may have been set since the session was last idle outside a
    /// transaction block, so ending the block may change it back.
    pub fn encoding_set_in_block(&self) -> bool {
        self.with(|s| s.encoding_set_in_block)
    }

    pub fn pending(&self) -> usize {
        self.with(|s| s.queue.len())
    }

    /// Nothing this session sent can still change its transaction state or settings: no
    /// Query or Execute unanswered, and no Sync of a batch that executed something (a
    /// Parse/Describe/Sync batch, which clients such as tokio-postgres do not wait out, does
    /// not count).
    pub fn is_idle(&self) -> bool {
        self.with(|s| {
            !s.desynced
                && !s.executed_since_sync
                && s.queue
                    .iter()
                    .all(|e| e.kind == Kind::Sync && !e.batch_executed)
        })
    }

    /// A Parse of statement `name` was forwarded (`None`: unclassified).
    pub fn parse_sent(&self, name: &[u8], stmt: Option<Arc<PreparedStatement>>) {
        self.with(|s| {
            let batch = s.batches_sent;
            s.book.parse_sent(batch, name, stmt)
        })
    }

    /// A Close of a statement (`Some(name)`) or a portal (`None`) was forwarded.
    pub fn close_sent(&self, statement: Option<&[u8]>) {
        self.with(|s| {
            let batch = s.batches_sent;
            s.book.close_sent(batch, statement)
        })
    }

    /// Whether the proxy may prepare its own statement now (see
    /// [`StatementBook::private_name_free`]).
    pub fn private_name_free(&self) -> bool {
        self.with(|s| s.book.private_name_free())
    }

    /// A Parse or Close of the proxy's own statement was forwarded.
    pub fn private_sent(&self) {
        self.with(|s| {
            let batch = s.batches_sent;
            s.book.private_sent(batch)
        })
    }

    /// SQL-level DEALLOCATE (`Some(name)`) or DEALLOCATE ALL / DISCARD ALL (`None`).
    pub fn forget_statements(&self, name: Option<&[u8]>) {
        self.with(|s| s.book.forget(name))
    }

    /// The prepared statement a Bind forwarded now refers to.
    pub fn statement(&self, name: &[u8]) -> Option<Arc<PreparedStatement>> {
        self.with(|s| s.book.lookup(s.batches_sent, name).cloned())
    }

    /// What a Bind forwarded now refers to (see [`Lookup`]).
    pub fn statement_source(&self, name: &[u8]) -> Lookup {
        self.with(|s| s.book.source(s.batches_sent, name))
    }

    /// SQL `PREPARE name` was forwarded.
    pub fn prepare_sent(&self, name: &[u8]) {
        self.with(|s| s.book.prepare_sent(name))
    }

    /// A DEALLOCATE or DISCARD that may fail was applied to the book.
    pub fn statement_names_may_be_lost(&self) {
        self.with(|s| s.book.names_may_be_lost())
    }

    /// ParseComplete or CloseComplete arrived. True when it answers a message the proxy
    /// injected (the client must not see it).
    pub fn statement_op_completed(&self) -> bool {
        self.with(|s| s.book.completed())
    }

    /// The cache answered a Parse (see [`StatementBook::virtual_parse`]).
    pub fn virtual_parse(
        &self,
        name: &[u8],
        stmt: Arc<PreparedStatement>,
        frame: bytes::Bytes,
    ) -> bool {
        self.with(|s| s.book.virtual_parse(name, stmt, frame))
    }

    pub fn virtual_room(&self, name: &[u8]) -> bool {
        self.with(|s| s.book.virtual_room(name))
    }

    /// Statement names may exist that the book does not know (SQL PREPARE): answer no
    /// named Parse from the cache for the rest of the session.
    pub fn no_virtual_names(&self) {
        self.with(|s| s.book.no_virtual_names())
    }

    /// Whether [`Self::materialize`] can return anything: some statement exists only in the
    /// proxy.
    pub fn may_materialize(&self) -> bool {
        self.has_virtuals.load(Relaxed)
    }

    /// The Parse frame to send before a message that refers to `name`, if Postgres does not
    /// have that statement yet.
    pub fn materialize(&self, name: &[u8]) -> Option<bytes::Bytes> {
        self.with(|s| {
            let batch = s.batches_sent;
            s.book.materialize(batch, name)
        })
    }
}

fn finish(e: Entry) -> Completed {
    Completed {
        latency_us: e.start.map_or(0, |start| {
            u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
        }),
        shape: e.shape,
        route: e.route,
        rows: e.rows,
        error: e.error,
    }
}

impl Completed {
    /// Count it in the metrics and hand it to the statistics.
    pub fn record(self, ctx: &ProxyContext) {
        ctx.metrics.routes[self.route.index()].observe(self.latency_us, self.rows, self.error);
        if let Some(shape) = &self.shape {
            ctx.stats.record_statement(
                shape,
                self.route,
                std::time::Duration::from_micros(self.latency_us),
                self.rows,
                self.error,
            );
        }
    }
}

/// Rows from a CommandComplete tag: the last number of `SELECT n`, `INSERT 0 n`,
/// `UPDATE n`, `DELETE n`, `COPY n`, `FETCH n`, `MOVE n`, `MERGE n`; 0 for other tags.
pub fn tag_rows(body: &[u8]) -> u64 {
    let tag = body.strip_suffix(&[0]).unwrap_or(body);
    let Some(space) = tag.iter().rposition(|&b| b == b' ') else {
        return 0;
    };
    let verb = &tag[..tag.iter().position(|&b| b == b' ').unwrap_or(0)];
    if !matches!(
        verb,
        b"SELECT" | b"INSERT" | b"UPDATE" | b"DELETE" | b"COPY" | b"FETCH" | b"MOVE" | b"MERGE"
    ) {
        return 0;
    }
    // Digits only, read in place (runs for every CommandComplete).
    let digits = &tag[space + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    digits
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_from_tags() {
        assert_eq!(tag_rows(b"SELECT 5\0"), 5);
        assert_eq!(tag_rows(b"INSERT 0 3\0"), 3);
        assert_eq!(tag_rows(b"UPDATE 12\0"), 12);
        assert_eq!(tag_rows(b"CREATE TABLE\0"), 0);
        assert_eq!(tag_rows(b"BEGIN\0"), 0);
        assert_eq!(tag_rows(b"\0"), 0);
        assert_eq!(tag_rows(b"SELECT x\0"), 0);
        assert_eq!(tag_rows(b"SELECT 18446744073709551615\0"), u64::MAX);
        assert_eq!(tag_rows(b"SELECT 18446744073709551616\0"), 0);
        assert_eq!(tag_rows(b"SELECT +5\0"), 0);
    }

    /// The relay asks `may_materialize` before finding statement names: it must say yes
    /// exactly while a statement exists only in the proxy.
    #[test]
    fn may_materialize_follows_the_proxy_only_statements() {
        let t = StatementTracker::default();
        assert!(!t.may_materialize());
        assert!(t.materialize(b"v").is_none());
        let stmt = Arc::new(PreparedStatement {
            sql: "SELECT 1".into(),
            classified: crate::sql::Classifier::new(10).classify("SELECT 1"),
            param_types: Box::new([]),
        });
        assert!(t.virtual_parse(b"v", stmt, bytes::Bytes::from_static(b"P.v")));
        assert!(t.may_materialize());
        assert_eq!(t.materialize(b"v").as_deref(), Some(&b"P.v"[..]));
        assert!(
            !t.may_materialize(),
            "sent to Postgres: no longer the proxy's alone"
        );
    }

    #[test]
    fn simple_query_completes_at_ready() {
        let t = StatementTracker::default();
        t.query(None, Route::Postgres);
        assert!(t.completion(2, false).is_none());
        assert!(t.completion(3, true).is_none());
        let c = t.ready(true, &FenceService::default()).completed.unwrap();
        assert_eq!((c.rows, c.error), (5, true));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn a_fence_ticket_is_taken_when_writes_end_outside_a_block() {
        let fences = FenceService::default();
        let t = StatementTracker::default();
        // Not eager yet: the ticket waits for a read to ask.
        t.write_sent();
        t.query(None, Route::Postgres);
        t.ready(true, &fences);
        assert_eq!(t.fence_ticket(), None);

        t.eager_fences();
        // BEGIN; UPDATE (pipelined with a read); COMMIT.
        t.query(None, Route::Postgres); // BEGIN
        t.write_sent();
        t.query(None, Route::Postgres); // UPDATE
        t.ready(false, &fences); // BEGIN's
        t.ready(false, &fences); // UPDATE's: still inside the block
        assert_eq!(t.fence_ticket(), None);
        t.query(None, Route::Postgres); // COMMIT
        t.ready(true, &fences);
        let first = t.fence_ticket().expect("ticket after the commit");

        // A read answered before a later write ends takes no ticket for it.
        t.query(None, Route::Postgres); // a read
        t.write_sent();
        t.execute(None, Route::Postgres); // the write, in an extended batch
        assert_eq!(t.fence_ticket(), None, "a new write voids the old ticket");
        t.ready(true, &fences); // the read's
        assert_eq!(t.fence_ticket(), None);
        t.sync();
        t.completion(1, false);
        t.ready(true, &fences);
        assert!(t.fence_ticket().is_some_and(|t| t > first));
    }

    #[test]
    fn pipelined_executes_and_skips_after_error() {
        let t = StatementTracker::default();
        // Batch 1: two executes, the first fails, the second is skipped.
        t.execute(None, Route::Postgres);
        t.execute(None, Route::Postgres);
        t.sync();
        // Batch 2 already sent.
        t.execute(None, Route::Postgres);
        t.sync();
        let c = t.completion(0, true).unwrap();
        assert!(c.error);
        assert!(t.ready(true, &FenceService::default()).completed.is_none()); // drops the skipped execute and the sync
        assert_eq!(t.pending(), 2);
        let c = t.completion(7, false).unwrap();
        assert_eq!(c.rows, 7);
        assert!(t.ready(true, &FenceService::default()).completed.is_none());
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn startup_ready_and_stray_messages_are_harmless() {
        let t = StatementTracker::default();
        assert!(t.ready(true, &FenceService::default()).completed.is_none());
        assert!(t.completion(1, false).is_none());
        t.sync();
        assert!(t.completion(0, true).is_none()); // error at sync
        assert!(t.ready(true, &FenceService::default()).completed.is_none());
        assert_eq!(t.pending(), 0);
        // Extra ReadyForQuery messages do not make later batches look finished.
        assert!(t.ready(true, &FenceService::default()).completed.is_none());
        t.query(None, Route::Postgres);
        assert!(t.ready(true, &FenceService::default()).completed.is_some());
    }

    #[test]
    fn extended_copy_in_ignores_the_sync_sent_during_copy() {
        let t = StatementTracker::default();
        // P B E S (copy-in starts), d d c, S
        t.execute(None, Route::Postgres);
        t.sync();
        t.copy_end();
        t.sync();
        let c = t.completion(2, false).unwrap();
        assert_eq!(c.rows, 2);
        assert!(t.ready(true, &FenceService::default()).completed.is_none());
        assert_eq!(t.pending(), 0);
        // The next statement pairs with its own completion.
        t.query(None, Route::Postgres);
        assert!(t.completion(1, false).is_none());
        assert_eq!(
            t.ready(true, &FenceService::default())
                .completed
                .unwrap()
                .rows,
            1
        );
        // Simple-protocol COPY: nothing to drop.
        t.query(None, Route::Postgres);
        t.copy_end();
        assert!(t.completion(3, false).is_none());
        assert_eq!(
            t.ready(true, &FenceService::default())
                .completed
                .unwrap()
                .rows,
            3
        );
    }

    #[test]
    fn idleness() {
        let t = StatementTracker::default();
        assert!(t.is_idle());
        // Prepare without executing: not a reason to wait.
        t.sync();
        assert!(t.is_idle());
        t.execute(None, Route::Postgres);
        assert!(!t.is_idle());
        t.completion(0, false);
        // Completed, but its batch's ReadyForQuery (the new transaction state) is pending.
        assert!(!t.is_idle());
        t.sync();
        assert!(!t.is_idle());
        t.ready(true, &FenceService::default());
        assert!(!t.is_idle());
        t.ready(true, &FenceService::default());
        assert!(t.is_idle());
        t.query(None, Route::Postgres);
        assert!(!t.is_idle());
        t.ready(true, &FenceService::default());
        assert!(t.is_idle());
    }

    #[test]
    fn schema_change_is_done_at_the_end_of_its_batch() {
        let t = StatementTracker::default();
        // A Query in flight before the change: its ReadyForQuery is not the change's.
        t.query(None, Route::Postgres);
        // DDL as an Execute, then its Sync.
        t.schema_change_sent();
        t.execute(None, Route::Postgres);
        t.sync();
        assert!(!t.ready(true, &FenceService::default()).schema_changed);
        t.completion(0, false);
        assert!(t.ready(true, &FenceService::default()).schema_changed);
        t.query(None, Route::Postgres);
        assert!(
            !t.ready(true, &FenceService::default()).schema_changed,
            "reported once"
        );
        // As a simple Query: done at its own ReadyForQuery.
        t.schema_change_sent();
        t.query(None, Route::Postgres);
        assert!(t.ready(true, &FenceService::default()).schema_changed);
        // Inside a transaction block: done only once the block has ended.
        t.schema_change_sent();
        t.query(None, Route::Postgres);
        assert!(!t.ready(false, &FenceService::default()).schema_changed);
        t.query(None, Route::Postgres); // COMMIT
        assert!(t.ready(true, &FenceService::default()).schema_changed);
        // The start-up ReadyForQuery (nothing outstanding) reports nothing.
        t.schema_change_sent();
        assert!(!t.ready(true, &FenceService::default()).schema_changed);
    }

    #[test]
    fn overflow_desyncs_until_caught_up() {
        let t = StatementTracker::default();
        for _ in 0..MAX_PENDING {
            t.execute(None, Route::Postgres);
        }
        t.sync();
        t.execute(None, Route::Postgres);
        t.sync();
        // Overflowed: nothing is matched until both ReadyForQuery messages came back.
        assert!(t.completion(1, false).is_none());
        assert!(t.ready(true, &FenceService::default()).completed.is_none());
        assert!(t.ready(true, &FenceService::default()).completed.is_none());
        t.query(None, Route::Postgres);
        assert!(t.ready(true, &FenceService::default()).completed.is_some());
    }
}
