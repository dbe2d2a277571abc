//! Client settings and the reconnect backoff.

use std::time::Duration;

use crate::ClientError;

/// Settings of a [`crate::Client`] (and of a [`crate::GenericClient`] of
/// any protocol: the fields marked warpwire are ignored by the others).
/// `Default` gives the values documented on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Deadline of a request that does not set its own (default 5 s). It
    /// counts from submission, so it includes time spent queued while the
    /// connection is down or the output buffer is full.
    pub request_timeout: Duration,
    /// How long one connection attempt (TCP handshake plus the protocol's
    /// handshake, warpwire's authentication) may take before it counts as failed (default 5 s).
    pub connect_timeout: Duration,
    /// Requests sent and not yet answered, at most (default 1024). Further
    /// requests wait in the submission queue.
    pub max_in_flight: usize,
    /// Capacity of the submission channel, and of the I/O thread's local
    /// queue of requests waiting for the connection or for room (default
    /// 65,536 each). When both are full, [`crate::Client::request`] blocks
    /// the caller, at most until the request's deadline.
    pub queue_capacity: usize,
    /// Encoded bytes buffered for the connection before the I/O thread
    /// stops taking requests from the queue (default 256 KiB). A single
    /// frame larger than this is still accepted when the buffer is empty.
    pub output_buffer: usize,
    /// Reconnect after a lost connection, with this backoff; `None` turns
    /// reconnecting off (default: on, 50 ms base, 5 s cap).
    pub reconnect: Option<Backoff>,
    /// Send a heartbeat (warpwire: a PING) when nothing was sent for this
    /// long; `None` disables heartbeats (default 30 s, as docs/protocol.md
    /// recommends). A heartbeat unanswered within `request_timeout` drops
    /// the connection. Protocols without a heartbeat (echo, HTTP) ignore it.
    pub heartbeat_interval: Option<Duration>,
    /// Warpwire: credentials sent as an AUTH request after every
    /// (re)connect, before any queued request (default none).
    pub auth: Option<(String, Vec<u8>)>,
    /// Capacity of each [`crate::Client::subscribe`] channel (default
    /// 1024). A subscriber that falls this far behind loses the newest
    /// frames, counted by [`crate::Client::dropped_broadcasts`].
    pub subscription_capacity: usize,
    /// Spin on `Transport::poll` instead of sleeping in `Transport::wait`
    /// (default false). Lowest latency, one core fully busy.
    pub busy_poll: bool,
    /// Warpwire: largest metadata plus body the client accepts in a reply
    /// (default 1 MiB, the server's default frame limit). Other protocols
    /// carry their limits themselves ([`crate::Echo::max_request`],
    /// [`crate::Http::max_body`]).
    pub max_payload: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 1024,
            queue_capacity: 65_536,
            // Enough for a full pipeline of 1 KiB requests (1024 x ~1 KiB)
            // in one burst of writes, small enough to stay in L2.
            output_buffer: 256 * 1024,
            reconnect: Some(Backoff::default()),
            heartbeat_interval: Some(Duration::from_secs(30)),
            auth: None,
            subscription_capacity: 1024,
            busy_poll: false,
            max_payload: warpwire_frame::DEFAULT_MAX_PAYLOAD,
        }
    }
}

impl ClientConfig {
    /// Checks that every value is usable.
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.max_in_flight == 0 {
            return Err(ClientError::InvalidConfig(
                "max_in_flight must be at least 1",
            ));
        }
        if self.queue_capacity == 0 {
            return Err(ClientError::InvalidConfig(
                "queue_capacity must be at least 1",
            ));
        }
        if self.subscription_capacity == 0 {
            return Err(ClientError::InvalidConfig(
                "subscription_capacity must be at least 1",
            ));
        }
        if self.heartbeat_interval == Some(Duration::ZERO) {
            return Err(ClientError::InvalidConfig(
                "heartbeat_interval must be positive (None disables it)",
            ));
        }
        if let Some((user, _)) = &self.auth
            && user.len() > usize::from(u8::MAX)
        {
            return Err(ClientError::InvalidConfig("auth user name over 255 bytes"));
        }
        if let Some(b) = &self.reconnect {
            b.validate()?;
        }
        Ok(())
    }
}

/// Exponential backoff with full jitter: attempt `n` (from 0) waits a
/// uniformly random time in `[0, min(max, base * 2^n)]`, which spreads a
/// crowd of clients reconnecting to a restarted server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Upper bound of the first wait (default 50 ms).
    pub base: Duration,
    /// Cap of the upper bound (default 5 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(50),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// Checks `0 < base <= max`.
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.base.is_zero() || self.base > self.max {
            return Err(ClientError::InvalidConfig("backoff needs 0 < base <= max"));
        }
        Ok(())
    }

    /// The upper bound of the wait before attempt `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // 2^31 * any base already exceeds every sensible cap; saturate.
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A random wait for attempt `attempt`: full jitter over
    /// `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ClientConfig::default().validate().unwrap();
        assert_eq!(ClientConfig::default().max_in_flight, 1024);
    }

    #[test]
    fn invalid_values_are_refused() {
        let bad = [
            ClientConfig {
                max_in_flight: 0,
                ..Default::default()
            },
            ClientConfig {
                queue_capacity: 0,
                ..Default::default()
            },
            ClientConfig {
                heartbeat_interval: Some(Duration::ZERO),
                ..Default::default()
            },
            ClientConfig {
                auth: Some(("u".repeat(256), vec![])),
                ..Default::default()
            },
            ClientConfig {
                reconnect: Some(Backoff {
                    base: Duration::from_secs(2),
                    max: Duration::from_secs(1),
                }),
                ..Default::default()
            },
        ];
        for cfg in bad {
            assert!(
                matches!(cfg.validate(), Err(ClientError::InvalidConfig(_))),
                "{cfg:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(0), Duration::from_millis(50));
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(6), Duration::from_millis(3200));
        assert_eq!(b.ceiling(7), Duration::from_secs(5));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_within_the_ceiling_and_varies() {
        let b = Backoff::default();
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(3)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "full jitter must spread the waits");
    }
}
