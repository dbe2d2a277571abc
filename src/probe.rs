//! Backend probing and transport selection (`warpwire probe`, and the
//! choice `serve`, `client` and `bench` make at start-up).

use warpwire_transport::{
    BackendKind, LatencyPolicy, ProbeReport, Selection, TransportChoice, select::select,
};

use crate::cli::{BypassArgs, ProbeArgs};
use crate::serve::BoxError;
use crate::settings::FileConfig;

/// Probes every backend this binary knows.
pub fn probe_all(bypass: &BypassArgs, target: Target) -> Vec<ProbeReport> {
    BackendKind::ALL
        .iter()
        .map(|&k| probe_one(k, bypass, target))
        .collect()
}

/// The address a command will use, for backends whose availability
/// depends on it (rdma: a device must own the listen address, or route
/// to the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `probe`: no address beyond `--ip`.
    None,
    /// `serve`: the listen address.
    Listen(std::net::SocketAddr),
    /// `client`/`bench`: the server's address.
    Connect(std::net::SocketAddr),
}

#[cfg_attr(not(feature = "rdma"), allow(unused_variables))]
fn probe_one(kind: BackendKind, bypass: &BypassArgs, target: Target) -> ProbeReport {
    match kind {
        BackendKind::Socket => warpwire_socket::probe(),
        BackendKind::Uring => match warpwire_uring::probe_detail() {
            Ok(detail) => ProbeReport::available(BackendKind::Uring, detail),
            Err(reason) => ProbeReport::unavailable(BackendKind::Uring, reason),
        },
        #[cfg(feature = "xdp")]
        BackendKind::Xdp => warpwire_xdp::probe(bypass.iface.as_deref()),
        #[cfg(feature = "dpdk")]
        BackendKind::Dpdk => warpwire_dpdk::probe(bypass.dpdk_args.as_deref()),
        // The address in use must belong to (or route through) an RDMA
        // device; `probe` checks `--ip` when given.
        #[cfg(feature = "rdma")]
        BackendKind::Rdma => warpwire_rdma::probe(match target {
            Target::Listen(a) => Some(warpwire_rdma::ProbeAddr::Local(a.ip())),
            Target::Connect(a) => Some(warpwire_rdma::ProbeAddr::Remote(a.ip())),
            Target::None => bypass
                .ip
                .as_deref()
                .and_then(|c| c.split('/').next())
                .and_then(|ip| ip.parse().ok())
                .map(warpwire_rdma::ProbeAddr::Local),
        }),
        #[allow(unreachable_patterns)]
        other => ProbeReport::not_compiled_in(other),
    }
}

/// Probes and selects, or fails with the reason.
pub fn choose(
    choice: TransportChoice,
    policy: LatencyPolicy,
    bypass: &BypassArgs,
    target: Target,
) -> Result<Selection, BoxError> {
    Ok(select(&probe_all(bypass, target), choice, policy)?)
}

/// `warpwire probe`.
pub fn run(file: &FileConfig, args: ProbeArgs) -> Result<(), BoxError> {
    let (choice, policy) = file.select(&args.select);
    let reports = probe_all(&file.bypass(&args.bypass), Target::None);
    let width = reports
        .iter()
        .map(|r| r.kind.expected_latency().len())
        .max()
        .unwrap_or(0);
    println!(
        "{:<8} {:<9} {:<9} {:<width$} detail",
        "backend", "compiled", "available", "expected latency"
    );
    for r in &reports {
        println!(
            "{:<8} {:<9} {:<9} {:<width$} {}",
            r.kind.name(),
            if r.compiled_in { "yes" } else { "no" },
            if r.available { "yes" } else { "no" },
            r.kind.expected_latency(),
            r.detail
        );
    }
    println!(
        "\n(expected latency: a small request's round trip on the hardware named; \
         probe does not measure it, see docs/transports.md)"
    );
    match select(&reports, choice, policy) {
        Ok(s) => {
            println!(
                "\nchoice: {} (--transport {choice}, --latency-policy {policy}): {}",
                s.kind, s.reason
            );
            Ok(())
        }
        Err(e) => {
            println!("\nchoice: none (--transport {choice}, --latency-policy {policy})");
            Err(e.into())
        }
    }
}
