//! What the proxy knows of the upstream database's schema: the primary key of each table,
//! read over one kept side connection (the upstream URL's user and database) at start-up,
//! every [`REFRESH_EVERY`], and soon after DDL passes through the proxy (at most once per
//! [`MIN_RELOAD_GAP`]).
//!
//! Statistics record a key only when the statement names it by the table's key column (the
//! policy's `key`, else the primary key found here), so `WHERE email = 'x'` never counts as
//! a hot key. The key column's type lets the session read keys bound in binary format.
//! Until the first load succeeds (or when the side connection cannot be made), only policy
//! keys are known, and binary-bound keys of those are not decoded.

use crate::context::ProxyContext;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

/// How often the catalog is re-read even without DDL.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// After a DDL statement, wait this long (more DDL often follows) before re-reading.
const DDL_SETTLE: Duration = Duration::from_millis(200);

/// Loads are at least this far apart, however much DDL flows through.
const MIN_RELOAD_GAP: Duration = Duration::from_secs(2);

/// A table's single-column primary key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyColumn {
    pub name: Box<str>,
    pub type_oid: u32,
}

/// One load of the catalog.
#[derive(Debug, Default)]
pub struct CatalogSnapshot {
    /// schema → table → key column (tables whose primary key has one column).
    keys: HashMap<Box<str>, HashMap<Box<str>, KeyColumn>>,
    /// False until a load succeeded.
    pub loaded: bool,
}

impl CatalogSnapshot {
    pub fn primary_key(&self, schema: &str, table: &str) -> Option<&KeyColumn> {
        self.keys.get(schema)?.get(table)
    }

    /// `(schema, table)` of every table with a single-column primary key.
    pub fn table_names(&self) -> Vec<(String, String)> {
        self.keys
            .iter()
            .flat_map(|(s, t)| t.keys().map(move |n| (s.to_string(), n.to_string())))
            .collect()
    }

    pub fn tables(&self) -> usize {
        self.keys.values().map(HashMap::len).sum()
    }

    /// Builds a snapshot from `(schema, table, column, type oid)` rows.
    pub fn from_rows(rows: impl IntoIterator<Item = (String, String, String, u32)>) -> Self {
        let mut keys: HashMap<Box<str>, HashMap<Box<str>, KeyColumn>> = HashMap::new();
        for (schema, table, column, type_oid) in rows {
            keys.entry(schema.into()).or_default().insert(
                table.into(),
                KeyColumn {
                    name: column.into(),
                    type_oid,
                },
            );
        }
        CatalogSnapshot { keys, loaded: true }
    }
}

/// The current [`CatalogSnapshot`], swapped whole on each load.
#[derive(Debug, Default)]
pub struct Catalog {
    current: RwLock<Arc<CatalogSnapshot>>,
    generation: AtomicU64,
    changed: Notify,
}

impl Catalog {
    pub fn snapshot(&self) -> Arc<CatalogSnapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Bumped on every load; sessions compare it to skip re-reading an unchanged snapshot.
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    pub fn replace(&self, snapshot: CatalogSnapshot) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        self.generation.fetch_add(1, Relaxed);
    }

    /// A statement that may change the schema went through: re-read soon.
    pub fn schema_changed(&self) {
        self.changed.notify_one();
    }
}

const KEYS_QUERY: &str = "\
SELECT n.nspname::text, c.relname::text, a.attname::text, a.atttypid::oid
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
WHERE i.indisprimary AND i.indnkeyatts = 1
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'";

/// Reads the primary keys once, over `client` (connected first if `None`, and kept for the
/// next load; dropped on error so the next load reconnects).
pub async fn load(
    ctx: &ProxyContext,
    client: &mut Option<tokio_postgres::Client>,
) -> Result<CatalogSnapshot, crate::side::SideError> {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        *client = Some(crate::side::connect(ctx).await?);
    }
    let Some(c) = client.as_ref() else {
        return Ok(CatalogSnapshot::default());
    };
    let rows = match c.query(KEYS_QUERY, &[]).await {
        Ok(rows) => rows,
        Err(e) => {
            *client = None;
            return Err(e.into());
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push((
            r.try_get::<_, String>(0)?,
            r.try_get::<_, String>(1)?,
            r.try_get::<_, String>(2)?,
            r.try_get::<_, u32>(3)?,
        ));
    }
    Ok(CatalogSnapshot::from_rows(out))
}

/// The background task: load now, then on DDL or every [`REFRESH_EVERY`]; stops on shutdown.
pub async fn run(ctx: Arc<ProxyContext>, mut shutdown: watch::Receiver<bool>) {
    let mut failures = 0u32;
    let mut client = None;
    loop {
        let started = tokio::time::Instant::now();
        match load(&ctx, &mut client).await {
            Ok(s) => {
                if failures > 0 || ctx.catalog.generation() == 0 {
                    info!(tables = s.tables(), "catalog loaded: primary keys known");
                } else {
                    debug!(tables = s.tables(), "catalog refreshed");
                }
                failures = 0;
                ctx.catalog.replace(s);
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    warn!(error = %e, "cannot read the upstream catalog: hot keys are recorded only for policy `key` columns until it can be read");
                }
            }
        }
        // Retry sooner while failing; otherwise wait for DDL or the periodic refresh.
        let wait = if failures > 0 {
            Duration::from_secs(5)
        } else {
            REFRESH_EVERY
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.catalog.changed.notified() => {
                tokio::time::sleep(DDL_SETTLE).await;
                tokio::time::sleep_until(started + MIN_RELOAD_GAP).await;
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
    }
}
