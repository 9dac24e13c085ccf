//! The cache service every session shares, and its background tasks: the schema refresher
//! (which also starts the change feed and keeps its table list), the applier (feed → store),
//! the placer (statistics → placed keys, demotions, fill requests) and the filler.

use super::access::AccessCache;
use super::fill::{self, MAX_BATCH};
use super::profile::{OutputProfile, ProfileRegistry};
use super::schema::{self, Budget, CacheSchema, TableMeta, Wanted};
use super::store::{Applied, EntryKey, L1Store};
use super::{CacheError, PLACE_INTERVAL, SCHEMA_REFRESH};
use crate::cdc::{ChangeFeed, ChangeKind, FeedEvent, FeedHandle, FeedState, Lsn, TableName};
use crate::context::ProxyContext;
use crate::placement::planner::{self, Action, HotKeyInput};
use dashmap::DashMap;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};
use tokio_postgres::Client;
use tracing::{debug, info, warn};

/// Fill requests queued at most; beyond, sessions' requests are dropped (the placer asks
/// again).
const FILL_QUEUE: usize = 65_536;

/// Profiles not used for this long get no new fills.
const ACTIVE_PROFILE_MS: u64 = 300_000;

/// How long the filler waits after a request for others to batch with it.
const FILL_GATHER: Duration = Duration::from_millis(5);

/// The longest one fill batch may take.
const FILL_DEADLINE: Duration = Duration::from_secs(5);

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
}

/// A key of a table to drop from Redis, or `None`: every image (a whole table changed).
type L2Write = Option<(u32, String)>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FillRequest {
    table: u32,
    profile: u32,
    key: Box<str>,
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
    schema: RwLock<Arc<CacheSchema>>,
    /// False from DDL through the proxy until the next schema load.
    schema_trusted: AtomicBool,
    /// Some table is servable (sessions skip the cache entirely otherwise).
    has_tables: AtomicBool,
    schema_dirty: Notify,
    /// table oid → placed keys.
    placed: RwLock<Arc<HashMap<u32, HashSet<Box<str>>>>>,
    /// table oid → the feed position from which the table's changes are all applied.
    ready_from: DashMap<u32, Lsn>,
    feed: OnceLock<FeedHandle>,
    side: tokio::sync::Mutex<Option<Arc<Client>>>,
    fill_tx: mpsc::Sender<FillRequest>,
    fill_rx: Mutex<Option<mpsc::Receiver<FillRequest>>>,
    pending: DashMap<FillRequest, ()>,
    budgets: Mutex<HashMap<std::path::PathBuf, Arc<Budget>>>,
    /// Writes through this proxy whose keys must leave Redis (`None`: a whole table).
    l2_writes: mpsc::Sender<L2Write>,
    l2_writes_rx: Mutex<Option<mpsc::Receiver<L2Write>>>,
    /// Commit (server clock) to applied (ours), per transaction, in microseconds.
    apply_delay: Mutex<hdrhistogram::Histogram<u64>>,
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
        Self::with_l2(None)
    }
}

impl CacheService {
    /// A service with the Redis tier `[stores.redis]` describes, if any.
    pub fn new(config: &crate::config::Config) -> Result<Self, super::l2::L2Error> {
        let l2 = match &config.stores.redis {
            Some(r) => Some(super::l2::RedisTier::new(r)?),
            None => None,
        };
        Ok(Self::with_l2(l2))
    }

    fn with_l2(l2: Option<super::l2::RedisTier>) -> Self {
        let (fill_tx, fill_rx) = mpsc::channel(FILL_QUEUE);
        let (l2_writes, l2_writes_rx) = mpsc::channel(FILL_QUEUE);
        CacheService {
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
            schema_trusted: AtomicBool::new(false),
            has_tables: AtomicBool::new(false),
            schema_dirty: Notify::new(),
            placed: RwLock::new(Arc::new(HashMap::new())),
            ready_from: DashMap::new(),
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
    /// table descriptions are read again, and forget privilege answers (GRANT/REVOKE).
    pub fn schema_changed(&self) {
        if self.schema_trusted.swap(false, Relaxed) {
            self.store.flush_all();
        }
        self.access.forget_all();
        self.schema_dirty.notify_one();
    }

    /// Checks that the feed and the table allow serving under `max_staleness`; returns the
    /// feed's applied position.
    pub fn fresh(&self, table: u32, max_staleness: Duration) -> Result<Lsn, Gate> {
        if !self.schema_trusted.load(Relaxed) {
            return Err(Gate::TableNotReady);
        }
        let feed = self.feed.get().ok_or(Gate::FeedNotFresh)?;
        let h = feed.health();
        let max_ms = max_staleness.as_millis() as u64;
        let status_ms = feed_status_interval_ms(feed);
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

    /// A write through the proxy names `key` of `table` (schema, name as resolved).
    pub fn invalidate_written(&self, schema: &str, name: &str, key_text: &str) {
        let s = self.schema();
        let Some(meta) = s.table(schema, name) else {
            return;
        };
        match meta.key_type.from_output(key_text) {
            Some(k) => self
                .store
                .invalidate_written(meta.oid, &k, &self.profiles.all()),
            None => self.store.flush_table(meta.oid),
        }
    }

    fn budget_for(&self, policy: &std::path::Path, max_bytes: u64) -> Arc<Budget> {
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

fn feed_status_interval_ms(_feed: &FeedHandle) -> u64 {
    // The feed pings at `status_interval`; a silence longer than that plus the staleness
    // bound means the connection may be stalled.
    STATUS_INTERVAL_MS.load(Relaxed)
}

static STATUS_INTERVAL_MS: AtomicU64 = AtomicU64::new(1000);

/// Runs the cache's background tasks until shutdown. Idle (no feed, no connections) while no
/// policy has a `[cache]` section.
pub async fn run(ctx: Arc<ProxyContext>, shutdown: watch::Receiver<bool>) {
    STATUS_INTERVAL_MS.store(
        ctx.config.change_feed.status_interval.as_millis() as u64,
        Relaxed,
    );
    let rx = ctx
        .cache
        .fill_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(rx) = rx {
        tokio::spawn(filler(Arc::clone(&ctx), rx, shutdown.clone()));
    }
    tokio::spawn(placer(Arc::clone(&ctx), shutdown.clone()));
    tokio::spawn(super::fence::run(Arc::clone(&ctx), shutdown.clone()));
    if ctx.cache.l2.is_some() {
        tokio::spawn(l2_health(Arc::clone(&ctx), shutdown.clone()));
        let rx = ctx
            .cache
            .l2_writes_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rx) = rx {
            tokio::spawn(l2_writes(Arc::clone(&ctx), rx));
        }
    }
    refresher(ctx, shutdown).await;
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

/// The tables cache policies cover, as the catalog knows them.
fn wanted_tables(ctx: &ProxyContext) -> Vec<Wanted> {
    let policies = ctx.policies.current();
    let catalog = ctx.catalog.snapshot();
    let mut out = Vec::new();
    for (schema, name) in catalog.table_names() {
        let Some(m) = policies.policy_for(&schema, &name) else {
            continue;
        };
        let Some(cache) = &m.policy.cache else {
            continue;
        };
        out.push(Wanted {
            budget: ctx.cache.budget_for(&m.policy.file, cache.max_bytes),
            schema,
            name,
            policy_key: m.policy.key.clone(),
            policy: cache.clone(),
        });
    }
    out
}

async fn refresher(ctx: Arc<ProxyContext>, mut shutdown: watch::Receiver<bool>) {
    let cache = &ctx.cache;
    let mut client: Option<Client> = None;
    let mut feed_rx_taken = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let wanted = wanted_tables(&ctx);
        if wanted.is_empty() && cache.feed.get().is_none() {
            // Nothing to cache: no connection, no slot.
            cache.schema_trusted.store(true, Relaxed);
        } else if let Err(e) =
            refresh_once(&ctx, &mut client, &wanted, &mut feed_rx_taken, &shutdown).await
        {
            warn!(error = %e, "cache: reading table descriptions failed; serving nothing until it works");
            client = None;
            if cache.schema_trusted.swap(false, Relaxed) {
                cache.store.flush_all();
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(SCHEMA_REFRESH) => {}
            _ = cache.schema_dirty.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn refresh_once(
    ctx: &Arc<ProxyContext>,
    client: &mut Option<Client>,
    wanted: &[Wanted],
    feed_started: &mut bool,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), CacheError> {
    let cache = &ctx.cache;
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        *client = Some(crate::side::connect(ctx).await?);
    }
    let Some(c) = client.as_ref() else {
        return Ok(());
    };
    let loaded = tokio::time::timeout(schema::LOAD_TIMEOUT, schema::load(c, wanted))
        .await
        .map_err(|_| CacheError::Timeout("loading table descriptions"))??;
    let old = cache.schema();
    for (k, t) in &old.tables {
        if loaded.tables.get(k).is_none_or(|n| !n.same_layout(t)) {
            info!(table = %t.qualified(), "cache: table description changed; flushing it");
            cache.store.flush_table(t.oid);
            cache.ready_from.remove(&t.oid);
        }
    }
    if loaded.defaults != old.defaults && !old.tables.is_empty() {
        cache.store.flush_all();
    }
    let servable: Vec<TableName> = loaded
        .tables
        .values()
        .filter(|t| t.unservable.is_none())
        .map(|t| TableName::new(t.schema.clone(), t.name.clone()))
        .collect();
    cache.has_tables.store(!servable.is_empty(), Relaxed);
    *cache.schema.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
    cache.schema_trusted.store(true, Relaxed);

    // The feed: started once there is something to watch, then kept in step.
    match cache.feed.get() {
        None if !servable.is_empty() && !*feed_started => {
            *feed_started = true;
            // Images in Redis may predate changes no feed will deliver to this proxy (all
            // proxies were down, or the slot is new): abandon them before reading any.
            if let Some(l2) = cache.l2.as_ref() {
                l2.new_epoch().await;
            }
            let (handle, rx) = ChangeFeed::start(Arc::clone(ctx), servable, shutdown.clone());
            if cache.feed.set(handle).is_ok() {
                tokio::spawn(applier(Arc::clone(ctx), rx));
            }
        }
        Some(feed) => {
            let mut current = feed.tables();
            let mut next = servable.clone();
            current.sort();
            next.sort();
            if current != next {
                feed.set_tables(next).await?;
            }
        }
        None => {}
    }
    // Tables become ready once the feed publishes them: from a position taken after that,
    // every change to them reaches the store.
    if let Some(feed) = cache.feed.get() {
        let status = feed.status();
        if status.state == FeedState::Streaming {
            let schema = cache.schema();
            let mut position = None;
            for t in schema.tables.values() {
                let published = status
                    .tables
                    .iter()
                    .any(|p| p.schema == t.schema && p.name == t.name);
                if published && !cache.ready_from.contains_key(&t.oid) {
                    let lsn = match position {
                        Some(l) => l,
                        None => {
                            let l = crate::cdc::setup::current_wal_lsn(c).await?;
                            position = Some(l);
                            l
                        }
                    };
                    debug!(table = %t.qualified(), %lsn, "cache: table covered by the change feed");
                    cache.ready_from.insert(t.oid, lsn);
                } else if !published {
                    cache.ready_from.remove(&t.oid);
                }
            }
        }
    }
    Ok(())
}

/// Applies the feed's transactions to the store, in commit order, then acknowledges them.
/// Whatever is queued is taken together, so Redis gets one pipelined round trip per batch
/// rather than one per transaction (a slow feed closes the freshness gate).
async fn applier(ctx: Arc<ProxyContext>, mut rx: mpsc::Receiver<FeedEvent>) {
    const BATCH: usize = 512;
    let cache = &ctx.cache;
    while let Some(first) = rx.recv().await {
        let mut events = vec![first];
        while events.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => events.push(e),
                Err(_) => break,
            }
        }
        let schema = cache.schema();
        let mut l2_keys: Vec<(u32, String, Option<u32>)> = Vec::new();
        let mut l2_new_epoch = false;
        let mut applied_txs: Vec<(Lsn, std::time::SystemTime)> = Vec::new();
        for event in events {
            match event {
                FeedEvent::Commit(tx) => {
                    let mut applied = Vec::new();
                    for ch in &tx.changes {
                        if let Some(meta) = schema.table(&ch.table.schema, &ch.table.name) {
                            applied.extend(changed_keys(meta, ch));
                        }
                    }
                    if !applied.is_empty() {
                        cache.store.apply(tx.xid, &applied, &cache.profiles.all());
                        for a in applied {
                            let table = match &a {
                                Applied::Key(t, _) | Applied::Table(t) => *t,
                            };
                            if !schema.by_oid(table).is_some_and(|m| m.uses_redis()) {
                                continue;
                            }
                            match a {
                                Applied::Key(t, k) => l2_keys.push((t, k, Some(tx.xid))),
                                Applied::Table(_) => l2_new_epoch = true,
                            }
                        }
                    }
                    cache.counters.feed_transactions.fetch_add(1, Relaxed);
                    applied_txs.push((tx.end_lsn, tx.commit_time));
                }
                FeedEvent::Reset { reason } => {
                    warn!(
                        ?reason,
                        "cache: change feed lost continuity; flushing the cache"
                    );
                    cache.counters.feed_resets.fetch_add(1, Relaxed);
                    cache.ready_from.clear();
                    cache.store.flush_all();
                    // A new epoch abandons every Redis image, these keys' included.
                    l2_new_epoch = true;
                    l2_keys.clear();
                }
            }
        }
        if let Some(l2) = cache.l2.as_ref() {
            if l2_new_epoch {
                l2.new_epoch().await;
            }
            l2.invalidate(&l2_keys).await;
        }
        let now = std::time::SystemTime::now();
        let mut delays = cache.apply_delay.lock().unwrap_or_else(|e| e.into_inner());
        for (end_lsn, commit_time) in applied_txs {
            if let Some(feed) = cache.feed.get() {
                feed.ack(end_lsn);
            }
            let delay = now.duration_since(commit_time).unwrap_or_default();
            let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX).max(1);
            let _ = delays.record(us.min(3_600_000_000));
        }
    }
}

/// The keys a change touches (old and new key of an update), or the whole table.
fn changed_keys(meta: &TableMeta, ch: &crate::cdc::Change) -> Vec<Applied> {
    let key_col = &meta.columns[meta.key_index].name;
    match ch.kind {
        ChangeKind::Truncate | ChangeKind::Invalidate => vec![Applied::Table(meta.oid)],
        ChangeKind::Insert | ChangeKind::Update | ChangeKind::Delete => {
            let mut out = Vec::new();
            let old = ch
                .key
                .iter()
                .find(|(c, _)| c == key_col)
                .and_then(|(_, v)| v.as_deref());
            let new = ch.new_row.as_ref().and_then(|row| {
                row.iter()
                    .find(|(c, _)| c == key_col)
                    .and_then(|(_, v)| v.as_text())
            });
            for text in [old, new].into_iter().flatten() {
                match meta.key_type.from_output(text) {
                    Some(k) => out.push(Applied::Key(meta.oid, k)),
                    None => return vec![Applied::Table(meta.oid)],
                }
            }
            if out.is_empty() {
                vec![Applied::Table(meta.oid)]
            } else {
                out
            }
        }
    }
}

/// Recomputes the placement from the statistics: demotes what is no longer placed and asks
/// for fills of what is placed but missing.
async fn placer(ctx: Arc<ProxyContext>, mut shutdown: watch::Receiver<bool>) {
    let cache = &ctx.cache;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PLACE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let Some(stats) = ctx.stats_view.as_ref().map(|h| h.snapshot()) else {
            continue;
        };
        let schema = cache.schema();
        if schema.tables.is_empty() {
            continue;
        }
        let policies = ctx.policies.current();
        let plan = planner::plan(
            &policies,
            &HotKeyInput::from_snapshot(&stats),
            stats.half_life,
        );
        let mut placed: HashMap<u32, HashSet<Box<str>>> = HashMap::new();
        for e in plan.entries.iter().filter(|e| e.action == Action::Promote) {
            let (Some(key), Some((s, n))) = (&e.key, e.table.split_once('.')) else {
                continue;
            };
            let Some(meta) = schema.table(s, n).filter(|m| m.unservable.is_none()) else {
                continue;
            };
            if let Some(k) = meta.key_type.from_output(key) {
                placed.entry(meta.oid).or_default().insert(k.into());
            }
        }
        let placed = Arc::new(placed);
        *cache.placed.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&placed);
        cache.store.retain(|k| {
            placed
                .get(&k.table)
                .is_some_and(|keys| keys.contains(&k.key))
        });
        let profiles = cache.profiles.active(cache.epoch, ACTIVE_PROFILE_MS);
        for (table, keys) in placed.iter() {
            if !cache.ready_from.contains_key(table) {
                continue;
            }
            for key in keys {
                for &profile in &profiles {
                    let k = EntryKey {
                        table: *table,
                        profile,
                        key: key.clone(),
                    };
                    if !cache.store.contains(&k) {
                        cache.request_fill(*table, profile, key);
                    }
                }
            }
        }
    }
}

/// Fetches requested rows in batches per (table, profile).
async fn filler(
    ctx: Arc<ProxyContext>,
    mut rx: mpsc::Receiver<FillRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cache = &ctx.cache;
    let mut connections: HashMap<u32, FillConnection> = HashMap::new();
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = shutdown.changed() => return,
        };
        let Some(first) = first else { return };
        // A moment for more requests to arrive: one fetch of many keys costs Postgres far
        // less than many fetches of one (writes make hot keys miss in bursts).
        tokio::time::sleep(FILL_GATHER).await;
        let mut batch = vec![first];
        while batch.len() < 4 * MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut groups: HashMap<(u32, u32), Vec<Box<str>>> = HashMap::new();
        for r in &batch {
            groups
                .entry((r.table, r.profile))
                .or_default()
                .push(r.key.clone());
        }
        for ((table, profile), keys) in groups {
            for chunk in keys.chunks(MAX_BATCH) {
                if let Err(e) = fill_batch(&ctx, &mut connections, table, profile, chunk).await {
                    cache.counters.fill_errors.fetch_add(1, Relaxed);
                    connections.remove(&profile);
                    debug!(error = %e, "cache: fill failed");
                }
            }
        }
        for r in batch {
            cache.pending.remove(&r);
        }
    }
}

/// A profile's connection and the fetch statements prepared on it, per (table, layout).
struct FillConnection {
    client: Client,
    statements: HashMap<(u32, u64), tokio_postgres::Statement>,
}

async fn fill_batch(
    ctx: &ProxyContext,
    connections: &mut HashMap<u32, FillConnection>,
    table: u32,
    profile: u32,
    keys: &[Box<str>],
) -> Result<(), CacheError> {
    let cache = &ctx.cache;
    let schema = cache.schema();
    let Some(meta) = schema.by_oid(table).filter(|m| m.unservable.is_none()) else {
        return Ok(());
    };
    if !cache.ready_from.contains_key(&table) {
        return Ok(());
    }
    let keys: Vec<String> = keys
        .iter()
        .filter(|k| cache.is_placed(table, k))
        .map(|k| k.to_string())
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let Some(p) = cache.profiles.get(profile) else {
        return Ok(());
    };
    if connections
        .get(&profile)
        .is_none_or(|c| c.client.is_closed())
    {
        connections.insert(
            profile,
            FillConnection {
                client: profile_connection(ctx, &p).await?,
                statements: HashMap::new(),
            },
        );
    }
    let Some(conn) = connections.get_mut(&profile) else {
        return Ok(());
    };
    let binary = match conn.statements.get(&(table, meta.layout)) {
        Some(s) => s.clone(),
        None => {
            let s = conn.client.prepare(&fill::binary_sql(meta)).await?;
            conn.statements.insert((table, meta.layout), s.clone());
            s
        }
    };
    let client = &conn.client;
    let ticket = cache.store.begin_fill();
    // Redis generations are read before the snapshot is taken (see cache::l2).
    let l2 = cache.l2_for(meta);
    let l2_meta = match l2 {
        Some(l2) => l2.read_meta(table, &keys).await.ok(),
        None => None,
    };
    let fetched = tokio::time::timeout(FILL_DEADLINE, fill::fetch(client, &binary, meta, &keys))
        .await
        .map_err(|_| CacheError::Timeout("fetching rows"))??;
    cache.counters.fill_batches.fetch_add(1, Relaxed);
    if let (Some(l2), Some(metas)) = (l2, l2_meta) {
        let field = super::l2::field(&p, meta.layout);
        let rows: Vec<_> = fetched
            .rows
            .iter()
            .zip(metas)
            .filter(|((key, _), _)| cache.store.admit(&ticket, &fetched.snapshot, table, key))
            .map(|((key, row), m)| (key.clone(), row.as_ref(), m))
            .collect();
        l2.put(table, &field, &fetched.snapshot, &rows).await;
    }
    cache.store.insert_fill(
        &ticket,
        &fetched.snapshot,
        table,
        profile,
        &meta.budget,
        fetched.rows,
    );
    Ok(())
}

async fn profile_connection(ctx: &ProxyContext, p: &OutputProfile) -> Result<Client, CacheError> {
    let c = crate::side::connect(ctx).await?;
    c.batch_execute(&fill::profile_settings_sql(p)).await?;
    Ok(c)
}
