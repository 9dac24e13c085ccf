//! Which keys a statement names, for the access statistics.
//!
//! A key is recorded only when the statement selects by the table's key column: the policy's
//! `key` if a policy covering the table sets one, else the table's single-column primary key
//! from the [`crate::catalog`]. Literal keys come from the statement text; `$n` keys from
//! the Bind message, in text format as sent, in binary format when the parameter's type
//! (declared in Parse, else the key column's, from the catalog) is one the proxy can print.

use super::bind::{binary_key_text, oid, Bind, Param};
use crate::catalog::CatalogSnapshot;
use crate::context::ProxyContext;
use crate::placement::PolicySet;
use crate::sql::{Classified, KeyRef, KeyValue, Shape, TableRef};
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
    /// Point-read shapes already resolved to their table's key column, direct-mapped by the
    /// shape's address. A session runs a few shapes over and over (its prepared statements,
    /// the classifier's cached shapes), and resolving one costs two catalog lookups, a walk
    /// over the policies' table patterns and an allocation: about a tenth of the proxy's own
    /// CPU per statement before. Cleared whenever the policies or the catalog change.
    memo: [Option<Resolved>; MEMO_SLOTS],
}

/// Slots of [`KeyResolver::memo`].
const MEMO_SLOTS: usize = 8;

/// A point-read shape and where its keys are recorded.
#[derive(Debug)]
struct Resolved {
    /// Held so that its address cannot be reused by another shape while the entry lives.
    shape: Arc<Shape>,
    /// `None`: the statement's column is not the table's key column, nothing is recorded.
    target: Option<KeyTarget>,
}

/// The table whose key a statement names, schema-qualified as the statistics name tables,
/// and the key column's type when known.
#[derive(Debug)]
struct KeyTarget {
    table: TableRef,
    type_oid: Option<u32>,
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
            memo: Default::default(),
        }
    }

    /// Picks up a reloaded policy set or catalog.
    pub fn refresh(&mut self, ctx: &ProxyContext) {
        let g = ctx.policies.generation();
        if g != self.policy_generation {
            self.policies = ctx.policies.current();
            self.policy_generation = g;
            self.memo = Default::default();
        }
        let g = ctx.catalog.generation();
        if g != self.catalog_generation {
            self.catalog = ctx.catalog.snapshot();
            self.catalog_generation = g;
            self.memo = Default::default();
        }
    }

    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    fn key_column(&self, schema: &str, table: &str) -> Option<KeyColumn<'_>> {
        let pk = self.catalog.primary_key(schema, table);
        if let Some(m) = self.policies.policy_for(schema, table) {
            if let Some(key) = &m.policy.key {
                return Some(KeyColumn {
                    name: key,
                    type_oid: self.catalog.key_type(schema, table, key),
                });
            }
        }
        pk.map(|pk| KeyColumn {
            name: &pk.name,
            type_oid: Some(pk.type_oid),
        })
    }

    /// Where the keys of `column` in `table` are recorded, if `column` is the key column.
    fn target(&self, table: &TableRef, column: &str) -> Option<KeyTarget> {
        let (schema, name) = crate::router::resolve(table);
        let key_column = self.key_column(schema, name)?;
        (key_column.name == column).then(|| KeyTarget {
            table: TableRef::new(Some(schema), name),
            type_oid: key_column.type_oid,
        })
    }

    /// Records the keys of a point read (and, with `bind`, its bound `$n` keys).
    pub fn record(
        &mut self,
        ctx: &ProxyContext,
        stmt: &Classified,
        bind: Option<(&Bind<'_>, &[u32])>,
    ) {
        if !ctx.stats.is_enabled() {
            return;
        }
        // A Bind is recorded before its Execute is routed (which refreshes too).
        self.refresh(ctx);
        let shape = &stmt.shape;
        if let Some(p) = &shape.point_read {
            let slot = (Arc::as_ptr(shape) as usize / std::mem::align_of::<Shape>()) % MEMO_SLOTS;
            let known = self.memo[slot]
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(&r.shape, shape));
            if !known {
                self.memo[slot] = Some(Resolved {
                    shape: Arc::clone(shape),
                    target: self.target(&p.table, &p.column),
                });
            }
            if let Some(Resolved {
                target: Some(target),
                ..
            }) = &self.memo[slot]
            {
                record_keys(ctx, stmt, target, &p.keys, Access::Read, bind);
            }
        }
        for w in &shape.write_keys {
            for (column, keys) in &w.by_column {
                if let Some(target) = self.target(&w.table, column) {
                    record_keys(ctx, stmt, &target, keys, Access::Write, bind);
                }
            }
        }
    }
}

fn record_keys(
    ctx: &ProxyContext,
    stmt: &Classified,
    target: &KeyTarget,
    keys: &[KeyValue],
    access: Access,
    bind: Option<(&Bind<'_>, &[u32])>,
) {
    for k in keys {
        let text = match stmt.key(k) {
            Some(KeyRef::Param(n)) => bind.and_then(|(b, types)| {
                let declared = Some(super::bind::declared_type(types, n)).filter(|&t| t != 0);
                param_text(b.param(n)?, declared.or(target.type_oid))
            }),
            Some(r) => r.as_text(),
            None => None,
        };
        if let Some(text) = text {
            let text = match target.type_oid {
                Some(oid::UUID) => Cow::Owned(text.to_ascii_lowercase()),
                _ => text,
            };
            ctx.stats.record_key(&target.table, &text, access);
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
