//! The general-purpose client over other protocols than warpwire:
//! `GenericClient<Echo>` against the engine's echo server (RFC 862) and
//! `GenericClient<Http>` against warpwire's HTTP server, both served by
//! `warpwire_engine` over kernel TCP on loopback. Pipelining from several
//! threads, reconnect after a restart, HTTP's `Connection: close`, and
//! timeouts in an in-order pipeline (which reset the connection), the
//! last against a small raw-TCP echo server that holds its replies until
//! the test releases them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{bounded, wait_until};
use warpwire_client::protocol::{EchoRequest, HttpRequest, HttpTarget};
use warpwire_client::{Backoff, ClientConfig, ClientError, Echo, GenericClient, Http, Pending};
use warpwire_engine::{ServerConfig, ServerHandle};
use warpwire_socket::SocketTransport;

const LIMIT: Duration = Duration::from_secs(20);

/// Which server the engine runs.
#[derive(Clone, Copy)]
enum Kind {
    Echo,
    /// HTTP with this request body limit (413 and a close beyond it).
    Http {
        max_body: usize,
    },
}

/// An engine server on loopback, stopped when dropped.
struct Server(Option<ServerHandle>);

impl Server {
    fn start(kind: Kind, listen: SocketAddr) -> Self {
        let cfg = ServerConfig {
            listen,
            workers: 1,
            app_workers: 1,
            shutdown_grace: Duration::from_millis(200),
            ..ServerConfig::default()
        };
        let h = match kind {
            Kind::Echo => {
                warpwire_engine::serve(cfg, |_| SocketTransport::new(), |_| warpwire_engine::Echo)
            }
            Kind::Http { max_body } => warpwire_engine::serve(
                cfg,
                |_| SocketTransport::new(),
                |m| {
                    let cfg = warpwire_http::HttpConfig {
                        max_body,
                        ..Default::default()
                    };
                    warpwire_http::Http::new(cfg, m.clone())
                },
            ),
        };
        Self(Some(h.unwrap()))
    }

    fn any_port(kind: Kind) -> Self {
        Self::start(kind, "127.0.0.1:0".parse().unwrap())
    }

    fn addr(&self) -> SocketAddr {
        self.0.as_ref().expect("running").local_addr()
    }

    fn stop(mut self) {
        if let Some(h) = self.0.take() {
            h.stop().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.stop();
        }
    }
}

/// Quick reconnects, no heartbeats (neither protocol has one anyway).
fn cfg() -> ClientConfig {
    ClientConfig {
        reconnect: Some(Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(200),
        }),
        heartbeat_interval: None,
        ..ClientConfig::default()
    }
}

fn echo_client(addr: SocketAddr, cfg: ClientConfig) -> GenericClient<Echo> {
    GenericClient::connect_with(Echo::default(), SocketTransport::new, addr, cfg).unwrap()
}

fn http_client(addr: SocketAddr, cfg: ClientConfig) -> GenericClient<Http> {
    GenericClient::connect_with(Http::default(), SocketTransport::new, addr, cfg).unwrap()
}

/// The id an echo reply (or `POST /echo` body) was made from, after
/// checking that it is whole: `size` bytes, each as the id dictates. The
/// sizes of a test's requests differ, so a reply handed to another
/// request fails the length check.
fn id_of(reply: &[u8], size: usize) -> u64 {
    assert_eq!(reply.len(), size, "a reply of another request");
    let id = u64::from_le_bytes(reply[..8].try_into().unwrap());
    assert_eq!(reply, &Echo::content(id, size)[..], "corrupted reply");
    id
}

fn http_echo(addr: SocketAddr, size: usize) -> HttpRequest {
    HttpRequest::new(&addr.to_string(), HttpTarget::Echo { size }).unwrap()
}

fn http_ping(addr: SocketAddr) -> HttpRequest {
    HttpRequest::new(&addr.to_string(), HttpTarget::Ping).unwrap()
}

#[test]
fn echo_pipelines_from_several_threads() {
    bounded(LIMIT, || {
        let srv = Server::any_port(Kind::Echo);
        let c = Arc::new(echo_client(srv.addr(), cfg()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    // Every request of the test has its own size, 8..5,008
                    // bytes (some over a read chunk): all submitted before
                    // the first is waited for.
                    let sizes: Vec<usize> = (0..250).map(|i| 8 + t * 1250 + i * 5).collect();
                    let pending: Vec<(usize, Pending<Bytes>)> = sizes
                        .iter()
                        .map(|&size| (size, c.request(EchoRequest { size })))
                        .collect();
                    pending
                        .into_iter()
                        .map(|(size, p)| id_of(&p.wait().unwrap(), size))
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let ids: HashSet<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(ids.len(), 1000, "every reply is a different request's");
        assert_eq!(c.late_replies(), 0);
        assert_eq!(c.reconnects(), 0);
        // Refused by the protocol on the I/O thread: nothing sent.
        let e = c.request(EchoRequest { size: 0 }).wait().unwrap_err();
        assert!(matches!(e, ClientError::ProtocolEncode(_)), "{e:?}");
        assert_eq!(
            id_of(&c.request(EchoRequest { size: 9 }).wait().unwrap(), 9),
            1001
        );
    });
}

#[test]
fn echo_reconnects_after_the_server_restarts() {
    bounded(LIMIT, || {
        let srv = Server::any_port(Kind::Echo);
        let addr = srv.addr();
        let c = echo_client(addr, cfg());
        id_of(&c.request(EchoRequest { size: 100 }).wait().unwrap(), 100);
        srv.stop();
        assert!(wait_until(Duration::from_secs(3), || !c.is_connected()));
        // Waits, queued, for the connection to come back.
        let p = c.request(EchoRequest { size: 300 });
        std::thread::sleep(Duration::from_millis(200));
        assert!(!p.is_ready());
        let _srv = Server::start(Kind::Echo, addr);
        id_of(&p.wait().unwrap(), 300);
        assert!(c.is_connected());
        assert_eq!(c.reconnects(), 1);
    });
}

#[test]
fn echo_timeouts_under_load_leave_a_working_client() {
    bounded(LIMIT, || {
        let srv = Server::any_port(Kind::Echo);
        let c = echo_client(srv.addr(), cfg());
        // 64 KiB replies with a 2 ms deadline: some come back in time,
        // some time out in flight (resetting the connection), some are
        // given up behind them, some time out before being sent.
        let pending: Vec<_> = (0..200)
            .map(|i| {
                let size = 65_536 + i;
                let p = c.request_within(EchoRequest { size }, Duration::from_millis(2));
                (size, p)
            })
            .collect();
        let mut outcomes = [0u32; 3];
        for (size, p) in pending {
            match p.wait() {
                Ok(r) => {
                    id_of(&r, size);
                    outcomes[0] += 1;
                }
                Err(ClientError::Timeout) => outcomes[1] += 1,
                Err(ClientError::PipelineReset) => outcomes[2] += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(outcomes[1] > 0, "{outcomes:?}");
        // Whatever happened, the next request is answered, by its own reply.
        for size in [10, 20_000] {
            let r = c
                .request_within(EchoRequest { size }, Duration::from_secs(5))
                .wait()
                .unwrap();
            id_of(&r, size);
        }
    });
}

/// An echo server whose replies wait until [`Gate::open`]: a server stuck
/// on a request, for the in-order timeout test.
struct Gate {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Gate {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, a, s) = (open.clone(), accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        let (o, s) = (o.clone(), s.clone());
                        std::thread::spawn(move || {
                            conn.set_read_timeout(Some(Duration::from_millis(5)))
                                .unwrap();
                            let mut held = Vec::new();
                            let mut buf = [0u8; 4096];
                            while !s.load(Ordering::SeqCst) {
                                match conn.read(&mut buf) {
                                    Ok(0) => return,
                                    Ok(n) => held.extend_from_slice(&buf[..n]),
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            ErrorKind::WouldBlock | ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => return,
                                }
                                if o.load(Ordering::SeqCst) && !held.is_empty() {
                                    if conn.write_all(&held).is_err() {
                                        return;
                                    }
                                    held.clear();
                                }
                            }
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => return,
                }
            }
        });
        Self {
            addr,
            open,
            accepted,
            stop,
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn an_in_order_timeout_resets_the_connection() {
    bounded(LIMIT, || {
        let gate = Gate::start();
        let c = echo_client(gate.addr, cfg());
        // The handshake completes before the server's accept loop sees it.
        assert!(wait_until(Duration::from_secs(3), || gate
            .accepted
            .load(Ordering::SeqCst)
            == 1));
        // The server holds every reply: the first request times out in
        // flight; its reply would still come and be taken for the second's.
        let first = c.request_within(EchoRequest { size: 10 }, Duration::from_millis(200));
        let behind: Vec<_> = (0..3)
            .map(|i| c.request_within(EchoRequest { size: 20 + i }, Duration::from_secs(10)))
            .collect();
        assert!(matches!(first.wait(), Err(ClientError::Timeout)));
        for p in behind {
            let e = p.wait().unwrap_err();
            assert!(matches!(e, ClientError::PipelineReset), "{e:?}");
            assert!(e.to_string().contains("timed out"), "{e}");
        }
        // A new connection; the old one's held bytes never reach it.
        assert!(wait_until(Duration::from_secs(3), || c.reconnects() == 1
            && c.is_connected()));
        assert!(wait_until(Duration::from_secs(3), || gate
            .accepted
            .load(Ordering::SeqCst)
            == 2));
        gate.open.store(true, Ordering::SeqCst);
        let r = c.request(EchoRequest { size: 30 }).wait().unwrap();
        id_of(&r, 30);
        assert_eq!(c.late_replies(), 0);
    });
}

#[test]
fn an_in_order_timeout_without_reconnect_leaves_the_client_down() {
    bounded(LIMIT, || {
        let gate = Gate::start();
        let c = echo_client(
            gate.addr,
            ClientConfig {
                reconnect: None,
                ..cfg()
            },
        );
        let first = c.request_within(EchoRequest { size: 10 }, Duration::from_millis(100));
        let second = c.request_within(EchoRequest { size: 11 }, Duration::from_secs(10));
        assert!(matches!(first.wait(), Err(ClientError::Timeout)));
        assert!(matches!(second.wait(), Err(ClientError::PipelineReset)));
        let e = c.request(EchoRequest { size: 12 }).wait().unwrap_err();
        assert!(matches!(e, ClientError::Disconnected), "{e:?}");
        assert!(!c.is_connected());
    });
}

#[test]
fn http_pipelines_pings_and_echoes_from_several_threads() {
    bounded(LIMIT, || {
        let srv = Server::any_port(Kind::Http { max_body: 1 << 20 });
        let addr = srv.addr();
        let c = Arc::new(http_client(addr, cfg()));
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    let sizes: Vec<usize> = (0..200).map(|i| 8 + t * 2000 + i * 7).collect();
                    let echoes: Vec<_> = sizes
                        .iter()
                        .map(|&size| (size, c.request(http_echo(addr, size))))
                        .collect();
                    let pings: Vec<_> = (0..50).map(|_| c.request(http_ping(addr))).collect();
                    for p in pings {
                        let r = p.wait().unwrap();
                        assert_eq!((r.status, &r.body[..]), (200, &b"pong\n"[..]));
                    }
                    echoes
                        .into_iter()
                        .map(|(size, p)| {
                            let r = p.wait().unwrap();
                            assert_eq!(r.status, 200);
                            assert!(!r.close);
                            id_of(&r.body, size)
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let ids: HashSet<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(ids.len(), 600);
        assert_eq!(c.reconnects(), 0, "keep-alive all along");
        // A large body, over many reads.
        let r = c.request(http_echo(addr, 300_000)).wait().unwrap();
        id_of(&r.body, 300_000);
    });
}

#[test]
fn http_connection_close_is_answered_then_the_client_reconnects() {
    bounded(LIMIT, || {
        // Bodies over 1,000 bytes are refused with 413 and a close.
        let srv = Server::any_port(Kind::Http { max_body: 1000 });
        let addr = srv.addr();
        let c = http_client(addr, cfg());
        let before = c.request(http_echo(addr, 100));
        let refused = c.request(http_echo(addr, 2000));
        let behind: Vec<_> = (0..3)
            .map(|i| (101 + i, c.request(http_echo(addr, 101 + i))))
            .collect();
        id_of(&before.wait().unwrap().body, 100);
        let r = refused.wait().unwrap();
        assert_eq!(r.status, 413);
        assert!(r.close, "{r:?}");
        // Pipelined behind the close: unanswered, so Disconnected; one
        // submitted after the client saw the close goes on the new
        // connection instead.
        for (size, p) in behind {
            match p.wait() {
                Ok(r) => {
                    id_of(&r.body, size);
                }
                Err(ClientError::Disconnected) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(wait_until(Duration::from_secs(3), || c.reconnects() == 1
            && c.is_connected()));
        id_of(&c.request(http_echo(addr, 200)).wait().unwrap().body, 200);
        assert_eq!(c.reconnects(), 1);
    });
}

#[test]
fn http_reconnects_after_the_server_restarts() {
    bounded(LIMIT, || {
        let kind = Kind::Http { max_body: 1 << 20 };
        let srv = Server::any_port(kind);
        let addr = srv.addr();
        let c = http_client(addr, cfg());
        assert_eq!(c.request(http_ping(addr)).wait().unwrap().status, 200);
        srv.stop();
        assert!(wait_until(Duration::from_secs(3), || !c.is_connected()));
        let p = c.request(http_echo(addr, 500));
        let _srv = Server::start(kind, addr);
        id_of(&p.wait().unwrap().body, 500);
        assert_eq!(c.reconnects(), 1);
    });
}

#[test]
fn a_pool_of_echo_clients() {
    bounded(LIMIT, || {
        let srv = Server::any_port(Kind::Echo);
        let pool = warpwire_client::Pool::connect_with(
            Echo::default(),
            SocketTransport::new,
            srv.addr(),
            cfg(),
            2,
        )
        .unwrap();
        let pending: Vec<_> = (0..20)
            .map(|i| (100 + i, pool.get().request(EchoRequest { size: 100 + i })))
            .collect();
        for (size, p) in pending {
            id_of(&p.wait().unwrap(), size);
        }
        assert_eq!(pool.len(), 2);
        pool.close();
    });
}
