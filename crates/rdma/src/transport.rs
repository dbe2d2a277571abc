//! [`RdmaTransport`]: RC queue pairs set up through rdma_cm, carrying the
//! byte stream of [`crate::chan`] in SENDs with immediate data.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdma_sys as sys;
use warpwire_transport::{
    Capabilities, CloseReason, ConnId, ConnTable, Event, Events, LatencyClass, Transport,
    TransportError, Wake,
};

use crate::RdmaConfig;
use crate::chan::{Chan, ChanConfig, MAX_DEPTH, MIN_DEPTH, Post};
use crate::sys::{CmEvent, Device, EventChannel, RawAddr, Region, RegionSlots, check, event_name};

const BACKEND: &str = "rdma";
/// Completions taken per ibv_poll_cq call.
const WC_BATCH: usize = 32;
/// ibv_poll_cq calls per CQ per poll at most (bounds one poll's work).
const WC_ROUNDS: usize = 64;
/// Magic and version at the start of the connection private data.
const MAGIC: &[u8; 4] = b"WWR1";
/// Slot value in a work-request id meaning "no slot" (zero-length SEND).
const NO_SLOT: u64 = 0xffff;

/// What each side announces in the rdma_cm private data: the receives it
/// keeps posted and the size of each receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    pub depth: u16,
    pub buf_size: u32,
}

impl Params {
    pub(crate) fn encode(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(MAGIC);
        b[4..6].copy_from_slice(&self.depth.to_be_bytes());
        b[8..12].copy_from_slice(&self.buf_size.to_be_bytes());
        b
    }

    /// Parses a peer's announcement. Transports may pad private data with
    /// zeros (InfiniBand CM does), so trailing bytes are ignored.
    pub(crate) fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() < 12 || &b[..4] != MAGIC {
            return Err("not a warpwire RDMA peer (bad private data)");
        }
        let depth = u16::from_be_bytes([b[4], b[5]]);
        let buf_size = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        if !(MIN_DEPTH..=MAX_DEPTH).contains(&depth) {
            return Err("peer receive depth out of range");
        }
        if !(64..=16 << 20).contains(&buf_size) {
            return Err("peer buffer size out of range");
        }
        Ok(Self { depth, buf_size })
    }
}

/// Work-request ids: which connection (slot and generation), receive or
/// send, and which buffer slot. Completions of a connection that is gone
/// fail the generation check and are dropped.
fn wr_id(conn: ConnId, recv: bool, slot: Option<u16>) -> u64 {
    (conn.index() as u64) << 40
        | (u64::from(conn.generation()) & 0x7f_ffff) << 17
        | u64::from(recv) << 16
        | slot.map_or(NO_SLOT, u64::from)
}

fn split_wr_id(id: u64) -> (usize, u32, bool, Option<u16>) {
    let slot = id & 0xffff;
    (
        (id >> 40) as usize,
        ((id >> 17) & 0x7f_ffff) as u32,
        id & (1 << 16) != 0,
        (slot != NO_SLOT).then_some(slot as u16),
    )
}

/// The listeners all worker instances of one server share: rdma_cm has no
/// SO_REUSEPORT, so one cm id listens per address and whichever worker
/// takes a connect request first adopts the new connection (migrating its
/// id to its own event channel).
#[derive(Default)]
pub struct RdmaShared {
    listeners: Mutex<Vec<Listener>>,
    /// Instances listening (changed only under the `listeners` lock): the
    /// last to stop closes the listeners.
    instances: AtomicUsize,
}

impl RdmaShared {
    /// State shared by the instances of one server.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

struct Listener {
    id: *mut sys::rdma_cm_id,
    addr: SocketAddr,
    // Dropped after the id (declared last).
    channel: EventChannel,
}

// SAFETY: the listener's id and channel are only used under the Mutex.
unsafe impl Send for Listener {}

impl Drop for Listener {
    fn drop(&mut self) {
        // SAFETY: the id is live and its events were all acked (EventChannel::next
        // acks before returning).
        unsafe { sys::rdma_destroy_id(self.id) };
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outgoing: waiting for ADDR_RESOLVED.
    Resolving,
    /// Outgoing: waiting for ROUTE_RESOLVED.
    Routing,
    /// Outgoing: rdma_connect sent, waiting for ESTABLISHED.
    Connecting,
    /// Incoming: rdma_accept sent, waiting for ESTABLISHED.
    Accepting,
    /// Established.
    Open,
    /// Local close: FIN queued, waiting for it to complete.
    Closing,
}

struct Conn {
    cm: *mut sys::rdma_cm_id,
    qp: bool,
    state: State,
    outbound: bool,
    peer: SocketAddr,
    /// The listener that accepted it (`None`: outbound).
    listener: Option<SocketAddr>,
    dev: usize,
    chan: Option<Chan>,
    /// Receive completions that arrived before ESTABLISHED was processed.
    early: Vec<(u16, u32, u32)>,
    paused: bool,
    /// The peer's FIN was reported (PeerFinished).
    finished: bool,
    dirty: bool,
    /// A send came back 0 while connecting: report Writable when open.
    blocked: bool,
    /// The peer disconnected (cm event or flushed work requests): the
    /// transport's CQ-drain count when it was seen. It is acted on only
    /// after a later drain, so a FIN that completed just before the
    /// disconnect is counted first.
    disconnected: Option<u64>,
    /// The connection failed; it is reported Closed with this reason.
    failed: Option<CloseReason>,
    linger: Option<Instant>,
    /// CQ entries this connection can occupy.
    cq_share: u32,
    // Dropped after the cm id and QP are destroyed (Drop below).
    region: Option<Region>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: the id is live (only dropped here); destroying the QP
        // first stops all DMA into the region, which drops after this.
        unsafe {
            if self.qp {
                sys::rdma_destroy_qp(self.cm);
            }
            sys::rdma_destroy_id(self.cm);
        }
    }
}

/// The cross-thread waker: an eventfd in the wait set.
struct EventFd(RawFd);

impl Wake for EventFd {
    fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd; a full
        // counter (EAGAIN) already means "wake".
        unsafe { libc::write(self.0, one.as_ptr().cast(), 8) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

/// One worker's RDMA transport: its own cm event channel, per-device PD
/// and CQ, and connections, optionally sharing a listener.
pub struct RdmaTransport {
    config: RdmaConfig,
    // Connections drop before the devices (their QPs use the CQ and PD)
    // and the channel (their ids live on it). At most `max_conns` (16M at
    // most), so a slot index fits the 24 bits of a work-request id.
    conns: ConnTable<Conn>,
    devices: Vec<Device>,
    channel: EventChannel,
    shared: Arc<RdmaShared>,
    listening: bool,
    /// The latest time passed in (`poll`, `connect`): close and setup
    /// deadlines count from it; the transport reads no clock of its own.
    now: Instant,
    /// Polls that emptied every CQ (orders disconnects after completions).
    drains: u64,
    pending: Vec<Event>,
    dirty: Vec<usize>,
    posts: Vec<Post>,
    recv_wrs: Vec<sys::ibv_recv_wr>,
    send_wrs: Vec<sys::ibv_send_wr>,
    sges: Vec<sys::ibv_sge>,
    wcs: Vec<sys::ibv_wc>,
    waker: Arc<EventFd>,
}

impl RdmaTransport {
    /// A transport with its own listener state.
    pub fn new(config: RdmaConfig) -> Result<Self, TransportError> {
        Self::with_shared(config, RdmaShared::new())
    }

    /// A transport sharing `shared`'s listener with the other instances
    /// given the same `shared` (one per worker of a server).
    pub fn with_shared(
        config: RdmaConfig,
        shared: Arc<RdmaShared>,
    ) -> Result<Self, TransportError> {
        let err = |what, e: io::Error| TransportError::Backend {
            backend: BACKEND,
            what,
            source: Box::new(e),
        };
        config
            .validate()
            .map_err(|e| err("invalid configuration", e))?;
        let channel = EventChannel::new().map_err(|e| err("rdma_create_event_channel", e))?;
        // SAFETY: plain eventfd creation.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(err("eventfd", io::Error::last_os_error()));
        }
        let batch = usize::from(config.recv_depth.max(config.send_slots)) + 4;
        Ok(Self {
            conns: ConnTable::with_limit(config.max_conns),
            devices: Vec::new(),
            channel,
            shared,
            listening: false,
            // Until the first poll or connect passes a time in.
            now: Instant::now(),
            drains: 0,
            pending: Vec::new(),
            dirty: Vec::new(),
            posts: Vec::with_capacity(batch),
            recv_wrs: Vec::with_capacity(batch),
            send_wrs: Vec::with_capacity(batch),
            sges: Vec::with_capacity(batch),
            // SAFETY: ibv_wc is plain data; zero is a valid (unused) value.
            wcs: (0..WC_BATCH)
                .map(|_| unsafe { std::mem::zeroed() })
                .collect(),
            waker: Arc::new(EventFd(efd)),
            config,
        })
    }

    fn chan_config(&self, peer: Params) -> ChanConfig {
        ChanConfig {
            recv_depth: self.config.recv_depth,
            send_slots: self.config.send_slots,
            recv_size: self.config.buf_size,
            send_size: self.config.buf_size,
            sq_depth: self.config.sq_depth(),
            peer_depth: peer.depth,
            peer_recv_size: peer.buf_size,
        }
    }

    fn local_params(&self) -> Params {
        Params {
            depth: self.config.recv_depth,
            buf_size: self.config.buf_size,
        }
    }

    /// Takes a cm id in as a connection. `None` if the table is full
    /// (`max_conns`, which callers check first): the id is destroyed.
    fn insert(
        &mut self,
        cm: *mut sys::rdma_cm_id,
        state: State,
        peer: SocketAddr,
    ) -> Option<ConnId> {
        let conn = Conn {
            cm,
            qp: false,
            state,
            outbound: matches!(state, State::Resolving),
            peer,
            listener: None,
            dev: usize::MAX,
            chan: None,
            early: Vec::new(),
            paused: false,
            finished: false,
            dirty: false,
            blocked: false,
            disconnected: None,
            failed: None,
            // Connection setup must finish within this (rdma_cm retries
            // its own steps, but a peer can vanish between them).
            linger: Some(self.now + self.config.resolve_timeout * 4),
            cq_share: 0,
            region: None,
        };
        // On a full table `conn` drops here, destroying the cm id.
        let entry = self.conns.vacant_entry()?;
        if !cm.is_null() {
            // SAFETY: `context` is the user's field of a live id.
            unsafe { (*cm).context = context_of(entry.id()) };
        }
        Some(entry.insert(conn))
    }

    /// Drops a connection (destroying its QP and id) and, if `report`,
    /// queues its Closed event.
    fn remove(&mut self, index: usize, reason: CloseReason, report: bool) {
        let Some((id, c)) = self.conns.remove_at(index) else {
            return;
        };
        if c.qp && c.disconnected.is_none() && matches!(c.state, State::Open | State::Closing) {
            // Tell the peer now (DREQ) rather than by its retries timing out.
            // SAFETY: the id is live until `c` drops below.
            unsafe { sys::rdma_disconnect(c.cm) };
        }
        if c.dev != usize::MAX {
            self.devices[c.dev].cq_used -= c.cq_share;
        }
        if report {
            self.pending.push(Event::Closed(id, reason));
        }
        drop(c);
    }

    fn conn_index(&self, conn: ConnId) -> Option<usize> {
        self.conns.contains(conn).then_some(conn.index())
    }

    fn mark_dirty(&mut self, index: usize) {
        if let Some((_, c)) = self.conns.at_mut(index)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(index);
        }
    }

    fn fail(&mut self, index: usize, reason: CloseReason) {
        if let Some((_, c)) = self.conns.at_mut(index) {
            c.failed.get_or_insert(reason);
        }
    }

    /// The device index for a verbs context, setting it up on first use.
    fn device_for(&mut self, ctx: *mut sys::ibv_context) -> io::Result<usize> {
        if let Some(i) = self.devices.iter().position(|d| d.ctx == ctx) {
            return Ok(i);
        }
        let want = self
            .cq_share()
            .saturating_mul(self.config.max_conns as u32)
            .saturating_mul(2);
        let d = Device::new(ctx, want)?;
        tracing::debug!(device = %d.name, cq = d.cq_size, "rdma: device set up");
        self.devices.push(d);
        Ok(self.devices.len() - 1)
    }

    /// Creates the QP and registered buffers of a connection whose id is
    /// bound to a device, and posts every receive.
    fn setup_qp(&mut self, index: usize) -> io::Result<()> {
        let cm = self.conns[index].cm;
        // SAFETY: the id is live; after address resolution (or a connect
        // request) librdmacm has set `verbs`.
        let ctx = unsafe { (*cm).verbs };
        if ctx.is_null() {
            return Err(io::Error::from_raw_os_error(libc::ENODEV));
        }
        let d = self.device_for(ctx)?;
        let share = self.cq_share();
        if !self.devices[d].has_room(share) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let (pd, cq) = (self.devices[d].pd, self.devices[d].cq);
        // SAFETY: plain data; zero is valid before we fill it in.
        let mut attr: sys::ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.send_cq = cq.as_ptr();
        attr.recv_cq = cq.as_ptr();
        attr.qp_type = sys::ibv_qp_type::IBV_QPT_RC;
        attr.sq_sig_all = 0;
        attr.cap.max_send_wr = u32::from(self.config.sq_depth());
        attr.cap.max_recv_wr = u32::from(self.config.recv_depth);
        attr.cap.max_send_sge = 1;
        attr.cap.max_recv_sge = 1;
        // SAFETY: the id, PD and CQ are live; attr is initialised.
        check(unsafe { sys::rdma_create_qp(cm, pd.as_ptr(), &mut attr) })?;
        let depth = usize::from(self.config.recv_depth);
        let size = self.config.buf_size as usize;
        let len = (depth + usize::from(self.config.send_slots)) * size;
        let c = &mut self.conns[index];
        c.qp = true;
        c.dev = d;
        c.cq_share = share;
        self.devices[d].cq_used += share;
        c.region = Some(Region::new(pd, len)?);
        let posts: Vec<Post> = (0..self.config.recv_depth)
            .map(|slot| Post::Recv { slot })
            .collect();
        self.post(index, &posts)
    }

    /// Posts receives and sends for one connection, each kind in one call.
    fn post(&mut self, index: usize, posts: &[Post]) -> io::Result<()> {
        let Some((id, c)) = self.conns.at(index) else {
            return Err(io::Error::from_raw_os_error(libc::ENOTCONN));
        };
        let Some(region) = &c.region else {
            return Err(io::Error::from_raw_os_error(libc::ENOTCONN));
        };
        let (base, lkey) = (region.addr(), region.lkey());
        let size = u64::from(self.config.buf_size);
        let send_base = base + u64::from(self.config.recv_depth) * size;
        // SAFETY: the QP exists (qp == true whenever a region exists).
        let qp = unsafe { (*c.cm).qp };
        self.recv_wrs.clear();
        self.send_wrs.clear();
        self.sges.clear();
        // SGEs first, so their addresses are stable when WRs point at them.
        for p in posts {
            let sge = match *p {
                Post::Recv { slot } => sys::ibv_sge {
                    addr: base + u64::from(slot) * size,
                    length: self.config.buf_size,
                    lkey,
                },
                Post::Send { slot, len, .. } => sys::ibv_sge {
                    addr: slot.map_or(0, |s| send_base + u64::from(s) * size),
                    length: len,
                    lkey,
                },
            };
            self.sges.push(sge);
        }
        // Every pointer into the arrays derives from one base pointer taken
        // after the last push, so none is invalidated by a later borrow.
        let sges = self.sges.as_mut_ptr();
        for (i, p) in posts.iter().enumerate() {
            // SAFETY: i < sges.len(): one SGE was pushed per post above.
            let sge = unsafe { sges.add(i) };
            match *p {
                Post::Recv { slot } => self.recv_wrs.push(sys::ibv_recv_wr {
                    wr_id: wr_id(id, true, Some(slot)),
                    next: ptr::null_mut(),
                    sg_list: sge,
                    num_sge: 1,
                }),
                Post::Send { slot, len, imm } => {
                    // SAFETY: plain data; zero is valid before filling in.
                    let mut wr: sys::ibv_send_wr = unsafe { std::mem::zeroed() };
                    wr.wr_id = wr_id(id, false, slot);
                    wr.sg_list = sge;
                    wr.num_sge = i32::from(len > 0);
                    wr.opcode = sys::ibv_wr_opcode::IBV_WR_SEND_WITH_IMM;
                    wr.send_flags = sys::ibv_send_flags::IBV_SEND_SIGNALED.0;
                    wr.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
                    self.send_wrs.push(wr);
                }
            }
        }
        if !self.recv_wrs.is_empty() {
            let first = link(&mut self.recv_wrs, |w, n| w.next = n);
            let mut bad = ptr::null_mut();
            // SAFETY: the QP is live; the WR list and SGEs stay valid for
            // the call; the SGEs name our registered region.
            check(unsafe { sys::ibv_post_recv(qp, first, &mut bad) })?;
        }
        if !self.send_wrs.is_empty() {
            let first = link(&mut self.send_wrs, |w, n| w.next = n);
            let mut bad = ptr::null_mut();
            // SAFETY: as above; the send slots named are not touched by the
            // writer until their completion (Chan's bookkeeping).
            check(unsafe { sys::ibv_post_send(qp, first, &mut bad) })?;
        }
        Ok(())
    }

    /// Posts what every dirty connection's channel has ready.
    fn flush_dirty(&mut self) {
        let mut i = 0;
        while i < self.dirty.len() {
            let index = self.dirty[i];
            i += 1;
            let Some((_, c)) = self.conns.at_mut(index) else {
                continue;
            };
            c.dirty = false;
            if c.failed.is_some() || c.disconnected.is_some() {
                continue;
            }
            let Some(chan) = c.chan.as_mut() else {
                continue;
            };
            let mut posts = std::mem::take(&mut self.posts);
            posts.clear();
            chan.drain(&mut posts);
            if !posts.is_empty()
                && let Err(e) = self.post(index, &posts)
            {
                tracing::debug!(error = %e, "rdma: posting failed");
                self.fail(index, CloseReason::Reset(e.raw_os_error()));
            }
            self.posts = posts;
        }
        self.dirty.clear();
    }

    /// Takes completions off every CQ; returns how many, and whether every
    /// CQ was emptied (the per-poll bound was not hit).
    fn poll_cqs(&mut self) -> (usize, bool) {
        let (mut total, mut drained) = (0, true);
        for d in 0..self.devices.len() {
            let mut emptied = false;
            for _ in 0..WC_ROUNDS {
                let cq = self.devices[d].cq.as_ptr();
                // SAFETY: the CQ is live; `wcs` holds WC_BATCH entries.
                let n = unsafe { sys::ibv_poll_cq(cq, WC_BATCH as i32, self.wcs.as_mut_ptr()) };
                if n <= 0 {
                    emptied = true;
                    break;
                }
                let n = n as usize;
                for k in 0..n {
                    self.on_completion(k);
                }
                total += n;
                if n < WC_BATCH {
                    emptied = true;
                    break;
                }
            }
            drained &= emptied;
        }
        if drained {
            self.drains += 1;
        }
        (total, drained)
    }

    fn on_completion(&mut self, k: usize) {
        let wc = &self.wcs[k];
        let (index, generation, recv, slot) = split_wr_id(wc.wr_id);
        let (status, opcode, flags, len) = (wc.status, wc.opcode, wc.wc_flags, wc.byte_len);
        // SAFETY: the union's imm_data arm is what a receive with
        // IBV_WC_WITH_IMM carries; it is read as plain bits either way.
        let imm = u32::from_be(unsafe { wc.imm_data_invalidated_rkey_union.imm_data });
        let Some((id, c)) = self.conns.at_mut(index) else {
            return;
        };
        if id.generation() & 0x7f_ffff != generation {
            return; // a connection that is gone
        }
        if status != sys::ibv_wc_status::IBV_WC_SUCCESS {
            if status == sys::ibv_wc_status::IBV_WC_WR_FLUSH_ERR {
                // The QP went to the error state: the peer is gone.
                c.disconnected.get_or_insert(self.drains);
            } else {
                tracing::warn!(
                    conn = %id,
                    status = %crate::sys::wc_status_name(status),
                    "rdma: work request failed"
                );
                c.failed.get_or_insert(CloseReason::Reset(Some(libc::EIO)));
            }
            return;
        }
        let result = if recv {
            let with_imm = flags & sys::ibv_wc_flags::IBV_WC_WITH_IMM.0 != 0;
            let Some(slot) = slot.filter(|_| opcode == sys::ibv_wc_opcode::IBV_WC_RECV && with_imm)
            else {
                tracing::warn!(conn = %id, "rdma: peer sent something other than SEND with immediate");
                c.failed
                    .get_or_insert(CloseReason::Reset(Some(libc::EPROTO)));
                return;
            };
            match c.chan.as_mut() {
                Some(chan) => chan.on_recv(slot, len, imm),
                None => {
                    c.early.push((slot, len, imm));
                    Ok(())
                }
            }
        } else {
            match c.chan.as_mut() {
                Some(chan) => chan.on_send_done(slot),
                None => Ok(()),
            }
        };
        if let Err(e) = result {
            tracing::warn!(conn = %id, error = %e, "rdma: protocol violation by the peer");
            c.failed
                .get_or_insert(CloseReason::Reset(Some(libc::EPROTO)));
            return;
        }
        if c.state == State::Closing
            && let Some(chan) = c.chan.as_mut()
        {
            chan.discard_input();
        }
        self.mark_dirty(index);
    }

    /// Handles the events of our own channel (connections we own).
    fn poll_cm(&mut self) -> Result<(), TransportError> {
        loop {
            let ev = match self.channel.next() {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ok(()),
                Err(e) => return Err(TransportError::Poll(e)),
            };
            self.on_cm_event(ev);
        }
    }

    fn on_cm_event(&mut self, ev: CmEvent) {
        use sys::rdma_cm_event_type as T;
        // SAFETY: ids on our channel are live until we destroy them (and
        // destroying drops their undelivered events).
        let ctx = unsafe { (*ev.id).context };
        let Some(id) = self.id_of(ctx) else {
            tracing::debug!(event = %event_name(ev.kind), "rdma: event for an unknown id");
            return;
        };
        let index = id.index();
        let (state, outbound) = (self.conns[index].state, self.conns[index].outbound);
        match ev.kind {
            T::RDMA_CM_EVENT_ADDR_RESOLVED if state == State::Resolving => {
                let ms = self
                    .config
                    .resolve_timeout
                    .as_millis()
                    .min(i32::MAX as u128) as i32;
                // SAFETY: the id is live and has resolved its address.
                match check(unsafe { sys::rdma_resolve_route(self.conns[index].cm, ms) }) {
                    Ok(()) => self.conns[index].state = State::Routing,
                    Err(e) => self.connect_failed(index, e.raw_os_error()),
                }
            }
            T::RDMA_CM_EVENT_ROUTE_RESOLVED if state == State::Routing => {
                let r = self.setup_qp(index).and_then(|()| {
                    let private = self.local_params().encode();
                    let mut param = conn_param(&private);
                    // SAFETY: the id has a route and a QP; param and the
                    // private data it points to live for the call.
                    check(unsafe { sys::rdma_connect(self.conns[index].cm, &mut param) })
                });
                match r {
                    Ok(()) => self.conns[index].state = State::Connecting,
                    Err(e) => self.connect_failed(index, e.raw_os_error()),
                }
            }
            T::RDMA_CM_EVENT_ESTABLISHED if state == State::Connecting => {
                match Params::decode(&ev.private) {
                    Ok(peer) => {
                        let mut chan = Chan::new(self.chan_config(peer));
                        let c = &mut self.conns[index];
                        for (slot, len, imm) in c.early.drain(..) {
                            if chan.on_recv(slot, len, imm).is_err() {
                                c.failed
                                    .get_or_insert(CloseReason::Reset(Some(libc::EPROTO)));
                            }
                        }
                        c.chan = Some(chan);
                        c.state = State::Open;
                        let blocked = std::mem::take(&mut c.blocked);
                        self.pending.push(Event::Connected(id));
                        if blocked {
                            self.pending.push(Event::Writable(id));
                        }
                        self.mark_dirty(index);
                    }
                    Err(why) => {
                        tracing::warn!(peer = %self.conns[index].peer, why, "rdma: refusing peer");
                        self.connect_failed(index, Some(libc::EPROTO));
                    }
                }
            }
            T::RDMA_CM_EVENT_ESTABLISHED if state == State::Accepting => {
                let c = &mut self.conns[index];
                c.state = State::Open;
                let peer = c.peer;
                let listener = c.listener.unwrap_or(peer);
                self.pending.push(Event::Accepted {
                    conn: id,
                    peer,
                    listener,
                });
                self.mark_dirty(index);
            }
            T::RDMA_CM_EVENT_ADDR_ERROR
            | T::RDMA_CM_EVENT_ROUTE_ERROR
            | T::RDMA_CM_EVENT_CONNECT_ERROR
            | T::RDMA_CM_EVENT_UNREACHABLE
            | T::RDMA_CM_EVENT_REJECTED => {
                tracing::debug!(event = %event_name(ev.kind), status = ev.status, "rdma: connection setup failed");
                if outbound && state != State::Open && state != State::Closing {
                    let errno = match ev.kind {
                        T::RDMA_CM_EVENT_REJECTED => libc::ECONNREFUSED,
                        _ if ev.status < 0 => -ev.status,
                        _ => libc::EHOSTUNREACH,
                    };
                    self.connect_failed(index, Some(errno));
                } else if state == State::Accepting {
                    self.remove(index, CloseReason::Reset(None), false);
                } else {
                    self.fail(index, CloseReason::Reset(Some(libc::ECONNRESET)));
                }
            }
            T::RDMA_CM_EVENT_DISCONNECTED => match state {
                State::Closing => self.remove(index, CloseReason::Local, true),
                State::Accepting => self.remove(index, CloseReason::Reset(None), false),
                State::Open => {
                    let drains = self.drains;
                    self.conns[index].disconnected.get_or_insert(drains);
                }
                _ => self.connect_failed(index, Some(libc::ECONNRESET)),
            },
            T::RDMA_CM_EVENT_DEVICE_REMOVAL => {
                self.fail(index, CloseReason::Reset(Some(libc::ENODEV)));
            }
            _ => {
                tracing::trace!(event = %event_name(ev.kind), "rdma: event ignored");
            }
        }
    }

    fn connect_failed(&mut self, index: usize, errno: Option<i32>) {
        self.remove(index, CloseReason::ConnectFailed(errno), true);
    }

    /// The live connection a cm id's context names ([`context_of`]).
    fn id_of(&self, ctx: *mut libc::c_void) -> Option<ConnId> {
        let key = ctx as u64;
        if key == 0 {
            return None;
        }
        let index = ((key >> 32) - 1) as usize;
        let generation = key as u32;
        self.conns
            .id_at(index)
            .filter(|id| id.generation() == generation)
    }

    /// Takes connect requests off the shared listener, if this instance
    /// listens and no other instance is at it right now.
    fn poll_listener(&mut self) {
        // A full worker leaves connect requests to the others.
        if !self.listening || self.full() {
            return;
        }
        let shared = self.shared.clone();
        let Ok(guard) = shared.listeners.try_lock() else {
            return;
        };
        for l in guard.iter() {
            for _ in 0..self.config.accept_batch {
                match l.channel.next() {
                    Ok(Some(ev)) => {
                        if ev.kind == sys::rdma_cm_event_type::RDMA_CM_EVENT_CONNECT_REQUEST {
                            self.on_connect_request(ev, l.addr);
                        } else {
                            tracing::debug!(event = %event_name(ev.kind), "rdma: listener event");
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "rdma: listener channel failed");
                        break;
                    }
                }
            }
        }
    }

    fn on_connect_request(&mut self, ev: CmEvent, listener: SocketAddr) {
        let id = ev.id;
        let reject = |why: &str| {
            tracing::debug!(why, "rdma: rejecting a connect request");
            // SAFETY: the request's id is live and ours to reject and
            // destroy; its only event has been acked.
            unsafe {
                sys::rdma_reject(id, ptr::null(), 0);
                sys::rdma_destroy_id(id);
            }
        };
        let peer_params = match Params::decode(&ev.private) {
            Ok(p) => p,
            Err(why) => return reject(why),
        };
        if self.conns.is_full() {
            return reject("connection table full");
        }
        // SAFETY: the id is live; its events on the listener channel are
        // all acked, which migration requires.
        if unsafe { sys::rdma_migrate_id(id, self.channel.as_ptr()) } != 0 {
            return reject("rdma_migrate_id failed");
        }
        // SAFETY: the id is live; its route holds the peer's address.
        let peer = unsafe { crate::sys::id_addrs(id) }
            .1
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        // Not full (checked above): the insert cannot fail.
        let Some(conn) = self.insert(id, State::Accepting, peer) else {
            return;
        };
        let index = conn.index();
        self.conns[index].listener = Some(listener);
        if let Err(e) = self.setup_qp(index) {
            tracing::warn!(error = %e, %peer, "rdma: cannot set up a queue pair");
            // SAFETY: the id is live until remove() drops it below.
            unsafe { sys::rdma_reject(id, ptr::null(), 0) };
            self.remove(index, CloseReason::Reset(None), false);
            return;
        }
        self.conns[index].chan = Some(Chan::new(self.chan_config(peer_params)));
        let private = self.local_params().encode();
        let mut param = conn_param(&private);
        // SAFETY: the id has a QP; param and its private data live for the call.
        if let Err(e) = check(unsafe { sys::rdma_accept(id, &mut param) }) {
            tracing::warn!(error = %e, %peer, "rdma: rdma_accept failed");
            self.remove(index, CloseReason::Reset(None), false);
        }
    }

    /// CQ entries one connection can occupy: its receives and sends.
    fn cq_share(&self) -> u32 {
        u32::from(self.config.recv_depth) + u32::from(self.config.sq_depth())
    }

    /// Whether this instance can take no more connections.
    fn full(&self) -> bool {
        self.conns.is_full() || self.devices.iter().any(|d| !d.has_room(self.cq_share()))
    }

    /// Whether anything is ready for the consumer right now.
    fn has_work(&self) -> bool {
        !self.pending.is_empty()
            || self.conns.iter().any(|(_, c)| {
                c.failed.is_some()
                    || c.chan.as_ref().is_some_and(|ch| {
                        c.state == State::Open
                            && !c.paused
                            && (ch.readable() > 0 || ch.at_eof() || c.disconnected.is_some())
                    })
            })
    }
}

/// Connection parameters for rdma_connect / rdma_accept: no RDMA READs,
/// bounded retries on receiver-not-ready (credits make it unreachable).
fn conn_param(private: &[u8; 12]) -> sys::rdma_conn_param {
    sys::rdma_conn_param {
        private_data: private.as_ptr().cast(),
        private_data_len: private.len() as u8,
        responder_resources: 0,
        initiator_depth: 0,
        flow_control: 1,
        retry_count: 7,
        // Credits make receiver-not-ready impossible from an honest peer;
        // bounded retries turn a lying one into an error, not a stall.
        rnr_retry_count: 6,
        srq: 0,
        qp_num: 0,
    }
}

fn context_of(id: ConnId) -> *mut libc::c_void {
    (((id.index() as u64 + 1) << 32) | u64::from(id.generation())) as usize as *mut libc::c_void
}

/// Chains work requests through their `next` pointers.
/// Chains work requests through their `next` pointers; returns the head.
/// All pointers derive from one base pointer (no reborrow invalidates
/// them before the driver follows the chain).
fn link<W>(wrs: &mut [W], set: impl Fn(&mut W, *mut W)) -> *mut W {
    let base = wrs.as_mut_ptr();
    for i in 1..wrs.len() {
        // SAFETY: i - 1 and i are in bounds; the element is written
        // through the same base pointer the chain is built from.
        unsafe { set(&mut *base.add(i - 1), base.add(i)) };
    }
    base
}

impl RdmaTransport {
    /// The one receive path: hands at most `len` received bytes of `conn`
    /// to `put`, in order (into a slice, or appended to a buffer).
    fn take(
        &mut self,
        conn: ConnId,
        len: usize,
        put: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, TransportError> {
        let index = self
            .conn_index(conn)
            .ok_or(TransportError::UnknownConn(conn))?;
        let c = &mut self.conns[index];
        if c.state != State::Open || len == 0 {
            return Ok(0);
        }
        let (Some(chan), Some(region)) = (c.chan.as_mut(), c.region.as_mut()) else {
            return Ok(0);
        };
        let mut slots = RegionSlots {
            region,
            offset: 0,
            size: self.config.buf_size as usize,
            count: self.config.recv_depth,
        };
        let n = chan.take(&mut slots, len, put);
        if n > 0 {
            self.mark_dirty(index);
        }
        Ok(n)
    }
}

impl Transport for RdmaTransport {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: BACKEND,
            latency: LatencyClass::PollMode,
            kernel_bypass: true,
            busy_poll: false,
            vectored_send: false,
            max_segment: self.config.buf_size as usize,
        }
    }

    fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        let err = |source: io::Error| TransportError::Listen { addr, source };
        let mut guard = self
            .shared
            .listeners
            .lock()
            .map_err(|_| err(io::Error::other("listener lock poisoned")))?;
        // Another worker bound it already (workers after the first listen
        // on the addresses the first one got, port 0 resolved): share it.
        let existing = guard
            .iter()
            .find(|l| addr.port() != 0 && l.addr == addr)
            .map(|l| l.addr);
        let bound = match existing {
            Some(bound) => bound,
            None => {
                let channel = EventChannel::new().map_err(err)?;
                let id = channel.create_id().map_err(err)?;
                let mut listener = Listener { id, addr, channel };
                let mut raw = RawAddr::new(addr);
                // SAFETY: the id is live; raw holds a valid sockaddr.
                check(unsafe { sys::rdma_bind_addr(listener.id, raw.as_mut_ptr()) })
                    .map_err(err)?;
                // SAFETY: as above.
                check(unsafe { sys::rdma_listen(listener.id, self.config.backlog) })
                    .map_err(err)?;
                // SAFETY: a bound id's source port is valid.
                let port = u16::from_be(unsafe { sys::rdma_get_src_port(listener.id) });
                let bound = SocketAddr::new(addr.ip(), port);
                // SAFETY: a bound id names its device when the address has one.
                if unsafe { (*listener.id).verbs }.is_null() && !addr.ip().is_unspecified() {
                    return Err(err(io::Error::new(
                        io::ErrorKind::AddrNotAvailable,
                        "no RDMA device has this address",
                    )));
                }
                listener.addr = bound;
                guard.push(listener);
                bound
            }
        };
        if !self.listening {
            self.listening = true;
            self.shared.instances.fetch_add(1, Ordering::Relaxed);
        }
        Ok(bound)
    }

    fn stop_listening(&mut self) {
        if !self.listening {
            return;
        }
        self.listening = false;
        // Requests this instance took but has not reported (accept sent,
        // not established) are refused: destroying the id rejects them.
        let accepting: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state == State::Accepting)
            .map(|(id, _)| id.index())
            .collect();
        for i in accepting {
            self.remove(i, CloseReason::Reset(None), false);
        }
        // rdma_cm has one listening id per address for every instance: it
        // goes (rejecting what it queued, refusing what comes) when the
        // last instance stops; until then the others take the requests.
        let Ok(mut guard) = self.shared.listeners.lock() else {
            return;
        };
        if self.shared.instances.fetch_sub(1, Ordering::Relaxed) == 1 {
            guard.clear();
        }
    }

    fn connect(&mut self, addr: SocketAddr, now: Instant) -> Result<ConnId, TransportError> {
        self.now = self.now.max(now);
        let err = |source: io::Error| TransportError::Connect { addr, source };
        let full = TransportError::TooManyConnections(self.config.max_conns);
        if self.conns.is_full() {
            return Err(full);
        }
        let id = self.channel.create_id().map_err(err)?;
        let conn = self.insert(id, State::Resolving, addr).ok_or(full)?;
        let mut raw = RawAddr::new(addr);
        let ms = self
            .config
            .resolve_timeout
            .as_millis()
            .min(i32::MAX as u128) as i32;
        // SAFETY: the id is live; raw holds a valid sockaddr for the call.
        let rc =
            check(unsafe { sys::rdma_resolve_addr(id, ptr::null_mut(), raw.as_mut_ptr(), ms) });
        if let Err(e) = rc {
            self.remove(
                conn.index(),
                CloseReason::ConnectFailed(e.raw_os_error()),
                false,
            );
            return Err(err(e));
        }
        Ok(conn)
    }

    fn poll(&mut self, now: Instant, events: &mut Events) -> Result<(), TransportError> {
        self.now = self.now.max(now);
        events.clear();
        self.flush_dirty();
        // A DISCONNECTED is acted on only after a later poll empties the
        // CQs (see `disconnected`), so every receive that completed before
        // it is counted first.
        self.poll_cqs();
        self.poll_cm()?;
        self.poll_listener();
        // Re-post receives and return credits for what just completed.
        self.flush_dirty();

        for ev in self.pending.drain(..) {
            events.push(ev);
        }
        let mut close: Vec<(usize, CloseReason)> = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            let index = id.index();
            if let Some(reason) = c.failed {
                close.push((index, reason));
                continue;
            }
            let setting_up = !matches!(c.state, State::Open | State::Closing);
            if setting_up {
                // A setup that never finished: an outgoing one fails, an
                // incoming one is dropped unreported.
                if c.linger.is_some_and(|t| now >= t) {
                    close.push((index, CloseReason::ConnectFailed(Some(libc::ETIMEDOUT))));
                }
                continue;
            }
            let Some(chan) = c.chan.as_mut() else {
                continue;
            };
            match c.state {
                State::Open => {
                    if chan.take_writable() {
                        events.push(Event::Writable(id));
                    }
                    if c.paused {
                        continue;
                    }
                    if chan.readable() > 0 {
                        events.push(Event::Readable(id));
                    } else if chan.at_eof() {
                        // The peer's FIN after its last byte: reported once;
                        // the connection stays for our replies until the
                        // consumer closes it (or the peer disconnects).
                        if !c.finished {
                            c.finished = true;
                            events.push(Event::PeerFinished(id));
                        }
                        if c.disconnected.is_some_and(|d| d < self.drains) {
                            close.push((index, CloseReason::PeerClosed));
                        }
                    } else if c.disconnected.is_some_and(|d| d < self.drains) {
                        close.push((index, CloseReason::Reset(None)));
                    }
                }
                State::Closing => {
                    let late = c.linger.is_some_and(|t| now >= t);
                    if chan.fin_acked() || c.disconnected.is_some() || late {
                        close.push((index, CloseReason::Local));
                    }
                }
                _ => {}
            }
        }
        for (index, reason) in close {
            let report = self.conns.at(index).is_some_and(|(_, c)| {
                c.outbound || matches!(c.state, State::Open | State::Closing)
            });
            self.remove(index, reason, report);
        }
        for ev in self.pending.drain(..) {
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
        self.send_vectored(conn, &[data])
    }

    fn send_vectored(&mut self, conn: ConnId, bufs: &[&[u8]]) -> Result<usize, TransportError> {
        let index = self
            .conn_index(conn)
            .ok_or(TransportError::UnknownConn(conn))?;
        let recv_len = usize::from(self.config.recv_depth) * self.config.buf_size as usize;
        let c = &mut self.conns[index];
        match c.state {
            State::Open if c.failed.is_none() && c.disconnected.is_none() => {}
            State::Resolving | State::Routing | State::Connecting => {
                c.blocked = true;
                return Ok(0);
            }
            _ => return Ok(0),
        }
        let (Some(chan), Some(region)) = (c.chan.as_mut(), c.region.as_mut()) else {
            return Ok(0);
        };
        let mut slots = RegionSlots {
            region,
            offset: recv_len,
            size: self.config.buf_size as usize,
            count: self.config.send_slots,
        };
        let mut total = 0;
        for b in bufs {
            let n = chan.write(&mut slots, b);
            total += n;
            if n < b.len() {
                break;
            }
        }
        if total > 0 {
            self.mark_dirty(index);
        }
        Ok(total)
    }

    fn flush(&mut self, _now: Instant) -> Result<(), TransportError> {
        self.flush_dirty();
        Ok(())
    }

    fn pause_recv(&mut self, conn: ConnId, paused: bool) {
        if let Some(i) = self.conn_index(conn) {
            self.conns[i].paused = paused;
        }
    }

    fn close(&mut self, conn: ConnId) {
        let Some(index) = self.conn_index(conn) else {
            return;
        };
        let linger = self.now + self.config.close_linger;
        let c = &mut self.conns[index];
        match (c.state, c.chan.as_mut()) {
            (State::Open, Some(chan)) if c.failed.is_none() && c.disconnected.is_none() => {
                // FIN after what was written; keep returning credits for
                // (and discarding) input so the peer's last sends complete.
                chan.shutdown();
                chan.discard_input();
                c.state = State::Closing;
                c.linger = Some(linger);
                self.mark_dirty(index);
            }
            (State::Closing, _) => {}
            _ => self.remove(index, CloseReason::Local, true),
        }
    }

    fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.conns.get(conn).map(|c| c.peer)
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        self.flush_dirty();
        if self.has_work() {
            return Ok(());
        }
        for d in &mut self.devices {
            d.arm().map_err(TransportError::Poll)?;
        }
        // A completion that landed between the last poll and arming raises
        // no event: look once more before sleeping.
        if self.poll_cqs().0 > 0 {
            self.flush_dirty();
            return Ok(());
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(self.devices.len() + 3);
        let mut add = |fd: RawFd| {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
        };
        add(self.waker.0);
        add(self.channel.fd());
        for d in &self.devices {
            add(d.fd());
        }
        // The channels' descriptors outlive the lock: this instance still
        // counts as listening, so no other one can close the listeners.
        if self.listening
            && !self.full()
            && let Ok(g) = self.shared.listeners.try_lock()
        {
            for l in g.iter() {
                add(l.channel.fd());
            }
        }
        // Deadlines of closes and of setups are checked by poll: wake for them.
        let closing = self.conns.iter().any(|(_, c)| c.state != State::Open);
        let timeout = match (timeout, closing) {
            (Some(t), true) => Some(t.min(Duration::from_millis(50))),
            (None, true) => Some(Duration::from_millis(50)),
            (t, false) => t,
        };
        // Round up: a sub-millisecond timeout must not become a busy spin.
        let ms = timeout.map_or(-1, |t| {
            t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        // SAFETY: fds is a live array of the given length.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(TransportError::Poll(e));
            }
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 8];
            // SAFETY: reads 8 bytes into a live buffer from our eventfd.
            unsafe { libc::read(self.waker.0, buf.as_mut_ptr().cast(), 8) };
        }
        for d in &mut self.devices {
            d.take_events();
        }
        Ok(())
    }

    fn waker(&self) -> Result<Arc<dyn Wake>, TransportError> {
        Ok(self.waker.clone())
    }
}

impl Drop for RdmaTransport {
    fn drop(&mut self) {
        // The last instance listening closes the shared listeners.
        self.stop_listening();
        // Tell peers (DREQ) and destroy QPs and ids before the devices and
        // the channel they depend on.
        let indices: Vec<usize> = self.conns.iter().map(|(id, _)| id.index()).collect();
        for i in indices {
            self.remove(i, CloseReason::Local, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wr_ids_round_trip() {
        let c = ConnId::new(70_000, 0x12_3456);
        for (recv, slot) in [(true, Some(0)), (false, Some(65_534)), (false, None)] {
            assert_eq!(
                split_wr_id(wr_id(c, recv, slot)),
                (70_000, 0x12_3456, recv, slot)
            );
        }
    }

    #[test]
    fn params_round_trip_and_reject_garbage() {
        let p = Params {
            depth: 16,
            buf_size: 8192,
        };
        let mut wire = p.encode().to_vec();
        assert_eq!(Params::decode(&wire), Ok(p));
        wire.extend_from_slice(&[0; 40]); // IB CM pads private data
        assert_eq!(Params::decode(&wire), Ok(p));
        assert!(Params::decode(b"HTTP/1.1 200").is_err());
        assert!(Params::decode(&[]).is_err());
        let mut bad = p.encode();
        bad[4..6].copy_from_slice(&1u16.to_be_bytes());
        assert!(Params::decode(&bad).is_err());
        let mut bad = p.encode();
        bad[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Params::decode(&bad).is_err());
    }

    #[test]
    fn context_keys_name_slot_and_generation() {
        let id = ConnId::new(5, 9);
        let key = context_of(id) as u64;
        assert_eq!((key >> 32) - 1, 5);
        assert_eq!(key as u32, 9);
    }
}
