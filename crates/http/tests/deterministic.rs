//! The HTTP protocol on the engine's deterministic harness (one worker, a
//! virtual clock, a scripted transport): framing, persistence, every
//! limit and its status, and pipelining split at every byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proptest::prelude::*;
use warpwire_engine::ServerConfig;
use warpwire_engine::testing::{Harness, PeerId};
use warpwire_http::{Http, HttpConfig, Response, Status};
use warpwire_transport::CloseReason;

/// One parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resp {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a byte stream of responses (`head` marks responses to HEAD,
/// which carry no body whatever their Content-Length says).
fn parse(mut out: &[u8], head: &[bool]) -> Vec<Resp> {
    let mut v = Vec::new();
    let mut i = 0;
    while !out.is_empty() {
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut hs);
        let n = match r.parse(out).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => {
                panic!("a partial response: {:?}", String::from_utf8_lossy(out))
            }
        };
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let code = r.code.unwrap();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let informational = code == 100;
        let len = if informational || head.get(i).copied().unwrap_or(false) {
            0
        } else {
            len
        };
        v.push(Resp {
            code,
            headers,
            body: out[n..n + len].to_vec(),
        });
        if !informational {
            i += 1;
        }
        out = &out[n + len..];
    }
    v
}

fn harness(cfg: HttpConfig) -> Harness<Http> {
    let sc = ServerConfig {
        idle_timeout: Duration::from_secs(10),
        ..ServerConfig::default()
    };
    let mut h = Harness::new(sc, move |m| {
        let mut http = Http::new(cfg, m.clone());
        http.route("GET", "/hello", |r| {
            Response::text(format!("hello {}\n", r.query.unwrap_or("world")))
        });
        http.route("DELETE", "/hello", |_| Response::text("gone\n"));
        http
    });
    h.settle();
    h
}

fn exchange(h: &mut Harness<Http>, p: PeerId, req: &[u8], head: &[bool]) -> Vec<Resp> {
    h.send(p, req);
    h.settle();
    parse(&h.received(p), head)
}

fn one(req: &str) -> (Resp, Option<CloseReason>) {
    let mut h = harness(HttpConfig::default());
    let p = h.connect();
    let r = exchange(&mut h, p, req.as_bytes(), &[]);
    assert_eq!(r.len(), 1, "{r:?}");
    (r[0].clone(), h.closed(p))
}

#[test]
fn keep_alive_pipelining_and_head() {
    let mut h = harness(HttpConfig::default());
    let p = h.connect();
    let reqs = b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n\
                 HEAD /ping HTTP/1.1\r\nHost: a\r\n\r\n\
                 GET /hello?you HTTP/1.1\r\nHost: a\r\n\r\n\
                 POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabcde\
                 GET http://a/hello HTTP/1.1\r\nHost: a\r\n\r\n";
    let r = exchange(&mut h, p, reqs, &[false, true]);
    let codes: Vec<u16> = r.iter().map(|r| r.code).collect();
    assert_eq!(codes, [200, 200, 200, 200, 200]);
    assert_eq!(r[0].body, b"pong\n");
    assert_eq!(
        (r[1].header("content-length"), &r[1].body[..]),
        (Some("5"), &b""[..])
    );
    assert_eq!(r[2].body, b"hello you\n");
    assert_eq!(r[3].body, b"abcde");
    assert_eq!(r[4].body, b"hello world\n");
    assert!(r[0].header("date").is_some_and(|d| d.ends_with("GMT")));
    assert_eq!(r[0].header("connection"), None);
    assert_eq!(h.closed(p), None, "HTTP/1.1 keeps the connection");
}

#[test]
fn bodies_by_length_chunked_and_after_100_continue() {
    let mut h = harness(HttpConfig::default());
    let p = h.connect();
    // The head with Expect first: 100 Continue, then the body, then 200.
    h.send(
        p,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
    );
    h.settle();
    assert_eq!(h.received(p), b"HTTP/1.1 100 Continue\r\n\r\n");
    let r = exchange(&mut h, p, b"hello world", &[]);
    assert_eq!((r[0].code, &r[0].body[..]), (200, &b"hello world"[..]));
    // Chunked, in pieces, with an extension and a trailer.
    h.send(
        p,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nwarp",
    );
    h.settle();
    assert!(h.received(p).is_empty());
    let r = exchange(&mut h, p, b"\r\n4\r\nwire\r\n0\r\nTrailer: t\r\n\r\n", &[]);
    assert_eq!((r[0].code, &r[0].body[..]), (200, &b"warpwire"[..]));
}

#[test]
fn connection_close_and_http10() {
    let (r, closed) = one("GET /ping HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!((r.code, r.header("connection")), (200, Some("close")));
    assert_eq!(closed, Some(CloseReason::Local));
    let (r, closed) = one("GET /ping HTTP/1.0\r\n\r\n");
    assert_eq!((r.code, r.header("connection")), (200, Some("close")));
    assert_eq!(closed, Some(CloseReason::Local));
    let (r, closed) = one("GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!((r.code, r.header("connection")), (200, Some("keep-alive")));
    assert_eq!(closed, None);
}

#[test]
fn every_limit_and_error_has_its_status_and_closes() {
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "b".repeat(17_000)
    );
    let many: String = (0..120).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    let cases: Vec<(&str, String, u16)> = vec![
        ("garbage", "BLAH\r\n\r\n".into(), 400),
        ("space in the method", "G ET / HTTP/1.1\r\nHost: a\r\n\r\n".into(), 400),
        ("no Host", "GET /ping HTTP/1.1\r\n\r\n".into(), 400),
        ("two Hosts", "GET /ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(), 400),
        ("obs-fold", "GET /ping HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n".into(), 400),
        (
            "CL and TE",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        (
            "two lengths",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".into(),
            400,
        ),
        (
            "TE not ending in chunked",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n".into(),
            400,
        ),
        (
            "gzip, chunked",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".into(),
            501,
        ),
        (
            "bad chunk",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n".into(),
            400,
        ),
        (
            "body too large",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n".into(),
            413,
        ),
        (
            "chunked too large",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\n".into(),
            413,
        ),
        ("long URI", long_uri, 414),
        ("big head", big_head, 431),
        ("many headers", many, 431),
        ("HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n".into(), 505),
        ("HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n".into(), 505),
        (
            "unknown expectation",
            "POST /echo HTTP/1.1\r\nHost: a\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx".into(),
            417,
        ),
    ];
    for (what, req, code) in cases {
        let mut h = harness(HttpConfig::default());
        let p = h.connect();
        // And a valid request after it, which must not be answered.
        let r = exchange(
            &mut h,
            p,
            format!("{req}GET /ping HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
            &[],
        );
        assert_eq!(r.len(), 1, "{what}: {r:?}");
        assert_eq!(r[0].code, code, "{what}: {r:?}");
        assert_eq!(r[0].header("connection"), Some("close"), "{what}");
        assert_eq!(h.closed(p), Some(CloseReason::Local), "{what}");
    }
}

#[test]
fn not_found_and_method_not_allowed() {
    let (r, closed) = one("GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.code, closed), (404, None));
    let (r, _) = one("POST /ping HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!((r.code, r.header("allow")), (405, Some("GET, HEAD")));
    let (r, _) = one("PUT /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        (r.code, r.header("allow")),
        (405, Some("GET, DELETE, HEAD"))
    );
    let (r, _) = one("DELETE /hello HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.code, &r.body[..]), (200, &b"gone\n"[..]));
}

#[test]
fn stats_and_metrics_are_served() {
    let (r, _) = one("GET /stats HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["transport"], "script");
    assert_eq!(v["connections"], 1);
    let (r, _) = one("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(String::from_utf8_lossy(&r.body).contains("warpwire_connections"));
}

#[test]
fn slowloris_hears_408_and_an_idle_keep_alive_is_closed_quietly() {
    let mut h = harness(HttpConfig::default());
    let slow = h.connect();
    let idle = h.connect();
    h.settle();
    h.send(slow, b"GET /ping HTTP/1.1\r\nHost: a\r\n");
    h.send(idle, b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n");
    h.settle();
    assert_eq!(parse(&h.received(idle), &[])[0].code, 200);
    // A header line every 5 s never finishes the request: the idle
    // timeout (10 s) counts from the last whole request, not the last byte.
    for _ in 0..3 {
        h.advance(Duration::from_secs(5));
        h.send(slow, b"X-Drip: 1\r\n");
    }
    h.settle();
    let r = parse(&h.received(slow), &[]);
    assert_eq!(r.iter().map(|r| r.code).collect::<Vec<_>>(), [408]);
    assert_eq!(h.closed(slow), Some(CloseReason::Local));
    assert!(h.received(idle).is_empty(), "no 408 on an idle keep-alive");
    assert_eq!(h.closed(idle), Some(CloseReason::Local));
}

#[test]
fn a_reader_that_does_not_read_pauses_the_pipeline() {
    let mut h = Harness::new(
        ServerConfig {
            max_output: 64 << 10,
            ..ServerConfig::default()
        },
        |m| Http::new(HttpConfig::default(), m.clone()),
    );
    let p = h.connect();
    h.settle();
    h.set_window(p, Some(0));
    let body = vec![b'x'; 60_000];
    let req = [
        format!(
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        body,
    ]
    .concat();
    for _ in 0..40 {
        h.send(p, &req);
        h.settle();
    }
    assert!(h.paused(p), "reading pauses once the output cap is reached");
    assert!(
        h.unread(p) > 20 * req.len(),
        "the rest waits in the transport"
    );
    h.set_window(p, None);
    for _ in 0..400 {
        h.settle();
    }
    let r = parse(&h.received(p), &[]);
    assert_eq!(r.len(), 40);
    assert!(r.iter().all(|r| r.code == 200 && r.body.len() == 60_000));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A pipelined stream of requests cut at any points gives the same
    /// responses as sent whole.
    #[test]
    fn splitting_never_changes_the_answers(cuts in proptest::collection::vec(0usize..400, 0..12)) {
        let stream: &[u8] = b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
            POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nwxyz\
            \r\nHEAD /hello HTTP/1.1\r\nHost: a\r\n\r\n\
            GET /hello?q HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % stream.len()).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut h = harness(HttpConfig::default());
        let p = h.connect();
        let mut at = 0;
        for c in cuts.into_iter().chain([stream.len()]) {
            h.send(p, &stream[at..c]);
            h.settle();
            at = c;
        }
        let r = parse(&h.received(p), &[false, false, false, true]);
        let got: Vec<(u16, Vec<u8>)> = r.into_iter().map(|r| (r.code, r.body)).collect();
        let want: Vec<(u16, Vec<u8>)> = vec![
            (200, b"pong\n".to_vec()),
            (200, b"abcde".to_vec()),
            (100, Vec::new()),
            (200, b"wxyz".to_vec()),
            (200, Vec::new()),
            (200, b"hello q\n".to_vec()),
        ];
        // 100 Continue is sent only when the body had not arrived with the head.
        let got: Vec<_> = got.into_iter().filter(|(c, _)| *c != 100).collect();
        let want: Vec<_> = want.into_iter().filter(|(c, _)| *c != 100).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(h.closed(p), Some(CloseReason::Local));
    }
}

#[test]
fn status_constants_are_the_rfc_ones() {
    assert_eq!(
        Status::HEADERS_TOO_LARGE,
        Status(431, "Request Header Fields Too Large")
    );
}

/// The gateway: `POST /app/{type}` calls the binary protocol's handlers
/// (blocking ones on the application workers, in order with the requests
/// around them), `POST /broadcast` reaches warpwire subscribers.
mod gateway {
    use super::*;
    use bytes::Bytes;
    use warpwire_engine::{Both, HandlerError, Handlers, ListenerConfig, Warpwire};
    use warpwire_frame::{Decoder, DecoderConfig, MessageType};

    fn handlers() -> std::sync::Arc<Handlers> {
        let mut h = Handlers::with_examples();
        h.register_blocking(
            0x90,
            |_: &warpwire_engine::SessionInfo<'_>, f: &warpwire_frame::Frame| {
                Ok::<_, HandlerError>(Some(Bytes::from(format!(
                    "slow {}",
                    String::from_utf8_lossy(&f.body)
                ))))
            },
        )
        .unwrap();
        h.register(
            0x91,
            |_: &warpwire_engine::SessionInfo<'_>, _: &warpwire_frame::Frame| {
                Err::<Option<Bytes>, _>(HandlerError::new("no such thing"))
            },
        )
        .unwrap();
        std::sync::Arc::new(h)
    }

    #[test]
    fn app_types_are_called_in_request_order() {
        let hs = handlers();
        let mut h = Harness::new(ServerConfig::default(), move |m| {
            Http::new(HttpConfig::default(), m.clone()).with_handlers(hs)
        });
        let p = h.connect();
        let r = exchange(
            &mut h,
            p,
            b"POST /app/0x80 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
              POST /app/144 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nwork\
              GET /ping HTTP/1.1\r\nHost: a\r\n\r\n\
              POST /app/0x91 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n\
              POST /app/0x99 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n\
              GET /app/0x80 HTTP/1.1\r\nHost: a\r\n\r\n",
            &[],
        );
        let got: Vec<(u16, String)> = r
            .iter()
            .map(|r| (r.code, String::from_utf8_lossy(&r.body).into_owned()))
            .collect();
        assert_eq!(
            got,
            [
                (200, "cba".to_owned()),
                (200, "slow work".to_owned()),
                (200, "pong\n".to_owned()),
                (500, "no such thing\n".to_owned()),
                (404, "no handler for this type\n".to_owned()),
                (404, "404 Not Found\n".to_owned()),
            ]
        );
    }

    #[test]
    fn a_post_to_broadcast_reaches_warpwire_subscribers() {
        let cfg = ServerConfig {
            listeners: vec![ListenerConfig {
                protocol: "http".into(),
                listen: "127.0.0.1:8080".parse().unwrap(),
                tls: false,
            }],
            ..ServerConfig::default()
        };
        let wcfg = cfg.clone();
        let mut h = Harness::new(cfg, move |m| {
            let hs = std::sync::Arc::new(Handlers::with_examples());
            Both::new(
                Warpwire::new(wcfg, hs.clone(), None, m.clone()),
                Http::new(HttpConfig::default(), m.clone()).with_handlers(hs),
            )
        });
        let sub = h.connect();
        let web = h.connect_to(1);
        h.settle();
        h.send(
            web,
            b"POST /broadcast HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        );
        h.settle();
        let mut hs = [httparse::EMPTY_HEADER; 16];
        let out = h.received(web);
        let mut resp = httparse::Response::new(&mut hs);
        let n = match resp.parse(&out).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial"),
        };
        assert_eq!(resp.code, Some(200));
        assert_eq!(&out[n..], b"{\"recipients\":1}\n");
        let mut d = Decoder::new(DecoderConfig::default());
        let got = h.received(sub);
        assert_eq!(d.feed(&got), got.len());
        let f = d.decode().unwrap().expect("a relay");
        assert_eq!(
            (f.msg_type, &f.body[..]),
            (MessageType::BROADCAST, &b"hello"[..])
        );
    }
}
