//! Thin, checked wrappers over the Linux calls the device needs besides
//! xsk-rs: interface ioctls, the network-namespace switch used at teardown,
//! socket options, the TX kick and `poll(2)`.
//!
//! Everything here reads the *calling thread's* network namespace. That is
//! deliberate: `/sys/class/net` shows the namespace sysfs was mounted in,
//! not the thread's, so a thread that `setns`'d into a namespace would read
//! the wrong interface there. Ioctls on a socket created by the thread
//! itself always answer for the thread's namespace.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// `SO_BUSY_POLL` (asm-generic/socket.h; x86-64 and arm64 use the generic
/// values). Spelled out because libc does not export it for every target.
const SO_BUSY_POLL: libc::c_int = 46;
/// `SO_PREFER_BUSY_POLL` (asm-generic/socket.h, Linux 5.11).
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
/// `SO_BUSY_POLL_BUDGET` (asm-generic/socket.h, Linux 5.11).
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;
/// `ETHTOOL_GCHANNELS` (linux/ethtool.h).
const ETHTOOL_GCHANNELS: u32 = 0x3c;
/// `ETHTOOL_GDRVINFO` (linux/ethtool.h).
const ETHTOOL_GDRVINFO: u32 = 0x03;

/// `struct ethtool_drvinfo` (linux/ethtool.h).
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// `struct ethtool_channels` (linux/ethtool.h).
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// What the kernel says about one interface, read in the calling thread's
/// network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IfaceInfo {
    pub index: u32,
    pub mtu: u32,
    pub mac: [u8; 6],
}

/// A datagram socket to aim interface ioctls at.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor this function exclusively owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `ifreq` naming `ifname` (the caller validated it: shorter than
/// `IFNAMSIZ`, no NUL).
fn ifreq_for(ifname: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (a name array and a union of
    // integers, sockaddrs and a pointer); all-zero is a valid value of it.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, &src) in req
        .ifr_name
        .iter_mut()
        .zip(ifname.as_bytes().iter().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req
}

/// One interface ioctl.
///
/// # Safety
///
/// For `SIOCETHTOOL`, `req.ifr_ifru.ifru_data` must point to a live,
/// writable ethtool command struct of the type its `cmd` implies.
unsafe fn ioctl(fd: &OwnedFd, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `req` is a valid, exclusively borrowed `ifreq` for the whole
    // call (what every SIOCGIF* request reads and writes); the caller
    // vouches for the ethtool buffer behind SIOCETHTOOL.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, req as *mut libc::ifreq) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Index, MTU and MAC address of `ifname`. A missing interface is
/// `ENODEV`.
pub(crate) fn iface_info(ifname: &str) -> io::Result<IfaceInfo> {
    let sock = ioctl_socket()?;
    let mut req = ifreq_for(ifname);
    // SAFETY: not SIOCETHTOOL; the request only uses the `ifreq`.
    unsafe { ioctl(&sock, libc::SIOCGIFINDEX, &mut req) }?;
    // SAFETY: SIOCGIFINDEX succeeded, so the kernel wrote `ifru_ifindex`.
    let index = unsafe { req.ifr_ifru.ifru_ifindex };
    let mut req = ifreq_for(ifname);
    // SAFETY: not SIOCETHTOOL; the request only uses the `ifreq`.
    unsafe { ioctl(&sock, libc::SIOCGIFMTU, &mut req) }?;
    // SAFETY: SIOCGIFMTU succeeded, so the kernel wrote `ifru_mtu`.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    let mut req = ifreq_for(ifname);
    // SAFETY: not SIOCETHTOOL; the request only uses the `ifreq`.
    unsafe { ioctl(&sock, libc::SIOCGIFHWADDR, &mut req) }?;
    // SAFETY: SIOCGIFHWADDR succeeded, so the kernel wrote `ifru_hwaddr`.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, &src) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *dst = src as u8;
    }
    Ok(IfaceInfo {
        index: u32::try_from(index).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?,
        mtu: u32::try_from(mtu).unwrap_or(0),
        mac,
    })
}

/// Receive queues of `ifname` (ethtool channels: dedicated RX plus
/// combined). `Ok(None)` when the driver does not report channels.
pub(crate) fn rx_queue_count(ifname: &str) -> io::Result<Option<u32>> {
    let sock = ioctl_socket()?;
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    let mut req = ifreq_for(ifname);
    req.ifr_ifru.ifru_data = (&mut ch as *mut EthtoolChannels).cast();
    // SAFETY: `ifru_data` points at `ch`, a live `ethtool_channels` that
    // matches ETHTOOL_GCHANNELS, for the whole call.
    match unsafe { ioctl(&sock, libc::SIOCETHTOOL, &mut req) } {
        Ok(()) => Ok(Some(ch.rx_count + ch.combined_count).filter(|&n| n > 0)),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The interface's driver name (`veth`, `ice`, ...), from ethtool.
pub(crate) fn driver_name(ifname: &str) -> io::Result<String> {
    let sock = ioctl_socket()?;
    let mut info = EthtoolDrvinfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    let mut req = ifreq_for(ifname);
    req.ifr_ifru.ifru_data = (&mut info as *mut EthtoolDrvinfo).cast();
    // SAFETY: `ifru_data` points at `info`, a live `ethtool_drvinfo` that
    // matches ETHTOOL_GDRVINFO, for the whole call.
    unsafe { ioctl(&sock, libc::SIOCETHTOOL, &mut req) }?;
    let end = info
        .driver
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Tries to create an AF_XDP socket (and closes it again).
pub(crate) fn af_xdp_socket_creatable() -> io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked and closed.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned here; dropping closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` lives for the call and its size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Turns on preferred busy polling for the socket: `usecs` of busy poll
/// per syscall, up to `budget` packets per NAPI poll. Returns the option
/// that failed with its error.
pub(crate) fn enable_busy_poll(
    fd: RawFd,
    usecs: u32,
    budget: u32,
) -> Result<(), (&'static str, io::Error)> {
    let clamp = |v: u32| libc::c_int::try_from(v).unwrap_or(libc::c_int::MAX);
    setsockopt_int(fd, libc::SOL_SOCKET, SO_PREFER_BUSY_POLL, 1)
        .map_err(|e| ("SO_PREFER_BUSY_POLL", e))?;
    setsockopt_int(fd, libc::SOL_SOCKET, SO_BUSY_POLL, clamp(usecs))
        .map_err(|e| ("SO_BUSY_POLL", e))?;
    setsockopt_int(fd, libc::SOL_SOCKET, SO_BUSY_POLL_BUDGET, clamp(budget))
        .map_err(|e| ("SO_BUSY_POLL_BUDGET", e))
}

/// Whether the kernel bound the socket in zero-copy mode (`XDP_OPTIONS`).
pub(crate) fn xsk_is_zero_copy(fd: RawFd) -> io::Result<bool> {
    let mut opts = libc::xdp_options { flags: 0 };
    let mut len = mem::size_of::<libc::xdp_options>() as libc::socklen_t;
    // SAFETY: `opts` and `len` are valid for writes for the call and `len`
    // holds the size of `opts`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_OPTIONS,
            (&mut opts as *mut libc::xdp_options).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
}

/// `sendto(fd, NULL, 0, MSG_DONTWAIT)`: tells the kernel the TX ring has
/// work. Copy mode transmits at most 32 frames per call.
pub(crate) fn kick_tx(fd: RawFd) -> io::Result<()> {
    // SAFETY: a zero-length send with null buffer and address is the
    // documented AF_XDP wakeup; nothing is read through the pointers.
    let rc = unsafe {
        libc::sendto(
            fd,
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `recvfrom(fd, NULL, 0, MSG_DONTWAIT)`: lets the driver refill from the
/// fill ring (need_wakeup) or runs a busy poll.
pub(crate) fn kick_rx(fd: RawFd) -> io::Result<()> {
    // SAFETY: a zero-length receive with null buffer and address is the
    // documented AF_XDP wakeup; nothing is written through the pointers.
    let rc = unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `poll(2)` timeout in milliseconds: `None` blocks, sub-millisecond
/// waits round up (a 100 µs wait must not turn into a busy loop), long
/// ones saturate.
pub(crate) fn poll_timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    }
}

/// Waits until `fd` is readable or the timeout passes. An interrupted wait
/// counts as a (spurious) wakeup.
pub(crate) fn poll_readable(fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid, exclusively borrowed pollfd for the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, poll_timeout_ms(timeout)) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EINTR) {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(rc > 0)
}

/// Identity of a network namespace (device and inode of its nsfs file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct NetnsId {
    dev: u64,
    ino: u64,
}

/// The calling thread's network namespace, held open.
pub(crate) fn current_netns() -> io::Result<(File, NetnsId)> {
    let f = File::open("/proc/thread-self/ns/net")?;
    let id = netns_id(&f)?;
    Ok((f, id))
}

fn netns_id(f: &File) -> io::Result<NetnsId> {
    let meta = f.metadata()?;
    use std::os::unix::fs::MetadataExt;
    Ok(NetnsId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Moves the calling thread into another network namespace until dropped,
/// then back. A no-op when the thread is already there.
pub(crate) struct NetnsSwitch {
    back: Option<File>,
}

impl NetnsSwitch {
    /// Enters the namespace `target` (with identity `id`) if the thread is
    /// elsewhere.
    pub(crate) fn enter(target: &File, id: NetnsId) -> io::Result<Self> {
        let (here, here_id) = current_netns()?;
        if here_id == id {
            return Ok(Self { back: None });
        }
        setns(target)?;
        Ok(Self { back: Some(here) })
    }
}

impl Drop for NetnsSwitch {
    fn drop(&mut self) {
        if let Some(back) = self.back.take()
            && let Err(e) = setns(&back)
        {
            tracing::error!(error = %e, "could not return the thread to its network namespace");
        }
    }
}

fn setns(ns: &File) -> io::Result<()> {
    // SAFETY: `ns` is an open nsfs file for a network namespace; setns only
    // reads the descriptor.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `ifname` as a C string (validated by the config: no interior NUL).
pub(crate) fn c_ifname(ifname: &str) -> io::Result<CString> {
    CString::new(ifname).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeouts_round_up_and_saturate() {
        assert_eq!(poll_timeout_ms(None), -1);
        assert_eq!(poll_timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(poll_timeout_ms(Some(Duration::from_micros(100))), 1);
        assert_eq!(poll_timeout_ms(Some(Duration::from_millis(7))), 7);
        assert_eq!(
            poll_timeout_ms(Some(Duration::from_secs(u64::MAX))),
            libc::c_int::MAX
        );
    }

    #[test]
    fn loopback_is_found_and_missing_interfaces_are_enodev() {
        let lo = iface_info("lo").unwrap();
        assert!(lo.index > 0);
        assert_eq!(lo.mac, [0; 6]);
        let e = iface_info("wwnosuch0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
    }

    #[test]
    fn netns_switch_to_own_namespace_is_a_no_op() {
        let (f, id) = current_netns().unwrap();
        let s = NetnsSwitch::enter(&f, id).unwrap();
        assert!(s.back.is_none());
    }
}
