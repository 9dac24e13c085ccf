//! Protocol-level prepared statements as Postgres holds them.
//!
//! A Parse or Close changes the server's statements only when Postgres processes it, and
//! after an error Postgres skips every message up to the next Sync. So the book keeps two
//! views: `confirmed` (what ParseComplete / CloseComplete have confirmed, applied in order as
//! they arrive) and `view` (confirmed plus what was sent and not yet answered: what a
//! Bind pipelined right behind its Parse refers to). When a batch ends (ReadyForQuery) with
//! some of its Parses or Closes unanswered, Postgres skipped them: they are dropped and the
//! view is rebuilt from the confirmed one. `P s1` failing because `s1` exists therefore
//! leaves `s1` naming the statement Postgres really has.
//!
//! A third kind of statement exists only in the proxy: one whose Parse the cache answered
//! (a `Parse Bind Execute Sync` batch served from memory). Postgres never saw it, so before
//! anything that refers to it reaches Postgres (a Bind, Describe or Close of it, a Parse of the
//! same name, SQL `EXECUTE`/`DEALLOCATE`/`PREPARE` of the name) the proxy *materializes* it:
//! sends the client's original Parse first, and drops the ParseComplete that answers it.

use super::state::PreparedStatement;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Names tracked at most (distinct statements a session keeps prepared); beyond, the book
/// forgets everything and lookups miss (their statements count as unclassified) until the
/// names are parsed again. Real clients stay far below.
pub const MAX_STATEMENTS: usize = 10_000;

/// Named statements that may exist only in the proxy at once; beyond, Parse batches of new
/// names pass through (the unnamed statement is always allowed).
pub const MAX_VIRTUAL: usize = 256;

#[derive(Debug)]
enum Op {
    /// `None`: the statement could not be classified. `injected`: sent by the proxy to
    /// materialize a statement; its ParseComplete is not the client's.
    Parse(Box<[u8]>, Option<Arc<PreparedStatement>>, bool),
    Close(Box<[u8]>),
    /// A Close of a portal: answered by CloseComplete too, changes no statement.
    ClosePortal,
    /// A Parse or Close of the proxy's own statement (see [`PRIVATE_STATEMENT`]): changes no
    /// statement of the client's, and its answer is not for the client.
    Private,
}

/// The statement name the proxy prepares for itself (a narrowed text-predicate statement
/// bound instead of the client's). It is closed before every Parse of it and after its
/// Execute, so it outlives a batch only when that batch failed.
pub const PRIVATE_STATEMENT: &[u8] = b"__pgpolyglot_narrowed__";

#[derive(Debug)]
struct Pending {
    /// Index of the batch (counted by Sync / Query / FunctionCall sent) the op belongs to.
    batch: u64,
    op: Op,
}

#[derive(Debug, Default)]
pub struct StatementBook {
    confirmed: HashMap<Box<[u8]>, Option<Arc<PreparedStatement>>>,
    view: HashMap<Box<[u8]>, Option<Arc<PreparedStatement>>>,
    pending: VecDeque<Pending>,
    /// Statements only the proxy has: name → (the client's Parse frame, the statement).
    virtuals: HashMap<Box<[u8]>, (bytes::Bytes, Arc<PreparedStatement>)>,
    /// The book may not know every name Postgres has (it overflowed, or SQL PREPARE ran):
    /// a named Parse could collide with one, so none is answered by the proxy.
    names_unknown: bool,
    /// The book may have lost a protocol-level statement Postgres still has (it overflowed,
    /// or a DEALLOCATE it applied may have failed). Until then a name it does not hold can
    /// only be one made by SQL `PREPARE`.
    names_lost: bool,
}

/// What a Bind's statement name refers to, as far as the book knows.
#[derive(Debug)]
pub enum Lookup {
    /// A statement the book holds, classified.
    Known(Arc<PreparedStatement>),
    /// A statement of unknown text: its Parse could not be classified, or the book may have
    /// lost it.
    Unknown,
    /// No protocol-level statement of that name exists: the name is one SQL `PREPARE` made
    /// (its body a SELECT, INSERT, UPDATE, DELETE, MERGE or VALUES, never DDL) or none at
    /// all (Postgres answers the Bind with an error).
    SqlPrepared,
}

fn apply(map: &mut HashMap<Box<[u8]>, Option<Arc<PreparedStatement>>>, op: &Op) {
    match op {
        Op::Parse(name, stmt, _) => {
            if map.len() >= MAX_STATEMENTS && !map.contains_key(name) {
                map.clear();
            }
            map.insert(name.clone(), stmt.clone());
        }
        Op::Close(name) => {
            map.remove(name);
        }
        Op::ClosePortal | Op::Private => {}
    }
}

impl StatementBook {
    fn sent(&mut self, batch: u64, op: Op) {
        if self.view.len() >= MAX_STATEMENTS {
            self.names_unknown = true;
            self.names_lost = true;
        }
        apply(&mut self.view, &op);
        if self.pending.len() >= MAX_STATEMENTS {
            // A client that never reads its responses: stop tracking confirmations.
            self.names_unknown = true;
            self.names_lost = true;
            self.pending.clear();
            self.confirmed = self.view.clone();
            return;
        }
        self.pending.push_back(Pending { batch, op });
    }

    /// A Parse was forwarded in batch `batch` (Postgres now has the name, or errors).
    pub fn parse_sent(&mut self, batch: u64, name: &[u8], stmt: Option<Arc<PreparedStatement>>) {
        self.virtuals.remove(name);
        self.sent(batch, Op::Parse(name.into(), stmt, false));
    }

    /// The cache answered a Parse of `name` (`frame`: the whole Parse message) with the
    /// session idle. False (nothing recorded) when too many named statements are virtual
    /// already.
    pub fn virtual_parse(
        &mut self,
        name: &[u8],
        stmt: Arc<PreparedStatement>,
        frame: bytes::Bytes,
    ) -> bool {
        if !name.is_empty()
            && !self.virtuals.contains_key(name)
            && self.virtuals.len() >= MAX_VIRTUAL
        {
            return false;
        }
        if self.view.len() >= MAX_STATEMENTS {
            self.names_may_be_lost();
        }
        apply(
            &mut self.view,
            &Op::Parse(name.into(), Some(Arc::clone(&stmt)), false),
        );
        self.virtuals.insert(name.into(), (frame, stmt));
        true
    }

    /// Whether a Parse of `name` may be answered by the proxy: always for the unnamed
    /// statement; for a name, only if no statement of that name can exist in Postgres (so
    /// Postgres would have accepted the Parse) and there is room.
    pub fn virtual_room(&self, name: &[u8]) -> bool {
        name.is_empty()
            || (!self.names_unknown
                && !self.view.contains_key(name)
                && !self.confirmed.contains_key(name)
                && !self.virtuals.contains_key(name)
                && self.virtuals.len() < MAX_VIRTUAL)
    }

    pub fn no_virtual_names(&mut self) {
        self.names_unknown = true;
    }

    /// A DEALLOCATE or DISCARD the book applied may fail in Postgres and leave statements
    /// the book no longer holds.
    pub fn names_may_be_lost(&mut self) {
        self.names_unknown = true;
        self.names_lost = true;
    }

    /// If `name` exists only in the proxy: its Parse frame, to be sent to Postgres now (in
    /// batch `batch`); from here on Postgres has it.
    pub fn materialize(&mut self, batch: u64, name: &[u8]) -> Option<bytes::Bytes> {
        let (frame, stmt) = self.virtuals.remove(name)?;
        self.sent(batch, Op::Parse(name.into(), Some(stmt), true));
        Some(frame)
    }

    /// A Close of a statement (`Some(name)`) or of a portal (`None`) was forwarded.
    pub fn close_sent(&mut self, batch: u64, statement: Option<&[u8]>) {
        let op = match statement {
            Some(name) => Op::Close(name.into()),
            None => Op::ClosePortal,
        };
        self.sent(batch, op);
    }

    /// Whether the proxy may use [`PRIVATE_STATEMENT`]: no statement of the client's can
    /// have that name (the book knows every name, and none is it), and the answers it
    /// waits for are few enough that pairing them is not about to be given up.
    pub fn private_name_free(&self) -> bool {
        !self.names_unknown
            && self.pending.len() < MAX_STATEMENTS / 2
            && !self.view.contains_key(PRIVATE_STATEMENT)
            && !self.confirmed.contains_key(PRIVATE_STATEMENT)
            && !self.virtuals.contains_key(PRIVATE_STATEMENT)
    }

    /// A Parse or Close of [`PRIVATE_STATEMENT`] was sent by the proxy.
    pub fn private_sent(&mut self, batch: u64) {
        self.sent(batch, Op::Private);
    }

    /// SQL-level `DEALLOCATE name` / `DEALLOCATE ALL` / `DISCARD ALL`: applied at once to
    /// both views (they are rare, and a failed one leaves at worst a statement unclassified).
    pub fn forget(&mut self, name: Option<&[u8]>) {
        match name {
            Some(n) => {
                self.view.remove(n);
                self.confirmed.remove(n);
                self.virtuals.remove(n);
            }
            None => {
                self.view.clear();
                self.confirmed.clear();
                self.virtuals.clear();
            }
        }
    }

    /// The statement a Bind sent now refers to. `None` when unknown or unclassified.
    pub fn lookup(&self, name: &[u8]) -> Option<&Arc<PreparedStatement>> {
        self.view.get(name).and_then(Option::as_ref)
    }

    /// What a Bind sent now refers to, telling a statement of unknown text from a name
    /// only SQL `PREPARE` can have made.
    pub fn source(&self, name: &[u8]) -> Lookup {
        match self.view.get(name) {
            Some(Some(stmt)) => Lookup::Known(Arc::clone(stmt)),
            Some(None) => Lookup::Unknown,
            None if self.names_lost => Lookup::Unknown,
            None => Lookup::SqlPrepared,
        }
    }

    /// ParseComplete or CloseComplete: the oldest unanswered op took effect. True when
    /// that op was sent by the proxy (a Parse it injected, or an op on its own statement):
    /// its answer is not for the client.
    pub fn completed(&mut self) -> bool {
        match self.pending.pop_front() {
            Some(p) => {
                apply(&mut self.confirmed, &p.op);
                matches!(p.op, Op::Parse(_, _, true) | Op::Private)
            }
            None => false,
        }
    }

    /// ReadyForQuery ended batch `batch`: its unanswered ops were skipped by Postgres.
    pub fn batch_done(&mut self, batch: u64) {
        let mut skipped = false;
        while self.pending.front().is_some_and(|p| p.batch <= batch) {
            self.pending.pop_front();
            skipped = true;
        }
        if skipped {
            self.view = self.confirmed.clone();
            for p in &self.pending {
                apply(&mut self.view, &p.op);
            }
            for (name, (_, stmt)) in &self.virtuals {
                self.view.insert(name.clone(), Some(Arc::clone(stmt)));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.view.len()
    }

    pub fn is_empty(&self) -> bool {
        self.view.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Classifier;

    fn stmt(sql: &str) -> Option<Arc<PreparedStatement>> {
        Some(Arc::new(PreparedStatement {
            sql: sql.into(),
            classified: Classifier::new(10).classify(sql),
            param_types: Box::new([]),
        }))
    }

    fn sql_of(book: &StatementBook, name: &[u8]) -> Option<String> {
        book.lookup(name).map(|s| s.sql.to_string())
    }

    #[test]
    fn pipelined_bind_sees_its_parse_and_confirmation_keeps_it() {
        let mut b = StatementBook::default();
        b.parse_sent(0, b"s1", stmt("SELECT 1"));
        assert_eq!(sql_of(&b, b"s1").as_deref(), Some("SELECT 1"));
        b.completed();
        b.batch_done(0);
        assert_eq!(sql_of(&b, b"s1").as_deref(), Some("SELECT 1"));
    }

    #[test]
    fn failed_reparse_keeps_the_statement_postgres_has() {
        let mut b = StatementBook::default();
        b.parse_sent(0, b"s1", stmt("SELECT 'A'"));
        b.completed();
        b.batch_done(0);
        // P s1=B fails (42P05): no ParseComplete, the batch ends.
        b.parse_sent(1, b"s1", stmt("SELECT 'B'"));
        assert_eq!(sql_of(&b, b"s1").as_deref(), Some("SELECT 'B'"));
        b.batch_done(1);
        assert_eq!(sql_of(&b, b"s1").as_deref(), Some("SELECT 'A'"));
    }

    #[test]
    fn ops_skipped_after_an_error_are_undone_and_later_batches_kept() {
        let mut b = StatementBook::default();
        // Batch 0: P a (ok), P b (skipped after an error), C a (skipped).
        b.parse_sent(0, b"a", stmt("SELECT 1"));
        b.parse_sent(0, b"b", stmt("SELECT 2"));
        b.close_sent(0, Some(b"a"));
        // Batch 1 already sent: P c.
        b.parse_sent(1, b"c", stmt("SELECT 3"));
        assert!(b.lookup(b"a").is_none());
        b.completed(); // ParseComplete for a
        b.batch_done(0);
        assert_eq!(sql_of(&b, b"a").as_deref(), Some("SELECT 1"));
        assert!(b.lookup(b"b").is_none());
        assert_eq!(sql_of(&b, b"c").as_deref(), Some("SELECT 3"));
        b.completed();
        b.batch_done(1);
        assert_eq!(sql_of(&b, b"c").as_deref(), Some("SELECT 3"));
    }

    #[test]
    fn portal_close_keeps_pairing() {
        let mut b = StatementBook::default();
        b.close_sent(0, None);
        b.parse_sent(0, b"s", stmt("SELECT 1"));
        b.completed(); // CloseComplete (portal)
        b.completed(); // ParseComplete
        b.batch_done(0);
        assert_eq!(sql_of(&b, b"s").as_deref(), Some("SELECT 1"));
    }

    #[test]
    fn virtual_statements_materialize_once_and_their_answer_is_dropped() {
        let mut b = StatementBook::default();
        let s = stmt("SELECT 1").unwrap();
        assert!(b.virtual_parse(b"v", Arc::clone(&s), bytes::Bytes::from_static(b"P...")));
        assert_eq!(sql_of(&b, b"v").as_deref(), Some("SELECT 1"));
        // An unrelated batch that fails keeps the virtual statement visible.
        b.parse_sent(0, b"x", stmt("SELECT 2"));
        b.batch_done(0);
        assert_eq!(sql_of(&b, b"v").as_deref(), Some("SELECT 1"));
        // A Bind of it passes through: materialized once, its ParseComplete is ours.
        assert_eq!(b.materialize(1, b"v").as_deref(), Some(&b"P..."[..]));
        assert_eq!(b.materialize(1, b"v"), None);
        assert!(b.completed());
        b.batch_done(1);
        assert_eq!(sql_of(&b, b"v").as_deref(), Some("SELECT 1"));
        // A client Parse is not ours.
        b.parse_sent(2, b"y", stmt("SELECT 3"));
        assert!(!b.completed());
        // A forwarded Parse of the unnamed statement replaces a virtual one.
        assert!(b.virtual_parse(b"", Arc::clone(&s), bytes::Bytes::new()));
        b.parse_sent(3, b"", stmt("SELECT 4"));
        assert_eq!(b.materialize(3, b""), None);
        // Bounded: named ones only.
        for i in 0..MAX_VIRTUAL {
            assert!(b.virtual_parse(
                format!("n{i}").as_bytes(),
                Arc::clone(&s),
                bytes::Bytes::new()
            ));
        }
        assert!(!b.virtual_room(b"one more"));
        assert!(b.virtual_room(b""));
        b.forget(None);
        assert!(b.virtual_room(b"one more"));
    }

    #[test]
    fn private_ops_are_answered_to_the_proxy_and_change_no_statement() {
        let mut b = StatementBook::default();
        b.parse_sent(0, b"s", stmt("SELECT 1"));
        b.private_sent(0);
        b.private_sent(0);
        b.close_sent(0, None);
        b.private_sent(0);
        assert!(!b.completed()); // the client's Parse
        assert!(b.completed()); // Close of the private statement
        assert!(b.completed()); // its Parse
        assert!(!b.completed()); // the client's portal Close
        b.batch_done(0); // the trailing private Close was skipped (an error)
        assert_eq!(sql_of(&b, b"s").as_deref(), Some("SELECT 1"));
        assert!(b.lookup(PRIVATE_STATEMENT).is_none());
        b.parse_sent(1, b"t", stmt("SELECT 2"));
        assert!(!b.completed());
        assert!(b.private_name_free());
        b.parse_sent(2, PRIVATE_STATEMENT, stmt("SELECT 3"));
        assert!(!b.private_name_free());
        b.forget(None);
        assert!(b.private_name_free());
        b.no_virtual_names();
        assert!(!b.private_name_free());
    }

    #[test]
    fn sql_deallocate_and_bounds() {
        let mut b = StatementBook::default();
        b.parse_sent(0, b"x", stmt("SELECT 1"));
        b.completed();
        b.forget(Some(b"x"));
        assert!(b.lookup(b"x").is_none());
        for i in 0..MAX_STATEMENTS + 5 {
            b.parse_sent(1, format!("s{i}").as_bytes(), None);
            b.completed();
        }
        assert!(b.len() <= MAX_STATEMENTS);
        b.forget(None);
        assert!(b.is_empty());
    }

    #[test]
    fn names_the_book_lacks_are_sql_prepared_until_it_may_have_lost_some() {
        let mut b = StatementBook::default();
        b.parse_sent(0, b"known", stmt("SELECT 1"));
        b.parse_sent(0, b"opaque", None);
        assert!(matches!(b.source(b"known"), Lookup::Known(_)));
        assert!(matches!(b.source(b"opaque"), Lookup::Unknown));
        assert!(matches!(b.source(b"from_sql"), Lookup::SqlPrepared));
        // A Parse Postgres skipped leaves no statement behind.
        b.batch_done(0);
        assert!(matches!(b.source(b"known"), Lookup::SqlPrepared));
        // SQL PREPARE makes names the book cannot see, but none of them is lost.
        b.no_virtual_names();
        assert!(matches!(b.source(b"from_sql"), Lookup::SqlPrepared));
        b.names_may_be_lost();
        assert!(matches!(b.source(b"from_sql"), Lookup::Unknown));

        let mut full = StatementBook::default();
        for i in 0..=MAX_STATEMENTS {
            full.parse_sent(1, format!("s{i}").as_bytes(), stmt("SELECT 1"));
            full.completed();
        }
        assert!(matches!(full.source(b"s0"), Lookup::Unknown));
    }
}
