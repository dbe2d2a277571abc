//! Helpers shared by the binary's integration tests (each test file
//! includes this module and uses what it needs).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command};
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
