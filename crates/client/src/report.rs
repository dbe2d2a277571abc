//! What the load generator reports: [`Progress`] while it runs, a
//! [`LoadReport`] at the end.

use std::fmt;
use std::time::Duration;

use serde::Serializer;
use warpwire_frame::MessageType;

/// A snapshot passed to the progress callback about every 250 ms.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Replies verified so far in the measured phase.
    pub messages: u64,
    /// Errors so far (bad replies, lost requests, closed connections).
    pub errors: u64,
    /// Time since the measured phase began (zero during warm-up).
    pub elapsed: Duration,
    /// Replies per second over the last interval.
    pub rate: f64,
    /// Still warming up: nothing is counted yet.
    pub warmup: bool,
    /// The configured message count, if any (for a progress bar's length).
    pub target_count: Option<u64>,
    /// The configured duration, if any.
    pub target_duration: Option<Duration>,
}

/// The result of a load run. Serialises to JSON with durations in seconds
/// (`elapsed_s`) and latencies in microseconds (`p50_us`, ...).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LoadReport {
    /// Requests answered correctly during the measured phase.
    pub messages: u64,
    /// Wrong replies (type, id, flags, body length), ERROR replies, and
    /// requests that never got a reply.
    pub errors: u64,
    /// Requests of the measured phase that never got a reply (included in
    /// `errors`).
    pub lost: u64,
    /// From the start of the measured phase to its last reply.
    #[serde(rename = "elapsed_s", serialize_with = "secs")]
    pub elapsed: Duration,
    /// `messages / elapsed`.
    pub throughput_msgs_per_s: f64,
    /// Request body bytes answered per second (`messages * body_size /
    /// elapsed`; headers, trailers and the replies' bytes not included).
    pub throughput_bytes_per_s: f64,
    /// Median latency, send to reply (from the scheduled send time when a
    /// rate is set, so queueing behind a slow server counts).
    #[serde(rename = "p50_us", serialize_with = "micros")]
    pub p50: Duration,
    /// 90th percentile latency.
    #[serde(rename = "p90_us", serialize_with = "micros")]
    pub p90: Duration,
    /// 99th percentile latency.
    #[serde(rename = "p99_us", serialize_with = "micros")]
    pub p99: Duration,
    /// 99.9th percentile latency.
    #[serde(rename = "p999_us", serialize_with = "micros")]
    pub p999: Duration,
    /// Largest latency seen.
    #[serde(rename = "max_us", serialize_with = "micros")]
    pub max: Duration,
    /// Mean latency.
    #[serde(rename = "mean_us", serialize_with = "micros")]
    pub mean: Duration,
    /// Connections used.
    pub connections: usize,
    /// Requests kept in flight per connection.
    pub depth: usize,
    /// Request body size in bytes.
    pub body_size: usize,
    /// Threads (transport instances) used.
    pub threads: usize,
    /// The request type (of the warpwire protocol; ECHO, the unused
    /// default, for other protocols).
    #[serde(serialize_with = "type_name")]
    pub msg_type: MessageType,
    /// The client protocol ([`crate::ClientProtocol::name`]): "warpwire",
    /// "echo", "http".
    pub protocol: &'static str,
    /// How long opening every connection took (the slowest worker's
    /// ramp; connects are paced, a window of handshakes at a time).
    #[serde(rename = "ramp_s", serialize_with = "secs")]
    pub ramp: Duration,
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn micros<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e6)
}

fn type_name<S: Serializer>(t: &MessageType, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

/// A duration in the unit that keeps 3-4 significant digits.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        if ns < 1_000 {
            write!(f, "{ns} ns")
        } else if ns < 1_000_000 {
            write!(f, "{:.1} µs", ns as f64 / 1e3)
        } else if ns < 1_000_000_000 {
            write!(f, "{:.2} ms", ns as f64 / 1e6)
        } else {
            write!(f, "{:.3} s", ns as f64 / 1e9)
        }
    }
}

/// A rate with an SI prefix.
struct Si(f64, &'static str);

impl fmt::Display for Si {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (v, p) = match self.0 {
            v if v >= 1e9 => (v / 1e9, "G"),
            v if v >= 1e6 => (v / 1e6, "M"),
            v if v >= 1e3 => (v / 1e3, "k"),
            v => (v, ""),
        };
        write!(f, "{v:.2} {p}{}", self.1)
    }
}

/// What a run sent: the warpwire type, or the protocol's name.
struct What<'a>(&'a LoadReport);

impl fmt::Display for What<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.protocol == "warpwire" {
            write!(f, "{}", self.0.msg_type)
        } else {
            write!(f, "{} requests", self.0.protocol)
        }
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} x {} B over {} connection(s) x depth {} ({} thread(s))",
            What(self),
            self.body_size,
            self.connections,
            self.depth,
            self.threads
        )?;
        let ramp = self.ramp.as_secs_f64();
        writeln!(
            f,
            "  connected  {} in {} ({})",
            self.connections,
            Human(self.ramp),
            Si(
                if ramp > 0.0 {
                    self.connections as f64 / ramp
                } else {
                    0.0
                },
                "conn/s"
            )
        )?;
        writeln!(
            f,
            "  messages   {} in {} ({} errors, {} lost)",
            self.messages,
            Human(self.elapsed),
            self.errors,
            self.lost
        )?;
        writeln!(
            f,
            "  throughput {}  {}",
            Si(self.throughput_msgs_per_s, "msg/s"),
            Si(self.throughput_bytes_per_s, "B/s")
        )?;
        write!(
            f,
            "  latency    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
            Human(self.p50),
            Human(self.p90),
            Human(self.p99),
            Human(self.p999),
            Human(self.max),
            Human(self.mean)
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn sample() -> LoadReport {
        LoadReport {
            messages: 1000,
            errors: 2,
            lost: 1,
            elapsed: Duration::from_millis(1500),
            throughput_msgs_per_s: 666.6,
            throughput_bytes_per_s: 43_000.0,
            p50: Duration::from_micros(20),
            p90: Duration::from_micros(35),
            p99: Duration::from_micros(80),
            p999: Duration::from_micros(1200),
            max: Duration::from_millis(3),
            mean: Duration::from_nanos(25_500),
            connections: 4,
            depth: 16,
            body_size: 64,
            threads: 2,
            msg_type: MessageType::ECHO,
            protocol: "warpwire",
            ramp: Duration::from_millis(250),
        }
    }

    #[test]
    fn json_uses_explicit_units() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["messages"], 1000);
        assert_eq!(v["elapsed_s"], 1.5);
        assert_eq!(v["p50_us"], 20.0);
        assert_eq!(v["max_us"], 3000.0);
        assert_eq!(v["msg_type"], "ECHO");
        assert_eq!(v["protocol"], "warpwire");
        assert_eq!(v["ramp_s"], 0.25);
        assert!(v.get("p50").is_none());
    }

    #[test]
    fn display_is_readable() {
        let s = sample().to_string();
        assert!(
            s.contains("ECHO x 64 B over 4 connection(s) x depth 16"),
            "{s}"
        );
        assert!(s.contains("1000 in 1.500 s (2 errors, 1 lost)"), "{s}");
        assert!(s.contains("666.60 msg/s"), "{s}");
        assert!(s.contains("43.00 kB/s"), "{s}");
        assert!(s.contains("p50 20.0 µs"), "{s}");
        assert!(s.contains("p99.9 1.20 ms"), "{s}");
        assert!(s.contains("mean 25.5 µs"), "{s}");
        assert!(
            s.contains("connected  4 in 250.00 ms (16.00 conn/s)"),
            "{s}"
        );
        let echo = LoadReport {
            protocol: "echo",
            ..sample()
        }
        .to_string();
        assert!(echo.starts_with("echo requests x 64 B over 4"), "{echo}");
    }
}
