//! The client library against the real engine over loopback: pipelining,
//! broadcast subscription, authentication, and reconnect across a server
//! restart on the same port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use warpwire_client::{Client, ClientConfig, ClientError};
use warpwire_engine::{Server, ServerConfig, ServerHandle, UserDb};
use warpwire_frame::{ErrorCode, MessageType};
use warpwire_socket::SocketTransport;

fn serve(listen: SocketAddr, cfg: ServerConfig) -> ServerHandle {
    Server::new(ServerConfig {
        listen,
        workers: 2,
        shutdown_grace: Duration::from_millis(500),
        ..cfg
    })
    .start(|_| SocketTransport::new())
    .unwrap()
}

fn connect(addr: SocketAddr, cfg: ClientConfig) -> Client {
    Client::connect(SocketTransport::new, addr, cfg).unwrap()
}

#[test]
fn pipelined_requests_through_the_client() {
    let h = serve("127.0.0.1:0".parse().unwrap(), ServerConfig::default());
    let c = connect(h.local_addr(), ClientConfig::default());
    let pending: Vec<_> = (0..2000u32)
        .map(|i| {
            c.request(warpwire_client::Request::new(
                MessageType::ECHO,
                Bytes::from(i.to_be_bytes().to_vec()),
            ))
        })
        .collect();
    for (i, p) in pending.into_iter().enumerate() {
        let f = p.wait().unwrap();
        assert_eq!(&f.body[..], &(i as u32).to_be_bytes());
    }
    assert_eq!(&c.app(0x81, Bytes::from_static(b"up")).unwrap()[..], b"UP");
    let s = c.stats().unwrap();
    assert!(s.messages_in >= 2001);
    h.stop().unwrap();
}

#[test]
fn subscription_receives_broadcasts_from_another_client() {
    let h = serve("127.0.0.1:0".parse().unwrap(), ServerConfig::default());
    let listener = connect(h.local_addr(), ClientConfig::default());
    let rx = listener.subscribe();
    let sender = connect(h.local_addr(), ClientConfig::default());
    listener.ping().unwrap();
    assert_eq!(sender.broadcast(Bytes::from_static(b"news")).unwrap(), 1);
    let f = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (f.msg_type, &f.body[..]),
        (MessageType::BROADCAST, &b"news"[..])
    );
    h.stop().unwrap();
}

#[test]
fn auth_through_the_client_config() {
    let users = std::env::temp_dir().join(format!("ww-ce-users-{}", std::process::id()));
    let _ = std::fs::remove_file(&users);
    UserDb::add_to_file(&users, "bob", b"tok").unwrap();
    let h = serve(
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig {
            require_auth: true,
            users_file: Some(users.clone()),
            ..ServerConfig::default()
        },
    );
    let ok = connect(
        h.local_addr(),
        ClientConfig {
            auth: Some(("bob".into(), b"tok".to_vec())),
            ..ClientConfig::default()
        },
    );
    assert_eq!(&ok.echo(Bytes::from_static(b"x")).unwrap()[..], b"x");
    let anon = connect(h.local_addr(), ClientConfig::default());
    let e = anon.echo(Bytes::from_static(b"x")).unwrap_err();
    assert_eq!(e.server_code(), Some(ErrorCode::Unauthenticated), "{e}");
    h.stop().unwrap();
    std::fs::remove_file(users).unwrap();
}

#[test]
fn client_reconnects_after_the_server_restarts() {
    let h = serve("127.0.0.1:0".parse().unwrap(), ServerConfig::default());
    let addr = h.local_addr();
    let c = connect(
        addr,
        ClientConfig {
            request_timeout: Duration::from_secs(2),
            ..ClientConfig::default()
        },
    );
    assert_eq!(
        &c.echo(Bytes::from_static(b"before")).unwrap()[..],
        b"before"
    );
    h.stop().unwrap();
    // While the server is down, requests fail (disconnected or timed out), never hang.
    match c.echo(Bytes::from_static(b"during")) {
        Err(ClientError::Disconnected | ClientError::Timeout) => {}
        other => panic!("expected a failure while the server is down, got {other:?}"),
    }
    let h2 = serve(addr, ServerConfig::default());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.echo(Bytes::from_static(b"after")) {
            Ok(b) => {
                assert_eq!(&b[..], b"after");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no reconnect within 10 s: {e}"),
        }
    }
    assert!(c.reconnects() >= 1);
    h2.stop().unwrap();
}

/// Regression: with the output buffer full, the I/O thread parks requests in
/// its local queue; when a flush then drains the buffer it must send them
/// at once, not sleep (it used to sleep its 1 s maximum, so bulk DATA moved
/// one burst per second: 50 MB took 33 s over AF_XDP, 0.6 s after the fix).
#[test]
fn bulk_data_is_not_stalled_by_a_full_output_buffer() {
    let h = serve("127.0.0.1:0".parse().unwrap(), ServerConfig::default());
    let c = connect(
        h.local_addr(),
        ClientConfig {
            output_buffer: 16 * 1024,
            ..ClientConfig::default()
        },
    );
    let chunk = Bytes::from(vec![0x5a; 64 * 1024]);
    let start = Instant::now();
    let mut written = Vec::new();
    for _ in 0..320 {
        written.push(c.send(warpwire_client::Request::new(
            MessageType::DATA,
            chunk.clone(),
        )));
    }
    for w in written {
        w.wait().unwrap();
    }
    assert_eq!(c.data(Bytes::from_static(b"end"), true).unwrap(), Some(3));
    let took = start.elapsed();
    // 20 MB over loopback takes tens of milliseconds; one stall costs 1 s.
    assert!(
        took < Duration::from_millis(900),
        "20 MB took {took:?}: the I/O thread slept with work queued"
    );
    h.stop().unwrap();
}
