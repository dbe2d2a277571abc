//! TLS through `TlsTransport` over the socket backend on loopback: what
//! is refused and how (wrong CA, wrong name, expired, pins, ALPN,
//! plaintext to a TLS port, TLS to a plaintext port, a handshake that
//! never finishes, too many handshakes, a forged record), mutual TLS with
//! and without a certificate, resumption, close_notify and a bare FIN.
//! Peers are our client transport, rustls's own blocking stream, or a
//! plain kernel socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use warpwire_socket::SocketTransport;
use warpwire_tls::certs::{DevCa, Pem, Validity};
use warpwire_tls::{
    ClientOptions, ClientTls, ServerOptions, ServerTls, TlsTransport, fingerprint, rustls,
};
use warpwire_transport::{CloseReason, ConnId, Event, Events, TlsFailure, Transport};

const WAIT: Duration = Duration::from_secs(10);

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("ww-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    fn pem(&self, name: &str, pem: &Pem) -> (PathBuf, PathBuf) {
        (
            self.write(&format!("{name}.pem"), &pem.cert),
            self.write(&format!("{name}-key.pem"), &pem.key),
        )
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA and a server certificate for 127.0.0.1 in `dir`.
struct Pki {
    ca: DevCa,
    ca_file: PathBuf,
    server: (PathBuf, PathBuf),
    server_der: Vec<u8>,
}

fn pki(dir: &Dir, valid: Validity) -> Pki {
    let ca = DevCa::new("test CA", Validity::days(2)).unwrap();
    let leaf = ca
        .server(&["127.0.0.1".into(), "localhost".into()], valid)
        .unwrap();
    let ca_file = dir.write("ca.pem", &ca.pem.cert);
    let server = dir.pem("server", &leaf);
    Pki {
        ca,
        ca_file,
        server,
        server_der: leaf.der,
    }
}

fn server_opts(p: &Pki) -> ServerOptions {
    ServerOptions {
        cert: p.server.0.clone(),
        key: p.server.1.clone(),
        ..ServerOptions::default()
    }
}

fn client_opts(ca: &Path) -> ClientOptions {
    ClientOptions {
        ca: Some(ca.to_owned()),
        ..ClientOptions::default()
    }
}

type Tls = TlsTransport<SocketTransport>;

fn server(o: &ServerOptions, alpn: &[&[u8]], timeout: Duration) -> (Tls, SocketAddr) {
    let shared = ServerTls::new(o).unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut s = TlsTransport::new(SocketTransport::new().unwrap()).serve_tls(
        any,
        shared.config(alpn).unwrap(),
        timeout,
    );
    let addr = s.listen(any).unwrap();
    (s, addr)
}

fn client(o: &ClientOptions) -> Tls {
    TlsTransport::new(SocketTransport::new().unwrap())
        .with_client(ClientTls::new(o, "127.0.0.1").unwrap())
}

/// Polls both until `done` says so (it sees each side's events), or
/// panics naming `what` after [`WAIT`].
fn drive<S: Transport, C: Transport>(
    s: &mut S,
    c: &mut C,
    what: &str,
    mut done: impl FnMut(&mut S, &mut C, &[Event], &[Event]) -> bool,
) {
    let (mut se, mut ce) = (Events::default(), Events::default());
    let deadline = Instant::now() + WAIT;
    loop {
        let now = Instant::now();
        s.poll(now, &mut se).unwrap();
        c.poll(now, &mut ce).unwrap();
        let sv: Vec<Event> = se.iter().copied().collect();
        let cv: Vec<Event> = ce.iter().copied().collect();
        if done(s, c, &sv, &cv) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        if sv.is_empty() && cv.is_empty() {
            s.wait(Some(Duration::from_millis(1))).unwrap();
        }
    }
}

/// Connects and expects the client's connection closed with `want`; the
/// server never reports it accepted. Returns the server's stats.
fn refused(mut s: Tls, mut c: Tls, addr: SocketAddr, want: TlsFailure) -> warpwire_tls::TlsStats {
    let id = c.connect(addr, Instant::now()).unwrap();
    let mut got = None;
    drive(&mut s, &mut c, "the client's refusal", |s, _, sv, cv| {
        assert!(
            !sv.iter().any(|e| matches!(e, Event::Accepted { .. })),
            "the server accepted a connection it should have refused"
        );
        for e in cv {
            if let Event::Closed(c, why) = e {
                assert_eq!(*c, id);
                got = Some(*why);
            }
        }
        got.is_some() && s.stats().failed + s.stats().errors > 0
    });
    assert_eq!(got, Some(CloseReason::Tls(want)));
    s.stats()
}

#[test]
fn an_untrusted_ca_is_refused() {
    let d = Dir::new("ca");
    let p = pki(&d, Validity::days(2));
    let other = DevCa::new("another CA", Validity::days(2)).unwrap();
    let other_file = d.write("other.pem", &other.pem.cert);
    let (s, addr) = server(&server_opts(&p), &[], WAIT);
    refused(
        s,
        client(&client_opts(&other_file)),
        addr,
        TlsFailure::UnknownIssuer,
    );
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let d = Dir::new("name");
    let p = pki(&d, Validity::days(2));
    let (s, addr) = server(&server_opts(&p), &[], WAIT);
    let o = ClientOptions {
        server_name: Some("db.example".into()),
        ..client_opts(&p.ca_file)
    };
    refused(s, client(&o), addr, TlsFailure::NameMismatch);
}

#[test]
fn an_expired_certificate_is_refused() {
    let d = Dir::new("expired");
    let p = pki(&d, Validity::expired());
    let (s, addr) = server(&server_opts(&p), &[], WAIT);
    refused(
        s,
        client(&client_opts(&p.ca_file)),
        addr,
        TlsFailure::CertificateExpired,
    );
}

#[test]
fn pins_refuse_another_certificate_and_accept_theirs() {
    let d = Dir::new("pin");
    let p = pki(&d, Validity::days(2));
    let (s, addr) = server(&server_opts(&p), &[], WAIT);
    let wrong = ClientOptions {
        pins: vec![format!("sha256:{}", "00".repeat(32))],
        ..client_opts(&p.ca_file)
    };
    refused(s, client(&wrong), addr, TlsFailure::PinMismatch);

    let (mut s, addr) = server(&server_opts(&p), &[], WAIT);
    let right = ClientOptions {
        pins: vec![format!("sha256:{}", fingerprint(&p.server_der))],
        ..client_opts(&p.ca_file)
    };
    let mut c = client(&right);
    let id = c.connect(addr, Instant::now()).unwrap();
    drive(&mut s, &mut c, "a pinned connection", |_, _, _, cv| {
        cv.contains(&Event::Connected(id))
    });
}

#[test]
fn no_alpn_protocol_in_common_is_refused() {
    let d = Dir::new("alpn");
    let p = pki(&d, Validity::days(2));
    let (s, addr) = server(&server_opts(&p), &[b"warpwire/1"], WAIT);
    let o = ClientOptions {
        alpn: vec![b"http/1.1".to_vec()],
        ..client_opts(&p.ca_file)
    };
    refused(s, client(&o), addr, TlsFailure::Incompatible);

    // The same protocol, and no ALPN at all, are both served.
    for alpn in [vec![b"warpwire/1".to_vec()], vec![]] {
        let (mut s, addr) = server(&server_opts(&p), &[b"warpwire/1"], WAIT);
        let o = ClientOptions {
            alpn: alpn.clone(),
            ..client_opts(&p.ca_file)
        };
        let mut c = client(&o);
        let id = c.connect(addr, Instant::now()).unwrap();
        drive(&mut s, &mut c, "an ALPN match", |_, _, _, cv| {
            cv.contains(&Event::Connected(id))
        });
        let want: Option<&[u8]> = alpn.first().map(|a| &a[..]);
        assert_eq!(c.alpn(id), want);
    }
}

/// Reads until EOF or reset; what arrived.
fn read_to_close(t: &mut TcpStream) -> Vec<u8> {
    t.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match t.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("no close within {WAIT:?}: {e}"),
        }
    }
}

/// Polls `s` on this thread while `peer` runs on another; returns its
/// result and every event `s` reported.
fn with_peer<S: Transport, R: Send + 'static>(
    s: &mut S,
    peer: impl FnOnce() -> R + Send + 'static,
) -> (R, Vec<Event>) {
    let h = std::thread::spawn(peer);
    let mut seen = Vec::new();
    let mut ev = Events::default();
    let deadline = Instant::now() + WAIT + WAIT;
    while !h.is_finished() {
        assert!(Instant::now() < deadline, "the peer did not finish");
        s.poll(Instant::now(), &mut ev).unwrap();
        seen.extend(ev.iter().copied());
        s.wait(Some(Duration::from_millis(1))).unwrap();
    }
    // What the last rounds brought.
    for _ in 0..10 {
        s.poll(Instant::now(), &mut ev).unwrap();
        seen.extend(ev.iter().copied());
    }
    (h.join().unwrap(), seen)
}

#[test]
fn plaintext_to_a_tls_port_gets_an_alert_and_a_close() {
    let d = Dir::new("plain");
    let p = pki(&d, Validity::days(2));
    let (mut s, addr) = server(&server_opts(&p), &[], WAIT);
    let (got, seen) = with_peer(&mut s, move || {
        let mut t = TcpStream::connect(addr).unwrap();
        t.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        read_to_close(&mut t)
    });
    // A TLS alert record (content type 21), then the close.
    assert_eq!(
        got.first(),
        Some(&21),
        "expected an alert record, got {got:?}"
    );
    assert!(!seen.iter().any(|e| matches!(e, Event::Accepted { .. })));
    assert_eq!((s.stats().failed, s.stats().not_tls), (1, 1));
}

#[test]
fn tls_to_a_plaintext_port_is_reported_as_such() {
    let mut plain = SocketTransport::new().unwrap();
    let addr = plain.listen(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let d = Dir::new("toplain");
    let p = pki(&d, Validity::days(2));
    let mut c = client(&client_opts(&p.ca_file));
    let id = c.connect(addr, Instant::now()).unwrap();
    let mut got = None;
    drive(
        &mut plain,
        &mut c,
        "the client's refusal",
        |s, _, sv, cv| {
            for e in sv {
                if let Event::Readable(conn) = e {
                    let mut buf = [0u8; 4096];
                    while s.recv(*conn, &mut buf).unwrap() > 0 {}
                    // What a warpwire server says to bytes it cannot parse.
                    s.send(
                        *conn,
                        b"Ww\x01\xff\x00\x00\x00\x00\x00\x00\x00\x10BAD_MAGIC.......",
                    )
                    .unwrap();
                    s.close(*conn);
                }
            }
            for e in cv {
                if let Event::Closed(conn, why) = e {
                    assert_eq!(*conn, id);
                    got = Some(*why);
                }
            }
            got.is_some()
        },
    );
    assert_eq!(got, Some(CloseReason::Tls(TlsFailure::NotTls)));
}

#[test]
fn a_handshake_that_never_finishes_is_closed_at_its_deadline() {
    let d = Dir::new("slow");
    let p = pki(&d, Validity::days(2));
    let (mut s, addr) = server(&server_opts(&p), &[], Duration::from_millis(300));
    let (elapsed, seen) = with_peer(&mut s, move || {
        let mut t = TcpStream::connect(addr).unwrap();
        let start = Instant::now();
        // Three bytes of a record header, then nothing (slowloris).
        t.write_all(&[0x16, 0x03, 0x01]).unwrap();
        read_to_close(&mut t);
        start.elapsed()
    });
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}, deadline 300 ms"
    );
    assert!(!seen.iter().any(|e| matches!(e, Event::Accepted { .. })));
    assert_eq!(s.stats().timeouts, 1);
}

#[test]
fn handshakes_in_progress_are_bounded() {
    let d = Dir::new("bound");
    let p = pki(&d, Validity::days(2));
    let (s, addr) = server(&server_opts(&p), &[], WAIT);
    let mut s = s.max_handshakes(2);
    let (closed_at_once, _) = with_peer(&mut s, move || {
        let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut third = TcpStream::connect(addr).unwrap();
        let start = Instant::now();
        read_to_close(&mut third);
        drop(idle);
        start.elapsed() < Duration::from_secs(2)
    });
    assert!(
        closed_at_once,
        "the connection past the bound was not closed at once"
    );
    assert_eq!(s.stats().refused, 1);
}

#[test]
fn mutual_tls_names_the_client_and_refuses_one_without_a_certificate() {
    let d = Dir::new("mtls");
    let p = pki(&d, Validity::days(2));
    let alice = p.ca.client("alice", Validity::days(2)).unwrap();
    let (cert, key) = d.pem("alice", &alice);
    let o = ServerOptions {
        client_ca: Some(p.ca_file.clone()),
        ..server_opts(&p)
    };
    let (mut s, addr) = server(&o, &[], WAIT);
    let mut c = client(&ClientOptions {
        cert: Some(cert),
        key: Some(key),
        ..client_opts(&p.ca_file)
    });
    c.connect(addr, Instant::now()).unwrap();
    let mut accepted = None;
    drive(&mut s, &mut c, "a mutual-TLS accept", |_, _, sv, _| {
        for e in sv {
            if let Event::Accepted { conn, .. } = e {
                accepted = Some(*conn);
            }
        }
        accepted.is_some()
    });
    assert_eq!(s.peer_identity(accepted.unwrap()), Some("alice"));

    // Without a certificate: the server refuses the handshake; the
    // client hears of it (in TLS 1.3 after its own side is done).
    let (mut s, addr) = server(&o, &[], WAIT);
    let mut c = client(&client_opts(&p.ca_file));
    let id = c.connect(addr, Instant::now()).unwrap();
    let mut got = None;
    drive(&mut s, &mut c, "the refusal", |s, _, sv, cv| {
        assert!(!sv.iter().any(|e| matches!(e, Event::Accepted { .. })));
        for e in cv {
            if let Event::Closed(conn, why) = e {
                assert_eq!(*conn, id);
                got = Some(*why);
            }
        }
        got.is_some() && s.stats().failed == 1
    });
    assert_eq!(got, Some(CloseReason::Tls(TlsFailure::NoCertificate)));
}

#[test]
fn a_second_connection_resumes_the_session() {
    let d = Dir::new("resume");
    let p = pki(&d, Validity::days(2));
    let (mut s, addr) = server(&server_opts(&p), &[], WAIT);
    let mut c = client(&client_opts(&p.ca_file));
    for round in 0..2 {
        let id = c.connect(addr, Instant::now()).unwrap();
        let mut accepted: Option<ConnId> = None;
        let mut echoed = false;
        drive(&mut s, &mut c, "a round trip", |s, c, sv, cv| {
            for e in sv {
                match e {
                    Event::Accepted { conn, .. } => accepted = Some(*conn),
                    Event::Readable(conn) => {
                        let mut buf = [0u8; 64];
                        let n = s.recv(*conn, &mut buf).unwrap();
                        if n > 0 {
                            s.send(*conn, &buf[..n]).unwrap();
                        }
                    }
                    _ => {}
                }
            }
            for e in cv {
                match e {
                    // Tickets come after the handshake: one round trip
                    // so the client has them before the next connect.
                    Event::Connected(conn) => {
                        c.send(*conn, b"ping").unwrap();
                    }
                    Event::Readable(conn) => {
                        let mut buf = [0u8; 64];
                        echoed |= c.recv(*conn, &mut buf).unwrap() == 4;
                    }
                    _ => {}
                }
            }
            echoed
        });
        let conn = accepted.unwrap();
        assert_eq!(s.resumed(conn), round == 1, "round {round}");
        c.close(id);
    }
    assert_eq!((s.stats().handshakes, s.stats().resumed), (1, 1));
}

/// rustls's own blocking client, handshaken.
fn rustls_client(
    addr: SocketAddr,
    ca: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let cfg = ClientTls::new(&client_opts(ca), "127.0.0.1").unwrap();
    let mut conn =
        rustls::ClientConnection::new(cfg.config.clone(), cfg.server_name.clone()).unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    rustls::StreamOwned::new(conn, tcp)
}

/// Serves one connection: records what arrives and the events.
fn serve_one(s: &mut Tls, peer: impl FnOnce() + Send + 'static) -> (Vec<u8>, Vec<Event>) {
    let h = std::thread::spawn(peer);
    let mut got = Vec::new();
    let mut seen = Vec::new();
    let mut ev = Events::default();
    let deadline = Instant::now() + WAIT;
    loop {
        s.poll(Instant::now(), &mut ev).unwrap();
        for e in ev.iter() {
            seen.push(*e);
            if let Event::Readable(conn) = e {
                let mut buf = [0u8; 4096];
                loop {
                    match s.recv(*conn, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            }
        }
        let ended = seen
            .iter()
            .any(|e| matches!(e, Event::PeerFinished(_) | Event::Closed(..)));
        if ended && h.is_finished() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no end within {WAIT:?}; saw {seen:?}"
        );
        s.wait(Some(Duration::from_millis(1))).unwrap();
    }
    h.join().unwrap();
    (got, seen)
}

#[test]
fn close_notify_and_a_bare_fin_both_finish_after_every_byte() {
    let d = Dir::new("fin");
    let p = pki(&d, Validity::days(2));
    for notify in [true, false] {
        let (mut s, addr) = server(&server_opts(&p), &[], WAIT);
        let ca = p.ca_file.clone();
        let (got, seen) = serve_one(&mut s, move || {
            let mut c = rustls_client(addr, &ca);
            c.write_all(&[7u8; 100_000]).unwrap();
            if notify {
                c.conn.send_close_notify();
                c.flush().unwrap();
                while c.conn.wants_write() {
                    c.conn.write_tls(&mut c.sock).unwrap();
                }
            }
            c.sock.shutdown(std::net::Shutdown::Write).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        });
        assert_eq!(got.len(), 100_000, "close_notify {notify}");
        assert!(got.iter().all(|b| *b == 7));
        let finished: Vec<_> = seen
            .iter()
            .filter(|e| matches!(e, Event::PeerFinished(_)))
            .collect();
        assert_eq!(finished.len(), 1, "close_notify {notify}: {seen:?}");
    }
}

#[test]
fn a_forged_record_ends_the_connection_with_a_tls_error() {
    let d = Dir::new("forged");
    let p = pki(&d, Validity::days(2));
    let (mut s, addr) = server(&server_opts(&p), &[], WAIT);
    let ca = p.ca_file.clone();
    let (_, seen) = serve_one(&mut s, move || {
        let mut c = rustls_client(addr, &ca);
        c.write_all(b"fine").unwrap();
        c.flush().unwrap();
        // An application-data record whose ciphertext is noise.
        let mut rec = vec![0x17, 0x03, 0x03, 0x00, 0x40];
        rec.extend_from_slice(&[0x5a; 0x40]);
        c.sock.write_all(&rec).unwrap();
        let mut rest = Vec::new();
        let _ = c.sock.read_to_end(&mut rest);
    });
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Closed(_, CloseReason::Tls(TlsFailure::Protocol)))),
        "{seen:?}"
    );
    assert_eq!(s.stats().errors, 1);
}

#[test]
fn a_short_send_is_always_followed_by_writable() {
    // rustls takes at most its buffer (64 KiB) per write; when the inner
    // connection then drains all of it, no inner `Writable` will come, so
    // the TLS layer must take more itself rather than leave the caller
    // waiting.
    let d = Dir::new("short");
    let p = pki(&d, Validity::days(2));
    let (mut s, addr) = server(&server_opts(&p), &[], WAIT);
    let mut c = client(&client_opts(&p.ca_file));
    let id = c.connect(addr, Instant::now()).unwrap();
    let data = vec![0xa5u8; 1 << 20];
    let (mut sent, mut got) = (0usize, 0usize);
    let mut connected = false;
    drive(&mut s, &mut c, "1 MiB sent and received", |s, c, sv, cv| {
        for e in sv {
            if let Event::Readable(conn) = e {
                let mut buf = [0u8; 65536];
                loop {
                    match s.recv(*conn, &mut buf).unwrap() {
                        0 => break,
                        n => got += n,
                    }
                }
            }
        }
        for e in cv {
            if matches!(e, Event::Connected(_) | Event::Writable(_)) {
                connected = true;
                // As the engine does: one send; a short one waits for
                // the next `Writable`.
                if sent < data.len() {
                    sent += c.send(id, &data[sent..]).unwrap();
                }
            }
        }
        connected && got == data.len()
    });
    assert_eq!(sent, data.len());
}
