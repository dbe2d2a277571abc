//! # warpwire-stack: smoltcp TCP over any PacketDevice, as a Transport
//!
//! The packet backends (AF_XDP, DPDK, the simulator) move Ethernet frames;
//! this crate turns any of them into the connection-level [`Transport`] the
//! engine and client use, with smoltcp (from crates.io, unmodified) doing
//! TCP. A server on it speaks real TCP, so ordinary kernel clients can talk
//! to it.
//!
//! smoltcp finds a segment's socket by scanning its socket set, and sends
//! by scanning it again: per-segment work grows with the connection count.
//! So the stack is built around it rather than on one big set:
//!
//! ```text
//!   PacketDevice::receive ─► checksum policy ─► pcap ─► demux (parse once, hash the 4-tuple)
//!        ├─ ARP ─────────────► our neighbour table (link.rs); replies to requests
//!        ├─ known flow ──────► its shard: a small smoltcp Interface + SocketSet (≤ shard_size sockets)
//!        ├─ SYN to a listener► the shard holding that port's one armed listening socket,
//!        │                     within the backlog (half-open table, oldest stale one evicted)
//!        └─ anything else ───► the control shard (no sockets: ICMP echo, RSTs)
//!   egress: only shards marked dirty (a segment in, a send, a recv, a close,
//!           a due timer), each framed for Ethernet by the neighbour table
//!   timers: a heap of shard wake-ups from smoltcp's own poll_at
//!   events: only connections touched since the last poll (a ready list)
//! ```
//!
//! Every shard interface is `Medium::Ip`: Ethernet and ARP are ours, once,
//! so thousands of shards share one neighbour table. The cost of a segment
//! or of a send is bounded by `shard_size`, not by the connection count.
//!
//! - **Backlog.** Each listened port has one armed listening socket; a SYN
//!   takes it and another is armed at once, so a burst of SYNs meets no
//!   serialisation. At most `backlog` handshakes are half-open per port:
//!   beyond that a new SYN evicts the oldest half-open one if it has waited
//!   longer than [`StackConfig::syn_evict_after`] (a spoofed flood never
//!   completes; a real client does within a round trip), else it is
//!   dropped, not refused, and the client retries it. A half-open
//!   handshake older than `handshake_timeout` is dropped. Memory under a
//!   SYN flood is bounded by `backlog` sockets.
//! - **Checksums.** When the device says its receive checksums may be
//!   partial (veth), TCP checksums are verified here, accepting a partial
//!   value only when it matches the pseudo-header: offloaded senders work,
//!   corrupt segments are dropped (see [`checksum`]). Transmitted frames
//!   always carry full checksums unless the device offloads them.
//! - **Backpressure.** A full socket send buffer is a short `send`; no free
//!   device buffer is a deferred transmit; nothing panics.
//!
//! Not here: framing, sessions (engine), drivers (xdp, dpdk crates).

#![forbid(unsafe_code)]

pub mod checksum;
pub mod demux;
mod gso;
mod link;
pub mod pcap;
mod sack;
pub mod sim;

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy;
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use warpwire_transport::{
    Capabilities, CloseReason, ConnId, ConnTable, Event, Events, LatencyClass, PacketDevice,
    RxToken, Transport, TransportError, TxToken, Wake,
};

use demux::{FlowKey, Flows, Frame, Place};
use link::{ETH, Egress, EthTx, Link, OneShot};

/// Settings of one stack instance (one per worker and device queue).
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Our IPv4 address.
    pub ip: Ipv4Addr,
    /// Prefix length of our subnet.
    pub prefix_len: u8,
    /// Default gateway for destinations outside the subnet.
    pub gateway: Option<Ipv4Addr>,
    /// MAC address; `None` uses the device's.
    pub mac: Option<[u8; 6]>,
    /// Receive buffer per connection. Above 64 KiB, smoltcp negotiates window
    /// scaling; size it to the bandwidth-delay product of the path.
    pub rx_buffer: usize,
    /// Send buffer per connection.
    pub tx_buffer: usize,
    /// Half-open handshakes per listened port (the SYN queue).
    pub backlog: usize,
    /// Sockets (established, connecting, half-open, listening, closing) at most.
    pub max_sockets: usize,
    /// Sockets per shard (one smoltcp interface and socket set each): the
    /// bound on the work of one segment or one send.
    pub shard_size: usize,
    /// A half-open handshake is dropped after this long.
    pub handshake_timeout: Duration,
    /// With the SYN queue full, a new SYN evicts the oldest half-open
    /// handshake if it is at least this old; else the SYN is dropped.
    pub syn_evict_after: Duration,
    /// Frames processed per poll: bounds one poll's work under a flood.
    pub ingress_budget: usize,
    /// How long a closed connection may take to finish its FIN exchange
    /// before it is aborted.
    pub close_linger: Duration,
    /// Seed for smoltcp's ISN and port randomness (fixed in deterministic tests).
    pub seed: u64,
    /// Record every frame to this pcap file.
    pub pcap: Option<std::path::PathBuf>,
    /// Backend name reported in capabilities (and STATS): `xdp`, `dpdk`, `sim`.
    pub name: &'static str,
    /// Segmentation offload in software: smoltcp sends up to
    /// [`StackConfig::super_segment`] bytes per segment and the stack cuts
    /// them to the wire's size (what a NIC's TSO does), so its
    /// per-segment cost is paid once per many wire segments. On by default.
    pub gso: bool,
    /// Every pure ACK to a peer that permitted SACK carries the blocks
    /// smoltcp reported for its flow (up to four, most recent first), and
    /// a D-SACK block when it answers a duplicate segment, where smoltcp
    /// puts one block in some ACKs and sends no D-SACK (`sack.rs`). On by
    /// default.
    pub sack_blocks: bool,
}

/// Default receive buffer per connection (see [`StackConfig::new`]).
pub const DEFAULT_RX_BUFFER: usize = 64 * 1024;
/// Default send buffer per connection.
pub const DEFAULT_TX_BUFFER: usize = 16 * 1024;
/// Default SYN queue per listened port.
pub const DEFAULT_BACKLOG: usize = 4096;

impl StackConfig {
    /// Defaults for an address and prefix.
    pub fn new(ip: Ipv4Addr, prefix_len: u8) -> Self {
        Self {
            ip,
            prefix_len,
            gateway: None,
            mac: None,
            // 64 KiB receive, 16 KiB send, by measurement (docs/benchmarks.md,
            // "Socket buffers"): over memif, 64 B echo at 10 connections and
            // one connection's 16 KiB bulk at depth 16 ran the same as with
            // 256/64 KiB (within 2 %), while 50,000 busy connections may
            // touch all of both buffers (smoltcp's receive ring does not
            // rewind when empty): 4 GB at most instead of 16 GB. Both are
            // allocated zeroed and untouched, so an idle connection's
            // resident memory is only the pages its traffic reached. Paths
            // with a larger bandwidth-delay product raise --tcp-rx-buffer.
            rx_buffer: DEFAULT_RX_BUFFER,
            tx_buffer: DEFAULT_TX_BUFFER,
            backlog: DEFAULT_BACKLOG,
            max_sockets: 131_072,
            shard_size: 8,
            handshake_timeout: Duration::from_secs(10),
            syn_evict_after: Duration::from_secs(1),
            // Larger than one NIC burst (64) several times over, small enough
            // that one poll stays in the tens of microseconds.
            ingress_budget: 256,
            close_linger: Duration::from_secs(2),
            seed: rand::random(),
            pcap: None,
            name: "stack",
            gso: true,
            sack_blocks: true,
        }
    }

    /// The segment size smoltcp is allowed with [`StackConfig::gso`] on a
    /// wire carrying `wire_mss` bytes per segment: a multiple of it, a
    /// quarter of the receive buffer at most (smoltcp also acknowledges
    /// every that many bytes received) and no more than an IPv4 packet.
    pub fn super_segment(&self, wire_mss: usize) -> usize {
        let wire_mss = wire_mss.max(1);
        if !self.gso {
            return wire_mss;
        }
        let most = (gso::SUPER_MTU - 40) / wire_mss;
        wire_mss * (self.rx_buffer / 4 / wire_mss).clamp(1, most.max(1))
    }
}

/// Counters of one stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Frames received from the device.
    pub rx_frames: u64,
    /// Frames sent to the device.
    pub tx_frames: u64,
    /// Received TCP segments that carried a partial (offloaded) checksum.
    pub rx_partial_csum: u64,
    /// Received TCP segments dropped for a bad checksum.
    pub rx_corrupt: u64,
    /// Times a SYN found no listening socket to take it (socket limit).
    pub backlog_full: u64,
    /// SYNs dropped because their listener's SYN queue was full (the
    /// client retransmits them).
    pub syn_dropped: u64,
    /// Half-open handshakes evicted by a newer SYN (SYN queue full).
    pub syn_evicted: u64,
    /// Half-open handshakes dropped after `handshake_timeout`.
    pub handshake_timeouts: u64,
    /// ARP requests sent for unknown next hops.
    pub arp_requests: u64,
    /// Packets dropped while waiting for an ARP reply (hold queue full).
    pub arp_held_dropped: u64,
    /// Packets with no route (off-subnet, no gateway).
    pub no_route: u64,
    /// Failed pcap writes.
    pub pcap_errors: u64,
    /// Shards (smoltcp interfaces) in use, the control shard included.
    pub shards: u64,
    /// Flows in the demux table (connections and half-open handshakes).
    pub flows: u64,
    /// Large TCP packets cut into wire segments ([`StackConfig::gso`]).
    pub gso_packets: u64,
    /// The wire segments they made.
    pub gso_segments: u64,
    /// ACKs given SACK blocks smoltcp left out ([`StackConfig::sack_blocks`]).
    pub sack_added: u64,
    /// D-SACK blocks sent (a duplicate segment reported to its sender).
    pub sack_dsack: u64,
    /// Packets larger than the wire that could not be cut (not one whole
    /// IPv4 TCP packet): dropped.
    pub gso_dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Open,
    /// close() called: FIN sent or queued; dropped when the exchange ends.
    Closing(Instant),
}

#[derive(Debug)]
struct Conn {
    place: Place,
    key: FlowKey,
    state: State,
    peer: SocketAddr,
    write_blocked: bool,
    paused: bool,
    /// The peer's FIN was reported (PeerFinished); the connection stays
    /// open for sending until the consumer closes it.
    finished: bool,
    /// In the ready list.
    queued: bool,
}

#[derive(Debug, Clone, Copy)]
enum Owner {
    /// A listener's armed listening socket.
    Listen,
    /// A handshake in progress.
    HalfOpen {
        listener: usize,
        key: FlowKey,
        since: Instant,
    },
    Conn(ConnId),
}

#[derive(Debug, Clone, Copy)]
struct Member {
    handle: SocketHandle,
    owner: Owner,
}

struct Shard {
    iface: Interface,
    sockets: SocketSet<'static>,
    members: Vec<Member>,
    /// In the dirty list: egress at the next drive.
    dirty: bool,
    /// A timer fired: check every member after the next egress.
    sweep: bool,
    /// The wake-up in force in the timer heap.
    wake: Option<Instant>,
    /// In the list of shards with room.
    in_room: bool,
}

impl Shard {
    fn member(&mut self, h: SocketHandle) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.handle == h)
    }
}

#[derive(Debug)]
struct Listener {
    port: u16,
    armed: Option<Place>,
    /// Half-open handshakes in arrival order (entries whose handshake
    /// ended are skipped when met).
    half_open: VecDeque<(FlowKey, Instant)>,
    half: usize,
}

/// Everything but the device, so a received frame's closure can borrow it
/// while the device lends the frame.
struct Core {
    shards: Vec<Shard>,
    flows: Flows,
    conns: ConnTable<Conn>,
    listeners: Vec<Listener>,
    pending: Vec<Event>,
    ready: Vec<ConnId>,
    spare: Vec<ConnId>,
    dirty: VecDeque<u32>,
    room: Vec<u32>,
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    closing: BinaryHeap<Reverse<(Instant, ConnId)>>,
    link: RefCell<Link>,
    caps: phy::DeviceCapabilities,
    epoch: Instant,
    now: Instant,
    /// `now` of the drive in progress, in smoltcp's clock.
    t: smoltcp::time::Instant,
    next_port: u16,
    own_tcp_check: bool,
    /// With segmentation offload, what a peer's SYN MSS option becomes
    /// when it allows the wire's full segment
    /// ([`StackConfig::super_segment`]).
    super_mss: Option<u16>,
    /// A SYN's frame, copied to rewrite its MSS option.
    syn_frame: Vec<u8>,
    members: usize,
    backlog_full: u64,
    syn_dropped: u64,
    syn_evicted: u64,
    handshake_timeouts: u64,
    config: StackConfig,
}

/// smoltcp over a [`PacketDevice`], as a [`Transport`].
pub struct StackTransport<D: PacketDevice> {
    dev: D,
    core: Core,
    waker: Arc<dyn Wake>,
    device_waker: bool,
}

impl<D: PacketDevice> std::fmt::Debug for StackTransport<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackTransport")
            .field("ip", &self.core.config.ip)
            .field("conns", &self.core.conns.len())
            .field("shards", &self.core.shards.len())
            .finish()
    }
}

/// Errors building a stack.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The pcap file could not be created.
    #[error("cannot create pcap file {path}")]
    Pcap {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The gateway is not usable (not IPv4 unicast).
    #[error("invalid gateway {0}")]
    Gateway(Ipv4Addr),
    /// A setting out of range.
    #[error("invalid stack setting: {0}")]
    Setting(&'static str),
}

impl From<StackError> for TransportError {
    fn from(e: StackError) -> Self {
        TransportError::Backend {
            backend: "stack",
            what: "setup failed",
            source: Box::new(e),
        }
    }
}

/// The waker of a stack whose device cannot be woken: waking does nothing,
/// because such a stack never sleeps longer than [`WAIT_SLICE`], which
/// bounds how late a cross-thread wake (a broadcast relay) is noticed.
#[derive(Debug, Default)]
struct SliceWaker;

impl Wake for SliceWaker {
    fn wake(&self) {}
}

/// Longest sleep on a device without a waker.
const WAIT_SLICE: Duration = Duration::from_millis(1);

/// smoltcp's delayed-ACK timer on every socket.
const ACK_DELAY: Duration = Duration::from_millis(1);

/// Egress rounds per dirty shard per drive: each round sends at most one
/// segment per socket, and a shard with more to send stays dirty for the
/// next drive. More rounds send larger bursts, which a jittery link
/// reorders wholesale, and smoltcp's reassembly keeps only a few holes
/// (the lossy sim test stalls on RTOs with 64).
const EGRESS_ROUNDS: usize = 4;

fn new_socket(cfg: &StackConfig) -> tcp::Socket<'static> {
    let rx = tcp::SocketBuffer::new(vec![0u8; cfg.rx_buffer]);
    let tx = tcp::SocketBuffer::new(vec![0u8; cfg.tx_buffer]);
    let mut s = tcp::Socket::new(rx, tx);
    s.set_nagle_enabled(false);
    // Requests and replies piggyback ACKs; a short delay still coalesces
    // pure ACKs under streaming without costing request latency.
    s.set_ack_delay(Some(smoltcp::time::Duration::from_micros(
        ACK_DELAY.as_micros() as u64,
    )));
    s
}

fn ts(epoch: Instant, now: Instant) -> smoltcp::time::Instant {
    let us = now.saturating_duration_since(epoch).as_micros();
    smoltcp::time::Instant::from_micros(i64::try_from(us).unwrap_or(i64::MAX))
}

fn to_std(epoch: Instant, t: smoltcp::time::Instant) -> Instant {
    epoch + Duration::from_micros(u64::try_from(t.total_micros()).unwrap_or(0))
}

/// A device that only states capabilities, to build interfaces with.
struct NullDev<'a>(&'a phy::DeviceCapabilities);

impl phy::Device for NullDev<'_> {
    type RxToken<'b>
        = link::IpRx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = link::IpRx<'b>
    where
        Self: 'b;
    fn receive(
        &mut self,
        _: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        None
    }
    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        None
    }
    fn capabilities(&self) -> phy::DeviceCapabilities {
        self.0.clone()
    }
}

impl phy::TxToken for link::IpRx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        f(&mut vec![0; len])
    }
}

impl Core {
    fn ts(&self, now: Instant) -> smoltcp::time::Instant {
        ts(self.epoch, now)
    }

    fn new_shard(&mut self) -> Result<u32, StackError> {
        let k = self.shards.len() as u32;
        let mut icfg = Config::new(HardwareAddress::Ip);
        icfg.random_seed = self
            .config
            .seed
            .wrapping_add(u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let t = self.ts(self.now);
        let mut iface = Interface::new(icfg, &mut NullDev(&self.caps), t);
        let (ip, prefix) = (self.config.ip, self.config.prefix_len);
        iface.update_ip_addrs(|addrs| {
            // One address: the capacity (IFACE_MAX_ADDR_COUNT) is larger.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(ip), prefix));
        });
        if let Some(gw) = self.config.gateway {
            iface
                .routes_mut()
                .add_default_ipv4_route(gw)
                .map_err(|_| StackError::Gateway(gw))?;
        }
        self.shards.push(Shard {
            iface,
            sockets: SocketSet::new(Vec::new()),
            members: Vec::new(),
            dirty: false,
            sweep: false,
            wake: None,
            in_room: false,
        });
        Ok(k)
    }

    /// A shard with room for one more socket (a new one if none has).
    fn room(&mut self) -> u32 {
        while let Some(&k) = self.room.last() {
            let s = &mut self.shards[k as usize];
            if s.members.len() < self.config.shard_size {
                return k;
            }
            s.in_room = false;
            self.room.pop();
        }
        // The address and gateway were checked when shard 0 was built.
        let k = self.new_shard().unwrap_or(0);
        self.shards[k as usize].in_room = true;
        self.room.push(k);
        k
    }

    fn add(&mut self, k: u32, s: tcp::Socket<'static>) -> Place {
        let handle = self.shards[k as usize].sockets.add(s);
        self.members += 1;
        Place { shard: k, handle }
    }

    fn push_member(&mut self, p: Place, owner: Owner) {
        self.shards[p.shard as usize].members.push(Member {
            handle: p.handle,
            owner,
        });
    }

    fn drop_member(&mut self, p: Place) {
        let s = &mut self.shards[p.shard as usize];
        if let Some(i) = s.members.iter().position(|m| m.handle == p.handle) {
            s.members.swap_remove(i);
        }
        s.sockets.remove(p.handle);
        self.members -= 1;
        if !s.in_room && p.shard != 0 {
            s.in_room = true;
            self.room.push(p.shard);
        }
    }

    fn socket(&mut self, p: Place) -> &mut tcp::Socket<'static> {
        self.shards[p.shard as usize]
            .sockets
            .get_mut::<tcp::Socket<'static>>(p.handle)
    }

    fn mark(&mut self, k: u32) {
        let s = &mut self.shards[k as usize];
        if !s.dirty {
            s.dirty = true;
            self.dirty.push_back(k);
        }
    }

    fn queue(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id)
            && !c.queued
        {
            c.queued = true;
            self.ready.push(id);
        }
    }

    /// Keeps one listening socket armed for listener `li`, if the socket
    /// limit allows.
    fn arm(&mut self, li: usize) {
        if self.listeners[li].armed.is_some() {
            return;
        }
        if self.members >= self.config.max_sockets {
            self.backlog_full += 1;
            return;
        }
        let mut s = new_socket(&self.config);
        if s.listen(self.listeners[li].port).is_err() {
            return;
        }
        let k = self.room();
        let p = self.add(k, s);
        self.push_member(p, Owner::Listen);
        self.listeners[li].armed = Some(p);
    }

    /// Closes every listener: its armed socket and its half-open
    /// handshakes go, silently (the handshake's ACK then finds no flow,
    /// and the control shard answers it with a RST), and a SYN to its port
    /// is answered with a RST. Accepted connections are untouched.
    fn stop_listening(&mut self) {
        let now = self.now;
        for li in 0..self.listeners.len() {
            if let Some(p) = self.listeners[li].armed.take() {
                self.drop_member(p);
            }
            self.expire_half_open(li, now, Duration::ZERO, usize::MAX);
        }
        self.listeners.clear();
    }

    fn listener_of(&self, port: u16) -> Option<usize> {
        self.listeners.iter().position(|l| l.port == port)
    }

    /// Whether `key`'s half-open handshake begun at `since` is still one.
    fn half_open_at(&self, key: &FlowKey, since: Instant) -> Option<Place> {
        let p = self.flows.get(key)?;
        let m = self.shards[p.shard as usize]
            .members
            .iter()
            .find(|m| m.handle == p.handle)?;
        matches!(m.owner, Owner::HalfOpen { since: s, .. } if s == since).then_some(p)
    }

    /// Drops a half-open handshake silently (evicted or timed out).
    fn drop_half_open(&mut self, li: usize, key: FlowKey, p: Place) {
        self.flows.remove(&key, p);
        self.link.borrow_mut().forget_flow(&key);
        self.drop_member(p);
        self.listeners[li].half -= 1;
    }

    /// Drops listener `li`'s half-open handshakes older than `age` at
    /// `now`, at most `limit` of them; returns how many.
    fn expire_half_open(&mut self, li: usize, now: Instant, age: Duration, limit: usize) -> usize {
        let mut n = 0;
        while n < limit {
            let Some(&(key, since)) = self.listeners[li].half_open.front() else {
                break;
            };
            let Some(p) = self.half_open_at(&key, since) else {
                self.listeners[li].half_open.pop_front();
                continue;
            };
            if now.saturating_duration_since(since) < age {
                break;
            }
            self.listeners[li].half_open.pop_front();
            self.drop_half_open(li, key, p);
            n += 1;
        }
        n
    }

    /// One received frame: checksum policy, demux, the owning shard.
    fn on_frame<T: TxToken>(&mut self, frame: &[u8], tx: T, now: Instant) {
        {
            let mut l = self.link.borrow_mut();
            l.rx_frames += 1;
            l.capture(now, frame);
            if self.own_tcp_check {
                match checksum::check_tcp(frame) {
                    checksum::Verdict::Corrupt => {
                        l.rx_corrupt += 1;
                        return;
                    }
                    checksum::Verdict::Partial => l.rx_partial_csum += 1,
                    checksum::Verdict::Valid | checksum::Verdict::NotTcp => {}
                }
            }
        }
        match demux::classify(frame, self.config.ip) {
            Frame::Drop => {}
            Frame::Arp => {
                let mut l = self.link.borrow_mut();
                if let Some((mac, ip)) = l.on_arp(frame, now) {
                    tx.consume(Link::ARP_LEN, |buf| {
                        l.write_arp_reply(buf, mac, ip);
                        l.tx_frames += 1;
                        l.capture(now, buf);
                    });
                }
            }
            Frame::OtherIp { src, src_mac } => {
                self.link.borrow_mut().confirm(src, src_mac, now);
                self.deliver(0, frame, tx, now);
            }
            Frame::Tcp {
                key,
                syn,
                any_syn,
                seq,
                data,
                src_mac,
            } => {
                // A data segment's range is noted for a D-SACK in its reply
                // (sack.rs).
                let seg = {
                    let mut l = self.link.borrow_mut();
                    l.confirm(key.remote, src_mac, now);
                    data > 0 && !any_syn && l.rx_segment(key, seq, data)
                };
                // A SYN that may open a connection (no flow yet, or ours
                // waiting for its SYN-ACK); smoltcp ignores the options of
                // any other.
                let opening = any_syn && self.syn_may_open(&key);
                if any_syn && let Some(big) = self.super_mss {
                    // A SYN or SYN-ACK: a peer that takes the wire's full
                    // segment is offered to smoltcp as taking super_mss
                    // (gso.rs), on a copy of the frame.
                    let mut f = std::mem::take(&mut self.syn_frame);
                    f.clear();
                    f.extend_from_slice(frame);
                    let wire = self.link.borrow().wire_mss;
                    gso::set_syn_mss(&mut f[ETH..], |m| if m >= wire { big } else { m });
                    self.on_tcp(&f, key, syn, tx, now);
                    self.syn_frame = f;
                    if opening {
                        self.peer_syn(key, frame);
                    }
                    return;
                }
                self.on_tcp(frame, key, syn, tx, now);
                if opening {
                    self.peer_syn(key, frame);
                }
                if seg {
                    self.link.borrow_mut().rx_done();
                }
            }
        }
    }

    /// Whether a SYN or SYN-ACK of `key` may open a connection: no flow
    /// yet (a listener may take it), or ours still waiting in SYN-SENT.
    fn syn_may_open(&mut self, key: &FlowKey) -> bool {
        match self.flows.get(key) {
            None => true,
            Some(p) => self.socket(p).state() == tcp::State::SynSent,
        }
    }

    /// After a peer's SYN or SYN-ACK that may open a connection: whether
    /// its flow (if smoltcp took it) may get SACK blocks (sack.rs). A SYN
    /// that made no flow leaves nothing behind.
    fn peer_syn(&mut self, key: FlowKey, frame: &[u8]) {
        let known = self.flows.contains(&key);
        if let Some(s) = self.link.borrow_mut().sack.as_mut() {
            s.peer_syn(key, known && sack::permits_sack(&frame[ETH..]));
        }
    }

    fn on_tcp<T: TxToken>(&mut self, frame: &[u8], key: FlowKey, syn: bool, tx: T, now: Instant) {
        if let Some(p) = self.flows.get(&key) {
            self.deliver(p.shard, frame, tx, now);
            self.after(p, now);
        } else if syn && let Some(li) = self.listener_of(key.local_port) {
            self.on_syn(li, key, frame, tx, now);
        } else {
            // No flow: the control shard answers with a RST.
            self.deliver(0, frame, tx, now);
        }
    }

    fn on_syn<T: TxToken>(&mut self, li: usize, key: FlowKey, frame: &[u8], tx: T, now: Instant) {
        if self.listeners[li].half >= self.config.backlog {
            if self.expire_half_open(li, now, self.config.syn_evict_after, 1) == 0 {
                // Full of young handshakes: drop, the client retransmits.
                self.syn_dropped += 1;
                return;
            }
            self.syn_evicted += 1;
        }
        self.arm(li);
        let Some(p) = self.listeners[li].armed else {
            self.syn_dropped += 1;
            return;
        };
        self.deliver(p.shard, frame, tx, now);
        if self.socket(p).state() != tcp::State::SynReceived {
            // Not taken (options smoltcp refused): the socket still listens.
            return;
        }
        if let Some(m) = self.shards[p.shard as usize].member(p.handle) {
            m.owner = Owner::HalfOpen {
                listener: li,
                key,
                since: now,
            };
        }
        self.flows.insert(key, p);
        let l = &mut self.listeners[li];
        l.armed = None;
        l.half += 1;
        l.half_open.push_back((key, now));
        self.arm(li);
    }

    fn deliver<T: TxToken>(&mut self, k: u32, frame: &[u8], tx: T, now: Instant) {
        let t = self.t;
        let shard = &mut self.shards[k as usize];
        let mut dev = OneShot {
            packet: Some((
                &frame[ETH..],
                EthTx {
                    inner: tx,
                    now,
                    link: &self.link,
                },
            )),
            caps: &self.caps,
        };
        shard
            .iface
            .poll_ingress_single(t, &mut dev, &mut shard.sockets);
        if k != 0 {
            self.mark(k);
        }
    }

    /// After a segment reached the flow at `p`: a handshake that completed
    /// becomes a connection; a connection is checked at the next poll.
    fn after(&mut self, p: Place, now: Instant) {
        let Some(m) = self.shards[p.shard as usize].member(p.handle).copied() else {
            return;
        };
        match m.owner {
            Owner::Conn(id) => self.queue(id),
            Owner::Listen => {}
            Owner::HalfOpen { listener, key, .. } => match self.socket(p).state() {
                tcp::State::SynReceived => {}
                tcp::State::Listen | tcp::State::Closed => {
                    // Reset during the handshake.
                    self.drop_half_open(listener, key, p);
                }
                _ => {
                    self.listeners[listener].half -= 1;
                    let peer = SocketAddr::V4(SocketAddrV4::new(key.remote, key.remote_port));
                    let Ok(id) = self.conns.insert(Conn {
                        place: p,
                        key,
                        state: State::Open,
                        peer,
                        write_blocked: false,
                        paused: false,
                        finished: false,
                        queued: false,
                    }) else {
                        self.flows.remove(&key, p);
                        self.link.borrow_mut().forget_flow(&key);
                        self.drop_member(p);
                        return;
                    };
                    if let Some(m) = self.shards[p.shard as usize].member(p.handle) {
                        m.owner = Owner::Conn(id);
                    }
                    let listener =
                        SocketAddr::V4(SocketAddrV4::new(self.config.ip, key.local_port));
                    self.pending.push(Event::Accepted {
                        conn: id,
                        peer,
                        listener,
                    });
                    self.queue(id);
                    let _ = now;
                }
            },
        }
    }

    fn remove_conn(&mut self, id: ConnId, reason: CloseReason) {
        let Some(c) = self.conns.remove(id) else {
            return;
        };
        self.flows.remove(&c.key, c.place);
        self.link.borrow_mut().forget_flow(&c.key);
        self.drop_member(c.place);
        self.pending.push(Event::Closed(id, reason));
    }

    /// Reports what changed on one connection; `true`: check it again at
    /// the next poll (unread input: events are level-triggered).
    fn check(&mut self, id: ConnId, now: Instant, events: &mut Events) -> bool {
        let again = self.check_inner(id, now, events);
        if !again && let Some(c) = self.conns.get_mut(id) {
            c.queued = false;
        }
        again
    }

    fn check_inner(&mut self, id: ConnId, now: Instant, events: &mut Events) -> bool {
        let Some(c) = self.conns.get_mut(id) else {
            return false;
        };
        let s = self.shards[c.place.shard as usize]
            .sockets
            .get_mut::<tcp::Socket<'static>>(c.place.handle);
        match c.state {
            State::Connecting => match s.state() {
                tcp::State::SynSent | tcp::State::SynReceived => false,
                tcp::State::Closed => {
                    self.remove_conn(id, CloseReason::ConnectFailed(None));
                    false
                }
                _ => {
                    c.state = State::Open;
                    events.push(Event::Connected(id));
                    true
                }
            },
            State::Open => {
                let mut again = false;
                if s.can_recv() && !c.paused {
                    events.push(Event::Readable(id));
                    again = true;
                } else if !s.may_recv() && s.recv_queue() == 0 {
                    // Peer's FIN and every byte read: like EOF. The
                    // connection stays writable (CLOSE-WAIT) for the
                    // replies; the consumer's close() sends our FIN.
                    if s.state() == tcp::State::Closed {
                        self.remove_conn(id, CloseReason::Reset(None));
                        return false;
                    }
                    if !c.finished {
                        c.finished = true;
                        events.push(Event::PeerFinished(id));
                    }
                }
                if c.write_blocked && s.can_send() {
                    c.write_blocked = false;
                    events.push(Event::Writable(id));
                }
                again
            }
            State::Closing(_) => {
                // Discard input so the peer's data cannot stall the FIN.
                let mut drained = false;
                while s.can_recv() {
                    if s.recv(|b| (b.len(), ())).is_err() {
                        break;
                    }
                    drained = true;
                }
                let shard = c.place.shard;
                if matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) {
                    self.remove_conn(id, CloseReason::Local);
                } else if drained {
                    self.mark(shard);
                }
                let _ = now;
                false
            }
        }
    }

    /// Egress of one shard, then its next wake-up.
    fn egress<D: PacketDevice>(&mut self, dev: &mut D, k: u32, now: Instant) {
        let t = self.t;
        let shard = &mut self.shards[k as usize];
        shard.dirty = false;
        let mut e = Egress {
            dev,
            now,
            link: &self.link,
            caps: &self.caps,
        };
        let mut more = true;
        for _ in 0..EGRESS_ROUNDS {
            let r = shard.iface.poll_egress(t, &mut e, &mut shard.sockets);
            // The rest of any large packet cut into segments goes out now,
            // before smoltcp's next packet (per connection, in order).
            let mut l = self.link.borrow_mut();
            if l.gso_pending() {
                l.send_gso(e.dev, now);
                if l.tx_exhausted {
                    break;
                }
            }
            if r == smoltcp::iface::PollResult::None {
                more = false;
                break;
            }
        }
        if more || self.link.borrow().tx_exhausted {
            // More to send than the rounds or the device took: next drive.
            if !shard.dirty {
                shard.dirty = true;
                self.dirty.push_back(k);
            }
            return;
        }
        // Every timer smoltcp can have started by this egress is at least
        // ACK_DELAY away (retransmissions: a second or more), so a wake-up
        // already due within ACK_DELAY covers it: smoltcp's poll_at, a walk
        // over the shard's sockets, runs about once per ACK_DELAY per busy
        // shard instead of after every send.
        if shard.wake.is_some_and(|w| w <= now + ACK_DELAY) {
            return;
        }
        match shard.iface.poll_at(t, &shard.sockets) {
            None => {}
            Some(at) if at <= t && !shard.dirty => {
                shard.dirty = true;
                self.dirty.push_back(k);
            }
            Some(at) if at <= t => {}
            Some(at) => {
                let at = to_std(self.epoch, at);
                if shard.wake.is_none_or(|w| at < w) {
                    shard.wake = Some(at);
                    self.timers.push(Reverse((at, k)));
                }
            }
        }
    }

    /// Sends packets held for next hops that just resolved, and the ARP
    /// requests the neighbour table wants.
    fn send_link<D: PacketDevice>(&mut self, dev: &mut D, now: Instant) {
        let mut l = self.link.borrow_mut();
        l.retry_held(now);
        if l.resolved.is_empty() && l.want_ask.is_empty() {
            return;
        }
        for ip in std::mem::take(&mut l.resolved) {
            let Some((packets, mac)) = l.take_held(ip) else {
                continue;
            };
            let mut packets = packets;
            while let Some(p) = packets.pop_front() {
                let Some(tx) = dev.transmit(now) else {
                    // No device buffer: the rest wait, in order, for the
                    // next drive (a large packet cut into segments is
                    // held as many).
                    packets.push_front(p);
                    l.put_back(ip, packets);
                    l.tx_exhausted = true;
                    break;
                };
                tx.consume(ETH + p.len(), |buf| {
                    l.write_eth(buf, mac, smoltcp::wire::EthernetProtocol::Ipv4);
                    buf[ETH..].copy_from_slice(&p);
                    l.tx_frames += 1;
                    l.capture(now, buf);
                });
            }
        }
        for ip in std::mem::take(&mut l.want_ask) {
            let Some(tx) = dev.transmit(now) else { break };
            tx.consume(Link::ARP_LEN, |buf| {
                l.write_arp_request(buf, ip);
                l.arp_requests += 1;
                l.tx_frames += 1;
                l.capture(now, buf);
            });
        }
    }

    /// Runs the stack: with `ingress`, a bounded number of received frames;
    /// always due timers, egress of dirty shards, then one device flush.
    fn drive<D: PacketDevice>(
        &mut self,
        dev: &mut D,
        now: Instant,
        ingress: bool,
    ) -> Result<(), TransportError> {
        self.t = self.ts(now);
        if ingress {
            for _ in 0..self.config.ingress_budget {
                let Some((rx, tx)) = dev.receive(now) else {
                    break;
                };
                rx.consume(|frame| self.on_frame(frame, tx, now));
            }
        }
        while let Some(&Reverse((at, k))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let s = &mut self.shards[k as usize];
            if s.wake == Some(at) {
                s.wake = None;
                s.sweep = true;
                self.mark(k);
            }
        }
        self.send_link(dev, now);
        // Dirty shards in order; once the device has no transmit buffer
        // left, the rest wait (still dirty, first in line) for the next
        // drive instead of each running smoltcp's egress for nothing.
        {
            // Segments still waiting from the last drive go first.
            let mut l = self.link.borrow_mut();
            l.tx_exhausted = false;
            if l.gso_pending() {
                l.send_gso(dev, now);
            }
        }
        let mut left = self.dirty.len();
        while left > 0 && !self.link.borrow().tx_exhausted {
            let Some(k) = self.dirty.pop_front() else {
                break;
            };
            left -= 1;
            self.egress(dev, k, now);
            if std::mem::take(&mut self.shards[k as usize].sweep) {
                let ids: Vec<ConnId> = self.shards[k as usize]
                    .members
                    .iter()
                    .filter_map(|m| match m.owner {
                        Owner::Conn(id) => Some(id),
                        _ => None,
                    })
                    .collect();
                for id in ids {
                    self.queue(id);
                }
            }
        }
        dev.flush().map_err(|e| TransportError::Backend {
            backend: "stack",
            what: "device flush failed",
            source: Box::new(e),
        })?;
        if let Some(p) = self.link.borrow_mut().pcap.as_mut() {
            let _ = p.flush();
        }
        Ok(())
    }

    /// Closing connections past their linger, half-open handshakes past
    /// their deadline.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.closing.peek() {
            if at > now {
                break;
            }
            self.closing.pop();
            let Some(c) = self.conns.get(id) else {
                continue;
            };
            if matches!(c.state, State::Closing(d) if d <= now) {
                let p = c.place;
                self.socket(p).abort();
                self.mark(p.shard);
                self.remove_conn(id, CloseReason::Local);
            }
        }
        for li in 0..self.listeners.len() {
            let n = self.expire_half_open(li, now, self.config.handshake_timeout, usize::MAX);
            self.handshake_timeouts += n as u64;
        }
    }

    /// Whether the next poll has something to report or send at once:
    /// events queued, shards to egress, or a connection in the ready list
    /// with input still unread (a connection stays listed after a Readable
    /// until a poll finds it drained, but only unread input is work).
    fn has_work(&self) -> bool {
        !self.pending.is_empty()
            || !self.dirty.is_empty()
            || self.link.borrow().gso_pending()
            || self.ready.iter().any(|&id| {
                self.conns.get(id).is_some_and(|c| {
                    c.state == State::Open
                        && !c.paused
                        && self.shards[c.place.shard as usize]
                            .sockets
                            .get::<tcp::Socket<'static>>(c.place.handle)
                            .can_recv()
                })
            })
    }

    /// The earliest time something is due (a shard timer, a linger, a
    /// handshake deadline).
    fn next_due(&self) -> Option<Instant> {
        let mut t = self.timers.peek().map(|r| r.0.0);
        let mut min = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some(r) = self.closing.peek() {
            min(r.0.0);
        }
        if let Some(at) = self.link.borrow().next_retry() {
            min(at);
        }
        for l in &self.listeners {
            if let Some(&(_, since)) = l.half_open.front() {
                min(since + self.config.handshake_timeout);
            }
        }
        t
    }

    fn pick_port(&mut self, remote: Ipv4Addr, remote_port: u16) -> Option<u16> {
        // The whole range above the well-known ports: tens of thousands of
        // connections from one address to one server port.
        for _ in 0..64_512 {
            let p = self.next_port;
            self.next_port = if self.next_port == u16::MAX {
                1024
            } else {
                self.next_port + 1
            };
            let key = FlowKey {
                remote,
                remote_port,
                local_port: p,
            };
            if !self.flows.contains(&key) && self.listener_of(p).is_none() {
                return Some(p);
            }
        }
        None
    }
}

impl<D: PacketDevice> StackTransport<D> {
    /// Builds a stack on `dev`. `now` becomes the stack's time origin.
    pub fn new(dev: D, config: StackConfig, now: Instant) -> Result<Self, StackError> {
        if config.shard_size == 0 {
            return Err(StackError::Setting("shard_size must be at least 1"));
        }
        if config.rx_buffer == 0 || config.tx_buffer == 0 {
            return Err(StackError::Setting("socket buffers must not be empty"));
        }
        let dcaps = dev.capabilities();
        let own_tcp_check = dcaps.rx_checksum_offload;
        let mac = config.mac.unwrap_or(dcaps.mac);
        let wire_mss = dcaps.max_frame.saturating_sub(link::ETH + 40);
        if wire_mss == 0 {
            return Err(StackError::Setting(
                "the device's frames hold no TCP payload",
            ));
        }
        let super_mss = config.super_segment(wire_mss);
        let gso = super_mss > wire_mss;
        let mut link = Link::new(
            mac,
            config.ip,
            config.prefix_len,
            config.gateway,
            &dcaps,
            gso,
        );
        if config.sack_blocks {
            link.sack = Some(sack::Sack::new(config.rx_buffer));
        }
        if let Some(p) = &config.pcap {
            link.pcap =
                Some(
                    pcap::PcapWriter::create(p, now).map_err(|source| StackError::Pcap {
                        path: p.display().to_string(),
                        source,
                    })?,
                );
        }
        let (waker, device_waker): (Arc<dyn Wake>, bool) = match dev.waker() {
            Some(w) => (w, true),
            None => (Arc::new(SliceWaker), false),
        };
        let seed = config.seed;
        let mut core = Core {
            shards: Vec::new(),
            flows: Flows::default(),
            conns: ConnTable::new(),
            listeners: Vec::new(),
            pending: Vec::new(),
            ready: Vec::new(),
            spare: Vec::new(),
            dirty: VecDeque::new(),
            room: Vec::new(),
            timers: BinaryHeap::new(),
            closing: BinaryHeap::new(),
            link: RefCell::new(link),
            caps: link::ip_caps(&dcaps, own_tcp_check, gso),
            epoch: now,
            now,
            t: ts(now, now),
            next_port: 1024 + (seed % 64_000) as u16,
            own_tcp_check,
            super_mss: gso.then(|| u16::try_from(super_mss).unwrap_or(u16::MAX)),
            syn_frame: Vec::new(),
            members: 0,
            backlog_full: 0,
            syn_dropped: 0,
            syn_evicted: 0,
            handshake_timeouts: 0,
            config,
        };
        // Shard 0: the control interface, never given a socket.
        core.new_shard()?;
        Ok(Self {
            dev,
            core,
            waker,
            device_waker,
        })
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// The device, mutably.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Counters.
    pub fn stats(&self) -> StackStats {
        let c = &self.core;
        let l = c.link.borrow();
        StackStats {
            rx_frames: l.rx_frames,
            tx_frames: l.tx_frames,
            rx_partial_csum: l.rx_partial_csum,
            rx_corrupt: l.rx_corrupt,
            backlog_full: c.backlog_full,
            syn_dropped: c.syn_dropped,
            syn_evicted: c.syn_evicted,
            handshake_timeouts: c.handshake_timeouts,
            arp_requests: l.arp_requests,
            arp_held_dropped: l.held_dropped,
            no_route: l.no_route,
            pcap_errors: l.pcap_errors,
            shards: c.shards.len() as u64,
            flows: c.flows.len() as u64,
            gso_packets: l.gso_packets,
            gso_segments: l.gso_segments,
            gso_dropped: l.gso_dropped,
            sack_added: l.sack.as_ref().map_or(0, |s| s.added),
            sack_dsack: l.sack.as_ref().map_or(0, |s| s.dsack),
        }
    }

    /// Open connections (connecting, open or closing).
    pub fn connection_count(&self) -> usize {
        self.core.conns.len()
    }

    /// Half-open handshakes, all listeners together.
    pub fn half_open_count(&self) -> usize {
        self.core.listeners.iter().map(|l| l.half).sum()
    }

    fn conn(&self, id: ConnId) -> Result<&Conn, TransportError> {
        self.core
            .conns
            .get(id)
            .filter(|c| !matches!(c.state, State::Closing(_)))
            .ok_or(TransportError::UnknownConn(id))
    }
}

impl<D: PacketDevice> StackTransport<D> {
    /// Hands at most `max` received bytes of `conn` to `put`, in order, in
    /// at most two parts (the receive ring may wrap): the one copy out of
    /// smoltcp for both `recv` and `recv_buf`. Returns how many.
    fn take(
        &mut self,
        conn: ConnId,
        max: usize,
        put: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, TransportError> {
        let p = self.conn(conn)?.place;
        let s = self.core.socket(p);
        // What is queued, so the loop ends without a call that finds nothing.
        let total = max.min(s.recv_queue());
        let mut n = 0;
        while n < total {
            let want = total - n;
            let took = s
                .recv(|data| {
                    let k = data.len().min(want);
                    put(&data[..k]);
                    (k, k)
                })
                .unwrap_or(0);
            if took == 0 {
                break;
            }
            n += took;
        }
        if n > 0 {
            // The window opened: smoltcp may owe the peer an update.
            self.core.mark(p.shard);
        }
        // Finished (peer FIN) or not open: nothing to read; check()
        // reports the close on the next poll.
        Ok(n)
    }
}

impl<D: PacketDevice> Transport for StackTransport<D> {
    fn capabilities(&self) -> Capabilities {
        let c = self.dev.capabilities();
        Capabilities {
            name: self.core.config.name,
            latency: LatencyClass::Bypass,
            kernel_bypass: true,
            busy_poll: !self.device_waker,
            vectored_send: false,
            max_segment: c.max_frame.saturating_sub(54),
        }
    }

    fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        let port = addr.port();
        let ours = self.core.config.ip;
        match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() || ip == ours => {}
            _ => {
                return Err(TransportError::Listen {
                    addr,
                    source: std::io::Error::new(
                        std::io::ErrorKind::AddrNotAvailable,
                        format!("the stack's address is {ours}"),
                    ),
                });
            }
        }
        if port == 0 || self.core.listener_of(port).is_some() {
            return Err(TransportError::Listen {
                addr,
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "port 0 or a port already listened on",
                ),
            });
        }
        self.core.listeners.push(Listener {
            port,
            armed: None,
            half_open: VecDeque::new(),
            half: 0,
        });
        self.core.arm(self.core.listeners.len() - 1);
        Ok(SocketAddr::V4(SocketAddrV4::new(ours, port)))
    }

    fn stop_listening(&mut self) {
        self.core.stop_listening();
    }

    fn connect(&mut self, addr: SocketAddr, now: Instant) -> Result<ConnId, TransportError> {
        let core = &mut self.core;
        core.now = core.now.max(now);
        let SocketAddr::V4(v4) = addr else {
            return Err(TransportError::Unsupported {
                backend: "stack",
                what: "IPv6",
            });
        };
        if core.members >= core.config.max_sockets || core.conns.is_full() {
            return Err(TransportError::TooManyConnections(core.conns.len()));
        }
        let Some(local) = core.pick_port(*v4.ip(), v4.port()) else {
            return Err(TransportError::Connect {
                addr,
                source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
            });
        };
        let k = core.room();
        let mut s = new_socket(&core.config);
        let remote = IpEndpoint::new(IpAddress::Ipv4(*v4.ip()), v4.port());
        s.connect(core.shards[k as usize].iface.context(), remote, local)
            .map_err(|e| TransportError::Connect {
                addr,
                source: std::io::Error::other(format!("{e}")),
            })?;
        let p = core.add(k, s);
        let key = FlowKey {
            remote: *v4.ip(),
            remote_port: v4.port(),
            local_port: local,
        };
        let id = match core.conns.insert(Conn {
            place: p,
            key,
            state: State::Connecting,
            peer: addr,
            write_blocked: false,
            paused: false,
            finished: false,
            queued: false,
        }) {
            Ok(id) => id,
            Err(_) => {
                core.members -= 1;
                core.shards[k as usize].sockets.remove(p.handle);
                return Err(TransportError::TooManyConnections(core.conns.len()));
            }
        };
        core.push_member(p, Owner::Conn(id));
        core.flows.insert(key, p);
        core.mark(k);
        Ok(id)
    }

    fn poll(&mut self, now: Instant, events: &mut Events) -> Result<(), TransportError> {
        let core = &mut self.core;
        core.now = core.now.max(now);
        events.clear();
        core.drive(&mut self.dev, now, true)?;
        core.expire(now);
        for ev in core.pending.drain(..) {
            events.push(ev);
        }
        // The ready list is swapped with a spare (no allocation per poll);
        // check() keeps a connection listed (level-triggered) or unlists it.
        let spare = std::mem::take(&mut core.spare);
        let mut ready = std::mem::replace(&mut core.ready, spare);
        for &id in &ready {
            if core.check(id, now, events) {
                core.ready.push(id);
            }
        }
        ready.clear();
        core.spare = ready;
        for ev in core.pending.drain(..) {
            events.push(ev);
        }
        Ok(())
    }

    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, TransportError> {
        warpwire_transport::recv_parts(buf, |max, put| self.take(conn, max, put))
    }

    fn recv_buf(
        &mut self,
        conn: ConnId,
        buf: &mut warpwire_transport::bytes::BytesMut,
        max: usize,
    ) -> Result<usize, TransportError> {
        warpwire_transport::recv_buf_parts(buf, max, |max, put| self.take(conn, max, put))
    }

    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, TransportError> {
        let p = self.conn(conn)?.place;
        let s = self.core.socket(p);
        let n = match s.send_slice(data) {
            Ok(n) => n,
            Err(_) if !s.may_send() => {
                return Err(TransportError::Io {
                    conn,
                    source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
                });
            }
            Err(_) => 0,
        };
        if n > 0 {
            self.core.mark(p.shard);
        }
        if n < data.len()
            && let Some(c) = self.core.conns.get_mut(conn)
        {
            c.write_blocked = true;
        }
        Ok(n)
    }

    fn flush(&mut self, now: Instant) -> Result<(), TransportError> {
        self.core.now = self.core.now.max(now);
        self.core.drive(&mut self.dev, now, false)
    }

    fn pause_recv(&mut self, conn: ConnId, paused: bool) {
        if let Some(c) = self.core.conns.get_mut(conn) {
            c.paused = paused;
            if !paused {
                self.core.queue(conn);
            }
        }
    }

    fn close(&mut self, conn: ConnId) {
        let core = &mut self.core;
        let deadline = core.now + core.config.close_linger;
        let Some(c) = core.conns.get_mut(conn) else {
            return;
        };
        if matches!(c.state, State::Closing(_)) {
            return;
        }
        c.state = State::Closing(deadline);
        let p = c.place;
        core.socket(p).close();
        core.closing.push(Reverse((deadline, conn)));
        core.mark(p.shard);
        core.queue(conn);
    }

    fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.core.conns.get(conn).map(|c| c.peer)
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        let core = &self.core;
        if core.has_work() {
            return Ok(());
        }
        let now = core.now;
        let mut t = timeout;
        if let Some(at) = core.next_due() {
            let d = at.saturating_duration_since(now);
            t = Some(t.map_or(d, |t| t.min(d)));
        }
        if !self.device_waker {
            t = Some(t.map_or(WAIT_SLICE, |t| t.min(WAIT_SLICE)));
        }
        self.dev.wait(t).map_err(|e| TransportError::Backend {
            backend: "stack",
            what: "device wait failed",
            source: Box::new(e),
        })
    }

    fn counters(&self, report: &mut dyn FnMut(&'static str, u64)) {
        let s = self.stats();
        report("stack_rx_frames_total", s.rx_frames);
        report("stack_tx_frames_total", s.tx_frames);
        report("stack_rx_corrupt_total", s.rx_corrupt);
        report("stack_syn_dropped_total", s.syn_dropped);
        report("stack_syn_evicted_total", s.syn_evicted);
        report("stack_handshake_timeouts_total", s.handshake_timeouts);
        report("stack_arp_requests_total", s.arp_requests);
        report("stack_arp_held_dropped_total", s.arp_held_dropped);
        report("stack_no_route_total", s.no_route);
        report("stack_gso_packets_total", s.gso_packets);
        report("stack_gso_segments_total", s.gso_segments);
        report("stack_gso_dropped_total", s.gso_dropped);
        report("stack_sack_added_total", s.sack_added);
        report("stack_dsack_total", s.sack_dsack);
    }

    fn waker(&self) -> Result<Arc<dyn Wake>, TransportError> {
        Ok(self.waker.clone())
    }

    fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let core = &self.core;
        if core.has_work() {
            return Some(now);
        }
        core.next_due()
    }
}
