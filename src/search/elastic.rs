//! An Elasticsearch (or OpenSearch) index per table, over the REST API: the external search
//! store.
//!
//! It holds the same documents as the embedded index, with every term computed by the proxy:
//!
//! - `key` (keyword): the row's key text; the document `_id` is the key (a hash of it when it
//!   is too long for an `_id`), so a row has exactly one document.
//! - `t{i}` (text, analyzer `pgpolyglot_trigrams` = the `whitespace` tokenizer and nothing
//!   else): column `i`'s folded trigrams in order, each spelled with ASCII letters and digits
//!   only ([`encode_trigram`]), so the server's analysis cannot change them and their
//!   positions are character positions. A literal run of a pattern is a `match_phrase` of
//!   its trigrams.
//! - `l{i}_{cfg}` (keyword): the lexemes Postgres's own `to_tsvector(cfg, column)` produced.
//!   The "PostgreSQL-compatible English analyzer" is Postgres itself: no Elasticsearch
//!   stemmer, stop list or parser decides what `@@` may match.
//!
//! Writes go through `_bulk` with `version_type=external` and the feed's LSN as the version,
//! so a late or repeated request never overwrites a newer document (the server answers 409,
//! which is expected and ignored). Backfilled documents carry version 1: they never replace
//! what the feed wrote. A rebuild deletes and re-creates the index, since deletes leave
//! versioned tombstones behind. Searches see what the last `_refresh` (the commit) made
//! visible; the commit's [`Progress`] is kept in the mapping's `_meta`, which is how a
//! restart resumes and how a server that came back empty (or an index deleted behind the
//! proxy's back) is noticed and rebuilt: every `_bulk` and commit first reads `_meta` back
//! and refuses to write to an index that does not hold what this proxy committed.

use super::requirement::Requirement;
use super::store::{FieldKind, IndexDoc, Part, Progress, SearchIndex, StoreFuture, WriteOrder};
use super::table::{SearchTable, FTS_CONFIGS};
use super::SearchError;
use crate::config::ElasticsearchSettings;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Hits fetched per search request (the default `index.max_result_window` is 10,000).
const PAGE: u64 = 10_000;
/// A `_bulk` request is sent once its body reaches this size.
const BULK_BYTES: usize = 8 * 1024 * 1024;
/// Longest key used as the document `_id` as it is (the server's limit is 512 bytes).
const MAX_PLAIN_ID: usize = 256;
/// The version backfilled documents carry: below every LSN, so they never replace a
/// document the feed wrote.
const BACKFILL_VERSION: u64 = 1;

/// The HTTP side: one connection pool per proxy, shared by every table's index.
#[derive(Debug, Clone)]
pub struct ElasticClient {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
    search_timeout: Duration,
    write_timeout: Duration,
    prefix: String,
}

impl ElasticClient {
    pub fn new(settings: &ElasticsearchSettings) -> Result<ElasticClient, SearchError> {
        let mut url = url::Url::parse(&settings.url)
            .map_err(|e| SearchError::Elastic(format!("url {:?}: {e}", settings.url)))?;
        let auth = (!url.username().is_empty()).then(|| {
            let user = url.username().to_string();
            let password = url.password().unwrap_or_default().to_string();
            (user, password)
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout.max(Duration::from_millis(100)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| SearchError::Elastic(format!("http client: {e}")))?;
        Ok(ElasticClient {
            http,
            base: url.as_str().trim_end_matches('/').to_string(),
            auth,
            search_timeout: settings.timeout,
            write_timeout: settings.write_timeout,
            prefix: settings.index_prefix.clone(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request; returns the status and the JSON body (`Null` when empty).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Body>,
        timeout: Duration,
    ) -> Result<(u16, Value), SearchError> {
        let mut req = self
            .http
            .request(method, format!("{}/{}", self.base, path))
            .timeout(timeout);
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        req = match body {
            Some(Body::Json(v)) => req
                .header("content-type", "application/json")
                .body(v.to_string()),
            Some(Body::NdJson(s)) => req.header("content-type", "application/x-ndjson").body(s),
            None => req,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| SearchError::Elastic(format!("{path}: {e}")))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| SearchError::Elastic(format!("{path}: {e}")))?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| SearchError::Elastic(format!("{path}: answer is not JSON ({e})")))?
        };
        Ok((status, value))
    }

    /// Like [`Self::call`], but any status outside 2xx is an error carrying the server's
    /// reason.
    async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Body>,
        timeout: Duration,
    ) -> Result<Value, SearchError> {
        let (status, value) = self.call(method, path, body, timeout).await?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(SearchError::Elastic(format!(
                "{path}: HTTP {status}: {}",
                reason(&value)
            )))
        }
    }

    /// The server's product and version (`GET /`), for `SHOW STORES`.
    pub async fn describe(&self) -> Result<String, SearchError> {
        let v = self
            .ok(reqwest::Method::GET, "", None, self.search_timeout)
            .await?;
        let version = &v["version"];
        let product = version["distribution"].as_str().unwrap_or("elasticsearch");
        Ok(format!(
            "{product} {}",
            version["number"].as_str().unwrap_or("?")
        ))
    }

    /// The index name for a table followed from `source`: lower case, only characters every
    /// server accepts, unique per upstream, database, slot and table.
    pub fn index_name(&self, table: &SearchTable, source: &str) -> String {
        let safe: String = format!("{}.{}", table.name.schema, table.name.name)
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let tag = xxhash_rust::xxh3::xxh3_64(source.as_bytes()) as u32;
        format!(
            "{}-{safe}-{}-{tag:08x}",
            self.prefix.to_ascii_lowercase(),
            table.oid
        )
    }
}

enum Body {
    Json(Value),
    NdJson(String),
}

/// The `reason` of an error answer, or the whole answer.
fn reason(v: &Value) -> String {
    v["error"]["reason"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string().chars().take(300).collect())
}

/// One table's index on the server.
#[derive(Debug)]
pub struct ElasticIndex {
    client: ElasticClient,
    name: String,
    columns: usize,
    trigrams: bool,
    lexemes: bool,
    docs: AtomicU64,
    /// The progress the index's `_meta` should hold (what this proxy last wrote there).
    expected: std::sync::Mutex<Option<Progress>>,
}

impl ElasticIndex {
    /// Opens the table's index if the server holds one committed for this layout and source,
    /// else (re-)creates it empty. Returns the progress to resume from.
    pub async fn open(
        client: &ElasticClient,
        table: &SearchTable,
        source: &str,
    ) -> Result<(ElasticIndex, Progress), SearchError> {
        let ix = ElasticIndex {
            client: client.clone(),
            name: client.index_name(table, source),
            columns: table.columns.len(),
            trigrams: table.has_trigrams(),
            lexemes: table.has_lexemes(),
            docs: AtomicU64::new(0),
            expected: std::sync::Mutex::new(None),
        };
        let found = ix.committed().await?;
        let progress = match found {
            Some(p) if p.layout == table.layout && p.source == source => {
                ix.refresh_count().await?;
                ix.expect(&p);
                p
            }
            _ => {
                let fresh = Progress {
                    layout: table.layout,
                    source: source.to_string(),
                    ..Progress::default()
                };
                ix.recreate(&fresh).await?;
                fresh
            }
        };
        Ok((ix, progress))
    }

    /// The progress the index's mapping records, `None` when there is no such index (or it
    /// was not made by this proxy).
    async fn committed(&self) -> Result<Option<Progress>, SearchError> {
        let path = format!("{}/_mapping", self.name);
        let (status, v) = self
            .client
            .call(reqwest::Method::GET, &path, None, self.client.write_timeout)
            .await?;
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(SearchError::Elastic(format!(
                "{path}: HTTP {status}: {}",
                reason(&v)
            )));
        }
        // `{"<index>": {"mappings": {"_meta": {"pgpolyglot": {..}}}}}`
        let meta = v
            .as_object()
            .and_then(|o| o.values().next())
            .map(|m| m["mappings"]["_meta"]["pgpolyglot"].clone())
            .unwrap_or(Value::Null);
        Ok(serde_json::from_value(meta).ok())
    }

    /// Deletes the index (if any) and creates it empty with the mapping and `progress`.
    async fn recreate(&self, progress: &Progress) -> Result<(), SearchError> {
        self.delete_index().await?;
        let mut properties = serde_json::Map::new();
        properties.insert("key".into(), json!({"type": "keyword"}));
        for i in 0..self.columns {
            if self.trigrams {
                properties.insert(
                    format!("t{i}"),
                    json!({
                        "type": "text",
                        "analyzer": "pgpolyglot_trigrams",
                        "norms": false,
                        "index_options": "positions"
                    }),
                );
            }
            if self.lexemes {
                for cfg in 0..FTS_CONFIGS.len() {
                    properties.insert(format!("l{i}_{cfg}"), json!({"type": "keyword"}));
                }
            }
        }
        let body = json!({
            "settings": {
                "number_of_shards": 1,
                "number_of_replicas": 0,
                // Searches see only what a commit made visible.
                "refresh_interval": "-1",
                "analysis": {"analyzer": {"pgpolyglot_trigrams": {
                    "type": "custom", "tokenizer": "whitespace"
                }}}
            },
            "mappings": {
                "dynamic": "strict",
                "_meta": {"pgpolyglot": progress},
                "properties": properties
            }
        });
        self.client
            .ok(
                reqwest::Method::PUT,
                &self.name,
                Some(Body::Json(body)),
                self.client.write_timeout,
            )
            .await?;
        self.docs.store(0, Relaxed);
        self.expect(progress);
        Ok(())
    }

    fn expect(&self, progress: &Progress) {
        *self.expected.lock().unwrap_or_else(|e| e.into_inner()) = Some(progress.clone());
    }

    /// Fails unless the server still holds the index this proxy created and last committed:
    /// a server that restarted empty would otherwise auto-create it, with a dynamic mapping,
    /// on the next `_bulk`.
    async fn check_ours(&self) -> Result<(), SearchError> {
        let expected = self
            .expected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if expected.is_some() && self.committed().await? == expected {
            Ok(())
        } else {
            Err(SearchError::Elastic(format!(
                "index {} no longer holds what this proxy committed",
                self.name
            )))
        }
    }

    async fn delete_index(&self) -> Result<(), SearchError> {
        let (status, v) = self
            .client
            .call(
                reqwest::Method::DELETE,
                &self.name,
                None,
                self.client.write_timeout,
            )
            .await?;
        if (200..300).contains(&status) || status == 404 {
            Ok(())
        } else {
            Err(SearchError::Elastic(format!(
                "DELETE {}: HTTP {status}: {}",
                self.name,
                reason(&v)
            )))
        }
    }

    async fn refresh_count(&self) -> Result<(), SearchError> {
        let v = self
            .client
            .ok(
                reqwest::Method::GET,
                &format!("{}/_count", self.name),
                None,
                self.client.write_timeout,
            )
            .await?;
        let n = v["count"]
            .as_u64()
            .ok_or_else(|| SearchError::Elastic("_count: no count in the answer".into()))?;
        self.docs.store(n, Relaxed);
        Ok(())
    }

    /// The `_source` of a document.
    fn source(&self, d: &IndexDoc) -> Value {
        let mut o = serde_json::Map::new();
        o.insert("key".into(), Value::String(d.key.clone()));
        if self.trigrams {
            for (i, text) in d.texts.iter().enumerate().take(self.columns) {
                if let Some(text) = text {
                    o.insert(format!("t{i}"), Value::String(trigram_text(text)));
                }
            }
        }
        if self.lexemes {
            for (i, per) in d.lexemes.iter().enumerate().take(self.columns) {
                for (cfg, lexemes) in per.iter().enumerate().take(FTS_CONFIGS.len()) {
                    if !lexemes.is_empty() {
                        o.insert(format!("l{i}_{cfg}"), json!(lexemes));
                    }
                }
            }
        }
        Value::Object(o)
    }

    /// Sends `ops` (action line, optional source line) as few `_bulk` requests; version
    /// conflicts and deletes of absent documents are expected, anything else fails.
    async fn bulk(&self, ops: Vec<(Value, Option<Value>)>) -> Result<(), SearchError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.check_ours().await?;
        let mut body = String::new();
        for (action, source) in ops {
            body.push_str(&action.to_string());
            body.push('\n');
            if let Some(s) = source {
                body.push_str(&s.to_string());
                body.push('\n');
            }
            if body.len() >= BULK_BYTES {
                self.send_bulk(std::mem::take(&mut body)).await?;
            }
        }
        if !body.is_empty() {
            self.send_bulk(body).await?;
        }
        Ok(())
    }

    async fn send_bulk(&self, body: String) -> Result<(), SearchError> {
        let v = self
            .client
            .ok(
                reqwest::Method::POST,
                &format!("{}/_bulk", self.name),
                Some(Body::NdJson(body)),
                self.client.write_timeout,
            )
            .await?;
        if v["errors"].as_bool() != Some(true) {
            return Ok(());
        }
        let items = v["items"].as_array().cloned().unwrap_or_default();
        for item in items {
            let Some((op, result)) = item.as_object().and_then(|o| o.iter().next()) else {
                continue;
            };
            let status = result["status"].as_u64().unwrap_or(0);
            let expected =
                (200..300).contains(&status) || status == 409 || (op == "delete" && status == 404);
            if !expected {
                return Err(SearchError::Elastic(format!(
                    "_bulk {op}: HTTP {status}: {}",
                    reason(result)
                )));
            }
        }
        Ok(())
    }

    fn index_op(&self, d: &IndexDoc, version: u64) -> (Value, Option<Value>) {
        (
            json!({"index": {"_id": doc_id(&d.key), "version": version, "version_type": "external"}}),
            Some(self.source(d)),
        )
    }

    /// The query for one requirement on `field`.
    fn query(&self, req: &Requirement, field: &str, trigram: bool) -> Result<Value, SearchError> {
        Ok(match req {
            Requirement::True => json!({"match_all": {}}),
            Requirement::False => json!({"match_none": {}}),
            Requirement::Term(t) if trigram => json!({"term": {field: encode_trigram(t)}}),
            Requirement::Term(t) => json!({"term": {field: t}}),
            Requirement::Substring(s) => {
                let text = trigram_text(s);
                if text.is_empty() {
                    json!({"match_all": {}})
                } else {
                    json!({"match_phrase": {field: {"query": text, "slop": 0}}})
                }
            }
            Requirement::Prefix(_) if trigram => {
                return Err(SearchError::Unexpected("prefix requirement on trigrams"))
            }
            Requirement::Prefix(p) => json!({"prefix": {field: p}}),
            Requirement::And(parts) => json!({"bool": {"filter": parts
                .iter()
                .map(|p| self.query(p, field, trigram))
                .collect::<Result<Vec<_>, _>>()?}}),
            Requirement::Or(parts) => json!({"bool": {
                "should": parts
                    .iter()
                    .map(|p| self.query(p, field, trigram))
                    .collect::<Result<Vec<_>, _>>()?,
                "minimum_should_match": 1
            }}),
        })
    }

    async fn search(&self, parts: &[Part], limit: u64) -> Result<Option<Vec<String>>, SearchError> {
        let mut filters = Vec::with_capacity(parts.len());
        for (column, kind, req) in parts {
            if *column >= self.columns {
                return Err(SearchError::Unexpected("no such index field"));
            }
            let (field, trigram) = match kind {
                FieldKind::Trigram if self.trigrams => (format!("t{column}"), true),
                FieldKind::Lexeme(cfg) if self.lexemes && *cfg < FTS_CONFIGS.len() => {
                    (format!("l{column}_{cfg}"), false)
                }
                _ => return Err(SearchError::Unexpected("no such index field")),
            };
            filters.push(self.query(req, &field, trigram)?);
        }
        let query = json!({"bool": {"filter": filters}});
        // The server counts matches up to limit + 1 and no further: more means "too many",
        // decided by the first request.
        let track = limit.saturating_add(1).min(i32::MAX as u64);
        let page = track.min(PAGE);
        let path = format!("{}/_search", self.name);
        let mut keys: Vec<String> = Vec::new();
        let mut after: Option<Value> = None;
        let mut total: Option<u64> = None;
        loop {
            let mut body = json!({
                "size": page,
                "_source": false,
                "docvalue_fields": ["key"],
                "track_total_hits": track,
                "sort": [{"key": "asc"}],
                "query": query,
            });
            if let Some(a) = &after {
                body["search_after"] = a.clone();
                body["track_total_hits"] = json!(false);
            }
            let v = self
                .client
                .ok(
                    reqwest::Method::POST,
                    &path,
                    Some(Body::Json(body)),
                    self.client.search_timeout,
                )
                .await?;
            if total.is_none() {
                let t = v["hits"]["total"]["value"].as_u64().ok_or_else(|| {
                    SearchError::Elastic("_search: no hits.total in the answer".into())
                })?;
                if t > limit {
                    return Ok(None);
                }
                total = Some(t);
            }
            let hits = v["hits"]["hits"].as_array().cloned().unwrap_or_default();
            let n = hits.len() as u64;
            for h in &hits {
                let key = h["fields"]["key"][0]
                    .as_str()
                    .ok_or_else(|| SearchError::Elastic("_search: a hit without its key".into()))?;
                keys.push(key.to_string());
            }
            if n < page || keys.len() as u64 >= total.unwrap_or(0) {
                break;
            }
            after = hits.last().map(|h| h["sort"].clone());
            if after.as_ref().is_none_or(|a| !a.is_array()) {
                return Err(SearchError::Elastic(
                    "_search: a hit without sort values".into(),
                ));
            }
        }
        if keys.len() as u64 > limit {
            return Ok(None);
        }
        keys.sort();
        keys.dedup();
        Ok(Some(keys))
    }
}

impl SearchIndex for ElasticIndex {
    fn store(&self) -> &'static str {
        "elasticsearch"
    }

    fn location(&self) -> String {
        format!("{}/{}", self.client.base, self.name)
    }

    fn replace(
        &self,
        keys: Vec<String>,
        docs: Vec<IndexDoc>,
        order: WriteOrder,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let version = match order {
                WriteOrder::Feed(lsn) => lsn.max(BACKFILL_VERSION + 1),
                WriteOrder::Backfill => BACKFILL_VERSION,
            };
            let present: std::collections::HashSet<&str> =
                docs.iter().map(|d| d.key.as_str()).collect();
            let mut ops = Vec::with_capacity(keys.len() + docs.len());
            for k in keys.iter().filter(|k| !present.contains(k.as_str())) {
                ops.push((
                    json!({"delete": {"_id": doc_id(k), "version": version, "version_type": "external"}}),
                    None,
                ));
            }
            for d in &docs {
                ops.push(self.index_op(d, version));
            }
            self.bulk(ops).await
        })
    }

    fn add(&self, docs: Vec<IndexDoc>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let ops = docs
                .iter()
                .map(|d| self.index_op(d, BACKFILL_VERSION))
                .collect();
            self.bulk(ops).await
        })
    }

    fn clear(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // Deletes would leave versioned tombstones that refuse re-added documents.
            let progress = self.committed().await?.unwrap_or_default();
            self.recreate(&Progress {
                complete: false,
                after_key: None,
                backfilled_rows: 0,
                ..progress
            })
            .await
        })
    }

    fn commit<'a>(&'a self, progress: &'a Progress) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.check_ours().await?;
            self.client
                .ok(
                    reqwest::Method::POST,
                    &format!("{}/_refresh", self.name),
                    None,
                    self.client.write_timeout,
                )
                .await?;
            self.client
                .ok(
                    reqwest::Method::PUT,
                    &format!("{}/_mapping", self.name),
                    Some(Body::Json(json!({"_meta": {"pgpolyglot": progress}}))),
                    self.client.write_timeout,
                )
                .await?;
            self.expect(progress);
            self.refresh_count().await
        })
    }

    fn validate<'a>(&'a self, progress: &'a Progress) -> StoreFuture<'a, bool> {
        Box::pin(async move { Ok(self.committed().await?.as_ref() == Some(progress)) })
    }

    fn num_docs(&self) -> u64 {
        self.docs.load(Relaxed)
    }

    fn candidates<'a>(
        &'a self,
        parts: &'a [Part],
        limit: u64,
    ) -> StoreFuture<'a, Option<Vec<String>>> {
        Box::pin(self.search(parts, limit))
    }

    fn destroy(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.delete_index())
    }
}

/// The `_id` of a key's document: the key itself when short enough (and not looking like a
/// hashed id), else `#` and a 128-bit hash of it.
fn doc_id(key: &str) -> String {
    if key.len() <= MAX_PLAIN_ID && !key.starts_with('#') {
        key.to_string()
    } else {
        format!("#{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes()))
    }
}

/// A column's folded trigrams, encoded and separated by spaces (token `i` starts at char `i`).
pub fn trigram_text(text: &str) -> String {
    let chars: Vec<char> = text.chars().map(super::terms::fold).collect();
    let mut out = String::with_capacity(chars.len() * 4);
    for (i, w) in chars.windows(3).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        encode_chars(w, &mut out);
    }
    out
}

/// A trigram spelled with ASCII letters and digits only: they pass the `whitespace`
/// tokenizer whole, and no server normalizes them. ASCII letters and digits stand for
/// themselves; every other char is `_` and its code point in hex and `_` (`_` is never
/// itself, so the spelling is unambiguous).
pub fn encode_trigram(trigram: &str) -> String {
    let chars: Vec<char> = trigram.chars().collect();
    let mut out = String::with_capacity(12);
    encode_chars(&chars, &mut out);
    out
}

fn encode_chars(chars: &[char], out: &mut String) {
    for &c in chars {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            let _ = write!(out, "_{:x}_", u32::from(c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigrams_are_spelled_without_whitespace_or_ambiguity() {
        assert_eq!(trigram_text("Ab c"), "ab_20_ b_20_c");
        assert_eq!(trigram_text("ab"), "");
        assert_eq!(encode_trigram("a_b"), "a_5f_b");
        assert_eq!(encode_trigram("é\u{1F600}\t"), "_e9__1f600__9_");
        // Distinct trigrams never share a spelling.
        let samples = ["_5f", "a_b", "_5f_", "a b", "a\u{a0}b", "abc", "ab_"];
        let spelled: std::collections::HashSet<String> =
            samples.iter().map(|s| encode_trigram(s)).collect();
        assert_eq!(spelled.len(), samples.len());
        for s in &spelled {
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        }
    }

    #[test]
    fn long_keys_get_hashed_ids() {
        assert_eq!(doc_id("42"), "42");
        let long = "x".repeat(600);
        let id = doc_id(&long);
        assert!(id.starts_with('#') && id.len() == 33);
        assert_ne!(doc_id("#42"), "#42");
    }
}
