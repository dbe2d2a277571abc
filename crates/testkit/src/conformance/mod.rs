//! # A [`Transport`] conformance suite
//!
//! The contract in `warpwire-transport` (events, level-triggered
//! `Readable`, short sends and `Writable`, `pause_recv`, `PeerFinished`,
//! `Closed`, stale ids refused) checked the same way for every backend:
//! each check is a plain function taking a factory of [`Pair`]s, so a
//! backend's test file is a few lines (one `#[test]` per check, or
//! [`conformance_tests!`](crate::conformance_tests)).
//!
//! ```text
//!   check(make)                      Harness (one thread, bounded rounds)
//!     │ make() ─► Pair ───────────►  round: pair.advance(idle)   ── kernel: wait(≤1 ms) when idle
//!     │            ├ server: S          │                        ── sim:    now += step
//!     │            ├ client: C          ├ server.poll(pair.now()) ─┐ every event checked against
//!     │            ├ kernel_peer()      └ client.poll(pair.now()) ─┘ each side's ledger (below)
//!     │            └ closed_addr()
//!     └ panics "[check] ..." naming what it waited for, on a violation or past the time limit
//! ```
//!
//! Besides what each check asserts, every event of every round is checked
//! against a ledger of each side's connections: no event for an id the
//! side never handed out, `Connected` once, no `Readable` while paused,
//! after `close` or after `PeerFinished`, `PeerFinished` once, nothing at
//! all after `Closed`, and no id handed out twice (a reused slot needs a
//! new generation).
//!
//! Payloads come from one pseudo-random pattern (period 65,521, prime, so
//! it never lines up with a power-of-two buffer or segment size), each
//! stream starting at its own offset; every received piece is compared
//! with what was sent at that stream offset, so a lost, duplicated,
//! reordered, corrupted or crossed piece is reported with its offset.
//!
//! Not here: the backends themselves, or pair setups beyond kernel TCP on
//! loopback ([`KernelPair`]): the stack on the simulated link, on AF_XDP
//! and on DPDK have their pairs in those crates' `tests/conformance.rs`,
//! next to the simulator, namespaces and EAL children they need.

mod data;
mod drive;
mod harness;
mod lifecycle;
mod load;
mod stream;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use warpwire_transport::{Transport, TransportError};

pub use data::{
    backpressure, connect_accept, connect_refused, pause_resume, readable_until_short_read,
    recv_buf_appends, stop_listening,
};
pub use harness::{Harness, Round, Side};
pub use lifecycle::{half_close, local_close, peer_close, peer_reset, stale_ids};
pub use load::{large_transfer, many_connections};
pub use stream::{Echo, Incoming, Outgoing, Pattern};

/// Two endpoints of one backend (or of two) that the checks connect: the
/// server already listens on [`Pair::listen_addr`], the client connects to
/// it. Driven from one thread: the harness polls both in turn.
pub trait Pair {
    /// The listening end.
    type Server: Transport;
    /// The connecting end.
    type Client: Transport;

    /// The server transport.
    fn server(&mut self) -> &mut Self::Server;

    /// The client transport.
    fn client(&mut self) -> &mut Self::Client;

    /// Where the server listens.
    fn listen_addr(&self) -> SocketAddr;

    /// The address the server should see connections come from.
    fn client_ip(&self) -> IpAddr;

    /// The time the next polls pass in (the wall clock, or a virtual one).
    fn now(&self) -> Instant;

    /// Lets time pass before the next round. `idle`: the last round moved
    /// nothing, so a pair of real transports may sleep in `wait` briefly;
    /// a simulated pair steps its clock either way.
    fn advance(&mut self, idle: bool) -> Result<(), TransportError>;

    /// Transfer sizes and the time bound suited to this pair.
    fn sizes(&self) -> Sizes {
        Sizes::default()
    }

    /// An address on the server's side where nothing listens, for a
    /// refused connect; `None` where the pair cannot name one.
    fn closed_addr(&mut self) -> Option<SocketAddr> {
        None
    }

    /// Where a plain kernel TCP connection reaches the server, for what
    /// the client transport cannot do: a half-close (`shutdown(Write)`)
    /// and a reset (`SO_LINGER` 0). The checks connect from a thread they
    /// spawn (it shares the calling thread's network namespace) while they
    /// keep polling, since a bypass server handshakes only when polled.
    /// `None` where no kernel path reaches the server (a simulated link).
    fn kernel_peer(&self) -> Option<SocketAddr> {
        None
    }
}

/// Transfer sizes and the time bound of the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Bytes the backpressure check moves (well beyond what the two ends
    /// buffer while the server does not read).
    pub backpressure: usize,
    /// Bytes sent before a close (peer close), and the reply after a
    /// half-close.
    pub close: usize,
    /// Concurrent connections of the many-connections check.
    pub connections: usize,
    /// Bytes sent one way and echoed back by the large-transfer check.
    pub large: usize,
    /// Wall-clock bound of one check.
    pub time_limit: Duration,
}

impl Default for Sizes {
    /// Sizes for kernel TCP on loopback: backpressure twice what the
    /// kernel buffers ([`kernel_buffering`]), 32 MB each way, 200
    /// connections, a minute per check (each takes well under a second
    /// there, debug build).
    fn default() -> Self {
        Self {
            backpressure: 2 * kernel_buffering(),
            close: 1 << 20,
            connections: 200,
            large: 32 << 20,
            time_limit: Duration::from_secs(60),
        }
    }
}

/// What one loopback connection's kernel buffers hold while the receiver
/// reads nothing: the sender's buffer grows to `tcp_wmem`'s maximum (an
/// outgoing connection has no TCP_NOTSENT_LOWAT to stop it earlier), the
/// receiver's stays near `tcp_rmem`'s default. From /proc, or Linux's
/// defaults (4 MiB and 128 KiB) where it cannot be read.
pub fn kernel_buffering() -> usize {
    let field = |path: &str, i: usize, fallback: usize| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().nth(i)?.parse().ok())
            .unwrap_or(fallback)
    };
    field("/proc/sys/net/ipv4/tcp_wmem", 2, 4 << 20)
        + field("/proc/sys/net/ipv4/tcp_rmem", 1, 128 << 10)
}

/// One `#[test]` per check, each on a fresh pair from `$make` (a function
/// returning a [`Pair`]). After `;`, the checks to run, for a backend that
/// cannot run them all (no kernel peer on a simulated link): say in the
/// test file which are left out and why.
///
/// ```ignore
/// warpwire_testkit::conformance_tests!(pair);
/// warpwire_testkit::conformance_tests!(pair; connect_accept, backpressure);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:path; $($check:ident),+ $(,)?) => {$(
        #[test]
        fn $check() {
            $crate::conformance::$check($make);
        }
    )+};
    ($make:path) => {
        $crate::conformance_tests!(
            $make;
            connect_accept,
            connect_refused,
            stop_listening,
            readable_until_short_read,
            recv_buf_appends,
            backpressure,
            pause_resume,
            peer_close,
            peer_reset,
            half_close,
            local_close,
            stale_ids,
            many_connections,
            large_transfer,
        );
    };
}

/// Two kernel-TCP transports on loopback (or any local address), driven
/// from one thread: `advance` sleeps in each one's `wait` for up to
/// `tick` when the last round was idle, and time is the wall clock.
#[derive(Debug)]
pub struct KernelPair<S, C> {
    server: S,
    client: C,
    addr: SocketAddr,
    tick: Duration,
    sizes: Sizes,
}

impl<S: Transport, C: Transport> KernelPair<S, C> {
    /// The server listens on 127.0.0.1, a port of the kernel's choosing.
    pub fn new(server: S, client: C) -> Result<Self, TransportError> {
        Self::on(server, client, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The server listens on `addr` (port 0: the kernel's choice).
    pub fn on(mut server: S, client: C, addr: SocketAddr) -> Result<Self, TransportError> {
        let addr = server.listen(addr)?;
        Ok(Self {
            server,
            client,
            addr,
            // Short enough that an idle round costs little wall time, long
            // enough that a loop waiting on the network does not spin.
            tick: Duration::from_micros(500),
            sizes: Sizes::default(),
        })
    }

    /// Other sizes for the checks.
    pub fn with_sizes(mut self, sizes: Sizes) -> Self {
        self.sizes = sizes;
        self
    }
}

impl<S: Transport, C: Transport> Pair for KernelPair<S, C> {
    type Server = S;
    type Client = C;

    fn server(&mut self) -> &mut S {
        &mut self.server
    }

    fn client(&mut self) -> &mut C {
        &mut self.client
    }

    fn listen_addr(&self) -> SocketAddr {
        self.addr
    }

    fn client_ip(&self) -> IpAddr {
        self.addr.ip()
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn advance(&mut self, idle: bool) -> Result<(), TransportError> {
        if idle {
            self.server.wait(Some(self.tick))?;
            self.client.wait(Some(self.tick))?;
        }
        Ok(())
    }

    fn sizes(&self) -> Sizes {
        self.sizes
    }

    fn closed_addr(&mut self) -> Option<SocketAddr> {
        // A port the kernel just handed out and took back: nothing listens.
        let l = TcpListener::bind(SocketAddr::new(self.addr.ip(), 0)).ok()?;
        l.local_addr().ok()
    }

    fn kernel_peer(&self) -> Option<SocketAddr> {
        Some(self.addr)
    }
}
