//! Echo server on the uring backend against the same server on the socket
//! backend, measured the same way in the same run.
//!
//! ```text
//! cargo build --release -p warpwire-uring --examples
//! target/release/examples/echo_bench [connections] [seconds] [message bytes] [busy]
//! ```
//!
//! Each round starts an echo server on its own thread (one worker, like
//! one engine worker) and drives it from one client thread on the socket
//! backend (the same load generator for both): every connection keeps one
//! message outstanding and sends the next when the echo is back. Rounds
//! alternate uring, socket, uring, socket so drift on a shared machine
//! hits both. `busy` makes server and client spin on `poll` instead of
//! sleeping in `wait`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use warpwire_socket::SocketTransport;
use warpwire_transport::{ConnId, Event, Events, Transport};
use warpwire_uring::UringTransport;

struct Args {
    conns: usize,
    secs: u64,
    size: usize,
    busy: bool,
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let args = Args {
        conns: arg(0, 50) as usize,
        secs: arg(1, 3),
        size: arg(2, 64) as usize,
        busy: a.get(3).is_some_and(|s| s == "busy"),
    };
    println!(
        "{} connections, {} s per round, {} B messages, {}",
        args.conns,
        args.secs,
        args.size,
        if args.busy {
            "busy-polling"
        } else {
            "sleeping in wait"
        }
    );
    println!(
        "{:<8} {:>10} {:>8} {:>8} {:>8} {:>14}",
        "server", "msgs/s", "p50 us", "p99 us", "max us", "server CPU/msg"
    );
    for round in 0..4 {
        let r = if round % 2 == 0 {
            run("uring", &args, UringTransport::new)
        } else {
            run("socket", &args, SocketTransport::new)
        };
        println!(
            "{:<8} {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>11.2} us",
            r.name, r.rate, r.p50, r.p99, r.max, r.cpu_per_msg
        );
    }
}

struct Report {
    name: &'static str,
    rate: f64,
    p50: f64,
    p99: f64,
    max: f64,
    /// Server thread CPU time (user + system) per echoed message, over
    /// the whole round (connection set-up and warm-up included).
    cpu_per_msg: f64,
}

fn run<T, F>(name: &'static str, args: &Args, make: F) -> Report
where
    T: Transport + 'static,
    F: Fn() -> Result<T, warpwire_transport::TransportError> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let busy = args.busy;
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut t = make().unwrap();
            let addr = t.listen("127.0.0.1:0".parse().unwrap()).unwrap();
            tx.send(addr).unwrap();
            let start = thread_cpu();
            serve(&mut t, &stop, busy);
            thread_cpu() - start
        })
    };
    let addr = rx.recv().unwrap();
    let (rate, mut rtts) = load(addr, args);
    stop.store(true, Ordering::Relaxed);
    let server_cpu = server.join().unwrap();
    rtts.sort_unstable();
    let pct = |p: f64| rtts[((rtts.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    Report {
        name,
        rate,
        p50: pct(0.5),
        p99: pct(0.99),
        max: pct(1.0),
        cpu_per_msg: server_cpu * 1e6 / (rate * args.secs as f64),
    }
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // utime and stime are fields 14 and 15, counted after the command name.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// The echo worker: what it reads it sends back; what the transport does
/// not take waits for Writable.
fn serve<T: Transport>(t: &mut T, stop: &AtomicBool, busy: bool) {
    let mut ev = Events::with_capacity(1024);
    let mut out: HashMap<ConnId, Vec<u8>> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        t.poll(Instant::now(), &mut ev).unwrap();
        for e in ev.iter() {
            match *e {
                Event::Readable(c) => {
                    let pending = out.entry(c).or_default();
                    loop {
                        let n = t.recv(c, &mut buf).unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        if pending.is_empty() {
                            let sent = t.send(c, &buf[..n]).unwrap_or(n);
                            pending.extend_from_slice(&buf[sent..n]);
                        } else {
                            pending.extend_from_slice(&buf[..n]);
                        }
                    }
                }
                Event::Writable(c) => {
                    if let Some(p) = out.get_mut(&c) {
                        let n = t.send(c, p).unwrap_or(0);
                        p.drain(..n);
                    }
                }
                Event::PeerFinished(c) => t.close(c),
                Event::Closed(c, _) => {
                    out.remove(&c);
                }
                _ => {}
            }
        }
        t.flush(Instant::now()).unwrap();
        if ev.is_empty() && !busy {
            t.wait(Some(Duration::from_millis(10))).unwrap();
        }
    }
}

/// One client thread on the socket backend: every connection keeps one
/// message in flight. Returns messages per second and round trips in ns.
fn load(addr: SocketAddr, args: &Args) -> (f64, Vec<u64>) {
    let mut t = SocketTransport::new().unwrap();
    let mut ev = Events::with_capacity(1024);
    let msg = vec![0x5au8; args.size];
    let mut conns: HashMap<ConnId, (Instant, usize)> = HashMap::new();
    let ids: Vec<_> = (0..args.conns)
        .map(|_| t.connect(addr, Instant::now()).unwrap())
        .collect();
    let mut ready = 0;
    while ready < ids.len() {
        t.wait(Some(Duration::from_millis(10))).unwrap();
        t.poll(Instant::now(), &mut ev).unwrap();
        for e in ev.iter() {
            if let Event::Connected(c) = *e {
                ready += 1;
                assert_eq!(t.send(c, &msg).unwrap(), msg.len());
                conns.insert(c, (Instant::now(), 0));
            }
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut rtts = Vec::with_capacity(1 << 20);
    let warmup = Instant::now() + Duration::from_millis(300);
    let end = warmup + Duration::from_secs(args.secs);
    let mut counted = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        t.poll(now, &mut ev).unwrap();
        for e in ev.iter() {
            let Event::Readable(c) = *e else { continue };
            let Some((sent_at, got)) = conns.get_mut(&c) else {
                continue;
            };
            loop {
                let n = t.recv(c, &mut buf).unwrap();
                if n == 0 {
                    break;
                }
                *got += n;
            }
            while *got >= msg.len() {
                *got -= msg.len();
                let now = Instant::now();
                if now >= warmup {
                    rtts.push((now - *sent_at).as_nanos() as u64);
                    counted += 1;
                }
                *sent_at = now;
                assert_eq!(t.send(c, &msg).unwrap(), msg.len(), "client backpressure");
            }
        }
        if ev.is_empty() && !args.busy {
            t.wait(Some(Duration::from_millis(10))).unwrap();
        }
    }
    for c in ids {
        t.close(c);
    }
    (counted as f64 / args.secs as f64, rtts)
}
