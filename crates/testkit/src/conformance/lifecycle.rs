//! Checks of a connection's end: peer close, reset, half-close, local
//! close, and ids that outlive their connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use warpwire_transport::{CloseReason, ConnId, Event, TransportError};

use super::drive::{QUIET_ROUNDS, Stall, close_both, seen, transfers, until_closed};
use super::harness::{chain, outcome};
use super::stream::MAX_PIECE;
use super::{Harness, Incoming, Outgoing, Pair, Pattern, Side};

use Side::{Client, Server};

/// Check 5: Peer close: the client sends, then closes at once; the server gets
/// every byte, then `PeerFinished`; it can still send (the bytes may be
/// discarded by the closed client) and closes; both ends get
/// `Closed(Local)`, and the ids are dead.
pub fn peer_close<P: Pair>(make: impl FnOnce() -> P) {
    let mut h = Harness::new("peer_close", make());
    let m = h.sizes().close;
    let (s, c, _) = h.establish();
    let mut out = Outgoing::new(Client, c, 51, m);
    let mut inc = Incoming::new(Server, s, 51, m, MAX_PIECE);
    let mut stall = Stall::new();
    while !out.done() {
        out.pump(&mut h, MAX_PIECE);
        if out.done() {
            break;
        }
        let r = h.round(|| format!("the client to send: {} of {m} taken", out.sent));
        h.no_close(&r, &[(Server, s), (Client, c)]);
        out.observe(&r);
        if r.readable(Server, s) {
            inc.read(&mut h, usize::MAX);
        }
        stall.check(&h, out.sent + inc.got, || {
            format!("{} of {m} sent", out.sent)
        });
    }
    // Everything taken (some of it may still be queued in the transport):
    // the close must send it before the FIN.
    h.close(Client, c);
    h.expect_dead(Client, c, "right after close()");
    let mut stall = Stall::new();
    while !h.finished(Server, s) {
        let r = h.round(|| {
            format!(
                "server: PeerFinished({s}) after the client's close; {} of {m} bytes read",
                inc.got
            )
        });
        h.no_close(&r, &[(Server, s)]);
        for ev in &r.server {
            match *ev {
                Event::Readable(id) if id == s => {
                    inc.read(&mut h, usize::MAX);
                }
                Event::PeerFinished(id) if id == s => h.ensure(inc.done(), || {
                    format!(
                        "PeerFinished({s}) after {} of {m} bytes: it must follow every byte",
                        inc.got
                    )
                }),
                _ => {}
            }
        }
        stall.check(&h, inc.got, || format!("{} of {m} read", inc.got));
    }
    // Still open for sending after the peer's FIN.
    let reply = Pattern::get().at(52, 0, 1000);
    let sent = h.t(Server).send(s, reply);
    h.ensure(sent.is_ok(), || {
        format!(
            "server: send({s}) after PeerFinished returned {}; the connection stays writable",
            outcome(&sent)
        )
    });
    h.close(Server, s);
    h.expect_dead(Server, s, "right after close()");
    let a = until_closed(&mut h, Server, s, "after close()");
    let b = until_closed(&mut h, Client, c, "after both ends closed");
    h.ensure(a == CloseReason::Local && b == CloseReason::Local, || {
        format!(
            "server Closed({s}, {a:?}), client Closed({c}, {b:?}); both closed gracefully: Local"
        )
    });
    h.expect_dead(Server, s, "after Closed");
    h.expect_dead(Client, c, "after Closed");
}

/// Check 5b: Reset: a kernel peer that aborts (`SO_LINGER` 0, then close: a RST)
/// ends the server's connection with `Closed(Reset(_))`, not
/// `PeerFinished`; `recv` may return the error once before.
pub fn peer_reset<P: Pair>(make: impl FnOnce() -> P) {
    const N: usize = 1000;
    let mut h = Harness::new("peer_reset", make());
    let addr = kernel_peer(&mut h, "send a reset");
    let connecting = std::thread::spawn(move || TcpStream::connect_timeout(&addr, CONNECT));
    let (s, connecting) = accept_kernel_peer(&mut h, connecting);
    let mut peer = match connecting.join() {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => h.fail(format!("kernel peer connect to {addr}: {e}")),
        Err(_) => h.fail("the kernel peer's thread panicked"),
    };
    if let Err(e) = peer.write_all(Pattern::get().at(61, 0, N)) {
        h.fail(format!("kernel peer write: {e}"));
    }
    let mut inc = Incoming::new(Server, s, 61, N, MAX_PIECE);
    while !inc.done() {
        let r = h.round(|| format!("the peer's {N} bytes: {} read", inc.got));
        h.no_close(&r, &[(Server, s)]);
        if r.readable(Server, s) {
            inc.read(&mut h, usize::MAX);
        }
    }
    if let Err(e) = socket2::SockRef::from(&peer).set_linger(Some(Duration::ZERO)) {
        h.fail(format!("SO_LINGER 0 on the kernel peer: {e}"));
    }
    drop(peer);
    let mut errors = 0;
    let why = loop {
        if let Some(why) = h.closed(Server, s) {
            break why;
        }
        let r = h.round(|| format!("server: Closed({s}, Reset) after the peer's RST"));
        h.ensure(!r.has(Server, Event::PeerFinished(s)), || {
            format!("PeerFinished({s}) for a peer that reset: a RST is not a FIN")
        });
        if r.readable(Server, s) && h.closed(Server, s).is_none() {
            let mut buf = [0u8; 256];
            match h.t(Server).recv(s, &mut buf) {
                Ok(0) => {}
                Ok(n) => h.fail(format!(
                    "recv({s}) returned {n} bytes after the peer reset; it sent {N}, all read"
                )),
                Err(TransportError::Io { conn, .. }) if conn == s && errors == 0 => errors += 1,
                Err(e) => h.fail(format!("recv({s}) after the reset: {}", chain(&e))),
            }
        }
    };
    h.ensure(matches!(why, CloseReason::Reset(_)), || {
        format!("server: Closed({s}, {why:?}) after the peer's RST; expected Reset")
    });
    h.expect_dead(Server, s, "after Closed");
}

/// Check 6: Half-close: a kernel peer writes, then `shutdown(Write)`; the server
/// reads everything, then gets `PeerFinished`, replies (a megabyte, with
/// backpressure) and closes; the peer reads the whole reply, then EOF.
pub fn half_close<P: Pair>(make: impl FnOnce() -> P) {
    const REQUEST: usize = 200_000;
    let mut h = Harness::new("half_close", make());
    let reply = h.sizes().close;
    let limit = h.sizes().time_limit;
    let addr = kernel_peer(&mut h, "half-close");
    // The peer connects, writes and reads on its own thread: the server
    // is polled meanwhile, and answers while the peer still writes.
    let peer_thread = std::thread::spawn(move || -> Result<Vec<u8>, String> {
        let step =
            |what: &str, r: std::io::Result<()>| r.map_err(|e| format!("kernel peer {what}: {e}"));
        let mut peer = TcpStream::connect_timeout(&addr, CONNECT)
            .map_err(|e| format!("kernel peer connect to {addr}: {e}"))?;
        step("timeouts", peer.set_write_timeout(Some(limit)))?;
        step("timeouts", peer.set_read_timeout(Some(limit)))?;
        step("write", peer.write_all(&Pattern::get().to_vec(71, REQUEST)))?;
        step("shutdown(Write)", peer.shutdown(Shutdown::Write))?;
        let mut all = Vec::new();
        step("read", peer.read_to_end(&mut all).map(drop))?;
        Ok(all)
    });
    let (s, peer_thread) = accept_kernel_peer(&mut h, peer_thread);
    let mut inc = Incoming::new(Server, s, 71, REQUEST, MAX_PIECE);
    let mut stall = Stall::new();
    while !h.finished(Server, s) {
        let r = h.round(|| {
            format!(
                "PeerFinished({s}) after the peer's shutdown(Write); {} of {REQUEST} read",
                inc.got
            )
        });
        h.no_close(&r, &[(Server, s)]);
        for ev in &r.server {
            match *ev {
                Event::Readable(id) if id == s => {
                    inc.read(&mut h, usize::MAX);
                }
                Event::PeerFinished(id) if id == s => h.ensure(inc.done(), || {
                    format!(
                        "PeerFinished({s}) after {} of {REQUEST} bytes: it must follow every byte",
                        inc.got
                    )
                }),
                _ => {}
            }
        }
        stall.check(&h, inc.got, || format!("{} of {REQUEST} read", inc.got));
    }
    let mut out = Outgoing::new(Server, s, 72, reply);
    let mut stall = Stall::new();
    while !out.done() {
        out.pump(&mut h, MAX_PIECE);
        let r = h.round(|| {
            format!(
                "the reply after PeerFinished: {} of {reply} sent{}",
                out.sent,
                if out.blocked {
                    " (blocked, no Writable)"
                } else {
                    ""
                }
            )
        });
        h.no_close(&r, &[(Server, s)]);
        out.observe(&r);
        stall.check(&h, out.sent, || format!("{} of {reply} sent", out.sent));
    }
    h.close(Server, s);
    let why = until_closed(&mut h, Server, s, "after the reply and close()");
    h.ensure(why == CloseReason::Local, || {
        format!("server: Closed({s}, {why:?}) after a graceful close; expected Local")
    });
    let got = match peer_thread.join() {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => h.fail(e),
        Err(_) => h.fail("the kernel peer's thread panicked"),
    };
    h.ensure(got.len() == reply, || {
        format!(
            "the kernel peer read {} bytes before EOF; the reply was {reply}",
            got.len()
        )
    });
    if let Some(at) = Pattern::get().mismatch(72, 0, &got) {
        h.fail(format!(
            "the kernel peer's byte {at} of the reply differs from what was sent"
        ));
    }
}

/// Check 7: Local close: the server replies and closes; the id is refused at
/// once (`UnknownConn`), closing it again does nothing; the reply reaches
/// the client whole before its `PeerFinished`; both ends end with
/// `Closed(Local)`, once; afterwards the ids stay refused and have no
/// peer address.
pub fn local_close<P: Pair>(make: impl FnOnce() -> P) {
    const REPLY: usize = 5000;
    let mut h = Harness::new("local_close", make());
    let (s, c, _) = h.establish();
    transfers(&mut h, &[((Client, c), (Server, s), 81, 1000)]);
    let mut out = Outgoing::new(Server, s, 82, REPLY);
    while !out.done() {
        out.pump(&mut h, MAX_PIECE);
        if out.done() {
            break;
        }
        let r = h.round(|| format!("the reply to be taken: {} of {REPLY}", out.sent));
        h.no_close(&r, &[(Server, s), (Client, c)]);
        out.observe(&r);
    }
    h.close(Server, s);
    h.expect_dead(Server, s, "right after close()");
    // A second close of the same id: nothing (the ledger fails a second
    // Closed).
    h.close(Server, s);
    let mut inc = Incoming::new(Client, c, 82, REPLY, MAX_PIECE);
    let mut stall = Stall::new();
    while h.closed(Server, s).is_none() || h.closed(Client, c).is_none() {
        let (fin, closed) = (h.finished(Client, c), h.closed(Server, s));
        let r = h.round(|| {
            format!(
                "both ends closed after the server's close: client read {} of {REPLY}, PeerFinished({c}) {}, server Closed({s}) {closed:?}",
                inc.got,
                seen(fin),
            )
        });
        for ev in &r.client {
            match *ev {
                Event::Readable(id) if id == c => {
                    inc.read(&mut h, usize::MAX);
                }
                Event::PeerFinished(id) if id == c => {
                    h.ensure(inc.done(), || {
                        format!("client: PeerFinished({c}) after {} of the {REPLY} bytes sent before the close", inc.got)
                    });
                    h.close(Client, c);
                }
                _ => {}
            }
        }
        let steps = usize::from(h.finished(Client, c))
            + usize::from(h.closed(Server, s).is_some())
            + usize::from(h.closed(Client, c).is_some());
        stall.check(&h, inc.got + steps, || "the close exchange stalled".into());
    }
    for (side, id) in [(Server, s), (Client, c)] {
        let why = h.closed(side, id);
        h.ensure(why == Some(CloseReason::Local), || {
            format!("{side}: Closed({id}, {why:?}) after a graceful close; expected Local")
        });
        h.expect_dead(side, id, "after Closed");
        let addr = h.t(side).peer_addr(id);
        h.ensure(addr.is_none(), || {
            format!("{side}: peer_addr({id}) is {addr:?} after Closed; the id is dead")
        });
        // Stale calls that must do nothing (the ledger fails any event).
        h.t(side).pause_recv(id, true);
        h.t(side).close(id);
    }
    for _ in 0..10 {
        h.round(|| "polls after both closed".into());
    }
}

/// Check 8: Stale ids: once a connection is closed and its slot serves a new
/// one, the old id is still refused (`UnknownConn`, no peer address), and
/// `pause_recv` or `close` with it does not touch the new connection.
pub fn stale_ids<P: Pair>(make: impl FnOnce() -> P) {
    /// New connections tried before giving up on a reused slot.
    const ATTEMPTS: usize = 8;
    let mut h = Harness::new("stale_ids", make());
    let (s1, c1, _) = h.establish();
    transfers(&mut h, &[((Client, c1), (Server, s1), 91, 100)]);
    close_both(&mut h, s1, c1);
    let (mut srv_reuse, mut cli_reuse) = (None, None);
    for _ in 0..ATTEMPTS {
        // Let slots whose operations are still completing be freed.
        for _ in 0..QUIET_ROUNDS {
            h.round(|| "polls before a new connection".into());
        }
        let (s, c, _) = h.establish();
        if s.index() == s1.index() && srv_reuse.is_none() {
            srv_reuse = Some((s, c));
        }
        if c.index() == c1.index() && cli_reuse.is_none() {
            cli_reuse = Some((s, c));
        }
        if srv_reuse.is_some() && cli_reuse.is_some() {
            break;
        }
    }
    for (side, old, reuse) in [(Server, s1, srv_reuse), (Client, c1, cli_reuse)] {
        let Some((s2, c2)) = reuse else {
            h.fail(format!(
                "{side}: the slot of {old} was not reused by {ATTEMPTS} new connections; generations cannot be checked"
            ));
        };
        let new = if side == Server { s2 } else { c2 };
        h.ensure(new.generation() != old.generation(), || {
            format!("{side}: {new} reuses the slot of {old} with the same generation")
        });
        h.expect_dead(side, old, &format!("after its slot went to {new}"));
        let addr = h.t(side).peer_addr(old);
        h.ensure(addr.is_none(), || {
            format!("{side}: peer_addr({old}) is {addr:?}: the stale id reaches {new}")
        });
        // Neither may reach the new connection.
        h.t(side).pause_recv(old, true);
        h.t(side).close(old);
        // The new connection still works both ways, Readable included.
        transfers(
            &mut h,
            &[
                ((Client, c2), (Server, s2), 92, 3000),
                ((Server, s2), (Client, c2), 93, 3000),
            ],
        );
    }
}

/// How long a kernel peer's connect may take.
const CONNECT: Duration = Duration::from_secs(5);

/// The pair's kernel-peer address, or the check fails.
#[track_caller]
fn kernel_peer<P: Pair>(h: &mut Harness<P>, to: &str) -> SocketAddr {
    match h.pair().kernel_peer() {
        Some(a) => a,
        None => h.fail(format!(
            "the pair has no kernel peer (Pair::kernel_peer) to {to}"
        )),
    }
}

/// Polls until the server accepts the kernel peer's connection; fails
/// with the thread's result if it ends first (its connect failed).
#[track_caller]
fn accept_kernel_peer<P: Pair, T: std::fmt::Debug>(
    h: &mut Harness<P>,
    peer: JoinHandle<T>,
) -> (ConnId, JoinHandle<T>) {
    let mut peer_done = None;
    loop {
        let r = h.round(|| "Accepted from the kernel peer".into());
        if let Some(s) = r.server.iter().find_map(|e| match *e {
            Event::Accepted { conn, .. } => Some(conn),
            _ => None,
        }) {
            return (s, peer);
        }
        if peer.is_finished() {
            // A grace period for an Accepted still on its way.
            let since = *peer_done.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > Duration::from_secs(1) {
                let why = match peer.join() {
                    Ok(r) => format!("{r:?}"),
                    Err(_) => "it panicked".into(),
                };
                h.fail(format!(
                    "the kernel peer's thread ended before the server accepted it: {why}"
                ));
            }
        }
    }
}
