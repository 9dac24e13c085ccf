//! The bytes of an answer from the cache, exactly as Postgres would write them for a plain
//! single-table select: RowDescription (names, table OID, attribute numbers, type OIDs,
//! lengths, typmods, format codes), one DataRow per row with each column in the format asked
//! for, `SELECT n`, and the extended protocol's BindComplete, NoData and ReadyForQuery.

use super::schema::TableMeta;
use super::store::CachedRow;
use crate::protocol::frames::put_frame;
use bytes::{BufMut, BytesMut};

/// One output column: the table column it shows and, when the statement gave one, the alias
/// it goes by (otherwise the column's own name: nothing to allocate per answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputColumn {
    pub index: usize,
    pub alias: Option<Box<str>>,
}

impl OutputColumn {
    pub fn name<'a>(&'a self, table: &'a TableMeta) -> &'a str {
        self.alias
            .as_deref()
            .unwrap_or(&table.columns[self.index].name)
    }
}

/// Result format codes as a Bind gives them: none (all text), one (for all), or one per
/// column, read in place (no vector per answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Formats<'a> {
    /// Every column in this format.
    All(i16),
    /// Column i's code in bytes 2i..2i+2, big-endian (as in the Bind).
    Each(&'a [u8]),
}

impl Formats<'_> {
    /// The format of output column `i`.
    pub fn of(self, i: usize) -> i16 {
        match self {
            Formats::All(f) => f,
            Formats::Each(codes) => codes
                .get(2 * i..2 * i + 2)
                .map_or(0, |c| i16::from_be_bytes([c[0], c[1]])),
        }
    }
}

/// The formats of `ncols` columns from a Bind's result format codes (`codes`: big-endian
/// pairs). `None` when the count fits none of the Bind's rules (Postgres rejects such a
/// Bind) or a code is neither text nor binary.
pub fn column_formats(codes: &[u8], ncols: usize) -> Option<Formats<'_>> {
    let ok = |c: &[u8]| c == [0, 0] || c == [0, 1];
    if !codes.len().is_multiple_of(2) {
        return None;
    }
    match codes.len() / 2 {
        0 => Some(Formats::All(0)),
        1 if ok(codes) => Some(Formats::All(i16::from_be_bytes([codes[0], codes[1]]))),
        n if n == ncols && codes.chunks(2).all(ok) => Some(Formats::Each(codes)),
        _ => None,
    }
}

pub fn row_description(
    out: &mut BytesMut,
    table: &TableMeta,
    columns: &[OutputColumn],
    formats: Formats<'_>,
) {
    put_frame(out, b'T', |b| {
        b.put_i16(columns.len() as i16);
        for (i, c) in columns.iter().enumerate() {
            let meta = &table.columns[c.index];
            b.put_slice(c.name(table).as_bytes());
            b.put_u8(0);
            b.put_u32(table.oid);
            b.put_i16(meta.attnum);
            b.put_u32(meta.type_oid);
            b.put_i16(meta.typlen);
            b.put_i32(meta.typmod);
            b.put_i16(formats.of(i));
        }
    });
}

/// One DataRow, or `None` (nothing written) when a column is asked for in binary and the
/// image has no binary forms ([`CachedRow::has_binary`]).
pub fn data_row(
    out: &mut BytesMut,
    row: &CachedRow,
    columns: &[OutputColumn],
    formats: Formats<'_>,
) -> Option<()> {
    // A binary column of a text-only image (a row the change feed printed) has no value to
    // send: refuse rather than write a NULL. Callers check this before they answer; this is
    // the guard that keeps a missed check from ever reaching a client.
    if !row.has_binary() && (0..columns.len()).any(|i| formats.of(i) == 1) {
        return None;
    }
    put_frame(out, b'D', |b| {
        b.put_i16(columns.len() as i16);
        for (i, c) in columns.iter().enumerate() {
            let v = if formats.of(i) == 1 {
                row.binary.as_ref().and_then(|b| b.get(c.index))
            } else {
                row.text.get(c.index)
            };
            match v.and_then(Option::as_ref) {
                Some(bytes) => {
                    b.put_i32(bytes.len() as i32);
                    b.put_slice(bytes);
                }
                None => b.put_i32(-1),
            }
        }
    });
    Some(())
}

pub fn command_complete(out: &mut BytesMut, rows: usize) {
    put_frame(out, b'C', |b| {
        // Written straight into the frame: no String, no formatter, per answer.
        b.put_slice(b"SELECT ");
        put_decimal(b, rows);
        b.put_u8(0);
    });
}

/// `n` in decimal ASCII.
fn put_decimal(b: &mut BytesMut, n: usize) {
    let mut buf = [0u8; 20];
    b.put_slice(super::key::ascii_digits(n as u64, &mut buf));
}

pub fn parse_complete(out: &mut BytesMut) {
    put_frame(out, b'1', |_| {});
}

pub fn bind_complete(out: &mut BytesMut) {
    put_frame(out, b'2', |_| {});
}

pub fn ready_for_query_idle(out: &mut BytesMut) {
    put_frame(out, b'Z', |b| b.put_u8(b'I'));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_bind_rules() {
        let each = |codes: &[u8], n: usize| {
            column_formats(codes, n).map(|f| (0..n).map(|i| f.of(i)).collect::<Vec<_>>())
        };
        assert_eq!(each(&[], 2), Some(vec![0, 0]));
        assert_eq!(each(&[0, 1], 3), Some(vec![1, 1, 1]));
        assert_eq!(each(&[0, 0, 0, 1], 2), Some(vec![0, 1]));
        assert_eq!(each(&[0, 0, 0, 1], 3), None);
        assert_eq!(each(&[0, 2], 1), None);
        assert_eq!(each(&[0, 1, 0, 2], 2), None);
        assert_eq!(each(&[1, 0], 1), None);
        assert_eq!(each(&[0], 1), None);
    }

    #[test]
    fn frames_carry_their_length() {
        let mut out = BytesMut::new();
        command_complete(&mut out, 1);
        assert_eq!(&out[..], b"C\0\0\0\x0dSELECT 1\0");
        let mut out = BytesMut::new();
        bind_complete(&mut out);
        ready_for_query_idle(&mut out);
        assert_eq!(&out[..], b"2\0\0\0\x04Z\0\0\0\x05I");
    }

    #[test]
    fn a_text_only_image_never_answers_binary_columns() {
        use bytes::Bytes;
        let text_only = CachedRow {
            text: vec![Some(Bytes::from_static(b"42")), None],
            binary: None,
        };
        let columns = [
            OutputColumn {
                index: 0,
                alias: None,
            },
            OutputColumn {
                index: 1,
                alias: None,
            },
        ];
        let mut out = BytesMut::new();
        assert!(data_row(&mut out, &text_only, &columns, Formats::Each(&[0, 0, 0, 1])).is_none());
        assert!(data_row(&mut out, &text_only, &columns, Formats::All(1)).is_none());
        assert!(out.is_empty(), "nothing written for a refused row");
        assert!(data_row(&mut out, &text_only, &columns, Formats::All(0)).is_some());
        assert_eq!(&out[..], b"D\0\0\0\x10\0\x02\0\0\0\x0242\xff\xff\xff\xff");
        let both = CachedRow {
            binary: Some(vec![Some(Bytes::from_static(&[0, 0, 0, 42])), None]),
            ..text_only
        };
        let mut out = BytesMut::new();
        assert!(data_row(&mut out, &both, &columns, Formats::Each(&[0, 1, 0, 0])).is_some());
        assert_eq!(
            &out[..],
            b"D\0\0\0\x12\0\x02\0\0\0\x04\0\0\0\x2a\xff\xff\xff\xff"
        );
    }

    #[test]
    fn row_counts_are_plain_decimals() {
        for n in [0usize, 7, 10, 64, 1000, 123_456_789, usize::MAX] {
            let mut out = BytesMut::new();
            command_complete(&mut out, n);
            assert_eq!(&out[5..out.len() - 1], format!("SELECT {n}").as_bytes());
        }
    }
}
