//! Helpers shared by this crate's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use warpwire_transport::{ConnId, Event, Events, Transport};
use warpwire_uring::UringTransport;

/// Waits and polls until an event matches (5 s at most).
pub fn until(t: &mut UringTransport, ev: &mut Events, mut f: impl FnMut(&Event) -> bool) -> Event {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "timed out");
        t.wait(Some(Duration::from_millis(10))).unwrap();
        t.poll(Instant::now(), ev).unwrap();
        if let Some(e) = ev.iter().find(|e| f(e)) {
            return *e;
        }
    }
}

/// A server listening on loopback and a client transport.
pub fn server_and_client() -> (UringTransport, UringTransport, std::net::SocketAddr) {
    let mut srv = UringTransport::new().unwrap();
    let addr = srv.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    (srv, UringTransport::new().unwrap(), addr)
}

/// Connects `cli` to `srv` and returns (server side, client side).
pub fn pair(
    srv: &mut UringTransport,
    cli: &mut UringTransport,
    addr: std::net::SocketAddr,
) -> (ConnId, ConnId) {
    let c = cli.connect(addr, Instant::now()).unwrap();
    let mut ev = Events::default();
    let (mut s, mut connected) = (None, false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.is_none() || !connected {
        assert!(Instant::now() < deadline, "no connection");
        cli.poll(Instant::now(), &mut ev).unwrap();
        connected |= ev.iter().any(|e| *e == Event::Connected(c));
        srv.poll(Instant::now(), &mut ev).unwrap();
        for e in ev.iter() {
            if let Event::Accepted { conn, .. } = e {
                s = Some(*conn);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (s.unwrap(), c)
}

/// A byte stream with period 251 (prime, so it never lines up with buffer
/// or segment sizes): byte `i` of the stream is `i % 251`.
pub struct Pattern {
    block: Vec<u8>,
}

impl Pattern {
    /// Pieces of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            block: (0..max + 251).map(|i| (i % 251) as u8).collect(),
        }
    }

    /// `len` bytes of the stream from `offset`.
    pub fn at(&self, offset: u64, len: usize) -> &[u8] {
        let start = (offset % 251) as usize;
        &self.block[start..start + len]
    }
}

/// An echo server over any transport: what it reads it sends back, in
/// order, holding what the transport does not take yet; it closes a
/// connection after the peer's FIN once everything is echoed.
#[derive(Default)]
pub struct Echo {
    out: HashMap<ConnId, Vec<u8>>,
    finished: Vec<ConnId>,
    pub closed: usize,
    pub accepted: usize,
}

impl Echo {
    /// One poll of `t` and the echo work it calls for.
    pub fn step<T: Transport>(&mut self, t: &mut T, ev: &mut Events) {
        t.poll(Instant::now(), ev).unwrap();
        let mut buf = [0u8; 64 * 1024];
        for e in ev.iter() {
            match *e {
                Event::Accepted { conn, .. } => {
                    self.accepted += 1;
                    self.out.insert(conn, Vec::new());
                }
                Event::Readable(conn) => loop {
                    let n = t.recv(conn, &mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    self.out
                        .entry(conn)
                        .or_default()
                        .extend_from_slice(&buf[..n]);
                },
                Event::PeerFinished(conn) => self.finished.push(conn),
                Event::Closed(conn, _) => {
                    self.closed += 1;
                    self.out.remove(&conn);
                }
                _ => {}
            }
        }
        for (conn, out) in self.out.iter_mut() {
            if !out.is_empty() {
                let n = t.send(*conn, out).unwrap();
                out.drain(..n);
            }
        }
        self.finished.retain(|conn| {
            if self.out.get(conn).is_none_or(|o| o.is_empty()) {
                t.close(*conn);
                false
            } else {
                true
            }
        });
        t.flush(Instant::now()).unwrap();
    }
}
