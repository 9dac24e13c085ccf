//! Whether the table descriptions may be served from, and the race it must not lose: DDL
//! through the proxy distrusts them twice (when sent, and when its transaction has
//! committed), and a reload that was already reading the catalog before the second time
//! may have read the table as it was before the commit. Such a reload must not make the
//! descriptions trusted again; only one that started after the last distrust may.
//!
//! The flag and a count of distrusts share one atomic word, so "trust, unless distrusted
//! since generation g" is a single compare-and-swap: a distrust between the check and the
//! store cannot be lost.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;

/// Bit 0: trusted. Bits 1..: how many times the descriptions were distrusted.
#[derive(Debug, Default)]
pub struct SchemaTrust(AtomicU64);

/// What a reload read before it started: pass it back to [`SchemaTrust::trust_if_unchanged`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(u64);

impl SchemaTrust {
    pub fn is_trusted(&self) -> bool {
        self.0.load(SeqCst) & 1 == 1
    }

    /// Stops serving until a reload that starts after this call completes; returns whether
    /// the descriptions were trusted until now.
    pub fn distrust(&self) -> bool {
        let before = self
            .0
            .fetch_update(SeqCst, SeqCst, |w| Some(((w >> 1) + 1) << 1))
            .unwrap_or_else(|w| w);
        before & 1 == 1
    }

    /// Call before reading the catalog.
    pub fn generation(&self) -> Generation {
        Generation(self.0.load(SeqCst) >> 1)
    }

    /// Marks the descriptions trusted unless [`Self::distrust`] was called since `seen` was
    /// taken; returns whether they are trusted now.
    pub fn trust_if_unchanged(&self, seen: Generation) -> bool {
        let untrusted = seen.0 << 1;
        match self
            .0
            .compare_exchange(untrusted, untrusted | 1, SeqCst, SeqCst)
        {
            Ok(_) => true,
            Err(now) => now == (untrusted | 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_untrusted_and_a_reload_trusts() {
        let t = SchemaTrust::default();
        assert!(!t.is_trusted());
        let g = t.generation();
        assert!(t.trust_if_unchanged(g));
        assert!(t.is_trusted());
        // Trusting again with the same generation is a no-op that still reports trust.
        assert!(t.trust_if_unchanged(g));
    }

    #[test]
    fn a_reload_that_started_before_a_distrust_does_not_trust() {
        let t = SchemaTrust::default();
        assert!(t.trust_if_unchanged(t.generation()));
        // DDL sent: distrusted, a reload starts and reads the catalog...
        assert!(t.distrust());
        let reload = t.generation();
        // ...the DDL commits while it runs: distrusted again (it was not trusted).
        assert!(!t.distrust());
        // The reload read the old table: it must not trust.
        assert!(!t.trust_if_unchanged(reload));
        assert!(!t.is_trusted());
        // The next reload started after the commit: it may.
        let next = t.generation();
        assert!(t.trust_if_unchanged(next));
        assert!(t.is_trusted());
    }

    #[test]
    fn an_old_generation_cannot_trust_after_a_newer_reload_did() {
        let t = SchemaTrust::default();
        let old = t.generation();
        t.distrust();
        assert!(t.trust_if_unchanged(t.generation()));
        assert!(!t.trust_if_unchanged(old));
        assert!(
            t.is_trusted(),
            "a stale generation leaves the current trust alone"
        );
    }
}
