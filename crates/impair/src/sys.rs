//! AF_PACKET sockets and poll(2): all of this crate's FFI and `unsafe`.

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::Error;

/// Receive buffer asked for with `SO_RCVBUFFORCE`: a TCP burst at veth
/// speed queues hundreds of frames while the bridge sleeps in its delay
/// queue; the 208 KiB default holds only ~90 full-size frames (each costs
/// its truesize, about 2.3 KiB).
const RCVBUF_BYTES: libc::c_int = 8 << 20;

/// Send buffer: the kernel charges each queued transmit against it, and an
/// exhausted one makes `send` fail with `EAGAIN`.
const SNDBUF_BYTES: libc::c_int = 4 << 20;

/// One frame read by [`PacketSocket::recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The frame's full length; larger than the buffer when truncated.
    pub len: usize,
    /// The frame is one this host sent (`PACKET_OUTGOING`), not one that
    /// arrived on the wire: the bridge must not forward it again.
    pub outgoing: bool,
    /// The kernel flagged the frame `TP_STATUS_CSUMNOTREADY`: its transport
    /// checksum is partial (veth, `CHECKSUM_PARTIAL`).
    pub csum_not_ready: bool,
}

/// Outcome of [`PacketSocket::send`] that is not a fatal error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The kernel took the frame.
    Sent,
    /// The socket's send buffer is full: retry when poll says `POLLOUT`.
    WouldBlock,
    /// Larger than the egress interface's MTU (`EMSGSIZE`): a GSO
    /// super-frame; the endpoints need TSO/GSO off.
    TooBig,
    /// Dropped on the way out (`ENOBUFS`, `ENETDOWN`): a lost frame, as on a
    /// real wire.
    Dropped,
}

/// A raw `AF_PACKET`/`SOCK_RAW` socket bound to one interface, non-blocking,
/// seeing every protocol (`ETH_P_ALL`) but not its own transmissions.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifname: String,
}

impl PacketSocket {
    /// Opens a packet socket on interface `ifname` of the current network
    /// namespace.
    pub fn open(ifname: &str) -> Result<Self, Error> {
        let c_name = CString::new(ifname).map_err(|_| Error::BadInterfaceName {
            ifname: ifname.to_owned(),
        })?;
        // SAFETY: c_name is a valid NUL-terminated string for the call.
        let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if ifindex == 0 {
            return Err(Error::NoSuchInterface {
                ifname: ifname.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        let os_err = |op: &'static str| Error::Socket {
            op,
            ifname: ifname.to_owned(),
            source: io::Error::last_os_error(),
        };
        // Protocol 0: the socket receives nothing until bind() names the
        // interface and ETH_P_ALL, so no other interface's frames get queued
        // in between.
        // SAFETY: plain syscall with constant arguments; no pointers.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(os_err("socket(AF_PACKET)"));
        }
        // SAFETY: raw is a freshly created descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sock = PacketSocket {
            fd,
            ifname: ifname.to_owned(),
        };

        // Kernel >= 4.20; the sll_pkttype check in recv() covers older ones.
        let _ignored_where_unsupported =
            sock.set_int(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1);
        sock.set_int(libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)
            .map_err(|()| os_err("setsockopt(PACKET_AUXDATA)"))?;
        if sock
            .set_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF_BYTES)
            .is_err()
        {
            // Not CAP_NET_ADMIN: take what rmem_max allows.
            let _best_effort = sock.set_int(libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF_BYTES);
        }
        if sock
            .set_int(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SNDBUF_BYTES)
            .is_err()
        {
            let _best_effort = sock.set_int(libc::SOL_SOCKET, libc::SO_SNDBUF, SNDBUF_BYTES);
        }

        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: addr is a valid sockaddr_ll and the length passed is its
        // size; the descriptor is open.
        let rc = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(os_err("bind"));
        }
        Ok(sock)
    }

    /// The interface this socket is bound to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Reads one frame into `buf` without blocking; `Ok(None)` when none is
    /// queued. A frame longer than `buf` is truncated and reported with its
    /// full length.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<Received>, Error> {
        // SAFETY: all-zero is a valid sockaddr_ll (plain old data).
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // u64 elements keep the control buffer aligned for cmsghdr.
        let mut control = [0u64; 8];
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&raw mut addr).cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control);
        let len = loop {
            // SAFETY: msg points at addr, iov (which covers exactly buf) and
            // control, all live and writable for the duration of the call.
            let n = unsafe {
                libc::recvmsg(
                    self.fd.as_raw_fd(),
                    &raw mut msg,
                    libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                )
            };
            if let Ok(len) = usize::try_from(n) {
                // With MSG_TRUNC this is the frame's full length.
                break len;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                _ => {
                    return Err(Error::Io {
                        op: "recvmsg",
                        ifname: self.ifname.clone(),
                        source: err,
                    });
                }
            }
        };
        let mut csum_not_ready = false;
        // SAFETY: msg was filled in by a successful recvmsg; CMSG_FIRSTHDR
        // and CMSG_NXTHDR only walk within msg_control/msg_controllen.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
        while !cmsg.is_null() {
            // SAFETY: cmsg is non-null and points inside the control buffer.
            let hdr = unsafe { &*cmsg };
            if hdr.cmsg_level == libc::SOL_PACKET && hdr.cmsg_type == libc::PACKET_AUXDATA {
                // SAFETY: a PACKET_AUXDATA message carries a tpacket_auxdata;
                // read_unaligned because CMSG_DATA need not be aligned for it.
                let aux = unsafe {
                    libc::CMSG_DATA(cmsg)
                        .cast::<libc::tpacket_auxdata>()
                        .read_unaligned()
                };
                csum_not_ready = aux.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0;
            }
            // SAFETY: as for CMSG_FIRSTHDR above.
            cmsg = unsafe { libc::CMSG_NXTHDR(&raw const msg, cmsg) };
        }
        Ok(Some(Received {
            len,
            outgoing: addr.sll_pkttype == libc::PACKET_OUTGOING,
            csum_not_ready,
        }))
    }

    /// Sends one complete Ethernet frame out of the bound interface without
    /// blocking.
    pub fn send(&self, frame: &[u8]) -> Result<SendOutcome, Error> {
        loop {
            // SAFETY: frame is a live slice; the kernel reads frame.len()
            // bytes from it.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                return Ok(SendOutcome::Sent);
            }
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => Ok(SendOutcome::WouldBlock),
                Some(libc::EMSGSIZE) => Ok(SendOutcome::TooBig),
                Some(libc::ENOBUFS | libc::ENETDOWN) => Ok(SendOutcome::Dropped),
                _ => Err(Error::Io {
                    op: "send",
                    ifname: self.ifname.clone(),
                    source: err,
                }),
            };
        }
    }

    /// Frames the kernel dropped because the receive buffer was full, since
    /// the previous call (`PACKET_STATISTICS` resets on read).
    pub fn take_kernel_drops(&self) -> u64 {
        // SAFETY: tpacket_stats is plain old data; all-zero is valid.
        let mut stats: libc::tpacket_stats = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: stats and len are live and writable; len holds stats' size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut stats).cast(),
                &raw mut len,
            )
        };
        if rc < 0 { 0 } else { u64::from(stats.tp_drops) }
    }

    fn set_int(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> Result<(), ()> {
        // SAFETY: value is a live c_int and the length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 { Err(()) } else { Ok(()) }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Readiness of one socket after [`poll`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    /// A frame (or an error) is waiting to be read.
    pub readable: bool,
    /// The send buffer has room again.
    pub writable: bool,
}

/// Waits up to `timeout` (with sub-millisecond precision: ppoll) until one
/// of `socks` is readable, or writable where `want_write` says so. A signal
/// ends the wait early and reports nothing ready.
pub fn poll(
    socks: [&PacketSocket; 2],
    want_write: [bool; 2],
    timeout: Duration,
) -> Result<[Ready; 2], Error> {
    let mut fds = [0, 1].map(|i| libc::pollfd {
        fd: socks[i].as_raw_fd(),
        events: libc::POLLIN | if want_write[i] { libc::POLLOUT } else { 0 },
        revents: 0,
    });
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: fds is a live array of 2 pollfd and its length is passed; ts
    // is a live timespec; a null sigmask leaves the signal mask unchanged.
    let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &raw const ts, std::ptr::null()) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok([Ready::default(); 2]);
        }
        return Err(Error::Io {
            op: "ppoll",
            ifname: format!("{},{}", socks[0].ifname, socks[1].ifname),
            source: err,
        });
    }
    // POLLERR/POLLHUP count as readable: recv reports the error.
    let bad = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
    Ok(fds.map(|p| Ready {
        readable: p.revents & (libc::POLLIN | bad) != 0,
        writable: p.revents & libc::POLLOUT != 0,
    }))
}

/// Timer slack for this thread, in nanoseconds: the kernel may delay a
/// ppoll wake-up by this much to batch timers. The default 50 us would be a
/// quarter of the default 200 us link delay.
const TIMER_SLACK_NS: libc::c_ulong = 1_000;

/// Lowers this thread's timer slack to 1 us so delays are
/// honoured to about a microsecond. Best effort: failure only costs
/// precision.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and no pointers.
    let _best_effort = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS) };
}
