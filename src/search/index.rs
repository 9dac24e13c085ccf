//! One tantivy index per table, on local disk: the embedded search store.
//!
//! Documents are a row's key plus, per indexed column, its trigrams (folded, see
//! [`super::terms`]) *with their positions* — trigram `i` starts at char `i`, so a literal
//! run of a pattern is found as a phrase of its trigrams at consecutive positions, i.e. as a
//! substring of the folded text, not merely as trigrams somewhere in it — and the lexemes
//! Postgres's own `to_tsvector` produced for each of [`FTS_CONFIGS`], so `@@` narrowing uses
//! exactly Postgres's parser, stemmer and stop words. Next to each trigram field, the
//! column's distinct words ([`super::words`], no positions): a run whose words are rare is
//! found from their few posting lists instead of a phrase over common trigrams. The proxy
//! computes every term; tantivy only stores postings.
//!
//! Every commit carries a [`Progress`] payload (layout, backfill position, feed position), so
//! an index that survives a restart is reused when its layout still matches and a backfill
//! resumes where it stopped.

use super::requirement::Requirement;
pub use super::store::{FieldKind, IndexDoc, Progress};
use super::store::{Part, SearchIndex, StoreFuture, WriteOrder};
use super::table::{SearchTable, FTS_CONFIGS};
use super::terms::fold;
use super::words::{self, WordCondition, WordList};
use super::SearchError;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use tantivy::index::SegmentId;
use tantivy::indexer::{LogMergePolicy, NoMergePolicy};
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, EnableScoring, Occur, PhraseQuery, Query, RegexQuery,
    TermQuery, TermSetQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, STRING,
};
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, SegmentReader,
    TantivyDocument, Term, TERMINATED,
};

/// Matches counted before the candidate search extrapolates whether it will end up with
/// too many.
const EXTRAPOLATE_AFTER: u64 = 256;

/// Memory the writer may buffer before it flushes a segment (split between its threads).
const WRITER_HEAP: usize = 128 * 1024 * 1024;
/// Indexing threads: a backfill keeps two busy while Postgres computes the next batch.
const WRITER_THREADS: usize = 2;

struct Fields {
    /// The key's text: what deletes find a document by.
    key: Field,
    /// Integer keys, as a fast field: candidates are read from it without decompressing
    /// the key text's dictionary (one zstd block per candidate, most of a search's time).
    int_key: Option<Field>,
    trigram: Vec<Option<Field>>,
    /// Per column with trigrams: its words.
    word: Vec<Option<Field>>,
    lexeme: Vec<Vec<Field>>,
}

pub struct TableIndex {
    index: Index,
    reader: IndexReader,
    writer: Arc<Mutex<IndexWriter<TantivyDocument>>>,
    fields: Arc<Fields>,
    /// Word lists of the segments searched last, built on first use (segments never change).
    word_lists: Mutex<HashMap<(SegmentId, Field), Arc<WordList>>>,
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
    let integer_key = matches!(table.key_type.as_str(), "smallint" | "integer" | "bigint");
    let key = if integer_key {
        b.add_text_field("key", STRING)
    } else {
        b.add_text_field("key", STRING | FAST)
    };
    let int_key = integer_key.then(|| b.add_i64_field("ikey", FAST));
    let positional = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TRIGRAM_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let mut trigram = Vec::new();
    let mut word = Vec::new();
    let mut lexeme = Vec::new();
    for i in 0..table.columns.len() {
        trigram.push(
            table
                .has_trigrams()
                .then(|| b.add_text_field(&format!("t{i}"), positional.clone())),
        );
        word.push(
            table
                .has_trigrams()
                .then(|| b.add_text_field(&format!("w{i}"), STRING)),
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
            int_key,
            trigram,
            word,
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
                writer: Arc::new(Mutex::new(writer)),
                fields: Arc::new(fields),
                word_lists: Mutex::new(HashMap::new()),
                dir: dir.to_path_buf(),
            },
            progress,
        ))
    }

    /// What the writing calls need, shared, so that they can run on another thread.
    fn writes(&self) -> IndexWrites {
        IndexWrites {
            writer: self.writer.clone(),
            fields: self.fields.clone(),
            reader: self.reader.clone(),
        }
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
        let searcher = self.reader.searcher();
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
            let planner = Planner {
                searcher: &searcher,
                word_lists: &self.word_lists,
                words: match kind {
                    FieldKind::Trigram => self.fields.word.get(*column).copied().flatten(),
                    FieldKind::Lexeme(_) => None,
                },
                limit,
            };
            clauses.push((Occur::Must, planner.query(req, field)?));
        }
        let query = BooleanQuery::new(clauses);
        // Forget the word lists of segments merged away.
        self.word_lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _), _| {
                searcher
                    .segment_readers()
                    .iter()
                    .any(|s| s.segment_id() == *id)
            });
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
        let mut ords = Vec::new();
        let mut count = 0u64;
        let mut base = 0u64;
        for segment in searcher.segment_readers() {
            let mut scorer = weight.scorer(segment, 1.0)?;
            let alive = segment.alive_bitset();
            let int_keys = match self.fields.int_key {
                Some(_) => Some(segment.fast_fields().i64("ikey")?),
                None => None,
            };
            let text_keys = match int_keys {
                Some(_) => None,
                None => Some(
                    segment
                        .fast_fields()
                        .str("key")?
                        .ok_or(SearchError::Unexpected("key column missing"))?,
                ),
            };
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
                    if let Some(ints) = &int_keys {
                        keys.extend(ints.values_for_doc(doc).map(|n| n.to_string()));
                    }
                    if let Some(texts) = &text_keys {
                        ords.extend(texts.term_ords(doc));
                    }
                }
                doc = scorer.advance();
            }
            if let Some(texts) = &text_keys {
                // In ord order, each block of the key dictionary is decompressed once (not
                // once per key).
                ords.sort_unstable();
                ords.dedup();
                texts
                    .dictionary()
                    .sorted_ords_to_term_cb(ords.drain(..), |bytes| {
                        let key = std::str::from_utf8(bytes).map_err(|_| {
                            std::io::Error::new(std::io::ErrorKind::InvalidData, "key is not UTF-8")
                        })?;
                        keys.push(key.to_string());
                        Ok(())
                    })?;
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

/// The writing half of a [`TableIndex`]: cheap to clone (shared handles), so a write can be
/// sent to the blocking pool.
#[derive(Clone)]
struct IndexWrites {
    writer: Arc<Mutex<IndexWriter<TantivyDocument>>>,
    fields: Arc<Fields>,
    reader: IndexReader,
}

impl IndexWrites {
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
            if let Some(field) = self.fields.int_key {
                let n: i64 = d
                    .key
                    .parse()
                    .map_err(|_| SearchError::Unexpected("integer key does not parse"))?;
                doc.add_i64(field, n);
            }
            for (i, text) in d.texts.iter().enumerate() {
                let Some(text) = text else { continue };
                if let Some(Some(field)) = self.fields.trigram.get(i) {
                    doc.add_text(*field, text);
                }
                if let Some(Some(field)) = self.fields.word.get(i) {
                    words::for_each_word(text, fold, |w| doc.add_text(*field, w));
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
}

/// Runs a write that may block for a while — `add_document` waits when tantivy's bounded
/// queue is full, a commit waits for the indexing threads — without holding up the tasks
/// that share the runtime's thread (sessions relaying, the backfill's read-ahead connection).
/// On a multi-thread runtime the worker hands its other tasks to another thread for the call
/// (`block_in_place`; without it a backfill left a fifth of both cores idle, 22.6k → 27.6k
/// rows/s at a million rows). A current-thread runtime (the proxy's with one worker) cannot do
/// that: the call runs on the blocking pool with its input moved there (the store's
/// writes take their documents by value so that nothing is copied), and this awaits it.
async fn blocking<I, T>(
    input: I,
    call: impl FnOnce(I) -> Result<T, SearchError> + Send + 'static,
) -> Result<T, SearchError>
where
    I: Send + 'static,
    T: Send + 'static,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| call(input))
        }
        Ok(h) => h
            .spawn_blocking(move || call(input))
            .await
            .map_err(|_| SearchError::Unexpected("an index write failed on the blocking pool"))?,
        Err(_) => call(input),
    }
}

/// The embedded store's reads are synchronous (local disk, tantivy's own threads): each
/// future is ready when first polled; the writing calls go through [`blocking`].
impl SearchIndex for TableIndex {
    fn store(&self) -> &'static str {
        "embedded"
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn replace(
        &self,
        keys: Vec<String>,
        docs: Vec<IndexDoc>,
        _order: WriteOrder,
    ) -> StoreFuture<'_, ()> {
        let w = self.writes();
        Box::pin(blocking((keys, docs), move |(keys, docs)| {
            w.replace(&keys, &docs)
        }))
    }

    fn add(&self, docs: Vec<IndexDoc>) -> StoreFuture<'_, ()> {
        let w = self.writes();
        Box::pin(blocking(docs, move |docs| w.add(&docs)))
    }

    fn clear(&self) -> StoreFuture<'_, ()> {
        let w = self.writes();
        Box::pin(blocking((), move |()| w.clear()))
    }

    fn commit<'a>(&'a self, progress: &'a Progress) -> StoreFuture<'a, ()> {
        let w = self.writes();
        Box::pin(blocking(progress.clone(), move |progress| {
            w.commit(&progress)
        }))
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

/// Words of a dictionary scanned for a suffix or contains condition, at most, per segment:
/// past this a scan costs more than the phrase query it would replace.
const MAX_SCANNED_WORDS: usize = 200_000;

/// Turns requirements into tantivy queries over one searcher's segments.
struct Planner<'a> {
    searcher: &'a Searcher,
    word_lists: &'a Mutex<HashMap<(SegmentId, Field), Arc<WordList>>>,
    /// The column's word field (trigram requirements only).
    words: Option<Field>,
    /// The search's candidate limit.
    limit: u64,
}

impl Planner<'_> {
    fn query(&self, req: &Requirement, field: Field) -> Result<Box<dyn Query>, SearchError> {
        Ok(match req {
            Requirement::True => Box::new(AllQuery),
            Requirement::False => Box::new(EmptyQuery),
            Requirement::Term(t) => Box::new(TermQuery::new(
                Term::from_field_text(field, t),
                IndexRecordOption::Basic,
            )),
            Requirement::Substring(s) => match self.word_query(s)? {
                Some(q) => q,
                None => phrase_query(field, s),
            },
            Requirement::Prefix(p) => {
                let pattern = format!("{}.*", regex_escape(p));
                Box::new(RegexQuery::from_pattern(&pattern, field)?)
            }
            Requirement::And(parts) => Box::new(BooleanQuery::new(
                parts
                    .iter()
                    .map(|p| Ok((Occur::Must, self.query(p, field)?)))
                    .collect::<Result<Vec<_>, SearchError>>()?,
            )),
            Requirement::Or(parts) => Box::new(BooleanQuery::new(
                parts
                    .iter()
                    .map(|p| Ok((Occur::Should, self.query(p, field)?)))
                    .collect::<Result<Vec<_>, SearchError>>()?,
            )),
        })
    }

    /// The run as conditions on words, when the rarest of them narrows to at most `limit`
    /// documents; else `None` (the trigram phrase is used). Conditions whose words are too
    /// common to be worth collecting are left out: the query stays a superset either way.
    /// Unlike the phrase it does not check that the words are adjacent (Postgres does).
    fn word_query(&self, run: &str) -> Result<Option<Box<dyn Query>>, SearchError> {
        let Some(field) = self.words else {
            return Ok(None);
        };
        let budget = self.limit.saturating_mul(4);
        let mut rarest = u64::MAX;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for cond in words::conditions(run) {
            if let Some((terms, docs)) = self.matching_words(field, &cond, budget)? {
                rarest = rarest.min(docs);
                clauses.push((Occur::Must, Box::new(TermSetQuery::new(terms))));
            }
        }
        if rarest > self.limit {
            return Ok(None);
        }
        Ok(Some(Box::new(BooleanQuery::new(clauses))))
    }

    /// The stored words `cond` accepts (always with [`words::LONG_WORD`]) and the sum of
    /// their document counts, or `None` when that sum passes `budget` or a dictionary is
    /// too large to scan.
    fn matching_words(
        &self,
        field: Field,
        cond: &WordCondition,
        budget: u64,
    ) -> Result<Option<(Vec<Term>, u64)>, SearchError> {
        let mut found: BTreeSet<String> = BTreeSet::new();
        let mut docs = 0u64;
        for segment in self.searcher.segment_readers() {
            let inverted = segment.inverted_index(field)?;
            let dict = inverted.terms();
            if let Some(info) = dict.get(words::LONG_WORD.as_bytes())? {
                docs += u64::from(info.doc_freq);
                found.insert(words::LONG_WORD.to_string());
            }
            match cond {
                WordCondition::Exact(w) => {
                    if let Some(info) = dict.get(w.as_bytes())? {
                        collect_word(cond, w.as_bytes(), info.doc_freq, &mut found, &mut docs);
                    }
                }
                WordCondition::Prefix(p) => {
                    let mut stream = dict.range().ge(p.as_bytes()).into_stream()?;
                    while stream.advance() {
                        if !stream.key().starts_with(p.as_bytes()) {
                            break;
                        }
                        collect_word(
                            cond,
                            stream.key(),
                            stream.value().doc_freq,
                            &mut found,
                            &mut docs,
                        );
                        if docs > budget {
                            return Ok(None);
                        }
                    }
                }
                WordCondition::Suffix(_) | WordCondition::Contains(_) => {
                    let Some(list) = self.word_list(segment, field)? else {
                        return Ok(None);
                    };
                    let mut failed = None;
                    list.matching(cond, |w| {
                        if failed.is_some() || docs > budget {
                            return;
                        }
                        match dict.get(w.as_bytes()) {
                            Ok(Some(info)) => {
                                collect_word(
                                    cond,
                                    w.as_bytes(),
                                    info.doc_freq,
                                    &mut found,
                                    &mut docs,
                                );
                            }
                            Ok(None) => {}
                            Err(e) => failed = Some(e),
                        }
                    });
                    if let Some(e) = failed {
                        return Err(e.into());
                    }
                }
            }
            if docs > budget {
                return Ok(None);
            }
        }
        let terms = found
            .iter()
            .map(|w| Term::from_field_text(field, w))
            .collect();
        Ok(Some((terms, docs)))
    }
}

impl Planner<'_> {
    /// The segment's words of `field`, or `None` when it has too many to scan.
    fn word_list(
        &self,
        segment: &SegmentReader,
        field: Field,
    ) -> Result<Option<Arc<WordList>>, SearchError> {
        let key = (segment.segment_id(), field);
        if let Some(list) = self
            .word_lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Some(list.clone()));
        }
        let inverted = segment.inverted_index(field)?;
        let dict = inverted.terms();
        if dict.num_terms() > MAX_SCANNED_WORDS {
            return Ok(None);
        }
        let mut list = WordList::default();
        let mut stream = dict.stream()?;
        while stream.advance() {
            if let Ok(w) = std::str::from_utf8(stream.key()) {
                list.push(w);
            }
        }
        let list = Arc::new(list);
        self.word_lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, list.clone());
        Ok(Some(list))
    }
}

/// Records the stored word `key` when `cond` accepts it.
fn collect_word(
    cond: &WordCondition,
    key: &[u8],
    doc_freq: u32,
    found: &mut BTreeSet<String>,
    docs: &mut u64,
) -> bool {
    match std::str::from_utf8(key) {
        Ok(w) if cond.accepts(w) => {
            *docs += u64::from(doc_freq);
            if !found.contains(w) {
                found.insert(w.to_string());
            }
            true
        }
        _ => false,
    }
}

/// The run as its trigrams at consecutive positions.
fn phrase_query(field: Field, run: &str) -> Box<dyn Query> {
    let chars: Vec<char> = run.chars().collect();
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

    fn table(key_type: &str) -> SearchTable {
        use crate::config::policy::{PredicateKind, SearchPolicy, SearchStoreKind};
        SearchTable {
            oid: 1,
            name: crate::cdc::TableName::new("public", "t"),
            key_column: "id".into(),
            key_type: key_type.into(),
            columns: vec!["body".into()],
            policy: SearchPolicy {
                store: SearchStoreKind::Embedded,
                columns: vec!["body".into()],
                predicates: vec![PredicateKind::Like],
                fts_configs: vec![],
                max_candidate_fraction: 1.0,
                max_staleness: std::time::Duration::from_secs(1),
            },
            policy_file: PathBuf::new(),
            layout: 7,
            unusable: None,
            case_insensitive_safe: true,
        }
    }

    /// On the proxy's one-worker (current-thread) runtime a write must not run on the
    /// runtime's own thread, where it would hold up every session: it goes to the blocking
    /// pool. On a multi-thread runtime it runs in place (the worker's other tasks move). Through the trait on that runtime, writes
    /// and a commit still land.
    #[test]
    fn writes_leave_a_current_thread_runtime_free() {
        let here = std::thread::current().id();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let on_ct = rt.block_on(blocking((), |()| Ok(std::thread::current().id())));
        assert_ne!(on_ct.unwrap(), here);
        let mt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let (in_place, worker) = mt.block_on(async {
            tokio::spawn(async {
                let id = std::thread::current().id();
                (blocking((), |()| Ok(std::thread::current().id())).await, id)
            })
            .await
            .unwrap()
        });
        assert_eq!(
            in_place.unwrap(),
            worker,
            "block_in_place runs the call where it is"
        );

        let dir = tempfile::tempdir().unwrap();
        let (ix, _) = TableIndex::open(dir.path(), &table("bigint"), "test").unwrap();
        let docs: Vec<IndexDoc> = (0..3)
            .map(|i| IndexDoc {
                key: i.to_string(),
                texts: vec![Some(format!("row {i}"))],
                lexemes: vec![vec![]],
            })
            .collect();
        let store: &dyn SearchIndex = &ix;
        let found = rt.block_on(async {
            store.add(docs.clone()).await.unwrap();
            store
                .replace(
                    vec!["1".to_string()],
                    docs[1..2].to_vec(),
                    WriteOrder::Backfill,
                )
                .await
                .unwrap();
            store.commit(&Progress::default()).await.unwrap();
            let parts = vec![(
                0,
                FieldKind::Trigram,
                Requirement::Substring("row 2".into()),
            )];
            store.candidates(&parts, 10).await.unwrap()
        });
        assert_eq!(ix.num_docs(), 3);
        assert_eq!(
            found,
            Some(vec!["2".to_string()]),
            "searchable after the commit"
        );
    }

    /// Candidates of a run through the word path (a generous limit) and through the
    /// trigram phrase (a limit of one makes every word condition "too common"): both hold
    /// every document whose folded text has the run; a run without separators is exact in
    /// both. Integer keys come from the fast field, others from the key dictionary.
    #[test]
    fn words_and_phrases_find_every_run() {
        let long = "w".repeat(words::MAX_WORD_CHARS + 3);
        let texts = [
            "New York is big".to_string(),
            "a new yorker, newly in york".to_string(),
            "renew York-ish".to_string(),
            format!("prefix {long}suffix end"),
            "ÉTÉ à Straße".to_string(),
            "nothing here".to_string(),
        ];
        for key_type in ["bigint", "text"] {
            let dir = tempfile::tempdir().unwrap();
            let t = table(key_type);
            let (ix, _) = TableIndex::open(dir.path(), &t, "test").unwrap();
            let docs: Vec<IndexDoc> = texts
                .iter()
                .enumerate()
                .map(|(i, text)| IndexDoc {
                    key: (i as i64 * 1000 - 1).to_string(),
                    texts: vec![Some(text.clone())],
                    lexemes: vec![vec![]],
                })
                .collect();
            // Two commits: two segments, each with its own dictionaries.
            let w = ix.writes();
            w.add(&docs[..3]).unwrap();
            w.commit(&Progress::default()).unwrap();
            w.add(&docs[3..]).unwrap();
            w.commit(&Progress::default()).unwrap();
            let runs = [
                "new york",
                "new",
                "york",
                "ew yo",
                "renew",
                " yo",
                "york-",
                "ww",
                "wwwwsuff",
                &long[..],
                "été à",
                "straße",
                "xyz",
                " ",
                "ly in yo",
            ];
            for run in runs {
                let folded: String = run.chars().map(fold).collect();
                let mut want: Vec<String> = docs
                    .iter()
                    .filter(|d| {
                        let text: String =
                            d.texts[0].as_deref().unwrap().chars().map(fold).collect();
                        text.contains(folded.as_str())
                    })
                    .map(|d| d.key.clone())
                    .collect();
                want.sort();
                let parts = vec![(
                    0,
                    FieldKind::Trigram,
                    Requirement::Substring(folded.clone()),
                )];
                for limit in [100, 1] {
                    let Some(got) = ix.candidates(&parts, limit).unwrap() else {
                        assert!(want.len() as u64 > limit || limit == 1, "{run:?}: gave up");
                        continue;
                    };
                    for k in &want {
                        assert!(
                            got.contains(k),
                            "{key_type} {run:?} limit {limit}: {k} missing from {got:?}"
                        );
                    }
                    // Exact but for the document with a long word, which every word
                    // condition accepts.
                    if !folded.chars().any(|c| !words::is_word_char(c))
                        && folded.chars().count() >= 3
                    {
                        let long_doc = &docs[3].key;
                        let got: Vec<&String> = got
                            .iter()
                            .filter(|k| *k != long_doc || want.contains(k))
                            .collect();
                        let want: Vec<&String> = want.iter().collect();
                        assert_eq!(got, want, "{key_type} {run:?} limit {limit}: not exact");
                    }
                }
            }
        }
    }

    #[test]
    fn escapes_regex_operators() {
        assert_eq!(regex_escape("a.b*c"), "a\\.b\\*c");
        assert_eq!(regex_escape("héllo"), "héllo");
    }
}
