//! The Transport conformance suite (warpwire-testkit) over the uring
//! backend: two instances on loopback, driven from one thread.
//!
//! Needs io_uring (Linux 6.0+, `kernel.io_uring_disabled=0`), as the
//! loopback tests do: elsewhere these fail with the reason rather than
//! pass without running.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use warpwire_testkit::conformance::KernelPair;
use warpwire_uring::UringTransport;

fn pair() -> KernelPair<UringTransport, UringTransport> {
    KernelPair::new(
        UringTransport::new().unwrap(),
        UringTransport::new().unwrap(),
    )
    .unwrap()
}

warpwire_testkit::conformance_tests!(pair);
