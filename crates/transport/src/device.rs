//! The frame-level device trait that AF_XDP, DPDK and the simulator
//! implement, and that the smoltcp stack consumes.
//!
//! It keeps smoltcp's token design (a token lends the driver's buffer, the
//! stack parses or writes headers straight into it) and adds what a
//! poll-mode driver needs: receive refills its batch with one native call
//! (rx_burst, xsk consume) when the batch is empty; transmit tokens queue
//! frames that [`PacketDevice::flush`] hands to the NIC once per poll; a
//! partial TX burst keeps the rest queued for the next flush.

use std::time::{Duration, Instant};

/// Lends one received frame.
pub trait RxToken {
    /// Calls `f` with the frame's bytes; the buffer goes back to the driver
    /// (fill ring, mempool) afterwards.
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R;
}

/// Lends one transmit buffer.
pub trait TxToken {
    /// Calls `f` with a `len`-byte buffer to fill; the frame is queued for
    /// the next [`PacketDevice::flush`].
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R;
}

/// What a device offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCapabilities {
    /// Largest Ethernet frame, header included, without FCS.
    pub max_frame: usize,
    /// Frames one native rx/tx call moves at most.
    pub max_burst: usize,
    /// The driver verified IPv4/TCP checksums on receive (or the medium
    /// delivers partial checksums the stack must not verify, as veth does).
    pub rx_checksum_offload: bool,
    /// The NIC fills in IPv4/TCP checksums on transmit.
    pub tx_checksum_offload: bool,
    /// The device's MAC address.
    pub mac: [u8; 6],
}

/// Device errors.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The native rx/tx/kick/poll call failed.
    #[error("device i/o failed")]
    Io(#[source] std::io::Error),
    /// The link is down.
    #[error("link down")]
    LinkDown,
}

/// A source and sink of Ethernet frames with lent buffers.
pub trait PacketDevice {
    /// Token for a received frame.
    type RxToken<'a>: RxToken
    where
        Self: 'a;
    /// Token for a frame to send.
    type TxToken<'a>: TxToken
    where
        Self: 'a;

    /// What the device offers.
    fn capabilities(&self) -> DeviceCapabilities;

    /// The next received frame, with a transmit token for an immediate
    /// reply (ARP, TCP ACK). When the current batch is used up this makes one
    /// native receive call for the next burst. `None`: nothing received, or
    /// no transmit buffer free (backpressure, never a panic).
    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)>;

    /// A transmit buffer, `None` when the pool or ring is exhausted.
    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>>;

    /// Hands queued frames to the NIC with one native call (and a kick where
    /// the driver needs one). Frames the NIC did not take stay queued.
    /// Returns how many frames left.
    fn flush(&mut self) -> Result<usize, DeviceError>;

    /// Frames queued and not yet taken by the NIC.
    fn tx_pending(&self) -> usize;

    /// Sleeps until a frame may have arrived or `timeout` passes (xsk poll
    /// fd, interrupt mode). Poll-mode devices without one return at once.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), DeviceError>;

    /// A handle that makes a [`PacketDevice::wait`] in progress return
    /// (an eventfd in the xsk poll set, a condition variable in the
    /// simulator). `None`: the device cannot be woken, and callers wait in
    /// short slices instead.
    fn waker(&self) -> Option<std::sync::Arc<dyn crate::Wake>> {
        None
    }
}
