//! Per-worker counters and latency histograms, STATS totals and the
//! Prometheus text endpoint.
//!
//! Counters are relaxed atomics written only by their worker. Each worker
//! records service times in a local histogram and folds it into the shared
//! one about once a second, so the hot path takes no lock.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use warpwire_frame::Stats;

/// Counters of one worker.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Open connections.
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Frames received.
    pub messages_in: AtomicU64,
    /// Frames sent.
    pub messages_out: AtomicU64,
    /// Bytes of frames received.
    pub bytes_in: AtomicU64,
    /// Bytes of frames sent.
    pub bytes_out: AtomicU64,
    /// ERROR frames sent.
    pub errors: AtomicU64,
    /// Frames dropped by a rate limit.
    pub rate_limited: AtomicU64,
    /// Connections refused with SERVER_BUSY.
    pub refused: AtomicU64,
    /// Broadcast copies not delivered (a worker's inbox was full).
    pub broadcast_dropped: AtomicU64,
    /// Connections dropped because they did not read their broadcasts.
    pub slow_consumers: AtomicU64,
}

impl WorkerCounters {
    /// Adds `n` to a counter (relaxed; only the owning worker writes).
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

#[allow(clippy::expect_used)]
fn new_histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits: a few tens of KiB per worker.
    // expect() is safe: the bounds are constants that satisfy
    // new_with_bounds' preconditions (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant, valid bounds")
}

/// Selects one counter of a worker.
type CounterFn = fn(&WorkerCounters) -> &AtomicU64;

/// Metrics of the whole server.
#[derive(Debug)]
pub struct Metrics {
    /// One set of counters per worker.
    pub workers: Vec<WorkerCounters>,
    /// Request service time (decode to reply queued), ns, per worker.
    latency: Vec<Mutex<Histogram<u64>>>,
    started: Instant,
    transport: String,
}

impl Metrics {
    /// Metrics for `workers` workers on the named transport.
    pub fn new(workers: usize, transport: &str) -> Self {
        Self {
            workers: (0..workers).map(|_| WorkerCounters::default()).collect(),
            latency: (0..workers).map(|_| Mutex::new(new_histogram())).collect(),
            started: Instant::now(),
            transport: transport.to_owned(),
        }
    }

    /// A fresh local histogram for a worker.
    pub fn local_histogram() -> Histogram<u64> {
        new_histogram()
    }

    /// Folds a worker's local histogram into the shared one and clears it.
    pub fn publish_latency(&self, worker: usize, local: &mut Histogram<u64>) {
        if let Some(m) = self.latency.get(worker)
            && let Ok(mut h) = m.lock()
        {
            let _ = h.add(&*local);
        }
        local.reset();
    }

    /// Totals across workers, as STATS_REPLY carries them.
    pub fn totals(&self) -> Stats {
        let sum = |f: fn(&WorkerCounters) -> &AtomicU64| -> u64 {
            self.workers
                .iter()
                .map(|w| f(w).load(Ordering::Relaxed))
                .sum()
        };
        Stats {
            connections: sum(|w| &w.connections),
            messages_in: sum(|w| &w.messages_in),
            messages_out: sum(|w| &w.messages_out),
            bytes_in: sum(|w| &w.bytes_in),
            bytes_out: sum(|w| &w.bytes_out),
            errors: sum(|w| &w.errors),
            uptime_s: self.started.elapsed().as_secs(),
            transport: self.transport.clone(),
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, CounterFn); 11] = [
            ("connections", "gauge", |w| &w.connections),
            ("accepted_total", "counter", |w| &w.accepted),
            ("messages_in_total", "counter", |w| &w.messages_in),
            ("messages_out_total", "counter", |w| &w.messages_out),
            ("bytes_in_total", "counter", |w| &w.bytes_in),
            ("bytes_out_total", "counter", |w| &w.bytes_out),
            ("errors_total", "counter", |w| &w.errors),
            ("rate_limited_total", "counter", |w| &w.rate_limited),
            ("refused_total", "counter", |w| &w.refused),
            ("broadcast_dropped_total", "counter", |w| {
                &w.broadcast_dropped
            }),
            ("slow_consumers_total", "counter", |w| &w.slow_consumers),
        ];
        for (name, kind, get) in counters {
            let _ = writeln!(out, "# TYPE warpwire_{name} {kind}");
            for (i, w) in self.workers.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "warpwire_{name}{{worker=\"{i}\",transport=\"{}\"}} {}",
                    self.transport,
                    get(w).load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# TYPE warpwire_service_seconds summary");
        for (i, m) in self.latency.iter().enumerate() {
            let Ok(h) = m.lock() else { continue };
            for q in [0.5, 0.9, 0.99, 0.999] {
                let _ = writeln!(
                    out,
                    "warpwire_service_seconds{{worker=\"{i}\",quantile=\"{q}\"}} {:.9}",
                    h.value_at_quantile(q) as f64 / 1e9
                );
            }
            let _ = writeln!(
                out,
                "warpwire_service_seconds_count{{worker=\"{i}\"}} {}",
                h.len()
            );
        }
        let _ = writeln!(out, "# TYPE warpwire_uptime_seconds gauge");
        let _ = writeln!(
            out,
            "warpwire_uptime_seconds {}",
            self.started.elapsed().as_secs()
        );
        out
    }
}

/// Serves `GET /metrics` in Prometheus text format on `addr` until `stop`
/// is set. One request at a time, each bounded by a 2 s timeout and an 8 KiB
/// request limit: a scraper is one client, not a load.
pub fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let h = std::thread::Builder::new()
        .name("warpwire-metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                        let mut req = [0u8; 8192];
                        let mut n = 0;
                        while n < req.len() {
                            match s.read(&mut req[n..]) {
                                Ok(0) | Err(_) => break,
                                Ok(k) => n += k,
                            }
                            if req[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                        let ok = req[..n].starts_with(b"GET /metrics ") || req[..n].starts_with(b"GET / ");
                        let (status, body) = if ok {
                            ("200 OK", metrics.render_prometheus())
                        } else {
                            ("404 Not Found", "try GET /metrics\n".to_owned())
                        };
                        let _ = write!(
                            s,
                            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
    Ok((local, h))
}
