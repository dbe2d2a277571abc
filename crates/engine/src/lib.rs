//! # warpwire-engine: the server
//!
//! Shared-nothing workers, one per core (and per NIC queue for the bypass
//! backends), each owning one [`Transport`] instance and running to
//! completion: poll, decode, handle, encode, flush. Workers meet only for
//! broadcast (bounded lock-free inboxes of encoded relay frames), the
//! server-wide connection count and the metrics.
//!
//! ```text
//!            ┌──────────── Server::start(factory) ─────────────┐
//!            ▼                                                  ▼
//!   worker 0: Transport ─ sessions ─ handlers      worker N: Transport ─ sessions
//!        │  ▲                                            │  ▲
//!        │  └──── inbox (ArrayQueue<Bytes>) ◄─ broadcast ─┘  │
//!        └──────► inbox ──────────────────────────────────────┘
//!                 Metrics (relaxed atomics + histograms) ─► STATS, /metrics
//! ```
//!
//! The engine is generic over [`Transport`]: the same code serves kernel
//! sockets, smoltcp over AF_XDP or DPDK, and RDMA. It implements every
//! message type and limit of the wire contract (`docs/protocol.md`, which also records the
//! choices the contract leaves to a server).
//!
//! Not here: argument parsing, signal handling, transport construction
//! (the binary passes a factory).

#![forbid(unsafe_code)]

mod auth;
mod both;
mod config;
mod echo;
mod handler;
pub mod input;
mod limits;
pub mod metrics;
mod pool;
pub mod protocol;
pub mod testing;
pub mod warpwire;
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use warpwire_transport::{Transport, TransportError, Wake};

pub use auth::{AuthError, UserDb, generate_token};
pub use both::{Both, Either};
pub use config::{DEFAULT_PORT, ListenerConfig, ServerConfig};
pub use echo::{Echo, EchoConn};
pub use handler::{
    AppHandler, DataHandler, DirectorySink, DiscardData, HandlerError, Handlers, REVERSE,
    SessionInfo, UPPERCASE, reverse, uppercase,
};
pub use input::InputBuffer;
pub use limits::{Limit, TokenBucket};
pub use metrics::Metrics;
pub use protocol::{ConnInfo, Ctx, Hooks, InputHeld, NoHooks, Protocol, Refusal, Relay, Step};
pub use warpwire::Warpwire;

/// Relays a worker's inbox holds before further broadcasts to it are
/// dropped (and counted): a slow worker cannot make others buffer without
/// bound.
const INBOX_CAPACITY: usize = 4096;
/// And at most this many connections' output caps (`max_output`) of bytes:
/// bounded in bytes too, so relays of large bodies cannot pile up.
const INBOX_OUTPUTS: usize = 4;

/// Engine errors.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Creating or driving a transport failed.
    #[error("worker {worker}: transport failed")]
    Transport {
        /// The worker.
        worker: usize,
        /// The cause.
        #[source]
        source: TransportError,
    },
    /// A handler was registered for a type outside 0x80..=0xFE.
    #[error("type {0:#04x} is not an application type (0x80..=0xFE)")]
    NotApplicationType(u8),
    /// The users file could not be loaded.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// `require_auth` without a users file.
    #[error(
        "require_auth is set but no users file is configured (nor client certificates: --tls-client-ca)"
    )]
    AuthWithoutUsers,
    /// The metrics endpoint could not be started.
    #[error("metrics endpoint on {addr}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A listener names a protocol the server does not serve.
    #[error("listener {listen} names protocol `{protocol}`; this server serves {served}")]
    UnknownProtocol {
        /// The listener's address.
        listen: SocketAddr,
        /// The name asked for.
        protocol: String,
        /// The names served, comma-separated.
        served: String,
    },
    /// A worker thread could not be spawned or panicked.
    #[error("worker thread: {0}")]
    Thread(&'static str),
}

impl From<TransportError> for EngineError {
    fn from(source: TransportError) -> Self {
        Self::Transport {
            worker: usize::MAX,
            source,
        }
    }
}

/// State shared by all workers (none of it protocol-specific).
pub(crate) struct Shared {
    config: ServerConfig,
    metrics: Arc<Metrics>,
    inboxes: Vec<worker::Inbox>,
    /// Broadcast-eligible connections per worker.
    eligible: Vec<AtomicU64>,
    wakers: Arc<OnceLock<Vec<Arc<dyn Wake>>>>,
    /// Application workers for what may block.
    pool: pool::Pool,
    /// The application's connection hooks.
    hooks: Arc<dyn Hooks>,
    /// The protocol of each listen address, in the order of
    /// [`ServerConfig::listen_addrs`].
    protocols: Vec<&'static str>,
    connections: AtomicUsize,
    /// Decoder memory of every session, bytes (see `max_buffered_input`).
    buffered_input: AtomicUsize,
    shutdown: AtomicBool,
}

impl Shared {
    fn new(
        config: ServerConfig,
        metrics: Arc<Metrics>,
        workers: usize,
        pool: pool::Pool,
        wakers: Arc<OnceLock<Vec<Arc<dyn Wake>>>>,
        hooks: Arc<dyn Hooks>,
        protocols: Vec<&'static str>,
    ) -> Self {
        Self {
            protocols,
            inboxes: (0..workers)
                .map(|_| worker::Inbox::new(INBOX_CAPACITY, INBOX_OUTPUTS * config.max_output))
                .collect(),
            eligible: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            wakers,
            pool,
            hooks,
            connections: AtomicUsize::new(0),
            buffered_input: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            config,
            metrics,
        }
    }
}

/// A configured, not yet running server.
pub struct Server {
    config: ServerConfig,
    handlers: Handlers,
    hooks: Arc<dyn Hooks>,
    transport_identities: bool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("handlers", &self.handlers)
            .finish()
    }
}

impl Server {
    /// A server with the REVERSE and UPPERCASE example handlers registered
    /// and the discarding DATA sink.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            handlers: Handlers::with_examples(),
            hooks: Arc::new(NoHooks),
            transport_identities: false,
        }
    }

    /// The transport authenticates peers itself (mutual TLS: a verified
    /// client certificate names the user, see
    /// [`warpwire_transport::Transport::peer_identity`]), so
    /// `require_auth` needs no users file.
    pub fn identities_from_transport(&mut self) -> &mut Self {
        self.transport_identities = true;
        self
    }

    /// Sets the application's connection hooks (accept or refuse, leave,
    /// protocol errors).
    pub fn hooks(&mut self, hooks: impl Hooks) -> &mut Self {
        self.hooks = Arc::new(hooks);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Registers an application handler for a type in 0x80..=0xFE.
    pub fn register(
        &mut self,
        msg_type: u8,
        handler: impl AppHandler,
    ) -> Result<&mut Self, EngineError> {
        self.handlers.register(msg_type, handler)?;
        Ok(self)
    }

    /// Registers a handler that may block, for a type in 0x80..=0xFE: it
    /// runs on the application workers (`app_workers`), and the
    /// connection's later requests wait for its reply.
    pub fn register_blocking(
        &mut self,
        msg_type: u8,
        handler: impl AppHandler,
    ) -> Result<&mut Self, EngineError> {
        self.handlers.register_blocking(msg_type, handler)?;
        Ok(self)
    }

    /// Sets the DATA sink (one that says it blocks, as [`DirectorySink`]
    /// does, runs on the application workers).
    pub fn data_handler(&mut self, handler: impl DataHandler) -> &mut Self {
        self.handlers.set_data_handler(handler);
        self
    }

    /// Starts the workers serving the warpwire protocol. `factory(i)`
    /// builds worker `i`'s transport on the worker's own thread; worker 0
    /// binds `config.listen` first, the others bind the address it got (so
    /// port 0 works with many workers).
    pub fn start<T, F>(self, factory: F) -> Result<ServerHandle, EngineError>
    where
        T: Transport + 'static,
        F: Fn(usize) -> Result<T, TransportError> + Send + Sync + 'static,
    {
        let (users, config, hooks) = self.prepare()?;
        let handlers = self.handlers;
        let proto_config = config.clone();
        serve_with_hooks(config, hooks, factory, move |metrics| {
            Warpwire::new(proto_config, handlers, users, metrics.clone())
        })
    }

    /// Like [`Server::start`], also serving the protocol `other` builds
    /// (and any protocols it holds, see [`Both`]) on the
    /// `config.listeners` that name it, with the same workers:
    /// `start_with(factory, |_| Echo)` serves warpwire on `config.listen`
    /// and echo wherever a listener says `echo`. `other` gets what the
    /// server shares with its other protocols ([`ServerParts`]: metrics,
    /// handlers, users).
    pub fn start_with<T, F, B>(
        self,
        factory: F,
        other: impl FnOnce(&ServerParts) -> B,
    ) -> Result<ServerHandle, EngineError>
    where
        T: Transport + 'static,
        F: Fn(usize) -> Result<T, TransportError> + Send + Sync + 'static,
        B: Protocol,
    {
        let (users, config, hooks) = self.prepare()?;
        let handlers = Arc::new(self.handlers);
        let users = users.map(Arc::new);
        let proto_config = config.clone();
        serve_with_hooks(config, hooks, factory, move |metrics| {
            let parts = ServerParts {
                metrics: metrics.clone(),
                handlers,
                users,
            };
            let second = other(&parts);
            let ServerParts {
                handlers, users, ..
            } = parts;
            Both::new(
                Warpwire::with_shared_users(proto_config, handlers, users, metrics.clone()),
                second,
            )
        })
    }

    /// The users file loaded (or its absence checked), the configuration
    /// and the hooks.
    fn prepare(&self) -> Result<Prepared, EngineError> {
        let users = match &self.config.users_file {
            Some(p) => Some(UserDb::load(p)?),
            None if self.config.require_auth && !self.transport_identities => {
                return Err(EngineError::AuthWithoutUsers);
            }
            None => None,
        };
        Ok((users, self.config.clone(), self.hooks.clone()))
    }
}

/// What a [`Server`] shares with the other protocols it serves
/// ([`Server::start_with`]).
#[derive(Debug)]
pub struct ServerParts {
    /// The server's metrics (HTTP serves them).
    pub metrics: Arc<Metrics>,
    /// The application handlers (HTTP's `/app/{type}` calls them).
    pub handlers: Arc<Handlers>,
    /// The users file, loaded once (RESP's AUTH checks it).
    pub users: Option<Arc<UserDb>>,
}

/// What `Server::start` needs beside the handlers.
type Prepared = (Option<UserDb>, ServerConfig, Arc<dyn Hooks>);

/// Starts workers serving any [`Protocol`] over any transport: the engine
/// without warpwire's framing. `protocol` is built once the metrics exist
/// (a protocol may answer with them, as warpwire's STATS does); `factory`
/// as for [`Server::start`].
pub fn serve<P, T, F>(
    config: ServerConfig,
    factory: F,
    protocol: impl FnOnce(&Arc<Metrics>) -> P,
) -> Result<ServerHandle, EngineError>
where
    P: Protocol,
    T: Transport + 'static,
    F: Fn(usize) -> Result<T, TransportError> + Send + Sync + 'static,
{
    serve_with_hooks(config, Arc::new(NoHooks), factory, protocol)
}

/// [`serve`] with the application's connection [`Hooks`].
pub fn serve_with_hooks<P, T, F>(
    config: ServerConfig,
    hooks: Arc<dyn Hooks>,
    factory: F,
    protocol: impl FnOnce(&Arc<Metrics>) -> P,
) -> Result<ServerHandle, EngineError>
where
    P: Protocol,
    T: Transport + 'static,
    F: Fn(usize) -> Result<T, TransportError> + Send + Sync + 'static,
{
    let n = config.worker_count();
    // The application workers first: nothing to undo if they cannot start.
    let wakers_slot = Arc::new(OnceLock::new());
    let pool = pool::Pool::new(
        config.app_worker_count(),
        config.app_queue,
        n,
        wakers_slot.clone(),
    )
    .map_err(|_| EngineError::Thread("cannot start application workers"))?;
    let factory = Arc::new(factory);
    // Worker 0 builds its transport first so the metrics know its name.
    let (tx, rx) = std::sync::mpsc::channel();
    // `None`: set-up failed after this worker bound; it exits.
    type Slot<P> = OnceLock<Option<(Arc<Shared>, Arc<P>)>>;
    let shared_slot: Arc<Slot<P>> = Arc::new(OnceLock::new());
    let mut threads = Vec::with_capacity(n);
    let mut listen = config.listen_addrs();
    let mut pending = Some((config, protocol, pool, wakers_slot, hooks));
    let mut wakers = Vec::with_capacity(n);
    for i in 0..n {
        let (f, tx, slot) = (factory.clone(), tx.clone(), shared_slot.clone());
        let listen_at = listen.clone();
        let h = std::thread::Builder::new()
            .name(format!("warpwire-w{i}"))
            .spawn(move || -> Result<(), EngineError> {
                let wrap = |source| EngineError::Transport { worker: i, source };
                let setup = (|| {
                    let mut t = f(i)?;
                    let addrs = listen_at
                        .iter()
                        .map(|&a| t.listen(a))
                        .collect::<Result<Vec<_>, _>>()?;
                    let waker = t.waker()?;
                    Ok::<_, TransportError>((t, addrs, waker))
                })();
                let (t, bound) = match setup {
                    Ok((t, addrs, waker)) => {
                        let name = t.capabilities().name;
                        let _ = tx.send(Ok((addrs.clone(), waker, name)));
                        (t, addrs)
                    }
                    Err(e) => {
                        let _ = tx.send(Err(wrap(e)));
                        return Ok(());
                    }
                };
                let (shared, proto) = loop {
                    match slot.get() {
                        Some(Some(s)) => break s.clone(),
                        Some(None) => return Ok(()),
                        None => {}
                    }
                    std::thread::park_timeout(std::time::Duration::from_millis(5));
                };
                worker::Worker::new(i, t, shared, proto, &bound)
                    .run()
                    .map_err(|e| match e {
                        EngineError::Transport { source, .. } => wrap(source),
                        other => other,
                    })
            })
            .map_err(|_| EngineError::Thread("spawn failed"))?;
        threads.push(h);
        let res = rx
            .recv()
            .map_err(|_| EngineError::Thread("worker died during setup"));
        let res = res.and_then(|r| r).and_then(|(addrs, waker, name)| {
            listen = addrs;
            wakers.push(waker);
            if i == 0
                && let Some((config, protocol, pool, wakers_slot, hooks)) = pending.take()
            {
                let metrics = Arc::new(Metrics::new(n, name));
                let proto = protocol(&metrics);
                let protocols = route(&config, &proto.names())?;
                let shared = Shared::new(config, metrics, n, pool, wakers_slot, hooks, protocols);
                let _ = shared_slot.set(Some((Arc::new(shared), Arc::new(proto))));
            }
            Ok(())
        });
        match res {
            Ok(()) => {}
            Err(e) => {
                match shared_slot.get() {
                    Some(Some((s, _))) => s.shutdown.store(true, Ordering::Release),
                    _ => {
                        let _ = shared_slot.set(None);
                    }
                }
                for w in &wakers {
                    w.wake();
                }
                for t in threads {
                    let _ = t.join();
                }
                return Err(e);
            }
        }
    }
    let shared = shared_slot
        .get()
        .and_then(Option::as_ref)
        .map(|(s, _)| s.clone())
        .ok_or(EngineError::Thread("no workers"))?;
    let _ = shared.wakers.set(wakers);
    for t in &threads {
        t.thread().unpark();
    }
    let metrics_thread = match shared.config.metrics {
        Some(addr) => {
            let stop = Arc::new(AtomicBool::new(false));
            let (local, h) = metrics::serve_metrics(addr, shared.metrics.clone(), stop.clone())
                .map_err(|source| EngineError::Metrics { addr, source })?;
            tracing::info!(%local, "metrics endpoint listening");
            Some((local, stop, h))
        }
        None => None,
    };
    let listeners: Vec<(&'static str, SocketAddr)> =
        shared.protocols.iter().copied().zip(listen).collect();
    for (protocol, addr) in &listeners {
        tracing::info!(%addr, protocol, workers = n, "warpwire serving");
    }
    Ok(ServerHandle {
        listeners,
        shared,
        threads,
        metrics_thread,
    })
}

/// The protocol each listen address serves: `config.listen` the first of
/// `names`, each of `config.listeners` the one it names.
fn route(config: &ServerConfig, names: &[&'static str]) -> Result<Vec<&'static str>, EngineError> {
    let first = *names
        .first()
        .ok_or(EngineError::Thread("the protocol serves no protocol name"))?;
    let mut out = vec![first];
    for l in &config.listeners {
        let p = names.iter().find(|&&n| n == l.protocol).ok_or_else(|| {
            EngineError::UnknownProtocol {
                listen: l.listen,
                protocol: l.protocol.clone(),
                served: names.join(", "),
            }
        })?;
        out.push(p);
    }
    Ok(out)
}

/// A running server.
pub struct ServerHandle {
    /// Each listen address (bound, port 0 resolved) and its protocol.
    listeners: Vec<(&'static str, SocketAddr)>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<Result<(), EngineError>>>,
    metrics_thread: Option<(SocketAddr, Arc<AtomicBool>, JoinHandle<()>)>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("listeners", &self.listeners)
            .field("workers", &self.threads.len())
            .finish()
    }
}

impl ServerHandle {
    /// The address the workers listen on for the first protocol
    /// (`config.listen`, port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners[0].1
    }

    /// Every listen address (bound) with the protocol it serves, in the
    /// order of [`ServerConfig::listen_addrs`].
    pub fn listeners(&self) -> &[(&'static str, SocketAddr)] {
        &self.listeners
    }

    /// The bound address of the first listener serving `protocol`.
    pub fn addr_of(&self, protocol: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(p, _)| *p == protocol)
            .map(|&(_, a)| a)
    }

    /// The metrics endpoint's address, when one runs.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_thread.as_ref().map(|m| m.0)
    }

    /// The server's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// A cloneable trigger that starts a graceful shutdown (for signal handlers).
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger(self.shared.clone())
    }

    /// Starts a graceful shutdown: workers stop accepting, flush replies,
    /// close connections, and exit within the configured grace period.
    pub fn shutdown(&self) {
        self.shutdown_trigger().trigger();
    }

    /// Waits for every worker to exit; the first worker error, if any.
    pub fn join(self) -> Result<(), EngineError> {
        let mut result = Ok(());
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or(Err(EngineError::Thread("worker panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        if let Some((_, stop, h)) = self.metrics_thread {
            stop.store(true, Ordering::Relaxed);
            let _ = h.join();
        }
        result
    }

    /// Shuts down and waits.
    pub fn stop(self) -> Result<(), EngineError> {
        self.shutdown();
        self.join()
    }
}

/// Starts a graceful shutdown from any thread.
#[derive(Clone)]
pub struct ShutdownTrigger(Arc<Shared>);

impl std::fmt::Debug for ShutdownTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShutdownTrigger")
    }
}

impl ShutdownTrigger {
    /// Sets the flag and wakes every worker.
    pub fn trigger(&self) {
        self.0.shutdown.store(true, Ordering::Release);
        if let Some(w) = self.0.wakers.get() {
            for w in w {
                w.wake();
            }
        }
    }

    /// Whether a shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        self.0.shutdown.load(Ordering::Acquire)
    }
}
