//! The SACK blocks smoltcp leaves out, added to the ACKs it sends.
//!
//! smoltcp 0.14 puts one SACK block in an ACK, and only in the immediate
//! reply to an out-of-order or duplicate segment: its delayed ACKs carry
//! none, it keeps no list of the blocks it reported (RFC 2018 asks the
//! receiver to repeat the most recent ones in every ACK while data is
//! missing), and it sends no D-SACK (RFC 2883). A Linux sender on a lossy,
//! reordering path then sees one hole in a window of many, declares
//! received segments lost and resends them, and waits out its
//! retransmission timer when a resend is lost too; and without D-SACK it
//! never learns which resends were spurious, so it never undoes the
//! window cuts they caused.
//!
//! So every pure ACK a shard sends passes through [`Sack::on_ack`], which
//! remembers, per flow, the blocks smoltcp reported and writes the most
//! recent ones (up to what the option space holds) into every ACK that
//! does not cover them, the block of the segment that triggered the ACK
//! first, and a D-SACK block before them when that segment was a
//! duplicate.
//!
//! No block is invented: each is one smoltcp itself reported, that is
//! data its reassembly buffer holds, and smoltcp never discards accepted
//! out-of-order data (its reassembly refuses new ranges when full,
//! never old ones), so a remembered block stays true until the
//! cumulative ACK passes it, when it is dropped. SACKing data the
//! receiver does not hold would make the sender never resend it. A flow
//! gets memory only when its peer's SYN or SYN-ACK permitted SACK (and
//! smoltcp took the flow); a SYN that opens a new connection on the
//! four-tuple starts it afresh, and it goes when the flow ends.

use std::collections::HashMap;

use smoltcp::wire::{Ipv4Packet, TcpPacket};

use crate::demux::FlowKey;
use crate::gso;

/// Blocks remembered per flow.
const REMEMBER: usize = 4;
/// Flows kept at most (more go without added blocks).
const MAX_FLOWS: usize = 65_536;
/// TCP option space.
const OPTIONS_MAX: usize = 40;
/// Largest pure ACK, with a full option space: what [`Sack::on_ack`]
/// may grow a packet to.
pub(crate) const MAX_ACK: usize = 20 + 20 + OPTIONS_MAX;

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
const NOP: u8 = 1;
const SACK_PERMITTED: u8 = 4;
const SACK: u8 = 5;

/// A sequence range `[start, end)`.
type Block = (u32, u32);

/// `a < b` in sequence space.
fn lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn le(a: u32, b: u32) -> bool {
    a == b || lt(a, b)
}

/// Whether `inner` lies within `outer`.
fn within(inner: Block, outer: Block) -> bool {
    le(outer.0, inner.0) && le(inner.1, outer.1)
}

/// Whether two blocks overlap or touch.
fn meets(a: Block, b: Block) -> bool {
    le(a.0, b.1) && le(b.0, a.1)
}

/// What is kept per flow: the last cumulative ACK sent in a pure ACK,
/// and the blocks, most recently reported first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Flow {
    ack: Option<u32>,
    b: [Block; REMEMBER],
    n: usize,
}

impl Flow {
    fn blocks(&self) -> &[Block] {
        &self.b[..self.n]
    }

    /// Drops what the cumulative ACK `ack` covers, and any block ending
    /// more than `window` past it (kept too long to be trusted).
    fn acked(&mut self, ack: u32, window: u32) {
        self.ack = Some(ack);
        let mut n = 0;
        for i in 0..self.n {
            let mut b = self.b[i];
            if le(b.1, ack) || b.1.wrapping_sub(ack) > window {
                continue;
            }
            if lt(b.0, ack) {
                b.0 = ack;
            }
            self.b[n] = b;
            n += 1;
        }
        self.n = n;
    }

    /// `fresh`, as smoltcp reports it now, becomes the most recent block:
    /// the older reports it covers or joins (the range grew) go.
    fn report(&mut self, fresh: Block) {
        let mut kept = [(0, 0); REMEMBER];
        let mut n = 1;
        kept[0] = fresh;
        for &b in self.blocks() {
            if !meets(b, fresh) && n < REMEMBER {
                kept[n] = b;
                n += 1;
            }
        }
        self.b = kept;
        self.n = n;
    }

    /// Whether `seg` was all received before this ACK: below the last
    /// cumulative ACK sent (and not more than `window` below it), or
    /// inside a block already reported.
    fn holds(&self, seg: Block, window: u32) -> bool {
        self.ack
            .is_some_and(|a| le(seg.1, a) && a.wrapping_sub(seg.0) <= window)
            || self.blocks().iter().any(|&b| within(seg, b))
    }
}

/// Per-flow SACK memory and its counters; see the module docs.
#[derive(Debug)]
pub(crate) struct Sack {
    /// Flows whose peer sent SACK-permitted in its SYN or SYN-ACK (keyed
    /// hash, as the demux's: peers choose their four-tuples).
    flows: HashMap<FlowKey, Flow, foldhash::quality::RandomState>,
    /// The receive buffer: no block ends further than this past the
    /// cumulative ACK, and no duplicate starts further than this below it
    /// (a bound against a block or an ACK kept too long, as when a flow's
    /// ACKs all ride on data for gigabytes and its memory is not updated).
    window: u32,
    /// The data segment being delivered, for a D-SACK in its reply.
    rx: Option<(FlowKey, Block)>,
    /// ACKs that got blocks smoltcp did not put in, and D-SACK blocks.
    pub added: u64,
    pub dsack: u64,
}

/// The parts of a pure ACK this module reads.
struct Ack {
    ihl: usize,
    thl: usize,
    key: FlowKey,
    ack: u32,
    flags: u8,
}

fn parse_ack(p: &[u8]) -> Option<Ack> {
    let (ihl, thl, total) = gso::headers(p)?;
    if total != ihl + thl {
        return None; // carries data (or is not TCP)
    }
    let t = &p[ihl..];
    Some(Ack {
        ihl,
        thl,
        key: FlowKey {
            remote: std::net::Ipv4Addr::new(p[16], p[17], p[18], p[19]),
            remote_port: u16::from_be_bytes([t[2], t[3]]),
            local_port: u16::from_be_bytes([t[0], t[1]]),
        },
        ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        flags: t[13],
    })
}

/// Whether the TCP SYN or SYN-ACK in the IPv4 packet `p` carries the
/// SACK-permitted option.
pub(crate) fn permits_sack(p: &[u8]) -> bool {
    let Some((ihl, thl, _)) = gso::headers(p) else {
        return false;
    };
    gso::tcp_options(&p[ihl + 20..ihl + thl])
        .map_while(Result::ok)
        .any(|(kind, _, value)| kind == SACK_PERMITTED && value.is_empty())
}

/// A TCP header's options other than SACK and padding, in order, and its
/// SACK blocks (four at most fit in the option space).
struct Options {
    other: [u8; OPTIONS_MAX],
    other_len: usize,
    sack: [Block; 4],
    sack_n: usize,
}

impl Options {
    /// `None` when the options do not parse.
    fn parse(opts: &[u8]) -> Option<Self> {
        let mut o = Self {
            other: [0; OPTIONS_MAX],
            other_len: 0,
            sack: [(0, 0); 4],
            sack_n: 0,
        };
        for opt in gso::tcp_options(opts) {
            let (kind, at, value) = opt.ok()?;
            if kind == SACK {
                if value.len() % 8 != 0 || o.sack_n > 0 {
                    return None;
                }
                for b in value.chunks_exact(8).take(4) {
                    o.sack[o.sack_n] = (
                        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                        u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                    );
                    o.sack_n += 1;
                }
            } else {
                let len = 2 + value.len();
                o.other[o.other_len..o.other_len + len].copy_from_slice(&opts[at..at + len]);
                o.other_len += len;
            }
        }
        Some(o)
    }

    fn sack(&self) -> &[Block] {
        &self.sack[..self.sack_n]
    }
}

impl Sack {
    /// SACK memory for connections with receive buffers of `rx_buffer`
    /// bytes.
    pub(crate) fn new(rx_buffer: usize) -> Self {
        Self {
            flows: HashMap::default(),
            window: u32::try_from(rx_buffer).unwrap_or(u32::MAX),
            rx: None,
            added: 0,
            dsack: 0,
        }
    }

    /// The peer of `key` sent a SYN or SYN-ACK, with SACK-permitted or
    /// not: a connection starts on the four-tuple, with nothing kept, and
    /// only a peer that permits SACK ever gets blocks (RFC 2018).
    pub(crate) fn peer_syn(&mut self, key: FlowKey, sack_permitted: bool) {
        if sack_permitted && (self.flows.len() < MAX_FLOWS || self.flows.contains_key(&key)) {
            self.flows.insert(key, Flow::default());
        } else {
            self.flows.remove(&key);
        }
    }

    /// A data segment `[seq, end)` of `key` is about to reach smoltcp; its
    /// immediate reply, if any, is written before [`Sack::rx_done`].
    pub(crate) fn rx_segment(&mut self, key: FlowKey, seq: u32, end: u32) {
        self.rx = Some((key, (seq, end)));
    }

    /// The segment of [`Sack::rx_segment`] has been processed (and
    /// answered, or not).
    pub(crate) fn rx_done(&mut self) {
        self.rx = None;
    }

    /// The flow `key` ended: what was kept of it goes.
    pub(crate) fn forget(&mut self, key: &FlowKey) {
        self.flows.remove(key);
    }

    /// Flows with something kept.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.flows.len()
    }

    /// The IPv4 packet `p[..len]` smoltcp wrote, with room after it up to
    /// `p.len()`: when it is a pure ACK of a flow with SACK blocks to
    /// report, its options are rewritten to carry them (IP length and
    /// header checksum updated, the TCP checksum too unless
    /// `leave_checksum`: another layer fills it). Returns the packet's
    /// length, changed or not. Anything else (data, SYN, RST, what does
    /// not parse, a flow whose peer did not permit SACK) passes as it is.
    pub(crate) fn on_ack(&mut self, p: &mut [u8], len: usize, leave_checksum: bool) -> usize {
        let Some(a) = parse_ack(&p[..len]) else {
            return len;
        };
        // A SYN or RST passes as it is; the memory goes with the flow
        // (smoltcp also sends a RST that does not end its connection).
        if a.flags & (SYN | RST) != 0 || a.flags & ACK == 0 {
            return len;
        }
        let Some(opts) = Options::parse(&p[a.ihl + 20..a.ihl + a.thl]) else {
            return len;
        };
        let window = self.window;
        let Some(flow) = self.flows.get_mut(&a.key) else {
            return len;
        };
        // A D-SACK when the segment this ACK answers was all received
        // before (checked before the ACK and smoltcp's block update the
        // flow). The segment is taken: no later ACK can answer it.
        let rx = self.rx.take_if(|(k, _)| *k == a.key).map(|(_, seg)| seg);
        let dsack = rx.filter(|&seg| lt(seg.0, seg.1) && flow.holds(seg, window));
        flow.acked(a.ack, window);
        // smoltcp reports one block: the one holding the segment that
        // triggered the ACK, else its lowest.
        for &b in opts.sack().iter().rev() {
            if lt(a.ack, b.0) && lt(b.0, b.1) && b.1.wrapping_sub(a.ack) <= window {
                flow.report(b);
            }
        }
        let mut out = [(0, 0); 5];
        let mut n = 0;
        for &b in dsack.iter().chain(flow.blocks()) {
            out[n] = b;
            n += 1;
        }
        // What fits: the other options, two NOPs and the SACK option's
        // kind and length, then 8 bytes a block.
        let n = n.min(OPTIONS_MAX.saturating_sub(opts.other_len + 4) / 8);
        let out = &out[..n];
        // Never fewer blocks than smoltcp wrote (no room left by other
        // options), and nothing to do when they are the same.
        // (So at least one block is written from here on.)
        if n < opts.sack_n || out == opts.sack() {
            return len;
        }
        let opt_len = opts.other_len + 4 + 8 * n;
        let thl = 20 + opt_len.div_ceil(4) * 4;
        let total = a.ihl + thl;
        if total > p.len() {
            return len;
        }
        let o = &mut p[a.ihl + 20..total];
        o[..opts.other_len].copy_from_slice(&opts.other[..opts.other_len]);
        let mut i = opts.other_len;
        o[i..i + 4].copy_from_slice(&[NOP, NOP, SACK, (2 + 8 * n) as u8]);
        i += 4;
        for &(s, e) in out {
            o[i..i + 4].copy_from_slice(&s.to_be_bytes());
            o[i + 4..i + 8].copy_from_slice(&e.to_be_bytes());
            i += 8;
        }
        o[i..].fill(NOP);
        if dsack.is_some() {
            self.dsack += 1;
        }
        if n - usize::from(dsack.is_some()) > opts.sack_n {
            self.added += 1;
        }
        p[a.ihl + 12] = ((thl / 4) as u8) << 4 | (p[a.ihl + 12] & 0x0f);
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        Ipv4Packet::new_unchecked(&mut p[..total]).fill_checksum();
        if !leave_checksum {
            let (src, dst) = gso::addrs(p);
            TcpPacket::new_unchecked(&mut p[a.ihl..total]).fill_checksum(&src, &dst);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        IpAddress, IpProtocol, Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber,
    };

    const PEER: Ipv4Address = Ipv4Address::new(10, 77, 0, 2);
    const US: Ipv4Address = Ipv4Address::new(10, 77, 0, 1);

    /// SACK memory for 1 MiB buffers, with the peer of `key()` permitting SACK.
    fn sack() -> Sack {
        let mut s = Sack::new(1 << 20);
        s.peer_syn(key(), true);
        s
    }

    fn key() -> FlowKey {
        FlowKey {
            remote: PEER,
            remote_port: 40000,
            local_port: 7077,
        }
    }

    /// What smoltcp sends: an ACK from us to the peer, with `sack`.
    fn ack(control: TcpControl, ack: u32, sack: [Option<(u32, u32)>; 3]) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 7077,
            dst_port: 40000,
            control,
            seq_number: TcpSeqNumber(5),
            ack_number: Some(TcpSeqNumber(ack as i32)),
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: sack,
            timestamp: None,
            payload: &[],
        };
        let ip = Ipv4Repr {
            src_addr: US,
            dst_addr: PEER,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; MAX_ACK];
        let caps = ChecksumCapabilities::default();
        let mut i = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.emit(&mut i, &caps);
        let mut t = TcpPacket::new_unchecked(i.payload_mut());
        tcp.emit(&mut t, &IpAddress::Ipv4(US), &IpAddress::Ipv4(PEER), &caps);
        buf.truncate(ip.buffer_len() + tcp.buffer_len());
        buf
    }

    /// Runs `on_ack` on `p`; returns the ACK number and SACK blocks of the
    /// result, after checking both checksums.
    fn pass(s: &mut Sack, mut p: Vec<u8>) -> (u32, Vec<(u32, u32)>) {
        let len = p.len();
        p.resize(MAX_ACK, 0xee);
        let n = s.on_ack(&mut p, len, false);
        p.truncate(n);
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(usize::from(ip.total_len()), n);
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(t.verify_checksum(&IpAddress::Ipv4(US), &IpAddress::Ipv4(PEER)));
        let r = TcpRepr::parse(
            &t,
            &IpAddress::Ipv4(US),
            &IpAddress::Ipv4(PEER),
            &ChecksumCapabilities::default(),
        )
        .unwrap();
        let mut blocks: Vec<(u32, u32)> = r.sack_ranges.iter().flatten().copied().collect();
        // smoltcp parses three blocks at most; read a fourth ourselves.
        let all = Options::parse(&p[40..usize::from(t.header_len()) + 20]).unwrap();
        if all.sack_n > blocks.len() {
            blocks = all.sack().to_vec();
        }
        (r.ack_number.unwrap().0 as u32, blocks)
    }

    #[test]
    fn blocks_reported_once_are_repeated_most_recent_first_until_acked() {
        let mut s = sack();
        // Holes at 100..200 and 300..400: smoltcp reports each block once.
        assert_eq!(
            pass(
                &mut s,
                ack(TcpControl::None, 100, [Some((200, 300)), None, None])
            ),
            (100, vec![(200, 300)])
        );
        assert_eq!(
            pass(
                &mut s,
                ack(TcpControl::None, 100, [Some((400, 500)), None, None])
            ),
            (100, vec![(400, 500), (200, 300)])
        );
        // A delayed ACK without SACK: both blocks, the latest first.
        assert_eq!(
            pass(&mut s, ack(TcpControl::None, 100, [None; 3])),
            (100, vec![(400, 500), (200, 300)])
        );
        // The first block grew: it replaces its older report.
        assert_eq!(
            pass(
                &mut s,
                ack(TcpControl::None, 100, [Some((200, 350)), None, None])
            ),
            (100, vec![(200, 350), (400, 500)])
        );
        // The hole at 100 filled: the first block is acked.
        assert_eq!(
            pass(&mut s, ack(TcpControl::None, 350, [None; 3])),
            (350, vec![(400, 500)])
        );
        // Everything acked: plain ACKs pass unchanged.
        let plain = ack(TcpControl::None, 500, [None; 3]);
        assert_eq!(pass(&mut s, plain.clone()), (500, vec![]));
        let mut p = plain.clone();
        let n = s.on_ack(&mut p, plain.len(), false);
        assert_eq!(&p[..n], &plain[..]);
        // The flow's end forgets it: nothing is added after.
        assert_eq!(s.remembered(), 1);
        s.forget(&key());
        assert_eq!(s.remembered(), 0);
        assert_eq!(
            pass(
                &mut s,
                ack(TcpControl::None, 500, [Some((600, 700)), None, None])
            ),
            (500, vec![(600, 700)])
        );
        assert_eq!(
            pass(&mut s, ack(TcpControl::None, 500, [None; 3])),
            (500, vec![])
        );
    }

    #[test]
    fn a_peer_without_sack_permitted_gets_no_blocks_and_no_dsack() {
        let mut s = Sack::new(1 << 20);
        s.peer_syn(key(), false);
        pass(&mut s, ack(TcpControl::None, 100, [None; 3]));
        s.rx_segment(key(), 50, 100);
        assert_eq!(
            pass(&mut s, ack(TcpControl::None, 100, [None; 3])),
            (100, vec![])
        );
        s.rx_done();
        assert_eq!((s.dsack, s.added, s.remembered()), (0, 0, 0));
        // A SYN with the option, after one without, starts the memory.
        s.peer_syn(key(), true);
        pass(
            &mut s,
            ack(TcpControl::None, 100, [Some((200, 300)), None, None]),
        );
        assert_eq!(
            pass(&mut s, ack(TcpControl::None, 100, [None; 3])),
            (100, vec![(200, 300)])
        );
    }

    #[test]
    fn nothing_is_reported_beyond_the_receive_window() {
        let mut s = Sack::new(1000);
        s.peer_syn(key(), true);
        // A block ending more than the buffer past the ACK is not kept
        // (smoltcp's own report of it passes as smoltcp wrote it).
        assert_eq!(
            pass(
                &mut s,
                ack(TcpControl::None, 100, [Some((900, 1200)), None, None])
            ),
            (100, vec![(900, 1200)])
        );
        assert_eq!(
            pass(&mut s, ack(TcpControl::None, 100, [None; 3])),
            (100, vec![])
        );
        pass(
            &mut s,
            ack(TcpControl::None, 100, [Some((200, 300)), None, None]),
        );
        // An ACK kept far too long (the stream moved on 3 GiB meanwhile)
        // does not make new data look like a duplicate, nor keep old blocks.
        let far = 100u32.wrapping_add(3 << 30);
        s.rx_segment(key(), far, far + 50);
        assert_eq!(
            pass(&mut s, ack(TcpControl::None, far, [None; 3])),
            (far, vec![])
        );
        s.rx_done();
        assert_eq!(s.dsack, 0);
    }

    #[test]
    fn at_most_four_blocks_fit_and_sequence_numbers_wrap() {
        let mut s = sack();
        let base = u32::MAX - 250;
        for i in 0..6u32 {
            let b = (
                base.wrapping_add(100 * i + 50),
                base.wrapping_add(100 * i + 80),
            );
            pass(&mut s, ack(TcpControl::None, base, [Some(b), None, None]));
        }
        let (_, blocks) = pass(&mut s, ack(TcpControl::None, base, [None; 3]));
        let want: Vec<(u32, u32)> = (2..6u32)
            .rev()
            .map(|i| {
                (
                    base.wrapping_add(100 * i + 50),
                    base.wrapping_add(100 * i + 80),
                )
            })
            .collect();
        assert_eq!(blocks, want);
        // An ACK past the wrap drops the blocks below it.
        let ack_to = base.wrapping_add(300);
        let (_, blocks) = pass(&mut s, ack(TcpControl::None, ack_to, [None; 3]));
        assert_eq!(blocks, want[..3].to_vec());
    }

    #[test]
    fn a_duplicate_segment_is_reported_with_a_dsack_block_first() {
        let mut s = sack();
        pass(&mut s, ack(TcpControl::None, 100, [None; 3]));
        // All below the cumulative ACK sent before.
        s.rx_segment(key(), 50, 100);
        assert_eq!(
            pass(&mut s, ack(TcpControl::None, 100, [None; 3])),
            (100, vec![(50, 100)])
        );
        s.rx_done();
        assert_eq!(s.dsack, 1);
        // Inside a block already reported.
        pass(
            &mut s,
            ack(TcpControl::None, 100, [Some((200, 300)), None, None]),
        );
        s.rx_segment(key(), 220, 260);
        assert_eq!(
            pass(
                &mut s,
                ack(TcpControl::None, 100, [Some((200, 300)), None, None])
            ),
            (100, vec![(220, 260), (200, 300)])
        );
        s.rx_done();
        // A new out-of-order segment is no duplicate.
        s.rx_segment(key(), 300, 350);
        assert_eq!(
            pass(
                &mut s,
                ack(TcpControl::None, 100, [Some((200, 350)), None, None])
            ),
            (100, vec![(200, 350)])
        );
        s.rx_done();
        // Another flow's segment gives no D-SACK here.
        let other = FlowKey {
            remote_port: 1,
            ..key()
        };
        s.rx_segment(other, 0, 10);
        assert_eq!(
            pass(&mut s, ack(TcpControl::None, 100, [None; 3])),
            (100, vec![(200, 350)])
        );
        // Nor does the segment that fills the hole (the ACK moves past it).
        s.rx_segment(key(), 100, 200);
        assert_eq!(
            pass(&mut s, ack(TcpControl::None, 350, [None; 3])),
            (350, vec![])
        );
        s.rx_done();
        assert_eq!(s.dsack, 2);
    }

    #[test]
    fn syn_rst_and_data_packets_pass_unchanged() {
        let mut s = sack();
        pass(
            &mut s,
            ack(TcpControl::None, 100, [Some((200, 300)), None, None]),
        );
        assert_eq!(s.remembered(), 1);
        let rst = ack(TcpControl::Rst, 100, [None; 3]);
        let mut p = rst.clone();
        p.resize(MAX_ACK, 0);
        assert_eq!(s.on_ack(&mut p, rst.len(), false), rst.len());
        assert_eq!(&p[..rst.len()], &rst[..]);
        // The memory goes with the flow, not with a RST.
        assert_eq!(s.remembered(), 1);
        s.forget(&key());
        assert_eq!(s.remembered(), 0);
        // Our SYN-ACK passes as it is and keeps what the peer's SYN set up.
        s.peer_syn(key(), true);
        let synack = ack(TcpControl::Syn, 100, [None; 3]);
        let mut p = synack.clone();
        p.resize(MAX_ACK, 0);
        assert_eq!(s.on_ack(&mut p, synack.len(), false), synack.len());
        assert_eq!(&p[..synack.len()], &synack[..]);
        assert_eq!(s.remembered(), 1);
        // A packet with data is never rewritten.
        pass(
            &mut s,
            ack(TcpControl::None, 100, [Some((200, 300)), None, None]),
        );
        let mut data = ack(TcpControl::None, 100, [None; 3]);
        data.extend_from_slice(b"payload");
        let total = data.len() as u16;
        data[2..4].copy_from_slice(&total.to_be_bytes());
        let n = data.len();
        data.resize(MAX_ACK + n, 0);
        let before = data.clone();
        assert_eq!(s.on_ack(&mut data, n, false), n);
        assert_eq!(data, before);
    }

    #[test]
    fn without_room_or_with_a_garbled_packet_nothing_changes() {
        let mut s = sack();
        pass(
            &mut s,
            ack(TcpControl::None, 100, [Some((200, 300)), None, None]),
        );
        let plain = ack(TcpControl::None, 100, [None; 3]);
        let mut p = plain.clone();
        assert_eq!(s.on_ack(&mut p, plain.len(), false), plain.len());
        assert_eq!(p, plain);
        for cut in 0..plain.len() {
            let mut p = plain[..cut].to_vec();
            p.resize(MAX_ACK, 0);
            let _ = s.on_ack(&mut p, cut, false);
        }
        // Other options fill the space but for smoltcp's one block: with a
        // D-SACK due, nothing fits beside it, and smoltcp's block stays.
        pass(&mut s, ack(TcpControl::None, 100, [None; 3]));
        let mut full = ack(TcpControl::None, 100, [None; 3]);
        full.push(30);
        full.push(30);
        full.extend_from_slice(&[7; 28]);
        full.extend_from_slice(&[SACK, 10, 0, 0, 0, 200, 0, 0, 1, 44]);
        full[32] = 15 << 4;
        full[2..4].copy_from_slice(&80u16.to_be_bytes());
        let before = full.clone();
        full.resize(MAX_ACK + 20, 0);
        s.rx_segment(key(), 50, 100);
        assert_eq!(s.on_ack(&mut full, 80, false), 80);
        s.rx_done();
        assert_eq!(&full[..80], &before[..]);
        let mut bad = ack(TcpControl::None, 100, [Some((200, 300)), None, None]);
        let at = (40..bad.len()).find(|&i| bad[i] == SACK).unwrap();
        bad[at + 1] = 9; // the SACK option's length, not 2 + 8n
        let n = bad.len();
        bad.resize(MAX_ACK, 0);
        assert_eq!(s.on_ack(&mut bad, n, false), n);
    }
}
