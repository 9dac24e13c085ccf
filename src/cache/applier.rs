//! Applies the change feed's transactions to the stores, in commit order.

use super::schema::TableMeta;
use super::store::Applied;
use crate::cdc::{ChangeKind, FeedEvent, Lsn};
use crate::context::ProxyContext;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::warn;

/// Applies the feed's transactions to the store, in commit order, then acknowledges them.
/// Whatever is queued is taken together, so Redis gets one pipelined round trip per batch
/// rather than one per transaction (a slow feed closes the freshness gate).
pub(super) async fn applier(ctx: Arc<ProxyContext>, mut rx: mpsc::Receiver<FeedEvent>) {
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
