//! The packet path: receive batches and the fill ring, transmit tokens,
//! flush and kick, wait. One native ring call per burst; no allocation.

use std::time::{Duration, Instant};

use tracing::{debug, warn};
use warpwire_transport::{DeviceCapabilities, DeviceError, PacketDevice, RxToken, TxToken};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

use crate::device::XdpDevice;
use crate::frames::TxFrames;
use crate::sys;

/// Copy mode transmits at most 32 frames per kick (the kernel's
/// `TX_BATCH_SIZE`); 64 kicks drain a full default TX ring (2048) in one
/// flush while bounding the syscalls a flush may make. What is left goes
/// out on the next flush.
const MAX_KICKS_PER_FLUSH: u32 = 64;

/// Receive side: the RX ring, the fill ring and the current batch.
pub(crate) struct Rx {
    pub(crate) ring: RxQueue,
    pub(crate) fill: FillQueue,
    /// Descriptors of the current burst; `batch[head..len]` not handed out.
    pub(crate) batch: Vec<FrameDesc>,
    pub(crate) head: usize,
    pub(crate) len: usize,
    /// Frames whose token is done, waiting to go back on the fill ring.
    pub(crate) refill: Vec<FrameDesc>,
}

impl Rx {
    /// Puts returned frames back on the fill ring (one native call).
    fn refill(&mut self) {
        if self.refill.is_empty() {
            return;
        }
        let want = u32::try_from(self.refill.len()).unwrap_or(u32::MAX);
        let room = (self.fill.nb_free(want) as usize).min(self.refill.len());
        if room == 0 {
            return;
        }
        // SAFETY: every frame in `refill` came off this UMEM's RX ring and
        // its token is gone, so nothing references it; after this call the
        // kernel owns it until it shows up on the RX ring again.
        let done = unsafe { self.fill.produce(&self.refill[..room]) };
        self.refill.drain(..done);
    }
}

/// Transmit side: the TX ring, the completion ring and the frame pool.
pub(crate) struct Tx {
    pub(crate) ring: TxQueue,
    pub(crate) comp: CompQueue,
    pub(crate) frames: TxFrames<FrameDesc>,
    /// Scratch for one completion-ring read.
    pub(crate) done: Vec<FrameDesc>,
    pub(crate) ring_size: u32,
    /// Descriptors on the TX ring the kernel had not consumed at the last
    /// look (end of the last flush).
    pub(crate) backlog: usize,
}

impl Tx {
    /// Takes completed frames back into the free list (one native call).
    pub(crate) fn reap(&mut self) {
        if self.frames.in_kernel() == 0 {
            return;
        }
        // SAFETY: the completion ring only returns addresses this device
        // put on the TX ring, all frames of this UMEM.
        let n = unsafe { self.comp.consume(&mut self.done) };
        self.frames.complete(&self.done[..n]);
    }

    /// Descriptors produced onto the TX ring and not consumed by the kernel.
    fn on_ring(&mut self) -> usize {
        self.ring_size.saturating_sub(self.ring.nb_free_exact()) as usize
    }
}

/// Everything tied to the socket; dropped first, inside the device's
/// network namespace (see `Drop for XdpDevice`).
pub(crate) struct Io {
    pub(crate) rx: Rx,
    pub(crate) tx: Tx,
    pub(crate) umem: Umem,
}

impl XdpDevice {
    /// Kicks the TX ring until the kernel has taken what is on it, the
    /// kernel stops making progress, or the per-flush bound is reached.
    fn kick_tx(&mut self) -> Result<(), DeviceError> {
        let tx = &mut self.io.tx;
        let mut backlog = tx.on_ring();
        let mut kicks = 0;
        // Copy mode only transmits inside the syscall, so it always needs
        // one; zero-copy drivers say so through need_wakeup.
        while backlog > 0
            && kicks < MAX_KICKS_PER_FLUSH
            && (!self.mode.zero_copy || tx.ring.needs_wakeup())
        {
            kicks += 1;
            if let Err(e) = sys::kick_tx(self.fd) {
                match e.raw_os_error() {
                    // Budget used up (more than 32 queued), driver queue
                    // busy, a frame dropped, completion ring full: progress
                    // is judged below.
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => {}
                    Some(libc::ENETDOWN) => {
                        tx.backlog = backlog;
                        self.stats.tx_kicks += u64::from(kicks);
                        return Err(DeviceError::LinkDown);
                    }
                    _ => {
                        tx.backlog = backlog;
                        self.stats.tx_kicks += u64::from(kicks);
                        return Err(DeviceError::Io(e));
                    }
                }
            }
            tx.reap();
            let now = tx.on_ring();
            let progressed = now < backlog;
            backlog = now;
            // A zero-copy driver works on by itself after one wakeup.
            if !progressed || self.mode.zero_copy {
                break;
            }
        }
        tx.backlog = backlog;
        self.stats.tx_kicks += u64::from(kicks);
        Ok(())
    }
}

/// A received frame, read straight out of the UMEM. The frame goes back to
/// the fill ring (at the next refill) when the token is consumed or
/// dropped.
pub struct XdpRxToken<'a> {
    umem: &'a Umem,
    desc: FrameDesc,
    refill: &'a mut Vec<FrameDesc>,
}

impl RxToken for XdpRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        // SAFETY: `desc` came off this UMEM's RX ring and is not on any
        // ring until this token (dropped right after) queues it for refill,
        // so neither the kernel nor anyone else writes the frame meanwhile.
        let data = unsafe { self.umem.data(&self.desc) };
        f(data.contents())
    }
}

impl Drop for XdpRxToken<'_> {
    fn drop(&mut self) {
        // Capacity for every receive frame was reserved at open: no
        // reallocation on this path.
        self.refill.push(self.desc);
    }
}

/// A transmit buffer: a free UMEM frame, queued for the next flush once
/// written.
pub struct XdpTxToken<'a> {
    umem: &'a Umem,
    frames: &'a mut TxFrames<FrameDesc>,
    capacity: usize,
    oversize: &'a mut u64,
    no_room: &'a mut u64,
}

impl TxToken for XdpTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let desc = if len <= self.capacity {
            self.frames.take()
        } else {
            None
        };
        let Some(mut desc) = desc else {
            if len > self.capacity {
                // Too big for a frame (the stack exceeded max_frame): it
                // cannot be sent; count it, never panic.
                *self.oversize += 1;
                warn!(
                    len,
                    capacity = self.capacity,
                    "transmit frame larger than a UMEM frame; not sent"
                );
            } else {
                // The reply half of a receive made with no frame free:
                // dropped (TCP retransmits or re-ACKs), counted.
                *self.no_room += 1;
            }
            let mut scratch = vec![0u8; len];
            return f(&mut scratch);
        };
        let r = {
            // SAFETY: `desc` was on the free list: not on any ring, owned by
            // user space, a frame of this UMEM.
            let mut data = unsafe { self.umem.data_mut(&mut desc) };
            // Sets the descriptor's length; completed descriptors come back
            // with length 0, so it must be set on every use.
            data.cursor().set_pos(len);
            f(data.contents_mut())
        };
        self.frames.queue(desc);
        r
    }
}

impl PacketDevice for XdpDevice {
    type RxToken<'a> = XdpRxToken<'a>;
    type TxToken<'a> = XdpTxToken<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps
    }

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let io = &mut *self.io;
        // Receiving never waits for a free transmit frame (two full peers
        // would each wait for the other): without one, the reply token
        // drops what is written to it (counted in `tx_no_room`).
        if io.tx.frames.free() == 0 {
            io.tx.reap();
        }
        let rx = &mut io.rx;
        if rx.head == rx.len {
            rx.refill();
            // SAFETY: `batch` only receives descriptors of this UMEM.
            rx.len = unsafe { rx.ring.consume(&mut rx.batch) };
            rx.head = 0;
            if rx.len == 0 {
                if self.busy_poll || rx.fill.needs_wakeup() {
                    self.stats.rx_kicks += 1;
                    if let Err(e) = sys::kick_rx(self.fd)
                        && !matches!(
                            e.raw_os_error(),
                            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR)
                        )
                    {
                        debug!(error = %e, "AF_XDP receive wakeup failed");
                    }
                }
                return None;
            }
        }
        let desc = *rx.batch.get(rx.head)?;
        rx.head += 1;
        self.stats.rx_frames += 1;
        Some((
            XdpRxToken {
                umem: &io.umem,
                desc,
                refill: &mut rx.refill,
            },
            XdpTxToken {
                umem: &io.umem,
                frames: &mut io.tx.frames,
                capacity: self.frame_capacity,
                oversize: &mut self.stats.tx_oversize,
                no_room: &mut self.stats.tx_no_room,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        let io = &mut *self.io;
        if io.tx.frames.free() == 0 {
            io.tx.reap();
            if io.tx.frames.free() == 0 {
                return None;
            }
        }
        Some(XdpTxToken {
            umem: &io.umem,
            frames: &mut io.tx.frames,
            capacity: self.frame_capacity,
            oversize: &mut self.stats.tx_oversize,
            no_room: &mut self.stats.tx_no_room,
        })
    }

    fn flush(&mut self) -> Result<usize, DeviceError> {
        let io = &mut *self.io;
        io.rx.refill();
        let tx = &mut io.tx;
        tx.reap();
        let ring = &mut tx.ring;
        let produced = tx.frames.submit(|descs| {
            let want = u32::try_from(descs.len()).unwrap_or(u32::MAX);
            let room = (ring.nb_free(want) as usize).min(descs.len());
            if room == 0 {
                return 0;
            }
            // SAFETY: queued frames are written and owned by user space,
            // frames of this UMEM; from here the kernel owns them until
            // they come back on the completion ring. `room` free slots were
            // just checked, so the whole slice is taken.
            unsafe { ring.produce(&descs[..room]) }
        });
        self.stats.tx_frames += produced as u64;
        self.kick_tx()?;
        Ok(produced)
    }

    fn tx_pending(&self) -> usize {
        self.io.tx.frames.queued() + self.io.tx.backlog
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), DeviceError> {
        let rx = &mut self.io.rx;
        if rx.head < rx.len {
            return Ok(());
        }
        // The kernel can only deliver into frames on the fill ring.
        rx.refill();
        if rx.ring.nb_avail(1) > 0 {
            return Ok(());
        }
        sys::poll_readable(self.fd, timeout)
            .map(|_| ())
            .map_err(DeviceError::Io)
    }
}
