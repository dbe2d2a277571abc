/*
 * See shim.h. Every function is a one-line forward to a DPDK static inline
 * or macro; keep it that way so the C side stays obviously correct.
 */
#include <rte_config.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_lcore.h>
#include <rte_errno.h>

#include "shim.h"

uint16_t shim_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) { return rte_eth_rx_burst(port, queue, pkts, n); }
uint16_t shim_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) { return rte_eth_tx_burst(port, queue, pkts, n); }
struct rte_mbuf *shim_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int shim_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n) { return rte_pktmbuf_alloc_bulk(mp, mbufs, n); }
void shim_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
void *shim_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }
char *shim_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
uint16_t shim_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
uint16_t shim_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
uint32_t shim_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
uint16_t shim_pktmbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
uint64_t shim_pktmbuf_ol_flags(const struct rte_mbuf *m) { return m->ol_flags; }
int shim_errno(void) { return rte_errno; }
unsigned shim_lcore_id(void) { return rte_lcore_id(); }

uint64_t shim_rx_offload_cksum(void) { return RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM; }
uint64_t shim_rss_hf_ip_tcp_udp(void) { return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP; }
uint64_t shim_rx_cksum_bad_ip(void) { return RTE_MBUF_F_RX_IP_CKSUM_BAD; }
uint64_t shim_rx_cksum_mask_ip(void) { return RTE_MBUF_F_RX_IP_CKSUM_MASK; }
uint64_t shim_rx_cksum_bad_l4(void) { return RTE_MBUF_F_RX_L4_CKSUM_BAD; }
uint64_t shim_rx_cksum_mask_l4(void) { return RTE_MBUF_F_RX_L4_CKSUM_MASK; }

size_t shim_sizeof_mbuf(void) { return sizeof(struct rte_mbuf); }
size_t shim_offsetof_mbuf_buf_addr(void) { return offsetof(struct rte_mbuf, buf_addr); }
size_t shim_offsetof_mbuf_data_off(void) { return offsetof(struct rte_mbuf, data_off); }
size_t shim_offsetof_mbuf_nb_segs(void) { return offsetof(struct rte_mbuf, nb_segs); }
size_t shim_offsetof_mbuf_ol_flags(void) { return offsetof(struct rte_mbuf, ol_flags); }
size_t shim_offsetof_mbuf_pkt_len(void) { return offsetof(struct rte_mbuf, pkt_len); }
size_t shim_offsetof_mbuf_data_len(void) { return offsetof(struct rte_mbuf, data_len); }
size_t shim_offsetof_mbuf_pool(void) { return offsetof(struct rte_mbuf, pool); }
size_t shim_offsetof_mbuf_next(void) { return offsetof(struct rte_mbuf, next); }
size_t shim_sizeof_eth_conf(void) { return sizeof(struct rte_eth_conf); }
size_t shim_offsetof_eth_conf_rxmode(void) { return offsetof(struct rte_eth_conf, rxmode); }
size_t shim_offsetof_eth_conf_rx_adv_conf(void) { return offsetof(struct rte_eth_conf, rx_adv_conf); }
size_t shim_sizeof_eth_dev_info(void) { return sizeof(struct rte_eth_dev_info); }
size_t shim_offsetof_eth_dev_info_driver_name(void) { return offsetof(struct rte_eth_dev_info, driver_name); }
size_t shim_offsetof_eth_dev_info_rx_offload_capa(void) { return offsetof(struct rte_eth_dev_info, rx_offload_capa); }
size_t shim_offsetof_eth_dev_info_flow_type_rss_offloads(void) { return offsetof(struct rte_eth_dev_info, flow_type_rss_offloads); }
size_t shim_sizeof_eth_stats(void) { return sizeof(struct rte_eth_stats); }
size_t shim_offsetof_eth_stats_opackets(void) { return offsetof(struct rte_eth_stats, opackets); }
size_t shim_sizeof_eth_link(void) { return sizeof(struct rte_eth_link); }
size_t shim_sizeof_ether_addr(void) { return sizeof(struct rte_ether_addr); }
