//! The one place the CLI turns a selected backend into transports: an enum
//! over the backends compiled in, and generic code everywhere else.

use std::net::{Ipv4Addr, SocketAddr};

use warpwire_transport::BackendKind;

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
    })
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

    /// Workers to run: one per queue on bypass backends.
    pub fn workers(&self, configured: usize) -> usize {
        match self {
            Self::Socket | Self::Uring(_) => configured,
            #[cfg(feature = "rdma")]
            Self::Rdma(_) => configured,
            #[cfg(feature = "dpdk")]
            Self::Dpdk { queues, .. } => usize::from(*queues),
            #[cfg(feature = "xdp")]
            Self::Xdp { queues, .. } => *queues,
        }
    }

    /// The listen address: a stack listens on its own address.
    pub fn listen_addr(&self, listen: SocketAddr) -> SocketAddr {
        match self {
            Self::Socket | Self::Uring(_) => listen,
            #[cfg(feature = "rdma")]
            Self::Rdma(_) => listen,
            #[cfg(feature = "dpdk")]
            Self::Dpdk { stack, .. } => SocketAddr::from((stack.ip, listen.port())),
            #[cfg(feature = "xdp")]
            Self::Xdp { stack, .. } => SocketAddr::from((stack.ip, listen.port())),
        }
    }
}

/// The kernel-TCP backends listen where `--listen` says, through the
/// kernel's own addresses: the bypass options do not apply to them.
fn warn_ignored_by_kernel_tcp(kind: BackendKind, b: &BypassArgs) {
    if b.iface.is_some() || b.ip.is_some() {
        tracing::warn!("--iface/--ip are ignored by the {kind} transport");
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
