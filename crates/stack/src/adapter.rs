//! smoltcp's `phy::Device` over a warpwire [`PacketDevice`], with the
//! receive checksum policy and the pcap tap applied to every frame.

use std::cell::RefCell;
use std::time::Instant;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, Medium};
use warpwire_transport::PacketDevice;

use crate::checksum::{Verdict, check_tcp};
use crate::pcap::PcapWriter;

/// Per-stack counters and the optional capture, shared by the tokens of one
/// poll (both halves of a receive/transmit token pair touch them).
#[derive(Debug, Default)]
pub(crate) struct Taps {
    pub pcap: Option<PcapWriter>,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_partial_csum: u64,
    pub rx_corrupt: u64,
    pub pcap_errors: u64,
    /// Listened ports with no free listening socket right now: a new SYN
    /// to one is dropped (the client retransmits it), as Linux does when
    /// its SYN queue is full, instead of smoltcp's RST.
    pub syn_gated: Vec<u16>,
    pub syn_dropped: u64,
}

/// Whether `frame` is an IPv4 TCP SYN (without ACK) to one of `ports`.
fn is_gated_syn(frame: &[u8], ports: &[u16]) -> bool {
    if ports.is_empty() || frame.len() < 14 + 20 + 20 || frame[12..14] != [0x08, 0x00] {
        return false;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 6 || ihl < 20 || ip.len() < ihl + 20 {
        return false;
    }
    let tcp = &ip[ihl..];
    let dst = u16::from_be_bytes([tcp[2], tcp[3]]);
    let flags = tcp[13];
    flags & 0x02 != 0 && flags & 0x10 == 0 && ports.contains(&dst)
}

impl Taps {
    fn capture(&mut self, now: Instant, frame: &[u8]) {
        if let Some(p) = self.pcap.as_mut()
            && p.write(now, frame).is_err()
        {
            self.pcap_errors += 1;
        }
    }
}

pub(crate) struct Adapter<'a, D: PacketDevice> {
    pub dev: &'a mut D,
    pub now: Instant,
    /// Verify TCP checksums here (accepting partial ones) instead of in smoltcp.
    pub own_tcp_check: bool,
    pub taps: &'a RefCell<Taps>,
}

pub(crate) struct Rx<'b, T> {
    inner: T,
    now: Instant,
    own_tcp_check: bool,
    taps: &'b RefCell<Taps>,
}

pub(crate) struct Tx<'b, T> {
    inner: T,
    now: Instant,
    taps: &'b RefCell<Taps>,
}

impl<T: warpwire_transport::RxToken> phy::RxToken for Rx<'_, T> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let (now, own, taps) = (self.now, self.own_tcp_check, self.taps);
        self.inner.consume(|frame| {
            let mut t = taps.borrow_mut();
            t.rx_frames += 1;
            t.capture(now, frame);
            if is_gated_syn(frame, &t.syn_gated) {
                t.syn_dropped += 1;
                drop(t);
                return f(&[]);
            }
            if own {
                match check_tcp(frame) {
                    Verdict::Corrupt => {
                        t.rx_corrupt += 1;
                        drop(t);
                        // An empty frame fails smoltcp's Ethernet check: dropped.
                        return f(&[]);
                    }
                    Verdict::Partial => t.rx_partial_csum += 1,
                    Verdict::Valid | Verdict::NotTcp => {}
                }
            }
            drop(t);
            f(frame)
        })
    }
}

impl<T: warpwire_transport::TxToken> phy::TxToken for Tx<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let (now, taps) = (self.now, self.taps);
        self.inner.consume(len, |buf| {
            let r = f(buf);
            let mut t = taps.borrow_mut();
            t.tx_frames += 1;
            t.capture(now, buf);
            r
        })
    }
}

impl<'a, D: PacketDevice> phy::Device for Adapter<'a, D> {
    type RxToken<'b>
        = Rx<'b, D::RxToken<'b>>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b, D::TxToken<'b>>
    where
        Self: 'b;

    fn receive(
        &mut self,
        _ts: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (now, own, taps) = (self.now, self.own_tcp_check, self.taps);
        let (rx, tx) = self.dev.receive(now)?;
        Some((
            Rx {
                inner: rx,
                now,
                own_tcp_check: own,
                taps,
            },
            Tx {
                inner: tx,
                now,
                taps,
            },
        ))
    }

    fn transmit(&mut self, _ts: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        let (now, taps) = (self.now, self.taps);
        let tx = self.dev.transmit(now)?;
        Some(Tx {
            inner: tx,
            now,
            taps,
        })
    }

    fn capabilities(&self) -> phy::DeviceCapabilities {
        let c = self.dev.capabilities();
        let mut caps = phy::DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = c.max_frame;
        caps.max_burst_size = Some(c.max_burst);
        let mut sums = ChecksumCapabilities::default();
        // IPv4 header checksums are always complete on receive; TCP ones are
        // checked by `check_tcp` when the device hands over partial ones.
        sums.ipv4 = Checksum::Both;
        sums.tcp = if self.own_tcp_check {
            Checksum::Tx
        } else {
            Checksum::Both
        };
        if c.tx_checksum_offload {
            sums.tcp = match sums.tcp {
                Checksum::Both => Checksum::Rx,
                _ => Checksum::None,
            };
        }
        caps.checksum = sums;
        caps
    }
}
