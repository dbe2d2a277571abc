//! Owned frames and the encoder.
//!
//! [`Frame`] owns its metadata and body as [`Bytes`] (for a decoded frame,
//! slices of the receive buffer). [`FrameRef`] borrows them, so a reply can
//! be encoded straight from a request's body. Three encoder forms:
//! contiguous into a [`BytesMut`], into a caller's `&mut [u8]`, and
//! [`VectoredFrame`], which leaves the body where it is for a transport that
//! sends iovecs.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::EncodeError;
use crate::header::{HEADER_LEN, Header, OVERHEAD, TRAILER_LEN};
use crate::meta::Metadata;
use crate::types::{Flags, MessageType};

/// Bodies are hashed and copied in chunks of this size so the copy reads
/// what the CRC just pulled into L1 (32 KiB L1d on the machines measured).
const ENCODE_CHUNK: usize = 16 * 1024;

/// A frame with owned metadata and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Message type.
    pub msg_type: MessageType,
    /// Flags.
    pub flags: Flags,
    /// Correlation id.
    pub request_id: u64,
    /// The metadata section (empty for none). A decoded frame's section has
    /// been validated; one set by hand is validated by [`Frame::metadata`].
    pub meta: Bytes,
    /// The body.
    pub body: Bytes,
}

impl Frame {
    /// A request frame (no flags, no metadata).
    pub fn new(msg_type: MessageType, request_id: u64, body: impl Into<Bytes>) -> Self {
        Self {
            msg_type,
            flags: Flags::NONE,
            request_id,
            meta: Bytes::new(),
            body: body.into(),
        }
    }

    /// A reply frame: the RESPONSE flag set.
    pub fn response(msg_type: MessageType, request_id: u64, body: impl Into<Bytes>) -> Self {
        Self::new(msg_type, request_id, body).with_flags(Flags::RESPONSE)
    }

    /// Adds flags.
    #[must_use]
    pub fn with_flags(mut self, flags: Flags) -> Self {
        self.flags = self.flags.with(flags);
        self
    }

    /// Sets the metadata section (see [`crate::MetaBuilder`]).
    #[must_use]
    pub fn with_meta(mut self, meta: Bytes) -> Self {
        self.meta = meta;
        self
    }

    /// The metadata as a view; an invalid hand-set section yields an error.
    pub fn metadata(&self) -> Result<Metadata<'_>, crate::MetaError> {
        Metadata::new_checked(&self.meta)
    }

    /// Borrowed form for encoding.
    pub fn as_ref(&self) -> FrameRef<'_> {
        FrameRef {
            msg_type: self.msg_type,
            flags: self.flags,
            request_id: self.request_id,
            meta: &self.meta,
            body: &self.body,
        }
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        self.as_ref().encoded_len()
    }

    /// Appends the encoded frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.as_ref().encode(dst)
    }

    /// The frame encoded into a fresh buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut b)?;
        Ok(b.freeze())
    }
}

/// A frame whose metadata and body are borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// Message type.
    pub msg_type: MessageType,
    /// Flags.
    pub flags: Flags,
    /// Correlation id.
    pub request_id: u64,
    /// Encoded metadata section, or empty.
    pub meta: &'a [u8],
    /// Body.
    pub body: &'a [u8],
}

impl<'a> FrameRef<'a> {
    /// The header, or an error if a length does not fit its field.
    pub fn header(&self) -> Result<Header, EncodeError> {
        let meta_len = u16::try_from(self.meta.len())
            .map_err(|_| EncodeError::MetaTooLong(self.meta.len()))?;
        let body_len = u32::try_from(self.body.len())
            .map_err(|_| EncodeError::BodyTooLong(self.body.len()))?;
        Ok(Header {
            msg_type: self.msg_type,
            flags: self.flags,
            meta_len,
            body_len,
            request_id: self.request_id,
        })
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        OVERHEAD + self.meta.len() + self.body.len()
    }

    /// Appends the encoded frame to `dst`, reserving what it needs.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let header = self.header()?.to_bytes();
        dst.reserve(self.encoded_len());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        dst.put_slice(&header);
        crc.update(self.meta);
        dst.put_slice(self.meta);
        for chunk in self.body.chunks(ENCODE_CHUNK) {
            crc.update(chunk);
            dst.put_slice(chunk);
        }
        dst.put_u32(crc.finalize());
        Ok(())
    }

    /// Writes the encoded frame to the front of `dst`; returns its length.
    pub fn encode_to_slice(&self, dst: &mut [u8]) -> Result<usize, EncodeError> {
        let need = self.encoded_len();
        let have = dst.len();
        let header = self.header()?.to_bytes();
        let Some(out) = dst.get_mut(..need) else {
            return Err(EncodeError::BufferTooSmall { need, have });
        };
        let (h, rest) = out.split_at_mut(HEADER_LEN);
        h.copy_from_slice(&header);
        let (m, rest) = rest.split_at_mut(self.meta.len());
        m.copy_from_slice(self.meta);
        let (b, t) = rest.split_at_mut(self.body.len());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(self.meta);
        for (src, dst) in self
            .body
            .chunks(ENCODE_CHUNK)
            .zip(b.chunks_mut(ENCODE_CHUNK))
        {
            crc.update(src);
            dst.copy_from_slice(src);
        }
        t.copy_from_slice(&crc.finalize().to_be_bytes());
        Ok(need)
    }

    /// The frame as header, metadata, body and trailer slices, the body not
    /// copied: hand [`VectoredFrame::slices`] to a vectored write.
    pub fn encode_vectored(&self) -> Result<VectoredFrame<'a>, EncodeError> {
        self.encode_vectored_with(None)
    }

    /// [`FrameRef::encode_vectored`] with the body's CRC computed ahead
    /// ([`BodyCrc::of`], perhaps on another thread): only header and
    /// metadata are read here, and the trailer combines the two CRCs.
    /// A `body_crc` of a different length is ignored (the body is read);
    /// one of another body of the same length gives a frame the peer
    /// refuses with BAD_CHECKSUM.
    pub fn encode_vectored_with(
        &self,
        body_crc: Option<BodyCrc>,
    ) -> Result<VectoredFrame<'a>, EncodeError> {
        let header = self.header()?.to_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(self.meta);
        match body_crc {
            Some(b) if b.len == self.body.len() as u64 => {
                crc.combine(&crc32fast::Hasher::new_with_initial_len(b.crc, b.len));
            }
            _ => crc.update(self.body),
        }
        Ok(VectoredFrame {
            header,
            meta: self.meta,
            body: self.body,
            trailer: crc.finalize().to_be_bytes(),
        })
    }
}

/// The CRC-32 of a frame body alone, computed ahead of encoding: a sender
/// whose I/O thread is its bottleneck has another thread read the body
/// for the checksum, and the I/O thread combines it with the header's
/// ([`FrameRef::encode_vectored_with`]) in time independent of the body's
/// length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyCrc {
    crc: u32,
    len: u64,
}

impl BodyCrc {
    /// The CRC of `body`.
    pub fn of(body: &[u8]) -> Self {
        let mut h = crc32fast::Hasher::new();
        h.update(body);
        Self {
            crc: h.finalize(),
            len: body.len() as u64,
        }
    }
}

/// An encoded frame in four parts; only header and trailer are owned.
#[derive(Debug, Clone, Copy)]
pub struct VectoredFrame<'a> {
    header: [u8; HEADER_LEN],
    meta: &'a [u8],
    body: &'a [u8],
    trailer: [u8; TRAILER_LEN],
}

impl VectoredFrame<'_> {
    /// The parts in wire order: header, metadata, body, trailer (empty parts
    /// included, so the array length is fixed).
    pub fn slices(&self) -> [&[u8]; 4] {
        [&self.header, self.meta, self.body, &self.trailer]
    }

    /// Total encoded length.
    pub fn len(&self) -> usize {
        OVERHEAD + self.meta.len() + self.body.len()
    }

    /// Always false: a frame has at least a header and a trailer.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The CRC-32 trailer value.
    pub fn crc(&self) -> u32 {
        u32::from_be_bytes(self.trailer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_crc_computed_ahead_gives_the_same_trailer() {
        for len in [0usize, 1, 3, 4096, 65_536, 100_003] {
            let body: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
            for meta in [&b""[..], &[0, 1, 1, b'k', 0, 1, b'v'][..]] {
                let f = FrameRef {
                    msg_type: MessageType::DATA,
                    flags: Flags::ACK_REQUESTED,
                    request_id: 0x0102_0304_0506_0708,
                    meta,
                    body: &body,
                };
                let plain = f.encode_vectored().unwrap();
                let ahead = f.encode_vectored_with(Some(BodyCrc::of(&body))).unwrap();
                assert_eq!(ahead.crc(), plain.crc(), "body of {len} bytes");
                // A CRC of another length is not used.
                let other = BodyCrc::of(&body[..len / 2]);
                let ignored = f.encode_vectored_with(Some(other)).unwrap();
                assert_eq!(ignored.crc(), plain.crc(), "body of {len} bytes");
            }
        }
    }

    #[test]
    fn three_encoders_agree() {
        for len in [
            0usize,
            1,
            63,
            64,
            1024,
            ENCODE_CHUNK - 1,
            ENCODE_CHUNK + 7,
            100_000,
        ] {
            let body: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let f = Frame::new(MessageType::DATA, 42, body.clone())
                .with_flags(Flags::ACK_REQUESTED)
                .with_meta(Bytes::from_static(&[0, 1, 1, b'k', 0, 1, b'v']));
            let mut a = BytesMut::new();
            f.encode(&mut a).unwrap();
            let mut b = vec![0u8; f.encoded_len() + 3];
            assert_eq!(f.as_ref().encode_to_slice(&mut b).unwrap(), f.encoded_len());
            let v = f.as_ref().encode_vectored().unwrap();
            let c: Vec<u8> = v.slices().concat();
            assert_eq!(&a[..], &b[..f.encoded_len()]);
            assert_eq!(&a[..], &c[..]);
            assert_eq!(v.len(), a.len());
            let crc = crc32fast::hash(&a[..a.len() - 4]);
            assert_eq!(v.crc(), crc);
        }
    }

    #[test]
    fn slice_too_small() {
        let f = Frame::new(MessageType::ECHO, 1, &b"hello"[..]);
        let mut b = [0u8; 28];
        assert_eq!(
            f.as_ref().encode_to_slice(&mut b),
            Err(EncodeError::BufferTooSmall { need: 29, have: 28 })
        );
    }

    #[test]
    fn oversized_meta_refused() {
        let meta = vec![0u8; 70_000];
        let f = FrameRef {
            msg_type: MessageType::ECHO,
            flags: Flags::NONE,
            request_id: 0,
            meta: &meta,
            body: b"",
        };
        assert_eq!(f.header(), Err(EncodeError::MetaTooLong(70_000)));
    }
}
