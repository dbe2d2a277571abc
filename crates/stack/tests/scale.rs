//! The stack at the scale servers live at, on the simulated link and a
//! virtual clock: tens of thousands of connections, a SYN flood from
//! spoofed sources, and the neighbour and ICMP handling that the demux
//! took over from smoltcp.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use warpwire_stack::sim::{self, SimConfig, SimDevice};
use warpwire_stack::{StackConfig, StackTransport};
use warpwire_transport::{
    CloseReason, ConnId, Event, Events, PacketDevice, RxToken, Transport, TxToken,
};

type Stack = StackTransport<SimDevice>;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 2);
const PORT: u16 = 7077;
const STEP: Duration = Duration::from_micros(100);

fn small(ip: Ipv4Addr, seed: u64) -> StackConfig {
    let mut c = StackConfig::new(ip, 24);
    c.seed = seed;
    // Small buffers: 40,000 sockets in one test process.
    c.rx_buffer = 2048;
    c.tx_buffer = 2048;
    c
}

fn message(i: usize) -> Vec<u8> {
    format!("connection {i:05} of the scale test, unique to it\n").into_bytes()
}

/// 20,000 connections through a lossy, reordering, duplicating link:
/// opened in waves, each sends its own message and checks the echo, then
/// they are closed in random order. Every byte arrives on its own flow.
#[test]
fn twenty_thousand_connections_opened_used_and_closed_in_random_order() {
    const N: usize = 20_000;
    let link = SimConfig {
        loss: 0.005,
        reorder: 0.005,
        duplicate: 0.005,
        seed: 5,
        queue_limit: 65_536,
        tx_slots: 4096,
        ..SimConfig::default()
    };
    let (a, b) = sim::pair(link);
    let mut now = Instant::now();
    let mut srv = Stack::new(a, small(SERVER, 1), now).unwrap();
    let mut cli = Stack::new(b, small(CLIENT, 2), now).unwrap();
    srv.listen(SocketAddr::from((SERVER, PORT))).unwrap();
    let mut rng = SmallRng::seed_from_u64(9);
    let mut ev = Events::default();
    // Client side: message index and what came back so far.
    let mut mine: HashMap<ConnId, (usize, Vec<u8>)> = HashMap::new();
    let mut done: Vec<ConnId> = Vec::new();
    let (mut opened, mut echoed, mut cli_closed) = (0usize, 0usize, 0usize);
    let (mut accepted, mut srv_closed) = (0usize, 0usize);
    let mut buf = vec![0u8; 4096];
    let deadline = now + Duration::from_secs(600);
    while cli_closed < N || srv_closed < N {
        assert!(
            now < deadline,
            "stalled: opened {opened}, echoed {echoed}, client closed {cli_closed}, \
             accepted {accepted}, server closed {srv_closed}; server {:?}, client {:?}",
            srv.stats(),
            cli.stats()
        );
        now += STEP;
        // Waves of connects, 100 per step (1,000,000 a virtual second).
        for _ in 0..100 {
            if opened == N {
                break;
            }
            let c = cli.connect(SocketAddr::from((SERVER, PORT)), now).unwrap();
            mine.insert(c, (opened, Vec::new()));
            opened += 1;
        }
        srv.poll(now, &mut ev).unwrap();
        for e in ev.iter().copied().collect::<Vec<_>>() {
            match e {
                Event::Accepted { peer, .. } => {
                    assert_eq!(peer.ip(), CLIENT);
                    accepted += 1;
                }
                Event::Readable(s) => loop {
                    let n = srv.recv(s, &mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    assert_eq!(srv.send(s, &buf[..n]).unwrap(), n, "echo fits the buffer");
                },
                Event::PeerFinished(s) => srv.close(s),
                Event::Closed(_, why) => {
                    assert_eq!(why, CloseReason::Local, "server side");
                    srv_closed += 1;
                }
                _ => {}
            }
        }
        srv.flush(now).unwrap();
        cli.poll(now, &mut ev).unwrap();
        for e in ev.iter().copied().collect::<Vec<_>>() {
            match e {
                Event::Connected(c) => {
                    let msg = message(mine[&c].0);
                    assert_eq!(cli.send(c, &msg).unwrap(), msg.len());
                }
                Event::Readable(c) => {
                    let (i, got) = mine.get_mut(&c).unwrap();
                    loop {
                        let n = cli.recv(c, &mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    let want = message(*i);
                    assert!(
                        want.starts_with(got),
                        "connection {i} got another flow's bytes: {got:?}"
                    );
                    if got.len() == want.len() {
                        echoed += 1;
                        done.push(c);
                    }
                }
                Event::Closed(c, why) => {
                    assert_eq!(
                        why,
                        CloseReason::Local,
                        "client side, connection {:?}",
                        mine.get(&c)
                    );
                    cli_closed += 1;
                }
                _ => {}
            }
        }
        // Close a random half of the finished ones, in random order.
        done.shuffle(&mut rng);
        let k = done.len() / 2 + usize::from(rng.random_bool(0.5) && !done.is_empty());
        for c in done.drain(..k.min(done.len())) {
            cli.close(c);
        }
        cli.flush(now).unwrap();
    }
    assert_eq!((opened, echoed, accepted), (N, N, N));
    assert_eq!(srv.connection_count(), 0);
    assert_eq!(cli.connection_count(), 0);
    let (s, c) = (srv.stats(), cli.stats());
    assert_eq!(s.flows, 0, "{s:?}");
    assert_eq!(c.flows, 0, "{c:?}");
    let l = srv.device().link_stats();
    assert!(l.lost > 0 && l.reordered > 0 && l.duplicated > 0, "{l:?}");
    println!("server {s:?}\nclient {c:?}\nlink {l:?}");
}

/// Writes a raw TCP SYN from `src:sport` to the server into a device frame.
fn syn_frame(buf: &mut [u8], src: Ipv4Addr, sport: u16, src_mac: [u8; 6], dst_mac: [u8; 6]) {
    ipv4_frame(buf, src_mac, dst_mac, src, 6, 20);
    let tcp = &mut buf[34..54];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&PORT.to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&8192u16.to_be_bytes());
    let mut pseudo = 0u32;
    for w in [src.octets(), SERVER.octets()] {
        pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]))
            + u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    pseudo += 6 + 20;
    let sum = checksum(&buf[34..54], pseudo);
    buf[50..52].copy_from_slice(&sum.to_be_bytes());
}

/// Zeroes `buf` and writes an Ethernet header and an IPv4 header (with its
/// checksum) from `src` to the server, protocol `proto`, `payload` bytes.
fn ipv4_frame(
    buf: &mut [u8],
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    proto: u8,
    payload: u16,
) {
    buf.fill(0);
    buf[0..6].copy_from_slice(&dst_mac);
    buf[6..12].copy_from_slice(&src_mac);
    buf[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut buf[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(20 + payload).to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&SERVER.octets());
    let sum = checksum(&buf[14..34], 0);
    buf[24..26].copy_from_slice(&sum.to_be_bytes());
}

fn checksum(data: &[u8], init: u32) -> u16 {
    let mut s = init;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Sends `frames` raw frames through `dev`, each written by `write`.
fn inject(
    dev: &mut SimDevice,
    now: Instant,
    frames: usize,
    mut write: impl FnMut(usize, &mut [u8]),
) {
    for i in 0..frames {
        let tx = dev.transmit(now).expect("a transmit slot");
        tx.consume(60, |b| write(i, b));
        if i % 256 == 255 {
            dev.flush().unwrap();
        }
    }
    dev.flush().unwrap();
}

/// One round of the flood test: the server polls and flushes, then the
/// real client. Accepts and connects seen, and the server's half-open
/// count after its round; a real client's connection closing fails.
fn flood_round(
    srv: &mut Stack,
    cli: &mut Stack,
    now: Instant,
    ev: &mut Events,
) -> (usize, usize, usize) {
    srv.poll(now, ev).unwrap();
    let accepted = ev
        .iter()
        .filter(|e| matches!(e, Event::Accepted { .. }))
        .count();
    srv.flush(now).unwrap();
    let half = srv.half_open_count();
    cli.poll(now, ev).unwrap();
    let mut connected = 0;
    for e in ev.iter() {
        match e {
            Event::Connected(_) => connected += 1,
            Event::Closed(_, why) => panic!("a real connect failed: {why:?}"),
            _ => {}
        }
    }
    cli.flush(now).unwrap();
    (accepted, connected, half)
}

/// 20,000 SYNs from spoofed sources (addresses and ports that never
/// answer) while a real client connects: the half-open table stays within
/// the backlog, memory with it, and every real connection gets in.
#[test]
fn a_syn_flood_from_spoofed_sources_is_bounded_and_real_clients_get_in() {
    let (a, b) = sim::pair(SimConfig {
        queue_limit: 65_536,
        tx_slots: 65_536,
        ..SimConfig::default()
    });
    let mut now = Instant::now();
    let mut sc = small(SERVER, 3);
    sc.backlog = 512;
    let mut srv = Stack::new(a, sc, now).unwrap();
    let mut cli = Stack::new(b, small(CLIENT, 4), now).unwrap();
    srv.listen(SocketAddr::from((SERVER, PORT))).unwrap();
    let srv_mac = srv.device().capabilities().mac;
    let mut ev = Events::default();
    let mut rng = SmallRng::seed_from_u64(4);
    let spoof_mac = [2, 0xee, 0, 0, 0, 1];
    let (mut max_half, mut real, mut connected, mut accepted) = (0, 0, 0, 0);
    // 40 waves of 500 spoofed SYNs, 20 ms apart; 5 real connects per wave.
    for _ in 0..40 {
        inject(cli.device_mut(), now, 500, |_, b| {
            let src = Ipv4Addr::new(10, 77, 9, rng.random_range(3..250));
            syn_frame(b, src, rng.random_range(1024..65535), spoof_mac, srv_mac);
        });
        for _ in 0..5 {
            cli.connect(SocketAddr::from((SERVER, PORT)), now).unwrap();
            real += 1;
        }
        for _ in 0..200 {
            now += STEP;
            let (a, c, half) = flood_round(&mut srv, &mut cli, now, &mut ev);
            (accepted, connected) = (accepted + a, connected + c);
            max_half = max_half.max(half);
        }
    }
    // Stragglers retry their SYN after an RTO (1 s, then 2 s).
    let until = now + Duration::from_secs(8);
    while (connected < real || accepted < real) && now < until {
        now += Duration::from_millis(1);
        let (a, c, _) = flood_round(&mut srv, &mut cli, now, &mut ev);
        (accepted, connected) = (accepted + a, connected + c);
    }
    let s = srv.stats();
    println!(
        "server {s:?}, max half-open {max_half}, half-open now {}, connected {connected} accepted {accepted} of {real}",
        srv.half_open_count()
    );
    assert_eq!(
        (connected, accepted),
        (real, real),
        "every real client got in: {s:?}"
    );
    assert!(max_half <= 512, "half-open {max_half} above the backlog");
    assert!(s.syn_dropped > 0, "the flood overflowed the queue: {s:?}");
    assert!(
        s.syn_evicted > 0,
        "stale spoofed handshakes made room: {s:?}"
    );
    assert!(s.flows <= 512 + real as u64, "{s:?}");
    // The spoofed handshakes all end: evicted, or timed out.
    now += Duration::from_secs(11);
    srv.poll(now, &mut ev).unwrap();
    assert_eq!(srv.half_open_count(), 0);
    assert_eq!(srv.stats().flows, real as u64);
    assert!(srv.stats().handshake_timeouts > 0);
}

/// ARP requests for our address are answered, others ignored; an ICMP echo
/// request is answered by the control shard; a segment of no flow gets a
/// RST; a packet to an unknown on-link peer waits for its ARP reply.
#[test]
fn arp_icmp_and_strays() {
    let (a, mut raw) = sim::pair(SimConfig::default());
    let mut now = Instant::now();
    let mut srv = Stack::new(a, small(SERVER, 5), now).unwrap();
    srv.listen(SocketAddr::from((SERVER, PORT))).unwrap();
    let srv_mac = srv.device().capabilities().mac;
    let peer_mac = [2, 0, 0, 0, 0, 0x42];
    let peer = Ipv4Addr::new(10, 77, 9, 42);
    let mut ev = Events::default();
    let mut step = |srv: &mut Stack, raw: &mut SimDevice, now: &mut Instant| {
        *now += STEP;
        srv.poll(*now, &mut ev).unwrap();
        srv.flush(*now).unwrap();
        *now += STEP;
        drain(raw, *now)
    };
    // A SYN from a peer we have no ARP entry for: the SYN-ACK waits for
    // the peer's MAC; we ask for it.
    inject(&mut raw, now, 1, |_, b| {
        syn_frame(b, peer, 5555, peer_mac, srv_mac)
    });
    let out = step(&mut srv, &mut raw, &mut now);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0][12..14], [0x08, 0x06], "an ARP request");
    assert_eq!(out[0][38..42], peer.octets(), "for the peer");
    assert_eq!(srv.stats().arp_requests, 1);
    // The reply releases the held SYN-ACK.
    inject(&mut raw, now, 1, |_, b| {
        arp(b, 2, peer_mac, peer, srv_mac, SERVER)
    });
    let out = step(&mut srv, &mut raw, &mut now);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0][0..6], peer_mac);
    assert_eq!((out[0][23], out[0][47]), (6, 0x12), "the SYN-ACK");
    // An ARP request for our address is answered; one for another is not.
    inject(&mut raw, now, 2, |i, b| {
        let target = if i == 0 {
            SERVER
        } else {
            Ipv4Addr::new(10, 77, 9, 7)
        };
        arp(b, 1, peer_mac, peer, [0; 6], target);
    });
    let out = step(&mut srv, &mut raw, &mut now);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0][21], &out[0][22..28]),
        (2, &srv_mac[..]),
        "an ARP reply with our MAC"
    );
    // An ICMP echo request is answered.
    inject(&mut raw, now, 1, |_, b| ping(b, peer, peer_mac, srv_mac));
    let out = step(&mut srv, &mut raw, &mut now);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0][23], out[0][34]), (1, 0), "an ICMP echo reply");
    // A segment of no flow (an ACK to the listened port) gets a RST.
    inject(&mut raw, now, 1, |_, b| {
        syn_frame(b, peer, 6666, peer_mac, srv_mac);
        b[47] = 0x10;
        b[50..52].fill(0);
        let mut pseudo = 0u32;
        for w in [peer.octets(), SERVER.octets()] {
            pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]))
                + u32::from(u16::from_be_bytes([w[2], w[3]]));
        }
        let sum = checksum(&b[34..54], pseudo + 6 + 20);
        b[50..52].copy_from_slice(&sum.to_be_bytes());
    });
    let out = step(&mut srv, &mut raw, &mut now);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0][47] & 0x04, 0x04, "a RST");
}

fn arp(b: &mut [u8], op: u8, smac: [u8; 6], sip: Ipv4Addr, tmac: [u8; 6], tip: Ipv4Addr) {
    b.fill(0);
    b[0..6].copy_from_slice(if op == 1 { &[0xff; 6] } else { &tmac });
    b[6..12].copy_from_slice(&smac);
    b[12..14].copy_from_slice(&[0x08, 0x06]);
    b[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, op]);
    b[22..28].copy_from_slice(&smac);
    b[28..32].copy_from_slice(&sip.octets());
    b[32..38].copy_from_slice(&tmac);
    b[38..42].copy_from_slice(&tip.octets());
}

fn ping(b: &mut [u8], src: Ipv4Addr, smac: [u8; 6], dmac: [u8; 6]) {
    ipv4_frame(b, smac, dmac, src, 1, 16);
    b[34] = 8;
    b[38..42].copy_from_slice(&[0, 7, 0, 1]);
    b[42..50].copy_from_slice(b"warpwire");
    let sum = checksum(&b[34..50], 0);
    b[36..38].copy_from_slice(&sum.to_be_bytes());
}

/// Drains what the server sent to the raw side.
fn drain(dev: &mut SimDevice, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((rx, _tx)) = dev.receive(now) {
        rx.consume(|f| out.push(f.to_vec()));
    }
    out
}
