//! [`Mempool`]: a pool of packet buffers (mbufs).

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use warpwire_dpdk_sys as sys;

use crate::eal::Eal;
use crate::error::{DpdkError, RteErrno};

/// A DPDK packet-buffer pool (`rte_pktmbuf_pool_create`).
///
/// A cheap handle: ports (their receive queues fill from it) and devices
/// (they allocate transmit buffers from it) keep clones, so the pool is
/// freed only after the last of them. Size it for every buffer that can be
/// out at once: the receive descriptors of every queue using it, the
/// frames in flight on transmit, each device's pending and stashed frames
/// and the per-lcore caches.
#[derive(Clone)]
pub struct Mempool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    ptr: NonNull<sys::rte_mempool>,
    name: String,
    size: u32,
    data_room: u16,
    _eal: Eal,
}

// SAFETY: a pktmbuf pool uses DPDK's default ring ops (multi-producer,
// multi-consumer), so allocating and freeing from any thread is safe; the
// pointer itself is only freed in Drop, when no handle is left.
unsafe impl Send for PoolInner {}
// SAFETY: as above; shared access only calls thread-safe mempool functions.
unsafe impl Sync for PoolInner {}

impl std::fmt::Debug for Mempool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mempool")
            .field("name", &self.inner.name)
            .field("size", &self.inner.size)
            .field("data_room", &self.inner.data_room)
            .finish()
    }
}

impl Mempool {
    /// Creates a pool of `n` mbufs (`2^k - 1` is the most memory-efficient)
    /// with a per-lcore cache of `cache` (0 to 512; threads that are not
    /// EAL lcores bypass it) and `data_room` bytes of buffer each, headroom
    /// ([`HEADROOM`](crate::HEADROOM), 128) included: 2176
    /// (`RTE_MBUF_DEFAULT_BUF_SIZE`) holds a 1518-byte frame.
    ///
    /// # Errors
    /// [`DpdkError::Mempool`]: no memory (raise `-m`), a name already in
    /// use or too long (26 bytes), `cache` too large.
    pub fn new(
        eal: &Eal,
        name: &str,
        n: u32,
        cache: u32,
        data_room: u16,
    ) -> Result<Self, DpdkError> {
        let err = |source| DpdkError::Mempool {
            name: name.to_owned(),
            n,
            data_room,
            source,
        };
        let cname = CString::new(name).map_err(|_| DpdkError::NulInArgument {
            arg: name.to_owned(),
        })?;
        // SAFETY: EAL is initialised (`eal` is live); cname is a valid
        // C string copied by DPDK; rte_socket_id has no preconditions.
        let ptr = unsafe {
            sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                n,
                cache,
                0,
                data_room,
                i32::try_from(sys::rte_socket_id()).unwrap_or(-1),
            )
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| err(RteErrno::last()))?;
        Ok(Self {
            inner: Arc::new(PoolInner {
                ptr,
                name: name.to_owned(),
                size: n,
                data_room,
                _eal: eal.clone(),
            }),
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Mbufs in the pool.
    pub fn size(&self) -> u32 {
        self.inner.size
    }

    /// Buffer bytes per mbuf, headroom included.
    pub fn data_room(&self) -> u16 {
        self.inner.data_room
    }

    /// Largest frame an mbuf holds in one segment (data room minus
    /// headroom).
    pub fn frame_capacity(&self) -> usize {
        usize::from(self.inner.data_room).saturating_sub(crate::HEADROOM)
    }

    /// Mbufs free right now (in the pool and the lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is live; the call only reads counters.
        unsafe { sys::rte_mempool_avail_count(self.inner.ptr.as_ptr()) }
    }

    /// Mbufs out of the pool right now.
    pub fn in_use(&self) -> u32 {
        // SAFETY: as above.
        unsafe { sys::rte_mempool_in_use_count(self.inner.ptr.as_ptr()) }
    }

    /// The raw pool, valid while this handle lives.
    pub fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.inner.ptr.as_ptr()
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // SAFETY: the last handle is gone: no port (stopped and closed
        // before, since ports hold a handle) or device uses the pool.
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) };
    }
}
