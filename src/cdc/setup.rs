//! The publication and the slot, managed over an ordinary side connection.
//!
//! Why the checks are careful:
//! - Publishing a table that has no replica identity makes PostgreSQL reject every UPDATE and
//!   DELETE on it ("cannot update table ... because it does not have a replica identity and
//!   publishes updates"): the proxy must never break the application's writes, so such tables
//!   (and names that do not exist) are left out, logged and reported, never published.
//! - The publication must exist before the slot's decoding reaches any change, or the server
//!   fails the stream ("publication ... does not exist") at every restart. So the publication
//!   is created first, and a slot that outlived its publication is recreated.
//! - A slot with our name but another plugin, kind or database is someone else's: reported,
//!   never dropped.

use super::event::{quote_ident, TableName};
use super::lsn::Lsn;
use super::CdcError;
use std::collections::BTreeSet;
use tracing::{info, warn};

/// The slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    pub plugin: Option<String>,
    pub slot_type: String,
    pub database: Option<String>,
    pub active_pid: Option<i32>,
    pub confirmed_flush: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` or `lost` (WAL it needs is gone).
    pub wal_status: Option<String>,
}

/// What [`ensure_publication`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationOutcome {
    /// The publication did not exist and was created.
    pub created: bool,
    /// The tables now in the publication.
    pub tables: Vec<TableName>,
    /// Tables asked for but left out, with the reason.
    pub skipped: Vec<(TableName, String)>,
}

pub async fn slot_info(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<Option<SlotInfo>, CdcError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, slot_type::text, database::text, active_pid,
                    confirmed_flush_lsn::text, wal_status::text
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|r| SlotInfo {
        plugin: r.get(0),
        slot_type: r.get::<_, Option<String>>(1).unwrap_or_default(),
        database: r.get(2),
        active_pid: r.get(3),
        confirmed_flush: r.get::<_, Option<String>>(4).and_then(|l| l.parse().ok()),
        wal_status: r.get(5),
    }))
}

/// Whether `info` describes a slot this feed can use on `database`.
pub fn check_slot_is_ours(slot: &str, info: &SlotInfo, database: &str) -> Result<(), CdcError> {
    let ours = info.slot_type == "logical"
        && info.plugin.as_deref() == Some("pgoutput")
        && info.database.as_deref() == Some(database);
    if ours {
        return Ok(());
    }
    Err(CdcError::SlotConflict {
        slot: slot.to_string(),
        message: format!(
            "it is a {} slot with plugin {:?} on database {:?}, not a pgoutput slot on {database:?}; \
             drop it or choose another [change_feed] slot name",
            info.slot_type, info.plugin, info.database
        ),
    })
}

pub async fn drop_slot(client: &tokio_postgres::Client, slot: &str) -> Result<(), CdcError> {
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await?;
    Ok(())
}

/// The server's current WAL insert position: past the end of every commit made so far
/// (`pg_current_wal_lsn()`, the write position, can trail it with asynchronous commit).
///
/// A simple query: one round trip (`query_one` would prepare the statement first, two).
/// Fences ask this for every burst of writes, so the round trip is the fence's wait.
pub async fn current_wal_lsn(client: &tokio_postgres::Client) -> Result<Lsn, CdcError> {
    let messages = client
        .simple_query("SELECT pg_current_wal_insert_lsn()")
        .await?;
    let text = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .ok_or_else(|| CdcError::Protocol("pg_current_wal_insert_lsn() returned no row".into()))?;
    text.parse()
        .map_err(|e: super::lsn::LsnParseError| CdcError::Protocol(e.to_string()))
}

/// Splits `wanted` into tables that can be published and the rest (with reasons).
async fn publishable(
    client: &tokio_postgres::Client,
    wanted: &[TableName],
) -> Result<(Vec<TableName>, Vec<(TableName, String)>), CdcError> {
    let schemas: Vec<&str> = wanted.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = wanted.iter().map(|t| t.name.as_str()).collect();
    let rows = client
        .query(
            "SELECT w.schema, w.name, c.relkind::text, c.relreplident::text,
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
               FROM unnest($1::text[], $2::text[]) AS w(schema, name)
               LEFT JOIN pg_namespace n ON n.nspname = w.schema
               LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name",
            &[&schemas, &names],
        )
        .await?;
    let mut ok = BTreeSet::new();
    let mut skipped = Vec::new();
    for r in rows {
        let table = TableName::new(r.get::<_, String>(0), r.get::<_, String>(1));
        let kind: Option<String> = r.get(2);
        let ident: Option<String> = r.get(3);
        let has_pk: Option<bool> = r.get(4);
        let has_ident_index: Option<bool> = r.get(5);
        let reason = match (kind.as_deref(), ident.as_deref()) {
            (None, _) => Some("no such table".to_string()),
            (Some("r" | "p"), Some("f")) => None,
            (Some("r" | "p"), Some("d")) if has_pk == Some(true) => None,
            (Some("r" | "p"), Some("i")) if has_ident_index == Some(true) => None,
            (Some("r" | "p"), _) => Some(
                "no replica identity (no primary key and REPLICA IDENTITY is not FULL or an index); \
                 publishing it would make PostgreSQL reject its updates and deletes"
                    .to_string(),
            ),
            (Some(k), _) => Some(format!("not a table (relkind {k:?})")),
        };
        match reason {
            None => {
                ok.insert(table);
            }
            Some(why) => skipped.push((table, why)),
        }
    }
    skipped.sort();
    Ok((ok.into_iter().collect(), skipped))
}

async fn published_tables(
    client: &tokio_postgres::Client,
    publication: &str,
) -> Result<Option<BTreeSet<TableName>>, CdcError> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await?
        .is_some();
    if !exists {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await?;
    Ok(Some(
        rows.iter()
            .map(|r| TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect(),
    ))
}

/// Creates the publication for `wanted`, or brings its table list in line with it.
pub async fn ensure_publication(
    client: &tokio_postgres::Client,
    publication: &str,
    wanted: &[TableName],
) -> Result<PublicationOutcome, CdcError> {
    let (tables, skipped) = publishable(client, wanted).await?;
    for (table, why) in &skipped {
        warn!(%table, reason = %why, publication, "table not published");
    }
    let list = |ts: &[TableName]| {
        ts.iter()
            .map(TableName::quoted)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let pubname = quote_ident(publication);
    let current = published_tables(client, publication).await?;
    let created = current.is_none();
    match current {
        None => {
            let for_tables = if tables.is_empty() {
                String::new()
            } else {
                format!(" FOR TABLE {}", list(&tables))
            };
            client
                .batch_execute(&format!(
                    "CREATE PUBLICATION {pubname}{for_tables} \
                     WITH (publish = 'insert, update, delete, truncate', \
                     publish_via_partition_root = true)"
                ))
                .await?;
            info!(publication, tables = tables.len(), "publication created");
        }
        Some(current) => {
            let want: BTreeSet<TableName> = tables.iter().cloned().collect();
            if current != want {
                let sql = if tables.is_empty() {
                    let old: Vec<TableName> = current.into_iter().collect();
                    format!("ALTER PUBLICATION {pubname} DROP TABLE {}", list(&old))
                } else {
                    format!("ALTER PUBLICATION {pubname} SET TABLE {}", list(&tables))
                };
                client.batch_execute(&sql).await?;
                info!(publication, tables = tables.len(), "publication updated");
            }
        }
    }
    Ok(PublicationOutcome {
        created,
        tables,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(slot_type: &str, plugin: &str, db: &str) -> SlotInfo {
        SlotInfo {
            plugin: Some(plugin.into()),
            slot_type: slot_type.into(),
            database: Some(db.into()),
            active_pid: None,
            confirmed_flush: None,
            wal_status: None,
        }
    }

    #[test]
    fn only_our_kind_of_slot_is_used() {
        assert!(check_slot_is_ours("s", &info("logical", "pgoutput", "app"), "app").is_ok());
        for other in [
            info("physical", "pgoutput", "app"),
            info("logical", "test_decoding", "app"),
            info("logical", "pgoutput", "other"),
        ] {
            let err = check_slot_is_ours("s", &other, "app").unwrap_err();
            assert!(
                err.to_string().contains("another [change_feed] slot"),
                "{err}"
            );
        }
    }
}
