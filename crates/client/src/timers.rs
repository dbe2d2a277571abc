//! Request bookkeeping of the I/O thread: the deadline heap and the id map.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

/// Stale heap entries tolerated beyond twice the live ones before the heap
/// is rebuilt: rebuilding costs O(n), so it must be rare enough to be
/// amortised over at least n insertions, and this floor keeps small heaps
/// from being rebuilt over and over.
const COMPACT_SLACK: usize = 1024;

/// Request deadlines, earliest first, with lazy deletion: a completed
/// request leaves its entry behind, and the entry is skipped (checked
/// against the live set) when it reaches the top. O(log n) per request, no
/// scan per poll; [`Deadlines::compact`] bounds the stale entries.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Deadlines {
    /// Tracks `id`, due at `at`.
    pub(crate) fn push(&mut self, at: Instant, id: u64) {
        self.heap.push(Reverse((at, id)));
    }

    /// Entries held, stale ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// The earliest deadline of a live id, dropping stale entries on top.
    pub(crate) fn next_live(&mut self, is_live: impl Fn(u64) -> bool) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek() {
            if is_live(*id) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// The next id (live or stale) whose deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<u64> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, id))| id),
            _ => None,
        }
    }

    /// Drops stale entries once they outnumber the live ones by far.
    pub(crate) fn compact(&mut self, live: usize, is_live: impl Fn(u64) -> bool) {
        if self.heap.len() > 2 * live + COMPACT_SLACK {
            self.heap.retain(|Reverse((_, id))| is_live(*id));
        }
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.heap.clear();
    }
}

/// Hasher for request ids: they are sequential and chosen by us, so there
/// is nothing to defend against and SipHash would be wasted work. One
/// multiply (Fibonacci hashing) spreads them over the high bits the table
/// uses for its control bytes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by request id.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;

    #[test]
    fn earliest_first_and_stale_skipped() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.push(t0 + Duration::from_millis(30), 3);
        d.push(t0 + Duration::from_millis(10), 1);
        d.push(t0 + Duration::from_millis(20), 2);
        let live: HashSet<u64> = [2, 3].into();
        assert_eq!(
            d.next_live(|id| live.contains(&id)),
            Some(t0 + Duration::from_millis(20))
        );
        assert_eq!(d.len(), 2, "the stale top entry was dropped");
        assert_eq!(d.pop_expired(t0 + Duration::from_millis(5)), None);
        assert_eq!(d.pop_expired(t0 + Duration::from_millis(25)), Some(2));
        assert_eq!(d.pop_expired(t0 + Duration::from_millis(25)), None);
        assert_eq!(d.pop_expired(t0 + Duration::from_secs(1)), Some(3));
        assert_eq!(d.next_live(|_| true), None);
    }

    #[test]
    fn compaction_bounds_stale_entries() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        for id in 0..10_000u64 {
            d.push(t0 + Duration::from_millis(id), id);
        }
        // Only the last 10 are live.
        let is_live = |id: u64| id >= 9_990;
        d.compact(10, is_live);
        assert_eq!(d.len(), 10);
        d.compact(10, is_live);
        assert_eq!(d.len(), 10);
        // Below the slack nothing is rebuilt.
        d.push(t0, 1);
        d.compact(10, is_live);
        assert_eq!(d.len(), 11);
    }

    #[test]
    fn id_map_works_with_sequential_ids() {
        let mut m: IdMap<u64> = IdMap::default();
        for id in 1..=10_000u64 {
            m.insert(id, id * 2);
        }
        assert_eq!(m.get(&777), Some(&1554));
        assert_eq!(m.remove(&1), Some(2));
        assert_eq!(m.len(), 9_999);
    }
}
