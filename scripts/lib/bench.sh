# Shared by the benchmark scripts (sourced, not run): installing the
# packages a benchmark needs, the veth pair between two namespaces that
# the veth benchmarks run across, and the EAL arguments of a memif end.

# ww_memif_eal ROLE LCORE PREFIX SOCKET: EAL arguments for one end (ROLE
# server or client) of a net_memif link on the socket file SOCKET, on
# lcore LCORE, without hugepages, runtime directory
# /var/run/dpdk/PREFIX (the caller removes it on exit).
ww_memif_eal() {
    echo "--no-huge --no-pci -m 256 --no-shconf --file-prefix $3 -l $2" \
        "--log-level=lib.eal:error --log-level=pmd.net.memif:error" \
        "--vdev=net_memif0,role=$1,socket=$4,socket-abstract=no"
}

# Installs the Debian packages among "$@" that are missing, without letting
# their maintainer scripts start a service (a system nginx or redis would
# hold the ports the benchmark's own servers use): policy-rc.d exiting 101
# forbids it during the install, and is removed after unless it was there.
ww_apt_install() {
    local missing=() p had_policy=0
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    [ -e /usr/sbin/policy-rc.d ] && had_policy=1
    if [ "$had_policy" = 0 ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
    fi
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}" >&2
    if [ "$had_policy" = 0 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

# ww_veth_pair A B VA VB: namespaces A and B joined by the veth pair VA
# (in A, 10.77.0.1/24) and VB (in B, 10.77.0.2/24), both up with loopback.
# The caller deletes the namespaces on exit (which removes the pair).
ww_veth_pair() {
    local a=$1 b=$2 va=$3 vb=$4 ns
    ip netns add "$a"
    ip netns add "$b"
    ip link add "$va" netns "$a" type veth peer name "$vb" netns "$b"
    ip -n "$a" addr add 10.77.0.1/24 dev "$va"
    ip -n "$b" addr add 10.77.0.2/24 dev "$vb"
    for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
    ip -n "$a" link set "$va" up
    ip -n "$b" link set "$vb" up
}
