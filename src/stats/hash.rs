//! Hashing for the aggregator's indexes.
//!
//! The sketches index their entries by a 64-bit hash of the text (key, table name, shape)
//! rather than by the text itself, so each text is stored exactly once, in the entry that
//! owns it (`Box<str>`), and the index costs 12 bytes per entry. A hit is always confirmed
//! by comparing the stored text: two different texts with equal hashes never merge; the
//! newcomer is counted as `untracked` instead (probability about `n / 2^64` per event).
//!
//! The hash is xxh3 with a per-aggregator random seed, so clients cannot choose texts that
//! collide on purpose. Since the values are already well mixed, the `HashMap` itself uses a
//! pass-through hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A map keyed by an already-mixed 64-bit hash.
pub(crate) type U64Map<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

/// Hasher for keys that are themselves hashes: `write_u64` passes the value through.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if someone keys a U64Map by something other than u64; stay correct.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Seeded xxh3 of a text.
pub(crate) fn hash_str(text: &str, seed: u64) -> u64 {
    xxh3_64_with_seed(text.as_bytes(), seed)
}

/// Seeded hash of a table name; the schema part is delimited, so `a.bc` and `ab.c` and the
/// unqualified `abc` hash differently.
pub(crate) fn hash_table(schema: Option<&str>, name: &str, seed: u64) -> u64 {
    let split = schema.map_or(0, |s| s.len() as u64 + 1);
    let h = xxh3_64_with_seed(schema.unwrap_or("").as_bytes(), seed ^ split);
    xxh3_64_with_seed(name.as_bytes(), h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_hash_respects_the_split() {
        let s = 42;
        let a = hash_table(Some("a"), "bc", s);
        let b = hash_table(Some("ab"), "c", s);
        let c = hash_table(None, "abc", s);
        let d = hash_table(Some(""), "abc", s);
        assert!(a != b && a != c && b != c && c != d);
        assert_eq!(a, hash_table(Some("a"), "bc", s));
        assert_ne!(a, hash_table(Some("a"), "bc", s + 1));
    }

    #[test]
    fn pass_through_map_works() {
        let mut m: U64Map<u32> = U64Map::default();
        m.insert(hash_str("x", 1), 1);
        m.insert(hash_str("y", 1), 2);
        assert_eq!(m.get(&hash_str("x", 1)), Some(&1));
        assert_eq!(m.get(&hash_str("y", 1)), Some(&2));
    }
}
