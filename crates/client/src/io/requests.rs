//! The request path of the I/O thread: requests onto the wire, replies back
//! to their callers.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Buf;
use crossbeam_channel::{TryRecvError, TrySendError};
use warpwire_frame::{AuthReply, EncodeError, ErrorBody, Flags, Frame, FrameRef, MessageType};
use warpwire_transport::{ConnId, Transport};

use super::{Done, IoLoop, Kind, Lost, READS_PER_ITERATION, State, Submit};
use crate::ClientError;

impl<T: Transport> IoLoop<T> {
    pub(super) fn read(&mut self, conn: ConnId, now: Instant) {
        for _ in 0..READS_PER_ITERATION {
            let buf = self.decoder.read_buf();
            if buf.is_empty() {
                // Only a failed decoder offers no room (frames are decoded
                // after every read); the error was handled below.
                return;
            }
            let n = match self.transport.recv(conn, buf) {
                Ok(n) => n,
                Err(e) => {
                    self.lost(Lost::Io(e), now);
                    return;
                }
            };
            if n == 0 {
                return;
            }
            self.decoder.commit(n);
            loop {
                match self.decoder.decode() {
                    Ok(Some(frame)) => self.dispatch(frame, now),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable frame from server");
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

    pub(super) fn dispatch(&mut self, frame: Frame, now: Instant) {
        if frame.flags.is_response() {
            match self.entries.remove(&frame.request_id) {
                Some(Kind::Reply(tx)) => {
                    let r = if frame.msg_type == MessageType::ERROR {
                        Err(server_error(&frame))
                    } else {
                        Ok(frame)
                    };
                    let _ = tx.send(r);
                }
                Some(Kind::Heartbeat) => self.heartbeat = None,
                Some(Kind::Auth) => {
                    let accepted = frame.msg_type == MessageType::AUTH_REPLY
                        && AuthReply::decode(&frame.body).is_ok_and(|r| r.ok);
                    match self.state {
                        State::Authenticating { conn, .. } if accepted => self.become_ready(conn),
                        _ => {
                            tracing::warn!(reply = %frame.msg_type, "authentication rejected");
                            self.lost(Lost::AuthRejected, now);
                        }
                    }
                }
                // The error of a fire-and-forget request, or of one that
                // timed out: subscribers are the only ones who can see it.
                None if frame.msg_type == MessageType::ERROR => self.deliver(frame),
                None => {
                    self.shared.late_replies.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        if frame.msg_type == MessageType::PING {
            // The server probes us: answer like any peer would.
            self.out.reserve(frame.encoded_len());
            let pong = FrameRef {
                msg_type: MessageType::PONG,
                flags: Flags::RESPONSE,
                request_id: frame.request_id,
                meta: &[],
                body: &frame.body,
            };
            // A PING body is 8 bytes (the decoder checked), so it encodes.
            let _ = pong.encode(&mut self.out);
            return;
        }
        self.deliver(frame);
    }

    /// Hands a server-initiated frame to every subscriber without blocking.
    pub(super) fn deliver(&self, frame: Frame) {
        let Ok(mut subs) = self.shared.subscribers.lock() else {
            return;
        };
        if subs.senders.is_empty() {
            let cap = self.cfg.subscription_capacity;
            match subs.early.as_mut() {
                Some(early) if early.len() < cap => early.push_back(frame),
                Some(_) => {
                    self.shared
                        .dropped_broadcasts
                        .fetch_add(1, Ordering::Relaxed);
                }
                None => {}
            }
            return;
        }
        subs.senders.retain(|s| match s.try_send(frame.clone()) {
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

    pub(super) fn send_request(&mut self, s: Submit, now: Instant) {
        let Submit {
            msg_type,
            flags,
            meta,
            body,
            deadline,
            done,
        } = s;
        match done {
            Done::Reply(tx) => {
                self.encode(
                    msg_type,
                    flags,
                    &meta,
                    &body,
                    Kind::Reply(tx),
                    deadline,
                    now,
                );
            }
            Done::Written(tx) => {
                let r = self
                    .encode_frame(msg_type, flags, &meta, &body, now)
                    .map_err(ClientError::Encode);
                let _ = tx.send(r);
            }
        }
    }

    /// Encodes a request that expects a reply and tracks it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn encode(
        &mut self,
        msg_type: MessageType,
        flags: Flags,
        meta: &[u8],
        body: &[u8],
        kind: Kind,
        deadline: Instant,
        now: Instant,
    ) -> Option<u64> {
        match self.encode_frame(msg_type, flags, meta, body, now) {
            Ok(id) => {
                self.entries.insert(id, kind);
                self.deadlines.push(deadline, id);
                Some(id)
            }
            Err(e) => {
                if let Kind::Reply(tx) = kind {
                    let _ = tx.send(Err(ClientError::Encode(e)));
                }
                None
            }
        }
    }

    /// Appends one frame with the next id to the output buffer and returns
    /// the id; on error nothing is written and the id is not used.
    pub(super) fn encode_frame(
        &mut self,
        msg_type: MessageType,
        flags: Flags,
        meta: &[u8],
        body: &[u8],
        now: Instant,
    ) -> Result<u64, EncodeError> {
        let id = self.next_id;
        FrameRef {
            msg_type,
            flags,
            request_id: id,
            meta,
            body,
        }
        .encode(&mut self.out)?;
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
            match self.transport.send(conn, &self.out) {
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

/// The error a server's ERROR reply stands for.
fn server_error(frame: &Frame) -> ClientError {
    match ErrorBody::decode(&frame.body) {
        Ok(b) => ClientError::Server {
            code: b.code,
            message: b.message.to_owned(),
        },
        Err(e) => ClientError::Body(e),
    }
}
