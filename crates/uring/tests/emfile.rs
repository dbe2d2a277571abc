//! Accepting when the process is out of file descriptors: the connections
//! wait in the kernel's backlog and the multishot accept ends with EMFILE,
//! so re-arming it at once would fail at once, in a spin. The transport
//! backs off instead, counts the failures, keeps serving what it holds,
//! and accepts again once descriptors come back.
//!
//! io_uring reads RLIMIT_NOFILE when an accept is armed, and a multishot
//! accept keeps that limit for its life: lowering the limit under an armed
//! accept does not bite (the socket backend's test does that). So the limit
//! is lowered first, leaving room for exactly the listener, one held
//! connection (both ends) and twenty waiting clients, and then the
//! transport listens.
//!
//! The only test in this file: it lowers this process's own descriptor
//! limit, which must not disturb other tests (each test file is its own
//! process under both cargo test and nextest).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use warpwire_transport::{Event, Events, Transport};
use warpwire_uring::UringTransport;

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[test]
fn out_of_descriptors_backs_off_instead_of_spinning() {
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
    let mut t = UringTransport::new().unwrap();
    // `open_fds` counts its own directory descriptor, which is closed on
    // return: the descriptors in use are `open_fds() - 1`, numbered densely
    // from 0. Room for 23 more: the listener, the held connection's two
    // ends and the twenty waiting clients; none for their server ends.
    rlimit::Resource::NOFILE
        .set(open_fds() - 1 + 23, hard)
        .unwrap();
    let addr = t.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut ev = Events::default();

    // One connection accepted and held before the descriptors run out.
    let mut held = std::net::TcpStream::connect(addr).unwrap();
    let conn = loop {
        t.wait(Some(Duration::from_millis(10))).unwrap();
        t.poll(Instant::now(), &mut ev).unwrap();
        if let Some(Event::Accepted { conn, .. }) =
            ev.iter().find(|e| matches!(e, Event::Accepted { .. }))
        {
            break *conn;
        }
    };
    // Twenty more wait in the backlog: their client ends take the last
    // descriptors, leaving none for the server's ends.
    let waiting: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();

    // A second of polling the way a worker does (sleep in wait, then poll).
    let start = Instant::now();
    let (mut rounds, mut accepted) = (0u32, 0u32);
    held.write_all(b"ping").unwrap();
    let mut echoed = false;
    while start.elapsed() < Duration::from_secs(1) {
        t.wait(Some(Duration::from_millis(200))).unwrap();
        t.poll(Instant::now(), &mut ev).unwrap();
        rounds += 1;
        for e in ev.iter() {
            match *e {
                Event::Accepted { .. } => accepted += 1,
                Event::Readable(c) if c == conn && !echoed => {
                    let mut buf = [0u8; 16];
                    let n = t.recv(conn, &mut buf).unwrap();
                    t.send(conn, &buf[..n]).unwrap();
                    echoed = n > 0;
                }
                _ => {}
            }
        }
    }
    let errors = t.accept_errors();
    // Descriptors back: the waiting connections are accepted.
    rlimit::Resource::NOFILE.set(soft, hard).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted < 20 && Instant::now() < deadline {
        t.wait(Some(Duration::from_millis(50))).unwrap();
        t.poll(Instant::now(), &mut ev).unwrap();
        accepted += ev
            .iter()
            .filter(|e| matches!(e, Event::Accepted { .. }))
            .count() as u32;
    }
    println!("{rounds} poll rounds in 1 s out of descriptors, {errors} accept failures");
    assert!(errors >= 1, "no accept failed: the limit did not bite");
    // A spinning loop makes hundreds of thousands of rounds a second; with
    // the 10 ms..1 s backoff the worker sleeps between a handful.
    assert!(
        rounds < 200,
        "{rounds} poll rounds in 1 s: the worker spins"
    );
    assert!(echoed, "the held connection was not served meanwhile");
    let mut buf = [0u8; 4];
    held.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(
        accepted, 20,
        "the backlog was not accepted once descriptors came back"
    );
    drop(waiting);
}
