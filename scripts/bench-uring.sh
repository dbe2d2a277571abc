#!/usr/bin/env bash
# Kernel paths on loopback: warpwire's uring and socket (mio) backends and
# the tokio peer (crates/peer-tokio), all driven by the same load generator,
# first over the socket backend, then over the uring backend.
#
# Builds both binaries in release mode and starts three servers on free
# loopback ports, all pinned to SERVER_CPUS with one worker each:
#   warpwire serve --transport uring, warpwire serve --transport socket,
#   warpwire-peer-tokio.
# Then, for each configuration (connections x depth: 1x1, 1x32, 100x1,
# 100x32, 1000x1; 64 B ECHO) and each client transport (socket, then
# uring), it runs `warpwire bench --transport CLIENT` (pinned to
# CLIENT_CPUS, one thread) against the three servers in turn. The whole
# sequence is repeated ROUNDS times, the server order rotated each round
# (uring socket tokio; socket tokio uring; tokio uring socket; ...) so no
# server always goes first. The report gives, per cell, the median over
# the rounds of msg/s, p50 and p99, the ratios against the tokio peer (of
# the medians, and the range of the per-round ratios), the busy share of
# the server and client CPUs, and the goal verdicts of the issue.
#
# Every warpwire command names --transport: `auto` picks uring on a kernel
# that has it, so a command relying on the default would not measure what
# it says.
#
# Environment (defaults sized for the 2-core CI machine):
#   DURATION     measured time per run                               [3s]
#   WARMUP       unmeasured time before each run                     [1s]
#   WARMUP_MANY  warm-up of runs with >= 1000 connections            [2s]
#   SIZE         ECHO body bytes                                     [64]
#   ROUNDS       times the interleaved sequence is run (>= 2)        [3]
#   THREADS      load-generator threads                              [1]
#   CLIENTS      client transports, in order                         ["socket uring"]
#   CONFIGS      "CxD" list                                          ["1x1 1x32 100x1 100x32 1000x1"]
#   SERVER_CPUS, CLIENT_CPUS   taskset CPU lists                     [0, 1]
#   RUN_TIMEOUT  seconds before one bench command is killed          [120]
#
# Anything else running on the machine distorts every number; the report
# prints how busy the CPUs were in the second before the runs (servers
# idle) and the load average, and warns when the machine was not idle.
#
# Only the servers this script starts are ever stopped (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-1s}
WARMUP_MANY=${WARMUP_MANY:-2s}
SIZE=${SIZE:-64}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-1}
CLIENTS=${CLIENTS:-socket uring}
CONFIGS=${CONFIGS:-1x1 1x32 100x1 100x32 1000x1}
SERVER_CPUS=${SERVER_CPUS:-0}
CLIENT_CPUS=${CLIENT_CPUS:-1}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}
SERVERS=(uring socket tokio)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-uring: %s\n' "$*" >&2; exit 1; }

((ROUNDS >= 1)) || die "ROUNDS must be at least 1"
command -v taskset >/dev/null || die "taskset is needed (util-linux)"
(($(nproc) >= 2)) || die "needs two CPUs: one for the servers, one for the load generator"
SERVER_PIN=(taskset -c "$SERVER_CPUS")
CLIENT_PIN=(taskset -c "$CLIENT_CPUS")

SERVER_PIDS=()
WORK=$(mktemp -d)
cleanup() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    # All three exit on SIGTERM (warpwire after its shutdown grace, at most
    # 5 s by default); give them 8 s, then make sure.
    for pid in "${SERVER_PIDS[@]}"; do
        for _ in $(seq 80); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build -------------------------------------------------------------------
BUILD=(cargo build --release -p warpwire --bin warpwire -p warpwire-peer-tokio --bin warpwire-peer-tokio)
log "${BUILD[*]}"
timeout 1800 "${BUILD[@]}"
TARGET=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
# Run copies, so that a build finishing elsewhere during the runs cannot
# swap a binary between two of them. The commands are printed with the
# names the build gives them.
mkdir "$WORK/bin"
cp "$TARGET/release/warpwire" "$TARGET/release/warpwire-peer-tokio" "$WORK/bin/"
WARPWIRE="$WORK/bin/warpwire"
PEER="$WORK/bin/warpwire-peer-tokio"
SHOW_WARPWIRE="target/release/warpwire"
SHOW_PEER="target/release/warpwire-peer-tokio"
SOURCES="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
if [[ -n $(git status --porcelain -- Cargo.toml Cargo.lock src crates 2>/dev/null) ]]; then
    SOURCES+=" with uncommitted changes under $(git status --porcelain -- Cargo.toml Cargo.lock src crates | awk '{ print $2 }' | tr '\n' ' ')"
fi

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
    local line=""
    for _ in $(seq 100); do
        line=$(head -n 1 "$WORK/$name.out")
        [[ -n $line ]] && break
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.err" >&2; die "$name exited at startup"; }
        sleep 0.1
    done
    [[ $line == *" listening on "* ]] || { cat "$WORK/$name.err" >&2; die "$name did not report its address (got: '$line')"; }
    ADDR=$(awk '{ print $4 }' <<<"$line")
    log "$name (pid $pid): $line"
}

declare -A SERVER_ADDR SERVER_CMD
SERVER_CMD[uring]="${SERVER_PIN[*]} $WARPWIRE serve --transport uring --listen 127.0.0.1:0 --workers 1"
SERVER_CMD[socket]="${SERVER_PIN[*]} $WARPWIRE serve --transport socket --listen 127.0.0.1:0 --workers 1"
SERVER_CMD[tokio]="${SERVER_PIN[*]} $PEER --listen 127.0.0.1:0 --workers 1"
show() { sed -e "s|$WARPWIRE|$SHOW_WARPWIRE|g" -e "s|$PEER|$SHOW_PEER|g" <<<"$*"; }
for s in "${SERVERS[@]}"; do
    # shellcheck disable=SC2086 # the command is a plain word list
    start "$s" ${SERVER_CMD[$s]}
    SERVER_ADDR[$s]=$ADDR
done
# A warpwire server that fell back to another transport would say so here.
for s in uring socket; do
    grep -q "($s)" "$WORK/$s.out" || die "the $s server is not serving over $s: $(head -n 1 "$WORK/$s.out")"
done

# --- runs --------------------------------------------------------------------
# cpu_ticks N: "busy total" jiffies of CPU N from /proc/stat (iowait counts
# as idle).
cpu_ticks() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}
# Percent of all CPU time spent busy over one second.
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
# The per-CPU busy columns need one CPU on each side.
PER_CPU=0
[[ $SERVER_CPUS =~ ^[0-9]+$ && $CLIENT_CPUS =~ ^[0-9]+$ ]] && PER_CPU=1

COMMANDS=()
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
bench() { # server client connections depth round
    local server=$1 client=$2 conns=$3 depth=$4 round=$5 warmup=$WARMUP
    ((conns >= 1000)) && warmup=$WARMUP_MANY
    local cmd=("${CLIENT_PIN[@]}" "$WARPWIRE" bench "${SERVER_ADDR[$server]}" --transport "$client"
        --connections "$conns" --depth "$depth" --size "$SIZE"
        --duration "$DURATION" --warmup "$warmup" --threads "$THREADS" --json)
    local json="$WORK/$server-$client-c$conns-d$depth-r$round.json"
    # One line per distinct command (the address differs per server).
    ((round == 1)) && COMMANDS+=("${cmd[*]}")
    log "round $round: $client client -> $server server, c=$conns d=$depth"
    local s0 s1 c0 c1
    if ((PER_CPU)); then
        s0=$(cpu_ticks "$SERVER_CPUS")
        c0=$(cpu_ticks "$CLIENT_CPUS")
    fi
    # Bounded by --duration; the timeout only guards against a hang.
    if ! timeout "$RUN_TIMEOUT" "${cmd[@]}" >"$json" 2>"$json.err"; then
        cat "$json.err" >&2
        die "bench failed: ${cmd[*]}"
    fi
    local scpu="" ccpu=""
    if ((PER_CPU)); then
        s1=$(cpu_ticks "$SERVER_CPUS")
        c1=$(cpu_ticks "$CLIENT_CPUS")
        scpu=$(awk -v a="$s0" -v b="$s1" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[2] - x[2]; printf "%.0f", d ? 100 * (y[1] - x[1]) / d : 0 }')
        ccpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[2] - x[2]; printf "%.0f", d ? 100 * (y[1] - x[1]) / d : 0 }')
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$client" "$conns" "$depth" "$server" "$json" "$scpu" "$ccpu" >>"$RESULTS"
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "a server (pid $pid) died during the run"
    done
}

# proc_snapshot FILE: "pid ticks comm" of every process, ticks = its own
# CPU time plus that of the children it has reaped.
proc_snapshot() {
    python3 - "$1" <<'PY'
import os, sys
with open(sys.argv[1], "w") as out:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")].replace(" ", "_")
        f = stat[stat.rindex(")") + 2 :].split()
        # fields 14-17 of stat: utime stime cutime cstime; 22: starttime
        out.write(f"{pid} {f[19]} {sum(int(v) for v in f[11:15])} {comm}\n")
PY
}
BUSY_BEFORE=$(cpu_busy)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
proc_snapshot "$WORK/procs.before"
START=$(date +%s)
for ((round = 1; round <= ROUNDS; round++)); do
    # Rotate the server order: round 1 uring socket tokio, round 2 socket
    # tokio uring, round 3 tokio uring socket, ...
    order=()
    for i in 0 1 2; do order+=("${SERVERS[$(((i + round - 1) % 3))]}"); done
    for cfg in $CONFIGS; do
        conns=${cfg%x*}
        depth=${cfg#*x}
        for client in $CLIENTS; do
            for server in "${order[@]}"; do
                bench "$server" "$client" "$conns" "$depth" "$round"
            done
        done
    done
done
ELAPSED=$(($(date +%s) - START))
proc_snapshot "$WORK/procs.after"
# CPU seconds used during the runs by processes this script did not start
# (alive at the end; one that started and ended in between is counted
# only if its parent lives on and reaped it).
FOREIGN=$(awk -v mine="$$ ${SERVER_PIDS[*]}" -v hz="$(getconf CLK_TCK)" '
    BEGIN { n = split(mine, m, " "); for (i = 1; i <= n; i++) skip[m[i]] = 1 }
    FNR == NR { before[$1 " " $2] = $3; next }
    !($1 in skip) {
        d = $3 - ((($1 " " $2) in before) ? before[$1 " " $2] : 0)
        if (d > 0) { total += d; if (d >= hz / 2) top = top sprintf(" %s[%s] %.1f s;", $4, $1, d / hz) }
    }
    END { printf "%.1f s%s", total / hz, top ? " (" substr(top, 2) ")" : "" }
' "$WORK/procs.before" "$WORK/procs.after")

# --- report ------------------------------------------------------------------
echo "# bench-uring.sh, $(date -u '+%Y-%m-%dT%H:%M:%SZ'), built from $SOURCES"
echo
echo "- kernel: $(uname -r); nproc: $(nproc); cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "- servers: 1 worker each, pinned to CPU $SERVER_CPUS; load generator: warpwire bench, $THREADS thread(s), pinned to CPU $CLIENT_CPUS"
echo "- ${SIZE} B ECHO; duration $DURATION; warm-up $WARMUP ($WARMUP_MANY at 1000+ connections); rounds: $ROUNDS, server order rotated each round; ${ELAPSED} s of runs"
echo "- load average (1/5/15 min) before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- CPU busy in the second before the runs (servers idle): ${BUSY_BEFORE}%"
echo "- CPU used during the runs by processes and kernel threads this script did not start: $FOREIGN, of $(($(nproc) * ELAPSED)) CPU-s on $(nproc) CPUs"
if ((BUSY_BEFORE >= 10)); then
    echo "- WARNING: the machine was not idle when the runs began; something else is using the CPUs and the numbers are suspect"
fi
echo
echo "Commands:"
echo
echo '```'
echo "${BUILD[*]}"
for s in "${SERVERS[@]}"; do echo "$(show "${SERVER_CMD[$s]}")    # $s, listening on ${SERVER_ADDR[$s]}"; done
for c in "${COMMANDS[@]}"; do show "$c"; done
echo '```'
echo
python3 - "$RESULTS" "$ROUNDS" "$CLIENTS" "$CONFIGS" "$PER_CPU" <<'EOF'
import json
import statistics
import sys

path, rounds, clients, configs, per_cpu = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), sys.argv[5] == "1"
runs = {}  # (client, conns, depth, server) -> [(round, report, server cpu, client cpu)]
for line in open(path):
    rnd, client, conns, depth, server, jpath, scpu, ccpu = line.rstrip("\n").split("\t")
    with open(jpath) as f:
        rep = json.load(f)
    runs.setdefault((client, int(conns), int(depth), server), []).append(
        (int(rnd), rep, float(scpu) if scpu else None, float(ccpu) if ccpu else None))

SERVERS = ["uring", "socket", "tokio"]
cfgs = [tuple(int(v) for v in c.split("x")) for c in configs]


def us(v):
    return f"{v:.1f} us" if v < 1000 else f"{v / 1000:.2f} ms"


def med(client, c, d, s, key):
    return statistics.median(r[1][key] for r in runs[(client, c, d, s)])


def per_round_ratios(client, c, d, s):
    a = {r[0]: r[1]["throughput_msgs_per_s"] for r in runs[(client, c, d, s)]}
    t = {r[0]: r[1]["throughput_msgs_per_s"] for r in runs[(client, c, d, "tokio")]}
    return [a[k] / t[k] for k in sorted(a) if t.get(k)]


def rng(v):
    return f"{min(v):.2f}-{max(v):.2f}" if v else "-"


problems = []
for (client, c, d, s), rs in runs.items():
    for rnd, rep, _, _ in rs:
        if rep["errors"] or rep["lost"]:
            problems.append(f"{client} client -> {s}, {c}x{d}, round {rnd}: {rep['errors']} errors ({rep['lost']} lost)")

verdicts = []
for client in clients:
    print(f"### {client} client (`bench --transport {client}`), median of {rounds} rounds")
    print()
    print("| conns x depth | uring msg/s | p50 | p99 | socket msg/s | p50 | p99 | tokio msg/s | p50 | p99 | uring/tokio | socket/tokio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, d in cfgs:
        cells = []
        for s in SERVERS:
            cells += [f"{med(client, c, d, s, 'throughput_msgs_per_s'):,.0f}", us(med(client, c, d, s, "p50_us")), us(med(client, c, d, s, "p99_us"))]
        t = med(client, c, d, "tokio", "throughput_msgs_per_s")
        ratios = []
        for s in ("uring", "socket"):
            r = med(client, c, d, s, "throughput_msgs_per_s") / t
            ratios.append(f"{r:.2f}x ({rng(per_round_ratios(client, c, d, s))})")
        print(f"| {c:,} x {d} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    print()
    print("Ratios are of the medians; in brackets the range of the per-round ratios.")
    print()
    if per_cpu:
        print(f"CPU busy during each bench command (connect and warm-up included), median %, server CPU / client CPU:")
        print()
        print("| conns x depth | uring | socket | tokio |")
        print("|---|---:|---:|---:|")
        for c, d in cfgs:
            cells = []
            for s in SERVERS:
                rs = runs[(client, c, d, s)]
                cells.append(f"{statistics.median(r[2] for r in rs):.0f} / {statistics.median(r[3] for r in rs):.0f}")
            print(f"| {c:,} x {d} | " + " | ".join(cells) + " |")
        print()
    for s in ("uring", "socket"):
        for c, d in cfgs:
            goal = 1.3 if c >= 100 else 1.0
            r = med(client, c, d, s, "throughput_msgs_per_s") / med(client, c, d, "tokio", "throughput_msgs_per_s")
            p99 = med(client, c, d, s, "p99_us") / med(client, c, d, "tokio", "p99_us")
            ok = "met" if r >= goal else "NOT met"
            pok = "met" if p99 <= 1.0 else "NOT met"
            verdicts.append(f"| {client} | {s} | {c:,} x {d} | >= {goal:.1f}x | {r:.2f}x | {ok} | {p99:.2f} | {pok} |")

print("### Goals (msg/s against the tokio peer; p99 no worse: p99 ratio <= 1)")
print()
print("| client | server | conns x depth | goal | msg/s ratio | | p99 ratio | |")
print("|---|---|---|---:|---:|---|---:|---|")
print("\n".join(verdicts))
print()
if problems:
    print("Errors reported by the load generator:")
    for p in problems:
        print(f"- {p}")
else:
    print("No errors or lost requests in any run.")
EOF
