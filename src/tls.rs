//! TLS on the command line: `serve`'s certificate options and which
//! listeners speak TLS, the options of `client` and `bench`, and
//! `warpwire certs`. The TLS itself is crates/tls: a transport wrapper,
//! so every backend and every protocol gets it from the same code.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use clap::builder::BoolishValueParser;
use serde::{Deserialize, Serialize};
use warpwire_engine::ServerConfig;
use warpwire_tls::{ClientOptions, ClientTls, ServerOptions, ServerTls, TlsTransport};
use warpwire_transport::{Transport, TransportError};

use crate::backend::UseTransport;
use crate::serve::BoxError;

/// `serve`'s TLS options; the same keys (without `tls_`) make the config
/// file's `[tls]` table.
#[derive(Debug, Args, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsArgs {
    /// The main `--listen` address speaks TLS: `--tls`, `--tls=false`
    /// (other listeners: `--listener PROTOCOL+tls=ADDR`) [TOML: listen].
    #[arg(long = "tls", env = "WARPWIRE_TLS", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    #[serde(rename = "listen", skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<bool>,
    /// Certificate chain for the TLS listeners, PEM, end entity first;
    /// re-read with the key on SIGHUP [TOML: cert].
    #[arg(long = "tls-cert", env = "WARPWIRE_TLS_CERT")]
    #[serde(rename = "cert", skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key, PEM [TOML: key].
    #[arg(long = "tls-key", env = "WARPWIRE_TLS_KEY")]
    #[serde(rename = "key", skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mutual TLS); a
    /// certificate's subject (CN) then counts as an authenticated user
    /// [TOML: client_ca].
    #[arg(long = "tls-client-ca", env = "WARPWIRE_TLS_CLIENT_CA")]
    #[serde(rename = "client_ca", skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Lowest TLS version accepted, 1.3 or 1.2 [default: 1.3] [TOML: min_version].
    #[arg(long = "tls-min-version", env = "WARPWIRE_TLS_MIN_VERSION")]
    #[serde(rename = "min_version", skip_serializing_if = "Option::is_none")]
    pub tls_min_version: Option<String>,
    /// A handshake not done within this is dropped [default: 10s]
    /// [TOML: handshake_timeout].
    #[arg(long = "tls-handshake-timeout", env = "WARPWIRE_TLS_HANDSHAKE_TIMEOUT",
          value_parser = humantime::parse_duration)]
    #[serde(
        rename = "handshake_timeout",
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_handshake_timeout: Option<Duration>,
}

impl ServerTlsArgs {
    /// Flags (and environment) over the file's `[tls]` table.
    pub fn over(&self, file: &Self) -> Self {
        Self {
            tls_listen: self.tls_listen.or(file.tls_listen),
            tls_cert: self.tls_cert.clone().or_else(|| file.tls_cert.clone()),
            tls_key: self.tls_key.clone().or_else(|| file.tls_key.clone()),
            tls_client_ca: self
                .tls_client_ca
                .clone()
                .or_else(|| file.tls_client_ca.clone()),
            tls_min_version: self
                .tls_min_version
                .clone()
                .or_else(|| file.tls_min_version.clone()),
            tls_handshake_timeout: self.tls_handshake_timeout.or(file.tls_handshake_timeout),
        }
    }
}

/// The TLS listeners of a server, ready for its workers' transports.
#[derive(Clone)]
pub struct ServerSetup {
    /// The shared state (the reloadable certificate).
    pub shared: Arc<ServerTls>,
    /// Each TLS listener, by its place in `ServerConfig::listen_addrs`
    /// (the order every worker listens in), and its rustls configuration
    /// (ALPN of its protocol).
    pub listeners: Vec<(usize, Arc<warpwire_tls::rustls::ServerConfig>)>,
}

impl ServerSetup {
    /// Which listeners of `cfg` speak TLS and with what; `None` when none
    /// does. Certificates without a TLS listener, or a TLS listener
    /// without certificates, are errors.
    pub fn new(t: &ServerTlsArgs, cfg: &ServerConfig) -> Result<Option<Self>, BoxError> {
        let mut tls: Vec<(usize, &str)> = Vec::new();
        if t.tls_listen == Some(true) {
            tls.push((0, "warpwire"));
        }
        for (i, l) in cfg.listeners.iter().enumerate().filter(|(_, l)| l.tls) {
            tls.push((i + 1, l.protocol.as_str()));
        }
        let (cert, key) = match (&t.tls_cert, &t.tls_key, tls.is_empty()) {
            (None, None, true) if t.tls_client_ca.is_none() => return Ok(None),
            (_, _, true) => {
                return Err(
                    "--tls-cert/--tls-key/--tls-client-ca given, but no listener speaks \
                            TLS: add --tls (the main --listen) or --listener PROTOCOL+tls=ADDR"
                        .into(),
                );
            }
            (Some(c), Some(k), false) => (c, k),
            _ => {
                return Err("a TLS listener needs --tls-cert and --tls-key (PEM files; \
                            `warpwire certs` makes a development set)"
                    .into());
            }
        };
        let shared = ServerTls::new(&ServerOptions {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: t.tls_client_ca.clone(),
            min_version: t.tls_min_version.as_deref().unwrap_or("1.3").parse()?,
            handshake_timeout: t.tls_handshake_timeout,
        })?;
        let listeners = tls
            .into_iter()
            .map(|(a, p)| Ok((a, shared.config(&[warpwire_tls::alpn_for(p)])?)))
            .collect::<Result<Vec<_>, BoxError>>()?;
        Ok(Some(Self { shared, listeners }))
    }

    /// `t` with TLS on the TLS listeners.
    pub fn wrap<T: Transport>(&self, t: T) -> TlsTransport<T> {
        let timeout = self.shared.handshake_timeout;
        self.listeners
            .iter()
            .fold(TlsTransport::new(t), |w, (a, c)| {
                w.serve_tls_nth(*a, c.clone(), timeout)
            })
    }
}

/// The TLS options of `client` and `bench`.
#[derive(Debug, Args, Clone, Default)]
pub struct ClientTlsArgs {
    /// Speak TLS to the server (implied by any other --tls-* option).
    #[arg(long = "tls")]
    pub tls: bool,
    /// Trust this CA (PEM) instead of the system's roots.
    #[arg(long = "tls-ca", env = "WARPWIRE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry (and SNI) [default:
    /// the host of the address].
    #[arg(long = "tls-server-name")]
    pub tls_server_name: Option<String>,
    /// Also require the server's certificate to have this SHA-256
    /// fingerprint, `sha256:HEX` (repeatable: any one matches).
    #[arg(long = "tls-pin")]
    pub tls_pins: Vec<String>,
    /// Client certificate chain, PEM (mutual TLS).
    #[arg(long = "tls-cert", env = "WARPWIRE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key, PEM.
    #[arg(long = "tls-key", env = "WARPWIRE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Lowest TLS version accepted, 1.3 or 1.2 [default: 1.3].
    #[arg(long = "tls-min-version")]
    pub tls_min_version: Option<String>,
    /// Do not resume sessions: every connection makes a full handshake
    /// (to measure them).
    #[arg(long = "tls-no-resume")]
    pub tls_no_resume: bool,
}

impl ClientTlsArgs {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        self.tls
            || self.tls_ca.is_some()
            || self.tls_server_name.is_some()
            || !self.tls_pins.is_empty()
            || self.tls_cert.is_some()
    }

    /// The client state for a server given as `host`, offering `alpn`;
    /// `None` when TLS is off.
    pub fn client(&self, host: &str, alpn: &[u8]) -> Result<Option<ClientTls>, BoxError> {
        if !self.enabled() {
            return Ok(None);
        }
        let mut c = ClientTls::new(
            &ClientOptions {
                ca: self.tls_ca.clone(),
                server_name: self.tls_server_name.clone(),
                pins: self.tls_pins.clone(),
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                alpn: vec![alpn.to_vec()],
                min_version: self.tls_min_version.as_deref().unwrap_or("1.3").parse()?,
                handshake_timeout: None,
            },
            host,
        )?;
        if self.tls_no_resume {
            let mut cfg = (*c.config).clone();
            cfg.resumption = warpwire_tls::rustls::client::Resumption::disabled();
            c.config = Arc::new(cfg);
        }
        Ok(Some(c))
    }
}

/// A command run over TLS: its transports wrapped so every connection
/// they open speaks TLS.
pub struct WithClientTls<U> {
    /// The client state.
    pub tls: ClientTls,
    /// The command.
    pub inner: U,
}

impl<U: UseTransport> UseTransport for WithClientTls<U> {
    type Output = U::Output;

    fn run<T, F>(self, factory: F) -> Result<U::Output, BoxError>
    where
        T: Transport + 'static,
        F: Fn(usize) -> Result<T, TransportError> + Send + Sync + 'static,
    {
        let tls = self.tls;
        self.inner
            .run(move |i| Ok(TlsTransport::new(factory(i)?).with_client(tls.clone())))
    }
}

/// `warpwire certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write into (created if missing).
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// Names and addresses the server certificate is valid for
    /// (repeatable) [default: localhost, 127.0.0.1, ::1].
    #[arg(long = "name")]
    pub names: Vec<String>,
    /// The client certificate's user (its CN: the identity mutual TLS
    /// authenticates).
    #[arg(long, default_value = "warpwire")]
    pub user: String,
    /// Days the certificates are valid.
    #[arg(long, default_value_t = 365)]
    pub days: i64,
}

/// Writes a development CA, server and client certificate.
pub fn certs(a: CertsArgs) -> Result<(), BoxError> {
    let names = if a.names.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    } else {
        a.names
    };
    if a.days < 1 {
        return Err("--days: at least 1".into());
    }
    let set = warpwire_tls::certs::write_dev_set(&a.dir, &names, &a.user, a.days)?;
    let d = a.dir.display();
    println!(
        "wrote {} (the CA: --tls-ca, curl --cacert, openssl s_client -CAfile)",
        set.ca.display()
    );
    println!(
        "wrote {} and {} for {}",
        set.server.0.display(),
        set.server.1.display(),
        names.join(", ")
    );
    println!(
        "wrote {} and {} (client certificate of user {})",
        set.client.0.display(),
        set.client.1.display(),
        a.user
    );
    println!("server certificate: sha256:{}", set.server_fingerprint);
    println!("development only: the CA's key is in {d}/ca-key.pem");
    println!("try:");
    println!("  warpwire serve --tls --tls-cert {d}/server.pem --tls-key {d}/server-key.pem");
    println!("  warpwire client localhost:7077 --tls --tls-ca {d}/ca.pem ping");
    Ok(())
}
