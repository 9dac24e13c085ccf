//! The migrator's reads: rows of promoted keys, fetched in batches on a connection whose
//! output settings match one profile, in both formats, inside one repeatable-read
//! transaction whose snapshot is recorded (the store checks it against changes applied
//! meanwhile).

use super::key::KeyType;
use super::profile::OutputProfile;
use super::schema::TableMeta;
use super::store::{CachedRow, Snapshot};
use super::CacheError;
use crate::cdc::event::{quote_ident, quote_literal};
use bytes::Bytes;
use std::collections::HashMap;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

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

/// The fetch statement: the table's columns in order, for keys in `keys`.
fn select_sql(table: &TableMeta, keys: &[String]) -> String {
    let columns: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let list: Vec<String> = keys.iter().map(|k| quote_literal(k)).collect();
    format!(
        "SELECT {} FROM {}.{} WHERE {} = ANY (ARRAY[{}]::text[]::{}[])",
        columns.join(", "),
        quote_ident(&table.schema),
        quote_ident(&table.name),
        quote_ident(&table.columns[table.key_index].name),
        list.join(", "),
        key_type_name(table.key_type),
    )
}

/// The binary-format fetch of a table, with the keys as one `text[]` parameter (prepared
/// once per connection and table layout).
pub fn binary_sql(table: &TableMeta) -> String {
    let columns: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    format!(
        "SELECT {} FROM {}.{} WHERE {} = ANY ($1::text[]::{}[])",
        columns.join(", "),
        quote_ident(&table.schema),
        quote_ident(&table.name),
        quote_ident(&table.columns[table.key_index].name),
        key_type_name(table.key_type),
    )
}

/// Fetches `keys` (canonical, valid for the key type) of `table` over `client`, which must
/// already carry the profile's settings; `binary` is [`binary_sql`] prepared on `client`.
/// Four round trips: begin + snapshot, text rows, binary rows, rollback.
pub async fn fetch(
    client: &Client,
    binary: &tokio_postgres::Statement,
    table: &TableMeta,
    keys: &[String],
) -> Result<Fetched, CacheError> {
    let begun = client
        .simple_query(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_current_snapshot()::text",
        )
        .await;
    let result = match begun {
        Ok(messages) => fetch_in_transaction(client, binary, table, keys, &messages).await,
        Err(e) => Err(e.into()),
    };
    // Ends the transaction either way; a failed one needs the rollback.
    let _ = client.simple_query("ROLLBACK").await;
    result
}

async fn fetch_in_transaction(
    client: &Client,
    binary: &tokio_postgres::Statement,
    table: &TableMeta,
    keys: &[String],
    begun: &[SimpleQueryMessage],
) -> Result<Fetched, CacheError> {
    let snapshot = first_text(begun)
        .and_then(|s| Snapshot::parse(&s))
        .ok_or(CacheError::Unexpected("pg_current_snapshot() output"))?;
    let sql = select_sql(table, keys);
    let ncols = table.columns.len();

    // Text format, under the connection's settings.
    let mut text_rows: HashMap<String, Vec<Option<Bytes>>> = HashMap::new();
    for m in client.simple_query(&sql).await? {
        if let SimpleQueryMessage::Row(r) = m {
            if r.len() != ncols {
                return Err(CacheError::Unexpected("column count changed"));
            }
            let values: Vec<Option<Bytes>> = (0..ncols)
                .map(|i| r.get(i).map(|v| Bytes::copy_from_slice(v.as_bytes())))
                .collect();
            let key = values[table.key_index]
                .as_ref()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| table.key_type.from_output(v))
                .ok_or(CacheError::Unexpected("key column value"))?;
            text_rows.insert(key, values);
        }
    }
    // Binary format: the same statement in the same snapshot.
    let mut rows: Vec<(String, Option<CachedRow>)> = Vec::with_capacity(keys.len());
    let mut binary_rows: HashMap<String, Vec<Option<Bytes>>> = HashMap::new();
    for r in client.query(binary, &[&keys]).await? {
        if r.len() != ncols {
            return Err(CacheError::Unexpected("column count changed"));
        }
        let mut values = Vec::with_capacity(ncols);
        for i in 0..ncols {
            let v: Option<RawValue> = r.try_get(i)?;
            values.push(v.map(|v| v.0));
        }
        // The binary key is matched back through the text row with the same position.
        binary_rows.insert(binary_key(table, &values).unwrap_or_default(), values);
    }
    for key in keys {
        let row = match text_rows.remove(key) {
            None => None,
            Some(text) => {
                let binary = binary_rows
                    .remove(key)
                    .ok_or(CacheError::Unexpected("row missing from binary fetch"))?;
                Some(CachedRow { text, binary })
            }
        };
        rows.push((key.clone(), row));
    }
    Ok(Fetched { snapshot, rows })
}

/// The canonical key of a row fetched in binary format.
fn binary_key(table: &TableMeta, values: &[Option<Bytes>]) -> Option<String> {
    let v = values.get(table.key_index)?.as_ref()?;
    let param = crate::session::bind::Param::Binary(v);
    table.key_type.from_param(param, 0)
}

fn first_text(messages: &[SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}
