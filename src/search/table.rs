//! Which tables are indexed, as the policies and the catalog describe them.
//!
//! A table is indexable when its policy has a `[search]` section, it is an ordinary table
//! with a single-column primary key (the policy's `key`, if given, must be that column: the
//! change feed reports deletes by primary key), and every listed column is `text` or
//! `varchar` (other types have other LIKE semantics). The *layout* hashes everything an index
//! depends on, including the table's file node: a column type change or a table rewrite
//! (`ALTER TABLE .. TYPE`, `VACUUM FULL`, `CLUSTER`) gives a new layout, and a new layout means
//! a rebuild (the change feed does not report rewritten rows).

use crate::cdc::TableName;
use crate::config::policy::{PredicateKind, SearchPolicy};
use crate::context::ProxyContext;
use std::path::PathBuf;
use tokio_postgres::Client;

/// Text search configurations whose lexemes are indexed (for `@@`).
pub const FTS_CONFIGS: [&str; 2] = ["english", "simple"];

/// One indexed table.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchTable {
    pub oid: u32,
    pub name: TableName,
    pub key_column: String,
    /// `format_type` of the key (`bigint`, `uuid`, `character varying(20)`), for casts.
    pub key_type: String,
    /// Indexed columns, in policy order.
    pub columns: Vec<String>,
    pub policy: SearchPolicy,
    pub policy_file: PathBuf,
    /// Hash of everything the index's contents depend on.
    pub layout: u64,
    /// Why it cannot be indexed, if it cannot.
    pub unusable: Option<String>,
    /// ILIKE may be narrowed: no indexed column's character classification is Turkish or
    /// Azerbaijani, where `ı` and `I` match case-insensitively but fold differently.
    pub ilike_safe: bool,
}

impl SearchTable {
    pub fn indexes(&self, kind: PredicateKind) -> bool {
        self.policy.predicates.contains(&kind) && (kind != PredicateKind::ILike || self.ilike_safe)
    }

    /// Whether any trigram field exists (LIKE, ILIKE or regex served).
    pub fn has_trigrams(&self) -> bool {
        [
            PredicateKind::Like,
            PredicateKind::ILike,
            PredicateKind::Regex,
        ]
        .iter()
        .any(|k| self.indexes(*k))
    }

    pub fn has_lexemes(&self) -> bool {
        self.indexes(PredicateKind::FullText)
    }

    /// Whether the lexemes of [`FTS_CONFIGS`]`[cfg]` are indexed.
    pub fn indexes_config(&self, cfg: usize) -> bool {
        self.has_lexemes()
            && FTS_CONFIGS
                .get(cfg)
                .is_some_and(|c| self.policy.fts_configs.iter().any(|p| p == c))
    }

    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// The tables `[search]` policies cover, as the catalog's table list knows them.
fn wanted(ctx: &ProxyContext) -> Vec<(TableName, SearchPolicy, PathBuf, Option<String>)> {
    let policies = ctx.policies.current();
    let catalog = ctx.catalog.snapshot();
    let mut out = Vec::new();
    for (schema, name) in catalog.table_names() {
        let Some(m) = policies.policy_for(&schema, &name) else {
            continue;
        };
        let Some(search) = &m.policy.search else {
            continue;
        };
        out.push((
            TableName::new(schema, name),
            search.clone(),
            m.policy.file.clone(),
            m.policy.key.clone(),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Reads the descriptions of every table a `[search]` policy covers.
pub async fn load(
    ctx: &ProxyContext,
    client: &Client,
) -> Result<Vec<SearchTable>, super::SearchError> {
    let mut out = Vec::new();
    for (name, policy, file, key) in wanted(ctx) {
        if let Some(t) = describe(client, name, policy, file, key).await? {
            out.push(t);
        }
    }
    Ok(out)
}

async fn describe(
    client: &Client,
    name: TableName,
    policy: SearchPolicy,
    policy_file: PathBuf,
    policy_key: Option<String>,
) -> Result<Option<SearchTable>, super::SearchError> {
    let head = client
        .query_opt(
            "SELECT c.oid::int8, c.relfilenode::int8, c.relkind::text,
                    (SELECT array_agg(a.attname::text ORDER BY a.attnum)
                       FROM pg_index i JOIN pg_attribute a
                         ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                      WHERE i.indrelid = c.oid AND i.indisprimary)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2",
            &[&name.schema, &name.name],
        )
        .await?;
    let Some(head) = head else {
        return Ok(None);
    };
    let oid =
        u32::try_from(head.get::<_, i64>(0)).map_err(|_| super::SearchError::Unexpected("oid"))?;
    let filenode: i64 = head.get(1);
    let relkind: String = head.get(2);
    let pk: Option<Vec<String>> = head.get(3);
    let mut unusable = None;
    let cols = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.atttypid::int8,
                    coalesce(c.collisdeterministic, true),
                    -- ICU locale column names differ by version (15-16 / 17+): via jsonb.
                    lower(CASE WHEN c.oid IS NULL OR c.collname = 'default'
                               THEN coalesce(to_jsonb(d) ->> 'datlocale',
                                             to_jsonb(d) ->> 'daticulocale', d.datctype)
                               ELSE coalesce(to_jsonb(c) ->> 'colllocale',
                                             to_jsonb(c) ->> 'colliculocale', c.collctype) END)
               FROM pg_attribute a
               LEFT JOIN pg_collation c ON c.oid = a.attcollation
               JOIN pg_database d ON d.datname = current_database()
              WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&i64::from(oid)],
        )
        .await?;
    let types: Vec<(String, String, i64)> = cols
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut ilike_safe = true;
    for r in &cols {
        let name: String = r.get(0);
        if !policy.columns.contains(&name) {
            continue;
        }
        let deterministic: bool = r.get(3);
        let ctype: Option<String> = r.get(4);
        if !deterministic {
            // LIKE raises an error on these; a narrowed statement might never evaluate it.
            unusable = Some(format!("column {name:?} has a nondeterministic collation"));
        }
        let ctype = ctype.unwrap_or_default();
        if ["tr", "az"].iter().any(|l| {
            ctype
                .strip_prefix(l)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['_', '-', '.']))
        }) {
            ilike_safe = false;
        }
    }
    let key_column = match pk.as_deref() {
        Some([one]) => one.clone(),
        Some(_) => {
            unusable = Some("the primary key has several columns".to_string());
            String::new()
        }
        None => {
            unusable = Some("the table has no primary key".to_string());
            String::new()
        }
    };
    if relkind != "r" {
        unusable = Some(format!("relkind {relkind:?} is not an ordinary table"));
    }
    if let Some(k) = policy_key.as_deref() {
        if unusable.is_none() && k != key_column {
            unusable = Some(format!(
                "the policy's key {k:?} is not the primary key {key_column:?}"
            ));
        }
    }
    let key_type = types
        .iter()
        .find(|(n, _, _)| *n == key_column)
        .map(|(_, t, _)| t.clone())
        .unwrap_or_default();
    // text = 25, varchar = 1043.
    for c in &policy.columns {
        match types.iter().find(|(n, _, _)| n == c) {
            None => unusable = Some(format!("column {c:?} does not exist")),
            Some((_, t, oid)) if *oid != 25 && *oid != 1043 => {
                unusable = Some(format!("column {c:?} is {t}, not text or varchar"))
            }
            Some(_) => {}
        }
    }
    let layout_text = format!(
        "v3|{:?}|{oid}|{filenode}|{key_column}|{key_type}|{:?}|{:?}|{:?}|{:?}",
        // Folding uses the Unicode tables of the build: a new version means new terms.
        char::UNICODE_VERSION,
        policy
            .columns
            .iter()
            .map(|c| types.iter().find(|(n, _, _)| n == c).map(|t| &t.1))
            .collect::<Vec<_>>(),
        policy.columns,
        policy.predicates,
        policy.fts_configs,
    );
    Ok(Some(SearchTable {
        oid,
        name,
        key_column,
        key_type,
        columns: policy.columns.clone(),
        layout: xxhash_rust::xxh3::xxh3_64(layout_text.as_bytes()),
        policy,
        policy_file,
        unusable,
        ilike_safe,
    }))
}
