//! # warpwire-xdp: an AF_XDP socket as a [`PacketDevice`](warpwire_transport::PacketDevice)
//!
//! [`XdpDevice`] binds one AF_XDP socket (through xsk-rs and its bundled
//! libxdp) to one queue of one interface and moves Ethernet frames between
//! that queue and the smoltcp stack without the kernel's network stack in
//! between. One device per worker and NIC queue; RSS spreads flows.
//!
//! ## Frames and rings
//!
//! The UMEM is one `mmap`ed area cut into `frame_count` frames of
//! `frame_size` bytes (the kernel keeps 256 bytes of headroom in each).
//! Four single-producer/single-consumer rings pass frame *addresses*
//! between user space and the kernel; whoever last received an address
//! owns that frame, and nobody else touches it:
//!
//! ```text
//!                     UMEM: frame_count x frame_size (one mmap)
//!  ┌──────────── rx_frames: receive share ───────────┬────── the rest: transmit pool ──────┐
//!  └─────────────────────────────────────────────────┴─────────────────────────────────────┘
//!
//!   RECEIVE (owner: frame state)                     TRANSMIT (owner: frame state)
//!
//!   user: refill list  ◄────────────────┐            user: free list  ◄──────────────────┐
//!     │ produce, one call               │              │ transmit() -> TxToken           │
//!     │ (receive, flush, wait)          │              ▼ consume(len): write in place    │
//!     ▼                                 │            user: flush queue                   │
//!   kernel: FILL ring                   │              │ flush(): one produce; what the  │
//!     │ NIC/driver writes a packet      │              │ ring cannot take stays queued   │
//!     ▼                                 │              ▼                                 │
//!   kernel: RX ring                     │            kernel: TX ring                     │
//!     │ consume, one call per burst     │              │ sendto kick (copy mode: at most │
//!     ▼                                 │              │ 32 frames per kick)             │
//!   user: batch                         │              ▼                                 │
//!     │ receive() -> RxToken            │            kernel/NIC: on the wire             │
//!     ▼                                 │              │                                 │
//!   user: RxToken lends the frame ──────┘              ▼                                 │
//!         (consumed or dropped)                      kernel: COMP ring ── reap, one call ┘
//!                                                      (receive, transmit, flush)
//! ```
//!
//! - Receive frames never leave the receive side and transmit frames
//!   never leave the transmit side, so a busy direction cannot starve the
//!   other.
//! - Receive is zero-copy: the [`RxToken`](warpwire_transport::RxToken)
//!   hands the stack a slice of the UMEM frame the kernel (or NIC) wrote,
//!   and the frame goes back to the fill ring in the next refill.
//! - Transmit writes straight into a UMEM frame. `transmit()` returns
//!   `None` when the pool is empty even after reaping completions:
//!   backpressure, never a panic. `flush()` produces the queued frames
//!   onto the TX ring in one call, keeps in order whatever the ring did not
//!   take, and kicks the kernel (`sendto`) when it needs it: in copy mode
//!   always, since the kernel transmits only inside that syscall and at
//!   most 32 frames per call, so flush kicks again while frames remain on
//!   the ring (bounded per flush).
//! - Completed descriptors come back with length 0; a transmit token sets
//!   the length on every use.
//!
//! ## Modes
//!
//! [`XdpDevice::open`] tries native (driver) attach before generic (SKB)
//! attach and zero-copy before copy mode, as [`XdpConfig`] allows, and
//! reports what it got in [`XdpDevice::mode`]. veth binds native in copy
//! mode (its driver refuses zero-copy with `EOPNOTSUPP`); NICs such as
//! ice, i40e and mlx5 bind zero-copy. `XDP_USE_NEED_WAKEUP` is always on:
//! no syscall on the receive path unless the driver asks for one.
//!
//! ## The XDP program
//!
//! libxdp attaches its default program, which steers the queue into the
//! socket. While it is attached *all* traffic of the queue goes to the
//! socket: the stack must answer ARP itself. A program left by a crashed
//! run is removed at the next open (see [`XdpDevice::open`]);
//! dropping the last device of the process on an interface detaches the
//! program. Destructors do not run on signals by default: programs must
//! handle SIGINT/SIGTERM and return normally.
//!
//! ## Network namespaces
//!
//! A socket belongs to the network namespace it was created in, and
//! interface names and indexes are per namespace. [`XdpDevice::open`],
//! [`probe()`] and [`attached_program`] use the *calling thread's*
//! namespace (for tests: a thread that `setns`'d into one). A device may
//! move between threads afterwards; closing it re-enters its namespace.
//!
//! ## Logging
//!
//! Opening logs the modes obtained (`tracing`, INFO). libbpf's and
//! libxdp's own messages are routed into `tracing` too (target
//! `warpwire_xdp::native`) instead of stderr.
//!
//! ## What this crate does not do
//!
//! No TCP/IP (that is `warpwire-stack`), no multi-buffer (jumbo) frames,
//! no shared UMEM between sockets, no custom XDP programs, no unaligned
//! chunks. Checksums: it reports `rx_checksum_offload` on veth, whose
//! local senders leave checksums partial, so that the stack accepts them,
//! and never claims transmit offload.

mod bind;
mod config;
mod datapath;
mod device;
mod error;
mod frames;
mod native_log;
mod probe;
mod prog;
mod sys;

pub use config::{
    Attach, MAX_FRAME_SIZE, MAX_UMEM_BYTES, MIN_FRAME_SIZE, XDP_PACKET_HEADROOM, XdpConfig,
    ZeroCopy,
};
pub use datapath::{XdpRxToken, XdpTxToken};
pub use device::{KernelStats, XdpDevice, XdpMode, XdpStats};
pub use error::XdpError;
pub use probe::probe;
pub use prog::{AttachMode, AttachedProgram, attached_program};

/// The MTU of `ifname` in the calling thread's network namespace (for
/// [`XdpConfig::fit_mtu`] before opening a device).
///
/// # Errors
/// [`XdpError::Interface`] when the interface cannot be read.
pub fn interface_mtu(ifname: &str) -> Result<u32, XdpError> {
    sys::iface_info(ifname)
        .map(|i| i.mtu)
        .map_err(|source| XdpError::Interface {
            ifname: ifname.to_owned(),
            what: "MTU",
            source,
        })
}
