//! BROADCAST: relays to every other eligible connection on every worker,
//! with backpressure so that one fast sender slows down instead of evicting
//! readers.
//!
//! ```text
//!  sender's worker                          another worker
//!  BROADCAST ─► deliver_local ─► readers    inbox (bounded in relays and
//!     │                                       bytes) ─► drain_inbox ─► readers
//!     └─► push to each other worker's inbox ──┘
//!  pressure? (a local reader more than half its output cap behind, or an
//!             inbox more than half full in bytes)
//!     └─► pause reading from the sender until the pressure is gone, or
//!         BROADCAST_STALL has passed (a reader that reads nothing must not
//!         stall broadcasts forever: it is evicted on the next relay)
//! ```
//!
//! A worker whose own readers are under pressure stops draining its inbox
//! (for at most BROADCAST_STALL), so the pressure reaches the sender's
//! worker through the inbox's byte count. Readers that keep reading are
//! never evicted; a reader whose queue would pass `max_output` is, as
//! before, and the log line for it is rate-limited (the counter is not).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use warpwire_transport::{ConnId, Transport};

use super::{Core, Session};
use crate::metrics::WorkerCounters;
use crate::protocol::Relay;

/// Relays taken from the inbox per loop iteration.
const INBOX_BUDGET: usize = 1024;
/// Longest a broadcaster stays paused (or an inbox undrained) because of
/// reader pressure: a reader that reads nothing costs broadcasts at most
/// this long before the next relay evicts it.
pub(crate) const BROADCAST_STALL: Duration = Duration::from_secs(1);
/// At most one "dropping slow reader" log line per worker this often.
const SLOW_LOG_EVERY: Duration = Duration::from_secs(1);

/// A worker's inbox of encoded relays from the other workers, bounded in
/// relays and in bytes (a count bound alone let 4,096 relays of 1 MiB hold
/// gigabytes).
pub(crate) struct Inbox {
    queue: ArrayQueue<Bytes>,
    bytes: AtomicUsize,
    max_bytes: usize,
}

impl Inbox {
    /// An inbox of at most `relays` relays and `max_bytes` bytes.
    pub(crate) fn new(relays: usize, max_bytes: usize) -> Self {
        Self {
            queue: ArrayQueue::new(relays.max(1)),
            bytes: AtomicUsize::new(0),
            max_bytes,
        }
    }

    /// Queues a relay, or gives it back when the inbox is full.
    fn push(&self, relay: Bytes) -> Result<(), Bytes> {
        let len = relay.len();
        // Reserve first so concurrent senders cannot overshoot together.
        let before = self.bytes.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > self.max_bytes {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(relay);
        }
        self.queue.push(relay).inspect_err(|_| {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
        })
    }

    fn pop(&self) -> Option<Bytes> {
        let relay = self.queue.pop()?;
        self.bytes.fetch_sub(relay.len(), Ordering::AcqRel);
        Some(relay)
    }

    /// Whether more than half the byte bound is queued.
    fn pressed(&self) -> bool {
        self.bytes.load(Ordering::Acquire) > self.max_bytes / 2
    }
}

/// Broadcast state of one worker.
#[derive(Debug, Default)]
pub(crate) struct BroadcastState {
    /// Senders paused under pressure, and since when.
    paused: Vec<ConnId>,
    paused_since: Option<Instant>,
    /// Since when the inbox has been left undrained under pressure.
    inbox_stalled: Option<Instant>,
    /// Largest queued output of a local reader after the last delivery.
    max_backlog: usize,
    /// Rate limit of the slow-reader log line: last line, lines skipped.
    slow_logged: Option<Instant>,
    slow_skipped: u64,
    /// The last publish found readers behind: pause its sender.
    pressed: bool,
}

impl BroadcastState {
    /// Whether the last publish asked for its sender to be paused (once).
    pub(super) fn take_pressed(&mut self) -> bool {
        std::mem::take(&mut self.pressed)
    }
}

impl<T: Transport, C> Core<T, C> {
    /// Relays one encoded message to every other eligible connection on
    /// every worker; returns the recipient count (remote workers' counts as
    /// of now). Notes when readers fall behind, so the sender is paused.
    pub(super) fn broadcast(&mut self, bytes: Bytes) -> u64 {
        let now = self.now;
        let mut recipients = self.deliver_local(&bytes, now);
        let mut pressed = self.bcast.max_backlog > self.shared.config.max_output / 2;
        for (w, inbox) in self.shared.inboxes.iter().enumerate() {
            if w == self.index {
                continue;
            }
            let n = self.shared.eligible[w].load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            match inbox.push(bytes.clone()) {
                Ok(()) => {
                    recipients += n;
                    if let Some(wk) = self.shared.wakers.get().and_then(|v| v.get(w)) {
                        wk.wake();
                    }
                }
                Err(_) => WorkerCounters::add(&self.counters().broadcast_dropped, n),
            }
            pressed |= inbox.pressed();
        }
        self.bcast.pressed |= pressed;
        recipients
    }

    /// Stops reading from a sender until its readers catch up.
    pub(super) fn pause_broadcaster(&mut self, s: &mut Session<C>, now: Instant) {
        if s.bcast_paused {
            return;
        }
        s.bcast_paused = true;
        self.t.pause_recv(s.id(), true);
        self.bcast.paused.push(s.id());
        self.bcast.paused_since.get_or_insert(now);
        WorkerCounters::add(&self.counters().broadcast_paused, 1);
    }

    /// Whether readers here are behind, or another worker's inbox is.
    fn broadcast_pressure(&self) -> bool {
        let half = self.shared.config.max_output / 2;
        self.sessions
            .iter()
            .flatten()
            .any(|s| s.eligible && s.closing.is_none() && s.out.len() > half)
            || self
                .shared
                .inboxes
                .iter()
                .enumerate()
                .any(|(w, i)| w != self.index && i.pressed())
    }

    /// Resumes paused senders once the pressure is gone (or has lasted
    /// BROADCAST_STALL). Returns whether any was resumed.
    pub(super) fn resume_broadcasters(&mut self, now: Instant) -> bool {
        let Some(since) = self.bcast.paused_since else {
            return false;
        };
        if now.saturating_duration_since(since) < BROADCAST_STALL && self.broadcast_pressure() {
            return false;
        }
        self.bcast.paused_since = None;
        for id in std::mem::take(&mut self.bcast.paused) {
            let Some(s) = self.session_mut(id) else {
                continue;
            };
            s.bcast_paused = false;
            if !s.paused && !s.waiting && s.closing.is_none() {
                self.t.pause_recv(id, false);
                self.resumed.push(id);
            }
        }
        true
    }

    /// Whether senders wait on reader pressure (the loop then sleeps
    /// briefly instead of until the next event, to notice relief).
    pub(super) fn broadcast_waiting(&self) -> bool {
        self.bcast.paused_since.is_some() || self.bcast.inbox_stalled.is_some()
    }

    /// Queues a relay on every eligible local session; drops readers it
    /// would push past `max_output`. Records the largest backlog left.
    fn deliver_local(&mut self, bytes: &Bytes, now: Instant) -> u64 {
        let max_output = self.shared.config.max_output;
        let mut delivered = 0;
        let mut slow = Vec::new();
        let mut max_backlog = 0;
        let mut rewritten = bytes::BytesMut::new();
        let mut sent_bytes = 0u64;
        for s in self.sessions.iter_mut().flatten() {
            if !s.eligible || s.closing.is_some() {
                continue;
            }
            let relay = match (self.relay)(&mut s.conn, bytes, &mut rewritten) {
                Relay::AsIs => bytes.clone(),
                Relay::Rewritten => rewritten.split().freeze(),
                Relay::Skip => {
                    rewritten.clear();
                    continue;
                }
            };
            if s.out.len() + relay.len() > max_output {
                slow.push(s.id());
                continue;
            }
            sent_bytes += relay.len() as u64;
            s.out.push_relay(relay);
            max_backlog = max_backlog.max(s.out.len());
            delivered += 1;
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(s.id());
            }
        }
        self.bcast.max_backlog = max_backlog;
        let c = &self.shared.metrics.workers[self.index];
        WorkerCounters::add(&c.messages_out, delivered);
        WorkerCounters::add(&c.bytes_out, sent_bytes);
        for id in slow {
            WorkerCounters::add(&self.counters().slow_consumers, 1);
            self.log_slow_reader(id, now);
            if let Some(mut s) = self.sessions.get_mut(id.index()).and_then(Option::take) {
                s.out.clear();
                self.begin_close(&mut s, now);
                s.close_sent = true;
                self.t.close(id);
                self.sessions[id.index()] = Some(s);
            }
        }
        delivered
    }

    fn log_slow_reader(&mut self, id: ConnId, now: Instant) {
        let b = &mut self.bcast;
        if b.slow_logged
            .is_some_and(|t| now.saturating_duration_since(t) < SLOW_LOG_EVERY)
        {
            b.slow_skipped += 1;
            return;
        }
        tracing::warn!(
            worker = self.index,
            conn = %id,
            not_logged_since_last = b.slow_skipped,
            "dropping slow reader: broadcast backlog full (slow_consumers_total counts every one)"
        );
        b.slow_logged = Some(now);
        b.slow_skipped = 0;
    }

    /// Delivers relays from other workers, unless this worker's readers are
    /// behind (then the relays wait, for at most BROADCAST_STALL, and the
    /// inbox's byte count slows the senders).
    pub(super) fn drain_inbox(&mut self, now: Instant) -> bool {
        let half = self.shared.config.max_output / 2;
        if let Some(since) = self.bcast.inbox_stalled {
            let behind = self
                .sessions
                .iter()
                .flatten()
                .any(|s| s.eligible && s.closing.is_none() && s.out.len() > half);
            if behind && now.saturating_duration_since(since) < BROADCAST_STALL {
                return false;
            }
            self.bcast.inbox_stalled = None;
        }
        let mut any = false;
        for _ in 0..INBOX_BUDGET {
            let Some(bytes) = self.shared.inboxes[self.index].pop() else {
                break;
            };
            any = true;
            self.deliver_local(&bytes, now);
            if self.bcast.max_backlog > half {
                self.bcast.inbox_stalled = Some(now);
                break;
            }
        }
        any
    }
}
