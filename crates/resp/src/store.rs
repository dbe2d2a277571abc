//! The keyspace: one per server, shared by every worker.
//!
//! [`SHARDS`] shards, each a `Mutex<HashMap>`, the shard chosen by a hash
//! of the key. A command on one key locks one shard for the time it takes
//! (no I/O, no allocation beyond the value's), so a SET acknowledged on one
//! worker is seen by a GET on any other, and two workers contend only when
//! they touch the same shard at the same instant; there is no global lock
//! to serialise every command of every core on. Commands on several keys
//! lock their shards in ascending order (no deadlock), MSET all at once so
//! it stays atomic as in Redis.
//!
//! Expiry is by [`Instant`]s handed in by the caller (TTLs are relative, so
//! no wall clock is needed): lazy, a key found expired on access is
//! deleted; and active, [`Store::expire_some`] pops the earliest deadlines
//! from each shard's deadline index, a bounded number per call.
//!
//! Memory is accounted per entry (key, value, and an estimate of the
//! container overhead: see the constants), in one atomic counter that
//! `maxmemory` is checked against and INFO reports.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;

/// Shards of the keyspace. A power of two (the index is a mask of the
/// hash); 64 makes two of a few dozen workers rarely meet on one lock while
/// keeping the per-shard fixed cost (a map and an index) negligible.
pub const SHARDS: usize = 64;

/// Estimated bytes an entry costs beyond its key and value: the hash map
/// slot (the key's and the entry's handles, about 80 bytes) and the
/// allocator's headers of the two heap blocks.
pub const ENTRY_OVERHEAD: u64 = 96;
/// Estimated bytes a list element costs beyond its bytes: its handle in
/// the deque (32) and an allocation header.
pub const ITEM_OVERHEAD: u64 = 48;
/// Estimated bytes a deadline costs in the expiry index (the instant, the
/// key's handle, a share of a B-tree node).
pub const TTL_OVERHEAD: u64 = 64;

/// A value.
#[derive(Debug, Clone)]
pub enum Value {
    /// A string.
    Str(Bytes),
    /// A list (never empty: an emptied list is deleted, as in Redis).
    List(List),
}

/// A list and the bytes of its elements.
#[derive(Debug, Clone, Default)]
pub struct List {
    /// The elements, head first.
    pub items: VecDeque<Bytes>,
    /// Sum of the elements' lengths.
    pub bytes: u64,
}

impl List {
    /// Appends at the head (`left`) or tail.
    pub fn push(&mut self, item: Bytes, left: bool) {
        self.bytes += item.len() as u64;
        if left {
            self.items.push_front(item);
        } else {
            self.items.push_back(item);
        }
    }

    /// Takes from the head (`left`) or tail.
    pub fn pop(&mut self, left: bool) -> Option<Bytes> {
        let item = if left {
            self.items.pop_front()
        } else {
            self.items.pop_back()
        }?;
        self.bytes -= item.len() as u64;
        Some(item)
    }
}

impl Value {
    fn size(&self) -> u64 {
        match self {
            Value::Str(b) => b.len() as u64,
            Value::List(l) => l.bytes + l.items.len() as u64 * ITEM_OVERHEAD,
        }
    }

    /// Redis's TYPE name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
        }
    }
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires: Option<Instant>,
}

fn entry_size(key: &[u8], e: &Entry) -> u64 {
    ENTRY_OVERHEAD
        + key.len() as u64
        + e.value.size()
        + if e.expires.is_some() { TTL_OVERHEAD } else { 0 }
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Bytes, Entry>,
    /// Every key with a deadline, earliest first.
    deadlines: BTreeSet<(Instant, Bytes)>,
    /// Bytes accounted to this shard.
    bytes: u64,
}

/// Counters INFO reports.
#[derive(Debug, Default)]
pub struct Stats {
    /// Keys deleted because their time ran out.
    pub expired: AtomicU64,
    /// Reads that found their key.
    pub hits: AtomicU64,
    /// Reads that did not.
    pub misses: AtomicU64,
}

/// The shared keyspace; see the module docs.
#[derive(Debug)]
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    used: AtomicU64,
    maxmemory: u64,
    /// Counters for INFO.
    pub stats: Stats,
}

/// How a write treats the key's deadline.
#[derive(Debug, Clone, Copy)]
pub enum Ttl {
    /// Keep the one it has (SET KEEPTTL, APPEND, INCR, list pushes).
    Keep,
    /// Set this one (`None`: no deadline; SET without options clears it).
    Set(Option<Instant>),
}

/// One locked shard, for commands on a key in it.
pub struct Db<'a> {
    shard: MutexGuard<'a, Shard>,
    store: &'a Store,
    now: Instant,
}

impl std::fmt::Debug for Db<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("keys", &self.shard.map.len())
            .finish()
    }
}

impl Shard {
    fn account(&mut self, store: &Store, before: u64, after: u64) {
        if after >= before {
            self.bytes += after - before;
            store.used.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.bytes -= before - after;
            store.used.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Deletes `key` if its deadline has passed; whether it did.
    fn expire_if_due(&mut self, store: &Store, key: &[u8], now: Instant) -> bool {
        let due = self
            .map
            .get(key)
            .and_then(|e| e.expires)
            .is_some_and(|t| t <= now);
        if due {
            self.remove(store, key);
            store.stats.expired.fetch_add(1, Ordering::Relaxed);
        }
        due
    }

    fn remove(&mut self, store: &Store, key: &[u8]) -> Option<Value> {
        let (k, e) = self.map.remove_entry(key)?;
        if let Some(t) = e.expires {
            self.deadlines.remove(&(t, k.clone()));
        }
        let size = entry_size(&k, &e);
        self.account(store, size, 0);
        Some(e.value)
    }

    fn set(&mut self, store: &Store, key: Bytes, value: Value, ttl: Ttl) {
        let old = self
            .map
            .get(&key[..])
            .map(|e| (entry_size(&key, e), e.expires));
        let (before, old_deadline) = old.unwrap_or((0, None));
        let expires = match ttl {
            Ttl::Keep => old_deadline,
            Ttl::Set(t) => t,
        };
        if old_deadline != expires {
            if let Some(t) = old_deadline {
                self.deadlines.remove(&(t, key.clone()));
            }
            if let Some(t) = expires {
                self.deadlines.insert((t, key.clone()));
            }
        }
        let e = Entry { value, expires };
        let after = entry_size(&key, &e);
        self.map.insert(key, e);
        self.account(store, before, after);
    }
}

impl Store {
    /// An empty keyspace; `maxmemory` 0 is unlimited.
    pub fn new(maxmemory: u64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            used: AtomicU64::new(0),
            maxmemory,
            stats: Stats::default(),
        }
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) as usize) & (SHARDS - 1)
    }

    fn lock_shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard cannot leave it inconsistent in a
        // way worse than losing that one command: keep serving.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the shard of `key`.
    pub fn db(&self, key: &[u8], now: Instant) -> Db<'_> {
        Db {
            shard: self.lock_shard(self.shard_of(key)),
            store: self,
            now,
        }
    }

    /// Bytes accounted.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The `maxmemory` limit (0: none).
    pub fn maxmemory(&self) -> u64 {
        self.maxmemory
    }

    /// Whether adding about `extra` bytes would take the keyspace over
    /// `maxmemory`.
    pub fn would_exceed(&self, extra: u64) -> bool {
        self.maxmemory != 0 && self.used().saturating_add(extra) > self.maxmemory
    }

    /// Sets every pair atomically (MSET): every shard involved is locked,
    /// in ascending order, before the first write.
    pub fn set_many(&self, pairs: Vec<(Bytes, Bytes)>) {
        let mut idx: Vec<usize> = pairs.iter().map(|(k, _)| self.shard_of(k)).collect();
        let mut order = idx.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> =
            order.iter().map(|&i| (i, self.lock_shard(i))).collect();
        for ((k, v), i) in pairs.into_iter().zip(idx.drain(..)) {
            if let Ok(g) = guards.binary_search_by_key(&i, |(j, _)| *j) {
                guards[g].1.set(self, k, Value::Str(v), Ttl::Set(None));
            }
        }
    }

    /// Keys, and keys with a deadline (expired ones not yet deleted count,
    /// as in Redis).
    pub fn counts(&self) -> (usize, usize) {
        (0..SHARDS).fold((0, 0), |(k, e), i| {
            let s = self.lock_shard(i);
            (k + s.map.len(), e + s.deadlines.len())
        })
    }

    /// Deletes every key.
    pub fn flush(&self) {
        for i in 0..SHARDS {
            let mut s = self.lock_shard(i);
            let old = std::mem::take(&mut *s);
            self.used.fetch_sub(old.bytes, Ordering::Relaxed);
            // Freed after the lock is released.
            drop(s);
            drop(old);
        }
    }

    /// Active expiry: deletes keys whose deadline is at or before `now`
    /// from the shards `first, first + step, ...`, at most `budget` in
    /// all; how many it deleted.
    pub fn expire_some(&self, now: Instant, first: usize, step: usize, budget: usize) -> usize {
        let mut done = 0;
        let mut i = first;
        while i < SHARDS && done < budget {
            let mut s = self.lock_shard(i);
            while done < budget {
                let key = match s.deadlines.first() {
                    Some((t, k)) if *t <= now => k.clone(),
                    _ => break,
                };
                s.remove(self, &key);
                self.stats.expired.fetch_add(1, Ordering::Relaxed);
                done += 1;
            }
            i += step.max(1);
        }
        done
    }
}

impl Db<'_> {
    /// The value of `key` (deleted first if expired), counting a hit or
    /// miss.
    pub fn get(&mut self, key: &[u8]) -> Option<&Value> {
        self.shard.expire_if_due(self.store, key, self.now);
        let v = self.shard.map.get(key).map(|e| &e.value);
        let stat = if v.is_some() {
            &self.store.stats.hits
        } else {
            &self.store.stats.misses
        };
        stat.fetch_add(1, Ordering::Relaxed);
        v
    }

    /// Whether `key` exists (not counted as a read).
    pub fn exists(&mut self, key: &[u8]) -> bool {
        self.shard.expire_if_due(self.store, key, self.now);
        self.shard.map.contains_key(key)
    }

    /// The value's type name, if the key exists.
    pub fn type_of(&mut self, key: &[u8]) -> Option<&'static str> {
        self.shard.expire_if_due(self.store, key, self.now);
        self.shard.map.get(key).map(|e| e.value.type_name())
    }

    /// Sets `key`.
    pub fn set(&mut self, key: Bytes, value: Value, ttl: Ttl) {
        self.shard.set(self.store, key, value, ttl);
    }

    /// Deletes `key`; its value if it existed.
    pub fn remove(&mut self, key: &[u8]) -> Option<Value> {
        self.shard.expire_if_due(self.store, key, self.now);
        self.shard.remove(self.store, key)
    }

    /// Changes the value of `key` in place with `f` (the key must exist
    /// and not be expired: call [`Db::get`] first), keeping the
    /// accounting right. A list left empty is deleted.
    pub fn update<R>(&mut self, key: &[u8], f: impl FnOnce(&mut Value) -> R) -> Option<R> {
        let shard = &mut *self.shard;
        let e = shard.map.get_mut(key)?;
        let before = entry_size(key, e);
        let r = f(&mut e.value);
        let after = entry_size(key, e);
        let empty = matches!(&e.value, Value::List(l) if l.items.is_empty());
        shard.account(self.store, before, after);
        if empty {
            shard.remove(self.store, key);
        }
        Some(r)
    }

    /// The deadline of `key`: `None` if it does not exist, `Some(None)`
    /// if it has none.
    pub fn deadline(&mut self, key: &[u8]) -> Option<Option<Instant>> {
        self.shard.expire_if_due(self.store, key, self.now);
        self.shard.map.get(key).map(|e| e.expires)
    }

    /// Sets or clears the deadline of an existing `key`; whether it exists.
    pub fn set_deadline(&mut self, key: &[u8], deadline: Option<Instant>) -> bool {
        self.shard.expire_if_due(self.store, key, self.now);
        let Some((k, e)) = self.shard.map.remove_entry(key) else {
            return false;
        };
        let before = entry_size(&k, &e);
        self.shard.account(self.store, before, 0);
        self.shard.set(self.store, k, e.value, Ttl::Set(deadline));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn accounting_returns_to_zero() {
        let s = Store::new(0);
        let now = Instant::now();
        let mut db = s.db(b"k", now);
        db.set(
            Bytes::from_static(b"k"),
            Value::Str(Bytes::from_static(b"v")),
            Ttl::Set(Some(now + Duration::from_secs(1))),
        );
        assert_eq!(s.used(), ENTRY_OVERHEAD + 2 + TTL_OVERHEAD);
        db.set_deadline(b"k", None);
        assert_eq!(s.used(), ENTRY_OVERHEAD + 2);
        db.remove(b"k");
        drop(db);
        assert_eq!(s.used(), 0);
        s.set_many(vec![(Bytes::from_static(b"a"), Bytes::from_static(b"1"))]);
        s.flush();
        assert_eq!((s.used(), s.counts()), (0, (0, 0)));
    }

    #[test]
    fn active_expiry_is_bounded() {
        let s = Store::new(0);
        let now = Instant::now();
        for i in 0..100u32 {
            let k = Bytes::from(i.to_string());
            s.db(&k, now).set(
                k.clone(),
                Value::Str(Bytes::new()),
                Ttl::Set(Some(now + Duration::from_millis(1))),
            );
        }
        let later = now + Duration::from_millis(2);
        assert_eq!(s.expire_some(later, 0, 1, 30), 30);
        assert_eq!(s.expire_some(later, 0, 1, 1000), 70);
        assert_eq!(s.used(), 0);
    }
}
