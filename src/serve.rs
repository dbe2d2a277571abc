//! `warpwire serve` and `warpwire users`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use warpwire_engine::{Server, ServerConfig, UserDb};
use warpwire_socket::{SocketConfig, SocketTransport};

use crate::backend::Backend;
use crate::cli::{ServeArgs, UsersAction, UsersArgs};

/// Errors reaching `main` (each printed with its cause chain).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The config file: transport selection plus a `[server]` table of
/// [`ServerConfig`] keys.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `auto`, `socket`, `xdp`, `dpdk`, `rdma`.
    pub transport: Option<String>,
    /// `lowest`, `balanced`, `compatible`.
    pub latency_policy: Option<String>,
    /// EAL arguments for the dpdk transport (`--dpdk-args` overrides).
    pub dpdk_args: Option<String>,
    /// Server settings.
    pub server: ServerConfig,
}

/// The bypass options with what the config file adds (flags win).
pub fn bypass_with_file(
    config: Option<&Path>,
    b: &crate::cli::BypassArgs,
) -> Result<crate::cli::BypassArgs, BoxError> {
    let mut b = b.clone();
    if b.dpdk_args.is_none() {
        b.dpdk_args = load_file(config)?.dpdk_args;
    }
    Ok(b)
}

/// Reads the config file, or defaults when none is given.
pub fn load_file(path: Option<&Path>) -> Result<FileConfig, BoxError> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()).into())
}

fn server_config(file: ServerConfig, a: &ServeArgs) -> ServerConfig {
    let mut c = file;
    macro_rules! set {
        ($($field:ident <- $arg:expr),* $(,)?) => {$(if let Some(v) = $arg { c.$field = v; })*};
    }
    set!(
        listen <- a.listen,
        workers <- a.workers,
        max_frame <- a.max_frame,
        max_connections <- a.max_connections,
        idle_timeout <- a.idle_timeout,
        max_unauthenticated <- a.max_unauthenticated,
        max_auth_failures <- a.max_auth_failures,
        max_output <- a.max_output,
        shutdown_grace <- a.shutdown_grace,
    );
    set!(
        conn_rate <- a.conn_rate.map(Some),
        conn_burst <- a.conn_burst.map(Some),
        global_rate <- a.global_rate.map(Some),
        global_burst <- a.global_burst.map(Some),
        users_file <- a.users.clone().map(Some),
        metrics <- a.metrics.map(Some),
    );
    c.require_auth |= a.require_auth;
    c
}

/// Runs the server until SIGINT or SIGTERM, then shuts down gracefully; a
/// second signal exits at once.
pub fn run(config: Option<&Path>, a: ServeArgs) -> Result<(), BoxError> {
    let file = load_file(config)?;
    let bypass = bypass_with_file(config, &a.bypass)?;
    let mut cfg = server_config(file.server, &a);
    let target = crate::probe::Target::Listen(cfg.listen);
    let (selection, policy) = crate::probe::choose(config, &a.select, &bypass, target)?;
    let backend = Backend::new(selection.kind, &bypass)?;
    cfg.busy_poll = policy.busy_poll();
    cfg.workers = backend.workers(cfg.workers);
    cfg.listen = backend.listen_addr(cfg.listen);
    tracing::info!(transport = %selection.kind, reason = %selection.reason, "transport selected");

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Second signal: exit immediately (status 1) instead of waiting.
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }

    let mut server = Server::new(cfg);
    if let Some(dir) = &a.data_dir {
        let sink = warpwire_engine::DirectorySink::new(dir)
            .map_err(|e| format!("--data-dir {}: {e}", dir.display()))?;
        server.data_handler(sink);
    }
    let handle = match &backend {
        Backend::Socket => {
            server.start(|_| SocketTransport::with_config(SocketConfig::default()))?
        }
        #[cfg(feature = "rdma")]
        Backend::Rdma(rc) => {
            // rdma_cm has no SO_REUSEPORT: the workers share one listener.
            let (rc, shared) = (rc.clone(), warpwire_rdma::RdmaShared::new());
            server.start(move |_| {
                warpwire_rdma::RdmaTransport::with_shared(rc.clone(), shared.clone())
            })?
        }
        #[cfg(feature = "xdp")]
        Backend::Xdp { iface, stack, .. } => {
            let (iface, stack) = (iface.clone(), stack.clone());
            server.start(move |i| crate::backend::xdp_transport(&iface, i, &stack))?
        }
        // One EAL, port and mempool for the process, set up here (this
        // thread becomes EAL's main lcore) and owned by the worker factory:
        // worker i registers, pins itself and serves queue i. The runtime
        // goes (EAL cleaned up) with the factory, after the last worker.
        #[cfg(feature = "dpdk")]
        Backend::Dpdk {
            eal_args,
            port,
            queues,
            stack,
        } => {
            let rt = crate::dpdk::DpdkRuntime::open(
                eal_args,
                *port,
                *queues,
                Duration::ZERO,
                stack.clone(),
            )?;
            server.start(move |i| rt.worker_transport(i))?
        }
    };
    println!(
        "warpwire listening on {} ({})",
        handle.local_addr(),
        selection.kind
    );
    if let Some(m) = handle.metrics_addr() {
        println!("metrics on http://{m}/metrics");
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("signal received: shutting down");
    handle.stop()?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// `warpwire users add`.
pub fn users(a: UsersArgs) -> Result<(), BoxError> {
    match a.action {
        UsersAction::Add { name, users, token } => {
            let generated = token.is_none();
            let token = token.unwrap_or_else(warpwire_engine::generate_token);
            UserDb::add_to_file(&users, &name, token.as_bytes())?;
            println!("user {name} written to {}", users.display());
            if generated {
                println!("token (shown once, store it now): {token}");
            }
            Ok(())
        }
    }
}
