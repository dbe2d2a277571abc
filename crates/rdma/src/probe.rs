//! The rdma probe: is rdma-core usable, which devices and ports exist,
//! are they active, and does an RDMA device own the configured address.

use std::ffi::CStr;
use std::net::{IpAddr, SocketAddr};
use std::ptr;

use rdma_sys as sys;
use warpwire_transport::{BackendKind, ProbeReport};

use crate::sys::{EventChannel, RawAddr, check};

/// One device port as the probe saw it.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Device name (rxe0, mlx5_0).
    pub name: String,
    /// Port number (from 1).
    pub port: u8,
    /// Whether the port is ACTIVE.
    pub active: bool,
    /// "Ethernet" (RoCE) or "InfiniBand".
    pub link_layer: &'static str,
    /// The first non-zero GIDs, as IPv6 text, with their index.
    pub gids: Vec<(u32, String)>,
}

/// Lists every device's ports, or says why there are none. On a kernel
/// without RDMA, `ibv_get_device_list` fails with ENOSYS: that is "no
/// RDMA here", not an error.
pub fn probe_devices() -> Result<Vec<DeviceInfo>, String> {
    let mut n = 0i32;
    // SAFETY: n receives the count; the list is freed below.
    let list = unsafe { sys::ibv_get_device_list(&mut n) };
    if list.is_null() {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOSYS) => "no RDMA support in this kernel (ENOSYS)".into(),
            _ => format!("ibv_get_device_list: {e}"),
        });
    }
    let mut out = Vec::new();
    for i in 0..n.max(0) as usize {
        // SAFETY: the list holds n device pointers.
        let dev = unsafe { *list.add(i) };
        // SAFETY: dev is a live device from the list.
        let name = unsafe { CStr::from_ptr(sys::ibv_get_device_name(dev)) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: as above; NULL means it cannot be opened.
        let ctx = unsafe { sys::ibv_open_device(dev) };
        if ctx.is_null() {
            continue;
        }
        // SAFETY: plain data, filled by the query.
        let mut dattr: sys::ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: ctx is open.
        let ports = if unsafe { sys::ibv_query_device(ctx, &mut dattr) } == 0 {
            dattr.phys_port_cnt
        } else {
            1
        };
        for port in 1..=ports {
            // SAFETY: plain data, filled by the query.
            let mut pattr: sys::ibv_port_attr = unsafe { std::mem::zeroed() };
            // SAFETY: ctx is open and pattr is the size the call expects.
            if unsafe { sys::___ibv_query_port(ctx, port, &mut pattr) } != 0 {
                continue;
            }
            let mut gids = Vec::new();
            for idx in 0..pattr.gid_tbl_len.clamp(0, 16) {
                // SAFETY: plain data, filled by the query.
                let mut gid: sys::ibv_gid = unsafe { std::mem::zeroed() };
                // SAFETY: ctx is open, idx within the table.
                if unsafe { sys::ibv_query_gid(ctx, port, idx, &mut gid) } != 0 {
                    continue;
                }
                // SAFETY: every bit pattern of the union's raw view is valid.
                let raw = unsafe { gid.raw };
                if raw != [0; 16] {
                    gids.push((idx as u32, std::net::Ipv6Addr::from(raw).to_string()));
                }
            }
            out.push(DeviceInfo {
                name: name.clone(),
                port,
                active: pattr.state == sys::ibv_port_state::IBV_PORT_ACTIVE,
                link_layer: if pattr.link_layer == 2 {
                    "Ethernet"
                } else {
                    "InfiniBand"
                },
                gids,
            });
        }
        // SAFETY: opened above, nothing else uses it.
        unsafe { sys::ibv_close_device(ctx) };
    }
    // SAFETY: from ibv_get_device_list, freed once.
    unsafe { sys::ibv_free_device_list(list) };
    Ok(out)
}

/// Which RDMA device owns `ip`, by binding an rdma_cm id to it.
fn device_of(ip: IpAddr) -> Result<String, String> {
    let ch = EventChannel::new().map_err(|e| format!("rdma_create_event_channel: {e}"))?;
    let id = ch.create_id().map_err(|e| format!("rdma_create_id: {e}"))?;
    let mut raw = RawAddr::new(SocketAddr::new(ip, 0));
    // SAFETY: the id is live; raw holds a valid sockaddr.
    let bound = check(unsafe { sys::rdma_bind_addr(id, raw.as_mut_ptr()) });
    // SAFETY: the id is live; verbs names the device once bound.
    let verbs = unsafe { (*id).verbs };
    let result = match bound {
        Err(e) => Err(format!("{ip} is not usable for RDMA: {e}")),
        Ok(()) if verbs.is_null() => Err(format!("no RDMA device has address {ip}")),
        // SAFETY: verbs is a live context of a live id.
        Ok(()) => Ok(
            unsafe { CStr::from_ptr(sys::ibv_get_device_name((*verbs).device)) }
                .to_string_lossy()
                .into_owned(),
        ),
    };
    // SAFETY: the id is ours and has no events pending.
    unsafe { sys::rdma_destroy_id(id) };
    result
}

/// Which RDMA device routes to `dst` (rdma_resolve_addr, waited for up
/// to `within`).
fn device_towards(dst: IpAddr, within: std::time::Duration) -> Result<String, String> {
    let ch = EventChannel::new().map_err(|e| format!("rdma_create_event_channel: {e}"))?;
    let id = ch.create_id().map_err(|e| format!("rdma_create_id: {e}"))?;
    let mut raw = RawAddr::new(SocketAddr::new(dst, 0));
    let ms = within.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: the id is live; raw holds a valid sockaddr for the call.
    let mut result: Result<String, String> =
        check(unsafe { sys::rdma_resolve_addr(id, ptr::null_mut(), raw.as_mut_ptr(), ms) })
            .map(|()| String::new())
            .map_err(|e| format!("no RDMA route to {dst}: {e}"));
    if result.is_ok() {
        result = Err(format!("no RDMA route to {dst} (timed out)"));
        let deadline = std::time::Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let mut pfd = libc::pollfd {
                fd: ch.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
            match ch.next() {
                // The same two steps as a connect: address, then route;
                // the id must end up on a device (loopback destinations
                // resolve an address but may have no usable route).
                Ok(Some(ev)) if ev.kind == sys::rdma_cm_event_type::RDMA_CM_EVENT_ADDR_RESOLVED => {
                    // SAFETY: the id is live and has resolved its address.
                    if let Err(e) = check(unsafe { sys::rdma_resolve_route(id, ms) }) {
                        result = Err(format!("no RDMA route to {dst}: {e}"));
                        break;
                    }
                }
                Ok(Some(ev))
                    if ev.kind == sys::rdma_cm_event_type::RDMA_CM_EVENT_ROUTE_RESOLVED =>
                {
                    // SAFETY: the id is live and routed: verbs names its device.
                    let verbs = unsafe { (*id).verbs };
                    result = if verbs.is_null() {
                        Err(format!("no RDMA device routes to {dst}"))
                    } else {
                        // SAFETY: verbs is a live context of a live id.
                        Ok(
                            unsafe { CStr::from_ptr(sys::ibv_get_device_name((*verbs).device)) }
                                .to_string_lossy()
                                .into_owned(),
                        )
                    };
                    break;
                }
                Ok(Some(ev)) => {
                    result = Err(format!(
                        "no RDMA route to {dst} ({})",
                        crate::sys::event_name(ev.kind)
                    ));
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    result = Err(format!("rdma_get_cm_event: {e}"));
                    break;
                }
            }
        }
    }
    // SAFETY: the id is ours; every event fetched was acked.
    unsafe { sys::rdma_destroy_id(id) };
    result
}

/// Which address the probe checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAddr {
    /// An address to listen on: an RDMA device must own it (unspecified
    /// addresses pass).
    Local(IpAddr),
    /// A server to reach: an RDMA device must route to it.
    Remote(IpAddr),
}

/// The rdma probe: rdma-core compiled in, devices present, a port active,
/// and, when `addr` is given, an RDMA device owning or routing to it.
pub fn probe(addr: Option<ProbeAddr>) -> ProbeReport {
    let kind = BackendKind::Rdma;
    let devices = match probe_devices() {
        Ok(d) if d.is_empty() => return ProbeReport::unavailable(kind, "no RDMA devices"),
        Ok(d) => d,
        Err(why) => return ProbeReport::unavailable(kind, why),
    };
    let list = devices
        .iter()
        .map(|d| {
            format!(
                "{} port {} {} {}{}",
                d.name,
                d.port,
                if d.active { "ACTIVE" } else { "DOWN" },
                d.link_layer,
                d.gids
                    .iter()
                    .map(|(i, g)| format!(" gid[{i}]={g}"))
                    .collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    if !devices.iter().any(|d| d.active) {
        return ProbeReport::unavailable(kind, format!("no active port: {list}"));
    }
    let checked = match addr {
        Some(ProbeAddr::Local(ip)) if !ip.is_unspecified() => {
            device_of(ip).map(|dev| format!("{ip} on {dev}; "))
        }
        Some(ProbeAddr::Remote(ip)) => device_towards(ip, std::time::Duration::from_millis(500))
            .map(|dev| format!("{ip} via {dev}; ")),
        _ => Ok(String::new()),
    };
    match checked {
        Ok(prefix) => ProbeReport::available(kind, format!("{prefix}{list}")),
        Err(why) => ProbeReport::unavailable(kind, format!("{why}; {list}")),
    }
}
