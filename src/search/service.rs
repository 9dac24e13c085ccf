//! The search service sessions consult: indexed tables, the gates a narrowing must pass, and
//! the normalizations only Postgres can do (tsquery parsing, regex validity), cached.

use super::requirement::Requirement;
use super::store::{Part, Progress, SearchIndex};
use super::table::SearchTable;
use crate::cdc::{FeedHandle, FeedState, Lsn, TableName};
use crate::context::ProxyContext;
use crate::router::Reason;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Distinct tsquery texts / regex patterns remembered.
const NORMALIZED_CAPACITY: usize = 4096;
/// How long "too many candidates" is remembered for a requirement: counting the matches of
/// a common pattern costs a good part of the scan it would save, so a pattern that just
/// proved too common passes through at once for a while (passing through is always exact).
const TOO_MANY_MEMORY: Duration = Duration::from_secs(10);
/// Longest wait for a normalization query before the statement passes through.
const NORMALIZE_TIMEOUT: Duration = Duration::from_millis(500);

/// `(config, tsquery function, query text)`.
type TsQueryKey = (String, &'static str, String);

/// One table under a `[search]` policy.
#[derive(Debug)]
pub struct IndexedTable {
    pub meta: SearchTable,
    /// The index, when the table is indexable and its store could be opened.
    pub index: Option<Arc<dyn SearchIndex>>,
    /// Every row is indexed and every change the feed delivered is applied.
    pub ready: AtomicBool,
    /// A store call failed: sessions pass through until the indexer has re-validated the
    /// store (a circuit breaker, so a dead server costs one failed call, not one per
    /// statement).
    pub store_down: AtomicBool,
    /// Last committed progress (for `SHOW PLACEMENTS`, metrics and the dashboard).
    pub progress: Mutex<Progress>,
    /// Why it is not indexed (unusable, store not available, last error).
    pub status: Mutex<String>,
}

impl IndexedTable {
    pub fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn status(&self) -> String {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn set_status(&self, s: impl Into<String>) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = s.into();
    }
}

#[derive(Debug, Default)]
pub struct SearchCounters {
    /// Statements restricted to candidate keys.
    pub narrowed: AtomicU64,
    /// Candidate keys handed to Postgres, summed.
    pub candidates: AtomicU64,
    /// Statements passed through because the candidates exceeded the policy's fraction.
    pub too_many: AtomicU64,
    /// Rows read by backfills.
    pub backfilled_rows: AtomicU64,
    /// Feed transactions applied.
    pub feed_transactions: AtomicU64,
    /// Rows re-read because the feed reported them changed.
    pub refetched_rows: AtomicU64,
    /// Index rebuilds started (first build, truncate, reset, layout change).
    pub rebuilds: AtomicU64,
    /// Indexer steps that failed (retried).
    pub errors: AtomicU64,
    /// Store calls that failed (searches and writes); each one sends the table's text
    /// predicates to Postgres until the store is re-validated.
    pub store_errors: AtomicU64,
}

#[derive(Default)]
struct Tables {
    by_oid: HashMap<u32, Arc<IndexedTable>>,
    by_name: HashMap<TableName, u32>,
}

#[derive(Default)]
pub struct SearchService {
    tables: RwLock<Arc<Tables>>,
    pub(super) feed: OnceLock<FeedHandle>,
    pub counters: SearchCounters,
    /// `(config, function, text)` → what the tsquery requires (`None`: Postgres refused it).
    tsqueries: Mutex<HashMap<TsQueryKey, Option<Requirement>>>,
    /// `(case-insensitive, pattern)` → whether Postgres accepts the regex.
    regexes: Mutex<HashMap<(bool, String), bool>>,
    side: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    /// Hash of (table, requirement parts) → when it last gave too many candidates.
    too_many_recently: Mutex<HashMap<u64, std::time::Instant>>,
    /// The change feed's `status_interval` in ms (bounds an unnoticed stall).
    pub(super) status_interval_ms: AtomicU64,
}

impl std::fmt::Debug for SearchService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchService").finish_non_exhaustive()
    }
}

impl SearchService {
    /// Whether any table is indexed at all (cheap: read per batch).
    pub fn may_narrow(&self) -> bool {
        !self.current().by_oid.is_empty()
    }

    fn current(&self) -> Arc<Tables> {
        Arc::clone(&self.tables.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(super) fn publish(&self, tables: Vec<Arc<IndexedTable>>) {
        let mut t = Tables::default();
        for table in tables {
            t.by_name.insert(table.meta.name.clone(), table.meta.oid);
            t.by_oid.insert(table.meta.oid, table);
        }
        *self.tables.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(t);
    }

    pub fn table(&self, schema: &str, name: &str) -> Option<Arc<IndexedTable>> {
        let t = self.current();
        let oid = t.by_name.get(&TableName::new(schema, name))?;
        t.by_oid.get(oid).cloned()
    }

    /// Every table under a `[search]` policy, by name.
    pub fn tables(&self) -> Vec<Arc<IndexedTable>> {
        let mut v: Vec<_> = self.current().by_oid.values().cloned().collect();
        v.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        v
    }

    pub fn feed(&self) -> Option<&FeedHandle> {
        self.feed.get()
    }

    /// Whether `table` may narrow now: its index is complete and the feed fresh within the
    /// policy's bound. Returns the feed position every index has applied.
    pub fn gate(&self, table: &IndexedTable) -> Result<Lsn, Reason> {
        if table.index.is_some() && table.store_down.load(Relaxed) {
            return Err(Reason::StoreUnavailable);
        }
        if table.index.is_none() || !table.ready.load(Relaxed) {
            return Err(Reason::IndexNotReady);
        }
        let feed = self.feed.get().ok_or(Reason::FeedNotFresh)?;
        let h = feed.health();
        let max_ms = table.meta.policy.max_staleness.as_millis() as u64;
        let status_ms = self.status_interval_ms.load(Relaxed);
        if h.state != FeedState::Streaming
            || h.lag_ms > max_ms
            || h.silence_ms.is_none_or(|s| s > status_ms + max_ms)
        {
            return Err(Reason::FeedNotFresh);
        }
        Ok(h.applied_lsn)
    }

    /// Candidate keys for `parts` of `table`, or `None` when there are more than the policy
    /// allows (remembered for [`TOO_MANY_MEMORY`]).
    pub async fn candidates(
        &self,
        table: &IndexedTable,
        parts: &[Part],
    ) -> Result<Option<Vec<String>>, super::SearchError> {
        use std::hash::{Hash, Hasher};
        let Some(index) = table.index.as_ref() else {
            return Ok(None);
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (table.meta.oid, parts).hash(&mut h);
        let key = h.finish();
        let now = std::time::Instant::now();
        {
            let mut recent = self
                .too_many_recently
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match recent.get(&key) {
                Some(at) if now.duration_since(*at) < TOO_MANY_MEMORY => return Ok(None),
                Some(_) => {
                    recent.remove(&key);
                }
                None => {}
            }
        }
        let limit = (table.meta.policy.max_candidate_fraction * index.num_docs() as f64) as u64;
        let found = match index.candidates(parts, limit).await {
            Ok(found) => found,
            Err(e) => {
                self.counters.store_errors.fetch_add(1, Relaxed);
                table.store_down.store(true, Relaxed);
                return Err(e);
            }
        };
        if found.is_none() {
            let mut recent = self
                .too_many_recently
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if recent.len() >= NORMALIZED_CAPACITY {
                recent.retain(|_, at| now.duration_since(*at) < TOO_MANY_MEMORY);
            }
            recent.insert(key, now);
        }
        Ok(found)
    }

    /// What `func(config, text)` requires of the lexemes, from Postgres's own normalization
    /// of the query (`func(config, text)::text`). `None` when Postgres refuses the query or
    /// cannot be asked now (the statement then passes through and Postgres reports its error).
    pub async fn tsquery_requirement(
        &self,
        ctx: &ProxyContext,
        config: &str,
        func: &'static str,
        text: &str,
    ) -> Option<Requirement> {
        let key = (config.to_string(), func, text.to_string());
        if let Some(found) = self
            .tsqueries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return found.clone();
        }
        let sql = format!("SELECT {func}($1::text::regconfig, $2::text)::text");
        let answer = self.ask(ctx, &sql, config, text).await?;
        let req = answer.and_then(|t| super::tsquery::parse_tsquery(&t).ok());
        remember(&self.tsqueries, key, req.clone());
        req
    }

    /// Whether Postgres compiles `pattern` (a narrowed statement may never evaluate the
    /// regex, so an invalid one would not raise the error Postgres would raise directly).
    pub async fn regex_valid(&self, ctx: &ProxyContext, pattern: &str, insensitive: bool) -> bool {
        let key = (insensitive, pattern.to_string());
        if let Some(found) = self
            .regexes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return *found;
        }
        let op = if insensitive { "~*" } else { "~" };
        let sql = format!("SELECT ('' {op} $2::text)::text || $1::text");
        let Some(answer) = self.ask(ctx, &sql, "", pattern).await else {
            return false;
        };
        let ok = answer.is_some();
        remember(&self.regexes, key, ok);
        ok
    }

    /// Runs a one-row, one-column query on the service's side connection. `None`: could not
    /// ask; `Some(None)`: Postgres refused the input.
    async fn ask(&self, ctx: &ProxyContext, sql: &str, a: &str, b: &str) -> Option<Option<String>> {
        let mut side = tokio::time::timeout(NORMALIZE_TIMEOUT, self.side.lock())
            .await
            .ok()?;
        if side.as_ref().is_none_or(|c| c.is_closed()) {
            *side = tokio::time::timeout(NORMALIZE_TIMEOUT, crate::side::connect(ctx))
                .await
                .ok()?
                .ok();
        }
        let client = side.as_ref()?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&a, &b];
        let run = client.query_opt(sql, &params);
        match tokio::time::timeout(NORMALIZE_TIMEOUT, run).await {
            Err(_) => {
                *side = None;
                None
            }
            Ok(Ok(row)) => Some(row.and_then(|r| r.get::<_, Option<String>>(0))),
            Ok(Err(e)) if e.as_db_error().is_some() => Some(None),
            Ok(Err(_)) => {
                *side = None;
                None
            }
        }
    }
}

fn remember<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, V>>, key: K, value: V) {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    if m.len() >= NORMALIZED_CAPACITY {
        m.clear();
    }
    m.insert(key, value);
}

/// Starts the indexer (which starts the feed once a table is indexable).
pub async fn run(ctx: Arc<ProxyContext>, shutdown: watch::Receiver<bool>) {
    ctx.search.status_interval_ms.store(
        ctx.config.change_feed.status_interval.as_millis() as u64,
        Relaxed,
    );
    super::indexer::run(ctx, shutdown).await;
}
