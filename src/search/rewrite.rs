//! The statement Postgres runs instead: the original, restricted to the candidate keys.
//!
//! `SELECT .. FROM t WHERE <cond> ORDER BY ..` becomes
//! `SELECT .. FROM t WHERE (<cond>\n) AND "key" = ANY('{..}'::<key type>[]) ORDER BY ..`.
//! Only the WHERE clause is touched, by position (found with the proxy's own lexer), so the
//! rest of the text — and so the result's column names, types, order, grouping and limits —
//! is exactly the client's. The caller has checked that the statement is one SELECT over one
//! table with no subqueries, CTEs, set operations or table functions, so the first WHERE at
//! parenthesis depth zero is the statement's own and an unqualified key column can only mean
//! the table's. The newline before `)` ends a trailing `--` comment inside the condition.

use crate::sql::lexer::{Lexer, TokKind};

/// Keywords that end a SELECT's WHERE clause at depth zero.
const AFTER_WHERE: [&str; 8] = [
    "group", "having", "window", "order", "limit", "offset", "fetch", "for",
];

/// The statement restricted to `keys`, or `None` when its WHERE clause cannot be found.
pub fn restrict(sql: &str, key_column: &str, key_type: &str, keys: &[String]) -> Option<String> {
    let (cond_start, cond_end) = where_span(sql)?;
    let mut out =
        String::with_capacity(sql.len() + 64 + keys.iter().map(|k| k.len() + 3).sum::<usize>());
    out.push_str(&sql[..cond_start]);
    out.push_str(" (");
    out.push_str(&sql[cond_start..cond_end]);
    out.push_str("\n) AND ");
    out.push_str(&crate::cdc::event::quote_ident(key_column));
    out.push_str(" = ANY(");
    out.push_str(&array_literal(keys));
    out.push_str("::");
    out.push_str(key_type);
    out.push_str("[]) ");
    out.push_str(&sql[cond_end..]);
    Some(out)
}

/// Byte range of the condition after the depth-zero WHERE.
fn where_span(sql: &str) -> Option<(usize, usize)> {
    let mut lexer = Lexer::new(sql);
    let mut depth = 0i32;
    let mut start = None;
    while let Some(tok) = lexer.next_token() {
        let tok = tok.ok()?;
        match tok.kind {
            TokKind::Punct if tok.text == "(" || tok.text == "[" => depth += 1,
            TokKind::Punct if tok.text == ")" || tok.text == "]" => depth -= 1,
            TokKind::Punct if tok.text == ";" && depth == 0 => {
                return start.map(|s| (s, tok.start));
            }
            TokKind::Ident if depth == 0 => {
                let word = tok.text.to_ascii_lowercase();
                match start {
                    None if word == "where" => start = Some(tok.start + tok.text.len()),
                    Some(s) if AFTER_WHERE.contains(&word.as_str()) => {
                        return Some((s, tok.start));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    start.map(|s| (s, sql.len()))
}

/// `'{"k1","k2"}'`: every element double-quoted (so any key text survives array input),
/// the whole a standard-conforming string literal.
pub fn array_literal(keys: &[String]) -> String {
    let mut inner = String::with_capacity(keys.iter().map(|k| k.len() + 3).sum::<usize>() + 2);
    inner.push('{');
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            inner.push(',');
        }
        inner.push('"');
        for c in k.chars() {
            if c == '"' || c == '\\' {
                inner.push('\\');
            }
            inner.push(c);
        }
        inner.push('"');
    }
    inner.push('}');
    crate::cdc::event::quote_literal(&inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn restricts_the_where_clause_only() {
        let sql =
            "SELECT id, title FROM docs WHERE body ILIKE '%where%' AND id > 3 ORDER BY id LIMIT 5";
        assert_eq!(
            restrict(sql, "id", "bigint", &keys(&["1", "2"])).unwrap(),
            "SELECT id, title FROM docs WHERE ( body ILIKE '%where%' AND id > 3 \n) AND \"id\" = ANY('{\"1\",\"2\"}'::bigint[]) ORDER BY id LIMIT 5"
        );
    }

    #[test]
    fn keeps_trailing_semicolon_and_comments() {
        let sql = "select count(*) from docs where title ~ 'x' -- find\n;";
        let out = restrict(sql, "id", "int4", &keys(&[])).unwrap();
        assert_eq!(
            out,
            "select count(*) from docs where ( title ~ 'x' -- find\n\n) AND \"id\" = ANY('{}'::int4[]) ;"
        );
    }

    #[test]
    fn parenthesized_keywords_do_not_end_the_clause() {
        let sql = "SELECT * FROM t WHERE body LIKE 'a%' AND (x ORDER) GROUP BY 1";
        let (s, e) = where_span(sql).unwrap();
        assert_eq!(&sql[s..e], " body LIKE 'a%' AND (x ORDER) ");
        let sql = "SELECT * FROM t WHERE b ~ 'limit' HAVING true";
        let (s, e) = where_span(sql).unwrap();
        assert_eq!(&sql[s..e], " b ~ 'limit' ");
    }

    #[test]
    fn no_where_no_rewrite() {
        assert!(restrict("SELECT 1", "id", "int8", &keys(&["1"])).is_none());
    }

    #[test]
    fn array_elements_are_quoted() {
        assert_eq!(
            array_literal(&keys(&["a\"b", "c\\d", "it's"])),
            "'{\"a\\\"b\",\"c\\\\d\",\"it''s\"}'"
        );
    }
}
