//! The load generator and the general client over RESP2: against
//! warpwire's Redis server (`warpwire-resp` served by the engine over
//! kernel TCP) and against a real redis-server, which must be installed
//! (scripts/test.sh installs it; without it the test fails, it does not
//! skip). Pipelined SETs, then GETs of the same keys whose values are
//! checked, PINGs; error replies (`-OOM`, `-ERR`) counted, and the stream
//! going on after them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::bounded;
use warpwire_client::protocol::{RespCommand, RespRequest, RespValue};
use warpwire_client::{
    ClientConfig, ClientError, ClientProtocol, GenericClient, LoadConfig, LoadReport, Resp, loadgen,
};
use warpwire_engine::{ServerConfig, ServerHandle};
use warpwire_resp::RespConfig;
use warpwire_socket::SocketTransport;

const LIMIT: Duration = Duration::from_secs(30);

/// Keys of the runs: few enough that the GETs after 4,000 SETs find
/// values.
const KEYSPACE: u64 = 1000;

fn resp(command: RespCommand) -> Resp {
    Resp {
        command,
        keyspace: KEYSPACE,
        ..Resp::default()
    }
}

fn run(command: RespCommand, cfg: &LoadConfig) -> Result<LoadReport, ClientError> {
    loadgen::run_with(&resp(command), SocketTransport::new, cfg, |_| {})
}

fn load(addr: SocketAddr, size: usize, count: u64) -> LoadConfig {
    LoadConfig {
        connections: 4,
        pipeline_depth: 16,
        body_size: size,
        threads: 2,
        count: Some(count),
        duration: None,
        ..LoadConfig::new(addr)
    }
}

/// warpwire's RESP server on a free loopback port, stopped when dropped.
struct Warpwire(Option<ServerHandle>);

impl Warpwire {
    fn start(config: RespConfig) -> Self {
        let cfg = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            workers: 1,
            app_workers: 1,
            shutdown_grace: Duration::from_millis(200),
            ..ServerConfig::default()
        };
        let h = warpwire_engine::serve(
            cfg,
            |_| SocketTransport::new(),
            move |_| warpwire_resp::Resp::new(config.clone(), None, false),
        )
        .unwrap();
        Self(Some(h))
    }

    fn addr(&self) -> SocketAddr {
        self.0.as_ref().expect("running").local_addr()
    }
}

impl Drop for Warpwire {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.stop();
        }
    }
}

/// A redis-server on a free loopback port, no persistence, killed when
/// dropped.
struct Redis(Child, SocketAddr);

impl Redis {
    fn start() -> Self {
        // redis-server takes a port, it cannot report one it chose.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        let me = Self(child, SocketAddr::from(([127, 0, 0, 1], port)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(me.1).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        me
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(addr: SocketAddr) -> GenericClient<Resp> {
    GenericClient::connect_with(
        resp(RespCommand::Set),
        SocketTransport::new,
        addr,
        ClientConfig::default(),
    )
    .unwrap()
}

fn command(c: &GenericClient<Resp>, args: &[&[u8]]) -> RespValue {
    let args = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
    c.request(RespRequest::Command(args)).wait().unwrap()
}

/// SETs, GETs of the same keys and PINGs, every reply checked; then a
/// GET from the general client finds one of the load's values under its
/// key, and the general client's own commands work.
fn sets_gets_and_pings(addr: SocketAddr) {
    for (command, size, count) in [
        (RespCommand::Set, 100, 4_000),
        (RespCommand::Get, 100, 4_000),
        (RespCommand::Ping, 0, 4_000),
        (RespCommand::Set, 200_000, 200),
        (RespCommand::Get, 200_000, 200),
    ] {
        let r = run(command, &load(addr, size, count)).unwrap();
        assert_eq!(
            (r.messages, r.errors, r.lost),
            (count, 0, 0),
            "{command:?} {size}: {r:?}"
        );
        assert_eq!(r.protocol, "resp");
    }
    let c = client(addr);
    let p = resp(RespCommand::Get);
    // The 200,000-byte SETs wrote ids 1..=50 or so on each connection.
    for id in [1, 2, 3, 40] {
        let reply = command(&c, &[b"GET", p.key(id).as_bytes()]);
        assert!(matches!(&reply, RespValue::Bulk(v) if v.len() == 200_000));
        assert_eq!(
            p.check(id, &RespRequest::Get { size: 200_000 }, &reply),
            Ok(())
        );
    }
    assert_eq!(
        command(&c, &[b"SET", b"n", b"41"]),
        RespValue::Simple("OK".into())
    );
    assert_eq!(command(&c, &[b"INCR", b"n"]), RespValue::Integer(42));
    assert_eq!(command(&c, &[b"GET", b"missing"]), RespValue::Nil);
    let list = command(&c, &[b"RPUSH", b"l", b"a", b"b"]);
    assert_eq!(list, RespValue::Integer(2));
    assert_eq!(
        command(&c, &[b"LRANGE", b"l", b"0", b"-1"]),
        RespValue::Array(vec![
            RespValue::Bulk("a".into()),
            RespValue::Bulk("b".into())
        ])
    );
    // An error reply reaches its caller; the connection goes on.
    assert!(matches!(
        command(&c, &[b"NOSUCHCOMMAND"]),
        RespValue::Error(e) if e.starts_with(b"ERR")
    ));
    assert_eq!(command(&c, &[b"PING"]), RespValue::Simple("PONG".into()));
    assert_eq!(c.reconnects(), 0);
    c.close();
}

#[test]
fn against_warpwires_resp_server() {
    bounded(LIMIT, || {
        sets_gets_and_pings(Warpwire::start(RespConfig::default()).addr())
    });
}

#[test]
fn against_redis_server() {
    bounded(LIMIT, || {
        let redis = Redis::start();
        sets_gets_and_pings(redis.1);
    });
}

#[test]
fn oom_replies_are_counted_as_errors_and_the_run_goes_on() {
    bounded(LIMIT, || {
        // Room for a few hundred 1 KiB values: the later SETs get -OOM.
        let srv = Warpwire::start(RespConfig {
            maxmemory: 256 * 1024,
            ..RespConfig::default()
        });
        let cfg = LoadConfig {
            connections: 2,
            threads: 1,
            ..load(srv.addr(), 1024, 2_000)
        };
        let r = run(RespCommand::Set, &cfg).unwrap();
        assert_eq!(r.lost, 0, "{r:?}");
        assert!(r.errors > 0 && r.errors < 2_000, "{r:?}");
        // Every request was answered: the error replies are replies.
        assert_eq!(r.messages + r.errors, 2_000, "{r:?}");
        // GETs of what fitted are fine, PINGs too.
        let r = run(
            RespCommand::Get,
            &LoadConfig {
                body_size: 1024,
                ..cfg.clone()
            },
        )
        .unwrap();
        assert_eq!((r.errors, r.lost), (0, 0), "{r:?}");
    });
}
