//! The uring backend over loopback: what is particular to io_uring (buffer
//! ring bounds and recovery, tiny rings, a ring built on one thread and run
//! on another, waking, sleeping). The Transport contract itself (round
//! trips, half-close, refusals, stale ids, resets, many connections, bulk)
//! is the conformance suite's (tests/conformance.rs).
//!
//! Needs io_uring (Linux 6.0+, `kernel.io_uring_disabled=0`): CI runs
//! these on such a kernel; elsewhere they fail with the probe's reason
//! rather than pass without running.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Echo, Pattern, pair, server_and_client, until};
use warpwire_transport::{Event, Events, Transport};
use warpwire_uring::{UringConfig, UringTransport};

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
