//! Command-line definitions. Every server option also reads a `WARPWIRE_*`
//! environment variable and a key of the config file; precedence is flag >
//! environment > config file > default (merged in `settings`).

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use warpwire_engine::ListenerConfig;
use warpwire_transport::{LatencyPolicy, TransportChoice};

use crate::addr::HostPort;

/// Version line: crate version, git revision, compiled-in backends.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("WARPWIRE_GIT_REV"),
    "; backends: ",
    env!("WARPWIRE_BACKENDS"),
    ")"
);

/// warpwire: one binary framing protocol over kernel TCP, AF_XDP, DPDK and RDMA.
#[derive(Debug, Parser)]
#[command(name = "warpwire", version = VERSION, propagate_version = true)]
pub struct Cli {
    /// TOML config file (see docs/operations.md).
    #[arg(long, global = true, env = "WARPWIRE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log filter (RUST_LOG syntax), e.g. info, debug, warpwire_engine=trace.
    #[arg(long, global = true, env = "WARPWIRE_LOG", default_value = "info")]
    pub log: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Talk to a server: ping, echo, broadcast, data, stats, auth, app, listen, shell.
    Client(ClientArgs),
    /// Load-test a server: throughput and latency percentiles.
    Bench(BenchArgs),
    /// Show every backend: compiled in, available, why not, and the choice.
    Probe(ProbeArgs),
    /// Manage the users file of hashed tokens.
    Users(UsersArgs),
    /// Write a development CA, server and client certificate for TLS.
    Certs(crate::tls::CertsArgs),
}

/// Transport selection, shared by serve, client, bench and probe.
#[derive(Debug, Args, Clone)]
pub struct SelectArgs {
    /// auto, socket, uring, xdp, dpdk or rdma. A forced transport that is
    /// unavailable is an error, never a silent fallback.
    #[arg(long, env = "WARPWIRE_TRANSPORT")]
    pub transport: Option<TransportChoice>,
    /// lowest, balanced or compatible.
    #[arg(long, env = "WARPWIRE_LATENCY_POLICY")]
    pub latency_policy: Option<LatencyPolicy>,
}

/// Options of the bypass backends: AF_XDP and DPDK, which run their own
/// TCP/IP stack on an interface or port, and RDMA's buffer sizes. The same
/// keys make the config file's `[bypass]` table.
#[derive(Debug, Args, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BypassArgs {
    /// Network interface for `--transport xdp`.
    #[arg(long, env = "WARPWIRE_IFACE")]
    pub iface: Option<String>,
    /// The stack's own address and prefix, e.g. 10.77.0.1/24.
    #[arg(long, env = "WARPWIRE_IP")]
    pub ip: Option<String>,
    /// Default gateway of the stack.
    #[arg(long, env = "WARPWIRE_GATEWAY")]
    pub gateway: Option<std::net::Ipv4Addr>,
    /// MAC address of the stack [default: the interface's].
    #[arg(long, env = "WARPWIRE_MAC")]
    pub mac: Option<String>,
    /// NIC queues to serve, one worker each [default: 1].
    #[arg(long, env = "WARPWIRE_QUEUES")]
    pub queues: Option<usize>,
    /// DPDK port to serve [default: the first one EAL finds].
    #[arg(long, env = "WARPWIRE_PORT")]
    pub port: Option<u16>,
    /// EAL arguments for `--transport dpdk`, e.g. "--no-huge --no-pci -m 256 --vdev=net_memif0".
    #[arg(long, env = "WARPWIRE_DPDK_ARGS", allow_hyphen_values = true)]
    pub dpdk_args: Option<String>,
    /// Record every frame the stack sees to this pcap file.
    #[arg(long, env = "WARPWIRE_PCAP")]
    pub pcap: Option<PathBuf>,
    /// RDMA: receive buffers each connection keeps posted, and send
    /// buffers it may fill (the credit window) [default: 16].
    #[arg(long, env = "WARPWIRE_RDMA_DEPTH")]
    pub rdma_depth: Option<u16>,
    /// RDMA: bytes per buffer, the largest SEND [default: 8192].
    /// Registered memory per connection is 2 x depth x this.
    #[arg(long, env = "WARPWIRE_RDMA_BUFFER")]
    pub rdma_buffer: Option<u32>,
    /// Userspace TCP (xdp, dpdk): receive buffer per connection, bytes; the
    /// largest window offered [default: 65536]. Allocated untouched:
    /// resident memory is the pages a connection's traffic reaches.
    #[arg(long, env = "WARPWIRE_TCP_RX_BUFFER")]
    pub tcp_rx_buffer: Option<usize>,
    /// Userspace TCP: send buffer per connection, bytes [default: 16384;
    /// 262144 for `client`, whose one connection's bytes in flight it
    /// bounds].
    #[arg(long, env = "WARPWIRE_TCP_TX_BUFFER")]
    pub tcp_tx_buffer: Option<usize>,
    /// Userspace TCP: half-open handshakes per listened port (the SYN
    /// queue); beyond it the oldest stale one is evicted or the SYN dropped
    /// for the client to retry [default: 4096].
    #[arg(long, env = "WARPWIRE_TCP_BACKLOG")]
    pub tcp_backlog: Option<usize>,
    /// Userspace TCP: segmentation offload in software, on or off: the
    /// stack sends up to 16 KiB per smoltcp pass and cuts it into wire
    /// segments, for one more copy of the bytes [default: on for xdp, off
    /// for dpdk, where over net_memif the copy cost more than it saved].
    #[arg(long, env = "WARPWIRE_TCP_GSO", value_parser = clap::builder::BoolishValueParser::new())]
    pub tcp_gso: Option<bool>,
}

/// `warpwire bench --protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchProtocol {
    /// warpwire's binary framing.
    Warpwire,
    /// RFC 862 echo.
    Echo,
    /// HTTP/1.1 against warpwire's HTTP listener: `POST /echo` of `--size`
    /// bytes, or `GET /ping` with `--size 0`.
    Http,
    /// RESP2 against warpwire's RESP listener or a Redis server: `SET`,
    /// `GET` or `PING` (`--command`).
    Resp,
}

/// `warpwire bench --protocol resp --command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RespCommandArg {
    /// `SET key:<n> <value of --size bytes>`; `+OK` expected.
    Set,
    /// `GET key:<n>`; nil or a value a `SET` run wrote expected.
    Get,
    /// `PING`; `+PONG` expected.
    Ping,
}

/// `warpwire serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address, HOST:PORT (a name is resolved once; the first of its
    /// addresses that can be bound is used) [default: 127.0.0.1:7077].
    #[arg(long, env = "WARPWIRE_LISTEN")]
    pub listen: Option<HostPort>,
    /// Another listen address and the protocol it serves, PROTOCOL=IP:PORT
    /// (protocols: warpwire, echo, http, resp), PROTOCOL+tls=IP:PORT for
    /// TLS; repeatable, or comma-separated in the environment. Replaces
    /// the config file's `[[server.listeners]]`.
    #[arg(
        long = "listener",
        value_name = "PROTOCOL=ADDR",
        env = "WARPWIRE_LISTENERS",
        value_delimiter = ','
    )]
    pub listeners: Vec<ListenerConfig>,
    /// Worker threads [default: one per core].
    #[arg(long, env = "WARPWIRE_WORKERS")]
    pub workers: Option<usize>,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub bypass: BypassArgs,
    #[command(flatten)]
    pub tls: crate::tls::ServerTlsArgs,
    /// Largest metadata + body per frame, bytes [default: 1048576].
    #[arg(long, env = "WARPWIRE_MAX_FRAME")]
    pub max_frame: Option<u32>,
    /// Open connections across all workers [default: 10000].
    #[arg(long, env = "WARPWIRE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Per-connection rate limit, frames/s.
    #[arg(long, env = "WARPWIRE_CONN_RATE")]
    pub conn_rate: Option<f64>,
    /// Per-connection burst, frames [default: one second of --conn-rate].
    #[arg(long, env = "WARPWIRE_CONN_BURST")]
    pub conn_burst: Option<f64>,
    /// Server-wide rate limit, frames/s.
    #[arg(long, env = "WARPWIRE_GLOBAL_RATE")]
    pub global_rate: Option<f64>,
    /// Server-wide burst, frames.
    #[arg(long, env = "WARPWIRE_GLOBAL_BURST")]
    pub global_burst: Option<f64>,
    /// Close connections silent this long, e.g. 60s, 500ms [default: 60s].
    #[arg(long, env = "WARPWIRE_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Require AUTH before anything but PING: `--require-auth`,
    /// `--require-auth=false` (which overrides the config file).
    #[arg(long, env = "WARPWIRE_REQUIRE_AUTH", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub require_auth: Option<bool>,
    /// Spin on the transport instead of sleeping when idle: `--busy-poll`,
    /// `--busy-poll=false` [default: what --latency-policy implies].
    #[arg(long, env = "WARPWIRE_BUSY_POLL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub busy_poll: Option<bool>,
    /// Users file (written by `warpwire users add`).
    #[arg(long, env = "WARPWIRE_USERS")]
    pub users: Option<PathBuf>,
    /// UNAUTHENTICATED answers before closing [default: 3].
    #[arg(long, env = "WARPWIRE_MAX_UNAUTHENTICATED")]
    pub max_unauthenticated: Option<u32>,
    /// AUTH_FAILED answers before closing [default: 3].
    #[arg(long, env = "WARPWIRE_MAX_AUTH_FAILURES")]
    pub max_auth_failures: Option<u32>,
    /// Queued reply bytes per connection before reading pauses [default: 4194304].
    #[arg(long, env = "WARPWIRE_MAX_OUTPUT")]
    pub max_output: Option<usize>,
    /// Received bytes buffered across all connections before the largest
    /// partial frames are refused (SERVER_BUSY) [default: 1073741824].
    #[arg(long, env = "WARPWIRE_MAX_BUFFERED_INPUT")]
    pub max_buffered_input: Option<usize>,
    /// Application worker threads, for handlers that may block (the DATA
    /// directory sink) [default: 0 = 4 per core].
    #[arg(long, env = "WARPWIRE_APP_WORKERS")]
    pub app_workers: Option<usize>,
    /// Jobs queued for the application workers before a connection's job
    /// waits (its reading paused) [default: 1024].
    #[arg(long, env = "WARPWIRE_APP_QUEUE")]
    pub app_queue: Option<usize>,
    /// Prometheus text endpoint, HOST:PORT, e.g. 127.0.0.1:9077.
    #[arg(long, env = "WARPWIRE_METRICS")]
    pub metrics: Option<HostPort>,
    /// Append each session's DATA to DIR/<session-id>.data [default: discard].
    #[arg(long, env = "WARPWIRE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP: longest request line before 414 [default: 8192].
    #[arg(long, env = "WARPWIRE_HTTP_MAX_REQUEST_LINE")]
    pub http_max_request_line: Option<usize>,
    /// HTTP: largest request head before 431 [default: 16384].
    #[arg(long, env = "WARPWIRE_HTTP_MAX_HEAD")]
    pub http_max_head: Option<usize>,
    /// HTTP: largest request body before 413 [default: 1048576].
    #[arg(long, env = "WARPWIRE_HTTP_MAX_BODY")]
    pub http_max_body: Option<usize>,
    /// Redis: bytes the keyspace may hold before writes answer -OOM; 0 is
    /// unlimited [default: 0].
    #[arg(long, env = "WARPWIRE_RESP_MAXMEMORY")]
    pub resp_maxmemory: Option<u64>,
    /// Graceful-shutdown grace period [default: 5s].
    #[arg(long, env = "WARPWIRE_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// Print the effective configuration (every setting after flags,
    /// environment, config file and defaults) as a config file, and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// `warpwire users`.
#[derive(Debug, Args)]
pub struct UsersArgs {
    /// The action.
    #[command(subcommand)]
    pub action: UsersAction,
}

/// `warpwire users ...` actions.
#[derive(Debug, Subcommand)]
pub enum UsersAction {
    /// Add (or replace) a user; prints the token once if none is given.
    Add {
        /// User name (1-255 bytes).
        name: String,
        /// Users file to create or update.
        #[arg(long, env = "WARPWIRE_USERS", default_value = "users.toml")]
        users: PathBuf,
        /// Use this token instead of generating one.
        #[arg(long, env = "WARPWIRE_TOKEN")]
        token: Option<String>,
    },
}

/// `warpwire probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub bypass: BypassArgs,
}

/// `warpwire client ADDR ACTION`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server address, HOST:PORT (every address a name resolves to is
    /// tried in turn).
    pub addr: HostPort,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub bypass: BypassArgs,
    #[command(flatten)]
    pub tls: crate::tls::ClientTlsArgs,
    /// Per-request (and connect) timeout.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Authenticate as this user on connect (with --token).
    #[arg(long, env = "WARPWIRE_USER")]
    pub user: Option<String>,
    /// The user's token.
    #[arg(long, env = "WARPWIRE_TOKEN")]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: ClientAction,
}

/// Client actions.
#[derive(Debug, Subcommand)]
pub enum ClientAction {
    /// Measure round trips with PING.
    Ping {
        /// How many.
        #[arg(short, long, default_value_t = 4)]
        count: u64,
        /// Pause between pings.
        #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
    /// Send TEXT, print the echo.
    Echo {
        /// The body.
        text: String,
    },
    /// Relay TEXT to every other connection; print the recipient count.
    Broadcast {
        /// The body.
        text: String,
    },
    /// Send TEXT or a file as DATA, in chunks, acknowledged at the end.
    Data {
        /// The body (or use --file).
        text: Option<String>,
        /// Send this file's bytes.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Bytes per DATA frame.
        #[arg(long, default_value_t = 65536)]
        chunk: usize,
    },
    /// Print the server's counters.
    Stats,
    /// Authenticate and print the session id.
    Auth {
        /// User name.
        user: String,
        /// Token.
        token: String,
    },
    /// Call an application handler (0x80 REVERSE, 0x81 UPPERCASE in the stock server).
    App {
        /// Message type: 0xNN or decimal.
        #[arg(value_parser = crate::client_cmd::parse_type)]
        msg_type: u8,
        /// The body.
        text: String,
    },
    /// Print broadcasts as they arrive.
    Listen {
        /// Stop after this many.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
    /// An interactive prompt.
    Shell,
}

/// `warpwire bench ADDR`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server address, HOST:PORT (every address a name resolves to is
    /// tried in turn).
    pub addr: HostPort,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub bypass: BypassArgs,
    #[command(flatten)]
    pub tls: crate::tls::ClientTlsArgs,
    /// Connections.
    #[arg(short, long, default_value_t = 1)]
    pub connections: usize,
    /// Requests in flight per connection.
    #[arg(short, long, default_value_t = 1)]
    pub depth: usize,
    /// Body bytes per request.
    #[arg(short, long, default_value_t = 64)]
    pub size: usize,
    /// Measured duration [default: 10s, or unlimited with --count].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many replies.
    #[arg(long)]
    pub count: Option<u64>,
    /// Target rate, requests/s in total.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Load-generator threads (each with its own transport).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Unmeasured traffic first.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// echo, ping, data, or an application type (0xNN). Warpwire only:
    /// with `--protocol echo`, `http` or `resp` it must stay at its default.
    #[arg(long = "type", default_value = "echo")]
    pub msg_type: String,
    /// The protocol the server speaks: warpwire (this binary's framing),
    /// echo (RFC 862: every byte sent comes back; requests are `--size`
    /// bytes of sequence number and pattern, checked on return), http
    /// (HTTP/1.1 keep-alive and pipelined, to a `--listener http=`:
    /// `POST /echo` with such a body, checked; `GET /ping` with `--size 0`)
    /// or resp (RESP2, pipelined, to a `--listener resp=` or a Redis
    /// server: see `--command`).
    #[arg(long, value_enum, default_value_t = BenchProtocol::Warpwire)]
    pub protocol: BenchProtocol,
    /// With `--protocol resp` only: the command every request sends
    /// [default: set]. `set` writes `--size` bytes (the request's id and
    /// a pattern) to `key:<n>`; `get` reads such keys and checks the value
    /// (nil if never set; values of another `--size` count as errors), so
    /// `set` then `get` is `redis-benchmark -t set,get`.
    #[arg(long, value_enum)]
    pub command: Option<RespCommandArg>,
    /// With `--protocol resp` only: keys `key:0` .. `key:<N-1>` that
    /// `set` and `get` spread over [default: 10000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub keyspace: Option<u64>,
    /// Spin instead of sleeping between polls.
    #[arg(long)]
    pub busy_poll: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}
