//! The uring backend over loopback: the socket backend's unit tests run
//! against it unchanged, then what is particular to io_uring (buffer ring
//! bounds, batched sends, many connections, bulk transfers).
//!
//! Needs io_uring (Linux 6.0+, `kernel.io_uring_disabled=0`): CI runs
//! these on such a kernel; elsewhere they fail with the probe's reason
//! rather than pass without running.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::{Echo, Pattern, pair, server_and_client, until};
use warpwire_transport::{CloseReason, Event, Events, Transport, TransportError};
use warpwire_uring::{UringConfig, UringTransport};

#[test]
fn loopback_roundtrip_and_close() {
    let (mut srv, mut cli, addr) = server_and_client();
    let c = cli.connect(addr, Instant::now()).unwrap();
    let mut ev = Events::default();
    until(&mut cli, &mut ev, |e| *e == Event::Connected(c));
    let Event::Accepted { conn: s, peer } =
        until(&mut srv, &mut ev, |e| matches!(e, Event::Accepted { .. }))
    else {
        unreachable!()
    };
    assert_eq!(srv.peer_addr(s), Some(peer));
    assert_eq!(cli.send_vectored(c, &[b"he", b"", b"llo"]).unwrap(), 5);
    // `send` queues; the SEND goes to the kernel with the next flush, poll
    // or wait of this transport (the contract's doorbell).
    cli.flush(Instant::now()).unwrap();
    until(&mut srv, &mut ev, |e| *e == Event::Readable(s));
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 5 {
        let n = srv.recv(s, &mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        if n == 0 {
            srv.wait(Some(Duration::from_millis(10))).unwrap();
            srv.poll(Instant::now(), &mut ev).unwrap();
        }
    }
    assert_eq!(got, b"hello");
    srv.send(s, b"bye").unwrap();
    srv.close(s);
    assert!(srv.send(s, b"x").is_err(), "closed id is dead");
    srv.flush(Instant::now()).unwrap();
    until(&mut cli, &mut ev, |e| *e == Event::Readable(c));
    let mut got = Vec::new();
    loop {
        match cli.recv(c, &mut buf) {
            Ok(0) if got.len() == 3 => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{e}"),
        }
        if got.len() < 3 {
            cli.wait(Some(Duration::from_millis(10))).unwrap();
            cli.poll(Instant::now(), &mut ev).unwrap();
        }
    }
    assert_eq!(got, b"bye");
    // The server's FIN: reported once, the connection still ours to close.
    until(&mut cli, &mut ev, |e| *e == Event::PeerFinished(c));
    cli.close(c);
    until(&mut cli, &mut ev, |e| {
        *e == Event::Closed(c, CloseReason::Local)
    });
    until(&mut srv, &mut ev, |e| {
        *e == Event::Closed(s, CloseReason::Local)
    });
    assert_eq!(srv.connection_count(), 0);
}

/// A peer that writes and then shuts down its sending side still reads:
/// the FIN comes after the data as PeerFinished, and what the server sends
/// afterwards reaches the peer whole, then our FIN.
#[test]
fn half_close_keeps_the_connection_writable() {
    let mut srv = UringTransport::new().unwrap();
    let addr = srv.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut peer = std::net::TcpStream::connect(addr).unwrap();
    peer.write_all(&[7u8; 100_000]).unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    let mut ev = Events::default();
    let Event::Accepted { conn: s, .. } =
        until(&mut srv, &mut ev, |e| matches!(e, Event::Accepted { .. }))
    else {
        unreachable!()
    };
    let (mut got, mut finished) = (0usize, false);
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !finished {
        assert!(
            Instant::now() < deadline,
            "no PeerFinished after {got} bytes"
        );
        srv.wait(Some(Duration::from_millis(10))).unwrap();
        srv.poll(Instant::now(), &mut ev).unwrap();
        for e in ev.iter() {
            match *e {
                Event::Readable(c) if c == s => loop {
                    let n = srv.recv(s, &mut buf).unwrap();
                    got += n;
                    if n == 0 {
                        break;
                    }
                },
                Event::PeerFinished(c) if c == s => finished = true,
                Event::Closed(..) => panic!("closed before the reply: {e:?}"),
                _ => {}
            }
        }
    }
    assert_eq!(got, 100_000, "PeerFinished only after every byte");
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        peer.read_to_end(&mut all).map(|_| all)
    });
    let reply = vec![9u8; 3_000_000];
    let mut sent = 0;
    while sent < reply.len() {
        assert!(
            Instant::now() < deadline + Duration::from_secs(5),
            "send stalled"
        );
        sent += srv.send(s, &reply[sent..]).unwrap();
        srv.wait(Some(Duration::from_millis(5))).unwrap();
        srv.poll(Instant::now(), &mut ev).unwrap();
    }
    srv.close(s);
    // Nobody else drives the transport: poll while the peer reads.
    let closed = until(&mut srv, &mut ev, |e| {
        *e == Event::Closed(s, CloseReason::Local)
    });
    assert_eq!(closed, Event::Closed(s, CloseReason::Local));
    let all = reader.join().unwrap().unwrap();
    assert_eq!(all.len(), reply.len());
    assert!(all.iter().all(|&b| b == 9));
}

#[test]
fn connect_refused_is_reported() {
    // Bind then drop to find a port with no listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cli = UringTransport::new().unwrap();
    let c = cli.connect(port, Instant::now()).unwrap();
    let mut ev = Events::default();
    let e = until(&mut cli, &mut ev, |e| matches!(e, Event::Closed(..)));
    assert_eq!(
        e,
        Event::Closed(c, CloseReason::ConnectFailed(Some(libc_econnrefused())))
    );
    assert!(matches!(
        cli.send(c, b"x"),
        Err(TransportError::UnknownConn(id)) if id == c
    ));
}

fn libc_econnrefused() -> i32 {
    std::io::Error::from(std::io::ErrorKind::ConnectionRefused)
        .raw_os_error()
        .unwrap_or(111)
}

#[test]
fn reuseport_two_instances_share_an_address() {
    let mut a = UringTransport::new().unwrap();
    let addr = a.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut b = UringTransport::new().unwrap();
    assert_eq!(b.listen(addr).unwrap(), addr);
    // The kernel spreads connections over both: each gets some of 32.
    let clients: Vec<_> = (0..32)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let mut ev = Events::default();
    let (mut na, mut nb) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while na + nb < clients.len() {
        assert!(Instant::now() < deadline, "{na} + {nb} accepted");
        a.poll(Instant::now(), &mut ev).unwrap();
        na += ev
            .iter()
            .filter(|e| matches!(e, Event::Accepted { .. }))
            .count();
        b.poll(Instant::now(), &mut ev).unwrap();
        nb += ev
            .iter()
            .filter(|e| matches!(e, Event::Accepted { .. }))
            .count();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(na > 0 && nb > 0, "{na} and {nb}: not spread");
}

#[test]
fn waker_interrupts_wait() {
    let mut t = UringTransport::new().unwrap();
    let w = t.waker().unwrap();
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        w.wake();
    });
    let start = Instant::now();
    t.wait(Some(Duration::from_secs(10))).unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    h.join().unwrap();
    // The read is re-armed: a second wake ends a second wait.
    let mut ev = Events::default();
    t.poll(Instant::now(), &mut ev).unwrap();
    let w = t.waker().unwrap();
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        w.wake();
    });
    let start = Instant::now();
    t.wait(Some(Duration::from_secs(10))).unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    h.join().unwrap();
    // Without a wake, wait sleeps for its timeout.
    t.poll(Instant::now(), &mut ev).unwrap();
    let start = Instant::now();
    t.wait(Some(Duration::from_millis(50))).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(40));
}

/// A closed connection's id is refused everywhere, also after its slot is
/// reused by a new connection (which gets a new generation).
#[test]
fn stale_conn_id_is_refused() {
    let (mut srv, mut cli, addr) = server_and_client();
    let (_, c) = pair(&mut srv, &mut cli, addr);
    let mut ev = Events::default();
    cli.close(c);
    until(&mut cli, &mut ev, |e| {
        *e == Event::Closed(c, CloseReason::Local)
    });
    let mut buf = [0u8; 16];
    assert!(matches!(cli.send(c, b"x"), Err(TransportError::UnknownConn(id)) if id == c));
    assert!(matches!(
        cli.recv(c, &mut buf),
        Err(TransportError::UnknownConn(_))
    ));
    assert_eq!(cli.peer_addr(c), None);
    cli.pause_recv(c, true);
    cli.close(c);
    // The slot is freed once its cancelled operations have completed
    // (the close lingered for the server's FIN, which never came).
    while cli.connection_count() > 0 || cli.receive_buffers_in_use() > 0 {
        cli.wait(Some(Duration::from_millis(10))).unwrap();
        cli.poll(Instant::now(), &mut ev).unwrap();
    }
    for _ in 0..5 {
        cli.wait(Some(Duration::from_millis(10))).unwrap();
        cli.poll(Instant::now(), &mut ev).unwrap();
    }
    let (_, c2) = pair(&mut srv, &mut cli, addr);
    assert_eq!(c2.index(), c.index(), "the slot is reused");
    assert_ne!(c2, c, "with a new generation");
    assert!(matches!(
        cli.send(c, b"x"),
        Err(TransportError::UnknownConn(_))
    ));
    assert_eq!(cli.send(c2, b"x").unwrap(), 1);
}

/// A paused connection is not reported readable however much arrives, and
/// holds no more than its bound of the buffer ring; after resuming, every
/// byte is there, in order.
#[test]
fn pause_holds_input_and_resume_delivers_it() {
    let (mut srv, mut cli, addr) = server_and_client();
    let (s, c) = pair(&mut srv, &mut cli, addr);
    srv.pause_recv(s, true);
    let pat = Pattern::new(64 * 1024);
    let total: u64 = 8 << 20;
    let (mut sent, mut got) = (0u64, 0u64);
    let mut ev = Events::default();
    let mut buf = vec![0u8; 64 * 1024];
    // Phase 1: paused. Send until the kernel's buffers are full.
    let pause_end = Instant::now() + Duration::from_millis(500);
    let mut max_held = 0;
    while Instant::now() < pause_end {
        if sent < total {
            let n = (total - sent).min(64 * 1024) as usize;
            sent += cli.send(c, pat.at(sent, n)).unwrap() as u64;
        }
        cli.poll(Instant::now(), &mut ev).unwrap();
        cli.flush(Instant::now()).unwrap();
        srv.poll(Instant::now(), &mut ev).unwrap();
        assert!(
            !ev.iter().any(|e| *e == Event::Readable(s)),
            "Readable while paused"
        );
        max_held = max_held.max(srv.receive_buffers_in_use());
        std::thread::sleep(Duration::from_millis(1));
    }
    let bound = UringConfig::default().max_queued_buffers;
    println!("paused connection held at most {max_held} buffers (bound {bound})");
    assert!(max_held >= 1, "nothing arrived while paused");
    // The bound, plus what the kernel's multishot loop may post before the
    // cancel queued at the bound is submitted (it receives up to 32 times
    // in a row before it yields: MULTISHOT_MAX_RETRY). Here it is usually
    // exactly the bound.
    assert!(
        max_held <= bound + 32,
        "a paused connection held {max_held} buffers (bound {bound})"
    );
    assert!(
        sent < total,
        "all {total} bytes taken while paused: no flow control"
    );
    // Phase 2: resumed.
    srv.pause_recv(s, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while got < total {
        assert!(Instant::now() < deadline, "stalled at {got} of {total}");
        if sent < total {
            let n = (total - sent).min(64 * 1024) as usize;
            sent += cli.send(c, pat.at(sent, n)).unwrap() as u64;
        }
        cli.poll(Instant::now(), &mut ev).unwrap();
        cli.flush(Instant::now()).unwrap();
        srv.poll(Instant::now(), &mut ev).unwrap();
        if ev.iter().any(|e| *e == Event::Readable(s)) {
            loop {
                let n = srv.recv(s, &mut buf).unwrap();
                if n == 0 {
                    break;
                }
                assert_eq!(&buf[..n], pat.at(got, n), "corrupt at {got}");
                got += n as u64;
            }
        }
    }
}

/// Two paused, flooded connections leave the ring to the others: a third
/// connection is still served (small ring, so the bound is what matters).
#[test]
fn paused_connections_do_not_pin_the_ring() {
    let mut srv = UringTransport::with_config(UringConfig {
        buffers: 32,
        max_queued_buffers: 8,
        ..UringConfig::default()
    })
    .unwrap();
    let addr = srv.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut cli = UringTransport::new().unwrap();
    let (s1, c1) = pair(&mut srv, &mut cli, addr);
    let (s2, c2) = pair(&mut srv, &mut cli, addr);
    let (s3, c3) = pair(&mut srv, &mut cli, addr);
    srv.pause_recv(s1, true);
    srv.pause_recv(s2, true);
    let junk = vec![1u8; 64 * 1024];
    let mut ev = Events::default();
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        cli.send(c1, &junk).unwrap();
        cli.send(c2, &junk).unwrap();
        cli.poll(Instant::now(), &mut ev).unwrap();
        cli.flush(Instant::now()).unwrap();
        srv.poll(Instant::now(), &mut ev).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        srv.receive_buffers_in_use() <= 24,
        "two paused connections hold {} of 32 buffers",
        srv.receive_buffers_in_use()
    );
    cli.send(c3, b"still served").unwrap();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 12 {
        assert!(Instant::now() < deadline, "third connection starved");
        cli.poll(Instant::now(), &mut ev).unwrap();
        cli.flush(Instant::now()).unwrap();
        srv.poll(Instant::now(), &mut ev).unwrap();
        assert!(
            !ev.iter()
                .any(|e| matches!(e, Event::Readable(x) if *x == s1 || *x == s2))
        );
        if ev.iter().any(|e| *e == Event::Readable(s3)) {
            let n = srv.recv(s3, &mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(got, b"still served");
}

/// More readers than the ring has buffers for: receives that find the ring
/// empty wait (ENOBUFS) and are re-armed as buffers come back; nothing is
/// lost or reordered.
#[test]
fn an_exhausted_ring_recovers() {
    let mut srv = UringTransport::with_config(UringConfig {
        buffers: 8,
        buffer_size: 4096,
        max_queued_buffers: 4,
        ..UringConfig::default()
    })
    .unwrap();
    let addr = srv.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut cli = UringTransport::new().unwrap();
    let conns: Vec<_> = (0..6).map(|_| pair(&mut srv, &mut cli, addr)).collect();
    let pat = Pattern::new(64 * 1024);
    let total: u64 = 2 << 20;
    let mut sent = vec![0u64; conns.len()];
    let mut got = vec![0u64; conns.len()];
    let mut ev = Events::default();
    let mut buf = vec![0u8; 3000];
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.iter().any(|&g| g < total) {
        assert!(Instant::now() < deadline, "stalled: {got:?}");
        for (i, &(_, c)) in conns.iter().enumerate() {
            if sent[i] < total {
                let n = (total - sent[i]).min(64 * 1024) as usize;
                sent[i] += cli.send(c, pat.at(sent[i], n)).unwrap() as u64;
            }
        }
        cli.poll(Instant::now(), &mut ev).unwrap();
        cli.flush(Instant::now()).unwrap();
        srv.poll(Instant::now(), &mut ev).unwrap();
        for e in ev.iter() {
            let Event::Readable(s) = *e else { continue };
            let i = conns.iter().position(|&(x, _)| x == s).unwrap();
            // One small read per poll: the connections keep holding
            // buffers, so the ring runs dry again and again.
            let n = srv.recv(s, &mut buf).unwrap();
            assert_eq!(
                &buf[..n],
                pat.at(got[i], n),
                "conn {i} corrupt at {}",
                got[i]
            );
            got[i] += n as u64;
        }
    }
}

/// 500 connections at once, each echoing a few messages of its own.
#[test]
fn many_connections_echo() {
    const N: usize = 500;
    const ROUNDS: usize = 3;
    let (mut srv, mut cli, addr) = server_and_client();
    let mut echo = Echo::default();
    let mut ev = Events::default();
    let conns: Vec<_> = (0..N)
        .map(|_| cli.connect(addr, Instant::now()).unwrap())
        .collect();
    let msg =
        |i: usize, r: usize| format!("conn {i:04} round {r} {}", "x".repeat(i % 700)).into_bytes();
    let mut connected = vec![false; N];
    let mut round = vec![0usize; N];
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); N];
    let index_of = |id| conns.iter().position(|&c| c == id).unwrap();
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while round.iter().any(|&r| r < ROUNDS) {
        assert!(
            Instant::now() < deadline,
            "{} connections unfinished",
            round.iter().filter(|&&r| r < ROUNDS).count()
        );
        cli.poll(Instant::now(), &mut ev).unwrap();
        for e in ev.iter() {
            match *e {
                Event::Connected(c) => {
                    let i = index_of(c);
                    connected[i] = true;
                    let m = msg(i, 0);
                    assert_eq!(cli.send(c, &m).unwrap(), m.len());
                }
                Event::Readable(c) => {
                    let i = index_of(c);
                    loop {
                        let n = cli.recv(c, &mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        got[i].extend_from_slice(&buf[..n]);
                    }
                    let want = msg(i, round[i]);
                    if got[i].len() >= want.len() {
                        assert_eq!(got[i], want, "conn {i} round {}", round[i]);
                        got[i].clear();
                        round[i] += 1;
                        if round[i] < ROUNDS {
                            let m = msg(i, round[i]);
                            assert_eq!(cli.send(c, &m).unwrap(), m.len());
                        }
                    }
                }
                Event::Closed(c, r) => panic!("{c} closed: {r:?}"),
                _ => {}
            }
        }
        cli.flush(Instant::now()).unwrap();
        echo.step(&mut srv, &mut ev);
    }
    assert_eq!(echo.accepted, N);
    assert!(connected.iter().all(|&c| c));
    for &c in &conns {
        cli.close(c);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = 0;
    while closed < N || echo.closed < N {
        assert!(
            Instant::now() < deadline,
            "{closed} and {} of {N} closed",
            echo.closed
        );
        cli.poll(Instant::now(), &mut ev).unwrap();
        closed += ev
            .iter()
            .filter(|e| matches!(e, Event::Closed(_, CloseReason::Local)))
            .count();
        echo.step(&mut srv, &mut ev);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(cli.connection_count(), 0);
    assert_eq!(srv.connection_count(), 0);
    assert_eq!(
        srv.receive_buffers_in_use(),
        0,
        "every buffer back in the ring"
    );
}

/// 64 MiB each way at once through one connection, both sides under
/// backpressure, checked byte for byte.
#[test]
fn large_transfer_both_ways() {
    const TOTAL: u64 = 64 << 20;
    let (mut srv, mut cli, addr) = server_and_client();
    let (s, c) = pair(&mut srv, &mut cli, addr);
    // Offers of 1 MiB, four times the send buffer: most sends are short.
    const OFFER: usize = 1 << 20;
    let pat = Pattern::new(OFFER);
    let mut ev = Events::default();
    let mut buf = vec![0u8; 256 * 1024];
    // [client→server, server→client]: bytes sent, bytes received.
    let (mut sent, mut got) = ([0u64; 2], [0u64; 2]);
    let (mut short_sends, mut writables) = (0, 0);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    while got[0] < TOTAL || got[1] < TOTAL {
        assert!(
            Instant::now() < deadline,
            "stalled: sent {sent:?} got {got:?}"
        );
        for (dir, t, id) in [(0, &mut cli, c), (1, &mut srv, s)] {
            if sent[dir] < TOTAL {
                let n = (TOTAL - sent[dir]).min(OFFER as u64) as usize;
                let taken = t.send(id, pat.at(sent[dir], n)).unwrap();
                short_sends += usize::from(taken < n);
                sent[dir] += taken as u64;
            }
            t.flush(Instant::now()).unwrap();
        }
        for (dir, t, id) in [(1, &mut cli, c), (0, &mut srv, s)] {
            t.poll(Instant::now(), &mut ev).unwrap();
            writables += ev.iter().filter(|e| **e == Event::Writable(id)).count();
            if ev.iter().any(|e| *e == Event::Readable(id)) {
                loop {
                    let n = t.recv(id, &mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    assert_eq!(
                        &buf[..n],
                        pat.at(got[dir], n),
                        "direction {dir} corrupt at {}",
                        got[dir]
                    );
                    got[dir] += n as u64;
                }
            }
        }
    }
    println!(
        "2 x {} MiB in {:?}; {short_sends} short sends, {writables} Writable",
        TOTAL >> 20,
        start.elapsed()
    );
    assert!(
        short_sends > 0 && writables > 0,
        "no backpressure exercised"
    );
    cli.close(c);
    cli.flush(Instant::now()).unwrap();
    until(&mut srv, &mut ev, |e| *e == Event::PeerFinished(s));
    srv.close(s);
    until(&mut srv, &mut ev, |e| {
        *e == Event::Closed(s, CloseReason::Local)
    });
    until(&mut cli, &mut ev, |e| {
        *e == Event::Closed(c, CloseReason::Local)
    });
}

/// The ring is enabled by the first thread that uses it, so an instance
/// built on one thread runs on another (the engine builds transports on
/// the worker threads, but a library user may not).
#[test]
fn built_on_one_thread_runs_on_another() {
    let (mut srv, mut cli, addr) = server_and_client();
    let h = std::thread::spawn(move || {
        let (s, c) = pair(&mut srv, &mut cli, addr);
        cli.send(c, b"moved").unwrap();
        cli.flush(Instant::now()).unwrap();
        let mut ev = Events::default();
        until(&mut srv, &mut ev, |e| *e == Event::Readable(s));
        let mut buf = [0u8; 16];
        let n = srv.recv(s, &mut buf).unwrap();
        buf[..n].to_vec()
    });
    assert_eq!(h.join().unwrap(), b"moved");
}

/// A peer's reset closes the connection with its errno.
#[test]
fn reset_is_reported() {
    let mut srv = UringTransport::new().unwrap();
    let addr = srv.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let peer = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    peer.connect(&addr.into()).unwrap();
    let mut ev = Events::default();
    let Event::Accepted { conn: s, .. } =
        until(&mut srv, &mut ev, |e| matches!(e, Event::Accepted { .. }))
    else {
        unreachable!()
    };
    // Linger 0: close sends a RST.
    peer.set_linger(Some(Duration::ZERO)).unwrap();
    drop(peer);
    let e = until(&mut srv, &mut ev, |e| matches!(e, Event::Closed(..)));
    assert!(
        matches!(e, Event::Closed(id, CloseReason::Reset(Some(_))) if id == s),
        "{e:?}"
    );
}

/// With connections open and nothing to do, `wait` sleeps for its timeout:
/// no armed operation wakes it spuriously.
#[test]
fn idle_wait_sleeps() {
    let (mut srv, mut cli, addr) = server_and_client();
    let (s, c) = pair(&mut srv, &mut cli, addr);
    cli.send(c, b"x").unwrap();
    cli.flush(Instant::now()).unwrap();
    let mut ev = Events::default();
    until(&mut srv, &mut ev, |e| *e == Event::Readable(s));
    let mut buf = [0u8; 4];
    assert_eq!(srv.recv(s, &mut buf).unwrap(), 1);
    assert_eq!(srv.recv(s, &mut buf).unwrap(), 0);
    srv.poll(Instant::now(), &mut ev).unwrap();
    let start = Instant::now();
    for _ in 0..5 {
        srv.wait(Some(Duration::from_millis(20))).unwrap();
        srv.poll(Instant::now(), &mut ev).unwrap();
        assert!(ev.is_empty(), "{ev:?}");
    }
    assert!(
        start.elapsed() >= Duration::from_millis(90),
        "woke early: {:?}",
        start.elapsed()
    );
}

/// Rings far smaller than the work of one poll: a full submission queue is
/// submitted early, and completions beyond the completion queue wait in
/// the kernel's overflow list; nothing is lost.
#[test]
fn tiny_rings_lose_nothing() {
    const N: usize = 64;
    let mut srv = UringTransport::with_config(UringConfig {
        sq_entries: 4,
        cq_entries: 8,
        ..UringConfig::default()
    })
    .unwrap();
    let addr = srv.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut cli = UringTransport::new().unwrap();
    let mut echo = Echo::default();
    let mut ev = Events::default();
    let conns: Vec<_> = (0..N)
        .map(|_| cli.connect(addr, Instant::now()).unwrap())
        .collect();
    let mut got = vec![0usize; N];
    let mut buf = vec![0u8; 4096];
    let msg = [7u8; 1000];
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.iter().any(|&g| g < msg.len()) {
        assert!(Instant::now() < deadline, "stalled: {got:?}");
        cli.poll(Instant::now(), &mut ev).unwrap();
        for e in ev.iter() {
            match *e {
                Event::Connected(c) => assert_eq!(cli.send(c, &msg).unwrap(), msg.len()),
                Event::Readable(c) => {
                    let i = conns.iter().position(|&x| x == c).unwrap();
                    loop {
                        let n = cli.recv(c, &mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        assert!(buf[..n].iter().all(|&b| b == 7));
                        got[i] += n;
                    }
                }
                Event::Closed(c, r) => panic!("{c} closed: {r:?}"),
                _ => {}
            }
        }
        cli.flush(Instant::now()).unwrap();
        echo.step(&mut srv, &mut ev);
    }
    assert_eq!(echo.accepted, N);
    assert!(got.iter().all(|&g| g == msg.len()));
}
