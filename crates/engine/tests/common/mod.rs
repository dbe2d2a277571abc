//! Shared helpers of the engine's integration tests: a server on loopback
//! over the socket backend and a raw blocking client that can send anything.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use warpwire_engine::{Server, ServerConfig, ServerHandle};
use warpwire_frame::{Decoder, DecoderConfig, ErrorBody, ErrorCode, Frame, MessageType};
use warpwire_socket::SocketTransport;

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        // Test clients often stay connected through stop(); don't wait long for them.
        shutdown_grace: Duration::from_millis(500),
        ..ServerConfig::default()
    }
}

pub fn start(cfg: ServerConfig) -> ServerHandle {
    start_with(cfg, |_| {})
}

pub fn start_with(cfg: ServerConfig, setup: impl FnOnce(&mut Server)) -> ServerHandle {
    let mut s = Server::new(cfg);
    setup(&mut s);
    s.start(|_| SocketTransport::new()).unwrap()
}

pub struct Conn {
    pub s: TcpStream,
    dec: Decoder,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self {
            s,
            dec: Decoder::new(DecoderConfig {
                max_payload: 64 << 20,
                ..DecoderConfig::default()
            }),
        }
    }

    pub fn send(&mut self, f: &Frame) {
        self.s.write_all(&f.to_bytes().unwrap()).unwrap();
    }

    pub fn send_raw(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// The next frame, or None if the server closed the connection.
    pub fn try_recv(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(f) = self.dec.decode().expect("server sent a malformed frame") {
                return Some(f);
            }
            assert!(Instant::now() < deadline, "no frame within {within:?}");
            let buf = self.dec.read_buf();
            match self.s.read(buf) {
                Ok(0) => return None,
                Ok(n) => self.dec.commit(n),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    pub fn recv(&mut self) -> Frame {
        self.try_recv(WAIT).expect("connection closed")
    }

    /// Sends `f` and returns the reply.
    pub fn call(&mut self, f: &Frame) -> Frame {
        self.send(f);
        self.recv()
    }

    /// Expects an ERROR; returns its code and request_id.
    pub fn recv_error(&mut self) -> (ErrorCode, u64) {
        let f = self.recv();
        assert_eq!(f.msg_type, MessageType::ERROR, "expected ERROR, got {f:?}");
        let e = ErrorBody::decode(&f.body).unwrap();
        (e.error_code().expect("known code"), f.request_id)
    }

    /// Whether the server closes the connection within `WAIT` (a frame
    /// instead of the close fails the test; so does silence past `WAIT`).
    pub fn closed(&mut self) -> bool {
        match self.try_recv(WAIT) {
            None => true,
            Some(f) => panic!("expected close, got {f:?}"),
        }
    }

    /// Whether the connection still works: an ECHO gets its reply.
    pub fn alive(&mut self) -> bool {
        let r = self.call(&Frame::new(MessageType::ECHO, 999_999, &b"alive?"[..]));
        r.msg_type == MessageType::ECHO_REPLY && r.request_id == 999_999 && &r.body[..] == b"alive?"
    }
}

/// Polls `f` until true or `WAIT` passes.
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
