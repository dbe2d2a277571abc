//! Lcores: EAL's logical cores, and registering a thread of ours as one.
//!
//! EAL starts one thread per lcore of `-l`/`--lcores` and pins it; the
//! thread calling [`Eal::init`] becomes the main lcore. warpwire's workers
//! are threads of its own (the engine spawns them), so each one that drives
//! a queue registers with DPDK ([`Eal::register_thread`]): it gets an lcore
//! id of its own (so mempools use a per-lcore cache for it) and is pinned
//! to the CPUs of one lcore of EAL's set, worker `i` to the `i`-th lcore,
//! round-robin.
//!
//! ```text
//!   -l 2,3         EAL lcores (id: cpus)   2: {2}   3: {3}
//!   worker 0  ──register_thread(0)──► lcore id 4 (DPDK's pick), pinned to {2}
//!   worker 1  ──register_thread(1)──► lcore id 5,                pinned to {3}
//!   worker 2  ──register_thread(2)──► lcore id 6,                pinned to {2}
//! ```
//!
//! The lcore id a registered thread gets is not the `-l` id whose CPUs it
//! runs on: EAL's own (idle) thread keeps that id. DPDK hands out the ids
//! not in the `-l` set, up to `RTE_MAX_LCORE`.

use std::thread::ThreadId;

use tracing::{debug, warn};
use warpwire_dpdk_sys as sys;

use crate::eal::Eal;
use crate::error::{DpdkError, RteErrno};

/// One lcore of EAL's set (`-l`/`--lcores`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lcore {
    /// The lcore id.
    pub id: u32,
    /// The CPUs its thread is pinned to (one with `-l`; `--lcores` can map
    /// an lcore to a set).
    pub cpus: Vec<usize>,
}

/// The calling thread's registration as a DPDK lcore, from
/// [`Eal::register_thread`]; the thread is unregistered (its lcore id
/// released) when the guard is dropped.
///
/// Hand it to the thread's [`DpdkDevice`](crate::DpdkDevice) with
/// [`attach_lcore`](crate::DpdkDevice::attach_lcore) so it lives exactly as
/// long as the device. Dropped on another thread than the one it
/// registered, it cannot unregister (DPDK only unregisters the calling
/// thread): it says so in the log and the lcore id stays taken.
#[derive(Debug)]
pub struct LcoreGuard {
    lcore_id: u32,
    eal_lcore: u32,
    cpus: Vec<usize>,
    thread: ThreadId,
    /// Keeps EAL alive: unregistering after `rte_eal_cleanup` is not allowed.
    _eal: Eal,
}

impl LcoreGuard {
    /// The lcore id DPDK gave the thread.
    pub fn lcore_id(&self) -> u32 {
        self.lcore_id
    }

    /// The lcore of EAL's set whose CPUs the thread is pinned to.
    pub fn eal_lcore(&self) -> u32 {
        self.eal_lcore
    }

    /// The CPUs the thread is pinned to.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }
}

impl Drop for LcoreGuard {
    fn drop(&mut self) {
        if std::thread::current().id() != self.thread {
            warn!(
                lcore = self.lcore_id,
                "lcore guard dropped on another thread: not unregistered"
            );
            return;
        }
        // SAFETY: this thread registered itself (same ThreadId) and EAL is
        // live (`_eal`); rte_thread_unregister only touches the calling
        // thread's registration.
        unsafe { sys::rte_thread_unregister() };
        debug!(lcore = self.lcore_id, "thread unregistered from DPDK");
    }
}

impl Eal {
    /// The lcores EAL was started with, in id order (the main lcore
    /// among them).
    pub fn lcores(&self) -> Vec<Lcore> {
        let max = sys::RTE_MAX_LCORE;
        let mut out = Vec::new();
        // rte_get_next_lcore(-1, ...) is how RTE_LCORE_FOREACH starts.
        let mut i = u32::MAX;
        loop {
            // SAFETY: EAL is live (`self`); the call reads EAL's lcore table.
            i = unsafe { sys::rte_get_next_lcore(i, 0, 0) };
            if i >= max {
                break;
            }
            // SAFETY: EAL is live and `i` is below RTE_MAX_LCORE.
            let set = unsafe { sys::rte_lcore_cpuset(i) };
            out.push(Lcore {
                id: i,
                cpus: cpus_of(&set),
            });
        }
        out
    }

    /// Pins the calling thread to the CPUs of EAL's main lcore: for the
    /// thread that called [`Eal::init`] when it goes on to poll a queue
    /// itself (a client), since `init` leaves it unpinned.
    ///
    /// # Errors
    /// [`DpdkError::Affinity`] when the thread cannot be pinned there.
    pub fn pin_to_main_lcore(&self) -> Result<(), DpdkError> {
        // SAFETY: EAL is live (`self`); the call reads EAL's configuration.
        let main = unsafe { sys::rte_get_main_lcore() };
        // SAFETY: EAL is live and `main` is its main lcore, below
        // RTE_MAX_LCORE; the set is a plain value copied out.
        let mut set = unsafe { sys::rte_lcore_cpuset(main) };
        let cpus = cpus_of(&set);
        // SAFETY: `set` is a valid cpu set; the call pins the calling thread
        // and records, for the main lcore, the set it already has.
        if cpus.is_empty() || unsafe { sys::rte_thread_set_affinity(&mut set) } != 0 {
            return Err(DpdkError::Affinity {
                eal_lcore: main,
                cpus,
            });
        }
        debug!(eal_lcore = main, cpus = ?cpus, "thread pinned to EAL's main lcore");
        Ok(())
    }

    /// Registers the calling thread with DPDK as a (non-EAL) lcore and pins
    /// it to the CPUs of the `worker`-th lcore of EAL's set (round-robin
    /// when there are more workers than lcores). Call it on the thread
    /// that will drive a queue, before it bursts; keep the guard as long as
    /// the thread does (see [`LcoreGuard`]).
    ///
    /// # Errors
    /// [`DpdkError::AlreadyLcore`] when the thread already is an lcore (EAL's
    /// main thread, or registered twice); [`DpdkError::NoLcores`];
    /// [`DpdkError::ThreadRegister`]
    /// when DPDK refuses (no free lcore id below `RTE_MAX_LCORE`, or
    /// multi-process in use); [`DpdkError::Affinity`] when the thread
    /// cannot be pinned.
    pub fn register_thread(&self, worker: usize) -> Result<LcoreGuard, DpdkError> {
        // SAFETY: the shim reads the calling thread's lcore id (a TLS value).
        let current = unsafe { sys::shim_lcore_id() };
        if current != sys::LCORE_ID_ANY {
            return Err(DpdkError::AlreadyLcore { lcore: current });
        }
        let lcores = self.lcores();
        let target = lcores
            .get(worker % lcores.len().max(1))
            .cloned()
            .ok_or(DpdkError::NoLcores)?;
        // SAFETY: EAL is live (`self`); registering affects only the calling
        // thread, which is not an lcore yet (checked above).
        if unsafe { sys::rte_thread_register() } != 0 {
            return Err(DpdkError::ThreadRegister(RteErrno::last()));
        }
        // SAFETY: as above: the calling thread's TLS lcore id.
        let lcore_id = unsafe { sys::shim_lcore_id() };
        let guard = LcoreGuard {
            lcore_id,
            eal_lcore: target.id,
            cpus: target.cpus.clone(),
            thread: std::thread::current().id(),
            _eal: self.clone(),
        };
        // SAFETY: EAL is live and `target.id` an enabled lcore below
        // RTE_MAX_LCORE; the set is a plain value copied out.
        let mut set = unsafe { sys::rte_lcore_cpuset(target.id) };
        // SAFETY: `set` is a valid cpu set; the call pins the calling thread
        // and records the set in DPDK's per-thread and per-lcore state.
        if unsafe { sys::rte_thread_set_affinity(&mut set) } != 0 {
            // `guard` unregisters the thread as it goes.
            return Err(DpdkError::Affinity {
                eal_lcore: target.id,
                cpus: target.cpus,
            });
        }
        debug!(
            worker,
            lcore = lcore_id,
            eal_lcore = target.id,
            cpus = ?guard.cpus,
            "thread registered with DPDK and pinned"
        );
        Ok(guard)
    }
}

/// The CPUs in a cpu set.
fn cpus_of(set: &sys::rte_cpuset_t) -> Vec<usize> {
    let mut out = Vec::new();
    for (w, word) in set.__bits.iter().enumerate() {
        let bits = std::mem::size_of_val(word) * 8;
        for b in 0..bits {
            if (word >> b) & 1 == 1 {
                out.push(w * bits + b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_of_lists_the_set_bits_across_words() {
        let mut set = sys::rte_cpuset_t::default();
        set.__bits[0] = 0b1001;
        set.__bits[1] = 1;
        let bits = std::mem::size_of_val(&set.__bits[0]) * 8;
        assert_eq!(cpus_of(&set), vec![0, 3, bits]);
        assert!(cpus_of(&sys::rte_cpuset_t::default()).is_empty());
    }
}
