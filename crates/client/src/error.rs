//! The client's one error type.

use std::net::SocketAddr;

use warpwire_frame::{DecodeError, EncodeError, ErrorCode, FrameError, MessageType};
use warpwire_transport::{CloseReason, TransportError};

/// Everything that can go wrong in the client, the pool and the load
/// generator.
///
/// Which errors mean "try again" is the caller's decision; as a guide,
/// [`ClientError::Timeout`], [`ClientError::Disconnected`],
/// [`ClientError::PipelineReset`] and a
/// [`ClientError::Server`] with a code that keeps the connection
/// (RATE_LIMITED, INTERNAL) are transient, the rest are not.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The transport failed: the factory could not build it, or its event
    /// machinery broke.
    #[error("transport failure")]
    Transport(#[source] TransportError),
    /// The server's byte stream could not be decoded; the connection was
    /// dropped and every request in flight on it fails with this error.
    #[error("undecodable reply stream")]
    Decode(#[source] DecodeError),
    /// A request could not be encoded (metadata over 65,535 bytes, body over
    /// 4 GiB).
    #[error("request cannot be encoded")]
    Encode(#[source] EncodeError),
    /// A request could not be encoded by a protocol other than warpwire
    /// (an empty or oversized echo request, an HTTP body over the limit);
    /// nothing was sent.
    #[error("request cannot be encoded")]
    ProtocolEncode(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The reply stream of a protocol other than warpwire failed (the
    /// source says how: malformed, over a limit, unsolicited data); the
    /// connection was dropped and every request in flight on it fails with
    /// this error.
    #[error("the server's reply stream failed")]
    Protocol(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The protocol answers in order (echo, HTTP) and a request sent before
    /// this one timed out on the same connection: its late reply would be
    /// taken for the next request's, so the connection was reset, and this
    /// request, in flight behind it, was given up. It may or may not have
    /// been processed.
    #[error("connection reset: an earlier request on this in-order connection timed out")]
    PipelineReset,
    /// A reply's body does not parse as its message type requires.
    #[error("malformed reply body")]
    Body(#[source] FrameError),
    /// The server answered the request with an ERROR frame.
    #[error("server error {}: {message}", code_name(*.code))]
    Server {
        /// The raw error code (docs/protocol.md table; unknown codes are kept).
        code: u16,
        /// The server's message, possibly empty.
        message: String,
    },
    /// No reply arrived before the request's deadline (or the request waited
    /// for a connection that did not come back in time).
    #[error("request timed out")]
    Timeout,
    /// The connection was lost while the request was in flight, or it is
    /// down and reconnecting is disabled.
    #[error("connection lost")]
    Disconnected,
    /// The connection could not be established.
    #[error("cannot connect to {addr}: {}", describe(reason))]
    ConnectFailed {
        /// The server address.
        addr: SocketAddr,
        /// How the attempt ended (refused, reset, timed out as `Local`).
        reason: CloseReason,
    },
    /// Some connections of a load run were not established in time: each
    /// handshake gets the connect timeout from its own start.
    #[error(
        "cannot connect to {addr}: {established} of {wanted} connections established, \
         the next not within {after:?} (handshake timed out; the server's accept or SYN queue may be full)"
    )]
    ConnectTimeout {
        /// The server address.
        addr: SocketAddr,
        /// Connections up when the run gave up.
        established: usize,
        /// Connections the worker wanted.
        wanted: usize,
        /// The per-handshake limit.
        after: std::time::Duration,
    },
    /// The server refused the credentials of [`crate::ClientConfig::auth`].
    #[error("authentication rejected by the server")]
    AuthRejected,
    /// The client was closed (or its I/O thread is gone).
    #[error("client closed")]
    Closed,
    /// The reply has a different message type than the request calls for.
    #[error("expected a {expected} reply, got {got}")]
    UnexpectedReply {
        /// The type the request calls for.
        expected: MessageType,
        /// The type that arrived.
        got: MessageType,
    },
    /// The reply has the right type but contradicts the request (a PONG
    /// that does not carry the PING's body).
    #[error("reply does not match its request: {0}")]
    ReplyMismatch(&'static str),
    /// [`crate::Client::app`] was given a code outside 0x80..=0xFE.
    #[error("{0:#04x} is not an application message type (0x80..=0xFE)")]
    NotApplicationType(u8),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// The I/O or load-generator thread could not be started.
    #[error("cannot spawn a thread")]
    Spawn(#[source] std::io::Error),
    /// The latency histogram could not be built or merged.
    #[error("latency histogram")]
    Histogram(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ClientError {
    /// The protocol error code (docs/protocol.md) of a
    /// [`ClientError::Server`], when version 1 defines it.
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => ErrorCode::from_u16(*code),
            _ => None,
        }
    }
}

fn code_name(code: u16) -> String {
    match ErrorCode::from_u16(code) {
        Some(c) => c.to_string(),
        None => format!("code {code}"),
    }
}

/// A close reason in words, with the OS's text for an errno.
fn describe(reason: &CloseReason) -> String {
    let os = |e: &Option<i32>| match e {
        Some(n) => std::io::Error::from_raw_os_error(*n).to_string(),
        None => "no error code".into(),
    };
    match reason {
        CloseReason::ConnectFailed(e) => os(e),
        CloseReason::Reset(e) => format!("reset ({})", os(e)),
        CloseReason::PeerClosed => "closed by the peer".into(),
        CloseReason::Local => "gave up (timed out)".into(),
        CloseReason::Tls(f) => f.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_error_display_names_the_code() {
        let e = ClientError::Server {
            code: 7,
            message: "bad token".into(),
        };
        assert_eq!(e.to_string(), "server error AUTH_FAILED (7): bad token");
        assert_eq!(e.server_code(), Some(ErrorCode::AuthFailed));
        let e = ClientError::Server {
            code: 99,
            message: String::new(),
        };
        assert_eq!(e.to_string(), "server error code 99: ");
        assert_eq!(e.server_code(), None);
        assert_eq!(ClientError::Timeout.server_code(), None);
    }

    #[test]
    fn errors_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<ClientError>();
    }
}
