//! One tantivy index per table, on local disk: the embedded search store.
//!
//! Documents are a row's key plus, per indexed column, its trigrams (folded, see
//! [`super::terms`]) *with their positions* — trigram `i` starts at char `i`, so a literal
//! run of a pattern is found as a phrase of its trigrams at consecutive positions, i.e. as a
//! substring of the folded text, not merely as trigrams somewhere in it — and the lexemes
//! Postgres's own `to_tsvector` produced for each of [`FTS_CONFIGS`], so `@@` narrowing uses
//! exactly Postgres's parser, stemmer and stop words. The proxy computes every term; tantivy
//! only stores postings.
//!
//! Every commit carries a [`Progress`] payload (layout, backfill position, feed position), so
//! an index that survives a restart is reused when its layout still matches and a backfill
//! resumes where it stopped.

use super::requirement::Requirement;
pub use super::store::{FieldKind, IndexDoc, Progress};
use super::store::{Part, SearchIndex, StoreFuture, WriteOrder};
use super::table::{SearchTable, FTS_CONFIGS};
use super::SearchError;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tantivy::indexer::{LogMergePolicy, NoMergePolicy};
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, EnableScoring, Occur, PhraseQuery, Query, RegexQuery,
    TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, STORED, STRING,
};
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, TERMINATED,
};

/// Matches counted before the candidate search extrapolates whether it will end up with
/// too many.
const EXTRAPOLATE_AFTER: u64 = 256;

/// Memory the writer may buffer before it flushes a segment (split between its threads).
const WRITER_HEAP: usize = 128 * 1024 * 1024;
/// Indexing threads: a backfill keeps two busy while Postgres computes the next batch.
const WRITER_THREADS: usize = 2;

struct Fields {
    key: Field,
    trigram: Vec<Option<Field>>,
    lexeme: Vec<Vec<Field>>,
}

pub struct TableIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter<TantivyDocument>>,
    fields: Fields,
    pub dir: PathBuf,
}

impl std::fmt::Debug for TableIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableIndex")
            .field("dir", &self.dir)
            .finish()
    }
}

fn schema_for(table: &SearchTable) -> (Schema, Fields) {
    let mut b = Schema::builder();
    let key = b.add_text_field("key", STRING | STORED | FAST);
    let positional = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TRIGRAM_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let mut trigram = Vec::new();
    let mut lexeme = Vec::new();
    for i in 0..table.columns.len() {
        trigram.push(
            table
                .has_trigrams()
                .then(|| b.add_text_field(&format!("t{i}"), positional.clone())),
        );
        let mut per = Vec::new();
        if table.has_lexemes() {
            for cfg in 0..FTS_CONFIGS.len() {
                per.push(b.add_text_field(&format!("l{i}_{cfg}"), STRING));
            }
        }
        lexeme.push(per);
    }
    (
        b.build(),
        Fields {
            key,
            trigram,
            lexeme,
        },
    )
}

/// The directory of a table's index under `root`.
pub fn dir_for(root: &Path, table: &SearchTable) -> PathBuf {
    let safe: String = format!("{}.{}", table.name.schema, table.name.name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    root.join(format!("{safe}-{}", table.oid))
}

impl TableIndex {
    /// Opens the index in `dir` if its last commit was made for this layout and source, else
    /// starts an empty one there. Returns the progress to resume from.
    pub fn open(
        dir: &Path,
        table: &SearchTable,
        source: &str,
    ) -> Result<(TableIndex, Progress), SearchError> {
        let (schema, fields) = schema_for(table);
        let existing = Index::open_in_dir(dir).ok().and_then(|index| {
            let meta = index.load_metas().ok()?;
            let progress: Progress = serde_json::from_str(meta.payload.as_deref()?).ok()?;
            (progress.layout == table.layout
                && progress.source == source
                && index.schema() == schema)
                .then_some((index, progress))
        });
        let (index, progress) = match existing {
            Some(found) => found,
            None => {
                if dir.exists() {
                    std::fs::remove_dir_all(dir)?;
                }
                std::fs::create_dir_all(dir)?;
                let index = Index::create_in_dir(dir, schema)?;
                let progress = Progress {
                    layout: table.layout,
                    source: source.to_string(),
                    ..Progress::default()
                };
                (index, progress)
            }
        };
        index
            .tokenizers()
            .register(TRIGRAM_TOKENIZER, TrigramTokenizer::default());
        let writer = index.writer_with_num_threads(WRITER_THREADS, WRITER_HEAP)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok((
            TableIndex {
                index,
                reader,
                writer: Mutex::new(writer),
                fields,
                dir: dir.to_path_buf(),
            },
            progress,
        ))
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, IndexWriter<TantivyDocument>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the documents of `keys` with `docs` (rows not found are simply gone).
    pub fn replace(&self, keys: &[String], docs: &[IndexDoc]) -> Result<(), SearchError> {
        let w = self.writer();
        for k in keys {
            w.delete_term(Term::from_field_text(self.fields.key, k));
        }
        self.add_locked(&w, docs)
    }

    /// Adds documents without removing any (backfill of keys not indexed yet).
    pub fn add(&self, docs: &[IndexDoc]) -> Result<(), SearchError> {
        let w = self.writer();
        self.add_locked(&w, docs)
    }

    fn add_locked(
        &self,
        w: &IndexWriter<TantivyDocument>,
        docs: &[IndexDoc],
    ) -> Result<(), SearchError> {
        for d in docs {
            let mut doc = TantivyDocument::new();
            doc.add_text(self.fields.key, &d.key);
            for (i, text) in d.texts.iter().enumerate() {
                if let (Some(text), Some(Some(field))) = (text, self.fields.trigram.get(i)) {
                    doc.add_text(*field, text);
                }
            }
            for (i, per) in d.lexemes.iter().enumerate() {
                for (cfg, lexemes) in per.iter().enumerate() {
                    if let Some(field) = self.fields.lexeme.get(i).and_then(|f| f.get(cfg)) {
                        for l in lexemes {
                            doc.add_text(*field, l);
                        }
                    }
                }
            }
            w.add_document(doc)?;
        }
        Ok(())
    }

    /// Drops every document (a rebuild starts).
    pub fn clear(&self) -> Result<(), SearchError> {
        let mut w = self.writer();
        // Documents still in the indexing threads are not in any segment yet, and
        // `delete_all_documents` only drops segments: discard the uncommitted work first.
        w.rollback()?;
        w.delete_all_documents()?;
        Ok(())
    }

    /// Makes everything written so far durable with `progress`, and visible to searches.
    pub fn commit(&self, progress: &Progress) -> Result<(), SearchError> {
        let payload = serde_json::to_string(progress)
            .map_err(|_| SearchError::Unexpected("progress does not serialize"))?;
        {
            let mut w = self.writer();
            // While a backfill runs, segments are not merged: merging a growing index over
            // and over (every level rewrites every trigram position) took most of the two
            // cores at a million rows. The commit that completes the backfill brings the
            // default policy back, which merges the backfill's segments in the background
            // while the index already serves.
            if progress.complete {
                w.set_merge_policy(Box::<LogMergePolicy>::default());
            } else {
                w.set_merge_policy(Box::new(NoMergePolicy));
            }
            let mut prepared = w.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
        }
        self.reader.reload()?;
        Ok(())
    }

    /// Documents in the last committed state.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Keys of the documents that satisfy every part, or `None` when there are more than
    /// `limit`.
    pub fn candidates(
        &self,
        parts: &[(usize, FieldKind, Requirement)],
        limit: u64,
    ) -> Result<Option<Vec<String>>, SearchError> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (column, kind, req) in parts {
            let field = match kind {
                FieldKind::Trigram => self.fields.trigram.get(*column).copied().flatten(),
                FieldKind::Lexeme(cfg) => self
                    .fields
                    .lexeme
                    .get(*column)
                    .and_then(|f| f.get(*cfg))
                    .copied(),
            }
            .ok_or(SearchError::Unexpected("no such index field"))?;
            clauses.push((Occur::Must, to_query(req, field)?));
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        // One pass that stops at the first match past `limit`, or earlier when the matches
        // so far, extrapolated over the documents not reached yet, are clearly too many
        // (documents are in insertion order, not in any order of their text). Giving up is
        // always exact — the statement passes through — so a rough early estimate only
        // trades a little narrowing for not paying most of a scan's cost to decide.
        let weight = query.weight(EnableScoring::disabled_from_searcher(&searcher))?;
        let total: u64 = searcher
            .segment_readers()
            .iter()
            .map(|s| u64::from(s.max_doc()))
            .sum();
        let mut keys = Vec::new();
        let mut text = String::new();
        let mut count = 0u64;
        let mut base = 0u64;
        for segment in searcher.segment_readers() {
            let mut scorer = weight.scorer(segment, 1.0)?;
            let alive = segment.alive_bitset();
            let column = segment
                .fast_fields()
                .str("key")?
                .ok_or(SearchError::Unexpected("key column missing"))?;
            let mut doc = scorer.doc();
            while doc != TERMINATED {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    count += 1;
                    if count > limit {
                        return Ok(None);
                    }
                    if count >= EXTRAPOLATE_AFTER {
                        let seen = base + u64::from(doc) + 1;
                        if count.saturating_mul(total)
                            > limit.saturating_mul(2).saturating_mul(seen)
                        {
                            return Ok(None);
                        }
                    }
                    for ord in column.term_ords(doc) {
                        text.clear();
                        if column.ord_to_str(ord, &mut text)? {
                            keys.push(text.clone());
                        }
                    }
                }
                doc = scorer.advance();
            }
            base += u64::from(segment.max_doc());
        }
        keys.sort();
        keys.dedup();
        Ok(Some(keys))
    }

    pub fn index(&self) -> &Index {
        &self.index
    }
}

/// The embedded store's calls are synchronous (local disk, tantivy's own threads): each
/// future is ready when first polled.
impl SearchIndex for TableIndex {
    fn store(&self) -> &'static str {
        "embedded"
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn replace<'a>(
        &'a self,
        keys: &'a [String],
        docs: &'a [IndexDoc],
        _order: WriteOrder,
    ) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(TableIndex::replace(self, keys, docs)))
    }

    fn add<'a>(&'a self, docs: &'a [IndexDoc]) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(TableIndex::add(self, docs)))
    }

    fn clear(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(TableIndex::clear(self)))
    }

    fn commit<'a>(&'a self, progress: &'a Progress) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(TableIndex::commit(self, progress)))
    }

    fn validate<'a>(&'a self, _progress: &'a Progress) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.dir.is_dir())))
    }

    fn num_docs(&self) -> u64 {
        TableIndex::num_docs(self)
    }

    fn candidates<'a>(
        &'a self,
        parts: &'a [Part],
        limit: u64,
    ) -> StoreFuture<'a, Option<Vec<String>>> {
        Box::pin(std::future::ready(TableIndex::candidates(
            self, parts, limit,
        )))
    }

    fn destroy(&self) -> StoreFuture<'_, ()> {
        let dir = self.dir.clone();
        Box::pin(async move {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }
}

fn to_query(req: &Requirement, field: Field) -> Result<Box<dyn Query>, SearchError> {
    Ok(match req {
        Requirement::True => Box::new(AllQuery),
        Requirement::False => Box::new(EmptyQuery),
        Requirement::Term(t) => Box::new(TermQuery::new(
            Term::from_field_text(field, t),
            IndexRecordOption::Basic,
        )),
        Requirement::Substring(s) => {
            let chars: Vec<char> = s.chars().collect();
            let mut terms: Vec<Term> = chars
                .windows(3)
                .map(|w| Term::from_field_text(field, &w.iter().collect::<String>()))
                .collect();
            match terms.len() {
                0 => Box::new(AllQuery),
                1 => Box::new(TermQuery::new(terms.remove(0), IndexRecordOption::Basic)),
                _ => Box::new(PhraseQuery::new(terms)),
            }
        }
        Requirement::Prefix(p) => {
            let pattern = format!("{}.*", regex_escape(p));
            Box::new(RegexQuery::from_pattern(&pattern, field)?)
        }
        Requirement::And(parts) => Box::new(BooleanQuery::new(
            parts
                .iter()
                .map(|p| Ok((Occur::Must, to_query(p, field)?)))
                .collect::<Result<Vec<_>, SearchError>>()?,
        )),
        Requirement::Or(parts) => Box::new(BooleanQuery::new(
            parts
                .iter()
                .map(|p| Ok((Occur::Should, to_query(p, field)?)))
                .collect::<Result<Vec<_>, SearchError>>()?,
        )),
    })
}

/// Name under which [`TrigramTokenizer`] is registered in every index.
const TRIGRAM_TOKENIZER: &str = "pgpolyglot_trigram";

/// Every trigram of the folded text at its char position. Runs on tantivy's indexing
/// thread and reuses one token buffer, so indexing a row allocates one char vector, not a
/// string per trigram.
#[derive(Clone, Default)]
struct TrigramTokenizer {
    token: Token,
}

struct TrigramStream<'a> {
    chars: Vec<char>,
    next: usize,
    token: &'a mut Token,
}

impl Tokenizer for TrigramTokenizer {
    type TokenStream<'a> = TrigramStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> TrigramStream<'a> {
        self.token.reset();
        TrigramStream {
            chars: text.chars().map(super::terms::fold).collect(),
            next: 0,
            token: &mut self.token,
        }
    }
}

impl TokenStream for TrigramStream<'_> {
    fn advance(&mut self) -> bool {
        let Some(window) = self.chars.get(self.next..self.next + 3) else {
            return false;
        };
        self.token.text.clear();
        self.token.text.extend(window);
        self.token.position = self.next;
        self.token.position_length = 1;
        self.next += 1;
        true
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

/// Escapes every character the term regex syntax could read as an operator.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if r"\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigram_tokens_carry_char_positions() {
        let mut t = TrigramTokenizer::default();
        let mut s = t.token_stream("ÀbcD");
        let mut got = Vec::new();
        while s.advance() {
            got.push((s.token().text.clone(), s.token().position));
        }
        assert_eq!(got, vec![("àbc".to_string(), 0), ("bcd".to_string(), 1)]);
        assert!(!t.token_stream("ab").advance());
    }

    #[test]
    fn escapes_regex_operators() {
        assert_eq!(regex_escape("a.b*c"), "a\\.b\\*c");
        assert_eq!(regex_escape("héllo"), "héllo");
    }
}
