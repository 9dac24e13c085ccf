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

/// Statement names to what they hold. foldhash, not SipHash: a Bind looks its name up on
/// every execution, and a session's names are its own (a client that picks colliding names
/// slows only itself).
type NameMap<V> = HashMap<Box<[u8]>, V, foldhash::fast::RandomState>;

/// Names tracked at most (distinct statements a session keeps prepared); beyond, the book
/// forgets everything and lookups miss (their statements count as unclassified) until the
/// names are parsed again. Real clients stay far below.
pub const MAX_STATEMENTS: usize = 10_000;

/// Named statements that may exist only in the proxy at once; beyond, Parse batches of new
/// names pass through (the unnamed statement is always allowed).
pub const MAX_VIRTUAL: usize = 256;

/// Postgres keys statements and portals by the first `NAMEDATALEN - 1` bytes of their
/// names: two names that share those bytes are one statement.
pub const NAME_BYTES: usize = 63;

/// `name` as Postgres keys it (see [`NAME_BYTES`]).
pub fn pg_name(name: &[u8]) -> &[u8] {
    &name[..name.len().min(NAME_BYTES)]
}

#[derive(Debug)]
enum Op {
    /// `None`: the statement could not be classified. The frame when the proxy sent it to
    /// materialize a statement (its ParseComplete is not the client's; if Postgres skips
    /// it, the statement is the proxy's alone again).
    Parse(
        Box<[u8]>,
        Option<Arc<PreparedStatement>>,
        Option<bytes::Bytes>,
    ),
    /// A Parse whose statement a `DEALLOCATE` or `DISCARD ALL` sent after it removes again:
    /// its answer still comes (the client's, unless `injected`), its effect does not last.
    Forgotten {
        injected: bool,
    },
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
    confirmed: NameMap<Option<Arc<PreparedStatement>>>,
    view: NameMap<Option<Arc<PreparedStatement>>>,
    pending: VecDeque<Pending>,
    /// Statements only the proxy has: name → (the client's Parse frame, the statement).
    virtuals: NameMap<(bytes::Bytes, Arc<PreparedStatement>)>,
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

impl Op {
    /// Whether the op creates or removes statement `name`.
    fn names(&self, name: &[u8]) -> bool {
        match self {
            Op::Parse(n, _, _) | Op::Close(n) => &**n == name,
            Op::ClosePortal | Op::Private | Op::Forgotten { .. } => false,
        }
    }
}

type Entry = Option<Arc<PreparedStatement>>;

/// Whether two entries (present or not, classified or not) are the same statement.
fn same(a: Option<&Entry>, b: Option<&Entry>) -> bool {
    match (a, b) {
        (None, None) | (Some(None), Some(None)) => true,
        (Some(Some(a)), Some(Some(b))) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

fn apply(map: &mut NameMap<Option<Arc<PreparedStatement>>>, op: &Op) {
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
        Op::ClosePortal | Op::Private | Op::Forgotten { .. } => {}
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
        let name = pg_name(name);
        self.virtuals.remove(name);
        self.sent(batch, Op::Parse(name.into(), stmt, None));
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
        let name = pg_name(name);
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
            &Op::Parse(name.into(), Some(Arc::clone(&stmt)), None),
        );
        self.virtuals.insert(name.into(), (frame, stmt));
        true
    }

    /// Whether a Parse of `name` may be answered by the proxy: always for the unnamed
    /// statement; for a name, only if no statement of that name can exist in Postgres (so
    /// Postgres would have accepted the Parse) and there is room.
    pub fn virtual_room(&self, name: &[u8]) -> bool {
        let name = pg_name(name);
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

    /// SQL `PREPARE name` was sent. Postgres refuses it if `name` exists, so a name the book
    /// holds means the PREPARE fails or the book is wrong about the name (a DEALLOCATE it
    /// did not see, run by a function, say): either way the name's text is unknown now.
    pub fn prepare_sent(&mut self, name: &[u8]) {
        let name = pg_name(name);
        for map in [&mut self.view, &mut self.confirmed] {
            if let Some(entry) = map.get_mut(name) {
                *entry = None;
            }
        }
        for p in &mut self.pending {
            if let Op::Parse(n, stmt, _) = &mut p.op {
                if &**n == name {
                    *stmt = None;
                }
            }
        }
        self.virtuals.remove(name);
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
        // Every Bind asks: without statements of the proxy's own, skip hashing the name.
        if self.virtuals.is_empty() {
            return None;
        }
        let name = pg_name(name);
        let (frame, stmt) = self.virtuals.remove(name)?;
        self.sent(
            batch,
            Op::Parse(name.into(), Some(stmt), Some(frame.clone())),
        );
        Some(frame)
    }

    /// A Close of a statement (`Some(name)`) or of a portal (`None`) was forwarded.
    pub fn close_sent(&mut self, batch: u64, statement: Option<&[u8]>) {
        let op = match statement {
            Some(name) => Op::Close(pg_name(name).into()),
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
        let name = name.map(pg_name);
        // Parses sent before it run before it: answered, but their statements removed.
        for p in &mut self.pending {
            if let Op::Parse(n, _, frame) = &p.op {
                if name.is_none_or(|name| **n == *name) {
                    p.op = Op::Forgotten {
                        injected: frame.is_some(),
                    };
                }
            }
        }
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

    /// The view's entry for `name` as a message of batch `batch` sees it: `Err` when an op
    /// on the name from an earlier batch is unanswered and the view and the confirmed
    /// entries differ, since Postgres skips that op if its batch failed. (An op of the same
    /// batch is skipped only together with the message itself.)
    fn entry(&self, batch: u64, name: &[u8]) -> Result<Option<&Entry>, ()> {
        let view = self.view.get(name);
        let in_doubt = self
            .pending
            .iter()
            .any(|p| p.batch < batch && p.op.names(name));
        if in_doubt && !same(view, self.confirmed.get(name)) {
            return Err(());
        }
        Ok(view)
    }

    /// The statement a Bind sent now (in batch `batch`) refers to. `None` when unknown,
    /// unclassified or in doubt. Non-ASCII names are never looked up: Postgres converts
    /// names to the server encoding, so after a change of client_encoding the same bytes
    /// may name another statement.
    pub fn lookup(&self, batch: u64, name: &[u8]) -> Option<&Arc<PreparedStatement>> {
        let name = pg_name(name);
        if !name.is_ascii() {
            return None;
        }
        self.entry(batch, name)
            .ok()
            .flatten()
            .and_then(Option::as_ref)
    }

    /// What a Bind sent now (in batch `batch`) refers to, telling a statement of unknown
    /// text from a name only SQL `PREPARE` can have made.
    pub fn source(&self, batch: u64, name: &[u8]) -> Lookup {
        let name = pg_name(name);
        if !name.is_ascii() {
            return Lookup::Unknown;
        }
        match self.entry(batch, name) {
            Ok(Some(Some(stmt))) => Lookup::Known(Arc::clone(stmt)),
            // In doubt, but Postgres had no statement of the name (none confirmed, none made
            // by SQL): the Bind runs what the view holds, or fails. Good enough to classify
            // by (never to answer from the cache: see `lookup`); a client that pipelines
            // `Parse Sync` and `Bind Execute Sync` without waiting is not taken for DDL.
            Err(()) if !self.names_unknown && !self.confirmed.contains_key(name) => {
                match self.view.get(name) {
                    Some(Some(stmt)) => Lookup::Known(Arc::clone(stmt)),
                    _ => Lookup::Unknown,
                }
            }
            Err(()) | Ok(Some(None)) => Lookup::Unknown,
            Ok(None) if self.names_lost => Lookup::Unknown,
            Ok(None) => Lookup::SqlPrepared,
        }
    }

    /// ParseComplete or CloseComplete: the oldest unanswered op took effect. True when
    /// that op was sent by the proxy (a Parse it injected, or an op on its own statement):
    /// its answer is not for the client.
    pub fn completed(&mut self) -> bool {
        match self.pending.pop_front() {
            Some(p) => {
                apply(&mut self.confirmed, &p.op);
                matches!(
                    p.op,
                    Op::Parse(_, _, Some(_)) | Op::Private | Op::Forgotten { injected: true }
                )
            }
            None => false,
        }
    }

    /// ReadyForQuery ended batch `batch`: its unanswered ops were skipped by Postgres.
    pub fn batch_done(&mut self, batch: u64) {
        let mut skipped = false;
        let mut unmade = Vec::new();
        while self.pending.front().is_some_and(|p| p.batch <= batch) {
            skipped = true;
            if let Some(Pending {
                op: Op::Parse(name, Some(stmt), Some(frame)),
                ..
            }) = self.pending.pop_front()
            {
                unmade.push((name, frame, stmt));
            }
        }
        // A statement the proxy materialized in a batch that failed before it: Postgres never
        // made it, so it is the proxy's alone again (unless a later batch's op names it).
        for (name, frame, stmt) in unmade {
            if !self.pending.iter().any(|later| later.op.names(&name)) {
                self.virtuals.insert(name, (frame, stmt));
            }
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

    /// Whether any statement exists only in the proxy (a Parse answered from the cache).
    pub fn has_virtuals(&self) -> bool {
        !self.virtuals.is_empty()
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

    fn sql_of(book: &StatementBook, batch: u64, name: &[u8]) -> Option<String> {
        book.lookup(batch, name).map(|s| s.sql.to_string())
    }

    #[test]
    fn pipelined_bind_sees_its_parse_and_confirmation_keeps_it() {
        let mut b = StatementBook::default();
        b.parse_sent(0, b"s1", stmt("SELECT 1"));
        assert_eq!(sql_of(&b, 0, b"s1").as_deref(), Some("SELECT 1"));
        b.completed();
        b.batch_done(0);
        assert_eq!(sql_of(&b, 1, b"s1").as_deref(), Some("SELECT 1"));
    }

    #[test]
    fn failed_reparse_keeps_the_statement_postgres_has() {
        let mut b = StatementBook::default();
        b.parse_sent(0, b"s1", stmt("SELECT 'A'"));
        b.completed();
        b.batch_done(0);
        // P s1=B fails (42P05): no ParseComplete, the batch ends.
        b.parse_sent(1, b"s1", stmt("SELECT 'B'"));
        assert_eq!(sql_of(&b, 1, b"s1").as_deref(), Some("SELECT 'B'"));
        b.batch_done(1);
        assert_eq!(sql_of(&b, 2, b"s1").as_deref(), Some("SELECT 'A'"));
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
        assert!(b.lookup(1, b"a").is_none());
        b.completed(); // ParseComplete for a
        b.batch_done(0);
        assert_eq!(sql_of(&b, 1, b"a").as_deref(), Some("SELECT 1"));
        assert!(b.lookup(1, b"b").is_none());
        assert_eq!(sql_of(&b, 1, b"c").as_deref(), Some("SELECT 3"));
        b.completed();
        b.batch_done(1);
        assert_eq!(sql_of(&b, 2, b"c").as_deref(), Some("SELECT 3"));
    }

    #[test]
    fn portal_close_keeps_pairing() {
        let mut b = StatementBook::default();
        b.close_sent(0, None);
        b.parse_sent(0, b"s", stmt("SELECT 1"));
        b.completed(); // CloseComplete (portal)
        b.completed(); // ParseComplete
        b.batch_done(0);
        assert_eq!(sql_of(&b, 1, b"s").as_deref(), Some("SELECT 1"));
    }

    #[test]
    fn virtual_statements_materialize_once_and_their_answer_is_dropped() {
        let mut b = StatementBook::default();
        let s = stmt("SELECT 1").unwrap();
        assert!(b.virtual_parse(b"v", Arc::clone(&s), bytes::Bytes::from_static(b"P...")));
        assert_eq!(sql_of(&b, 0, b"v").as_deref(), Some("SELECT 1"));
        // An unrelated batch that fails keeps the virtual statement visible.
        b.parse_sent(0, b"x", stmt("SELECT 2"));
        b.batch_done(0);
        assert_eq!(sql_of(&b, 1, b"v").as_deref(), Some("SELECT 1"));
        // A Bind of it passes through: materialized once, its ParseComplete is ours.
        assert_eq!(b.materialize(1, b"v").as_deref(), Some(&b"P..."[..]));
        assert_eq!(b.materialize(1, b"v"), None);
        assert!(b.completed());
        b.batch_done(1);
        assert_eq!(sql_of(&b, 2, b"v").as_deref(), Some("SELECT 1"));
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
    fn a_materialized_statement_postgres_skipped_is_the_proxys_again() {
        let mut b = StatementBook::default();
        let s = stmt("SELECT 1").unwrap();
        assert!(b.virtual_parse(b"v", Arc::clone(&s), bytes::Bytes::from_static(b"P.v")));
        // Batch 0: the client's earlier message fails, so Postgres skips the injected Parse.
        assert_eq!(b.materialize(0, b"v").as_deref(), Some(&b"P.v"[..]));
        b.batch_done(0);
        assert_eq!(sql_of(&b, 1, b"v").as_deref(), Some("SELECT 1"));
        // Still only the proxy's: the next Bind of it materializes it again.
        assert_eq!(b.materialize(1, b"v").as_deref(), Some(&b"P.v"[..]));
        assert!(b.completed(), "the injected Parse's answer is the proxy's");
        b.batch_done(1);
        assert_eq!(b.materialize(2, b"v"), None, "Postgres has it now");
        assert_eq!(sql_of(&b, 2, b"v").as_deref(), Some("SELECT 1"));
        // Skipped, but a later batch's op names it: not restored.
        assert!(b.virtual_parse(b"w", Arc::clone(&s), bytes::Bytes::from_static(b"P.w")));
        assert!(b.materialize(2, b"w").is_some());
        b.close_sent(3, Some(b"w"));
        b.batch_done(2);
        assert_eq!(b.materialize(3, b"w"), None);
    }

    #[test]
    fn parses_answered_after_a_deallocate_do_not_bring_their_names_back() {
        let mut b = StatementBook::default();
        // `Parse s1 Sync` unanswered, then a `DEALLOCATE ALL` Query pipelined behind it.
        b.parse_sent(0, b"s1", stmt("SELECT 1"));
        b.parse_sent(0, b"s2", stmt("SELECT 2"));
        b.forget(None);
        assert!(!b.completed(), "the client's ParseComplete");
        assert!(!b.completed());
        b.batch_done(0);
        b.batch_done(1);
        // A later batch that fails rebuilds the view from the confirmed statements.
        b.parse_sent(2, b"x", stmt("SELECT 0"));
        b.batch_done(2);
        assert_eq!(sql_of(&b, 3, b"s1"), None);
        assert_eq!(sql_of(&b, 3, b"s2"), None);
        // One name only: the other Parse keeps its statement; an injected one's answer
        // stays the proxy's.
        let s = stmt("SELECT 3").unwrap();
        assert!(b.virtual_parse(b"v", Arc::clone(&s), bytes::Bytes::from_static(b"P.v")));
        assert!(b.materialize(3, b"v").is_some());
        b.parse_sent(3, b"k", stmt("SELECT 4"));
        b.forget(Some(b"v"));
        assert!(b.completed(), "the injected Parse's answer is the proxy's");
        assert!(!b.completed());
        b.batch_done(3);
        b.parse_sent(4, b"x", stmt("SELECT 0"));
        b.batch_done(4);
        assert_eq!(sql_of(&b, 5, b"v"), None);
        assert_eq!(sql_of(&b, 5, b"k").as_deref(), Some("SELECT 4"));
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
        assert_eq!(sql_of(&b, 1, b"s").as_deref(), Some("SELECT 1"));
        assert!(b.lookup(1, PRIVATE_STATEMENT).is_none());
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
        assert!(b.lookup(2, b"x").is_none());
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
        assert!(matches!(b.source(0, b"known"), Lookup::Known(_)));
        assert!(matches!(b.source(0, b"opaque"), Lookup::Unknown));
        assert!(matches!(b.source(0, b"from_sql"), Lookup::SqlPrepared));
        // A Parse Postgres skipped leaves no statement behind.
        b.batch_done(0);
        assert!(matches!(b.source(1, b"known"), Lookup::SqlPrepared));
        // SQL PREPARE makes names the book cannot see, but none of them is lost.
        b.no_virtual_names();
        assert!(matches!(b.source(1, b"from_sql"), Lookup::SqlPrepared));
        b.names_may_be_lost();
        assert!(matches!(b.source(1, b"from_sql"), Lookup::Unknown));

        let mut full = StatementBook::default();
        for i in 0..=MAX_STATEMENTS {
            full.parse_sent(1, format!("s{i}").as_bytes(), stmt("SELECT 1"));
            full.completed();
        }
        assert!(matches!(full.source(2, b"s0"), Lookup::Unknown));
    }

    #[test]
    fn ops_an_earlier_batch_may_skip_leave_the_name_in_doubt() {
        let mut b = StatementBook::default();
        b.parse_sent(0, b"d", stmt("SELECT 1"));
        b.completed();
        b.batch_done(0);
        // Batch 1: an error, then Close d (Postgres may skip it); batch 2 binds d.
        b.close_sent(1, Some(b"d"));
        assert!(b.lookup(1, b"d").is_none());
        assert!(b.lookup(2, b"d").is_none());
        assert!(matches!(b.source(2, b"d"), Lookup::Unknown));
        // Batch 1: Parse e (may be skipped, leaving no e); batch 2 sees it in doubt.
        b.parse_sent(1, b"e", stmt("SELECT 2"));
        assert_eq!(sql_of(&b, 1, b"e").as_deref(), Some("SELECT 2"));
        assert!(b.lookup(2, b"e").is_none());
        // Postgres had no e before: the Bind runs the Parse's statement or fails, so it is
        // classified by it (never answered from the cache).
        assert!(matches!(b.source(2, b"e"), Lookup::Known(_)));
        b.no_virtual_names();
        assert!(matches!(b.source(2, b"e"), Lookup::Unknown));
        // Batch 1 failed: both ops skipped; d is back and e never was.
        b.batch_done(1);
        assert_eq!(sql_of(&b, 2, b"d").as_deref(), Some("SELECT 1"));
        assert!(matches!(b.source(2, b"e"), Lookup::SqlPrepared));
    }

    #[test]
    fn names_are_keyed_as_postgres_keys_them() {
        let mut b = StatementBook::default();
        let long = [b'a'; NAME_BYTES];
        let mut x = long.to_vec();
        x.push(b'x');
        let mut y = long.to_vec();
        y.push(b'y');
        b.parse_sent(0, &x, stmt("SELECT 1"));
        b.completed();
        b.batch_done(0);
        // Postgres reads `..y` as the statement `..x` made.
        assert_eq!(sql_of(&b, 1, &y).as_deref(), Some("SELECT 1"));
        b.close_sent(1, Some(&y));
        b.completed();
        assert!(matches!(b.source(1, &x), Lookup::SqlPrepared));
        // A non-ASCII name may name another statement after a change of client_encoding.
        b.parse_sent(1, "é".as_bytes(), stmt("SELECT 2"));
        b.completed();
        b.batch_done(1);
        assert!(b.lookup(2, "é".as_bytes()).is_none());
        assert!(matches!(b.source(2, b"\xe9"), Lookup::Unknown));
    }
}
