//! One connection's state: its socket, the received buffers it holds, its
//! two send buffers, and where it is in its life.
//!
//! ```text
//!  connect ─► Connecting ──CONNECT ok──► Open ◄── accept
//!                 │                       │ close()
//!                 │                       ▼
//!                 │                    Closing: SEND the rest, SHUTDOWN(WR),
//!                 │                       │     drain RECV until EOF/linger
//!                 ▼                       ▼
//!               Dead (Closed reported; the id is refused) ── last op done ──► slot freed
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Outgoing connect in flight.
    Connecting,
    /// Established; the consumer's to use.
    Open,
    /// `close` was called: output is drained, then FIN, then input is
    /// discarded until the peer's FIN or the deadline (set by the first
    /// poll after `close`, from the time that poll passes in).
    Closing {
        /// When to give up waiting for the peer.
        deadline: Option<Instant>,
        /// Progress of our FIN.
        shutdown: Shutdown,
    },
    /// `Closed` was reported; the slot waits for its operations to finish.
    Dead,
}

/// Progress of a closing connection's `shutdown(SHUT_WR)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shutdown {
    /// Queued output has yet to leave.
    Pending,
    /// The SHUTDOWN is in flight.
    Sent,
    /// Our FIN is out.
    Done,
}

/// A received buffer a connection holds: `len` bytes of buffer `bid`, the
/// first `off` of which the consumer has read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RxBuf {
    pub bid: u16,
    pub off: u32,
    pub len: u32,
}

/// One connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Closed when the slot is freed, after its last operation completed.
    pub sock: socket2::Socket,
    pub peer: SocketAddr,
    pub state: State,
    /// Operations in flight that name this slot (their last completion
    /// not yet reaped). The slot, its buffers and its socket stay until 0.
    pub ops: u32,

    /// Received buffers not yet read, in order.
    pub rx: VecDeque<RxBuf>,
    /// A multishot receive is in flight.
    pub recv_armed: bool,
    /// A cancel of that receive is in flight (too many buffers held).
    pub recv_cancelling: bool,
    /// Tag of the current receive (bumped on each arming).
    pub recv_serial: u32,
    /// Waiting in the starved list for buffers to come back.
    pub starved: bool,
    /// The peer's FIN arrived (after the buffers in `rx`).
    pub eof: bool,
    /// `PeerFinished` was reported.
    pub finished: bool,
    /// The consumer's last `recv` returned 0 and nothing arrived since: a
    /// FIN arriving now follows every byte read, and is reported at once.
    pub drained: bool,
    /// The consumer asked not to be told about input.
    pub paused: bool,

    /// Bytes taken by `send`, not yet handed to the kernel.
    pub out: Vec<u8>,
    /// Bytes a SEND is working on; not touched while `sending`.
    pub flight: Vec<u8>,
    /// How much of `flight` the kernel has taken.
    pub flight_off: usize,
    /// A SEND of `flight[flight_off..]` is in flight.
    pub sending: bool,
    /// A `send` came back short: report Writable when room comes back.
    pub write_blocked: bool,
    /// Listed for the next flush.
    pub dirty: bool,

    /// The address an outgoing CONNECT reads; kept until it completes.
    pub connect_addr: Option<Box<socket2::SockAddr>>,
}

impl Conn {
    pub(crate) fn new(sock: socket2::Socket, peer: SocketAddr, state: State) -> Self {
        Self {
            sock,
            peer,
            state,
            ops: 0,
            rx: VecDeque::new(),
            recv_armed: false,
            recv_cancelling: false,
            recv_serial: 0,
            starved: false,
            eof: false,
            finished: false,
            drained: false,
            paused: false,
            out: Vec::new(),
            flight: Vec::new(),
            flight_off: 0,
            sending: false,
            write_blocked: false,
            dirty: false,
            connect_addr: None,
        }
    }

    /// The consumer may use the id (send, recv, pause, close).
    pub(crate) fn usable(&self) -> bool {
        matches!(self.state, State::Open | State::Connecting)
    }

    pub(crate) fn closing(&self) -> bool {
        matches!(self.state, State::Closing { .. })
    }

    /// Level-triggered readability: bytes held, or the FIN still to be
    /// read (a `recv` returning 0 reports `PeerFinished`).
    pub(crate) fn readable(&self) -> bool {
        self.state == State::Open
            && !self.paused
            && (!self.rx.is_empty() || (self.eof && !self.finished))
    }

    /// Bytes taken by `send` and not yet confirmed sent.
    pub(crate) fn unsent(&self) -> usize {
        self.out.len() + (self.flight.len() - self.flight_off)
    }

    /// Nothing left to hand to the kernel, nothing in flight.
    pub(crate) fn output_drained(&self) -> bool {
        !self.sending && self.out.is_empty()
    }
}
