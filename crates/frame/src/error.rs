//! Errors of the frame crate.

use crate::types::{ErrorCode, MessageType};

/// Names a TLS record where a frame was expected (`0x16 0x03`: a
/// handshake, `0x15 0x03`: an alert), the usual cause of a bad magic
/// between a TLS and a plaintext end.
fn tls_hint(found: &[u8; 2], arrived: u8) -> &'static str {
    match (arrived, found) {
        (2, [0x16, 0x03]) => " (a TLS handshake: the peer speaks TLS, this end plaintext)",
        (2, [0x15, 0x03]) => " (a TLS alert: the peer speaks TLS, this end plaintext)",
        _ => "",
    }
}

/// Why a frame was refused. Every variant maps onto one protocol error code
/// (docs/protocol.md) through [`FrameError::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The stream does not start with "Ww". The message shows the bytes
    /// that arrived where the magic belongs: both, or the first alone if
    /// the second had not arrived.
    #[error("bad magic {:02x?}, expected \"Ww\"{}", &.found[..usize::from(*.arrived).min(2)],
        tls_hint(.found, *.arrived))]
    BadMagic {
        /// The bytes found where the magic belongs; only the first
        /// `arrived` are meaningful, the rest are zero.
        found: [u8; 2],
        /// How many of the two magic bytes had arrived: 1 or 2.
        arrived: u8,
    },
    /// The version byte is not 1.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A reserved flag bit (2-7) is set.
    #[error("reserved flag bits set in {0:#04x}")]
    ReservedFlags(u8),
    /// The reserved header byte 5 is not zero.
    #[error("reserved header byte is {0:#04x}, must be 0")]
    ReservedByte(u8),
    /// meta_len + body_len exceeds the receiver's limit.
    #[error("frame of {len} metadata and body bytes exceeds the limit of {limit}")]
    TooLarge {
        /// meta_len + body_len as announced by the header.
        len: u64,
        /// The configured limit.
        limit: u32,
    },
    /// The trailer does not match the CRC-32 of the frame.
    #[error("checksum mismatch: trailer {received:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// CRC carried in the trailer.
        received: u32,
        /// CRC computed over header, metadata and body.
        computed: u32,
    },
    /// The metadata section does not follow docs/protocol.md.
    #[error("malformed metadata: {0}")]
    Metadata(#[from] MetaError),
    /// The body is too short or too long for the message type.
    #[error("{ty} body of {len} bytes; the type requires {min}..={max}")]
    BodyLength {
        /// The message type.
        ty: MessageType,
        /// The body length announced by the header.
        len: u32,
        /// Smallest length the type allows.
        min: u32,
        /// Largest length the type allows (`u32::MAX`: unbounded).
        max: u32,
    },
    /// A typed body's contents are invalid (bad UTF-8, a length prefix that
    /// runs past the body, a flag byte out of range).
    #[error("malformed {ty} body: {reason}")]
    BadBody {
        /// The message type.
        ty: MessageType,
        /// What is wrong.
        reason: &'static str,
    },
}

impl FrameError {
    /// The protocol error code (docs/protocol.md) the peer is sent for this error.
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::BadMagic { .. } => ErrorCode::BadMagic,
            Self::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            Self::BadChecksum { .. } => ErrorCode::BadChecksum,
            Self::TooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::ReservedFlags(_)
            | Self::ReservedByte(_)
            | Self::Metadata(_)
            | Self::BodyLength { .. }
            | Self::BadBody { .. } => ErrorCode::Malformed,
        }
    }
}

/// What is wrong with a metadata section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// The section ends inside the count, an entry's lengths, key or value.
    #[error("section truncated")]
    Truncated,
    /// Bytes remain after the last entry.
    #[error("{0} trailing bytes after the last entry")]
    TrailingBytes(usize),
    /// A key is not valid UTF-8.
    #[error("key is not UTF-8")]
    KeyNotUtf8,
    /// A key occurs twice.
    #[error("duplicate key")]
    DuplicateKey,
    /// An encoder was given a key longer than 255 bytes, a value longer than
    /// 65,535 bytes, more than 65,535 entries or a section over 65,535 bytes.
    #[error("entry or section too long to encode")]
    TooLong,
}

/// A decode error with the request_id of the offending frame when its
/// header had arrived, so the ERROR sent back can carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct DecodeError {
    /// What is wrong.
    #[source]
    pub error: FrameError,
    /// The request_id of the offending frame, if its header was complete.
    pub request_id: Option<u64>,
}

impl DecodeError {
    /// The protocol error code (docs/protocol.md).
    pub const fn code(&self) -> ErrorCode {
        self.error.code()
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The metadata section is longer than the 16-bit meta_len allows.
    #[error("metadata of {0} bytes exceeds 65535")]
    MetaTooLong(usize),
    /// The body is longer than the 32-bit body_len allows.
    #[error("body of {0} bytes exceeds u32::MAX")]
    BodyTooLong(usize),
    /// The destination slice is too small.
    #[error("destination holds {have} bytes, the frame needs {need}")]
    BufferTooSmall {
        /// Bytes the frame needs.
        need: usize,
        /// Bytes the destination has.
        have: usize,
    },
    /// Metadata entries could not be encoded.
    #[error("metadata: {0}")]
    Metadata(#[from] MetaError),
}
