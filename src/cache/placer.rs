//! Turns the statistics into placed keys: demotes what is no longer placed and asks for
//! fills of what is placed but missing.

use super::service::ACTIVE_PROFILE_MS;
use super::store::EntryKey;
use super::PLACE_INTERVAL;
use crate::context::ProxyContext;
use crate::placement::planner::{self, Action, HotKeyInput};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;

/// Recomputes the placement from the statistics: demotes what is no longer placed and asks
/// for fills of what is placed but missing.
pub(super) async fn placer(ctx: Arc<ProxyContext>, mut shutdown: watch::Receiver<bool>) {
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
