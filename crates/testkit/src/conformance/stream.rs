//! Byte streams the checks send and verify: a shared pattern, a sender
//! that keeps the backpressure rule, a verifying receiver, an echoer.

use std::sync::OnceLock;

use warpwire_transport::ConnId;

use super::{Harness, Pair, Side};

/// Period of the pattern: prime, so no power-of-two buffer, ring or
/// segment size lines a displaced piece up with identical bytes.
const PERIOD: usize = 65_521;
/// Largest piece handed out or compared at once.
pub const MAX_PIECE: usize = 64 * 1024;

/// A pseudo-random byte stream of period [`PERIOD`]; stream `k` starts at
/// its own offset, so bytes of one connection delivered on another differ.
#[derive(Debug)]
pub struct Pattern {
    block: Vec<u8>,
}

impl Pattern {
    /// The one shared pattern.
    pub fn get() -> &'static Pattern {
        static PATTERN: OnceLock<Pattern> = OnceLock::new();
        PATTERN.get_or_init(|| {
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut block: Vec<u8> = (0..PERIOD)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 32) as u8
                })
                .collect();
            // Unrolled past the period, so any piece is one slice.
            let tail: Vec<u8> = (0..MAX_PIECE).map(|i| block[i % PERIOD]).collect();
            block.extend_from_slice(&tail);
            Pattern { block }
        })
    }

    /// `len` (at most [`MAX_PIECE`]) bytes of stream `stream` from `offset`.
    pub fn at(&self, stream: u64, offset: usize, len: usize) -> &[u8] {
        assert!(
            len <= MAX_PIECE,
            "pattern pieces are at most {MAX_PIECE} bytes"
        );
        let start = (offset + (stream as usize).wrapping_mul(7_919)) % PERIOD;
        &self.block[start..start + len]
    }

    /// The whole of stream `stream` up to `len` bytes, as one vector.
    pub fn to_vec(&self, stream: u64, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            let n = (len - v.len()).min(MAX_PIECE);
            v.extend_from_slice(self.at(stream, v.len(), n));
        }
        v
    }

    /// Where `got` (bytes `offset..` of stream `stream`) first differs from
    /// the pattern, if it does.
    pub fn mismatch(&self, stream: u64, offset: usize, got: &[u8]) -> Option<usize> {
        let mut done = 0;
        while done < got.len() {
            let n = (got.len() - done).min(MAX_PIECE);
            let want = self.at(stream, offset + done, n);
            if want != &got[done..done + n] {
                let i = want
                    .iter()
                    .zip(&got[done..done + n])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                return Some(offset + done + i);
            }
            done += n;
        }
        None
    }
}

/// Sends `total` bytes of a pattern stream on one connection, keeping the
/// contract's rule: after a short `send`, nothing more until `Writable`.
#[derive(Debug)]
pub struct Outgoing {
    side: Side,
    conn: ConnId,
    stream: u64,
    total: usize,
    /// Bytes the transport took.
    pub sent: usize,
    /// A send came back short and no `Writable` has come since.
    pub blocked: bool,
    /// Short sends so far.
    pub short_sends: u64,
    /// `Writable` events that unblocked this stream.
    pub writables: u64,
    /// Rounds in a row this stream has been blocked.
    pub blocked_rounds: u64,
}

impl Outgoing {
    /// `total` bytes of stream `stream` from `side` on `conn`.
    pub fn new(side: Side, conn: ConnId, stream: u64, total: usize) -> Self {
        Self {
            side,
            conn,
            stream,
            total,
            sent: 0,
            blocked: false,
            short_sends: 0,
            writables: 0,
            blocked_rounds: 0,
        }
    }

    /// Whether everything was taken.
    pub fn done(&self) -> bool {
        self.sent == self.total
    }

    /// Sends pieces of up to `piece` bytes until one is short or all are
    /// taken (nothing while blocked), then flushes.
    pub fn pump<P: Pair>(&mut self, h: &mut Harness<P>, piece: usize) {
        if self.blocked || self.done() {
            return;
        }
        let pattern = Pattern::get();
        while !self.done() {
            let len = (self.total - self.sent).min(piece).min(MAX_PIECE);
            let n = h.send(
                self.side,
                self.conn,
                pattern.at(self.stream, self.sent, len),
            );
            self.sent += n;
            if n < len {
                self.blocked = true;
                self.short_sends += 1;
                break;
            }
        }
        h.flush(self.side);
    }

    /// Takes note of one round's events: `Writable` unblocks.
    pub fn observe(&mut self, r: &super::Round) {
        if r.writable(self.side, self.conn) {
            if self.blocked {
                self.writables += 1;
            }
            self.blocked = false;
            self.blocked_rounds = 0;
        } else if self.blocked {
            self.blocked_rounds += 1;
        }
    }
}

/// Receives `expected` bytes of a pattern stream on one connection,
/// comparing every piece with what was sent at that offset.
#[derive(Debug)]
pub struct Incoming {
    side: Side,
    conn: ConnId,
    stream: u64,
    expected: usize,
    /// Bytes received and verified.
    pub got: usize,
    /// The last `recv` returned fewer bytes than asked (or 0).
    pub last_short: bool,
    buf: Vec<u8>,
}

impl Incoming {
    /// Expects `expected` bytes of stream `stream` on `side`'s `conn`,
    /// read `piece` bytes (at most) per `recv`.
    pub fn new(side: Side, conn: ConnId, stream: u64, expected: usize, piece: usize) -> Self {
        Self {
            side,
            conn,
            stream,
            expected,
            got: 0,
            last_short: false,
            buf: vec![0u8; piece.clamp(1, MAX_PIECE)],
        }
    }

    /// Whether every byte arrived.
    pub fn done(&self) -> bool {
        self.got == self.expected
    }

    /// Reads up to `budget` bytes (one `recv` per piece), stopping at a
    /// short read; fails the check on a byte that differs or one too many.
    /// Returns the bytes read.
    #[track_caller]
    pub fn read<P: Pair>(&mut self, h: &mut Harness<P>, budget: usize) -> usize {
        let mut total = 0;
        while total < budget {
            let ask = self.buf.len().min(budget - total);
            let mut buf = std::mem::take(&mut self.buf);
            let n = h.recv(self.side, self.conn, &mut buf[..ask]);
            self.last_short = n < ask;
            if self.got + n > self.expected {
                h.fail(format!(
                    "{}: {} received {} bytes, {} were sent",
                    self.side,
                    self.conn,
                    self.got + n,
                    self.expected
                ));
            }
            if let Some(at) = Pattern::get().mismatch(self.stream, self.got, &buf[..n]) {
                h.fail(format!(
                    "{}: {} byte {at} of the stream differs from what was sent \
                     (lost, duplicated, reordered, corrupted or another connection's)",
                    self.side, self.conn
                ));
            }
            self.buf = buf;
            self.got += n;
            total += n;
            if self.last_short {
                break;
            }
        }
        total
    }
}

/// Echoes what one connection receives back on it, holding at most
/// `limit` bytes: beyond that it leaves input unread (so the transport's
/// readiness, not the echoer, must bring it back), and it keeps the
/// backpressure rule when sending.
#[derive(Debug)]
pub struct Echo {
    side: Side,
    conn: ConnId,
    limit: usize,
    pending: Vec<u8>,
    head: usize,
    /// A send came back short and no `Writable` has come since.
    pub blocked: bool,
    /// Short sends so far.
    pub short_sends: u64,
    /// Bytes echoed (taken by `send`).
    pub echoed: usize,
    buf: Vec<u8>,
}

impl Echo {
    /// An echoer for `side`'s `conn` holding at most `limit` bytes.
    pub fn new(side: Side, conn: ConnId, limit: usize) -> Self {
        Self {
            side,
            conn,
            limit,
            pending: Vec::new(),
            head: 0,
            blocked: false,
            short_sends: 0,
            echoed: 0,
            buf: vec![0u8; MAX_PIECE.min(limit.max(1))],
        }
    }

    /// Bytes read and not yet echoed.
    pub fn held(&self) -> usize {
        self.pending.len() - self.head
    }

    /// One round's work: on `Writable` unblock, on `Readable` read while
    /// there is room, then send what is held.
    pub fn step<P: Pair>(&mut self, h: &mut Harness<P>, r: &super::Round) {
        if r.writable(self.side, self.conn) {
            self.blocked = false;
        }
        if r.readable(self.side, self.conn) {
            while self.held() < self.limit {
                let ask = self.buf.len().min(self.limit - self.held());
                let mut buf = std::mem::take(&mut self.buf);
                let n = h.recv(self.side, self.conn, &mut buf[..ask]);
                self.pending.extend_from_slice(&buf[..n]);
                self.buf = buf;
                if n < ask {
                    break;
                }
            }
        }
        self.pump(h);
    }

    /// Sends what is held until a short send (nothing while blocked).
    pub fn pump<P: Pair>(&mut self, h: &mut Harness<P>) {
        let mut sent_any = false;
        while !self.blocked && self.held() > 0 {
            let (start, end) = (self.head, self.pending.len().min(self.head + MAX_PIECE));
            let n = h.send(self.side, self.conn, &self.pending[start..end]);
            sent_any |= n > 0;
            self.head += n;
            self.echoed += n;
            if n < end - start {
                self.blocked = true;
                self.short_sends += 1;
            }
        }
        if self.head == self.pending.len() {
            self.pending.clear();
            self.head = 0;
        } else if self.head > self.limit {
            self.pending.drain(..self.head);
            self.head = 0;
        }
        if sent_any {
            h.flush(self.side);
        }
    }
}
