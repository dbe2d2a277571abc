//! The peer over loopback, in process: every answer it gives, pipelining,
//! and the ERROR-then-close path for bytes that are not frames. A plain
//! blocking `std` client, every wait bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use warpwire_frame::{
    DataAck, Decoder, ErrorBody, ErrorCode, Flags, Frame, MessageType, MetaBuilder,
};

/// Upper bound for any single wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

/// A runtime serving on a free loopback port; dropping it stops the peer.
fn start() -> (Runtime, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(warpwire_peer_tokio::run(listener, std::future::pending()));
    (rt, addr)
}

struct Conn {
    s: TcpStream,
    dec: Decoder,
}

impl Conn {
    fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self {
            s,
            dec: Decoder::default(),
        }
    }

    fn send(&mut self, f: &Frame) {
        self.s.write_all(&f.to_bytes().unwrap()).unwrap();
    }

    /// The next frame, or `None` once the peer has closed the connection.
    fn recv(&mut self) -> Option<Frame> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(f) = self.dec.decode().expect("peer sent a malformed frame") {
                return Some(f);
            }
            assert!(Instant::now() < deadline, "no frame within {WAIT:?}");
            match self.s.read(self.dec.read_buf()) {
                Ok(0) => return None,
                Ok(n) => self.dec.commit(n),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    fn expect(&mut self) -> Frame {
        self.recv()
            .expect("connection closed, a frame was expected")
    }

    fn expect_error(&mut self, code: ErrorCode, request_id: Option<u64>) {
        let f = self.expect();
        assert_eq!(f.msg_type, MessageType::ERROR);
        assert_eq!(
            ErrorBody::decode(&f.body).unwrap().error_code(),
            Some(code),
            "{f:?}"
        );
        match request_id {
            Some(id) => {
                assert!(f.flags.is_response());
                assert_eq!(f.request_id, id);
            }
            None => {
                assert!(!f.flags.is_response());
                assert_eq!(f.request_id, 0);
            }
        }
    }
}

fn assert_reply(f: &Frame, ty: MessageType, id: u64, body: &[u8]) {
    assert_eq!(f.msg_type, ty, "{f:?}");
    assert_eq!(f.flags, Flags::RESPONSE);
    assert_eq!(f.request_id, id);
    assert!(f.meta.is_empty());
    assert_eq!(&f.body[..], body);
}

#[test]
fn answers_every_request_it_handles() {
    let (_rt, addr) = start();
    let mut c = Conn::connect(addr);

    c.send(&Frame::new(MessageType::ECHO, 1, &b"hello"[..]));
    assert_reply(&c.expect(), MessageType::ECHO_REPLY, 1, b"hello");

    let ts = 123_456_789u64.to_be_bytes();
    c.send(&Frame::new(MessageType::PING, 2, ts.to_vec()));
    assert_reply(&c.expect(), MessageType::PONG, 2, &ts);

    // DATA without ACK_REQUESTED gets nothing: the next reply is the ack.
    c.send(&Frame::new(MessageType::DATA, 3, vec![1u8; 10]));
    let body = vec![7u8; 100_000];
    c.send(&Frame::new(MessageType::DATA, 4, body).with_flags(Flags::ACK_REQUESTED));
    let ack = c.expect();
    let want = DataAck {
        bytes_accepted: 100_000,
    };
    assert_reply(&ack, MessageType::DATA_ACK, 4, &want.encode());

    // An empty ECHO, and one with metadata (the reply carries none).
    c.send(&Frame::new(MessageType::ECHO, 5, &b""[..]));
    assert_reply(&c.expect(), MessageType::ECHO_REPLY, 5, b"");
    let mut meta = MetaBuilder::new();
    meta.push("trace", b"abc").unwrap();
    c.send(&Frame::new(MessageType::ECHO, 6, &b"m"[..]).with_meta(meta.finish()));
    assert_reply(&c.expect(), MessageType::ECHO_REPLY, 6, b"m");
}

#[test]
fn unknown_types_are_refused_and_the_connection_kept() {
    let (_rt, addr) = start();
    let mut c = Conn::connect(addr);

    c.send(&Frame::new(MessageType(0x90), 10, &b"app"[..]));
    c.expect_error(ErrorCode::UnknownType, Some(10));
    c.send(&Frame::new(MessageType::STATS, 11, &b""[..]));
    c.expect_error(ErrorCode::UnknownType, Some(11));
    c.send(&Frame::response(MessageType::ECHO_REPLY, 12, &b"stray"[..]));
    c.expect_error(ErrorCode::UnknownType, Some(12));
    // PONG and ERROR are never answered.
    c.send(&Frame::response(MessageType::PONG, 13, vec![0u8; 8]));
    c.send(&ErrorBody::new(ErrorCode::Internal, "x").frame(Some(14)));

    c.send(&Frame::new(MessageType::ECHO, 15, &b"still here"[..]));
    assert_reply(&c.expect(), MessageType::ECHO_REPLY, 15, b"still here");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_rt, addr) = start();
    let mut c = Conn::connect(addr);
    let mut burst = Vec::new();
    for id in 0..1000u64 {
        let f = Frame::new(MessageType::ECHO, id, id.to_be_bytes().to_vec());
        burst.extend_from_slice(&f.to_bytes().unwrap());
    }
    c.s.write_all(&burst).unwrap();
    for id in 0..1000u64 {
        assert_reply(&c.expect(), MessageType::ECHO_REPLY, id, &id.to_be_bytes());
    }
}

#[test]
fn bad_magic_is_answered_then_closed() {
    let (_rt, addr) = start();
    let mut c = Conn::connect(addr);
    c.s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    c.expect_error(ErrorCode::BadMagic, None);
    assert!(c.recv().is_none(), "connection left open after BAD_MAGIC");
}

#[test]
fn bad_checksum_after_valid_frames_is_answered_in_order_then_closed() {
    let (_rt, addr) = start();
    let mut c = Conn::connect(addr);
    let mut bytes = Frame::new(MessageType::ECHO, 1, &b"ok"[..])
        .to_bytes()
        .unwrap()
        .to_vec();
    let mut bad = Frame::new(MessageType::ECHO, 2, &b"bad"[..])
        .to_bytes()
        .unwrap()
        .to_vec();
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    bytes.extend_from_slice(&bad);
    c.s.write_all(&bytes).unwrap();
    // The client keeps sending after the error; the peer must still close
    // cleanly, with the ERROR delivered (not lost to a reset).
    let _ = c.s.write_all(&[0u8; 1000]);
    assert_reply(&c.expect(), MessageType::ECHO_REPLY, 1, b"ok");
    c.expect_error(ErrorCode::BadChecksum, Some(2));
    let _ = c.s.shutdown(Shutdown::Write);
    assert!(
        c.recv().is_none(),
        "connection left open after BAD_CHECKSUM"
    );
}

#[test]
fn run_returns_when_shutdown_completes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stop = tokio::time::sleep(Duration::from_millis(50));
        tokio::time::timeout(WAIT, warpwire_peer_tokio::run(listener, stop))
            .await
            .expect("run did not return after shutdown");
    });
}
