//! `EXPLAIN ROUTE <statement>`: which route the proxy would take for a statement, which
//! policy it consulted, and why.
//!
//! On an ordinary session the proxy does not answer by itself: it replaces the Query with a
//! `VALUES` query carrying the answer and lets Postgres run it. The reply then arrives in
//! order with everything else the session has in flight, with the session's real
//! transaction status, without the relay having to inject messages into the backend stream.
//! (Inside a failed transaction block Postgres answers with its usual error, as it would to
//! any query.) Only the simple query protocol is recognized.

use crate::admin::table::{Cell, ColumnType, ResultTable};
use crate::router::Decision;
use crate::sql::Classified;
use bytes::{BufMut, BytesMut};

/// The statement after `EXPLAIN ROUTE`, if `text` is one (keywords case-insensitive,
/// whitespace around them free).
pub fn explain_route_target(text: &[u8]) -> Option<&[u8]> {
    fn keyword<'a>(text: &'a [u8], word: &[u8]) -> Option<&'a [u8]> {
        let text = text.trim_ascii_start();
        let head = text.get(..word.len())?;
        let rest = &text[word.len()..];
        let boundary = rest.first().is_some_and(|b| b.is_ascii_whitespace());
        (head.eq_ignore_ascii_case(word) && boundary).then_some(rest)
    }
    let rest = keyword(text, b"explain")?;
    let rest = keyword(rest, b"route")?;
    let target = rest.trim_ascii();
    (!target.is_empty()).then_some(target)
}

/// The decision as a one-row result set.
pub fn explain_table(stmt: Option<&Classified>, d: &Decision) -> ResultTable {
    let mut t = ResultTable::new(&[
        ("route", ColumnType::Text),
        ("reason", ColumnType::Text),
        ("policy", ColumnType::Text),
        ("detail", ColumnType::Text),
        ("kind", ColumnType::Text),
        ("tables", ColumnType::Text),
        ("fingerprint", ColumnType::Text),
    ]);
    let shape = stmt.map(|c| &c.shape);
    t.push(vec![
        d.route.name().into(),
        d.reason.label().into(),
        d.policy.clone().into(),
        d.detail.clone().into(),
        shape.map(|s| s.kind.name()).into(),
        shape
            .map(|s| {
                s.tables
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .into(),
        shape.map(|s| format!("{:016x}", s.fingerprint)).into(),
    ]);
    t
}

/// `E'...'` in pure ASCII (non-ASCII characters as `\uXXXX` / `\UXXXXXXXX` escapes): correct
/// whatever `standard_conforming_strings` says, and whatever client encoding a pipelined
/// `SET client_encoding` may have switched to (no multi-byte sequence can swallow a quote).
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("E'");
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => {}
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('\'');
    out
}

/// A Query message whose result set is `table` (every column as text).
pub fn as_query(table: &ResultTable) -> BytesMut {
    let mut sql = String::from("SELECT * FROM (VALUES ");
    for (i, row) in table.rows.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for (j, cell) in row.iter().enumerate() {
            if j > 0 {
                sql.push_str(", ");
            }
            match cell.to_pg_text() {
                Some(v) if !matches!(cell, Cell::Null) => sql.push_str(&quote(&v)),
                _ => sql.push_str("NULL"),
            }
            sql.push_str("::text");
        }
        sql.push(')');
    }
    sql.push_str(") AS explain_route(");
    let names: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect();
    sql.push_str(&names.join(", "));
    sql.push(')');
    let mut out = BytesMut::with_capacity(sql.len() + 6);
    out.put_u8(b'Q');
    out.put_u32((sql.len() + 5) as u32);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_explain_route() {
        assert_eq!(
            explain_route_target(b"EXPLAIN ROUTE SELECT 1"),
            Some(&b"SELECT 1"[..])
        );
        assert_eq!(
            explain_route_target(b"  explain\n route\tselect * from t ; "),
            Some(&b"select * from t ;"[..])
        );
        assert_eq!(explain_route_target(b"EXPLAIN SELECT 1"), None);
        assert_eq!(explain_route_target(b"EXPLAIN ROUTE"), None);
        assert_eq!(explain_route_target(b"EXPLAIN ROUTEX SELECT 1"), None);
        assert_eq!(explain_route_target(b"EXPLAINROUTE SELECT 1"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a'b\\c"), "E'a''b\\\\c'");
        assert_eq!(quote("é\n😀"), "E'\\u00E9\\u000A\\U0001F600'");
        let mut t = ResultTable::new(&[("a", ColumnType::Text), ("b", ColumnType::Text)]);
        t.push(vec!["x'".into(), Cell::Null]);
        let q = as_query(&t);
        let text = std::str::from_utf8(&q[5..q.len() - 1]).unwrap();
        assert_eq!(
            text,
            "SELECT * FROM (VALUES (E'x'''::text, NULL::text)) AS explain_route(\"a\", \"b\")"
        );
        assert_eq!(
            u32::from_be_bytes(q[1..5].try_into().unwrap()) as usize,
            q.len() - 1
        );
    }
}
