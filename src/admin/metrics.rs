//! The one registry of metric names. Every metric the proxy exports is a field here, with its
//! Prometheus name, type and meaning in [`Metrics::render_prometheus`]. Labels have low,
//! fixed cardinality (statement kinds, rejection reasons); never per-key or per-client labels.
//!
//! Counters are relaxed atomics: the hot path pays one uncontended-ish increment and never
//! takes a lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Statement classes counted per Query/Parse: the classifier's own kind names, so the
/// label set is defined once.
pub use crate::sql::KIND_NAMES as STATEMENT_KINDS;

#[derive(Default, Debug)]
pub struct Metrics {
    pub client_connections_total: AtomicU64,
    pub client_connections_active: AtomicU64,
    pub client_connections_rejected_too_many: AtomicU64,
    pub client_tls_handshakes: AtomicU64,
    pub client_protocol_errors: AtomicU64,
    pub upstream_connect_errors: AtomicU64,
    pub cancel_requests_forwarded: AtomicU64,
    pub cancel_requests_unknown: AtomicU64,
    /// Indexed like [`STATEMENT_KINDS`].
    pub statements: [AtomicU64; STATEMENT_KINDS.len()],
    /// Statements not classified because the session's client_encoding is not UTF8.
    pub statements_unclassified_encoding: AtomicU64,
    pub frontend_bytes: AtomicU64,
    pub backend_bytes: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn count_statement(&self, kind_index: usize) {
        if let Some(c) = self.statements.get(kind_index) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "pgpolyglot_client_connections_total",
            "Client connections accepted.",
            self.client_connections_total.load(Relaxed),
        );
        counter(
            "pgpolyglot_client_connections_rejected_total",
            "Client connections refused because max_client_conn was reached (SQLSTATE 53300).",
            self.client_connections_rejected_too_many.load(Relaxed),
        );
        counter(
            "pgpolyglot_client_tls_handshakes_total",
            "Client connections upgraded to TLS.",
            self.client_tls_handshakes.load(Relaxed),
        );
        counter(
            "pgpolyglot_client_protocol_errors_total",
            "Client connections closed for a protocol violation (bad length, oversized message, malformed startup).",
            self.client_protocol_errors.load(Relaxed),
        );
        counter(
            "pgpolyglot_upstream_connect_errors_total",
            "Failed attempts to connect to the upstream PostgreSQL.",
            self.upstream_connect_errors.load(Relaxed),
        );
        counter(
            "pgpolyglot_cancel_requests_forwarded_total",
            "CancelRequests matched to a session and sent upstream.",
            self.cancel_requests_forwarded.load(Relaxed),
        );
        counter(
            "pgpolyglot_cancel_requests_unknown_total",
            "CancelRequests whose key matched no open session (ignored, as Postgres does).",
            self.cancel_requests_unknown.load(Relaxed),
        );
        counter(
            "pgpolyglot_statements_unclassified_encoding_total",
            "Statements relayed without classification because client_encoding is not UTF8.",
            self.statements_unclassified_encoding.load(Relaxed),
        );
        counter(
            "pgpolyglot_frontend_bytes_total",
            "Bytes relayed from clients to the upstream.",
            self.frontend_bytes.load(Relaxed),
        );
        counter(
            "pgpolyglot_backend_bytes_total",
            "Bytes relayed from the upstream to clients.",
            self.backend_bytes.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP pgpolyglot_client_connections_active Client connections open now.\n# TYPE pgpolyglot_client_connections_active gauge\npgpolyglot_client_connections_active {}",
            self.client_connections_active.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP pgpolyglot_statements_total Statements (Query and Parse messages) by class.\n# TYPE pgpolyglot_statements_total counter"
        );
        for (kind, c) in STATEMENT_KINDS.iter().zip(self.statements.iter()) {
            let _ = writeln!(
                out,
                "pgpolyglot_statements_total{{kind=\"{kind}\"}} {}",
                c.load(Relaxed)
            );
        }
        out
    }
}

/// Decrements the active-connection gauge when a session ends, however it ends.
pub struct ActiveConnection<'a>(&'a Metrics);

impl<'a> ActiveConnection<'a> {
    pub fn new(m: &'a Metrics) -> Self {
        m.client_connections_total.fetch_add(1, Relaxed);
        m.client_connections_active.fetch_add(1, Relaxed);
        ActiveConnection(m)
    }
}

impl Drop for ActiveConnection<'_> {
    fn drop(&mut self) {
        self.0.client_connections_active.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_once_with_type() {
        let m = Metrics::default();
        m.count_statement(0);
        let _a = ActiveConnection::new(&m);
        let text = m.render_prometheus();
        assert!(text.contains("pgpolyglot_statements_total{kind=\"read\"} 1"));
        assert!(text.contains("pgpolyglot_client_connections_active 1"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
    }
}
