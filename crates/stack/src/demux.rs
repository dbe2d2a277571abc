//! The demux in front of smoltcp: a received frame is parsed once
//! (Ethernet, IPv4, TCP) and its flow found by a hash of the 4-tuple, so
//! the work per segment does not grow with the number of connections.
//!
//! The table hashes with foldhash, seeded at random per table: peers
//! choose the source address and port of what they send, so the hash must
//! be keyed (an unkeyed hash such as FxHash lets a flood of chosen 4-tuples
//! collide); std's SipHash is keyed too but cost about 300 instructions per
//! lookup under callgrind, most of the demux's cost per segment.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use smoltcp::iface::SocketHandle;

/// Ethernet header length.
const ETH: usize = 14;

/// A TCP flow as this stack sees it (the local address is always ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Peer address.
    pub remote: Ipv4Addr,
    /// Peer port.
    pub remote_port: u16,
    /// Our port.
    pub local_port: u16,
}

/// What a received frame is, as far as routing it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// ARP.
    Arp,
    /// An unfragmented TCP segment to our address.
    Tcp {
        /// Its flow.
        key: FlowKey,
        /// SYN set and ACK clear: a new connection.
        syn: bool,
        /// SYN set, with or without ACK: it may carry an MSS option.
        any_syn: bool,
        /// Its sequence number.
        seq: u32,
        /// The data bytes it carries, by its headers' lengths (0 when
        /// they do not add up).
        data: u32,
        /// The sender's MAC (learnt as a neighbour).
        src_mac: [u8; 6],
    },
    /// Other IPv4 to us or broadcast (ICMP, UDP, fragments): the control
    /// interface answers what it can.
    OtherIp {
        /// Sender address and MAC.
        src: Ipv4Addr,
        /// The sender's MAC.
        src_mac: [u8; 6],
    },
    /// Anything else (not ours, IPv6, malformed): dropped.
    Drop,
}

/// Classifies one Ethernet frame for the stack whose address is `ours`.
/// Never panics on any input (a proptest checks it).
pub fn classify(frame: &[u8], ours: Ipv4Addr) -> Frame {
    if frame.len() < ETH + 20 {
        return if frame.len() >= ETH && frame[12..14] == [0x08, 0x06] {
            Frame::Arp
        } else {
            Frame::Drop
        };
    }
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&frame[6..12]);
    match [frame[12], frame[13]] {
        [0x08, 0x06] => return Frame::Arp,
        [0x08, 0x00] => {}
        _ => return Frame::Drop,
    }
    let ip = &frame[ETH..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return Frame::Drop;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if dst != ours || ip[9] != 6 || fragment {
        return Frame::OtherIp { src, src_mac };
    }
    let tcp = &ip[ihl..];
    if tcp.len() < 20 {
        return Frame::Drop;
    }
    let flags = tcp[13];
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let data = total.saturating_sub(ihl + usize::from(tcp[12] >> 4) * 4);
    Frame::Tcp {
        key: FlowKey {
            remote: src,
            remote_port: u16::from_be_bytes([tcp[0], tcp[1]]),
            local_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        },
        syn: flags & 0x02 != 0 && flags & 0x10 == 0 && flags & 0x04 == 0,
        any_syn: flags & 0x02 != 0,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        data: data as u32,
        src_mac,
    }
}

/// Where a flow lives: its shard and its socket there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Shard index.
    pub shard: u32,
    /// The socket in that shard's set.
    pub handle: SocketHandle,
}

/// The flow table: one entry per connection and half-open handshake.
/// Generic over the hasher only so that tests can force every key into the
/// same bucket chain.
#[derive(Debug, Default)]
pub struct Flows<S = foldhash::quality::RandomState> {
    map: HashMap<FlowKey, Place, S>,
}

impl<S: std::hash::BuildHasher> Flows<S> {
    /// An empty table hashing with `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        Self {
            map: HashMap::with_hasher(hasher),
        }
    }

    /// Where `key` lives.
    pub fn get(&self, key: &FlowKey) -> Option<Place> {
        self.map.get(key).copied()
    }

    /// Records a flow; `false` (and nothing changed) when the key is taken.
    pub fn insert(&mut self, key: FlowKey, place: Place) -> bool {
        match self.map.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(place);
                true
            }
        }
    }

    /// Forgets a flow, if it is at `place`.
    pub fn remove(&mut self, key: &FlowKey, place: Place) {
        if self.map.get(key) == Some(&place) {
            self.map.remove(key);
        }
    }

    /// Whether `key` is taken.
    pub fn contains(&self, key: &FlowKey) -> bool {
        self.map.contains_key(key)
    }

    /// Flows recorded.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::hash::BuildHasherDefault;

    fn frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 6;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[47] = flags;
        f
    }

    const US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    #[test]
    fn classifies_syn_ack_arp_and_strangers() {
        let f = frame([10, 0, 0, 2], [10, 0, 0, 1], 5000, 80, 0x02);
        let Frame::Tcp {
            key,
            syn,
            any_syn,
            seq,
            data,
            src_mac,
        } = classify(&f, US)
        else {
            panic!("not tcp");
        };
        assert!(syn && any_syn);
        // Lengths that do not add up (total 0) count no data.
        assert_eq!((seq, data), (0, 0));
        assert_eq!(src_mac, [2, 0, 0, 0, 0, 9]);
        assert_eq!(
            key,
            FlowKey {
                remote: Ipv4Addr::new(10, 0, 0, 2),
                remote_port: 5000,
                local_port: 80
            }
        );
        // A data segment: its sequence number and data length, by the IP
        // total length less both headers (padding after it not counted).
        let mut d = frame([10, 0, 0, 2], [10, 0, 0, 1], 5000, 80, 0x10);
        d[16..18].copy_from_slice(&(40u16 + 7).to_be_bytes());
        d[38..42].copy_from_slice(&0xfffffff0u32.to_be_bytes());
        d[46] = 5 << 4;
        d.extend_from_slice(b"payload\0\0\0");
        assert!(matches!(
            classify(&d, US),
            Frame::Tcp {
                seq: 0xfffffff0,
                data: 7,
                ..
            }
        ));
        let f = frame([10, 0, 0, 2], [10, 0, 0, 1], 5000, 80, 0x12);
        assert!(matches!(
            classify(&f, US),
            Frame::Tcp {
                syn: false,
                any_syn: true,
                ..
            }
        ));
        let f = frame([10, 0, 0, 2], [10, 0, 0, 7], 5000, 80, 0x02);
        assert!(matches!(classify(&f, US), Frame::OtherIp { .. }));
        let mut f = frame([10, 0, 0, 2], [10, 0, 0, 1], 5000, 80, 0x02);
        f[20] = 0x20; // more fragments
        assert!(matches!(classify(&f, US), Frame::OtherIp { .. }));
        let mut f = frame([10, 0, 0, 2], [10, 0, 0, 1], 5000, 80, 0x02);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(classify(&f, US), Frame::Arp);
        assert_eq!(classify(&f[..20], US), Frame::Arp);
        assert_eq!(classify(&f[..10], US), Frame::Drop);
    }

    /// A hasher with two outputs: collisions on nearly every insert.
    #[derive(Default)]
    struct TwoBuckets(u64);

    impl std::hash::Hasher for TwoBuckets {
        fn finish(&self) -> u64 {
            self.0 & 1
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 ^= u64::from(*b);
            }
        }
    }

    fn place(i: u32) -> Place {
        Place {
            shard: i,
            handle: SocketHandle::default(),
        }
    }

    proptest! {
        /// Any bytes: classify never panics.
        #[test]
        fn classify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = classify(&bytes, US);
        }

        /// The flow table against a model: random 4-tuples drawn from a
        /// small space (so keys repeat), inserted, looked up and removed in
        /// random order, with a hasher that puts every key in one of two
        /// buckets (so every lookup walks colliding entries); a segment is
        /// never routed to another flow's place.
        #[test]
        fn flows_match_a_model(ops in proptest::collection::vec(
            (0u8..3, 0u8..4, 0u16..4, 0u16..3, 0u32..1000), 1..400)) {
            let mut flows = Flows::with_hasher(BuildHasherDefault::<TwoBuckets>::default());
            let mut model = std::collections::BTreeMap::new();
            for (op, ip, rport, lport, shard) in ops {
                let key = FlowKey {
                    remote: Ipv4Addr::new(10, 0, 0, ip),
                    remote_port: rport,
                    local_port: lport,
                };
                match op {
                    0 => {
                        let fresh = !model.contains_key(&key);
                        prop_assert_eq!(flows.insert(key, place(shard)), fresh);
                        model.entry(key).or_insert(shard);
                    }
                    1 => {
                        if let Some(&s) = model.get(&key) {
                            flows.remove(&key, place(s + 1));
                            prop_assert!(flows.contains(&key), "removed by a stale place");
                            flows.remove(&key, place(s));
                            model.remove(&key);
                        }
                    }
                    _ => {}
                }
                prop_assert_eq!(flows.get(&key).map(|p| p.shard), model.get(&key).copied());
                prop_assert_eq!(flows.len(), model.len());
            }
        }
    }
}
