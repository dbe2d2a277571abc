//! The metrics endpoint against hostile peers: idle and trickling
//! connections, a connection flood, oversized heads. None may delay a
//! scrape, and each gives its connection back by a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use warpwire_engine::ServerConfig;
use warpwire_engine::metrics::{HttpLimits, Metrics, serve_metrics_with};

/// What a scrape may take with the endpoint under attack.
const SCRAPE_BUDGET: Duration = Duration::from_millis(500);

const GET: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

/// Reads until EOF or reset; everything received, as text.
fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&out)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `req` on a new connection and reads the answer to its end: the
/// answer and the time from connect to its end.
fn request(addr: SocketAddr, req: &[u8]) -> (String, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(req).unwrap();
    let text = read_all(&mut s);
    (text, t.elapsed())
}

/// The endpoint alone, without a server, stopped and joined on drop.
struct Endpoint {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoint {
    fn start(limits: HttpLimits) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, thread) = serve_metrics_with(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Metrics::new(2, "test")),
            stop.clone(),
            limits,
        )
        .unwrap();
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the endpoint; how long its thread took to end.
    fn stop(&mut self) -> Duration {
        let t = Instant::now();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            h.join().unwrap();
        }
        t.elapsed()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Watches `conns` (each with when it was opened) until all are closed or
/// `within` passes: per connection, what it received and how long after
/// opening its close was seen (to 10 ms).
fn watch_closes(conns: &mut [(TcpStream, Instant)], within: Duration) -> Vec<(String, Duration)> {
    let deadline = Instant::now() + within;
    let mut seen: Vec<Option<(String, Duration)>> = vec![None; conns.len()];
    let mut got = vec![Vec::new(); conns.len()];
    for (s, _) in conns.iter() {
        s.set_nonblocking(true).unwrap();
    }
    while seen.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, (s, opened)) in conns.iter_mut().enumerate() {
            if seen[i].is_some() {
                continue;
            }
            let mut buf = [0u8; 1024];
            let closed = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => got[i].extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
                    Err(e) => panic!("read: {e}"),
                }
            };
            if closed {
                seen[i] = Some((
                    String::from_utf8_lossy(&got[i]).into_owned(),
                    opened.elapsed(),
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    seen.into_iter()
        .map(|s| s.expect("connection not closed in time"))
        .collect()
}

#[test]
fn scrapes_are_answered_while_idle_and_trickling_peers_hold_connections() {
    let h = start(ServerConfig {
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    });
    let addr = h.metrics_addr().unwrap();
    let header_timeout = HttpLimits::default().header_timeout;

    let mut idle: Vec<(TcpStream, Instant)> = (0..30)
        .map(|_| (Instant::now(), TcpStream::connect(addr).unwrap()))
        .map(|(t, s)| (s, t))
        .collect();
    // One byte of a request line every 300 ms: 23 bytes would take 6.9 s,
    // past the header deadline, so the endpoint must cut it off first.
    let slowloris = std::thread::spawn(move || {
        let opened = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        for (i, b) in b"GET /metrics HTTP/1.1\r\n".iter().enumerate() {
            if s.write_all(&[*b]).is_err() {
                return (i, opened.elapsed());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("the slowloris sent its whole request line");
    });

    let started = Instant::now();
    let mut times = Vec::new();
    while started.elapsed() < Duration::from_secs(3) {
        let (text, took) = request(addr, GET);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("warpwire_connections{worker="), "{text}");
        assert!(took < SCRAPE_BUDGET, "scrape {} took {took:?}", times.len());
        times.push(took);
        std::thread::sleep(Duration::from_millis(100));
    }
    times.sort();
    eprintln!(
        "{} scrapes beside 30 idle connections and a slowloris: median {:?}, max {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
    assert!(times.len() >= 20, "{}", times.len());

    // The idle connections are closed at the header deadline, no earlier.
    let closes = watch_closes(&mut idle, Duration::from_secs(5));
    for (text, after) in &closes {
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408 "),
            "{text}"
        );
        assert!(*after >= header_timeout, "closed early: {after:?}");
        assert!(
            *after < header_timeout + Duration::from_secs(1),
            "closed late: {after:?}"
        );
    }
    let last = closes.iter().map(|c| c.1).max().unwrap();
    eprintln!("30 idle connections closed by {last:?} after opening");

    let (sent, cut_after) = slowloris.join().unwrap();
    eprintln!(
        "slowloris cut off after {sent} bytes, its write failing {cut_after:?} after connect"
    );
    assert!(cut_after >= header_timeout, "{cut_after:?}");
    h.stop().unwrap();
}

#[test]
fn connections_beyond_the_cap_are_refused_at_once() {
    let mut e = Endpoint::start(HttpLimits::default());
    let cap = HttpLimits::default().max_connections;
    let mut held: Vec<TcpStream> = (0..cap)
        .map(|_| TcpStream::connect(e.addr).unwrap())
        .collect();

    // The listener accepts in connect order: these come after the cap.
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let (text, took) = request(e.addr, GET);
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(took < SCRAPE_BUDGET, "{took:?}");
        worst = worst.max(took);
    }
    eprintln!(
        "connections {}..{} refused with 503, worst in {worst:?}",
        cap + 1,
        cap + 5
    );

    // A slot freed is a slot to scrape through.
    drop(held.pop());
    assert!(eventually(|| request(e.addr, GET)
        .0
        .starts_with("HTTP/1.1 200 OK")));

    let stopped = e.stop();
    eprintln!(
        "stopped with {} connections open in {stopped:?}",
        held.len()
    );
    assert!(stopped < Duration::from_millis(500), "{stopped:?}");
}

#[test]
fn a_request_head_over_the_limit_is_refused() {
    let e = Endpoint::start(HttpLimits::default());
    let max = HttpLimits::default().max_head;
    // A head of exactly `len` bytes, CRLF CRLF included.
    let head = |len: usize| {
        let start = "GET /metrics HTTP/1.1\r\nX-Pad: ";
        format!("{start}{}\r\n\r\n", "a".repeat(len - start.len() - 4))
    };
    let (text, _) = request(e.addr, head(max).as_bytes());
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let (text, took) = request(e.addr, head(max + 1).as_bytes());
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    assert!(took < SCRAPE_BUDGET, "{took:?}");

    // A head that never ends is cut off at the limit, not read forever.
    let mut s = TcpStream::connect(e.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nX-Pad: ").unwrap();
    let pad = vec![b'a'; 4096];
    let t = Instant::now();
    let mut sent = 0;
    while sent <= max {
        s.write_all(&pad).unwrap();
        sent += pad.len();
    }
    let text = read_all(&mut s);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    eprintln!("unending head of {sent} bytes refused in {:?}", t.elapsed());
}

#[test]
fn an_idle_connection_is_closed_at_the_header_deadline() {
    let header_timeout = Duration::from_millis(300);
    let e = Endpoint::start(HttpLimits {
        header_timeout,
        ..HttpLimits::default()
    });
    let mut conns: Vec<(TcpStream, Instant)> = Vec::new();
    for partial in [&b""[..], b"GET /metr"] {
        let t = Instant::now();
        let mut s = TcpStream::connect(e.addr).unwrap();
        s.write_all(partial).unwrap();
        conns.push((s, t));
    }
    for (text, after) in watch_closes(&mut conns, Duration::from_secs(3)) {
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
        assert!(after >= header_timeout, "{after:?}");
        assert!(
            after < header_timeout + Duration::from_millis(300),
            "{after:?}"
        );
        eprintln!("idle connection closed {after:?} after opening (deadline {header_timeout:?})");
    }
}

#[test]
fn other_paths_and_methods_are_refused_and_head_has_no_body() {
    let e = Endpoint::start(HttpLimits::default());
    let (text, _) = request(e.addr, b"GET /nope HTTP/1.1\r\n\r\n");
    assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
    let (text, _) = request(
        e.addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(
        text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
    let (text, _) = request(e.addr, b"hello\r\n\r\n");
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");

    let (get, _) = request(e.addr, GET);
    let (head, _) = request(e.addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    let (get_head, body) = get.split_once("\r\n\r\n").unwrap();
    assert!(
        body.contains("warpwire_connections{worker=\"0\",transport=\"test\"} 0\n"),
        "{body}"
    );
    assert!(
        get_head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{get}"
    );
}
