//! A pcap tap: every frame the stack receives or sends, in the classic
//! libpcap file format (what `tcpdump -r` and `tshark -r` read).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Magic of a microsecond-resolution pcap file.
const MAGIC_USEC: u32 = 0xa1b2_c3d4;
/// LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u32 = 1;
/// Bytes kept per frame: a full jumbo frame.
const SNAPLEN: u32 = 65_535;

/// Writes frames to a pcap file.
#[derive(Debug)]
pub struct PcapWriter {
    out: BufWriter<File>,
    /// Wall-clock time at `opened`: frame times are `wall + (now - opened)`,
    /// so the caller's monotonic `now` is all the tap needs per frame.
    wall: Duration,
    opened: Instant,
}

impl PcapWriter {
    /// Creates (truncates) `path` and writes the file header.
    pub fn create(path: &Path, now: Instant) -> io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC_USEC.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&SNAPLEN.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Self {
            out,
            wall,
            opened: now,
        })
    }

    /// Appends one frame captured at `now`.
    pub fn write(&mut self, now: Instant, frame: &[u8]) -> io::Result<()> {
        let ts = self.wall + now.saturating_duration_since(self.opened);
        let caplen = frame.len().min(SNAPLEN as usize);
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&(ts.as_secs() as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&ts.subsec_micros().to_le_bytes());
        rec[8..12].copy_from_slice(&(caplen as u32).to_le_bytes());
        rec[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        self.out.write_all(&rec)?;
        self.out.write_all(&frame[..caplen])
    }

    /// Pushes buffered records to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Drop for PcapWriter {
    fn drop(&mut self) {
        // Best effort: a failed final flush loses only the tail of a capture.
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_records() {
        let p = std::env::temp_dir().join(format!("ww-pcap-{}.pcap", std::process::id()));
        let t0 = Instant::now();
        {
            let mut w = PcapWriter::create(&p, t0).unwrap();
            w.write(t0 + Duration::from_millis(1), &[1, 2, 3]).unwrap();
            w.write(t0 + Duration::from_millis(2), &[4; 100]).unwrap();
        }
        let b = std::fs::read(&p).unwrap();
        assert_eq!(b.len(), 24 + 16 + 3 + 16 + 100);
        assert_eq!(&b[0..4], &MAGIC_USEC.to_le_bytes());
        assert_eq!(&b[20..24], &1u32.to_le_bytes());
        assert_eq!(&b[24 + 8..24 + 12], &3u32.to_le_bytes());
        std::fs::remove_file(&p).unwrap();
    }
}
