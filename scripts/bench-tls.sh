#!/usr/bin/env bash
# TLS against plaintext, same server, same client binary, one run:
#
#   1. loopback, socket backend: one server (one worker, pinned to
#      SERVER_CPUS) listening twice, plaintext and TLS
#      (`--listener warpwire+tls=...`); the load generator pinned to
#      CLIENT_CPUS. 64 B ECHO at depth 1 (p50 added by TLS) and depth 32
#      (goal: TLS >= 0.9x plaintext msg/s), 64 KiB ECHO at depth 16 (bulk
#      both ways) and 64 KiB DATA at depth 16 (bulk one way, acknowledged;
#      goal >= 0.7x bytes/s), and connection set-up: 1,000 connections
#      opened by one client thread, plaintext TCP, TLS full handshakes
#      (--tls-no-resume) and TLS with resumption (the first connections
#      are full handshakes, the rest resume their tickets).
#   2. veth, AF_XDP server busy-polling (needs root; skipped otherwise,
#      saying so): the same server layout in namespace A, kernel clients in
#      namespace B, the same four loads.
#
# Every cell runs ROUNDS times, plaintext and TLS interleaved (plain, tls,
# plain, tls, ...); the table gives medians and the ratio of the medians.
# The machine is noisy: compare ratios from one run, not absolute numbers
# across runs.
#
# Environment: DURATION [3s], ROUNDS [3], SERVER_CPUS [0], CLIENT_CPUS [1],
# SKIP_VETH=1 to run part 1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh

DURATION=${DURATION:-3s}
ROUNDS=${ROUNDS:-3}
SERVER_CPUS=${SERVER_CPUS:-0}
CLIENT_CPUS=${CLIENT_CPUS:-1}
log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-tls: %s\n' "$*" >&2; exit 1; }

FEATURES=()
VETH=1
if [ -n "${SKIP_VETH:-}" ]; then
    VETH=0
elif [ "$(id -u)" -ne 0 ]; then
    log "not root: the veth/AF_XDP part is skipped (namespaces and AF_XDP need root)"
    VETH=0
else
    FEATURES=(--features xdp)
fi
log "cargo build --release ${FEATURES[*]} --bin warpwire"
cargo build --release "${FEATURES[@]}" --bin warpwire >&2
WORK=$(mktemp -d)
cp target/release/warpwire "$WORK/warpwire"
BIN=$WORK/warpwire
ID=$$
A=ww-ta-$ID B=ww-tb-$ID VA=wta$ID VB=wtb$ID
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if ((VETH)); then
        ip netns del "$A" 2>/dev/null || true
        ip netns del "$B" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$BIN" certs --dir "$WORK/certs" --name localhost --name 127.0.0.1 --name 10.77.0.1 >/dev/null
CA=$WORK/certs/ca.pem
TLS_SERVE=(--tls-cert "$WORK/certs/server.pem" --tls-key "$WORK/certs/server-key.pem")

# start_server PREFIX... -- SERVE-OPTIONS...: sets SERVER_PID, PLAIN, TLS
# (the two addresses as printed).
PLAIN="" TLS=""
start_server() {
    local prefix=()
    while [ "$1" != "--" ]; do prefix+=("$1"); shift; done
    shift
    : >"$WORK/srv.out"
    "${prefix[@]}" "$BIN" serve --workers 1 "$@" "${TLS_SERVE[@]}" >"$WORK/srv.out" 2>"$WORK/srv.err" &
    SERVER_PID=$!
    for _ in $(seq 100); do
        [ "$(grep -c "listening on" "$WORK/srv.out")" -ge 2 ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/srv.err" >&2; die "the server exited"; }
        sleep 0.1
    done
    # The first line is the main listener (plaintext), the second the TLS one.
    PLAIN=$(awk '/ listening on / { n++; if (n == 1) print $4 }' "$WORK/srv.out")
    TLS=$(awk '/ listening on / { n++; if (n == 2) print $4 }' "$WORK/srv.out")
    [ -n "$PLAIN" ] && [ -n "$TLS" ] || { cat "$WORK/srv.out" "$WORK/srv.err" >&2; die "no addresses"; }
    log "server pid $SERVER_PID: plaintext $PLAIN, TLS $TLS"
}
stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
COMMANDS=()
# run PART LABEL MODE PREFIX... -- BENCH-OPTIONS...: one bench, its JSON
# summarised into RESULTS.
run() {
    local part=$1 label=$2 mode=$3
    shift 3
    local prefix=()
    while [ "$1" != "--" ]; do prefix+=("$1"); shift; done
    shift
    local addr=$PLAIN tls=()
    if [ "$mode" != plain ]; then
        addr=$TLS
        tls=(--tls-ca "$CA" --tls-server-name localhost)
    fi
    local cmd=("${prefix[@]}" "$BIN" bench "$addr" --transport socket "${tls[@]}" --json "$@")
    COMMANDS+=("$part $label $mode: ${cmd[*]}")
    local json
    if ! json=$(timeout 300 "${cmd[@]}" 2>"$WORK/bench.err"); then
        cat "$WORK/bench.err" >&2
        die "bench failed: ${cmd[*]}"
    fi
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
conns = r["connections"]
ramp = r.get("ramp_s") or 0
print("\t".join(str(x) for x in (sys.argv[2], sys.argv[3], sys.argv[4],
    r["throughput_msgs_per_s"], r["throughput_bytes_per_s"], r["p50_us"], r["p99_us"],
    conns / ramp if ramp else 0, r["errors"] + r["lost"])))' "$json" "$part" "$label" "$mode" >>"$RESULTS"
}

CELLS=(
    "64B-d1|--depth 1 --size 64 --duration $DURATION --warmup 1s"
    "64B-d32|--depth 32 --size 64 --duration $DURATION --warmup 1s"
    "64KiB-d16|--depth 16 --size 65536 --duration $DURATION --warmup 1s"
    "64KiB-DATA-d16|--type data --depth 16 --size 65536 --duration $DURATION --warmup 1s"
)
cells() { # PART PREFIX...
    local part=$1
    shift
    local r cell label opts mode
    for r in $(seq "$ROUNDS"); do
        for cell in "${CELLS[@]}"; do
            label=${cell%%|*}
            opts=${cell#*|}
            for mode in plain tls; do
                log "$part round $r: $label $mode"
                # shellcheck disable=SC2086 # opts is a plain word list
                run "$part" "$label" "$mode" "$@" -- $opts
            done
        done
    done
}

# --- 1. loopback, socket backend ---------------------------------------------
start_server taskset -c "$SERVER_CPUS" -- --transport socket --listen 127.0.0.1:0 \
    --listener "warpwire+tls=127.0.0.1:0"
cells loopback taskset -c "$CLIENT_CPUS"
for r in $(seq "$ROUNDS"); do
    log "loopback round $r: connection set-up"
    run loopback setup-1000 plain taskset -c "$CLIENT_CPUS" -- --connections 1000 --count 1000
    run loopback setup-1000 tls-full taskset -c "$CLIENT_CPUS" -- --connections 1000 --count 1000 --tls-no-resume
    run loopback setup-1000 tls taskset -c "$CLIENT_CPUS" -- --connections 1000 --count 1000
done
stop_server

# --- 2. veth, AF_XDP server busy-polling --------------------------------------
if ((VETH)); then
    ww_veth_pair "$A" "$B" "$VA" "$VB"
    start_server ip netns exec "$A" taskset -c "$SERVER_CPUS" -- --transport xdp --iface "$VA" \
        --ip 10.77.0.1/24 --busy-poll --listen 0.0.0.0:7077 --listener "warpwire+tls=0.0.0.0:7443"
    PLAIN=10.77.0.1:7077 TLS=10.77.0.1:7443
    cells veth ip netns exec "$B" taskset -c "$CLIENT_CPUS"
    stop_server
fi

# --- report -------------------------------------------------------------------
python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
cells = {}
for part, label, mode, msgs, byts, p50, p99, cps, errs in rows:
    cells.setdefault((part, label), {}).setdefault(mode, []).append(
        (float(msgs), float(byts), float(p50), float(p99), float(cps), int(errs)))
med = lambda xs: statistics.median(xs)
print("| path | load | plaintext | TLS | TLS / plaintext | p50 plain -> TLS (us) | errors |")
print("|---|---|---:|---:|---:|---:|---:|")
for (part, label), modes in cells.items():
    if label.startswith("setup"):
        plain = med([x[4] for x in modes["plain"]])
        for m in ("tls-full", "tls"):
            if m not in modes:
                continue
            v = med([x[4] for x in modes[m]])
            errs = sum(x[5] for x in modes[m]) + sum(x[5] for x in modes["plain"])
            what = "full handshakes" if m == "tls-full" else "with resumption"
            print(f"| {part} | 1,000 connections opened, {what} | {plain:,.0f} conn/s | {v:,.0f} conn/s | {v/plain:.2f} | | {errs} |")
        continue
    p, t = modes["plain"], modes["tls"]
    bulk = "KiB" in label
    key = 1 if bulk else 0
    pv, tv = med([x[key] for x in p]), med([x[key] for x in t])
    unit = "MB/s" if bulk else "msg/s"
    scale = 1e6 if bulk else 1
    ratios = sorted(b[key] / a[key] for a, b in zip(p, t))
    p50 = f"{med([x[2] for x in p]):.1f} -> {med([x[2] for x in t]):.1f}"
    errs = sum(x[5] for x in p + t)
    print(f"| {part} | {label} | {pv/scale:,.0f} {unit} | {tv/scale:,.0f} {unit} | "
          f"{tv/pv:.2f} (rounds {ratios[0]:.2f}-{ratios[-1]:.2f}) | {p50} | {errs} |")
EOF
echo
echo "Commands (addresses and temporary paths as in this run):"
for c in "${COMMANDS[@]}"; do echo "  $c"; done | sed "s|$WORK|\$WORK|g" | sort -u
