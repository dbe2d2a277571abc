//! # The generational connection table every backend keeps
//!
//! A backend names its connections by [`ConnId`]: a slot index plus the
//! slot's generation. [`ConnTable`] is the one place that hands those ids
//! out. It stores the connections in a dense vector of slots, reuses freed
//! slots (last freed, first reused, as `slab` does), and bumps a slot's
//! generation each time its occupant leaves, so an id kept by a consumer
//! after [`Event::Closed`](crate::Event::Closed) never reaches the
//! connection that moves into the slot next.
//!
//! ```text
//!   slots:  index 0          index 1          index 2          index 3
//!          ┌───────────────┬────────────────┬───────────────┬───────────────┐
//!          │ gen 4         │ gen 1          │ gen 0         │ gen 7         │
//!          │ Occupied(conn)│ Vacant(next: 3)│ Occupied(conn)│ Vacant(end)   │
//!          └───────────────┴────────────────┴───────────────┴───────────────┘
//!   free list head ─► 1 ─► 3 ─► end        (the next insert takes index 1,
//!                                            as conn#1.1)
//!
//!   get(conn#0.4) → the connection      get(conn#0.3) → None (stale)
//!   remove(conn#2.0) → slot 2 becomes gen 1, heads the free list
//! ```
//!
//! Two ways in, both O(1), neither hashes:
//! - by [`ConnId`] ([`ConnTable::get`], [`ConnTable::get_mut`],
//!   [`ConnTable::remove`]): what the consumer hands the
//!   [`Transport`](crate::Transport) methods; the generation is checked, so
//!   a stale or unknown id is `None`.
//! - by raw slot index ([`ConnTable::at`], [`ConnTable::at_mut`],
//!   [`ConnTable::remove_at`], indexing): for completion and readiness
//!   paths that carry only the index (a mio token, an io_uring
//!   `user_data`, an RDMA work-request id). These return the slot's live id
//!   with the value, so events name the connection correctly.
//!
//! An id can be known before its connection exists:
//! [`ConnTable::vacant_entry`] reserves nothing but tells the index and id
//! the next insert gets, so a backend can register the index with the OS
//! (a mio token, an rdma_cm context) and insert only once that succeeded.
//!
//! A table may be bounded ([`ConnTable::with_limit`]): slot indices then
//! stay below the limit, which is what a backend needs when it packs the
//! index into a fixed number of bits (io_uring `user_data`, RDMA
//! work-request ids) or caps connections per worker. Every table is bounded
//! at least by the `u32` index of a [`ConnId`].
//!
//! A slot whose generation reaches `u32::MAX` is retired when its occupant
//! leaves instead of wrapping to 0: after four billion reuses of one slot
//! the table gives up that slot (one entry of memory) rather than the
//! guarantee that a stale id never resolves.
//!
//! What it does not do: no I/O and no per-connection state of its own
//! beyond the generation; no hashing, no shrinking (freed slots are reused,
//! never returned to the allocator); no generation check on the raw-index
//! paths, which the backend uses only where the index cannot be stale (a
//! slot is not freed while operations naming it are in flight) or checks
//! the generation itself (RDMA work-request ids carry part of it). It does
//! not decide what "usable" means: a backend that keeps a closing
//! connection in its slot still filters on its own state.

use std::fmt;
use std::ops::{Index, IndexMut};

use crate::ConnId;

/// The most slots any table holds: every index must fit the `u32` of a
/// [`ConnId`].
const MAX_SLOTS: usize = (u32::MAX as usize).saturating_add(1);

/// End of the free list.
const NO_SLOT: usize = usize::MAX;

/// A generational slab of connections: the one place a backend's
/// [`ConnId`]s come from. See the [module documentation](self).
pub struct ConnTable<T> {
    slots: Vec<Slot<T>>,
    /// First vacant slot to reuse, or [`NO_SLOT`].
    free: usize,
    /// Occupied slots.
    len: usize,
    /// Slot indices stay below this.
    limit: usize,
}

struct Slot<T> {
    /// Generation of the current occupant, or of the next one while vacant.
    generation: u32,
    state: State<T>,
}

enum State<T> {
    Occupied(T),
    /// On the free list; the next free slot, or [`NO_SLOT`].
    Vacant(usize),
    /// Generations exhausted: never reused.
    Retired,
}

/// A slot the next insert will take, and the id it will get: obtained
/// from [`ConnTable::vacant_entry`]. Dropping it inserts nothing.
pub struct VacantEntry<'a, T> {
    table: &'a mut ConnTable<T>,
    index: usize,
    generation: u32,
}

impl<T> ConnTable<T> {
    /// An empty table bounded only by the `u32` index of [`ConnId`].
    pub const fn new() -> Self {
        Self::with_limit(MAX_SLOTS)
    }

    /// An empty table whose slot indices stay below `limit` (so it holds at
    /// most `limit` connections). `limit` is capped at 2^32, the indices a
    /// [`ConnId`] can carry.
    pub const fn with_limit(limit: usize) -> Self {
        Self {
            slots: Vec::new(),
            free: NO_SLOT,
            len: 0,
            limit: if limit < MAX_SLOTS { limit } else { MAX_SLOTS },
        }
    }

    /// The bound on slot indices.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Number of connections held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether an insert would fail: no freed slot to reuse and no room
    /// below the limit for a new one.
    pub fn is_full(&self) -> bool {
        self.free == NO_SLOT && self.slots.len() >= self.limit
    }

    /// The slot the next insert takes and the id it will get, or `None` if
    /// the table is full. Nothing is reserved until
    /// [`VacantEntry::insert`]; the table cannot change in between (the
    /// entry borrows it).
    pub fn vacant_entry(&mut self) -> Option<VacantEntry<'_, T>> {
        let (index, generation) = if self.free != NO_SLOT {
            (self.free, self.slots[self.free].generation)
        } else if self.slots.len() < self.limit {
            (self.slots.len(), 0)
        } else {
            return None;
        };
        Some(VacantEntry {
            table: self,
            index,
            generation,
        })
    }

    /// Inserts a connection and returns its new id; gives the value back
    /// if the table is full.
    pub fn insert(&mut self, value: T) -> Result<ConnId, T> {
        match self.vacant_entry() {
            Some(entry) => Ok(entry.insert(value)),
            None => Err(value),
        }
    }

    /// Whether `id` names a connection held now (its generation matches).
    pub fn contains(&self, id: ConnId) -> bool {
        self.get(id).is_some()
    }

    /// The connection `id` names; `None` for an unknown or stale id.
    pub fn get(&self, id: ConnId) -> Option<&T> {
        match self.slots.get(id.index()) {
            Some(Slot {
                generation,
                state: State::Occupied(value),
            }) if *generation == id.generation() => Some(value),
            _ => None,
        }
    }

    /// The connection `id` names, mutably; `None` for an unknown or stale
    /// id.
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        match self.slots.get_mut(id.index()) {
            Some(Slot {
                generation,
                state: State::Occupied(value),
            }) if *generation == id.generation() => Some(value),
            _ => None,
        }
    }

    /// The id of the connection in slot `index`, if the slot is occupied.
    pub fn id_at(&self, index: usize) -> Option<ConnId> {
        self.at(index).map(|(id, _)| id)
    }

    /// The connection in slot `index` and its id (raw-index paths: tokens,
    /// completions). No generation is checked: see the module docs.
    pub fn at(&self, index: usize) -> Option<(ConnId, &T)> {
        match self.slots.get(index) {
            Some(Slot {
                generation,
                state: State::Occupied(value),
            }) => Some((make_id(index, *generation), value)),
            _ => None,
        }
    }

    /// The connection in slot `index` and its id, mutably.
    pub fn at_mut(&mut self, index: usize) -> Option<(ConnId, &mut T)> {
        match self.slots.get_mut(index) {
            Some(Slot {
                generation,
                state: State::Occupied(value),
            }) => Some((make_id(index, *generation), value)),
            _ => None,
        }
    }

    /// Removes the connection `id` names; `None` (and nothing removed) for
    /// an unknown or stale id. The slot's generation moves on, so `id` is
    /// dead from now on.
    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        if !self.contains(id) {
            return None;
        }
        self.remove_at(id.index()).map(|(_, value)| value)
    }

    /// Removes the connection in slot `index`, returning its (now dead) id
    /// and the value; `None` if the slot is not occupied.
    pub fn remove_at(&mut self, index: usize) -> Option<(ConnId, T)> {
        let slot = self.slots.get_mut(index)?;
        let generation = slot.generation;
        let next = if generation == u32::MAX {
            State::Retired
        } else {
            State::Vacant(self.free)
        };
        match std::mem::replace(&mut slot.state, next) {
            State::Occupied(value) => {
                if generation != u32::MAX {
                    slot.generation = generation + 1;
                    self.free = index;
                }
                self.len -= 1;
                Some((make_id(index, generation), value))
            }
            not_occupied => {
                slot.state = not_occupied;
                None
            }
        }
    }

    /// The connections and their ids, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &T)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| match &slot.state {
                State::Occupied(value) => Some((make_id(index, slot.generation), value)),
                _ => None,
            })
    }

    /// The connections, mutably, and their ids, in slot order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ConnId, &mut T)> + '_ {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(index, slot)| match &mut slot.state {
                State::Occupied(value) => Some((make_id(index, slot.generation), value)),
                _ => None,
            })
    }
}

/// The id of slot `index` at `generation`. Every slot index is below
/// [`MAX_SLOTS`], so it fits the `u32`.
fn make_id(index: usize, generation: u32) -> ConnId {
    ConnId::new(index as u32, generation)
}

impl<T> VacantEntry<'_, T> {
    /// The slot index the connection will have (for a token or a
    /// completion key registered before the insert).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The id the connection will have.
    pub fn id(&self) -> ConnId {
        make_id(self.index, self.generation)
    }

    /// Puts the connection in the slot; returns its id.
    pub fn insert(self, value: T) -> ConnId {
        let table = self.table;
        let occupied = State::Occupied(value);
        if self.index == table.slots.len() {
            table.slots.push(Slot {
                generation: self.generation,
                state: occupied,
            });
        } else {
            let slot = &mut table.slots[self.index];
            if let State::Vacant(next) = slot.state {
                table.free = next;
            }
            slot.state = occupied;
        }
        table.len += 1;
        make_id(self.index, self.generation)
    }
}

impl<T> Default for ConnTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Index<usize> for ConnTable<T> {
    type Output = T;

    /// The connection in slot `index`.
    ///
    /// # Panics
    ///
    /// If the slot is not occupied (as `slab` and `Vec` indexing do): for
    /// paths where the backend knows the slot is live.
    fn index(&self, index: usize) -> &T {
        match self.at(index) {
            Some((_, value)) => value,
            None => panic!("connection slot {index} is not occupied"),
        }
    }
}

impl<T> IndexMut<usize> for ConnTable<T> {
    /// The connection in slot `index`, mutably.
    ///
    /// # Panics
    ///
    /// If the slot is not occupied.
    fn index_mut(&mut self, index: usize) -> &mut T {
        match self.at_mut(index) {
            Some((_, value)) => value,
            None => panic!("connection slot {index} is not occupied"),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for ConnTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<T> fmt::Debug for VacantEntry<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VacantEntry").field(&self.id()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_at_generation_zero_and_slots_fill_in_order() {
        let mut t = ConnTable::new();
        let a = t.insert("a").unwrap();
        let b = t.insert("b").unwrap();
        assert_eq!((a.index(), a.generation()), (0, 0));
        assert_eq!((b.index(), b.generation()), (1, 0));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(a), Some(&"a"));
        assert_eq!(t[1], "b");
    }

    #[test]
    fn a_removed_id_is_stale_and_its_slot_reused_with_a_new_generation() {
        let mut t = ConnTable::new();
        let a = t.insert(1).unwrap();
        assert_eq!(t.remove(a), Some(1));
        assert!(t.is_empty());
        assert_eq!(t.get(a), None);
        assert_eq!(t.remove(a), None);
        let b = t.insert(2).unwrap();
        assert_eq!(b.index(), a.index());
        assert_ne!(b, a);
        assert_eq!(
            t.get(a),
            None,
            "the stale id must not reach the new occupant"
        );
        assert_eq!(t.get_mut(b), Some(&mut 2));
        assert_eq!(t.remove(a), None, "a stale remove leaves the occupant");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn freed_slots_are_reused_last_freed_first() {
        let mut t = ConnTable::new();
        let ids: Vec<_> = (0..4).map(|i| t.insert(i).unwrap()).collect();
        t.remove(ids[1]);
        t.remove(ids[3]);
        assert_eq!(t.insert(10).unwrap().index(), 3);
        assert_eq!(t.insert(11).unwrap().index(), 1);
        assert_eq!(t.insert(12).unwrap().index(), 4);
    }

    #[test]
    fn vacant_entry_tells_the_id_before_the_value_exists() {
        let mut t = ConnTable::new();
        let a = t.insert("a").unwrap();
        t.remove(a);
        let id = {
            let entry = t.vacant_entry().unwrap();
            assert_eq!((entry.index(), entry.id().generation()), (0, 1));
            entry.id()
            // Dropped without inserting: nothing changes.
        };
        assert!(t.is_empty());
        let entry = t.vacant_entry().unwrap();
        assert_eq!(entry.id(), id);
        assert_eq!(entry.insert("b"), id);
        assert_eq!(t.get(id), Some(&"b"));
    }

    #[test]
    fn raw_index_access_returns_the_live_id() {
        let mut t = ConnTable::new();
        let a = t.insert('a').unwrap();
        t.remove(a);
        let b = t.insert('b').unwrap();
        assert_eq!(t.at(b.index()), Some((b, &'b')));
        assert_eq!(t.id_at(b.index()), Some(b));
        if let Some((id, v)) = t.at_mut(b.index()) {
            assert_eq!(id, b);
            *v = 'c';
        }
        assert_eq!(t.at(7), None);
        assert_eq!(t.remove_at(b.index()), Some((b, 'c')));
        assert_eq!(t.remove_at(b.index()), None);
        assert_eq!(t.id_at(b.index()), None);
    }

    #[test]
    fn a_limit_bounds_indices_and_freed_slots_are_still_reused() {
        let mut t = ConnTable::with_limit(2);
        let a = t.insert(0).unwrap();
        let _b = t.insert(1).unwrap();
        assert!(t.is_full());
        assert!(t.vacant_entry().is_none());
        assert_eq!(t.insert(2), Err(2));
        t.remove(a);
        assert!(!t.is_full());
        let c = t.insert(3).unwrap();
        assert_eq!(c.index(), 0);
        assert!(t.is_full());
        assert_eq!(ConnTable::<u8>::with_limit(usize::MAX).limit(), MAX_SLOTS);
        assert_eq!(ConnTable::<u8>::with_limit(0).insert(1), Err(1));
    }

    #[test]
    fn a_slot_with_exhausted_generations_is_retired_not_wrapped() {
        let mut t = ConnTable::new();
        let a = t.insert(0).unwrap();
        t.slots[0].generation = u32::MAX;
        let last = ConnId::new(0, u32::MAX);
        assert_eq!(t.get(a), None);
        assert_eq!(t.remove(last), Some(0));
        let b = t.insert(1).unwrap();
        assert_eq!(b.index(), 1, "the retired slot is not reused");
        assert_eq!(t.get(ConnId::new(0, 0)), None, "no wrap to generation 0");
        assert_eq!(t.remove_at(0), None);
        assert_eq!(t.len(), 1);
        // A retired slot counts against the limit.
        let mut t = ConnTable::with_limit(1);
        t.insert(0).unwrap();
        t.slots[0].generation = u32::MAX;
        t.remove_at(0);
        assert!(t.is_full());
        assert!(t.is_empty());
    }

    #[test]
    fn iteration_yields_live_entries_with_their_ids() {
        let mut t = ConnTable::new();
        let ids: Vec<_> = (0..5).map(|i| t.insert(i).unwrap()).collect();
        t.remove(ids[2]);
        for (_, v) in t.iter_mut() {
            *v *= 10;
        }
        let seen: Vec<_> = t.iter().map(|(id, v)| (id, *v)).collect();
        assert_eq!(
            seen,
            vec![(ids[0], 0), (ids[1], 10), (ids[3], 30), (ids[4], 40)]
        );
        assert_eq!(
            format!("{t:?}"),
            "{conn#0.0: 0, conn#1.0: 10, conn#3.0: 30, conn#4.0: 40}"
        );
    }

    #[test]
    #[should_panic(expected = "not occupied")]
    fn indexing_a_vacant_slot_panics() {
        let t = ConnTable::<u8>::new();
        let _ = t[0];
    }

    mod prop {
        use std::collections::{BTreeMap, HashSet};

        use proptest::prelude::*;

        use super::super::*;

        #[derive(Debug, Clone)]
        enum Op {
            Insert,
            /// Remove the n-th live id (mod the number live).
            Remove(usize),
            /// Remove by raw index the n-th live slot.
            RemoveAt(usize),
            /// Use the n-th id ever handed out (live or stale).
            Get(usize),
            /// Remove by the n-th id ever handed out (live or stale).
            RemoveAny(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => Just(Op::Insert),
                2 => any::<usize>().prop_map(Op::Remove),
                1 => any::<usize>().prop_map(Op::RemoveAt),
                3 => any::<usize>().prop_map(Op::Get),
                1 => any::<usize>().prop_map(Op::RemoveAny),
            ]
        }

        proptest! {
            /// Whatever the sequence: a removed id never resolves again (not
            /// by get, get_mut, contains or remove), live ids are unique and
            /// resolve to their own value, raw-index access reports the live
            /// id, and len/iter agree with a model.
            #[test]
            fn stale_ids_never_resolve(
                limit in 1usize..12,
                ops in proptest::collection::vec(op(), 1..300),
            ) {
                let mut t = ConnTable::with_limit(limit);
                // Model: live id -> value; every id ever handed out.
                let mut live: BTreeMap<ConnId, u64> = BTreeMap::new();
                let mut issued: Vec<ConnId> = Vec::new();
                let mut dead: HashSet<ConnId> = HashSet::new();
                let mut next = 0u64;
                for op in ops {
                    match op {
                        Op::Insert => {
                            let full = t.is_full();
                            match t.insert(next) {
                                Ok(id) => {
                                    prop_assert!(!full);
                                    prop_assert!(id.index() < limit);
                                    prop_assert!(!dead.contains(&id), "{id} handed out again");
                                    prop_assert!(live.insert(id, next).is_none(), "{id} duplicated");
                                    issued.push(id);
                                }
                                Err(v) => {
                                    prop_assert!(full);
                                    prop_assert_eq!(v, next);
                                    prop_assert_eq!(live.len(), limit);
                                }
                            }
                            next += 1;
                        }
                        Op::Remove(n) | Op::RemoveAt(n) if !live.is_empty() => {
                            let id = *live.keys().nth(n % live.len()).unwrap();
                            let value = live.remove(&id).unwrap();
                            if matches!(op, Op::Remove(_)) {
                                prop_assert_eq!(t.remove(id), Some(value));
                            } else {
                                prop_assert_eq!(t.remove_at(id.index()), Some((id, value)));
                            }
                            dead.insert(id);
                        }
                        Op::Remove(_) | Op::RemoveAt(_) => {}
                        Op::Get(n) | Op::RemoveAny(n) if !issued.is_empty() => {
                            let id = issued[n % issued.len()];
                            let want = live.get(&id).copied();
                            prop_assert_eq!(t.get(id).copied(), want);
                            prop_assert_eq!(t.get_mut(id).map(|v| *v), want);
                            prop_assert_eq!(t.contains(id), want.is_some());
                            if matches!(op, Op::RemoveAny(_)) {
                                prop_assert_eq!(t.remove(id), want);
                                if want.is_some() {
                                    live.remove(&id);
                                    dead.insert(id);
                                }
                            }
                        }
                        Op::Get(_) | Op::RemoveAny(_) => {}
                    }
                    prop_assert_eq!(t.len(), live.len());
                    let listed: BTreeMap<ConnId, u64> =
                        t.iter().map(|(id, v)| (id, *v)).collect();
                    prop_assert_eq!(&listed, &live);
                    for (&id, &v) in &live {
                        prop_assert_eq!(t.at(id.index()), Some((id, &v)));
                    }
                    for id in &dead {
                        prop_assert!(t.get(*id).is_none(), "stale {id} resolved");
                    }
                }
            }
        }
    }
}
