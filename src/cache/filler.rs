//! Fetches placed rows in batches per (table, output profile), into L1 and Redis.

use super::fill::{self, MAX_BATCH};
use super::profile::OutputProfile;
use super::service::{FillRequest, FILL_DEADLINE, FILL_GATHER};
use super::CacheError;
use crate::context::ProxyContext;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;
use tracing::debug;

/// Fetches requested rows in batches per (table, profile).
pub(super) async fn filler(
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
