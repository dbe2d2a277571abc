//! The crate's one call that needs `unsafe`: a read-only file mapping.

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapOptions};

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
