//! The byte stream over RDMA SENDs, without any verbs: credits, send-slot
//! packing, receive reassembly and the in-band FIN. The verbs layer
//! ([`crate::transport`]) executes the [`Post`]s this produces and feeds
//! completions back; the unit tests here execute them by copying between
//! two channels.
//!
//! ```text
//!   write(bytes) ─► open send slot ─► sealed (full, or at flush) ─► queued
//!                                                         credits ≥ 2 │
//!                 peer's posted receive ◄── Post::Send { imm: credits }┘
//!   on_recv(slot, len, imm) ─► ready chunks ─► read(buf) ─► slot emptied
//!                              └ imm: credits the peer returns  └► Post::Recv
//! ```
//!
//! Credits: the peer posts `depth` receives and we start with `depth`
//! credits; every SEND we post consumes one of its receives, so costs one
//! credit. The peer returns credits in the immediate data of any SEND it
//! makes, counting the receives it re-posted since it last told us. Data
//! leaves only while we hold at least two credits: the last one is kept
//! for a credit-only message, so two peers that both ran dry can always
//! tell each other about freed buffers and never deadlock. Credit-only
//! messages are sent when a quarter of the peer's window (or half of it
//! counting credit-only receptions) waits to be returned and no data is
//! going that way to carry it.
//!
//! Wire format of the 32-bit immediate (host order here; big-endian on the
//! wire): bits 0..16 credits returned, bit 31 FIN (no more data follows),
//! the rest zero. A SEND's payload is stream bytes, nothing else.

use std::collections::VecDeque;

/// Immediate-data flag: the sender will send no more data.
pub const IMM_FIN: u32 = 1 << 31;
/// Immediate-data mask of the returned credits.
pub const IMM_CREDITS: u32 = 0xffff;
/// Largest receive depth a peer may advertise (fits the credit field).
pub const MAX_DEPTH: u16 = 4096;
/// Smallest receive depth that keeps data flowing (two plus a reserve).
pub const MIN_DEPTH: u16 = 4;

/// Sizes of one side of a connection and what the peer advertised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChanConfig {
    /// Receives this side keeps posted (the peer's credit window).
    pub recv_depth: u16,
    /// Send slots this side has (bytes it may buffer: `send_slots * msg_size`).
    pub send_slots: u16,
    /// Bytes per receive slot of this side.
    pub recv_size: u32,
    /// Bytes per send slot of this side.
    pub send_size: u32,
    /// Send work requests the queue pair holds.
    pub sq_depth: u16,
    /// Receives the peer keeps posted (our initial credits).
    pub peer_depth: u16,
    /// Bytes per receive slot of the peer: no SEND may be longer.
    pub peer_recv_size: u32,
}

/// A work request for the verbs layer to post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Post {
    /// Post receive slot `slot` again.
    Recv {
        /// The receive slot.
        slot: u16,
    },
    /// Post a SEND with immediate data.
    Send {
        /// The send slot holding the payload; `None` for a zero-length
        /// credit or FIN message.
        slot: Option<u16>,
        /// Payload length.
        len: u32,
        /// Immediate data (host order).
        imm: u32,
    },
}

/// The peer broke the protocol; the connection must be torn down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChanError {
    /// A SEND carried reserved immediate bits.
    #[error("reserved immediate bits set: {0:#010x}")]
    BadImmediate(u32),
    /// The peer returned more credits than it was ever given.
    #[error(
        "peer returned credits beyond its window ({held} held + {returned} returned > {window})"
    )]
    TooManyCredits {
        /// Credits held before.
        held: u32,
        /// Credits returned.
        returned: u32,
        /// Our view of the window.
        window: u32,
    },
    /// Data arrived after the peer's FIN.
    #[error("data after FIN")]
    DataAfterFin,
    /// A receive completed with more bytes than its buffer holds.
    #[error("receive of {0} bytes exceeds the buffer")]
    TooLong(u32),
    /// A completion named a slot that was not posted.
    #[error("completion for slot {0} that is not outstanding")]
    BadSlot(u16),
}

/// Buffer memory one slot at a time. The channel asks only for slots the
/// CPU owns (a completed receive not yet re-posted, a send slot not
/// posted), so an implementation over registered memory never hands out
/// a slice the adapter is writing.
pub trait Slots {
    /// Slot `index`, its whole size.
    fn slot(&mut self, index: u16) -> &mut [u8];
}

/// [`Slots`] over one contiguous buffer of equal slots.
#[derive(Debug)]
pub struct SliceSlots<'a> {
    mem: &'a mut [u8],
    size: usize,
}

impl<'a> SliceSlots<'a> {
    /// `mem` cut into slots of `size` bytes.
    pub fn new(mem: &'a mut [u8], size: usize) -> Self {
        Self { mem, size }
    }
}

impl Slots for SliceSlots<'_> {
    fn slot(&mut self, index: u16) -> &mut [u8] {
        let at = usize::from(index) * self.size;
        &mut self.mem[at..at + self.size]
    }
}

/// One received SEND waiting for the application.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    slot: u16,
    len: u32,
    off: u32,
}

/// Where the local FIN stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fin {
    None,
    Wanted,
    Posted,
    Acked,
}

/// One connection's stream state.
#[derive(Debug)]
pub struct Chan {
    cfg: ChanConfig,
    /// Largest payload of one SEND.
    msg_size: u32,
    /// SENDs we may still post.
    credits: u32,
    /// Re-posted data receives not yet reported to the peer.
    owed_data: u32,
    /// Re-posted credit-only receives not yet reported.
    owed_ctrl: u32,
    ready: VecDeque<Chunk>,
    ready_bytes: usize,
    to_repost: Vec<u16>,
    /// Receive slots the hardware holds (posted, not completed).
    recv_posted: Vec<bool>,
    peer_fin: bool,
    free: Vec<u16>,
    open: Option<(u16, u32)>,
    queued: VecDeque<(u16, u32)>,
    /// Send slots posted and not completed.
    send_posted: Vec<bool>,
    /// Send work requests outstanding (data and zero-length).
    outstanding: u32,
    fin: Fin,
    /// A write came back short; report writable when a slot frees.
    want_writable: bool,
}

impl Chan {
    /// A channel whose receive slots are all posted (the verbs layer posts
    /// them before connecting) and whose send slots are all free.
    pub fn new(cfg: ChanConfig) -> Self {
        Self {
            msg_size: cfg.send_size.min(cfg.peer_recv_size).max(1),
            credits: u32::from(cfg.peer_depth),
            owed_data: 0,
            owed_ctrl: 0,
            ready: VecDeque::with_capacity(usize::from(cfg.recv_depth)),
            ready_bytes: 0,
            to_repost: Vec::with_capacity(usize::from(cfg.recv_depth)),
            recv_posted: vec![true; usize::from(cfg.recv_depth)],
            peer_fin: false,
            free: (0..cfg.send_slots).rev().collect(),
            open: None,
            queued: VecDeque::with_capacity(usize::from(cfg.send_slots)),
            send_posted: vec![false; usize::from(cfg.send_slots)],
            outstanding: 0,
            fin: Fin::None,
            want_writable: false,
            cfg,
        }
    }

    /// Largest payload of one SEND (min of our slot and the peer's buffer).
    pub fn msg_size(&self) -> usize {
        self.msg_size as usize
    }

    /// Copies as much of `data` as free send slots take into them (`mem`
    /// hands out one send slot of `send_size` bytes at a time, and only
    /// slots the hardware does not hold are asked for). Returns the bytes
    /// taken; short means the slots are full and [`Chan::take_writable`]
    /// turns true once one frees. After [`Chan::shutdown`] nothing is taken.
    pub fn write<M: Slots + ?Sized>(&mut self, mem: &mut M, data: &[u8]) -> usize {
        if self.fin != Fin::None {
            return 0;
        }
        let mut taken = 0;
        while taken < data.len() {
            let (slot, used) = match self.open {
                Some(o) => o,
                None => match self.free.pop() {
                    Some(s) => (s, 0),
                    None => {
                        self.want_writable = true;
                        break;
                    }
                },
            };
            let room = self.msg_size - used;
            let n = (data.len() - taken).min(room as usize);
            let at = used as usize;
            mem.slot(slot)[at..at + n].copy_from_slice(&data[taken..taken + n]);
            taken += n;
            let used = used + n as u32;
            if used == self.msg_size {
                self.queued.push_back((slot, used));
                self.open = None;
            } else {
                self.open = Some((slot, used));
            }
        }
        taken
    }

    /// Copies received bytes out of the receive slots (`mem` hands out one
    /// of `recv_size` bytes at a time; only completed ones are asked for)
    /// into `buf`; emptied slots are queued for re-posting. Returns the
    /// bytes copied.
    pub fn read<M: Slots + ?Sized>(&mut self, mem: &mut M, buf: &mut [u8]) -> usize {
        let Ok(n) = warpwire_transport::recv_parts(buf, |max, put| {
            Ok::<_, std::convert::Infallible>(self.take(mem, max, put))
        });
        n
    }

    /// Like [`Chan::read`], handing at most `max` bytes to `put` in order,
    /// one receive slot at a time (appended to a buffer, without zeroing
    /// room for them first). Returns how many.
    pub fn take<M: Slots + ?Sized>(
        &mut self,
        mem: &mut M,
        max: usize,
        mut put: impl FnMut(&[u8]),
    ) -> usize {
        let mut done = 0;
        while done < max {
            let Some(c) = self.ready.front_mut() else {
                break;
            };
            let left = (c.len - c.off) as usize;
            let n = left.min(max - done);
            let at = c.off as usize;
            put(&mem.slot(c.slot)[at..at + n]);
            done += n;
            c.off += n as u32;
            if c.off == c.len {
                let slot = c.slot;
                self.ready.pop_front();
                self.to_repost.push(slot);
                self.owed_data += 1;
            }
        }
        self.ready_bytes -= done;
        done
    }

    /// Drops every received byte not yet read (a closing connection
    /// discards input), freeing the slots.
    pub fn discard_input(&mut self) {
        while let Some(c) = self.ready.pop_front() {
            self.to_repost.push(c.slot);
            self.owed_data += 1;
        }
        self.ready_bytes = 0;
    }

    /// Bytes received and not yet read.
    pub fn readable(&self) -> usize {
        self.ready_bytes
    }

    /// Whether the peer sent FIN and every byte before it has been read.
    pub fn at_eof(&self) -> bool {
        self.peer_fin && self.ready.is_empty()
    }

    /// A receive completed: `len` bytes in `slot`, immediate `imm`.
    pub fn on_recv(&mut self, slot: u16, len: u32, imm: u32) -> Result<(), ChanError> {
        match self.recv_posted.get_mut(usize::from(slot)) {
            Some(p) if *p => *p = false,
            _ => return Err(ChanError::BadSlot(slot)),
        }
        if imm & !(IMM_CREDITS | IMM_FIN) != 0 {
            return Err(ChanError::BadImmediate(imm));
        }
        // The adapter never completes a SEND longer than the buffer, but
        // a length is never trusted to index memory.
        if len > self.cfg.recv_size {
            return Err(ChanError::TooLong(len));
        }
        let returned = imm & IMM_CREDITS;
        let window = u32::from(self.cfg.peer_depth);
        // We hold `credits`; the peer holds the rest of the window as
        // receives our SENDs consumed. It cannot return more than those.
        if self.credits + returned > window {
            return Err(ChanError::TooManyCredits {
                held: self.credits,
                returned,
                window,
            });
        }
        self.credits += returned;
        if len > 0 {
            if self.peer_fin {
                return Err(ChanError::DataAfterFin);
            }
            self.ready.push_back(Chunk { slot, len, off: 0 });
            self.ready_bytes += len as usize;
        } else {
            self.to_repost.push(slot);
            self.owed_ctrl += 1;
        }
        if imm & IMM_FIN != 0 {
            self.peer_fin = true;
        }
        Ok(())
    }

    /// A send completed. `slot` is the send slot it used (None for a
    /// zero-length message).
    pub fn on_send_done(&mut self, slot: Option<u16>) -> Result<(), ChanError> {
        if let Some(s) = slot {
            match self.send_posted.get_mut(usize::from(s)) {
                Some(p) if *p => *p = false,
                _ => return Err(ChanError::BadSlot(s)),
            }
            self.free.push(s);
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        if self.fin == Fin::Posted && self.outstanding == 0 {
            self.fin = Fin::Acked;
        }
        Ok(())
    }

    /// Whether a short write happened and a slot has freed since; clears
    /// the flag.
    pub fn take_writable(&mut self) -> bool {
        if self.want_writable && (!self.free.is_empty() || self.open.is_some()) {
            self.want_writable = false;
            return true;
        }
        false
    }

    /// Asks for a FIN after everything written so far.
    pub fn shutdown(&mut self) {
        if self.fin == Fin::None {
            self.fin = Fin::Wanted;
        }
    }

    /// Whether our FIN has been posted and every send has completed: the
    /// peer holds all our bytes.
    pub fn fin_acked(&self) -> bool {
        self.fin == Fin::Acked
    }

    /// Credits held (for tests and stats).
    pub fn credits(&self) -> u32 {
        self.credits
    }

    /// Collects what to post now, in order: re-posted receives first (so
    /// the credits they return are real before any SEND announces them),
    /// then queued data while credits last (a partly filled slot is sealed
    /// when it can go at once: a flush ends coalescing unless the peer's
    /// window is closed), then the FIN, then a credit-only message if
    /// enough credits wait to be returned.
    pub fn drain(&mut self, out: &mut Vec<Post>) {
        for slot in self.to_repost.drain(..) {
            self.recv_posted[usize::from(slot)] = true;
            out.push(Post::Recv { slot });
        }
        let sq = u32::from(self.cfg.sq_depth);
        // A partly filled slot leaves now only if it can be posted now;
        // otherwise it keeps collecting writes until credits come back.
        if self.queued.is_empty()
            && self.credits >= 2
            && self.outstanding < sq
            && let Some((slot, len)) = self.open.take()
        {
            self.queued.push_back((slot, len));
        }
        while self.credits >= 2 && self.outstanding < sq {
            let Some((slot, len)) = self.queued.pop_front() else {
                break;
            };
            let imm = self.take_owed();
            self.credits -= 1;
            self.outstanding += 1;
            self.send_posted[usize::from(slot)] = true;
            out.push(Post::Send {
                slot: Some(slot),
                len,
                imm,
            });
        }
        let can_zero = self.credits >= 1 && self.outstanding < sq;
        if self.fin == Fin::Wanted && self.queued.is_empty() && self.open.is_none() && can_zero {
            let imm = self.take_owed() | IMM_FIN;
            self.credits -= 1;
            self.outstanding += 1;
            self.fin = Fin::Posted;
            out.push(Post::Send {
                slot: None,
                len: 0,
                imm,
            });
            return;
        }
        if self.credit_update_due() && can_zero {
            let imm = self.take_owed();
            self.credits -= 1;
            self.outstanding += 1;
            out.push(Post::Send {
                slot: None,
                len: 0,
                imm,
            });
        }
    }

    /// Whether [`Chan::drain`] has something to do.
    pub fn needs_drain(&self) -> bool {
        let sq = u32::from(self.cfg.sq_depth);
        let can_zero = self.credits >= 1 && self.outstanding < sq;
        let can_data = self.credits >= 2 && self.outstanding < sq;
        !self.to_repost.is_empty()
            || (self.open.is_some() && self.queued.is_empty() && can_data)
            || (!self.queued.is_empty() && can_data)
            || (self.fin == Fin::Wanted
                && self.queued.is_empty()
                && self.open.is_none()
                && can_zero)
            || (self.credit_update_due() && can_zero)
    }

    /// Whether enough credits wait to be returned to send them alone: a
    /// quarter of our window of data receives, or half of it counting
    /// credit-only receptions (which alone never trigger a reply to a
    /// reply, so two idle peers do not ping-pong updates).
    fn credit_update_due(&self) -> bool {
        let depth = u32::from(self.cfg.recv_depth);
        self.owed_data >= (depth / 4).max(1)
            || self.owed_data + self.owed_ctrl >= (depth / 2).max(1)
    }

    fn take_owed(&mut self) -> u32 {
        let n = (self.owed_data + self.owed_ctrl).min(IMM_CREDITS);
        // Whatever does not fit waits for the next message.
        let from_data = n.min(self.owed_data);
        self.owed_data -= from_data;
        self.owed_ctrl -= n - from_data;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// One endpoint of the simulated wire: a channel, its registered
    /// memory, its receive queue as the hardware sees it and the SENDs it
    /// has posted that the peer has not consumed yet.
    struct End {
        chan: Chan,
        send_mem: Vec<u8>,
        recv_mem: Vec<u8>,
        rq: VecDeque<u16>,
        /// Posted SENDs not yet delivered: slot, len, imm.
        wire: VecDeque<(Option<u16>, u32, u32)>,
        /// Delivered SENDs whose completion has not been reported.
        unacked: VecDeque<Option<u16>>,
        sent: Vec<u8>,
        got: Vec<u8>,
        posts: Vec<Post>,
    }

    fn cfg(depth: u16, slots: u16, size: u32, peer_depth: u16, peer_size: u32) -> ChanConfig {
        ChanConfig {
            recv_depth: depth,
            send_slots: slots,
            recv_size: size,
            send_size: size,
            // As RdmaConfig::sq_depth: the send slots and four more.
            sq_depth: slots + 4,
            peer_depth,
            peer_recv_size: peer_size,
        }
    }

    impl End {
        fn new(c: ChanConfig) -> Self {
            Self {
                send_mem: vec![0; c.send_slots as usize * c.send_size as usize],
                recv_mem: vec![0; c.recv_depth as usize * c.recv_size as usize],
                rq: (0..c.recv_depth).collect(),
                chan: Chan::new(c),
                wire: VecDeque::new(),
                unacked: VecDeque::new(),
                sent: Vec::new(),
                got: Vec::new(),
                posts: Vec::new(),
            }
        }

        fn write(&mut self, data: &[u8]) -> usize {
            let size = self.chan.cfg.send_size as usize;
            let n = self
                .chan
                .write(&mut SliceSlots::new(&mut self.send_mem, size), data);
            self.sent.extend_from_slice(&data[..n]);
            n
        }

        fn read(&mut self, max: usize) -> usize {
            let mut buf = vec![0; max];
            let size = self.chan.cfg.recv_size as usize;
            let n = self
                .chan
                .read(&mut SliceSlots::new(&mut self.recv_mem, size), &mut buf);
            self.got.extend_from_slice(&buf[..n]);
            n
        }

        fn drain(&mut self) {
            self.posts.clear();
            self.chan.drain(&mut self.posts);
            for p in std::mem::take(&mut self.posts) {
                match p {
                    Post::Recv { slot } => self.rq.push_back(slot),
                    Post::Send { slot, len, imm } => {
                        assert!(len as usize <= self.chan.msg_size());
                        assert!(
                            self.wire.len() + self.unacked.len() < self.chan.cfg.sq_depth as usize
                        );
                        self.wire.push_back((slot, len, imm));
                    }
                }
            }
        }

        fn ack_one(&mut self) -> bool {
            match self.unacked.pop_front() {
                Some(slot) => {
                    self.chan.on_send_done(slot).unwrap();
                    true
                }
                None => false,
            }
        }
    }

    /// Moves the next SEND of `from` into `to`'s next posted receive, as
    /// an RC queue pair does; a SEND with no receive posted is an overrun
    /// (receiver-not-ready), which credits must make impossible.
    fn deliver(from: &mut End, to: &mut End) -> bool {
        let Some((slot, len, imm)) = from.wire.pop_front() else {
            return false;
        };
        let r = to
            .rq
            .pop_front()
            .expect("SEND without a posted receive: credit overrun");
        let (fs, ts) = (
            from.chan.cfg.send_size as usize,
            to.chan.cfg.recv_size as usize,
        );
        assert!(len as usize <= ts, "SEND longer than the receive buffer");
        if let Some(s) = slot {
            let src = &from.send_mem[s as usize * fs..s as usize * fs + len as usize];
            to.recv_mem[r as usize * ts..r as usize * ts + len as usize].copy_from_slice(src);
        }
        to.chan.on_recv(r, len, imm).unwrap();
        from.unacked.push_back(slot);
        true
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Runs both directions until every byte written arrived, or panics
    /// if nothing can move (deadlock).
    fn settle(a: &mut End, b: &mut End) {
        for _ in 0..100_000 {
            a.drain();
            b.drain();
            let mut moved = deliver(a, b) | deliver(b, a);
            moved |= a.ack_one() | b.ack_one();
            moved |= a.read(1 << 16) > 0;
            moved |= b.read(1 << 16) > 0;
            if !moved && !a.chan.needs_drain() && !b.chan.needs_drain() {
                return;
            }
        }
        panic!("no progress");
    }

    #[test]
    fn small_writes_coalesce_until_drained() {
        let mut a = End::new(cfg(8, 4, 64, 8, 64));
        let mut b = End::new(cfg(8, 4, 64, 8, 64));
        for i in 0..10u8 {
            assert_eq!(a.write(&[i; 5]), 5);
        }
        a.drain();
        // 50 bytes in 64-byte slots: one SEND.
        assert_eq!(a.wire.len(), 1);
        settle(&mut a, &mut b);
        assert_eq!(b.got, a.sent);
    }

    #[test]
    fn a_large_write_is_split_into_peer_sized_messages() {
        // The peer's buffers (100 B) are smaller than our slots (256 B).
        let mut a = End::new(cfg(8, 4, 256, 8, 100));
        let mut b = End::new(cfg(8, 4, 100, 8, 256));
        let data = pattern(1000, 7);
        let mut off = 0;
        while off < data.len() {
            off += a.write(&data[off..]);
            settle(&mut a, &mut b);
        }
        assert_eq!(b.got, data);
    }

    #[test]
    fn full_slots_are_backpressure_then_writable() {
        let mut a = End::new(cfg(8, 2, 16, 8, 16));
        assert_eq!(a.write(&[1; 40]), 32);
        assert!(!a.chan.take_writable());
        a.drain();
        assert_eq!(a.wire.len(), 2);
        let mut b = End::new(cfg(8, 2, 16, 8, 16));
        deliver(&mut a, &mut b);
        a.ack_one();
        assert!(a.chan.take_writable());
        assert!(!a.chan.take_writable());
    }

    #[test]
    fn an_unread_receiver_stops_the_sender_at_its_window() {
        let mut a = End::new(cfg(4, 16, 8, 4, 8));
        let mut b = End::new(cfg(4, 16, 8, 4, 8));
        a.write(&[9; 128]);
        for _ in 0..50 {
            a.drain();
            b.drain();
            deliver(&mut a, &mut b);
            a.ack_one();
        }
        // Window 4, one kept in reserve: three SENDs, nothing more.
        assert_eq!(b.chan.readable(), 24);
        assert_eq!(a.chan.credits(), 1);
        settle(&mut a, &mut b);
        assert_eq!(b.got, a.sent);
    }

    #[test]
    fn fin_follows_the_data_and_is_acked() {
        let mut a = End::new(cfg(4, 4, 8, 4, 8));
        let mut b = End::new(cfg(4, 4, 8, 4, 8));
        a.write(b"last words!");
        a.chan.shutdown();
        assert_eq!(a.write(b"more"), 0);
        settle(&mut a, &mut b);
        assert_eq!(b.got, b"last words!");
        assert!(b.chan.at_eof());
        assert!(a.chan.fin_acked());
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut b = Chan::new(cfg(4, 4, 8, 4, 8));
        assert_eq!(b.on_recv(9, 1, 0), Err(ChanError::BadSlot(9)));
        let mut fresh = Chan::new(cfg(4, 4, 8, 4, 8));
        assert_eq!(fresh.on_recv(0, 9, 0), Err(ChanError::TooLong(9)));
        assert_eq!(
            b.on_recv(0, 1, 1 << 20),
            Err(ChanError::BadImmediate(1 << 20))
        );
        assert!(matches!(
            b.on_recv(1, 0, 1),
            Err(ChanError::TooManyCredits { returned: 1, .. })
        ));
        b.on_recv(2, 0, IMM_FIN).unwrap();
        assert_eq!(b.on_recv(3, 4, 0), Err(ChanError::DataAfterFin));
        // Completing a receive twice, or a send slot never posted.
        assert_eq!(b.on_recv(2, 0, 0), Err(ChanError::BadSlot(2)));
        assert_eq!(b.on_send_done(Some(0)), Err(ChanError::BadSlot(0)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        WriteA(usize),
        WriteB(usize),
        ReadA(usize),
        ReadB(usize),
        DrainA,
        DrainB,
        DeliverAB,
        DeliverBA,
        AckA,
        AckB,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1usize..300).prop_map(Op::WriteA),
            (1usize..300).prop_map(Op::WriteB),
            (1usize..200).prop_map(Op::ReadA),
            (1usize..200).prop_map(Op::ReadB),
            Just(Op::DrainA),
            Just(Op::DrainB),
            Just(Op::DeliverAB),
            Just(Op::DeliverBA),
            Just(Op::AckA),
            Just(Op::AckB),
        ]
    }

    proptest! {
        /// Any interleaving of writes, reads, posting, delivery and
        /// completions, in both directions at once, with asymmetric window
        /// and buffer sizes: no SEND ever finds no receive posted, nothing
        /// is lost, duplicated or reordered, and once the applications
        /// read everything the connection always drains (no deadlock).
        #[test]
        fn both_directions_never_overrun_lose_or_deadlock(
            da in MIN_DEPTH..12u16, db in MIN_DEPTH..12u16,
            sa in 1u16..6, sb in 1u16..6,
            za in 1u32..96, zb in 1u32..96,
            ops in proptest::collection::vec(op(), 1..400),
            fin in any::<bool>(),
        ) {
            let mut a = End::new(cfg(da, sa, za, db, zb));
            let mut b = End::new(cfg(db, sb, zb, da, za));
            let mut n = 0u8;
            for o in ops {
                match o {
                    Op::WriteA(k) => { n = n.wrapping_add(1); a.write(&pattern(k, n)); }
                    Op::WriteB(k) => { n = n.wrapping_add(1); b.write(&pattern(k, n)); }
                    Op::ReadA(k) => { a.read(k); }
                    Op::ReadB(k) => { b.read(k); }
                    Op::DrainA => a.drain(),
                    Op::DrainB => b.drain(),
                    Op::DeliverAB => { deliver(&mut a, &mut b); }
                    Op::DeliverBA => { deliver(&mut b, &mut a); }
                    Op::AckA => { a.ack_one(); }
                    Op::AckB => { b.ack_one(); }
                }
                prop_assert!(a.chan.credits() <= u32::from(db));
                prop_assert!(b.chan.credits() <= u32::from(da));
            }
            if fin {
                a.chan.shutdown();
            }
            settle(&mut a, &mut b);
            prop_assert_eq!(&b.got, &a.sent);
            prop_assert_eq!(&a.got, &b.sent);
            if fin {
                prop_assert!(b.chan.at_eof());
                prop_assert!(a.chan.fin_acked());
            }
            // Everything returned: both hold their full window again, but
            // for credit-only messages not yet answered (below threshold).
            prop_assert!(a.chan.credits() + u32::from(db) / 2 + 1 >= u32::from(db));
        }
    }
}
