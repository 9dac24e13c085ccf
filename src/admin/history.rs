//! The last ten minutes of the proxy's vital signs, one sample per second, for the
//! dashboard's charts (`/api/history`).
//!
//! Prometheus keeps long-term history for those who run one; the dashboard must work without
//! it, so the proxy keeps a short ring itself. A background task ([`run`]) reads the
//! cumulative counters every [`INTERVAL`] and stores what changed since the previous reading:
//! statements per second per route (deltas of the counters `/metrics` exports, so the
//! dashboard and Prometheus agree), the cache hit ratio of that second, and the latest
//! latency summaries.
//! Everything here is off the query path: sessions only ever bump the atomics it reads.

use crate::context::ProxyContext;
use crate::stats::Route;
use serde_json::{json, Value as Json};
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// How often [`run`] samples.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Samples kept: ten minutes at one per second. Bounds the memory (a few tens of KB) and the
/// size of `/api/history`.
pub const CAPACITY: usize = 600;

const ROUTES: usize = Route::ALL.len();

/// Latency of one route as the statistics snapshot reports it, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Cumulative counters and current gauges at one instant: what [`read`] takes from the
/// context, and what [`History::record`] turns into a [`Sample`] by comparing it with the
/// previous one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// Monotonic time, for the interval the deltas cover.
    pub at: Instant,
    /// Wall-clock time in Unix milliseconds, for the chart's axis.
    pub unix_ms: u64,
    /// Statements completed per route since start, indexed by [`Route::index`].
    pub statements: [u64; ROUTES],
    /// Per route; `None` when the route has no samples in the window or statistics are off.
    pub latency: [Option<Latency>; ROUTES],
    /// Statistics events dropped since start.
    pub dropped: u64,
    /// Client connections open now.
    pub connections: u64,
}

/// One route in one sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RouteSample {
    /// Statements per second over the sample's interval.
    pub rate: f64,
    pub latency: Option<Latency>,
}

/// One second of history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub unix_ms: u64,
    /// Indexed by [`Route::index`].
    pub routes: [RouteSample; ROUTES],
    /// Cache statements / all statements in the interval; `None` when there were none
    /// (0/0 is no ratio, and charting it as 0 would read as "every lookup missed").
    pub hit_ratio: Option<f64>,
    pub dropped: u64,
    pub connections: u64,
}

impl Sample {
    /// `{"t", "routes": {name: {"rate", "p50_ms", "p99_ms"}}, "hit_ratio", "dropped",
    /// "connections"}`; absent values are `null`.
    pub fn to_json(&self) -> Json {
        let mut routes = serde_json::Map::new();
        for route in Route::ALL {
            let r = &self.routes[route.index()];
            routes.insert(
                route.name().to_string(),
                json!({
                    "rate": finite(r.rate),
                    "p50_ms": r.latency.map(|l| l.p50_ms).and_then(finite),
                    "p99_ms": r.latency.map(|l| l.p99_ms).and_then(finite),
                }),
            );
        }
        json!({
            "t": self.unix_ms,
            "routes": routes,
            "hit_ratio": self.hit_ratio.and_then(finite),
            "dropped": self.dropped,
            "connections": self.connections,
        })
    }
}

/// JSON has no NaN or infinity; such a value is shown as a gap, not an error.
fn finite(f: f64) -> Option<f64> {
    f.is_finite().then_some(f)
}

#[derive(Debug, Default)]
struct Ring {
    /// The reading the next sample's deltas start from.
    last: Option<Reading>,
    samples: VecDeque<Sample>,
}

/// The ring of samples. Shared between the sampler task and the HTTP handlers; the lock is
/// held for a push or a copy, never across an await.
#[derive(Debug, Default)]
pub struct History {
    ring: Mutex<Ring>,
}

impl History {
    pub fn new() -> Arc<History> {
        Arc::new(History::default())
    }

    /// Adds the sample that `reading` and the previous reading describe. The first reading
    /// only sets the baseline (a rate needs two points). A reading not later than the
    /// previous one is ignored, so a rate never divides by zero.
    pub fn record(&self, reading: Reading) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let Some(prev) = ring.last else {
            ring.last = Some(reading);
            return;
        };
        let secs = reading.at.saturating_duration_since(prev.at).as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let mut routes = [RouteSample::default(); ROUTES];
        let mut total = 0u64;
        for (i, r) in routes.iter_mut().enumerate() {
            // Counters only grow; saturate anyway so a surprise can't wrap to 2^64.
            let delta = reading.statements[i].saturating_sub(prev.statements[i]);
            total = total.saturating_add(delta);
            r.rate = delta as f64 / secs;
            r.latency = reading.latency[i];
        }
        let cache = reading.statements[Route::Cache.index()]
            .saturating_sub(prev.statements[Route::Cache.index()]);
        let hit_ratio = (total > 0).then(|| cache as f64 / total as f64);
        if ring.samples.len() == CAPACITY {
            ring.samples.pop_front();
        }
        ring.samples.push_back(Sample {
            unix_ms: reading.unix_ms,
            routes,
            hit_ratio,
            dropped: reading.dropped,
            connections: reading.connections,
        });
        ring.last = Some(reading);
    }

    /// The samples held, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.samples.iter().copied().collect()
    }

    /// The body of `/api/history`: `{"interval_s": 1, "samples": [...]}`, oldest first.
    pub fn to_json(&self) -> Json {
        let samples: Vec<Json> = self.samples().iter().map(Sample::to_json).collect();
        json!({
            "interval_s": INTERVAL.as_secs(),
            "samples": samples,
        })
    }
}

/// Takes a [`Reading`] from the context: the route counters and connection gauge from the
/// metric registry, latency from the latest statistics snapshot.
pub fn read(ctx: &ProxyContext) -> Reading {
    let snapshot = ctx.stats_view.as_ref().map(|h| h.snapshot());
    let mut statements = [0u64; ROUTES];
    let mut latency = [None; ROUTES];
    for route in Route::ALL {
        let i = route.index();
        statements[i] = ctx.metrics.routes[i].statements.load(Relaxed);
        latency[i] = snapshot
            .as_ref()
            .and_then(|s| s.routes.iter().find(|r| r.route == route))
            .filter(|r| r.latency.count > 0)
            .map(|r| Latency {
                p50_ms: r.latency.p50_us as f64 / 1000.0,
                p99_ms: r.latency.p99_us as f64 / 1000.0,
            });
    }
    Reading {
        at: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        statements,
        latency,
        dropped: ctx.stats_view.as_ref().map_or(0, |h| h.dropped()),
        connections: ctx.metrics.client_connections_active.load(Relaxed),
    }
}

/// The sampler: records a reading every [`INTERVAL`] until `shutdown` turns true or its
/// sender is dropped.
pub async fn run(
    history: Arc<History>,
    ctx: Arc<ProxyContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(INTERVAL);
    // After a stall, one sample covering the longer interval (rates stay per second)
    // rather than a burst of samples a few microseconds apart.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    if *shutdown.borrow() {
        return;
    }
    loop {
        tokio::select! {
            _ = tick.tick() => history.record(read(&ctx)),
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(base: Instant, secs: f64, statements: [u64; ROUTES]) -> Reading {
        Reading {
            at: base + Duration::from_secs_f64(secs),
            unix_ms: 1_700_000_000_000 + (secs * 1000.0) as u64,
            statements,
            latency: [None; ROUTES],
            dropped: 0,
            connections: 0,
        }
    }

    #[test]
    fn first_reading_is_only_a_baseline() {
        let h = History::default();
        h.record(reading(Instant::now(), 0.0, [500, 0, 0]));
        assert!(h.samples().is_empty());
        assert_eq!(h.to_json(), json!({"interval_s": 1, "samples": []}));
    }

    #[test]
    fn rates_are_counter_deltas_per_second() {
        let h = History::default();
        let base = Instant::now();
        h.record(reading(base, 0.0, [1_000, 10, 0]));
        h.record(reading(base, 1.0, [1_100, 40, 0]));
        h.record(reading(base, 3.0, [1_300, 40, 5]));
        let s = h.samples();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].routes[0].rate, 100.0);
        assert_eq!(s[0].routes[1].rate, 30.0);
        assert_eq!(s[0].routes[2].rate, 0.0);
        assert_eq!(s[0].hit_ratio, Some(30.0 / 130.0));
        // Two seconds: per-second rates, ratio over the whole interval.
        assert_eq!(s[1].routes[0].rate, 100.0);
        assert_eq!(s[1].routes[2].rate, 2.5);
        assert_eq!(s[1].hit_ratio, Some(0.0));
        assert_eq!(s[1].unix_ms, 1_700_000_003_000);
    }

    #[test]
    fn no_statements_means_no_ratio_and_no_latency() {
        let h = History::default();
        let base = Instant::now();
        h.record(reading(base, 0.0, [7, 7, 7]));
        h.record(reading(base, 1.0, [7, 7, 7]));
        let s = h.samples();
        assert_eq!(s[0].hit_ratio, None);
        let j = h.to_json();
        let sample = &j["samples"][0];
        assert_eq!(sample["hit_ratio"], Json::Null);
        assert_eq!(sample["routes"]["postgres"]["rate"], json!(0.0));
        assert_eq!(sample["routes"]["postgres"]["p50_ms"], Json::Null);
        assert_eq!(sample["routes"]["search"]["p99_ms"], Json::Null);
        assert_eq!(sample["t"], json!(1_700_000_001_000u64));
    }

    #[test]
    fn latency_and_gauges_are_passed_through() {
        let h = History::default();
        let base = Instant::now();
        h.record(reading(base, 0.0, [0; ROUTES]));
        let mut r = reading(base, 1.0, [10, 0, 0]);
        r.latency[0] = Some(Latency {
            p50_ms: 0.25,
            p99_ms: 4.0,
        });
        r.dropped = 3;
        r.connections = 2;
        h.record(r);
        let sample = &h.to_json()["samples"][0];
        assert_eq!(sample["routes"]["postgres"]["p50_ms"], json!(0.25));
        assert_eq!(sample["routes"]["postgres"]["p99_ms"], json!(4.0));
        assert_eq!(sample["routes"]["cache"]["p50_ms"], Json::Null);
        assert_eq!(sample["dropped"], json!(3));
        assert_eq!(sample["connections"], json!(2));
    }

    #[test]
    fn stale_or_repeated_readings_are_ignored() {
        let h = History::default();
        let base = Instant::now() + Duration::from_secs(10);
        h.record(reading(base, 0.0, [0; ROUTES]));
        h.record(reading(base, 0.0, [50, 0, 0]));
        let mut earlier = reading(base, 0.0, [60, 0, 0]);
        earlier.at = base - Duration::from_secs(1);
        h.record(earlier);
        assert!(h.samples().is_empty());
        // The baseline is still the first reading.
        h.record(reading(base, 1.0, [80, 0, 0]));
        assert_eq!(h.samples()[0].routes[0].rate, 80.0);
    }

    #[test]
    fn counters_going_backwards_do_not_wrap() {
        let h = History::default();
        let base = Instant::now();
        h.record(reading(base, 0.0, [100, 0, 0]));
        h.record(reading(base, 1.0, [50, 0, 0]));
        assert_eq!(h.samples()[0].routes[0].rate, 0.0);
        assert_eq!(h.samples()[0].hit_ratio, None);
    }

    #[test]
    fn ring_keeps_the_newest_capacity_samples() {
        let h = History::default();
        let base = Instant::now();
        for i in 0..=(CAPACITY + 100) {
            h.record(reading(base, i as f64, [i as u64 * 2, 0, 0]));
        }
        let s = h.samples();
        assert_eq!(s.len(), CAPACITY);
        assert_eq!(s[0].unix_ms, 1_700_000_000_000 + 101_000);
        assert_eq!(
            s[CAPACITY - 1].unix_ms,
            1_700_000_000_000 + (CAPACITY as u64 + 100) * 1000
        );
        assert!(s.iter().all(|x| x.routes[0].rate == 2.0));
        assert_eq!(h.to_json()["samples"].as_array().map(Vec::len), Some(600));
    }

    #[test]
    fn non_finite_values_become_null() {
        assert_eq!(finite(f64::NAN), None);
        assert_eq!(finite(f64::INFINITY), None);
        assert_eq!(finite(1.5), Some(1.5));
    }
}
