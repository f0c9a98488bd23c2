//! What the driver itself fails to do, counted by reason and logged at most once per
//! [`LOG_EVERY`] per reason: a send the kernel refused, a TUN write, a netlink request, a
//! binding-cache write. The machines count their own drops; these are the effects they
//! asked for that did not happen. Shared by worker threads (atomics, relaxed: they are
//! statistics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shortest interval between two log lines of the same reason (the counter still counts
/// every failure): a dead route must not turn each packet into a log line.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

macro_rules! failures {
    ($($(#[$m:meta])* $v:ident => $s:literal,)*) => {
        /// Why an effect the driver carried out failed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Failure { $($(#[$m])* $v,)* }

        impl Failure {
            /// Every reason, in report order.
            pub const ALL: &'static [Failure] = &[$(Failure::$v,)*];

            /// The counter's name in `m6t status`.
            pub fn name(self) -> &'static str {
                match self { $(Failure::$v => $s,)* }
            }
        }
    };
}

failures! {
    /// A packet the TUN device refused.
    TunWrite => "tun_write_errors",
    /// A data datagram the UDP socket refused (sendmmsg / sendto).
    UdpSend => "udp_send_errors",
    /// An IP-in-IP packet the raw socket refused.
    RawSend => "raw_send_errors",
    /// A signalling packet (BU / BA) that could not be sent.
    SignalSend => "signal_send_errors",
    /// A receive that failed with something else than "nothing queued" (ICMP errors of
    /// earlier sends surface here).
    Recv => "recv_errors",
    /// A netlink request (address, route, rule, proxy entry) the kernel refused.
    Netlink => "netlink_errors",
    /// A write of the saved state (binding cache) that failed.
    StateFile => "state_file_errors",
    /// A request to the gateway's per-source budget (its eBPF maps) that failed: a state's
    /// sender not entered (its traffic then counts against its source's budget) or not
    /// removed, or the drop counter not read.
    Budget => "budget_errors",
}

/// Failure counters with rate-limited logging.
#[derive(Debug)]
pub struct Failures {
    counts: [AtomicU64; Failure::ALL.len()],
    /// Milliseconds since `epoch` of the last log line per reason, plus one (0: never).
    logged: [AtomicU64; Failure::ALL.len()],
    suppressed: [AtomicU64; Failure::ALL.len()],
    epoch: Instant,
}

impl Default for Failures {
    fn default() -> Self {
        Failures {
            counts: Default::default(),
            logged: Default::default(),
            suppressed: Default::default(),
            epoch: Instant::now(),
        }
    }
}

impl Failures {
    /// Counts `n` failures of `reason` and logs `what` (with the error) unless a line of
    /// the same reason was logged less than [`LOG_EVERY`] ago.
    pub fn record(&self, reason: Failure, n: u64, what: impl std::fmt::Display) {
        if n == 0 {
            return;
        }
        let i = reason as usize;
        self.counts[i].fetch_add(n, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.logged[i].load(Ordering::Relaxed);
        if last != 0 && now - last < LOG_EVERY.as_millis() as u64 {
            self.suppressed[i].fetch_add(n, Ordering::Relaxed);
            return;
        }
        if self.logged[i]
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            // Another thread logs this period.
            self.suppressed[i].fetch_add(n, Ordering::Relaxed);
            return;
        }
        let more = self.suppressed[i].swap(0, Ordering::Relaxed);
        if more > 0 {
            tracing::warn!("{what} ({more} more {} since the last line)", reason.name());
        } else {
            tracing::warn!("{what}");
        }
    }

    /// Counts the result of an effect: an error is recorded under `reason` with `what`.
    pub fn check<T, E: std::fmt::Display>(
        &self,
        reason: Failure,
        what: impl std::fmt::Display,
        r: Result<T, E>,
    ) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.record(reason, 1, format_args!("{what}: {e}"));
                None
            }
        }
    }

    /// The count of one reason.
    pub fn get(&self, reason: Failure) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }

    /// Every counter with its name, for `m6t status`.
    pub fn snapshot(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Failure::ALL.iter().map(|f| (f.name(), self.get(*f)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_is_counted_even_when_its_log_line_is_suppressed() {
        let f = Failures::default();
        for _ in 0..5 {
            f.record(Failure::UdpSend, 1, "send");
        }
        let _ = f.check(Failure::Netlink, "route", Err::<(), _>("refused"));
        assert_eq!(
            f.check(Failure::Netlink, "route", Ok::<u8, &str>(7)),
            Some(7)
        );
        assert_eq!(f.get(Failure::UdpSend), 5);
        assert_eq!(f.get(Failure::Netlink), 1);
        assert_eq!(
            f.suppressed[Failure::UdpSend as usize].load(Ordering::Relaxed),
            4
        );
        let names: Vec<_> = f.snapshot().map(|(n, _)| n).collect();
        assert!(names.contains(&"tun_write_errors"));
    }
}
