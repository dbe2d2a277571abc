//! Shared helpers of the client's integration tests: the real server
//! (`warpwire_engine` over kernel sockets) on a free loopback port, read
//! through its metrics; clients; bounded waits.
//!
//! The tests make the server misbehave with the engine's own means: an
//! application type whose handler never answers ([`APP_SILENT`]), a short
//! `idle_timeout` (the server drops a connection, its listener stays),
//! `stop` and a restart on the same address. What the engine never does
//! (PING its clients) is played by a raw TCP peer in the one test that
//! needs it.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use warpwire_client::{Client, ClientConfig, ClientError};
use warpwire_engine::{HandlerError, Server, ServerConfig, ServerHandle, SessionInfo, UserDb};
use warpwire_frame::Frame;
use warpwire_socket::SocketTransport;

/// The user and token the server accepts.
pub const USER: &str = "alice";
/// See [`USER`].
pub const TOKEN: &[u8] = b"s3cret";
/// The engine's example application type: replies with the body reversed.
pub const APP_REVERSE: u8 = warpwire_engine::REVERSE;
/// An application type the server accepts and never answers: a server gone
/// silent, for that request only (the connection's other requests are
/// answered).
pub const APP_SILENT: u8 = 0xA0;

/// A server on a free loopback port. One worker: a broadcast reaches its
/// readers' output before the broadcaster's BROADCAST_ACK is queued, so a
/// request a reader sends after the ACK is answered after the relay.
pub fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        app_workers: 1,
        // Clients often stay connected through stop(): don't wait long.
        shutdown_grace: Duration::from_millis(200),
        ..ServerConfig::default()
    }
}

fn silent(_: &SessionInfo<'_>, _: &Frame) -> Result<Option<Bytes>, HandlerError> {
    Ok(None)
}

/// A running `warpwire_engine` server knowing [`USER`] and with
/// [`APP_SILENT`] registered; stops when dropped.
pub struct Engine {
    handle: Option<ServerHandle>,
    addr: SocketAddr,
}

impl Engine {
    /// A server with [`config`].
    pub fn start() -> Self {
        Self::with_config(config())
    }

    /// A server with `cfg` (`listen` set to a stopped server's address
    /// restarts it there).
    pub fn with_config(cfg: ServerConfig) -> Self {
        Self::with_setup(cfg, |_| {})
    }

    /// A server with `cfg` and the handlers `setup` registers.
    pub fn with_setup(mut cfg: ServerConfig, setup: impl FnOnce(&mut Server)) -> Self {
        // The users file is read once, by start(): remove it afterwards.
        static FILES: AtomicU64 = AtomicU64::new(0);
        let users = std::env::temp_dir().join(format!(
            "warpwire-client-tests-{}-{}.users",
            std::process::id(),
            FILES.fetch_add(1, Ordering::Relaxed)
        ));
        UserDb::add_to_file(&users, USER, TOKEN).unwrap();
        cfg.users_file = Some(users.clone());
        let mut s = Server::new(cfg);
        s.register(APP_SILENT, silent).unwrap();
        setup(&mut s);
        let started = s.start(|_| SocketTransport::new());
        let _ = std::fs::remove_file(&users);
        let handle = started.unwrap();
        Self {
            addr: handle.local_addr(),
            handle: Some(handle),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("running until stopped")
    }

    /// Frames the server has received, of every type (heartbeats too).
    pub fn frames(&self) -> u64 {
        self.handle().metrics().totals().messages_in
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> u64 {
        let m = self.handle().metrics();
        m.workers
            .iter()
            .map(|w| w.accepted.load(Ordering::Relaxed))
            .sum()
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.handle().metrics().totals().connections
    }

    /// Waits until the server has `n` open connections (a client's connect
    /// can complete before the server has seen the accept), so that
    /// broadcasts reach them.
    pub fn wait_open(&self, n: u64) {
        assert!(
            wait_until(Duration::from_secs(3), || self.open() == n),
            "server has {} open connections, expected {n}",
            self.open()
        );
    }

    /// Stops the server: its listener and connections close.
    pub fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.stop().unwrap();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Not unwrapped: a panic here, while a failed test unwinds, would
        // abort the test binary.
        if let Some(h) = self.handle.take() {
            let _ = h.stop();
        }
    }
}

/// Client settings without heartbeats: the server sees only what a test
/// sends.
pub fn quiet() -> ClientConfig {
    ClientConfig {
        heartbeat_interval: None,
        ..ClientConfig::default()
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
