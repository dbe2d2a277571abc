//! # warpwire-transport: what every backend implements
//!
//! Two traits, because the backends come in two kinds:
//!
//! ```text
//!  engine / client / bench  ── generic over ──►  Transport   (connections: listen, accept,
//!                                                  ▲  ▲  ▲     connect, recv, send, close, poll)
//!                                  socket (mio) ───┘  │  └─── rdma (RC queue pairs)
//!                                  stack (smoltcp) ───┘
//!                                       │ generic over
//!                                       ▼
//!                                  PacketDevice  (Ethernet frames, lent buffers, bursts)
//!                                    ▲     ▲     ▲
//!                                   xdp   dpdk   sim
//! ```
//!
//! Kernel TCP and RDMA reliable connections already deliver bytes in order,
//! so they implement [`Transport`] directly. AF_XDP, DPDK and the in-memory
//! simulator move Ethernet frames, so they implement [`PacketDevice`] and one
//! generic smoltcp stack turns any of them into a [`Transport`].
//!
//! Conventions every backend keeps:
//! - Batches: [`Transport::poll`] makes one native call per burst (epoll
//!   wait, rx_burst, xsk consume, ibv_poll_cq) and reports what happened
//!   into caller-owned storage ([`Events`]), mio-style.
//! - Level-triggered readiness: a connection is reported readable on every
//!   poll while it has bytes, until a `recv` returns 0. Consumers may bound
//!   their work per poll without stalling a connection.
//! - Backpressure is not an error: `send` returns how many bytes it took
//!   (possibly 0); a [`Event::Writable`] follows when room comes back.
//! - Time is passed in: backends read no clock of their own.
//! - [`Transport::wait`] sleeps until something may be ready (epoll, the xsk
//!   poll fd, a CQ channel) for policies that do not busy-poll.
//! - No `dyn` on the per-packet path: consumers are generic over the trait.
//!
//! - Connection ids come from one place: every backend keeps its
//!   connections in a [`ConnTable`], which hands out [`ConnId`]s and
//!   refuses stale ones (see [`table`]).
//!
//! What this crate does not do: any I/O. It holds the contracts, the
//! [`Probe`] types, the [`select`] policy and the connection table only.

#![forbid(unsafe_code)]

mod device;
/// The `bytes` crate [`Transport::recv_buf`] appends to, re-exported so
/// every backend names the same version.
pub use bytes;
pub mod select;
pub mod table;

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use device::{DeviceCapabilities, DeviceError, PacketDevice, RxToken, TxToken};
pub use select::{
    BackendKind, Facts, LatencyClass, LatencyPolicy, Probe, ProbeReport, Selection, SelectionError,
    TransportChoice,
};
pub use table::{ConnTable, VacantEntry};

/// Identifies a connection within one [`Transport`] instance. A slot index
/// plus a generation, so a stale id of a closed connection never reaches the
/// connection that reuses its slot. Backends get them from a [`ConnTable`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// Builds an id from a slot index and the slot's generation.
    pub const fn new(index: u32, generation: u32) -> Self {
        Self { index, generation }
    }

    /// The slot index (dense, small: usable to index per-connection arrays).
    pub const fn index(self) -> usize {
        self.index as usize
    }

    /// The slot's generation.
    pub const fn generation(self) -> u32 {
        self.generation
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}.{}", self.index, self.generation)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer went away without a reset where the backend cannot keep
    /// the connection for sending (an RDMA disconnect). A TCP peer's FIN
    /// is [`Event::PeerFinished`] instead: the connection stays writable.
    PeerClosed,
    /// The connection was reset or failed; the errno when the OS gave one.
    Reset(Option<i32>),
    /// An outgoing connect failed; the errno when the OS gave one.
    ConnectFailed(Option<i32>),
    /// [`Transport::close`] completed.
    Local,
    /// The TLS layer ended the connection: its handshake failed or did
    /// not finish in time, or a record could not be authenticated.
    Tls(TlsFailure),
}

/// Why a TLS layer ended a connection, in terms a user can act on. The
/// TLS layer (warpwire-tls) logs the details with the peer; this is what
/// travels with [`CloseReason::Tls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The handshake did not finish within its deadline.
    HandshakeTimeout,
    /// The peer does not speak TLS (plaintext on a TLS port, or a
    /// plaintext server answering a TLS client).
    NotTls,
    /// The peer's certificate has expired (or is not valid yet).
    CertificateExpired,
    /// The peer's certificate chain does not lead to a trusted CA.
    UnknownIssuer,
    /// The peer's certificate is not valid for the name asked for.
    NameMismatch,
    /// The peer's certificate does not match the pinned fingerprint.
    PinMismatch,
    /// The peer's certificate is otherwise unacceptable.
    BadCertificate,
    /// The peer sent no certificate where one is required (mutual TLS).
    NoCertificate,
    /// No protocol version, cipher suite or ALPN protocol in common.
    Incompatible,
    /// The peer sent this fatal alert (its description code, RFC 8446
    /// section 6).
    AlertReceived(u8),
    /// Any other violation of the TLS protocol (a bad record, a MAC
    /// failure, an unexpected message).
    Protocol,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HandshakeTimeout => f.write_str("TLS handshake timed out"),
            Self::NotTls => f.write_str("the peer does not speak TLS (a plaintext port?)"),
            Self::CertificateExpired => {
                f.write_str("TLS: the certificate has expired or is not valid yet")
            }
            Self::UnknownIssuer => {
                f.write_str("TLS: the certificate is not signed by a trusted CA")
            }
            Self::NameMismatch => f.write_str("TLS: the certificate is not valid for this name"),
            Self::PinMismatch => {
                f.write_str("TLS: the certificate does not match the pinned fingerprint")
            }
            Self::BadCertificate => f.write_str("TLS: the certificate was refused"),
            Self::NoCertificate => f.write_str("TLS: no client certificate was presented"),
            Self::Incompatible => {
                f.write_str("TLS: no protocol version, cipher suite or ALPN protocol in common")
            }
            Self::AlertReceived(code) => write!(f, "TLS: the peer sent alert {code}"),
            Self::Protocol => f.write_str("TLS protocol error"),
        }
    }
}

/// Something [`Transport::poll`] observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A listener accepted a new connection.
    Accepted {
        /// The new connection.
        conn: ConnId,
        /// The peer's address.
        peer: SocketAddr,
        /// The listener that accepted it: the address its
        /// [`Transport::listen`] returned (so a server listening on several
        /// addresses, one protocol each, knows which one was dialled).
        listener: SocketAddr,
    },
    /// An outgoing connection completed its handshake.
    Connected(ConnId),
    /// The connection has bytes to read (reported on every poll until a
    /// `recv` returns 0).
    Readable(ConnId),
    /// A connection whose `send` was short can take bytes again.
    Writable(ConnId),
    /// The peer finished sending (TCP FIN, RDMA's in-band FIN): every byte
    /// it sent has been read (a `recv` returned 0 after the last of them)
    /// and no more will come. The connection stays open for sending, so a
    /// server answers what it received, flushes, then calls
    /// [`Transport::close`] ([`Event::Closed`] with [`CloseReason::Local`]
    /// follows). A peer's FIN means it sends no more, not that it reads no
    /// more (`shutdown(SHUT_WR)`, `nc -N`). Reported once per connection.
    PeerFinished(ConnId),
    /// The connection is gone; its id is dead from now on.
    Closed(ConnId, CloseReason),
}

/// Caller-owned event storage, reused across polls (mio's `Events`).
#[derive(Debug, Default)]
pub struct Events {
    list: Vec<Event>,
}

impl Events {
    /// Storage for `capacity` events before it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            list: Vec::with_capacity(capacity),
        }
    }

    /// Removes every event.
    pub fn clear(&mut self) {
        self.list.clear();
    }

    /// Adds an event (for backends).
    pub fn push(&mut self, ev: Event) {
        self.list.push(ev);
    }

    /// The events of the last poll.
    pub fn iter(&self) -> std::slice::Iter<'_, Event> {
        self.list.iter()
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl<'a> IntoIterator for &'a Events {
    type Item = &'a Event;
    type IntoIter = std::slice::Iter<'a, Event>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

/// What a transport instance offers, for selection and for sizing buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Backend name as on the command line (`socket`, `xdp`, `dpdk`, `rdma`).
    pub name: &'static str,
    /// Expected latency class.
    pub latency: LatencyClass,
    /// Whether the backend bypasses the kernel on the data path.
    pub kernel_bypass: bool,
    /// Whether `poll` without `wait` is the intended mode (poll-mode drivers).
    pub busy_poll: bool,
    /// Whether `send_vectored` avoids copying (the kernel gathers iovecs).
    pub vectored_send: bool,
    /// Largest payload one native send carries (segment, MTU, RDMA buffer).
    pub max_segment: usize,
}

/// Transport errors. Per-connection errors name the connection; the
/// instance stays usable.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The connection id is not (or no longer) valid.
    #[error("{0} is not an open connection")]
    UnknownConn(ConnId),
    /// Binding a listener failed.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Starting an outgoing connection failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error on a connection; the connection is closed.
    #[error("i/o error on {conn}")]
    Io {
        /// The connection.
        conn: ConnId,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The backend's event machinery failed (epoll, rings, CQ).
    #[error("transport poll failed")]
    Poll(#[source] std::io::Error),
    /// The instance holds as many connections as it can.
    #[error("connection table full ({0} connections)")]
    TooManyConnections(usize),
    /// The backend cannot do this (for example listen twice on a stack).
    #[error("unsupported by the {backend} backend: {what}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// What was asked.
        what: &'static str,
    },
    /// Backend-specific failure with its cause kept.
    #[error("{backend} backend: {what}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// What failed.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Wakes a thread sleeping in [`Transport::wait`] from another thread.
pub trait Wake: Send + Sync {
    /// Makes the current or next `wait` return promptly.
    fn wake(&self);
}

/// A connection-level, poll-driven, batched transport. One instance per
/// worker thread; instances share nothing.
pub trait Transport {
    /// What this instance offers.
    fn capabilities(&self) -> Capabilities;

    /// Starts listening. Each worker's instance listens on the same address
    /// (SO_REUSEPORT, RSS queues); the kernel or NIC spreads connections.
    /// Returns the bound address (port 0 resolved), which
    /// [`Event::Accepted`] names as its `listener`. An instance may listen
    /// on several addresses (a backend that cannot says so with
    /// [`TransportError::Unsupported`]).
    fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, TransportError>;

    /// Stops listening on every address this instance listens on (a
    /// server that begins to shut down). Connections already reported
    /// [`Event::Accepted`] are untouched; new ones are refused, and those
    /// the backend held but had not reported (a kernel accept queue,
    /// half-open handshakes) are reset, so a client retries elsewhere
    /// instead of being accepted and closed at once. `listen` may be
    /// called again afterwards. Where instances share one listener (rdma:
    /// rdma_cm has no SO_REUSEPORT), it closes when the last one stops.
    fn stop_listening(&mut self);

    /// Starts an outgoing connection; [`Event::Connected`] or
    /// [`Event::Closed`] follows.
    fn connect(&mut self, addr: SocketAddr, now: Instant) -> Result<ConnId, TransportError>;

    /// Does one batch of I/O and reports what happened into `events`
    /// (cleared first). Never blocks.
    fn poll(&mut self, now: Instant, events: &mut Events) -> Result<(), TransportError>;

    /// Copies received bytes into `buf`; 0 means nothing more for now.
    ///
    /// Every backend makes exactly one copy here, into the caller's buffer
    /// (the frame decoder's, which then hands out zero-copy frames): from
    /// the kernel for sockets, from the stack's receive ring for smoltcp,
    /// from a registered receive buffer for RDMA. A connection that failed
    /// returns an error once and is then reported [`Event::Closed`].
    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, TransportError>;

    /// Like [`Transport::recv`], but appends at most `max` bytes after
    /// `buf`'s end (what it held stays as it was) and returns how many;
    /// `max` 0 appends nothing. On an error nothing is appended.
    ///
    /// A buffer handed to `recv` must be initialised, so a caller zeroes
    /// it before the transport overwrites it: a `memset` of every byte
    /// received. Backends that can write into uninitialised capacity (a
    /// `recv(2)` into spare room, a copy out of a ring or a registered
    /// buffer) override this; the provided version zeroes `max` bytes and
    /// calls `recv`.
    fn recv_buf(
        &mut self,
        conn: ConnId,
        buf: &mut bytes::BytesMut,
        max: usize,
    ) -> Result<usize, TransportError> {
        let start = buf.len();
        buf.resize(start + max, 0);
        let r = self.recv(conn, &mut buf[start..]);
        let n = r.as_ref().map_or(0, |&n| n.min(max));
        buf.truncate(start + n);
        r
    }

    /// Queues bytes for sending; returns how many were taken (possibly 0:
    /// backpressure, wait for [`Event::Writable`]).
    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, TransportError>;

    /// Like [`Transport::send`] over several slices in order (a frame's
    /// header, metadata, body and trailer). Returns the total taken.
    fn send_vectored(&mut self, conn: ConnId, bufs: &[&[u8]]) -> Result<usize, TransportError> {
        let mut total = 0;
        for b in bufs {
            let n = self.send(conn, b)?;
            total += n;
            if n < b.len() {
                break;
            }
        }
        Ok(total)
    }

    /// Pushes queued output towards the wire (TX burst, doorbell, kick).
    /// Backends that send synchronously do nothing.
    fn flush(&mut self, _now: Instant) -> Result<(), TransportError> {
        Ok(())
    }

    /// Stops (or resumes) reporting a connection readable, so a consumer
    /// applying backpressure (its reply queue is full) or closing it does
    /// not spin on level-triggered readiness. Bytes stay queued in the
    /// transport, and the peer is slowed by flow control.
    fn pause_recv(&mut self, conn: ConnId, paused: bool);

    /// Closes a connection after what was sent has left (graceful FIN).
    /// [`Event::Closed`] with [`CloseReason::Local`] follows.
    fn close(&mut self, conn: ConnId);

    /// The peer address of a connection.
    fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr>;

    /// Sleeps until something may be ready, or `timeout` passes, or a
    /// [`Wake`] fires. `None` waits indefinitely.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), TransportError>;

    /// A handle other threads use to interrupt [`Transport::wait`].
    fn waker(&self) -> Result<std::sync::Arc<dyn Wake>, TransportError>;

    /// The earliest time the backend needs `poll` again for its own timers
    /// (TCP retransmits, delayed ACKs), if any.
    fn poll_at(&mut self, _now: Instant) -> Option<Instant> {
        None
    }

    /// Accepts that failed for lack of resources (out of file descriptors
    /// or memory) since the instance was made; each one starts a backoff
    /// instead of a retry loop. For metrics.
    fn accept_errors(&self) -> u64 {
        0
    }

    /// The authenticated identity of a connection's peer, when a layer
    /// below the protocol established one (the subject of a client
    /// certificate verified by mutual TLS).
    fn peer_identity(&self, _conn: ConnId) -> Option<&str> {
        None
    }

    /// Counters of the layers this transport adds (TLS handshakes, ...),
    /// each reported as `(name, value)`, values since the instance was
    /// made. For metrics.
    fn counters(&self, _report: &mut dyn FnMut(&'static str, u64)) {}
}

/// [`Transport::recv`] for a backend whose receive path hands out the
/// bytes it holds in parts (a ring's two halves, one receive buffer after
/// another): `take(max, put)` hands at most `max` bytes to `put`, in
/// order, and returns how many; this copies them into `buf`.
pub fn recv_parts<E>(
    buf: &mut [u8],
    take: impl FnOnce(usize, &mut dyn FnMut(&[u8])) -> Result<usize, E>,
) -> Result<usize, E> {
    let mut at = 0;
    take(buf.len(), &mut |part| {
        buf[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    })
}

/// [`Transport::recv_buf`] for the same kind of backend: appends the
/// parts `take` hands out (at most `max` bytes) to `buf`, without zeroing
/// room for them first.
pub fn recv_buf_parts<E>(
    buf: &mut bytes::BytesMut,
    max: usize,
    take: impl FnOnce(usize, &mut dyn FnMut(&[u8])) -> Result<usize, E>,
) -> Result<usize, E> {
    buf.reserve(max);
    take(max, &mut |part| buf.extend_from_slice(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receive path holding `held` that hands out at most `max` of it
    /// in parts of `part` bytes.
    fn take_from(
        held: &[u8],
        part: usize,
        max: usize,
        put: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, ()> {
        let n = max.min(held.len());
        for p in held[..n].chunks(part) {
            put(p);
        }
        Ok(n)
    }

    #[test]
    fn recv_parts_copies_the_parts_in_order_up_to_the_buffer() {
        let held: Vec<u8> = (0..100).collect();
        let mut buf = [0u8; 64];
        assert_eq!(
            recv_parts(&mut buf, |max, put| take_from(&held, 7, max, put)),
            Ok(64)
        );
        assert_eq!(buf[..], held[..64]);
        assert_eq!(
            recv_parts(&mut [], |max, put| take_from(&held, 7, max, put)),
            Ok(0)
        );
    }

    #[test]
    fn recv_buf_parts_appends_after_what_the_buffer_holds() {
        let held: Vec<u8> = (0..100).collect();
        let mut buf = bytes::BytesMut::from(&b"kept"[..]);
        assert_eq!(
            recv_buf_parts(&mut buf, 30, |max, put| take_from(&held, 9, max, put)),
            Ok(30)
        );
        assert_eq!(&buf[..4], b"kept");
        assert_eq!(buf[4..], held[..30]);
        assert_eq!(
            recv_buf_parts(&mut buf, 0, |max, put| take_from(&held, 9, max, put)),
            Ok(0)
        );
        assert_eq!(buf.len(), 34);
    }

    #[test]
    fn conn_id_identity() {
        let a = ConnId::new(3, 1);
        let b = ConnId::new(3, 2);
        assert_ne!(a, b);
        assert_eq!(a.index(), 3);
        assert_eq!(format!("{a}"), "conn#3.1");
    }

    #[test]
    fn events_reuse() {
        let mut ev = Events::with_capacity(4);
        ev.push(Event::Readable(ConnId::new(0, 0)));
        assert_eq!(ev.len(), 1);
        ev.clear();
        assert!(ev.is_empty());
    }
}
