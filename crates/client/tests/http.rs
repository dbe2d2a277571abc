//! The load generator over HTTP/1.1: against warpwire's HTTP server
//! (`warpwire-http` served by the engine over kernel TCP), every reply
//! counted and checked; and against small raw-TCP servers that close
//! early, corrupt bodies or chunk, whose faults count as errors and never
//! hang the run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::bounded;
use warpwire_client::{ClientError, Http, LoadConfig, LoadReport, loadgen};
use warpwire_engine::{ServerConfig, ServerHandle};
use warpwire_socket::SocketTransport;

const LIMIT: Duration = Duration::from_secs(20);

fn run(cfg: &LoadConfig) -> Result<LoadReport, ClientError> {
    loadgen::run_with(&Http::default(), SocketTransport::new, cfg, |_| {})
}

/// warpwire's HTTP server on a free loopback port, stopped when dropped.
struct HttpServer(Option<ServerHandle>);

impl HttpServer {
    fn start() -> Self {
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
            |m| warpwire_http::Http::new(Default::default(), m.clone()),
        )
        .unwrap();
        Self(Some(h))
    }

    fn handle(&self) -> &ServerHandle {
        self.0.as_ref().expect("running")
    }

    fn addr(&self) -> SocketAddr {
        self.handle().local_addr()
    }

    /// HTTP requests the server has answered.
    fn requests(&self) -> u64 {
        self.handle().metrics().totals().messages_in
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.stop();
        }
    }
}

#[test]
fn pipelined_echoes_and_pings_are_all_answered_and_checked() {
    bounded(LIMIT, || {
        let srv = HttpServer::start();
        let mut sent = 0;
        // POST /echo small and large (a body over many reads), GET /ping.
        for (size, depth, count) in [(100, 8, 4_000), (0, 16, 4_000), (200_000, 4, 200)] {
            let cfg = LoadConfig {
                connections: 4,
                pipeline_depth: depth,
                body_size: size,
                threads: 2,
                count: Some(count),
                duration: None,
                ..LoadConfig::new(srv.addr())
            };
            let r = run(&cfg).unwrap();
            assert_eq!(
                (r.messages, r.errors, r.lost),
                (count, 0, 0),
                "{size}: {r:?}"
            );
            assert_eq!((r.protocol, r.body_size), ("http", size));
            assert!(r.p50 > Duration::ZERO && r.p50 <= r.max, "{r:?}");
            sent += count;
            // Exactly the count was sent, and nothing else.
            assert_eq!(srv.requests(), sent, "{size}");
        }
        assert!(
            run(&LoadConfig {
                body_size: 64,
                duration: Some(Duration::from_millis(200)),
                ..LoadConfig::new(srv.addr())
            })
            .is_ok_and(|r| r.messages > 0 && r.errors == 0)
        );
    });
}

#[test]
fn a_body_over_the_servers_limit_is_an_error_reply() {
    bounded(LIMIT, || {
        let srv = HttpServer::start();
        // The server's max_body is 1 MiB: 413 and a close, for the first
        // request; the others on the connection are lost.
        let cfg = LoadConfig {
            connections: 1,
            pipeline_depth: 2,
            body_size: (1 << 20) + 1,
            count: Some(10),
            duration: None,
            grace: Duration::from_secs(2),
            ..LoadConfig::new(srv.addr())
        };
        let r = loadgen::run_with(
            &Http {
                max_body: 2 << 20,
                ..Http::default()
            },
            SocketTransport::new,
            &cfg,
            |_| {},
        )
        .unwrap();
        assert_eq!(r.messages, 0, "{r:?}");
        assert!(r.errors >= 1, "{r:?}");
    });
}

/// What a raw test server does to the responses of a connection.
#[derive(Clone, Copy)]
enum Fault {
    /// The `n`-th response (from 1) on the first connection accepted says
    /// `Connection: close`, then the server closes that connection.
    CloseAfter(usize),
    /// Every `n`-th response has one body byte flipped.
    FlipEvery(usize),
    /// Responses are chunked.
    Chunked,
}

/// An HTTP/1.1 echo server of a few lines on a free loopback port: it
/// answers each `POST /echo` (Content-Length bodies only, as the load
/// generator sends them) with `fault` applied. It serves until the test
/// process ends.
fn raw_server(fault: Fault) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for (i, s) in l.incoming().enumerate() {
            let Ok(s) = s else { return };
            let fault = match fault {
                Fault::CloseAfter(_) if i > 0 => None,
                f => Some(f),
            };
            std::thread::spawn(move || serve_raw(s, fault));
        }
    });
    addr
}

fn serve_raw(mut s: TcpStream, fault: Option<Fault>) {
    let mut buf = Vec::new();
    let mut answered = 0;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Whole requests at the front of `buf`.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            let Ok(httparse::Status::Complete(head)) = req.parse(&buf) else {
                break;
            };
            let len: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map_or(0, |h| {
                    std::str::from_utf8(h.value).unwrap().parse().unwrap()
                });
            if buf.len() < head + len {
                break;
            }
            let mut body = buf[head..head + len].to_vec();
            buf.drain(..head + len);
            answered += 1;
            let mut out = Vec::new();
            match fault {
                Some(Fault::CloseAfter(n)) if answered == n => {
                    out.extend(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                    out.extend(&body);
                    let _ = s.write_all(&out);
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Some(Fault::FlipEvery(n)) if answered % n == 0 => body[len / 2] ^= 0x20,
                Some(Fault::Chunked) => {
                    out.extend(
                        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{len:x}\r\n")
                            .as_bytes(),
                    );
                    out.extend(&body);
                    out.extend(b"\r\n0\r\n\r\n");
                    if s.write_all(&out).is_err() {
                        return;
                    }
                    continue;
                }
                _ => {}
            }
            out.extend(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes());
            out.extend(&body);
            if s.write_all(&out).is_err() {
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn faulty(fault: Fault, connections: usize, depth: usize, count: u64) -> LoadReport {
    let cfg = LoadConfig {
        connections,
        pipeline_depth: depth,
        body_size: 50,
        count: Some(count),
        duration: None,
        grace: Duration::from_secs(3),
        ..LoadConfig::new(raw_server(fault))
    };
    run(&cfg).unwrap()
}

#[test]
fn a_corrupting_server_gives_errors_not_successes() {
    bounded(LIMIT, || {
        // One response in ten has a flipped byte: exactly those are errors.
        let r = faulty(Fault::FlipEvery(10), 2, 8, 2_000);
        assert_eq!((r.messages, r.errors, r.lost), (1_800, 200, 0), "{r:?}");
    });
}

#[test]
fn connection_close_loses_the_requests_behind_it_without_a_hang() {
    bounded(LIMIT, || {
        // One of 2 connections is closed with its 100th response (a
        // correct reply): at depth 8, the up to 7 requests pipelined
        // behind it are lost, plus one error for the stream; the other
        // connection sends its share, and the run ends although the count
        // is not reached (the closed connection's unsent share must not
        // keep it going).
        let r = faulty(Fault::CloseAfter(100), 2, 8, 1_000);
        assert_eq!(r.messages, 100 + 500, "{r:?}");
        assert!(r.lost <= 7, "{r:?}");
        assert_eq!(r.errors, r.lost + 1, "{r:?}");
        // At depth 1 nothing is behind the close: one error.
        let r = faulty(Fault::CloseAfter(50), 2, 1, 1_000);
        assert_eq!((r.messages, r.lost, r.errors), (50 + 500, 0, 1), "{r:?}");
    });
}

#[test]
fn a_chunked_response_is_a_decode_error() {
    bounded(LIMIT, || {
        let r = faulty(Fault::Chunked, 1, 4, 100);
        assert_eq!(r.messages, 0, "{r:?}");
        // The stream error, and the 4 requests in flight.
        assert_eq!((r.errors, r.lost), (5, 4), "{r:?}");
    });
}
