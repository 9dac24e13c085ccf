//! Words of the folded text, and what a literal run requires of them.
//!
//! Why: a positional trigram phrase finds a run exactly, but when every trigram of it is
//! common (short vocabularies, repetitive text) the phrase query reads the positions of
//! nearly every document. A run also says something about *words*: where it holds a
//! separator, the word chars next to it end or start a word of the document. So besides its
//! trigrams, every indexed column has a field of its distinct words (no positions), and a
//! run becomes conditions on those words that a dictionary lookup can answer from a few
//! posting lists:
//!
//! - `xyz` (no separator): some word *contains* `xyz`;
//! - `xyz abc def` : some word *ends with* `xyz`, some word *is* `abc`, some word *starts
//!   with* `def`.
//!
//! A *word char* is an ASCII letter or digit, or any non-ASCII char; everything else is a
//! separator. Non-ASCII chars are word chars on purpose: the split then depends on no
//! Unicode table, so an index built by one build of the proxy means the same to the next.
//! Words are cut from the folded text ([`super::terms::fold`] maps char to char), and a run
//! of a pattern is folded the same way, so a run found in a document's folded text lies
//! over the same chars, and the same word boundaries, in both.
//!
//! Words longer than [`MAX_WORD_CHARS`] are not stored (tantivy caps term length); the
//! document gets [`LONG_WORD`] instead, and every condition also accepts it.

/// Longest word stored as itself.
pub const MAX_WORD_CHARS: usize = 64;

/// Stored for a document with a longer word. Holds a separator, so no word equals it.
pub const LONG_WORD: &str = "\u{1}long";

/// Word char: see the module doc.
pub fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || !c.is_ascii()
}

/// What some word of the document must be, for a run to occur in its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WordCondition {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

impl WordCondition {
    /// Whether the stored word `term` satisfies the condition.
    pub fn accepts(&self, term: &str) -> bool {
        match self {
            WordCondition::Exact(w) => term == w,
            WordCondition::Prefix(w) => term.starts_with(w.as_str()),
            WordCondition::Suffix(w) => term.ends_with(w.as_str()),
            WordCondition::Contains(w) => term.contains(w.as_str()),
        }
    }

    /// The text the condition is about.
    pub fn text(&self) -> &str {
        match self {
            WordCondition::Exact(w)
            | WordCondition::Prefix(w)
            | WordCondition::Suffix(w)
            | WordCondition::Contains(w) => w,
        }
    }
}

/// The conditions a folded run implies, one per maximal run of word chars in it: bounded on
/// the left by a separator in the run, the word starts there; bounded on the right, it ends
/// there. A run without word chars implies none.
pub fn conditions(run: &str) -> Vec<WordCondition> {
    let chars: Vec<char> = run.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !is_word_char(chars[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_word_char(chars[i]) {
            i += 1;
        }
        let text: String = chars[start..i].iter().collect();
        let starts_word = start > 0;
        let ends_word = i < chars.len();
        out.push(match (starts_word, ends_word) {
            (true, true) => WordCondition::Exact(text),
            (true, false) => WordCondition::Prefix(text),
            (false, true) => WordCondition::Suffix(text),
            (false, false) => WordCondition::Contains(text),
        });
    }
    out
}

/// Calls `each` with every distinct stored word of `text` (folded with `fold`): each maximal
/// run of word chars, or [`LONG_WORD`] for runs longer than [`MAX_WORD_CHARS`].
pub fn for_each_word(text: &str, fold: impl Fn(char) -> char, mut each: impl FnMut(&str)) {
    let mut seen: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut len = 0usize;
    let mut flush = |word: &mut String, len: &mut usize| {
        if *len > 0 {
            let w = if *len > MAX_WORD_CHARS {
                LONG_WORD
            } else {
                word.as_str()
            };
            if !seen.iter().any(|s| s == w) {
                each(w);
                seen.push(w.to_string());
            }
        }
        word.clear();
        *len = 0;
    };
    for c in text.chars().map(fold) {
        if is_word_char(c) {
            if len < MAX_WORD_CHARS + 1 {
                word.push(c);
            }
            len += 1;
        } else {
            flush(&mut word, &mut len);
        }
    }
    flush(&mut word, &mut len);
}

/// One segment's stored words, in one string, for scanning with a substring search instead
/// of walking the term dictionary (which decodes every term's postings address).
#[derive(Debug, Default)]
pub struct WordList {
    /// Every word followed by `\n` (a separator: no word holds it).
    text: String,
    /// Where each word starts in `text`, ascending.
    starts: Vec<usize>,
}

impl WordList {
    pub fn push(&mut self, word: &str) {
        self.starts.push(self.text.len());
        self.text.push_str(word);
        self.text.push('\n');
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Calls `each` once with every word that `cond` accepts (in list order).
    pub fn matching(&self, cond: &WordCondition, mut each: impl FnMut(&str)) {
        let needle = match cond {
            WordCondition::Suffix(w) => format!("{w}\n"),
            WordCondition::Exact(w) | WordCondition::Prefix(w) | WordCondition::Contains(w) => {
                w.clone()
            }
        };
        let mut last = None;
        for (at, _) in self.text.match_indices(needle.as_str()) {
            // The word holding the match: the needle holds no `\n` before its end, so a
            // match lies within one word (and, for a suffix, its terminator).
            let i = self.starts.partition_point(|&s| s <= at).saturating_sub(1);
            if last == Some(i) {
                continue;
            }
            last = Some(i);
            let start = self.starts[i];
            let end = self.starts.get(i + 1).map_or(self.text.len(), |&e| e) - 1;
            let word = &self.text[start..end];
            if cond.accepts(word) {
                each(word);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WordCondition::{Contains, Exact, Prefix, Suffix};
    use super::*;
    use crate::search::terms::fold;

    fn s(x: &str) -> String {
        x.to_string()
    }

    fn words(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_word(text, fold, |w| out.push(w.to_string()));
        out
    }

    #[test]
    fn runs_become_conditions() {
        assert_eq!(conditions("abc"), vec![Contains(s("abc"))]);
        assert_eq!(
            conditions("new york"),
            vec![Suffix(s("new")), Prefix(s("york"))]
        );
        assert_eq!(
            conditions("a big deal."),
            vec![Suffix(s("a")), Exact(s("big")), Exact(s("deal"))]
        );
        assert_eq!(conditions(" x"), vec![Prefix(s("x"))]);
        assert_eq!(conditions("x "), vec![Suffix(s("x"))]);
        assert_eq!(conditions(" - "), vec![]);
        assert_eq!(conditions("é_ü"), vec![Suffix(s("é")), Prefix(s("ü"))]);
    }

    #[test]
    fn words_are_folded_distinct_and_capped() {
        assert_eq!(
            words("The cat, the HAT"),
            vec![s("the"), s("cat"), s("hat")]
        );
        assert_eq!(words("naïve—café"), vec![s("naïve—café")]);
        assert_eq!(words(""), Vec::<String>::new());
        let long = "x".repeat(MAX_WORD_CHARS + 1);
        assert_eq!(
            words(&format!("a {long} b {long}")),
            vec![s("a"), s(LONG_WORD), s("b")]
        );
        let edge = "y".repeat(MAX_WORD_CHARS);
        assert_eq!(words(&edge), vec![edge.clone()]);
    }

    #[test]
    fn word_list_scans_like_the_conditions() {
        let stored = ["ab", "abc", "bcd", "cab", "zab", "é", "naïve"];
        let mut list = WordList::default();
        for w in stored {
            list.push(w);
        }
        for cond in [
            Contains(s("ab")),
            Suffix(s("ab")),
            Prefix(s("ab")),
            Exact(s("ab")),
            Contains(s("b")),
            Contains(s("ï")),
            Suffix(s("d")),
            Contains(s("x")),
        ] {
            let mut got = Vec::new();
            list.matching(&cond, |w| got.push(w.to_string()));
            let want: Vec<String> = stored
                .iter()
                .filter(|w| cond.accepts(w))
                .map(|w| w.to_string())
                .collect();
            assert_eq!(got, want, "{cond:?}");
        }
    }

    /// The soundness property the index relies on: whenever a folded run occurs in a text,
    /// every condition it implies is accepted by some stored word of that text (or the text
    /// has a long word). Checked over every substring of a set of texts.
    #[test]
    fn every_occurring_run_is_accepted() {
        let texts = [
            "The quick brown fox, jumps over the lazy dog.",
            "new-york  NEW york\tNew\nYork",
            "a_b%c\\d 'quoted' \"double\" x",
            "ÉTÉ été Straße İstanbul ΣΊΣΥΦΟΣ 東京 タワー",
            &format!("short {} tail", "z".repeat(MAX_WORD_CHARS + 5)),
        ];
        for text in texts {
            let folded: Vec<char> = text.chars().map(fold).collect();
            let stored = words(text);
            for a in 0..folded.len() {
                for b in a + 1..=folded.len() {
                    let run: String = folded[a..b].iter().collect();
                    for cond in conditions(&run) {
                        let ok = stored.iter().any(|w| w == LONG_WORD || cond.accepts(w));
                        assert!(
                            ok,
                            "{run:?} in {text:?}: {cond:?} not accepted by {stored:?}"
                        );
                    }
                }
            }
        }
    }
}
