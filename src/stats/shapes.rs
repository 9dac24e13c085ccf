//! Per query shape: calls, rows, errors and windowed latency histograms per route, for at
//! most `max_shapes` shapes.
//!
//! A shape is what the classifier fingerprints (literals and parameters stripped), so an
//! application has a few hundred; generated SQL (`IN` lists of every length, ad-hoc
//! queries) can make that unbounded. Shapes compete like tables do: a forward-decayed call
//! count in a min-heap, the least used slot reused for a newcomer (counted in `evicted`).
//! The normalized text is copied once per admitted shape, capped at [`MAX_SHAPE_TEXT`]
//! bytes.

use std::sync::Arc;
use std::time::Instant;

use super::event::{Route, StatementEvent};
use super::hash::U64Map;
use super::heap::MinHeap;
use super::window::{LatencySummary, Windowed};

/// Stored normalized text is cut at this many bytes (and marked with `…`).
pub const MAX_SHAPE_TEXT: usize = 2048;

#[derive(Debug)]
pub(crate) struct ShapeSlot {
    pub(crate) fingerprint: u64,
    /// The normalized text, possibly cut (see [`MAX_SHAPE_TEXT`]).
    pub(crate) normalized: Arc<str>,
    /// Bytes of `normalized` that are the original text (before any `…`).
    prefix_len: usize,
    /// Length of the full normalized text.
    text_len: usize,
    pub(crate) kind: &'static str,
    /// Cumulative since the shape was (re)admitted.
    pub(crate) calls: u64,
    pub(crate) rows: u64,
    pub(crate) errors: u64,
    pub(crate) route_calls: [u64; 3],
    pub(crate) first_seen: Instant,
    pub(crate) last_seen: Instant,
    /// Indexed by `Route::index`.
    pub(crate) latency: [Windowed; 3],
}

impl ShapeSlot {
    fn matches(&self, normalized: &str) -> bool {
        normalized.len() == self.text_len
            && normalized.as_bytes().get(..self.prefix_len)
                == self.normalized.as_bytes().get(..self.prefix_len)
    }

    /// Latency per route over the windows visible from `window`, for routes with samples.
    pub(crate) fn routes(&self, window: u64) -> Vec<(Route, LatencySummary)> {
        Route::ALL
            .iter()
            .zip(&self.latency)
            .filter(|(_, w)| !w.is_empty_at(window))
            .map(|(&r, w)| (r, w.summary(window)))
            .collect()
    }
}

#[derive(Debug)]
pub(crate) struct ShapeSet {
    max_shapes: usize,
    /// Priority: forward-decayed calls.
    heap: MinHeap,
    slots: Vec<ShapeSlot>,
    /// Fingerprint → slot.
    index: U64Map<u32>,
    pub(crate) evicted: u64,
    /// Statements not counted because another shape with the same fingerprint is tracked.
    pub(crate) untracked: u64,
}

impl ShapeSet {
    pub(crate) fn new(max_shapes: usize) -> Self {
        ShapeSet {
            max_shapes,
            heap: MinHeap::new(),
            slots: Vec::new(),
            index: U64Map::default(),
            evicted: 0,
            untracked: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Counts one executed statement in window `window`.
    pub(crate) fn record(&mut self, ev: &StatementEvent, weight: f64, window: u64, now: Instant) {
        let Some(slot) = self.slot_for(ev, weight, now) else {
            self.untracked += 1;
            return;
        };
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        s.calls += 1;
        s.rows = s.rows.saturating_add(ev.rows);
        s.errors += u64::from(ev.error);
        s.last_seen = now;
        let r = ev.route.index();
        if let Some(c) = s.route_calls.get_mut(r) {
            *c += 1;
        }
        if let Some(w) = s.latency.get_mut(r) {
            w.record(window, ev.latency_us);
        }
    }

    fn slot_for(&mut self, ev: &StatementEvent, weight: f64, now: Instant) -> Option<u32> {
        let shape = &ev.shape;
        if let Some(&slot) = self.index.get(&shape.fingerprint) {
            if !self.slots.get(slot as usize)?.matches(&shape.normalized) {
                return None;
            }
            self.heap.add(slot, weight);
            return Some(slot);
        }
        let text: &str = &shape.normalized;
        let (normalized, prefix_len): (Arc<str>, usize) = if text.len() > MAX_SHAPE_TEXT {
            let mut cut = MAX_SHAPE_TEXT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let prefix = text.get(..cut).unwrap_or("");
            (format!("{prefix}…").into(), cut)
        } else {
            (text.into(), text.len())
        };
        let fresh = ShapeSlot {
            fingerprint: shape.fingerprint,
            normalized,
            prefix_len,
            text_len: text.len(),
            kind: shape.kind.name(),
            calls: 0,
            rows: 0,
            errors: 0,
            route_calls: [0; 3],
            first_seen: now,
            last_seen: now,
            latency: Default::default(),
        };
        if self.slots.len() < self.max_shapes {
            let slot = self.heap.push(weight);
            self.slots.push(fresh);
            self.index.insert(shape.fingerprint, slot);
            return Some(slot);
        }
        let (slot, _) = self.heap.min()?;
        let s = self.slots.get_mut(slot as usize)?;
        self.index.remove(&s.fingerprint);
        *s = fresh;
        self.index.insert(shape.fingerprint, slot);
        self.heap.set(slot, weight);
        self.evicted += 1;
        Some(slot)
    }

    /// Advances every histogram to window `window`, freeing those idle for a window.
    pub(crate) fn roll(&mut self, window: u64) {
        for s in &mut self.slots {
            for w in &mut s.latency {
                w.roll(window);
            }
        }
    }

    pub(crate) fn scale(&mut self, factor: f64) {
        self.heap.scale(factor);
    }

    /// Every shape with its stored (forward-decayed) call count.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ShapeSlot, f64)> + '_ {
        self.heap
            .iter()
            .filter_map(|(slot, calls)| self.slots.get(slot as usize).map(|s| (s, calls)))
    }
}
