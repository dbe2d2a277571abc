//! # warpwire-rdma: reliable-connection queue pairs as a Transport
//!
//! RDMA RC queue pairs already deliver in order and reliably, so this
//! backend implements [`warpwire_transport::Transport`] directly, with no
//! TCP stack: the byte stream travels in SENDs into receive buffers the
//! peer keeps posted.
//!
//! ```text
//!  listen/connect ── rdma_cm (IP and port; RoCE GIDs from the address)
//!        │            private data: receive depth and buffer size
//!        ▼
//!  per worker: event channel, and per device: PD + one CQ + completion channel
//!  per connection: RC QP, one registered region = receive slots | send slots
//!
//!  send  ─► copy into a send slot (small writes coalesce; big ones split to
//!           the peer's buffer size) ─► SEND_WITH_IMM when credits allow
//!  poll  ─► ibv_poll_cq (batches) ─► chan: reassembly, credits, FIN
//!           ─► receives re-posted in batches as the reader empties them
//!  wait  ─► arm CQ, poll(2) on CQ channel, cm channel, listener, waker
//! ```
//!
//! Flow control is credit-based ([`chan`]): a sender never has more SENDs
//! outstanding than the receiver has receives posted, so no SEND ever
//! meets receiver-not-ready; credits come back in the immediate data. A
//! graceful close sends an in-band FIN after the data, waits for it to
//! complete (the peer's adapter holds every byte), then disconnects.
//!
//! Instances of one server share a listener ([`RdmaShared`]): rdma_cm has
//! no SO_REUSEPORT, so one cm id listens and the worker that takes a
//! connect request adopts the connection by migrating its id.
//!
//! `unsafe` is confined to `sys.rs` and `transport.rs`, each block with its
//! argument; [`chan`] is safe, sans-IO and unit-tested without hardware.

pub mod chan;
mod probe;
mod sys;
mod transport;

use std::io;
use std::time::Duration;

pub use probe::{DeviceInfo, ProbeAddr, probe, probe_devices};
pub use transport::{RdmaShared, RdmaTransport};

/// Settings of an RDMA transport instance. Memory per connection is
/// `(recv_depth + send_slots) * buf_size`, registered with the adapter.
#[derive(Debug, Clone)]
pub struct RdmaConfig {
    /// Receives each connection keeps posted: the peer's credit window.
    pub recv_depth: u16,
    /// Send buffers per connection: how much a writer may queue.
    pub send_slots: u16,
    /// Bytes per buffer: the largest SEND; larger writes are split.
    pub buf_size: u32,
    /// Connections per instance (sizes the completion queue).
    pub max_conns: usize,
    /// Address and route resolution timeout for outgoing connections.
    pub resolve_timeout: Duration,
    /// Connect requests taken per poll.
    pub accept_batch: usize,
    /// rdma_listen backlog.
    pub backlog: i32,
    /// How long a closing connection waits for its FIN to complete.
    pub close_linger: Duration,
}

impl Default for RdmaConfig {
    fn default() -> Self {
        Self {
            // 16 x 8 KiB in flight each way: 128 KiB windows, 256 KiB of
            // registered memory per connection.
            recv_depth: 16,
            send_slots: 16,
            buf_size: 8192,
            max_conns: 512,
            resolve_timeout: Duration::from_secs(2),
            // Few per lock hold, so a burst spreads over the workers.
            accept_batch: 4,
            backlog: 1024,
            close_linger: Duration::from_secs(2),
        }
    }
}

impl RdmaConfig {
    /// Send work requests per queue pair: every send slot plus room for
    /// FIN and credit-only messages.
    pub fn sq_depth(&self) -> u16 {
        self.send_slots.saturating_add(4)
    }

    /// Checks the sizes against what the protocol allows.
    pub fn validate(&self) -> io::Result<()> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
        if !(chan::MIN_DEPTH..=chan::MAX_DEPTH).contains(&self.recv_depth) {
            return Err(bad("recv_depth must be 4..=4096"));
        }
        if self.send_slots == 0 || self.send_slots > chan::MAX_DEPTH {
            return Err(bad("send_slots must be 1..=4096"));
        }
        if !(64..=16 << 20).contains(&self.buf_size) {
            return Err(bad("buf_size must be 64 B..=16 MiB"));
        }
        if self.max_conns == 0 || self.max_conns > (1 << 24) {
            return Err(bad("max_conns must be 1..=16M"));
        }
        if self.accept_batch == 0 {
            return Err(bad("accept_batch must be at least 1"));
        }
        let hour = Duration::from_secs(3600);
        if self.resolve_timeout > hour || self.close_linger > hour {
            return Err(bad("timeouts must be at most an hour"));
        }
        Ok(())
    }
}
