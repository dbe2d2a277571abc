#!/usr/bin/env bash
# Bulk DATA beside the path's floor, in one run: `warpwire client data
# --file` of a FILE_MB file into `serve --workers 1`, and iperf3 over the
# same path, interleaved ROUNDS times:
#   loopback: socket client -> socket server, beside iperf3 on loopback;
#             once with the FILE_MB file and once with a LOOP_MB file
#             (2000): at about 2 GB/s the first ends in a quarter of a
#             second, start-up included, against iperf3's 3 s of steady
#             state, so the second is the like-for-like row. LOOP_MB=0
#             skips it;
#   veth:     kernel -> kernel (socket), kernel -> xdp, xdp -> xdp, beside
#             iperf3 over the same veth pair; then the same again with the
#             pair at JUMBO_MTU (3500, about the most native XDP on veth
#             takes; AF_XDP then uses 4 KiB UMEM frames): what the MTU
#             costs a copy-mode path that moves one frame per descriptor.
#             JUMBO_MTU=0 skips it;
#   impaired: the same through warpwire-impair (crates/impair) in a middle
#             namespace, the wire of tests/xdp_veth.rs: 1 % loss, 1 %
#             reordering, 1 % duplication, 0.1 % corruption, 200 us delay;
#             kernel -> kernel (socket) and kernel -> xdp beside iperf3
#             through the same bridge (GRO/TSO/GSO off on the bridged
#             ends, so every side sends wire-sized frames). A smaller file
#             (IMPAIRED_MB), this wire being slow. The xdp server runs
#             twice: with the default 64 KiB receive buffer, and with
#             IMPAIRED_RX_BUFFER (1 MiB), about this path's bandwidth-delay
#             product, which the kernel's receiver reaches by autotuning
#             (its buffer grows to megabytes) and ours is told. IMPAIRED=0
#             skips it;
#   memif:    dpdk -> dpdk over net_memif (two processes, shared memory,
#             server on lcore 0, client on lcore 1), MTU 1500 (net_memif
#             in DPDK 22.11 refuses more), beside issue 13's 2 GB/s: no
#             raw bulk floor tool here. MEMIF=0 skips it.
#
# The rate is the one `client data` prints: from its connection to the
# last DATA_ACK, without process and transport start-up (EAL's included).
#
# Needs root (namespaces, AF_XDP). Installs iperf3 with apt when missing
# (no daemon started). Creates two namespaces (ww-k*-PID), a veth pair and
# a temporary file, and removes them and every process it started (by
# pid) on exit; traffic never leaves them.
#
#   scripts/bench-bulk.sh            # FILE_MB=500 ROUNDS=3 IMPAIRED_MB=50
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh
FILE_MB=${FILE_MB:-500}
LOOP_MB=${LOOP_MB:-2000}
ROUNDS=${ROUNDS:-3}
IMPAIRED=${IMPAIRED:-1}
IMPAIRED_MB=${IMPAIRED_MB:-50}
IMPAIRED_RX_BUFFER=${IMPAIRED_RX_BUFFER:-1048576}
MEMIF=${MEMIF:-1}
JUMBO_MTU=${JUMBO_MTU:-3500}
[ "$(id -u)" -eq 0 ] || { echo "bench-bulk.sh needs root (namespaces, AF_XDP)"; exit 1; }

ww_apt_install iperf3 ethtool

FEATURES=xdp
[ "$MEMIF" = 1 ] && FEATURES=xdp,dpdk
cargo build --release --features "$FEATURES" --bin warpwire >&2
cargo build --release -p warpwire-impair --bin warpwire-impair >&2
BIN=$PWD/target/release/warpwire
IMPAIR=$PWD/target/release/warpwire-impair
ID=$$
A=ww-ka-$ID B=ww-kb-$ID VA=wka$ID VB=wkb$ID
# The impaired wire: A2 -- (M0) M (M1) -- B2, the bridge in M.
A2=ww-kc-$ID B2=ww-kd-$ID M=ww-km-$ID VA2=wkc$ID VB2=wkd$ID M0=wk0$ID M1=wk1$ID
TMP=$(mktemp -d /tmp/ww-bench-bulk.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    for ns in "$A" "$B" "$A2" "$B2" "$M"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$TMP" "/var/run/dpdk/ww-bb-server-$ID" "/var/run/dpdk/ww-bb-client-$ID"
}
trap cleanup EXIT

head -c "$((FILE_MB * 1000000))" /dev/urandom >"$TMP/data.bin"
cat "$TMP/data.bin" >/dev/null # in the page cache for every round
head -c "$((IMPAIRED_MB * 1000000))" "$TMP/data.bin" >"$TMP/small.bin"
if [ "$LOOP_MB" != 0 ]; then
    head -c "$((LOOP_MB * 1000000))" /dev/urandom >"$TMP/loop.bin"
    cat "$TMP/loop.bin" >/dev/null
fi

ww_veth_pair "$A" "$B" "$VA" "$VB"
if [ "$IMPAIRED" = 1 ]; then
    for ns in "$A2" "$B2" "$M"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip link add "$VA2" netns "$A2" type veth peer name "$M0" netns "$M"
    ip link add "$M1" netns "$M" type veth peer name "$VB2" netns "$B2"
    ip -n "$A2" addr add 10.77.0.1/24 dev "$VA2"
    ip -n "$B2" addr add 10.77.0.2/24 dev "$VB2"
    for x in "$A2:$VA2" "$B2:$VB2" "$M:$M0" "$M:$M1"; do
        ip -n "${x%%:*}" link set "${x#*:}" up
        ip netns exec "${x%%:*}" ethtool -K "${x#*:}" gro off tso off gso off >/dev/null
    done
    ip netns exec "$M" "$IMPAIR" --a "$M0" --b "$M1" --loss 0.01 --reorder 0.01 \
        --duplicate 0.01 --corrupt 0.001 --delay 200us --seed 7 --duration 1800s \
        >"$TMP/impair.log" 2>&1 &
    PIDS+=("$!")
    sleep 0.5
fi

# MB/s of one iperf3 run: server in $1 (a namespace or "-"), on $2.
iperf() {
    local ns=$1 ip=$2 cns=${3:-$B} pre=() out
    [ "$ns" = - ] || pre=(ip netns exec "$ns")
    "${pre[@]}" iperf3 -s -B "$ip" -p 17191 -1 >/dev/null 2>&1 &
    local srv=$!
    PIDS+=("$srv")
    sleep 0.3
    local cpre=()
    [ "$ns" = - ] || cpre=(ip netns exec "$cns")
    out=$("${cpre[@]}" timeout 60 iperf3 -c "$ip" -p 17191 -t 3 -J)
    wait "$srv" 2>/dev/null || true
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f" % (r["end"]["sum_received"]["bits_per_second"]/8e6))' <<<"$out"
}

# MB/s of one `client data --file`: $1 the client's namespace ("-": none),
# $2 the server address, then client options.
upload() {
    local ns=$1 addr=$2 pre=() t0 t1 file=${UPLOAD_FILE:-$TMP/data.bin} mb=${UPLOAD_MB:-$FILE_MB}
    shift 2
    [ "$ns" = - ] || pre=(ip netns exec "$ns")
    local out
    out=$("${pre[@]}" timeout 300 "$BIN" client "$addr" --timeout 60s "$@" data --file "$file")
    grep -q "^sent $((mb * 1000000)) bytes" <<<"$out" || { echo "upload: $out" >&2; exit 1; }
    sed -n 's/.* s (\([0-9]*\) MB\/s).*/\1/p' <<<"$out"
}

# EAL arguments of one memif end: $1 server or client, $2 its lcore.
memif_eal() { ww_memif_eal "$1" "$2" "ww-bb-$1-$ID" "$TMP/memif.sock"; }

start_server() { # namespace ("-": none), listen address, serve options
    local ns=$1 listen=$2 pre=()
    shift 2
    [ "$ns" = - ] || pre=(ip netns exec "$ns")
    : >"$TMP/srv.log"
    "${pre[@]}" "$BIN" serve --listen "$listen" --workers 1 "$@" >"$TMP/srv.log" 2>&1 &
    SERVER=$!
    PIDS+=("$SERVER")
    for _ in $(seq 100); do grep -q "listening" "$TMP/srv.log" && return 0; sleep 0.1; done
    cat "$TMP/srv.log" >&2; exit 1
}
stop_server() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; }

declare -A SUM
add() { SUM[$1]="${SUM[$1]:-} $2"; }
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for r in $(seq "$ROUNDS"); do
    echo "== round $r" >&2
    add "loopback iperf3" "$(iperf - 127.0.0.1)"
    start_server - 127.0.0.1:17190 --transport socket
    add "loopback warpwire socket <- socket" "$(upload - 127.0.0.1:17190 --transport socket)"
    if [ "$LOOP_MB" != 0 ]; then
        add "loopback warpwire socket <- socket, $LOOP_MB MB" "$(UPLOAD_FILE=$TMP/loop.bin UPLOAD_MB=$LOOP_MB upload - 127.0.0.1:17190 --transport socket)"
    fi
    stop_server

    for mtu in 1500 $JUMBO_MTU; do
        [ "$mtu" = 0 ] && continue
        v=veth
        [ "$mtu" = 1500 ] || v=veth$mtu
        ip -n "$A" link set "$VA" mtu "$mtu"
        ip -n "$B" link set "$VB" mtu "$mtu"
        add "$v iperf3" "$(iperf "$A" 10.77.0.1)"
        start_server "$A" 0.0.0.0:7077 --transport socket
        add "$v warpwire socket <- socket" "$(upload "$B" 10.77.0.1:7077 --transport socket)"
        stop_server
        start_server "$A" 0.0.0.0:7077 --transport xdp --iface "$VA" --ip 10.77.0.1/24
        add "$v warpwire xdp <- socket" "$(upload "$B" 10.77.0.1:7077 --transport socket)"
        add "$v warpwire xdp <- xdp" "$(upload "$B" 10.77.0.1:7077 --transport xdp --iface "$VB" --ip 10.77.0.3/24)"
        stop_server
    done
    ip -n "$A" link set "$VA" mtu 1500
    ip -n "$B" link set "$VB" mtu 1500
    if [ "$IMPAIRED" = 1 ]; then
        add "impaired iperf3" "$(iperf "$A2" 10.77.0.1 "$B2")"
        start_server "$A2" 0.0.0.0:7077 --transport socket
        add "impaired warpwire socket <- socket" "$(UPLOAD_FILE=$TMP/small.bin UPLOAD_MB=$IMPAIRED_MB upload "$B2" 10.77.0.1:7077 --transport socket)"
        stop_server
        start_server "$A2" 0.0.0.0:7077 --transport xdp --iface "$VA2" --ip 10.77.0.1/24
        add "impaired warpwire xdp <- socket" "$(UPLOAD_FILE=$TMP/small.bin UPLOAD_MB=$IMPAIRED_MB upload "$B2" 10.77.0.1:7077 --transport socket)"
        stop_server
        start_server "$A2" 0.0.0.0:7077 --transport xdp --iface "$VA2" --ip 10.77.0.1/24 --tcp-rx-buffer "$IMPAIRED_RX_BUFFER"
        add "impaired warpwire xdp <- socket, rx buffer $IMPAIRED_RX_BUFFER" "$(UPLOAD_FILE=$TMP/small.bin UPLOAD_MB=$IMPAIRED_MB upload "$B2" 10.77.0.1:7077 --transport socket)"
        stop_server
    fi
    if [ "$MEMIF" = 1 ]; then
        start_server - 0.0.0.0:7077 --transport dpdk --dpdk-args "$(memif_eal server 0)" --ip 10.77.0.1/24
        add "memif warpwire dpdk <- dpdk" "$(upload - 10.77.0.1:7077 --transport dpdk \
            --dpdk-args "$(memif_eal client 1)" --ip 10.77.0.2/24)"
        stop_server
    fi
done

echo "# bench-bulk.sh, $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cores, FILE_MB=$FILE_MB LOOP_MB=$LOOP_MB ROUNDS=$ROUNDS JUMBO_MTU=$JUMBO_MTU"
echo "# warpwire: client data --file (64 KiB DATA frames) into serve --workers 1; iperf3 -t 3; medians of the rounds"
if [ "$IMPAIRED" = 1 ]; then
    echo "# impaired: ${IMPAIRED_MB} MB through warpwire-impair (1 % loss, 1 % reorder, 1 % duplicate, 0.1 % corrupt, 200 us delay)"
fi
echo
echo "| path | MB/s (median) | rounds | ratio to the path's iperf3 |"
echo "|---|---:|---|---:|"
KEYS=("loopback iperf3" "loopback warpwire socket <- socket")
[ "$LOOP_MB" = 0 ] || KEYS+=("loopback warpwire socket <- socket, $LOOP_MB MB")
KEYS+=("veth iperf3"
    "veth warpwire socket <- socket" "veth warpwire xdp <- socket" "veth warpwire xdp <- xdp")
if [ "$JUMBO_MTU" != 0 ]; then
    KEYS+=("veth$JUMBO_MTU iperf3" "veth$JUMBO_MTU warpwire socket <- socket"
        "veth$JUMBO_MTU warpwire xdp <- socket" "veth$JUMBO_MTU warpwire xdp <- xdp")
fi
if [ "$IMPAIRED" = 1 ]; then
    KEYS+=("impaired iperf3" "impaired warpwire socket <- socket" "impaired warpwire xdp <- socket"
        "impaired warpwire xdp <- socket, rx buffer $IMPAIRED_RX_BUFFER")
fi
for key in "${KEYS[@]}"; do
    m=$(median "${SUM[$key]}")
    floor=$(median "${SUM[${key%% *} iperf3]}")
    ratio=$(python3 -c "print('%.2f' % ($m / $floor))")
    echo "| $key | $m |${SUM[$key]} | $ratio |"
done
if [ "$MEMIF" = 1 ]; then
    key="memif warpwire dpdk <- dpdk"
    m=$(median "${SUM[$key]}")
    echo "| $key | $m |${SUM[$key]} | $(python3 -c "print('%.2f' % ($m / 2000))") of the 2 GB/s target |"
fi
