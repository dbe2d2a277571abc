//! The Transport conformance suite (warpwire-testkit) over the socket
//! backend: two instances on loopback, driven from one thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use warpwire_socket::SocketTransport;
use warpwire_testkit::conformance::{self, KernelPair};

fn pair() -> KernelPair<SocketTransport, SocketTransport> {
    KernelPair::new(
        SocketTransport::new().unwrap(),
        SocketTransport::new().unwrap(),
    )
    .unwrap()
}

#[test]
fn connect_accept() {
    conformance::connect_accept(pair);
}

#[test]
fn connect_refused() {
    conformance::connect_refused(pair);
}

#[test]
fn readable_until_short_read() {
    conformance::readable_until_short_read(pair);
}

#[test]
fn backpressure() {
    conformance::backpressure(pair);
}

#[test]
fn pause_resume() {
    conformance::pause_resume(pair);
}

#[test]
fn peer_close() {
    conformance::peer_close(pair);
}

#[test]
fn peer_reset() {
    conformance::peer_reset(pair);
}

#[test]
fn half_close() {
    conformance::half_close(pair);
}

#[test]
fn local_close() {
    conformance::local_close(pair);
}

#[test]
fn stale_ids() {
    conformance::stale_ids(pair);
}

#[test]
fn many_connections() {
    conformance::many_connections(pair);
}

#[test]
fn large_transfer() {
    conformance::large_transfer(pair);
}
