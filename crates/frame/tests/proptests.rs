//! Property tests: round-trips, chunking independence, totality.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use proptest::prelude::*;
use warpwire_frame::{Decoder, DecoderConfig, Flags, Frame, MessageType, MetaBuilder};

fn arb_frame() -> impl Strategy<Value = Frame> {
    let ty = prop_oneof![
        Just(MessageType::ECHO),
        Just(MessageType::ECHO_REPLY),
        Just(MessageType::BROADCAST),
        Just(MessageType::DATA),
        (0x80u8..=0xFE).prop_map(MessageType),
        (0x0Du8..0x80).prop_map(MessageType),
        any::<u64>().prop_map(|_| MessageType::PING),
        Just(MessageType::STATS),
    ];
    let meta = prop::collection::btree_map(
        "[a-z]{0,12}",
        prop::collection::vec(any::<u8>(), 0..40),
        0..6,
    );
    (
        ty,
        0u8..4,
        any::<u64>(),
        meta,
        prop::collection::vec(any::<u8>(), 0..3000),
    )
        .prop_map(|(ty, flags, id, meta, mut body)| {
            let (min, max) = ty.body_len_bounds();
            if let Some(max) = max {
                body.truncate(max as usize);
            }
            body.resize(body.len().max(min as usize), 0);
            let mut m = MetaBuilder::new();
            for (k, v) in &meta {
                m.push(k, v).expect("unique, short");
            }
            Frame::new(ty, id, body)
                .with_flags(Flags::from_bits(flags).expect("low bits"))
                .with_meta(m.finish())
        })
}

fn decode_all(
    stream: &[u8],
    cuts: &[usize],
    max_payload: u32,
) -> (Vec<Frame>, Option<warpwire_frame::DecodeError>) {
    let mut d = Decoder::new(DecoderConfig {
        max_payload,
        read_chunk: 1024,
    });
    let mut out = Vec::new();
    let mut pos = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    bounds.push(stream.len());
    bounds.sort_unstable();
    for end in bounds {
        let mut chunk = &stream[pos.min(end)..end];
        pos = pos.max(end);
        loop {
            let n = d.feed(chunk);
            chunk = &chunk[n..];
            loop {
                match d.decode() {
                    Ok(Some(f)) => out.push(f),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
            if chunk.is_empty() {
                break;
            }
            assert!(n > 0 || d.buffered() > 0, "decoder stalled");
        }
    }
    (out, None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn roundtrip(frames in prop::collection::vec(arb_frame(), 1..8)) {
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.to_bytes().expect("encodable").to_vec()).collect();
        let (got, err) = decode_all(&stream, &[], 1 << 20);
        prop_assert_eq!(err, None);
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn any_chunking_same_frames(frames in prop::collection::vec(arb_frame(), 1..6), cuts in prop::collection::vec(any::<usize>(), 0..40)) {
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.to_bytes().expect("encodable").to_vec()).collect();
        let (whole, _) = decode_all(&stream, &[], 1 << 20);
        let (pieces, err) = decode_all(&stream, &cuts, 1 << 20);
        prop_assert_eq!(err, None);
        prop_assert_eq!(&pieces, &whole);
        prop_assert_eq!(pieces, frames);
    }

    #[test]
    fn any_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..4096), cuts in prop::collection::vec(any::<usize>(), 0..8), limit in 0u32..5000) {
        let _ = decode_all(&data, &cuts, limit);
    }

    #[test]
    fn valid_prefix_then_garbage(frame in arb_frame(), garbage in prop::collection::vec(any::<u8>(), 1..64)) {
        let mut stream = frame.to_bytes().expect("encodable").to_vec();
        stream.extend_from_slice(&garbage);
        let (got, _) = decode_all(&stream, &[], 1 << 20);
        prop_assert_eq!(got.first(), Some(&frame));
    }

    #[test]
    fn single_bit_flip_never_yields_a_different_frame(frame in arb_frame(), bit in any::<usize>()) {
        let mut stream = frame.to_bytes().expect("encodable").to_vec();
        let bit = bit % (stream.len() * 8);
        stream[bit / 8] ^= 1 << (bit % 8);
        let (got, err) = decode_all(&stream, &[], 1 << 20);
        // CRC-32 detects every single-bit error: nothing decodes, or (a length
        // field grew) the decoder waits for bytes that never come.
        prop_assert!(got.is_empty(), "corrupt frame accepted: {:?}", got);
        let _ = err;
    }
}

#[test]
fn empty_meta_and_body() {
    let f = Frame::new(MessageType::ECHO, 0, Bytes::new());
    let (got, err) = decode_all(&f.to_bytes().expect("encodable"), &[], 0);
    assert_eq!(err, None);
    assert_eq!(got, [f]);
}
