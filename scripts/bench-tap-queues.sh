#!/usr/bin/env bash
# DPDK server on a multi-queue net_tap, one queue against two, in one run:
# `warpwire serve --transport dpdk --queues Q` in a namespace created here,
# loaded by kernel TCP clients (`warpwire bench`, socket backend) in the same
# namespace, 64 B ECHO over many connections. With --queues 2 the kernel's
# tun driver spreads the connections over the two queues (one worker and
# smoltcp stack each). Needs root. Removes its namespace and
# /var/run/dpdk/ww-bq-* on exit.
#
#   sudo scripts/bench-tap-queues.sh     # DURATION=5s CONNECTIONS=16 DEPTH=8
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-16}
DEPTH=${DEPTH:-8}
[ "$(id -u)" -eq 0 ] || { echo "bench-tap-queues.sh needs root"; exit 1; }
cargo build --release --features dpdk --bin warpwire >&2
BIN=$PWD/target/release/warpwire
ID=$$
NS=ww-bq-$ID
DIR=$(mktemp -d)
SERVER=""
stop_server() {
    if [ -n "$SERVER" ]; then
        kill "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
        SERVER=""
    fi
}
cleanup() {
    stop_server
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$DIR" /var/run/dpdk/ww-bq-*-"$ID"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up

ROWS=()
RUN=0
# queues:lcores. "2:0" puts both workers on CPU 0, leaving CPU 1 to the
# kernel (clients and the tun driver); "2:0-1" gives each worker a CPU.
for config in 1:0 2:0-1 2:0; do
    q=${config%%:*}
    lcores=${config#*:}
    for threads in 1 2; do
        RUN=$((RUN + 1))
        TAP=wwbq$RUN$((ID % 10000))
        LOG=$DIR/server$RUN.log
        ip netns exec "$NS" "$BIN" serve --transport dpdk --queues "$q" --ip 10.77.7.1/24 \
            --listen 0.0.0.0:7077 --metrics 127.0.0.1:9179 \
            --dpdk-args "--no-huge --no-pci -m 256 --no-shconf --file-prefix ww-bq-$RUN-$ID -l $lcores --log-level=lib.eal:error --log-level=pmd.net.tap:error --vdev=net_tap0,iface=$TAP" \
            >"$LOG" 2>&1 &
        SERVER=$!
        for _ in $(seq 100); do grep -q listening "$LOG" && break; sleep 0.1; done
        ip -n "$NS" addr add 10.77.7.2/24 dev "$TAP"
        ip -n "$NS" link set "$TAP" up
        json=$(ip netns exec "$NS" timeout 120 "$BIN" bench 10.77.7.1:7077 --transport socket \
            --connections "$CONNECTIONS" --depth "$DEPTH" --threads "$threads" \
            --duration "$DURATION" --warmup 1s --json)
        per_worker=$(ip netns exec "$NS" curl -s --max-time 5 http://127.0.0.1:9179/metrics |
            awk -F'[{}" ]' '/^warpwire_messages_in_total/ {printf "%s%s", sep, $NF; sep="/"}')
        ROWS+=("$q|$lcores|$threads|$(python3 -c 'import json,sys
r=json.loads(sys.stdin.read())
print("%.0f|%.0f|%.0f|%d|%d" % (r["throughput_msgs_per_s"], r["p50_us"], r["p99_us"], r["errors"], r["lost"]))' <<<"$json")|$per_worker")
        stop_server
    done
done

echo "# bench-tap-queues.sh, $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cores, DURATION=$DURATION"
echo "# dpdk server on net_tap <- kernel TCP (warpwire bench, socket backend), $CONNECTIONS connections, depth $DEPTH, 64 B ECHO"
echo
echo "| queues | EAL -l | bench threads | msg/s | p50 us | p99 us | errors | lost | messages per worker |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---|"
for r in "${ROWS[@]}"; do echo "| ${r//|/ | } |"; done
