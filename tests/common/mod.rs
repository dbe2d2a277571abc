//! Helpers shared by the binary's integration tests (each test file
//! includes this module and uses what it needs).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The first line a child prints on stdout (its `listening on` line), or
/// `None` if none comes within `within`. The child must have been spawned
/// with `stdout(Stdio::piped())`; the rest of its output is drained.
pub fn first_line(child: &mut Child, within: Duration) -> Option<String> {
    let out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx.recv_timeout(within).ok()
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

/// SHA-256 of a file, as sha256sum prints it.
pub fn sha256_file(path: &std::path::Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(o.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Asserts that a `warpwire bench --json` report had no errors and lost nothing.
pub fn assert_bench_clean(json: &str) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(
        (v["errors"].as_u64(), v["lost"].as_u64()),
        (Some(0), Some(0)),
        "{json}"
    );
}

/// The warpwire binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_warpwire");

/// `warpwire serve` on loopback (port 0), killed on drop.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Server {
    /// Starts a server with 2 workers on 127.0.0.1:0 (unless `extra` has
    /// `--listen`) and waits for its address.
    pub fn start(extra: &[&str]) -> Self {
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let workers: &[&str] = if extra.contains(&"--workers") {
            &[]
        } else {
            &["--workers", "2"]
        };
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(workers)
            .args(listen)
            .args(extra)
            .env("WARPWIRE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let line =
            first_line(&mut child, Duration::from_secs(10)).expect("server printed its address");
        let addr = line
            .strip_prefix("warpwire listening on ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Self { child, addr }
    }

    /// SIGTERM (to our own child, by pid) and the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        for _ in 0..100 {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("server did not exit within 5 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `warpwire-hostile` peer (crates/testkit), built beside the warpwire
/// binary by `cargo build --workspace` (nextest builds it too).
pub fn hostile_bin() -> String {
    let p = std::path::Path::new(BIN).with_file_name("warpwire-hostile");
    assert!(
        p.exists(),
        "{} missing: build the workspace first (scripts/test.sh does)",
        p.display()
    );
    p.display().to_string()
}

/// Resident memory of a process, KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
