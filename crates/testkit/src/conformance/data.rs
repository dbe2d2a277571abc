//! Checks of the data path: connecting, readiness, backpressure, pausing.

use std::time::Instant;

use warpwire_transport::{CloseReason, ConnId, Event, TransportError};

use super::drive::{QUIET_ROUNDS, QUIET_TIME, Stall, transfers, until_closed};
use super::harness::chain;
use super::stream::MAX_PIECE;
use super::stream::Pattern;
use super::{Harness, Incoming, Outgoing, Pair, Side};

use Side::{Client, Server};

/// Check 1: Connect and accept: `Connected` on the client, `Accepted{conn, peer}`
/// on the server with the client's address, `peer_addr` agreeing on both
/// ends; a second connection gets other ids and another port, and each
/// pair of ids is one connection (streams both ways are not crossed).
pub fn connect_accept<P: Pair>(make: impl FnOnce() -> P) {
    let mut h = Harness::new("connect_accept", make());
    let listen = h.pair().listen_addr();
    let ip = h.pair().client_ip();
    let (s1, c1, peer1) = h.establish();
    h.ensure(peer1.ip() == ip && peer1.port() != 0, || {
        format!("server: Accepted {s1} from {peer1}; the client is at {ip}")
    });
    let seen = h.t(Server).peer_addr(s1);
    h.ensure(seen == Some(peer1), || {
        format!("server: peer_addr({s1}) is {seen:?}; Accepted said {peer1}")
    });
    let seen = h.t(Client).peer_addr(c1);
    h.ensure(seen == Some(listen), || {
        format!("client: peer_addr({c1}) is {seen:?}; it connected to {listen}")
    });
    let (s2, c2, peer2) = h.establish();
    h.ensure(s2 != s1 && c2 != c1, || {
        format!("two connections share an id: server {s1}/{s2}, client {c1}/{c2}")
    });
    h.ensure(peer2 != peer1, || {
        format!("two connections from one peer address {peer1}")
    });
    transfers(
        &mut h,
        &[
            ((Client, c1), (Server, s1), 11, 3000),
            ((Client, c2), (Server, s2), 12, 3000),
            ((Server, s1), (Client, c1), 13, 3000),
            ((Server, s2), (Client, c2), 14, 3000),
        ],
    );
}

/// Check 1b: A connect to an address where nothing listens fails: an error from
/// `connect`, or `Closed(ConnectFailed)` and never `Connected`; the id is
/// dead afterwards.
pub fn connect_refused<P: Pair>(make: impl FnOnce() -> P) {
    let mut h = Harness::new("connect_refused", make());
    let Some(addr) = h.pair().closed_addr() else {
        h.fail("the pair names no address where nothing listens (Pair::closed_addr)");
    };
    let now = h.pair().now();
    let c = match h.t(Client).connect(addr, now) {
        Ok(c) => c,
        Err(TransportError::Connect { .. }) => return,
        Err(e) => h.fail(format!("connect to {addr}: {}", chain(&e))),
    };
    h.adopt_outgoing(c);
    let why = until_closed(&mut h, Client, c, "after a connect to a closed port");
    h.ensure(matches!(why, CloseReason::ConnectFailed(_)), || {
        format!("client: Closed({c}, {why:?}) for a connect to {addr}; expected ConnectFailed")
    });
    h.expect_dead(Client, c, "after its connect failed");
}

/// Check 1c: `stop_listening` refuses new connections and keeps accepted
/// ones: after it, a connect to the listen address fails (an error from
/// `connect`, or `Closed(ConnectFailed)`, never `Connected`) and the
/// server reports no `Accepted`; a connection accepted before carries
/// bytes both ways as before.
pub fn stop_listening<P: Pair>(make: impl FnOnce() -> P) {
    let mut h = Harness::new("stop_listening", make());
    let addr = h.pair().listen_addr();
    let (s, c, _) = h.establish();
    h.t(Server).stop_listening();
    let now = h.pair().now();
    match h.t(Client).connect(addr, now) {
        Ok(late) => {
            h.adopt_outgoing(late);
            loop {
                let r = h
                    .round(|| format!("client: Closed({late}) for a connect after stop_listening"));
                if let Some(ev) = r
                    .server
                    .iter()
                    .find(|e| matches!(e, Event::Accepted { .. }))
                {
                    h.fail(format!("server: {ev:?}: accepted after stop_listening"));
                }
                h.ensure(!r.has(Client, Event::Connected(late)), || {
                    format!("client: Connected({late}) to {addr}: accepted after stop_listening")
                });
                if let Some(why) = r.closed(Client, late) {
                    h.ensure(matches!(why, CloseReason::ConnectFailed(_)), || {
                        format!("client: Closed({late}, {why:?}) for a connect after stop_listening; expected ConnectFailed")
                    });
                    break;
                }
            }
            h.expect_dead(Client, late, "after its connect failed");
        }
        Err(TransportError::Connect { .. }) => {}
        Err(e) => h.fail(format!("connect to {addr}: {}", chain(&e))),
    }
    transfers(
        &mut h,
        &[
            ((Client, c), (Server, s), 15, 3000),
            ((Server, s), (Client, c), 16, 3000),
        ],
    );
}

/// Check 2: Level-triggered readiness: bytes arrive whole and in order;
/// `Readable` is reported on every poll while unread bytes remain (a
/// consumer reading one small piece per `Readable` still gets them all);
/// once a `recv` came back short with everything read, it stops.
pub fn readable_until_short_read<P: Pair>(make: impl FnOnce() -> P) {
    /// Not a multiple of PIECE: the last read is short.
    const N: usize = 50_500;
    const PIECE: usize = 1000;
    /// Rounds without Readable, with bytes unread, that fail the check.
    const LOST: u32 = 2000;
    let mut h = Harness::new("readable_until_short_read", make());
    let (s, c, _) = h.establish();
    let ends = [(Server, s), (Client, c)];
    let mut out = Outgoing::new(Client, c, 21, N);
    let mut inc = Incoming::new(Server, s, 21, N, PIECE);
    // The first Readable, nothing read.
    loop {
        out.pump(&mut h, MAX_PIECE);
        let r = h.round(|| format!("the first Readable({s}) after {} bytes sent", out.sent));
        h.no_close(&r, &ends);
        out.observe(&r);
        if r.readable(Server, s) {
            break;
        }
    }
    // Level-triggered: reported again on every poll, nothing read.
    for i in 1..=5 {
        out.pump(&mut h, MAX_PIECE);
        let r = h.round(|| "a poll".into());
        h.no_close(&r, &ends);
        out.observe(&r);
        h.ensure(r.readable(Server, s), || {
            format!("Readable({s}) not reported on poll {i} after the first, with bytes unread (readiness must be level-triggered)")
        });
    }
    // One piece per Readable: readiness must come back until all is read.
    let mut quiet = 0;
    while !inc.done() {
        out.pump(&mut h, MAX_PIECE);
        let r = h.round(|| format!("Readable({s}): {} of {N} bytes read", inc.got));
        h.no_close(&r, &ends);
        out.observe(&r);
        if r.readable(Server, s) {
            quiet = 0;
            inc.read(&mut h, PIECE);
        } else {
            quiet += 1;
            h.ensure(quiet < LOST, || {
                format!(
                    "Readable({s}) not reported for {LOST} polls with {} of {N} bytes read \
                     (the last recv {}): readiness lost while bytes remain",
                    inc.got,
                    if inc.last_short {
                        "was short"
                    } else {
                        "filled its buffer"
                    }
                )
            });
        }
    }
    if !inc.last_short {
        let mut buf = [0u8; PIECE];
        let n = h.recv(Server, s, &mut buf);
        h.ensure(n == 0, || {
            format!("recv({s}) returned {n} bytes after all {N} sent were read")
        });
    }
    // Drained by a short read, nothing more sent: no more Readable.
    for i in 1..=10 {
        let r = h.round(|| "a poll".into());
        h.no_close(&r, &ends);
        h.ensure(!r.readable(Server, s), || {
            format!("Readable({s}) reported on poll {i} after a short recv drained it, with nothing more sent")
        });
    }
}

/// Check 3: Backpressure: with the server not reading, the client's `send`
/// comes back short; it then sends only after `Writable`; once the server
/// reads, `Writable` arrives and the rest goes through, every byte intact.
pub fn backpressure<P: Pair>(make: impl FnOnce() -> P) {
    let mut h = Harness::new("backpressure", make());
    let total = h.sizes().backpressure;
    let (s, c, _) = h.establish();
    let ends = [(Server, s), (Client, c)];
    let mut out = Outgoing::new(Client, c, 31, total);
    let mut inc = Incoming::new(Server, s, 31, total, MAX_PIECE);
    // The server reads nothing: the pipe fills until a short send, and
    // stays full (no Writable for a while).
    let mut blocked_since = None;
    loop {
        out.pump(&mut h, MAX_PIECE);
        h.ensure(!out.done(), || {
            format!("the client's send took all {total} bytes while the server read none: no backpressure")
        });
        let r = h.round(|| format!("the pipe to fill: {} bytes sent", out.sent));
        h.no_close(&r, &ends);
        out.observe(&r);
        if !out.blocked {
            blocked_since = None;
            continue;
        }
        let since = *blocked_since.get_or_insert_with(Instant::now);
        if out.blocked_rounds >= u64::from(QUIET_ROUNDS) && since.elapsed() >= QUIET_TIME {
            break;
        }
    }
    let filled = out.sent;
    // The server reads; the client resumes on Writable only.
    let mut stall = Stall::new();
    while !inc.done() {
        out.pump(&mut h, MAX_PIECE);
        let r = h.round(|| {
            format!(
                "the rest: {} of {total} sent{}, {} received (pipe filled at {filled})",
                out.sent,
                if out.blocked {
                    ", client blocked since a short send: no Writable"
                } else {
                    ""
                },
                inc.got
            )
        });
        h.no_close(&r, &ends);
        out.observe(&r);
        if r.readable(Server, s) {
            inc.read(&mut h, 4 << 20);
        }
        stall.check(&h, inc.got + out.sent, || {
            format!(
                "{} of {total} sent, {} received{}",
                out.sent,
                inc.got,
                if out.blocked {
                    "; the client is blocked since a short send: no Writable"
                } else {
                    ""
                }
            )
        });
    }
    h.ensure(out.writables > 0, || {
        "all bytes went through without one Writable after a short send".into()
    });
}

/// Polls for at least [`QUIET_ROUNDS`] and [`QUIET_TIME`] (the ledger
/// fails any Readable of a paused connection).
fn quiet<P: Pair>(h: &mut Harness<P>, out: &mut Outgoing, ends: &[(Side, ConnId)], what: &str) {
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < QUIET_ROUNDS || start.elapsed() < QUIET_TIME {
        out.pump(h, MAX_PIECE);
        let r = h.round(|| what.to_owned());
        h.no_close(&r, ends);
        out.observe(&r);
        rounds += 1;
    }
}

/// Check 4: Pause and resume: after `pause_recv(true)` no `Readable` is
/// reported with data pending; after `pause_recv(false)` it is again, and
/// the data is intact. Twice: paused before the data came, and paused
/// with the connection readable and half read.
pub fn pause_resume<P: Pair>(make: impl FnOnce() -> P) {
    const N: usize = 20_000;
    const PIECE: usize = 1000;
    const LOST: u32 = 2000;
    let mut h = Harness::new("pause_resume", make());
    let (s, c, _) = h.establish();
    let ends = [(Server, s), (Client, c)];
    let mut out = Outgoing::new(Client, c, 41, N);
    let mut inc = Incoming::new(Server, s, 41, N, PIECE);
    h.pause(Server, s, true);
    quiet(&mut h, &mut out, &ends, "polls while paused");
    h.ensure(out.done(), || {
        format!("only {} of {N} bytes sent while paused", out.sent)
    });
    for phase in ["first", "second"] {
        h.pause(Server, s, false);
        let mut rounds = 0;
        loop {
            let r = h.round(|| format!("Readable({s}) after the {phase} pause_recv(false)"));
            h.no_close(&r, &ends);
            if r.readable(Server, s) {
                break;
            }
            rounds += 1;
            h.ensure(rounds < LOST, || {
                format!("no Readable({s}) in {LOST} polls after the {phase} pause_recv(false), {} of {N} bytes unread", N - inc.got)
            });
        }
        let n = inc.read(&mut h, PIECE);
        h.ensure(n > 0, || {
            format!("Readable({s}) after resuming, but recv returned 0 with bytes pending")
        });
        if phase == "first" {
            h.pause(Server, s, true);
            quiet(&mut h, &mut out, &ends, "polls while paused again");
        }
    }
    let mut stall = Stall::new();
    while !inc.done() {
        let r = h.round(|| format!("the rest after resuming: {} of {N} read", inc.got));
        h.no_close(&r, &ends);
        if r.readable(Server, s) {
            inc.read(&mut h, PIECE);
        }
        stall.check(&h, inc.got, || {
            format!("{} of {N} read after resuming", inc.got)
        });
    }
}

/// Check 2b: `recv_buf` appends: each call adds at most `max` bytes after
/// what the buffer already holds (which stays as it was), returns exactly
/// how many it added, adds nothing for `max` 0, and the bytes arrive whole
/// and in order, as `recv` would give them.
pub fn recv_buf_appends<P: Pair>(make: impl FnOnce() -> P) {
    const N: usize = 60_000;
    const PREFIX: &[u8] = b"held before";
    /// Rounds in a row with nothing appended that fail the check.
    const LOST: u32 = 20_000;
    let mut h = Harness::new("recv_buf_appends", make());
    let (s, c, _) = h.establish();
    let ends = [(Server, s), (Client, c)];
    let mut out = Outgoing::new(Client, c, 23, N);
    let mut buf = bytes::BytesMut::from(PREFIX);
    // Odd sizes, so reads end inside what the transport holds.
    let maxes = [0, 1, 7, 1000, 4096, 65_536, 3];
    let (mut calls, mut quiet) = (0usize, 0u32);
    while buf.len() < PREFIX.len() + N {
        out.pump(&mut h, MAX_PIECE);
        let r = h.round(|| format!("recv_buf({s}): {} of {N} bytes", buf.len() - PREFIX.len()));
        h.no_close(&r, &ends);
        out.observe(&r);
        let before = buf.len();
        loop {
            let max = maxes[calls % maxes.len()];
            calls += 1;
            let held = buf.len();
            let n = match h.t(Server).recv_buf(s, &mut buf, max) {
                Ok(n) => n,
                Err(e) => h.fail(format!("server: recv_buf({s}) failed: {e}")),
            };
            h.ensure(n <= max && buf.len() == held + n, || {
                format!(
                    "server: recv_buf({s}, max {max}) returned {n} and grew the buffer by {}",
                    buf.len() as i64 - held as i64
                )
            });
            h.ensure(buf.len() <= PREFIX.len() + N, || {
                format!(
                    "server: {s} received {} bytes, {N} were sent",
                    buf.len() - PREFIX.len()
                )
            });
            if max > 0 && n < max {
                break;
            }
        }
        h.ensure(buf.starts_with(PREFIX), || {
            "server: recv_buf changed the bytes the buffer held".into()
        });
        let got = &buf[before..];
        if let Some(at) = Pattern::get().mismatch(23, before - PREFIX.len(), got) {
            h.fail(format!(
                "server: {s} byte {at} of the stream differs from what was sent \
                 (lost, duplicated, reordered, corrupted or another connection's)"
            ));
        }
        if got.is_empty() {
            quiet += 1;
            h.ensure(quiet < LOST, || {
                format!(
                    "nothing appended for {LOST} rounds with {} of {N} bytes received",
                    buf.len() - PREFIX.len()
                )
            });
        } else {
            quiet = 0;
            h.moved();
        }
    }
}
