//! What the general-purpose client's I/O loop needs of a protocol beyond
//! the sans-IO codec: optional behaviours, each with a default that does
//! nothing protocol-specific.
//!
//! ```text
//!   I/O loop event                     hook (default)
//!   ─────────────────────────────────  ───────────────────────────────────────────────
//!   caller submits a request           check_request (Ok), request_timeout (None)
//!   connection up                      handshake (None: ready at once)
//!   handshake's reply                  handshake_accepted (true)
//!   idle for heartbeat_interval        heartbeat (None: no heartbeats)
//!   decode() gave a message            classify_for_client (as decoded)
//!   server-initiated message           answer_server (false: to subscribers)
//!   reply for a caller                 reply_result (Ok: the reply as it is)
//!   reply nobody waits for             deliver_unmatched (false: counted late)
//!   encode / decode failed             encode_error, decode_error (ClientError::Protocol*)
//! ```
//!
//! Warpwire implements every hook (AUTH after each (re)connect, PING
//! heartbeats, answering the server's PINGs, ERROR replies as
//! [`ClientError::Server`]); echo, HTTP and RESP take the defaults,
//! except that HTTP reports a server's `Connection: close` to the
//! requests pipelined behind it as [`ClientError::Disconnected`].

use std::time::Duration;

use bytes::BytesMut;

use super::ClientProtocol;
use super::Incoming;
use crate::{ClientConfig, ClientError};

/// The client-side hooks of a protocol, for
/// [`GenericClient`](crate::GenericClient). Every method has a default, so
/// `impl ClientHooks for MyProtocol {}` is a working client for any
/// protocol whose requests all get a reply. See the module docs.
///
/// Hooks run on the I/O thread (except [`ClientHooks::check_request`] and
/// [`ClientHooks::request_timeout`], which run on the caller's thread) and
/// must not block.
pub trait ClientHooks: ClientProtocol<Reply: Clone + Send + 'static, Request: 'static> {
    /// Refuses a request before it is queued (warpwire: lengths that do not
    /// fit a frame header). Requests refused later, by
    /// [`ClientProtocol::encode`] on the I/O thread, fail with
    /// [`ClientHooks::encode_error`].
    fn check_request(&self, request: &Self::Request) -> Result<(), ClientError> {
        let _ = request;
        Ok(())
    }

    /// The request's own timeout, if it carries one; `None` uses
    /// [`ClientConfig::request_timeout`].
    fn request_timeout(&self, request: &Self::Request) -> Option<Duration> {
        let _ = request;
        None
    }

    /// A request the I/O thread sends after every (re)connect, before any
    /// caller's request; the connection counts as up once
    /// [`ClientHooks::handshake_accepted`] accepts its reply. `Ok(None)`
    /// (the default): no handshake. An error fails the connection attempt
    /// like a refused handshake ([`ClientError::AuthRejected`]).
    fn handshake(&self, cfg: &ClientConfig) -> Result<Option<Self::Request>, ClientError> {
        let _ = cfg;
        Ok(None)
    }

    /// Whether the handshake's reply accepts the connection; a refusal
    /// fails the queued requests with [`ClientError::AuthRejected`].
    fn handshake_accepted(&self, reply: &Self::Reply) -> bool {
        let _ = reply;
        true
    }

    /// A heartbeat request, sent when nothing was sent for
    /// [`ClientConfig::heartbeat_interval`]; unanswered within
    /// [`ClientConfig::request_timeout`] it drops the connection.
    /// `now_ns` is the client's monotonic clock. `None` (the default): the
    /// protocol has no heartbeat and the interval is ignored.
    fn heartbeat(&self, now_ns: u64) -> Option<Self::Request> {
        let _ = now_ns;
        None
    }

    /// How the client sees a decoded message, which may differ from the
    /// load generator's view ([`ClientProtocol::decode`]): warpwire's
    /// client takes every frame without the RESPONSE flag as
    /// server-initiated, while the load generator takes one with a nonzero
    /// id as a (wrong) reply to count. Default: as decoded.
    fn classify_for_client(&self, message: Incoming<Self::Reply>) -> Incoming<Self::Reply> {
        message
    }

    /// Answers a server-initiated message by appending to `out` (it goes
    /// out with the next flush, without an id of the loop's); `true` means
    /// the message is consumed, `false` (the default) hands it to the
    /// subscribers. Warpwire answers a server's PING with a PONG.
    fn answer_server(&self, message: &Self::Reply, out: &mut BytesMut) -> bool {
        let _ = (message, out);
        false
    }

    /// What a caller gets for a reply: warpwire turns an ERROR frame into
    /// [`ClientError::Server`]. Default: the reply as it is (an HTTP
    /// response of any status).
    fn reply_result(&self, reply: Self::Reply) -> Result<Self::Reply, ClientError> {
        Ok(reply)
    }

    /// Whether a reply nobody waits for (its request timed out, was
    /// abandoned or sent without a reply) goes to the subscribers, rather
    /// than only being counted ([`GenericClient::late_replies`]).
    /// Warpwire delivers unmatched ERRORs. Default: `false`.
    ///
    /// [`GenericClient::late_replies`]: crate::GenericClient::late_replies
    fn deliver_unmatched(&self, reply: &Self::Reply) -> bool {
        let _ = reply;
        false
    }

    /// The error a caller sees when its request cannot be encoded. Default:
    /// [`ClientError::ProtocolEncode`] with `e` as its source.
    fn encode_error(&self, e: Self::EncodeError) -> ClientError {
        ClientError::ProtocolEncode(Box::new(e))
    }

    /// The error each request in flight fails with when the reply stream
    /// fails with `e` (the connection is then dropped). Default:
    /// [`ClientError::Protocol`] with `e` as its source.
    fn decode_error(&self, e: Self::DecodeError) -> ClientError {
        ClientError::Protocol(Box::new(e))
    }
}
