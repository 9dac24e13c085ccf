//! What the cache must know of each table it serves, read from Postgres's catalogs: the
//! columns exactly as a RowDescription describes them, the key column, and the facts that
//! decide whether serving it can ever be safe (row-level security, inheritance children,
//! another relation of the same name that an unqualified name might resolve to), and the
//! catalog entries their output depends on besides the row (enum labels, composite
//! attributes, object names). Plus the server-wide settings sessions inherit without being
//! told (see [`super::profile`]).
//!
//! Reloaded every [`super::SCHEMA_REFRESH`] and after DDL through the proxy; a table whose
//! description changed is flushed from the store before anything is served from it again.

use super::key::KeyType;
use super::profile::UNREPORTED;
use super::CacheError;
use crate::config::policy::CachePolicy;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

/// A column as RowDescription reports it for a plain column reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnMeta {
    pub name: String,
    pub attnum: i16,
    /// The type, with domains resolved to their base type (as Postgres reports it).
    pub type_oid: u32,
    pub typlen: i16,
    pub typmod: i32,
}

/// Bytes held for one policy, against its `max_bytes`.
#[derive(Debug)]
pub struct Budget {
    pub max_bytes: u64,
    pub used: AtomicU64,
}

impl Budget {
    pub fn has_room(&self, bytes: u64) -> bool {
        self.used.load(Relaxed).saturating_add(bytes) <= self.max_bytes
    }
}

/// A table some cache policy covers.
#[derive(Clone, Debug)]
pub struct TableMeta {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnMeta>,
    /// Index into `columns` of the key column.
    pub key_index: usize,
    pub key_type: KeyType,
    /// No other relation anywhere has this name, so an unqualified reference resolves to this
    /// table under any search_path that includes its schema (and errors under the others).
    pub unique_name: bool,
    /// `None`: the cache may serve it. `Some(why)`: never.
    pub unservable: Option<&'static str>,
    pub policy: CachePolicy,
    pub budget: Arc<Budget>,
    /// Hash of the catalog entries the columns' text and binary output depends on beyond
    /// their type oids: the labels of every enum type the columns reach (through arrays,
    /// domains, ranges, multiranges and composite types) and the attribute lists of the
    /// composite types they reach. `ALTER TYPE ... RENAME VALUE` changes no row, so no
    /// change reaches the feed: only this tells the refresh that cached text is stale.
    pub output_catalog: u64,
    /// Hash of what an image's bytes depend on (columns, key column and type, output
    /// catalog): names L2
    /// images so a layout change never meets an old one.
    pub layout: u64,
}

impl TableMeta {
    /// A servable table keyed by its first column (int4), for unit tests.
    #[cfg(test)]
    pub fn for_tests(oid: u32, columns: &[(&str, u32)]) -> TableMeta {
        use crate::config::policy::{CachePolicy, CacheStoreKind};
        use std::time::Duration;
        TableMeta {
            oid,
            schema: "public".into(),
            name: "t".into(),
            columns: columns
                .iter()
                .enumerate()
                .map(|(i, (n, t))| ColumnMeta {
                    name: n.to_string(),
                    attnum: i as i16 + 1,
                    type_oid: *t,
                    typlen: -1,
                    typmod: -1,
                })
                .collect(),
            key_index: 0,
            key_type: KeyType::Int4,
            unique_name: true,
            unservable: None,
            policy: CachePolicy {
                store: CacheStoreKind::Memory,
                promote_after: 1,
                window: Duration::from_secs(10),
                demote_after_idle: Duration::from_secs(60),
                max_keys: 1000,
                max_bytes: 1 << 20,
                max_staleness: Duration::from_secs(1),
                coalesce_misses: false,
            },
            budget: Arc::new(Budget {
                max_bytes: 1 << 20,
                used: AtomicU64::new(0),
            }),
            output_catalog: 0,
            layout: 0,
        }
    }

    fn layout_hash(&self) -> u64 {
        // The key column too: a primary key moved to another column of the same type
        // changes which row a key names.
        let mut text = format!(
            "{}|{:?}|{}|{}|",
            self.oid, self.key_type, self.key_index, self.output_catalog
        );
        for c in &self.columns {
            text.push_str(&format!(
                "{}:{}:{}:{}:{};",
                c.name, c.attnum, c.type_oid, c.typlen, c.typmod
            ));
        }
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }

    /// Whether the policy puts this table's images in Redis too.
    pub fn uses_redis(&self) -> bool {
        self.policy.store == crate::config::policy::CacheStoreKind::Redis
    }

    /// Same columns, key and servability (the store's entries stay valid).
    pub fn same_layout(&self, other: &TableMeta) -> bool {
        self.oid == other.oid
            && self.columns == other.columns
            && self.key_index == other.key_index
            && self.unservable == other.unservable
            && self.output_catalog == other.output_catalog
    }

    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// Server-wide defaults of the settings sessions inherit silently.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerDefaults {
    /// Values of [`UNREPORTED`], `None` where a role or database default exists somewhere
    /// (the proxy cannot tell which sessions it applies to).
    pub unreported: [Option<String>; 3],
    /// The default search_path resolves unqualified names to `public`, and no role or
    /// database overrides search_path.
    pub public_on_path: bool,
}

type NameMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// One load of everything above.
#[derive(Debug, Default)]
pub struct CacheSchema {
    /// The described tables by schema, then name, looked up by borrowed names for every
    /// statement the cache may serve. Hashed with foldhash: its keys come from the catalog,
    /// not from clients, so SipHash's flooding resistance buys nothing here and costs ~250
    /// instructions per lookup.
    by_name: NameMap<NameMap<Arc<TableMeta>>>,
    pub defaults: ServerDefaults,
}

impl CacheSchema {
    pub fn new(tables: impl IntoIterator<Item = TableMeta>, defaults: ServerDefaults) -> Self {
        let mut by_name: NameMap<NameMap<Arc<TableMeta>>> = NameMap::default();
        for meta in tables {
            by_name
                .entry(meta.schema.clone())
                .or_default()
                .insert(meta.name.clone(), Arc::new(meta));
        }
        CacheSchema { by_name, defaults }
    }

    /// Every described table.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<TableMeta>> {
        self.by_name.values().flat_map(NameMap::values)
    }

    pub fn len(&self) -> usize {
        self.by_name.values().map(NameMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.values().all(NameMap::is_empty)
    }

    pub fn table(&self, schema: &str, name: &str) -> Option<&Arc<TableMeta>> {
        self.by_name.get(schema)?.get(name)
    }

    pub fn by_oid(&self, oid: u32) -> Option<&Arc<TableMeta>> {
        self.tables().find(|t| t.oid == oid)
    }
}

/// A table to describe: its name, key column and policy.
pub struct Wanted {
    pub schema: String,
    pub name: String,
    /// The policy's key, or `None` for the primary key.
    pub policy_key: Option<String>,
    pub policy: CachePolicy,
    pub budget: Arc<Budget>,
}

const TABLES_SQL: &str = "\
SELECT c.oid::int8, n.nspname::text, c.relname::text,
       (c.relrowsecurity OR c.relforcerowsecurity),
       EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid),
       NOT EXISTS (SELECT 1 FROM pg_class c2 JOIN pg_namespace n2 ON n2.oid = c2.relnamespace
                   WHERE c2.relname = c.relname AND c2.oid <> c.oid
                     AND c2.relkind IN ('r','v','m','f','p')
                     AND n2.nspname NOT LIKE 'pg\\_temp\\_%' AND n2.nspname NOT LIKE 'pg\\_toast%'),
       c.relkind::text,
       (SELECT a2.attname::text FROM pg_index x JOIN pg_attribute a2
           ON a2.attrelid = x.indrelid AND a2.attnum = x.indkey[0]
        WHERE x.indrelid = c.oid AND x.indisprimary AND x.indnatts = 1),
       a.attnum::int4, a.attname::text, a.atttypid::int8, a.atttypmod, a.attlen::int4,
       CASE WHEN NOT (c.relreplident IN ('d', 'f')
                      OR EXISTS (SELECT 1 FROM pg_index x
                                  WHERE x.indrelid = c.oid AND x.indisreplident AND x.indisprimary))
            THEN 1
            WHEN EXISTS (SELECT 1 FROM pg_index x
                           JOIN pg_attribute a3 ON a3.attrelid = x.indrelid AND a3.attnum = x.indkey[0]
                           JOIN pg_collation co ON co.oid = a3.attcollation
                          WHERE x.indrelid = c.oid AND x.indisprimary AND NOT co.collisdeterministic)
            THEN 2
            ELSE 0 END::int4
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN unnest($1::text[], $2::text[]) AS w(s, t) ON w.s = n.nspname AND w.t = c.relname
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.oid, a.attnum";

/// Per table (`$1`: their oids): whether a column reaches a `reg*` type (its output is an
/// object name, which renames and search_path change without any row changing), and the
/// text [`TableMeta::output_catalog`] hashes. Types are followed through array elements,
/// domain bases, range subtypes, a multirange's range and composite attributes.
const OUTPUT_CATALOG_SQL: &str = "\
WITH RECURSIVE reach(rel, t) AS (
    SELECT a.attrelid, a.atttypid FROM pg_attribute a
     WHERE a.attrelid = ANY ($1::int8[]::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
  UNION
    SELECT r.rel, d.t
      FROM reach r JOIN pg_type ty ON ty.oid = r.t
      CROSS JOIN LATERAL (
          SELECT ty.typelem WHERE ty.typelem <> 0
          UNION ALL SELECT ty.typbasetype WHERE ty.typbasetype <> 0
          UNION ALL SELECT g.rngsubtype FROM pg_range g WHERE g.rngtypid = ty.oid
          UNION ALL SELECT g.rngtypid FROM pg_range g WHERE g.rngmultitypid = ty.oid
          UNION ALL SELECT ca.atttypid FROM pg_attribute ca
                     WHERE ty.typrelid <> 0 AND ca.attrelid = ty.typrelid
                       AND ca.attnum > 0 AND NOT ca.attisdropped) d(t)
)
SELECT r.rel::int8,
       bool_or(r.t IN (24, 2202, 2203, 2204, 2205, 2206, 3734, 3769, 4089, 4096, 4191)),
       concat_ws('|',
         (SELECT string_agg(e.enumtypid::text || ':' || e.enumlabel, ','
                            ORDER BY e.enumtypid, e.enumsortorder)
            FROM pg_enum e WHERE e.enumtypid = ANY (array_agg(r.t))),
         (SELECT string_agg(ty.oid::text || ':' || ca.attnum || ':' || ca.atttypid, ','
                            ORDER BY ty.oid, ca.attnum)
            FROM pg_type ty JOIN pg_attribute ca ON ca.attrelid = ty.typrelid
           WHERE ty.oid = ANY (array_agg(r.t)) AND ty.typrelid <> 0
             AND ca.attnum > 0 AND NOT ca.attisdropped))
FROM reach r GROUP BY r.rel";

const DOMAINS_SQL: &str =
    "SELECT oid::int8, typbasetype::int8, typtypmod FROM pg_type WHERE typtype = 'd'";

const DEFAULTS_SQL: &str = "\
SELECT s.name::text, s.setting,
       EXISTS (SELECT 1 FROM pg_db_role_setting r, unnest(r.setconfig) AS cfg
               WHERE lower(split_part(cfg, '=', 1)) = lower(s.name))
FROM pg_settings s
WHERE s.name IN ('extra_float_digits', 'bytea_output', 'lc_monetary', 'search_path')";

/// Reads the catalog for `wanted` tables over `client`.
pub async fn load(client: &Client, wanted: &[Wanted]) -> Result<CacheSchema, CacheError> {
    let schemas: Vec<&str> = wanted.iter().map(|w| w.schema.as_str()).collect();
    let names: Vec<&str> = wanted.iter().map(|w| w.name.as_str()).collect();
    let rows = client.query(TABLES_SQL, &[&schemas, &names]).await?;
    let domains: HashMap<u32, (u32, i32)> = client
        .query(DOMAINS_SQL, &[])
        .await?
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0) as u32,
                (r.get::<_, i64>(1) as u32, r.get::<_, i32>(2)),
            )
        })
        .collect();
    let mut defaults = ServerDefaults::default();
    for r in client.query(DEFAULTS_SQL, &[]).await? {
        let name: String = r.get(0);
        let value: String = r.get(1);
        let overridden: bool = r.get(2);
        if name == "search_path" {
            defaults.public_on_path = !overridden
                && value
                    .split(',')
                    .any(|p| p.trim().trim_matches('"') == "public");
        } else if let Some(i) = UNREPORTED.iter().position(|u| *u == name) {
            defaults.unreported[i] = (!overridden).then_some(value);
        }
    }

    let mut tables: HashMap<(String, String), TableMeta> = HashMap::new();
    let mut current: Option<(TableMeta, Option<String>, bool, bool, String)> = None;
    let finish = |t: Option<(TableMeta, Option<String>, bool, bool, String)>,
                  tables: &mut HashMap<(String, String), TableMeta>| {
        let Some((mut meta, pk, rls, children, relkind)) = t else {
            return;
        };
        let Some(w) = wanted
            .iter()
            .find(|w| w.schema == meta.schema && w.name == meta.name)
        else {
            return;
        };
        let key_name = w.policy_key.clone().or(pk.clone());
        let found = meta.unservable;
        meta.unservable = if relkind != "r" {
            Some("not a plain table")
        } else if rls {
            Some("row-level security")
        } else if children {
            Some("has inheritance children")
        } else if pk.is_none() {
            Some("no single-column primary key")
        } else if key_name != pk {
            Some("policy key is not the primary key")
        } else {
            found
        };
        match key_name.and_then(|k| meta.column(&k)) {
            Some(i) => {
                meta.key_index = i;
                match KeyType::from_oid(meta.columns[i].type_oid) {
                    Some(kt) => meta.key_type = kt,
                    None => {
                        meta.unservable = meta.unservable.or(Some("key column type not supported"))
                    }
                }
            }
            None => meta.unservable = meta.unservable.or(Some("no key column")),
        }
        tables.insert((meta.schema.clone(), meta.name.clone()), meta);
    };
    for r in rows {
        let oid = r.get::<_, i64>(0) as u32;
        if current.as_ref().map(|c| c.0.oid) != Some(oid) {
            finish(current.take(), &mut tables);
            let schema: String = r.get(1);
            let name: String = r.get(2);
            let Some(w) = wanted.iter().find(|w| w.schema == schema && w.name == name) else {
                continue;
            };
            current = Some((
                TableMeta {
                    oid,
                    schema,
                    name,
                    columns: Vec::new(),
                    key_index: 0,
                    key_type: KeyType::Int8,
                    unique_name: r.get(5),
                    // Why the change feed or the fills cannot track keys exactly (kept by
                    // `finish` when nothing else already rules the table out):
                    // - a replica identity index other than the primary key: an UPDATE of
                    //   the key made elsewhere sends no old key, so the old key would keep
                    //   its row;
                    // - a nondeterministic key collation: `'ALICE'` finds the row `'alice'`,
                    //   which fills match to keys by their bytes.
                    unservable: match r.get::<_, i32>(13) {
                        1 => Some("replica identity is an index other than the primary key"),
                        2 => Some("key column has a nondeterministic collation"),
                        _ => None,
                    },
                    policy: w.policy.clone(),
                    budget: Arc::clone(&w.budget),
                    output_catalog: 0,
                    layout: 0,
                },
                r.get(7),
                r.get(3),
                r.get(4),
                r.get(6),
            ));
        }
        if let Some(c) = current.as_mut() {
            let mut type_oid = r.get::<_, i64>(10) as u32;
            let mut typmod: i32 = r.get(11);
            // Postgres describes a domain column by its base type (getBaseTypeAndTypmod).
            let mut depth = 0;
            while let Some(&(base, base_mod)) = domains.get(&type_oid) {
                type_oid = base;
                typmod = base_mod;
                depth += 1;
                if depth > 32 {
                    break;
                }
            }
            c.0.columns.push(ColumnMeta {
                name: r.get(9),
                attnum: r.get::<_, i32>(8) as i16,
                type_oid,
                typlen: r.get::<_, i32>(12) as i16,
                typmod,
            });
        }
    }
    finish(current.take(), &mut tables);

    let oids: Vec<i64> = tables.values().map(|t| i64::from(t.oid)).collect();
    let mut by_oid: HashMap<u32, (bool, u64)> = HashMap::new();
    if !oids.is_empty() {
        for r in client.query(OUTPUT_CATALOG_SQL, &[&oids]).await? {
            let text: String = r.get(2);
            by_oid.insert(
                r.get::<_, i64>(0) as u32,
                (r.get(1), xxhash_rust::xxh3::xxh3_64(text.as_bytes())),
            );
        }
    }
    let tables = tables.into_values().map(|mut meta| {
        if let Some(&(names_objects, hash)) = by_oid.get(&meta.oid) {
            meta.output_catalog = hash;
            if names_objects {
                meta.unservable = meta
                    .unservable
                    .or(Some("a column's output names catalog objects (reg* type)"));
            }
        }
        meta.layout = meta.layout_hash();
        meta
    });
    Ok(CacheSchema::new(tables, defaults))
}

/// The longest a schema load may take before the refresh gives up on it.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(10);
