/*
 * The DPDK API surface warpwire-dpdk-sys generates bindings for.
 *
 * Included by bindgen (crates/dpdk-sys/build.rs) with pkg-config's cflags
 * (which force-include rte_config.h). Only the headers the safe wrapper
 * needs; build.rs narrows further with regex allowlists.
 */
#ifndef WARPWIRE_DPDK_WRAPPER_H
#define WARPWIRE_DPDK_WRAPPER_H

#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ether.h>
#include <rte_ring.h>
#include <rte_eth_ring.h>
#include <rte_bus_vdev.h>

#include "shim.h"

#endif
