//! One tantivy index per table, on local disk: the embedded search store.
//!
//! Documents are a row's key plus, per indexed column, its trigrams (folded, see
//! [`super::terms`]) and the lexemes Postgres's own `to_tsvector` produced for each of
//! [`FTS_CONFIGS`] — so `@@` narrowing uses exactly Postgres's parser, stemmer and stop words.
//! All terms are raw (untokenized) multi-valued fields: the proxy computes them, tantivy only
//! stores postings.
//!
//! Every commit carries a [`Progress`] payload (layout, backfill position, feed position), so
//! an index that survives a restart is reused when its layout still matches and a backfill
//! resumes where it stopped.

use super::requirement::Requirement;
use super::table::{SearchTable, FTS_CONFIGS};
use super::SearchError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tantivy::collector::{Count, DocSetCollector};
use tantivy::query::{AllQuery, BooleanQuery, EmptyQuery, Occur, Query, RegexQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, FAST, STORED, STRING};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// Memory the writer may buffer before it flushes a segment.
const WRITER_HEAP: usize = 64 * 1024 * 1024;

/// What a commit records, as JSON in the commit payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// [`SearchTable::layout`] the documents were built for.
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    Trigram,
    /// Lexemes of [`FTS_CONFIGS`]`[i]`.
    Lexeme(usize),
}

/// One row as the index sees it.
#[derive(Debug, Clone, Default)]
pub struct IndexDoc {
    pub key: String,
    /// Per indexed column: its text (NULL indexes nothing).
    pub texts: Vec<Option<String>>,
    /// Per indexed column, per [`FTS_CONFIGS`] entry: the lexemes.
    pub lexemes: Vec<Vec<Vec<String>>>,
}

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
    let mut trigram = Vec::new();
    let mut lexeme = Vec::new();
    for i in 0..table.columns.len() {
        trigram.push(
            table
                .has_trigrams()
                .then(|| b.add_text_field(&format!("t{i}"), STRING)),
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
        let writer = index.writer_with_num_threads(1, WRITER_HEAP)?;
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

    /// Adds documents whose keys are not in the index yet (backfill).
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
                    for t in super::terms::trigrams(text) {
                        doc.add_text(*field, &t);
                    }
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
        self.writer().delete_all_documents()?;
        Ok(())
    }

    /// Makes everything written so far durable with `progress`, and visible to searches.
    pub fn commit(&self, progress: &Progress) -> Result<(), SearchError> {
        let payload = serde_json::to_string(progress)
            .map_err(|_| SearchError::Unexpected("progress does not serialize"))?;
        {
            let mut w = self.writer();
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
        if searcher.search(&query, &Count)? as u64 > limit {
            return Ok(None);
        }
        let docs = searcher.search(&query, &DocSetCollector)?;
        let mut by_segment: Vec<Vec<u32>> = vec![Vec::new(); searcher.segment_readers().len()];
        for d in docs {
            if let Some(v) = by_segment.get_mut(d.segment_ord as usize) {
                v.push(d.doc_id);
            }
        }
        let mut keys = Vec::new();
        let mut text = String::new();
        for (segment, ids) in by_segment.iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            let column = searcher
                .segment_reader(segment as u32)
                .fast_fields()
                .str("key")?
                .ok_or(SearchError::Unexpected("key column missing"))?;
            for id in ids {
                for ord in column.term_ords(*id) {
                    text.clear();
                    if column.ord_to_str(ord, &mut text)? {
                        keys.push(text.clone());
                    }
                }
            }
        }
        keys.sort();
        keys.dedup();
        Ok(Some(keys))
    }

    pub fn index(&self) -> &Index {
        &self.index
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
    fn escapes_regex_operators() {
        assert_eq!(regex_escape("a.b*c"), "a\\.b\\*c");
        assert_eq!(regex_escape("héllo"), "héllo");
    }
}
