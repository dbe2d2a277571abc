//! Streaming decoder under arbitrary bytes and arbitrary chunking.
//!
//! Input layout: byte 0 picks the payload limit, byte 1 seeds the chunk
//! sizes, the rest is the stream. Checks, beyond "no panic": the decoder
//! never buffers more than its limit, never stalls while holding a full
//! buffer, and the frames it returns re-encode to exactly the bytes they
//! came from (so nothing is accepted that was not on the wire).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warpwire_frame::{Decoder, DecoderConfig};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max_payload = [0u32, 16, 64, 1024, 1 << 20][usize::from(data[0]) % 5];
    let mut seed = u32::from(data[1]) | 1;
    let stream = &data[2..];
    let cfg = DecoderConfig { max_payload, read_chunk: 256 };
    let mut d = Decoder::new(cfg);
    let mut reencoded = Vec::new();
    let mut pos = 0;
    'outer: while pos < stream.len() {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let want = 1 + (seed >> 16) as usize % 300;
        let end = (pos + want).min(stream.len());
        let mut chunk = &stream[pos..end];
        pos = end;
        while !chunk.is_empty() {
            let n = d.feed(chunk);
            chunk = &chunk[n..];
            assert!(d.buffered() <= cfg.buffer_limit());
            let mut progressed = n > 0;
            loop {
                match d.decode() {
                    Ok(Some(f)) => {
                        progressed = true;
                        f.encode_into(&mut reencoded);
                    }
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
            assert!(progressed, "decoder stalled with a full buffer");
        }
    }
    assert!(stream.starts_with(&reencoded));
});

trait EncodeInto {
    fn encode_into(&self, out: &mut Vec<u8>);
}

impl EncodeInto for warpwire_frame::Frame {
    fn encode_into(&self, out: &mut Vec<u8>) {
        let bytes = self.to_bytes().expect("a decoded frame re-encodes");
        out.extend_from_slice(&bytes);
    }
}
