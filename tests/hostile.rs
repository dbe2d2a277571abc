//! Hostile and careless peers against `warpwire serve` on the socket
//! backend over loopback (and the same battery against the uring backend), with the `warpwire-hostile` raw-socket peer
//! (crates/testkit). The same peer runs against the xdp server on veth
//! (tests/xdp_veth.rs) and the dpdk server on net_tap
//! (tests/dpdk_memif.rs), as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, report_field, rss_kib};

fn hostile(args: &[&str]) -> String {
    common::hostile_in(&[], args)
}

/// A peer that writes its requests and then shuts down its sending side
/// gets every reply whole, in order, then the server's FIN: after 1, 100
/// and 200 requests of 64 KiB, 20 times each.
#[test]
fn half_close_gets_every_reply_whole() {
    let s = Server::start(&["--transport", "socket"]);
    let a = s.addr.to_string();
    for count in ["1", "100", "200"] {
        let out = hostile(&["half-close", &a, count, "65536", "20"]);
        println!("{}", out.trim());
    }
}

/// 4,000 connections that each send a header declaring the largest frame
/// and nothing more: memory grows with bytes received, not bytes promised,
/// and a bystander's pings stay quick.
#[test]
fn header_flood_costs_little_memory() {
    let s = Server::start(&["--transport", "socket", "--workers", "1"]);
    let pid = s.child.id();
    let before = rss_kib(pid);
    let a = s.addr.to_string();
    let hostile =
        std::thread::spawn(move || hostile(&["header-flood", &a, "4000", "1048576", "500"]));
    let mut peak = before;
    while !hostile.is_finished() {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = hostile.join().unwrap();
    println!(
        "{} ; server RSS {before} KiB -> peak {peak} KiB",
        out.trim()
    );
    // 4,000 x 1 MiB declared = 4 GiB if memory followed the headers.
    assert!(
        peak.saturating_sub(before) < 256 * 1024,
        "RSS grew {} KiB for 80 KB of headers",
        peak - before
    );
    let max_us = report_field(&out, "max_us");
    assert!(max_us < 50_000, "bystander ping took {max_us} us");
}

/// CPU time (user + system) a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Under `ulimit -n 1024` (soft and hard) with the default
/// max_connections (10,000), the server says at start-up that it lowers
/// the limit to fit; 900 connections then get PONG up to the limit and
/// SERVER_BUSY past it, the server does not spin, and a connection held
/// from before is still served.
#[test]
fn a_low_descriptor_limit_gives_server_busy_not_a_spin() {
    let mut sh = Command::new("sh");
    sh.args([
        "-c",
        &format!(
            "ulimit -n 1024 && exec {} serve --transport socket --listen 127.0.0.1:0 --workers 2",
            common::BIN
        ),
    ]);
    let mut s = Server::spawn(sh);
    let (addr, child) = (s.addr, &mut s.child);
    let pid = child.id();
    let a = addr.to_string();
    let out = hostile(&["connections", &a, "900"]);
    println!("{}", out.trim());
    assert!(out.contains("failed=0"), "{out}");
    // 1024 - 256 reserved = 768 connections, the rest SERVER_BUSY.
    assert!(out.contains("answered=768"), "{out}");
    let busy = warpwire_frame::ErrorCode::ServerBusy.as_u16();
    assert!(out.contains(&format!("refused={{{busy}: 132}}")), "{out}");
    // Idle again: no spinning (a spinning worker burns ~100 ticks a second).
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    assert!(used < 20, "{used} ticks of CPU in an idle second");
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut log);
    }
    assert!(
        log.contains("lowering it"),
        "no warning about the limit: {log}"
    );
}

/// One client broadcasting 1 MiB bodies as fast as it can to 200
/// listeners that read as fast as they can: the sender is slowed, no
/// listener is evicted, and a bystander's pings stay quick. The bystander
/// receives the broadcasts too: its PONG overtakes queued relays but waits
/// for the one relay being written (frames do not interleave), about 1 MiB
/// at its share of the bandwidth (~70 ms here; 1.7-2.3 s before). A ping
/// that arrives while the bystander's own output cap (4 MiB of relays) is
/// full is not read until that drains, at ~15 MB/s per reader with 200
/// readers: 300-500 ms, in about one run of five. So the bound is on the
/// median and on the worst ping: the seconds-long stalls of old fail it.
#[test]
fn a_broadcast_storm_slows_the_sender_instead_of_evicting_readers() {
    let s = Server::start(&["--transport", "socket"]);
    let a = s.addr.to_string();
    let out = hostile(&["broadcast-storm", &a, "200", "1048000", "3000"]);
    println!("{}", out.trim());
    assert_eq!(report_field(&out, "listeners_left"), 200, "{out}");
    assert!(
        report_field(&out, "acked") > 0,
        "the sender got nothing through: {out}"
    );
    assert!(
        report_field(&out, "p50_us") < 20_000 && report_field(&out, "max_us") < 1_000_000,
        "bystander pings too slow: {out}"
    );
}

/// The same battery against the io_uring backend on loopback: half-close,
/// a header flood, a broadcast storm.
#[test]
fn hostile_peers_against_the_uring_backend() {
    let s = Server::start(&["--transport", "uring", "--workers", "1"]);
    common::hostile_battery(
        &[],
        &s.addr.to_string(),
        s.child.id(),
        &common::HostileLoad {
            trials: 5,
            flood_conns: 2000,
            // Each worker's ring holds 16 MiB of receive buffers, added
            // to what the flood costs.
            flood_rss_mib: 256,
            flood_ping_ms: 50,
            storm: (100, 256 * 1024, 2000),
        },
    );
}
