//! The search store: text predicates (`LIKE`, `ILIKE`, `~`, `~*`, `@@`) narrowed by an
//! inverted index, answered by Postgres.
//!
//! ```text
//! policies ─▶ tables (catalog: key, text columns, layout) ─▶ index per table (tantivy | ES)
//! change feed (own slot) ─▶ indexer ─▶ refetch changed keys in a checked snapshot ─▶ index
//!                           indexer ─▶ backfill in key order, resumable ─────────────▶ index
//! session ─▶ requirement (trigrams / lexemes) ─▶ candidate keys ─▶ rewritten statement ─▶ Postgres
//! ```
//!
//! The index only *narrows*: it returns keys whose rows may match (a superset of the true
//! matches), and Postgres runs the original statement restricted to them
//! (`WHERE (<original>) AND key = ANY('{..}')`), so ordering, limits, aggregates, collations,
//! NULLs, privileges and row-level security stay Postgres's own. Every doubt — a pattern that
//! constrains nothing the index holds, too many candidates, a feed that lags, a session whose
//! own writes are not indexed yet — passes the statement through unchanged.
//!
//! - [`requirement`]: what a matching document must contain, as a small boolean tree.
//! - [`terms`]: trigrams of text, and what LIKE/ILIKE/regex patterns require of them.
//! - [`words`]: the words of text, and what a literal run requires of them.
//! - [`tsquery`]: what a tsquery (as Postgres normalized it) requires of the lexemes.
//! - [`table`]: which tables are indexed, read from the catalog, and their layout.
//! - [`store`]: what every search store does for a table ([`store::SearchIndex`]).
//! - [`index`]: the embedded store: one tantivy index per table on local disk.
//! - [`elastic`]: the external store: one Elasticsearch/OpenSearch index per table.
//! - [`indexer`]: the background task that applies the change feed and runs backfills.
//! - [`rewrite`]: the statement Postgres runs instead.
//! - [`service`]: what sessions call, and the gates they pass.

pub mod elastic;
pub mod index;
mod indexer;
pub mod requirement;
pub mod rewrite;
pub mod service;
pub mod store;
pub mod table;
pub mod terms;
pub mod tsquery;
pub mod words;

pub use service::SearchService;

use std::time::Duration;

/// How often indexed tables are re-read from the catalog (the bound for DDL that bypasses
/// the proxy: a changed column type or a table rewrite starts a rebuild).
pub const TABLE_REFRESH: Duration = Duration::from_secs(1);

/// Errors of the search store's own work. None reaches a client: a failure means "not
/// narrowed", and the statement goes to Postgres as written.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("upstream: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Side(#[from] crate::side::SideError),
    #[error(transparent)]
    Cdc(#[from] crate::cdc::CdcError),
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("index directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("elasticsearch: {0}")]
    Elastic(String),
    #[error("unexpected answer from the upstream: {0}")]
    Unexpected(&'static str),
    #[error("timed out: {0}")]
    Timeout(&'static str),
}
