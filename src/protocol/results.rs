//! Encoding the messages the proxy sends when it answers a query itself (the admin
//! console): RowDescription, DataRow, CommandComplete, EmptyQueryResponse, ReadyForQuery.

use crate::admin::table::ResultTable;
use crate::protocol::frames::put_frame;
use bytes::{BufMut, BytesMut};

/// RowDescription + one DataRow per row (text format) + `CommandComplete tag`.
pub fn result_set(out: &mut BytesMut, table: &ResultTable, tag: &str) {
    put_frame(out, b'T', |b| {
        b.put_u16(table.columns.len() as u16);
        for c in &table.columns {
            b.put_slice(c.name.as_bytes());
            b.put_u8(0);
            b.put_u32(0); // table OID
            b.put_u16(0); // column attnum
            b.put_u32(c.ty.oid());
            b.put_i16(c.ty.size());
            b.put_i32(-1); // typmod
            b.put_u16(0); // text format
        }
    });
    for row in &table.rows {
        put_frame(out, b'D', |b| {
            b.put_u16(row.len() as u16);
            for cell in row {
                match cell.to_pg_text() {
                    None => b.put_i32(-1),
                    Some(v) => {
                        b.put_u32(v.len() as u32);
                        b.put_slice(v.as_bytes());
                    }
                }
            }
        });
    }
    command_complete(out, tag);
}

pub fn command_complete(out: &mut BytesMut, tag: &str) {
    put_frame(out, b'C', |b| {
        b.put_slice(tag.as_bytes());
        b.put_u8(0);
    });
}

pub fn empty_query(out: &mut BytesMut) {
    put_frame(out, b'I', |_| {});
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    put_frame(out, b'Z', |b| b.put_u8(status));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::table::ColumnType;

    #[test]
    fn encodes_a_result_set() {
        let mut t = ResultTable::new(&[("a", ColumnType::Int8)]);
        t.push(vec![7i64.into()]);
        t.push(vec![crate::admin::table::Cell::Null]);
        let mut out = BytesMut::new();
        result_set(&mut out, &t, "SHOW");
        ready_for_query(&mut out, b'I');
        let mut frames = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            frames.push((rest[0], rest[5..1 + len].to_vec()));
            rest = &rest[1 + len..];
        }
        let types: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert_eq!(types, b"TDDCZ");
        assert_eq!(frames[1].1, [0, 1, 0, 0, 0, 1, b'7']);
        assert_eq!(frames[2].1, [0, 1, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(frames[3].1, b"SHOW\0");
    }
}
