//! Row images from the change feed: the new row of an insert or update, as the feed printed
//! it, stored in place of the image the change removes.
//!
//! Without them a key that writes keep changing is out of memory from each write until the
//! migrator has read it again (and a re-read is dropped when another write lands meanwhile);
//! the hottest keys of a Zipf mix take hundreds of writes a second, so they would be out most
//! of the time. The feed already carries the row: pgoutput prints every column with its
//! type's output function in the walsender's session, so the text is exactly what a `SELECT`
//! of that row sends a session with the walsender's output settings (one profile, read by
//! the feed when it connects).
//!
//! Only where that holds:
//! - every column's type is a built-in one whose output reads nothing but the value and the
//!   profile's settings ([`TEXT_EXACT`]). Not enums, composites, ranges or `reg*` types:
//!   the walsender prints those from the catalog as it was when the change was made, and a
//!   rename committed since would not show;
//! - the feed described the table with the columns and types the cache serves it with,
//!   and the transaction committed after the table became ready (the position taken once
//!   the cache had read the table's current description: a change queued from before a
//!   DDL that replaced the table, a column or a type modifier was decoded against the old
//!   one, and may match the new one's names and types all the same);
//! - no column is a domain (the feed names the domain, the cache the base type);
//! - no column is an unchanged TOASTed value (the feed does not resend it);
//! - the transaction touches the key once (with a deferrable key, two rows may share one
//!   between its statements);
//! - the connection's encoding is UTF8, as every session the cache serves has it.
//!
//! Binary forms are derived from the text only where that is exact ([`binary_of`]); an
//! image of a row with other values has text forms only and answers reads that want every
//! column as text (a read wanting binary misses, and the migrator fetches both forms).

use super::profile::{OutputProfile, REPORTED, UNREPORTED};
use super::schema::TableMeta;
use super::store::CachedRow;
use crate::cdc::event::{Change, OutputSettings, Value};
use bytes::Bytes;

/// Built-in types (and their arrays) whose text output depends only on the value and the
/// output profile's settings: no catalog lookup, no other setting.
pub const TEXT_EXACT: &[u32] = &[
    16, 17, 18, 19, 20, 21, 23, 25, 26, 114, 650, 700, 701, 774, 790, 829, 869, 1042, 1043, 1082,
    1083, 1114, 1184, 1186, 1266, 1560, 1562, 1700, 2950, 3802, // scalars
    1000, 1001, 1002, 1003, 1005, 1007, 1009, 1014, 1015, 1016, 1021, 1022, 1028, 1040, 1041, 651,
    775, 791, 1182, 1183, 1115, 1185, 1187, 1270, 1231, 2951, 199, 3807, 1561, 1563, // arrays
];

/// The output profile a feed session's text values were printed under, if it reported all
/// of the settings and its encoding is UTF8.
pub fn profile_of(output: &OutputSettings) -> Option<OutputProfile> {
    if output.get("client_encoding").map(String::as_str) != Some("UTF8") {
        return None;
    }
    let mut values: Vec<Box<str>> = Vec::with_capacity(6);
    for name in REPORTED.iter().chain(UNREPORTED.iter()) {
        values.push(output.get(*name)?.as_str().into());
    }
    Some(OutputProfile {
        values: values.try_into().ok()?,
    })
}

/// The image of `change`'s new row for a session of `profile` (the feed's own), if the feed
/// printed every column as such a session's `SELECT *` would (see the module docs).
pub fn image(meta: &TableMeta, change: &Change, profile: &OutputProfile) -> Option<CachedRow> {
    let row = change.new_row.as_ref()?;
    if row.len() != meta.columns.len() || change.new_types.len() != row.len() {
        return None;
    }
    let mut text = Vec::with_capacity(row.len());
    let mut binary = Some(Vec::with_capacity(row.len()));
    for (((name, value), &type_oid), column) in row.iter().zip(&change.new_types).zip(&meta.columns)
    {
        if *name != column.name || type_oid != column.type_oid || !TEXT_EXACT.contains(&type_oid) {
            return None;
        }
        match value {
            Value::UnchangedToast => return None,
            Value::Null => {
                text.push(None);
                if let Some(b) = binary.as_mut() {
                    b.push(None);
                }
            }
            Value::Text(s) => {
                if let Some(b) = binary.as_mut() {
                    match binary_of(type_oid, s, profile) {
                        Some(v) => b.push(Some(v)),
                        None => binary = None,
                    }
                }
                text.push(Some(Bytes::copy_from_slice(s.as_bytes())));
            }
        }
    }
    Some(CachedRow { text, binary })
}

/// The binary form (what the type's send function writes) of a value whose text form
/// `text` was printed under `profile`, for the types where one follows exactly from the
/// other; `None` for the rest.
pub fn binary_of(type_oid: u32, text: &str, profile: &OutputProfile) -> Option<Bytes> {
    let bytes = |v: &[u8]| Some(Bytes::copy_from_slice(v));
    match type_oid {
        // bool
        16 => match text {
            "t" => bytes(&[1]),
            "f" => bytes(&[0]),
            _ => None,
        },
        // int2, int4, int8, oid: plain decimals.
        21 => bytes(&text.parse::<i16>().ok()?.to_be_bytes()),
        23 => bytes(&text.parse::<i32>().ok()?.to_be_bytes()),
        20 => bytes(&text.parse::<i64>().ok()?.to_be_bytes()),
        26 => bytes(&text.parse::<u32>().ok()?.to_be_bytes()),
        // name, text, bpchar, varchar, json: the same characters, in the client encoding.
        19 | 25 | 1042 | 1043 | 114 => bytes(text.as_bytes()),
        // jsonb: a version byte, then the text.
        3802 => {
            let mut v = Vec::with_capacity(text.len() + 1);
            v.push(1);
            v.extend_from_slice(text.as_bytes());
            Some(Bytes::from(v))
        }
        2950 => uuid_bytes(text).map(|u| Bytes::copy_from_slice(&u)),
        1700 => numeric_bytes(text).map(Bytes::from),
        // date, timestamp, timestamptz as DateStyle ISO prints them (whatever the order
        // part): days, or microseconds, since 2000-01-01 (UTC for timestamptz).
        1082 | 1114 | 1184 if profile.values[1].starts_with("ISO") => {
            let value = iso_datetime(text, type_oid)?;
            if type_oid == 1082 {
                bytes(&i32::try_from(value).ok()?.to_be_bytes())
            } else {
                bytes(&value.to_be_bytes())
            }
        }
        // bytea printed as hex (`\x...`); the escape format is left alone.
        17 if &*profile.values[4] == "hex" => hex_bytes(text.strip_prefix("\\x")?).map(Bytes::from),
        // float4, float8: with extra_float_digits ≥ 1 the text is the shortest that reads back
        // as the same value. NaN is left alone: its text does not say which NaN it was.
        700 | 701 if profile.values[3].parse::<i32>().ok()? >= 1 => {
            let wide = match text {
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                "NaN" => return None,
                t if t
                    .bytes()
                    .all(|c| c.is_ascii_digit() || b"+-.e".contains(&c)) =>
                {
                    t.parse::<f64>().ok()?
                }
                _ => return None,
            };
            if type_oid == 701 {
                bytes(&wide.to_be_bytes())
            } else {
                let narrow = match text {
                    "Infinity" => f32::INFINITY,
                    "-Infinity" => f32::NEG_INFINITY,
                    t => t.parse::<f32>().ok()?,
                };
                bytes(&narrow.to_be_bytes())
            }
        }
        _ => None,
    }
}

/// numeric_send's form of a value numeric_out printed: digit count, weight, sign and
/// display scale (16 bits each), then base-10000 digits without leading or trailing zero
/// digits (as Postgres stores every numeric). The printed fraction has exactly the display
/// scale's digits; zero has no digits and weight 0.
fn numeric_bytes(text: &str) -> Option<Vec<u8>> {
    const NEG: u16 = 0x4000;
    let special = |sign: u16| {
        let mut v = vec![0u8; 4];
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        Some(v)
    };
    match text {
        "NaN" => return special(0xC000),
        "Infinity" => return special(0xD000),
        "-Infinity" => return special(0xF000),
        _ => {}
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    // numeric_out never prints "1." or ".5".
    if int.is_empty() || !all_digits(int) || !all_digits(frac) || unsigned.ends_with('.') {
        return None;
    }
    let dscale = u16::try_from(frac.len()).ok()?;
    // Groups of four decimal digits: the integer part padded on the left, the fraction on
    // the right, so group boundaries fall on the decimal point.
    let int_pad = (4 - int.len() % 4) % 4;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let mut decimal: Vec<u8> = Vec::with_capacity(int_pad + int.len() + frac.len() + frac_pad);
    decimal.extend(std::iter::repeat_n(b'0', int_pad));
    decimal.extend_from_slice(int.as_bytes());
    decimal.extend_from_slice(frac.as_bytes());
    decimal.extend(std::iter::repeat_n(b'0', frac_pad));
    let mut groups: Vec<u16> = decimal
        .chunks(4)
        .map(|g| g.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
        .collect();
    let mut weight = i64::try_from((int_pad + int.len()) / 4).ok()? - 1;
    let leading = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..leading);
    weight -= i64::try_from(leading).ok()?;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let (weight, sign) = if groups.is_empty() {
        (0, 0)
    } else {
        (weight, if negative { NEG } else { 0 })
    };
    let mut v = Vec::with_capacity(8 + 2 * groups.len());
    // numeric_send writes these as 16-bit values.
    v.extend_from_slice(&(groups.len() as u16).to_be_bytes());
    v.extend_from_slice(&(i16::try_from(weight).ok()?).to_be_bytes());
    v.extend_from_slice(&sign.to_be_bytes());
    v.extend_from_slice(&dscale.to_be_bytes());
    for g in groups {
        v.extend_from_slice(&g.to_be_bytes());
    }
    Some(v)
}

/// Days (date) or microseconds (timestamp, timestamptz: at UTC) since 2000-01-01 of a
/// value printed in DateStyle ISO: `YYYY-MM-DD[ HH:MM:SS[.ffffff][±HH[:MM[:SS]]]][ BC]`,
/// or `infinity` / `-infinity` (the send functions' extreme values).
fn iso_datetime(text: &str, type_oid: u32) -> Option<i64> {
    let (min, max) = if type_oid == 1082 {
        (i64::from(i32::MIN), i64::from(i32::MAX))
    } else {
        (i64::MIN, i64::MAX)
    };
    match text {
        "infinity" => return Some(max),
        "-infinity" => return Some(min),
        _ => {}
    }
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (text, false),
    };
    let (date, time) = match text.split_once(' ') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    if (type_oid == 1082) != time.is_none() {
        return None;
    }
    let mut parts = date.split('-');
    let year: i64 = digits(parts.next()?)?;
    let month: i64 = digits(parts.next()?)?;
    let day: i64 = digits(parts.next()?)?;
    if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Astronomical numbering: 1 BC is year 0.
    let year = if bc { 1 - year } else { year };
    let days = days_from_civil(year, month, day) - days_from_civil(2000, 1, 1);
    let Some(time) = time else {
        return Some(days);
    };
    // The offset, for timestamptz: after the seconds, from the first sign.
    let (clock, offset) = match time.find(['+', '-']) {
        Some(i) if type_oid == 1184 => (&time[..i], Some(&time[i..])),
        Some(_) => return None,
        None if type_oid == 1184 => return None,
        None => (time, None),
    };
    let mut hms = clock.split(':');
    let h: i64 = digits(hms.next()?)?;
    let m: i64 = digits(hms.next()?)?;
    let sec = hms.next()?;
    if hms.next().is_some() || h > 23 || m > 59 {
        return None;
    }
    let (whole, frac) = match sec.split_once('.') {
        Some((w, f)) if (1..=6).contains(&f.len()) => (w, f),
        Some(_) => return None,
        None => (sec, ""),
    };
    let s: i64 = digits(whole)?;
    if s > 60 {
        return None;
    }
    let micros_frac = if frac.is_empty() {
        0
    } else {
        digits::<i64>(frac)? * 10i64.pow(6 - frac.len() as u32)
    };
    let mut seconds = h * 3600 + m * 60 + s;
    if let Some(offset) = offset {
        let (sign, rest) = offset.split_at(1);
        let mut f = rest.split(':');
        let oh: i64 = digits(f.next()?)?;
        let om: i64 = f.next().map_or(Some(0), digits)?;
        let os: i64 = f.next().map_or(Some(0), digits)?;
        if f.next().is_some() {
            return None;
        }
        let off = oh * 3600 + om * 60 + os;
        // Local time minus its offset east of UTC is UTC.
        seconds -= if sign == "+" { off } else { -off };
    }
    days.checked_mul(86_400)?
        .checked_add(seconds)?
        .checked_mul(1_000_000)?
        .checked_add(micros_frac)
}

/// A run of ASCII digits (at least one) as a number.
fn digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year 0 = 1 BC); Howard Hinnant's
/// `days_from_civil`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `8-4-4-4-12` lowercase hex, as uuid_out prints it.
fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let digits: Vec<u8> = b.iter().copied().filter(|&c| c != b'-').collect();
    let v = hex_bytes(std::str::from_utf8(&digits).ok()?)?;
    v.try_into().ok()
}

/// Lowercase hex pairs (as Postgres prints them) to bytes.
fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let b = text.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::event::{ChangeKind, TableName};

    fn profile(efd: &str, bytea: &str) -> OutputProfile {
        OutputProfile {
            values: [
                "UTC".into(),
                "ISO, MDY".into(),
                "postgres".into(),
                efd.into(),
                bytea.into(),
                "C".into(),
            ],
        }
    }

    #[test]
    fn binary_forms_follow_the_send_functions() {
        let p = profile("1", "hex");
        let b = |oid: u32, text: &str| binary_of(oid, text, &p).map(|v| v.to_vec());
        assert_eq!(b(16, "t"), Some(vec![1]));
        assert_eq!(b(16, "f"), Some(vec![0]));
        assert_eq!(b(21, "-32768"), Some(vec![0x80, 0]));
        assert_eq!(b(23, "42"), Some(42i32.to_be_bytes().to_vec()));
        assert_eq!(b(20, "-1"), Some(vec![0xff; 8]));
        assert_eq!(b(26, "4294967295"), Some(vec![0xff; 4]));
        assert_eq!(b(1042, "ab "), Some(b"ab ".to_vec()));
        assert_eq!(b(3802, "{\"a\": 1}"), Some(b"\x01{\"a\": 1}".to_vec()));
        assert_eq!(
            b(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            Some(vec![
                0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
                0x0a, 0x11
            ])
        );
        assert_eq!(b(2950, "A0EEBC99-9c0b-4ef8-bb6d-6bb9bd380a11"), None);
        assert_eq!(b(17, "\\x00ff10"), Some(vec![0, 0xff, 0x10]));
        assert_eq!(b(17, "\\x"), Some(vec![]));
        assert_eq!(b(701, "0.1"), Some(0.1f64.to_be_bytes().to_vec()));
        assert_eq!(b(701, "-0"), Some((-0.0f64).to_be_bytes().to_vec()));
        assert_eq!(b(701, "1e+100"), Some(1e100f64.to_be_bytes().to_vec()));
        assert_eq!(b(700, "1.1"), Some(1.1f32.to_be_bytes().to_vec()));
        assert_eq!(
            b(700, "-Infinity"),
            Some(f32::NEG_INFINITY.to_be_bytes().to_vec())
        );
        assert_eq!(b(701, "NaN"), None);
        // Dates and times as DateStyle ISO prints them.
        let us = |v: i64| Some(v.to_be_bytes().to_vec());
        assert_eq!(b(1082, "2000-01-01"), Some(0i32.to_be_bytes().to_vec()));
        assert_eq!(b(1082, "1999-12-31"), Some((-1i32).to_be_bytes().to_vec()));
        assert_eq!(b(1082, "2024-02-29"), Some(8825i32.to_be_bytes().to_vec()));
        assert_eq!(b(1082, "infinity"), Some(i32::MAX.to_be_bytes().to_vec()));
        assert_eq!(
            b(1082, "0001-01-01 BC"),
            Some((-730_485i32).to_be_bytes().to_vec())
        );
        assert_eq!(b(1114, "2000-01-01 00:00:01.5"), us(1_500_000));
        assert_eq!(b(1114, "-infinity"), us(i64::MIN));
        assert_eq!(b(1184, "2000-01-01 05:30:00+05:30"), us(0));
        assert_eq!(b(1184, "1999-12-31 23:59:59.999999-00:00:01"), us(999_999));
        assert_eq!(b(1184, "2000-01-01 00:00:00"), None);
        assert_eq!(b(1114, "2000-01-01 00:00:00+00"), None);
        assert_eq!(
            binary_of(
                1184,
                "2000-01-01 00:00:00+00",
                &OutputProfile {
                    values: [
                        "UTC".into(),
                        "SQL, DMY".into(),
                        "postgres".into(),
                        "1".into(),
                        "hex".into(),
                        "C".into()
                    ]
                }
            ),
            None
        );
        // numeric: count, weight, sign, scale, then base-10000 digits, stripped.
        let num = |words: &[u16]| Some(words.iter().flat_map(|w| w.to_be_bytes()).collect());
        assert_eq!(b(1700, "12345.67"), num(&[3, 1, 0, 2, 1, 2345, 6700]));
        assert_eq!(b(1700, "-0.000001"), num(&[1, 0xfffe, 0x4000, 6, 100]));
        assert_eq!(b(1700, "0.00"), num(&[0, 0, 0, 2]));
        assert_eq!(b(1700, "10000"), num(&[1, 1, 0, 0, 1]));
        assert_eq!(b(1700, "NaN"), num(&[0, 0, 0xC000, 0]));
        assert_eq!(b(1700, "-Infinity"), num(&[0, 0, 0xF000, 0]));
        assert_eq!(b(1700, "1e5"), None);
        assert_eq!(b(1700, "1."), None);
        // Types whose binary form does not follow from the text this simply.
        assert_eq!(b(1186, "1 day"), None);
        // Settings under which the text is not exact.
        let rounded = profile("0", "escape");
        assert_eq!(binary_of(701, "0.1", &rounded), None);
        assert_eq!(binary_of(17, "\\000", &rounded), None);
        // Text a send function would never have produced is refused, not guessed at.
        assert_eq!(b(23, "4e2"), None);
        assert_eq!(b(16, "true"), None);
    }

    fn meta(columns: &[(&str, u32)]) -> TableMeta {
        TableMeta::for_tests(1, columns)
    }

    fn change(values: Vec<(&str, u32, Value)>) -> Change {
        Change {
            table: TableName::new("public", "t"),
            kind: ChangeKind::Update,
            key: vec![],
            new_types: values.iter().map(|v| v.1).collect(),
            new_row: Some(values.into_iter().map(|(n, _, v)| (n.into(), v)).collect()),
        }
    }

    #[test]
    fn images_only_where_the_feed_printed_what_a_select_would() {
        let p = profile("1", "hex");
        let m = meta(&[("id", 23), ("v", 25), ("at", 1186)]);
        let text = |s: &str| Value::Text(s.into());
        let full = change(vec![
            ("id", 23, text("7")),
            ("v", 25, text("x")),
            ("at", 1186, Value::Null),
        ]);
        let row = image(&m, &full, &p).expect("an image");
        assert_eq!(row.text[0].as_deref(), Some(&b"7"[..]));
        assert_eq!(row.text[2], None);
        // A NULL needs no binary form: the image has both.
        assert_eq!(
            row.binary
                .as_ref()
                .map(|b| b[0].as_deref().map(<[u8]>::to_vec)),
            Some(Some(7i32.to_be_bytes().to_vec()))
        );
        let stamped = change(vec![
            ("id", 23, text("7")),
            ("v", 25, text("x")),
            ("at", 1186, text("1 day")),
        ]);
        let row = image(&m, &stamped, &p).expect("a text-only image");
        assert!(!row.has_binary());
        let toast = change(vec![
            ("id", 23, text("7")),
            ("v", 25, Value::UnchangedToast),
            ("at", 1186, Value::Null),
        ]);
        assert!(image(&m, &toast, &p).is_none());
        let retyped = change(vec![
            ("id", 20, text("7")),
            ("v", 25, text("x")),
            ("at", 1186, Value::Null),
        ]);
        assert!(image(&m, &retyped, &p).is_none());
        let widened = change(vec![("id", 23, text("7")), ("v", 25, text("x"))]);
        assert!(image(&m, &widened, &p).is_none());
        let enum_typed = meta(&[("id", 23), ("mood", 16_500)]);
        let e = change(vec![("id", 23, text("7")), ("mood", 16_500, text("ok"))]);
        assert!(image(&enum_typed, &e, &p).is_none());
        let deleted = Change {
            new_row: None,
            new_types: vec![],
            kind: ChangeKind::Delete,
            ..full
        };
        assert!(image(&m, &deleted, &p).is_none());
    }

    #[test]
    fn the_feed_profile_needs_every_setting_and_utf8() {
        let mut out = OutputSettings::new();
        for (n, v) in [
            ("TimeZone", "UTC"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("extra_float_digits", "1"),
            ("bytea_output", "hex"),
            ("lc_monetary", "C"),
            ("client_encoding", "UTF8"),
        ] {
            out.insert(n.into(), v.into());
        }
        assert_eq!(profile_of(&out), Some(profile("1", "hex")));
        out.insert("client_encoding".into(), "LATIN1".into());
        assert_eq!(profile_of(&out), None);
        out.insert("client_encoding".into(), "UTF8".into());
        out.remove("lc_monetary");
        assert_eq!(profile_of(&out), None);
    }
}
