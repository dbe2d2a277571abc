//! `warpwire-impair`: forward Ethernet frames between two interfaces with
//! seeded loss, reordering, duplication, corruption and delay. Run it in a
//! middle network namespace (`ip netns exec M warpwire-impair --a m0 --b m1`);
//! see the library's crate documentation for the fault model.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use clap::Parser;
use warpwire_impair::{Bridge, Error, FaultConfig};

/// User-space netem: a transparent L2 bridge between two interfaces that
/// drops, reorders, duplicates, corrupts and delays frames, seeded.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// First interface (frames received here leave by --b).
    #[arg(long)]
    a: String,
    /// Second interface (frames received here leave by --a).
    #[arg(long)]
    b: String,
    /// Probability that a frame is dropped.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    loss: f64,
    /// Probability that a frame is held back by 3 x delay + 100us extra.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    reorder: f64,
    /// Probability that a frame is sent twice.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    duplicate: f64,
    /// Probability that one bit after the Ethernet header is flipped.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    corrupt: f64,
    /// Base one-way delay of every frame (humantime: 200us, 1ms, ...).
    #[arg(long, default_value = "200us", value_parser = humantime::parse_duration)]
    delay: Duration,
    /// Uniform jitter added to each frame's delay, in [-jitter, +jitter].
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    jitter: Duration,
    /// Most frames queued per direction (netem's limit); more are dropped.
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
    /// RNG seed; random (and printed on stderr) when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this long (humantime); runs until SIGTERM/SIGINT if absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability in [0, 1]"))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut msg = format!("warpwire-impair: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                msg.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(Error::Signal)?;
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let faults = FaultConfig {
        loss: args.loss,
        reorder: args.reorder,
        duplicate: args.duplicate,
        corrupt: args.corrupt,
        delay: args.delay,
        jitter: args.jitter,
        limit: args.limit,
    };
    eprintln!(
        "warpwire-impair: seed={seed} loss={} reorder={} duplicate={} corrupt={} delay={:?} \
         jitter={:?} limit={}",
        faults.loss,
        faults.reorder,
        faults.duplicate,
        faults.corrupt,
        faults.delay,
        faults.jitter,
        faults.limit
    );
    let mut bridge = Bridge::open(&args.a, &args.b, faults, seed)?;
    announce(&format!(
        "warpwire-impair forwarding {} <-> {}",
        args.a, args.b
    ));
    let deadline = args.duration.map(|d| Instant::now() + d);
    let result = bridge.run(&stop, deadline);
    // The stats line comes even when the loop failed: it says how far it got.
    announce(&format!("warpwire-impair stats: {}", bridge.report()));
    result
}

/// Prints a line on stdout and flushes it at once: the caller (a test
/// script) waits for these lines through a pipe.
fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the caller went away) must not stop the bridge.
    let _ignored = writeln!(out, "{line}").and_then(|()| out.flush());
}
