# Sourced by guest-test.sh when the host asked for the comparison
# (RDMA_VM_BENCH=1 scripts/rdma-vm.sh BIN): rdma against kernel TCP on the
# same guest, the same address (10.9.9.1 on dummy0) and the same binary.
#
# Two servers run side by side: `serve --transport rdma` on :7077 and
# `serve --transport socket` on :7177, both with the default policy and
# workers, DATA discarded. Each round runs the same `warpwire bench` (64 B
# ECHO, 2 connections, depth 1 and depth 32, a fixed count) and a DATA
# upload of BENCH_DATA_BYTES, alternating rdma and socket so noise hits
# both; every run must have zero errors and lost requests.
#
# Prints `WW-RDMA-BENCH: ...` per run, `WW-RDMA-BENCH-SUMMARY: ...` per
# configuration (the mean over the rounds, min-max in brackets, and the
# rdma/socket ratio of the means) and the check `bench-compare`.
# Uses the helpers of guest-test.sh (run, mark, verdict, j, r, up).

RDMA_A=$IP:7077
SOCK_A=$IP:7177
ROUNDS=${BENCH_ROUNDS:-2}
RES=/tmp/bench-results
: >"$RES"
BFAILS=0

mark
T=rdma
start_server 7077 /tmp/serve-rdma.log
S1=$?
RDMA_PID=$SERVER_PID
T=socket
start_server 7177 /tmp/serve-socket.log
S2=$?
SOCK_PID=$SERVER_PID
T=rdma
[ "$S1" = 0 ] && [ "$S2" = 0 ]
verdict bench-servers-start $? "rdma on $RDMA_A, socket on $SOCK_A"

addr_of() { if [ "$1" = rdma ]; then echo "$RDMA_A"; else echo "$SOCK_A"; fi; }

# one_bench ROUND TRANSPORT DEPTH COUNT
one_bench() {
    run 180 warpwire bench --transport "$2" "$(addr_of "$2")" --connections 2 --depth "$3" \
        --size 64 --count "$4" --json
    msgs=$(j messages)
    errs=$(j errors)
    lost=$(j lost)
    rate=$(j throughput_msgs_per_s | awk '{ printf "%.0f", $1 }')
    line="round=$1 transport=$2 connections=2 depth=$3 messages=$msgs errors=$errs lost=$lost"
    line="$line msgs_per_s=$rate p50_us=$(r p50_us) p99_us=$(r p99_us) max_us=$(r max_us)"
    echo "WW-RDMA-BENCH: $line"
    if [ "$RC" = 0 ] && [ "${msgs:-0}" -ge "$4" ] && [ "$errs" = 0 ] && [ "$lost" = 0 ]; then
        echo "$line" >>"$RES"
    else
        echo "WW-RDMA-INFO: bench round $1 $2 depth $3 failed (exit $RC): $(head -n 3 /tmp/err)"
        BFAILS=$((BFAILS + 1))
    fi
}

# one_data ROUND TRANSPORT: upload /tmp/payload, wall time from uptime.
one_data() {
    t0=$(up)
    run 300 warpwire client --transport "$2" --timeout 60s "$(addr_of "$2")" data --file /tmp/payload
    secs=$(awk -v a="$t0" -v b="$(up)" 'BEGIN { printf "%.2f", b - a }')
    line="round=$1 transport=$2 data_bytes=$BENCH_DATA_BYTES seconds=$secs"
    echo "WW-RDMA-BENCH: $line"
    if out_has "sent $BENCH_DATA_BYTES bytes"; then
        echo "$line" >>"$RES"
    else
        echo "WW-RDMA-INFO: data round $1 $2 failed (exit $RC): $(head -n 3 /tmp/err)"
        BFAILS=$((BFAILS + 1))
    fi
}

run 120 dd if=/dev/urandom of=/tmp/payload bs=1000000 count=$((BENCH_DATA_BYTES / 1000000))
BENCH_DATA_BYTES=$(wc -c </tmp/payload)

mark
echo "WW-RDMA-BENCH: rounds=$ROUNDS count_depth1=$BENCH_COUNT1 count_depth32=$BENCH_COUNT32" \
    "data_bytes=$BENCH_DATA_BYTES nproc=$(nproc) kernel=$(uname -r)"
n=1
while [ "$n" -le "$ROUNDS" ]; do
    for t in rdma socket; do one_bench "$n" "$t" 1 "$BENCH_COUNT1"; done
    for t in rdma socket; do one_bench "$n" "$t" 32 "$BENCH_COUNT32"; done
    for t in rdma socket; do one_data "$n" "$t"; done
    n=$((n + 1))
done

# Mean (min-max) per configuration and the rdma/socket ratio of the means.
summary() { # DEPTH FIELD
    for t in rdma socket; do
        grep "transport=$t connections=2 depth=$1 " "$RES" | tr ' ' '\n' | sed -n "s/^$2=//p" |
            awk -v t="$t" '{ s += $1; if (n == 0 || $1 < lo) lo = $1; if (n == 0 || $1 > hi) hi = $1; n++ }
                END { if (n) printf "%s %.1f %.1f %.1f\n", t, s / n, lo, hi }'
    done | awk -v d="$1" -v f="$2" '{ m[$1] = $2; txt = txt sprintf(" %s=%.1f[%.1f-%.1f]", $1, $2, $3, $4) }
        END { printf "WW-RDMA-BENCH-SUMMARY: depth=%s %s:%s rdma/socket=%.2f\n", d, f, txt,
              (m["socket"] > 0 ? m["rdma"] / m["socket"] : 0) }'
}
for d in 1 32; do
    for f in msgs_per_s p50_us p99_us; do summary "$d" "$f"; done
done
for t in rdma socket; do
    grep "transport=$t data_bytes=" "$RES" | tr ' ' '\n' | sed -n 's/^seconds=//p' |
        awk -v t="$t" '{ s += $1; if (n == 0 || $1 < lo) lo = $1; if (n == 0 || $1 > hi) hi = $1; n++ }
            END { if (n) printf "%s %.2f %.2f %.2f\n", t, s / n, lo, hi }'
done | awk -v b="$BENCH_DATA_BYTES" '{ m[$1] = $2; txt = txt sprintf(" %s=%.2fs[%.2f-%.2f]", $1, $2, $3, $4) }
    END { printf "WW-RDMA-BENCH-SUMMARY: data %d bytes:%s rdma/socket=%.2f\n", b, txt,
          (m["socket"] > 0 ? m["rdma"] / m["socket"] : 0) }'
rm -f /tmp/payload

kill -TERM "$RDMA_PID" "$SOCK_PID" 2>/dev/null
wait "$RDMA_PID"
M=$?
wait "$SOCK_PID"
S=$?
[ "$BFAILS" = 0 ] && [ "$M" = 0 ] && [ "$S" = 0 ]
verdict bench-compare $? "$ROUNDS rounds, $BFAILS failed runs, servers exit $M and $S"
