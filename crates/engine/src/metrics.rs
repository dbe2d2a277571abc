//! Per-worker counters and latency histograms, STATS totals and the
//! Prometheus text endpoint.
//!
//! Counters are relaxed atomics written only by their worker. Each worker
//! records service times in a local histogram and folds it into the shared
//! one on every housekeeping tick (100 ms) and when it stops, so the hot
//! path takes no lock.
//!
//! The shared histogram is never reset: the summary's quantiles cover every
//! request since the process started, not a recent window. Its `_count` and
//! `_sum` are kept as separate running totals, so they stay monotonic
//! counters even if the quantiles are ever given a window.
//!
//! The endpoint's HTTP side, an event loop with a connection cap and
//! deadlines, lives in `metrics/http.rs`.

mod http;

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use warpwire_frame::Stats;

pub use http::HttpLimits;

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
    /// Times a broadcaster was paused because its readers were behind.
    pub broadcast_paused: AtomicU64,
    /// Partial frames refused because the server-wide input budget was
    /// exceeded.
    pub input_refused: AtomicU64,
    /// Accepts the transport could not make for lack of descriptors or
    /// memory (it backs off after each).
    pub accept_errors: AtomicU64,
    /// The transport's own counters ([`warpwire_transport::Transport::counters`]:
    /// TLS handshakes and failures, ...), as last read by the worker.
    pub transport: std::sync::Mutex<Vec<(&'static str, u64)>>,
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

/// Sum of the samples in `h`, ns, each taken as the middle of its bucket
/// (as `Histogram::mean` does): exact below 2048 ns, within half a bucket
/// (3 significant digits, < 0.05 %) above.
fn histogram_sum(h: &Histogram<u64>) -> u64 {
    h.iter_recorded()
        .map(|v| {
            h.median_equivalent(v.value_iterated_to())
                .saturating_mul(v.count_since_last_iteration())
        })
        .fold(0, u64::saturating_add)
}

/// Writes `ns` nanoseconds as decimal seconds, without going through `f64`
/// (a running total in ns passes 2^53 after about 104 days).
fn write_seconds(out: &mut String, ns: u64) {
    let _ = write!(out, "{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
}

/// Service times of one worker.
#[derive(Debug)]
struct Latency {
    /// Every sample since start (never reset): the quantiles.
    hist: Histogram<u64>,
    /// Samples published since start: the summary's `_count`.
    count: u64,
    /// Their total, ns: the summary's `_sum`.
    sum_ns: u64,
}

/// Metrics of the whole server.
#[derive(Debug)]
pub struct Metrics {
    /// One set of counters per worker.
    pub workers: Vec<WorkerCounters>,
    /// Request service time (decode to reply queued), per worker.
    latency: Vec<Mutex<Latency>>,
    started: Instant,
    transport: String,
}

impl Metrics {
    /// Metrics for `workers` workers on the named transport.
    pub fn new(workers: usize, transport: &str) -> Self {
        Self {
            workers: (0..workers).map(|_| WorkerCounters::default()).collect(),
            latency: (0..workers)
                .map(|_| {
                    Mutex::new(Latency {
                        hist: new_histogram(),
                        count: 0,
                        sum_ns: 0,
                    })
                })
                .collect(),
            started: Instant::now(),
            transport: transport.to_owned(),
        }
    }

    /// A fresh local histogram for a worker.
    pub fn local_histogram() -> Histogram<u64> {
        new_histogram()
    }

    /// Folds a worker's local histogram into the shared one and the running
    /// totals, and clears it.
    pub fn publish_latency(&self, worker: usize, local: &mut Histogram<u64>) {
        // An idle worker has nothing to add: skip walking every bucket (and
        // the reset) ten times a second.
        if local.is_empty() {
            return;
        }
        if let Some(m) = self.latency.get(worker)
            && let Ok(mut l) = m.lock()
        {
            // Both histograms come from new_histogram(): same bounds, so
            // add() cannot fail on range.
            let _ = l.hist.add(&*local);
            l.count = l.count.saturating_add(local.len());
            l.sum_ns = l.sum_ns.saturating_add(histogram_sum(local));
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

    /// The transports' own counters, one family per name (all counters
    /// since start), in the order the first worker reported them.
    fn render_transport_counters(&self, out: &mut String) {
        let per_worker: Vec<Vec<(&'static str, u64)>> = self
            .workers
            .iter()
            .map(|w| w.transport.lock().map(|v| v.clone()).unwrap_or_default())
            .collect();
        let mut names: Vec<&'static str> = Vec::new();
        for (name, _) in per_worker.iter().flatten() {
            if !names.contains(name) {
                names.push(name);
            }
        }
        for name in names {
            let _ = writeln!(out, "# TYPE warpwire_{name} counter");
            for (i, w) in per_worker.iter().enumerate() {
                if let Some((_, v)) = w.iter().find(|(n, _)| *n == name) {
                    let _ = writeln!(
                        out,
                        "warpwire_{name}{{worker=\"{i}\",transport=\"{}\"}} {v}",
                        self.transport
                    );
                }
            }
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, CounterFn); 14] = [
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
            ("broadcast_paused_total", "counter", |w| &w.broadcast_paused),
            ("accept_errors_total", "counter", |w| &w.accept_errors),
            ("input_refused_total", "counter", |w| &w.input_refused),
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
        self.render_transport_counters(&mut out);
        let _ = writeln!(
            out,
            "# HELP warpwire_service_seconds Request service time, batch polled to reply \
             queued. Quantiles over all requests since process start (never reset); \
             _sum and _count are totals since start."
        );
        let _ = writeln!(out, "# TYPE warpwire_service_seconds summary");
        for (i, m) in self.latency.iter().enumerate() {
            let Ok(l) = m.lock() else { continue };
            for q in [0.5, 0.9, 0.99, 0.999] {
                let _ = writeln!(
                    out,
                    "warpwire_service_seconds{{worker=\"{i}\",quantile=\"{q}\"}} {:.9}",
                    l.hist.value_at_quantile(q) as f64 / 1e9
                );
            }
            let _ = write!(out, "warpwire_service_seconds_sum{{worker=\"{i}\"}} ");
            write_seconds(&mut out, l.sum_ns);
            out.push('\n');
            let _ = writeln!(
                out,
                "warpwire_service_seconds_count{{worker=\"{i}\"}} {}",
                l.count
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

/// Serves the Prometheus text on `addr` (`GET` or `HEAD` of `/metrics`)
/// until `stop` is set, with the default [`HttpLimits`]: many connections
/// at once on one thread, none able to hold up another.
/// The thread looks at `stop` at least every 50 ms.
pub fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    serve_metrics_with(addr, metrics, stop, HttpLimits::default())
}

/// [`serve_metrics`] with other limits (tests shorten the deadlines).
pub fn serve_metrics_with(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    limits: HttpLimits,
) -> std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let h = http::spawn(listener, limits, stop, move || metrics.render_prometheus())?;
    Ok((local, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses Prometheus text into `(series with labels, value)`, skipping
    /// comments; panics on a line that is not `series value`.
    fn parse(text: &str) -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                (series.to_owned(), value.parse::<f64>().unwrap())
            })
            .collect()
    }

    fn value(series: &[(String, f64)], name: &str) -> f64 {
        let v: Vec<f64> = series
            .iter()
            .filter(|(s, _)| s == name)
            .map(|&(_, v)| v)
            .collect();
        assert_eq!(v.len(), 1, "{name} appears once: {series:?}");
        v[0]
    }

    /// Records `samples` (ns) on `worker` and publishes them, as a worker's
    /// housekeeping does.
    fn publish(m: &Metrics, worker: usize, samples: &[u64]) {
        let mut local = Metrics::local_histogram();
        for &s in samples {
            local.record(s).unwrap();
        }
        m.publish_latency(worker, &mut local);
        assert!(local.is_empty(), "publish clears the local histogram");
    }

    #[test]
    fn summary_has_sum_and_count_of_the_recorded_samples() {
        let m = Metrics::new(2, "socket");
        // Below 2048 ns the histogram holds values exactly.
        let samples = [1u64, 7, 150, 999, 2047];
        publish(&m, 0, &samples);
        let text = m.render_prometheus();
        assert!(text.contains("# HELP warpwire_service_seconds "), "{text}");
        assert!(text.contains("since process start"), "{text}");
        assert!(text.contains("# TYPE warpwire_service_seconds summary"));
        let series = parse(&text);
        let total: u64 = samples.iter().sum();
        assert_eq!(
            value(&series, "warpwire_service_seconds_count{worker=\"0\"}"),
            samples.len() as f64
        );
        assert_eq!(
            value(&series, "warpwire_service_seconds_sum{worker=\"0\"}"),
            total as f64 / 1e9
        );
        assert!(text.contains("warpwire_service_seconds_sum{worker=\"0\"} 0.000003204\n"));
        // A worker with no samples reports zero totals, not missing series.
        assert_eq!(
            value(&series, "warpwire_service_seconds_count{worker=\"1\"}"),
            0.0
        );
        assert_eq!(
            value(&series, "warpwire_service_seconds_sum{worker=\"1\"}"),
            0.0
        );
    }

    #[test]
    fn sum_and_count_accumulate_over_publishes() {
        let m = Metrics::new(1, "socket");
        let first = [40_000u64, 1_500_000, 2_000_000_000];
        let second = [12_345_678u64, 3];
        publish(&m, 0, &first);
        let before = parse(&m.render_prometheus());
        publish(&m, 0, &second);
        // An empty publish (an idle tick) changes nothing.
        publish(&m, 0, &[]);
        let after = parse(&m.render_prometheus());

        let count = |s: &[(String, f64)]| value(s, "warpwire_service_seconds_count{worker=\"0\"}");
        let sum = |s: &[(String, f64)]| value(s, "warpwire_service_seconds_sum{worker=\"0\"}");
        assert_eq!(count(&before), 3.0);
        assert_eq!(count(&after), 5.0);
        // Above 2048 ns a sample counts as the middle of its bucket: 3
        // significant digits.
        let total: u64 = first.iter().chain(&second).sum();
        let expect = total as f64 / 1e9;
        assert!(
            (sum(&after) - expect).abs() <= expect * 5e-4,
            "{} vs {expect}",
            sum(&after)
        );
        assert!(sum(&after) > sum(&before));
        // The quantiles cover both publishes (the histogram is not reset).
        let p999 = value(
            &after,
            "warpwire_service_seconds{worker=\"0\",quantile=\"0.999\"}",
        );
        assert!((p999 - 2.0).abs() <= 2.0 * 1e-3, "{p999}");
    }

    #[test]
    fn seconds_are_written_exactly() {
        let mut s = String::new();
        write_seconds(&mut s, 0);
        s.push(' ');
        write_seconds(&mut s, 1);
        s.push(' ');
        write_seconds(&mut s, 123_000_000_007);
        s.push(' ');
        write_seconds(&mut s, u64::MAX);
        assert_eq!(
            s,
            "0.000000000 0.000000001 123.000000007 18446744073.709551615"
        );
    }
}
