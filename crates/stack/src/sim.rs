//! An in-memory Ethernet link between two [`SimDevice`]s, with seeded
//! loss, reordering, duplication, corruption and delay: deterministic tests
//! of the stack (smoltcp's `netsim`, quinn's `Pair` are the models).
//!
//! ```text
//!   SimDevice A ── flush ──► [faults: drop? corrupt? dup? delay/reorder] ──► wire A→B ──► receive(now) on B
//!   SimDevice B ── flush ──► [faults ...] ──► wire B→A ──► receive(now) on A
//! ```
//!
//! Time is the caller's: a frame flushed at `t` with delay `d` is delivered
//! by the first `receive(now)` with `now >= t + d`. Driving both ends from
//! one thread with a virtual clock makes a run a pure function of the seed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use warpwire_transport::{DeviceCapabilities, DeviceError, PacketDevice, RxToken, TxToken, Wake};

/// Fault and shape settings of a link (both directions).
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is held back behind later ones.
    pub reorder: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// Probability one bit of a frame is flipped.
    pub corrupt: f64,
    /// One-way delay.
    pub delay: Duration,
    /// Extra uniform random delay, 0..jitter.
    pub jitter: Duration,
    /// Seed of the fault generator.
    pub seed: u64,
    /// Largest frame (header included).
    pub max_frame: usize,
    /// Frames in flight per direction before tail drop.
    pub queue_limit: usize,
    /// Transmit buffers per device: more frames queued before a flush get
    /// `transmit() == None` (pool exhaustion, as a NIC mempool would).
    pub tx_slots: usize,
    /// Frames `receive` takes per refill (one "native call").
    pub burst: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            loss: 0.0,
            reorder: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            delay: Duration::from_micros(20),
            jitter: Duration::ZERO,
            seed: 1,
            max_frame: 1514,
            queue_limit: 4096,
            tx_slots: 512,
            burst: 64,
        }
    }
}

/// What the link did to the frames it carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Frames handed to the link.
    pub sent: u64,
    /// Frames delivered (duplicates included).
    pub delivered: u64,
    /// Frames lost on purpose.
    pub lost: u64,
    /// Frames corrupted.
    pub corrupted: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Frames held back behind later ones.
    pub reordered: u64,
    /// Frames dropped because the direction's queue was full.
    pub queue_drops: u64,
}

#[derive(Debug, Default)]
struct Direction {
    /// Frames by (delivery time, sequence): BTreeMap order is delivery order.
    inflight: BTreeMap<(Instant, u64), Vec<u8>>,
}

#[derive(Debug)]
struct Link {
    dirs: [Mutex<Direction>; 2],
    ready: Condvar,
    stats: Mutex<SimStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock poisons it; the data (frames, counters)
    // is still consistent, so keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One end of a simulated link.
#[derive(Debug)]
pub struct SimDevice {
    link: Arc<Link>,
    /// Index of the direction this end receives from.
    rx_dir: usize,
    cfg: SimConfig,
    mac: [u8; 6],
    rng: SmallRng,
    seq: u64,
    batch: VecDeque<Vec<u8>>,
    tx_queue: Vec<Vec<u8>>,
    last_now: Option<Instant>,
}

/// Builds a linked pair of devices with MACs 02:00:00:00:00:0a and ..:0b.
pub fn pair(cfg: SimConfig) -> (SimDevice, SimDevice) {
    let link = Arc::new(Link {
        dirs: [
            Mutex::new(Direction::default()),
            Mutex::new(Direction::default()),
        ],
        ready: Condvar::new(),
        stats: Mutex::new(SimStats::default()),
    });
    let make = |rx_dir: usize, last: u8| SimDevice {
        link: link.clone(),
        rx_dir,
        rng: SmallRng::seed_from_u64(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ rx_dir as u64),
        cfg: cfg.clone(),
        mac: [2, 0, 0, 0, 0, last],
        seq: 0,
        batch: VecDeque::new(),
        tx_queue: Vec::new(),
        last_now: None,
    };
    (make(0, 0x0a), make(1, 0x0b))
}

impl SimDevice {
    /// Counters of the whole link (both directions).
    pub fn link_stats(&self) -> SimStats {
        *lock(&self.link.stats)
    }

    /// Changes the fault settings from now on (the seed stays).
    pub fn set_faults(&mut self, loss: f64, reorder: f64, duplicate: f64, corrupt: f64) {
        self.cfg.loss = loss;
        self.cfg.reorder = reorder;
        self.cfg.duplicate = duplicate;
        self.cfg.corrupt = corrupt;
    }

    fn send_dir(&self) -> usize {
        1 - self.rx_dir
    }
}

/// A received frame (owned: the simulator has no NIC memory to lend).
#[derive(Debug)]
pub struct SimRx(Vec<u8>);

impl RxToken for SimRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// A transmit buffer; the frame is queued for the next flush.
#[derive(Debug)]
pub struct SimTx<'a> {
    queue: &'a mut Vec<Vec<u8>>,
    max_frame: usize,
}

impl TxToken for SimTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len.min(self.max_frame)];
        let r = f(&mut buf);
        self.queue.push(buf);
        r
    }
}

struct SimWaker(Arc<Link>);

impl Wake for SimWaker {
    fn wake(&self) {
        self.0.ready.notify_all();
    }
}

impl PacketDevice for SimDevice {
    type RxToken<'a> = SimRx;
    type TxToken<'a> = SimTx<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        DeviceCapabilities {
            max_frame: self.cfg.max_frame,
            max_burst: self.cfg.burst,
            rx_checksum_offload: false,
            tx_checksum_offload: false,
            mac: self.mac,
        }
    }

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        self.last_now = Some(now);
        if self.batch.is_empty() {
            let mut d = lock(&self.link.dirs[self.rx_dir]);
            while self.batch.len() < self.cfg.burst {
                let Some(entry) = d.inflight.first_entry() else {
                    break;
                };
                if entry.key().0 > now {
                    break;
                }
                self.batch.push_back(entry.remove());
            }
        }
        if self.tx_queue.len() >= self.cfg.tx_slots {
            return None;
        }
        let frame = self.batch.pop_front()?;
        Some((
            SimRx(frame),
            SimTx {
                queue: &mut self.tx_queue,
                max_frame: self.cfg.max_frame,
            },
        ))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        self.last_now = Some(now);
        if self.tx_queue.len() >= self.cfg.tx_slots {
            return None;
        }
        Some(SimTx {
            queue: &mut self.tx_queue,
            max_frame: self.cfg.max_frame,
        })
    }

    fn flush(&mut self) -> Result<usize, DeviceError> {
        if self.tx_queue.is_empty() {
            return Ok(0);
        }
        let now = self.last_now.unwrap_or_else(Instant::now);
        let frames = std::mem::take(&mut self.tx_queue);
        let n = frames.len();
        let mut st = SimStats::default();
        {
            let mut d = lock(&self.link.dirs[self.send_dir()]);
            for mut f in frames {
                st.sent += 1;
                if self.rng.random_bool(self.cfg.loss.clamp(0.0, 1.0)) {
                    st.lost += 1;
                    continue;
                }
                if !f.is_empty() && self.rng.random_bool(self.cfg.corrupt.clamp(0.0, 1.0)) {
                    let bit = self.rng.random_range(0..f.len() * 8);
                    f[bit / 8] ^= 1 << (bit % 8);
                    st.corrupted += 1;
                }
                let copies = if self.rng.random_bool(self.cfg.duplicate.clamp(0.0, 1.0)) {
                    st.duplicated += 1;
                    2
                } else {
                    1
                };
                for c in 0..copies {
                    let mut delay = self.cfg.delay;
                    if !self.cfg.jitter.is_zero() {
                        delay += self.cfg.jitter.mul_f64(self.rng.random::<f64>());
                    }
                    if c == 0 && self.rng.random_bool(self.cfg.reorder.clamp(0.0, 1.0)) {
                        // Held back by a few delays: later frames overtake it.
                        delay += self.cfg.delay * 3 + Duration::from_micros(100);
                        st.reordered += 1;
                    }
                    if d.inflight.len() >= self.cfg.queue_limit {
                        st.queue_drops += 1;
                        continue;
                    }
                    self.seq += 1;
                    d.inflight.insert((now + delay, self.seq), f.clone());
                    st.delivered += 1;
                }
            }
        }
        {
            let mut s = lock(&self.link.stats);
            s.sent += st.sent;
            s.lost += st.lost;
            s.corrupted += st.corrupted;
            s.duplicated += st.duplicated;
            s.reordered += st.reordered;
            s.queue_drops += st.queue_drops;
            s.delivered += st.delivered;
        }
        self.link.ready.notify_all();
        Ok(n)
    }

    fn tx_pending(&self) -> usize {
        self.tx_queue.len()
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), DeviceError> {
        if !self.batch.is_empty() {
            return Ok(());
        }
        let d = lock(&self.link.dirs[self.rx_dir]);
        let now = Instant::now();
        let next = d.inflight.keys().next().map(|k| k.0);
        if next.is_some_and(|t| t <= now) {
            return Ok(());
        }
        let mut wait = timeout.unwrap_or(Duration::from_secs(3600));
        if let Some(t) = next {
            wait = wait.min(t - now);
        }
        // Spurious wake-ups are fine: the caller polls and waits again.
        let _ = self.link.ready.wait_timeout(d, wait);
        Ok(())
    }

    fn waker(&self) -> Option<Arc<dyn Wake>> {
        Some(Arc::new(SimWaker(self.link.clone())))
    }
}

/// Two stacks over one [`pair`] with one connection between them, driven
/// by the wall clock: what the stack's examples measure on.
#[derive(Debug)]
pub struct Connected {
    /// The listening end.
    pub server: crate::StackTransport<SimDevice>,
    /// The connecting end.
    pub client: crate::StackTransport<SimDevice>,
    /// The connection, as the server sees it.
    pub server_conn: warpwire_transport::ConnId,
    /// The connection, as the client sees it.
    pub client_conn: warpwire_transport::ConnId,
}

impl Connected {
    /// Two stacks with default settings but `gso`, on a link without
    /// delay or faults, at `server` and `client` (a /24).
    pub fn on_clean_link(
        server: std::net::Ipv4Addr,
        client: std::net::Ipv4Addr,
        gso: bool,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let cfg = |ip| crate::StackConfig {
            gso,
            ..crate::StackConfig::new(ip, 24)
        };
        let link = SimConfig {
            delay: Duration::ZERO,
            ..SimConfig::default()
        };
        Self::new(link, cfg(server), cfg(client))
    }

    /// Builds both stacks on a link of `link`, the server at `server`'s
    /// address listening on port 7077, the client at `client`'s, and polls
    /// both until the connection is up (10 s at most).
    pub fn new(
        link: SimConfig,
        server: crate::StackConfig,
        client: crate::StackConfig,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        use std::net::SocketAddr;
        use warpwire_transport::{Event, Events, Transport};
        let (a, b) = pair(link);
        let start = Instant::now();
        let addr = SocketAddr::from((server.ip, 7077));
        let mut srv = crate::StackTransport::new(a, server, start)?;
        let mut cli = crate::StackTransport::new(b, client, start)?;
        srv.listen(addr)?;
        let c = cli.connect(addr, start)?;
        let mut ev = Events::default();
        let (mut s, mut up) = (None, false);
        let deadline = start + Duration::from_secs(10);
        loop {
            if let (Some(s), true) = (s, up) {
                return Ok(Self {
                    server: srv,
                    client: cli,
                    server_conn: s,
                    client_conn: c,
                });
            }
            if Instant::now() > deadline {
                return Err("no connection within 10 s".into());
            }
            let now = Instant::now();
            srv.poll(now, &mut ev)?;
            for e in ev.iter() {
                if let Event::Accepted { conn, .. } = e {
                    s = Some(*conn);
                }
            }
            cli.poll(now, &mut ev)?;
            up |= ev.iter().any(|e| *e == Event::Connected(c));
        }
    }
}
