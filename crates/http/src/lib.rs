//! # warpwire-http: HTTP/1.1 served by the warpwire engine
//!
//! An [`engine::Protocol`](warpwire_engine::Protocol): the engine's
//! generic workers own the transport (kernel TCP, io_uring, the userspace
//! stack over AF_XDP or DPDK, RDMA), connection limits, backpressure,
//! idle timeouts and shutdown; this crate owns parsing (httparse), body
//! framing, routing and responses. Sans-IO like the rest of the seam: bytes
//! in, bytes out, time passed in.
//!
//! ```text
//!  recv ─► input buffer ─► httparse head ─► framing (parse.rs):
//!            ▲   (in place)      │            none | Content-Length | chunked (decoded in place)
//!            │                   │ 400/414/431/505, close
//!            │                   ▼
//!            │            route: /ping /echo /stats /metrics, user routes ─► 200/404/405
//!            │                   ▼
//!            └── next request ◄─ response (Date cached per second, Content-Length,
//!                (pipelined)      Connection) into the engine's output, in request order
//! ```
//!
//! Behaviour a client can rely on:
//! - Keep-alive (HTTP/1.1 by default, HTTP/1.0 with `Connection:
//!   keep-alive`), pipelining with responses in request order, HEAD, and
//!   `Expect: 100-continue` (answered once the head is read).
//! - Request bodies by Content-Length or chunked, limited by
//!   [`HttpConfig::max_body`]. No request smuggling: conflicting or
//!   malformed framing is a 400 and a close (see `parse.rs`).
//! - Limits answered with their status and a close: 400 (malformed), 408
//!   (a request left unfinished for the server's idle timeout: slowloris),
//!   413, 414, 431, 505; 503 when the server is full.
//!
//! The gateway to the binary protocol: `POST /broadcast` relays its body
//! as a warpwire BROADCAST to every subscribed warpwire connection, and
//! `POST /app/{type}` calls the application handler registered for that
//! message type (on the application workers when it may block; the
//! connection's later requests wait, so responses keep request order).
//!
//! What this crate does not do: TLS (below it, later), HTTP/2, content
//! codings (`gzip, chunked` is a 501), or serving files.

#![forbid(unsafe_code)]

mod parse;
mod response;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use warpwire_engine::metrics::WorkerCounters;
use warpwire_engine::protocol::{Done, Outcome};
use warpwire_engine::{
    ConnInfo, Ctx, HandlerError, Handlers, InputBuffer, InputHeld, Metrics, Protocol, Refusal,
    SessionInfo, Step,
};
use warpwire_frame::{Frame, MessageType};
use warpwire_transport::CloseReason;

pub use response::Status;

use parse::{ChunkProgress, Chunked, Framing, HeadInfo};
use response::{DateCache, Persist};

/// Header fields per request before 431 (httparse parses into an array of
/// this size; 100 is nginx's order of magnitude and far above any browser).
pub const MAX_HEADERS: usize = 100;

use warpwire_engine::input::READ_CHUNK;

/// Limits of the HTTP server (`[http]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Longest request line (method, target, version) before 414.
    pub max_request_line: usize,
    /// Largest request head (request line and header fields) before 431;
    /// also bounds a chunked body's trailer section.
    pub max_head: usize,
    /// Largest request body, by Content-Length or chunked, before 413.
    pub max_body: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            // nginx's large_client_header_buffers: 8 KiB per line.
            max_request_line: 8 * 1024,
            max_head: 16 * 1024,
            // The binary protocol's default frame payload.
            max_body: 1 << 20,
        }
    }
}

/// A request as a route sees it.
#[derive(Debug)]
pub struct Request<'a> {
    /// The method (`GET`, `POST`, ...).
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query after `?`, if any.
    pub query: Option<&'a str>,
    /// Every header field, in order.
    pub headers: &'a [httparse::Header<'a>],
    /// The body (de-chunked).
    pub body: &'a [u8],
    /// The peer.
    pub peer: SocketAddr,
}

impl Request<'_> {
    /// The first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// What a route answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status.
    pub status: Status,
    /// The Content-Type, if any.
    pub content_type: Option<&'static str>,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// A response with a body of the given type.
    pub fn new(status: Status, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type: Some(content_type),
            body: body.into(),
        }
    }

    /// 200 with a `text/plain` body.
    pub fn text(body: impl Into<Bytes>) -> Self {
        Self::new(Status::OK, "text/plain", body)
    }
}

/// A route's handler. Runs on the I/O worker: it must not block.
pub type Handler = dyn Fn(&Request<'_>) -> Response + Send + Sync;

/// The HTTP/1.1 protocol: built-in routes, the application's routes, and
/// the limits. See the crate docs.
pub struct Http {
    config: HttpConfig,
    metrics: Arc<Metrics>,
    /// The binary protocol's application handlers, for `POST /app/{type}`.
    handlers: Option<Arc<Handlers>>,
    /// path → (method, handler); HEAD is served by a GET route.
    routes: HashMap<String, Vec<(String, Arc<Handler>)>>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("config", &self.config)
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Per worker: the Date header's text.
#[derive(Debug)]
pub struct HttpLocal {
    date: DateCache,
}

/// Where a connection's parser is.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a whole head.
    Head,
    /// The head (`head_len` bytes from `start`) is read; waiting for the body.
    Body {
        head_len: usize,
        info: HeadInfo,
        chunked: Option<Chunked>,
    },
}

/// A connection: its input buffer and parser state.
#[derive(Debug)]
pub struct HttpConn {
    /// Input not yet consumed. Allocated at the first read.
    input: InputBuffer,
    phase: Phase,
    /// `100 Continue` was sent for the current request.
    continued: bool,
    /// An error or a close was answered: the rest of the input is ignored.
    done: bool,
    peer: SocketAddr,
    /// The `from` of its broadcasts, and the session handlers see.
    session_id: [u8; 16],
    /// How to answer the application job that is out, when it is back.
    pending: Option<Persist>,
}

impl Http {
    /// The protocol with its built-in routes; `metrics` answers `/stats`
    /// and `/metrics`.
    pub fn new(config: HttpConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            metrics,
            handlers: None,
            routes: HashMap::new(),
        }
    }

    /// Serves `POST /app/{type}` with these handlers (the warpwire
    /// server's, so HTTP clients reach the same application).
    pub fn with_handlers(mut self, handlers: Arc<Handlers>) -> Self {
        self.handlers = Some(handlers);
        self
    }

    /// Adds a route (an exact path; a built-in path cannot be replaced).
    /// The handler runs on the I/O worker and must not block.
    pub fn route(
        &mut self,
        method: &str,
        path: &str,
        handler: impl Fn(&Request<'_>) -> Response + Send + Sync + 'static,
    ) -> &mut Self {
        self.routes
            .entry(path.to_owned())
            .or_default()
            .push((method.to_ascii_uppercase(), Arc::new(handler)));
        self
    }

    /// The limit a connection's buffer may grow to for its current request.
    fn request_cap(&self, c: &HttpConn) -> usize {
        match c.phase {
            Phase::Head => self.config.max_head + 1,
            Phase::Body {
                head_len,
                info:
                    HeadInfo {
                        framing: Framing::Length(n),
                        ..
                    },
                ..
            } => head_len + n,
            Phase::Body { head_len, .. } => {
                head_len + self.config.max_body + self.config.max_head + READ_CHUNK
            }
        }
    }

    /// Answers `status`, closes after it, and ignores what follows.
    fn fail(
        &self,
        local: &mut HttpLocal,
        c: &mut HttpConn,
        ctx: &mut Ctx<'_>,
        status: Status,
    ) -> Step {
        let date = local.date.get(ctx.now);
        let before = ctx.out().len();
        response::error(ctx.out(), date, status);
        let n = (ctx.out().len() - before) as u64;
        let counters = ctx.counters();
        WorkerCounters::add(&counters.errors, 1);
        WorkerCounters::add(&counters.messages_out, 1);
        WorkerCounters::add(&counters.bytes_out, n);
        ctx.protocol_error(status.1);
        ctx.close();
        c.done = true;
        Step::Request
    }

    fn consume(c: &mut HttpConn, n: usize) {
        c.input.consume(n);
        c.phase = Phase::Head;
        c.continued = false;
    }

    fn send_continue(c: &mut HttpConn, info: &HeadInfo, ctx: &mut Ctx<'_>) {
        if info.expect_continue && !c.continued {
            ctx.out()
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            c.continued = true;
        }
    }

    fn head(&self, local: &mut HttpLocal, c: &mut HttpConn, ctx: &mut Ctx<'_>) -> Step {
        // RFC 9112 §2.2: empty lines before a request line are ignored.
        let blank = c
            .input
            .unread()
            .iter()
            .take_while(|&&b| matches!(b, b'\r' | b'\n'))
            .count();
        c.input.consume(blank);
        if c.input.is_empty() {
            return Step::NeedInput;
        }
        let cfg = &self.config;
        let data = c.input.unread();
        let line = data.iter().position(|&b| b == b'\n');
        if line.unwrap_or(data.len()) > cfg.max_request_line {
            return self.fail(local, c, ctx, Status::URI_TOO_LONG);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let n = match req.parse(data) {
            Ok(httparse::Status::Partial) => {
                if data.len() > cfg.max_head {
                    return self.fail(local, c, ctx, Status::HEADERS_TOO_LARGE);
                }
                return Step::NeedInput;
            }
            Ok(httparse::Status::Complete(n)) if n > cfg.max_head => {
                return self.fail(local, c, ctx, Status::HEADERS_TOO_LARGE);
            }
            Ok(httparse::Status::Complete(n)) => n,
            Err(httparse::Error::TooManyHeaders) => {
                return self.fail(local, c, ctx, Status::HEADERS_TOO_LARGE);
            }
            // httparse says Version for any bad third token ("G ET / HTTP/1.1"
            // too): 505 only for a well-formed line naming another version.
            Err(httparse::Error::Version) if names_a_version(data) => {
                return self.fail(local, c, ctx, Status::VERSION_NOT_SUPPORTED);
            }
            Err(_) => return self.fail(local, c, ctx, Status::BAD_REQUEST),
        };
        let info = match parse::head_info(req.version.unwrap_or(1), req.headers, cfg.max_body) {
            Ok(i) => i,
            Err(s) => return self.fail(local, c, ctx, s),
        };
        match info.framing {
            Framing::None => {
                let keep = self.dispatch(
                    local,
                    ctx,
                    &req,
                    &[],
                    info,
                    (c.peer, c.session_id, &mut c.pending),
                    n,
                );
                Self::consume(c, n);
                self.after(c, ctx, keep)
            }
            Framing::Length(len) if data.len() >= n + len => {
                let keep = self.dispatch(
                    local,
                    ctx,
                    &req,
                    &data[n..n + len],
                    info,
                    (c.peer, c.session_id, &mut c.pending),
                    n + len,
                );
                Self::consume(c, n + len);
                self.after(c, ctx, keep)
            }
            Framing::Length(_) => {
                c.phase = Phase::Body {
                    head_len: n,
                    info,
                    chunked: None,
                };
                Self::send_continue(c, &info, ctx);
                Step::NeedInput
            }
            Framing::Chunked => {
                c.phase = Phase::Body {
                    head_len: n,
                    info,
                    chunked: Some(Chunked::new(n)),
                };
                Self::send_continue(c, &info, ctx);
                self.body(local, c, ctx)
            }
        }
    }

    fn body(&self, local: &mut HttpLocal, c: &mut HttpConn, ctx: &mut Ctx<'_>) -> Step {
        let Phase::Body {
            head_len,
            info,
            chunked,
        } = c.phase
        else {
            return Step::NeedInput;
        };
        let (body_start, body_end, used) = match chunked {
            None => {
                let Framing::Length(len) = info.framing else {
                    return Step::NeedInput;
                };
                if c.input.len() < head_len + len {
                    return Step::NeedInput;
                }
                (head_len, head_len + len, head_len + len)
            }
            Some(mut ch) => {
                let held = c.input.len();
                let progress = ch.advance(
                    c.input.unread_mut(),
                    held,
                    head_len,
                    self.config.max_body,
                    self.config.max_head,
                );
                c.phase = Phase::Body {
                    head_len,
                    info,
                    chunked: Some(ch),
                };
                match progress {
                    Err(s) => return self.fail(local, c, ctx, s),
                    Ok(ChunkProgress::More) => return Step::NeedInput,
                    Ok(ChunkProgress::Done) => (head_len, ch.body_end, ch.scan),
                }
            }
        };
        let data = &c.input.unread()[..used];
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        // The same bytes parsed whole before: they parse again.
        if !matches!(
            req.parse(&data[..head_len]),
            Ok(httparse::Status::Complete(_))
        ) {
            return self.fail(local, c, ctx, Status::INTERNAL);
        }
        let keep = self.dispatch(
            local,
            ctx,
            &req,
            &data[body_start..body_end],
            info,
            (c.peer, c.session_id, &mut c.pending),
            used,
        );
        Self::consume(c, used);
        self.after(c, ctx, keep)
    }

    fn after(&self, c: &mut HttpConn, ctx: &mut Ctx<'_>, keep: bool) -> Step {
        if !keep {
            ctx.close();
            c.done = true;
        }
        Step::Request
    }

    /// Routes one whole request and writes its response; whether the
    /// connection stays open.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        local: &mut HttpLocal,
        ctx: &mut Ctx<'_>,
        req: &httparse::Request<'_, '_>,
        body: &[u8],
        info: HeadInfo,
        (peer, session_id, pending): (SocketAddr, [u8; 16], &mut Option<Persist>),
        wire_len: usize,
    ) -> bool {
        let method = req.method.unwrap_or("");
        let target = req.path.unwrap_or("/");
        // Absolute form (`http://host/path`) is accepted (RFC 9112 §3.2.2).
        let target = match target.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => target,
        };
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let head_only = method == "HEAD";
        let request = Request {
            method,
            path,
            query,
            headers: req.headers,
            body,
            peer,
        };
        let persist = match (info.keep_alive, info.http10) {
            (false, _) => Persist::Close,
            (true, true) => Persist::Keep10,
            (true, false) => Persist::Keep,
        };
        let counters = ctx.counters();
        WorkerCounters::add(&counters.messages_in, 1);
        WorkerCounters::add(&counters.bytes_in, wire_len as u64);
        let (resp, allow) = match self.gateway(&request, session_id, ctx) {
            Gateway::Respond(resp) => (resp, None),
            Gateway::Offloaded => {
                *pending = Some(persist);
                return true;
            }
            Gateway::NotMine => self.route_of(&request),
        };
        self.respond(local, ctx, &resp, allow.as_deref(), head_only, persist);
        persist != Persist::Close
    }

    /// Writes a response and counts it.
    fn respond(
        &self,
        local: &mut HttpLocal,
        ctx: &mut Ctx<'_>,
        resp: &Response,
        allow: Option<&str>,
        head_only: bool,
        persist: Persist,
    ) {
        let date = local.date.get(ctx.now);
        let before = ctx.out().len();
        let extra: &[(&str, &str)] = match allow {
            Some(a) => &[("Allow", a)],
            None => &[],
        };
        response::write(
            ctx.out(),
            date,
            resp.status,
            resp.content_type,
            extra,
            &resp.body,
            head_only,
            persist,
        );
        let n = (ctx.out().len() - before) as u64;
        let counters = ctx.counters();
        WorkerCounters::add(&counters.messages_out, 1);
        WorkerCounters::add(&counters.bytes_out, n);
        if resp.status.0 >= 400 {
            WorkerCounters::add(&counters.errors, 1);
        }
    }

    /// `POST /broadcast` and `POST /app/{type}`: the way into the binary
    /// protocol's world.
    fn gateway(&self, r: &Request<'_>, session_id: [u8; 16], ctx: &mut Ctx<'_>) -> Gateway {
        let post = r.method == "POST";
        if r.path == "/broadcast" {
            if !post {
                return Gateway::NotMine;
            }
            let n = warpwire_engine::warpwire::broadcast(
                ctx,
                &session_id,
                Bytes::copy_from_slice(r.body),
            );
            let body = format!("{{\"recipients\":{n}}}\n");
            return Gateway::Respond(Response::new(Status::OK, "application/json", body));
        }
        let Some(t) = r.path.strip_prefix("/app/") else {
            return Gateway::NotMine;
        };
        if !post {
            return Gateway::NotMine;
        }
        let t = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => u8::from_str_radix(hex, 16).ok(),
            None => t.parse::<u8>().ok(),
        };
        let found = t.and_then(|t| Some((t, self.handlers.as_ref()?.app_handler(t)?)));
        let Some((t, (handler, blocking))) = found else {
            return Gateway::Respond(Response::new(
                Status::NOT_FOUND,
                "text/plain",
                "no handler for this type\n",
            ));
        };
        let frame = Frame::new(MessageType(t), 0, Bytes::copy_from_slice(r.body));
        let worker = ctx.worker;
        let call = move || -> Result<Option<Bytes>, HandlerError> {
            let session = SessionInfo {
                session_id: &session_id,
                user: None,
                worker,
            };
            handler.handle(&session, &frame)
        };
        if blocking {
            ctx.offload(move || -> Done { Box::new(call()) });
            Gateway::Offloaded
        } else {
            Gateway::Respond(app_response(call()))
        }
    }

    /// The response for a request, and the Allow header of a 405.
    fn route_of(&self, r: &Request<'_>) -> (Response, Option<String>) {
        let get = matches!(r.method, "GET" | "HEAD");
        let builtin: Option<(&str, Builtin)> = match r.path {
            "/ping" => Some(("GET, HEAD", |_, _| Response::text("pong\n"))),
            "/echo" => Some(("POST, PUT", |_, r| {
                let ct = match r.header("content-type") {
                    Some(b"text/plain") => "text/plain",
                    _ => "application/octet-stream",
                };
                Response::new(Status::OK, ct, Bytes::copy_from_slice(r.body))
            })),
            "/stats" => Some(("GET, HEAD", |h, _| {
                let s = h.metrics.totals();
                let json = serde_json::json!({
                    "connections": s.connections,
                    "messages_in": s.messages_in,
                    "messages_out": s.messages_out,
                    "bytes_in": s.bytes_in,
                    "bytes_out": s.bytes_out,
                    "errors": s.errors,
                    "uptime_s": s.uptime_s,
                    "transport": s.transport,
                });
                Response::new(Status::OK, "application/json", format!("{json}\n"))
            })),
            "/metrics" => Some(("GET, HEAD", |h, _| {
                Response::new(
                    Status::OK,
                    "text/plain; version=0.0.4",
                    h.metrics.render_prometheus(),
                )
            })),
            _ => None,
        };
        if let Some((allow, f)) = builtin {
            let ok = if allow.starts_with("GET") {
                get
            } else {
                matches!(r.method, "POST" | "PUT")
            };
            return if ok {
                (f(self, r), None)
            } else {
                (
                    Response::new(
                        Status::METHOD_NOT_ALLOWED,
                        "text/plain",
                        "405 Method Not Allowed\n",
                    ),
                    Some(allow.to_owned()),
                )
            };
        }
        let Some(routes) = self.routes.get(r.path) else {
            return (
                Response::new(Status::NOT_FOUND, "text/plain", "404 Not Found\n"),
                None,
            );
        };
        let want = if r.method == "HEAD" { "GET" } else { r.method };
        match routes.iter().find(|(m, _)| m == want || m == r.method) {
            Some((_, h)) => (h(r), None),
            None => {
                let mut allow: Vec<&str> = routes.iter().map(|(m, _)| m.as_str()).collect();
                if allow.contains(&"GET") {
                    allow.push("HEAD");
                }
                (
                    Response::new(
                        Status::METHOD_NOT_ALLOWED,
                        "text/plain",
                        "405 Method Not Allowed\n",
                    ),
                    Some(allow.join(", ")),
                )
            }
        }
    }
}

/// What the gateway did with a request.
enum Gateway {
    /// Answer this.
    Respond(Response),
    /// A job is on the application workers; `complete` answers.
    Offloaded,
    /// Not a gateway path: the routes answer.
    NotMine,
}

/// An application handler's result as a response.
fn app_response(r: Result<Option<Bytes>, HandlerError>) -> Response {
    match r {
        Ok(Some(body)) => Response::new(Status::OK, "application/octet-stream", body),
        Ok(None) => Response {
            status: Status::NO_CONTENT,
            content_type: None,
            body: Bytes::new(),
        },
        Err(e) => Response::new(Status::INTERNAL, "text/plain", format!("{}\n", e.message)),
    }
}

/// A built-in route.
type Builtin = fn(&Http, &Request<'_>) -> Response;

/// Whether the request line is `METHOD TARGET HTTP/d.d`.
fn names_a_version(data: &[u8]) -> bool {
    let line = data.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    matches!(parts.as_slice(), [m, t, v]
        if !m.is_empty() && !t.is_empty()
            && v.len() == 8 && v.starts_with(b"HTTP/")
            && v[5].is_ascii_digit() && v[6] == b'.' && v[7].is_ascii_digit())
}

impl Protocol for Http {
    type Conn = HttpConn;
    type Local = HttpLocal;

    fn name(&self) -> &'static str {
        "http"
    }

    fn local(&self, _: usize, _: usize, now: Instant) -> HttpLocal {
        HttpLocal {
            date: DateCache::new(now),
        }
    }

    fn open(&self, _: &mut HttpLocal, info: &ConnInfo, _: &mut Ctx<'_>) -> HttpConn {
        HttpConn {
            input: InputBuffer::new(),
            phase: Phase::Head,
            continued: false,
            done: false,
            peer: info.peer,
            session_id: {
                let mut id = [0u8; 16];
                rand::rng().fill_bytes(&mut id);
                id
            },
            pending: None,
        }
    }

    fn read_buf<'c>(&self, c: &'c mut HttpConn) -> &'c mut [u8] {
        if c.done {
            return &mut [];
        }
        // The current request's limit, and a chunk of the next one.
        let cap = self.request_cap(c) + READ_CHUNK;
        c.input.read_buf(0, cap)
    }

    fn commit(&self, c: &mut HttpConn, n: usize) {
        c.input.commit(n);
    }

    fn step(&self, local: &mut HttpLocal, c: &mut HttpConn, ctx: &mut Ctx<'_>) -> Step {
        if c.done {
            return Step::NeedInput;
        }
        match c.phase {
            Phase::Head => self.head(local, c, ctx),
            Phase::Body { .. } => self.body(local, c, ctx),
        }
    }

    fn refuse(&self, c: &mut HttpConn, why: Refusal, ctx: &mut Ctx<'_>) {
        let status = match why {
            Refusal::Busy { .. } | Refusal::InputBudget { .. } => Status::UNAVAILABLE,
            Refusal::Rejected => Status::FORBIDDEN,
            // A request left unfinished (slowloris) hears 408; an idle
            // keep-alive connection is closed without a word, so a client
            // racing its next request against the close is not confused.
            Refusal::Idle { .. }
                if !c.input.is_empty() || matches!(c.phase, Phase::Body { .. }) =>
            {
                Status::REQUEST_TIMEOUT
            }
            Refusal::Idle { .. } => {
                c.done = true;
                return;
            }
        };
        if !c.done {
            // The Date is not the worker's cached one here (no local
            // state in a refusal): format it from the engine's now.
            let now = ctx.now;
            let mut date = DateCache::new(now);
            response::error(ctx.out(), date.get(now), status);
            c.done = true;
        }
    }

    fn input_held(&self, c: &HttpConn) -> InputHeld {
        InputHeld {
            allocated: c.input.allocated(),
            partial: !c.input.is_empty(),
        }
    }

    fn drop_input(&self, c: &mut HttpConn) {
        c.input.clear();
        c.phase = Phase::Head;
    }

    fn closed(&self, _: &mut HttpLocal, _: HttpConn, _: &ConnInfo, _: Option<CloseReason>) {}

    fn complete(
        &self,
        local: &mut HttpLocal,
        c: &mut HttpConn,
        outcome: Outcome,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(persist) = c.pending.take() else {
            return;
        };
        let resp = match outcome {
            Ok(done) => match done.downcast::<Result<Option<Bytes>, HandlerError>>() {
                Ok(r) => app_response(*r),
                Err(_) => Response::new(Status::INTERNAL, "text/plain", "handler failed\n"),
            },
            // A panic: its message stays in the log, not on the wire.
            Err(_) => Response::new(Status::INTERNAL, "text/plain", "handler failed\n"),
        };
        self.respond(local, ctx, &resp, None, false, persist);
        if persist == Persist::Close {
            ctx.close();
            c.done = true;
        }
    }
}
