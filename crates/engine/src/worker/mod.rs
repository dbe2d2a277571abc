//! One worker: a transport instance and the sessions it serves, run to
//! completion on its own thread.
//!
//! ```text
//!  loop {
//!    poll transport ─► Accepted: new session (or SERVER_BUSY)
//!                    ─► Readable: recv into the session's decoder, decode,
//!                       handle each frame, queue replies in order
//!                    ─► Writable: flush queued replies
//!                    ─► Closed:   drop the session
//!    drain the broadcast inbox (relays from other workers)
//!    flush dirty sessions, transport.flush()
//!    every 100 ms: idle timeouts, stuck closes, publish latency
//!    nothing happened and not busy-polling? transport.wait()
//!  }
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::RngCore;
use warpwire_frame::{
    Auth, AuthReply, BroadcastAck, DataAck, DecodeError, Decoder, DecoderConfig, ErrorBody,
    ErrorCode, Flags, Frame, FrameRef, MessageType,
};
use warpwire_transport::{ConnId, Event, Events, Transport};

use crate::Shared;
use crate::handler::SessionInfo;
use crate::limits::Limit;
use crate::metrics::{Metrics, WorkerCounters};

mod broadcast;
mod output;

pub(crate) use broadcast::Inbox;

/// Receive calls per connection per poll: bounds how long one busy
/// connection holds the worker (4 x 16 KiB decoder chunks = 64 KiB).
const READS_PER_POLL: usize = 4;
/// Period of idle-timeout scans and latency publication.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// How long a closing session may take to flush before it is cut.
const CLOSE_FLUSH_LIMIT: Duration = Duration::from_secs(5);

struct Session {
    id: ConnId,
    decoder: Decoder,
    out: output::Output,
    session_id: [u8; 16],
    user: Option<String>,
    unauthenticated: u32,
    auth_failures: u32,
    limit: Limit,
    last_frame: Instant,
    /// Set when the session is closing: reading stopped, flush then FIN.
    closing: Option<Instant>,
    close_sent: bool,
    /// Counted in the server-wide connection total (refused ones are not).
    counted: bool,
    /// Counted in this worker's broadcast-eligible gauge.
    eligible: bool,
    /// Reading paused because `out` is full.
    paused: bool,
    dirty: bool,
    /// Has sent DATA: the sink hears of its end.
    sent_data: bool,
    /// The peer sent FIN: answer every whole frame received, flush, close.
    peer_finished: bool,
    /// Reading paused because its broadcasts' readers are behind.
    bcast_paused: bool,
    /// The decoder memory last added to the server-wide input total.
    accounted: usize,
}

pub(crate) struct Worker<T: Transport> {
    index: usize,
    t: T,
    sessions: Vec<Option<Session>>,
    dirty: Vec<ConnId>,
    /// Sessions resumed from a pause: their decoder may hold whole frames
    /// that no new readiness event would ever bring back.
    resumed: Vec<ConnId>,
    /// Paused broadcasters, inbox stall, slow-reader log limit.
    bcast: broadcast::BroadcastState,
    shared: Arc<Shared>,
    global: Limit,
    hist: Histogram<u64>,
    events: Events,
    draining: Option<Instant>,
}

impl<T: Transport> Worker<T> {
    pub(crate) fn new(index: usize, t: T, shared: Arc<Shared>) -> Self {
        let workers = shared.metrics.workers.len().max(1) as f64;
        let c = &shared.config;
        let now = Instant::now();
        let global = Limit::new(
            c.global_rate.map(|r| r / workers),
            c.global_burst.or(c.global_rate).map(|b| b / workers),
            now,
        );
        Self {
            index,
            t,
            sessions: Vec::new(),
            dirty: Vec::new(),
            resumed: Vec::new(),
            bcast: broadcast::BroadcastState::default(),
            shared,
            global,
            hist: Metrics::local_histogram(),
            events: Events::with_capacity(1024),
            draining: None,
        }
    }

    fn counters(&self) -> &WorkerCounters {
        &self.shared.metrics.workers[self.index]
    }

    /// Runs until shutdown completes or the transport fails.
    pub(crate) fn run(mut self) -> Result<(), crate::EngineError> {
        let busy_poll = self.shared.config.busy_poll;
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        loop {
            let now = Instant::now();
            if self.draining.is_none() && self.shared.shutdown.load(Ordering::Acquire) {
                self.begin_drain(now);
            }
            if let Some(deadline) = self.draining
                && (self.sessions.iter().all(Option::is_none) || now >= deadline)
            {
                break;
            }
            let mut events = std::mem::take(&mut self.events);
            self.t.poll(now, &mut events)?;
            let mut active = !events.is_empty();
            for ev in events.iter() {
                match *ev {
                    Event::Accepted { conn, .. } => self.on_accept(conn, now),
                    Event::Readable(conn) => self.on_readable(conn, now),
                    Event::Writable(conn) => self.mark_dirty(conn),
                    Event::PeerFinished(conn) => self.on_peer_finished(conn, now),
                    Event::Closed(conn, _) => self.on_closed(conn),
                    Event::Connected(_) => {}
                }
            }
            self.events = events;
            for conn in std::mem::take(&mut self.resumed) {
                active = true;
                self.on_readable(conn, now);
            }
            active |= self.drain_inbox(now);
            self.flush_dirty();
            self.t.flush(now)?;
            if now >= next_housekeeping {
                self.housekeeping(now);
                next_housekeeping = now + HOUSEKEEPING;
            }
            active |= self.resume_broadcasters(Instant::now());
            if !active && !busy_poll {
                let mut timeout = next_housekeeping.saturating_duration_since(Instant::now());
                if self.broadcast_waiting() {
                    // Readers' progress shows only as Writable events;
                    // look again soon so a paused sender resumes promptly.
                    timeout = timeout.min(Duration::from_millis(1));
                }
                if let Some(at) = self.t.poll_at(now) {
                    timeout = timeout.min(at.saturating_duration_since(Instant::now()));
                }
                self.t.wait(Some(timeout))?;
            }
        }
        // Sessions still open at the end of a drain: the sink releases
        // what it holds for them too.
        for s in self.sessions.iter_mut().flatten() {
            let held = std::mem::take(&mut s.accounted);
            self.shared
                .buffered_input
                .fetch_sub(held, Ordering::Relaxed);
        }
        for s in self.sessions.iter().flatten() {
            self.end_session(s);
        }
        self.shared
            .metrics
            .publish_latency(self.index, &mut self.hist);
        Ok(())
    }

    /// Tells the DATA sink a session that used it is gone.
    fn end_session(&self, s: &Session) {
        if s.sent_data {
            self.shared.handlers.data().on_session_end(&SessionInfo {
                session_id: &s.session_id,
                user: s.user.as_deref(),
                worker: self.index,
            });
        }
    }

    fn session_mut(&mut self, conn: ConnId) -> Option<&mut Session> {
        self.sessions
            .get_mut(conn.index())?
            .as_mut()
            .filter(|s| s.id == conn)
    }

    fn mark_dirty(&mut self, conn: ConnId) {
        if let Some(s) = self.session_mut(conn)
            && !s.dirty
        {
            s.dirty = true;
            self.dirty.push(conn);
        }
    }

    fn set_eligible(&self, s: &mut Session, eligible: bool) {
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

    fn on_accept(&mut self, conn: ConnId, now: Instant) {
        let cfg = &self.shared.config;
        let mut session_id = [0u8; 16];
        rand::rng().fill_bytes(&mut session_id);
        let mut s = Session {
            id: conn,
            decoder: Decoder::new(DecoderConfig {
                max_payload: cfg.max_frame,
                ..DecoderConfig::default()
            }),
            out: output::Output::default(),
            session_id,
            user: None,
            unauthenticated: 0,
            auth_failures: 0,
            limit: Limit::new(cfg.conn_rate, cfg.conn_burst, now),
            last_frame: now,
            closing: None,
            close_sent: false,
            counted: false,
            eligible: false,
            paused: false,
            dirty: false,
            sent_data: false,
            peer_finished: false,
            bcast_paused: false,
            accounted: 0,
        };
        if self.draining.is_some() {
            self.t.close(conn);
            return;
        }
        let total = self.shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
        if total > cfg.max_connections {
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
            WorkerCounters::add(&self.counters().refused, 1);
            tracing::debug!(worker = self.index, %conn, "refusing connection: limit reached");
            let msg = format!("connection limit of {} reached", cfg.max_connections);
            self.send_error(&mut s, ErrorCode::ServerBusy, &msg, None, now);
        } else {
            s.counted = true;
            WorkerCounters::add(&self.counters().connections, 1);
            WorkerCounters::add(&self.counters().accepted, 1);
            let eligible = !cfg.require_auth;
            self.set_eligible(&mut s, eligible);
        }
        let idx = conn.index();
        if self.sessions.len() <= idx {
            self.sessions.resize_with(idx + 1, || None);
        }
        let dirty = !s.out.is_empty();
        self.sessions[idx] = Some(s);
        if dirty {
            self.mark_dirty(conn);
        }
    }

    fn on_closed(&mut self, conn: ConnId) {
        let Some(slot) = self.sessions.get_mut(conn.index()) else {
            return;
        };
        if slot.as_ref().is_none_or(|s| s.id != conn) {
            return;
        }
        let Some(mut s) = slot.take() else { return };
        self.account_input(&mut s, 0);
        self.end_session(&s);
        self.set_eligible(&mut s, false);
        if s.counted {
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
            self.counters().connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The peer sends no more. What it sent is answered first: the
    /// decoder's whole frames are handled (through pauses, if the replies
    /// fill the output cap), then the replies flush and our FIN follows
    /// (`on_readable` ends the session once nothing is left to answer). A
    /// partial frame left at the FIN can never complete and is dropped.
    fn on_peer_finished(&mut self, conn: ConnId, now: Instant) {
        let Some(s) = self.session_mut(conn) else {
            return;
        };
        s.peer_finished = true;
        self.on_readable(conn, now);
    }

    fn on_readable(&mut self, conn: ConnId, now: Instant) {
        // Take the session out so handlers can reach every other session
        // (broadcast) through `self`; the sender is excluded for free.
        let Some(mut s) = self
            .sessions
            .get_mut(conn.index())
            .and_then(|slot| slot.take_if(|s| s.id == conn))
        else {
            return;
        };
        let max_output = self.shared.config.max_output;
        'reads: for _ in 0..READS_PER_POLL {
            if s.closing.is_some() || s.bcast_paused {
                break;
            }
            if s.out.len() >= max_output {
                s.paused = true;
                self.t.pause_recv(conn, true);
                break;
            }
            let buf = s.decoder.read_buf();
            let n = if buf.is_empty() {
                0
            } else {
                match self.t.recv(conn, buf) {
                    Ok(n) => n,
                    // The transport reports Closed next; keep the session until then.
                    Err(_) => break,
                }
            };
            s.decoder.commit(n);
            loop {
                match s.decoder.decode() {
                    Ok(Some(frame)) => {
                        self.handle(&mut s, frame, now);
                        if s.closing.is_some() || s.out.len() >= max_output || s.bcast_paused {
                            break 'reads;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.protocol_error(&mut s, e, now);
                        break 'reads;
                    }
                }
            }
            if n == 0 {
                break;
            }
        }
        // The cap stops decoding with whole frames possibly left in the
        // decoder; the pause at the top of the loop catches that only when
        // another read follows. After the poll's last read, or a read that
        // brought nothing (a resumed session whose input is all buffered
        // already), no Readable may ever come again: pause here so the
        // drain in `flush_dirty` resumes the session and decodes them.
        if s.closing.is_none() && !s.paused && s.out.len() >= max_output {
            s.paused = true;
            self.t.pause_recv(conn, true);
        }
        // After the peer's FIN, a pass that ends unpaused has answered
        // every whole frame: flush, then close.
        if s.peer_finished && s.closing.is_none() && !s.paused && !s.bcast_paused {
            tracing::trace!(worker = self.index, %conn, "peer finished: closing after the replies");
            self.begin_close(&mut s, now);
        }
        let held = s.decoder.allocated();
        self.account_input(&mut s, held);
        let dirty = !s.out.is_empty() || (s.closing.is_some() && !s.close_sent);
        self.sessions[conn.index()] = Some(s);
        if dirty {
            self.mark_dirty(conn);
        }
    }

    fn protocol_error(&mut self, s: &mut Session, e: DecodeError, now: Instant) {
        tracing::debug!(worker = self.index, conn = %s.id, error = %e, "protocol error");
        self.send_error(s, e.code(), &e.error.to_string(), e.request_id, now);
    }

    /// Queues an encoded frame on a session.
    fn queue(&self, s: &mut Session, f: FrameRef<'_>) {
        let before = s.out.len();
        if f.encode(s.out.replies_mut()).is_ok() {
            WorkerCounters::add(&self.counters().messages_out, 1);
            WorkerCounters::add(&self.counters().bytes_out, (s.out.len() - before) as u64);
        }
    }

    fn reply(&self, s: &mut Session, msg_type: MessageType, request_id: u64, body: &[u8]) {
        self.queue(
            s,
            FrameRef {
                msg_type,
                flags: Flags::RESPONSE,
                request_id,
                meta: &[],
                body,
            },
        );
    }

    fn send_error(
        &mut self,
        s: &mut Session,
        code: ErrorCode,
        msg: &str,
        request_id: Option<u64>,
        now: Instant,
    ) {
        WorkerCounters::add(&self.counters().errors, 1);
        let f = ErrorBody::new(code, msg).frame(request_id);
        self.queue(s, f.as_ref());
        if code.closes_connection() {
            self.begin_close(s, now);
        }
    }

    fn begin_close(&mut self, s: &mut Session, now: Instant) {
        if s.closing.is_none() {
            s.closing = Some(now + CLOSE_FLUSH_LIMIT);
            self.set_eligible(s, false);
            self.t.pause_recv(s.id, true);
        }
    }

    fn handle(&mut self, s: &mut Session, f: Frame, now: Instant) {
        let c = self.counters();
        WorkerCounters::add(&c.messages_in, 1);
        WorkerCounters::add(&c.bytes_in, f.encoded_len() as u64);
        s.last_frame = now;
        let id = f.request_id;
        if !s.limit.allow(now) || !self.global.allow(now) {
            WorkerCounters::add(&self.counters().rate_limited, 1);
            self.send_error(
                s,
                ErrorCode::RateLimited,
                "rate limit exceeded; frame dropped",
                Some(id),
                now,
            );
            return;
        }
        let cfg = &self.shared.config;
        if cfg.require_auth
            && s.user.is_none()
            && !matches!(
                f.msg_type,
                MessageType::PING | MessageType::AUTH | MessageType::PONG | MessageType::ERROR
            )
        {
            s.unauthenticated += 1;
            let close = s.unauthenticated >= cfg.max_unauthenticated;
            self.send_error(
                s,
                ErrorCode::Unauthenticated,
                "authenticate first (AUTH)",
                Some(id),
                now,
            );
            if close {
                self.begin_close(s, now);
            }
            return;
        }
        // Frames flagged RESPONSE answer something we sent; PONG and ERROR
        // are expected (heartbeats, peer complaints) and never answered, so
        // two endpoints can never bounce errors back and forth.
        match f.msg_type {
            MessageType::PONG => {}
            MessageType::ERROR => {
                tracing::debug!(worker = self.index, conn = %s.id, "peer sent ERROR");
            }
            _ if f.flags.is_response() => {
                self.send_error(
                    s,
                    ErrorCode::UnknownType,
                    "unexpected response frame",
                    Some(id),
                    now,
                );
            }
            MessageType::PING => self.reply(s, MessageType::PONG, id, &f.body),
            MessageType::ECHO => self.reply(s, MessageType::ECHO_REPLY, id, &f.body),
            MessageType::BROADCAST => {
                let recipients = self.broadcast(s, &f.body, now);
                self.reply(
                    s,
                    MessageType::BROADCAST_ACK,
                    id,
                    &BroadcastAck { recipients }.encode(),
                );
            }
            MessageType::AUTH => self.auth(s, &f, now),
            MessageType::DATA => {
                s.sent_data = true;
                let info = SessionInfo {
                    session_id: &s.session_id,
                    user: s.user.as_deref(),
                    worker: self.index,
                };
                match self.shared.handlers.data().on_data(&info, &f.body) {
                    Ok(n) if f.flags.ack_requested() => {
                        self.reply(
                            s,
                            MessageType::DATA_ACK,
                            id,
                            &DataAck { bytes_accepted: n }.encode(),
                        );
                    }
                    Ok(_) => {}
                    Err(e) => self.send_error(s, ErrorCode::Internal, &e.message, Some(id), now),
                }
            }
            MessageType::STATS => match self.shared.metrics.totals().response(id) {
                Ok(reply) => self.queue(s, reply.as_ref()),
                Err(_) => {
                    self.send_error(s, ErrorCode::Internal, "stats unavailable", Some(id), now)
                }
            },
            t if t.is_application() => {
                let info = SessionInfo {
                    session_id: &s.session_id,
                    user: s.user.as_deref(),
                    worker: self.index,
                };
                match self.shared.handlers.app(t.0).map(|h| h.handle(&info, &f)) {
                    Some(Ok(Some(body))) => self.reply(s, t, id, &body),
                    Some(Ok(None)) => {}
                    Some(Err(e)) => {
                        self.send_error(s, ErrorCode::Internal, &e.message, Some(id), now)
                    }
                    None => {
                        let msg = format!("no handler for type {t}");
                        self.send_error(s, ErrorCode::UnknownType, &msg, Some(id), now);
                    }
                }
            }
            t => {
                let msg = format!("type {t} is not a request this server handles");
                self.send_error(s, ErrorCode::UnknownType, &msg, Some(id), now);
            }
        }
        let ns = Instant::now().saturating_duration_since(now).as_nanos();
        let _ = self
            .hist
            .record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
    }

    fn auth(&mut self, s: &mut Session, f: &Frame, now: Instant) {
        let id = f.request_id;
        // The decoder checked AUTH bodies already; this cannot fail for a
        // decoded frame, but a failure is still answered properly.
        let Ok(a) = Auth::decode(&f.body) else {
            self.send_error(s, ErrorCode::Malformed, "bad AUTH body", Some(id), now);
            return;
        };
        let Some(users) = self.shared.users.as_ref() else {
            // No users configured: nothing to check against. Refuse with
            // AUTH_REPLY ok=0; the session continues unauthenticated.
            let r = AuthReply {
                ok: false,
                session_id: [0; 16],
            };
            self.reply(s, MessageType::AUTH_REPLY, id, &r.encode());
            return;
        };
        if users.verify(a.user, a.token) {
            s.user = Some(a.user.to_owned());
            let r = AuthReply {
                ok: true,
                session_id: s.session_id,
            };
            self.reply(s, MessageType::AUTH_REPLY, id, &r.encode());
            if s.closing.is_none() {
                self.set_eligible(s, true);
            }
            tracing::info!(worker = self.index, conn = %s.id, user = a.user, "authenticated");
        } else {
            s.auth_failures += 1;
            let close = s.auth_failures >= self.shared.config.max_auth_failures;
            tracing::info!(worker = self.index, conn = %s.id, user = a.user, failures = s.auth_failures, "authentication failed");
            self.send_error(s, ErrorCode::AuthFailed, "bad user or token", Some(id), now);
            if close {
                self.begin_close(s, now);
            }
        }
    }

    fn flush_dirty(&mut self) {
        let max_output = self.shared.config.max_output;
        let dirty = std::mem::take(&mut self.dirty);
        for conn in &dirty {
            let Some(s) = self
                .sessions
                .get_mut(conn.index())
                .and_then(Option::as_mut)
                .filter(|s| s.id == *conn)
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
                // A sender paused for its broadcasts' readers stays paused.
                if !s.bcast_paused {
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

    /// Moves a session's share of the server-wide input total to `now_held`.
    fn account_input(&self, s: &mut Session, now_held: usize) {
        let total = &self.shared.buffered_input;
        if now_held > s.accounted {
            total.fetch_add(now_held - s.accounted, Ordering::Relaxed);
        } else {
            total.fetch_sub(s.accounted - now_held, Ordering::Relaxed);
        }
        s.accounted = now_held;
    }

    /// Over the server-wide input budget: refuses this worker's largest
    /// partial frames (SERVER_BUSY, then close) until the total fits or
    /// none is left. Every worker does this for its own sessions, so the
    /// total comes down within one housekeeping period.
    fn enforce_input_budget(&mut self, now: Instant) {
        let budget = self.shared.config.max_buffered_input;
        if self.shared.buffered_input.load(Ordering::Relaxed) <= budget {
            return;
        }
        let mut partial: Vec<(usize, ConnId)> = self
            .sessions
            .iter()
            .flatten()
            .filter(|s| s.closing.is_none() && s.decoder.partial_frame().is_some())
            .map(|s| (s.decoder.allocated(), s.id))
            .collect();
        partial.sort_unstable_by(|a, b| b.cmp(a));
        for (held, id) in partial {
            if self.shared.buffered_input.load(Ordering::Relaxed) <= budget {
                break;
            }
            let Some(mut s) = self.sessions.get_mut(id.index()).and_then(Option::take) else {
                continue;
            };
            WorkerCounters::add(&self.counters().input_refused, 1);
            let msg = format!(
                "server input budget of {budget} bytes exceeded: a partial frame holding {held} bytes refused"
            );
            tracing::debug!(worker = self.index, conn = %id, held, "input budget: refusing a partial frame");
            // The decoder's memory goes now, not when the close completes.
            s.decoder = Decoder::new(*s.decoder.config());
            self.account_input(&mut s, 0);
            self.send_error(&mut s, ErrorCode::ServerBusy, &msg, None, now);
            self.sessions[id.index()] = Some(s);
            self.mark_dirty(id);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.enforce_input_budget(now);
        self.counters()
            .accept_errors
            .store(self.t.accept_errors(), Ordering::Relaxed);
        let idle = self.shared.config.idle_timeout;
        let mut idle_ids = Vec::new();
        let mut stuck = Vec::new();
        for s in self.sessions.iter().flatten() {
            match s.closing {
                None if now.saturating_duration_since(s.last_frame) >= idle => idle_ids.push(s.id),
                Some(deadline) if now >= deadline && !s.close_sent => stuck.push(s.id),
                _ => {}
            }
        }
        for id in idle_ids {
            if let Some(mut s) = self.sessions.get_mut(id.index()).and_then(Option::take) {
                let msg = format!("no frame for {} s", idle.as_secs_f64());
                self.send_error(&mut s, ErrorCode::IdleTimeout, &msg, None, now);
                self.sessions[id.index()] = Some(s);
                self.mark_dirty(id);
            }
        }
        for id in stuck {
            if let Some(s) = self.session_mut(id) {
                s.out.clear();
                s.close_sent = true;
                self.t.close(id);
            }
        }
        self.shared
            .metrics
            .publish_latency(self.index, &mut self.hist);
    }

    fn begin_drain(&mut self, now: Instant) {
        tracing::info!(
            worker = self.index,
            "shutting down: flushing replies and closing connections"
        );
        self.draining = Some(now + self.shared.config.shutdown_grace);
        let ids: Vec<ConnId> = self.sessions.iter().flatten().map(|s| s.id).collect();
        for id in ids {
            if let Some(mut s) = self.sessions.get_mut(id.index()).and_then(Option::take) {
                self.begin_close(&mut s, now);
                self.sessions[id.index()] = Some(s);
                self.mark_dirty(id);
            }
        }
    }
}
