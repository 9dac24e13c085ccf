//! The in-process cache store (L1): row images by (table, profile, key), and the rules that
//! keep a stale image from ever getting in.
//!
//! Readers (sessions) look entries up without locks. Everything that changes what the store
//! may hold — applying a transaction from the change feed, a write through the proxy naming a
//! key, inserting rows the migrator fetched — runs under one mutex (`guard`), so each insert is
//! checked against every change applied before it, and each change removes every image
//! inserted before it.
//!
//! The race this closes: the migrator reads a row in a snapshot; a transaction the snapshot
//! does not see commits and the feed applies it (removing nothing, the row is not stored yet);
//! then the migrator stores the old row. So the store remembers, for a while
//! ([`LOG_RETENTION`]), which transaction last changed each key, and an insert whose snapshot
//! does not see one of those transactions is dropped. Writes through the proxy block inserts
//! of their keys until the feed has applied a change to the key (or [`WRITE_BLOCK`] passed:
//! the write rolled back or changed nothing). Any flush (feed reset, DDL) drops every insert
//! still in flight.

use super::schema::Budget;
use bytes::Bytes;
use dashmap::DashMap;
use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long applied changes are remembered for checking inserts. A fill whose snapshot was
/// taken more than this after a change was applied cannot miss it unless the transaction
/// stayed invisible that long after its commit record was decoded.
pub const LOG_RETENTION: Duration = Duration::from_secs(10);

/// Changes remembered at most; beyond, the oldest are forgotten and fills that started
/// before the forgotten ones may no longer be checked are dropped.
pub const LOG_CAPACITY: usize = 1_000_000;

/// A fill older than this is dropped instead of inserted.
pub const FILL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a write through the proxy keeps its keys out of the store if the feed never
/// reports a change for them.
pub const WRITE_BLOCK: Duration = Duration::from_secs(5);

/// Lookup key of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryKey {
    pub table: u32,
    pub profile: u32,
    pub key: Box<str>,
}

/// An [`EntryKey`]'s parts, borrowed: a lookup by `(table, profile, &str)` through
/// `dyn EntryKeyParts` needs no `Box<str>` (one allocation less per cache hit).
pub trait EntryKeyParts {
    fn parts(&self) -> (u32, u32, &str);
}

impl EntryKeyParts for EntryKey {
    fn parts(&self) -> (u32, u32, &str) {
        (self.table, self.profile, &self.key)
    }
}

impl EntryKeyParts for (u32, u32, &str) {
    fn parts(&self) -> (u32, u32, &str) {
        (self.0, self.1, self.2)
    }
}

/// The owned key and its borrowed view must hash alike: both hash their parts.
impl Hash for EntryKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state)
    }
}

impl Hash for dyn EntryKeyParts + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state)
    }
}

impl PartialEq for dyn EntryKeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn EntryKeyParts + '_ {}

impl<'a> Borrow<dyn EntryKeyParts + 'a> for EntryKey {
    fn borrow(&self) -> &(dyn EntryKeyParts + 'a) {
        self
    }
}

/// One row as the client would receive it, per column, in text and (when known) binary
/// format. `None` in a column is NULL.
#[derive(Debug)]
pub struct CachedRow {
    pub text: Vec<Option<Bytes>>,
    /// `None`: the binary forms are not known (an image the change feed gave, of a table
    /// with a column whose binary form the proxy does not derive from its text): such an
    /// image answers only reads that want every column as text.
    pub binary: Option<Vec<Option<Bytes>>>,
}

impl CachedRow {
    /// A copy sharing the value buffers (cheap: `Bytes` clones are reference counts).
    pub fn duplicate(&self) -> CachedRow {
        CachedRow {
            text: self.text.clone(),
            binary: self.binary.clone(),
        }
    }

    pub fn bytes(&self) -> usize {
        let sum = |v: &Vec<Option<Bytes>>| {
            v.iter()
                .map(|c| c.as_ref().map_or(0, |b| b.len()))
                .sum::<usize>()
        };
        sum(&self.text) + self.binary.as_ref().map_or(0, sum)
    }

    /// Whether this image can answer a read that wants some column in binary format.
    pub fn has_binary(&self) -> bool {
        self.binary.is_some()
    }
}

/// A stored image: the row, or `None` when no row has the key (served as zero rows).
#[derive(Debug)]
pub struct Entry {
    pub row: Option<CachedRow>,
    /// The snapshot a fill read the row in (`None` for the change feed's rows): a change
    /// this snapshot already saw leaves the image in place, since it is at least as new.
    seen: Option<Arc<Snapshot>>,
    bytes: u64,
    budget: Arc<Budget>,
    totals: Arc<Totals>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Relaxed);
        self.totals.bytes.fetch_sub(self.bytes, Relaxed);
        self.totals.entries.fetch_sub(1, Relaxed);
    }
}

/// Store-wide counters (also read by metrics).
#[derive(Debug, Default)]
pub struct Totals {
    pub bytes: AtomicU64,
    pub entries: AtomicU64,
    pub inserted: AtomicU64,
    pub invalidated: AtomicU64,
    pub flushes: AtomicU64,
    /// Fetched rows dropped because a change they may not reflect was applied meanwhile.
    pub fills_dropped_stale: AtomicU64,
    /// Fetched rows dropped because the policy's `max_bytes` was reached.
    pub fills_dropped_budget: AtomicU64,
    /// Images written from the change feed's new rows (in place of the ones it removed).
    pub feed_images: AtomicU64,
}

/// A transaction snapshot (`pg_current_snapshot()`), full 64-bit transaction ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub xmin: u64,
    pub xmax: u64,
    pub xip: Vec<u64>,
}

impl Snapshot {
    /// Parses `xmin:xmax:xip,xip,...`.
    pub fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        Some(Snapshot { xmin, xmax, xip })
    }

    /// Whether a committed transaction with 32-bit id `xid` (as the change feed reports it)
    /// is visible in this snapshot. The full id is taken as the one nearest `xmax`.
    pub fn sees(&self, xid: u32) -> bool {
        let diff = i64::from(xid.wrapping_sub(self.xmax as u32) as i32);
        let full = (self.xmax as i64 + diff) as u64;
        full < self.xmin || (full < self.xmax && !self.xip.contains(&full))
    }
}

/// What the store remembers under its guard.
#[derive(Debug, Default)]
struct Guarded {
    /// (table, key) → xids of changes applied within [`LOG_RETENTION`].
    changed: HashMap<(u32, Box<str>), Vec<u32>>,
    /// table → xids of table-wide changes (truncate, oversized transactions).
    table_changed: HashMap<u32, Vec<u32>>,
    /// Order of the above, for expiry: (applied at, table, key or None).
    order: VecDeque<(Instant, u32, Option<Box<str>>, u32)>,
    /// Newest apply time of an entry forgotten for lack of room.
    forgotten_until: Option<Instant>,
    /// (table, key) → when a write through the proxy named it.
    blocked: HashMap<(u32, Box<str>), Instant>,
    /// Bumped by every flush: fills that started under an older epoch are dropped.
    epoch: u64,
}

/// One change to apply (from the feed): a key of a table, or the whole table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Key(u32, String),
    Table(u32),
}

/// A key's row right after a transaction the change feed applies, as the feed printed it
/// (see [`super::feed_image`]): stored with that transaction, in place of the images the
/// transaction removes, so a key that writes keep changing stays in memory.
#[derive(Debug)]
pub struct FeedImage {
    pub table: u32,
    pub key: String,
    /// The one profile the feed's text values are valid for.
    pub profile: u32,
    /// `None`: no row has the key after the transaction.
    pub row: Option<CachedRow>,
    pub budget: Arc<Budget>,
}

/// Where a fill stands when it is ready to insert.
#[derive(Debug, Clone)]
pub struct FillTicket {
    pub started: Instant,
    epoch: u64,
}

#[derive(Debug)]
pub struct L1Store {
    entries: DashMap<EntryKey, Arc<Entry>, foldhash::fast::RandomState>,
    guard: Mutex<Guarded>,
    pub totals: Arc<Totals>,
    /// Bumped (under `guard`, before anything is inserted) by every fill that inserts and
    /// every applied transaction that stores the feed's rows. A reader of several entries
    /// loads it before and after: unchanged, nothing was inserted while it read (a newer
    /// image only arrives that way, after the change that removed the older ones).
    fills: AtomicU64,
}

impl Default for L1Store {
    fn default() -> Self {
        L1Store {
            entries: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            guard: Mutex::new(Guarded::default()),
            totals: Arc::new(Totals::default()),
            fills: AtomicU64::new(0),
        }
    }
}

impl L1Store {
    pub fn get(&self, key: &EntryKey) -> Option<Arc<Entry>> {
        self.entries.get(key).map(|e| Arc::clone(e.value()))
    }

    /// [`Self::get`] without building an [`EntryKey`].
    pub fn get_parts(&self, table: u32, profile: u32, key: &str) -> Option<Arc<Entry>> {
        let parts: &dyn EntryKeyParts = &(table, profile, key);
        self.entries.get(parts).map(|e| Arc::clone(e.value()))
    }

    /// See [`L1Store::fills`].
    pub fn fill_version(&self) -> u64 {
        self.fills.load(SeqCst)
    }

    pub fn contains(&self, key: &EntryKey) -> bool {
        self.entries.contains_key(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Guarded> {
        self.guard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes the key's images under `profiles`, except those read in a snapshot that
    /// already saw transaction `seen_xid` (the change being applied; `None`: remove all).
    fn remove_key(&self, table: u32, key: &str, profiles: &[u32], seen_xid: Option<u32>) {
        let saw =
            |e: &Arc<Entry>| seen_xid.is_some_and(|x| e.seen.as_ref().is_some_and(|s| s.sees(x)));
        for &profile in profiles {
            let parts: &dyn EntryKeyParts = &(table, profile, key);
            if self.entries.remove_if(parts, |_, e| !saw(e)).is_some() {
                self.totals.invalidated.fetch_add(1, Relaxed);
            }
        }
    }

    fn remove_table(&self, table: u32) {
        let before = self.entries.len();
        self.entries.retain(|k, _| k.table != table);
        let removed = before.saturating_sub(self.entries.len());
        self.totals.invalidated.fetch_add(removed as u64, Relaxed);
    }

    /// Applies one committed transaction's changes (`xid`), for every profile in `profiles`,
    /// then stores `images`: rows of keys `changes` name, as they are after the transaction
    /// ([`Self::fill_version`] moves before they go in). An image read by a fill whose
    /// snapshot already saw the transaction is neither removed nor replaced: it is at least
    /// as new. The images are dropped if anything was flushed since `ticket` (taken before
    /// the table descriptions they were built from were read).
    pub fn apply(
        &self,
        xid: u32,
        changes: &[Applied],
        profiles: &[u32],
        images: Vec<FeedImage>,
        ticket: &FillTicket,
    ) {
        let now = Instant::now();
        let mut g = self.lock();
        expire(&mut g, now);
        for c in changes {
            match c {
                Applied::Key(table, key) => {
                    self.remove_key(*table, key, profiles, Some(xid));
                    let k: Box<str> = key.as_str().into();
                    g.blocked.remove(&(*table, k.clone()));
                    g.changed.entry((*table, k.clone())).or_default().push(xid);
                    g.order.push_back((now, *table, Some(k), xid));
                }
                Applied::Table(table) => {
                    self.remove_table(*table);
                    g.blocked.retain(|(t, _), _| t != table);
                    g.table_changed.entry(*table).or_default().push(xid);
                    g.order.push_back((now, *table, None, xid));
                }
            }
        }
        while g.order.len() > LOG_CAPACITY {
            if let Some((at, table, key, xid)) = g.order.pop_front() {
                forget(&mut g, table, key, xid);
                g.forgotten_until = Some(at);
            }
        }
        if images.is_empty() || g.epoch != ticket.epoch {
            return;
        }
        self.fills.fetch_add(1, SeqCst);
        for image in images {
            let parts: &dyn EntryKeyParts = &(image.table, image.profile, image.key.as_str());
            if self.entries.contains_key(parts) {
                // A fill that already saw this transaction (and maybe later ones) stays.
                continue;
            }
            let key = EntryKey {
                table: image.table,
                profile: image.profile,
                key: image.key.into(),
            };
            if self.put(key, image.row, None, &image.budget) {
                self.totals.feed_images.fetch_add(1, Relaxed);
            }
        }
    }

    /// A write through the proxy names `key` of `table`: drop it now, and keep fills of it
    /// out until the feed applies a change to it.
    pub fn invalidate_written(&self, table: u32, key: &str, profiles: &[u32]) {
        let mut g = self.lock();
        self.remove_key(table, key, profiles, None);
        g.blocked.insert((table, key.into()), Instant::now());
    }

    /// Drops a whole table (DDL, schema change).
    pub fn flush_table(&self, table: u32) {
        let mut g = self.lock();
        g.epoch += 1;
        self.remove_table(table);
        self.totals.flushes.fetch_add(1, Relaxed);
    }

    /// Drops everything (feed reset, schema reload failure).
    pub fn flush_all(&self) {
        let mut g = self.lock();
        g.epoch += 1;
        self.entries.clear();
        self.totals.flushes.fetch_add(1, Relaxed);
    }

    /// Removes images of keys `keep` does not accept (demotion).
    pub fn retain(&self, keep: impl Fn(&EntryKey) -> bool) {
        let _g = self.lock();
        self.entries.retain(|k, _| keep(k));
    }

    /// Call before a fill reads anything.
    pub fn begin_fill(&self) -> FillTicket {
        FillTicket {
            started: Instant::now(),
            epoch: self.lock().epoch,
        }
    }

    /// Whether an image of `key` read in `snapshot` (by this proxy or, through Redis, by
    /// another) may be trusted: the same checks an insert makes, without inserting.
    pub fn admit(&self, ticket: &FillTicket, snapshot: &Snapshot, table: u32, key: &str) -> bool {
        let now = Instant::now();
        let mut g = self.lock();
        expire(&mut g, now);
        let forgotten = g
            .forgotten_until
            .is_some_and(|f| ticket.started <= f + LOG_RETENTION);
        if g.epoch != ticket.epoch || forgotten {
            return false;
        }
        if g.table_changed
            .get(&table)
            .is_some_and(|xids| xids.iter().any(|&x| !snapshot.sees(x)))
        {
            return false;
        }
        let pair = (table, Box::<str>::from(key));
        if g.blocked
            .get(&pair)
            .is_some_and(|at| now.duration_since(*at) < WRITE_BLOCK)
        {
            return false;
        }
        !g.changed
            .get(&pair)
            .is_some_and(|xids| xids.iter().any(|&x| !snapshot.sees(x)))
    }

    /// Inserts fetched images read in `snapshot`, unless something applied since may be
    /// missing from them. `rows` holds `(key, image)`; returns how many were inserted.
    pub fn insert_fill(
        &self,
        ticket: &FillTicket,
        snapshot: &Snapshot,
        table: u32,
        profile: u32,
        budget: &Arc<Budget>,
        rows: Vec<(String, Option<CachedRow>)>,
    ) -> usize {
        let now = Instant::now();
        let mut g = self.lock();
        expire(&mut g, now);
        let forgotten = g
            .forgotten_until
            .is_some_and(|f| ticket.started <= f + LOG_RETENTION);
        let table_stale = g
            .table_changed
            .get(&table)
            .is_some_and(|xids| xids.iter().any(|&x| !snapshot.sees(x)));
        if g.epoch != ticket.epoch
            || forgotten
            || table_stale
            || now.duration_since(ticket.started) > FILL_TIMEOUT
        {
            self.totals
                .fills_dropped_stale
                .fetch_add(rows.len() as u64, Relaxed);
            return 0;
        }
        if !rows.is_empty() {
            self.fills.fetch_add(1, SeqCst);
        }
        let seen = Arc::new(snapshot.clone());
        let mut inserted = 0;
        for (key, row) in rows {
            let k: Box<str> = key.into();
            let pair = (table, k);
            if let Some(at) = g.blocked.get(&pair) {
                if now.duration_since(*at) < WRITE_BLOCK {
                    self.totals.fills_dropped_stale.fetch_add(1, Relaxed);
                    continue;
                }
                g.blocked.remove(&pair);
            }
            if g.changed
                .get(&pair)
                .is_some_and(|xids| xids.iter().any(|&x| !snapshot.sees(x)))
            {
                self.totals.fills_dropped_stale.fetch_add(1, Relaxed);
                continue;
            }
            let key = EntryKey {
                table,
                profile,
                key: pair.1,
            };
            if !self.put(key, row, Some(Arc::clone(&seen)), budget) {
                self.totals.fills_dropped_budget.fetch_add(1, Relaxed);
                continue;
            }
            inserted += 1;
        }
        self.totals.inserted.fetch_add(inserted as u64, Relaxed);
        inserted
    }

    /// Stores one image if its policy's budget has room (call under the guard).
    fn put(
        &self,
        key: EntryKey,
        row: Option<CachedRow>,
        seen: Option<Arc<Snapshot>>,
        budget: &Arc<Budget>,
    ) -> bool {
        let bytes = (row.as_ref().map_or(0, CachedRow::bytes) + key.key.len() + 64) as u64;
        if !budget.has_room(bytes) {
            return false;
        }
        budget.used.fetch_add(bytes, Relaxed);
        self.totals.bytes.fetch_add(bytes, Relaxed);
        self.totals.entries.fetch_add(1, Relaxed);
        let entry = Arc::new(Entry {
            row,
            seen,
            bytes,
            budget: Arc::clone(budget),
            totals: Arc::clone(&self.totals),
        });
        self.entries.insert(key, entry);
        true
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn forget(g: &mut Guarded, table: u32, key: Option<Box<str>>, xid: u32) {
    match key {
        Some(k) => {
            let pair = (table, k);
            if let Some(v) = g.changed.get_mut(&pair) {
                if let Some(i) = v.iter().position(|&x| x == xid) {
                    v.remove(i);
                }
                if v.is_empty() {
                    g.changed.remove(&pair);
                }
            }
        }
        None => {
            if let Some(v) = g.table_changed.get_mut(&table) {
                if let Some(i) = v.iter().position(|&x| x == xid) {
                    v.remove(i);
                }
                if v.is_empty() {
                    g.table_changed.remove(&table);
                }
            }
        }
    }
}

fn expire(g: &mut Guarded, now: Instant) {
    while let Some((at, _, _, _)) = g.order.front() {
        if now.duration_since(*at) <= LOG_RETENTION {
            break;
        }
        if let Some((_, table, key, xid)) = g.order.pop_front() {
            forget(g, table, key, xid);
        }
    }
    if g.blocked.len() > 100_000 {
        g.blocked
            .retain(|_, at| now.duration_since(*at) < WRITE_BLOCK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Arc<Budget> {
        Arc::new(Budget {
            max_bytes: 1 << 20,
            used: AtomicU64::new(0),
        })
    }

    fn row(v: &str) -> Option<CachedRow> {
        Some(CachedRow {
            text: vec![Some(Bytes::from(v.to_string()))],
            binary: Some(vec![Some(Bytes::from(v.to_string()))]),
        })
    }

    fn key(k: &str) -> EntryKey {
        EntryKey {
            table: 1,
            profile: 0,
            key: k.into(),
        }
    }

    #[test]
    fn snapshot_visibility() {
        let s = Snapshot::parse("100:105:101,103").unwrap();
        assert!(s.sees(99));
        assert!(s.sees(100));
        assert!(!s.sees(101));
        assert!(s.sees(102));
        assert!(!s.sees(103));
        assert!(!s.sees(105));
        assert!(!s.sees(200));
        // Across the 32-bit wrap: full ids in epoch 1.
        let base = (1u64 << 32) + 5;
        let s = Snapshot::parse(&format!("{}:{}:", base - 10, base)).unwrap();
        assert!(s.sees(u32::MAX - 20));
        assert!(s.sees(2));
        assert!(!s.sees(5));
        assert!(!s.sees(6));
        assert_eq!(Snapshot::parse("1:2:x"), None);
    }

    #[test]
    fn fill_that_missed_an_applied_change_is_dropped() {
        let s = L1Store::default();
        let b = budget();
        let ticket = s.begin_fill();
        // Transaction 7 committed after the fill's snapshot and was applied before the insert.
        s.apply(
            7,
            &[Applied::Key(1, "a".into())],
            &[0],
            vec![],
            &s.begin_fill(),
        );
        let snap = Snapshot::parse("5:7:").unwrap();
        let n = s.insert_fill(
            &ticket,
            &snap,
            1,
            0,
            &b,
            vec![("a".into(), row("old")), ("b".into(), row("b"))],
        );
        assert_eq!(n, 1);
        assert!(s.get(&key("a")).is_none());
        assert!(s.get(&key("b")).is_some());
        // A snapshot that sees 7 may insert.
        let ticket = s.begin_fill();
        let snap = Snapshot::parse("8:8:").unwrap();
        assert_eq!(
            s.insert_fill(&ticket, &snap, 1, 0, &b, vec![("a".into(), row("new"))]),
            1
        );
        assert!(s.get(&key("a")).is_some());
        // A later change removes it.
        s.apply(
            9,
            &[Applied::Key(1, "a".into())],
            &[0],
            vec![],
            &s.begin_fill(),
        );
        assert!(s.get(&key("a")).is_none());
    }

    #[test]
    fn writes_block_and_flushes_void_fills() {
        let s = L1Store::default();
        let b = budget();
        let snap = Snapshot::parse("100:100:").unwrap();
        let ticket = s.begin_fill();
        s.invalidate_written(1, "a", &[0]);
        assert_eq!(
            s.insert_fill(&ticket, &snap, 1, 0, &b, vec![("a".into(), row("x"))]),
            0
        );
        // The feed applied the write: fills that see it may insert again.
        s.apply(
            100,
            &[Applied::Key(1, "a".into())],
            &[0],
            vec![],
            &s.begin_fill(),
        );
        let snap = Snapshot::parse("101:101:").unwrap();
        let ticket = s.begin_fill();
        assert_eq!(
            s.insert_fill(&ticket, &snap, 1, 0, &b, vec![("a".into(), row("y"))]),
            1
        );
        // A flush voids fills in flight.
        let ticket = s.begin_fill();
        s.flush_all();
        assert_eq!(
            s.insert_fill(&ticket, &snap, 1, 0, &b, vec![("c".into(), row("z"))]),
            0
        );
        assert!(s.is_empty());
        assert_eq!(s.totals.entries.load(Relaxed), 0);
        assert_eq!(b.used.load(Relaxed), 0);
    }

    #[test]
    fn feed_images_replace_what_their_change_removes_unless_a_flush_came_between() {
        let s = L1Store::default();
        let b = budget();
        let image = |v: &str| FeedImage {
            table: 1,
            key: "a".into(),
            profile: 0,
            row: row(v),
            budget: Arc::clone(&b),
        };
        let text = |s: &L1Store| {
            s.get(&key("a"))
                .and_then(|e| e.row.as_ref().and_then(|r| r.text[0].clone()))
        };
        let snap = Snapshot::parse("1:1:").unwrap();
        let t = s.begin_fill();
        s.insert_fill(&t, &snap, 1, 0, &b, vec![("a".into(), row("old"))]);
        let version = s.fill_version();
        let t = s.begin_fill();
        s.apply(
            5,
            &[Applied::Key(1, "a".into())],
            &[0],
            vec![image("new")],
            &t,
        );
        assert_eq!(text(&s), Some(Bytes::from("new")));
        assert!(
            s.fill_version() > version,
            "readers of several keys must notice"
        );
        assert_eq!(s.totals.feed_images.load(Relaxed), 1);
        // A fill that already saw the transaction the feed applies next is newer: it stays.
        let t = s.begin_fill();
        let later = Snapshot::parse("9:9:").unwrap();
        s.insert_fill(&t, &later, 1, 0, &b, vec![("a".into(), row("newest"))]);
        let t = s.begin_fill();
        s.apply(
            7,
            &[Applied::Key(1, "a".into())],
            &[0],
            vec![image("older")],
            &t,
        );
        assert_eq!(text(&s), Some(Bytes::from("newest")));
        assert_eq!(s.totals.feed_images.load(Relaxed), 1);
        // Built from descriptions read before a flush: the change removes, nothing replaces.
        let stale = s.begin_fill();
        s.flush_table(2);
        s.apply(
            10,
            &[Applied::Key(1, "a".into())],
            &[0],
            vec![image("newer")],
            &stale,
        );
        assert_eq!(text(&s), None);
        assert_eq!(s.totals.feed_images.load(Relaxed), 1);
        s.flush_all();
        assert_eq!(b.used.load(Relaxed), 0);
    }

    #[test]
    fn budget_is_respected_and_released() {
        let s = L1Store::default();
        let b = Arc::new(Budget {
            max_bytes: 200,
            used: AtomicU64::new(0),
        });
        let snap = Snapshot::parse("1:1:").unwrap();
        let t = s.begin_fill();
        let rows = (0..10)
            .map(|i| (format!("k{i}"), row("0123456789")))
            .collect();
        let n = s.insert_fill(&t, &snap, 1, 0, &b, rows);
        assert!((1..10).contains(&n), "{n}");
        assert!(b.used.load(Relaxed) <= 200);
        s.flush_table(1);
        assert_eq!(b.used.load(Relaxed), 0);
        // Truncate: table-wide change not seen by a fill drops it.
        let t = s.begin_fill();
        s.apply(3, &[Applied::Table(1)], &[0], vec![], &s.begin_fill());
        let snap = Snapshot::parse("2:3:").unwrap();
        assert_eq!(
            s.insert_fill(&t, &snap, 1, 0, &b, vec![("k".into(), None)]),
            0
        );
    }
}
