//! The daemons: each is a Linux driver loop around one sans-IO machine. The loop waits on
//! its descriptors and on the machine's next timer, feeds what arrives to the machine, and
//! carries out its verdicts.

pub mod client;
pub mod gateway;
/// The DSMIPv6 home agent daemon.
pub mod ha;
mod hook;
/// The DSMIPv6 mobile node daemon.
pub mod mn;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most packets handled from one descriptor before the loop looks at the others, so that
/// one busy socket cannot starve the rest (timers, control socket).
pub(crate) const BURST: usize = 256;

/// Set by SIGINT/SIGTERM; the loops finish their round and clean up.
pub(crate) fn shutdown_flag() -> std::io::Result<Arc<AtomicBool>> {
    let f = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&f))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&f))?;
    Ok(f)
}

pub(crate) fn stopping(f: &AtomicBool) -> bool {
    f.load(Ordering::Relaxed)
}

/// Time to sleep until `deadline` (capped so that a lost signal is seen within a second).
pub(crate) fn until(deadline: Option<Instant>, now: Instant) -> Duration {
    let cap = Duration::from_secs(1);
    deadline
        .map(|d| d.saturating_duration_since(now).min(cap))
        .unwrap_or(cap)
}

/// The deadline an event loop waits for: the machine's, or at the latest a check of the
/// stop flag once a second (a signal may wake another thread). The check time stays put
/// between wake-ups, so that a [`m6t_linux::poll::Poller`] timer is re-armed only when the
/// machine's deadline moves.
pub(crate) struct WakeBy(Instant);

impl WakeBy {
    pub(crate) fn new(now: Instant) -> Self {
        WakeBy(now + Duration::from_secs(1))
    }

    pub(crate) fn deadline(&mut self, machine: Option<Instant>, now: Instant) -> Instant {
        if now >= self.0 {
            self.0 = now + Duration::from_secs(1);
        }
        machine.map_or(self.0, |d| d.min(self.0))
    }
}

/// An error that stops a daemon, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Privileges or device missing.
    #[error("{0}")]
    Caps(#[from] m6t_linux::caps::CapsError),
    /// A system call failed during setup.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A netlink request failed.
    #[error("{0}")]
    Netlink(#[from] m6t_linux::netlink::NetlinkError),
}

/// Answers the control socket's pending requests (`status`, `counters`) with the daemon's
/// report as one JSON line; anything else gets an error line.
pub(crate) fn serve_reports(
    control: &m6t_linux::control::ControlServer,
    mut report: impl FnMut(&str) -> crate::status::Report,
) {
    control.serve(|req| {
        if req != crate::status::REQUEST_STATUS && req != crate::status::REQUEST_COUNTERS {
            return "{\"error\":\"unknown request\"}\n".to_string();
        }
        serde_json::to_string(&report(req)).unwrap_or_default() + "\n"
    });
}

/// A machine's counters followed by the driver's own.
pub(crate) fn counters_with(
    mut counters: Vec<m6t_proto::stats::Counter>,
    extra: &[(&str, u64)],
) -> Vec<m6t_proto::stats::Counter> {
    counters.extend(extra.iter().map(|(name, value)| m6t_proto::stats::Counter {
        name: (*name).into(),
        value: *value,
    }));
    counters
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    // Converted only when an error happens: event loops build this on every wake-up.
    move |source| DaemonError::Io {
        what: what.into(),
        source,
    }
}
