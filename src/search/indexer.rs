//! The indexer: one task that owns every index's writes.
//!
//! - **Tables**: every [`super::TABLE_REFRESH`] it re-reads which tables `[search]` policies
//!   cover; a new table gets an index (reusing one on disk whose layout still matches), a
//!   removed one has its index dropped, a changed layout starts a rebuild.
//! - **Change feed**: its own slot and publication (`<slot>_search`), so the index's position
//!   is acknowledged independently of the cache. A transaction's changed keys are *re-read*
//!   from Postgres (rather than indexed from the feed's row images, which leave out unchanged
//!   TOASTed values and cannot compute `to_tsvector`), in a snapshot checked to see every
//!   transaction being applied. Rows read later than the change are newer or equal, and the
//!   feed brings every later change again, so the index converges. The feed is acknowledged
//!   only after the index commit, so a restart re-delivers whatever the disk does not hold.
//! - **Backfill**: in key order, in batches of [`BACKFILL_BATCH`] rows each read in its own
//!   snapshot, throttled to `backfill_rows_per_second`, committed with its position (resumed
//!   after a restart). A backfilled row is skipped when the feed already indexed that key from
//!   a transaction the batch's snapshot does not see (the feed's row is newer).
//! - **Store failure**: a table whose store call fails is *broken*: its text predicates go
//!   to Postgres, its pending changes are dropped, and a marker file in the embedded
//!   store's directory records that it owes a rebuild (so a restart does not trust an index
//!   that missed acknowledged changes). Once the store answers again the index is re-created
//!   and backfilled. The feed is acknowledged past a broken table's changes only when its
//!   marker is on disk. A store that failed a session's search is re-validated (its
//!   committed progress read back) before sessions use it again.

use super::elastic::{ElasticClient, ElasticIndex};
use super::index::TableIndex;
use super::service::IndexedTable;
use super::store::{IndexDoc, Progress, SearchIndex, WriteOrder};
use super::table::{self, SearchTable, FTS_CONFIGS};
use super::{SearchError, TABLE_REFRESH};
use crate::cache::store::Snapshot;
use crate::cdc::event::quote_ident;
use crate::cdc::{ChangeFeed, ChangeKind, FeedEvent, FeedState, ResetReason, TableName};
use crate::config::policy::SearchStoreKind;
use crate::context::ProxyContext;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;
use tracing::{info, warn};

/// Rows per backfill batch.
const BACKFILL_BATCH: i64 = 5000;
/// How often a backfill commits (each commit waits for tantivy to finish indexing what was
/// added; in between, reading the next batch from Postgres overlaps with indexing the last).
/// Each commit also closes a segment per indexing thread, and segments are not merged
/// until the backfill completes: fewer commits, fewer segments for the first searches.
const BACKFILL_COMMIT_EVERY: Duration = Duration::from_secs(10);
/// Feed transactions taken together into one refetch and one commit.
const FEED_BATCH: usize = 1024;
/// How long a refetch waits for a just-delivered commit to become visible to snapshots.
const VISIBILITY_WAIT: Duration = Duration::from_secs(5);
/// How often a failed store is tried again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// The indexer's own view of one table.
struct Tracked {
    shared: Arc<IndexedTable>,
    progress: Progress,
    /// Keys the feed reported changed and not yet re-read, with the changing transaction.
    dirty: HashMap<String, u32>,
    /// While backfilling: keys the feed indexed, with the transaction it indexed them for.
    fed: HashMap<String, u32>,
    /// Start over: clear the index and backfill again.
    rebuild: bool,
    /// Last commit of a backfill batch.
    last_commit: Instant,
    /// Newest feed LSN among the changes in `dirty` (the version their documents carry).
    dirty_lsn: u64,
    /// A store call failed: not used, and rebuilt once the store answers again.
    broken: bool,
    /// When a broken or suspect store is tried next.
    next_check: Instant,
    /// Where the "owes a rebuild" marker of this index lives.
    marker: Option<std::path::PathBuf>,
}

struct Worker {
    ctx: Arc<ProxyContext>,
    client: Option<Client>,
    rx: Option<mpsc::Receiver<FeedEvent>>,
    tables: HashMap<u32, Tracked>,
    source: Option<String>,
    last_refresh: Option<Instant>,
    /// When the last backfill batch may be followed by the next.
    backfill_due: Instant,
    /// The Elasticsearch client, once `[stores.elasticsearch]` is needed.
    elastic: Option<ElasticClient>,
    /// A broken table's marker could not be written: the feed is not acknowledged until it
    /// has been rebuilt.
    hold_ack: bool,
    /// The next backfill batch, being read on a second connection.
    prefetch: Option<Prefetch>,
    /// That second connection (shared with the reading task).
    prefetch_client: Option<Arc<Client>>,
    /// Bumped whenever any index starts over or is (re)opened: a prefetched batch read
    /// before that is not used.
    backfill_epoch: u64,
}

/// A backfill batch read ahead, while the previous one is indexed: Postgres computes the next
/// rows' lexemes on one core while tantivy indexes on the other. Its rows are as good as
/// rows read later: the batch's own snapshot decides, when it is indexed, which keys the feed
/// has since indexed from transactions it does not see (see `backfill_batch`).
struct Prefetch {
    oid: u32,
    epoch: u64,
    after: String,
    task: tokio::task::JoinHandle<Result<(Snapshot, Vec<IndexDoc>), SearchError>>,
}

pub(super) async fn run(ctx: Arc<ProxyContext>, mut shutdown: watch::Receiver<bool>) {
    let mut w = Worker {
        ctx,
        client: None,
        rx: None,
        tables: HashMap::new(),
        source: None,
        last_refresh: None,
        backfill_due: Instant::now(),
        elastic: None,
        hold_ack: false,
        prefetch: None,
        prefetch_client: None,
        backfill_epoch: 0,
    };
    loop {
        if *shutdown.borrow() {
            break;
        }
        if let Err(e) = w.step(&mut shutdown).await {
            warn!(error = %e, "search: indexer step failed; retrying");
            w.ctx.search.counters.errors.fetch_add(1, Relaxed);
            w.client = None;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => break,
            }
        }
    }
    // Let go of the indexes (and their writer locks) now, not when the last reference to
    // the proxy's context goes.
    w.ctx.search.publish(Vec::new());
    w.tables.clear();
}

/// The indexer's side connection, opened again when it broke.
async fn side<'a>(
    slot: &'a mut Option<Client>,
    ctx: &ProxyContext,
) -> Result<&'a Client, SearchError> {
    if slot.as_ref().is_none_or(|c| c.is_closed()) {
        *slot = Some(crate::side::connect(ctx).await?);
    }
    slot.as_ref()
        .ok_or(SearchError::Unexpected("no side connection"))
}

impl Worker {
    async fn step(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), SearchError> {
        if self
            .last_refresh
            .is_none_or(|t| t.elapsed() >= TABLE_REFRESH)
        {
            self.refresh_tables(shutdown).await?;
            self.last_refresh = Some(Instant::now());
        }
        let backfill_pending = self.backfill_candidate().is_some();
        let wait = if backfill_pending {
            self.backfill_due.saturating_duration_since(Instant::now())
        } else {
            TABLE_REFRESH
        };
        let mut events = Vec::new();
        let mut closed = false;
        if let Some(rx) = self.rx.as_mut() {
            tokio::select! {
                e = rx.recv() => match e {
                    Some(e) => events.push(e),
                    None => closed = true,
                },
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return Ok(()),
            }
            while events.len() < FEED_BATCH {
                match rx.try_recv() {
                    Ok(e) => events.push(e),
                    Err(_) => break,
                }
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(wait.min(Duration::from_millis(200))) => {}
                _ = shutdown.changed() => return Ok(()),
            }
        }
        if closed {
            self.rx = None;
        }
        let mut end_lsn = None;
        for e in events {
            match e {
                FeedEvent::Commit(tx) => {
                    self.note_changes(&tx);
                    self.ctx
                        .search
                        .counters
                        .feed_transactions
                        .fetch_add(1, Relaxed);
                    end_lsn = Some(tx.end_lsn);
                }
                FeedEvent::Reset { reason } => {
                    if !matches!(reason, ResetReason::ConnectionLost { .. }) {
                        warn!(%reason, "search: change feed lost continuity; rebuilding every index");
                        for t in self.tables.values_mut() {
                            t.rebuild = true;
                        }
                    }
                }
            }
        }
        self.check_stores().await;
        self.apply_rebuilds().await;
        self.apply_dirty().await?;
        self.hold_ack = self.tables.values().any(|t| t.broken && t.marker.is_none());
        if let (Some(lsn), Some(feed)) = (end_lsn, self.ctx.search.feed.get()) {
            if !self.hold_ack {
                feed.ack(lsn);
            }
        }
        if Instant::now() >= self.backfill_due {
            if let Some(oid) = self.backfill_candidate() {
                self.backfill_batch(oid).await?;
            }
        }
        Ok(())
    }

    /// Re-reads the covered tables; opens, drops and rebuilds indexes; starts or re-aims the
    /// feed.
    async fn refresh_tables(
        &mut self,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), SearchError> {
        let has_policies = self
            .ctx
            .policies
            .current()
            .policies
            .iter()
            .any(|p| p.search.is_some());
        if !has_policies && self.tables.is_empty() {
            return Ok(());
        }
        let client = side(&mut self.client, &self.ctx).await?;
        let loaded = table::load(&self.ctx, client).await?;
        if self.source.is_none() {
            let row = client
                .query_one(
                    "SELECT system_identifier::text FROM pg_control_system()",
                    &[],
                )
                .await?;
            let system: String = row.get(0);
            let slot = search_feed_settings(&self.ctx).slot;
            self.source = Some(format!("{system}/{}/{slot}", self.ctx.upstream.database));
        }
        let source = self.source.clone().unwrap_or_default();
        let mut next: HashMap<u32, Tracked> = HashMap::new();
        for meta in loaded {
            let oid = meta.oid;
            match self.tables.remove(&oid) {
                // Kept as it is unless it changed, or its index could not be opened (retried).
                Some(t)
                    if t.shared.meta == meta
                        && (t.shared.index.is_some() || meta.unusable.is_some()) =>
                {
                    next.insert(oid, t);
                }
                old => {
                    if let Some(old) = old {
                        if old.shared.index.is_some() {
                            info!(table = %meta.name, "search: table layout or policy changed; rebuilding its index");
                        }
                        destroy_if_moved(&old, &meta).await;
                    }
                    let t = self.open_table(meta, &source).await;
                    next.insert(oid, t);
                }
            }
        }
        // Whatever is left is no longer under a policy: drop its index.
        for (_, t) in self.tables.drain() {
            if let Some(ix) = &t.shared.index {
                info!(table = %t.shared.meta.name, "search: no policy covers the table any more; dropping its index");
                if let Err(e) = ix.destroy().await {
                    warn!(table = %t.shared.meta.name, error = %e, "search: could not drop the index");
                }
                if let Some(m) = &t.marker {
                    let _ = std::fs::remove_file(m);
                }
            }
        }
        self.tables = next;
        self.ctx.search.publish(
            self.tables
                .values()
                .map(|t| Arc::clone(&t.shared))
                .collect(),
        );
        // The feed: started once something is indexable, then kept in step.
        let mut wanted: Vec<TableName> = self
            .tables
            .values()
            .filter(|t| t.shared.index.is_some())
            .map(|t| t.shared.meta.name.clone())
            .collect();
        wanted.sort();
        match self.ctx.search.feed.get() {
            None if !wanted.is_empty() => {
                let settings = search_feed_settings(&self.ctx);
                let (handle, rx) = ChangeFeed::start_with(
                    Arc::clone(&self.ctx),
                    settings,
                    wanted,
                    shutdown.clone(),
                );
                if self.ctx.search.feed.set(handle).is_ok() {
                    self.rx = Some(rx);
                }
            }
            Some(feed) => {
                let mut current = feed.tables();
                current.sort();
                if current != wanted {
                    feed.set_tables(wanted).await?;
                }
            }
            None => {}
        }
        Ok(())
    }

    fn note_changes(&mut self, tx: &crate::cdc::Transaction) {
        for ch in &tx.changes {
            let Some(t) = self
                .tables
                .values_mut()
                .find(|t| t.shared.meta.name == ch.table)
            else {
                continue;
            };
            if t.shared.index.is_none() || t.broken {
                continue;
            }
            t.dirty_lsn = t.dirty_lsn.max(tx.end_lsn.0);
            match ch.kind {
                ChangeKind::Truncate | ChangeKind::Invalidate => t.rebuild = true,
                ChangeKind::Insert | ChangeKind::Update | ChangeKind::Delete => {
                    let col = &t.shared.meta.key_column;
                    let old = ch
                        .key
                        .iter()
                        .find(|(c, _)| c == col)
                        .and_then(|(_, v)| v.clone());
                    let new = ch.new_row.as_ref().and_then(|row| {
                        row.iter()
                            .find(|(c, _)| c == col)
                            .and_then(|(_, v)| v.as_text().map(str::to_string))
                    });
                    if old.is_none() && new.is_none() {
                        t.rebuild = true;
                    }
                    for k in [old, new].into_iter().flatten() {
                        t.dirty.insert(k, tx.xid);
                    }
                }
            }
        }
    }

    /// Clears the indexes that start over (truncate, feed reset) and commits them empty.
    async fn apply_rebuilds(&mut self) {
        let oids: Vec<u32> = self
            .tables
            .iter()
            .filter(|(_, t)| t.rebuild && !t.broken)
            .map(|(o, _)| *o)
            .collect();
        for oid in oids {
            let Some(t) = self.tables.get_mut(&oid) else {
                continue;
            };
            t.rebuild = false;
            t.dirty.clear();
            t.fed.clear();
            let Some(ix) = t.shared.index.clone() else {
                continue;
            };
            self.ctx.search.counters.rebuilds.fetch_add(1, Relaxed);
            self.backfill_epoch += 1;
            t.shared.ready.store(false, Relaxed);
            match start_over(ix.as_ref(), &mut t.progress).await {
                Ok(()) => {
                    publish_progress(t);
                    t.shared.set_status("backfill pending");
                }
                Err(e) => break_table(&self.ctx, t, &e),
            }
        }
    }

    /// Tries broken stores again (re-creating their index), and re-validates stores a
    /// session's search found failing.
    async fn check_stores(&mut self) {
        let now = Instant::now();
        for t in self.tables.values_mut() {
            let Some(ix) = t.shared.index.clone() else {
                continue;
            };
            if now < t.next_check {
                continue;
            }
            if t.broken {
                self.backfill_epoch += 1;
                match start_over(ix.as_ref(), &mut t.progress).await {
                    Ok(()) => {
                        info!(table = %t.shared.meta.name, store = ix.store(), "search: store answers again; index re-created, backfilling");
                        t.broken = false;
                        t.dirty.clear();
                        t.fed.clear();
                        t.dirty_lsn = 0;
                        if let Some(m) = &t.marker {
                            let _ = std::fs::remove_file(m);
                        }
                        t.shared.store_down.store(false, Relaxed);
                        t.shared.set_status("backfill pending");
                        publish_progress(t);
                    }
                    Err(_) => t.next_check = now + STORE_RETRY,
                }
            } else if t.shared.store_down.load(Relaxed) {
                match ix.validate(&t.progress).await {
                    Ok(true) => {
                        info!(table = %t.shared.meta.name, store = ix.store(), "search: store re-validated; in use again");
                        t.shared.store_down.store(false, Relaxed);
                    }
                    Ok(false) => {
                        let e = SearchError::Elastic(
                            "the index no longer holds what was committed".into(),
                        );
                        break_table(&self.ctx, t, &e);
                    }
                    Err(_) => t.next_check = now + STORE_RETRY,
                }
            }
        }
    }

    /// Re-reads every dirty key and replaces its documents.
    async fn apply_dirty(&mut self) -> Result<(), SearchError> {
        let oids: Vec<u32> = self
            .tables
            .iter()
            .filter(|(_, t)| !t.dirty.is_empty() && t.shared.index.is_some() && !t.broken)
            .map(|(o, _)| *o)
            .collect();
        for oid in oids {
            let (meta, keys, xids) = {
                let Some(t) = self.tables.get(&oid) else {
                    continue;
                };
                let keys: Vec<String> = t.dirty.keys().cloned().collect();
                let xids: Vec<u32> = t.dirty.values().copied().collect();
                (t.shared.meta.clone(), keys, xids)
            };
            let (snapshot, docs) = self.fetch_keys(&meta, &keys, &xids).await?;
            let _ = snapshot;
            self.ctx
                .search
                .counters
                .refetched_rows
                .fetch_add(docs.len() as u64, Relaxed);
            let Some(t) = self.tables.get_mut(&oid) else {
                continue;
            };
            let Some(ix) = t.shared.index.clone() else {
                continue;
            };
            let order = WriteOrder::Feed(t.dirty_lsn);
            let written = async {
                ix.replace(keys, docs, order).await?;
                ix.commit(&t.progress).await
            }
            .await;
            if let Err(e) = written {
                break_table(&self.ctx, t, &e);
                continue;
            }
            if !t.progress.complete {
                for (k, x) in t.dirty.drain() {
                    t.fed.insert(k, x);
                }
            }
            t.dirty.clear();
        }
        Ok(())
    }

    /// A table whose backfill can run now: incomplete, and covered by a streaming feed (so
    /// every change after the batch's snapshot will be delivered).
    fn backfill_candidate(&self) -> Option<u32> {
        let feed = self.ctx.search.feed.get()?;
        let status = feed.status();
        if status.state != FeedState::Streaming {
            return None;
        }
        self.tables
            .iter()
            .filter(|(_, t)| t.shared.index.is_some() && !t.progress.complete && !t.broken)
            .find(|(_, t)| status.tables.contains(&t.shared.meta.name))
            .map(|(o, _)| *o)
    }

    async fn backfill_batch(&mut self, oid: u32) -> Result<(), SearchError> {
        let started = Instant::now();
        let Some(t) = self.tables.get(&oid) else {
            return Ok(());
        };
        let meta = t.shared.meta.clone();
        let after = t.progress.after_key.clone();
        let (snapshot, docs) = match self.take_prefetch(oid, after.as_deref()).await {
            Some(batch) => batch,
            None => self.fetch_range(&meta, after.as_deref()).await?,
        };
        if docs.len() as i64 == BACKFILL_BATCH {
            if let Some(last) = docs.last() {
                self.start_prefetch(oid, &meta, last.key.clone()).await;
            }
        }
        let Some(t) = self.tables.get_mut(&oid) else {
            return Ok(());
        };
        let Some(ix) = t.shared.index.clone() else {
            return Ok(());
        };
        let read = docs.len();
        let last = docs.last().map(|d| d.key.clone());
        // Keys the feed indexed this run: skipped when the feed's row is newer than the
        // batch's, replaced otherwise. Other keys are simply added: no document of theirs
        // exists unless the feed indexed one before a restart, and then the older of two
        // documents only adds candidates until the key's next change replaces both.
        let mut fresh = Vec::with_capacity(docs.len());
        let mut seen_by_feed = Vec::new();
        for d in docs {
            match t.fed.get(&d.key) {
                None => fresh.push(d),
                Some(x) if snapshot.sees(*x) => seen_by_feed.push(d),
                Some(_) => {}
            }
        }
        let keys: Vec<String> = seen_by_feed.iter().map(|d| d.key.clone()).collect();
        let mut next = t.progress.clone();
        next.backfilled_rows += read as u64;
        if let Some(last) = last {
            next.after_key = Some(last);
        }
        if (read as i64) < BACKFILL_BATCH {
            next.complete = true;
        }
        let committed = next.complete || t.last_commit.elapsed() >= BACKFILL_COMMIT_EVERY;
        let written = async {
            // Most batches have no key the feed wrote: no write (and, on a current-thread
            // runtime, no trip to the blocking pool) for them.
            if !keys.is_empty() {
                ix.replace(keys, seen_by_feed, WriteOrder::Backfill).await?;
            }
            if !fresh.is_empty() {
                ix.add(fresh).await?;
            }
            if committed {
                ix.commit(&next).await?;
            }
            Ok::<_, SearchError>(())
        }
        .await;
        if let Err(e) = written {
            break_table(&self.ctx, t, &e);
            return Ok(());
        }
        t.progress = next;
        if t.progress.complete {
            t.fed.clear();
        }
        if committed {
            t.last_commit = Instant::now();
        }
        self.ctx
            .search
            .counters
            .backfilled_rows
            .fetch_add(read as u64, Relaxed);
        publish_progress(t);
        if t.progress.complete {
            info!(table = %meta.name, rows = t.progress.backfilled_rows, "search: backfill complete; index in use");
            t.shared.ready.store(true, Relaxed);
            t.shared.set_status("ready");
        } else {
            if committed {
                info!(table = %meta.name, rows = t.progress.backfilled_rows, "search: backfilling");
            }
            t.shared
                .set_status(format!("backfilling ({} rows)", t.progress.backfilled_rows));
        }
        // Throttle: a batch of n rows earns n / rate seconds.
        let stores = &self.ctx.config.stores;
        let rate = match meta.policy.store {
            SearchStoreKind::Embedded => stores.embedded.backfill_rows_per_second,
            SearchStoreKind::Elasticsearch => stores
                .elasticsearch
                .as_ref()
                .map_or(20_000, |e| e.backfill_rows_per_second),
        };
        let rate = f64::from(rate.max(1));
        let budget = Duration::from_secs_f64(read as f64 / rate);
        self.backfill_due = started + budget;
        Ok(())
    }

    /// The prefetched batch, if it is the one after `after` of this table and nothing
    /// started over since it was read. A stale one is awaited and dropped (not aborted: its
    /// connection would be left inside the batch's transaction).
    async fn take_prefetch(
        &mut self,
        oid: u32,
        after: Option<&str>,
    ) -> Option<(Snapshot, Vec<IndexDoc>)> {
        let p = self.prefetch.take()?;
        let usable = p.oid == oid && p.epoch == self.backfill_epoch && after == Some(&p.after);
        match p.task.await {
            Ok(Ok(batch)) if usable => Some(batch),
            Ok(Ok(_)) => None,
            Ok(Err(e)) => {
                warn!(error = %e, "search: reading ahead failed; reading the batch again");
                self.prefetch_client = None;
                None
            }
            Err(_) => {
                self.prefetch_client = None;
                None
            }
        }
    }

    /// Starts reading the batch after `after` on the second connection.
    async fn start_prefetch(&mut self, oid: u32, meta: &SearchTable, after: String) {
        if self.prefetch_client.as_ref().is_none_or(|c| c.is_closed()) {
            match crate::side::connect(&self.ctx).await {
                Ok(c) => self.prefetch_client = Some(Arc::new(c)),
                Err(e) => {
                    warn!(error = %e, "search: no second connection; backfill reads without reading ahead");
                    return;
                }
            }
        }
        let Some(client) = self.prefetch_client.clone() else {
            return;
        };
        let sql = range_sql(meta, true);
        let meta = meta.clone();
        let key = after.clone();
        let task =
            tokio::spawn(async move { read_in_snapshot(&client, &meta, &sql, &[&key]).await });
        self.prefetch = Some(Prefetch {
            oid,
            epoch: self.backfill_epoch,
            after,
            task,
        });
    }

    /// Rows of `keys` in one snapshot that sees every transaction in `xids`.
    async fn fetch_keys(
        &mut self,
        meta: &SearchTable,
        keys: &[String],
        xids: &[u32],
    ) -> Result<(Snapshot, Vec<IndexDoc>), SearchError> {
        let sql = format!(
            "{} WHERE {} = ANY($1::text::{}[])",
            select_list(meta),
            src_column(&meta.key_column),
            meta.key_type
        );
        let literal = array_text(keys);
        let deadline = Instant::now() + VISIBILITY_WAIT;
        loop {
            let client = side(&mut self.client, &self.ctx).await?;
            let (snapshot, docs) = read_in_snapshot(client, meta, &sql, &[&literal]).await?;
            if xids.iter().all(|x| snapshot.sees(*x)) {
                return Ok((snapshot, docs));
            }
            if Instant::now() >= deadline {
                return Err(SearchError::Timeout("a delivered commit to become visible"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The next backfill batch after `after` (key order).
    async fn fetch_range(
        &mut self,
        meta: &SearchTable,
        after: Option<&str>,
    ) -> Result<(Snapshot, Vec<IndexDoc>), SearchError> {
        let client = side(&mut self.client, &self.ctx).await?;
        let sql = range_sql(meta, after.is_some());
        match after {
            None => read_in_snapshot(client, meta, &sql, &[]).await,
            Some(a) => read_in_snapshot(client, meta, &sql, &[&a]).await,
        }
    }
}

/// A backfill batch's statement: the first rows in key order, or (`after`) those past `$1`.
fn range_sql(meta: &SearchTable, after: bool) -> String {
    let key = src_column(&meta.key_column);
    let past = if after {
        format!(" WHERE {key} > $1::text::{}", meta.key_type)
    } else {
        String::new()
    };
    format!(
        "{}{past} ORDER BY {key} LIMIT {BACKFILL_BATCH}",
        select_list(meta)
    )
}

/// Empties an index and commits it with its backfill position reset.
async fn start_over(ix: &dyn SearchIndex, progress: &mut Progress) -> Result<(), SearchError> {
    progress.complete = false;
    progress.after_key = None;
    progress.backfilled_rows = 0;
    ix.clear().await?;
    ix.commit(progress).await
}

/// A broken table: its pending changes are dropped, sessions pass through, and a marker
/// records that the index owes a rebuild (read at the next start).
fn break_table(ctx: &ProxyContext, t: &mut Tracked, e: &SearchError) {
    if !t.broken {
        warn!(table = %t.shared.meta.name, error = %e, "search: store failed; text predicates go to postgres until it answers again and the index is rebuilt");
    }
    ctx.search.counters.store_errors.fetch_add(1, Relaxed);
    t.broken = true;
    t.rebuild = false;
    t.dirty.clear();
    t.fed.clear();
    t.next_check = Instant::now() + STORE_RETRY;
    t.shared.ready.store(false, Relaxed);
    t.shared.store_down.store(true, Relaxed);
    t.shared.set_status(format!("store unavailable: {e}"));
    if let Some(m) = &t.marker {
        let written = m
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(m, format!("{e}\n")));
        if let Err(io) = written {
            warn!(table = %t.shared.meta.name, error = %io, "search: cannot record that the index owes a rebuild; holding the feed's acknowledgement");
            t.marker = None;
        }
    }
}

/// Drops the old index of a table whose policy moved it to another store.
async fn destroy_if_moved(old: &Tracked, meta: &SearchTable) {
    if old.shared.meta.policy.store == meta.policy.store {
        return;
    }
    if let Some(ix) = &old.shared.index {
        if let Err(e) = ix.destroy().await {
            warn!(table = %meta.name, error = %e, "search: could not drop the index of the store the policy left");
        }
    }
}

impl Worker {
    async fn open_table(&mut self, meta: SearchTable, source: &str) -> Tracked {
        self.backfill_epoch += 1;
        let root = self.ctx.config.stores.embedded.dir.clone();
        let mut status = String::from("opening");
        let mut opened: Option<(Arc<dyn SearchIndex>, Progress)> = None;
        if let Some(why) = &meta.unusable {
            status = format!("not indexed: {why}");
        } else {
            let result = match meta.policy.store {
                SearchStoreKind::Embedded => {
                    TableIndex::open(&super::index::dir_for(&root, &meta), &meta, source)
                        .map(|(ix, p)| (Arc::new(ix) as Arc<dyn SearchIndex>, p))
                }
                SearchStoreKind::Elasticsearch => match self.elastic_client() {
                    Ok(client) => ElasticIndex::open(&client, &meta, source)
                        .await
                        .map(|(ix, p)| (Arc::new(ix) as Arc<dyn SearchIndex>, p)),
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(found) => opened = Some(found),
                Err(e) => status = format!("not indexed: {e}"),
            }
        }
        let (index, progress) = match opened {
            Some((ix, p)) => (Some(ix), p),
            None => (None, Progress::default()),
        };
        let marker = index.as_ref().map(|ix| {
            let tag = xxhash_rust::xxh3::xxh3_64(ix.location().as_bytes());
            root.join(format!("owes-rebuild-{tag:016x}"))
        });
        let owes_rebuild = marker.as_ref().is_some_and(|m| m.exists());
        let resumed = progress.after_key.is_some() || progress.complete;
        if let Some(ix) = &index {
            info!(table = %meta.name, store = ix.store(), location = %ix.location(), resumed, complete = progress.complete, rows = progress.backfilled_rows, owes_rebuild, "search: index opened");
            status = if progress.complete && !owes_rebuild {
                "ready".into()
            } else {
                "backfill pending".into()
            };
        } else {
            warn!(table = %meta.name, %status, "search: table not indexed");
        }
        let shared = Arc::new(IndexedTable {
            ready: std::sync::atomic::AtomicBool::new(
                index.is_some() && progress.complete && !owes_rebuild,
            ),
            store_down: std::sync::atomic::AtomicBool::new(false),
            meta,
            index,
            progress: Mutex::new(progress.clone()),
            status: Mutex::new(status),
        });
        Tracked {
            shared,
            progress,
            dirty: HashMap::new(),
            fed: HashMap::new(),
            // An index that missed acknowledged changes starts over (the marker goes once
            // the rebuild has begun).
            rebuild: false,
            last_commit: Instant::now(),
            dirty_lsn: 0,
            broken: owes_rebuild,
            next_check: Instant::now(),
            marker,
        }
    }

    fn elastic_client(&mut self) -> Result<ElasticClient, SearchError> {
        if let Some(c) = &self.elastic {
            return Ok(c.clone());
        }
        let settings = self
            .ctx
            .config
            .stores
            .elasticsearch
            .as_ref()
            .ok_or_else(|| {
                SearchError::Elastic("[stores.elasticsearch] is not configured".into())
            })?;
        let client = ElasticClient::new(settings)?;
        self.elastic = Some(client.clone());
        Ok(client)
    }
}

fn publish_progress(t: &Tracked) {
    *t.shared.progress.lock().unwrap_or_else(|e| e.into_inner()) = t.progress.clone();
}

/// The search feed's slot and publication: the cache's names with `_search` appended.
fn search_feed_settings(ctx: &ProxyContext) -> crate::config::ChangeFeedSettings {
    let mut s = ctx.config.change_feed.clone();
    s.slot = format!("{}_search", s.slot);
    s.publication = format!("{}_search", s.publication);
    s
}

/// `SELECT src.key::text AS c0, columns.., lexemes.. FROM table AS src`. Every output
/// column gets a name of its own and every reference is qualified with `src`: an output
/// column named like the key would otherwise be what `ORDER BY "id"` sorts by (its text,
/// not the key's order).
fn select_list(meta: &SearchTable) -> String {
    let mut cols = vec![src_column(&meta.key_column) + "::text"];
    for c in &meta.columns {
        cols.push(src_column(c) + "::text");
    }
    if meta.has_lexemes() {
        for c in &meta.columns {
            for (i, cfg) in FTS_CONFIGS.iter().enumerate() {
                // A configuration no query may use costs Postgres nothing.
                cols.push(if meta.indexes_config(i) {
                    format!(
                        "tsvector_to_array(to_tsvector('{cfg}'::regconfig, {}))",
                        src_column(c)
                    )
                } else {
                    "NULL::text[]".to_string()
                });
            }
        }
    }
    let named: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} AS c{i}"))
        .collect();
    format!(
        "SELECT {} FROM {} AS src",
        named.join(", "),
        meta.name.quoted()
    )
}

/// `src."column"`.
fn src_column(column: &str) -> String {
    format!("src.{}", quote_ident(column))
}

/// An array literal (`{"a","b"}`) of key texts, for `$1::text::<type>[]`.
fn array_text(keys: &[String]) -> String {
    let quoted = super::rewrite::array_literal(keys);
    // array_literal gives an SQL string literal; as a parameter, the unquoted text.
    quoted[1..quoted.len() - 1].replace("''", "'")
}

async fn read_in_snapshot(
    client: &Client,
    meta: &SearchTable,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<(Snapshot, Vec<IndexDoc>), SearchError> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let result = async {
        let row = client
            .query_one("SELECT pg_current_snapshot()::text", &[])
            .await?;
        let text: String = row.get(0);
        let snapshot = Snapshot::parse(&text)
            .ok_or(SearchError::Unexpected("pg_current_snapshot() output"))?;
        let rows = client.query(sql, params).await?;
        let n = meta.columns.len();
        let mut docs = Vec::with_capacity(rows.len());
        for r in rows {
            let key: String = r.try_get(0)?;
            let texts: Vec<Option<String>> =
                (0..n).map(|i| r.try_get(1 + i)).collect::<Result<_, _>>()?;
            let mut lexemes = Vec::new();
            if meta.has_lexemes() {
                for i in 0..n {
                    let mut per = Vec::new();
                    for cfg in 0..FTS_CONFIGS.len() {
                        let v: Option<Vec<String>> =
                            r.try_get(1 + n + i * FTS_CONFIGS.len() + cfg)?;
                        per.push(v.unwrap_or_default());
                    }
                    lexemes.push(per);
                }
            }
            docs.push(IndexDoc {
                key,
                texts,
                lexemes,
            });
        }
        Ok::<_, SearchError>((snapshot, docs))
    }
    .await;
    let end = client.batch_execute("COMMIT").await;
    let out = result?;
    end?;
    Ok(out)
}
