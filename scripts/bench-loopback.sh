#!/usr/bin/env bash
# warpwire against the tokio peer over loopback, same load generator.
#
# Builds both servers in release mode, starts `warpwire serve` and
# `warpwire-peer-tokio` on free loopback ports, then for each configuration
# (64 B ECHO; depth 1 and 32; 1 and 64 connections) runs `warpwire bench`
# against warpwire, then against the tokio peer, alternating, so slow drift
# of the machine (thermal, noisy neighbours) hits both. Prints the machine,
# every command run, and a markdown table.
#
# Environment (defaults sized for the 2-core CI machine: one core for the
# server under test, one for the load generator):
#   WORKERS   server worker threads, both servers            [1]
#   THREADS   load-generator threads                         [1]
#   DURATION  measured time per run                          [5s]
#   WARMUP    unmeasured time before each run                [1s]
#   SIZE      ECHO body bytes                                [64]
#   TRANSPORT warpwire backend, server and load generator    [socket]
#             (always passed as --transport: `auto` now picks uring
#             where the kernel has it; scripts/bench-uring.sh compares
#             uring, socket and tokio)
#   ROUNDS    times the whole interleaved sequence is run    [1]
#   PIN       1: pin servers to SERVER_CPUS and the load generator to
#             CLIENT_CPUS with taskset, so the scheduler cannot put both
#             on one core (the largest source of run-to-run noise
#             measured on the 2-core VM); 0: no pinning   [1 if 2+ cores]
#   SERVER_CPUS, CLIENT_CPUS   taskset CPU lists          [1, 0]
#
# Pinned, client and server always talk across cores. Unpinned on the
# 2-core VM, depth-1 latency was bimodal from run to run (p50 about 20 us
# or 70-80 us; pinned runs always show the slower mode, so presumably the
# fast one is both processes sharing a core), and which mode a run landed
# in decided the ratio.
#
# Anything else running on the machine (a build, a test suite) distorts
# every number; the report prints how busy the CPUs were in the second
# before the runs (servers idle) and the load average, and warns when the
# machine was not idle.
#
# Only the two servers this script starts are ever stopped (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS=${WORKERS:-1}
THREADS=${THREADS:-1}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
SIZE=${SIZE:-64}
TRANSPORT=${TRANSPORT:-socket}
ROUNDS=${ROUNDS:-1}
if [[ -z ${PIN:-} ]]; then
    PIN=0
    if (($(nproc) >= 2)) && command -v taskset >/dev/null; then PIN=1; fi
fi
SERVER_CPUS=${SERVER_CPUS:-1}
CLIENT_CPUS=${CLIENT_CPUS:-0}
SERVER_PIN=()
CLIENT_PIN=()
if ((PIN)); then
    SERVER_PIN=(taskset -c "$SERVER_CPUS")
    CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
fi
# "connections depth"
CONFIGS=("1 1" "1 32" "64 1" "64 32")

SERVER_PIDS=()
WORK=$(mktemp -d)
cleanup() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    # Both exit on SIGTERM; give them 5 s, then make sure.
    for pid in "${SERVER_PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-loopback: %s\n' "$*" >&2; exit 1; }

# --- build -------------------------------------------------------------------
BUILD=(cargo build --release -p warpwire --bin warpwire -p warpwire-peer-tokio --bin warpwire-peer-tokio)
log "${BUILD[*]}"
"${BUILD[@]}"
TARGET=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
WARPWIRE="$TARGET/release/warpwire"
PEER="$TARGET/release/warpwire-peer-tokio"

# --- servers -----------------------------------------------------------------
# start NAME CMD...: runs CMD in the background, waits (at most 10 s) for its
# first stdout line "<name> listening on ADDR ...", sets ADDR.
ADDR=""
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    local pid=$!
    SERVER_PIDS+=("$pid")
    local i line=""
    for i in $(seq 100); do
        line=$(head -n 1 "$WORK/$name.out")
        [[ -n $line ]] && break
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.err" >&2; die "$name exited at startup"; }
        sleep 0.1
    done
    [[ $line == *" listening on "* ]] || { cat "$WORK/$name.err" >&2; die "$name did not report its address (got: '$line')"; }
    ADDR=$(awk '{ print $4 }' <<<"$line")
    log "$name (pid $pid): $line"
}

WARPWIRE_CMD=("${SERVER_PIN[@]}" "$WARPWIRE" serve --transport "$TRANSPORT" --listen 127.0.0.1:0 --workers "$WORKERS")
PEER_CMD=("${SERVER_PIN[@]}" "$PEER" --listen 127.0.0.1:0 --workers "$WORKERS")
start warpwire "${WARPWIRE_CMD[@]}"
WARPWIRE_ADDR=$ADDR
start tokio "${PEER_CMD[@]}"
TOKIO_ADDR=$ADDR

# --- runs --------------------------------------------------------------------
COMMANDS=()
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
bench() { # server addr connections depth round
    local server=$1 addr=$2 conns=$3 depth=$4 round=$5
    local cmd=("${CLIENT_PIN[@]}" "$WARPWIRE" bench "$addr" --transport "$TRANSPORT" --connections "$conns" --depth "$depth" --size "$SIZE"
        --duration "$DURATION" --warmup "$WARMUP" --threads "$THREADS" --json)
    local json="$WORK/$server-c$conns-d$depth-r$round.json"
    COMMANDS+=("${cmd[*]}")
    log "$server: c=$conns d=$depth round $round"
    # Bounded by --duration; the timeout only guards against a hang.
    if ! timeout 300 "${cmd[@]}" >"$json" 2>"$json.err"; then
        cat "$json.err" >&2
        die "bench against $server failed: ${cmd[*]}"
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$conns" "$depth" "$server" "$json" >>"$RESULTS"
}

# Percent of all CPU time spent busy over one second (from /proc/stat).
cpu_busy() {
    local a b
    a=$(head -n 1 /proc/stat)
    sleep 1
    b=$(head -n 1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        na = split(a, x); split(b, y); total = 0; idle = 0
        for (i = 2; i <= na && i <= 9; i++) total += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", total ? 100 * (total - idle) / total : 0
    }'
}
BUSY_BEFORE=$(cpu_busy)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for ((round = 1; round <= ROUNDS; round++)); do
    for cfg in "${CONFIGS[@]}"; do
        read -r conns depth <<<"$cfg"
        bench warpwire "$WARPWIRE_ADDR" "$conns" "$depth" "$round"
        bench tokio "$TOKIO_ADDR" "$conns" "$depth" "$round"
        for pid in "${SERVER_PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || die "a server (pid $pid) died during the run"
        done
    done
done

# --- report ------------------------------------------------------------------
echo "## warpwire ($TRANSPORT) vs tokio peer, loopback, ${SIZE} B ECHO"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- kernel: $(uname -r); nproc: $(nproc); cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "- warpwire transport (server and load generator): $TRANSPORT"
echo "- server workers: $WORKERS; bench threads: $THREADS; duration: $DURATION; warm-up: $WARMUP; rounds: $ROUNDS"
if ((PIN)); then
    echo "- pinned: servers on CPU $SERVER_CPUS, load generator on CPU $CLIENT_CPUS"
else
    echo "- not pinned"
fi
echo "- load average (1/5/15 min) before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- CPU busy in the second before the runs (servers idle): ${BUSY_BEFORE}%"
if ((BUSY_BEFORE >= 10)); then
    echo "- WARNING: the machine was not idle when the runs began; something else is using the CPUs and the numbers are suspect"
fi
echo
echo "Commands:"
echo
echo '```'
echo "${BUILD[*]}"
echo "${WARPWIRE_CMD[*]}"
echo "${PEER_CMD[*]}"
printf '%s\n' "${COMMANDS[@]}"
echo '```'
echo
python3 - "$RESULTS" "$ROUNDS" <<'EOF'
import json
import sys

rows = {}
for line in open(sys.argv[1]):
    rnd, conns, depth, server, path = line.rstrip("\n").split("\t")
    with open(path) as f:
        rows.setdefault((int(rnd), int(conns), int(depth)), {})[server] = json.load(f)
rounds = int(sys.argv[2])


def us(v):
    return f"{v:.1f} µs" if v < 1000 else f"{v / 1000:.2f} ms"


print("| config | warpwire msg/s | warpwire p50 | p99 | tokio msg/s | tokio p50 | p99 | throughput ratio warpwire/tokio |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
problems = []
for (rnd, conns, depth), by in sorted(rows.items()):
    w, t = by["warpwire"], by["tokio"]
    label = f"c={conns} d={depth}" + (f" (round {rnd})" if rounds > 1 else "")
    ratio = w["throughput_msgs_per_s"] / t["throughput_msgs_per_s"] if t["throughput_msgs_per_s"] else float("nan")
    print(
        f"| {label} | {w['throughput_msgs_per_s']:,.0f} | {us(w['p50_us'])} | {us(w['p99_us'])} "
        f"| {t['throughput_msgs_per_s']:,.0f} | {us(t['p50_us'])} | {us(t['p99_us'])} | {ratio:.2f}x |"
    )
    for name, r in by.items():
        if r["errors"] or r["lost"]:
            problems.append(f"{label} {name}: {r['errors']} errors ({r['lost']} lost)")
print()
if problems:
    print("Errors reported by the load generator:")
    for p in problems:
        print(f"- {p}")
else:
    print("No errors or lost requests in any run.")
EOF
