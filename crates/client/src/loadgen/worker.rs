//! One load-generator worker: a transport, its share of the connections,
//! and the per-connection pipelines.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use warpwire_transport::{ConnId, Event, Events, Transport, TransportError};

use super::{
    LoadConfig, LoadProtocol, MAX_SLEEP, READS_PER_POLL, Shared, WorkerResult, new_histogram,
};
use crate::ClientError;
use crate::protocol::{ClientProtocol, Incoming, ReplyTo};

/// Longest gap between two looks at the connections that counts in full
/// towards silence and the drain deadline (see [`Watch`]). A worker looks
/// at least every [`MAX_SLEEP`] plus its own work, far less than this.
const MAX_WATCH_STEP: Duration = Duration::from_millis(100);

/// The worker's clock for "no reply for `grace`" and the drain deadline:
/// the time it spent watching its connections.
///
/// Wall-clock time between two looks counts in full up to
/// [`MAX_WATCH_STEP`]; a longer gap means this thread was not running (a
/// stopped process group, a VM starved of CPU, where the guest clock runs
/// on while no vCPU does), and the server most likely was not either. Such
/// a gap counts as [`MAX_WATCH_STEP`] only, so the server gets `grace` of
/// the client's running time to answer, rather than losing every request
/// in flight on the first look after the freeze, before it ran again.
#[derive(Debug, Clone, Copy)]
struct Watch {
    last: Instant,
    watched: Duration,
}

impl Watch {
    fn new(now: Instant) -> Self {
        Self {
            last: now,
            watched: Duration::ZERO,
        }
    }

    /// A look at `now` (taken just before polling); the watched time so far.
    fn look(&mut self, now: Instant) -> Duration {
        self.watched += now.saturating_duration_since(self.last).min(MAX_WATCH_STEP);
        self.last = self.last.max(now);
        self.watched
    }

    /// The watched time as of the last look.
    fn watched(&self) -> Duration {
        self.watched
    }
}

/// One request in flight.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Send time (scheduled send time when paced).
    sent: Instant,
    /// Sent during the measured phase.
    measured: bool,
}

/// One connection of a worker.
struct Conn<P: ClientProtocol> {
    id: ConnId,
    connected: bool,
    closed: bool,
    /// The protocol's parser state.
    proto: P::Conn,
    out: BytesMut,
    /// In-flight requests by `id % depth` (the id is the request_id on the
    /// wire for warpwire, the sequence number in the content for echo).
    ring: Vec<Option<Slot>>,
    /// Next request_id to send (ids start at 1).
    next_id: u64,
    /// Lowest id that may still be outstanding: `next_id - low <= depth`
    /// keeps every outstanding id on its own ring slot, even if replies
    /// came out of order.
    low: u64,
    outstanding: u64,
    /// Measured requests this connection may still send.
    quota: Option<u64>,
    /// Next scheduled send when paced.
    next_send: Instant,
    /// In this iteration's list of connections to fill and flush.
    touched: bool,
}

/// What the run's end conditions count of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnState {
    outstanding: u64,
    closed: bool,
    /// Closed, or its measured quota used up: it sends no more.
    finished: bool,
}

/// Sums of [`ConnState`] over a worker's connections, kept as they change.
#[derive(Debug, Default)]
struct Counts {
    outstanding: u64,
    closed: usize,
    finished: usize,
}

impl Counts {
    fn add(&mut self, s: ConnState, sign: i64) {
        let n = |b: bool| usize::from(b);
        if sign > 0 {
            self.outstanding += s.outstanding;
            self.closed += n(s.closed);
            self.finished += n(s.finished);
        } else {
            self.outstanding -= s.outstanding;
            self.closed -= n(s.closed);
            self.finished -= n(s.finished);
        }
    }

    fn moved(&mut self, before: ConnState, after: ConnState) {
        if before != after {
            self.add(before, -1);
            self.add(after, 1);
        }
    }
}

impl<P: ClientProtocol> Conn<P> {
    fn depth(&self) -> u64 {
        self.ring.len() as u64
    }

    fn slot(&mut self, id: u64) -> &mut Option<Slot> {
        let i = (id % self.depth()) as usize;
        // `i < ring.len()` by construction of the modulus.
        &mut self.ring[i]
    }

    fn state(&self) -> ConnState {
        ConnState {
            outstanding: self.outstanding,
            closed: self.closed,
            finished: self.closed || self.quota == Some(0),
        }
    }

    fn can_send(&self) -> bool {
        self.connected && !self.closed && self.next_id - self.low < self.depth()
    }
}

/// Per-worker counters.
struct Tally {
    hist: Histogram<u64>,
    messages: u64,
    errors: u64,
    /// Requests that never got a reply (included in `errors`).
    lost: u64,
    last_reply: Option<Instant>,
    /// The worker's watched time (silence and drain deadlines).
    watch: Watch,
    /// Watched time of the last look that brought bytes (stall detection).
    last_activity: Duration,
}

impl Tally {
    /// The connection is gone: what it had in flight is lost.
    fn lose<P: ClientProtocol>(&mut self, c: &mut Conn<P>) {
        c.closed = true;
        self.lost += c.outstanding;
        self.errors += c.outstanding;
        c.outstanding = 0;
    }
}

/// What every request of the run is, and how its replies are checked.
struct Run<'a, P: ClientProtocol> {
    protocol: &'a P,
    request: &'a P::Request,
    measure_start: Instant,
}

pub(super) fn run<P, T, F>(
    protocol: &P,
    factory: &F,
    cfg: &LoadConfig,
    request: &P::Request,
    indices: &[usize],
    shared: &Shared,
) -> Result<WorkerResult, ClientError>
where
    P: LoadProtocol,
    T: Transport,
    F: Fn() -> Result<T, TransportError>,
{
    let (mut transport, mut conns, ramp) = match setup(protocol, factory, cfg, indices) {
        Ok(s) => s,
        Err(e) => {
            shared.abort.store(true, Ordering::SeqCst);
            return Err(e);
        }
    };
    if !shared.all_connected() {
        // Another worker failed; its error is the one reported.
        return Err(ClientError::Closed);
    }
    let start = *shared.start.get_or_init(Instant::now);
    let measure_start = start + cfg.warmup;
    let end = cfg.duration.map(|d| measure_start + d);
    // Watched time at which the measured phase was seen to end: the drain
    // gets `grace` of watched time from there.
    let mut drain_from: Option<Duration> = None;
    let interval = cfg
        .rate
        .map(|r| Duration::from_secs_f64((cfg.connections as f64 / r).min(3600.0)));
    for (c, &global) in conns.iter_mut().zip(indices) {
        // Stagger paced connections evenly over one interval.
        c.next_send = start
            + interval.map_or(Duration::ZERO, |iv| {
                iv.mul_f64(global as f64 / cfg.connections as f64)
            });
        c.quota = cfg.count.map(|n| {
            let n_conns = cfg.connections as u64;
            n / n_conns + u64::from((global as u64) < n % n_conns)
        });
    }
    let run = Run {
        protocol,
        request,
        measure_start,
    };
    let mut tally = Tally {
        hist: new_histogram()?,
        messages: 0,
        errors: 0,
        lost: 0,
        last_reply: None,
        watch: Watch::new(Instant::now()),
        last_activity: Duration::ZERO,
    };
    // Connection position by the id's slot index (dense, per the Transport
    // contract): O(1) event dispatch however many connections a worker has.
    let mut by_slot: Vec<Option<usize>> = Vec::new();
    for (i, c) in conns.iter().enumerate() {
        let slot = c.id.index();
        if by_slot.len() <= slot {
            by_slot.resize(slot + 1, None);
        }
        by_slot[slot] = Some(i);
    }
    let mut events = Events::with_capacity(256);
    let mut stopping = false;
    let mut published = (0u64, 0u64);
    // Work per iteration follows the connections that had something happen
    // (a reply, room to write), not the connection count: 50,000 mostly
    // waiting connections cost nothing per look. Paced runs still visit
    // every connection, since their clock decides.
    let mut counts = Counts::default();
    for c in &conns {
        counts.add(c.state(), 1);
    }
    let mut touched: Vec<usize> = (0..conns.len()).collect();
    for c in conns.iter_mut() {
        c.touched = true;
    }
    let mut last_sweep = Instant::now();
    loop {
        let now = Instant::now();
        let watched = tally.watch.look(now);
        transport
            .poll(now, &mut events)
            .map_err(ClientError::Transport)?;
        for ev in events.iter() {
            let Some(i) = event_conn(ev)
                .and_then(|id| by_slot.get(id.index()).copied().flatten())
                .filter(|&i| conns.get(i).is_some_and(|c| Some(c.id) == event_conn(ev)))
            else {
                continue;
            };
            let c = &mut conns[i];
            let before = c.state();
            match *ev {
                Event::Readable(_) => read(&mut transport, c, &run, &mut tally),
                // The server's FIN: close ours; the Closed that follows
                // counts the connection lost.
                Event::PeerFinished(id) => transport.close(id),
                Event::Closed(..) => tally.lose(c),
                _ => {}
            }
            counts.moved(before, c.state());
            if !c.touched {
                c.touched = true;
                touched.push(i);
            }
        }
        let now = Instant::now();
        if drain_from.is_none() && end.is_some_and(|e| now >= e) {
            drain_from = Some(watched);
        }
        // A closed connection sends no more: its unsent quota must not keep
        // the run going (in count mode nothing else would end it).
        if !stopping && (drain_from.is_some() || counts.finished == conns.len()) {
            stopping = true;
        }
        if interval.is_some() && !stopping {
            for (i, c) in conns.iter_mut().enumerate() {
                if c.can_send() && c.next_send <= now && !c.touched {
                    c.touched = true;
                    touched.push(i);
                }
            }
        }
        // A short send is retried on Writable; look at every connection
        // with output left now and then all the same.
        if now.duration_since(last_sweep) >= Duration::from_millis(100) {
            last_sweep = now;
            for (i, c) in conns.iter_mut().enumerate() {
                if !c.out.is_empty() && !c.touched {
                    c.touched = true;
                    touched.push(i);
                }
            }
        }
        for i in touched.drain(..) {
            let c = &mut conns[i];
            c.touched = false;
            let before = c.state();
            if !stopping {
                fill(c, &run, interval, now);
            }
            if !c.out.is_empty() && !c.closed {
                flush(&mut transport, c, &mut tally);
            }
            counts.moved(before, c.state());
        }
        publish(shared, &tally, &mut published);
        let now = Instant::now();
        let all_closed = counts.closed == conns.len();
        let drained = stopping && counts.outstanding == 0;
        // Both as of this iteration's look: time spent after the poll (or
        // frozen since) must not count against replies not yet looked for.
        let hard = drain_from.is_some_and(|d| watched.saturating_sub(d) >= cfg.grace);
        let stalled =
            counts.outstanding > 0 && watched.saturating_sub(tally.last_activity) >= cfg.grace;
        if drained || all_closed || hard || stalled {
            break;
        }
        if !cfg.busy_poll {
            let mut wake = now + MAX_SLEEP;
            if let (Some(_), false) = (interval, stopping) {
                for c in conns.iter().filter(|c| c.can_send()) {
                    wake = wake.min(c.next_send);
                }
            }
            if let Some(e) = end.filter(|_| !stopping) {
                wake = wake.min(e);
            }
            let timeout = wake.saturating_duration_since(now);
            transport
                .wait(Some(timeout))
                .map_err(ClientError::Transport)?;
        }
    }
    for c in conns.iter_mut().filter(|c| !c.closed) {
        transport.close(c.id);
        tally.lose(c);
    }
    publish(shared, &tally, &mut published);
    Ok(WorkerResult {
        hist: tally.hist,
        messages: tally.messages,
        errors: tally.errors,
        lost: tally.lost,
        last_reply: tally.last_reply,
        finished: Instant::now(),
        ramp,
    })
}

fn event_conn(ev: &Event) -> Option<ConnId> {
    match *ev {
        Event::Connected(c)
        | Event::Readable(c)
        | Event::Writable(c)
        | Event::PeerFinished(c)
        | Event::Closed(c, _) => Some(c),
        Event::Accepted { .. } => None,
    }
}

/// Adds this worker's new counts to the shared counters.
fn publish(shared: &Shared, tally: &Tally, published: &mut (u64, u64)) {
    if tally.messages > published.0 {
        shared
            .messages
            .fetch_add(tally.messages - published.0, Ordering::Relaxed);
    }
    if tally.errors > published.1 {
        shared
            .errors
            .fetch_add(tally.errors - published.1, Ordering::Relaxed);
    }
    *published = (tally.messages, tally.errors);
}

/// Handshakes one worker keeps in flight while it opens its connections:
/// enough to fill a round trip many times over, few enough that a server's
/// accept queue (Linux: `somaxconn`, 4096) or SYN queue never overflows,
/// which would cost a one-second SYN retransmission per dropped SYN.
pub(crate) const CONNECT_WINDOW: usize = 256;

/// Builds the transport and connects every connection of this worker,
/// at most [`CONNECT_WINDOW`] handshakes at a time, each within
/// `connect_timeout` of its own start. Returns how long that took.
fn setup<P, T, F>(
    protocol: &P,
    factory: &F,
    cfg: &LoadConfig,
    indices: &[usize],
) -> Result<(T, Vec<Conn<P>>, Duration), ClientError>
where
    P: ClientProtocol,
    T: Transport,
    F: Fn() -> Result<T, TransportError>,
{
    let mut t = factory().map_err(ClientError::Transport)?;
    let begin = Instant::now();
    let depth = cfg.pipeline_depth;
    let wanted = indices.len();
    let mut conns: Vec<Conn<P>> = Vec::with_capacity(wanted);
    let mut by_slot: Vec<Option<usize>> = Vec::new();
    // Handshakes in flight, oldest first (entries already up are skipped).
    let mut started: VecDeque<(usize, Instant)> = VecDeque::new();
    let (mut up, mut in_flight) = (0usize, 0usize);
    let mut events = Events::with_capacity(256);
    while up < wanted {
        let now = Instant::now();
        while conns.len() < wanted && in_flight < CONNECT_WINDOW {
            let id = t.connect(cfg.addr, now).map_err(ClientError::Transport)?;
            let i = conns.len();
            if by_slot.len() <= id.index() {
                by_slot.resize(id.index() + 1, None);
            }
            by_slot[id.index()] = Some(i);
            conns.push(Conn {
                id,
                connected: false,
                closed: false,
                proto: protocol.open(),
                out: BytesMut::with_capacity(depth * (cfg.effective_body_size() + 24)),
                ring: vec![None; depth],
                next_id: 1,
                low: 1,
                outstanding: 0,
                quota: None,
                next_send: now,
                touched: false,
            });
            started.push_back((i, now));
            in_flight += 1;
        }
        while let Some(&(i, t0)) = started.front() {
            if conns[i].connected {
                started.pop_front();
                continue;
            }
            if now.saturating_duration_since(t0) >= cfg.connect_timeout {
                return Err(ClientError::ConnectTimeout {
                    addr: cfg.addr,
                    established: up,
                    wanted,
                    after: cfg.connect_timeout,
                });
            }
            break;
        }
        if events.is_empty() {
            let wait = started.front().map_or(MAX_SLEEP, |&(_, t0)| {
                (t0 + cfg.connect_timeout).saturating_duration_since(now)
            });
            t.wait(Some(wait.min(MAX_SLEEP)))
                .map_err(ClientError::Transport)?;
        }
        t.poll(Instant::now(), &mut events)
            .map_err(ClientError::Transport)?;
        for ev in events.iter() {
            let (Event::Connected(id) | Event::Closed(id, _)) = *ev else {
                continue;
            };
            let Some(i) = by_slot.get(id.index()).copied().flatten() else {
                continue;
            };
            if conns[i].id != id {
                continue;
            }
            match *ev {
                Event::Connected(_) if !conns[i].connected => {
                    conns[i].connected = true;
                    up += 1;
                    in_flight -= 1;
                }
                Event::Closed(_, reason) => {
                    return Err(ClientError::ConnectFailed {
                        addr: cfg.addr,
                        reason,
                    });
                }
                _ => {}
            }
        }
    }
    Ok((t, conns, begin.elapsed()))
}

/// Tops the connection's pipeline up to its depth (within quota and pace).
fn fill<P: ClientProtocol>(
    c: &mut Conn<P>,
    run: &Run<'_, P>,
    interval: Option<Duration>,
    now: Instant,
) {
    while c.can_send() {
        let sent = match interval {
            Some(iv) => {
                if c.next_send > now {
                    return;
                }
                let t = c.next_send;
                c.next_send += iv;
                t
            }
            None => now,
        };
        let measured = sent >= run.measure_start;
        if measured && c.quota == Some(0) {
            return;
        }
        let id = c.next_id;
        // The request was checked by `load_request` (warpwire: body within
        // u32, no metadata; echo and http: size within the limit), so
        // encoding cannot fail; skip the request if it somehow does rather
        // than panic (and keep the quota: nothing was sent).
        if run
            .protocol
            .encode(&mut c.proto, id, run.request, &mut c.out)
            .is_err()
        {
            return;
        }
        if measured && let Some(q) = c.quota.as_mut() {
            *q -= 1;
        }
        c.next_id += 1;
        *c.slot(id) = Some(Slot { sent, measured });
        c.outstanding += 1;
    }
}

fn flush<P: ClientProtocol, T: Transport>(t: &mut T, c: &mut Conn<P>, tally: &mut Tally) {
    use bytes::Buf;
    while !c.out.is_empty() {
        match t.send(c.id, &c.out) {
            Ok(0) => return,
            Ok(n) => c.out.advance(n),
            Err(_) => {
                tally.lose(c);
                return;
            }
        }
    }
}

fn read<P: ClientProtocol, T: Transport>(
    t: &mut T,
    c: &mut Conn<P>,
    run: &Run<'_, P>,
    tally: &mut Tally,
) {
    for _ in 0..READS_PER_POLL {
        match run.protocol.receive(&mut c.proto, t, c.id) {
            None | Some(Ok(0)) => return,
            Some(Ok(_)) => {}
            Some(Err(_)) => {
                tally.lose(c);
                return;
            }
        }
        let now = Instant::now();
        tally.last_activity = tally.watch.watched();
        loop {
            match run.protocol.decode(&mut c.proto) {
                Ok(Some(m)) => on_reply(c, m, run, now, tally),
                Ok(None) => break,
                Err(_) => {
                    // The stream cannot be resynchronised: give the
                    // connection up.
                    t.close(c.id);
                    tally.errors += 1;
                    tally.lose(c);
                    return;
                }
            }
        }
    }
}

fn on_reply<P: ClientProtocol>(
    c: &mut Conn<P>,
    m: Incoming<P::Reply>,
    run: &Run<'_, P>,
    now: Instant,
    tally: &mut Tally,
) {
    let (id, reply) = match m {
        // Server-initiated (a relayed BROADCAST, an IDLE_TIMEOUT notice):
        // not a reply to us.
        Incoming::ServerInitiated(_) => return,
        Incoming::Reply(ReplyTo::Id(id), r) => (id, r),
        // In order: replies free slots in order, so the oldest in flight
        // is `low` (nothing in flight: `low == next_id`, refused below).
        Incoming::Reply(ReplyTo::Oldest, r) => (c.low, r),
    };
    if id < c.low || id >= c.next_id {
        tally.errors += 1;
        return;
    }
    let Some(slot) = c.slot(id).take() else {
        // Already answered: a duplicate reply.
        tally.errors += 1;
        return;
    };
    c.outstanding -= 1;
    while c.low < c.next_id && c.slot(c.low).is_none() {
        c.low += 1;
    }
    if run.protocol.check(id, run.request, &reply).is_err() {
        tally.errors += 1;
        return;
    }
    if slot.measured && slot.sent >= run.measure_start {
        tally.messages += 1;
        tally.last_reply = Some(now);
        let ns =
            u64::try_from(now.saturating_duration_since(slot.sent).as_nanos()).unwrap_or(u64::MAX);
        tally.hist.saturating_record(ns.max(1));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::Request;
    use crate::loadgen::make_body;
    use crate::protocol::Warpwire;
    use bytes::Bytes;
    use warpwire_frame::{Decoder, Frame, MessageType};

    fn conn(depth: usize) -> Conn<Warpwire> {
        Conn {
            id: ConnId::new(0, 0),
            connected: true,
            closed: false,
            proto: Decoder::default(),
            out: BytesMut::new(),
            ring: vec![None; depth],
            next_id: 1,
            low: 1,
            outstanding: 0,
            quota: None,
            next_send: Instant::now(),
            touched: false,
        }
    }

    fn tally() -> Tally {
        Tally {
            hist: new_histogram().unwrap(),
            messages: 0,
            errors: 0,
            lost: 0,
            last_reply: None,
            watch: Watch::new(Instant::now()),
            last_activity: Duration::ZERO,
        }
    }

    /// `fill` with an ECHO of `body` as the run's request.
    fn fill_at(
        c: &mut Conn<Warpwire>,
        body: &Bytes,
        interval: Option<Duration>,
        measure_start: Instant,
        now: Instant,
    ) {
        let request = Request::new(MessageType::ECHO, body.clone());
        let run = Run {
            protocol: &Warpwire::default(),
            request: &request,
            measure_start,
        };
        fill(c, &run, interval, now);
    }

    /// `on_reply` with `f` as decoded, the run's request an ECHO of `body`.
    fn reply(
        c: &mut Conn<Warpwire>,
        body: &Bytes,
        f: Frame,
        measure_start: Instant,
        now: Instant,
        tally: &mut Tally,
    ) {
        let request = Request::new(MessageType::ECHO, body.clone());
        let run = Run {
            protocol: &Warpwire::default(),
            request: &request,
            measure_start,
        };
        on_reply(c, Warpwire::classify(f), &run, now, tally);
    }

    fn sent_frames(c: &mut Conn<Warpwire>) -> Vec<Frame> {
        let mut d = Decoder::default();
        d.feed(&c.out);
        c.out.clear();
        std::iter::from_fn(|| d.decode().unwrap()).collect()
    }

    #[test]
    fn pipeline_fills_to_depth_and_replies_free_slots() {
        let mut c = conn(4);
        let body = make_body(16);
        let t0 = Instant::now();
        fill_at(&mut c, &body, None, t0, t0);
        let frames = sent_frames(&mut c);
        assert_eq!(
            frames.iter().map(|f| f.request_id).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert!(!c.can_send());
        let mut t = tally();
        // Out of order: 2 first. Slot 1 is still outstanding, so nothing opens.
        reply(
            &mut c,
            &body,
            Frame::response(MessageType::ECHO_REPLY, 2, body.clone()),
            t0,
            Instant::now(),
            &mut t,
        );
        assert_eq!((c.low, c.outstanding), (1, 3));
        assert!(!c.can_send());
        reply(
            &mut c,
            &body,
            Frame::response(MessageType::ECHO_REPLY, 1, body.clone()),
            t0,
            Instant::now(),
            &mut t,
        );
        assert_eq!((c.low, c.outstanding), (3, 2));
        fill_at(&mut c, &body, None, t0, Instant::now());
        let ids: Vec<u64> = sent_frames(&mut c).iter().map(|f| f.request_id).collect();
        assert_eq!(ids, [5, 6]);
        assert_eq!((t.messages, t.errors), (2, 0));
    }

    #[test]
    fn bad_replies_are_errors() {
        let mut c = conn(8);
        let body = make_body(16);
        let t0 = Instant::now();
        fill_at(&mut c, &body, None, t0, t0);
        let mut t = tally();
        let now = Instant::now();
        // Wrong body length.
        reply(
            &mut c,
            &body,
            Frame::response(MessageType::ECHO_REPLY, 1, make_body(15)),
            t0,
            now,
            &mut t,
        );
        // Wrong type.
        reply(
            &mut c,
            &body,
            Frame::response(MessageType::PONG, 2, body.clone()),
            t0,
            now,
            &mut t,
        );
        // No RESPONSE flag.
        reply(
            &mut c,
            &body,
            Frame::new(MessageType::ECHO_REPLY, 3, body.clone()),
            t0,
            now,
            &mut t,
        );
        // Unknown id, then a duplicate.
        reply(
            &mut c,
            &body,
            Frame::response(MessageType::ECHO_REPLY, 99, body.clone()),
            t0,
            now,
            &mut t,
        );
        reply(
            &mut c,
            &body,
            Frame::response(MessageType::ECHO_REPLY, 4, body.clone()),
            t0,
            now,
            &mut t,
        );
        reply(
            &mut c,
            &body,
            Frame::response(MessageType::ECHO_REPLY, 4, body.clone()),
            t0,
            now,
            &mut t,
        );
        // Server-initiated frames are ignored.
        reply(
            &mut c,
            &body,
            Frame::new(MessageType::BROADCAST, 0, body.clone()),
            t0,
            now,
            &mut t,
        );
        assert_eq!(t.errors, 5);
        assert_eq!(t.messages, 1);
        assert_eq!(c.outstanding, 4);
    }

    #[test]
    fn quota_and_pacing() {
        let mut c = conn(100);
        c.quota = Some(3);
        let body = make_body(4);
        let t0 = Instant::now();
        fill_at(&mut c, &body, None, t0, t0);
        assert_eq!(sent_frames(&mut c).len(), 3);
        assert_eq!(c.quota, Some(0));

        let mut c = conn(100);
        c.next_send = t0;
        let iv = Duration::from_millis(10);
        // 25 ms after the schedule began: sends at 0, 10 and 20 ms are due.
        fill_at(&mut c, &body, Some(iv), t0, t0 + Duration::from_millis(25));
        assert_eq!(sent_frames(&mut c).len(), 3);
        assert_eq!(c.next_send, t0 + Duration::from_millis(30));
        assert_eq!(
            c.ring[1].unwrap().sent,
            t0,
            "latency counts from the scheduled time"
        );
    }

    /// An echo server inside a transport, for runs whose timing a test
    /// controls: requests sent before a poll are answered by that poll.
    /// One `wait` (the `freeze_at`-th) stands for the whole machine not
    /// running for `freeze`, client and server alike (a stopped process
    /// group, a VM starved of CPU): the wall clock jumps, and the server
    /// resumes a poll later than the client.
    struct FrozenEcho {
        conns: Vec<MockConn>,
        waits: usize,
        freeze_at: usize,
        freeze: Duration,
        server_behind: bool,
    }

    struct MockConn {
        announced: bool,
        requests: Decoder,
        replies: BytesMut,
    }

    impl FrozenEcho {
        fn new(freeze_at: usize, freeze: Duration) -> Self {
            Self {
                conns: Vec::new(),
                waits: 0,
                freeze_at,
                freeze,
                server_behind: false,
            }
        }

        fn conn(&mut self, id: ConnId) -> Result<&mut MockConn, TransportError> {
            self.conns
                .get_mut(id.index())
                .ok_or(TransportError::UnknownConn(id))
        }
    }

    impl Transport for FrozenEcho {
        fn capabilities(&self) -> warpwire_transport::Capabilities {
            warpwire_transport::Capabilities {
                name: "frozen-echo",
                latency: warpwire_transport::LatencyClass::Kernel,
                kernel_bypass: false,
                busy_poll: false,
                vectored_send: false,
                max_segment: 64 * 1024,
            }
        }

        fn listen(
            &mut self,
            _addr: std::net::SocketAddr,
        ) -> Result<std::net::SocketAddr, TransportError> {
            unreachable!("client only")
        }

        fn stop_listening(&mut self) {}

        fn connect(
            &mut self,
            _addr: std::net::SocketAddr,
            _now: Instant,
        ) -> Result<ConnId, TransportError> {
            self.conns.push(MockConn {
                announced: false,
                requests: Decoder::default(),
                replies: BytesMut::new(),
            });
            Ok(ConnId::new(self.conns.len() as u32 - 1, 0))
        }

        fn poll(&mut self, _now: Instant, events: &mut Events) -> Result<(), TransportError> {
            events.clear();
            let serve = !std::mem::take(&mut self.server_behind);
            for (i, c) in self.conns.iter_mut().enumerate() {
                let id = ConnId::new(i as u32, 0);
                if !c.announced {
                    c.announced = true;
                    events.push(Event::Connected(id));
                }
                while serve && let Some(f) = c.requests.decode().unwrap() {
                    let reply = Frame::response(MessageType::ECHO_REPLY, f.request_id, f.body);
                    reply.as_ref().encode(&mut c.replies).unwrap();
                }
                if !c.replies.is_empty() {
                    events.push(Event::Readable(id));
                }
            }
            Ok(())
        }

        fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, TransportError> {
            let c = self.conn(conn)?;
            let n = buf.len().min(c.replies.len());
            buf[..n].copy_from_slice(&c.replies.split_to(n));
            Ok(n)
        }

        fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, TransportError> {
            let c = self.conn(conn)?;
            assert_eq!(c.requests.feed(data), data.len());
            Ok(data.len())
        }

        fn pause_recv(&mut self, _conn: ConnId, _paused: bool) {}

        fn close(&mut self, _conn: ConnId) {}

        fn peer_addr(&self, _conn: ConnId) -> Option<std::net::SocketAddr> {
            None
        }

        fn wait(&mut self, _timeout: Option<Duration>) -> Result<(), TransportError> {
            self.waits += 1;
            if self.waits == self.freeze_at {
                std::thread::sleep(self.freeze);
                self.server_behind = true;
            }
            Ok(())
        }

        fn waker(&self) -> Result<std::sync::Arc<dyn warpwire_transport::Wake>, TransportError> {
            unreachable!("not used by the load generator")
        }
    }

    #[test]
    fn watched_time_counts_looks_in_full_and_freezes_as_one_step() {
        let t0 = Instant::now();
        let mut w = Watch::new(t0);
        // A silent server watched every 5 ms: silence accrues in real time.
        let mut t = t0;
        for _ in 0..1000 {
            t += MAX_SLEEP;
            w.look(t);
        }
        assert_eq!(w.watched(), Duration::from_secs(5));
        // Six seconds with nothing running count as one step.
        t += Duration::from_secs(6);
        assert_eq!(w.look(t), Duration::from_secs(5) + MAX_WATCH_STEP);
        // A clock that does not advance adds nothing.
        assert_eq!(w.look(t), w.watched());
        assert_eq!(
            w.look(t - MAX_SLEEP),
            Duration::from_secs(5) + MAX_WATCH_STEP
        );
    }

    /// Regression: with 2 connections x depth 32 (ECHO, count mode), a
    /// freeze of client and server together longer than `grace` ended the
    /// run on the client's first look after it, before the server had run
    /// again: every request in flight (64) was reported lost, "no reply for
    /// grace". Only time the worker spent watching counts as silence.
    #[test]
    fn a_freeze_of_the_whole_machine_is_not_a_silent_server() {
        let grace = Duration::from_millis(300);
        let freeze = grace + Duration::from_millis(200);
        // Count mode (the reported run), then duration mode, whose drain
        // deadline (`grace` after the measured phase) the freeze also spans.
        for (count, duration) in [(Some(4_000), None), (None, Some(Duration::from_millis(50)))] {
            let cfg = LoadConfig {
                connections: 2,
                pipeline_depth: 32,
                count,
                duration,
                grace,
                ..LoadConfig::new("127.0.0.1:9".parse().unwrap())
            };
            let r = crate::loadgen::run(|| Ok(FrozenEcho::new(10, freeze)), &cfg, |_| {}).unwrap();
            assert_eq!((r.lost, r.errors), (0, 0), "{count:?} {duration:?}: {r:?}");
            if let Some(n) = count {
                assert_eq!(r.messages, n);
            }
        }
    }

    #[test]
    fn warmup_requests_are_not_counted() {
        let mut c = conn(4);
        c.quota = Some(1);
        let body = make_body(4);
        let t0 = Instant::now();
        let measure = t0 + Duration::from_secs(1);
        fill_at(&mut c, &body, None, measure, t0);
        assert_eq!(sent_frames(&mut c).len(), 4, "warm-up ignores the quota");
        assert_eq!(c.quota, Some(1));
        let mut t = tally();
        reply(
            &mut c,
            &body,
            Frame::response(MessageType::ECHO_REPLY, 1, body.clone()),
            measure,
            Instant::now(),
            &mut t,
        );
        assert_eq!((t.messages, t.errors), (0, 0));
    }
}
