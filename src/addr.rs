//! Address arguments: `HOST:PORT`, where HOST is a name, an IPv4 address or
//! a bracketed IPv6 address (`localhost:7077`, `10.77.0.1:7077`,
//! `[::1]:7077`). A name is resolved once, when the command starts, through
//! the system resolver (`/etc/hosts`, DNS); every address it yields is then
//! tried in turn, and the error names each one that failed.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A host (name or address) and a port, as given; resolved with
/// [`HostPort::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// An address given as an address (no resolution needed).
    pub fn from_addr(a: SocketAddr) -> Self {
        Self {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }

    /// The host as given (a name or an address literal).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The addresses the host resolves to, in the resolver's order, without
    /// duplicates. An address literal resolves to itself without a lookup.
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let found = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {self}: {e}"))?;
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for a in found {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        if addrs.is_empty() {
            return Err(format!("{self}: the name has no addresses"));
        }
        Ok(addrs)
    }

    /// Tries `attempt` on every resolved address in turn; the first success
    /// wins. When all fail, the error lists each address with its reason.
    pub fn try_each<T, E: fmt::Display>(
        &self,
        addrs: &[SocketAddr],
        mut attempt: impl FnMut(SocketAddr) -> Result<T, E>,
    ) -> Result<(SocketAddr, T), String> {
        let mut failures = Vec::new();
        for &a in addrs {
            match attempt(a) {
                Ok(v) => return Ok((a, v)),
                Err(e) => failures.push((a, e.to_string())),
            }
        }
        Err(match failures.as_slice() {
            // One address: its error says it all (and usually names it).
            [(_, one)] => one.clone(),
            _ => {
                let each: Vec<String> = failures.iter().map(|(a, e)| format!("{a}: {e}")).collect();
                format!("no address of {self} answered ({})", each.join("; "))
            }
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Self::from_addr(a));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: expected HOST:PORT, e.g. localhost:7077"))?;
        let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let host = bracketed.unwrap_or(host);
        if host.is_empty() {
            return Err(format!("{s:?}: the host is empty"));
        }
        if host.contains(':')
            && (bracketed.is_none() || host.parse::<std::net::Ipv6Addr>().is_err())
        {
            return Err(format!(
                "{s:?}: an IPv6 address goes in brackets, e.g. [::1]:7077"
            ));
        }
        // A host name: letters, digits, '-', '.', '_' (RFC 1123, plus the
        // underscore some resolvers allow), at most 253 bytes.
        if !host.contains(':')
            && (host.len() > 253
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')))
        {
            return Err(format!("{s:?}: {host:?} is not a host name"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|e| format!("{s:?}: port {port:?}: {e}"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_literals() {
        let h: HostPort = "localhost:7077".parse().unwrap();
        assert_eq!(h.to_string(), "localhost:7077");
        let v4: HostPort = "10.77.0.1:80".parse().unwrap();
        assert_eq!(v4.resolve().unwrap(), vec!["10.77.0.1:80".parse().unwrap()]);
        let v6: HostPort = "[::1]:7077".parse().unwrap();
        assert_eq!(v6.to_string(), "[::1]:7077");
        assert_eq!(v6.resolve().unwrap(), vec!["[::1]:7077".parse().unwrap()]);
        for bad in [
            "localhost",
            "::1:7077",
            ":7077",
            "host:port",
            "a b:1",
            "h:70000",
        ] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn localhost_resolves_to_loopback() {
        let h: HostPort = "localhost:9".parse().unwrap();
        let addrs = h.resolve().unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
    }

    #[test]
    fn tries_every_address_and_names_each_failure() {
        let h: HostPort = "example.invalid:1".parse().unwrap();
        let addrs: Vec<SocketAddr> =
            vec!["[::1]:1".parse().unwrap(), "127.0.0.1:1".parse().unwrap()];
        let (a, v) = h
            .try_each(&addrs, |a| if a.is_ipv4() { Ok(7) } else { Err("refused") })
            .unwrap();
        assert_eq!((a, v), (addrs[1], 7));
        let e = h.try_each(&addrs, |_| Err::<(), _>("refused")).unwrap_err();
        assert!(
            e.contains("[::1]:1: refused") && e.contains("127.0.0.1:1: refused"),
            "{e}"
        );
    }
}
