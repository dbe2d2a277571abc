//! One worker: a transport instance and the connections it serves, run to
//! completion on its own thread, generic over the transport and over the
//! application [`Protocol`].
//!
//! ```text
//!  loop {
//!    poll transport ─► Accepted: protocol.open (or Refusal::Busy)
//!                    ─► Readable: recv into the protocol's buffer, then
//!                       protocol.step() while the output cap allows
//!                    ─► Writable: flush queued output
//!                    ─► PeerFinished: answer what is buffered, then close
//!                    ─► Closed:   protocol.closed, drop the session
//!    drain the broadcast inbox (relays from other workers)
//!    flush dirty sessions, transport.flush()
//!    every 100 ms: idle timeouts, stuck closes, input budget,
//!                  protocol.housekeeping
//!    nothing happened and not busy-polling? transport.wait()
//!  }
//! ```
//!
//! The state a protocol call may reach through its `Ctx` (publishing to
//! other sessions, counters) is `Core`; the protocol's own per-worker state
//! and the session being served are borrowed beside it, never through it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use warpwire_transport::{CloseReason, ConnId, Event, Events, Transport};

use crate::Shared;
use crate::metrics::WorkerCounters;
use crate::pool::{Backlog, Job, Outcome};
use crate::protocol::{ConnInfo, Ctx, Host, Protocol, Refusal, Step};

mod broadcast;
mod output;

pub(crate) use broadcast::Inbox;

/// Receive calls per connection per poll: bounds how long one busy
/// connection holds the worker (4 x 16 KiB decoder chunks = 64 KiB).
const READS_PER_POLL: usize = 4;

/// Most parser memory a session reads ahead into while its job is on the
/// application workers (the warpwire decoder stops at about one largest
/// frame, 1 MiB by default, before this).
const READ_AHEAD: usize = 2 << 20;
/// Period of idle-timeout scans and latency publication.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// How long a closing session may take to flush before it is cut.
const CLOSE_FLUSH_LIMIT: Duration = Duration::from_secs(5);

struct Session<C> {
    info: ConnInfo,
    /// The protocol's state of the connection.
    conn: C,
    out: output::Output,
    /// Last whole request (or accept): the idle timeout counts from it.
    last_request: Instant,
    /// Set when the session is closing: reading stopped, flush then FIN.
    closing: Option<Instant>,
    close_sent: bool,
    /// Counted in the server-wide connection total (refused ones are not).
    counted: bool,
    /// Receives what other connections publish; counted in this worker's
    /// broadcast-eligible gauge.
    eligible: bool,
    /// Reading paused because `out` is full.
    paused: bool,
    dirty: bool,
    /// The peer sent FIN: answer every whole request received, flush, close.
    peer_finished: bool,
    /// Reading paused because its broadcasts' readers are behind.
    bcast_paused: bool,
    /// The parser memory last added to the server-wide input total.
    accounted: usize,
    /// A job of this connection is on the application workers: no more
    /// of its requests are stepped until it is back. Reading goes on into
    /// the parser's buffer (bounded by the parser) and pauses when that is
    /// full, so a stream keeps arriving while the job runs.
    waiting: bool,
}

impl<C> Session<C> {
    fn id(&self) -> ConnId {
        self.info.conn
    }
}

/// The worker's state apart from the protocol: what a protocol call can
/// reach through `Ctx` (publish, counters) while its session is taken out.
pub(crate) struct Core<T: Transport, C> {
    index: usize,
    t: T,
    sessions: Vec<Option<Session<C>>>,
    dirty: Vec<ConnId>,
    /// Sessions resumed from a pause: their parser may hold whole requests
    /// that no new readiness event would ever bring back.
    resumed: Vec<ConnId>,
    /// Paused broadcasters, inbox stall, slow-reader log limit.
    bcast: broadcast::BroadcastState,
    shared: Arc<Shared>,
    /// Time of the current loop iteration.
    now: Instant,
    /// A protocol error the current protocol call reported, for the hooks.
    protocol_error: Option<String>,
    /// The protocol's [`Protocol::relay`], for delivering published
    /// messages from inside a protocol call (where the protocol value is
    /// not at hand).
    relay: RelayFn<C>,
}

/// [`Protocol::relay`] of the worker's protocol.
type RelayFn<C> =
    Arc<dyn Fn(&mut C, &Bytes, &mut bytes::BytesMut) -> crate::protocol::Relay + Send + Sync>;

pub(crate) struct Worker<T: Transport, P: Protocol> {
    core: Core<T, P::Conn>,
    proto: Arc<P>,
    local: P::Local,
    events: Events,
    draining: Option<Instant>,
    /// Jobs the application workers' channel had no room for yet.
    backlog: Backlog,
    /// Sessions closed while their job was out: finished when it is back.
    zombies: Vec<(Session<P::Conn>, Option<CloseReason>)>,
    next_housekeeping: Instant,
    /// This worker's bound listen addresses and the protocol each serves.
    routes: Vec<(SocketAddr, &'static str)>,
}

impl<T: Transport, C> Host for Core<T, C> {
    fn publish(&mut self, bytes: Bytes) -> u64 {
        self.broadcast(bytes)
    }

    fn counters(&self) -> &WorkerCounters {
        &self.shared.metrics.workers[self.index]
    }

    fn protocol_error(&mut self, error: &str) {
        self.protocol_error = Some(error.to_owned());
    }
}

impl<T: Transport, C> Core<T, C> {
    fn counters(&self) -> &WorkerCounters {
        &self.shared.metrics.workers[self.index]
    }

    fn session_mut(&mut self, conn: ConnId) -> Option<&mut Session<C>> {
        self.sessions
            .get_mut(conn.index())?
            .as_mut()
            .filter(|s| s.id() == conn)
    }

    /// Takes a session out (so a protocol call can reach the others).
    fn take(&mut self, conn: ConnId) -> Option<Session<C>> {
        self.sessions
            .get_mut(conn.index())
            .and_then(|slot| slot.take_if(|s| s.id() == conn))
    }

    fn put(&mut self, s: Session<C>) {
        let idx = s.id().index();
        if self.sessions.len() <= idx {
            self.sessions.resize_with(idx + 1, || None);
        }
        self.sessions[idx] = Some(s);
    }

    fn mark_dirty(&mut self, conn: ConnId) {
        if let Some(s) = self.session_mut(conn)
            && !s.dirty
        {
            s.dirty = true;
            self.dirty.push(conn);
        }
    }

    fn set_eligible(&self, s: &mut Session<C>, eligible: bool) {
        if s.eligible != eligible {
            s.eligible = eligible;
            let g = &self.shared.eligible[self.index];
            if eligible {
                g.fetch_add(1, Ordering::Relaxed);
            } else {
                g.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn begin_close(&mut self, s: &mut Session<C>, now: Instant) {
        if s.closing.is_none() {
            s.closing = Some(now + CLOSE_FLUSH_LIMIT);
            self.set_eligible(s, false);
            self.t.pause_recv(s.id(), true);
        }
    }

    /// Moves a session's share of the server-wide input total to `now_held`.
    fn account_input(&self, s: &mut Session<C>, now_held: usize) {
        let total = &self.shared.buffered_input;
        if now_held > s.accounted {
            total.fetch_add(now_held - s.accounted, Ordering::Relaxed);
        } else {
            total.fetch_sub(s.accounted - now_held, Ordering::Relaxed);
        }
        s.accounted = now_held;
    }

    fn flush_dirty(&mut self) {
        let max_output = self.shared.config.max_output;
        let dirty = std::mem::take(&mut self.dirty);
        for conn in &dirty {
            let Some(s) = self
                .sessions
                .get_mut(conn.index())
                .and_then(Option::as_mut)
                .filter(|s| s.id() == *conn)
            else {
                continue;
            };
            s.dirty = false;
            s.out.flush(&mut self.t, *conn);
            if s.out.is_empty() && s.closing.is_some() && !s.close_sent {
                s.close_sent = true;
                self.t.close(*conn);
                continue;
            }
            if s.paused && s.out.len() < max_output / 2 && s.closing.is_none() {
                s.paused = false;
                // A sender paused for its broadcasts' readers, or waiting
                // for its job, stays paused.
                if !s.bcast_paused && !s.waiting {
                    self.t.pause_recv(*conn, false);
                    self.resumed.push(*conn);
                }
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }
}

impl<T: Transport, P: Protocol> Worker<T, P> {
    /// Worker `index` over `t`, which listens on `bound` (the addresses
    /// `listen` returned, in the order of `ServerConfig::listen_addrs`).
    pub(crate) fn new(
        index: usize,
        t: T,
        shared: Arc<Shared>,
        proto: Arc<P>,
        bound: &[SocketAddr],
    ) -> Self {
        Self::new_at(index, t, shared, proto, bound, Instant::now())
    }

    /// A worker whose clock starts at `now` (a test's virtual clock).
    pub(crate) fn new_at(
        index: usize,
        t: T,
        shared: Arc<Shared>,
        proto: Arc<P>,
        bound: &[SocketAddr],
        now: Instant,
    ) -> Self {
        let workers = shared.metrics.workers.len();
        let routes = bound
            .iter()
            .copied()
            .zip(shared.protocols.iter().copied())
            .collect();
        Self {
            routes,
            local: proto.local(index, workers, now),
            core: Core {
                index,
                t,
                sessions: Vec::new(),
                dirty: Vec::new(),
                resumed: Vec::new(),
                bcast: broadcast::BroadcastState::default(),
                shared,
                now,
                protocol_error: None,
                relay: {
                    let p = proto.clone();
                    Arc::new(
                        move |c: &mut P::Conn, m: &Bytes, out: &mut bytes::BytesMut| {
                            p.relay(c, m, out)
                        },
                    )
                },
            },
            proto,
            events: Events::with_capacity(1024),
            draining: None,
            backlog: Backlog::default(),
            zombies: Vec::new(),
            next_housekeeping: now + HOUSEKEEPING,
        }
    }

    /// Runs until shutdown completes or the transport fails.
    pub(crate) fn run(mut self) -> Result<(), crate::EngineError> {
        let busy_poll = self.core.shared.config.busy_poll;
        loop {
            let now = Instant::now();
            let Some(active) = self.turn(now)? else {
                break;
            };
            if !active && !busy_poll {
                let timeout = self.sleep_for(Instant::now());
                self.core.t.wait(Some(timeout))?;
            }
        }
        self.finish();
        Ok(())
    }

    /// One turn of the loop at time `now`: poll, serve, flush, and (when
    /// due) housekeeping. `None` once a shutdown has drained; otherwise
    /// whether anything happened. Reads no clock: a test drives it with a
    /// virtual one.
    pub(crate) fn turn(&mut self, now: Instant) -> Result<Option<bool>, crate::EngineError> {
        self.core.now = now;
        if self.draining.is_none() && self.core.shared.shutdown.load(Ordering::Acquire) {
            self.begin_drain(now);
        }
        if let Some(deadline) = self.draining
            && (self.core.sessions.iter().all(Option::is_none) || now >= deadline)
        {
            return Ok(None);
        }
        let mut events = std::mem::take(&mut self.events);
        self.core.t.poll(now, &mut events)?;
        let mut active = !events.is_empty();
        for ev in events.iter() {
            match *ev {
                Event::Accepted {
                    conn,
                    peer,
                    listener,
                } => self.on_accept(conn, peer, listener, now),
                Event::Readable(conn) => self.on_readable(conn, now),
                Event::Writable(conn) => self.core.mark_dirty(conn),
                Event::PeerFinished(conn) => self.on_peer_finished(conn, now),
                Event::Closed(conn, reason) => self.on_closed(conn, Some(reason)),
                Event::Connected(_) => {}
            }
        }
        self.events = events;
        for conn in std::mem::take(&mut self.core.resumed) {
            active = true;
            self.on_readable(conn, now);
        }
        active |= self.core.drain_inbox(now);
        active |= self.take_completions(now);
        if !self.backlog.is_empty() {
            self.backlog.drain_into(&self.core.shared.pool);
        }
        self.core.flush_dirty();
        self.core.t.flush(now)?;
        if now >= self.next_housekeeping {
            self.housekeeping(now);
            self.next_housekeeping = now + HOUSEKEEPING;
        }
        active |= self.core.resume_broadcasters(now);
        Ok(Some(active))
    }

    /// How long an idle worker may sleep: until housekeeping, the
    /// transport's own timers, or briefly while senders wait on readers.
    fn sleep_for(&mut self, now: Instant) -> Duration {
        let mut timeout = self.next_housekeeping.saturating_duration_since(now);
        if self.core.broadcast_waiting() || !self.backlog.is_empty() {
            // Readers' progress shows only as Writable events;
            // look again soon so a paused sender resumes promptly.
            timeout = timeout.min(Duration::from_millis(1));
        }
        if let Some(at) = self.core.t.poll_at(now) {
            timeout = timeout.min(at.saturating_duration_since(now));
        }
        timeout
    }

    /// After the drain: the protocol releases what it holds for every
    /// session still open, and publishes its last metrics.
    pub(crate) fn finish(&mut self) {
        // Sessions still open at the end of a drain: the protocol releases
        // what it holds for them too.
        let sessions = std::mem::take(&mut self.core.sessions);
        for mut s in sessions.into_iter().flatten() {
            self.core.account_input(&mut s, 0);
            if s.counted {
                self.core.shared.hooks.on_disconnect(&s.info, None);
            }
            self.proto.closed(&mut self.local, s.conn, &s.info, None);
        }
        for (s, reason) in std::mem::take(&mut self.zombies) {
            self.proto.closed(&mut self.local, s.conn, &s.info, reason);
        }
        self.proto.housekeeping(&mut self.local, self.core.now);
    }

    /// Runs one protocol call against a session taken out of the table and
    /// applies what it asked for (close, eligibility, pause on publish).
    fn with_ctx<R>(
        &mut self,
        s: &mut Session<P::Conn>,
        now: Instant,
        call: impl FnOnce(&P, &mut P::Local, &mut P::Conn, &mut Ctx<'_>) -> R,
    ) -> R {
        let mut ctx = Ctx::new(now, self.core.index, s.out.replies_mut(), &mut self.core);
        let r = call(&self.proto, &mut self.local, &mut s.conn, &mut ctx);
        let (close, eligible, ctx_offload) = (ctx.close, ctx.eligible, ctx.offload.take());
        if let Some(e) = eligible
            && s.closing.is_none()
        {
            self.core.set_eligible(s, e);
        }
        if close {
            self.core.begin_close(s, now);
        }
        if self.core.bcast.take_pressed() {
            self.core.pause_broadcaster(s, now);
        }
        if let Some(work) = ctx_offload {
            self.offload(s, work);
        }
        if let Some(e) = self.core.protocol_error.take() {
            self.core.shared.hooks.on_protocol_error(&s.info, &e);
        }
        r
    }

    /// Hands a session's job to the application workers; the session waits
    /// (reading ahead while its parser has room: see `on_readable`).
    fn offload(&mut self, s: &mut Session<P::Conn>, work: crate::pool::Work) {
        s.waiting = true;
        let job = Job::new(self.core.index, s.id(), work);
        if !self.backlog.is_empty() {
            self.backlog.push(job);
        } else if let Err(job) = self.core.shared.pool.submit(job) {
            self.backlog.push(job);
        }
    }

    /// Finished jobs: the protocol writes their replies and the sessions
    /// go on with what they have buffered. A job of a session closed
    /// meanwhile only finishes that session.
    fn take_completions(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some((conn, outcome)) = self.core.shared.pool.take_done(self.core.index) {
            any = true;
            if let Some(pos) = self.zombies.iter().position(|(z, _)| z.id() == conn) {
                let (z, reason) = self.zombies.swap_remove(pos);
                self.proto.closed(&mut self.local, z.conn, &z.info, reason);
                continue;
            }
            let Some(mut s) = self.core.take(conn).filter(|s| s.waiting) else {
                continue;
            };
            s.waiting = false;
            self.complete(&mut s, outcome, now);
            if s.closing.is_none() && !s.paused && !s.bcast_paused {
                self.core.t.pause_recv(conn, false);
                self.core.resumed.push(conn);
            }
            self.core.put(s);
            self.core.mark_dirty(conn);
        }
        any
    }

    fn complete(&mut self, s: &mut Session<P::Conn>, outcome: Outcome, now: Instant) {
        self.with_ctx(s, now, |p, l, c, ctx| p.complete(l, c, outcome, ctx));
    }

    fn on_accept(&mut self, conn: ConnId, peer: SocketAddr, listener: SocketAddr, now: Instant) {
        if self.draining.is_some() {
            // A backend that reports, after `stop_listening`, a connection
            // it had taken before (none here should).
            self.core.t.close(conn);
            return;
        }
        // A listener this worker did not open (cannot happen with the
        // backends here): the first protocol serves it.
        let protocol = self
            .routes
            .iter()
            .find(|(a, _)| *a == listener)
            .or(self.routes.first())
            .map_or(self.proto.name(), |&(_, p)| p);
        let info = ConnInfo {
            conn,
            peer,
            listener,
            protocol,
            worker: self.core.index,
            identity: self.core.t.peer_identity(conn).map(Into::into),
        };
        let mut out = output::Output::default();
        let mut ctx = Ctx::new(now, self.core.index, out.replies_mut(), &mut self.core);
        let c = self.proto.open(&mut self.local, &info, &mut ctx);
        let (close, eligible) = (ctx.close, ctx.eligible.unwrap_or(false));
        let mut s = Session {
            info,
            conn: c,
            out,
            last_request: now,
            closing: None,
            close_sent: false,
            counted: false,
            eligible: false,
            paused: false,
            dirty: false,
            peer_finished: false,
            bcast_paused: false,
            accounted: 0,
            waiting: false,
        };
        let limit = self.core.shared.config.max_connections;
        let total = self.core.shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
        if !self.core.shared.hooks.on_connect(&s.info) {
            self.core.shared.connections.fetch_sub(1, Ordering::AcqRel);
            WorkerCounters::add(&self.core.counters().refused, 1);
            self.with_ctx(&mut s, now, |p, _, c, ctx| {
                p.refuse(c, Refusal::Rejected, ctx)
            });
            self.core.begin_close(&mut s, now);
        } else if total > limit {
            self.core.shared.connections.fetch_sub(1, Ordering::AcqRel);
            WorkerCounters::add(&self.core.counters().refused, 1);
            tracing::debug!(worker = self.core.index, %conn, "refusing connection: limit reached");
            self.with_ctx(&mut s, now, |p, _, c, ctx| {
                p.refuse(c, Refusal::Busy { limit }, ctx);
            });
            self.core.begin_close(&mut s, now);
        } else {
            s.counted = true;
            WorkerCounters::add(&self.core.counters().connections, 1);
            WorkerCounters::add(&self.core.counters().accepted, 1);
            if close {
                self.core.begin_close(&mut s, now);
            } else {
                self.core.set_eligible(&mut s, eligible);
            }
        }
        let dirty = !s.out.is_empty() || s.closing.is_some();
        self.core.put(s);
        if dirty {
            self.core.mark_dirty(conn);
        }
    }

    fn on_closed(&mut self, conn: ConnId, reason: Option<CloseReason>) {
        let Some(mut s) = self.core.take(conn) else {
            return;
        };
        self.core.account_input(&mut s, 0);
        self.core.set_eligible(&mut s, false);
        if s.counted {
            self.core.shared.connections.fetch_sub(1, Ordering::AcqRel);
            self.core
                .counters()
                .connections
                .fetch_sub(1, Ordering::Relaxed);
        }
        if s.counted {
            self.core.shared.hooks.on_disconnect(&s.info, reason);
        }
        if s.waiting {
            // Its job is still out: the protocol hears of the close when
            // the job is back, and the result goes nowhere.
            self.zombies.push((s, reason));
            return;
        }
        self.proto.closed(&mut self.local, s.conn, &s.info, reason);
    }

    /// The peer sends no more. What it sent is answered first: the parser's
    /// whole requests are handled (through pauses, if the replies fill the
    /// output cap), then the replies flush and our FIN follows
    /// (`on_readable` ends the session once nothing is left to answer). A
    /// partial request left at the FIN can never complete and is dropped.
    fn on_peer_finished(&mut self, conn: ConnId, now: Instant) {
        let Some(s) = self.core.session_mut(conn) else {
            return;
        };
        s.peer_finished = true;
        self.on_readable(conn, now);
    }

    fn on_readable(&mut self, conn: ConnId, now: Instant) {
        // Take the session out so the protocol can reach every other
        // session (publish) through the core; the sender is excluded for
        // free.
        let Some(mut s) = self.core.take(conn) else {
            return;
        };
        let max_output = self.core.shared.config.max_output;
        'reads: for _ in 0..READS_PER_POLL {
            if s.closing.is_some() || s.bcast_paused {
                break;
            }
            if s.waiting {
                // Its job is out: read ahead into the parser, without
                // stepping, until the parser is full; then stop reading
                // until the job is back.
                let full = self.proto.input_held(&s.conn).allocated >= READ_AHEAD;
                let got = if full {
                    None
                } else {
                    self.proto.receive(&mut s.conn, &mut self.core.t, conn)
                };
                match got {
                    None => {
                        self.core.t.pause_recv(conn, true);
                        break;
                    }
                    Some(Ok(0) | Err(_)) => break,
                    Some(Ok(_)) => {}
                }
                continue;
            }
            if s.out.len() >= max_output {
                s.paused = true;
                self.core.t.pause_recv(conn, true);
                break;
            }
            // The transport reports Closed after an error; keep the
            // session until then. No room (None): step to make some.
            let n = match self.proto.receive(&mut s.conn, &mut self.core.t, conn) {
                Some(Ok(n)) => n,
                None => 0,
                Some(Err(_)) => break,
            };
            loop {
                let step = self.with_ctx(&mut s, now, |p, l, c, ctx| p.step(l, c, ctx));
                match step {
                    Step::Request => {
                        s.last_request = now;
                        if s.closing.is_some()
                            || s.out.len() >= max_output
                            || s.bcast_paused
                            || s.waiting
                        {
                            break 'reads;
                        }
                    }
                    Step::NeedInput => break,
                }
            }
            if n == 0 {
                break;
            }
        }
        // The cap stops parsing with whole requests possibly left in the
        // parser; the pause at the top of the loop catches that only when
        // another read follows. After the poll's last read, or a read that
        // brought nothing (a resumed session whose input is all buffered
        // already), no Readable may ever come again: pause here so the
        // drain in `flush_dirty` resumes the session and parses them.
        if s.closing.is_none() && !s.paused && s.out.len() >= max_output {
            s.paused = true;
            self.core.t.pause_recv(conn, true);
        }
        // After the peer's FIN, a pass that ends unpaused has answered
        // every whole request: flush, then close.
        if s.peer_finished && s.closing.is_none() && !s.paused && !s.bcast_paused && !s.waiting {
            tracing::trace!(worker = self.core.index, %conn, "peer finished: closing after the replies");
            self.core.begin_close(&mut s, now);
        }
        let held = self.proto.input_held(&s.conn).allocated;
        self.core.account_input(&mut s, held);
        let dirty = !s.out.is_empty() || (s.closing.is_some() && !s.close_sent);
        self.core.put(s);
        if dirty {
            self.core.mark_dirty(conn);
        }
    }

    /// Over the server-wide input budget: refuses this worker's largest
    /// partial requests (the protocol's error, then close) until the total
    /// fits or none is left. Every worker does this for its own sessions,
    /// so the total comes down within one housekeeping period.
    fn enforce_input_budget(&mut self, now: Instant) {
        let budget = self.core.shared.config.max_buffered_input;
        if self.core.shared.buffered_input.load(Ordering::Relaxed) <= budget {
            return;
        }
        let mut partial: Vec<(usize, ConnId)> = self
            .core
            .sessions
            .iter()
            .flatten()
            .filter(|s| s.closing.is_none())
            .filter_map(|s| {
                let h = self.proto.input_held(&s.conn);
                h.partial.then_some((h.allocated, s.id()))
            })
            .collect();
        partial.sort_unstable_by(|a, b| b.cmp(a));
        for (held, id) in partial {
            if self.core.shared.buffered_input.load(Ordering::Relaxed) <= budget {
                break;
            }
            let Some(mut s) = self.core.take(id) else {
                continue;
            };
            WorkerCounters::add(&self.core.counters().input_refused, 1);
            tracing::debug!(worker = self.core.index, conn = %id, held, "input budget: refusing a partial request");
            // The parser's memory goes now, not when the close completes.
            self.proto.drop_input(&mut s.conn);
            self.core.account_input(&mut s, 0);
            self.with_ctx(&mut s, now, |p, _, c, ctx| {
                p.refuse(c, Refusal::InputBudget { budget, held }, ctx);
            });
            self.core.begin_close(&mut s, now);
            self.core.put(s);
            self.core.mark_dirty(id);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.enforce_input_budget(now);
        let accept_errors = self.core.t.accept_errors();
        self.core
            .counters()
            .accept_errors
            .store(accept_errors, Ordering::Relaxed);
        if let Ok(mut v) = self.core.counters().transport.lock() {
            v.clear();
            self.core.t.counters(&mut |name, n| v.push((name, n)));
        }
        let idle = self.core.shared.config.idle_timeout;
        let mut idle_ids = Vec::new();
        let mut stuck = Vec::new();
        for s in self.core.sessions.iter().flatten() {
            match s.closing {
                None if !s.waiting
                    && now.saturating_duration_since(s.last_request) >= idle
                    && !self.proto.idle_exempt(&s.conn) =>
                {
                    idle_ids.push(s.id())
                }
                Some(deadline) if now >= deadline && !s.close_sent => stuck.push(s.id()),
                _ => {}
            }
        }
        for id in idle_ids {
            if let Some(mut s) = self.core.take(id) {
                self.with_ctx(&mut s, now, |p, _, c, ctx| {
                    p.refuse(c, Refusal::Idle { after: idle }, ctx);
                });
                self.core.begin_close(&mut s, now);
                self.core.put(s);
                self.core.mark_dirty(id);
            }
        }
        for id in stuck {
            if let Some(s) = self.core.session_mut(id) {
                s.out.clear();
                s.close_sent = true;
                self.core.t.close(id);
            }
        }
        self.proto.housekeeping(&mut self.local, now);
    }

    fn begin_drain(&mut self, now: Instant) {
        tracing::info!(
            worker = self.core.index,
            "shutting down: flushing replies and closing connections"
        );
        self.draining = Some(now + self.core.shared.config.shutdown_grace);
        // New connections are refused from now on (a client retries, or
        // finds the next server), rather than accepted and closed at once.
        self.core.t.stop_listening();
        let ids: Vec<ConnId> = self
            .core
            .sessions
            .iter()
            .flatten()
            .map(|s| s.id())
            .collect();
        for id in ids {
            if let Some(mut s) = self.core.take(id) {
                self.core.begin_close(&mut s, now);
                self.core.put(s);
                self.core.mark_dirty(id);
            }
        }
    }
}
