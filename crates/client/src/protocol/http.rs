//! HTTP/1.1 as a [`ClientProtocol`]: keep-alive, pipelined requests,
//! responses matched in request order.
//!
//! Two requests, both routes of warpwire's HTTP listener (`warpwire-http`):
//!
//! - `GET /ping` ([`HttpTarget::Ping`]): the answer must be 200 `pong\n`.
//!   It carries nothing of the request, so only the order of replies
//!   (FIFO) ties it to its request.
//! - `POST /echo` with a body of `size` bytes ([`HttpTarget::Echo`]): the
//!   body is the echo protocol's content of request `id` (the id as 8
//!   little-endian bytes, then an id-dependent pattern, see
//!   [`Echo`](super::Echo)), and the answer must be 200 with the same
//!   bytes, so [`ClientProtocol::check`] sees a corrupted byte
//!   ([`Mismatch::Content`]) and another request's body
//!   ([`Mismatch::OtherRequest`]: reordered or duplicated responses).
//!
//! Every request carries `Host:` (set once, [`HttpRequest::new`]); none
//! asks for a close, so the connection stays open (HTTP/1.1's default) and
//! requests pipeline on it as deep as the caller sends them.
//!
//! ```text
//!  received bytes ─► head (httparse, ≤ max_head) ─► 1xx? skipped (at most 8 in a row)
//!                         │ status, Content-Length, Connection
//!                         ▼
//!                    body: Content-Length bytes (≤ max_body) ─► Reply(Oldest, HttpResponse)
//!                         │ `Connection: close` in it?
//!                         ▼
//!                    the next decode fails: ClosedByServer { unanswered }
//! ```
//!
//! What the parser refuses, as a sticky [`HttpError`] (the connection is
//! then given up, its requests in flight lost):
//! - framing it does not implement: `Transfer-Encoding` (chunked) and a
//!   response without `Content-Length` (a body delimited by the close).
//!   warpwire's server always sends `Content-Length` and never chunks, so
//!   against it these mean a broken server; against another server, an
//!   unsupported one. 204 and 304 need no `Content-Length` (no body).
//! - heads over [`Http::max_head`] bytes or with more than 32 fields,
//!   bodies over [`Http::max_body`]: the per-connection buffer never holds
//!   more than `max_head + max_body + 16 KiB`, whatever the server sends.
//! - a response with no request waiting for it, `101 Switching Protocols`.
//! - anything after a response with `Connection: close` (or an HTTP/1.0
//!   response without keep-alive): the server closes after it, so the
//!   requests pipelined behind it will not be answered. The connection
//!   fails at once rather than waiting for the close, and the load
//!   generator counts its requests in flight as lost.
//!
//! A non-2xx status is a well-framed reply: the stream goes on, and
//! `check` counts it as [`Mismatch::ErrorReply`].

use bytes::{Bytes, BytesMut};

use super::echo::{check_content, write_content};
use super::recv::{READ_CHUNK, RecvBuf};
use super::{ClientHooks, ClientProtocol, Correlation, Incoming, Mismatch, ReplyTo};
use crate::ClientError;

/// Header fields parsed per response. warpwire's server sends at most
/// six; 32 leaves room for a proxy's additions and keeps the parser's
/// array (on the stack, per decode) at 1 KiB.
const MAX_HEADERS: usize = 32;

/// Interim (1xx) responses accepted before one final response: a server
/// sends one `100 Continue` at most, and an endless stream of them must
/// not keep a request alive.
const MAX_INTERIM: u8 = 8;

/// The body of warpwire's `GET /ping` answer.
const PONG: &[u8] = b"pong\n";

/// The HTTP/1.1 client protocol. See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Http {
    /// Largest response head (status line and header fields), bytes.
    pub max_head: usize,
    /// Largest response body, bytes; also the largest `POST /echo` body
    /// [`ClientProtocol::encode`] accepts.
    pub max_body: usize,
}

impl Http {
    /// Largest response head by default: the server's default limit on
    /// request heads (`[http] max_head`), 16 KiB.
    pub const DEFAULT_MAX_HEAD: usize = 16 * 1024;
    /// Largest body by default: the server's default `[http] max_body`
    /// (and warpwire's frame payload limit), 1 MiB.
    pub const DEFAULT_MAX_BODY: usize = 1 << 20;
}

impl Default for Http {
    fn default() -> Self {
        Self {
            max_head: Self::DEFAULT_MAX_HEAD,
            max_body: Self::DEFAULT_MAX_BODY,
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpTarget {
    /// `GET /ping`.
    Ping,
    /// `POST /echo` with a body of `size` bytes made from the request's id.
    Echo {
        /// Body bytes.
        size: usize,
    },
}

/// A request: its target and its head, built once (the id only changes
/// the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    target: HttpTarget,
    /// Request line and header fields, through the blank line.
    head: Bytes,
}

impl HttpRequest {
    /// A request for `target` with `Host: host` (e.g. `127.0.0.1:8080`).
    /// The host must be visible ASCII without spaces
    /// ([`HttpError::InvalidHost`]): it goes into the head as it is.
    pub fn new(host: &str, target: HttpTarget) -> Result<Self, HttpError> {
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HttpError::InvalidHost);
        }
        let head = match target {
            HttpTarget::Ping => format!("GET /ping HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            HttpTarget::Echo { size } => format!(
                "POST /echo HTTP/1.1\r\nHost: {host}\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
            ),
        };
        Ok(Self {
            target,
            head: Bytes::from(head),
        })
    }

    /// What the request asks for.
    pub fn target(&self) -> HttpTarget {
        self.target
    }
}

/// A response: its status and body (header fields are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code (200, 404, ...): never 1xx.
    pub status: u16,
    /// The body, `Content-Length` bytes.
    pub body: Bytes,
    /// The response said `Connection: close` (or was HTTP/1.0 without
    /// keep-alive): the server closes the connection after it.
    pub close: bool,
}

/// What can go wrong with HTTP, on either side of the stream. Small and
/// `Copy`: a decode error is sticky, returned again on every later call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The response head is not HTTP/1.x (httparse's verdict, including
    /// more than 32 header fields).
    #[error("malformed response head")]
    Malformed(#[source] httparse::Error),
    /// The response head exceeds [`Http::max_head`] without ending.
    #[error("response head longer than {max} bytes")]
    HeadTooLarge {
        /// The limit.
        max: usize,
    },
    /// The response has `Transfer-Encoding` (chunked): not implemented;
    /// warpwire's server never sends it.
    #[error(
        "response with Transfer-Encoding (chunked is not supported; warpwire sends Content-Length)"
    )]
    TransferEncoding,
    /// The response has no `Content-Length`: its body would end with the
    /// connection, which a pipelined client cannot use; warpwire's server
    /// always sends one.
    #[error("response without Content-Length")]
    NoContentLength,
    /// `Content-Length` is not a number, or two of them disagree.
    #[error("invalid or conflicting Content-Length")]
    BadContentLength,
    /// The response body exceeds [`Http::max_body`].
    #[error("response body of {len} bytes exceeds the limit of {max}")]
    BodyTooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// More than 8 interim (1xx) responses in a row.
    #[error("too many interim (1xx) responses")]
    TooManyInterim,
    /// `101 Switching Protocols`: no request asked for an upgrade.
    #[error("unexpected 101 Switching Protocols")]
    Upgrade,
    /// A response arrived with no request in flight.
    #[error("a response with no request in flight")]
    Unsolicited,
    /// A response said `Connection: close`: the server closes after it,
    /// and the requests sent behind it go unanswered.
    #[error("the server closed the connection with {unanswered} request(s) unanswered")]
    ClosedByServer {
        /// Requests in flight when the close was seen.
        unanswered: usize,
    },
    /// A `POST /echo` body exceeds [`Http::max_body`] (nothing was sent).
    #[error("echo body of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The body size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The host of [`HttpRequest::new`] is empty or has a byte that is not
    /// visible ASCII.
    #[error("invalid Host value")]
    InvalidHost,
}

/// Where the parser is in the response stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a head; `interim` 1xx responses already skipped.
    Head { interim: u8 },
    /// Waiting for `len` body bytes of the response with `status`.
    Body {
        status: u16,
        len: usize,
        close: bool,
    },
    /// A response said close: nothing more may come.
    Closing,
}

/// Per-connection state of [`Http`]: received bytes, where the parser is,
/// and how many requests wait for a response.
#[derive(Debug)]
pub struct HttpConn {
    /// Holds at most `max_head + max_body + READ_CHUNK`.
    recv: RecvBuf,
    state: State,
    in_flight: usize,
    error: Option<HttpError>,
}

impl HttpConn {
    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Bytes of memory the receive buffer holds (at most twice
    /// `max_head + max_body + 16 KiB`).
    pub fn allocated(&self) -> usize {
        self.recv.allocated()
    }

    fn fail(&mut self, e: HttpError) -> HttpError {
        self.error = Some(e);
        self.recv.release();
        e
    }
}

/// What the parser needs of a final response's head.
struct HeadInfo {
    status: u16,
    len: usize,
    close: bool,
}

/// Whether a comma-separated header value has `token` (any case).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// A Content-Length value: digits only (no sign, no spaces inside).
fn parse_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

impl Http {
    /// The framing of a parsed response head (`status` not 1xx).
    fn head_info(&self, resp: &httparse::Response<'_, '_>) -> Result<HeadInfo, HttpError> {
        // A complete parse sets the code and version.
        let status = resp.code.unwrap_or(0);
        let mut len: Option<u64> = None;
        let (mut close, mut keep_alive) = (false, false);
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = parse_length(h.value).ok_or(HttpError::BadContentLength)?;
                if len.is_some_and(|l| l != n) {
                    return Err(HttpError::BadContentLength);
                }
                len = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(HttpError::TransferEncoding);
            } else if h.name.eq_ignore_ascii_case("connection") {
                close |= has_token(h.value, "close");
                keep_alive |= has_token(h.value, "keep-alive");
            }
        }
        if resp.version == Some(0) && !keep_alive {
            close = true;
        }
        let len = match (status, len) {
            // No body, whatever the header says (RFC 9112 §6.3).
            (204 | 304, _) => 0,
            (_, Some(n)) => n,
            (_, None) => return Err(HttpError::NoContentLength),
        };
        let max = self.max_body;
        match usize::try_from(len) {
            Ok(l) if l <= max => Ok(HeadInfo {
                status,
                len: l,
                close,
            }),
            _ => Err(HttpError::BodyTooLarge { len, max }),
        }
    }

    /// Parses the head at the front of `conn`'s bytes: `Ok(None)` if it is
    /// not complete, else its length and, for a final response, its
    /// framing (`None` for a 1xx).
    fn parse_head(&self, conn: &HttpConn) -> Result<Option<(usize, Option<HeadInfo>)>, HttpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let bytes = conn.recv.received();
        let n = match resp.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if bytes.len() >= self.max_head => {
                return Err(HttpError::HeadTooLarge { max: self.max_head });
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(HttpError::Malformed(e)),
        };
        if n > self.max_head {
            return Err(HttpError::HeadTooLarge { max: self.max_head });
        }
        match resp.code {
            Some(101) => Err(HttpError::Upgrade),
            Some(100..=199) => Ok(Some((n, None))),
            _ => Ok(Some((n, Some(self.head_info(&resp)?)))),
        }
    }

    /// The next response, or `Ok(None)`; errors are not yet made sticky.
    fn next(&self, conn: &mut HttpConn) -> Result<Option<HttpResponse>, HttpError> {
        loop {
            match conn.state {
                State::Closing => {
                    return Err(HttpError::ClosedByServer {
                        unanswered: conn.in_flight,
                    });
                }
                State::Head { interim } => {
                    if conn.recv.len() == 0 {
                        return Ok(None);
                    }
                    if conn.in_flight == 0 {
                        return Err(HttpError::Unsolicited);
                    }
                    let Some((n, info)) = self.parse_head(conn)? else {
                        return Ok(None);
                    };
                    conn.recv.discard(n);
                    conn.state = match info {
                        None if interim >= MAX_INTERIM => return Err(HttpError::TooManyInterim),
                        None => State::Head {
                            interim: interim + 1,
                        },
                        Some(h) => State::Body {
                            status: h.status,
                            len: h.len,
                            close: h.close,
                        },
                    };
                }
                State::Body { status, len, close } => {
                    if conn.recv.len() < len {
                        return Ok(None);
                    }
                    let body = conn.recv.take(len);
                    conn.in_flight -= 1;
                    conn.state = if close {
                        State::Closing
                    } else {
                        State::Head { interim: 0 }
                    };
                    return Ok(Some(HttpResponse {
                        status,
                        body,
                        close,
                    }));
                }
            }
        }
    }
}

impl ClientProtocol for Http {
    type Conn = HttpConn;
    type Request = HttpRequest;
    type Reply = HttpResponse;
    type EncodeError = HttpError;
    type DecodeError = HttpError;

    const CORRELATION: Correlation = Correlation::InOrder;

    fn name(&self) -> &'static str {
        "http"
    }

    fn open(&self) -> HttpConn {
        let limit = self
            .max_head
            .saturating_add(self.max_body)
            .saturating_add(READ_CHUNK);
        HttpConn {
            recv: RecvBuf::new(limit),
            state: State::Head { interim: 0 },
            in_flight: 0,
            error: None,
        }
    }

    fn encode(
        &self,
        conn: &mut HttpConn,
        id: u64,
        request: &HttpRequest,
        out: &mut BytesMut,
    ) -> Result<(), HttpError> {
        let size = match request.target {
            HttpTarget::Ping => 0,
            HttpTarget::Echo { size } if size > self.max_body => {
                return Err(HttpError::TooLarge {
                    size,
                    max: self.max_body,
                });
            }
            HttpTarget::Echo { size } => size,
        };
        out.reserve(request.head.len() + size);
        out.extend_from_slice(&request.head);
        write_content(id, size, out);
        conn.in_flight += 1;
        Ok(())
    }

    fn read_buf<'c>(&self, conn: &'c mut HttpConn) -> &'c mut [u8] {
        if conn.error.is_some() {
            return &mut [];
        }
        // The rest of a body being received in one region, or a chunk.
        let rest = match conn.state {
            State::Body { len, .. } => len.saturating_sub(conn.recv.len()),
            _ => 0,
        };
        conn.recv.offer(rest)
    }

    fn commit(&self, conn: &mut HttpConn, n: usize) {
        conn.recv.commit(n);
    }

    fn decode(&self, conn: &mut HttpConn) -> Result<Option<Incoming<HttpResponse>>, HttpError> {
        if let Some(e) = conn.error {
            return Err(e);
        }
        match self.next(conn) {
            Ok(r) => Ok(r.map(|r| Incoming::Reply(ReplyTo::Oldest, r))),
            Err(e) => Err(conn.fail(e)),
        }
    }

    /// A 2xx status, and the body the target calls for: `pong\n` for
    /// `GET /ping`, the request's own content for `POST /echo`.
    fn check(&self, id: u64, request: &HttpRequest, reply: &HttpResponse) -> Result<(), Mismatch> {
        if !(200..300).contains(&reply.status) {
            return Err(Mismatch::ErrorReply);
        }
        match request.target {
            HttpTarget::Ping if reply.body.len() != PONG.len() => Err(Mismatch::Length),
            HttpTarget::Ping if reply.body != PONG => Err(Mismatch::Content),
            HttpTarget::Ping => Ok(()),
            HttpTarget::Echo { size } => check_content(id, size, &reply.body),
        }
    }
}

/// HTTP takes the defaults (no handshake, no heartbeat; a response of any
/// status is the caller's reply), except for a server's close.
impl ClientHooks for Http {
    /// A response with `Connection: close` reaches its caller; the requests
    /// pipelined behind it fail with [`ClientError::Disconnected`] (the
    /// server closes without answering them; they may or may not have been
    /// processed) and the client reconnects. Other stream failures are
    /// [`ClientError::Protocol`].
    fn decode_error(&self, e: HttpError) -> ClientError {
        match e {
            HttpError::ClosedByServer { .. } => ClientError::Disconnected,
            e => ClientError::Protocol(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::Echo;

    const HOST: &str = "127.0.0.1:8080";

    fn ping() -> HttpRequest {
        HttpRequest::new(HOST, HttpTarget::Ping).unwrap()
    }

    fn echo(size: usize) -> HttpRequest {
        HttpRequest::new(HOST, HttpTarget::Echo { size }).unwrap()
    }

    /// A response as warpwire's server writes it, with `extra` fields.
    fn response(status: &str, body: &[u8], extra: &str) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 {status}\r\nServer: warpwire\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\
             Content-Length: {}\r\nContent-Type: text/plain\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    /// Sends `requests` (ids 1, 2, ...) on a fresh connection.
    fn sent(p: &Http, requests: &[HttpRequest]) -> (HttpConn, BytesMut) {
        let mut c = p.open();
        let mut out = BytesMut::new();
        for (i, r) in requests.iter().enumerate() {
            p.encode(&mut c, i as u64 + 1, r, &mut out).unwrap();
        }
        (c, out)
    }

    use crate::protocol::test_support::feed;

    #[test]
    fn requests_are_keep_alive_with_host_and_the_echo_content() {
        let p = Http::default();
        let (c, out) = sent(&p, &[ping(), echo(12)]);
        assert_eq!(c.in_flight(), 2);
        let ping_head = format!("GET /ping HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        let echo_head = format!(
            "POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: 12\r\n\r\n"
        );
        let mut want = ping_head.into_bytes();
        want.extend_from_slice(echo_head.as_bytes());
        want.extend_from_slice(&Echo::content(2, 12));
        assert_eq!(&out[..], &want[..]);
        // The request parses as HTTP/1.1 with nothing asking for a close.
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(&out).unwrap().is_complete());
        assert_eq!((req.method, req.version), (Some("GET"), Some(1)));
        for bad in ["", "a b", "host\r\nX: y", "h\u{e9}"] {
            assert_eq!(
                HttpRequest::new(bad, HttpTarget::Ping),
                Err(HttpError::InvalidHost),
                "{bad:?}"
            );
        }
        let small = Http {
            max_body: 10,
            ..Http::default()
        };
        let mut c = small.open();
        let mut out = BytesMut::new();
        assert_eq!(
            small.encode(&mut c, 1, &echo(11), &mut out),
            Err(HttpError::TooLarge { size: 11, max: 10 })
        );
        assert!(out.is_empty());
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn any_split_gives_the_same_responses() {
        let p = Http::default();
        let sizes = [0usize, 1, 7, 8, 9, 300, 40_000];
        let mut requests: Vec<HttpRequest> = sizes.iter().map(|&s| echo(s)).collect();
        requests.insert(3, ping());
        // The server's stream: every response, one of them after a
        // 100 Continue, all pipelined back to back.
        let mut stream = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            let id = i as u64 + 1;
            match r.target() {
                HttpTarget::Ping => stream.extend(response("200 OK", PONG, "")),
                HttpTarget::Echo { size } => {
                    if size == 300 {
                        stream.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    stream.extend(response("200 OK", &Echo::content(id, size), ""));
                }
            }
        }
        for step in [1, 2, 3, 7, 64, 1000, 16_384, stream.len()] {
            let (mut c, _) = sent(&p, &requests);
            let (got, err) = feed(&p, &mut c, &stream, step);
            assert_eq!(err, None, "step {step}");
            assert_eq!(got.len(), requests.len(), "step {step}");
            for (i, (resp, req)) in got.iter().zip(&requests).enumerate() {
                assert_eq!(resp.status, 200);
                assert!(!resp.close);
                assert_eq!(p.check(i as u64 + 1, req, resp), Ok(()), "step {step} #{i}");
            }
            assert_eq!(c.in_flight(), 0);
            assert_eq!(p.decode(&mut c), Ok(None));
            assert!(
                c.allocated() <= 2 * (40_000 + READ_CHUNK),
                "{}",
                c.allocated()
            );
        }
    }

    #[test]
    fn error_statuses_are_error_replies_and_the_stream_goes_on() {
        let p = Http::default();
        let reqs = [echo(4), ping(), echo(4)];
        let (mut c, _) = sent(&p, &reqs);
        let mut stream = response("404 Not Found", b"404 Not Found\n", "");
        stream.extend(response("503 Service Unavailable", b"", ""));
        stream.extend(response("200 OK", &Echo::content(3, 4), ""));
        let (got, err) = feed(&p, &mut c, &stream, 5);
        assert_eq!((got.len(), err), (3, None));
        assert_eq!(p.check(1, &reqs[0], &got[0]), Err(Mismatch::ErrorReply));
        assert_eq!(p.check(2, &reqs[1], &got[1]), Err(Mismatch::ErrorReply));
        assert_eq!(p.check(3, &reqs[2], &got[2]), Ok(()));
        // 2xx other than 200 is a success; 3xx is not.
        let ok = HttpResponse {
            status: 204,
            body: Bytes::from_static(PONG),
            close: false,
        };
        assert_eq!(p.check(1, &ping(), &ok), Ok(()));
        let moved = HttpResponse { status: 301, ..ok };
        assert_eq!(p.check(1, &ping(), &moved), Err(Mismatch::ErrorReply));
    }

    #[test]
    fn corrupted_or_reordered_bodies_are_seen() {
        let p = Http::default();
        let ok = |body: Bytes| HttpResponse {
            status: 200,
            body,
            close: false,
        };
        for size in [1usize, 8, 64, 1000] {
            let good = Echo::content(9, size);
            assert_eq!(p.check(9, &echo(size), &ok(good.clone())), Ok(()));
            for i in 0..size {
                let mut bad = good.to_vec();
                bad[i] ^= 0x01;
                assert!(
                    p.check(9, &echo(size), &ok(bad.into())).is_err(),
                    "{size} {i}"
                );
            }
            assert!(
                p.check(9, &echo(size), &ok(Echo::content(10, size)))
                    .is_err()
            );
        }
        assert_eq!(
            p.check(9, &echo(64), &ok(Echo::content(10, 64))),
            Err(Mismatch::OtherRequest)
        );
        assert_eq!(
            p.check(9, &echo(64), &ok(Echo::content(9, 63))),
            Err(Mismatch::Length)
        );
        let mut bad = Echo::content(9, 64).to_vec();
        bad[40] = bad[40].wrapping_add(1);
        assert_eq!(
            p.check(9, &echo(64), &ok(bad.into())),
            Err(Mismatch::Content)
        );
        // The ping answer is checked too.
        assert_eq!(
            p.check(1, &ping(), &ok(Bytes::from_static(b"pong\n"))),
            Ok(())
        );
        assert_eq!(
            p.check(1, &ping(), &ok(Bytes::from_static(b"pinG\n"))),
            Err(Mismatch::Content)
        );
        assert_eq!(
            p.check(1, &ping(), &ok(Bytes::from_static(b"pong"))),
            Err(Mismatch::Length)
        );
        // A body swapped between two pipelined echoes, on the wire.
        let reqs = [echo(32), echo(32)];
        let (mut c, _) = sent(&p, &reqs);
        let mut stream = response("200 OK", &Echo::content(2, 32), "");
        stream.extend(response("200 OK", &Echo::content(1, 32), ""));
        let (got, _) = feed(&p, &mut c, &stream, 1000);
        assert_eq!(p.check(1, &reqs[0], &got[0]), Err(Mismatch::OtherRequest));
        assert_eq!(p.check(2, &reqs[1], &got[1]), Err(Mismatch::OtherRequest));
    }

    #[test]
    fn framing_it_does_not_implement_is_a_clear_error() {
        let p = Http::default();
        let cases: [(&[u8], HttpError); 8] = [
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\npong\n\r\n0\r\n\r\n",
                HttpError::TransferEncoding,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::TransferEncoding,
            ),
            (b"HTTP/1.1 200 OK\r\n\r\npong\n", HttpError::NoContentLength),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                HttpError::Upgrade,
            ),
        ];
        for (bytes, want) in cases {
            let (mut c, _) = sent(&p, &[ping()]);
            let (got, err) = feed(&p, &mut c, bytes, 3);
            assert!(got.is_empty());
            assert_eq!(err, Some(want), "{}", String::from_utf8_lossy(bytes));
            // Sticky, and the memory is given back.
            assert_eq!(p.decode(&mut c), Err(want));
            assert!(p.read_buf(&mut c).is_empty());
            assert_eq!(c.allocated(), 0);
        }
        // The same Content-Length twice is fine; 204 needs none.
        let (mut c, _) = sent(&p, &[ping(), ping()]);
        let mut stream =
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\npong\n".to_vec();
        stream.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
        let (got, err) = feed(&p, &mut c, &stream, 4);
        assert_eq!((got.len(), err), (2, None));
        assert_eq!((got[1].status, got[1].body.len()), (204, 0));
    }

    #[test]
    fn connection_close_fails_the_requests_behind_it() {
        let p = Http::default();
        let (mut c, _) = sent(&p, &[ping(), ping(), ping()]);
        let mut stream = response("200 OK", PONG, "");
        stream.extend(response(
            "200 OK",
            PONG,
            "Connection: Keep-Alive, close\r\n",
        ));
        let (got, err) = feed(&p, &mut c, &stream, 7);
        // The response that says close is a reply like any other; the one
        // request behind it is unanswered, at once.
        assert_eq!(got.len(), 2);
        assert!(!got[0].close && got[1].close);
        assert_eq!(p.check(2, &ping(), &got[1]), Ok(()));
        assert_eq!(err, Some(HttpError::ClosedByServer { unanswered: 1 }));
        assert_eq!(
            p.decode(&mut c),
            Err(HttpError::ClosedByServer { unanswered: 1 })
        );
        assert!(p.read_buf(&mut c).is_empty());
        // HTTP/1.0 without keep-alive closes too; with it, it does not.
        let (mut c, _) = sent(&p, &[ping(), ping(), ping()]);
        let mut stream =
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\npong\n"
                .to_vec();
        stream.extend_from_slice(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\npong\n");
        let (got, err) = feed(&p, &mut c, &stream, 1000);
        assert_eq!(
            got.iter().map(|r| r.close).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(err, Some(HttpError::ClosedByServer { unanswered: 1 }));
        // A close on the last request in flight still ends the stream:
        // nothing more can be sent on it.
        let (mut c, _) = sent(&p, &[ping()]);
        let (got, err) = feed(
            &p,
            &mut c,
            &response("200 OK", PONG, "Connection: close\r\n"),
            9,
        );
        assert_eq!(got.len(), 1);
        assert_eq!(err, Some(HttpError::ClosedByServer { unanswered: 0 }));
    }

    #[test]
    fn interim_responses_are_skipped_within_a_bound() {
        let p = Http::default();
        let (mut c, _) = sent(&p, &[echo(3)]);
        let mut stream = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n".to_vec();
        stream.extend(response("200 OK", &Echo::content(1, 3), ""));
        let (got, err) = feed(&p, &mut c, &stream, 2);
        assert_eq!((got.len(), err), (1, None));
        assert_eq!(p.check(1, &echo(3), &got[0]), Ok(()));
        // An endless stream of them fails the request rather than keep it
        // waiting.
        let (mut c, _) = sent(&p, &[echo(3)]);
        let stream = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(usize::from(MAX_INTERIM) + 1);
        let (got, err) = feed(&p, &mut c, &stream, 1000);
        assert!(got.is_empty());
        assert_eq!(err, Some(HttpError::TooManyInterim));
    }

    #[test]
    fn responses_nobody_asked_for_fail_the_stream() {
        let p = Http::default();
        let (mut c, _) = sent(&p, &[ping()]);
        let mut stream = response("200 OK", PONG, "");
        stream.extend(response("200 OK", PONG, ""));
        let (got, err) = feed(&p, &mut c, &stream, 1000);
        assert_eq!(got.len(), 1);
        assert_eq!(err, Some(HttpError::Unsolicited));
        let mut c = p.open();
        let (got, err) = feed(&p, &mut c, b"H", 1);
        assert_eq!((got.len(), err), (0, Some(HttpError::Unsolicited)));
    }

    #[test]
    fn memory_is_bounded_against_garbage_and_endless_heads() {
        let p = Http {
            max_head: 4096,
            max_body: 64 * 1024,
        };
        let bound = 2 * (4096 + 64 * 1024 + READ_CHUNK);
        // Garbage: refused at its first bytes.
        let (mut c, _) = sent(&p, &[ping()]);
        let (_, err) = feed(&p, &mut c, &[0xff; 100_000], 1000);
        assert!(matches!(err, Some(HttpError::Malformed(_))), "{err:?}");
        // A status line that never ends, endless header fields, too many
        // fields: each stops within the head limit.
        let endless_line = b"HTTP/1.1 200 "
            .iter()
            .chain(&[b'x'; 1 << 20])
            .copied()
            .collect::<Vec<_>>();
        let mut endless_fields = b"HTTP/1.1 200 OK\r\n".to_vec();
        let field = format!("X-Pad: {}\r\n", "a".repeat(1000));
        endless_fields.extend(field.as_bytes().repeat(1000));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        many.extend(b"A: b\r\n".repeat(MAX_HEADERS + 1));
        many.extend_from_slice(b"\r\n");
        for (stream, want) in [
            (&endless_line, Some(HttpError::HeadTooLarge { max: 4096 })),
            (&endless_fields, Some(HttpError::HeadTooLarge { max: 4096 })),
            (
                &many,
                Some(HttpError::Malformed(httparse::Error::TooManyHeaders)),
            ),
        ] {
            for step in [1, 100, 16_384] {
                let (mut c, _) = sent(&p, &[ping()]);
                let mut peak = 0;
                let mut err = None;
                for piece in stream.chunks(step) {
                    let (_, e) = feed(&p, &mut c, piece, step);
                    peak = peak.max(c.allocated());
                    if e.is_some() {
                        err = e;
                        break;
                    }
                }
                assert_eq!(err, want, "step {step}");
                assert!(peak <= bound, "step {step}: {peak}");
            }
        }
        // A body over the limit is refused by its announced length.
        let (mut c, _) = sent(&p, &[ping()]);
        let (_, err) = feed(
            &p,
            &mut c,
            b"HTTP/1.1 200 OK\r\nContent-Length: 65537\r\n\r\n",
            1000,
        );
        assert_eq!(
            err,
            Some(HttpError::BodyTooLarge {
                len: 65_537,
                max: 64 * 1024
            })
        );
        // A caller that never decodes cannot make the buffer grow past the
        // limit: read_buf runs out of room.
        let (mut c, _) = sent(&p, &vec![echo(64 * 1024); 100]);
        let mut total = 0;
        loop {
            let buf = p.read_buf(&mut c);
            if buf.is_empty() {
                break;
            }
            let n = buf.len();
            buf.fill(b'a');
            p.commit(&mut c, n);
            total += n;
        }
        assert_eq!(total, 4096 + 64 * 1024 + READ_CHUNK);
        assert!(c.allocated() <= bound, "{}", c.allocated());
    }
}
