//! DpdkDevice across processes and into the kernel:
//! - net_memif: a server process and a client process (each its own EAL,
//!   `--file-prefix` and lcore) over a socket in a temp directory; frames
//!   both ways once the link is up.
//! - net_tap: a TAP device inside a network namespace this test creates;
//!   the device sends a UDP datagram to a kernel socket and receives the
//!   kernel's answer (answering the kernel's ARP on the way).
//!
//! Each EAL user is a child process of the test (EAL initialises once per
//! process). Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use warpwire_dpdk::{DEFAULT_DATA_ROOM, DeviceConfig, DpdkDevice, Mempool, Port, PortConfig};
use warpwire_transport::{PacketDevice, RxToken, TxToken};

/// Frames the client sends and the server echoes.
const MEMIF_FRAMES: u32 = 200;

fn memif_child(role: &str) {
    let sock = std::env::var("WW_MEMIF_SOCK").unwrap();
    let prefix = std::env::var("WW_PREFIX").unwrap();
    let lcore = if role == "server" { 0 } else { 1 };
    let vdev = format!("--vdev=net_memif0,role={role},socket={sock},socket-abstract=no");
    let eal = init_eal(&eal_args(&prefix, lcore, &[vdev]));
    let pool = Mempool::new(&eal, "ww_memif", 4095, 64, DEFAULT_DATA_ROOM).unwrap();
    let id = Port::find(&eal, "net_memif0").unwrap();
    let port = Port::start(&eal, id, &PortConfig::default(), &pool).unwrap();
    assert_eq!(port.driver(), "net_memif");
    let t0 = Instant::now();
    port.wait_link_up(Duration::from_secs(20)).unwrap();
    eprintln!("{role}: link up after {:?}", t0.elapsed());
    let mut dev = DpdkDevice::new(&port, 0, &pool, DeviceConfig::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    if role == "server" {
        // Echo every frame back with byte 0 set to 0xEE.
        let mut echoed = 0;
        while echoed < MEMIF_FRAMES && Instant::now() < deadline {
            let Some((rx, tx)) = dev.receive(Instant::now()) else {
                dev.flush().unwrap();
                continue;
            };
            let f = rx.consume(<[u8]>::to_vec);
            tx.consume(f.len(), |b| {
                b.copy_from_slice(&f);
                b[0] = 0xee;
            });
            echoed += 1;
            dev.flush().unwrap();
        }
        while dev.tx_pending() > 0 && Instant::now() < deadline {
            dev.flush().unwrap();
        }
        assert_eq!(echoed, MEMIF_FRAMES, "server echoed every frame");
        // Let the client read the last echoes before the link goes away.
        std::thread::sleep(Duration::from_millis(300));
    } else {
        let mut sent = 0u32;
        let mut got = Vec::new();
        let mut rtts = Vec::new();
        let mut sent_at = std::collections::HashMap::new();
        while (got.len() as u32) < MEMIF_FRAMES && Instant::now() < deadline {
            // Keep at most 16 frames in flight.
            while sent < MEMIF_FRAMES && sent - got.len() as u32 <= 16 {
                let Some(tok) = dev.transmit(Instant::now()) else {
                    break;
                };
                tok.consume(64, |b| {
                    b.fill(0);
                    b[4..8].copy_from_slice(&sent.to_be_bytes());
                });
                sent_at.insert(sent, Instant::now());
                sent += 1;
            }
            dev.flush().unwrap();
            while let Some((rx, _tx)) = dev.receive(Instant::now()) {
                let (mark, seq) =
                    rx.consume(|b| (b[0], u32::from_be_bytes([b[4], b[5], b[6], b[7]])));
                assert_eq!(mark, 0xee, "an echo");
                if let Some(t) = sent_at.get(&seq) {
                    rtts.push(t.elapsed());
                }
                got.push(seq);
            }
        }
        assert_eq!(
            got,
            (0..MEMIF_FRAMES).collect::<Vec<_>>(),
            "every echo, in order"
        );
        rtts.sort();
        eprintln!(
            "client: {} frames echoed; rtt median {:?} max {:?}; port stats {:?}",
            got.len(),
            rtts[rtts.len() / 2],
            rtts[rtts.len() - 1],
            port.stats().unwrap()
        );
    }
    drop(dev);
    drop(port);
    drop(pool);
    eal.cleanup();
}

#[test]
#[ignore = "needs root and DPDK (hugepages optional): scripts/test.sh runs it as root"]
fn memif_two_processes_exchange_frames_both_ways() {
    const T: &str = "memif_two_processes_exchange_frames_both_ways";
    if let Some(role) = child_role(T) {
        return child_main(|| memif_child(&role));
    }
    require_root();
    let t0 = Instant::now();
    let dir = std::env::temp_dir().join(tag("memif"));
    std::fs::create_dir_all(&dir).unwrap();
    struct RmDir(std::path::PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = RmDir(dir.clone());
    let sock = dir.join("memif.sock").display().to_string();
    let (ps, pc) = (tag("memif-s"), tag("memif-c"));
    let mut server = spawn_child(
        T,
        "server",
        &ps,
        &[],
        &[("WW_MEMIF_SOCK", &sock), ("WW_PREFIX", &ps)],
    );
    // The server creates the socket; the client retries until it exists.
    std::thread::sleep(Duration::from_millis(300));
    let mut client = spawn_child(
        T,
        "client",
        &pc,
        &[],
        &[("WW_MEMIF_SOCK", &sock), ("WW_PREFIX", &pc)],
    );
    let (cok, cout) = client.finish(Duration::from_secs(45));
    let (sok, sout) = server.finish(Duration::from_secs(10));
    assert!(cok, "client failed:\n{cout}");
    assert!(sok, "server failed:\n{sout}");
    for p in [&ps, &pc] {
        assert!(
            !std::path::Path::new(&format!("/var/run/dpdk/{p}")).exists(),
            "runtime dir {p} left"
        );
    }
    eprintln!("{T}: {:?}", t0.elapsed());
}

fn tap_child() {
    let prefix = std::env::var("WW_PREFIX").unwrap();
    let iface = std::env::var("WW_TAP").unwrap();
    let net: u8 = std::env::var("WW_NET").unwrap().parse().unwrap();
    let kernel_ip = Ipv4Addr::new(10, 77, net, 1);
    let my_ip = Ipv4Addr::new(10, 77, net, 2);
    let vdev = format!("--vdev=net_tap0,iface={iface}");
    let eal = init_eal(&eal_args(
        &prefix,
        0,
        &[vdev, "--log-level=pmd.net.tap:error".to_owned()],
    ));
    let pool = Mempool::new(&eal, "ww_tap", 2047, 32, DEFAULT_DATA_ROOM).unwrap();
    let id = Port::find(&eal, "net_tap0").unwrap();
    let port = Port::start(&eal, id, &PortConfig::default(), &pool).unwrap();
    assert_eq!(port.driver(), "net_tap");
    // This process runs inside the test's namespace: configure the kernel
    // side of the TAP there.
    run(&[
        "ip",
        "addr",
        "add",
        &format!("{kernel_ip}/24"),
        "dev",
        &iface,
    ]);
    run(&["ip", "link", "set", "dev", &iface, "up"]);
    port.wait_link_up(Duration::from_secs(5)).unwrap();
    let kmac = {
        let text = run(&["ip", "-o", "link", "show", "dev", &iface]);
        parse_mac(
            text.split_whitespace()
                .skip_while(|w| *w != "link/ether")
                .nth(1)
                .unwrap(),
        )
    };
    let sock = UdpSocket::bind(SocketAddrV4::new(kernel_ip, 7000)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut dev = DpdkDevice::new(&port, 0, &pool, DeviceConfig::default()).unwrap();
    let mac = dev.capabilities().mac;
    eprintln!("tap caps: {:?}", dev.capabilities());

    // Device -> kernel: a UDP datagram reaches the kernel socket.
    let frame = udp_frame(
        mac,
        kmac,
        my_ip,
        kernel_ip,
        7001,
        7000,
        b"hello kernel from DPDK",
        false,
    );
    send_frame(&mut dev, &frame);
    let mut buf = [0u8; 128];
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("the kernel socket got the datagram");
    assert_eq!(&buf[..n], b"hello kernel from DPDK");
    assert_eq!(
        from,
        std::net::SocketAddr::from(SocketAddrV4::new(my_ip, 7001))
    );

    // Kernel -> device: the kernel ARPs for us, we answer, it sends.
    let got = serve_until(
        &mut dev,
        mac,
        my_ip,
        Duration::from_secs(5),
        |_| {
            let _ = sock.send_to(
                b"hello DPDK from the kernel",
                SocketAddrV4::new(my_ip, 7001),
            );
        },
        |f| udp_payload_to(f, my_ip, 7001),
    )
    .expect("the kernel's datagram arrived within 5 s");
    assert_eq!(got, b"hello DPDK from the kernel");
    eprintln!(
        "tap: device stats {:?}, port stats {:?}",
        dev.stats(),
        port.stats().unwrap()
    );
    drop(dev);
    drop(port);
    drop(pool);
    eal.cleanup();
}

#[test]
#[ignore = "needs root and DPDK (hugepages optional): scripts/test.sh runs it as root"]
fn tap_in_a_namespace_reaches_the_kernel_and_back() {
    const T: &str = "tap_in_a_namespace_reaches_the_kernel_and_back";
    if child_role(T).is_some() {
        return child_main(tap_child);
    }
    require_root();
    let t0 = Instant::now();
    let pid = std::process::id();
    let ns = Netns::new(tag("dpdk-tap"));
    let prefix = tag("tap");
    let iface = format!("wwdt{}", pid % 100_000);
    let net = (200 + pid % 50).to_string();
    let mut c = spawn_child(
        T,
        "tap",
        &prefix,
        &["ip", "netns", "exec", &ns.0],
        &[("WW_PREFIX", &prefix), ("WW_TAP", &iface), ("WW_NET", &net)],
    );
    let (ok, out) = c.finish(Duration::from_secs(40));
    assert!(ok, "tap child failed:\n{out}");
    // The TAP went away with the DPDK process.
    let links = run(&["ip", "-n", &ns.0, "-o", "link"]);
    assert!(!links.contains(&iface), "{links}");
    drop(ns);
    eprintln!("{T}: {:?}", t0.elapsed());
}
