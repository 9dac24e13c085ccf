//! Latency histograms kept per time window: the current window and the previous complete one.
//!
//! Cumulative histograms would let one bad hour dominate a shape's p99 forever; a single
//! window would show nothing right after each roll-over. So every histogram lives in
//! windows of `StatsConfig::window` aligned to the aggregator's start, and readers see
//! the previous complete window *merged* with the current partial one: between one and two
//! windows of history, never an empty view at the instant a window rolls over.
//!
//! Rolling is lazy (on the next record, or by the aggregator's sweep when the global window
//! index advances) and allocation-aware: a histogram is allocated only for a route a shape
//! actually uses in a window, and an idle shape's histograms are freed after one idle window.
//!
//! Values are microseconds, recorded with 2 significant digits (≤ 1% error) into an
//! auto-resizing `Histogram<u32>` capped at one hour: about 4 KiB for latencies under 10 ms.

use hdrhistogram::Histogram;

pub(crate) type Hist = Histogram<u32>;

/// Latencies above this (one hour, in µs) are recorded as this.
pub(crate) const MAX_LATENCY_US: u64 = 3_600_000_000;

const SIGFIG: u8 = 2;

fn new_hist() -> Option<Box<Hist>> {
    Hist::new(SIGFIG).ok().map(Box::new)
}

/// Latency percentiles over the previous complete window plus the current one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Samples in the two windows.
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// One histogram's current and previous window.
#[derive(Debug, Default)]
pub(crate) struct Windowed {
    /// Window index of `cur`; `prev` is `index - 1`.
    index: u64,
    cur: Option<Box<Hist>>,
    prev: Option<Box<Hist>>,
}

impl Windowed {
    /// Records `value_us` in window `window` (a window index from the aggregator's clock).
    pub(crate) fn record(&mut self, window: u64, value_us: u64) {
        self.roll(window);
        if self.cur.is_none() {
            self.cur = new_hist();
        }
        if let Some(h) = &mut self.cur {
            let v = value_us.min(MAX_LATENCY_US);
            // `record` grows the histogram as needed (`saturating_record` would clamp to the
            // current range instead); it cannot fail below the one-hour cap.
            if h.record(v).is_err() {
                h.saturating_record(v);
            }
        }
    }

    /// Advances to window `window`. An earlier window (a clock that went backwards) is
    /// treated as the current one.
    pub(crate) fn roll(&mut self, window: u64) {
        if window <= self.index {
            return;
        }
        if window == self.index + 1 {
            std::mem::swap(&mut self.prev, &mut self.cur);
            // The new current window reuses the allocation of the one that fell out, but
            // only while the histogram is in use: idle for a whole window frees it.
            if self.prev.as_deref().is_some_and(|h| !h.is_empty()) {
                if let Some(h) = &mut self.cur {
                    h.reset();
                }
            } else {
                self.cur = None;
                self.prev = None;
            }
        } else {
            self.cur = None;
            self.prev = None;
        }
        self.index = window;
    }

    /// `(previous complete window, current window)` as seen from window `window`, without
    /// mutating (readers may look between sweeps).
    fn view(&self, window: u64) -> (Option<&Hist>, Option<&Hist>) {
        if window <= self.index {
            (self.prev.as_deref(), self.cur.as_deref())
        } else if window == self.index + 1 {
            (self.cur.as_deref(), None)
        } else {
            (None, None)
        }
    }

    /// Whether nothing is recorded in the two windows visible from `window`.
    pub(crate) fn is_empty_at(&self, window: u64) -> bool {
        let (p, c) = self.view(window);
        p.is_none_or(Hist::is_empty) && c.is_none_or(Hist::is_empty)
    }

    /// Percentiles over the two windows visible from `window`.
    pub(crate) fn summary(&self, window: u64) -> LatencySummary {
        let (prev, cur) = self.view(window);
        let prev = prev.filter(|h| !h.is_empty());
        let cur = cur.filter(|h| !h.is_empty());
        match (prev, cur) {
            (None, None) => LatencySummary::default(),
            (Some(h), None) | (None, Some(h)) => summarize(h),
            (Some(p), Some(c)) => {
                let mut merged = p.clone();
                match merged.add(c) {
                    Ok(()) => summarize(&merged),
                    // Cannot happen with auto-resizing histograms; the current window alone
                    // is still a truthful answer.
                    Err(_) => summarize(c),
                }
            }
        }
    }
}

fn summarize(h: &Hist) -> LatencySummary {
    LatencySummary {
        count: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: u64, expected: u64, pct: f64) -> bool {
        (actual as f64 - expected as f64).abs() <= expected as f64 * pct / 100.0
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut w = Windowed::default();
        // 1..=10_000 µs, each once, in a scrambled order.
        for i in 0..10_000u64 {
            w.record(0, (i * 7_919) % 10_000 + 1);
        }
        let s = w.summary(0);
        assert_eq!(s.count, 10_000);
        assert!(within(s.p50_us, 5_000, 1.0), "{s:?}");
        assert!(within(s.p99_us, 9_900, 1.0), "{s:?}");
        assert!(within(s.max_us, 10_000, 1.0), "{s:?}");
    }

    #[test]
    fn percentiles_of_a_bimodal_distribution() {
        // 90% fast (100 µs), 10% slow (50 ms): p50 fast, p99 slow.
        let mut w = Windowed::default();
        for i in 0..1000 {
            w.record(3, if i % 10 == 0 { 50_000 } else { 100 });
        }
        let s = w.summary(3);
        assert!(within(s.p50_us, 100, 1.0), "{s:?}");
        assert!(within(s.p99_us, 50_000, 1.0), "{s:?}");
        // Longer than an hour is capped, not an error.
        w.record(3, u64::MAX);
        assert!(within(w.summary(3).max_us, MAX_LATENCY_US, 1.0));
    }

    #[test]
    fn windows_roll_over() {
        let mut w = Windowed::default();
        for _ in 0..10 {
            w.record(0, 1_000);
        }
        // Window 1: the previous window is still visible, merged with the new one.
        assert_eq!(w.summary(1).count, 10);
        for _ in 0..5 {
            w.record(1, 2_000);
        }
        let s = w.summary(1);
        assert_eq!(s.count, 15);
        assert!(within(s.max_us, 2_000, 1.0));
        // Window 2: window 0 has fallen out, window 1 is the previous complete one.
        assert_eq!(w.summary(2).count, 5);
        w.roll(2);
        assert_eq!(w.summary(2).count, 5);
        assert!(within(w.summary(2).p50_us, 2_000, 1.0));
        // Window 3 with nothing recorded in 2: empty, and the allocations are gone.
        assert!(w.is_empty_at(4));
        w.roll(3);
        assert!(w.is_empty_at(3));
        w.roll(4);
        assert!(w.cur.is_none() && w.prev.is_none());
        // A jump of several windows forgets everything at once.
        w.record(5, 10);
        w.record(9, 20);
        assert_eq!(w.summary(9).count, 1);
        // A clock that went backwards records into the current window.
        w.record(8, 30);
        assert_eq!(w.summary(9).count, 2);
    }
}
