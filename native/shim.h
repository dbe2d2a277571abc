/*
 * warpwire DPDK shim: out-of-line wrappers for DPDK's static-inline fast
 * path (Rust cannot call a `static inline` function), constants DPDK only
 * defines through function-like macros, and the C compiler's view of a few
 * struct layouts so tests can compare it with bindgen's.
 *
 * Compiled by crates/dpdk-sys/build.rs with the same cflags as the
 * bindings, so both sides see the same rte_config.h.
 */
#ifndef WARPWIRE_DPDK_SHIM_H
#define WARPWIRE_DPDK_SHIM_H

#include <stdint.h>
#include <stddef.h>

struct rte_mbuf;
struct rte_mempool;

/* --- fast path ----------------------------------------------------------- */
uint16_t shim_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t shim_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *shim_pktmbuf_alloc(struct rte_mempool *mp);
/* 0 on success (all n allocated), negative when the pool has fewer than n. */
int shim_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n);
void shim_pktmbuf_free(struct rte_mbuf *m);
void *shim_pktmbuf_mtod(struct rte_mbuf *m);
/* NULL when the last segment lacks `len` bytes of tailroom. */
char *shim_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
uint16_t shim_pktmbuf_tailroom(const struct rte_mbuf *m);
uint16_t shim_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t shim_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t shim_pktmbuf_nb_segs(const struct rte_mbuf *m);
uint64_t shim_pktmbuf_ol_flags(const struct rte_mbuf *m);
int shim_errno(void);
unsigned shim_lcore_id(void);

/* --- constants behind function-like macros (RTE_BIT64) ------------------- */
/* RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | _TCP_CKSUM | _UDP_CKSUM */
uint64_t shim_rx_offload_cksum(void);
/* RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP */
uint64_t shim_rss_hf_ip_tcp_udp(void);
/* RTE_MBUF_F_RX_IP_CKSUM_BAD | RTE_MBUF_F_RX_L4_CKSUM_BAD (both masks' BAD values) */
uint64_t shim_rx_cksum_bad_ip(void);
uint64_t shim_rx_cksum_mask_ip(void);
uint64_t shim_rx_cksum_bad_l4(void);
uint64_t shim_rx_cksum_mask_l4(void);

/* --- layout as the C compiler sees it ------------------------------------ */
size_t shim_sizeof_mbuf(void);
size_t shim_offsetof_mbuf_buf_addr(void);
size_t shim_offsetof_mbuf_data_off(void);
size_t shim_offsetof_mbuf_nb_segs(void);
size_t shim_offsetof_mbuf_ol_flags(void);
size_t shim_offsetof_mbuf_pkt_len(void);
size_t shim_offsetof_mbuf_data_len(void);
size_t shim_offsetof_mbuf_pool(void);
size_t shim_offsetof_mbuf_next(void);
size_t shim_sizeof_eth_conf(void);
size_t shim_offsetof_eth_conf_rxmode(void);
size_t shim_offsetof_eth_conf_rx_adv_conf(void);
size_t shim_sizeof_eth_dev_info(void);
size_t shim_offsetof_eth_dev_info_driver_name(void);
size_t shim_offsetof_eth_dev_info_rx_offload_capa(void);
size_t shim_offsetof_eth_dev_info_flow_type_rss_offloads(void);
size_t shim_sizeof_eth_stats(void);
size_t shim_offsetof_eth_stats_opackets(void);
size_t shim_sizeof_eth_link(void);
size_t shim_sizeof_ether_addr(void);

#endif
