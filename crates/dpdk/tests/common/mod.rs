//! Helpers for the DPDK tests: running each EAL user in a child process of
//! its own (EAL initialises once per process), EAL arguments without
//! hugepages and with a unique `--file-prefix`, a network namespace that
//! is always deleted, and hand-built Ethernet/ARP/IPv4/UDP frames.
//!
//! Safety of the environment: traffic stays in memory (net_ring, net_null,
//! net_memif) or on a TAP device inside a namespace created here with a
//! name unique to this process; addresses are 10.77.x.0/24 inside it only.
//! Every child has a deadline and is killed (by its own pid) when it
//! passes it; runtime directories and sockets are removed on every path.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Read;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warpwire_dpdk::Eal;
use warpwire_transport::{PacketDevice, RxToken, TxToken};

pub use warpwire_testkit::*;

/// Set in a child: `<test name>:<role>`.
pub const CHILD_ENV: &str = "WARPWIRE_DPDK_TEST_CHILD";
/// Printed by a child whose body finished.
pub const CHILD_OK: &str = "WARPWIRE-DPDK-CHILD-OK";

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warpwire_dpdk=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test needs root; run `cargo test -p warpwire-dpdk -- --ignored` as root (scripts/test.sh does)"
        );
    }
}

/// The role this process plays for `test`, if it is one of its children.
pub fn child_role(test: &str) -> Option<String> {
    let v = std::env::var(CHILD_ENV).ok()?;
    let (t, role) = v.split_once(':')?;
    (t == test).then(|| role.to_owned())
}

/// Runs `body` as the child and exits the process (0 on success; a panic
/// exits non-zero through libtest).
pub fn child_main(body: impl FnOnce()) {
    init_logging();
    body();
    println!("{CHILD_OK}");
}

/// Unique name fragment for this test process.
pub fn tag(what: &str) -> String {
    format!("ww-{what}-{}", std::process::id())
}

/// EAL arguments without hugepages or PCI, with a unique file prefix.
pub fn eal_args(prefix: &str, lcore: u32, extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        "warpwire-test",
        "--no-huge",
        "--no-pci",
        "-m",
        "256",
        "--no-shconf",
        "--log-level=lib.eal:error",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.extend([
        "--file-prefix".to_owned(),
        prefix.to_owned(),
        "-l".to_owned(),
        lcore.to_string(),
    ]);
    v.extend(extra.iter().cloned());
    v
}

pub fn init_eal(args: &[String]) -> Eal {
    Eal::init(args).unwrap_or_else(|e| panic!("EAL init: {e} ({e:?})"))
}

/// A child process of this test: killed and reaped on drop; its EAL
/// runtime directory is removed too.
pub struct ChildGuard {
    pub child: Option<Child>,
    pub name: String,
    pub prefix: String,
}

impl ChildGuard {
    /// Waits for the child (at most `within`), returns (success, stdout).
    pub fn finish(&mut self, within: Duration) -> (bool, String) {
        let mut c = self.child.take().expect("child");
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut out = String::new();
        if let Some(mut s) = c.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        let ok = status.is_some_and(|s| s.success()) && out.contains(CHILD_OK);
        if status.is_none() {
            out.push_str(&format!("\n[{} killed after {within:?}]", self.name));
        }
        (ok, out)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}

/// Starts this test binary again as `test`'s child in role `role`,
/// optionally through a wrapper command (`ip netns exec <ns>`).
pub fn spawn_child(
    test: &str,
    role: &str,
    prefix: &str,
    wrapper: &[&str],
    env: &[(&str, &str)],
) -> ChildGuard {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if let Some((first, rest)) = wrapper.split_first() {
        let mut c = Command::new(first);
        c.args(rest).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args([
        test,
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, format!("{test}:{role}"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    ChildGuard {
        child: Some(cmd.spawn().unwrap()),
        name: format!("{test}:{role}"),
        prefix: prefix.to_owned(),
    }
}

/// A network namespace, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: String) -> Self {
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs a command that must succeed.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// --- frames ------------------------------------------------------------------

/// Sends one frame: a transmit token, then flushes until the PMD took it.
pub fn send_frame<D: PacketDevice>(dev: &mut D, frame: &[u8]) {
    let tok = dev
        .transmit(Instant::now())
        .expect("a free transmit buffer");
    tok.consume(frame.len(), |buf| buf.copy_from_slice(frame));
    let deadline = Instant::now() + Duration::from_secs(2);
    while dev.tx_pending() > 0 {
        dev.flush().expect("flush");
        assert!(
            Instant::now() < deadline,
            "the PMD did not take the frame within 2 s"
        );
    }
}

/// Receives until `want` accepts a frame or `within` passes, answering
/// ARP requests for `ip` with `mac`. `tick` runs every ~20 ms.
pub fn serve_until<D: PacketDevice, T>(
    dev: &mut D,
    mac: [u8; 6],
    ip: Ipv4Addr,
    within: Duration,
    mut tick: impl FnMut(&mut D),
    mut want: impl FnMut(&[u8]) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    let mut last_tick = Instant::now() - Duration::from_secs(1);
    while Instant::now() < deadline {
        if last_tick.elapsed() >= Duration::from_millis(20) {
            tick(dev);
            last_tick = Instant::now();
        }
        let Some((rx, tx)) = dev.receive(Instant::now()) else {
            dev.flush().expect("flush");
            std::thread::sleep(Duration::from_micros(200));
            continue;
        };
        let frame = rx.consume(|b| b.to_vec());
        if let Some((peer_mac, peer_ip)) = arp_request_for(&frame, ip) {
            let reply = arp_reply(mac, ip, peer_mac, peer_ip);
            tx.consume(reply.len(), |buf| buf.copy_from_slice(&reply));
            dev.flush().expect("flush");
            continue;
        }
        drop(tx);
        if let Some(v) = want(&frame) {
            return Some(v);
        }
    }
    None
}
