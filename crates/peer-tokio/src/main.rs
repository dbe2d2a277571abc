//! `warpwire-peer-tokio`: the tokio benchmark peer as a command (see the
//! library's crate documentation).
//!
//! Prints `warpwire-peer-tokio listening on ADDR` as its first line of
//! standard output once it accepts connections, and exits with status 0 on
//! SIGINT or SIGTERM.

#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// Once a signal has stopped the accept loop, open connections are dropped
/// (their sockets closed) and the runtime's threads get this long to exit.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// A tokio server speaking the warpwire protocol: the peer warpwire is
/// benchmarked against.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Listen address (port 0: any free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:7078")]
    listen: SocketAddr,
    /// Runtime worker threads [default: one per core].
    #[arg(long)]
    workers: Option<NonZeroUsize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warpwire-peer-tokio: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &Args) -> std::io::Result<()> {
    let workers = args
        .workers
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Handlers first, so a signal arriving right after the address is
        // printed is not lost.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let listener = TcpListener::bind(args.listen).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", args.listen))
        })?;
        let addr = listener.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "warpwire-peer-tokio listening on {addr}")?;
            out.flush()?;
        }
        let stop = async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        };
        warpwire_peer_tokio::run(listener, stop).await;
        Ok::<(), std::io::Error>(())
    })?;
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    Ok(())
}
