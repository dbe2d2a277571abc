//! Generates the DPDK bindings, compiles the C shim and links libdpdk.
//!
//! Inputs (each one announced to cargo, so a change rebuilds):
//! - `native/wrapper.h`, `native/shim.h`, `native/shim.c` (repository root);
//! - `pkg-config libdpdk` (`PKG_CONFIG_PATH` selects another DPDK);
//! - `DPDK_LINK`: `static` (default) or `shared`;
//! - `WARPWIRE_DPDK_MARCH`: the `-march` to compile the shim with (see
//!   [`cflags`]).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The poll-mode and bus/mempool drivers linked in statically. They
/// register themselves from ELF constructors, so they are linked
/// `+whole-archive` (otherwise the linker drops them as unreferenced and
/// EAL fails with "failed to parse device"). Static linking also stops EAL
/// from dlopen()ing all ~128 PMDs of its plugin directory at start-up
/// (0.2-0.7 s measured).
const STATIC_DRIVERS: &[&str] = &[
    "rte_bus_vdev",
    "rte_mempool_ring",
    "rte_net_memif",
    "rte_net_tap",
    "rte_net_ring",
    "rte_net_null",
    "rte_net_af_packet",
];

/// The DPDK libraries the drivers above and the API we bind need, in link
/// order (dependents first).
const STATIC_LIBS: &[&str] = &[
    "rte_gso",
    "rte_ethdev",
    "rte_net",
    "rte_meter",
    "rte_mbuf",
    "rte_hash",
    "rte_rcu",
    "rte_mempool",
    "rte_ring",
    "rte_pci",
    "rte_eal",
    "rte_telemetry",
    "rte_kvargs",
];

/// System libraries the static DPDK objects above call into.
const STATIC_SYSTEM_LIBS: &[&str] = &["numa", "bsd", "atomic", "dl", "m", "pthread"];

const ENV_LINK: &str = "DPDK_LINK";
const ENV_MARCH: &str = "WARPWIRE_DPDK_MARCH";

fn main() {
    let native = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../native");
    for f in ["wrapper.h", "shim.h", "shim.c"] {
        println!("cargo:rerun-if-changed={}", native.join(f).display());
    }
    for var in [ENV_LINK, ENV_MARCH, "PKG_CONFIG_PATH", "PKG_CONFIG"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let version = pkg_config(&["--modversion"]).join(" ");
    let cflags = cflags();
    println!("cargo:version={version}");
    println!("cargo:rustc-env=WARPWIRE_DPDK_VERSION={version}");
    println!(
        "cargo:include={}",
        cflags
            .iter()
            .filter_map(|f| f.strip_prefix("-I"))
            .collect::<Vec<_>>()
            .join(":")
    );

    bindings(&native, &cflags);
    shim(&native, &cflags);
    link();
}

/// Runs pkg-config on libdpdk, failing the build with the fix spelled out.
fn pkg_config(args: &[&str]) -> Vec<String> {
    let tool = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_owned());
    let out = match Command::new(&tool).args(args).arg("libdpdk").output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run {tool} ({e}); install it: apt-get install -y --no-install-recommends pkg-config"
        ),
    };
    if !out.status.success() {
        panic!(
            "`{tool} {} libdpdk` failed: {}\ninstall DPDK: apt-get install -y --no-install-recommends libdpdk-dev \
             (or point PKG_CONFIG_PATH at another DPDK's libdpdk.pc)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// pkg-config's cflags for libdpdk with its `-march` replaced.
///
/// libdpdk.pc carries the `-march` DPDK itself was configured with:
/// Debian's says `corei7`, a DPDK built from source with the default
/// `-Dmachine=native` says `native`, i.e. the *build* machine. Baking that
/// into the shim makes a binary that dies with SIGILL on an older
/// deployment CPU, and the shim only forwards calls, so it gains nothing
/// from a newer ISA. So, like libbpf-sys, we drop pkg-config's `-march` and
/// compile for the minimum DPDK's headers accept on x86-64 (SSE4.2:
/// rte_memcpy.h uses SSSE3/SSE4 intrinsics and DPDK 22.11 requires
/// SSE4.2 anyway), unless `WARPWIRE_DPDK_MARCH` names one (`native`,
/// `corei7`, `x86-64-v3`, ...). bindgen parses the same flags, so both
/// see the same ISA-dependent header paths.
fn cflags() -> Vec<String> {
    let march = env::var(ENV_MARCH).ok().filter(|m| !m.is_empty());
    let mut flags = Vec::new();
    let mut raw = pkg_config(&["--cflags"]).into_iter();
    while let Some(flag) = raw.next() {
        if flag.starts_with("-march=") {
            continue;
        }
        // `-include rte_config.h` comes as two words: keep them together.
        if flag == "-include" {
            if let Some(file) = raw.next() {
                flags.push(flag);
                flags.push(file);
            }
            continue;
        }
        flags.push(flag);
    }
    match march {
        Some(m) => flags.push(format!("-march={m}")),
        None if env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") => {
            flags.push("-msse4.2".to_owned());
        }
        None => {}
    }
    flags
}

fn bindings(native: &Path, cflags: &[String]) {
    let header = native.join("wrapper.h");
    let bindings = bindgen::Builder::default()
        .header(header.display().to_string())
        .clang_arg(format!("-I{}", native.display()))
        .clang_args(cflags)
        // glibc declares cpu_set_t only with _GNU_SOURCE, and rte_os.h
        // defines rte_cpuset_t (and so rte_lcore_cpuset and
        // rte_thread_set_affinity) only when it is declared.
        .clang_arg("-D_GNU_SOURCE")
        .allowlist_function(
            "rte_eal_(init|cleanup|get_runtime_dir|process_type)|rte_strerror|rte_socket_id|\
             rte_thread_register|rte_thread_unregister|rte_thread_set_affinity|\
             rte_lcore_(cpuset|is_enabled|count)|rte_get_next_lcore|rte_get_main_lcore|\
             rte_eth_dev_(configure|start|stop|close|info_get|socket_id|count_avail|is_valid_port|\
             get_port_by_name|get_name_by_port|get_mtu|set_mtu|adjust_nb_rx_tx_desc)|\
             rte_eth_(rx|tx)_queue_setup|rte_eth_macaddr_get|rte_eth_link_get_nowait|\
             rte_eth_stats_(get|reset)|rte_eth_promiscuous_enable|rte_eth_from_rings?|\
             rte_pktmbuf_pool_create|rte_pktmbuf_free_bulk|rte_mempool_(free|avail_count|in_use_count|lookup)|\
             rte_ring_(create|free)|shim_.*",
        )
        .allowlist_type(
            "rte_mbuf|rte_mempool|rte_eth_conf|rte_eth_dev_info|rte_eth_stats|rte_eth_link|rte_ether_addr|rte_ring|\
             rte_cpuset_t",
        )
        .allowlist_var(
            "RTE_MBUF_DEFAULT_BUF_SIZE|RTE_PKTMBUF_HEADROOM|RTE_MAX_ETHPORTS|RTE_ETHER_(HDR_LEN|MTU|MAX_LEN|ADDR_LEN)|\
             RTE_ETH_MQ_RX_(NONE|RSS)|RTE_ETH_MQ_TX_NONE|RTE_ETH_LINK_(UP|DOWN)|RING_F_(SP_ENQ|SC_DEQ)|\
             RTE_MAX_LCORE|LCORE_ID_ANY|SOCKET_ID_ANY|RTE_MEMPOOL_CACHE_MAX_SIZE",
        )
        // rte_arp_ipv4 is __rte_packed but contains rte_ether_addr, which is
        // __rte_aligned(2): Rust rejects repr(packed) holding repr(align)
        // (E0588). Opaque, they keep size and alignment; we never read them.
        .opaque_type("rte_arp_ipv4|rte_arp_hdr")
        .derive_default(true)
        .derive_debug(false)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate();
    let bindings = match bindings {
        Ok(b) => b,
        Err(e) => panic!(
            "bindgen failed on {} ({e}); it needs libclang: apt-get install -y --no-install-recommends libclang-dev",
            header.display()
        ),
    };
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_else(|_| panic!("cargo sets OUT_DIR")));
    if let Err(e) = bindings.write_to_file(out.join("bindings.rs")) {
        panic!("cannot write the bindings to {}: {e}", out.display());
    }
}

fn shim(native: &Path, cflags: &[String]) {
    let mut build = cc::Build::new();
    build
        .file(native.join("shim.c"))
        .include(native)
        .opt_level(2);
    // DPDK's headers are noisy under -Wextra; the shim itself is trivial.
    build.warnings(false);
    let mut flags = cflags.iter();
    while let Some(f) = flags.next() {
        if f == "-include" {
            if let Some(file) = flags.next() {
                build.flag(f).flag(file);
            }
        } else {
            build.flag(f);
        }
    }
    build.compile("warpwire_dpdk_shim");
}

fn link() {
    let mode = env::var(ENV_LINK).unwrap_or_else(|_| "static".to_owned());
    match mode.as_str() {
        "static" => {
            let libdir = pkg_config(&["--variable=libdir"]).join("");
            println!("cargo:rustc-link-search=native={libdir}");
            for lib in STATIC_DRIVERS {
                // The driver archives must exist: a missing one would link
                // and then fail at run time with "failed to parse device".
                let archive = Path::new(&libdir).join(format!("lib{lib}.a"));
                if !archive.exists() {
                    panic!(
                        "{} missing: DPDK_LINK=static needs DPDK's static archives (Debian: libdpdk-dev); \
                         DPDK_LINK=shared links the shared libraries instead",
                        archive.display()
                    );
                }
                println!("cargo:rustc-link-lib=static:+whole-archive,-bundle={lib}");
            }
            for lib in STATIC_LIBS {
                println!("cargo:rustc-link-lib=static:-bundle={lib}");
            }
            for lib in STATIC_SYSTEM_LIBS {
                println!("cargo:rustc-link-lib=dylib={lib}");
            }
        }
        "shared" => {
            // EAL then dlopen()s every PMD in its plugin directory at init.
            for word in pkg_config(&["--libs"]) {
                if let Some(lib) = word.strip_prefix("-l") {
                    println!("cargo:rustc-link-lib=dylib={lib}");
                } else if let Some(dir) = word.strip_prefix("-L") {
                    println!("cargo:rustc-link-search=native={dir}");
                }
            }
        }
        other => panic!("{ENV_LINK}={other}: expected `static` (default) or `shared`"),
    }
}
