//! Handlers that block run on the application workers: an I/O worker never
//! waits for them, replies keep request order, a full queue only delays,
//! and a connection closed while its job runs leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use warpwire_engine::{HandlerError, ServerConfig, SessionInfo};
use warpwire_frame::{ErrorCode, Frame, MessageType, Ping};

const SLOW: u8 = 0x90;
const PANICS: u8 = 0x91;

fn slow(_: &SessionInfo<'_>, f: &Frame) -> Result<Option<Bytes>, HandlerError> {
    std::thread::sleep(Duration::from_millis(50));
    Ok(Some(f.body.clone()))
}

fn panics(_: &SessionInfo<'_>, _: &Frame) -> Result<Option<Bytes>, HandlerError> {
    panic!("the handler fell over")
}

fn server(cfg: ServerConfig) -> warpwire_engine::ServerHandle {
    start_with(cfg, |s| {
        s.register_blocking(SLOW, slow).unwrap();
        s.register_blocking(PANICS, panics).unwrap();
    })
}

/// 8 connections call a handler that sleeps 50 ms, continuously, on the
/// one I/O worker; PINGs from another connection on the same worker stay
/// fast (p99 under 5 ms), because the I/O worker never runs the handler.
/// (The same measurement runs over AF_XDP as root: crates/xdp/tests/engine.rs.)
#[test]
fn a_sleeping_handler_does_not_stall_pings_on_its_worker() {
    let h = server(ServerConfig {
        workers: 1,
        app_workers: 8,
        ..config()
    });
    let report =
        warpwire_testkit::hostile::check_pings_beside_slow_calls(h.local_addr(), SLOW).unwrap();
    println!("{report}");
    h.stop().unwrap();
}

/// Pipelined requests around a blocking one are answered in order.
#[test]
fn replies_keep_request_order_around_a_blocking_handler() {
    let h = server(config());
    let mut c = Conn::connect(h.local_addr());
    c.send(&Frame::new(MessageType(SLOW), 1, &b"first"[..]));
    c.send(&Ping { timestamp_ns: 2 }.request(2));
    c.send(&Frame::new(MessageType(SLOW), 3, &b"third"[..]));
    c.send(&Frame::new(MessageType::ECHO, 4, &b"fourth"[..]));
    let ids: Vec<u64> = (0..4).map(|_| c.recv().request_id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    h.stop().unwrap();
}

/// With one application worker and a queue of two, 20 connections' slow
/// requests all complete: the queue delays, it never drops or grows.
#[test]
fn a_full_queue_delays_and_loses_nothing() {
    let h = server(ServerConfig {
        app_workers: 1,
        app_queue: 2,
        ..config()
    });
    let mut conns: Vec<Conn> = (0..20).map(|_| Conn::connect(h.local_addr())).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(&Frame::new(MessageType(SLOW), i as u64, format!("n{i}")));
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let r = c.recv();
        assert_eq!(
            (r.request_id, &r.body[..]),
            (i as u64, format!("n{i}").as_bytes())
        );
    }
    h.stop().unwrap();
}

/// A connection closed while its job runs: the job's reply goes nowhere,
/// the connection count comes back to zero, the server goes on; a handler
/// that panics answers INTERNAL and the connection stays.
#[test]
fn closing_mid_job_and_a_panicking_handler_are_contained() {
    let h = server(config());
    for i in 0..10u64 {
        let mut c = Conn::connect(h.local_addr());
        c.send(&Frame::new(MessageType(SLOW), i, &b"gone"[..]));
        drop(c);
    }
    let metrics = h.metrics();
    assert!(eventually(|| metrics.totals().connections == 0));
    let mut c = Conn::connect(h.local_addr());
    c.send(&Frame::new(MessageType(PANICS), 7, &b"x"[..]));
    let (code, id) = c.recv_error();
    assert_eq!((code, id), (ErrorCode::Internal, 7));
    assert!(c.alive());
    let r = c.call(&Frame::new(MessageType(SLOW), 8, &b"still"[..]));
    assert_eq!(&r.body[..], b"still");
    h.stop().unwrap();
}

/// A blocking DATA sink that records every body it is given and the
/// thread it ran on, and fails a body reading "fail".
#[derive(Clone, Default)]
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<(std::thread::ThreadId, Bytes)>>>);

impl warpwire_engine::DataHandler for Recorder {
    fn on_data(&self, _: &SessionInfo<'_>, body: &Bytes) -> Result<u64, HandlerError> {
        // Slow enough that frames pile up in the decoder behind a job.
        std::thread::sleep(Duration::from_micros(200));
        self.0
            .lock()
            .unwrap()
            .push((std::thread::current().id(), body.clone()));
        if &body[..] == b"fail" {
            return Err(HandlerError::new("the sink refused it"));
        }
        Ok(body.len() as u64)
    }

    fn blocking(&self) -> bool {
        true
    }
}

/// DATA for a blocking sink is handed to the application workers in
/// batches (whole frames already in the decoder), and that changes
/// nothing a peer can see: the sink gets every body in order, a sink
/// failure inside a batch is answered with that frame's id, frames the
/// rate limit refuses mid-stream are never written, and every reply
/// leaves in request order.
#[test]
fn data_batches_for_a_blocking_sink_keep_order_errors_and_limits() {
    let rec = Recorder::default();
    let h = start_with(
        ServerConfig {
            workers: 1,
            app_workers: 4,
            conn_rate: Some(1.0),
            conn_burst: Some(250.0),
            ..config()
        },
        {
            let rec = rec.clone();
            move |s| {
                s.data_handler(rec);
            }
        },
    );
    let mut c = Conn::connect(h.local_addr());
    // 400 frames in one burst: the burst of 250 passes, the rest is
    // refused (and the 1/s refill adds at most a frame or two).
    let mut wire = Vec::new();
    let body = |i: u64| -> Bytes {
        if i == 77 {
            Bytes::from_static(b"fail")
        } else {
            Bytes::from(format!("{i:08}").repeat(128))
        }
    };
    for i in 1..=400u64 {
        let mut f = Frame::new(MessageType::DATA, i, body(i));
        if i % 100 == 0 {
            f = f.with_flags(warpwire_frame::Flags::ACK_REQUESTED);
        }
        wire.extend_from_slice(&f.to_bytes().unwrap());
    }
    c.send_raw(&wire);
    // Replies: ERROR for 77, ACKs for 100 and 200, then RATE_LIMITED
    // for each refused frame (id 400's included): all in request order.
    let mut replies = Vec::new();
    while replies.last().map(|f: &Frame| f.request_id) != Some(400) {
        replies.push(c.recv());
    }
    let ids: Vec<u64> = replies.iter().map(|f| f.request_id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "replies out of order: {ids:?}"
    );
    assert_eq!(replies[0].request_id, 77);
    assert_eq!(replies[0].msg_type, MessageType::ERROR);
    let acks: Vec<u64> = replies
        .iter()
        .filter(|f| f.msg_type == MessageType::DATA_ACK)
        .map(|f| f.request_id)
        .collect();
    assert_eq!(acks, vec![100, 200]);
    let refused: Vec<u64> = replies
        .iter()
        .filter(|f| f.msg_type == MessageType::ERROR && f.request_id != 77)
        .map(|f| f.request_id)
        .collect();
    assert!(refused.len() >= 145, "{refused:?}");
    let got = rec.0.lock().unwrap().clone();
    let written: Vec<Bytes> = got.iter().map(|(_, b)| b.clone()).collect();
    let want: Vec<Bytes> = (1..=400u64)
        .filter(|i| !refused.contains(i))
        .map(body)
        .collect();
    assert_eq!(written.len(), want.len());
    assert!(
        written == want,
        "the sink got other bodies or another order"
    );
    h.stop().unwrap();
}
