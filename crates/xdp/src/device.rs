//! [`XdpDevice`]: one AF_XDP socket on one interface queue, as a
//! [`PacketDevice`](warpwire_transport::PacketDevice).

use std::fmt;
use std::fs::File;
use std::mem::ManuallyDrop;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};

use tracing::{debug, error, info, warn};
use warpwire_transport::DeviceCapabilities;
use xsk_rs::config::{FrameSize, UmemConfig};
use xsk_rs::{FrameDesc, Umem};

use crate::XdpError;
use crate::bind::{bind, remove_stale_program, ring_size};
use crate::config::ETH_HEADER_LEN as ETH_HEADER;
use crate::config::XdpConfig;
use crate::datapath::{Io, Rx, Tx};
use crate::frames::TxFrames;
use crate::prog::{self, AttachMode};
use crate::sys::{self, NetnsId, NetnsSwitch};

/// `SO_BUSY_POLL` microseconds when busy polling: the value the kernel's
/// AF_XDP documentation and xdpsock use.
const BUSY_POLL_USECS: u32 = 20;

/// Drivers whose frames from local kernel senders carry partial TCP/UDP
/// checksums (CHECKSUM_PARTIAL never gets completed on the way into XDP).
const PARTIAL_CHECKSUM_DRIVERS: &[&str] = &["veth"];

/// The modes a device runs in (or, in [`XdpError::Bind`], was tried in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpMode {
    /// Where the steering program runs.
    pub attach: AttachMode,
    /// Frames move between NIC and UMEM without a copy.
    pub zero_copy: bool,
    /// The socket uses `XDP_USE_NEED_WAKEUP` (always requested).
    pub need_wakeup: bool,
    /// Preferred busy polling is on.
    pub busy_poll: bool,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} attach, {}",
            self.attach,
            if self.zero_copy {
                "zero-copy"
            } else {
                "copy mode"
            }
        )?;
        if self.need_wakeup {
            f.write_str(", need_wakeup")?;
        }
        if self.busy_poll {
            f.write_str(", busy poll")?;
        }
        Ok(())
    }
}

/// Counters kept by the device (user-space side).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Frames handed out by `receive`.
    pub rx_frames: u64,
    /// Frames handed to the kernel by `flush`.
    pub tx_frames: u64,
    /// Transmit kicks (`sendto`).
    pub tx_kicks: u64,
    /// Receive wakeups (`recvfrom`, need_wakeup or busy poll).
    pub rx_kicks: u64,
    /// Frames not sent because the stack asked for more bytes than a UMEM
    /// frame holds (more than `capabilities().max_frame`).
    pub tx_oversize: u64,
    /// Immediate replies (the transmit half of a receive) dropped because
    /// no transmit frame was free: a receive never waits for transmit room,
    /// or two full peers would each wait for the other.
    pub tx_no_room: u64,
}

/// Counters kept by the kernel for the socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Received frames dropped for other reasons.
    pub rx_dropped: u64,
    /// Received frames dropped for an invalid descriptor.
    pub rx_invalid_descs: u64,
    /// Transmit descriptors rejected as invalid.
    pub tx_invalid_descs: u64,
    /// Received frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the TX ring empty.
    pub tx_ring_empty_descs: u64,
}

/// An AF_XDP socket bound to one interface queue: a
/// [`PacketDevice`](warpwire_transport::PacketDevice).
///
/// Open it from a thread inside the interface's network namespace; it may
/// then move to any thread (closing switches back into that namespace by
/// itself). Frames are lent straight out of the UMEM: receive tokens read
/// the kernel's buffer, transmit tokens write the frame that is sent.
///
/// Closing (dropping) detaches the XDP program when this was the process's
/// last device on the interface. Destructors do not run on SIGINT/SIGTERM
/// by default: a program using this device must catch them (e.g. with
/// `signal-hook`) and return normally, or the program stays attached until
/// the next `open` removes it. After SIGKILL the next `open` removes it.
pub struct XdpDevice {
    pub(crate) io: ManuallyDrop<Io>,
    pub(crate) fd: RawFd,
    pub(crate) caps: DeviceCapabilities,
    pub(crate) mode: XdpMode,
    pub(crate) frame_capacity: usize,
    pub(crate) ifname: String,
    pub(crate) queue_id: u32,
    pub(crate) ifindex: u32,
    /// The program this device's socket is steered by.
    pub(crate) prog_id: u32,
    pub(crate) netns: File,
    pub(crate) netns_id: NetnsId,
    pub(crate) busy_poll: bool,
    pub(crate) stats: XdpStats,
}

impl fmt::Debug for XdpDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpDevice")
            .field("ifname", &self.ifname)
            .field("queue_id", &self.queue_id)
            .field("mode", &self.mode)
            .field("prog_id", &self.prog_id)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

impl XdpDevice {
    /// Opens an AF_XDP socket on `cfg.ifname` queue `cfg.queue_id` in the
    /// calling thread's network namespace.
    ///
    /// Steps: validate `cfg`; read the interface (index, MTU, MAC, queue
    /// count); remove a stale AF_XDP program left by a crashed run (unless
    /// this process already has a device on the interface); create the
    /// UMEM; bind, trying native attach before generic and zero-copy
    /// before copy mode as `cfg` allows; hand the receive share of the
    /// frames to the fill ring. The modes obtained are logged and kept in
    /// [`mode`](Self::mode).
    ///
    /// The process is assumed to own the interface's XDP hook: the first
    /// device of this process on an interface removes any AF_XDP program
    /// already attached (after a crash it is stale and blackholes the
    /// queue), and refuses a foreign program unless
    /// [`XdpConfig::replace_foreign_program`] is set. Further devices of
    /// the same process on other queues share the program. Needs root in
    /// practice: CAP_NET_RAW for the socket, CAP_NET_ADMIN and CAP_BPF to
    /// attach, CAP_SYS_ADMIN to read program names.
    pub fn open(cfg: XdpConfig) -> Result<Self, XdpError> {
        cfg.validate()?;
        crate::native_log::install();
        let ifname = cfg.ifname.clone();
        let (netns, netns_id) = sys::current_netns().map_err(XdpError::Netns)?;
        let iface = sys::iface_info(&ifname).map_err(|source| XdpError::Interface {
            ifname: ifname.clone(),
            what: "index, MTU and MAC address",
            source,
        })?;
        match sys::rx_queue_count(&ifname) {
            Ok(Some(queues)) if cfg.queue_id >= queues => {
                return Err(XdpError::NoSuchQueue {
                    ifname,
                    queue_id: cfg.queue_id,
                    queues,
                });
            }
            Ok(_) => {}
            Err(e) => {
                debug!(%ifname, error = %e, "queue count unknown; the bind will check the queue")
            }
        }

        let mut registry = prog::registry();
        let sharing = registry.devices_on(netns_id, iface.index);
        if sharing == 0 {
            remove_stale_program(&cfg, iface.index)?;
        } else {
            debug!(%ifname, devices = sharing, "sharing the interface's XDP program with this process's other devices");
        }

        let umem_cfg = UmemConfig::builder()
            .frame_size(
                FrameSize::new(cfg.frame_size).map_err(|_| XdpError::InvalidConfig {
                    field: "frame_size",
                    reason: "must be at least 2048",
                })?,
            )
            .fill_queue_size(ring_size("fill ring", cfg.fill_ring_size)?)
            .comp_queue_size(ring_size("completion ring", cfg.comp_ring_size)?)
            .frame_headroom(0)
            .build()
            .map_err(XdpError::UmemConfig)?;
        let frames = NonZeroU32::new(cfg.frame_count).ok_or(XdpError::InvalidConfig {
            field: "frame_count",
            reason: "must not be zero",
        })?;
        let (umem, mut descs) =
            Umem::new(umem_cfg, frames, false).map_err(|source| XdpError::Umem {
                frames: cfg.frame_count,
                frame_size: cfg.frame_size,
                source,
            })?;

        let ((txq, rxq, rings), tried_attach) = bind(&cfg, &umem)?;
        let Some((fill, comp)) = rings else {
            return Err(XdpError::MissingRings {
                ifname,
                queue_id: cfg.queue_id,
            });
        };
        let fd = rxq.fd().as_raw_fd();

        // What the kernel actually did: libxdp may have reused a program
        // of this process that another queue attached, in its mode.
        let attached = prog::program_on(iface.index).unwrap_or_else(|e| {
            warn!(%ifname, error = %e, "cannot query the XDP program after binding");
            None
        });
        registry.add(netns_id, iface.index);
        drop(registry);

        let tx_descs = descs.split_off(cfg.rx_frames as usize);
        let rx_descs = descs;
        let batch = cfg.batch_size as usize;
        let capacity = cfg.frame_capacity();
        let wire = iface.mtu.saturating_add(ETH_HEADER);
        if wire > capacity {
            warn!(
                %ifname, mtu = iface.mtu, frame_capacity = capacity,
                "the MTU does not fit a UMEM frame: larger frames are dropped by the kernel; \
                 raise frame_size or lower the MTU"
            );
        }
        let driver = sys::driver_name(&ifname).unwrap_or_default();
        let caps = DeviceCapabilities {
            max_frame: wire.min(capacity) as usize,
            max_burst: batch,
            rx_checksum_offload: PARTIAL_CHECKSUM_DRIVERS.contains(&driver.as_str()),
            tx_checksum_offload: false,
            mac: iface.mac,
        };
        let mut dev = XdpDevice {
            io: ManuallyDrop::new(Io {
                rx: Rx {
                    ring: rxq,
                    fill,
                    batch: vec![FrameDesc::default(); batch],
                    head: 0,
                    len: 0,
                    refill: Vec::with_capacity(rx_descs.len()),
                },
                tx: Tx {
                    ring: txq,
                    comp,
                    done: vec![
                        FrameDesc::default();
                        (cfg.comp_ring_size.min(cfg.tx_frames())) as usize
                    ],
                    frames: TxFrames::new(tx_descs),
                    ring_size: cfg.tx_ring_size,
                    backlog: 0,
                },
                umem,
            }),
            fd,
            caps,
            mode: XdpMode {
                attach: attached.as_ref().map_or(tried_attach, |p| p.mode),
                zero_copy: false,
                need_wakeup: true,
                busy_poll: cfg.busy_poll,
            },
            frame_capacity: capacity as usize,
            ifname,
            queue_id: cfg.queue_id,
            ifindex: iface.index,
            prog_id: attached.as_ref().map_or(0, |p| p.id),
            netns,
            netns_id,
            busy_poll: cfg.busy_poll,
            stats: XdpStats::default(),
        };
        // From here on an error drops `dev`, which unbinds and detaches.

        // SAFETY: the receive share of the frames has not been handed to
        // any ring yet; from here the kernel owns them until they come
        // back on the RX ring.
        let accepted = unsafe { dev.io.rx.fill.produce(&rx_descs) };
        if accepted != rx_descs.len() {
            return Err(XdpError::FillRing {
                offered: rx_descs.len(),
                accepted,
            });
        }
        if cfg.busy_poll {
            sys::enable_busy_poll(fd, BUSY_POLL_USECS, cfg.batch_size)
                .map_err(|(option, source)| XdpError::SocketOption { option, source })?;
        }
        dev.mode.zero_copy =
            sys::xsk_is_zero_copy(fd).map_err(|source| XdpError::SocketOption {
                option: "XDP_OPTIONS",
                source,
            })?;
        info!(
            ifname = %dev.ifname, queue = dev.queue_id, mode = %dev.mode, prog_id = dev.prog_id,
            driver = %driver, max_frame = dev.caps.max_frame,
            rx_frames = cfg.rx_frames, tx_frames = cfg.tx_frames(),
            "AF_XDP device open"
        );
        Ok(dev)
    }

    /// The modes obtained (attach mode, zero-copy, need_wakeup, busy poll).
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The bound queue.
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// The id of the XDP program steering the queue into this socket (0 if
    /// it could not be determined).
    pub fn program_id(&self) -> u32 {
        self.prog_id
    }

    /// The device's own counters.
    pub fn stats(&self) -> XdpStats {
        self.stats
    }

    /// The kernel's counters for the socket (drops, empty rings).
    pub fn kernel_stats(&self) -> Result<KernelStats, XdpError> {
        let s = self
            .io
            .rx
            .ring
            .fd()
            .xdp_statistics()
            .map_err(|source| XdpError::SocketOption {
                option: "XDP_STATISTICS",
                source,
            })?;
        Ok(KernelStats {
            rx_dropped: s.rx_dropped(),
            rx_invalid_descs: s.rx_invalid_descs(),
            tx_invalid_descs: s.tx_invalid_descs(),
            rx_ring_full: s.rx_ring_full(),
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs(),
            tx_ring_empty_descs: s.tx_ring_empty_descs(),
        })
    }

    /// Frames of the transmit pool free right now (after reaping
    /// completions).
    pub fn tx_free(&mut self) -> usize {
        self.io.tx.reap();
        self.io.tx.frames.free()
    }
}

/// The AF_XDP socket, e.g. to register with an event loop (readable:
/// frames on the RX ring). Valid while the device lives.
impl AsRawFd for XdpDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for XdpDevice {
    fn drop(&mut self) {
        // libxdp detaches through rtnetlink by interface index, which means
        // something only in the device's own namespace.
        let switch = NetnsSwitch::enter(&self.netns, self.netns_id);
        if let Err(e) = &switch {
            error!(
                ifname = %self.ifname, error = %e,
                "cannot enter the device's network namespace to close it; \
                 the XDP program may stay attached (`ip link set dev {} xdp off`)",
                self.ifname
            );
        }
        let mut registry = prog::registry();
        let left = registry.remove(self.netns_id, self.ifindex);
        // SAFETY: `io` is dropped exactly once, here, and never touched
        // again: this is the device's destructor.
        unsafe { ManuallyDrop::drop(&mut self.io) };
        if left == 0 && self.prog_id != 0 && switch.is_ok() {
            // libxdp detaches when its reference count in the program drops
            // to zero; a count inherited from a crashed run would keep the
            // program alive, so check and detach it if it is still there.
            match prog::program_on(self.ifindex) {
                Ok(Some(p)) if p.id == self.prog_id => {
                    debug!(ifname = %self.ifname, prog_id = p.id, "XDP program still attached after the last socket closed; detaching");
                    if let Err(e) = prog::detach(self.ifindex, &p) {
                        error!(
                            ifname = %self.ifname, prog_id = p.id, error = %e,
                            "cannot detach the XDP program; `ip link set dev {} xdp off` removes it",
                            self.ifname
                        );
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(ifname = %self.ifname, error = %e, "cannot check for a leftover XDP program")
                }
            }
        }
        drop(registry);
        debug!(ifname = %self.ifname, queue = self.queue_id, stats = ?self.stats, "AF_XDP device closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_reads_well() {
        let m = XdpMode {
            attach: AttachMode::Native,
            zero_copy: false,
            need_wakeup: true,
            busy_poll: false,
        };
        assert_eq!(m.to_string(), "native attach, copy mode, need_wakeup");
    }

    #[test]
    fn open_rejects_bad_config_and_missing_interfaces_without_privileges() {
        let mut c = XdpConfig::new("eth0", 0);
        c.batch_size = 0;
        assert!(matches!(
            XdpDevice::open(c),
            Err(XdpError::InvalidConfig {
                field: "batch_size",
                ..
            })
        ));
        let e = XdpDevice::open(XdpConfig::new("wwnosuch0", 0)).unwrap_err();
        match e {
            XdpError::Interface { source, .. } => {
                assert_eq!(source.raw_os_error(), Some(libc::ENODEV))
            }
            other => panic!("expected an interface error, got {other:?}"),
        }
    }
}
