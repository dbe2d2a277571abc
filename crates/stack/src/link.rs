//! The Ethernet side of the stack: what smoltcp no longer sees now that
//! every shard's interface is `Medium::Ip`. One neighbour (ARP) table for
//! the whole stack, the Ethernet header on every transmitted packet, the
//! receive checksum policy's counters and the pcap tap.
//!
//! ```text
//!   shard iface ── IP packet ──► EthTx::consume ── next hop ─► neighbour? ── yes ─► 14-byte header + packet ─► device
//!                                                                     └─ no ──► ARP request (packet held, sent on reply)
//! ```
//!
//! Why our own table instead of smoltcp's: with thousands of shard
//! interfaces, each would keep its own ARP cache, ask for the same peer
//! thousands of times and stall for a second whenever an entry expired.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use smoltcp::phy::{self, ChecksumCapabilities, Medium};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr,
};
use warpwire_transport::TxToken;

use crate::demux::FlowKey;
use crate::gso::{self, Split};
use crate::pcap::PcapWriter;
use crate::sack::{self, Sack};

/// Ethernet header length.
pub(crate) const ETH: usize = 14;
/// A neighbour entry older than this is still used, and asked for again.
const STALE_AFTER: Duration = Duration::from_secs(60);
/// How often one address is asked for at most.
const ASK_EVERY: Duration = Duration::from_millis(200);
/// Packets held per unresolved address (Linux's `unres_qlen` is 101: a
/// client opening many connections at once to a new peer sends that many
/// SYNs before the ARP reply), addresses held at most, and bytes in all.
const HOLD_PER_ADDR: usize = 256;
const HOLD_ADDRS: usize = 256;
const HOLD_BYTES: usize = 1 << 20;
/// How long the one-entry caches in front of the table stay valid.
const CACHE_FOR: Duration = Duration::from_secs(1);
/// Neighbour entries at most (a flood of spoofed on-link senders cannot grow it further).
const MAX_NEIGHBORS: usize = 16_384;

#[derive(Debug, Clone, Copy)]
struct Neighbor {
    mac: [u8; 6],
    seen: Instant,
}

/// Counters, the capture, the neighbour table: shared by every token of a
/// poll (a receive token and its reply token both touch it).
#[derive(Debug)]
pub(crate) struct Link {
    pub pcap: Option<PcapWriter>,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_partial_csum: u64,
    pub rx_corrupt: u64,
    pub pcap_errors: u64,
    pub arp_requests: u64,
    pub held_dropped: u64,
    pub no_route: u64,
    /// The device had no transmit buffer for an egress this drive.
    pub tx_exhausted: bool,
    /// Large packets cut into segments ([`gso`]), the segments sent, and
    /// packets that could not be cut (dropped).
    pub gso_packets: u64,
    pub gso_segments: u64,
    pub gso_dropped: u64,
    /// The largest IP packet the device carries, and the TCP payload of
    /// one without options (the MSS our SYN offers).
    ip_mtu: usize,
    pub wire_mss: u16,
    /// Segmentation offload is on: packets may be larger than `ip_mtu`.
    gso_on: bool,
    /// SACK blocks added to ACKs (`StackConfig::sack_blocks`).
    pub sack: Option<Sack>,
    /// The device fills TCP checksums.
    device_checksum: bool,
    /// TCP checksums are filled here, not by smoltcp (segmentation
    /// offload is on and the device does not offload them).
    tcp_checksum: bool,
    /// Large packets smoltcp emitted whose segments after the first wait
    /// for device buffers, oldest first, and emptied buffers to reuse.
    gso: VecDeque<Cut>,
    gso_spare: Vec<Vec<u8>>,
    mac: [u8; 6],
    ip: Ipv4Addr,
    prefix_len: u8,
    gateway: Option<Ipv4Addr>,
    neighbors: HashMap<Ipv4Addr, Neighbor>,
    /// Packets waiting for an ARP reply, per next hop.
    held: HashMap<Ipv4Addr, VecDeque<Vec<u8>>>,
    held_bytes: usize,
    /// Addresses to ask for at the next chance, and when each was last asked.
    asked: HashMap<Ipv4Addr, Instant>,
    pub want_ask: Vec<Ipv4Addr>,
    /// Next hops whose held packets can go now.
    pub resolved: Vec<Ipv4Addr>,
    /// The last neighbour confirmed by a received frame, and until when
    /// the same peer's frames skip the table (a second).
    confirmed: Option<(Ipv4Addr, [u8; 6], Instant)>,
    /// The last next hop looked up for a transmitted frame, until the
    /// table changes or the time given passes.
    last_hop: Option<(Ipv4Addr, [u8; 6], Instant)>,
}

impl Link {
    pub fn new(
        mac: [u8; 6],
        ip: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        dev: &warpwire_transport::DeviceCapabilities,
        gso: bool,
    ) -> Self {
        Self {
            gso_packets: 0,
            gso_segments: 0,
            gso_dropped: 0,
            ip_mtu: dev.max_frame.saturating_sub(ETH),
            wire_mss: u16::try_from(dev.max_frame.saturating_sub(ETH + 40)).unwrap_or(u16::MAX),
            gso_on: gso,
            sack: None,
            device_checksum: dev.tx_checksum_offload,
            tcp_checksum: gso && !dev.tx_checksum_offload,
            gso: VecDeque::new(),
            gso_spare: Vec::new(),
            pcap: None,
            rx_frames: 0,
            tx_frames: 0,
            rx_partial_csum: 0,
            rx_corrupt: 0,
            pcap_errors: 0,
            arp_requests: 0,
            held_dropped: 0,
            no_route: 0,
            tx_exhausted: false,
            mac,
            ip,
            prefix_len,
            gateway,
            neighbors: HashMap::new(),
            held: HashMap::new(),
            held_bytes: 0,
            asked: HashMap::new(),
            want_ask: Vec::new(),
            resolved: Vec::new(),
            confirmed: None,
            last_hop: None,
        }
    }

    pub fn capture(&mut self, now: Instant, frame: &[u8]) {
        if let Some(p) = self.pcap.as_mut()
            && p.write(now, frame).is_err()
        {
            self.pcap_errors += 1;
        }
    }

    /// Whether `a` is in our subnet.
    pub fn on_link(&self, a: Ipv4Addr) -> bool {
        let bits = u32::from(self.prefix_len.min(32));
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        u32::from(a) & mask == u32::from(self.ip) & mask
    }

    fn broadcast(&self, a: Ipv4Addr) -> bool {
        let bits = u32::from(self.prefix_len.min(32));
        let host = if bits >= 32 { 0 } else { u32::MAX >> bits };
        a.is_broadcast() || (host != 0 && self.on_link(a) && u32::from(a) & host == host)
    }

    /// The next hop of a packet to `dst`: the address itself on the subnet,
    /// else the gateway.
    fn next_hop(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.on_link(dst) {
            Some(dst)
        } else {
            self.gateway
        }
    }

    /// Learns (or refreshes) `ip` at `mac` from a frame it sent us.
    pub fn learn(&mut self, ip: Ipv4Addr, mac: [u8; 6], now: Instant) {
        if !self.on_link(ip) || ip == self.ip || ip.is_unspecified() || mac[0] & 1 != 0 {
            return;
        }
        if self.neighbors.len() >= MAX_NEIGHBORS && !self.neighbors.contains_key(&ip) {
            return;
        }
        self.neighbors.insert(ip, Neighbor { mac, seen: now });
        self.last_hop = None;
        self.confirmed = None;
        if self.held.contains_key(&ip) {
            self.resolved.push(ip);
        }
    }

    /// Confirms `ip` at `mac` from an IP frame it sent us: refreshes an
    /// entry with that MAC, never creates or changes one (only ARP does,
    /// as in Linux, so a forged or damaged IP frame cannot redirect us).
    pub fn confirm(&mut self, ip: Ipv4Addr, mac: [u8; 6], now: Instant) {
        if let Some((i, m, until)) = self.confirmed
            && i == ip
            && m == mac
            && now < until
        {
            return;
        }
        if let Some(n) = self.neighbors.get_mut(&ip)
            && n.mac == mac
        {
            n.seen = now;
            self.confirmed = Some((ip, mac, now + CACHE_FOR));
        }
    }

    /// Asks again for next hops whose packets are still held after
    /// [`ASK_EVERY`] (the first request may have gone out before the link
    /// was up, as with a memif peer still connecting).
    pub fn retry_held(&mut self, now: Instant) {
        if self.held.is_empty() {
            return;
        }
        let hops: Vec<Ipv4Addr> = self.held.keys().copied().collect();
        for hop in hops {
            self.want(hop, now);
        }
    }

    /// When held packets next call for an ARP request.
    pub fn next_retry(&self) -> Option<Instant> {
        self.held
            .keys()
            .filter_map(|h| self.asked.get(h))
            .min()
            .map(|&t| t + ASK_EVERY)
    }

    /// Packets held for `ip`, now that it resolved.
    pub fn take_held(&mut self, ip: Ipv4Addr) -> Option<(VecDeque<Vec<u8>>, [u8; 6])> {
        let n = *self.neighbors.get(&ip)?;
        let q = self.held.remove(&ip)?;
        self.held_bytes -= q.iter().map(Vec::len).sum::<usize>();
        Some((q, n.mac))
    }

    /// Packets of `ip` taken to send that the device had no buffer for:
    /// held again, ahead of any held since, and sent at the next drive.
    pub fn put_back(&mut self, ip: Ipv4Addr, mut packets: VecDeque<Vec<u8>>) {
        self.held_bytes += packets.iter().map(Vec::len).sum::<usize>();
        if let Some(newer) = self.held.remove(&ip) {
            packets.extend(newer);
        }
        self.held.insert(ip, packets);
        if !self.resolved.contains(&ip) {
            self.resolved.push(ip);
        }
    }

    fn want(&mut self, hop: Ipv4Addr, now: Instant) {
        let due = self
            .asked
            .get(&hop)
            .is_none_or(|&t| now.saturating_duration_since(t) >= ASK_EVERY);
        if due {
            if self.asked.len() > MAX_NEIGHBORS {
                self.asked.clear();
            }
            self.asked.insert(hop, now);
            self.want_ask.push(hop);
        }
    }

    /// Writes the Ethernet header of the IP packet in `frame[ETH..]`, or,
    /// when its next hop is unknown, keeps a copy of the packet and turns
    /// the frame into an ARP request for the hop (padded: receivers ignore
    /// bytes after the ARP payload). With no route (off the subnet, no
    /// gateway) the packet is dropped and the frame becomes an ARP request
    /// for our own address, that is a gratuitous ARP, which peers only use
    /// to refresh our entry: a token once taken is always sent.
    fn frame_ip(&mut self, frame: &mut [u8], now: Instant) {
        let ip = &frame[ETH..];
        let dst = if ip.len() >= 20 {
            Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19])
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        let dst_mac = if self.broadcast(dst) {
            Some([0xff; 6])
        } else {
            match self.next_hop(dst) {
                None => {
                    self.no_route += 1;
                    // Sent to nobody: an ARP request for an address on our own
                    // subnet that is ours; peers ignore it.
                    self.write_arp_request(frame, self.ip);
                    return;
                }
                Some(hop) => match self.last_hop {
                    Some((h, mac, until)) if h == hop && now < until => Some(mac),
                    _ => self.lookup(hop, now, frame),
                },
            }
        };
        if let Some(mac) = dst_mac {
            self.write_eth(frame, mac, EthernetProtocol::Ipv4);
        }
    }

    /// The table's answer for `hop`; with none, the packet in `frame` is
    /// held and the frame becomes an ARP request.
    fn lookup(&mut self, hop: Ipv4Addr, now: Instant, frame: &mut [u8]) -> Option<[u8; 6]> {
        match self.neighbors.get(&hop).copied() {
            Some(n) => {
                if now.saturating_duration_since(n.seen) > STALE_AFTER {
                    self.want(hop, now);
                } else {
                    self.last_hop = Some((hop, n.mac, now + CACHE_FOR));
                }
                Some(n.mac)
            }
            None => {
                self.hold(hop, &frame[ETH..]);
                self.arp_requests += 1;
                self.asked.insert(hop, now);
                self.write_arp_request(frame, hop);
                None
            }
        }
    }

    fn hold(&mut self, hop: Ipv4Addr, packet: &[u8]) {
        if (!self.held.contains_key(&hop) && self.held.len() >= HOLD_ADDRS)
            || self.held_bytes + packet.len() > HOLD_BYTES
        {
            self.held_dropped += 1;
            return;
        }
        let q = self.held.entry(hop).or_default();
        if q.len() >= HOLD_PER_ADDR
            && let Some(old) = q.pop_front()
        {
            self.held_bytes -= old.len();
            self.held_dropped += 1;
        }
        self.held_bytes += packet.len();
        q.push_back(packet.to_vec());
    }

    pub fn write_eth(&self, frame: &mut [u8], dst: [u8; 6], proto: EthernetProtocol) {
        let mut f = EthernetFrame::new_unchecked(frame);
        EthernetRepr {
            src_addr: EthernetAddress(self.mac),
            dst_addr: EthernetAddress(dst),
            ethertype: proto,
        }
        .emit(&mut f);
    }

    /// An ARP request for `target` into `frame` (at least 42 bytes), the rest zeroed.
    pub fn write_arp_request(&self, frame: &mut [u8], target: Ipv4Addr) {
        self.write_arp(frame, ArpOperation::Request, [0xff; 6], [0; 6], target);
    }

    fn write_arp(
        &self,
        frame: &mut [u8],
        op: ArpOperation,
        eth_dst: [u8; 6],
        target_mac: [u8; 6],
        target_ip: Ipv4Addr,
    ) {
        self.write_eth(frame, eth_dst, EthernetProtocol::Arp);
        let body = &mut frame[ETH..];
        body.fill(0);
        ArpRepr::EthernetIpv4 {
            operation: op,
            source_hardware_addr: EthernetAddress(self.mac),
            source_protocol_addr: self.ip,
            target_hardware_addr: EthernetAddress(target_mac),
            target_protocol_addr: target_ip,
        }
        .emit(&mut ArpPacket::new_unchecked(&mut body[..28]));
    }

    /// Handles a received ARP frame: learns the sender, and returns whether
    /// a reply (written by [`Link::write_arp_reply`]) is due.
    pub fn on_arp(&mut self, frame: &[u8], now: Instant) -> Option<([u8; 6], Ipv4Addr)> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        let arp = ArpPacket::new_checked(eth.payload()).ok()?;
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = ArpRepr::parse(&arp).ok()?
        else {
            return None;
        };
        let sip = source_protocol_addr;
        let for_us = target_protocol_addr == self.ip;
        // Learn from anything addressed to us, and refresh entries we have
        // from any ARP (gratuitous ones included).
        if for_us || self.neighbors.contains_key(&sip) {
            self.learn(sip, source_hardware_addr.0, now);
        }
        (for_us && operation == ArpOperation::Request).then_some((source_hardware_addr.0, sip))
    }

    pub const ARP_LEN: usize = ETH + 28;

    pub fn write_arp_reply(&self, frame: &mut [u8], mac: [u8; 6], ip: Ipv4Addr) {
        self.write_arp(frame, ArpOperation::Reply, mac, mac, ip);
    }
}

/// smoltcp's capabilities for a shard interface: IP packets of the
/// device's frame size less the Ethernet header, or with `gso` of up to
/// [`gso::SUPER_MTU`] bytes, which [`EthTx`] cuts to the device's size.
pub(crate) fn ip_caps(
    dev: &warpwire_transport::DeviceCapabilities,
    own_tcp_check: bool,
    gso: bool,
) -> phy::DeviceCapabilities {
    let mut caps = phy::DeviceCapabilities::default();
    caps.medium = Medium::Ip;
    caps.max_transmission_unit = if gso {
        gso::SUPER_MTU
    } else {
        dev.max_frame.saturating_sub(ETH)
    };
    caps.max_burst_size = Some(dev.max_burst);
    let mut sums = ChecksumCapabilities::default();
    use phy::Checksum;
    // IPv4 header checksums are always complete on receive; TCP ones are
    // checked before the demux when the device hands over partial ones.
    // With segmentation offload smoltcp fills no TCP checksum: EthTx does,
    // per wire segment (else smoltcp would sum each large packet for
    // nothing).
    sums.ipv4 = Checksum::Both;
    sums.tcp = match (own_tcp_check, gso) {
        (true, true) => Checksum::None,
        (true, false) => Checksum::Tx,
        (false, true) => Checksum::Rx,
        (false, false) => Checksum::Both,
    };
    if dev.tx_checksum_offload {
        sums.tcp = match sums.tcp {
            Checksum::Both => Checksum::Rx,
            Checksum::Tx => Checksum::None,
            other => other,
        };
    }
    caps.checksum = sums;
    caps
}

/// A large packet being sent as segments: its bytes, its plan, the next
/// segment to send.
#[derive(Debug)]
pub(crate) struct Cut {
    packet: Vec<u8>,
    len: usize,
    split: Split,
    next: usize,
}

impl Link {
    /// With segmentation offload, our own SYN's MSS back to the wire's and
    /// the TCP checksum ([`gso::finish_tcp`]). Without, smoltcp did both.
    fn finish_tcp(&self, packet: &mut [u8]) {
        if self.gso_on {
            gso::finish_tcp(packet, self.wire_mss, self.tcp_checksum);
        }
    }

    /// The frame an IP packet of `len` bytes takes: an ARP request needs
    /// 42 bytes; shorter IP packets do not occur (20 IP + 20 TCP at
    /// least), but the frame is padded to be safe.
    fn frame_len(len: usize) -> usize {
        (ETH + len).max(Link::ARP_LEN)
    }

    /// The IP packet smoltcp wrote at `buf[ETH..ETH + len]` (in a frame
    /// of [`Link::frame_len`] bytes) made ready for the wire: its TCP
    /// finished, its Ethernet header (or an ARP request in its place),
    /// counted and captured.
    fn frame_packet(&mut self, buf: &mut [u8], len: usize, now: Instant) {
        self.finish_tcp(&mut buf[ETH..ETH + len]);
        self.frame_ip(&mut buf[..ETH + len.max(Link::ARP_LEN - ETH)], now);
        self.tx_frames += 1;
        self.capture(now, buf);
    }

    /// Writes segment `i` of `cut` into a device buffer and frames it.
    fn write_segment(&mut self, cut: &Cut, i: usize, buf: &mut [u8], now: Instant) {
        cut.split.write(
            &cut.packet[..cut.len],
            i,
            &mut buf[ETH..],
            self.tcp_checksum,
        );
        self.frame_ip(buf, now);
        self.tx_frames += 1;
        self.gso_segments += 1;
        self.capture(now, buf);
    }

    /// A segment of `key` with `data` bytes from `seq` is about to reach
    /// smoltcp: [`Sack`] notes its range (a duplicate gets a D-SACK in
    /// the reply). Returns whether [`Link::rx_done`] is due.
    pub fn rx_segment(&mut self, key: FlowKey, seq: u32, data: u32) -> bool {
        let Some(s) = self.sack.as_mut() else {
            return false;
        };
        s.rx_segment(key, seq, seq.wrapping_add(data));
        true
    }

    /// The frame of [`Link::rx_segment`] was processed.
    pub fn rx_done(&mut self) {
        if let Some(s) = self.sack.as_mut() {
            s.rx_done();
        }
    }

    /// The flow `key` ended.
    pub fn forget_flow(&mut self, key: &FlowKey) {
        if let Some(s) = self.sack.as_mut() {
            s.forget(key);
        }
    }

    /// Whether segments of large packets still wait for device buffers.
    pub fn gso_pending(&self) -> bool {
        !self.gso.is_empty()
    }

    /// Sends the segments waiting for device buffers, oldest first; stops
    /// (with `tx_exhausted` set) when the device has none left.
    pub fn send_gso<D: warpwire_transport::PacketDevice>(&mut self, dev: &mut D, now: Instant) {
        while let Some(mut cut) = self.gso.pop_front() {
            while cut.next < cut.split.count() {
                let Some(tx) = dev.transmit(now) else {
                    self.tx_exhausted = true;
                    self.gso.push_front(cut);
                    return;
                };
                let i = cut.next;
                tx.consume(ETH + cut.split.len(i), |buf| {
                    self.write_segment(&cut, i, buf, now)
                });
                cut.next += 1;
            }
            if self.gso_spare.len() < GSO_SPARE {
                self.gso_spare.push(cut.packet);
            }
        }
    }
}

/// Emptied large-packet buffers kept for reuse.
const GSO_SPARE: usize = 8;

/// A device token that frames smoltcp's IP packet for the wire.
pub(crate) struct EthTx<'b, T> {
    pub inner: T,
    pub now: Instant,
    pub link: &'b RefCell<Link>,
}

impl<T: TxToken> phy::TxToken for EthTx<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let (now, link) = (self.now, self.link);
        {
            let l = link.borrow();
            if len > l.ip_mtu {
                drop(l);
                return self.consume_large(len, f);
            }
            if len <= sack::MAX_ACK && l.sack.is_some() {
                drop(l);
                return self.consume_small(len, f);
            }
        }
        self.inner.consume(Link::frame_len(len), |buf| {
            let r = f(&mut buf[ETH..ETH + len]);
            link.borrow_mut().frame_packet(buf, len, now);
            r
        })
    }
}

impl<T: TxToken> EthTx<'_, T> {
    /// A packet small enough to be a pure ACK: written into a buffer of
    /// ours first, because [`Sack`] may add SACK blocks to it and the
    /// device buffer's length must be known before it is taken.
    fn consume_small<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let (now, link) = (self.now, self.link);
        let mut p = [0u8; sack::MAX_ACK];
        let r = f(&mut p[..len]);
        let mut l = link.borrow_mut();
        // Checksums left to finish_tcp or the device are not filled here.
        let leave = l.tcp_checksum || l.device_checksum;
        let len = match l.sack.as_mut() {
            Some(s) => s.on_ack(&mut p, len, leave),
            None => len,
        };
        self.inner.consume(Link::frame_len(len), |buf| {
            buf[ETH..ETH + len].copy_from_slice(&p[..len]);
            l.frame_packet(buf, len, now);
        });
        r
    }

    /// A packet larger than the device carries (smoltcp's segment of up
    /// to the raised MSS): written into a buffer of ours, its first wire
    /// segment into this token, the rest queued for [`Link::send_gso`].
    fn consume_large<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let (now, link) = (self.now, self.link);
        let mut packet = link.borrow_mut().gso_spare.pop().unwrap_or_default();
        if packet.len() < len {
            packet.resize(len, 0);
        }
        let r = f(&mut packet[..len]);
        let mut l = link.borrow_mut();
        let split = Split::new(&packet[..len], l.ip_mtu);
        let Some(split) = split else {
            // Only TCP segments outgrow the device (smoltcp answers an
            // ICMP echo with at most what came in). Should another ever
            // come, it is dropped (counted); the token becomes an ARP
            // request for our own address, which peers ignore (a token
            // once taken is always sent).
            l.gso_dropped += 1;
            self.inner.consume(Link::ARP_LEN, |buf| {
                let ip = l.ip;
                l.write_arp_request(buf, ip);
                l.tx_frames += 1;
            });
            l.gso_spare.push(packet);
            return r;
        };
        let cut = Cut {
            packet,
            len,
            split,
            next: 1,
        };
        self.inner
            .consume(ETH + split.len(0), |buf| l.write_segment(&cut, 0, buf, now));
        l.gso_packets += 1;
        l.gso.push_back(cut);
        r
    }
}

/// The IP packet of a received frame, handed to one shard's interface.
pub(crate) struct IpRx<'b>(pub &'b [u8]);

impl phy::RxToken for IpRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

/// The device one shard sees while it processes one received packet: that
/// packet, with the reply token of its frame.
pub(crate) struct OneShot<'b, T> {
    pub packet: Option<(&'b [u8], EthTx<'b, T>)>,
    pub caps: &'b phy::DeviceCapabilities,
}

impl<'a, T: TxToken> phy::Device for OneShot<'a, T> {
    type RxToken<'b>
        = IpRx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = EthTx<'b, T>
    where
        Self: 'b;

    fn receive(
        &mut self,
        _ts: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (p, tx) = self.packet.take()?;
        Some((IpRx(p), tx))
    }

    fn transmit(&mut self, _ts: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        None
    }

    fn capabilities(&self) -> phy::DeviceCapabilities {
        self.caps.clone()
    }
}

/// The device a shard transmits on: the packet device, every frame framed by [`EthTx`].
pub(crate) struct Egress<'b, D> {
    pub dev: &'b mut D,
    pub now: Instant,
    pub link: &'b RefCell<Link>,
    pub caps: &'b phy::DeviceCapabilities,
}

impl<'a, D: warpwire_transport::PacketDevice> phy::Device for Egress<'a, D> {
    type RxToken<'b>
        = IpRx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = EthTx<'b, D::TxToken<'b>>
    where
        Self: 'b;

    fn receive(
        &mut self,
        _ts: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        None
    }

    fn transmit(&mut self, _ts: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        let (now, link) = (self.now, self.link);
        let Some(inner) = self.dev.transmit(now) else {
            link.borrow_mut().tx_exhausted = true;
            return None;
        };
        Some(EthTx { inner, now, link })
    }

    fn capabilities(&self) -> phy::DeviceCapabilities {
        self.caps.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> Link {
        let caps = warpwire_transport::DeviceCapabilities {
            max_frame: 1514,
            max_burst: 32,
            rx_checksum_offload: false,
            tx_checksum_offload: false,
            mac: [2, 0, 0, 0, 0, 1],
        };
        Link::new(
            [2, 0, 0, 0, 0, 1],
            Ipv4Addr::new(10, 0, 0, 1),
            24,
            None,
            &caps,
            true,
        )
    }

    #[test]
    fn packets_put_back_go_first_in_their_order_and_are_counted_once() {
        let mut l = link();
        let hop = Ipv4Addr::new(10, 0, 0, 2);
        for i in 0..4u8 {
            l.hold(hop, &[i; 100]);
        }
        l.learn(hop, [2, 0, 0, 0, 0, 2], Instant::now());
        assert_eq!(l.resolved, vec![hop]);
        l.resolved.clear();
        let (mut q, _) = l.take_held(hop).unwrap();
        assert_eq!(l.held_bytes, 0);
        q.pop_front(); // sent; the device then had no buffer
        l.hold(hop, &[9; 50]); // held meanwhile
        l.put_back(hop, q);
        assert_eq!(l.resolved, vec![hop], "sent again at the next drive");
        assert_eq!(l.held_bytes, 350);
        let (q, _) = l.take_held(hop).unwrap();
        let firsts: Vec<u8> = q.iter().map(|p| p[0]).collect();
        assert_eq!(firsts, [1, 2, 3, 9]);
        assert_eq!(l.held_bytes, 0);
    }
}
