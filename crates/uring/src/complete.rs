//! Completions: each reaped CQE updates a connection or a listener and may
//! queue an event for the consumer or a follow-up SQE (submitted with the
//! next enter).

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Instant;

use io_uring::cqueue;
use warpwire_transport::{CloseReason, ConnId, Event};

use crate::UringTransport;
use crate::conn::{RxBuf, Shutdown, State};
use crate::ops::{self, Op};

const EINTR: i32 = libc::EINTR;
const EAGAIN: i32 = libc::EAGAIN;
const ECANCELED: i32 = libc::ECANCELED;
const ENOBUFS: i32 = libc::ENOBUFS;

use warpwire_socket::is_resource_errno as is_resource_error;

/// Errors of one connection that accept(2) passes on (see its man page):
/// that connection is gone, the listener is fine; accept again at once.
fn is_per_connection_accept_error(errno: i32) -> bool {
    matches!(
        errno,
        libc::ECONNABORTED
            | libc::EINTR
            | libc::EAGAIN
            | libc::EPERM
            | libc::EPROTO
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH
    )
}

impl UringTransport {
    /// Takes the completions the kernel has posted (at most one ring's
    /// worth: the work of one poll is bounded by the CQ size) and applies
    /// them. Returns how many there were.
    pub(crate) fn reap(&mut self, now: Instant) -> usize {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        {
            let cq = self.ring.completion();
            let cap = cq.capacity();
            cqes.extend(cq.take(cap).map(|e| (e.user_data(), e.result(), e.flags())));
        }
        for &(user_data, res, flags) in &cqes {
            self.complete(user_data, res, flags, now);
        }
        let n = cqes.len();
        self.cqes = cqes;
        n
    }

    fn complete(&mut self, user_data: u64, res: i32, flags: u32, now: Instant) {
        let more = cqueue::more(flags);
        if !more {
            self.inflight = self.inflight.saturating_sub(1);
        }
        let buf = cqueue::buffer_select(flags);
        if buf.is_some() {
            self.bufs.taken();
        }
        let Some((op, index, tag)) = ops::decode(user_data) else {
            if let Some(bid) = buf {
                self.bufs.recycle(bid);
            }
            return;
        };
        match op {
            Op::Wake => self.on_wake(res),
            Op::Accept => self.on_accept(index, res, more, now),
            _ => {
                let Some((id, c)) = self.conns.at_mut(index) else {
                    if let Some(bid) = buf {
                        self.bufs.recycle(bid);
                    }
                    return;
                };
                if !more {
                    c.ops = c.ops.saturating_sub(1);
                }
                match op {
                    Op::Recv => self.on_recv(id, tag, res, more, buf),
                    Op::Send => self.on_send(id, res),
                    Op::Connect => self.on_connect(id, res),
                    Op::Shutdown => self.on_shutdown(index, res),
                    _ => {}
                }
                self.free_if_done(index);
            }
        }
    }

    fn on_wake(&mut self, res: i32) {
        match res {
            r if r >= 0 || r == -EINTR || r == -EAGAIN => self.arm_wake(),
            r if r == -ECANCELED => {}
            r => {
                // Should not happen (the eventfd is ours and blocking); a
                // `wait` can no longer be interrupted early, only time out.
                tracing::warn!(
                    error = %std::io::Error::from_raw_os_error(-r),
                    "uring waker read failed; wakes are ignored from now on"
                );
            }
        }
    }

    fn on_accept(&mut self, li: usize, res: i32, more: bool, now: Instant) {
        if !more && let Some(l) = self.listeners.get_mut(li) {
            l.armed = false;
        }
        let closed = self.listeners.get(li).is_none_or(|l| l.closed);
        if res >= 0 {
            // SAFETY: a successful accept completion carries a descriptor
            // the kernel just installed for us; nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            self.accept_backoff = None;
            if closed {
                // Accepted just before `stop_listening`: reset, as the
                // kernel resets what the listener had queued.
                let _ = socket2::SockRef::from(&fd).set_linger(Some(std::time::Duration::ZERO));
            } else {
                self.adopt(fd, self.listeners[li].addr);
            }
            return;
        }
        if closed {
            // The end of a listener `stop_listening` shut down.
            return;
        }
        let errno = -res;
        if errno == ECANCELED {
            return;
        }
        if is_per_connection_accept_error(errno) {
            // That connection is gone; `poll` re-arms at once.
            return;
        }
        // Out of descriptors or memory: the connection stays in the
        // kernel's backlog, and re-arming at once would fail at once. Back
        // off (doubling from 10 ms to 1 s) while the connections already
        // held are served; `poll` re-arms when the pause is over. Any other
        // failure is the listener's own: retried the same way, not in a spin.
        let wait = warpwire_socket::next_accept_backoff(self.accept_backoff.map(|(_, d)| d));
        self.accept_backoff = Some((now + wait, wait));
        let error = std::io::Error::from_raw_os_error(errno);
        if is_resource_error(errno) {
            self.accept_errors += 1;
            // One line per backoff step: at the cap, one a second.
            tracing::warn!(
                %error,
                retry_in_ms = wait.as_millis() as u64,
                failures = self.accept_errors,
                "cannot accept: out of resources; backing off (raise `ulimit -n` or lower max_connections)"
            );
        } else {
            tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "uring accept failed; backing off");
        }
    }

    fn on_recv(&mut self, id: ConnId, tag: u32, res: i32, more: bool, buf: Option<u16>) {
        let index = id.index();
        let max = self.config.max_queued_buffers;
        let c = &mut self.conns[index];
        let current = tag == c.recv_serial;
        if !more && current {
            c.recv_armed = false;
            c.recv_cancelling = false;
        }
        let closing = c.closing();
        if c.state == State::Dead || (closing && res > 0) {
            // Discarded: nobody reads a dead connection, and a closing one
            // drains its input without looking at it.
            if let Some(bid) = buf {
                self.bufs.recycle(bid);
            }
            if !more {
                self.maybe_arm_recv(index);
            }
            return;
        }
        if res > 0 {
            let Some(bid) = buf else { return };
            c.drained = false;
            c.rx.push_back(RxBuf {
                bid,
                off: 0,
                len: res.unsigned_abs(),
            });
            // Bounded memory per connection: one that holds `max` buffers
            // unread (paused, or a slow consumer) stops receiving; the data
            // waits in the kernel's socket buffer and TCP slows the peer.
            if more && current && !c.recv_cancelling && c.rx.len() >= max {
                self.cancel_recv(index);
            } else if !more {
                // The kernel ended the multishot on its own (a full
                // completion queue, for one): arm it again if there is room.
                self.maybe_arm_recv(index);
            }
            return;
        }
        if let Some(bid) = buf {
            self.bufs.recycle(bid);
        }
        if res == 0 {
            c.eof = true;
            if c.state == State::Open && c.drained && !c.paused && c.rx.is_empty() && !c.finished {
                // The consumer already read everything (a recv returned 0):
                // no Readable is needed to find the FIN.
                c.finished = true;
                self.pending.push(Event::PeerFinished(id));
            }
            if matches!(
                c.state,
                State::Closing {
                    shutdown: Shutdown::Done,
                    ..
                }
            ) {
                self.finish(index, CloseReason::Local);
            }
            return;
        }
        match -res {
            // The ring ran dry: wait until buffers come back (`poll` re-arms
            // as many starved receives as there are buffers), rather than
            // re-arming into another ENOBUFS.
            ENOBUFS => {
                if !c.starved {
                    c.starved = true;
                    self.starved.push_back(index);
                }
            }
            // Our own cancel (too many buffers held) or a transient error:
            // arm again when the connection may take more.
            ECANCELED | EAGAIN | EINTR => self.maybe_arm_recv(index),
            // A closing connection ends quietly, as the socket backend's
            // drain does on a read error.
            _ if closing => self.finish(index, CloseReason::Local),
            errno => self.finish(index, CloseReason::Reset(Some(errno))),
        }
    }

    fn on_send(&mut self, id: ConnId, res: i32) {
        let index = id.index();
        let half = self.config.send_buffer / 2;
        let c = &mut self.conns[index];
        c.sending = false;
        if c.state == State::Dead {
            return;
        }
        if res < 0 {
            match -res {
                EAGAIN | EINTR => self.push_send(index),
                _ if c.closing() => self.finish(index, CloseReason::Local),
                errno => self.finish(index, CloseReason::Reset(Some(errno))),
            }
            return;
        }
        c.flight_off += res.unsigned_abs() as usize;
        if c.flight_off < c.flight.len() {
            // MSG_WAITALL makes this rare (a signal mid-send); go on.
            self.push_send(index);
            return;
        }
        c.flight.clear();
        c.flight_off = 0;
        if !c.out.is_empty() {
            self.start_send(index);
        } else {
            // Idle again: do not keep a bulk transfer's buffers around on
            // every connection that once had one.
            let keep = self.config.send_buffer / 4;
            if c.flight.capacity() > keep {
                c.flight = Vec::new();
            }
            if c.out.capacity() > keep {
                c.out = Vec::new();
            }
        }
        let c = &mut self.conns[index];
        if c.write_blocked && c.state == State::Open && self.config.send_buffer - c.unsent() >= half
        {
            c.write_blocked = false;
            self.pending.push(Event::Writable(id));
        }
        if c.output_drained()
            && matches!(
                c.state,
                State::Closing {
                    shutdown: Shutdown::Pending,
                    ..
                }
            )
        {
            self.push_shutdown(index);
        }
    }

    fn on_connect(&mut self, id: ConnId, res: i32) {
        let index = id.index();
        let c = &mut self.conns[index];
        c.connect_addr = None;
        if c.state != State::Connecting {
            return;
        }
        if res < 0 {
            self.finish(index, CloseReason::ConnectFailed(Some(-res)));
            return;
        }
        c.state = State::Open;
        self.pending.push(Event::Connected(id));
        let has_output = !c.out.is_empty();
        self.maybe_arm_recv(index);
        if has_output && !self.conns[index].sending {
            self.start_send(index);
        }
    }

    fn on_shutdown(&mut self, index: usize, res: i32) {
        let c = &mut self.conns[index];
        let State::Closing { shutdown, .. } = &mut c.state else {
            return;
        };
        if res == -ECANCELED {
            // Linked behind a SEND that came back short or failed: queued
            // again when the rest of the output has gone (or the connection
            // ends with the SEND's error).
            *shutdown = Shutdown::Pending;
            if c.output_drained() {
                self.push_shutdown(index);
            }
            return;
        }
        *shutdown = Shutdown::Done;
        // A failed shutdown (the peer reset): nothing left to wait for, as
        // with the socket backend. Otherwise wait for the peer's FIN.
        if res < 0 || c.eof {
            self.finish(index, CloseReason::Local);
        }
    }

    /// Takes an accepted socket in: tuned, registered, receiving.
    fn adopt(&mut self, fd: OwnedFd, listener: std::net::SocketAddr) {
        let sock = socket2::Socket::from(fd);
        // No address: the peer is already gone (the socket closes on drop).
        let Some(peer) = sock.peer_addr().ok().and_then(|a| a.as_socket()) else {
            return;
        };
        self.tune(&sock, true);
        // Table full: the socket drops and the peer sees a reset.
        let Ok(conn) = self.insert(sock, peer, State::Open) else {
            return;
        };
        let index = conn.index();
        self.pending.push(Event::Accepted {
            conn,
            peer,
            listener,
        });
        self.maybe_arm_recv(index);
    }

    /// Arms connection `index`'s receive if it is not armed and may take
    /// more: open with few buffers held, or closing (draining). With the
    /// ring empty it waits in the starved list instead.
    pub(crate) fn maybe_arm_recv(&mut self, index: usize) {
        let low = self.config.max_queued_buffers / 2;
        let Some((_, c)) = self.conns.at_mut(index) else {
            return;
        };
        let wanted = !c.recv_armed
            && !c.eof
            && match c.state {
                State::Open => c.rx.len() <= low,
                State::Closing { .. } => true,
                State::Connecting | State::Dead => false,
            };
        if !wanted {
            return;
        }
        if self.bufs.available() == 0 {
            if !c.starved {
                c.starved = true;
                self.starved.push_back(index);
            }
            return;
        }
        self.arm_recv(index);
    }

    /// Ends a connection: `Closed(reason)` is reported, the id is dead, the
    /// buffers it held go back to the ring, and its operations are
    /// cancelled; the slot (and the socket) go when the last completes.
    pub(crate) fn finish(&mut self, index: usize, reason: CloseReason) {
        let Some((id, c)) = self.conns.at_mut(index) else {
            return;
        };
        if c.state == State::Dead {
            return;
        }
        if c.closing() {
            self.closing -= 1;
        }
        c.state = State::Dead;
        self.pending.push(Event::Closed(id, reason));
        for b in c.rx.drain(..) {
            self.bufs.recycle(b.bid);
        }
        c.out = Vec::new();
        if c.ops > 0 {
            self.cancel_all(index);
        } else {
            self.free_if_done(index);
        }
    }

    /// Frees a dead slot once nothing in flight names it.
    pub(crate) fn free_if_done(&mut self, index: usize) {
        if self
            .conns
            .at(index)
            .is_some_and(|(_, c)| c.state == State::Dead && c.ops == 0)
        {
            // Dropping the Conn closes the socket; the table moves the
            // slot's generation on, so the id stays dead.
            self.conns.remove_at(index);
        }
    }
}
