//! Building rustls configurations from files: the server's certificate
//! and key (reloadable), client-certificate verification, the client's
//! roots, pins and certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use sha2::{Digest, Sha256};

/// Errors setting TLS up (each names the file or option at fault).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {what}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// rustls refused the configuration.
    #[error("{what}: {source}")]
    Rustls {
        /// What was being set up.
        what: &'static str,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// An option's value is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// The lowest TLS version accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MinVersion {
    /// TLS 1.3 only (the default).
    #[default]
    Tls13,
    /// TLS 1.2 and 1.3.
    Tls12,
}

impl std::str::FromStr for MinVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1.3" => Ok(Self::Tls13),
            "1.2" => Ok(Self::Tls12),
            _ => Err(format!("`{s}`: expected 1.2 or 1.3")),
        }
    }
}

impl std::fmt::Display for MinVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tls13 => "1.3",
            Self::Tls12 => "1.2",
        })
    }
}

impl MinVersion {
    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        static TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        static TLS12: [&SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        match self {
            Self::Tls13 => &TLS13,
            Self::Tls12 => &TLS12,
        }
    }
}

/// The handshake deadline when none is given: long enough for a slow
/// network and a cold client, short enough that a peer which connects and
/// never finishes (slowloris) does not hold a slot for long.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The crypto provider: aws-lc-rs, rustls's default (docs/operations.md
/// says why), with AES-128-GCM preferred over AES-256-GCM: 128-bit
/// security, and measured here at about a third less CPU per byte
/// (docs/benchmarks.md). ChaCha20-Poly1305 and AES-256-GCM stay offered.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    let aes128 = [
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ];
    // A stable sort: AES-128-GCM suites first, the rest in rustls's order.
    p.cipher_suites
        .sort_by_key(|s| !aes128.contains(&s.suite()));
    Arc::new(p)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_owned(),
        what: e.to_string(),
    })
}

/// Every certificate in a PEM file, in order (a chain: the end entity
/// first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            path: path.to_owned(),
            what: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.to_owned(),
            what: "no CERTIFICATE in it".into(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::File {
        path: path.to_owned(),
        what: format!("no private key in it ({e})"),
    })
}

fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| TlsError::File {
            path: path.to_owned(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The SHA-256 fingerprint of a certificate (DER), as `openssl x509
/// -fingerprint -sha256` prints it without the colons, and as
/// `--tls-pin sha256:HEX` takes it.
pub fn fingerprint(cert: &[u8]) -> String {
    hex::encode(Sha256::digest(cert))
}

/// Parses `sha256:HEX` (colons allowed between bytes).
pub fn parse_pin(s: &str) -> Result<[u8; 32], TlsError> {
    let hexpart = s
        .strip_prefix("sha256:")
        .ok_or_else(|| TlsError::Invalid(format!("pin `{s}`: expected sha256:HEX")))?;
    let clean: String = hexpart.chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&clean, &mut out)
        .map_err(|e| TlsError::Invalid(format!("pin `{s}`: {e} (64 hex digits expected)")))?;
    Ok(out)
}

/// The server's certificate chain and key, read from files and replaced
/// by [`ServerCert::reload`] (SIGHUP) while connections go on: rustls asks
/// for the current one at every handshake.
#[derive(Debug)]
pub struct ServerCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCert {
    /// Reads the chain and key; fails when they do not belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = provider();
        let ck = Self::read(cert, key, &provider)?;
        Ok(Arc::new(Self {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            provider,
            current: RwLock::new(Arc::new(ck)),
        }))
    }

    fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let chain = load_certs(cert)?;
        let key_der = load_key(key)?;
        CertifiedKey::from_der(chain, key_der, provider).map_err(|e| TlsError::File {
            path: key.to_owned(),
            what: format!("cannot use this key with {}: {e}", cert.display()),
        })
    }

    /// Reads the files again and, if they are good, serves the new chain
    /// from the next handshake on; connections already open keep theirs.
    /// On error the old certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let ck = Self::read(&self.cert_path, &self.key_path, &self.provider)?;
        if let Ok(mut cur) = self.current.write() {
            *cur = Arc::new(ck);
        }
        Ok(())
    }

    /// The SHA-256 fingerprint of the end-entity certificate served now.
    pub fn fingerprint(&self) -> String {
        self.current
            .read()
            .ok()
            .and_then(|c| c.cert.first().map(|d| fingerprint(d)))
            .unwrap_or_default()
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// What a TLS server is given (`serve --tls-*`, `[tls]` in TOML).
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// The certificate chain, PEM, end entity first.
    pub cert: PathBuf,
    /// The private key, PEM.
    pub key: PathBuf,
    /// Require client certificates signed by this CA (mutual TLS); the
    /// certificate's subject then authenticates the connection.
    pub client_ca: Option<PathBuf>,
    /// The lowest version accepted.
    pub min_version: MinVersion,
    /// How long a handshake may take.
    pub handshake_timeout: Option<Duration>,
}

/// A server's TLS state shared by every worker and listener: the
/// reloadable certificate, one session cache and one ticket key, so a
/// session resumes on any worker.
#[derive(Debug)]
pub struct ServerTls {
    cert: Arc<ServerCert>,
    client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    versions: &'static [&'static SupportedProtocolVersion],
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    provider: Arc<CryptoProvider>,
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
}

/// Sessions the server remembers for stateful resumption (TLS 1.2 ids);
/// TLS 1.3 resumes from tickets and needs no server memory.
const SESSION_CACHE: usize = 4096;

impl ServerTls {
    /// Loads the files and builds the shared state.
    pub fn new(o: &ServerOptions) -> Result<Arc<Self>, TlsError> {
        let cert = ServerCert::load(&o.cert, &o.key)?;
        let provider = provider();
        let client_verifier = match &o.client_ca {
            None => None,
            Some(ca) => Some(
                WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots_from(ca)?),
                    provider.clone(),
                )
                .build()
                .map_err(|e| TlsError::Invalid(format!("--tls-client-ca {}: {e}", ca.display())))?,
            ),
        };
        let ticketer =
            rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|source| TlsError::Rustls {
                what: "session ticket key",
                source,
            })?;
        Ok(Arc::new(Self {
            cert,
            client_verifier,
            versions: o.min_version.versions(),
            sessions: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE),
            ticketer,
            provider,
            handshake_timeout: o.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
        }))
    }

    /// The reloadable certificate (for SIGHUP).
    pub fn cert(&self) -> &Arc<ServerCert> {
        &self.cert
    }

    /// Whether client certificates are required.
    pub fn mutual(&self) -> bool {
        self.client_verifier.is_some()
    }

    /// A rustls configuration for one listener, offering `alpn` (the
    /// listener's protocol: a client offering only others is refused with
    /// `no_application_protocol`; one offering none is served).
    pub fn config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(self.versions)
            .map_err(|source| TlsError::Rustls {
                what: "protocol versions",
                source,
            })?;
        let builder = match &self.client_verifier {
            Some(v) => builder.with_client_cert_verifier(v.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut c = builder.with_cert_resolver(self.cert.clone());
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        c.session_storage = self.sessions.clone();
        c.ticketer = self.ticketer.clone();
        Ok(Arc::new(c))
    }
}

/// What a TLS client is given (`client`/`bench --tls*`).
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Trust this CA (PEM) instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the host
    /// the address was given as).
    pub server_name: Option<String>,
    /// The server's certificate must also have one of these SHA-256
    /// fingerprints (`sha256:HEX`).
    pub pins: Vec<String>,
    /// A client certificate chain (mutual TLS), PEM.
    pub cert: Option<PathBuf>,
    /// Its private key, PEM.
    pub key: Option<PathBuf>,
    /// ALPN protocols to offer, in preference order.
    pub alpn: Vec<Vec<u8>>,
    /// The lowest version accepted.
    pub min_version: MinVersion,
    /// How long a handshake may take.
    pub handshake_timeout: Option<Duration>,
}

/// A client's TLS state: one rustls configuration (and so one session
/// cache: later connections resume) and the name to verify.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The rustls configuration.
    pub config: Arc<ClientConfig>,
    /// The name sent as SNI and checked against the certificate.
    pub server_name: ServerName<'static>,
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
}

impl ClientTls {
    /// Builds the client state; `default_name` is the host the user gave
    /// (a name or an address), used when no server name is set.
    pub fn new(o: &ClientOptions, default_name: &str) -> Result<Self, TlsError> {
        let provider = provider();
        let roots = match &o.ca {
            Some(ca) => roots_from(ca)?,
            None => system_roots()?,
        };
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Invalid(format!("the trusted roots: {e}")))?;
        let pins = o
            .pins
            .iter()
            .map(|p| parse_pin(p))
            .collect::<Result<Vec<_>, _>>()?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(o.min_version.versions())
            .map_err(|source| TlsError::Rustls {
                what: "protocol versions",
                source,
            })?;
        let builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> =
            if pins.is_empty() {
                builder.with_webpki_verifier(webpki)
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Pinned {
                        inner: webpki,
                        pins,
                    }))
            };
        let mut config = match (&o.cert, &o.key) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(load_certs(c)?, load_key(k)?)
                .map_err(|source| TlsError::Rustls {
                    what: "the client certificate",
                    source,
                })?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Invalid(
                    "a client certificate needs both --tls-cert and --tls-key".into(),
                ));
            }
        };
        config.alpn_protocols = o.alpn.clone();
        let name = o.server_name.as_deref().unwrap_or(default_name);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|e| TlsError::Invalid(format!("server name `{name}`: {e}")))?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
            handshake_timeout: o.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
        })
    }
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::Invalid(format!(
            "no system CA certificates found ({} errors; install ca-certificates or pass --tls-ca)",
            found.errors.len()
        )));
    }
    Ok(roots)
}

/// Chain verification as usual, then the end-entity certificate's
/// fingerprint must be one of the pins (as `curl --pinnedpubkey` adds a
/// check rather than replacing one).
#[derive(Debug)]
struct Pinned {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    pins: Vec<[u8; 32]>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if self.pins.contains(&got) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The identity a verified client certificate carries: its subject's
/// common name, else its first DNS or e-mail subject alternative name.
pub fn identity_of(cert: &[u8]) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, x) = X509Certificate::from_der(cert).ok()?;
    if let Some(cn) = x
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        return Some(cn.to_owned());
    }
    let san = x.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::DNSName(s) | GeneralName::RFC822Name(s) => Some((*s).to_owned()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_with_or_without_colons() {
        let hex64 = "ab".repeat(32);
        assert_eq!(parse_pin(&format!("sha256:{hex64}")).unwrap(), [0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_pin(&format!("sha256:{colons}")).unwrap(), [0xab; 32]);
        assert!(parse_pin(&hex64).is_err());
        assert!(parse_pin("sha256:abcd").is_err());
    }

    #[test]
    fn versions_parse() {
        assert_eq!("1.2".parse::<MinVersion>().unwrap(), MinVersion::Tls12);
        assert!("1.1".parse::<MinVersion>().is_err());
    }
}
