//! A token bucket in integer milli-tokens: the per-IPv4-address limit on new gateway states
//! (draft-ebalard-mext-m6t-02 section 6.1.3).

use std::time::{Duration, Instant};

/// One bucket: `burst` tokens at most, refilled at `rate` tokens per second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    milli: u64,
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub(crate) fn full(now: Instant, burst: u32) -> Self {
        Bucket {
            milli: u64::from(burst) * 1000,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: u32, burst: u32) {
        let ms = now.saturating_duration_since(self.at).as_millis();
        let add = u64::try_from(ms)
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(rate));
        self.milli = self.milli.saturating_add(add).min(u64::from(burst) * 1000);
        if now > self.at {
            self.at = now;
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        self.refill(now, rate, burst);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }

    /// True when the bucket is full again at `now` (so forgetting it loses nothing).
    pub(crate) fn is_full(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        self.refill(now, rate, burst);
        self.milli >= u64::from(burst) * 1000
    }
}

/// Time for an empty bucket to fill up again.
pub(crate) fn time_to_full(rate: u32, burst: u32) -> Duration {
    if rate == 0 {
        return Duration::from_secs(3600);
    }
    Duration::from_millis(u64::from(burst) * 1000 / u64::from(rate) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(t0, 3);
        assert!(b.take(t0, 2, 3));
        assert!(b.take(t0, 2, 3));
        assert!(b.take(t0, 2, 3));
        assert!(!b.take(t0, 2, 3));
        assert!(!b.take(t0 + Duration::from_millis(499), 2, 3));
        assert!(b.take(t0 + Duration::from_millis(500), 2, 3));
        assert!(!b.is_full(t0 + Duration::from_millis(1000), 2, 3));
        assert!(b.is_full(t0 + Duration::from_millis(2000), 2, 3));
    }
}
