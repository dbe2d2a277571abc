//! What the checks share: moving verified streams between the ends,
//! waiting for closes, and the stall and quiet bounds.

use std::time::{Duration, Instant};

use warpwire_transport::{CloseReason, ConnId};

use super::stream::MAX_PIECE;
use super::{Harness, Incoming, Outgoing, Pair, Side};

use Side::{Client, Server};

/// How long a transfer may move no byte at all before the check fails
/// (well beyond any retransmission a loss-free path needs).
pub(super) const STALL: Duration = Duration::from_secs(5);
/// Rounds a "nothing is reported" phase lasts at least...
pub(super) const QUIET_ROUNDS: u32 = 20;
/// ...and the wall time it lasts at least, so data in flight has landed.
pub(super) const QUIET_TIME: Duration = Duration::from_millis(50);

/// Fails a check when the bytes it moved stop growing for [`STALL`].
pub(super) struct Stall {
    mark: usize,
    since: Instant,
}

impl Stall {
    pub(super) fn new() -> Self {
        Self {
            mark: 0,
            since: Instant::now(),
        }
    }

    #[track_caller]
    pub(super) fn check<P: Pair>(
        &mut self,
        h: &Harness<P>,
        moved: usize,
        what: impl FnOnce() -> String,
    ) {
        if moved != self.mark {
            self.mark = moved;
            self.since = Instant::now();
        } else if self.since.elapsed() > STALL {
            h.fail(format!("no byte moved for {STALL:?}: {}", what()));
        }
    }
}

/// One stream of a [`transfers`] run: from one end to the other.
pub(super) type Leg = ((Side, ConnId), (Side, ConnId), u64, usize);

/// Moves the legs' streams concurrently, each verified on arrival; reads
/// only on `Readable`, sends again only after `Writable`.
#[track_caller]
pub(super) fn transfers<P: Pair>(h: &mut Harness<P>, legs: &[Leg]) {
    let mut outs: Vec<Outgoing> = legs
        .iter()
        .map(|&((side, conn), _, stream, len)| Outgoing::new(side, conn, stream, len))
        .collect();
    let mut incs: Vec<Incoming> = legs
        .iter()
        .map(|&(_, (side, conn), stream, len)| Incoming::new(side, conn, stream, len, MAX_PIECE))
        .collect();
    let ends: Vec<(Side, ConnId)> = legs.iter().flat_map(|l| [l.0, l.1]).collect();
    let mut stall = Stall::new();
    while !incs.iter().all(Incoming::done) {
        for o in &mut outs {
            o.pump(h, MAX_PIECE);
        }
        let r = h.round(|| {
            let state: Vec<String> = legs
                .iter()
                .zip(&outs)
                .zip(&incs)
                .map(|((l, o), i)| {
                    format!(
                        "{} {} -> {} {}: {} of {} sent{}, {} received",
                        l.0.0,
                        l.0.1,
                        l.1.0,
                        l.1.1,
                        o.sent,
                        l.3,
                        if o.blocked { " (blocked)" } else { "" },
                        i.got
                    )
                })
                .collect();
            format!("transfers: {}", state.join("; "))
        });
        h.no_close(&r, &ends);
        for o in &mut outs {
            o.observe(&r);
        }
        for (i, &(_, (side, conn), _, _)) in incs.iter_mut().zip(legs) {
            if r.readable(side, conn) {
                i.read(h, usize::MAX);
            }
        }
        let moved =
            incs.iter().map(|i| i.got).sum::<usize>() + outs.iter().map(|o| o.sent).sum::<usize>();
        stall.check(h, moved, || "transfers stalled".into());
    }
}

/// Rounds until `side` reports `conn` closed; any other event on it is
/// left to the ledger. Returns the reason.
#[track_caller]
pub(super) fn until_closed<P: Pair>(
    h: &mut Harness<P>,
    side: Side,
    conn: ConnId,
    why: &str,
) -> CloseReason {
    loop {
        if let Some(reason) = h.closed(side, conn) {
            return reason;
        }
        h.round(|| format!("{side}: Closed({conn}) {why}"));
    }
}

/// Closes `c` from the client, answers the server's `PeerFinished(s)` with
/// its own close, and expects `Closed(Local)` on both ends.
#[track_caller]
pub(super) fn close_both<P: Pair>(h: &mut Harness<P>, s: ConnId, c: ConnId) {
    h.close(Client, c);
    let mut answered = false;
    loop {
        if h.finished(Server, s) && !answered {
            answered = true;
            h.close(Server, s);
        }
        let (a, b) = (h.closed(Server, s), h.closed(Client, c));
        if let (Some(a), Some(b)) = (a, b) {
            h.ensure(a == CloseReason::Local && b == CloseReason::Local, || {
                format!("graceful close: server Closed({s}, {a:?}), client Closed({c}, {b:?}); both should be Local")
            });
            return;
        }
        let r = h.round(|| {
            format!(
                "a graceful close: server PeerFinished({s}) {}, server Closed {a:?}, client Closed({c}) {b:?}",
                seen(answered)
            )
        });
        if r.readable(Server, s) {
            expect_eof(h, Server, s);
        }
    }
}

/// A `recv` on a connection whose peer sends nothing more: it returns 0
/// (and finds the peer's FIN if it came).
#[track_caller]
pub(super) fn expect_eof<P: Pair>(h: &mut Harness<P>, side: Side, conn: ConnId) {
    let mut buf = [0u8; 64];
    let n = h.recv(side, conn, &mut buf);
    h.ensure(n == 0, || {
        format!("{side}: recv({conn}) returned {n} bytes the peer never sent")
    });
}

pub(super) fn seen(b: bool) -> &'static str {
    if b { "seen" } else { "not seen" }
}
