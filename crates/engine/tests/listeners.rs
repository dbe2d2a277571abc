//! Several protocols on several listen addresses, served by the same
//! workers: warpwire on `listen`, echo (RFC 862) on a listener that names
//! it. Deterministically on the scripted transport, then over kernel TCP
//! through epoll and io_uring with kernel sockets as the peers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use warpwire_engine::testing::{Harness, Upper};
use warpwire_engine::{
    Both, Echo, EngineError, Handlers, ListenerConfig, Protocol, Server, ServerConfig,
    ServerHandle, Warpwire, serve,
};
use warpwire_frame::{Decoder, DecoderConfig, MessageType, Ping};
use warpwire_transport::CloseReason;

fn with_echo(mut cfg: ServerConfig) -> ServerConfig {
    cfg.listeners = vec!["echo=127.0.0.1:0".parse().unwrap()];
    cfg
}

fn harness(cfg: ServerConfig) -> Harness<Both<Warpwire, Echo>> {
    let proto_cfg = cfg.clone();
    Harness::new(cfg, move |m| {
        Both::new(
            Warpwire::new(proto_cfg, Handlers::with_examples(), None, m.clone()),
            Echo,
        )
    })
}

#[test]
fn each_connection_gets_its_listeners_protocol() {
    let mut h = harness(with_echo(ServerConfig::default()));
    let (w, e) = (h.connect(), h.connect_to(1));
    h.settle();
    h.send(w, &Ping { timestamp_ns: 9 }.request(9).to_bytes().unwrap());
    h.send(e, b"hello, ");
    h.send(e, b"echo\n");
    h.settle();
    let mut d = Decoder::new(DecoderConfig::default());
    let out = h.received(w);
    assert_eq!(d.feed(&out), out.len());
    let pong = d.decode().unwrap().expect("a whole frame");
    assert_eq!((pong.msg_type, pong.request_id), (MessageType::PONG, 9));
    assert_eq!(h.received(e), b"hello, echo\n");
    // Bytes that are warpwire on one port are plain bytes on the other.
    let ping = Ping { timestamp_ns: 1 }.request(1).to_bytes().unwrap();
    h.send(e, &ping);
    h.settle();
    assert_eq!(h.received(e), ping);
    // Echo answers what came before a half-close, then closes.
    h.send(e, b"last words");
    h.fin(e);
    h.settle();
    assert_eq!(h.received(e), b"last words");
    assert_eq!(h.closed(e), Some(CloseReason::Local));
    assert_eq!(h.closed(w), None);
}

#[test]
fn an_echo_peer_that_does_not_read_is_paused_not_buffered() {
    let mut h = harness(with_echo(ServerConfig {
        max_output: 64 << 10,
        ..ServerConfig::default()
    }));
    let e = h.connect_to(1);
    h.settle();
    h.set_window(e, Some(0));
    let chunk = vec![7u8; 16 << 10];
    for _ in 0..64 {
        h.send(e, &chunk);
        h.settle();
    }
    // 1 MiB sent, the reader takes nothing: at most the output cap plus a
    // chunk is held, the rest stays with the peer (flow control).
    assert!(h.paused(e), "reading must pause");
    assert!(
        h.unread(e) >= (1 << 20) - (64 << 10) - 2 * chunk.len(),
        "only {} bytes left unread",
        h.unread(e)
    );
    h.set_window(e, None);
    for _ in 0..200 {
        h.settle();
    }
    assert_eq!(h.received(e).len(), 1 << 20, "everything echoed once read");
}

#[test]
fn a_listener_naming_an_unknown_protocol_is_refused_at_start() {
    let mut cfg = config();
    cfg.listeners = vec!["gopher=127.0.0.1:0".parse().unwrap()];
    let err = Server::new(cfg)
        .start_with(|_| warpwire_socket::SocketTransport::new(), |_| Echo)
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::UnknownProtocol { protocol, .. } if protocol == "gopher"),
        "{err}"
    );
    assert!(err.to_string().contains("warpwire, echo"), "{err}");
}

#[test]
fn both_lists_each_name_once_and_routes_by_it() {
    let b = Both::new(Echo, Both::new(Upper, Echo));
    assert_eq!(b.names(), ["echo", "upper"]);
    let mut cfg = config();
    cfg.listeners = vec![ListenerConfig {
        protocol: "upper".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: false,
    }];
    let h = serve(cfg, |_| warpwire_socket::SocketTransport::new(), |_| b).unwrap();
    assert_eq!(h.listeners()[0].0, "echo");
    let mut s = TcpStream::connect(h.addr_of("upper").unwrap()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"shout\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello\nSHOUT\n");
    h.stop().unwrap();
}

/// 4 MiB through the echo port from a kernel socket (written by one
/// thread, read by another), then a half-close: every byte back, in
/// order, then EOF; the warpwire port answers PING meanwhile.
fn echo_and_warpwire(h: ServerHandle) {
    let echo: SocketAddr = h.addr_of("echo").unwrap();
    assert_ne!(echo, h.local_addr());
    let mut s = TcpStream::connect(echo).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let sent: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut w = s.try_clone().unwrap();
    let data = sent.clone();
    let writer = std::thread::spawn(move || {
        for c in data.chunks(100_000) {
            w.write_all(c).unwrap();
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut c = Conn::connect(h.local_addr());
    let pong = c.call(&Ping { timestamp_ns: 5 }.request(5));
    assert_eq!(pong.msg_type, MessageType::PONG);
    let mut got = Vec::with_capacity(sent.len());
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "echoed bytes differ");
    h.stop().unwrap();
}

#[test]
fn warpwire_and_echo_over_epoll() {
    let h = Server::new(with_echo(config()))
        .start_with(|_| warpwire_socket::SocketTransport::new(), |_| Echo)
        .unwrap();
    echo_and_warpwire(h);
}

#[test]
fn warpwire_and_echo_over_io_uring() {
    let h = Server::new(with_echo(config()))
        .start_with(|_| warpwire_uring::UringTransport::new(), |_| Echo)
        .unwrap();
    echo_and_warpwire(h);
}

#[test]
fn echo_is_idle_closed_silently() {
    let mut cfg = with_echo(config());
    cfg.idle_timeout = Duration::from_millis(300);
    let h = Server::new(cfg)
        .start_with(|_| warpwire_socket::SocketTransport::new(), |_| Echo)
        .unwrap();
    let mut s = TcpStream::connect(h.addr_of("echo").unwrap()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert!(got.is_empty(), "RFC 862 has no error messages: {got:?}");
    h.stop().unwrap();
}
