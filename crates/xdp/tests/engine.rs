//! The engine over AF_XDP, in process: the same workers and protocol seam
//! as on kernel sockets, with the userspace stack on an XDP device at one
//! end of a veth pair (namespace A) and kernel-TCP peers in namespace B.
//!
//! - The toy line protocol (`warpwire_engine::testing::Upper`) is served
//!   as it is over epoll, io_uring and the simulated link.
//! - A handler that sleeps 50 ms, called continuously from 8 connections,
//!   leaves PINGs on the same (only) I/O worker fast: p99 under 10 ms.
//!
//! Needs root: `#[ignore]`d so an unprivileged `cargo test` lists them as
//! ignored, never as passed; scripts/test.sh runs them as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{VethPair, in_netns};
use warpwire_engine::testing::{Upper, check_upper_peer};
use warpwire_engine::{HandlerError, Server, ServerConfig, SessionInfo, serve};
use warpwire_frame::Frame;
use warpwire_stack::{StackConfig, StackTransport};
use warpwire_transport::TransportError;
use warpwire_xdp::{XdpConfig, XdpDevice};

const PORT: u16 = 7077;
const SLOW: u8 = 0x90;

/// One worker's transport: the stack on the veth's XDP end in namespace A
/// (a factory may be called once: one worker).
fn factory(
    veth: &VethPair,
) -> impl Fn(usize) -> Result<StackTransport<XdpDevice>, TransportError> + Send + Sync + 'static {
    let (ns, ifname, ip) = (veth.ns_a.clone(), veth.if_a.clone(), veth.ip_a);
    let once = Arc::new(Mutex::new(Some(())));
    move |_| {
        once.lock().unwrap().take().expect("one worker");
        let ifname = ifname.clone();
        let dev = in_netns(&ns, move || {
            let mut cfg = XdpConfig::new(ifname, 0);
            cfg.busy_poll = false;
            XdpDevice::open(cfg)
        })
        .map_err(|e| TransportError::Backend {
            backend: "xdp",
            what: "open the XDP device",
            source: Box::new(e),
        })?;
        let mut sc = StackConfig::new(ip, 24);
        sc.name = "xdp";
        Ok(StackTransport::new(dev, sc, Instant::now())?)
    }
}

fn config(veth: &VethPair) -> ServerConfig {
    ServerConfig {
        listen: SocketAddr::from((veth.ip_a, PORT)),
        workers: 1,
        shutdown_grace: Duration::from_millis(500),
        ..ServerConfig::default()
    }
}

#[test]
#[ignore = "needs root, network namespaces and AF_XDP: scripts/test.sh runs it as root"]
fn the_line_protocol_over_xdp() {
    common::require_root();
    let veth = VethPair::new(1);
    let h = serve(config(&veth), factory(&veth), |_| Upper).unwrap();
    let addr = h.local_addr();
    in_netns(&veth.ns_b, || check_upper_peer(addr)).unwrap();
    h.stop().unwrap();
}

fn slow(_: &SessionInfo<'_>, f: &Frame) -> Result<Option<Bytes>, HandlerError> {
    std::thread::sleep(Duration::from_millis(50));
    Ok(Some(f.body.clone()))
}

#[test]
#[ignore = "needs root, network namespaces and AF_XDP: scripts/test.sh runs it as root"]
fn a_sleeping_handler_does_not_stall_pings_over_xdp() {
    common::require_root();
    let veth = VethPair::new(1);
    let mut server = Server::new(ServerConfig {
        app_workers: 8,
        ..config(&veth)
    });
    server.register_blocking(SLOW, slow).unwrap();
    let h = server.start(factory(&veth)).unwrap();
    let addr = h.local_addr();
    let report = in_netns(&veth.ns_b, || {
        warpwire_testkit::hostile::check_pings_beside_slow_calls(addr, SLOW)
    })
    .unwrap();
    println!("over xdp: {report}");
    h.stop().unwrap();
}
