//! Pipelining, many connections, a large DATA stream, and broadcast across
//! workers, over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use sha2::{Digest, Sha256};
use warpwire_engine::{HandlerError, ServerConfig, SessionInfo};
use warpwire_frame::{BroadcastAck, DataAck, Flags, Frame, MessageType};

#[test]
fn two_thousand_pipelined_requests_answered_in_order() {
    let h = start(config());
    let mut c = Conn::connect(h.local_addr());
    let mut batch = Vec::new();
    for id in 1..=2000u64 {
        let ty = if id % 3 == 0 {
            MessageType(0x80)
        } else {
            MessageType::ECHO
        };
        batch.extend_from_slice(
            &Frame::new(ty, id, id.to_be_bytes().to_vec())
                .to_bytes()
                .unwrap(),
        );
    }
    c.send_raw(&batch);
    for id in 1..=2000u64 {
        let f = c.recv();
        assert_eq!(f.request_id, id, "out of order");
        let mut want = id.to_be_bytes().to_vec();
        if id % 3 == 0 {
            want.reverse();
        }
        assert_eq!(&f.body[..], &want[..]);
    }
    h.stop().unwrap();
}

#[test]
fn a_thousand_concurrent_connections_each_echo() {
    let h = start(config());
    let mut conns: Vec<Conn> = (0..1000).map(|_| Conn::connect(h.local_addr())).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(&Frame::new(
            MessageType::ECHO,
            i as u64,
            format!("conn {i}").into_bytes(),
        ));
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let f = c.recv();
        assert_eq!(
            (f.msg_type, f.request_id),
            (MessageType::ECHO_REPLY, i as u64)
        );
        assert_eq!(f.body, Bytes::from(format!("conn {i}")));
    }
    let open: u64 = h
        .metrics()
        .workers
        .iter()
        .map(|w| w.connections.load(Ordering::Relaxed))
        .sum();
    assert_eq!(open, 1000);
    drop(conns);
    h.stop().unwrap();
}

struct Hasher(Arc<Mutex<(Sha256, u64)>>);
impl warpwire_engine::DataHandler for Hasher {
    fn on_data(&self, _: &SessionInfo<'_>, body: &Bytes) -> Result<u64, HandlerError> {
        let mut g = self.0.lock().unwrap();
        g.0.update(body);
        g.1 += body.len() as u64;
        Ok(body.len() as u64)
    }
}

#[test]
fn hundred_megabytes_of_data_arrive_complete_and_in_order() {
    const TOTAL: usize = 100 * 1000 * 1000;
    const CHUNK: usize = 64 * 1024;
    let state: Arc<Mutex<(Sha256, u64)>> = Arc::new(Mutex::new((Sha256::new(), 0)));
    let sink = state.clone();
    let h = start_with(config(), move |s| {
        s.data_handler(Hasher(sink));
    });
    let mut c = Conn::connect(h.local_addr());
    let mut sent = Sha256::new();
    let mut rng_state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = Vec::with_capacity(CHUNK + 64);
    let mut off = 0;
    let mut id = 0;
    while off < TOTAL {
        let n = CHUNK.min(TOTAL - off);
        let body: Vec<u8> = (0..n)
            .map(|_| {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 7;
                rng_state ^= rng_state << 17;
                rng_state as u8
            })
            .collect();
        sent.update(&body);
        off += n;
        id += 1;
        let mut f = Frame::new(MessageType::DATA, id, body);
        if off == TOTAL {
            f = f.with_flags(Flags::ACK_REQUESTED);
        }
        buf.clear();
        buf.extend_from_slice(&f.to_bytes().unwrap());
        c.s.write_all(&buf).unwrap();
    }
    let ack = c.recv();
    assert_eq!((ack.msg_type, ack.request_id), (MessageType::DATA_ACK, id));
    let last_chunk = (TOTAL - (id as usize - 1) * CHUNK) as u64;
    assert_eq!(
        DataAck::decode(&ack.body).unwrap().bytes_accepted,
        last_chunk
    );
    let g = state.lock().unwrap();
    assert_eq!(g.1, TOTAL as u64);
    assert_eq!(
        g.0.clone().finalize(),
        sent.finalize(),
        "hash mismatch: bytes lost or reordered"
    );
    drop(g);
    h.stop().unwrap();
}

#[test]
fn broadcast_crosses_workers() {
    let h = start(ServerConfig {
        workers: 2,
        ..config()
    });
    let m = h.metrics();
    let mut conns = Vec::new();
    // SO_REUSEPORT spreads connections by hash: open until both workers
    // serve some (64 tries leave a 2^-63 chance of a false failure).
    while conns.len() < 64 {
        let mut c = Conn::connect(h.local_addr());
        assert!(c.alive());
        conns.push(c);
        let per: Vec<u64> = m
            .workers
            .iter()
            .map(|w| w.connections.load(Ordering::Relaxed))
            .collect();
        if conns.len() >= 4 && per.iter().all(|&n| n > 0) {
            break;
        }
    }
    let per: Vec<u64> = m
        .workers
        .iter()
        .map(|w| w.connections.load(Ordering::Relaxed))
        .collect();
    assert!(
        per.iter().all(|&n| n > 0),
        "connections all on one worker: {per:?}"
    );
    let (first, rest) = conns.split_first_mut().unwrap();
    let ack = first.call(&Frame::new(MessageType::BROADCAST, 1, &b"everyone"[..]));
    assert_eq!(
        BroadcastAck::decode(&ack.body).unwrap().recipients as usize,
        rest.len()
    );
    for c in rest.iter_mut() {
        let f = c.recv();
        assert_eq!(
            (f.msg_type, &f.body[..]),
            (MessageType::BROADCAST, &b"everyone"[..])
        );
    }
    h.stop().unwrap();
}
