//! The cross-thread [`Wake`] handle: an eventfd the ring keeps a READ armed
//! on, so a write from any thread completes that read and ends a `wait`.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use warpwire_transport::Wake;

/// Interrupts [`crate::UringTransport`]'s `wait` from another thread.
#[derive(Debug)]
pub(crate) struct EventFdWaker {
    fd: File,
}

impl EventFdWaker {
    /// A blocking eventfd: io_uring parks the READ on its poll queue. (A
    /// non-blocking one would make the READ complete at once with EAGAIN.)
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd(2) takes no pointers; the flags are valid.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: eventfd just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd: File::from(fd) })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Wake for EventFdWaker {
    fn wake(&self) {
        // Adds 1 to the counter; it cannot reach the blocking limit
        // (2^64 - 2) because every READ resets it. A failure means the
        // descriptor is gone with the transport: nothing to wake.
        let _ = (&self.fd).write(&1u64.to_ne_bytes());
    }
}
