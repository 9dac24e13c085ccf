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
//! Extended-protocol statements are relayed unchanged: a Parse may be bound many times, and
//! baking one moment's candidates into it would go stale.

use super::cache_serve::FenceCheck;
use super::state::{FrontendState, SharedState};
use crate::config::policy::PredicateKind;
use crate::context::ProxyContext;
use crate::protocol::frames::HEADER_LEN;
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

/// A Query replaced by its narrowed form (or by the answer to `EXPLAIN ROUTE` of one).
pub struct Narrowed {
    /// Bytes of the client's buffer the original Query took.
    pub consumed: usize,
    /// The Query message to send instead.
    pub frame: BytesMut,
    pub classified: Classified,
    /// The frame answers `EXPLAIN ROUTE` (track it as a plain Postgres query).
    pub explain: bool,
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
        match narrow(sql, &classified, fs, ctx, shared).await {
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
        classified,
        explain: true,
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

/// Tries to narrow the simple Query at the start of `buf`.
pub async fn try_narrow(
    buf: &[u8],
    fs: &mut FrontendState,
    ctx: &ProxyContext,
    shared: &SharedState,
) -> Option<Narrowed> {
    if shared.in_transaction_block() || !shared.tracker.is_idle() || !fs.policy_database() {
        return None;
    }
    let header = buf.get(..HEADER_LEN)?;
    if header[0] != b'Q' || !shared.client_encoding_utf8.load(Relaxed) {
        return None;
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let total = 1 + len;
    let body = buf.get(HEADER_LEN..total)?;
    let text = body.strip_suffix(&[0])?;
    if let Some(target) = super::explain::explain_route_target(text) {
        return try_explain(target, total, fs, ctx, shared).await;
    }
    let sql = std::str::from_utf8(text).ok()?;
    let classified = ctx.classifier.classify(sql);
    if classified.shape.text_predicates.is_empty() {
        return None;
    }
    match narrow(sql, &classified, fs, ctx, shared).await {
        Ok((new_sql, candidates)) => {
            let counters = &ctx.search.counters;
            counters.narrowed.fetch_add(1, Relaxed);
            counters.candidates.fetch_add(candidates as u64, Relaxed);
            let mut frame = BytesMut::with_capacity(new_sql.len() + HEADER_LEN + 1);
            frame.put_u8(b'Q');
            frame.put_u32((new_sql.len() + 5) as u32);
            frame.put_slice(new_sql.as_bytes());
            frame.put_u8(0);
            Some(Narrowed {
                consumed: total,
                frame,
                classified,
                explain: false,
            })
        }
        Err(reason) => {
            fs.cache.last_reason = Some(reason);
            None
        }
    }
}

/// Every check, then the candidates and the rewritten statement (and how many candidates);
/// `Err` names what failed.
async fn narrow(
    sql: &str,
    classified: &Classified,
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
    let decision = router::decide(Some(shape), view, fs.policies());
    if decision.reason != Reason::IndexNotReady || shape.point_read.is_some() {
        return Err(decision.reason);
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
        if let Some(part) = part_for(p, classified, &table.meta, ctx).await {
            parts.push(part);
        }
    }
    if parts.iter().all(|(_, _, r)| !r.is_constrained()) {
        return Err(Reason::NotNarrowable);
    }
    let applied = search.gate(&table)?;
    match fs.cache.search_fence.advance(&ctx.cache.fences, applied) {
        FenceCheck::Met => {}
        FenceCheck::Requested | FenceCheck::Waiting => return Err(Reason::Fenced),
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

/// A string literal's value (not a parameter, not opaque).
fn literal_text<'a>(classified: &'a Classified, v: &KeyValue) -> Option<&'a str> {
    match classified.key(v)? {
        KeyRef::Literal(Literal::String(s)) => Some(s),
        _ => None,
    }
}

/// What the index can require for one predicate; `None` when it narrows nothing (the
/// predicate stays in the statement either way).
async fn part_for(
    p: &TextPredicate,
    classified: &Classified,
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
    if p.pattern_cast.as_deref().is_some_and(|c| c != "text") {
        return None;
    }
    let pattern = literal_text(classified, &p.pattern)?;
    match &p.op {
        TextOp::Like | TextOp::ILike => {
            let escape = match &p.escape {
                None => Some('\\'),
                Some(e) => {
                    let e = literal_text(classified, e)?;
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
            let vector_config = literal_text(classified, vc)?;
            let query_config = literal_text(classified, ft.query_config.as_ref()?)?;
            if vector_config != query_config {
                return None;
            }
            let cfg = FTS_CONFIGS.iter().position(|c| *c == vector_config)?;
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
