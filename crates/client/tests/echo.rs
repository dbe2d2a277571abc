//! The load generator over the echo protocol (RFC 862) against a kernel
//! TCP echo server (`warpwire_testkit::kernel_echo`): replies counted and
//! verified, corruption counted as errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::bounded;
use warpwire_client::{ClientError, Echo, LoadConfig, LoadReport, loadgen};
use warpwire_frame::MessageType;
use warpwire_socket::SocketTransport;
use warpwire_testkit::kernel_echo::{Fault, KernelEcho};

const LIMIT: Duration = Duration::from_secs(20);

fn run(cfg: &LoadConfig) -> Result<LoadReport, ClientError> {
    loadgen::run_with(&Echo::default(), SocketTransport::new, cfg, |_| {})
}

#[test]
fn counts_every_reply_exactly_once() {
    bounded(LIMIT, || {
        let srv = KernelEcho::start().unwrap();
        let cfg = LoadConfig {
            connections: 3,
            pipeline_depth: 8,
            body_size: 100,
            threads: 2,
            count: Some(3_000),
            duration: None,
            ..LoadConfig::new(srv.addr())
        };
        let r = run(&cfg).unwrap();
        assert_eq!((r.messages, r.errors, r.lost), (3_000, 0, 0), "{r:?}");
        assert_eq!(r.protocol, "echo");
        assert!(r.p50 > Duration::ZERO && r.p50 <= r.max, "{r:?}");
        // Exactly the count was sent, and nothing else.
        assert_eq!(srv.echoed(), 3_000 * 100);
        assert_eq!(srv.accepted(), 3);
        assert!(r.to_string().starts_with("echo requests x 100 B"), "{r}");
    });
}

#[test]
fn runs_for_a_duration_with_sizes_small_and_large() {
    bounded(LIMIT, || {
        let srv = KernelEcho::start().unwrap();
        // 1 byte (shorter than the id), 8, and replies far larger than a
        // read chunk: each arrives in many reads.
        for (size, depth) in [(1, 16), (8, 16), (200_000, 4)] {
            let cfg = LoadConfig {
                connections: 2,
                pipeline_depth: depth,
                body_size: size,
                duration: Some(Duration::from_millis(300)),
                ..LoadConfig::new(srv.addr())
            };
            let r = run(&cfg).unwrap();
            assert!(r.messages > 0, "{size}: {r:?}");
            assert_eq!((r.errors, r.lost), (0, 0), "{size}: {r:?}");
        }
    });
}

#[test]
fn a_corrupting_server_gives_errors_not_successes() {
    bounded(LIMIT, || {
        // Every 1,000th byte of each connection's stream flipped: with 100
        // byte requests, one reply in ten carries one wrong byte.
        let srv = KernelEcho::with_fault(Fault::FlipEvery(1_000)).unwrap();
        let cfg = LoadConfig {
            connections: 2,
            pipeline_depth: 8,
            body_size: 100,
            count: Some(2_000),
            duration: None,
            ..LoadConfig::new(srv.addr())
        };
        let r = run(&cfg).unwrap();
        // 1,000 requests x 100 bytes per connection: 100 flips each.
        assert_eq!((r.messages, r.errors, r.lost), (1_800, 200, 0), "{r:?}");
    });
}

#[test]
fn warpwire_settings_are_refused_for_echo() {
    let cfg = LoadConfig {
        msg_type: MessageType::PING,
        ..LoadConfig::new("127.0.0.1:9".parse().unwrap())
    };
    assert!(matches!(run(&cfg), Err(ClientError::InvalidConfig(_))));
    let cfg = LoadConfig {
        body_size: 0,
        ..LoadConfig::new("127.0.0.1:9".parse().unwrap())
    };
    assert!(matches!(run(&cfg), Err(ClientError::InvalidConfig(_))));
}
