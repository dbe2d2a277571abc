//! [`DpdkDevice`]: one queue pair of a started port as a
//! [`PacketDevice`].

use std::ptr;
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use warpwire_dpdk_sys as sys;
use warpwire_transport::{DeviceCapabilities, DeviceError, PacketDevice, RxToken, TxToken};

use crate::error::DpdkError;
use crate::lcore::LcoreGuard;
use crate::mempool::Mempool;
use crate::port::Port;

type Mbuf = *mut sys::rte_mbuf;

/// How a device uses its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Frames per rx/tx burst and per transmit-buffer bulk allocation.
    /// 32 is DPDK's customary burst: large enough to amortise the call,
    /// small enough to stay in L1 and keep latency per burst low.
    pub burst: u16,
    /// Frames queued for transmit (not yet taken by the PMD) before
    /// `transmit` refuses more: bounds what a stalled link ties up.
    pub max_pending: usize,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            burst: 32,
            // Eight bursts: a flush that the PMD only partly takes can be
            // retried while the stack keeps producing for a while.
            max_pending: 256,
        }
    }
}

/// Counters kept by the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DpdkStats {
    /// Frames handed out by `receive`.
    pub rx_frames: u64,
    /// `rx_burst` calls.
    pub rx_bursts: u64,
    /// Frames taken by the PMD in `flush`.
    pub tx_frames: u64,
    /// `tx_burst` calls.
    pub tx_bursts: u64,
    /// Flushes the PMD took only part of (the rest stayed queued).
    pub tx_partial: u64,
    /// Times no transmit buffer could be allocated (pool exhausted).
    pub tx_alloc_failures: u64,
    /// Frames not sent because the stack asked for more bytes than an
    /// mbuf holds (more than `capabilities().max_frame`).
    pub tx_oversize: u64,
    /// Immediate replies (the transmit half of a receive) dropped because
    /// no transmit buffer was free: a receive never waits for transmit
    /// room, or two full peers would each wait for the other.
    pub tx_no_room: u64,
    /// Received frames dropped because the driver flagged a bad IPv4 or
    /// L4 checksum (with receive checksum offload on).
    pub rx_bad_checksum: u64,
    /// Received frames dropped because they span several mbufs (the pool's
    /// data room is smaller than the frame).
    pub rx_multi_segment: u64,
}

/// One queue pair (rx queue `q`, tx queue `q`) of a started [`Port`]: a
/// [`PacketDevice`]. Owns its queue: no other device may use it. May move
/// between threads; use it from one at a time.
pub struct DpdkDevice {
    port: Port,
    port_id: u16,
    queue: u16,
    tx_pool: Mempool,
    burst: u16,
    max_pending: usize,
    /// The current receive burst; `rx[rx_head..rx_len]` not handed out.
    rx: Vec<Mbuf>,
    rx_head: usize,
    rx_len: usize,
    /// Received mbufs whose token is done, freed in bulk before the next
    /// burst (capacity: one burst, never exceeded).
    rx_done: Vec<Mbuf>,
    /// Fresh transmit mbufs from the last bulk allocation.
    stash: Vec<Mbuf>,
    /// Written frames the PMD has not taken yet, in order.
    pending: Vec<Mbuf>,
    /// `ol_flags` values marking a bad checksum, 0 when offload is off.
    bad_ip: (u64, u64),
    bad_l4: (u64, u64),
    tx_capacity: usize,
    caps: DeviceCapabilities,
    stats: DpdkStats,
    /// The driving thread's lcore registration; dropped after the mbufs
    /// are freed in `Drop` (fields drop after the `Drop` body).
    lcore: Option<LcoreGuard>,
    /// Since when `wait` has been called with no frame received between.
    idle_since: Option<Instant>,
    /// Calls of `wait`, counting.
    waits: u32,
}

/// Idle this long (no frame received, the caller waiting), a polling thread
/// gives up its time slice on every wait: longer than a busy connection's
/// gaps between frames, so a round trip never pays for it.
const YIELD_AFTER: Duration = Duration::from_micros(50);
/// Before that, one wait in this many yields.
const YIELD_EVERY: u32 = 8;

// SAFETY: the mbuf pointers are owned by this device alone (nothing else
// holds them while they are in its vectors); mempools and mbufs may be
// used from any thread (threads that are not EAL lcores skip the
// per-lcore cache); the queue is claimed by this device, so no other
// thread bursts on it. `&mut self` on every packet method keeps the use to
// one thread at a time.
unsafe impl Send for DpdkDevice {}

impl std::fmt::Debug for DpdkDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkDevice")
            .field("port", &self.port_id)
            .field("queue", &self.queue)
            .field("caps", &self.caps)
            .field("stats", &self.stats)
            .finish()
    }
}

impl DpdkDevice {
    /// A device on queue pair `queue` of `port`, allocating transmit
    /// buffers from `tx_pool` (may be the port's receive pool).
    ///
    /// # Errors
    /// [`DpdkError::NoSuchQueue`], [`DpdkError::QueueTaken`],
    /// [`DpdkError::InvalidConfig`] (burst 0 or `max_pending` below it).
    pub fn new(
        port: &Port,
        queue: u16,
        tx_pool: &Mempool,
        config: DeviceConfig,
    ) -> Result<Self, DpdkError> {
        let id = port.id();
        if config.burst == 0 || config.max_pending < usize::from(config.burst) {
            return Err(DpdkError::InvalidConfig {
                port: id,
                field: "burst/max_pending",
                reason: "burst must be at least 1 and max_pending at least burst".to_owned(),
            });
        }
        port.inner.claim(queue)?;
        let burst = usize::from(config.burst);
        let rx_capacity = port.rx_pool().frame_capacity();
        let tx_capacity = tx_pool.frame_capacity().min(usize::from(u16::MAX));
        let max_frame = port.max_frame().min(rx_capacity).min(tx_capacity);
        // SAFETY: the shim returns constants.
        let (bad_ip, bad_l4) = unsafe {
            if port.rx_checksum() {
                (
                    (sys::shim_rx_cksum_mask_ip(), sys::shim_rx_cksum_bad_ip()),
                    (sys::shim_rx_cksum_mask_l4(), sys::shim_rx_cksum_bad_l4()),
                )
            } else {
                ((0, 1), (0, 1))
            }
        };
        let caps = DeviceCapabilities {
            max_frame,
            max_burst: burst,
            rx_checksum_offload: port.rx_checksum(),
            // Transmit offload would need ol_flags, l2/l3 lengths and
            // pseudo-header checksums set per mbuf: not done, so not claimed.
            tx_checksum_offload: false,
            mac: port.mac(),
        };
        debug!(port = id, queue, ?caps, "DPDK device open");
        Ok(Self {
            port: port.clone(),
            port_id: id,
            queue,
            tx_pool: tx_pool.clone(),
            burst: config.burst,
            max_pending: config.max_pending,
            rx: vec![ptr::null_mut(); burst],
            rx_head: 0,
            rx_len: 0,
            rx_done: Vec::with_capacity(burst),
            stash: Vec::with_capacity(burst),
            pending: Vec::with_capacity(config.max_pending),
            bad_ip,
            bad_l4,
            tx_capacity,
            caps,
            stats: DpdkStats::default(),
            lcore: None,
            idle_since: None,
            waits: 0,
        })
    }

    /// The port.
    pub fn port(&self) -> &Port {
        &self.port
    }

    /// The queue pair.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// The device's counters.
    pub fn stats(&self) -> DpdkStats {
        self.stats
    }

    /// Keeps the driving thread's lcore registration (from
    /// [`Eal::register_thread`](crate::Eal::register_thread)) for as long
    /// as the device lives: the thread is unregistered when the device is
    /// dropped, after its mbufs went back to the pool. Drop the device on
    /// that thread.
    pub fn attach_lcore(&mut self, guard: LcoreGuard) {
        self.lcore = Some(guard);
    }

    /// The attached lcore registration, if any.
    pub fn lcore(&self) -> Option<&LcoreGuard> {
        self.lcore.as_ref()
    }

    /// Makes sure a transmit buffer is at hand: one bulk allocation of a
    /// burst when the stash is empty, a single one when the pool has less.
    fn ensure_stash(&mut self) -> bool {
        if !self.stash.is_empty() {
            return true;
        }
        let want = usize::from(self.burst);
        // SAFETY: `stash` has capacity for a burst and is empty; on success
        // alloc_bulk wrote `want` valid mbufs, on failure none.
        unsafe {
            let spare = self.stash.as_mut_ptr();
            if sys::shim_pktmbuf_alloc_bulk(self.tx_pool.as_ptr(), spare, u32::from(self.burst))
                == 0
            {
                self.stash.set_len(want);
                return true;
            }
            let m = sys::shim_pktmbuf_alloc(self.tx_pool.as_ptr());
            if m.is_null() {
                self.stats.tx_alloc_failures += 1;
                return false;
            }
            self.stash.push(m);
        }
        true
    }

    /// Frees received mbufs whose tokens are done (one native call).
    fn free_rx_done(&mut self) {
        if self.rx_done.is_empty() {
            return;
        }
        // SAFETY: every mbuf in rx_done came from rx_burst and its token is
        // gone: nothing references it.
        unsafe {
            sys::rte_pktmbuf_free_bulk(
                self.rx_done.as_mut_ptr(),
                u32::try_from(self.rx_done.len()).unwrap_or(u32::MAX),
            )
        };
        self.rx_done.clear();
    }

    /// The next frame of the current burst that passes the checks, or one
    /// `rx_burst` for the next burst when the current one is used up.
    fn next_rx(&mut self) -> Option<Mbuf> {
        loop {
            if self.rx_head == self.rx_len {
                self.free_rx_done();
                // SAFETY: `rx` has room for `burst` pointers; the queue is
                // this device's, on a started port.
                let n = unsafe {
                    sys::shim_rx_burst(self.port_id, self.queue, self.rx.as_mut_ptr(), self.burst)
                };
                self.stats.rx_bursts += 1;
                self.rx_head = 0;
                self.rx_len = usize::from(n);
                if n == 0 {
                    return None;
                }
                self.idle_since = None;
            }
            let m = *self.rx.get(self.rx_head)?;
            self.rx_head += 1;
            // SAFETY: `m` is a valid mbuf just received.
            let (segs, flags) =
                unsafe { (sys::shim_pktmbuf_nb_segs(m), sys::shim_pktmbuf_ol_flags(m)) };
            let bad =
                flags & self.bad_ip.0 == self.bad_ip.1 || flags & self.bad_l4.0 == self.bad_l4.1;
            if segs != 1 || bad {
                if segs != 1 {
                    self.stats.rx_multi_segment += 1;
                } else {
                    self.stats.rx_bad_checksum += 1;
                }
                // Capacity: rx_done holds at most one burst, and it was
                // emptied before this burst.
                self.rx_done.push(m);
                continue;
            }
            self.stats.rx_frames += 1;
            return Some(m);
        }
    }

    fn tx_token(&mut self) -> DpdkTxToken<'_> {
        DpdkTxToken {
            stash: &mut self.stash,
            pending: &mut self.pending,
            capacity: self.tx_capacity,
            oversize: &mut self.stats.tx_oversize,
            room: true,
            no_room: &mut self.stats.tx_no_room,
        }
    }
}

/// A received frame, lent straight out of its mbuf. The mbuf is freed
/// (in bulk, before the next burst) when the token is consumed or dropped.
pub struct DpdkRxToken<'a> {
    mbuf: Mbuf,
    done: &'a mut Vec<Mbuf>,
}

impl RxToken for DpdkRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        // SAFETY: the mbuf is a single-segment frame received on this
        // device's queue and owned by this token until it is dropped right
        // after; mtod points at data_len readable bytes.
        let data = unsafe {
            let len = usize::from(sys::shim_pktmbuf_data_len(self.mbuf));
            std::slice::from_raw_parts(sys::shim_pktmbuf_mtod(self.mbuf).cast::<u8>(), len)
        };
        f(data)
    }
}

impl Drop for DpdkRxToken<'_> {
    fn drop(&mut self) {
        // Capacity for a whole burst was reserved: no reallocation here.
        self.done.push(self.mbuf);
    }
}

/// A transmit buffer: a fresh mbuf, queued for the next flush once
/// written.
pub struct DpdkTxToken<'a> {
    stash: &'a mut Vec<Mbuf>,
    pending: &'a mut Vec<Mbuf>,
    capacity: usize,
    oversize: &'a mut u64,
    /// A stashed mbuf and queue room back this token (always, except for
    /// the reply token of a receive made while the transmit side was full).
    room: bool,
    no_room: &'a mut u64,
}

impl TxToken for DpdkTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        if !self.room {
            // The reply half of a receive made with the transmit side full:
            // dropped (TCP retransmits or re-ACKs), counted.
            *self.no_room += 1;
            let mut scratch = vec![0u8; len];
            return f(&mut scratch);
        }
        // Tokens with room exist only with a stashed mbuf (receive/transmit check).
        let m = match self.stash.last() {
            Some(&m) if len <= self.capacity => m,
            _ => {
                // Larger than an mbuf (the stack exceeded max_frame): it
                // cannot be sent; count it, never panic. The mbuf stays.
                *self.oversize += 1;
                warn!(
                    len,
                    capacity = self.capacity,
                    "transmit frame larger than an mbuf; not sent"
                );
                let mut scratch = vec![0u8; len];
                return f(&mut scratch);
            }
        };
        // `len <= capacity <= u16::MAX` was checked above.
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        // SAFETY: `m` is a fresh mbuf owned by the stash; its tailroom is
        // the pool's frame capacity, at least `len`, so append succeeds and
        // returns `len` writable bytes that nothing else references.
        let r = unsafe {
            let p = sys::shim_pktmbuf_append(m, len16);
            if p.is_null() {
                *self.oversize += 1;
                let mut scratch = vec![0u8; len];
                return f(&mut scratch);
            }
            f(std::slice::from_raw_parts_mut(p.cast::<u8>(), len))
        };
        self.stash.pop();
        // Capacity max_pending reserved; tokens are only handed out below it.
        self.pending.push(m);
        r
    }
}

impl PacketDevice for DpdkDevice {
    type RxToken<'a> = DpdkRxToken<'a>;
    type TxToken<'a> = DpdkTxToken<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps
    }

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // Receiving never waits for transmit room: with both ends of a link
        // full, each would wait for the other to receive. Without room the
        // reply token drops what is written to it (counted).
        let room = self.pending.len() < self.max_pending && self.ensure_stash();
        let mbuf = self.next_rx()?;
        let tx = DpdkTxToken {
            stash: &mut self.stash,
            pending: &mut self.pending,
            capacity: self.tx_capacity,
            oversize: &mut self.stats.tx_oversize,
            room,
            no_room: &mut self.stats.tx_no_room,
        };
        Some((
            DpdkRxToken {
                mbuf,
                done: &mut self.rx_done,
            },
            tx,
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        if self.pending.len() >= self.max_pending || !self.ensure_stash() {
            return None;
        }
        Some(self.tx_token())
    }

    fn flush(&mut self) -> Result<usize, DeviceError> {
        self.free_rx_done();
        if self.pending.is_empty() {
            return Ok(0);
        }
        let n = u16::try_from(self.pending.len()).unwrap_or(u16::MAX);
        // SAFETY: `pending` holds `n` or more written mbufs owned by this
        // device; the PMD takes ownership of the first `sent` of them.
        let sent =
            unsafe { sys::shim_tx_burst(self.port_id, self.queue, self.pending.as_mut_ptr(), n) };
        let sent = usize::from(sent);
        self.stats.tx_bursts += 1;
        self.stats.tx_frames += sent as u64;
        if sent < self.pending.len() {
            self.stats.tx_partial += 1;
        }
        // The PMD owns what it took; the rest stays queued, in order.
        self.pending.drain(..sent);
        Ok(sent)
    }

    fn tx_pending(&self) -> usize {
        self.pending.len()
    }

    fn wait(&mut self, _timeout: Option<Duration>) -> Result<(), DeviceError> {
        // Poll mode: no interrupt to sleep on, so the caller polls again at
        // once. On one idle wait in YIELD_EVERY, and on every one once idle
        // for YIELD_AFTER, its thread gives up the rest of its time slice
        // first: an application worker or file sink woken onto this CPU
        // runs now instead of after the scheduler's slice (milliseconds),
        // which bounded a memif transfer into `--data-dir` at 60 MB/s on a
        // 2-core machine. With nothing else runnable it costs one syscall.
        // Yielding on every idle wait cost a depth-1 round trip 1.6x its
        // p50; one in eight, nothing measurable (scripts/bench-ab.sh). (The
        // lowest-latency policy busy-polls and never calls this.)
        let now = Instant::now();
        let since = *self.idle_since.get_or_insert(now);
        self.waits = self.waits.wrapping_add(1);
        if self.waits.is_multiple_of(YIELD_EVERY)
            || now.saturating_duration_since(since) >= YIELD_AFTER
        {
            std::thread::yield_now();
        }
        Ok(())
    }
}

impl Drop for DpdkDevice {
    fn drop(&mut self) {
        let unconsumed = self
            .rx
            .get(self.rx_head..self.rx_len)
            .unwrap_or(&[])
            .to_vec();
        self.rx_done.extend(unconsumed);
        self.rx_done.append(&mut self.stash);
        if !self.pending.is_empty() {
            debug!(
                port = self.port_id,
                queue = self.queue,
                frames = self.pending.len(),
                "DPDK device closed with frames the PMD never took"
            );
        }
        self.rx_done.append(&mut self.pending);
        self.free_rx_done();
        self.port.inner.release(self.queue);
        debug!(port = self.port_id, queue = self.queue, stats = ?self.stats, "DPDK device closed");
    }
}
