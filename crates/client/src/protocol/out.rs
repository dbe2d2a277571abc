//! The I/O thread's output: bytes the encoders copied, and large bodies
//! that stay where the caller put them.
//!
//! A DATA frame of 64 KiB copied into one output buffer cost the client's
//! I/O thread a memmove per byte on top of the transport's own copy (7 % of
//! its CPU sending a file on loopback). Here a body of [`SHARE_MIN`] bytes
//! or more is queued as the caller's [`Bytes`] and handed to the
//! transport's vectored send with what was copied around it.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

/// Bodies at least this long are shared, not copied: below it a copy is
/// cheaper than one more slice in the vectored write.
pub const SHARE_MIN: usize = 4096;

/// Most slices one [`Out::slices`] call gathers (Linux takes 1024 per
/// `writev`; a few dozen cover a window of 64 KiB frames).
pub const MAX_SLICES: usize = 64;

/// Bytes waiting to be sent, in order: sealed parts, then the buffer the
/// encoders append to.
#[derive(Debug, Default)]
pub struct Out {
    parts: VecDeque<Bytes>,
    parts_len: usize,
    tail: BytesMut,
}

impl Out {
    /// An empty output whose copy buffer starts with `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            tail: BytesMut::with_capacity(capacity),
            ..Self::default()
        }
    }

    /// Bytes waiting in all.
    pub fn len(&self) -> usize {
        self.parts_len + self.tail.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer to append copied bytes to (after everything queued).
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Appends `bytes`, shared when at least [`SHARE_MIN`] long, else
    /// copied.
    pub fn put_shared(&mut self, bytes: &Bytes) {
        if bytes.len() < SHARE_MIN {
            self.tail.extend_from_slice(bytes);
            return;
        }
        if !self.tail.is_empty() {
            let sealed = self.tail.split().freeze();
            self.push_part(sealed);
        }
        self.push_part(bytes.clone());
    }

    fn push_part(&mut self, b: Bytes) {
        self.parts_len += b.len();
        self.parts.push_back(b);
    }

    /// Drops everything waiting (the connection is gone).
    pub fn clear(&mut self) {
        self.parts.clear();
        self.parts_len = 0;
        self.tail.clear();
    }

    /// The waiting bytes as up to [`MAX_SLICES`] slices in order, for a
    /// vectored send; returns how many of `into` were filled.
    pub fn slices<'a>(&'a self, into: &mut [&'a [u8]; MAX_SLICES]) -> usize {
        let mut n = 0;
        let tail = (!self.tail.is_empty()).then_some(&self.tail[..]);
        for s in self.parts.iter().map(|b| &b[..]).chain(tail) {
            if n == MAX_SLICES {
                break;
            }
            into[n] = s;
            n += 1;
        }
        n
    }

    /// `n` bytes from the front were sent.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.parts.front_mut() else {
                self.tail.advance(n);
                return;
            };
            let k = n.min(front.len());
            front.advance(k);
            self.parts_len -= k;
            n -= k;
            if front.is_empty() {
                self.parts.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn gather(o: &Out) -> Vec<u8> {
        let mut s = [&[][..]; MAX_SLICES];
        let n = o.slices(&mut s);
        s[..n].concat()
    }

    #[test]
    fn small_bodies_are_copied_and_large_ones_shared_in_order() {
        let mut o = Out::with_capacity(16);
        o.buf().extend_from_slice(b"head1");
        let big = Bytes::from(vec![7u8; SHARE_MIN]);
        o.put_shared(&big);
        o.buf().extend_from_slice(b"crc1");
        o.put_shared(&Bytes::from_static(b"small"));
        assert_eq!(o.len(), 5 + SHARE_MIN + 4 + 5);
        let mut want = b"head1".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"crc1small");
        assert_eq!(gather(&o), want);
        // The large body is the caller's own bytes, not a copy.
        let mut s = [&[][..]; MAX_SLICES];
        assert_eq!(o.slices(&mut s), 3);
        assert_eq!(s[1].as_ptr(), big.as_ptr());
    }

    #[test]
    fn advancing_across_parts_keeps_the_rest() {
        let mut o = Out::default();
        let mut want = Vec::new();
        for i in 0..5u8 {
            o.buf().extend_from_slice(&[i; 3]);
            want.extend_from_slice(&[i; 3]);
            let b = Bytes::from(vec![i; SHARE_MIN + usize::from(i)]);
            want.extend_from_slice(&b);
            o.put_shared(&b);
        }
        o.buf().extend_from_slice(b"end");
        want.extend_from_slice(b"end");
        let mut sent = Vec::new();
        // Odd step sizes land inside parts and on their edges.
        for step in [1, 2, SHARE_MIN, 3, SHARE_MIN + 1, 7, 100_000] {
            let all = gather(&o);
            let k = step.min(all.len());
            sent.extend_from_slice(&all[..k]);
            o.advance(k);
            assert_eq!(o.len(), want.len() - sent.len());
        }
        assert!(o.is_empty());
        assert_eq!(sent, want);
        o.buf().extend_from_slice(b"again");
        assert_eq!(gather(&o), b"again");
    }

    #[test]
    fn slices_stop_at_the_limit_and_clear_empties() {
        let mut o = Out::default();
        for _ in 0..MAX_SLICES + 10 {
            o.put_shared(&Bytes::from(vec![1u8; SHARE_MIN]));
        }
        let mut s = [&[][..]; MAX_SLICES];
        assert_eq!(o.slices(&mut s), MAX_SLICES);
        o.clear();
        assert!(o.is_empty());
        let mut s = [&[][..]; MAX_SLICES];
        assert_eq!(o.slices(&mut s), 0);
    }
}
