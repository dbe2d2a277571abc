//! The Transport conformance suite (warpwire-testkit) over the smoltcp
//! stack on AF_XDP: the server is a stack on an XDP device at one end of a
//! veth pair (namespace A), the client a socket transport (kernel TCP) in
//! namespace B, both driven from one thread that lives in B.
//!
//! Needs root (namespaces, veth, XDP): `#[ignore]`d so an unprivileged
//! `cargo test` lists them as ignored, never as passed; scripts/test.sh
//! runs them as root with `--ignored`. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{VethPair, in_netns};
use warpwire_socket::SocketTransport;
use warpwire_stack::{StackConfig, StackTransport};
use warpwire_testkit::conformance::{self, Pair, Sizes};
use warpwire_transport::{Transport, TransportError};
use warpwire_xdp::{XdpConfig, XdpDevice};

const PORT: u16 = 7077;

/// The stack on the veth's XDP end, and a kernel-TCP client across it.
struct XdpPair {
    srv: StackTransport<XdpDevice>,
    cli: SocketTransport,
    addr: SocketAddr,
    client_ip: IpAddr,
}

/// Builds the pair; call it from a thread in namespace B (the client's
/// sockets are made in the caller's namespace).
fn xdp_pair(veth: &VethPair) -> XdpPair {
    let ifname = veth.if_a.clone();
    let dev = in_netns(&veth.ns_a, move || {
        let mut cfg = XdpConfig::new(ifname, 0);
        cfg.busy_poll = false;
        XdpDevice::open(cfg)
    })
    .unwrap_or_else(|e| panic!("open the XDP device: {e} ({e:?})"));
    let mut sc = StackConfig::new(veth.ip_a, 24);
    sc.name = "xdp";
    let mut srv = StackTransport::new(dev, sc, Instant::now()).unwrap();
    let addr = srv.listen(SocketAddr::from((veth.ip_a, PORT))).unwrap();
    XdpPair {
        srv,
        cli: SocketTransport::new().unwrap(),
        addr,
        client_ip: IpAddr::V4(veth.ip_b),
    }
}

impl Pair for XdpPair {
    type Server = StackTransport<XdpDevice>;
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
            self.srv.wait(Some(Duration::from_micros(500)))?;
            self.cli.wait(Some(Duration::from_micros(500)))?;
        }
        Ok(())
    }

    fn sizes(&self) -> Sizes {
        // Copy-mode AF_XDP on veth and a 256 KiB stack window: tens of
        // MB/s, so smaller transfers than on loopback.
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

/// Runs `check` on a fresh veth pair, from a thread in namespace B.
fn run(check: fn(&dyn Fn() -> XdpPair)) {
    let veth = VethPair::new(1);
    in_netns(&veth.ns_b, || check(&|| xdp_pair(&veth)));
}

macro_rules! checks {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        #[ignore = "needs root, network namespaces and AF_XDP: scripts/test.sh runs it as root"]
        fn $name() {
            run(|make| conformance::$name(make));
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
