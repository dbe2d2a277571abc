//! [`WarpwireCodec`]: the frame crate behind tokio-util's `Decoder` and
//! `Encoder` traits.
//!
//! Decoding works in place on `Framed`'s read buffer, the way tokio-util's
//! own `LengthDelimitedCodec` does: the header is checked with
//! [`FrameHeader::new_checked`] as soon as its bytes arrive, the buffer is
//! grown to hold the announced frame (bounded by the payload limit), and a
//! complete frame is split off the buffer so that its metadata and body are
//! `Bytes` slices of the received data, never copied. The checks are the
//! same as [`warpwire_frame::Decoder`]'s, in the same order, with the same
//! error codes and request ids; the tests compare the two on valid and
//! corrupt input.
//!
//! Encoding is [`FrameRef::encode`] into `Framed`'s write buffer.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec;
use warpwire_frame::{
    Auth, AuthReply, DEFAULT_MAX_PAYLOAD, DecodeError, EncodeError, ErrorBody, Frame, FrameError,
    FrameHeader, FrameRef, HEADER_LEN, MAGIC, MessageType, TRAILER_LEN, meta,
};

/// Why a connection's stream or sink failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The peer sent bytes that are not a valid frame; the connection is
    /// answered with an ERROR carrying [`DecodeError::code`] and closed.
    #[error("protocol error: {0}")]
    Decode(#[from] DecodeError),
    /// A reply could not be encoded (a length does not fit its field).
    #[error("cannot encode reply: {0}")]
    Encode(#[from] EncodeError),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The warpwire framing as a tokio-util codec: decodes [`Frame`]s, encodes
/// [`FrameRef`]s.
///
/// Errors are sticky, as in the frame crate: once a decode error has been
/// returned, every later call returns it again (a byte stream cannot be
/// resynchronised).
#[derive(Debug, Clone)]
pub struct WarpwireCodec {
    max_payload: u32,
    error: Option<DecodeError>,
}

impl Default for WarpwireCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl WarpwireCodec {
    /// A codec refusing frames whose metadata and body exceed `max_payload`
    /// bytes (FRAME_TOO_LARGE), decided from the header alone.
    pub fn new(max_payload: u32) -> Self {
        Self {
            max_payload,
            error: None,
        }
    }

    /// The payload limit.
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    fn fail(
        &mut self,
        src: &mut BytesMut,
        error: FrameError,
        request_id: Option<u64>,
    ) -> DecodeError {
        let e = DecodeError { error, request_id };
        self.error = Some(e);
        // Nothing after a bad frame can be decoded; release the bytes.
        src.clear();
        e
    }
}

impl codec::Decoder for WarpwireCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if let Some(e) = self.error {
            return Err(e.into());
        }
        let header = match FrameHeader::new_checked(&src[..], self.max_payload) {
            Ok(Some(h)) => h.repr(),
            Ok(None) => return Ok(None),
            Err(e) => {
                let id = request_id_of_refused(src);
                return Err(self.fail(src, e, id).into());
            }
        };
        let meta_len = usize::from(header.meta_len);
        let body_len = header.body_len as usize;
        // Fits: the header check bounded meta_len + body_len by a u32 limit.
        let frame_len = HEADER_LEN + meta_len + body_len + TRAILER_LEN;
        if src.len() < frame_len {
            // Room for what has arrived again, at most the rest of the
            // frame: memory grows with the bytes received, not with the
            // length a header promises (a header alone must not buy 1 MiB).
            let rest = frame_len - src.len();
            src.reserve(rest.min(src.len().max(8 * 1024)));
            return Ok(None);
        }
        let payload_end = frame_len - TRAILER_LEN;
        let computed = crc32fast::hash(&src[..payload_end]);
        let received = (&src[payload_end..frame_len]).get_u32();
        let id = Some(header.request_id);
        if computed != received {
            return Err(self
                .fail(src, FrameError::BadChecksum { received, computed }, id)
                .into());
        }
        let meta_end = HEADER_LEN + meta_len;
        if let Err(e) = meta::validate(&src[HEADER_LEN..meta_end]) {
            return Err(self.fail(src, e.into(), id).into());
        }
        if let Err(e) = check_body(header.msg_type, &src[meta_end..payload_end]) {
            return Err(self.fail(src, e, id).into());
        }

        let mut bytes = src.split_to(frame_len);
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

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        // A frame cut short by the peer's close is not answered: there is no
        // one left to read the answer. Garbage is still reported.
        self.decode(src)
    }
}

impl<'a> codec::Encoder<FrameRef<'a>> for WarpwireCodec {
    type Error = CodecError;

    fn encode(&mut self, item: FrameRef<'a>, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(dst)?;
        Ok(())
    }
}

/// Structural checks of typed bodies beyond their length bounds (which the
/// header check enforces): the frame crate's `body::check`, through the
/// public body decoders.
fn check_body(ty: MessageType, body: &[u8]) -> Result<(), FrameError> {
    match ty {
        MessageType::AUTH => Auth::decode(body).map(|_| ()),
        MessageType::AUTH_REPLY => AuthReply::decode(body).map(|_| ()),
        MessageType::ERROR => ErrorBody::decode(body).map(|_| ()),
        _ => Ok(()),
    }
}

/// The request_id to put on the ERROR answering a refused header: the
/// header's own when all 20 bytes are there with the right magic (a bad
/// version, length, flag or reserved byte still names the request),
/// otherwise none (the id of garbage means nothing).
fn request_id_of_refused(b: &[u8]) -> Option<u64> {
    let h = b.first_chunk::<HEADER_LEN>()?;
    if h[0..2] != MAGIC {
        return None;
    }
    let id: [u8; 8] = h[12..20].try_into().ok()?;
    Some(u64::from_be_bytes(id))
}

#[cfg(test)]
mod tests {
    use tokio_util::codec::{Decoder as _, Encoder as _};
    use warpwire_frame::{Decoder, ErrorCode, Flags, Header, MetaBuilder};

    use super::*;

    fn enc(f: &Frame) -> Vec<u8> {
        f.to_bytes().unwrap().to_vec()
    }

    /// Everything the codec yields for `input` delivered in `chunk`-byte
    /// pieces: frames until the first error.
    fn run_codec(input: &[u8], chunk: usize) -> (Vec<Frame>, Option<DecodeError>) {
        let mut c = WarpwireCodec::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match c.decode(&mut buf) {
                    Ok(Some(f)) => out.push(f),
                    Ok(None) => break,
                    Err(CodecError::Decode(e)) => return (out, Some(e)),
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }
        (out, None)
    }

    /// The same through the frame crate's decoder, given the same pieces (a
    /// header refused early, before its request_id has arrived, carries no
    /// id, so the split matters to both).
    fn run_reference(input: &[u8], chunk: usize) -> (Vec<Frame>, Option<DecodeError>) {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            let mut rest = piece;
            loop {
                let n = d.feed(rest);
                rest = &rest[n..];
                loop {
                    match d.decode() {
                        Ok(Some(f)) => out.push(f),
                        Ok(None) => break,
                        Err(e) => return (out, Some(e)),
                    }
                }
                if rest.is_empty() {
                    break;
                }
            }
        }
        (out, None)
    }

    fn valid_stream() -> Vec<u8> {
        let meta = {
            let mut m = MetaBuilder::new();
            m.push("k", b"v").unwrap();
            m.finish()
        };
        let frames = [
            Frame::new(MessageType::ECHO, 1, &b"hello"[..]),
            Frame::new(MessageType::PING, 2, 7u64.to_be_bytes().to_vec()),
            Frame::new(MessageType::DATA, 3, vec![9u8; 70_000]).with_flags(Flags::ACK_REQUESTED),
            Frame::new(MessageType::ECHO, 4, Bytes::new()).with_meta(meta),
            Frame::new(MessageType(0x90), 5, &b"app"[..]),
        ];
        frames.iter().flat_map(enc).collect()
    }

    #[test]
    fn valid_frames_match_the_frame_crate_for_any_split() {
        let stream = valid_stream();
        let (want, err) = run_reference(&stream, stream.len());
        assert_eq!(err, None);
        assert_eq!(want.len(), 5);
        for chunk in [1, 7, 20, 24, 100, 4096, stream.len()] {
            assert_eq!(
                run_codec(&stream, chunk),
                (want.clone(), None),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn body_is_a_slice_of_the_read_buffer() {
        let bytes = enc(&Frame::new(MessageType::ECHO, 1, vec![1u8; 64]));
        let mut buf = BytesMut::from(&bytes[..]);
        let base = buf.as_ptr() as usize;
        let f = WarpwireCodec::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.body.as_ptr() as usize, base + HEADER_LEN);
    }

    #[test]
    fn errors_match_the_frame_crate() {
        let good = enc(&Frame::new(MessageType::ECHO, 77, &b"abc"[..]));
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        cases.push(("http", b"GET / HTTP/1.1\r\n\r\n".to_vec()));
        cases.push(("one bad byte", b"X".to_vec()));
        let mut v = good.clone();
        v[2] = 2;
        cases.push(("version", v));
        let mut v = good.clone();
        v[4] = 0x80;
        cases.push(("reserved flag", v));
        let mut v = good.clone();
        v[5] = 1;
        cases.push(("reserved byte", v));
        let mut v = good.clone();
        let n = v.len();
        v[n - 1] ^= 1;
        cases.push(("crc", v));
        let big = Header {
            msg_type: MessageType::DATA,
            flags: Flags::NONE,
            meta_len: 0,
            body_len: DEFAULT_MAX_PAYLOAD + 1,
            request_id: 5,
        };
        cases.push(("too large", big.to_bytes().to_vec()));
        let short_ping = Header {
            msg_type: MessageType::PING,
            flags: Flags::NONE,
            meta_len: 0,
            body_len: 3,
            request_id: 6,
        };
        cases.push(("short ping", short_ping.to_bytes().to_vec()));
        let bad_meta = Frame::new(MessageType::ECHO, 8, &b"x"[..])
            .with_meta(Bytes::from_static(&[0, 1, 1, b'k', 0]));
        cases.push(("bad meta", enc(&bad_meta)));
        let bad_auth = Frame::new(MessageType::AUTH, 9, &[5u8, b'a'][..]);
        cases.push(("bad auth", enc(&bad_auth)));
        let bad_err = Frame::new(MessageType::ERROR, 10, &[0u8, 1, 0xff][..]);
        cases.push(("bad error body", enc(&bad_err)));

        for (name, bad) in cases {
            // A valid frame first, so the error surfaces mid-stream.
            let mut input = good.clone();
            input.extend_from_slice(&bad);
            for chunk in [1, 3, 21, input.len()] {
                let want = run_reference(&input, chunk);
                assert!(want.1.is_some(), "{name}: reference accepted it");
                assert_eq!(run_codec(&input, chunk), want, "{name}, chunk {chunk}");
            }
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut c = WarpwireCodec::default();
        let mut buf = BytesMut::from(&b"GET /"[..]);
        let Err(CodecError::Decode(e)) = c.decode(&mut buf) else {
            panic!("garbage accepted");
        };
        assert_eq!(e.code(), ErrorCode::BadMagic);
        assert!(buf.is_empty());
        buf.extend_from_slice(&enc(&Frame::new(MessageType::ECHO, 1, &b""[..])));
        assert!(matches!(c.decode(&mut buf), Err(CodecError::Decode(e2)) if e2 == e));
    }

    #[test]
    fn encode_round_trips() {
        let f = Frame::response(MessageType::ECHO_REPLY, 3, &b"body"[..]);
        let mut c = WarpwireCodec::default();
        let mut buf = BytesMut::new();
        c.encode(f.as_ref(), &mut buf).unwrap();
        assert_eq!(&buf[..], &enc(&f)[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), Some(f));
    }
}
