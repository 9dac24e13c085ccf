//! Statement classification, parsed once per *shape*.
//!
//! The proxy must know, for every statement a client sends (simple-protocol Query text and
//! extended-protocol Parse text), what it is: a read, a write, DDL, transaction control, a
//! session setting; which tables it touches; whether it is a point read by key or carries a
//! text predicate the search store can narrow; and whether anything in it (volatile functions,
//! `FOR UPDATE`, writing CTEs, ...) forbids serving it outside Postgres.
//!
//! Parsing with sqlparser costs 10–100 µs, too much per statement. Applications send the same
//! few hundred statements over and over, differing only in the literals they inline
//! (`WHERE id = 42`, then `= 43`), so the work is split:
//!
//! 1. `lexer` + `normalize`: one linear pass over the text replaces every literal with a
//!    marker (`$?`), collapses whitespace and comments, lowercases keywords and unquoted
//!    identifiers, and collects the literal values in order. This is the *shape*.
//! 2. The shape's xxh3 fingerprint keys a bounded, sharded `cache` of `Arc<Shape>`; a hit
//!    compares the full normalized text, so a hash collision can never return a wrong shape.
//! 3. Only a miss parses (`classify`): the normalized text, with each marker turned into a
//!    parameter numbered after the statement's own `$n`, goes to sqlparser; the AST says where
//!    each literal sits, so point-read keys and text-predicate patterns are recorded as
//!    *indexes into the literal list* ([`KeyValue::Literal`]) or parameters
//!    ([`KeyValue::Param`]), valid for every statement of that shape. `extract` finds point
//!    reads, text predicates and the keys a write names; `functions` knows which functions
//!    are safe.
//!
//! A classification is a function of the shape only, never of literal values. Consequently
//! the *kind* of a literal (string or number) is not part of the shape either: `id = 5` and
//! `id = '5'` share one shape, and the router must check each key literal against the column
//! type (and pass through when in doubt).
//!
//! Lexical assumptions: `standard_conforming_strings = on` (the default since 9.1; a session
//! that turns it off must not be classified), and PostgreSQL 16 numeric syntax (`0x1F`,
//! `1_000`).
//!
//! Bounds: shapes longer than [`MAX_CACHED_LEN`] are classified on every execution and never
//! cached; statements longer than [`MAX_PARSED_LEN`] or with more than [`MAX_PARSED_TOKENS`]
//! tokens are not parsed at all (`Unparsed`, passed through). Statements with many tokens are
//! parsed on a helper thread with a large stack, because sqlparser builds operator chains as
//! deep trees. The lexer is linear in the input on any text.

mod cache;
mod classify;
mod extract;
mod functions;
pub(crate) mod lexer;
mod normalize;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use cache::ShapeCache;
use normalize::{normalize, Mode};

/// Normalized statements longer than this are classified on every execution instead of being
/// cached, so a stream of huge generated statements (bulk `INSERT .. VALUES` of varying row
/// counts) cannot pin `capacity × size` bytes. 16 KiB covers ORM-generated selects.
pub const MAX_CACHED_LEN: usize = 16 * 1024;

/// Statements longer than this (bytes of normalized text) are not parsed at all: they are
/// `Unparsed` and pass through. Parsing a megabyte per execution would cost milliseconds.
pub const MAX_PARSED_LEN: usize = 1024 * 1024;

/// Statements with more tokens than this are not parsed either (`Unparsed`).
pub const MAX_PARSED_TOKENS: usize = 100_000;

/// The per-thread normalization buffer is dropped when it grew past this after a call.
const MAX_RETAINED_BUFFER: usize = 64 * 1024;

/// Classifies statements; one per proxy, shared by all sessions (it is `Send + Sync`).
pub struct Classifier {
    cache: ShapeCache,
    empty: Arc<Shape>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("capacity", &self.cache.capacity())
            .field("len", &self.cache.len())
            .finish()
    }
}

/// One classified statement: its shared shape plus this statement's literal values.
#[derive(Clone, Debug)]
pub struct Classified {
    pub shape: Arc<Shape>,
    /// This statement's literal values, in order of appearance: what the normalizer replaced
    /// with `$?`. [`KeyValue::Literal`] indexes into it.
    pub literals: Vec<Literal>,
    /// Whether the shape came from the cache (for metrics).
    pub cache: CacheOutcome,
}

/// How [`Classifier::classify`] obtained the shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Found in the cache: no parse.
    Hit,
    /// Parsed and inserted.
    Miss,
    /// Parsed but not cacheable (lexical error, longer than [`MAX_CACHED_LEN`], capacity 0).
    Uncached,
}

/// A literal value as the statement wrote it.
///
/// Typed literals (`DATE '2020-01-01'`, `interval '1 day'`) are replaced like any other
/// string (their value is recorded), but they are never keys or patterns. Numbers inside type
/// modifiers (`varchar(10)`, `numeric(12,2)`) are structure, kept in the normalized text and
/// not recorded here.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Literal {
    /// `'..'`, `E'..'`, `U&'..'`, `N'..'` or `$tag$..$tag$`, decoded.
    String(Box<str>),
    /// A numeric constant exactly as written (`42`, `1.5e3`, `1_000`, `0x1F`); a leading `-`
    /// is a separate token (see [`KeyValue::NegatedLiteral`]).
    Number(Box<str>),
    /// `B'0101'` (`hex = false`) or `X'1F'` (`hex = true`), digits as written.
    BitString { hex: bool, digits: Box<str> },
    /// A string whose escapes do not decode to valid UTF-8 (or contain NUL), or a `U&'..'`
    /// with `UESCAPE`: Postgres is the judge; never usable as a key.
    Opaque,
}

/// Where a key (or pattern, or limit) comes from, valid for every statement of a shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyValue {
    /// Extended-protocol parameter `$n` (1-based).
    Param(u16),
    /// Index into [`Classified::literals`].
    Literal(usize),
    /// `-<literal>`: unary minus applied to the literal at this index (only numbers resolve).
    NegatedLiteral(usize),
}

/// A [`KeyValue`] resolved against one statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRef<'a> {
    /// Bound in the Bind message.
    Param(u16),
    /// A string, number or bit-string literal.
    Literal(&'a Literal),
    /// A negative number: the digits as written, without the sign.
    NegativeNumber(&'a str),
}

impl<'a> KeyRef<'a> {
    /// The key as an integer, if it is one in a spelling every supported Postgres reads the
    /// same way: plain decimal literals (`42`, `-7`) and strings holding a plain decimal
    /// integer with optional ASCII whitespace around it (`' 42'`, as in `id = ' 42'` on an
    /// integer column; `int4in` skips only what C's `isspace` calls space). PostgreSQL 16's
    /// `1_000`, `0x1F`, `0o17`, `0b101` are syntax errors before 16, so they are `None`:
    /// the statement passes through and Postgres answers it, whatever its version.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            KeyRef::Param(_) => None,
            KeyRef::Literal(Literal::Number(t)) if is_decimal(t) => parse_int(t, false),
            KeyRef::Literal(Literal::Number(_)) => None,
            KeyRef::Literal(Literal::String(s)) => {
                let s = s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'));
                match s.strip_prefix('-') {
                    Some(d) if is_decimal(d) => parse_int(d, true),
                    _ if is_decimal(s.strip_prefix('+').unwrap_or(s)) => {
                        parse_int(s.strip_prefix('+').unwrap_or(s), false)
                    }
                    _ => None,
                }
            }
            KeyRef::Literal(_) => None,
            KeyRef::NegativeNumber(t) if is_decimal(t) => parse_int(t, true),
            KeyRef::NegativeNumber(_) => None,
        }
    }

    /// The key as text: a string's decoded value, or a number's text (integers in canonical
    /// decimal form, other numbers as written, negatives with their sign).
    pub fn as_text(&self) -> Option<Cow<'a, str>> {
        match *self {
            KeyRef::Param(_) => None,
            KeyRef::Literal(Literal::String(s)) => Some(Cow::Borrowed(s)),
            // Already canonical (the common case): no copy.
            KeyRef::Literal(Literal::Number(t))
                if is_decimal(t) && (!t.starts_with('0') || t.len() == 1) =>
            {
                Some(Cow::Borrowed(t))
            }
            KeyRef::Literal(Literal::Number(t)) => Some(match parse_int(t, false) {
                Some(i) => Cow::Owned(i.to_string()),
                None => Cow::Borrowed(t),
            }),
            KeyRef::NegativeNumber(t) => Some(match parse_int(t, true) {
                Some(i) => Cow::Owned(i.to_string()),
                None => Cow::Owned(format!("-{t}")),
            }),
            KeyRef::Literal(_) => None,
        }
    }
}

fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses an integer literal as PostgreSQL 16 spells it; `None` for decimals, exponents and
/// anything out of `i64` range.
fn parse_int(text: &str, negative: bool) -> Option<i64> {
    let (radix, digits) = match text.get(..2) {
        Some("0x") | Some("0X") => (16, text.get(2..)?),
        Some("0o") | Some("0O") => (8, text.get(2..)?),
        Some("0b") | Some("0B") => (2, text.get(2..)?),
        _ => (10, text),
    };
    if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') {
        return None;
    }
    let mut v: i128 = 0;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        v = v
            .checked_mul(radix)?
            .checked_add(i128::from(c.to_digit(radix as u32)?))?;
        if v > i128::from(i64::MAX) + 1 {
            return None;
        }
    }
    let v = if negative { -v } else { v };
    i64::try_from(v).ok()
}

/// Everything known about a statement shape; shared by every statement with that shape.
#[derive(Debug, PartialEq, Eq)]
pub struct Shape {
    /// xxh3-64 of `normalized`.
    pub fingerprint: u64,
    /// The statement with literals replaced by `$?`, whitespace and comments collapsed to
    /// single spaces (only where the original had some), unquoted identifiers and keywords
    /// lowercased, trailing semicolons dropped. Quoted identifiers, operators and `$n`
    /// parameters are verbatim.
    pub normalized: Box<str>,
    pub kind: StatementKind,
    /// For [`StatementKind::Multi`], each statement's kind in order; empty otherwise.
    pub parts: Box<[StatementKind]>,
    /// Every table referenced (read or written; CTE names excluded), deduplicated, in order
    /// of first appearance. Unquoted names are lowercase, quoted ones verbatim.
    pub tables: Vec<TableRef>,
    pub point_read: Option<PointRead>,
    pub text_predicates: Vec<TextPredicate>,
    /// For a single top-level INSERT, UPDATE or DELETE of a plain table, that table and the
    /// keys of the rows it may change (one entry); empty for everything else, including
    /// writing CTEs, MERGE, COPY, `EXPLAIN ANALYZE <write>` and multi-statement strings,
    /// which a consumer must treat as possibly changing any row of any table they touch.
    pub write_keys: Vec<WriteKeys>,
    pub flags: ShapeFlags,
    /// Highest `$n` parameter the text uses (0 when none).
    pub max_param: u16,
    /// Number of literals a statement of this shape carries.
    pub literal_count: usize,
    /// The text names `set_config` (which may change any setting, client_encoding, role or
    /// search_path included), wherever it appears: computed once per shape, as the text
    /// is, since sessions ask for every statement.
    pub names_set_config: bool,
}

impl Shape {
    /// The kind of each statement: [`Shape::parts`] for several, else the one kind.
    pub fn kinds(&self) -> &[StatementKind] {
        match self.kind {
            StatementKind::Multi => &self.parts,
            _ => std::slice::from_ref(&self.kind),
        }
    }

    /// Whether executing this statement may change data or schema (writes, DDL, anything
    /// unparsed, procedural code, functions not known to be side-effect free, sequence
    /// functions). The session uses it to decide when a statement needs a freshness fence.
    pub fn may_write(&self) -> bool {
        let kind_writes = |k: &StatementKind| match k {
            StatementKind::Read => false,
            // COMMIT PREPARED makes another transaction's writes visible (the session may
            // have made them before PREPARE TRANSACTION): its commit is a write to fence.
            StatementKind::Transaction(TxnControl::CommitPrepared) => true,
            StatementKind::Transaction(_) | StatementKind::Set(_) | StatementKind::Empty => false,
            // Decided by the parts.
            StatementKind::Multi => false,
            StatementKind::Other(o) => o.may_write(),
            _ => true,
        };
        kind_writes(&self.kind)
            || self.parts.iter().any(kind_writes)
            || self.flags.has_volatile_functions
            || self.flags.has_unknown_functions
    }
}

/// What a statement is. Multi-statement strings are [`StatementKind::Multi`] with the
/// per-statement kinds in [`Shape::parts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatementKind {
    /// SELECT (without INTO or writing CTEs), VALUES, TABLE, SHOW, EXPLAIN without ANALYZE,
    /// EXPLAIN ANALYZE of a read, COPY ... TO. (EXPLAIN ANALYZE runs its statement, so it
    /// has that statement's kind.)
    Read,
    /// INSERT, UPDATE, DELETE, MERGE, COPY ... FROM, SELECT INTO, a query with a writing CTE,
    /// EXPLAIN ANALYZE of any of these.
    Write,
    /// CREATE, ALTER, DROP, TRUNCATE, GRANT, REVOKE, COMMENT, REFRESH, ...
    Ddl,
    Transaction(TxnControl),
    Set(SetCommand),
    Other(OtherCommand),
    /// More than one statement.
    Multi,
    /// Nothing but whitespace, comments and semicolons.
    Empty,
    /// Lexically invalid, too long, or not understood by sqlparser: pass through, and treat as
    /// possibly writing anything.
    Unparsed,
}

/// Names of the kinds in [`StatementKind::index`] order (metric labels).
pub const KIND_NAMES: [&str; 9] = [
    "read",
    "write",
    "ddl",
    "transaction",
    "set",
    "other",
    "multi",
    "empty",
    "unparsed",
];

impl StatementKind {
    /// Position in [`KIND_NAMES`].
    pub fn index(&self) -> usize {
        match self {
            StatementKind::Read => 0,
            StatementKind::Write => 1,
            StatementKind::Ddl => 2,
            StatementKind::Transaction(_) => 3,
            StatementKind::Set(_) => 4,
            StatementKind::Other(_) => 5,
            StatementKind::Multi => 6,
            StatementKind::Empty => 7,
            StatementKind::Unparsed => 8,
        }
    }

    pub fn name(&self) -> &'static str {
        KIND_NAMES.get(self.index()).copied().unwrap_or("unparsed")
    }
}

/// [`StatementKind::index`] as a free function (metrics).
pub fn kind_index(kind: &StatementKind) -> usize {
    kind.index()
}

/// The metrics index of [`StatementKind::Unparsed`], for text that never reached the
/// classifier (invalid UTF-8).
pub fn kind_index_unparsed() -> usize {
    StatementKind::Unparsed.index()
}

/// Transaction control.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnControl {
    /// BEGIN, START TRANSACTION (any modes).
    Begin,
    /// COMMIT, END.
    Commit,
    /// COMMIT AND CHAIN: commits and opens a new transaction block.
    CommitAndChain,
    /// ROLLBACK, ABORT.
    Rollback,
    /// ROLLBACK AND CHAIN.
    RollbackAndChain,
    Savepoint,
    /// RELEASE [SAVEPOINT].
    Release,
    /// ROLLBACK TO [SAVEPOINT].
    RollbackToSavepoint,
    /// PREPARE TRANSACTION 'id' (ends the block like COMMIT for the session).
    PrepareTransaction,
    CommitPrepared,
    RollbackPrepared,
}

/// Session-setting commands. Parameter names are lowercased PostgreSQL GUC names, so they
/// compare directly with ParameterStatus names lowercased (`TimeZone` → `"timezone"`).
/// Values are not recorded (they are literals, not part of the shape): read them back from
/// ParameterStatus, or with `SHOW` for parameters Postgres does not report.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SetCommand {
    /// `SET [SESSION|LOCAL] name ...`. Special forms map to their GUC: `SET TIME ZONE` →
    /// `timezone`, `SET ROLE` → `role`, `SET SESSION AUTHORIZATION` →
    /// `session_authorization`, `SET NAMES` → `client_encoding`, `SET TRANSACTION ...` →
    /// `transaction` (local), `SET SESSION CHARACTERISTICS AS TRANSACTION ...` →
    /// `default_transaction` (session). `local` is true for `SET LOCAL`.
    Set { name: Box<str>, local: bool },
    /// `RESET name` (`RESET SESSION AUTHORIZATION` → `session_authorization`).
    Reset { name: Box<str> },
    /// `RESET ALL`.
    ResetAll,
    /// `DISCARD ALL|PLANS|SEQUENCES|TEMP`.
    Discard(DiscardTarget),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiscardTarget {
    /// Also drops every prepared statement (protocol- and SQL-level) and resets all settings.
    All,
    Plans,
    Sequences,
    Temp,
}

/// Utility commands. Names are identifiers as Postgres sees them (unquoted → lowercase).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OtherCommand {
    Listen {
        channel: Box<str>,
    },
    /// `None` for `UNLISTEN *`.
    Unlisten {
        channel: Option<Box<str>>,
    },
    Notify {
        channel: Box<str>,
    },
    /// `DO $$ .. $$`: arbitrary procedural code.
    Do,
    /// `CALL proc(..)`: arbitrary procedural code.
    Call,
    Vacuum,
    Analyze,
    /// CHECKPOINT, CLUSTER, REINDEX, LOAD.
    Maintenance,
    /// SQL-level `PREPARE name AS statement`, with the prepared statement's kind.
    Prepare {
        name: Box<str>,
        statement: Box<StatementKind>,
    },
    /// SQL-level `EXECUTE name(..)`.
    Execute {
        name: Box<str>,
    },
    /// `DEALLOCATE [PREPARE] name`; `None` for `DEALLOCATE ALL`.
    Deallocate {
        name: Option<Box<str>>,
    },
    /// DECLARE, FETCH, MOVE, CLOSE.
    Cursor,
    /// LOCK TABLE.
    Lock,
    /// Anything else sqlparser parsed.
    Unknown,
}

impl OtherCommand {
    /// Whether the command may change data: procedural code, EXECUTE of a prepared
    /// statement whose text the classifier saw separately, and unknown commands.
    pub fn may_write(&self) -> bool {
        match self {
            OtherCommand::Do
            | OtherCommand::Call
            | OtherCommand::Execute { .. }
            | OtherCommand::Unknown
            | OtherCommand::Cursor => true,
            OtherCommand::Prepare { .. }
            | OtherCommand::Listen { .. }
            | OtherCommand::Unlisten { .. }
            | OtherCommand::Notify { .. }
            | OtherCommand::Vacuum
            | OtherCommand::Analyze
            | OtherCommand::Maintenance
            | OtherCommand::Deallocate { .. }
            | OtherCommand::Lock => false,
        }
    }
}

/// A table name as written (after identifier folding).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    /// The schema if the statement qualified the name (for `db.schema.table`, `schema`).
    pub schema: Option<Box<str>>,
    pub name: Box<str>,
}

impl TableRef {
    pub fn new(schema: Option<&str>, name: &str) -> Self {
        TableRef {
            schema: schema.map(Into::into),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A single-table read by key: `SELECT <columns or *> FROM t [alias] WHERE col = <key>`
/// or `col IN (<key>, ...)`, optionally with `LIMIT <key>`, and nothing else (no joins,
/// subqueries, CTEs, locking, ordering, grouping, DISTINCT, functions, OR, extra
/// conditions, INTO).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointRead {
    pub table: TableRef,
    /// The FROM alias, if any.
    pub alias: Option<Box<str>>,
    /// The key column.
    pub column: Box<str>,
    /// One key for `=`, the list for `IN`, in order (duplicates kept).
    pub keys: Vec<KeyValue>,
    /// An explicit cast on the keys (`$1::int`, `'42'::bigint`, `CAST($1 AS int8)`), as
    /// sqlparser prints the type, lowercased. All keys carry the same cast or none.
    pub key_cast: Option<Box<str>>,
    pub projection: Projection,
    /// `LIMIT <literal or $n>`.
    pub limit: Option<KeyValue>,
    /// `ORDER BY <key column> [ASC | DESC]`: `Some(descending)`. No other ORDER BY makes a
    /// point read.
    pub order_by_key: Option<bool>,
}

/// What a point read returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Projection {
    /// `*` or `alias.*`.
    All,
    /// Plain column references in order, each with its output alias if any.
    Columns(Vec<ProjectedColumn>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectedColumn {
    pub name: Box<str>,
    pub alias: Option<Box<str>>,
}

/// Keys of one table that a write names: which rows it may change, by column.
///
/// Recorded so per-key statistics can count writes and a cache can invalidate only the keys
/// a write names. Like [`PointRead`], keys are [`KeyValue`]s (resolve them with
/// [`Classified::key`]) and compare as the column's type does (the router's concern, as for
/// point reads). Only the target table's own rows are described: functions the statement
/// calls ([`ShapeFlags::has_unknown_functions`]), triggers and rules may change other rows
/// and tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteKeys {
    pub table: TableRef,
    /// `(column, keys)`: the statement changes only rows whose `column` is one of `keys`
    /// (for INSERT: the rows it inserts have these values in `column`, one per row). Each
    /// entry holds on its own (`WHERE a = 1 AND b = 2` gives two); several entries for one
    /// column are all true at once. A key under a cast that may change its value
    /// (`'abc'::varchar(2)`, `'x'::date`; only integer, text, varchar and uuid casts pass)
    /// is not recorded. Empty means the write may change any row of the table: no usable
    /// key condition, an UPDATE/DELETE with joins whose conditions are not qualified with
    /// the target, an INSERT without a column list (which column a value lands in needs
    /// the catalog), `INSERT .. SELECT`, `ON CONFLICT ON CONSTRAINT .. DO UPDATE`, or a SET
    /// target that names no column.
    pub by_column: Vec<(Box<str>, Vec<KeyValue>)>,
    /// Columns an UPDATE assigns (`SET a = ..`, `SET (a, b) = ..`, `SET c.field = ..` →
    /// `c`): a write that assigns a key column moves the row to a new key. An `INSERT ..
    /// ON CONFLICT DO UPDATE` lists its SET columns here too.
    pub assigned: Vec<Box<str>>,
    pub kind: WriteKind,
}

/// The statement a [`WriteKeys`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteKind {
    Insert,
    Update,
    Delete,
}

/// A text predicate in the top-level AND chain of a single-table SELECT's WHERE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextPredicate {
    pub table: TableRef,
    /// The column matched (for `@@`, the tsvector column or `to_tsvector`'s document column).
    pub column: Box<str>,
    pub op: TextOp,
    /// `NOT LIKE`, `NOT ILIKE`, `!~~`, `!~~*`, `!~`, `!~*`.
    pub negated: bool,
    /// The pattern (LIKE/regex) or the query text (`@@`).
    pub pattern: KeyValue,
    /// An explicit cast on the pattern, lowercased (`$1::text`).
    pub pattern_cast: Option<Box<str>>,
    /// `ESCAPE <literal or $n>` of LIKE/ILIKE.
    pub escape: Option<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextOp {
    /// LIKE, `~~`.
    Like,
    /// ILIKE, `~~*`.
    ILike,
    /// `~`.
    Regex,
    /// `~*`.
    RegexI,
    /// `@@`.
    FullText(FullText),
}

/// The two sides of `vector @@ query`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullText {
    pub query_fn: TsQueryFn,
    /// The tsquery function's configuration argument (`'english'`, cast to regconfig or not);
    /// `None` means the session's `default_text_search_config`.
    pub query_config: Option<KeyValue>,
    pub vector: TsVectorSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TsQueryFn {
    ToTsquery,
    PlaintoTsquery,
    PhrasetoTsquery,
    WebsearchToTsquery,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TsVectorSource {
    /// A tsvector column.
    Column,
    /// `to_tsvector([config,] column)`; `config: None` means `default_text_search_config`.
    ToTsvector { config: Option<KeyValue> },
}

/// Facts about the whole statement (all statements, for `Multi`), at any nesting level
/// unless noted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ShapeFlags {
    /// Functions whose result depends on time, randomness, session or database state, or
    /// that have side effects: `random()`, `now()`, `CURRENT_TIMESTAMP`, `nextval()`,
    /// `current_user`, `pg_sleep()`, `gen_random_uuid()`, advisory locks, ...
    pub has_volatile_functions: bool,
    /// Functions not on the list of known side-effect-free built-ins (user functions may do
    /// anything, including writes).
    pub has_unknown_functions: bool,
    pub has_aggregate: bool,
    /// Window functions or a WINDOW clause.
    pub has_window: bool,
    /// FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE.
    pub has_locking_clause: bool,
    pub has_cte: bool,
    /// A CTE containing INSERT/UPDATE/DELETE/MERGE.
    pub has_writing_cte: bool,
    /// Scalar, IN, EXISTS, ANY or derived-table subqueries.
    pub has_subquery: bool,
    /// Joins, several FROM items, UPDATE .. FROM, DELETE .. USING.
    pub has_join: bool,
    /// UNION / INTERSECT / EXCEPT.
    pub has_set_operation: bool,
    pub has_group_by: bool,
    pub has_having: bool,
    /// DISTINCT (also set for DISTINCT ON).
    pub has_distinct: bool,
    pub has_distinct_on: bool,
    pub has_order_by: bool,
    /// LIMIT or FETCH.
    pub has_limit: bool,
    pub has_offset: bool,
    pub has_select_into: bool,
    /// Set-returning functions or other non-table FROM items (`generate_series(..)`,
    /// `unnest(..)`, `LATERAL`, ...).
    pub has_table_function: bool,
    pub has_returning: bool,
    /// The top-level WHERE (of the single top-level SELECT) has an OR conjunct.
    pub where_has_or: bool,
    /// The top-level WHERE has conjuncts other than the recorded point-read condition and
    /// text predicates.
    pub where_has_other_conjuncts: bool,
    /// The shape parsed only with dummy literals (a literal in a position sqlparser accepts
    /// only as a literal): no key, pattern or limit refers to a literal.
    pub literal_keys_unavailable: bool,
}

impl Classified {
    /// Resolves a [`KeyValue`] of this statement's shape against its literals. `None` when
    /// the literal is [`Literal::Opaque`], a negated non-number, or out of range.
    pub fn key(&self, k: &KeyValue) -> Option<KeyRef<'_>> {
        match *k {
            KeyValue::Param(n) => Some(KeyRef::Param(n)),
            KeyValue::Literal(i) => match self.literals.get(i)? {
                Literal::Opaque => None,
                l => Some(KeyRef::Literal(l)),
            },
            KeyValue::NegatedLiteral(i) => match self.literals.get(i)? {
                Literal::Number(t) => Some(KeyRef::NegativeNumber(t)),
                _ => None,
            },
        }
    }
}

thread_local! {
    /// Reused normalization buffer: a cache hit allocates only the literal vector.
    static BUFFER: RefCell<String> = const { RefCell::new(String::new()) };
}

impl Classifier {
    /// A classifier caching at most `capacity` shapes (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        Classifier {
            cache: ShapeCache::new(capacity),
            empty: Arc::new(Shape::simple(String::new(), StatementKind::Empty, 0)),
        }
    }

    /// Classifies one statement string (which may hold several statements). Never panics.
    pub fn classify(&self, sql: &str) -> Classified {
        let run = |buf: &mut String| {
            let c = self.classify_with(sql, buf);
            if buf.capacity() > MAX_RETAINED_BUFFER {
                *buf = String::new();
            }
            c
        };
        BUFFER
            .try_with(|cell| match cell.try_borrow_mut() {
                Ok(mut buf) => run(&mut buf),
                Err(_) => run(&mut String::new()),
            })
            .unwrap_or_else(|_| run(&mut String::new()))
    }

    fn classify_with(&self, sql: &str, buf: &mut String) -> Classified {
        let mut literals = Vec::new();
        let info = match normalize(sql, Mode::Key, buf, &mut literals) {
            Ok(info) => info,
            Err(_) => {
                let shape = Shape::simple(buf.clone(), StatementKind::Unparsed, 0);
                return Classified {
                    shape: Arc::new(shape),
                    literals,
                    cache: CacheOutcome::Uncached,
                };
            }
        };
        if buf.is_empty() {
            return Classified {
                shape: Arc::clone(&self.empty),
                literals,
                cache: CacheOutcome::Hit,
            };
        }
        let fingerprint = xxh3_64(buf.as_bytes());
        if let Some(shape) = self.cache.get(fingerprint, buf) {
            return Classified {
                shape,
                literals,
                cache: CacheOutcome::Hit,
            };
        }
        let shape = Arc::new(classify::shape_of(sql, buf, info, fingerprint));
        let (shape, cache) = if buf.len() <= MAX_CACHED_LEN && self.cache.capacity() > 0 {
            (self.cache.insert(shape), CacheOutcome::Miss)
        } else {
            (shape, CacheOutcome::Uncached)
        };
        Classified {
            shape,
            literals,
            cache,
        }
    }

    /// Number of cached shapes.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured bound on cached shapes.
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }
}

impl Shape {
    /// A shape with nothing but a kind (empty, unparsed, lexical fallbacks).
    fn simple(normalized: String, kind: StatementKind, literal_count: usize) -> Shape {
        Shape {
            fingerprint: xxh3_64(normalized.as_bytes()),
            names_set_config: normalized.contains("set_config"),
            normalized: normalized.into_boxed_str(),
            kind,
            parts: Box::new([]),
            tables: Vec::new(),
            point_read: None,
            text_predicates: Vec::new(),
            write_keys: Vec::new(),
            flags: ShapeFlags::default(),
            max_param: 0,
            literal_count,
        }
    }
}
