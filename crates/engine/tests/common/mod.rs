//! Shared helpers of the engine's integration tests: a server on loopback
//! over the socket backend and a raw blocking client that can send anything.
//!
//! Test files whose crate name ends in `_tls` (messages_tls.rs,
//! errors_tls.rs: the same tests included once more) get TLS between the
//! two: the server's transport wrapped in warpwire-tls, the client a
//! blocking rustls stream (rustls's own, not warpwire's code), with a
//! development CA made for the run.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use warpwire_engine::{Server, ServerConfig, ServerHandle};
use warpwire_frame::{Decoder, DecoderConfig, ErrorBody, ErrorCode, Frame, MessageType};
use warpwire_socket::SocketTransport;

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        // Test clients often stay connected through stop(); don't wait long for them.
        shutdown_grace: Duration::from_millis(500),
        ..ServerConfig::default()
    }
}

pub fn start(cfg: ServerConfig) -> ServerHandle {
    start_with(cfg, |_| {})
}

/// Whether this test binary runs its tests through TLS.
pub fn tls() -> bool {
    module_path!()
        .split("::")
        .next()
        .is_some_and(|krate| krate.ends_with("_tls"))
}

struct TlsSetup {
    server: Arc<warpwire_tls::rustls::ServerConfig>,
    client: Arc<warpwire_tls::rustls::ClientConfig>,
}

fn tls_setup() -> &'static TlsSetup {
    use warpwire_tls::certs::{DevCa, Validity};
    use warpwire_tls::rustls;
    static S: OnceLock<TlsSetup> = OnceLock::new();
    S.get_or_init(|| {
        let ca = DevCa::new("engine tests CA", Validity::days(2)).unwrap();
        let leaf = ca.server(&["127.0.0.1".into()], Validity::days(2)).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = <rustls::pki_types::PrivateKeyDer<'static> as rustls::pki_types::pem::PemObject>::from_pem_slice(leaf.key.as_bytes())
            .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der.clone().into()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.pem.der.clone().into()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsSetup {
            server: Arc::new(server),
            client: Arc::new(client),
        }
    })
}

pub fn start_with(cfg: ServerConfig, setup: impl FnOnce(&mut Server)) -> ServerHandle {
    let mut s = Server::new(cfg);
    setup(&mut s);
    if tls() {
        let server = tls_setup().server.clone();
        return s
            .start(move |_| {
                Ok(
                    warpwire_tls::TlsTransport::new(SocketTransport::new()?).serve_tls_nth(
                        0,
                        server.clone(),
                        WAIT,
                    ),
                )
            })
            .unwrap();
    }
    s.start(|_| SocketTransport::new()).unwrap()
}

/// A plain or TLS byte stream to the server.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<warpwire_tls::rustls::StreamOwned<warpwire_tls::rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => match s.read(buf) {
                // A close without close_notify: the server's FIN.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

impl Stream {
    /// The TCP connection under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => &s.sock,
        }
    }
}

pub struct Conn {
    pub s: Stream,
    dec: Decoder,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let s = if tls() {
            let name = warpwire_tls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let mut c =
                warpwire_tls::rustls::ClientConnection::new(tls_setup().client.clone(), name)
                    .unwrap();
            // Handshake now, as a connected client would before its
            // first frame (an idle connection is then idle in the engine,
            // not a handshake in progress).
            let mut tcp = tcp;
            let deadline = Instant::now() + WAIT;
            while c.is_handshaking() {
                assert!(
                    Instant::now() < deadline,
                    "TLS handshake not done within {WAIT:?}"
                );
                match c.complete_io(&mut tcp) {
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => panic!("TLS handshake: {e}"),
                }
            }
            Stream::Tls(Box::new(warpwire_tls::rustls::StreamOwned::new(c, tcp)))
        } else {
            Stream::Plain(tcp)
        };
        Self {
            s,
            dec: Decoder::new(DecoderConfig {
                max_payload: 64 << 20,
                ..DecoderConfig::default()
            }),
        }
    }

    pub fn send(&mut self, f: &Frame) {
        self.s.write_all(&f.to_bytes().unwrap()).unwrap();
    }

    pub fn send_raw(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// The next frame, or None if the server closed the connection.
    pub fn try_recv(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(f) = self.dec.decode().expect("server sent a malformed frame") {
                return Some(f);
            }
            assert!(Instant::now() < deadline, "no frame within {within:?}");
            let buf = self.dec.read_buf();
            match self.s.read(buf) {
                Ok(0) => return None,
                Ok(n) => self.dec.commit(n),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    pub fn recv(&mut self) -> Frame {
        self.try_recv(WAIT).expect("connection closed")
    }

    /// Sends `f` and returns the reply.
    pub fn call(&mut self, f: &Frame) -> Frame {
        self.send(f);
        self.recv()
    }

    /// Expects an ERROR; returns its code and request_id.
    pub fn recv_error(&mut self) -> (ErrorCode, u64) {
        let f = self.recv();
        assert_eq!(f.msg_type, MessageType::ERROR, "expected ERROR, got {f:?}");
        let e = ErrorBody::decode(&f.body).unwrap();
        (e.error_code().expect("known code"), f.request_id)
    }

    /// Whether the server closes the connection within `WAIT` (a frame
    /// instead of the close fails the test; so does silence past `WAIT`).
    pub fn closed(&mut self) -> bool {
        match self.try_recv(WAIT) {
            None => true,
            Some(f) => panic!("expected close, got {f:?}"),
        }
    }

    /// Whether the connection still works: an ECHO gets its reply.
    pub fn alive(&mut self) -> bool {
        let r = self.call(&Frame::new(MessageType::ECHO, 999_999, &b"alive?"[..]));
        r.msg_type == MessageType::ECHO_REPLY && r.request_id == 999_999 && &r.body[..] == b"alive?"
    }
}

/// Polls `f` until true or `WAIT` passes.
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
