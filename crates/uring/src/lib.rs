//! # warpwire-uring: kernel TCP through io_uring
//!
//! The same kernel TCP as the socket backend, the same events and the same
//! semantics (level-triggered `Readable`, `PeerFinished` on the peer's FIN
//! with the connection still writable, a graceful close that drains input),
//! but driven through one io_uring per worker instead of epoll plus a read
//! or write syscall per connection: the syscalls are per batch, not per
//! connection.
//!
//! ```text
//!   poll ──► io_uring_enter, at most one per poll: submits what was queued,
//!    │       runs deferred completions; none at all when nothing is pending
//!    ▼
//!   completion queue ──► ACCEPT (multishot, this worker's SO_REUSEPORT
//!    │                   listener) → Accepted, and the connection's RECV
//!    │                   is armed
//!    │               ──► RECV (multishot) ── the kernel picks a buffer ──┐
//!    ▼                                                                   │
//!   Events (level)        provided buffer ring: 1024 × 16 KiB ◄──────────┘
//!                          │ (bid, len) queued on the connection, at most
//!                          │ 8 buffers; beyond that its RECV is cancelled
//!                          ▼ and re-armed once the consumer reads
//!   recv  ──► memcpy into the caller's (decoder's) buffer; the buffer goes
//!             straight back to the ring
//!   send  ──► copy into the connection's send buffer (256 KiB; a short
//!             count is backpressure, Event::Writable follows)
//!   flush ──► one SEND (MSG_WAITALL) per connection with output, all in
//!             one enter; `send` keeps filling a second buffer meanwhile
//!   wait  ──► io_uring_enter(GETEVENTS) with a timeout; an eventfd READ
//!             stays armed in the ring, so Wake::wake ends the sleep
//!   close ──► SEND the rest, SHUTDOWN(SHUT_WR), RECV and discard until the
//!             peer's FIN or a linger deadline, then close(2)
//! ```
//!
//! Receive copies once, as the [`Transport`] contract asks: the kernel
//! writes into a ring buffer (in place of the socket backend's read into
//! the decoder's buffer), and `recv` copies that into the caller's buffer.
//! Send copies once more than the socket backend: the caller's slice does
//! not outlive `send` and the SEND runs later, so `send` copies it into the
//! connection's buffer, from which the kernel copies into the socket as
//! `write(2)` would have from the caller's. Small replies do not notice;
//! 16 KiB messages do (a few per cent more CPU than the socket backend).
//!
//! The ring is set up single-issuer with deferred task running where the
//! kernel has it (6.1+): completions are only processed when this worker
//! enters the kernel, never by interrupting it, and `poll` sees from the
//! ring's flags whether there is anything to enter for, so a busy-polling
//! worker makes no syscall at all while nothing happens. The price, as
//! with the smoltcp stack: the instance does I/O only inside its own
//! `poll`, `flush` and `wait`. `send` and `close` queue; the SEND and the
//! FIN go to the kernel with the next of those calls (`flush` is the
//! doorbell), and a SEND waiting for socket space resumes only when the
//! worker enters again. The ring is created disabled and enabled by the
//! first thread that enters it, so an instance may be built on one thread
//! and run on another; from then on it belongs to that thread.
//!
//! Bounds: a connection holds at most `max_queued_buffers` (8 × 16 KiB)
//! received and unread before its multishot receive is cancelled; what
//! the kernel posts before the cancel is submitted comes on top (its
//! multishot loop receives up to 32 times in a row before it yields; in
//! the tests a paused connection stops at exactly 8). When the ring runs dry a
//! receive ends with ENOBUFS and waits in a starved list until `poll` has
//! buffers to give. Either way the data waits in the kernel's socket
//! buffer and TCP flow control slows the peer. Output is bounded by
//! `send_buffer` (256 KiB) per connection, split between the bytes a SEND
//! is working on and the bytes `send` is adding.
//!
//! Accepting: io_uring reads RLIMIT_NOFILE when an accept is armed and a
//! multishot accept keeps that limit, so descriptor exhaustion shows as an
//! EMFILE completion that ends the accept; it is re-armed after a backoff
//! (10 ms doubling to 1 s), never in a spin, and counted in
//! [`Transport::accept_errors`].
//!
//! Not here: zero-copy send (SEND_ZC). It was not measured to pay, and it
//! cannot here: on loopback (all this machine offers) the kernel copies
//! zero-copy pages when it delivers them to the local socket, so the copy
//! only moves, and each send gains a second completion and keeps its
//! buffer pinned until the notification. On a NIC it can pay for large
//! sends; that is unmeasured. Registered (fixed) files and buffers,
//! SQPOLL, and incremental buffer consumption are not used either.

mod bufring;
mod complete;
mod config;
mod conn;
mod ops;
mod probe;
mod submit;
mod waker;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue};
use warpwire_transport::{
    Capabilities, CloseReason, ConnId, ConnTable, Event, Events, LatencyClass, Transport,
    TransportError, Wake,
};

use crate::bufring::BufRing;
use crate::conn::{Conn, Shutdown, State};
use crate::waker::EventFdWaker;

pub use config::{ConfigError, UringConfig};
pub use probe::probe_detail;

/// Backend name, as on the command line.
const NAME: &str = "uring";
/// The one buffer group of an instance.
const BGID: u16 = 0;
/// Default TCP_NOTSENT_LOWAT: the socket backend's, shared.
use warpwire_socket::NOTSENT_LOWAT;
/// While connections linger in close, `wait` wakes at least this often to
/// check their deadlines (as the socket backend does).
const CLOSING_TICK: Duration = Duration::from_millis(100);
/// Drop waits up to QUIESCE_ROUNDS × QUIESCE_STEP for cancelled operations
/// to complete before it frees the memory they point to (and leaks it
/// instead if they do not).
const QUIESCE_ROUNDS: u32 = 100;
const QUIESCE_STEP: Duration = Duration::from_millis(10);

#[derive(Debug)]
struct Listener {
    sock: socket2::Socket,
    /// The bound address (what `listen` returned).
    addr: SocketAddr,
    /// A multishot accept is in flight.
    armed: bool,
    /// `stop_listening` shut it down: never armed again. The socket stays
    /// (bound, not listening) until the transport drops, since slot
    /// indices name listeners in `user_data`.
    closed: bool,
}

/// The io_uring kernel-TCP transport.
pub struct UringTransport {
    ring: IoUring,
    /// The ring was created disabled (single issuer): enabled by the first
    /// thread that enters it.
    enabled: bool,
    bufs: BufRing,
    listeners: Vec<Listener>,
    /// Connections; slot indices stay at most [`ops::MAX_INDEX`], so they
    /// fit a `user_data`.
    conns: ConnTable<Conn>,
    /// Events found outside the report (completions, recv, close).
    pending: Vec<Event>,
    /// Connections with output to hand to the kernel.
    dirty: Vec<usize>,
    /// Connections whose receive ended for want of buffers.
    starved: VecDeque<usize>,
    /// Connections in the closing linger.
    closing: usize,
    /// Accepting is suspended until then after a resource error.
    accept_backoff: Option<(Instant, Duration)>,
    /// Accepts that failed for lack of resources.
    accept_errors: u64,
    /// SQEs queued whose last completion is not reaped yet.
    inflight: u64,
    /// The ring failed; returned by the next poll or wait.
    error: Option<io::Error>,
    /// The time the last poll or flush passed in.
    now: Option<Instant>,
    /// Reaped completions, reused across polls.
    cqes: Vec<(u64, i32, u32)>,
    waker: Arc<EventFdWaker>,
    /// Where the waker's READ lands.
    wake_buf: Box<u64>,
    config: UringConfig,
}

impl std::fmt::Debug for UringTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringTransport")
            .field("listeners", &self.listeners.len())
            .field("conns", &self.conns.len())
            .field("inflight", &self.inflight)
            .finish()
    }
}

/// The connection `id` names, if the consumer may still use it.
fn usable(conns: &mut ConnTable<Conn>, id: ConnId) -> Result<&mut Conn, TransportError> {
    conns
        .get_mut(id)
        .filter(|c| c.usable())
        .ok_or(TransportError::UnknownConn(id))
}

/// Errors of an enter that are not failures: a timeout, a signal, a full
/// completion queue (reaped by the next poll).
fn benign(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
    )
}

/// A ring with deferred task running (6.1+), or cooperative (5.19+).
pub(crate) fn build_ring(config: &UringConfig) -> io::Result<(IoUring, bool)> {
    let mut b = IoUring::builder();
    b.setup_cqsize(config.cq_entries)
        .setup_clamp()
        .setup_submit_all()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .setup_r_disabled();
    match b.build(config.sq_entries) {
        Ok(ring) => return Ok((ring, false)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    let mut b = IoUring::builder();
    b.setup_cqsize(config.cq_entries)
        .setup_clamp()
        .setup_submit_all()
        .setup_coop_taskrun()
        .setup_taskrun_flag();
    b.build(config.sq_entries).map(|ring| (ring, true))
}

impl UringTransport {
    /// A transport with default settings.
    pub fn new() -> Result<Self, TransportError> {
        Self::with_config(UringConfig::default())
    }

    /// A transport with the given settings.
    pub fn with_config(config: UringConfig) -> Result<Self, TransportError> {
        config.validate().map_err(|e| TransportError::Backend {
            backend: NAME,
            what: "invalid configuration",
            source: Box::new(e),
        })?;
        let (ring, enabled) = build_ring(&config).map_err(TransportError::Poll)?;
        let bufs = BufRing::new(&ring.submitter(), BGID, config.buffers, config.buffer_size)
            .map_err(|e| TransportError::Backend {
                backend: NAME,
                what: "cannot register the provided buffer ring",
                source: Box::new(e),
            })?;
        let waker = Arc::new(EventFdWaker::new().map_err(TransportError::Poll)?);
        let mut t = Self {
            ring,
            enabled,
            bufs,
            listeners: Vec::new(),
            conns: ConnTable::with_limit(ops::MAX_INDEX + 1),
            pending: Vec::new(),
            dirty: Vec::new(),
            starved: VecDeque::new(),
            closing: 0,
            accept_backoff: None,
            accept_errors: 0,
            inflight: 0,
            error: None,
            now: None,
            cqes: Vec::new(),
            waker,
            wake_buf: Box::new(0),
            config,
        };
        t.arm_wake();
        t.check()?;
        Ok(t)
    }

    /// Number of connections the consumer may still use or that are
    /// closing (dead slots waiting for their operations are not counted).
    pub fn connection_count(&self) -> usize {
        self.conns
            .iter()
            .filter(|(_, c)| c.state != State::Dead)
            .count()
    }

    /// Receive buffers held by connections (received, not yet read): for
    /// metrics, and to see that paused connections do not pin the ring.
    pub fn receive_buffers_in_use(&self) -> usize {
        self.bufs.in_use()
    }

    /// Returns the error the ring failed with, once.
    fn check(&mut self) -> Result<(), TransportError> {
        match self.error.take() {
            Some(e) => Err(TransportError::Poll(e)),
            None => Ok(()),
        }
    }

    /// Keeps the first ring failure for the next poll or wait.
    fn fail(&mut self, e: io::Error) {
        self.error.get_or_insert(e);
    }

    /// Enables a ring created disabled: from now on it belongs to this
    /// thread (single issuer).
    fn enable(&mut self) -> io::Result<()> {
        if !self.enabled {
            self.ring.submitter().register_enable_rings()?;
            self.enabled = true;
        }
        Ok(())
    }

    /// One enter: submits what is queued and, in the same syscall, runs the
    /// completion work that is ready (deferred task work: inline
    /// completions, the SHUTDOWN linked behind a SEND), without waiting.
    fn submit(&mut self) -> io::Result<()> {
        self.enable()?;
        let queued = self.ring.submission().len();
        let to_submit = u32::try_from(queued).unwrap_or(u32::MAX);
        // SAFETY: no argument pointer is passed (`None`), so there is no
        // memory for the kernel to read; the queued SQEs were vouched for
        // when they were pushed.
        let res = unsafe {
            self.ring.submitter().enter::<libc::sigset_t>(
                to_submit,
                0,
                io_uring::EnterFlags::GETEVENTS.bits(),
                None,
            )
        };
        match res {
            Ok(_) => Ok(()),
            Err(e) if benign(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Enters only if there is something to submit or to run.
    fn submit_if_needed(&mut self) -> io::Result<()> {
        let needed = {
            let sq = self.ring.submission();
            !sq.is_empty() || sq.taskrun() || sq.cq_overflow()
        };
        if needed { self.submit() } else { Ok(()) }
    }

    /// `accepted`: a connection a listener took (TCP_NOTSENT_LOWAT applies
    /// to those only, as in the socket backend).
    fn tune(&self, sock: &socket2::Socket, accepted: bool) {
        // Tuning failures leave a working (if slower) connection.
        if self.config.nodelay {
            let _ = sock.set_tcp_nodelay(true);
        }
        if let Some(n) = self.config.socket_buffer {
            let _ = sock.set_send_buffer_size(n);
            let _ = sock.set_recv_buffer_size(n);
        }
        if accepted && let Some(n) = self.config.notsent_lowat {
            let _ = sock.set_tcp_notsent_lowat(n);
        }
    }

    fn insert(
        &mut self,
        sock: socket2::Socket,
        peer: SocketAddr,
        state: State,
    ) -> Result<ConnId, TransportError> {
        let count = self.conns.len();
        // Full: beyond MAX_INDEX a slot would not fit a `user_data`. The
        // socket drops with the refused value.
        self.conns
            .insert(Conn::new(sock, peer, state))
            .map_err(|_| TransportError::TooManyConnections(count))
    }

    /// Re-arms listeners whose multishot accept ended, unless backing off.
    fn rearm_accepts(&mut self, now: Instant) {
        if self.accept_backoff.is_some_and(|(until, _)| now < until) {
            return;
        }
        for li in 0..self.listeners.len() {
            if !self.listeners[li].armed && !self.listeners[li].closed {
                self.arm_accept(li);
            }
        }
    }

    /// Re-arms receives that ran out of buffers, as many as came back.
    fn rearm_starved(&mut self) {
        let mut budget = self.bufs.available();
        while budget > 0 {
            let Some(index) = self.starved.pop_front() else {
                break;
            };
            if let Some((_, c)) = self.conns.at_mut(index) {
                c.starved = false;
            }
            self.maybe_arm_recv(index);
            budget -= 1;
        }
    }

    /// Queues a SEND for every connection with output and none in flight,
    /// and the FIN of closing connections whose output is drained.
    fn push_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &index in &dirty {
            let Some((_, c)) = self.conns.at_mut(index) else {
                continue;
            };
            c.dirty = false;
            match c.state {
                State::Open | State::Closing { .. } if !c.sending && !c.out.is_empty() => {
                    self.start_send(index);
                }
                State::Closing {
                    shutdown: Shutdown::Pending,
                    ..
                } if c.output_drained() => self.push_shutdown(index),
                _ => {}
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Closing connections: start the linger clock, end the ones past it.
    fn expire_closing(&mut self, now: Instant) {
        let linger = self.config.close_linger;
        let mut expired = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            if let State::Closing { deadline, .. } = &mut c.state {
                match deadline {
                    None => *deadline = Some(now + linger),
                    Some(d) if now >= *d => expired.push(id.index()),
                    Some(_) => {}
                }
            }
        }
        for index in expired {
            self.finish(index, CloseReason::Local);
        }
    }

    /// Cancels everything and waits for the cancellations, so the memory
    /// operations point to can be freed. False if that could not be shown.
    fn quiesce(&mut self) -> bool {
        if !self.enabled {
            // Never entered: the kernel has seen none of the queued SQEs.
            return true;
        }
        self.cancel_everything();
        for _ in 0..QUIESCE_ROUNDS {
            let ts = Timespec::from(QUIESCE_STEP);
            let args = SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if benign(&e) => {}
                // EEXIST: dropped on another thread than the ring's.
                Err(_) => return false,
            }
            for cqe in self.ring.completion() {
                if !cqueue::more(cqe.flags()) {
                    self.inflight = self.inflight.saturating_sub(1);
                }
            }
            if self.inflight == 0 && self.ring.submission().is_empty() {
                return true;
            }
        }
        false
    }
}

impl Drop for UringTransport {
    fn drop(&mut self) {
        if self.quiesce() {
            let _ = self.ring.submitter().unregister_buf_ring(BGID);
            return;
        }
        // Operations may still write into receive buffers, read send
        // buffers or connect addresses: keep that memory rather than free
        // it under the kernel.
        tracing::warn!(
            inflight = self.inflight,
            "uring transport dropped with operations in flight; leaking its buffers"
        );
        self.bufs.leak();
        std::mem::forget(std::mem::take(&mut self.conns));
        std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
    }
}

impl UringTransport {
    /// The one receive path: hands at most `len` queued bytes of `conn` to
    /// `put`, in order, one received buffer at a time (into a slice, or
    /// appended to a buffer), and recycles the buffers emptied.
    fn take(
        &mut self,
        conn: ConnId,
        len: usize,
        put: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, TransportError> {
        if len == 0 {
            return Ok(0);
        }
        let low = self.config.max_queued_buffers / 2;
        let c = usable(&mut self.conns, conn)?;
        let mut n = 0;
        while n < len {
            let Some(front) = c.rx.front_mut() else {
                break;
            };
            let take = (front.len - front.off).min(u32::try_from(len - n).unwrap_or(u32::MAX));
            let end = n + take as usize;
            put(self.bufs.bytes(front.bid, front.off, take));
            front.off += take;
            n = end;
            if front.off == front.len {
                let bid = front.bid;
                c.rx.pop_front();
                self.bufs.recycle(bid);
            }
        }
        c.drained = n == 0;
        if n == 0 && c.eof && !c.finished {
            // The peer's FIN, after every byte before it: it sends no more,
            // but may still read. The consumer closes when it is done.
            c.finished = true;
            self.pending.push(Event::PeerFinished(conn));
        }
        if !c.recv_armed && !c.eof && c.rx.len() <= low {
            self.maybe_arm_recv(conn.index());
        }
        Ok(n)
    }
}

impl Transport for UringTransport {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: NAME,
            latency: LatencyClass::Kernel,
            kernel_bypass: false,
            busy_poll: false,
            // send_vectored copies the slices into the send buffer.
            vectored_send: false,
            max_segment: 64 * 1024,
        }
    }

    fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        let err = |source| TransportError::Listen { addr, source };
        let sock = warpwire_socket::reuseport_listener(addr, self.config.backlog).map_err(err)?;
        let local = sock
            .local_addr()
            .map_err(err)?
            .as_socket()
            .ok_or_else(|| err(io::ErrorKind::AddrNotAvailable.into()))?;
        self.listeners.push(Listener {
            sock,
            addr: local,
            armed: false,
            closed: false,
        });
        self.arm_accept(self.listeners.len() - 1);
        Ok(local)
    }

    fn stop_listening(&mut self) {
        for l in self.listeners.iter_mut().filter(|l| !l.closed) {
            l.closed = true;
            // Closing the descriptor would not do: an accept in flight
            // holds the file. Shutting a listening socket down stops it
            // listening at once: the kernel resets its accept queue,
            // refuses new connections, and the multishot accept ends
            // with an error that `on_accept` ignores.
            if let Err(error) = l.sock.shutdown(std::net::Shutdown::Both) {
                tracing::warn!(%error, addr = %l.addr, "uring: cannot shut the listener down");
            }
        }
    }

    fn connect(&mut self, addr: SocketAddr, _now: Instant) -> Result<ConnId, TransportError> {
        let err = |source| TransportError::Connect { addr, source };
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(err)?;
        sock.set_nonblocking(true).map_err(err)?;
        self.tune(&sock, false);
        let conn = self.insert(sock, addr, State::Connecting)?;
        self.conns[conn.index()].connect_addr = Some(Box::new(addr.into()));
        self.push_connect(conn.index());
        Ok(conn)
    }

    fn poll(&mut self, now: Instant, events: &mut Events) -> Result<(), TransportError> {
        events.clear();
        self.now = Some(now);
        self.check()?;
        self.rearm_accepts(now);
        self.rearm_starved();
        self.push_dirty();
        self.submit_if_needed().map_err(TransportError::Poll)?;
        self.reap(now);
        if self.closing > 0 {
            self.expire_closing(now);
        }
        self.check()?;
        for ev in self.pending.drain(..) {
            events.push(ev);
        }
        for (id, c) in self.conns.iter() {
            if c.readable() {
                events.push(Event::Readable(id));
            }
        }
        Ok(())
    }

    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, TransportError> {
        warpwire_transport::recv_parts(buf, |max, put| self.take(conn, max, put))
    }

    fn recv_buf(
        &mut self,
        conn: ConnId,
        buf: &mut warpwire_transport::bytes::BytesMut,
        max: usize,
    ) -> Result<usize, TransportError> {
        warpwire_transport::recv_buf_parts(buf, max, |max, put| self.take(conn, max, put))
    }

    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, TransportError> {
        self.send_vectored(conn, &[data])
    }

    fn send_vectored(&mut self, conn: ConnId, bufs: &[&[u8]]) -> Result<usize, TransportError> {
        let cap = self.config.send_buffer;
        let c = usable(&mut self.conns, conn)?;
        let mut room = cap.saturating_sub(c.unsent());
        let mut taken = 0;
        for b in bufs {
            let n = b.len().min(room);
            c.out.extend_from_slice(&b[..n]);
            room -= n;
            taken += n;
            if n < b.len() {
                c.write_blocked = true;
                break;
            }
        }
        if taken > 0 && !c.dirty {
            c.dirty = true;
            self.dirty.push(conn.index());
        }
        Ok(taken)
    }

    fn flush(&mut self, now: Instant) -> Result<(), TransportError> {
        self.now = Some(now);
        self.push_dirty();
        if !self.ring.submission().is_empty() {
            self.submit().map_err(TransportError::Poll)?;
        }
        self.check()
    }

    fn pause_recv(&mut self, conn: ConnId, paused: bool) {
        if let Ok(c) = usable(&mut self.conns, conn) {
            c.paused = paused;
            if !paused {
                self.maybe_arm_recv(conn.index());
            }
        }
    }

    fn close(&mut self, conn: ConnId) {
        let Ok(c) = usable(&mut self.conns, conn) else {
            return;
        };
        let index = conn.index();
        if c.state == State::Connecting {
            self.finish(index, CloseReason::Local);
            return;
        }
        // FIN after the queued bytes; keep receiving (and discarding) so
        // unread input does not turn our close into a RST that could
        // destroy the last reply.
        c.state = State::Closing {
            deadline: None,
            shutdown: Shutdown::Pending,
        };
        self.closing += 1;
        for b in c.rx.drain(..) {
            self.bufs.recycle(b.bid);
        }
        if c.output_drained() {
            self.push_shutdown(index);
        } else if !c.sending && !c.dirty {
            c.dirty = true;
            self.dirty.push(index);
        }
        self.maybe_arm_recv(index);
    }

    fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.conns
            .get(conn)
            .filter(|c| c.state != State::Dead)
            .map(|c| c.peer)
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        self.check()?;
        self.push_dirty();
        let accept_due = self.listeners.iter().any(|l| !l.armed && !l.closed);
        // How long until the accept backoff ends, from the last poll's time
        // (backends read no clock; the caller polled just before).
        let backoff_left = match (self.accept_backoff, self.now) {
            (Some((until, _)), Some(now)) if accept_due => {
                Some(until.saturating_duration_since(now))
            }
            _ => None,
        };
        let busy = !self.pending.is_empty()
            || !self.ring.completion().is_empty()
            || (accept_due && backoff_left.is_none_or(|d| d.is_zero()))
            || (!self.starved.is_empty() && self.bufs.available() > 0)
            || self.conns.iter().any(|(_, c)| c.readable());
        let mut timeout = if busy { Some(Duration::ZERO) } else { timeout };
        if self.closing > 0 {
            timeout = Some(timeout.map_or(CLOSING_TICK, |t| t.min(CLOSING_TICK)));
        }
        if let Some(left) = backoff_left {
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        self.enable().map_err(TransportError::Poll)?;
        let res = match timeout {
            Some(t) if t.is_zero() => self.ring.submit().map(drop),
            Some(t) => {
                let ts = Timespec::from(t);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args).map(drop)
            }
            None => self.ring.submit_and_wait(1).map(drop),
        };
        match res {
            Ok(()) => Ok(()),
            Err(e) if benign(&e) => Ok(()),
            Err(e) => Err(TransportError::Poll(e)),
        }
    }

    fn waker(&self) -> Result<Arc<dyn Wake>, TransportError> {
        Ok(self.waker.clone())
    }

    fn accept_errors(&self) -> u64 {
        self.accept_errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drop frees the buffer memory only after every operation that could
    /// touch it has completed: with an accept, a receive and a large send
    /// in flight, the cancellation finishes them all.
    #[test]
    fn quiesce_completes_every_operation() {
        use std::io::Write;
        let mut t = UringTransport::new().unwrap();
        let addr = t.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut peer = std::net::TcpStream::connect(addr).unwrap();
        peer.write_all(b"unread").unwrap();
        let mut ev = Events::default();
        let conn = loop {
            t.wait(Some(Duration::from_millis(10))).unwrap();
            t.poll(Instant::now(), &mut ev).unwrap();
            if let Some(Event::Accepted { conn, .. }) =
                ev.iter().find(|e| matches!(e, Event::Accepted { .. }))
            {
                break *conn;
            }
        };
        // More than the sockets hold while the peer does not read: the
        // SEND stays in flight.
        let big = vec![0u8; 256 * 1024];
        for _ in 0..40 {
            t.send(conn, &big).unwrap();
            t.poll(Instant::now(), &mut ev).unwrap();
        }
        assert!(t.conns[conn.index()].sending, "a SEND in flight");
        assert!(
            t.inflight >= 4,
            "accept, receive, send, wake: {}",
            t.inflight
        );
        assert!(t.quiesce(), "operations left: {}", t.inflight);
        assert_eq!(t.inflight, 0);
        drop(peer);
    }

    #[test]
    fn capabilities() {
        let t = UringTransport::new().unwrap();
        let c = t.capabilities();
        assert_eq!(c.name, "uring");
        assert_eq!(c.latency, LatencyClass::Kernel);
        assert!(!c.kernel_bypass);
    }
}
