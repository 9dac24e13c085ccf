//! The bytes of an answer from the cache, exactly as Postgres would write them for a plain
//! single-table select: RowDescription (names, table OID, attribute numbers, type OIDs,
//! lengths, typmods, format codes), one DataRow per row with each column in the format asked
//! for, `SELECT n`, and the extended protocol's BindComplete, NoData and ReadyForQuery.

use super::schema::TableMeta;
use super::store::CachedRow;
use crate::protocol::frames::put_frame;
use bytes::{BufMut, BytesMut};

/// One output column: the table column it shows and the name it goes by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputColumn {
    pub index: usize,
    pub name: String,
}

/// Result format codes as a Bind gives them: none (all text), one (for all), or one per
/// column. `None` when the count fits none of these (Postgres rejects such a Bind).
pub fn column_formats(codes: &[i16], ncols: usize) -> Option<Vec<i16>> {
    let ok = |c: i16| c == 0 || c == 1;
    match codes.len() {
        0 => Some(vec![0; ncols]),
        1 if ok(codes[0]) => Some(vec![codes[0]; ncols]),
        n if n == ncols && codes.iter().all(|&c| ok(c)) => Some(codes.to_vec()),
        _ => None,
    }
}

pub fn row_description(
    out: &mut BytesMut,
    table: &TableMeta,
    columns: &[OutputColumn],
    formats: &[i16],
) {
    put_frame(out, b'T', |b| {
        b.put_i16(columns.len() as i16);
        for (c, f) in columns.iter().zip(formats) {
            let meta = &table.columns[c.index];
            b.put_slice(c.name.as_bytes());
            b.put_u8(0);
            b.put_u32(table.oid);
            b.put_i16(meta.attnum);
            b.put_u32(meta.type_oid);
            b.put_i16(meta.typlen);
            b.put_i32(meta.typmod);
            b.put_i16(*f);
        }
    });
}

pub fn data_row(out: &mut BytesMut, row: &CachedRow, columns: &[OutputColumn], formats: &[i16]) {
    put_frame(out, b'D', |b| {
        b.put_i16(columns.len() as i16);
        for (c, f) in columns.iter().zip(formats) {
            let v = if *f == 1 {
                row.binary.get(c.index)
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
}

pub fn command_complete(out: &mut BytesMut, rows: usize) {
    put_frame(out, b'C', |b| {
        // Formatted straight into the frame: no String per answer.
        let _ = std::fmt::Write::write_fmt(b, format_args!("SELECT {rows}"));
        b.put_u8(0);
    });
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
        assert_eq!(column_formats(&[], 2), Some(vec![0, 0]));
        assert_eq!(column_formats(&[1], 3), Some(vec![1, 1, 1]));
        assert_eq!(column_formats(&[0, 1], 2), Some(vec![0, 1]));
        assert_eq!(column_formats(&[0, 1], 3), None);
        assert_eq!(column_formats(&[2], 1), None);
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
}
