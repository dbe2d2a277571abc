#!/bin/sh
# Runs inside the throw-away QEMU guest (busybox sh, as PID 1's child), see
# scripts/rdma-vm.sh. Sets up dummy0 (10.9.9.1/24) with soft-RoCE rxe0 on
# it, then drives every protocol feature through `warpwire serve` and
# `warpwire client`/`bench` on the transport the host chose (T, from
# /etc/ww-test.conf). Prints one `WW-RDMA: <check> PASS|FAIL` line per
# check and a final `WW-RDMA-RESULT: PASS|FAIL`; the host decides from
# those. Every command runs under `timeout`.

# T, DATA_BYTES, SERVE_EXTRA, CLIENT_EXTRA, MODE (test or bench) and the
# BENCH_* settings of guest-bench.sh (written by the host).
. /etc/ww-test.conf
export WARPWIRE_LOG=warn
IP=10.9.9.1
A=$IP:7077
AUTH_A=$IP:7078
FAILS=0
CHECKS=0

up() { cut -d' ' -f1 /proc/uptime; }
mark() { MARK=$(up); }
took() { awk -v a="$MARK" -v b="$(up)" 'BEGIN { printf "%.1fs", b - a }'; }
# Output of the last command, indented, for a failed check.
dump() {
    for f in /tmp/out /tmp/err; do
        [ -s "$f" ] && head -n 30 "$f" | sed "s|^|  ${f#/tmp/}: |"
    done
}
# verdict NAME STATUS [NOTE]: STATUS 0 is a pass.
verdict() {
    CHECKS=$((CHECKS + 1))
    if [ "$2" = 0 ]; then
        echo "WW-RDMA: $1 PASS ($(took)${3:+, $3})"
    else
        echo "WW-RDMA: $1 FAIL ($(took)${3:+, $3})"
        dump
        FAILS=$((FAILS + 1))
    fi
}
info() { echo "WW-RDMA-INFO: $*"; }
# run SECONDS CMD...: stdout in /tmp/out, stderr in /tmp/err, status in RC.
run() {
    to=$1
    shift
    timeout "$to" "$@" >/tmp/out 2>/tmp/err
    RC=$?
}
# A number from `bench --json` in /tmp/out, and one rounded to 0.1.
j() { sed -n "s/^ *\"$1\": *\([0-9.e+-]*\),*$/\1/p" /tmp/out; }
r() { j "$1" | awk '{ printf "%.1f", $1 }'; }

out_is() { [ "$RC" = 0 ] && [ "$(cat /tmp/out)" = "$1" ]; }
out_has() { [ "$RC" = 0 ] && grep -q -- "$1" /tmp/out; }
err_has() { [ "$RC" != 0 ] && grep -q -- "$1" /tmp/err; }
# A client command on transport T against ADDR (default: the main server).
# shellcheck disable=SC2086 # CLIENT_EXTRA is a list of flags
cli_at() {
    addr=$1
    shift
    run 60 warpwire client --transport "$T" $CLIENT_EXTRA "$addr" "$@"
}
cli() { cli_at "$A" "$@"; }

# start_server PORT LOG ARGS...: background server, its pid in SERVER_PID.
# shellcheck disable=SC2086 # SERVE_EXTRA is a list of flags
start_server() {
    port=$1
    log=$2
    shift 2
    timeout 900 warpwire serve --transport "$T" $SERVE_EXTRA --listen "$IP:$port" "$@" \
        >"$log" 2>"$log.err" &
    SERVER_PID=$!
    i=0
    while [ $i -lt 300 ]; do
        grep -q "listening on $IP:$port" "$log" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.2
        i=$((i + 1))
    done
    cp "$log" /tmp/out
    cp "$log.err" /tmp/err
    return 1
}

finish() {
    echo "WW-GUEST: tests done uptime=$(up)"
    if [ "$FAILS" = 0 ]; then
        echo "WW-RDMA-RESULT: PASS ($CHECKS checks)"
    else
        echo "WW-RDMA-RESULT: FAIL ($FAILS of $CHECKS checks failed)"
    fi
}

echo "WW-GUEST: tests start transport=$T mode=${MODE:-test} uptime=$(up)"

# --- soft-RoCE on dummy0 -----------------------------------------------------
# Loading the dummy module usually creates dummy0 already.
mark
{ [ -e /sys/class/net/dummy0 ] || timeout 20 ip link add dummy0 type dummy; } &&
    timeout 20 ip addr add "$IP/24" dev dummy0 &&
    timeout 20 ip link set dummy0 mtu "${MTU:-1500}" &&
    timeout 20 ip link set dummy0 up
verdict dummy0-up $?

# The guest must have no way out: no NIC but the ones made here.
mark
NETS=$(ls /sys/class/net | tr '\n' ' ')
[ "$NETS" = "dummy0 lo " ]
R=$?
verdict guest-isolated $R "interfaces: $NETS"

mark
run 30 rdma link add rxe0 type rxe netdev dummy0
verdict rxe0-link $RC
run 10 rdma link show
info "$(cat /tmp/out)"

mark
run 30 ibv_devinfo -d rxe0
grep -q "state:.*PORT_ACTIVE" /tmp/out && grep -q "link_layer:.*Ethernet" /tmp/out
R=$?
verdict ibv-devinfo $R "$(grep -E 'hca_id|state:|active_mtu' /tmp/out | tr -s ' \t\n' ' ')"

# Verbs data path (RC SEND/RECV) through rxe, before warpwire touches it:
# the GID of the IPv4 address, RoCE v2.
GIDX=
for i in 0 1 2 3 4 5; do
    g=$(cat "/sys/class/infiniband/rxe0/ports/1/gids/$i" 2>/dev/null)
    t=$(cat "/sys/class/infiniband/rxe0/ports/1/gid_attrs/types/$i" 2>/dev/null)
    case "$g" in 0000:0000:0000:0000:0000:ffff:*)
        [ "$t" = "RoCE v2" ] && GIDX=$i && break
        ;;
    esac
done
mark
timeout 60 ibv_rc_pingpong -d rxe0 -g "${GIDX:-1}" -n 100 >/tmp/pp-srv.log 2>&1 &
PP=$!
sleep 1
run 60 ibv_rc_pingpong -d rxe0 -g "${GIDX:-1}" -n 100 "$IP"
C=$RC
wait $PP
S=$?
[ "$C" = 0 ] && [ "$S" = 0 ]
R=$?
verdict ibv-rc-pingpong $R "gid index ${GIDX:-none}, $(grep 'iters in' /tmp/out | head -n 1)"

mark
run 30 warpwire probe
sed 's/^/WW-RDMA-INFO: probe: /' /tmp/out
# The chosen transport must be compiled in and available.
[ "$RC" = 0 ] && grep -Eq "^$T +yes +yes" /tmp/out
verdict probe $?

# RDMA_VM_BENCH=1: the rdma/socket comparison instead of the checks.
if [ "${MODE:-test}" = bench ]; then
    . /ww-guest-bench.sh
    finish
    exit 0
fi

# --- transport selection by address ----------------------------------------------
# 127.0.0.1 belongs to lo, which no RDMA device owns (rxe0 is on dummy0):
# --transport auto must serve on kernel TCP there, and a forced rdma must
# refuse quickly with the reason.
mark
timeout 60 warpwire serve --transport auto --listen 127.0.0.1:7079 \
    >/tmp/serve-auto.log 2>/tmp/serve-auto.log.err &
AUTO_PID=$!
i=0
while [ $i -lt 150 ] && ! [ -s /tmp/serve-auto.log ] && kill -0 "$AUTO_PID" 2>/dev/null; do
    sleep 0.2
    i=$((i + 1))
done
FIRST=$(head -n 1 /tmp/serve-auto.log)
run 30 warpwire client --transport auto 127.0.0.1:7079 echo "auto on loopback"
out_is "auto on loopback"
E=$?
EERR=$(head -n 1 /tmp/err)
run 30 warpwire client --transport auto 127.0.0.1:7079 stats
out_has "transport  *socket\$" || out_has "transport  *uring\$"
S=$?
kill -TERM "$AUTO_PID" 2>/dev/null
wait "$AUTO_PID"
W=$?
cat /tmp/serve-auto.log.err >>/tmp/err
# Not rdma: the kernel path (uring where the guest kernel allows io_uring,
# else socket).
case "$FIRST" in *"listening on 127.0.0.1:7079 (socket)"* | *"listening on 127.0.0.1:7079 (uring)"*) F=0 ;; *) F=1 ;; esac
[ "$F" = 0 ] && [ "$E" = 0 ] && [ "$S" = 0 ] && [ "$W" = 0 ]
verdict auto-falls-back $? "first line: $FIRST; client echo exit $E${EERR:+ ($EERR)}, stats $S, serve exit $W"
if [ "$E" != 0 ]; then
    # Which transport the auto client took: a forced rdma client to the
    # same address fails the same way if the probe let rdma through.
    WARPWIRE_LOG=warpwire_rdma=debug run 30 warpwire client --transport rdma 127.0.0.1:7079 echo x
    info "auto-falls-back: client --transport rdma 127.0.0.1:7079: exit $RC: $(tail -n 3 /tmp/err | tr '\n' ' ')"
fi

mark
run 20 warpwire serve --transport rdma --listen 127.0.0.1:7080
SRC=$RC
SERR=$(head -n 1 /tmp/err)
[ "$RC" != 0 ] && [ "$RC" != 124 ] && grep -q "rdma" /tmp/err && grep -q "127.0.0.1" /tmp/err
SV=$?
run 20 warpwire probe --transport rdma --ip 127.0.0.1/8
PERR=$(grep -h "rdma" /tmp/out /tmp/err | tail -n 1)
[ "$RC" != 0 ] && [ "$RC" != 124 ] && grep -q "^rdma .* no " /tmp/out && grep -q "choice: none" /tmp/out
PV=$?
[ "$SV" = 0 ] && [ "$PV" = 0 ]
verdict rdma-refuses-loopback $? "serve exit $SRC: $SERR; probe exit $RC: $PERR"

# --- every protocol feature against one server --------------------------------
mark
mkdir -p /tmp/data
start_server 7077 /tmp/serve.log --data-dir /tmp/data --listener "echo=$IP:7091"
verdict serve-start $?
MAIN_PID=$SERVER_PID

mark
cli echo "over $T in the guest"
out_is "over $T in the guest"
verdict echo $?

mark
cli ping --count 3 --interval 10ms
out_has "seq=2"
R=$?
verdict ping $R "$(grep 'seq=2' /tmp/out)"

mark
cli app 0x80 abc
out_is cba
verdict app-reverse $?

mark
cli app 0x81 abc
out_is ABC
verdict app-uppercase $?

mark
cli app 0x99 x
err_has UNKNOWN_TYPE
verdict app-unknown-type $?

mark
cli data "twelve bytes"
out_has "12 bytes accepted"
verdict data-small $?

mark
cli stats
out_has "transport  *$T\$"
verdict stats $?

# A second protocol on a second listener of the same server and workers:
# RFC 862 echo, loaded by the bench's echo protocol (every reply checked).
mark
# shellcheck disable=SC2086 # CLIENT_EXTRA is a list of flags
run 120 warpwire bench --transport "$T" $CLIENT_EXTRA --protocol echo "$IP:7091" \
    --count 2000 --connections 2 --depth 4 --json
out_has '"errors": 0' && out_has '"lost": 0'
R=$?
verdict echo-listener $R "$(grep -E '"messages"|"errors"' /tmp/out | tr -s ' \n' ' ')"

# The connections the server counts (the asking client's own included).
# shellcheck disable=SC2086 # CLIENT_EXTRA is a list of flags
conns() {
    run 30 warpwire client --transport "$T" $CLIENT_EXTRA "$A" stats
    sed -n 's/^connections  *//p' /tmp/out
}

# An auto client towards the rdma server picks rdma (rxe0 routes to it).
if [ "$T" = rdma ]; then
    mark
    run 30 warpwire client --transport auto "$A" stats
    out_has "transport  *rdma\$"
    verdict auto-selects-rdma $?
fi

# No listener on the port: the connect is refused, fast and with a reason.
mark
T0=$(up)
# shellcheck disable=SC2086 # CLIENT_EXTRA is a list of flags
run 30 warpwire client --transport "$T" $CLIENT_EXTRA "$IP:7099" echo x
SECS=$(awk -v a="$T0" -v b="$(up)" 'BEGIN { printf "%.2f", b - a }')
[ "$RC" != 0 ] && [ "$RC" != 124 ] && [ -s /tmp/err ] && awk -v s="$SECS" 'BEGIN { exit !(s < 5) }'
verdict connect-refused $? "exit $RC in ${SECS}s: $(head -n 1 /tmp/err)"

mark
cli auth x y
out_has refused
verdict auth-without-users $?

# A broadcast from one client reaches another that listens.
mark
# shellcheck disable=SC2086
timeout 60 warpwire client --transport "$T" $CLIENT_EXTRA "$A" listen --count 1 --duration 40s \
    >/tmp/listen.out 2>/tmp/listen.err &
LISTENER=$!
delivered=1
i=0
while [ $i -lt 100 ]; do
    cli broadcast "to the listener"
    if out_has "delivered to 1 recipient"; then
        delivered=0
        break
    fi
    kill -0 "$LISTENER" 2>/dev/null || break
    sleep 0.2
    i=$((i + 1))
done
wait $LISTENER
[ "$delivered" = 0 ] && grep -q "to the listener" /tmp/listen.out
R=$?
verdict broadcast $R "after $((i + 1)) attempt(s)"

# Bounded benches: 2 connections, depth 1 and depth 32, zero errors.
# shellcheck disable=SC2086
bench() {
    depth=$1
    count=$2
    mark
    run 120 warpwire bench --transport "$T" $CLIENT_EXTRA "$A" --connections 2 --depth "$depth" \
        --count "$count" --json
    msgs=$(j messages)
    errs=$(j errors)
    lost=$(j lost)
    echo "WW-RDMA-BENCH: transport=$T connections=2 depth=$depth messages=$msgs errors=$errs lost=$lost" \
        "msgs_per_s=$(j throughput_msgs_per_s | awk '{ printf "%.0f", $1 }') p50_us=$(r p50_us)" \
        "p99_us=$(r p99_us) max_us=$(r max_us)"
    [ "$RC" = 0 ] && [ "${msgs:-0}" -gt 0 ] && [ "$errs" = 0 ] && [ "$lost" = 0 ]
    verdict "bench-depth$depth" $?
}
bench 1 2000
bench 32 20000

# Many connections at once: 64 x depth 4.
mark
# shellcheck disable=SC2086 # CLIENT_EXTRA is a list of flags
run 120 warpwire bench --transport "$T" $CLIENT_EXTRA "$A" --connections 64 --depth 4 \
    --count 5000 --json
msgs=$(j messages)
errs=$(j errors)
lost=$(j lost)
echo "WW-RDMA-BENCH: transport=$T connections=64 depth=4 messages=$msgs errors=$errs lost=$lost" \
    "msgs_per_s=$(j throughput_msgs_per_s | awk '{ printf "%.0f", $1 }') p50_us=$(r p50_us)" \
    "p99_us=$(r p99_us) max_us=$(r max_us)"
[ "$RC" = 0 ] && [ "${msgs:-0}" -ge 5000 ] && [ "$errs" = 0 ] && [ "$lost" = 0 ]
verdict many-connections $?

# Small, few buffers on the client against the server's defaults: 64 KiB
# echoes split into 1 KiB SENDs through a window of 4, both ways (the
# server sends at most the client's 1 KiB per SEND). Only for rdma.
if [ "$T" = rdma ]; then
    mark
    # shellcheck disable=SC2086 # CLIENT_EXTRA is a list of flags
    run 120 warpwire bench --transport "$T" $CLIENT_EXTRA "$A" --rdma-depth 4 --rdma-buffer 1024 \
        --connections 2 --depth 8 --size 65536 --count 400 --json
    msgs=$(j messages)
    errs=$(j errors)
    lost=$(j lost)
    [ "$RC" = 0 ] && [ "${msgs:-0}" -ge 400 ] && [ "$errs" = 0 ] && [ "$lost" = 0 ]
    verdict small-buffers $? "64 KiB echoes through 4 x 1 KiB buffers: $msgs replies, $errs errors, $lost lost"
fi

# Busy-polling: a server with --latency-policy lowest (one spinning worker:
# the guest has 2 vCPUs and the client spins too), stopped right after.
# Two spinners on TCG's 2 vCPUs starve everything else: few messages.
mark
start_server 7081 /tmp/serve-busy.log --workers 1 --latency-policy lowest
B=$?
BUSY_PID=$SERVER_PID
RC=1
# shellcheck disable=SC2086 # CLIENT_EXTRA is a list of flags
[ "$B" = 0 ] && run 120 warpwire bench --transport "$T" $CLIENT_EXTRA "$IP:7081" \
    --latency-policy lowest --connections 1 --depth 1 --count 500 --json
msgs=$(j messages)
errs=$(j errors)
lost=$(j lost)
echo "WW-RDMA-BENCH: transport=$T busy-poll connections=1 depth=1 messages=$msgs errors=$errs" \
    "lost=$lost msgs_per_s=$(j throughput_msgs_per_s | awk '{ printf "%.0f", $1 }')" \
    "p50_us=$(r p50_us) p99_us=$(r p99_us) max_us=$(r max_us)"
[ "$RC" = 0 ] && [ "${msgs:-0}" -ge 500 ] && [ "$errs" = 0 ] && [ "$lost" = 0 ]
R=$?
kill -TERM "$BUSY_PID" 2>/dev/null
wait "$BUSY_PID"
verdict busy-poll $R "server exit $?"

# DATA: a random file, stored by the server, hash-checked.
MB=$((DATA_BYTES / 1000000))
mark
run 120 dd if=/dev/urandom of=/tmp/payload bs=1000000 count="$MB"
info "payload of $DATA_BYTES bytes made in $(took)"
mark
run 300 warpwire client --transport "$T" --timeout 60s "$A" data --file /tmp/payload
SENT=$RC
SECS=$(took)
info "data --file: $(cat /tmp/out)"
STORED=
for f in /tmp/data/*.data; do
    [ -f "$f" ] && [ "$(wc -c <"$f")" = "$DATA_BYTES" ] && STORED=$f
done
WANT=$(sha256sum /tmp/payload | cut -d' ' -f1)
GOT=$( [ -n "$STORED" ] && sha256sum "$STORED" | cut -d' ' -f1)
RC=$SENT
out_has "sent $DATA_BYTES bytes" && [ -n "$STORED" ] && [ "$WANT" = "$GOT" ]
R=$?
verdict "data-${MB}mb" $R "$DATA_BYTES bytes in $SECS, sha256 sent $WANT stored ${GOT:-nothing}"

# A client killed (SIGKILL) in the middle of an upload: the server drops
# the connection and keeps serving others.
mark
BASE=$(conns)
# shellcheck disable=SC2086 # CLIENT_EXTRA is a list of flags
timeout 120 warpwire client --transport "$T" $CLIENT_EXTRA --timeout 60s "$A" data --file /tmp/payload \
    >/tmp/upload.out 2>/tmp/upload.err &
UP=$!
# Kill once the server has taken some of it (bytes_in grows).
B0=$(sed -n 's/^bytes_in  *//p' /tmp/out)
mid=1
i=0
while [ $i -lt 100 ] && kill -0 "$UP" 2>/dev/null; do
    c=$(conns)
    b=$(sed -n 's/^bytes_in  *//p' /tmp/out)
    if [ "${c:-0}" -gt "${BASE:-0}" ] && [ "${b:-0}" -gt $((${B0:-0} + 1000000)) ]; then
        KC=$c
        mid=0
        break
    fi
    sleep 0.1
    i=$((i + 1))
done
kill -KILL "$UP" 2>/dev/null
wait "$UP"
KRC=$?
[ "$mid" = 0 ] || info "client-killed: the upload ended before the kill: $(cat /tmp/upload.out /tmp/upload.err)"
# The connection must go within a few seconds.
T0=$(up)
gone=1
i=0
while [ $i -lt 50 ]; do
    c=$(conns)
    [ "$c" = "$BASE" ] && gone=0 && break
    sleep 0.2
    i=$((i + 1))
done
GONE=$(awk -v a="$T0" -v b="$(up)" 'BEGIN { printf "%.1f", b - a }')
cli echo "after the kill"
out_is "after the kill"
E=$?
[ "$mid" = 0 ] && [ "$KRC" = 137 ] && [ "$gone" = 0 ] && [ "$E" = 0 ]
verdict client-killed $? "killed (exit $KRC) after ${B0:-?}->${b:-?} bytes_in; connections $BASE -> ${KC:-?} -> $c, back in ${GONE}s; echo $E"
rm -f /tmp/payload /tmp/data/*

# --- authentication: a second server with --require-auth ---------------------
mark
run 30 warpwire users add alice --users /tmp/users.toml
TOKEN=$(sed -n 's/^token (shown once, store it now): //p' /tmp/out)
[ "$RC" = 0 ] && [ -n "$TOKEN" ]
verdict users-add $?

mark
start_server 7078 /tmp/serve-auth.log --require-auth --users /tmp/users.toml
verdict serve-auth-start $?
AUTH_PID=$SERVER_PID

mark
cli_at "$AUTH_A" --user alice --token "$TOKEN" echo "signed in"
out_is "signed in"
verdict auth-token-echo $?

mark
cli_at "$AUTH_A" auth alice "$TOKEN"
out_has "authenticated as alice"
verdict auth-ok $?

mark
cli_at "$AUTH_A" echo anonymous
err_has UNAUTHENTICATED
verdict auth-anonymous-refused $?

mark
cli_at "$AUTH_A" auth alice wrong-token
err_has AUTH_FAILED
verdict auth-wrong-token-rejected $?

# --- TLS: a third server with --tls, the same layer over this transport --------
mark
run 60 warpwire certs --dir /tmp/certs --name "$IP"
verdict tls-certs $RC
mark
start_server 7080 /tmp/serve-tls.log --tls --tls-cert /tmp/certs/server.pem \
    --tls-key /tmp/certs/server-key.pem
verdict serve-tls-start $?
TLS_PID=$SERVER_PID

mark
cli_at "$IP:7080" --tls-ca /tmp/certs/ca.pem echo "sealed over $T"
out_is "sealed over $T"
verdict tls-echo $?

mark
head -c 4000000 /dev/zero >/tmp/tls-payload
cli_at "$IP:7080" --tls-ca /tmp/certs/ca.pem data --file /tmp/tls-payload
out_has "sent 4000000 bytes of DATA"
verdict tls-data-4mb $?
rm -f /tmp/tls-payload

mark
cli_at "$IP:7080" ping -c 1
err_has TLS
verdict tls-plaintext-refused $?

# --- graceful shutdown ------------------------------------------------------------
mark
kill -TERM "$MAIN_PID" "$AUTH_PID" "$TLS_PID" 2>/dev/null
wait "$MAIN_PID"
M=$?
wait "$AUTH_PID"
S=$?
wait "$TLS_PID"
TS=$?
cp /tmp/serve.log.err /tmp/err
[ "$M" = 0 ] && [ "$S" = 0 ] && [ "$TS" = 0 ]
R=$?
verdict serve-sigterm $R "exit $M, $S and $TS"

finish
