//! Receive-side TCP checksum policy.
//!
//! A kernel sender on veth (and any NIC with TX offload looped back) leaves
//! TCP checksums *partial*: the field holds the folded pseudo-header sum and
//! the hardware that never comes was to finish it. A stack that verifies
//! strictly drops every such segment; a stack that does not verify accepts
//! corruption. This module does neither: a segment passes if its checksum is
//! complete and correct, or if its field is exactly the partial value for
//! its pseudo-header. A bit flipped anywhere (tc netem `corrupt` finishes a
//! partial checksum before corrupting) fails both tests.

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, TcpPacket,
};

/// What the check concluded about a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not IPv4/TCP: left to smoltcp's own checks.
    NotTcp,
    /// A complete, correct checksum.
    Valid,
    /// A partial checksum matching the pseudo-header (offloaded sender).
    Partial,
    /// Neither: the segment is corrupt.
    Corrupt,
}

/// Checks the TCP checksum of an Ethernet frame.
pub fn check_tcp(frame: &[u8]) -> Verdict {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Verdict::NotTcp;
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return Verdict::NotTcp;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return Verdict::NotTcp;
    };
    if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
        return Verdict::NotTcp;
    }
    let payload = ip.payload();
    let Ok(tcp) = TcpPacket::new_checked(payload) else {
        return Verdict::Corrupt;
    };
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if tcp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)) {
        return Verdict::Valid;
    }
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    if tcp.checksum() == pseudo_header_sum(src.octets(), dst.octets(), len) {
        Verdict::Partial
    } else {
        Verdict::Corrupt
    }
}

/// The folded (not complemented) one's-complement sum of the IPv4 TCP
/// pseudo-header: what an offloading sender leaves in the checksum field.
pub fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], tcp_len: u16) -> u16 {
    let words = [
        u16::from_be_bytes([src[0], src[1]]),
        u16::from_be_bytes([src[2], src[3]]),
        u16::from_be_bytes([dst[0], dst[1]]),
        u16::from_be_bytes([dst[2], dst[3]]),
        u16::from(u8::from(IpProtocol::Tcp)),
        tcp_len,
    ];
    let mut sum: u32 = words.iter().map(|&w| u32::from(w)).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetRepr, Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber,
    };

    fn frame(payload: &[u8]) -> Vec<u8> {
        let src = Ipv4Address::new(10, 77, 0, 2);
        let dst = Ipv4Address::new(10, 77, 0, 1);
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 7077,
            control: TcpControl::Psh,
            seq_number: TcpSeqNumber(1),
            ack_number: Some(TcpSeqNumber(1)),
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload,
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
            dst_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + tcp.buffer_len()];
        let caps = ChecksumCapabilities::default();
        let mut e = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut e);
        let mut i = Ipv4Packet::new_unchecked(e.payload_mut());
        ip.emit(&mut i, &caps);
        let mut t = TcpPacket::new_unchecked(i.payload_mut());
        tcp.emit(&mut t, &IpAddress::Ipv4(src), &IpAddress::Ipv4(dst), &caps);
        buf
    }

    const TCP_CSUM_OFFSET: usize = 14 + 20 + 16;

    #[test]
    fn full_partial_and_corrupt() {
        let mut f = frame(b"hello warpwire");
        assert_eq!(check_tcp(&f), Verdict::Valid);
        // Make it partial, as an offloading kernel sender leaves it.
        let tcp_len = (f.len() - 34) as u16;
        let pseudo = pseudo_header_sum([10, 77, 0, 2], [10, 77, 0, 1], tcp_len);
        f[TCP_CSUM_OFFSET..TCP_CSUM_OFFSET + 2].copy_from_slice(&pseudo.to_be_bytes());
        assert_eq!(check_tcp(&f), Verdict::Partial);
        // A flipped payload bit under a complete checksum is corrupt.
        let mut g = frame(b"hello warpwire");
        let n = g.len();
        g[n - 1] ^= 0x04;
        assert_eq!(check_tcp(&g), Verdict::Corrupt);
        // A non-TCP frame is left alone.
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(check_tcp(&arp), Verdict::NotTcp);
    }
}
