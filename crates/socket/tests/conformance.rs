//! The Transport conformance suite (warpwire-testkit) over the socket
//! backend: two instances on loopback, driven from one thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use warpwire_socket::SocketTransport;
use warpwire_testkit::conformance::KernelPair;

fn pair() -> KernelPair<SocketTransport, SocketTransport> {
    KernelPair::new(
        SocketTransport::new().unwrap(),
        SocketTransport::new().unwrap(),
    )
    .unwrap()
}

warpwire_testkit::conformance_tests!(pair);
