//! A hand-written PostgreSQL lexer that only finds token *boundaries*.
//!
//! It exists so that the hot path can normalize a statement without sqlparser: it is a single
//! forward pass over the bytes (linear time on any input, no backtracking, no allocation) that
//! knows exactly the lexical rules that decide where a literal starts and ends — comments
//! (nested `/* */`), `'..'` with `''`, `E'..'` with backslash escapes, `U&'..'`, `B'..'`,
//! `X'..'`, `N'..'`, dollar quoting, quoted identifiers, numbers, `$n` parameters and operator
//! runs. Decoding literal *values* is left to [`decode_string`] so a cache hit decodes only
//! what it keeps.
//!
//! Assumes `standard_conforming_strings = on` (the default since PostgreSQL 9.1): a backslash
//! in a plain `'..'` string is an ordinary character.

/// The lexical class of a token; what the normalizer needs to decide how to print it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokKind {
    /// Unquoted identifier or keyword (printed lowercased).
    Ident,
    /// `"..."` or `U&"..."`, printed verbatim.
    QuotedIdent,
    /// `$n` with 1 <= n <= 65535.
    Param(u16),
    /// A string constant of the given flavour (possibly several `'..'` segments joined by
    /// whitespace containing a newline, which SQL concatenates).
    Str(StrKind),
    /// A numeric constant.
    Number,
    /// A run of operator characters.
    Op,
    /// One of `( ) [ ] , ; . :`.
    Punct,
    /// Any other single character; the parser will judge it.
    Other,
}

/// Flavours of string constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StrKind {
    /// `'..'`
    Plain,
    /// `N'..'`
    National,
    /// `E'..'`
    Escape,
    /// `U&'..'`
    Unicode,
    /// `B'..'`
    Bit,
    /// `X'..'`
    Hex,
    /// `$tag$..$tag$`
    Dollar,
    /// `$?`, a literal marker, only when re-reading normalized text (tests).
    Marker,
}

/// One token: its class, its exact source text, and whether whitespace or a comment
/// separated it from the previous token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Token<'a> {
    pub kind: TokKind,
    pub text: &'a str,
    /// Byte offset of `text` in the source.
    pub start: usize,
    pub space_before: bool,
    /// An identifier with ASCII uppercase letters (to be folded).
    pub upper: bool,
}

/// Input the lexer refuses; such statements are classified `Unparsed` and never cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LexError {
    UnterminatedString,
    UnterminatedQuotedIdent,
    UnterminatedComment,
    UnterminatedDollarQuote,
    /// A `$` that starts neither a parameter nor a dollar quote (always an error in
    /// PostgreSQL); refusing it keeps the literal marker `$?` unambiguous.
    StrayDollar,
    /// `$0` or a parameter number above 65535.
    BadParam,
}

pub(crate) struct Lexer<'a> {
    src: &'a str,
    b: &'a [u8],
    i: usize,
    /// Read `$?` as a literal (re-normalizing normalized text) instead of an error.
    pub(crate) markers: bool,
}

const OP: u8 = 1;
const IDENT_START: u8 = 2;
const IDENT_CONT: u8 = 4;
const SPACE: u8 = 8;
const UPPER: u8 = 16;

/// Character classes by byte, so the hot loops do one table load per byte.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut k = 0;
        if matches!(
            c,
            b'+' | b'-'
                | b'*'
                | b'/'
                | b'<'
                | b'>'
                | b'='
                | b'~'
                | b'!'
                | b'@'
                | b'#'
                | b'%'
                | b'^'
                | b'&'
                | b'|'
                | b'`'
                | b'?'
        ) {
            k |= OP;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            k |= IDENT_START | IDENT_CONT;
        }
        if c.is_ascii_digit() || c == b'$' {
            k |= IDENT_CONT;
        }
        if c.is_ascii_uppercase() {
            k |= UPPER;
        }
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            k |= SPACE;
        }
        t[i] = k;
        i += 1;
    }
    t
};

fn class(c: u8) -> u8 {
    CLASS[usize::from(c)]
}

/// PostgreSQL's operator characters.
pub(crate) fn is_op_char(c: u8) -> bool {
    class(c) & OP != 0
}

pub(crate) fn is_ident_start(c: u8) -> bool {
    class(c) & IDENT_START != 0
}

pub(crate) fn is_ident_cont(c: u8) -> bool {
    class(c) & IDENT_CONT != 0
}

fn is_space(c: u8) -> bool {
    class(c) & SPACE != 0
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        Lexer {
            src,
            b: src.as_bytes(),
            i: 0,
            markers: false,
        }
    }

    fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(0)
    }

    fn has(&self, i: usize) -> bool {
        i < self.b.len()
    }

    /// Skips whitespace and comments; returns whether anything was skipped.
    fn skip_space(&mut self) -> Result<bool, LexError> {
        let start = self.i;
        loop {
            let c = self.at(self.i);
            if self.has(self.i) && is_space(c) {
                self.i += 1;
            } else if c == b'-' && self.at(self.i + 1) == b'-' {
                self.skip_line_comment();
            } else if c == b'/' && self.at(self.i + 1) == b'*' {
                self.skip_block_comment()?;
            } else {
                return Ok(self.i != start);
            }
        }
    }

    fn skip_line_comment(&mut self) {
        while self.has(self.i) && !matches!(self.at(self.i), b'\n' | b'\r') {
            self.i += 1;
        }
    }

    /// Nested `/* */` comments, as PostgreSQL has them.
    fn skip_block_comment(&mut self) -> Result<(), LexError> {
        let mut depth = 0usize;
        while self.has(self.i) {
            let (c, n) = (self.at(self.i), self.at(self.i + 1));
            if c == b'/' && n == b'*' {
                depth += 1;
                self.i += 2;
            } else if c == b'*' && n == b'/' {
                depth = depth.saturating_sub(1);
                self.i += 2;
                if depth == 0 {
                    return Ok(());
                }
            } else {
                self.i += 1;
            }
        }
        Err(LexError::UnterminatedComment)
    }

    fn slice(&self, start: usize) -> &'a str {
        self.src.get(start..self.i).unwrap_or("")
    }

    /// Scans a quoted body starting at the opening quote at `self.i`. With `backslash`,
    /// a backslash escapes the next byte (E'' strings). Doubled quotes are escapes.
    fn scan_quoted(&mut self, q: u8, backslash: bool) -> bool {
        self.i += 1;
        while self.has(self.i) {
            let c = self.at(self.i);
            if backslash && c == b'\\' {
                self.i += 2;
            } else if c == q {
                if self.at(self.i + 1) == q {
                    self.i += 2;
                } else {
                    self.i += 1;
                    return true;
                }
            } else {
                self.i += 1;
            }
        }
        self.i = self.b.len();
        false
    }

    /// After a string segment: SQL joins `'a'` and `'b'` when only whitespace containing a
    /// newline (and `--` comments) separates them. Returns whether another segment follows,
    /// leaving `self.i` on its quote.
    fn continuation(&mut self) -> bool {
        let mut j = self.i;
        let mut newline = false;
        loop {
            let c = self.at(j);
            if !self.has(j) {
                return false;
            }
            if is_space(c) {
                newline |= c == b'\n' || c == b'\r';
                j += 1;
            } else if c == b'-' && self.at(j + 1) == b'-' {
                while self.has(j) && !matches!(self.at(j), b'\n' | b'\r') {
                    j += 1;
                }
            } else if c == b'\'' && newline {
                self.i = j;
                return true;
            } else {
                return false;
            }
        }
    }

    fn string(&mut self, start: usize, kind: StrKind) -> Result<Token<'a>, LexError> {
        let backslash = kind == StrKind::Escape;
        loop {
            if !self.scan_quoted(b'\'', backslash) {
                return Err(LexError::UnterminatedString);
            }
            if !self.continuation() {
                break;
            }
        }
        Ok(self.tok(TokKind::Str(kind), start))
    }

    fn tok(&self, kind: TokKind, start: usize) -> Token<'a> {
        Token {
            kind,
            text: self.slice(start),
            start,
            space_before: false,
            upper: false,
        }
    }

    fn number(&mut self, start: usize) -> Token<'a> {
        let radix_prefix = self.at(self.i) == b'0'
            && matches!(self.at(self.i + 1), b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
            && (self.at(self.i + 2).is_ascii_hexdigit() || self.at(self.i + 2) == b'_');
        if radix_prefix {
            self.i += 2;
            while self.at(self.i).is_ascii_alphanumeric() || self.at(self.i) == b'_' {
                self.i += 1;
            }
            return self.tok(TokKind::Number, start);
        }
        self.digits();
        if self.at(self.i) == b'.' && self.at(self.i + 1) != b'.' {
            self.i += 1;
            self.digits();
        }
        if matches!(self.at(self.i), b'e' | b'E') {
            let n = self.at(self.i + 1);
            if n.is_ascii_digit() {
                self.i += 1;
                self.digits();
            } else if matches!(n, b'+' | b'-') && self.at(self.i + 2).is_ascii_digit() {
                self.i += 2;
                self.digits();
            }
        }
        self.tok(TokKind::Number, start)
    }

    fn digits(&mut self) {
        while self.at(self.i).is_ascii_digit()
            || (self.at(self.i) == b'_' && self.at(self.i + 1).is_ascii_digit())
        {
            self.i += 1;
        }
    }

    fn dollar(&mut self, start: usize) -> Result<Token<'a>, LexError> {
        let n = self.at(self.i + 1);
        if n.is_ascii_digit() {
            self.i += 1;
            let mut v: u32 = 0;
            while self.at(self.i).is_ascii_digit() {
                v = v
                    .saturating_mul(10)
                    .saturating_add(u32::from(self.at(self.i) - b'0'));
                self.i += 1;
            }
            return match u16::try_from(v) {
                Ok(p) if p > 0 => Ok(self.tok(TokKind::Param(p), start)),
                _ => Err(LexError::BadParam),
            };
        }
        if self.markers && n == b'?' {
            self.i += 2;
            return Ok(self.tok(TokKind::Str(StrKind::Marker), start));
        }
        // Dollar quote: `$` [tag] `$`, tag = identifier without `$`.
        let mut j = self.i + 1;
        if is_ident_start(n) {
            while is_ident_cont(self.at(j)) && self.at(j) != b'$' {
                j += 1;
            }
        }
        if self.at(j) != b'$' {
            return Err(LexError::StrayDollar);
        }
        let delim = self.src.get(self.i..=j).unwrap_or("$$");
        let body_start = j + 1;
        let rest = self.src.get(body_start..).unwrap_or("");
        match rest.find(delim) {
            Some(off) => {
                self.i = body_start + off + delim.len();
                Ok(self.tok(TokKind::Str(StrKind::Dollar), start))
            }
            None => {
                self.i = self.b.len();
                Err(LexError::UnterminatedDollarQuote)
            }
        }
    }

    fn operator(&mut self, start: usize) -> Token<'a> {
        while self.has(self.i) && is_op_char(self.at(self.i)) {
            let (c, n) = (self.at(self.i), self.at(self.i + 1));
            // A comment start ends the operator (and the first char may not start one).
            if self.i > start && ((c == b'-' && n == b'-') || (c == b'/' && n == b'*')) {
                break;
            }
            self.i += 1;
        }
        self.tok(TokKind::Op, start)
    }

    fn ident(&mut self, start: usize) -> Token<'a> {
        let rest = self.b.get(self.i..).unwrap_or(&[]);
        let mut seen = 0;
        let mut len = rest.len();
        for (k, &c) in rest.iter().enumerate() {
            let cls = class(c);
            if cls & IDENT_CONT == 0 {
                len = k;
                break;
            }
            seen |= cls;
        }
        self.i += len;
        let mut t = self.tok(TokKind::Ident, start);
        t.upper = seen & UPPER != 0;
        t
    }

    /// The next token, `None` at the end, or the first lexical error.
    pub(crate) fn next_token(&mut self) -> Option<Result<Token<'a>, LexError>> {
        let space_before = match self.skip_space() {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        if !self.has(self.i) {
            return None;
        }
        let start = self.i;
        let c = self.at(start);
        let n = self.at(start + 1);
        if is_ident_start(c) && n != b'\'' && n != b'&' {
            // The common case first: a keyword or identifier.
            let mut t = self.ident(start);
            t.space_before = space_before;
            return Some(Ok(t));
        }
        let r = match c {
            b'\'' => self.string(start, StrKind::Plain),
            b'"' => {
                if self.scan_quoted(b'"', false) {
                    Ok(self.tok(TokKind::QuotedIdent, start))
                } else {
                    Err(LexError::UnterminatedQuotedIdent)
                }
            }
            b'e' | b'E' if n == b'\'' => {
                self.i += 1;
                self.string(start, StrKind::Escape)
            }
            b'n' | b'N' if n == b'\'' => {
                self.i += 1;
                self.string(start, StrKind::National)
            }
            b'b' | b'B' if n == b'\'' => {
                self.i += 1;
                self.string(start, StrKind::Bit)
            }
            b'x' | b'X' if n == b'\'' => {
                self.i += 1;
                self.string(start, StrKind::Hex)
            }
            b'u' | b'U' if n == b'&' && self.at(start + 2) == b'\'' => {
                self.i += 2;
                self.string(start, StrKind::Unicode)
            }
            b'u' | b'U' if n == b'&' && self.at(start + 2) == b'"' => {
                self.i += 2;
                if self.scan_quoted(b'"', false) {
                    Ok(self.tok(TokKind::QuotedIdent, start))
                } else {
                    Err(LexError::UnterminatedQuotedIdent)
                }
            }
            b'$' => self.dollar(start),
            b'0'..=b'9' => Ok(self.number(start)),
            b'.' if n.is_ascii_digit() => Ok(self.number(start)),
            _ if is_ident_start(c) => Ok(self.ident(start)),
            _ if is_op_char(c) => Ok(self.operator(start)),
            b'(' | b')' | b'[' | b']' | b',' | b';' | b'.' | b':' => {
                self.i += 1;
                Ok(self.tok(TokKind::Punct, start))
            }
            _ => {
                // Any other byte; step over a whole UTF-8 character (bytes >= 0x80 start
                // identifiers, so this is ASCII, but stay safe).
                self.i += 1;
                while self.has(self.i) && !self.src.is_char_boundary(self.i) {
                    self.i += 1;
                }
                Ok(self.tok(TokKind::Other, start))
            }
        };
        Some(r.map(|mut t| {
            t.space_before = space_before;
            t
        }))
    }
}

/// Result of decoding a string constant.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Text(String),
    /// Escapes that do not form valid UTF-8 (or a NUL); Postgres will reject it.
    Invalid,
}

/// Decodes the value of a string token produced by [`Lexer`] (any flavour but `Bit`/`Hex`,
/// whose digits are kept as written). Never panics on arbitrary input.
pub(crate) fn decode_string(text: &str, kind: StrKind) -> Decoded {
    match kind {
        StrKind::Marker => Decoded::Invalid,
        StrKind::Dollar => {
            // `$tag$body$tag$`
            let b = text.as_bytes();
            let tag_end = b
                .iter()
                .skip(1)
                .position(|&c| c == b'$')
                .map_or(0, |p| p + 2);
            let body_end = text.len().saturating_sub(tag_end);
            match text.get(tag_end..body_end) {
                Some(s) => Decoded::Text(s.to_owned()),
                None => Decoded::Invalid,
            }
        }
        StrKind::Plain | StrKind::National | StrKind::Bit | StrKind::Hex => {
            let mut out = String::new();
            for seg in segments(text) {
                push_doubled(&mut out, seg);
            }
            Decoded::Text(out)
        }
        StrKind::Escape => {
            let mut out = Vec::new();
            for seg in segments(text) {
                if !decode_escape_segment(seg, &mut out) {
                    return Decoded::Invalid;
                }
            }
            match String::from_utf8(out) {
                Ok(s) if !s.contains('\0') => Decoded::Text(s),
                _ => Decoded::Invalid,
            }
        }
        StrKind::Unicode => {
            let mut raw = String::new();
            for seg in segments(text) {
                push_doubled(&mut raw, seg);
            }
            decode_unicode(&raw)
        }
    }
}

/// The bodies (between the quotes, escapes untouched) of each `'..'` segment of a string
/// token, skipping its prefix and the whitespace/comments between continued segments.
fn segments(text: &str) -> impl Iterator<Item = &str> {
    let b = text.as_bytes();
    let mut i = b.iter().position(|&c| c == b'\'').unwrap_or(b.len());
    std::iter::from_fn(move || {
        // i is at an opening quote (or past the end).
        while i < b.len() && b.get(i) != Some(&b'\'') {
            if b.get(i) == Some(&b'-') && b.get(i + 1) == Some(&b'-') {
                while i < b.len() && !matches!(b.get(i), Some(b'\n') | Some(b'\r')) {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
        if i >= b.len() {
            return None;
        }
        let body_start = i + 1;
        let mut j = body_start;
        while j < b.len() {
            match b.get(j) {
                Some(b'\\') if is_escape_segment(text) => j += 2,
                Some(b'\'') if b.get(j + 1) == Some(&b'\'') => j += 2,
                Some(b'\'') => break,
                _ => j += 1,
            }
        }
        let body = text.get(body_start..j.min(b.len())).unwrap_or("");
        i = j + 1;
        Some(body)
    })
}

fn is_escape_segment(text: &str) -> bool {
    matches!(text.as_bytes().first(), Some(b'e') | Some(b'E'))
}

fn push_doubled(out: &mut String, seg: &str) {
    let mut rest = seg;
    while let Some(p) = rest.find("''") {
        out.push_str(rest.get(..=p).unwrap_or(""));
        rest = rest.get(p + 2..).unwrap_or("");
    }
    out.push_str(rest);
}

fn hex_val(c: u8) -> Option<u32> {
    (c as char).to_digit(16)
}

/// PostgreSQL `E''` escapes: `\b \f \n \r \t`, octal `\o{1,3}`, `\xh{1,2}`, `\uXXXX`,
/// `\UXXXXXXXX` (surrogate pairs allowed), `''`, and `\c` for any other `c`.
fn decode_escape_segment(seg: &str, out: &mut Vec<u8>) -> bool {
    let b = seg.as_bytes();
    let mut i = 0;
    let mut pending_high: Option<u32> = None;
    while let Some(&c) = b.get(i) {
        if c == b'\'' {
            // Doubled quote inside an E string.
            out.push(b'\'');
            i += 2;
            continue;
        }
        if c != b'\\' {
            if pending_high.is_some() {
                return false;
            }
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&e) = b.get(i + 1) else {
            return false;
        };
        i += 2;
        if pending_high.is_some() && e != b'u' && e != b'U' {
            return false;
        }
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut k = 0;
                while k < 2 {
                    match b.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                            k += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let mut v = 0u32;
                let mut k = 0;
                while k < 2 {
                    match b.get(i).copied().and_then(hex_val) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                            k += 1;
                        }
                        None => break,
                    }
                }
                if k == 0 {
                    out.push(b'x');
                } else {
                    out.push(v as u8);
                }
            }
            b'u' | b'U' => {
                let len = if e == b'u' { 4 } else { 8 };
                let mut v = 0u32;
                for _ in 0..len {
                    match b.get(i).copied().and_then(hex_val) {
                        Some(d) => {
                            v = v.saturating_mul(16).saturating_add(d);
                            i += 1;
                        }
                        None => return false,
                    }
                }
                if !push_code_point(v, &mut pending_high, out) {
                    return false;
                }
            }
            other => out.push(other),
        }
    }
    pending_high.is_none()
}

/// Appends a code point as UTF-8, combining UTF-16 surrogate pairs.
fn push_code_point(v: u32, pending_high: &mut Option<u32>, out: &mut Vec<u8>) -> bool {
    let cp = match (*pending_high, v) {
        (None, 0xD800..=0xDBFF) => {
            *pending_high = Some(v);
            return true;
        }
        (Some(h), 0xDC00..=0xDFFF) => {
            *pending_high = None;
            0x10000 + ((h - 0xD800) << 10) + (v - 0xDC00)
        }
        (Some(_), _) | (None, 0xDC00..=0xDFFF) => return false,
        (None, v) => v,
    };
    match char::from_u32(cp) {
        Some(ch) if ch != '\0' => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            true
        }
        _ => false,
    }
}

/// `U&''` escapes with the default escape character: `\XXXX`, `\+XXXXXX`, `\\`.
fn decode_unicode(raw: &str) -> Decoded {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut pending_high = None;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c != b'\\' {
            if pending_high.is_some() {
                return Decoded::Invalid;
            }
            out.push(c);
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'\\') {
            if pending_high.is_some() {
                return Decoded::Invalid;
            }
            out.push(b'\\');
            i += 2;
            continue;
        }
        let (start, len) = if b.get(i + 1) == Some(&b'+') {
            (i + 2, 6)
        } else {
            (i + 1, 4)
        };
        let mut v = 0u32;
        for k in 0..len {
            match b.get(start + k).copied().and_then(hex_val) {
                Some(d) => v = v * 16 + d,
                None => return Decoded::Invalid,
            }
        }
        i = start + len;
        if !push_code_point(v, &mut pending_high, &mut out) {
            return Decoded::Invalid;
        }
    }
    if pending_high.is_some() {
        return Decoded::Invalid;
    }
    match String::from_utf8(out) {
        Ok(s) => Decoded::Text(s),
        Err(_) => Decoded::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Result<Vec<(TokKind, String, bool)>, LexError> {
        let mut l = Lexer::new(s);
        let mut v = Vec::new();
        while let Some(t) = l.next_token() {
            let t = t?;
            v.push((t.kind, t.text.to_owned(), t.space_before));
        }
        Ok(v)
    }

    fn kinds(s: &str) -> Vec<TokKind> {
        toks(s)
            .map(|v| v.into_iter().map(|t| t.0).collect())
            .unwrap_or_default()
    }

    #[test]
    fn token_boundaries() {
        use StrKind::*;
        use TokKind::*;
        let cases: &[(&str, &[TokKind])] = &[
            ("select 1", &[Ident, Number]),
            ("a.b", &[Ident, Punct, Ident]),
            ("x::int", &[Ident, Punct, Punct, Ident]),
            ("'it''s'", &[Str(Plain)]),
            ("E'a\\'b'", &[Str(Escape)]),
            ("e'\\\\'", &[Str(Escape)]),
            ("U&'\\0041'", &[Str(Unicode)]),
            ("U&\"a\"", &[QuotedIdent]),
            ("B'0101' X'1F'", &[Str(Bit), Str(Hex)]),
            ("N'x'", &[Str(National)]),
            ("$$a$b$$", &[Str(Dollar)]),
            ("$fn$ $$ $fn$", &[Str(Dollar)]),
            ("$1 $23", &[Param(1), Param(23)]),
            ("a$1", &[Ident]),
            ("\"A\"\"b\"", &[QuotedIdent]),
            ("1.5e-3 .5 1. 1_000 0x1F 0o17 0b101", &[Number; 7]),
            ("1..2", &[Number, Punct, Number]),
            ("a+-b", &[Ident, Op, Ident]),
            ("a*--c\nb", &[Ident, Op, Ident]),
            ("a/**/b", &[Ident, Ident]),
            ("/* /* nested */ still */ x", &[Ident]),
            ("'a'\n'b'", &[Str(Plain)]),
            ("'a' 'b'", &[Str(Plain), Str(Plain)]),
            ("'a' -- c\n 'b'", &[Str(Plain)]),
            ("\\ {", &[Other, Other]),
            ("é = 1", &[Ident, Op, Number]),
            ("123abc", &[Number, Ident]),
        ];
        for (sql, want) in cases {
            assert_eq!(kinds(sql), *want, "{sql}");
        }
    }

    #[test]
    fn errors() {
        for (sql, e) in [
            ("'abc", LexError::UnterminatedString),
            ("E'abc\\'", LexError::UnterminatedString),
            ("\"abc", LexError::UnterminatedQuotedIdent),
            ("/* a /* b */", LexError::UnterminatedComment),
            ("$tag$ abc $tagx", LexError::UnterminatedDollarQuote),
            ("select $", LexError::StrayDollar),
            ("select $a", LexError::StrayDollar),
            ("$0", LexError::BadParam),
            ("$65536", LexError::BadParam),
            ("$99999999999999999999", LexError::BadParam),
        ] {
            assert_eq!(toks(sql).err(), Some(e), "{sql}");
        }
    }

    fn dec(s: &str) -> Decoded {
        let mut l = Lexer::new(s);
        match l.next_token() {
            Some(Ok(Token {
                kind: TokKind::Str(k),
                text,
                ..
            })) => decode_string(text, k),
            other => panic!("not a string: {other:?}"),
        }
    }

    fn text(s: &str) -> Decoded {
        Decoded::Text(s.to_owned())
    }

    #[test]
    fn decoding() {
        assert_eq!(dec("'it''s'"), text("it's"));
        assert_eq!(dec("'a\\n'"), text("a\\n"));
        assert_eq!(dec("E'a\\nb\\t\\'c'''"), text("a\nb\t'c'"));
        assert_eq!(dec("E'\\101\\x42\\u0043\\U00000044'"), text("ABCD"));
        assert_eq!(dec("E'\\uD83D\\uDE00'"), text("\u{1F600}"));
        assert_eq!(dec("E'\\xff'"), Decoded::Invalid);
        assert_eq!(dec("E'\\0'"), Decoded::Invalid);
        assert_eq!(dec("E'\\uD83D'"), Decoded::Invalid);
        assert_eq!(dec("U&'d\\0061t\\+000061'"), text("data"));
        assert_eq!(dec("U&'\\\\'"), text("\\"));
        assert_eq!(dec("U&'\\zz'"), Decoded::Invalid);
        assert_eq!(dec("$$a'b$$"), text("a'b"));
        assert_eq!(dec("$q$x$$y$q$"), text("x$$y"));
        assert_eq!(dec("'a'\n  'b'"), text("ab"));
        assert_eq!(dec("E'a\\''\n'b'"), text("a'b"));
        assert_eq!(dec("N'n'"), text("n"));
        assert_eq!(dec("'é''ü'"), text("é'ü"));
    }
}
