//! Pub/sub across workers.
//!
//! PUBLISH hands the engine one message, already encoded as the RESP2
//! `*3 message <channel> <payload>` array; the engine offers it to every
//! eligible (subscribed) connection on every worker, and each recipient's
//! [`crate::Resp`] `relay` decides: a RESP2 subscriber of the channel takes
//! the bytes as they are (shared, not copied), a RESP3 one gets them
//! rewritten as a `>3` push, anyone else skips it.
//!
//! The engine's own count of recipients is of eligible connections, not
//! of the channel's subscribers, so PUBLISH answers from [`Channels`]: a
//! count per channel kept by SUBSCRIBE, UNSUBSCRIBE and closing
//! connections, shared by all workers.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bytes::{BufMut, Bytes, BytesMut};

/// Subscribers per channel, for every worker.
#[derive(Debug, Default)]
pub struct Channels {
    counts: Mutex<HashMap<Bytes, u64>>,
}

impl Channels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, u64>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One more subscriber of `ch`.
    pub fn add(&self, ch: &Bytes) {
        *self.lock().entry(ch.clone()).or_default() += 1;
    }

    /// One subscriber of `ch` fewer.
    pub fn remove(&self, ch: &[u8]) {
        let mut m = self.lock();
        if let Some(n) = m.get_mut(ch) {
            *n -= 1;
            if *n == 0 {
                m.remove(ch);
            }
        }
    }

    /// Subscribers of `ch`.
    pub fn count(&self, ch: &[u8]) -> u64 {
        self.lock().get(ch).copied().unwrap_or(0)
    }

    /// Channels with at least one subscriber.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

fn bulk(b: &mut BytesMut, s: &[u8]) {
    b.put_u8(b'$');
    b.extend_from_slice(s.len().to_string().as_bytes());
    b.extend_from_slice(b"\r\n");
    b.extend_from_slice(s);
    b.extend_from_slice(b"\r\n");
}

/// The message as RESP2 subscribers receive it (what is published).
pub fn encode(channel: &[u8], payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(32 + channel.len() + payload.len());
    b.extend_from_slice(b"*3\r\n$7\r\nmessage\r\n");
    bulk(&mut b, channel);
    bulk(&mut b, payload);
    b.freeze()
}

/// The prefix of every encoded message, before the channel's bulk.
const PREFIX: &[u8] = b"*3\r\n$7\r\nmessage\r\n";

/// The channel of a message made by [`encode`].
pub fn channel_of(msg: &[u8]) -> Option<&[u8]> {
    let rest = msg.strip_prefix(PREFIX)?.strip_prefix(b"$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..cr]).ok()?.parse().ok()?;
    rest.get(cr + 2..cr + 2 + len)
}

/// The message as a RESP3 push (`>3` instead of `*3`).
pub fn as_push(msg: &[u8], out: &mut BytesMut) {
    out.put_u8(b'>');
    out.extend_from_slice(msg.get(1..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_round_trip() {
        let m = encode(b"news", b"hello\r\nworld");
        assert_eq!(channel_of(&m), Some(&b"news"[..]));
        let mut o = BytesMut::new();
        as_push(&m, &mut o);
        assert!(o.starts_with(b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n"));
        assert_eq!(channel_of(b"*3\r\n$7\r\nmessage\r\n$9\r\nab\r\n"), None);
    }
}
