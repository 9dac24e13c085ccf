//! The router: a pure function from (classification, session state, policies) to a route
//! and the reason for it. No I/O; every case is a row in the unit-test tables.
//!
//! This is the one place a decision to serve a statement from outside Postgres is made and
//! the one place its reason is recorded (`EXPLAIN ROUTE` prints it, metrics count it). The
//! checks run in the order of the "Routing is safe by default" contract: anything not proven
//! safe passes through. What the router can decide from the statement and the policies alone
//! ends here; a cache candidate (`KeyNotPlaced`) goes on to the session's cache checks
//! (`session::cache_serve`), which need the store, the feed and Postgres's privileges, and
//! count one of the reasons after `IndexNotReady`; a search candidate (`IndexNotReady`) goes
//! on to `session::search_serve`, which counts `Narrowed` or why not.

use crate::placement::store::PolicyMatch;
use crate::placement::PolicySet;
use crate::sql::{Shape, StatementKind, TableRef};
use crate::stats::Route;

/// Why a statement goes where it goes. Labels are stable (metric label values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The session is inside an explicit transaction block (or a failed one).
    InTransaction,
    /// Statements sent before this one are not answered yet (a pipeline, or several
    /// Executes in one extended-protocol batch, which share an implicit transaction): the
    /// session's transaction state and settings as this statement will see them are not
    /// known yet.
    Pipelined,
    /// The statement could not be classified (not UTF-8 text, or client_encoding not UTF8).
    Unclassified,
    /// sqlparser could not read it: Postgres is the judge.
    Unparsed,
    /// Writes, DDL, transaction control, SET, utility commands, several statements.
    NotARead,
    /// `FOR UPDATE`/`FOR SHARE` and friends.
    Locking,
    /// A function that may return different results per call or has side effects (or one the
    /// classifier does not know).
    VolatileFunction,
    /// A read that is neither a point read by key nor a text predicate.
    NotPointRead,
    /// The session is connected to a database other than the one policies apply to.
    OtherDatabase,
    /// No policy covers the table.
    NoPolicy,
    /// A policy covers the table but has no `[cache]` section (point reads) or no
    /// `[search]` section, or not this column or predicate kind (text predicates).
    NotInPolicy,
    /// The policy places this table, but the key is not in the cache store.
    KeyNotPlaced,
    /// The policy indexes this table, but the search index is not built.
    IndexNotReady,
    /// Answered from the cache store.
    Served,
    /// The change feed is not streaming, or lags beyond the policy's `max_staleness`.
    FeedNotFresh,
    /// The table is not covered by the change feed yet, or its description is being
    /// re-read after DDL.
    TableNotReady,
    /// The session wrote, and the change feed has not applied its writes yet.
    Fenced,
    /// The statement or session is outside what the cache serves exactly: a key spelling,
    /// projection or LIMIT it does not handle, a table it may not serve (row-level
    /// security, inheritance, no primary key), settings or a role it cannot vouch for,
    /// or privileges Postgres would refuse.
    NotServable,
    /// Restricted to the search store's candidate keys, then answered by Postgres.
    Narrowed,
    /// A text predicate the index cannot narrow: a pattern without three literal characters
    /// in a row, a cast or ESCAPE it does not handle, a configuration it does not index, an
    /// unqualified table name it cannot resolve, or settings that change how literals read.
    NotNarrowable,
    /// The index narrows less than the policy's `max_candidate_fraction`.
    TooManyCandidates,
    /// The search store did not answer (down, too slow, or being re-validated after a
    /// failure): Postgres answers the statement as written.
    StoreUnavailable,
}

impl Reason {
    pub const ALL: [Reason; 22] = [
        Reason::InTransaction,
        Reason::Pipelined,
        Reason::Unclassified,
        Reason::Unparsed,
        Reason::NotARead,
        Reason::Locking,
        Reason::VolatileFunction,
        Reason::NotPointRead,
        Reason::OtherDatabase,
        Reason::NoPolicy,
        Reason::NotInPolicy,
        Reason::KeyNotPlaced,
        Reason::IndexNotReady,
        Reason::Served,
        Reason::FeedNotFresh,
        Reason::TableNotReady,
        Reason::Fenced,
        Reason::NotServable,
        Reason::Narrowed,
        Reason::NotNarrowable,
        Reason::TooManyCandidates,
        Reason::StoreUnavailable,
    ];

    /// Position in [`Reason::ALL`] (metric array index).
    pub fn index(self) -> usize {
        Reason::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }

    /// The route this reason leads to.
    pub fn route(self) -> Route {
        match self {
            Reason::Served => Route::Cache,
            Reason::Narrowed => Route::Search,
            _ => Route::Postgres,
        }
    }

    /// Short label (metric label value, `EXPLAIN ROUTE`'s `reason` column).
    pub fn label(self) -> &'static str {
        match self {
            Reason::InTransaction => "in transaction block",
            Reason::Pipelined => "pipelined",
            Reason::Unclassified => "not classified",
            Reason::Unparsed => "not parsed",
            Reason::NotARead => "not a read",
            Reason::Locking => "locking clause",
            Reason::VolatileFunction => "volatile function",
            Reason::NotPointRead => "not a point read",
            Reason::OtherDatabase => "database not under policy",
            Reason::NoPolicy => "no policy",
            Reason::NotInPolicy => "not in policy",
            Reason::KeyNotPlaced => "key not placed",
            Reason::IndexNotReady => "index not ready",
            Reason::Served => "served from cache",
            Reason::FeedNotFresh => "change feed not fresh",
            Reason::TableNotReady => "table not ready",
            Reason::Fenced => "own writes not applied yet",
            Reason::NotServable => "not servable from cache",
            Reason::Narrowed => "narrowed by search index",
            Reason::NotNarrowable => "not narrowable by search index",
            Reason::TooManyCandidates => "too many search candidates",
            Reason::StoreUnavailable => "search store unavailable",
        }
    }
}

/// A routing decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub route: Route,
    pub reason: Reason,
    /// `file (pattern)` of the policy that was consulted, if one was.
    pub policy: Option<String>,
    /// One sentence for humans.
    pub detail: String,
}

/// What the router knows about the session.
#[derive(Clone, Copy, Debug)]
pub struct SessionView {
    /// Inside a transaction block (ReadyForQuery status `T` or `E`).
    pub in_transaction: bool,
    /// Earlier statements of this session are still unanswered.
    pub pipelined: bool,
    /// Connected to the database the policies apply to (the upstream URL's).
    pub policy_database: bool,
}

/// Where a statement of shape `shape` goes. `None` means it could not be classified.
pub fn decide(shape: Option<&Shape>, session: SessionView, policies: &PolicySet) -> Decision {
    let (reason, matched) = decide_core(shape, session, policies);
    let target = shape.and_then(target);
    let detail: String = match reason {
        Reason::InTransaction => {
            "inside a transaction block every statement goes to Postgres".into()
        }
        Reason::Pipelined => "earlier statements of this session are not answered yet".into(),
        Reason::Unclassified => {
            "statement text was not classified (client_encoding is not UTF8, or invalid UTF-8)"
                .into()
        }
        Reason::Unparsed => "the SQL parser could not read the statement".into(),
        Reason::NotARead => format!(
            "statement kind is {}",
            shape.map_or("unknown", |s| s.kind.name())
        ),
        Reason::Locking => "the statement takes row locks".into(),
        Reason::VolatileFunction => "the statement calls a volatile or unknown function".into(),
        Reason::NotPointRead => "not a single-table read by key or text predicate".into(),
        Reason::OtherDatabase => "policies apply to the upstream URL's database only".into(),
        Reason::NoPolicy => {
            let (schema, name) = target.map_or(("?", "?"), |(t, _)| resolve(t));
            format!("no policy covers {schema}.{name}")
        }
        Reason::NotInPolicy if target.is_some_and(|(_, cache)| cache) => {
            "the policy has no [cache] section".into()
        }
        Reason::NotInPolicy => "the policy has no [search] section".into(),
        Reason::KeyNotPlaced => {
            "a cache candidate: served only if the key is placed and every check holds".into()
        }
        Reason::IndexNotReady => {
            "a search candidate: narrowed only if the index is ready and every check holds".into()
        }
        other => other.label().into(),
    };
    Decision {
        route: Route::Postgres,
        reason,
        policy: matched.map(|m| format!("{} ({})", m.policy.file.display(), m.pattern)),
        detail,
    }
}

/// [`decide`]'s reason alone, without the text: what every statement's route needs,
/// computed without allocating.
pub fn decide_reason(shape: Option<&Shape>, session: SessionView, policies: &PolicySet) -> Reason {
    decide_core(shape, session, policies).0
}

/// The table a statement would be served for, and whether by the cache (a point read)
/// rather than the search store (a text predicate).
fn target(shape: &Shape) -> Option<(&TableRef, bool)> {
    match (&shape.point_read, shape.text_predicates.first()) {
        (Some(p), _) => Some((&p.table, true)),
        (None, Some(t)) => Some((&t.table, false)),
        (None, None) => None,
    }
}

/// The reason, and the policy consulted (if one was).
fn decide_core<'p>(
    shape: Option<&Shape>,
    session: SessionView,
    policies: &'p PolicySet,
) -> (Reason, Option<PolicyMatch<'p>>) {
    if session.in_transaction {
        return (Reason::InTransaction, None);
    }
    if session.pipelined {
        return (Reason::Pipelined, None);
    }
    let Some(shape) = shape else {
        return (Reason::Unclassified, None);
    };
    match &shape.kind {
        StatementKind::Read => {}
        StatementKind::Unparsed => return (Reason::Unparsed, None),
        _ => return (Reason::NotARead, None),
    }
    let f = &shape.flags;
    if f.has_locking_clause {
        return (Reason::Locking, None);
    }
    if f.has_volatile_functions || f.has_unknown_functions {
        return (Reason::VolatileFunction, None);
    }
    let Some((table, wants_cache)) = target(shape) else {
        return (Reason::NotPointRead, None);
    };
    if !session.policy_database {
        return (Reason::OtherDatabase, None);
    }
    let (schema, name) = resolve(table);
    let Some(m) = policies.policy_for(schema, name) else {
        return (Reason::NoPolicy, None);
    };
    let reason = match (wants_cache, &m.policy.cache, &m.policy.search) {
        (true, None, _) | (false, _, None) => Reason::NotInPolicy,
        (true, Some(_), _) => Reason::KeyNotPlaced,
        (false, _, Some(_)) => Reason::IndexNotReady,
    };
    (reason, Some(m))
}

/// The schema an unqualified name resolves to. The proxy does not track each session's
/// `search_path` yet, so unqualified names are taken as `public` (the default path).
pub fn resolve(table: &TableRef) -> (&str, &str) {
    (table.schema.as_deref().unwrap_or("public"), &table.name)
}

#[cfg(test)]
mod tests;
