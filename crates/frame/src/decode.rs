//! The streaming decoder.
//!
//! Bytes go in through [`Decoder::fill_with`] (a transport appends
//! straight into the buffer's spare room, not zeroed first),
//! [`Decoder::read_buf`] + [`Decoder::commit`] (a zeroed region to read
//! into) or [`Decoder::feed`] (a copy); frames come out of
//! [`Decoder::decode`] as zero-copy slices of that buffer.
//!
//! ```text
//!   transport bytes ──► [ buffer: frame | frame | partial ] ──► decode() ──► Frame { meta: Bytes, body: Bytes }
//!                         ▲ bounded by the frame limit                       (slices of the same allocation)
//! ```
//!
//! The buffer grows with the bytes that arrive, never with the length a
//! header announces: a peer cannot buy memory with promises.
//!
//! Any split of the stream yields the same frames. The first error is
//! sticky: the stream cannot be resynchronised, so every later call returns
//! it and the buffer is released.

use bytes::{Buf, Bytes, BytesMut};

use crate::body;
use crate::error::{DecodeError, FrameError};
use crate::frame::{Frame, FrameRef};
use crate::header::{FrameHeader, HEADER_LEN, Header, OVERHEAD, TRAILER_LEN};
use crate::meta;

/// Default limit on meta_len + body_len: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 1 << 20;

/// Default size of the region [`Decoder::read_buf`] offers: large enough
/// that a socket read drains a typical receive burst, small enough that
/// 10,000 idle connections cost little.
pub const DEFAULT_READ_CHUNK: usize = 16 * 1024;

/// An allocation more than this many times what the buffer needs now (the
/// bytes held plus the region to offer, or the whole frame arriving, if
/// larger) is given back instead of reused: what one large frame needed is
/// not kept for the small ones after it. A factor, not 1, so that a buffer
/// doubling its region as a frame arrives is never cut back mid-frame.
const RETAIN_FACTOR: usize = 4;

/// Decoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Limit on meta_len + body_len; larger frames are refused with
    /// FRAME_TOO_LARGE as soon as their header arrives.
    pub max_payload: u32,
    /// Usual size of the writable region offered by [`Decoder::read_buf`]
    /// (a frame that is arriving gets a larger one, as it arrives).
    pub read_chunk: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
            read_chunk: DEFAULT_READ_CHUNK,
        }
    }
}

impl DecoderConfig {
    /// Most bytes the decoder ever buffers: one largest frame, or one read
    /// chunk, whichever is larger.
    pub fn buffer_limit(&self) -> usize {
        (OVERHEAD + self.max_payload as usize).max(self.read_chunk.max(HEADER_LEN))
    }
}

/// A frame that has begun to arrive: see [`Decoder::partial_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialFrame {
    /// Bytes of it received so far, header included.
    pub received: usize,
    /// Its whole length (header, metadata, body and trailer) once its header
    /// has arrived and passed the header checks; `None` before. Never more
    /// than [`DecoderConfig::buffer_limit`].
    pub frame_len: Option<usize>,
}

/// A streaming frame decoder for one byte stream (one connection).
#[derive(Debug)]
pub struct Decoder {
    /// Initialised bytes; `..filled` holds received data, the rest is
    /// scratch space offered by `read_buf`.
    buf: BytesMut,
    filled: usize,
    /// Length of the frame whose header is at the front, once known.
    pending: Option<usize>,
    /// Size of the allocation `buf` lives in (0: none).
    allocated: usize,
    /// Bytes at the front already handed out by `decode_ref`, released on
    /// the next call (a pointer bump, no reference counting).
    head: usize,
    config: DecoderConfig,
    error: Option<DecodeError>,
    /// The header of the frame at the front, when [`Decoder::peek`] has
    /// checked all of it: the `decode` that takes it skips the checks.
    verified: Option<Header>,
    /// Length of the last frame decoded: an allocation that frame could
    /// use is kept for the next (a stream of 64 KiB DATA frames would
    /// otherwise give its buffer back and grow it again for every frame).
    last_frame: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DecoderConfig::default())
    }
}

impl Decoder {
    /// A decoder with the given settings.
    pub fn new(config: DecoderConfig) -> Self {
        Self {
            buf: BytesMut::new(),
            filled: 0,
            pending: None,
            allocated: 0,
            head: 0,
            config,
            error: None,
            verified: None,
            last_frame: 0,
        }
    }

    /// A decoder with the default settings and this payload limit.
    pub fn with_max_payload(max_payload: u32) -> Self {
        Self::new(DecoderConfig {
            max_payload,
            ..DecoderConfig::default()
        })
    }

    /// The settings.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.filled - self.head
    }

    /// Bytes of memory the decoder holds: the size of the allocation its
    /// receive buffer lives in, received bytes and offered region alike.
    /// Frames returned by [`Decoder::decode`] are slices of that allocation
    /// and keep it alive while they live; once the decoder moves to a new
    /// allocation, the old one is theirs and no longer counted here.
    ///
    /// It follows the bytes received, never the frame lengths announced:
    /// the allocation only grows to take bytes that have arrived, and then
    /// to at most twice the bytes buffered, or the length of the last
    /// frame decoded, plus one [`DecoderConfig::read_chunk`]. One grown for
    /// a large frame is given back by [`Decoder::read_buf`] (or
    /// [`Decoder::fill_with`]) once a frame needing less than a quarter of
    /// it has been decoded after it, and what arrives next needs less than
    /// a quarter too. Never more than [`DecoderConfig::buffer_limit`]; 0
    /// before the first bytes are received and after an error.
    ///
    /// This is what a server-wide budget of buffered input should count.
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    /// The incomplete frame at the front of the buffer, if bytes of one
    /// have arrived. Meant to be asked after [`Decoder::decode`] (or
    /// [`Decoder::decode_ref`]) has returned `Ok(None)`: then every buffered
    /// byte belongs to that frame. (Asked between [`Decoder::commit`] and
    /// decoding, `received` counts all the new bytes, which may hold whole
    /// frames.) `None` once the stream has failed.
    pub fn partial_frame(&self) -> Option<PartialFrame> {
        if self.error.is_some() || self.buffered() == 0 {
            return None;
        }
        Some(PartialFrame {
            received: self.buffered(),
            frame_len: self.pending,
        })
    }

    /// Drops the bytes of the frame `decode_ref` last lent out.
    fn release(&mut self) {
        if self.head > 0 {
            self.buf.advance(self.head);
            self.filled -= self.head;
            self.head = 0;
        }
    }

    /// The sticky error, if the stream has failed.
    pub fn error(&self) -> Option<DecodeError> {
        self.error
    }

    /// How many bytes the next receive region takes (see
    /// [`Decoder::read_buf`]), after releasing what was lent out; 0 once
    /// the stream has failed or the buffer is full.
    fn target(&mut self) -> usize {
        if self.error.is_some() {
            return 0;
        }
        self.release();
        let room = self.config.buffer_limit().saturating_sub(self.filled);
        // What this connection has shown it sends: the bytes of the frame
        // at the front so far, or the whole last frame it sent. A region
        // that large follows bytes that did arrive, not a header's promise.
        let proven = self.filled.max(self.last_frame);
        let grow = match self.pending {
            // After `release`, the front of the buffer is the frame
            // `pending` describes, so `filled` bytes of it have arrived. The
            // rest comes in one region when it is within what the peer has
            // shown (plus a read chunk): rather than one more reallocation
            // of the frame, or a read past its end that leaves the next
            // frame's first part to be moved.
            Some(len) => {
                let rest = len.saturating_sub(self.filled);
                if rest <= proven + self.config.read_chunk {
                    rest
                } else {
                    proven
                }
            }
            // No header yet: room for a frame as long as the last one, so
            // a stream of large frames takes one read per frame, each
            // landing where it is decoded.
            None => self.last_frame,
        };
        self.config.read_chunk.max(grow).min(room)
    }

    /// What an allocation may hold beyond the bytes about to be needed
    /// before it is given back (a large frame's, once frames are small).
    fn retain(&self, need: usize) -> usize {
        RETAIN_FACTOR.saturating_mul(need.max(self.pending.unwrap_or(0)).max(self.last_frame))
    }

    /// Receives through `recv`, which appends at most the given number of
    /// bytes to the buffer it is handed (a transport's `recv_buf`), and
    /// returns what `recv` returned. The bytes appended count as received,
    /// as a [`Decoder::commit`] would count them.
    ///
    /// The region has the length [`Decoder::read_buf`] targets, with the
    /// same memory bounds, but is never zeroed first: `recv` writes into
    /// the buffer's spare capacity. Unlike `read_buf`, which offers
    /// leftover scratch of at least half the target as it is, this always
    /// offers the whole target: a large frame then comes in one receive,
    /// at the price of a new allocation where frames still hold the old
    /// one and its room is short. `None`, without calling `recv`, when the
    /// stream has failed or the buffer is full (decode to make room). Bytes
    /// appended beyond the count given are dropped: memory never exceeds
    /// [`DecoderConfig::buffer_limit`].
    pub fn fill_with<E>(
        &mut self,
        recv: impl FnOnce(&mut BytesMut, usize) -> Result<usize, E>,
    ) -> Option<Result<usize, E>> {
        let want = self.target();
        if want == 0 {
            return None;
        }
        // Scratch zeroed for an earlier `read_buf` is not needed here.
        self.buf.truncate(self.filled);
        let need = self.filled + want;
        if self.allocated > self.retain(need) {
            self.move_to(need);
        } else if self.buf.capacity() < need && !self.buf.try_reclaim(want) {
            self.move_to(self.grown(need));
        }
        let r = recv(&mut self.buf, want);
        debug_assert!(
            self.buf.len() >= self.filled,
            "a receiver removed received bytes"
        );
        if self.buf.len() > need {
            // A receiver that broke its contract (a backend bug): its extra
            // bytes are dropped, and an allocation it grew is replaced by
            // one of the size accounted for.
            self.buf.truncate(need);
            self.move_to(self.allocated.max(need));
        }
        self.filled = self.buf.len();
        Some(r)
    }

    /// A writable region to receive into; follow with [`Decoder::commit`].
    ///
    /// Empty when the stream has failed, or when the buffer already holds
    /// [`DecoderConfig::buffer_limit`] bytes: call [`Decoder::decode`] until
    /// it returns `Ok(None)` and the room comes back.
    ///
    /// The region targets [`DecoderConfig::read_chunk`] bytes (room
    /// permitting; scratch space left from an earlier region is offered as
    /// it is when it holds at least half the target, rather than
    /// reallocated for a few more bytes). While a frame whose header has
    /// been decoded is arriving, the target grows with what of that frame
    /// has arrived: as many bytes as have already been received, up to the
    /// rest of the frame. So memory follows the bytes received, never the
    /// length a header announces: a header declaring a 1 MiB frame costs one
    /// read chunk, and a 1 MiB frame that does arrive is read in doubling
    /// regions, with O(log) reallocations.
    ///
    /// After a large frame, the region is at least as long as that frame
    /// (again bytes that arrived): a stream of large frames is read one
    /// frame per region, each where it is decoded, without the first part
    /// of every frame being moved to make room for its rest.
    pub fn read_buf(&mut self) -> &mut [u8] {
        let want = self.target();
        if want == 0 {
            return &mut [];
        }
        let need = self.filled + want;
        let retain = self.retain(need);
        let scratch = self.buf.len() - self.filled;
        if self.allocated > retain {
            // What a finished large frame left behind; the frame now arriving
            // needs a fraction of it.
            self.reallocate(need, need);
        } else if scratch < want && (scratch * 2 < want || self.buf.capacity() >= need) {
            // Grown in place when the allocation has the room (only the
            // new bytes are zeroed). Otherwise scratch already zeroed that
            // is at least half the target is offered as it is: growing it
            // by a few bytes would move or reallocate.
            self.grow(need);
        }
        // `buf.len()` never exceeds the buffer limit: every resize stops at
        // `filled + want` and `want <= room`.
        &mut self.buf[self.filled..]
    }

    /// Makes `buf.len() == need`, reusing the allocation when possible.
    fn grow(&mut self, need: usize) {
        let len = self.buf.len();
        // `try_reclaim` moves the received bytes back over the consumed
        // front of the allocation when no returned frame still holds it.
        if self.buf.capacity() >= need || self.buf.try_reclaim(need - len) {
            // Zeroes only the bytes that were never initialised.
            self.buf.resize(need, 0);
        } else {
            self.reallocate(need, self.grown(need));
        }
    }

    /// The size of a new allocation for `need` bytes: twice the bytes held,
    /// so growth in read-chunk steps (a stream decoded only once the limit
    /// is reached) copies O(n) in total; never past the limit.
    fn grown(&self, need: usize) -> usize {
        need.max(2 * self.filled).min(self.config.buffer_limit())
    }

    /// Moves the received bytes into a new allocation of `capacity` bytes and
    /// initialises it up to `need`. Frames returned earlier keep the old one.
    fn reallocate(&mut self, need: usize, capacity: usize) {
        self.move_to(capacity);
        self.buf.resize(need, 0);
    }

    /// Moves the received bytes into a new allocation of `capacity` bytes,
    /// uninitialised past them.
    fn move_to(&mut self, capacity: usize) {
        let mut buf = BytesMut::with_capacity(capacity);
        buf.extend_from_slice(&self.buf[..self.filled]);
        self.buf = buf;
        self.allocated = capacity;
    }

    /// Marks `n` bytes of the last [`Decoder::read_buf`] region as received.
    /// `n` is clamped to the region's initialised length.
    pub fn commit(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.buf.len());
    }

    /// Copies as much of `data` as the buffer limit allows; returns how many
    /// bytes were taken. Decode, then feed the rest.
    pub fn feed(&mut self, mut data: &[u8]) -> usize {
        let mut taken = 0;
        while !data.is_empty() {
            let dst = self.read_buf();
            if dst.is_empty() {
                break;
            }
            let n = dst.len().min(data.len());
            dst[..n].copy_from_slice(&data[..n]);
            self.commit(n);
            taken += n;
            data = &data[n..];
        }
        taken
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the
    /// stream's (sticky) error. Body and metadata are `Bytes` slices of the
    /// receive buffer: zero-copy, and free to outlive the decoder.
    pub fn decode(&mut self) -> Result<Option<Frame>, DecodeError> {
        self.release();
        let Some(header) = self.check_front()? else {
            return Ok(None);
        };
        let meta_len = usize::from(header.meta_len);
        let body_len = header.body_len as usize;
        let frame_len = OVERHEAD + meta_len + body_len;
        let mut bytes = self.buf.split_to(frame_len);
        self.filled -= frame_len;
        self.pending = None;
        self.last_frame = frame_len;
        bytes.advance(HEADER_LEN);
        let meta = if meta_len == 0 {
            Bytes::new()
        } else {
            bytes.split_to(meta_len).freeze()
        };
        bytes.truncate(body_len);
        Ok(Some(Frame {
            msg_type: header.msg_type,
            flags: header.flags,
            request_id: header.request_id,
            meta,
            body: bytes.freeze(),
        }))
    }

    /// The header of the next frame if all of it has arrived and it passes
    /// every check [`Decoder::decode`] makes (checksum and metadata
    /// included), without taking it: the next `decode` returns that frame.
    /// `None` when more bytes are needed or the stream has failed (the
    /// next `decode` reports the error).
    pub fn peek(&mut self) -> Option<Header> {
        self.release();
        let header = self.check_front().ok().flatten();
        self.verified = header;
        header
    }

    /// Like [`Decoder::decode`], but lends the frame as a view of the
    /// receive buffer instead of `Bytes` handles: no reference counting at
    /// all, for consumers that finish with a frame before asking for the
    /// next (its bytes are released by the next call on the decoder).
    /// Validation is identical.
    pub fn decode_ref(&mut self) -> Result<Option<FrameRef<'_>>, DecodeError> {
        self.release();
        let Some(header) = self.check_front()? else {
            return Ok(None);
        };
        let meta_end = HEADER_LEN + usize::from(header.meta_len);
        let body_end = meta_end + header.body_len as usize;
        self.head = body_end + TRAILER_LEN;
        self.pending = None;
        self.last_frame = self.head;
        Ok(Some(FrameRef {
            msg_type: header.msg_type,
            flags: header.flags,
            request_id: header.request_id,
            meta: &self.buf[HEADER_LEN..meta_end],
            body: &self.buf[meta_end..body_end],
        }))
    }

    /// Validates the frame at the front of the buffer: its header when
    /// `Ok(None)` (need more bytes), everything when `Ok(Some(header))`.
    fn check_front(&mut self) -> Result<Option<Header>, DecodeError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if let Some(h) = self.verified.take() {
            return Ok(Some(h));
        }
        let avail = &self.buf[..self.filled];
        let header = match FrameHeader::new_checked(avail, self.config.max_payload) {
            Ok(Some(h)) => h.repr(),
            Ok(None) => return Ok(None),
            Err(e) => {
                let request_id = raw_request_id(avail);
                return Err(self.fail(e, request_id));
            }
        };
        let meta_len = usize::from(header.meta_len);
        let frame_len = OVERHEAD + meta_len + header.body_len as usize;
        if avail.len() < frame_len {
            self.pending = Some(frame_len);
            return Ok(None);
        }
        let payload_end = frame_len - TRAILER_LEN;
        let computed = crc32fast::hash(&avail[..payload_end]);
        let mut trailer = &avail[payload_end..frame_len];
        let received = trailer.get_u32();
        let rid = Some(header.request_id);
        if computed != received {
            return Err(self.fail(FrameError::BadChecksum { received, computed }, rid));
        }
        let meta_end = HEADER_LEN + meta_len;
        if header.meta_len > 0
            && let Err(e) = meta::validate(&avail[HEADER_LEN..meta_end])
        {
            return Err(self.fail(e.into(), rid));
        }
        if let Err(e) = body::check(header.msg_type, &avail[meta_end..payload_end]) {
            return Err(self.fail(e, rid));
        }
        Ok(Some(header))
    }

    fn fail(&mut self, error: FrameError, request_id: Option<u64>) -> DecodeError {
        let e = DecodeError { error, request_id };
        self.error = Some(e);
        self.verified = None;
        self.buf = BytesMut::new();
        self.allocated = 0;
        self.filled = 0;
        self.pending = None;
        self.head = 0;
        e
    }
}

/// The request_id of a header refused before the rest of its frame was
/// looked at: its own whenever all 20 bytes have arrived and start with the
/// magic (a wrong version, flag or reserved byte, a length over the limit or
/// wrong for the type still names the request), otherwise none (without the
/// magic the bytes are not a frame, and their id means nothing).
fn raw_request_id(b: &[u8]) -> Option<u64> {
    let h = b.first_chunk::<HEADER_LEN>()?;
    if h[0..2] != crate::MAGIC {
        return None;
    }
    let id: [u8; 8] = h[12..20].try_into().ok()?;
    Some(u64::from_be_bytes(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ErrorCode, Flags, MessageType};

    fn enc(f: &Frame) -> Vec<u8> {
        f.to_bytes().unwrap().to_vec()
    }

    #[test]
    fn one_byte_at_a_time() {
        let frames = [
            Frame::new(MessageType::ECHO, 1, &b"hello"[..]),
            Frame::new(MessageType::PING, 2, 7u64.to_be_bytes().to_vec()),
            Frame::response(MessageType::ECHO_REPLY, 3, Bytes::new()),
        ];
        let stream: Vec<u8> = frames.iter().flat_map(enc).collect();
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for b in stream {
            assert_eq!(d.feed(&[b]), 1);
            while let Some(f) = d.decode().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn peek_shows_the_next_whole_frame_without_taking_it() {
        let a = Frame::new(MessageType::DATA, 1, vec![7u8; 3000]);
        let b = Frame::new(MessageType::ECHO, 2, &b"next"[..]);
        let mut bad = enc(&b);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut d = Decoder::default();
        let first = enc(&a);
        assert_eq!(d.feed(&first[..100]), 100);
        assert_eq!(d.peek(), None, "a frame still arriving");
        assert_eq!(d.feed(&first[100..]), first.len() - 100);
        d.feed(&enc(&b));
        let h = d.peek().unwrap();
        assert_eq!((h.msg_type, h.request_id), (MessageType::DATA, 1));
        assert_eq!(
            d.peek().unwrap().request_id,
            1,
            "peeking twice takes nothing"
        );
        assert_eq!(d.decode().unwrap().unwrap(), a);
        assert_eq!(d.peek().unwrap().msg_type, MessageType::ECHO);
        assert_eq!(d.decode().unwrap().unwrap(), b);
        assert_eq!(d.peek(), None);
        // A corrupt frame is not shown; decode reports it.
        d.feed(&bad);
        assert_eq!(d.peek(), None);
        assert!(d.decode().is_err());
    }

    #[test]
    fn decode_ref_matches_decode() {
        let frames = [
            Frame::new(MessageType::ECHO, 1, &b"hello"[..]),
            Frame::new(MessageType::DATA, 2, vec![9u8; 40_000]).with_flags(Flags::ACK_REQUESTED),
            Frame::response(MessageType::STATS_REPLY, 3, Bytes::new())
                .with_meta(Bytes::from_static(&[0, 1, 1, b'k', 0, 1, b'v'])),
        ];
        let stream: Vec<u8> = frames.iter().flat_map(enc).collect();
        for chunk in [1usize, 7, 1000, stream.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                let mut rest = piece;
                while !rest.is_empty() {
                    let n = d.feed(rest);
                    rest = &rest[n..];
                    while let Some(v) = d.decode_ref().unwrap() {
                        got.push(Frame {
                            msg_type: v.msg_type,
                            flags: v.flags,
                            request_id: v.request_id,
                            meta: Bytes::copy_from_slice(v.meta),
                            body: Bytes::copy_from_slice(v.body),
                        });
                    }
                }
            }
            assert_eq!(got, frames, "chunk {chunk}");
            assert_eq!(d.buffered(), 0);
        }
        // Mixed: a borrowed frame, then an owned one.
        let mut d = Decoder::default();
        d.feed(&stream);
        assert_eq!(d.decode_ref().unwrap().unwrap().body, b"hello");
        assert_eq!(d.decode().unwrap().unwrap(), frames[1]);
        assert_eq!(d.decode_ref().unwrap().unwrap().request_id, 3);
        assert_eq!(d.decode().unwrap(), None);
    }

    #[test]
    fn read_buf_commit_path() {
        let f =
            Frame::new(MessageType::DATA, 9, vec![7u8; 100_000]).with_flags(Flags::ACK_REQUESTED);
        let bytes = enc(&f);
        let mut d = Decoder::default();
        let mut off = 0;
        let mut got = None;
        while off < bytes.len() {
            let dst = d.read_buf();
            assert!(!dst.is_empty());
            let n = dst.len().min(bytes.len() - off).min(5000);
            dst[..n].copy_from_slice(&bytes[off..off + n]);
            d.commit(n);
            off += n;
            if let Some(fr) = d.decode().unwrap() {
                got = Some(fr);
            }
        }
        assert_eq!(got, Some(f));
    }

    #[test]
    fn body_is_a_slice_of_the_receive_buffer() {
        let bytes = enc(&Frame::new(MessageType::ECHO, 1, vec![1u8; 64]));
        let mut d = Decoder::default();
        let before = d.read_buf().as_ptr() as usize;
        d.feed(&bytes);
        let f = d.decode().unwrap().unwrap();
        assert_eq!(f.body.as_ptr() as usize, before + HEADER_LEN);
    }

    #[test]
    fn errors_are_sticky_and_carry_codes() {
        let mut d = Decoder::default();
        d.feed(b"GET / HTTP/1.1\r\n\r\n");
        let e = d.decode().unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadMagic);
        assert_eq!(e.request_id, None);
        assert_eq!(d.decode().unwrap_err(), e);
        assert_eq!(d.feed(b"Ww"), 0);
        assert!(d.read_buf().is_empty());
    }

    #[test]
    fn bad_crc_carries_request_id() {
        let mut bytes = enc(&Frame::new(MessageType::ECHO, 77, &b"abc"[..]));
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        let mut d = Decoder::default();
        d.feed(&bytes);
        let e = d.decode().unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadChecksum);
        assert_eq!(e.request_id, Some(77));
    }

    #[test]
    fn oversize_refused_before_body() {
        let mut d = Decoder::with_max_payload(1000);
        let h = crate::Header {
            msg_type: MessageType::DATA,
            flags: Flags::NONE,
            meta_len: 0,
            body_len: 1001,
            request_id: 5,
        };
        d.feed(&h.to_bytes());
        let e = d.decode().unwrap_err();
        assert_eq!(e.code(), ErrorCode::FrameTooLarge);
        assert_eq!(e.request_id, Some(5));
    }

    #[test]
    fn memory_bounded_by_limit() {
        let cfg = DecoderConfig {
            max_payload: 4096,
            read_chunk: 1024,
        };
        let mut d = Decoder::new(cfg);
        // A frame of exactly the limit buffers fully; the decoder never takes more.
        let f = Frame::new(MessageType::ECHO, 1, vec![0u8; 4096]);
        let bytes = enc(&f);
        let mut stream = bytes.clone();
        stream.extend_from_slice(&bytes);
        let taken = d.feed(&stream);
        assert_eq!(taken, cfg.buffer_limit());
        assert_eq!(d.decode().unwrap(), Some(f.clone()));
        assert_eq!(d.feed(&stream[taken..]), stream.len() - taken);
        assert_eq!(d.decode().unwrap(), Some(f));
    }

    /// A header announcing the largest frame, then `body` bytes of it.
    fn announce_max(d: &mut Decoder, body: usize) -> usize {
        let h = crate::Header {
            msg_type: MessageType::DATA,
            flags: Flags::NONE,
            meta_len: 0,
            body_len: d.config().max_payload,
            request_id: 1,
        };
        let mut bytes = h.to_bytes().to_vec();
        bytes.resize(HEADER_LEN + body, 0xAB);
        assert_eq!(d.feed(&bytes), bytes.len());
        assert_eq!(d.decode().unwrap(), None);
        bytes.len()
    }

    #[test]
    fn memory_follows_bytes_received_not_bytes_announced() {
        let chunk = DEFAULT_READ_CHUNK;
        for body in [0, 1, 1000, chunk, 3 * chunk, 100_000] {
            let mut d = Decoder::default();
            let received = announce_max(&mut d, body);
            let frame_len = OVERHEAD + DEFAULT_MAX_PAYLOAD as usize;
            assert_eq!(
                d.partial_frame(),
                Some(PartialFrame {
                    received,
                    frame_len: Some(frame_len)
                })
            );
            // Offering the next region must not reserve the announced rest.
            let offered = d.read_buf().len();
            assert!(offered >= 1, "body {body}");
            let bound = 2 * received + chunk;
            assert!(
                d.allocated() <= bound,
                "body {body}: {} bytes allocated for {received} received (bound {bound})",
                d.allocated()
            );
            assert!(d.allocated() < frame_len / 4 || received > frame_len / 8);
        }
    }

    #[test]
    fn a_large_frame_is_read_in_doubling_regions() {
        let f = Frame::new(
            MessageType::DATA,
            4,
            vec![5u8; DEFAULT_MAX_PAYLOAD as usize],
        );
        let bytes = enc(&f);
        let mut d = Decoder::default();
        let (mut off, mut reads, mut reallocs, mut last_alloc) = (0, 0, 0, 0);
        let mut got = None;
        while off < bytes.len() {
            let dst = d.read_buf();
            // A peer that sends fast: every region is filled.
            let n = dst.len().min(bytes.len() - off);
            dst[..n].copy_from_slice(&bytes[off..off + n]);
            d.commit(n);
            off += n;
            reads += 1;
            if d.allocated() != last_alloc {
                reallocs += 1;
                last_alloc = d.allocated();
            }
            assert!(d.allocated() <= 2 * off + DEFAULT_READ_CHUNK, "at {off}");
            if let Some(fr) = d.decode().unwrap() {
                got = Some(fr);
            }
        }
        assert_eq!(got, Some(f));
        // 16 KiB, then doubling to 1 MiB: about log2(64) steps, not 64 chunks.
        assert!(reads <= 9, "{reads} reads");
        assert!(reallocs <= 8, "{reallocs} reallocations");
    }

    #[test]
    fn a_large_frame_stays_a_slice_of_the_receive_buffer() {
        let f = Frame::new(MessageType::DATA, 4, vec![5u8; 300_000]);
        let bytes = enc(&f);
        let mut d = Decoder::default();
        let mut off = 0;
        let mut base = 0;
        while off < bytes.len() {
            let dst = d.read_buf();
            let n = dst.len().min(bytes.len() - off);
            dst[..n].copy_from_slice(&bytes[off..off + n]);
            d.commit(n);
            off += n;
            // The buffer's start after the last reallocation.
            base = d.buf.as_ptr() as usize;
            if off < bytes.len() {
                assert_eq!(d.decode().unwrap(), None);
            }
        }
        let got = d.decode().unwrap().unwrap();
        assert_eq!(got.body.as_ptr() as usize, base + HEADER_LEN);
        assert_eq!(got, f);
    }

    #[test]
    fn a_buffer_grown_for_a_large_frame_is_given_back() {
        let big = Frame::new(MessageType::DATA, 1, vec![1u8; 500_000]);
        let small = Frame::new(MessageType::ECHO, 2, &b"small"[..]);
        let mut d = Decoder::default();
        d.feed(&enc(&big));
        assert_eq!(d.decode().unwrap(), Some(big.clone()));
        assert!(d.allocated() > 500_000);
        // The next frame is small: once it is decoded, the large allocation
        // is not kept for what follows.
        d.feed(&enc(&small));
        assert_eq!(d.decode().unwrap(), Some(small.clone()));
        d.feed(&enc(&small));
        assert!(d.allocated() <= 4 * DEFAULT_READ_CHUNK, "{}", d.allocated());
        assert_eq!(d.decode().unwrap(), Some(small));
        // A large frame after a large frame reuses the allocation.
        let mut stream = enc(&big);
        stream.extend_from_slice(&enc(&big));
        let mut d = Decoder::default();
        let mut rest = &stream[..];
        let mut allocs = Vec::new();
        let mut frames = 0;
        while !rest.is_empty() {
            let n = d.feed(&rest[..rest.len().min(100_000)]);
            rest = &rest[n..];
            allocs.push(d.allocated());
            while let Some(fr) = d.decode().unwrap() {
                assert_eq!(fr, big);
                frames += 1;
            }
        }
        assert_eq!(frames, 2);
        assert_eq!(allocs.last(), allocs.iter().max());
    }

    /// A stream of 64 KiB DATA frames, read as a socket delivers it (reads
    /// that end anywhere), keeps one allocation once the first frame has
    /// grown it: no reallocation, and so no copy of each frame's first
    /// part, per frame.
    #[test]
    fn a_stream_of_equal_large_frames_keeps_its_allocation() {
        let f = Frame::new(MessageType::DATA, 1, vec![5u8; 65_536]);
        let one = enc(&f);
        let stream: Vec<u8> = (0..50).flat_map(|_| one.iter().copied()).collect();
        let mut d = Decoder::default();
        let (mut off, mut frames, mut reallocs, mut last) = (0, 0, 0, 0);
        while off < stream.len() {
            let dst = d.read_buf();
            // Reads of 10,000 bytes at most: never aligned to a frame.
            let n = dst.len().min(10_000).min(stream.len() - off);
            dst[..n].copy_from_slice(&stream[off..off + n]);
            d.commit(n);
            off += n;
            if frames >= 2 && d.allocated() != last {
                reallocs += 1;
            }
            last = d.allocated();
            while let Some(got) = d.decode().unwrap() {
                assert_eq!(got.body.len(), 65_536);
                frames += 1;
            }
        }
        assert_eq!(frames, 50);
        assert_eq!(reallocs, 0, "allocation changed after the second frame");
        assert!(d.allocated() <= 4 * one.len(), "{}", d.allocated());
    }

    /// The same stream from a peer that is ahead (every read fills its
    /// region, as a socket with data queued does): once a frame has been
    /// decoded, each next frame arrives in one read, into the place it is
    /// decoded from, so nothing is moved or read twice.
    #[test]
    fn a_stream_of_equal_large_frames_takes_one_read_per_frame() {
        let f = Frame::new(MessageType::DATA, 1, vec![5u8; 65_536]);
        let one = enc(&f);
        let stream: Vec<u8> = (0..20).flat_map(|_| one.iter().copied()).collect();
        let mut d = Decoder::default();
        let (mut off, mut frames, mut reads_after_first) = (0, 0, 0);
        while off < stream.len() {
            let dst = d.read_buf();
            let region = dst.as_ptr() as usize;
            let n = dst.len().min(stream.len() - off);
            dst[..n].copy_from_slice(&stream[off..off + n]);
            d.commit(n);
            off += n;
            if frames >= 1 {
                reads_after_first += 1;
            }
            while let Some(got) = d.decode().unwrap() {
                if frames >= 1 {
                    // Decoded where the one read put it.
                    assert_eq!(got.body.as_ptr() as usize, region + HEADER_LEN);
                }
                assert_eq!(got, f);
                frames += 1;
            }
        }
        assert_eq!(frames, 20);
        assert_eq!(reads_after_first, 19, "one read per frame after the first");
        assert!(d.allocated() <= 4 * one.len(), "{}", d.allocated());
    }

    /// Appends up to `max` of `stream[*off..]`, like a transport's
    /// `recv_buf`.
    fn append_from(stream: &[u8], off: &mut usize, buf: &mut BytesMut, max: usize) -> usize {
        let n = max.min(stream.len() - *off);
        buf.extend_from_slice(&stream[*off..*off + n]);
        *off += n;
        n
    }

    #[test]
    fn fill_with_decodes_what_read_buf_decodes_one_region_per_large_frame() {
        let big = Frame::new(MessageType::DATA, 1, vec![5u8; 65_536]);
        let small = Frame::new(MessageType::ECHO, 2, b"hi".to_vec());
        let mut stream = Vec::new();
        for i in 0..20 {
            stream.extend_from_slice(&enc(if i % 7 == 3 { &small } else { &big }));
        }
        let mut d = Decoder::default();
        let (mut off, mut frames, mut calls) = (0, 0, 0);
        while off < stream.len() {
            let n = d
                .fill_with(|buf, max| {
                    calls += 1;
                    Ok::<_, ()>(append_from(&stream, &mut off, buf, max))
                })
                .unwrap()
                .unwrap();
            assert!(n > 0);
            while let Some(got) = d.decode().unwrap() {
                assert_eq!(
                    got,
                    if frames % 7 == 3 {
                        small.clone()
                    } else {
                        big.clone()
                    }
                );
                frames += 1;
            }
            assert!(d.allocated() <= d.config().buffer_limit());
        }
        assert_eq!(frames, 20);
        // The first large frame takes a few growing regions, every later
        // one a single region (plus at most one per small frame).
        assert!(calls <= 20 + 6, "{calls} receives for 20 frames");
    }

    #[test]
    fn fill_with_bounds_memory_and_drops_what_a_receiver_appends_past_its_count() {
        let mut d = Decoder::default();
        let limit = d.config().buffer_limit();
        // A header announcing the largest frame: memory follows bytes.
        let h = crate::Header {
            msg_type: MessageType::DATA,
            flags: Flags::NONE,
            meta_len: 0,
            body_len: DEFAULT_MAX_PAYLOAD,
            request_id: 1,
        };
        let header = h.to_bytes();
        let mut off = 0;
        d.fill_with(|buf, max| Ok::<_, ()>(append_from(&header, &mut off, buf, max)))
            .unwrap()
            .unwrap();
        assert_eq!(d.decode().unwrap(), None);
        assert!(d.allocated() <= 2 * DEFAULT_READ_CHUNK, "{}", d.allocated());
        // A receiver that breaks its contract and appends twice its count.
        let got = d
            .fill_with(|buf, max| {
                buf.extend_from_slice(&vec![0u8; 2 * max]);
                Ok::<_, ()>(2 * max)
            })
            .unwrap()
            .unwrap();
        assert!(got > 0);
        assert!(d.buffered() <= limit);
        assert!(d.allocated() <= limit, "{} > {limit}", d.allocated());
    }

    #[test]
    fn fill_with_does_not_call_the_receiver_without_room() {
        let mut d = Decoder::default();
        // A broken stream: the sticky error leaves no room.
        d.feed(&[0xFF; HEADER_LEN]);
        assert!(d.decode().is_err());
        let mut called = false;
        let r = d.fill_with(|_, _| {
            called = true;
            Ok::<_, ()>(0)
        });
        assert_eq!((r, called), (None, false));
        // Errors from the receiver come back as they are.
        let mut d = Decoder::default();
        assert_eq!(
            d.fill_with(|_, _| Err::<usize, _>("gone")),
            Some(Err("gone"))
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn partial_frame_reports_the_frame_being_waited_for() {
        let bytes = enc(&Frame::new(MessageType::ECHO, 3, vec![0u8; 100]));
        let mut d = Decoder::default();
        assert_eq!(d.partial_frame(), None);
        assert_eq!(d.allocated(), 0);
        d.feed(&bytes[..7]);
        assert_eq!(d.decode().unwrap(), None);
        assert_eq!(
            d.partial_frame(),
            Some(PartialFrame {
                received: 7,
                frame_len: None
            })
        );
        d.feed(&bytes[7..50]);
        assert_eq!(d.decode().unwrap(), None);
        assert_eq!(
            d.partial_frame(),
            Some(PartialFrame {
                received: 50,
                frame_len: Some(bytes.len())
            })
        );
        d.feed(&bytes[50..]);
        assert!(d.decode().unwrap().is_some());
        assert_eq!(d.partial_frame(), None);
        assert!(d.allocated() > 0);
        d.feed(b"X");
        assert!(d.decode().is_err());
        assert_eq!((d.partial_frame(), d.allocated()), (None, 0));
    }

    #[test]
    fn unsupported_version_carries_the_request_id_once_the_header_arrived() {
        let mut bytes = enc(&Frame::new(MessageType::ECHO, 3, &b"x"[..]));
        bytes[2] = 2;
        let mut d = Decoder::default();
        d.feed(&bytes);
        let e = d.decode().unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
        assert_eq!(e.request_id, Some(3));
        // Refused from its first three bytes, before the id arrived: none.
        let mut d = Decoder::default();
        d.feed(&bytes[..HEADER_LEN - 1]);
        let e = d.decode().unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
        assert_eq!(e.request_id, None);
        // Without the magic the id means nothing, header or not.
        let mut d = Decoder::default();
        d.feed(&bytes[1..]);
        assert_eq!(d.decode().unwrap_err().request_id, None);
    }

    #[test]
    fn bad_magic_message_shows_the_bytes_received() {
        let mut d = Decoder::default();
        d.feed(b"GET / HTTP/1.1\r\n\r\n");
        let e = d.decode().unwrap_err();
        assert_eq!(e.to_string(), "bad magic [47, 45], expected \"Ww\"");
        assert_eq!(e.request_id, None);
        // Only one byte so far: only one byte shown.
        let mut d = Decoder::default();
        d.feed(b"G");
        let e = d.decode().unwrap_err();
        assert_eq!(e.to_string(), "bad magic [47], expected \"Ww\"");
        // A right first byte and a wrong second one.
        let mut d = Decoder::default();
        d.feed(b"W");
        assert_eq!(d.decode().unwrap(), None);
        d.feed(b"W");
        let e = d.decode().unwrap_err();
        assert_eq!(e.to_string(), "bad magic [57, 57], expected \"Ww\"");
    }
}
