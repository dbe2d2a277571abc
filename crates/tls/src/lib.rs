//! # warpwire-tls: TLS between any transport and any protocol
//!
//! [`TlsTransport`] wraps a [`Transport`] and is one: connections on the
//! listeners it was told are TLS (and every connection it opens as a
//! client) run through a rustls connection, the rest pass through
//! untouched. So warpwire framing, HTTP and RESP get TLS over kernel TCP,
//! io_uring, the userspace stack on AF_XDP or DPDK, and RDMA alike, with
//! no change to the engine, the client library or the load generator.
//!
//! ```text
//!  protocol (engine / client / bench)   plaintext
//!        │  recv/send/close ▲ Accepted (after the handshake), Readable, ...
//!  TlsTransport<T> ── rustls sans-IO: read_tls/process/reader, writer/write_tls
//!        │  recv/send/close ▲ ciphertext
//!  T: socket, uring, stack (xdp, dpdk), rdma
//! ```
//!
//! Contracts it keeps on top of the inner transport's:
//! - The protocol sees a TLS connection only once its handshake is done:
//!   [`Event::Accepted`] (or [`Event::Connected`]) comes after it, and a
//!   handshake that fails or misses its deadline is closed without the
//!   protocol ever hearing of it (a server's) or as
//!   [`CloseReason::Tls`] (a client's), with an alert to the peer, a
//!   counter and a log line naming the peer. Nothing secret is logged.
//! - Handshakes in progress are bounded per instance; past the bound a new
//!   connection is closed at once (counted).
//! - Level-triggered reads hold: a connection with decrypted bytes left is
//!   reported readable on every poll until a `recv` returns 0.
//! - A peer's close_notify, or its TCP FIN, is [`Event::PeerFinished`]
//!   once every decrypted byte has been read; [`Transport::close`] sends
//!   close_notify and closes the inner connection once the ciphertext
//!   queued before it has been taken.

#![forbid(unsafe_code)]

pub mod certs;
mod config;

/// The rustls this crate is built on, for configurations made outside it.
pub use rustls;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::Connection;
use warpwire_transport::{
    Capabilities, CloseReason, ConnId, Event, Events, TlsFailure, Transport, TransportError, Wake,
};

pub use config::{
    ClientOptions, ClientTls, DEFAULT_HANDSHAKE_TIMEOUT, MinVersion, ServerCert, ServerOptions,
    ServerTls, TlsError, fingerprint, identity_of, load_certs, load_key, parse_pin, provider,
};

/// Handshakes in progress one instance allows by default; past it a new
/// TLS connection is closed at once (`tls_handshakes_refused_total`).
pub const DEFAULT_MAX_HANDSHAKES: usize = 4096;

/// Bytes of ciphertext one read of an inner connection takes at most.
const READ_CHUNK: usize = 64 * 1024;

/// How long a closing connection may take to hand its last ciphertext to
/// the inner transport before it is closed regardless.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

/// ALPN protocol ids of the protocols warpwire serves.
pub fn alpn_for(protocol: &str) -> &'static [u8] {
    match protocol {
        "http" => b"http/1.1",
        "resp" => b"redis",
        "echo" => b"echo",
        _ => b"warpwire/1",
    }
}

/// Counters since the instance was made ([`Transport::counters`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct TlsStats {
    /// Full handshakes completed.
    pub handshakes: u64,
    /// Handshakes that resumed a session.
    pub resumed: u64,
    /// Handshakes that failed (bad certificate, protocol error, alert,
    /// plaintext on a TLS port), timeouts not counted.
    pub failed: u64,
    /// Of those, peers that did not speak TLS at all.
    pub not_tls: u64,
    /// Handshakes that missed their deadline.
    pub timeouts: u64,
    /// Connections closed at once because too many handshakes were in
    /// progress.
    pub refused: u64,
    /// Established connections ended by a TLS error (bad record, alert).
    pub errors: u64,
}

/// Which listener a TLS configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Addr(SocketAddr),
    Nth(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshaking,
    Open,
    /// Failed: the alert is out (or being flushed) and the inner
    /// connection closing; `Closed` will carry this failure.
    Failed(TlsFailure),
}

struct Conn {
    id: ConnId,
    tls: Connection,
    peer: SocketAddr,
    /// The listener it came in on (server side).
    listener: Option<SocketAddr>,
    phase: Phase,
    /// The protocol knows this id (a server connection after its
    /// handshake; a client connection from `connect`).
    known: bool,
    paused: bool,
    /// A `send` was short: report `Writable` once the ciphertext drains.
    want_write: bool,
    /// The peer sends no more (close_notify, or the inner FIN).
    eof: bool,
    finished_reported: bool,
    /// `close` was called: close the inner connection once flushed.
    closing: bool,
    inner_closed: bool,
    identity: Option<String>,
    /// The poll in which `Readable` was last reported.
    readable_epoch: u64,
    watched: bool,
    /// Ciphertext read from the inner connection that rustls did not take
    /// yet (it holds at most about a record's worth undecrypted), from
    /// `kept_from` on.
    kept: Vec<u8>,
    kept_from: usize,
}

/// Hands rustls's ciphertext to the inner transport.
struct InnerWrite<'a, T> {
    inner: &'a mut T,
    conn: ConnId,
}

impl<T: Transport> io::Write for InnerWrite<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.inner.send(self.conn, buf) {
            Ok(0) if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            Err(e) => Err(io::Error::other(e)),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let slices: Vec<&[u8]> = bufs.iter().map(|b| &**b).collect();
        let want: usize = slices.iter().map(|s| s.len()).sum();
        match self.inner.send_vectored(self.conn, &slices) {
            Ok(0) if want > 0 => Err(io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            Err(e) => Err(io::Error::other(e)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A [`Transport`] that runs TLS over `T` on the listeners and outgoing
/// connections it is told to (see the crate docs).
pub struct TlsTransport<T> {
    inner: T,
    /// TLS listeners: which `listen` call, and its configuration.
    wanted: Vec<(Which, Arc<rustls::ServerConfig>)>,
    /// `listen` calls so far.
    listen_calls: usize,
    /// TLS listeners by the address `listen` returned.
    listeners: Vec<(SocketAddr, Arc<rustls::ServerConfig>)>,
    client: Option<ClientTls>,
    handshake_timeout: Duration,
    max_handshakes: usize,
    /// TLS connections by slot index (plain ones have none).
    conns: Vec<Option<Box<Conn>>>,
    handshaking: usize,
    /// Handshake deadlines in start order (the deadline is start plus a
    /// constant, so the front expires first); stale entries are skipped.
    deadlines: VecDeque<(Instant, ConnId)>,
    /// Close deadlines likewise.
    closes: VecDeque<(Instant, ConnId)>,
    /// Connections to look at next poll: decrypted bytes left after a
    /// `Readable`, a resumed connection, a finish to report.
    watch: Vec<ConnId>,
    epoch: u64,
    inner_events: Events,
    stats: TlsStats,
    /// The time the last poll was given (close deadlines).
    now: Instant,
    /// Where one read of an inner connection lands before rustls takes it.
    scratch: Box<[u8]>,
}

impl<T: Transport> TlsTransport<T> {
    /// Wraps `inner`; nothing is TLS until [`TlsTransport::serve_tls`] or
    /// [`TlsTransport::with_client`] says so.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            wanted: Vec::new(),
            listen_calls: 0,
            listeners: Vec::new(),
            client: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            conns: Vec::new(),
            handshaking: 0,
            deadlines: VecDeque::new(),
            closes: VecDeque::new(),
            watch: Vec::new(),
            epoch: 0,
            inner_events: Events::with_capacity(1024),
            stats: TlsStats::default(),
            now: Instant::now(),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }

    /// Connections accepted on `addr` (exactly as later given to
    /// [`Transport::listen`]) speak TLS with `config`.
    pub fn serve_tls(
        mut self,
        addr: SocketAddr,
        config: Arc<rustls::ServerConfig>,
        handshake_timeout: Duration,
    ) -> Self {
        self.wanted.push((Which::Addr(addr), config));
        self.handshake_timeout = handshake_timeout;
        self
    }

    /// Connections accepted on the listener of the `nth` call to
    /// [`Transport::listen`] (from 0) speak TLS with `config`. For servers
    /// that listen in a fixed order on every worker (the engine: in
    /// `ServerConfig::listen_addrs` order) where an address is not known
    /// in advance: a port 0 that the first worker binds and the others
    /// then listen on as resolved.
    pub fn serve_tls_nth(
        mut self,
        nth: usize,
        config: Arc<rustls::ServerConfig>,
        handshake_timeout: Duration,
    ) -> Self {
        self.wanted.push((Which::Nth(nth), config));
        self.handshake_timeout = handshake_timeout;
        self
    }

    /// Every connection opened with [`Transport::connect`] speaks TLS.
    pub fn with_client(mut self, client: ClientTls) -> Self {
        self.handshake_timeout = client.handshake_timeout;
        self.client = Some(client);
        self
    }

    /// Bounds handshakes in progress (default [`DEFAULT_MAX_HANDSHAKES`]).
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n.max(1);
        self
    }

    /// The counters.
    pub fn stats(&self) -> TlsStats {
        self.stats
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The negotiated ALPN protocol of a TLS connection.
    pub fn alpn(&self, conn: ConnId) -> Option<&[u8]> {
        self.get(conn)?.tls.alpn_protocol()
    }

    /// The TLS version of a connection (`TLSv1_3`), if it is TLS.
    pub fn version(&self, conn: ConnId) -> Option<rustls::ProtocolVersion> {
        self.get(conn)?.tls.protocol_version()
    }

    /// Whether the connection's handshake resumed a session.
    pub fn resumed(&self, conn: ConnId) -> bool {
        self.get(conn)
            .is_some_and(|c| c.tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
    }

    fn get(&self, conn: ConnId) -> Option<&Conn> {
        self.conns
            .get(conn.index())?
            .as_deref()
            .filter(|c| c.id == conn)
    }

    fn is_tls(&self, conn: ConnId) -> bool {
        self.get(conn).is_some()
    }

    fn insert(&mut self, c: Conn) {
        let i = c.id.index();
        if self.conns.len() <= i {
            self.conns.resize_with(i + 1, || None);
        }
        self.conns[i] = Some(Box::new(c));
    }

    fn watch(&mut self, conn: ConnId) {
        if let Some(Some(c)) = self.conns.get_mut(conn.index())
            && c.id == conn
            && !c.watched
        {
            c.watched = true;
            self.watch.push(conn);
        }
    }

    fn start_server(
        &mut self,
        conn: ConnId,
        peer: SocketAddr,
        listener: SocketAddr,
        config: Arc<rustls::ServerConfig>,
        now: Instant,
    ) {
        if self.handshaking >= self.max_handshakes {
            self.stats.refused += 1;
            tracing::warn!(%peer, limit = self.max_handshakes, "TLS: too many handshakes in progress, closing a new connection");
            self.inner.close(conn);
            return;
        }
        let tls = match rustls::ServerConnection::new(config) {
            Ok(s) => Connection::Server(s),
            Err(e) => {
                tracing::error!(%peer, error = %e, "TLS: cannot start a server connection");
                self.inner.close(conn);
                return;
            }
        };
        self.handshaking += 1;
        self.deadlines
            .push_back((now + self.handshake_timeout, conn));
        self.insert(Conn::new(conn, tls, peer, Some(listener), false));
    }

    /// Reads and processes what the inner connection has, flushes what
    /// rustls wants to send, and reports what changed.
    fn drive(&mut self, conn: ConnId, events: &mut Events) {
        let Some(Some(c)) = self.conns.get_mut(conn.index()) else {
            return;
        };
        if c.id != conn || matches!(c.phase, Phase::Failed(_)) {
            return;
        }
        // Read, then send what that produced; again while ciphertext kept
        // from the read waits for rustls, which took no more while it had
        // handshake messages to send (nothing else would bring it back:
        // the inner connection may have nothing new to report).
        loop {
            let kept = c.kept.len() - c.kept_from;
            if let Err(e) = pump(&mut self.inner, c, &mut self.scratch) {
                self.fail(conn, e);
                return;
            }
            if let Err(e) = flush_tls(&mut self.inner, c) {
                self.fail(conn, e);
                return;
            }
            let left = c.kept.len() - c.kept_from;
            // Done when nothing is kept, rustls wants nothing, or the
            // round took nothing (no spinning on what rustls refuses).
            if left == 0 || !c.tls.wants_read() || (left == kept && kept > 0) {
                break;
            }
        }
        if c.phase == Phase::Handshaking && !c.tls.is_handshaking() {
            c.phase = Phase::Open;
            self.handshaking -= 1;
            if c.tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                self.stats.resumed += 1;
            } else {
                self.stats.handshakes += 1;
            }
            if let Some(listener) = c.listener {
                c.identity = c
                    .tls
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|cert| identity_of(cert));
                tracing::debug!(peer = %c.peer, version = ?c.tls.protocol_version(),
                    alpn = ?c.tls.alpn_protocol().map(String::from_utf8_lossy),
                    identity = ?c.identity, "TLS handshake done");
                c.known = true;
                events.push(Event::Accepted {
                    conn,
                    peer: c.peer,
                    listener,
                });
            } else {
                events.push(Event::Connected(conn));
            }
        }
        self.report(conn, events);
    }

    /// Reports `Readable` or `PeerFinished` for an open connection the
    /// protocol knows, as its state says.
    fn report(&mut self, conn: ConnId, events: &mut Events) {
        let epoch = self.epoch;
        let Some(c) = self.conns[conn.index()].as_deref_mut() else {
            return;
        };
        if c.phase != Phase::Open || !c.known || c.paused || c.closing {
            return;
        }
        let state = match c.tls.process_new_packets() {
            Ok(s) => s,
            Err(e) => {
                self.fail(conn, Failure::Tls(e));
                return;
            }
        };
        if state.peer_has_closed() {
            c.eof = true;
        }
        if state.plaintext_bytes_to_read() > 0 || c.kept_from < c.kept.len() {
            if c.readable_epoch != epoch {
                c.readable_epoch = epoch;
                events.push(Event::Readable(conn));
            }
            self.watch(conn);
        } else if c.eof && !c.finished_reported {
            c.finished_reported = true;
            events.push(Event::PeerFinished(conn));
        }
    }

    fn fail(&mut self, conn: ConnId, why: Failure) {
        let Some(c) = self.conns[conn.index()].as_deref_mut() else {
            return;
        };
        let f = why.classify(c.phase == Phase::Handshaking);
        match (c.phase, f) {
            (Phase::Handshaking, TlsFailure::HandshakeTimeout) => self.stats.timeouts += 1,
            (Phase::Handshaking, TlsFailure::NotTls) => {
                self.stats.failed += 1;
                self.stats.not_tls += 1;
            }
            (Phase::Handshaking, _) => self.stats.failed += 1,
            _ => self.stats.errors += 1,
        }
        if c.phase == Phase::Handshaking {
            self.handshaking -= 1;
        }
        let side = if c.listener.is_some() {
            "server"
        } else {
            "client"
        };
        tracing::warn!(peer = %c.peer, side, failure = %f, detail = %why, "TLS connection refused or ended");
        c.phase = Phase::Failed(f);
        // rustls queued an alert for its own errors: send what it can.
        let _ = flush_tls(&mut self.inner, c);
        if !c.inner_closed {
            c.inner_closed = true;
            self.inner.close(conn);
        }
    }

    fn on_writable(&mut self, conn: ConnId, events: &mut Events) {
        let Some(c) = self.conns[conn.index()].as_deref_mut() else {
            return;
        };
        if let Err(e) = flush_tls(&mut self.inner, c) {
            self.fail(conn, e);
            return;
        }
        if c.tls.wants_write() {
            return;
        }
        if c.closing {
            if !c.inner_closed {
                c.inner_closed = true;
                self.inner.close(conn);
            }
        } else if c.want_write && c.phase == Phase::Open {
            c.want_write = false;
            events.push(Event::Writable(conn));
        }
    }

    fn on_closed(&mut self, conn: ConnId, reason: CloseReason, events: &mut Events) {
        let Some(c) = self.conns[conn.index()].take() else {
            return;
        };
        if c.phase == Phase::Handshaking {
            self.handshaking -= 1;
            if c.listener.is_some() {
                tracing::debug!(peer = %c.peer, ?reason, "TLS: connection closed during its handshake");
            }
        }
        if c.known {
            let reason = match c.phase {
                Phase::Failed(f) => CloseReason::Tls(f),
                _ => reason,
            };
            events.push(Event::Closed(conn, reason));
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, conn)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            if self
                .get(conn)
                .is_some_and(|c| c.phase == Phase::Handshaking)
            {
                self.fail(conn, Failure::Timeout);
            }
        }
        while let Some(&(at, conn)) = self.closes.front() {
            if at > now {
                break;
            }
            self.closes.pop_front();
            if let Some(Some(c)) = self.conns.get_mut(conn.index())
                && c.id == conn
                && !c.inner_closed
            {
                c.inner_closed = true;
                self.inner.close(conn);
            }
        }
    }
}

impl Conn {
    fn new(
        id: ConnId,
        tls: Connection,
        peer: SocketAddr,
        listener: Option<SocketAddr>,
        known: bool,
    ) -> Self {
        Self {
            id,
            tls,
            peer,
            listener,
            phase: Phase::Handshaking,
            known,
            paused: false,
            want_write: false,
            eof: false,
            finished_reported: false,
            closing: false,
            inner_closed: false,
            identity: None,
            readable_epoch: 0,
            watched: false,
            kept: Vec::new(),
            kept_from: 0,
        }
    }
}

/// Why a connection failed, before classification.
enum Failure {
    Tls(rustls::Error),
    Io(io::Error),
    Timeout,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tls(e) => write!(f, "{e}"),
            Self::Io(e) => write!(f, "{e}"),
            Self::Timeout => f.write_str("handshake deadline passed"),
        }
    }
}

impl Failure {
    fn classify(&self, handshaking: bool) -> TlsFailure {
        use rustls::{CertificateError as C, Error as E};
        let e = match self {
            Self::Timeout => return TlsFailure::HandshakeTimeout,
            Self::Io(_) => return TlsFailure::Protocol,
            Self::Tls(e) => e,
        };
        match e {
            E::InvalidCertificate(c) => match c {
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => TlsFailure::CertificateExpired,
                C::UnknownIssuer => TlsFailure::UnknownIssuer,
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsFailure::NameMismatch,
                C::ApplicationVerificationFailure => TlsFailure::PinMismatch,
                _ => TlsFailure::BadCertificate,
            },
            E::NoCertificatesPresented => TlsFailure::NoCertificate,
            E::NoApplicationProtocol | E::PeerIncompatible(_) => TlsFailure::Incompatible,
            E::AlertReceived(a) => match a {
                rustls::AlertDescription::CertificateRequired => TlsFailure::NoCertificate,
                rustls::AlertDescription::CertificateExpired => TlsFailure::CertificateExpired,
                rustls::AlertDescription::UnknownCA => TlsFailure::UnknownIssuer,
                rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::UnsupportedCertificate
                | rustls::AlertDescription::CertificateUnknown => TlsFailure::BadCertificate,
                rustls::AlertDescription::NoApplicationProtocol
                | rustls::AlertDescription::ProtocolVersion
                | rustls::AlertDescription::HandshakeFailure => TlsFailure::Incompatible,
                other => TlsFailure::AlertReceived(u8::from(*other)),
            },
            E::InvalidMessage(_) if handshaking => TlsFailure::NotTls,
            _ => TlsFailure::Protocol,
        }
    }
}

/// Feeds rustls what the inner connection has while it wants more, and
/// processes it.
fn pump<T: Transport>(inner: &mut T, c: &mut Conn, scratch: &mut [u8]) -> Result<(), Failure> {
    while c.tls.wants_read() {
        if !feed(inner, c, scratch)? {
            break;
        }
    }
    Ok(())
}

/// Feeds rustls ciphertext: what the connection kept from an earlier
/// read, else one read of the inner connection into `scratch` (up to 64
/// KiB: rustls itself reads 4 KiB at a time, a system call each on kernel
/// TCP), keeping what rustls does not take. Whether anything was fed.
fn feed<T: Transport>(inner: &mut T, c: &mut Conn, scratch: &mut [u8]) -> Result<bool, Failure> {
    if c.kept_from < c.kept.len() {
        let mut rd = &c.kept[c.kept_from..];
        let before = rd.len();
        take(&mut c.tls, &mut rd)?;
        let left = rd.len();
        c.kept_from += before - left;
        if left == 0 {
            // Idle connections hold no buffer.
            c.kept = Vec::new();
            c.kept_from = 0;
        }
        return Ok(left < before);
    }
    let n = match inner.recv(c.id, scratch) {
        Ok(0) => return Ok(false),
        Ok(n) => n,
        Err(e) => return Err(Failure::Io(io::Error::other(e))),
    };
    let mut rd = &scratch[..n];
    take(&mut c.tls, &mut rd)?;
    if !rd.is_empty() {
        c.kept.extend_from_slice(rd);
    }
    Ok(true)
}

/// Hands rustls as much of `rd` as it takes, processing as it goes.
/// rustls bounds what it holds (its decrypted bytes past 16 KiB, one
/// record undecrypted) and refuses more until the reader drains it.
fn take(tls: &mut Connection, rd: &mut &[u8]) -> Result<(), Failure> {
    while !rd.is_empty() {
        match tls.read_tls(rd) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        tls.process_new_packets().map_err(Failure::Tls)?;
    }
    Ok(())
}

/// Hands rustls's queued ciphertext to the inner connection until it
/// takes no more.
fn flush_tls<T: Transport>(inner: &mut T, c: &mut Conn) -> Result<(), Failure> {
    while c.tls.wants_write() {
        let mut wr = InnerWrite {
            inner: &mut *inner,
            conn: c.id,
        };
        match c.tls.write_tls(&mut wr) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(Failure::Io(e)),
        }
    }
    Ok(())
}

/// `bufs` without their first `skip` bytes.
fn remaining<'a>(bufs: &[&'a [u8]], mut skip: usize) -> Vec<io::IoSlice<'a>> {
    let mut out = Vec::with_capacity(bufs.len());
    for b in bufs {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        out.push(io::IoSlice::new(&b[skip..]));
        skip = 0;
    }
    out
}

fn tls_error(conn: ConnId, what: impl std::fmt::Display) -> TransportError {
    TransportError::Io {
        conn,
        source: io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {what}")),
    }
}

impl<T: Transport> TlsTransport<T> {
    /// The one receive path: `read` takes at most `len` bytes of decrypted
    /// plaintext into `buf` (a slice, or a buffer to append to), `plain`
    /// receives from a connection that is not TLS; handshake, close_notify
    /// and key updates are handled the same for both.
    fn recv_with<B: ?Sized>(
        &mut self,
        conn: ConnId,
        len: usize,
        buf: &mut B,
        mut read: impl FnMut(&mut rustls::Reader<'_>, &mut B) -> io::Result<usize>,
        plain: impl FnOnce(&mut T, ConnId, &mut B) -> Result<usize, TransportError>,
    ) -> Result<usize, TransportError> {
        let Some(Some(c)) = self.conns.get_mut(conn.index()) else {
            return plain(&mut self.inner, conn, buf);
        };
        if c.id != conn {
            return plain(&mut self.inner, conn, buf);
        }
        if c.closing {
            return Err(TransportError::UnknownConn(conn));
        }
        match c.phase {
            Phase::Open => {}
            Phase::Handshaking => return Ok(0),
            Phase::Failed(f) => return Err(tls_error(conn, f)),
        }
        if len == 0 {
            // Nothing asked for: no read of the inner connection either.
            return Ok(0);
        }
        loop {
            match read(&mut c.tls.reader(), buf) {
                Ok(0) => {
                    // close_notify, and everything before it read.
                    c.eof = true;
                    self.watch(conn);
                    return Ok(0);
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(tls_error(conn, e)),
            }
            // Nothing decrypted: take more from the inner connection.
            match feed(&mut self.inner, c, &mut self.scratch) {
                Ok(true) => {}
                Ok(false) => {
                    if c.eof {
                        self.watch(conn);
                    }
                    return Ok(0);
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.fail(conn, e);
                    return Err(tls_error(conn, msg));
                }
            }
            // Processing may have queued something to send (a key update).
            if c.tls.wants_write()
                && let Err(e) = flush_tls(&mut self.inner, c)
            {
                self.fail(conn, e);
                return Err(tls_error(conn, "the connection failed"));
            }
        }
    }
}

impl<T: Transport> Transport for TlsTransport<T> {
    fn capabilities(&self) -> Capabilities {
        let mut c = self.inner.capabilities();
        // Records are encrypted from contiguous plaintext: vectored sends
        // are gathered by rustls, not by the kernel.
        c.vectored_send = false;
        c
    }

    fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        let bound = self.inner.listen(addr)?;
        let nth = self.listen_calls;
        self.listen_calls += 1;
        if let Some((_, cfg)) = self
            .wanted
            .iter()
            .find(|(w, _)| *w == Which::Addr(addr) || *w == Which::Nth(nth))
        {
            self.listeners.push((bound, cfg.clone()));
        }
        Ok(bound)
    }

    fn stop_listening(&mut self) {
        self.inner.stop_listening();
        // A handshake still in progress would be reported Accepted later:
        // it ends now (its inner connection closes), as the inner
        // transport resets what it had not reported.
        for c in self.conns.iter_mut().flatten() {
            if c.listener.is_some() && c.phase == Phase::Handshaking && !c.inner_closed {
                c.inner_closed = true;
                self.inner.close(c.id);
            }
        }
    }

    fn connect(&mut self, addr: SocketAddr, now: Instant) -> Result<ConnId, TransportError> {
        let id = self.inner.connect(addr, now)?;
        let Some(client) = &self.client else {
            return Ok(id);
        };
        let tls = rustls::ClientConnection::new(client.config.clone(), client.server_name.clone())
            .map_err(|e| TransportError::Connect {
                addr,
                source: io::Error::other(e),
            })?;
        self.handshaking += 1;
        self.deadlines.push_back((now + self.handshake_timeout, id));
        self.insert(Conn::new(id, Connection::Client(tls), addr, None, true));
        Ok(id)
    }

    fn poll(&mut self, now: Instant, events: &mut Events) -> Result<(), TransportError> {
        events.clear();
        self.epoch += 1;
        self.now = now;
        let mut inner_events = std::mem::take(&mut self.inner_events);
        let result = self.inner.poll(now, &mut inner_events);
        for ev in inner_events.iter().copied() {
            match ev {
                Event::Accepted {
                    conn,
                    peer,
                    listener,
                } => match self.listeners.iter().find(|(a, _)| *a == listener) {
                    Some((_, cfg)) => {
                        let cfg = cfg.clone();
                        self.start_server(conn, peer, listener, cfg, now);
                    }
                    None => events.push(ev),
                },
                Event::Connected(conn) | Event::Readable(conn) if self.is_tls(conn) => {
                    self.drive(conn, events)
                }
                Event::Writable(conn) if self.is_tls(conn) => self.on_writable(conn, events),
                Event::PeerFinished(conn) if self.is_tls(conn) => {
                    if let Some(c) = self.conns[conn.index()].as_deref_mut() {
                        c.eof = true;
                        if c.phase == Phase::Handshaking {
                            // The peer gave up before finishing.
                            self.fail(conn, Failure::Io(io::ErrorKind::UnexpectedEof.into()));
                            continue;
                        }
                    }
                    self.drive(conn, events);
                }
                Event::Closed(conn, reason) if self.is_tls(conn) => {
                    self.on_closed(conn, reason, events)
                }
                other => events.push(other),
            }
        }
        self.inner_events = inner_events;
        self.expire(now);
        for conn in std::mem::take(&mut self.watch) {
            if let Some(Some(c)) = self.conns.get_mut(conn.index())
                && c.id == conn
            {
                c.watched = false;
                self.report(conn, events);
            }
        }
        result
    }

    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, TransportError> {
        let len = buf.len();
        self.recv_with(
            conn,
            len,
            buf,
            |r, buf| io::Read::read(r, buf),
            |t, conn, buf| t.recv(conn, buf),
        )
    }

    fn recv_buf(
        &mut self,
        conn: ConnId,
        buf: &mut warpwire_transport::bytes::BytesMut,
        max: usize,
    ) -> Result<usize, TransportError> {
        self.recv_with(
            conn,
            max,
            buf,
            |r, buf| {
                // The plaintext rustls holds, copied once, without zeroing
                // the room first.
                let chunk = io::BufRead::fill_buf(r)?;
                let k = chunk.len().min(max);
                buf.extend_from_slice(&chunk[..k]);
                io::BufRead::consume(r, k);
                Ok(k)
            },
            |t, conn, buf| t.recv_buf(conn, buf, max),
        )
    }

    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, TransportError> {
        self.send_vectored(conn, &[data])
    }

    fn send_vectored(&mut self, conn: ConnId, bufs: &[&[u8]]) -> Result<usize, TransportError> {
        let Some(Some(c)) = self.conns.get_mut(conn.index()) else {
            return self.inner.send_vectored(conn, bufs);
        };
        if c.id != conn {
            return self.inner.send_vectored(conn, bufs);
        }
        if c.closing {
            return Err(TransportError::UnknownConn(conn));
        }
        match c.phase {
            Phase::Open => {}
            Phase::Failed(f) => return Err(tls_error(conn, f)),
            _ => return Ok(0),
        }
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        let mut taken = 0;
        // rustls takes what fits its buffer (encrypted at once); the inner
        // connection takes what it can of that. Go on while the inner one
        // drains everything: a `Writable` comes only from an inner
        // connection that refused bytes, so stopping with room left in
        // both would wait for an event that never comes.
        loop {
            let slices = remaining(bufs, taken);
            let n = io::Write::write_vectored(&mut c.tls.writer(), &slices)
                .map_err(|e| tls_error(conn, e))?;
            taken += n;
            if let Err(e) = flush_tls(&mut self.inner, c) {
                self.fail(conn, e);
                return Err(tls_error(conn, "the connection failed"));
            }
            if taken == want {
                return Ok(taken);
            }
            if n == 0 || c.tls.wants_write() {
                // The inner connection is full: its `Writable` wakes us.
                c.want_write = true;
                return Ok(taken);
            }
        }
    }

    fn flush(&mut self, now: Instant) -> Result<(), TransportError> {
        self.inner.flush(now)
    }

    fn pause_recv(&mut self, conn: ConnId, paused: bool) {
        if let Some(Some(c)) = self.conns.get_mut(conn.index())
            && c.id == conn
        {
            c.paused = paused;
            if !paused {
                self.watch(conn);
            }
        }
        self.inner.pause_recv(conn, paused);
    }

    fn close(&mut self, conn: ConnId) {
        let Some(Some(c)) = self.conns.get_mut(conn.index()) else {
            return self.inner.close(conn);
        };
        if c.id != conn {
            return self.inner.close(conn);
        }
        if c.closing || c.inner_closed {
            return;
        }
        c.closing = true;
        if c.phase == Phase::Open {
            c.tls.send_close_notify();
            let _ = flush_tls(&mut self.inner, c);
        }
        if c.tls.wants_write() && c.phase == Phase::Open {
            // The rest goes out as the inner connection takes it.
            self.closes.push_back((self.now + CLOSE_DEADLINE, conn));
        } else {
            c.inner_closed = true;
            self.inner.close(conn);
        }
    }

    fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.inner.peer_addr(conn)
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        if !self.watch.is_empty() {
            return Ok(());
        }
        self.inner.wait(timeout)
    }

    fn waker(&self) -> Result<Arc<dyn Wake>, TransportError> {
        self.inner.waker()
    }

    fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let mine = [self.deadlines.front(), self.closes.front()]
            .into_iter()
            .flatten()
            .map(|&(at, _)| at)
            .min();
        match (self.inner.poll_at(now), mine) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn accept_errors(&self) -> u64 {
        self.inner.accept_errors()
    }

    fn peer_identity(&self, conn: ConnId) -> Option<&str> {
        match self.get(conn) {
            Some(c) => c.identity.as_deref(),
            None => self.inner.peer_identity(conn),
        }
    }

    fn counters(&self, report: &mut dyn FnMut(&'static str, u64)) {
        self.inner.counters(report);
        if self.listeners.is_empty() && self.client.is_none() {
            return;
        }
        let s = &self.stats;
        report("tls_handshakes_total", s.handshakes);
        report("tls_resumed_total", s.resumed);
        report("tls_handshake_failures_total", s.failed);
        report("tls_not_tls_total", s.not_tls);
        report("tls_handshake_timeouts_total", s.timeouts);
        report("tls_handshakes_refused_total", s.refused);
        report("tls_errors_total", s.errors);
    }
}
