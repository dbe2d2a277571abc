//! The client against the real server (`warpwire_engine`) over kernel TCP
//! on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    APP_REVERSE, APP_SILENT, Engine, TOKEN, USER, bounded, config, connect, quiet, wait_until,
};
use warpwire_client::{Backoff, ClientConfig, ClientError, Pool, Request};
use warpwire_engine::{HandlerError, ServerConfig, SessionInfo};
use warpwire_frame::{Decoder, ErrorBody, ErrorCode, Flags, Frame, MessageType};
use warpwire_socket::SocketTransport;

const LIMIT: Duration = Duration::from_secs(10);
/// An application type whose handler blocks until its test lets it go.
const APP_STALL: u8 = 0xA1;

#[test]
fn typed_calls() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let c = connect(srv.addr(), quiet()).unwrap();
        assert!(c.is_connected());
        let rtt = c.ping().unwrap();
        assert!(
            rtt > Duration::ZERO && rtt < Duration::from_secs(1),
            "{rtt:?}"
        );
        assert_eq!(&c.echo(&b"hello"[..]).unwrap()[..], b"hello");
        assert_eq!(&c.echo(Bytes::new()).unwrap()[..], b"");
        assert_eq!(c.data(vec![0u8; 300], true).unwrap(), Some(300));
        assert_eq!(c.data(&b"fire and forget"[..], false).unwrap(), None);
        let s = c.stats().unwrap();
        assert_eq!(s.transport, "socket");
        assert_eq!(s.connections, 1);
        assert!(s.messages_in >= 5, "{s:?}");
        assert_eq!(&c.app(APP_REVERSE, &b"abc"[..]).unwrap()[..], b"cba");
        assert!(matches!(
            c.app(0x10, Bytes::new()),
            Err(ClientError::NotApplicationType(0x10))
        ));
        let e = c.app(0x90, Bytes::new()).unwrap_err();
        assert_eq!(e.server_code(), Some(ErrorCode::UnknownType), "{e:?}");
        let ok = c.auth(USER, TOKEN).unwrap();
        assert!(ok.ok);
        assert_ne!(
            ok.session_id, [0; 16],
            "the session's id, not a refusal's zeros"
        );
        let e = c.auth(USER, b"wrong").unwrap_err();
        assert_eq!(e.server_code(), Some(ErrorCode::AuthFailed), "{e:?}");
        // A generic request with flags and metadata.
        let reply = c
            .request(
                Request::new(MessageType::DATA, &b"12345"[..]).with_flags(Flags::ACK_REQUESTED),
            )
            .wait()
            .unwrap();
        assert_eq!(reply.msg_type, MessageType::DATA_ACK);
        assert!(reply.flags.is_response());
        assert_ne!(reply.request_id, 0);
        c.close();
    });
}

#[test]
fn two_thousand_pipelined_echoes_in_order() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let c = connect(srv.addr(), quiet()).unwrap();
        let pending: Vec<_> = (0..2000u32)
            .map(|i| {
                c.request(Request::new(
                    MessageType::ECHO,
                    i.to_be_bytes().repeat(1 + i as usize % 7),
                ))
            })
            .collect();
        let mut last_id = 0;
        for (i, p) in (0..2000u32).zip(pending) {
            let f = p.wait().unwrap();
            assert_eq!(f.msg_type, MessageType::ECHO_REPLY);
            assert_eq!(&f.body[..], &i.to_be_bytes().repeat(1 + i as usize % 7)[..]);
            assert!(f.request_id > last_id, "ids follow submission order");
            last_id = f.request_id;
        }
        assert_eq!(last_id, 2000, "ids start at 1 and have no gaps");
        // The server saw them all, in one connection.
        assert_eq!(srv.frames(), 2000);
        assert_eq!(srv.accepted(), 1);
    });
}

#[test]
fn many_threads_share_one_client() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let c = connect(srv.addr(), quiet()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let c = &c;
                s.spawn(move || {
                    for i in 0..250u32 {
                        let body = [&[t][..], &i.to_be_bytes()[..]].concat();
                        assert_eq!(&c.echo(body.clone()).unwrap()[..], &body[..]);
                    }
                });
            }
        });
        assert_eq!(srv.frames(), 1000);
    });
}

#[test]
fn timeout_fires_and_the_client_recovers() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let cfg = ClientConfig {
            request_timeout: Duration::from_millis(300),
            ..quiet()
        };
        let c = connect(srv.addr(), cfg).unwrap();
        let t = Instant::now();
        assert!(matches!(
            c.app(APP_SILENT, &b"x"[..]),
            Err(ClientError::Timeout)
        ));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // Per-call override.
        let t = Instant::now();
        let r = c
            .request(
                Request::new(MessageType(APP_SILENT), &b"y"[..])
                    .with_timeout(Duration::from_millis(50)),
            )
            .wait();
        assert!(matches!(r, Err(ClientError::Timeout)));
        assert!(
            t.elapsed() < Duration::from_millis(280),
            "{:?}",
            t.elapsed()
        );
        // The connection is still usable.
        assert_eq!(&c.echo(&b"z"[..]).unwrap()[..], b"z");
        assert!(c.is_connected());
    });
}

#[test]
fn max_in_flight_bounds_what_is_sent() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let cfg = ClientConfig {
            max_in_flight: 4,
            request_timeout: Duration::from_millis(400),
            ..quiet()
        };
        let c = connect(srv.addr(), cfg).unwrap();
        let pending: Vec<_> = (0..10)
            .map(|_| c.request(Request::new(MessageType(APP_SILENT), &b"q"[..])))
            .collect();
        for p in pending {
            assert!(matches!(p.wait(), Err(ClientError::Timeout)));
        }
        // The first four were sent; the rest waited in the queue and
        // expired there.
        assert!(wait_until(Duration::from_secs(1), || srv.frames() >= 4));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(srv.frames(), 4);
    });
}

#[test]
fn server_errors_complete_requests() {
    bounded(LIMIT, || {
        let srv = Engine::with_config(ServerConfig {
            require_auth: true,
            ..config()
        });
        let c = connect(srv.addr(), quiet()).unwrap();
        let e = c.echo(&b"x"[..]).unwrap_err();
        assert!(
            matches!(&e, ClientError::Server { code: 6, message } if message.starts_with("authenticate first")),
            "{e:?}"
        );
        // PING is allowed before AUTH.
        c.ping().unwrap();
        assert!(c.auth(USER, TOKEN).unwrap().ok);
        assert_eq!(&c.echo(&b"x"[..]).unwrap()[..], b"x");
    });
}

#[test]
fn reconnects_after_the_server_restarts() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let addr = srv.addr();
        let cfg = ClientConfig {
            reconnect: Some(Backoff {
                base: Duration::from_millis(20),
                max: Duration::from_millis(200),
            }),
            request_timeout: Duration::from_secs(5),
            ..quiet()
        };
        let c = connect(addr, cfg).unwrap();
        assert_eq!(&c.echo(&b"before"[..]).unwrap()[..], b"before");

        // A request in flight when the connection drops fails with
        // Disconnected, promptly.
        let p = c.request(Request::new(MessageType(APP_SILENT), &b"lost"[..]));
        assert!(wait_until(Duration::from_secs(2), || srv.frames() >= 2));
        srv.stop();
        let t = Instant::now();
        assert!(matches!(p.wait(), Err(ClientError::Disconnected)));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(wait_until(Duration::from_secs(2), || !c.is_connected()));

        // Submitted while down: waits for the new server on the same port.
        let p = c.request(Request::new(MessageType::ECHO, &b"after"[..]));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!p.is_ready());
        let srv2 = Engine::with_config(ServerConfig {
            listen: addr,
            ..config()
        });
        let f = p.wait().unwrap();
        assert_eq!(&f.body[..], b"after");
        assert!(c.is_connected());
        assert_eq!(c.reconnects(), 1);
        assert_eq!(srv2.accepted(), 1);
    });
}

#[test]
fn queued_requests_time_out_while_disconnected() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let addr = srv.addr();
        let cfg = ClientConfig {
            reconnect: Some(Backoff {
                base: Duration::from_millis(20),
                max: Duration::from_millis(100),
            }),
            request_timeout: Duration::from_millis(300),
            ..quiet()
        };
        let c = connect(addr, cfg).unwrap();
        srv.stop();
        assert!(wait_until(Duration::from_secs(2), || !c.is_connected()));
        let t = Instant::now();
        assert!(matches!(c.echo(&b"x"[..]), Err(ClientError::Timeout)));
        assert!(t.elapsed() < Duration::from_secs(1));
    });
}

#[test]
fn without_reconnect_a_lost_connection_stays_down() {
    bounded(LIMIT, || {
        // The server drops the silent connection; its listener stays, so
        // a reconnect would be accepted (and counted).
        let srv = Engine::with_config(ServerConfig {
            idle_timeout: Duration::from_millis(300),
            ..config()
        });
        let cfg = ClientConfig {
            reconnect: None,
            ..quiet()
        };
        let c = connect(srv.addr(), cfg).unwrap();
        srv.wait_open(1);
        assert!(wait_until(Duration::from_secs(2), || !c.is_connected()));
        let t = Instant::now();
        assert!(matches!(c.echo(&b"x"[..]), Err(ClientError::Disconnected)));
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(srv.accepted(), 1);
    });
}

#[test]
fn reauthenticates_after_reconnect() {
    bounded(LIMIT, || {
        let cfg = ServerConfig {
            require_auth: true,
            ..config()
        };
        let srv = Engine::with_config(cfg.clone());
        let addr = srv.addr();
        let client_cfg = ClientConfig {
            auth: Some((USER.into(), TOKEN.to_vec())),
            reconnect: Some(Backoff {
                base: Duration::from_millis(10),
                max: Duration::from_millis(50),
            }),
            ..quiet()
        };
        let c = connect(addr, client_cfg).unwrap();
        // Connected means authenticated: the AUTH was the one frame.
        assert_eq!(srv.frames(), 1);
        assert_eq!(&c.echo(&b"one"[..]).unwrap()[..], b"one");
        // The connection drops; a new server, as strict, takes its place.
        srv.stop();
        let srv = Engine::with_config(ServerConfig {
            listen: addr,
            ..cfg
        });
        assert!(wait_until(Duration::from_secs(3), || c.reconnects() == 1));
        // Would be UNAUTHENTICATED had the client not replayed its AUTH.
        assert_eq!(&c.echo(&b"two"[..]).unwrap()[..], b"two");
        assert_eq!(srv.frames(), 2, "one AUTH, then the ECHO");
    });
}

#[test]
fn bad_credentials_fail_connect() {
    bounded(LIMIT, || {
        let srv = Engine::with_config(ServerConfig {
            require_auth: true,
            ..config()
        });
        let cfg = ClientConfig {
            auth: Some((USER.into(), b"nope".to_vec())),
            ..quiet()
        };
        let e = connect(srv.addr(), cfg).unwrap_err();
        assert!(matches!(e, ClientError::AuthRejected), "{e:?}");
    });
}

#[test]
fn connect_to_nothing_fails() {
    bounded(LIMIT, || {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = connect(addr, quiet()).unwrap_err();
        assert!(
            matches!(e, ClientError::ConnectFailed { addr: a, .. } if a == addr),
            "{e:?}"
        );
    });
}

#[test]
fn heartbeats_when_idle_only() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let cfg = ClientConfig {
            heartbeat_interval: Some(Duration::from_millis(100)),
            ..ClientConfig::default()
        };
        let c = connect(srv.addr(), cfg).unwrap();
        std::thread::sleep(Duration::from_millis(650));
        // Heartbeats are all the client sends here.
        let idle = srv.frames();
        assert!(
            (4..=8).contains(&idle),
            "{idle} heartbeats in 650 ms at 100 ms"
        );
        // Busy: traffic every 10 ms leaves no frame-less 100 ms gap (one
        // heartbeat is tolerated for a descheduled test thread).
        let before = srv.frames();
        for _ in 0..50 {
            c.echo(&b"busy"[..]).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        let busy = srv.frames() - before - 50;
        assert!(busy <= 1, "{busy} heartbeats while busy");
        assert!(c.is_connected(), "PONGs were consumed and matched");
        assert_eq!(c.late_replies(), 0);

        // And none at all when disabled.
        let srv = Engine::start();
        let _c = connect(srv.addr(), quiet()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(srv.frames(), 0);
    });
}

#[test]
fn unanswered_heartbeat_drops_the_connection() {
    bounded(LIMIT, || {
        // A blocking handler that returns when `release` is dropped: the
        // connection's later frames, the heartbeats, wait behind it.
        let (release, held) = crossbeam_channel::bounded::<()>(0);
        let srv = Engine::with_setup(config(), move |s| {
            let stall =
                move |_: &SessionInfo<'_>, _: &Frame| -> Result<Option<Bytes>, HandlerError> {
                    let _ = held.recv_timeout(Duration::from_secs(5));
                    Ok(None)
                };
            s.register_blocking(APP_STALL, stall).unwrap();
        });
        let cfg = ClientConfig {
            heartbeat_interval: Some(Duration::from_millis(50)),
            request_timeout: Duration::from_millis(200),
            reconnect: None,
            ..ClientConfig::default()
        };
        let c = connect(srv.addr(), cfg).unwrap();
        let _stalled = c.request(Request::new(MessageType(APP_STALL), Bytes::new()));
        assert!(wait_until(Duration::from_secs(2), || !c.is_connected()));
        // The handler returns before the server stops (which waits for it).
        drop(release);
    });
}

#[test]
fn subscription_receives_server_initiated_frames() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let c = connect(srv.addr(), quiet()).unwrap();
        let sub = c.subscribe();
        // A BROADCAST from another client is relayed (request_id 0, not a
        // response) with `from` metadata.
        let other = connect(srv.addr(), quiet()).unwrap();
        srv.wait_open(2);
        assert_eq!(other.broadcast(&b"news"[..]).unwrap(), 1);
        let f = sub.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(
            (f.msg_type, f.request_id, &f.body[..]),
            (MessageType::BROADCAST, 0, &b"news"[..])
        );
        assert!(!f.flags.is_response());
        assert_eq!(f.metadata().unwrap().get("from").map(<[u8]>::len), Some(16));
        // Replies never reach subscribers.
        c.echo(&b"reply"[..]).unwrap();
        assert!(sub.recv_timeout(Duration::from_millis(100)).is_err());
        // Relays after a reply still do.
        assert_eq!(other.broadcast(&b"hi all"[..]).unwrap(), 1);
        let f = sub.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(&f.body[..], b"hi all");
        // Closing the client ends the subscription.
        c.close();
        assert!(matches!(
            sub.recv_timeout(Duration::from_secs(2)),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        ));
    });
}

#[test]
fn subscription_receives_unsolicited_errors() {
    bounded(LIMIT, || {
        // The server's own unsolicited ERROR: IDLE_TIMEOUT, then it closes.
        let srv = Engine::with_config(ServerConfig {
            idle_timeout: Duration::from_millis(300),
            ..config()
        });
        let cfg = ClientConfig {
            reconnect: None,
            ..quiet()
        };
        let c = connect(srv.addr(), cfg).unwrap();
        let sub = c.subscribe();
        let f = sub.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!((f.msg_type, f.request_id), (MessageType::ERROR, 0));
        assert!(!f.flags.is_response());
        let e = ErrorBody::decode(&f.body).unwrap();
        assert_eq!(e.error_code(), Some(ErrorCode::IdleTimeout), "{e:?}");
        assert!(wait_until(Duration::from_secs(2), || !c.is_connected()));
    });
}

/// A broadcast that arrives between `connect` and `subscribe` reaches the
/// first subscriber (`warpwire client listen` lost it under load).
#[test]
fn frames_before_the_first_subscription_are_kept_for_it() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let c = connect(srv.addr(), quiet()).unwrap();
        let other = connect(srv.addr(), quiet()).unwrap();
        srv.wait_open(2);
        assert_eq!(other.broadcast(&b"early"[..]).unwrap(), 1);
        // The frame has been read (a reply after it has come back) before
        // anyone subscribed.
        c.echo(&b"sync"[..]).unwrap();
        let sub = c.subscribe();
        let f = sub.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(&f.body[..], b"early");
        // Only the first subscriber gets them.
        let second = c.subscribe();
        assert!(second.try_recv().is_err());
    });
}

#[test]
fn lagging_subscriber_loses_frames_without_blocking_replies() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let cfg = ClientConfig {
            subscription_capacity: 2,
            ..quiet()
        };
        let c = connect(srv.addr(), cfg).unwrap();
        let sub = c.subscribe();
        let other = connect(srv.addr(), quiet()).unwrap();
        srv.wait_open(2);
        for _ in 0..10 {
            assert_eq!(other.broadcast(&b"tick"[..]).unwrap(), 1);
        }
        assert!(wait_until(Duration::from_secs(2), || c
            .dropped_broadcasts()
            == 8));
        // The I/O thread is not stuck on the full channel.
        assert_eq!(&c.echo(&b"still here"[..]).unwrap()[..], b"still here");
        assert_eq!(sub.try_iter().count(), 2);
        // A dropped subscriber is forgotten, not counted as lagging.
        drop(sub);
        assert_eq!(other.broadcast(&b"tick"[..]).unwrap(), 1);
        c.echo(&b"sync"[..]).unwrap();
        assert_eq!(c.dropped_broadcasts(), 8);
    });
}

/// The engine never PINGs its clients (either peer may, docs/protocol.md;
/// the engine only answers), so a raw TCP peer plays the server: it sends
/// one PING and reads what comes back. It is not a server: nothing else is
/// read or answered.
#[test]
fn server_ping_is_answered() {
    bounded(LIMIT, || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = connect(listener.local_addr().unwrap(), quiet()).unwrap();
        let sub = c.subscribe();
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let ping = Frame::new(MessageType::PING, 77, 1234u64.to_be_bytes().to_vec());
        peer.write_all(&ping.to_bytes().unwrap()).unwrap();
        let mut dec = Decoder::default();
        let pong = loop {
            if let Some(f) = dec.decode().unwrap() {
                break f;
            }
            let n = peer.read(dec.read_buf()).unwrap();
            assert_ne!(n, 0, "the client closed instead of answering");
            dec.commit(n);
        };
        assert_eq!(
            (pong.msg_type, pong.request_id, &pong.body[..]),
            (MessageType::PONG, 77, &1234u64.to_be_bytes()[..])
        );
        assert!(pong.flags.is_response());
        assert!(sub.try_recv().is_err(), "a PING is answered, not delivered");
    });
}

/// Wakes a parked thread: the smallest real executor.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

#[test]
fn pending_is_a_future() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let c = connect(srv.addr(), quiet()).unwrap();
        let (a, b) = block_on(async {
            let a = c.request(Request::new(MessageType::ECHO, &b"a"[..]));
            let b = c.request(Request::new(MessageType::ECHO, &b"b"[..]));
            (a.await, b.await)
        });
        assert_eq!(&a.unwrap().body[..], b"a");
        assert_eq!(&b.unwrap().body[..], b"b");

        // Manual polling with a no-op waker: pending, then ready.
        let mut p = c.request(
            Request::new(MessageType(APP_SILENT), &b"m"[..])
                .with_timeout(Duration::from_millis(200)),
        );
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut p).poll(&mut cx).is_pending());
        std::thread::sleep(Duration::from_millis(400));
        match Pin::new(&mut p).poll(&mut cx) {
            Poll::Ready(Err(ClientError::Timeout)) => {}
            other => panic!("{other:?}"),
        }
        // Fire-and-forget handles are futures too.
        let id = block_on(c.send(Request::new(MessageType::DATA, &b"d"[..]))).unwrap();
        assert!(id > 0);
    });
}

#[test]
fn close_fails_outstanding_requests_and_closes_the_connection() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let c = connect(srv.addr(), quiet()).unwrap();
        let p = c.request(Request::new(MessageType(APP_SILENT), &b"x"[..]));
        assert!(wait_until(Duration::from_secs(2), || srv.frames() == 1));
        assert_eq!(srv.open(), 1);
        let t = Instant::now();
        c.close();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(matches!(p.wait(), Err(ClientError::Closed)));
        assert!(wait_until(Duration::from_secs(3), || srv.open() == 0));
    });
}

#[test]
fn dropping_the_client_stops_its_thread() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let c = connect(srv.addr(), quiet()).unwrap();
        c.ping().unwrap();
        drop(c);
        assert!(wait_until(Duration::from_secs(3), || srv.open() == 0));
    });
}

#[test]
fn oversized_metadata_is_refused_before_sending() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let c = connect(srv.addr(), quiet()).unwrap();
        let req = Frame::new(MessageType::ECHO, 0, Bytes::new())
            .with_meta(Bytes::from(vec![0u8; 70_000]));
        assert!(matches!(c.request(req).wait(), Err(ClientError::Encode(_))));
        c.ping().unwrap();
        assert_eq!(srv.frames(), 1);
    });
}

#[test]
fn busy_poll_client_works() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let cfg = ClientConfig {
            busy_poll: true,
            ..quiet()
        };
        let c = connect(srv.addr(), cfg).unwrap();
        for i in 0..100u32 {
            assert_eq!(
                &c.echo(i.to_be_bytes().to_vec()).unwrap()[..],
                &i.to_be_bytes()[..]
            );
        }
    });
}

#[test]
fn pool_round_robins_over_connections() {
    bounded(LIMIT, || {
        let srv = Engine::start();
        let pool = Pool::connect(SocketTransport::new, srv.addr(), quiet(), 3).unwrap();
        assert_eq!(pool.len(), 3);
        assert!(wait_until(Duration::from_secs(2), || srv.accepted() == 3));
        let picks: Vec<*const _> = (0..6).map(|_| pool.get() as *const _).collect();
        assert_ne!(picks[0], picks[1]);
        assert_ne!(picks[1], picks[2]);
        assert_ne!(picks[0], picks[2]);
        assert_eq!(picks[..3], picks[3..], "round-robin wraps around");
        for i in 0..30u32 {
            assert_eq!(
                &pool.get().echo(i.to_be_bytes().to_vec()).unwrap()[..],
                &i.to_be_bytes()[..]
            );
        }
        pool.close();
        assert!(wait_until(Duration::from_secs(3), || srv.open() == 0));
        assert!(matches!(
            Pool::connect(SocketTransport::new, srv.addr(), quiet(), 0),
            Err(ClientError::InvalidConfig(_))
        ));
    });
}
