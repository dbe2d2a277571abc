//! The Transport conformance suite (warpwire-testkit) over the smoltcp
//! stack: two stacks joined by the loss-free simulated link, polled in
//! turn from one thread on a virtual clock.
//!
//! The sim has no kernel TCP peer, so the checks that need one (a reset
//! by `SO_LINGER` 0, a half-close by `shutdown(Write)`) are ignored here
//! with that reason; they run over the kernel backends and, as root, over
//! the stack on AF_XDP and DPDK.
//!
//! The virtual clock starts at the wall clock and steps 50 µs per round,
//! about ten times faster than real time here; one more test starts it
//! ahead of the wall clock, as a long simulated run gets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use warpwire_stack::sim::{self, SimConfig, SimDevice};
use warpwire_stack::{StackConfig, StackTransport};
use warpwire_testkit::conformance::{self, Pair, Sizes};
use warpwire_transport::{Transport as _, TransportError};

type Stack = StackTransport<SimDevice>;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 2);
const PORT: u16 = 7077;
/// Virtual time per round: more than the link's one-way delay (20 µs),
/// so what one round sends is delivered by the next.
const STEP: Duration = Duration::from_micros(50);

/// Two stacks over `sim::pair` with a loss-free link, the server
/// listening.
struct SimPair {
    srv: Stack,
    cli: Stack,
    now: Instant,
}

fn pair() -> SimPair {
    pair_at(Duration::ZERO)
}

/// A pair whose virtual clock starts `ahead` of the wall clock.
fn pair_at(ahead: Duration) -> SimPair {
    let (a, b) = sim::pair(SimConfig::default());
    let now = Instant::now() + ahead;
    let mut sc = StackConfig::new(SERVER, 24);
    sc.seed = 11;
    let mut cc = StackConfig::new(CLIENT, 24);
    cc.seed = 22;
    let mut srv = StackTransport::new(a, sc, now).unwrap();
    srv.listen(SocketAddr::from((SERVER, PORT))).unwrap();
    SimPair {
        srv,
        cli: StackTransport::new(b, cc, now).unwrap(),
        now,
    }
}

impl Pair for SimPair {
    type Server = Stack;
    type Client = Stack;

    fn server(&mut self) -> &mut Stack {
        &mut self.srv
    }

    fn client(&mut self) -> &mut Stack {
        &mut self.cli
    }

    fn listen_addr(&self) -> SocketAddr {
        SocketAddr::from((SERVER, PORT))
    }

    fn client_ip(&self) -> IpAddr {
        IpAddr::V4(CLIENT)
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn advance(&mut self, _idle: bool) -> Result<(), TransportError> {
        self.now += STEP;
        Ok(())
    }

    fn sizes(&self) -> Sizes {
        Sizes {
            backpressure: 2 << 20,
            close: 512 << 10,
            connections: 200,
            large: 16 << 20,
            time_limit: Duration::from_secs(120),
        }
    }

    fn closed_addr(&mut self) -> Option<SocketAddr> {
        Some(SocketAddr::from((SERVER, 9)))
    }
}

// Not here: `peer_reset` and `half_close` need a kernel TCP peer (a RST
// from SO_LINGER 0, a shutdown(SHUT_WR) only): the sim link has none. They
// run over socket, uring, xdp and dpdk.
warpwire_testkit::conformance_tests!(
    pair;
    connect_accept,
    connect_refused,
    stop_listening,
    readable_until_short_read,
    recv_buf_appends,
    backpressure,
    pause_resume,
    peer_close,
    local_close,
    stale_ids,
    many_connections,
    large_transfer,
);

/// Time is passed in: a stack must behave the same whatever the clock's
/// origin. Ten seconds ahead of the wall clock is where a simulated run
/// gets after a second or so of real time. (It failed while close() took
/// its linger deadline from the wall clock: the deadline had passed at
/// once and the close aborted with a RST, losing queued bytes.)
#[test]
fn peer_close_on_a_clock_ahead_of_the_wall_clock() {
    conformance::peer_close(|| pair_at(Duration::from_secs(10)));
}
