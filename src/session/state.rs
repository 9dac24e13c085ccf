//! Per-session state the relay keeps: what the backend direction learns (transaction status,
//! server-reported settings, the backend pid), the statements in flight, and what the
//! frontend direction tracks (portals, the routing decision for each statement). Prepared
//! statements live in the tracker's [`super::statements::StatementBook`], because Postgres's
//! answers (seen by the backend direction) confirm them.

use super::bind::{parse_param_types, Bind};
use super::cache_serve::CacheSession;
use super::explain;
use super::keys::KeyResolver;
use super::statements::{pg_name, Lookup};
use super::tracker::StatementTracker;
use crate::cache::key::KeyType;
use crate::context::ProxyContext;
use crate::protocol::frames::read_cstr;
use crate::router::{self, SessionView};
use crate::sql::{
    Classified, DiscardTarget, KeyRef, OtherCommand, SetCommand, Shape, StatementKind, TxnControl,
};
use crate::stats::Route;
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Written by the backend direction, read by the frontend direction and by admin views.
#[derive(Debug)]
pub struct SharedState {
    /// Last ReadyForQuery status: b'I' idle, b'T' in a transaction block, b'E' failed block.
    pub txn_status: AtomicU8,
    /// True while the session's client_encoding is UTF8, so statement text can be read as
    /// UTF-8. Other encodings but LATIN1: non-ASCII statements are relayed unclassified.
    pub client_encoding_utf8: AtomicBool,
    /// True while the session's client_encoding is LATIN1, whose bytes map one to one onto
    /// the first 256 code points: statements are read by decoding them.
    pub client_encoding_latin1: AtomicBool,
    pub backend_pid: AtomicU32,
    /// Every ParameterStatus the server reported, latest value per name.
    pub parameters: Mutex<HashMap<String, String>>,
    /// Bumped by every ParameterStatus (the cache recomputes the session's profile).
    pub parameter_generation: AtomicU64,
    /// Statements in flight, matched with their completions.
    pub tracker: StatementTracker,
    /// Set at the first ReadyForQuery: Postgres has authenticated the client. Until then the
    /// frontend inspects nothing, so an unauthenticated client cannot feed the statistics,
    /// make the proxy hold large frames, or trigger catalog reloads.
    pub authenticated: AtomicBool,
}

impl Default for SharedState {
    fn default() -> Self {
        SharedState {
            txn_status: AtomicU8::new(b'I'),
            client_encoding_utf8: AtomicBool::new(false),
            client_encoding_latin1: AtomicBool::new(false),
            backend_pid: AtomicU32::new(0),
            parameters: Mutex::new(HashMap::new()),
            parameter_generation: AtomicU64::new(0),
            tracker: StatementTracker::default(),
            authenticated: AtomicBool::new(false),
        }
    }
}

impl SharedState {
    pub fn on_parameter_status(&self, body: &[u8]) {
        let Some((name, rest)) = read_cstr(body) else {
            return;
        };
        let Some((value, _)) = read_cstr(rest) else {
            return;
        };
        let name = String::from_utf8_lossy(name).into_owned();
        let value = String::from_utf8_lossy(value).into_owned();
        if name == "client_encoding" {
            let utf8 = value.eq_ignore_ascii_case("UTF8") || value.eq_ignore_ascii_case("UNICODE");
            self.client_encoding_utf8.store(utf8, Relaxed);
            let latin1 = value.eq_ignore_ascii_case("LATIN1");
            self.client_encoding_latin1.store(latin1, Relaxed);
        }
        if let Ok(mut p) = self.parameters.lock() {
            p.insert(name, value);
        }
        self.parameter_generation.fetch_add(1, Relaxed);
    }

    pub fn parameter(&self, name: &str) -> Option<String> {
        self.parameters
            .lock()
            .ok()
            .and_then(|p| p.get(name).cloned())
    }

    pub fn in_transaction_block(&self) -> bool {
        self.txn_status.load(Relaxed) != b'I'
    }
}

/// A statement prepared with a Parse message.
#[derive(Debug, Clone)]
pub struct PreparedStatement {
    pub sql: Arc<str>,
    pub classified: Classified,
    /// Parameter types the Parse declared (0: inferred by the server).
    pub param_types: Box<[u32]>,
}

/// Named portals tracked at most; beyond, the map is cleared (their Executes then count as
/// unclassified). Postgres drops portals at the end of their transaction (and on Close);
/// the proxy forgets them only on rebinding the name or at this cap, so the map is bounded
/// but may name portals Postgres has already dropped (harmless: an Execute of one fails, or
/// runs a cursor SQL declared since, which is a query).
const MAX_NAMED_PORTALS: usize = 256;

/// State only the frontend direction touches (no locks).
#[derive(Debug)]
pub struct FrontendState {
    /// The statement shape the unnamed portal runs (`None`: unclassified).
    unnamed_portal: Option<Arc<Shape>>,
    named_portals: HashMap<Box<[u8]>, Option<Arc<Shape>>>,
    /// `named_portals` overflowed and was cleared: a name it lacks may be a portal bound
    /// through the protocol to any statement, not only a SQL cursor.
    portals_lost: bool,
    /// An extended-protocol message was forwarded since the last Sync.
    pub extended_open: bool,
    keys: KeyResolver,
    /// Connected to the database policies apply to (the upstream URL's): the only one whose
    /// catalog the proxy reads, so the only one whose keys are recorded.
    policy_database: bool,
    /// What the cache needs to know of this session.
    pub cache: CacheSession,
    /// The last Parse this session classified.
    last_parse: LastParse,
}

/// The last Parse a session classified: its SQL and parameter types (the message body after
/// the statement name) and the statement they were classified as. Clients that use the
/// unnamed statement (`pgbench -M extended`, most drivers' one-shot queries) send the same
/// Parse for every execution; comparing its bytes with the last one skips the lexer, the
/// shape cache and three allocations. Kept only for ASCII SQL, whose classification no
/// client encoding changes.
#[derive(Debug, Default)]
struct LastParse {
    body: Box<[u8]>,
    stmt: Option<Arc<PreparedStatement>>,
}

/// Parse bodies longer than this are classified afresh each time rather than remembered
/// (the comparison would cost about what it saves, and the copy would be held).
const LAST_PARSE_MAX: usize = 4096;

impl LastParse {
    /// The statement a Parse with this body (after the name) was classified as, if it is
    /// byte for byte the last one remembered.
    fn get(&self, after_name: &[u8]) -> Option<&Arc<PreparedStatement>> {
        self.stmt.as_ref().filter(|_| *self.body == *after_name)
    }

    /// Remembers `stmt` (`None`: unclassified) for `after_name`, whose SQL is `sql`.
    fn remember(&mut self, after_name: &[u8], sql: &[u8], stmt: Option<&Arc<PreparedStatement>>) {
        match stmt {
            Some(s) if after_name.len() <= LAST_PARSE_MAX && sql.is_ascii() => {
                self.body = after_name.into();
                self.stmt = Some(Arc::clone(s));
            }
            _ => *self = LastParse::default(),
        }
    }
}

impl FrontendState {
    pub fn new(ctx: &ProxyContext, database: &str, cache: CacheSession) -> Self {
        FrontendState {
            unnamed_portal: None,
            named_portals: HashMap::new(),
            portals_lost: false,
            extended_open: false,
            keys: KeyResolver::new(ctx),
            policy_database: database == ctx.upstream.database,
            cache,
            last_parse: LastParse::default(),
        }
    }

    pub fn policy_database(&self) -> bool {
        self.policy_database
    }

    pub fn refresh_keys(&mut self, ctx: &ProxyContext) {
        self.keys.refresh(ctx);
    }

    pub fn policies(&self) -> &crate::placement::PolicySet {
        self.keys.policies()
    }

    /// A Query the search store narrowed: sent rewritten, counted and tracked as the
    /// original statement on the search route.
    pub fn on_narrowed(
        &mut self,
        classified: &Classified,
        ctx: &ProxyContext,
        shared: &SharedState,
    ) {
        ctx.metrics
            .count_statement(crate::sql::kind_index(&classified.shape.kind));
        self.observe(ctx, shared, Some(classified), None, false);
        ctx.metrics.route_reasons[router::Reason::Narrowed.index()].fetch_add(1, Relaxed);
        self.record_keys(ctx, classified, None);
        shared
            .tracker
            .query(Some(Arc::clone(&classified.shape)), Route::Search);
    }

    /// The Execute of a batch the search store narrowed (its Parse and Bind were tracked as
    /// the client sent them): tracked on the search route.
    pub fn on_narrowed_execute(
        &mut self,
        classified: &Classified,
        ctx: &ProxyContext,
        shared: &SharedState,
    ) {
        self.cache.last_reason = None;
        ctx.metrics.route_reasons[router::Reason::Narrowed.index()].fetch_add(1, Relaxed);
        shared
            .tracker
            .execute(Some(Arc::clone(&classified.shape)), Route::Search);
    }

    /// Records the keys a statement names (a served one too: it stays hot).
    pub fn record_keys(
        &mut self,
        ctx: &ProxyContext,
        classified: &Classified,
        bind: Option<(&Bind<'_>, &[u32])>,
    ) {
        if self.policy_database {
            self.keys.record(ctx, classified, bind);
        }
    }

    /// A statement about to be sent: follow its settings, and when it writes, drop the keys
    /// it names from the cache at once (every session) and owe this session a fence.
    fn observe(
        &mut self,
        ctx: &ProxyContext,
        shared: &SharedState,
        classified: Option<&Classified>,
        bind: Option<BoundValues<'_>>,
        settled: bool,
    ) {
        if self.cache.observe(classified.map(|c| &*c.shape), settled) {
            shared.tracker.write_sent();
        }
        if let (Some(c), true) = (classified, self.policy_database) {
            if !c.shape.write_keys.is_empty() {
                invalidate_written(ctx, c, bind);
            }
        }
    }

    fn classify(
        &self,
        text: &[u8],
        ctx: &ProxyContext,
        shared: &SharedState,
    ) -> Option<(Arc<str>, Classified)> {
        // ASCII reads the same in every client encoding Postgres accepts.
        let decoded: String;
        let text = if text.is_ascii() || shared.client_encoding_utf8.load(Relaxed) {
            text
        } else if shared.client_encoding_latin1.load(Relaxed) {
            // Postgres converts LATIN1 byte b to U+00b (0x80..0x9F included).
            decoded = text.iter().map(|&b| char::from(b)).collect();
            decoded.as_bytes()
        } else {
            ctx.metrics
                .statements_unclassified_encoding
                .fetch_add(1, Relaxed);
            return None;
        };
        // While a change of client_encoding is unanswered (see `route`), the flags above may
        // name the wrong encoding.
        if !text.is_ascii() && shared.tracker.encoding_unsettled() {
            ctx.metrics
                .statements_unclassified_encoding
                .fetch_add(1, Relaxed);
            return None;
        }
        // Invalid UTF-8 is relayed as is: Postgres answers it with its own error.
        let Ok(sql) = std::str::from_utf8(text) else {
            ctx.metrics
                .count_statement(crate::sql::kind_index_unparsed());
            return None;
        };
        let classified = ctx.classifier.classify(sql);
        ctx.metrics
            .count_statement(crate::sql::kind_index(&classified.shape.kind));
        Some((Arc::from(sql), classified))
    }

    /// Decide the route of a statement about to run, and count the reason.
    fn route(&mut self, shape: Option<&Shape>, ctx: &ProxyContext, shared: &SharedState) -> Route {
        self.keys.refresh(ctx);
        let view = SessionView {
            in_transaction: shared.in_transaction_block(),
            pipelined: !shared.tracker.is_idle(),
            policy_database: self.policy_database,
        };
        let decided = router::decide_reason(shape, view, self.keys.policies());
        let cache_reason = self.cache.last_reason.take();
        let reason = match (decided, cache_reason) {
            (router::Reason::KeyNotPlaced | router::Reason::IndexNotReady, Some(r)) => r,
            (r, _) => r,
        };
        ctx.metrics.route_reasons[reason.index()].fetch_add(1, Relaxed);
        let set_in_block = || shared.tracker.encoding_set_in_block();
        if shape.is_none_or(|s| may_change_encoding(s, set_in_block)) {
            shared.tracker.encoding_change_sent();
        }
        // Unclassified (not valid text, not ASCII under an encoding the proxy does not read,
        // or while client_encoding may be changing): may be anything.
        if shape.is_none_or(|s| {
            matches!(
                s.kind,
                StatementKind::Ddl | StatementKind::Multi | StatementKind::Unparsed
            )
        }) {
            ctx.catalog.schema_changed();
        }
        if shape.is_none_or(may_change_schema) {
            // Now, and again once it has committed: a re-read of the catalog that runs
            // before the commit (or inside the transaction block, before COMMIT) still sees
            // the old tables and privileges.
            ctx.cache.schema_changed();
            shared.tracker.schema_change_sent();
        }
        // The router sends everything to Postgres; the cache and search paths answer
        // before a statement gets here.
        Route::Postgres
    }

    /// Query: classify, route, record keys, track the statement, and follow SQL-level
    /// DEALLOCATE / DISCARD, which also drop protocol-level prepared statements. Returns a
    /// replacement Query message for `EXPLAIN ROUTE`, which the proxy answers itself (as
    /// a VALUES query Postgres runs, so the answer arrives in order with everything else).
    pub fn on_query(
        &mut self,
        body: &[u8],
        ctx: &ProxyContext,
        shared: &SharedState,
    ) -> Option<BytesMut> {
        let text = body.strip_suffix(&[0]).unwrap_or(body);
        if let Some(target) = explain::explain_route_target(text) {
            let reply = self.explain_route(target, ctx, shared);
            shared.tracker.query(None, Route::Postgres);
            return Some(reply);
        }
        let Some((_, classified)) = self.classify(text, ctx, shared) else {
            self.observe(ctx, shared, None, None, false);
            let route = self.route(None, ctx, shared);
            shared.tracker.query(None, route);
            return None;
        };
        let settled = !shared.in_transaction_block() && shared.tracker.is_idle();
        self.observe(ctx, shared, Some(&classified), None, settled);
        let route = self.route(Some(&classified.shape), ctx, shared);
        if self.policy_database {
            self.keys.record(ctx, &classified, None);
        }
        shared
            .tracker
            .query(Some(Arc::clone(&classified.shape)), route);
        follow_statement_commands(&classified.shape, settled, shared);
        None
    }

    /// `EXPLAIN ROUTE <statement>` as a Query message that makes Postgres return the
    /// decision as a one-row result set.
    fn explain_route(
        &mut self,
        target: &[u8],
        ctx: &ProxyContext,
        shared: &SharedState,
    ) -> BytesMut {
        self.keys.refresh(ctx);
        let classified = self.classify(target, ctx, shared).map(|(_, c)| c);
        let view = SessionView {
            in_transaction: shared.in_transaction_block(),
            pipelined: !shared.tracker.is_idle(),
            policy_database: self.policy_database,
        };
        let decision = router::decide(
            classified.as_ref().map(|c| &*c.shape),
            view,
            self.keys.policies(),
        );
        explain::as_query(&explain::explain_table(classified.as_ref(), &decision))
    }

    /// Parse: remember name → SQL, its classification and declared parameter types.
    pub fn on_parse(&mut self, body: &[u8], ctx: &ProxyContext, shared: &SharedState) {
        let Some((name, after_name)) = read_cstr(body) else {
            return;
        };
        if let Some(last) = self.last_parse.get(after_name) {
            let stmt = Arc::clone(last);
            ctx.metrics
                .count_statement(crate::sql::kind_index(&stmt.classified.shape.kind));
            shared.tracker.parse_sent(name, Some(stmt));
            return;
        }
        let Some((sql, rest)) = read_cstr(after_name) else {
            return;
        };
        let stmt = self.classify(sql, ctx, shared).map(|(sql, classified)| {
            Arc::new(PreparedStatement {
                sql,
                classified,
                param_types: parse_param_types(rest),
            })
        });
        self.last_parse.remember(after_name, sql, stmt.as_ref());
        shared.tracker.parse_sent(name, stmt);
    }

    /// Bind: the portal now runs this statement; record its keys with the bound values.
    pub fn on_bind(&mut self, body: &[u8], ctx: &ProxyContext, shared: &SharedState) {
        let Some(bind) = Bind::parse(body) else {
            return;
        };
        let stmt = match shared.tracker.statement_source(bind.statement) {
            Lookup::Known(stmt) => Some(stmt),
            Lookup::Unknown => None,
            Lookup::SqlPrepared => self.stand_in(b"EXECUTE ", bind.statement, ctx, shared),
        };
        match &stmt {
            Some(p) => self.observe(
                ctx,
                shared,
                Some(&p.classified),
                Some(BoundValues {
                    bind: &bind,
                    types: &p.param_types,
                    utf8: shared.client_encoding_utf8.load(Relaxed)
                        && !shared.tracker.encoding_unsettled(),
                }),
                false,
            ),
            None => self.observe(ctx, shared, None, None, false),
        }
        if let (Some(p), true) = (&stmt, self.policy_database) {
            self.keys
                .record(ctx, &p.classified, Some((&bind, &p.param_types)));
        }
        let shape = stmt.map(|p| Arc::clone(&p.classified.shape));
        if bind.portal.is_empty() {
            self.unnamed_portal = shape;
        } else {
            if self.named_portals.len() >= MAX_NAMED_PORTALS {
                self.named_portals.clear();
                self.portals_lost = true;
            }
            self.named_portals
                .insert(pg_name(bind.portal).into(), shape);
        }
    }

    /// Messages were forwarded without being read (sent before authentication ended): they
    /// may have made statements and portals the proxy does not know, so a name it lacks may
    /// be anything.
    pub fn messages_unread(&mut self, shared: &SharedState) {
        self.portals_lost = true;
        shared.tracker.statement_names_may_be_lost();
    }

    /// A classified stand-in for a statement or portal SQL made (`PREPARE`, `DECLARE`) that
    /// the protocol refers to by name: `EXECUTE "name"` or `FETCH ALL FROM "name"`, which
    /// route, fence and count like the SQL that names it. Without one, the statement would
    /// be unclassified, and each of its Executes would make the cache forget everything as
    /// if it could have been DDL, which neither can be.
    fn stand_in(
        &self,
        command: &[u8],
        name: &[u8],
        ctx: &ProxyContext,
        shared: &SharedState,
    ) -> Option<Arc<PreparedStatement>> {
        let mut text = Vec::with_capacity(command.len() + name.len() + 2);
        text.extend_from_slice(command);
        text.push(b'"');
        for &b in name {
            if b == b'"' {
                text.push(b'"');
            }
            text.push(b);
        }
        text.push(b'"');
        let (sql, classified) = self.classify(&text, ctx, shared)?;
        Some(Arc::new(PreparedStatement {
            sql,
            classified,
            param_types: Box::default(),
        }))
    }

    /// Execute: route and track the portal's statement.
    pub fn on_execute(&mut self, body: &[u8], ctx: &ProxyContext, shared: &SharedState) {
        let portal = pg_name(read_cstr(body).map_or(&b""[..], |(p, _)| p));
        let shape = if portal.is_empty() {
            self.unnamed_portal.clone()
        } else if !portal.is_ascii() {
            // Postgres converts names to the server encoding: after a change of
            // client_encoding these bytes may name another portal.
            None
        } else {
            match self.named_portals.get(portal) {
                Some(shape) => shape.clone(),
                // Not bound through the protocol: a cursor SQL `DECLARE` opened (a query,
                // never DDL), or no portal at all (Postgres answers with an error).
                None if !self.portals_lost => self
                    .stand_in(b"FETCH ALL FROM ", portal, ctx, shared)
                    .map(|p| Arc::clone(&p.classified.shape)),
                None => None,
            }
        };
        if let Some(shape) = &shape {
            // Run by the extended protocol: it may be skipped after an error earlier in
            // the batch, so never settled.
            follow_statement_commands(shape, false, shared);
        }
        let route = self.route(shape.as_deref(), ctx, shared);
        shared.tracker.execute(shape, route);
    }

    /// Close: forget a prepared statement ('S', once Postgres confirms) or a portal ('P').
    pub fn on_close(&mut self, body: &[u8], shared: &SharedState) {
        match body.split_first() {
            Some((&b'S', rest)) => {
                if let Some((name, _)) = read_cstr(rest) {
                    shared.tracker.close_sent(Some(name));
                }
            }
            Some((&b'P', rest)) => {
                if let Some((name, _)) = read_cstr(rest) {
                    shared.tracker.close_sent(None);
                    // A named portal's entry stays: Postgres skips the Close after an
                    // error, and inside a transaction block (past a `ROLLBACK TO`) the
                    // portal can run later. A later Execute of the name runs that
                    // statement, fails, or runs a cursor SQL declared (a query): the old
                    // shape is never less cautious than the truth.
                    if name.is_empty() {
                        self.unnamed_portal = None;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Whether a statement may change table definitions or privileges (the cache then serves
/// nothing until it has re-read them). Functions that run DDL are caught by the periodic
/// re-read instead. `COMMIT PREPARED` counts: the prepared transaction may hold DDL or a
/// REVOKE, which take effect only then (the re-read after its PREPARE TRANSACTION saw
/// them uncommitted).
fn may_change_schema(shape: &Shape) -> bool {
    let risky = |k: &StatementKind| {
        matches!(
            k,
            StatementKind::Ddl
                | StatementKind::Unparsed
                | StatementKind::Transaction(TxnControl::CommitPrepared)
                | StatementKind::Other(OtherCommand::Do)
                | StatementKind::Other(OtherCommand::Call)
                | StatementKind::Other(OtherCommand::Unknown)
        )
    };
    risky(&shape.kind) || shape.parts.iter().any(risky)
}

/// Follows SQL that changes the session's prepared statements (`DEALLOCATE`, `DISCARD ALL`,
/// `PREPARE`), sent as a Query or run by an Execute. `settled`: nothing else is in flight
/// and no transaction block is open, so only an error in the statement itself can stop it.
fn follow_statement_commands(shape: &Shape, settled: bool, shared: &SharedState) {
    for kind in shape.kinds() {
        match kind {
            StatementKind::Set(SetCommand::Discard(DiscardTarget::All))
            | StatementKind::Other(OtherCommand::Deallocate { name: None }) => {
                shared.tracker.forget_statements(None);
                if !settled || shape.kind == StatementKind::Multi {
                    // It may fail (in an aborted transaction block, or after an error
                    // earlier in the same Query) and leave every name in place: the book
                    // no longer knows which exist.
                    shared.tracker.statement_names_may_be_lost();
                }
            }
            StatementKind::Other(OtherCommand::Deallocate { name: Some(name) }) => {
                shared.tracker.forget_statements(Some(name.as_bytes()));
                if !settled || shape.kind == StatementKind::Multi {
                    shared.tracker.statement_names_may_be_lost();
                }
            }
            // SQL PREPARE shares the protocol's statement names; the proxy does not track
            // what it prepares, so it stops answering named Parses itself. A name the book
            // holds makes Postgres refuse the PREPARE, unless the book is wrong: either
            // way the name's text is in doubt from here on.
            StatementKind::Other(OtherCommand::Prepare { name, .. }) => {
                shared.tracker.no_virtual_names();
                shared.tracker.prepare_sent(name.as_bytes());
            }
            StatementKind::Multi | StatementKind::Unparsed => shared.tracker.no_virtual_names(),
            _ => {}
        }
    }
}

/// Whether a statement may change client_encoding: `SET client_encoding` / `SET NAMES`,
/// `RESET client_encoding`, `RESET ALL`, `DISCARD ALL`, a call of `set_config` (its
/// arguments are literals, gone from the normalized text), `DO` and `CALL`, the end of a
/// transaction block (or a rollback to a savepoint) when `set_in_block` says the encoding
/// may have been set since the session was last idle, and text the proxy could not parse
/// that mentions `client_encoding` or `names` (normalized text has unquoted identifiers
/// lowercased). A user function that sets it is not caught.
fn may_change_encoding(shape: &Shape, set_in_block: impl Fn() -> bool) -> bool {
    let n = &*shape.normalized;
    shape.kinds().iter().any(|k| match k {
        StatementKind::Unparsed => n.contains("client_encoding") || n.contains("names"),
        StatementKind::Set(SetCommand::ResetAll)
        | StatementKind::Set(SetCommand::Discard(DiscardTarget::All))
        | StatementKind::Other(OtherCommand::Do | OtherCommand::Call) => true,
        StatementKind::Set(SetCommand::Set { name, .. })
        | StatementKind::Set(SetCommand::Reset { name }) => &**name == "client_encoding",
        StatementKind::Transaction(t) => {
            !matches!(
                t,
                TxnControl::Begin | TxnControl::Savepoint | TxnControl::Release
            ) && set_in_block()
        }
        _ => false,
    }) || shape.names_set_config
}

/// A Bind's parameter values, with what they are read by.
#[derive(Clone, Copy)]
struct BoundValues<'a> {
    bind: &'a Bind<'a>,
    /// Parameter types the statement's Parse declared.
    types: &'a [u32],
    /// The session's client_encoding is UTF8: text values are UTF-8 as sent. Otherwise
    /// Postgres converts them first, and only ASCII reads the same before and after.
    utf8: bool,
}

/// Drops from the cache the keys a write names; a key it cannot read (or a write that moves
/// rows to new keys) drops the whole table.
fn invalidate_written(ctx: &ProxyContext, c: &Classified, bound: Option<BoundValues<'_>>) {
    let cache = &ctx.cache;
    let schema = cache.schema();
    for w in &c.shape.write_keys {
        let (schema_name, table_name) = router::resolve(&w.table);
        let Some(meta) = schema.table(schema_name, table_name) else {
            continue;
        };
        let key_column = &*meta.columns[meta.key_index].name;
        if w.assigned.iter().any(|a| &**a == key_column) {
            cache.store.flush_table(meta.oid);
            if meta.uses_redis() {
                cache.new_l2_epoch_soon();
            }
            continue;
        }
        for (column, keys) in &w.by_column {
            if &**column != key_column {
                continue;
            }
            for k in keys {
                let key = c.key(k).and_then(|k| {
                    if let (KeyRef::Param(n), Some(b)) = (k, bound) {
                        let converted = meta.key_type == KeyType::Text
                            && !b.utf8
                            && b.bind.param(n).is_some_and(|p| !p.bytes().is_ascii());
                        if converted {
                            return None;
                        }
                    }
                    meta.key_type
                        .of_statement(k, bound.map(|b| (b.bind, b.types)))
                });
                match key {
                    Some(key) => {
                        cache
                            .store
                            .invalidate_written(meta.oid, &key, &cache.profiles.all());
                        if meta.uses_redis() {
                            cache.invalidate_l2_soon(meta.oid, key);
                        }
                    }
                    None => {
                        cache.store.flush_table(meta.oid);
                        if meta.uses_redis() {
                            cache.new_l2_epoch_soon();
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Classifier;

    fn statement(sql: &str) -> Arc<PreparedStatement> {
        Arc::new(PreparedStatement {
            sql: Arc::from(sql),
            classified: Classifier::new(10).classify(sql),
            param_types: Box::new([]),
        })
    }

    /// A Parse body after the name: SQL, NUL, parameter type count and OIDs.
    fn body(sql: &str, types: &[u32]) -> Vec<u8> {
        let mut b = sql.as_bytes().to_vec();
        b.push(0);
        b.extend_from_slice(&(types.len() as u16).to_be_bytes());
        for t in types {
            b.extend_from_slice(&t.to_be_bytes());
        }
        b
    }

    #[test]
    fn last_parse_answers_only_the_same_bytes() {
        let mut memo = LastParse::default();
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        let stmt = statement(sql);
        let int4 = body(sql, &[23]);
        assert!(memo.get(&int4).is_none(), "nothing remembered yet");
        memo.remember(&int4, sql.as_bytes(), Some(&stmt));
        assert!(memo.get(&int4).is_some_and(|s| Arc::ptr_eq(s, &stmt)));
        // Same SQL, other parameter types; a longer or shorter text: classified afresh.
        assert!(memo.get(&body(sql, &[20])).is_none());
        assert!(memo.get(&body(sql, &[])).is_none());
        assert!(memo.get(&body(&format!("{sql} "), &[23])).is_none());
        assert!(memo.get(&int4[..int4.len() - 1]).is_none());
        // An unclassified Parse forgets the last one.
        memo.remember(&body("x", &[]), b"x", None);
        assert!(memo.get(&int4).is_none());
    }

    #[test]
    fn last_parse_keeps_neither_non_ascii_nor_long_sql() {
        let mut memo = LastParse::default();
        let sql = "SELECT * FROM t WHERE name = 'é'";
        let b = body(sql, &[]);
        memo.remember(&b, sql.as_bytes(), Some(&statement(sql)));
        assert!(
            memo.get(&b).is_none(),
            "non-ASCII SQL depends on client_encoding"
        );
        let long = format!("SELECT 1 -- {}", "x".repeat(LAST_PARSE_MAX));
        let b = body(&long, &[]);
        memo.remember(&b, long.as_bytes(), Some(&statement(&long)));
        assert!(memo.get(&b).is_none());
    }
}
