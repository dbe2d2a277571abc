//! The stack's own cost of one small request and its reply: two
//! [`StackTransport`]s over an in-memory link with no delay, driven from one
//! thread, one message in flight. No device, no engine, no idle polling: what
//! this prints is the CPU both ends of smoltcp plus warpwire's stack code
//! spend per round trip, and a profile of it (`perf record` on this example)
//! shows where.
//!
//! ```sh
//! cargo run --release -p warpwire-stack --example sim_pingpong -- 200000 88
//! ```
//!
//! Arguments: round trips (default 200,000), message bytes (default 88: a
//! 64 B ECHO frame of warpwire's protocol with its header and trailer),
//! `1` or `0` for segmentation offload on or off (default on;
//! `StackConfig::gso`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Instant;

use warpwire_stack::sim::Connected;
use warpwire_transport::{Events, Transport};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 2);

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u64 = args
        .next()
        .map_or(200_000, |a| a.parse().expect("round trips"));
    let size: usize = args
        .next()
        .map_or(88, |a| a.parse().expect("message bytes"));
    let gso = args.next().is_none_or(|a| a != "0");
    let Connected {
        server: mut srv,
        client: mut cli,
        server_conn: s,
        client_conn: c,
    } = Connected::on_clean_link(SERVER, CLIENT, gso).unwrap();
    let mut ev = Events::default();
    let msg = vec![0x5a_u8; size];
    let mut buf = vec![0u8; 64 * 1024];
    let t0 = Instant::now();
    for _ in 0..rounds {
        // Request: client send, both ends polled until the server has it all.
        assert_eq!(cli.send(c, &msg).unwrap(), size);
        let mut got = 0;
        while got < size {
            let now = Instant::now();
            cli.flush(now).unwrap();
            srv.poll(now, &mut ev).unwrap();
            got += srv.recv(s, &mut buf[got..size]).unwrap();
        }
        // Reply: the same bytes back.
        assert_eq!(srv.send(s, &buf[..size]).unwrap(), size);
        let mut back = 0;
        while back < size {
            let now = Instant::now();
            srv.flush(now).unwrap();
            cli.poll(now, &mut ev).unwrap();
            back += cli.recv(c, &mut buf[back..size]).unwrap();
        }
    }
    let ns = t0.elapsed().as_nanos() as f64 / rounds as f64;
    println!(
        "{rounds} round trips of {size} B through two stacks on one thread: {ns:.0} ns each \
         (both ends, send to reply received)"
    );
}
