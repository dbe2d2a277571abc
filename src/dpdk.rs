//! The dpdk transport for the CLI: one EAL, one port and one mempool per
//! process, shared by every worker; one queue, one smoltcp stack and one
//! registered, pinned thread per worker.
//!
//! ```text
//!   serve --queues N:  DpdkRuntime::open (main thread: EAL init, port with N rx + N tx
//!                      queues, RSS when the driver has it, one mempool)
//!                        │ moved into the engine's worker factory
//!   worker i ──────────► worker_transport(i): register + pin to lcore i (round-robin),
//!                        DpdkDevice on queue i, StackTransport (same IP and MAC)
//!   client / bench:    DpdkRuntime::open(1 queue) + transport on queue 0, this thread
//! ```
//!
//! The runtime is dropped when the factory is, after the last worker
//! exits: ports close, the pool is freed and EAL cleans up (removing
//! `/var/run/dpdk/<file-prefix>`).

use std::time::{Duration, Instant};

use warpwire_dpdk::{DeviceConfig, DpdkDevice, DpdkError, Eal, Mempool, Port, PortConfig};
use warpwire_stack::StackTransport;
use warpwire_transport::TransportError;

use crate::backend::StackSetup;

/// Mbufs per queue: its receive and transmit rings (1024 descriptors each
/// by default), the device's pending transmit frames (256) and bursts, and
/// a per-lcore cache (up to 1.5 x 256) with room to spare.
const MBUFS_PER_QUEUE: u32 = 4096;
/// Per-lcore mempool cache: DPDK's examples use 256; registered worker
/// threads allocate and free through it without touching the shared ring.
const MBUF_CACHE: u32 = 256;
/// 2 KiB of frame after the 128-byte headroom: a 1518-byte frame fits.
const DATA_ROOM: u16 = 2048 + 128;

/// A started DPDK port and what it needs, for every worker of a process.
#[derive(Debug)]
pub struct DpdkRuntime {
    eal: Eal,
    port: Port,
    pool: Mempool,
    stack: StackSetup,
}

fn wrap(what: &'static str) -> impl FnOnce(DpdkError) -> TransportError {
    move |e| TransportError::Backend {
        backend: "dpdk",
        what,
        source: Box::new(e),
    }
}

impl DpdkRuntime {
    /// Initialises EAL (once per process: the calling thread becomes its
    /// main lcore and is pinned by EAL), starts the port (`port_id` or the
    /// first one) with `queues` receive and transmit queues, RSS when the
    /// driver supports it, and one mempool sized for every queue. Waits up
    /// to `link_wait` for the link (zero: no wait; a memif server's link
    /// only comes up when its client connects).
    pub fn open(
        eal_args: &[String],
        port_id: Option<u16>,
        queues: u16,
        link_wait: Duration,
        stack: StackSetup,
    ) -> Result<Self, TransportError> {
        let eal = Eal::init(eal_args).map_err(wrap("EAL initialisation failed"))?;
        let ids = Port::ids(&eal);
        let id = match port_id {
            Some(p) if ids.contains(&p) => p,
            Some(_) => {
                return Err(TransportError::Unsupported {
                    backend: "dpdk",
                    what: "no such port (warpwire probe --dpdk-args lists them)",
                });
            }
            None => *ids.first().ok_or(TransportError::Unsupported {
                backend: "dpdk",
                what: "no port: give EAL a --vdev or a bound NIC",
            })?,
        };
        // 8191 for one queue (2^k - 1 is the most memory-efficient size),
        // 12287 for two: about 2.4 KB each, 30 MB, within --no-huge -m 256.
        let n = (u32::from(queues) + 1) * MBUFS_PER_QUEUE - 1;
        let pool =
            Mempool::new(&eal, "ww-mbufs", n, MBUF_CACHE, DATA_ROOM).map_err(wrap("mempool"))?;
        let config = PortConfig {
            rx_queues: queues,
            tx_queues: queues,
            ..PortConfig::default()
        };
        let port = Port::start(&eal, id, &config, &pool).map_err(wrap("port start"))?;
        if !link_wait.is_zero() {
            port.wait_link_up(link_wait)
                .map_err(wrap("link did not come up"))?;
        }
        tracing::info!(
            port = id, driver = port.driver(), queues, rss = port.rss(), mbufs = n,
            lcores = ?eal.lcores(), "DPDK runtime ready"
        );
        Ok(Self {
            eal,
            port,
            pool,
            stack,
        })
    }

    /// Worker `i`'s transport, built on the worker's own thread: the thread
    /// registers with DPDK and is pinned to the CPUs of the `i`-th EAL lcore
    /// (round-robin), then drives queue `i` with a stack of its own. The
    /// registration lives as long as the device (dropped on this thread
    /// when the worker exits).
    pub fn worker_transport(&self, i: usize) -> Result<StackTransport<DpdkDevice>, TransportError> {
        let queue = u16::try_from(i).map_err(|_| TransportError::Unsupported {
            backend: "dpdk",
            what: "more workers than a port can have queues",
        })?;
        let guard = self
            .eal
            .register_thread(i)
            .map_err(wrap("cannot register the worker thread as an lcore"))?;
        tracing::info!(
            worker = i,
            port = self.port.id(),
            queue,
            lcore = guard.lcore_id(),
            eal_lcore = guard.eal_lcore(),
            cpus = ?guard.cpus(),
            "DPDK worker registered as an lcore and pinned"
        );
        let mut dev = DpdkDevice::new(&self.port, queue, &self.pool, DeviceConfig::default())
            .map_err(wrap("device"))?;
        dev.attach_lcore(guard);
        self.stack_on(dev, queue)
    }

    /// A transport on `queue`, driven by the calling thread (a client:
    /// EAL's main lcore), which is pinned to the main lcore's CPUs.
    pub fn transport(&self, queue: u16) -> Result<StackTransport<DpdkDevice>, TransportError> {
        self.eal
            .pin_to_main_lcore()
            .map_err(wrap("cannot pin the client thread to EAL's main lcore"))?;
        let dev = DpdkDevice::new(&self.port, queue, &self.pool, DeviceConfig::default())
            .map_err(wrap("device"))?;
        self.stack_on(dev, queue)
    }

    fn stack_on(
        &self,
        dev: DpdkDevice,
        queue: u16,
    ) -> Result<StackTransport<DpdkDevice>, TransportError> {
        let sc = self.stack.config(usize::from(queue), "dpdk");
        Ok(StackTransport::new(dev, sc, Instant::now())?)
    }
}

/// Why `client` and `bench` refuse `--queues` above 1 on dpdk.
pub const CLIENT_ONE_QUEUE: &str = "--queues above 1 is for `serve`: a dpdk client or bench \
     uses one queue, because a connection must get its replies on the queue its stack sends \
     from, and RSS (or the driver's own steering) may put a reply on any queue; drop --queues";

/// A client's transport: EAL, the port with one queue, and a stack on
/// queue 0 driven by the calling thread. One queue, because a client's
/// connections must get their replies on the queue their stack sends
/// from, and RSS hashes the replies wherever it likes. The runtime's
/// handles live on in the device.
pub fn client_transport(
    eal_args: &[String],
    port_id: Option<u16>,
    stack: &StackSetup,
    link_wait: Duration,
) -> Result<StackTransport<DpdkDevice>, TransportError> {
    DpdkRuntime::open(eal_args, port_id, 1, link_wait, stack.clone())?.transport(0)
}
