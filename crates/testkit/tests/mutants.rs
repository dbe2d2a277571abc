//! The conformance checks can fail: each runs against the socket backend
//! wrapped in a mutant that breaks one rule of the contract, and must
//! panic with the message of that rule. (The unbroken backend passes them
//! in crates/socket/tests/conformance.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warpwire_socket::SocketTransport;
use warpwire_testkit::conformance::{self, KernelPair, Sizes};
use warpwire_transport::{
    Capabilities, CloseReason, ConnId, Event, Events, Transport, TransportError, Wake,
};

/// The one rule a mutant breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Accepted carries port 0.
    PeerPortZero,
    /// Accepted names a listener that was never opened.
    WrongListener,
    /// A failed connect is reported as a reset.
    ConnectFailedIsReset,
    /// Readable every other poll (edge-like), not on every poll.
    EdgeReadable,
    /// Readable keeps coming after a short read drained the connection.
    StickyReadable,
    /// Writable is never reported.
    NoWritable,
    /// pause_recv does nothing.
    IgnorePause,
    /// A graceful close ends as Closed(Reset).
    CloseIsReset,
    /// A reset ends as Closed(PeerClosed).
    ResetIsPeerClosed,
    /// After PeerFinished, send pretends to take bytes and drops them.
    SwallowAfterFin,
    /// The first close of a connection does nothing.
    IgnoreFirstClose,
    /// Ids carry no generation: a reused slot gives the same id.
    NoGenerations,
    /// At most 100 connections are accepted; the rest are dropped.
    AcceptAtMost100,
    /// One byte, 20 MB into a connection's input on the server, is flipped.
    CorruptAt20M,
    /// stop_listening does nothing.
    KeepListening,
}

struct Mutant {
    inner: SocketTransport,
    fault: Fault,
    readable_last: HashSet<ConnId>,
    sticky: HashSet<ConnId>,
    finished: HashSet<ConnId>,
    closed_once: HashSet<ConnId>,
    /// Outward index -> inner id (NoGenerations).
    by_index: HashMap<usize, ConnId>,
    dropped: HashSet<ConnId>,
    accepted: usize,
    received: HashMap<ConnId, usize>,
    listening: bool,
}

impl Mutant {
    fn new(fault: Fault) -> Self {
        Self {
            inner: SocketTransport::new().unwrap(),
            fault,
            readable_last: HashSet::new(),
            sticky: HashSet::new(),
            finished: HashSet::new(),
            closed_once: HashSet::new(),
            by_index: HashMap::new(),
            dropped: HashSet::new(),
            accepted: 0,
            received: HashMap::new(),
            listening: false,
        }
    }

    fn out_id(&mut self, id: ConnId) -> ConnId {
        if self.fault == Fault::NoGenerations {
            self.by_index.insert(id.index(), id);
            ConnId::new(id.index() as u32, 0)
        } else {
            id
        }
    }

    fn in_id(&self, id: ConnId) -> ConnId {
        if self.fault == Fault::NoGenerations {
            self.by_index.get(&id.index()).copied().unwrap_or(id)
        } else {
            id
        }
    }
}

impl Transport for Mutant {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        self.listening = true;
        self.inner.listen(addr)
    }

    fn stop_listening(&mut self) {
        if self.fault != Fault::KeepListening {
            self.inner.stop_listening();
        }
    }

    fn connect(&mut self, addr: SocketAddr, now: Instant) -> Result<ConnId, TransportError> {
        let id = self.inner.connect(addr, now)?;
        Ok(self.out_id(id))
    }

    fn poll(&mut self, now: Instant, events: &mut Events) -> Result<(), TransportError> {
        let mut inner = Events::default();
        self.inner.poll(now, &mut inner)?;
        events.clear();
        let mut readable_now = HashSet::new();
        for ev in inner.iter().copied() {
            let id = match ev {
                Event::Accepted { conn, .. } => conn,
                Event::Connected(c)
                | Event::Readable(c)
                | Event::Writable(c)
                | Event::PeerFinished(c)
                | Event::Closed(c, _) => c,
            };
            if self.dropped.contains(&id) {
                continue;
            }
            let ev = match (self.fault, ev) {
                (
                    Fault::PeerPortZero,
                    Event::Accepted {
                        conn,
                        mut peer,
                        listener,
                    },
                ) => {
                    peer.set_port(0);
                    Event::Accepted {
                        conn,
                        peer,
                        listener,
                    }
                }
                (
                    Fault::WrongListener,
                    Event::Accepted {
                        conn,
                        peer,
                        mut listener,
                    },
                ) => {
                    listener.set_port(listener.port().wrapping_add(1));
                    Event::Accepted {
                        conn,
                        peer,
                        listener,
                    }
                }
                (Fault::AcceptAtMost100, Event::Accepted { conn, .. }) => {
                    self.accepted += 1;
                    if self.accepted > 100 {
                        self.dropped.insert(conn);
                        self.inner.close(conn);
                        continue;
                    }
                    ev
                }
                (Fault::ConnectFailedIsReset, Event::Closed(c, CloseReason::ConnectFailed(_))) => {
                    Event::Closed(c, CloseReason::Reset(None))
                }
                (Fault::EdgeReadable, Event::Readable(c)) => {
                    readable_now.insert(c);
                    if self.readable_last.contains(&c) {
                        continue;
                    }
                    ev
                }
                (Fault::StickyReadable, Event::Readable(c)) => {
                    self.sticky.insert(c);
                    continue;
                }
                (Fault::StickyReadable, Event::Closed(c, _) | Event::PeerFinished(c)) => {
                    self.sticky.remove(&c);
                    ev
                }
                (Fault::NoWritable, Event::Writable(_)) => continue,
                (Fault::CloseIsReset, Event::Closed(c, CloseReason::Local)) => {
                    Event::Closed(c, CloseReason::Reset(None))
                }
                (Fault::ResetIsPeerClosed, Event::Closed(c, CloseReason::Reset(_))) => {
                    Event::Closed(c, CloseReason::PeerClosed)
                }
                (Fault::SwallowAfterFin, Event::PeerFinished(c)) => {
                    self.finished.insert(c);
                    ev
                }
                _ => ev,
            };
            let ev = match ev {
                Event::Accepted {
                    conn,
                    peer,
                    listener,
                } => Event::Accepted {
                    conn: self.out_id(conn),
                    peer,
                    listener,
                },
                Event::Connected(c) => Event::Connected(self.out_id(c)),
                Event::Readable(c) => Event::Readable(self.out_id(c)),
                Event::Writable(c) => Event::Writable(self.out_id(c)),
                Event::PeerFinished(c) => Event::PeerFinished(self.out_id(c)),
                Event::Closed(c, why) => Event::Closed(self.out_id(c), why),
            };
            events.push(ev);
        }
        if self.fault == Fault::StickyReadable {
            for &c in &self.sticky {
                events.push(Event::Readable(c));
            }
        }
        self.readable_last = readable_now;
        Ok(())
    }

    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, TransportError> {
        let conn = self.in_id(conn);
        let n = self.inner.recv(conn, buf)?;
        // The server only: a second flip on the client would undo it.
        if self.fault == Fault::CorruptAt20M && self.listening {
            const AT: usize = 20 << 20;
            let seen = self.received.entry(conn).or_default();
            if *seen <= AT && AT < *seen + n {
                buf[AT - *seen] ^= 0x55;
            }
            *seen += n;
        }
        Ok(n)
    }

    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, TransportError> {
        let conn = self.in_id(conn);
        if self.fault == Fault::SwallowAfterFin && self.finished.contains(&conn) {
            return Ok(data.len());
        }
        self.inner.send(conn, data)
    }

    fn pause_recv(&mut self, conn: ConnId, paused: bool) {
        if self.fault != Fault::IgnorePause {
            let conn = self.in_id(conn);
            self.inner.pause_recv(conn, paused);
        }
    }

    fn close(&mut self, conn: ConnId) {
        let conn = self.in_id(conn);
        if self.fault == Fault::IgnoreFirstClose && self.closed_once.insert(conn) {
            return;
        }
        self.inner.close(conn);
    }

    fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.inner.peer_addr(self.in_id(conn))
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        self.inner.wait(timeout)
    }

    fn waker(&self) -> Result<Arc<dyn Wake>, TransportError> {
        self.inner.waker()
    }
}

fn mutant(fault: Fault) -> impl Fn() -> KernelPair<Mutant, Mutant> {
    move || {
        KernelPair::new(Mutant::new(fault), Mutant::new(fault))
            .unwrap()
            .with_sizes(Sizes {
                // A mutant that stalls fails by the time bound.
                time_limit: Duration::from_secs(10),
                ..Sizes::default()
            })
    }
}

#[test]
#[should_panic(expected = "[connect_accept] server: Accepted")]
fn connect_accept_catches_a_bad_peer_address() {
    conformance::connect_accept(mutant(Fault::PeerPortZero));
}

#[test]
#[should_panic(expected = "but the only one is")]
fn connect_accept_catches_a_wrong_listener() {
    conformance::connect_accept(mutant(Fault::WrongListener));
}

#[test]
#[should_panic(expected = "expected ConnectFailed")]
fn connect_refused_catches_a_wrong_reason() {
    conformance::connect_refused(mutant(Fault::ConnectFailedIsReset));
}

#[test]
#[should_panic(expected = "accepted after stop_listening")]
fn stop_listening_catches_a_listener_left_open() {
    conformance::stop_listening(mutant(Fault::KeepListening));
}

#[test]
#[should_panic(expected = "readiness must be level-triggered")]
fn readable_catches_edge_triggered_readiness() {
    conformance::readable_until_short_read(mutant(Fault::EdgeReadable));
}

#[test]
#[should_panic(expected = "after a short recv drained it")]
fn readable_catches_readiness_that_never_stops() {
    conformance::readable_until_short_read(mutant(Fault::StickyReadable));
}

#[test]
#[should_panic(expected = "no Writable")]
fn backpressure_catches_a_missing_writable() {
    conformance::backpressure(mutant(Fault::NoWritable));
}

#[test]
#[should_panic(expected = "while pause_recv(true)")]
fn pause_catches_an_ignored_pause() {
    conformance::pause_resume(mutant(Fault::IgnorePause));
}

#[test]
#[should_panic(expected = "both closed gracefully: Local")]
fn peer_close_catches_a_wrong_reason() {
    conformance::peer_close(mutant(Fault::CloseIsReset));
}

#[test]
#[should_panic(expected = "expected Reset")]
fn peer_reset_catches_a_reset_reported_as_a_close() {
    conformance::peer_reset(mutant(Fault::ResetIsPeerClosed));
}

#[test]
#[should_panic(expected = "read 0 bytes before EOF")]
fn half_close_catches_a_lost_reply() {
    conformance::half_close(mutant(Fault::SwallowAfterFin));
}

#[test]
#[should_panic(expected = "right after close()")]
fn local_close_catches_an_id_alive_after_close() {
    conformance::local_close(mutant(Fault::IgnoreFirstClose));
}

#[test]
#[should_panic(expected = "same generation")]
fn stale_ids_catches_missing_generations() {
    conformance::stale_ids(mutant(Fault::NoGenerations));
}

#[test]
#[should_panic(expected = "[many_connections] timed out")]
fn many_connections_catches_dropped_connections() {
    conformance::many_connections(mutant(Fault::AcceptAtMost100));
}

#[test]
#[should_panic(expected = "byte 20971520 of the stream differs")]
fn large_transfer_catches_a_corrupt_byte() {
    conformance::large_transfer(mutant(Fault::CorruptAt20M));
}
