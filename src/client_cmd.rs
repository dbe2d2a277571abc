//! `warpwire client ADDR ...` and `warpwire bench ADDR`.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use warpwire_client::loadgen::LoadProtocol;
use warpwire_client::protocol::RespCommand;
use warpwire_client::{
    Client, ClientConfig, Echo, Http, LoadConfig, LoadReport, Progress, Resp, Warpwire,
};
use warpwire_frame::{Frame, MessageType};
use warpwire_socket::{FileChunks, read_chunk};
use warpwire_transport::{BackendKind, Transport, TransportError};

use crate::backend::{Backend, Role, UseTransport};
use crate::cli::{BenchArgs, BenchProtocol, BypassArgs, ClientAction, ClientArgs, RespCommandArg};
use crate::serve::BoxError;
use crate::settings::FileConfig;

/// Connects to the first of the server's addresses that answers.
fn connect(file: &FileConfig, a: &ClientArgs) -> Result<Client, BoxError> {
    let addrs = a.addr.resolve()?;
    let (_, client) = a.addr.try_each(&addrs, |addr| connect_to(file, a, addr))?;
    Ok(client)
}

/// The userspace TCP send buffer of `client`'s one connection when
/// neither `--tcp-tx-buffer` nor the config file sets one. The stack's
/// default (16 KiB) is sized for a server's tens of thousands of
/// connections, and a send buffer also bounds the bytes in flight: over
/// memif it held a `data --file` upload to 475-545 MB/s, against 594-643
/// with 128 or 256 KiB (docs/benchmarks.md, issue 13, fifth session). One
/// connection can afford it; `bench`, which may open thousands, keeps the
/// stack's default.
const CLIENT_TX_BUFFER: usize = 256 * 1024;

/// `client`'s bypass options over `kind`: [`CLIENT_TX_BUFFER`] where the
/// userspace stack runs and nothing set the send buffer; untouched for the
/// other backends (the kernel-TCP ones warn about any `--tcp-*` option
/// given).
fn client_bypass(mut bypass: BypassArgs, kind: BackendKind) -> BypassArgs {
    // The backends with an address of their own are the ones running the
    // userspace stack (the facts table's rows, not a match here).
    if kind.facts().own_address {
        bypass.tcp_tx_buffer.get_or_insert(CLIENT_TX_BUFFER);
    }
    bypass
}

/// Selects a transport for `addr` (RDMA's availability depends on the
/// route to it) and connects.
fn connect_to(file: &FileConfig, a: &ClientArgs, addr: SocketAddr) -> Result<Client, BoxError> {
    let bypass = file.bypass(&a.bypass);
    let (choice, policy) = file.select(&a.select);
    let sel = crate::probe::choose(choice, policy, &bypass, crate::probe::Target::Connect(addr))?;
    let backend = Backend::new(sel.kind, &client_bypass(bypass, sel.kind))?;
    let cfg = ClientConfig {
        request_timeout: a.timeout,
        connect_timeout: a.timeout,
        busy_poll: policy.busy_poll(),
        auth: match (&a.user, &a.token) {
            (Some(u), Some(t)) => Some((u.clone(), t.clone().into_bytes())),
            (None, None) => None,
            _ => return Err("--user and --token go together".into()),
        },
        ..ClientConfig::default()
    };
    // Where a transport cannot be rebuilt (EAL once per process), a lost
    // connection cannot be either: no reconnect.
    let cfg = if backend.facts().client_reconnect {
        cfg
    } else {
        ClientConfig {
            reconnect: None,
            ..cfg
        }
    };
    let connect = ConnectWith { addr, cfg };
    match a
        .tls
        .client(a.addr.host(), warpwire_tls::alpn_for("warpwire"))?
    {
        Some(tls) => backend.run(
            Role::Client,
            crate::tls::WithClientTls {
                tls,
                inner: connect,
            },
        ),
        None => backend.run(Role::Client, connect),
    }
}

/// `client`'s code generic over the transport.
struct ConnectWith {
    addr: SocketAddr,
    cfg: ClientConfig,
}

impl UseTransport for ConnectWith {
    type Output = Client;

    fn run<T, F>(self, factory: F) -> Result<Client, BoxError>
    where
        T: Transport + 'static,
        F: Fn(usize) -> Result<T, TransportError> + Send + Sync + 'static,
    {
        Ok(Client::connect(move || factory(0), self.addr, self.cfg)?)
    }
}

/// DATA frames written but not yet known to be queued on the connection,
/// at most: enough to keep the connection busy while the next chunk is
/// read, and a memory bound (this many chunks, 8 MiB of 64 KiB ones)
/// however large the input. On two vCPUs the reading thread, the I/O
/// thread and a local server take turns: with 32 the I/O thread ran dry
/// whenever this one was descheduled, and 128 moved a loopback upload
/// 1.11x faster (per-round median of 10 alternating rounds, 8 won;
/// docs/benchmarks.md).
const DATA_IN_FLIGHT: usize = 128;

/// Streams the chunks `next` gives (each `chunk` bytes, a shorter or empty
/// one at the end) as DATA frames, pipelined, with memory bounded by
/// [`DATA_IN_FLIGHT`] chunks whatever the input's size; only the last
/// frame asks for an ACK (it confirms everything before it on the
/// connection). An empty input sends one empty frame. Returns the bytes
/// sent and the last ACK's count.
fn stream_data(
    client: &Client,
    mut next_chunk: impl FnMut() -> std::io::Result<Bytes>,
    chunk: usize,
) -> Result<(u64, u64), BoxError> {
    // One chunk read ahead, to know which one is last.
    let mut next = next_chunk()?;
    let mut in_flight = std::collections::VecDeque::with_capacity(DATA_IN_FLIGHT);
    let mut sent = 0u64;
    loop {
        let cur = next;
        sent += cur.len() as u64;
        next = if cur.len() < chunk {
            Bytes::new()
        } else {
            next_chunk()?
        };
        if next.is_empty() {
            for p in in_flight {
                warpwire_client::Pending::wait(p)?;
            }
            let acked = client.data(cur, true)?.unwrap_or(0);
            return Ok((sent, acked));
        }
        // The CRC on this thread: the I/O thread is the bound.
        let request = warpwire_client::Request::new(MessageType::DATA, cur).with_body_crc();
        in_flight.push_back(client.send(request));
        if in_flight.len() >= DATA_IN_FLIGHT {
            // Frames are queued in order: once the middle one is, so is
            // the older half. One wake-up of this thread per half window
            // rather than one per frame (a futex wake per 64 KiB frame was
            // 4 % of the I/O thread's CPU on loopback).
            if let Some(mid) = in_flight.remove(DATA_IN_FLIGHT / 2 - 1) {
                mid.wait()?;
            }
            for p in in_flight.drain(..DATA_IN_FLIGHT / 2 - 1) {
                p.wait()?;
            }
        }
    }
}

fn show(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(s) => s.to_owned(),
        Err(_) => format!("0x{}", hex::encode(body)),
    }
}

fn print_broadcast(f: &Frame) {
    let from = f
        .metadata()
        .ok()
        .and_then(|m| m.get("from").map(hex::encode))
        .unwrap_or_else(|| "?".into());
    match f.msg_type {
        MessageType::BROADCAST => println!("broadcast from {from}: {}", show(&f.body)),
        t => println!("{t} (id {}): {}", f.request_id, show(&f.body)),
    }
}

/// Runs one client action.
pub fn run(file: &FileConfig, a: ClientArgs) -> Result<(), BoxError> {
    let client = connect(file, &a)?;
    match &a.action {
        ClientAction::Ping { count, interval } => {
            for i in 0..*count {
                let rtt = client.ping()?;
                println!(
                    "pong from {}: seq={i} rtt={:.1} us",
                    client.addr(),
                    rtt.as_secs_f64() * 1e6
                );
                if i + 1 < *count {
                    std::thread::sleep(*interval);
                }
            }
        }
        ClientAction::Echo { text } => {
            println!("{}", show(&client.echo(Bytes::from(text.clone()))?))
        }
        ClientAction::Broadcast { text } => {
            let n = client.broadcast(Bytes::from(text.clone()))?;
            println!("broadcast delivered to {n} recipient(s)");
        }
        ClientAction::Data { text, file, chunk } => {
            let chunk = (*chunk).max(1);
            // From the connection up to the last ACK: the transfer's own
            // rate, without the process's or the transport's start-up.
            let started = std::time::Instant::now();
            let (sent, acked) = match (text, file) {
                (_, Some(f)) => {
                    // Sent from a mapping of the file, a window at a time
                    // (read when it cannot be mapped): no copy into the
                    // process first.
                    let mut chunks = std::fs::File::open(f)
                        .and_then(|file| FileChunks::new(file, chunk))
                        .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
                    stream_data(&client, || chunks.next_chunk(), chunk)
                        .map_err(|e| format!("{}: {e}", f.display()))?
                }
                (Some(t), None) => {
                    let mut text = t.as_bytes();
                    stream_data(&client, || read_chunk(&mut text, chunk), chunk)?
                }
                (None, None) => return Err("give TEXT or --file".into()),
            };
            let secs = started.elapsed().as_secs_f64();
            println!(
                "sent {sent} bytes of DATA in {secs:.3} s ({:.0} MB/s); last ack: {acked} bytes accepted",
                sent as f64 / secs.max(1e-9) / 1e6
            );
        }
        ClientAction::Stats => {
            let s = client.stats()?;
            println!("transport     {}", s.transport);
            println!("uptime_s      {}", s.uptime_s);
            println!("connections   {}", s.connections);
            println!("messages_in   {}", s.messages_in);
            println!("messages_out  {}", s.messages_out);
            println!("bytes_in      {}", s.bytes_in);
            println!("bytes_out     {}", s.bytes_out);
            println!("errors        {}", s.errors);
        }
        ClientAction::Auth { user, token } => {
            let r = client.auth(user, token.as_bytes())?;
            if r.ok {
                println!(
                    "authenticated as {user}; session {}",
                    hex::encode(r.session_id)
                );
            } else {
                println!("refused (the server has no users configured)");
            }
        }
        ClientAction::App { msg_type, text } => {
            println!(
                "{}",
                show(&client.app(*msg_type, Bytes::from(text.clone()))?)
            );
        }
        ClientAction::Listen { count, duration } => {
            let rx = client.subscribe();
            println!(
                "listening for broadcasts on {} (Ctrl-C to stop)",
                client.addr()
            );
            let deadline = duration.map(|d| Instant::now() + d);
            let mut seen = 0u64;
            while count.is_none_or(|c| seen < c) {
                let wait = deadline.map_or(Duration::from_millis(500), |d| {
                    d.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(500))
                });
                match rx.recv_timeout(wait) {
                    Ok(f) => {
                        print_broadcast(&f);
                        seen += 1;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
            }
        }
        ClientAction::Shell => shell(&client, client.addr())?,
    }
    client.close();
    Ok(())
}

const SHELL_HELP: &str = "commands: ping | echo TEXT | broadcast TEXT | data TEXT | stats | auth USER TOKEN | reverse TEXT | upper TEXT | app 0xNN TEXT | help | quit";

fn shell(client: &Client, addr: SocketAddr) -> Result<(), BoxError> {
    let rx = client.subscribe();
    std::thread::spawn(move || {
        for f in rx.iter() {
            print_broadcast(&f);
        }
    });
    println!("connected to {addr}. {SHELL_HELP}");
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        print!("warpwire> ");
        std::io::stdout().flush()?;
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let body = || Bytes::from(rest.to_owned());
        let out: Result<String, BoxError> = match cmd {
            "" => continue,
            "quit" | "exit" => break,
            "help" => Ok(SHELL_HELP.to_owned()),
            "ping" => client
                .ping()
                .map(|d| format!("rtt {:.1} us", d.as_secs_f64() * 1e6))
                .map_err(Into::into),
            "echo" => client.echo(body()).map(|b| show(&b)).map_err(Into::into),
            "broadcast" => client
                .broadcast(body())
                .map(|n| format!("{n} recipient(s)"))
                .map_err(Into::into),
            "data" => client
                .data(body(), true)
                .map(|n| format!("{} bytes accepted", n.unwrap_or(0)))
                .map_err(Into::into),
            "stats" => client.stats().map(|s| format!("{s:?}")).map_err(Into::into),
            "auth" => match rest.split_once(' ') {
                Some((u, t)) => client
                    .auth(u, t.as_bytes())
                    .map(|r| {
                        if r.ok {
                            format!("ok, session {}", hex::encode(r.session_id))
                        } else {
                            "refused".into()
                        }
                    })
                    .map_err(Into::into),
                None => Err("usage: auth USER TOKEN".into()),
            },
            "reverse" => client
                .app(0x80, body())
                .map(|b| show(&b))
                .map_err(Into::into),
            "upper" => client
                .app(0x81, body())
                .map(|b| show(&b))
                .map_err(Into::into),
            "app" => match rest.split_once(' ').map(|(t, b)| (parse_type(t), b)) {
                Some((Ok(t), b)) => client
                    .app(t, Bytes::from(b.to_owned()))
                    .map(|b| show(&b))
                    .map_err(Into::into),
                _ => Err("usage: app 0xNN TEXT".into()),
            },
            other => Err(format!("unknown command {other:?}; {SHELL_HELP}").into()),
        };
        match out {
            Ok(s) => println!("{s}"),
            Err(e) => println!("error: {e}"),
        }
    }
    Ok(())
}

/// Parses a message type: decimal or 0x-prefixed hex.
pub fn parse_type(s: &str) -> Result<u8, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u8::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("{s:?} is not a message type (0-255 or 0xNN)"))
}

/// `warpwire bench`.
pub fn bench(file: &FileConfig, a: BenchArgs) -> Result<(), BoxError> {
    let addrs = a.addr.resolve()?;
    // Each address in turn until one accepts the connections; a failure
    // after that (or of another kind) ends the bench.
    if let [addr] = addrs.as_slice() {
        return bench_at(file, &a, *addr);
    }
    let mut failures = Vec::new();
    for &addr in &addrs {
        match bench_at(file, &a, addr) {
            Err(e) if is_connect_failure(&*e) => failures.push(format!("{addr}: {e}")),
            other => return other,
        }
    }
    Err(format!(
        "no address of {} answered ({})",
        a.addr,
        failures.join("; ")
    )
    .into())
}

/// Whether the bench ended before any exchange because connecting failed,
/// so the next address of the name may be tried.
fn is_connect_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        e.downcast_ref::<warpwire_client::ClientError>(),
        Some(warpwire_client::ClientError::ConnectFailed { .. })
    )
}

fn bench_at(file: &FileConfig, a: &BenchArgs, addr: SocketAddr) -> Result<(), BoxError> {
    let bypass = file.bypass(&a.bypass);
    let (choice, policy) = file.select(&a.select);
    let sel = crate::probe::choose(choice, policy, &bypass, crate::probe::Target::Connect(addr))?;
    let backend = Backend::new(sel.kind, &bypass)?;
    let mut cfg = LoadConfig::new(addr);
    cfg.connections = a.connections;
    cfg.pipeline_depth = a.depth;
    cfg.body_size = a.size;
    cfg.msg_type = match (a.protocol, a.msg_type.as_str()) {
        (_, "echo") => MessageType::ECHO,
        (BenchProtocol::Echo, other) => {
            return Err(format!(
                "--type {other} is a warpwire message type; --protocol echo sends raw bytes (leave --type out)"
            )
            .into());
        }
        (BenchProtocol::Http, other) => {
            return Err(format!(
                "--type {other} is a warpwire message type; --protocol http sends POST /echo, or GET /ping with --size 0 (leave --type out)"
            )
            .into());
        }
        (BenchProtocol::Resp, other) => {
            return Err(format!(
                "--type {other} is a warpwire message type; --protocol resp sends SET, GET or PING (choose with --command, leave --type out)"
            )
            .into());
        }
        (BenchProtocol::Warpwire, "ping") => MessageType::PING,
        (BenchProtocol::Warpwire, "data") => MessageType::DATA,
        (BenchProtocol::Warpwire, other) => MessageType(parse_type(other)?),
    };
    let mut resp = Resp::default();
    if a.protocol == BenchProtocol::Resp {
        resp.keyspace = a.keyspace.unwrap_or(Resp::DEFAULT_KEYSPACE);
        resp.command = match a.command.unwrap_or(RespCommandArg::Set) {
            RespCommandArg::Set => RespCommand::Set,
            RespCommandArg::Get => RespCommand::Get,
            RespCommandArg::Ping => RespCommand::Ping,
        };
        if resp.command == RespCommand::Ping {
            // PING carries no value: the report's byte rate counts none.
            cfg.body_size = 0;
        }
    } else if a.command.is_some() || a.keyspace.is_some() {
        return Err("--command and --keyspace apply to --protocol resp only".into());
    }
    cfg.duration = if a.count.is_some() && a.duration.is_none() {
        None
    } else {
        Some(a.duration.unwrap_or(Duration::from_secs(10)))
    };
    cfg.count = a.count;
    cfg.rate = a.rate;
    cfg.threads = a.threads;
    cfg.warmup = a.warmup;
    cfg.busy_poll = a.busy_poll || policy.busy_poll();

    let bar = if a.json {
        ProgressBar::hidden()
    } else {
        let b = match cfg.count {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new(cfg.duration.map_or(0, |d| d.as_millis() as u64)),
        };
        b.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let counting = cfg.count.is_some();
    let progress = |p: &Progress| {
        bar.set_position(if counting {
            p.messages
        } else {
            p.elapsed.as_millis() as u64
        });
        bar.set_message(format!(
            "{}{} msgs, {:.0} msg/s, {} errors",
            if p.warmup { "warmup: " } else { "" },
            p.messages,
            p.rate,
            p.errors
        ));
    };
    let alpn = warpwire_tls::alpn_for(match a.protocol {
        BenchProtocol::Warpwire => "warpwire",
        BenchProtocol::Echo => "echo",
        BenchProtocol::Http => "http",
        BenchProtocol::Resp => "resp",
    });
    let tls = a.tls.client(a.addr.host(), alpn)?;
    let report = match a.protocol {
        BenchProtocol::Warpwire => load(&Warpwire::default(), &backend, tls, &mut cfg, progress)?,
        BenchProtocol::Echo => load(&Echo::default(), &backend, tls, &mut cfg, progress)?,
        BenchProtocol::Http => load(&Http::default(), &backend, tls, &mut cfg, progress)?,
        BenchProtocol::Resp => load(&resp, &backend, tls, &mut cfg, progress)?,
    };
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    if report.errors > 0 || report.lost > 0 {
        return Err(format!("{} errors, {} requests lost", report.errors, report.lost).into());
    }
    Ok(())
}

/// Runs the load generator for `protocol` over the selected backend (one
/// monomorphised run per protocol and transport).
fn load<P: LoadProtocol>(
    protocol: &P,
    backend: &Backend,
    tls: Option<warpwire_tls::ClientTls>,
    cfg: &mut LoadConfig,
    progress: impl Fn(&Progress) + Sync,
) -> Result<LoadReport, BoxError> {
    // One transport per process or queue: the load runs on one thread.
    if backend.facts().client_one_thread {
        cfg.threads = 1;
    }
    let run = LoadWith {
        protocol,
        cfg,
        progress,
    };
    match tls {
        Some(tls) => backend.run(Role::Client, crate::tls::WithClientTls { tls, inner: run }),
        None => backend.run(Role::Client, run),
    }
}

/// `bench`'s code generic over the transport.
struct LoadWith<'a, P, G> {
    protocol: &'a P,
    cfg: &'a LoadConfig,
    progress: G,
}

impl<P: LoadProtocol, G: Fn(&Progress) + Sync> UseTransport for LoadWith<'_, P, G> {
    type Output = LoadReport;

    fn run<T, F>(self, factory: F) -> Result<LoadReport, BoxError>
    where
        T: Transport + 'static,
        F: Fn(usize) -> Result<T, TransportError> + Send + Sync + 'static,
    {
        Ok(warpwire_client::loadgen::run_with(
            self.protocol,
            || factory(0),
            self.cfg,
            self.progress,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_the_userspace_stack_gets_a_larger_send_buffer() {
        for kind in [BackendKind::Xdp, BackendKind::Dpdk] {
            let b = client_bypass(BypassArgs::default(), kind);
            assert_eq!(b.tcp_tx_buffer, Some(CLIENT_TX_BUFFER), "{kind}");
            // One given on the command line or in the file is kept.
            let given = BypassArgs {
                tcp_tx_buffer: Some(8192),
                ..BypassArgs::default()
            };
            assert_eq!(client_bypass(given, kind).tcp_tx_buffer, Some(8192));
        }
        // Kernel TCP has no such buffer: nothing set, nothing to warn about.
        for kind in [BackendKind::Socket, BackendKind::Uring, BackendKind::Rdma] {
            assert_eq!(
                client_bypass(BypassArgs::default(), kind),
                BypassArgs::default()
            );
        }
    }
}
