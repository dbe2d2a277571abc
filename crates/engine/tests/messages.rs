//! Every message type of docs/protocol.md over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use warpwire_engine::{HandlerError, ServerConfig, UserDb};
use warpwire_frame::{
    Auth, AuthReply, BroadcastAck, DataAck, ErrorCode, Flags, Frame, MessageType, Ping, Stats,
};

#[test]
fn ping_pong_echo_and_app_examples() {
    let h = start(config());
    let mut c = Conn::connect(h.local_addr());
    let p = c.call(&Ping { timestamp_ns: 123 }.request(1));
    assert_eq!(
        (p.msg_type, p.request_id, p.flags),
        (MessageType::PONG, 1, Flags::RESPONSE)
    );
    assert_eq!(Ping::decode(&p.body).unwrap().timestamp_ns, 123);

    let body: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let e = c.call(&Frame::new(MessageType::ECHO, 2, body.clone()));
    assert_eq!(
        (e.msg_type, e.request_id, e.flags),
        (MessageType::ECHO_REPLY, 2, Flags::RESPONSE)
    );
    assert_eq!(&e.body[..], &body[..]);
    let e = c.call(&Frame::new(MessageType::ECHO, 3, Bytes::new()));
    assert!(e.body.is_empty());

    let r = c.call(&Frame::new(MessageType(0x80), 4, &b"abc"[..]));
    assert_eq!((r.msg_type, &r.body[..]), (MessageType(0x80), &b"cba"[..]));
    let u = c.call(&Frame::new(MessageType(0x81), 5, &b"Hello, wire"[..]));
    assert_eq!(&u.body[..], b"HELLO, WIRE");
    h.stop().unwrap();
}

#[test]
fn broadcast_reaches_every_other_connection() {
    let h = start(config());
    let mut a = Conn::connect(h.local_addr());
    let mut b = Conn::connect(h.local_addr());
    let mut c = Conn::connect(h.local_addr());
    for x in [&mut a, &mut b, &mut c] {
        assert!(x.alive());
    }
    let ack = a.call(&Frame::new(MessageType::BROADCAST, 7, &b"hi all"[..]));
    assert_eq!(
        (ack.msg_type, ack.request_id),
        (MessageType::BROADCAST_ACK, 7)
    );
    assert_eq!(BroadcastAck::decode(&ack.body).unwrap().recipients, 2);
    for x in [&mut b, &mut c] {
        let f = x.recv();
        assert_eq!(
            (f.msg_type, f.request_id, f.flags),
            (MessageType::BROADCAST, 0, Flags::NONE)
        );
        assert_eq!(&f.body[..], b"hi all");
        let from = f.metadata().unwrap().get("from").unwrap().to_vec();
        assert_eq!(from.len(), 16);
    }
    // The sender does not get its own broadcast: its next frame is the echo.
    assert!(a.alive());
    h.stop().unwrap();
}

#[test]
fn auth_accepts_the_right_token() {
    let users = std::env::temp_dir().join(format!("ww-msg-users-{}", std::process::id()));
    let _ = std::fs::remove_file(&users);
    UserDb::add_to_file(&users, "alice", b"secret-token").unwrap();
    let h = start(ServerConfig {
        require_auth: true,
        users_file: Some(users.clone()),
        ..config()
    });
    let mut c = Conn::connect(h.local_addr());
    // PING is allowed before AUTH.
    assert_eq!(
        c.call(&Ping { timestamp_ns: 1 }.request(1)).msg_type,
        MessageType::PONG
    );
    let r = c.call(
        &Auth {
            user: "alice",
            token: b"secret-token",
        }
        .request(2)
        .unwrap(),
    );
    assert_eq!((r.msg_type, r.request_id), (MessageType::AUTH_REPLY, 2));
    let reply = AuthReply::decode(&r.body).unwrap();
    assert!(reply.ok);
    assert_ne!(reply.session_id, [0; 16]);
    assert!(c.alive());
    h.stop().unwrap();
    std::fs::remove_file(&users).unwrap();
}

#[test]
fn auth_without_users_is_refused_with_auth_reply() {
    let h = start(config());
    let mut c = Conn::connect(h.local_addr());
    let r = c.call(
        &Auth {
            user: "x",
            token: b"y",
        }
        .request(1)
        .unwrap(),
    );
    let reply = AuthReply::decode(&r.body).unwrap();
    assert!(!reply.ok);
    assert_eq!(reply.session_id, [0; 16]);
    assert!(c.alive());
    h.stop().unwrap();
}

#[test]
fn data_reaches_handler_and_is_acked() {
    let got: Arc<Mutex<Vec<u8>>> = Arc::default();
    let sink = got.clone();
    let h = start_with(config(), move |s| {
        s.data_handler(Collect(sink));
    });
    let mut c = Conn::connect(h.local_addr());
    c.send(&Frame::new(MessageType::DATA, 1, &b"first "[..]));
    let r =
        c.call(&Frame::new(MessageType::DATA, 2, &b"second"[..]).with_flags(Flags::ACK_REQUESTED));
    // No reply to the unacked DATA: the first reply is the ack of request 2.
    assert_eq!((r.msg_type, r.request_id), (MessageType::DATA_ACK, 2));
    assert_eq!(DataAck::decode(&r.body).unwrap().bytes_accepted, 6);
    assert_eq!(&got.lock().unwrap()[..], b"first second");
    h.stop().unwrap();
}

/// The directory sink keeps at most `max_open` files open, writes every
/// session's DATA whole even when its file was closed in between, and
/// closes a session's file when it disconnects: 100 sessions that each
/// sent DATA leave no descriptor behind.
#[test]
fn directory_sink_closes_files_and_bounds_them() {
    let dir = std::env::temp_dir().join(format!("ww-sink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sink = Arc::new(warpwire_engine::DirectorySink::with_max_open(&dir, 2).unwrap());
    let h = start_with(config(), {
        let sink = sink.clone();
        move |s| {
            s.data_handler(sink);
        }
    });
    // Descriptors of this process open on a file of the sink's directory.
    let fds = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|p| p.starts_with(&dir))
            .count()
    };
    let ack = |c: &mut Conn, id: u64, body: &'static [u8]| {
        let r = c.call(&Frame::new(MessageType::DATA, id, body).with_flags(Flags::ACK_REQUESTED));
        assert_eq!(r.msg_type, MessageType::DATA_ACK);
    };
    // Three sessions interleaved through a cap of two open files.
    let mut conns: Vec<Conn> = (0..3).map(|_| Conn::connect(h.local_addr())).collect();
    for round in 0..3u64 {
        for c in &mut conns {
            ack(c, round, b"0123456789");
            assert!(sink.open_files() <= 2);
        }
    }
    let mut sizes: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    sizes.sort();
    assert_eq!(
        sizes,
        vec![30, 30, 30],
        "every session's DATA whole on disk"
    );
    drop(conns);
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while sink.open_files() > 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(sink.open_files(), 0, "files closed with their sessions");

    assert_eq!(fds(), 0);
    for i in 0..100u64 {
        let mut c = Conn::connect(h.local_addr());
        ack(&mut c, i, b"x");
    }
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while (sink.open_files() > 0 || fds() > 0) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(sink.open_files(), 0);
    assert_eq!(fds(), 0, "descriptors left open on session files");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 103);
    h.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

struct Collect(Arc<Mutex<Vec<u8>>>);
impl warpwire_engine::DataHandler for Collect {
    fn on_data(
        &self,
        _: &warpwire_engine::SessionInfo<'_>,
        body: &Bytes,
    ) -> Result<u64, HandlerError> {
        self.0.lock().unwrap().extend_from_slice(body);
        Ok(body.len() as u64)
    }
}

#[test]
fn stats_reports_counters() {
    let h = start(config());
    let mut c = Conn::connect(h.local_addr());
    assert!(c.alive());
    let r = c.call(&Frame::new(MessageType::STATS, 9, Bytes::new()));
    assert_eq!((r.msg_type, r.request_id), (MessageType::STATS_REPLY, 9));
    assert!(r.body.is_empty());
    let s = Stats::from_meta(&r.metadata().unwrap()).unwrap();
    assert_eq!(s.connections, 1);
    assert_eq!(s.messages_in, 2);
    assert!(s.messages_out >= 1);
    assert!(s.bytes_in >= 2 * 24);
    assert_eq!(s.transport, "socket");
    h.stop().unwrap();
}

#[test]
fn peer_error_and_pong_get_no_reply() {
    let h = start(config());
    let mut c = Conn::connect(h.local_addr());
    c.send(&warpwire_frame::ErrorBody::new(ErrorCode::Internal, "client side trouble").frame(None));
    c.send(&Frame::response(MessageType::PONG, 5, vec![0u8; 8]));
    assert!(c.alive(), "the ECHO reply must be the next frame");
    h.stop().unwrap();
}

#[test]
fn handler_failure_is_internal_and_kept() {
    let h = start_with(config(), |s| {
        s.register(
            0x90,
            |_: &warpwire_engine::SessionInfo<'_>,
             _: &Frame|
             -> Result<Option<Bytes>, HandlerError> { Err(HandlerError::new("boom")) },
        )
        .unwrap();
    });
    let mut c = Conn::connect(h.local_addr());
    c.send(&Frame::new(MessageType(0x90), 11, &b"x"[..]));
    assert_eq!(c.recv_error(), (ErrorCode::Internal, 11));
    assert!(c.alive());
    h.stop().unwrap();
}

#[test]
fn graceful_shutdown_flushes_replies_then_closes() {
    let h = start(config());
    let mut c = Conn::connect(h.local_addr());
    assert!(c.alive());
    for i in 0..200u64 {
        c.send(&Frame::new(MessageType::ECHO, i, vec![7u8; 100]));
    }
    // Let the server read them before the shutdown starts.
    std::thread::sleep(Duration::from_millis(200));
    h.stop().unwrap();
    for i in 0..200u64 {
        let f = c.try_recv(WAIT).expect("reply lost in shutdown");
        assert_eq!(f.request_id, i);
    }
    assert!(c.closed());
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    use std::io::{Read, Write};
    let h = start(ServerConfig {
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    });
    let mut c = Conn::connect(h.local_addr());
    assert!(c.alive());
    let mut m = std::net::TcpStream::connect(h.metrics_addr().unwrap()).unwrap();
    m.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    m.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("# TYPE warpwire_messages_in_total counter"));
    assert!(text.contains("warpwire_connections{worker="));
    assert!(text.contains("warpwire_service_seconds{worker=\"0\",quantile=\"0.99\"}"));
    assert!(
        text.contains("warpwire_service_seconds_sum{worker=\"0\"} "),
        "{text}"
    );
    assert!(
        text.contains("warpwire_service_seconds_count{worker=\"0\"} "),
        "{text}"
    );
    h.stop().unwrap();
}
