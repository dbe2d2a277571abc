//! End to end: kernel TCP between namespaces A and B through
//! `warpwire-impair` running in namespace M, on real veth wires.
//!
//! ```text
//!   A: a0 10.77.5.1/24 ── veth ── M: m0 [warpwire-impair] m1 ── veth ── B: b0 10.77.5.2/24
//! ```
//!
//! Needs root (namespaces, packet sockets), `ip`, `ethtool`, `ping` and
//! `python3`. Every namespace has a per-run name and is deleted by a Drop
//! guard on every path; every process is bounded in time and killed by its
//! pid if it overstays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const IGNORE_REASON: &str = "needs root and network namespaces: scripts/test.sh runs it as root";

/// Bytes moved by each transfer.
const TRANSFER_BYTES: usize = 20 << 20;

/// The bridge stops by itself after this long even if the test is killed
/// before its Drop guards run.
const BRIDGE_LIFETIME: &str = "180s";

/// TCP port of the python sink in namespace B.
const PORT: u16 = 5001;

const SINK_PY: &str = r#"
import hashlib, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.77.5.2", int(sys.argv[1])))
s.listen(1)
s.settimeout(30)
print("listening", flush=True)
c, _ = s.accept()
c.settimeout(30)
h = hashlib.sha256()
n = 0
while True:
    d = c.recv(1 << 20)
    if not d:
        break
    h.update(d)
    n += len(d)
print("received", n, h.hexdigest(), flush=True)
"#;

const SOURCE_PY: &str = r#"
import socket, sys
s = socket.create_connection(("10.77.5.2", int(sys.argv[1])), timeout=30)
src = sys.stdin.buffer
while True:
    d = src.read(1 << 16)
    if not d:
        break
    s.sendall(d)
s.shutdown(socket.SHUT_WR)
s.settimeout(30)
s.recv(1)
s.close()
"#;

fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test {IGNORE_REASON}; it is not skipped when asked for"
    );
}

/// Runs `cmd args` to completion and panics, with its stderr, on failure.
fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Output of `cmd args` run inside namespace `ns`.
fn ns_output(ns: &str, cmd: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .unwrap_or_else(|e| panic!("spawning ip netns exec: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} in {ns} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces A, M, B and the two veth pairs; deleted on drop (deleting a
/// namespace deletes the veth ends in it, and so their peers).
struct Topology {
    a: String,
    m: String,
    b: String,
    created: Vec<String>,
}

impl Topology {
    fn new() -> Topology {
        static RUN: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}x{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        );
        let mut topo = Topology {
            a: format!("wwimpA{tag}"),
            m: format!("wwimpM{tag}"),
            b: format!("wwimpB{tag}"),
            created: Vec::new(),
        };
        for ns in [topo.a.clone(), topo.m.clone(), topo.b.clone()] {
            sh("ip", &["netns", "add", &ns]);
            topo.created.push(ns);
        }
        let (a, m, b) = (topo.a.as_str(), topo.m.as_str(), topo.b.as_str());
        // Both ends are created directly inside the namespaces: no interface
        // of the root namespace is ever touched or even named.
        sh(
            "ip",
            &[
                "link", "add", "a0", "netns", a, "type", "veth", "peer", "name", "m0", "netns", m,
            ],
        );
        sh(
            "ip",
            &[
                "link", "add", "m1", "netns", m, "type", "veth", "peer", "name", "b0", "netns", b,
            ],
        );
        sh("ip", &["-n", a, "addr", "add", "10.77.5.1/24", "dev", "a0"]);
        sh("ip", &["-n", b, "addr", "add", "10.77.5.2/24", "dev", "b0"]);
        for (ns, dev) in [(a, "a0"), (m, "m0"), (m, "m1"), (b, "b0")] {
            // A packet socket can only send MTU-sized frames: the kernel
            // ends must segment before the wire (TSO off: the stack then
            // segments in software) and the bridge ends must not coalesce
            // (GRO, off by default on veth). Checksum offload stays on: the
            // bridge completes partial checksums.
            sh(
                "ip",
                &[
                    "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro",
                    "off",
                ],
            );
            sh("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        topo
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.created.drain(..) {
            let _ignored = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A child process killed (by its own pid) and reaped on drop unless it
/// already exited.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc { name, child }
    }

    /// Waits until the process exits or `limit` passes (then kills it and
    /// panics).
    fn wait_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ignored = self.child.kill();
                let _ignored = self.child.wait();
                panic!("{} did not finish within {limit:?}", self.name);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ignored = self.child.kill();
            let _ignored = self.child.wait();
        }
    }
}

/// Lines of a child's stdout, read on a thread so waits can time out.
fn lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &mpsc::Receiver<String>, what: &str, limit: Duration) -> String {
    rx.recv_timeout(limit)
        .unwrap_or_else(|e| panic!("no {what} line within {limit:?}: {e}"))
}

/// The bridge process in namespace M and its stdout.
struct Bridge {
    proc: Proc,
    out: mpsc::Receiver<String>,
}

impl Bridge {
    fn start(topo: &Topology, fault_args: &[&str]) -> Bridge {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &topo.m])
            .arg(env!("CARGO_BIN_EXE_warpwire-impair"))
            .args(["--a", "m0", "--b", "m1", "--seed", "7"])
            .args(["--duration", BRIDGE_LIFETIME])
            .args(fault_args)
            .stdout(Stdio::piped());
        let mut proc = Proc::spawn("warpwire-impair", &mut cmd);
        let out = lines(proc.child.stdout.take().expect("stdout was piped"));
        let first = next_line(&out, "start", Duration::from_secs(10));
        assert_eq!(first, "warpwire-impair forwarding m0 <-> m1");
        Bridge { proc, out }
    }

    /// Stops the bridge with SIGTERM and returns its stats as key/value
    /// pairs.
    fn stop(mut self) -> Vec<(String, u64)> {
        let pid = libc::pid_t::try_from(self.proc.child.id()).expect("pid fits pid_t");
        // SAFETY: pid is our own child, not yet reaped (so not reused):
        // `ip netns exec` execs the bridge in place, so it is the bridge.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
        let status = self.proc.wait_within(Duration::from_secs(10));
        assert!(status.success(), "bridge exited with {status}");
        let line = next_line(&self.out, "stats", Duration::from_secs(5));
        eprintln!("{line}");
        let body = line
            .strip_prefix("warpwire-impair stats: ")
            .unwrap_or_else(|| panic!("unexpected stats line {line:?}"));
        body.split_whitespace()
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("key=value");
                (k.to_owned(), v.parse().expect("numeric stat"))
            })
            .collect()
    }
}

fn stat(stats: &[(String, u64)], key: &str) -> u64 {
    stats
        .iter()
        .find(|(k, _)| k == key)
        .map(|&(_, v)| v)
        .unwrap_or_else(|| panic!("no {key} in stats"))
}

/// Deterministic, incompressible test data (xorshift64*).
fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sends `data` from A to B over kernel TCP through the bridge; returns
/// the sink's byte count and SHA-256 and how long it took.
fn transfer(topo: &Topology, data: &[u8], limit: Duration) -> (usize, String, Duration) {
    let port = PORT.to_string();
    let mut sink_cmd = Command::new("ip");
    sink_cmd
        .args(["netns", "exec", &topo.b, "python3", "-c", SINK_PY, &port])
        .stdout(Stdio::piped());
    let mut sink = Proc::spawn("python sink", &mut sink_cmd);
    let sink_out = lines(sink.child.stdout.take().expect("stdout was piped"));
    assert_eq!(
        next_line(&sink_out, "listening", Duration::from_secs(10)),
        "listening"
    );

    let started = Instant::now();
    let mut source_cmd = Command::new("ip");
    source_cmd
        .args(["netns", "exec", &topo.a, "python3", "-c", SOURCE_PY, &port])
        .stdin(Stdio::piped());
    let mut source = Proc::spawn("python source", &mut source_cmd);
    let mut stdin = source.child.stdin.take().expect("stdin was piped");
    let data_owned = data.to_vec();
    // The writer ends when the data is written or the source dies (EPIPE);
    // either way the sink's digest decides.
    let writer = thread::spawn(move || {
        let _ignored = stdin.write_all(&data_owned);
    });
    let done = next_line(&sink_out, "received", limit);
    let elapsed = started.elapsed();
    let _ignored = writer.join();
    source.wait_within(Duration::from_secs(35));
    sink.wait_within(Duration::from_secs(5));
    let mut parts = done.split_whitespace();
    assert_eq!(parts.next(), Some("received"), "sink said {done:?}");
    let n = parts
        .next()
        .and_then(|n| n.parse().ok())
        .expect("byte count");
    let digest = parts.next().expect("digest").to_owned();
    (n, digest, elapsed)
}

/// The receiver-side counters that show a corrupted frame was detected
/// and dropped: IPv4 header errors and TCP checksum errors.
fn detected_corruption(ns: &str) -> u64 {
    let snmp = ns_output(ns, &["cat", "/proc/net/snmp"]);
    let field = |proto: &str, name: &str| -> u64 {
        let mut rows = snmp
            .lines()
            .filter(|l| l.starts_with(&format!("{proto}: ")));
        let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
            return 0;
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    field("Ip", "InHdrErrors") + field("Tcp", "InCsumErrors")
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it as root"]
fn clean_wire_carries_ping_and_20_mb_intact() {
    require_root();
    let topo = Topology::new();
    let bridge = Bridge::start(&topo, &[]);

    let ping = ns_output(
        &topo.a,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.5.2"],
    );
    assert!(ping.contains("3 received"), "ping: {ping}");
    // Each way waits at least the default 200us delay.
    let rtt_min_ms: f64 = ping
        .split("= ")
        .nth(1)
        .and_then(|rtts| rtts.split('/').next())
        .and_then(|min| min.parse().ok())
        .unwrap_or_else(|| panic!("no rtt in ping output: {ping}"));
    assert!(
        rtt_min_ms >= 0.4,
        "rtt {rtt_min_ms} ms below twice the delay"
    );

    let data = payload(TRANSFER_BYTES);
    let (n, digest, took) = transfer(&topo, &data, Duration::from_secs(60));
    eprintln!("clean wire: {n} bytes in {took:?}");
    assert_eq!(n, data.len());
    assert_eq!(digest, sha256_hex(&data));

    let stats = bridge.stop();
    assert_eq!(stat(&stats, "lost"), 0);
    assert_eq!(stat(&stats, "oversize"), 0, "offloads were not off");
    // 20 MiB in 1448-byte segments is 14,482 data frames.
    assert!(stat(&stats, "forwarded_a_to_b") >= 14_482);
    assert!(
        stat(&stats, "checksums_completed") > 0,
        "veth should deliver partial checksums"
    );
    drop(topo);
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it as root"]
fn faulty_wire_still_delivers_20_mb_intact() {
    require_root();
    let topo = Topology::new();
    let bridge = Bridge::start(
        &topo,
        &[
            "--loss",
            "0.01",
            "--reorder",
            "0.01",
            "--duplicate",
            "0.01",
            "--corrupt",
            "0.001",
        ],
    );
    let before = detected_corruption(&topo.a) + detected_corruption(&topo.b);

    let data = payload(TRANSFER_BYTES);
    let (n, digest, took) = transfer(&topo, &data, Duration::from_secs(90));
    eprintln!("faulty wire: {n} bytes in {took:?}");
    assert_eq!(n, data.len());
    assert_eq!(
        digest,
        sha256_hex(&data),
        "corruption reached the application"
    );

    let stats = bridge.stop();
    let detected = detected_corruption(&topo.a) + detected_corruption(&topo.b) - before;
    let corrupted = stat(&stats, "corrupted");
    let corrupted_ipv4 = stat(&stats, "corrupted_ipv4");
    eprintln!(
        "corrupted by the bridge: {corrupted} ({corrupted_ipv4} IPv4), \
         dropped by the receivers' checksums: {detected}"
    );
    assert!(corrupted > 0);
    assert!(stat(&stats, "lost") > 0);
    assert!(stat(&stats, "duplicated") > 0);
    assert!(stat(&stats, "reordered") > 0);
    assert_eq!(stat(&stats, "oversize"), 0, "offloads were not off");
    assert_eq!(stat(&stats, "overflow") + stat(&stats, "tx_dropped"), 0);
    // Every corrupted IPv4 frame was delivered and must have been dropped
    // by a checksum (the IPv4 header's or the TCP one the bridge
    // completed). Fewer means corrupted data was accepted somewhere.
    assert_eq!(
        detected, corrupted_ipv4,
        "receivers dropped a different number of frames than were corrupted"
    );
    drop(topo);
}
