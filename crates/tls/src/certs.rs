//! Development certificates (`warpwire certs`): a CA, a server
//! certificate for the names given and a client certificate, all ECDSA
//! P-256, made with rcgen. For tests and first steps, not for production
//! (the CA key is written next to the certificates).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::config::TlsError;

fn gen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> TlsError {
    move |e| TlsError::Invalid(format!("generating {what}: {e}"))
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
    /// The certificate's DER, for fingerprints.
    pub der: Vec<u8>,
}

/// A development CA that signs server and client certificates.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate and key.
    pub pem: Pem,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Not before.
    pub from: OffsetDateTime,
    /// Not after.
    pub until: OffsetDateTime,
}

impl Validity {
    /// From a day ago (clock skew) for `days` days.
    pub fn days(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            from: now - Duration::days(1),
            until: now + Duration::days(days),
        }
    }

    /// Expired yesterday (for tests of refusals).
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            from: now - Duration::days(30),
            until: now - Duration::days(1),
        }
    }
}

impl DevCa {
    /// A new CA named `name`.
    pub fn new(name: &str, valid: Validity) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(gen_err("the CA key"))?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen_err("the CA"))?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.not_before = valid.from;
        p.not_after = valid.until;
        let cert = p.self_signed(&key).map_err(gen_err("the CA"))?;
        let pem = Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        };
        Ok(Self {
            issuer: Issuer::new(p, key),
            pem,
        })
    }

    /// A server certificate for `names` (host names and IP addresses).
    pub fn server(&self, names: &[String], valid: Validity) -> Result<Pem, TlsError> {
        let cn = names.first().map_or("warpwire", String::as_str);
        self.leaf(cn, names, ExtendedKeyUsagePurpose::ServerAuth, valid)
    }

    /// A client certificate whose common name is `user` (the identity
    /// mutual TLS authenticates).
    pub fn client(&self, user: &str, valid: Validity) -> Result<Pem, TlsError> {
        self.leaf(user, &[], ExtendedKeyUsagePurpose::ClientAuth, valid)
    }

    fn leaf(
        &self,
        cn: &str,
        names: &[String],
        usage: ExtendedKeyUsagePurpose,
        valid: Validity,
    ) -> Result<Pem, TlsError> {
        let key = KeyPair::generate().map_err(gen_err("a key"))?;
        let mut p =
            CertificateParams::new(Vec::<String>::new()).map_err(gen_err("a certificate"))?;
        for n in names {
            let san = match n
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    n.clone()
                        .try_into()
                        .map_err(|e| TlsError::Invalid(format!("name `{n}`: {e}")))?,
                ),
            };
            p.subject_alt_names.push(san);
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        p.not_before = valid.from;
        p.not_after = valid.until;
        let cert = p
            .signed_by(&key, &self.issuer)
            .map_err(gen_err("a certificate"))?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }
}

/// What [`write_dev_set`] wrote.
#[derive(Debug, Clone)]
pub struct DevSet {
    /// `ca.pem` (trust this: `--tls-ca`, `curl --cacert`, `openssl s_client -CAfile`).
    pub ca: PathBuf,
    /// `server.pem` and `server-key.pem` (`serve --tls-cert/--tls-key`).
    pub server: (PathBuf, PathBuf),
    /// `client.pem` and `client-key.pem` (a client certificate for `user`).
    pub client: (PathBuf, PathBuf),
    /// The server certificate's SHA-256 fingerprint (`--tls-pin sha256:...`).
    pub server_fingerprint: String,
}

/// Writes a CA, a server certificate for `names` and a client certificate
/// for `user` into `dir` (created if missing); keys are mode 0600.
pub fn write_dev_set(
    dir: &Path,
    names: &[String],
    user: &str,
    days: i64,
) -> Result<DevSet, TlsError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |e: std::io::Error| TlsError::File {
            path,
            what: e.to_string(),
        }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let valid = Validity::days(days);
    let ca = DevCa::new("warpwire development CA", valid)?;
    let server = ca.server(names, valid)?;
    let client = ca.client(user, valid)?;
    let write = |name: &str, text: &str, secret: bool| -> Result<PathBuf, TlsError> {
        let p = dir.join(name);
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(if secret { 0o600 } else { 0o644 });
        }
        use std::io::Write;
        o.open(&p)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(io(&p))?;
        Ok(p)
    };
    let ca_path = write("ca.pem", &ca.pem.cert, false)?;
    write("ca-key.pem", &ca.pem.key, true)?;
    let s = (
        write("server.pem", &server.cert, false)?,
        write("server-key.pem", &server.key, true)?,
    );
    let c = (
        write("client.pem", &client.cert, false)?,
        write("client-key.pem", &client.key, true)?,
    );
    Ok(DevSet {
        ca: ca_path,
        server: s,
        client: c,
        server_fingerprint: crate::config::fingerprint(&server.der),
    })
}
