//! The live policy set: validated as a whole, then swapped in whole.
//!
//! Readers (sessions, `EXPLAIN ROUTE`, the admin views, the planner) take an
//! `Arc<PolicySet>` and keep reading it even while a reload replaces it; a reload that does
//! not validate never replaces anything.

use crate::config::policy::{self, Policy, PolicyErrors};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// One validated generation of `policies/*.toml`.
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub dir: PathBuf,
    pub policies: Vec<Policy>,
    /// 1 for the set loaded at start-up, +1 per successful reload.
    pub generation: u64,
    pub loaded_at: SystemTime,
}

/// The policy that covers a table, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyMatch<'a> {
    pub policy: &'a Policy,
    /// The `tables` entry that matched.
    pub pattern: &'a str,
}

impl PolicySet {
    pub fn empty(dir: &Path) -> Self {
        PolicySet {
            dir: dir.to_path_buf(),
            policies: Vec::new(),
            generation: 0,
            loaded_at: SystemTime::now(),
        }
    }

    /// Load and validate every policy of `dir`.
    pub fn load(dir: &Path, generation: u64) -> Result<Self, PolicyErrors> {
        Ok(PolicySet {
            dir: dir.to_path_buf(),
            policies: policy::load_dir(dir)?,
            generation,
            loaded_at: SystemTime::now(),
        })
    }

    /// The policy covering `schema.table`. An exact name beats a glob; among equals, the
    /// first file (files load in name order) wins.
    pub fn policy_for(&self, schema: &str, table: &str) -> Option<PolicyMatch<'_>> {
        let mut best: Option<(bool, PolicyMatch<'_>)> = None;
        for p in &self.policies {
            for pattern in &p.tables {
                let Some(exact) = table_pattern_matches(pattern, schema, table) else {
                    continue;
                };
                let better = match &best {
                    None => true,
                    Some((best_exact, _)) => exact && !best_exact,
                };
                if better {
                    best = Some((exact, PolicyMatch { policy: p, pattern }));
                }
            }
        }
        best.map(|(_, m)| m)
    }
}

/// Whether a `tables` entry (`name`, `schema.name`, with `*` globs in either part) covers
/// `schema.table`: `Some(true)` for a match without wildcards, `Some(false)` for a glob
/// match, `None` for no match. An unqualified entry means schema `public`, as a default
/// `search_path` would resolve it.
pub fn table_pattern_matches(pattern: &str, schema: &str, table: &str) -> Option<bool> {
    // Byte searches: `.` and `*` are ASCII (a char-pattern `split_once` costs more than the
    // comparison itself on this per-statement path).
    let (p_schema, p_table) = match pattern.bytes().position(|b| b == b'.') {
        Some(dot) => (&pattern[..dot], &pattern[dot + 1..]),
        None if pattern == "*" => ("*", "*"),
        None => ("public", pattern),
    };
    // Runs for every statement routed: names without wildcards compare as plain strings.
    if !pattern.as_bytes().contains(&b'*') {
        return (p_schema == schema && p_table == table).then_some(true);
    }
    (glob_match(p_schema, schema) && glob_match(p_table, table)).then_some(false)
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The current [`PolicySet`], replaced whole by [`PolicyStore::replace`].
#[derive(Debug)]
pub struct PolicyStore {
    current: RwLock<Arc<PolicySet>>,
    /// Mirrors the current set's generation, so sessions can check for a new set without
    /// touching the lock.
    generation: AtomicU64,
}

impl PolicyStore {
    pub fn new(initial: PolicySet) -> Self {
        PolicyStore {
            generation: AtomicU64::new(initial.generation),
            current: RwLock::new(Arc::new(initial)),
        }
    }

    /// The set in force now. Holds the lock only to clone an `Arc`.
    pub fn current(&self) -> Arc<PolicySet> {
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&guard)
    }

    /// Install an already validated set.
    pub fn replace(&self, set: PolicySet) {
        let generation = set.generation;
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(set);
        self.generation.store(generation, Relaxed);
    }

    /// Generation of the set in force (lock-free).
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("acc*", "accounts"));
        assert!(glob_match("*unts", "accounts"));
        assert!(glob_match("a*o*s", "accounts"));
        assert!(!glob_match("a*x", "accounts"));
        assert!(!glob_match("accounts", "accounts2"));
    }

    #[test]
    fn patterns() {
        assert_eq!(
            table_pattern_matches("public.accounts", "public", "accounts"),
            Some(true)
        );
        assert_eq!(
            table_pattern_matches("accounts", "public", "accounts"),
            Some(true)
        );
        assert_eq!(table_pattern_matches("accounts", "app", "accounts"), None);
        assert_eq!(
            table_pattern_matches("public.*", "public", "docs"),
            Some(false)
        );
        assert_eq!(table_pattern_matches("*", "app", "docs"), Some(false));
        assert_eq!(table_pattern_matches("app.*", "public", "docs"), None);
    }

    #[test]
    fn exact_beats_glob() {
        let text_glob = "tables = [\"public.*\"]\n[cache]\nstore = \"memory\"\n";
        let text_exact = "tables = [\"public.accounts\"]\n[cache]\nstore = \"redis\"\n";
        let glob = policy::parse_policy(text_glob, Path::new("a.toml")).unwrap();
        let exact = policy::parse_policy(text_exact, Path::new("b.toml")).unwrap();
        let set = PolicySet {
            dir: PathBuf::from("p"),
            policies: vec![glob, exact],
            generation: 1,
            loaded_at: SystemTime::now(),
        };
        let m = set.policy_for("public", "accounts").unwrap();
        assert_eq!(m.pattern, "public.accounts");
        let m = set.policy_for("public", "docs").unwrap();
        assert_eq!(m.pattern, "public.*");
        assert!(set.policy_for("other", "docs").is_none());
    }
}
