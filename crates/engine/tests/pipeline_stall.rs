//! Pipelined requests whose replies fill a session's output queue must all
//! be answered even when the peer then sends nothing more.
//!
//! These run the real `Server` over a scripted in-memory transport so the
//! read/decode/pause sequence is exact: one connection, a fixed input of
//! pipelined frames handed out by `recv` in chunks, readiness reported
//! level-triggered (only while input remains and reading is not paused, as
//! the real backends do), and every sent byte accepted and collected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use warpwire_engine::{Server, ServerConfig};
use warpwire_frame::{Decoder, DecoderConfig, Frame, MessageType};
use warpwire_transport::{
    Capabilities, CloseReason, ConnId, Event, Events, LatencyClass, Transport, TransportError, Wake,
};

/// Long enough for a healthy server by orders of magnitude; a stalled
/// pipeline never completes however long it waits.
const REPLY_WAIT: Duration = Duration::from_secs(3);

const CONN: ConnId = ConnId::new(0, 1);

#[derive(Default)]
struct State {
    input: Vec<u8>,
    pos: usize,
    sent: Vec<u8>,
    accepted: bool,
    paused: bool,
    close_requested: bool,
    closed_reported: bool,
    woken: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

impl Wake for Shared {
    fn wake(&self) {
        self.state.lock().unwrap().woken = true;
        self.cond.notify_all();
    }
}

/// The in-memory transport: one scripted connection.
struct Mock {
    shared: Arc<Shared>,
    chunk: usize,
}

impl Mock {
    fn readable(s: &State) -> bool {
        s.accepted && !s.paused && !s.close_requested && s.pos < s.input.len()
    }
}

impl Transport for Mock {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "mock",
            latency: LatencyClass::Kernel,
            kernel_bypass: false,
            busy_poll: false,
            vectored_send: false,
            max_segment: self.chunk,
        }
    }

    fn listen(&mut self, _addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 1)))
    }

    fn stop_listening(&mut self) {}

    fn connect(&mut self, _addr: SocketAddr, _now: Instant) -> Result<ConnId, TransportError> {
        Err(TransportError::Unsupported {
            backend: "mock",
            what: "connect",
        })
    }

    fn poll(&mut self, _now: Instant, events: &mut Events) -> Result<(), TransportError> {
        events.clear();
        let mut s = self.shared.state.lock().unwrap();
        if !s.accepted {
            s.accepted = true;
            events.push(Event::Accepted {
                conn: CONN,
                peer: SocketAddr::from(([127, 0, 0, 1], 2)),
                listener: SocketAddr::from(([127, 0, 0, 1], 1)),
            });
        }
        if s.close_requested && !s.closed_reported {
            s.closed_reported = true;
            events.push(Event::Closed(CONN, CloseReason::Local));
        } else if Self::readable(&s) {
            events.push(Event::Readable(CONN));
        }
        Ok(())
    }

    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, TransportError> {
        assert_eq!(conn, CONN);
        let mut s = self.shared.state.lock().unwrap();
        let n = buf.len().min(self.chunk).min(s.input.len() - s.pos);
        let pos = s.pos;
        buf[..n].copy_from_slice(&s.input[pos..pos + n]);
        s.pos += n;
        Ok(n)
    }

    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, TransportError> {
        assert_eq!(conn, CONN);
        self.shared
            .state
            .lock()
            .unwrap()
            .sent
            .extend_from_slice(data);
        self.shared.cond.notify_all();
        Ok(data.len())
    }

    fn pause_recv(&mut self, _conn: ConnId, paused: bool) {
        self.shared.state.lock().unwrap().paused = paused;
    }

    fn close(&mut self, _conn: ConnId) {
        self.shared.state.lock().unwrap().close_requested = true;
    }

    fn peer_addr(&self, _conn: ConnId) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], 2)))
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        let deadline = Instant::now() + timeout.unwrap_or(Duration::from_secs(1));
        let mut s = self.shared.state.lock().unwrap();
        while !s.woken && !Self::readable(&s) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = self.shared.cond.wait_timeout(s, left).unwrap().0;
        }
        s.woken = false;
        Ok(())
    }

    fn waker(&self) -> Result<Arc<dyn Wake>, TransportError> {
        Ok(self.shared.clone())
    }
}

/// `count` pipelined ECHO requests, each `frame_len` bytes on the wire.
fn echoes(count: u64, frame_len: usize) -> Vec<u8> {
    let body = vec![0x5a; frame_len - 24];
    let mut input = Vec::new();
    for id in 1..=count {
        let f = Frame::new(MessageType::ECHO, id, body.clone())
            .to_bytes()
            .unwrap();
        assert_eq!(f.len(), frame_len);
        input.extend_from_slice(&f);
    }
    input
}

/// Runs a one-worker server over the mock fed `input` in `chunk`-byte
/// receives; returns the request ids of the replies that arrived within
/// `REPLY_WAIT` (stopping early once `expect` have).
fn run(max_output: usize, chunk: usize, input: Vec<u8>, expect: usize) -> Vec<u64> {
    let shared = Arc::new(Shared::default());
    shared.state.lock().unwrap().input = input;
    let cfg = ServerConfig {
        workers: 1,
        max_output,
        shutdown_grace: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let for_worker = shared.clone();
    let server = Server::new(cfg)
        .start(move |_| {
            Ok(Mock {
                shared: for_worker.clone(),
                chunk,
            })
        })
        .unwrap();

    let mut ids = Vec::new();
    let mut dec = Decoder::new(DecoderConfig::default());
    let mut taken = 0;
    let deadline = Instant::now() + REPLY_WAIT;
    let mut s = shared.state.lock().unwrap();
    loop {
        let fresh = &s.sent[taken..];
        assert_eq!(dec.feed(fresh), fresh.len());
        taken = s.sent.len();
        while let Some(f) = dec.decode().unwrap() {
            assert_eq!(f.msg_type, MessageType::ECHO_REPLY);
            ids.push(f.request_id);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if ids.len() >= expect || left.is_zero() {
            break;
        }
        s = shared.cond.wait_timeout(s, left).unwrap().0;
    }
    drop(s);
    server.stop().unwrap();
    ids
}

/// The engine's receive budget per connection per poll
/// (`READS_PER_POLL` in worker.rs).
const READS_PER_POLL: usize = 4;
/// The decoder's default receive region, and the mock's receive size.
const CHUNK: usize = warpwire_frame::DEFAULT_READ_CHUNK;
/// Four requests per receive, so frames and receives line up exactly.
const FRAME: usize = CHUNK / 4;

/// 16 pipelined 4 KiB ECHOs arrive in exactly four 16 KiB receives: the one
/// poll's whole budget. The reply cap (15 replies) is reached on the 15th
/// frame, during the last receive, with the 16th frame complete in the
/// decoder and no input left, so no Readable event will ever come again.
/// The session must still answer all 16.
#[test]
fn cap_reached_in_last_read_of_a_poll_still_answers_every_request() {
    let count = (READS_PER_POLL * CHUNK / FRAME) as u64;
    let max_output = (count as usize - 1) * FRAME;
    let ids = run(max_output, CHUNK, echoes(count, FRAME), count as usize);
    assert_eq!(
        ids,
        (1..=count).collect::<Vec<_>>(),
        "pipeline stalled: {} of {count} replies",
        ids.len()
    );
}

/// A reply cap of one reply: the first receive (4 frames) answers one and
/// pauses; once the reply is flushed the session resumes, its receive
/// returns 0 (all input is already in the decoder), and it hits the cap
/// again after one more frame. Frames 3 and 4 must not be stranded just
/// because that receive brought nothing new.
#[test]
fn resumed_session_with_no_new_input_answers_every_buffered_request() {
    let count = (CHUNK / FRAME) as u64;
    let ids = run(FRAME, CHUNK, echoes(count, FRAME), count as usize);
    assert_eq!(
        ids,
        (1..=count).collect::<Vec<_>>(),
        "pipeline stalled: {} of {count} replies",
        ids.len()
    );
}
