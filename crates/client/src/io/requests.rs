//! The request path of the I/O thread: requests onto the wire, replies back
//! to their callers.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{TryRecvError, TrySendError};
use warpwire_transport::{ConnId, Transport};

use super::{Done, IoLoop, Kind, Lost, READS_PER_ITERATION, State, Submit};
use crate::ClientError;
use crate::protocol::{ClientHooks, Correlation, Incoming, MAX_SLICES, ReplyTo};

impl<T: Transport, P: ClientHooks> IoLoop<T, P> {
    pub(super) fn read(&mut self, conn: ConnId, now: Instant) {
        for _ in 0..READS_PER_ITERATION {
            match self
                .protocol
                .receive(&mut self.codec, &mut self.transport, conn)
            {
                // Nothing more for now (Ok(0)), or no room (None): only a
                // failed stream offers none (messages are decoded after
                // every read, and the protocols bound their buffers above
                // the largest message); the error was handled below.
                None | Some(Ok(0)) => return,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    self.lost(Lost::Io(e), now);
                    return;
                }
            }
            loop {
                match self.protocol.decode(&mut self.codec) {
                    Ok(Some(m)) => {
                        let m = self.protocol.classify_for_client(m);
                        self.dispatch(m, now);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // A server's announced close (HTTP) is no anomaly.
                        if matches!(self.protocol.decode_error(e), ClientError::Disconnected) {
                            tracing::debug!(error = %e, "the server ends the connection");
                        } else {
                            tracing::warn!(error = %e, "undecodable reply stream from server");
                        }
                        self.lost(Lost::Decode(e), now);
                        return;
                    }
                }
                if self.conn() != Some(conn) {
                    return;
                }
            }
        }
    }

    pub(super) fn dispatch(&mut self, message: Incoming<P::Reply>, now: Instant) {
        let (to, reply) = match message {
            Incoming::Reply(to, reply) => (to, reply),
            Incoming::ServerInitiated(m) => {
                // The server probes us (warpwire's PING): answer like any
                // peer would; anything else goes to the subscribers.
                if !self.protocol.answer_server(&m, self.out.buf()) {
                    self.deliver(m);
                }
                return;
            }
        };
        let id = match to {
            ReplyTo::Id(id) => Some(id),
            ReplyTo::Oldest => self.order.pop_front(),
        };
        match id.and_then(|id| self.entries.remove(&id)) {
            Some(Kind::Reply(tx)) => {
                let _ = tx.send(self.protocol.reply_result(reply));
            }
            Some(Kind::Heartbeat) => self.heartbeat = None,
            Some(Kind::Handshake) => {
                let accepted = self.protocol.handshake_accepted(&reply);
                match self.state {
                    State::Handshaking { conn, .. } if accepted => self.become_ready(conn),
                    _ => {
                        tracing::warn!(protocol = self.protocol.name(), "handshake rejected");
                        self.lost(Lost::HandshakeRejected, now);
                    }
                }
            }
            None if self.protocol.deliver_unmatched(&reply) => self.deliver(reply),
            None => {
                self.shared.late_replies.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Hands a server-initiated message to every subscriber without
    /// blocking.
    pub(super) fn deliver(&self, message: P::Reply) {
        let Ok(mut subs) = self.shared.subscribers.lock() else {
            return;
        };
        if subs.senders.is_empty() {
            let cap = self.cfg.subscription_capacity;
            match subs.early.as_mut() {
                Some(early) if early.len() < cap => early.push_back(message),
                Some(_) => {
                    self.shared
                        .dropped_broadcasts
                        .fetch_add(1, Ordering::Relaxed);
                }
                None => {}
            }
            return;
        }
        subs.senders.retain(|s| match s.try_send(message.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.shared
                    .dropped_broadcasts
                    .fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// Whether a request can go onto the wire now.
    pub(super) fn has_room(&self) -> bool {
        matches!(self.state, State::Ready { .. })
            && self.entries.len() < self.cfg.max_in_flight
            && self.out.len() < self.cfg.output_buffer
    }

    /// Whether requests can be taken from the channel now: onto the wire,
    /// into the local queue (which enforces their deadlines while they
    /// wait for the connection or for room), or, when down, to be failed.
    pub(super) fn can_take(&self) -> bool {
        self.has_room()
            || matches!(self.state, State::Down)
            || self.queued.len() < self.cfg.queue_capacity
    }

    /// Moves requests from the local queue and the channel onto the wire,
    /// or into the local queue while there is no room.
    pub(super) fn pump(&mut self, now: Instant) {
        loop {
            let room = self.has_room();
            let s = match room.then(|| self.queued.pop_front()).flatten() {
                Some(s) => s,
                None if self.can_take() => match self.rx.try_recv() {
                    Ok(s) => s,
                    Err(TryRecvError::Empty) => return,
                    Err(TryRecvError::Disconnected) => {
                        self.orphaned = true;
                        return;
                    }
                },
                None => return,
            };
            if s.deadline <= now {
                s.done.fail_with(ClientError::Timeout);
                continue;
            }
            if s.done.abandoned() {
                continue;
            }
            if room {
                self.send_request(s, now);
            } else if matches!(self.state, State::Down) {
                s.done.fail_with(ClientError::Disconnected);
            } else {
                self.queued_due = Some(self.queued_due.map_or(s.deadline, |d| d.min(s.deadline)));
                self.queued.push_back(s);
            }
        }
    }

    pub(super) fn send_request(&mut self, s: Submit<P>, now: Instant) {
        let Submit {
            request,
            deadline,
            done,
        } = s;
        match done {
            Done::Reply(tx) => {
                self.encode(&request, Kind::Reply(tx), deadline, now);
            }
            // Only warpwire's `send` makes these: a request without a reply
            // has no place in an in-order stream.
            Done::Written(tx) => {
                let r = self
                    .encode_request(&request, now)
                    .map_err(|e| self.protocol.encode_error(e));
                let _ = tx.send(r);
            }
        }
    }

    /// Encodes a request that expects a reply and tracks it.
    pub(super) fn encode(
        &mut self,
        request: &P::Request,
        kind: Kind<P::Reply>,
        deadline: Instant,
        now: Instant,
    ) -> Option<u64> {
        match self.encode_request(request, now) {
            Ok(id) => {
                self.entries.insert(id, kind);
                self.deadlines.push(deadline, id);
                if P::CORRELATION == Correlation::InOrder {
                    self.order.push_back(id);
                }
                Some(id)
            }
            Err(e) => {
                if let Kind::Reply(tx) = kind {
                    let _ = tx.send(Err(self.protocol.encode_error(e)));
                }
                None
            }
        }
    }

    /// Appends one request with the next id to the output buffer and
    /// returns the id; on error nothing is written and the id is not used.
    pub(super) fn encode_request(
        &mut self,
        request: &P::Request,
        now: Instant,
    ) -> Result<u64, P::EncodeError> {
        let id = self.next_id;
        self.protocol
            .encode_into(&mut self.codec, id, request, &mut self.out)?;
        self.next_id += 1;
        self.last_send = now;
        Ok(id)
    }

    pub(super) fn flush(&mut self, now: Instant) {
        let Some(conn) = self.conn() else {
            return;
        };
        if matches!(self.state, State::Connecting { .. }) {
            return;
        }
        while !self.out.is_empty() {
            let mut slices = [&[][..]; MAX_SLICES];
            let n = self.out.slices(&mut slices);
            match self.transport.send_vectored(conn, &slices[..n]) {
                Ok(0) => break,
                Ok(n) => self.out.advance(n),
                Err(e) => {
                    self.lost(Lost::Io(e), now);
                    return;
                }
            }
        }
        if let Err(e) = self.transport.flush(now) {
            self.lost(Lost::Io(e), now);
        }
    }
}
