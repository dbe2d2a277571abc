//! `warpwire probe` for DPDK: does EAL come up with these arguments, and
//! which ports does it find?
//!
//! EAL can be initialised once per process and never again, so a probe
//! that initialised it in the calling process would make the backend it
//! probed unusable there. [`probe`] therefore runs the check in a child:
//! it re-executes [`std::env::current_exe`] with [`PROBE_CHILD_ENV`] set,
//! and the child, which must call [`probe_child_hook`] first thing in
//! `main`, initialises EAL, reports on stdout and exits. When EAL is
//! already live in the calling process, [`probe`] reports its ports
//! instead, without a child.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use warpwire_transport::{BackendKind, ProbeReport};

use crate::eal::{Eal, file_prefix};
use crate::port::Port;

/// Set (to the EAL arguments) in the environment of the probe's child.
pub const PROBE_CHILD_ENV: &str = "WARPWIRE_DPDK_PROBE_CHILD";

/// Arguments the child gets: harmless to a binary without the hook (a
/// clap CLI rejects them; a libtest binary matches no test).
const CHILD_ARGS: [&str; 2] = ["--exact", "__warpwire_dpdk_probe_child__"];

/// Line prefix of the child's report.
const MARK: &str = "WARPWIRE-DPDK-PROBE ";

/// EAL start-up takes well under a second with static PMDs; vdevs that
/// wait for something (memif client) may take a few.
const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

/// The PMDs linked in (static linking; with `DPDK_LINK=shared` EAL loads
/// every PMD of its plugin directory).
pub const LINKED_PMDS: &str = "net_memif, net_tap, net_ring, net_null, net_af_packet";

/// Probes DPDK. `eal_args`: the EAL arguments, whitespace-separated
/// (`--no-huge --no-pci -m 256 --vdev=net_tap0,iface=dtap0 -l 0`).
///
/// Without arguments it only reports that DPDK is compiled in. With them,
/// it initialises EAL in a child process (see the module docs; a unique
/// `--file-prefix` is added when none is given) and reports the ports with
/// driver and link state, or why EAL failed.
pub fn probe(eal_args: Option<&str>) -> ProbeReport {
    let kind = BackendKind::Dpdk;
    let Some(args) = eal_args.map(str::trim).filter(|a| !a.is_empty()) else {
        return ProbeReport::unavailable(
            kind,
            format!(
                "compiled in (DPDK {}, PMDs {LINKED_PMDS}); give EAL arguments (--dpdk-args) to probe ports",
                warpwire_dpdk_sys::DPDK_VERSION
            ),
        );
    };
    if let Some(eal) = Eal::current() {
        return report(&ports(&eal));
    }
    if Eal::was_initialised() {
        return ProbeReport::unavailable(
            kind,
            "EAL was initialised and cleaned up in this process",
        );
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            return ProbeReport::unavailable(
                kind,
                format!("cannot find this executable to probe in a child: {e}"),
            );
        }
    };
    let child = Command::new(exe)
        .args(CHILD_ARGS)
        .env(PROBE_CHILD_ENV, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return ProbeReport::unavailable(kind, format!("cannot start the probe child: {e}"));
        }
    };
    let t0 = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if t0.elapsed() < CHILD_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    let lines: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix(MARK)).collect();
    match (status, lines.split_first()) {
        (None, _) => ProbeReport::unavailable(
            kind,
            format!("the EAL probe did not finish within {CHILD_TIMEOUT:?}"),
        ),
        (Some(s), Some((&"ok", rest))) => {
            if !s.success() {
                // The report came before EAL's clean-up; the child died in it.
                tracing::debug!(status = %s, "the DPDK probe child died after reporting");
            }
            report(&rest.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        }
        (Some(_), Some((first, _))) => {
            ProbeReport::unavailable(kind, first.strip_prefix("err ").unwrap_or(first).to_owned())
        }
        (Some(s), None) => ProbeReport::unavailable(
            kind,
            format!(
                "the probe child ({s}) did not report: the binary must call warpwire_dpdk::probe_child_hook() first in main"
            ),
        ),
    }
}

/// Runs the probe if this process is a probe child ([`PROBE_CHILD_ENV`]
/// set) and exits; returns at once otherwise. Call it first thing in
/// `main` of every binary that calls [`probe`].
pub fn probe_child_hook() {
    let Ok(args) = std::env::var(PROBE_CHILD_ENV) else {
        return;
    };
    let mut argv: Vec<String> = std::iter::once("warpwire-probe".to_owned())
        .chain(args.split_whitespace().map(str::to_owned))
        .collect();
    if file_prefix(&argv).is_none() {
        argv.push(format!("--file-prefix=ww-probe-{}", std::process::id()));
    }
    // Straight to the stdout handle, not println!: a test harness
    // captures println! output and would never show it before the exit.
    match Eal::init(&argv) {
        Ok(eal) => {
            let mut lines = vec!["ok".to_owned()];
            lines.extend(ports(&eal));
            // Reported before EAL's clean-up: net_memif's teardown has
            // crashed the child (SIGSEGV, about 1 start in 10-30 on these
            // machines, memif client role against a live server) after
            // everything it was asked was known.
            write_report(&lines);
            drop(eal);
        }
        Err(e) => {
            let mut text = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                text.push_str(&format!(": {s}"));
                src = s.source();
            }
            write_report(&[format!("err {text}")]);
        }
    }
    std::process::exit(0);
}

/// The probe child's report on stdout, flushed.
fn write_report(lines: &[String]) {
    // EAL prints (usage, notices) through C stdio: flush that first so the
    // report lines are not split by C's buffered output, and start on a
    // fresh line.
    // SAFETY: fflush(NULL) flushes every C stream; no preconditions.
    unsafe { libc::fflush(std::ptr::null_mut()) };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out);
    for l in lines {
        let _ = writeln!(out, "{MARK}{l}");
    }
    let _ = out.flush();
}

fn ports(eal: &Eal) -> Vec<String> {
    Port::ids(eal)
        .into_iter()
        .map(|id| match Port::info(eal, id) {
            Ok(i) => format!(
                "port {id} {} ({}, MAC {}, MTU {}, {})",
                i.name,
                i.driver,
                i.mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
                i.mtu,
                i.link
            ),
            Err(e) => format!("port {id}: {e}"),
        })
        .collect()
}

fn report(ports: &[String]) -> ProbeReport {
    if ports.is_empty() {
        ProbeReport::unavailable(
            BackendKind::Dpdk,
            "EAL initialised but found no ports (add --vdev=... or bind a NIC)",
        )
    } else {
        ProbeReport::available(BackendKind::Dpdk, format!("EAL ok; {}", ports.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_arguments_it_says_compiled_in_and_asks_for_them() {
        let r = probe(None);
        assert_eq!(r.kind, BackendKind::Dpdk);
        assert!(r.compiled_in);
        assert!(!r.available);
        assert!(r.detail.contains("22.11"), "{}", r.detail);
    }

    #[test]
    fn a_binary_without_the_hook_is_reported_not_run() {
        // This unit-test binary has no hook: the child runs no test (the
        // filter matches none) and reports nothing. EAL is never touched.
        let r = probe(Some("--no-huge"));
        assert!(!r.available);
        assert!(r.detail.contains("probe_child_hook"), "{}", r.detail);
    }
}
