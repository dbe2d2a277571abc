//! DpdkDevice over in-memory PMDs: net_null (bursts out and in) and a
//! net_ring port looped back onto a tiny ring (partial transmit bursts,
//! ordering, pool exhaustion). Each test runs its body in a child process
//! (EAL initialises once per process); see `common`. The probe tests run
//! the crate's `warpwire-dpdk-probe` binary, which has the probe's child
//! hook first in `main` as every binary that probes must.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use warpwire_dpdk::{
    DEFAULT_DATA_ROOM, DeviceConfig, DpdkDevice, DpdkError, Eal, Mempool, Port, PortConfig,
};
use warpwire_transport::{PacketDevice, RxToken, TxToken};

const IGNORE: &str = "needs root and DPDK (hugepages optional): scripts/test.sh runs it as root";

fn run_parent(test: &str) {
    require_root();
    let t0 = Instant::now();
    let prefix = tag(test);
    let mut c = spawn_child(test, "main", &prefix, &[], &[]);
    let (ok, out) = c.finish(Duration::from_secs(60));
    assert!(ok, "child failed:\n{out}");
    assert!(
        !std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists(),
        "runtime dir left behind"
    );
    eprintln!("{test}: {:?}", t0.elapsed());
}

/// Writes a frame whose first 4 bytes are `seq`.
fn queue_frame(dev: &mut DpdkDevice, seq: u32, len: usize) -> bool {
    let Some(tok) = dev.transmit(Instant::now()) else {
        return false;
    };
    tok.consume(len, |b| {
        b.fill(0x5a);
        b[..4].copy_from_slice(&seq.to_be_bytes());
    });
    true
}

fn recv_seqs(dev: &mut DpdkDevice, max: usize) -> Vec<u32> {
    let mut v = Vec::new();
    while v.len() < max {
        let Some((rx, _tx)) = dev.receive(Instant::now()) else {
            break;
        };
        v.push(rx.consume(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])));
    }
    v
}

#[test]
#[ignore = "needs root and DPDK (hugepages optional): scripts/test.sh runs it as root"]
fn null_and_ring_bursts_partial_tx_and_pool_exhaustion() {
    const T: &str = "null_and_ring_bursts_partial_tx_and_pool_exhaustion";
    let _ = IGNORE;
    let Some(_role) = child_role(T) else {
        return run_parent(T);
    };
    child_main(|| {
        let prefix = tag(T);
        let eal = init_eal(&eal_args(&prefix, 0, &["--vdev=net_null0".to_owned()]));
        // One init per process: a second is an error, not UB.
        assert!(matches!(
            Eal::init(&eal_args("x", 0, &[])),
            Err(DpdkError::AlreadyInitialised)
        ));
        assert!(Eal::current().is_some());

        // --- net_null: a burst out and a burst in ---------------------------
        let pool = Mempool::new(&eal, "ww_rx", 2047, 32, DEFAULT_DATA_ROOM).unwrap();
        let null_id = Port::find(&eal, "net_null0").unwrap();
        let null = Port::start(&eal, null_id, &PortConfig::default(), &pool).unwrap();
        assert_eq!(null.driver(), "net_null");
        let mut dev = DpdkDevice::new(&null, 0, &pool, DeviceConfig::default()).unwrap();
        assert!(matches!(
            DpdkDevice::new(&null, 0, &pool, DeviceConfig::default()),
            Err(DpdkError::QueueTaken { .. })
        ));
        let caps = dev.capabilities();
        assert_eq!(caps.max_frame, 1514);
        assert_eq!(caps.max_burst, 32);
        assert!(!caps.tx_checksum_offload);
        for i in 0..32 {
            assert!(queue_frame(&mut dev, i, 64));
        }
        assert_eq!(dev.tx_pending(), 32);
        assert_eq!(dev.flush().unwrap(), 32);
        assert_eq!(dev.tx_pending(), 0);
        let got = recv_seqs(&mut dev, 32);
        assert_eq!(got.len(), 32, "net_null delivers a full burst");
        assert_eq!(dev.stats().rx_bursts, 1, "one rx_burst per refill");
        assert_eq!(null.stats().unwrap().opackets, 32);
        drop(dev);

        // --- net_ring on an 8-slot ring (holds 7): partial bursts ---------
        let ring_id = Port::create_ring_loopback(&eal, "ww_ring", 8).unwrap();
        let ring = Port::start(&eal, ring_id, &PortConfig::default(), &pool).unwrap();
        assert_eq!(ring.driver(), "net_ring");
        let mut dev = DpdkDevice::new(&ring, 0, &pool, DeviceConfig::default()).unwrap();
        for i in 0..20 {
            assert!(queue_frame(&mut dev, i, 100));
        }
        assert_eq!(dev.flush().unwrap(), 7, "the ring takes 7 of 20");
        assert_eq!(dev.tx_pending(), 13, "the rest is kept, not dropped");
        assert_eq!(dev.stats().tx_partial, 1);
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.len() < 20 && Instant::now() < deadline {
            seen.extend(recv_seqs(&mut dev, 32));
            dev.flush().unwrap();
        }
        assert_eq!(
            seen,
            (0..20).collect::<Vec<_>>(),
            "every frame, once, in order"
        );
        assert_eq!(dev.tx_pending(), 0);
        drop(dev);

        // --- pool exhaustion: transmit says None, never panics -------------
        let small = Mempool::new(&eal, "ww_small", 63, 0, DEFAULT_DATA_ROOM).unwrap();
        let mut dev = DpdkDevice::new(
            &ring,
            0,
            &small,
            DeviceConfig {
                burst: 8,
                max_pending: 1024,
            },
        )
        .unwrap();
        let mut queued = 0;
        while queue_frame(&mut dev, queued, 60) {
            queued += 1;
            assert!(queued <= 63, "more frames than mbufs");
        }
        assert!(queued >= 56, "most of the pool was usable: {queued}");
        assert!(dev.stats().tx_alloc_failures >= 1);
        // Receive needs a spare transmit buffer too: backpressure, not a panic.
        assert!(dev.receive(Instant::now()).is_none());
        assert_eq!(dev.flush().unwrap(), 7, "the ring takes what fits");
        assert_eq!(dev.tx_pending() as u32, queued - 7);
        let stats = dev.stats();
        // Closing the device frees what it still held (pending, stash).
        drop(dev);
        // The looped-back mbufs come out of the ring on another device and
        // go back to their pool: nothing leaked.
        let mut dev = DpdkDevice::new(&ring, 0, &pool, DeviceConfig::default()).unwrap();
        assert_eq!(recv_seqs(&mut dev, 64), (0..7).collect::<Vec<_>>());
        dev.flush().unwrap();
        assert_eq!(small.available(), 63, "every mbuf back in the small pool");
        eprintln!(
            "pool of 63: {queued} frames queued before exhaustion; stats {:?}",
            stats
        );
        drop(dev);
        drop((null, ring, small, pool));
        eal.cleanup();
        assert!(!std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists());
    });
}

#[test]
#[ignore = "needs root and DPDK (hugepages optional): scripts/test.sh runs it as root"]
fn worker_threads_register_as_lcores_and_drive_queues_of_one_port() {
    const T: &str = "worker_threads_register_as_lcores_and_drive_queues_of_one_port";
    let Some(_role) = child_role(T) else {
        return run_parent(T);
    };
    child_main(|| {
        let prefix = tag(T);
        let before = cpus_allowed();
        let eal = init_eal(&eal_args(&prefix, 0, &["--vdev=net_null0".to_owned()]));
        // EAL pinned this thread to lcore 0's CPU; init gave it its former
        // set back, and threads it spawns get that set, not CPU 0 alone.
        assert_eq!(
            cpus_allowed(),
            before,
            "the main thread's CPU set after init"
        );
        let spawned = std::thread::spawn(cpus_allowed).join().unwrap();
        assert_eq!(spawned, before, "a thread spawned after init");
        let lcores = eal.lcores();
        assert_eq!(lcores.len(), 1, "-l 0: {lcores:?}");
        assert_eq!((lcores[0].id, lcores[0].cpus.clone()), (0, vec![0]));
        // The thread that initialised EAL is its main lcore already.
        assert!(matches!(
            eal.register_thread(0),
            Err(DpdkError::AlreadyLcore { lcore: 0 })
        ));
        let pool = Mempool::new(&eal, "ww_mq", 4095, 64, DEFAULT_DATA_ROOM).unwrap();
        let id = Port::find(&eal, "net_null0").unwrap();
        let config = PortConfig {
            rx_queues: 2,
            tx_queues: 2,
            ..PortConfig::default()
        };
        let port = Port::start(&eal, id, &config, &pool).unwrap();
        assert_eq!(port.queues(), (2, 2));
        eprintln!("net_null with 2 queues: rss {}", port.rss());
        // Three workers on one lcore: round-robin puts them all on its CPU.
        // They meet once all are registered, so their lcore ids coexist.
        let all_registered = std::sync::Arc::new(std::sync::Barrier::new(3));
        let workers: Vec<_> = (0..3u16)
            .map(|i| {
                let (eal, port, pool) = (eal.clone(), port.clone(), pool.clone());
                let all_registered = all_registered.clone();
                std::thread::spawn(move || {
                    let guard = eal.register_thread(usize::from(i)).unwrap();
                    all_registered.wait();
                    assert_eq!((guard.eal_lcore(), guard.cpus()), (0, &[0usize][..]));
                    assert_eq!(cpus_allowed(), "0", "pinned to lcore 0's CPU");
                    assert!(matches!(
                        eal.register_thread(0),
                        Err(DpdkError::AlreadyLcore { .. })
                    ));
                    let lcore = guard.lcore_id();
                    if i == 2 {
                        // No queue 2: the guard alone, released on drop.
                        drop(guard);
                        let again = eal.register_thread(0).unwrap();
                        return (lcore, again.lcore_id());
                    }
                    let mut dev =
                        DpdkDevice::new(&port, i, &pool, DeviceConfig::default()).unwrap();
                    dev.attach_lcore(guard);
                    for s in 0..32 {
                        assert!(queue_frame(&mut dev, s, 64));
                    }
                    assert_eq!(dev.flush().unwrap(), 32);
                    assert_eq!(recv_seqs(&mut dev, 32).len(), 32);
                    drop(dev);
                    // The device released the lcore: registering works again.
                    let again = eal.register_thread(0).unwrap();
                    (lcore, again.lcore_id())
                })
            })
            .collect();
        let ids: Vec<(u32, u32)> = workers.into_iter().map(|h| h.join().unwrap()).collect();
        let mut firsts: Vec<u32> = ids.iter().map(|p| p.0).collect();
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(
            firsts.len(),
            3,
            "each live thread has its own lcore id: {ids:?}"
        );
        assert!(
            firsts.iter().all(|&l| l != 0),
            "never the main lcore: {ids:?}"
        );
        assert_eq!(port.stats().unwrap().opackets, 64);
        // A thread that polls as the main lcore (a client) pins itself.
        eal.pin_to_main_lcore().unwrap();
        assert_eq!(cpus_allowed(), "0");
        drop((port, pool));
        eal.cleanup();
    });
}

/// The calling thread's `Cpus_allowed_list`, as /proc shows it.
fn cpus_allowed() -> String {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned()
}

/// The probe on its own (`src/bin/probe.rs`): `warpwire_dpdk::probe`
/// re-executes the calling binary as its child, so it has to run from a
/// binary that calls `probe_child_hook` first in `main`, which this
/// libtest binary cannot.
const PROBE_BIN: &str = env!("CARGO_BIN_EXE_warpwire-dpdk-probe");

/// Runs the probe binary with `args` and `env` (bounded; killed, by its own
/// pid, past `within`): its exit code (`None`: killed) and stdout.
fn run_probe_bin(args: &[&str], env: &[(&str, &str)], within: Duration) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(PROBE_BIN);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut c = cmd.spawn().unwrap();
    let deadline = Instant::now() + within;
    let code = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break Some(s.code().unwrap_or(-1));
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(c.stdout.as_mut().unwrap(), &mut out).unwrap();
    (code, out)
}

#[test]
#[ignore = "needs root and DPDK (hugepages optional): scripts/test.sh runs it as root"]
fn probe_initialises_eal_in_a_child_and_lists_ports() {
    require_root();
    let t0 = Instant::now();
    let prefix = tag("probe-e2e");
    let args = [
        "--no-huge",
        "--no-pci",
        "-m",
        "256",
        "--no-shconf",
        "--file-prefix",
        &prefix,
        "-l",
        "0",
        "--log-level=lib.eal:error",
        "--vdev=net_null0",
        "--vdev=net_ring0",
    ];
    let (code, out) = run_probe_bin(&args, &[], Duration::from_secs(60));
    let left_behind = std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists();
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    // Exit 2 would mean the probe initialised EAL in the calling process.
    assert_eq!(code, Some(0), "{out}");
    assert!(
        !left_behind,
        "the probe's child left its runtime dir behind"
    );
    assert!(out.starts_with("available: EAL ok; "), "{out}");
    assert!(out.contains("net_null0 (net_null"), "{out}");
    assert!(out.contains("net_ring0 (net_ring"), "{out}");
    let (code, bad) = run_probe_bin(
        &[
            "--no-huge",
            "--in-memory",
            "--file-prefix",
            "ww-bad",
            "-l",
            "0",
        ],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(1), "{bad}");
    assert!(bad.starts_with("unavailable: "), "{bad}");
    assert!(bad.contains("EAL initialisation failed"), "{bad}");
    eprintln!("probe: {} ({:?})", out.trim(), t0.elapsed());
}

#[test]
#[ignore = "needs root and DPDK (hugepages optional): scripts/test.sh runs it as root"]
fn probe_child_reports_ports_and_exits() {
    require_root();
    let t0 = Instant::now();
    let prefix = tag("probe-child");
    // What `probe` does to the binary: the hook, first in main, runs with
    // these EAL arguments, reports on stdout and exits before `main`'s own
    // work (which would print `available:`/`unavailable:`).
    let eal = format!(
        "--no-huge --no-pci -m 256 --no-shconf --file-prefix {prefix} -l 0 --log-level=lib.eal:error --vdev=net_null0 --vdev=net_ring0"
    );
    let (code, out) = run_probe_bin(
        &["--exact", "__warpwire_dpdk_probe_child__"],
        &[(warpwire_dpdk::PROBE_CHILD_ENV, &eal)],
        Duration::from_secs(30),
    );
    let left_behind = std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists();
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("WARPWIRE-DPDK-PROBE ok"), "{out}");
    assert!(out.contains("net_null0 (net_null"), "{out}");
    assert!(out.contains("net_ring0 (net_ring"), "{out}");
    assert!(
        !out.contains("available:"),
        "the hook exits before main: {out}"
    );
    assert!(!left_behind, "runtime dir left behind");
    eprintln!("probe_child_reports_ports_and_exits: {:?}", t0.elapsed());
}
