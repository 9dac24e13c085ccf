//! Unit tests of the pgoutput decoder with hand-built messages, and the message builders
//! the assembler's tests share.

use super::*;

/// Builds message bytes for the tests (here and in the assembler's tests).
#[derive(Default)]
pub(crate) struct Msg(pub Vec<u8>);

impl Msg {
    pub fn tag(t: u8) -> Msg {
        Msg(vec![t])
    }
    pub fn u8(mut self, v: u8) -> Msg {
        self.0.push(v);
        self
    }
    pub fn i16(mut self, v: i16) -> Msg {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i32(mut self, v: i32) -> Msg {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Msg {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Msg {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn str(mut self, s: &str) -> Msg {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        self
    }
    pub fn text(mut self, s: &str) -> Msg {
        self.0.push(b't');
        self.0.extend_from_slice(&(s.len() as i32).to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn raw(mut self, b: &[u8]) -> Msg {
        self.0.extend_from_slice(b);
        self
    }
}

pub(crate) fn begin(final_lsn: u64, time: i64, xid: u32) -> Vec<u8> {
    Msg::tag(b'B').u64(final_lsn).u64(time as u64).u32(xid).0
}

pub(crate) fn commit(commit_lsn: u64, end_lsn: u64, time: i64) -> Vec<u8> {
    Msg::tag(b'C')
        .u8(0)
        .u64(commit_lsn)
        .u64(end_lsn)
        .u64(time as u64)
        .0
}

/// `public.<name>(id int4 key, body text)`
pub(crate) fn relation_msg(oid: u32, name: &str) -> Vec<u8> {
    Msg::tag(b'R')
        .u32(oid)
        .str("public")
        .str(name)
        .u8(b'd')
        .i16(2)
        .u8(1)
        .str("id")
        .u32(23)
        .i32(-1)
        .u8(0)
        .str("body")
        .u32(25)
        .i32(-1)
        .0
}

#[test]
fn begin_and_commit() {
    assert_eq!(
        decode(&begin(0x1_0000_0010, 42, 7)),
        Ok(PgOutputMessage::Begin(Begin {
            final_lsn: Lsn(0x1_0000_0010),
            commit_time: 42,
            xid: 7
        }))
    );
    assert_eq!(
        decode(&commit(16, 24, -5)),
        Ok(PgOutputMessage::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(16),
            end_lsn: Lsn(24),
            commit_time: -5
        }))
    );
}

#[test]
fn origin_type_and_message() {
    let origin = Msg::tag(b'O').u64(99).str("node_a").0;
    assert_eq!(
        decode(&origin),
        Ok(PgOutputMessage::Origin {
            commit_lsn: Lsn(99),
            name: "node_a".into()
        })
    );
    let ty = Msg::tag(b'Y').u32(16400).str("public").str("mood").0;
    assert_eq!(
        decode(&ty),
        Ok(PgOutputMessage::Type {
            oid: 16400,
            namespace: "public".into(),
            name: "mood".into()
        })
    );
    let m = Msg::tag(b'M').u8(1).u64(5).str("pfx").i32(3).raw(b"a\0b").0;
    assert_eq!(
        decode(&m),
        Ok(PgOutputMessage::Message {
            transactional: true,
            lsn: Lsn(5),
            prefix: "pfx".into(),
            content: b"a\0b".to_vec()
        })
    );
}

#[test]
fn relation_with_key_flags_and_pg_catalog() {
    let msg = decode(&relation_msg(16385, "t")).unwrap();
    let PgOutputMessage::Relation(rel) = msg else {
        panic!("not a relation: {msg:?}")
    };
    assert_eq!(rel.oid, 16385);
    assert_eq!((rel.namespace.as_str(), rel.name.as_str()), ("public", "t"));
    assert_eq!(rel.replica_identity, b'd');
    assert_eq!(rel.columns.len(), 2);
    assert!(rel.columns[0].key && !rel.columns[1].key);
    assert_eq!(rel.columns[1].name, "body");
    assert_eq!(rel.columns[1].type_oid, 25);
    let cat = Msg::tag(b'R').u32(1).str("").str("x").u8(b'n').i16(0).0;
    let Ok(PgOutputMessage::Relation(rel)) = decode(&cat) else {
        panic!()
    };
    assert_eq!(rel.namespace, "pg_catalog");
}

#[test]
fn insert_with_every_datum_kind() {
    let msg = Msg::tag(b'I')
        .u32(16385)
        .u8(b'N')
        .i16(4)
        .text("it's \"ü\"")
        .u8(b'n')
        .u8(b'u')
        .u8(b'b')
        .i32(2)
        .raw(&[0, 1])
        .0;
    assert_eq!(
        decode(&msg),
        Ok(PgOutputMessage::Insert {
            relation: 16385,
            new: Tuple(vec![
                Datum::Text("it's \"ü\"".into()),
                Datum::Null,
                Datum::UnchangedToast,
                Datum::Binary(vec![0, 1]),
            ])
        })
    );
}

#[test]
fn update_with_and_without_old_tuple() {
    let plain = Msg::tag(b'U').u32(1).u8(b'N').i16(1).text("a").0;
    assert_eq!(
        decode(&plain),
        Ok(PgOutputMessage::Update {
            relation: 1,
            old: None,
            new: Tuple(vec![Datum::Text("a".into())])
        })
    );
    let key = Msg::tag(b'U')
        .u32(1)
        .u8(b'K')
        .i16(1)
        .text("old")
        .u8(b'N')
        .i16(1)
        .text("new")
        .0;
    assert_eq!(
        decode(&key),
        Ok(PgOutputMessage::Update {
            relation: 1,
            old: Some(OldTuple::Key(Tuple(vec![Datum::Text("old".into())]))),
            new: Tuple(vec![Datum::Text("new".into())])
        })
    );
    let full = Msg::tag(b'U')
        .u32(1)
        .u8(b'O')
        .i16(1)
        .u8(b'n')
        .u8(b'N')
        .i16(1)
        .text("x")
        .0;
    let Ok(PgOutputMessage::Update { old: Some(old), .. }) = decode(&full) else {
        panic!()
    };
    assert!(matches!(old, OldTuple::Full(_)));
    assert_eq!(old.tuple().0, vec![Datum::Null]);
}

#[test]
fn delete_and_truncate() {
    let del = Msg::tag(b'D').u32(9).u8(b'K').i16(1).text("7").0;
    assert_eq!(
        decode(&del),
        Ok(PgOutputMessage::Delete {
            relation: 9,
            old: OldTuple::Key(Tuple(vec![Datum::Text("7".into())]))
        })
    );
    let tr = Msg::tag(b'T').i32(2).u8(3).u32(10).u32(11).0;
    assert_eq!(
        decode(&tr),
        Ok(PgOutputMessage::Truncate {
            options: 3,
            relations: vec![10, 11]
        })
    );
}

#[test]
fn malformed_input_is_an_error_never_a_panic() {
    assert_eq!(decode(&[]), Err(DecodeError::Empty));
    assert_eq!(decode(b"Z"), Err(DecodeError::UnknownMessage('Z')));
    assert!(matches!(
        decode(&begin(1, 2, 3)[..10]),
        Err(DecodeError::Truncated { .. })
    ));
    let mut long = commit(1, 2, 3);
    long.push(0);
    assert_eq!(decode(&long), Err(DecodeError::Trailing(1)));
    // A name without its NUL.
    let unterminated = Msg::tag(b'O').u64(1).raw(b"abc").0;
    assert!(matches!(
        decode(&unterminated),
        Err(DecodeError::Unterminated { .. })
    ));
    // Invalid UTF-8 in a value.
    let bad_utf8 = Msg::tag(b'I')
        .u32(1)
        .u8(b'N')
        .i16(1)
        .u8(b't')
        .i32(2)
        .raw(&[0xff, 0xfe])
        .0;
    assert!(matches!(
        decode(&bad_utf8),
        Err(DecodeError::InvalidUtf8 { .. })
    ));
    // A value longer than the message, a negative length, huge counts.
    let short_value = Msg::tag(b'I')
        .u32(1)
        .u8(b'N')
        .i16(1)
        .u8(b't')
        .i32(1000)
        .raw(b"x")
        .0;
    assert!(matches!(
        decode(&short_value),
        Err(DecodeError::Truncated { .. })
    ));
    let negative = Msg::tag(b'I').u32(1).u8(b'N').i16(1).u8(b't').i32(-2).0;
    assert!(matches!(
        decode(&negative),
        Err(DecodeError::Negative { .. })
    ));
    let many = Msg::tag(b'T').i32(i32::MAX).u8(0).u32(1).0;
    assert!(matches!(decode(&many), Err(DecodeError::Truncated { .. })));
    let neg_cols = Msg::tag(b'I').u32(1).u8(b'N').i16(-1).0;
    assert!(matches!(
        decode(&neg_cols),
        Err(DecodeError::Negative { .. })
    ));
    assert_eq!(
        decode(&Msg::tag(b'I').u32(1).u8(b'X').0),
        Err(DecodeError::UnexpectedMarker('X'))
    );
    assert_eq!(
        decode(&Msg::tag(b'U').u32(1).u8(b'K').i16(0).u8(b'Q').0),
        Err(DecodeError::UnexpectedMarker('Q'))
    );
    assert_eq!(
        decode(&Msg::tag(b'I').u32(1).u8(b'N').i16(1).u8(b'z').0),
        Err(DecodeError::UnknownDatum('z'))
    );
}

#[test]
fn every_prefix_of_valid_messages_fails_cleanly() {
    let samples = [
        begin(1, 2, 3),
        commit(1, 2, 3),
        relation_msg(5, "tbl"),
        Msg::tag(b'U')
            .u32(1)
            .u8(b'K')
            .i16(1)
            .text("old")
            .u8(b'N')
            .i16(2)
            .text("new")
            .u8(b'u')
            .0,
        Msg::tag(b'T').i32(1).u8(0).u32(10).0,
        Msg::tag(b'M').u8(0).u64(5).str("p").i32(1).raw(b"x").0,
    ];
    for s in &samples {
        assert!(decode(s).is_ok());
        for cut in 0..s.len() {
            assert!(decode(&s[..cut]).is_err(), "prefix {cut} of {s:?}");
        }
    }
}

#[test]
fn relation_cache_replaces_and_clears() {
    let mut cache = RelationCache::default();
    let Ok(PgOutputMessage::Relation(rel)) = decode(&relation_msg(1, "a")) else {
        panic!()
    };
    cache.insert(rel);
    let Ok(PgOutputMessage::Relation(rel)) = decode(&relation_msg(1, "b")) else {
        panic!()
    };
    cache.insert(rel);
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.get(1).map(|r| r.name.as_str()), Some("b"));
    cache.clear();
    assert!(cache.is_empty() && cache.get(1).is_none());
}
