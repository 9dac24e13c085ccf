//! The migrator's reads: rows of promoted keys, fetched in batches on a connection whose
//! output settings match one profile, in both formats, by one statement whose snapshot is
//! recorded (the store checks it against changes applied meanwhile).

use super::key::KeyType;
use super::profile::OutputProfile;
use super::schema::TableMeta;
use super::store::{CachedRow, Snapshot};
use super::CacheError;
use crate::cdc::event::{quote_ident, quote_literal};
use bytes::Bytes;
use std::collections::HashMap;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Client;

/// Keys fetched per query at most.
pub const MAX_BATCH: usize = 256;

/// A value in binary format exactly as the server sent it, whatever its type.
struct RawValue(Bytes);

impl<'a> FromSql<'a> for RawValue {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(Bytes::copy_from_slice(raw)))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// What one fetch found: every requested key, with its row or `None` (no such row).
pub struct Fetched {
    pub snapshot: Snapshot,
    pub rows: Vec<(String, Option<CachedRow>)>,
}

/// `SET` statements that give a connection `profile`'s output settings.
pub fn profile_settings_sql(profile: &OutputProfile) -> String {
    profile
        .settings()
        .map(|(name, value)| format!("SET {} TO {};", quote_ident(name), quote_literal(value)))
        .collect()
}

fn key_type_name(k: KeyType) -> &'static str {
    match k {
        KeyType::Int2 => "int2",
        KeyType::Int4 => "int4",
        KeyType::Int8 => "int8",
        KeyType::Text => "text",
        KeyType::Uuid => "uuid",
    }
}

/// The fetch statement of a table, with the keys as one `text[]` parameter (prepared once
/// per connection and table layout). Column 0 is the statement's snapshot; then every column
/// in binary; then every column as its type's output function writes it (`format('%s', ..)`
/// calls that function, under the connection's settings, as Postgres does for a text-format
/// result column). The one-row left join gives the snapshot even when no key has a row.
pub fn fetch_sql(table: &TableMeta) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("t.{}", quote_ident(&c.name)))
        .collect();
    let texts: Vec<String> = columns
        .iter()
        .map(|c| format!("pg_catalog.format('%s', {c})"))
        .collect();
    format!(
        "SELECT pg_catalog.pg_current_snapshot()::text, {}, {} FROM (SELECT) AS one \
         LEFT JOIN {}.{} AS t ON t.{} = ANY ($1::text[]::{}[])",
        columns.join(", "),
        texts.join(", "),
        quote_ident(&table.schema),
        quote_ident(&table.name),
        quote_ident(&table.columns[table.key_index].name),
        key_type_name(table.key_type),
    )
}

/// Fetches `keys` (canonical, valid for the key type) of `table` over `client`, which must
/// already carry the profile's settings; `statement` is [`fetch_sql`] prepared on `client`.
/// One statement, so one snapshot for the rows in both formats and for the snapshot column
/// (`pg_current_snapshot()` reports the statement's own).
pub async fn fetch(
    client: &Client,
    statement: &tokio_postgres::Statement,
    table: &TableMeta,
    keys: &[String],
) -> Result<Fetched, CacheError> {
    let ncols = table.columns.len();
    let result = client.query(statement, &[&keys]).await?;
    let mut snapshot = None;
    let mut found: HashMap<String, CachedRow> = HashMap::with_capacity(result.len());
    for r in result {
        if r.len() != 1 + 2 * ncols {
            return Err(CacheError::Unexpected("column count changed"));
        }
        if snapshot.is_none() {
            let text: Option<&str> = r.try_get(0)?;
            snapshot = text.and_then(Snapshot::parse);
        }
        let mut binary = Vec::with_capacity(ncols);
        let mut text = Vec::with_capacity(ncols);
        for i in 0..ncols {
            let b: Option<RawValue> = r.try_get(1 + i)?;
            let t: Option<RawValue> = r.try_get(1 + ncols + i)?;
            // `format` writes NULL as an empty string: nullness comes from the value itself.
            text.push(b.as_ref().and(t).map(|t| t.0));
            binary.push(b.map(|b| b.0));
        }
        // The left join's row when no key matched: no key value.
        let Some(key) = binary_key(table, &binary) else {
            if binary[table.key_index].is_some() {
                return Err(CacheError::Unexpected("key column value"));
            }
            continue;
        };
        found.insert(
            key,
            CachedRow {
                text,
                binary: Some(binary),
            },
        );
    }
    let snapshot = snapshot.ok_or(CacheError::Unexpected("pg_current_snapshot() output"))?;
    let rows = keys.iter().map(|k| (k.clone(), found.remove(k))).collect();
    Ok(Fetched { snapshot, rows })
}

/// The canonical key of a row fetched in binary format.
fn binary_key(table: &TableMeta, values: &[Option<Bytes>]) -> Option<String> {
    let v = values.get(table.key_index)?.as_ref()?;
    let param = crate::session::bind::Param::Binary(v);
    table.key_type.from_param(param, 0)
}
