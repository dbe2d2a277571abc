//! Reading a file to send it: chunks that are slices of a read-only memory
//! mapping, so the bytes go from the page cache to the transport without
//! first being copied into the process.
//!
//! `read(2)` into a buffer per chunk was a fifth of `client data --file`'s
//! CPU on loopback (the copy out of the page cache, and the page faults and
//! zeroing of fresh buffers), on a thread that shares the cores with the
//! I/O thread and, on one machine, the server. A mapping costs one
//! `mmap(2)` with `MAP_POPULATE` per window instead.
//!
//! The file is mapped a window at a time (a multiple of the chunk size, at
//! least [`WINDOW`]), and a window is unmapped when the last chunk cut from
//! it is dropped, that is once it has been sent: the process maps at most
//! the windows its chunks in flight span, whatever the file's size.
//!
//! What is not a regular file (a pipe, a terminal, `/proc` files, which
//! report a size of 0), or cannot be mapped, is read as before.
//!
//! The caveat of every mapped reader: if another process truncates the
//! file during the transfer, touching a page past its new end raises
//! `SIGBUS` and ends this process; if it rewrites the file, a chunk may
//! carry bytes of both versions.

use std::fs::File;
use std::io::{self, Read};

use bytes::Bytes;

/// Bytes mapped at a time, at least (rounded up to a whole number of
/// chunks).
pub const WINDOW: usize = 8 << 20;

/// The chunks of a file, in order: each `chunk` bytes long, except the
/// last, which is shorter (possibly empty) where the file ends.
#[derive(Debug)]
pub struct FileChunks {
    file: File,
    chunk: usize,
    window: usize,
    /// Where the next window starts in the file.
    pos: u64,
    /// What is left of the current window.
    rest: Bytes,
    /// Whether the file is read through mappings (else with `read`).
    mapped: bool,
}

impl FileChunks {
    /// Chunks of `chunk` bytes (at least 1) of `file`, from its current
    /// position when it is not mapped, from its start when it is.
    pub fn new(file: File, chunk: usize) -> io::Result<Self> {
        let chunk = chunk.max(1);
        let meta = file.metadata()?;
        // `/proc` and `/sys` files say they are empty and are not.
        let mapped = meta.is_file() && meta.len() > 0;
        Ok(Self {
            file,
            chunk,
            window: WINDOW.div_ceil(chunk).max(1).saturating_mul(chunk),
            pos: 0,
            rest: Bytes::new(),
            mapped,
        })
    }

    /// Whether the file is being sent from mappings.
    pub fn is_mapped(&self) -> bool {
        self.mapped
    }

    /// The next chunk: `chunk` bytes, fewer only where the file ends (as
    /// it is when that chunk's window is mapped), empty after the end.
    pub fn next_chunk(&mut self) -> io::Result<Bytes> {
        if self.rest.is_empty() && self.mapped {
            match self.map_next() {
                Ok(()) => {}
                // Nothing of this file has been mapped yet: read it.
                Err(_) if self.pos == 0 => self.mapped = false,
                Err(e) => return Err(e),
            }
        }
        if !self.mapped {
            return read_chunk(&mut self.file, self.chunk);
        }
        let n = self.chunk.min(self.rest.len());
        Ok(self.rest.split_to(n))
    }

    /// Maps the next window into `rest` (leaves it empty at the end).
    fn map_next(&mut self) -> io::Result<()> {
        // The size now, not at open: a file that grows is sent as far as
        // it reaches, as `read` would.
        let len = self.file.metadata()?.len();
        let Some(left) = len.checked_sub(self.pos).filter(|&l| l > 0) else {
            return Ok(());
        };
        let size = usize::try_from(left).unwrap_or(usize::MAX).min(self.window);
        let map = crate::sys::map_read_only(&self.file, self.pos, size)?;
        self.pos += size as u64;
        self.rest = Bytes::from_owner(map);
        // A window whose mapping is shorter than asked (cannot happen with
        // a regular file) would end the transfer early and say so.
        if self.rest.len() != size {
            return Err(io::Error::other(
                "the file mapping is shorter than the file",
            ));
        }
        Ok(())
    }
}

/// Up to `chunk` bytes (fewer only at the end of the input), in a buffer of
/// their own: `read_to_end` into spare capacity, so no zeroing first (it
/// retries on `Interrupted` and stops at the end of the input).
pub fn read_chunk(input: &mut impl Read, chunk: usize) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(chunk);
    input.take(chunk as u64).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::{Seek, Write};

    fn temp_file(bytes: &[u8]) -> File {
        let mut f = unnamed_temp_file().0;
        f.write_all(bytes).unwrap();
        f.rewind().unwrap();
        f
    }

    /// A file in the system's temporary directory, deleted at once so
    /// nothing is left behind, and the name it had (unique to the thread).
    fn unnamed_temp_file() -> (File, String) {
        let name = format!(
            "ww-file-chunks-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let path = std::env::temp_dir().join(&name);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        (f, name)
    }

    fn all(mut c: FileChunks) -> Vec<Bytes> {
        let mut out = Vec::new();
        loop {
            let b = c.next_chunk().unwrap();
            if b.is_empty() {
                return out;
            }
            out.push(b);
        }
    }

    #[test]
    fn a_mapped_file_comes_back_in_order_across_windows() {
        // Three windows and a bit, with a chunk that does not divide a
        // page, so windows start at unaligned offsets.
        let chunk = 1000;
        let len = 3 * WINDOW.div_ceil(chunk) * chunk + 1234;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4093) as u8).collect();
        let c = FileChunks::new(temp_file(&data), chunk).unwrap();
        assert!(c.is_mapped());
        let chunks = all(c);
        assert!(chunks[..chunks.len() - 1].iter().all(|b| b.len() == chunk));
        assert_eq!(chunks.last().unwrap().len(), 234);
        assert_eq!(chunks.concat(), data);
    }

    #[test]
    fn an_exact_multiple_ends_with_an_empty_chunk() {
        let data = vec![5u8; 4096];
        let mut c = FileChunks::new(temp_file(&data), 1024).unwrap();
        for _ in 0..4 {
            assert_eq!(&c.next_chunk().unwrap()[..], &[5u8; 1024][..]);
        }
        assert!(c.next_chunk().unwrap().is_empty());
        assert!(c.next_chunk().unwrap().is_empty());
    }

    #[test]
    fn an_empty_file_and_a_pipe_are_read() {
        let c = FileChunks::new(temp_file(b""), 64).unwrap();
        assert!(!c.is_mapped());
        assert!(all(c).is_empty());

        let mut child = std::process::Command::new("printf")
            .arg("hello, pipe")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out: std::process::ChildStdout = child.stdout.take().unwrap();
        let file = File::from(std::os::fd::OwnedFd::from(out));
        let c = FileChunks::new(file, 4).unwrap();
        assert!(!c.is_mapped());
        assert_eq!(all(c).concat(), b"hello, pipe");
        child.wait().unwrap();
    }

    #[test]
    fn a_growing_file_is_sent_as_far_as_it_reaches() {
        let mut f = temp_file(&[1u8; 100]);
        let mut c = FileChunks::new(f.try_clone().unwrap(), 64).unwrap();
        // The first window is the file as it is now: 64 + 36 bytes.
        assert_eq!(c.next_chunk().unwrap().len(), 64);
        f.seek(io::SeekFrom::End(0)).unwrap();
        f.write_all(&[2u8; 50]).unwrap();
        assert_eq!(c.next_chunk().unwrap().len(), 36);
        assert_eq!(&c.next_chunk().unwrap()[..], &[2u8; 50][..]);
        assert!(c.next_chunk().unwrap().is_empty());
    }

    #[test]
    fn windows_are_unmapped_once_their_chunks_are_dropped() {
        let chunk = 64 << 10;
        let (mut f, name) = unnamed_temp_file();
        f.write_all(&vec![9u8; 3 * WINDOW]).unwrap();
        let mut c = FileChunks::new(f, chunk).unwrap();
        // This test's file only: the other tests may run beside it.
        let maps = || {
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .filter(|l| l.contains(&format!("{name} ")))
                .count()
        };
        let before = maps();
        assert_eq!(before, 0);
        let first = c.next_chunk().unwrap();
        assert_eq!(maps(), before + 1);
        for _ in 1..WINDOW / chunk {
            drop(c.next_chunk().unwrap());
        }
        // The next window is mapped; the first stays while a chunk of it
        // is alive.
        let second = c.next_chunk().unwrap();
        assert_eq!(maps(), before + 2);
        drop(first);
        assert_eq!(maps(), before + 1);
        drop(second);
        drop(c);
        assert_eq!(maps(), before);
    }
}
