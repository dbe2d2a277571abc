//! Criterion benches of the frame codec against raw crc32fast, the floor of
//! any CRC-checked format. Run: `cargo bench -p warpwire-frame --bench frame`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use warpwire_frame::{Decoder, DecoderConfig, Frame, MessageType};

const SIZES: [(usize, &str); 3] = [(64, "64B"), (1024, "1KiB"), (64 * 1024, "64KiB")];

fn frame(len: usize) -> Frame {
    let body: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    Frame::new(MessageType::ECHO, 0x1234, body)
}

fn decoder_with(stream: &[u8]) -> Decoder {
    let mut d = Decoder::new(DecoderConfig {
        max_payload: 1 << 20,
        read_chunk: stream.len(),
    });
    d.feed(stream);
    d
}

/// ns per 64-byte-body frame, decoding a burst of 1024 buffered frames.
fn decode_64_burst(c: &mut Criterion) {
    const BURST: usize = 1024;
    let one = frame(64).to_bytes().expect("encodable");
    let stream: Vec<u8> = (0..BURST).flat_map(|_| one.iter().copied()).collect();
    let mut g = c.benchmark_group("decode_64B_burst");
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_function("decode+verify", |b| {
        b.iter_batched_ref(
            || decoder_with(&stream),
            |d| {
                while let Ok(Some(f)) = d.decode() {
                    black_box(&f);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("decode_ref+verify", |b| {
        b.iter_batched_ref(
            || decoder_with(&stream),
            |d| {
                while let Ok(Some(f)) = d.decode_ref() {
                    black_box(&f);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    for (len, name) in SIZES {
        let f = frame(len);
        let wire = f.to_bytes().expect("encodable");
        let mut g = c.benchmark_group(format!("codec_{name}"));
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function("crc32fast_only", |b| {
            b.iter(|| crc32fast::hash(black_box(&wire[..wire.len() - 4])))
        });
        let mut out = BytesMut::with_capacity(wire.len());
        g.bench_function("encode_bytesmut", |b| {
            b.iter(|| {
                out.clear();
                f.as_ref().encode(&mut out).expect("encodable");
                black_box(&out);
            })
        });
        let mut slice = vec![0u8; wire.len()];
        g.bench_function("encode_slice", |b| {
            b.iter(|| black_box(f.as_ref().encode_to_slice(&mut slice).expect("fits")))
        });
        g.bench_function("encode_vectored", |b| {
            b.iter(|| black_box(f.as_ref().encode_vectored().expect("encodable").crc()))
        });
        g.bench_function("decode", |b| {
            b.iter_batched_ref(
                || decoder_with(&wire),
                |d| black_box(d.decode().expect("valid").expect("complete")),
                BatchSize::SmallInput,
            )
        });
        g.bench_function("decode_ref", |b| {
            b.iter_batched_ref(
                || decoder_with(&wire),
                |d| black_box(d.decode_ref().expect("valid").expect("complete").request_id),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, decode_64_burst, codec);
criterion_main!(benches);
