#!/usr/bin/env bash
# HTTP/1.1 on one veth pair, in one run: wrk against warpwire's HTTP
# listener (kernel TCP through the socket backend, and AF_XDP with the
# default policy and busy-polling) beside nginx (Debian's nginx-light,
# the config below) on kernel TCP. GET /ping, a 5-byte body; keep-alive;
# 1, 64 and 512 connections. Servers pinned to CPU 0, wrk to CPU 1.
#
# Needs root (namespaces, AF_XDP). Installs wrk and nginx-light with apt
# when missing, without letting the package start a system nginx.
# Creates two namespaces (ww-h*-PID) and a veth pair, and removes them,
# the servers and the temporary files on exit; traffic never leaves them.
#
#   scripts/bench-http.sh            # DURATION=5s by default
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
CONNS=${CONNS:-1 64 512}
[ "$(id -u)" -eq 0 ] || { echo "bench-http.sh needs root (namespaces, AF_XDP)"; exit 1; }

missing=()
for p in wrk nginx-light; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    # policy-rc.d 101: the package's maintainer scripts may not start services.
    had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
    [ "$had_policy" = 1 ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2
    [ "$had_policy" = 1 ] || rm -f /usr/sbin/policy-rc.d
fi

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

ip netns add "$A"; ip netns add "$B"
ip link add "$VA" netns "$A" type veth peer name "$VB" netns "$B"
ip -n "$A" addr add 10.77.0.1/24 dev "$VA"
ip -n "$B" addr add 10.77.0.2/24 dev "$VB"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set "$VA" up; ip -n "$B" link set "$VB" up

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

wait_port() {
    for _ in $(seq 100); do
        ip netns exec "$B" bash -c "exec 3<>/dev/tcp/10.77.0.1/8080" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server did not come up" >&2; cat "$TMP"/*.log >&2 || true; exit 1
}
start_warpwire() { # serve options
    ip netns exec "$A" taskset -c 0 "$BIN" serve --listen 0.0.0.0:7077 --listener http=0.0.0.0:8080 \
        --workers 1 "$@" >"$TMP/ww.log" 2>&1 &
    SERVER_PID=$!
    wait_port
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

echo "== nginx (kernel TCP)" >&2
start_nginx; run_wrk "nginx-light 1.22, kernel TCP"; stop_server
echo "== warpwire http, socket backend" >&2
start_warpwire --transport socket; run_wrk "warpwire, socket (epoll)"; stop_server
echo "== warpwire http, AF_XDP" >&2
start_warpwire --transport xdp --iface "$VA" --ip 10.77.0.1/24
run_wrk "warpwire, xdp"; stop_server
echo "== warpwire http, AF_XDP busy-polling" >&2
start_warpwire --transport xdp --iface "$VA" --ip 10.77.0.1/24 --latency-policy lowest
run_wrk "warpwire, xdp, busy-poll"; stop_server

echo "# bench-http.sh, $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cores, DURATION=$DURATION"
echo "# servers: 1 worker on CPU 0; wrk -t1 on CPU 1 over a veth pair; GET /ping (5-byte body), keep-alive"
echo
echo "| server | connections | requests/s | p50 | p99 | errors |"
echo "|---|---:|---:|---:|---:|---|"
for r in "${ROWS[@]}"; do echo "| ${r//|/ | } |"; done
