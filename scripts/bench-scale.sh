#!/usr/bin/env bash
# The userspace TCP stack at 10 to 50,000 connections, one run, side by
# side with the kernel (issue 12's table). 64 B ECHO at depth 1, one server
# worker, one client thread each time.
#
#   1. memif, dpdk bench <-> dpdk server: 10, 1,000, 10,000, 50,000 connections.
#   2. veth, kernel clients (the socket backend) -> socket server, xdp server,
#      and busy-polling xdp server: 10, 100, 1,000, 10,000 connections.
#   3. connection setup rate: bypass client over memif into the dpdk server,
#      beside kernel client into the socket server on loopback (the ramp of
#      10,000 paced connects, as `bench` reports it).
#   4. idle memory: server RSS holding 50,000 connections that are paced at
#      50 requests/s in all, per connection; for the kernel, its socket memory
#      (Slab and TCP pages, both ends' sockets, halved) beside the server RSS.
#   5. with BASELINE=<git rev>, the 10-connection rows once more with that
#      revision's build, interleaved (regression check).
#
# Needs root (namespaces, AF_XDP, DPDK). Creates ww-sc* namespaces, a veth
# pair, memif sockets in a temporary directory and /var/run/dpdk/ww-sc-*;
# removes them all on exit. Traffic never leaves them or loopback.
#
#   sudo scripts/bench-scale.sh                  # DURATION=4s
#   sudo BASELINE=8221ea9 scripts/bench-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh
DURATION=${DURATION:-4s}
[ "$(id -u)" -eq 0 ] || { echo "bench-scale.sh needs root (namespaces, AF_XDP, DPDK)"; exit 1; }

cargo build --release --features xdp,dpdk --bin warpwire >&2
ID=$$
DIR=$(mktemp -d)
cp target/release/warpwire "$DIR/warpwire"
BIN=$DIR/warpwire
A=ww-sca-$ID B=ww-scb-$ID L=ww-scl-$ID VA=wsa$ID VB=wsb$ID
PIDS=()
BASE_BIN=""
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    for ns in "$A" "$B" "$L"; do ip netns del "$ns" 2>/dev/null || true; done
    [ -n "$BASE_BIN" ] && git worktree remove --force "$DIR/base" 2>/dev/null || true
    rm -rf "$DIR" /var/run/dpdk/ww-sc-*-"$ID"
}
trap cleanup EXIT
# Descriptors: kernel sockets need one each (the userspace stack none).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# The kernel's idle-memory row holds as many connections as one process's
# descriptor limit allows (both ends in their own process, one each).
KIDLE=$(( $(ulimit -n) - 1000 < 50000 ? $(ulimit -n) - 1000 : 50000 ))

if [ -n "${BASELINE:-}" ]; then
    # Its own target directory, kept under target/ for the next run: cargo
    # names a workspace's artifacts by their path relative to the workspace,
    # so two checkouts sharing one target directory overwrite each other's.
    git worktree add -q --detach "$DIR/base" "$BASELINE"
    (cd "$DIR/base" && CARGO_TARGET_DIR=$OLDPWD/target/baseline cargo build -q --release --features xdp,dpdk --bin warpwire) >&2
    cp target/baseline/release/warpwire "$DIR/warpwire-base"
    BASE_BIN=$DIR/warpwire-base
fi

ROWS=()
row() { ROWS+=("$1|$2"); }
# Formats bench --json: msg/s | p50 | p99 | errors | connections/s of the ramp.
fmt() {
    python3 -c 'import json,sys
r=json.loads(sys.stdin.read())
ramp=r.get("ramp_s",0)
print("%.0f|%.0f|%.0f|%d|%s" % (r["throughput_msgs_per_s"], r["p50_us"], r["p99_us"], r["errors"],
      "%.0f" % (r["connections"]/ramp) if ramp else "-"))'
}
wait_log() { for _ in $(seq 150); do grep -q listening "$1" && return 0; sleep 0.1; done; cat "$1" >&2; exit 1; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# --- 1. memif --------------------------------------------------------------
eal() { # role lcore run
    echo "--no-huge --no-pci -m 512 --no-shconf --file-prefix ww-sc-$1$3-$ID -l $2 --log-level=lib.eal:error --log-level=pmd.net.memif:error --vdev=net_memif0,role=$1,socket=$DIR/memif$3.sock,socket-abstract=no"
}
RUN=0
memif_serve() { # bin -> sets SP
    RUN=$((RUN + 1))
    "$1" serve --transport dpdk --dpdk-args "$(eal server 1 $RUN)" --ip 10.77.0.1/24 \
        --listen 0.0.0.0:7077 --max-connections 100000 >"$DIR/ms$RUN.log" 2>&1 &
    SP=$!
    PIDS+=("$SP")
    wait_log "$DIR/ms$RUN.log"
}
memif_bench() { # bin connections [bench options]
    local bin=$1 n=$2
    shift 2
    timeout 300 "$bin" bench 10.77.0.1:7077 --transport dpdk --dpdk-args "$(eal client 0 $RUN)" \
        --ip 10.77.0.2/24 --connections "$n" --depth 1 --duration "$DURATION" --warmup 2s --json "$@"
}
echo "== memif: dpdk bench <-> dpdk server" >&2
for n in 10 1000 10000 50000; do
    memif_serve "$BIN"
    row "memif, dpdk <- dpdk, $n connections" "$(memif_bench "$BIN" $n | fmt)"
    stop "$SP"
done
if [ -n "$BASE_BIN" ]; then
    for i in 1 2; do
        for b in "$BASE_BIN" "$BIN"; do
            memif_serve "$b"
            label=current
            [ "$b" = "$BASE_BIN" ] && label="baseline $BASELINE"
            row "memif, 10 connections, $label (pair $i)" "$(memif_bench "$b" 10 | fmt)"
            stop "$SP"
        done
    done
fi

echo "== idle memory: 50,000 connections held" >&2
memif_serve "$BIN"
base=$(rss_kb "$SP")
memif_bench "$BIN" 50000 --rate 50 >"$DIR/idle.json" &
CP=$!
sleep 6
held=$(rss_kb "$SP")
wait "$CP" || true
stop "$SP"
IDLE_STACK=$(python3 -c "print('%.1f' % (($held - $base) / 50000))")
IDLE_STACK_MB=$(((held - base) / 1024))

# --- 2. veth ---------------------------------------------------------------
ww_veth_pair "$A" "$B" "$VA" "$VB"
# Kernel clients: the whole port range, for 10,000 connections from one address.
ip netns exec "$B" sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
veth_serve() { # serve options
    RUN=$((RUN + 1))
    ip netns exec "$A" "$BIN" serve --listen 0.0.0.0:7077 --workers 1 --max-connections 100000 "$@" \
        >"$DIR/vs$RUN.log" 2>&1 &
    SP=$!
    PIDS+=("$SP")
    wait_log "$DIR/vs$RUN.log"
}
veth_bench() { # connections [bench options]
    local n=$1
    shift
    ip netns exec "$B" timeout 300 "$BIN" bench 10.77.0.1:7077 --transport socket --connections "$n" \
        --depth 1 --duration "$DURATION" --warmup 2s --json "$@"
}
echo "== veth: kernel clients" >&2
declare -A VETH
for server in socket xdp busy-xdp; do
    case $server in
        socket) veth_serve --transport socket ;;
        xdp) veth_serve --transport xdp --iface "$VA" --ip 10.77.0.1/24 ;;
        busy-xdp) veth_serve --transport xdp --iface "$VA" --ip 10.77.0.1/24 --latency-policy lowest ;;
    esac
    for n in 10 100 1000 10000; do
        VETH[$server,$n]=$(veth_bench $n | fmt)
        row "veth, $server server <- kernel client, $n connections" "${VETH[$server,$n]}"
    done
    stop "$SP"
done

# --- 3. setup rate ---------------------------------------------------------
echo "== connection setup rate" >&2
memif_serve "$BIN"
SETUP_STACK=$(memif_bench "$BIN" 10000 --count 10000 | fmt)
stop "$SP"
ip netns add "$L"
ip -n "$L" link set lo up
ip netns exec "$L" sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
RUN=$((RUN + 1))
ip netns exec "$L" "$BIN" serve --transport socket --listen 127.0.0.1:7077 --workers 1 \
    --max-connections 100000 >"$DIR/ls.log" 2>&1 &
SP=$!
PIDS+=("$SP")
wait_log "$DIR/ls.log"
SETUP_KERNEL=$(ip netns exec "$L" timeout 300 "$BIN" bench 127.0.0.1:7077 --transport socket \
    --connections 10000 --depth 1 --count 10000 --json | fmt)

# --- 4. kernel idle memory -------------------------------------------------
echo "== idle memory, kernel: $KIDLE connections on loopback" >&2
# A fresh server, so its RSS before the connections is its own baseline.
stop "$SP"
ip netns exec "$L" "$BIN" serve --transport socket --listen 127.0.0.1:7077 --workers 1 \
    --max-connections 100000 >"$DIR/ls2.log" 2>&1 &
SP=$!
PIDS+=("$SP")
wait_log "$DIR/ls2.log"
meminfo() { awk -v k="$1" '$1 == k":" {print $2}' /proc/meminfo; }
tcp_pages() { ip netns exec "$L" awk '/^TCP:/ {for (i = 1; i < NF; i++) if ($i == "mem") print $(i+1)}' /proc/net/sockstat; }
base=$(rss_kb "$SP")
slab0=$(meminfo Slab)
pages0=$(tcp_pages)
ip netns exec "$L" timeout 300 "$BIN" bench 127.0.0.1:7077 --transport socket --connections "$KIDLE" \
    --depth 1 --duration "$DURATION" --warmup 2s --rate 50 --json >"$DIR/kidle.json" &
CP=$!
sleep 6
held=$(rss_kb "$SP")
slab1=$(meminfo Slab)
pages1=$(tcp_pages)
wait "$CP" || true
stop "$SP"
IDLE_KERNEL_RSS=$(python3 -c "print('%.1f' % (($held - $base) / $KIDLE))")
IDLE_KERNEL_SOCK=$(python3 -c "print('%.1f' % ((($slab1 - $slab0) + ($pages1 - $pages0) * 4) / 2 / $KIDLE))")

# --- report ----------------------------------------------------------------
ratio() { python3 -c "a, b = float('$1'.split('|')[0]), float('$2'.split('|')[0]); print('%.2fx' % (a / b) if b else '-')"; }
echo "# bench-scale.sh, $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cores, DURATION=$DURATION"
echo "# 64 B ECHO, depth 1, 1 server worker, 1 client thread; ramp = connections/s while opening"
echo
echo "| configuration | msg/s | p50 us | p99 us | errors | ramp conn/s |"
echo "|---|---:|---:|---:|---:|---:|"
for r in "${ROWS[@]}"; do echo "| ${r//|/ | } |"; done
echo
echo "| veth, kernel clients | 10 | 100 | 1,000 | 10,000 |"
echo "|---|---:|---:|---:|---:|"
for s in xdp busy-xdp; do
    line="| $s server / socket server"
    for n in 10 100 1000 10000; do line+=" | $(ratio "${VETH[$s,$n]}" "${VETH[socket,$n]}")"; done
    echo "$line |"
done
m10=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$1 == "memif, dpdk <- dpdk, 10 connections" {print $2}')
echo
for n in 10000 50000; do
    mn=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' -v l="memif, dpdk <- dpdk, $n connections" '$1 == l {print $2}')
    echo "memif msgs/s at $n connections / at 10: $(ratio "$mn" "$m10")"
done
echo
echo "connection setup, 10,000 connections into one worker:"
echo "  bypass client -> dpdk server over memif: $(cut -d'|' -f5 <<<"$SETUP_STACK") conn/s"
echo "  kernel client -> socket server on loopback: $(cut -d'|' -f5 <<<"$SETUP_KERNEL") conn/s"
echo "  ratio: $(python3 -c "a=float('$(cut -d'|' -f5 <<<"$SETUP_STACK")'); b=float('$(cut -d'|' -f5 <<<"$SETUP_KERNEL")'); print('%.2fx' % (a / b))")"
echo
echo "idle memory, connections held open (paced at 50 requests/s in all):"
echo "  dpdk server (userspace stack), 50,000 connections: RSS +$IDLE_STACK_MB MiB, $IDLE_STACK KiB per connection"
echo "  socket server, $KIDLE connections (descriptor limit $(ulimit -n)): RSS $IDLE_KERNEL_RSS KiB + kernel socket memory $IDLE_KERNEL_SOCK KiB per connection"
