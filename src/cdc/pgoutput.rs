//! A pure decoder for the `pgoutput` plugin's logical replication messages, protocol
//! version 1, plus the relation cache that gives their column numbers names.
//!
//! Why hand-written: the messages are small and fixed (PostgreSQL docs, "Logical Replication
//! Message Formats"), and a decoder that takes `&[u8]` and returns a value or an error, with
//! no I/O, can be tested byte for byte and can never panic on what a server (or an attacker
//! between us and it) sends. Every read is bounds-checked; counts read from the input never
//! size an allocation beyond what the remaining input could hold.
//!
//! Text values arrive in the connection's `client_encoding`, which the replication connection
//! sets to UTF8, so they are decoded into `String`s here; anything else is a [`DecodeError`].

use super::lsn::Lsn;
use std::collections::HashMap;

/// One pgoutput message (the payload of an XLogData frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage {
    Begin(Begin),
    Commit(Commit),
    /// The transaction came from another node via replication origin `name`.
    Origin {
        commit_lsn: Lsn,
        name: String,
    },
    Relation(Relation),
    /// A non-built-in type used by a later Relation.
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Tuple,
    },
    Update {
        relation: u32,
        old: Option<OldTuple>,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: OldTuple,
    },
    Truncate {
        /// Bit 1: CASCADE, bit 2: RESTART IDENTITY.
        options: u8,
        relations: Vec<u32>,
    },
    /// `pg_logical_emit_message` output (only sent when the `messages` option is on).
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    /// Commit time, µs since 2000-01-01 UTC.
    pub commit_time: i64,
    pub xid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub flags: u8,
    /// LSN of the commit record (equals [`Begin::final_lsn`]).
    pub commit_lsn: Lsn,
    /// End of the commit record: confirming this position means the transaction is done.
    pub end_lsn: Lsn,
    /// Commit time, µs since 2000-01-01 UTC.
    pub commit_time: i64,
}

/// A table's shape as the server describes it before the first change of the table in a
/// session (and again after it changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// Schema name (`pg_catalog` is sent as an empty string and restored here).
    pub namespace: String,
    pub name: String,
    /// `d` default (primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Part of the replica identity (the key sent with updates and deletes).
    pub key: bool,
}

/// The old row of an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// 'K': only the replica identity columns carry values; the others are NULL.
    Key(Tuple),
    /// 'O': the whole old row (REPLICA IDENTITY FULL).
    Full(Tuple),
}

impl OldTuple {
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// Column values in the relation's column order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tuple(pub Vec<Datum>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// 'n'
    Null,
    /// 'u': a TOASTed value the update did not change; the server does not resend it.
    UnchangedToast,
    /// 't': the value in text format.
    Text(String),
    /// 'b': the value in binary format (only with the `binary` option, which we never set).
    Binary(Vec<u8>),
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("pgoutput: empty message")]
    Empty,
    #[error("pgoutput: unknown message type {0:?}")]
    UnknownMessage(char),
    #[error("pgoutput: {what} is truncated")]
    Truncated { what: &'static str },
    #[error("pgoutput: {what} is not terminated")]
    Unterminated { what: &'static str },
    #[error("pgoutput: {what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("pgoutput: negative {what}: {value}")]
    Negative { what: &'static str, value: i64 },
    #[error("pgoutput: unknown tuple data kind {0:?}")]
    UnknownDatum(char),
    #[error("pgoutput: unexpected tuple marker {0:?}")]
    UnexpectedMarker(char),
    #[error("pgoutput: {0} trailing bytes after the message")]
    Trailing(usize),
}

/// Decodes one pgoutput v1 message.
pub fn decode(buf: &[u8]) -> Result<PgOutputMessage, DecodeError> {
    let (&tag, body) = buf.split_first().ok_or(DecodeError::Empty)?;
    let mut r = Reader { buf: body };
    let msg = match tag {
        b'B' => PgOutputMessage::Begin(Begin {
            final_lsn: Lsn(r.u64("Begin")?),
            commit_time: r.i64("Begin")?,
            xid: r.u32("Begin")?,
        }),
        b'C' => PgOutputMessage::Commit(Commit {
            flags: r.u8("Commit")?,
            commit_lsn: Lsn(r.u64("Commit")?),
            end_lsn: Lsn(r.u64("Commit")?),
            commit_time: r.i64("Commit")?,
        }),
        b'O' => PgOutputMessage::Origin {
            commit_lsn: Lsn(r.u64("Origin")?),
            name: r.string("origin name")?,
        },
        b'R' => PgOutputMessage::Relation(relation(&mut r)?),
        b'Y' => PgOutputMessage::Type {
            oid: r.u32("Type")?,
            namespace: r.string("type namespace")?,
            name: r.string("type name")?,
        },
        b'I' => {
            let relation = r.u32("Insert")?;
            match r.u8("Insert")? {
                b'N' => PgOutputMessage::Insert {
                    relation,
                    new: tuple(&mut r)?,
                },
                m => return Err(DecodeError::UnexpectedMarker(m as char)),
            }
        }
        b'U' => {
            let relation = r.u32("Update")?;
            let (old, marker) = match r.u8("Update")? {
                b'K' => (Some(OldTuple::Key(tuple(&mut r)?)), r.u8("Update")?),
                b'O' => (Some(OldTuple::Full(tuple(&mut r)?)), r.u8("Update")?),
                m => (None, m),
            };
            if marker != b'N' {
                return Err(DecodeError::UnexpectedMarker(marker as char));
            }
            PgOutputMessage::Update {
                relation,
                old,
                new: tuple(&mut r)?,
            }
        }
        b'D' => {
            let relation = r.u32("Delete")?;
            let old = match r.u8("Delete")? {
                b'K' => OldTuple::Key(tuple(&mut r)?),
                b'O' => OldTuple::Full(tuple(&mut r)?),
                m => return Err(DecodeError::UnexpectedMarker(m as char)),
            };
            PgOutputMessage::Delete { relation, old }
        }
        b'T' => {
            let count = r.count32("Truncate relation count")?;
            let options = r.u8("Truncate")?;
            let mut relations = Vec::with_capacity(count.min(r.buf.len() / 4));
            for _ in 0..count {
                relations.push(r.u32("Truncate relation")?);
            }
            PgOutputMessage::Truncate { options, relations }
        }
        b'M' => {
            let flags = r.u8("Message")?;
            let lsn = Lsn(r.u64("Message")?);
            let prefix = r.string("message prefix")?;
            let len = r.count32("message length")?;
            let content = r.bytes(len, "message content")?.to_vec();
            PgOutputMessage::Message {
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content,
            }
        }
        other => return Err(DecodeError::UnknownMessage(other as char)),
    };
    if !r.buf.is_empty() {
        return Err(DecodeError::Trailing(r.buf.len()));
    }
    Ok(msg)
}

fn relation(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let oid = r.u32("Relation")?;
    let namespace = match r.string("relation namespace")? {
        ns if ns.is_empty() => "pg_catalog".to_string(),
        ns => ns,
    };
    let name = r.string("relation name")?;
    let replica_identity = r.u8("Relation")?;
    let count = r.count16("relation column count")?;
    // Each column takes at least 10 bytes (flags, empty name, type oid, typmod).
    let mut columns = Vec::with_capacity(count.min(r.buf.len() / 10));
    for _ in 0..count {
        let flags = r.u8("relation column")?;
        columns.push(RelationColumn {
            name: r.string("column name")?,
            type_oid: r.u32("relation column")?,
            type_modifier: r.i32("relation column")?,
            key: flags & 1 == 1,
        });
    }
    Ok(Relation {
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn tuple(r: &mut Reader<'_>) -> Result<Tuple, DecodeError> {
    let count = r.count16("tuple column count")?;
    let mut values = Vec::with_capacity(count.min(r.buf.len()));
    for _ in 0..count {
        values.push(match r.u8("tuple data")? {
            b'n' => Datum::Null,
            b'u' => Datum::UnchangedToast,
            b't' => {
                let len = r.count32("text value length")?;
                let bytes = r.bytes(len, "text value")?;
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| DecodeError::InvalidUtf8 { what: "text value" })?;
                Datum::Text(text.to_string())
            }
            b'b' => {
                let len = r.count32("binary value length")?;
                Datum::Binary(r.bytes(len, "binary value")?.to_vec())
            }
            other => return Err(DecodeError::UnknownDatum(other as char)),
        });
    }
    Ok(Tuple(values))
}

/// A bounds-checked cursor over a message body.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { what });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn count16(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let v = self.i16(what)?;
        usize::try_from(v).map_err(|_| DecodeError::Negative {
            what,
            value: v.into(),
        })
    }

    fn count32(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let v = self.i32(what)?;
        usize::try_from(v).map_err(|_| DecodeError::Negative {
            what,
            value: v.into(),
        })
    }

    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let nul = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Unterminated { what })?;
        let text = std::str::from_utf8(&self.buf[..nul])
            .map_err(|_| DecodeError::InvalidUtf8 { what })?
            .to_string();
        self.buf = &self.buf[nul + 1..];
        Ok(text)
    }
}

/// The Relation messages seen in this replication session, by table OID.
///
/// The server sends a table's Relation once per session before its first change (and again
/// when the table changes shape), so the cache must be cleared whenever a new session starts;
/// a change for an OID not in the cache means continuity was lost.
#[derive(Debug, Default)]
pub struct RelationCache {
    relations: HashMap<u32, Relation>,
}

impl RelationCache {
    /// Records (or replaces) a table's description.
    pub fn insert(&mut self, relation: Relation) {
        self.relations.insert(relation.oid, relation);
    }

    pub fn get(&self, oid: u32) -> Option<&Relation> {
        self.relations.get(&oid)
    }

    pub fn len(&self) -> usize {
        self.relations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }

    pub fn clear(&mut self) {
        self.relations.clear();
    }
}

#[cfg(test)]
#[path = "pgoutput_tests.rs"]
pub(crate) mod tests;
