//! Server settings, readable from a TOML file (every field optional).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything a server needs to know. `Default` gives the documented
/// defaults; a TOML file overrides any subset (`deny_unknown_fields`, so a
/// misspelt key is an error rather than silently ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address every worker listens on, serving the server's first
    /// protocol (warpwire, for `Server`).
    pub listen: SocketAddr,
    /// More listen addresses, each serving a protocol by name
    /// (`[[server.listeners]]` in TOML; the protocol must be one the
    /// server was started with, see [`crate::Protocol::names`]).
    pub listeners: Vec<ListenerConfig>,
    /// Worker threads; 0 means one per available core.
    pub workers: usize,
    /// Largest meta_len + body_len accepted (FRAME_TOO_LARGE above it).
    pub max_frame: u32,
    /// Open connections across all workers (SERVER_BUSY above it).
    pub max_connections: usize,
    /// Per-connection rate limit, frames per second (none when unset).
    pub conn_rate: Option<f64>,
    /// Per-connection burst, frames (defaults to one second of `conn_rate`).
    pub conn_burst: Option<f64>,
    /// Server-wide rate limit, frames per second, split across workers.
    pub global_rate: Option<f64>,
    /// Server-wide burst, frames (defaults to one second of `global_rate`).
    pub global_burst: Option<f64>,
    /// Close connections silent this long with IDLE_TIMEOUT.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Answer everything but PING and AUTH with UNAUTHENTICATED until AUTH succeeds.
    pub require_auth: bool,
    /// The users file (salted token hashes), see `UserDb`.
    pub users_file: Option<PathBuf>,
    /// UNAUTHENTICATED answers before the connection is closed.
    pub max_unauthenticated: u32,
    /// AUTH_FAILED answers before the connection is closed.
    pub max_auth_failures: u32,
    /// Bytes of replies queued per connection before reading from it pauses
    /// (and before a broadcast recipient counts as a slow reader and is dropped).
    pub max_output: usize,
    /// Bytes of received input buffered across every connection of the
    /// server (decoder memory: partial frames and unread frames). Over it,
    /// the largest partial frames are refused with SERVER_BUSY until the
    /// total fits again, so `max_connections x max_frame` is not the real
    /// memory ceiling.
    pub max_buffered_input: usize,
    /// Application worker threads, which run handlers that may block
    /// (registered as blocking, the DATA directory sink) off the I/O
    /// workers; 0 means 4 per core: such handlers mostly wait (disk,
    /// network), so a few threads per core keep the cores busy without
    /// many idle stacks.
    pub app_workers: usize,
    /// Jobs queued for the application workers before a connection's job
    /// waits in its I/O worker (which stops reading from it meanwhile).
    pub app_queue: usize,
    /// Spin on the transport instead of sleeping when idle.
    pub busy_poll: bool,
    /// How long a shutdown waits for replies to flush and peers to close.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Prometheus text endpoint address, when set.
    pub metrics: Option<SocketAddr>,
    /// Where the command line's DATA sink ([`crate::DirectorySink`]) writes
    /// each session's DATA; unset: DATA is counted and discarded. A library
    /// user installs its own sink with `Server::data_handler` instead.
    pub data_dir: Option<PathBuf>,
}

/// One more listen address and the protocol served on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// The protocol's name (`warpwire`, `echo`).
    pub protocol: String,
    /// The address.
    pub listen: SocketAddr,
    /// Whether connections on it speak TLS (`PROTOCOL+tls=ADDR`; the
    /// server's `--tls-cert` and `--tls-key` serve it). The engine sees
    /// plaintext either way: the TLS layer sits in the transport.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
}

impl std::str::FromStr for ListenerConfig {
    type Err = String;

    /// `PROTOCOL=ADDR` or `PROTOCOL+tls=ADDR`, as on the command line
    /// (`echo=127.0.0.1:7007`, `http+tls=0.0.0.0:8443`).
    fn from_str(s: &str) -> Result<Self, String> {
        let (protocol, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected PROTOCOL=ADDR, e.g. echo=127.0.0.1:7007"))?;
        let (protocol, tls) = match protocol.strip_suffix("+tls") {
            Some(p) => (p, true),
            None => (protocol, false),
        };
        let listen = addr
            .parse()
            .map_err(|e| format!("`{addr}`: {e} (an IP address and port)"))?;
        if protocol.is_empty() {
            return Err(format!("`{s}`: no protocol name before `=`"));
        }
        Ok(Self {
            protocol: protocol.to_owned(),
            listen,
            tls,
        })
    }
}

/// The default port, "Ww" is 0x5777 = 22391 on the wire but 7077 is easier to type.
pub const DEFAULT_PORT: u16 = 7077;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            listeners: Vec::new(),
            workers: 0,
            max_frame: warpwire_frame::DEFAULT_MAX_PAYLOAD,
            max_connections: 10_000,
            conn_rate: None,
            conn_burst: None,
            global_rate: None,
            global_burst: None,
            idle_timeout: Duration::from_secs(60),
            require_auth: false,
            users_file: None,
            max_unauthenticated: 3,
            max_auth_failures: 3,
            max_output: 4 << 20,
            max_buffered_input: 1 << 30,
            app_workers: 0,
            app_queue: 1024,
            busy_poll: false,
            shutdown_grace: Duration::from_secs(5),
            metrics: None,
            data_dir: None,
        }
    }
}

impl ServerConfig {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Application worker count with 0 resolved to 4 per core (the pool
    /// always has threads; only the test harness runs jobs inline).
    pub fn app_worker_count(&self) -> usize {
        if self.app_workers > 0 {
            self.app_workers
        } else {
            4 * std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Every listen address: `listen`, then each of `listeners`.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.listen)
            .chain(self.listeners.iter().map(|l| l.listen))
            .collect()
    }

    /// Worker count with 0 resolved to the core count.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_subset() {
        let c = ServerConfig::from_toml(
            "listen = \"0.0.0.0:9000\"\nidle_timeout = \"1500ms\"\nconn_rate = 100.0\nrequire_auth = true\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.idle_timeout, Duration::from_millis(1500));
        assert_eq!(c.conn_rate, Some(100.0));
        assert!(c.require_auth);
        assert_eq!(c.max_frame, warpwire_frame::DEFAULT_MAX_PAYLOAD);
    }

    #[test]
    fn listeners_from_toml_and_flags() {
        let c = ServerConfig::from_toml(
            "[[listeners]]\nprotocol = \"echo\"\nlisten = \"127.0.0.1:7007\"\n",
        )
        .unwrap();
        let flag: ListenerConfig = "echo=127.0.0.1:7007".parse().unwrap();
        assert_eq!(c.listeners, [flag]);
        assert!("echo".parse::<ListenerConfig>().is_err());
        assert!("=127.0.0.1:1".parse::<ListenerConfig>().is_err());
        assert!("echo=localhost".parse::<ListenerConfig>().is_err());
        assert!(ServerConfig::from_toml("[[listeners]]\nprotocol = \"echo\"\n").is_err());
        let tls: ListenerConfig = "http+tls=127.0.0.1:8443".parse().unwrap();
        assert_eq!((tls.protocol.as_str(), tls.tls), ("http", true));
        let c = ServerConfig::from_toml(
            "[[listeners]]\nprotocol = \"http\"\nlisten = \"127.0.0.1:8443\"\ntls = true\n",
        )
        .unwrap();
        assert_eq!(c.listeners, [tls]);
    }

    #[test]
    fn unknown_keys_rejected() {
        assert!(ServerConfig::from_toml("idle_timeot = \"1s\"").is_err());
    }
}
