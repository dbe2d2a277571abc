#!/usr/bin/env bash
# AF_XDP against kernel TCP on one veth pair, in one run, with the same
# client binary: 64 B echo at depth 1 and 32, and p99 against the number of
# connections. Needs root. Creates two namespaces (ww-b*-PID) and a veth
# pair, removes them on exit; traffic never leaves them.
#
#   scripts/bench-veth.sh            # DURATION=5s by default
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh
DURATION=${DURATION:-5s}
[ "$(id -u)" -eq 0 ] || { echo "bench-veth.sh needs root (namespaces, AF_XDP)"; exit 1; }

cargo build --release --features xdp --bin warpwire >&2
BIN=$PWD/target/release/warpwire
ID=$$
A=ww-ba-$ID B=ww-bb-$ID VA=wba$ID VB=wbb$ID
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    [ -n "${KEEP_LOG:-}" ] || rm -f "/tmp/ww-bench-srv-$ID.log"
}
trap cleanup EXIT

ww_veth_pair "$A" "$B" "$VA" "$VB"

start_server() { # args: serve options
    : >/tmp/ww-bench-srv-$ID.log
    ip netns exec "$A" "$BIN" serve --listen 0.0.0.0:7077 --workers 1 "$@" >/tmp/ww-bench-srv-$ID.log 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do grep -q "listening" /tmp/ww-bench-srv-$ID.log && return 0; sleep 0.1; done
    cat /tmp/ww-bench-srv-$ID.log; exit 1
}
stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""; }

ROWS=()
bench() { # label, client options..., then bench options after --
    local label=$1; shift
    local json transport=()
    # A kernel client is the socket backend unless the options say otherwise
    # (auto would pick uring where the kernel has it).
    [[ " $* " == *" --transport "* ]] || transport=(--transport socket)
    json=$(ip netns exec "$B" timeout 120 "$BIN" bench 10.77.0.1:7077 --duration "$DURATION" --warmup 1s --json "${transport[@]}" "$@")
    ROWS+=("$label|$(python3 -c 'import json,sys
r=json.loads(sys.stdin.read())
print("%.0f|%.1f|%.1f|%d" % (r["throughput_msgs_per_s"], r["p50_us"], r["p99_us"], r["errors"]))' <<<"$json")")
}

XDP_CLIENT=(--transport xdp --iface "$VB" --ip 10.77.0.3/24)

echo "== kernel TCP server (socket backend) in $A" >&2
start_server --transport socket
for d in 1 32; do bench "kernel server <- kernel client, depth $d" --depth "$d"; done
stop_server

echo "== AF_XDP server in $A" >&2
start_server --transport xdp --iface "$VA" --ip 10.77.0.1/24
for d in 1 32; do bench "xdp server <- kernel client, depth $d" --depth "$d"; done
for c in 10 100 1000; do bench "xdp server <- kernel client, $c connections, depth 1" --connections "$c"; done
for d in 1 32; do bench "xdp server <- xdp client, depth $d" --depth "$d" "${XDP_CLIENT[@]}"; done
stop_server

echo "== busy-polling AF_XDP server (--latency-policy lowest)" >&2
start_server --transport xdp --iface "$VA" --ip 10.77.0.1/24 --latency-policy lowest
bench "busy xdp server <- busy xdp client, depth 1" --depth 1 --busy-poll "${XDP_CLIENT[@]}"
stop_server

echo "== kernel TCP server again: connection counts, then busy-polling" >&2
start_server --transport socket
for c in 10 100 1000; do bench "kernel server <- kernel client, $c connections, depth 1" --connections "$c"; done
stop_server
start_server --transport socket --latency-policy lowest
bench "busy kernel server <- busy kernel client, depth 1" --depth 1 --busy-poll
stop_server

echo "# bench-veth.sh, $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cores, DURATION=$DURATION"
echo "# server: 1 worker, default latency policy; client: warpwire bench, 1 thread, 64 B ECHO"
echo
echo "| configuration | msg/s | p50 us | p99 us | errors |"
echo "|---|---:|---:|---:|---:|"
for r in "${ROWS[@]}"; do echo "| ${r//|/ | } |"; done
