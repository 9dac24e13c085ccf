//! Reading Bind and Parse messages as far as statistics need: which statement a portal
//! runs, and the value of a bound parameter (to record the key of `WHERE id = $1`).
//! Nothing is copied; a malformed message reads as `None` and is relayed unchanged, for
//! Postgres to reject.

use crate::protocol::frames::read_cstr;

/// A Bind message's fields.
#[derive(Debug, Clone, Copy)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// `nformats` big-endian int16 format codes.
    formats: &'a [u8],
    /// Number of parameter values.
    nparams: usize,
    /// The parameter values, from the first length word on.
    values: &'a [u8],
}

/// A bound parameter value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param<'a> {
    Null,
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

impl Param<'_> {
    /// The value's bytes as sent (none for NULL).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Param::Null => &[],
            Param::Text(b) | Param::Binary(b) => b,
        }
    }
}

fn be_u16(b: &[u8]) -> Option<usize> {
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]) as usize)
}

impl<'a> Bind<'a> {
    pub fn parse(body: &'a [u8]) -> Option<Bind<'a>> {
        let (portal, rest) = read_cstr(body)?;
        let (statement, rest) = read_cstr(rest)?;
        let nformats = be_u16(rest)?;
        let formats = rest.get(2..2 + 2 * nformats)?;
        let rest = rest.get(2 + 2 * nformats..)?;
        let nparams = be_u16(rest)?;
        Some(Bind {
            portal,
            statement,
            formats,
            nparams,
            values: rest.get(2..)?,
        })
    }

    fn binary(&self, index: usize) -> bool {
        let code = match self.formats.len() / 2 {
            0 => return false,
            1 => 0,
            _ => index,
        };
        self.formats.get(2 * code..2 * code + 2) == Some(&[0, 1])
    }

    /// Number of parameter values bound.
    pub fn param_count(&self) -> usize {
        self.nparams
    }

    /// Whether the parameter format codes fit the parameter count (none, one for all, or
    /// one per parameter, each 0 or 1), as Postgres requires.
    pub fn param_formats_valid(&self) -> bool {
        let n = self.formats.len() / 2;
        let codes_ok = self.formats.chunks(2).all(|c| c == [0, 0] || c == [0, 1]);
        codes_ok && (n == 0 || n == 1 || n == self.nparams)
    }

    /// The result-column format codes that follow the parameter values; `None` when the
    /// message is malformed or has bytes left over. (The cache reads them in place, through
    /// [`Self::result_format_codes`].)
    #[cfg(test)]
    pub fn result_formats(&self) -> Option<Vec<i16>> {
        Some(
            self.result_format_codes()?
                .chunks(2)
                .map(|c| i16::from_be_bytes([c[0], c[1]]))
                .collect(),
        )
    }

    /// The result-column format codes as they are in the message (big-endian pairs); `None`
    /// when the message is malformed or has bytes left over.
    pub fn result_format_codes(&self) -> Option<&'a [u8]> {
        let mut rest = self.values;
        for _ in 0..self.nparams {
            let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
            rest = rest.get(4..)?;
            if len > 0 {
                rest = rest.get(len as usize..)?;
            }
        }
        let n = be_u16(rest)?;
        let codes = rest.get(2..2 + 2 * n)?;
        if rest.len() != 2 + 2 * n {
            return None;
        }
        Some(codes)
    }

    /// Parameter `$n` (1-based).
    pub fn param(&self, n: u16) -> Option<Param<'a>> {
        let index = usize::from(n).checked_sub(1)?;
        if index >= self.nparams {
            return None;
        }
        let mut rest = self.values;
        for i in 0..=index {
            let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
            rest = rest.get(4..)?;
            let value = if len < 0 {
                None
            } else {
                let len = len as usize;
                let v = rest.get(..len)?;
                rest = rest.get(len..)?;
                Some(v)
            };
            if i == index {
                return Some(match value {
                    None => Param::Null,
                    Some(v) if self.binary(index) => Param::Binary(v),
                    Some(v) => Param::Text(v),
                });
            }
        }
        None
    }
}

/// The type a Parse declared for `$n` (0: left for the server to infer).
pub fn declared_type(types: &[u32], n: u16) -> u32 {
    usize::from(n)
        .checked_sub(1)
        .and_then(|i| types.get(i))
        .copied()
        .unwrap_or(0)
}

/// The parameter type OIDs a Parse message declares (0 = let the server infer).
pub fn parse_param_types(after_query: &[u8]) -> Box<[u32]> {
    let Some(n) = be_u16(after_query) else {
        return Box::new([]);
    };
    (0..n)
        .map_while(|i| {
            let b = after_query.get(2 + 4 * i..6 + 4 * i)?;
            Some(u32::from_be_bytes(b.try_into().ok()?))
        })
        .collect()
}

/// PostgreSQL type OIDs whose binary form the proxy can turn into key text.
pub mod oid {
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const INT8: u32 = 20;
    pub const TEXT: u32 = 25;
    pub const VARCHAR: u32 = 1043;
    pub const BPCHAR: u32 = 1042;
    pub const NAME: u32 = 19;
    pub const UUID: u32 = 2950;
}

/// A key's text as Postgres would print it, from a binary value of type `type_oid`.
pub fn binary_key_text(value: &[u8], type_oid: u32) -> Option<String> {
    match (type_oid, value.len()) {
        (oid::INT2, 2) => Some(i16::from_be_bytes(value.try_into().ok()?).to_string()),
        (oid::INT4, 4) => Some(i32::from_be_bytes(value.try_into().ok()?).to_string()),
        (oid::INT8, 8) => Some(i64::from_be_bytes(value.try_into().ok()?).to_string()),
        (oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME, _) => {
            std::str::from_utf8(value).ok().map(str::to_string)
        }
        (oid::UUID, 16) => {
            let h: String = value.iter().map(|b| format!("{b:02x}")).collect();
            Some(format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(formats: &[u16], params: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = b"p1\0s1\0".to_vec();
        b.extend((formats.len() as u16).to_be_bytes());
        for f in formats {
            b.extend(f.to_be_bytes());
        }
        b.extend((params.len() as u16).to_be_bytes());
        for p in params {
            match p {
                None => b.extend((-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend((v.len() as i32).to_be_bytes());
                    b.extend(*v);
                }
            }
        }
        b.extend(0u16.to_be_bytes());
        b
    }

    #[test]
    fn result_formats_and_counts() {
        let b = bind(&[1], &[Some(b"\0\0\0\x07"), None]);
        let parsed = Bind::parse(&b).unwrap();
        assert_eq!(parsed.param_count(), 2);
        assert!(parsed.param_formats_valid());
        assert_eq!(parsed.result_formats(), Some(vec![]));
        let mut with_results = b[..b.len() - 2].to_vec();
        with_results.extend([0, 2, 0, 1, 0, 0]);
        assert_eq!(
            Bind::parse(&with_results).unwrap().result_formats(),
            Some(vec![1, 0])
        );
        let bad = bind(&[1, 0, 1], &[Some(b"x")]);
        assert!(!Bind::parse(&bad).unwrap().param_formats_valid());
        let mut trailing = b.clone();
        trailing.push(0);
        assert_eq!(Bind::parse(&trailing).unwrap().result_formats(), None);
    }

    #[test]
    fn reads_params_in_each_format_layout() {
        let body = bind(&[], &[Some(b"42"), None, Some(b"x")]);
        let b = Bind::parse(&body).unwrap();
        assert_eq!(b.portal, b"p1");
        assert_eq!(b.statement, b"s1");
        assert_eq!(b.param(1), Some(Param::Text(b"42")));
        assert_eq!(b.param(2), Some(Param::Null));
        assert_eq!(b.param(3), Some(Param::Text(b"x")));
        assert_eq!(b.param(4), None);
        assert_eq!(b.param(0), None);

        let body = bind(&[1], &[Some(&[0, 0, 0, 7]), Some(b"ab")]);
        let b = Bind::parse(&body).unwrap();
        assert_eq!(b.param(1), Some(Param::Binary(&[0, 0, 0, 7])));
        assert_eq!(b.param(2), Some(Param::Binary(b"ab")));

        let body = bind(&[0, 1], &[Some(b"7"), Some(&[0, 7])]);
        let b = Bind::parse(&body).unwrap();
        assert_eq!(b.param(1), Some(Param::Text(b"7")));
        assert_eq!(b.param(2), Some(Param::Binary(&[0, 7])));
    }

    #[test]
    fn malformed_is_none_not_panic() {
        let body = bind(&[], &[Some(b"42")]);
        for cut in 0..body.len() - 2 {
            if let Some(b) = Bind::parse(&body[..cut]) {
                let _ = b.param(1);
            }
        }
        let mut lying = bind(&[], &[Some(b"42")]);
        lying[10] = 0x7f; // huge length
        if let Some(b) = Bind::parse(&lying) {
            assert_eq!(b.param(1), None);
        }
    }

    #[test]
    fn binary_keys() {
        assert_eq!(
            binary_key_text(&[0, 0, 0, 42], oid::INT4).as_deref(),
            Some("42")
        );
        assert_eq!(
            binary_key_text(&(-5i64).to_be_bytes(), oid::INT8).as_deref(),
            Some("-5")
        );
        assert_eq!(binary_key_text(&[0, 0, 42], oid::INT4), None);
        assert_eq!(binary_key_text(b"abc", oid::TEXT).as_deref(), Some("abc"));
        let u = [
            0x12u8, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        assert_eq!(
            binary_key_text(&u, oid::UUID).as_deref(),
            Some("12345678-9abc-def0-0102-030405060708")
        );
        assert_eq!(binary_key_text(&[1], 700), None);
        assert_eq!(
            &*parse_param_types(&[0, 2, 0, 0, 0, 23, 0, 0, 0, 0]),
            &[23, 0]
        );
        assert_eq!(&*parse_param_types(&[0, 2, 0, 0]), &[] as &[u32]);
    }
}
