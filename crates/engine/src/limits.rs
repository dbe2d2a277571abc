//! Token buckets for the per-connection and per-worker rate limits.

use std::time::Instant;

/// A token bucket: `rate` tokens per second up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `burst` below 1 is raised to 1 so some traffic passes.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Whether [`TokenBucket::take`] at `now` would succeed (takes nothing).
    pub fn has_token(&self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + dt * self.rate).min(self.burst) >= 1.0
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// An optional bucket: no limit when unset.
#[derive(Debug, Clone, Default)]
pub struct Limit(Option<TokenBucket>);

impl Limit {
    /// A limit of `rate` per second (burst defaults to one second's worth).
    pub fn new(rate: Option<f64>, burst: Option<f64>, now: Instant) -> Self {
        Self(rate.map(|r| TokenBucket::new(r, burst.unwrap_or(r), now)))
    }

    /// Whether one more frame may pass.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.0.as_mut().is_none_or(|b| b.take(now))
    }

    /// Whether [`Limit::allow`] at `now` would say yes (takes nothing).
    pub fn would_allow(&self, now: Instant) -> bool {
        self.0.as_ref().is_none_or(|b| b.has_token(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0, t0);
        assert_eq!((0..10).filter(|_| b.take(t0)).count(), 5);
        assert!(!b.take(t0 + Duration::from_millis(50)));
        assert!(!b.has_token(t0 + Duration::from_millis(50)));
        assert!(b.has_token(t0 + Duration::from_millis(160)));
        assert!(b.take(t0 + Duration::from_millis(160)));
        // After a long pause, no more than the burst.
        let later = t0 + Duration::from_secs(100);
        assert_eq!((0..20).filter(|_| b.take(later)).count(), 5);
    }

    #[test]
    fn unset_limit_allows_all() {
        let mut l = Limit::new(None, None, Instant::now());
        assert!((0..1000).all(|_| l.allow(Instant::now())));
    }
}
