//! The harness: one pair, polled in rounds from one thread, every event
//! checked against a ledger of each side's connections, one time bound.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use warpwire_transport::{CloseReason, ConnId, Event, Events, Transport, TransportError};

use super::{Pair, Sizes};

/// Which end of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The listening end.
    Server,
    /// The connecting end.
    Client,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Server => "server",
            Side::Client => "client",
        })
    }
}

/// The events of one round, per side.
#[derive(Debug, Default)]
pub struct Round {
    /// What the server's poll reported.
    pub server: Vec<Event>,
    /// What the client's poll reported.
    pub client: Vec<Event>,
}

impl Round {
    /// The events of one side.
    pub fn on(&self, side: Side) -> &[Event] {
        match side {
            Side::Server => &self.server,
            Side::Client => &self.client,
        }
    }

    /// Whether `side` reported `ev`.
    pub fn has(&self, side: Side, ev: Event) -> bool {
        self.on(side).contains(&ev)
    }

    /// Whether `side` reported `Readable(conn)`.
    pub fn readable(&self, side: Side, conn: ConnId) -> bool {
        self.has(side, Event::Readable(conn))
    }

    /// Whether `side` reported `Writable(conn)`.
    pub fn writable(&self, side: Side, conn: ConnId) -> bool {
        self.has(side, Event::Writable(conn))
    }

    /// The reason of `Closed(conn, _)` if `side` reported it.
    pub fn closed(&self, side: Side, conn: ConnId) -> Option<CloseReason> {
        self.on(side).iter().find_map(|e| match *e {
            Event::Closed(c, why) if c == conn => Some(why),
            _ => None,
        })
    }
}

/// What the ledger knows of one connection.
#[derive(Debug, Default, Clone, Copy)]
struct Life {
    /// Handed out by `connect` (not by `Accepted`).
    outgoing: bool,
    connected: bool,
    paused: bool,
    close_called: bool,
    finished: bool,
    closed: Option<CloseReason>,
}

/// One side's connections, as its events and the calls made describe them.
#[derive(Debug, Default)]
struct Ledger {
    lives: HashMap<ConnId, Life>,
}

/// One pair under test.
pub struct Harness<P: Pair> {
    pair: P,
    check: &'static str,
    events: Events,
    ledgers: [Ledger; 2],
    /// Something moved since the last round (bytes, calls, events).
    progress: bool,
    started: Instant,
    limit: Duration,
    rounds: u64,
}

impl<P: Pair> fmt::Debug for Harness<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("check", &self.check)
            .field("rounds", &self.rounds)
            .finish()
    }
}

impl<P: Pair> Harness<P> {
    /// A harness for the check named `check`.
    pub fn new(check: &'static str, pair: P) -> Self {
        let limit = pair.sizes().time_limit;
        Self {
            pair,
            check,
            events: Events::with_capacity(1024),
            ledgers: [Ledger::default(), Ledger::default()],
            progress: true,
            started: Instant::now(),
            limit,
            rounds: 0,
        }
    }

    /// The pair.
    pub fn pair(&mut self) -> &mut P {
        &mut self.pair
    }

    /// The pair's sizes.
    pub fn sizes(&self) -> Sizes {
        self.pair.sizes()
    }

    /// Rounds so far.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// One side's transport.
    pub fn t(&mut self, side: Side) -> &mut dyn Transport {
        match side {
            Side::Server => self.pair.server(),
            Side::Client => self.pair.client(),
        }
    }

    /// Fails the check.
    #[track_caller]
    pub fn fail(&self, what: impl fmt::Display) -> ! {
        panic!(
            "[{}] {what} (after {} rounds, {:.2} s)",
            self.check,
            self.rounds,
            self.started.elapsed().as_secs_f64()
        )
    }

    /// Fails the check unless `ok`.
    #[track_caller]
    pub fn ensure(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(what());
        }
    }

    /// Notes that something moved, so the next round does not sleep.
    pub fn moved(&mut self) {
        self.progress = true;
    }

    /// One round: time passes, then the server and the client are polled
    /// once each. `waiting` says what the caller waits for; it is the
    /// message when the check's time bound has passed.
    #[track_caller]
    pub fn round(&mut self, waiting: impl FnOnce() -> String) -> Round {
        if self.started.elapsed() > self.limit {
            self.fail(format!(
                "timed out after {:?} waiting for {}",
                self.limit,
                waiting()
            ));
        }
        let idle = !std::mem::replace(&mut self.progress, false);
        if let Err(e) = self.pair.advance(idle) {
            self.fail(format!("wait failed: {}", chain(&e)));
        }
        self.rounds += 1;
        let mut round = Round::default();
        for side in [Side::Server, Side::Client] {
            let now = self.pair.now();
            let mut events = std::mem::take(&mut self.events);
            if let Err(e) = self.t(side).poll(now, &mut events) {
                self.fail(format!("{side} poll failed: {}", chain(&e)));
            }
            let list: Vec<Event> = events.iter().copied().collect();
            self.events = events;
            for ev in &list {
                self.audit(side, *ev);
            }
            match side {
                Side::Server => round.server = list,
                Side::Client => round.client = list,
            }
        }
        round
    }

    /// Checks one event against the side's ledger and records it.
    #[track_caller]
    fn audit(&mut self, side: Side, ev: Event) {
        let listen = self.pair.listen_addr();
        let ledger = &mut self.ledgers[side as usize];
        let violation = match ev {
            Event::Accepted { conn, listener, .. } if listener != listen => Some(format!(
                "Accepted {conn}: names listener {listener}, but the only one is {listen}"
            )),
            Event::Accepted { conn, .. } => match ledger.lives.get(&conn) {
                Some(l) if l.closed.is_some() => Some(format!(
                    "Accepted {conn}: the id of a closed connection handed out again (same generation)"
                )),
                Some(_) => Some(format!("Accepted {conn}: an id already in use")),
                None => {
                    self.progress = true;
                    ledger.lives.insert(conn, Life::default());
                    None
                }
            },
            ev => {
                let conn = match ev {
                    Event::Connected(c)
                    | Event::Readable(c)
                    | Event::Writable(c)
                    | Event::PeerFinished(c)
                    | Event::Closed(c, _) => c,
                    Event::Accepted { conn, .. } => conn,
                };
                match ledger.lives.get_mut(&conn) {
                    None => Some(format!("{ev:?} for an id this side never handed out")),
                    Some(l) if l.closed.is_some() => Some(format!(
                        "{ev:?} after {conn} was reported Closed({:?})",
                        l.closed
                    )),
                    Some(l) => {
                        if !matches!(ev, Event::Readable(_)) {
                            self.progress = true;
                        }
                        match ev {
                            Event::Connected(_) if !l.outgoing => {
                                Some(format!("Connected({conn}) for an accepted connection"))
                            }
                            Event::Connected(_) if l.connected => {
                                Some(format!("Connected({conn}) reported twice"))
                            }
                            Event::Connected(_) => {
                                l.connected = true;
                                None
                            }
                            Event::Readable(_) if l.paused => {
                                Some(format!("Readable({conn}) while pause_recv(true)"))
                            }
                            Event::Readable(_) if l.close_called => {
                                Some(format!("Readable({conn}) after close()"))
                            }
                            Event::Readable(_) if l.finished => {
                                Some(format!("Readable({conn}) after PeerFinished"))
                            }
                            Event::Readable(_) if l.outgoing && !l.connected => {
                                Some(format!("Readable({conn}) before Connected"))
                            }
                            Event::PeerFinished(_) if l.finished => {
                                Some(format!("PeerFinished({conn}) reported twice"))
                            }
                            Event::PeerFinished(_) => {
                                l.finished = true;
                                None
                            }
                            Event::Closed(_, why) => {
                                l.closed = Some(why);
                                None
                            }
                            _ => None,
                        }
                    }
                }
            }
        };
        if let Some(v) = violation {
            self.fail(format!("{side}: {v}"));
        }
    }

    /// Fails the check if one of `conns` was reported closed this round.
    #[track_caller]
    pub fn no_close(&self, r: &Round, conns: &[(Side, ConnId)]) {
        for &(side, conn) in conns {
            if let Some(why) = r.closed(side, conn) {
                self.fail(format!(
                    "{side}: Closed({conn}, {why:?}) in the middle of the check"
                ));
            }
        }
    }

    /// Whether `side` reported `conn` closed (and why).
    pub fn closed(&self, side: Side, conn: ConnId) -> Option<CloseReason> {
        self.ledgers[side as usize]
            .lives
            .get(&conn)
            .and_then(|l| l.closed)
    }

    /// Whether `side` reported `PeerFinished(conn)`.
    pub fn finished(&self, side: Side, conn: ConnId) -> bool {
        self.ledgers[side as usize]
            .lives
            .get(&conn)
            .is_some_and(|l| l.finished)
    }

    /// Starts a connection from the client to the server.
    #[track_caller]
    pub fn connect(&mut self) -> ConnId {
        let addr = self.pair.listen_addr();
        let now = self.pair.now();
        match self.pair.client().connect(addr, now) {
            Ok(c) => {
                self.adopt_outgoing(c);
                c
            }
            Err(e) => self.fail(format!("client connect to {addr}: {}", chain(&e))),
        }
    }

    /// Records an id the client's `connect` returned.
    #[track_caller]
    pub fn adopt_outgoing(&mut self, c: ConnId) {
        self.progress = true;
        let ledger = &mut self.ledgers[Side::Client as usize];
        if let Some(l) = ledger.lives.get(&c) {
            let what = if l.closed.is_some() {
                "the id of a closed connection handed out again (same generation)"
            } else {
                "an id already in use"
            };
            self.fail(format!("client: connect returned {c}: {what}"));
        }
        ledger.lives.insert(
            c,
            Life {
                outgoing: true,
                ..Life::default()
            },
        );
    }

    /// Connects once and waits for both ends: (server id, client id, the
    /// peer address the server saw). Any other Accepted, or a Closed of
    /// the new connection, fails the check.
    #[track_caller]
    pub fn establish(&mut self) -> (ConnId, ConnId, SocketAddr) {
        let c = self.connect();
        let (mut accepted, mut connected) = (None, false);
        loop {
            let r = self.round(|| {
                format!(
                    "a connection: Connected({c}) {}, Accepted {}",
                    if connected { "seen" } else { "not seen" },
                    if accepted.is_some() {
                        "seen"
                    } else {
                        "not seen"
                    }
                )
            });
            for ev in &r.server {
                if let Event::Accepted { conn, peer, .. } = *ev {
                    if accepted.is_some() {
                        self.fail(format!(
                            "server: a second Accepted ({conn}) for one connect"
                        ));
                    }
                    accepted = Some((conn, peer));
                }
            }
            if let Some(why) = r.closed(Side::Client, c) {
                self.fail(format!("client: Closed({c}, {why:?}) instead of Connected"));
            }
            connected |= r.has(Side::Client, Event::Connected(c));
            if let (true, Some((s, peer))) = (connected, accepted) {
                return (s, c, peer);
            }
        }
    }

    /// `recv` that fails the check on an error.
    #[track_caller]
    pub fn recv(&mut self, side: Side, conn: ConnId, buf: &mut [u8]) -> usize {
        match self.t(side).recv(conn, buf) {
            Ok(n) => {
                self.progress |= n > 0;
                n
            }
            Err(e) => self.fail(format!("{side}: recv({conn}) failed: {}", chain(&e))),
        }
    }

    /// `send` that fails the check on an error.
    #[track_caller]
    pub fn send(&mut self, side: Side, conn: ConnId, data: &[u8]) -> usize {
        match self.t(side).send(conn, data) {
            Ok(n) if n > data.len() => self.fail(format!(
                "{side}: send({conn}) of {} bytes returned {n}",
                data.len()
            )),
            Ok(n) => {
                self.progress |= n > 0;
                n
            }
            Err(e) => self.fail(format!("{side}: send({conn}) failed: {}", chain(&e))),
        }
    }

    /// `flush` that fails the check on an error.
    #[track_caller]
    pub fn flush(&mut self, side: Side) {
        let now = self.pair.now();
        if let Err(e) = self.t(side).flush(now) {
            self.fail(format!("{side}: flush failed: {}", chain(&e)));
        }
    }

    /// `close`, recorded in the ledger.
    pub fn close(&mut self, side: Side, conn: ConnId) {
        self.progress = true;
        if let Some(l) = self.ledgers[side as usize].lives.get_mut(&conn) {
            l.close_called = true;
        }
        self.t(side).close(conn);
    }

    /// `pause_recv`, recorded in the ledger.
    pub fn pause(&mut self, side: Side, conn: ConnId, paused: bool) {
        self.progress = true;
        if let Some(l) = self.ledgers[side as usize].lives.get_mut(&conn) {
            l.paused = paused;
        }
        self.t(side).pause_recv(conn, paused);
    }

    /// Fails the check unless `recv` and `send` on `conn` are refused with
    /// `UnknownConn(conn)`: the id is dead.
    #[track_caller]
    pub fn expect_dead(&mut self, side: Side, conn: ConnId, when: &str) {
        let mut buf = [0u8; 16];
        let recv = self.t(side).recv(conn, &mut buf);
        if !matches!(recv, Err(TransportError::UnknownConn(id)) if id == conn) {
            self.fail(format!(
                "{side}: recv({conn}) {when} returned {}, not UnknownConn({conn})",
                outcome(&recv)
            ));
        }
        let send = self.t(side).send(conn, b"stale");
        if !matches!(send, Err(TransportError::UnknownConn(id)) if id == conn) {
            self.fail(format!(
                "{side}: send({conn}) {when} returned {}, not UnknownConn({conn})",
                outcome(&send)
            ));
        }
    }
}

/// An error with its sources, for messages.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A transport call's result, for messages.
pub(crate) fn outcome(r: &Result<usize, TransportError>) -> String {
    match r {
        Ok(n) => format!("Ok({n})"),
        Err(e) => format!("Err({e:?})"),
    }
}
