//! The client's I/O thread: owns the transport and the one connection.
//!
//! Generic over the transport `T` and the protocol `P`
//! ([`ClientHooks`]); no `dyn` on the request path.
//!
//! ```text
//!        callers                         I/O thread (this module)
//!  request() ──► Submit ──► [bounded channel] ──► pump: assign id, P::encode ──► out buffer ──► Transport::send
//!     │  (wake if sleeping)                          │ entries[id] = completer                    │ short write:
//!     ▼                                              │ deadlines.push(deadline, id)               ▼ wait Writable
//!     │                                              │ InOrder: order.push_back(id)
//!  Pending ◄── oneshot ◄── dispatch(Reply(to, r)) ◄── P::decode ◄── Transport::recv ◄── Readable
//!              P::reply_result  │ to = Id(id) | Oldest (order.pop_front())
//!                               └─ ServerInitiated(r) ─► P::answer_server, else subscribers
//!                                                        (bounded, drop newest when full)
//! ```
//!
//! Connection life cycle: `Connecting → (Handshaking →) Ready`, and on
//! loss `Backoff → Connecting ...` (or `Down` when reconnecting is off).
//! The handshake is the protocol's ([`ClientHooks::handshake`]; warpwire's
//! AUTH).
//!
//! Timeouts: with [`Correlation::ById`] a request that times out is
//! forgotten and its reply, if it comes, is counted late. With
//! [`Correlation::InOrder`] that reply would be taken for the next
//! request's, so a request timing out in flight resets the connection:
//! every other request in flight fails with [`ClientError::PipelineReset`]
//! (those past their own deadline by then with [`ClientError::Timeout`]),
//! and the client reconnects like after any loss. Requests not yet sent
//! wait for the new connection.
//! A request goes onto the wire when the connection is `Ready`, the output
//! buffer has room and fewer than `max_in_flight` requests are outstanding.
//! Until then it waits in a bounded local queue, where its deadline is
//! enforced, and once that is full, in the channel.

mod requests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use warpwire_transport::{CloseReason, ConnId, Event, Events, Transport, TransportError, Wake};

use crate::pending::Completer;
use crate::protocol::{ClientHooks, ClientProtocol, Correlation, Out};
use crate::timers::{Deadlines, IdMap};
use crate::{ClientConfig, ClientError};

/// Receive calls per connection per loop iteration: bounds the time spent
/// reading before deadlines, writes and new requests get a turn (quinn's
/// IO_LOOP_BOUND idea); 16 reads of 16 KiB drain a 256 KiB burst.
const READS_PER_ITERATION: usize = 16;

/// Longest sleep in `Transport::wait`, so a lost wake-up costs at most this.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// How long `close` waits for the transport to confirm the graceful close.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// State shared between the [`crate::GenericClient`] handle and its I/O
/// thread; `R` is the protocol's reply.
#[derive(Debug)]
pub(crate) struct Shared<R> {
    /// The I/O thread is about to sleep (or sleeps) in `Transport::wait`;
    /// a submitter that swaps it to false must wake the transport.
    pub(crate) sleeping: AtomicBool,
    /// Set by `close`/drop: the thread fails what is left and exits.
    pub(crate) shutdown: AtomicBool,
    /// The connection is up (and authenticated, if configured).
    pub(crate) connected: AtomicBool,
    /// Successful reconnections after the first connection.
    pub(crate) reconnects: AtomicU64,
    /// Server-initiated messages a full subscriber channel did not take.
    pub(crate) dropped_broadcasts: AtomicU64,
    /// Replies that arrived after their request had timed out or was dropped.
    pub(crate) late_replies: AtomicU64,
    /// Subscription channels. Locked only when a server-initiated frame
    /// arrives, never on the request path.
    pub(crate) subscribers: Mutex<Subscribers<R>>,
    /// Zero of the monotonic clock carried in PING bodies.
    pub(crate) epoch: Instant,
}

/// The subscription channels, and what arrived before the first one.
#[derive(Debug)]
pub(crate) struct Subscribers<R> {
    pub(crate) senders: Vec<Sender<R>>,
    /// Server-initiated frames that arrived before anyone subscribed (a
    /// broadcast between `connect` and `subscribe` is not lost): handed to
    /// the first subscriber, bounded like a subscription channel. `None`
    /// once someone has subscribed.
    pub(crate) early: Option<VecDeque<R>>,
}

impl<R> Default for Subscribers<R> {
    fn default() -> Self {
        Self {
            senders: Vec::new(),
            early: Some(VecDeque::new()),
        }
    }
}

impl<R> Shared<R> {
    pub(crate) fn new() -> Self {
        Self {
            sleeping: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            dropped_broadcasts: AtomicU64::new(0),
            late_replies: AtomicU64::new(0),
            subscribers: Mutex::new(Subscribers::default()),
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the epoch, for PING bodies.
    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// How a submission is completed; `R` is the protocol's reply.
#[derive(Debug)]
pub(crate) enum Done<R> {
    /// With the reply (or an error).
    Reply(Completer<R>),
    /// With the request_id, once encoded onto the connection.
    Written(Completer<u64>),
}

impl<R> Done<R> {
    pub(crate) fn fail_with(self, e: ClientError) {
        // A dropped receiver means the caller stopped waiting; nothing to do.
        match self {
            Self::Reply(tx) => {
                let _ = tx.send(Err(e));
            }
            Self::Written(tx) => {
                let _ = tx.send(Err(e));
            }
        }
    }

    fn abandoned(&self) -> bool {
        match self {
            Self::Reply(tx) => tx.is_closed(),
            Self::Written(tx) => tx.is_closed(),
        }
    }
}

/// A request on its way to the I/O thread.
pub(crate) struct Submit<P: ClientProtocol> {
    pub(crate) request: P::Request,
    pub(crate) deadline: Instant,
    pub(crate) done: Done<P::Reply>,
}

/// What an id in flight stands for.
enum Kind<R> {
    Reply(Completer<R>),
    Heartbeat,
    Handshake,
}

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Handshake under way.
    Connecting { conn: ConnId, deadline: Instant },
    /// The protocol's handshake (warpwire: AUTH) sent, its reply awaited.
    Handshaking { conn: ConnId, deadline: Instant },
    /// Requests flow.
    Ready { conn: ConnId },
    /// Waiting to reconnect.
    Backoff { retry_at: Instant },
    /// Lost and not reconnecting: everything fails with Disconnected.
    Down,
}

/// Why the connection went away; `E` is the protocol's decode error.
#[derive(Debug)]
enum Lost<E> {
    Closed(CloseReason),
    Decode(E),
    Io(TransportError),
    ConnectTimeout,
    HandshakeRejected,
    HeartbeatTimeout,
    /// A request timed out in flight on an in-order connection.
    InOrderTimeout,
}

impl<E: Copy> Lost<E> {
    /// The error requests in flight fail with.
    fn in_flight_error<P: ClientHooks<DecodeError = E>>(&self, protocol: &P) -> ClientError {
        match self {
            Self::Decode(e) => protocol.decode_error(*e),
            Self::HandshakeRejected => ClientError::AuthRejected,
            Self::InOrderTimeout => ClientError::PipelineReset,
            _ => ClientError::Disconnected,
        }
    }
}

/// Reply to the first connection attempt: the waker for the handle, or why
/// the client could not start.
pub(crate) type Ready = oneshot::Sender<Result<Arc<dyn Wake>, ClientError>>;

/// Builds the transport and runs the loop until shutdown.
pub(crate) fn run<T, F, P>(
    factory: F,
    protocol: Arc<P>,
    addr: SocketAddr,
    cfg: ClientConfig,
    rx: Receiver<Submit<P>>,
    shared: Arc<Shared<P::Reply>>,
    ready: Ready,
) where
    T: Transport,
    F: Fn() -> Result<T, TransportError>,
    P: ClientHooks,
{
    let transport = match factory() {
        Ok(t) => t,
        Err(e) => {
            let _ = ready.send(Err(ClientError::Transport(e)));
            return;
        }
    };
    let waker = match transport.waker() {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(ClientError::Transport(e)));
            return;
        }
    };
    let mut io = IoLoop::new(transport, protocol, addr, cfg, rx, shared);
    let now = Instant::now();
    match io.transport.connect(addr, now) {
        Ok(conn) => {
            io.state = State::Connecting {
                conn,
                deadline: now + io.cfg.connect_timeout,
            }
        }
        Err(e) => {
            let _ = ready.send(Err(ClientError::Transport(e)));
            return;
        }
    }
    io.ready = Some((ready, waker));
    io.run();
}

struct IoLoop<T: Transport, P: ClientHooks> {
    transport: T,
    protocol: Arc<P>,
    events: Events,
    addr: SocketAddr,
    cfg: ClientConfig,
    rx: Receiver<Submit<P>>,
    shared: Arc<Shared<P::Reply>>,
    state: State,
    /// Set until the first connection is ready; the first failure ends the
    /// thread instead of reconnecting.
    ready: Option<(Ready, Arc<dyn Wake>)>,
    /// The protocol's state of the connection (its reply parser).
    codec: P::Conn,
    out: Out,
    next_id: u64,
    entries: IdMap<Kind<P::Reply>>,
    /// [`Correlation::InOrder`] only: the ids in flight, oldest first (at
    /// most `max_in_flight` plus a handshake and a heartbeat).
    order: VecDeque<u64>,
    deadlines: Deadlines,
    /// Requests taken from the channel while the connection is not ready.
    queued: VecDeque<Submit<P>>,
    /// Earliest deadline in `queued` (may be stale-early, never late).
    queued_due: Option<Instant>,
    heartbeat: Option<u64>,
    last_send: Instant,
    attempt: u32,
    /// Every handle is gone: finish like a shutdown.
    orphaned: bool,
    /// The first connection failed; leave the loop.
    failed: bool,
}

impl<T: Transport, P: ClientHooks> IoLoop<T, P> {
    fn new(
        transport: T,
        protocol: Arc<P>,
        addr: SocketAddr,
        cfg: ClientConfig,
        rx: Receiver<Submit<P>>,
        shared: Arc<Shared<P::Reply>>,
    ) -> Self {
        Self {
            transport,
            codec: protocol.open(),
            protocol,
            events: Events::with_capacity(64),
            addr,
            rx,
            shared,
            state: State::Down,
            ready: None,
            out: Out::with_capacity(cfg.output_buffer.min(64 * 1024)),
            next_id: 1,
            entries: IdMap::default(),
            order: VecDeque::new(),
            deadlines: Deadlines::default(),
            queued: VecDeque::new(),
            queued_due: None,
            heartbeat: None,
            last_send: Instant::now(),
            attempt: 0,
            orphaned: false,
            failed: false,
            cfg,
        }
    }

    fn run(mut self) {
        let mut events = std::mem::take(&mut self.events);
        loop {
            if self.shared.shutdown.load(Ordering::SeqCst) || self.orphaned {
                self.shutdown();
                return;
            }
            let now = Instant::now();
            if let Err(e) = self.transport.poll(now, &mut events) {
                tracing::error!(error = %e, "client transport poll failed");
                self.fatal(e);
                return;
            }
            for ev in events.iter() {
                self.on_event(*ev, now);
            }
            if self.failed {
                return;
            }
            let now = Instant::now();
            self.on_timers(now);
            if self.failed {
                return;
            }
            self.pump(now);
            self.flush(now);
            if self.cfg.busy_poll {
                continue;
            }
            let timeout = self.next_wake(now).map_or(MAX_SLEEP, |t| {
                t.saturating_duration_since(now).min(MAX_SLEEP)
            });
            self.shared.sleeping.store(true, Ordering::SeqCst);
            // Work left: new submissions, or requests parked in the local
            // queue while the output buffer was full, which `flush` may just
            // have drained (sleeping then would strand them for MAX_SLEEP).
            let work = self.shared.shutdown.load(Ordering::SeqCst)
                || (!self.rx.is_empty() && self.can_take())
                || (!self.queued.is_empty() && self.has_room());
            if !work && let Err(e) = self.transport.wait(Some(timeout)) {
                tracing::error!(error = %e, "client transport wait failed");
                self.fatal(e);
                return;
            }
            self.shared.sleeping.store(false, Ordering::SeqCst);
        }
    }

    fn conn(&self) -> Option<ConnId> {
        match self.state {
            State::Connecting { conn, .. }
            | State::Handshaking { conn, .. }
            | State::Ready { conn } => Some(conn),
            State::Backoff { .. } | State::Down => None,
        }
    }

    fn on_event(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Connected(c) => {
                if matches!(self.state, State::Connecting { conn, .. } if conn == c) {
                    self.on_connected(c, now);
                }
            }
            Event::Readable(c) => {
                if self.conn() == Some(c) && !matches!(self.state, State::Connecting { .. }) {
                    self.read(c, now);
                }
            }
            Event::Writable(c) => {
                if self.conn() == Some(c) {
                    self.flush(now);
                }
            }
            Event::Closed(c, reason) => {
                if self.conn() == Some(c) {
                    self.lost(Lost::Closed(reason), now);
                }
            }
            // The server closed its side after its last reply (all read by
            // now): finish ours; the connection is lost as if closed.
            Event::PeerFinished(c) => {
                if self.conn() == Some(c) {
                    self.transport.close(c);
                    self.lost(Lost::Closed(CloseReason::PeerClosed), now);
                }
            }
            Event::Accepted { .. } => {}
        }
    }

    fn on_connected(&mut self, conn: ConnId, now: Instant) {
        self.codec = self.protocol.open();
        self.out.clear();
        self.order.clear();
        match self.protocol.handshake(&self.cfg) {
            Ok(Some(request)) => {
                let deadline = now + self.cfg.connect_timeout;
                self.state = State::Handshaking { conn, deadline };
                if self
                    .encode(&request, Kind::Handshake, deadline, now)
                    .is_none()
                {
                    tracing::error!(
                        protocol = self.protocol.name(),
                        "cannot encode the handshake"
                    );
                    self.lost(Lost::HandshakeRejected, now);
                }
            }
            Ok(None) => self.become_ready(conn),
            Err(e) => {
                // ClientConfig::validate rules this out for warpwire; treat
                // it as a refusal rather than panic.
                tracing::error!(error = %e, "cannot build the handshake");
                self.lost(Lost::HandshakeRejected, now);
            }
        }
    }

    fn become_ready(&mut self, conn: ConnId) {
        self.state = State::Ready { conn };
        self.attempt = 0;
        self.shared.connected.store(true, Ordering::SeqCst);
        match self.ready.take() {
            Some((ready, waker)) => {
                if ready.send(Ok(waker)).is_err() {
                    // Client::connect gave up waiting; nobody holds a handle.
                    self.orphaned = true;
                }
            }
            None => {
                self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(addr = %self.addr, "client reconnected");
            }
        }
    }

    /// The connection is gone (or given up on): fail what was sent and
    /// decide between reconnecting, going down, or ending the thread.
    fn lost(&mut self, why: Lost<P::DecodeError>, now: Instant) {
        if let Some(conn) = self.conn()
            && !matches!(why, Lost::Closed(_))
        {
            self.transport.close(conn);
        }
        tracing::debug!(addr = %self.addr, reason = ?why, "client connection lost");
        self.shared.connected.store(false, Ordering::SeqCst);
        self.codec = self.protocol.open();
        self.out.clear();
        self.heartbeat = None;
        for (_, kind) in self.entries.drain() {
            if let Kind::Reply(tx) = kind {
                let _ = tx.send(Err(why.in_flight_error(&*self.protocol)));
            }
        }
        self.order.clear();
        self.deadlines.clear();
        if let Some((ready, _)) = self.ready.take() {
            let e = match why {
                Lost::Closed(reason) => ClientError::ConnectFailed {
                    addr: self.addr,
                    reason,
                },
                Lost::Io(e) => ClientError::Transport(e),
                Lost::ConnectTimeout => ClientError::Timeout,
                other => other.in_flight_error(&*self.protocol),
            };
            let _ = ready.send(Err(e));
            self.fail_queued(|| ClientError::Closed);
            self.state = State::Down;
            self.failed = true;
            return;
        }
        if matches!(why, Lost::HandshakeRejected) {
            self.fail_queued(|| ClientError::AuthRejected);
        }
        match self.cfg.reconnect {
            Some(b) => {
                self.state = State::Backoff {
                    retry_at: now + b.delay(self.attempt),
                };
                self.attempt = self.attempt.saturating_add(1);
            }
            None => {
                self.state = State::Down;
                self.fail_queued(|| ClientError::Disconnected);
            }
        }
    }

    fn fatal(&mut self, e: TransportError) {
        if let Some((ready, _)) = self.ready.take() {
            let _ = ready.send(Err(ClientError::Transport(e)));
        }
        self.shutdown_with(|| ClientError::Disconnected);
    }

    fn fail_queued(&mut self, err: impl Fn() -> ClientError) {
        for s in self.queued.drain(..) {
            s.done.fail_with(err());
        }
        self.queued_due = None;
    }

    fn on_timers(&mut self, now: Instant) {
        match self.state {
            State::Connecting { deadline, .. } | State::Handshaking { deadline, .. }
                if now >= deadline =>
            {
                self.lost(Lost::ConnectTimeout, now);
                if self.failed {
                    return;
                }
            }
            State::Backoff { retry_at } if now >= retry_at => {
                match self.transport.connect(self.addr, now) {
                    Ok(conn) => {
                        self.state = State::Connecting {
                            conn,
                            deadline: now + self.cfg.connect_timeout,
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "reconnect attempt failed");
                        if let Some(b) = self.cfg.reconnect {
                            self.state = State::Backoff {
                                retry_at: now + b.delay(self.attempt),
                            };
                            self.attempt = self.attempt.saturating_add(1);
                        }
                    }
                }
            }
            _ => {}
        }
        let mut reset = false;
        while let Some(id) = self.deadlines.pop_expired(now) {
            match self.entries.remove(&id) {
                Some(Kind::Reply(tx)) => {
                    let _ = tx.send(Err(ClientError::Timeout));
                    // Its reply will still come, and would be taken for the
                    // next request's (module docs).
                    reset |= P::CORRELATION == Correlation::InOrder;
                }
                Some(Kind::Heartbeat) => {
                    tracing::warn!(addr = %self.addr, "heartbeat unanswered; dropping the connection");
                    self.lost(Lost::HeartbeatTimeout, now);
                    reset = false;
                    break;
                }
                // Covered by the Handshaking deadline.
                Some(Kind::Handshake) | None => {}
            }
        }
        if reset {
            tracing::debug!(addr = %self.addr, "in-order request timed out; resetting the connection");
            self.lost(Lost::InOrderTimeout, now);
        }
        let entries = &self.entries;
        self.deadlines
            .compact(entries.len(), |id| entries.contains_key(&id));
        if self.queued_due.is_some_and(|t| now >= t) {
            let mut due = None::<Instant>;
            let mut kept = VecDeque::with_capacity(self.queued.len());
            for s in self.queued.drain(..) {
                if s.deadline <= now {
                    s.done.fail_with(ClientError::Timeout);
                } else {
                    due = Some(due.map_or(s.deadline, |d| d.min(s.deadline)));
                    kept.push_back(s);
                }
            }
            self.queued = kept;
            self.queued_due = due;
        }
        if let (State::Ready { .. }, Some(iv), None) =
            (self.state, self.cfg.heartbeat_interval, self.heartbeat)
            && now >= self.last_send + iv
        {
            match self.protocol.heartbeat(self.shared.now_ns()) {
                Some(request) => {
                    self.heartbeat = self.encode(
                        &request,
                        Kind::Heartbeat,
                        now + self.cfg.request_timeout,
                        now,
                    );
                }
                // No heartbeat in this protocol: look again an interval on.
                None => self.last_send = now,
            }
        }
    }

    fn next_wake(&mut self, now: Instant) -> Option<Instant> {
        let entries = &self.entries;
        let mut next = self.deadlines.next_live(|id| entries.contains_key(&id));
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        match self.state {
            State::Connecting { deadline, .. } | State::Handshaking { deadline, .. } => {
                at(deadline)
            }
            State::Backoff { retry_at } => at(retry_at),
            State::Ready { .. } => {
                if let (Some(iv), None) = (self.cfg.heartbeat_interval, self.heartbeat) {
                    at(self.last_send + iv);
                }
            }
            State::Down => {}
        }
        if let Some(t) = self.queued_due {
            at(t);
        }
        if let Some(t) = self.transport.poll_at(now) {
            at(t);
        }
        next
    }

    fn shutdown(&mut self) {
        self.shutdown_with(|| ClientError::Closed);
        let Some(conn) = self.conn() else {
            return;
        };
        self.transport.close(conn);
        let until = Instant::now() + CLOSE_GRACE;
        let mut events = Events::with_capacity(16);
        while Instant::now() < until {
            if self.transport.poll(Instant::now(), &mut events).is_err() {
                break;
            }
            if events
                .iter()
                .any(|e| matches!(e, Event::Closed(c, _) if *c == conn))
            {
                break;
            }
            if self
                .transport
                .wait(Some(Duration::from_millis(10)))
                .is_err()
            {
                break;
            }
        }
        self.state = State::Down;
    }

    /// Fails everything outstanding, queued and still in the channel.
    fn shutdown_with(&mut self, err: impl Fn() -> ClientError) {
        self.shared.connected.store(false, Ordering::SeqCst);
        for (_, kind) in self.entries.drain() {
            if let Kind::Reply(tx) = kind {
                let _ = tx.send(Err(err()));
            }
        }
        self.order.clear();
        self.deadlines.clear();
        self.fail_queued(&err);
        while let Ok(s) = self.rx.try_recv() {
            s.done.fail_with(err());
        }
        // Ends subscriptions: receivers see the channel disconnect.
        if let Ok(mut subs) = self.shared.subscribers.lock() {
            subs.senders.clear();
            subs.early = None;
        }
    }
}
