//! The forwarding loop: two packet sockets, one [`Impairer`], ppoll.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Error;
use crate::fault::{Direction, FaultConfig, Impairer, Stats};
use crate::sys::{self, PacketSocket, SendOutcome};

/// Receive buffer: the largest IPv4 datagram (64 KiB, the most a GSO
/// super-frame carries without BIG TCP) plus Ethernet and VLAN headers.
/// Anything larger is reported with its true length (MSG_TRUNC) and dropped.
const RX_BUFFER: usize = 65_536 + 64;

/// Frames read from one socket per loop turn, so a flood on one side
/// cannot starve the other side's receive or either side's release; the
/// same order of magnitude as the kernel's NAPI budget (64).
const RX_BUDGET: usize = 64;

/// Frames released per direction per loop turn, for the same reason.
const TX_BUDGET: usize = 256;

/// Longest sleep in ppoll: bounds how late a `--duration` deadline or a
/// signal that lands just before ppoll is noticed.
const MAX_WAIT: Duration = Duration::from_millis(50);

/// Counters of the I/O side (the fault side is [`Stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Frames handed to the kernel per direction ([`Direction::index`]).
    pub forwarded: [u64; 2],
    /// Frames larger than the egress MTU or the receive buffer: GSO/GRO
    /// super-frames, dropped (the endpoints need TSO/GSO/GRO off).
    pub oversize: u64,
    /// Frames the egress interface refused (`ENOBUFS`, `ENETDOWN`).
    pub tx_dropped: u64,
    /// Frames the kernel flagged with a partial checksum
    /// (`TP_STATUS_CSUMNOTREADY`).
    pub csum_not_ready: u64,
    /// Our own transmissions seen on a socket (`PACKET_OUTGOING`), skipped.
    pub outgoing_skipped: u64,
    /// Frames the kernel dropped before the bridge read them (receive
    /// buffer full), from `PACKET_STATISTICS`.
    pub kernel_drops: u64,
    /// Largest frame received, in bytes.
    pub largest_frame: usize,
}

/// Everything the bridge counted; its `Display` is the stats line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Fault model counters.
    pub faults: Stats,
    /// I/O counters.
    pub io: IoStats,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let io = &self.io;
        write!(
            f,
            "forwarded_a_to_b={} forwarded_b_to_a={} {} oversize={} tx_dropped={} \
             kernel_drops={} csum_not_ready={} outgoing_skipped={} largest_frame={}",
            io.forwarded[0],
            io.forwarded[1],
            self.faults,
            io.oversize,
            io.tx_dropped,
            io.kernel_drops,
            io.csum_not_ready,
            io.outgoing_skipped,
            io.largest_frame
        )
    }
}

/// A running bridge between interfaces A and B.
#[derive(Debug)]
pub struct Bridge {
    /// Index 0 is interface A, 1 is interface B.
    socks: [PacketSocket; 2],
    impairer: Impairer,
    io: IoStats,
    buf: Vec<u8>,
    warned_oversize: bool,
}

impl Bridge {
    /// Opens packet sockets on `a` and `b` (in the current network
    /// namespace) and a fault model with `faults` and `seed`.
    ///
    /// Like any bridge, this one must not close a loop: `a` and `b` must
    /// not be the same interface (refused here) nor be connected to each
    /// other by any path but the bridge (the two ends of one veth pair,
    /// for example), or every broadcast circulates forever.
    pub fn open(a: &str, b: &str, faults: FaultConfig, seed: u64) -> Result<Self, Error> {
        if a == b {
            return Err(Error::SameInterface {
                ifname: a.to_owned(),
            });
        }
        let impairer = Impairer::new(faults, seed)?;
        let socks = [PacketSocket::open(a)?, PacketSocket::open(b)?];
        sys::tighten_timer_slack();
        Ok(Bridge {
            socks,
            impairer,
            io: IoStats::default(),
            buf: vec![0; RX_BUFFER],
            warned_oversize: false,
        })
    }

    /// Forwards until `stop` is set or `deadline` passes. Frames still
    /// queued at that point are discarded.
    pub fn run(&mut self, stop: &AtomicBool, deadline: Option<Instant>) -> Result<(), Error> {
        // Egress socket of a direction that could not send, waiting for
        // POLLOUT (indexed by socket, like `socks`).
        let mut want_write = [false; 2];
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| now >= d) {
                return Ok(());
            }
            let mut wake = now + MAX_WAIT;
            if let Some(d) = deadline {
                wake = wake.min(d);
            }
            for dir in Direction::ALL {
                if !want_write[egress(dir)]
                    && let Some(due) = self.impairer.next_due(dir)
                {
                    wake = wake.min(due);
                }
            }
            let socks = [&self.socks[0], &self.socks[1]];
            let ready = sys::poll(socks, want_write, wake.saturating_duration_since(now))?;

            let now = Instant::now();
            for dir in Direction::ALL {
                if ready[ingress(dir)].readable {
                    self.receive(dir, now)?;
                }
            }
            for dir in Direction::ALL {
                want_write[egress(dir)] = self.release(dir, now)?;
            }
        }
    }

    /// The counters so far (reading the kernel's drop counter resets it, so
    /// they are accumulated here).
    pub fn report(&mut self) -> Report {
        for sock in &self.socks {
            self.io.kernel_drops += sock.take_kernel_drops();
        }
        Report {
            faults: self.impairer.stats().clone(),
            io: self.io.clone(),
        }
    }

    /// Reads up to [`RX_BUDGET`] frames arriving for `dir` into the
    /// fault model.
    fn receive(&mut self, dir: Direction, now: Instant) -> Result<(), Error> {
        let sock = &self.socks[ingress(dir)];
        for _ in 0..RX_BUDGET {
            let Some(rx) = sock.recv(&mut self.buf)? else {
                return Ok(());
            };
            if rx.outgoing {
                self.io.outgoing_skipped += 1;
                continue;
            }
            self.io.largest_frame = self.io.largest_frame.max(rx.len);
            if rx.len > self.buf.len() {
                self.io.oversize += 1;
                warn_oversize(&mut self.warned_oversize, sock.ifname(), rx.len);
                continue;
            }
            if rx.csum_not_ready {
                self.io.csum_not_ready += 1;
            }
            self.impairer.ingress(dir, self.buf[..rx.len].to_vec(), now);
        }
        Ok(())
    }

    /// Sends up to [`TX_BUDGET`] frames of `dir` that are due at `now`.
    /// Returns whether the egress socket is full (wait for POLLOUT).
    fn release(&mut self, dir: Direction, now: Instant) -> Result<bool, Error> {
        let sock = &self.socks[egress(dir)];
        for _ in 0..TX_BUDGET {
            let Some(frame) = self.impairer.peek_due(dir, now) else {
                return Ok(false);
            };
            match sock.send(frame)? {
                SendOutcome::Sent => self.io.forwarded[dir.index()] += 1,
                SendOutcome::WouldBlock => return Ok(true),
                SendOutcome::TooBig => {
                    self.io.oversize += 1;
                    warn_oversize(&mut self.warned_oversize, sock.ifname(), frame.len());
                }
                SendOutcome::Dropped => self.io.tx_dropped += 1,
            }
            self.impairer.pop_due(dir, now);
        }
        Ok(false)
    }
}

/// Index in `socks` of the socket a direction's frames arrive on.
fn ingress(dir: Direction) -> usize {
    match dir {
        Direction::AToB => 0,
        Direction::BToA => 1,
    }
}

/// Index in `socks` of the socket a direction's frames leave by.
fn egress(dir: Direction) -> usize {
    1 - ingress(dir)
}

/// Says once, on stderr, why super-frames are dropped and what fixes it.
fn warn_oversize(warned: &mut bool, ifname: &str, len: usize) {
    if !*warned {
        *warned = true;
        eprintln!(
            "warpwire-impair: dropping a {len}-byte frame on {ifname} (larger than the MTU: a \
             GSO/GRO super-frame). Turn segmentation offloads off on both bridge interfaces and \
             on their veth peers: ethtool -K IF gro off tso off gso off"
        );
    }
}
