#!/usr/bin/env bash
# Small messages, this tree against an earlier build, in one run: did a
# change make 64 B round trips or pipelined throughput worse?
#
# Builds BASE (a git revision) in a worktree of its own with its own
# target directory, and this tree, both `--release` with FEATURES. Then,
# ROUNDS times, base first in odd rounds and this tree first in even ones
# (slow drift of the machine hits both alike), for each build: a fresh
# `serve --workers 1` on loopback pinned to SERVER_CPU and `bench` of 64 B
# ECHO at depth 1 and at depth 32 (one connection) pinned to CLIENT_CPU,
# both on TRANSPORT. Prints every run and the medians with ratios (this
# tree / base): throughput above 1 and latency below 1 are better.
#
#   scripts/bench-ab.sh                  # BASE=HEAD~1 ROUNDS=3 DURATION=3s
#   BASE=33f45f7 scripts/bench-ab.sh
#   BASE=33f45f7 TRANSPORT=dpdk scripts/bench-ab.sh   # as root: over net_memif
#   BASE_BIN=/tmp/ww-old NEW_BIN=target/release/warpwire scripts/bench-ab.sh
#
# BASE_BIN and NEW_BIN name binaries already built (say, an --all-features
# build the session has anyway): that side is not built, and BASE only
# names the base in the header.
#
# TRANSPORT=dpdk runs both ends over net_memif instead of loopback (root;
# EAL pins them: server on lcore SERVER_CPU, client on CLIENT_CPU; builds
# with the dpdk feature). Loopback or shared memory only; stops only the
# servers it starts (by PID); removes its worktree and DPDK runtime
# directories on exit (the base's target directory is kept under target/
# for the next run).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh

BASE=${BASE:-HEAD~1}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-1s}
TRANSPORT=${TRANSPORT:-socket}
FEATURES=${FEATURES:-}
[ "$TRANSPORT" = dpdk ] && FEATURES=${FEATURES:-dpdk}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}

REV=$(git rev-parse --short "$BASE")
WT=$(mktemp -d /tmp/ww-bench-ab.XXXXXX)
BASE_TARGET=$PWD/target/bench-ab-base
SERVER=
cleanup() {
    [ -n "$SERVER" ] && { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
    git worktree remove --force "$WT" 2>/dev/null || rm -rf "$WT"
    rm -rf "/var/run/dpdk/ww-ab-server-$$" "/var/run/dpdk/ww-ab-client-$$"
}
trap cleanup EXIT

feat=()
[ -n "$FEATURES" ] && feat=(--features "$FEATURES")
if [ -z "${BASE_BIN:-}" ]; then
    git worktree add --detach --force "$WT" "$REV" >/dev/null 2>&1
    (cd "$WT" && CARGO_TARGET_DIR=$BASE_TARGET cargo build --release "${feat[@]}" --bin warpwire >&2)
    BASE_BIN=$BASE_TARGET/release/warpwire
fi
if [ -z "${NEW_BIN:-}" ]; then
    cargo build --release "${feat[@]}" --bin warpwire >&2
    NEW_BIN=$PWD/target/release/warpwire
fi
declare -A BIN=([base]=$BASE_BIN [new]=$NEW_BIN)

# EAL arguments of one memif end: $1 server or client, $2 its lcore.
memif_eal() { ww_memif_eal "$1" "$2" "ww-ab-$1-$$" "$WT.memif"; }

run() { # build depth -> "msg/s p50 p99"
    local b=$1 depth=$2 log addr srv=() cli=()
    log=$(mktemp)
    if [ "$TRANSPORT" = dpdk ]; then
        srv=("${BIN[$b]}" serve --dpdk-args "$(memif_eal server "$SERVER_CPU")" --ip 10.77.0.1/24
            --listen 0.0.0.0:7077)
    else
        srv=(taskset -c "$SERVER_CPU" "${BIN[$b]}" serve --listen 127.0.0.1:0)
    fi
    "${srv[@]}" --transport "$TRANSPORT" --workers 1 >"$log" 2>&1 &
    SERVER=$!
    for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.05; done
    addr=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$log" | head -1)
    [ -n "$addr" ] || { cat "$log" >&2; exit 1; }
    if [ "$TRANSPORT" = dpdk ]; then
        cli=("${BIN[$b]}" bench "$addr" --dpdk-args "$(memif_eal client "$CLIENT_CPU")" --ip 10.77.0.2/24)
    else
        cli=(taskset -c "$CLIENT_CPU" "${BIN[$b]}" bench "$addr")
    fi
    timeout 120 "${cli[@]}" --transport "$TRANSPORT" \
        --connections 1 --depth "$depth" --size 64 --duration "$DURATION" --warmup "$WARMUP" --json |
        python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["errors"] == 0, r; print("%.0f %.1f %.1f" % (r["throughput_msgs_per_s"], r["p50_us"], r["p99_us"]))'
    kill "$SERVER"
    wait "$SERVER" 2>/dev/null || true
    SERVER=
    rm -f "$log" "$WT.memif"
}

echo "# bench-ab.sh, $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) cores"
echo "# base $REV against $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs' || echo '+changes'), TRANSPORT=$TRANSPORT, 64 B ECHO, 1 connection, DURATION=$DURATION, ROUNDS=$ROUNDS"
echo
echo "| round | build | depth | msg/s | p50 us | p99 us |"
echo "|---:|---|---:|---:|---:|---:|"
RES=$(mktemp)
for r in $(seq "$ROUNDS"); do
    order=(base new)
    ((r % 2 == 0)) && order=(new base)
    for b in "${order[@]}"; do
        for d in 1 32; do
            out=$(run "$b" "$d" || true)
            if [ -z "$out" ]; then
                # A start-up that failed (the old DPDK probe could crash):
                # said, and run once more.
                echo "# $b depth $d round $r failed to start; run again" >&2
                out=$(run "$b" "$d")
            fi
            read -r m p50 p99 <<<"$out"
            echo "| $r | $b | $d | $m | $p50 | $p99 |"
            echo "$b $d $m $p50 $p99" >>"$RES"
        done
    done
done
echo
python3 - "$RES" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for b, d, m, p50, p99 in rows:
    med.setdefault((b, d), []).append((float(m), float(p50), float(p99)))
print("| depth | base msg/s | new msg/s | ratio | base p50 | new p50 | ratio | base p99 | new p99 | ratio |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for d in ("1", "32"):
    b = [statistics.median(x) for x in zip(*med[("base", d)])]
    n = [statistics.median(x) for x in zip(*med[("new", d)])]
    print(f"| {d} | {b[0]:.0f} | {n[0]:.0f} | {n[0]/b[0]:.2f} | {b[1]:.1f} | {n[1]:.1f} | {n[1]/b[1]:.2f} | {b[2]:.1f} | {n[2]:.1f} | {n[2]/b[2]:.2f} |")
EOF
rm -f "$RES"
