//! Turns statement text into its *shape*: the text with every literal replaced by a marker.
//!
//! Two statements get the same normalized text exactly when they differ only in literal
//! values, letter case of unquoted identifiers and keywords, whitespace, comments and trailing
//! semicolons. Everything else — operators, quoted identifiers, `$n` parameters, the
//! presence or absence of whitespace between tokens — is printed as written, so token
//! boundaries survive: no two statements with different token sequences can collide.
//!
//! The literal marker is `$?`. A `$` that starts neither a parameter nor a dollar quote is a
//! lexical error (and never cached), so in a cached normalized text `$?` can only be a marker.
//!
//! The same pass, in [`Mode::Parse`], builds the text handed to sqlparser on a cache miss:
//! each literal becomes a parameter `$N` numbered after the statement's own highest
//! parameter (so the AST tells which literal sits where), except in positions where only a
//! literal is grammatical (`DATE '..'`, `varchar(10) '..'`), which get a fixed dummy literal.
//! Both are functions of the shape alone, so classifying the parse text is valid for every
//! statement with this shape.

use std::fmt::Write as _;

use super::lexer::{decode_string, Decoded, LexError, Lexer, StrKind, TokKind, Token};
use super::Literal;

/// The literal marker in normalized text.
pub(crate) const MARKER: &str = "$?";

/// What the pass prints for each literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `$?` markers; the shape key. Decodes literal values.
    Key,
    /// `$N` (N = base + literal index) where an expression is allowed, a dummy literal
    /// where only a literal is; `dummies_only` puts dummies everywhere (the fallback when a
    /// `$N` lands somewhere sqlparser refuses, e.g. `COPY t FROM '/file'`).
    Parse { base: u32, dummies_only: bool },
    /// [`Mode::Key`] over normalized text: `$?` reads as a literal (idempotence tests).
    #[cfg(test)]
    Renormalize,
}

/// Lexical facts gathered during the pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LexInfo {
    /// Highest `$n` parameter in the text (0 when none).
    pub max_param: u16,
    /// Number of literals replaced.
    pub literals: usize,
    /// Number of tokens.
    pub tokens: usize,
}

/// Words that, directly followed by a string constant, make a typed literal
/// (`DATE '2020-01-01'`, `timestamp with time zone '..'`, `AT TIME ZONE 'UTC'`); a
/// parameter there would not parse.
const TYPED_LITERAL_PREFIXES: &[&str] = &[
    "bigint",
    "bit",
    "bool",
    "boolean",
    "bytea",
    "char",
    "character",
    "cidr",
    "date",
    "decimal",
    "float",
    "float4",
    "float8",
    "inet",
    "int",
    "int2",
    "int4",
    "int8",
    "integer",
    "interval",
    "json",
    "jsonb",
    "macaddr",
    "money",
    "numeric",
    "oid",
    "point",
    "precision",
    "real",
    "regclass",
    "regconfig",
    "regtype",
    "smallint",
    "text",
    "time",
    "timestamp",
    "timestamptz",
    "timetz",
    "tsquery",
    "tsvector",
    "uuid",
    "varbit",
    "varchar",
    "varying",
    "xml",
    "zone",
];

/// Type names whose parenthesized numbers are type modifiers (`varchar(10)`,
/// `numeric(12, 2)`), kept verbatim: they are part of the statement's structure.
const TYPMOD_TYPES: &[&str] = &[
    "bit",
    "char",
    "character",
    "decimal",
    "float",
    "interval",
    "nchar",
    "numeric",
    "time",
    "timestamp",
    "timestamptz",
    "timetz",
    "varbit",
    "varchar",
    "varying",
];

fn ends_with_ident_char(out: &str) -> bool {
    out.as_bytes()
        .last()
        .is_some_and(|&c| super::lexer::is_ident_cont(c))
}

fn lowercase_eq(word: &str, list: &[&str]) -> bool {
    word.len() <= 11 && list.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// Normalizes `sql` into `out` (cleared first). In [`Mode::Key`], decoded literal values
/// are pushed to `literals`.
pub(crate) fn normalize(
    sql: &str,
    mode: Mode,
    out: &mut String,
    literals: &mut Vec<Literal>,
) -> Result<LexInfo, LexError> {
    out.clear();
    let mut info = LexInfo::default();
    let mut lexer = Lexer::new(sql);
    #[cfg(test)]
    let mode = if mode == Mode::Renormalize {
        lexer.markers = true;
        Mode::Key
    } else {
        mode
    };
    // The previous token, for typed literals, type modifiers and UESCAPE.
    let mut prev: Option<Token<'_>> = None;
    let mut in_typmod = false;
    // Source bytes still to be copied verbatim: runs of tokens printed as written, joined
    // by nothing or a single space, are copied in one go.
    let mut span: Option<(usize, usize)> = None;
    let flush = |span: &mut Option<(usize, usize)>, out: &mut String| {
        if let Some((a, b)) = span.take() {
            out.push_str(sql.get(a..b).unwrap_or(""));
        }
    };
    while let Some(tok) = lexer.next_token() {
        let tok = tok?;
        info.tokens += 1;
        let prev_ident =
            |w: &[&str]| prev.is_some_and(|p| p.kind == TokKind::Ident && lowercase_eq(p.text, w));
        let literal = match tok.kind {
            TokKind::Param(n) => {
                info.max_param = info.max_param.max(n);
                false
            }
            TokKind::Punct => {
                if tok.text == "(" {
                    in_typmod = prev_ident(TYPMOD_TYPES);
                } else if tok.text == ")" {
                    in_typmod = false;
                }
                false
            }
            TokKind::Ident => {
                if mode == Mode::Key
                    && prev.is_some_and(|p| p.kind == TokKind::Str(StrKind::Unicode))
                    && tok.text.eq_ignore_ascii_case("uescape")
                {
                    // The escape character changes the value; keep the key unusable.
                    if let Some(l) = literals.last_mut() {
                        *l = Literal::Opaque;
                    }
                }
                false
            }
            // Type modifiers are structure; the escape character of UESCAPE is too.
            TokKind::Number => !in_typmod,
            TokKind::Str(_) => !prev_ident(&["uescape"]),
            TokKind::QuotedIdent | TokKind::Op | TokKind::Other => false,
        };
        let verbatim = !literal && !tok.upper;
        let end = tok.start + tok.text.len();
        if let (true, Some((a, b))) = (verbatim, span) {
            let joined = !tok.space_before || sql.as_bytes().get(b..tok.start) == Some(b" ");
            if joined {
                span = Some((a, end));
                prev = Some(tok);
                continue;
            }
        }
        flush(&mut span, out);
        if tok.space_before && !out.is_empty() && !out.ends_with(' ') {
            out.push(' ');
        }
        if verbatim {
            span = Some((tok.start, end));
        } else if !literal {
            // An identifier or keyword with uppercase letters.
            let start = out.len();
            out.push_str(tok.text);
            if let Some(s) = out.get_mut(start..) {
                s.make_ascii_lowercase();
            }
        } else {
            let index = info.literals;
            info.literals += 1;
            match mode {
                Mode::Key => {
                    if ends_with_ident_char(out) {
                        out.push(' ');
                    }
                    out.push_str(MARKER);
                    literals.push(literal_value(tok));
                }
                Mode::Parse { base, dummies_only } => {
                    if !out.is_empty() && !out.ends_with(' ') {
                        out.push(' ');
                    }
                    let typed = prev.is_some_and(|p| {
                        (p.kind == TokKind::Ident && lowercase_eq(p.text, TYPED_LITERAL_PREFIXES))
                            || (p.kind == TokKind::Punct && p.text == ")")
                    });
                    if dummies_only || typed {
                        // Always `''`, whatever the literal's own kind: the parse text
                        // must depend on the shape alone, and `$?` does not say which.
                        out.push_str("''");
                    } else {
                        let n = u64::from(base) + index as u64;
                        let _ = write!(out, "${n}");
                    }
                    out.push(' ');
                }
                // Turned into `Mode::Key` above.
                #[cfg(test)]
                Mode::Renormalize => {}
            }
        }
        prev = Some(tok);
    }
    flush(&mut span, out);
    // Trailing semicolons do not change meaning; `select 1;` and `select 1` share a shape.
    while out.ends_with(';') || out.ends_with(' ') {
        out.pop();
    }
    Ok(info)
}

/// The value a literal token stands for.
fn literal_value(tok: Token<'_>) -> Literal {
    match tok.kind {
        TokKind::Number => Literal::Number(tok.text.into()),
        TokKind::Str(kind @ (StrKind::Bit | StrKind::Hex)) => match decode_string(tok.text, kind) {
            Decoded::Text(digits) => Literal::BitString {
                hex: kind == StrKind::Hex,
                digits: digits.into(),
            },
            Decoded::Invalid => Literal::Opaque,
        },
        TokKind::Str(kind) => match decode_string(tok.text, kind) {
            Decoded::Text(s) => Literal::String(s.into()),
            Decoded::Invalid => Literal::Opaque,
        },
        _ => Literal::Opaque,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sql: &str) -> (String, Vec<Literal>) {
        let mut out = String::new();
        let mut lits = Vec::new();
        match normalize(sql, Mode::Key, &mut out, &mut lits) {
            Ok(_) => (out, lits),
            Err(e) => (format!("ERR {e:?}"), lits),
        }
    }

    fn parse_text(sql: &str) -> String {
        let mut out = String::new();
        let mut lits = Vec::new();
        let info = normalize(sql, Mode::Key, &mut out, &mut lits).unwrap_or_default();
        let base = u32::from(info.max_param) + 1;
        let mode = Mode::Parse {
            base,
            dummies_only: false,
        };
        match normalize(sql, mode, &mut out, &mut lits) {
            Ok(_) => out,
            Err(e) => format!("ERR {e:?}"),
        }
    }

    #[test]
    fn normalized_text() {
        let cases = [
            (
                "SELECT * FROM T WHERE Id = 42",
                "select * from t where id = $?",
            ),
            (
                "select  *\n from t /* c */ where id=43;",
                "select * from t where id=$?",
            ),
            ("SELECT \"Id\" FROM \"T\"", "select \"Id\" from \"T\""),
            ("select -5, - 5, a-5", "select -$?, - $?, a-$?"),
            ("select date'2020-01-01'", "select date $?"),
            ("select 1abc", "select $?abc"),
            ("select $1, $2::int", "select $1, $2::int"),
            ("select 'a'::varchar(10)", "select $?::varchar(10)"),
            (
                "select cast(1.5 as numeric(12, 2))",
                "select cast($? as numeric(12, 2))",
            ),
            ("select substr('abc', 1, 2)", "select substr($?, $?, $?)"),
            ("select U&'\\0041' UESCAPE '!'", "select $? uescape '!'"),
            ("select 1;;", "select $?"),
            ("  ; ", ""),
            ("-- only a comment", ""),
            ("select 'a'\n'b'", "select $?"),
            ("SELECT $$x$$, $t$y$t$", "select $?, $?"),
            ("select a$b, $1", "select a$b, $1"),
        ];
        for (sql, want) in cases {
            assert_eq!(key(sql).0, want, "{sql}");
        }
    }

    #[test]
    fn literal_values() {
        let (_, lits) = key("select 'it''s', E'\\n', 1.5e3, -7, B'01', x'1F', $$d$$, U&'\\0041'");
        assert_eq!(
            lits,
            vec![
                Literal::String("it's".into()),
                Literal::String("\n".into()),
                Literal::Number("1.5e3".into()),
                Literal::Number("7".into()),
                Literal::BitString {
                    hex: false,
                    digits: "01".into()
                },
                Literal::BitString {
                    hex: true,
                    digits: "1F".into()
                },
                Literal::String("d".into()),
                Literal::String("A".into()),
            ]
        );
        let (_, lits) = key("select U&'\\0041' uescape '!'");
        assert_eq!(lits, vec![Literal::Opaque]);
    }

    #[test]
    fn parse_text_numbers_literals_after_params() {
        assert_eq!(
            parse_text("SELECT * FROM t WHERE a = $2 AND b = 'x' AND c = 5"),
            "select * from t where a = $2 and b = $3 and c = $4"
        );
        assert_eq!(
            parse_text("select date '2020-01-01', interval '1 day', 7"),
            "select date '' , interval '' , $3"
        );
        assert_eq!(
            parse_text("select x::varchar(10) 'a'"),
            "select x::varchar(10) ''"
        );
    }
}
