//! Test helpers, shared by the crates' tests and never shipped:
//!
//! - hand-built Ethernet, ARP, IPv4 and UDP frames for the tests of the
//!   `PacketDevice` backends (AF_XDP, DPDK): written out byte by byte, so a
//!   test does not check the backends with the stack they feed;
//! - [`hostile`]: hostile and careless kernel-TCP peers (half-close, header
//!   floods, a measuring bystander), also as the `warpwire-hostile` binary
//!   that tests run inside network namespaces;
//! - [`conformance`]: the `Transport` contract checked the same way for
//!   every backend, over any pair of endpoints;
//! - [`kernel_echo`]: an RFC 862 echo server on kernel TCP, faithful or
//!   corrupting, the peer of the echo client protocol's tests.

#![allow(clippy::expect_used)]

pub mod conformance;
pub mod hostile;
pub mod kernel_echo;

use std::net::Ipv4Addr;

/// Parses `aa:bb:cc:dd:ee:ff` (as `ip link` prints it).
pub fn parse_mac(s: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (dst, part) in mac.iter_mut().zip(s.trim().split(':')) {
        *dst = u8::from_str_radix(part, 16).expect("hex");
    }
    mac
}

/// EtherType of IPv4.
pub const ETH_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETH_ARP: u16 = 0x0806;

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    // Minimum Ethernet frame without FCS.
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// An ARP request in `frame` asking for `ip`: (sender MAC, sender IP).
pub fn arp_request_for(frame: &[u8], ip: Ipv4Addr) -> Option<([u8; 6], Ipv4Addr)> {
    if frame.len() < 42 || u16::from_be_bytes([frame[12], frame[13]]) != ETH_ARP {
        return None;
    }
    let a = &frame[14..42];
    let oper = u16::from_be_bytes([a[6], a[7]]);
    let tpa = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
    if oper != 1 || tpa != ip {
        return None;
    }
    let mut sha = [0u8; 6];
    sha.copy_from_slice(&a[8..14]);
    Some((sha, Ipv4Addr::new(a[14], a[15], a[16], a[17])))
}

/// An ARP reply: `my_ip` is at `my_mac`, to `to_mac`/`to_ip`.
pub fn arp_reply(my_mac: [u8; 6], my_ip: Ipv4Addr, to_mac: [u8; 6], to_ip: Ipv4Addr) -> Vec<u8> {
    let mut a = Vec::with_capacity(28);
    a.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    a.extend_from_slice(&my_mac);
    a.extend_from_slice(&my_ip.octets());
    a.extend_from_slice(&to_mac);
    a.extend_from_slice(&to_ip.octets());
    ethernet(to_mac, my_mac, ETH_ARP, &a)
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// A UDP datagram in an IPv4 packet in an Ethernet frame, with correct IPv4
/// header and UDP checksums (or a deliberately wrong UDP checksum).
#[allow(clippy::too_many_arguments)]
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
    corrupt_checksum: bool,
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    let mut csum = fold(sum16(&pseudo) + sum16(&udp));
    if csum == 0 {
        csum = 0xffff;
    }
    if corrupt_checksum {
        csum ^= 0x5a5a;
    }
    udp[6..8].copy_from_slice(&csum.to_be_bytes());

    let total = 20 + udp_len;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let hc = fold(sum16(&ip));
    ip[10..12].copy_from_slice(&hc.to_be_bytes());
    ip.extend_from_slice(&udp);
    ethernet(dst_mac, src_mac, ETH_IPV4, &ip)
}

/// The payload of a UDP datagram to `dst`:`dport` in `frame`.
pub fn udp_payload_to(frame: &[u8], dst: Ipv4Addr, dport: u16) -> Option<Vec<u8>> {
    if frame.len() < 42 || u16::from_be_bytes([frame[12], frame[13]]) != ETH_IPV4 {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[9] != 17 || Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]) != dst || total > ip.len() {
        return None;
    }
    let udp = &ip[ihl..total];
    if udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != dport {
        return None;
    }
    Some(udp[8..].to_vec())
}
