//! DPDK end to end, as root: two warpwire processes joined by net_memif
//! (shared memory, entirely in user space: no kernel on the data path),
//! server and client both on `--transport dpdk` with smoltcp on top; and a
//! DPDK server on net_tap inside a namespace the test creates, with kernel
//! TCP clients (the socket backend) in that namespace, on one queue and on
//! two (`--queues 2`: two workers, two stacks, flows spread by the kernel's
//! multi-queue tun driver).
//!
//! Ignored by default (needs root for DPDK's runtime directory):
//! `scripts/test.sh` runs it as root, so elsewhere it shows as skipped.
#![cfg(feature = "dpdk")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_warpwire");

struct Memif {
    dir: std::path::PathBuf,
    server: Child,
    tag: String,
    /// EAL memory options: `--no-huge -m 256 --no-shconf`, or hugepages.
    mem: &'static str,
    /// The binary both ends run: the test build, or the release build for
    /// the throughput tests.
    bin: &'static str,
}

const NO_HUGE: &str = "--no-huge -m 256 --no-shconf";

impl Memif {
    fn eal(&self, role: &str, lcore: u32) -> String {
        format!(
            "{} --no-pci --file-prefix ww-memif-{role}-{} -l {lcore} --log-level=lib.eal:error \
             --vdev=net_memif0,role={role},socket={}/memif.sock,socket-abstract=no",
            self.mem,
            self.tag,
            self.dir.display()
        )
    }

    fn start(extra: &[&str]) -> Self {
        Self::start_with("n", NO_HUGE, false, extra)
    }

    /// As [`Memif::start`], both ends running the release build.
    fn start_release(extra: &[&str]) -> Self {
        Self::launch("r", NO_HUGE, false, common::release_bin(), extra)
    }

    /// Starts the server; with `via_config` its EAL arguments come from a
    /// `--config` file instead of `--dpdk-args`.
    fn start_with(name: &str, mem: &'static str, via_config: bool, extra: &[&str]) -> Self {
        Self::launch(name, mem, via_config, BIN, extra)
    }

    fn launch(
        name: &str,
        mem: &'static str,
        via_config: bool,
        bin: &'static str,
        extra: &[&str],
    ) -> Self {
        assert!(
            common::is_root(),
            "this test needs root (scripts/test.sh runs it as root)"
        );
        let tag = format!("{name}{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("ww-memif-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = Self {
            dir,
            server: Command::new("true").spawn().unwrap(),
            tag,
            mem,
            bin,
        };
        let _ = m.server.wait();
        let eal = m.eal("server", 0);
        let config = m.dir.join("warpwire.toml");
        std::fs::write(&config, format!("[bypass]\ndpdk_args = \"{eal}\"\n")).unwrap();
        let config = config.to_str().unwrap().to_owned();
        let mut args = vec!["serve", "--transport", "dpdk"];
        if via_config {
            args.extend_from_slice(&["--config", &config]);
        } else {
            args.extend_from_slice(&["--dpdk-args", &eal]);
        }
        args.extend_from_slice(&["--ip", "10.77.0.1/24"]);
        args.extend_from_slice(&["--listen", "0.0.0.0:7077"]);
        args.extend_from_slice(extra);
        let mut child = Command::new(bin)
            .args(&args)
            .env("WARPWIRE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let line = common::first_line(&mut child, Duration::from_secs(30));
        let Some(line) = line else {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "dpdk server did not start ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        };
        m.server = child;
        assert!(
            line.starts_with("warpwire listening on 10.77.0.1:7077"),
            "{line}"
        );
        m
    }

    /// A client command over the memif client role, bounded at 120 s.
    fn run(&self, cmd: &str, args: &[&str]) -> Output {
        let eal = self.eal("client", 1);
        let mut a = vec![
            "120",
            self.bin,
            cmd,
            "10.77.0.1:7077",
            "--transport",
            "dpdk",
            "--dpdk-args",
            &eal,
        ];
        a.extend_from_slice(&["--ip", "10.77.0.2/24"]);
        a.extend_from_slice(args);
        Command::new("timeout")
            .args(&a)
            .env("WARPWIRE_LOG", "warn")
            .output()
            .unwrap()
    }

    fn ok(&self, cmd: &str, args: &[&str]) -> String {
        let o = self.run(cmd, args);
        assert!(
            o.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

impl Drop for Memif {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        for role in ["server", "client"] {
            let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/ww-memif-{role}-{}", self.tag));
        }
    }
}

#[test]
#[ignore = "needs root and DPDK (net_memif): scripts/test.sh runs it as root"]
fn two_warpwire_processes_over_memif() {
    let data_dir = std::env::temp_dir().join(format!("ww-memif-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let m = Memif::start(&["--data-dir", data_dir.to_str().unwrap()]);
    assert_eq!(
        m.ok("client", &["echo", "over shared memory"]).trim(),
        "over shared memory"
    );
    assert!(
        m.ok("client", &["ping", "--count", "3", "--interval", "10ms"])
            .contains("seq=2")
    );
    assert_eq!(m.ok("client", &["app", "0x80", "abc"]).trim(), "cba");
    assert_eq!(m.ok("client", &["app", "0x81", "abc"]).trim(), "ABC");
    assert!(m.ok("client", &["stats"]).contains("transport     dpdk"));
    assert!(
        m.ok("client", &["broadcast", "alone"])
            .contains("delivered to 0 recipient")
    );
    let o = m.run("client", &["app", "0x99", "x"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("UNKNOWN_TYPE"));
    let bench = m.ok(
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

    // 50 MB of DATA, hash-checked where the server stored it.
    let payload = common::Payload::random("memif", 50_000_000);
    let out = m.ok("client", &["data", "--file", payload.arg()]);
    eprintln!("50 MB over memif: {out}");
    assert!(out.contains("sent 50000000 bytes"), "{out}");
    payload.assert_stored_in(&data_dir);
    drop(m);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// `--tcp-gso on` over a real poll-mode driver (it is off by default on
/// dpdk): 50 MB of DATA from a client whose stack cuts its own large
/// packets into wire segments, into a server doing the same for its
/// replies, SHA-256-identical where the server stored it.
#[test]
#[ignore = "needs root and DPDK (net_memif): scripts/test.sh runs it as root"]
fn segmentation_offload_over_memif_delivers_every_byte() {
    let data_dir = common::data_dir("memif-gso");
    let dir = data_dir.to_str().unwrap().to_owned();
    let m = Memif::start(&[
        "--tcp-gso",
        "on",
        "--data-dir",
        &dir,
        "--metrics",
        "127.0.0.1:9179",
    ]);
    let payload = common::Payload::random("memif-gso", 50_000_000);
    let out = m.ok(
        "client",
        &["--tcp-gso", "on", "data", "--file", payload.arg()],
    );
    eprintln!("50 MB over memif with --tcp-gso on: {out}");
    assert!(out.contains("sent 50000000 bytes"), "{out}");
    payload.assert_stored_in(&data_dir);
    // 64 KiB echoes: the server's replies are large, so its stack cuts
    // them (the upload above only made it send ACKs), and the client's
    // bench checks every reply.
    let bench = m.ok(
        "bench",
        &[
            "--tcp-gso",
            "on",
            "--size",
            "65536",
            "--depth",
            "4",
            "--count",
            "400",
            "--json",
        ],
    );
    common::assert_bench_clean(&bench);
    // The server's metrics show the cutting.
    let metrics = common::metrics_showing(
        &[],
        "http://127.0.0.1:9179/metrics",
        "stack_gso_packets_total",
    )
    .expect("the server's stack cut no large packet into segments");
    let segments = common::metric_sum(&metrics, "stack_gso_segments_total");
    let packets = common::metric_sum(&metrics, "stack_gso_packets_total");
    assert!(segments > 2 * packets, "{metrics}");
    assert_eq!(
        common::per_worker(&metrics, "stack_gso_dropped_total"),
        [0],
        "{metrics}"
    );
}

/// Issue 13's bulk check over memif: 1 GB of DATA from a DPDK client into
/// a DPDK server (release build, MTU 1500), SHA-256-identical where the
/// server stored it, failing if the transfer falls 5x below its target:
/// the issue's 2 GB/s, or the floor of a transfer that ends in a file
/// here, whichever is lower (the same bytes written into the same
/// directory by dd: on these 2-core machines a file sink is slower than
/// the target by itself). Runs alone (.config/nextest.toml): a rate bound
/// shared with other tests would measure them.
#[test]
#[ignore = "needs root and DPDK (net_memif): scripts/test.sh runs it as root"]
fn gigabyte_over_memif_arrives_intact_and_fast() {
    const TARGET_MB_S: f64 = 2000.0;
    let data_dir = common::data_dir("memif-gb");
    let payload = common::Payload::random("memif-gb", 1_000_000_000);
    let floor = payload.write_floor_mb_s(&data_dir);
    let bound = TARGET_MB_S.min(floor) / 5.0;
    let m = Memif::start_release(&["--workers", "1", "--data-dir", data_dir.to_str().unwrap()]);
    let started = Instant::now();
    let out = m.ok("client", &["data", "--file", payload.arg()]);
    eprintln!("1 GB over memif, {:?} wall: {out}", started.elapsed());
    assert!(out.contains("sent 1000000000 bytes"), "{out}");
    let rate = common::data_rate(&out);
    payload.assert_stored_in(&data_dir);
    drop(m);
    drop(data_dir);
    eprintln!("{rate:.0} MB/s over memif into a file; dd alone writes it at {floor:.0} MB/s");
    assert!(
        rate >= bound,
        "{rate:.0} MB/s over memif: more than 5x below {:.0} MB/s (issue 13's target \
         {TARGET_MB_S} MB/s, the sink's floor here {floor:.0} MB/s)",
        bound * 5.0
    );
}

/// Ten thousand connections from one DPDK client into one DPDK worker over
/// memif, each echoing once: the userspace stack's demux and listen
/// backlog at the scale servers live at (issue 12), in bounded time.
#[test]
#[ignore = "needs root and DPDK (net_memif): scripts/test.sh runs it as root"]
fn ten_thousand_connections_over_memif() {
    let m = Memif::start(&["--max-connections", "20000", "--workers", "1"]);
    let started = Instant::now();
    let bench = m.ok(
        "bench",
        &[
            "--connections",
            "10000",
            "--depth",
            "1",
            "--count",
            "10000",
            "--json",
        ],
    );
    common::assert_each_answered(
        &bench,
        10_000,
        "10,000 connections over memif, each echoing once,",
        started.elapsed(),
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
#[ignore = "needs root and DPDK (net_memif): scripts/test.sh runs it as root"]
fn tls_between_two_warpwire_processes_over_memif() {
    // TLS over the userspace stack at both ends: the same layer as over
    // kernel TCP, wrapped around the dpdk transport.
    let c = common::DevCerts::new("memif", &["10.77.0.1"]);
    let (ca, cert, key) = (c.ca.clone(), c.cert.clone(), c.key.clone());
    let m = Memif::start(&[
        "--tls",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--workers",
        "1",
    ]);
    assert_eq!(
        m.ok("client", &["--tls-ca", &ca, "echo", "sealed over memif"])
            .trim(),
        "sealed over memif"
    );
    let bench = m.ok(
        "bench",
        &[
            "--tls-ca", &ca, "-c", "16", "-d", "8", "--count", "20000", "--json",
        ],
    );
    common::assert_bench_clean(&bench);
    // 16 MB of DATA through TLS, acknowledged whole.
    let file = c.dir.join("data");
    std::fs::write(&file, vec![0x3cu8; 16 << 20]).unwrap();
    let out = m.ok(
        "client",
        &["--tls-ca", &ca, "data", "--file", file.to_str().unwrap()],
    );
    // The last frame's ACK confirms every frame before it.
    assert!(out.contains("sent 16777216 bytes of DATA"), "{out}");
    // Plaintext to the TLS port: refused, naming TLS.
    let o = m.run("client", &["ping", "-c", "1"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("TLS"));
}

/// net_memif has no RSS: a server with `--queues 2` configures the port
/// without the RSS mode (asking for it would fail) and serves both queues;
/// a warpwire client on one queue reaches worker 0.
#[test]
#[ignore = "needs root and DPDK (net_memif): scripts/test.sh runs it as root"]
fn memif_server_with_two_queues_on_a_driver_without_rss() {
    let m = Memif::start_with("q", NO_HUGE, false, &["--queues", "2"]);
    assert_eq!(
        m.ok("client", &["echo", "two queues, no RSS"]).trim(),
        "two queues, no RSS"
    );
    let bench = m.ok(
        "bench",
        &[
            "--connections",
            "2",
            "--depth",
            "8",
            "--count",
            "2000",
            "--json",
        ],
    );
    common::assert_bench_clean(&bench);
}

/// Reserves 2 MiB hugepages for the test and gives back the previous count.
struct Hugepages(String);

impl Hugepages {
    fn reserve(n: u32) -> Self {
        let path = "/proc/sys/vm/nr_hugepages";
        let before = std::fs::read_to_string(path).unwrap().trim().to_owned();
        if before.parse::<u32>().unwrap_or(0) < n {
            std::fs::write(path, n.to_string()).unwrap();
        }
        Self(before)
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", &self.0);
    }
}

#[test]
#[ignore = "needs root, hugepages and DPDK (net_memif): scripts/test.sh runs it as root"]
fn memif_with_hugepages_and_eal_args_from_the_config_file() {
    let _pages = Hugepages::reserve(128);
    let free: u32 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("HugePages_Free:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    assert!(free >= 64, "could not reserve hugepages ({free} free)");
    let m = Memif::start_with("h", "--in-memory -m 64", true, &[]);
    assert_eq!(
        m.ok("client", &["echo", "on hugepages"]).trim(),
        "on hugepages"
    );
    let bench = m.ok(
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

/// A DPDK server on net_tap inside a namespace of its own, the TAP (the
/// kernel's side of the port) addressed 10.77.x.2/24 in it; kernel TCP
/// clients (the socket backend) run in the namespace too. On drop the
/// server is killed (by its own pid), its EAL runtime directory removed
/// and the namespace, with the TAP, deleted: on every path.
struct TapServer {
    server: Option<Child>,
    ns: String,
    prefix: String,
    /// The server's log (stderr), when kept.
    log: Option<std::path::PathBuf>,
    addr: String,
}

impl TapServer {
    /// Starts `warpwire serve --transport dpdk` on `net_tap0` in namespace
    /// `ww-<name>-<pid>`, EAL on `lcores`, subnet 10.77.`net`.0/24, with
    /// `extra` serve arguments. With `log`, the server logs at info level
    /// to a file (see [`TapServer::log`]).
    fn start(name: &str, net: u8, lcores: &str, extra: &[&str], log: bool) -> Self {
        assert!(
            common::is_root(),
            "this test needs root (scripts/test.sh runs it as root)"
        );
        let id = std::process::id() % 100_000;
        let tap = format!("ww{name}{id}");
        let mut t = Self {
            server: None,
            ns: format!("ww-{name}-{id}"),
            prefix: format!("ww-{name}-{id}"),
            log: log.then(|| std::env::temp_dir().join(format!("ww-{name}-{id}.log"))),
            addr: format!("10.77.{net}.1:7077"),
        };
        assert!(
            Command::new("ip")
                .args(["netns", "add", &t.ns])
                .status()
                .unwrap()
                .success()
        );
        let eal = format!(
            "--no-huge --no-pci -m 256 --no-shconf --file-prefix {} -l {lcores} \
             --log-level=lib.eal:error --log-level=pmd.net.tap:error --vdev=net_tap0,iface={tap}",
            t.prefix
        );
        let stderr = match &t.log {
            Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
            None => Stdio::null(),
        };
        let mut server = Command::new("ip")
            .args(["netns", "exec", &t.ns, BIN, "serve", "--transport", "dpdk"])
            .args(["--dpdk-args", &eal])
            .args([
                "--ip",
                &format!("10.77.{net}.1/24"),
                "--listen",
                "0.0.0.0:7077",
            ])
            .args(extra)
            .env("WARPWIRE_LOG", if log { "info" } else { "warn" })
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let line = common::first_line(&mut server, Duration::from_secs(30));
        t.server = Some(server);
        let line = line.expect("dpdk server started");
        assert!(
            line.starts_with(&format!("warpwire listening on {}", t.addr)),
            "{line}"
        );
        let kernel_ip = format!("10.77.{net}.2/24");
        for args in [
            vec!["addr", "add", kernel_ip.as_str(), "dev", tap.as_str()],
            vec!["link", "set", tap.as_str(), "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut a = vec!["-n", t.ns.as_str()];
            a.extend(args);
            assert!(
                Command::new("ip").args(&a).status().unwrap().success(),
                "ip {a:?}"
            );
        }
        t
    }

    /// A command in the namespace, bounded at 60 s.
    fn run_cmd(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "timeout", "60"])
            .args(cmd)
            .env("WARPWIRE_LOG", "warn")
            .output()
            .unwrap()
    }

    /// `warpwire ARGS` in the namespace (a kernel TCP client).
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = vec![BIN];
        cmd.extend_from_slice(args);
        self.run_cmd(&cmd)
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// SIGTERM to the server (by its pid: `ip netns exec` execs it), then
    /// waits up to 10 s for a clean exit; whether it exited with success.
    fn stop(&mut self) -> bool {
        let Some(mut c) = self.server.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// The server's log so far.
    fn log(&self) -> String {
        self.log
            .as_ref()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for TapServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        if let Some(p) = &self.log {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
#[ignore = "needs root, DPDK (net_tap) and network namespaces: scripts/test.sh runs it as root"]
fn dpdk_server_on_net_tap_with_kernel_clients() {
    let t = TapServer::start(
        "dtap",
        3,
        "0",
        &[
            "--listener",
            "http=0.0.0.0:8080",
            "--listener",
            "resp=0.0.0.0:6379",
        ],
        false,
    );
    let addr = t.addr.as_str();
    // HTTP on a second listener, through the same stack: curl, two
    // requests on one connection, and a chunked upload echoed.
    let o = t.run_cmd(&[
        "curl",
        "--silent",
        "--show-error",
        "--verbose",
        "--max-time",
        "30",
        "http://10.77.3.1:8080/ping",
        "http://10.77.3.1:8080/ping",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(o.stdout, b"pong\npong\n");
    assert!(err.contains("Re-using existing connection"), "{err}");
    let o = t.run_cmd(&[
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "30",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "chunked through dpdk",
        "http://10.77.3.1:8080/echo",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "chunked through dpdk",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // RESP through the same stack: redis-cli and a short redis-benchmark.
    let redis = |cmd: &str, args: &[&str]| {
        let mut a = vec![cmd, "-h", "10.77.3.1", "-p", "6379"];
        a.extend_from_slice(args);
        let o = t.run_cmd(&a);
        assert!(
            o.status.success(),
            "{a:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(redis("redis-cli", &["SET", "k", "over dpdk"]).trim(), "OK");
    assert_eq!(redis("redis-cli", &["GET", "k"]).trim(), "over dpdk");
    let bench = redis(
        "redis-benchmark",
        &["-t", "set,get", "-n", "5000", "-c", "10", "-P", "4", "-q"],
    );
    assert!(bench.contains("SET:") && bench.contains("GET:"), "{bench}");
    assert_eq!(
        t.ok(&["client", addr, "echo", "kernel to dpdk"]).trim(),
        "kernel to dpdk"
    );
    assert!(
        t.ok(&["client", addr, "ping", "--count", "3", "--interval", "10ms"])
            .contains("seq=2")
    );
    assert_eq!(t.ok(&["client", addr, "app", "0x80", "abc"]).trim(), "cba");
    assert!(
        t.ok(&["client", addr, "data", "twelve bytes"])
            .contains("12 bytes accepted")
    );
    assert!(
        t.ok(&["client", addr, "stats"])
            .contains("transport     dpdk")
    );
    assert!(
        String::from_utf8_lossy(&t.run(&["client", addr, "app", "0x99", "x"]).stderr)
            .contains("UNKNOWN_TYPE")
    );
    // A broadcast between two kernel clients through the DPDK server.
    let listener = Command::new("ip")
        .args(["netns", "exec", &t.ns, "timeout", "30", BIN, "client", addr])
        .args(["listen", "--count", "1", "--duration", "20s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut delivered = false;
    for _ in 0..100 {
        if t.ok(&["client", addr, "broadcast", "via dpdk"])
            .contains("delivered to 1 recipient")
        {
            delivered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(delivered);
    assert!(
        String::from_utf8_lossy(&listener.wait_with_output().unwrap().stdout).contains("via dpdk")
    );
    let bench = t.ok(&[
        "bench",
        addr,
        "--connections",
        "4",
        "--depth",
        "8",
        "--count",
        "4000",
        "--json",
    ]);
    common::assert_bench_clean(&bench);
}

/// `serve --queues 2` on a multi-queue TAP: the tap PMD opens one queue of
/// the kernel's multi-queue tun device per DPDK queue, and the tun driver
/// picks a queue per flow (by flow hash, then by the queue the flow's
/// replies were written on), so kernel clients' connections land on both
/// workers; each worker's smoltcp stack owns the connections of its queue.
#[test]
#[ignore = "needs root, DPDK (net_tap) and network namespaces: scripts/test.sh runs it as root"]
fn dpdk_server_with_two_queues_on_net_tap_spreads_kernel_clients_over_workers() {
    const CONNECTIONS: usize = 32;
    const ECHOES: usize = 16;
    let two_cpus = std::thread::available_parallelism().map_or(1, usize::from) >= 2;
    let lcores = if two_cpus { "0-1" } else { "0" };
    let mut t = TapServer::start(
        "dmq",
        5,
        lcores,
        &["--queues", "2", "--metrics", "127.0.0.1:9178"],
        true,
    );
    let addr = t.addr.as_str();
    let started = Instant::now();
    // Every worker registered as an lcore and pinned to one of EAL's.
    let log = t.log();
    for (q, cpus) in [(0, "[0]"), (1, if two_cpus { "[1]" } else { "[0]" })] {
        assert!(
            log.lines()
                .any(|l| l.contains("DPDK worker registered as an lcore")
                    && l.contains(&format!("queue={q} "))
                    && l.contains(&format!("cpus={cpus}"))),
            "worker {q} not registered and pinned to {cpus}:\n{log}"
        );
    }
    assert!(log.contains("queues=2"), "{log}");

    // Many kernel connections: bench, then one process per echo.
    let bench = t.ok(&[
        "bench",
        addr,
        "--connections",
        &CONNECTIONS.to_string(),
        "--depth",
        "4",
        "--count",
        "8000",
        "--json",
    ]);
    common::assert_bench_clean(&bench);
    // Concurrently: a kernel client waits up to 0.5 s for the server's FIN
    // after its own, so one after another they would take 8 s.
    let echoes: Vec<(String, Child)> = (0..ECHOES)
        .map(|i| {
            let msg = format!("echo number {i} through queue whichever");
            let child = Command::new("ip")
                .args(["netns", "exec", &t.ns, "timeout", "60", BIN])
                .args(["client", addr, "echo", &msg])
                .env("WARPWIRE_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (msg, child)
        })
        .collect();
    for (msg, child) in echoes {
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "echo {msg:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), msg);
    }

    let o = t.run_cmd(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "http://127.0.0.1:9178/metrics",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let metrics = String::from_utf8(o.stdout).unwrap();
    let accepted = common::per_worker(&metrics, "accepted_total");
    let messages = common::per_worker(&metrics, "messages_in_total");
    eprintln!(
        "2 queues: accepted per worker {accepted:?}, messages in {messages:?} ({:?})",
        started.elapsed()
    );
    assert_eq!(accepted.len(), 2, "{metrics}");
    assert_eq!(
        accepted.iter().sum::<u64>(),
        (CONNECTIONS + ECHOES) as u64,
        "every connection accepted once: {accepted:?}"
    );
    assert!(
        accepted.iter().all(|&n| n > 0) && messages.iter().all(|&n| n > 0),
        "both workers carried connections: accepted {accepted:?}, messages {messages:?}"
    );

    // A dpdk client stays on one queue: --queues 2 is refused, before EAL.
    let client_prefix = format!("ww-dmqc-{}", std::process::id());
    let eal = format!(
        "--no-huge --no-pci -m 256 --no-shconf --file-prefix {client_prefix} -l 0 --vdev=net_null0"
    );
    for cmd in ["client", "bench"] {
        let mut args = vec![cmd, addr, "--transport", "dpdk", "--dpdk-args", &eal];
        args.extend_from_slice(&["--ip", "10.77.6.1/24", "--queues", "2"]);
        if cmd == "client" {
            args.extend_from_slice(&["echo", "x"]);
        }
        let o = Command::new(BIN).args(&args).output().unwrap();
        assert!(!o.status.success(), "{cmd} --queues 2 on dpdk must fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--queues above 1 is for `serve`"), "{err}");
    }
    assert!(!std::path::Path::new(&format!("/var/run/dpdk/{client_prefix}")).exists());

    // A graceful stop cleans up EAL (held by the workers' factory).
    assert!(t.stop(), "server did not exit cleanly:\n{}", t.log());
    assert!(
        !std::path::Path::new(&format!("/var/run/dpdk/{}", t.prefix)).exists(),
        "EAL runtime directory left behind"
    );
}

/// The hostile peers of tests/hostile.rs (crates/testkit's
/// `warpwire-hostile`, raw kernel TCP) against the dpdk server on
/// net_tap: half-close, a header flood and a broadcast storm. net_tap
/// moves 20-30k packets a second (a syscall each), so the loads are
/// smaller than on the other backends.
#[test]
#[ignore = "needs root, DPDK (net_tap) and network namespaces: scripts/test.sh runs it as root"]
fn hostile_peers_against_the_dpdk_server_on_net_tap() {
    let mut t = TapServer::start("dhost", 6, "0", &[], false);
    let pid = t.server.as_ref().map(Child::id).unwrap();
    let addr = t.addr.clone();
    common::hostile_battery(
        &["ip", "netns", "exec", &t.ns],
        &addr,
        pid,
        &common::HostileLoad {
            trials: 20,
            flood_conns: 4000,
            flood_rss_mib: 256,
            flood_ping_ms: 50,
            storm: (20, 64 * 1024, 2000),
        },
    );
    assert!(t.stop(), "the server did not stop cleanly");
}
