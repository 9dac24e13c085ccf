//! Narrowing text predicates with the search store, for one session.
//!
//! The relay asks [`try_narrow`] whenever the client's buffer starts a new simple Query while
//! the session is idle. When the statement is one SELECT over one indexed table whose WHERE
//! ANDs text predicates the index can narrow, and every gate holds (index complete, feed fresh
//! within the policy's bound, this session's own writes applied), the Query is replaced by
//! the same statement restricted to the candidate keys. Postgres answers it; nothing is
//! answered from the index itself. Anything else returns `None` (and the reason is kept for
//! the router's count) and the Query is relayed unchanged.
//!
//! In the extended protocol the client's statements are never changed (a statement may be
//! bound many times, and one moment's candidates would go stale in it). A batch
//! `Parse Bind [Describe] Execute Sync` whose statement can be narrowed with the
//! values bound (patterns may be `$n`) binds the client's portal to a statement of the
//! proxy's own instead ([`PRIVATE_STATEMENT`], the restricted text with the client's declared
//! parameter types, so Postgres infers the same types and the portal describes the same
//! columns), closed again before Sync; the answers to the proxy's Parse and Closes are not
//! forwarded.

use super::batch::ExtendedBatch;
use super::bind::{Bind, Param};
use super::cache_serve::{Fence, FenceCheck};
use super::state::{FrontendState, PreparedStatement, SharedState};
use super::statements::PRIVATE_STATEMENT;
use crate::config::policy::PredicateKind;
use crate::context::ProxyContext;
use crate::protocol::frames::{put_frame, HEADER_LEN};
use crate::router::{self, Reason, SessionView};
use crate::search::requirement::{self as req, Requirement};
use crate::search::store::FieldKind;
use crate::search::table::FTS_CONFIGS;
use crate::search::{rewrite, terms};
use crate::sql::{
    Classified, KeyRef, KeyValue, Literal, Shape, StatementKind, TextOp, TextPredicate, TsQueryFn,
    TsVectorSource,
};
use bytes::{BufMut, BytesMut};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Parameter types a pattern may be bound as: unspecified (Postgres infers `text` beside a
/// text column), `text`, `varchar`. (`bpchar` would drop trailing blanks from the pattern.)
const PATTERN_PARAM_TYPES: [u32; 3] = [0, 25, 1043];

/// Bound parameters and the types their statement declared.
type Bound<'a, 'b> = Option<(&'b Bind<'a>, &'b [u32])>;

/// Messages replaced by their narrowed form (or by the answer to `EXPLAIN ROUTE`).
pub struct Narrowed {
    /// Bytes of the client's buffer the original messages took.
    pub consumed: usize,
    /// The messages to send instead.
    pub frame: BytesMut,
    /// What the relay still has to track for them.
    pub track: Track,
}

/// How a narrowed frame is accounted for.
pub enum Track {
    /// It answers `EXPLAIN ROUTE`: a plain Postgres query.
    Explain,
    /// A narrowed simple Query, tracked as the original statement on the search route.
    Query(Classified),
    /// An extended-protocol batch: every message was tracked when it was rewritten.
    Tracked,
}

/// `EXPLAIN ROUTE <text-predicate statement>`: runs every check [`try_narrow`] would (the
/// index lookup included, nothing sent) and answers with the verdict, as
/// [`super::explain`] does for the router's own decisions.
async fn try_explain(
    target: &[u8],
    total: usize,
    fs: &mut FrontendState,
    ctx: &ProxyContext,
    shared: &SharedState,
) -> Option<Narrowed> {
    let sql = std::str::from_utf8(target).ok()?;
    let classified = ctx.classifier.classify(sql);
    if classified.shape.text_predicates.is_empty() {
        return None;
    }
    let mut decision = {
        fs.refresh_keys(ctx);
        let view = SessionView {
            in_transaction: shared.in_transaction_block(),
            pipelined: !shared.tracker.is_idle(),
            policy_database: fs.policy_database(),
        };
        router::decide(Some(&classified.shape), view, fs.policies())
    };
    if decision.reason == Reason::IndexNotReady {
        match narrow(sql, &classified, None, fs, ctx, shared).await {
            Ok((_, candidates)) => {
                decision.route = crate::stats::Route::Search;
                decision.reason = Reason::Narrowed;
                decision.detail = format!(
                    "the search index narrows it to {candidates} candidate keys; Postgres runs it restricted to them"
                );
            }
            Err(reason) => {
                decision.reason = reason;
                decision.detail = why_not(reason).to_string();
            }
        }
    }
    let frame =
        super::explain::as_query(&super::explain::explain_table(Some(&classified), &decision));
    Some(Narrowed {
        consumed: total,
        frame,
        track: Track::Explain,
    })
}

/// One sentence per reason a text predicate was not narrowed.
fn why_not(reason: Reason) -> &'static str {
    match reason {
        Reason::IndexNotReady => "the table's index is not built (backfilling, rebuilding, or its store is unavailable)",
        Reason::FeedNotFresh => "the search store's change feed is not streaming or lags beyond the policy's max_staleness",
        Reason::Fenced => "this session wrote, and the index has not applied its writes yet",
        Reason::TooManyCandidates => "the index narrows it to more than the policy's max_candidate_fraction of the rows",
        Reason::StoreUnavailable => "the search store did not answer or is being re-validated after a failure",
        Reason::NotNarrowable => "no predicate the index can narrow exactly (pattern without three literal characters in a row, cast, ESCAPE, configuration, unresolved table name, or settings)",
        _ => "see the reason",
    }
}

/// Tries to narrow the simple Query or extended-protocol batch at the start of `buf`.
pub async fn try_narrow(
    buf: &[u8],
    fs: &mut FrontendState,
    ctx: &ProxyContext,
    shared: &SharedState,
) -> Option<Narrowed> {
    if shared.in_transaction_block()
        || !shared.tracker.is_idle()
        || !fs.policy_database()
        || !shared.client_encoding_utf8.load(Relaxed)
    {
        return None;
    }
    match *buf.first()? {
        b'Q' => narrow_query(buf, fs, ctx, shared).await,
        b'P' | b'B' => narrow_batch(buf, fs, ctx, shared).await,
        _ => None,
    }
}

async fn narrow_query(
    buf: &[u8],
    fs: &mut FrontendState,
    ctx: &ProxyContext,
    shared: &SharedState,
) -> Option<Narrowed> {
    let (_, body, total) = super::batch::frame_at(buf)?;
    let text = body.strip_suffix(&[0])?;
    if let Some(target) = super::explain::explain_route_target(text) {
        return try_explain(target, total, fs, ctx, shared).await;
    }
    let sql = std::str::from_utf8(text).ok()?;
    let classified = ctx.classifier.classify(sql);
    if classified.shape.text_predicates.is_empty() {
        return None;
    }
    match narrow(sql, &classified, None, fs, ctx, shared).await {
        Ok((new_sql, candidates)) => {
            count_narrowed(ctx, candidates);
            let mut frame = BytesMut::with_capacity(new_sql.len() + HEADER_LEN + 1);
            put_frame(&mut frame, b'Q', |f| put_cstr(f, new_sql.as_bytes()));
            Some(Narrowed {
                consumed: total,
                frame,
                track: Track::Query(classified),
            })
        }
        Err(reason) => {
            fs.cache.last_reason = Some(reason);
            None
        }
    }
}

fn count_narrowed(ctx: &ProxyContext, candidates: usize) {
    let counters = &ctx.search.counters;
    counters.narrowed.fetch_add(1, Relaxed);
    counters.candidates.fetch_add(candidates as u64, Relaxed);
}

/// `Parse Bind [Describe] Execute Sync` on a text-predicate statement, sent as
/// `Parse Close(private) Parse(private, narrowed) Bind(portal, private) [Describe]
/// Execute Close(private) Sync`. Every message is tracked here as the relay would have
/// tracked the original (the client's Parse and Bind as they are, the Execute on the
/// search route); the private ones only so that their answers are dropped.
async fn narrow_batch(
    buf: &[u8],
    fs: &mut FrontendState,
    ctx: &ProxyContext,
    shared: &SharedState,
) -> Option<Narrowed> {
    let batch = ExtendedBatch::read(buf)?;
    let bind = batch.bind;
    // Only a batch that prepares its own statement: Postgres fixes a statement's result
    // columns, parameter types and name resolution when it parses it, so re-parsing an
    // older statement's text now could answer where Postgres would refuse (a table changed
    // since: "cached plan must not change result type") or read its parameters as other
    // types; and the statement the book remembers may no longer exist in Postgres.
    let p = batch.parse.as_ref()?;
    let sql = std::str::from_utf8(p.sql).ok()?;
    let classified = ctx.classifier.classify(sql);
    if classified.shape.text_predicates.is_empty() || !shared.tracker.private_name_free() {
        return None;
    }
    let stmt = Arc::new(PreparedStatement {
        sql: Arc::from(sql),
        classified,
        param_types: p.types.clone(),
    });
    let classified = &stmt.classified;
    // Postgres would reject a Bind whose counts do not fit, naming the statement: the
    // client must see its own statement's name in that error, so such a Bind is relayed.
    let param_count = stmt
        .param_types
        .len()
        .max(usize::from(classified.shape.max_param));
    if bind.param_count() != param_count || !bind.param_formats_valid() {
        return None;
    }
    let bound = Some((&bind, &*stmt.param_types));
    let (new_sql, candidates) = match narrow(&stmt.sql, classified, bound, fs, ctx, shared).await {
        Ok(narrowed) => narrowed,
        Err(reason) => {
            fs.cache.last_reason = Some(reason);
            return None;
        }
    };
    count_narrowed(ctx, candidates);

    let mut frame = BytesMut::with_capacity(batch.len + new_sql.len() + 128);
    // As the relay does for any Parse: a statement of that name only the proxy has goes to
    // Postgres first (so a clash is Postgres's own error). From here on the client's
    // statement is one Postgres has, so its Describe needs nothing more.
    if !p.name.is_empty() {
        if let Some(earlier) = shared.tracker.materialize(p.name) {
            frame.extend_from_slice(&earlier);
        }
    }
    frame.extend_from_slice(p.frame);
    fs.on_parse(&p.frame[HEADER_LEN..], ctx, shared);
    put_close_private(&mut frame, shared);
    put_frame(&mut frame, b'P', |f| {
        put_cstr(f, PRIVATE_STATEMENT);
        put_cstr(f, new_sql.as_bytes());
        f.put_u16(stmt.param_types.len() as u16);
        for t in stmt.param_types.iter() {
            f.put_u32(*t);
        }
    });
    shared.tracker.private_sent();
    let after_names = bind.portal.len() + bind.statement.len() + 2;
    put_frame(&mut frame, b'B', |f| {
        put_cstr(f, bind.portal);
        put_cstr(f, PRIVATE_STATEMENT);
        f.put_slice(&batch.bind_body[after_names..]);
    });
    fs.on_bind(batch.bind_body, ctx, shared);
    if let Some(describe) = batch.describe {
        frame.extend_from_slice(describe.frame);
    }
    frame.extend_from_slice(batch.execute);
    fs.on_narrowed_execute(classified, ctx, shared);
    put_close_private(&mut frame, shared);
    put_frame(&mut frame, b'S', |_| {});
    shared.tracker.sync();
    Some(Narrowed {
        consumed: batch.len,
        frame,
        track: Track::Tracked,
    })
}

/// `Close` of the proxy's own statement (closing one that does not exist is no error).
fn put_close_private(frame: &mut BytesMut, shared: &SharedState) {
    put_frame(frame, b'C', |f| {
        f.put_u8(b'S');
        put_cstr(f, PRIVATE_STATEMENT);
    });
    shared.tracker.private_sent();
}

fn put_cstr(frame: &mut BytesMut, s: &[u8]) {
    frame.put_slice(s);
    frame.put_u8(0);
}

/// Every check, then the candidates and the rewritten statement (and how many candidates);
/// `Err` names what failed.
async fn narrow(
    sql: &str,
    classified: &Classified,
    bound: Bound<'_, '_>,
    fs: &mut FrontendState,
    ctx: &ProxyContext,
    shared: &SharedState,
) -> Result<(String, usize), Reason> {
    let shape = &classified.shape;
    let view = SessionView {
        in_transaction: false,
        pipelined: false,
        policy_database: true,
    };
    fs.refresh_keys(ctx);
    let reason = router::decide_reason(Some(shape), view, fs.policies());
    if reason != Reason::IndexNotReady || shape.point_read.is_some() {
        return Err(reason);
    }
    if !narrowable_shape(shape)
        || shared.parameter("standard_conforming_strings").as_deref() != Some("on")
    {
        return Err(Reason::NotNarrowable);
    }
    let first = &shape.text_predicates[0];
    let (schema, name) = router::resolve(&first.table);
    if first.table.schema.is_none() && !unqualified_is_public(ctx, fs, name) {
        return Err(Reason::NotNarrowable);
    }
    let search = &ctx.search;
    let table = search.table(schema, name).ok_or(Reason::IndexNotReady)?;
    let mut parts = Vec::new();
    for p in &shape.text_predicates {
        if p.table != first.table {
            return Err(Reason::NotNarrowable);
        }
        if let Some(part) = part_for(p, classified, bound, &table.meta, ctx).await {
            parts.push(part);
        }
    }
    if parts.iter().all(|(_, _, r)| !r.is_constrained()) {
        return Err(Reason::NotNarrowable);
    }
    let applied = search.gate(&table)?;
    let settled = match fs.cache.search_fence {
        Fence::Needed => shared.tracker.fence_ticket(),
        _ => None,
    };
    match fs
        .cache
        .search_fence
        .advance(&ctx.cache.fences, applied, settled)
    {
        FenceCheck::Met => {}
        FenceCheck::Waiting => {
            shared.tracker.eager_fences();
            return Err(Reason::Fenced);
        }
    }
    let keys = match search.candidates(&table, &parts).await {
        Ok(Some(keys)) => keys,
        Ok(None) => {
            search.counters.too_many.fetch_add(1, Relaxed);
            return Err(Reason::TooManyCandidates);
        }
        Err(e) => {
            tracing::warn!(table = %table.meta.name, error = %e, "search: candidate lookup failed; passing through until the store is re-validated");
            return Err(Reason::StoreUnavailable);
        }
    };
    let out = rewrite::restrict(sql, &table.meta.key_column, &table.meta.key_type, &keys)
        .ok_or(Reason::NotNarrowable)?;
    Ok((out, keys.len()))
}

/// One SELECT over one table, nothing that could make the first WHERE another query's or
/// an unqualified key column another table's.
fn narrowable_shape(shape: &Shape) -> bool {
    let f = &shape.flags;
    matches!(shape.kind, StatementKind::Read)
        && shape.tables.len() == 1
        && !(f.has_join
            || f.has_subquery
            || f.has_cte
            || f.has_set_operation
            || f.has_table_function
            || f.has_select_into
            || f.has_locking_clause
            || f.literal_keys_unavailable)
}

/// An unqualified name means `public.<name>` only when the session's search_path is the
/// default and no other schema has a table of that name (a `"$user"` schema could shadow it).
fn unqualified_is_public(ctx: &ProxyContext, fs: &FrontendState, name: &str) -> bool {
    if fs.cache.search_path_uncertain() {
        return false;
    }
    let catalog = ctx.catalog.snapshot();
    let mut schemas = catalog
        .table_names()
        .into_iter()
        .filter(|(_, n)| n == name)
        .map(|(s, _)| s);
    matches!(
        (schemas.next().as_deref(), schemas.next()),
        (Some("public"), None)
    )
}

/// A string literal's value (not opaque), or a text parameter's bound value.
fn literal_text<'a>(
    classified: &'a Classified,
    v: &KeyValue,
    bound: Bound<'a, '_>,
) -> Option<&'a str> {
    match classified.key(v)? {
        KeyRef::Literal(Literal::String(s)) => Some(s),
        KeyRef::Param(n) => {
            let (bind, types) = bound?;
            if !PATTERN_PARAM_TYPES.contains(&super::bind::declared_type(types, n)) {
                return None;
            }
            // A text value's binary form is its text (in client_encoding, UTF8 here).
            match bind.param(n)? {
                Param::Text(v) | Param::Binary(v) => std::str::from_utf8(v).ok(),
                Param::Null => None,
            }
        }
        _ => None,
    }
}

/// What the index can require for one predicate; `None` when it narrows nothing (the
/// predicate stays in the statement either way).
async fn part_for<'a>(
    p: &TextPredicate,
    classified: &'a Classified,
    bound: Bound<'a, '_>,
    meta: &crate::search::table::SearchTable,
    ctx: &ProxyContext,
) -> Option<(usize, FieldKind, Requirement)> {
    if p.negated {
        return None;
    }
    let column = meta.column(&p.column)?;
    let kind = match p.op {
        TextOp::Like => PredicateKind::Like,
        TextOp::ILike => PredicateKind::ILike,
        TextOp::Regex | TextOp::RegexI => PredicateKind::Regex,
        TextOp::FullText(_) => PredicateKind::FullText,
    };
    if !meta.indexes(kind) {
        return None;
    }
    // `~*` shares the regex field with `~`, but its case rules are the collation's.
    if matches!(p.op, TextOp::RegexI) && !meta.case_insensitive_safe {
        return None;
    }
    if p.pattern_cast.as_deref().is_some_and(|c| c != "text") {
        return None;
    }
    let pattern = literal_text(classified, &p.pattern, bound)?;
    match &p.op {
        TextOp::Like | TextOp::ILike => {
            let escape = match &p.escape {
                None => Some('\\'),
                Some(e) => {
                    let e = literal_text(classified, e, bound)?;
                    let mut chars = e.chars();
                    match (chars.next(), chars.next()) {
                        (None, _) => None,
                        (Some(c), None) => Some(c),
                        _ => return None,
                    }
                }
            };
            let r = terms::like_requirement(pattern, escape, p.op == TextOp::ILike);
            Some((column, FieldKind::Trigram, r))
        }
        TextOp::Regex | TextOp::RegexI => {
            let insensitive = p.op == TextOp::RegexI;
            let r = terms::regex_requirement(pattern, insensitive);
            if !r.is_constrained() || !ctx.search.regex_valid(ctx, pattern, insensitive).await {
                return None;
            }
            Some((column, FieldKind::Trigram, r))
        }
        TextOp::FullText(ft) => {
            let TsVectorSource::ToTsvector { config: Some(vc) } = &ft.vector else {
                return None;
            };
            let vector_config = literal_text(classified, vc, None)?;
            let query_config = literal_text(classified, ft.query_config.as_ref()?, None)?;
            if vector_config != query_config {
                return None;
            }
            let cfg = FTS_CONFIGS.iter().position(|c| *c == vector_config)?;
            if !meta.indexes_config(cfg) {
                return None;
            }
            let func = match ft.query_fn {
                TsQueryFn::ToTsquery => "to_tsquery",
                TsQueryFn::PlaintoTsquery => "plainto_tsquery",
                TsQueryFn::PhrasetoTsquery => "phraseto_tsquery",
                TsQueryFn::WebsearchToTsquery => "websearch_to_tsquery",
            };
            let r = ctx
                .search
                .tsquery_requirement(ctx, vector_config, func, pattern)
                .await?;
            Some((column, FieldKind::Lexeme(cfg), req::and(vec![r])))
        }
    }
}
