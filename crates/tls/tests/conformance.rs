//! The Transport conformance suite (warpwire-testkit) through TLS: a
//! `TlsTransport` over the socket backend on each side, on loopback, with
//! a development CA made for the run. Every byte of every check crosses
//! a rustls connection.
//!
//! Left out: `peer_reset` and `half_close`, whose peer is a plain kernel
//! socket (it cannot speak TLS); tests/tls.rs covers a peer's
//! close_notify, its FIN and its reset through TLS instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use warpwire_socket::SocketTransport;
use warpwire_testkit::conformance::KernelPair;
use warpwire_tls::certs::{DevCa, Validity};
use warpwire_tls::{ClientOptions, ClientTls, ServerOptions, ServerTls, TlsTransport};

struct Certs {
    dir: std::path::PathBuf,
}

fn certs() -> &'static Certs {
    static C: OnceLock<Certs> = OnceLock::new();
    C.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("warpwire-tls-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = DevCa::new("conformance CA", Validity::days(2)).unwrap();
        let server = ca.server(&["127.0.0.1".into()], Validity::days(2)).unwrap();
        std::fs::write(dir.join("ca.pem"), &ca.pem.cert).unwrap();
        std::fs::write(dir.join("server.pem"), &server.cert).unwrap();
        std::fs::write(dir.join("server-key.pem"), &server.key).unwrap();
        Certs { dir }
    })
}

type Tls = TlsTransport<SocketTransport>;

fn pair() -> KernelPair<Tls, Tls> {
    let c = certs();
    let server = ServerTls::new(&ServerOptions {
        cert: c.dir.join("server.pem"),
        key: c.dir.join("server-key.pem"),
        ..ServerOptions::default()
    })
    .unwrap();
    let client = ClientTls::new(
        &ClientOptions {
            ca: Some(c.dir.join("ca.pem")),
            ..ClientOptions::default()
        },
        "127.0.0.1",
    )
    .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let s = TlsTransport::new(SocketTransport::new().unwrap()).serve_tls(
        addr,
        server.config(&[]).unwrap(),
        Duration::from_secs(10),
    );
    let c = TlsTransport::new(SocketTransport::new().unwrap()).with_client(client);
    KernelPair::on(s, c, addr).unwrap()
}

warpwire_testkit::conformance_tests!(
    pair;
    connect_accept,
    connect_refused,
    stop_listening,
    readable_until_short_read,
    recv_buf_appends,
    backpressure,
    pause_resume,
    peer_close,
    local_close,
    stale_ids,
    many_connections,
    large_transfer,
);
