//! What a completion belongs to: the 64-bit `user_data` of every SQE.
//!
//! ```text
//!  63      56 55          32 31                 0
//!  ┌─────────┬──────────────┬────────────────────┐
//!  │   op    │  slot index  │        tag         │
//!  └─────────┴──────────────┴────────────────────┘
//! ```
//!
//! The slot is a connection's table slot index (or a listener's index for
//! [`Op::Accept`]). No generation is needed: a slot is not reused until
//! every operation it submitted has completed. The tag tells one arming of
//! a connection's multishot receive from the next, so a cancel aimed at an
//! old one never hits its successor.

/// The operations the transport submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Multishot accept on a listener.
    Accept = 1,
    /// Multishot receive into the provided buffer ring.
    Recv = 2,
    /// Send of a connection's in-flight buffer.
    Send = 3,
    /// Outgoing connect.
    Connect = 4,
    /// `shutdown(SHUT_WR)` of a closing connection.
    Shutdown = 5,
    /// Cancellation of a connection's operations.
    Cancel = 6,
    /// Read of the waker's eventfd.
    Wake = 7,
}

const OP_SHIFT: u32 = 56;
const INDEX_SHIFT: u32 = 32;
const INDEX_BITS: u32 = 24;

/// Largest slot index a `user_data` can carry (16 M connections per
/// instance, far beyond what one worker's descriptors allow).
pub(crate) const MAX_INDEX: usize = (1 << INDEX_BITS) - 1;

/// Packs an operation, its slot and its tag. `index` must not exceed
/// [`MAX_INDEX`] (the connection table refuses slots beyond it).
pub(crate) fn encode(op: Op, index: usize, tag: u32) -> u64 {
    debug_assert!(index <= MAX_INDEX);
    ((op as u64) << OP_SHIFT) | (((index & MAX_INDEX) as u64) << INDEX_SHIFT) | u64::from(tag)
}

/// Unpacks a `user_data`; `None` for values this transport never submits
/// (the drop-time cancel carries 0).
pub(crate) fn decode(user_data: u64) -> Option<(Op, usize, u32)> {
    let op = match user_data >> OP_SHIFT {
        1 => Op::Accept,
        2 => Op::Recv,
        3 => Op::Send,
        4 => Op::Connect,
        5 => Op::Shutdown,
        6 => Op::Cancel,
        7 => Op::Wake,
        _ => return None,
    };
    let index = ((user_data >> INDEX_SHIFT) as usize) & MAX_INDEX;
    Some((op, index, user_data as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for op in [
            Op::Accept,
            Op::Recv,
            Op::Send,
            Op::Connect,
            Op::Shutdown,
            Op::Cancel,
            Op::Wake,
        ] {
            for (index, tag) in [(0, 0), (7, 1), (MAX_INDEX, u32::MAX)] {
                assert_eq!(decode(encode(op, index, tag)), Some((op, index, tag)));
            }
        }
        assert_eq!(decode(0), None);
    }
}
