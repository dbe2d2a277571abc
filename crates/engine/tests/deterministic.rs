//! The worker driven turn by turn on a virtual clock over a scripted
//! transport (`warpwire_engine::testing`): no threads, no sleeps, exact
//! timing. Idle timeout, rate limits, pause and resume, half-close, drain
//! and broadcast.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::BytesMut;
use warpwire_engine::ServerConfig;
use warpwire_engine::testing::{Harness, PeerId};
use warpwire_frame::{
    BroadcastAck, Decoder, DecoderConfig, ErrorBody, ErrorCode, Frame, MessageType, Ping,
};
use warpwire_transport::CloseReason;

fn enc(f: &Frame) -> Vec<u8> {
    let mut b = BytesMut::new();
    f.encode(&mut b).unwrap();
    b.to_vec()
}

fn frames(h: &mut Harness<warpwire_engine::Warpwire>, p: PeerId) -> Vec<Frame> {
    let mut d = Decoder::new(DecoderConfig::default());
    let out = h.received(p);
    let mut rest = &out[..];
    let mut v = Vec::new();
    while !rest.is_empty() {
        let n = d.feed(rest);
        rest = &rest[n..];
        while let Some(f) = d.decode().unwrap() {
            v.push(f);
        }
    }
    v
}

fn code(f: &Frame) -> ErrorCode {
    assert_eq!(f.msg_type, MessageType::ERROR);
    ErrorCode::from_u16(ErrorBody::decode(&f.body).unwrap().code).unwrap()
}

#[test]
fn idle_timeout_fires_at_the_configured_time_exactly() {
    let mut h = Harness::warpwire(
        ServerConfig {
            idle_timeout: Duration::from_secs(10),
            ..ServerConfig::default()
        },
        None,
    );
    let p = h.connect();
    h.settle();
    h.advance(Duration::from_millis(9_800));
    assert!(frames(&mut h, p).is_empty());
    assert_eq!(h.closed(p), None);
    // A frame restarts the clock.
    h.send(p, &enc(&Ping { timestamp_ns: 1 }.request(1)));
    h.settle();
    assert_eq!(frames(&mut h, p)[0].msg_type, MessageType::PONG);
    h.advance(Duration::from_millis(9_800));
    assert_eq!(h.closed(p), None);
    h.advance(Duration::from_millis(300));
    let f = frames(&mut h, p);
    assert_eq!(code(&f[0]), ErrorCode::IdleTimeout);
    assert_eq!(h.closed(p), Some(CloseReason::Local));
}

#[test]
fn rate_limit_refills_with_virtual_time() {
    let mut h = Harness::warpwire(
        ServerConfig {
            conn_rate: Some(10.0),
            ..ServerConfig::default()
        },
        None,
    );
    let p = h.connect();
    h.settle();
    for id in 0..15 {
        h.send(p, &enc(&Ping { timestamp_ns: id }.request(id)));
    }
    h.settle();
    let f = frames(&mut h, p);
    let pongs = f.iter().filter(|f| f.msg_type == MessageType::PONG).count();
    let limited = f
        .iter()
        .filter(|f| f.msg_type == MessageType::ERROR && code(f) == ErrorCode::RateLimited)
        .count();
    assert_eq!((pongs, limited), (10, 5));
    // Half a second later, five tokens are back.
    h.advance(Duration::from_millis(500));
    for id in 20..26 {
        h.send(p, &enc(&Ping { timestamp_ns: id }.request(id)));
    }
    h.settle();
    let f = frames(&mut h, p);
    let pongs = f.iter().filter(|f| f.msg_type == MessageType::PONG).count();
    assert_eq!((pongs, f.len()), (5, 6));
    assert_eq!(h.closed(p), None, "rate limiting does not close");
}

#[test]
fn a_peer_that_does_not_read_pauses_reading_and_resumes() {
    let mut h = Harness::warpwire(
        ServerConfig {
            max_output: 64 * 1024,
            ..ServerConfig::default()
        },
        None,
    );
    let p = h.connect();
    h.set_window(p, Some(0));
    h.settle();
    let body = vec![3u8; 4096];
    for id in 0..100 {
        h.send(p, &enc(&Frame::new(MessageType::ECHO, id, body.clone())));
    }
    h.settle();
    assert!(h.paused(p), "reading stops once 64 KiB of replies wait");
    assert!(h.unread(p) > 0, "the rest stays with the peer");
    // The peer reads: every reply, whole and in order.
    h.set_window(p, None);
    h.settle();
    let ids: Vec<u64> = frames(&mut h, p).iter().map(|f| f.request_id).collect();
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
    assert!(!h.paused(p));
}

#[test]
fn half_close_answers_then_closes() {
    let mut h = Harness::warpwire(ServerConfig::default(), None);
    let p = h.connect();
    for id in 1..=3 {
        h.send(p, &enc(&Ping { timestamp_ns: id }.request(id)));
    }
    h.fin(p);
    h.settle();
    let ids: Vec<u64> = frames(&mut h, p).iter().map(|f| f.request_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(h.closed(p), Some(CloseReason::Local));
}

#[test]
fn drain_flushes_and_cuts_a_stuck_peer_at_the_grace_period() {
    let mut h = Harness::warpwire(
        ServerConfig {
            shutdown_grace: Duration::from_secs(2),
            ..ServerConfig::default()
        },
        None,
    );
    let (reader, stuck) = (h.connect(), h.connect());
    h.set_window(stuck, Some(0));
    h.settle();
    h.send(reader, &enc(&Ping { timestamp_ns: 1 }.request(1)));
    h.send(stuck, &enc(&Ping { timestamp_ns: 2 }.request(2)));
    h.settle();
    h.shutdown();
    h.settle();
    assert_eq!(frames(&mut h, reader).len(), 1);
    assert_eq!(h.closed(reader), Some(CloseReason::Local));
    assert_eq!(h.closed(stuck), None, "still flushing");
    h.advance(Duration::from_millis(1_900));
    assert!(h.turn(), "still within the grace period");
    h.advance(Duration::from_millis(200));
    assert!(!h.turn(), "the drain ends at the grace period");
}

#[test]
fn a_drain_stops_listening_so_a_late_client_is_refused_not_accepted() {
    let mut h = Harness::warpwire(ServerConfig::default(), None);
    let early = h.connect();
    h.settle();
    // Dialled in the same turn as the shutdown: not yet accepted.
    let racing = h.connect();
    h.shutdown();
    h.settle();
    let late = h.connect();
    h.settle();
    assert_eq!(h.closed(early), Some(CloseReason::Local));
    assert!(h.refused(racing), "reset with the accept queue");
    assert!(h.refused(late), "refused after the drain began");
    assert!(!h.refused(early));
}

#[test]
fn broadcast_reaches_the_other_connection_and_counts_it() {
    let mut h = Harness::warpwire(ServerConfig::default(), None);
    let (a, b) = (h.connect(), h.connect());
    h.settle();
    h.send(
        a,
        &enc(&Frame::new(MessageType::BROADCAST, 9, &b"news"[..])),
    );
    h.settle();
    let ack = &frames(&mut h, a)[0];
    assert_eq!(ack.msg_type, MessageType::BROADCAST_ACK);
    assert_eq!(BroadcastAck::decode(&ack.body).unwrap().recipients, 1);
    let relay = &frames(&mut h, b)[0];
    assert_eq!(
        (relay.msg_type, &relay.body[..]),
        (MessageType::BROADCAST, &b"news"[..])
    );
}
