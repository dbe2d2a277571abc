//! The one place the CLI turns a selected backend into transports: an enum
//! over the backends compiled in, one `match` that builds the transport
//! factory ([`Backend::run`]), and generic code everywhere else.
//!
//! ```text
//!   serve ─┐                                  ┌─► ServeWith::run<T>   (Server::start_with)
//!   client ┼─► Backend::run(role, command) ───┼─► ConnectWith::run<T> (Client::connect)
//!   bench ─┘   (the one match on the backend) └─► LoadWith::run<T>    (loadgen::run_with)
//! ```
//!
//! What differs between backends beyond building a transport (workers per
//! queue, the stack's own address, descriptors, client threads,
//! reconnects) is data: the row of
//! [`warpwire_transport::Facts`] for the backend, which build.rs and
//! `probe` read too.

use std::net::{Ipv4Addr, SocketAddr};

use warpwire_transport::{BackendKind, Facts, Transport, TransportError};

use crate::cli::BypassArgs;
use crate::serve::BoxError;

/// Settings of a smoltcp stack on a bypass device.
#[derive(Debug, Clone)]
#[cfg_attr(not(any(feature = "xdp", feature = "dpdk")), allow(dead_code))]
pub struct StackSetup {
    /// Our address.
    pub ip: Ipv4Addr,
    /// Subnet prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// MAC override.
    pub mac: Option<[u8; 6]>,
    /// Capture file.
    pub pcap: Option<std::path::PathBuf>,
    /// Receive buffer per connection (`--tcp-rx-buffer`).
    pub rx_buffer: Option<usize>,
    /// Send buffer per connection (`--tcp-tx-buffer`).
    pub tx_buffer: Option<usize>,
    /// SYN queue per port (`--tcp-backlog`).
    pub backlog: Option<usize>,
    /// Segmentation offload (`--tcp-gso`); `None`: the backend's default.
    pub gso: Option<bool>,
}

#[cfg(any(feature = "xdp", feature = "dpdk"))]
impl StackSetup {
    /// The stack configuration of one queue's worker (`name` for STATS);
    /// queues above 0 capture to `FILE.qN.pcap`.
    pub fn config(&self, queue: usize, name: &'static str) -> warpwire_stack::StackConfig {
        let mut sc = warpwire_stack::StackConfig::new(self.ip, self.prefix);
        sc.gateway = self.gateway;
        sc.mac = self.mac;
        sc.pcap = self.pcap.as_ref().map(|p| {
            if queue == 0 {
                p.clone()
            } else {
                p.with_extension(format!("q{queue}.pcap"))
            }
        });
        sc.name = name;
        // Segmentation offload in software (warpwire_stack::StackConfig::gso)
        // by measurement: over AF_XDP on veth it moved an xdp <- xdp upload
        // 1.12-1.42x faster; over net_memif, where the poll-mode driver's own
        // copy already bounds the sender, its extra copy made uploads
        // 0.67-0.80x as fast (docs/benchmarks.md, "Issue 13, eighth session").
        sc.gso = self.gso.unwrap_or(name != "dpdk");
        if let Some(n) = self.rx_buffer {
            sc.rx_buffer = n;
        }
        if let Some(n) = self.tx_buffer {
            sc.tx_buffer = n;
        }
        if let Some(n) = self.backlog {
            sc.backlog = n;
        }
        sc
    }
}

/// The selected backend with what it needs to build transports.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Kernel TCP through mio.
    Socket,
    /// Kernel TCP through io_uring, one ring per worker.
    Uring(warpwire_uring::UringConfig),
    /// A DPDK port (`--port` or the first one EAL finds), one queue and
    /// worker each.
    #[cfg(feature = "dpdk")]
    Dpdk {
        /// EAL arguments, the program name first.
        eal_args: Vec<String>,
        /// Port id; `None`: the first one.
        port: Option<u16>,
        /// Queues (server workers); clients use one.
        queues: u16,
        /// The stack on top.
        stack: StackSetup,
    },
    /// RDMA reliable connections through rdma_cm; the server's workers
    /// share one listener.
    #[cfg(feature = "rdma")]
    Rdma(warpwire_rdma::RdmaConfig),
    /// AF_XDP on an interface, one queue per worker.
    #[cfg(feature = "xdp")]
    Xdp {
        /// Interface name.
        iface: String,
        /// Queues (workers).
        queues: usize,
        /// The stack on top.
        stack: StackSetup,
    },
}

#[cfg_attr(not(any(feature = "xdp", feature = "dpdk")), allow(dead_code))]
fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), BoxError> {
    let (ip, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("--ip {s:?}: expected ADDRESS/PREFIX, e.g. 10.77.0.1/24"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("--ip {s:?}: {e}"))?;
    let prefix: u8 = prefix.parse().map_err(|e| format!("--ip {s:?}: {e}"))?;
    if prefix > 32 {
        return Err(format!("--ip {s:?}: prefix over 32").into());
    }
    Ok((ip, prefix))
}

#[cfg_attr(not(any(feature = "xdp", feature = "dpdk")), allow(dead_code))]
fn parse_mac(s: &str) -> Result<[u8; 6], BoxError> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("--mac {s:?}: expected six hex octets").into());
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|e| format!("--mac {s:?}: {e}"))?;
    }
    Ok(mac)
}

/// The stack settings from the bypass options (`--ip` is required).
#[cfg_attr(not(any(feature = "xdp", feature = "dpdk")), allow(dead_code))]
pub fn stack_setup(b: &BypassArgs) -> Result<StackSetup, BoxError> {
    let ip =
        b.ip.as_deref()
            .ok_or("the bypass transports need --ip ADDRESS/PREFIX (their own address)")?;
    let (ip, prefix) = parse_cidr(ip)?;
    Ok(StackSetup {
        ip,
        prefix,
        gateway: b.gateway,
        mac: b.mac.as_deref().map(parse_mac).transpose()?,
        pcap: b.pcap.clone(),
        rx_buffer: check_size("--tcp-rx-buffer", b.tcp_rx_buffer, 1024)?,
        tx_buffer: check_size("--tcp-tx-buffer", b.tcp_tx_buffer, 1024)?,
        backlog: check_size("--tcp-backlog", b.tcp_backlog, 1)?,
        gso: b.tcp_gso,
    })
}

/// A size option at least `min` and at most 1 GiB (a window scale of 14).
#[cfg_attr(not(any(feature = "xdp", feature = "dpdk")), allow(dead_code))]
fn check_size(flag: &str, v: Option<usize>, min: usize) -> Result<Option<usize>, BoxError> {
    match v {
        Some(n) if n < min || n > 1 << 30 => {
            Err(format!("{flag} {n}: expected {min} to {}", 1usize << 30).into())
        }
        _ => Ok(v),
    }
}

/// Whether transports are built for a server's workers or for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `serve`: one transport per worker (`factory(i)` on worker i's thread).
    Server,
    /// `client` and `bench`: `factory(0)` per connection or load thread.
    Client,
}

/// What a command does once it has a transport factory: the command's code
/// generic over the transport, reached through the one match in
/// [`Backend::run`].
pub trait UseTransport {
    /// What the command gets.
    type Output;

    /// Runs with `factory` (`factory(i)`: worker or thread `i`'s transport).
    fn run<T, F>(self, factory: F) -> Result<Self::Output, BoxError>
    where
        T: Transport + 'static,
        F: Fn(usize) -> Result<T, TransportError> + Send + Sync + 'static;
}

impl Backend {
    /// Builds the backend for a selection.
    pub fn new(kind: BackendKind, b: &BypassArgs) -> Result<Self, BoxError> {
        match kind {
            BackendKind::Socket => {
                warn_ignored_by_kernel_tcp(kind, b);
                Ok(Self::Socket)
            }
            BackendKind::Uring => {
                warn_ignored_by_kernel_tcp(kind, b);
                Ok(Self::Uring(warpwire_uring::UringConfig::default()))
            }
            #[cfg(feature = "xdp")]
            BackendKind::Xdp => Ok(Self::Xdp {
                iface: b.iface.clone().ok_or("--transport xdp needs --iface")?,
                queues: b.queues.unwrap_or(1).max(1),
                stack: stack_setup(b)?,
            }),
            #[cfg(feature = "dpdk")]
            BackendKind::Dpdk => {
                let args = b
                    .dpdk_args
                    .as_deref()
                    .ok_or("--transport dpdk needs --dpdk-args \"EAL ARGS\"")?;
                let mut eal_args = vec!["warpwire".to_owned()];
                eal_args.extend(args.split_whitespace().map(str::to_owned));
                let queues = u16::try_from(b.queues.unwrap_or(1).max(1))
                    .map_err(|_| "--queues: at most 65535 for the dpdk transport")?;
                Ok(Self::Dpdk {
                    eal_args,
                    port: b.port,
                    queues,
                    stack: stack_setup(b)?,
                })
            }
            #[cfg(feature = "rdma")]
            BackendKind::Rdma => {
                if b.iface.is_some() || b.ip.is_some() || b.dpdk_args.is_some() {
                    tracing::warn!(
                        "--iface/--ip/--dpdk-args are ignored by the rdma transport: \
                         rdma_cm picks the device that owns the address"
                    );
                }
                let mut rc = warpwire_rdma::RdmaConfig::default();
                if let Some(d) = b.rdma_depth {
                    (rc.recv_depth, rc.send_slots) = (d, d);
                }
                if let Some(n) = b.rdma_buffer {
                    rc.buf_size = n;
                }
                rc.validate()
                    .map_err(|e| format!("--rdma-depth/--rdma-buffer: {e}"))?;
                Ok(Self::Rdma(rc))
            }
            #[allow(unreachable_patterns)]
            other => Err(format!("transport {other} is not implemented in this build").into()),
        }
    }

    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            Self::Socket => BackendKind::Socket,
            Self::Uring(_) => BackendKind::Uring,
            #[cfg(feature = "rdma")]
            Self::Rdma(_) => BackendKind::Rdma,
            #[cfg(feature = "dpdk")]
            Self::Dpdk { .. } => BackendKind::Dpdk,
            #[cfg(feature = "xdp")]
            Self::Xdp { .. } => BackendKind::Xdp,
        }
    }

    /// The backend's row of the facts table.
    pub fn facts(&self) -> &'static Facts {
        self.kind().facts()
    }

    /// NIC queues (`--queues`; 1 where there are none) and the userspace
    /// stack's settings, where the backend has them.
    fn queues_and_stack(&self) -> (usize, Option<&StackSetup>) {
        match self {
            #[cfg(feature = "dpdk")]
            Self::Dpdk { queues, stack, .. } => (usize::from(*queues), Some(stack)),
            #[cfg(feature = "xdp")]
            Self::Xdp { queues, stack, .. } => (*queues, Some(stack)),
            _ => (1, None),
        }
    }

    /// Workers to run: one per queue where the facts say so.
    pub fn workers(&self, configured: usize) -> usize {
        if self.facts().workers_per_queue {
            self.queues_and_stack().0
        } else {
            configured
        }
    }

    /// The listen address: a stack listens on its own address.
    pub fn listen_addr(&self, listen: SocketAddr) -> SocketAddr {
        match self.queues_and_stack().1 {
            Some(stack) if self.facts().own_address => SocketAddr::from((stack.ip, listen.port())),
            _ => listen,
        }
    }

    /// Runs `command` with this backend's transport factory for `role`:
    /// the one match on the backend in the CLI.
    pub fn run<U: UseTransport>(&self, role: Role, command: U) -> Result<U::Output, BoxError> {
        match (self, role) {
            (Self::Socket, _) => command.run(|_| warpwire_socket::SocketTransport::new()),
            (Self::Uring(uc), _) => {
                let uc = uc.clone();
                command.run(move |_| warpwire_uring::UringTransport::with_config(uc.clone()))
            }
            // rdma_cm has no SO_REUSEPORT: a server's workers share one
            // listener; a client's transports stand alone.
            #[cfg(feature = "rdma")]
            (Self::Rdma(rc), Role::Server) => {
                let (rc, shared) = (rc.clone(), warpwire_rdma::RdmaShared::new());
                command.run(move |_| {
                    warpwire_rdma::RdmaTransport::with_shared(rc.clone(), shared.clone())
                })
            }
            #[cfg(feature = "rdma")]
            (Self::Rdma(rc), Role::Client) => {
                let rc = rc.clone();
                command.run(move |_| warpwire_rdma::RdmaTransport::new(rc.clone()))
            }
            #[cfg(feature = "xdp")]
            (Self::Xdp { iface, stack, .. }, _) => {
                let (iface, stack) = (iface.clone(), stack.clone());
                command.run(move |i| xdp_transport(&iface, i, &stack))
            }
            // One EAL, port and mempool for the process, set up here (this
            // thread becomes EAL's main lcore) and owned by the factory:
            // worker i registers, pins itself and serves queue i. The
            // runtime goes (EAL cleaned up) with the factory, after the
            // last worker.
            #[cfg(feature = "dpdk")]
            (
                Self::Dpdk {
                    eal_args,
                    port,
                    queues,
                    stack,
                },
                Role::Server,
            ) => {
                let rt = crate::dpdk::DpdkRuntime::open(
                    eal_args,
                    *port,
                    *queues,
                    std::time::Duration::ZERO,
                    stack.clone(),
                )?;
                command.run(move |i| rt.worker_transport(i))
            }
            #[cfg(feature = "dpdk")]
            (Self::Dpdk { queues, .. }, Role::Client) if *queues > 1 => {
                Err(crate::dpdk::CLIENT_ONE_QUEUE.into())
            }
            #[cfg(feature = "dpdk")]
            (
                Self::Dpdk {
                    eal_args,
                    port,
                    stack,
                    ..
                },
                Role::Client,
            ) => {
                let (eal_args, port, stack) = (eal_args.clone(), *port, stack.clone());
                command.run(move |_| {
                    crate::dpdk::client_transport(
                        &eal_args,
                        port,
                        &stack,
                        std::time::Duration::from_secs(5),
                    )
                })
            }
        }
    }
}

/// The kernel-TCP backends listen where `--listen` says, through the
/// kernel's own addresses: the bypass options do not apply to them.
fn warn_ignored_by_kernel_tcp(kind: BackendKind, b: &BypassArgs) {
    if b.iface.is_some() || b.ip.is_some() {
        tracing::warn!("--iface/--ip are ignored by the {kind} transport");
    }
    if b.tcp_rx_buffer.is_some()
        || b.tcp_tx_buffer.is_some()
        || b.tcp_backlog.is_some()
        || b.tcp_gso.is_some()
    {
        tracing::warn!(
            "--tcp-* options set the userspace stack; the {kind} transport uses the kernel's TCP"
        );
    }
}

/// Builds an AF_XDP stack transport on `queue`.
#[cfg(feature = "xdp")]
pub fn xdp_transport(
    iface: &str,
    queue: usize,
    s: &StackSetup,
) -> Result<
    warpwire_stack::StackTransport<warpwire_xdp::XdpDevice>,
    warpwire_transport::TransportError,
> {
    let wrap = |what, e: Box<dyn std::error::Error + Send + Sync>| {
        warpwire_transport::TransportError::Backend {
            backend: "xdp",
            what,
            source: e,
        }
    };
    let mut cfg = warpwire_xdp::XdpConfig::new(iface, queue as u32);
    cfg.busy_poll = false;
    // Frames large enough for the interface's MTU (4 KiB ones above 1778):
    // a jumbo-ish MTU is fewer frames, and so fewer segments, per byte.
    if let Ok(mtu) = warpwire_xdp::interface_mtu(iface) {
        cfg.fit_mtu(mtu);
    }
    let dev = warpwire_xdp::XdpDevice::open(cfg)
        .map_err(|e| wrap("cannot open the AF_XDP socket", Box::new(e)))?;
    let sc = s.config(queue, "xdp");
    Ok(warpwire_stack::StackTransport::new(
        dev,
        sc,
        std::time::Instant::now(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidr_and_mac() {
        assert_eq!(
            parse_cidr("10.77.0.1/24").unwrap(),
            (Ipv4Addr::new(10, 77, 0, 1), 24)
        );
        assert!(parse_cidr("10.77.0.1").is_err());
        assert!(parse_cidr("10.77.0.1/33").is_err());
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert!(parse_mac("02:00").is_err());
    }
}
