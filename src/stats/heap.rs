//! An indexed binary min-heap of `f64` priorities over dense slot numbers.
//!
//! Every bounded structure in this module (the counters of one table's top-K sketch, the
//! tracked tables, the tracked query shapes) needs the same two operations: "raise the
//! priority of slot `s`" and "which slot has the smallest priority" (the one to replace when
//! full). A plain `BinaryHeap` cannot find an element to update, so this heap keeps each
//! slot's position; both operations are O(log n) and nothing is ever removed: a full
//! structure *reuses* its minimum slot for the newcomer.
//!
//! Priorities are forward-decayed weights (see `decay`): finite and non-negative. They are
//! compared with `f64::total_cmp`, so even a NaN could not corrupt the heap invariant.

/// Slot numbers are dense (`0..len`), assigned by the caller in push order.
#[derive(Debug, Default)]
pub(crate) struct MinHeap {
    /// Heap order: `entries[0]` has the smallest priority.
    entries: Vec<Entry>,
    /// `pos[slot]` is the slot's index in `entries`.
    pos: Vec<u32>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    prio: f64,
    slot: u32,
}

impl MinHeap {
    pub(crate) fn new() -> Self {
        MinHeap::default()
    }

    /// Adds the next slot (numbered `len()`) and returns its number.
    pub(crate) fn push(&mut self, prio: f64) -> u32 {
        let slot = self.pos.len() as u32;
        let at = self.entries.len();
        self.entries.push(Entry { prio, slot });
        self.pos.push(at as u32);
        self.sift_up(at);
        slot
    }

    /// The slot with the smallest priority.
    pub(crate) fn min(&self) -> Option<(u32, f64)> {
        self.entries.first().map(|e| (e.slot, e.prio))
    }

    /// The priority of `slot` (0 for a slot that does not exist).
    pub(crate) fn prio(&self, slot: u32) -> f64 {
        self.pos
            .get(slot as usize)
            .and_then(|&at| self.entries.get(at as usize))
            .map_or(0.0, |e| e.prio)
    }

    /// Sets the priority of an existing slot and restores heap order.
    pub(crate) fn set(&mut self, slot: u32, prio: f64) {
        let Some(&at) = self.pos.get(slot as usize) else {
            return;
        };
        let at = at as usize;
        let Some(e) = self.entries.get_mut(at) else {
            return;
        };
        let old = e.prio;
        e.prio = prio;
        if prio.total_cmp(&old).is_lt() {
            self.sift_up(at);
        } else {
            self.sift_down(at);
        }
    }

    /// Adds `delta` to the priority of an existing slot.
    pub(crate) fn add(&mut self, slot: u32, delta: f64) {
        let prio = self.prio(slot) + delta;
        self.set(slot, prio);
    }

    /// Multiplies every priority by `factor` (> 0): order, hence the heap, is unchanged.
    pub(crate) fn scale(&mut self, factor: f64) {
        for e in &mut self.entries {
            e.prio *= factor;
        }
    }

    /// Every `(slot, priority)`, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, f64)> + '_ {
        self.entries.iter().map(|e| (e.slot, e.prio))
    }

    /// Forgets every slot; keeps the allocations.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.pos.clear();
    }

    /// Moves the entry at `at` towards the root until its parent is not larger. The entry
    /// travels as a hole: each step moves one parent down and updates one position, and
    /// the entry is written once where it stops (a top-K sketch under uniform traffic sifts
    /// on nearly every access).
    fn sift_up(&mut self, mut at: usize) {
        let Some(&moving) = self.entries.get(at) else {
            return;
        };
        while at > 0 {
            let parent = (at - 1) / 2;
            let p = self.entries[parent];
            if !moving.prio.total_cmp(&p.prio).is_lt() {
                break;
            }
            self.place(at, p);
            at = parent;
        }
        self.place(at, moving);
    }

    /// Moves the entry at `at` towards the leaves until no child is smaller (as a hole,
    /// like [`MinHeap::sift_up`]).
    fn sift_down(&mut self, mut at: usize) {
        let n = self.entries.len();
        let Some(&moving) = self.entries.get(at) else {
            return;
        };
        loop {
            let left = 2 * at + 1;
            if left >= n {
                break;
            }
            let right = left + 1;
            let mut child = left;
            if right < n
                && self.entries[right]
                    .prio
                    .total_cmp(&self.entries[left].prio)
                    .is_lt()
            {
                child = right;
            }
            let c = self.entries[child];
            if !c.prio.total_cmp(&moving.prio).is_lt() {
                break;
            }
            self.place(at, c);
            at = child;
        }
        self.place(at, moving);
    }

    /// Puts `e` at heap index `at` (< len) and records its position. Indices here are the
    /// heap's own (`at < entries.len()`, `slot < pos.len()` since slots are only handed
    /// out by `push`), never input.
    fn place(&mut self, at: usize, e: Entry) {
        self.entries[at] = e;
        self.pos[e.slot as usize] = at as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn check(h: &MinHeap) {
        for (i, e) in h.entries.iter().enumerate() {
            assert_eq!(h.pos[e.slot as usize] as usize, i);
            if i > 0 {
                assert!(h.entries[(i - 1) / 2].prio <= e.prio);
            }
        }
    }

    #[test]
    fn keeps_order_under_random_updates() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut h = MinHeap::new();
        let mut shadow = Vec::new();
        for _ in 0..200 {
            let p: f64 = rng.gen_range(0.0..100.0);
            assert_eq!(h.push(p) as usize, shadow.len());
            shadow.push(p);
        }
        for _ in 0..5000 {
            let s = rng.gen_range(0..shadow.len());
            let p: f64 = rng.gen_range(0.0..200.0);
            if rng.gen_bool(0.5) {
                h.set(s as u32, p);
                shadow[s] = p;
            } else {
                h.add(s as u32, p);
                shadow[s] += p;
            }
            check(&h);
            let (slot, min) = h.min().unwrap();
            let true_min = shadow.iter().cloned().fold(f64::INFINITY, f64::min);
            assert_eq!(min, true_min);
            assert_eq!(shadow[slot as usize], true_min);
        }
        h.scale(0.5);
        check(&h);
        assert_eq!(h.prio(3), shadow[3] * 0.5);
        assert_eq!(h.prio(10_000), 0.0);
    }
}
