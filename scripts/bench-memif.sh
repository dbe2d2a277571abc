#!/usr/bin/env bash
# DPDK over net_memif, two processes, one run: the raw L2 ping-pong RTT (the
# floor of this path) beside warpwire server and bench both on
# --transport dpdk, 64 B ECHO at depth 1 and 32. Needs root (DPDK's runtime
# directory). Pure shared memory: no network, no kernel on the data path.
# Cleans its memif socket and /var/run/dpdk/ww-bm-* on exit.
#
#   sudo scripts/bench-memif.sh         # DURATION=5s
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
[ "$(id -u)" -eq 0 ] || { echo "bench-memif.sh needs root"; exit 1; }
cargo build --release --features dpdk --bin warpwire >&2
cargo build --release -p warpwire-dpdk --example l2_pingpong >&2
BIN=$PWD/target/release/warpwire
PP=$PWD/target/release/examples/l2_pingpong
ID=$$
DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$DIR" /var/run/dpdk/ww-bm-*-"$ID"
}
trap cleanup EXIT

eal() { # role lcore run
    echo "--no-huge --no-pci -m 256 --no-shconf --file-prefix ww-bm-$1$3-$ID -l $2 --log-level=lib.eal:error --log-level=pmd.net.memif:error --vdev=net_memif0,role=$1,socket=$DIR/memif$3.sock,socket-abstract=no"
}

echo "== raw L2 ping-pong" >&2
"$PP" pong "$(eal server 1 0)" >&2 & PIDS+=($!)
RAW=$("$PP" ping "$(eal client 0 0)" 20000)
wait "${PIDS[-1]}" 2>/dev/null || true

ROWS=()
RUN=1
for policy in balanced lowest; do
    RUN=$((RUN + 1))
    LOG=$DIR/server$RUN.log
    "$BIN" serve --transport dpdk --dpdk-args "$(eal server 1 $RUN)" --ip 10.77.0.1/24 \
        --listen 0.0.0.0:7077 --latency-policy "$policy" >"$LOG" 2>&1 & PIDS+=($!)
    for _ in $(seq 100); do grep -q listening "$LOG" && break; sleep 0.1; done
    for d in 1 32; do
        busy=()
        [ "$policy" = lowest ] && busy=(--busy-poll)
        json=$(timeout 120 "$BIN" bench 10.77.0.1:7077 --transport dpdk --dpdk-args "$(eal client 0 $RUN)" \
            --ip 10.77.0.2/24 --depth "$d" --duration "$DURATION" --warmup 1s --json "${busy[@]}")
        ROWS+=("dpdk <- dpdk, $policy, depth $d|$(python3 -c 'import json,sys
r=json.loads(sys.stdin.read())
print("%.0f|%.1f|%.1f|%d" % (r["throughput_msgs_per_s"], r["p50_us"], r["p99_us"], r["errors"]))' <<<"$json")")
    done
    kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
done

echo "# bench-memif.sh, $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cores, DURATION=$DURATION"
echo "# server on lcore 1, client on lcore 0; 1 worker, 1 connection, 64 B ECHO"
echo
echo "raw L2 ping-pong over the same memif (64 B frames): $RAW"
echo
echo "| configuration | msg/s | p50 us | p99 us | errors |"
echo "|---|---:|---:|---:|---:|"
for r in "${ROWS[@]}"; do echo "| ${r//|/ | } |"; done
