#!/usr/bin/env bash
# HTTP/1.1 and Redis on one veth pair, in one run, servers pinned to CPU 0
# and the load generators to CPU 1:
# - wrk against warpwire's HTTP listener (kernel TCP through the socket
#   backend, AF_XDP with the default policy, AF_XDP busy-polling) beside
#   nginx (Debian's nginx-light, the config below) on kernel TCP: GET
#   /ping (a 5-byte body), keep-alive, 1, 64 and 512 connections;
# - redis-benchmark against warpwire's RESP listener on the same three
#   beside redis-server (Debian's 7.0, no persistence, one I/O thread) on
#   kernel TCP: SET and GET, 50 clients, pipeline 1 and 16.
#
# Needs root (namespaces, AF_XDP). Installs wrk, nginx-light, redis-server
# and redis-tools with apt when missing, without letting the packages start
# a system nginx or redis. Creates two namespaces (ww-h*-PID) and a veth
# pair, and removes them, the servers and the temporary files on exit;
# traffic never leaves them.
#
#   scripts/bench-protocols.sh       # DURATION=5s, REQUESTS=200000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh
DURATION=${DURATION:-5s}
CONNS=${CONNS:-1 64 512}
REQUESTS=${REQUESTS:-200000}
[ "$(id -u)" -eq 0 ] || { echo "bench-protocols.sh needs root (namespaces, AF_XDP)"; exit 1; }

ww_apt_install wrk nginx-light redis-server redis-tools

cargo build --release --features xdp --bin warpwire >&2
BIN=$PWD/target/release/warpwire
ID=$$
A=ww-ha-$ID B=ww-hb-$ID VA=wha$ID VB=whb$ID
TMP=$(mktemp -d /tmp/ww-bench-http.XXXXXX)
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

ww_veth_pair "$A" "$B" "$VA" "$VB"

# nginx tuned for this: one worker on CPU 0 (as warpwire), no logging,
# unlimited keep-alive requests, reuseport, a fixed response from memory.
cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
worker_cpu_affinity 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
daemon off;
events { worker_connections 8192; use epoll; multi_accept on; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 65;
    tcp_nodelay on;
    server_tokens off;
    client_body_temp_path $TMP;
    proxy_temp_path $TMP; fastcgi_temp_path $TMP; uwsgi_temp_path $TMP; scgi_temp_path $TMP;
    server {
        listen 10.77.0.1:8080 reuseport backlog=4096;
        location = /ping { default_type text/plain; return 200 "pong\n"; }
    }
}
EOF

wait_port() { # port (default 8080)
    for _ in $(seq 100); do
        ip netns exec "$B" bash -c "exec 3<>/dev/tcp/10.77.0.1/${1:-8080}" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server did not come up" >&2; cat "$TMP"/*.log >&2 || true; exit 1
}
start_warpwire() { # serve options
    ip netns exec "$A" taskset -c 0 "$BIN" serve --listen 0.0.0.0:7077 --listener http=0.0.0.0:8080 \
        --listener resp=0.0.0.0:6379 --workers 1 "$@" >"$TMP/ww.log" 2>&1 &
    SERVER_PID=$!
    wait_port 8080
    wait_port 6379
}
start_redis() {
    # Protected mode refuses non-loopback clients; this one is in a
    # namespace of its own, reachable only across the test's veth.
    ip netns exec "$A" taskset -c 0 redis-server --bind 10.77.0.1 --port 6379 --save '' \
        --appendonly no --io-threads 1 --protected-mode no --dir "$TMP" --logfile "$TMP/redis.log" &
    SERVER_PID=$!
    wait_port 6379
}
start_nginx() {
    ip netns exec "$A" taskset -c 0 nginx -c "$TMP/nginx.conf" >"$TMP/nginx.log" 2>&1 &
    SERVER_PID=$!
    wait_port
}
stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""; }

ROWS=()
run_wrk() { # label
    local label=$1 c out rps p50 p99
    for c in $CONNS; do
        out=$(ip netns exec "$B" taskset -c 1 timeout 120 wrk -t1 -c"$c" -d"$DURATION" --latency \
            http://10.77.0.1:8080/ping)
        rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
        ROWS+=("$label|$c|$rps|$p50|$p99|${errs:-none}")
    done
}

# Our own load generator with its own AF_XDP socket on the client's veth
# end (a userspace stack at 10.77.0.3): the kernel's client-side TCP is out
# of the way. One thread (one queue), depth 1 and 16.
BROWS=()
run_bypass_bench() { # label protocol port [bench options]
    local label=$1 proto=$2 port=$3 d json
    shift 3
    for d in 1 16; do
        json=$(ip netns exec "$B" taskset -c 1 timeout 120 "$BIN" bench "10.77.0.1:$port" \
            --transport xdp --iface "$VB" --ip 10.77.0.3/24 --protocol "$proto" \
            --connections 16 --depth "$d" --duration "$DURATION" --warmup 1s --json "$@") || {
            echo "bench --protocol $proto against $label failed" >&2; exit 1; }
        BROWS+=("$label|$proto|16 x $d|$(python3 -c 'import json,sys
r=json.loads(sys.stdin.read())
print("%.0f|%.1f us|%.1f us|%d" % (r["throughput_msgs_per_s"], r["p50_us"], r["p99_us"], r["errors"]))' <<<"$json")")
    done
}

RROWS=()
run_redis_bench() { # label
    local label=$1 p csv
    for p in 1 16; do
        csv=$(ip netns exec "$B" taskset -c 1 timeout 300 redis-benchmark -h 10.77.0.1 -p 6379 \
            -t set,get -c 50 -P "$p" -n "$REQUESTS" --csv) || {
            echo "redis-benchmark against $label failed" >&2; exit 1; }
        # CSV: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
        # "p95_latency_ms","p99_latency_ms","max_latency_ms"
        while IFS=, read -r t rps avg min p50 p95 p99 max; do
            [ "$t" = '"test"' ] && continue
            RROWS+=("$label|${t//\"/}|$p|${rps//\"/}|${p50//\"/} ms|${p99//\"/} ms")
        done <<<"$csv"
    done
}

echo "== nginx (kernel TCP)" >&2
start_nginx; run_wrk "nginx-light 1.22, kernel TCP"
run_bypass_bench "nginx-light 1.22, kernel TCP" http 8080 --size 0; stop_server
echo "== redis-server (kernel TCP)" >&2
start_redis; run_redis_bench "redis-server 7.0, kernel TCP"
run_bypass_bench "redis-server 7.0, kernel TCP" resp 6379 --command get --size 3; stop_server
echo "== warpwire, socket backend" >&2
start_warpwire --transport socket
run_wrk "warpwire, socket (epoll)"; run_redis_bench "warpwire, socket (epoll)"
run_bypass_bench "warpwire, socket (epoll)" http 8080 --size 0
run_bypass_bench "warpwire, socket (epoll)" resp 6379 --command get --size 3; stop_server
echo "== warpwire, AF_XDP" >&2
start_warpwire --transport xdp --iface "$VA" --ip 10.77.0.1/24
run_wrk "warpwire, xdp"; run_redis_bench "warpwire, xdp"
run_bypass_bench "warpwire, xdp" http 8080 --size 0
run_bypass_bench "warpwire, xdp" resp 6379 --command get --size 3; stop_server
echo "== warpwire, AF_XDP busy-polling" >&2
start_warpwire --transport xdp --iface "$VA" --ip 10.77.0.1/24 --latency-policy lowest
run_wrk "warpwire, xdp, busy-poll"; run_redis_bench "warpwire, xdp, busy-poll"; stop_server

echo "# bench-protocols.sh, $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cores, DURATION=$DURATION REQUESTS=$REQUESTS"
echo "# servers: 1 worker (or process) on CPU 0; load generators on CPU 1, across a veth pair"
echo
echo "HTTP: wrk -t1, GET /ping (5-byte body), keep-alive"
echo
echo "| server | connections | requests/s | p50 | p99 | errors |"
echo "|---|---:|---:|---:|---:|---|"
for r in "${ROWS[@]}"; do echo "| ${r//|/ | } |"; done
echo
echo "Redis: redis-benchmark -c 50 -n $REQUESTS, 3-byte values"
echo
echo "| server | command | pipeline | requests/s | p50 | p99 |"
echo "|---|---|---:|---:|---:|---:|"
for r in "${RROWS[@]}"; do echo "| ${r//|/ | } |"; done
echo
echo "warpwire bench over its own AF_XDP socket (--transport xdp, 1 thread, 16 connections)"
echo
echo "| server | protocol | connections x depth | requests/s | p50 | p99 | errors |"
echo "|---|---|---|---:|---:|---:|---:|"
for r in "${BROWS[@]}"; do echo "| ${r//|/ | } |"; done
