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

use super::state::PreparedStatement;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Names tracked at most (distinct statements a session keeps prepared); beyond, the book
/// forgets everything and lookups miss (their statements count as unclassified) until the
/// names are parsed again. Real clients stay far below.
pub const MAX_STATEMENTS: usize = 10_000;

#[derive(Debug)]
enum Op {
    /// `None`: the statement could not be classified.
    Parse(Box<[u8]>, Option<Arc<PreparedStatement>>),
    Close(Box<[u8]>),
    /// A Close of a portal: answered by CloseComplete too, changes no statement.
    ClosePortal,
}

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
}

fn apply(map: &mut HashMap<Box<[u8]>, Option<Arc<PreparedStatement>>>, op: &Op) {
    match op {
        Op::Parse(name, stmt) => {
            if map.len() >= MAX_STATEMENTS && !map.contains_key(name) {
                map.clear();
            }
            map.insert(name.clone(), stmt.clone());
        }
        Op::Close(name) => {
            map.remove(name);
        }
        Op::ClosePortal => {}
    }
}

impl StatementBook {
    fn sent(&mut self, batch: u64, op: Op) {
        apply(&mut self.view, &op);
        if self.pending.len() >= MAX_STATEMENTS {
            // A client that never reads its responses: stop tracking confirmations.
            self.pending.clear();
            self.confirmed = self.view.clone();
            return;
        }
        self.pending.push_back(Pending { batch, op });
    }

    /// A Parse was forwarded in batch `batch`.
    pub fn parse_sent(&mut self, batch: u64, name: &[u8], stmt: Option<Arc<PreparedStatement>>) {
        self.sent(batch, Op::Parse(name.into(), stmt));
    }

    /// A Close of a statement (`Some(name)`) or of a portal (`None`) was forwarded.
    pub fn close_sent(&mut self, batch: u64, statement: Option<&[u8]>) {
        let op = match statement {
            Some(name) => Op::Close(name.into()),
            None => Op::ClosePortal,
        };
        self.sent(batch, op);
    }

    /// SQL-level `DEALLOCATE name` / `DEALLOCATE ALL` / `DISCARD ALL`: applied at once to
    /// both views (they are rare, and a failed one leaves at worst a statement unclassified).
    pub fn forget(&mut self, name: Option<&[u8]>) {
        match name {
            Some(n) => {
                self.view.remove(n);
                self.confirmed.remove(n);
            }
            None => {
                self.view.clear();
                self.confirmed.clear();
            }
        }
    }

    /// The statement a Bind sent now refers to. `None` when unknown or unclassified.
    pub fn lookup(&self, name: &[u8]) -> Option<&Arc<PreparedStatement>> {
        self.view.get(name).and_then(Option::as_ref)
    }

    /// ParseComplete or CloseComplete: the oldest unanswered op took effect.
    pub fn completed(&mut self) {
        if let Some(p) = self.pending.pop_front() {
            apply(&mut self.confirmed, &p.op);
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
}
