//! `warpwire probe` for AF_XDP: can this machine (and interface) run it?

use std::io;

use warpwire_transport::{BackendKind, ProbeReport};

use crate::config::{XDP_PACKET_HEADROOM, XdpConfig};
use crate::prog::{self, NETDEV_XDP_ACT_BASIC, NETDEV_XDP_ACT_XSK_ZEROCOPY};
use crate::sys;

/// Probes AF_XDP in the calling thread's network namespace.
///
/// Without an interface: whether AF_XDP sockets can be created at all
/// (never "available": the backend needs `--iface`). With one: the
/// interface exists, an AF_XDP socket can be created, which attach modes
/// and zero-copy the driver advertises, the receive queue count, and any
/// XDP program already attached. Opens nothing that outlives the call.
pub fn probe(ifname: Option<&str>) -> ProbeReport {
    let kind = BackendKind::Xdp;
    crate::native_log::install();
    let socket = sys::af_xdp_socket_creatable();
    let Some(ifname) = ifname else {
        return match socket {
            Ok(()) => ProbeReport::unavailable(
                kind,
                "AF_XDP sockets can be created here; choose an interface with --iface <name>",
            ),
            Err(e) => ProbeReport::unavailable(kind, socket_problem(&e)),
        };
    };
    if let Err(e) = XdpConfig::new(ifname, 0).validate() {
        return ProbeReport::unavailable(kind, e.to_string());
    }
    let iface = match sys::iface_info(ifname) {
        Ok(i) => i,
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
            return ProbeReport::unavailable(
                kind,
                format!("no interface {ifname} in this network namespace"),
            );
        }
        Err(e) => {
            return ProbeReport::unavailable(kind, format!("cannot read interface {ifname}: {e}"));
        }
    };
    if let Err(e) = socket {
        return ProbeReport::unavailable(kind, socket_problem(&e));
    }

    let driver = sys::driver_name(ifname).unwrap_or_else(|_| "unknown driver".to_owned());
    let queues = match sys::rx_queue_count(ifname) {
        Ok(Some(n)) => format!("{n} rx queue(s)"),
        _ => sysfs_queue_count(ifname).map_or_else(
            || "rx queues unknown".to_owned(),
            |n| format!("{n} rx queue(s)"),
        ),
    };
    let mut detail = format!(
        "{ifname} ({driver}, ifindex {}, MTU {}, {queues})",
        iface.index, iface.mtu
    );
    match prog::query(iface.index) {
        Ok(q) if q.feature_flags == 0 => {
            detail.push_str("; native XDP support unknown (kernel does not report XDP features), generic XDP always available");
        }
        Ok(q) => {
            let native = q.feature_flags & NETDEV_XDP_ACT_BASIC != 0;
            let zc = q.feature_flags & NETDEV_XDP_ACT_XSK_ZEROCOPY != 0;
            detail.push_str(&format!(
                "; native XDP {}, zero-copy {}, generic XDP always available",
                if native { "yes" } else { "no" },
                if zc { "yes" } else { "no (copy mode)" },
            ));
        }
        Err(e) => detail.push_str(&format!("; XDP features unknown ({e})")),
    }
    match prog::program_on(iface.index) {
        Ok(None) => detail.push_str("; no XDP program attached"),
        Ok(Some(p)) => {
            let name = p.name.as_deref().unwrap_or("?");
            let what = if p.af_xdp {
                "an AF_XDP program: stale unless another process uses the interface; open replaces it"
            } else {
                "not an AF_XDP program: open refuses unless replace_foreign_program is set"
            };
            detail.push_str(&format!(
                "; XDP program {name} (id {}, {}) attached, {what}",
                p.id, p.mode
            ));
        }
        Err(e) => detail.push_str(&format!("; attached XDP program unknown ({e})")),
    }
    let default_capacity = XdpConfig::new(ifname, 0).frame_size - XDP_PACKET_HEADROOM;
    if iface.mtu + 14 > default_capacity {
        detail.push_str(&format!(
            "; MTU {} needs frame_size 4096 (default frames hold {default_capacity} bytes)",
            iface.mtu
        ));
    }
    ProbeReport::available(kind, detail)
}

fn socket_problem(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EAFNOSUPPORT) => {
            "the kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS)".to_owned()
        }
        Some(libc::EPERM | libc::EACCES) => {
            "AF_XDP sockets need CAP_NET_RAW (run as root)".to_owned()
        }
        _ => format!("cannot create an AF_XDP socket: {e}"),
    }
}

/// Queue count from sysfs; only right when sysfs belongs to the calling
/// thread's network namespace (true for `ip netns exec`, not for a bare
/// `setns`), hence only a fallback for drivers without ethtool channels.
fn sysfs_queue_count(ifname: &str) -> Option<usize> {
    let dir = std::fs::read_dir(format!("/sys/class/net/{ifname}/queues")).ok()?;
    Some(
        dir.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_interface_it_asks_for_one_or_says_why_not() {
        let r = probe(None);
        assert_eq!(r.kind, BackendKind::Xdp);
        assert!(r.compiled_in);
        assert!(!r.available);
        assert!(
            r.detail.contains("--iface") || r.detail.contains("AF_XDP"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn a_missing_interface_is_unavailable() {
        let r = probe(Some("wwnosuch0"));
        assert!(!r.available);
        assert!(r.detail.contains("wwnosuch0"), "{}", r.detail);
    }

    #[test]
    fn an_invalid_name_is_unavailable() {
        let r = probe(Some("a/b"));
        assert!(!r.available);
    }
}
