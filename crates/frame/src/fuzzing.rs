//! The invariants the fuzz target checks, shared with the corpus replay
//! test so both exercise exactly the same thing. Not part of the stable API.

use crate::{Decoder, DecoderConfig};

/// Runs the streaming decoder over a fuzz input. Byte 0 picks the payload
/// limit, byte 1 seeds the chunk sizes, the rest is the stream. Panics if
/// the decoder buffers more than its limit, holds memory beyond its limit or
/// beyond what the bytes received so far justify (twice them plus a read
/// chunk, whatever the headers announce), stalls with a full buffer, or
/// returns a frame that does not re-encode to exactly the bytes it came from.
#[allow(clippy::expect_used)]
pub fn check_stream(data: &[u8]) {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let Some((&seed, stream)) = rest.split_first() else {
        return;
    };
    let max_payload = [0u32, 16, 64, 1024, 1 << 20][usize::from(limit) % 5];
    let mut seed = u32::from(seed) | 1;
    let cfg = DecoderConfig {
        max_payload,
        read_chunk: 256,
    };
    let mut d = Decoder::new(cfg);
    let mut reencoded = Vec::new();
    let mut pos = 0;
    let mut received = 0;
    'outer: while pos < stream.len() {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let want = 1 + (seed >> 16) as usize % 300;
        let end = (pos + want).min(stream.len());
        let mut chunk = &stream[pos..end];
        pos = end;
        while !chunk.is_empty() {
            let n = d.feed(chunk);
            chunk = &chunk[n..];
            received += n;
            assert!(d.buffered() <= cfg.buffer_limit());
            assert!(d.allocated() <= cfg.buffer_limit());
            assert!(
                d.allocated() <= 2 * received + cfg.read_chunk,
                "{} bytes allocated after {received} received",
                d.allocated()
            );
            let mut progressed = n > 0;
            loop {
                match d.decode() {
                    Ok(Some(f)) => {
                        progressed = true;
                        // expect() is safe: a decoded frame's lengths fit their fields.
                        reencoded
                            .extend_from_slice(&f.to_bytes().expect("a decoded frame re-encodes"));
                    }
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
            assert!(progressed, "decoder stalled with a full buffer");
        }
    }
    assert!(
        stream.starts_with(&reencoded),
        "a decoded frame differs from its bytes"
    );
}
