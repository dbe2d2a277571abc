//! A protocol's receive buffer: the one place a text protocol keeps the
//! bytes it has received and not yet consumed (HTTP's and RESP's
//! connections hold one; warpwire's frame decoder has its own).
//!
//! ```text
//!   buf:  [ consumed | unread (start..end) | room for the next recv ]
//!                      ▲ unread()            ▲ read_buf(want, cap)
//!   consume(n) moves start; when nothing is unread both go back to 0, and
//!   a buffer grown past LARGE is freed (an idle connection keeps none).
//!   read_buf moves the unread bytes to the front only when the room past
//!   them is too small, so a pipelined stream is copied rarely.
//! ```
//!
//! What it does not do: parse, or decide how much a request may take
//! (`want` and `cap` come from the protocol, which knows its limits).

/// Bytes read per receive beyond what the protocol asks for (the engine
/// reads a few of these per connection per poll).
pub const READ_CHUNK: usize = 16 * 1024;

/// An idle buffer larger than this is freed.
const LARGE: usize = 4 * READ_CHUNK;

/// See the module docs.
#[derive(Debug, Default)]
pub struct InputBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl InputBuffer {
    /// An empty buffer; nothing is allocated until the first read.
    pub const fn new() -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// Where the next received bytes go: room for at least `want` unread
    /// bytes in all (at least one [`READ_CHUNK`] more than now), never
    /// more than `cap`. Empty when `cap` unread bytes are held: the engine
    /// stops reading until the protocol consumes some.
    pub fn read_buf(&mut self, want: usize, cap: usize) -> &mut [u8] {
        let held = self.end - self.start;
        if held >= cap {
            return &mut [];
        }
        let want = want.max(held + READ_CHUNK).min(cap);
        if self.buf.len() - self.start < want {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.start = 0;
                self.end = held;
            }
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes of the last [`InputBuffer::read_buf`] were received.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The unread bytes.
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The unread bytes, for decoding in place (a chunked body).
    pub fn unread_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// How many bytes are unread.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether nothing is unread.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes allocated (for the engine's input budget).
    pub fn allocated(&self) -> usize {
        self.buf.len()
    }

    /// The first `n` unread bytes are done with.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > LARGE {
                self.buf = Vec::new();
            }
        }
    }

    /// Drops everything, and the allocation.
    pub fn clear(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(b: &mut InputBuffer, bytes: &[u8], cap: usize) -> usize {
        let room = b.read_buf(0, cap);
        let n = room.len().min(bytes.len());
        room[..n].copy_from_slice(&bytes[..n]);
        b.commit(n);
        n
    }

    #[test]
    fn keeps_order_across_compaction_and_frees_when_idle() {
        let mut b = InputBuffer::new();
        assert_eq!(b.allocated(), 0);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (mut fed, mut out) = (0, Vec::new());
        while out.len() < data.len() {
            fed += feed(&mut b, &data[fed..], 1 << 20);
            // Consume a little less than was read: compaction happens.
            let take = b
                .len()
                .saturating_sub(7)
                .max(if fed == data.len() { b.len() } else { 0 });
            out.extend_from_slice(&b.unread()[..take]);
            b.consume(take);
        }
        assert_eq!(out, data);
        assert!(b.is_empty());
        assert!(b.allocated() <= LARGE, "an idle buffer is small or freed");
    }

    #[test]
    fn the_cap_bounds_it() {
        let mut b = InputBuffer::new();
        let mut total = 0;
        for _ in 0..100 {
            total += feed(&mut b, &[1u8; 10_000], 50_000);
        }
        assert_eq!((total, b.len()), (50_000, 50_000));
        assert!(b.read_buf(0, 50_000).is_empty());
        assert!(b.allocated() <= 50_000);
        // Asking for a large request's room grows it once, within the cap.
        b.consume(50_000);
        assert!(b.read_buf(40_000, 50_000).len() >= 40_000);
        b.clear();
        assert_eq!(b.allocated(), 0);
    }
}
