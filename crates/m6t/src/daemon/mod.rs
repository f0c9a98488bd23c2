//! The daemons: each is a Linux driver around one sans-IO machine, on the driver runtime
//! of [`m6t_linux::runtime`]. A daemon reads as: set up its interfaces and sockets,
//! register them under a token of its own, handle each ready token by feeding the machine,
//! then carry out what the machine asked (sends, netlink changes, hooks), counting every
//! failure by reason ([`m6t_linux::failures`]).

pub mod client;
pub mod gateway;
/// The DSMIPv6 home agent daemon.
pub mod ha;
mod hook;
/// The DSMIPv6 mobile node daemon.
pub mod mn;
mod tif;

use m6t_linux::control::ControlServer;
use m6t_linux::failures::Failures;
use std::path::Path;

/// Most reads from one descriptor before the loop looks at the others, so that one busy
/// socket cannot starve the rest (timers, control socket).
pub(crate) const BURST: usize = 256;

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
    /// The IPsec configuration could not be installed.
    #[error("[ipsec]: {0}")]
    Ipsec(#[from] m6t_ipsec::ConfigError),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    // Converted only when an error happens: event loops build this on every wake-up.
    move |source| DaemonError::Io {
        what: what.into(),
        source,
    }
}

/// Binds a daemon's control socket (for `m6t status`).
pub(crate) fn bind_control(path: &Path) -> Result<ControlServer, DaemonError> {
    ControlServer::bind(path).map_err(io(format!("control socket {}", path.display())))
}

/// A seed for a machine from the kernel's generator.
pub(crate) fn os_seed() -> Result<[u8; 32], DaemonError> {
    m6t_linux::seed::os_seed().map_err(io("getrandom"))
}

/// The process's stop request (SIGINT/SIGTERM).
pub(crate) fn shutdown() -> Result<m6t_linux::runtime::Shutdown, DaemonError> {
    m6t_linux::runtime::Shutdown::install().map_err(io("signal handlers"))
}

/// Answers the control socket's pending requests (`status`, `counters`) with the daemon's
/// report as one JSON line; anything else gets an error line.
pub(crate) fn serve_reports(
    control: &ControlServer,
    mut report: impl FnMut(&str) -> crate::status::Report,
) {
    control.serve(|req| {
        if req != crate::status::REQUEST_STATUS && req != crate::status::REQUEST_COUNTERS {
            return "{\"error\":\"unknown request\"}\n".to_string();
        }
        serde_json::to_string(&report(req)).unwrap_or_default() + "\n"
    });
}

/// A machine's counters followed by the driver's failure counters and `extra`.
pub(crate) fn counters_with(
    mut counters: Vec<m6t_proto::stats::Counter>,
    failures: &Failures,
    extra: &[(&'static str, u64)],
) -> Vec<m6t_proto::stats::Counter> {
    counters.extend(
        failures
            .snapshot()
            .chain(extra.iter().copied())
            .map(|(name, value)| m6t_proto::stats::Counter {
                name: name.into(),
                value,
            }),
    );
    counters
}

/// `counters` followed by IPsec's drops by reason (`ipsec_<reason>`), when configured.
pub(crate) fn with_ipsec(
    mut counters: Vec<m6t_proto::stats::Counter>,
    ipsec: Option<&m6t_ipsec::Ipsec>,
) -> Vec<m6t_proto::stats::Counter> {
    if let Some(i) = ipsec {
        counters.extend(crate::status::IpsecInfo::counters(i));
    }
    counters
}

/// Installs the `[ipsec]` section, if any: its warnings logged, its SAs' IVs seeded from
/// `seed` (random per start, so a manually keyed GCM SA does not repeat IVs after a restart
/// unless its counter does, RFC 4106 section 2 and the README).
pub(crate) fn install_ipsec(
    setup: Option<&crate::ipsec_config::IpsecSetup>,
    seed: &[u8; 32],
) -> Result<Option<m6t_ipsec::Ipsec>, DaemonError> {
    let Some(s) = setup else {
        return Ok(None);
    };
    for w in &s.warnings {
        tracing::warn!("[ipsec]: {w}");
    }
    let mut iv = [0u8; 8];
    iv.copy_from_slice(&seed[8..16]);
    let i = s.install(u64::from_le_bytes(iv))?;
    tracing::info!(
        "IPsec: {} policies, {} SAs with manual keys",
        i.spd().policies.len(),
        i.sad().len()
    );
    Ok(Some(i))
}
