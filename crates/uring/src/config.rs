//! The settings of a uring transport instance and their checks.

use std::time::Duration;

use crate::NOTSENT_LOWAT;

/// Settings of a uring transport instance.
#[derive(Debug, Clone)]
pub struct UringConfig {
    /// Disable Nagle (TCP_NODELAY) on every connection.
    pub nodelay: bool,
    /// Kernel listen backlog.
    pub backlog: i32,
    /// How long a closed connection waits for the peer's FIN while
    /// discarding input (and for its last output to leave), before it is
    /// dropped.
    pub close_linger: Duration,
    /// SO_SNDBUF / SO_RCVBUF, when set.
    pub socket_buffer: Option<usize>,
    /// TCP_NOTSENT_LOWAT on accepted connections (see the socket
    /// backend). `None`: no limit.
    pub notsent_lowat: Option<u32>,
    /// Submission queue entries: one poll's SQEs (a SEND per connection
    /// with output, re-armed receives) fit without an extra enter.
    pub sq_entries: u32,
    /// Completion queue entries: one poll reaps at most this many.
    pub cq_entries: u32,
    /// Provided receive buffers per instance (a power of two, at most
    /// 32,768).
    pub buffers: u16,
    /// Bytes per receive buffer.
    pub buffer_size: u32,
    /// Received buffers a connection may hold unread before its receive is
    /// cancelled (re-armed when the consumer has read half of them): the
    /// bound on what a paused or slow connection pins of the ring.
    pub max_queued_buffers: usize,
    /// Per-connection send buffer: bytes `send` takes before it reports
    /// backpressure.
    pub send_buffer: usize,
}

impl Default for UringConfig {
    fn default() -> Self {
        Self {
            nodelay: true,
            backlog: 4096,
            close_linger: Duration::from_secs(2),
            socket_buffer: None,
            notsent_lowat: Some(NOTSENT_LOWAT),
            sq_entries: 1024,
            // 8 per SQE: multishot receives and accepts post many
            // completions per submission.
            cq_entries: 8192,
            // 16 MiB per worker. 16 KiB takes a loopback or LAN burst in a
            // few completions; 1,024 of them serve 128 connections that
            // each hold the most they may (8) at once. More than that many
            // slow readers wait for buffers (ENOBUFS, re-armed in poll)
            // while TCP holds their data.
            buffers: 1024,
            buffer_size: 16 * 1024,
            // 128 KiB: one NOTSENT_LOWAT's worth, what a peer sends between
            // two polls of a busy worker.
            max_queued_buffers: 8,
            // Two NOTSENT_LOWATs: one SEND's worth in flight while `send`
            // fills the other half.
            send_buffer: 2 * NOTSENT_LOWAT as usize,
        }
    }
}

/// An invalid [`UringConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `buffers` is not a power of two between 1 and 32,768.
    #[error("buffers must be a power of two between 1 and 32768, not {0}")]
    BufferCount(u16),
    /// `buffer_size` is 0 or over 1 GiB.
    #[error("buffer_size must be between 1 byte and 1 GiB, not {0}")]
    BufferSize(u32),
    /// `max_queued_buffers` is below 2 (the re-arm mark is half of it).
    #[error("max_queued_buffers must be at least 2, not {0}")]
    QueueBound(usize),
    /// `send_buffer` is 0 or does not fit one SEND (u32 bytes).
    #[error("send_buffer must be between 1 byte and 4 GiB, not {0}")]
    SendBuffer(usize),
}

impl UringConfig {
    /// Checks the sizes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.buffers.is_power_of_two() || self.buffers > 32_768 {
            return Err(ConfigError::BufferCount(self.buffers));
        }
        if self.buffer_size == 0 || self.buffer_size > 1 << 30 {
            return Err(ConfigError::BufferSize(self.buffer_size));
        }
        if self.max_queued_buffers < 2 {
            return Err(ConfigError::QueueBound(self.max_queued_buffers));
        }
        if self.send_buffer == 0 || u32::try_from(self.send_buffer).is_err() {
            return Err(ConfigError::SendBuffer(self.send_buffer));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks() {
        assert_eq!(UringConfig::default().validate(), Ok(()));
        let bad = |f: fn(&mut UringConfig)| {
            let mut c = UringConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.buffers = 1000), ConfigError::BufferCount(1000));
        assert_eq!(bad(|c| c.buffer_size = 0), ConfigError::BufferSize(0));
        assert_eq!(
            bad(|c| c.max_queued_buffers = 1),
            ConfigError::QueueBound(1)
        );
        assert_eq!(bad(|c| c.send_buffer = 0), ConfigError::SendBuffer(0));
    }
}
