//! `/metrics`: the metric registry ([`super::metrics::Metrics`]) plus gauges read from the
//! statistics snapshot, the policy store and the session list at scrape time.

use crate::context::ProxyContext;
use std::fmt::Write;

pub fn render(ctx: &ProxyContext) -> String {
    let mut out = ctx.metrics.render_prometheus();
    let up = !ctx
        .metrics
        .upstream_last_connect_failed
        .load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP pgpolyglot_store_up 1 when the store answered its latest use (postgres: the latest upstream connect).\n# TYPE pgpolyglot_store_up gauge\npgpolyglot_store_up{{store=\"postgres\"}} {}",
        u8::from(up)
    );
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    let policies = ctx.policies.current();
    gauge(
        "pgpolyglot_policies_loaded",
        "Placement policies in force.",
        policies.policies.len() as f64,
    );
    gauge(
        "pgpolyglot_policy_generation",
        "Generation of the policy set in force (1 at start-up, +1 per successful reload).",
        policies.generation as f64,
    );
    gauge(
        "pgpolyglot_stats_enabled",
        "1 when access statistics are recorded.",
        if ctx.stats.is_enabled() { 1.0 } else { 0.0 },
    );
    let snapshot = ctx.stats_view.as_ref().map(|h| h.snapshot());
    let counters = snapshot.as_ref().map(|s| s.counters).unwrap_or_default();
    gauge(
        "pgpolyglot_stats_tables_tracked",
        "Tables with a hot-key sketch.",
        counters.tables as f64,
    );
    gauge(
        "pgpolyglot_stats_shapes_tracked",
        "Query shapes tracked.",
        counters.shapes as f64,
    );
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    counter(
        "pgpolyglot_stats_events_total",
        "Statistics events applied by the aggregator.",
        counters.events,
    );
    counter(
        "pgpolyglot_stats_dropped_total",
        "Statistics events dropped because the queue was full (queries never wait for statistics).",
        ctx.stats_view.as_ref().map_or(0, |h| h.dropped()),
    );
    out
}
