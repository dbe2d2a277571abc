//! AF_XDP end to end, as root: network namespaces joined by veth pairs that
//! these tests create and delete. `warpwire serve --transport xdp` runs in
//! one; in the other, (1) kernel TCP clients (the socket backend) prove
//! interop and (2) `--transport xdp` clients put bypass at both ends; then
//! the server is SIGKILLed and restarted over its stale XDP program. A
//! second test sends 50 MB of DATA through loss, reordering, duplication
//! and corruption, injected by `warpwire-impair` in a middle namespace
//! (this kernel has no netem), and compares hashes.
//!
//! Ignored by default (needs root, veth, AF_XDP): `scripts/test.sh` runs it
//! as root with `--run-ignored`, so elsewhere it shows as skipped, never as
//! passed. Traffic never leaves the two namespaces.
#![cfg(feature = "xdp")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_warpwire");
/// The impairment bridge (a user-space netem: this kernel has no netem),
/// built beside the warpwire binary by `cargo build --workspace`.
fn impair_bin() -> String {
    let p = std::path::Path::new(BIN).with_file_name("warpwire-impair");
    assert!(
        p.exists(),
        "{} missing: build the workspace first (scripts/test.sh does)",
        p.display()
    );
    p.display().to_string()
}
const SERVER_IP: &str = "10.77.0.1";
const KERNEL_IP: &str = "10.77.0.2/24";
const XDP_CLIENT_IP: &str = "10.77.0.3/24";

fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Namespaces A (server) and B (clients) joined by veth, directly or
/// through a middle namespace M running the impairment bridge; all removed
/// on drop (deleting a namespace removes its veth ends and any XDP program).
struct Pair {
    a: String,
    b: String,
    m: Option<String>,
    va: String,
    vb: String,
    /// The binary every process runs: the test build, or the release
    /// build for the throughput test.
    bin: &'static str,
}

impl Pair {
    fn new(tag: &str) -> Self {
        Self::build(tag, false)
    }

    fn impaired(tag: &str) -> Self {
        Self::build(tag, true)
    }

    fn build(tag: &str, impaired: bool) -> Self {
        assert!(
            common::is_root(),
            "this test needs root (scripts/test.sh runs it as root)"
        );
        let id = format!("{}{tag}", std::process::id() % 100_000);
        let p = Self {
            a: format!("ww-xa-{id}"),
            b: format!("ww-xb-{id}"),
            m: impaired.then(|| format!("ww-xm-{id}")),
            va: format!("wxa{id}"),
            vb: format!("wxb{id}"),
            bin: BIN,
        };
        sh(&["ip", "netns", "add", &p.a]);
        sh(&["ip", "netns", "add", &p.b]);
        match &p.m {
            None => sh(&[
                "ip", "link", "add", &p.va, "netns", &p.a, "type", "veth", "peer", "name", &p.vb,
                "netns", &p.b,
            ]),
            Some(m) => {
                sh(&["ip", "netns", "add", m]);
                let (m0, m1) = (format!("wm0{id}"), format!("wm1{id}"));
                sh(&[
                    "ip", "link", "add", &p.va, "netns", &p.a, "type", "veth", "peer", "name", &m0,
                    "netns", m,
                ]);
                sh(&[
                    "ip", "link", "add", &m1, "netns", m, "type", "veth", "peer", "name", &p.vb,
                    "netns", &p.b,
                ]);
                sh(&["ip", "-n", m, "link", "set", "lo", "up"]);
                for dev in [&m0, &m1] {
                    sh(&["ip", "-n", m, "link", "set", dev, "up"]);
                }
            }
        }
        sh(&["ip", "-n", &p.b, "addr", "add", KERNEL_IP, "dev", &p.vb]);
        for (ns, dev) in [(&p.a, &p.va), (&p.b, &p.vb)] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        p
    }

    fn middle_ifaces(&self) -> (String, String) {
        let id = self.va.trim_start_matches("wxa");
        (format!("wm0{id}"), format!("wm1{id}"))
    }

    /// A bounded client command in `ns` (killed by `timeout` after 120 s).
    fn cmd(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "timeout", "120", self.bin])
            .args(args)
            .env("WARPWIRE_LOG", "warn");
        c
    }

    /// A server in `ns`: `ip netns exec` execs it, so the child's pid is the
    /// server's own and a SIGKILL to it is a real crash.
    fn server_cmd(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, self.bin])
            .args(args)
            .env("WARPWIRE_LOG", "warn");
        c
    }

    /// A client's options for its own AF_XDP socket on B's veth end.
    fn xdp_client(&self) -> [&str; 6] {
        [
            "--transport",
            "xdp",
            "--iface",
            &self.vb,
            "--ip",
            XDP_CLIENT_IP,
        ]
    }

    fn run_b(&self, args: &[&str]) -> Output {
        self.cmd(&self.b, args).output().unwrap()
    }

    fn ok_b(&self, args: &[&str]) -> String {
        let o = self.run_b(args);
        assert!(
            o.status.success(),
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn serve(&self, extra: &[&str]) -> Server {
        let mut args = vec![
            "serve",
            "--transport",
            "xdp",
            "--iface",
            &self.va,
            "--ip",
            "10.77.0.1/24",
        ];
        args.extend_from_slice(&["--listen", "0.0.0.0:7077", "--workers", "1"]);
        args.extend_from_slice(extra);
        let mut child = self
            .server_cmd(&self.a, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        match common::first_line(&mut child, Duration::from_secs(20)) {
            Some(line) => assert!(
                line.starts_with("warpwire listening on 10.77.0.1:7077"),
                "{line}"
            ),
            None => {
                let _ = child.kill();
                let o = child.wait_with_output().unwrap();
                panic!(
                    "xdp server did not start: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
        Server { child }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [Some(&self.a), Some(&self.b), self.m.as_ref()]
            .into_iter()
            .flatten()
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

struct Server {
    child: Child,
}

impl Server {
    /// SIGKILL, as a crash would (our own child, by pid).
    fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        sh(&["kill", "-TERM", &pid]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `warpwire client ADDR [via...] args...` (or `bench`) in namespace B.
fn in_b(p: &Pair, via: &[&str], cmd: &str, args: &[&str]) -> Output {
    let addr = format!("{SERVER_IP}:7077");
    let mut a = vec![cmd, addr.as_str()];
    a.extend_from_slice(via);
    a.extend_from_slice(args);
    p.run_b(&a)
}

fn ok_in_b(p: &Pair, via: &[&str], cmd: &str, args: &[&str]) -> String {
    let o = in_b(p, via, cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?} via {via:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn err_in_b(p: &Pair, via: &[&str], args: &[&str]) -> String {
    let o = in_b(p, via, "client", args);
    assert!(!o.status.success(), "{args:?} via {via:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every protocol feature a single client can drive, against the xdp
/// server: with `via` empty the client is the kernel's TCP (the socket
/// backend); with the xdp flags it has its own AF_XDP socket.
fn battery(p: &Pair, via: &[&str]) {
    assert_eq!(
        ok_in_b(p, via, "client", &["echo", "through the stack"]).trim(),
        "through the stack"
    );
    assert!(
        ok_in_b(
            p,
            via,
            "client",
            &["ping", "--count", "3", "--interval", "10ms"]
        )
        .contains("seq=2")
    );
    assert_eq!(
        ok_in_b(p, via, "client", &["app", "0x80", "abc"]).trim(),
        "cba"
    );
    assert_eq!(
        ok_in_b(p, via, "client", &["app", "0x81", "abc"]).trim(),
        "ABC"
    );
    assert!(ok_in_b(p, via, "client", &["data", "twelve bytes"]).contains("12 bytes accepted"));
    assert!(ok_in_b(p, via, "client", &["stats"]).contains("transport     xdp"));
    assert!(
        ok_in_b(p, via, "client", &["broadcast", "nobody else"])
            .contains("delivered to 0 recipient")
    );
    assert!(
        ok_in_b(p, via, "client", &["auth", "x", "y"]).contains("refused"),
        "no users configured"
    );
    assert!(err_in_b(p, via, &["app", "0x99", "x"]).contains("UNKNOWN_TYPE"));
    let bench = ok_in_b(
        p,
        via,
        "bench",
        &[
            "--connections",
            "2",
            "--depth",
            "8",
            "--count",
            "4000",
            "--json",
        ],
    );
    common::assert_bench_clean(&bench);
}

/// Authentication against a server started with --require-auth.
fn auth_battery(p: &Pair, via: &[&str], token: &str) {
    let mut with = via.to_vec();
    with.extend_from_slice(&["--user", "alice", "--token", token]);
    assert_eq!(
        ok_in_b(p, &with, "client", &["echo", "signed in"]).trim(),
        "signed in"
    );
    assert!(
        ok_in_b(p, via, "client", &["auth", "alice", token]).contains("authenticated as alice")
    );
    assert!(err_in_b(p, via, &["echo", "anonymous"]).contains("UNAUTHENTICATED"));
    assert!(err_in_b(p, via, &["auth", "alice", "wrong"]).contains("AUTH_FAILED"));
}

#[test]
#[ignore = "needs root, veth and AF_XDP: scripts/test.sh runs it as root"]
fn xdp_server_with_kernel_and_xdp_clients() {
    let p = Pair::new("s");
    let srv = p.serve(&[
        "--listener",
        "echo=0.0.0.0:7007",
        "--listener",
        "http=0.0.0.0:8080",
        "--listener",
        "resp=0.0.0.0:6379",
    ]);
    let addr = format!("{SERVER_IP}:7077");

    // (0) The second protocol on its own listener, same stack and worker:
    // 256 KiB through echo from a kernel socket (python3) and a half-close.
    let script = format!(
        "import socket,threading\n\
         s=socket.create_connection(('{SERVER_IP}',7007),timeout=30)\n\
         d=bytes(i%251 for i in range(262144))\n\
         def w():\n s.sendall(d); s.shutdown(socket.SHUT_WR)\n\
         t=threading.Thread(target=w); t.start()\n\
         got=b''\n\
         while True:\n b=s.recv(65536)\n if not b: break\n got+=b\n\
         t.join()\n\
         print('echo', len(got), got==d)\n"
    );
    let o = Command::new("ip")
        .args([
            "netns", "exec", &p.b, "timeout", "60", "python3", "-c", &script,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "echo 262144 True",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // HTTP on a third listener: curl (kernel TCP) in namespace B, two
    // requests on one connection, and a 256 KiB chunked upload echoed.
    let curl = |args: &[&str]| {
        let o = Command::new("ip")
            .args(["netns", "exec", &p.b, "curl", "--silent", "--show-error"])
            .args(["--verbose", "--max-time", "30"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (o.stdout, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let ping = format!("http://{SERVER_IP}:8080/ping");
    let (out, err) = curl(&[&ping, &ping]);
    assert_eq!(out, b"pong\npong\n");
    assert!(err.contains("Re-using existing connection"), "{err}");
    let body = std::env::temp_dir().join(format!("ww-xdp-http-{}", std::process::id()));
    let data: Vec<u8> = (0..262_144u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&body, &data).unwrap();
    let (out, _) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", body.display()),
        &format!("http://{SERVER_IP}:8080/echo"),
    ]);
    let _ = std::fs::remove_file(&body);
    assert!(
        out == data,
        "the chunked upload came back as {} other bytes",
        out.len()
    );
    // RESP on a fourth listener: redis-cli and redis-benchmark (kernel TCP)
    // from namespace B.
    let redis = |cmd: &str, args: &[&str]| {
        let o = Command::new("ip")
            .args(["netns", "exec", &p.b, "timeout", "60", cmd])
            .args(["-h", SERVER_IP, "-p", "6379"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(redis("redis-cli", &["SET", "k", "over xdp"]).trim(), "OK");
    assert_eq!(redis("redis-cli", &["GET", "k"]).trim(), "over xdp");
    assert_eq!(redis("redis-cli", &["INCR", "n"]).trim(), "1");
    let bench = redis(
        "redis-benchmark",
        &["-t", "set,get", "-n", "5000", "-c", "10", "-P", "4", "-q"],
    );
    assert!(bench.contains("SET:") && bench.contains("GET:"), "{bench}");

    // (1) Kernel TCP peers: every feature, and a broadcast that reaches a
    // listener (two kernel clients: the AF_XDP client below owns the veth
    // end while it runs, so it cannot share it with a second process).
    battery(&p, &[]);
    let listener = p
        .cmd(
            &p.b,
            &[
                "client",
                &addr,
                "listen",
                "--count",
                "1",
                "--duration",
                "20s",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut delivered = false;
    for _ in 0..100 {
        if p.ok_b(&["client", &addr, "broadcast", "to the listener"])
            .contains("delivered to 1 recipient")
        {
            delivered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(delivered, "the listener never became a broadcast recipient");
    let heard = listener.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&heard.stdout).contains("to the listener"));

    // (2) Bypass at both ends: the client's own AF_XDP socket on the peer veth.
    let xdp = p.xdp_client();
    battery(&p, &xdp);

    // A crash leaves the XDP program attached; the restart must cope. It
    // comes back requiring authentication, to check that over both too.
    srv.crash();
    let users = std::env::temp_dir().join(format!("ww-xdp-users-{}.toml", std::process::id()));
    let _ = std::fs::remove_file(&users);
    let out = Command::new(BIN)
        .args(["users", "add", "alice", "--users", users.to_str().unwrap()])
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("token (shown once, store it now): ")
                .map(str::to_owned)
        })
        .expect("token printed");
    let srv = p.serve(&["--require-auth", "--users", users.to_str().unwrap()]);
    auth_battery(&p, &[], &token);
    auth_battery(&p, &xdp, &token);
    assert!(srv.terminate().success(), "graceful shutdown exits 0");
    let _ = std::fs::remove_file(&users);
}

#[test]
#[ignore = "needs root, veth and AF_XDP: scripts/test.sh runs it as root"]
fn data_through_an_impaired_wire() {
    let p = Pair::impaired("i");
    let (m0, m1) = p.middle_ifaces();
    let m = p.m.clone().unwrap();
    // GRO would hand the bridge coalesced super-frames; keep frames wire-sized.
    for (ns, dev) in [(&m, &m0), (&m, &m1), (&p.b, &p.vb)] {
        sh(&[
            "ip", "netns", "exec", ns, "ethtool", "-K", dev, "gro", "off", "tso", "off", "gso",
            "off",
        ]);
    }
    let bridge = Command::new("ip")
        .args([
            "netns",
            "exec",
            &m,
            &impair_bin(),
            "--a",
            &m0,
            "--b",
            &m1,
            "--loss",
            "0.01",
            "--reorder",
            "0.01",
            "--duplicate",
            "0.01",
            "--corrupt",
            "0.001",
            "--delay",
            "200us",
            "--seed",
            "7",
            "--duration",
            "300s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let data_dir = std::env::temp_dir().join(format!("ww-xdp-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let srv = p.serve(&[
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:9181",
    ]);
    let addr = format!("{SERVER_IP}:7077");
    assert_eq!(
        p.ok_b(&["client", &addr, "echo", "through the bridge"])
            .trim(),
        "through the bridge"
    );
    // 50 MB of DATA through netem loss, reordering, duplication and corruption.
    let payload = common::Payload::random("xdp", 50_000_000);
    let started = Instant::now();
    let out = p.ok_b(&[
        "client",
        "--timeout",
        "60s",
        &addr,
        "data",
        "--file",
        payload.arg(),
    ]);
    let took = started.elapsed();
    assert!(out.contains("sent 50000000 bytes"), "{out}");
    payload.assert_stored_in(&data_dir);
    eprintln!("50 MB through netem faults in {took:?}");
    // The stack's ACKs to this kernel sender carried SACK blocks smoltcp
    // leaves out, and D-SACKs for the bridge's duplicates (sack.rs); the
    // stored file above is whole.
    let metrics = common::metrics_showing(
        &["ip", "netns", "exec", &p.a],
        "http://127.0.0.1:9181/metrics",
        "stack_dsack_total",
    )
    .expect("the server sent no D-SACK through a wire that duplicates 1 % of frames");
    let added = common::metric_sum(&metrics, "stack_sack_added_total");
    assert!(added > 0, "{metrics}");

    assert!(srv.terminate().success());
    let pid = bridge.id().to_string();
    sh(&["kill", "-TERM", &pid]);
    let out = bridge.wait_with_output().unwrap();
    let stats = String::from_utf8_lossy(&out.stdout);
    eprintln!("bridge: {stats}");
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Issue 13's bulk check on veth: 1 GB of DATA from an AF_XDP client into
/// the AF_XDP server (bypass at both ends, release build, copy mode, MTU
/// 1500), SHA-256-identical where the server stored it. The issue's
/// target for this path is at least kernel TCP through warpwire on the
/// same veth, so the test first moves the same file that way (socket
/// client into a socket server in namespace A) and fails if AF_XDP falls
/// 5x below it. Runs alone (.config/nextest.toml): a rate bound shared
/// with other tests would measure them.
#[test]
#[ignore = "needs root, veth and AF_XDP: scripts/test.sh runs it as root"]
fn gigabyte_xdp_to_xdp_arrives_intact_and_fast() {
    let mut p = Pair::new("g");
    p.bin = common::release_bin();
    let payload = common::Payload::random("xdp-gb", 1_000_000_000);
    let dir = |what: &str| common::data_dir(&format!("xdp-gb-{what}"));
    let send = |via: &[&str]| {
        let mut args = vec!["client", "--timeout", "60s", "10.77.0.1:7077"];
        args.extend_from_slice(via);
        args.extend_from_slice(&["data", "--file", payload.arg()]);
        let out = p.ok_b(&args);
        assert!(out.contains("sent 1000000000 bytes"), "{out}");
        out
    };

    // Kernel <- kernel through warpwire: the server's kernel address on
    // A's veth end for as long as this part runs.
    let kernel_dir = dir("kernel");
    sh(&[
        "ip",
        "-n",
        &p.a,
        "addr",
        "add",
        "10.77.0.1/24",
        "dev",
        &p.va,
    ]);
    let mut kernel = p
        .server_cmd(
            &p.a,
            &[
                "serve",
                "--transport",
                "socket",
                "--listen",
                "10.77.0.1:7077",
                "--workers",
                "1",
                "--data-dir",
                kernel_dir.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(common::first_line(&mut kernel, Duration::from_secs(20)).is_some());
    let out = send(&["--transport", "socket"]);
    let kernel_rate = common::data_rate(&out);
    eprintln!("1 GB kernel <- kernel through warpwire: {out}");
    payload.assert_stored_in(&kernel_dir);
    let _ = kernel.kill();
    let _ = kernel.wait();
    drop(kernel_dir);
    sh(&[
        "ip",
        "-n",
        &p.a,
        "addr",
        "del",
        "10.77.0.1/24",
        "dev",
        &p.va,
    ]);

    // xdp <- xdp.
    let xdp_dir = dir("xdp");
    let srv = p.serve(&["--data-dir", xdp_dir.to_str().unwrap()]);
    let out = send(&p.xdp_client());
    let xdp_rate = common::data_rate(&out);
    eprintln!("1 GB xdp <- xdp: {out}");
    payload.assert_stored_in(&xdp_dir);
    assert!(srv.terminate().success());
    drop(xdp_dir);
    eprintln!(
        "xdp <- xdp {xdp_rate:.0} MB/s, kernel <- kernel {kernel_rate:.0} MB/s: {:.2}x",
        xdp_rate / kernel_rate
    );
    assert!(
        xdp_rate >= kernel_rate / 5.0,
        "xdp <- xdp {xdp_rate:.0} MB/s: more than 5x below kernel <- kernel's {kernel_rate:.0} MB/s \
         (issue 13's target is 1.0x)"
    );
}

/// The hostile peers of tests/hostile.rs (crates/testkit's
/// `warpwire-hostile`, raw kernel TCP) from namespace B against the xdp
/// server: half-close, a header flood and a broadcast storm.
#[test]
#[ignore = "needs root, veth and AF_XDP: scripts/test.sh runs it as root"]
fn hostile_peers_against_the_xdp_server() {
    let p = Pair::new("h");
    let server = p.serve(&[]);
    let addr = format!("{SERVER_IP}:7077");
    common::hostile_battery(
        &["ip", "netns", "exec", &p.b],
        &addr,
        server.child.id(),
        &common::HostileLoad {
            trials: 20,
            // 4,000 as on the socket backend: +139 MiB measured, mostly the
            // stack's per-connection socket buffers.
            flood_conns: 4000,
            flood_rss_mib: 256,
            flood_ping_ms: 50,
            storm: (50, 256 * 1024, 2000),
        },
    );
    let status = server.terminate();
    assert!(status.success(), "{status}");
}

/// The server's resident memory, in KiB (`ip netns exec` execs the server,
/// so the child's pid is its own).
fn rss_kib(s: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `bench --json` from namespace B with kernel TCP (the socket backend).
fn kernel_bench(p: &Pair, connections: u32, depth: u32, count: u64) -> String {
    let (c, d, n) = (
        connections.to_string(),
        depth.to_string(),
        count.to_string(),
    );
    p.ok_b(&[
        "bench",
        "10.77.0.1:7077",
        "--transport",
        "socket",
        "--connections",
        &c,
        "--depth",
        &d,
        "--count",
        &n,
        "--json",
    ])
}

/// Ten thousand kernel-client connections into the AF_XDP server, each
/// echoing once; then a burst of 20,000 SYNs from spoofed sources (raw
/// frames from the clients' namespace), after which the server still
/// serves real clients and its memory stayed bounded (issue 12).
#[test]
#[ignore = "needs root, veth and AF_XDP: scripts/test.sh runs it as root"]
fn ten_thousand_kernel_connections_and_a_syn_flood() {
    let p = Pair::new("k");
    // One client address, 10,000 connections: the whole port range.
    sh(&[
        "ip",
        "netns",
        "exec",
        &p.b,
        "sysctl",
        "-qw",
        "net.ipv4.ip_local_port_range=1024 65535",
    ]);
    let server = p.serve(&["--max-connections", "20000"]);
    let started = Instant::now();
    let bench = kernel_bench(&p, 10_000, 1, 10_000);
    common::assert_each_answered(
        &bench,
        10_000,
        "10,000 kernel connections, each echoing once,",
        started.elapsed(),
    );

    // 20,000 SYNs from 150 spoofed addresses and random ports, as fast as
    // python can write them to the veth: half-open handshakes that never
    // complete, against a SYN queue of 4,096.
    let before = rss_kib(&server);
    // The server's MAC, read in its namespace.
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &p.a,
            "cat",
            &format!("/sys/class/net/{}/address", p.va),
        ])
        .output()
        .unwrap();
    let mac = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    let flood = format!(
        r#"
import errno, random, socket, struct, time
def send(frame):
    # A full veth queue answers ENOBUFS: wait for it to drain.
    while True:
        try:
            s.send(frame)
            return
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            time.sleep(0.0005)
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
dst_mac = bytes.fromhex("{mac}".strip().replace(":", ""))
src_mac = bytes.fromhex("02ee00000001")
dst = socket.inet_aton("10.77.0.1")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("{vb}", 0))
rng = random.Random(7)
for i in range(20000):
    src = socket.inet_aton("10.77.0.%d" % rng.randrange(100, 250))
    sport = rng.randrange(1024, 65535)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, i & 0xffff, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    tcp = struct.pack("!HHIIBBHHH", sport, 7077, rng.getrandbits(32), 0, 5 << 4, 0x02, 8192, 0, 0)
    c = csum(src + dst + struct.pack("!BBH", 0, 6, 20) + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    send(dst_mac + src_mac + b"\x08\x00" + ip + tcp + b"\0" * 6)
"#,
        vb = p.vb
    );
    let o = Command::new("ip")
        .args([
            "netns", "exec", &p.b, "timeout", "60", "python3", "-c", &flood,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::thread::sleep(Duration::from_millis(500));
    // Real clients still get in and are served, while the flood's
    // handshakes are still half-open.
    let bench = kernel_bench(&p, 200, 4, 20_000);
    common::assert_bench_clean(&bench);
    let after = rss_kib(&server);
    eprintln!("server RSS {before} KiB before the SYN flood, {after} KiB after it");
    // Each half-open handshake owns a socket with its buffers (smoltcp
    // takes them at creation), and the allocator may hand it memory that
    // must be zeroed again: the bound is the SYN queue (4,096) times the
    // default buffers (64 + 16 KiB), 320 MiB, plus the real clients'.
    let bound = 4096 * (64 + 16) + 64 * 1024;
    assert!(
        after < before + bound,
        "RSS grew from {before} to {after} KiB under a SYN flood (bound {bound} KiB)"
    );
    let stats = p.ok_b(&["client", "10.77.0.1:7077", "stats"]);
    assert!(stats.contains("transport     xdp"), "{stats}");
}

/// A PING frame (docs/protocol.md) with request id `id`.
fn ping_frame(id: u64) -> Vec<u8> {
    let mut f = b"Ww\x01\x01\x00\x00\x00\x00\x00\x00\x00\x08".to_vec();
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&42u64.to_be_bytes());
    let crc = crc32fast::hash(&f);
    f.extend_from_slice(&crc.to_be_bytes());
    f
}

#[test]
#[ignore = "needs root, veth and AF_XDP: scripts/test.sh runs it as root"]
fn tls_over_the_xdp_server() {
    use std::io::{Read, Write};
    let p = Pair::new("t");
    let c = common::DevCerts::new("xdp", &[SERVER_IP]);
    let dir = &c.dir;
    let (ca, cert, key) = (c.ca.clone(), c.cert.clone(), c.key.clone());
    let _srv = p.serve(&[
        "--tls",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--listener",
        "http+tls=0.0.0.0:8443",
    ]);

    // openssl s_client (kernel TCP in namespace B) speaking warpwire
    // frames through TLS to the userspace stack.
    let mut sc = Command::new("ip")
        .args([
            "netns", "exec", &p.b, "timeout", "30", "openssl", "s_client",
        ])
        .args(["-connect", &format!("{SERVER_IP}:7077"), "-quiet"])
        .args(["-verify_return_error", "-CAfile", &ca])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    sc.stdin
        .as_mut()
        .unwrap()
        .write_all(&ping_frame(9))
        .unwrap();
    let mut reply = [0u8; 32];
    sc.stdout.as_mut().unwrap().read_exact(&mut reply).unwrap();
    let _ = sc.kill();
    let _ = sc.wait();
    assert_eq!(&reply[..4], b"Ww\x01\x02", "a PONG: {reply:?}");
    assert_eq!(&reply[12..20], &9u64.to_be_bytes());

    // curl --cacert: GET, and 256 KiB POSTed and echoed.
    let body = dir.join("body");
    let data: Vec<u8> = (0..262_144u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&body, &data).unwrap();
    let curl = |args: &[&str]| {
        let o = Command::new("ip")
            .args(["netns", "exec", &p.b, "curl", "--silent", "--show-error"])
            .args(["--max-time", "30", "--cacert", &ca])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    assert_eq!(
        curl(&[&format!("https://{SERVER_IP}:8443/ping")]),
        b"pong\n"
    );
    let echoed = curl(&[
        "--data-binary",
        &format!("@{}", body.display()),
        &format!("https://{SERVER_IP}:8443/echo"),
    ]);
    assert!(echoed == data, "256 KiB through TLS came back different");

    // The project's client over TLS: kernel TCP, then AF_XDP at both ends.
    let tls = ["--tls-ca", ca.as_str()];
    let mut xdp_tls = p.xdp_client().to_vec();
    xdp_tls.extend_from_slice(&["--tls-ca", ca.as_str()]);
    for via in [&tls[..], &xdp_tls[..]] {
        assert_eq!(
            ok_in_b(&p, via, "client", &["echo", "sealed"]).trim(),
            "sealed"
        );
        let out = ok_in_b(
            &p,
            via,
            "bench",
            &["-c", "8", "-d", "4", "--count", "4000", "--json"],
        );
        common::assert_bench_clean(&out);
    }
    // 8 MB of DATA through TLS into the stack, acknowledged whole.
    let file = dir.join("data");
    std::fs::write(&file, vec![0x5au8; 8 << 20]).unwrap();
    let out = ok_in_b(
        &p,
        &tls,
        "client",
        &["data", "--file", file.to_str().unwrap()],
    );
    // The last frame's ACK confirms every frame before it.
    assert!(out.contains("sent 8388608 bytes of DATA"), "{out}");
    // Plaintext to the TLS port is refused with a clear error.
    let e = err_in_b(&p, &[], &["ping", "-c", "1"]);
    assert!(e.contains("TLS"), "{e}");
}
