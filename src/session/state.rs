//! Per-session state the relay keeps: what the backend direction learns (transaction status,
//! server-reported settings, the backend pid) and what the frontend direction tracks
//! (prepared statements by name, each with its SQL and classification).

use crate::context::ProxyContext;
use crate::protocol::frames::read_cstr;
use crate::sql::{Classified, DiscardTarget, OtherCommand, SetCommand, StatementKind};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Written by the backend direction, read by the frontend direction and by admin views.
#[derive(Debug)]
pub struct SharedState {
    /// Last ReadyForQuery status: b'I' idle, b'T' in a transaction block, b'E' failed block.
    pub txn_status: AtomicU8,
    /// True while the session's client_encoding is UTF8, so statement text can be read as
    /// UTF-8. Any other encoding: statements are relayed unclassified.
    pub client_encoding_utf8: AtomicBool,
    pub backend_pid: AtomicU32,
    /// Every ParameterStatus the server reported, latest value per name.
    pub parameters: Mutex<HashMap<String, String>>,
}

impl Default for SharedState {
    fn default() -> Self {
        SharedState {
            txn_status: AtomicU8::new(b'I'),
            client_encoding_utf8: AtomicBool::new(false),
            backend_pid: AtomicU32::new(0),
            parameters: Mutex::new(HashMap::new()),
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
        }
        if let Ok(mut p) = self.parameters.lock() {
            p.insert(name, value);
        }
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
}

/// State only the frontend direction touches (no locks).
#[derive(Debug, Default)]
pub struct FrontendState {
    /// Protocol-level prepared statements by name; "" is the unnamed statement.
    pub prepared: HashMap<Box<[u8]>, PreparedStatement>,
    /// Classification of the last simple-protocol Query.
    pub last_query: Option<Classified>,
}

impl FrontendState {
    fn classify(
        &self,
        text: &[u8],
        ctx: &ProxyContext,
        shared: &SharedState,
    ) -> Option<(Arc<str>, Classified)> {
        if !shared.client_encoding_utf8.load(Relaxed) {
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

    /// Query: classify, and follow SQL-level DEALLOCATE / DISCARD, which also drop
    /// protocol-level prepared statements.
    pub fn on_query(&mut self, body: &[u8], ctx: &ProxyContext, shared: &SharedState) {
        let text = body.strip_suffix(&[0]).unwrap_or(body);
        let Some((_, classified)) = self.classify(text, ctx, shared) else {
            self.last_query = None;
            return;
        };
        match &classified.shape.kind {
            StatementKind::Set(SetCommand::Discard(DiscardTarget::All))
            | StatementKind::Other(OtherCommand::Deallocate { name: None }) => {
                self.prepared.clear()
            }
            StatementKind::Other(OtherCommand::Deallocate { name: Some(name) }) => {
                self.prepared.remove(name.as_bytes());
            }
            _ => {}
        }
        self.last_query = Some(classified);
    }

    /// Parse: remember name → SQL and its classification.
    pub fn on_parse(&mut self, body: &[u8], ctx: &ProxyContext, shared: &SharedState) {
        let Some((name, rest)) = read_cstr(body) else {
            return;
        };
        let Some((sql, _)) = read_cstr(rest) else {
            return;
        };
        if let Some((sql, classified)) = self.classify(sql, ctx, shared) {
            self.prepared
                .insert(name.into(), PreparedStatement { sql, classified });
        } else {
            self.prepared.remove(name);
        }
    }

    /// Close: forget a prepared statement ('S'); portals ('P') are not tracked.
    pub fn on_close(&mut self, body: &[u8]) {
        if let Some((&b'S', rest)) = body.split_first() {
            if let Some((name, _)) = read_cstr(rest) {
                self.prepared.remove(name);
            }
        }
    }
}
