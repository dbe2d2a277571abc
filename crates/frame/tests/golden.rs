//! Golden byte vectors, produced by an independent encoder
//! (scripts/golden.py: Python struct + zlib.crc32) and printed in
//! docs/protocol.md. The crate must encode each frame to exactly these bytes
//! and decode these bytes to exactly that frame.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use warpwire_frame::{
    Auth, AuthReply, BroadcastAck, DataAck, Decoder, ErrorBody, ErrorCode, Flags, Frame,
    MessageType, MetaBuilder, Ping, Stats,
};

const VECTORS: &[(&str, &str)] = &[
    (
        "ping",
        "5777010100000000000000080000000000000001000000003b9aca0035f41240",
    ),
    (
        "pong",
        "5777010201000000000000080000000000000001000000003b9aca00813cc134",
    ),
    (
        "echo",
        "577701030000000000000005000000000000000268656c6c6fc98edb5c",
    ),
    (
        "echo_reply",
        "577701040100000000000005000000000000000268656c6c6f338d6682",
    ),
    (
        "broadcast",
        "5777010500000000000000060000000000000003686920616c6c99158859",
    ),
    (
        "broadcast_relayed",
        "577701050000001900000006000000000000000000010466726f6d0010000102030405060708090a0b0c0d0e0f686920616c6c595c82f6",
    ),
    (
        "auth",
        "57770106000000000000000c000000000000000405616c696365733363726574b276afe5",
    ),
    (
        "auth_reply",
        "577701070100000000000011000000000000000401000102030405060708090a0b0c0d0e0f536d4043",
    ),
    (
        "data",
        "57770108020000000000000700000000000000057061796c6f6164fdafdf9a",
    ),
    (
        "data_ack",
        "57770109010000000000000800000000000000050000000000000007bde95d3d",
    ),
    ("stats", "5777010a000000000000000000000000000000063d42d0dd"),
    (
        "stats_reply",
        "5777010b0100007600000000000000000000000600080b636f6e6e656374696f6e730001310b6d657373616765735f696e0001360c6d657373616765735f6f75740001350862797465735f696e00033233300962797465735f6f75740003323530066572726f727300013008757074696d655f7300023132097472616e73706f72740006736f636b65740371431d",
    ),
    (
        "broadcast_ack",
        "5777010c010000000000000400000000000000030000000297d950b4",
    ),
    (
        "error",
        "577701ff010000000000001300000000000000070005756e6b6e6f776e20747970652030783930bb82eb1f",
    ),
    (
        "app_reverse",
        "5777018000000000000000030000000000000008616263023a47ee",
    ),
];

const SESSION: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

fn expected(name: &str) -> Frame {
    let ts = Ping {
        timestamp_ns: 1_000_000_000,
    };
    match name {
        "ping" => ts.request(1),
        "pong" => Frame::response(MessageType::PONG, 1, ts.encode().to_vec()),
        "echo" => Frame::new(MessageType::ECHO, 2, &b"hello"[..]),
        "echo_reply" => Frame::response(MessageType::ECHO_REPLY, 2, &b"hello"[..]),
        "broadcast" => Frame::new(MessageType::BROADCAST, 3, &b"hi all"[..]),
        "broadcast_relayed" => {
            let mut m = MetaBuilder::new();
            m.push("from", &SESSION).unwrap();
            Frame::new(MessageType::BROADCAST, 0, &b"hi all"[..]).with_meta(m.finish())
        }
        "auth" => Auth {
            user: "alice",
            token: b"s3cret",
        }
        .request(4)
        .unwrap(),
        "auth_reply" => AuthReply {
            ok: true,
            session_id: SESSION,
        }
        .response(4),
        "data" => {
            Frame::new(MessageType::DATA, 5, &b"payload"[..]).with_flags(Flags::ACK_REQUESTED)
        }
        "data_ack" => DataAck { bytes_accepted: 7 }.response(5),
        "stats" => Frame::new(MessageType::STATS, 6, Bytes::new()),
        "stats_reply" => Stats {
            connections: 1,
            messages_in: 6,
            messages_out: 5,
            bytes_in: 230,
            bytes_out: 250,
            errors: 0,
            uptime_s: 12,
            transport: "socket".into(),
        }
        .response(6)
        .unwrap(),
        "broadcast_ack" => BroadcastAck { recipients: 2 }.response(3),
        "error" => ErrorBody::new(ErrorCode::UnknownType, "unknown type 0x90").frame(Some(7)),
        "app_reverse" => Frame::new(MessageType(0x80), 8, &b"abc"[..]),
        other => panic!("no expectation for vector {other}"),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn every_message_type_has_a_vector() {
    let mut types: Vec<u8> = VECTORS.iter().map(|(_, h)| unhex(h)[3]).collect();
    types.sort_unstable();
    types.dedup();
    let mut want: Vec<u8> = (0x01..=0x0C).collect();
    want.extend([0x80, 0xFF]);
    assert_eq!(types, want);
}

#[test]
fn encoder_matches_vectors() {
    for (name, hex) in VECTORS {
        let mut out = BytesMut::new();
        expected(name).encode(&mut out).unwrap();
        assert_eq!(hex::encode(&out), *hex, "vector {name}");
    }
}

#[test]
fn decoder_matches_vectors() {
    for (name, hex) in VECTORS {
        let mut d = Decoder::default();
        d.feed(&unhex(hex));
        let f = d
            .decode()
            .unwrap()
            .unwrap_or_else(|| panic!("{name} incomplete"));
        assert_eq!(f, expected(name), "vector {name}");
        assert_eq!(d.decode().unwrap(), None);
    }
}

#[test]
fn decoded_vectors_parse_as_typed_bodies() {
    let mut d = Decoder::default();
    for (_, hex) in VECTORS {
        d.feed(&unhex(hex));
    }
    while let Some(f) = d.decode().unwrap() {
        match f.msg_type {
            MessageType::PING | MessageType::PONG => {
                assert_eq!(Ping::decode(&f.body).unwrap().timestamp_ns, 1_000_000_000)
            }
            MessageType::AUTH => assert_eq!(Auth::decode(&f.body).unwrap().user, "alice"),
            MessageType::AUTH_REPLY => assert!(AuthReply::decode(&f.body).unwrap().ok),
            MessageType::DATA_ACK => {
                assert_eq!(DataAck::decode(&f.body).unwrap().bytes_accepted, 7)
            }
            MessageType::BROADCAST_ACK => {
                assert_eq!(BroadcastAck::decode(&f.body).unwrap().recipients, 2)
            }
            MessageType::STATS_REPLY => {
                let s = Stats::from_meta(&f.metadata().unwrap()).unwrap();
                assert_eq!((s.bytes_in, s.transport.as_str()), (230, "socket"));
            }
            MessageType::ERROR => assert_eq!(
                ErrorBody::decode(&f.body).unwrap().error_code(),
                Some(ErrorCode::UnknownType)
            ),
            MessageType::BROADCAST if f.request_id == 0 => {
                assert_eq!(f.metadata().unwrap().get("from"), Some(&SESSION[..]))
            }
            _ => {}
        }
    }
}

/// One bad-input vector per decoder error code, each a one-byte change to a
/// valid frame (or a foreign protocol), with the code docs/protocol.md assigns.
#[test]
fn error_vectors() {
    let echo = unhex(VECTORS.iter().find(|v| v.0 == "echo").unwrap().1);
    let mut cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![(
        "http",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ErrorCode::BadMagic,
    )];
    let mut v = echo.clone();
    v[2] = 2;
    cases.push(("version", v, ErrorCode::UnsupportedVersion));
    let mut v = echo.clone();
    v[4] = 0x80;
    cases.push(("reserved flag", v, ErrorCode::Malformed));
    let mut v = echo.clone();
    v[5] = 1;
    cases.push(("reserved byte", v, ErrorCode::Malformed));
    let mut v = echo.clone();
    let n = v.len();
    v[n - 1] ^= 0xff;
    cases.push(("crc", v, ErrorCode::BadChecksum));
    let mut v = echo.clone();
    v[8..12].copy_from_slice(&(2_000_000u32).to_be_bytes());
    cases.push(("oversize", v, ErrorCode::FrameTooLarge));
    // PING with a 7-byte body, CRC recomputed so only the length is wrong.
    let mut v = unhex("57770101000000000000000700000000000000090102030405060700000000");
    let n = v.len();
    let crc = crc32fast::hash(&v[..n - 4]);
    v[n - 4..].copy_from_slice(&crc.to_be_bytes());
    cases.push(("short ping", v, ErrorCode::Malformed));
    // Metadata count says 2 entries, one present; CRC valid.
    let mut v = unhex("5777010300000008000000000000000000000009000201610001620000000000");
    let n = v.len();
    let crc = crc32fast::hash(&v[..n - 4]);
    v[n - 4..].copy_from_slice(&crc.to_be_bytes());
    cases.push(("metadata", v, ErrorCode::Malformed));

    for (name, bytes, code) in cases {
        let mut d = Decoder::default();
        d.feed(&bytes);
        let e = d.decode().expect_err(name);
        assert_eq!(e.code(), code, "{name}: {e}");
    }
}

mod hex {
    pub fn encode(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
