//! Answering point reads from the cache store, for one session.
//!
//! The relay asks [`try_serve`] whenever the client's buffer starts a new batch while the
//! session is idle (nothing unanswered upstream, no transaction block). A simple Query, or an
//! extended-protocol batch `Bind [Describe portal] Execute Sync` on a statement Postgres has
//! prepared, is answered here when every check of the "routing is safe" contract holds; the
//! relay writes the answer to the client between two of Postgres's frames (behind any frame
//! it is forwarding, e.g. a notification), in order. Anything else returns
//! `None` and the frames are relayed as usual (and the reason is counted).
//!
//! The session's part of the contract lives in [`CacheSession`]: the role (and whether it
//! changed), the settings its text values depend on, whether unqualified table names still
//! resolve as the catalog says, and the freshness fence of its own writes.

use super::batch::{frame_at, ExtendedBatch};
use super::bind::{declared_type, Bind, Param};
use super::state::{FrontendState, PreparedStatement, SharedState};
use crate::cache::key::KeyType;
use crate::cache::profile::{OutputProfile, REPORTED, UNREPORTED};
use crate::cache::response::{self, OutputColumn};
use crate::cache::schema::{CacheSchema, TableMeta};
use crate::cache::store::CachedRow;
use crate::cache::{CacheService, Gate};
use crate::cdc::Lsn;
use crate::context::ProxyContext;
use crate::protocol::startup::StartupMessage;
use crate::router::{self, Reason, SessionView};
use crate::sql::{
    Classified, KeyRef, KeyValue, OtherCommand, Projection, SetCommand, Shape, StatementKind,
};
use crate::stats::Route;
use bytes::BytesMut;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Instant;

/// The freshness fence of a session's own writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    /// No write since the last fence was met.
    Clear,
    /// A statement that may write was sent; its fence is taken once the session is idle.
    Needed,
    /// Waiting for the fence service to answer this ticket.
    Ticket(u64),
    /// Serve from the cache only once the feed has applied past this.
    At(Lsn),
}

/// What [`Fence::advance`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceCheck {
    /// No fence, or the store has applied past it.
    Met,
    /// The fence's position is not known yet (its ticket may have been taken just now), or
    /// not applied yet.
    Waiting,
}

impl Fence {
    /// Moves the fence along with what is known now, for a store that has applied up to
    /// `applied`. Called only while the session is idle (its writes have finished).
    /// `settled`: a ticket the session took when its writes ended (see
    /// [`StatementTracker::ready`](super::tracker::StatementTracker::ready)), used instead of
    /// taking one now.
    pub fn advance(
        &mut self,
        fences: &crate::cache::fence::FenceService,
        applied: Lsn,
        settled: Option<u64>,
    ) -> FenceCheck {
        loop {
            match *self {
                Fence::Clear => return FenceCheck::Met,
                Fence::Needed => match settled {
                    Some(ticket) => *self = Fence::Ticket(ticket),
                    None => {
                        *self = Fence::Ticket(fences.request());
                        return FenceCheck::Waiting;
                    }
                },
                Fence::Ticket(t) => match fences.lsn_for(t) {
                    Some(lsn) => *self = Fence::At(lsn),
                    None => return FenceCheck::Waiting,
                },
                Fence::At(lsn) => {
                    if applied < lsn {
                        return FenceCheck::Waiting;
                    }
                    *self = Fence::Clear;
                }
            }
        }
    }
}

/// What the session knows for the cache's sake.
#[derive(Debug)]
pub struct CacheSession {
    role: String,
    /// Values of [`UNREPORTED`] settings given in the start-up packet.
    startup_unreported: [Option<String>; 3],
    /// The start-up packet carried `options` (may set anything).
    startup_options: bool,
    /// An unreported output setting may differ from what the proxy computed.
    settings_uncertain: bool,
    /// search_path may differ from the default, or a temporary table may shadow a name.
    search_path_uncertain: bool,
    /// SET ROLE / SET SESSION AUTHORIZATION (or something that might do it) ran.
    role_changed: bool,
    pub fence: Fence,
    /// The same fence, against the search store's position (which moves independently).
    pub search_fence: Fence,
    /// (ParameterStatus generation, schema, flags) the profile was computed for. The schema
    /// is held weakly: that keeps its allocation, so a later schema cannot reuse the address
    /// and pass for it (it carries the server defaults the profile depends on).
    profile_for: Option<(u64, Weak<CacheSchema>, bool)>,
    profile: Option<u32>,
    /// Why the last attempt did not serve, for the router's count of the same statement.
    pub last_reason: Option<Reason>,
}

impl CacheSession {
    pub fn new(startup: &StartupMessage) -> Self {
        let mut startup_unreported: [Option<String>; 3] = Default::default();
        for (i, name) in UNREPORTED.iter().enumerate() {
            startup_unreported[i] = startup
                .params
                .iter()
                .rev()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        }
        let has = |n: &str| {
            startup
                .params
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(n))
        };
        CacheSession {
            role: startup.user(),
            startup_unreported,
            startup_options: has("options"),
            settings_uncertain: false,
            search_path_uncertain: has("search_path"),
            role_changed: has("role") || has("session_authorization"),
            fence: Fence::Clear,
            search_fence: Fence::Clear,
            profile_for: None,
            profile: None,
            last_reason: None,
        }
    }

    /// search_path may differ from the default, or a temporary table may shadow a name.
    pub fn search_path_uncertain(&self) -> bool {
        self.search_path_uncertain
    }

    /// Follows a statement the session sends (whatever its route): settings it changes and
    /// whether it may write. `settled`: the statement was sent as a simple Query while the
    /// session was idle outside a transaction block, so it commits on its own (a `RESET ALL`
    /// inside a transaction block, a multi-statement Query or an extended-protocol batch
    /// may still fail or be rolled back, restoring the settings it reset).
    /// Returns whether the statement may write (the session now owes a fence).
    #[must_use]
    pub fn observe(&mut self, shape: Option<&Shape>, settled: bool) -> bool {
        let Some(shape) = shape else {
            // Unclassified: could be anything.
            self.fence = Fence::Needed;
            self.search_fence = Fence::Needed;
            self.settings_uncertain = true;
            self.search_path_uncertain = true;
            self.role_changed = true;
            return true;
        };
        let may_write = shape.may_write();
        if may_write {
            self.fence = Fence::Needed;
            self.search_fence = Fence::Needed;
        }
        let anything = |s: &mut Self| {
            s.settings_uncertain = true;
            s.search_path_uncertain = true;
            s.role_changed = true;
        };
        for kind in shape.kinds() {
            match kind {
                StatementKind::Set(SetCommand::Set { name, .. })
                | StatementKind::Set(SetCommand::Reset { name }) => match &**name {
                    "role" | "session_authorization" => self.role_changed = true,
                    "search_path" => self.search_path_uncertain = true,
                    n if UNREPORTED.contains(&n) => self.settings_uncertain = true,
                    _ => {}
                },
                StatementKind::Set(SetCommand::ResetAll)
                | StatementKind::Set(SetCommand::Discard(crate::sql::DiscardTarget::All))
                    if settled && shape.kind != StatementKind::Multi =>
                {
                    // Back to the start-up values, which the profile is computed from; role
                    // and search_path stay as doubtful as they were.
                    self.settings_uncertain = false;
                }
                StatementKind::Multi | StatementKind::Unparsed => anything(self),
                StatementKind::Other(
                    OtherCommand::Do | OtherCommand::Call | OtherCommand::Unknown,
                ) => anything(self),
                _ => {}
            }
        }
        if shape.flags.has_unknown_functions || shape.names_set_config {
            anything(self);
        }
        // A temporary table may now shadow a cached one: `CREATE TEMP TABLE`, `SELECT INTO
        // TEMP`, a table created in `pg_temp` by name — alone or inside a multi-statement
        // Query (whose own kind is Multi).
        let creates = shape.kinds().iter().any(|k| {
            matches!(
                k,
                StatementKind::Ddl | StatementKind::Write | StatementKind::Unparsed
            )
        });
        if creates
            && shape
                .normalized
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .any(|w| {
                    w.eq_ignore_ascii_case("temp")
                        || w.eq_ignore_ascii_case("temporary")
                        || w.get(..7)
                            .is_some_and(|p| p.eq_ignore_ascii_case("pg_temp"))
                })
        {
            self.search_path_uncertain = true;
        }
        may_write
    }

    /// The session's output profile, if the cache can serve it text values.
    fn profile(&mut self, ctx: &ProxyContext, shared: &SharedState) -> Option<u32> {
        let schema = ctx.cache.schema();
        let generation = shared.parameter_generation.load(Relaxed);
        if let Some((g, s, uncertain)) = &self.profile_for {
            if *g == generation
                && std::ptr::eq(s.as_ptr(), Arc::as_ptr(&schema))
                && *uncertain == self.settings_uncertain
            {
                return self.profile;
            }
        }
        self.profile_for = Some((generation, Arc::downgrade(&schema), self.settings_uncertain));
        self.profile = None;
        if self.settings_uncertain || self.startup_options {
            return None;
        }
        if !shared.client_encoding_utf8.load(Relaxed)
            || shared.parameter("standard_conforming_strings").as_deref() != Some("on")
        {
            return None;
        }
        let mut values: Vec<Box<str>> = Vec::with_capacity(6);
        for name in REPORTED {
            values.push(shared.parameter(name)?.into());
        }
        for (i, given) in self.startup_unreported.iter().enumerate() {
            let v = given
                .clone()
                .or_else(|| schema.defaults.unreported[i].clone())?;
            values.push(v.into());
        }
        let values: [Box<str>; 6] = values.try_into().ok()?;
        self.profile = ctx
            .cache
            .profiles
            .id(&OutputProfile { values }, ctx.cache.epoch);
        self.profile
    }
}

/// An answer ready for the client.
pub struct Served {
    /// Bytes of the client's buffer the answer consumed.
    pub consumed: usize,
    pub response: BytesMut,
}

/// Tries to answer the batch at the start of `buf` from the cache.
pub async fn try_serve(
    buf: &[u8],
    fs: &mut FrontendState,
    ctx: &ProxyContext,
    shared: &SharedState,
) -> Option<Served> {
    if shared.in_transaction_block() || !shared.tracker.is_idle() || !fs.policy_database() {
        return None;
    }
    let (typ, body, total) = frame_at(buf)?;
    match typ {
        b'Q' => serve_query(body, total, fs, ctx, shared).await,
        b'B' | b'P' => serve_extended(buf, fs, ctx, shared).await,
        _ => None,
    }
}

async fn serve_query(
    body: &[u8],
    total: usize,
    fs: &mut FrontendState,
    ctx: &ProxyContext,
    shared: &SharedState,
) -> Option<Served> {
    let start = Instant::now();
    let text = body.strip_suffix(&[0])?;
    if !shared.client_encoding_utf8.load(Relaxed) {
        return None;
    }
    let sql = std::str::from_utf8(text).ok()?;
    let classified = ctx.classifier.classify(sql);
    let plan = match plan(&classified, None, fs, ctx, shared).await {
        Ok(p) => p,
        Err(reason) => {
            fs.cache.last_reason = Some(reason);
            return None;
        }
    };
    let formats = response::Formats::All(0);
    let mut out = BytesMut::with_capacity(256);
    response::row_description(&mut out, &plan.meta, &plan.columns, formats);
    let rows = write_rows(&mut out, &plan, formats)?;
    response::command_complete(&mut out, rows);
    response::ready_for_query_idle(&mut out);
    account(fs, ctx, &classified, None, rows, plan.fetched(), start);
    Some(Served {
        consumed: total,
        response: out,
    })
}

/// `[Parse] Bind [Describe portal] Execute Sync`, all in `buf`, on the same portal (and the
/// Parse's statement). A Parse answered here leaves a statement only the proxy has, which the
/// relay materializes before anything that needs it reaches Postgres.
async fn serve_extended(
    buf: &[u8],
    fs: &mut FrontendState,
    ctx: &ProxyContext,
    shared: &SharedState,
) -> Option<Served> {
    let start = Instant::now();
    let batch = ExtendedBatch::read(buf)?;
    let bind = batch.bind;
    // A leading Parse: its statement, unless Postgres would refuse the name.
    let mut parsed: Option<(&[u8], Arc<PreparedStatement>, usize)> = None;
    if let Some(p) = &batch.parse {
        if !shared.client_encoding_utf8.load(Relaxed) || !shared.tracker.virtual_room(p.name) {
            return None;
        }
        let sql = std::str::from_utf8(p.sql).ok()?;
        let classified = ctx.classifier.classify(sql);
        parsed = Some((
            p.name,
            Arc::new(PreparedStatement {
                sql: Arc::from(sql),
                classified,
                param_types: p.types.clone(),
            }),
            p.frame.len(),
        ));
    }
    let describe = match batch.describe {
        None => false,
        Some(d) if !d.statement => true,
        // ParameterDescription is not imitated.
        Some(_) => return None,
    };
    let max_rows = batch.max_rows;
    let at = batch.len;

    let stmt = match &parsed {
        Some((name, stmt, _)) if *name == bind.statement => Arc::clone(stmt),
        Some(_) => return None,
        None => shared.tracker.statement(bind.statement)?,
    };
    let param_count = stmt
        .param_types
        .len()
        .max(usize::from(stmt.classified.shape.max_param));
    if bind.param_count() != param_count || !bind.param_formats_valid() {
        return None;
    }
    // Postgres reads every bound value with its type's input function, used or not: only
    // keys are checked here (as they are read), so every parameter must be a key.
    let point = stmt.classified.shape.point_read.as_ref()?;
    let is_key = |n: usize| {
        point
            .keys
            .iter()
            .any(|k| matches!(k, crate::sql::KeyValue::Param(p) if usize::from(*p) == n))
    };
    if !(1..=param_count).all(is_key) {
        return None;
    }
    let result_formats = bind.result_format_codes()?;
    let plan = match plan(
        &stmt.classified,
        Some((&bind, &stmt.param_types)),
        fs,
        ctx,
        shared,
    )
    .await
    {
        Ok(p) => p,
        Err(reason) => {
            fs.cache.last_reason = Some(reason);
            return None;
        }
    };
    let formats = response::column_formats(result_formats, plan.columns.len())?;
    let nrows = plan.rows().count();
    if max_rows > 0 && (max_rows as usize) <= nrows {
        // Postgres would suspend the portal; not worth imitating.
        return None;
    }
    let mut out = BytesMut::with_capacity(256);
    if parsed.is_some() {
        response::parse_complete(&mut out);
    }
    response::bind_complete(&mut out);
    if describe {
        response::row_description(&mut out, &plan.meta, &plan.columns, formats);
    }
    let rows = write_rows(&mut out, &plan, formats)?;
    response::command_complete(&mut out, rows);
    response::ready_for_query_idle(&mut out);
    // Recorded only once the answer is whole: a row refused above (a binary column of a
    // text-only image, which the lookups should already have left out) leaves no virtual
    // statement.
    if let Some((name, stmt, parse_len)) = &parsed {
        let frame = bytes::Bytes::copy_from_slice(&buf[..*parse_len]);
        if !shared.tracker.virtual_parse(name, Arc::clone(stmt), frame) {
            return None;
        }
    }
    account(
        fs,
        ctx,
        &stmt.classified,
        Some((&bind, &stmt.param_types)),
        rows,
        plan.fetched(),
        start,
    );
    Some(Served {
        consumed: at,
        response: out,
    })
}

/// The DataRows of `plan`; `None` if one of them cannot be written in `formats`.
fn write_rows(out: &mut BytesMut, plan: &Plan, formats: response::Formats<'_>) -> Option<usize> {
    let mut n = 0;
    for row in plan.rows() {
        response::data_row(out, row, &plan.columns, formats)?;
        n += 1;
    }
    Some(n)
}

/// Counts a served statement as the relay counts relayed ones.
fn account(
    fs: &mut FrontendState,
    ctx: &ProxyContext,
    classified: &Classified,
    bind: Option<(&Bind<'_>, &[u32])>,
    rows: usize,
    fetched: bool,
    start: Instant,
) {
    ctx.metrics
        .count_statement(crate::sql::kind_index(&classified.shape.kind));
    ctx.metrics.route_reasons[Reason::Served.index()].fetch_add(1, Relaxed);
    if !fetched {
        ctx.cache.counters.hits.fetch_add(1, Relaxed);
    }
    fs.record_keys(ctx, classified, bind);
    let elapsed = start.elapsed();
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    ctx.metrics.routes[Route::Cache.index()].observe(us, rows as u64, false);
    ctx.stats
        .record_statement(&classified.shape, Route::Cache, elapsed, rows as u64, false);
}

/// Everything needed to write the answer.
struct Plan {
    meta: Arc<crate::cache::schema::TableMeta>,
    columns: Vec<OutputColumn>,
    /// One per distinct key, in the order Postgres returns the rows.
    images: Vec<Image>,
}

/// Where the row comes from.
enum Image {
    /// The in-process store.
    Stored(Arc<crate::cache::store::Entry>),
    /// Redis, checked against this proxy's change log.
    Shared(Option<CachedRow>),
    /// Read from Postgres for this statement, with other sessions' misses.
    Fetched(Option<CachedRow>),
}

impl Plan {
    /// Some row was read from Postgres for this statement (not a hit).
    fn fetched(&self) -> bool {
        self.images.iter().any(|i| matches!(i, Image::Fetched(_)))
    }

    /// The rows, in order (keys without a row have none).
    fn rows(&self) -> impl Iterator<Item = &CachedRow> {
        self.images.iter().filter_map(|i| match i {
            Image::Stored(e) => e.row.as_ref(),
            Image::Shared(r) | Image::Fetched(r) => r.as_ref(),
        })
    }
}

/// The longest identifier Postgres keeps (NAMEDATALEN − 1 bytes).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Distinct keys an `IN` list may name for the cache to answer it.
const MAX_IN_KEYS: usize = 64;

/// The distinct keys of a point read in the order Postgres returns their rows. Several keys
/// need `ORDER BY <key>`: without it the order is the plan's (key order from an index scan,
/// heap order from a bitmap or sequential scan), which the proxy cannot know. Text keys sort
/// by collation, which the proxy does not reproduce: only one distinct text key is served.
fn ordered_keys(
    classified: &Classified,
    p: &crate::sql::PointRead,
    key_type: KeyType,
    bind: Option<(&Bind<'_>, &[u32])>,
) -> Result<Vec<String>, Reason> {
    // Postgres gives an IN list one common type: a parameter whose type is left to it takes
    // the column's type only when every item is such a parameter (`int2key IN ($1, 5)` makes
    // `$1` an int4), so a binary value of one is read here as Postgres reads it only then.
    if p.keys.len() > 1 {
        let undeclared = |k: &KeyValue| match classified.key(k) {
            Some(KeyRef::Param(n)) => bind
                .filter(|(_, types)| declared_type(types, n) == 0)
                .map(|(b, _)| b.param(n)),
            _ => None,
        };
        let all_undeclared = p.keys.iter().all(|k| undeclared(k).is_some());
        let binary_undeclared = p
            .keys
            .iter()
            .any(|k| matches!(undeclared(k), Some(Some(Param::Binary(_)))));
        if binary_undeclared && !all_undeclared {
            return Err(Reason::NotServable);
        }
    }
    let mut keys = p
        .keys
        .iter()
        .map(|k| {
            classified
                .key(k)
                .and_then(|k| key_type.of_statement(k, bind))
        })
        .collect::<Option<Vec<String>>>()
        .ok_or(Reason::NotServable)?;
    match key_type {
        // Canonical integer keys are plain decimals.
        KeyType::Int2 | KeyType::Int4 | KeyType::Int8 => {
            keys.sort_by_key(|k| k.parse::<i64>().ok())
        }
        // Canonical uuids are lowercase hex: text order is byte order, as uuid_cmp's.
        KeyType::Uuid | KeyType::Text => keys.sort(),
    }
    keys.dedup();
    if keys.len() > 1
        && (p.order_by_key.is_none() || key_type == KeyType::Text || keys.len() > MAX_IN_KEYS)
    {
        return Err(Reason::NotServable);
    }
    if p.order_by_key == Some(true) {
        keys.reverse();
    }
    Ok(keys)
}

/// Runs every check; `Err` names the one that failed.
async fn plan(
    classified: &Classified,
    bind: Option<(&Bind<'_>, &[u32])>,
    fs: &mut FrontendState,
    ctx: &ProxyContext,
    shared: &SharedState,
) -> Result<Plan, Reason> {
    let shape = &classified.shape;
    let view = SessionView {
        in_transaction: false,
        pipelined: false,
        policy_database: true,
    };
    fs.refresh_keys(ctx);
    let reason = router::decide_reason(Some(shape), view, fs.policies());
    if reason != Reason::KeyNotPlaced {
        return Err(reason);
    }
    let p = shape.point_read.as_ref().ok_or(Reason::NotPointRead)?;
    if p.key_cast.is_some() || p.limit.is_some() {
        return Err(Reason::NotServable);
    }
    let cache = &ctx.cache;
    let schema = cache.schema();
    let (schema_name, table_name) = router::resolve(&p.table);
    let meta = schema
        .table(schema_name, table_name)
        .filter(|m| m.unservable.is_none())
        .ok_or(Reason::NotServable)?;
    if p.table.schema.is_none()
        && (!meta.unique_name || !schema.defaults.public_on_path || fs.cache.search_path_uncertain)
    {
        return Err(Reason::NotServable);
    }
    if *p.column != *meta.columns[meta.key_index].name || fs.cache.role_changed {
        return Err(Reason::NotServable);
    }
    let columns = match &p.projection {
        Projection::All => meta
            .columns
            .iter()
            .enumerate()
            .map(|(index, _)| OutputColumn { index, alias: None })
            .collect(),
        // Postgres truncates a longer alias and says so in a NOTICE.
        Projection::Columns(list)
            if list.iter().any(|c| {
                c.alias
                    .as_deref()
                    .is_some_and(|a| a.len() > MAX_IDENTIFIER_BYTES)
            }) =>
        {
            return Err(Reason::NotServable)
        }
        Projection::Columns(list) => list
            .iter()
            .map(|c| {
                meta.column(&c.name).map(|index| OutputColumn {
                    index,
                    alias: c.alias.as_deref().map(Box::from),
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or(Reason::NotServable)?,
    };
    let keys = ordered_keys(classified, p, meta.key_type, bind)?;
    let profile = fs.cache.profile(ctx, shared).ok_or(Reason::NotServable)?;

    let applied = cache
        .fresh(meta.oid, meta.policy.max_staleness)
        .map_err(|g| match g {
            Gate::FeedNotFresh => Reason::FeedNotFresh,
            Gate::TableNotReady => Reason::TableNotReady,
        })?;
    if fs.cache.fence == Fence::Needed {
        cache.counters.fences.fetch_add(1, Relaxed);
    }
    let settled = match fs.cache.fence {
        Fence::Needed => shared.tracker.fence_ticket(),
        _ => None,
    };
    let fenced = match fs.cache.fence.advance(&cache.fences, applied, settled) {
        FenceCheck::Met => false,
        FenceCheck::Waiting => {
            // This session reads placed keys after writing: take its next fences as soon
            // as its writes end.
            shared.tracker.eager_fences();
            true
        }
    };
    // A session that wrote may not read memory until the feed has applied its write, but a
    // coalesced fetch starts after its statement arrived, so it sees the write.
    let fetch_only = fenced && meta.policy.coalesce_misses && keys.len() == 1;
    if fenced && !fetch_only {
        return Err(Reason::Fenced);
    }
    if !cache.allowed(ctx, &fs.cache.role, meta.oid).await {
        return Err(Reason::NotServable);
    }
    // Images the change feed wrote may hold text forms only.
    let wants_binary = bind.is_some_and(|(b, _)| {
        b.result_format_codes()
            .is_some_and(|codes| codes.chunks(2).any(|c| c == [0, 1]))
    });
    let images = match keys.as_slice() {
        [key] if fetch_only => vec![cache
            .fetch_missed(meta, profile, key)
            .await
            .map(Image::Fetched)
            .ok_or(Reason::Fenced)?],
        [key] => vec![lookup_one(cache, meta, profile, key, wants_binary).await?],
        _ => lookup_all(cache, meta, profile, &keys, wants_binary)?,
    };
    Ok(Plan {
        meta: Arc::clone(meta),
        columns,
        images,
    })
}

/// Whether a stored image answers a read (`wants_binary`: some column in binary format).
fn answers(entry: &crate::cache::store::Entry, wants_binary: bool) -> bool {
    !wants_binary || entry.row.as_ref().is_none_or(CachedRow::has_binary)
}

/// One key's image: from memory, else (a hot key) from Redis; a miss asks for a fill.
async fn lookup_one(
    cache: &CacheService,
    meta: &Arc<TableMeta>,
    profile: u32,
    key: &str,
    wants_binary: bool,
) -> Result<Image, Reason> {
    if let Some(entry) = cache.store.get_parts(meta.oid, profile, key) {
        if answers(&entry, wants_binary) {
            return Ok(Image::Stored(entry));
        }
    }
    cache.counters.misses.fetch_add(1, Relaxed);
    let key = key.to_string();
    let placed = cache.is_placed(meta.oid, &key);
    // L1 missed a hot key (just changed, or not fetched yet): another proxy may have put its
    // image in Redis. Cold keys are not looked up there (a round trip that would mostly miss).
    let l2 = if placed { cache.l2_for(meta) } else { None };
    if let (Some(l2), Some(p)) = (l2, cache.profiles.get(profile)) {
        let ticket = cache.store.begin_fill();
        // `meta` was read before the ticket: kept only if it is still the description (a
        // flush after the ticket drops the insert; see `cache::refresh`).
        let current = cache
            .schema()
            .by_oid(meta.oid)
            .is_some_and(|m| m.layout == meta.layout);
        let field = crate::cache::l2::field(&p, meta.layout);
        if let Some((snapshot, row)) = l2.get(meta.oid, &key, &field).await {
            if cache.store.admit(&ticket, &snapshot, meta.oid, &key) {
                // Also keep it here (the insert re-checks under the store's guard).
                if current {
                    let copy = row.as_ref().map(CachedRow::duplicate);
                    cache.store.insert_fill(
                        &ticket,
                        &snapshot,
                        meta.oid,
                        profile,
                        &meta.budget,
                        vec![(key.clone(), copy)],
                    );
                }
                return Ok(Image::Shared(row));
            }
            l2.counters.refused.fetch_add(1, Relaxed);
        }
    }
    // With Redis, the migrator fills both tiers (a coalesced fetch keeps rows in L1 only
    // while there is no Redis tier).
    if placed && (l2.is_some() || !meta.policy.coalesce_misses) {
        cache.request_fill(meta.oid, profile, &key);
    }
    if meta.policy.coalesce_misses {
        if let Some(row) = cache.fetch_missed(meta, profile, &key).await {
            return Ok(Image::Fetched(row));
        }
    }
    Err(Reason::KeyNotPlaced)
}

/// Every key's image from memory, or a miss (and fills asked for the placed keys missing).
fn lookup_all(
    cache: &CacheService,
    meta: &TableMeta,
    profile: u32,
    keys: &[String],
    wants_binary: bool,
) -> Result<Vec<Image>, Reason> {
    let version = cache.store.fill_version();
    let mut images = Vec::with_capacity(keys.len());
    let mut missed = false;
    for key in keys {
        match cache.store.get_parts(meta.oid, profile, key) {
            Some(entry) if answers(&entry, wants_binary) => images.push(Image::Stored(entry)),
            _ => {
                missed = true;
                if cache.is_placed(meta.oid, key) {
                    cache.request_fill(meta.oid, profile, key);
                }
            }
        }
    }
    if missed {
        cache.counters.misses.fetch_add(1, Relaxed);
        return Err(Reason::KeyNotPlaced);
    }
    // A fill landed while the images were read: they might mix two moments.
    if cache.store.fill_version() != version {
        return Err(Reason::NotServable);
    }
    Ok(images)
}
