//! Turns the statistics into placed keys: demotes what is no longer placed and asks for
//! fills of what is placed but missing.

use super::service::ACTIVE_PROFILE_MS;
use super::store::EntryKey;
use super::PLACE_INTERVAL;
use crate::context::ProxyContext;
use crate::placement::planner;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// New inputs (a statistics snapshot each second, the schema reloaded each second, new
/// policies) are planned only once this many times as long as the last placement took has
/// passed: with 100k keys per table a placement takes tens of milliseconds, and this keeps
/// the placer near 2 % of a core. (A late placement costs at most a few fills: what is
/// served is checked against the current schema and policies on every read.)
const RECOMPUTE_COST_FACTOR: u32 = 50;

/// Placed keys per table oid, as the cache stores them.
type Placed = HashMap<u32, HashSet<Box<str>>>;

/// What a placement is computed from.
type Inputs = (
    Arc<crate::stats::Snapshot>,
    Arc<crate::placement::PolicySet>,
    Arc<super::schema::CacheSchema>,
);

/// Recomputes the placement from the statistics: demotes what is no longer placed and asks
/// for fills of what is placed but missing.
pub(super) async fn placer(ctx: Arc<ProxyContext>, mut shutdown: watch::Receiver<bool>) {
    let cache = &ctx.cache;
    // The placement last computed, and what it was computed from (statistics snapshot,
    // policies, schema: each replaced as a whole when it changes), so a pass that finds
    // them unchanged does nothing. (Held, not just their addresses compared, so an address
    // cannot be reused meanwhile.)
    let mut last: Option<Inputs> = None;
    let (mut computed_at, mut took) = (Instant::now(), Duration::ZERO);
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
        if schema.is_empty() {
            continue;
        }
        let policies = ctx.policies.current();
        let recomputed = match &last {
            None => true,
            Some((s, p, c)) => {
                !(Arc::ptr_eq(s, &stats) && Arc::ptr_eq(p, &policies) && Arc::ptr_eq(c, &schema))
                    && computed_at.elapsed() >= took * RECOMPUTE_COST_FACTOR
            }
        };
        if !recomputed {
            continue;
        }
        computed_at = Instant::now();
        // Hundreds of thousands of keys take a noticeable time to plan, demote and check:
        // on the blocking pool, so no runtime worker (and no session on it) waits for it.
        let inputs = (stats, policies, schema);
        let pass = {
            let ctx = Arc::clone(&ctx);
            let inputs = inputs.clone();
            tokio::task::spawn_blocking(move || place(&ctx, &inputs))
        };
        match pass.await {
            Ok(()) => last = Some(inputs),
            Err(e) => tracing::warn!(error = %e, "cache: placement pass failed"),
        }
        took = computed_at.elapsed();
    }
}

/// One placement: plans the placed keys, demotes what is no longer placed, and asks for
/// fills of what is placed but missing (new keys; refills of changed ones also come from
/// the misses that find them gone).
fn place(ctx: &ProxyContext, (stats, policies, schema): &Inputs) {
    let cache = &ctx.cache;
    let mut placed: Placed = HashMap::new();
    for (table, keys) in planner::promoted_keys(policies, stats) {
        let Some((s, n)) = table.split_once('.') else {
            continue;
        };
        let Some(meta) = schema.table(s, n).filter(|m| m.unservable.is_none()) else {
            continue;
        };
        let set = placed.entry(meta.oid).or_default();
        for key in keys {
            if let Some(k) = meta.key_type.from_output(key) {
                set.insert(k.into());
            }
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
