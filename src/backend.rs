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

/// The selected backend with what it needs to build transports.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Kernel TCP.
    Socket,
    /// A DPDK port (the first one EAL finds), queue 0, one worker.
    #[cfg(feature = "dpdk")]
    Dpdk {
        /// EAL arguments, the program name first.
        eal_args: Vec<String>,
        /// Port id; `None`: the first one.
        port: Option<u16>,
        /// The stack on top.
        stack: StackSetup,
    },
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
                if b.iface.is_some() || b.ip.is_some() {
                    tracing::warn!("--iface/--ip are ignored by the socket transport");
                }
                Ok(Self::Socket)
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
                if b.queues.is_some_and(|q| q > 1) {
                    return Err(
                        "the dpdk transport serves one queue in this version: drop --queues".into(),
                    );
                }
                Ok(Self::Dpdk {
                    eal_args,
                    port: b.port,
                    stack: stack_setup(b)?,
                })
            }
            #[allow(unreachable_patterns)]
            other => Err(format!("transport {other} is not implemented in this build").into()),
        }
    }

    /// Workers to run: one per queue on bypass backends.
    pub fn workers(&self, configured: usize) -> usize {
        match self {
            Self::Socket => configured,
            #[cfg(feature = "dpdk")]
            Self::Dpdk { .. } => 1,
            #[cfg(feature = "xdp")]
            Self::Xdp { queues, .. } => *queues,
        }
    }

    /// The listen address: a stack listens on its own address.
    pub fn listen_addr(&self, listen: SocketAddr) -> SocketAddr {
        match self {
            Self::Socket => listen,
            #[cfg(feature = "dpdk")]
            Self::Dpdk { stack, .. } => SocketAddr::from((stack.ip, listen.port())),
            #[cfg(feature = "xdp")]
            Self::Xdp { stack, .. } => SocketAddr::from((stack.ip, listen.port())),
        }
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
    let mut sc = warpwire_stack::StackConfig::new(s.ip, s.prefix);
    sc.gateway = s.gateway;
    sc.mac = s.mac;
    sc.pcap = s.pcap.as_ref().map(|p| {
        if queue == 0 {
            p.clone()
        } else {
            p.with_extension(format!("q{queue}.pcap"))
        }
    });
    sc.name = "xdp";
    Ok(warpwire_stack::StackTransport::new(
        dev,
        sc,
        std::time::Instant::now(),
    )?)
}

/// Builds a DPDK stack transport: initialises EAL (once per process),
/// starts the first port with one queue, and puts smoltcp on queue 0. The
/// link is not waited for here (a memif server only comes up when its
/// client connects); `link_wait` bounds a client's wait for it.
#[cfg(feature = "dpdk")]
pub fn dpdk_transport(
    eal_args: &[String],
    port_id: Option<u16>,
    s: &StackSetup,
    link_wait: std::time::Duration,
) -> Result<
    warpwire_stack::StackTransport<warpwire_dpdk::DpdkDevice>,
    warpwire_transport::TransportError,
> {
    use warpwire_dpdk::{DeviceConfig, Eal, Mempool, Port, PortConfig};
    let wrap = |what, e: warpwire_dpdk::DpdkError| warpwire_transport::TransportError::Backend {
        backend: "dpdk",
        what,
        source: Box::new(e),
    };
    let eal = Eal::init(eal_args).map_err(|e| wrap("EAL initialisation failed", e))?;
    let ids = Port::ids(&eal);
    let id = match port_id {
        Some(p) if ids.contains(&p) => p,
        Some(_) => {
            return Err(warpwire_transport::TransportError::Unsupported {
                backend: "dpdk",
                what: "no such port (warpwire probe --dpdk-args lists them)",
            });
        }
        None => *ids
            .first()
            .ok_or(warpwire_transport::TransportError::Unsupported {
                backend: "dpdk",
                what: "no port: give EAL a --vdev or a bound NIC",
            })?,
    };
    // 8191 mbufs (a power of two minus one suits the ring) of 2 KiB + headroom:
    // enough for the rx and tx descriptor rings plus bursts in flight.
    let pool =
        Mempool::new(&eal, "ww-mbufs", 8191, 256, 2048 + 128).map_err(|e| wrap("mempool", e))?;
    let port =
        Port::start(&eal, id, &PortConfig::default(), &pool).map_err(|e| wrap("port start", e))?;
    if !link_wait.is_zero() {
        port.wait_link_up(link_wait)
            .map_err(|e| wrap("link did not come up", e))?;
    }
    let dev = warpwire_dpdk::DpdkDevice::new(&port, 0, &pool, DeviceConfig::default())
        .map_err(|e| wrap("device", e))?;
    let mut sc = warpwire_stack::StackConfig::new(s.ip, s.prefix);
    sc.gateway = s.gateway;
    sc.mac = s.mac;
    sc.pcap = s.pcap.clone();
    sc.name = "dpdk";
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
