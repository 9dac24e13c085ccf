//! Which keys a statement names, for the access statistics.
//!
//! A key is recorded only when the statement selects by the table's key column: the policy's
//! `key` if a policy covering the table sets one, else the table's single-column primary key
//! from the [`crate::catalog`]. Literal keys come from the statement text; `$n` keys from
//! the Bind message, in text format as sent, in binary format when the parameter's type
//! (declared in Parse, else the key column's) is one the proxy can print.

use super::bind::{binary_key_text, oid, Bind, Param};
use crate::catalog::CatalogSnapshot;
use crate::context::ProxyContext;
use crate::placement::PolicySet;
use crate::sql::{Classified, KeyRef, KeyValue, TableRef};
use crate::stats::Access;
use std::borrow::Cow;
use std::sync::Arc;

/// A session's view of the policies and the catalog, refreshed when their generation moves,
/// so the hot path reads them without locks.
#[derive(Debug)]
pub struct KeyResolver {
    policies: Arc<PolicySet>,
    policy_generation: u64,
    catalog: Arc<CatalogSnapshot>,
    catalog_generation: u64,
}

/// The key column of a table: its name and, when known, its type.
struct KeyColumn<'a> {
    name: &'a str,
    type_oid: Option<u32>,
}

impl KeyResolver {
    pub fn new(ctx: &ProxyContext) -> Self {
        KeyResolver {
            policies: ctx.policies.current(),
            policy_generation: ctx.policies.generation(),
            catalog: ctx.catalog.snapshot(),
            catalog_generation: ctx.catalog.generation(),
        }
    }

    /// Picks up a reloaded policy set or catalog.
    pub fn refresh(&mut self, ctx: &ProxyContext) {
        let g = ctx.policies.generation();
        if g != self.policy_generation {
            self.policies = ctx.policies.current();
            self.policy_generation = g;
        }
        let g = ctx.catalog.generation();
        if g != self.catalog_generation {
            self.catalog = ctx.catalog.snapshot();
            self.catalog_generation = g;
        }
    }

    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    fn key_column(&self, schema: &str, table: &str) -> Option<KeyColumn<'_>> {
        let pk = self.catalog.primary_key(schema, table);
        if let Some(m) = self.policies.policy_for(schema, table) {
            if let Some(key) = &m.policy.key {
                let type_oid = pk.filter(|pk| *pk.name == **key).map(|pk| pk.type_oid);
                return Some(KeyColumn {
                    name: key,
                    type_oid,
                });
            }
        }
        pk.map(|pk| KeyColumn {
            name: &pk.name,
            type_oid: Some(pk.type_oid),
        })
    }

    /// Records the keys of a point read (and, with `bind`, its bound `$n` keys).
    pub fn record(&self, ctx: &ProxyContext, stmt: &Classified, bind: Option<(&Bind<'_>, &[u32])>) {
        if !ctx.stats.is_enabled() {
            return;
        }
        let shape = &stmt.shape;
        if let Some(p) = &shape.point_read {
            self.record_keys(ctx, stmt, &p.table, &p.column, &p.keys, Access::Read, bind);
        }
        for w in &shape.write_keys {
            for (column, keys) in &w.by_column {
                self.record_keys(ctx, stmt, &w.table, column, keys, Access::Write, bind);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_keys(
        &self,
        ctx: &ProxyContext,
        stmt: &Classified,
        table: &TableRef,
        column: &str,
        keys: &[KeyValue],
        access: Access,
        bind: Option<(&Bind<'_>, &[u32])>,
    ) {
        let (schema, name) = crate::router::resolve(table);
        let Some(key_column) = self.key_column(schema, name) else {
            return;
        };
        if key_column.name != column {
            return;
        }
        // Statistics name tables schema-qualified, as policies and the catalog do.
        let qualified;
        let table = if table.schema.is_some() {
            table
        } else {
            qualified = TableRef::new(Some(schema), name);
            &qualified
        };
        for k in keys {
            let text = match stmt.key(k) {
                Some(KeyRef::Param(n)) => bind.and_then(|(b, types)| {
                    let declared = Some(super::bind::declared_type(types, n)).filter(|&t| t != 0);
                    param_text(b.param(n)?, declared.or(key_column.type_oid))
                }),
                Some(r) => r.as_text().map(|c| Cow::Owned(c.into_owned())),
                None => None,
            };
            if let Some(text) = text {
                let text = match key_column.type_oid {
                    Some(oid::UUID) => Cow::Owned(text.to_ascii_lowercase()),
                    _ => text,
                };
                ctx.stats.record_key(table, &text, access);
            }
        }
    }
}

fn param_text(p: Param<'_>, type_oid: Option<u32>) -> Option<Cow<'_, str>> {
    match p {
        Param::Null => None,
        Param::Text(t) => std::str::from_utf8(t).ok().map(Cow::Borrowed),
        Param::Binary(v) => binary_key_text(v, type_oid?).map(Cow::Owned),
    }
}
