//! Smoke test: EAL comes up without hugepages or PCI, the statically
//! linked net_null PMD is found, and a burst goes out and comes back in.
//!
//! EAL can be initialised once per process and never again, so the test
//! re-executes this test binary with [`CHILD_ENV`] set and runs the body
//! in that child: `cargo test` with any number of threads never
//! initialises EAL twice in one process. Needs no root (`--no-huge`,
//! `--no-shconf`; the runtime directory is cleaned up afterwards).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::ffi::{CStr, CString, c_char};
use std::process::Command;
use std::time::{Duration, Instant};

use warpwire_dpdk_sys as sys;

const CHILD_ENV: &str = "WARPWIRE_DPDK_SYS_SMOKE_CHILD";
const CHILD_OK: &str = "DPDK-SYS-SMOKE-OK";

fn errno_text() -> String {
    // SAFETY: shim_errno reads the calling thread's rte_errno;
    // rte_strerror returns a pointer to a static or thread-local string.
    unsafe {
        CStr::from_ptr(sys::rte_strerror(sys::shim_errno()))
            .to_string_lossy()
            .into_owned()
    }
}

/// The body, run inside the child process only.
fn child(prefix: &str) {
    let args = [
        "smoke",
        "--no-huge",
        "--no-pci",
        "-m",
        "256",
        "--no-shconf",
        "--file-prefix",
        prefix,
        "-l",
        "0",
        "--log-level=lib.eal:error",
        "--vdev=net_null0",
    ];
    let cargs: Vec<CString> = args.iter().map(|a| CString::new(*a).unwrap()).collect();
    let mut argv: Vec<*mut c_char> = cargs.iter().map(|c| c.as_ptr().cast_mut()).collect();
    let t0 = Instant::now();
    // SAFETY: argv holds valid NUL-terminated strings that outlive the
    // process's use of EAL (cargs lives to the end of this function, after
    // rte_eal_cleanup); this is the only EAL init in this process.
    let rc = unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
    assert!(rc >= 0, "rte_eal_init: {}", errno_text());
    eprintln!("EAL up in {:?}", t0.elapsed());
    // SAFETY: EAL is initialised; every pointer passed below points to
    // live, correctly typed storage of this stack frame.
    unsafe {
        assert_eq!(sys::rte_eth_dev_count_avail(), 1, "one port: net_null0");
        let mut info: sys::rte_eth_dev_info = std::mem::zeroed();
        assert_eq!(sys::rte_eth_dev_info_get(0, &mut info), 0);
        let driver = CStr::from_ptr(info.driver_name).to_string_lossy();
        assert_eq!(driver, "net_null");

        let name = CString::new("smoke_pool").unwrap();
        let pool = sys::rte_pktmbuf_pool_create(
            name.as_ptr(),
            1023,
            32,
            0,
            sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
            sys::rte_socket_id() as i32,
        );
        assert!(!pool.is_null(), "pool: {}", errno_text());
        let conf: sys::rte_eth_conf = std::mem::zeroed();
        assert_eq!(sys::rte_eth_dev_configure(0, 1, 1, &conf), 0);
        assert_eq!(
            sys::rte_eth_rx_queue_setup(0, 0, 256, 0, std::ptr::null(), pool),
            0
        );
        assert_eq!(
            sys::rte_eth_tx_queue_setup(0, 0, 256, 0, std::ptr::null()),
            0
        );
        assert_eq!(sys::rte_eth_dev_start(0), 0);

        let mut out = [std::ptr::null_mut::<sys::rte_mbuf>(); 8];
        assert_eq!(sys::shim_pktmbuf_alloc_bulk(pool, out.as_mut_ptr(), 8), 0);
        for &m in &out {
            let p = sys::shim_pktmbuf_append(m, 64);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 0xab, 64);
            assert_eq!(sys::shim_pktmbuf_data_len(m), 64);
            assert_eq!(sys::shim_pktmbuf_pkt_len(m), 64);
        }
        // net_null frees what it transmits and fabricates what it receives.
        let sent = sys::shim_tx_burst(0, 0, out.as_mut_ptr(), 8);
        assert_eq!(sent, 8);
        let mut inb = [std::ptr::null_mut::<sys::rte_mbuf>(); 8];
        let got = sys::shim_rx_burst(0, 0, inb.as_mut_ptr(), 8);
        assert!(got > 0, "net_null delivers frames");
        sys::rte_pktmbuf_free_bulk(inb.as_mut_ptr(), u32::from(got));
        let mut stats: sys::rte_eth_stats = std::mem::zeroed();
        assert_eq!(sys::rte_eth_stats_get(0, &mut stats), 0);
        assert_eq!(stats.opackets, 8);

        assert_eq!(sys::rte_eth_dev_stop(0), 0);
        assert_eq!(sys::rte_eth_dev_close(0), 0);
        sys::rte_mempool_free(pool);
        let dir = CStr::from_ptr(sys::rte_eal_get_runtime_dir())
            .to_string_lossy()
            .into_owned();
        assert_eq!(sys::rte_eal_cleanup(), 0);
        assert!(dir.ends_with(prefix), "{dir}");
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("{CHILD_OK}");
}

#[test]
fn eal_null_port_burst_out_and_in() {
    if let Ok(prefix) = std::env::var(CHILD_ENV) {
        child(&prefix);
        return;
    }
    let prefix = format!("ww-sys-smoke-{}", std::process::id());
    let t0 = Instant::now();
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "eal_null_port_burst_out_and_in",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &prefix)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: EAL init takes well under a second here.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            panic!("the EAL child did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(c.stdout.as_mut().unwrap(), &mut out).unwrap();
    // Whatever happened, leave no runtime directory behind.
    for base in ["/var/run/dpdk", "/tmp/dpdk"] {
        let _ = std::fs::remove_dir_all(format!("{base}/{prefix}"));
    }
    assert!(status.success(), "child failed: {status}\n{out}");
    assert!(out.contains(CHILD_OK), "child did not run the body:\n{out}");
    eprintln!("smoke child took {:?}", t0.elapsed());
}
