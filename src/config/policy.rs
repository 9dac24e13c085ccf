//! Placement policies: `policies/*.toml`, one file per concern.
//!
//! The schema is the operator's interface documented in the README. Files are parsed with
//! unknown keys rejected and then validated as a whole set (duplicate table coverage, value
//! ranges), so `pgpolyglot check-policies` and start-up report every problem with its file and
//! line before anything runs. Nothing in this module does I/O besides reading the files.

use super::duration::parse_duration;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One problem found in a policy file.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyIssue {
    pub file: PathBuf,
    /// 1-based line, when the problem can be pinned to one.
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for PolicyIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file.display(), l, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in policies:\n{}", .0.len(), .0.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
pub struct PolicyErrors(pub Vec<PolicyIssue>);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    tables: Vec<String>,
    key: Option<String>,
    cache: Option<RawCache>,
    search: Option<RawSearch>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    store: Option<String>,
    promote_after: Option<u32>,
    window: Option<String>,
    demote_after_idle: Option<String>,
    max_keys: Option<u64>,
    max_bytes: Option<String>,
    max_staleness: Option<String>,
    coalesce_misses: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSearch {
    store: Option<String>,
    columns: Vec<String>,
    predicates: Option<Vec<String>>,
    fts_configs: Option<Vec<String>>,
    max_candidate_fraction: Option<f64>,
    max_staleness: Option<String>,
}

/// Where hot keys live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStoreKind {
    Memory,
    Redis,
}

impl CacheStoreKind {
    /// The name policies use (`store = "..."`).
    pub fn name(self) -> &'static str {
        match self {
            CacheStoreKind::Memory => "memory",
            CacheStoreKind::Redis => "redis",
        }
    }
}

impl SearchStoreKind {
    /// The name policies use (`store = "..."`).
    pub fn name(self) -> &'static str {
        match self {
            SearchStoreKind::Embedded => "embedded",
            SearchStoreKind::Elasticsearch => "elasticsearch",
        }
    }
}

impl PredicateKind {
    /// The name policies use (`predicates = [...]`).
    pub fn name(self) -> &'static str {
        match self {
            PredicateKind::Like => "like",
            PredicateKind::ILike => "ilike",
            PredicateKind::Regex => "regex",
            PredicateKind::FullText => "fts",
        }
    }
}

/// Where text predicates are indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchStoreKind {
    Embedded,
    Elasticsearch,
}

/// Text predicate kinds a search section may serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredicateKind {
    Like,
    ILike,
    Regex,
    FullText,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CachePolicy {
    pub store: CacheStoreKind,
    pub promote_after: u32,
    pub window: Duration,
    pub demote_after_idle: Duration,
    pub max_keys: u64,
    pub max_bytes: u64,
    pub max_staleness: Duration,
    /// A miss of a single-key point read is fetched on the proxy's own connection, together
    /// with the misses other sessions have waiting (one query for many), and answered from
    /// what was fetched, instead of being sent on the session's connection.
    pub coalesce_misses: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchPolicy {
    pub store: SearchStoreKind,
    pub columns: Vec<String>,
    pub predicates: Vec<PredicateKind>,
    /// Text search configurations whose lexemes are indexed (a subset of
    /// [`crate::search::table::FTS_CONFIGS`], in that order); `@@` with another passes
    /// through. Each costs Postgres a `to_tsvector` per row and column when indexing.
    pub fts_configs: Vec<String>,
    pub max_candidate_fraction: f64,
    /// Bound for writes that bypass the proxy: above this feed lag, text predicates pass
    /// through un-narrowed. Default `1s`.
    pub max_staleness: Duration,
}

/// A validated policy, with the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub file: PathBuf,
    pub tables: Vec<String>,
    pub key: Option<String>,
    pub cache: Option<CachePolicy>,
    pub search: Option<SearchPolicy>,
}

/// Parse sizes such as `"256MiB"`, `"1GiB"`, `"512KiB"`, `"1000"` (bytes).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "kB" => 1024,
        "MiB" | "MB" => 1024 * 1024,
        "GiB" | "GB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|s| s.matches('\n').count() + 1)
        .unwrap_or(1)
}

/// Line of the first occurrence of `key =` in the file, to point at a bad value.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(key) && l[key.len()..].trim_start().starts_with('=')
        })
        .map(|i| i + 1)
}

/// Parse and validate one policy file's text.
pub fn parse_policy(text: &str, file: &Path) -> Result<Policy, Vec<PolicyIssue>> {
    let raw: RawPolicy = toml::from_str(text).map_err(|e| {
        vec![PolicyIssue {
            file: file.to_path_buf(),
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().to_string(),
        }]
    })?;
    let mut issues = Vec::new();
    let mut issue = |key: &str, message: String| {
        issues.push(PolicyIssue {
            file: file.to_path_buf(),
            line: line_of_key(text, key),
            message,
        })
    };
    if raw.tables.is_empty() {
        issue(
            "tables",
            "`tables` must name at least one table or glob".into(),
        );
    }
    for t in &raw.tables {
        if t.trim().is_empty() || t.split('.').count() > 2 {
            issue(
                "tables",
                format!("{t:?} is not a table name, schema.table, or glob"),
            );
        }
    }
    let mut dur = |key: &str, v: &Option<String>, default: Duration| match v {
        None => default,
        Some(s) => parse_duration(s).unwrap_or_else(|e| {
            issue(key, e.to_string());
            default
        }),
    };
    let cache = raw.cache.as_ref().map(|c| {
        let window = dur("window", &c.window, Duration::from_secs(10));
        let demote = dur(
            "demote_after_idle",
            &c.demote_after_idle,
            Duration::from_secs(300),
        );
        let staleness = dur(
            "max_staleness",
            &c.max_staleness,
            Duration::from_millis(250),
        );
        (c, window, demote, staleness)
    });
    let search_staleness = raw
        .search
        .as_ref()
        .map(|s| dur("max_staleness", &s.max_staleness, Duration::from_secs(1)));
    let cache = cache.map(|(c, window, demote_after_idle, max_staleness)| {
        let store = match c.store.as_deref().unwrap_or("memory") {
            "memory" => CacheStoreKind::Memory,
            "redis" => CacheStoreKind::Redis,
            other => {
                issue(
                    "store",
                    format!("cache store {other:?}: expected \"memory\" or \"redis\""),
                );
                CacheStoreKind::Memory
            }
        };
        let max_bytes = match &c.max_bytes {
            None => 256 * 1024 * 1024,
            Some(s) => parse_bytes(s).unwrap_or_else(|| {
                issue(
                    "max_bytes",
                    format!("{s:?}: expected a size such as \"256MiB\""),
                );
                0
            }),
        };
        let promote_after = c.promote_after.unwrap_or(3);
        if promote_after == 0 {
            issue("promote_after", "promote_after must be at least 1".into());
        }
        CachePolicy {
            store,
            promote_after,
            window,
            demote_after_idle,
            max_keys: c.max_keys.unwrap_or(100_000),
            max_bytes,
            max_staleness,
            coalesce_misses: c.coalesce_misses.unwrap_or(false),
        }
    });
    let search = raw.search.as_ref().map(|s| {
        let store = match s.store.as_deref().unwrap_or("embedded") {
            "embedded" => SearchStoreKind::Embedded,
            "elasticsearch" => SearchStoreKind::Elasticsearch,
            other => {
                issue(
                    "store",
                    format!("search store {other:?}: expected \"embedded\" or \"elasticsearch\""),
                );
                SearchStoreKind::Embedded
            }
        };
        if s.columns.is_empty() {
            issue("columns", "search needs at least one column".into());
        }
        let names = s.predicates.clone().unwrap_or_else(|| {
            ["like", "ilike", "regex", "fts"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        let mut predicates = Vec::new();
        for p in &names {
            match p.as_str() {
                "like" => predicates.push(PredicateKind::Like),
                "ilike" => predicates.push(PredicateKind::ILike),
                "regex" => predicates.push(PredicateKind::Regex),
                "fts" => predicates.push(PredicateKind::FullText),
                other => issue(
                    "predicates",
                    format!(
                        "predicate {other:?}: expected \"like\", \"ilike\", \"regex\" or \"fts\""
                    ),
                ),
            }
        }
        let fts_names = s.fts_configs.clone().unwrap_or_else(|| {
            crate::search::table::FTS_CONFIGS
                .iter()
                .map(|c| c.to_string())
                .collect()
        });
        for c in &fts_names {
            if !crate::search::table::FTS_CONFIGS.contains(&c.as_str()) {
                issue(
                    "fts_configs",
                    format!("configuration {c:?}: expected \"english\" or \"simple\""),
                );
            }
        }
        if fts_names.is_empty() && predicates.contains(&PredicateKind::FullText) {
            issue(
                "fts_configs",
                "predicates include \"fts\" but no configuration is indexed".into(),
            );
        }
        // In FTS_CONFIGS order, each once: the layout does not depend on how they are listed.
        let fts_configs: Vec<String> = crate::search::table::FTS_CONFIGS
            .iter()
            .filter(|c| fts_names.iter().any(|n| n == *c))
            .map(|c| c.to_string())
            .collect();
        let fraction = s.max_candidate_fraction.unwrap_or(0.05);
        if !(fraction > 0.0 && fraction <= 1.0) {
            issue(
                "max_candidate_fraction",
                format!("{fraction}: must be in (0, 1]"),
            );
        }
        SearchPolicy {
            store,
            columns: s.columns.clone(),
            predicates,
            fts_configs,
            max_candidate_fraction: fraction,
            max_staleness: search_staleness.unwrap_or(Duration::from_secs(1)),
        }
    });
    if cache.is_none() && search.is_none() {
        issues.push(PolicyIssue {
            file: file.to_path_buf(),
            line: None,
            message: "policy has neither a [cache] nor a [search] section".into(),
        });
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(Policy {
        file: file.to_path_buf(),
        tables: raw.tables,
        key: raw.key,
        cache,
        search,
    })
}

/// Load every `*.toml` file of a directory (sorted by name). A missing directory is an empty set.
pub fn load_dir(dir: &Path) -> Result<Vec<Policy>, PolicyErrors> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(PolicyErrors(vec![PolicyIssue {
                file: dir.to_path_buf(),
                line: None,
                message: format!("cannot read directory: {e}"),
            }]))
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut policies = Vec::new();
    let mut issues = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => match parse_policy(&text, &f) {
                Ok(p) => policies.push(p),
                Err(mut i) => issues.append(&mut i),
            },
            Err(e) => issues.push(PolicyIssue {
                file: f.clone(),
                line: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if issues.is_empty() {
        Ok(policies)
    } else {
        Err(PolicyErrors(issues))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_policy_parses_with_defaults() {
        let p = parse_policy(
            "tables = [\"public.accounts\"]\n[cache]\nstore = \"memory\"\nwindow = \"10s\"\n",
            Path::new("a.toml"),
        )
        .unwrap();
        let c = p.cache.unwrap();
        assert_eq!(c.promote_after, 3);
        assert_eq!(c.max_bytes, 256 * 1024 * 1024);
        assert_eq!(c.max_staleness, Duration::from_millis(250));
        assert!(!c.coalesce_misses);
        let p = parse_policy(
            "tables = [\"t\"]\n[cache]\ncoalesce_misses = true\n",
            Path::new("b.toml"),
        )
        .unwrap();
        assert!(p.cache.unwrap().coalesce_misses);
    }

    #[test]
    fn errors_name_file_and_line() {
        let text = "tables = [\"t\"]\n[cache]\nwindow = \"ten seconds\"\n";
        let issues = parse_policy(text, Path::new("p/hot.toml")).unwrap_err();
        assert_eq!(issues[0].line, Some(3));
        assert!(
            issues[0].to_string().starts_with("p/hot.toml:3:"),
            "{}",
            issues[0]
        );

        let text = "tables = [\"t\"]\n[cache]\nstor = \"memory\"\n";
        let issues = parse_policy(text, Path::new("x.toml")).unwrap_err();
        assert_eq!(issues[0].line, Some(3), "{:?}", issues);
        assert!(issues[0].message.contains("stor"));
    }

    #[test]
    fn rejects_bad_values() {
        let text = "tables = []\n[search]\nstore = \"solr\"\ncolumns = []\npredicates = [\"soundex\"]\nmax_candidate_fraction = 2.0\n";
        let issues = parse_policy(text, Path::new("x.toml")).unwrap_err();
        assert_eq!(issues.len(), 5, "{issues:?}");
    }

    #[test]
    fn fts_configs_are_checked_and_ordered() {
        let with = |configs: &str| {
            format!("tables = [\"t\"]\n[search]\ncolumns = [\"b\"]\nfts_configs = {configs}\n")
        };
        let p = parse_policy(
            &with("[\"simple\", \"english\", \"simple\"]"),
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(p.search.unwrap().fts_configs, ["english", "simple"]);
        let issues = parse_policy(&with("[\"german\"]"), Path::new("x.toml")).unwrap_err();
        assert!(
            issues.iter().any(|i| i.message.contains("\"german\"")),
            "{issues:?}"
        );
        let issues = parse_policy(&with("[]"), Path::new("x.toml")).unwrap_err();
        assert!(
            issues
                .iter()
                .any(|i| i.message.contains("no configuration")),
            "{issues:?}"
        );
        let p = parse_policy(
            "tables = [\"t\"]\n[search]\ncolumns = [\"b\"]\npredicates = [\"like\"]\nfts_configs = []\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert!(p.search.unwrap().fts_configs.is_empty());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("256MiB"), Some(256 << 20));
        assert_eq!(parse_bytes("10"), Some(10));
        assert_eq!(parse_bytes("1 GiB"), Some(1 << 30));
        assert_eq!(parse_bytes("lots"), None);
    }
}
