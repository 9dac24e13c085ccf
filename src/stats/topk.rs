//! Space-Saving top-K with decayed weights: the hot keys of one table in bounded memory.
//!
//! A table can have billions of distinct keys; the proxy only needs the few hundred hot ones
//! (cache candidates). Space-Saving (Metwally et al., 2005) keeps exactly `capacity`
//! counters. A tracked key's counter grows by each access's weight; an untracked key takes
//! over the counter with the smallest value `min`, starting at `min + weight` and recording
//! `error = min`. Hence a counter *overestimates* its key's true (decayed) weight by at most
//! its `error`, and any key whose true weight exceeds `total / capacity` is tracked.
//!
//! Weights are forward-decayed (see `decay`): the stored values are all scaled by the same
//! growing factor, so "smallest counter" is the least recently-and-frequently used key, and
//! the min-heap stays valid without ever touching idle counters.
//!
//! Memory: `capacity` counters of about 100 bytes plus the key text, allocated as keys
//! arrive (an idle table with three keys holds three).

use std::time::Instant;

use super::event::Access;
use super::hash::{hash_str, U64Map};
use super::heap::MinHeap;

/// One tracked key. The heap holds its (stored, forward-decayed) count.
#[derive(Debug)]
pub(crate) struct Counter {
    /// The key's text as Postgres would print it. A `String`, not a `Box<str>`: a key that
    /// takes over the counter reuses its buffer (under uniform traffic nearly every access
    /// is a takeover, and an allocation and a free per access showed in profiles).
    pub(crate) key: String,
    hash: u64,
    /// Stored-units overestimation bound: the minimum this counter inherited.
    pub(crate) error: f64,
    /// Exact accesses since this key (re)took the counter.
    pub(crate) reads: u64,
    pub(crate) writes: u64,
    pub(crate) last_seen: Instant,
}

/// What [`SpaceSaving::offer`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// The key was tracked; its counter grew.
    Hit,
    /// A free counter took the key.
    Inserted,
    /// The key replaced the smallest counter.
    Replaced,
    /// Not counted: a different key with the same 64-bit hash is tracked (or capacity 0).
    Untracked,
}

#[derive(Debug)]
pub(crate) struct SpaceSaving {
    capacity: usize,
    seed: u64,
    heap: MinHeap,
    /// Indexed by heap slot number.
    slots: Vec<Counter>,
    /// Key hash → slot.
    index: U64Map<u32>,
}

impl SpaceSaving {
    pub(crate) fn new(capacity: usize, seed: u64) -> Self {
        SpaceSaving {
            capacity,
            seed,
            heap: MinHeap::new(),
            slots: Vec::new(),
            index: U64Map::default(),
        }
    }

    /// Number of tracked keys; never more than the capacity.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Counts one access of `key` with (stored-units) `weight` at `now`.
    pub(crate) fn offer(&mut self, key: &str, weight: f64, access: Access, now: Instant) -> Offer {
        let hash = hash_str(key, self.seed);
        if let Some(&slot) = self.index.get(&hash) {
            let Some(c) = self.slots.get_mut(slot as usize) else {
                return Offer::Untracked;
            };
            if &*c.key != key {
                return Offer::Untracked;
            }
            count(c, access);
            c.last_seen = now;
            self.heap.add(slot, weight);
            return Offer::Hit;
        }
        if self.slots.len() < self.capacity {
            let mut fresh = Counter {
                key: key.into(),
                hash,
                error: 0.0,
                reads: 0,
                writes: 0,
                last_seen: now,
            };
            count(&mut fresh, access);
            let slot = self.heap.push(weight);
            self.slots.push(fresh);
            self.index.insert(hash, slot);
            return Offer::Inserted;
        }
        let Some((slot, min)) = self.heap.min() else {
            return Offer::Untracked;
        };
        let Some(c) = self.slots.get_mut(slot as usize) else {
            return Offer::Untracked;
        };
        self.index.remove(&c.hash);
        c.key.clear();
        c.key.push_str(key);
        c.hash = hash;
        c.error = min;
        c.reads = 0;
        c.writes = 0;
        c.last_seen = now;
        count(c, access);
        self.index.insert(hash, slot);
        self.heap.set(slot, min + weight);
        Offer::Replaced
    }

    /// Multiplies every stored value by `factor` (a decay rebase).
    pub(crate) fn scale(&mut self, factor: f64) {
        self.heap.scale(factor);
        for c in &mut self.slots {
            c.error *= factor;
        }
    }

    /// Forgets every key (the table's slot is being reused); keeps allocations small.
    pub(crate) fn clear(&mut self) {
        self.heap.clear();
        self.slots.clear();
        self.index.clear();
        self.slots.shrink_to(16);
        self.index.shrink_to(16);
    }

    /// The `limit` largest counters as `(counter, stored count)`, largest first.
    pub(crate) fn top(&self, limit: usize) -> Vec<(&Counter, f64)> {
        let mut all: Vec<(u32, f64)> = self.heap.iter().collect();
        let by_count_desc = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1);
        if limit < all.len() {
            if limit == 0 {
                return Vec::new();
            }
            all.select_nth_unstable_by(limit - 1, by_count_desc);
            all.truncate(limit);
        }
        all.sort_unstable_by(by_count_desc);
        all.into_iter()
            .filter_map(|(slot, n)| self.slots.get(slot as usize).map(|c| (c, n)))
            .collect()
    }
}

fn count(c: &mut Counter, access: Access) {
    match access {
        Access::Read => c.reads += 1,
        Access::Write => c.writes += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_while_under_capacity() {
        let now = Instant::now();
        let mut s = SpaceSaving::new(10, 1);
        for (k, n) in [("a", 5), ("b", 3), ("c", 7)] {
            for _ in 0..n {
                s.offer(k, 1.0, Access::Read, now);
            }
        }
        s.offer("b", 1.0, Access::Write, now);
        let top: Vec<_> = s.top(10).into_iter().map(|(c, n)| (&*c.key, n)).collect();
        assert_eq!(top, vec![("c", 7.0), ("a", 5.0), ("b", 4.0)]);
        let b = s.top(3)[2].0;
        assert_eq!((b.reads, b.writes, b.error), (3, 1, 0.0));
        assert_eq!(s.top(1).len(), 1);
        assert!(s.top(0).is_empty());
    }

    #[test]
    fn replaces_the_minimum_and_records_error() {
        let now = Instant::now();
        let mut s = SpaceSaving::new(2, 1);
        for _ in 0..5 {
            s.offer("a", 1.0, Access::Read, now);
        }
        s.offer("b", 1.0, Access::Read, now);
        s.offer("b", 1.0, Access::Read, now);
        assert_eq!(s.offer("c", 1.0, Access::Read, now), Offer::Replaced);
        assert_eq!(s.len(), 2);
        let top = s.top(2);
        assert_eq!(&*top[0].0.key, "a");
        assert_eq!((&*top[1].0.key, top[1].1, top[1].0.error), ("c", 3.0, 2.0));
        assert_eq!((top[1].0.reads, top[1].0.writes), (1, 0));
        // b is gone; offering it again evicts c (the minimum, 3).
        assert_eq!(s.offer("b", 1.0, Access::Read, now), Offer::Replaced);
        assert_eq!(s.top(2)[1].1, 4.0);
    }

    #[test]
    fn bounded_whatever_the_key_space() {
        let now = Instant::now();
        let mut s = SpaceSaving::new(100, 9);
        for i in 0..100_000 {
            s.offer(&i.to_string(), 1.0, Access::Read, now);
            assert!(s.len() <= 100);
        }
        assert_eq!(s.len(), 100);
        s.clear();
        assert_eq!(s.len(), 0);
        assert_eq!(s.offer("x", 1.0, Access::Read, now), Offer::Inserted);
    }

    #[test]
    fn capacity_zero_tracks_nothing() {
        let mut s = SpaceSaving::new(0, 1);
        assert_eq!(
            s.offer("a", 1.0, Access::Read, Instant::now()),
            Offer::Untracked
        );
        assert_eq!(s.len(), 0);
    }
}
