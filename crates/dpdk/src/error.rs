//! The crate's error type and DPDK's error numbers.

use std::ffi::CStr;
use std::fmt;
use std::time::Duration;

use warpwire_dpdk_sys as sys;

/// A DPDK error number (`rte_errno`, or a negative return code) with
/// DPDK's text for it (`rte_strerror`, which knows DPDK's own codes on top
/// of libc's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RteErrno {
    /// The positive error number.
    pub code: i32,
    /// `rte_strerror(code)`.
    pub text: String,
}

impl RteErrno {
    /// The calling thread's `rte_errno`.
    pub(crate) fn last() -> Self {
        // SAFETY: shim_errno reads the calling thread's rte_errno; it has
        // no preconditions.
        Self::from_code(unsafe { sys::shim_errno() })
    }

    /// From a return code: DPDK returns `-errno`; some calls return the
    /// positive value.
    pub(crate) fn from_code(code: i32) -> Self {
        let code = code.saturating_abs();
        // SAFETY: rte_strerror accepts any number and returns a pointer to
        // a static string or a thread-local buffer, valid until the next
        // call on this thread; it is copied right away.
        let text = unsafe {
            let p = sys::rte_strerror(code);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Self { code, text }
    }
}

impl fmt::Display for RteErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (rte_errno {})", self.text, self.code)
    }
}

impl std::error::Error for RteErrno {}

/// Why a DPDK object could not be created, configured or queried.
///
/// Errors on the packet path are [`warpwire_transport::DeviceError`]s
/// instead, as the trait says (and a DPDK burst cannot fail: it moves
/// fewer frames).
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    /// An argument contains a NUL byte and cannot be passed to C.
    #[error("argument {arg:?} contains a NUL byte")]
    NulInArgument {
        /// The argument.
        arg: String,
    },
    /// EAL is (or was) already initialised in this process: DPDK allows one
    /// initialisation per process, ever, even after cleanup.
    #[error("EAL was already initialised in this process (once per process, even after cleanup)")]
    AlreadyInitialised,
    /// `rte_eal_init` failed.
    #[error("EAL initialisation failed")]
    EalInit(#[source] RteErrno),
    /// A mempool could not be created.
    #[error("cannot create mempool {name:?} ({n} mbufs of {data_room} bytes)")]
    Mempool {
        /// The pool's name.
        name: String,
        /// Mbufs asked for.
        n: u32,
        /// Data room per mbuf.
        data_room: u16,
        /// DPDK's error.
        #[source]
        source: RteErrno,
    },
    /// A ring (for a `net_ring` port made from one) could not be created.
    #[error("cannot create ring {name:?} or its port")]
    Ring {
        /// The ring's name.
        name: String,
        /// DPDK's error.
        #[source]
        source: RteErrno,
    },
    /// No port has this name (`--vdev` names: `net_null0`, `net_memif0`).
    #[error("no DPDK port named {name:?}")]
    NoSuchPortName {
        /// The name asked for.
        name: String,
    },
    /// The port id is not a valid, attached port.
    #[error("no DPDK port {port}")]
    NoSuchPort {
        /// The port id.
        port: u16,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration for port {port}: {field} {reason}")]
    InvalidConfig {
        /// The port.
        port: u16,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A step of bringing a port up (or querying it) failed.
    #[error("port {port}: {step} failed")]
    Port {
        /// The port.
        port: u16,
        /// The DPDK call (`rte_eth_dev_configure`, `rte_eth_rx_queue_setup`, ...).
        step: &'static str,
        /// DPDK's error.
        #[source]
        source: RteErrno,
    },
    /// The queue does not exist on the started port.
    #[error("port {port} has {queues} queue(s); queue {queue} does not exist")]
    NoSuchQueue {
        /// The port.
        port: u16,
        /// The queue asked for.
        queue: u16,
        /// How many the port was started with.
        queues: u16,
    },
    /// Another device already owns this queue: a queue's rx/tx bursts must
    /// come from one thread only.
    #[error("port {port} queue {queue} already belongs to a device")]
    QueueTaken {
        /// The port.
        port: u16,
        /// The queue.
        queue: u16,
    },
    /// The thread is already a DPDK lcore (EAL's main thread, one of its
    /// lcore threads, or registered before): it cannot register again.
    #[error("this thread already is DPDK lcore {lcore}")]
    AlreadyLcore {
        /// Its lcore id.
        lcore: u32,
    },
    /// EAL reports no enabled lcore (it always has its main one while
    /// live, so this means EAL's state is not what the wrapper expects).
    #[error("EAL has no enabled lcore")]
    NoLcores,
    /// `rte_thread_register` refused: no free lcore id below
    /// `RTE_MAX_LCORE`, or multi-process mode is in use.
    #[error("cannot register the thread with DPDK")]
    ThreadRegister(#[source] RteErrno),
    /// The thread could not be pinned to an lcore's CPUs
    /// (`pthread_setaffinity_np` refused, e.g. the CPUs are outside the
    /// process's cgroup cpuset).
    #[error("cannot pin the thread to lcore {eal_lcore}'s CPUs {cpus:?}")]
    Affinity {
        /// The EAL lcore whose CPUs were asked for.
        eal_lcore: u32,
        /// Those CPUs.
        cpus: Vec<usize>,
    },
    /// The link did not come up in time (memif: no peer connected).
    #[error("port {port}: link still down after {waited:?}")]
    LinkTimeout {
        /// The port.
        port: u16,
        /// How long it waited.
        waited: Duration,
    },
}
