//! Applies the change feed's transactions to the stores, in commit order.

use super::feed_image;
use super::profile::{OutputProfile, ProfileRegistry};
use super::schema::{Budget, TableMeta};
use super::store::{Applied, CachedRow, FeedImage};
use crate::cdc::event::{Change, OutputSettings};
use crate::cdc::{ChangeKind, FeedEvent, Lsn};
use crate::context::ProxyContext;
use std::collections::HashMap;
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
    let mut profiles = FeedProfile::default();
    while let Some(first) = rx.recv().await {
        let mut events = vec![first];
        while events.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => events.push(e),
                Err(_) => break,
            }
        }
        // The ticket before the descriptions (see `refresh`): images built from a
        // description a flush has since replaced are not stored.
        let ticket = cache.store.begin_fill();
        let schema = cache.schema();
        let mut l2_keys: Vec<(u32, String, Option<u32>)> = Vec::new();
        let mut l2_new_epoch = false;
        let mut applied_txs: Vec<(Lsn, std::time::SystemTime)> = Vec::new();
        for event in events {
            match event {
                FeedEvent::Commit(tx) => {
                    let feed_profile = tx
                        .output
                        .as_ref()
                        .and_then(|o| profiles.resolve(o, &cache.profiles));
                    let mut applied = Vec::new();
                    let mut images = Images::default();
                    for ch in &tx.changes {
                        if let Some(meta) = schema.table(&ch.table.schema, &ch.table.name) {
                            let keys = changed_keys(meta, ch);
                            if let Some((id, profile)) = &feed_profile {
                                images.note(meta, ch, &keys, *id, profile);
                            }
                            applied.extend(keys);
                        }
                    }
                    if !applied.is_empty() {
                        // Only transactions that committed after the table became ready:
                        // an earlier one (still queued when a DDL replaced the table, or
                        // its columns) was decoded against what the table was then.
                        let images = images.into_stored(|table, key| {
                            cache
                                .ready_from
                                .get(&table)
                                .is_some_and(|from| tx.commit_lsn >= *from)
                                && cache.is_placed(table, key)
                        });
                        let profiles = cache.profiles.all();
                        cache
                            .store
                            .apply(tx.xid, &applied, &profiles, images, &ticket);
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

/// The profile of the feed session's text values, remembered per session (sessions
/// registering profiles later are noticed: an unregistered one is looked up again).
#[derive(Default)]
struct FeedProfile {
    /// The last session's settings and the profile found for them.
    last: Option<(Arc<OutputSettings>, Option<Resolved>)>,
}

/// A profile's number and its settings.
type Resolved = (u32, Arc<OutputProfile>);

impl FeedProfile {
    fn resolve(
        &mut self,
        output: &Arc<OutputSettings>,
        registry: &ProfileRegistry,
    ) -> Option<Resolved> {
        if let Some((o, found @ Some(_))) = &self.last {
            if Arc::ptr_eq(o, output) {
                return found.clone();
            }
        }
        let found = feed_image::profile_of(output).and_then(|p| {
            let id = registry.find(&p)?;
            Some((id, Arc::new(p)))
        });
        self.last = Some((Arc::clone(output), found.clone()));
        found
    }
}

/// One transaction's images, per key: the row after its last change, or nothing (a change
/// the feed's text does not describe exactly, or a key touched more than once).
#[derive(Default)]
struct Images {
    by_key: HashMap<(u32, String), Option<Pending>>,
}

/// An image to store: the row (`None`: no row), its policy's budget, the profile number.
type Pending = (Option<CachedRow>, Arc<Budget>, u32);

impl Images {
    /// Notes what `change` (whose keys are `keys`) leaves under `profile` (number `id`).
    fn note(
        &mut self,
        meta: &TableMeta,
        change: &Change,
        keys: &[Applied],
        id: u32,
        profile: &OutputProfile,
    ) {
        let new_key = new_key_text(meta, change).and_then(|t| meta.key_type.from_output(t));
        // An update that keeps its key names it twice (old and new): one touch.
        let mut named: Vec<&str> = Vec::with_capacity(2);
        for applied in keys {
            match applied {
                Applied::Table(table) => self.by_key.retain(|(t, _), _| t != table),
                Applied::Key(_, key) if named.contains(&key.as_str()) => {}
                Applied::Key(table, key) => {
                    named.push(key);
                    let image = if Some(key) == new_key.as_ref() {
                        feed_image::image(meta, change, profile).map(Some)
                    } else {
                        // The old key of a delete, or of an update that moved the row.
                        Some(None)
                    };
                    let slot = (*table, key.clone());
                    let value = match self.by_key.contains_key(&slot) {
                        true => None,
                        false => image.map(|row| (row, Arc::clone(&meta.budget), id)),
                    };
                    self.by_key.insert(slot, value);
                }
            }
        }
    }

    /// The images to store: of keys `keep` accepts (placed, of a table being served).
    fn into_stored(self, keep: impl Fn(u32, &str) -> bool) -> Vec<FeedImage> {
        self.by_key
            .into_iter()
            .filter_map(|((table, key), image)| {
                let (row, budget, profile) = image?;
                keep(table, &key).then_some(FeedImage {
                    table,
                    key,
                    profile,
                    row,
                    budget,
                })
            })
            .collect()
    }
}

/// The key column's text in the change's new row, if it has one.
fn new_key_text<'a>(meta: &TableMeta, ch: &'a Change) -> Option<&'a str> {
    let key_col = &meta.columns[meta.key_index].name;
    ch.new_row
        .as_ref()?
        .iter()
        .find(|(c, _)| c == key_col)
        .and_then(|(_, v)| v.as_text())
}

/// The keys a change touches (old and new key of an update), or the whole table.
fn changed_keys(meta: &TableMeta, ch: &Change) -> Vec<Applied> {
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
            let new = new_key_text(meta, ch);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::event::{TableName, Value};

    fn meta() -> TableMeta {
        TableMeta::for_tests(9, &[("id", 23), ("v", 25)])
    }

    fn profile() -> OutputProfile {
        OutputProfile {
            values: [
                "UTC".into(),
                "ISO, MDY".into(),
                "postgres".into(),
                "1".into(),
                "hex".into(),
                "C".into(),
            ],
        }
    }

    fn change(kind: ChangeKind, old_key: &str, new: Option<(&str, &str)>) -> Change {
        Change {
            table: TableName::new("public", "t"),
            kind,
            key: vec![("id".into(), Some(old_key.into()))],
            new_types: new.map_or(vec![], |_| vec![23, 25]),
            new_row: new.map(|(id, v)| {
                vec![
                    ("id".into(), Value::Text(id.into())),
                    ("v".into(), Value::Text(v.into())),
                ]
            }),
        }
    }

    /// What the transaction's images leave per key: `Some(Some(v))` a row with `v`,
    /// `Some(None)` no row.
    fn outcome(changes: &[Change]) -> Vec<(String, Option<String>)> {
        let m = meta();
        let p = profile();
        let mut images = Images::default();
        for ch in changes {
            let keys = changed_keys(&m, ch);
            images.note(&m, ch, &keys, 0, &p);
        }
        let mut out: Vec<(String, Option<String>)> = images
            .into_stored(|_, _| true)
            .into_iter()
            .map(|i| {
                let v = i.row.map(|r| {
                    String::from_utf8(r.text[1].as_deref().unwrap_or_default().to_vec()).unwrap()
                });
                (i.key, v)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_transaction_leaves_each_key_it_touched_once_as_its_last_change_made_it() {
        let upd = |k: &str, v: &str| change(ChangeKind::Update, k, Some((k, v)));
        assert_eq!(
            outcome(&[upd("1", "a")]),
            vec![("1".into(), Some("a".into()))]
        );
        // Touched twice: no image (with a deferrable key two rows may have shared it).
        assert_eq!(outcome(&[upd("1", "a"), upd("1", "b")]), vec![]);
        // A row moved to another key: the old key has no row.
        let moved = change(ChangeKind::Update, "1", Some(("2", "m")));
        assert_eq!(
            outcome(&[moved]),
            vec![("1".into(), None), ("2".into(), Some("m".into()))]
        );
        let swap = [
            change(ChangeKind::Update, "1", Some(("2", "x"))),
            change(ChangeKind::Update, "2", Some(("1", "y"))),
        ];
        assert_eq!(outcome(&swap), vec![]);
        assert_eq!(
            outcome(&[change(ChangeKind::Delete, "3", None)]),
            vec![("3".into(), None)]
        );
        // A truncate forgets what came before it in the transaction.
        let truncate = Change {
            table: TableName::new("public", "t"),
            kind: ChangeKind::Truncate,
            key: vec![],
            new_row: None,
            new_types: vec![],
        };
        assert_eq!(
            outcome(&[
                upd("1", "a"),
                truncate,
                change(ChangeKind::Insert, "5", Some(("5", "i")))
            ]),
            vec![("5".into(), Some("i".into()))]
        );
        // A change the feed's text does not describe exactly removes the key's image.
        let mut toast = upd("1", "a");
        if let Some(row) = toast.new_row.as_mut() {
            row[1].1 = Value::UnchangedToast;
        }
        assert_eq!(outcome(&[toast]), vec![]);
    }
}
