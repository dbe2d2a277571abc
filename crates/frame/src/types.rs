//! Message types, flags and error codes of the wire protocol
//! (docs/protocol.md).

use std::fmt;

/// A frame's message type (header byte 3).
///
/// A newtype rather than an enum because every byte value is a legal header
/// value: codes with no meaning in version 1 still decode, and the server
/// answers them with [`ErrorCode::UnknownType`]. The associated constants
/// name every type docs/protocol.md defines and can be used in `match` patterns.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageType(pub u8);

impl MessageType {
    /// Liveness probe; the body is the sender's monotonic timestamp in ns.
    pub const PING: Self = Self(0x01);
    /// Reply to PING carrying its body unchanged.
    pub const PONG: Self = Self(0x02);
    /// Request to echo the body back.
    pub const ECHO: Self = Self(0x03);
    /// Reply to ECHO carrying its body unchanged.
    pub const ECHO_REPLY: Self = Self(0x04);
    /// Relay the body to every other eligible connection.
    pub const BROADCAST: Self = Self(0x05);
    /// Authenticate: `user_len:u8, user, token`.
    pub const AUTH: Self = Self(0x06);
    /// Reply to AUTH: `ok:u8, session_id:[u8; 16]`.
    pub const AUTH_REPLY: Self = Self(0x07);
    /// Application data for the server's data handler.
    pub const DATA: Self = Self(0x08);
    /// Acknowledges DATA: `bytes_accepted:u64`.
    pub const DATA_ACK: Self = Self(0x09);
    /// Request for the server's counters; empty body.
    pub const STATS: Self = Self(0x0A);
    /// Reply to STATS; empty body, counters in metadata.
    pub const STATS_REPLY: Self = Self(0x0B);
    /// Reply to BROADCAST: `recipients:u32`.
    pub const BROADCAST_ACK: Self = Self(0x0C);
    /// Error report: `code:u16, message`.
    pub const ERROR: Self = Self(0xFF);

    /// First code of the application range (inclusive).
    pub const APP_FIRST: u8 = 0x80;
    /// Last code of the application range (inclusive).
    pub const APP_LAST: u8 = 0xFE;

    /// Whether the code lies in the application range 0x80..=0xFE.
    pub const fn is_application(self) -> bool {
        self.0 >= Self::APP_FIRST && self.0 <= Self::APP_LAST
    }

    /// Whether protocol version 1 (docs/protocol.md) defines this code
    /// (built-in or application range).
    pub const fn is_defined(self) -> bool {
        matches!(self.0, 0x01..=0x0C | 0x80..=0xFF)
    }

    /// The protocol name of a built-in type, `None` for others.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x01 => "PING",
            0x02 => "PONG",
            0x03 => "ECHO",
            0x04 => "ECHO_REPLY",
            0x05 => "BROADCAST",
            0x06 => "AUTH",
            0x07 => "AUTH_REPLY",
            0x08 => "DATA",
            0x09 => "DATA_ACK",
            0x0A => "STATS",
            0x0B => "STATS_REPLY",
            0x0C => "BROADCAST_ACK",
            0xFF => "ERROR",
            _ => return None,
        })
    }

    /// The body length a type requires, as an inclusive `(min, max)` pair;
    /// `max == None` means unbounded (up to the frame limit).
    ///
    /// Decided from the header alone, so a bad length is refused before its
    /// body is buffered.
    pub const fn body_len_bounds(self) -> (u32, Option<u32>) {
        match self {
            Self::PING | Self::PONG | Self::DATA_ACK => (8, Some(8)),
            Self::AUTH => (1, None),
            Self::AUTH_REPLY => (17, Some(17)),
            Self::STATS | Self::STATS_REPLY => (0, Some(0)),
            Self::BROADCAST_ACK => (4, Some(4)),
            Self::ERROR => (2, None),
            _ => (0, None),
        }
    }
}

impl fmt::Debug for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None if self.is_application() => write!(f, "APP({:#04x})", self.0),
            None => write!(f, "UNDEFINED({:#04x})", self.0),
        }
    }
}

/// The header's flag bits (header byte 4).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// No flag set.
    pub const NONE: Self = Self(0);
    /// Bit 0: this frame answers the request with the same request_id.
    pub const RESPONSE: Self = Self(0b01);
    /// Bit 1: on DATA, the sender wants a DATA_ACK.
    pub const ACK_REQUESTED: Self = Self(0b10);
    /// Bits 2-7 are reserved and must be zero.
    pub const RESERVED_MASK: u8 = 0b1111_1100;

    /// Flags from a raw byte, `None` if a reserved bit is set.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits & Self::RESERVED_MASK == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// The raw byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the flags of `other` added.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Shorthand for `contains(Flags::RESPONSE)`.
    pub const fn is_response(self) -> bool {
        self.contains(Self::RESPONSE)
    }

    /// Shorthand for `contains(Flags::ACK_REQUESTED)`.
    pub const fn ack_requested(self) -> bool {
        self.contains(Self::ACK_REQUESTED)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.with(rhs)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.is_response() {
            names.push("RESPONSE");
        }
        if self.ack_requested() {
            names.push("ACK_REQUESTED");
        }
        write!(f, "Flags({})", names.join("|"))
    }
}

/// The error codes of docs/protocol.md, carried in an ERROR body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The first two bytes are not "Ww". Connection closed.
    BadMagic = 1,
    /// The version byte is not 1. Connection closed.
    UnsupportedVersion = 2,
    /// CRC mismatch. Connection closed.
    BadChecksum = 3,
    /// meta_len + body_len over the receiver's limit. Connection closed.
    FrameTooLarge = 4,
    /// No handler for the type. Connection kept.
    UnknownType = 5,
    /// Authentication required and not yet given. Kept, closed after a count.
    Unauthenticated = 6,
    /// Bad user or token. Kept, closed after a count.
    AuthFailed = 7,
    /// Connection or server over its rate. Kept, frame dropped.
    RateLimited = 8,
    /// Reserved bits, bad metadata, or a body too short for its type. Closed.
    Malformed = 9,
    /// Connection limit reached. Closed.
    ServerBusy = 10,
    /// No frame within the idle limit. Closed.
    IdleTimeout = 11,
    /// A handler failed. Connection kept.
    Internal = 12,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [Self; 12] = [
        Self::BadMagic,
        Self::UnsupportedVersion,
        Self::BadChecksum,
        Self::FrameTooLarge,
        Self::UnknownType,
        Self::Unauthenticated,
        Self::AuthFailed,
        Self::RateLimited,
        Self::Malformed,
        Self::ServerBusy,
        Self::IdleTimeout,
        Self::Internal,
    ];

    /// The code from its wire value, `None` for values version 1 does not define.
    pub const fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::BadMagic,
            2 => Self::UnsupportedVersion,
            3 => Self::BadChecksum,
            4 => Self::FrameTooLarge,
            5 => Self::UnknownType,
            6 => Self::Unauthenticated,
            7 => Self::AuthFailed,
            8 => Self::RateLimited,
            9 => Self::Malformed,
            10 => Self::ServerBusy,
            11 => Self::IdleTimeout,
            12 => Self::Internal,
            _ => return None,
        })
    }

    /// The wire value.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// The protocol name (`BAD_MAGIC`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::BadMagic => "BAD_MAGIC",
            Self::UnsupportedVersion => "UNSUPPORTED_VERSION",
            Self::BadChecksum => "BAD_CHECKSUM",
            Self::FrameTooLarge => "FRAME_TOO_LARGE",
            Self::UnknownType => "UNKNOWN_TYPE",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::AuthFailed => "AUTH_FAILED",
            Self::RateLimited => "RATE_LIMITED",
            Self::Malformed => "MALFORMED",
            Self::ServerBusy => "SERVER_BUSY",
            Self::IdleTimeout => "IDLE_TIMEOUT",
            Self::Internal => "INTERNAL",
        }
    }

    /// Whether docs/protocol.md says the connection is closed after this error
    /// (UNAUTHENTICATED and AUTH_FAILED close only after a configured count).
    pub const fn closes_connection(self) -> bool {
        matches!(
            self,
            Self::BadMagic
                | Self::UnsupportedVersion
                | Self::BadChecksum
                | Self::FrameTooLarge
                | Self::Malformed
                | Self::ServerBusy
                | Self::IdleTimeout
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_codes_match_protocol() {
        let table = [
            (MessageType::PING, 0x01, "PING"),
            (MessageType::PONG, 0x02, "PONG"),
            (MessageType::ECHO, 0x03, "ECHO"),
            (MessageType::ECHO_REPLY, 0x04, "ECHO_REPLY"),
            (MessageType::BROADCAST, 0x05, "BROADCAST"),
            (MessageType::AUTH, 0x06, "AUTH"),
            (MessageType::AUTH_REPLY, 0x07, "AUTH_REPLY"),
            (MessageType::DATA, 0x08, "DATA"),
            (MessageType::DATA_ACK, 0x09, "DATA_ACK"),
            (MessageType::STATS, 0x0A, "STATS"),
            (MessageType::STATS_REPLY, 0x0B, "STATS_REPLY"),
            (MessageType::BROADCAST_ACK, 0x0C, "BROADCAST_ACK"),
            (MessageType::ERROR, 0xFF, "ERROR"),
        ];
        for (ty, code, name) in table {
            assert_eq!(ty.0, code);
            assert_eq!(ty.name(), Some(name));
            assert!(ty.is_defined());
            assert!(!ty.is_application());
        }
    }

    #[test]
    fn application_range() {
        for v in 0u8..=255 {
            let t = MessageType(v);
            assert_eq!(t.is_application(), (0x80..=0xFE).contains(&v), "{v:#x}");
            assert_eq!(
                t.is_defined(),
                (0x01..=0x0C).contains(&v) || v >= 0x80,
                "{v:#x}"
            );
        }
        assert_eq!(MessageType(0x81).to_string(), "APP(0x81)");
        assert_eq!(MessageType(0x20).to_string(), "UNDEFINED(0x20)");
    }

    #[test]
    fn flags_bits() {
        assert_eq!(Flags::RESPONSE.bits(), 1);
        assert_eq!(Flags::ACK_REQUESTED.bits(), 2);
        assert_eq!(
            Flags::from_bits(3),
            Some(Flags::RESPONSE | Flags::ACK_REQUESTED)
        );
        for bit in 2..8 {
            assert_eq!(Flags::from_bits(1 << bit), None);
        }
        let f = Flags::RESPONSE.with(Flags::ACK_REQUESTED);
        assert!(f.is_response() && f.ack_requested());
        assert!(!Flags::NONE.is_response());
    }

    #[test]
    fn error_codes_roundtrip() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.as_u16() as usize, i + 1);
            assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(*code));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(13), None);
        let closing: Vec<_> = ErrorCode::ALL
            .iter()
            .filter(|c| c.closes_connection())
            .map(|c| c.as_u16())
            .collect();
        assert_eq!(closing, [1, 2, 3, 4, 9, 10, 11]);
        assert_eq!(ErrorCode::Malformed.to_string(), "MALFORMED (9)");
    }
}
