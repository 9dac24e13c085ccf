//! Keeps the table descriptions current, starts the change feed and keeps its table list,
//! and marks tables ready once the feed covers them.

use super::schema::{self, Wanted};
use super::trust::Generation;
use super::{CacheError, SCHEMA_REFRESH};
use crate::cdc::{ChangeFeed, FeedState, TableName};
use crate::context::ProxyContext;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_postgres::Client;
use tracing::{debug, info, warn};

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

pub(super) async fn refresher(ctx: Arc<ProxyContext>, mut shutdown: watch::Receiver<bool>) {
    let cache = &ctx.cache;
    let mut client: Option<Client> = None;
    let mut feed_rx_taken = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Taken before anything is read: DDL through the proxy after this point keeps the
        // descriptions untrusted until the next round (see `trust`).
        let generation = cache.schema_trust.generation();
        let wanted = wanted_tables(&ctx);
        if wanted.is_empty() && cache.feed.get().is_none() {
            // Nothing to cache: no connection, no slot.
            cache.schema_trust.trust_if_unchanged(generation);
        } else if let Err(e) = refresh_once(
            &ctx,
            &mut client,
            &wanted,
            generation,
            &mut feed_rx_taken,
            &shutdown,
        )
        .await
        {
            warn!(error = %e, "cache: reading table descriptions failed; serving nothing until it works");
            client = None;
            if cache.schema_trust.distrust() {
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
    generation: Generation,
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
    let changed: Vec<u32> = old
        .tables()
        .filter(|t| {
            loaded
                .table(&t.schema, &t.name)
                .is_none_or(|n| !n.same_layout(t))
        })
        .map(|t| {
            info!(table = %t.qualified(), "cache: table description changed; flushing it");
            t.oid
        })
        .collect();
    let defaults_changed = loaded.defaults != old.defaults && !old.is_empty();
    let servable: Vec<TableName> = loaded
        .tables()
        .filter(|t| t.unservable.is_none())
        .map(|t| TableName::new(t.schema.clone(), t.name.clone()))
        .collect();
    cache.has_tables.store(!servable.is_empty(), Relaxed);
    // In this order: sessions stop serving the changed tables, the new descriptions are
    // installed, then the tables are flushed. Whoever writes images takes its store ticket
    // before it reads the descriptions (`L1Store::begin_fill`), so images built from an old
    // description are either dropped (the flush came after the ticket) or removed by the
    // flush (they got in before it).
    for oid in &changed {
        cache.ready_from.remove(oid);
    }
    *cache.schema.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
    for oid in changed {
        cache.store.flush_table(oid);
    }
    if defaults_changed {
        cache.store.flush_all();
    }
    if !cache.schema_trust.trust_if_unchanged(generation) {
        // DDL went through the proxy while the catalog was read: what was read may predate
        // its commit. Its notice has already woken the next round.
        debug!("cache: table descriptions changed while being read; reading them again");
    }

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
                tokio::spawn(super::applier::applier(Arc::clone(ctx), rx));
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
            for t in schema.tables() {
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
