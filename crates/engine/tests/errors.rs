//! Every error code of docs/protocol.md, each reached by a real bad input over
//! loopback, and the connection's fate afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use warpwire_engine::{ServerConfig, UserDb};
use warpwire_frame::{Auth, ErrorCode, Flags, Frame, Header, MessageType};

fn valid(ty: MessageType, id: u64, body: &[u8]) -> Vec<u8> {
    Frame::new(ty, id, body.to_vec())
        .to_bytes()
        .unwrap()
        .to_vec()
}

fn with_crc(mut v: Vec<u8>) -> Vec<u8> {
    let n = v.len();
    let crc = crc32(&v[..n - 4]);
    v[n - 4..].copy_from_slice(&crc.to_be_bytes());
    v
}

fn crc32(b: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE), independent of the crate under test.
    let mut crc = !0u32;
    for &x in b {
        crc ^= u32::from(x);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Sends `bytes` on a fresh connection; expects `code` and a close, while
/// a bystander connection keeps being served.
fn closes_with(bytes: &[u8], code: ErrorCode, id: u64) {
    let h = start(config());
    let mut bystander = Conn::connect(h.local_addr());
    assert!(bystander.alive());
    let mut c = Conn::connect(h.local_addr());
    c.send_raw(bytes);
    assert_eq!(c.recv_error(), (code, id));
    assert!(c.closed(), "{code} must close the connection");
    assert!(bystander.alive(), "other connections keep being served");
    h.stop().unwrap();
}

#[test]
fn bad_magic_from_an_http_request() {
    closes_with(
        b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
        ErrorCode::BadMagic,
        0,
    );
}

#[test]
fn unsupported_version() {
    let mut v = valid(MessageType::ECHO, 3, b"x");
    v[2] = 2;
    // The whole header arrived with the right magic: the error names it.
    closes_with(&with_crc(v), ErrorCode::UnsupportedVersion, 3);
}

#[test]
fn bad_checksum_carries_the_request_id() {
    let mut v = valid(MessageType::ECHO, 41, b"payload");
    let n = v.len();
    v[n - 2] ^= 0x10;
    closes_with(&v, ErrorCode::BadChecksum, 41);
}

#[test]
fn reserved_flag_bits() {
    let mut v = valid(MessageType::ECHO, 5, b"x");
    v[4] = 0x04;
    closes_with(&with_crc(v), ErrorCode::Malformed, 5);
}

#[test]
fn malformed_metadata() {
    // meta_len 5: count 2 but one 3-byte entry.
    let f =
        Frame::new(MessageType::ECHO, 6, &b"x"[..]).with_meta(Bytes::from_static(&[0, 2, 0, 0, 0]));
    closes_with(&f.to_bytes().unwrap(), ErrorCode::Malformed, 6);
}

#[test]
fn short_ping_body() {
    closes_with(
        &valid(MessageType::PING, 8, &[1, 2, 3]),
        ErrorCode::Malformed,
        8,
    );
}

#[test]
fn oversize_announced_in_a_header_is_refused_before_the_body() {
    let h = start(ServerConfig {
        max_frame: 4096,
        ..config()
    });
    let mut c = Conn::connect(h.local_addr());
    let hdr = Header {
        msg_type: MessageType::DATA,
        flags: Flags::NONE,
        meta_len: 0,
        body_len: 1 << 30,
        request_id: 77,
    };
    // Only the header is sent: the server must not wait for 1 GiB.
    c.send_raw(&hdr.to_bytes());
    assert_eq!(c.recv_error(), (ErrorCode::FrameTooLarge, 77));
    assert!(c.closed());
    h.stop().unwrap();
}

#[test]
fn unknown_types_are_answered_and_kept() {
    let h = start(config());
    let mut c = Conn::connect(h.local_addr());
    c.send(&Frame::new(MessageType(0x20), 1, Bytes::new()));
    assert_eq!(c.recv_error(), (ErrorCode::UnknownType, 1));
    c.send(&Frame::new(MessageType(0xA0), 2, &b"app"[..]));
    assert_eq!(c.recv_error(), (ErrorCode::UnknownType, 2));
    // A reply type sent as a request.
    c.send(&Frame::new(MessageType::ECHO_REPLY, 3, Bytes::new()));
    assert_eq!(c.recv_error(), (ErrorCode::UnknownType, 3));
    assert!(c.alive());
    h.stop().unwrap();
}

fn users_file(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("ww-err-users-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    UserDb::add_to_file(&p, "alice", b"right").unwrap();
    p
}

#[test]
fn unauthenticated_kept_then_closed_after_the_cap() {
    let users = users_file("unauth");
    let h = start(ServerConfig {
        require_auth: true,
        users_file: Some(users.clone()),
        max_unauthenticated: 3,
        ..config()
    });
    let mut c = Conn::connect(h.local_addr());
    for id in 1..=2 {
        c.send(&Frame::new(MessageType::ECHO, id, &b"x"[..]));
        assert_eq!(c.recv_error(), (ErrorCode::Unauthenticated, id));
    }
    // Still open: PING is allowed.
    assert_eq!(
        c.call(&warpwire_frame::Ping { timestamp_ns: 0 }.request(9))
            .msg_type,
        MessageType::PONG
    );
    c.send(&Frame::new(MessageType::STATS, 3, Bytes::new()));
    assert_eq!(c.recv_error(), (ErrorCode::Unauthenticated, 3));
    assert!(c.closed());
    h.stop().unwrap();
    std::fs::remove_file(users).unwrap();
}

#[test]
fn wrong_token_kept_then_closed_after_the_cap() {
    let users = users_file("fail");
    let h = start(ServerConfig {
        require_auth: true,
        users_file: Some(users.clone()),
        max_auth_failures: 2,
        ..config()
    });
    let mut c = Conn::connect(h.local_addr());
    c.send(
        &Auth {
            user: "alice",
            token: b"wrong",
        }
        .request(1)
        .unwrap(),
    );
    assert_eq!(c.recv_error(), (ErrorCode::AuthFailed, 1));
    c.send(
        &Auth {
            user: "mallory",
            token: b"right",
        }
        .request(2)
        .unwrap(),
    );
    assert_eq!(c.recv_error(), (ErrorCode::AuthFailed, 2));
    assert!(c.closed());
    // A fresh connection with the right token still works.
    let mut ok = Conn::connect(h.local_addr());
    let r = ok.call(
        &Auth {
            user: "alice",
            token: b"right",
        }
        .request(1)
        .unwrap(),
    );
    assert_eq!(r.msg_type, MessageType::AUTH_REPLY);
    assert!(ok.alive());
    h.stop().unwrap();
    std::fs::remove_file(users).unwrap();
}

#[test]
fn rate_limit_drops_frames_and_keeps_the_connection() {
    let h = start(ServerConfig {
        conn_rate: Some(5.0),
        conn_burst: Some(5.0),
        ..config()
    });
    let mut c = Conn::connect(h.local_addr());
    for id in 0..20u64 {
        c.send(&Frame::new(MessageType::ECHO, id, &b"x"[..]));
    }
    let (mut ok, mut limited) = (0, 0);
    for id in 0..20u64 {
        let f = c.recv();
        assert_eq!(f.request_id, id, "replies stay in request order");
        match f.msg_type {
            MessageType::ECHO_REPLY => ok += 1,
            MessageType::ERROR => {
                let e = warpwire_frame::ErrorBody::decode(&f.body).unwrap();
                assert_eq!(e.error_code(), Some(ErrorCode::RateLimited));
                limited += 1;
            }
            t => panic!("unexpected {t}"),
        }
    }
    assert!((5..=6).contains(&ok), "burst of 5 passes, got {ok}");
    assert_eq!(ok + limited, 20);
    std::thread::sleep(Duration::from_millis(400));
    assert!(c.alive(), "tokens refill and the connection was kept");
    h.stop().unwrap();
}

#[test]
fn idle_connections_are_closed() {
    let h = start(ServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..config()
    });
    let mut idle = Conn::connect(h.local_addr());
    let mut busy = Conn::connect(h.local_addr());
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(600) {
        assert!(busy.alive());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(idle.recv_error(), (ErrorCode::IdleTimeout, 0));
    assert!(idle.closed());
    assert!(busy.alive(), "a connection sending frames is not idle");
    h.stop().unwrap();
}

#[test]
fn connection_limit_answers_server_busy() {
    let h = start(ServerConfig {
        max_connections: 2,
        ..config()
    });
    let mut a = Conn::connect(h.local_addr());
    let mut b = Conn::connect(h.local_addr());
    assert!(a.alive() && b.alive());
    let mut c = Conn::connect(h.local_addr());
    assert_eq!(c.recv_error(), (ErrorCode::ServerBusy, 0));
    assert!(c.closed());
    drop(a);
    // The slot frees once the server sees the close.
    assert!(eventually(|| {
        let mut d = Conn::connect(h.local_addr());
        d.send(&Frame::new(MessageType::ECHO, 1, &b"x"[..]));
        d.try_recv(WAIT)
            .is_some_and(|f| f.msg_type == MessageType::ECHO_REPLY)
    }));
    assert!(b.alive());
    h.stop().unwrap();
}

#[test]
fn garbage_after_valid_frames_answers_the_valid_ones_first() {
    let h = start(config());
    let mut c = Conn::connect(h.local_addr());
    let mut bytes = valid(MessageType::ECHO, 1, b"one");
    bytes.extend(valid(MessageType::ECHO, 2, b"two"));
    bytes.extend_from_slice(b"\x00garbage");
    c.send_raw(&bytes);
    assert_eq!(c.recv().request_id, 1);
    assert_eq!(c.recv().request_id, 2);
    assert_eq!(c.recv_error().0, ErrorCode::BadMagic);
    assert!(c.closed());
    h.stop().unwrap();
}

#[test]
fn a_stalled_partial_frame_does_not_block_others() {
    let h = start(ServerConfig {
        workers: 1,
        ..config()
    });
    let mut slow = Conn::connect(h.local_addr());
    // Half a header, then silence.
    slow.send_raw(&valid(MessageType::ECHO, 1, b"x")[..10]);
    let mut c = Conn::connect(h.local_addr());
    for _ in 0..50 {
        assert!(c.alive());
    }
    h.stop().unwrap();
}
