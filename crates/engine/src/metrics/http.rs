//! The HTTP side of the metrics endpoint: one thread, one mio event loop,
//! many connections at once, none able to hold up another.
//!
//! ```text
//!  listener ──accept──► at the cap? ── yes ─► one try at 503, close
//!                            │ no
//!                            ▼
//!  Head     read ≤ max_head bytes up to CRLF CRLF   ── deadline: 408, close
//!           (too long: 431)  │ route(head): pure     ── EOF/error: close
//!                            ▼
//!  Respond  write as the socket takes it           ── deadline: close
//!                            │ all sent: shutdown(Write)
//!                            ▼
//!  Linger   discard input until the peer's EOF     ── LINGER / LINGER_BYTES: close
//! ```
//!
//! Every socket is non-blocking and every connection has a deadline, so a
//! peer that trickles its head, never sends one, or never reads its
//! response costs one of `max_connections` slots until its deadline and
//! delays no one else. The linger lets a peer that sent more than its head
//! still read the response: closing with unread input would reset the
//! connection and could discard the response in flight.
//!
//! Not here: keep-alive (every response closes; a scraper connects once per
//! scrape), request bodies, chunked encoding, TLS. The head is checked by a
//! small strict parser ([`parse_head`]) rather than `httparse`, which is no
//! dependency of the workspace: the endpoint needs only the method and the
//! path, and rejects what it does not understand with 400.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};

/// Limits of the metrics endpoint. [`Default`] is what
/// [`serve_metrics`](super::serve_metrics) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once; one more is answered `503` and closed.
    /// Every slot is allocated up front.
    pub max_connections: usize,
    /// From accept to a complete request head; then `408` and close.
    pub header_timeout: Duration,
    /// From a complete head to the last byte of the response written; then
    /// the connection is dropped.
    pub response_timeout: Duration,
    /// Bytes of a request head, its final CRLF CRLF included; a longer one
    /// is answered `431` and closed.
    pub max_head: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            // A scraper or two and an operator with curl use a handful; 64
            // leaves room to spare while bounding descriptors and memory
            // (a head buffer and one response each).
            max_connections: 64,
            // Far longer than any real client takes to send a few hundred
            // bytes, short enough that an idle or trickling peer soon gives
            // its slot back.
            header_timeout: Duration::from_secs(5),
            // A response is tens of KiB: seconds are plenty for a peer that
            // reads at all.
            response_timeout: Duration::from_secs(5),
            // 8 KiB: the common per-head default of HTTP servers, far above
            // what a scraper sends.
            max_head: 8 * 1024,
        }
    }
}

/// The listener's token; connections use their slot index.
const LISTENER: Token = Token(usize::MAX);

/// The longest the loop waits before looking at the stop flag: the caller
/// stops the endpoint by setting a flag, not through a waker, and 50 ms is
/// how often the previous accept loop looked, so `join` waits no longer.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Readiness events taken per poll: two per slot at the default cap, plus
/// the listener. More ready sockets wait for the next poll.
const EVENTS: usize = 2 * 64 + 1;

/// Connections accepted per pass of the loop. A connect flood costs an
/// accept and a close each; bounding the batch lets connections already
/// open make progress between batches.
const ACCEPT_BOUND: usize = 64;

/// How long a connection whose response is sent waits for the peer to
/// close: ample for a FIN over loopback or a LAN. A peer that does not close
/// in time loses nothing; its response is already written.
const LINGER: Duration = Duration::from_secs(1);

/// Input discarded while lingering before the connection is closed anyway:
/// a peer streaming data at us does not keep its slot for free.
const LINGER_BYTES: usize = 64 * 1024;

/// Size of the one read buffer the loop shares between connections.
const SCRATCH: usize = 8 * 1024;

/// Spawns the endpoint's thread on `listener`; it answers with `render()`
/// until `stop` is set. Errors (a poll, the registration, the thread) come
/// back here, before anything runs.
pub(super) fn spawn<F>(
    listener: std::net::TcpListener,
    limits: HttpLimits,
    stop: Arc<AtomicBool>,
    render: F,
) -> io::Result<JoinHandle<()>>
where
    F: Fn() -> String + Send + 'static,
{
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let endpoint = Endpoint {
        listener,
        limits,
        render,
        conns: (0..limits.max_connections).map(|_| None).collect(),
        scratch: vec![0; SCRATCH],
        accept: Accept::Idle,
    };
    std::thread::Builder::new()
        .name("warpwire-metrics".into())
        .spawn(move || endpoint.run(poll, &stop))
}

/// Whether the listener may have connections waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    /// Drained to `WouldBlock`: wait for its next event.
    Idle,
    /// Readable and not yet drained (an event, or [`ACCEPT_BOUND`] reached):
    /// poll without waiting, then accept more.
    Pending,
    /// Accepting failed (out of descriptors, say): try again on the next
    /// pass, at most [`STOP_CHECK`] later, without spinning.
    Retry,
}

/// The event loop's state.
struct Endpoint<F> {
    listener: TcpListener,
    limits: HttpLimits,
    render: F,
    /// Slot `i` is the connection of `Token(i)`.
    conns: Vec<Option<Conn>>,
    scratch: Vec<u8>,
    accept: Accept,
}

impl<F: Fn() -> String> Endpoint<F> {
    fn run(mut self, mut poll: Poll, stop: &AtomicBool) {
        let mut events = Events::with_capacity(EVENTS);
        while !stop.load(Ordering::Relaxed) {
            let timeout = if self.accept == Accept::Pending {
                Duration::ZERO
            } else {
                self.conns
                    .iter()
                    .flatten()
                    .map(|c| c.deadline)
                    .min()
                    .map_or(STOP_CHECK, |d| {
                        d.saturating_duration_since(Instant::now()).min(STOP_CHECK)
                    })
            };
            if let Err(e) = poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::warn!(error = %e, "metrics endpoint: poll failed");
                    std::thread::sleep(STOP_CHECK);
                }
                continue;
            }
            let now = Instant::now();
            for event in &events {
                match event.token() {
                    LISTENER => self.accept = Accept::Pending,
                    Token(i) => self.drive(i, poll.registry(), now),
                }
            }
            if self.accept != Accept::Idle {
                self.accept_batch(poll.registry(), now);
            }
            self.expire(poll.registry(), Instant::now());
        }
    }

    /// Accepts up to [`ACCEPT_BOUND`] connections.
    fn accept_batch(&mut self, registry: &Registry, now: Instant) {
        self.accept = Accept::Pending;
        for _ in 0..ACCEPT_BOUND {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream, registry, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept = Accept::Idle;
                    return;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "metrics endpoint: accept failed");
                    self.accept = Accept::Retry;
                    return;
                }
            }
        }
    }

    /// Gives `stream` a free slot, or answers 503 and closes it.
    fn admit(&mut self, mut stream: TcpStream, registry: &Registry, now: Instant) {
        let Some(i) = self.conns.iter().position(Option::is_none) else {
            // One non-blocking write into an empty send buffer: a short
            // reply fits whole. Dropping the stream closes it.
            let _ = stream.write(&encode(Reply::error(Status::Busy), &self.render));
            return;
        };
        // The registration reports input that is already there.
        if registry
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_ok()
        {
            self.conns[i] = Some(Conn {
                stream,
                deadline: now + self.limits.header_timeout,
                phase: Phase::Head(Vec::new()),
            });
        }
    }

    /// Moves connection `i` on after a readiness event.
    fn drive(&mut self, i: usize, registry: &Registry, now: Instant) {
        // A stale event for a slot closed earlier in this batch finds None.
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return;
        };
        if !conn.advance(&self.limits, &self.render, &mut self.scratch, now) {
            self.close(i, registry);
        }
    }

    /// Closes every connection past its deadline; one still sending its
    /// head gets one try at a 408 first.
    fn expire(&mut self, registry: &Registry, now: Instant) {
        for i in 0..self.conns.len() {
            let Some(conn) = &mut self.conns[i] else {
                continue;
            };
            if conn.deadline > now {
                continue;
            }
            if matches!(conn.phase, Phase::Head(_)) {
                // Nothing was written yet: the short reply fits whole.
                let _ = conn
                    .stream
                    .write(&encode(Reply::error(Status::RequestTimeout), &self.render));
            }
            self.close(i, registry);
        }
    }

    fn close(&mut self, i: usize, registry: &Registry) {
        if let Some(mut conn) = self.conns.get_mut(i).and_then(Option::take) {
            let _ = registry.deregister(&mut conn.stream);
        }
    }
}

/// One connection.
struct Conn {
    stream: TcpStream,
    /// When the current phase is given up.
    deadline: Instant,
    phase: Phase,
}

/// Where a connection is; each phase holds only what it needs.
enum Phase {
    /// Reading the request head: the bytes so far.
    Head(Vec<u8>),
    /// Writing the response: the bytes and how many are sent.
    Respond { out: Vec<u8>, sent: usize },
    /// Response sent and our side shut: input discarded so far.
    Linger { discarded: usize },
}

/// How far an I/O step got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// The socket would block: wait for its next event.
    Pending,
    /// This phase is done.
    Done,
    /// The peer is gone or the connection failed: close.
    Closed,
}

impl Conn {
    /// Runs the connection's phases as far as its socket allows; false when
    /// it should be closed.
    fn advance<F: Fn() -> String>(
        &mut self,
        limits: &HttpLimits,
        render: &F,
        scratch: &mut [u8],
        now: Instant,
    ) -> bool {
        loop {
            let (next, deadline) = match &mut self.phase {
                Phase::Head(head) => {
                    let reply = match read_head(&mut self.stream, head, limits.max_head, scratch) {
                        HeadRead::Pending => return true,
                        HeadRead::Closed => return false,
                        HeadRead::Complete(len) => route(&head[..len]),
                        HeadRead::TooLarge => Reply::error(Status::HeadTooLarge),
                    };
                    let out = encode(reply, render);
                    (
                        Phase::Respond { out, sent: 0 },
                        now + limits.response_timeout,
                    )
                }
                Phase::Respond { out, sent } => match write_out(&mut self.stream, out, sent) {
                    Progress::Pending => return true,
                    Progress::Closed => return false,
                    Progress::Done => {
                        // FIN after the response: the peer's read ends.
                        let _ = self.stream.shutdown(Shutdown::Write);
                        (Phase::Linger { discarded: 0 }, now + LINGER)
                    }
                },
                Phase::Linger { discarded } => {
                    return discard(&mut self.stream, discarded, scratch) == Progress::Pending;
                }
            };
            self.phase = next;
            self.deadline = deadline;
        }
    }
}

/// What reading a head got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadRead {
    Pending,
    /// The head is the first this many bytes of the buffer.
    Complete(usize),
    /// `max_head` bytes and no end of head.
    TooLarge,
    Closed,
}

/// Reads into `head` until the end of the head, `max` bytes, EOF or
/// `WouldBlock`. Never reads past `max`: what follows a head is not ours to
/// take until the response is sent.
fn read_head(
    stream: &mut TcpStream,
    head: &mut Vec<u8>,
    max: usize,
    scratch: &mut [u8],
) -> HeadRead {
    loop {
        let room = max.saturating_sub(head.len()).min(scratch.len());
        if room == 0 {
            return HeadRead::TooLarge;
        }
        match stream.read(&mut scratch[..room]) {
            Ok(0) => return HeadRead::Closed,
            Ok(n) => {
                // The end may straddle the previous read.
                let from = head.len().saturating_sub(3);
                head.extend_from_slice(&scratch[..n]);
                if let Some(at) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
                    return HeadRead::Complete(from + at + 4);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HeadRead::Pending,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return HeadRead::Closed,
        }
    }
}

/// Writes `out[*sent..]` as far as the socket takes it.
fn write_out(stream: &mut TcpStream, out: &[u8], sent: &mut usize) -> Progress {
    while let Some(rest) = out.get(*sent..).filter(|r| !r.is_empty()) {
        match stream.write(rest) {
            Ok(0) => return Progress::Closed,
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Progress::Closed,
        }
    }
    Progress::Done
}

/// Reads and drops input until EOF, [`LINGER_BYTES`] or `WouldBlock`.
fn discard(stream: &mut TcpStream, discarded: &mut usize, scratch: &mut [u8]) -> Progress {
    loop {
        match stream.read(scratch) {
            Ok(0) => return Progress::Done,
            Ok(n) => {
                *discarded += n;
                if *discarded > LINGER_BYTES {
                    return Progress::Done;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Progress::Closed,
        }
    }
}

/// The statuses the endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    HeadTooLarge,
    Busy,
    VersionNotSupported,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Self::Ok => "200 OK",
            Self::BadRequest => "400 Bad Request",
            Self::NotFound => "404 Not Found",
            Self::MethodNotAllowed => "405 Method Not Allowed",
            Self::RequestTimeout => "408 Request Timeout",
            Self::HeadTooLarge => "431 Request Header Fields Too Large",
            Self::Busy => "503 Service Unavailable",
            Self::VersionNotSupported => "505 HTTP Version Not Supported",
        }
    }

    /// The body of an error reply (a 200's body is the metrics).
    fn message(self) -> &'static str {
        match self {
            Self::Ok => "",
            Self::BadRequest => "malformed request\n",
            Self::NotFound | Self::MethodNotAllowed => "try GET /metrics\n",
            Self::RequestTimeout => "request head not received in time\n",
            Self::HeadTooLarge => "request head too large\n",
            Self::Busy => "too many connections to the metrics endpoint\n",
            Self::VersionNotSupported => "HTTP/1.x only\n",
        }
    }
}

/// The answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reply {
    status: Status,
    /// HEAD: the headers of the GET answer without its body.
    head_only: bool,
}

impl Reply {
    fn error(status: Status) -> Self {
        Self {
            status,
            head_only: false,
        }
    }
}

/// The request methods the endpoint tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

/// The answer to the request head `head` (CRLF CRLF included): metrics for
/// GET or HEAD of `/metrics` (or `/`, as the endpoint always served).
fn route(head: &[u8]) -> Reply {
    match parse_head(head) {
        Err(status) => Reply::error(status),
        Ok((Method::Other, _)) => Reply::error(Status::MethodNotAllowed),
        Ok((method, path)) => Reply {
            status: if path == b"/metrics" || path == b"/" {
                Status::Ok
            } else {
                Status::NotFound
            },
            head_only: method == Method::Head,
        },
    }
}

/// The method and path (query dropped) of a request head ending in
/// CRLF CRLF, or the status that rejects it. Strict, after RFC 9112: single
/// spaces in the request line, a token method, an origin-form target of
/// visible ASCII, HTTP/1.x, every line ended by CRLF, every header a token
/// name, a colon right after it (no space: §5.1) and no obsolete line
/// folding. Header values are not looked at further.
fn parse_head(head: &[u8]) -> Result<(Method, &[u8]), Status> {
    // Drop the last "\n\r\n": every line then ends in the "\r" of its CRLF,
    // and a bare LF leaves a line that does not.
    let head = head.strip_suffix(b"\n\r\n").ok_or(Status::BadRequest)?;
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r"));
    let request_line = lines.next().flatten().ok_or(Status::BadRequest)?;
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::BadRequest);
    };
    if !is_token(method)
        || target.first() != Some(&b'/')
        || !target.iter().all(u8::is_ascii_graphic)
    {
        return Err(Status::BadRequest);
    }
    match version {
        b"HTTP/1.0" | b"HTTP/1.1" => {}
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(Status::VersionNotSupported);
        }
        _ => return Err(Status::BadRequest),
    }
    for line in lines {
        let line = line.ok_or(Status::BadRequest)?;
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(Status::BadRequest)?;
        let (name, value) = line.split_at(colon);
        if !is_token(name) || value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(Status::BadRequest);
        }
    }
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => Method::Other,
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or(target);
    Ok((method, path))
}

/// Whether `s` is an RFC 9110 token (a method or a header name).
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The bytes of `reply`: status line, headers, `Connection: close`, and the
/// body unless `head_only` (the metrics from `render` for a 200).
fn encode<F: Fn() -> String>(reply: Reply, render: &F) -> Vec<u8> {
    let (body, content_type): (Cow<'static, str>, _) = if reply.status == Status::Ok {
        (render().into(), "text/plain; version=0.0.4")
    } else {
        (reply.status.message().into(), "text/plain; charset=utf-8")
    };
    let allow = if reply.status == Status::MethodNotAllowed {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}\
         Connection: close\r\n\r\n",
        reply.status.line(),
        body.len()
    )
    .into_bytes();
    if !reply.head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(head: &str) -> (Status, bool) {
        let r = route(head.as_bytes());
        (r.status, r.head_only)
    }

    #[test]
    fn routes_by_method_and_path() {
        let ok = (Status::Ok, false);
        assert_eq!(status("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), ok);
        assert_eq!(status("GET /metrics HTTP/1.0\r\n\r\n"), ok);
        assert_eq!(status("GET /metrics?name[]=x HTTP/1.1\r\n\r\n"), ok);
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), ok);
        assert_eq!(status("HEAD /metrics HTTP/1.1\r\n\r\n"), (Status::Ok, true));
        assert_eq!(status("GET /nope HTTP/1.1\r\n\r\n").0, Status::NotFound);
        assert_eq!(
            status("HEAD /metricsx HTTP/1.1\r\n\r\n"),
            (Status::NotFound, true)
        );
        assert_eq!(status("GET /metrics/ HTTP/1.1\r\n\r\n").0, Status::NotFound);
        for m in ["POST", "PUT", "DELETE", "get", "OPTIONS"] {
            let head = format!("{m} /metrics HTTP/1.1\r\n\r\n");
            assert_eq!(status(&head).0, Status::MethodNotAllowed, "{m}");
        }
        assert_eq!(
            status("GET /metrics HTTP/2.0\r\n\r\n").0,
            Status::VersionNotSupported
        );
    }

    #[test]
    fn rejects_malformed_heads() {
        for head in [
            "GET /metrics\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1 \r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET http://x/metrics HTTP/1.1\r\n\r\n",
            "GET /me\x01trics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\nHost: x\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: x\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n: x\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: x\ry\r\n\r\n",
            "GET /metrics FTP/1.1\r\n\r\n",
            "\r\nGET /metrics HTTP/1.1\r\n\r\n",
            "\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n",
        ] {
            assert_eq!(status(head).0, Status::BadRequest, "{head:?}");
        }
    }

    #[test]
    fn encodes_length_close_and_head_without_body() {
        let render = || "warpwire_up 1\n".to_owned();
        let get =
            String::from_utf8(encode(route(b"GET /metrics HTTP/1.1\r\n\r\n"), &render)).unwrap();
        assert_eq!(
            get,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
             Content-Length: 14\r\nConnection: close\r\n\r\nwarpwire_up 1\n"
        );
        let head =
            String::from_utf8(encode(route(b"HEAD /metrics HTTP/1.1\r\n\r\n"), &render)).unwrap();
        assert!(
            get.starts_with(&head) && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let post = String::from_utf8(encode(route(b"POST / HTTP/1.1\r\n\r\n"), &render)).unwrap();
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
    }

    /// A peer that asks for a large response and never reads it holds up
    /// no one, and is dropped at the response deadline instead of being
    /// sent the rest.
    #[test]
    fn a_peer_that_never_reads_blocks_no_one() {
        use std::sync::atomic::AtomicUsize;
        const BIG: usize = 16 << 20;
        let calls = Arc::new(AtomicUsize::new(0));
        let render = {
            let calls = calls.clone();
            // The first scrape is far larger than the socket buffers hold.
            move || match calls.fetch_add(1, Ordering::Relaxed) {
                0 => "x".repeat(BIG),
                _ => "small\n".to_owned(),
            }
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let limits = HttpLimits {
            response_timeout: Duration::from_millis(500),
            ..HttpLimits::default()
        };
        let h = spawn(listener, limits, stop.clone(), render).unwrap();

        let mut stuck = std::net::TcpStream::connect(addr).unwrap();
        stuck.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        while calls.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = Instant::now();
        let mut other = std::net::TcpStream::connect(addr).unwrap();
        other.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut text = String::new();
        other.read_to_string(&mut text).unwrap();
        let took = t.elapsed();
        assert!(took < Duration::from_millis(300), "{took:?}");
        assert!(
            text.starts_with("HTTP/1.1 200 OK") && text.ends_with("\r\n\r\nsmall\n"),
            "{text}"
        );

        // Past the deadline the stuck peer's connection ends short of the body.
        std::thread::sleep(Duration::from_millis(700));
        stuck
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = 0;
        let mut buf = vec![0; 1 << 16];
        loop {
            match stuck.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("stuck peer: {e} after {got} bytes"),
            }
        }
        assert!(got < BIG, "{got}");
        eprintln!(
            "scrape beside a non-reader took {took:?}; the non-reader got {got} of {BIG} bytes"
        );
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
    }
}
