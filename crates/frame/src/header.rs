//! The 20-byte frame header: a checked view and an owned representation.

use crate::error::FrameError;
use crate::types::{Flags, MessageType};

/// The magic bytes "Ww" at offset 0.
pub const MAGIC: [u8; 2] = [0x57, 0x77];
/// The only protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 20;
/// Length of the CRC-32 trailer.
pub const TRAILER_LEN: usize = 4;
/// Bytes a frame carries besides metadata and body.
pub const OVERHEAD: usize = HEADER_LEN + TRAILER_LEN;

/// A validated header over a byte buffer (smoltcp's `Packet::new_checked`
/// pattern): once [`FrameHeader::new_checked`] has succeeded, no accessor can
/// fail or panic, and the fields are known to satisfy docs/protocol.md and the
/// given payload limit.
#[derive(Debug, Clone, Copy)]
pub struct FrameHeader<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> FrameHeader<T> {
    /// Checks the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// Returns `Ok(None)` while fewer than 20 bytes are present and the bytes
    /// so far are a valid prefix (so garbage is refused after two bytes, not
    /// twenty). `max_payload` bounds meta_len + body_len.
    pub fn new_checked(buf: T, max_payload: u32) -> Result<Option<Self>, FrameError> {
        let b = buf.as_ref();
        check_prefix(b)?;
        if b.len() < HEADER_LEN {
            return Ok(None);
        }
        let h = Self { buf };
        let len = u64::from(h.meta_len()) + u64::from(h.body_len());
        if len > u64::from(max_payload) {
            return Err(FrameError::TooLarge {
                len,
                limit: max_payload,
            });
        }
        let ty = h.msg_type();
        let (min, max) = ty.body_len_bounds();
        let body_len = h.body_len();
        if body_len < min || max.is_some_and(|m| body_len > m) {
            return Err(FrameError::BodyLength {
                ty,
                len: body_len,
                min,
                max: max.unwrap_or(u32::MAX),
            });
        }
        Ok(Some(h))
    }

    fn bytes(&self) -> &[u8; HEADER_LEN] {
        // The constructor checked the length; `first_chunk` cannot fail here.
        match self.buf.as_ref().first_chunk::<HEADER_LEN>() {
            Some(b) => b,
            None => &[0; HEADER_LEN],
        }
    }

    /// Message type (byte 3).
    pub fn msg_type(&self) -> MessageType {
        MessageType(self.bytes()[3])
    }

    /// Flags (byte 4); reserved bits are known to be clear.
    pub fn flags(&self) -> Flags {
        Flags::from_bits(self.bytes()[4]).unwrap_or_default()
    }

    /// Length of the metadata section.
    pub fn meta_len(&self) -> u16 {
        let b = self.bytes();
        u16::from_be_bytes([b[6], b[7]])
    }

    /// Length of the body.
    pub fn body_len(&self) -> u32 {
        let b = self.bytes();
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }

    /// The requester's correlation id.
    pub fn request_id(&self) -> u64 {
        let b = self.bytes();
        u64::from_be_bytes([b[12], b[13], b[14], b[15], b[16], b[17], b[18], b[19]])
    }

    /// Whole frame length: header, metadata, body and trailer. Fits in
    /// `usize` because the payload was checked against a `u32` limit.
    pub fn frame_len(&self) -> usize {
        OVERHEAD + usize::from(self.meta_len()) + self.body_len() as usize
    }

    /// The owned representation.
    pub fn repr(&self) -> Header {
        Header {
            msg_type: self.msg_type(),
            flags: self.flags(),
            meta_len: self.meta_len(),
            body_len: self.body_len(),
            request_id: self.request_id(),
        }
    }
}

/// Validates whatever prefix of a header is present: magic (bytes 0-1),
/// version (2), flags (4) and the reserved byte (5).
fn check_prefix(b: &[u8]) -> Result<(), FrameError> {
    let arrived = b.len().min(MAGIC.len());
    if b[..arrived] != MAGIC[..arrived] {
        // Report every magic byte that arrived, not only up to the first
        // wrong one: "GET" shows as 47 45.
        let mut found = [0u8; 2];
        found[..arrived].copy_from_slice(&b[..arrived]);
        return Err(FrameError::BadMagic {
            found,
            // At most 2: it fits.
            arrived: arrived as u8,
        });
    }
    if let Some(&v) = b.get(2)
        && v != VERSION
    {
        return Err(FrameError::UnsupportedVersion(v));
    }
    if let Some(&f) = b.get(4)
        && Flags::from_bits(f).is_none()
    {
        return Err(FrameError::ReservedFlags(f));
    }
    if let Some(&r) = b.get(5)
        && r != 0
    {
        return Err(FrameError::ReservedByte(r));
    }
    Ok(())
}

/// The header as plain values, for building frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type.
    pub msg_type: MessageType,
    /// Flags.
    pub flags: Flags,
    /// Length of the metadata section.
    pub meta_len: u16,
    /// Length of the body.
    pub body_len: u32,
    /// Correlation id.
    pub request_id: u64,
}

impl Header {
    /// Serialises the header into its 20 wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2] = VERSION;
        b[3] = self.msg_type.0;
        b[4] = self.flags.bits();
        b[5] = 0;
        b[6..8].copy_from_slice(&self.meta_len.to_be_bytes());
        b[8..12].copy_from_slice(&self.body_len.to_be_bytes());
        b[12..20].copy_from_slice(&self.request_id.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ty: u8, flags: u8, meta: u16, body: u32, id: u64) -> [u8; HEADER_LEN] {
        Header {
            msg_type: MessageType(ty),
            flags: Flags::from_bits(flags).unwrap_or_default(),
            meta_len: meta,
            body_len: body,
            request_id: id,
        }
        .to_bytes()
    }

    #[test]
    fn field_offsets() {
        let b = header(0x03, 0x01, 0x0102, 0x0304_0506, 0x0708_090a_0b0c_0d0e);
        assert_eq!(
            b,
            [
                0x57, 0x77, 1, 0x03, 0x01, 0, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09,
                0x0a, 0x0b, 0x0c, 0x0d, 0x0e
            ]
        );
        let h = FrameHeader::new_checked(&b[..], u32::MAX).unwrap().unwrap();
        assert_eq!(h.msg_type(), MessageType::ECHO);
        assert_eq!(h.flags(), Flags::RESPONSE);
        assert_eq!(h.meta_len(), 0x0102);
        assert_eq!(h.body_len(), 0x0304_0506);
        assert_eq!(h.request_id(), 0x0708_090a_0b0c_0d0e);
        assert_eq!(h.frame_len(), 24 + 0x0102 + 0x0304_0506);
        assert_eq!(h.repr().to_bytes(), b);
    }

    #[test]
    fn prefix_errors_are_early() {
        assert_eq!(
            FrameHeader::new_checked(&b"G"[..], 1024).unwrap_err(),
            FrameError::BadMagic {
                found: *b"G\0",
                arrived: 1
            }
        );
        assert_eq!(
            FrameHeader::new_checked(&b"GE"[..], 1024).unwrap_err(),
            FrameError::BadMagic {
                found: *b"GE",
                arrived: 2
            }
        );
        assert_eq!(
            FrameHeader::new_checked(&b"WX"[..], 1024).unwrap_err(),
            FrameError::BadMagic {
                found: *b"WX",
                arrived: 2
            }
        );
        assert_eq!(
            FrameHeader::new_checked(&[0x57, 0x77, 2][..], 1024).unwrap_err(),
            FrameError::UnsupportedVersion(2)
        );
        assert_eq!(
            FrameHeader::new_checked(&[0x57, 0x77, 1, 1, 4][..], 1024).unwrap_err(),
            FrameError::ReservedFlags(4)
        );
        assert_eq!(
            FrameHeader::new_checked(&[0x57, 0x77, 1, 1, 0, 9][..], 1024).unwrap_err(),
            FrameError::ReservedByte(9)
        );
        assert!(
            FrameHeader::new_checked(&[0x57, 0x77, 1, 1, 0, 0, 0][..], 1024)
                .unwrap()
                .is_none()
        );
        assert!(FrameHeader::new_checked(&[][..], 1024).unwrap().is_none());
    }

    #[test]
    fn bad_magic_message_shows_the_bytes_that_arrived() {
        let msg = |b: &[u8]| FrameHeader::new_checked(b, 1024).unwrap_err().to_string();
        assert_eq!(
            msg(b"GET / HTTP/1.1\r\n"),
            "bad magic [47, 45], expected \"Ww\""
        );
        assert_eq!(msg(b"G"), "bad magic [47], expected \"Ww\"");
        assert_eq!(msg(b"\0"), "bad magic [00], expected \"Ww\"");
        assert_eq!(msg(b"W\0"), "bad magic [57, 00], expected \"Ww\"");
        assert_eq!(msg(b"wW\x01"), "bad magic [77, 57], expected \"Ww\"");
    }

    #[test]
    fn too_large_from_header_alone() {
        let b = header(0x08, 0, 100, 1000, 1);
        assert_eq!(
            FrameHeader::new_checked(&b[..], 1099).unwrap_err(),
            FrameError::TooLarge {
                len: 1100,
                limit: 1099
            }
        );
        assert!(FrameHeader::new_checked(&b[..], 1100).unwrap().is_some());
        let b = header(0x08, 0, u16::MAX, u32::MAX, 1);
        assert!(matches!(
            FrameHeader::new_checked(&b[..], u32::MAX),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn body_length_bounds() {
        for (ty, ok, bad) in [
            (0x01u8, 8u32, 7u32),
            (0x02, 8, 9),
            (0x06, 1, 0),
            (0x07, 17, 16),
            (0x09, 8, 0),
            (0x0A, 0, 1),
            (0x0B, 0, 5),
            (0x0C, 4, 3),
            (0xFF, 2, 1),
        ] {
            let good = header(ty, 0, 0, ok, 9);
            assert!(
                FrameHeader::new_checked(&good[..], 1 << 20)
                    .unwrap()
                    .is_some()
            );
            let b = header(ty, 0, 0, bad, 9);
            let err = FrameHeader::new_checked(&b[..], 1 << 20).unwrap_err();
            assert!(
                matches!(err, FrameError::BodyLength { len, .. } if len == bad),
                "{ty:#x}: {err}"
            );
        }
    }
}
