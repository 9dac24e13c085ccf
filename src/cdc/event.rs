//! What the change feed hands its consumer: whole committed transactions in commit order,
//! and resets whenever continuity is lost.
//!
//! The types are plain owned values so one feed can serve several consumers later (the cache
//! now, the search store next) by cloning events, and so tests can compare them with `==`.

use super::lsn::Lsn;
use std::fmt;
use std::time::SystemTime;

/// A table as `(schema, name)`, unquoted (exactly as in `pg_class`/`pg_namespace`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// `"schema"."name"`, quoted for SQL whatever characters the names hold.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

impl<S: Into<String>, N: Into<String>> From<(S, N)> for TableName {
    fn from((schema, name): (S, N)) -> Self {
        TableName::new(schema, name)
    }
}

/// Quotes an SQL identifier: wraps it in double quotes and doubles any inside.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes an SQL string literal (standard_conforming_strings, which every supported server has
/// on): wraps it in single quotes and doubles any inside.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
    /// The whole table was emptied (`key` and `new_row` are empty).
    Truncate,
    /// The table changed in ways not itemized: the transaction held more than
    /// `max_transaction_changes` changes, so the feed kept only which tables it touched.
    /// Drop everything held for the table (like a truncate, but the table is not empty).
    Invalidate,
}

/// A column value of a new row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// The value in PostgreSQL's text output format.
    Text(String),
    /// A TOASTed value this update did not change; the server does not resend it, so the
    /// consumer does not know it (invalidate rather than update what it holds).
    UnchangedToast,
}

impl Value {
    /// The text, or `None` for NULL and unchanged TOAST.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            Value::Null | Value::UnchangedToast => None,
        }
    }
}

/// One row change (or one truncated table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub table: TableName,
    pub kind: ChangeKind,
    /// The replica identity columns (usually the primary key) and their text values: of the
    /// old row when the server sent one (updates that change the key, deletes, REPLICA
    /// IDENTITY FULL), else of the new row. Empty for truncate and invalidate.
    pub key: Vec<(String, Option<String>)>,
    /// Every column of the new row, for inserts and updates.
    pub new_row: Option<Vec<(String, Value)>>,
    /// The type OIDs of `new_row`'s columns as the server described the table when it
    /// decoded the change (domains not resolved); empty without a new row.
    pub new_types: Vec<u32>,
}

/// The settings a feed session's text values were produced under: what the server reported
/// at start-up (`TimeZone`, `DateStyle`, `IntervalStyle`, ...) and the output settings the
/// feed asked for with `SHOW` (those of [`crate::cache::profile::UNREPORTED`]).
pub type OutputSettings = std::collections::BTreeMap<String, String>;

/// A committed transaction with every change it made to the published tables, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub xid: u32,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End of the commit record. Acknowledge this ([`super::FeedHandle::ack`]) once the
    /// transaction is applied; the slot is confirmed up to the last acknowledged `end_lsn`.
    pub end_lsn: Lsn,
    /// Commit time on the server's clock.
    pub commit_time: SystemTime,
    pub changes: Vec<Change>,
    /// The settings the changes' text values were produced under; `None` when the feed could
    /// not read them (its consumers then must not take the text for what a session sees).
    pub output: Option<std::sync::Arc<OutputSettings>>,
}

/// What the feed delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// A committed transaction; transactions arrive in commit order, whole, once each within
    /// one feed's lifetime (after a restart, those not acknowledged come again).
    Commit(Transaction),
    /// Continuity is lost: changes may have been missed. Flush every store fed from this feed
    /// and re-validate it against Postgres before trusting it again. Commits delivered after a
    /// Reset are complete from the point the feed resumed at.
    Reset { reason: ResetReason },
}

/// Why a [`FeedEvent::Reset`] was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetReason {
    /// The slot did not exist when the feed started (first start, or lost while the proxy was
    /// down); it was created at `consistent_point`.
    SlotCreated { consistent_point: Lsn },
    /// The slot vanished or was invalidated while this feed used it; it was created again at
    /// `consistent_point`.
    SlotLost { consistent_point: Lsn },
    /// The slot's confirmed position is beyond anything this feed confirmed: someone else
    /// advanced or recreated it.
    SlotMoved { confirmed_flush: Lsn },
    /// The replication connection broke (the feed reconnects and resumes from the slot).
    ConnectionLost { error: String },
    /// A change named a table the server never described in this session.
    UnknownRelation { oid: u32 },
    /// A message could not be decoded or broke the protocol's order.
    Decode { error: String },
}

impl fmt::Display for ResetReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetReason::SlotCreated { consistent_point } => {
                write!(f, "replication slot created at {consistent_point}")
            }
            ResetReason::SlotLost { consistent_point } => write!(
                f,
                "replication slot was lost; created again at {consistent_point}"
            ),
            ResetReason::SlotMoved { confirmed_flush } => write!(
                f,
                "replication slot was moved by someone else (confirmed up to {confirmed_flush})"
            ),
            ResetReason::ConnectionLost { error } => {
                write!(f, "replication connection lost: {error}")
            }
            ResetReason::UnknownRelation { oid } => {
                write!(f, "change for relation {oid} that was never described")
            }
            ResetReason::Decode { error } => write!(f, "undecodable change stream: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("plain"), "\"plain\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(
            TableName::new("My Schema", "t\"1").quoted(),
            "\"My Schema\".\"t\"\"1\""
        );
        assert_eq!(TableName::from(("public", "t")).to_string(), "public.t");
    }
}
