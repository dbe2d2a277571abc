//! The `warpwire` binary end to end: serve, every client action, bench,
//! probe, users, auth, and a graceful SIGTERM, over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_warpwire");

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--workers", "2"])
            .args(extra)
            .env("WARPWIRE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let line = common::first_line(&mut child, Duration::from_secs(10))
            .expect("server printed its address");
        let addr = line
            .strip_prefix("warpwire listening on ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Self { child, addr }
    }

    /// SIGTERM (to our own child, by pid) and the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
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

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("WARPWIRE_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn client_actions_against_a_running_server() {
    let s = Server::start(&[]);
    let a = s.addr.to_string();
    assert_eq!(
        ok(&["client", &a, "echo", "hello wire"]).trim(),
        "hello wire"
    );
    assert!(
        ok(&["client", &a, "ping", "--count", "2", "--interval", "10ms"]).contains("seq=1 rtt=")
    );
    assert_eq!(ok(&["client", &a, "app", "0x80", "abc"]).trim(), "cba");
    assert_eq!(ok(&["client", &a, "app", "0x81", "abc"]).trim(), "ABC");
    assert!(ok(&["client", &a, "data", "some bytes"]).contains("10 bytes accepted"));
    let stats = ok(&["client", &a, "stats"]);
    assert!(stats.contains("transport     socket"), "{stats}");
    assert!(ok(&["client", &a, "broadcast", "hi"]).contains("delivered to 0 recipient"));

    // A listener receives a broadcast sent by another client.
    let listener = Command::new(BIN)
        .args(["client", &a, "listen", "--count", "1", "--duration", "10s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut delivered = false;
    for _ in 0..100 {
        if ok(&["client", &a, "broadcast", "to the listener"]).contains("delivered to 1 recipient")
        {
            delivered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(delivered);
    let out = listener.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("to the listener"));

    // Unknown application type: a clear error, non-zero exit.
    let o = run(&["client", &a, "app", "0x99", "x"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("UNKNOWN_TYPE"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    assert!(s.terminate().success(), "graceful shutdown exits 0");
}

#[test]
fn bench_reports_json() {
    let s = Server::start(&[]);
    let a = s.addr.to_string();
    let out = ok(&[
        "bench",
        &a,
        "--connections",
        "2",
        "--depth",
        "8",
        "--count",
        "5000",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["messages"].as_u64().unwrap() >= 5000, "{out}");
    assert_eq!(v["errors"].as_u64(), Some(0));
    drop(s);
}

#[test]
fn probe_and_forced_unavailable_transport() {
    let out = ok(&["probe"]);
    assert!(out.contains("socket   yes       yes"), "{out}");
    assert!(out.contains("choice: socket"), "{out}");
    let o = run(&["serve", "--transport", "rdma", "--listen", "127.0.0.1:0"]);
    assert!(
        !o.status.success(),
        "a forced unavailable transport must fail"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("transport rdma was requested but is unavailable"),
        "{err}"
    );
}

#[test]
fn users_file_and_required_auth() {
    let users = std::env::temp_dir().join(format!("ww-cli-users-{}.toml", std::process::id()));
    let _ = std::fs::remove_file(&users);
    let u = users.to_str().unwrap();
    let out = ok(&["users", "add", "alice", "--users", u]);
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token (shown once, store it now): "))
        .expect("generated token printed")
        .to_owned();
    assert!(!std::fs::read_to_string(&users).unwrap().contains(&token));
    let s = Server::start(&["--require-auth", "--users", u]);
    let a = s.addr.to_string();
    assert_eq!(
        ok(&[
            "client", &a, "--user", "alice", "--token", &token, "echo", "in"
        ])
        .trim(),
        "in"
    );
    let o = run(&["client", &a, "echo", "no auth"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("UNAUTHENTICATED"));
    drop(s);
    std::fs::remove_file(&users).unwrap();
}

#[test]
fn data_dir_stores_each_sessions_bytes() {
    let dir = std::env::temp_dir().join(format!("ww-cli-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = std::env::temp_dir().join(format!("ww-cli-payload-{}", std::process::id()));
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &payload).unwrap();
    let s = Server::start(&["--data-dir", dir.to_str().unwrap()]);
    let a = s.addr.to_string();
    let out = ok(&[
        "client",
        &a,
        "data",
        "--file",
        file.to_str().unwrap(),
        "--chunk",
        "10000",
    ]);
    assert!(out.contains("sent 300000 bytes"), "{out}");
    let stored: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(std::fs::read(&stored[0]).unwrap(), payload);
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&file).unwrap();
}
