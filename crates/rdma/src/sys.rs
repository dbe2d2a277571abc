//! Owned wrappers over the rdma-core objects the transport uses: the
//! connection-manager event channel, a device's protection domain and
//! completion queue, registered memory, and the cm events themselves.
//! Every raw call lives here or in `transport.rs`, each with its safety
//! argument.

use std::ffi::CStr;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};

use rdma_sys as sys;

/// The last OS error, or `EIO` when a call failed without setting errno.
pub(crate) fn last_error() -> io::Error {
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(0) | None => io::Error::from_raw_os_error(libc::EIO),
        _ => e,
    }
}

/// An error for a call that returned a negative errno (or -1 + errno).
pub(crate) fn check(rc: i32) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        -1 => Err(last_error()),
        n if n < 0 => Err(io::Error::from_raw_os_error(-n)),
        n => Err(io::Error::from_raw_os_error(n)),
    }
}

/// Puts a file descriptor in non-blocking mode.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL have no memory
    // arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A connection-manager event channel in non-blocking mode.
pub(crate) struct EventChannel(NonNull<sys::rdma_event_channel>);

// SAFETY: the channel is a file descriptor wrapper; librdmacm allows its use
// from any thread, and we never use it from two at once (&mut or a Mutex).
unsafe impl Send for EventChannel {}

impl EventChannel {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain constructor; NULL means failure with errno set.
        let ch = unsafe { sys::rdma_create_event_channel() };
        let ch = NonNull::new(ch).ok_or_else(last_error)?;
        let this = Self(ch);
        set_nonblocking(this.fd())?;
        Ok(this)
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rdma_event_channel {
        self.0.as_ptr()
    }

    pub(crate) fn fd(&self) -> RawFd {
        // SAFETY: the channel is live for as long as self.
        unsafe { (*self.0.as_ptr()).fd }
    }

    /// A new TCP-port-space cm id whose events come to this channel.
    pub(crate) fn create_id(&self) -> io::Result<*mut sys::rdma_cm_id> {
        let mut id: *mut sys::rdma_cm_id = ptr::null_mut();
        // SAFETY: the channel is live; `id` is written on success.
        check(unsafe {
            sys::rdma_create_id(
                self.0.as_ptr(),
                &mut id,
                ptr::null_mut(),
                sys::rdma_port_space::RDMA_PS_TCP,
            )
        })?;
        Ok(id)
    }

    /// The next event, acknowledged, or None when there is none now.
    pub(crate) fn next(&self) -> io::Result<Option<CmEvent>> {
        let mut ev: *mut sys::rdma_cm_event = ptr::null_mut();
        // SAFETY: the channel is live and non-blocking; `ev` is written on
        // success only.
        let rc = unsafe { sys::rdma_get_cm_event(self.0.as_ptr(), &mut ev) };
        if rc != 0 {
            let e = last_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: rdma_get_cm_event succeeded, so `ev` points to an event we
        // own until rdma_ack_cm_event; we copy what we need out of it first
        // (the private data lives in the event's memory).
        let copy = unsafe {
            let e = &*ev;
            let conn = &e.param.conn;
            let private = if conn.private_data.is_null() || conn.private_data_len == 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(
                    conn.private_data.cast::<u8>(),
                    usize::from(conn.private_data_len),
                )
                .to_vec()
            };
            CmEvent {
                id: e.id,
                kind: e.event,
                status: e.status,
                private,
            }
        };
        // SAFETY: `ev` came from rdma_get_cm_event and is acked exactly once.
        unsafe { sys::rdma_ack_cm_event(ev) };
        Ok(Some(copy))
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        // SAFETY: every id on this channel has been destroyed by its owner
        // before the channel drops (the transport drops connections first).
        unsafe { sys::rdma_destroy_event_channel(self.0.as_ptr()) };
    }
}

/// A cm event, copied and already acknowledged.
#[derive(Debug)]
pub(crate) struct CmEvent {
    pub id: *mut sys::rdma_cm_id,
    pub kind: sys::rdma_cm_event_type::Type,
    pub status: i32,
    pub private: Vec<u8>,
}

/// The name librdmacm gives an event type.
pub(crate) fn event_name(kind: sys::rdma_cm_event_type::Type) -> String {
    // SAFETY: rdma_event_str returns a static string for any value.
    unsafe { CStr::from_ptr(sys::rdma_event_str(kind)) }
        .to_string_lossy()
        .into_owned()
}

/// The name of a completion status.
pub(crate) fn wc_status_name(status: sys::ibv_wc_status::Type) -> String {
    // SAFETY: ibv_wc_status_str returns a static string for any value.
    unsafe { CStr::from_ptr(sys::ibv_wc_status_str(status)) }
        .to_string_lossy()
        .into_owned()
}

/// A socket address in the C layout rdma_cm takes.
pub(crate) struct RawAddr {
    storage: libc::sockaddr_storage,
}

impl RawAddr {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        // SAFETY: sockaddr_storage is plain data; all-zero is valid.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for
                // sockaddr_in.
                unsafe { ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above for sockaddr_in6.
                unsafe { ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
            }
        }
        Self { storage }
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&raw mut self.storage).cast()
    }
}

/// Reads a C socket address.
///
/// # Safety
/// `sa` must point to a valid sockaddr of the family it announces.
pub(crate) unsafe fn socket_addr(sa: *const libc::sockaddr) -> Option<SocketAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees a valid sockaddr; we read the variant
    // its family names.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*sa.cast::<libc::sockaddr_in>();
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let sin6 = &*sa.cast::<libc::sockaddr_in6>();
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// The local and peer addresses of a cm id.
///
/// # Safety
/// `id` must be a live cm id.
pub(crate) unsafe fn id_addrs(
    id: *mut sys::rdma_cm_id,
) -> (Option<SocketAddr>, Option<SocketAddr>) {
    // SAFETY: the caller guarantees `id` is live; route.addr holds the
    // source and destination sockaddrs rdma_cm filled in.
    unsafe {
        let addr = &(*id).route.addr;
        let src = socket_addr(&raw const addr.src_addr_union.src_addr);
        let dst = socket_addr(&raw const addr.dst_addr_union.dst_addr);
        (src, dst)
    }
}

/// One device's protection domain and the completion queue (with its
/// completion channel) every queue pair of one transport on it shares.
pub(crate) struct Device {
    pub ctx: *mut sys::ibv_context,
    pub pd: NonNull<sys::ibv_pd>,
    pub channel: NonNull<sys::ibv_comp_channel>,
    pub cq: NonNull<sys::ibv_cq>,
    /// Capacity of the CQ.
    pub cq_size: u32,
    /// CQ entries the connections on this device can occupy.
    pub cq_used: u32,
    /// Completion events taken from the channel and not yet acked.
    pub unacked_events: u32,
    /// The CQ is armed for one notification.
    pub armed: bool,
    pub name: String,
}

impl Device {
    /// Sets up a PD and a CQ of `cqe` entries on `ctx` (owned by rdma_cm:
    /// the context outlives every id on it, and we never close it).
    pub(crate) fn new(ctx: *mut sys::ibv_context, cqe: u32) -> io::Result<Self> {
        // SAFETY: ctx comes from a live cm id (id->verbs), which librdmacm
        // keeps open for the process.
        let name = unsafe { CStr::from_ptr(sys::ibv_get_device_name((*ctx).device)) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ctx is a live device context.
        let pd = NonNull::new(unsafe { sys::ibv_alloc_pd(ctx) }).ok_or_else(last_error)?;
        // SAFETY: as above.
        let channel = match NonNull::new(unsafe { sys::ibv_create_comp_channel(ctx) }) {
            Some(c) => c,
            None => {
                let e = last_error();
                // SAFETY: pd was just allocated and has no users.
                unsafe { sys::ibv_dealloc_pd(pd.as_ptr()) };
                return Err(e);
            }
        };
        // The device may cap the size: ask for what it allows.
        // SAFETY: ibv_device_attr is plain data; ctx is live.
        let max_cqe = unsafe {
            let mut attr: sys::ibv_device_attr = std::mem::zeroed();
            if sys::ibv_query_device(ctx, &mut attr) == 0 {
                attr.max_cqe.max(1) as u32
            } else {
                cqe
            }
        };
        let size = cqe.min(max_cqe);
        // SAFETY: ctx and channel are live; NULL means failure.
        let cq =
            unsafe { sys::ibv_create_cq(ctx, size as i32, ptr::null_mut(), channel.as_ptr(), 0) };
        let Some(cq) = NonNull::new(cq) else {
            let e = last_error();
            // SAFETY: both were just created and have no users.
            unsafe {
                sys::ibv_destroy_comp_channel(channel.as_ptr());
                sys::ibv_dealloc_pd(pd.as_ptr());
            }
            return Err(e);
        };
        let dev = Self {
            ctx,
            pd,
            channel,
            // SAFETY: the CQ is live; cqe holds the real capacity.
            cq_size: unsafe { (*cq.as_ptr()).cqe }.max(0) as u32,
            cq,
            cq_used: 0,
            unacked_events: 0,
            armed: false,
            name,
        };
        // The fd must not block get_cq_event; on failure Drop frees all.
        set_nonblocking(dev.fd())?;
        Ok(dev)
    }

    /// Whether a connection occupying `share` CQ entries fits. Half the
    /// CQ is kept free for completions of queue pairs that are already
    /// destroyed but whose flushed entries are not polled yet.
    pub(crate) fn has_room(&self, share: u32) -> bool {
        self.cq_used + share <= self.cq_size / 2
    }

    /// The completion channel's fd (readable after an armed completion).
    pub(crate) fn fd(&self) -> RawFd {
        // SAFETY: the channel is live for as long as self.
        unsafe { (*self.channel.as_ptr()).fd }
    }

    /// Takes pending completion events off the channel (non-blocking).
    pub(crate) fn take_events(&mut self) {
        loop {
            let mut cq: *mut sys::ibv_cq = ptr::null_mut();
            let mut ctx: *mut libc::c_void = ptr::null_mut();
            // SAFETY: non-blocking channel; on success it names our CQ.
            let rc = unsafe { sys::ibv_get_cq_event(self.channel.as_ptr(), &mut cq, &mut ctx) };
            if rc != 0 {
                break;
            }
            self.unacked_events += 1;
            self.armed = false;
        }
        if self.unacked_events >= 64 {
            self.ack_events();
        }
    }

    fn ack_events(&mut self) {
        if self.unacked_events > 0 {
            // SAFETY: acknowledges events this CQ delivered, as counted.
            unsafe { sys::ibv_ack_cq_events(self.cq.as_ptr(), self.unacked_events) };
            self.unacked_events = 0;
        }
    }

    /// Arms the CQ to signal the channel on the next completion.
    pub(crate) fn arm(&mut self) -> io::Result<()> {
        if !self.armed {
            // SAFETY: the CQ is live.
            check(unsafe { sys::ibv_req_notify_cq(self.cq.as_ptr(), 0) })?;
            self.armed = true;
        }
        Ok(())
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.ack_events();
        // SAFETY: every QP using the CQ and PD was destroyed and every MR
        // deregistered before the device drops (connections drop first);
        // events are acked above.
        unsafe {
            sys::ibv_destroy_cq(self.cq.as_ptr());
            sys::ibv_destroy_comp_channel(self.channel.as_ptr());
            sys::ibv_dealloc_pd(self.pd.as_ptr());
        }
    }
}

/// Page-aligned memory registered with a protection domain: a connection's
/// receive slots followed by its send slots.
pub(crate) struct Region {
    ptr: NonNull<u8>,
    layout: std::alloc::Layout,
    mr: NonNull<sys::ibv_mr>,
}

impl Region {
    pub(crate) fn new(pd: NonNull<sys::ibv_pd>, len: usize) -> io::Result<Self> {
        let layout = std::alloc::Layout::from_size_align(len.max(4096), 4096)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        let access = sys::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0 as i32;
        // SAFETY: the memory is ours for the region's life and stays at the
        // same address; the MR is deregistered before it is freed.
        let mr =
            unsafe { sys::ibv_reg_mr(pd.as_ptr(), ptr.as_ptr().cast(), layout.size(), access) };
        let Some(mr) = NonNull::new(mr) else {
            let e = last_error();
            // SAFETY: allocated above with this layout, never registered.
            unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
            return Err(e);
        };
        Ok(Self { ptr, layout, mr })
    }

    pub(crate) fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    pub(crate) fn lkey(&self) -> u32 {
        // SAFETY: the MR is live for as long as self.
        unsafe { (*self.mr.as_ptr()).lkey }
    }

    /// Slot `index` of `size` bytes starting `offset` bytes into the region.
    ///
    /// # Safety
    /// The slot must be in bounds and owned by the CPU for the returned
    /// borrow (not posted to the adapter); the channel's bookkeeping asks
    /// only for such slots.
    pub(crate) unsafe fn slot(&mut self, offset: usize, size: usize, index: u16) -> &mut [u8] {
        let at = offset + usize::from(index) * size;
        debug_assert!(at + size <= self.layout.size());
        // SAFETY: in bounds (caller), and no other reference to this slot
        // exists while the adapter does not hold it; other slots, which the
        // adapter may be writing, are not covered by the slice.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(at), size) }
    }
}

/// [`crate::chan::Slots`] over one part (receive or send slots) of a region.
pub(crate) struct RegionSlots<'a> {
    pub region: &'a mut Region,
    pub offset: usize,
    pub size: usize,
    pub count: u16,
}

impl crate::chan::Slots for RegionSlots<'_> {
    fn slot(&mut self, index: u16) -> &mut [u8] {
        assert!(index < self.count, "slot {index} out of {}", self.count);
        // SAFETY: index < count keeps it in the part; the channel asks only
        // for slots the CPU owns (completed receives, unposted send slots).
        unsafe { self.region.slot(self.offset, self.size, index) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the QP that used this MR is destroyed before the region
        // drops (Conn drops its cm id first), so no DMA can still target it.
        unsafe {
            sys::ibv_dereg_mr(self.mr.as_ptr());
            std::alloc::dealloc(self.ptr.as_ptr(), self.layout);
        }
    }
}
