//! What to open and how: [`XdpConfig`] and its validation.

use crate::XdpError;

/// Kernel headroom in front of every received packet in a UMEM frame
/// (`XDP_PACKET_HEADROOM`); the packet data of a frame is what remains.
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// Smallest UMEM frame (chunk) the kernel accepts (`XDP_UMEM_MIN_CHUNK_SIZE`).
pub const MIN_FRAME_SIZE: u32 = 2048;

/// Largest aligned-mode frame: the kernel rejects chunks bigger than a
/// page (4 KiB on x86-64).
pub const MAX_FRAME_SIZE: u32 = 4096;

/// Ethernet header bytes on top of the MTU (no FCS, no VLAN tag).
pub(crate) const ETH_HEADER_LEN: u32 = 14;

/// Upper bound on the UMEM: far beyond what one queue needs (the default is
/// 4096 x 2 KiB = 8 MiB), it catches unit mistakes before a huge `mmap`.
pub const MAX_UMEM_BYTES: u64 = 4 << 30;

/// Whether to bind the socket in zero-copy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// Try zero-copy, fall back to copy mode when the driver refuses (veth
    /// and most virtual devices do, with `EOPNOTSUPP`).
    #[default]
    Auto,
    /// Zero-copy or fail.
    Force,
    /// Copy mode only.
    Off,
}

/// How to attach the XDP program that steers the queue into the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attach {
    /// Native (driver) mode, falling back to generic (SKB) mode when the
    /// driver or its configuration refuses (e.g. veth with MTU 9000).
    #[default]
    Auto,
    /// Native mode or fail.
    Native,
    /// Generic (SKB) mode: works on every interface, copy mode only.
    Generic,
}

/// Settings of one [`XdpDevice`](crate::XdpDevice): one interface queue.
///
/// Defaults (from measurements on the CI machines, see docs/transports.md):
/// 16384 frames of 2 KiB (32 MiB), 8192 of them for receive; an RX ring of
/// 8192 entries, TX and completion rings of 2048; a fill ring twice the
/// receive share; bursts of 64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpConfig {
    /// Interface name, e.g. `eth0` or `veth0`.
    pub ifname: String,
    /// Hardware queue to bind (RSS queue; 0 on single-queue devices).
    pub queue_id: u32,
    /// UMEM frames in total (power of two not required).
    pub frame_count: u32,
    /// Bytes per UMEM frame: a power of two from 2048 to 4096. The kernel
    /// keeps [`XDP_PACKET_HEADROOM`] of it, the rest holds one frame.
    pub frame_size: u32,
    /// Frames lent to the kernel for receiving (via the fill ring); the
    /// other `frame_count - rx_frames` are the transmit pool.
    pub rx_frames: u32,
    /// RX ring entries (power of two).
    pub rx_ring_size: u32,
    /// TX ring entries (power of two): the most frames one flush can hand
    /// to the kernel.
    pub tx_ring_size: u32,
    /// Fill ring entries (power of two, at least `rx_frames`, so every
    /// receive frame can be handed back at once).
    pub fill_ring_size: u32,
    /// Completion ring entries (power of two).
    pub comp_ring_size: u32,
    /// Frames one `receive` refill takes from the RX ring at most.
    pub batch_size: u32,
    /// Zero-copy policy.
    pub zero_copy: ZeroCopy,
    /// Attach-mode policy.
    pub attach: Attach,
    /// Ask the kernel for preferred busy polling (`SO_PREFER_BUSY_POLL`,
    /// `SO_BUSY_POLL`, `SO_BUSY_POLL_BUDGET`) and drive receive with a
    /// syscall when the RX ring is empty. For dedicated cores; pair it
    /// with `napi_defer_hard_irqs` / `gro_flush_timeout` on real NICs.
    pub busy_poll: bool,
    /// Replace an XDP program found on the interface that is not an AF_XDP
    /// program (a firewall, a load balancer). Off by default: warpwire
    /// refuses to remove someone else's program. Stale AF_XDP programs
    /// (left by a crashed run) are always removed.
    pub replace_foreign_program: bool,
}

impl XdpConfig {
    /// The defaults for `ifname`, queue `queue_id`.
    pub fn new(ifname: impl Into<String>, queue_id: u32) -> Self {
        Self {
            ifname: ifname.into(),
            queue_id,
            frame_count: 16384,
            frame_size: 2048,
            rx_frames: 8192,
            rx_ring_size: 8192,
            tx_ring_size: 2048,
            fill_ring_size: 16384,
            comp_ring_size: 2048,
            batch_size: 64,
            zero_copy: ZeroCopy::Auto,
            attach: Attach::Auto,
            busy_poll: false,
            replace_foreign_program: false,
        }
    }

    /// Raises `frame_size` to the smallest allowed size whose frames hold
    /// a whole Ethernet frame of an interface with this `mtu` (the default
    /// 2 KiB frames hold an MTU of up to 1778), keeping the UMEM within
    /// its 4 GiB bound; sizes are never lowered. An MTU larger than even
    /// 4 KiB frames hold leaves it at the maximum (the device warns when
    /// it opens: larger frames are dropped by the kernel).
    pub fn fit_mtu(&mut self, mtu: u32) {
        let wire = mtu.saturating_add(ETH_HEADER_LEN);
        while self.frame_capacity() < wire && self.frame_size < MAX_FRAME_SIZE {
            let next = self.frame_size * 2;
            if u64::from(self.frame_count) * u64::from(next) > MAX_UMEM_BYTES {
                break;
            }
            self.frame_size = next;
        }
    }

    /// Frames of the transmit pool.
    pub fn tx_frames(&self) -> u32 {
        self.frame_count.saturating_sub(self.rx_frames)
    }

    /// Largest Ethernet frame (header included) one UMEM frame holds.
    pub fn frame_capacity(&self) -> u32 {
        self.frame_size.saturating_sub(XDP_PACKET_HEADROOM)
    }

    /// Checks every field; [`XdpDevice::open`](crate::XdpDevice::open)
    /// calls this first.
    pub fn validate(&self) -> Result<(), XdpError> {
        let bad = |field: &'static str, reason: &'static str| {
            Err(XdpError::InvalidConfig { field, reason })
        };
        validate_ifname(&self.ifname)?;
        if !self.frame_size.is_power_of_two()
            || !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&self.frame_size)
        {
            return bad("frame_size", "must be a power of two from 2048 to 4096");
        }
        if self.frame_count < 2 {
            return bad(
                "frame_count",
                "needs at least one receive and one transmit frame",
            );
        }
        if u64::from(self.frame_count) * u64::from(self.frame_size) > MAX_UMEM_BYTES {
            return bad("frame_count", "frame_count x frame_size exceeds 4 GiB");
        }
        if self.rx_frames == 0 || self.rx_frames >= self.frame_count {
            return bad(
                "rx_frames",
                "must leave at least one frame for each of receive and transmit",
            );
        }
        for (field, size) in [
            ("rx_ring_size", self.rx_ring_size),
            ("tx_ring_size", self.tx_ring_size),
            ("fill_ring_size", self.fill_ring_size),
            ("comp_ring_size", self.comp_ring_size),
        ] {
            if !size.is_power_of_two() {
                return bad(field, "must be a non-zero power of two");
            }
        }
        if self.fill_ring_size < self.rx_frames {
            return bad(
                "fill_ring_size",
                "must hold every receive frame (at least rx_frames)",
            );
        }
        if self.batch_size == 0 || self.batch_size > self.rx_ring_size {
            return bad("batch_size", "must be from 1 to rx_ring_size");
        }
        if self.zero_copy == ZeroCopy::Force && self.attach == Attach::Generic {
            return bad(
                "zero_copy",
                "zero-copy needs native attach; generic (SKB) mode always copies",
            );
        }
        Ok(())
    }
}

/// The kernel's rules for interface names (`dev_valid_name`).
fn validate_ifname(name: &str) -> Result<(), XdpError> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(XdpError::InvalidInterfaceName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<(), XdpError>) -> &'static str {
        match r {
            Err(XdpError::InvalidConfig { field, .. }) => field,
            Err(XdpError::InvalidInterfaceName { .. }) => "ifname",
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn fit_mtu_raises_the_frame_size_only_as_far_as_needed() {
        let mut c = XdpConfig::new("veth0", 0);
        c.fit_mtu(1500);
        assert_eq!(c.frame_size, 2048);
        c.fit_mtu(1778);
        assert_eq!(c.frame_size, 2048);
        c.fit_mtu(1779);
        assert_eq!(c.frame_size, 4096);
        c.fit_mtu(3500);
        assert_eq!(c.frame_size, 4096);
        c.fit_mtu(9000);
        assert_eq!(c.frame_size, 4096, "at most the largest size");
        c.fit_mtu(1500);
        assert_eq!(c.frame_size, 4096, "never lowered");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn defaults_follow_the_measured_platform_values() {
        let c = XdpConfig::new("veth0", 0);
        c.validate().unwrap();
        assert_eq!((c.frame_count, c.frame_size), (16384, 2048));
        assert_eq!(c.tx_frames(), 8192);
        assert_eq!(c.fill_ring_size, 2 * c.rx_frames);
        assert_eq!(
            (c.rx_ring_size, c.tx_ring_size, c.comp_ring_size),
            (8192, 2048, 2048)
        );
        assert_eq!(c.batch_size, 64);
        assert_eq!(c.frame_capacity(), 1792);
        assert!(!c.replace_foreign_program);
    }

    #[test]
    fn interface_names_follow_kernel_rules() {
        for good in ["eth0", "veth-a_1", "x", "abcdefghijklmno"] {
            XdpConfig::new(good, 0).validate().unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "abcdefghijklmnop",
            "a\0b",
        ] {
            assert_eq!(
                field_of(XdpConfig::new(bad, 0).validate()),
                "ifname",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn frame_geometry_is_checked() {
        let mut c = XdpConfig::new("eth0", 0);
        for size in [0, 1024, 3000, 8192] {
            c.frame_size = size;
            assert_eq!(field_of(c.validate()), "frame_size");
        }
        c.frame_size = 4096;
        c.validate().unwrap();
        assert_eq!(c.frame_capacity(), 3840);

        let mut c = XdpConfig::new("eth0", 0);
        c.frame_count = 1;
        assert_eq!(field_of(c.validate()), "frame_count");
        c.frame_count = u32::MAX;
        assert_eq!(field_of(c.validate()), "frame_count");
    }

    #[test]
    fn frame_split_leaves_both_directions_something() {
        let mut c = XdpConfig::new("eth0", 0);
        c.rx_frames = 0;
        assert_eq!(field_of(c.validate()), "rx_frames");
        c.rx_frames = c.frame_count;
        assert_eq!(field_of(c.validate()), "rx_frames");
        c.rx_frames = c.frame_count - 1;
        c.fill_ring_size = c.frame_count;
        c.validate().unwrap();
        assert_eq!(c.tx_frames(), 1);
    }

    #[test]
    fn rings_must_be_powers_of_two_and_fill_must_hold_the_rx_share() {
        let mut c = XdpConfig::new("eth0", 0);
        c.tx_ring_size = 1000;
        assert_eq!(field_of(c.validate()), "tx_ring_size");
        let mut c = XdpConfig::new("eth0", 0);
        c.comp_ring_size = 0;
        assert_eq!(field_of(c.validate()), "comp_ring_size");
        let mut c = XdpConfig::new("eth0", 0);
        c.fill_ring_size = 1024;
        assert_eq!(field_of(c.validate()), "fill_ring_size");
    }

    #[test]
    fn batch_and_mode_combinations() {
        let mut c = XdpConfig::new("eth0", 0);
        c.batch_size = 0;
        assert_eq!(field_of(c.validate()), "batch_size");
        c.batch_size = c.rx_ring_size + 1;
        assert_eq!(field_of(c.validate()), "batch_size");

        let mut c = XdpConfig::new("eth0", 0);
        c.zero_copy = ZeroCopy::Force;
        c.attach = Attach::Generic;
        assert_eq!(field_of(c.validate()), "zero_copy");
        c.attach = Attach::Native;
        c.validate().unwrap();
    }
}
