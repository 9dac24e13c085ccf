//! What the proxy knows of the upstream database's schema: the primary key of each table,
//! read over one kept side connection (the upstream URL's user and database) at start-up,
//! every [`REFRESH_EVERY`], and soon after DDL passes through the proxy (at most once per
//! [`MIN_RELOAD_GAP`]).
//!
//! Statistics record a key only when the statement names it by the table's key column (the
//! policy's `key`, else the primary key found here), so `WHERE email = 'x'` never counts as
//! a hot key. The key column's type lets the session read keys bound in binary format, so
//! each load also reads the types of the columns that policies name as `key` (a policy
//! reload asks for a load, like DDL does). Until the first load succeeds (or when the side
//! connection cannot be made), only policy keys are known, and binary-bound keys of those
//! are not decoded.

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

/// schema → table → columns.
type ColumnsByTable<T> = HashMap<Box<str>, HashMap<Box<str>, T>>;

/// One load of the catalog.
#[derive(Debug, Default)]
pub struct CatalogSnapshot {
    /// Tables whose primary key has one column, and that column.
    keys: ColumnsByTable<KeyColumn>,
    /// The columns named as a policy `key` at the load, in every table that has one.
    policy_key_columns: ColumnsByTable<Vec<KeyColumn>>,
    /// False until a load succeeded.
    pub loaded: bool,
}

impl CatalogSnapshot {
    pub fn primary_key(&self, schema: &str, table: &str) -> Option<&KeyColumn> {
        self.keys.get(schema)?.get(table)
    }

    /// The type of `column` of `schema.table`, if the column is the table's primary key or
    /// was named as a policy `key` when the catalog was last read.
    pub fn key_type(&self, schema: &str, table: &str, column: &str) -> Option<u32> {
        if let Some(pk) = self
            .primary_key(schema, table)
            .filter(|pk| *pk.name == *column)
        {
            return Some(pk.type_oid);
        }
        self.policy_key_columns
            .get(schema)?
            .get(table)?
            .iter()
            .find(|c| *c.name == *column)
            .map(|c| c.type_oid)
    }

    /// Adds `(schema, table, column, type oid)` rows of policy key columns.
    pub fn with_policy_key_columns(
        mut self,
        rows: impl IntoIterator<Item = (String, String, String, u32)>,
    ) -> Self {
        for (schema, table, column, type_oid) in rows {
            self.policy_key_columns
                .entry(schema.into())
                .or_default()
                .entry(table.into())
                .or_default()
                .push(KeyColumn {
                    name: column.into(),
                    type_oid,
                });
        }
        self
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
        let mut keys: ColumnsByTable<KeyColumn> = HashMap::new();
        for (schema, table, column, type_oid) in rows {
            keys.entry(schema.into()).or_default().insert(
                table.into(),
                KeyColumn {
                    name: column.into(),
                    type_oid,
                },
            );
        }
        CatalogSnapshot {
            keys,
            policy_key_columns: HashMap::new(),
            loaded: true,
        }
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

/// The type of every column with one of the names `$1` (the policies' `key` columns), in
/// the tables and views a statement can read.
const POLICY_KEY_COLUMNS_QUERY: &str = "\
SELECT n.nspname::text, c.relname::text, a.attname::text, a.atttypid::oid
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.attname::text = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'";

/// `(schema, table, column, type oid)` rows.
type ColumnRows = Vec<(String, String, String, u32)>;

/// Reads the primary keys and the policy key columns once, over `client` (connected first
/// if `None`, and kept for the next load; dropped on error so the next load reconnects).
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
    let mut key_names: Vec<String> = ctx
        .policies
        .current()
        .policies
        .iter()
        .filter_map(|p| p.key.clone())
        .collect();
    key_names.sort();
    key_names.dedup();
    let loaded = async {
        let keys = column_rows(c.query(KEYS_QUERY, &[]).await?)?;
        let policy_keys = if key_names.is_empty() {
            Vec::new()
        } else {
            column_rows(c.query(POLICY_KEY_COLUMNS_QUERY, &[&key_names]).await?)?
        };
        Ok::<_, tokio_postgres::Error>((keys, policy_keys))
    };
    match loaded.await {
        Ok((keys, policy_keys)) => {
            Ok(CatalogSnapshot::from_rows(keys).with_policy_key_columns(policy_keys))
        }
        Err(e) => {
            *client = None;
            Err(e.into())
        }
    }
}

fn column_rows(rows: Vec<tokio_postgres::Row>) -> Result<ColumnRows, tokio_postgres::Error> {
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(s: &str, t: &str, c: &str, oid: u32) -> (String, String, String, u32) {
        (s.into(), t.into(), c.into(), oid)
    }

    #[test]
    fn key_types_of_primary_keys_and_policy_key_columns() {
        let snapshot = CatalogSnapshot::from_rows([row("public", "accounts", "id", 23)])
            .with_policy_key_columns([
                row("public", "accounts", "owner", 25),
                row("public", "accounts", "email", 1043),
                row("app", "users", "owner", 2950),
            ]);
        assert_eq!(snapshot.key_type("public", "accounts", "id"), Some(23));
        assert_eq!(snapshot.key_type("public", "accounts", "owner"), Some(25));
        assert_eq!(snapshot.key_type("public", "accounts", "email"), Some(1043));
        assert_eq!(snapshot.key_type("app", "users", "owner"), Some(2950));
        // Neither the primary key nor a policy key column when the catalog was read.
        assert_eq!(snapshot.key_type("public", "accounts", "balance"), None);
        assert_eq!(snapshot.key_type("app", "users", "id"), None);
        assert_eq!(snapshot.primary_key("app", "users"), None);
    }
}
