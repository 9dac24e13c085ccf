//! May this role read this table? Asked of Postgres (`has_table_privilege`,
//! `has_schema_privilege`) over the migrator's connection and remembered for
//! [`ACCESS_TTL`]; GRANT and REVOKE through the proxy forget every answer at once. A role
//! Postgres would refuse never gets a cached row: it passes through and gets Postgres's own
//! error.

use super::CacheError;
use dashmap::DashMap;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// How long an answer is trusted (the bound for GRANT/REVOKE that bypass the proxy).
pub const ACCESS_TTL: Duration = Duration::from_secs(1);

const CHECK_SQL: &str = "\
SELECT has_table_privilege(r.oid, c.oid, 'SELECT') AND has_schema_privilege(r.oid, c.relnamespace, 'USAGE')
FROM pg_roles r, pg_class c WHERE r.rolname = $1 AND c.oid = $2::int8::oid";

/// Answers per role, then per table: looked up by `&str`, without allocating a key on
/// every cache hit.
type Answers = DashMap<Box<str>, TableAnswers, foldhash::fast::RandomState>;
type TableAnswers = HashMap<u32, (bool, Instant), foldhash::fast::RandomState>;

#[derive(Debug, Default)]
pub struct AccessCache {
    answers: Answers,
}

/// Roles remembered at most (their answers are dropped together beyond it).
const MAX_ROLES: usize = 10_000;

impl AccessCache {
    /// The remembered answer, if fresh.
    pub fn cached(&self, role: &str, table: u32) -> Option<bool> {
        let tables = self.answers.get(role)?;
        let &(allowed, at) = tables.get(&table)?;
        (at.elapsed() < ACCESS_TTL).then_some(allowed)
    }

    /// Asks Postgres and remembers the answer. A role or table that no longer exists reads
    /// as "may not".
    pub async fn check(&self, client: &Client, role: &str, table: u32) -> Result<bool, CacheError> {
        let rows = client.query(CHECK_SQL, &[&role, &i64::from(table)]).await?;
        let allowed = rows
            .first()
            .and_then(|r| r.try_get::<_, Option<bool>>(0).ok().flatten())
            .unwrap_or(false);
        if self.answers.len() > MAX_ROLES {
            self.answers.clear();
        }
        self.answers
            .entry(role.into())
            .or_default()
            .insert(table, (allowed, Instant::now()));
        Ok(allowed)
    }

    pub fn forget_all(&self) {
        self.answers.clear();
    }
}
