//! Boolean requirements over index terms.
//!
//! A [`Requirement`] describes what an indexed document must contain for a
//! text predicate to possibly match it. The index uses it to produce a
//! *superset* of the matching rows, so every producer of requirements must be
//! conservative: when unsure, it returns [`Requirement::True`].

use std::collections::HashSet;

/// What an indexed document must contain to possibly match a predicate.
///
/// `Hash` is derived (in addition to equality) so that the simplifying
/// constructors can deduplicate large conjunctions in linear time; a long
/// LIKE pattern yields one term per trigram.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// No constraint: every document may match.
    True,
    /// Nothing can match (e.g. an empty tsquery).
    False,
    /// The document holds this term (a trigram for LIKE/regex, a lexeme for @@).
    Term(String),
    /// The document holds a lexeme starting with this prefix (`'sup':*` in a tsquery).
    Prefix(String),
    /// The document's folded text (see [`super::terms::fold`]) contains this run of at
    /// least three chars: its trigrams at consecutive positions.
    Substring(String),
    And(Vec<Requirement>),
    Or(Vec<Requirement>),
}

impl Requirement {
    /// True when the requirement excludes at least some documents, i.e. when
    /// consulting the index can narrow the candidate set at all.
    pub fn is_constrained(&self) -> bool {
        !matches!(self, Requirement::True)
    }
}

/// Conjunction with simplification, so callers can combine freely without
/// producing trivially redundant trees: nested `And`s are flattened, `True`
/// parts are dropped, any `False` part makes the whole `False`, duplicates
/// are removed, an empty conjunction is `True` and a single part is returned
/// unwrapped.
pub fn and(parts: Vec<Requirement>) -> Requirement {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    // Explicit stack instead of recursion: nested `And`s built by hand may be deep.
    let mut stack: Vec<Requirement> = parts.into_iter().rev().collect();
    while let Some(part) = stack.pop() {
        match part {
            Requirement::True => {}
            Requirement::False => return Requirement::False,
            Requirement::And(inner) => stack.extend(inner.into_iter().rev()),
            other => {
                if seen.insert(other.clone()) {
                    out.push(other);
                }
            }
        }
    }
    match out.len() {
        0 => Requirement::True,
        1 => out.pop().unwrap_or(Requirement::True),
        _ => Requirement::And(out),
    }
}

/// Disjunction with simplification, the dual of [`and`]: nested `Or`s are
/// flattened, `False` parts are dropped, any `True` part makes the whole
/// `True` (one unconstrained alternative means nothing can be excluded),
/// duplicates are removed, an empty disjunction is `False` and a single part
/// is returned unwrapped.
pub fn or(parts: Vec<Requirement>) -> Requirement {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<Requirement> = parts.into_iter().rev().collect();
    while let Some(part) = stack.pop() {
        match part {
            Requirement::False => {}
            Requirement::True => return Requirement::True,
            Requirement::Or(inner) => stack.extend(inner.into_iter().rev()),
            other => {
                if seen.insert(other.clone()) {
                    out.push(other);
                }
            }
        }
    }
    match out.len() {
        0 => Requirement::False,
        1 => out.pop().unwrap_or(Requirement::False),
        _ => Requirement::Or(out),
    }
}

#[cfg(test)]
mod tests {
    use super::Requirement::{False, Prefix, Term, True};
    use super::*;

    fn t(s: &str) -> Requirement {
        Term(s.to_string())
    }

    #[test]
    fn and_identities() {
        assert_eq!(and(vec![]), True);
        assert_eq!(and(vec![True]), True);
        assert_eq!(and(vec![True, True]), True);
        assert_eq!(and(vec![t("a")]), t("a"));
        assert_eq!(and(vec![True, t("a"), True]), t("a"));
        assert_eq!(and(vec![t("a"), False, t("b")]), False);
        assert_eq!(and(vec![False]), False);
    }

    #[test]
    fn or_identities() {
        assert_eq!(or(vec![]), False);
        assert_eq!(or(vec![False]), False);
        assert_eq!(or(vec![False, False]), False);
        assert_eq!(or(vec![t("a")]), t("a"));
        assert_eq!(or(vec![False, t("a"), False]), t("a"));
        assert_eq!(or(vec![t("a"), True, t("b")]), True);
        assert_eq!(or(vec![True]), True);
    }

    #[test]
    fn flattening_and_dedup() {
        assert_eq!(
            and(vec![t("a"), and(vec![t("b"), t("c")]), t("a")]),
            Requirement::And(vec![t("a"), t("b"), t("c")])
        );
        // Hand-built nesting with True/False inside is simplified too.
        assert_eq!(
            and(vec![
                Requirement::And(vec![True, Requirement::And(vec![t("x"), t("x")])]),
                t("y"),
            ]),
            Requirement::And(vec![t("x"), t("y")])
        );
        assert_eq!(
            and(vec![Requirement::And(vec![t("x"), False]), t("y")]),
            False
        );
        assert_eq!(
            or(vec![t("a"), or(vec![t("b"), t("a")]), Prefix("p".into())]),
            Requirement::Or(vec![t("a"), t("b"), Prefix("p".into())])
        );
        assert_eq!(or(vec![Requirement::Or(vec![t("x"), True])]), True);
        assert_eq!(or(vec![t("x"), t("x")]), t("x"));
        // Term and Prefix with the same text are different requirements.
        assert_eq!(
            and(vec![t("x"), Prefix("x".into())]),
            Requirement::And(vec![t("x"), Prefix("x".into())])
        );
    }

    #[test]
    fn mixed_nesting_is_kept() {
        let inner_or = or(vec![t("a"), t("b")]);
        assert_eq!(
            and(vec![inner_or.clone(), t("c")]),
            Requirement::And(vec![inner_or.clone(), t("c")])
        );
        let inner_and = and(vec![t("a"), t("b")]);
        assert_eq!(
            or(vec![inner_and.clone(), t("c")]),
            Requirement::Or(vec![inner_and, t("c")])
        );
    }

    #[test]
    fn deep_and_large_inputs() {
        let mut r = t("x");
        for _ in 0..10_000 {
            r = Requirement::And(vec![r]);
        }
        assert_eq!(and(vec![r]), t("x"));
        let many: Vec<Requirement> = (0..50_000).map(|i| t(&(i % 1000).to_string())).collect();
        match and(many) {
            Requirement::And(v) => assert_eq!(v.len(), 1000),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn constrained() {
        assert!(!True.is_constrained());
        assert!(False.is_constrained());
        assert!(t("a").is_constrained());
        assert!(and(vec![t("a"), t("b")]).is_constrained());
    }
}
