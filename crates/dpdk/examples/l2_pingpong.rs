//! Raw L2 ping-pong between two processes over a DPDK port: the floor of
//! any protocol on this path (no TCP, no framing). `scripts/bench-memif.sh`
//! runs it beside `warpwire bench` over the same memif link.
//!
//! ```text
//! l2_pingpong pong "EAL ARGS"            # echoes frames until idle for 3 s
//! l2_pingpong ping "EAL ARGS" COUNT      # prints median and p99 RTT in us
//! ```
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use warpwire_dpdk::{DeviceConfig, DpdkDevice, Eal, Mempool, Port, PortConfig};
use warpwire_transport::{PacketDevice, RxToken, TxToken};

/// IEEE 802 local experimental ethertype.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const FRAME: usize = 64;

fn open(eal_args: &str) -> DpdkDevice {
    let mut args = vec!["l2_pingpong".to_owned()];
    args.extend(eal_args.split_whitespace().map(str::to_owned));
    let eal = Eal::init(&args).expect("EAL");
    let id = *Port::ids(&eal).first().expect("a port");
    let pool = Mempool::new(&eal, "pp-mbufs", 4095, 128, 2048 + 128).expect("mempool");
    let port = Port::start(&eal, id, &PortConfig::default(), &pool).expect("port");
    port.wait_link_up(Duration::from_secs(10)).expect("link up");
    DpdkDevice::new(&port, 0, &pool, DeviceConfig::default()).expect("device")
}

fn send(dev: &mut DpdkDevice, seq: u64) {
    let now = Instant::now();
    let tx = loop {
        if let Some(t) = dev.transmit(now) {
            break t;
        }
        let _ = dev.flush();
    };
    tx.consume(FRAME, |b| {
        b.fill(0);
        b[0..6].copy_from_slice(&[0xff; 6]);
        b[12..14].copy_from_slice(&ETHERTYPE);
        b[14..22].copy_from_slice(&seq.to_be_bytes());
    });
    dev.flush().expect("flush");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let role = args.get(1).expect("ping|pong");
    let mut dev = open(args.get(2).expect("EAL args"));
    match role.as_str() {
        "pong" => {
            let mut last = Instant::now();
            let deadline = Instant::now() + Duration::from_secs(120);
            while last.elapsed() < Duration::from_secs(3) && Instant::now() < deadline {
                let mut echo = Vec::new();
                while let Some((rx, _tx)) = dev.receive(Instant::now()) {
                    rx.consume(|f| {
                        if f.len() >= 22 && f[12..14] == ETHERTYPE {
                            echo.push(u64::from_be_bytes(f[14..22].try_into().unwrap()));
                        }
                    });
                }
                for seq in echo {
                    send(&mut dev, seq);
                    last = Instant::now();
                }
            }
        }
        "ping" => {
            let count: usize = args.get(3).and_then(|c| c.parse().ok()).unwrap_or(20_000);
            let warm = 1_000;
            let mut rtts = Vec::with_capacity(count);
            for seq in 0..(warm + count) as u64 {
                let t0 = Instant::now();
                send(&mut dev, seq);
                let deadline = t0 + Duration::from_secs(1);
                let mut got = false;
                while !got && Instant::now() < deadline {
                    while let Some((rx, _tx)) = dev.receive(Instant::now()) {
                        rx.consume(|f| {
                            got |= f.len() >= 22
                                && f[12..14] == ETHERTYPE
                                && f[14..22] == seq.to_be_bytes();
                        });
                    }
                }
                assert!(got, "frame {seq} lost");
                if seq >= warm as u64 {
                    rtts.push(t0.elapsed());
                }
            }
            rtts.sort_unstable();
            let us = |q: f64| rtts[((rtts.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
            println!(
                "{{\"frames\": {count}, \"p50_us\": {:.2}, \"p99_us\": {:.2}}}",
                us(0.5),
                us(0.99)
            );
        }
        other => panic!("unknown role {other}"),
    }
}
