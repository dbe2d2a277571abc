//! Segmentation offload in software, the way a NIC's TSO works.
//!
//! smoltcp sends one segment per socket per egress pass, and a pass costs
//! far more than the bytes it moves: at 1,460 bytes a segment, its
//! per-segment work (the socket walk, the window and sequence logic,
//! the IP and TCP emit) and not the copies bound a bulk sender. So each
//! shard interface is told a 64 KiB IP MTU, and a peer's MSS option,
//! on the SYN or SYN-ACK it sends, is raised to a multiple of the wire's
//! segment size (`super_mss`) before smoltcp reads it: smoltcp then emits
//! up to that many bytes per pass in one large packet, and [`Split`] cuts
//! it into wire-sized segments (headers copied, lengths, IP ident,
//! sequence numbers and both checksums set per segment, FIN and PSH on
//! the last one only), which is what a kernel's GSO or a NIC's TSO sends.
//!
//! What the peer sees is unchanged: segments no larger than its MSS and
//! our MTU, our own SYN's MSS option lowered back to the wire's
//! ([`finish_tcp`] on the way out). A peer whose MSS is below the wire's
//! (or that sends none) keeps it, so smoltcp never makes a large packet
//! for that flow and nothing needs cutting. smoltcp also sends an
//! immediate ACK after every `remote_mss` bytes received, so `super_mss`
//! stays a fraction of the receive buffer (see `StackConfig`).
//!
//! Every function here takes an IPv4 packet (no Ethernet header) and
//! never panics on malformed input: it declines instead.

use smoltcp::wire::{IpAddress, Ipv4Address, Ipv4Packet, TcpPacket};

/// The IP MTU the shard interfaces are given: the largest IPv4 packet.
pub(crate) const SUPER_MTU: usize = 65_535;

/// IPv4 protocol number of TCP.
const TCP: u8 = 6;
/// TCP flags.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const PSH: u8 = 0x08;

/// Header lengths and total length of an IPv4 TCP packet, `(ip, tcp,
/// total)`, when `p` holds one (and perhaps a link layer's padding after
/// it) that is not a fragment.
pub(crate) fn headers(p: &[u8]) -> Option<(usize, usize, usize)> {
    if p.len() < 40 || p[0] >> 4 != 4 || p[9] != TCP {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    // More-fragments set or a fragment offset: not a whole segment.
    if ihl < 20 || total > p.len() || u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
        return None;
    }
    let thl = usize::from(p.get(ihl + 12)? >> 4) * 4;
    (thl >= 20 && ihl + thl <= total).then_some((ihl, thl, total))
}

pub(crate) fn addrs(p: &[u8]) -> (IpAddress, IpAddress) {
    let a = |o: usize| IpAddress::Ipv4(Ipv4Address::new(p[o], p[o + 1], p[o + 2], p[o + 3]));
    (a(12), a(16))
}

/// One's-complement 16-bit addition.
fn add(a: u16, b: u16) -> u16 {
    let (s, carry) = a.overflowing_add(b);
    s + u16::from(carry)
}

/// The options of a TCP header: `opts` is what follows its fixed 20
/// bytes. Yields `(kind, offset, value)` per option, NOPs skipped, up to
/// an end-of-list; an option whose length is malformed yields one
/// `Err(())` and ends the walk. The one option parser of the stack's
/// header rewrites (here and in `sack.rs`).
pub(crate) fn tcp_options(opts: &[u8]) -> TcpOptions<'_> {
    TcpOptions { opts, i: 0 }
}

/// One option of [`tcp_options`]: `(kind, offset, value)`, or `Err(())`
/// for a malformed length.
pub(crate) type TcpOption<'a> = Result<(u8, usize, &'a [u8]), ()>;

/// See [`tcp_options`].
pub(crate) struct TcpOptions<'a> {
    opts: &'a [u8],
    i: usize,
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = TcpOption<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.i < self.opts.len() {
            let at = self.i;
            match self.opts[at] {
                0 => break,
                1 => self.i += 1,
                kind => {
                    let len = self.opts.get(at + 1).map_or(0, |&l| usize::from(l));
                    if len < 2 || at + len > self.opts.len() {
                        self.i = self.opts.len();
                        return Some(Err(()));
                    }
                    self.i = at + len;
                    return Some(Ok((kind, at, &self.opts[at + 2..at + len])));
                }
            }
        }
        self.i = self.opts.len();
        None
    }
}

/// Where the value of the MSS option of `tcp` (a TCP header of `thl`
/// bytes and what follows) starts, if it is a SYN (with or without ACK)
/// that carries one.
fn syn_mss_at(tcp: &[u8], thl: usize) -> Option<usize> {
    if tcp[13] & SYN == 0 {
        return None;
    }
    for o in tcp_options(tcp.get(20..thl)?) {
        let (kind, at, value) = o.ok()?;
        if kind == 2 && value.len() == 2 {
            return Some(20 + at + 2);
        }
    }
    None
}

/// If `p` is a TCP SYN (with or without ACK) carrying an MSS option,
/// replaces the option's value with `to(old)` and keeps the TCP checksum
/// valid (RFC 1624's incremental update: a complete checksum stays
/// complete). Returns the old value.
pub(crate) fn set_syn_mss(p: &mut [u8], to: impl FnOnce(u16) -> u16) -> Option<u16> {
    let (ihl, thl, total) = headers(p)?;
    let tcp = &mut p[ihl..total];
    let at = syn_mss_at(tcp, thl)?;
    let old = u16::from_be_bytes([tcp[at], tcp[at + 1]]);
    let new = to(old);
    if new != old {
        tcp[at..at + 2].copy_from_slice(&new.to_be_bytes());
        // At an odd offset the value's bytes sit in two checksum words,
        // each in the other half: the sum of byte-swapped words is the
        // byte-swapped sum.
        let (m, m2) = if at % 2 == 0 {
            (old, new)
        } else {
            (old.swap_bytes(), new.swap_bytes())
        };
        let hc = u16::from_be_bytes([tcp[16], tcp[17]]);
        let sum = !add(add(!hc, !m), m2);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    }
    Some(old)
}

/// What a TCP packet smoltcp emitted needs before the wire, with one
/// parse: a SYN's MSS option at most `wire_mss` (smoltcp offers its
/// interface's large MTU), then, with `checksum`, its TCP checksum (else
/// the field stays as smoltcp left it, for a device that fills it).
pub(crate) fn finish_tcp(p: &mut [u8], wire_mss: u16, checksum: bool) {
    let Some((ihl, thl, total)) = headers(p) else {
        return;
    };
    let tcp = &mut p[ihl..total];
    if let Some(at) = syn_mss_at(tcp, thl) {
        let mss = u16::from_be_bytes([tcp[at], tcp[at + 1]]).min(wire_mss);
        tcp[at..at + 2].copy_from_slice(&mss.to_be_bytes());
    }
    if checksum {
        let (src, dst) = addrs(p);
        TcpPacket::new_unchecked(&mut p[ihl..total]).fill_checksum(&src, &dst);
    }
}

/// How one large TCP packet is cut into segments of at most `ip_mtu`
/// bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split {
    ihl: usize,
    /// IP and TCP headers, copied into every segment.
    hdr: usize,
    payload: usize,
    /// Payload bytes per segment (the last may carry fewer).
    seg: usize,
}

impl Split {
    /// The plan for `p`, or `None` when it is not exactly one IPv4 TCP
    /// packet with a payload or its headers leave no room for one in
    /// `ip_mtu`.
    pub(crate) fn new(p: &[u8], ip_mtu: usize) -> Option<Self> {
        let (ihl, thl, total) = headers(p).filter(|h| h.2 == p.len())?;
        let hdr = ihl + thl;
        let seg = ip_mtu.checked_sub(hdr).filter(|&s| s > 0)?;
        let payload = total - hdr;
        (payload > 0).then_some(Self {
            ihl,
            hdr,
            payload,
            seg,
        })
    }

    /// Segments in all.
    pub(crate) fn count(&self) -> usize {
        self.payload.div_ceil(self.seg)
    }

    fn chunk(&self, i: usize) -> (usize, usize) {
        let off = i * self.seg;
        (off, self.seg.min(self.payload - off))
    }

    /// IP length of segment `i` (`i < count()`).
    pub(crate) fn len(&self, i: usize) -> usize {
        self.hdr + self.chunk(i).1
    }

    /// Writes segment `i` of `p` into `out` (exactly [`Split::len`]
    /// bytes), with its TCP checksum unless the device offloads it.
    pub(crate) fn write(&self, p: &[u8], i: usize, out: &mut [u8], tcp_checksum: bool) {
        let (off, n) = self.chunk(i);
        let total = self.hdr + n;
        out[..self.hdr].copy_from_slice(&p[..self.hdr]);
        out[self.hdr..total].copy_from_slice(&p[self.hdr + off..self.hdr + off + n]);
        // IP: this segment's length, the next ident (as Linux's GSO does).
        let ident = u16::from_be_bytes([p[4], p[5]]).wrapping_add(i as u16);
        out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        out[4..6].copy_from_slice(&ident.to_be_bytes());
        Ipv4Packet::new_unchecked(&mut out[..total]).fill_checksum();
        // TCP: the sequence number of its first byte; FIN and PSH belong
        // to the last byte, so to the last segment only.
        let t = &mut out[self.ihl..total];
        let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]).wrapping_add(off as u32);
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        if i + 1 < self.count() {
            t[13] &= !(FIN | PSH);
        }
        if tcp_checksum {
            let (src, dst) = addrs(p);
            TcpPacket::new_unchecked(t).fill_checksum(&src, &dst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpProtocol, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber};

    const SRC: Ipv4Address = Ipv4Address::new(10, 77, 0, 2);
    const DST: Ipv4Address = Ipv4Address::new(10, 77, 0, 1);

    fn packet(control: TcpControl, mss: Option<u16>, payload: &[u8], ident: u16) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 7077,
            control,
            seq_number: TcpSeqNumber(-1001),
            ack_number: Some(TcpSeqNumber(77)),
            window_len: 1000,
            window_scale: Some(7),
            max_seg_size: mss,
            sack_permitted: true,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload,
        };
        let ip = Ipv4Repr {
            src_addr: SRC,
            dst_addr: DST,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; ip.buffer_len() + tcp.buffer_len()];
        let caps = ChecksumCapabilities::default();
        let mut i = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.emit(&mut i, &caps);
        i.set_ident(ident);
        i.fill_checksum();
        let mut t = TcpPacket::new_unchecked(i.payload_mut());
        tcp.emit(&mut t, &IpAddress::Ipv4(SRC), &IpAddress::Ipv4(DST), &caps);
        buf
    }

    fn tcp_ok(p: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(p).unwrap();
        ip.verify_checksum()
            && TcpPacket::new_checked(ip.payload())
                .unwrap()
                .verify_checksum(&IpAddress::Ipv4(SRC), &IpAddress::Ipv4(DST))
    }

    #[test]
    fn the_option_walk_skips_nops_stops_at_the_end_and_reports_bad_lengths() {
        fn walk(o: &[u8]) -> Vec<TcpOption<'_>> {
            tcp_options(o).collect()
        }
        // MSS, NOP, NOP, SACK-permitted, EOL, then bytes past the end.
        let ok = [2, 4, 5, 180, 1, 1, 4, 2, 0, 9, 9];
        assert_eq!(
            walk(&ok),
            vec![Ok((2, 0, &[5u8, 180][..])), Ok((4, 6, &[][..]))]
        );
        assert_eq!(walk(&[]), vec![]);
        assert_eq!(walk(&[1, 1, 1]), vec![]);
        // A length below 2, past the end, or missing: one error, then done.
        for bad in [&[8u8, 1, 0, 0][..], &[8, 10, 0, 0], &[1, 8]] {
            assert_eq!(walk(bad), vec![Err(())], "{bad:?}");
        }
        assert_eq!(walk(&[4, 2, 8, 0]), vec![Ok((4, 0, &[][..])), Err(())]);
    }

    #[test]
    fn a_large_packet_is_cut_into_valid_wire_segments_that_add_up_to_it() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let big = packet(TcpControl::Fin, None, &payload, 0xfffe);
        let s = Split::new(&big, 1500).unwrap();
        assert_eq!(s.count(), 10_000usize.div_ceil(1500 - 40 - 8));
        let mut got = Vec::new();
        let mut seqs = Vec::new();
        for i in 0..s.count() {
            let mut out = vec![0u8; s.len(i)];
            s.write(&big, i, &mut out, true);
            assert!(out.len() <= 1500);
            assert!(tcp_ok(&out), "segment {i} checksums");
            let ip = Ipv4Packet::new_checked(&out[..]).unwrap();
            assert_eq!(ip.ident(), 0xfffe_u16.wrapping_add(i as u16));
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            let last = i + 1 == s.count();
            assert_eq!(t.fin(), last, "FIN on the last segment only");
            assert!(t.ack() && !t.syn());
            assert_eq!(t.ack_number(), TcpSeqNumber(77));
            // The options (window scale, SACK permitted) ride every segment.
            assert_eq!(t.header_len(), 28);
            seqs.push(t.seq_number());
            got.extend_from_slice(t.payload());
        }
        assert_eq!(got, payload);
        for (i, s2) in seqs.iter().enumerate() {
            // Wraps past 2^32 like any sequence number.
            assert_eq!(*s2, TcpSeqNumber(-1001) + i * 1452);
        }
        // Without the checksum (a device that offloads it) the rest holds.
        let mut out = vec![0u8; s.len(0)];
        s.write(&big, 0, &mut out, false);
        assert!(Ipv4Packet::new_checked(&out[..]).unwrap().verify_checksum());
    }

    #[test]
    fn what_is_not_a_whole_tcp_packet_with_a_payload_is_not_cut() {
        let syn = packet(TcpControl::Syn, Some(1460), &[], 1);
        assert_eq!(Split::new(&syn, 1500), None, "no payload");
        let data = packet(TcpControl::None, None, &[1; 100], 1);
        assert_eq!(Split::new(&data, 40), None, "headers fill the MTU");
        assert_eq!(Split::new(&data[..60], 1500), None, "length disagrees");
        let mut frag = data.clone();
        frag[6] |= 0x20;
        assert_eq!(Split::new(&frag, 1500), None, "a fragment");
        let mut udp = data.clone();
        udp[9] = 17;
        assert_eq!(Split::new(&udp, 1500), None);
        for n in 0..data.len() {
            let _ = Split::new(&data[..n], 1500);
            let mut d = data[..n].to_vec();
            let _ = set_syn_mss(&mut d, |_| 9000);
            finish_tcp(&mut d, u16::MAX, true);
        }
    }

    #[test]
    fn the_mss_option_is_rewritten_and_the_checksum_stays_valid_at_either_alignment() {
        for nop in [false, true] {
            let mut p = packet(TcpControl::Syn, Some(1460), &[], 9);
            if nop {
                // The same header length, its options rewritten: NOP, then
                // MSS at an odd offset, NOPs to the end.
                let opts = &mut p[20 + 20..];
                opts.fill(1);
                opts[1..5].copy_from_slice(&[2, 4, 0x05, 0xb4]);
                finish_tcp(&mut p, u16::MAX, true);
            }
            assert!(tcp_ok(&p));
            assert_eq!(set_syn_mss(&mut p, |m| m * 11), Some(1460), "nop {nop}");
            assert!(tcp_ok(&p), "checksum after the rewrite, nop {nop}");
            let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            let repr = TcpRepr::parse(
                &t,
                &IpAddress::Ipv4(SRC),
                &IpAddress::Ipv4(DST),
                &ChecksumCapabilities::default(),
            )
            .unwrap();
            assert_eq!(repr.max_seg_size, Some(1460 * 11));
            // On the way out, our own SYN's offer is lowered to the wire's,
            // checksum refilled.
            finish_tcp(&mut p, 1400, true);
            assert!(tcp_ok(&p), "checksum after lowering, nop {nop}");
            let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            let caps = ChecksumCapabilities::default();
            let (src, dst) = (IpAddress::Ipv4(SRC), IpAddress::Ipv4(DST));
            let repr = TcpRepr::parse(&t, &src, &dst, &caps).unwrap();
            assert_eq!(repr.max_seg_size, Some(1400));
        }
        let mut ack = packet(TcpControl::None, None, &[1; 10], 9);
        assert_eq!(set_syn_mss(&mut ack, |_| 1), None, "not a SYN");
        let mut bare = packet(TcpControl::Syn, None, &[], 9);
        assert_eq!(set_syn_mss(&mut bare, |_| 1), None, "no MSS option");
    }
}
