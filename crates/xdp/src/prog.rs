//! The XDP program on an interface: finding out what is attached, removing
//! a stale one, and the process-wide record of the interfaces this process
//! has devices on.
//!
//! libxdp attaches its default AF_XDP program (`xsk_def_prog`, or the
//! libxdp dispatcher carrying it when a bpffs is mounted) when the first
//! socket binds, keeps a reference count inside the program, and detaches
//! it when the count drops to zero. A process killed with SIGKILL never
//! drops its count, so the program stays: it keeps steering the queue into
//! an XSKMAP with no sockets (traffic vanishes), and the next libxdp user
//! would just take another reference and leave it behind again. So before
//! binding the first device on an interface this process detaches any
//! AF_XDP program it finds there. Devices of the *same* process on several
//! queues of one interface share the program (libxdp's design); the
//! registry below tells "ours" from "stale".
//!
//! Assumption: one process owns the XDP hook of an interface. A second
//! process binding other queues of the same interface would see the first
//! one's program as stale. (`ss --xdp` could tell live sockets from stale
//! programs, but needs `CONFIG_XDP_SOCKETS_DIAG`, which the CI kernels
//! lack.)

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::XdpError;
use crate::sys::{self, NetnsId};

/// `XDP_FLAGS_SKB_MODE` (linux/if_link.h).
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE` (linux/if_link.h).
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `XDP_FLAGS_HW_MODE` (linux/if_link.h).
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;

/// `NETDEV_XDP_ACT_BASIC` (linux/netdev.h): the driver runs XDP programs
/// natively.
pub(crate) const NETDEV_XDP_ACT_BASIC: u64 = 1 << 0;
/// `NETDEV_XDP_ACT_XSK_ZEROCOPY` (linux/netdev.h): AF_XDP zero-copy.
pub(crate) const NETDEV_XDP_ACT_XSK_ZEROCOPY: u64 = 1 << 3;

/// libxdp's default AF_XDP program.
const XSK_PROG_NAME: &str = "xsk_def_prog";
/// libxdp's multi-program dispatcher.
const DISPATCHER_NAME: &str = "xdp_dispatcher";

/// Where an XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (`xdpdrv`).
    Native,
    /// In the generic SKB path (`xdpgeneric`): any interface, copy only.
    Generic,
    /// Offloaded to the NIC (`xdpoffload`); never chosen by this crate.
    Offload,
}

impl AttachMode {
    fn flag(self) -> u32 {
        match self {
            Self::Native => XDP_FLAGS_DRV_MODE,
            Self::Generic => XDP_FLAGS_SKB_MODE,
            Self::Offload => XDP_FLAGS_HW_MODE,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
            Self::Offload => "offload",
        })
    }
}

/// An XDP program attached to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedProgram {
    /// Kernel program id.
    pub id: u32,
    /// Program name (`None` when it could not be read: that needs
    /// CAP_SYS_ADMIN).
    pub name: Option<String>,
    /// Where it runs.
    pub mode: AttachMode,
    /// Whether it is libxdp's AF_XDP program (alone or inside the libxdp
    /// dispatcher), i.e. one this crate may treat as stale.
    pub af_xdp: bool,
}

/// What the kernel reports for an interface's XDP hook.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct XdpQuery {
    drv_prog_id: u32,
    skb_prog_id: u32,
    hw_prog_id: u32,
    /// `NETDEV_XDP_ACT_*` bits; 0 when the kernel does not report them.
    pub feature_flags: u64,
}

impl XdpQuery {
    fn program(&self) -> Option<(u32, AttachMode)> {
        [
            (self.drv_prog_id, AttachMode::Native),
            (self.skb_prog_id, AttachMode::Generic),
            (self.hw_prog_id, AttachMode::Offload),
        ]
        .into_iter()
        .find(|&(id, _)| id != 0)
    }
}

fn neg_errno(rc: libc::c_int) -> io::Error {
    io::Error::from_raw_os_error(rc.checked_neg().unwrap_or(libc::EINVAL))
}

fn c_ifindex(ifindex: u32) -> io::Result<libc::c_int> {
    libc::c_int::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Asks the kernel (rtnetlink, netdev genetlink) about `ifindex` in the
/// calling thread's network namespace.
pub(crate) fn query(ifindex: u32) -> io::Result<XdpQuery> {
    // SAFETY: the options struct is plain old data; all-zero is valid.
    let mut opts: libxdp_sys::bpf_xdp_query_opts = unsafe { std::mem::zeroed() };
    // Up to the end of the last field: libbpf rejects options whose bytes
    // past the fields it knows are not zero, and tail padding is not
    // guaranteed to stay zero.
    opts.sz = std::mem::offset_of!(libxdp_sys::bpf_xdp_query_opts, xdp_zc_max_segs)
        + std::mem::size_of::<u32>();
    // SAFETY: `opts` is valid for writes for the call and `sz` states its
    // size, which is how libbpf knows which fields it may fill.
    let rc = unsafe { libxdp_sys::bpf_xdp_query(c_ifindex(ifindex)?, 0, &mut opts) };
    if rc < 0 {
        return Err(neg_errno(rc));
    }
    Ok(XdpQuery {
        drv_prog_id: opts.drv_prog_id,
        skb_prog_id: opts.skb_prog_id,
        hw_prog_id: opts.hw_prog_id,
        feature_flags: opts.feature_flags,
    })
}

/// A descriptor for program `id` (needs CAP_SYS_ADMIN). `ENOENT`: the
/// program is gone.
fn prog_fd(id: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain bpf(2) wrapper; the result is checked.
    let fd = unsafe { libxdp_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return Err(neg_errno(fd));
    }
    // SAFETY: a fresh descriptor this function exclusively owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn prog_name(id: u32) -> io::Result<String> {
    let fd = prog_fd(id)?;
    // SAFETY: `bpf_prog_info` is plain old data; all-zero is valid (and
    // asks the kernel for no arrays).
    let mut info: libxdp_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len =
        u32::try_from(std::mem::size_of::<libxdp_sys::bpf_prog_info>()).unwrap_or(u32::MAX);
    // SAFETY: `info` is valid for writes of `len` bytes for the call.
    let rc = unsafe { libxdp_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc < 0 {
        return Err(neg_errno(rc));
    }
    let bytes: Vec<u8> = info
        .name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Whether the libxdp dispatcher on `ifindex` carries the AF_XDP program.
fn dispatcher_has_xsk(ifindex: u32) -> bool {
    let Ok(ifindex) = c_ifindex(ifindex) else {
        return false;
    };
    // SAFETY: libxdp call; the result is checked with libxdp_get_error
    // before use and closed below.
    let mp = unsafe { libxdp_sys::xdp_multiprog__get_from_ifindex(ifindex) };
    // SAFETY: libxdp_get_error accepts any pointer libxdp returned.
    if mp.is_null() || unsafe { libxdp_sys::libxdp_get_error(mp.cast()) } != 0 {
        return false;
    }
    let mut found = false;
    let mut prog = std::ptr::null_mut();
    loop {
        // SAFETY: `mp` is a live multiprog; `prog` is null or one of its
        // programs, as next_prog requires.
        prog = unsafe { libxdp_sys::xdp_multiprog__next_prog(prog, mp) };
        if prog.is_null() {
            break;
        }
        // SAFETY: `prog` is a live program of `mp`; the name is a
        // NUL-terminated string owned by it, read before `mp` is closed.
        let name = unsafe { libxdp_sys::xdp_program__name(prog) };
        // SAFETY: checked non-null; NUL-terminated per libxdp's contract.
        if !name.is_null() && unsafe { CStr::from_ptr(name) }.to_bytes() == XSK_PROG_NAME.as_bytes()
        {
            found = true;
            break;
        }
    }
    // SAFETY: `mp` came from get_from_ifindex and is closed exactly once.
    unsafe { libxdp_sys::xdp_multiprog__close(mp) };
    found
}

/// The program attached to `ifindex` (calling thread's namespace), if any.
pub(crate) fn program_on(ifindex: u32) -> io::Result<Option<AttachedProgram>> {
    let Some((id, mode)) = query(ifindex)?.program() else {
        return Ok(None);
    };
    let name = prog_name(id).ok();
    let af_xdp = match name.as_deref() {
        Some(XSK_PROG_NAME) => true,
        Some(DISPATCHER_NAME) => dispatcher_has_xsk(ifindex),
        _ => false,
    };
    Ok(Some(AttachedProgram {
        id,
        name,
        mode,
        af_xdp,
    }))
}

/// Detaches `prog` from `ifindex` if it is still the attached program (the
/// kernel compares atomically; a program that changed meanwhile is left
/// alone and reported as `EEXIST`). A program already gone is success.
pub(crate) fn detach(ifindex: u32, prog: &AttachedProgram) -> io::Result<()> {
    let fd = match prog_fd(prog.id) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    // SAFETY: the options struct is plain old data; all-zero is valid.
    let mut opts: libxdp_sys::bpf_xdp_attach_opts = unsafe { std::mem::zeroed() };
    // Up to the end of the last field (see `query`).
    opts.sz = std::mem::offset_of!(libxdp_sys::bpf_xdp_attach_opts, old_prog_fd)
        + std::mem::size_of::<libc::c_int>();
    opts.old_prog_fd = fd.as_raw_fd();
    // SAFETY: `opts` is valid for the call; with `old_prog_fd` set libbpf
    // passes XDP_FLAGS_REPLACE, so only this very program is removed.
    let rc = unsafe { libxdp_sys::bpf_xdp_detach(c_ifindex(ifindex)?, prog.mode.flag(), &opts) };
    if rc < 0 {
        return Err(neg_errno(rc));
    }
    if prog.name.as_deref() == Some(DISPATCHER_NAME) {
        // The dispatcher's pins in bpffs outlive it; libxdp removes the
        // ones whose program is gone. Best effort: leftovers are harmless.
        // SAFETY: plain libxdp call on an interface index.
        let rc = unsafe { libxdp_sys::libxdp_clean_references(c_ifindex(ifindex)?) };
        if rc < 0 {
            tracing::debug!(error = %neg_errno(rc), "libxdp_clean_references");
        }
    }
    Ok(())
}

/// The XDP program attached to `ifname` in the calling thread's network
/// namespace, or `None`. Needs CAP_SYS_ADMIN to read the program's name
/// (without it `name` is `None` and `af_xdp` false).
pub fn attached_program(ifname: &str) -> Result<Option<AttachedProgram>, XdpError> {
    crate::native_log::install();
    let index = sys::iface_info(ifname)
        .map_err(|source| XdpError::Interface {
            ifname: ifname.to_owned(),
            what: "index",
            source,
        })?
        .index;
    program_on(index).map_err(|source| XdpError::ProgramQuery {
        ifname: ifname.to_owned(),
        source,
    })
}

/// One interface this process has devices on.
#[derive(Debug)]
struct Live {
    netns: NetnsId,
    ifindex: u32,
    devices: usize,
}

/// Interfaces with live devices of this process. Held across a whole open
/// or close, so two threads cannot both believe they are the first (and
/// detach each other's program) or race libxdp's detach.
#[derive(Debug)]
pub(crate) struct Registry(Vec<Live>);

static REGISTRY: Mutex<Registry> = Mutex::new(Registry(Vec::new()));

/// Locks the registry. Nothing under the lock can leave it inconsistent
/// when unwinding, so a poisoned lock is used as is.
pub(crate) fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// Live devices of this process on the interface.
    pub(crate) fn devices_on(&self, netns: NetnsId, ifindex: u32) -> usize {
        self.0
            .iter()
            .find(|l| l.netns == netns && l.ifindex == ifindex)
            .map_or(0, |l| l.devices)
    }

    /// Records one more device on the interface.
    pub(crate) fn add(&mut self, netns: NetnsId, ifindex: u32) {
        match self
            .0
            .iter_mut()
            .find(|l| l.netns == netns && l.ifindex == ifindex)
        {
            Some(l) => l.devices += 1,
            None => self.0.push(Live {
                netns,
                ifindex,
                devices: 1,
            }),
        }
    }

    /// Records one device fewer; returns how many remain.
    pub(crate) fn remove(&mut self, netns: NetnsId, ifindex: u32) -> usize {
        let Some(i) = self
            .0
            .iter()
            .position(|l| l.netns == netns && l.ifindex == ifindex)
        else {
            return 0;
        };
        let l = &mut self.0[i];
        l.devices = l.devices.saturating_sub(1);
        let left = l.devices;
        if left == 0 {
            self.0.swap_remove(i);
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_counts_devices_per_namespace_and_interface() {
        let (_f, ns) = sys::current_netns().unwrap();
        let mut r = Registry(Vec::new());
        assert_eq!(r.devices_on(ns, 7), 0);
        r.add(ns, 7);
        r.add(ns, 7);
        r.add(ns, 8);
        assert_eq!(r.devices_on(ns, 7), 2);
        assert_eq!(r.remove(ns, 7), 1);
        assert_eq!(r.remove(ns, 7), 0);
        assert_eq!(r.devices_on(ns, 7), 0);
        assert_eq!(r.remove(ns, 7), 0, "removing an unknown entry is harmless");
        assert_eq!(r.devices_on(ns, 8), 1);
    }

    #[test]
    fn query_prefers_native_then_generic_then_offload() {
        let q = XdpQuery {
            drv_prog_id: 0,
            skb_prog_id: 5,
            hw_prog_id: 6,
            feature_flags: 0,
        };
        assert_eq!(q.program(), Some((5, AttachMode::Generic)));
        assert_eq!(XdpQuery::default().program(), None);
    }

    #[test]
    fn loopback_has_no_program() {
        // Unprivileged works too: the query is an rtnetlink dump.
        assert_eq!(attached_program("lo").unwrap(), None);
    }
}
