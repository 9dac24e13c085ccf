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
    cache_metrics(ctx, &mut out);
    super::search::metrics(ctx, &mut out);
    out
}

/// The cache store and the change feed that keeps it fresh.
fn cache_metrics(ctx: &ProxyContext, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let cache = &ctx.cache;
    let c = &cache.counters;
    let t = &cache.store.totals;
    let mut line = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    line(
        "pgpolyglot_cache_entries",
        "gauge",
        "Row images held in the in-process cache (one per key and output profile).",
        t.entries.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_bytes",
        "gauge",
        "Bytes held in the in-process cache (values in both formats, keys, overhead).",
        t.bytes.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_hits_total",
        "counter",
        "Statements answered from the cache.",
        c.hits.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_misses_total",
        "counter",
        "Cache candidates whose key had no image for the session's profile.",
        c.misses.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_coalesced_total",
        "counter",
        "Misses answered from a fetch shared with other sessions' misses (coalesce_misses).",
        c.coalesced.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_coalesced_fetches_total",
        "counter",
        "Fetches of missed keys made for coalesce_misses (one per statement sent; a round sends one per table, profile and 256 keys).",
        c.coalesced_fetches.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_coalesce_errors_total",
        "counter",
        "Fetches of missed keys that failed (their statements went to Postgres).",
        c.coalesce_errors.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_fill_batches_total",
        "counter",
        "Batched reads the migrator made.",
        c.fill_batches.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_fill_errors_total",
        "counter",
        "Migrator reads that failed (nothing stored).",
        c.fill_errors.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_fills_dropped_stale_total",
        "counter",
        "Fetched rows dropped because a change they may not reflect was applied meanwhile.",
        t.fills_dropped_stale.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_fills_dropped_budget_total",
        "counter",
        "Fetched rows dropped because the policy's max_bytes was reached.",
        t.fills_dropped_budget.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_feed_images_total",
        "counter",
        "Row images written from the change feed's new rows, in place of the ones the change removed.",
        t.feed_images.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_invalidations_total",
        "counter",
        "Row images removed by changes, writes through the proxy and flushes.",
        t.invalidated.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_flushes_total",
        "counter",
        "Whole-table or whole-cache flushes (DDL, schema changes, feed resets).",
        t.flushes.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_fences_total",
        "counter",
        "Freshness fences taken for sessions that wrote.",
        c.fences.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_cache_access_denied_total",
        "counter",
        "Cache candidates refused because the role may not read the table.",
        c.access_denied.load(Relaxed) as f64,
    );
    if let Some(l2) = cache.l2.as_ref() {
        let c = &l2.counters;
        line(
            "pgpolyglot_redis_usable",
            "gauge",
            "1 while the Redis tier is validated and its circuit breaker closed.",
            if l2.usable() { 1.0 } else { 0.0 },
        );
        line(
            "pgpolyglot_redis_hits_total",
            "counter",
            "Images read from Redis.",
            c.hits.load(Relaxed) as f64,
        );
        line(
            "pgpolyglot_redis_misses_total",
            "counter",
            "Redis lookups that found no image (or failed).",
            c.misses.load(Relaxed) as f64,
        );
        line(
            "pgpolyglot_redis_refused_total",
            "counter",
            "Images found in Redis but older than a change this proxy applied (not served).",
            c.refused.load(Relaxed) as f64,
        );
        line(
            "pgpolyglot_redis_puts_total",
            "counter",
            "Images stored in Redis.",
            c.puts.load(Relaxed) as f64,
        );
        line(
            "pgpolyglot_redis_invalidations_total",
            "counter",
            "Keys invalidated in Redis.",
            c.invalidations.load(Relaxed) as f64,
        );
        line(
            "pgpolyglot_redis_errors_total",
            "counter",
            "Redis calls that failed or timed out (Postgres answered).",
            c.errors.load(Relaxed) as f64,
        );
        line(
            "pgpolyglot_redis_breaker_opened_total",
            "counter",
            "Times the circuit breaker opened.",
            c.breaker_opened.load(Relaxed) as f64,
        );
        line("pgpolyglot_redis_epoch_changes_total", "counter", "Times every Redis image was abandoned (restart, lost invalidation, table-wide change).", c.epoch_changes.load(Relaxed) as f64);
    }
    let Some(feed) = cache.feed() else {
        return;
    };
    let h = feed.health();
    let st = feed.status();
    line(
        "pgpolyglot_feed_streaming",
        "gauge",
        "1 while the change feed streams.",
        if h.state == crate::cdc::FeedState::Streaming {
            1.0
        } else {
            0.0
        },
    );
    line(
        "pgpolyglot_feed_applied_lsn",
        "gauge",
        "WAL position up to which every change is applied to the stores.",
        h.applied_lsn.0 as f64,
    );
    line(
        "pgpolyglot_feed_lag_bytes",
        "gauge",
        "WAL the walsender has read that the stores have not applied.",
        st.lag_bytes as f64,
    );
    line(
        "pgpolyglot_feed_lag_ms",
        "gauge",
        "Age of the oldest received, unapplied transaction (0 when caught up).",
        h.lag_ms as f64,
    );
    line(
        "pgpolyglot_feed_silence_ms",
        "gauge",
        "Milliseconds since the server last spoke on the replication connection.",
        h.silence_ms.unwrap_or(0) as f64,
    );
    line(
        "pgpolyglot_feed_transactions_total",
        "counter",
        "Transactions the cache applied from the feed.",
        c.feed_transactions.load(Relaxed) as f64,
    );
    line(
        "pgpolyglot_feed_resets_total",
        "counter",
        "Times the feed lost continuity and the stores were flushed.",
        c.feed_resets.load(Relaxed) as f64,
    );
}
