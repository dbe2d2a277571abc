//! A small warpwire server for the client's integration tests.
//!
//! The real engine is written separately; this one speaks just enough of
//! docs/protocol.md to exercise the client, and can misbehave on command: stay
//! silent, drop every connection, push unsolicited frames, stop and be
//! restarted on the same port.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender};
use warpwire_client::{Client, ClientConfig, ClientError};
use warpwire_frame::{
    Auth, AuthReply, BroadcastAck, DataAck, Decoder, ErrorBody, ErrorCode, Frame, MessageType,
    MetaBuilder, Stats,
};
use warpwire_socket::SocketTransport;
use warpwire_transport::{ConnId, Event, Events, Transport, Wake};

/// The user and token the server accepts.
pub const USER: &str = "alice";
/// See [`USER`].
pub const TOKEN: &[u8] = b"s3cret";
/// The application type the server handles: replies with the body reversed.
pub const APP_REVERSE: u8 = 0x80;

/// Counters the tests assert on.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub accepted: AtomicU64,
    pub open: AtomicU64,
    pub frames: AtomicU64,
    pub pings: AtomicU64,
    pub pongs: AtomicU64,
    pub auths_ok: AtomicU64,
}

impl ServerStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }
}

/// Start-up settings.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Answer everything but PING and AUTH with UNAUTHENTICATED until an
    /// AUTH with [`USER`]/[`TOKEN`] succeeds.
    pub require_auth: bool,
    /// Start silent.
    pub silent: bool,
}

enum Ctl {
    Broadcast(Bytes),
    Error(ErrorCode),
    Ping,
    DropAll,
    Stop,
}

/// A running test server; stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    ctl: Sender<Ctl>,
    waker: Arc<dyn Wake>,
    silent: Arc<AtomicBool>,
    pub stats: Arc<ServerStats>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server on 127.0.0.1 with a free port.
    pub fn start() -> Self {
        Self::start_with(ServerOptions::default())
    }

    /// A server on 127.0.0.1 with a free port and these options.
    pub fn start_with(opts: ServerOptions) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), opts)
    }

    /// A server on `addr` (a restarted server reuses its predecessor's).
    pub fn start_on(addr: SocketAddr, opts: ServerOptions) -> Self {
        let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let stats = Arc::new(ServerStats::default());
        let silent = Arc::new(AtomicBool::new(opts.silent));
        let thread = {
            let (stats, silent) = (stats.clone(), silent.clone());
            std::thread::Builder::new()
                .name("test-server".into())
                .spawn(move || {
                    let mut t = SocketTransport::new().unwrap();
                    let bound = t.listen(addr).unwrap();
                    ready_tx.send((bound, t.waker().unwrap())).unwrap();
                    Server {
                        t,
                        conns: HashMap::new(),
                        stats,
                        silent,
                        require_auth: opts.require_auth,
                        started: Instant::now(),
                    }
                    .run(ctl_rx);
                })
                .unwrap()
        };
        let (addr, waker) = ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("test server did not start");
        Self {
            addr,
            ctl: ctl_tx,
            waker,
            silent,
            stats,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server has accepted `n` open connections (a client's
    /// connect can complete before the server has seen the accept), so
    /// that server-initiated frames reach them.
    pub fn wait_open(&self, n: u64) {
        assert!(
            wait_until(Duration::from_secs(3), || ServerStats::get(
                &self.stats.open
            ) == n),
            "server has {} open connections, expected {n}",
            ServerStats::get(&self.stats.open)
        );
    }

    fn send(&self, c: Ctl) {
        let _ = self.ctl.send(c);
        self.waker.wake();
    }

    /// Sends a BROADCAST (request_id 0) to every connection.
    pub fn broadcast(&self, body: &'static [u8]) {
        self.send(Ctl::Broadcast(Bytes::from_static(body)));
    }

    /// Sends an unsolicited ERROR (request_id 0, no RESPONSE flag).
    pub fn unsolicited_error(&self, code: ErrorCode) {
        self.send(Ctl::Error(code));
    }

    /// Sends a PING (request_id 77) to every connection.
    pub fn ping_clients(&self) {
        self.send(Ctl::Ping);
    }

    /// Closes every connection (the listener stays).
    pub fn drop_connections(&self) {
        self.send(Ctl::DropAll);
    }

    /// Stops (or resumes) answering; frames are still read and counted.
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    /// Stops the server and closes its listener and connections.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.send(Ctl::Stop);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct SConn {
    decoder: Decoder,
    out: BytesMut,
    authed: bool,
}

struct Server {
    t: SocketTransport,
    conns: HashMap<ConnId, SConn>,
    stats: Arc<ServerStats>,
    silent: Arc<AtomicBool>,
    require_auth: bool,
    started: Instant,
}

impl Server {
    fn run(mut self, ctl: Receiver<Ctl>) {
        let mut events = Events::with_capacity(256);
        loop {
            while let Ok(c) = ctl.try_recv() {
                match c {
                    Ctl::Stop => return,
                    Ctl::Broadcast(body) => {
                        self.send_to_all(&Frame::new(MessageType::BROADCAST, 0, body), None);
                    }
                    Ctl::Error(code) => {
                        self.send_to_all(&ErrorBody::new(code, "notice").frame(None), None);
                    }
                    Ctl::Ping => {
                        let ping =
                            Frame::new(MessageType::PING, 77, 1234u64.to_be_bytes().to_vec());
                        self.send_to_all(&ping, None);
                    }
                    Ctl::DropAll => {
                        for (id, _) in self.conns.drain() {
                            self.t.close(id);
                            self.stats.open.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                }
            }
            self.t.poll(Instant::now(), &mut events).unwrap();
            for ev in events.iter() {
                match *ev {
                    Event::Accepted { conn, .. } => {
                        self.conns.insert(
                            conn,
                            SConn {
                                decoder: Decoder::default(),
                                out: BytesMut::new(),
                                authed: false,
                            },
                        );
                        self.stats.accepted.fetch_add(1, Ordering::SeqCst);
                        self.stats.open.fetch_add(1, Ordering::SeqCst);
                    }
                    Event::Readable(c) => self.read(c),
                    Event::Closed(c, _) => {
                        if self.conns.remove(&c).is_some() {
                            self.stats.open.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    Event::PeerFinished(c) => self.t.close(c),
                    Event::Writable(_) | Event::Connected(_) => {}
                }
            }
            let ids: Vec<ConnId> = self.conns.keys().copied().collect();
            for id in ids {
                self.flush(id);
            }
            self.t.wait(Some(Duration::from_millis(20))).unwrap();
        }
    }

    fn send_to_all(&mut self, f: &Frame, except: Option<ConnId>) -> u32 {
        let mut n = 0;
        for (id, c) in self.conns.iter_mut() {
            if Some(*id) != except {
                f.encode(&mut c.out).unwrap();
                n += 1;
            }
        }
        n
    }

    fn read(&mut self, id: ConnId) {
        let mut frames = Vec::new();
        {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            for _ in 0..16 {
                let buf = c.decoder.read_buf();
                if buf.is_empty() {
                    break;
                }
                match self.t.recv(id, buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => c.decoder.commit(n),
                }
                loop {
                    match c.decoder.decode() {
                        Ok(Some(f)) => frames.push(f),
                        Ok(None) => break,
                        Err(_) => {
                            self.t.close(id);
                            self.conns.remove(&id);
                            self.stats.open.fetch_sub(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }
        }
        for f in frames {
            self.handle(id, f);
        }
    }

    fn reply(&mut self, id: ConnId, f: Frame) {
        if let Some(c) = self.conns.get_mut(&id) {
            f.encode(&mut c.out).unwrap();
        }
    }

    fn handle(&mut self, id: ConnId, f: Frame) {
        self.stats.frames.fetch_add(1, Ordering::SeqCst);
        let rid = f.request_id;
        if f.msg_type == MessageType::PING {
            self.stats.pings.fetch_add(1, Ordering::SeqCst);
        }
        if f.msg_type == MessageType::PONG && f.flags.is_response() {
            self.stats.pongs.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if self.silent.load(Ordering::SeqCst) {
            return;
        }
        let authed = self.conns.get(&id).is_some_and(|c| c.authed);
        if self.require_auth
            && !authed
            && f.msg_type != MessageType::PING
            && f.msg_type != MessageType::AUTH
        {
            let e =
                ErrorBody::new(ErrorCode::Unauthenticated, "authenticate first").frame(Some(rid));
            return self.reply(id, e);
        }
        let r = match f.msg_type {
            MessageType::PING => Frame::response(MessageType::PONG, rid, f.body),
            MessageType::ECHO => Frame::response(MessageType::ECHO_REPLY, rid, f.body),
            MessageType::DATA if f.flags.ack_requested() => DataAck {
                bytes_accepted: f.body.len() as u64,
            }
            .response(rid),
            MessageType::DATA => return,
            MessageType::STATS => Stats {
                connections: self.conns.len() as u64,
                messages_in: ServerStats::get(&self.stats.frames),
                messages_out: 0,
                bytes_in: 0,
                bytes_out: 0,
                errors: 0,
                uptime_s: self.started.elapsed().as_secs(),
                transport: "socket".into(),
            }
            .response(rid)
            .unwrap(),
            MessageType::BROADCAST => {
                let mut meta = MetaBuilder::new();
                meta.push("from", &[id.index() as u8; 16]).unwrap();
                let relay = Frame::new(MessageType::BROADCAST, 0, f.body).with_meta(meta.finish());
                let recipients = self.send_to_all(&relay, Some(id));
                BroadcastAck { recipients }.response(rid)
            }
            MessageType::AUTH => {
                let ok = Auth::decode(&f.body).is_ok_and(|a| a.user == USER && a.token == TOKEN);
                if ok {
                    self.stats.auths_ok.fetch_add(1, Ordering::SeqCst);
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.authed = true;
                    }
                    AuthReply {
                        ok: true,
                        session_id: [9; 16],
                    }
                    .response(rid)
                } else {
                    ErrorBody::new(ErrorCode::AuthFailed, "bad user or token").frame(Some(rid))
                }
            }
            MessageType(APP_REVERSE) => {
                let mut b = f.body.to_vec();
                b.reverse();
                Frame::response(MessageType(APP_REVERSE), rid, b)
            }
            _ => ErrorBody::new(ErrorCode::UnknownType, "no handler").frame(Some(rid)),
        };
        self.reply(id, r);
    }

    fn flush(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        while !c.out.is_empty() {
            match self.t.send(id, &c.out) {
                Ok(0) => return,
                Ok(n) => c.out.advance(n),
                Err(_) => {
                    self.conns.remove(&id);
                    self.stats.open.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

/// A client over kernel TCP.
pub fn connect(addr: SocketAddr, cfg: ClientConfig) -> Result<Client, ClientError> {
    Client::connect(SocketTransport::new, addr, cfg)
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Runs `f` on a thread and fails the test if it takes longer than
/// `limit` (so a hang is a failure, not a stuck CI job).
pub fn bounded<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(r) => {
            h.join().unwrap();
            r
        }
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => panic!("test exceeded {limit:?}"),
        // The closure panicked: re-raise its panic.
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => match h.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!(),
        },
    }
}
