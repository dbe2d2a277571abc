//! The `warpwire` command line: argument parsing, configuration and wiring.
//! Everything else lives in the crates under `crates/`.

mod addr;
mod backend;
mod cli;
mod client_cmd;
#[cfg(feature = "dpdk")]
mod dpdk;
mod probe;
mod serve;
mod settings;
mod tls;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A `warpwire probe` child that checks DPDK's EAL in its own process
    // (EAL initialises once per process) runs here and exits.
    #[cfg(feature = "dpdk")]
    warpwire_dpdk::probe_child_hook();
    let args = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // The config file is read once, for every command that uses it.
    let result =
        settings::FileConfig::load(args.config.as_deref()).and_then(|file| match args.command {
            cli::Command::Serve(a) => serve::run(&file, *a),
            cli::Command::Client(a) => client_cmd::run(&file, a),
            cli::Command::Bench(a) => client_cmd::bench(&file, a),
            cli::Command::Probe(a) => probe::run(&file, a),
            cli::Command::Users(a) => serve::users(a),
            cli::Command::Certs(a) => tls::certs(a),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warpwire: {e}");
            let mut src = std::error::Error::source(&*e);
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            ExitCode::FAILURE
        }
    }
}
