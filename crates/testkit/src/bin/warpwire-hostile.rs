//! `warpwire-hostile SCENARIO ADDR [ARGS]`: the hostile peers of
//! `warpwire_testkit::hostile` as a command, so tests run them from inside
//! a network namespace against the bypass backends. Prints one report line
//! and exits 0, or prints the failure and exits 1.
//!
//!   warpwire-hostile half-close ADDR COUNT SIZE TRIALS
//!   warpwire-hostile header-flood ADDR CONNS DECLARE HOLD_MS
//!   warpwire-hostile connections ADDR CONNS
//!   warpwire-hostile broadcast-storm ADDR LISTENERS BODY MS
//!   warpwire-hostile pings ADDR COUNT

use std::process::ExitCode;
use std::time::Duration;

use warpwire_testkit::hostile;

fn main() -> ExitCode {
    // Floods open thousands of connections: take what the hard limit allows.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("warpwire-hostile: {e}");
            ExitCode::FAILURE
        }
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}: {:?}", args[i]))
}

fn run(args: &[String]) -> Result<String, String> {
    let scenario = args
        .first()
        .ok_or("usage: warpwire-hostile SCENARIO ADDR ...")?;
    let addr = arg(args, 1, "ADDR")?;
    match scenario.as_str() {
        "half-close" => hostile::half_close(
            addr,
            arg(args, 2, "COUNT")?,
            arg(args, 3, "SIZE")?,
            arg(args, 4, "TRIALS")?,
        ),
        "header-flood" => {
            let p = hostile::header_flood(
                addr,
                arg(args, 2, "CONNS")?,
                arg(args, 3, "DECLARE")?,
                Duration::from_millis(arg(args, 4, "HOLD_MS")?),
                || Ok(()),
            )?;
            Ok(report("header-flood bystander", &p))
        }
        "connections" => {
            let f = hostile::connection_flood(addr, arg(args, 2, "CONNS")?)?;
            Ok(format!(
                "connections: answered={} refused={:?} failed={}",
                f.answered, f.refused, f.failed
            ))
        }
        "broadcast-storm" => {
            let st = hostile::broadcast_storm(
                addr,
                arg(args, 2, "LISTENERS")?,
                arg(args, 3, "BODY")?,
                Duration::from_millis(arg(args, 4, "MS")?),
            )?;
            Ok(format!(
                "broadcast-storm: listeners_left={} listeners={} acked={} read_mb={} {}",
                st.listeners_left,
                st.listeners,
                st.acked,
                st.read_bytes >> 20,
                report("bystander", &st.pings)
            ))
        }
        "pings" => {
            let p =
                hostile::bystander_pings(addr, arg(args, 2, "COUNT")?, Duration::from_millis(5))?;
            Ok(report("pings", &p))
        }
        other => Err(format!("unknown scenario {other:?}")),
    }
}

fn report(what: &str, p: &hostile::Pings) -> String {
    format!(
        "{what}: p50_us={} p99_us={} max_us={}",
        p.quantile(0.5).as_micros(),
        p.quantile(0.99).as_micros(),
        p.max().as_micros()
    )
}
