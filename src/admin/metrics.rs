//! The one registry of metric names. Every metric the proxy exports is a field here, with its
//! Prometheus name, type and meaning in [`Metrics::render_prometheus`]. Labels have low,
//! fixed cardinality (statement kinds, rejection reasons); never per-key or per-client labels.
//!
//! Counters are relaxed atomics: the hot path pays one uncontended-ish increment and never
//! takes a lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Statement classes counted per Query/Parse: the classifier's own kind names, so the
/// label set is defined once.
pub use crate::sql::KIND_NAMES as STATEMENT_KINDS;

/// Upper bounds (µs) of the per-route latency histogram buckets (`le` labels, in seconds).
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Per-route statement counters and a Prometheus histogram of latency (Query or Execute
/// received → its CommandComplete/ErrorResponse relayed).
#[derive(Default, Debug)]
pub struct RouteMetrics {
    pub statements: AtomicU64,
    pub errors: AtomicU64,
    pub rows: AtomicU64,
    /// Non-cumulative counts per bucket; the last one is `+Inf`.
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    pub latency_sum_us: AtomicU64,
}

impl RouteMetrics {
    pub fn observe(&self, latency_us: u64, rows: u64, error: bool) {
        self.statements.fetch_add(1, Relaxed);
        if error {
            self.errors.fetch_add(1, Relaxed);
        }
        if rows > 0 {
            self.rows.fetch_add(rows, Relaxed);
        }
        let i = LATENCY_BUCKETS_US.partition_point(|&b| b < latency_us);
        self.latency_buckets[i].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(latency_us, Relaxed);
    }
}

#[derive(Default, Debug)]
pub struct Metrics {
    pub client_connections_total: AtomicU64,
    pub client_connections_active: AtomicU64,
    pub client_connections_rejected_too_many: AtomicU64,
    pub client_tls_handshakes: AtomicU64,
    pub client_protocol_errors: AtomicU64,
    pub upstream_connect_errors: AtomicU64,
    /// Whether the latest upstream connection attempt failed (for `SHOW STORES`).
    pub upstream_last_connect_failed: AtomicBool,
    pub cancel_requests_forwarded: AtomicU64,
    pub cancel_requests_unknown: AtomicU64,
    /// Indexed like [`STATEMENT_KINDS`].
    pub statements: [AtomicU64; STATEMENT_KINDS.len()],
    /// Statements not classified because the session's client_encoding is not UTF8.
    pub statements_unclassified_encoding: AtomicU64,
    pub frontend_bytes: AtomicU64,
    pub backend_bytes: AtomicU64,
    /// Indexed by `stats::Route::index`.
    pub routes: [RouteMetrics; 3],
    /// Why statements were routed where they were, indexed by `router::Reason::index`.
    pub route_reasons: [AtomicU64; crate::router::Reason::ALL.len()],
    pub admin_commands: AtomicU64,
    pub policy_reloads: AtomicU64,
    pub policy_reload_failures: AtomicU64,
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
        self.render_routes(&mut out);
        out
    }

    fn render_routes(&self, out: &mut String) {
        use crate::stats::Route;
        let family =
            |out: &mut String, name: &str, help: &str, get: &dyn Fn(&RouteMetrics) -> u64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for route in Route::ALL {
                    let _ = writeln!(
                        out,
                        "{name}{{route=\"{}\"}} {}",
                        route.name(),
                        get(&self.routes[route.index()])
                    );
                }
            };
        family(
            out,
            "pgpolyglot_route_statements_total",
            "Statements completed, by the route that served them.",
            &|r| r.statements.load(Relaxed),
        );
        family(
            out,
            "pgpolyglot_route_errors_total",
            "Statements that ended in an ErrorResponse, by route.",
            &|r| r.errors.load(Relaxed),
        );
        family(
            out,
            "pgpolyglot_route_rows_total",
            "Rows returned or affected (from CommandComplete tags), by route.",
            &|r| r.rows.load(Relaxed),
        );
        let name = "pgpolyglot_route_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Statement latency by route: Query/Execute received to its completion relayed.\n# TYPE {name} histogram"
        );
        for route in Route::ALL {
            let r = &self.routes[route.index()];
            let mut cumulative = 0u64;
            for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
                cumulative += r.latency_buckets[i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{}\",le=\"{}\"}} {cumulative}",
                    route.name(),
                    *bound as f64 / 1e6
                );
            }
            cumulative += r.latency_buckets[LATENCY_BUCKETS_US.len()].load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{}\",le=\"+Inf\"}} {cumulative}",
                route.name()
            );
            let _ = writeln!(
                out,
                "{name}_sum{{route=\"{}\"}} {}",
                route.name(),
                r.latency_sum_us.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "{name}_count{{route=\"{}\"}} {cumulative}",
                route.name()
            );
        }
        let name = "pgpolyglot_route_decisions_total";
        let _ = writeln!(
            out,
            "# HELP {name} Routing decisions by route and reason (see EXPLAIN ROUTE).\n# TYPE {name} counter"
        );
        for reason in crate::router::Reason::ALL {
            let _ = writeln!(
                out,
                "{name}{{route=\"{}\",reason=\"{}\"}} {}",
                reason.route().name(),
                reason.label(),
                self.route_reasons[reason.index()].load(Relaxed)
            );
        }
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "pgpolyglot_admin_commands_total",
            "Commands run on the admin console.",
            self.admin_commands.load(Relaxed),
        );
        counter(
            "pgpolyglot_policy_reloads_total",
            "Policy sets loaded by a reload (SIGHUP, file change, RELOAD).",
            self.policy_reloads.load(Relaxed),
        );
        counter(
            "pgpolyglot_policy_reload_failures_total",
            "Reloads rejected because the new policy set did not validate (the old one kept running).",
            self.policy_reload_failures.load(Relaxed),
        );
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
