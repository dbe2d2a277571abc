//! # warpwire-impair: a user-space netem for veth wires
//!
//! Our tests must push TCP transfers through loss, reordering, duplication
//! and corruption on a real veth wire, with the kernel's TCP at one or both
//! ends. The usual tool is `tc qdisc add ... netem`, but the kernel on our
//! machines is built without it (`CONFIG_NET_SCH_NETEM`, and with it
//! `act_gact`, `act_pedit` and `sch_fq`, are all off). So this crate is
//! netem in user space: a transparent layer-2 bridge that runs in a middle
//! network namespace between two veth pairs and forwards every Ethernet
//! frame both ways, with seeded faults.
//!
//! ```text
//!   ns A                         ns M                          ns B
//!   a0 10.77.5.1 ═══ veth ═══ m0      m1 ═══ veth ═══ b0 10.77.5.2
//!                              │      ▲
//!              AF_PACKET recvmsg      │ AF_PACKET send
//!                              ▼      │
//!        checksum completion ─► faults ─► time-ordered queue (when due)
//!                (the same pipeline runs from m1 to m0)
//! ```
//!
//! The bridge is transparent at layer 2: A and B share one subnet, resolve
//! each other with ARP through it, and never learn it is there. It answers
//! nothing itself and has no addresses.
//!
//! ## Fault model
//!
//! Per frame, in either direction, from one [`rand::rngs::SmallRng`]
//! seeded by `--seed` (every decision is drawn for every frame, so a seed
//! gives the same fate to the n-th frame the bridge receives, whatever
//! happened to the frames before it):
//!
//! 1. **loss**: dropped with probability `loss`;
//! 2. **checksum completion**: an IPv4 TCP or UDP checksum that does not
//!    verify is recomputed, as a NIC does on transmit (see [`checksum`]);
//! 3. **duplication**: with probability `duplicate` an intact copy is
//!    queued with the same due time;
//! 4. **corruption**: with probability `corrupt` one random bit after the
//!    Ethernet header is flipped; the IPv4 header or the completed
//!    transport checksum lets the receiver detect it (a ones'-complement
//!    sum catches every single-bit error);
//! 5. **reordering**: with probability `reorder` the frame is held back by
//!    `3 * delay + 100us` extra, so later frames overtake it;
//! 6. **delay**: every frame waits `delay` plus a uniform `[-jitter,
//!    +jitter]` in a time-ordered queue and is released when due.
//!
//! ## Requirements on the wire
//!
//! A packet socket can only send frames that fit the egress MTU, but veth
//! hands it whatever the sender built: with TSO on, the kernel sender's
//! GSO super-frames (measured: 7,306-byte frames in the first round trips
//! of a transfer; up to 64 KiB are possible), and with GRO on at the bridge's own interfaces, coalesced ones.
//! So the kernel ends need `ethtool -K IF tso off` (the stack then segments
//! in software before the wire; `gso off` too does no harm) and the bridge
//! ends need GRO off (veth's default; `ethtool -K IF gro off` to be sure).
//! Frames too large anyway are counted as `oversize`, dropped, and
//! explained once on stderr. Checksum offload may stay on: partial
//! checksums are what step 2 is for. Frames larger than 1514 bytes that fit
//! the egress MTU (jumbo veth) are forwarded whole.
//!
//! ## Not here
//!
//! Rate limiting, loss correlation (Gilbert-Elliott), other link types than
//! Ethernet, IPv6 checksum completion. [`fault::Impairer`] is free of I/O
//! and clocks; [`sys`] holds all FFI and `unsafe`.

pub mod bridge;
pub mod checksum;
pub mod fault;
pub mod sys;

use std::io;

pub use bridge::{Bridge, IoStats, Report};
pub use fault::{BadProbability, Direction, FaultConfig, Impairer, Stats};

/// Everything that stops the bridge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An interface name containing a NUL byte.
    #[error("interface name {ifname:?} contains a NUL byte")]
    BadInterfaceName {
        /// The name given.
        ifname: String,
    },
    /// `--a` and `--b` name the same interface: bridging it to itself
    /// would loop every frame.
    #[error("--a and --b are both {ifname:?}: bridging an interface to itself loops")]
    SameInterface {
        /// The name given twice.
        ifname: String,
    },
    /// No interface of that name in this network namespace.
    #[error("no interface {ifname:?} in this network namespace")]
    NoSuchInterface {
        /// The name given.
        ifname: String,
        /// The `if_nametoindex` error.
        #[source]
        source: io::Error,
    },
    /// Creating or configuring a packet socket failed (needs CAP_NET_RAW).
    #[error("{op} on {ifname} failed")]
    Socket {
        /// The call that failed.
        op: &'static str,
        /// The interface the socket is for.
        ifname: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// Receiving, sending or polling failed for a reason that will not go
    /// away (the interface vanished, for example).
    #[error("{op} on {ifname} failed")]
    Io {
        /// The call that failed.
        op: &'static str,
        /// The interface (or interfaces) involved.
        ifname: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// A fault probability outside `[0, 1]`.
    #[error(transparent)]
    Faults(#[from] BadProbability),
    /// Installing the SIGTERM/SIGINT handlers failed.
    #[error("installing signal handlers failed")]
    Signal(#[source] io::Error),
}
