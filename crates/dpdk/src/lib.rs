//! # warpwire-dpdk: DPDK poll-mode drivers as a [`PacketDevice`](warpwire_transport::PacketDevice)
//!
//! A safe layer over `warpwire-dpdk-sys`: [`Eal`] (once per process),
//! [`Mempool`]s of packet buffers, [`Port`]s configured and started with N
//! queue pairs (RSS when N > 1), and [`DpdkDevice`], one queue pair as the
//! frame device the smoltcp stack drives. One device per worker and queue.
//!
//! ## Ownership and the packet path
//!
//! ```text
//!   Eal ◄──── Mempool ◄──── Port (configure, queues, start; stop+close on drop)
//!    ▲  (Arc)    ▲  (Arc)     ▲  (Arc, queue claimed)
//!    └───────────┴────────────┴──── DpdkDevice (port, queue q)
//!
//!   RECEIVE                                   TRANSMIT
//!   rx_burst(port, q) ── one call per burst   stash ◄── alloc_bulk(burst), one call
//!     │                                         │ transmit()/receive(): None if the
//!     ▼                                         │ pool is empty (backpressure)
//!   batch[head..len]                            ▼ TxToken::consume(len): append, write
//!     │ receive() -> RxToken                  pending (in order, bounded)
//!     ▼ consume(): &[u8] of the mbuf            │ flush(): tx_burst once; what the
//!   rx_done ── free_bulk before next burst      │ PMD did not take stays, in order
//!                                               ▼
//!                                             PMD (memif ring, tap fd, ring, ...)
//! ```
//!
//! - Handles are `Arc`s: a device keeps its port, pool and EAL alive, so
//!   `rte_eal_cleanup` runs after the last port is closed and the last
//!   pool freed, whatever order the caller drops things in.
//! - Receive is zero-copy: the [`RxToken`](warpwire_transport::RxToken)
//!   lends the mbuf's data; the mbuf is freed (in bulk) after consume.
//!   Frames spanning several mbufs and, with receive checksum offload,
//!   frames the driver flags bad are dropped and counted.
//! - Transmit writes straight into an mbuf. [`PacketDevice::flush`](warpwire_transport::PacketDevice::flush)
//!   calls `tx_burst` once and keeps what the PMD refused for the next
//!   flush; nothing is dropped. Pending frames are bounded
//!   ([`DeviceConfig::max_pending`]): beyond it `transmit` says `None`.
//! - Poll mode: [`PacketDevice::wait`](warpwire_transport::PacketDevice::wait)
//!   returns at once and there is no waker; callers busy-poll.
//!
//! ## EAL: once per process
//!
//! DPDK cannot initialise EAL twice in a process, even after cleanup. A
//! second [`Eal::init`] is an error. [`probe()`] therefore probes in a child
//! process (binaries call [`probe_child_hook`] first in `main`; the crate's
//! `warpwire-dpdk-probe` binary is the probe on its own, and what its tests
//! probe through), and the tests each run in a child process of their own. Use a unique
//! `--file-prefix` per process: cleanup removes `/var/run/dpdk/<prefix>`.
//! Without hugepages: `--no-huge --no-pci -m 256 --no-shconf`. Hugepage
//! files of runs with hugepages (without `--in-memory`) are not removed.
//!
//! ## Threads
//!
//! A device may move between threads. Threads that are not EAL lcores use
//! mempools without the per-lcore cache (correct, a little slower). A
//! worker thread registers with [`Eal::register_thread`]: it gets an lcore
//! id (so the cache works) and is pinned to the CPUs of one of EAL's
//! lcores (`-l`), worker `i` to the `i`-th, round-robin. The
//! [`LcoreGuard`] unregisters it; [`DpdkDevice::attach_lcore`] ties the
//! guard to the thread's device.
//!
//! ## What this crate does not do
//!
//! No TCP/IP (that is `warpwire-stack`), no multi-segment (jumbo) frames,
//! no transmit checksum offload (never claimed), no interrupt mode, no
//! flow rules, no secondary processes, no hot-plug.

mod device;
mod eal;
mod error;
mod lcore;
mod mempool;
mod port;
mod probe;

pub use device::{DeviceConfig, DpdkDevice, DpdkRxToken, DpdkStats, DpdkTxToken};
pub use eal::Eal;
pub use error::{DpdkError, RteErrno};
pub use lcore::{Lcore, LcoreGuard};
pub use mempool::Mempool;
pub use port::{Link, Port, PortConfig, PortInfo, PortStats};
pub use probe::{LINKED_PMDS, PROBE_CHILD_ENV, probe, probe_child_hook};

/// Bytes every mbuf keeps free in front of the frame (`RTE_PKTMBUF_HEADROOM`).
pub const HEADROOM: usize = warpwire_dpdk_sys::RTE_PKTMBUF_HEADROOM as usize;

/// `RTE_MBUF_DEFAULT_BUF_SIZE` (2176): a data room that holds a 1518-byte
/// frame after the headroom.
pub const DEFAULT_DATA_ROOM: u16 = warpwire_dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;
