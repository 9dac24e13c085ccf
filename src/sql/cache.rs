//! The bounded shape cache: fingerprint → `Arc<Shape>`, shared by all sessions.
//!
//! Sharded so concurrent sessions rarely meet on a lock; a hit takes one uncontended read
//! lock, one hash probe, a string comparison and an `Arc` clone. Each shard holds a fixed
//! share of the capacity, so the total never exceeds it. Eviction is second-chance (CLOCK
//! without the hand): a hit marks its entry; a full shard drops every unmarked entry and
//! clears the marks, then, if that freed less than a quarter of the shard, drops arbitrary
//! entries until it did. Each sweep frees a quarter of the shard, so eviction costs O(1)
//! amortized per insert and shapes in use survive sweeps of one-off statements.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};

use super::Shape;

const MAX_SHARDS: usize = 16;

/// Keys are already xxh3 hashes; hashing them again would only cost time.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

struct Entry {
    shape: Arc<Shape>,
    referenced: AtomicBool,
}

struct Shard {
    map: HashMap<u64, Entry, BuildHasherDefault<IdentityHasher>>,
    capacity: usize,
}

pub(crate) struct ShapeCache {
    shards: Box<[RwLock<Shard>]>,
    capacity: usize,
}

impl ShapeCache {
    pub(crate) fn new(capacity: usize) -> Self {
        // A power of two no larger than the capacity, so every shard holds at least one.
        let mut n = 1;
        while n * 2 <= MAX_SHARDS && n * 2 <= capacity {
            n *= 2;
        }
        let n = if capacity == 0 { 0 } else { n };
        let shards = (0..n)
            .map(|i| {
                let cap = capacity / n + usize::from(i < capacity % n);
                RwLock::new(Shard {
                    map: HashMap::default(),
                    capacity: cap,
                })
            })
            .collect();
        ShapeCache { shards, capacity }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Middle bits pick the shard: hashbrown uses the low bits for the bucket and the top
    /// seven as tag, which must keep varying inside a shard.
    fn shard(&self, fingerprint: u64) -> Option<&RwLock<Shard>> {
        let n = self.shards.len();
        if n == 0 {
            return None;
        }
        self.shards.get((fingerprint >> 40) as usize & (n - 1))
    }

    pub(crate) fn get(&self, fingerprint: u64, normalized: &str) -> Option<Arc<Shape>> {
        let shard = self.shard(fingerprint)?;
        let guard = shard.read().unwrap_or_else(PoisonError::into_inner);
        let entry = guard.map.get(&fingerprint)?;
        if *entry.shape.normalized != *normalized {
            return None;
        }
        if !entry.referenced.load(Relaxed) {
            entry.referenced.store(true, Relaxed);
        }
        Some(Arc::clone(&entry.shape))
    }

    /// Inserts `shape` and returns the cached one: an equal shape another session inserted
    /// first wins, so all statements of a shape share one `Arc`.
    pub(crate) fn insert(&self, shape: Arc<Shape>) -> Arc<Shape> {
        let Some(shard) = self.shard(shape.fingerprint) else {
            return shape;
        };
        let mut guard = shard.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = guard.map.get(&shape.fingerprint) {
            if e.shape.normalized == shape.normalized {
                return Arc::clone(&e.shape);
            }
        }
        if guard.map.len() >= guard.capacity && !guard.map.contains_key(&shape.fingerprint) {
            guard.evict();
        }
        guard.map.insert(
            shape.fingerprint,
            Entry {
                shape: Arc::clone(&shape),
                referenced: AtomicBool::new(false),
            },
        );
        shape
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }
}

impl Shard {
    fn evict(&mut self) {
        let target = self.capacity - (self.capacity / 4).max(1).min(self.capacity);
        self.map.retain(|_, e| e.referenced.swap(false, Relaxed));
        let mut excess = self.map.len().saturating_sub(target);
        if excess > 0 {
            self.map.retain(|_, _| {
                if excess > 0 {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{Shape, StatementKind};

    fn shape(i: usize) -> Arc<Shape> {
        Arc::new(Shape::simple(format!("select {i}"), StatementKind::Read, 0))
    }

    #[test]
    fn bounded_and_second_chance() {
        let c = ShapeCache::new(64);
        let hot: Vec<_> = (0..8).map(|i| c.insert(shape(i))).collect();
        for i in 8..10_000 {
            c.insert(shape(i));
            for h in &hot {
                let _ = c.get(h.fingerprint, &h.normalized);
            }
            assert!(c.len() <= 64);
        }
        // Hot shapes survive a flood of one-off statements.
        for h in &hot {
            assert!(c.get(h.fingerprint, &h.normalized).is_some());
        }
    }

    #[test]
    fn small_capacities() {
        for cap in [0, 1, 2, 3, 5, 17, 100] {
            let c = ShapeCache::new(cap);
            for i in 0..500 {
                let s = shape(i);
                let got = c.insert(Arc::clone(&s));
                assert!(Arc::ptr_eq(&got, &s));
                assert!(c.len() <= cap, "cap {cap} len {}", c.len());
            }
            assert_eq!(c.capacity(), cap);
        }
    }

    #[test]
    fn same_text_shares_arc() {
        let c = ShapeCache::new(10);
        let a = c.insert(shape(1));
        let b = c.insert(shape(1));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(c.get(a.fingerprint, "select 2").is_none());
    }
}
