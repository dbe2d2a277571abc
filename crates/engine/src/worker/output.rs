//! A session's queued output: its replies, and the broadcast relays it is
//! to receive, sent with replies first.
//!
//! Replies are encoded into one buffer, in request order. Relays are the
//! same `Bytes` for every recipient (one encoding, shared, no copy per
//! reader) and wait in their own queue. Between whole frames, replies go
//! first: a PONG does not wait behind megabytes of broadcasts queued for
//! the same connection. A frame once started is finished before the other
//! queue is served, so frames never interleave on the wire.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use warpwire_transport::{ConnId, Transport};

/// Reply buffers larger than this are given back once empty.
const KEEP_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Default)]
pub(super) struct Output {
    replies: BytesMut,
    relays: VecDeque<Bytes>,
    /// Bytes of `relays`, the sent part of the front one included.
    relay_bytes: usize,
    /// Bytes of the front relay already sent (it is finished first).
    relay_sent: usize,
}

impl Output {
    /// Bytes still to send.
    pub(super) fn len(&self) -> usize {
        self.replies.len() + self.relay_bytes - self.relay_sent
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where replies are encoded.
    pub(super) fn replies_mut(&mut self) -> &mut BytesMut {
        &mut self.replies
    }

    /// Queues a relay (shared, not copied).
    pub(super) fn push_relay(&mut self, relay: Bytes) {
        self.relay_bytes += relay.len();
        self.relays.push_back(relay);
    }

    /// Drops everything queued.
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Sends as much as the transport takes, replies first between frames.
    pub(super) fn flush<T: Transport>(&mut self, t: &mut T, conn: ConnId) {
        loop {
            // A relay half sent is finished before anything else.
            if self.relay_sent == 0 && !self.replies.is_empty() {
                match t.send(conn, &self.replies) {
                    Ok(n) if n > 0 => self.replies.advance(n),
                    _ => return,
                }
                if !self.replies.is_empty() {
                    return;
                }
                continue;
            }
            let Some(front) = self.relays.front() else {
                break;
            };
            match t.send(conn, &front[self.relay_sent..]) {
                Ok(n) if n > 0 => self.relay_sent += n,
                _ => return,
            }
            if self.relay_sent < front.len() {
                return;
            }
            self.relay_bytes -= front.len();
            self.relay_sent = 0;
            self.relays.pop_front();
        }
        if self.replies.capacity() > KEEP_CAPACITY {
            self.replies = BytesMut::new();
        }
    }
}
