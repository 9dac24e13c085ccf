//! Cache keys: one canonical text per key value, whichever way a statement spelled it.
//!
//! A cached row is found by its key column's value. Statements name that value as a literal
//! (`id = 42`, `id = '42'`), a text-format parameter or a binary-format parameter; the change
//! feed and the migrator see it as Postgres's text output. All of them must map to the same
//! canonical text, and a spelling Postgres would reject or compare differently must map to
//! nothing (the statement then passes through and Postgres answers it). So the rules are
//! strict: integers in range, strings for string columns only, UUIDs in the two spellings
//! that cannot be ambiguous.

use crate::session::bind::{declared_type, oid, Bind, Param};
use crate::sql::{KeyRef, Literal};

/// Key column types the cache serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    Int2,
    Int4,
    Int8,
    /// `text` and `varchar` (both compare as text; their columns' default collation is
    /// deterministic, so equal means byte-equal).
    Text,
    Uuid,
}

impl KeyType {
    /// The key type of a column of type `type_oid`; `None` for types the cache does not
    /// serve (`bpchar` pads, `numeric` has many spellings of one value, ...).
    pub fn from_oid(type_oid: u32) -> Option<Self> {
        match type_oid {
            oid::INT2 => Some(KeyType::Int2),
            oid::INT4 => Some(KeyType::Int4),
            oid::INT8 => Some(KeyType::Int8),
            oid::TEXT | oid::VARCHAR => Some(KeyType::Text),
            oid::UUID => Some(KeyType::Uuid),
            _ => None,
        }
    }

    fn range(self) -> Option<(i64, i64)> {
        match self {
            KeyType::Int2 => Some((i64::from(i16::MIN), i64::from(i16::MAX))),
            KeyType::Int4 => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
            KeyType::Int8 => Some((i64::MIN, i64::MAX)),
            KeyType::Text | KeyType::Uuid => None,
        }
    }

    fn int(self, v: i64) -> Option<String> {
        let (lo, hi) = self.range()?;
        (lo..=hi).contains(&v).then(|| decimal(v))
    }

    /// A key written in the statement text.
    pub fn from_literal(self, key: KeyRef<'_>) -> Option<String> {
        match self {
            KeyType::Int2 | KeyType::Int4 | KeyType::Int8 => self.int(key.as_i64()?),
            KeyType::Text => match key {
                KeyRef::Literal(Literal::String(s)) => Some(s.to_string()),
                _ => None,
            },
            KeyType::Uuid => match key {
                KeyRef::Literal(Literal::String(s)) => canonical_uuid(s),
                _ => None,
            },
        }
    }

    /// A key as Postgres prints it (change feed, migrator, statistics).
    pub fn from_output(self, text: &str) -> Option<String> {
        match self {
            KeyType::Int2 | KeyType::Int4 | KeyType::Int8 => {
                self.int(parse_decimal(text.as_bytes())?)
            }
            KeyType::Text => Some(text.to_string()),
            KeyType::Uuid => canonical_uuid(text),
        }
    }

    /// The key `key` of a statement names: written in its text, or bound in `bind` (with
    /// the parameter types its Parse declared).
    pub fn of_statement(
        self,
        key: KeyRef<'_>,
        bind: Option<(&Bind<'_>, &[u32])>,
    ) -> Option<String> {
        let key = match key {
            KeyRef::Param(n) => {
                let (b, types) = bind?;
                self.from_param(b.param(n)?, declared_type(types, n))
            }
            written => self.from_literal(written),
        }?;
        // Postgres refuses a NUL in text: no row can have such a key, and the statement gets
        // an error, not zero rows.
        (!key.contains('\0')).then_some(key)
    }

    /// A key bound as parameter `param`, whose type is `declared` (from Parse; 0 when the
    /// server infers it, which for `col = $1` is the column's type).
    pub fn from_param(self, param: Param<'_>, declared: u32) -> Option<String> {
        match param {
            Param::Null => None,
            Param::Text(t) => {
                if declared != 0 {
                    self.family_of(declared)?;
                }
                match self {
                    KeyType::Int2 | KeyType::Int4 | KeyType::Int8 => {
                        let (lo, hi) = KeyType::from_oid(declared).unwrap_or(self).range()?;
                        let v = parse_decimal(trim_ascii_space(t))?;
                        (lo..=hi).contains(&v).then_some(())?;
                        self.int(v)
                    }
                    KeyType::Text => std::str::from_utf8(t).ok().map(str::to_string),
                    KeyType::Uuid => canonical_uuid(std::str::from_utf8(t).ok()?),
                }
            }
            Param::Binary(v) => {
                let ty = if declared == 0 {
                    self
                } else {
                    KeyType::from_oid(declared)?
                };
                match (self, ty, v.len()) {
                    (KeyType::Int2 | KeyType::Int4 | KeyType::Int8, KeyType::Int2, 2) => {
                        self.int(i64::from(i16::from_be_bytes(v.try_into().ok()?)))
                    }
                    (KeyType::Int2 | KeyType::Int4 | KeyType::Int8, KeyType::Int4, 4) => {
                        self.int(i64::from(i32::from_be_bytes(v.try_into().ok()?)))
                    }
                    (KeyType::Int2 | KeyType::Int4 | KeyType::Int8, KeyType::Int8, 8) => {
                        self.int(i64::from_be_bytes(v.try_into().ok()?))
                    }
                    (KeyType::Text, KeyType::Text, _) => {
                        std::str::from_utf8(v).ok().map(str::to_string)
                    }
                    (KeyType::Uuid, KeyType::Uuid, 16) => {
                        let h: String = v.iter().map(|b| format!("{b:02x}")).collect();
                        canonical_uuid(&h)
                    }
                    _ => None,
                }
            }
        }
    }

    /// The family a declared parameter type must share with the column for a text-format
    /// value to compare as the cache assumes: integers with integers, text with text.
    fn family_of(self, declared: u32) -> Option<KeyType> {
        let d = KeyType::from_oid(declared)?;
        let int = |k: KeyType| matches!(k, KeyType::Int2 | KeyType::Int4 | KeyType::Int8);
        ((int(self) && int(d)) || self == d).then_some(d)
    }
}

/// `[-+]?[0-9]+` as i64 (what `int8in` accepts once surrounding whitespace is trimmed).
fn parse_decimal(t: &[u8]) -> Option<i64> {
    let (neg, digits) = match t.first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() {
        return None;
    }
    // Accumulated negative: i64::MIN has no positive counterpart.
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

/// `v` in decimal, as Postgres prints an integer (without the formatting machinery: one
/// of these per bound key).
fn decimal(v: i64) -> String {
    let mut buf = [0u8; 20];
    let digits = ascii_digits(v.unsigned_abs(), &mut buf);
    let mut s = String::with_capacity(digits.len() + 1);
    if v < 0 {
        s.push('-');
    }
    s.extend(digits.iter().map(|&d| char::from(d)));
    s
}

/// The decimal digits of `n`, written at the end of `buf`.
pub(crate) fn ascii_digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

/// Postgres's integer input skips leading and trailing ASCII whitespace.
fn trim_ascii_space(t: &[u8]) -> &[u8] {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c');
    let start = t.iter().position(|b| !ws(b)).unwrap_or(t.len());
    let end = t.iter().rposition(|b| !ws(b)).map_or(start, |e| e + 1);
    &t[start..end]
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` or 32 hex digits, any case, lowercased and
/// hyphenated; other spellings Postgres accepts (braces, odd hyphens) are left to Postgres.
fn canonical_uuid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let hex: Vec<u8> = match b.len() {
        36 => {
            for (i, c) in b.iter().enumerate() {
                let hyphen = matches!(i, 8 | 13 | 18 | 23);
                if hyphen != (*c == b'-') || (!hyphen && !c.is_ascii_hexdigit()) {
                    return None;
                }
            }
            b.iter().copied().filter(|c| *c != b'-').collect()
        }
        32 if b.iter().all(u8::is_ascii_hexdigit) => b.to_vec(),
        _ => return None,
    };
    let h = String::from_utf8(hex).ok()?.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_keys_with_a_nul_are_never_keys() {
        let nul = Literal::String("a\0b".into());
        assert_eq!(
            KeyType::Text.of_statement(KeyRef::Literal(&nul), None),
            None
        );
        let plain = Literal::String("ab".into());
        assert_eq!(
            KeyType::Text
                .of_statement(KeyRef::Literal(&plain), None)
                .as_deref(),
            Some("ab")
        );
    }

    #[test]
    fn decimals_parse_and_print_as_the_standard_library_does() {
        let cases: &[&[u8]] = &[
            b"0",
            b"-0",
            b"+0",
            b"7",
            b"-7",
            b"+42",
            b"0000000000000000000000000000000000000000000012",
            b"9223372036854775807",
            b"-9223372036854775808",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"",
            b"-",
            b"+",
            b"1a",
            b" 1",
            b"1.0",
            b"--1",
            b"99999999999999999999999",
        ];
        for &t in cases {
            let std = std::str::from_utf8(t)
                .ok()
                .filter(|s| s.bytes().skip(1).all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<i128>().ok())
                .and_then(|v| i64::try_from(v).ok());
            assert_eq!(parse_decimal(t), std, "{:?}", String::from_utf8_lossy(t));
        }
        for v in [0, 1, -1, 9, 10, -10, 123_456_789, i64::MAX, i64::MIN] {
            assert_eq!(decimal(v), v.to_string());
        }
    }

    #[test]
    fn integers_in_every_spelling_map_to_one_key() {
        let n = Literal::Number("42".into());
        let s = Literal::String("42".into());
        assert_eq!(
            KeyType::Int4.from_literal(KeyRef::Literal(&n)).as_deref(),
            Some("42")
        );
        assert_eq!(
            KeyType::Int4.from_literal(KeyRef::Literal(&s)).as_deref(),
            Some("42")
        );
        assert_eq!(
            KeyType::Int8.from_param(Param::Text(b" 42 "), 0).as_deref(),
            Some("42")
        );
        assert_eq!(
            KeyType::Int4
                .from_param(Param::Binary(&42i32.to_be_bytes()), 0)
                .as_deref(),
            Some("42")
        );
        assert_eq!(
            KeyType::Int4
                .from_param(Param::Binary(&42i64.to_be_bytes()), oid::INT8)
                .as_deref(),
            Some("42")
        );
        assert_eq!(KeyType::Int4.from_output("42").as_deref(), Some("42"));
    }

    #[test]
    fn doubtful_keys_map_to_nothing() {
        // Out of range for the column, decimals, text for integers, numbers for text.
        let big = Literal::Number("99999999999".into());
        assert_eq!(KeyType::Int4.from_literal(KeyRef::Literal(&big)), None);
        let dec = Literal::Number("4.0".into());
        assert_eq!(KeyType::Int8.from_literal(KeyRef::Literal(&dec)), None);
        assert_eq!(KeyType::Int4.from_param(Param::Text(b"4x"), 0), None);
        assert_eq!(
            KeyType::Int4.from_param(Param::Text(b"99999999999"), 0),
            None
        );
        assert_eq!(KeyType::Int4.from_param(Param::Text(b"1"), oid::TEXT), None);
        assert_eq!(KeyType::Text.from_param(Param::Text(b"1"), oid::INT4), None);
        let n = Literal::Number("1".into());
        assert_eq!(KeyType::Text.from_literal(KeyRef::Literal(&n)), None);
        assert_eq!(KeyType::Int4.from_param(Param::Binary(&[0, 1]), 0), None);
        assert_eq!(KeyType::Int4.from_param(Param::Null, 0), None);
        assert_eq!(KeyType::from_oid(1042), None);
    }

    #[test]
    fn uuids_in_two_spellings() {
        let a = "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11";
        let want = Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".to_string());
        assert_eq!(KeyType::Uuid.from_output(a), want);
        assert_eq!(
            KeyType::Uuid.from_output("a0eebc999c0b4ef8bb6d6bb9bd380a11"),
            want
        );
        assert_eq!(
            KeyType::Uuid.from_output("{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
            None
        );
        assert_eq!(
            KeyType::Uuid.from_output("a0eebc999-c0b-4ef8-bb6d-6bb9bd380a11"),
            None
        );
    }
}
