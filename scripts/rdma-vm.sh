#!/usr/bin/env bash
# The RDMA transport's end-to-end test: boots a throw-away QEMU guest with
# soft-RoCE and runs warpwire serve, client and bench inside it.
#
#   scripts/rdma-vm.sh <warpwire-binary> [--transport rdma|socket]
#
# The host kernel has no RDMA, so the guest runs Debian's stock kernel
# (linux-image-amd64 and busybox-static are fetched with `apt-get download`
# and unpacked with `dpkg-deb -x` into target/rdma-vm/, never installed)
# under QEMU TCG (/dev/kvm here is nested PVM and hangs a stock kernel). Its
# initramfs holds busybox, the given warpwire binary and its shared
# libraries, iproute2's ip and rdma, the ibverbs tools, the rxe verbs
# provider (dlopen'ed by libibverbs) and the modules for rdma_rxe and
# rdma_cm. The guest (scripts/rdma-vm/guest-test.sh) creates dummy0
# 10.9.9.1/24 with rxe0 on it, runs every check on the chosen transport
# and prints `WW-RDMA: <check> PASS|FAIL` lines and `WW-RDMA-RESULT:`.
# This script prints those lines and exits 0 only if every required check
# passed and the final marker says PASS.
#
# The guest has no network device at all (-nodefaults -nic none) and its
# only interfaces are lo and the dummy0 it creates; it checks that itself.
# Needs root for apt (skip with RDMA_VM_SKIP_APT=1 when the packages are
# there). Runs are serialised by a lock in target/rdma-vm/.
#
# Environment: RDMA_VM_TIMEOUT (QEMU's hard limit, default 270 s),
# RDMA_VM_DATA_BYTES (the hash-checked DATA transfer, default 50000000),
# RDMA_VM_SERVE_ARGS / RDMA_VM_CLIENT_ARGS (extra flags for serve and for
# client/bench in the guest), RDMA_VM_MTU (dummy0's MTU, default 1500: rxe
# then reports a 1024-byte RoCE MTU; 9000 gives 4096), RDMA_VM_SKIP_APT=1.
#
# RDMA_VM_BENCH=1 runs the rdma/socket comparison of docs/benchmarks.md
# instead of the checks (scripts/rdma-vm/guest-bench.sh; --transport is
# then ignored): the same `warpwire bench` (64 B ECHO, 2 connections,
# depth 1 and 32) and a DATA upload over rdma and over kernel TCP on the
# same guest address, alternating, RDMA_VM_BENCH_ROUNDS times (default 2),
# printing `WW-RDMA-BENCH:` lines and a summary. Give it a release build:
#   cargo build --release --features rdma
#   RDMA_VM_BENCH=1 scripts/rdma-vm.sh target/release/warpwire
# RDMA_VM_BENCH_COUNT1 / RDMA_VM_BENCH_COUNT32: replies per bench at depth
# 1 (default 5000) and 32 (default 50000); the upload is
# RDMA_VM_DATA_BYTES.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GUEST_DIR=$ROOT/scripts/rdma-vm

usage() {
    echo "usage: $0 <warpwire-binary> [--transport rdma|socket]" >&2
    exit 2
}
[ $# -ge 1 ] || usage
BIN=$(realpath "$1")
shift
TRANSPORT=rdma
while [ $# -gt 0 ]; do
    case "$1" in
    --transport)
        [ $# -ge 2 ] || usage
        TRANSPORT=$2
        shift 2
        ;;
    --transport=*)
        TRANSPORT=${1#--transport=}
        shift
        ;;
    *) usage ;;
    esac
done
case "$TRANSPORT" in rdma | socket) ;; *) usage ;; esac
[ -x "$BIN" ] || {
    echo "rdma-vm: $BIN is not an executable" >&2
    exit 2
}
VM_TIMEOUT=${RDMA_VM_TIMEOUT:-270}
DATA_BYTES=${RDMA_VM_DATA_BYTES:-50000000}
MODE=test
if [ "${RDMA_VM_BENCH:-0}" = 1 ]; then
    MODE=bench
    TRANSPORT=rdma
fi

CACHE=$ROOT/target/rdma-vm
mkdir -p "$CACHE"
T0=$(date +%s.%N)
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[%6ss] %s\n' "$(since "$T0")" "$*"; }
PHASES=()
phase_done() { PHASES+=("$1=$(since "$2")s"); }

# One run at a time: the cache, the console log, and two TCG guests on two
# cores would only slow each other down.
exec 9>"$CACHE/lock"
if ! flock -n 9; then
    log "waiting for another rdma-vm run to finish"
    flock -w 900 9 || {
        log "FAIL: lock $CACHE/lock still held after 900 s"
        exit 1
    }
fi

# Under the lock no other run is active: leftovers are from a killed run.
rm -rf "$CACHE"/run.*
WORK=$(mktemp -d "$CACHE/run.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# --- 1. host packages (QEMU, rdma-core tools, cpio) -----------------------------
t=$(now)
PACKAGES=(qemu-system-x86 rdma-core ibverbs-providers ibverbs-utils iproute2 cpio binutils)
if [ "${RDMA_VM_SKIP_APT:-0}" != 1 ]; then
    missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    # The kernel and busybox debs are downloaded: apt needs its lists.
    if ((${#missing[@]})) || ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
        log "apt: installing ${missing[*]:-(lists only)}"
        apt-get -o DPkg::Lock::Timeout=600 update -qq >"$WORK/apt.log" 2>&1 ||
            { cat "$WORK/apt.log"; exit 1; }
        if ((${#missing[@]})); then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
                --no-install-recommends "${missing[@]}" >>"$WORK/apt.log" 2>&1 ||
                { cat "$WORK/apt.log"; exit 1; }
        fi
    fi
fi
phase_done apt "$t"

# --- 2. Debian's kernel and busybox, unpacked into the cache --------------------
t=$(now)
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }' || true)
if [ -n "$KPKG" ]; then
    KV=${KPKG#linux-image-}
else
    # No apt lists (offline, RDMA_VM_SKIP_APT): the newest cached kernel.
    KV=$(find "$CACHE" -maxdepth 1 -name 'kernel-*' -printf '%f\n' | sed 's/^kernel-//' | sort -V | tail -n 1)
    [ -n "$KV" ] || {
        log "FAIL: no linux-image-amd64 in apt and none cached"
        exit 1
    }
fi
KDIR=$CACHE/kernel-$KV
BBDIR=$CACHE/busybox
fetch() { # package, destination directory
    (cd "$WORK" && apt-get download -q "$1" >>"$WORK/download.log" 2>&1) ||
        { cat "$WORK/download.log"; exit 1; }
    rm -rf "$2.tmp"
    dpkg-deb -x "$WORK/$1"_*.deb "$2.tmp"
    rm -f "$WORK/$1"_*.deb
    rm -rf "$2"
    mv "$2.tmp" "$2"
}
if [ ! -f "$KDIR/boot/vmlinuz-$KV" ]; then
    log "downloading and unpacking linux-image-$KV (not installed)"
    fetch "linux-image-$KV" "$KDIR"
    # Older kernels are no longer needed.
    find "$CACHE" -maxdepth 1 -name 'kernel-*' ! -name "kernel-$KV" -exec rm -rf {} +
fi
if [ ! -x "$BBDIR/bin/busybox" ]; then
    log "downloading and unpacking busybox-static (not installed)"
    fetch busybox-static "$BBDIR"
fi
phase_done download "$t"

# --- 3. initramfs ---------------------------------------------------------------------
t=$(now)
R=$WORK/root
mkdir -p "$R"/{usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64,etc,proc,sys,dev,tmp,root}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$R/$d"; done

# An ELF at its host path, with every library ldd resolves (at their host
# paths too: the guest's /lib is /usr/lib, as on the host).
copy_elf() { # source, destination inside the guest
    mkdir -p "$(dirname "$R$2")"
    cp -L "$1" "$R$2"
    ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
        while read -r lib; do
            [ -e "$R$lib" ] && continue
            mkdir -p "$(dirname "$R$lib")"
            cp -L "$lib" "$R$lib"
        done
}
tool() { # command name -> copied to the same path in the guest
    local p
    p=$(command -v "$1") || {
        log "FAIL: $1 not found on the host"
        exit 1
    }
    copy_elf "$p" "/usr/$(basename "$(dirname "$p")")/$1"
}
for c in ip rdma ibv_devices ibv_devinfo ibv_rc_pingpong; do tool "$c"; done

# The warpwire under test, without its debug info (smaller guest).
copy_elf "$BIN" /usr/bin/warpwire
strip --strip-debug "$R/usr/bin/warpwire"

# The rxe verbs provider: libibverbs dlopens it by the .driver file's name.
mkdir -p "$R/etc/libibverbs.d"
cp /etc/libibverbs.d/rxe.driver "$R/etc/libibverbs.d/"
RXE=$(find /usr/lib/x86_64-linux-gnu/libibverbs -name 'librxe-rdmav*.so' | head -n 1)
[ -n "$RXE" ] || {
    log "FAIL: no librxe-rdmav*.so (ibverbs-providers)"
    exit 1
}
copy_elf "$RXE" "$RXE"

# busybox for everything else (never shadowing the real tools above).
cp "$BBDIR/bin/busybox" "$R/usr/bin/busybox"
for a in $("$R/usr/bin/busybox" --list); do
    [ -e "$R/usr/bin/$a" ] || [ -e "$R/usr/sbin/$a" ] || ln -s busybox "$R/usr/bin/$a"
done

# Modules and their dependencies, in load order, decompressed so busybox
# insmod can load them. The deb has no modules.dep (depmod runs at install
# time), so the dependencies come from each module's .modinfo section.
# crc32_generic is no dependency (rxe asks the crypto API for "crc32") and
# is named; rdma_ucm brings rdma_cm, ib_cm, iw_cm and configfs.
MODDIR=$KDIR/lib/modules/$KV
MODS=()
declare -A SEEN=()
add_module() { # module name
    local name=$1 rel src ko deps d
    [ -z "${SEEN[$name]:-}" ] || return 0
    SEEN[$name]=1
    rel=$(awk -v n="$name" '{ f = $0; sub(/.*\//, "", f); sub(/\.ko.*$/, "", f); gsub(/-/, "_", f);
        if (f == n) { print; exit } }' "$MODDIR/modules.order")
    [ -n "$rel" ] || {
        log "FAIL: module $name not in kernel $KV"
        exit 1
    }
    ko=$R/lib/modules/$KV/$rel
    mkdir -p "$(dirname "$ko")"
    for src in "$MODDIR/$rel" "$MODDIR/$rel".*; do [ -f "$src" ] && break; done
    case "$src" in
    *.xz) xz -dc "$src" >"$ko" ;;
    *.zst) zstd -qdc "$src" >"$ko" ;;
    *.gz) gzip -dc "$src" >"$ko" ;;
    *) cp "$src" "$ko" ;;
    esac
    deps=$(objcopy -O binary --only-section=.modinfo "$ko" /dev/stdout | tr '\0' '\n' |
        sed -n 's/^depends=//p' | tr ',' ' ')
    for d in $deps; do add_module "${d//-/_}"; done
    MODS+=("$rel")
}
for m in crc32_generic dummy rdma_rxe rdma_ucm; do add_module "$m"; done
echo "${MODS[*]}" >"$R/etc/ww-modules"
echo "$KV" >"$R/etc/ww-kver"
echo $((VM_TIMEOUT - 30)) >"$R/etc/ww-guest-timeout"
{
    printf 'T=%q\n' "$TRANSPORT"
    printf 'DATA_BYTES=%q\n' "$DATA_BYTES"
    printf 'SERVE_EXTRA=%q\n' "${RDMA_VM_SERVE_ARGS:-}"
    printf 'CLIENT_EXTRA=%q\n' "${RDMA_VM_CLIENT_ARGS:-}"
    printf 'MODE=%q\n' "$MODE"
    printf 'MTU=%q\n' "${RDMA_VM_MTU:-1500}"
    printf 'BENCH_ROUNDS=%q\n' "${RDMA_VM_BENCH_ROUNDS:-2}"
    printf 'BENCH_COUNT1=%q\n' "${RDMA_VM_BENCH_COUNT1:-5000}"
    printf 'BENCH_COUNT32=%q\n' "${RDMA_VM_BENCH_COUNT32:-50000}"
    printf 'BENCH_DATA_BYTES=%q\n' "$DATA_BYTES"
} >"$R/etc/ww-test.conf"
install -m 755 "$GUEST_DIR/init" "$R/init"
install -m 755 "$GUEST_DIR/guest-test.sh" "$R/ww-guest-test.sh"
install -m 644 "$GUEST_DIR/guest-bench.sh" "$R/ww-guest-bench.sh"
# Uncompressed: the kernel unpacks it faster under TCG than it inflates gzip.
(cd "$R" && find . -print0 | cpio --null -o -H newc --quiet) >"$WORK/initramfs.cpio"
INITRD_MB=$(($(stat -c %s "$WORK/initramfs.cpio") / 1000000))
log "initramfs: ${INITRD_MB} MB, kernel $KV, ${#MODS[@]} modules, transport $TRANSPORT, mode $MODE"
phase_done initramfs "$t"

# --- 4. boot and test -------------------------------------------------------------
# No network device of any kind (-nodefaults, -nic none): the guest cannot
# reach the host or the outside. Console on the serial port only.
CONSOLE=$CACHE/console.log
# TCG guests are slowed by anything else on the host: say how busy it was.
log "host: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
log "booting the guest (TCG, hard limit ${VM_TIMEOUT}s), console: $CONSOLE"
t=$(now)
T_TESTS=
set +e
timeout --foreground -k 10 "$VM_TIMEOUT" qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu max -smp 2 -m 1536 \
    -nodefaults -nic none -no-reboot -display none -monitor none -serial stdio \
    -kernel "$KDIR/boot/vmlinuz-$KV" -initrd "$WORK/initramfs.cpio" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3" \
    </dev/null 2>&1 | tee "$CONSOLE" | {
    while IFS= read -r line; do
        line=${line%$'\r'}
        case "$line" in
        "WW-GUEST: tests start"*)
            echo "T_BOOT=$(since "$t")" >"$WORK/boot-time"
            log "$line"
            ;;
        WW-RDMA* | WW-GUEST* | *"Kernel panic"*) log "$line" ;;
        "  out: "* | "  err: "*) echo "          $line" ;;
        esac
    done
}
QRC=${PIPESTATUS[0]}
set -e
T_ALL=$(since "$t")
if [ -f "$WORK/boot-time" ]; then
    # shellcheck disable=SC1091
    . "$WORK/boot-time"
    PHASES+=("boot=${T_BOOT}s" "tests+poweroff=$(awk -v a="$T_ALL" -v b="$T_BOOT" 'BEGIN { printf "%.1f", a - b }')s")
else
    PHASES+=("boot+tests=${T_ALL}s (tests never started)")
fi
log "qemu exited with status $QRC"

# --- 5. verdict -------------------------------------------------------------------
# Every check must be there and pass: a guest that silently skipped one
# fails too.
REQUIRED=(dummy0-up guest-isolated rxe0-link ibv-devinfo ibv-rc-pingpong probe
    auto-falls-back rdma-refuses-loopback serve-start echo ping app-reverse app-uppercase
    app-unknown-type data-small stats connect-refused auth-without-users broadcast
    bench-depth1 bench-depth32 many-connections busy-poll "data-$((DATA_BYTES / 1000000))mb"
    client-killed users-add serve-auth-start auth-token-echo auth-ok auth-anonymous-refused
    auth-wrong-token-rejected serve-sigterm)
# An auto client picks rdma only towards an rdma server.
[ "$TRANSPORT" = rdma ] && REQUIRED+=(auto-selects-rdma small-buffers)
# The comparison: the guest's setup, then every bench run without errors.
[ "$MODE" = bench ] && REQUIRED=(dummy0-up guest-isolated rxe0-link ibv-devinfo ibv-rc-pingpong
    probe bench-servers-start bench-compare)
bad=()
for c in "${REQUIRED[@]}"; do
    grep -q "^WW-RDMA: $c PASS" "$CONSOLE" || bad+=("$c")
done
if grep -q "^WW-RDMA: .* FAIL" "$CONSOLE"; then
    mapfile -t -O "${#bad[@]}" bad < <(sed -n 's/^WW-RDMA: \(.*\) FAIL.*/\1/p' "$CONSOLE")
fi
log "phases: ${PHASES[*]} total=$(since "$T0")s; host load average now $(cut -d' ' -f1-3 /proc/loadavg)"
if ((${#bad[@]} == 0)) && grep -q '^WW-RDMA-RESULT: PASS' "$CONSOLE"; then
    if [ "$MODE" = bench ]; then
        log "RESULT: PASS (rdma/socket comparison, ${#REQUIRED[@]} checks)"
    else
        log "RESULT: PASS (transport $TRANSPORT, ${#REQUIRED[@]} checks)"
    fi
    exit 0
fi
[ "$QRC" = 124 ] && log "QEMU hit the ${VM_TIMEOUT}s limit"
log "RESULT: FAIL (transport $TRANSPORT; failed or missing: $(printf '%s\n' "${bad[@]}" | sort -u | tr '\n' ' '))"
log "console: $CONSOLE"
exit 1
