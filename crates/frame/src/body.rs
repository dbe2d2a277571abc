//! Typed bodies of the built-in message types, with encoders and decoders.
//!
//! A frame returned by [`crate::Decoder`] has already passed [`check`], so
//! decoding a typed body from it cannot fail; the decoders still return
//! `Result` for frames built by other means.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::FrameError;
use crate::frame::Frame;
use crate::meta::{MetaBuilder, Metadata};
use crate::types::{ErrorCode, MessageType};

/// Structural checks of a built-in type's body beyond its length bounds
/// (which the header check enforces).
pub(crate) fn check(ty: MessageType, body: &[u8]) -> Result<(), FrameError> {
    match ty {
        MessageType::AUTH => Auth::decode(body).map(|_| ()),
        MessageType::AUTH_REPLY => AuthReply::decode(body).map(|_| ()),
        MessageType::ERROR => ErrorBody::decode(body).map(|_| ()),
        _ => Ok(()),
    }
}

fn bad(ty: MessageType, reason: &'static str) -> FrameError {
    FrameError::BadBody { ty, reason }
}

fn exact<const N: usize>(ty: MessageType, body: &[u8]) -> Result<[u8; N], FrameError> {
    let (min, max) = ty.body_len_bounds();
    body.try_into().map_err(|_| FrameError::BodyLength {
        ty,
        len: u32::try_from(body.len()).unwrap_or(u32::MAX),
        min,
        max: max.unwrap_or(u32::MAX),
    })
}

/// PING / PONG body: the sender's monotonic timestamp in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// Sender's monotonic clock, ns. Opaque to the receiver.
    pub timestamp_ns: u64,
}

impl Ping {
    /// The 8-byte body.
    pub fn encode(&self) -> [u8; 8] {
        self.timestamp_ns.to_be_bytes()
    }

    /// Parses a PING or PONG body.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        let b = exact::<8>(MessageType::PING, body)?;
        Ok(Self {
            timestamp_ns: u64::from_be_bytes(b),
        })
    }

    /// A PING request frame.
    pub fn request(&self, request_id: u64) -> Frame {
        Frame::new(MessageType::PING, request_id, self.encode().to_vec())
    }
}

/// AUTH body: `user_len:u8, user (UTF-8), token (rest)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth<'a> {
    /// User name.
    pub user: &'a str,
    /// Secret token, compared against a stored hash by the server.
    pub token: &'a [u8],
}

impl<'a> Auth<'a> {
    /// Appends the body; fails if the user name exceeds 255 bytes.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), FrameError> {
        let n = u8::try_from(self.user.len())
            .map_err(|_| bad(MessageType::AUTH, "user name over 255 bytes"))?;
        dst.put_u8(n);
        dst.put_slice(self.user.as_bytes());
        dst.put_slice(self.token);
        Ok(())
    }

    /// Parses an AUTH body.
    pub fn decode(body: &'a [u8]) -> Result<Self, FrameError> {
        let ty = MessageType::AUTH;
        let (&n, rest) = body.split_first().ok_or(bad(ty, "empty body"))?;
        let (user, token) = rest
            .split_at_checked(usize::from(n))
            .ok_or(bad(ty, "user_len runs past the body"))?;
        let user = std::str::from_utf8(user).map_err(|_| bad(ty, "user is not UTF-8"))?;
        Ok(Self { user, token })
    }

    /// An AUTH request frame.
    pub fn request(&self, request_id: u64) -> Result<Frame, FrameError> {
        let mut b = BytesMut::with_capacity(1 + self.user.len() + self.token.len());
        self.encode(&mut b)?;
        Ok(Frame::new(MessageType::AUTH, request_id, b.freeze()))
    }
}

/// AUTH_REPLY body: `ok:u8, session_id:[u8; 16]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthReply {
    /// Whether the credentials were accepted.
    pub ok: bool,
    /// The session id; zeros when refused.
    pub session_id: [u8; 16],
}

impl AuthReply {
    /// The 17-byte body.
    pub fn encode(&self) -> [u8; 17] {
        let mut b = [0u8; 17];
        b[0] = u8::from(self.ok);
        b[1..].copy_from_slice(&self.session_id);
        b
    }

    /// Parses an AUTH_REPLY body; `ok` must be 0 or 1.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        let b = exact::<17>(MessageType::AUTH_REPLY, body)?;
        let ok = match b[0] {
            0 => false,
            1 => true,
            _ => return Err(bad(MessageType::AUTH_REPLY, "ok byte is neither 0 nor 1")),
        };
        let mut session_id = [0u8; 16];
        session_id.copy_from_slice(&b[1..]);
        Ok(Self { ok, session_id })
    }

    /// An AUTH_REPLY response frame.
    pub fn response(&self, request_id: u64) -> Frame {
        Frame::response(MessageType::AUTH_REPLY, request_id, self.encode().to_vec())
    }
}

/// DATA_ACK body: `bytes_accepted:u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataAck {
    /// Bytes of DATA body the handler accepted.
    pub bytes_accepted: u64,
}

impl DataAck {
    /// The 8-byte body.
    pub fn encode(&self) -> [u8; 8] {
        self.bytes_accepted.to_be_bytes()
    }

    /// Parses a DATA_ACK body.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        Ok(Self {
            bytes_accepted: u64::from_be_bytes(exact::<8>(MessageType::DATA_ACK, body)?),
        })
    }

    /// A DATA_ACK response frame.
    pub fn response(&self, request_id: u64) -> Frame {
        Frame::response(MessageType::DATA_ACK, request_id, self.encode().to_vec())
    }
}

/// BROADCAST_ACK body: `recipients:u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BroadcastAck {
    /// Connections the broadcast was relayed to.
    pub recipients: u32,
}

impl BroadcastAck {
    /// The 4-byte body.
    pub fn encode(&self) -> [u8; 4] {
        self.recipients.to_be_bytes()
    }

    /// Parses a BROADCAST_ACK body.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        Ok(Self {
            recipients: u32::from_be_bytes(exact::<4>(MessageType::BROADCAST_ACK, body)?),
        })
    }

    /// A BROADCAST_ACK response frame.
    pub fn response(&self, request_id: u64) -> Frame {
        Frame::response(
            MessageType::BROADCAST_ACK,
            request_id,
            self.encode().to_vec(),
        )
    }
}

/// ERROR body: `code:u16, message (UTF-8, may be empty)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody<'a> {
    /// The raw code. Version 1 defines 1..=12 ([`ErrorCode`]); other values
    /// are kept so that a newer peer's codes are reported, not refused.
    pub code: u16,
    /// Human-readable detail.
    pub message: &'a str,
}

impl<'a> ErrorBody<'a> {
    /// An error body for a known code.
    pub fn new(code: ErrorCode, message: &'a str) -> Self {
        Self {
            code: code.as_u16(),
            message,
        }
    }

    /// The code, if version 1 defines it.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u16(self.code)
    }

    /// Appends the body.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(self.code);
        dst.put_slice(self.message.as_bytes());
    }

    /// Parses an ERROR body.
    pub fn decode(body: &'a [u8]) -> Result<Self, FrameError> {
        let ty = MessageType::ERROR;
        let (code, msg) = body
            .split_first_chunk::<2>()
            .ok_or(bad(ty, "shorter than 2 bytes"))?;
        let message = std::str::from_utf8(msg).map_err(|_| bad(ty, "message is not UTF-8"))?;
        Ok(Self {
            code: u16::from_be_bytes(*code),
            message,
        })
    }

    /// An ERROR frame; `request_id` `Some` makes it a response to that request.
    pub fn frame(&self, request_id: Option<u64>) -> Frame {
        let mut b = BytesMut::with_capacity(2 + self.message.len());
        self.encode(&mut b);
        match request_id {
            Some(id) => Frame::response(MessageType::ERROR, id, b.freeze()),
            None => Frame::new(MessageType::ERROR, 0, b.freeze()),
        }
    }
}

/// STATS_REPLY counters, carried as decimal ASCII metadata values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open connections.
    pub connections: u64,
    /// Frames received.
    pub messages_in: u64,
    /// Frames sent.
    pub messages_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Errors sent or seen.
    pub errors: u64,
    /// Seconds since the server started.
    pub uptime_s: u64,
    /// The transport serving the connection (`socket`, `xdp`, ...).
    pub transport: String,
}

impl Stats {
    /// The numeric keys, in the order docs/protocol.md lists them.
    pub const NUMERIC_KEYS: [&'static str; 7] = [
        "connections",
        "messages_in",
        "messages_out",
        "bytes_in",
        "bytes_out",
        "errors",
        "uptime_s",
    ];

    fn numbers(&self) -> [u64; 7] {
        [
            self.connections,
            self.messages_in,
            self.messages_out,
            self.bytes_in,
            self.bytes_out,
            self.errors,
            self.uptime_s,
        ]
    }

    /// The metadata section.
    pub fn to_meta(&self) -> Result<Bytes, FrameError> {
        let mut m = MetaBuilder::new();
        for (k, v) in Self::NUMERIC_KEYS.iter().zip(self.numbers()) {
            m.push(k, v.to_string().as_bytes())?;
        }
        m.push("transport", self.transport.as_bytes())?;
        Ok(m.finish())
    }

    /// A STATS_REPLY response frame.
    pub fn response(&self, request_id: u64) -> Result<Frame, FrameError> {
        Ok(
            Frame::response(MessageType::STATS_REPLY, request_id, Bytes::new())
                .with_meta(self.to_meta()?),
        )
    }

    /// Reads the counters from a STATS_REPLY's metadata. Missing keys read as
    /// zero (a careful reader of a newer server); non-decimal values are errors.
    pub fn from_meta(meta: &Metadata<'_>) -> Result<Self, FrameError> {
        let ty = MessageType::STATS_REPLY;
        let num = |k: &str| -> Result<u64, FrameError> {
            match meta.get(k) {
                None => Ok(0),
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                    .and_then(|s| s.parse().ok())
                    .ok_or(bad(ty, "counter is not a decimal number")),
            }
        };
        Ok(Self {
            connections: num("connections")?,
            messages_in: num("messages_in")?,
            messages_out: num("messages_out")?,
            bytes_in: num("bytes_in")?,
            bytes_out: num("bytes_out")?,
            errors: num("errors")?,
            uptime_s: num("uptime_s")?,
            transport: meta.get_str("transport").unwrap_or_default().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping() {
        let p = Ping {
            timestamp_ns: 0x0102_0304_0506_0708,
        };
        assert_eq!(p.encode(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(Ping::decode(&p.encode()), Ok(p));
        assert!(Ping::decode(&[0; 7]).is_err());
    }

    #[test]
    fn auth() {
        let a = Auth {
            user: "alice",
            token: b"s3cret",
        };
        let mut b = BytesMut::new();
        a.encode(&mut b).unwrap();
        assert_eq!(&b[..], b"\x05alices3cret");
        assert_eq!(Auth::decode(&b), Ok(a));
        assert_eq!(
            Auth::decode(b"\x00"),
            Ok(Auth {
                user: "",
                token: b""
            })
        );
        assert!(Auth::decode(b"\x09abc").is_err());
        assert!(Auth::decode(b"\x02\xff\xfe").is_err());
        assert!(Auth::decode(b"").is_err());
        let long = "x".repeat(256);
        assert!(
            Auth {
                user: &long,
                token: b""
            }
            .encode(&mut b)
            .is_err()
        );
    }

    #[test]
    fn auth_reply() {
        let r = AuthReply {
            ok: true,
            session_id: [7; 16],
        };
        let e = r.encode();
        assert_eq!(e[0], 1);
        assert_eq!(AuthReply::decode(&e), Ok(r));
        let mut e2 = e;
        e2[0] = 2;
        assert!(AuthReply::decode(&e2).is_err());
        assert!(AuthReply::decode(&e[..16]).is_err());
    }

    #[test]
    fn acks() {
        assert_eq!(
            DataAck {
                bytes_accepted: 258
            }
            .encode(),
            [0, 0, 0, 0, 0, 0, 1, 2]
        );
        assert_eq!(
            DataAck::decode(&[0, 0, 0, 0, 0, 0, 1, 2])
                .unwrap()
                .bytes_accepted,
            258
        );
        assert_eq!(BroadcastAck { recipients: 3 }.encode(), [0, 0, 0, 3]);
        assert_eq!(BroadcastAck::decode(&[0, 0, 1, 0]).unwrap().recipients, 256);
        assert!(BroadcastAck::decode(&[0, 0, 1]).is_err());
    }

    #[test]
    fn error_body() {
        let e = ErrorBody::new(ErrorCode::RateLimited, "slow down");
        let f = e.frame(Some(12));
        assert!(f.flags.is_response());
        assert_eq!(f.request_id, 12);
        assert_eq!(&f.body[..], b"\x00\x08slow down");
        let d = ErrorBody::decode(&f.body).unwrap();
        assert_eq!(d.error_code(), Some(ErrorCode::RateLimited));
        assert_eq!(d.message, "slow down");
        assert_eq!(ErrorBody::decode(b"\x00\x63").unwrap().error_code(), None);
        assert!(ErrorBody::decode(b"\x00").is_err());
        assert!(ErrorBody::decode(b"\x00\x01\xff").is_err());
        assert!(!e.frame(None).flags.is_response());
    }

    #[test]
    fn stats() {
        let s = Stats {
            connections: 3,
            messages_in: 10,
            messages_out: 9,
            bytes_in: 1000,
            bytes_out: 900,
            errors: 1,
            uptime_s: 42,
            transport: "socket".into(),
        };
        let meta = s.to_meta().unwrap();
        let m = Metadata::new_checked(&meta).unwrap();
        assert_eq!(m.get_str("bytes_in"), Some("1000"));
        assert_eq!(Stats::from_meta(&m).unwrap(), s);
        let mut bad_meta = MetaBuilder::new();
        bad_meta.push("errors", b"-1").unwrap();
        let bm = bad_meta.finish();
        assert!(Stats::from_meta(&Metadata::new_checked(&bm).unwrap()).is_err());
    }
}
