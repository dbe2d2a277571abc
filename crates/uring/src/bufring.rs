//! The provided buffer ring (IORING_REGISTER_PBUF_RING) that multishot
//! receives pick their buffers from.
//!
//! ```text
//!   ring entries (page-aligned, shared with the kernel)
//!   ┌───────┬───────┬───────┬─────┐   the kernel takes entries from its
//!   │ bid 3 │ bid 9 │ bid 4 │ ... │   head; we append returned buffers at
//!   └───────┴───────┴───────┴─────┘   the tail (a u16 in entry 0, stored
//!        │ addr                       with release ordering)
//!        ▼
//!   buffer memory: count × size bytes, bid i at offset i × size
//! ```
//!
//! A buffer is the kernel's from the moment it is in the ring until a
//! completion names it (`IORING_CQE_F_BUFFER`, bid in the flags); then it
//! is ours until [`BufRing::recycle`] puts it back. Only buffers that are
//! ours are ever read, so the kernel's writes and our reads never meet.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

/// The ring's entries must start on a page boundary (io_uring_register(2)).
const RING_ALIGN: usize = 4096;
/// Buffers are cache-line aligned so a receive never shares a line with the
/// previous buffer's tail.
const BUF_ALIGN: usize = 64;

/// One registered buffer group: the entry ring and the memory behind it.
pub(crate) struct BufRing {
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    data: NonNull<u8>,
    data_layout: Layout,
    /// Number of entries and of buffers (a power of two).
    count: u16,
    /// Bytes per buffer.
    size: u32,
    /// Our tail: entries before it have been offered to the kernel.
    tail: u16,
    /// Buffers in the kernel's hands, as far as reaped completions show.
    available: usize,
    bgid: u16,
    /// Drop must not free the memory: the kernel may still write to it.
    leaked: bool,
}

// SAFETY: the ring and buffer memory are owned by this value alone (nothing
// else holds the pointers); the kernel's access to them is tied to the
// io_uring instance, which moves between threads together with it.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Allocates `count` buffers of `size` bytes, registers them as buffer
    /// group `bgid` and offers all of them to the kernel. `count` must be a
    /// power of two of at most 32,768, `size` non-zero.
    pub(crate) fn new(
        submitter: &Submitter<'_>,
        bgid: u16,
        count: u16,
        size: u32,
    ) -> io::Result<Self> {
        let invalid = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
        if !count.is_power_of_two() || count > 32_768 || size == 0 {
            return Err(invalid(
                "buffer ring: count must be a power of two <= 32768",
            ));
        }
        let entries_layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<BufRingEntry>(),
            RING_ALIGN,
        )
        .map_err(|_| invalid("buffer ring: entries too large"))?;
        let data_size = usize::from(count)
            .checked_mul(size as usize)
            .ok_or_else(|| invalid("buffer ring: memory too large"))?;
        let data_layout = Layout::from_size_align(data_size, BUF_ALIGN)
            .map_err(|_| invalid("buffer ring: memory too large"))?;
        // SAFETY: both layouts have a non-zero size (count >= 1, size >= 1).
        // Zeroed: the kernel reads the tail (entry 0's last field) as soon
        // as the ring is registered, and it must read 0 then.
        let entries = NonNull::new(unsafe { alloc::alloc_zeroed(entries_layout) })
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?
            .cast::<BufRingEntry>();
        // SAFETY: as above; zeroed so no byte is ever uninitialised even if
        // the kernel wrote fewer bytes than a completion claims.
        let Some(data) = NonNull::new(unsafe { alloc::alloc_zeroed(data_layout) }) else {
            // SAFETY: allocated just above with this layout.
            unsafe { alloc::dealloc(entries.as_ptr().cast(), entries_layout) };
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let mut ring = Self {
            entries,
            entries_layout,
            data,
            data_layout,
            count,
            size,
            tail: 0,
            available: 0,
            bgid,
            leaked: false,
        };
        // SAFETY: the entry memory is page-aligned, `count` entries long,
        // and stays allocated until `Drop`, which the transport runs only
        // after the ring is quiesced (or never: it leaks the memory when it
        // cannot prove the kernel is done with it).
        unsafe {
            submitter.register_buf_ring_with_flags(ring.entries.as_ptr() as u64, count, bgid, 0)?;
        }
        for bid in 0..count {
            ring.recycle(bid);
        }
        Ok(ring)
    }

    /// The buffer group id receives name.
    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Buffers the kernel can still fill.
    pub(crate) fn available(&self) -> usize {
        self.available
    }

    /// Buffers held by connections (taken by a completion, not yet recycled).
    pub(crate) fn in_use(&self) -> usize {
        usize::from(self.count) - self.available
    }

    /// A completion handed buffer `bid` to us.
    pub(crate) fn taken(&mut self) {
        self.available = self.available.saturating_sub(1);
    }

    /// `len` bytes of buffer `bid` from `off`. The buffer must be ours (named
    /// by a reaped completion and not recycled since) and `off + len` within
    /// what the completion reported.
    pub(crate) fn bytes(&self, bid: u16, off: u32, len: u32) -> &[u8] {
        assert!(bid < self.count && off.saturating_add(len) <= self.size);
        let start = usize::from(bid) * self.size as usize + off as usize;
        // SAFETY: in bounds of the allocation (checked above). The buffer is
        // ours: the kernel writes a buffer only between taking it from the
        // ring and posting the completion that names it, and it is not back
        // in the ring until `recycle`, which needs `&mut self` while this
        // borrow lives.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(start), len as usize) }
    }

    /// Makes `Drop` keep the memory: used when the transport cannot show
    /// that no operation will write to it any more.
    pub(crate) fn leak(&mut self) {
        self.leaked = true;
    }

    /// Gives buffer `bid` back to the kernel.
    pub(crate) fn recycle(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        let slot = usize::from(self.tail & (self.count - 1));
        let addr = self.data.as_ptr() as u64 + u64::from(bid) * u64::from(self.size);
        // SAFETY: `slot` < count, inside the entry allocation. The entry at
        // our tail is not one the kernel reads (it reads entries between its
        // head and the published tail), and the write does not touch the
        // tail field that entry 0 shares with the kernel's view.
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        entry.set_addr(addr);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: `tail` points at the u16 in entry 0 (BufRingEntry::tail's
        // contract: the base of a live ring), suitably aligned; the kernel
        // reads it concurrently, so it is written atomically, with release
        // ordering so the entry above is visible first.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
        self.available += 1;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: allocated in `new` with these layouts. The transport drops
        // a BufRing only once no operation can write to it any more (it
        // leaks it otherwise).
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            alloc::dealloc(self.data.as_ptr(), self.data_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_recycles() {
        let ring = io_uring::IoUring::new(4).expect("io_uring (kernel.io_uring_disabled=0)");
        let mut b = BufRing::new(&ring.submitter(), 3, 8, 1024).expect("buffer ring");
        assert_eq!(b.available(), 8);
        b.taken();
        assert_eq!(b.in_use(), 1);
        assert_eq!(b.bytes(5, 10, 4), &[0, 0, 0, 0]);
        b.recycle(5);
        assert_eq!(b.available(), 8);
        assert!(
            BufRing::new(&ring.submitter(), 4, 6, 1024).is_err(),
            "not a power of two"
        );
    }
}
