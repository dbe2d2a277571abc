//! Transport checksum completion, as a NIC does on transmit.
//!
//! A kernel sender on veth leaves TCP and UDP checksums *partial*
//! (`CHECKSUM_PARTIAL`): the field holds only the folded pseudo-header sum
//! and the "hardware" is expected to finish the job. veth never does, so the
//! frame a packet socket reads carries a checksum no receiver accepts once
//! the frame has left the kernel's hands (a packet socket transmits with
//! `CHECKSUM_NONE`, so the receiving stack verifies in software). Completing
//! it before any fault is applied also means a corrupted segment is caught
//! downstream, which is the point of the corruption fault.

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket,
};

/// What [`complete`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Not an unfragmented IPv4 TCP or UDP frame (ARP, ICMP, IPv6, a
    /// fragment, a truncated header): left alone.
    NotApplicable,
    /// The checksum already verified: left alone.
    AlreadyValid,
    /// The checksum did not verify (partial) and was recomputed in place.
    Completed,
}

/// Completes the TCP or UDP checksum of an IPv4 Ethernet frame in place when
/// it does not already verify.
///
/// Ethernet padding after the IPv4 total length is ignored (smoltcp slices
/// the payload by the header's length fields). A UDP checksum of zero means
/// "none" for IPv4 and verifies as valid.
pub fn complete(frame: &mut [u8]) -> Completion {
    let Ok(mut eth) = EthernetFrame::new_checked(&mut frame[..]) else {
        return Completion::NotApplicable;
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return Completion::NotApplicable;
    }
    let Ok(mut ip) = Ipv4Packet::new_checked(eth.payload_mut()) else {
        return Completion::NotApplicable;
    };
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Completion::NotApplicable;
    }
    let src = IpAddress::Ipv4(ip.src_addr());
    let dst = IpAddress::Ipv4(ip.dst_addr());
    match ip.next_header() {
        IpProtocol::Tcp => {
            let Ok(mut tcp) = TcpPacket::new_checked(ip.payload_mut()) else {
                return Completion::NotApplicable;
            };
            if tcp.verify_checksum(&src, &dst) {
                Completion::AlreadyValid
            } else {
                tcp.fill_checksum(&src, &dst);
                Completion::Completed
            }
        }
        IpProtocol::Udp => {
            let Ok(mut udp) = UdpPacket::new_checked(ip.payload_mut()) else {
                return Completion::NotApplicable;
            };
            if udp.verify_checksum(&src, &dst) {
                Completion::AlreadyValid
            } else {
                udp.fill_checksum(&src, &dst);
                Completion::Completed
            }
        }
        _ => Completion::NotApplicable,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetRepr, Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber,
    };

    const SRC: Ipv4Address = Ipv4Address::new(10, 77, 5, 1);
    const DST: Ipv4Address = Ipv4Address::new(10, 77, 5, 2);

    /// An Ethernet/IPv4/TCP frame with a full checksum and `payload`.
    pub(crate) fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 5001,
            control: TcpControl::Psh,
            seq_number: TcpSeqNumber(1000),
            ack_number: Some(TcpSeqNumber(2000)),
            window_len: 512,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
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
        let eth = EthernetRepr {
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
            ethertype: EthernetProtocol::Ipv4,
        };
        let len = eth.buffer_len() + ip.buffer_len() + tcp.buffer_len();
        let mut buf = vec![0u8; len];
        let caps = ChecksumCapabilities::default();
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut frame);
        let mut ipp = Ipv4Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut ipp, &caps);
        let mut tcpp = TcpPacket::new_unchecked(ipp.payload_mut());
        tcp.emit(
            &mut tcpp,
            &IpAddress::Ipv4(SRC),
            &IpAddress::Ipv4(DST),
            &caps,
        );
        buf
    }

    /// Offset of the TCP checksum field in [`tcp_frame`]'s output.
    const TCP_CSUM_AT: usize = 14 + 20 + 16;

    #[test]
    fn valid_checksum_is_left_alone() {
        let mut frame = tcp_frame(b"hello");
        let before = frame.clone();
        assert_eq!(complete(&mut frame), Completion::AlreadyValid);
        assert_eq!(frame, before);
    }

    #[test]
    fn partial_checksum_is_completed() {
        let full = tcp_frame(b"some payload bytes");
        let mut partial = full.clone();
        // What CHECKSUM_PARTIAL leaves: any value that does not verify; the
        // kernel's is the uncomplemented pseudo-header sum.
        partial[TCP_CSUM_AT] ^= 0x5a;
        partial[TCP_CSUM_AT + 1] ^= 0xa5;
        assert_eq!(complete(&mut partial), Completion::Completed);
        assert_eq!(partial, full);
    }

    #[test]
    fn single_bit_flips_after_completion_are_detected() {
        let mut frame = tcp_frame(&[0x33; 100]);
        for bit in (14 + 20) * 8..frame.len() * 8 {
            let mut copy = frame.clone();
            copy[bit / 8] ^= 1 << (bit % 8);
            let eth = EthernetFrame::new_unchecked(&copy[..]);
            let ip = Ipv4Packet::new_unchecked(eth.payload());
            let tcp = TcpPacket::new_unchecked(ip.payload());
            assert!(
                !tcp.verify_checksum(&IpAddress::Ipv4(SRC), &IpAddress::Ipv4(DST)),
                "bit {bit} flip went unnoticed"
            );
        }
        assert_eq!(complete(&mut frame), Completion::AlreadyValid);
    }

    #[test]
    fn non_ip_and_short_frames_are_ignored() {
        let mut arp = tcp_frame(b"x");
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(complete(&mut arp), Completion::NotApplicable);
        let mut short = tcp_frame(b"x");
        short.truncate(30);
        assert_eq!(complete(&mut short), Completion::NotApplicable);
        assert_eq!(complete(&mut []), Completion::NotApplicable);
    }
}
