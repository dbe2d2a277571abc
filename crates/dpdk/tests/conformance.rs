//! The Transport conformance suite (warpwire-testkit) over the smoltcp
//! stack on DPDK: the server is a stack on a `net_tap` port, the client a
//! socket transport (kernel TCP) on the TAP's kernel side, both in a
//! network namespace this test creates and driven from one thread of a
//! child process (EAL initialises once per process).
//!
//! Needs root and DPDK (hugepages optional): `#[ignore]`d so an
//! unprivileged `cargo test` lists them as ignored, never as passed;
//! scripts/test.sh runs them as root with `--ignored`. Every wait is
//! bounded, the child included.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use warpwire_dpdk::{DEFAULT_DATA_ROOM, DeviceConfig, DpdkDevice, Mempool, Port, PortConfig};
use warpwire_socket::SocketTransport;
use warpwire_stack::{StackConfig, StackTransport};
use warpwire_testkit::conformance::{self, Pair, Sizes};
use warpwire_transport::{Transport, TransportError};

const PORT: u16 = 7077;
/// A child's bound: the slowest check takes seconds; EAL setup and
/// teardown a few more.
const CHILD_LIMIT: Duration = Duration::from_secs(180);

/// The stack on the DPDK TAP port, and a kernel-TCP client on the TAP's
/// kernel side.
struct TapPair {
    srv: StackTransport<DpdkDevice>,
    cli: SocketTransport,
    addr: SocketAddr,
    client_ip: IpAddr,
}

impl Pair for TapPair {
    type Server = StackTransport<DpdkDevice>;
    type Client = SocketTransport;

    fn server(&mut self) -> &mut Self::Server {
        &mut self.srv
    }

    fn client(&mut self) -> &mut SocketTransport {
        &mut self.cli
    }

    fn listen_addr(&self) -> SocketAddr {
        self.addr
    }

    fn client_ip(&self) -> IpAddr {
        self.client_ip
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn advance(&mut self, idle: bool) -> Result<(), TransportError> {
        if idle {
            // The DPDK side busy-polls; the kernel side may sleep briefly.
            self.srv.wait(Some(Duration::from_micros(500)))?;
            self.cli.wait(Some(Duration::from_micros(500)))?;
        }
        Ok(())
    }

    fn sizes(&self) -> Sizes {
        // A TAP moves a frame per syscall: smaller transfers than loopback.
        Sizes {
            backpressure: 2 << 20,
            close: 512 << 10,
            connections: 200,
            large: 8 << 20,
            time_limit: Duration::from_secs(120),
        }
    }

    fn closed_addr(&mut self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.addr.ip(), 9))
    }

    fn kernel_peer(&self) -> Option<SocketAddr> {
        Some(self.addr)
    }
}

/// The child: EAL with a TAP port, the kernel side addressed, then one
/// check over a fresh pair.
fn child(check: fn(&dyn Fn() -> TapPair)) {
    let prefix = std::env::var("WW_PREFIX").unwrap();
    let iface = std::env::var("WW_TAP").unwrap();
    let kernel_ip = Ipv4Addr::new(10, 77, 201, 1);
    let my_ip = Ipv4Addr::new(10, 77, 201, 2);
    let vdev = format!("--vdev=net_tap0,iface={iface}");
    let eal = init_eal(&eal_args(
        &prefix,
        0,
        &[vdev, "--log-level=pmd.net.tap:error".to_owned()],
    ));
    // Room for the TAP's receive ring, a few windows in flight, and the
    // stack's transmit bursts.
    let pool = Mempool::new(&eal, "ww_cf", 8191, 32, DEFAULT_DATA_ROOM).unwrap();
    let id = Port::find(&eal, "net_tap0").unwrap();
    let port = Port::start(&eal, id, &PortConfig::default(), &pool).unwrap();
    // This process runs inside the test's namespace: the kernel side of
    // the TAP is configured here.
    run(&["ip", "link", "set", "dev", "lo", "up"]);
    let cidr = format!("{kernel_ip}/24");
    run(&["ip", "addr", "add", &cidr, "dev", &iface]);
    run(&["ip", "link", "set", "dev", &iface, "up"]);
    port.wait_link_up(Duration::from_secs(5)).unwrap();
    let make = || {
        let dev = DpdkDevice::new(&port, 0, &pool, DeviceConfig::default()).unwrap();
        let mut sc = StackConfig::new(my_ip, 24);
        sc.name = "dpdk";
        let mut srv = StackTransport::new(dev, sc, Instant::now()).unwrap();
        let addr = srv.listen(SocketAddr::from((my_ip, PORT))).unwrap();
        TapPair {
            srv,
            cli: SocketTransport::new().unwrap(),
            addr,
            client_ip: IpAddr::V4(kernel_ip),
        }
    };
    check(&make);
    drop(port);
    drop(pool);
    eal.cleanup();
}

/// The parent: a namespace, the child in it, its verdict.
fn parent(test: &str) {
    require_root();
    let pid = std::process::id();
    let ns = Netns::new(tag(&format!("cf-{test}")));
    let prefix = tag(&format!("cf-{test}"));
    // Unique per test process and check (15 bytes at most).
    let iface = format!("wwc{}{}", pid % 100_000, test.len() % 100);
    let mut c = spawn_child(
        test,
        "tap",
        &prefix,
        &["ip", "netns", "exec", &ns.0],
        &[("WW_PREFIX", &prefix), ("WW_TAP", &iface)],
    );
    let (ok, out) = c.finish(CHILD_LIMIT);
    assert!(ok, "{test}: the child failed (its panic is above):\n{out}");
}

macro_rules! checks {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        #[ignore = "needs root and DPDK (hugepages optional): scripts/test.sh runs it as root"]
        fn $name() {
            const T: &str = stringify!($name);
            if child_role(T).is_some() {
                return child_main(|| child(|make| conformance::$name(make)));
            }
            parent(T);
        }
    )*};
}

checks!(
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
