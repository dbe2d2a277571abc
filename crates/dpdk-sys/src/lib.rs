//! # warpwire-dpdk-sys: raw bindings to DPDK 22.11
//!
//! Generated at build time by bindgen from the system's libdpdk (found
//! with pkg-config), plus a small C shim (`native/shim.c`) for the parts of
//! DPDK that are `static inline` or macros and so have no symbol to link:
//! rx/tx bursts, mbuf alloc/free/mtod/append, `rte_errno`, the lcore id.
//!
//! ```text
//!   native/wrapper.h ──bindgen (pkg-config cflags, regex allowlists)──► bindings.rs ─┐
//!   native/shim.c    ──cc (same cflags)────────────────────────────────► libwarpwire_dpdk_shim.a
//!                                                                                   │
//!   this crate: pub use bindings::*  ◄───────────────────────────────────────────────┘
//!        │ links (DPDK_LINK=static, default)
//!        ├─ +whole-archive: bus_vdev, mempool_ring, net_{memif,tap,ring,null,af_packet}
//!        └─ rte_ethdev, rte_mbuf, rte_mempool, rte_ring, rte_eal, ... + numa, bsd, ...
//! ```
//!
//! Linking is static by default with exactly the PMDs warpwire supports,
//! whole-archive so their registration constructors run; `DPDK_LINK=shared`
//! links the shared libraries instead (EAL then dlopen()s every PMD of its
//! plugin directory at start-up). The shim is compiled without
//! pkg-config's `-march` unless `WARPWIRE_DPDK_MARCH` sets one: no
//! `-march=native` (or Debian's `corei7`) baked in by default.
//!
//! Layout: bindgen's layout tests are kept on, and `tests` below compares
//! the C compiler's `offsetof`/`sizeof` (exported by the shim) with the
//! Rust structs for every field the safe wrapper touches.
//!
//! What this crate does not do: anything safe. `warpwire-dpdk` wraps it.
//! EAL may be initialised once per process; tests that do so run in a
//! child process of their own (see `tests/smoke.rs`).

#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// The DPDK version this crate was built against (`pkg-config --modversion`).
pub const DPDK_VERSION: &str = env!("WARPWIRE_DPDK_VERSION");

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn mbuf_layout_matches_c() {
        // SAFETY: the shim's layout functions only return compile-time
        // constants; no DPDK state is touched.
        unsafe {
            assert_eq!(size_of::<rte_mbuf>(), shim_sizeof_mbuf());
            assert_eq!(
                offset_of!(rte_mbuf, buf_addr),
                shim_offsetof_mbuf_buf_addr()
            );
            assert_eq!(
                offset_of!(rte_mbuf, data_off),
                shim_offsetof_mbuf_data_off()
            );
            assert_eq!(offset_of!(rte_mbuf, nb_segs), shim_offsetof_mbuf_nb_segs());
            assert_eq!(
                offset_of!(rte_mbuf, ol_flags),
                shim_offsetof_mbuf_ol_flags()
            );
            assert_eq!(offset_of!(rte_mbuf, pkt_len), shim_offsetof_mbuf_pkt_len());
            assert_eq!(
                offset_of!(rte_mbuf, data_len),
                shim_offsetof_mbuf_data_len()
            );
            assert_eq!(offset_of!(rte_mbuf, pool), shim_offsetof_mbuf_pool());
            assert_eq!(offset_of!(rte_mbuf, next), shim_offsetof_mbuf_next());
        }
    }

    #[test]
    fn ethdev_layout_matches_c() {
        // SAFETY: as above, constants only.
        unsafe {
            assert_eq!(size_of::<rte_eth_conf>(), shim_sizeof_eth_conf());
            assert_eq!(
                offset_of!(rte_eth_conf, rxmode),
                shim_offsetof_eth_conf_rxmode()
            );
            assert_eq!(
                offset_of!(rte_eth_conf, rx_adv_conf),
                shim_offsetof_eth_conf_rx_adv_conf()
            );
            assert_eq!(size_of::<rte_eth_dev_info>(), shim_sizeof_eth_dev_info());
            assert_eq!(
                offset_of!(rte_eth_dev_info, driver_name),
                shim_offsetof_eth_dev_info_driver_name()
            );
            assert_eq!(
                offset_of!(rte_eth_dev_info, rx_offload_capa),
                shim_offsetof_eth_dev_info_rx_offload_capa()
            );
            assert_eq!(
                offset_of!(rte_eth_dev_info, flow_type_rss_offloads),
                shim_offsetof_eth_dev_info_flow_type_rss_offloads()
            );
            assert_eq!(size_of::<rte_eth_stats>(), shim_sizeof_eth_stats());
            assert_eq!(
                offset_of!(rte_eth_stats, opackets),
                shim_offsetof_eth_stats_opackets()
            );
            assert_eq!(size_of::<rte_eth_link>(), shim_sizeof_eth_link());
            assert_eq!(size_of::<rte_ether_addr>(), shim_sizeof_ether_addr());
        }
    }

    #[test]
    fn macro_constants_are_the_documented_bits() {
        // SAFETY: constants only.
        unsafe {
            // RTE_ETH_RX_OFFLOAD_{IPV4,UDP,TCP}_CKSUM = bits 1, 2, 3.
            assert_eq!(shim_rx_offload_cksum(), 0b1110);
            assert_eq!(shim_rx_cksum_bad_ip(), 1 << 4);
            assert_eq!(shim_rx_cksum_bad_l4(), 1 << 3);
            assert_ne!(shim_rss_hf_ip_tcp_udp(), 0);
        }
        assert_eq!(RTE_PKTMBUF_HEADROOM, 128);
        assert!(DPDK_VERSION.starts_with("22.11"), "{DPDK_VERSION}");
    }
}
