//! The shared L2 tier in Redis: row images several proxy instances fill and read, kept
//! exactly as trustworthy as the in-process L1.
//!
//! Layout (everything under `{namespace}:{epoch}:`): one hash per `(table, key)` whose fields
//! are `g` (a generation bumped by every change to the key, from any proxy's change feed or
//! write), `x` (the transaction id of the last change the feeds applied) and one `p...` field
//! per output profile and table layout holding an encoded image plus the snapshot it was read
//! in. The rules:
//!
//! - a change (feed or write through a proxy) bumps `g`, records `x` and deletes every image
//!   of the key, atomically (a Lua script);
//! - a fill reads `g` and `x` *before* taking its snapshot and stores its image only if `g` is
//!   unchanged (atomically) and the snapshot sees `x`, so no change it missed can be hidden;
//! - a reader checks an image against its own change log exactly like an L1 fill (the image
//!   carries its snapshot), so an image older than a change this proxy already applied is
//!   never served;
//! - the epoch moves (every image is abandoned) when Redis restarts (its run id changes: a
//!   restart may restore old images from disk), when a whole table changes (truncate), and
//!   when an invalidation could not be written (Redis down or slow), before anything is read
//!   from Redis again. Images also expire after `ttl`, a safety net.
//!
//! Failures never fail a query: every call has a timeout, three failures in a row open a
//! circuit breaker for a second (Redis is skipped), and the connection is re-made on demand.

use super::store::{CachedRow, Snapshot};
use crate::config::RedisSettings;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use redis::aio::MultiplexedConnection;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Consecutive failures that open the breaker.
const BREAKER_FAILURES: u32 = 3;
/// How long an open breaker keeps Redis out of the path.
const BREAKER_OPEN: Duration = Duration::from_secs(1);

const INVALIDATE: &str = r"
local g = redis.call('HINCRBY', KEYS[1], 'g', 1)
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'x', ARGV[1]) end
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 1) == 'p' then redis.call('HDEL', KEYS[1], f) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return g";

const PUT: &str = r"
local g = redis.call('HGET', KEYS[1], 'g') or '0'
if g ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1";

/// Counters for metrics and `SHOW STORES`.
#[derive(Debug, Default)]
pub struct L2Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Images found but refused (older than a change this proxy applied).
    pub refused: AtomicU64,
    pub puts: AtomicU64,
    pub invalidations: AtomicU64,
    pub errors: AtomicU64,
    pub breaker_opened: AtomicU64,
    pub epoch_changes: AtomicU64,
}

/// `g` and `x` of a key as a fill saw them before its snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyMeta {
    pub generation: String,
    pub last_xid: Option<u32>,
}

pub struct RedisTier {
    client: redis::Client,
    namespace: String,
    timeout: Duration,
    ttl: Duration,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// The epoch in use (see the module docs).
    epoch: AtomicU64,
    /// Redis's run id when this proxy last validated it.
    run_id: Mutex<Option<String>>,
    failures: AtomicU32,
    open_until: Mutex<Option<Instant>>,
    /// An invalidation could not be written: move the epoch before trusting Redis again.
    dirty: AtomicBool,
    /// Validated since start (or since the last failure).
    ready: AtomicBool,
    pub counters: L2Counters,
}

impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTier")
            .field("namespace", &self.namespace)
            .field("epoch", &self.epoch.load(Relaxed))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum L2Error {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis is skipped for now (circuit breaker open or not validated)")]
    Unavailable,
}

impl RedisTier {
    pub fn new(settings: &RedisSettings) -> Result<Self, L2Error> {
        Ok(RedisTier {
            client: redis::Client::open(settings.url.as_str())?,
            namespace: settings.namespace.clone(),
            timeout: settings.timeout,
            ttl: settings.ttl,
            connection: tokio::sync::Mutex::new(None),
            epoch: AtomicU64::new(0),
            run_id: Mutex::new(None),
            failures: AtomicU32::new(0),
            open_until: Mutex::new(None),
            dirty: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            counters: L2Counters::default(),
        })
    }

    /// Abandon every image once Redis is reachable again.
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Relaxed);
    }

    /// Whether reads and fills may use Redis now.
    pub fn usable(&self) -> bool {
        self.ready.load(Relaxed) && !self.dirty.load(Relaxed) && !self.breaker_open()
    }

    fn breaker_open(&self) -> bool {
        let g = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        g.is_some_and(|t| Instant::now() < t)
    }

    fn failed(&self, e: &L2Error) {
        self.counters.errors.fetch_add(1, Relaxed);
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        if n >= BREAKER_FAILURES {
            let mut g = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
            if g.is_none_or(|t| Instant::now() >= t) {
                self.counters.breaker_opened.fetch_add(1, Relaxed);
                warn!(error = %e, "redis: circuit breaker open");
            }
            *g = Some(Instant::now() + BREAKER_OPEN);
            self.failures.store(0, Relaxed);
        }
    }

    fn succeeded(&self) {
        self.failures.store(0, Relaxed);
    }

    /// The connection, made (and validated) if there is none.
    async fn conn(&self) -> Result<MultiplexedConnection, L2Error> {
        if self.breaker_open() {
            return Err(L2Error::Unavailable);
        }
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(
            self.timeout.max(Duration::from_millis(500)),
            self.client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| L2Error::Timeout(self.timeout))??;
        *slot = Some(c.clone());
        // A new connection may mean a restarted Redis: check before anything is read.
        self.ready.store(false, Relaxed);
        Ok(c)
    }

    async fn run<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, L2Error> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => {
                self.succeeded();
                Ok(v)
            }
            Ok(Err(e)) => {
                let e = L2Error::from(e);
                self.failed(&e);
                if matches!(&e, L2Error::Redis(r) if r.is_io_error() || r.is_connection_dropped() || r.is_unrecoverable_error())
                {
                    *self.connection.lock().await = None;
                    self.ready.store(false, Relaxed);
                }
                Err(e)
            }
            Err(_) => {
                let e = L2Error::Timeout(self.timeout);
                self.failed(&e);
                Err(e)
            }
        }
    }

    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.namespace)
    }

    fn key(&self, table: u32, key: &str) -> String {
        format!(
            "{}:{}:{table}:{key}",
            self.namespace,
            self.epoch.load(Relaxed)
        )
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    /// Checks Redis (run id, epoch) and makes it usable again; called every second and after
    /// reconnecting. Moves the epoch when Redis restarted or an invalidation was lost.
    pub async fn validate(&self) -> Result<(), L2Error> {
        let mut c = self.conn().await?;
        let info: String = self
            .run(redis::cmd("INFO").arg("server").query_async(&mut c))
            .await?;
        let run_id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|s| s.trim().to_string());
        let restarted = {
            let mut known = self.run_id.lock().unwrap_or_else(|e| e.into_inner());
            let restarted = known.is_some() && *known != run_id;
            *known = run_id;
            restarted
        };
        let epoch_key = self.epoch_key();
        if restarted || self.dirty.load(Relaxed) {
            let e: u64 = self
                .run(redis::cmd("INCR").arg(&epoch_key).query_async(&mut c))
                .await?;
            info!(
                epoch = e,
                restarted, "redis: moved to a new epoch; older images are abandoned"
            );
            self.counters.epoch_changes.fetch_add(1, Relaxed);
            self.epoch.store(e, Relaxed);
            self.dirty.store(false, Relaxed);
        } else {
            // Keep the epoch other proxies use (start one if Redis has none: FLUSHALL).
            let ours = self.epoch.load(Relaxed).max(1);
            let _: Option<String> = self
                .run(
                    redis::cmd("SET")
                        .arg(&epoch_key)
                        .arg(ours)
                        .arg("NX")
                        .query_async(&mut c),
                )
                .await?;
            let current: Option<u64> = self
                .run(redis::cmd("GET").arg(&epoch_key).query_async(&mut c))
                .await?;
            if let Some(e) = current {
                if e != self.epoch.load(Relaxed) {
                    self.counters.epoch_changes.fetch_add(1, Relaxed);
                }
                self.epoch.store(e, Relaxed);
            }
        }
        self.ready.store(true, Relaxed);
        Ok(())
    }

    /// Abandons every image (a table-wide change).
    pub async fn new_epoch(&self) {
        let result = async {
            // Cleared before the INCR: an invalidation lost before it is covered by it, one
            // lost after it sets the flag again.
            self.dirty.store(false, Relaxed);
            let mut c = self.conn().await?;
            let e: u64 = self
                .run(redis::cmd("INCR").arg(self.epoch_key()).query_async(&mut c))
                .await?;
            self.epoch.store(e, Relaxed);
            self.counters.epoch_changes.fetch_add(1, Relaxed);
            Ok::<_, L2Error>(())
        }
        .await;
        if result.is_err() {
            self.dirty.store(true, Relaxed);
        }
    }

    /// Changes to `(table, key)`: bump, record the change's `xid` (when known), drop every
    /// image; one pipelined round trip. A failure marks Redis dirty (the epoch moves before
    /// it is trusted again).
    pub async fn invalidate(&self, keys: &[(u32, String, Option<u32>)]) {
        if keys.is_empty() {
            return;
        }
        let result = async {
            let mut c = self.conn().await?;
            let mut pipe = redis::pipe();
            for (table, key, xid) in keys {
                let x = xid.map(|x| x.to_string()).unwrap_or_default();
                // EVAL, not EVALSHA: a restarted Redis has no scripts loaded.
                pipe.cmd("EVAL")
                    .arg(INVALIDATE)
                    .arg(1)
                    .arg(self.key(*table, key))
                    .arg(&x)
                    .arg(self.ttl_ms());
            }
            let _: Vec<i64> = self.run(pipe.query_async(&mut c)).await?;
            self.counters
                .invalidations
                .fetch_add(keys.len() as u64, Relaxed);
            Ok::<_, L2Error>(())
        }
        .await;
        if let Err(e) = result {
            if !matches!(e, L2Error::Unavailable) || self.ready.load(Relaxed) {
                warn!(error = %e, "redis: an invalidation could not be written; images there are abandoned once it is back");
            }
            self.dirty.store(true, Relaxed);
        }
    }

    /// `g` and `x` of `keys` of `table` (before a fill's snapshot).
    pub async fn read_meta(&self, table: u32, keys: &[String]) -> Result<Vec<KeyMeta>, L2Error> {
        if !self.usable() {
            return Err(L2Error::Unavailable);
        }
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("HMGET").arg(self.key(table, k)).arg("g").arg("x");
        }
        let rows: Vec<(Option<String>, Option<String>)> =
            self.run(pipe.query_async(&mut c)).await?;
        Ok(rows
            .into_iter()
            .map(|(g, x)| KeyMeta {
                generation: g.unwrap_or_else(|| "0".into()),
                last_xid: x.and_then(|x| x.parse().ok()),
            })
            .collect())
    }

    /// Stores fetched images; each only if its key's generation is still `meta`'s and the
    /// snapshot sees the key's last change. Returns how many were stored.
    pub async fn put(
        &self,
        table: u32,
        field: &str,
        snapshot: &Snapshot,
        rows: &[(String, Option<&CachedRow>, KeyMeta)],
    ) -> usize {
        if !self.usable() {
            return 0;
        }
        let result = async {
            let mut c = self.conn().await?;
            let mut pipe = redis::pipe();
            let mut n = 0;
            for (key, row, meta) in rows {
                // An image without binary forms is not shared (fills always have them).
                if meta.last_xid.is_some_and(|x| !snapshot.sees(x))
                    || row.is_some_and(|r| !r.has_binary())
                {
                    continue;
                }
                let value = encode(snapshot, *row);
                pipe.cmd("EVAL")
                    .arg(PUT)
                    .arg(1)
                    .arg(self.key(table, key))
                    .arg(&meta.generation)
                    .arg(field)
                    .arg(value.as_ref())
                    .arg(self.ttl_ms());
                n += 1;
            }
            if n == 0 {
                return Ok(0);
            }
            let stored: Vec<i64> = self.run(pipe.query_async(&mut c)).await?;
            let stored = stored.iter().filter(|&&s| s == 1).count();
            self.counters.puts.fetch_add(stored as u64, Relaxed);
            Ok::<_, L2Error>(stored)
        }
        .await;
        result.unwrap_or(0)
    }

    /// The image of `key` under `field`, with the snapshot it was read in.
    pub async fn get(
        &self,
        table: u32,
        key: &str,
        field: &str,
    ) -> Option<(Snapshot, Option<CachedRow>)> {
        if !self.usable() {
            return None;
        }
        let result = async {
            let mut c = self.conn().await?;
            let v: Option<Vec<u8>> = self
                .run(
                    redis::cmd("HGET")
                        .arg(self.key(table, key))
                        .arg(field)
                        .query_async(&mut c),
                )
                .await?;
            Ok::<_, L2Error>(v)
        }
        .await;
        match result {
            Ok(Some(v)) => match decode(&v) {
                Some(img) => {
                    self.counters.hits.fetch_add(1, Relaxed);
                    Some(img)
                }
                None => {
                    self.counters.misses.fetch_add(1, Relaxed);
                    None
                }
            },
            _ => {
                self.counters.misses.fetch_add(1, Relaxed);
                None
            }
        }
    }
}

/// The image field for a profile and a table layout (both hashed, so every proxy names the
/// same image alike and a layout change never meets an old image).
pub fn field(profile: &super::profile::OutputProfile, layout: u64) -> String {
    let p = xxhash_rust::xxh3::xxh3_64(profile.describe().as_bytes());
    format!("p{p:016x}{layout:016x}")
}

const VERSION: u8 = 1;

fn encode(snapshot: &Snapshot, row: Option<&CachedRow>) -> Bytes {
    let mut b = BytesMut::with_capacity(64 + row.map_or(0, CachedRow::bytes));
    b.put_u8(VERSION);
    b.put_u64(snapshot.xmin);
    b.put_u64(snapshot.xmax);
    b.put_u32(snapshot.xip.len() as u32);
    for x in &snapshot.xip {
        b.put_u64(*x);
    }
    match row {
        None => b.put_u8(0),
        Some(r) => {
            b.put_u8(1);
            b.put_u16(r.text.len() as u16);
            // Only complete images are shared (see `put`).
            let binary = r.binary.as_deref().unwrap_or(&[]);
            for col in r.text.iter().chain(binary) {
                match col {
                    Some(v) => {
                        b.put_i32(v.len() as i32);
                        b.put_slice(v);
                    }
                    None => b.put_i32(-1),
                }
            }
        }
    }
    b.freeze()
}

fn decode(mut v: &[u8]) -> Option<(Snapshot, Option<CachedRow>)> {
    let need = |v: &[u8], n: usize| (v.len() >= n).then_some(());
    need(v, 1 + 8 + 8 + 4)?;
    if v.get_u8() != VERSION {
        return None;
    }
    let xmin = v.get_u64();
    let xmax = v.get_u64();
    let n = v.get_u32() as usize;
    need(v, n.checked_mul(8)?)?;
    let xip = (0..n).map(|_| v.get_u64()).collect();
    let snapshot = Snapshot { xmin, xmax, xip };
    need(v, 1)?;
    if v.get_u8() == 0 {
        return v.is_empty().then_some((snapshot, None));
    }
    need(v, 2)?;
    let ncols = v.get_u16() as usize;
    let mut cols = Vec::with_capacity(2 * ncols);
    for _ in 0..2 * ncols {
        need(v, 4)?;
        let len = v.get_i32();
        if len < 0 {
            cols.push(None);
        } else {
            let len = len as usize;
            need(v, len)?;
            cols.push(Some(Bytes::copy_from_slice(&v[..len])));
            v.advance(len);
        }
    }
    if !v.is_empty() {
        return None;
    }
    let binary = cols.split_off(ncols);
    Some((
        snapshot,
        Some(CachedRow {
            text: cols,
            binary: Some(binary),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_round_trip_and_garbage_is_refused() {
        let snap = Snapshot {
            xmin: 5,
            xmax: 9,
            xip: vec![6, 7],
        };
        let row = CachedRow {
            text: vec![Some(Bytes::from_static(b"1")), None],
            binary: Some(vec![Some(Bytes::from_static(&[0, 0, 0, 1])), None]),
        };
        let (s, r) = decode(&encode(&snap, Some(&row))).unwrap();
        assert_eq!(s, snap);
        let r = r.unwrap();
        assert_eq!(r.text, row.text);
        assert_eq!(r.binary, row.binary);
        let (s, r) = decode(&encode(&snap, None)).unwrap();
        assert_eq!((s, r.is_none()), (snap.clone(), true));
        let bytes = encode(&snap, Some(&row));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_none(), "{cut}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(decode(&longer).is_none());
    }
}
