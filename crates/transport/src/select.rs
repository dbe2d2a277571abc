//! Backend probing results and the latency policy that picks a transport.
//!
//! Each backend crate probes itself (is the hardware there, can the socket
//! or EAL be opened) and returns a [`ProbeReport`]; backends not compiled in
//! report so. [`select`] ranks the available ones by the policy. A forced
//! transport that is unavailable is an error, never a silent fallback.

use std::fmt;
use std::str::FromStr;

/// The five backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Kernel TCP through mio.
    Socket,
    /// Kernel TCP through io_uring.
    Uring,
    /// AF_XDP sockets through smoltcp.
    Xdp,
    /// DPDK poll-mode drivers through smoltcp.
    Dpdk,
    /// RDMA reliable connections.
    Rdma,
}

/// What the commands need to know of a backend, as data: one row per
/// backend in [`BackendKind::facts`], read by `build.rs` (which backends a
/// build has), `probe` (the feature to build with, the expected latency)
/// and `serve`, `client` and `bench` (workers, addresses, descriptors,
/// threads, reconnects). Adding a backend is adding a row here and an arm
/// where transports are built (`src/backend.rs`), not a match per command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// Name on the command line.
    pub name: &'static str,
    /// The cargo feature that compiles it in (`None`: always in).
    pub feature: Option<&'static str>,
    /// The latency class a working backend of this kind reaches.
    pub latency: LatencyClass,
    /// A small request's expected round trip (see
    /// [`BackendKind::expected_latency`]).
    pub expected_latency: &'static str,
    /// Each connection holds a file descriptor: `serve` fits the open-file
    /// limit to `max_connections`.
    pub kernel_fds: bool,
    /// One worker per NIC queue (`--queues`), not `--workers`.
    pub workers_per_queue: bool,
    /// Listens on the userspace stack's own address (`--ip`) at the port
    /// `--listen` names, not on the host's addresses.
    pub own_address: bool,
    /// A client or bench process drives one transport from one thread (one
    /// queue, or one EAL per process).
    pub client_one_thread: bool,
    /// A client may build a new transport after losing its connection (no
    /// per-process state like EAL's in the way).
    pub client_reconnect: bool,
}

const FACTS: [Facts; 5] = [
    Facts {
        name: "socket",
        feature: None,
        latency: LatencyClass::Kernel,
        expected_latency: "~10-70 us (kernel TCP, loopback)",
        kernel_fds: true,
        workers_per_queue: false,
        own_address: false,
        client_one_thread: false,
        client_reconnect: true,
    },
    Facts {
        name: "uring",
        feature: None,
        latency: LatencyClass::Kernel,
        expected_latency: "~10-70 us (kernel TCP via io_uring, loopback)",
        kernel_fds: true,
        workers_per_queue: false,
        own_address: false,
        client_one_thread: false,
        client_reconnect: true,
    },
    Facts {
        name: "xdp",
        feature: Some("xdp"),
        latency: LatencyClass::Bypass,
        expected_latency: "~5-10 us (busy-polled; zero-copy or copy)",
        kernel_fds: false,
        workers_per_queue: true,
        own_address: true,
        client_one_thread: true,
        client_reconnect: true,
    },
    Facts {
        name: "dpdk",
        feature: Some("dpdk"),
        latency: LatencyClass::PollMode,
        expected_latency: "~3-10 us (poll-mode NIC or memif)",
        kernel_fds: false,
        workers_per_queue: true,
        own_address: true,
        client_one_thread: true,
        client_reconnect: false,
    },
    Facts {
        name: "rdma",
        feature: Some("rdma"),
        latency: LatencyClass::PollMode,
        expected_latency: "~2-10 us RDMA NIC (soft-RoCE: ~100 us+)",
        kernel_fds: false,
        workers_per_queue: false,
        own_address: false,
        client_one_thread: false,
        client_reconnect: true,
    },
];

impl BackendKind {
    /// All backends, in the order `probe` prints them.
    pub const ALL: [Self; 5] = [Self::Socket, Self::Uring, Self::Xdp, Self::Dpdk, Self::Rdma];

    /// This backend's row of the facts table.
    pub const fn facts(self) -> &'static Facts {
        &FACTS[self as usize]
    }

    /// Name on the command line.
    pub const fn name(self) -> &'static str {
        self.facts().name
    }

    /// The cargo feature that compiles the backend in (`None`: always in).
    pub const fn feature(self) -> Option<&'static str> {
        self.facts().feature
    }

    /// The latency class a working backend of this kind is expected to reach.
    pub const fn latency_class(self) -> LatencyClass {
        self.facts().latency
    }

    /// What `probe` prints as this backend's expected latency: the round
    /// trip of a small request (`warpwire bench` p50, depth 1) to expect
    /// on the hardware named, not a measurement of this machine. Socket,
    /// xdp and dpdk figures are the ones docs/benchmarks.md measured
    /// (loopback, veth in copy mode, memif); uring's round trip is the
    /// same kernel TCP's as socket's (it saves syscalls per batch, not
    /// time per message); the RDMA NIC figure is an estimate, the
    /// soft-RoCE one was measured in a QEMU guest.
    pub const fn expected_latency(self) -> &'static str {
        self.facts().expected_latency
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                format!("unknown transport {s:?} ({})", names.join(", "))
            })
    }
}

/// Expected latency class, best first: an ordering of the data paths, not
/// a figure ([`BackendKind::expected_latency`] says what to expect on
/// which hardware).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LatencyClass {
    /// Poll-mode user-space NIC access or RDMA: no kernel and no syscall
    /// on the data path.
    PollMode,
    /// Kernel bypass through AF_XDP: the kernel's driver, not its TCP stack.
    Bypass,
    /// Kernel TCP: syscalls on every batch.
    Kernel,
}

impl fmt::Display for LatencyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PollMode => "poll-mode",
            Self::Bypass => "bypass",
            Self::Kernel => "kernel",
        })
    }
}

/// How to trade latency against CPU use and compatibility.
///
/// Every policy that reaches kernel TCP tries io_uring before mio: the
/// same kernel TCP and the same round trip, with fewer syscalls per
/// message when many connections are busy. Where io_uring is missing or
/// forbidden (old kernel, `kernel.io_uring_disabled`, a seccomp filter)
/// its probe says so and the socket backend is next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum LatencyPolicy {
    /// Lowest latency: prefer RDMA, then DPDK, then AF_XDP, then kernel
    /// TCP; workers busy-poll.
    Lowest,
    /// Bypass without dedicating cores: RDMA, then AF_XDP, then kernel TCP;
    /// workers sleep when idle. DPDK only when forced (it owns the NIC and
    /// burns a core per queue).
    #[default]
    Balanced,
    /// Kernel TCP only: every peer, firewall and capture tool works.
    Compatible,
}

impl LatencyPolicy {
    /// Backends this policy considers, in preference order.
    pub const fn preference(self) -> &'static [BackendKind] {
        match self {
            Self::Lowest => &[
                BackendKind::Rdma,
                BackendKind::Dpdk,
                BackendKind::Xdp,
                BackendKind::Uring,
                BackendKind::Socket,
            ],
            Self::Balanced => &[
                BackendKind::Rdma,
                BackendKind::Xdp,
                BackendKind::Uring,
                BackendKind::Socket,
            ],
            Self::Compatible => &[BackendKind::Uring, BackendKind::Socket],
        }
    }

    /// Whether workers spin on `poll` instead of sleeping in `wait`.
    pub const fn busy_poll(self) -> bool {
        matches!(self, Self::Lowest)
    }

    /// Name on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Lowest => "lowest",
            Self::Balanced => "balanced",
            Self::Compatible => "compatible",
        }
    }
}

impl FromStr for LatencyPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lowest" => Ok(Self::Lowest),
            "balanced" => Ok(Self::Balanced),
            "compatible" => Ok(Self::Compatible),
            _ => Err(format!(
                "unknown latency policy {s:?} (lowest, balanced, compatible)"
            )),
        }
    }
}

impl fmt::Display for LatencyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--transport`: automatic or forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportChoice {
    /// Pick by policy among the available backends.
    #[default]
    Auto,
    /// Use this backend or fail.
    Forced(BackendKind),
}

impl FromStr for TransportChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            Ok(Self::Auto)
        } else {
            s.parse().map(Self::Forced)
        }
    }
}

impl fmt::Display for TransportChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Forced(k) => f.write_str(k.name()),
        }
    }
}

/// What probing one backend found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The backend.
    pub kind: BackendKind,
    /// Whether this binary contains it.
    pub compiled_in: bool,
    /// Whether it can run here with the given configuration.
    pub available: bool,
    /// Why it is unavailable, or what was found when it is.
    pub detail: String,
}

impl ProbeReport {
    /// The report of a backend this binary was built without.
    pub fn not_compiled_in(kind: BackendKind) -> Self {
        Self {
            kind,
            compiled_in: false,
            available: false,
            detail: format!(
                "not compiled in: build with --features {}",
                kind.feature().unwrap_or("default")
            ),
        }
    }

    /// An available backend.
    pub fn available(kind: BackendKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            compiled_in: true,
            available: true,
            detail: detail.into(),
        }
    }

    /// A compiled-in backend that cannot run here.
    pub fn unavailable(kind: BackendKind, why: impl Into<String>) -> Self {
        Self {
            kind,
            compiled_in: true,
            available: false,
            detail: why.into(),
        }
    }
}

/// Something that can probe one backend.
pub trait Probe {
    /// Probes and reports.
    fn probe(&self) -> ProbeReport;
}

/// The chosen backend and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The backend.
    pub kind: BackendKind,
    /// A sentence saying why.
    pub reason: String,
}

/// Why no backend could be selected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// The forced backend is not available.
    #[error("transport {kind} was requested but is unavailable: {detail}")]
    ForcedUnavailable {
        /// The backend.
        kind: BackendKind,
        /// The probe's reason.
        detail: String,
    },
    /// No backend the policy allows is available.
    #[error("no transport allowed by policy {policy} is available")]
    NoneAvailable {
        /// The policy.
        policy: LatencyPolicy,
    },
}

/// Picks a backend from probe reports.
pub fn select(
    reports: &[ProbeReport],
    choice: TransportChoice,
    policy: LatencyPolicy,
) -> Result<Selection, SelectionError> {
    let find = |k: BackendKind| reports.iter().find(|r| r.kind == k);
    match choice {
        TransportChoice::Forced(kind) => match find(kind) {
            Some(r) if r.available => Ok(Selection {
                kind,
                reason: format!("forced with --transport {kind}"),
            }),
            Some(r) => Err(SelectionError::ForcedUnavailable {
                kind,
                detail: r.detail.clone(),
            }),
            None => Err(SelectionError::ForcedUnavailable {
                kind,
                detail: "not probed".into(),
            }),
        },
        TransportChoice::Auto => {
            let prefs = policy.preference();
            for (rank, &kind) in prefs.iter().enumerate() {
                if find(kind).is_some_and(|r| r.available) {
                    let skipped: Vec<&str> = prefs[..rank].iter().map(|k| k.name()).collect();
                    let reason = if skipped.is_empty() {
                        format!("policy {policy} prefers {kind} first and it is available")
                    } else {
                        format!(
                            "policy {policy} prefers {} but {} unavailable; {kind} is next",
                            skipped.join(", "),
                            if skipped.len() == 1 {
                                "it is"
                            } else {
                                "they are"
                            }
                        )
                    };
                    return Ok(Selection { kind, reason });
                }
            }
            Err(SelectionError::NoneAvailable { policy })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_facts_table_has_one_row_per_backend_in_order() {
        let names: Vec<&str> = BackendKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["socket", "uring", "xdp", "dpdk", "rdma"]);
        for k in BackendKind::ALL {
            assert_eq!(k.name().parse::<BackendKind>(), Ok(k));
            // A backend with its own descriptors is the kernel's; a stack
            // has its own address and one queue per worker.
            assert_eq!(
                k.facts().kernel_fds,
                k.latency_class() == LatencyClass::Kernel
            );
            assert_eq!(k.facts().own_address, k.facts().workers_per_queue);
        }
    }

    fn reports(avail: &[BackendKind]) -> Vec<ProbeReport> {
        BackendKind::ALL
            .iter()
            .map(|&k| {
                if avail.contains(&k) {
                    ProbeReport::available(k, "ok")
                } else {
                    ProbeReport::unavailable(k, "absent")
                }
            })
            .collect()
    }

    #[test]
    fn auto_follows_policy() {
        use BackendKind::*;
        let all = reports(&[Socket, Uring, Xdp, Dpdk, Rdma]);
        assert_eq!(
            select(&all, TransportChoice::Auto, LatencyPolicy::Lowest)
                .unwrap()
                .kind,
            Rdma
        );
        assert_eq!(
            select(&all, TransportChoice::Auto, LatencyPolicy::Balanced)
                .unwrap()
                .kind,
            Rdma
        );
        assert_eq!(
            select(&all, TransportChoice::Auto, LatencyPolicy::Compatible)
                .unwrap()
                .kind,
            Uring
        );
        let no_rdma = reports(&[Socket, Uring, Xdp, Dpdk]);
        assert_eq!(
            select(&no_rdma, TransportChoice::Auto, LatencyPolicy::Lowest)
                .unwrap()
                .kind,
            Dpdk
        );
        let s = select(&no_rdma, TransportChoice::Auto, LatencyPolicy::Balanced).unwrap();
        assert_eq!(s.kind, Xdp);
        assert!(s.reason.contains("rdma"), "{}", s.reason);
        // A Linux machine without bypass hardware: io_uring for every
        // policy; where io_uring is off (old kernel, sysctl, seccomp),
        // sockets, and the reason names what was skipped.
        let kernel_only = reports(&[Socket, Uring]);
        let no_uring = reports(&[Socket]);
        for p in [
            LatencyPolicy::Lowest,
            LatencyPolicy::Balanced,
            LatencyPolicy::Compatible,
        ] {
            assert_eq!(
                select(&kernel_only, TransportChoice::Auto, p).unwrap().kind,
                Uring
            );
            let s = select(&no_uring, TransportChoice::Auto, p).unwrap();
            assert_eq!(s.kind, Socket);
            assert!(s.reason.contains("uring"), "{p}: {}", s.reason);
        }
        assert_eq!(
            select(
                &kernel_only,
                TransportChoice::Auto,
                LatencyPolicy::Compatible
            )
            .unwrap()
            .reason,
            "policy compatible prefers uring first and it is available"
        );
        assert_eq!(
            select(
                &reports(&[]),
                TransportChoice::Auto,
                LatencyPolicy::Compatible
            ),
            Err(SelectionError::NoneAvailable {
                policy: LatencyPolicy::Compatible
            })
        );
    }

    /// Every policy ranks uring after every bypass backend it considers and
    /// right before socket, the last resort.
    #[test]
    fn uring_ranks_after_bypass_and_before_socket() {
        for p in [
            LatencyPolicy::Lowest,
            LatencyPolicy::Balanced,
            LatencyPolicy::Compatible,
        ] {
            let prefs = p.preference();
            let at = |k: BackendKind| prefs.iter().position(|&x| x == k);
            let (Some(uring), Some(socket)) = (at(BackendKind::Uring), at(BackendKind::Socket))
            else {
                panic!("{p} considers both kernel backends: {prefs:?}");
            };
            assert_eq!(uring + 1, socket, "{p}: {prefs:?}");
            assert_eq!(socket, prefs.len() - 1, "{p}: {prefs:?}");
            for (i, k) in prefs.iter().enumerate() {
                if k.latency_class() != LatencyClass::Kernel {
                    assert!(i < uring, "{p}: {k} before uring: {prefs:?}");
                }
            }
        }
        assert_eq!(
            LatencyPolicy::Compatible.preference(),
            &[BackendKind::Uring, BackendKind::Socket]
        );
        assert_eq!(BackendKind::Uring.latency_class(), LatencyClass::Kernel);
        assert_eq!(BackendKind::Uring.feature(), None, "always compiled in");
    }

    #[test]
    fn forced_never_falls_back() {
        let r = reports(&[BackendKind::Socket]);
        let e = select(
            &r,
            TransportChoice::Forced(BackendKind::Xdp),
            LatencyPolicy::Lowest,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            SelectionError::ForcedUnavailable {
                kind: BackendKind::Xdp,
                ..
            }
        ));
        assert!(e.to_string().contains("absent"));
        let ok = select(
            &r,
            TransportChoice::Forced(BackendKind::Socket),
            LatencyPolicy::Lowest,
        )
        .unwrap();
        assert_eq!(ok.kind, BackendKind::Socket);

        // io_uring off: forcing it fails with the probe's reason, although
        // socket (the same kernel TCP) is right there.
        let why = "io_uring disabled: kernel.io_uring_disabled=2";
        let r = vec![
            ProbeReport::available(BackendKind::Socket, "ok"),
            ProbeReport::unavailable(BackendKind::Uring, why),
        ];
        for policy in [LatencyPolicy::Balanced, LatencyPolicy::Compatible] {
            let e = select(&r, TransportChoice::Forced(BackendKind::Uring), policy).unwrap_err();
            assert_eq!(
                e,
                SelectionError::ForcedUnavailable {
                    kind: BackendKind::Uring,
                    detail: why.into()
                }
            );
            assert_eq!(
                e.to_string(),
                format!("transport uring was requested but is unavailable: {why}")
            );
        }
        let ok = select(
            &reports(&[BackendKind::Uring]),
            TransportChoice::Forced(BackendKind::Uring),
            LatencyPolicy::Compatible,
        )
        .unwrap();
        assert_eq!(ok.kind, BackendKind::Uring);
        assert_eq!(ok.reason, "forced with --transport uring");
    }

    #[test]
    fn expected_latency_is_labelled_by_hardware_not_as_a_measurement() {
        let hardware = [
            (BackendKind::Socket, "kernel TCP"),
            (BackendKind::Uring, "kernel TCP via io_uring"),
            (BackendKind::Xdp, "zero-copy or copy"),
            (BackendKind::Dpdk, "NIC or memif"),
            (BackendKind::Rdma, "RDMA NIC (soft-RoCE"),
        ];
        for (kind, assumption) in hardware {
            let e = kind.expected_latency();
            assert!(e.starts_with('~') && e.contains(" us"), "{kind}: {e}");
            assert!(e.contains(assumption), "{kind} names its hardware: {e}");
        }
        // The class names an ordering of data paths, never a figure.
        for c in [
            LatencyClass::PollMode,
            LatencyClass::Bypass,
            LatencyClass::Kernel,
        ] {
            assert!(
                !c.to_string().contains(|ch: char| ch.is_ascii_digit()),
                "{c}"
            );
        }
    }

    #[test]
    fn parse_names() {
        assert_eq!("auto".parse::<TransportChoice>(), Ok(TransportChoice::Auto));
        assert_eq!(
            "rdma".parse::<TransportChoice>(),
            Ok(TransportChoice::Forced(BackendKind::Rdma))
        );
        assert_eq!(
            "uring".parse::<TransportChoice>(),
            Ok(TransportChoice::Forced(BackendKind::Uring))
        );
        assert_eq!(
            TransportChoice::Forced(BackendKind::Uring).to_string(),
            "uring"
        );
        for k in BackendKind::ALL {
            assert_eq!(k.name().parse::<BackendKind>(), Ok(k));
        }
        assert_eq!(
            "tcp".parse::<TransportChoice>(),
            Err("unknown transport \"tcp\" (socket, uring, xdp, dpdk, rdma)".into())
        );
        assert_eq!(
            "balanced".parse::<LatencyPolicy>(),
            Ok(LatencyPolicy::Balanced)
        );
        assert!("fast".parse::<LatencyPolicy>().is_err());
        assert_eq!(
            ProbeReport::not_compiled_in(BackendKind::Dpdk).detail,
            "not compiled in: build with --features dpdk"
        );
    }
}
