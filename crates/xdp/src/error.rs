//! The crate's error type.

use std::io;

use crate::device::XdpMode;

/// Why an AF_XDP device could not be opened or queried.
///
/// Errors on the packet path (kick, poll) are
/// [`warpwire_transport::DeviceError`]s instead, as the trait says.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// A configuration field is out of range.
    #[error("invalid XDP configuration: {field} {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The interface name breaks the kernel's naming rules.
    #[error("invalid interface name {name:?}: 1 to 15 bytes, no '/', ':', NUL or whitespace")]
    InvalidInterfaceName {
        /// The name given.
        name: String,
    },
    /// No such interface in the calling thread's network namespace, or its
    /// index, MTU or MAC address could not be read.
    #[error("interface {ifname}: cannot read {what}")]
    Interface {
        /// The interface.
        ifname: String,
        /// What was being read (index, MTU, MAC, queue count).
        what: &'static str,
        /// The ioctl's error (`ENODEV`: no such interface here).
        #[source]
        source: io::Error,
    },
    /// The queue does not exist on the interface.
    #[error("interface {ifname} has {queues} receive queue(s); queue {queue_id} does not exist")]
    NoSuchQueue {
        /// The interface.
        ifname: String,
        /// The queue asked for.
        queue_id: u32,
        /// How many it has.
        queues: u32,
    },
    /// The calling thread's network namespace could not be identified.
    #[error("cannot identify the calling thread's network namespace")]
    Netns(#[source] io::Error),
    /// Querying the interface's XDP program failed.
    #[error("interface {ifname}: cannot query its XDP program")]
    ProgramQuery {
        /// The interface.
        ifname: String,
        /// The libbpf/netlink error.
        #[source]
        source: io::Error,
    },
    /// A program that is not an AF_XDP program is attached and the
    /// configuration does not allow replacing it.
    #[error(
        "interface {ifname} carries XDP program {name:?} (id {id}), not recognisably an AF_XDP \
         program; remove it (`ip link set dev {ifname} xdp off`) or set replace_foreign_program"
    )]
    ForeignProgram {
        /// The interface.
        ifname: String,
        /// Program id.
        id: u32,
        /// Program name.
        name: String,
    },
    /// Removing a (stale or foreign) XDP program failed.
    #[error(
        "interface {ifname}: cannot detach XDP program {id}; try `ip link set dev {ifname} xdp off`"
    )]
    ProgramDetach {
        /// The interface.
        ifname: String,
        /// Program id.
        id: u32,
        /// The libbpf/netlink error.
        #[source]
        source: io::Error,
    },
    /// The UMEM could not be configured.
    #[error("invalid UMEM geometry")]
    UmemConfig(#[source] xsk_rs::config::UmemConfigBuilderError),
    /// A ring size was refused.
    #[error("invalid ring size for {ring}")]
    RingSize {
        /// Which ring.
        ring: &'static str,
        /// xsk-rs's error.
        #[source]
        source: xsk_rs::config::QueueSizeError,
    },
    /// The UMEM could not be created (mmap, registration).
    #[error("cannot create the UMEM ({frames} frames of {frame_size} bytes)")]
    Umem {
        /// Frames asked for.
        frames: u32,
        /// Bytes per frame.
        frame_size: u32,
        /// xsk-rs's error (its source is the errno).
        #[source]
        source: xsk_rs::umem::UmemCreateError,
    },
    /// No allowed mode could bind the socket and attach the program. Each
    /// failed attempt is logged; this carries the last one.
    #[error(
        "cannot bind an AF_XDP socket to {ifname} queue {queue_id} in any allowed mode \
         ({attempts} tried; last: {last})"
    )]
    Bind {
        /// The interface.
        ifname: String,
        /// The queue.
        queue_id: u32,
        /// How many modes were tried.
        attempts: usize,
        /// The mode of the last attempt.
        last: XdpMode,
        /// The last attempt's error (its source is the errno).
        #[source]
        source: xsk_rs::socket::SocketCreateError,
    },
    /// libxdp bound the socket but handed back no fill and completion
    /// rings (only happens with a shared UMEM, which this crate never uses).
    #[error("libxdp returned no fill/completion rings for {ifname} queue {queue_id}")]
    MissingRings {
        /// The interface.
        ifname: String,
        /// The queue.
        queue_id: u32,
    },
    /// The fill ring took fewer frames than validated geometry guarantees.
    #[error("fill ring accepted {accepted} of {offered} receive frames")]
    FillRing {
        /// Frames offered.
        offered: usize,
        /// Frames taken.
        accepted: usize,
    },
    /// A socket option could not be set or read.
    #[error("socket option {option} failed")]
    SocketOption {
        /// The option (`SO_BUSY_POLL`, `XDP_OPTIONS`, ...).
        option: &'static str,
        /// The errno.
        #[source]
        source: io::Error,
    },
}
