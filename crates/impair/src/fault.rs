//! The fault model: a deterministic function of (seed, frame sequence, time).
//!
//! [`Impairer`] takes frames in with the time they arrived, decides each
//! frame's fate from a seeded [`SmallRng`], and holds the survivors in one
//! time-ordered queue per direction until they are due. It does no I/O and
//! reads no clock: the caller passes `now` in and sends what
//! [`Impairer::pop_due`] hands out.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::checksum::{self, Completion};

/// Length of the Ethernet header that corruption never touches (a flipped
/// MAC address would misdeliver instead of corrupt).
const ETHERNET_HEADER_LEN: usize = 14;

/// EtherType of IPv4, as it appears in bytes 12..14 of a frame.
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];

/// Extra hold of a reordered frame on top of its normal delay, besides
/// three times the base delay: enough for frames sent after it to overtake
/// it even when the base delay is zero.
const REORDER_MIN_EXTRA: Duration = Duration::from_micros(100);

/// How the reorder hold scales with the base delay.
const REORDER_DELAY_FACTOR: u32 = 3;

/// One of the two forwarding directions of the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received on interface A, sent out of interface B.
    AToB,
    /// Received on interface B, sent out of interface A.
    BToA,
}

impl Direction {
    /// Both directions, in index order.
    pub const ALL: [Direction; 2] = [Direction::AToB, Direction::BToA];

    /// 0 for A to B, 1 for B to A: the index of per-direction arrays.
    pub const fn index(self) -> usize {
        match self {
            Direction::AToB => 0,
            Direction::BToA => 1,
        }
    }
}

/// The faults to apply; probabilities are per frame and independent.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Probability that a frame is dropped.
    pub loss: f64,
    /// Probability that a frame is held back by `3 * delay + 100us` extra,
    /// so frames behind it overtake it.
    pub reorder: f64,
    /// Probability that a frame is sent twice (the copy is made before
    /// corruption, so it arrives intact and on time).
    pub duplicate: f64,
    /// Probability that one random bit after the Ethernet header is flipped.
    pub corrupt: f64,
    /// Base one-way delay of every frame.
    pub delay: Duration,
    /// Each frame's delay is `delay` plus a uniform offset in
    /// `[-jitter, +jitter]` (clamped at zero). Frames are released in due
    /// order, so jitter larger than the gap between frames reorders them,
    /// as netem's time-ordered queue does.
    pub jitter: Duration,
    /// Most frames queued per direction; arrivals beyond it are dropped
    /// (netem's `limit`).
    pub limit: usize,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            loss: 0.0,
            reorder: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            limit: 10_000,
        }
    }
}

/// A probability outside `[0, 1]` (or NaN).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("probability {0} is not within [0, 1]")]
pub struct BadProbability(pub f64);

impl FaultConfig {
    /// Checks that every probability lies in `[0, 1]`.
    pub fn validate(&self) -> Result<(), BadProbability> {
        for p in [self.loss, self.reorder, self.duplicate, self.corrupt] {
            if !(0.0..=1.0).contains(&p) {
                return Err(BadProbability(p));
            }
        }
        Ok(())
    }
}

/// Counters of what the fault model did. Frames, not bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames taken in per direction ([`Direction::index`]).
    pub received: [u64; 2],
    /// Frames dropped by the loss fault.
    pub lost: u64,
    /// Frames that had one bit flipped.
    pub corrupted: u64,
    /// Of those, IPv4 frames: each must be dropped by the receiver's IPv4
    /// header or transport checksum, which is what the tests check.
    pub corrupted_ipv4: u64,
    /// Frames queued a second time.
    pub duplicated: u64,
    /// Frames held back so later ones overtake them.
    pub reordered: u64,
    /// TCP/UDP checksums that did not verify (partial) and were completed.
    pub checksums_completed: u64,
    /// Frames dropped because the direction's queue was at its limit.
    pub overflow: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received_a_to_b={} received_b_to_a={} lost={} corrupted={} corrupted_ipv4={} \
             duplicated={} reordered={} checksums_completed={} overflow={}",
            self.received[0],
            self.received[1],
            self.lost,
            self.corrupted,
            self.corrupted_ipv4,
            self.duplicated,
            self.reordered,
            self.checksums_completed,
            self.overflow
        )
    }
}

/// Frames waiting for their release time, oldest due first; the sequence
/// number keeps frames with the same due time in arrival order.
type TimeQueue = BTreeMap<(Instant, u64), Vec<u8>>;

/// The seeded fault model and the two delay queues.
#[derive(Debug)]
pub struct Impairer {
    config: FaultConfig,
    rng: SmallRng,
    queues: [TimeQueue; 2],
    seq: u64,
    stats: Stats,
}

impl Impairer {
    /// A fault model with `config` whose random choices follow `seed`.
    pub fn new(config: FaultConfig, seed: u64) -> Result<Self, BadProbability> {
        config.validate()?;
        Ok(Impairer {
            config,
            rng: SmallRng::seed_from_u64(seed),
            queues: [TimeQueue::new(), TimeQueue::new()],
            seq: 0,
            stats: Stats::default(),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Frames currently queued in `dir`.
    pub fn queued(&self, dir: Direction) -> usize {
        self.queues[dir.index()].len()
    }

    /// Takes in a frame that arrived at `now` travelling in `dir`: completes
    /// its transport checksum, then applies loss, duplication, corruption,
    /// reordering and delay, in that order, and queues what survives.
    pub fn ingress(&mut self, dir: Direction, mut frame: Vec<u8>, now: Instant) {
        self.stats.received[dir.index()] += 1;
        // Draw every decision for every frame, in a fixed order, so the
        // random stream (and so a seed's outcome) does not depend on which
        // faults happened to fire earlier.
        let lose = self.rng.random_bool(self.config.loss);
        let duplicate = self.rng.random_bool(self.config.duplicate);
        let corrupt = self.rng.random_bool(self.config.corrupt);
        let reorder = self.rng.random_bool(self.config.reorder);
        let bit: u64 = self.rng.random();
        let delay = self.jittered_delay();
        if lose {
            self.stats.lost += 1;
            return;
        }
        if checksum::complete(&mut frame) == Completion::Completed {
            self.stats.checksums_completed += 1;
        }
        let due = now + delay;
        if duplicate {
            self.stats.duplicated += 1;
            self.enqueue(dir, due, frame.clone());
        }
        if corrupt && frame.len() > ETHERNET_HEADER_LEN {
            let bits = (frame.len() - ETHERNET_HEADER_LEN) as u64 * 8;
            // Both casts are lossless: bit % bits < bits <= 8 * frame.len().
            let bit = (bit % bits) as usize;
            frame[ETHERNET_HEADER_LEN + bit / 8] ^= 1 << (bit % 8);
            self.stats.corrupted += 1;
            if frame[12..ETHERNET_HEADER_LEN] == ETHERTYPE_IPV4 {
                self.stats.corrupted_ipv4 += 1;
            }
        }
        let due = if reorder {
            self.stats.reordered += 1;
            due + self.config.delay * REORDER_DELAY_FACTOR + REORDER_MIN_EXTRA
        } else {
            due
        };
        self.enqueue(dir, due, frame);
    }

    /// The earliest time a frame queued in `dir` becomes due.
    pub fn next_due(&self, dir: Direction) -> Option<Instant> {
        self.queues[dir.index()]
            .first_key_value()
            .map(|(&(due, _), _)| due)
    }

    /// The next frame in `dir` that is due at `now`, if any, without
    /// removing it (so a send that would block can be retried).
    pub fn peek_due(&self, dir: Direction, now: Instant) -> Option<&[u8]> {
        match self.queues[dir.index()].first_key_value() {
            Some((&(due, _), frame)) if due <= now => Some(frame),
            _ => None,
        }
    }

    /// Removes and returns the next frame in `dir` that is due at `now`.
    pub fn pop_due(&mut self, dir: Direction, now: Instant) -> Option<Vec<u8>> {
        let queue = &mut self.queues[dir.index()];
        match queue.first_key_value() {
            Some((&(due, _), _)) if due <= now => queue.pop_first().map(|(_, frame)| frame),
            _ => None,
        }
    }

    fn jittered_delay(&mut self) -> Duration {
        let jitter = self.config.jitter;
        if jitter.is_zero() {
            return self.config.delay;
        }
        let span = jitter.as_nanos().min(u128::from(u64::MAX / 2)) as u64;
        let offset = self.rng.random_range(0..=2 * span);
        let nanos = self.config.delay.as_nanos().min(u128::from(u64::MAX / 2)) as u64;
        Duration::from_nanos((nanos + offset).saturating_sub(span))
    }

    fn enqueue(&mut self, dir: Direction, due: Instant, frame: Vec<u8>) {
        let queue = &mut self.queues[dir.index()];
        if queue.len() >= self.config.limit {
            self.stats.overflow += 1;
            return;
        }
        self.seq += 1;
        queue.insert((due, self.seq), frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::tests::tcp_frame;

    fn drain(imp: &mut Impairer, dir: Direction, now: Instant) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| imp.pop_due(dir, now)).collect()
    }

    #[test]
    fn no_faults_forwards_in_order_after_the_delay() {
        let config = FaultConfig {
            delay: Duration::from_micros(200),
            ..FaultConfig::default()
        };
        let mut imp = Impairer::new(config, 1).unwrap();
        let t0 = Instant::now();
        for i in 0..10u8 {
            imp.ingress(Direction::AToB, vec![i; 60], t0);
        }
        assert_eq!(imp.pop_due(Direction::AToB, t0), None);
        assert_eq!(
            imp.next_due(Direction::AToB),
            Some(t0 + Duration::from_micros(200))
        );
        let out = drain(&mut imp, Direction::AToB, t0 + Duration::from_micros(200));
        assert_eq!(out, (0..10u8).map(|i| vec![i; 60]).collect::<Vec<_>>());
        assert!(drain(&mut imp, Direction::BToA, t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn loss_of_one_drops_everything() {
        let config = FaultConfig {
            loss: 1.0,
            ..FaultConfig::default()
        };
        let mut imp = Impairer::new(config, 7).unwrap();
        let t0 = Instant::now();
        for _ in 0..100 {
            imp.ingress(Direction::BToA, vec![0; 60], t0);
        }
        assert_eq!(imp.stats().lost, 100);
        assert_eq!(imp.next_due(Direction::BToA), None);
    }

    #[test]
    fn rates_match_probabilities_and_seed_is_deterministic() {
        let config = FaultConfig {
            loss: 0.05,
            reorder: 0.05,
            duplicate: 0.05,
            corrupt: 0.05,
            delay: Duration::from_micros(100),
            jitter: Duration::from_micros(50),
            limit: 100_000,
        };
        let run = |seed| {
            let mut imp = Impairer::new(config.clone(), seed).unwrap();
            let t0 = Instant::now();
            for i in 0..20_000u32 {
                imp.ingress(Direction::AToB, tcp_frame(&i.to_be_bytes()), t0);
            }
            imp.stats().clone()
        };
        let a = run(42);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
        for (name, n) in [
            ("lost", a.lost),
            ("duplicated", a.duplicated),
            ("corrupted", a.corrupted),
            ("reordered", a.reordered),
        ] {
            // 5% of 20,000 (or of the 95% that survive loss) is ~1,000;
            // the bounds are more than 5 sigma wide.
            assert!((800..1_200).contains(&n), "{name} = {n}");
        }
        assert_eq!(a.checksums_completed, 0, "test frames carry full checksums");
    }

    #[test]
    fn reordered_frames_are_overtaken() {
        let config = FaultConfig {
            reorder: 1.0,
            delay: Duration::from_micros(200),
            ..FaultConfig::default()
        };
        let mut imp = Impairer::new(config, 3).unwrap();
        let t0 = Instant::now();
        imp.ingress(Direction::AToB, vec![1; 60], t0);
        // Reordering is certain for every frame, so the held frame is due
        // at 200 + 600 + 100 us: later than a plain frame at 200 us would be.
        assert_eq!(
            imp.next_due(Direction::AToB),
            Some(t0 + Duration::from_micros(900))
        );
        assert_eq!(imp.stats().reordered, 1);
    }

    #[test]
    fn corruption_flips_exactly_one_bit_past_the_ethernet_header() {
        let config = FaultConfig {
            corrupt: 1.0,
            ..FaultConfig::default()
        };
        let mut imp = Impairer::new(config, 9).unwrap();
        let t0 = Instant::now();
        let original = tcp_frame(&[0u8; 64]);
        for _ in 0..200 {
            imp.ingress(Direction::AToB, original.clone(), t0);
        }
        for frame in drain(&mut imp, Direction::AToB, t0) {
            let flipped: u32 = frame
                .iter()
                .zip(&original)
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            assert_eq!(flipped, 1);
            assert_eq!(frame[..14], original[..14]);
        }
    }

    #[test]
    fn duplicate_arrives_intact_even_when_the_original_is_corrupted() {
        let config = FaultConfig {
            duplicate: 1.0,
            corrupt: 1.0,
            ..FaultConfig::default()
        };
        let mut imp = Impairer::new(config, 11).unwrap();
        let t0 = Instant::now();
        let original = tcp_frame(b"payload");
        imp.ingress(Direction::AToB, original.clone(), t0);
        let out = drain(&mut imp, Direction::AToB, t0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], original);
        assert_ne!(out[1], original);
    }

    #[test]
    fn queue_limit_drops_overflow() {
        let config = FaultConfig {
            limit: 5,
            delay: Duration::from_millis(1),
            ..FaultConfig::default()
        };
        let mut imp = Impairer::new(config, 0).unwrap();
        let t0 = Instant::now();
        for _ in 0..8 {
            imp.ingress(Direction::AToB, vec![0; 60], t0);
        }
        assert_eq!(imp.queued(Direction::AToB), 5);
        assert_eq!(imp.stats().overflow, 3);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let config = FaultConfig {
            delay: Duration::from_micros(100),
            jitter: Duration::from_micros(300),
            ..FaultConfig::default()
        };
        let mut imp = Impairer::new(config, 5).unwrap();
        for _ in 0..10_000 {
            let d = imp.jittered_delay();
            assert!(d <= Duration::from_micros(400), "{d:?}");
        }
    }

    #[test]
    fn bad_probabilities_are_rejected() {
        for p in [-0.1, 1.5, f64::NAN] {
            let config = FaultConfig {
                loss: p,
                ..FaultConfig::default()
            };
            assert!(Impairer::new(config, 0).is_err());
        }
    }
}
