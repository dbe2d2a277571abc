//! The stack's own cost of bulk data: one connection between two
//! [`StackTransport`]s over the in-memory link (no delay, no faults),
//! driven from one thread, the client sending as fast as the server
//! reads. What this prints is the CPU both ends spend per megabyte and
//! how many wire frames carried it; under `valgrind --tool=callgrind` its
//! instruction count compares two builds exactly on a noisy machine.
//!
//! ```sh
//! cargo run --release -p warpwire-stack --example sim_bulk -- 200 1
//! ```
//!
//! Arguments: megabytes (default 200), `1` or `0` for segmentation
//! offload on or off (default on; `StackConfig::gso`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use warpwire_stack::sim::Connected;
use warpwire_transport::{Events, Transport};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 2);

fn main() {
    let mut args = std::env::args().skip(1);
    let mb: u64 = args.next().map_or(200, |a| a.parse().expect("megabytes"));
    let gso = args.next().is_none_or(|a| a != "0");
    let Connected {
        server: mut srv,
        client: mut cli,
        server_conn: s,
        client_conn: c,
    } = Connected::on_clean_link(SERVER, CLIENT, gso).unwrap();
    let mut ev = Events::default();
    let total = mb * 1_000_000;
    let chunk: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut sent, mut got) = (0u64, 0u64);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(120);
    while got < total {
        assert!(
            Instant::now() < deadline,
            "stalled at {got} of {total} bytes"
        );
        let now = Instant::now();
        if sent < total {
            let at = (sent % chunk.len() as u64) as usize;
            let n = (total - sent).min((chunk.len() - at) as u64) as usize;
            sent += cli.send(c, &chunk[at..at + n]).unwrap() as u64;
        }
        cli.poll(now, &mut ev).unwrap();
        srv.poll(now, &mut ev).unwrap();
        loop {
            let n = srv.recv(s, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            // The bytes are the pattern sent, position for position.
            let mut at = 0;
            while at < n {
                let p = ((got + at as u64) % chunk.len() as u64) as usize;
                let k = (n - at).min(chunk.len() - p);
                assert!(
                    buf[at..at + k] == chunk[p..p + k],
                    "corrupt at {}",
                    got + at as u64
                );
                at += k;
            }
            got += n as u64;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let (cs, ss) = (cli.stats(), srv.stats());
    println!(
        "{mb} MB through two stacks on one thread, gso {}: {:.0} MB/s; client sent {} frames \
         ({} cut from {} large packets), server sent {}",
        if gso { "on" } else { "off" },
        total as f64 / secs / 1e6,
        cs.tx_frames,
        cs.gso_segments,
        cs.gso_packets,
        ss.tx_frames,
    );
}
