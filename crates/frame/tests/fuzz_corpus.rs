//! Replays the committed cargo-fuzz corpus (fuzz/corpus/decoder) through the
//! same checks as the fuzz target, on stable, in every test run: inputs the
//! fuzzer once found interesting stay regression tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use warpwire_frame::{Decoder, DecoderConfig};

fn check(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let max_payload = [0u32, 16, 64, 1024, 1 << 20][usize::from(data[0]) % 5];
    let mut seed = u32::from(data[1]) | 1;
    let stream = &data[2..];
    let cfg = DecoderConfig {
        max_payload,
        read_chunk: 256,
    };
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
                        reencoded.extend_from_slice(&f.to_bytes().unwrap());
                    }
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
            assert!(progressed, "decoder stalled with a full buffer");
        }
    }
    assert!(stream.starts_with(&reencoded));
}

#[test]
fn replay_fuzz_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decoder");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz corpus is committed") {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 16, "corpus has only {n} inputs");
}
