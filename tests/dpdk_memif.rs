//! DPDK end to end, as root: two warpwire processes joined by net_memif
//! (shared memory, entirely in user space: no kernel on the data path),
//! server and client both on `--transport dpdk` with smoltcp on top; and a
//! DPDK server on net_tap inside a namespace the test creates, with kernel
//! TCP clients (the socket backend) in that namespace.
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

    /// Starts the server; with `via_config` its EAL arguments come from a
    /// `--config` file instead of `--dpdk-args`.
    fn start_with(name: &str, mem: &'static str, via_config: bool, extra: &[&str]) -> Self {
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
        };
        let _ = m.server.wait();
        let eal = m.eal("server", 0);
        let config = m.dir.join("warpwire.toml");
        std::fs::write(&config, format!("dpdk_args = \"{eal}\"\n")).unwrap();
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
        let mut child = Command::new(BIN)
            .args(&args)
            .env("WARPWIRE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let line = common::first_line(&mut child, Duration::from_secs(30));
        m.server = child;
        let line = line.expect("dpdk server did not start");
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
            BIN,
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
    let payload = std::env::temp_dir().join(format!("ww-memif-payload-{}", std::process::id()));
    let status = Command::new("sh")
        .args([
            "-c",
            &format!("head -c 50000000 /dev/urandom > {}", payload.display()),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let out = m.ok("client", &["data", "--file", payload.to_str().unwrap()]);
    eprintln!("50 MB over memif in {:?}", started.elapsed());
    assert!(out.contains("sent 50000000 bytes"), "{out}");
    let stored: Vec<_> = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let got = stored
        .iter()
        .find(|f| std::fs::metadata(f).unwrap().len() == 50_000_000)
        .unwrap_or_else(|| panic!("no 50 MB session file in {stored:?}"));
    assert_eq!(
        common::sha256_file(got),
        common::sha256_file(&payload),
        "DATA corrupted or reordered"
    );
    drop(m);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_file(&payload);
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

/// A namespace that is deleted on drop (with the TAP device in it).
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
#[ignore = "needs root, DPDK (net_tap) and network namespaces: scripts/test.sh runs it as root"]
fn dpdk_server_on_net_tap_with_kernel_clients() {
    assert!(
        common::is_root(),
        "this test needs root (scripts/test.sh runs it as root)"
    );
    let id = std::process::id() % 100_000;
    let ns = Netns(format!("ww-dtap-{id}"));
    let tap = format!("wwtap{id}");
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .unwrap()
            .success()
    );
    let eal = format!(
        "--no-huge --no-pci -m 256 --no-shconf --file-prefix ww-dtap-{id} -l 0 --log-level=lib.eal:error \
         --log-level=pmd.net.tap:error --vdev=net_tap0,iface={tap}"
    );
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            BIN,
            "serve",
            "--transport",
            "dpdk",
            "--dpdk-args",
            &eal,
        ])
        .args(["--ip", "10.77.3.1/24", "--listen", "0.0.0.0:7077"])
        .env("WARPWIRE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(Child, u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/ww-dtap-{}", self.1));
        }
    }
    let line = common::first_line(&mut server, Duration::from_secs(30));
    let server = Kill(server, id);
    let line = line.expect("dpdk server started");
    assert!(
        line.starts_with("warpwire listening on 10.77.3.1:7077"),
        "{line}"
    );
    // The TAP is the kernel's side of the DPDK port: give it an address.
    for args in [
        vec!["addr", "add", "10.77.3.2/24", "dev", tap.as_str()],
        vec!["link", "set", tap.as_str(), "up"],
        vec!["link", "set", "lo", "up"],
    ] {
        let mut a = vec!["-n", ns.0.as_str()];
        a.extend(args);
        assert!(
            Command::new("ip").args(&a).status().unwrap().success(),
            "ip {a:?}"
        );
    }
    let run = |args: &[&str]| -> Output {
        Command::new("ip")
            .args(["netns", "exec", &ns.0, "timeout", "60", BIN])
            .args(args)
            .env("WARPWIRE_LOG", "warn")
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| -> String {
        let o = run(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let addr = "10.77.3.1:7077";
    assert_eq!(
        ok(&["client", addr, "echo", "kernel to dpdk"]).trim(),
        "kernel to dpdk"
    );
    assert!(ok(&["client", addr, "ping", "--count", "3", "--interval", "10ms"]).contains("seq=2"));
    assert_eq!(ok(&["client", addr, "app", "0x80", "abc"]).trim(), "cba");
    assert!(ok(&["client", addr, "data", "twelve bytes"]).contains("12 bytes accepted"));
    assert!(ok(&["client", addr, "stats"]).contains("transport     dpdk"));
    assert!(
        String::from_utf8_lossy(&run(&["client", addr, "app", "0x99", "x"]).stderr)
            .contains("UNKNOWN_TYPE")
    );
    // A broadcast between two kernel clients through the DPDK server.
    let listener = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "timeout",
            "30",
            BIN,
            "client",
            addr,
            "listen",
            "--count",
            "1",
            "--duration",
            "20s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut delivered = false;
    for _ in 0..100 {
        if ok(&["client", addr, "broadcast", "via dpdk"]).contains("delivered to 1 recipient") {
            delivered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(delivered);
    assert!(
        String::from_utf8_lossy(&listener.wait_with_output().unwrap().stdout).contains("via dpdk")
    );
    let bench = ok(&[
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
    drop(server);
}
