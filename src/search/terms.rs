//! Trigram analysis of texts and of LIKE/ILIKE/regex patterns.
//!
//! The index stores, for every document, the trigrams of its per-char folded
//! text ([`trigrams`]). A pattern is turned into a [`Requirement`] over those
//! trigrams that every matching document must satisfy. Only literal runs that
//! *every* match must contain are used; anything else ends the run and
//! contributes nothing, and constructs we cannot analyse make the whole
//! pattern unconstrained (`True`). A false negative would silently drop rows,
//! so all choices here err on the side of too many candidates.

use std::collections::HashSet;

use super::requirement::{self, Requirement};

/// Simple per-char lowercase used for both index and patterns: the first char
/// of `c.to_lowercase()` (so `'İ'` → `'i'`, Kelvin sign → `'k'`). Folding per
/// char keeps char counts, so a case-sensitive match of a pattern run implies
/// the folded run occurs in the folded text.
pub fn fold(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// All distinct windows of three consecutive folded chars of `text`
/// (whitespace, punctuation and newlines included, no padding). This is what
/// the index stores per document; texts shorter than three chars give none.
pub fn trigrams(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().map(fold).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for window in chars.windows(3) {
        let gram: String = window.iter().collect();
        if seen.insert(gram.clone()) {
            out.push(gram);
        }
    }
    out
}

/// Whether pattern char `c` may be used in a literal run. Case-insensitively,
/// Postgres compares via `lower()` (ILIKE; with ICU that is a full, context
/// sensitive string mapping) or via `{lower(c), upper(c)}` (`~*`). A char is
/// only safe when every text char it can match folds to `fold(c)`:
/// - its uppercase is one char folding back to `fold(c)` (rules out `ſ`,
///   dotless `ı`, micro sign `µ`, final sigma `ς`, ...);
/// - its lowercase is one char (rules out `İ`, which ICU lowers to `i` + U+0307);
/// - it is not a sigma (ICU lowers `Σ` to `ς` or `σ` depending on context);
/// - it is not a combining diacritic U+0300..U+036F (produced by ICU's
///   lowering of `İ`, and of `Ì`/`Í`/`Ĩ` under Lithuanian rules).
///
/// Not covered: collations whose rules differ from these (Turkish-like `I` → `ı`,
/// ICU Lithuanian `Ì` → `i̇̀`); callers must not narrow ILIKE or `~*` under them
/// (`SearchTable::case_insensitive_safe`).
fn usable(c: char, case_insensitive: bool) -> bool {
    if !case_insensitive {
        return true;
    }
    if ('\u{300}'..='\u{36f}').contains(&c) || matches!(c, 'Σ' | 'σ' | 'ς') {
        return false;
    }
    let mut lower = c.to_lowercase();
    if lower.next().is_none() || lower.next().is_some() {
        return false;
    }
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) => fold(u) == fold(c),
        _ => false,
    }
}

/// Accumulates literal runs of one alternative and the trigrams they require.
struct Runs {
    case_insensitive: bool,
    current: Vec<char>,
    terms: Vec<Requirement>,
}

impl Runs {
    fn new(case_insensitive: bool) -> Self {
        Runs {
            case_insensitive,
            current: Vec::new(),
            terms: Vec::new(),
        }
    }

    /// Extends the run with a literal char, or ends it if the char is unsafe.
    fn literal(&mut self, c: char) {
        if usable(c, self.case_insensitive) {
            self.current.push(fold(c));
        } else {
            self.end();
        }
    }

    /// Drops the last char of the run (it was made optional by a quantifier).
    fn pop(&mut self) {
        self.current.pop();
    }

    /// Ends the current run, recording it when it has a trigram.
    fn end(&mut self) {
        if self.current.len() >= 3 {
            self.terms
                .push(Requirement::Substring(self.current.iter().collect()));
        }
        self.current.clear();
    }

    fn finish(mut self) -> Requirement {
        self.end();
        requirement::and(self.terms)
    }
}

/// Requirement for `text LIKE pattern` (or ILIKE when `case_insensitive`).
///
/// `escape` is the escape char (`Some('\\')` by default in Postgres; `None`
/// for `ESCAPE ''`). It is checked before the wildcards, as Postgres does, so
/// `ESCAPE '%'` turns `%` into an escape. A pattern ending in a lone escape is
/// an error in Postgres, so it gets `True`.
pub fn like_requirement(
    pattern: &str,
    escape: Option<char>,
    case_insensitive: bool,
) -> Requirement {
    let mut runs = Runs::new(case_insensitive);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            match chars.next() {
                Some(lit) => runs.literal(lit),
                None => return Requirement::True,
            }
        } else if c == '%' || c == '_' {
            runs.end();
        } else {
            runs.literal(c);
        }
    }
    runs.finish()
}

/// Requirement for `text ~ pattern` (or `~*` when `case_insensitive`) under
/// PostgreSQL ARE syntax. Only literal runs at group depth 0 are used;
/// alternatives at depth 0 give an `Or`. Returns `True` for director
/// prefixes (`***`), embedded options or special groups (`(?` anywhere),
/// unbalanced parentheses or brackets, a trailing backslash, malformed
/// bounds, and stacked quantifiers such as `a+*`.
pub fn regex_requirement(pattern: &str, case_insensitive: bool) -> Requirement {
    if pattern.starts_with("***") || pattern.contains("(?") {
        return Requirement::True;
    }
    let chars: Vec<char> = pattern.chars().collect();
    scan_regex(&chars, case_insensitive).unwrap_or(Requirement::True)
}

/// Scans a whole pattern; `None` means "not analysable", i.e. `True`.
fn scan_regex(p: &[char], case_insensitive: bool) -> Option<Requirement> {
    let mut alternatives = Vec::new();
    let mut runs = Runs::new(case_insensitive);
    let mut i = 0;
    while let Some(&c) = p.get(i) {
        match c {
            '|' => {
                let done = std::mem::replace(&mut runs, Runs::new(case_insensitive));
                alternatives.push(done.finish());
                i += 1;
            }
            '(' => {
                runs.end();
                i = skip_group(p, i)?;
            }
            ')' => return None,
            '[' => {
                runs.end();
                i = skip_bracket(p, i)?;
            }
            '.' | '^' | '$' => {
                runs.end();
                i += 1;
            }
            '*' | '?' => {
                runs.pop();
                runs.end();
                i = after_quantifier(p, i + 1)?;
            }
            '+' => {
                runs.end();
                i = after_quantifier(p, i + 1)?;
            }
            '{' => {
                // A bound makes the previous atom optional or repeated; a `{`
                // not followed by a digit is a literal, which we simply ignore
                // (dropping the previous char too is harmless).
                runs.pop();
                runs.end();
                if p.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                    i = after_quantifier(p, skip_bound(p, i)?)?;
                } else {
                    i += 1;
                }
            }
            '\\' => {
                let next = *p.get(i + 1)?;
                if next.is_ascii_alphanumeric() {
                    runs.end();
                    i += escape_len(p, i)?;
                } else {
                    runs.literal(next);
                    i += 2;
                }
            }
            _ => {
                runs.literal(c);
                i += 1;
            }
        }
    }
    alternatives.push(runs.finish());
    Some(requirement::or(alternatives))
}

/// Index after an optional non-greedy `?` following a quantifier. Any further
/// quantifier (`a+*`, `a+{2}`) is refused: we do not model stacked quantifiers.
fn after_quantifier(p: &[char], mut j: usize) -> Option<usize> {
    if p.get(j) == Some(&'?') {
        j += 1;
    }
    match p.get(j) {
        Some('*' | '+' | '?' | '{') => None,
        _ => Some(j),
    }
}

/// Index after a bound `{m}`, `{m,}` or `{m,n}` starting at `i`.
fn skip_bound(p: &[char], i: usize) -> Option<usize> {
    let digits = |from: usize| {
        p[from.min(p.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let mut j = i + 1;
    let first = digits(j);
    if first == 0 {
        return None;
    }
    j += first;
    if p.get(j) == Some(&',') {
        j += 1;
        j += digits(j);
    }
    (p.get(j) == Some(&'}')).then_some(j + 1)
}

/// Length of the escape starting with the backslash at `i`. Char entries that
/// take arguments are consumed whole (`\cX`, `\x` + hex digits, `\u` + 4 hex,
/// `\U` + 8 hex, `\0`..`\9` + all following digits, covering both octal
/// entries and back-references); everything else is two chars.
fn escape_len(p: &[char], i: usize) -> Option<usize> {
    let kind = *p.get(i + 1)?;
    let rest = &p[i + 2..];
    let count = |radix: u32, max: usize| {
        rest.iter()
            .take(max)
            .take_while(|c| c.is_digit(radix))
            .count()
    };
    Some(match kind {
        'c' => {
            rest.first()?;
            3
        }
        'x' => 2 + count(16, usize::MAX),
        'u' => 2 + count(16, 4),
        'U' => 2 + count(16, 8),
        '0'..='9' => 2 + count(10, usize::MAX),
        _ => 2,
    })
}

/// Index after the bracket expression starting at `i`. A `]` right after `[`
/// or `[^` is a member; `[:..:]`, `[.xx.]` and `[=x=]` may contain `]`; a
/// backslash escapes (ARE).
fn skip_bracket(p: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if p.get(j) == Some(&'^') {
        j += 1;
    }
    if p.get(j) == Some(&']') {
        j += 1;
    }
    loop {
        match *p.get(j)? {
            ']' => return Some(j + 1),
            '\\' => j += escape_len(p, j)?,
            '[' if matches!(p.get(j + 1), Some(':' | '.' | '=')) => {
                let delim = p[j + 1];
                let mut k = j + 2;
                while !(*p.get(k)? == delim && p.get(k + 1) == Some(&']')) {
                    k += 1;
                }
                j = k + 2;
            }
            _ => j += 1,
        }
    }
}

/// Index after the parenthesised group starting at `i`, honouring nested
/// groups, brackets and escapes inside it.
fn skip_group(p: &[char], i: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = i;
    loop {
        match *p.get(j)? {
            '(' => {
                depth += 1;
                j += 1;
            }
            ')' => {
                depth -= 1;
                j += 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            '[' => j = skip_bracket(p, j)?,
            '\\' => j += escape_len(p, j)?,
            _ => j += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Requirement::{Or, True};
    use super::*;
    use std::collections::BTreeSet;

    fn terms(grams: &[&str]) -> Requirement {
        requirement::and(
            grams
                .iter()
                .map(|g| Requirement::Term(g.to_string()))
                .collect(),
        )
    }

    /// `Substring` runs as the trigrams they imply, so the unit tables below can state
    /// requirements as trigram lists.
    fn expand(req: Requirement) -> Requirement {
        match req {
            Requirement::Substring(s) => requirement::and(
                trigram_windows(&s)
                    .into_iter()
                    .map(Requirement::Term)
                    .collect(),
            ),
            Requirement::And(v) => requirement::and(v.into_iter().map(expand).collect()),
            Requirement::Or(v) => requirement::or(v.into_iter().map(expand).collect()),
            other => other,
        }
    }

    fn trigram_windows(s: &str) -> Vec<String> {
        let c: Vec<char> = s.chars().collect();
        c.windows(3).map(|w| w.iter().collect()).collect()
    }

    fn like_requirement(pattern: &str, escape: Option<char>, ci: bool) -> Requirement {
        expand(super::like_requirement(pattern, escape, ci))
    }

    fn regex_requirement(pattern: &str, ci: bool) -> Requirement {
        expand(super::regex_requirement(pattern, ci))
    }

    /// Whether a document with this text satisfies `req` (substrings checked on the
    /// folded text itself, which is what consecutive trigram positions mean).
    fn satisfied(req: &Requirement, text: &str) -> bool {
        let folded: String = text.chars().map(fold).collect();
        let grams: HashSet<String> = trigrams(text).into_iter().collect();
        satisfied_in(req, &grams, &folded)
    }

    fn satisfied_in(req: &Requirement, grams: &HashSet<String>, folded: &str) -> bool {
        match req {
            Requirement::True => true,
            Requirement::False => false,
            Requirement::Term(t) => grams.contains(t),
            Requirement::Prefix(p) => grams.iter().any(|g| g.starts_with(p.as_str())),
            Requirement::Substring(s) => folded.contains(s.as_str()),
            Requirement::And(v) => v.iter().all(|r| satisfied_in(r, grams, folded)),
            Requirement::Or(v) => v.iter().any(|r| satisfied_in(r, grams, folded)),
        }
    }

    #[test]
    fn folding_and_trigrams() {
        assert_eq!(fold('İ'), 'i');
        assert_eq!(fold('\u{212A}'), 'k');
        assert_eq!(fold('É'), 'é');
        assert_eq!(fold('ß'), 'ß');
        let got: BTreeSet<String> = trigrams("ÉtÉ é\n").into_iter().collect();
        let want: BTreeSet<String> = ["été", "té ", "é é", " é\n"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(got, want);
        assert_eq!(trigrams("aaaa"), vec!["aaa".to_string()]);
        assert!(trigrams("ab").is_empty());
        assert!(trigrams("").is_empty());
        assert_eq!(trigrams("İST"), vec!["ist".to_string()]);
    }

    #[test]
    fn like_basics() {
        assert_eq!(
            like_requirement("%hello%", Some('\\'), false),
            terms(&["hel", "ell", "llo"])
        );
        assert_eq!(like_requirement("ab_cd%ef", Some('\\'), false), True);
        assert_eq!(
            like_requirement("abc_def", Some('\\'), false),
            terms(&["abc", "def"])
        );
        assert_eq!(like_requirement("ABC", Some('\\'), false), terms(&["abc"]));
        assert_eq!(like_requirement("", Some('\\'), false), True);
        assert_eq!(like_requirement("%%__%", Some('\\'), false), True);
    }

    #[test]
    fn like_escapes() {
        assert_eq!(
            like_requirement("a\\%b", Some('\\'), false),
            terms(&["a%b"])
        );
        assert_eq!(
            like_requirement("a\\_b\\\\", Some('\\'), false),
            terms(&["a_b", "_b\\"])
        );
        assert_eq!(like_requirement("ab\\", Some('\\'), false), True);
        // No escape at all: backslash is an ordinary char.
        assert_eq!(like_requirement("a\\b%", None, false), terms(&["a\\b"]));
        // Custom escape; backslash then literal.
        assert_eq!(
            like_requirement("a!%b\\c", Some('!'), false),
            terms(&["a%b", "%b\\", "b\\c"])
        );
        assert_eq!(like_requirement("ab!", Some('!'), false), True);
        assert_eq!(like_requirement("a!!b", Some('!'), false), terms(&["a!b"]));
        // Escape char that is also a wildcard: checked first.
        assert_eq!(
            like_requirement("ab%%c", Some('%'), false),
            terms(&["ab%", "b%c"])
        );
    }

    #[test]
    fn like_case_insensitive() {
        assert_eq!(
            like_requirement("%HeLLo%", Some('\\'), true),
            terms(&["hel", "ell", "llo"])
        );
        assert_eq!(
            like_requirement("%KELVIN\u{212A}%", Some('\\'), true),
            terms(&["kel", "elv", "lvi", "vin", "ink"])
        );
        // Unsafe chars split runs under ILIKE but not under LIKE.
        for unsafe_char in ['ſ', 'ı', 'µ', 'ς', 'σ', 'Σ', 'İ', 'ß', '\u{307}'] {
            let pat = format!("ab{unsafe_char}cd");
            assert_eq!(like_requirement(&pat, Some('\\'), true), True, "{pat}");
            let pat = format!("abc{unsafe_char}def");
            assert_eq!(
                like_requirement(&pat, Some('\\'), true),
                terms(&["abc", "def"])
            );
            let folded = fold(unsafe_char);
            let cs = [
                format!("bc{folded}"),
                format!("c{folded}d"),
                format!("{folded}de"),
            ];
            assert_eq!(
                like_requirement(&pat, Some('\\'), false),
                terms(&["abc", &cs[0], &cs[1], &cs[2], "def"])
            );
        }
        assert_eq!(like_requirement("ÉTÉ", Some('\\'), true), terms(&["été"]));
    }

    #[test]
    fn regex_basics() {
        assert_eq!(
            regex_requirement("hello", false),
            terms(&["hel", "ell", "llo"])
        );
        assert_eq!(
            regex_requirement("^abc.def$", false),
            terms(&["abc", "def"])
        );
        assert_eq!(regex_requirement("abcd*", false), terms(&["abc"]));
        assert_eq!(regex_requirement("abcd?e", false), terms(&["abc"]));
        assert_eq!(regex_requirement("abcd+e", false), terms(&["abc", "bcd"]));
        assert_eq!(
            regex_requirement("abcd{2}xyz", false),
            terms(&["abc", "xyz"])
        );
        assert_eq!(
            regex_requirement("abcd{1,}xyz", false),
            terms(&["abc", "xyz"])
        );
        assert_eq!(regex_requirement("abcd{x", false), terms(&["abc"]));
        assert_eq!(
            regex_requirement("abcd*?xyz", false),
            terms(&["abc", "xyz"])
        );
        assert_eq!(
            regex_requirement("abcd+?xyz", false),
            terms(&["abc", "bcd", "xyz"])
        );
        assert_eq!(regex_requirement("", false), True);
        assert_eq!(regex_requirement("ABC", true), terms(&["abc"]));
        assert_eq!(regex_requirement("abſcd", true), True);
        assert_eq!(
            regex_requirement("abſcd", false),
            terms(&["abſ", "bſc", "ſcd"])
        );
    }

    #[test]
    fn regex_alternation_and_groups() {
        assert_eq!(
            regex_requirement("abc|xyz", false),
            Or(vec![terms(&["abc"]), terms(&["xyz"])])
        );
        assert_eq!(regex_requirement("abc|xy", false), True);
        assert_eq!(regex_requirement("abc|", false), True);
        assert_eq!(
            regex_requirement("abc(x|y)def", false),
            terms(&["abc", "def"])
        );
        assert_eq!(
            regex_requirement("abc(x|(y|z)|w)*def", false),
            terms(&["abc", "def"])
        );
        assert_eq!(regex_requirement("ab(c)de", false), True);
        assert_eq!(regex_requirement("abc(de", false), True);
        assert_eq!(regex_requirement("abc)de", false), True);
        assert_eq!(
            regex_requirement("abc([)]x)def", false),
            terms(&["abc", "def"])
        );
        assert_eq!(
            regex_requirement("abc(\\))def", false),
            terms(&["abc", "def"])
        );
        assert_eq!(regex_requirement("(?:abc)", false), True);
        assert_eq!(regex_requirement("(?i)abc", false), True);
        assert_eq!(regex_requirement("abcd(?=x)", false), True);
        assert_eq!(regex_requirement("***=abc", false), True);
        assert_eq!(regex_requirement("***:abc", false), True);
    }

    #[test]
    fn regex_brackets() {
        assert_eq!(
            regex_requirement("abc[xyz]def", false),
            terms(&["abc", "def"])
        );
        assert_eq!(
            regex_requirement("abc[]xyz]def", false),
            terms(&["abc", "def"])
        );
        assert_eq!(
            regex_requirement("abc[^]]def", false),
            terms(&["abc", "def"])
        );
        assert_eq!(
            regex_requirement("abc[[:alpha:]]def", false),
            terms(&["abc", "def"])
        );
        assert_eq!(
            regex_requirement("abc[[.].]]def", false),
            terms(&["abc", "def"])
        );
        assert_eq!(
            regex_requirement("abc[[=a=]|]def", false),
            terms(&["abc", "def"])
        );
        assert_eq!(
            regex_requirement("abc[\\]x]def", false),
            terms(&["abc", "def"])
        );
        assert_eq!(regex_requirement("abc[\\c]]", false), terms(&["abc"]));
        assert_eq!(
            regex_requirement("abc[|(]def", false),
            terms(&["abc", "def"])
        );
        assert_eq!(regex_requirement("abc[def", false), True);
        assert_eq!(regex_requirement("abc[[:alpha]def", false), True);
        assert_eq!(regex_requirement("abc[a\\]", false), True);
        assert_eq!(
            regex_requirement("abc]def", false),
            terms(&["abc", "bc]", "c]d", "]de", "def"])
        );
    }

    #[test]
    fn regex_escapes() {
        assert_eq!(
            regex_requirement("www\\.example", false),
            terms(&["www", "ww.", "w.e", ".ex", "exa", "xam", "amp", "mpl", "ple"])
        );
        assert_eq!(
            regex_requirement("abc\\d+def", false),
            terms(&["abc", "def"])
        );
        assert_eq!(regex_requirement("abc\\x41def", false), terms(&["abc"]));
        assert_eq!(
            regex_requirement("abc\\x41 zz", false),
            terms(&["abc", " zz"])
        );
        assert_eq!(
            regex_requirement("abc\\u0041bcd", false),
            terms(&["abc", "bcd"])
        );
        assert_eq!(
            regex_requirement("abc\\U00000041bcd", false),
            terms(&["abc", "bcd"])
        );
        assert_eq!(
            regex_requirement("abc\\0123xyz", false),
            terms(&["abc", "xyz"])
        );
        assert_eq!(
            regex_requirement("(a)abc\\1xyz", false),
            terms(&["abc", "xyz"])
        );
        assert_eq!(
            regex_requirement("abc\\cAxyz", false),
            terms(&["abc", "xyz"])
        );
        assert_eq!(
            regex_requirement("abc\\yxyz\\m", false),
            terms(&["abc", "xyz"])
        );
        assert_eq!(
            regex_requirement("a\\*\\|\\(", false),
            terms(&["a*|", "*|("])
        );
        assert_eq!(regex_requirement("abc\\", false), True);
        assert_eq!(regex_requirement("abc\\c", false), True);
        assert_eq!(regex_requirement("abc\\é", false), terms(&["abc", "bcé"]));
    }

    #[test]
    fn regex_stacked_quantifiers_are_refused() {
        assert_eq!(regex_requirement("abcd+*", false), True);
        assert_eq!(regex_requirement("abcd+?*", false), True);
        assert_eq!(regex_requirement("abcd+{2}", false), True);
        assert_eq!(regex_requirement("abcd{2}*", false), True);
        assert_eq!(regex_requirement("abcd{2,x}", false), True);
        assert_eq!(regex_requirement("abcd{2", false), True);
    }

    // ---- property tests -------------------------------------------------

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    const BASIC: &[char] = &['a', 'b', 'A', 'B', ' ', 'x', 'é', 'É', '1'];
    const TRICKY: &[char] = &[
        'a', 'b', 's', 'S', 'ſ', 'k', 'K', '\u{212A}', 'i', 'I', 'İ', 'ı', 'Σ', 'σ', 'ς', 'µ', 'μ',
        'Μ', '\u{307}', 'ß', 'ẞ', 'ǅ', 'ǆ', 'Ǆ',
    ];

    /// Text chars Postgres may match against pattern char `c`, per-char models:
    /// `lower(t) = lower(c)` (libc ILIKE) or `t ∈ {c, lower(c), upper(c)}` (`~*`).
    fn ci_eq(c: char, t: char) -> bool {
        fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
            let first = it.next();
            it.next().is_none().then_some(first).flatten()
        }
        let up = single(c.to_uppercase());
        let low = single(c.to_lowercase());
        t == c || fold(t) == fold(c) || Some(t) == up || Some(t) == low
    }

    #[derive(Clone, Copy)]
    enum LTok {
        Lit(char),
        One,
        Any,
    }

    fn like_tokens(pattern: &str, escape: Option<char>) -> Option<Vec<LTok>> {
        let mut out = Vec::new();
        let mut it = pattern.chars();
        while let Some(c) = it.next() {
            out.push(if Some(c) == escape {
                LTok::Lit(it.next()?)
            } else if c == '%' {
                LTok::Any
            } else if c == '_' {
                LTok::One
            } else {
                LTok::Lit(c)
            });
        }
        Some(out)
    }

    fn like_match(text: &[char], toks: &[LTok], eq: &dyn Fn(char, char) -> bool) -> bool {
        // m[i][j]: text[i..] matches toks[j..]
        let (n, m) = (text.len(), toks.len());
        let mut dp = vec![vec![false; m + 1]; n + 1];
        dp[n][m] = true;
        for i in (0..=n).rev() {
            for j in (0..m).rev() {
                dp[i][j] = match toks[j] {
                    LTok::Any => dp[i][j + 1] || (i < n && dp[i + 1][j]),
                    LTok::One => i < n && dp[i + 1][j + 1],
                    LTok::Lit(c) => i < n && eq(c, text[i]) && dp[i + 1][j + 1],
                };
            }
        }
        dp[0][0]
    }

    /// Postgres' like_escape(): rewrite to the backslash-escaped form that
    /// ILIKE then lowercases as a whole string.
    fn pg_like_escape(pattern: &str, escape: Option<char>) -> String {
        let mut out = String::new();
        let mut after = false;
        for c in pattern.chars() {
            match escape {
                None if c == '\\' => out.push_str("\\\\"),
                Some(e) if c == e && !after => {
                    out.push('\\');
                    after = true;
                    continue;
                }
                Some(_) if c == '\\' => out.push_str(if after { "\\" } else { "\\\\" }),
                _ => out.push(c),
            }
            after = false;
        }
        out
    }

    fn reference_like(text: &str, pattern: &str, escape: Option<char>, ci: bool) -> bool {
        let Some(toks) = like_tokens(pattern, escape) else {
            return false;
        };
        let chars: Vec<char> = text.chars().collect();
        if !ci {
            return like_match(&chars, &toks, &|c, t| c == t);
        }
        if like_match(&chars, &toks, &ci_eq) {
            return true;
        }
        // ICU model: full, context-sensitive lowercasing of both strings.
        let lowered = pg_like_escape(pattern, escape).to_lowercase();
        let Some(toks) = like_tokens(&lowered, Some('\\')) else {
            return false;
        };
        let text: Vec<char> = text.to_lowercase().chars().collect();
        like_match(&text, &toks, &|c, t| c == t)
    }

    fn random_string(rng: &mut Rng, alphabet: &[char], max: usize) -> String {
        (0..rng.below(max + 1))
            .map(|_| rng.pick(alphabet))
            .collect()
    }

    /// A random char that may match `c` case-insensitively (often `c` itself):
    /// per-char equal, or with the same uppercase (`σ`/`ς`/`Σ`, `ſ`/`s`).
    fn variant(rng: &mut Rng, c: char, alphabet: &[char]) -> char {
        let options: Vec<char> = alphabet
            .iter()
            .copied()
            .filter(|&t| ci_eq(c, t) || c.to_uppercase().eq(t.to_uppercase()))
            .collect();
        if options.is_empty() || rng.below(2) == 0 {
            c
        } else {
            rng.pick(&options)
        }
    }

    #[test]
    fn like_superset_property() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut matched, mut narrowed) = (0, 0);
        for case in 0..240_000 {
            let alphabet = if case % 3 == 0 { TRICKY } else { BASIC };
            let specials = ['%', '_', '\\', '%', '_', '!'];
            let mut pat_alphabet = alphabet.to_vec();
            pat_alphabet.extend_from_slice(&specials);
            let pattern = random_string(&mut rng, &pat_alphabet, 10);
            let escape = match rng.below(10) {
                0..=5 => Some('\\'),
                6 | 7 => None,
                8 => Some('!'),
                _ => Some('%'),
            };
            let ci = rng.below(2) == 0;
            let text = match (rng.below(2), like_tokens(&pattern, escape)) {
                (0, Some(toks)) => {
                    let mut s = String::new();
                    for tok in toks {
                        match tok {
                            LTok::Lit(c) if ci => s.push(variant(&mut rng, c, alphabet)),
                            LTok::Lit(c) => s.push(c),
                            LTok::One => s.push(rng.pick(alphabet)),
                            LTok::Any => s.push_str(&random_string(&mut rng, alphabet, 3)),
                        }
                    }
                    // Exercise ICU's `İ` → `i` U+0307 expansion both ways.
                    match rng.below(3) {
                        0 if ci => s.replace("i\u{307}", "İ"),
                        1 if ci => s.replace('İ', "i\u{307}"),
                        _ => s,
                    }
                }
                _ => random_string(&mut rng, alphabet, 10),
            };
            if !reference_like(&text, &pattern, escape, ci) {
                continue;
            }
            matched += 1;
            let req = super::like_requirement(&pattern, escape, ci);
            narrowed += usize::from(req.is_constrained());
            assert!(
                satisfied(&req, &text),
                "text {text:?} pattern {pattern:?} escape {escape:?} ci {ci}: {req:?}"
            );
        }
        assert!(
            matched > 100_000 && narrowed > 30_000,
            "{matched} {narrowed}"
        );
    }

    /// Restricted regex syntax for the property test.
    #[derive(Clone, Debug)]
    enum Re {
        Lit(char),
        Any,
        Digit,
        Class(Vec<char>, bool),
        Bol,
        Eol,
        Alt(Vec<Vec<Re>>),
        Rep(Box<Re>, usize, Option<usize>, String),
    }

    fn gen_alt(rng: &mut Rng, depth: usize) -> Vec<Vec<Re>> {
        let n = if rng.below(4) == 0 {
            2 + rng.below(2)
        } else {
            1
        };
        (0..n).map(|_| gen_seq(rng, depth)).collect()
    }

    fn gen_seq(rng: &mut Rng, depth: usize) -> Vec<Re> {
        (0..rng.below(10)).map(|_| gen_item(rng, depth)).collect()
    }

    fn gen_item(rng: &mut Rng, depth: usize) -> Re {
        let atom = match rng.below(40) {
            0 => Re::Any,
            1 => Re::Digit,
            2 => Re::Class(vec!['a', 'b'], false),
            3 => Re::Class(vec![']', 'a'], rng.below(2) == 0),
            4 => return if rng.below(2) == 0 { Re::Bol } else { Re::Eol },
            5 | 6 if depth < 2 => Re::Alt(gen_alt(rng, depth + 1)),
            _ => Re::Lit(rng.pick(&['a', 'b', 'A', 'B', 'é', 'ſ', 'S', 's', '.', '{', ' '])),
        };
        let (min, max, text) = match rng.below(24) {
            0 => (0, None, "*"),
            1 => (1, None, "+"),
            2 => (0, Some(1), "?"),
            3 => (2, Some(2), "{2}"),
            4 => (1, None, "{1,}"),
            5 => (0, Some(2), "{0,2}"),
            _ => return atom,
        };
        let lazy = if rng.below(3) == 0 { "?" } else { "" };
        Re::Rep(Box::new(atom), min, max, format!("{text}{lazy}"))
    }

    fn print_seq(seq: &[Re], out: &mut String, rng: &mut Rng) {
        for item in seq {
            print_re(item, out, rng);
        }
    }

    fn print_re(re: &Re, out: &mut String, rng: &mut Rng) {
        match re {
            Re::Lit(c) if ".{\\".contains(*c) => out.extend(['\\', *c]),
            Re::Lit(c) if rng.below(16) == 0 => out.push_str(&format!("\\u{:04x}", *c as u32)),
            Re::Lit(c) if rng.below(16) == 0 => out.push_str(&format!("\\U{:08X}", *c as u32)),
            Re::Lit(c) => out.push(*c),
            Re::Any => out.push('.'),
            Re::Digit => out.push_str("\\d"),
            Re::Class(members, negated) => {
                out.push('[');
                if *negated {
                    out.push('^');
                }
                out.extend(members.iter());
                out.push(']');
            }
            Re::Bol => out.push('^'),
            Re::Eol => out.push('$'),
            Re::Alt(alts) => {
                out.push('(');
                for (k, alt) in alts.iter().enumerate() {
                    if k > 0 {
                        out.push('|');
                    }
                    print_seq(alt, out, rng);
                }
                out.push(')');
            }
            Re::Rep(atom, _, _, q) => {
                print_re(atom, out, rng);
                out.push_str(q);
            }
        }
    }

    fn ends_seq(seq: &[Re], text: &[char], pos: usize, ci: bool) -> BTreeSet<usize> {
        let mut cur = BTreeSet::from([pos]);
        for item in seq {
            cur = cur.iter().flat_map(|&p| ends(item, text, p, ci)).collect();
        }
        cur
    }

    fn ends(re: &Re, text: &[char], pos: usize, ci: bool) -> BTreeSet<usize> {
        let one = |ok: &dyn Fn(char) -> bool| match text.get(pos) {
            Some(&t) if ok(t) => BTreeSet::from([pos + 1]),
            _ => BTreeSet::new(),
        };
        let eq = |c: char, t: char| if ci { ci_eq(c, t) } else { c == t };
        match re {
            Re::Lit(c) => one(&|t| eq(*c, t)),
            Re::Any => one(&|_| true),
            Re::Digit => one(&|t| t.is_ascii_digit()),
            Re::Class(m, neg) => one(&|t| m.iter().any(|&c| eq(c, t)) != *neg),
            Re::Bol => (pos == 0).then_some(pos).into_iter().collect(),
            Re::Eol => (pos == text.len()).then_some(pos).into_iter().collect(),
            Re::Alt(alts) => alts
                .iter()
                .flat_map(|a| ends_seq(a, text, pos, ci))
                .collect(),
            Re::Rep(atom, min, max, _) => {
                let mut result = BTreeSet::new();
                let mut frontier = BTreeSet::from([pos]);
                let mut k = 0;
                loop {
                    if k >= *min {
                        result.extend(frontier.iter().copied());
                    }
                    if *max == Some(k) || frontier.is_empty() {
                        break;
                    }
                    let next: BTreeSet<usize> = frontier
                        .iter()
                        .flat_map(|&p| ends(atom, text, p, ci))
                        .collect();
                    k += 1;
                    if k > *min && next.is_subset(&result) {
                        break;
                    }
                    frontier = next;
                }
                result
            }
        }
    }

    fn reference_regex(re: &[Vec<Re>], text: &str, ci: bool) -> bool {
        let chars: Vec<char> = text.chars().collect();
        (0..=chars.len()).any(|s| {
            re.iter()
                .any(|alt| !ends_seq(alt, &chars, s, ci).is_empty())
        })
    }

    /// A string likely (not certainly: anchors) matched by the sequence.
    fn sample_seq(seq: &[Re], rng: &mut Rng, out: &mut String, ci: bool) {
        for item in seq {
            sample(item, rng, out, ci);
        }
    }

    fn sample(re: &Re, rng: &mut Rng, out: &mut String, ci: bool) {
        match re {
            Re::Lit(c) if ci => out.push(variant(rng, *c, TRICKY)),
            Re::Lit(c) => out.push(*c),
            Re::Any => out.push(rng.pick(BASIC)),
            Re::Digit => out.push('1'),
            Re::Class(m, false) => out.push(rng.pick(m)),
            Re::Class(_, true) => out.push('x'),
            Re::Bol | Re::Eol => {}
            Re::Alt(alts) => sample_seq(&alts[rng.below(alts.len())], rng, out, ci),
            Re::Rep(atom, min, max, _) => {
                let n = min + rng.below(max.unwrap_or(min + 2) - min + 1);
                for _ in 0..n {
                    sample(atom, rng, out, ci);
                }
            }
        }
    }

    #[test]
    fn regex_superset_property() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let (mut matched, mut narrowed) = (0, 0);
        for _ in 0..200_000 {
            let re = gen_alt(&mut rng, 0);
            let mut pattern = String::new();
            for (k, alt) in re.iter().enumerate() {
                if k > 0 {
                    pattern.push('|');
                }
                print_seq(alt, &mut pattern, &mut rng);
            }
            let ci = rng.below(2) == 0;
            let mut text = random_string(&mut rng, BASIC, 3);
            if rng.below(4) > 0 {
                sample_seq(&re[rng.below(re.len())], &mut rng, &mut text, ci);
            }
            text.push_str(&random_string(&mut rng, BASIC, 3));
            if !reference_regex(&re, &text, ci) {
                continue;
            }
            matched += 1;
            let req = super::regex_requirement(&pattern, ci);
            narrowed += usize::from(req.is_constrained());
            assert!(
                satisfied(&req, &text),
                "text {text:?} pattern {pattern:?} ci {ci}: {req:?}"
            );
        }
        assert!(
            matched > 100_000 && narrowed > 20_000,
            "{matched} {narrowed}"
        );
    }
}
