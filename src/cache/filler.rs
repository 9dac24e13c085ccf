//! Fetches placed rows in batches per (table, output profile), into L1 and Redis.

use super::fill::{self, MAX_BATCH};
use super::profile::OutputProfile;
use super::schema::TableMeta;
use super::service::{FillRequest, FILL_DEADLINE, FILL_GATHER};
use super::CacheError;
use crate::context::ProxyContext;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
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
    // A moment for more requests to arrive: one fetch of many keys costs Postgres far less
    // than many fetches of one (writes make hot keys miss in bursts).
    while let Some(batch) = next_round(&mut rx, &mut shutdown, FILL_GATHER, 4 * MAX_BATCH).await {
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
                    after_failure(&mut connections, profile, &e);
                    debug!(error = %e, "cache: fill failed");
                }
            }
        }
        for r in batch {
            cache.pending.remove(&r);
        }
    }
}

/// How long one of the migrator's fetches may run in Postgres.
const FILL_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The next round of requests: waits for one (`None` at shutdown, or once the channel
/// closed), then `gather` for more, then takes what is queued, `max` at most.
pub(super) async fn next_round<T>(
    rx: &mut mpsc::Receiver<T>,
    shutdown: &mut watch::Receiver<bool>,
    gather: Duration,
    max: usize,
) -> Option<Vec<T>> {
    let first = tokio::select! {
        r = rx.recv() => r?,
        _ = shutdown.changed() => return None,
    };
    if !gather.is_zero() {
        tokio::time::sleep(gather).await;
    }
    let mut round = vec![first];
    while round.len() < max {
        match rx.try_recv() {
            Ok(r) => round.push(r),
            Err(_) => break,
        }
    }
    Some(round)
}

/// A profile's connection and the fetch statements prepared on it, per (table, layout).
pub(super) struct FillConnection {
    pub(super) client: Client,
    statements: HashMap<(u32, u64), tokio_postgres::Statement>,
}

impl FillConnection {
    /// The connection for `profile` in `connections`, opened (with the profile's settings
    /// and `statement_timeout`) if there is none or it closed.
    pub(super) async fn for_profile<'a>(
        ctx: &ProxyContext,
        connections: &'a mut HashMap<u32, FillConnection>,
        profile: u32,
        settings: &OutputProfile,
        statement_timeout: Duration,
    ) -> Result<&'a mut FillConnection, CacheError> {
        let conn = match connections.entry(profile) {
            std::collections::hash_map::Entry::Occupied(o) if !o.get().client.is_closed() => {
                o.into_mut()
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                o.insert(FillConnection::open(ctx, settings, statement_timeout).await?);
                o.into_mut()
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(FillConnection::open(ctx, settings, statement_timeout).await?)
            }
        };
        Ok(conn)
    }

    async fn open(
        ctx: &ProxyContext,
        settings: &OutputProfile,
        statement_timeout: Duration,
    ) -> Result<Self, CacheError> {
        let client = crate::side::connect(ctx).await?;
        // A table locked by DDL fails the fetch quickly (its statements go to Postgres)
        // instead of holding this connection, and the fetches queued behind it, until then.
        // Read committed whatever the role's defaults say (a serializable deferrable
        // default would make each fetch wait for a safe snapshot).
        let setup = format!(
            "{}SET lock_timeout TO '100ms'; SET statement_timeout TO '{}ms'; \
             SET default_transaction_isolation TO 'read committed';",
            fill::profile_settings_sql(settings),
            statement_timeout.as_millis()
        );
        client.batch_execute(&setup).await?;
        Ok(FillConnection {
            client,
            statements: HashMap::new(),
        })
    }

    /// The fetch statement ([`fill::fetch_sql`]) of `meta`'s layout, prepared on first use.
    /// Its result columns must be the ones `meta` describes: a table changed behind the
    /// proxy (within the 1 s before descriptions are re-read) fails the fetch instead of
    /// giving values of other types under the old description.
    pub(super) async fn statement(
        &mut self,
        meta: &TableMeta,
    ) -> Result<tokio_postgres::Statement, CacheError> {
        if let Some(s) = self.statements.get(&(meta.oid, meta.layout)) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(&fill::fetch_sql(meta)).await?;
        let columns = s.columns();
        let n = meta.columns.len();
        let matches = columns.len() == 1 + 2 * n
            && meta
                .columns
                .iter()
                .zip(&columns[1..=n])
                .all(|(m, c)| c.type_().oid() == m.type_oid);
        if !matches {
            return Err(CacheError::Unexpected("table columns changed"));
        }
        self.statements.insert((meta.oid, meta.layout), s.clone());
        Ok(s)
    }
}

/// After a failed fetch on `profile`'s connection: a connection that may still be busy or
/// broken (timeout, I/O) is dropped; after an error Postgres answered, the connection is
/// fine but its prepared statements may not be ("cached plan must not change result
/// type"), so they are prepared again. Reconnecting on every error would open a connection
/// per round while a table stays locked.
pub(super) fn after_failure(
    connections: &mut HashMap<u32, FillConnection>,
    profile: u32,
    error: &CacheError,
) {
    let answered = matches!(error, CacheError::Postgres(e) if e.as_db_error().is_some());
    match connections.get_mut(&profile) {
        Some(c) if answered => c.statements.clear(),
        _ => {
            connections.remove(&profile);
        }
    }
}

async fn fill_batch(
    ctx: &ProxyContext,
    connections: &mut HashMap<u32, FillConnection>,
    table: u32,
    profile: u32,
    keys: &[Box<str>],
) -> Result<(), CacheError> {
    let cache = &ctx.cache;
    // The ticket before the descriptions (see `refresh`): rows read with a description a
    // flush has since replaced are not stored.
    let ticket = cache.store.begin_fill();
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
    let conn =
        FillConnection::for_profile(ctx, connections, profile, &p, FILL_STATEMENT_TIMEOUT).await?;
    let statement = conn.statement(meta).await?;
    let client = &conn.client;
    // Redis generations are read before the snapshot is taken (see cache::l2).
    let l2 = cache.l2_for(meta);
    let l2_meta = match l2 {
        Some(l2) => l2.read_meta(table, &keys).await.ok(),
        None => None,
    };
    let fetched = tokio::time::timeout(FILL_DEADLINE, fill::fetch(client, &statement, meta, &keys))
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
