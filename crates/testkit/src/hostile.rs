//! Hostile and careless peers, over plain kernel TCP: what a reviewer with
//! raw sockets would throw at a server. Each scenario connects to an
//! address, plays its part within a time bound, measures what a
//! well-behaved bystander sees, and returns a report (or an error naming
//! what went wrong). The `warpwire-hostile` binary runs them from any
//! network namespace, so the same peer attacks the socket backend on
//! loopback and the bypass backends across a veth or TAP.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use warpwire_frame::{Decoder, DecoderConfig, Frame, MessageType};

/// Connects with a bound on the handshake.
fn connect(addr: SocketAddr, within: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, within)?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn encode(f: &Frame) -> Vec<u8> {
    let mut b = BytesMut::with_capacity(f.encoded_len());
    f.encode(&mut b).expect("test frames are within the limits");
    b.to_vec()
}

/// Reads frames until EOF (or `deadline`), returning them in arrival order.
fn read_until_eof(s: &mut TcpStream, deadline: Instant) -> Result<(Vec<Frame>, usize), String> {
    let mut dec = Decoder::new(DecoderConfig::default());
    let mut frames = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no EOF within the time bound ({} replies so far)",
                frames.len()
            ));
        }
        s.set_read_timeout(Some(left.min(Duration::from_secs(1))))
            .map_err(|e| e.to_string())?;
        let buf = dec.read_buf();
        if buf.is_empty() {
            return Err("decoder buffer full".into());
        }
        match s.read(buf) {
            Ok(0) => {
                // Whatever is buffered but not a whole frame is a cut frame.
                let partial = dec.buffered();
                return Ok((frames, partial));
            }
            Ok(n) => {
                dec.commit(n);
                while let Some(f) = dec.decode().map_err(|e| format!("bad reply: {e}"))? {
                    frames.push(f);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read failed after {} replies: {e}", frames.len())),
        }
    }
}

/// Writes `count` ECHO requests of `size` bytes, shuts down the sending
/// side (`shutdown(SHUT_WR)`, as `nc -N` does), then reads until the
/// server's FIN: every reply must arrive whole, in order, with its body.
/// Repeated `trials` times; the first failure is the error.
pub fn half_close(
    addr: SocketAddr,
    count: u64,
    size: usize,
    trials: u32,
) -> Result<String, String> {
    let started = Instant::now();
    for trial in 0..trials {
        let mut s = connect(addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
        // The writer runs on its own thread: a server that answers while we
        // still write must not deadlock against our unread replies.
        let mut w = s.try_clone().map_err(|e| e.to_string())?;
        let writer = std::thread::spawn(move || -> io::Result<()> {
            for id in 1..=count {
                let body: Vec<u8> = (0..size).map(|i| (i as u64 ^ id) as u8).collect();
                w.write_all(&encode(&Frame::new(MessageType::ECHO, id, body)))?;
            }
            w.shutdown(Shutdown::Write)
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let got = read_until_eof(&mut s, deadline);
        writer
            .join()
            .map_err(|_| "writer panicked".to_owned())?
            .map_err(|e| format!("trial {trial}: write failed: {e}"))?;
        let (frames, partial) = got.map_err(|e| format!("trial {trial}: {e}"))?;
        if frames.len() as u64 != count || partial != 0 {
            return Err(format!(
                "trial {trial}: {} of {count} replies, then {partial} bytes of a cut frame",
                frames.len()
            ));
        }
        for (i, f) in frames.iter().enumerate() {
            let id = i as u64 + 1;
            let want: Vec<u8> = (0..size).map(|j| (j as u64 ^ id) as u8).collect();
            if f.msg_type != MessageType::ECHO_REPLY || f.request_id != id || f.body[..] != want[..]
            {
                return Err(format!(
                    "trial {trial}: reply {i} is {} id {} with {} bytes, not ECHO_REPLY id {id}",
                    f.msg_type,
                    f.request_id,
                    f.body.len()
                ));
            }
        }
    }
    Ok(format!(
        "half-close: {trials} trials of {count} x {size} B, every reply whole and in order ({:.1} s)",
        started.elapsed().as_secs_f64()
    ))
}

/// Round trips of PINGs on one connection.
#[derive(Debug, Default)]
pub struct Pings {
    /// Round trips measured.
    pub rtts: Vec<Duration>,
}

impl Pings {
    /// The `q` quantile (0..=1).
    pub fn quantile(&self, q: f64) -> Duration {
        let mut v = self.rtts.clone();
        v.sort();
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    }

    /// The slowest.
    pub fn max(&self) -> Duration {
        self.rtts.iter().copied().max().unwrap_or_default()
    }
}

/// A well-behaved bystander: `n` PINGs, one at a time, `gap` apart.
pub fn bystander_pings(addr: SocketAddr, n: u32, gap: Duration) -> Result<Pings, String> {
    let mut s =
        connect(addr, Duration::from_secs(5)).map_err(|e| format!("bystander connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    // Broadcasts relayed to the bystander carry a few bytes of metadata
    // over the largest body: room for them, and they are skipped.
    let mut dec = Decoder::with_max_payload((2 << 20) as u32);
    let mut rtts = Vec::new();
    for id in 1..=u64::from(n) {
        let t = Instant::now();
        s.write_all(&encode(&Frame::new(
            MessageType::PING,
            id,
            id.to_be_bytes().to_vec(),
        )))
        .map_err(|e| format!("bystander ping {id}: {e}"))?;
        'reply: loop {
            let buf = dec.read_buf();
            let k = s
                .read(buf)
                .map_err(|e| format!("bystander ping {id}: {e}"))?;
            if k == 0 {
                return Err(format!("bystander closed at ping {id}"));
            }
            dec.commit(k);
            while let Some(f) = dec.decode().map_err(|e| e.to_string())? {
                if f.msg_type != MessageType::PONG {
                    continue;
                }
                if f.request_id != id {
                    return Err(format!("bystander got id {} for {id}", f.request_id));
                }
                break 'reply;
            }
        }
        rtts.push(t.elapsed());
        std::thread::sleep(gap);
    }
    Ok(Pings { rtts })
}

/// `callers` connections each call `slow_type` (a handler the server runs
/// on its application workers, answering the body back) one call at a
/// time, continuously, while a bystander sends `pings` PINGs 10 ms apart:
/// the bystander's round trips, and how many slow calls completed. A
/// server that ran the handler on its I/O worker would hold every PING of
/// that worker behind it.
pub fn pings_beside_slow_calls(
    addr: SocketAddr,
    slow_type: u8,
    callers: usize,
    pings: u32,
) -> Result<(Pings, u64), String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..callers)
        .map(|i| {
            let (stop, calls) = (stop.clone(), calls.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let mut s = connect(addr, Duration::from_secs(5))
                    .map_err(|e| format!("caller {i} connect: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .map_err(|e| e.to_string())?;
                let mut dec = Decoder::new(DecoderConfig::default());
                let mut id = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    let body = format!("caller {i} call {id}");
                    let f = Frame::new(MessageType(slow_type), id, body.clone().into_bytes());
                    s.write_all(&encode(&f))
                        .map_err(|e| format!("caller {i} call {id}: {e}"))?;
                    let r = loop {
                        if let Some(f) = dec.decode().map_err(|e| e.to_string())? {
                            break f;
                        }
                        let k = s
                            .read(dec.read_buf())
                            .map_err(|e| format!("caller {i} call {id}: {e}"))?;
                        if k == 0 {
                            return Err(format!("caller {i}: closed at call {id}"));
                        }
                        dec.commit(k);
                    };
                    if (r.request_id, &r.body[..]) != (id, body.as_bytes()) {
                        return Err(format!(
                            "caller {i} call {id}: got {:?} id {}",
                            r.msg_type, r.request_id
                        ));
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    // Let the callers fill the application workers first.
    std::thread::sleep(Duration::from_millis(200));
    let measured = bystander_pings(addr, pings, Duration::from_millis(10));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "a caller panicked".to_owned())??;
    }
    Ok((measured?, calls.load(Ordering::Relaxed)))
}

/// The check of issue 14 on any transport: 8 connections call `slow_type`
/// (a handler that sleeps 50 ms on the application workers) continuously
/// while a bystander on the same, only I/O worker sends 100 PINGs; the
/// PINGs' p99 must stay under 10 ms (a PING queued behind one handler
/// would wait 50 ms) and the slow calls must have run in parallel (about
/// 190 in the 1.2 s if they did; at least 100). A summary line, or what
/// failed. The bound was 5 ms until a full parallel test run on 2 cores
/// measured 5.3 ms over AF_XDP once (0.2-0.7 ms alone): with 100 PINGs,
/// p99 is the second-worst one, and the other tests' load reaches it.
pub fn check_pings_beside_slow_calls(addr: SocketAddr, slow_type: u8) -> Result<String, String> {
    let (pings, n) = pings_beside_slow_calls(addr, slow_type, 8, 100)?;
    let p99 = pings.quantile(0.99);
    let summary = format!(
        "pings p50 {:?} p99 {p99:?} max {:?}; {n} slow calls",
        pings.quantile(0.5),
        pings.max()
    );
    if n < 100 {
        return Err(format!("the handlers did not run in parallel: {summary}"));
    }
    if p99 >= Duration::from_millis(10) {
        return Err(format!("ping p99 over 10 ms: {summary}"));
    }
    Ok(summary)
}

/// Opens `conns` connections that each send one valid header declaring a
/// `declare`-byte body and nothing more, holds them while a bystander
/// pings, and returns the bystander's round trips. The caller measures the
/// server's memory while they are held (`hold` after the last connect).
pub fn header_flood(
    addr: SocketAddr,
    conns: usize,
    declare: usize,
    hold: Duration,
    on_held: impl FnOnce() -> Result<(), String>,
) -> Result<Pings, String> {
    let full = encode(&Frame::new(MessageType::ECHO, 1, vec![0u8; declare]));
    let header = &full[..20];
    let mut held = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut s =
            connect(addr, Duration::from_secs(5)).map_err(|e| format!("connection {i}: {e}"))?;
        s.write_all(header)
            .map_err(|e| format!("connection {i}: {e}"))?;
        held.push(s);
    }
    std::thread::sleep(hold);
    let pings = bystander_pings(addr, 50, Duration::from_millis(5))?;
    on_held()?;
    drop(held);
    Ok(pings)
}

/// What `connection_flood` saw: connections answered with PONG, refused
/// with an ERROR frame (code), or that failed otherwise.
#[derive(Debug, Default)]
pub struct Flood {
    /// PONG received.
    pub answered: usize,
    /// ERROR received, by code.
    pub refused: std::collections::BTreeMap<u16, usize>,
    /// Connect or read failures (no frame at all).
    pub failed: usize,
}

/// Opens `conns` connections and holds them; on each, one PING. Reports
/// how each was answered, then closes them all.
pub fn connection_flood(addr: SocketAddr, conns: usize) -> Result<Flood, String> {
    let mut held = Vec::with_capacity(conns);
    let mut flood = Flood::default();
    for id in 1..=conns as u64 {
        let Ok(mut s) = connect(addr, Duration::from_secs(5)) else {
            flood.failed += 1;
            continue;
        };
        let ping = encode(&Frame::new(
            MessageType::PING,
            id,
            id.to_be_bytes().to_vec(),
        ));
        if s.write_all(&ping).is_err() {
            flood.failed += 1;
            continue;
        }
        held.push((id, s));
    }
    for (id, s) in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut dec = Decoder::new(DecoderConfig::default());
        let frame = loop {
            let buf = dec.read_buf();
            match s.read(buf) {
                Ok(0) | Err(_) => break None,
                Ok(n) => {
                    dec.commit(n);
                    if let Ok(Some(f)) = dec.decode() {
                        break Some(f);
                    }
                }
            }
        };
        match frame {
            Some(f) if f.msg_type == MessageType::PONG && f.request_id == *id => {
                flood.answered += 1
            }
            Some(f) if f.msg_type == MessageType::ERROR => {
                let code = warpwire_frame::ErrorBody::decode(&f.body).map_or(0, |e| e.code);
                *flood.refused.entry(code).or_default() += 1;
            }
            _ => flood.failed += 1,
        }
    }
    Ok(flood)
}

/// What `broadcast_storm` saw.
#[derive(Debug)]
pub struct Storm {
    /// Listeners still connected at the end.
    pub listeners_left: usize,
    /// Listeners at the start.
    pub listeners: usize,
    /// BROADCAST_ACKs the sender got.
    pub acked: u64,
    /// Bytes the listeners read in total.
    pub read_bytes: u64,
    /// The bystander's round trips meanwhile.
    pub pings: Pings,
}

/// `listeners` connections read everything as fast as they can (one
/// thread, non-blocking, round robin) while one sender pipelines
/// BROADCASTs of `body` bytes as fast as the server takes them for
/// `duration`, and a bystander pings. A server without backpressure evicts
/// the listeners as slow readers; one with it slows the sender.
pub fn broadcast_storm(
    addr: SocketAddr,
    listeners: usize,
    body: usize,
    duration: Duration,
) -> Result<Storm, String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let mut socks = Vec::with_capacity(listeners);
    for i in 0..listeners {
        let s = connect(addr, Duration::from_secs(5)).map_err(|e| format!("listener {i}: {e}"))?;
        socks.push(s);
    }
    // Every listener answers one PING first, so all are registered before
    // the storm starts.
    for (i, s) in socks.iter_mut().enumerate() {
        s.write_all(&encode(&Frame::new(
            MessageType::PING,
            1,
            0u64.to_be_bytes().to_vec(),
        )))
        .map_err(|e| format!("listener {i}: {e}"))?;
        let mut dec = Decoder::new(DecoderConfig::default());
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        loop {
            let n = s
                .read(dec.read_buf())
                .map_err(|e| format!("listener {i}: {e}"))?;
            if n == 0 {
                return Err(format!("listener {i} closed before the storm"));
            }
            dec.commit(n);
            if dec.decode().map_err(|e| e.to_string())?.is_some() {
                break;
            }
        }
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    // The sender: one thread writes, one reads the acks.
    let mut tx = connect(addr, Duration::from_secs(5)).map_err(|e| format!("sender: {e}"))?;
    let mut rx = tx.try_clone().map_err(|e| e.to_string())?;
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let frame = encode(&Frame::new(MessageType::BROADCAST, 1, vec![0xabu8; body]));
            while !stop.load(Ordering::Relaxed) {
                if tx.write_all(&frame).is_err() {
                    break;
                }
            }
            let _ = tx.shutdown(Shutdown::Both);
        })
    };
    let acks = {
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let mut dec = Decoder::new(DecoderConfig::default());
            while !stop.load(Ordering::Relaxed) {
                match rx.read(dec.read_buf()) {
                    Ok(0) => break,
                    Ok(n) => {
                        dec.commit(n);
                        while let Ok(Some(_)) = dec.decode() {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {}
                }
            }
        })
    };
    let pinger = std::thread::spawn(move || {
        bystander_pings(
            addr,
            (duration.as_millis() / 25).max(10) as u32,
            Duration::from_millis(20),
        )
    });
    // The listeners: read everything, count the ones the server closed.
    let mut open = vec![true; socks.len()];
    let mut read_bytes = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let mut idle = true;
        for (s, o) in socks.iter_mut().zip(open.iter_mut()) {
            if !*o {
                continue;
            }
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        *o = false;
                        break;
                    }
                    Ok(n) => {
                        read_bytes += n as u64;
                        idle = false;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        *o = false;
                        break;
                    }
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let pings = pinger.join().map_err(|_| "pinger panicked".to_owned())??;
    let _ = sender.join();
    let _ = acks.join();
    Ok(Storm {
        listeners_left: open.iter().filter(|&&o| o).count(),
        listeners,
        acked: acked.load(Ordering::Relaxed),
        read_bytes,
        pings,
    })
}
