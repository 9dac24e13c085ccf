//! Exponential decay without rescanning: forward decay against one global epoch.
//!
//! A key's *score* at time `now` is the sum over its accesses of `2^(-(now - t_i) / h)`
//! (`h` the half-life): an access just now counts 1, one a half-life ago counts ½. Decaying
//! every counter on every tick would cost O(counters) per tick, so the aggregator stores
//! instead `stored = Σ 2^((t_i - epoch) / h)`, the same sum scaled by `2^((now - epoch) / h)`;
//! then `score(now) = stored · 2^(-(now - epoch) / h)`. An access adds a weight that grows
//! with time, nothing is touched between accesses, and because every stored value carries
//! the same scale factor, comparing stored values compares scores: the min-heaps of the
//! top-K sketch stay valid while everything decays.
//!
//! Weights grow by 2× per half-life, so after [`REBASE_EXPONENT`] half-lives the aggregator
//! *rebases*: it multiplies every stored value by `2^(-exponent)` once and moves the epoch
//! to now (once per 128 half-lives: about every two hours with the default 60 s). Uniform
//! scaling preserves every order, so no heap needs repair. Keeping stored values below
//! `2^128 · count` leaves f64 far from overflow.
//!
//! Time is always a parameter (`now`), never read here, so tests drive the clock.

use std::time::{Duration, Instant};

/// Weights are rebased once `now` is this many half-lives past the epoch.
pub(crate) const REBASE_EXPONENT: f64 = 128.0;

/// `score` decayed by `age`: `score · 2^(-age / half_life)`. A zero half-life means "no
/// memory": anything older than now counts nothing.
pub fn decayed(score: f64, age: Duration, half_life: Duration) -> f64 {
    let h = half_life.as_secs_f64();
    if h <= 0.0 {
        return if age.is_zero() { score } else { 0.0 };
    }
    score * (-age.as_secs_f64() / h).exp2()
}

/// The forward-decay clock shared by every decayed value of one aggregator.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DecayClock {
    epoch: Instant,
    half_life_secs: f64,
}

impl DecayClock {
    /// `half_life` must be positive (checked by `StatsConfig::validate`); a zero one is
    /// treated as one millisecond rather than dividing by zero.
    pub(crate) fn new(epoch: Instant, half_life: Duration) -> Self {
        DecayClock {
            epoch,
            half_life_secs: half_life.as_secs_f64().max(1e-3),
        }
    }

    /// Half-lives elapsed since the epoch (0 for a `now` before the epoch).
    fn exponent(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.epoch).as_secs_f64() / self.half_life_secs
    }

    /// The stored weight of one access at `now`.
    pub(crate) fn weight(&self, now: Instant) -> f64 {
        self.exponent(now).exp2()
    }

    /// When weights at `now` have grown past `2^REBASE_EXPONENT`, moves the epoch to `now`
    /// and returns the factor every stored value must be multiplied by.
    pub(crate) fn rebase(&mut self, now: Instant) -> Option<f64> {
        let e = self.exponent(now);
        if e < REBASE_EXPONENT {
            return None;
        }
        self.epoch = now;
        Some((-e).exp2())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(60);

    /// A stored value's score at `now` (the aggregator divides by its cached weight).
    impl DecayClock {
        fn score(&self, stored: f64, now: Instant) -> f64 {
            stored / self.weight(now)
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn one_half_life_halves() {
        assert!(close(decayed(8.0, H, H), 4.0));
        assert!(close(decayed(8.0, 3 * H, H), 1.0));
        assert!(close(decayed(8.0, Duration::ZERO, H), 8.0));
        assert_eq!(decayed(8.0, H, Duration::ZERO), 0.0);

        let t0 = Instant::now();
        let c = DecayClock::new(t0, H);
        // Ten accesses at t0: score 10 at t0, 5 one half-life later.
        let stored = 10.0 * c.weight(t0);
        assert!(close(c.score(stored, t0), 10.0));
        assert!(close(c.score(stored, t0 + H), 5.0));
        assert!(close(c.score(stored, t0 + 2 * H), 2.5));
    }

    #[test]
    fn order_is_preserved_and_recency_wins() {
        let t0 = Instant::now();
        let c = DecayClock::new(t0, H);
        // a: 10 accesses at t0; b: 6 accesses one half-life later.
        let a = 10.0 * c.weight(t0);
        let b = 6.0 * c.weight(t0 + H);
        // At t0 + H: a = 5, b = 6. Stored values compare the same way at any later time.
        assert!(close(c.score(a, t0 + H), 5.0));
        assert!(close(c.score(b, t0 + H), 6.0));
        for k in 1..10u32 {
            let now = t0 + H * k;
            assert!(c.score(b, now) > c.score(a, now));
        }
        assert!(b > a);
    }

    #[test]
    fn rebase_keeps_scores() {
        let t0 = Instant::now();
        let mut c = DecayClock::new(t0, Duration::from_secs(1));
        let stored = 3.0 * c.weight(t0 + Duration::from_secs(100));
        assert!(c.rebase(t0 + Duration::from_secs(100)).is_none());
        let later = t0 + Duration::from_secs(130);
        let before = c.score(stored, later);
        let factor = c.rebase(later).unwrap();
        let after = c.score(stored * factor, later);
        assert!(close(before, after), "{before} vs {after}");
        assert!(close(after, 3.0 / 2f64.powi(30)));
        // A clock before the epoch is clamped, never negative weights.
        assert_eq!(c.weight(t0), 1.0);
    }
}
