//! The receive buffer of the in-order protocols ([`Echo`](super::Echo),
//! [`Http`](super::Http)): received bytes at the front, scratch space
//! offered to the transport behind them, and a hard limit on both.

use bytes::{Buf, Bytes, BytesMut};

/// Receive region offered when no larger message is arriving: as warpwire's
/// frame decoder (16 KiB drains a loopback burst in few reads).
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// Received bytes not yet decoded, and scratch space for more.
#[derive(Debug)]
pub(super) struct RecvBuf {
    /// `..filled` holds received bytes; the rest is offered scratch space.
    buf: BytesMut,
    filled: usize,
    /// The most `buf` ever holds.
    limit: usize,
}

impl RecvBuf {
    /// An empty buffer that never holds more than `limit` bytes.
    pub(super) fn new(limit: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            filled: 0,
            limit,
        }
    }

    /// Where the next received bytes go: at least `READ_CHUNK`, or
    /// `at_least` (the rest of a message known to be arriving) if more, in
    /// one region; less when the limit leaves less room, empty when none.
    pub(super) fn offer(&mut self, at_least: usize) -> &mut [u8] {
        let room = self.limit.saturating_sub(self.filled);
        let want = READ_CHUNK.max(at_least).min(room);
        let scratch = self.buf.len() - self.filled;
        // Scratch of at least half the target is offered as it is, rather
        // than moved or reallocated for a few more bytes.
        if scratch * 2 < want {
            let need = self.filled + want;
            let len = self.buf.len();
            if self.buf.capacity() < need && !self.buf.try_reclaim(need - len) {
                let mut buf = BytesMut::with_capacity(need);
                buf.extend_from_slice(&self.buf[..self.filled]);
                self.buf = buf;
            }
            self.buf.resize(need, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// `n` bytes of the last offered region were received.
    pub(super) fn commit(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.buf.len());
    }

    /// The received bytes.
    pub(super) fn received(&self) -> &[u8] {
        &self.buf[..self.filled]
    }

    /// How many bytes were received and not yet taken.
    pub(super) fn len(&self) -> usize {
        self.filled
    }

    /// The first `n` received bytes (`n <= len()`), removed.
    pub(super) fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.filled);
        self.filled -= n;
        self.buf.split_to(n).freeze()
    }

    /// Drops the first `n` received bytes (`n <= len()`).
    pub(super) fn discard(&mut self, n: usize) {
        let n = n.min(self.filled);
        self.filled -= n;
        self.buf.advance(n);
    }

    /// Frees the memory: the stream has failed.
    pub(super) fn release(&mut self) {
        self.buf = BytesMut::new();
        self.filled = 0;
        self.limit = 0;
    }

    /// Bytes of memory held.
    pub(super) fn allocated(&self) -> usize {
        self.buf.capacity()
    }
}
