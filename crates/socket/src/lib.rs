//! # warpwire-socket: kernel TCP through mio
//!
//! The fallback [`Transport`]: works on any Linux laptop, speaks to any TCP
//! peer, and is the yardstick the bypass backends are measured against.
//!
//! ```text
//!   Transport::poll ──► epoll_wait (one syscall per batch, zero timeout)
//!        │                 │ edge events
//!        ▼                 ▼
//!   Events (level) ◄── readable set: a connection stays readable until a
//!                      recv comes back short or WouldBlock
//!   recv  ──► read(2) straight into the caller's (decoder's) buffer
//!   send  ──► write(2) / writev(2); a short write is backpressure,
//!             Event::Writable follows
//!   close ──► shutdown(SHUT_WR), drain input until the peer's FIN or a
//!             linger deadline, so an ERROR sent just before is not lost
//!             to a RST
//! ```
//!
//! Each worker owns one instance with its own listener on the same address
//! (SO_REUSEPORT): the kernel spreads connections, nothing is shared.
//!
//! Also here, for senders over any transport: [`FileChunks`], a file cut
//! into chunks that are slices of a read-only mapping (`client data
//! --file`).
//!
//! Not here: framing, sessions, timers beyond the close linger. `unsafe`
//! only in `sys` (the file mapping, the receive into uninitialised room).

#![deny(unsafe_code)]

mod file;
#[allow(unsafe_code)]
mod sys;

pub use file::{FileChunks, WINDOW as FILE_WINDOW, read_chunk};

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token};
use warpwire_transport::{
    BackendKind, Capabilities, CloseReason, ConnId, ConnTable, Event, Events, LatencyClass,
    ProbeReport, Transport, TransportError, Wake,
};

/// Token of the cross-thread waker.
const WAKER: Token = Token(usize::MAX);
/// Listener tokens start here; connection tokens are table slot indices
/// below it (they stay below 2^32, the indices a `ConnId` carries).
const LISTENER_BASE: usize = usize::MAX / 2;
/// At most this many iovecs go to one writev; a frame needs four.
const MAX_IOV: usize = 16;
/// Default TCP_NOTSENT_LOWAT: enough unsent data to keep a loopback or
/// LAN pipe busy between two polls, little enough that a reply queued
/// behind it waits well under a millisecond at LAN speeds. Shared by every
/// kernel-TCP backend (socket, uring).
pub const NOTSENT_LOWAT: u32 = 128 * 1024;
/// First pause of accepting after it failed for lack of resources: long
/// enough that a poll loop does not spin, short enough that a descriptor
/// freed by a closing connection is used promptly.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause (the backoff doubles up to it while failures go on).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: accept failed for want of resources,
/// and the pending connection is still queued (shared with the uring
/// backend).
pub fn is_resource_errno(errno: i32) -> bool {
    const ENOMEM: i32 = 12;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const ENOBUFS: i32 = 105;
    matches!(errno, ENOMEM | ENFILE | EMFILE | ENOBUFS)
}

fn is_resource_error(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(is_resource_errno)
}

/// The next pause of accepting after a resource failure: 10 ms, then
/// doubling up to 1 s while failures go on (shared with the uring backend).
pub fn next_accept_backoff(previous: Option<Duration>) -> Duration {
    previous.map_or(ACCEPT_BACKOFF_MIN, |d| (d * 2).min(ACCEPT_BACKOFF_MAX))
}

/// A non-blocking TCP listener on `addr` with SO_REUSEADDR and
/// SO_REUSEPORT (each worker binds its own; the kernel spreads
/// connections), listening with `backlog`. Shared with the uring backend.
pub fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<socket2::Socket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog)?;
    Ok(sock)
}

/// Settings of a socket transport instance.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// Disable Nagle (TCP_NODELAY) on every connection.
    pub nodelay: bool,
    /// Connections accepted per listener per poll: bounds the work one poll
    /// does under a connection storm; the rest are accepted on the next.
    pub accept_batch: usize,
    /// Capacity of the epoll event array (events taken per syscall).
    pub events_capacity: usize,
    /// Kernel listen backlog.
    pub backlog: i32,
    /// How long a closed connection waits for the peer's FIN while
    /// discarding input, before it is dropped.
    pub close_linger: Duration,
    /// SO_SNDBUF / SO_RCVBUF, when set.
    pub socket_buffer: Option<usize>,
    /// TCP_NOTSENT_LOWAT on accepted connections: unsent bytes the kernel
    /// queues per connection before a write stops taking more. Keeps a
    /// server's output in our queues, where replies overtake queued
    /// broadcasts, instead of megabytes deep in the kernel ahead of them.
    /// Not set on outgoing connections: a client's writes are its own
    /// requests in order, with nothing to overtake them, and the limit cost
    /// a bulk upload on loopback about 8 % of its rate (more wake-ups, less
    /// written per call; docs/benchmarks.md). `None`: the kernel's default
    /// (no limit).
    pub notsent_lowat: Option<u32>,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            nodelay: true,
            // Enough to take a burst of a few hundred connections in a
            // handful of polls without starving established ones.
            accept_batch: 128,
            events_capacity: 1024,
            backlog: 4096,
            close_linger: Duration::from_secs(2),
            socket_buffer: None,
            notsent_lowat: Some(NOTSENT_LOWAT),
        }
    }
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes may be waiting (level emulation over edge-triggered epoll).
    readable: bool,
    /// A send came back short; report Writable on the next writable edge.
    write_blocked: bool,
    /// Outgoing connect not yet confirmed.
    connecting: bool,
    /// The consumer asked not to be told about input (backpressure).
    paused: bool,
    /// close() was called: discarding input until FIN or the deadline.
    closing: Option<Instant>,
    /// epoll reported the peer's FIN (EPOLLRDHUP): a short read does not
    /// mean the input is drained, the EOF is still to be read, and no
    /// further edge will announce it.
    hup: bool,
    /// A read returned EOF: reported as PeerFinished; nothing more to read.
    finished: bool,
}

/// The kernel-TCP transport.
pub struct SocketTransport {
    poll: Poll,
    mio_events: mio::Events,
    /// Listeners and their bound addresses.
    listeners: Vec<(TcpListener, SocketAddr)>,
    /// Listeners with connections possibly left in their backlog.
    listener_ready: Vec<bool>,
    /// Connections; a slot index is the connection's mio token.
    conns: ConnTable<Conn>,
    /// Events produced outside `poll` (failures found by recv/send).
    pending: Vec<Event>,
    /// Connections currently in the closing linger.
    closing: usize,
    /// Accepting is suspended until then after EMFILE/ENFILE/ENOBUFS/ENOMEM
    /// (the listener stays ready, so retrying at once would spin).
    accept_backoff: Option<(Instant, Duration)>,
    /// Accepts that failed for lack of resources.
    accept_errors: u64,
    /// The latest time a caller passed to `poll`: "now" for `close` and
    /// `wait`, which take none (the backend reads no clock of its own).
    now: Instant,
    waker: Arc<MioWaker>,
    config: SocketConfig,
}

struct MioWaker(mio::Waker);

impl Wake for MioWaker {
    fn wake(&self) {
        // A failed wake means the poll instance is gone; nothing to wake.
        let _ = self.0.wake();
    }
}

impl std::fmt::Debug for SocketTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketTransport")
            .field("listeners", &self.listeners.len())
            .field("conns", &self.conns.len())
            .finish()
    }
}

fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

impl SocketTransport {
    /// A transport with default settings.
    pub fn new() -> Result<Self, TransportError> {
        Self::with_config(SocketConfig::default())
    }

    /// A transport with the given settings.
    pub fn with_config(config: SocketConfig) -> Result<Self, TransportError> {
        let poll = Poll::new().map_err(TransportError::Poll)?;
        let waker = mio::Waker::new(poll.registry(), WAKER).map_err(TransportError::Poll)?;
        Ok(Self {
            poll,
            mio_events: mio::Events::with_capacity(config.events_capacity),
            listeners: Vec::new(),
            listener_ready: Vec::new(),
            conns: ConnTable::new(),
            pending: Vec::new(),
            closing: 0,
            accept_backoff: None,
            accept_errors: 0,
            now: Instant::now(),
            waker: Arc::new(MioWaker(waker)),
            config,
        })
    }

    /// Number of open connections (closing ones included).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    fn conn_mut(&mut self, id: ConnId) -> Result<&mut Conn, TransportError> {
        self.conns
            .get_mut(id)
            .filter(|c| c.closing.is_none())
            .ok_or(TransportError::UnknownConn(id))
    }

    fn insert(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        connecting: bool,
    ) -> io::Result<ConnId> {
        let count = self.conns.len();
        // Only at 2^32 connections (descriptors run out long before).
        let Some(entry) = self.conns.vacant_entry() else {
            return Err(io::Error::other(TransportError::TooManyConnections(count)));
        };
        // Registered under the slot it is about to take; if registration
        // fails nothing is inserted.
        let mut stream = stream;
        self.poll.registry().register(
            &mut stream,
            Token(entry.index()),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(entry.insert(Conn {
            stream,
            peer,
            readable: false,
            write_blocked: false,
            connecting,
            paused: false,
            closing: None,
            hup: false,
            finished: false,
        }))
    }

    /// `accepted`: a connection a listener took (the limit on unsent
    /// bytes applies to those only; see [`SocketConfig::notsent_lowat`]).
    fn tune(&self, stream: &TcpStream, accepted: bool) {
        // Tuning failures leave a working (if slower) connection.
        if self.config.nodelay {
            let _ = stream.set_nodelay(true);
        }
        let s = socket2::SockRef::from(stream);
        if let Some(n) = self.config.socket_buffer {
            let _ = s.set_send_buffer_size(n);
            let _ = s.set_recv_buffer_size(n);
        }
        if accepted && let Some(n) = self.config.notsent_lowat {
            let _ = s.set_tcp_notsent_lowat(n);
        }
    }

    /// Drops a connection now and queues its Closed event.
    fn remove(&mut self, index: usize, reason: CloseReason) {
        let Some((id, mut c)) = self.conns.remove_at(index) else {
            return;
        };
        if c.closing.is_some() {
            self.closing -= 1;
        }
        // Deregistering a socket that is about to be closed cannot matter.
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.pending.push(Event::Closed(id, reason));
    }

    fn accept_from(&mut self, li: usize, now: Instant, events: &mut Vec<Event>) {
        for _ in 0..self.config.accept_batch {
            let (l, listener) = &self.listeners[li];
            let listener = *listener;
            match l.accept() {
                Ok((stream, peer)) => {
                    self.tune(&stream, true);
                    match self.insert(stream, peer, false) {
                        Ok(conn) => events.push(Event::Accepted {
                            conn,
                            peer,
                            listener,
                        }),
                        // Registration failed (fd limits): the stream drops, the peer sees a reset.
                        Err(_) => continue,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_ready[li] = false;
                    self.accept_backoff = None;
                    return;
                }
                // Out of descriptors or memory: the connection stays in the
                // kernel's backlog and the listener stays ready, so an
                // immediate retry would spin. Back off (doubling from 10 ms
                // to 1 s) while the connections already held are served.
                Err(e) if is_resource_error(&e) => {
                    self.accept_errors += 1;
                    let wait = next_accept_backoff(self.accept_backoff.map(|(_, d)| d));
                    // One line per backoff step: at the cap, one a second.
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = wait.as_millis() as u64,
                        failures = self.accept_errors,
                        "cannot accept: out of resources; backing off (raise `ulimit -n` or lower max_connections)"
                    );
                    self.accept_backoff = Some((now + wait, wait));
                    return;
                }
                // ECONNABORTED and the like: that connection is gone; go on.
                Err(_) => continue,
            }
        }
    }

    /// Drains input of a closing connection; true when it is finished.
    fn drain_closing(c: &mut Conn, now: Instant) -> bool {
        let mut sink = [0u8; 4096];
        loop {
            match c.stream.read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return c.closing.is_some_and(|t| now >= t);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }

    /// Waits up to `timeout` for epoll events and folds them into state.
    fn pump(&mut self, timeout: Option<Duration>, now: Instant) -> Result<(), TransportError> {
        match self.poll.poll(&mut self.mio_events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(TransportError::Poll(e)),
        }
        let mut finished = Vec::new();
        let mut failed = Vec::new();
        for ev in self.mio_events.iter() {
            let t = ev.token();
            if t == WAKER {
                continue;
            }
            if t.0 >= LISTENER_BASE {
                if let Some(r) = self.listener_ready.get_mut(t.0 - LISTENER_BASE) {
                    *r = true;
                }
                continue;
            }
            let Some((id, c)) = self.conns.at_mut(t.0) else {
                continue;
            };
            if c.closing.is_some() {
                if Self::drain_closing(c, now) {
                    finished.push(t.0);
                }
                continue;
            }
            if c.connecting {
                if ev.is_writable() || ev.is_error() || ev.is_write_closed() {
                    match c.stream.take_error() {
                        Ok(None) if c.stream.peer_addr().is_ok() => {
                            c.connecting = false;
                            self.pending.push(Event::Connected(id));
                        }
                        Ok(None) => {}
                        Ok(Some(e)) | Err(e) => {
                            failed.push((t.0, CloseReason::ConnectFailed(errno(&e))));
                            continue;
                        }
                    }
                }
                continue;
            }
            if ev.is_read_closed() {
                c.hup = true;
            }
            if (ev.is_readable() || ev.is_read_closed() || ev.is_error()) && !c.finished {
                c.readable = true;
            }
            if ev.is_writable() && c.write_blocked {
                c.write_blocked = false;
                self.pending.push(Event::Writable(id));
            }
        }
        for i in finished {
            self.remove(i, CloseReason::Local);
        }
        for (i, reason) in failed {
            self.remove(i, reason);
        }
        Ok(())
    }

    fn expire_closing(&mut self, now: Instant) {
        if self.closing == 0 {
            return;
        }
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.closing.is_some_and(|t| now >= t))
            .map(|(id, _)| id.index())
            .collect();
        for i in expired {
            self.remove(i, CloseReason::Local);
        }
    }

    fn io_error(&mut self, id: ConnId, e: io::Error) -> TransportError {
        self.remove(id.index(), CloseReason::Reset(errno(&e)));
        TransportError::Io {
            conn: id,
            source: e,
        }
    }

    /// The one receive path: `read` takes at most `len` bytes from the
    /// connection's stream (into a slice, or appended to a buffer); FIN,
    /// edge and error handling are the same for both.
    fn recv_with(
        &mut self,
        conn: ConnId,
        len: usize,
        mut read: impl FnMut(&mut TcpStream) -> io::Result<usize>,
    ) -> Result<usize, TransportError> {
        if len == 0 {
            return Ok(0);
        }
        let c = self.conn_mut(conn)?;
        if c.finished {
            return Ok(0);
        }
        // Drained by the last short read or EAGAIN: the next arrival is a
        // new edge, reported by the next poll. No syscall to learn "nothing"
        // (the EAGAIN read after every short one was a third of the
        // syscalls of a small request and its reply).
        if !c.readable {
            return Ok(0);
        }
        loop {
            match read(&mut c.stream) {
                Ok(0) => {
                    // The peer's FIN: it sends no more, but may still read.
                    // The connection stays for the replies; the consumer
                    // closes it.
                    c.finished = true;
                    c.readable = false;
                    self.pending.push(Event::PeerFinished(conn));
                    return Ok(0);
                }
                Ok(n) => {
                    // A short read drained the socket; epoll reports the next
                    // arrival as a new edge (what tokio relies on too) --
                    // except the EOF of a FIN already reported, which must
                    // still be read.
                    if n < len && !c.hup {
                        c.readable = false;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.readable = false;
                    return Ok(0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(conn, e)),
            }
        }
    }
}

impl Transport for SocketTransport {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "socket",
            latency: LatencyClass::Kernel,
            kernel_bypass: false,
            busy_poll: false,
            vectored_send: true,
            max_segment: 64 * 1024,
        }
    }

    fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        let err = |source| TransportError::Listen { addr, source };
        let sock = reuseport_listener(addr, self.config.backlog).map_err(err)?;
        let mut l = TcpListener::from_std(sock.into());
        let local = l.local_addr().map_err(err)?;
        let token = Token(LISTENER_BASE + self.listeners.len());
        self.poll
            .registry()
            .register(&mut l, token, Interest::READABLE)
            .map_err(err)?;
        self.listeners.push((l, local));
        self.listener_ready.push(true);
        Ok(local)
    }

    fn stop_listening(&mut self) {
        // Closing a listener makes the kernel reset what its accept queue
        // holds and refuse new connections (with SO_REUSEPORT, the other
        // workers' listeners on the address take them). A readiness event
        // already polled for a closed listener's token finds no listener.
        for (mut l, _) in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.listener_ready.clear();
    }

    fn connect(&mut self, addr: SocketAddr, _now: Instant) -> Result<ConnId, TransportError> {
        let err = |source| TransportError::Connect { addr, source };
        let stream = TcpStream::connect(addr).map_err(err)?;
        self.tune(&stream, false);
        self.insert(stream, addr, true).map_err(err)
    }

    fn poll(&mut self, now: Instant, events: &mut Events) -> Result<(), TransportError> {
        self.now = self.now.max(now);
        events.clear();
        self.pump(Some(Duration::ZERO), now)?;
        self.expire_closing(now);
        let mut accepted = Vec::new();
        if self.accept_backoff.is_none_or(|(until, _)| now >= until) {
            for li in 0..self.listeners.len() {
                if self.listener_ready[li] {
                    self.accept_from(li, now, &mut accepted);
                }
            }
        }
        for ev in self.pending.drain(..) {
            events.push(ev);
        }
        for ev in accepted {
            events.push(ev);
        }
        for (id, c) in self.conns.iter() {
            if c.readable && !c.paused && c.closing.is_none() {
                events.push(Event::Readable(id));
            }
        }
        Ok(())
    }

    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, TransportError> {
        let len = buf.len();
        self.recv_with(conn, len, |s| s.read(buf))
    }

    fn recv_buf(
        &mut self,
        conn: ConnId,
        buf: &mut bytes::BytesMut,
        max: usize,
    ) -> Result<usize, TransportError> {
        self.recv_with(conn, max, |s| sys::recv_append(s, buf, max))
    }

    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, TransportError> {
        self.send_vectored(conn, &[data])
    }

    fn send_vectored(&mut self, conn: ConnId, bufs: &[&[u8]]) -> Result<usize, TransportError> {
        let c = self.conn_mut(conn)?;
        if c.connecting {
            return Ok(0);
        }
        let mut total = 0;
        for group in bufs.chunks(MAX_IOV) {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            for (slot, b) in iov.iter_mut().zip(group) {
                *slot = IoSlice::new(b);
            }
            let mut rest = &mut iov[..group.len()];
            IoSlice::advance_slices(&mut rest, 0);
            // Write until everything is taken or the kernel says WouldBlock.
            // A short write alone is not enough: Linux arms the writability
            // edge that epoll reports (SOCK_NOSPACE) only when a write fails
            // with EAGAIN, so stopping at a short write would wait for an
            // EPOLLOUT that never comes.
            while !rest.is_empty() {
                match c.stream.write_vectored(rest) {
                    Ok(0) => {
                        c.write_blocked = true;
                        return Ok(total);
                    }
                    Ok(n) => {
                        total += n;
                        IoSlice::advance_slices(&mut rest, n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        c.write_blocked = true;
                        return Ok(total);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.io_error(conn, e)),
                }
            }
        }
        Ok(total)
    }

    fn pause_recv(&mut self, conn: ConnId, paused: bool) {
        if let Ok(c) = self.conn_mut(conn) {
            c.paused = paused;
        }
    }

    fn close(&mut self, conn: ConnId) {
        let linger = self.config.close_linger;
        let now = self.now;
        let Ok(c) = self.conn_mut(conn) else {
            return;
        };
        // FIN after the queued bytes; keep reading so unread input does not
        // turn our close into a RST that could destroy the last reply.
        if c.stream.shutdown(Shutdown::Write).is_err() {
            self.remove(conn.index(), CloseReason::Local);
            return;
        }
        c.closing = Some(now + linger);
        c.readable = false;
        let done = Self::drain_closing(c, now);
        self.closing += 1;
        if done {
            self.remove(conn.index(), CloseReason::Local);
        }
    }

    fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.conns.get(conn).map(|c| c.peer)
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        let now = self.now;
        let backoff = self
            .accept_backoff
            .map(|(until, _)| until)
            .filter(|&u| u > now);
        let busy = !self.pending.is_empty()
            || (backoff.is_none() && self.listener_ready.iter().any(|&r| r))
            || self
                .conns
                .iter()
                .any(|(_, c)| c.readable && !c.paused && c.closing.is_none());
        let timeout = if busy { Some(Duration::ZERO) } else { timeout };
        let timeout = match (timeout, self.closing > 0) {
            // Wake for linger deadlines at least every 100 ms.
            (Some(t), true) => Some(t.min(Duration::from_millis(100))),
            (None, true) => Some(Duration::from_millis(100)),
            (t, false) => t,
        };
        // Sleep no longer than the accept backoff.
        let timeout = match (timeout, backoff) {
            (t, None) => t,
            (None, Some(u)) => Some(u - now),
            (Some(t), Some(u)) => Some(t.min(u - now)),
        };
        self.pump(timeout, now)
    }

    fn accept_errors(&self) -> u64 {
        self.accept_errors
    }

    fn waker(&self) -> Result<Arc<dyn Wake>, TransportError> {
        Ok(self.waker.clone())
    }
}

/// The socket backend's probe: always available where epoll works.
pub fn probe() -> ProbeReport {
    match Poll::new() {
        Ok(_) => ProbeReport::available(BackendKind::Socket, "kernel TCP via mio (epoll)"),
        Err(e) => ProbeReport::unavailable(BackendKind::Socket, format!("epoll unavailable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuseport_two_instances_share_an_address() {
        let mut a = SocketTransport::new().unwrap();
        let addr = a.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut b = SocketTransport::new().unwrap();
        assert_eq!(b.listen(addr).unwrap(), addr);
    }

    #[test]
    fn notsent_lowat_is_set_on_accepted_connections_only() {
        let mut server = SocketTransport::new().unwrap();
        let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut client = SocketTransport::new().unwrap();
        let c = client.connect(addr, Instant::now()).unwrap();
        let mut events = Events::default();
        let mut accepted = None;
        for _ in 0..1000 {
            server.poll(Instant::now(), &mut events).unwrap();
            accepted = accepted.or(events.iter().find_map(|e| match *e {
                Event::Accepted { conn, .. } => Some(conn),
                _ => None,
            }));
            if accepted.is_some() {
                break;
            }
            server.wait(Some(Duration::from_millis(10))).unwrap();
        }
        let lowat = |t: &SocketTransport, id: ConnId| {
            let stream = &t.conns.get(id).unwrap().stream;
            socket2::SockRef::from(stream).tcp_notsent_lowat().unwrap()
        };
        assert_eq!(lowat(&server, accepted.unwrap()), NOTSENT_LOWAT);
        // The kernel's default: no limit.
        assert_eq!(lowat(&client, c), 0);
    }

    #[test]
    fn waker_interrupts_wait() {
        let mut t = SocketTransport::new().unwrap();
        let w = t.waker().unwrap();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            w.wake();
        });
        let start = Instant::now();
        t.wait(Some(Duration::from_secs(10))).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        h.join().unwrap();
    }
}
