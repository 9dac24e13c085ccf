//! Totals per route over every statement, tracked or evicted shape alike: what the
//! dashboard's routing mix and per-route p50/p99 charts read.

use super::event::{Route, StatementEvent};
use super::snapshot::RouteStats;
use super::window::Windowed;

#[derive(Debug, Default)]
struct Totals {
    calls: u64,
    rows: u64,
    errors: u64,
    latency: Windowed,
}

#[derive(Debug, Default)]
pub(crate) struct RouteSet {
    /// Indexed by `Route::index`.
    totals: [Totals; 3],
}

impl RouteSet {
    pub(crate) fn record(&mut self, ev: &StatementEvent, window: u64) {
        if let Some(t) = self.totals.get_mut(ev.route.index()) {
            t.calls += 1;
            t.rows = t.rows.saturating_add(ev.rows);
            t.errors += u64::from(ev.error);
            t.latency.record(window, ev.latency_us);
        }
    }

    pub(crate) fn roll(&mut self, window: u64) {
        for t in &mut self.totals {
            t.latency.roll(window);
        }
    }

    /// One entry per route, in `Route::ALL` order, as seen from window `window`.
    pub(crate) fn stats(&self, window: u64) -> Vec<RouteStats> {
        Route::ALL
            .iter()
            .zip(&self.totals)
            .map(|(&route, t)| RouteStats {
                route,
                calls: t.calls,
                rows: t.rows,
                errors: t.errors,
                latency: t.latency.summary(window),
            })
            .collect()
    }
}
