//! Checks under load: many connections at once, a large transfer.

use std::collections::HashSet;

use warpwire_transport::{CloseReason, ConnId, Event};

use super::drive::{Stall, close_both, expect_eof};
use super::stream::MAX_PIECE;
use super::{Echo, Harness, Incoming, Outgoing, Pair, Side};

use Side::{Client, Server};

/// Check 9: Many connections at once: all connect, each echoes its own message,
/// all close gracefully.
pub fn many_connections<P: Pair>(make: impl FnOnce() -> P) {
    let mut h = Harness::new("many_connections", make());
    let n = h.sizes().connections;
    let clients: Vec<ConnId> = (0..n).map(|_| h.connect()).collect();
    let mut accepted = Vec::with_capacity(n);
    let mut connected = HashSet::new();
    while accepted.len() < n || connected.len() < n {
        let r = h.round(|| {
            format!(
                "{n} connections: {} accepted, {} connected",
                accepted.len(),
                connected.len()
            )
        });
        for side in [Server, Client] {
            if let Some(Event::Closed(id, why)) =
                r.on(side).iter().find(|e| matches!(e, Event::Closed(..)))
            {
                h.fail(format!(
                    "{side}: Closed({id}, {why:?}) among {n} new connections"
                ));
            }
        }
        for ev in &r.server {
            if let Event::Accepted { conn, peer, .. } = *ev {
                accepted.push((conn, peer));
            }
        }
        for ev in &r.client {
            if let Event::Connected(c) = *ev {
                connected.insert(c);
            }
        }
    }
    let peers: HashSet<_> = accepted.iter().map(|a| a.1).collect();
    h.ensure(peers.len() == n, || {
        format!(
            "{n} connections came from {} distinct peer addresses",
            peers.len()
        )
    });
    let len = |i: usize| 1000 + (i * 37) % 3000;
    let mut outs: Vec<Outgoing> = clients
        .iter()
        .enumerate()
        .map(|(i, &c)| Outgoing::new(Client, c, 1000 + i as u64, len(i)))
        .collect();
    let mut incs: Vec<Incoming> = clients
        .iter()
        .enumerate()
        .map(|(i, &c)| Incoming::new(Client, c, 1000 + i as u64, len(i), 4096))
        .collect();
    let mut echoes: Vec<Echo> = accepted
        .iter()
        .map(|&(s, _)| Echo::new(Server, s, 16 * 1024))
        .collect();
    let mut stall = Stall::new();
    while !incs.iter().all(Incoming::done) {
        for o in &mut outs {
            o.pump(&mut h, MAX_PIECE);
        }
        let r = h.round(|| {
            format!(
                "{n} echoes: {} complete",
                incs.iter().filter(|i| i.done()).count()
            )
        });
        for side in [Server, Client] {
            if let Some(Event::Closed(id, why)) =
                r.on(side).iter().find(|e| matches!(e, Event::Closed(..)))
            {
                h.fail(format!("{side}: Closed({id}, {why:?}) during the echoes"));
            }
        }
        for o in &mut outs {
            o.observe(&r);
        }
        for e in &mut echoes {
            e.step(&mut h, &r);
        }
        for (i, &c) in incs.iter_mut().zip(&clients) {
            if r.readable(Client, c) {
                i.read(&mut h, usize::MAX);
            }
        }
        let moved: usize = incs.iter().map(|i| i.got).sum();
        stall.check(&h, moved, || format!("{moved} bytes echoed back in all"));
    }
    for &c in &clients {
        h.close(Client, c);
    }
    let servers: Vec<ConnId> = accepted.iter().map(|a| a.0).collect();
    let mut answered = HashSet::new();
    let count = |h: &Harness<P>, side: Side, ids: &[ConnId]| {
        ids.iter()
            .filter(|&&id| h.closed(side, id).is_some())
            .count()
    };
    while count(&h, Server, &servers) < n || count(&h, Client, &clients) < n {
        for &s in &servers {
            if h.finished(Server, s) && answered.insert(s) {
                h.close(Server, s);
            }
        }
        let (a, b) = (count(&h, Server, &servers), count(&h, Client, &clients));
        let r = h.round(|| {
            format!(
                "{n} graceful closes: {} PeerFinished answered, server {a} closed, client {b} closed",
                answered.len(),
            )
        });
        for ev in &r.server {
            if let Event::Readable(s) = *ev {
                expect_eof(&mut h, Server, s);
            }
        }
    }
    for (side, ids) in [(Server, &servers), (Client, &clients)] {
        if let Some((id, why)) = ids
            .iter()
            .map(|&id| (id, h.closed(side, id)))
            .find(|(_, why)| *why != Some(CloseReason::Local))
        {
            h.fail(format!(
                "{side}: Closed({id}, {why:?}) after a graceful close; expected Local"
            ));
        }
    }
}

/// Check 10: A large transfer: the client sends `sizes().large` bytes, the server
/// echoes them (holding at most a megabyte, so readiness and backpressure
/// both work), every byte comes back intact; then both close.
pub fn large_transfer<P: Pair>(make: impl FnOnce() -> P) {
    /// Bytes the echoing server holds before it stops reading.
    const HOLD: usize = 1 << 20;
    let mut h = Harness::new("large_transfer", make());
    let total = h.sizes().large;
    let (s, c, _) = h.establish();
    let ends = [(Server, s), (Client, c)];
    let mut out = Outgoing::new(Client, c, 101, total);
    let mut echo = Echo::new(Server, s, HOLD);
    let mut inc = Incoming::new(Client, c, 101, total, MAX_PIECE);
    let mut stall = Stall::new();
    while !inc.done() {
        out.pump(&mut h, MAX_PIECE);
        let r = h.round(|| {
            format!(
                "{total} bytes echoed: {} sent{}, {} echoed{} ({} held), {} back",
                out.sent,
                if out.blocked { " (client blocked)" } else { "" },
                echo.echoed,
                if echo.blocked {
                    " (server blocked)"
                } else {
                    ""
                },
                echo.held(),
                inc.got
            )
        });
        h.no_close(&r, &ends);
        out.observe(&r);
        echo.step(&mut h, &r);
        if r.readable(Client, c) {
            inc.read(&mut h, usize::MAX);
        }
        stall.check(&h, out.sent + echo.echoed + inc.got, || {
            format!(
                "{} sent, {} echoed, {} back",
                out.sent, echo.echoed, inc.got
            )
        });
    }
    h.ensure(out.short_sends + echo.short_sends > 0, || {
        format!("{total} bytes each way without one short send: backpressure was never exercised")
    });
    close_both(&mut h, s, c);
}
