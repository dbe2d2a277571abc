//! TLS end to end through the binary on loopback, against clients nobody
//! here wrote: `openssl s_client` speaking warpwire frames, `curl
//! --cacert` against an HTTP listener with TLS beside a plaintext one;
//! the project's client and bench over TLS; every refusal a user meets
//! (untrusted CA, wrong name, pins, TLS 1.2 unless allowed, plaintext to
//! a TLS port and TLS to a plaintext one, mutual TLS without a
//! certificate); redis-cli over TLS authenticated by its certificate; and
//! the certificate reloaded on SIGHUP while a connection made before it
//! keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{DevCerts, Server};

use common::run;

/// A PING frame (docs/protocol.md) with request id `id`.
fn ping(id: u64) -> Vec<u8> {
    let mut f = b"Ww\x01\x01\x00\x00\x00\x00\x00\x00\x00\x08".to_vec();
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&42u64.to_be_bytes());
    let crc = crc32fast::hash(&f);
    f.extend_from_slice(&crc.to_be_bytes());
    f
}

/// An `openssl s_client` session kept open: frames in on stdin, bytes
/// out on stdout.
struct SClient {
    child: Child,
    out: mpsc::Receiver<Vec<u8>>,
}

impl SClient {
    fn start(addr: SocketAddr, args: &[&str]) -> Self {
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), "-quiet"])
            .args(["-verify_return_error"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl is installed by scripts/test.sh");
        let mut stdout = child.stdout.take().unwrap();
        let (tx, out) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self { child, out }
    }

    /// Sends a PING and returns the reply frame's bytes (header + body +
    /// CRC, 32 bytes).
    fn ping(&mut self, id: u64) -> Vec<u8> {
        self.child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(&ping(id))
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 32 {
            match self.out.recv_timeout(Duration::from_secs(10)) {
                Ok(b) => got.extend_from_slice(&b),
                Err(_) => panic!("no PONG from s_client within 10 s (got {got:?})"),
            }
        }
        got
    }
}

impl Drop for SClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_pong(reply: &[u8], id: u64) {
    assert_eq!(&reply[..4], b"Ww\x01\x02", "a PONG: {reply:?}");
    assert_eq!(reply[4] & 1, 1, "RESPONSE flag");
    assert_eq!(&reply[12..20], &id.to_be_bytes());
}

/// `openssl s_client -brief` through a handshake and straight out: its
/// exit status and what it printed.
fn s_client_brief(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let o = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect", &addr.to_string()])
        .args(["-brief", "-verify_return_error"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed by scripts/test.sh")
}

fn tls_server(d: &DevCerts, extra: &[&str]) -> Server {
    let mut args = vec!["--tls", "--tls-cert", &d.cert, "--tls-key", &d.key];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// The sum of a Prometheus counter over its workers.
fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn openssl_and_curl_talk_to_the_tls_listeners_beside_plaintext_ones() {
    let d = DevCerts::new("peers", &[]);
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let s = tls_server(
        &d,
        &[
            "--listener",
            "http+tls=127.0.0.1:0",
            "--listener",
            "http=127.0.0.1:0",
            "--metrics",
            &metrics_port,
        ],
    );
    let ca = d.path("ca.pem");
    // warpwire frames through openssl's TLS.
    let mut sc = SClient::start(s.addr, &["-CAfile", &ca, "-alpn", "warpwire/1"]);
    assert_pong(&sc.ping(7), 7);
    assert_pong(&sc.ping(8), 8);
    drop(sc);
    let (ok, text) = s_client_brief(s.addr, &["-CAfile", &ca]);
    assert!(ok, "{text}");
    assert!(text.contains("TLSv1.3"), "{text}");
    let o = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect", &s.addr.to_string()])
        .args(["-CAfile", &ca, "-alpn", "warpwire/1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("ALPN protocol: warpwire/1"), "{text}");
    // TLS 1.2 is refused unless allowed.
    let (ok, text) = s_client_brief(s.addr, &["-CAfile", &ca, "-tls1_2"]);
    assert!(!ok, "TLS 1.2 was accepted: {text}");

    // HTTP with TLS, and plain HTTP beside it.
    let https = s.listeners[0].1;
    let http = s.listeners[1].1;
    let url = format!("https://localhost:{}/ping", https.port());
    let o = curl(&["--cacert", &ca, &url]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "pong");
    let o = curl(&[&format!("http://{http}/ping")]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "pong");
    // Without the CA: curl refuses the certificate (exit 60).
    let o = curl(&[&url]);
    assert_eq!(
        o.status.code(),
        Some(60),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Plain HTTP to the TLS port: an alert and a close, never an answer.
    let o = curl(&[&format!("http://{https}/ping")]);
    assert!(!o.status.success());

    // Workers publish their counters every 100 ms.
    let mut m = String::new();
    for _ in 0..50 {
        let o = curl(&[&format!("http://{metrics_port}/metrics")]);
        m = String::from_utf8_lossy(&o.stdout).into_owned();
        if metric(&m, "warpwire_tls_handshakes_total") >= 4
            && metric(&m, "warpwire_tls_handshake_failures_total") >= 3
            && metric(&m, "warpwire_tls_not_tls_total") >= 1
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("TLS counters: 4 handshakes, 3 failures (one not TLS) expected:\n{m}");
}

#[test]
fn the_client_and_bench_over_tls_and_what_they_refuse() {
    let d = DevCerts::new("client", &[]);
    let fp = d.fingerprint.clone();
    let s = tls_server(&d, &["--listener", "http+tls=127.0.0.1:0"]);
    let addr = format!("localhost:{}", s.addr.port());
    let ca = d.path("ca.pem");
    let ok = |args: &[&str]| {
        let o = run(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let err = |args: &[&str]| {
        let o = run(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert_eq!(
        ok(&["client", &addr, "--tls-ca", &ca, "echo", "hi"]).trim(),
        "hi"
    );
    let pin = format!("sha256:{fp}");
    ok(&[
        "client",
        &addr,
        "--tls-ca",
        &ca,
        "--tls-pin",
        &pin,
        "ping",
        "-c",
        "1",
    ]);
    let e = err(&["client", &addr, "--tls", "ping", "-c", "1"]);
    assert!(e.contains("not signed by a trusted CA"), "{e}");
    let e = err(&[
        "client",
        &addr,
        "--tls-ca",
        &ca,
        "--tls-server-name",
        "db.example",
        "ping",
        "-c",
        "1",
    ]);
    assert!(e.contains("not valid for this name"), "{e}");
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let e = err(&[
        "client",
        &addr,
        "--tls-ca",
        &ca,
        "--tls-pin",
        &wrong,
        "ping",
        "-c",
        "1",
    ]);
    assert!(e.contains("pinned fingerprint"), "{e}");
    // Plaintext to the TLS port: the reply is a TLS alert, named as such.
    let e = err(&["client", &addr, "ping", "-c", "1"]);
    assert!(e.contains("TLS"), "{e}");

    // TLS to a plaintext server.
    let plain = Server::start(&[]);
    let e = err(&[
        "client",
        &plain.addr.to_string(),
        "--tls-ca",
        &ca,
        "--tls-server-name",
        "localhost",
        "ping",
        "-c",
        "1",
    ]);
    assert!(e.contains("does not speak TLS"), "{e}");

    // The load generator over TLS: warpwire frames, and HTTP.
    let out = ok(&[
        "bench", &addr, "--tls-ca", &ca, "-c", "4", "-d", "8", "--count", "4000", "--json",
    ]);
    common::assert_bench_clean(&out);
    let https = format!("localhost:{}", s.listeners[0].1.port());
    let out = ok(&[
        "bench",
        &https,
        "--tls-ca",
        &ca,
        "--protocol",
        "http",
        "-c",
        "2",
        "--count",
        "1000",
        "--json",
    ]);
    common::assert_bench_clean(&out);
}

#[test]
fn tls_1_2_only_when_allowed() {
    let d = DevCerts::new("tls12", &[]);
    let s = tls_server(&d, &["--tls-min-version", "1.2"]);
    let (ok, text) = s_client_brief(s.addr, &["-CAfile", &d.path("ca.pem"), "-tls1_2"]);
    assert!(ok, "{text}");
    assert!(text.contains("TLSv1.2"), "{text}");
}

#[test]
fn mutual_tls_authenticates_by_certificate_and_refuses_without_one() {
    let d = DevCerts::new("mtls", &[]);
    let ca = d.path("ca.pem");
    let s = tls_server(&d, &["--tls-client-ca", &ca, "--require-auth"]);
    let addr = format!("localhost:{}", s.addr.port());
    // With the client certificate: authenticated as its CN, so ECHO
    // (refused before AUTH under --require-auth) is served.
    let o = run(&[
        "client",
        &addr,
        "--tls-ca",
        &ca,
        "--tls-cert",
        &d.path("client.pem"),
        "--tls-key",
        &d.path("client-key.pem"),
        "echo",
        "as warpwire",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "as warpwire");
    // Without one: refused, by our client and by openssl's.
    let o = run(&["client", &addr, "--tls-ca", &ca, "echo", "x"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("certificate"), "{e}");
    let mut sc = SClient::start(s.addr, &["-CAfile", &ca]);
    sc.child.stdin.as_mut().unwrap().write_all(&ping(1)).ok();
    assert!(
        sc.out.recv_timeout(Duration::from_secs(10)).is_err(),
        "a client without a certificate got an answer"
    );
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let d = DevCerts::new("reload", &[]);
    let first = d.fingerprint.clone();
    let s = tls_server(&d, &[]);
    let old_ca = d.path("ca.pem");
    let mut before = SClient::start(s.addr, &["-CAfile", &old_ca]);
    assert_pong(&before.ping(1), 1);

    // A new set in its place (a new CA too), then SIGHUP.
    let d2 = DevCerts::new("reload2", &[]);
    let second = d2.fingerprint.clone();
    assert_ne!(first, second);
    for f in ["server.pem", "server-key.pem"] {
        std::fs::copy(d2.path(f), d.path(f)).unwrap();
    }
    let hup = |pid: u32| {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    hup(s.child.id());
    let new_ca = d2.path("ca.pem");
    let served = |ca: &str| {
        let mut ok = false;
        for _ in 0..50 {
            if s_client_brief(s.addr, &["-CAfile", ca]).0 {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    };
    assert!(
        served(&new_ca),
        "the new certificate is not served after SIGHUP"
    );
    assert!(!s_client_brief(s.addr, &["-CAfile", &old_ca]).0);
    // The connection made before the reload goes on.
    assert_pong(&before.ping(2), 2);

    // A broken file: the reload fails, the certificate in use stays.
    std::fs::write(d.path("server.pem"), "not a certificate").unwrap();
    hup(s.child.id());
    std::thread::sleep(Duration::from_millis(300));
    assert!(served(&new_ca), "a failed reload dropped the certificate");
    assert_pong(&before.ping(3), 3);
}

#[test]
fn a_server_without_certificates_for_its_tls_listener_refuses_to_start() {
    let o = run(&["serve", "--listen", "127.0.0.1:0", "--tls"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--tls-cert"), "{e}");
    let o = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        "x.pem",
        "--tls-key",
        "y.pem",
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("no listener speaks TLS"), "{e}");
    let o = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls",
        "--tls-cert",
        "/nonexistent.pem",
        "--tls-key",
        "/nonexistent-key.pem",
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("/nonexistent.pem"), "{e}");
}

#[test]
fn redis_cli_over_tls_and_a_client_certificate_instead_of_auth() {
    let d = DevCerts::new("redis", &[]);
    let s = tls_server(
        &d,
        &[
            "--listener",
            "resp+tls=127.0.0.1:0",
            "--tls-client-ca",
            &d.ca,
            "--require-auth",
        ],
    );
    let port = s.listeners[0].1.port().to_string();
    let cli = |extra: &[&str], cmd: &[&str]| {
        let o = Command::new("timeout")
            .args(["10", "redis-cli", "-h", "127.0.0.1", "-p", &port])
            .args(["--tls", "--cacert", &d.ca, "--sni", "localhost"])
            .args(extra)
            .args(cmd)
            .output()
            .expect("redis-cli is installed by scripts/test.sh");
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let cert = [
        "--cert",
        &d.path("client.pem"),
        "--key",
        &d.path("client-key.pem"),
    ];
    // The certificate authenticates: no AUTH needed under --require-auth.
    let (ok, out) = cli(&cert, &["SET", "tls:k", "v"]);
    assert!(ok && out.trim() == "OK", "{out}");
    let (ok, out) = cli(&cert, &["GET", "tls:k"]);
    assert!(ok && out.trim() == "v", "{out}");
    // Without a certificate the handshake is refused.
    let (_, out) = cli(&[], &["PING"]);
    assert!(!out.contains("PONG"), "{out}");
}
