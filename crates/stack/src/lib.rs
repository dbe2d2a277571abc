//! # warpwire-stack: smoltcp TCP over any PacketDevice, as a Transport
//!
//! The packet backends (AF_XDP, DPDK, the simulator) move Ethernet frames;
//! this crate turns any of them into the connection-level [`Transport`] the
//! engine and client use, with smoltcp as the TCP/IP stack. A server on it
//! speaks real TCP, so ordinary kernel clients can talk to it.
//!
//! ```text
//!   Transport::poll(now)
//!     ├─ ingress: up to `ingress_budget` frames, one at a time
//!     │    PacketDevice::receive ─► checksum policy ─► pcap ─► smoltcp
//!     ├─ egress + timers (retransmit, ACK, ARP)  ─► TxToken ─► pcap
//!     ├─ PacketDevice::flush (one TX burst / kick)
//!     └─ events: listeners that completed a handshake (Accepted, re-armed),
//!        connects that completed, readable / writable / closed sockets
//! ```
//!
//! - **Backlog.** smoltcp sockets accept one connection each; after every
//!   received frame the stack re-arms a listening socket on each listened
//!   port, up to `backlog` handshakes in progress (the SYN queue). A SYN
//!   beyond that is dropped, not refused, so the client retries it, as with
//!   Linux.
//! - **Checksums.** When the device says its receive checksums may be
//!   partial (veth), TCP checksums are verified here, accepting a partial
//!   value only when it matches the pseudo-header: offloaded senders work,
//!   corrupt segments are dropped (see [`checksum`]). Transmitted frames
//!   always carry full checksums unless the device offloads them.
//! - **Backpressure.** A full socket send buffer is a short `send`; no free
//!   device buffer is a deferred transmit; nothing panics.
//! - **Lookup cost.** smoltcp finds a segment's socket by scanning its
//!   socket set, and event generation scans the connections: both are
//!   linear in the number of connections. docs/benchmarks.md measures what
//!   that costs at 10, 100 and 1,000 connections.
//!
//! Not here: framing, sessions (engine), drivers (xdp, dpdk crates).

#![forbid(unsafe_code)]

mod adapter;
pub mod checksum;
pub mod pcap;
pub mod sim;

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use warpwire_transport::{
    Capabilities, CloseReason, ConnId, ConnTable, Event, Events, LatencyClass, PacketDevice,
    Transport, TransportError, Wake,
};

use adapter::{Adapter, Taps};

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
    /// Handshakes in progress per listened port (the SYN queue); a SYN
    /// beyond it is dropped so the client retries it, as Linux does. One
    /// socket is kept listening below that, re-armed after every frame.
    pub backlog: usize,
    /// Connections (established, connecting, listening, closing) at most.
    pub max_sockets: usize,
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
}

impl StackConfig {
    /// Defaults for an address and prefix.
    pub fn new(ip: Ipv4Addr, prefix_len: u8) -> Self {
        Self {
            ip,
            prefix_len,
            gateway: None,
            mac: None,
            // Receive: 256 KiB (window scaling negotiated). Measured on veth,
            // 50 MB from a kernel client into the AF_XDP server took 33 s
            // with 64 KiB and about 5 s with 256 KiB. Send: 64 KiB, which a
            // request/response server rarely fills.
            rx_buffer: 256 * 1024,
            tx_buffer: 64 * 1024,
            // Handshakes in flight per port. Every armed listening socket
            // owns its buffers from the start: a full queue costs 80 MiB,
            // and a burst beyond it is retried by the clients, not refused.
            backlog: 256,
            max_sockets: 4096,
            // Larger than one NIC burst (64) several times over, small enough
            // that one poll stays in the tens of microseconds.
            ingress_budget: 256,
            close_linger: Duration::from_secs(2),
            seed: rand::random(),
            pcap: None,
            name: "stack",
        }
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
    /// Times a listener could not re-arm: SYN queue or socket limit full.
    pub backlog_full: u64,
    /// SYNs dropped because their listener's SYN queue was full (the
    /// client retransmits them).
    pub syn_dropped: u64,
    /// Failed pcap writes.
    pub pcap_errors: u64,
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
    handle: SocketHandle,
    state: State,
    peer: SocketAddr,
    write_blocked: bool,
    paused: bool,
    /// The peer's FIN was reported (PeerFinished); the connection stays
    /// open for sending until the consumer closes it.
    finished: bool,
}

#[derive(Debug)]
struct Listener {
    port: u16,
    armed: Vec<SocketHandle>,
}

/// smoltcp over a [`PacketDevice`], as a [`Transport`].
pub struct StackTransport<D: PacketDevice> {
    dev: D,
    iface: Interface,
    sockets: SocketSet<'static>,
    conns: ConnTable<Conn>,
    listeners: Vec<Listener>,
    pending: Vec<Event>,
    taps: RefCell<Taps>,
    epoch: Instant,
    /// The latest time a caller passed in (poll, flush, connect): the
    /// stack's "now" where the trait passes none (close, wait), so it
    /// reads no clock of its own.
    now: Instant,
    next_port: u16,
    own_tcp_check: bool,
    backlog_full: u64,
    waker: Arc<dyn Wake>,
    device_waker: bool,
    config: StackConfig,
}

impl<D: PacketDevice> std::fmt::Debug for StackTransport<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackTransport")
            .field("ip", &self.config.ip)
            .field("conns", &self.conns.len())
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

fn new_socket(cfg: &StackConfig) -> tcp::Socket<'static> {
    let rx = tcp::SocketBuffer::new(vec![0u8; cfg.rx_buffer]);
    let tx = tcp::SocketBuffer::new(vec![0u8; cfg.tx_buffer]);
    let mut s = tcp::Socket::new(rx, tx);
    s.set_nagle_enabled(false);
    // Requests and replies piggyback ACKs; a short delay still coalesces
    // pure ACKs under streaming without costing request latency.
    s.set_ack_delay(Some(smoltcp::time::Duration::from_millis(1)));
    s
}

/// Keeps one socket listening on every listened port, as long as fewer than
/// `backlog` handshakes are in progress there (the SYN queue) and the
/// socket limit allows. Called after every ingress frame, so a burst of SYNs
/// meets a fresh listening socket each time instead of a RST.
fn rearm(
    sockets: &mut SocketSet<'static>,
    listeners: &mut [Listener],
    cfg: &StackConfig,
    backlog_full: &mut u64,
    taps: &RefCell<Taps>,
) {
    let mut gated = Vec::new();
    for l in listeners.iter_mut() {
        // Fast path, taken for almost every frame: the newest armed socket
        // (sockets are only ever appended, and removed in order) still listens.
        if l.armed
            .last()
            .is_some_and(|&h| sockets.get::<tcp::Socket<'_>>(h).state() == tcp::State::Listen)
        {
            continue;
        }
        let (mut listening, mut half_open) = (0, 0);
        for &h in &l.armed {
            match sockets.get::<tcp::Socket<'_>>(h).state() {
                tcp::State::Listen => listening += 1,
                tcp::State::SynReceived => half_open += 1,
                _ => {}
            }
        }
        if listening > 0 {
            continue;
        }
        if half_open >= cfg.backlog || sockets.iter().count() >= cfg.max_sockets {
            *backlog_full += 1;
            gated.push(l.port);
            continue;
        }
        let mut s = new_socket(cfg);
        if s.listen(l.port).is_ok() {
            l.armed.push(sockets.add(s));
        } else {
            gated.push(l.port);
        }
    }
    taps.borrow_mut().syn_gated = gated;
}

fn ts(epoch: Instant, now: Instant) -> smoltcp::time::Instant {
    let us = now.saturating_duration_since(epoch).as_micros();
    smoltcp::time::Instant::from_micros(i64::try_from(us).unwrap_or(i64::MAX))
}

fn to_std(ep: IpEndpoint) -> SocketAddr {
    match ep.addr {
        IpAddress::Ipv4(a) => SocketAddr::V4(SocketAddrV4::new(a, ep.port)),
    }
}

impl<D: PacketDevice> StackTransport<D> {
    /// Builds a stack on `dev`. `now` becomes the stack's time origin.
    pub fn new(mut dev: D, config: StackConfig, now: Instant) -> Result<Self, StackError> {
        let caps = dev.capabilities();
        let own_tcp_check = caps.rx_checksum_offload;
        let mac = config.mac.unwrap_or(caps.mac);
        let taps = RefCell::new(Taps::default());
        if let Some(p) = &config.pcap {
            let w = pcap::PcapWriter::create(p, now).map_err(|source| StackError::Pcap {
                path: p.display().to_string(),
                source,
            })?;
            taps.borrow_mut().pcap = Some(w);
        }
        let mut icfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        icfg.random_seed = config.seed;
        let iface = {
            let mut a = Adapter {
                dev: &mut dev,
                now,
                own_tcp_check,
                taps: &taps,
            };
            let mut iface = Interface::new(icfg, &mut a, ts(now, now));
            iface.update_ip_addrs(|addrs| {
                // One address: the capacity (IFACE_MAX_ADDR_COUNT) is larger.
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(config.ip), config.prefix_len));
            });
            if let Some(gw) = config.gateway {
                iface
                    .routes_mut()
                    .add_default_ipv4_route(gw)
                    .map_err(|_| StackError::Gateway(gw))?;
            }
            iface
        };
        let (waker, device_waker): (Arc<dyn Wake>, bool) = match dev.waker() {
            Some(w) => (w, true),
            None => (Arc::new(SliceWaker), false),
        };
        let seed = config.seed;
        Ok(Self {
            dev,
            iface,
            sockets: SocketSet::new(Vec::new()),
            conns: ConnTable::new(),
            listeners: Vec::new(),
            pending: Vec::new(),
            taps,
            epoch: now,
            now,
            next_port: 49_152 + (seed % 16_000) as u16,
            own_tcp_check,
            backlog_full: 0,
            waker,
            device_waker,
            config,
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
        let t = self.taps.borrow();
        StackStats {
            rx_frames: t.rx_frames,
            tx_frames: t.tx_frames,
            rx_partial_csum: t.rx_partial_csum,
            rx_corrupt: t.rx_corrupt,
            backlog_full: self.backlog_full,
            syn_dropped: t.syn_dropped,
            pcap_errors: t.pcap_errors,
        }
    }

    /// Open connections (connecting, open or closing).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    fn new_socket(&self) -> tcp::Socket<'static> {
        new_socket(&self.config)
    }

    fn sockets_in_use(&self) -> usize {
        self.sockets.iter().count()
    }

    /// Takes a socket in as a connection. `None` only when the table is
    /// full (2^32 connections, far beyond `max_sockets`); the caller then
    /// drops the socket.
    fn insert(&mut self, handle: SocketHandle, state: State, peer: SocketAddr) -> Option<ConnId> {
        self.conns
            .insert(Conn {
                handle,
                state,
                peer,
                write_blocked: false,
                finished: false,
                paused: false,
            })
            .ok()
    }

    /// Drops a connection and its socket, and queues its Closed event.
    fn remove(&mut self, index: usize, reason: CloseReason) {
        let Some((id, c)) = self.conns.remove_at(index) else {
            return;
        };
        self.sockets.remove(c.handle);
        self.pending.push(Event::Closed(id, reason));
    }

    fn conn(&self, id: ConnId) -> Result<&Conn, TransportError> {
        self.conns
            .get(id)
            .filter(|c| !matches!(c.state, State::Closing(_)))
            .ok_or(TransportError::UnknownConn(id))
    }

    /// Runs smoltcp: with `ingress`, timers and a bounded number of received
    /// frames; always egress, then one device flush.
    fn drive(&mut self, now: Instant, ingress: bool) -> Result<(), TransportError> {
        let t = ts(self.epoch, now);
        let mut a = Adapter {
            dev: &mut self.dev,
            now,
            own_tcp_check: self.own_tcp_check,
            taps: &self.taps,
        };
        if ingress {
            self.iface.poll_maintenance(t);
        }
        let budget = if ingress {
            self.config.ingress_budget
        } else {
            0
        };
        for _ in 0..budget {
            if self.iface.poll_ingress_single(t, &mut a, &mut self.sockets)
                == smoltcp::iface::PollIngressSingleResult::None
            {
                break;
            }
            if !self.listeners.is_empty() {
                rearm(
                    &mut self.sockets,
                    &mut self.listeners,
                    &self.config,
                    &mut self.backlog_full,
                    &self.taps,
                );
            }
        }
        // poll_egress does a bounded amount of work per call; a few rounds
        // drain what the ingress just made sendable.
        for _ in 0..4 {
            if self.iface.poll_egress(t, &mut a, &mut self.sockets)
                == smoltcp::iface::PollResult::None
            {
                break;
            }
        }
        self.dev.flush().map_err(|e| TransportError::Backend {
            backend: "stack",
            what: "device flush failed",
            source: Box::new(e),
        })?;
        if let Some(p) = self.taps.borrow_mut().pcap.as_mut() {
            let _ = p.flush();
        }
        Ok(())
    }

    fn scan_listeners(&mut self, events: &mut Events) {
        for li in 0..self.listeners.len() {
            let mut k = 0;
            while k < self.listeners[li].armed.len() {
                let h = self.listeners[li].armed[k];
                let s = self.sockets.get::<tcp::Socket<'_>>(h);
                match s.state() {
                    tcp::State::Listen | tcp::State::SynReceived => k += 1,
                    tcp::State::Closed => {
                        // A handshake that failed (RST): listen again.
                        let port = self.listeners[li].port;
                        let s = self.sockets.get_mut::<tcp::Socket<'_>>(h);
                        let _ = s.listen(port);
                        k += 1;
                    }
                    _ => {
                        let peer = s.remote_endpoint().map(to_std);
                        // Ordered removal keeps the listening socket last (rearm's fast path).
                        self.listeners[li].armed.remove(k);
                        let peer = peer.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                        let Some(conn) = self.insert(h, State::Open, peer) else {
                            self.sockets.remove(h);
                            continue;
                        };
                        let listener = SocketAddr::V4(SocketAddrV4::new(
                            self.config.ip,
                            self.listeners[li].port,
                        ));
                        events.push(Event::Accepted {
                            conn,
                            peer,
                            listener,
                        });
                    }
                }
            }
        }
        rearm(
            &mut self.sockets,
            &mut self.listeners,
            &self.config,
            &mut self.backlog_full,
            &self.taps,
        );
    }

    fn scan_conns(&mut self, now: Instant, events: &mut Events) {
        let mut gone = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            let i = id.index();
            let s = self.sockets.get_mut::<tcp::Socket<'_>>(c.handle);
            match c.state {
                State::Connecting => match s.state() {
                    tcp::State::Established => {
                        c.state = State::Open;
                        events.push(Event::Connected(id));
                    }
                    tcp::State::Closed => gone.push((i, CloseReason::ConnectFailed(None))),
                    _ => {}
                },
                State::Open => {
                    if s.can_recv() && !c.paused {
                        events.push(Event::Readable(id));
                    } else if !s.may_recv() && s.recv_queue() == 0 {
                        // Peer's FIN and every byte read: like EOF. The
                        // connection stays writable (CLOSE-WAIT) for the
                        // replies; the consumer's close() sends our FIN.
                        if s.state() == tcp::State::Closed {
                            gone.push((i, CloseReason::Reset(None)));
                            continue;
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
                }
                State::Closing(deadline) => {
                    // Discard input so the peer's data cannot stall the FIN.
                    while s.can_recv() {
                        if s.recv(|b| (b.len(), ())).is_err() {
                            break;
                        }
                    }
                    let done = matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait);
                    if done || now >= deadline {
                        if !done {
                            s.abort();
                        }
                        gone.push((i, CloseReason::Local));
                    }
                }
            }
        }
        for (i, reason) in gone {
            self.remove(i, reason);
        }
    }

    fn pick_port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if self.next_port >= 65_000 {
            49_152
        } else {
            self.next_port + 1
        };
        p
    }
}

impl<D: PacketDevice> Transport for StackTransport<D> {
    fn capabilities(&self) -> Capabilities {
        let c = self.dev.capabilities();
        Capabilities {
            name: self.config.name,
            latency: LatencyClass::Bypass,
            kernel_bypass: true,
            busy_poll: !self.device_waker,
            vectored_send: false,
            max_segment: c.max_frame.saturating_sub(54),
        }
    }

    fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        let port = addr.port();
        match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() || ip == self.config.ip => {}
            _ => {
                return Err(TransportError::Listen {
                    addr,
                    source: std::io::Error::new(
                        std::io::ErrorKind::AddrNotAvailable,
                        format!("the stack's address is {}", self.config.ip),
                    ),
                });
            }
        }
        if port == 0 || self.listeners.iter().any(|l| l.port == port) {
            return Err(TransportError::Listen {
                addr,
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "port 0 or a port already listened on",
                ),
            });
        }
        self.listeners.push(Listener {
            port,
            armed: Vec::new(),
        });
        rearm(
            &mut self.sockets,
            &mut self.listeners,
            &self.config,
            &mut self.backlog_full,
            &self.taps,
        );
        Ok(SocketAddr::V4(SocketAddrV4::new(self.config.ip, port)))
    }

    fn connect(&mut self, addr: SocketAddr, now: Instant) -> Result<ConnId, TransportError> {
        self.now = self.now.max(now);
        let SocketAddr::V4(v4) = addr else {
            return Err(TransportError::Unsupported {
                backend: "stack",
                what: "IPv6",
            });
        };
        if self.sockets_in_use() >= self.config.max_sockets {
            return Err(TransportError::TooManyConnections(self.conns.len()));
        }
        let mut s = self.new_socket();
        let local = self.pick_port();
        let remote = IpEndpoint::new(IpAddress::Ipv4(*v4.ip()), v4.port());
        s.connect(self.iface.context(), remote, local)
            .map_err(|e| TransportError::Connect {
                addr,
                source: std::io::Error::other(format!("{e}")),
            })?;
        let h = self.sockets.add(s);
        match self.insert(h, State::Connecting, addr) {
            Some(conn) => Ok(conn),
            None => {
                self.sockets.remove(h);
                Err(TransportError::TooManyConnections(self.conns.len()))
            }
        }
    }

    fn poll(&mut self, now: Instant, events: &mut Events) -> Result<(), TransportError> {
        self.now = self.now.max(now);
        events.clear();
        self.drive(now, true)?;
        for ev in self.pending.drain(..) {
            events.push(ev);
        }
        self.scan_listeners(events);
        self.scan_conns(now, events);
        for ev in self.pending.drain(..) {
            events.push(ev);
        }
        Ok(())
    }

    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, TransportError> {
        let h = self.conn(conn)?.handle;
        let s = self.sockets.get_mut::<tcp::Socket<'_>>(h);
        match s.recv_slice(buf) {
            Ok(n) => Ok(n),
            // Finished (peer FIN) or not open: nothing to read; scan_conns
            // reports the close on the next poll.
            Err(_) => Ok(0),
        }
    }

    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, TransportError> {
        let h = self.conn(conn)?.handle;
        let s = self.sockets.get_mut::<tcp::Socket<'_>>(h);
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
        if n < data.len()
            && let Some(c) = self.conns.get_mut(conn)
        {
            c.write_blocked = true;
        }
        Ok(n)
    }

    fn flush(&mut self, now: Instant) -> Result<(), TransportError> {
        self.now = self.now.max(now);
        self.drive(now, false)
    }

    fn pause_recv(&mut self, conn: ConnId, paused: bool) {
        if let Some(c) = self.conns.get_mut(conn) {
            c.paused = paused;
        }
    }

    fn close(&mut self, conn: ConnId) {
        let linger = self.config.close_linger;
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if matches!(c.state, State::Closing(_)) {
            return;
        }
        c.state = State::Closing(self.now + linger);
        self.sockets.get_mut::<tcp::Socket<'_>>(c.handle).close();
    }

    fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.conns.get(conn).map(|c| c.peer)
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        let now = self.now;
        let readable = self.conns.iter().any(|(_, c)| {
            c.state == State::Open
                && !c.paused
                && self.sockets.get::<tcp::Socket<'_>>(c.handle).can_recv()
        });
        if readable || !self.pending.is_empty() {
            return Ok(());
        }
        let mut t = timeout;
        if let Some(d) = self.iface.poll_delay(ts(self.epoch, now), &self.sockets) {
            let d = Duration::from_micros(d.total_micros());
            t = Some(t.map_or(d, |t| t.min(d)));
        }
        let err = |e| TransportError::Backend {
            backend: "stack",
            what: "device wait failed",
            source: Box::new(e),
        };
        if !self.device_waker {
            t = Some(t.map_or(WAIT_SLICE, |t| t.min(WAIT_SLICE)));
        }
        self.dev.wait(t).map_err(err)
    }

    fn waker(&self) -> Result<Arc<dyn Wake>, TransportError> {
        Ok(self.waker.clone())
    }

    fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let d = self.iface.poll_delay(ts(self.epoch, now), &self.sockets)?;
        Some(now + Duration::from_micros(d.total_micros()))
    }
}
