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
# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh
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
    ww_memif_eal "$1" "$2" "ww-bm-$1$3-$ID" "$DIR/memif$3.sock"
}

echo "== raw L2 ping-pong" >&2
"$PP" pong "$(eal server 1 0)" >&2 & PIDS+=($!)
sleep 0.5 # the memif server role listens first; a client started together can time out
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

# Round trip against the floor, as issue 13 asks: 5 interleaved pairs of
# (raw L2 ping-pong, warpwire busy-polling depth 1), each on a fresh memif
# link, nothing else running on the two lcores; the medians of the pairs.
echo "== interleaved pairs: raw ping-pong, warpwire busy depth 1" >&2
PAIRS=()
for i in 1 2 3 4 5; do
    RUN=$((RUN + 1))
    "$PP" pong "$(eal server 1 $RUN)" >&2 & PIDS+=($!)
    sleep 0.5
    raw=$("$PP" ping "$(eal client 0 $RUN)" 20000)
    wait "${PIDS[-1]}" 2>/dev/null || true
    RUN=$((RUN + 1))
    LOG=$DIR/server$RUN.log
    "$BIN" serve --transport dpdk --dpdk-args "$(eal server 1 $RUN)" --ip 10.77.0.1/24 \
        --listen 0.0.0.0:7077 --latency-policy lowest >"$LOG" 2>&1 & PIDS+=($!)
    for _ in $(seq 100); do grep -q listening "$LOG" && break; sleep 0.1; done
    json=$(timeout 120 "$BIN" bench 10.77.0.1:7077 --transport dpdk --dpdk-args "$(eal client 0 $RUN)" \
        --ip 10.77.0.2/24 --depth 1 --duration "$DURATION" --warmup 1s --json --busy-poll)
    kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
    PAIRS+=("$(python3 -c 'import json,sys
raw=json.loads(sys.argv[1]); ww=json.loads(sys.argv[2])
print("%.2f %.2f %.2f %.2f %.0f" % (raw["p50_us"], raw["p99_us"], ww["p50_us"], ww["p99_us"], ww["throughput_msgs_per_s"]))' "$raw" "$json")")
done

echo "# bench-memif.sh, $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cores, DURATION=$DURATION"
echo "# server on lcore 1, client on lcore 0; 1 worker, 1 connection, 64 B ECHO"
echo
echo "raw L2 ping-pong over the same memif (64 B frames): $RAW"
echo
echo "| configuration | msg/s | p50 us | p99 us | errors |"
echo "|---|---:|---:|---:|---:|"
for r in "${ROWS[@]}"; do echo "| ${r//|/ | } |"; done
echo
echo "Round trip against the raw L2 ping-pong, 5 interleaved pairs (one connection,"
echo "64 B ECHO, depth 1, busy-polling server and client; raw: 64 B frames):"
echo
echo "| pair | raw p50 us | raw p99 us | warpwire p50 us | warpwire p99 us | msg/s | p50 ratio | p99 ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
python3 - "${PAIRS[@]}" <<'EOF'
import statistics, sys
rows = [list(map(float, a.split())) for a in sys.argv[1:]]
for i, (r50, r99, w50, w99, rate) in enumerate(rows, 1):
    print(f"| {i} | {r50:.2f} | {r99:.2f} | {w50:.2f} | {w99:.2f} | {rate:.0f} | {w50 / r50:.2f}x | {w99 / r99:.2f}x |")
med = lambda k: statistics.median(r[k] for r in rows)
print(f"| median | {med(0):.2f} | {med(1):.2f} | {med(2):.2f} | {med(3):.2f} | {med(4):.0f} | "
      f"{statistics.median(r[2] / r[0] for r in rows):.2f}x | {statistics.median(r[3] / r[1] for r in rows):.2f}x |")
EOF
