//! The config file, read once per command, and the one place where every
//! setting's four sources meet: a flag, then its `WARPWIRE_*` environment
//! variable (clap merges those two), then the config file, then the
//! built-in default.
//!
//! ```toml
//! transport = "auto"              # top level: transport selection
//! latency_policy = "balanced"
//! [bypass]                        # the bypass backends' options (--iface, --ip, ...)
//! iface = "eth1"
//! [server]                        # every `serve` setting (--workers, --max-frame, ...)
//! listen = "localhost:7077"
//! [http]                          # the HTTP protocol's limits (--http-max-body, ...)
//! max_body = 1048576
//! [resp]                          # the Redis protocol's limits (--resp-maxmemory, ...)
//! maxmemory = 0
//! [tls]                           # TLS (--tls, --tls-cert, ...; reloaded on SIGHUP)
//! listen = true
//! cert = "certs/server.pem"
//! key = "certs/server-key.pem"
//! ```
//!
//! Keys whose values the command line parses differently from the engine
//! (`listen` and `metrics` take host names; `busy_poll` unset means "what
//! the latency policy implies") are taken out of `[server]` here; the rest
//! of the table is the engine's [`ServerConfig`].

use std::path::Path;

use serde::Deserialize;
use warpwire_engine::ServerConfig;
use warpwire_http::HttpConfig;
use warpwire_resp::RespConfig;
use warpwire_transport::{LatencyPolicy, TransportChoice};

use crate::addr::HostPort;
use crate::cli::{BypassArgs, SelectArgs, ServeArgs};
use crate::serve::BoxError;

/// The config file's top level.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawFile {
    transport: Option<String>,
    latency_policy: Option<String>,
    bypass: BypassArgs,
    server: toml::Table,
    http: HttpConfig,
    resp: RespConfig,
    tls: crate::tls::ServerTlsArgs,
}

/// What the config file says (everything unset when there is none).
#[derive(Debug, Default)]
pub struct FileConfig {
    /// `transport`: `auto`, `socket`, `uring`, `xdp`, `dpdk`, `rdma`.
    pub transport: Option<TransportChoice>,
    /// `latency_policy`: `lowest`, `balanced`, `compatible`.
    pub latency_policy: Option<LatencyPolicy>,
    /// The `[bypass]` table.
    pub bypass: BypassArgs,
    /// `[server]`, with defaults where the file is silent (and with
    /// `listen`, `metrics` and `busy_poll` below instead).
    pub server: ServerConfig,
    /// `[server] listen`.
    pub listen: Option<HostPort>,
    /// `[server] metrics`.
    pub metrics: Option<HostPort>,
    /// `[server] busy_poll`.
    pub busy_poll: Option<bool>,
    /// The `[http]` table.
    pub http: HttpConfig,
    /// The `[resp]` table.
    pub resp: RespConfig,
    /// The `[tls]` table.
    pub tls: crate::tls::ServerTlsArgs,
}

impl FileConfig {
    /// Reads the config file, or gives an empty one when none is named.
    pub fn load(path: Option<&Path>) -> Result<Self, BoxError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("config file {}: {e}", path.display()).into())
    }

    /// Parses config-file text.
    pub fn parse(text: &str) -> Result<Self, BoxError> {
        let mut raw: RawFile = toml::from_str(text)?;
        fn take<T: serde::de::DeserializeOwned>(
            t: &mut toml::Table,
            key: &str,
        ) -> Result<Option<T>, BoxError> {
            t.remove(key)
                .map(|v| {
                    v.try_into()
                        .map_err(|e| format!("[server] {key}: {e}").into())
                })
                .transpose()
        }
        let listen = take(&mut raw.server, "listen")?;
        let metrics = take(&mut raw.server, "metrics")?;
        let busy_poll = take(&mut raw.server, "busy_poll")?;
        let server: ServerConfig = toml::Value::Table(raw.server)
            .try_into()
            .map_err(|e| format!("[server]: {e}"))?;
        Ok(Self {
            transport: raw.transport.as_deref().map(str::parse).transpose()?,
            latency_policy: raw.latency_policy.as_deref().map(str::parse).transpose()?,
            bypass: raw.bypass,
            server,
            listen,
            metrics,
            busy_poll,
            http: raw.http,
            resp: raw.resp,
            tls: raw.tls,
        })
    }

    /// `--transport` and `--latency-policy` after the file and defaults.
    pub fn select(&self, args: &SelectArgs) -> (TransportChoice, LatencyPolicy) {
        (
            args.transport
                .or(self.transport)
                .unwrap_or(TransportChoice::Auto),
            args.latency_policy
                .or(self.latency_policy)
                .unwrap_or_default(),
        )
    }

    /// The bypass options after the file's `[bypass]` table.
    pub fn bypass(&self, b: &BypassArgs) -> BypassArgs {
        let f = self.bypass.clone();
        BypassArgs {
            iface: b.iface.clone().or(f.iface),
            ip: b.ip.clone().or(f.ip),
            gateway: b.gateway.or(f.gateway),
            mac: b.mac.clone().or(f.mac),
            queues: b.queues.or(f.queues),
            port: b.port.or(f.port),
            dpdk_args: b.dpdk_args.clone().or(f.dpdk_args),
            pcap: b.pcap.clone().or(f.pcap),
            rdma_depth: b.rdma_depth.or(f.rdma_depth),
            rdma_buffer: b.rdma_buffer.or(f.rdma_buffer),
            tcp_rx_buffer: b.tcp_rx_buffer.or(f.tcp_rx_buffer),
            tcp_tx_buffer: b.tcp_tx_buffer.or(f.tcp_tx_buffer),
            tcp_backlog: b.tcp_backlog.or(f.tcp_backlog),
            tcp_gso: b.tcp_gso.or(f.tcp_gso),
        }
    }
}

/// `serve`'s settings after every source, names not yet resolved.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// The engine's settings (`listen` and `metrics` still the defaults or
    /// the file's literal addresses; see the fields below).
    pub server: ServerConfig,
    /// Where to listen.
    pub listen: HostPort,
    /// Where to serve metrics.
    pub metrics: Option<HostPort>,
    /// Busy-polling, when set by flag, environment or file.
    pub busy_poll: Option<bool>,
    /// Transport selection.
    pub choice: TransportChoice,
    /// Latency policy.
    pub policy: LatencyPolicy,
    /// Bypass options.
    pub bypass: BypassArgs,
    /// The HTTP protocol's limits.
    pub http: HttpConfig,
    /// The Redis protocol's limits.
    pub resp: RespConfig,
    /// TLS: certificates and whether the main listener speaks it.
    pub tls: crate::tls::ServerTlsArgs,
}

impl ServeSettings {
    /// Merges flags (and environment) over the file over the defaults.
    pub fn merge(file: &FileConfig, a: &ServeArgs) -> Self {
        let mut c = file.server.clone();
        macro_rules! set {
            ($($field:ident <- $arg:expr),* $(,)?) => {$(if let Some(v) = $arg { c.$field = v; })*};
        }
        set!(
            workers <- a.workers,
            max_frame <- a.max_frame,
            max_connections <- a.max_connections,
            idle_timeout <- a.idle_timeout,
            require_auth <- a.require_auth,
            max_unauthenticated <- a.max_unauthenticated,
            max_auth_failures <- a.max_auth_failures,
            max_output <- a.max_output,
            max_buffered_input <- a.max_buffered_input,
            app_workers <- a.app_workers,
            app_queue <- a.app_queue,
            shutdown_grace <- a.shutdown_grace,
        );
        set!(
            conn_rate <- a.conn_rate.map(Some),
            conn_burst <- a.conn_burst.map(Some),
            global_rate <- a.global_rate.map(Some),
            global_burst <- a.global_burst.map(Some),
            users_file <- a.users.clone().map(Some),
            data_dir <- a.data_dir.clone().map(Some),
        );
        if !a.listeners.is_empty() {
            c.listeners = a.listeners.clone();
        }
        let (choice, policy) = file.select(&a.select);
        let mut http = file.http.clone();
        if let Some(v) = a.http_max_request_line {
            http.max_request_line = v;
        }
        if let Some(v) = a.http_max_head {
            http.max_head = v;
        }
        if let Some(v) = a.http_max_body {
            http.max_body = v;
        }
        let mut resp = file.resp.clone();
        if let Some(v) = a.resp_maxmemory {
            resp.maxmemory = v;
        }
        Self {
            http,
            resp,
            tls: a.tls.over(&file.tls),
            listen: a
                .listen
                .clone()
                .or_else(|| file.listen.clone())
                .unwrap_or_else(|| HostPort::from_addr(c.listen)),
            metrics: a
                .metrics
                .clone()
                .or_else(|| file.metrics.clone())
                .or_else(|| c.metrics.map(HostPort::from_addr)),
            busy_poll: a.busy_poll.or(file.busy_poll),
            server: c,
            choice,
            policy,
            bypass: file.bypass(&a.bypass),
        }
    }

    /// Busy-polling: as set, or what the latency policy implies.
    pub fn busy_poll(&self) -> bool {
        self.busy_poll.unwrap_or(self.policy.busy_poll())
    }

    /// The effective settings as a config file that reproduces them.
    pub fn to_toml(&self) -> Result<String, BoxError> {
        let mut server = toml::Table::try_from(&self.server)?;
        server.insert("listen".into(), self.listen.to_string().into());
        server.remove("metrics");
        if let Some(m) = &self.metrics {
            server.insert("metrics".into(), m.to_string().into());
        }
        server.insert("busy_poll".into(), self.busy_poll().into());
        let mut top = toml::Table::new();
        top.insert("transport".into(), self.choice.to_string().into());
        top.insert("latency_policy".into(), self.policy.to_string().into());
        let bypass = toml::Table::try_from(&self.bypass)?;
        if !bypass.is_empty() {
            top.insert("bypass".into(), bypass.into());
        }
        top.insert("server".into(), server.into());
        top.insert("http".into(), toml::Table::try_from(&self.http)?.into());
        top.insert("resp".into(), toml::Table::try_from(&self.resp)?.into());
        let tls = toml::Table::try_from(&self.tls)?;
        if !tls.is_empty() {
            top.insert("tls".into(), tls.into());
        }
        Ok(toml::to_string(&top)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

    fn serve(file: &str, flags: &[&str]) -> ServeSettings {
        let file = FileConfig::parse(file).unwrap();
        let mut argv = vec!["warpwire", "serve"];
        argv.extend_from_slice(flags);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let crate::cli::Command::Serve(a) = cli.command else {
            unreachable!("parsed `serve`")
        };
        ServeSettings::merge(&file, &a)
    }

    #[test]
    fn resp_table_and_flag() {
        let file = "[resp]\nmaxmemory = 5\nmax_bulk_len = 1024\n";
        let s = serve(file, &[]);
        assert_eq!((s.resp.maxmemory, s.resp.max_bulk_len), (5, 1024));
        let s = serve(file, &["--resp-maxmemory", "7"]);
        assert_eq!((s.resp.maxmemory, s.resp.max_bulk_len), (7, 1024));
        assert!(FileConfig::parse("[resp]\nnope = 1\n").is_err());
    }

    // The environment layer is clap's (`env = ...` on every flag) and is
    // checked end to end in tests/cli.rs, one process per case.

    #[test]
    fn bool_file_then_flag_both_ways() {
        assert!(!serve("", &[]).server.require_auth);
        assert!(
            serve("[server]\nrequire_auth = true\n", &[])
                .server
                .require_auth
        );
        assert!(
            !serve("[server]\nrequire_auth = true\n", &["--require-auth=false"])
                .server
                .require_auth
        );
        assert!(serve("", &["--require-auth"]).server.require_auth);
    }

    #[test]
    fn busy_poll_file_wins_over_policy() {
        let s = serve("latency_policy = \"lowest\"\n", &[]);
        assert!(s.busy_poll(), "lowest implies busy-polling");
        let s = serve(
            "latency_policy = \"lowest\"\n[server]\nbusy_poll = false\n",
            &[],
        );
        assert!(
            !s.busy_poll(),
            "the file's busy_poll is not overwritten by the policy"
        );
        let s = serve("[server]\nbusy_poll = false\n", &["--busy-poll"]);
        assert!(s.busy_poll());
    }

    #[test]
    fn number_duration_path_address() {
        let file = "[server]\nmax_connections = 5\nidle_timeout = \"3s\"\ndata_dir = \"/f\"\nlisten = \"localhost:9\"\n";
        let s = serve(file, &[]);
        assert_eq!(s.server.max_connections, 5);
        assert_eq!(s.server.idle_timeout, Duration::from_secs(3));
        assert_eq!(s.server.data_dir.as_deref(), Some(Path::new("/f")));
        assert_eq!(s.listen.to_string(), "localhost:9");
        let s = serve(
            file,
            &[
                "--max-connections=6",
                "--idle-timeout=4s",
                "--data-dir=/g",
                "--listen=[::1]:8",
            ],
        );
        assert_eq!(s.server.max_connections, 6);
        assert_eq!(s.server.idle_timeout, Duration::from_secs(4));
        assert_eq!(s.server.data_dir.as_deref(), Some(Path::new("/g")));
        assert_eq!(s.listen.to_string(), "[::1]:8");
        let s = serve("", &[]);
        assert_eq!(
            s.server.max_connections,
            ServerConfig::default().max_connections
        );
        assert_eq!(s.listen.to_string(), "127.0.0.1:7077");
    }

    #[test]
    fn every_bypass_flag_has_a_key() {
        let file = "[bypass]\niface = \"veth0\"\nip = \"10.77.0.1/24\"\ngateway = \"10.77.0.254\"\n\
                    mac = \"02:00:00:00:00:01\"\nqueues = 2\nport = 1\ndpdk_args = \"--no-huge\"\n\
                    pcap = \"/tmp/x.pcap\"\nrdma_depth = 8\nrdma_buffer = 4096\n\
                    tcp_rx_buffer = 16384\ntcp_tx_buffer = 8192\ntcp_backlog = 100\n\
                    tcp_gso = false\n";
        let s = serve(file, &[]);
        let b = &s.bypass;
        assert_eq!(b.iface.as_deref(), Some("veth0"));
        assert_eq!(b.ip.as_deref(), Some("10.77.0.1/24"));
        assert_eq!(b.gateway, Some("10.77.0.254".parse().unwrap()));
        assert_eq!(b.mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!((b.queues, b.port), (Some(2), Some(1)));
        assert_eq!(b.dpdk_args.as_deref(), Some("--no-huge"));
        assert_eq!(b.pcap.as_deref(), Some(Path::new("/tmp/x.pcap")));
        assert_eq!((b.rdma_depth, b.rdma_buffer), (Some(8), Some(4096)));
        assert_eq!(
            (b.tcp_rx_buffer, b.tcp_tx_buffer, b.tcp_backlog),
            (Some(16384), Some(8192), Some(100))
        );
        assert_eq!(b.tcp_gso, Some(false));
        let s = serve(file, &["--tcp-gso=on"]);
        assert_eq!(s.bypass.tcp_gso, Some(true), "the flag wins over the file");
        let s = serve(file, &["--iface=veth9", "--queues=3"]);
        assert_eq!(
            (s.bypass.iface.as_deref(), s.bypass.queues),
            (Some("veth9"), Some(3))
        );
        assert_eq!(s.bypass.port, Some(1));
    }

    #[test]
    fn printed_config_reads_back_the_same() {
        let s = serve(
            "transport = \"socket\"\n[bypass]\nqueues = 2\n[server]\nmax_frame = 4096\nmetrics = \"localhost:9077\"\n",
            &["--require-auth", "--conn-rate=5"],
        );
        let again = serve(&s.to_toml().unwrap(), &[]);
        assert_eq!(again.server, s.server);
        assert_eq!(again.listen, s.listen);
        assert_eq!(again.metrics, s.metrics);
        assert_eq!(again.bypass, s.bypass);
        assert_eq!(again.busy_poll(), s.busy_poll());
        assert_eq!((again.choice, again.policy), (s.choice, s.policy));
    }

    #[test]
    fn tls_table_then_flags_and_back() {
        let file = "[tls]\nlisten = true\ncert = \"c.pem\"\nkey = \"k.pem\"\nhandshake_timeout = \"3s\"\n\
                    [[server.listeners]]\nprotocol = \"http\"\nlisten = \"127.0.0.1:8443\"\ntls = true\n";
        let s = serve(
            file,
            &["--tls-key", "other.pem", "--tls-min-version", "1.2"],
        );
        assert_eq!(s.tls.tls_listen, Some(true));
        assert_eq!(
            s.tls.tls_cert.as_deref(),
            Some(std::path::Path::new("c.pem"))
        );
        assert_eq!(
            s.tls.tls_key.as_deref(),
            Some(std::path::Path::new("other.pem"))
        );
        assert_eq!(s.tls.tls_min_version.as_deref(), Some("1.2"));
        assert_eq!(s.tls.tls_handshake_timeout, Some(Duration::from_secs(3)));
        assert!(s.server.listeners[0].tls);
        let s = serve(file, &["--tls=false"]);
        assert_eq!(s.tls.tls_listen, Some(false));
        let again = serve(&s.to_toml().unwrap(), &[]);
        assert_eq!(again.tls, s.tls);
        assert_eq!(again.server.listeners, s.server.listeners);
        assert!(FileConfig::parse("[tls]\ncrt = \"x\"").is_err());
    }

    #[test]
    fn unknown_keys_are_errors_in_every_table() {
        for bad in [
            "trasnport = \"x\"",
            "[bypass]\nifcae = \"x\"",
            "[server]\nidle_timeot = \"1s\"",
        ] {
            assert!(FileConfig::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
