//! Helpers for the privileged AF_XDP tests: a veth pair between two
//! network namespaces that the test creates and always deletes, running
//! code inside a namespace, and hand-built Ethernet/ARP/IPv4/UDP frames.
//!
//! Network safety: every interface and namespace is created here with a
//! name unique to this process and test, addresses are 10.77.<n>.0/24
//! inside those namespaces only, and the guards delete the namespaces (and
//! with them the veth pair and any XDP program on it) on every exit path,
//! panics included. Nothing touches an existing interface.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use warpwire_transport::{PacketDevice, RxToken, TxToken};

pub use warpwire_testkit::*;

/// Logs to the test's output (`RUST_LOG` filters; default: this crate at
/// debug, libbpf/libxdp at debug).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warpwire_xdp=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Panics with a clear message unless running as root; sets up logging.
pub fn require_root() {
    init_logging();
    // SAFETY: geteuid cannot fail and has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test needs root (network namespaces, veth, XDP); run it as root: \
             `cargo test -p warpwire-xdp -- --ignored --test-threads=1` (scripts/test.sh does)"
        );
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_quiet(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Output of a command that must succeed.
pub fn output(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(out.status.success(), "`{}` failed", args.join(" "));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by a veth pair; deleted on drop.
pub struct VethPair {
    /// Namespace of the XDP side.
    pub ns_a: String,
    /// Namespace of the kernel peer.
    pub ns_b: String,
    /// Interface in `ns_a` (the device binds here).
    pub if_a: String,
    /// Interface in `ns_b`.
    pub if_b: String,
    /// Address of the XDP side (not configured on `if_a`: the test's
    /// device answers for it).
    pub ip_a: Ipv4Addr,
    /// Address of the kernel peer (configured on `if_b`).
    pub ip_b: Ipv4Addr,
}

impl VethPair {
    /// Creates the namespaces and a veth pair with `queues` queues each
    /// way, both ends up, the peer end addressed.
    pub fn new(queues: u32) -> Self {
        require_root();
        let pid = std::process::id();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let net = (pid + seq * 7) % 250 + 1;
        let pair = VethPair {
            ns_a: format!("wwxdp-{pid}-{seq}-a"),
            ns_b: format!("wwxdp-{pid}-{seq}-b"),
            if_a: format!("wx{pid}n{seq}a"),
            if_b: format!("wx{pid}n{seq}b"),
            ip_a: Ipv4Addr::new(10, 77, net as u8, 1),
            ip_b: Ipv4Addr::new(10, 77, net as u8, 2),
        };
        assert!(pair.if_a.len() < 16, "interface name too long");
        // From here on, Drop cleans up whatever exists.
        let q = queues.to_string();
        run(&["ip", "netns", "add", &pair.ns_a]);
        run(&["ip", "netns", "add", &pair.ns_b]);
        run(&[
            "ip",
            "link",
            "add",
            &pair.if_a,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            &pair.ns_a,
            "type",
            "veth",
            "peer",
            "name",
            &pair.if_b,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            &pair.ns_b,
        ]);
        let cidr_b = format!("{}/24", pair.ip_b);
        run(&[
            "ip", "-n", &pair.ns_b, "addr", "add", &cidr_b, "dev", &pair.if_b,
        ]);
        for (ns, ifname) in [(&pair.ns_a, &pair.if_a), (&pair.ns_b, &pair.if_b)] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        }
        pair
    }

    /// MAC address of an interface, from `ip link` in its namespace.
    pub fn mac(&self, ns: &str, ifname: &str) -> [u8; 6] {
        let text = output(&["ip", "-n", ns, "-o", "link", "show", "dev", ifname]);
        let word = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .expect("link/ether in `ip link` output");
        parse_mac(word)
    }

    /// Whether `ip link` shows an XDP program on the XDP side.
    pub fn xdp_shown_on_a(&self) -> bool {
        output(&[
            "ip", "-n", &self.ns_a, "-d", "link", "show", "dev", &self.if_a,
        ])
        .contains("prog/xdp")
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end (and so the pair) and
        // any XDP program on it.
        let a = run_quiet(&["ip", "netns", "del", &self.ns_a]);
        let b = run_quiet(&["ip", "netns", "del", &self.ns_b]);
        if !(a && b) {
            eprintln!("cleanup: could not delete {} / {}", self.ns_a, self.ns_b);
        }
    }
}

/// Runs `f` on a thread that has entered namespace `ns` (sockets created
/// there belong to `ns`). Panics propagate.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: `file` is an open nsfs file of a network namespace;
            // this thread is ours and only used for `f`.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "setns into {path}: {}",
                std::io::Error::last_os_error()
            );
            f()
        });
        match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

/// A child process of this test, killed (SIGKILL, by its pid) and reaped
/// on drop.
pub struct ChildGuard(pub Option<std::process::Child>);

impl ChildGuard {
    /// Kills and reaps the child now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends one frame through the device: a transmit token, then a flush.
pub fn send_frame<D: PacketDevice>(dev: &mut D, frame: &[u8]) {
    let tok = dev.transmit(Instant::now()).expect("a free transmit frame");
    tok.consume(frame.len(), |buf| buf.copy_from_slice(frame));
    dev.flush().expect("flush");
}

/// Receives frames until `want` accepts one (returns its result) or the
/// deadline passes, answering ARP requests for `ip` with `mac` on the way.
/// `tick` runs every ~20 ms (e.g. to resend from the peer).
pub fn serve_until<D: PacketDevice, T>(
    dev: &mut D,
    mac: [u8; 6],
    ip: Ipv4Addr,
    within: Duration,
    mut tick: impl FnMut(),
    mut want: impl FnMut(&[u8]) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    let mut last_tick = Instant::now() - Duration::from_secs(1);
    while Instant::now() < deadline {
        if last_tick.elapsed() >= Duration::from_millis(20) {
            tick();
            last_tick = Instant::now();
        }
        let Some((rx, tx)) = dev.receive(Instant::now()) else {
            dev.flush().expect("flush");
            dev.wait(Some(Duration::from_millis(20))).expect("wait");
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
