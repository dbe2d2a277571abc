//! Command-line definitions. Every server option also reads a `WARPWIRE_*`
//! environment variable; precedence is flag > environment > config file >
//! default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use warpwire_transport::{LatencyPolicy, TransportChoice};

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
    Serve(ServeArgs),
    /// Show every backend: compiled in, available, why not, and the choice.
    Probe(SelectArgs),
    /// Manage the users file of hashed tokens.
    Users(UsersArgs),
}

/// Transport selection, shared by serve, client, bench and probe.
#[derive(Debug, Args, Clone)]
pub struct SelectArgs {
    /// auto, socket, xdp, dpdk or rdma. A forced transport that is
    /// unavailable is an error, never a silent fallback.
    #[arg(long, env = "WARPWIRE_TRANSPORT")]
    pub transport: Option<TransportChoice>,
    /// lowest, balanced or compatible.
    #[arg(long, env = "WARPWIRE_LATENCY_POLICY")]
    pub latency_policy: Option<LatencyPolicy>,
}

/// `warpwire serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address [default: 127.0.0.1:7077].
    #[arg(long, env = "WARPWIRE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Worker threads [default: one per core].
    #[arg(long, env = "WARPWIRE_WORKERS")]
    pub workers: Option<usize>,
    #[command(flatten)]
    pub select: SelectArgs,
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
    /// Require AUTH before anything but PING.
    #[arg(long, env = "WARPWIRE_REQUIRE_AUTH")]
    pub require_auth: bool,
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
    /// Prometheus text endpoint, e.g. 127.0.0.1:9077.
    #[arg(long, env = "WARPWIRE_METRICS")]
    pub metrics: Option<SocketAddr>,
    /// Graceful-shutdown grace period [default: 5s].
    #[arg(long, env = "WARPWIRE_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Option<Duration>,
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
