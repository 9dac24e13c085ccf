//! The cache-miss path: parse a shape once and derive everything the proxy needs from it.
//!
//! The parse text comes from [`normalize`] in [`Mode::Parse`]: literals become `$N`
//! placeholders numbered after the statement's own parameters. If sqlparser refuses that
//! (a literal where only a literal may stand, like `COPY t FROM '/file'`), the shape is
//! parsed again with dummy `''` literals and records no literal-backed keys. Both texts
//! depend on the shape alone, so the result is valid for every statement of the shape. If
//! neither parses, a few utility commands sqlparser lacks (`DO`, `PREPARE TRANSACTION`,
//! `CHECKPOINT`, ...) are recognized by their leading keywords; anything else is `Unparsed`.
//!
//! sqlparser builds long operator chains (`a + b + c ...`, `x = 1 OR x = 2 OR ...`) as deep
//! left-leaning trees, and visiting or dropping them recurses once per operator. Statements
//! with many tokens are therefore parsed on a helper thread with a large stack, and
//! statements above [`MAX_PARSED_TOKENS`] are not parsed at all.

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use sqlparser::ast::{
    ContextModifier, CopySource, DiscardObject, Expr, FromTable, FunctionArguments, GroupByExpr,
    LimitClause, ObjectName, ObjectType, Query, Reset, Select, Set, SetExpr, Statement,
    TableFactor, TableObject, Value, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::extract::{self, table_ref, KeyCtx};
use super::functions::{classify_function, FnClass};
use super::normalize::{normalize, LexInfo, Mode};
use super::{
    DiscardTarget, OtherCommand, SetCommand, Shape, ShapeFlags, StatementKind, TableRef,
    TxnControl, MAX_PARSED_LEN, MAX_PARSED_TOKENS,
};

/// Statements with more tokens than this are parsed on a helper thread with
/// [`BIG_STACK`] bytes of stack (a rare, costly path: thread start-up is ~20 µs).
const SMALL_STACK_TOKENS: usize = 2_000;
const BIG_STACK: usize = 256 * 1024 * 1024;

/// What the AST analysis yields.
struct Analysis {
    kind: StatementKind,
    parts: Vec<StatementKind>,
    tables: Vec<TableRef>,
    point_read: Option<super::PointRead>,
    text_predicates: Vec<super::TextPredicate>,
    write_keys: Vec<super::WriteKeys>,
    flags: ShapeFlags,
}

/// Classifies a shape (cache miss). `sql` is the original text, `normalized` its shape.
pub(crate) fn shape_of(sql: &str, normalized: &str, info: LexInfo, fingerprint: u64) -> Shape {
    let mut shape = Shape {
        fingerprint,
        normalized: normalized.into(),
        kind: StatementKind::Unparsed,
        parts: Box::new([]),
        tables: Vec::new(),
        point_read: None,
        text_predicates: Vec::new(),
        write_keys: Vec::new(),
        flags: ShapeFlags::default(),
        max_param: info.max_param,
        literal_count: info.literals,
        names_set_config: normalized.contains("set_config"),
    };
    if normalized.is_empty() {
        shape.kind = StatementKind::Empty;
        return shape;
    }
    if normalized.len() > MAX_PARSED_LEN || info.tokens > MAX_PARSED_TOKENS {
        return shape;
    }
    let analysis = if info.tokens > SMALL_STACK_TOKENS {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("sql-classify".into())
                .stack_size(BIG_STACK)
                .spawn_scoped(s, || analyze_text(sql, info))
                .ok()
                .and_then(|h| h.join().ok())
                .flatten()
        })
    } else {
        catch_unwind(AssertUnwindSafe(|| analyze_text(sql, info)))
            .ok()
            .flatten()
    };
    match analysis {
        Some(a) => {
            shape.kind = a.kind;
            shape.parts = a.parts.into_boxed_slice();
            shape.tables = a.tables;
            shape.point_read = a.point_read;
            shape.text_predicates = a.text_predicates;
            shape.write_keys = a.write_keys;
            shape.flags = a.flags;
        }
        None => shape.kind = lexical_fallback(normalized),
    }
    shape
}

fn parse(text: &str) -> Option<Vec<Statement>> {
    Parser::parse_sql(&PostgreSqlDialect {}, text).ok()
}

/// `TABLE name ...` means `SELECT * FROM name ...`; sqlparser only knows the latter.
fn table_as_select(text: &str) -> Option<String> {
    let rest = text.strip_prefix("table ")?;
    Some(format!("select * from {rest}"))
}

fn analyze_text(sql: &str, info: LexInfo) -> Option<Analysis> {
    let base = u32::from(info.max_param) + 1;
    let mut text = String::new();
    let mut scratch = Vec::new();
    let mode = Mode::Parse {
        base,
        dummies_only: false,
    };
    normalize(sql, mode, &mut text, &mut scratch).ok()?;
    let ctx = KeyCtx {
        max_param: info.max_param,
        base,
        literal_keys: true,
    };
    if let Some(stmts) = parse(&text).or_else(|| parse(&table_as_select(&text)?)) {
        return Some(analyze(&stmts, &ctx));
    }
    let first = std::mem::take(&mut text);
    let mode = Mode::Parse {
        base,
        dummies_only: true,
    };
    normalize(sql, mode, &mut text, &mut scratch).ok()?;
    if text == first {
        return None;
    }
    let stmts = parse(&text)?;
    let ctx = KeyCtx {
        literal_keys: false,
        ..ctx
    };
    let mut a = analyze(&stmts, &ctx);
    a.flags.literal_keys_unavailable = true;
    Some(a)
}

fn analyze(stmts: &[Statement], ctx: &KeyCtx) -> Analysis {
    let mut tables: Vec<TableRef> = Vec::new();
    let mut flags = ShapeFlags::default();
    let mut parts = Vec::with_capacity(stmts.len());
    for stmt in stmts {
        let facts = Facts::collect(stmt);
        parts.push(kind_of(stmt, &facts));
        for t in facts.tables {
            if !tables.contains(&t) {
                tables.push(t);
            }
        }
        flags = union(flags, facts.flags);
    }
    let mut a = Analysis {
        kind: StatementKind::Empty,
        parts: Vec::new(),
        tables,
        point_read: None,
        text_predicates: Vec::new(),
        write_keys: Vec::new(),
        flags,
    };
    match (stmts, parts.as_slice()) {
        ([], _) => {}
        ([stmt], [kind]) => {
            a.kind = kind.clone();
            if let (Statement::Query(q), StatementKind::Read) = (stmt, kind) {
                a.point_read = extract::point_read(q, &a.flags, ctx);
                let (preds, or, other) = extract::text_predicates(q, a.point_read.is_some(), ctx);
                a.text_predicates = preds;
                a.flags.where_has_or = or;
                a.flags.where_has_other_conjuncts = other;
            }
            // A writing CTE changes rows the entry would not describe (PostgreSQL allows
            // them only at the top, so this is belt and braces).
            if *kind == StatementKind::Write && !a.flags.has_writing_cte {
                a.write_keys.extend(extract::write_keys(stmt, ctx));
            }
        }
        _ => {
            a.kind = StatementKind::Multi;
            a.parts = parts;
        }
    }
    a
}

fn union(a: ShapeFlags, b: ShapeFlags) -> ShapeFlags {
    ShapeFlags {
        has_volatile_functions: a.has_volatile_functions || b.has_volatile_functions,
        has_unknown_functions: a.has_unknown_functions || b.has_unknown_functions,
        has_aggregate: a.has_aggregate || b.has_aggregate,
        has_window: a.has_window || b.has_window,
        has_locking_clause: a.has_locking_clause || b.has_locking_clause,
        has_cte: a.has_cte || b.has_cte,
        has_writing_cte: a.has_writing_cte || b.has_writing_cte,
        has_subquery: a.has_subquery || b.has_subquery,
        has_join: a.has_join || b.has_join,
        has_set_operation: a.has_set_operation || b.has_set_operation,
        has_group_by: a.has_group_by || b.has_group_by,
        has_having: a.has_having || b.has_having,
        has_distinct: a.has_distinct || b.has_distinct,
        has_distinct_on: a.has_distinct_on || b.has_distinct_on,
        has_order_by: a.has_order_by || b.has_order_by,
        has_limit: a.has_limit || b.has_limit,
        has_offset: a.has_offset || b.has_offset,
        has_select_into: a.has_select_into || b.has_select_into,
        has_table_function: a.has_table_function || b.has_table_function,
        has_returning: a.has_returning || b.has_returning,
        where_has_or: a.where_has_or || b.where_has_or,
        where_has_other_conjuncts: a.where_has_other_conjuncts || b.where_has_other_conjuncts,
        literal_keys_unavailable: a.literal_keys_unavailable || b.literal_keys_unavailable,
    }
}

/// Facts about one statement, gathered by one walk over its AST.
#[derive(Default)]
struct Facts {
    tables: Vec<TableRef>,
    cte_names: Vec<String>,
    flags: ShapeFlags,
    /// The name of a table function (`FROM generate_series(..)`), which sqlparser reports
    /// as a relation right after the table factor; compared by address.
    skip_relation: Option<*const ObjectName>,
    /// Targets of INSERT/UPDATE/DELETE/MERGE: always real tables, even when a CTE has the
    /// same name.
    targets: Vec<TableRef>,
}

impl Facts {
    fn collect(stmt: &Statement) -> Facts {
        let mut f = Facts::default();
        let _ = stmt.visit(&mut f);
        f.statement_tables(stmt);
        let ctes = std::mem::take(&mut f.cte_names);
        let targets = std::mem::take(&mut f.targets);
        f.tables.retain(|t| {
            t.schema.is_some() || targets.contains(t) || !ctes.iter().any(|c| **c == *t.name)
        });
        f
    }

    fn add_table(&mut self, t: TableRef) {
        if !self.tables.contains(&t) {
            self.tables.push(t);
        }
    }

    /// Tables sqlparser does not report as relations.
    fn statement_tables(&mut self, stmt: &Statement) {
        match stmt {
            Statement::Copy {
                source: CopySource::Table { table_name, .. },
                ..
            } => {
                if let Some(t) = table_ref(table_name) {
                    self.add_table(t);
                }
            }
            Statement::Drop {
                object_type: ObjectType::Table | ObjectType::View | ObjectType::MaterializedView,
                names,
                ..
            } => {
                for n in names {
                    if let Some(t) = table_ref(n) {
                        self.add_table(t);
                    }
                }
            }
            _ => {}
        }
    }

    fn target(&mut self, name: &ObjectName) {
        if let Some(t) = table_ref(name) {
            self.targets.push(t);
        }
    }

    fn target_factor(&mut self, f: &TableFactor) {
        if let TableFactor::Table { name, alias, .. } = f {
            match extract::only_table(name, alias.as_ref()) {
                Some(t) => self.targets.push(t),
                None => self.target(name),
            }
        }
    }

    /// Records what calling the function `name` implies.
    fn function(&mut self, name: &ObjectName) {
        let parts: Option<Vec<&str>> = name
            .0
            .iter()
            .map(|p| p.as_ident().map(|i| i.value.as_str()))
            .collect();
        match parts.map_or(FnClass::Unknown, |p| classify_function(&p)) {
            FnClass::Safe => {}
            FnClass::Aggregate => self.flags.has_aggregate = true,
            FnClass::Window => self.flags.has_window = true,
            FnClass::Volatile => self.flags.has_volatile_functions = true,
            FnClass::Unknown => self.flags.has_unknown_functions = true,
        }
    }

    fn set_expr(&mut self, body: &SetExpr) {
        let mut stack = vec![body];
        while let Some(e) = stack.pop() {
            match e {
                SetExpr::SetOperation { left, right, .. } => {
                    self.flags.has_set_operation = true;
                    stack.push(left);
                    stack.push(right);
                }
                SetExpr::Table(t) => {
                    if let Some(name) = &t.table_name {
                        self.add_table(TableRef::new(t.schema_name.as_deref(), name));
                    }
                }
                _ => {}
            }
        }
    }
}

/// Whether a query body is (or contains at its top) a data-modifying statement.
fn set_expr_writes(body: &SetExpr) -> bool {
    match body {
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => true,
        SetExpr::Query(q) => set_expr_writes(&q.body),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr_writes(left) || set_expr_writes(right)
        }
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => false,
    }
}

impl Visitor for Facts {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(with) = &q.with {
            self.flags.has_cte = true;
            for cte in &with.cte_tables {
                self.cte_names.push(cte.alias.name.value.clone());
                if set_expr_writes(&cte.query.body) {
                    self.flags.has_writing_cte = true;
                }
            }
        }
        if !q.locks.is_empty() {
            self.flags.has_locking_clause = true;
        }
        if q.order_by.is_some() {
            self.flags.has_order_by = true;
        }
        match &q.limit_clause {
            Some(LimitClause::LimitOffset { limit, offset, .. }) => {
                self.flags.has_limit |= limit.is_some();
                self.flags.has_offset |= offset.is_some();
            }
            Some(LimitClause::OffsetCommaLimit { .. }) => {
                self.flags.has_limit = true;
                self.flags.has_offset = true;
            }
            None => {}
        }
        if q.fetch.is_some() {
            self.flags.has_limit = true;
        }
        self.set_expr(&q.body);
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        match &s.distinct {
            Some(sqlparser::ast::Distinct::Distinct) => self.flags.has_distinct = true,
            Some(sqlparser::ast::Distinct::On(_)) => {
                self.flags.has_distinct = true;
                self.flags.has_distinct_on = true;
            }
            _ => {}
        }
        if s.into.is_some() {
            self.flags.has_select_into = true;
        }
        if s.from.len() > 1 || s.from.iter().any(|f| !f.joins.is_empty()) {
            self.flags.has_join = true;
        }
        match &s.group_by {
            GroupByExpr::All(_) => self.flags.has_group_by = true,
            GroupByExpr::Expressions(g, _) if !g.is_empty() => self.flags.has_group_by = true,
            GroupByExpr::Expressions(..) => {}
        }
        if s.having.is_some() {
            self.flags.has_having = true;
        }
        if !s.named_window.is_empty() {
            self.flags.has_window = true;
        }
        if !s.lateral_views.is_empty() {
            self.flags.has_table_function = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        match t {
            TableFactor::Table {
                name, args, alias, ..
            } => {
                if args.is_some() {
                    self.flags.has_table_function = true;
                    self.function(name);
                    self.skip_relation = Some(name as *const ObjectName);
                } else if extract::is_only_keyword(name) {
                    // `ONLY t`, misread as table `only` aliased `t`.
                    if let Some(t) = extract::only_table(name, alias.as_ref()) {
                        self.add_table(t);
                    }
                    self.skip_relation = Some(name as *const ObjectName);
                }
            }
            TableFactor::Function { name, .. } => {
                self.flags.has_table_function = true;
                self.function(name);
            }
            TableFactor::Derived { lateral, .. } => {
                self.flags.has_subquery = true;
                self.flags.has_join |= *lateral;
            }
            TableFactor::NestedJoin { .. } => self.flags.has_join = true,
            _ => self.flags.has_table_function = true,
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        if self.skip_relation == Some(r as *const ObjectName) {
            self.skip_relation = None;
        } else if let Some(t) = table_ref(r) {
            self.add_table(t);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        match e {
            Expr::Function(f) => {
                self.function(&f.name);
                if f.over.is_some() {
                    self.flags.has_window = true;
                }
                if f.filter.is_some() || !f.within_group.is_empty() {
                    self.flags.has_aggregate = true;
                }
                if matches!(f.args, FunctionArguments::Subquery(_)) {
                    self.flags.has_subquery = true;
                }
            }
            Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. } => {
                self.flags.has_subquery = true;
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        match s {
            Statement::Insert(i) => {
                self.flags.has_returning |= i.returning.is_some();
                if let TableObject::TableName(n) = &i.table {
                    self.target(n);
                }
            }
            Statement::Update(u) => {
                self.flags.has_returning |= u.returning.is_some();
                self.flags.has_join |= u.from.is_some();
                self.target_factor(&u.table.relation);
            }
            Statement::Delete(d) => {
                self.flags.has_returning |= d.returning.is_some();
                self.flags.has_join |= d.using.is_some();
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &d.from;
                for t in from {
                    self.target_factor(&t.relation);
                }
            }
            Statement::Merge(m) => self.target_factor(&m.table),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

fn ident_name(name: &ObjectName) -> Box<str> {
    name.0
        .iter()
        .map(|p| match p.as_ident() {
            Some(i) => i.value.clone(),
            None => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
        .into()
}

/// GUC names are case-insensitive, even quoted.
fn guc(name: &ObjectName) -> Box<str> {
    ident_name(name).to_ascii_lowercase().into()
}

fn set_kind(name: &str, local: bool) -> StatementKind {
    StatementKind::Set(SetCommand::Set {
        name: name.into(),
        local,
    })
}

/// Whether an EXPLAIN option list turns ANALYZE on (`ANALYZE`, `ANALYZE true`, ...).
fn explain_option_analyze(options: Option<&Vec<sqlparser::ast::UtilityOption>>) -> bool {
    options.is_some_and(|opts| {
        opts.iter().any(|o| {
            o.name.value.eq_ignore_ascii_case("analyze")
                && match &o.arg {
                    None => true,
                    Some(Expr::Value(v)) => !matches!(v.value, Value::Boolean(false)),
                    Some(Expr::Identifier(i)) => !matches!(
                        i.value.to_ascii_lowercase().as_str(),
                        "off" | "false" | "no"
                    ),
                    Some(_) => true,
                }
        })
    })
}

fn kind_of(stmt: &Statement, facts: &Facts) -> StatementKind {
    use StatementKind as K;
    match stmt {
        Statement::Query(q) => {
            if facts.flags.has_select_into
                || facts.flags.has_writing_cte
                || set_expr_writes(&q.body)
            {
                K::Write
            } else {
                K::Read
            }
        }
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_) => K::Write,
        Statement::Copy { to, source, .. } => {
            // `COPY (DELETE .. RETURNING *) TO STDOUT` writes.
            let query_writes = match source {
                CopySource::Query(q) => set_expr_writes(&q.body) || facts.flags.has_writing_cte,
                CopySource::Table { .. } => false,
            };
            if *to && !query_writes {
                K::Read
            } else {
                K::Write
            }
        }
        Statement::Explain {
            analyze,
            statement,
            options,
            ..
        } => {
            let inner = kind_of(statement, facts);
            let analyze = *analyze || explain_option_analyze(options.as_ref());
            // ANALYZE runs the statement: it is whatever the statement is (a write, DDL such
            // as CREATE TABLE AS, or `EXECUTE` of a prepared write).
            if analyze {
                inner
            } else {
                K::Read
            }
        }
        Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowCollation { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowObjects(_)
        | Statement::ShowCharset(_)
        | Statement::ShowCatalogs { .. }
        | Statement::ShowProcessList { .. } => K::Read,
        Statement::StartTransaction { statements, .. } if statements.is_empty() => {
            K::Transaction(TxnControl::Begin)
        }
        Statement::Commit { chain, .. } => K::Transaction(if *chain {
            TxnControl::CommitAndChain
        } else {
            TxnControl::Commit
        }),
        Statement::Rollback { chain, savepoint } => K::Transaction(match (savepoint, chain) {
            (Some(_), _) => TxnControl::RollbackToSavepoint,
            (None, true) => TxnControl::RollbackAndChain,
            (None, false) => TxnControl::Rollback,
        }),
        Statement::Savepoint { .. } => K::Transaction(TxnControl::Savepoint),
        Statement::ReleaseSavepoint { .. } => K::Transaction(TxnControl::Release),
        Statement::Set(set) => match set {
            Set::SingleAssignment {
                scope, variable, ..
            } => set_kind(
                &guc(variable),
                matches!(scope, Some(ContextModifier::Local)),
            ),
            Set::SetTimeZone { local, .. } => set_kind("timezone", *local),
            Set::SetRole {
                context_modifier, ..
            } => set_kind(
                "role",
                matches!(context_modifier, Some(ContextModifier::Local)),
            ),
            Set::SetSessionAuthorization(_) => set_kind("session_authorization", false),
            Set::SetNames { .. } | Set::SetNamesDefault {} => set_kind("client_encoding", false),
            Set::SetTransaction { session, .. } => {
                if *session {
                    set_kind("default_transaction", false)
                } else {
                    set_kind("transaction", true)
                }
            }
            Set::ParenthesizedAssignments { variables, .. } => match variables.first() {
                Some(v) => set_kind(&guc(v), false),
                None => K::Other(OtherCommand::Unknown),
            },
            Set::MultipleAssignments { assignments } => match assignments.first() {
                Some(a) => set_kind(&guc(&a.name), false),
                None => K::Other(OtherCommand::Unknown),
            },
            _ => K::Other(OtherCommand::Unknown),
        },
        Statement::Reset(r) => K::Set(match &r.reset {
            Reset::ALL => SetCommand::ResetAll,
            Reset::SessionAuthorization => SetCommand::Reset {
                name: "session_authorization".into(),
            },
            Reset::ConfigurationParameter(n) => SetCommand::Reset { name: guc(n) },
        }),
        Statement::Discard { object_type } => K::Set(SetCommand::Discard(match object_type {
            DiscardObject::ALL => DiscardTarget::All,
            DiscardObject::PLANS => DiscardTarget::Plans,
            DiscardObject::SEQUENCES => DiscardTarget::Sequences,
            DiscardObject::TEMP => DiscardTarget::Temp,
        })),
        Statement::LISTEN { channel } => K::Other(OtherCommand::Listen {
            channel: channel.value.as_str().into(),
        }),
        Statement::UNLISTEN { channel } => K::Other(OtherCommand::Unlisten {
            channel: (channel.value != "*").then(|| channel.value.as_str().into()),
        }),
        Statement::NOTIFY { channel, .. } => K::Other(OtherCommand::Notify {
            channel: channel.value.as_str().into(),
        }),
        Statement::Call(_) => K::Other(OtherCommand::Call),
        Statement::Vacuum(_) => K::Other(OtherCommand::Vacuum),
        Statement::Analyze(_) => K::Other(OtherCommand::Analyze),
        Statement::Prepare {
            name, statement, ..
        } => K::Other(OtherCommand::Prepare {
            name: name.value.as_str().into(),
            statement: Box::new(kind_of(statement, facts)),
        }),
        Statement::Execute { name, .. } => K::Other(OtherCommand::Execute {
            name: name.as_ref().map_or_else(|| "".into(), ident_name),
        }),
        Statement::Deallocate { name, .. } => K::Other(OtherCommand::Deallocate {
            name: (!(name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all")))
                .then(|| name.value.as_str().into()),
        }),
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => {
            K::Other(OtherCommand::Cursor)
        }
        Statement::Lock(_) | Statement::LockTables { .. } => K::Other(OtherCommand::Lock),
        Statement::Truncate(_)
        | Statement::Grant(_)
        | Statement::Revoke(_)
        | Statement::Deny(_)
        | Statement::Comment { .. }
        | Statement::RenameTable(_) => K::Ddl,
        other => {
            // The many CREATE/ALTER/DROP variants: judge by the leading keyword.
            let text = other.to_string();
            let first = text.split_whitespace().next().unwrap_or("");
            if DDL_WORDS.iter().any(|w| first.eq_ignore_ascii_case(w)) {
                K::Ddl
            } else {
                K::Other(OtherCommand::Unknown)
            }
        }
    }
}

const DDL_WORDS: &[&str] = &[
    "alter", "comment", "create", "drop", "grant", "refresh", "reindex", "revoke", "security",
    "truncate",
];

/// Kinds for statements sqlparser cannot read but whose leading keywords leave no doubt.
/// Everything else stays `Unparsed` (Postgres is the judge).
fn lexical_fallback(normalized: &str) -> StatementKind {
    use StatementKind as K;
    if normalized.contains(';') {
        // Several statements (or a quoted identifier with a semicolon): no guessing.
        return K::Unparsed;
    }
    let mut words = normalized
        .split(|c: char| c.is_whitespace() || c == ';' || c == '(')
        .filter(|w| !w.is_empty());
    let first = words.next().unwrap_or("");
    let second = words.next().unwrap_or("");
    match (first, second) {
        ("do", _) => K::Other(OtherCommand::Do),
        ("call", _) => K::Other(OtherCommand::Call),
        ("vacuum", _) => K::Other(OtherCommand::Vacuum),
        ("analyze" | "analyse", _) => K::Other(OtherCommand::Analyze),
        ("checkpoint" | "cluster" | "reindex" | "load", _) => K::Other(OtherCommand::Maintenance),
        ("abort", _) => K::Transaction(TxnControl::Rollback),
        ("prepare", "transaction") => K::Transaction(TxnControl::PrepareTransaction),
        ("commit", "prepared") => K::Transaction(TxnControl::CommitPrepared),
        ("rollback", "prepared") => K::Transaction(TxnControl::RollbackPrepared),
        ("discard", "all") => K::Set(SetCommand::Discard(DiscardTarget::All)),
        ("discard", "plans") => K::Set(SetCommand::Discard(DiscardTarget::Plans)),
        ("discard", "sequences") => K::Set(SetCommand::Discard(DiscardTarget::Sequences)),
        ("discard", "temp" | "temporary") => K::Set(SetCommand::Discard(DiscardTarget::Temp)),
        ("declare" | "fetch" | "move" | "close", _) => K::Other(OtherCommand::Cursor),
        _ => K::Unparsed,
    }
}
