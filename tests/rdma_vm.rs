//! The RDMA transport end to end inside a throw-away QEMU guest with
//! soft-RoCE (this host's kernel has no RDMA): `scripts/rdma-vm.sh` boots
//! Debian's stock kernel (unpacked, never installed) with a busybox
//! initramfs that holds this warpwire binary, creates rxe0 on a dummy
//! interface, runs `warpwire serve --transport rdma` and every client
//! feature over rdma, two benches and a 50 MB hash-checked DATA transfer,
//! transport selection by address (auto on 127.0.0.1 falls back to socket,
//! forced rdma there is refused), a refused connect, 64 connections, a
//! busy-polling server and client, and a client killed mid-upload, and
//! decides from the guest's console (about 60 s of tests under TCG).
//!
//! Ignored by default (needs root: apt for QEMU and the rdma-core tools):
//! `scripts/test.sh` runs it as root, so elsewhere it shows as skipped. The
//! guest has no network device, so no traffic leaves it.
#![cfg(feature = "rdma")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_warpwire");

/// The transport the guest tests (`socket` runs the same checks over the
/// guest's kernel TCP, to tell a harness problem from a transport one).
const TRANSPORT: &str = "rdma";

#[test]
#[ignore = "needs root and QEMU (boots a soft-RoCE guest): scripts/test.sh runs it as root"]
fn every_feature_inside_a_soft_roce_guest() {
    assert!(
        common::is_root(),
        "this test needs root (scripts/test.sh runs it as root)"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rdma-vm.sh");
    let started = Instant::now();
    // The script bounds QEMU at 240 s; the outer timeout also covers apt
    // and the kernel download on a fresh machine.
    let out = Command::new("timeout")
        .args(["-k", "10", "300", script, BIN, "--transport", TRANSPORT])
        .env("RDMA_VM_TIMEOUT", "240")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "rdma-vm.sh --transport {TRANSPORT}: {:?} in {:?}",
        out.status,
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "rdma-vm.sh failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("RESULT: PASS"),
        "no PASS verdict:\n{stdout}\n{stderr}"
    );
    // The bench summaries, for the record.
    for line in stdout.lines().filter(|l| l.contains("WW-RDMA-BENCH")) {
        eprintln!("{line}");
    }
}
