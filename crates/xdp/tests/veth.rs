//! AF_XDP on a real veth pair between two network namespaces created (and
//! deleted) by each test: the device on one end, the kernel's own stack on
//! the other.
//!
//! Needs root. Marked `#[ignore]` so that an unprivileged `cargo test`
//! lists them as ignored (never as passed); scripts/test.sh runs them as
//! root with `--ignored`. Every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddrV4, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    VethPair, in_netns, require_root, send_frame, serve_until, udp_frame, udp_payload_to,
};
use warpwire_transport::{BackendKind, PacketDevice, TxToken};
use warpwire_xdp::{
    Attach, AttachMode, XdpConfig, XdpDevice, XdpError, ZeroCopy, attached_program, probe,
};

/// Opens a device on the XDP side of `pair` (from inside its namespace).
fn open(pair: &VethPair, cfg: XdpConfig) -> XdpDevice {
    in_netns(&pair.ns_a, move || XdpDevice::open(cfg))
        .unwrap_or_else(|e| panic!("open: {e} ({e:?})"))
}

/// A UDP socket of the kernel peer, bound to `port`.
fn peer_socket(pair: &VethPair, port: u16) -> UdpSocket {
    let addr = SocketAddrV4::new(pair.ip_b, port);
    let s = in_netns(&pair.ns_b, move || UdpSocket::bind(addr)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

fn program_on_a(pair: &VethPair) -> Option<warpwire_xdp::AttachedProgram> {
    let ifname = pair.if_a.clone();
    in_netns(&pair.ns_a, move || attached_program(&ifname)).unwrap()
}

/// Peer sends a datagram to the XDP side until the device receives it
/// (the kernel ARPs first; the device answers). Returns the payload.
fn receive_from_peer(
    pair: &VethPair,
    dev: &mut XdpDevice,
    peer: &UdpSocket,
    port: u16,
    msg: &[u8],
) -> Vec<u8> {
    let mac = dev.capabilities().mac;
    let to = SocketAddrV4::new(pair.ip_a, port);
    let ip_a = pair.ip_a;
    serve_until(
        dev,
        mac,
        ip_a,
        Duration::from_secs(5),
        || {
            // Nonblocking in effect: a datagram queued for ARP resolution.
            let _ = peer.send_to(msg, to);
        },
        |frame| udp_payload_to(frame, ip_a, port),
    )
    .expect("the peer's datagram arrived within 5 s")
}

#[test]
#[ignore = "needs root and network namespaces; scripts/test.sh runs it as root"]
fn receives_arp_and_udp_from_the_kernel_peer() {
    require_root();
    let t0 = Instant::now();
    let pair = VethPair::new(1);
    let mut dev = open(&pair, XdpConfig::new(&pair.if_a, 0));
    let opened = t0.elapsed();

    let mode = dev.mode();
    eprintln!("veth mode: {mode} (program {})", dev.program_id());
    assert_eq!(mode.attach, AttachMode::Native, "veth supports native XDP");
    assert!(
        !mode.zero_copy,
        "veth has no zero-copy: copy-mode fallback expected"
    );
    assert!(mode.need_wakeup);
    let caps = dev.capabilities();
    assert_eq!(caps.mac, pair.mac(&pair.ns_a, &pair.if_a));
    assert_eq!(caps.max_frame, 1514, "MTU 1500 + Ethernet header");
    assert_eq!(caps.max_burst, 64);
    assert!(caps.rx_checksum_offload, "veth delivers partial checksums");
    assert!(!caps.tx_checksum_offload);
    assert!(pair.xdp_shown_on_a());
    let prog = program_on_a(&pair).expect("a program is attached");
    assert_eq!(prog.id, dev.program_id());
    assert!(prog.af_xdp);

    let peer = peer_socket(&pair, 7000);
    let got = receive_from_peer(&pair, &mut dev, &peer, 7001, b"hello over AF_XDP");
    assert_eq!(got, b"hello over AF_XDP");
    assert!(
        dev.stats().rx_frames >= 2,
        "an ARP request and the datagram"
    );
    let k = dev.kernel_stats().unwrap();
    assert_eq!(k.rx_invalid_descs, 0);

    drop(dev);
    assert_eq!(
        program_on_a(&pair),
        None,
        "closing the last device detaches the program"
    );
    assert!(!pair.xdp_shown_on_a());
    eprintln!("open {opened:?}, total {:?}", t0.elapsed());
}

#[test]
#[ignore = "needs root and network namespaces; scripts/test.sh runs it as root"]
fn transmits_udp_with_full_checksums_to_the_kernel_peer() {
    require_root();
    let t0 = Instant::now();
    let pair = VethPair::new(1);
    let mut dev = open(&pair, XdpConfig::new(&pair.if_a, 0));
    let peer = peer_socket(&pair, 7002);
    let my_mac = dev.capabilities().mac;
    let peer_mac = pair.mac(&pair.ns_b, &pair.if_b);

    // Control: the peer's kernel verifies UDP checksums, so a corrupted one
    // is dropped and the good datagram is the first to arrive.
    let bad = udp_frame(
        my_mac, peer_mac, pair.ip_a, pair.ip_b, 7003, 7002, b"corrupt", true,
    );
    send_frame(&mut dev, &bad);
    let good = udp_frame(
        my_mac,
        peer_mac,
        pair.ip_a,
        pair.ip_b,
        7003,
        7002,
        b"sent from the UMEM",
        false,
    );
    send_frame(&mut dev, &good);
    assert_eq!(dev.tx_pending(), 0);

    let mut buf = [0u8; 2048];
    let (n, from) = peer
        .recv_from(&mut buf)
        .expect("the datagram arrives within 2 s");
    assert_eq!(&buf[..n], b"sent from the UMEM");
    assert_eq!(
        from,
        std::net::SocketAddr::V4(SocketAddrV4::new(pair.ip_a, 7003))
    );
    peer.set_nonblocking(true).unwrap();
    assert!(
        peer.recv_from(&mut buf).is_err(),
        "the corrupted datagram was dropped"
    );
    assert_eq!(dev.stats().tx_frames, 2);
    // Both frames completed and are free again.
    assert_eq!(
        dev.tx_free(),
        XdpConfig::new(&pair.if_a, 0).tx_frames() as usize
    );
    eprintln!("total {:?}", t0.elapsed());
}

#[test]
#[ignore = "needs root and network namespaces; scripts/test.sh runs it as root"]
fn backpressure_and_partial_flush_keep_every_frame_in_order() {
    require_root();
    let t0 = Instant::now();
    let pair = VethPair::new(1);
    let mut cfg = XdpConfig::new(&pair.if_a, 0);
    cfg.frame_count = 64;
    cfg.rx_frames = 32;
    cfg.rx_ring_size = 32;
    cfg.fill_ring_size = 64;
    cfg.tx_ring_size = 16;
    cfg.comp_ring_size = 32;
    cfg.batch_size = 16;
    let mut dev = open(&pair, cfg);
    let peer = peer_socket(&pair, 7004);
    let my_mac = dev.capabilities().mac;
    let peer_mac = pair.mac(&pair.ns_b, &pair.if_b);

    // Ask for more transmit frames than the pool holds, without flushing.
    let mut queued = 0u32;
    for _ in 0..100 {
        let Some(tok) = dev.transmit(Instant::now()) else {
            break;
        };
        let f = udp_frame(
            my_mac,
            peer_mac,
            pair.ip_a,
            pair.ip_b,
            7005,
            7004,
            &queued.to_be_bytes(),
            false,
        );
        tok.consume(f.len(), |buf| buf.copy_from_slice(&f));
        queued += 1;
    }
    assert_eq!(
        queued, 32,
        "the pool has 32 transmit frames; then None, no panic"
    );
    assert!(dev.transmit(Instant::now()).is_none());
    assert_eq!(dev.tx_pending(), 32);

    // The TX ring holds 16: one flush hands over 16 and keeps 16.
    assert_eq!(dev.flush().unwrap(), 16);
    assert_eq!(dev.tx_pending(), 16, "the ring's leftovers stay queued");
    let mut flushes = 1;
    while dev.tx_pending() > 0 {
        assert!(flushes < 50, "flush makes progress");
        dev.flush().unwrap();
        flushes += 1;
    }
    assert_eq!(dev.stats().tx_frames, 32);

    // Every frame arrived, once, in order.
    let mut buf = [0u8; 64];
    for want in 0..32u32 {
        let (n, _) = peer.recv_from(&mut buf).expect("datagram within 2 s");
        assert_eq!(&buf[..n], &want.to_be_bytes(), "datagram {want}");
    }
    // Completions came back: the pool is whole again.
    assert_eq!(dev.tx_free(), 32);
    assert!(dev.transmit(Instant::now()).is_some());
    eprintln!("{flushes} flushes, total {:?}", t0.elapsed());
}

#[test]
#[ignore = "needs root and network namespaces; scripts/test.sh runs it as root"]
fn stale_program_of_a_killed_process_is_removed() {
    // This test doubles as the child it kills (see `hold_device_as_child`).
    if let Ok(ifname) = std::env::var(CHILD_ENV) {
        hold_device_as_child(&ifname);
    }
    require_root();
    let t0 = Instant::now();
    let pair = VethPair::new(1);

    // A separate process opens a device in the namespace and is killed with
    // SIGKILL: no destructor runs, the program stays.
    let mut child = common::ChildGuard(Some(
        in_netns(&pair.ns_a, || {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "stale_program_of_a_killed_process_is_removed",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &pair.if_a)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
        })
        .unwrap(),
    ));
    let stdout = child.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains(CHILD_READY) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the child opened its device within 20 s");
    let stale = program_on_a(&pair).expect("the child's program is attached");
    child.kill();
    let still = program_on_a(&pair).expect("SIGKILL leaves the program attached");
    assert_eq!(still.id, stale.id);
    assert!(still.af_xdp);

    // A new open removes the stale program and works.
    let mut dev = open(&pair, XdpConfig::new(&pair.if_a, 0));
    assert_ne!(dev.program_id(), stale.id, "the stale program was replaced");
    assert_eq!(program_on_a(&pair).map(|p| p.id), Some(dev.program_id()));
    let peer = peer_socket(&pair, 7006);
    assert_eq!(
        receive_from_peer(&pair, &mut dev, &peer, 7007, b"after the crash"),
        b"after the crash"
    );
    drop(dev);
    assert_eq!(
        program_on_a(&pair),
        None,
        "and closing leaves nothing behind"
    );
    eprintln!("total {:?}", t0.elapsed());
}

/// Set (to the interface name) in the child of the stale-program test.
const CHILD_ENV: &str = "WARPWIRE_XDP_TEST_HOLD_DEVICE";
/// What the child prints once its device is open.
const CHILD_READY: &str = "warpwire-xdp child: device open";

/// The child's side of `stale_program_of_a_killed_process_is_removed`:
/// started in the namespace by the test, opens a device, says so and
/// waits to be killed (at most 30 s, should the parent die first).
fn hold_device_as_child(ifname: &str) -> ! {
    let dev = XdpDevice::open(XdpConfig::new(ifname, 0)).expect("child: open");
    println!("{CHILD_READY}");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(30));
    drop(dev);
    std::process::exit(0);
}

#[test]
#[ignore = "needs root and network namespaces; scripts/test.sh runs it as root"]
fn devices_on_two_queues_share_the_program_until_the_last_closes() {
    require_root();
    let pair = VethPair::new(2);
    let first = open(&pair, XdpConfig::new(&pair.if_a, 0));
    let second = open(&pair, XdpConfig::new(&pair.if_a, 1));
    assert_eq!(
        first.program_id(),
        second.program_id(),
        "one program for the interface"
    );
    drop(first);
    assert_eq!(
        program_on_a(&pair).map(|p| p.id),
        Some(second.program_id()),
        "the other queue's device keeps it"
    );
    drop(second);
    assert_eq!(program_on_a(&pair), None);

    let e = in_netns(&pair.ns_a, || {
        XdpDevice::open(XdpConfig::new(&pair.if_a, 2))
    })
    .unwrap_err();
    assert!(
        matches!(e, XdpError::NoSuchQueue { queues: 2, .. }),
        "{e:?}"
    );
}

#[test]
#[ignore = "needs root and network namespaces; scripts/test.sh runs it as root"]
fn forced_modes_are_honoured_or_refused_clearly() {
    require_root();
    let pair = VethPair::new(1);
    let mut cfg = XdpConfig::new(&pair.if_a, 0);
    cfg.attach = Attach::Generic;
    let mut dev = open(&pair, cfg);
    assert_eq!(dev.mode().attach, AttachMode::Generic);
    assert_eq!(
        program_on_a(&pair).map(|p| p.mode),
        Some(AttachMode::Generic)
    );
    let peer = peer_socket(&pair, 7008);
    assert_eq!(
        receive_from_peer(&pair, &mut dev, &peer, 7009, b"generic"),
        b"generic"
    );
    drop(dev);
    assert_eq!(program_on_a(&pair), None);

    let mut cfg = XdpConfig::new(&pair.if_a, 0);
    cfg.zero_copy = ZeroCopy::Force;
    let e = in_netns(&pair.ns_a, move || XdpDevice::open(cfg)).unwrap_err();
    let XdpError::Bind {
        attempts: 1, last, ..
    } = &e
    else {
        panic!("expected a bind error, got {e:?}");
    };
    assert!(last.zero_copy);
    let errno = std::error::Error::source(&e)
        .and_then(std::error::Error::source)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error);
    assert_eq!(errno, Some(libc::EOPNOTSUPP), "veth refuses zero-copy: {e}");
    assert_eq!(program_on_a(&pair), None, "a failed open leaves no program");
}

#[test]
#[ignore = "needs root and network namespaces; scripts/test.sh runs it as root"]
fn probe_reports_the_veth_interface() {
    require_root();
    let pair = VethPair::new(1);
    let ifname = pair.if_a.clone();
    let r = in_netns(&pair.ns_a, move || probe(Some(&ifname)));
    eprintln!("probe: {}", r.detail);
    assert_eq!(r.kind, BackendKind::Xdp);
    assert!(r.available, "{}", r.detail);
    assert!(r.detail.contains("veth"), "{}", r.detail);
    assert!(r.detail.contains("native XDP yes"), "{}", r.detail);
    assert!(r.detail.contains("zero-copy no"), "{}", r.detail);
    assert!(r.detail.contains("1 rx queue"), "{}", r.detail);
    assert!(r.detail.contains("no XDP program attached"), "{}", r.detail);

    let r = in_netns(&pair.ns_a, || probe(None));
    assert!(!r.available);
    assert!(r.detail.contains("--iface"), "{}", r.detail);
}

#[test]
#[ignore = "needs root and network namespaces; scripts/test.sh runs it as root"]
fn reopening_right_after_close_waits_for_the_queue() {
    require_root();
    let pair = VethPair::new(1);
    for round in 0..3 {
        let dev = open(&pair, XdpConfig::new(&pair.if_a, 0));
        drop(dev);
        // The kernel frees the queue after an RCU grace period; the bind
        // meets EBUSY until then and open retries (bounded by 1 s).
        let t = Instant::now();
        let dev = open(&pair, XdpConfig::new(&pair.if_a, 0));
        eprintln!("round {round}: reopened in {:?}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(1));
        drop(dev);
    }
    assert_eq!(program_on_a(&pair), None);
}

#[test]
#[ignore = "needs root and network namespaces; scripts/test.sh runs it as root"]
fn one_flush_sends_a_burst_larger_than_a_copy_mode_kick() {
    require_root();
    let t0 = Instant::now();
    let pair = VethPair::new(1);
    let mut dev = open(&pair, XdpConfig::new(&pair.if_a, 0));
    let peer = peer_socket(&pair, 7010);
    let my_mac = dev.capabilities().mac;
    let peer_mac = pair.mac(&pair.ns_b, &pair.if_b);

    // Copy mode sends at most 32 frames per kick: 200 need several kicks,
    // all inside one flush.
    const BURST: u32 = 200;
    for seq in 0..BURST {
        let tok = dev.transmit(Instant::now()).expect("free frame");
        let f = udp_frame(
            my_mac,
            peer_mac,
            pair.ip_a,
            pair.ip_b,
            7011,
            7010,
            &seq.to_be_bytes(),
            false,
        );
        tok.consume(f.len(), |buf| buf.copy_from_slice(&f));
    }
    let flush_start = Instant::now();
    assert_eq!(dev.flush().unwrap(), BURST as usize);
    let flush_took = flush_start.elapsed();
    assert_eq!(dev.tx_pending(), 0, "one flush drained the ring");
    assert!(
        dev.stats().tx_kicks >= u64::from(BURST / 32),
        "{:?}",
        dev.stats()
    );

    let mut buf = [0u8; 64];
    for want in 0..BURST {
        let (n, _) = peer.recv_from(&mut buf).expect("datagram within 2 s");
        assert_eq!(&buf[..n], &want.to_be_bytes(), "datagram {want}");
    }
    eprintln!(
        "{BURST} frames: flush {flush_took:?} with {} kicks; total {:?}",
        dev.stats().tx_kicks,
        t0.elapsed()
    );
}

#[test]
#[ignore = "needs root and network namespaces; scripts/test.sh runs it as root"]
fn busy_poll_mode_receives() {
    require_root();
    let pair = VethPair::new(1);
    let mut cfg = XdpConfig::new(&pair.if_a, 0);
    cfg.busy_poll = true;
    let mut dev = open(&pair, cfg);
    assert!(dev.mode().busy_poll);
    // Drain whatever is there (the peer's IPv6 chatter); an empty RX ring
    // then drives the NAPI poll with recvfrom.
    for _ in 0..1000 {
        if dev.receive(Instant::now()).is_none() {
            break;
        }
    }
    assert!(dev.stats().rx_kicks > 0, "{:?}", dev.stats());
    let peer = peer_socket(&pair, 7012);
    assert_eq!(
        receive_from_peer(&pair, &mut dev, &peer, 7013, b"busy"),
        b"busy"
    );
}
