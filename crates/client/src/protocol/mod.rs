//! The client side of an application protocol, sans-IO: what the load
//! generator (and the client I/O loop) needs to know of a protocol to drive
//! it over any transport.
//!
//! ```text
//!   I/O loop (generic, owns transport + ids)        ClientProtocol (sans-IO)
//!   ────────────────────────────────────────        ────────────────────────
//!   connection up ─────────────────────────────────► open() ─► Conn (parser state)
//!   request #id ──► encode(conn, id, &req, out) ───► bytes appended to `out`
//!   Readable: recv into ───────────────────────────► read_buf(conn) / commit(conn, n)
//!   loop ─────────────────► decode(conn) ──────────► Reply(Id(id) | Oldest, r)
//!        │                                           ServerInitiated(r), or Err (stream lost)
//!        ▼
//!   request of that reply ──► check(id, &req, &r) ─► Ok, or a Mismatch (counted as an error)
//! ```
//!
//! Correlation is the protocol's: [`ReplyTo::Id`] for protocols that carry
//! the request's id on the wire (warpwire's request_id; replies may come in
//! any order), [`ReplyTo::Oldest`] for protocols without ids, whose replies
//! come in request order (FIFO). The loop assigns ids either way (1, 2, 3,
//! ... per connection); an in-order protocol may put them in the request's
//! content so that [`ClientProtocol::check`] sees reordering.
//!
//! The protocol owns no socket and no clock; the loop owns deadlines,
//! pipelining depth, reconnects and the output buffer. Everything is
//! monomorphised: the loop is generic over the protocol, no `dyn` on the
//! per-request path.
//!
//! The general-purpose client ([`crate::GenericClient`]) needs a little
//! more of a protocol, optional and defaulted: [`ClientHooks`] (a
//! handshake, a heartbeat, answers to the server, replies that are
//! errors).
//!
//! Four implementations: [`Warpwire`] (the binary framing of
//! `warpwire-frame`, by id), [`Echo`] (RFC 862: the server returns every
//! byte; in order), [`Http`] (HTTP/1.1 keep-alive, pipelined, against
//! warpwire's `/ping` and `/echo` routes; in order) and [`Resp`] (RESP2,
//! Redis's protocol: pipelined `SET`, `GET`, `PING` or any command; in
//! order).

mod echo;
mod hooks;
mod http;
mod out;
mod recv;
mod resp;
mod warpwire;

pub use echo::{Echo, EchoConn, EchoError, EchoRequest};
pub use hooks::ClientHooks;
pub use http::{Http, HttpConn, HttpError, HttpRequest, HttpResponse, HttpTarget};
pub use out::{MAX_SLICES, Out, SHARE_MIN};
pub use resp::{Resp, RespCommand, RespConn, RespError, RespRequest, RespValue};
pub use warpwire::Warpwire;

use bytes::BytesMut;
use warpwire_transport::{ConnId, Transport, TransportError};

/// How a protocol matches replies to requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correlation {
    /// Each reply carries the id of the request it answers; replies may
    /// arrive in any order.
    ById,
    /// Replies carry no id and arrive in request order.
    InOrder,
}

/// Which request a decoded reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyTo {
    /// The request with this id (read from the wire).
    Id(u64),
    /// The oldest request still in flight on the connection.
    Oldest,
}

/// One message decoded from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<R> {
    /// A reply to one of our requests.
    Reply(ReplyTo, R),
    /// A message the server sent on its own (warpwire's relayed BROADCAST,
    /// an IDLE_TIMEOUT notice): no request waits for it; the load
    /// generator ignores it, a client may forward it to subscribers.
    ServerInitiated(R),
}

/// Why a reply is not the right one for its request. Small and `Copy`: the
/// load generator counts these on its hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// The server answered with an error.
    #[error("the server answered with an error")]
    ErrorReply,
    /// The message is not flagged as a reply.
    #[error("not flagged as a reply")]
    NotAReply,
    /// A reply type the request does not call for.
    #[error("wrong reply type")]
    Type,
    /// The reply has the wrong length.
    #[error("wrong reply length")]
    Length,
    /// The reply carries another request's sequence number: reordered,
    /// duplicated or lost data.
    #[error("reply belongs to another request")]
    OtherRequest,
    /// The reply's content differs from what the request calls for.
    #[error("reply content differs (corrupted)")]
    Content,
}

/// The client side of an application protocol. See the module docs.
///
/// Contract for implementations: `decode` is incremental (any split of the
/// received byte stream yields the same messages), bounded (`read_buf`
/// never makes the per-connection buffer grow past a limit the protocol
/// documents), total (every input yields a message, "need more bytes" or
/// an error) and never panics. A decode error is sticky: the stream cannot
/// be resynchronised and the loop drops the connection.
pub trait ClientProtocol: Send + Sync + 'static {
    /// Per-connection state: the reply parser and, for an in-order protocol,
    /// what it must know of the requests in flight (their reply lengths).
    type Conn: Send;
    /// What the caller asks to send, without the id (the loop assigns it).
    type Request: Send + Sync;
    /// One decoded message from the server.
    type Reply;
    /// Why a request could not be encoded (nothing was written then).
    type EncodeError: std::error::Error + Copy + Send + Sync + 'static;
    /// Why the server's byte stream cannot be decoded.
    type DecodeError: std::error::Error + Copy + Send + Sync + 'static;

    /// How replies are matched to requests.
    const CORRELATION: Correlation;

    /// Short name for reports and logs ("warpwire", "echo", "http").
    fn name(&self) -> &'static str;

    /// Fresh state for a new connection (also after a reconnect).
    fn open(&self) -> Self::Conn;

    /// Appends request `id` to `out`. On error nothing is appended and the
    /// connection state is unchanged.
    fn encode(
        &self,
        conn: &mut Self::Conn,
        id: u64,
        request: &Self::Request,
        out: &mut BytesMut,
    ) -> Result<(), Self::EncodeError>;

    /// Like [`ClientProtocol::encode`] into the I/O thread's output, where
    /// a protocol may queue a large part of the request (a body the caller
    /// gave as [`bytes::Bytes`]) without copying it. The default copies
    /// everything with `encode`.
    fn encode_into(
        &self,
        conn: &mut Self::Conn,
        id: u64,
        request: &Self::Request,
        out: &mut Out,
    ) -> Result<(), Self::EncodeError> {
        self.encode(conn, id, request, out.buf())
    }

    /// Where the next received bytes go; follow with
    /// [`ClientProtocol::commit`]. Empty when the stream has failed or the
    /// buffer is at its limit (decode first).
    fn read_buf<'c>(&self, conn: &'c mut Self::Conn) -> &'c mut [u8];

    /// `n` bytes of the last `read_buf` region were received.
    fn commit(&self, conn: &mut Self::Conn, n: usize);

    /// One receive from `t` into the connection's parser: `None` when the
    /// parser has no room (failed, or at its limit) and nothing was read,
    /// else what the transport returned (bytes received, counted).
    ///
    /// The provided version receives into [`ClientProtocol::read_buf`] and
    /// commits; a parser that keeps a `BytesMut` overrides it with
    /// [`Transport::recv_buf`], which does not zero the region first.
    fn receive<T: Transport>(
        &self,
        conn: &mut Self::Conn,
        t: &mut T,
        id: ConnId,
    ) -> Option<Result<usize, TransportError>> {
        let buf = self.read_buf(conn);
        if buf.is_empty() {
            return None;
        }
        let r = t.recv(id, buf);
        if let Ok(n) = r {
            self.commit(conn, n);
        }
        Some(r)
    }

    /// The next whole message, `Ok(None)` if more bytes are needed, or the
    /// stream's sticky error.
    fn decode(
        &self,
        conn: &mut Self::Conn,
    ) -> Result<Option<Incoming<Self::Reply>>, Self::DecodeError>;

    /// Whether `reply` is a correct answer to `request`, sent as `id`.
    fn check(&self, id: u64, request: &Self::Request, reply: &Self::Reply) -> Result<(), Mismatch>;
}

/// What the protocols' unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{ClientProtocol, Incoming, ReplyTo};

    /// Feeds `bytes` to `p` in pieces of `step`, decoding after each: the
    /// in-order replies, and the error that ended the stream if one did.
    /// Stops early when `read_buf` has no room.
    pub(crate) fn feed<P: ClientProtocol>(
        p: &P,
        c: &mut P::Conn,
        bytes: &[u8],
        step: usize,
    ) -> (Vec<P::Reply>, Option<P::DecodeError>)
    where
        P::Reply: std::fmt::Debug,
    {
        let mut got = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let piece = &rest[..step.min(rest.len())];
            let buf = p.read_buf(c);
            if buf.is_empty() {
                break;
            }
            let n = buf.len().min(piece.len());
            buf[..n].copy_from_slice(&piece[..n]);
            p.commit(c, n);
            rest = &rest[n..];
            loop {
                match p.decode(c) {
                    Ok(Some(Incoming::Reply(ReplyTo::Oldest, r))) => got.push(r),
                    Ok(Some(m)) => panic!("{m:?}"),
                    Ok(None) => break,
                    Err(e) => return (got, Some(e)),
                }
            }
        }
        (got, None)
    }
}
