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
    /// Case-insensitive predicates (ILIKE, `~*`) may be narrowed: every indexed column's
    /// collation maps case the way [`super::terms::fold`] does, as asked of Postgres itself
    /// ([`case_rules_match`]). Not so under Turkish-like rules (`I` lowers to `ı`: libc
    /// `tr_TR`, `az_AZ`, and locales that copy them such as `ku_TR`, `crh_UA`; ICU `tr`,
    /// `az`), under ICU's Lithuanian rules (`Ì` lowers to `i` + two combining marks), or in a
    /// database whose encoding is not UTF-8.
    pub case_insensitive_safe: bool,
}

impl SearchTable {
    pub fn indexes(&self, kind: PredicateKind) -> bool {
        self.policy.predicates.contains(&kind)
            && (kind != PredicateKind::ILike || self.case_insensitive_safe)
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
                    quote_ident(cn.nspname) || '.' || quote_ident(c.collname),
                    pg_encoding_to_char(d.encoding)
               FROM pg_attribute a
               LEFT JOIN pg_collation c ON c.oid = a.attcollation
               LEFT JOIN pg_namespace cn ON cn.oid = c.collnamespace
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
    // Collations of the indexed columns, each probed once below (usually just the default).
    let mut collations: Vec<String> = Vec::new();
    let mut utf8 = true;
    for r in &cols {
        let name: String = r.get(0);
        if !policy.columns.contains(&name) {
            continue;
        }
        let deterministic: bool = r.get(3);
        let collation: Option<String> = r.get(4);
        let encoding: String = r.get(5);
        if !deterministic {
            // LIKE raises an error on these; a narrowed statement might never evaluate it.
            unusable = Some(format!("column {name:?} has a nondeterministic collation"));
        }
        utf8 &= encoding == "UTF8";
        let collation = collation.unwrap_or_else(|| "pg_catalog.\"default\"".to_string());
        if !collations.contains(&collation) {
            collations.push(collation);
        }
    }
    let mut case_insensitive_safe = utf8;
    for collation in &collations {
        if !case_insensitive_safe {
            break;
        }
        case_insensitive_safe = case_rules_match(client, collation).await;
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
        case_insensitive_safe,
    }))
}

/// Whether `collation` (an SQL name) maps case compatibly with [`super::terms::fold`] on the
/// characters where collations are known to differ: `I`/`i` (Turkish-like rules: `ı`, `İ`)
/// and `Ì`/`Í`/`Ĩ` (ICU's Lithuanian rules add combining dots). Each must map either to
/// what `fold` gives or not at all: the `C` locale lowers only ASCII, which makes Postgres
/// match less than the index finds (a superset is exact; a miss is not). Postgres answers
/// with its own `lower()`/`upper()` — what ILIKE uses, and per character what `~*` uses — so
/// no list of locale names can fall out of date. A failing probe counts as a mismatch:
/// case-insensitive predicates then simply pass through.
async fn case_rules_match(client: &Client, collation: &str) -> bool {
    let sql = format!(
        "SELECT bool_and(lower(u COLLATE {collation}) IN (u, l)
                     AND upper(l COLLATE {collation}) IN (l, u))
           FROM (VALUES ('I', 'i'), ('Ì', 'ì'), ('Í', 'í'), ('Ĩ', 'ĩ')) AS probe(u, l)"
    );
    match client.query_one(&sql, &[]).await {
        Ok(row) => row.try_get::<_, bool>(0).unwrap_or(false),
        Err(e) => {
            tracing::debug!(error = %e, collation, "search: case probe failed; ILIKE and ~* pass through");
            false
        }
    }
}
