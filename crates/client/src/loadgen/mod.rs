//! The load generator behind `warpwire bench`.
//!
//! No I/O thread, no channel, no allocation per request: each worker thread
//! owns one transport instance and a share of the connections, and drives
//! them directly. Workers are generic over the protocol ([`run_with`], a
//! [`LoadProtocol`]) and the transport, and monomorphised: no `dyn` on the
//! request path. Every request of a run is the same
//! ([`LoadProtocol::load_request`]) except for its id (1, 2, 3, ... per
//! connection), which the protocol puts on the wire (warpwire) or in the
//! content (echo); replies are correlated by that id or in order, and
//! [`ClientProtocol::check`]ed before they count.
//!
//! ```text
//!  run() ── spawns ──► worker 0: Transport ─┬─ conn 0: ring[id % depth] = send time
//!    │                                      └─ conn 2:   ... depth requests in flight
//!    │                 worker 1: Transport ─┬─ conn 1
//!    │                                      └─ conn 3
//!    │  every 250 ms: progress(&Progress)   (atomic counters)
//!    ▼
//!  merge per-worker histograms ──► LoadReport
//! ```
//!
//! Phases: connect every connection and wait for `Event::Connected`, then
//! (all workers together) warm up, measure until the duration or count is
//! reached, and drain the replies still in flight. The run ends by itself:
//! at the latest `grace` after the measured phase ends, or when no reply
//! has arrived for `grace` while requests are outstanding; requests that
//! never got a reply count as errors.

mod worker;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use warpwire_frame::{Flags, MessageType};
use warpwire_transport::{Transport, TransportError};

use crate::protocol::{
    ClientProtocol, Echo, EchoRequest, Http, HttpRequest, HttpTarget, Resp, RespCommand,
    RespRequest, Warpwire,
};
use crate::{ClientError, LoadReport, Progress, Request};

/// How often the progress callback runs.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Receive calls per connection per poll (bounds one connection's turn).
const READS_PER_POLL: usize = 8;

/// Longest sleep in `Transport::wait` between checks of the clock.
const MAX_SLEEP: Duration = Duration::from_millis(5);

/// Highest latency the histograms track; larger values are clamped. A
/// minute is far beyond any deadline the run allows.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Significant digits kept by the histograms (0.1 % resolution).
const SIGFIG: u8 = 3;

/// Settings of a load run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// Server address.
    pub addr: SocketAddr,
    /// Connections in total (default 4).
    pub connections: usize,
    /// Requests kept in flight on each connection (default 16).
    pub pipeline_depth: usize,
    /// Request body size (default 64). PING bodies are always 8 bytes. For
    /// echo, the bytes of each request (and of its reply); for http, the
    /// `POST /echo` body, 0 for `GET /ping`; for resp, the value `SET`
    /// writes and `GET` expects (`PING` ignores it).
    pub body_size: usize,
    /// Request type of the warpwire protocol (default ECHO): ECHO, PING,
    /// DATA (sent with ACK_REQUESTED) or an application type 0x80..=0xFE.
    /// Other protocols refuse anything but the default.
    pub msg_type: MessageType,
    /// Length of the measured phase (default 10 s).
    pub duration: Option<Duration>,
    /// Replies to collect in the measured phase; the run stops at whichever
    /// of `duration` and `count` comes first.
    pub count: Option<u64>,
    /// Target total requests per second, paced evenly per connection
    /// (default: as fast as the pipeline allows).
    pub rate: Option<f64>,
    /// Worker threads, each with its own transport (default 1; at most one
    /// per connection).
    pub threads: usize,
    /// Traffic before measuring starts (default none).
    pub warmup: Duration,
    /// How long to wait for outstanding replies after the measured phase,
    /// and the longest silence tolerated while requests are outstanding
    /// (default 5 s).
    pub grace: Duration,
    /// Limit for establishing all connections (default 5 s).
    pub connect_timeout: Duration,
    /// Spin on `poll` instead of sleeping in `wait` (default false).
    pub busy_poll: bool,
}

impl LoadConfig {
    /// The defaults, aimed at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            connections: 4,
            pipeline_depth: 16,
            body_size: 64,
            msg_type: MessageType::ECHO,
            duration: Some(Duration::from_secs(10)),
            count: None,
            rate: None,
            threads: 1,
            warmup: Duration::ZERO,
            grace: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            busy_poll: false,
        }
    }

    /// Checks the settings every protocol shares.
    fn validate(&self) -> Result<(), ClientError> {
        if self.connections == 0 {
            return Err(ClientError::InvalidConfig("connections must be at least 1"));
        }
        if self.pipeline_depth == 0 {
            return Err(ClientError::InvalidConfig(
                "pipeline_depth must be at least 1",
            ));
        }
        if self.duration.is_none() && self.count.is_none() {
            return Err(ClientError::InvalidConfig(
                "a load run needs a duration or a count",
            ));
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            return Err(ClientError::InvalidConfig("rate must be a positive number"));
        }
        if u32::try_from(self.body_size).is_err() {
            return Err(ClientError::InvalidConfig("body_size exceeds u32::MAX"));
        }
        Ok(())
    }

    fn effective_body_size(&self) -> usize {
        if self.msg_type == MessageType::PING {
            8
        } else {
            self.body_size
        }
    }
}

/// A protocol the load generator can drive: how a run's settings become
/// the request every connection repeats (each copy with its own id).
pub trait LoadProtocol: ClientProtocol {
    /// The request of a run with `cfg`, or why the settings do not fit
    /// this protocol ([`ClientError::InvalidConfig`]).
    fn load_request(&self, cfg: &LoadConfig) -> Result<Self::Request, ClientError>;
}

impl LoadProtocol for Warpwire {
    /// `msg_type` with a patterned body of `body_size` bytes (8 for PING);
    /// DATA asks for an ACK. The reply each calls for is
    /// [`Warpwire`]'s `check`.
    fn load_request(&self, cfg: &LoadConfig) -> Result<Request, ClientError> {
        let flags = match cfg.msg_type {
            MessageType::DATA => Flags::ACK_REQUESTED,
            MessageType::ECHO | MessageType::PING => Flags::NONE,
            t if t.is_application() => Flags::NONE,
            _ => {
                return Err(ClientError::InvalidConfig(
                    "msg_type must be ECHO, PING, DATA or an application type",
                ));
            }
        };
        Ok(Request::new(cfg.msg_type, make_body(cfg.effective_body_size())).with_flags(flags))
    }
}

impl LoadProtocol for Echo {
    /// `body_size` bytes (1 up to [`Echo::max_request`]); `msg_type` must
    /// be left at its default, ECHO: it is warpwire's.
    fn load_request(&self, cfg: &LoadConfig) -> Result<EchoRequest, ClientError> {
        if cfg.msg_type != MessageType::ECHO {
            return Err(ClientError::InvalidConfig(
                "msg_type applies to the warpwire protocol only (echo sends raw bytes)",
            ));
        }
        if cfg.body_size == 0 {
            return Err(ClientError::InvalidConfig(
                "an echo request needs at least one byte",
            ));
        }
        if cfg.body_size > self.max_request {
            return Err(ClientError::InvalidConfig(
                "body_size exceeds the echo protocol's max_request",
            ));
        }
        Ok(EchoRequest {
            size: cfg.body_size,
        })
    }
}

impl LoadProtocol for Http {
    /// `GET /ping` when `body_size` is 0, else `POST /echo` with
    /// `body_size` bytes (up to [`Http::max_body`]); `Host:` is `addr`.
    /// `msg_type` must be left at its default, ECHO: it is warpwire's (a
    /// zero size, not a type, asks for `/ping`: one way to say it).
    fn load_request(&self, cfg: &LoadConfig) -> Result<HttpRequest, ClientError> {
        if cfg.msg_type != MessageType::ECHO {
            return Err(ClientError::InvalidConfig(
                "msg_type applies to the warpwire protocol only (http: body_size 0 is GET /ping, any other POST /echo)",
            ));
        }
        if cfg.body_size > self.max_body {
            return Err(ClientError::InvalidConfig(
                "body_size exceeds the http protocol's max_body",
            ));
        }
        let target = match cfg.body_size {
            0 => HttpTarget::Ping,
            size => HttpTarget::Echo { size },
        };
        // A socket address is visible ASCII (IPv6 in brackets).
        HttpRequest::new(&cfg.addr.to_string(), target)
            .map_err(|_| ClientError::InvalidConfig("the address is not a valid Host"))
    }
}

impl LoadProtocol for Resp {
    /// [`Resp::command`] with values of `body_size` bytes (up to
    /// [`Resp::max_reply`]). `msg_type` must be left at its default, ECHO:
    /// it is warpwire's.
    fn load_request(&self, cfg: &LoadConfig) -> Result<RespRequest, ClientError> {
        if cfg.msg_type != MessageType::ECHO {
            return Err(ClientError::InvalidConfig(
                "msg_type applies to the warpwire protocol only (resp sends SET, GET or PING: Resp::command)",
            ));
        }
        if cfg.body_size > self.max_reply {
            return Err(ClientError::InvalidConfig(
                "body_size exceeds the resp protocol's max_reply",
            ));
        }
        let size = cfg.body_size;
        Ok(match self.command {
            RespCommand::Set => RespRequest::Set { size },
            RespCommand::Get => RespRequest::Get { size },
            RespCommand::Ping => RespRequest::Ping,
        })
    }
}

/// Counters shared by the workers and the progress loop.
struct Shared {
    messages: AtomicU64,
    errors: AtomicU64,
    /// A worker failed to set up (or to start); the others give up.
    abort: AtomicBool,
    /// Workers whose connections are all up (a barrier that `abort` can
    /// release, unlike `std::sync::Barrier`).
    connected: AtomicUsize,
    workers: usize,
    /// The clock starts when every worker is connected.
    start: OnceLock<Instant>,
}

impl Shared {
    /// Waits until every worker is connected; false if the run aborted.
    fn all_connected(&self) -> bool {
        self.connected.fetch_add(1, Ordering::SeqCst);
        loop {
            if self.abort.load(Ordering::SeqCst) {
                return false;
            }
            if self.connected.load(Ordering::SeqCst) >= self.workers {
                return true;
            }
            // Set-up phase only: a millisecond of skew does not matter.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// What one worker hands back.
struct WorkerResult {
    hist: Histogram<u64>,
    messages: u64,
    errors: u64,
    lost: u64,
    last_reply: Option<Instant>,
    finished: Instant,
    /// How long opening this worker's connections took.
    ramp: Duration,
}

/// Runs a load test of the warpwire protocol: `factory` builds one
/// transport per worker thread; `progress` is called about every 250 ms
/// (and once at the end) from the calling thread.
pub fn run<T, F>(
    factory: F,
    cfg: &LoadConfig,
    progress: impl Fn(&Progress) + Sync,
) -> Result<LoadReport, ClientError>
where
    T: Transport,
    F: Fn() -> Result<T, TransportError> + Sync,
{
    run_with(&Warpwire::default(), factory, cfg, progress)
}

/// Runs a load test of any protocol; otherwise like [`run`]. The workers
/// are monomorphised over `P` and `T`.
pub fn run_with<P, T, F>(
    protocol: &P,
    factory: F,
    cfg: &LoadConfig,
    progress: impl Fn(&Progress) + Sync,
) -> Result<LoadReport, ClientError>
where
    P: LoadProtocol,
    T: Transport,
    F: Fn() -> Result<T, TransportError> + Sync,
{
    cfg.validate()?;
    let request = protocol.load_request(cfg)?;
    let threads = cfg.threads.clamp(1, cfg.connections);
    let shared = Shared {
        messages: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        abort: AtomicBool::new(false),
        connected: AtomicUsize::new(0),
        workers: threads,
        start: OnceLock::new(),
    };
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(threads);
    let results: Vec<Result<WorkerResult, ClientError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let conns: Vec<usize> = (t..cfg.connections).step_by(threads).collect();
                let (shared, factory, request, done) =
                    (&shared, &factory, &request, done_tx.clone());
                std::thread::Builder::new()
                    .name(format!("warpwire-load-{t}"))
                    .spawn_scoped(s, move || {
                        let _done = DoneGuard(done);
                        worker::run(protocol, factory, cfg, request, &conns, shared)
                    })
            })
            .collect();
        drop(done_tx);
        if handles.iter().any(|h| h.is_err()) {
            // The others would wait for this worker forever.
            shared.abort.store(true, Ordering::SeqCst);
        }
        report_progress(cfg, &shared, &done_rx, threads, &progress);
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().unwrap_or(Err(ClientError::Closed)),
                Err(e) => Err(ClientError::Spawn(e)),
            })
            .collect()
    });
    let mut ok = Vec::with_capacity(results.len());
    let mut first_err = None;
    for r in results {
        match r {
            Ok(r) => ok.push(r),
            // Workers released by another's failure report Closed; keep the
            // failure itself.
            Err(ClientError::Closed) if first_err.is_some() => {}
            Err(e) if matches!(first_err, None | Some(ClientError::Closed)) => first_err = Some(e),
            Err(_) => {}
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let start = shared.start.get().copied().unwrap_or_else(Instant::now);
    let report = merge(cfg, protocol.name(), threads, start + cfg.warmup, ok)?;
    progress(&Progress {
        messages: report.messages,
        errors: report.errors,
        elapsed: report.elapsed,
        rate: report.throughput_msgs_per_s,
        warmup: false,
        target_count: cfg.count,
        target_duration: cfg.duration,
    });
    Ok(report)
}

/// Signals the progress loop when a worker ends, even by panic.
struct DoneGuard(crossbeam_channel::Sender<()>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

fn report_progress(
    cfg: &LoadConfig,
    shared: &Shared,
    done: &crossbeam_channel::Receiver<()>,
    threads: usize,
    progress: &impl Fn(&Progress),
) {
    let mut finished = 0;
    let mut last = (Instant::now(), 0u64);
    while finished < threads {
        let tick = Instant::now() + PROGRESS_INTERVAL;
        while finished < threads {
            match done.recv_deadline(tick) {
                Ok(()) => finished += 1,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
                // Every guard is gone: every worker is done.
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => finished = threads,
            }
        }
        if finished >= threads {
            break;
        }
        let Some(start) = shared.start.get() else {
            continue;
        };
        let now = Instant::now();
        let measure = *start + cfg.warmup;
        let messages = shared.messages.load(Ordering::Relaxed);
        let dt = now.saturating_duration_since(last.0).as_secs_f64();
        let rate = if dt > 0.0 {
            messages.saturating_sub(last.1) as f64 / dt
        } else {
            0.0
        };
        last = (now, messages);
        progress(&Progress {
            messages,
            errors: shared.errors.load(Ordering::Relaxed),
            elapsed: now.saturating_duration_since(measure),
            rate,
            warmup: now < measure,
            target_count: cfg.count,
            target_duration: cfg.duration,
        });
    }
}

fn make_body(size: usize) -> Bytes {
    // A pattern rather than zeros, so a server that mangles bodies is seen.
    (0..size)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into()
}

fn new_histogram() -> Result<Histogram<u64>, ClientError> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGFIG)
        .map_err(|e| ClientError::Histogram(Box::new(e)))
}

fn merge(
    cfg: &LoadConfig,
    protocol: &'static str,
    threads: usize,
    measure_start: Instant,
    results: Vec<WorkerResult>,
) -> Result<LoadReport, ClientError> {
    let mut hist = new_histogram()?;
    let (mut messages, mut errors, mut lost) = (0u64, 0u64, 0u64);
    let mut end: Option<Instant> = None;
    let mut finished = measure_start;
    let ramp = results.iter().map(|r| r.ramp).max().unwrap_or_default();
    for r in &results {
        hist.add(&r.hist)
            .map_err(|e| ClientError::Histogram(Box::new(e)))?;
        messages += r.messages;
        errors += r.errors;
        lost += r.lost;
        if let Some(t) = r.last_reply {
            end = Some(end.map_or(t, |e| e.max(t)));
        }
        finished = finished.max(r.finished);
    }
    let elapsed = end
        .unwrap_or(finished)
        .saturating_duration_since(measure_start);
    let secs = elapsed.as_secs_f64();
    let per_s = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
    let q = |quantile: f64| {
        if hist.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_nanos(hist.value_at_quantile(quantile))
        }
    };
    let body_size = cfg.effective_body_size();
    Ok(LoadReport {
        messages,
        errors,
        lost,
        elapsed,
        throughput_msgs_per_s: per_s(messages as f64),
        throughput_bytes_per_s: per_s(messages as f64 * body_size as f64),
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
        max: if hist.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_nanos(hist.max())
        },
        mean: Duration::from_nanos(hist.mean() as u64),
        connections: cfg.connections,
        depth: cfg.pipeline_depth,
        body_size,
        threads,
        msg_type: cfg.msg_type,
        protocol,
        ramp,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn validation() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let cfg = LoadConfig::new(addr);
        cfg.validate().unwrap();
        let req = Warpwire::default().load_request(&cfg).unwrap();
        assert_eq!((req.msg_type, req.body.len()), (MessageType::ECHO, 64));
        assert_eq!(
            Echo::default().load_request(&cfg).unwrap(),
            EchoRequest { size: 64 }
        );
        let bad = [
            LoadConfig {
                connections: 0,
                ..LoadConfig::new(addr)
            },
            LoadConfig {
                pipeline_depth: 0,
                ..LoadConfig::new(addr)
            },
            LoadConfig {
                duration: None,
                count: None,
                ..LoadConfig::new(addr)
            },
            LoadConfig {
                rate: Some(0.0),
                ..LoadConfig::new(addr)
            },
            LoadConfig {
                rate: Some(f64::NAN),
                ..LoadConfig::new(addr)
            },
            LoadConfig {
                msg_type: MessageType::BROADCAST,
                ..LoadConfig::new(addr)
            },
        ];
        for cfg in bad {
            let r = cfg
                .validate()
                .and_then(|()| Warpwire::default().load_request(&cfg).map(drop));
            assert!(matches!(r, Err(ClientError::InvalidConfig(_))), "{cfg:?}");
        }
        let echo_bad = [
            LoadConfig {
                msg_type: MessageType::PING,
                ..LoadConfig::new(addr)
            },
            LoadConfig {
                body_size: 0,
                ..LoadConfig::new(addr)
            },
            LoadConfig {
                body_size: Echo::DEFAULT_MAX_REQUEST + 1,
                ..LoadConfig::new(addr)
            },
        ];
        for cfg in echo_bad {
            assert!(
                matches!(
                    Echo::default().load_request(&cfg),
                    Err(ClientError::InvalidConfig(_))
                ),
                "{cfg:?}"
            );
        }
        let http = Http::default();
        assert_eq!(
            http.load_request(&cfg).unwrap().target(),
            HttpTarget::Echo { size: 64 }
        );
        let zero = LoadConfig {
            body_size: 0,
            ..LoadConfig::new(addr)
        };
        assert_eq!(http.load_request(&zero).unwrap().target(), HttpTarget::Ping);
        for cfg in [
            LoadConfig {
                msg_type: MessageType::PING,
                ..LoadConfig::new(addr)
            },
            LoadConfig {
                body_size: Http::DEFAULT_MAX_BODY + 1,
                ..LoadConfig::new(addr)
            },
        ] {
            assert!(
                matches!(http.load_request(&cfg), Err(ClientError::InvalidConfig(_))),
                "{cfg:?}"
            );
        }
        let ping = LoadConfig {
            msg_type: MessageType::PING,
            body_size: 1000,
            ..LoadConfig::new(addr)
        };
        assert_eq!(ping.effective_body_size(), 8);
        let resp = |command| Resp {
            command,
            ..Resp::default()
        };
        assert_eq!(
            resp(RespCommand::Set).load_request(&cfg).unwrap(),
            RespRequest::Set { size: 64 }
        );
        assert_eq!(
            resp(RespCommand::Get).load_request(&cfg).unwrap(),
            RespRequest::Get { size: 64 }
        );
        assert_eq!(
            resp(RespCommand::Ping).load_request(&cfg).unwrap(),
            RespRequest::Ping
        );
        for cfg in [
            ping,
            LoadConfig {
                body_size: Resp::DEFAULT_MAX_REPLY + 1,
                ..LoadConfig::new(addr)
            },
        ] {
            assert!(
                matches!(
                    Resp::default().load_request(&cfg),
                    Err(ClientError::InvalidConfig(_))
                ),
                "{cfg:?}"
            );
        }
    }
}
