//! Finds point reads and text predicates in a parsed SELECT, and the keys a parsed
//! INSERT, UPDATE or DELETE names.
//!
//! Both are recognized structurally and conservatively: anything not matching the narrow
//! patterns below is simply not recorded, and the statement passes through to Postgres.
//! Keys and patterns are recorded as [`KeyValue`]s: the parse text carries `$N` for each
//! literal (N past the statement's own parameters), so a placeholder in the AST is either
//! one of the client's parameters or names the literal by index.

use sqlparser::ast::{
    Assignment, AssignmentTarget, BinaryOperator, CastKind, ConflictTarget, Delete, Expr,
    FromTable, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident,
    Insert, LimitClause, ObjectName, OnConflict, OnConflictAction, OnInsert, OrderBy, OrderByKind,
    OrderBySort, Query, Select, SelectFlavor, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    Statement, TableAlias, TableFactor, TableObject, TableWithJoins, UnaryOperator, Update, Value,
    WildcardAdditionalOptions,
};

use super::{
    FullText, KeyValue, PointRead, ProjectedColumn, Projection, ShapeFlags, TableRef, TextOp,
    TextPredicate, TsQueryFn, TsVectorSource, WriteKeys, WriteKind,
};

/// How to read placeholders in the AST of one parse text.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyCtx {
    /// The statement's own highest `$n`.
    pub max_param: u16,
    /// Literal i was printed as `$(base + i)`.
    pub base: u32,
    /// False when the parse text used dummy literals only: no placeholder names a literal.
    pub literal_keys: bool,
}

impl KeyCtx {
    fn placeholder(&self, text: &str) -> Option<KeyValue> {
        let n: u32 = text.strip_prefix('$')?.parse().ok()?;
        if n >= 1 && n <= u32::from(self.max_param) {
            return u16::try_from(n).ok().map(KeyValue::Param);
        }
        if self.literal_keys && n >= self.base {
            return usize::try_from(n - self.base).ok().map(KeyValue::Literal);
        }
        None
    }

    /// A key expression: a parameter or literal, optionally negated (literals only) and/or
    /// cast once. Returns the key and the cast's type, lowercased.
    fn key(&self, e: &Expr) -> Option<(KeyValue, Option<Box<str>>)> {
        match e {
            Expr::Nested(inner) => self.key(inner),
            Expr::Cast {
                kind: CastKind::Cast | CastKind::DoubleColon,
                expr,
                data_type,
                format: None,
            } => {
                let (k, cast) = self.key(expr)?;
                if cast.is_some() {
                    return None;
                }
                Some((k, Some(data_type.to_string().to_ascii_lowercase().into())))
            }
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match self.key(expr)? {
                (KeyValue::Literal(i), cast) => Some((KeyValue::NegatedLiteral(i), cast)),
                _ => None,
            },
            Expr::Value(v) => match &v.value {
                Value::Placeholder(p) => self.placeholder(p).map(|k| (k, None)),
                _ => None,
            },
            _ => None,
        }
    }

    /// A key without cast or negation (LIMIT, ESCAPE).
    fn plain_key(&self, e: &Expr) -> Option<KeyValue> {
        match self.key(e)? {
            (k @ (KeyValue::Param(_) | KeyValue::Literal(_)), None) => Some(k),
            _ => None,
        }
    }

    /// A key, ignoring any cast (text search configurations: `'english'::regconfig`).
    fn key_any_cast(&self, e: &Expr) -> Option<KeyValue> {
        match self.key(e)? {
            (k @ (KeyValue::Param(_) | KeyValue::Literal(_)), _) => Some(k),
            _ => None,
        }
    }
}

/// The single base table a SELECT reads (or a write targets), with its alias.
pub(crate) struct BaseTable<'a> {
    pub table: TableRef,
    pub alias: Option<&'a str>,
    /// Other tables are in scope (`UPDATE .. FROM`, `DELETE .. USING`): an unqualified
    /// column may belong to any of them (only the catalog knows), so only columns qualified
    /// with this table's name or alias are its columns.
    pub qualified_only: bool,
}

fn ident_parts(name: &ObjectName) -> Option<Vec<&str>> {
    name.0
        .iter()
        .map(|p| p.as_ident().map(|i: &Ident| i.value.as_str()))
        .collect()
}

/// A table name as a [`TableRef`] (`db.schema.table` keeps `schema`).
pub(crate) fn table_ref(name: &ObjectName) -> Option<TableRef> {
    let parts = ident_parts(name)?;
    match parts.as_slice() {
        [t] => Some(TableRef::new(None, t)),
        [.., s, t] => Some(TableRef::new(Some(s), t)),
        [] => None,
    }
}

/// sqlparser does not know PostgreSQL's `ONLY t` (t without its inheritance children) and
/// reads `FROM ONLY t` as table `only` with alias `t`. ONLY is a reserved word in
/// PostgreSQL, so an unquoted table named `only` is always that misreading.
pub(crate) fn is_only_keyword(name: &ObjectName) -> bool {
    match name.0.as_slice() {
        [part] => part
            .as_ident()
            .is_some_and(|i| i.quote_style.is_none() && i.value == "only"),
        _ => false,
    }
}

/// The table `ONLY t` names, given the misread table name and alias (see
/// [`is_only_keyword`]); `None` when `name` is not the misreading.
pub(crate) fn only_table(name: &ObjectName, alias: Option<&TableAlias>) -> Option<TableRef> {
    if !is_only_keyword(name) {
        return None;
    }
    let a = alias?;
    a.columns
        .is_empty()
        .then(|| TableRef::new(None, &a.name.value))
}

/// `FROM <one plain table> [[AS] alias]`, nothing else.
pub(crate) fn single_table(select: &Select) -> Option<BaseTable<'_>> {
    let [from] = select.from.as_slice() else {
        return None;
    };
    plain_table(from, false)
}

/// `<plain table> [[AS] alias]` without joins. `ONLY t` is accepted for write targets
/// only (`allow_only`): it narrows a write to fewer rows, so the keys still bound what
/// changed, but a read of `ONLY t` is not a read of `t`.
fn plain_table(from: &TableWithJoins, allow_only: bool) -> Option<BaseTable<'_>> {
    if !from.joins.is_empty() {
        return None;
    }
    match &from.relation {
        TableFactor::Table {
            name,
            alias,
            args: None,
            with_hints,
            version: None,
            with_ordinality: false,
            partitions,
            json_path: None,
            sample: None,
            index_hints,
        } if with_hints.is_empty() && partitions.is_empty() && index_hints.is_empty() => {
            if is_only_keyword(name) {
                return allow_only
                    .then(|| only_table(name, alias.as_ref()))
                    .flatten()
                    .map(|table| BaseTable {
                        table,
                        alias: None,
                        qualified_only: false,
                    });
            }
            let alias = match alias {
                None => None,
                Some(a) if a.columns.is_empty() => Some(a.name.value.as_str()),
                Some(_) => return None,
            };
            // `db.schema.t` works only when `db` is the session's database (else Postgres
            // raises "cross-database references are not implemented"), which the
            // classifier does not know: such a read is not a single-table read.
            if name.0.len() > 2 {
                return None;
            }
            Some(BaseTable {
                table: table_ref(name)?,
                alias,
                qualified_only: false,
            })
        }
        _ => None,
    }
}

fn strip_nested(mut e: &Expr) -> &Expr {
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    e
}

/// A column of the base table: `col`, `alias.col` (or `table.col` without alias),
/// `schema.table.col` when the FROM named that schema.
fn column<'e>(e: &'e Expr, t: &BaseTable<'_>) -> Option<&'e str> {
    match strip_nested(e) {
        Expr::Identifier(id) => (!t.qualified_only).then_some(id.value.as_str()),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [q, c] => {
                let ok = match t.alias {
                    Some(a) => q.value == a,
                    None => *q.value == *t.table.name,
                };
                ok.then_some(c.value.as_str())
            }
            [s, q, c] => {
                let ok = t.alias.is_none()
                    && t.table.schema.as_deref() == Some(s.value.as_str())
                    && *q.value == *t.table.name;
                ok.then_some(c.value.as_str())
            }
            _ => None,
        },
        _ => None,
    }
}

/// Splits a WHERE clause into its top-level AND conjuncts (iteratively: long chains must
/// not recurse).
pub(crate) fn conjuncts(e: &Expr) -> Vec<&Expr> {
    let mut out = Vec::new();
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        match strip_nested(e) {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                stack.push(right);
                stack.push(left);
            }
            other => out.push(other),
        }
    }
    out
}

fn wildcard_is_plain(o: &WildcardAdditionalOptions) -> bool {
    o.opt_ilike.is_none()
        && o.opt_exclude.is_none()
        && o.opt_except.is_none()
        && o.opt_replace.is_none()
        && o.opt_rename.is_none()
        && o.opt_alias.is_none()
}

fn projection(items: &[SelectItem], t: &BaseTable<'_>) -> Option<Projection> {
    match items {
        [SelectItem::Wildcard(o)] if wildcard_is_plain(o) => return Some(Projection::All),
        [SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(n), o)]
            if wildcard_is_plain(o) =>
        {
            let parts = ident_parts(n)?;
            let ok = match (parts.as_slice(), t.alias) {
                ([q], Some(a)) => *q == a,
                ([q], None) => *q == &*t.table.name,
                _ => false,
            };
            return ok.then_some(Projection::All);
        }
        _ => {}
    }
    let mut cols = Vec::with_capacity(items.len());
    for item in items {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.as_str())),
            _ => return None,
        };
        cols.push(ProjectedColumn {
            name: column(expr, t)?.into(),
            alias: alias.map(Into::into),
        });
    }
    Some(Projection::Columns(cols))
}

/// The key column of a point read, its keys, and their common cast.
struct KeyCondition {
    column: Box<str>,
    keys: Vec<KeyValue>,
    cast: Option<Box<str>>,
}

/// `col = key`, `key = col`, `col IN (key, ...)`.
fn key_condition(e: &Expr, t: &BaseTable<'_>, ctx: &KeyCtx) -> Option<KeyCondition> {
    match strip_nested(e) {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            let (col, (k, cast)) = match (column(left, t), column(right, t)) {
                (Some(c), None) => (c, ctx.key(right)?),
                (None, Some(c)) => (c, ctx.key(left)?),
                _ => return None,
            };
            Some(KeyCondition {
                column: col.into(),
                keys: vec![k],
                cast,
            })
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } => {
            let col = column(expr, t)?;
            let mut keys = Vec::with_capacity(list.len());
            let mut common: Option<Option<Box<str>>> = None;
            for item in list {
                let (k, cast) = ctx.key(item)?;
                match &common {
                    None => common = Some(cast),
                    Some(c) if *c == cast => {}
                    Some(_) => return None,
                }
                keys.push(k);
            }
            Some(KeyCondition {
                column: col.into(),
                keys,
                cast: common.flatten(),
            })
        }
        _ => None,
    }
}

fn select_is_plain(s: &Select) -> bool {
    s.distinct.is_none()
        && s.top.is_none()
        && s.into.is_none()
        && s.optimizer_hints.is_empty()
        && s.select_modifiers.is_none()
        && s.exclude.is_none()
        && s.lateral_views.is_empty()
        && s.prewhere.is_none()
        && s.connect_by.is_empty()
        && matches!(&s.group_by, GroupByExpr::Expressions(g, m) if g.is_empty() && m.is_empty())
        && s.cluster_by.is_empty()
        && s.distribute_by.is_empty()
        && s.sort_by.is_empty()
        && s.having.is_none()
        && s.named_window.is_empty()
        && s.qualify.is_none()
        && s.value_table_mode.is_none()
        && matches!(s.flavor, SelectFlavor::Standard)
}

fn flags_allow_point_read(f: &ShapeFlags) -> bool {
    !(f.has_volatile_functions
        || f.has_unknown_functions
        || f.has_aggregate
        || f.has_window
        || f.has_locking_clause
        || f.has_cte
        || f.has_writing_cte
        || f.has_subquery
        || f.has_join
        || f.has_set_operation
        || f.has_group_by
        || f.has_having
        || f.has_distinct
        || f.has_distinct_on
        || f.has_offset
        || f.has_select_into
        || f.has_table_function)
}

/// The top-level SELECT of a plain query (no set operation), if any.
pub(crate) fn top_select(q: &Query) -> Option<&Select> {
    match q.body.as_ref() {
        SetExpr::Select(s) => Some(s),
        _ => None,
    }
}

/// A point read, if `q` is exactly one (see [`PointRead`]).
pub(crate) fn point_read(q: &Query, flags: &ShapeFlags, ctx: &KeyCtx) -> Option<PointRead> {
    if !flags_allow_point_read(flags)
        || q.with.is_some()
        || q.fetch.is_some()
        || !q.locks.is_empty()
        || q.for_clause.is_some()
        || q.settings.is_some()
        || q.format_clause.is_some()
        || !q.pipe_operators.is_empty()
    {
        return None;
    }
    let limit = match &q.limit_clause {
        None => None,
        Some(LimitClause::LimitOffset {
            limit: Some(l),
            offset: None,
            limit_by,
        }) if limit_by.is_empty() => Some(ctx.plain_key(l)?),
        // LIMIT ALL
        Some(LimitClause::LimitOffset {
            limit: None,
            offset: None,
            limit_by,
        }) if limit_by.is_empty() => None,
        Some(_) => return None,
    };
    let select = top_select(q)?;
    if !select_is_plain(select) {
        return None;
    }
    let t = single_table(select)?;
    let projection = projection(&select.projection, &t)?;
    let cond = key_condition(select.selection.as_ref()?, &t, ctx)?;
    let order_by_key = match &q.order_by {
        None => None,
        Some(o) => Some(order_by_key(o, &t, &cond.column, &projection)?),
    };
    Some(PointRead {
        alias: t.alias.map(Into::into),
        table: t.table,
        column: cond.column,
        keys: cond.keys,
        key_cast: cond.cast,
        projection,
        limit,
        order_by_key,
    })
}

/// `ORDER BY <key column> [ASC | DESC] [NULLS ..]` (NULLS does not matter: no row with a
/// NULL key matches `key = ..`): `Some(descending)`. A bare name that is also an output
/// column's name sorts by that output column (Postgres's rule), so it must be the key.
fn order_by_key(
    o: &OrderBy,
    t: &BaseTable<'_>,
    key: &str,
    projection: &Projection,
) -> Option<bool> {
    if o.interpolate.is_some() {
        return None;
    }
    let OrderByKind::Expressions(exprs) = &o.kind else {
        return None;
    };
    let [e] = exprs.as_slice() else {
        return None;
    };
    if e.with_fill.is_some() || column(&e.expr, t)? != key {
        return None;
    }
    if let (Expr::Identifier(_), Projection::Columns(cols)) = (strip_nested(&e.expr), projection) {
        let other = cols
            .iter()
            .any(|c| *c.alias.as_deref().unwrap_or(&c.name) == *key && *c.name != *key);
        if other {
            return None;
        }
    }
    match e.options.sort {
        None | Some(OrderBySort::Asc) => Some(false),
        Some(OrderBySort::Desc) => Some(true),
        Some(OrderBySort::Using(_)) => None,
    }
}

/// Text predicates of the top-level AND chain of a single-table SELECT, and whether the
/// chain has an OR conjunct / conjuncts other than text predicates and the point-read
/// condition.
pub(crate) fn text_predicates(
    q: &Query,
    point_read: bool,
    ctx: &KeyCtx,
) -> (Vec<TextPredicate>, bool, bool) {
    let Some(select) = top_select(q) else {
        return (Vec::new(), false, false);
    };
    let Some(where_) = &select.selection else {
        return (Vec::new(), false, false);
    };
    let conj = conjuncts(where_);
    let has_or = conj.iter().any(|c| {
        matches!(
            c,
            Expr::BinaryOp {
                op: BinaryOperator::Or,
                ..
            }
        )
    });
    let Some(t) = single_table(select) else {
        return (Vec::new(), has_or, true);
    };
    let mut preds = Vec::new();
    let mut other = false;
    for c in conj {
        if let Some(p) = text_predicate(c, &t, ctx) {
            preds.push(p);
        } else if !(point_read && key_condition(c, &t, ctx).is_some()) {
            other = true;
        }
    }
    (preds, has_or, other)
}

fn text_predicate(e: &Expr, t: &BaseTable<'_>, ctx: &KeyCtx) -> Option<TextPredicate> {
    let like = |op: TextOp,
                negated: bool,
                expr: &Expr,
                pattern: &Expr,
                escape: Option<&Expr>|
     -> Option<TextPredicate> {
        let col = column(expr, t)?;
        let (pattern, pattern_cast) = match ctx.key(pattern)? {
            (k @ (KeyValue::Param(_) | KeyValue::Literal(_)), c) => (k, c),
            _ => return None,
        };
        let escape = match escape {
            None => None,
            Some(e) => Some(ctx.plain_key(e)?),
        };
        Some(TextPredicate {
            table: t.table.clone(),
            column: col.into(),
            op,
            negated,
            pattern,
            pattern_cast,
            escape,
        })
    };
    match e {
        Expr::Like {
            negated,
            any: false,
            expr,
            pattern,
            escape_char,
        } => like(
            TextOp::Like,
            *negated,
            expr,
            pattern,
            escape_char.as_deref(),
        ),
        Expr::ILike {
            negated,
            any: false,
            expr,
            pattern,
            escape_char,
        } => like(
            TextOp::ILike,
            *negated,
            expr,
            pattern,
            escape_char.as_deref(),
        ),
        Expr::BinaryOp { left, op, right } => {
            let (op, negated) = match op {
                BinaryOperator::PGLikeMatch => (TextOp::Like, false),
                BinaryOperator::PGNotLikeMatch => (TextOp::Like, true),
                BinaryOperator::PGILikeMatch => (TextOp::ILike, false),
                BinaryOperator::PGNotILikeMatch => (TextOp::ILike, true),
                BinaryOperator::PGRegexMatch => (TextOp::Regex, false),
                BinaryOperator::PGRegexNotMatch => (TextOp::Regex, true),
                BinaryOperator::PGRegexIMatch => (TextOp::RegexI, false),
                BinaryOperator::PGRegexNotIMatch => (TextOp::RegexI, true),
                BinaryOperator::AtAt => {
                    return full_text(left, right, t, ctx)
                        .or_else(|| full_text(right, left, t, ctx))
                }
                _ => return None,
            };
            like(op, negated, left, right, None)
        }
        _ => None,
    }
}

/// The plain positional arguments of a function call with no extras, and its bare name
/// (unqualified or `pg_catalog.`).
fn plain_call(f: &Function) -> Option<(&str, Vec<&Expr>)> {
    if f.uses_odbc_syntax
        || !matches!(f.parameters, FunctionArguments::None)
        || f.filter.is_some()
        || f.null_treatment.is_some()
        || f.over.is_some()
        || !f.within_group.is_empty()
    {
        return None;
    }
    let name = match ident_parts(&f.name)?.as_slice() {
        [n] | ["pg_catalog", n] => *n,
        _ => return None,
    };
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return None;
    }
    let args = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((name, args))
}

fn full_text(
    vector: &Expr,
    query: &Expr,
    t: &BaseTable<'_>,
    ctx: &KeyCtx,
) -> Option<TextPredicate> {
    let Expr::Function(qf) = strip_nested(query) else {
        return None;
    };
    let (qname, qargs) = plain_call(qf)?;
    let query_fn = match qname {
        "to_tsquery" => TsQueryFn::ToTsquery,
        "plainto_tsquery" => TsQueryFn::PlaintoTsquery,
        "phraseto_tsquery" => TsQueryFn::PhrasetoTsquery,
        "websearch_to_tsquery" => TsQueryFn::WebsearchToTsquery,
        _ => return None,
    };
    let (query_config, pattern_expr) = match qargs.as_slice() {
        [p] => (None, *p),
        [c, p] => (Some(ctx.key_any_cast(c)?), *p),
        _ => return None,
    };
    let (pattern, pattern_cast) = match ctx.key(pattern_expr)? {
        (k @ (KeyValue::Param(_) | KeyValue::Literal(_)), c) => (k, c),
        _ => return None,
    };
    let (col, vector) = match column(vector, t) {
        Some(c) => (c, TsVectorSource::Column),
        None => {
            let Expr::Function(vf) = strip_nested(vector) else {
                return None;
            };
            let (vname, vargs) = plain_call(vf)?;
            if vname != "to_tsvector" {
                return None;
            }
            match vargs.as_slice() {
                [d] => (column(d, t)?, TsVectorSource::ToTsvector { config: None }),
                [c, d] => (
                    column(d, t)?,
                    TsVectorSource::ToTsvector {
                        config: Some(ctx.key_any_cast(c)?),
                    },
                ),
                _ => return None,
            }
        }
    };
    Some(TextPredicate {
        table: t.table.clone(),
        column: col.into(),
        op: TextOp::FullText(FullText {
            query_fn,
            query_config,
            vector,
        }),
        negated: false,
        pattern,
        pattern_cast,
        escape: None,
    })
}

/// The keys a top-level INSERT, UPDATE or DELETE names (see [`WriteKeys`]); `None` for
/// other statements and for targets that are not a plain table.
///
/// Conservative like the point-read patterns: a condition or value not understood is left
/// out, which only widens what the write may have changed.
pub(crate) fn write_keys(stmt: &Statement, ctx: &KeyCtx) -> Option<WriteKeys> {
    match stmt {
        Statement::Update(u) => update_keys(u, ctx),
        Statement::Delete(d) => delete_keys(d, ctx),
        Statement::Insert(i) => insert_keys(i, ctx),
        _ => None,
    }
}

/// `(column, keys)` for every top-level AND conjunct of `selection` that is a key condition
/// on `t`. An OR conjunct restricts nothing on its own, so it contributes nothing.
fn where_keys(
    selection: Option<&Expr>,
    t: &BaseTable<'_>,
    ctx: &KeyCtx,
) -> Vec<(Box<str>, Vec<KeyValue>)> {
    let Some(w) = selection else {
        return Vec::new();
    };
    conjuncts(w)
        .into_iter()
        .filter_map(|c| key_condition(c, t, ctx))
        .filter(|k| value_preserving_cast(k.cast.as_deref()))
        .map(|k| (k.column, k.keys))
        .collect()
}

/// Whether a key under this cast (as [`KeyCtx::key`] prints it) is still the value the
/// row holds. Point reads expose their cast and let the router judge; [`WriteKeys`] has no
/// room for one, so only casts to the usual key types pass. A type modifier can truncate
/// or round (`'abc'::varchar(2)` is `'ab'`, `char` is `char(1)`), and other types'
/// values need not read back as the literal was written.
fn value_preserving_cast(cast: Option<&str>) -> bool {
    matches!(
        cast,
        None | Some(
            "int"
                | "integer"
                | "int2"
                | "int4"
                | "int8"
                | "smallint"
                | "bigint"
                | "text"
                | "varchar"
                | "character varying"
                | "uuid"
        )
    )
}

/// The columns that SET assignments change, or `None` when one cannot be named (then the
/// row may have moved to any key, and the caller records no keys).
///
/// `SET c.field = ..` and `SET c[1] = ..` change column `c`: PostgreSQL does not allow a
/// table qualifier on a SET target, so the first name part is always the column.
fn assigned_columns(assignments: &[Assignment]) -> Option<Vec<Box<str>>> {
    let mut out: Vec<Box<str>> = Vec::with_capacity(assignments.len());
    let mut add = |name: &ObjectName| -> Option<()> {
        let col = name.0.first()?.as_ident()?.value.as_str();
        if !out.iter().any(|c| **c == *col) {
            out.push(col.into());
        }
        Some(())
    };
    for a in assignments {
        match &a.target {
            AssignmentTarget::ColumnName(n) => add(n)?,
            AssignmentTarget::Tuple(names) => {
                for n in names {
                    add(n)?;
                }
            }
        }
    }
    Some(out)
}

/// `UPDATE t [[AS] a] SET .. [FROM ..] [WHERE ..]`.
fn update_keys(u: &Update, ctx: &KeyCtx) -> Option<WriteKeys> {
    let mut t = plain_table(&u.table, true)?;
    t.qualified_only = u.from.is_some();
    let (by_column, assigned) = match assigned_columns(&u.assignments) {
        Some(assigned) => (where_keys(u.selection.as_ref(), &t, ctx), assigned),
        None => (Vec::new(), Vec::new()),
    };
    Some(WriteKeys {
        table: t.table,
        by_column,
        assigned,
        kind: WriteKind::Update,
    })
}

/// `DELETE FROM t [[AS] a] [USING ..] [WHERE ..]`.
fn delete_keys(d: &Delete, ctx: &KeyCtx) -> Option<WriteKeys> {
    let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &d.from;
    // Several targets is MySQL's multi-table DELETE, not PostgreSQL.
    let ([target], true) = (from.as_slice(), d.tables.is_empty()) else {
        return None;
    };
    let mut t = plain_table(target, true)?;
    t.qualified_only = d.using.is_some();
    Some(WriteKeys {
        by_column: where_keys(d.selection.as_ref(), &t, ctx),
        table: t.table,
        assigned: Vec::new(),
        kind: WriteKind::Delete,
    })
}

/// `INSERT INTO t [AS a] (c1, ..) VALUES (..), .. [ON CONFLICT ..] [RETURNING ..]`.
///
/// Without a column list, values fill the table's columns in catalog order, which the
/// classifier does not know: no keys. `INSERT .. SELECT` inserts rows no literal names.
fn insert_keys(i: &Insert, ctx: &KeyCtx) -> Option<WriteKeys> {
    let TableObject::TableName(name) = &i.table else {
        return None;
    };
    let table = table_ref(name)?;
    // Which of the listed columns keep their keys (`None`: all of them), and what the
    // conflict action assigns. A DO UPDATE changes the existing row that conflicts, which
    // shares only the conflict target's values with the proposed row: its other columns
    // may hold any key. Without a column target the columns are unknown.
    let (keep, assigned): (Option<Vec<&str>>, Vec<Box<str>>) = match &i.on {
        None => (None, Vec::new()),
        Some(OnInsert::OnConflict(OnConflict {
            action: OnConflictAction::DoNothing,
            ..
        })) => (None, Vec::new()),
        Some(OnInsert::OnConflict(OnConflict {
            conflict_target,
            action: OnConflictAction::DoUpdate(du),
        })) => {
            let keep = match conflict_target {
                Some(ConflictTarget::Columns(cols)) => {
                    cols.iter().map(|c| c.value.as_str()).collect()
                }
                Some(ConflictTarget::OnConstraint(_)) | None => Vec::new(),
            };
            match assigned_columns(&du.assignments) {
                Some(assigned) => (Some(keep), assigned),
                None => (Some(Vec::new()), Vec::new()),
            }
        }
        // MySQL's ON DUPLICATE KEY UPDATE: the conflicting key is unknown.
        Some(OnInsert::DuplicateKeyUpdate(a)) => {
            (Some(Vec::new()), assigned_columns(a).unwrap_or_default())
        }
        // Forms a later sqlparser may add: nothing is known.
        Some(_) => (Some(Vec::new()), Vec::new()),
    };
    let by_column = match (i.source.as_deref(), insert_is_plain(i)) {
        (Some(q), true) => values_keys(&i.columns, q, keep.as_deref(), ctx),
        _ => Vec::new(),
    };
    Some(WriteKeys {
        table,
        by_column,
        assigned,
        kind: WriteKind::Insert,
    })
}

/// No dialect extras that change which rows an INSERT writes (MySQL `REPLACE`/`IGNORE`
/// /`SET`, SQLite `OR ..`, Hive partitions, multi-table inserts).
fn insert_is_plain(i: &Insert) -> bool {
    i.or.is_none()
        && !i.ignore
        && !i.replace_into
        && !i.overwrite
        && i.assignments.is_empty()
        && i.partitioned.is_none()
        && i.after_columns.is_empty()
        && i.format_clause.is_none()
        && i.multi_table_insert_type.is_none()
        && i.multi_table_into_clauses.is_empty()
        && i.multi_table_when_clauses.is_empty()
        && i.multi_table_else_clause.is_none()
}

/// Per listed column whose value is a key in every row of a plain `VALUES` list, the
/// column and its values in row order. `keep` limits the columns (ON CONFLICT DO UPDATE).
fn values_keys(
    columns: &[ObjectName],
    q: &Query,
    keep: Option<&[&str]>,
    ctx: &KeyCtx,
) -> Vec<(Box<str>, Vec<KeyValue>)> {
    let plain = q.with.is_none()
        && q.order_by.is_none()
        && q.limit_clause.is_none()
        && q.fetch.is_none()
        && q.locks.is_empty();
    let SetExpr::Values(values) = q.body.as_ref() else {
        return Vec::new();
    };
    // A row of another width is an error in PostgreSQL; never guess positions.
    if !plain || columns.is_empty() || values.rows.iter().any(|r| r.content.len() != columns.len())
    {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (j, col) in columns.iter().enumerate() {
        // `c.field` / `c[1]` set part of `c`: the value is not `c`'s key.
        let [part] = col.0.as_slice() else {
            continue;
        };
        let Some(col) = part.as_ident().map(|i| i.value.as_str()) else {
            continue;
        };
        if keep.is_some_and(|k| !k.contains(&col)) {
            continue;
        }
        let keys: Option<Vec<KeyValue>> = values
            .rows
            .iter()
            .map(|r| match ctx.key(r.content.get(j)?)? {
                (k, cast) if value_preserving_cast(cast.as_deref()) => Some(k),
                _ => None,
            })
            .collect();
        if let Some(keys) = keys {
            out.push((col.into(), keys));
        }
    }
    out
}
