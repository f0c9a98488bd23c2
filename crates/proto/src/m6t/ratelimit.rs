//! A token bucket in integer nano-tokens: the per-IPv4-address limit on new gateway states
//! (draft-ebalard-mext-m6t-02 section 6.1.3).
//!
//! Nano-tokens because elapsed time is counted in nanoseconds: one nanosecond at `rate` tokens
//! per second adds exactly `rate` nano-tokens, so no call spacing, however short, loses any
//! refill to rounding (whole milliseconds did: calls under 1 ms apart never refilled).
//! `u32::MAX` tokens are about 4.3e18 nano-tokens, which still fits a `u64`.

use std::time::{Duration, Instant};

/// Nano-tokens per token.
const NANO: u64 = 1_000_000_000;

/// One bucket: `burst` tokens at most, refilled at `rate` tokens per second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    nano: u64,
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub(crate) fn full(now: Instant, burst: u32) -> Self {
        Bucket {
            nano: u64::from(burst) * NANO,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: u32, burst: u32) {
        // A time before `at` (callers' clocks read out of order) adds nothing and keeps `at`.
        let ns = now.saturating_duration_since(self.at).as_nanos();
        let add = u64::try_from(ns)
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(rate));
        self.nano = self.nano.saturating_add(add).min(u64::from(burst) * NANO);
        if now > self.at {
            self.at = now;
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        self.refill(now, rate, burst);
        if self.nano >= NANO {
            self.nano -= NANO;
            true
        } else {
            false
        }
    }

    /// True when the bucket is full again at `now` (so forgetting it loses nothing).
    pub(crate) fn is_full(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        self.refill(now, rate, burst);
        self.nano >= u64::from(burst) * NANO
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

    /// Calls closer together than a millisecond must still refill: a gateway under load looks
    /// its buckets up far more often than once per millisecond (issue 14 measured about 3 new
    /// states/s admitted against a configured 10/s when the elapsed time was truncated to whole
    /// milliseconds at every call).
    #[test]
    fn sub_millisecond_calls_refill_at_the_configured_rate() {
        let (rate, burst) = (10, 1);
        let t0 = Instant::now();
        let mut b = Bucket::full(t0, burst);
        assert!(b.take(t0, rate, burst));
        let step = Duration::from_micros(500);
        let mut admitted = 0;
        // 2000 calls 0.5 ms apart: one second, ten tokens at 10/s.
        for i in 1..=2000u32 {
            if b.take(t0 + step * i, rate, burst) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 10);
        // Odd spacing that never lands on a millisecond boundary loses nothing either.
        let t1 = t0 + step * 2000;
        let step = Duration::from_nanos(333_333);
        let mut admitted = 0;
        for i in 1..=30_000u32 {
            if b.take(t1 + step * i, rate, burst) {
                admitted += 1;
            }
        }
        // 30000 * 333.333 us = 9.99999 s: 99 whole tokens, the 100th just short.
        assert_eq!(admitted, 99);
    }
}
