//! The placement planner: a pure function from (policies, statistics) to the placement they
//! call for. `SHOW PLAN`, `/api/plan` and `pgpolyglot plan` print it as a dry run.
//!
//! ## Hot keys (`[cache]`)
//!
//! A policy says "promote a key read `promote_after` times within `window`". The statistics
//! do not keep per-key timestamps; they keep a decayed count (`score`, see [`crate::stats`]):
//! a key read `r` times a second for a while scores about `r · half_life / ln 2`. So the
//! planner estimates the reads within the window as the steady-state rate times the window,
//!
//! ```text
//! reads_in_window ≈ (score − error) · ln 2 · window / half_life
//! ```
//!
//! using `score − error`, Space-Saving's guaranteed lower bound, so a key that is only
//! overestimated (it inherited a slot's count) is not promoted. Being a rate estimate it
//! discounts short bursts: a key has to stay hot for a sizeable part of a half-life, which
//! is what keeps one-off scans from churning the cache. A key is promoted when the
//! estimate reaches `promote_after` and it was seen within `demote_after_idle`; at most
//! `max_keys` keys per policy, hottest first. Keys below the threshold are not listed.
//!
//! `max_bytes` is not applied: it needs row sizes, which are known only once the cache
//! stores rows. Promote rows say so rather than pretend.
//!
//! ## Text predicates (`[search]`)
//!
//! One `index` row per table a search policy covers: the tables it names exactly, plus the
//! tables seen in the statistics that one of its globs covers. A glob that covers no table
//! seen yet gets a `skip` row, so a policy is never silently without effect.
//!
//! ## Not yet
//!
//! No store serves anything in this build, so nothing is placed and every key row is a
//! candidate ([`Action::Promote`] or [`Action::Skip`]). When stores hold placements, the
//! plan gains `keep` and `demote` rows for keys already placed; [`plan`] will then also
//! take the current placements.

use super::store::{table_pattern_matches, PolicySet};
use crate::admin::table::{ColumnType as T, ResultTable};
use crate::config::policy::{CachePolicy, Policy, SearchPolicy};
use crate::sql::TableRef;
use crate::stats::Snapshot;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

/// The half-life assumed when statistics are off (nothing to plan from then anyway).
const DEFAULT_HALF_LIFE: Duration = Duration::from_secs(60);

/// One hot key as the statistics report it (from a [`Snapshot`] or `/api/hot_keys`).
#[derive(Clone, Debug, PartialEq)]
pub struct HotKeyInput {
    /// As recorded: qualified only if the statement qualified it. Unqualified names mean
    /// schema `public`, as a default `search_path` resolves them.
    pub table: TableRef,
    pub key: String,
    /// Decayed read-and-write count (see [`crate::stats::HotKey::score`]).
    pub score: f64,
    /// Space-Saving overestimate bound; `score - error` is a guaranteed lower bound.
    pub error: f64,
    /// Exact reads since the key entered the sketch.
    pub reads: u64,
    /// How long ago the key was last accessed.
    pub last_seen_age: Duration,
}

impl HotKeyInput {
    /// Every hot key a snapshot holds (at most `snapshot_keys_per_table` per table).
    pub fn from_snapshot(snapshot: &Snapshot) -> Vec<HotKeyInput> {
        snapshot
            .tables
            .iter()
            .flat_map(|t| t.hot_keys.iter())
            .map(|k| HotKeyInput {
                table: (*k.table).clone(),
                key: k.key.to_string(),
                score: k.score,
                error: k.error,
                reads: k.reads,
                last_seen_age: snapshot.taken_at.saturating_duration_since(k.last_seen),
            })
            .collect()
    }
}

/// `/api/hot_keys` returned something that is not its documented shape.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanInputError {
    #[error("hot keys: expected a JSON array of objects")]
    NotArray,
    #[error("hot key #{index}: missing or invalid {field:?}")]
    Field { index: usize, field: &'static str },
}

/// Parse `/api/hot_keys` (`[{"table", "key", "score", "error", "reads", "writes",
/// "last_seen_s"}, ...]`; `table` is `schema.name` or `name`). A null number (the API's
/// rendering of a non-finite float) counts as 0.
pub fn hot_keys_from_json(value: &serde_json::Value) -> Result<Vec<HotKeyInput>, PlanInputError> {
    let rows = value.as_array().ok_or(PlanInputError::NotArray)?;
    rows.iter()
        .enumerate()
        .map(|(index, row)| {
            let field = |field: &'static str| PlanInputError::Field { index, field };
            let text = |name: &'static str| {
                row.get(name)
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| field(name))
            };
            let number = |name: &'static str| match row.get(name) {
                None | Some(serde_json::Value::Null) => Ok(0.0),
                Some(v) => v.as_f64().ok_or_else(|| field(name)),
            };
            let table = text("table")?;
            let table = match table.split_once('.') {
                Some((schema, name)) => TableRef::new(Some(schema), name),
                None => TableRef::new(None, table),
            };
            let reads = number("reads")?;
            Ok(HotKeyInput {
                table,
                key: text("key")?.to_string(),
                score: number("score")?,
                error: number("error")?,
                reads: if reads > 0.0 { reads as u64 } else { 0 },
                last_seen_age: Duration::try_from_secs_f64(number("last_seen_s")?)
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// What the plan would do with a key or table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Copy the key's row into the policy's cache store.
    Promote,
    /// Build (or keep) a search index of the table's columns.
    Index,
    /// Would qualify but does not, for the reason given (cap reached, idle, no table).
    Skip,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Index => "index",
            Action::Skip => "skip",
        }
    }
}

/// One row of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanEntry {
    /// `schema.name`, unqualified names resolved to `public`; for a search glob that
    /// matches no table yet, the glob itself.
    pub table: String,
    /// `None` for table-level rows (search indexes).
    pub key: Option<String>,
    /// `memory`, `redis`, `embedded` or `elasticsearch`.
    pub store: &'static str,
    pub action: Action,
    pub reason: String,
    /// The policy file that asks for it.
    pub policy: PathBuf,
    /// Estimated reads within the policy's window (key rows only).
    pub estimated_reads: Option<f64>,
}

/// What the policies and statistics call for right now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Per policy in file order: its key rows (promoted hottest first, then skipped),
    /// then its table rows.
    pub entries: Vec<PlanEntry>,
    /// Distinct keys in the statistics (after resolving unqualified table names).
    pub keys_considered: usize,
    /// Distinct tables those keys belong to.
    pub tables_seen: usize,
}

/// The plan's columns, as `SHOW PLAN` and `/api/plan` show them.
const COLUMNS: [(&str, T); 6] = [
    ("table", T::Text),
    ("key", T::Text),
    ("store", T::Text),
    ("action", T::Text),
    ("reason", T::Text),
    ("policy", T::Text),
];

impl Plan {
    pub fn count(&self, action: Action) -> usize {
        self.entries.iter().filter(|e| e.action == action).count()
    }

    /// The plan as a result set (`SHOW PLAN`, `/api/plan`).
    pub fn to_table(&self) -> ResultTable {
        let mut t = ResultTable::new(&COLUMNS);
        for e in &self.entries {
            t.push(vec![
                e.table.clone().into(),
                e.key.clone().into(),
                e.store.into(),
                e.action.name().into(),
                e.reason.clone().into(),
                e.policy.display().to_string().into(),
            ]);
        }
        t
    }

    /// One line: what the plan amounts to.
    pub fn summary(&self) -> String {
        format!(
            "{} key(s) to promote, {} table(s) to index, {} skipped; from {} hot key(s) on {} \
             table(s). Dry run: this build places nothing yet.",
            self.count(Action::Promote),
            self.count(Action::Index),
            self.count(Action::Skip),
            self.keys_considered,
            self.tables_seen,
        )
    }

    /// An aligned text table followed by [`Plan::summary`] (`pgpolyglot plan`).
    pub fn to_text(&self) -> String {
        let table = self.to_table();
        let cells: Vec<Vec<String>> = table
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|c| c.to_pg_text().unwrap_or_default())
                    .collect()
            })
            .collect();
        let mut widths: Vec<usize> = table.columns.iter().map(|c| c.name.len()).collect();
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |values: &mut dyn Iterator<Item = &str>| {
            let padded: Vec<String> = values
                .zip(&widths)
                .map(|(v, w)| format!("{v:<w$}"))
                .collect();
            format!("{}\n", padded.join("  ").trim_end())
        };
        let mut out = line(&mut table.columns.iter().map(|c| c.name));
        let rules: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&line(&mut rules.iter().map(String::as_str)));
        for row in &cells {
            out.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }
}

/// The plan as a result set, from the live statistics (`None` when they are off).
pub fn plan_table(policies: &PolicySet, stats: Option<&Snapshot>) -> ResultTable {
    let (keys, half_life) = match stats {
        Some(s) => (HotKeyInput::from_snapshot(s), s.half_life),
        None => (Vec::new(), DEFAULT_HALF_LIFE),
    };
    plan(policies, &keys, half_life).to_table()
}

/// One key after merging `accounts` and `public.accounts` entries of the statistics.
#[derive(Default)]
struct KeyStats {
    score: f64,
    error: f64,
    age: Option<Duration>,
}

/// A candidate key of one cache policy.
struct Candidate<'n, 'a> {
    table: &'n str,
    key: &'a str,
    estimate: f64,
    stats: &'n KeyStats,
}

/// One hot key, borrowed from the statistics (a [`Snapshot`] or [`HotKeyInput`]s).
#[derive(Clone, Copy)]
struct Observed<'a> {
    table: &'a TableRef,
    key: &'a str,
    score: f64,
    error: f64,
    last_seen_age: Duration,
}

impl<'a> From<&'a HotKeyInput> for Observed<'a> {
    fn from(k: &'a HotKeyInput) -> Self {
        Observed {
            table: &k.table,
            key: &k.key,
            score: k.score,
            error: k.error,
            last_seen_age: k.last_seen_age,
        }
    }
}

/// Every hot key of a snapshot, borrowed.
fn observed(snapshot: &Snapshot) -> impl Iterator<Item = Observed<'_>> {
    snapshot
        .tables
        .iter()
        .flat_map(|t| t.hot_keys.iter())
        .map(|k| Observed {
            table: &k.table,
            key: &k.key,
            score: k.score,
            error: k.error,
            last_seen_age: snapshot.taken_at.saturating_duration_since(k.last_seen),
        })
}

/// Per table (schema, name): its keys, with the statistics' entries for `t` and
/// `public.t` merged.
type KeysByTable<'a> = BTreeMap<(String, String), HashMap<&'a str, KeyStats>>;

/// Merges the hot keys per resolved table and picks, per policy (in file order), the keys
/// whose estimate reaches its `promote_after`, hottest first; then hands both to `f`.
fn with_candidates<'a, T>(
    policies: &PolicySet,
    hot_keys: impl Iterator<Item = Observed<'a>>,
    half_life: Duration,
    f: impl FnOnce(&KeysByTable<'a>, Vec<Vec<Candidate<'_, 'a>>>) -> T,
) -> T {
    let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut per_table: Vec<HashMap<&'a str, KeyStats>> = Vec::new();
    // Keys arrive grouped by table: the table is looked up (by owned name) only when it
    // changes.
    let mut last: Option<(&str, &str, usize)> = None;
    for k in hot_keys {
        let schema = k.table.schema.as_deref().unwrap_or("public");
        let name = &*k.table.name;
        let slot = match last {
            Some((s, n, i)) if s == schema && n == name => i,
            _ => {
                let next = per_table.len();
                let i = *index
                    .entry((schema.to_string(), name.to_string()))
                    .or_insert(next);
                if i == next {
                    per_table.push(HashMap::new());
                }
                last = Some((schema, name, i));
                i
            }
        };
        let s = per_table[slot].entry(k.key).or_default();
        s.score += k.score.max(0.0);
        s.error += k.error.max(0.0);
        s.age = Some(s.age.map_or(k.last_seen_age, |a| a.min(k.last_seen_age)));
    }
    let mut per_table: Vec<Option<HashMap<&'a str, KeyStats>>> =
        per_table.into_iter().map(Some).collect();
    let tables: KeysByTable<'a> = index
        .into_iter()
        .map(|(t, i)| (t, per_table[i].take().unwrap_or_default()))
        .collect();
    let names: BTreeMap<&(String, String), String> = tables
        .keys()
        .map(|t| (t, format!("{}.{}", t.0, t.1)))
        .collect();

    let index_of = |p: &Policy| policies.policies.iter().position(|q| std::ptr::eq(p, q));
    let mut candidates: Vec<Vec<Candidate<'_, 'a>>> =
        policies.policies.iter().map(|_| Vec::new()).collect();
    for (table, keys) in &tables {
        let Some(m) = policies.policy_for(&table.0, &table.1) else {
            continue;
        };
        let (Some(i), Some(cache)) = (index_of(m.policy), &m.policy.cache) else {
            continue;
        };
        for (key, stats) in keys {
            let estimate = reads_within(stats, cache.window, half_life);
            if estimate >= f64::from(cache.promote_after) {
                candidates[i].push(Candidate {
                    table: &names[table],
                    key,
                    estimate,
                    stats,
                });
            }
        }
    }
    for keys in &mut candidates {
        keys.sort_by(|a, b| {
            b.estimate
                .total_cmp(&a.estimate)
                .then_with(|| a.table.cmp(b.table))
                .then_with(|| a.key.cmp(b.key))
        });
    }
    f(&tables, candidates)
}

/// What a cache policy does with one candidate key.
#[derive(Clone, Copy)]
enum Verdict {
    Promote,
    /// Last seen this long ago, beyond `demote_after_idle`.
    Idle(Duration),
    /// `max_keys` hotter keys were promoted.
    MaxKeysReached,
}

/// The verdict for each of `keys` (hottest first) under `cache`.
fn verdicts<'k, 'n, 'a>(
    cache: &CachePolicy,
    keys: &'k [Candidate<'n, 'a>],
) -> impl Iterator<Item = (&'k Candidate<'n, 'a>, Verdict)> {
    let mut promoted = 0u64;
    let (idle_after, max_keys) = (cache.demote_after_idle, cache.max_keys);
    keys.iter().map(move |c| {
        let age = c.stats.age.unwrap_or_default();
        let verdict = if age > idle_after {
            Verdict::Idle(age)
        } else if promoted >= max_keys {
            Verdict::MaxKeysReached
        } else {
            promoted += 1;
            Verdict::Promote
        };
        (c, verdict)
    })
}

/// The placement `policies` call for, given the statistics' hot keys and their half-life.
pub fn plan(policies: &PolicySet, hot_keys: &[HotKeyInput], half_life: Duration) -> Plan {
    let observed = hot_keys.iter().map(Observed::from);
    with_candidates(policies, observed, half_life, |tables, candidates| {
        let mut entries = Vec::new();
        for (policy, keys) in policies.policies.iter().zip(candidates) {
            if let Some(cache) = &policy.cache {
                entries.extend(cache_rows(policy, cache, &keys, half_life));
            }
            if let Some(search) = &policy.search {
                entries.extend(search_rows(policies, policy, search, tables.keys()));
            }
        }
        Plan {
            entries,
            keys_considered: tables.values().map(HashMap::len).sum(),
            tables_seen: tables.len(),
        }
    })
}

/// The keys [`plan`] would promote from `snapshot`, per table (`schema.table`), without the
/// plan's text and without copying the keys: the placer asks this of up to
/// `top_k_per_table` keys per table each time the statistics are published.
pub fn promoted_keys<'s>(policies: &PolicySet, snapshot: &'s Snapshot) -> PromotedKeys<'s> {
    promoted(policies, observed(snapshot), snapshot.half_life)
}

/// Promoted keys per table (`schema.table`), hottest first within a policy.
pub type PromotedKeys<'a> = BTreeMap<String, Vec<&'a str>>;

fn promoted<'a>(
    policies: &PolicySet,
    hot_keys: impl Iterator<Item = Observed<'a>>,
    half_life: Duration,
) -> PromotedKeys<'a> {
    with_candidates(policies, hot_keys, half_life, |_, candidates| {
        let mut out = PromotedKeys::new();
        for (policy, keys) in policies.policies.iter().zip(candidates) {
            let Some(cache) = &policy.cache else {
                continue;
            };
            for (c, verdict) in verdicts(cache, &keys) {
                if matches!(verdict, Verdict::Promote) {
                    match out.get_mut(c.table) {
                        Some(list) => list.push(c.key),
                        None => {
                            out.insert(c.table.to_string(), vec![c.key]);
                        }
                    }
                }
            }
        }
        out
    })
}

/// Estimated reads within `window` at the steady rate the lower-bound score implies.
fn reads_within(s: &KeyStats, window: Duration, half_life: Duration) -> f64 {
    let lower = (s.score - s.error).max(0.0);
    let h = half_life.as_secs_f64();
    if h <= 0.0 {
        return lower;
    }
    lower * std::f64::consts::LN_2 * window.as_secs_f64() / h
}

fn cache_rows(
    policy: &Policy,
    cache: &CachePolicy,
    keys: &[Candidate<'_, '_>],
    half_life: Duration,
) -> Vec<PlanEntry> {
    let store = cache.store.name();
    let mut skipped = Vec::new();
    let mut rows = Vec::new();
    for (c, verdict) in verdicts(cache, keys) {
        let estimate = format!(
            "~{:.1} reads per {} (score {:.1}{}, half-life {})",
            c.estimate,
            duration_text(cache.window),
            c.stats.score,
            if c.stats.error > 0.0 {
                format!(" -{:.1} error", c.stats.error)
            } else {
                String::new()
            },
            duration_text(half_life),
        );
        let (action, reason) = match verdict {
            Verdict::Idle(age) => (
                Action::Skip,
                format!(
                    "idle {} > demote_after_idle {}; {estimate}",
                    duration_text(age),
                    duration_text(cache.demote_after_idle)
                ),
            ),
            Verdict::MaxKeysReached => (
                Action::Skip,
                format!(
                    "max_keys reached ({} hotter keys); {estimate}",
                    cache.max_keys
                ),
            ),
            Verdict::Promote => (
                Action::Promote,
                format!(
                    "{estimate} >= promote_after {}; max_bytes not checked (row sizes unknown)",
                    cache.promote_after
                ),
            ),
        };
        let entry = PlanEntry {
            table: c.table.to_string(),
            key: Some(c.key.to_string()),
            store,
            action,
            reason,
            policy: policy.file.clone(),
            estimated_reads: Some(c.estimate),
        };
        if action == Action::Promote {
            rows.push(entry);
        } else {
            skipped.push(entry);
        }
    }
    rows.append(&mut skipped);
    rows
}

/// Index rows of `policy` (an element of `policies`): its exact tables, and the tables seen that its globs
/// cover, each only where this policy is the one [`PolicySet::policy_for`] picks.
fn search_rows<'a>(
    policies: &PolicySet,
    policy: &Policy,
    search: &SearchPolicy,
    seen: impl Iterator<Item = &'a (String, String)> + Clone,
) -> Vec<PlanEntry> {
    let store = search.store.name();
    let governs = |schema: &str, name: &str| {
        policies
            .policy_for(schema, name)
            .filter(|m| std::ptr::eq(m.policy, policy))
    };
    let mut found: BTreeMap<(String, String), &str> = BTreeMap::new();
    let mut rows = Vec::new();
    for pattern in &policy.tables {
        if pattern.contains('*') {
            let mut matched = false;
            for (schema, name) in seen.clone() {
                if table_pattern_matches(pattern, schema, name).is_some()
                    && governs(schema, name).is_some()
                {
                    matched = true;
                    found
                        .entry((schema.clone(), name.clone()))
                        .or_insert(pattern);
                }
            }
            if !matched {
                rows.push(PlanEntry {
                    table: pattern.clone(),
                    key: None,
                    store,
                    action: Action::Skip,
                    reason: "no table seen in the statistics matches this glob yet".into(),
                    policy: policy.file.clone(),
                    estimated_reads: None,
                });
            }
        } else {
            let (schema, name) = pattern.split_once('.').unwrap_or(("public", pattern));
            if governs(schema, name).is_some() {
                found
                    .entry((schema.to_string(), name.to_string()))
                    .or_insert(pattern);
            }
        }
    }
    let what = format!(
        "index {} for {} (max_candidate_fraction {})",
        search.columns.join(", "),
        search
            .predicates
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", "),
        search.max_candidate_fraction,
    );
    let mut indexed: Vec<PlanEntry> = found
        .into_iter()
        .map(|((schema, name), pattern)| PlanEntry {
            table: format!("{schema}.{name}"),
            key: None,
            store,
            action: Action::Index,
            reason: if pattern.contains('*') {
                format!("{what}; matched {pattern:?}")
            } else {
                what.clone()
            },
            policy: policy.file.clone(),
            estimated_reads: None,
        })
        .collect();
    indexed.append(&mut rows);
    indexed
}

/// `250ms`, `10s`, `5m`, `1h`, or `1.5s` when no unit is exact.
fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 || !ms.is_multiple_of(1000) {
        if ms < 1000 {
            format!("{ms}ms")
        } else {
            format!("{:.1}s", d.as_secs_f64())
        }
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::policy::parse_policy;
    use crate::stats::{HotKey, TableStats};
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Instant, SystemTime};

    const H: Duration = Duration::from_secs(60);

    fn set(files: &[(&str, &str)]) -> PolicySet {
        PolicySet {
            dir: PathBuf::from("p"),
            policies: files
                .iter()
                .map(|(f, text)| parse_policy(text, Path::new(f)).expect("valid policy"))
                .collect(),
            generation: 1,
            loaded_at: SystemTime::now(),
        }
    }

    fn key(table: &str, key: &str, score: f64, age_s: u64) -> HotKeyInput {
        let table = match table.split_once('.') {
            Some((s, n)) => TableRef::new(Some(s), n),
            None => TableRef::new(None, table),
        };
        HotKeyInput {
            table,
            key: key.into(),
            score,
            error: 0.0,
            reads: score as u64,
            last_seen_age: Duration::from_secs(age_s),
        }
    }

    const ACCOUNTS: &str = "tables = [\"public.accounts\"]\n[cache]\npromote_after = 3\nwindow = \"10s\"\ndemote_after_idle = \"5m\"\nmax_keys = 2\n";

    fn rows(plan: &Plan) -> Vec<(String, Option<String>, &'static str)> {
        plan.entries
            .iter()
            .map(|e| (e.table.clone(), e.key.clone(), e.action.name()))
            .collect()
    }

    fn row(
        table: &str,
        key: Option<&str>,
        action: &'static str,
    ) -> (String, Option<String>, &'static str) {
        (table.to_string(), key.map(str::to_string), action)
    }

    #[test]
    fn threshold_uses_the_rate_estimate_and_the_lower_bound() {
        let set = set(&[("hot.toml", ACCOUNTS)]);
        // 30 · ln2 · 10/60 = 3.47 reads per window: hot. 20 → 2.31: not listed.
        let mut overestimated = key("public.accounts", "noisy", 30.0, 1);
        overestimated.error = 10.0;
        let keys = [
            key("public.accounts", "hot", 30.0, 1),
            key("public.accounts", "warm", 20.0, 1),
            overestimated,
        ];
        let plan = plan(&set, &keys, H);
        assert_eq!(
            rows(&plan),
            vec![row("public.accounts", Some("hot"), "promote")]
        );
        let e = &plan.entries[0];
        assert_eq!(e.store, "memory");
        assert_eq!(e.policy, PathBuf::from("hot.toml"));
        assert!((e.estimated_reads.unwrap() - 3.466).abs() < 0.01);
        assert!(e.reason.contains("~3.5 reads per 10s"), "{}", e.reason);
        assert!(e.reason.contains("promote_after 3"), "{}", e.reason);
        assert!(e.reason.contains("max_bytes not checked"), "{}", e.reason);
        assert_eq!(plan.keys_considered, 3);
        assert_eq!(plan.tables_seen, 1);
        // A shorter half-life makes the same score a higher rate.
        let plan = super::plan(&set, &keys, Duration::from_secs(20));
        assert_eq!(plan.count(Action::Promote), 2);
    }

    #[test]
    fn max_keys_caps_hottest_first_and_idle_keys_are_skipped() {
        let set = set(&[("hot.toml", ACCOUNTS)]);
        let keys = [
            key("public.accounts", "c", 80.0, 1),
            key("public.accounts", "a", 100.0, 1),
            key("public.accounts", "idle", 500.0, 400),
            key("public.accounts", "b", 90.0, 1),
        ];
        let plan = plan(&set, &keys, H);
        assert_eq!(
            rows(&plan),
            vec![
                row("public.accounts", Some("a"), "promote"),
                row("public.accounts", Some("b"), "promote"),
                row("public.accounts", Some("idle"), "skip"),
                row("public.accounts", Some("c"), "skip"),
            ]
        );
        assert!(plan.entries[2]
            .reason
            .starts_with("idle 400s > demote_after_idle 5m"));
        assert!(plan.entries[3].reason.starts_with("max_keys reached (2"));
    }

    /// The placer's short path promotes exactly what the plan's Promote rows say, across
    /// tables, unqualified names (merged with `public.`), idle keys and `max_keys`.
    #[test]
    fn promoted_keys_are_the_plans_promote_rows() {
        let set = set(&[
            ("hot.toml", ACCOUNTS),
            (
                "orders.toml",
                "tables = [\"public.orders\"]\n[cache]\npromote_after = 1\nmax_keys = 3\n",
            ),
        ]);
        let keys = [
            key("public.accounts", "c", 80.0, 1),
            key("accounts", "c", 30.0, 1),
            key("public.accounts", "a", 100.0, 1),
            key("public.accounts", "idle", 500.0, 400),
            key("public.accounts", "b", 90.0, 1),
            key("orders", "1", 20.0, 1),
            key("public.orders", "2", 40.0, 1),
            key("public.orders", "3", 10.0, 1),
            key("public.orders", "4", 0.5, 1),
            key("other", "9", 900.0, 1),
        ];
        let mut want: PromotedKeys<'_> = BTreeMap::new();
        let plan = plan(&set, &keys, H);
        for e in plan.entries.iter().filter(|e| e.action == Action::Promote) {
            let key = e.key.as_deref().unwrap();
            want.entry(e.table.clone()).or_default().push(key);
        }
        assert_eq!(want.values().map(Vec::len).sum::<usize>(), 5, "{want:?}");
        assert_eq!(promoted(&set, keys.iter().map(Observed::from), H), want);
    }

    #[test]
    fn globs_and_unqualified_names() {
        let set = set(&[
            ("app.toml", "tables = [\"app.*\"]\n[cache]\n"),
            (
                "acc.toml",
                "tables = [\"accounts\"]\n[cache]\nstore = \"redis\"\n",
            ),
        ]);
        let keys = [
            key("app.users", "1", 50.0, 1),
            key("public.users", "1", 50.0, 1),
            // One key recorded under both spellings: merged (alone each is below 3.47).
            key("accounts", "7", 20.0, 2),
            key("public.accounts", "7", 15.0, 1),
        ];
        let plan = plan(&set, &keys, H);
        assert_eq!(
            rows(&plan),
            vec![
                row("app.users", Some("1"), "promote"),
                row("public.accounts", Some("7"), "promote"),
            ]
        );
        assert_eq!(plan.entries[1].store, "redis");
        assert!(
            plan.entries[1].reason.contains("score 35.0"),
            "{}",
            plan.entries[1].reason
        );
        assert_eq!(plan.keys_considered, 3);
        assert_eq!(plan.tables_seen, 3);
    }

    #[test]
    fn search_rows_cover_exact_names_and_seen_tables_of_globs() {
        let set = set(&[
            (
                "docs.toml",
                "tables = [\"public.docs\", \"public.notes_*\", \"archive.*\"]\n[search]\ncolumns = [\"title\", \"body\"]\npredicates = [\"like\", \"fts\"]\n",
            ),
            // An exact name in another policy wins over this glob: no index row for it.
            ("cache.toml", "tables = [\"public.notes_hot\"]\n[cache]\n"),
        ]);
        let keys = [
            key("public.notes_2024", "1", 1.0, 1),
            key("public.notes_hot", "1", 1.0, 1),
            key("other.notes_x", "1", 1.0, 1),
        ];
        let plan = plan(&set, &keys, H);
        assert_eq!(
            rows(&plan),
            vec![
                row("public.docs", None, "index"),
                row("public.notes_2024", None, "index"),
                row("archive.*", None, "skip"),
            ]
        );
        let docs = &plan.entries[0];
        assert_eq!(docs.store, "embedded");
        assert_eq!(
            docs.reason,
            "index title, body for like, fts (max_candidate_fraction 0.05)"
        );
        assert!(plan.entries[1]
            .reason
            .ends_with("matched \"public.notes_*\""));
        assert!(plan.entries[2].reason.contains("no table seen"));
    }

    #[test]
    fn empty_statistics() {
        let set = set(&[
            ("hot.toml", ACCOUNTS),
            (
                "docs.toml",
                "tables = [\"docs\"]\n[search]\ncolumns = [\"body\"]\n",
            ),
        ]);
        let plan = plan(&set, &[], H);
        assert_eq!(rows(&plan), vec![row("public.docs", None, "index")]);
        assert!(plan.summary().starts_with(
            "0 key(s) to promote, 1 table(s) to index, 0 skipped; from 0 hot key(s) on 0 table(s)"
        ));
        let t = plan_table(&set, None);
        let names: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["table", "key", "store", "action", "reason", "policy"]
        );
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.rows[0][1], crate::admin::table::Cell::Null);
        let empty = PolicySet::empty(Path::new("p"));
        assert!(super::plan(&empty, &[key("t", "1", 1e6, 0)], H)
            .entries
            .is_empty());
    }

    #[test]
    fn from_snapshot_and_plan_table() {
        let now = Instant::now();
        let table = Arc::new(TableRef::new(Some("public"), "accounts"));
        let mut snap = Snapshot::empty(now, H, H);
        let last_seen = now.checked_sub(Duration::from_secs(3)).unwrap_or(now);
        snap.tables.push(TableStats {
            table: table.clone(),
            score: 40.0,
            reads: 40,
            writes: 0,
            tracked_keys: 1,
            last_seen,
            hot_keys: vec![HotKey {
                table,
                key: "42".into(),
                score: 40.0,
                error: 0.0,
                reads: 40,
                writes: 0,
                last_seen,
            }],
        });
        let keys = HotKeyInput::from_snapshot(&snap);
        assert_eq!(keys.len(), 1);
        assert_eq!(
            keys[0].last_seen_age,
            now.saturating_duration_since(last_seen)
        );
        let t = plan_table(&set(&[("hot.toml", ACCOUNTS)]), Some(&snap));
        assert_eq!(t.rows.len(), 1);
        let json = t.to_json().to_string();
        assert!(json.contains("\"action\":\"promote\""), "{json}");
        assert!(json.contains("\"key\":\"42\""), "{json}");
    }

    #[test]
    fn parses_the_hot_keys_api() {
        let v: serde_json::Value = serde_json::from_str(
            r#"[{"table":"public.accounts","key":"42","score":40.5,"error":0.0,"reads":40,"writes":1,"last_seen_s":1.5},
                {"table":"accounts","key":"7","score":null,"error":null,"reads":0,"writes":0,"last_seen_s":null}]"#,
        )
        .unwrap();
        let keys = hot_keys_from_json(&v).unwrap();
        assert_eq!(keys[0].table, TableRef::new(Some("public"), "accounts"));
        assert_eq!(keys[0].score, 40.5);
        assert_eq!(keys[0].reads, 40);
        assert_eq!(keys[0].last_seen_age, Duration::from_millis(1500));
        assert_eq!(keys[1].table, TableRef::new(None, "accounts"));
        assert_eq!(keys[1].score, 0.0);

        assert_eq!(
            hot_keys_from_json(&serde_json::json!({"error": "x"})),
            Err(PlanInputError::NotArray)
        );
        let err = hot_keys_from_json(&serde_json::json!([{"table": "t", "key": 1}])).unwrap_err();
        assert_eq!(
            err,
            PlanInputError::Field {
                index: 0,
                field: "key"
            }
        );
        assert_eq!(err.to_string(), "hot key #0: missing or invalid \"key\"");
        let err =
            hot_keys_from_json(&serde_json::json!([{"table": "t", "key": "1", "score": "x"}]));
        assert!(err.is_err());
    }

    #[test]
    fn text_output_is_aligned() {
        let set = set(&[("hot.toml", ACCOUNTS)]);
        let plan = plan(&set, &[key("public.accounts", "42", 100.0, 1)], H);
        let text = plan.to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("table            key  store   action   reason"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("---------------  ---  ------  -------  ------"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("public.accounts  42   memory  promote  ~"),
            "{text}"
        );
        assert!(lines[2].ends_with("hot.toml"), "{text}");
        assert!(lines[3].starts_with("1 key(s) to promote"), "{text}");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration_text(Duration::from_secs(3600)), "1h");
        assert_eq!(duration_text(Duration::from_millis(250)), "250ms");
    }
}
