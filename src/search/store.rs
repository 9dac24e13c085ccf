//! What every search store does for one table, behind one trait: the embedded tantivy index
//! ([`super::index`]) and an Elasticsearch index ([`super::elastic`]).
//!
//! The indexer and the sessions only see [`SearchIndex`]. Both stores hold the same
//! documents — a row's key, the folded trigrams of each indexed column with their positions,
//! and the lexemes Postgres's own `to_tsvector` produced — so a requirement means the same
//! thing in either, and either only ever narrows (Postgres re-checks every candidate).

use super::requirement::Requirement;
use super::SearchError;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

/// A store call's future (boxed, so the trait can be used as `dyn SearchIndex`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SearchError>> + Send + 'a>>;

/// What a commit records, with the documents: the layout they were built for and how far the
/// backfill got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// [`super::table::SearchTable::layout`] the documents were built for.
    pub layout: u64,
    /// Which upstream and slot the index follows (`system identifier/database/slot`); an
    /// index built from another server or feed is rebuilt.
    pub source: String,
    /// The backfill finished: every row is indexed.
    pub complete: bool,
    /// Backfill position: rows with keys up to this one (in the key type's order) are
    /// indexed. `None` before the first batch.
    pub after_key: Option<String>,
    /// Rows the backfill has read.
    pub backfilled_rows: u64,
}

/// Where a predicate's terms are looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldKind {
    Trigram,
    /// Lexemes of [`super::table::FTS_CONFIGS`]`[i]`.
    Lexeme(usize),
}

/// One row as the index sees it.
#[derive(Debug, Clone, Default)]
pub struct IndexDoc {
    pub key: String,
    /// Per indexed column: its text (NULL indexes nothing).
    pub texts: Vec<Option<String>>,
    /// Per indexed column, per [`super::table::FTS_CONFIGS`] entry: the lexemes.
    pub lexemes: Vec<Vec<Vec<String>>>,
}

/// One requirement on one column's field; a search ANDs them.
pub type Part = (usize, FieldKind, Requirement);

/// How a write is ordered against the documents already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOrder {
    /// Read for a change the feed delivered at this LSN: replaces any older document.
    Feed(u64),
    /// Read by a backfill: never replaces a document the feed wrote (the feed's is newer,
    /// or the feed brings the newer version again).
    Backfill,
}

/// One table's index in one store.
pub trait SearchIndex: Send + Sync + std::fmt::Debug {
    /// `embedded` or `elasticsearch`.
    fn store(&self) -> &'static str;
    /// Where the documents live (a directory, or a server URL and index name).
    fn location(&self) -> String;
    /// Replaces the documents of `keys` with `docs`: a key without a document in `docs` no
    /// longer exists. Not visible to searches before [`SearchIndex::commit`].
    /// Takes the documents by value: the embedded store may move them to the blocking pool.
    fn replace(
        &self,
        keys: Vec<String>,
        docs: Vec<IndexDoc>,
        order: WriteOrder,
    ) -> StoreFuture<'_, ()>;
    /// Adds backfilled documents for keys the feed has not written.
    fn add(&self, docs: Vec<IndexDoc>) -> StoreFuture<'_, ()>;
    /// Drops every document: a rebuild starts.
    fn clear(&self) -> StoreFuture<'_, ()>;
    /// Makes everything written so far durable with `progress`, and visible to searches.
    fn commit<'a>(&'a self, progress: &'a Progress) -> StoreFuture<'a, ()>;
    /// Whether the store still holds what was last committed (after an error: a server that
    /// restarted empty, or an index deleted behind the proxy's back, fails this).
    fn validate<'a>(&'a self, progress: &'a Progress) -> StoreFuture<'a, bool>;
    /// Documents as of the last commit.
    fn num_docs(&self) -> u64;
    /// Keys of the documents that satisfy every part, or `None` when there are more than
    /// `limit`.
    fn candidates<'a>(
        &'a self,
        parts: &'a [Part],
        limit: u64,
    ) -> StoreFuture<'a, Option<Vec<String>>>;
    /// Deletes the index for good (its policy is gone).
    fn destroy(&self) -> StoreFuture<'_, ()>;
}
