//! The protocol seam is real: a toy protocol of a few dozen lines
//! (`warpwire_engine::testing::Upper`: each newline-terminated line is
//! answered upper-cased; "bye" closes) served by the engine's generic
//! workers over kernel TCP (epoll and io_uring) and over the userspace TCP
//! stack on the simulated link, with none of warpwire's framing. As root,
//! crates/xdp/tests/engine.rs serves it over AF_XDP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warpwire_engine::testing::{Upper, check_upper_peer};
use warpwire_engine::{ServerConfig, ServerHandle, serve};
use warpwire_transport::{Event, Events, Transport};

// --- served over kernel TCP ---------------------------------------------------

fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        shutdown_grace: Duration::from_millis(500),
        ..ServerConfig::default()
    }
}

/// The kernel-TCP peer's checks, then a clean stop.
fn kernel_peer_checks(h: ServerHandle) {
    check_upper_peer(h.local_addr()).unwrap();
    h.stop().unwrap();
}

#[test]
fn upper_over_kernel_tcp() {
    let h = serve(
        config(),
        |_| warpwire_socket::SocketTransport::new(),
        |_| Upper,
    )
    .unwrap();
    kernel_peer_checks(h);
}

#[test]
fn upper_over_io_uring() {
    let h = serve(
        config(),
        |_| warpwire_uring::UringTransport::new(),
        |_| Upper,
    )
    .unwrap();
    kernel_peer_checks(h);
}

// --- served over the userspace TCP stack on the simulated link ---------------

#[test]
fn upper_over_the_userspace_stack_on_a_simulated_link() {
    use warpwire_stack::sim::{self, SimConfig};
    use warpwire_stack::{StackConfig, StackTransport};
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

    let link = SimConfig {
        loss: 0.02,
        reorder: 0.02,
        seed: 7,
        ..SimConfig::default()
    };
    let (a, b) = sim::pair(link);
    // One worker takes the server end of the link.
    let dev = Arc::new(Mutex::new(Some(a)));
    let cfg = ServerConfig {
        listen: SocketAddr::from((SERVER, 7000)),
        workers: 1,
        ..config()
    };
    let h = serve(
        cfg,
        move |_| {
            let d = dev.lock().unwrap().take().expect("one worker");
            Ok(StackTransport::new(
                d,
                StackConfig::new(SERVER, 24),
                Instant::now(),
            )?)
        },
        |_| Upper,
    )
    .unwrap();

    let mut cli = StackTransport::new(b, StackConfig::new(CLIENT, 24), Instant::now()).unwrap();
    let c = cli
        .connect(SocketAddr::from((SERVER, 7000)), Instant::now())
        .unwrap();
    let mut ev = Events::default();
    let (mut got, mut sent, mut finished) = (Vec::new(), false, false);
    let want = b"hello\nALPHA\nBETA\n";
    let deadline = Instant::now() + Duration::from_secs(20);
    while !finished {
        assert!(
            Instant::now() < deadline,
            "got {:?}",
            String::from_utf8_lossy(&got)
        );
        cli.wait(Some(Duration::from_millis(5))).unwrap();
        cli.poll(Instant::now(), &mut ev).unwrap();
        for e in ev.iter() {
            match *e {
                Event::Connected(id) if id == c && !sent => {
                    let msg = b"alpha\nbeta\nbye\n";
                    assert_eq!(cli.send(c, msg).unwrap(), msg.len());
                    sent = true;
                }
                Event::Readable(id) if id == c => {
                    let mut buf = [0u8; 512];
                    loop {
                        let n = cli.recv(c, &mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                }
                // The server closed after "bye": our side closes too.
                Event::PeerFinished(id) if id == c => {
                    cli.close(c);
                    finished = true;
                }
                Event::Closed(id, why) if id == c => panic!("closed early: {why:?}"),
                _ => {}
            }
        }
        cli.flush(Instant::now()).unwrap();
    }
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    h.stop().unwrap();
}
