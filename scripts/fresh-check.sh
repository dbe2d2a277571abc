#!/usr/bin/env bash
# Proves the README's test command on a pristine machine: a minimal Debian 12
# root made with debootstrap, holding only what a new machine of ours ships
# for building (gcc, g++, make, git, ca-certificates, python3, the Rust
# toolchain and cargo-nextest), and a clean `git archive` of HEAD. Inside it,
# as root, `scripts/test.sh` must install every package it needs and pass.
#
#   scripts/fresh-check.sh            # as root; 15-25 min on 2 cores
#
# A package installed by hand on this machine cannot hide a missing install
# step here: the chroot starts from debootstrap every time.
#
# What the chroot gets from the host:
#   - the Rust toolchain of `rustc --print sysroot`, bind-mounted read-only
#     (the same compiler; cargo's registry starts empty, so every crate is
#     fetched from crates.io as on a fresh machine), and cargo-nextest;
#   - /proc, /sys, /dev (rslave binds: namespaces, veth, AF_XDP, hugepages,
#     QEMU) and a tmpfs on /run and /tmp;
#   - /etc/resolv.conf and the CA bundle (crates.io and the Debian mirror,
#     through this network's TLS proxy) and the apt mirror named in the
#     host's sources.
# Everything is unmounted and the root removed on every path (trap EXIT);
# the root is deleted only once nothing is mounted below it.
#
# On success it writes target/fresh-check.ok with one line `sha256 HEX`,
# HEX being the sha256 of scripts/test.sh, Cargo.lock and every
# `git ls-files '*build.rs'` of HEAD, concatenated in that order (what the
# before-stop hook compares against the work tree).
#
# Environment: FRESH_KEEP=1 keeps the root (unmounted) for inspection;
# FRESH_MIRROR overrides the mirror; FRESH_DIR the work folder (default
# target/fresh-check).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

log() { printf '\n==> fresh-check: %s\n' "$*"; }
die() {
    printf 'fresh-check: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mounts)"
git rev-parse --verify -q HEAD >/dev/null || die "not a git checkout with a HEAD"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "fresh-check: note: the work tree has uncommitted changes; HEAD is what is checked" >&2
fi

# --- the host side: debootstrap, the mirror, the toolchain ----------------------
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap on the host"
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends debootstrap
fi

# The first Debian (not -security) URI of the host's apt sources, deb822 or
# one-line format.
host_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\// && $i !~ /security/ && $i ~ /debian/) { print $i; exit } }' "$f"
    done
}
MIRROR=${FRESH_MIRROR:-$(host_mirror | head -n 1)}
[ -n "$MIRROR" ] || die "no Debian mirror found in the host's apt sources (set FRESH_MIRROR)"

SYSROOT=$(rustc --print sysroot) || die "no rustc on the host"
[ -x "$SYSROOT/bin/cargo" ] || die "$SYSROOT/bin has no cargo"
for tool in cargo-clippy cargo-fmt rustfmt clippy-driver; do
    [ -x "$SYSROOT/bin/$tool" ] || die "the host toolchain lacks $tool (rustup component add clippy rustfmt)"
done
NEXTEST=$(command -v cargo-nextest || true)
[ -n "$NEXTEST" ] || die "no cargo-nextest on the host (a new machine of ours ships it)"

WORK=${FRESH_DIR:-$REPO/target/fresh-check}
ROOT=$WORK/root
STAMP=$REPO/target/fresh-check.ok
mkdir -p "$WORK"
rm -f "$STAMP"

# --- teardown on every path ---------------------------------------------------------
# Mount points below $ROOT, deepest first.
mounts_below() {
    awk -v r="$ROOT" '{ gsub(/\\040/, " ", $5); if ($5 == r || index($5, r "/") == 1) print $5 }' \
        /proc/self/mountinfo | sort -r
}
teardown() {
    local rc=$? m
    set +e
    if [ -d "$ROOT" ]; then
        # Namespaces the tests may have left (ww-* only; the chroot has
        # nothing else) are bind mounts under run/netns.
        for m in $(mounts_below); do umount "$m" 2>/dev/null; done
        for m in $(mounts_below); do umount -l "$m" 2>/dev/null; done
        if [ -n "$(mounts_below)" ]; then
            echo "fresh-check: still mounted below $ROOT, not removing it:" >&2
            mounts_below >&2
        elif [ "${FRESH_KEEP:-0}" = 1 ]; then
            echo "fresh-check: kept $ROOT (FRESH_KEEP=1)" >&2
        else
            rm -rf --one-file-system "$ROOT"
        fi
    fi
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

if [ -d "$ROOT" ]; then
    log "removing the root a previous run left"
    for m in $(mounts_below); do umount -l "$m"; done
    [ -z "$(mounts_below)" ] || die "mounts remain below $ROOT"
    rm -rf --one-file-system "$ROOT"
fi

# --- a pristine Debian 12 ---------------------------------------------------------
log "debootstrap bookworm (minbase + gcc g++ make git ca-certificates python3) from $MIRROR"
t=$SECONDS
debootstrap --variant=minbase --include=gcc,g++,make,git,ca-certificates,python3 \
    bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    {
        tail -n 30 "$WORK/debootstrap.log" >&2
        die "debootstrap failed (log: $WORK/debootstrap.log)"
    }
echo "debootstrap took $((SECONDS - t)) s"
# The same sources the host uses (main, updates, security), so apt inside
# sees the package versions a new machine would.
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$ROOT/etc/apt/sources.list.d/"
    : >"$ROOT/etc/apt/sources.list"
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# What the Debian installer writes and debootstrap does not: a machine
# resolves localhost.
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
# The host's CA bundle: a machine of ours trusts the TLS proxy its network
# goes through (crates.io is reached through it); the image brings that
# trust, not the project, so the chroot takes it from the host.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$ROOT/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
    # Also one file per certificate where update-ca-certificates looks, so
    # a package that rebuilds the bundle during the apt step keeps them.
    mkdir -p "$ROOT/usr/local/share/ca-certificates/host"
    awk -v dir="$ROOT/usr/local/share/ca-certificates/host" '
        /BEGIN CERTIFICATE/ { n++; f = sprintf("%s/host-%04d.crt", dir, n) }
        f { print > f }
        /END CERTIFICATE/ { close(f); f = "" }' /etc/ssl/certs/ca-certificates.crt
fi

# The toolchain and cargo-nextest, as a new machine has them.
mkdir -p "$ROOT/opt/rust" "$ROOT/usr/local/bin"
install -m 0755 "$NEXTEST" "$ROOT/usr/local/bin/cargo-nextest"

# The project, as a clean archive of HEAD.
mkdir -p "$ROOT/src/warpwire"
git archive --format=tar HEAD | tar -x -C "$ROOT/src/warpwire"

# --- mounts -------------------------------------------------------------------------
log "mounting proc, sys, dev, run, tmp and the toolchain"
# The root a mount point of its own, as / is on a machine: `ip netns exec`
# makes / a slave mount, which fails on a plain directory.
mount --bind "$ROOT" "$ROOT"
mount --make-private "$ROOT"
mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys"
mount --make-rslave "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
mount --make-rslave "$ROOT/dev"
mount -t tmpfs -o mode=0755 tmpfs "$ROOT/run"
mount -t tmpfs -o mode=1777 tmpfs "$ROOT/tmp"
mount --bind "$SYSROOT" "$ROOT/opt/rust"
mount -o remount,bind,ro "$ROOT/opt/rust"

# --- the README's test command ------------------------------------------------------
log "running scripts/test.sh inside the chroot as root"
t=$SECONDS
set +e
chroot "$ROOT" /usr/bin/env -i \
    HOME=/root \
    PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/root/.cargo \
    TERM=dumb \
    LANG=C.UTF-8 \
    CI=true \
    /bin/bash -c 'cd /src/warpwire && bash scripts/test.sh' </dev/null 2>&1 | tee "$WORK/test.log"
rc=${PIPESTATUS[0]}
set -e
echo "scripts/test.sh in the chroot: exit $rc after $((SECONDS - t)) s (log: $WORK/test.log)"
[ "$rc" -eq 0 ] || die "scripts/test.sh failed on a pristine Debian 12"

# --- the stamp ----------------------------------------------------------------------
hash=$({
    git show HEAD:scripts/test.sh
    git show HEAD:Cargo.lock
    for f in $(git ls-files '*build.rs'); do git show "HEAD:$f"; done
} | sha256sum | cut -d' ' -f1)
echo "sha256 $hash" >"$STAMP.tmp"
mv "$STAMP.tmp" "$STAMP"
log "passed: target/fresh-check.ok = sha256 $hash"
