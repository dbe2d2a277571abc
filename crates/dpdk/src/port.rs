//! [`Port`]: an Ethernet device configured, started, and closed on drop.

use std::ffi::{CStr, CString, c_char};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use warpwire_dpdk_sys as sys;

use crate::eal::Eal;
use crate::error::{DpdkError, RteErrno};
use crate::mempool::Mempool;

/// How often [`Port::wait_link_up`] looks at the link: memif links come
/// up within milliseconds of the peer connecting, and the check is one
/// cheap non-blocking call.
const LINK_POLL: Duration = Duration::from_millis(5);

/// Ethernet header bytes on top of the MTU (no FCS, no VLAN tag).
const ETH_HEADER: usize = 14;

/// How to bring a port up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Receive queues (one per worker); RSS spreads flows over them when
    /// more than one and the driver supports it.
    pub rx_queues: u16,
    /// Transmit queues.
    pub tx_queues: u16,
    /// Receive descriptors per queue (adjusted to the driver's limits).
    pub rx_descs: u16,
    /// Transmit descriptors per queue (adjusted to the driver's limits).
    pub tx_descs: u16,
    /// Receive every frame, not only those to the port's MAC.
    pub promiscuous: bool,
    /// Enable receive checksum verification when the driver offers IPv4,
    /// TCP and UDP checksum offload; frames it flags bad are dropped by
    /// the device.
    pub rx_checksum: bool,
    /// Set this MTU instead of the driver's default.
    pub mtu: Option<u16>,
}

impl Default for PortConfig {
    fn default() -> Self {
        Self {
            rx_queues: 1,
            tx_queues: 1,
            // DPDK's examples use 1024: enough to ride out a scheduling
            // hiccup at a few Mpps without tying up much of the pool.
            rx_descs: 1024,
            tx_descs: 1024,
            promiscuous: true,
            rx_checksum: true,
            mtu: None,
        }
    }
}

/// What a port is, without starting it (see [`Port::info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Port id.
    pub id: u16,
    /// Device name (`net_memif0`).
    pub name: String,
    /// Driver name (`net_memif`).
    pub driver: String,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u16,
    /// Most receive queues the driver allows.
    pub max_rx_queues: u16,
    /// Most transmit queues the driver allows.
    pub max_tx_queues: u16,
    /// The driver can verify IPv4, TCP and UDP checksums on receive.
    pub rx_checksum_capable: bool,
    /// The link as last seen.
    pub link: Link,
}

/// Link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Link {
    /// Link up.
    pub up: bool,
    /// Speed in Mbit/s (0 when unknown).
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.up {
            write!(f, "link up")?;
            if self.speed_mbps != 0 && self.speed_mbps != u32::MAX {
                write!(f, " {} Mbit/s", self.speed_mbps)?;
            }
            Ok(())
        } else {
            f.write_str("link down")
        }
    }
}

/// The port's hardware/driver counters (`rte_eth_stats_get`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortStats {
    /// Frames received.
    pub ipackets: u64,
    /// Frames sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Frames dropped because no receive descriptor was free.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// Receive mbuf allocation failures (pool too small).
    pub rx_nombuf: u64,
}

/// A configured and started Ethernet port; stopped and closed when the
/// last handle (and every device on it) is gone.
///
/// Hand out its queues with [`DpdkDevice::new`](crate::DpdkDevice::new):
/// each queue to one device, since a queue's bursts must come from one
/// thread.
#[derive(Clone)]
pub struct Port {
    pub(crate) inner: Arc<PortInner>,
}

pub(crate) struct PortInner {
    pub(crate) id: u16,
    pub(crate) info: PortInfo,
    pub(crate) rx_queues: u16,
    pub(crate) tx_queues: u16,
    /// The device owning each queue pair (index: queue id).
    pub(crate) claimed: Vec<AtomicBool>,
    /// Receive checksum offload enabled.
    pub(crate) rx_checksum: bool,
    /// Started in RSS mode (several receive queues, the driver hashes).
    pub(crate) rss: bool,
    pub(crate) rx_pool: Mempool,
    _eal: Eal,
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Port")
            .field("id", &self.inner.id)
            .field("name", &self.inner.info.name)
            .field("driver", &self.inner.info.driver)
            .finish()
    }
}

impl Port {
    /// Ids of every attached port.
    pub fn ids(_eal: &Eal) -> Vec<u16> {
        (0..u16::try_from(sys::RTE_MAX_ETHPORTS).unwrap_or(u16::MAX))
            // SAFETY: EAL is live; the call only checks the id.
            .filter(|&p| unsafe { sys::rte_eth_dev_is_valid_port(p) } == 1)
            .collect()
    }

    /// The id of the port named `name` (`net_null0`, `net_memif0`).
    ///
    /// # Errors
    /// [`DpdkError::NoSuchPortName`].
    pub fn find(_eal: &Eal, name: &str) -> Result<u16, DpdkError> {
        let missing = || DpdkError::NoSuchPortName {
            name: name.to_owned(),
        };
        let cname = CString::new(name).map_err(|_| missing())?;
        let mut id = 0u16;
        // SAFETY: EAL is live; cname is a valid C string, id valid storage.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc == 0 { Ok(id) } else { Err(missing()) }
    }

    /// Creates a `net_ring` port looped back onto one ring of `count`
    /// slots (`count` a power of two; it holds `count - 1` frames): what
    /// is sent comes back on receive. Small rings make the PMD refuse
    /// part of a burst, which is how tests exercise partial transmits.
    /// The ring lives until EAL is cleaned up. Returns the port id; the
    /// port is named `name`.
    ///
    /// # Errors
    /// [`DpdkError::Ring`].
    pub fn create_ring_loopback(_eal: &Eal, name: &str, count: u32) -> Result<u16, DpdkError> {
        let err = |source| DpdkError::Ring {
            name: name.to_owned(),
            source,
        };
        let cname = CString::new(name).map_err(|_| DpdkError::NulInArgument {
            arg: name.to_owned(),
        })?;
        // SAFETY: EAL is live; cname is a valid C string (DPDK copies it).
        let ring = unsafe {
            sys::rte_ring_create(
                cname.as_ptr(),
                count,
                i32::try_from(sys::rte_socket_id()).unwrap_or(-1),
                sys::RING_F_SP_ENQ | sys::RING_F_SC_DEQ,
            )
        };
        if ring.is_null() {
            return Err(err(RteErrno::last()));
        }
        // SAFETY: ring is a live ring; the new port uses it for its one
        // rx and one tx queue.
        let rc = unsafe { sys::rte_eth_from_ring(ring) };
        match u16::try_from(rc) {
            Ok(id) => Ok(id),
            Err(_) => {
                let e = RteErrno::last();
                // SAFETY: no port was made from the ring; nobody else has it.
                unsafe { sys::rte_ring_free(ring) };
                Err(err(e))
            }
        }
    }

    /// What port `id` is, without configuring it.
    ///
    /// # Errors
    /// [`DpdkError::NoSuchPort`], [`DpdkError::Port`].
    pub fn info(_eal: &Eal, id: u16) -> Result<PortInfo, DpdkError> {
        let raw = dev_info(id)?;
        // SAFETY: EAL is live and `id` valid (dev_info checked); `name`
        // has room for RTE_ETH_NAME_MAX_LEN (64) bytes.
        let name = unsafe {
            let mut buf = [0 as c_char; 64];
            if sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) == 0 {
                CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
            } else {
                String::new()
            }
        };
        // SAFETY: driver_name points to the driver's static name string
        // (or is NULL).
        let driver = unsafe {
            if raw.driver_name.is_null() {
                String::new()
            } else {
                CStr::from_ptr(raw.driver_name)
                    .to_string_lossy()
                    .into_owned()
            }
        };
        let mut mac = sys::rte_ether_addr::default();
        // SAFETY: valid port, `mac` is valid storage.
        let rc = unsafe { sys::rte_eth_macaddr_get(id, &mut mac) };
        if rc != 0 {
            return Err(port_err(id, "rte_eth_macaddr_get", rc));
        }
        let mut mtu = 0u16;
        // SAFETY: valid port, `mtu` is valid storage.
        let rc = unsafe { sys::rte_eth_dev_get_mtu(id, &mut mtu) };
        if rc != 0 {
            return Err(port_err(id, "rte_eth_dev_get_mtu", rc));
        }
        // SAFETY: the shim returns a constant.
        let cksum = unsafe { sys::shim_rx_offload_cksum() };
        Ok(PortInfo {
            id,
            name,
            driver,
            mac: mac.addr_bytes,
            mtu,
            max_rx_queues: raw.max_rx_queues,
            max_tx_queues: raw.max_tx_queues,
            rx_checksum_capable: raw.rx_offload_capa & cksum == cksum,
            link: link(id),
        })
    }

    /// Configures port `id` with `config`'s queues (receive buffers from
    /// `rx_pool`), enables RSS over IP/TCP/UDP when there is more than one
    /// receive queue and the driver supports it, and starts it.
    ///
    /// # Errors
    /// [`DpdkError::InvalidConfig`] (queue counts), [`DpdkError::Port`]
    /// naming the DPDK call that failed.
    pub fn start(
        eal: &Eal,
        id: u16,
        config: &PortConfig,
        rx_pool: &Mempool,
    ) -> Result<Port, DpdkError> {
        let info = Self::info(eal, id)?;
        let raw = dev_info(id)?;
        let invalid = |field, reason: String| DpdkError::InvalidConfig {
            port: id,
            field,
            reason,
        };
        if config.rx_queues == 0 || config.rx_queues > raw.max_rx_queues {
            return Err(invalid(
                "rx_queues",
                format!("must be 1..={} ({} allows)", raw.max_rx_queues, info.driver),
            ));
        }
        if config.tx_queues == 0 || config.tx_queues > raw.max_tx_queues {
            return Err(invalid(
                "tx_queues",
                format!("must be 1..={} ({} allows)", raw.max_tx_queues, info.driver),
            ));
        }
        let mut conf = sys::rte_eth_conf::default();
        let mut rss = false;
        if config.rx_queues > 1 {
            // SAFETY: the shim returns a constant.
            let want = unsafe { sys::shim_rss_hf_ip_tcp_udp() };
            let hf = want & raw.flow_type_rss_offloads;
            if hf != 0 {
                conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
                conf.rx_adv_conf.rss_conf.rss_hf = hf;
                rss = true;
            } else {
                // Asking for RSS here makes rte_eth_dev_configure fail.
                info!(
                    port = id, driver = %info.driver, rx_queues = config.rx_queues,
                    "driver offers no RSS: several queues without it, the driver's own steering spreads flows (or not)"
                );
            }
        }
        // SAFETY: the shim returns a constant.
        let cksum = unsafe { sys::shim_rx_offload_cksum() };
        let rx_checksum = config.rx_checksum && info.rx_checksum_capable;
        if rx_checksum {
            conf.rxmode.offloads |= cksum;
        }
        if let Some(mtu) = config.mtu {
            conf.rxmode.mtu = u32::from(mtu);
        }
        // SAFETY: valid port, `conf` a fully initialised configuration.
        let mut rc =
            unsafe { sys::rte_eth_dev_configure(id, config.rx_queues, config.tx_queues, &conf) };
        if rc != 0 && rss {
            // Some drivers list RSS hash types yet refuse the RSS mode
            // without further setup: fall back to plain multi-queue.
            warn!(
                port = id, driver = %info.driver, error = %RteErrno::from_code(rc),
                "configure with RSS refused; retrying without RSS"
            );
            conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_NONE;
            conf.rx_adv_conf.rss_conf.rss_hf = 0;
            rss = false;
            // SAFETY: as above.
            rc = unsafe {
                sys::rte_eth_dev_configure(id, config.rx_queues, config.tx_queues, &conf)
            };
        }
        if rc != 0 {
            return Err(port_err(id, "rte_eth_dev_configure", rc));
        }
        // Closes the port again if a later step fails.
        let guard = CloseGuard(id);
        let (mut rxd, mut txd) = (config.rx_descs, config.tx_descs);
        // SAFETY: valid, configured port; rxd/txd are valid storage.
        let rc = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rxd, &mut txd) };
        if rc != 0 {
            return Err(port_err(id, "rte_eth_dev_adjust_nb_rx_tx_desc", rc));
        }
        // SAFETY: valid port.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        // SOCKET_ID_ANY (-1) passes through as u32::MAX, as DPDK expects.
        let socket = socket as u32;
        for q in 0..config.rx_queues {
            // SAFETY: configured port, queue below the configured count, a
            // live pool that outlives the port (the port keeps a handle);
            // NULL rxconf means the driver's defaults.
            let rc = unsafe {
                sys::rte_eth_rx_queue_setup(id, q, rxd, socket, std::ptr::null(), rx_pool.as_ptr())
            };
            if rc != 0 {
                return Err(port_err(id, "rte_eth_rx_queue_setup", rc));
            }
        }
        for q in 0..config.tx_queues {
            // SAFETY: configured port, queue below the configured count;
            // NULL txconf means the driver's defaults (no offloads).
            let rc = unsafe { sys::rte_eth_tx_queue_setup(id, q, txd, socket, std::ptr::null()) };
            if rc != 0 {
                return Err(port_err(id, "rte_eth_tx_queue_setup", rc));
            }
        }
        // SAFETY: every queue is set up.
        let rc = unsafe { sys::rte_eth_dev_start(id) };
        if rc != 0 {
            return Err(port_err(id, "rte_eth_dev_start", rc));
        }
        std::mem::forget(guard);
        if config.promiscuous {
            // SAFETY: started port. Drivers without the notion (memif,
            // ring) return -ENOTSUP: harmless, they deliver everything.
            let rc = unsafe { sys::rte_eth_promiscuous_enable(id) };
            if rc != 0 {
                debug!(port = id, error = %RteErrno::from_code(rc), "promiscuous mode not enabled");
            }
        }
        let mut info = Self::info(eal, id)?;
        info.link = link(id);
        info!(
            port = id, name = %info.name, driver = %info.driver, rx_queues = config.rx_queues,
            tx_queues = config.tx_queues, rx_descs = rxd, tx_descs = txd, mtu = info.mtu,
            rx_checksum, rss, "DPDK port started"
        );
        Ok(Port {
            inner: Arc::new(PortInner {
                id,
                info,
                rx_queues: config.rx_queues,
                tx_queues: config.tx_queues,
                claimed: (0..config.rx_queues.max(config.tx_queues))
                    .map(|_| AtomicBool::new(false))
                    .collect(),
                rx_checksum,
                rss,
                rx_pool: rx_pool.clone(),
                _eal: eal.clone(),
            }),
        })
    }

    /// Port id.
    pub fn id(&self) -> u16 {
        self.inner.id
    }

    /// Device name (`net_memif0`).
    pub fn name(&self) -> &str {
        &self.inner.info.name
    }

    /// Driver name (`net_memif`).
    pub fn driver(&self) -> &str {
        &self.inner.info.driver
    }

    /// MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.inner.info.mac
    }

    /// MTU.
    pub fn mtu(&self) -> u16 {
        self.inner.info.mtu
    }

    /// Largest Ethernet frame (MTU plus the 14-byte header).
    pub fn max_frame(&self) -> usize {
        usize::from(self.inner.info.mtu) + ETH_HEADER
    }

    /// Receive / transmit queues the port was started with.
    pub fn queues(&self) -> (u16, u16) {
        (self.inner.rx_queues, self.inner.tx_queues)
    }

    /// Whether receive checksum verification is on (the driver offers it
    /// and [`PortConfig::rx_checksum`] asked for it).
    pub fn rx_checksum(&self) -> bool {
        self.inner.rx_checksum
    }

    /// Whether the port runs in RSS mode: several receive queues and a
    /// driver that hashes flows over them. `false` with one queue, and
    /// with several on a driver without RSS (it steers by its own rules:
    /// the tap PMD gets from the kernel's tun driver whatever queue the
    /// kernel picks per flow).
    pub fn rss(&self) -> bool {
        self.inner.rss
    }

    /// The link now (non-blocking).
    pub fn link(&self) -> Link {
        link(self.inner.id)
    }

    /// Waits until the link is up (memif: the peer connected), checking
    /// every few milliseconds, for at most `timeout`.
    ///
    /// # Errors
    /// [`DpdkError::LinkTimeout`].
    pub fn wait_link_up(&self, timeout: Duration) -> Result<Link, DpdkError> {
        let t0 = Instant::now();
        loop {
            let l = self.link();
            if l.up {
                debug!(port = self.inner.id, waited = ?t0.elapsed(), "link up");
                return Ok(l);
            }
            if t0.elapsed() >= timeout {
                return Err(DpdkError::LinkTimeout {
                    port: self.inner.id,
                    waited: t0.elapsed(),
                });
            }
            std::thread::sleep(LINK_POLL);
        }
    }

    /// The driver's counters.
    ///
    /// # Errors
    /// [`DpdkError::Port`].
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: started port, `s` valid storage.
        let rc = unsafe { sys::rte_eth_stats_get(self.inner.id, &mut s) };
        if rc != 0 {
            return Err(port_err(self.inner.id, "rte_eth_stats_get", rc));
        }
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// The pool the receive queues fill from.
    pub fn rx_pool(&self) -> &Mempool {
        &self.inner.rx_pool
    }
}

impl PortInner {
    /// Claims queue `q` for a device.
    pub(crate) fn claim(&self, q: u16) -> Result<(), DpdkError> {
        let queues = self.rx_queues.min(self.tx_queues);
        let slot = self
            .claimed
            .get(usize::from(q))
            .filter(|_| q < queues)
            .ok_or(DpdkError::NoSuchQueue {
                port: self.id,
                queue: q,
                queues,
            })?;
        if slot.swap(true, Ordering::AcqRel) {
            return Err(DpdkError::QueueTaken {
                port: self.id,
                queue: q,
            });
        }
        Ok(())
    }

    /// Releases queue `q` (its device is gone).
    pub(crate) fn release(&self, q: u16) {
        if let Some(slot) = self.claimed.get(usize::from(q)) {
            slot.store(false, Ordering::Release);
        }
    }
}

impl Drop for PortInner {
    fn drop(&mut self) {
        // SAFETY: the last handle and every device on the port are gone,
        // so no burst runs on its queues.
        unsafe {
            let rc = sys::rte_eth_dev_stop(self.id);
            if rc != 0 {
                warn!(port = self.id, error = %RteErrno::from_code(rc), "rte_eth_dev_stop failed");
            }
            let rc = sys::rte_eth_dev_close(self.id);
            if rc != 0 {
                warn!(port = self.id, error = %RteErrno::from_code(rc), "rte_eth_dev_close failed");
            }
        }
        debug!(port = self.id, name = %self.info.name, "DPDK port closed");
    }
}

/// Closes a port whose start-up failed half way.
struct CloseGuard(u16);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        // SAFETY: the port was configured by the failing `start` and is
        // not used by anything else.
        unsafe {
            sys::rte_eth_dev_stop(self.0);
            sys::rte_eth_dev_close(self.0);
        }
    }
}

fn port_err(port: u16, step: &'static str, rc: i32) -> DpdkError {
    DpdkError::Port {
        port,
        step,
        source: RteErrno::from_code(rc),
    }
}

fn dev_info(id: u16) -> Result<sys::rte_eth_dev_info, DpdkError> {
    // SAFETY: the call only checks the id.
    if unsafe { sys::rte_eth_dev_is_valid_port(id) } != 1 {
        return Err(DpdkError::NoSuchPort { port: id });
    }
    let mut raw = sys::rte_eth_dev_info::default();
    // SAFETY: valid port, `raw` valid storage.
    let rc = unsafe { sys::rte_eth_dev_info_get(id, &mut raw) };
    if rc != 0 {
        return Err(port_err(id, "rte_eth_dev_info_get", rc));
    }
    Ok(raw)
}

fn link(id: u16) -> Link {
    let mut l = sys::rte_eth_link::default();
    // SAFETY: `l` is valid storage; an invalid port leaves it zeroed (down).
    unsafe { sys::rte_eth_link_get_nowait(id, &mut l) };
    Link {
        up: u32::from(l.link_status()) == sys::RTE_ETH_LINK_UP,
        speed_mbps: l.link_speed,
        full_duplex: l.link_duplex() != 0,
    }
}
