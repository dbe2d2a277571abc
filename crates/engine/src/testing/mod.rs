//! A deterministic harness: one worker of the engine, driven turn by turn
//! by a test with a virtual clock, over a scripted transport. No threads
//! (jobs offloaded to the application workers run inline), no sleeps, no
//! sockets: idle timeouts, rate limits, pauses, drains and broadcasts are
//! checked exactly, and `check_ops` replays any byte string as a sequence
//! of peer operations (the `session` fuzz target and its corpus).
//!
//! ```text
//!  test ── connect / send / fin / reset / set_window ──► Script (Transport)
//!    │                                                     │ events, recv, send
//!    └── turn(), advance(d) ──► Worker<Script, P>::turn(now) ◄┘
//!  test ◄── received(conn), closed(conn) ── what the worker wrote / closed
//! ```

mod upper;

pub use upper::{Line, Upper, check_upper_peer};

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use warpwire_transport::{
    Capabilities, CloseReason, ConnId, Event, Events, LatencyClass, Transport, TransportError, Wake,
};

use crate::metrics::Metrics;
use crate::protocol::Protocol;
use crate::worker::Worker;
use crate::{Handlers, ServerConfig, Shared, UserDb, Warpwire};

/// One scripted connection.
#[derive(Debug, Default)]
struct Peer {
    id: Option<ConnId>,
    /// Which listen address it dialled (index into `listening`).
    listener: usize,
    /// Bytes the peer sent that the worker has not read.
    input: VecDeque<u8>,
    /// The peer sent FIN (after `input`).
    fin: bool,
    fin_reported: bool,
    /// Bytes the worker sent.
    output: Vec<u8>,
    /// Refused: it dialled after the worker stopped listening.
    refused: bool,
    /// More bytes the peer's window takes; `None`: unlimited.
    window: Option<usize>,
    write_blocked: bool,
    paused: bool,
    /// Closed, and why (reported to the worker once).
    closed: Option<CloseReason>,
    close_reported: bool,
}

#[derive(Debug, Default)]
struct ScriptState {
    /// The addresses listened on.
    listening: Vec<SocketAddr>,
    peers: Vec<Peer>,
    accepted: VecDeque<usize>,
    /// `stop_listening` was called: connects are refused.
    stopped: bool,
}

/// The scripted transport the harness's worker polls.
#[derive(Debug, Clone, Default)]
pub struct Script(Rc<RefCell<ScriptState>>);

struct NoWake;
impl Wake for NoWake {
    fn wake(&self) {}
}

fn id_of(i: usize) -> ConnId {
    ConnId::new(i as u32, 0)
}

impl Transport for Script {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "script",
            latency: LatencyClass::Kernel,
            kernel_bypass: false,
            busy_poll: false,
            vectored_send: false,
            max_segment: 64 * 1024,
        }
    }

    fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        let mut st = self.0.borrow_mut();
        st.listening.push(addr);
        st.stopped = false;
        Ok(addr)
    }

    fn stop_listening(&mut self) {
        let mut st = self.0.borrow_mut();
        st.stopped = true;
        // What was dialled but not yet reported is reset, as a kernel
        // resets its accept queue.
        while let Some(i) = st.accepted.pop_front() {
            st.peers[i].refused = true;
        }
    }

    fn connect(&mut self, addr: SocketAddr, _: Instant) -> Result<ConnId, TransportError> {
        Err(TransportError::Connect {
            addr,
            source: std::io::Error::from(std::io::ErrorKind::Unsupported),
        })
    }

    fn poll(&mut self, _: Instant, events: &mut Events) -> Result<(), TransportError> {
        events.clear();
        let mut st = self.0.borrow_mut();
        while let Some(i) = st.accepted.pop_front() {
            let conn = id_of(i);
            st.peers[i].id = Some(conn);
            let peer = SocketAddr::from(([10, 0, 0, 2], 40_000 + i as u16));
            let listener = st.listening.get(st.peers[i].listener).copied();
            let listener = listener.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
            events.push(Event::Accepted {
                conn,
                peer,
                listener,
            });
        }
        for (i, p) in st.peers.iter_mut().enumerate() {
            let Some(conn) = p.id else { continue };
            if let Some(why) = p.closed {
                if !p.close_reported {
                    p.close_reported = true;
                    events.push(Event::Closed(conn, why));
                }
                continue;
            }
            if p.write_blocked && p.window.is_none_or(|w| w > 0) {
                p.write_blocked = false;
                events.push(Event::Writable(conn));
            }
            if p.paused {
                continue;
            }
            if !p.input.is_empty() {
                events.push(Event::Readable(conn));
            } else if p.fin && !p.fin_reported {
                p.fin_reported = true;
                events.push(Event::PeerFinished(id_of(i)));
            }
        }
        Ok(())
    }

    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, TransportError> {
        let mut st = self.0.borrow_mut();
        let p = st
            .peers
            .get_mut(conn.index())
            .filter(|p| p.id == Some(conn) && p.closed.is_none())
            .ok_or(TransportError::UnknownConn(conn))?;
        let n = buf.len().min(p.input.len());
        for (dst, src) in buf.iter_mut().zip(p.input.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }

    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, TransportError> {
        let mut st = self.0.borrow_mut();
        let p = st
            .peers
            .get_mut(conn.index())
            .filter(|p| p.id == Some(conn) && p.closed.is_none())
            .ok_or(TransportError::UnknownConn(conn))?;
        let n = p.window.map_or(data.len(), |w| w.min(data.len()));
        p.output.extend_from_slice(&data[..n]);
        if let Some(w) = p.window.as_mut() {
            *w -= n;
        }
        if n < data.len() {
            p.write_blocked = true;
        }
        Ok(n)
    }

    fn pause_recv(&mut self, conn: ConnId, paused: bool) {
        if let Some(p) = self.0.borrow_mut().peers.get_mut(conn.index()) {
            p.paused = paused;
        }
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(p) = self.0.borrow_mut().peers.get_mut(conn.index())
            && p.id == Some(conn)
            && p.closed.is_none()
        {
            p.closed = Some(CloseReason::Local);
        }
    }

    fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        Some(SocketAddr::from((
            [10, 0, 0, 2],
            40_000 + conn.index() as u16,
        )))
    }

    fn wait(&mut self, _: Option<Duration>) -> Result<(), TransportError> {
        Ok(())
    }

    fn waker(&self) -> Result<Arc<dyn Wake>, TransportError> {
        Ok(Arc::new(NoWake))
    }
}

/// A peer of the harness: an index into its script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerId(usize);

/// One worker serving protocol `P` over a [`Script`], on a virtual clock.
pub struct Harness<P: Protocol> {
    worker: Worker<Script, P>,
    script: Script,
    shared: Arc<Shared>,
    now: Instant,
}

impl Harness<Warpwire> {
    /// The warpwire protocol with the example handlers (and `users`, when
    /// given), configured by `config` (one worker; jobs run inline).
    pub fn warpwire(config: ServerConfig, users: Option<UserDb>) -> Self {
        let handlers = Handlers::with_examples();
        let proto_config = config.clone();
        Self::new(config, move |metrics| {
            Warpwire::new(proto_config, handlers, users, metrics.clone())
        })
    }
}

impl<P: Protocol> Harness<P> {
    /// One worker serving `protocol(metrics)` with `config` (listening on
    /// every address of `config.listen_addrs()`).
    ///
    /// # Panics
    /// If a listener names a protocol that `protocol` does not serve.
    pub fn new(config: ServerConfig, protocol: impl FnOnce(&Arc<Metrics>) -> P) -> Self {
        let now = Instant::now();
        let metrics = Arc::new(Metrics::new(1, "script"));
        let proto = protocol(&metrics);
        let protocols = crate::route(&config, &proto.names())
            .unwrap_or_else(|e| panic!("harness configuration: {e}"));
        let proto = Arc::new(proto);
        let mut script = Script::default();
        let bound: Vec<SocketAddr> = config
            .listen_addrs()
            .into_iter()
            .map(|a| script.listen(a).unwrap_or(a))
            .collect();
        let wakers = Arc::new(OnceLock::new());
        let _ = wakers.set(vec![Arc::new(NoWake) as Arc<dyn Wake>]);
        let pool = crate::pool::Pool::new(0, config.app_queue, 1, wakers.clone())
            .unwrap_or_else(|_| unreachable!("an inline pool spawns no thread"));
        let shared = Arc::new(Shared::new(
            config,
            metrics,
            1,
            pool,
            wakers,
            Arc::new(crate::NoHooks),
            protocols,
        ));
        let worker = Worker::new_at(0, script.clone(), shared.clone(), proto, &bound, now);
        Self {
            worker,
            script,
            shared,
            now,
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// A new connection to the first listen address, accepted on the next
    /// turn.
    pub fn connect(&mut self) -> PeerId {
        self.connect_to(0)
    }

    /// A new connection to listen address `listener` (an index into
    /// `config.listen_addrs()`), accepted on the next turn, or
    /// [`refused`](Self::refused) once the worker stopped listening.
    pub fn connect_to(&mut self, listener: usize) -> PeerId {
        let mut st = self.script.0.borrow_mut();
        let refused = st.stopped;
        st.peers.push(Peer {
            listener,
            refused,
            ..Peer::default()
        });
        let i = st.peers.len() - 1;
        if !refused {
            st.accepted.push_back(i);
        }
        PeerId(i)
    }

    /// Whether the peer's connect was refused (the worker had stopped
    /// listening) rather than accepted.
    pub fn refused(&self, p: PeerId) -> bool {
        self.script
            .0
            .borrow()
            .peers
            .get(p.0)
            .is_some_and(|peer| peer.refused)
    }

    /// The peer sends `bytes`.
    pub fn send(&mut self, p: PeerId, bytes: &[u8]) {
        if let Some(peer) = self.script.0.borrow_mut().peers.get_mut(p.0) {
            peer.input.extend(bytes.iter().copied());
        }
    }

    /// The peer shuts down its sending side (after what it sent).
    pub fn fin(&mut self, p: PeerId) {
        if let Some(peer) = self.script.0.borrow_mut().peers.get_mut(p.0) {
            peer.fin = true;
        }
    }

    /// The peer resets the connection.
    pub fn reset(&mut self, p: PeerId) {
        if let Some(peer) = self.script.0.borrow_mut().peers.get_mut(p.0)
            && peer.closed.is_none()
        {
            peer.closed = Some(CloseReason::Reset(None));
        }
    }

    /// How many more bytes the peer takes (`None`: no limit).
    pub fn set_window(&mut self, p: PeerId, bytes: Option<usize>) {
        if let Some(peer) = self.script.0.borrow_mut().peers.get_mut(p.0) {
            peer.window = bytes;
        }
    }

    /// What the worker sent the peer since the last call.
    pub fn received(&mut self, p: PeerId) -> Vec<u8> {
        self.script
            .0
            .borrow_mut()
            .peers
            .get_mut(p.0)
            .map(|peer| std::mem::take(&mut peer.output))
            .unwrap_or_default()
    }

    /// How the connection ended, if it has.
    pub fn closed(&self, p: PeerId) -> Option<CloseReason> {
        self.script
            .0
            .borrow()
            .peers
            .get(p.0)
            .and_then(|peer| peer.closed)
    }

    /// Whether the worker stopped reading from the peer.
    pub fn paused(&self, p: PeerId) -> bool {
        self.script
            .0
            .borrow()
            .peers
            .get(p.0)
            .is_some_and(|peer| peer.paused)
    }

    /// Unread bytes the peer has sent.
    pub fn unread(&self, p: PeerId) -> usize {
        self.script
            .0
            .borrow()
            .peers
            .get(p.0)
            .map_or(0, |peer| peer.input.len())
    }

    /// One turn of the worker at the current virtual time; `false` once a
    /// shutdown has drained.
    pub fn turn(&mut self) -> bool {
        matches!(self.worker.turn(self.now), Ok(Some(_)))
    }

    /// Turns until nothing happens (at most 1,000 turns).
    pub fn settle(&mut self) {
        for _ in 0..1000 {
            match self.worker.turn(self.now) {
                Ok(Some(true)) => {}
                _ => return,
            }
        }
    }

    /// Moves the clock on by `d` (in 100 ms steps, so housekeeping runs as
    /// it would), settling after each step.
    pub fn advance(&mut self, d: Duration) {
        let step = Duration::from_millis(100);
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + step).min(end);
            self.settle();
        }
    }

    /// Starts a graceful shutdown.
    pub fn shutdown(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
    }
}

/// Replays `data` as peer operations against a warpwire worker and checks
/// what must always hold: no panic; everything the worker sends decodes as
/// whole, valid frames (request ids of replies are ones the peer used);
/// a worker asked to shut down drains within its grace period. The
/// `session` fuzz target and `tests/fuzz_corpus.rs` run it.
// A test oracle: a failed check must panic, which is what the fuzzer
// detects.
#[allow(clippy::expect_used)]
pub fn check_ops(data: &[u8]) {
    use warpwire_frame::{Decoder, DecoderConfig};
    let config = ServerConfig {
        max_output: 64 * 1024,
        idle_timeout: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(1),
        conn_rate: Some(1000.0),
        ..ServerConfig::default()
    };
    let mut h = Harness::warpwire(config, None);
    let mut peers: Vec<PeerId> = Vec::new();
    let mut decoders: Vec<Decoder> = Vec::new();
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let pick = |peers: &[PeerId], b: Option<u8>| -> Option<PeerId> {
            (!peers.is_empty()).then(|| peers[usize::from(b.unwrap_or(0)) % peers.len()])
        };
        match op % 8 {
            0 if peers.len() < 16 => {
                peers.push(h.connect());
                decoders.push(Decoder::new(DecoderConfig::default()));
            }
            1 => {
                let (Some(p), Some(len)) = (pick(&peers, bytes.next()), bytes.next()) else {
                    continue;
                };
                let chunk: Vec<u8> = bytes.by_ref().take(usize::from(len)).collect();
                h.send(p, &chunk);
            }
            2 => {
                // A whole valid frame: a PING or ECHO with the next byte as id.
                let Some(p) = pick(&peers, bytes.next()) else {
                    continue;
                };
                let id = u64::from(bytes.next().unwrap_or(1));
                let f = if id % 2 == 0 {
                    warpwire_frame::Ping { timestamp_ns: id }.request(id)
                } else {
                    warpwire_frame::Frame::new(
                        warpwire_frame::MessageType::ECHO,
                        id,
                        vec![7u8; 300],
                    )
                };
                let mut b = bytes::BytesMut::new();
                if f.encode(&mut b).is_ok() {
                    h.send(p, &b);
                }
            }
            3 => h.advance(Duration::from_millis(
                u64::from(bytes.next().unwrap_or(0)) * 50,
            )),
            4 => {
                if let Some(p) = pick(&peers, bytes.next()) {
                    h.fin(p);
                }
            }
            5 => {
                if let Some(p) = pick(&peers, bytes.next()) {
                    h.reset(p);
                }
            }
            6 => {
                let Some(p) = pick(&peers, bytes.next()) else {
                    continue;
                };
                let w = bytes.next().unwrap_or(0);
                h.set_window(p, (w != 255).then_some(usize::from(w) * 64));
            }
            _ => h.settle(),
        }
        h.turn();
        for (p, d) in peers.iter().zip(decoders.iter_mut()) {
            let out = h.received(*p);
            let mut rest = &out[..];
            loop {
                let n = d.feed(rest);
                while d
                    .decode()
                    .expect("the worker sends only valid frames")
                    .is_some()
                {}
                rest = &rest[n..];
                if rest.is_empty() {
                    break;
                }
                assert!(n > 0, "a frame larger than the decoder's limit");
            }
        }
    }
    // Whatever state it is in, a shutdown drains within the grace period.
    for p in &peers {
        h.set_window(*p, None);
    }
    h.shutdown();
    let deadline = h.now() + Duration::from_secs(2);
    while h.turn() {
        assert!(
            h.now() < deadline,
            "the worker did not drain within its grace period"
        );
        h.advance(Duration::from_millis(100));
    }
}
