//! RFC 862 echo as a [`ClientProtocol`]: the server sends back every byte
//! it receives, in order, and nothing else.
//!
//! Echo has no framing and no ids, so the client gives each request a
//! content that identifies it: request `id` of `size` bytes is the id as
//! 8 little-endian bytes (truncated when `size < 8`) followed by a pattern
//! that also depends on the id (bytes `(i + 7 * id) mod 251`). A reply is
//! complete when `size` bytes have come back; replies are matched in order
//! ([`Correlation::InOrder`]). [`ClientProtocol::check`] then sees a
//! corrupted byte ([`Mismatch::Content`]) and a reply that belongs to
//! another request ([`Mismatch::OtherRequest`]: reordered, duplicated or
//! lost bytes).
//!
//! The parser knows the length of every reply in flight (one `usize` per
//! request, bounded by the caller's pipeline depth), splits replies at
//! those lengths, and fails the stream ([`EchoError::Unsolicited`]) when
//! more bytes arrive than the requests in flight account for.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::recv::{READ_CHUNK, RecvBuf};
use super::{ClientHooks, ClientProtocol, Correlation, Incoming, Mismatch, ReplyTo};

/// Period of the content pattern: a prime, so the pattern does not line up
/// with power-of-two sizes and offsets.
const PERIOD: usize = 251;

/// One period of the pattern, 0, 1, ..., 250.
const CYCLE: [u8; PERIOD] = {
    let mut c = [0u8; PERIOD];
    let mut i = 0;
    while i < PERIOD {
        c[i] = i as u8;
        i += 1;
    }
    c
};

/// Bytes of the id at the front of a request.
const ID_LEN: usize = 8;

/// The echo protocol (RFC 862). See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Echo {
    /// Largest request (and so reply) accepted, bytes. A connection's
    /// parser holds at most this plus 16 KiB.
    pub max_request: usize,
}

impl Echo {
    /// Largest echo request by default: warpwire's default frame payload
    /// limit, so both protocols bench the same sizes.
    pub const DEFAULT_MAX_REQUEST: usize = 1 << 20;
}

impl Default for Echo {
    fn default() -> Self {
        Self {
            max_request: Self::DEFAULT_MAX_REQUEST,
        }
    }
}

/// An echo request: `size` bytes whose content is made from its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoRequest {
    /// Bytes to send (and to receive back), at least 1.
    pub size: usize,
}

/// What can go wrong with echo, on either side of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EchoError {
    /// The server sent more bytes than the requests in flight account
    /// for: it is not an echo server (or it duplicated data).
    #[error("the server sent {bytes} byte(s) more than it was sent")]
    Unsolicited {
        /// Bytes beyond the replies awaited.
        bytes: usize,
    },
    /// A zero-byte request has no reply to wait for.
    #[error("an echo request needs at least one byte")]
    Empty,
    /// The request exceeds [`Echo::max_request`].
    #[error("echo request of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The request's size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Per-connection state of [`Echo`]: the received bytes and the lengths of
/// the replies awaited.
#[derive(Debug)]
pub struct EchoConn {
    /// Received bytes; holds at most `max_request + READ_CHUNK`.
    recv: RecvBuf,
    /// Lengths of the replies awaited, oldest first.
    inflight: VecDeque<usize>,
    /// Sum of `inflight`.
    awaited: usize,
    error: Option<EchoError>,
}

impl EchoConn {
    /// Replies awaited.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Bytes of memory the receive buffer holds (at most
    /// [`Echo::max_request`] plus 16 KiB).
    pub fn allocated(&self) -> usize {
        self.recv.allocated()
    }
}

impl Echo {
    /// The `size` bytes of request `id` (see the module docs).
    pub fn content(id: u64, size: usize) -> Bytes {
        let mut out = BytesMut::with_capacity(size);
        write_content(id, size, &mut out);
        out.freeze()
    }
}

/// Appends the content of request `id` (shared with HTTP's POST /echo).
pub(super) fn write_content(id: u64, size: usize, out: &mut BytesMut) {
    let head = size.min(ID_LEN);
    out.extend_from_slice(&id.to_le_bytes()[..head]);
    let mut i = head;
    while i < size {
        let at = pattern_at(id, i);
        let n = (PERIOD - at).min(size - i);
        out.extend_from_slice(&CYCLE[at..at + n]);
        i += n;
    }
}

/// Position in [`CYCLE`] of byte `i` of request `id`.
fn pattern_at(id: u64, i: usize) -> usize {
    // Both terms are below PERIOD after the reductions: no overflow.
    ((i % PERIOD) + (id.wrapping_mul(7) % PERIOD as u64) as usize) % PERIOD
}

/// Whether `bytes` are bytes `from..` of request `id`'s pattern.
fn pattern_matches(id: u64, from: usize, bytes: &[u8]) -> bool {
    let mut i = from;
    let mut rest = bytes;
    while !rest.is_empty() {
        let at = pattern_at(id, i);
        let n = (PERIOD - at).min(rest.len());
        if rest[..n] != CYCLE[at..at + n] {
            return false;
        }
        rest = &rest[n..];
        i += n;
    }
    true
}

impl ClientProtocol for Echo {
    type Conn = EchoConn;
    type Request = EchoRequest;
    type Reply = Bytes;
    type EncodeError = EchoError;
    type DecodeError = EchoError;

    const CORRELATION: Correlation = Correlation::InOrder;

    fn name(&self) -> &'static str {
        "echo"
    }

    fn open(&self) -> EchoConn {
        EchoConn {
            recv: RecvBuf::new(self.max_request.saturating_add(READ_CHUNK)),
            inflight: VecDeque::new(),
            awaited: 0,
            error: None,
        }
    }

    fn encode(
        &self,
        conn: &mut EchoConn,
        id: u64,
        request: &EchoRequest,
        out: &mut BytesMut,
    ) -> Result<(), EchoError> {
        let size = request.size;
        if size == 0 {
            return Err(EchoError::Empty);
        }
        if size > self.max_request {
            return Err(EchoError::TooLarge {
                size,
                max: self.max_request,
            });
        }
        write_content(id, size, out);
        conn.inflight.push_back(size);
        conn.awaited = conn.awaited.saturating_add(size);
        Ok(())
    }

    fn read_buf<'c>(&self, conn: &'c mut EchoConn) -> &'c mut [u8] {
        if conn.error.is_some() {
            return &mut [];
        }
        let front = conn.inflight.front().copied().unwrap_or(0);
        // The rest of the reply at the front in one region, or a chunk.
        let rest = front.saturating_sub(conn.recv.len());
        conn.recv.offer(rest)
    }

    fn commit(&self, conn: &mut EchoConn, n: usize) {
        conn.recv.commit(n);
    }

    fn decode(&self, conn: &mut EchoConn) -> Result<Option<Incoming<Bytes>>, EchoError> {
        if let Some(e) = conn.error {
            return Err(e);
        }
        if conn.recv.len() > conn.awaited {
            let e = EchoError::Unsolicited {
                bytes: conn.recv.len() - conn.awaited,
            };
            conn.error = Some(e);
            conn.recv.release();
            return Err(e);
        }
        match conn.inflight.front().copied() {
            Some(len) if conn.recv.len() >= len => {
                let reply = conn.recv.take(len);
                conn.awaited -= len;
                conn.inflight.pop_front();
                Ok(Some(Incoming::Reply(ReplyTo::Oldest, reply)))
            }
            _ => Ok(None),
        }
    }

    fn check(&self, id: u64, request: &EchoRequest, reply: &Bytes) -> Result<(), Mismatch> {
        check_content(id, request.size, reply)
    }
}

/// Echo has no handshake, heartbeat or server-initiated message: the
/// defaults. Its replies come in order, so a request that times out in a
/// pipeline resets the connection (see [`crate::GenericClient`]).
impl ClientHooks for Echo {}

/// Whether `reply` is the content of request `id`, `size` bytes (shared
/// with HTTP's POST /echo).
pub(super) fn check_content(id: u64, size: usize, reply: &[u8]) -> Result<(), Mismatch> {
    if reply.len() != size {
        return Err(Mismatch::Length);
    }
    let head = size.min(ID_LEN);
    if reply[..head] != id.to_le_bytes()[..head] {
        return Err(Mismatch::OtherRequest);
    }
    if pattern_matches(id, head, &reply[head..]) {
        Ok(())
    } else {
        Err(Mismatch::Content)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Feeds `bytes` in pieces of `step` and decodes after each; every
    /// byte is taken and none is an error.
    fn feed(p: &Echo, c: &mut EchoConn, bytes: &[u8], step: usize) -> Vec<Bytes> {
        let (got, err) = crate::protocol::test_support::feed(p, c, bytes, step);
        assert_eq!(err, None);
        got
    }

    #[test]
    fn any_split_gives_the_same_replies() {
        let p = Echo::default();
        let sizes = [1usize, 7, 8, 9, 64, 300, 40_000];
        for step in [1, 3, 8, 1000, 100_000] {
            let mut c = p.open();
            let mut out = BytesMut::new();
            for (i, &size) in sizes.iter().enumerate() {
                p.encode(&mut c, i as u64 + 1, &EchoRequest { size }, &mut out)
                    .unwrap();
            }
            assert_eq!(out.len(), sizes.iter().sum::<usize>());
            let got = feed(&p, &mut c, &out, step);
            assert_eq!(got.len(), sizes.len(), "step {step}");
            for (i, (r, &size)) in got.iter().zip(&sizes).enumerate() {
                assert_eq!(
                    p.check(i as u64 + 1, &EchoRequest { size }, r),
                    Ok(()),
                    "step {step}, reply {i}"
                );
            }
            assert_eq!(c.in_flight(), 0);
            assert!(c.allocated() <= 40_000 + READ_CHUNK, "{}", c.allocated());
        }
    }

    #[test]
    fn content_is_the_id_then_the_pattern() {
        let c = Echo::content(0x0102, 12);
        assert_eq!(&c[..8], &[2, 1, 0, 0, 0, 0, 0, 0]);
        let k = 0x0102 * 7 % 251;
        assert_eq!(c[8], ((8 + k) % 251) as u8);
        assert_eq!(c[11], ((11 + k) % 251) as u8);
        // Long content wraps the pattern around correctly.
        let long = Echo::content(5, 1000);
        for (i, b) in long.iter().enumerate().skip(8) {
            assert_eq!(*b as usize, (i + 35) % 251, "byte {i}");
        }
    }

    #[test]
    fn corruption_and_reordering_are_seen() {
        let p = Echo::default();
        for size in [1usize, 5, 8, 64, 1000] {
            let req = EchoRequest { size };
            let good = Echo::content(9, size);
            assert_eq!(p.check(9, &req, &good), Ok(()));
            // Every single flipped byte is caught.
            for i in 0..size {
                let mut bad = good.to_vec();
                bad[i] ^= 0x40;
                assert!(p.check(9, &req, &Bytes::from(bad)).is_err(), "{size} {i}");
            }
            // Another request's reply (reordered or duplicated).
            assert!(p.check(9, &req, &Echo::content(10, size)).is_err());
            assert_eq!(
                p.check(9, &req, &good.slice(..size - 1)),
                Err(Mismatch::Length)
            );
        }
        let req = EchoRequest { size: 64 };
        assert_eq!(
            p.check(9, &req, &Echo::content(10, 64)),
            Err(Mismatch::OtherRequest)
        );
        let mut bad = Echo::content(9, 64).to_vec();
        bad[40] = bad[40].wrapping_add(1);
        assert_eq!(p.check(9, &req, &Bytes::from(bad)), Err(Mismatch::Content));
    }

    #[test]
    fn extra_bytes_fail_the_stream_and_stay_failed() {
        let p = Echo::default();
        let mut c = p.open();
        let mut out = BytesMut::new();
        p.encode(&mut c, 1, &EchoRequest { size: 4 }, &mut out)
            .unwrap();
        let buf = p.read_buf(&mut c);
        buf[..6].copy_from_slice(&[1, 0, 0, 0, 9, 9]);
        p.commit(&mut c, 6);
        assert_eq!(p.decode(&mut c), Err(EchoError::Unsolicited { bytes: 2 }));
        assert_eq!(p.decode(&mut c), Err(EchoError::Unsolicited { bytes: 2 }));
        assert!(p.read_buf(&mut c).is_empty());
        // Bytes with nothing in flight are unsolicited too.
        let mut c = p.open();
        p.read_buf(&mut c)[0] = 1;
        p.commit(&mut c, 1);
        assert_eq!(p.decode(&mut c), Err(EchoError::Unsolicited { bytes: 1 }));
    }

    #[test]
    fn memory_is_bounded_without_decoding() {
        let p = Echo { max_request: 4096 };
        let mut c = p.open();
        let mut out = BytesMut::new();
        for id in 1..=100 {
            p.encode(&mut c, id, &EchoRequest { size: 4096 }, &mut out)
                .unwrap();
        }
        // A caller that never decodes cannot make the buffer grow past the
        // limit: read_buf runs out of room.
        let mut total = 0;
        loop {
            let buf = p.read_buf(&mut c);
            if buf.is_empty() {
                break;
            }
            let n = buf.len();
            p.commit(&mut c, n);
            total += n;
            assert!(total <= 4096 + READ_CHUNK);
        }
        assert_eq!(total, 4096 + READ_CHUNK);
        assert!(c.allocated() <= 2 * (4096 + READ_CHUNK));
        // Decoding frees room again.
        assert!(p.decode(&mut c).unwrap().is_some());
        assert!(!p.read_buf(&mut c).is_empty());
    }

    #[test]
    fn requests_out_of_range_are_refused_without_writing() {
        let p = Echo { max_request: 10 };
        let mut c = p.open();
        let mut out = BytesMut::new();
        assert_eq!(
            p.encode(&mut c, 1, &EchoRequest { size: 0 }, &mut out),
            Err(EchoError::Empty)
        );
        assert_eq!(
            p.encode(&mut c, 1, &EchoRequest { size: 11 }, &mut out),
            Err(EchoError::TooLarge { size: 11, max: 10 })
        );
        assert!(out.is_empty());
        assert_eq!(c.in_flight(), 0);
    }
}
