//! Turns the decoded pgoutput message stream into whole transactions.
//!
//! The server sends Begin, then a transaction's changes (each naming its table by OID,
//! described earlier by a Relation message), then Commit. The consumer wants committed
//! transactions only, with table and column names, so changes are buffered here until their
//! Commit and dropped if the session ends first. Pure state machine, no I/O: the stream loop
//! feeds it one message at a time and the tests feed it hand-built ones.
//!
//! A transaction that grows past `max_changes` is not buffered further: the assembler keeps
//! only the set of tables it touched and reports one [`ChangeKind::Invalidate`] per table at
//! commit, so a bulk update of millions of rows cannot exhaust memory.

use super::event::{Change, ChangeKind, OutputSettings, TableName, Transaction, Value};
use super::lsn::{pg_time_to_system, Lsn};
use super::pgoutput::{
    Begin, Datum, DecodeError, OldTuple, PgOutputMessage, Relation, RelationCache, Tuple,
};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The message stream broke its rules; continuity is lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("change for relation {0} without a preceding Relation message")]
    UnknownRelation(u32),
    #[error("{0} outside a transaction")]
    OutsideTransaction(&'static str),
    #[error("Begin inside an open transaction")]
    NestedBegin,
    #[error("Commit at {got} does not match Begin at {expected}")]
    CommitMismatch { expected: Lsn, got: Lsn },
    #[error("{table}: row has {got} columns, the relation has {expected}")]
    ColumnCount {
        table: TableName,
        expected: usize,
        got: usize,
    },
    #[error("{table}: key column {column} was not sent (unchanged TOAST)")]
    UnchangedKey { table: TableName, column: String },
    #[error("{table}: binary-format value in column {column} (binary output was not requested)")]
    BinaryValue { table: TableName, column: String },
}

/// Buffers one transaction at a time.
#[derive(Debug)]
pub struct Assembler {
    relations: RelationCache,
    open: Option<OpenTxn>,
    max_changes: usize,
    /// The current session's output settings (see [`Transaction::output`]).
    output: Option<Arc<OutputSettings>>,
}

#[derive(Debug)]
struct OpenTxn {
    begin: Begin,
    changes: Vec<Change>,
    /// Set once the transaction exceeded `max_changes`: the tables it touched.
    overflow: Option<BTreeSet<TableName>>,
}

impl OpenTxn {
    fn push(&mut self, change: Change, max_changes: usize) {
        if let Some(tables) = &mut self.overflow {
            tables.insert(change.table);
            return;
        }
        self.changes.push(change);
        if self.changes.len() > max_changes {
            let tables = self.changes.drain(..).map(|c| c.table).collect();
            self.overflow = Some(tables);
        }
    }
}

impl Assembler {
    /// `max_changes`: the most changes buffered for one transaction (see the module docs).
    pub fn new(max_changes: usize) -> Self {
        Assembler {
            relations: RelationCache::default(),
            open: None,
            max_changes,
            output: None,
        }
    }

    /// Forgets the relation cache and any open transaction: a new replication session
    /// starts (the server describes every table again). `output`: the settings this
    /// session's text values are produced under, carried by every transaction it assembles.
    pub fn new_session(&mut self, output: Option<Arc<OutputSettings>>) {
        self.relations.clear();
        self.open = None;
        self.output = output;
    }

    /// A transaction has begun and not yet committed.
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// Decodes and applies one pgoutput message; returns the transaction its Commit ended.
    pub fn apply_bytes(&mut self, payload: &[u8]) -> Result<Option<Transaction>, AssembleError> {
        let msg = super::pgoutput::decode(payload)?;
        self.apply(msg)
    }

    /// Applies one decoded message; returns the transaction its Commit ended.
    pub fn apply(&mut self, msg: PgOutputMessage) -> Result<Option<Transaction>, AssembleError> {
        match msg {
            PgOutputMessage::Begin(begin) => {
                if self.open.is_some() {
                    return Err(AssembleError::NestedBegin);
                }
                self.open = Some(OpenTxn {
                    begin,
                    changes: Vec::new(),
                    overflow: None,
                });
                Ok(None)
            }
            PgOutputMessage::Commit(commit) => {
                let txn = self
                    .open
                    .take()
                    .ok_or(AssembleError::OutsideTransaction("Commit"))?;
                if txn.begin.final_lsn != commit.commit_lsn {
                    return Err(AssembleError::CommitMismatch {
                        expected: txn.begin.final_lsn,
                        got: commit.commit_lsn,
                    });
                }
                let changes = match txn.overflow {
                    None => txn.changes,
                    Some(tables) => tables
                        .into_iter()
                        .map(|table| Change {
                            table,
                            kind: ChangeKind::Invalidate,
                            key: Vec::new(),
                            new_row: None,
                            new_types: Vec::new(),
                        })
                        .collect(),
                };
                Ok(Some(Transaction {
                    xid: txn.begin.xid,
                    commit_lsn: commit.commit_lsn,
                    end_lsn: commit.end_lsn,
                    commit_time: pg_time_to_system(commit.commit_time),
                    changes,
                    output: self.output.clone(),
                }))
            }
            PgOutputMessage::Relation(rel) => {
                self.relations.insert(rel);
                Ok(None)
            }
            PgOutputMessage::Origin { .. }
            | PgOutputMessage::Type { .. }
            | PgOutputMessage::Message { .. } => Ok(None),
            PgOutputMessage::Insert { relation, new } => {
                let rel = self.relation(relation)?;
                let new_row = new_row(rel, &new)?;
                let key = key_of(rel, &new)?;
                self.push(rel_name(rel), ChangeKind::Insert, key, Some(new_row))
            }
            PgOutputMessage::Update { relation, old, new } => {
                let rel = self.relation(relation)?;
                let new_row = new_row(rel, &new)?;
                let key = key_of(rel, old.as_ref().map(OldTuple::tuple).unwrap_or(&new))?;
                self.push(rel_name(rel), ChangeKind::Update, key, Some(new_row))
            }
            PgOutputMessage::Delete { relation, old } => {
                let rel = self.relation(relation)?;
                let key = key_of(rel, old.tuple())?;
                self.push(rel_name(rel), ChangeKind::Delete, key, None)
            }
            PgOutputMessage::Truncate { relations, .. } => {
                let mut tables = Vec::with_capacity(relations.len());
                for oid in relations {
                    tables.push(rel_name(self.relation(oid)?));
                }
                for table in tables {
                    self.push(table, ChangeKind::Truncate, Vec::new(), None)?;
                }
                Ok(None)
            }
        }
    }

    fn relation(&self, oid: u32) -> Result<&Relation, AssembleError> {
        self.relations
            .get(oid)
            .ok_or(AssembleError::UnknownRelation(oid))
    }

    fn push(
        &mut self,
        table: TableName,
        kind: ChangeKind,
        key: Vec<(String, Option<String>)>,
        new_row: Option<NewRow>,
    ) -> Result<Option<Transaction>, AssembleError> {
        let txn = self
            .open
            .as_mut()
            .ok_or(AssembleError::OutsideTransaction("change"))?;
        let (new_row, new_types) = match new_row {
            Some((row, types)) => (Some(row), types),
            None => (None, Vec::new()),
        };
        txn.push(
            Change {
                table,
                kind,
                key,
                new_row,
                new_types,
            },
            self.max_changes,
        );
        Ok(None)
    }
}

fn rel_name(rel: &Relation) -> TableName {
    TableName::new(rel.namespace.clone(), rel.name.clone())
}

/// A new row's columns with their values, and their type OIDs.
type NewRow = (Vec<(String, Value)>, Vec<u32>);

/// Every column of a new row with its name, and the relation's type OIDs, in order.
fn new_row(rel: &Relation, tuple: &Tuple) -> Result<NewRow, AssembleError> {
    Ok((
        row(rel, tuple)?,
        rel.columns.iter().map(|c| c.type_oid).collect(),
    ))
}

fn check_width(rel: &Relation, tuple: &Tuple) -> Result<(), AssembleError> {
    if tuple.0.len() != rel.columns.len() {
        return Err(AssembleError::ColumnCount {
            table: rel_name(rel),
            expected: rel.columns.len(),
            got: tuple.0.len(),
        });
    }
    Ok(())
}

/// Every column of `tuple` with its name.
fn row(rel: &Relation, tuple: &Tuple) -> Result<Vec<(String, Value)>, AssembleError> {
    check_width(rel, tuple)?;
    rel.columns
        .iter()
        .zip(&tuple.0)
        .map(|(col, datum)| {
            let value = match datum {
                Datum::Null => Value::Null,
                Datum::UnchangedToast => Value::UnchangedToast,
                Datum::Text(s) => Value::Text(s.clone()),
                Datum::Binary(_) => {
                    return Err(AssembleError::BinaryValue {
                        table: rel_name(rel),
                        column: col.name.clone(),
                    })
                }
            };
            Ok((col.name.clone(), value))
        })
        .collect()
}

/// The replica identity columns of `tuple` with their values.
fn key_of(rel: &Relation, tuple: &Tuple) -> Result<Vec<(String, Option<String>)>, AssembleError> {
    check_width(rel, tuple)?;
    rel.columns
        .iter()
        .zip(&tuple.0)
        .filter(|(col, _)| col.key)
        .map(|(col, datum)| match datum {
            Datum::Null => Ok((col.name.clone(), None)),
            Datum::Text(s) => Ok((col.name.clone(), Some(s.clone()))),
            Datum::UnchangedToast => Err(AssembleError::UnchangedKey {
                table: rel_name(rel),
                column: col.name.clone(),
            }),
            Datum::Binary(_) => Err(AssembleError::BinaryValue {
                table: rel_name(rel),
                column: col.name.clone(),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::pgoutput::tests::{begin, commit, relation_msg, Msg};

    fn feed(a: &mut Assembler, msgs: &[Vec<u8>]) -> Vec<Transaction> {
        let mut out = Vec::new();
        for m in msgs {
            if let Some(t) = a.apply_bytes(m).expect("valid stream") {
                out.push(t);
            }
        }
        out
    }

    fn text(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn a_transaction_arrives_whole_at_commit() {
        let mut a = Assembler::new(100);
        let insert = Msg::tag(b'I')
            .u32(1)
            .u8(b'N')
            .i16(2)
            .text("1")
            .text("it's ü")
            .0;
        let update_key = Msg::tag(b'U')
            .u32(1)
            .u8(b'K')
            .i16(2)
            .text("1")
            .u8(b'n')
            .u8(b'N')
            .i16(2)
            .text("2")
            .u8(b'u')
            .0;
        let delete = Msg::tag(b'D').u32(1).u8(b'K').i16(2).text("2").u8(b'n').0;
        let truncate = Msg::tag(b'T').i32(1).u8(0).u32(1).0;
        let mut stream = vec![relation_msg(1, "t"), begin(100, 0, 9), insert, update_key];
        assert!(feed(&mut a, &stream).is_empty());
        assert!(a.in_transaction());
        stream = vec![delete, truncate, commit(100, 108, 0)];
        let txns = feed(&mut a, &stream);
        assert!(!a.in_transaction());
        assert_eq!(txns.len(), 1);
        let t = &txns[0];
        assert_eq!((t.xid, t.commit_lsn, t.end_lsn), (9, Lsn(100), Lsn(108)));
        let table = TableName::new("public", "t");
        assert_eq!(
            t.changes,
            vec![
                Change {
                    table: table.clone(),
                    kind: ChangeKind::Insert,
                    key: vec![("id".into(), text("1"))],
                    new_row: Some(vec![
                        ("id".into(), Value::Text("1".into())),
                        ("body".into(), Value::Text("it's ü".into()))
                    ]),
                    new_types: vec![23, 25],
                },
                Change {
                    table: table.clone(),
                    kind: ChangeKind::Update,
                    key: vec![("id".into(), text("1"))],
                    new_row: Some(vec![
                        ("id".into(), Value::Text("2".into())),
                        ("body".into(), Value::UnchangedToast)
                    ]),
                    new_types: vec![23, 25],
                },
                Change {
                    table: table.clone(),
                    kind: ChangeKind::Delete,
                    key: vec![("id".into(), text("2"))],
                    new_row: None,
                    new_types: vec![],
                },
                Change {
                    table,
                    kind: ChangeKind::Truncate,
                    key: vec![],
                    new_row: None,
                    new_types: vec![],
                },
            ]
        );
    }

    #[test]
    fn update_without_old_tuple_takes_the_key_from_the_new_row() {
        let mut a = Assembler::new(100);
        let update = Msg::tag(b'U').u32(1).u8(b'N').i16(2).text("5").u8(b'n').0;
        let txns = feed(
            &mut a,
            &[
                relation_msg(1, "t"),
                begin(1, 0, 1),
                update,
                commit(1, 2, 0),
            ],
        );
        assert_eq!(txns[0].changes[0].key, vec![("id".into(), text("5"))]);
        assert_eq!(
            txns[0].changes[0].new_row.as_ref().unwrap()[1],
            ("body".into(), Value::Null)
        );
    }

    #[test]
    fn oversized_transactions_become_invalidations() {
        let mut a = Assembler::new(2);
        let ins = |id: &str| Msg::tag(b'I').u32(1).u8(b'N').i16(2).text(id).u8(b'n').0;
        let mut stream = vec![relation_msg(1, "t"), relation_msg(2, "u"), begin(1, 0, 1)];
        for i in 0..5 {
            stream.push(ins(&i.to_string()));
        }
        stream.push(Msg::tag(b'I').u32(2).u8(b'N').i16(2).text("1").u8(b'n').0);
        stream.push(commit(1, 2, 0));
        let txns = feed(&mut a, &stream);
        let kinds: Vec<_> = txns[0]
            .changes
            .iter()
            .map(|c| (c.table.name.as_str(), c.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![("t", ChangeKind::Invalidate), ("u", ChangeKind::Invalidate)]
        );
    }

    #[test]
    fn broken_streams_are_errors() {
        let ins = Msg::tag(b'I').u32(7).u8(b'N').i16(2).text("1").u8(b'n').0;
        let mut a = Assembler::new(10);
        a.apply_bytes(&begin(1, 0, 1)).unwrap();
        assert_eq!(a.apply_bytes(&ins), Err(AssembleError::UnknownRelation(7)));

        let mut a = Assembler::new(10);
        a.apply_bytes(&relation_msg(7, "t")).unwrap();
        assert_eq!(
            a.apply_bytes(&ins),
            Err(AssembleError::OutsideTransaction("change"))
        );
        assert_eq!(
            a.apply_bytes(&commit(1, 2, 0)),
            Err(AssembleError::OutsideTransaction("Commit"))
        );
        a.apply_bytes(&begin(1, 0, 1)).unwrap();
        assert_eq!(
            a.apply_bytes(&begin(1, 0, 1)),
            Err(AssembleError::NestedBegin)
        );
        let narrow = Msg::tag(b'I').u32(7).u8(b'N').i16(1).text("1").0;
        assert!(matches!(
            a.apply_bytes(&narrow),
            Err(AssembleError::ColumnCount { .. })
        ));
        let toast_key = Msg::tag(b'D').u32(7).u8(b'K').i16(2).u8(b'u').u8(b'n').0;
        assert!(matches!(
            a.apply_bytes(&toast_key),
            Err(AssembleError::UnchangedKey { .. })
        ));
        assert!(matches!(
            a.apply_bytes(&commit(5, 6, 0)),
            Err(AssembleError::CommitMismatch { .. })
        ));
        assert!(matches!(
            a.apply_bytes(b"Q"),
            Err(AssembleError::Decode(DecodeError::UnknownMessage('Q')))
        ));
    }

    #[test]
    fn a_new_session_forgets_relations_and_open_transactions() {
        let mut a = Assembler::new(10);
        feed(&mut a, &[relation_msg(1, "t"), begin(1, 0, 1)]);
        a.new_session(None);
        assert!(!a.in_transaction());
        a.apply_bytes(&begin(1, 0, 1)).unwrap();
        let ins = Msg::tag(b'I').u32(1).u8(b'N').i16(2).text("1").u8(b'n').0;
        assert_eq!(a.apply_bytes(&ins), Err(AssembleError::UnknownRelation(1)));
    }
}
