//! The tracked tables, each with its own top-K sketch, at most `max_tables` of them.
//!
//! Table names come from client SQL, so their number is unbounded too (temporary tables,
//! per-tenant schemas, typos). Each tracked table has a forward-decayed total of its key
//! accesses in a min-heap; a new table arriving when the set is full takes over the slot
//! (and clears the sketch) of the table with the smallest total, counted in `evicted`.
//! A burst of one-off tables therefore churns among themselves and never pushes out a
//! table with steady traffic.

use std::sync::Arc;
use std::time::Instant;

use crate::sql::TableRef;

use super::event::Access;
use super::hash::{hash_table, U64Map};
use super::heap::MinHeap;
use super::topk::{Offer, SpaceSaving};

#[derive(Debug)]
pub(crate) struct TableSlot {
    pub(crate) table: Arc<TableRef>,
    hash: u64,
    pub(crate) keys: SpaceSaving,
    /// Exact key accesses since the table was (re)admitted.
    pub(crate) reads: u64,
    pub(crate) writes: u64,
    pub(crate) last_seen: Instant,
}

#[derive(Debug)]
pub(crate) struct TableSet {
    max_tables: usize,
    top_k: usize,
    seed: u64,
    /// Priority: forward-decayed key accesses.
    heap: MinHeap,
    slots: Vec<TableSlot>,
    index: U64Map<u32>,
    /// Tables that lost their slot to a newcomer.
    pub(crate) evicted: u64,
    /// Accesses not counted because of a 64-bit hash collision.
    pub(crate) untracked: u64,
}

impl TableSet {
    pub(crate) fn new(max_tables: usize, top_k: usize, seed: u64) -> Self {
        TableSet {
            max_tables,
            top_k,
            seed,
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

    /// Counts one access of `key` in `schema.name`, with stored weight `weight`.
    pub(crate) fn offer(
        &mut self,
        (schema, name, key): (Option<&str>, &str, &str),
        access: Access,
        weight: f64,
        now: Instant,
    ) {
        let Some(slot) = self.slot_for(schema, name, weight, now) else {
            self.untracked += 1;
            return;
        };
        let Some(t) = self.slots.get_mut(slot as usize) else {
            return;
        };
        match access {
            Access::Read => t.reads += 1,
            Access::Write => t.writes += 1,
        }
        t.last_seen = now;
        if t.keys.offer(key, weight, access, now) == Offer::Untracked {
            self.untracked += 1;
        }
    }

    /// The slot of the table, admitting it (possibly evicting the least used table) if new;
    /// adds `weight` to the table's total. `None` on a hash collision or `max_tables == 0`.
    fn slot_for(
        &mut self,
        schema: Option<&str>,
        name: &str,
        weight: f64,
        now: Instant,
    ) -> Option<u32> {
        let hash = hash_table(schema, name, self.seed);
        if let Some(&slot) = self.index.get(&hash) {
            let t = self.slots.get(slot as usize)?;
            if t.table.schema.as_deref() != schema || &*t.table.name != name {
                return None;
            }
            self.heap.add(slot, weight);
            return Some(slot);
        }
        let fresh = |keys| TableSlot {
            table: Arc::new(TableRef::new(schema, name)),
            hash,
            keys,
            reads: 0,
            writes: 0,
            last_seen: now,
        };
        if self.slots.len() < self.max_tables {
            let slot = self.heap.push(weight);
            self.slots
                .push(fresh(SpaceSaving::new(self.top_k, self.seed)));
            self.index.insert(hash, slot);
            return Some(slot);
        }
        let (slot, _) = self.heap.min()?;
        let t = self.slots.get_mut(slot as usize)?;
        self.index.remove(&t.hash);
        let mut keys = std::mem::replace(&mut t.keys, SpaceSaving::new(0, 0));
        keys.clear();
        *t = fresh(keys);
        self.index.insert(hash, slot);
        // The newcomer starts from its own weight, not the evicted table's total: unlike
        // keys, tables are not estimated, and a one-off table must stay easy to evict.
        self.heap.set(slot, weight);
        self.evicted += 1;
        Some(slot)
    }

    /// Multiplies every stored value by `factor` (a decay rebase).
    pub(crate) fn scale(&mut self, factor: f64) {
        self.heap.scale(factor);
        for t in &mut self.slots {
            t.keys.scale(factor);
        }
    }

    /// Every table with its stored total.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&TableSlot, f64)> + '_ {
        self.heap
            .iter()
            .filter_map(|(slot, total)| self.slots.get(slot as usize).map(|t| (t, total)))
    }

    pub(crate) fn get(&self, table: &TableRef) -> Option<(&TableSlot, f64)> {
        let hash = hash_table(table.schema.as_deref(), &table.name, self.seed);
        let &slot = self.index.get(&hash)?;
        let t = self.slots.get(slot as usize)?;
        (*t.table == *table).then(|| (t, self.heap.prio(slot)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_tables_and_keys() {
        let now = Instant::now();
        let mut set = TableSet::new(10, 5, 3);
        // A steady table with real traffic survives 100k one-off tables.
        for i in 0..20 {
            set.offer(
                (Some("app"), "users", &(i % 3).to_string()),
                Access::Read,
                1.0,
                now,
            );
        }
        for i in 0..100_000 {
            let name = format!("t{i}");
            for k in 0..7 {
                set.offer((None, &name, &k.to_string()), Access::Write, 1.0, now);
            }
            assert!(set.len() <= 10);
            assert!(set.iter().all(|(t, _)| t.keys.len() <= 5));
        }
        assert_eq!(set.len(), 10);
        assert_eq!(set.evicted, 100_000 - 9);
        let (users, total) = set.get(&TableRef::new(Some("app"), "users")).unwrap();
        assert_eq!((users.reads, users.writes, total), (20, 0, 20.0));
        assert_eq!(users.keys.len(), 3);
        assert!(set.get(&TableRef::new(None, "users")).is_none());
        assert_eq!(set.untracked, 0);
    }

    #[test]
    fn zero_tables_tracks_nothing() {
        let mut set = TableSet::new(0, 5, 3);
        set.offer((None, "t", "1"), Access::Read, 1.0, Instant::now());
        assert_eq!((set.len(), set.untracked), (0, 1));
    }
}
