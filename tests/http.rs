//! HTTP/1.1 served by `warpwire serve --listener http=...`, checked with
//! curl (a client nobody here wrote) over each kernel backend: keep-alive
//! reuse, HEAD, bodies by length and chunked, 100-continue, 413, 404,
//! /stats and /metrics; and request smuggling refused on the wire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Server;

/// curl with a time bound; its stdout, asserting it exited 0.
fn curl(args: &[&str]) -> String {
    let o = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed by scripts/test.sh");
    assert!(
        o.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// curl's stdout and its verbose stderr.
fn curl_verbose(args: &[&str]) -> (String, String) {
    let o = Command::new("curl")
        .args(["--silent", "--show-error", "--verbose", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn sha256(path: &Path) -> String {
    common::sha256_file(path)
}

fn checks(addr: SocketAddr, transport: &str) {
    let base = format!("http://{addr}");
    // Two requests, one connection.
    let (out, err) = curl_verbose(&[&format!("{base}/ping"), &format!("{base}/ping")]);
    assert_eq!(out, "pong\npong\n");
    assert!(err.contains("Re-using existing connection"), "{err}");
    assert!(err.contains("< Server: warpwire"), "{err}");
    // HEAD: the GET's length, no body.
    let head = curl(&["--head", &format!("{base}/ping")]);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Length: 5"), "{head}");
    // A body of 300 kB, by Content-Length and chunked: the same bytes back.
    let dir = std::env::temp_dir().join(format!("ww-http-{}-{transport}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    let at_input = format!("@{}", input.display());
    for extra in [&[][..], &["-H", "Transfer-Encoding: chunked"][..]] {
        let out = dir.join("out.bin");
        let mut args = vec![
            "--data-binary",
            &at_input,
            "-o",
            out.to_str().unwrap(),
            "-H",
            "Content-Type: application/octet-stream",
        ];
        args.extend_from_slice(extra);
        let url = format!("{base}/echo");
        args.push(&url);
        curl(&args);
        assert_eq!(sha256(&out), sha256(&input), "{extra:?}");
    }
    // Expect: 100-continue, as curl sends it for large bodies.
    let (out, err) = curl_verbose(&[
        "--data-binary",
        "continued",
        "-H",
        "Expect: 100-continue",
        &format!("{base}/echo"),
    ]);
    assert_eq!(out, "continued");
    assert!(err.contains("< HTTP/1.1 100 Continue"), "{err}");
    // Over the body limit (the server runs with --http-max-body 400000).
    let big = dir.join("big.bin");
    std::fs::write(&big, vec![b'z'; 500_000]).unwrap();
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--data-binary",
        &format!("@{}", big.display()),
        &format!("{base}/echo"),
    ]);
    assert_eq!(code, "413");
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/x"),
    ]);
    assert_eq!(code, "404");
    // The gateway into the binary protocol: the REVERSE example handler,
    // and a broadcast (no warpwire subscriber here: 0 recipients).
    let out = curl(&["--data-binary", "gateway", &format!("{base}/app/0x80")]);
    assert_eq!(out, "yawetag");
    let out = curl(&["--data-binary", "to all", &format!("{base}/broadcast")]);
    assert_eq!(out, "{\"recipients\":0}\n");
    // The server's numbers, over HTTP.
    let stats: serde_json::Value =
        serde_json::from_str(&curl(&[&format!("{base}/stats")])).unwrap();
    assert_eq!(stats["transport"], transport);
    assert!(stats["messages_in"].as_u64().unwrap() >= 6, "{stats}");
    let metrics = curl(&[&format!("{base}/metrics")]);
    assert!(metrics.contains("warpwire_messages_in_total"), "{metrics}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Content-Length and a Transfer-Encoding in one request: the classic
/// smuggling vector. 400, then the connection is closed and the bytes
/// that would have been a second request are never answered.
fn smuggling_refused(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /ping HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    assert_eq!(got.matches("HTTP/1.1").count(), 1, "{got}");
}

#[test]
fn curl_against_the_http_listener_over_epoll_and_io_uring() {
    for transport in ["socket", "uring"] {
        let s = Server::start(&[
            "--transport",
            transport,
            "--listener",
            "http=127.0.0.1:0",
            "--http-max-body",
            "400000",
        ]);
        let addr = s.addr_of("http");
        checks(addr, transport);
        smuggling_refused(addr);
        assert!(s.terminate().success(), "{transport}: graceful shutdown");
    }
}
