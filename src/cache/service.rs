//! The cache service every session shares, and the start of its background tasks: the
//! schema refresher ([`super::refresh`], which also starts the change feed and keeps its table
//! list), the applier ([`super::applier`]: feed → store), the placer ([`super::placer`]:
//! statistics → placed keys, demotions, fill requests), the filler ([`super::filler`]), and
//! the Redis tier's health check and write queue (here).

use super::access::AccessCache;
use super::fill::MAX_BATCH;
use super::profile::ProfileRegistry;
use super::schema::{Budget, CacheSchema, TableMeta};
use super::store::{CachedRow, L1Store};
use super::CacheError;
use crate::cdc::{FeedHandle, FeedState, Lsn};
use crate::context::ProxyContext;
use dashmap::DashMap;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};
use tokio_postgres::Client;
use tracing::debug;

/// Fill requests queued at most; beyond, sessions' requests are dropped (the placer asks
/// again).
const FILL_QUEUE: usize = 65_536;

/// Profiles not used for this long get no new fills.
pub(super) const ACTIVE_PROFILE_MS: u64 = 300_000;

/// How long the filler waits after a request for others to batch with it.
pub(super) const FILL_GATHER: Duration = Duration::from_millis(5);

/// The longest one fill batch may take.
pub(super) const FILL_DEADLINE: Duration = Duration::from_secs(5);

/// Why the cache cannot answer right now (the session passes through and counts it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// The change feed is not streaming, or lags beyond the policy's `max_staleness`.
    FeedNotFresh,
    /// The table is not (yet) covered by the feed, or its description is being reloaded.
    TableNotReady,
}

/// Counters for metrics and `SHOW STORES`.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub fill_requests: AtomicU64,
    pub fill_batches: AtomicU64,
    pub fill_errors: AtomicU64,
    pub feed_transactions: AtomicU64,
    pub feed_resets: AtomicU64,
    pub fences: AtomicU64,
    pub access_denied: AtomicU64,
    pub access_errors: AtomicU64,
    /// Misses answered from a coalesced fetch ([`super::coalesce`]).
    pub coalesced: AtomicU64,
    /// Coalesced fetch statements sent (a round sends one per table, profile and 256 keys).
    pub coalesced_fetches: AtomicU64,
    /// Coalesced fetches that failed (their misses went to Postgres).
    pub coalesce_errors: AtomicU64,
}

/// A key of a table to drop from Redis, or `None`: every image (a whole table changed).
pub(super) type L2Write = Option<(u32, String)>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct FillRequest {
    pub(super) table: u32,
    pub(super) profile: u32,
    pub(super) key: Box<str>,
}

pub struct CacheService {
    pub store: L1Store,
    /// The shared Redis tier, when `[stores.redis]` is configured.
    pub l2: Option<super::l2::RedisTier>,
    pub profiles: ProfileRegistry,
    pub access: AccessCache,
    pub fences: super::fence::FenceService,
    pub counters: CacheCounters,
    /// Time origin of profile use stamps.
    pub epoch: Instant,
    pub(super) schema: RwLock<Arc<CacheSchema>>,
    /// Untrusted from DDL through the proxy until a schema load that started after it ends.
    pub(super) schema_trust: super::trust::SchemaTrust,
    /// Some table is servable (sessions skip the cache entirely otherwise).
    pub(super) has_tables: AtomicBool,
    pub(super) schema_dirty: Notify,
    /// table oid → placed keys.
    pub(super) placed: RwLock<Arc<HashMap<u32, HashSet<Box<str>>>>>,
    /// table oid → the feed position from which the table's changes are all applied.
    pub(super) ready_from: DashMap<u32, Lsn, foldhash::fast::RandomState>,
    pub(super) feed: OnceLock<FeedHandle>,
    pub(super) side: tokio::sync::Mutex<Option<Arc<Client>>>,
    pub(super) fill_tx: mpsc::Sender<FillRequest>,
    pub(super) fill_rx: Mutex<Option<mpsc::Receiver<FillRequest>>>,
    pub(super) pending: DashMap<FillRequest, ()>,
    miss_tx: mpsc::Sender<super::coalesce::MissRequest>,
    /// Per table: milliseconds since `epoch` before which its misses are not coalesced
    /// (after a failed fetch).
    coalesce_paused_until: DashMap<u32, u64>,
    miss_rx: Mutex<Option<mpsc::Receiver<super::coalesce::MissRequest>>>,
    pub(super) budgets: Mutex<HashMap<std::path::PathBuf, Arc<Budget>>>,
    /// Writes through this proxy whose keys must leave Redis (`None`: a whole table).
    l2_writes: mpsc::Sender<L2Write>,
    l2_writes_rx: Mutex<Option<mpsc::Receiver<L2Write>>>,
    /// The change feed's `status_interval` (bounds how long a stalled feed goes unnoticed).
    pub(super) status_interval_ms: u64,
    /// Commit (server clock) to applied (ours), per transaction, in microseconds.
    pub(super) apply_delay: Mutex<hdrhistogram::Histogram<u64>>,
}

/// Percentiles of the feed's commit-to-applied delay since the last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ApplyDelay {
    pub transactions: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl std::fmt::Debug for CacheService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheService")
            .field("entries", &self.store.len())
            .finish()
    }
}

impl Default for CacheService {
    fn default() -> Self {
        Self::with_l2(None, 1000)
    }
}

impl CacheService {
    /// A service with the Redis tier `[stores.redis]` describes, if any.
    pub fn new(config: &crate::config::Config) -> Result<Self, super::l2::L2Error> {
        let l2 = match &config.stores.redis {
            Some(r) => Some(super::l2::RedisTier::new(r)?),
            None => None,
        };
        Ok(Self::with_l2(
            l2,
            config.change_feed.status_interval.as_millis() as u64,
        ))
    }

    fn with_l2(l2: Option<super::l2::RedisTier>, status_interval_ms: u64) -> Self {
        let (fill_tx, fill_rx) = mpsc::channel(FILL_QUEUE);
        let (l2_writes, l2_writes_rx) = mpsc::channel(FILL_QUEUE);
        let (miss_tx, miss_rx) = mpsc::channel(super::coalesce::MISS_QUEUE);
        CacheService {
            miss_tx,
            coalesce_paused_until: DashMap::new(),
            miss_rx: Mutex::new(Some(miss_rx)),
            status_interval_ms,
            l2_writes,
            l2_writes_rx: Mutex::new(Some(l2_writes_rx)),
            l2,
            store: L1Store::default(),
            profiles: ProfileRegistry::default(),
            access: AccessCache::default(),
            fences: super::fence::FenceService::default(),
            counters: CacheCounters::default(),
            epoch: Instant::now(),
            schema: RwLock::new(Arc::new(CacheSchema::default())),
            schema_trust: super::trust::SchemaTrust::default(),
            has_tables: AtomicBool::new(false),
            schema_dirty: Notify::new(),
            placed: RwLock::new(Arc::new(HashMap::new())),
            ready_from: DashMap::default(),
            feed: OnceLock::new(),
            side: tokio::sync::Mutex::new(None),
            fill_tx,
            fill_rx: Mutex::new(Some(fill_rx)),
            pending: DashMap::new(),
            budgets: Mutex::new(HashMap::new()),
            apply_delay: Mutex::new(new_delay_histogram()),
        }
    }

    /// A write through this proxy named `key`: drop it from Redis (in the background, at
    /// once). If the queue is full, Redis is marked dirty instead (its images are abandoned).
    pub fn invalidate_l2_soon(&self, table: u32, key: String) {
        if let Some(l2) = self.l2.as_ref() {
            if self.l2_writes.try_send(Some((table, key))).is_err() {
                l2.mark_dirty();
            }
        }
    }

    /// A write through this proxy may have changed any row of a Redis-backed table.
    pub fn new_l2_epoch_soon(&self) {
        if let Some(l2) = self.l2.as_ref() {
            if self.l2_writes.try_send(None).is_err() {
                l2.mark_dirty();
            }
        }
    }

    /// The Redis tier, if this table's policy uses it and it is usable now.
    pub fn l2_for(&self, table: &TableMeta) -> Option<&super::l2::RedisTier> {
        self.l2
            .as_ref()
            .filter(|l2| table.uses_redis() && l2.usable())
    }
}

fn new_delay_histogram() -> hdrhistogram::Histogram<u64> {
    // 1 µs to 1 hour, 3 significant digits; the bounds are constants that are valid.
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
        hdrhistogram::Histogram::new(3).expect("3 significant digits are always valid")
    })
}

impl CacheService {
    pub fn schema(&self) -> Arc<CacheSchema> {
        Arc::clone(&self.schema.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// How long committed transactions took to reach the cache (commit time on the server's
    /// clock to applied here), since the last call with `reset`.
    pub fn apply_delay(&self, reset: bool) -> ApplyDelay {
        let mut h = self.apply_delay.lock().unwrap_or_else(|e| e.into_inner());
        let ms = |us: u64| us as f64 / 1000.0;
        let out = ApplyDelay {
            transactions: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        };
        if reset {
            h.reset();
        }
        out
    }

    /// Whether any table could be served at all (cheap: read per batch).
    pub fn may_serve(&self) -> bool {
        self.has_tables.load(Relaxed)
    }

    pub fn feed(&self) -> Option<&FeedHandle> {
        self.feed.get()
    }

    /// DDL (or something that may be DDL) went through the proxy: serve nothing until the
    /// table descriptions are read again by a load that starts after this call, and forget
    /// privilege answers (GRANT/REVOKE). Called when the statement is sent and again when
    /// its transaction has committed.
    pub fn schema_changed(&self) {
        // Flushed every time, trusted or not: rows filled between the statement's send and
        // its commit were read before the commit.
        self.schema_trust.distrust();
        self.store.flush_all();
        self.access.forget_all();
        self.schema_dirty.notify_one();
    }

    /// Checks that the feed and the table allow serving under `max_staleness`; returns the
    /// feed's applied position.
    pub fn fresh(&self, table: u32, max_staleness: Duration) -> Result<Lsn, Gate> {
        if !self.schema_trust.is_trusted() {
            return Err(Gate::TableNotReady);
        }
        let feed = self.feed.get().ok_or(Gate::FeedNotFresh)?;
        let h = feed.health();
        let max_ms = max_staleness.as_millis() as u64;
        // The feed pings every `status_interval`; a silence longer than that plus the
        // staleness bound means the connection may be stalled.
        let status_ms = self.status_interval_ms;
        if h.state != FeedState::Streaming
            || h.lag_ms > max_ms
            || h.silence_ms.is_none_or(|s| s > status_ms + max_ms)
        {
            return Err(Gate::FeedNotFresh);
        }
        match self.ready_from.get(&table) {
            Some(from) if h.applied_lsn >= *from => Ok(h.applied_lsn),
            _ => Err(Gate::TableNotReady),
        }
    }

    /// Whether `key` of `table` is placed (promoted by the planner).
    pub fn is_placed(&self, table: u32, key: &str) -> bool {
        self.placed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&table)
            .is_some_and(|keys| keys.contains(key))
    }

    /// Every placed `(table oid, key)`.
    pub fn placed_keys(&self) -> Vec<(u32, String)> {
        let placed = Arc::clone(&self.placed.read().unwrap_or_else(|e| e.into_inner()));
        placed
            .iter()
            .flat_map(|(t, keys)| keys.iter().map(move |k| (*t, k.to_string())))
            .collect()
    }

    /// Asks the filler for `key` under `profile` (a session missed it). Never waits.
    pub fn request_fill(&self, table: u32, profile: u32, key: &str) {
        let req = FillRequest {
            table,
            profile,
            key: key.into(),
        };
        if self.pending.insert(req.clone(), ()).is_none() {
            self.counters.fill_requests.fetch_add(1, Relaxed);
            if self.fill_tx.try_send(req.clone()).is_err() {
                self.pending.remove(&req);
            }
        }
    }

    /// The row of `key` (or `None`: no row has it) read by a fetch that started after this
    /// call, together with other sessions' misses (see [`super::coalesce`]). `None` when the
    /// queue is full, the fetch failed, or it took longer than [`super::coalesce::MISS_WAIT`]:
    /// the caller sends its statement to Postgres.
    pub async fn fetch_missed(
        &self,
        table: &TableMeta,
        profile: u32,
        key: &str,
    ) -> Option<Option<CachedRow>> {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        if self
            .coalesce_paused_until
            .get(&table.oid)
            .is_some_and(|until| now_ms < *until)
        {
            return None;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = super::coalesce::MissRequest {
            table: table.oid,
            layout: table.layout,
            profile,
            key: key.into(),
            reply,
        };
        self.miss_tx.try_send(request).ok()?;
        let row = tokio::time::timeout(super::coalesce::MISS_WAIT, answer)
            .await
            .ok()?
            .ok()?;
        self.counters.coalesced.fetch_add(1, Relaxed);
        Some(row)
    }

    /// `table`'s misses go straight to Postgres for `pause` (a coalesced fetch failed).
    pub(super) fn pause_coalescing(&self, table: u32, pause: Duration) {
        let until = (self.epoch.elapsed() + pause).as_millis() as u64;
        self.coalesce_paused_until.insert(table, until);
    }

    /// The migrator's shared side connection (privilege checks, fences), reconnected on
    /// demand.
    async fn side(&self, ctx: &ProxyContext) -> Result<Arc<Client>, CacheError> {
        let mut slot = self.side.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(crate::side::connect(ctx).await?);
        *slot = Some(Arc::clone(&c));
        Ok(c)
    }

    /// May `role` read `table`? Errors read as "no".
    pub async fn allowed(&self, ctx: &ProxyContext, role: &str, table: u32) -> bool {
        if let Some(a) = self.access.cached(role, table) {
            if !a {
                self.counters.access_denied.fetch_add(1, Relaxed);
            }
            return a;
        }
        let result = match self.side(ctx).await {
            Ok(c) => tokio::time::timeout(FILL_DEADLINE, self.access.check(&c, role, table)).await,
            Err(e) => Ok(Err(e)),
        };
        match result {
            Ok(Ok(a)) => {
                if !a {
                    self.counters.access_denied.fetch_add(1, Relaxed);
                }
                a
            }
            Ok(Err(e)) => {
                debug!(error = %e, "privilege check failed");
                self.counters.access_errors.fetch_add(1, Relaxed);
                false
            }
            Err(_) => {
                self.counters.access_errors.fetch_add(1, Relaxed);
                false
            }
        }
    }

    pub(super) fn budget_for(&self, policy: &std::path::Path, max_bytes: u64) -> Arc<Budget> {
        let mut b = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        let entry = b.entry(policy.to_path_buf()).or_insert_with(|| {
            Arc::new(Budget {
                max_bytes,
                used: AtomicU64::new(0),
            })
        });
        if entry.max_bytes != max_bytes {
            // A reloaded policy with a new budget: the store's images keep the old one
            // alive until they go; new ones count against the new one.
            *entry = Arc::new(Budget {
                max_bytes,
                used: AtomicU64::new(0),
            });
        }
        Arc::clone(entry)
    }
}

/// Runs the cache's background tasks until shutdown. Idle (no feed, no connections) while no
/// policy has a `[cache]` section.
pub async fn run(ctx: Arc<ProxyContext>, shutdown: watch::Receiver<bool>) {
    if let Some(rx) = take_receiver(&ctx.cache.fill_rx) {
        tokio::spawn(super::filler::filler(
            Arc::clone(&ctx),
            rx,
            shutdown.clone(),
        ));
    }
    if let Some(rx) = take_receiver(&ctx.cache.miss_rx) {
        tokio::spawn(super::coalesce::fetcher(
            Arc::clone(&ctx),
            rx,
            shutdown.clone(),
        ));
    }
    tokio::spawn(super::placer::placer(Arc::clone(&ctx), shutdown.clone()));
    tokio::spawn(super::fence::run(Arc::clone(&ctx), shutdown.clone()));
    if ctx.cache.l2.is_some() {
        tokio::spawn(l2_health(Arc::clone(&ctx), shutdown.clone()));
        if let Some(rx) = take_receiver(&ctx.cache.l2_writes_rx) {
            tokio::spawn(l2_writes(Arc::clone(&ctx), rx));
        }
    }
    super::refresh::refresher(ctx, shutdown).await;
}

/// A task's receiver, taken from the service that created its channel (once: a second
/// `run` finds none).
fn take_receiver<T>(slot: &Mutex<Option<mpsc::Receiver<T>>>) -> Option<mpsc::Receiver<T>> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Carries writes through this proxy into Redis, in order, batching what is queued.
async fn l2_writes(ctx: Arc<ProxyContext>, mut rx: mpsc::Receiver<L2Write>) {
    let Some(l2) = ctx.cache.l2.as_ref() else {
        return;
    };
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        if batch.iter().any(Option::is_none) {
            l2.new_epoch().await;
        }
        let keys: Vec<(u32, String, Option<u32>)> = batch
            .into_iter()
            .flatten()
            .map(|(t, k)| (t, k, None))
            .collect();
        l2.invalidate(&keys).await;
    }
}

/// Validates the Redis tier every second (run id, epoch; see [`super::l2`]).
async fn l2_health(ctx: Arc<ProxyContext>, mut shutdown: watch::Receiver<bool>) {
    let Some(l2) = ctx.cache.l2.as_ref() else {
        return;
    };
    loop {
        if let Err(e) = l2.validate().await {
            debug!(error = %e, "redis: not usable");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
