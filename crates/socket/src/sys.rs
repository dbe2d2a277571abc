//! The crate's two calls that need `unsafe`: a read-only file mapping, and
//! a receive into a buffer's uninitialised capacity.

use std::fs::File;
use std::io;

use bytes::BytesMut;
use memmap2::{Mmap, MmapOptions};
use mio::net::TcpStream;
use socket2::SockRef;

/// Maps `len` bytes of `file` from `offset`, read-only and shared, with
/// the pages populated at once (`MAP_POPULATE`: one call instead of a page
/// fault per few pages while the bytes are sent).
pub(crate) fn map_read_only(file: &File, offset: u64, len: usize) -> io::Result<Mmap> {
    let mut opts = MmapOptions::new();
    opts.offset(offset).len(len).populate();
    // SAFETY: the mapping is read-only, of a regular file the caller opened
    // for reading and sized from its current length. Rust's rule that the
    // bytes behind a `&[u8]` do not change holds unless another process
    // rewrites or truncates the file while it is mapped; that is the
    // contract of any mapped reader, documented in `file.rs` (a truncation
    // raises SIGBUS, a rewrite may send mixed bytes).
    let map = unsafe { opts.map(file) }?;
    // Read front to back once: let the kernel read ahead and drop behind.
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(map)
}

/// `recv(2)` of at most `max` bytes from `stream`, appended to `buf`
/// without initialising the room first (zeroing it was a `memset` of every
/// byte received). Returns how many bytes were appended.
pub(crate) fn recv_append(stream: &TcpStream, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let room = &mut buf.spare_capacity_mut()[..max];
    let n = SockRef::from(stream).recv(room)?.min(max);
    // SAFETY: `recv` initialised the first `n` bytes of `room`, the spare
    // capacity right after `buf`'s end (`n <= max <= room`, reserved
    // above), so the bytes up to `len + n` are initialised.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}
