//! The protocol seam: what an application protocol implements so that the
//! engine's generic workers serve it.
//!
//! ```text
//!   worker (generic)                              protocol (sans-IO)
//!   ───────────────                              ──────────────────
//!   Accepted ──────────────► open(info, ctx)  ──► per-connection state
//!   Readable: recv into ───► read_buf / commit     (its own parser's buffer)
//!   loop while room ───────► step(ctx) ──────────► one request: replies into
//!     (output cap, pause,                           ctx.out(), ctx.publish(),
//!      close, read budget)                          ctx.close(), eligibility
//!   idle, busy, budget ────► refuse(why, ctx) ───► the protocol's own error
//!   ctx.offload(work) ─────► application workers ─► complete(outcome, ctx)
//!   Closed ────────────────► closed(reason)
//!   every 100 ms ──────────► housekeeping(now)
//! ```
//!
//! The worker owns the transport, the connection limit, the read budget,
//! pausing on a full output queue, flushing, half-close, the idle timeout,
//! the server-wide input budget, broadcast fan-out with backpressure,
//! metrics of connections, and shutdown. A protocol owns parsing, dispatch
//! and its error replies, and never sees a socket or a clock: time comes
//! in as `ctx.now`. One `Protocol` value is shared by every worker; each
//! worker keeps the protocol's per-worker state (`Local`: rate limiters,
//! histograms) and one `Conn` per connection.
//!
//! Anything that may block goes to the application workers through
//! `ctx.offload`; the connection waits for it, others go on.
//!
//! Several protocols on several listen addresses share the same workers:
//! [`crate::Both`] serves two protocols (nest it for more), each connection
//! routed by the protocol its listener was configured with
//! ([`ConnInfo::protocol`]), with no `dyn` on the data path.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use warpwire_transport::{CloseReason, ConnId, Transport, TransportError};

use crate::metrics::WorkerCounters;
pub use crate::pool::{Done, Outcome, Work};

/// Who a new connection is.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The transport's id of the connection.
    pub conn: ConnId,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The listen address it came in on.
    pub listener: SocketAddr,
    /// The protocol that listener serves (one of [`Protocol::names`]).
    pub protocol: &'static str,
    /// The worker serving it.
    pub worker: usize,
    /// The peer's identity as a layer below established it (the subject
    /// of a client certificate that mutual TLS verified): the protocol
    /// counts the connection as authenticated as this user.
    pub identity: Option<std::sync::Arc<str>>,
}

/// What `step` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Handled one whole request (or refused it with a reply); call again.
    Request,
    /// No whole request is buffered: more input is needed.
    NeedInput,
}

/// Why the engine refuses a connection or what it was sending; the
/// protocol answers with its own error (or nothing) and the engine closes
/// the connection after flushing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `max_connections` already.
    Busy {
        /// The limit.
        limit: usize,
    },
    /// No whole request for `after`.
    Idle {
        /// The idle timeout.
        after: Duration,
    },
    /// The application's [`Hooks::on_connect`] refused the connection.
    Rejected,
    /// The server-wide input budget is exceeded and this connection holds
    /// one of the largest partial requests; its input has been dropped.
    InputBudget {
        /// The budget, bytes.
        budget: usize,
        /// What this connection held, bytes.
        held: usize,
    },
}

/// What a connection does with a message another connection published
/// ([`Protocol::relay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// Send the published bytes as they are (shared, not copied).
    AsIs,
    /// Send what `relay` wrote into its `out` instead (a per-recipient
    /// encoding, e.g. RESP2 against RESP3 push messages).
    Rewritten,
    /// Not for this connection (e.g. another channel).
    Skip,
}

/// How much input a connection's parser holds, for the server-wide budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputHeld {
    /// Bytes the parser has allocated.
    pub allocated: usize,
    /// Whether part of a request is buffered (refusable under pressure).
    pub partial: bool,
}

/// The engine's side of a protocol call: the connection's reply buffer
/// and what the protocol may ask of the worker.
pub struct Ctx<'a> {
    /// Now, as the worker read it for this batch.
    pub now: Instant,
    /// The worker serving the connection.
    pub worker: usize,
    pub(crate) out: &'a mut BytesMut,
    pub(crate) close: bool,
    pub(crate) eligible: Option<bool>,
    pub(crate) offload: Option<Work>,
    pub(crate) host: &'a mut dyn Host,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("worker", &self.worker)
            .field("queued", &self.out.len())
            .field("close", &self.close)
            .finish()
    }
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        now: Instant,
        worker: usize,
        out: &'a mut BytesMut,
        host: &'a mut dyn Host,
    ) -> Self {
        Self {
            now,
            worker,
            out,
            close: false,
            eligible: None,
            offload: None,
            host,
        }
    }

    /// Where replies go: encode them here, in order. The engine sends them
    /// before any broadcast relay queued for the connection.
    pub fn out(&mut self) -> &mut BytesMut {
        self.out
    }

    /// Close the connection once what is queued has been sent.
    pub fn close(&mut self) {
        self.close = true;
    }

    /// Whether the connection receives what others publish (for example,
    /// once it has authenticated). Connections start not eligible unless
    /// `open` says so.
    pub fn set_eligible(&mut self, eligible: bool) {
        self.eligible = Some(eligible);
    }

    /// Relays `bytes` (one encoded message) to every other eligible
    /// connection on every worker, each through its protocol's
    /// [`Protocol::relay`]; returns how many it reached: on this worker
    /// after each recipient's `relay` decision, on the others their eligible
    /// counts as of now (so a protocol whose `relay` skips recipients keeps
    /// its own count where an exact one matters). The sender is slowed when
    /// the readers fall behind.
    pub fn publish(&mut self, bytes: Bytes) -> u64 {
        self.host.publish(bytes)
    }

    /// Runs `work` on an application worker, off this I/O thread (for
    /// anything that may block). The connection waits meanwhile: no more of
    /// its requests are stepped, and reading from it pauses, until
    /// [`Protocol::complete`] has the result; so replies keep request
    /// order. One job per step; a second call in the same step replaces
    /// the first.
    pub fn offload(&mut self, work: impl FnOnce() -> Done + Send + 'static) {
        self.offload = Some(Box::new(work));
    }

    /// Reports a protocol error of this connection (the protocol answers
    /// it itself): the application's [`Hooks::on_protocol_error`] hears of
    /// it.
    pub fn protocol_error(&mut self, error: &str) {
        self.host.protocol_error(error);
    }

    /// This worker's counters, for the protocol's own accounting (frames
    /// in and out, errors, rate-limited requests).
    pub fn counters(&self) -> &WorkerCounters {
        self.host.counters()
    }
}

/// What a `Ctx` reaches in the worker (implemented by the engine).
pub(crate) trait Host {
    fn publish(&mut self, bytes: Bytes) -> u64;
    fn counters(&self) -> &WorkerCounters;
    fn protocol_error(&mut self, error: &str);
}

/// What an application using the engine as a library learns of, whatever
/// the protocol: connections arriving (it may refuse them), leaving, and
/// breaking the protocol. Called on the I/O workers: must not block.
pub trait Hooks: Send + Sync + 'static {
    /// A connection was accepted; `false` refuses it (the protocol's
    /// refusal, [`Refusal::Rejected`], then a close).
    fn on_connect(&self, _info: &ConnInfo) -> bool {
        true
    }

    /// A connection ended (`None`: dropped at shutdown).
    fn on_disconnect(&self, _info: &ConnInfo, _reason: Option<CloseReason>) {}

    /// A connection broke the protocol (the protocol answered it).
    fn on_protocol_error(&self, _info: &ConnInfo, _error: &str) {}
}

/// No hooks.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// An application protocol, server side, sans-IO. See the module docs.
pub trait Protocol: Send + Sync + 'static {
    /// Per-connection state.
    type Conn: Send + 'static;
    /// Per-worker state (lives on the worker's thread).
    type Local: 'static;

    /// Short name for logs and configuration (`warpwire`, `echo`).
    fn name(&self) -> &'static str;

    /// Every protocol this value serves, by the name a listener is
    /// configured with; the first is the one `ServerConfig::listen` serves.
    /// One protocol: its own name. [`crate::Both`] lists both sides'.
    fn names(&self) -> Vec<&'static str> {
        vec![self.name()]
    }

    /// Worker `worker` of `workers` starts.
    fn local(&self, worker: usize, workers: usize, now: Instant) -> Self::Local;

    /// A connection was accepted. May write a greeting or, by calling
    /// `ctx.close()`, refuse it (after what it wrote is sent).
    fn open(&self, local: &mut Self::Local, info: &ConnInfo, ctx: &mut Ctx<'_>) -> Self::Conn;

    /// Where the next received bytes go (empty: the parser is full or
    /// failed; the engine stops reading until `step` makes room).
    fn read_buf<'c>(&self, conn: &'c mut Self::Conn) -> &'c mut [u8];

    /// `n` bytes of the last `read_buf` were received.
    fn commit(&self, conn: &mut Self::Conn, n: usize);

    /// One receive from `t` into the connection's parser: `None` when the
    /// parser has no room (full or failed) and nothing was read, else what
    /// the transport returned (bytes received, counted in the parser).
    ///
    /// The provided version receives into [`Protocol::read_buf`] and
    /// commits. A parser whose buffer is a `BytesMut` overrides it to use
    /// [`Transport::recv_buf`], which appends without zeroing the region
    /// first.
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

    /// Handles at most one whole buffered request.
    fn step(&self, local: &mut Self::Local, conn: &mut Self::Conn, ctx: &mut Ctx<'_>) -> Step;

    /// The engine refuses the connection (see [`Refusal`]): write the
    /// protocol's error, if any. The engine closes after flushing.
    fn refuse(&self, conn: &mut Self::Conn, why: Refusal, ctx: &mut Ctx<'_>);

    /// Input held by the parser.
    fn input_held(&self, conn: &Self::Conn) -> InputHeld;

    /// Drops everything the parser holds (the input budget refused it).
    fn drop_input(&self, conn: &mut Self::Conn);

    /// The connection is gone (closed by either side, reset, or dropped at
    /// shutdown with `reason` `None`).
    fn closed(
        &self,
        local: &mut Self::Local,
        conn: Self::Conn,
        info: &ConnInfo,
        reason: Option<CloseReason>,
    );

    /// A job of [`Ctx::offload`] finished (`Err`: it panicked, with the
    /// message): write its reply. Called on the connection's I/O worker.
    fn complete(
        &self,
        _local: &mut Self::Local,
        _conn: &mut Self::Conn,
        _outcome: Outcome,
        _ctx: &mut Ctx<'_>,
    ) {
    }

    /// Every 100 ms, and once more when the worker stops.
    fn housekeeping(&self, _local: &mut Self::Local, _now: Instant) {}

    /// Whether the connection is waiting for what others publish (a
    /// subscriber) rather than idle: the idle timeout does not close it.
    fn idle_exempt(&self, _conn: &Self::Conn) -> bool {
        false
    }

    /// A message another connection published ([`Ctx::publish`]) reaches
    /// this eligible connection: deliver it as is (the default, zero-copy),
    /// rewrite it for this connection into `out`, or skip it. Called on the
    /// connection's I/O worker; must be cheap (it runs once per recipient).
    fn relay(&self, _conn: &mut Self::Conn, _msg: &Bytes, _out: &mut BytesMut) -> Relay {
        Relay::AsIs
    }
}
