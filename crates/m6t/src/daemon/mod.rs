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
mod ike;
/// The DSMIPv6 mobile node daemon.
pub mod mn;
mod tif;

use m6t_linux::control::ControlServer;
use m6t_linux::failures::Failures;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

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

/// Switches to `user` when the file names one (`user`, [`m6t_linux::caps::switch_user`]),
/// then drops every capability but `keep` (see [`m6t_linux::caps::keep_only`]) once a
/// daemon has opened what needs more: CAP_NET_ADMIN stays for the addresses, routes and
/// proxy entries it changes as it runs, CAP_NET_RAW for the raw sockets the DSMIPv6 daemons
/// may open again on an interface change. The user first: changing it needs CAP_SETUID and
/// CAP_SETGID, which `keep_only` then drops.
pub(crate) fn keep_only(
    user: Option<&m6t_linux::caps::RunAs>,
    keep: &[m6t_linux::caps::Capability],
) -> Result<(), DaemonError> {
    if let Some(u) = user {
        m6t_linux::caps::switch_user(u).map_err(io(format!(
            "switching to user `{}` (uid {}, gid {}; key `user`)",
            u.name, u.uid, u.gid
        )))?;
        tracing::info!("running as user {} (uid {}, gid {})", u.name, u.uid, u.gid);
    }
    m6t_linux::caps::keep_only(keep).map_err(io("capabilities"))?;
    // The helper threads drop theirs now (see `drop_all_when_settled`).
    m6t_linux::caps::settled();
    Ok(())
}

/// Binds a daemon's control socket (for `m6t status`).
pub(crate) fn bind_control(path: &Path) -> Result<ControlServer, DaemonError> {
    ControlServer::bind(path).map_err(io(format!("control socket {}", path.display())))
}

/// Starts the metrics server when `listen` is set (`metrics_listen`): binds it now, so that
/// a port in use stops the daemon at start with one line naming the key, and returns what
/// the loop publishes through.
pub(crate) fn start_metrics(
    listen: Option<std::net::SocketAddr>,
    daemon: &'static str,
    registration: bool,
) -> Result<Option<crate::metrics::Publisher>, DaemonError> {
    let Some(addr) = listen else {
        return Ok(None);
    };
    let m = std::sync::Arc::new(crate::metrics::Metrics::new(daemon, registration));
    let local = crate::metrics::serve(addr, std::sync::Arc::clone(&m))
        .map_err(io(format!("metrics_listen {addr}")))?;
    tracing::info!("metrics on http://{local}/metrics");
    Ok(Some(crate::metrics::Publisher::new(m)))
}

/// Publishes a snapshot when one is due (at most once per
/// [`crate::metrics::PUBLISH_EVERY`]; `snapshot` runs only then) and returns `next`, or the
/// next publication when that comes first: the loop wakes for it even when idle, so the
/// values scraped lag the daemon's by a second at most.
pub(crate) fn publish_metrics(
    publisher: &mut Option<crate::metrics::Publisher>,
    now: std::time::Instant,
    next: Option<std::time::Instant>,
    snapshot: impl FnOnce() -> crate::metrics::Snapshot,
) -> Option<std::time::Instant> {
    let Some(p) = publisher.as_mut() else {
        return next;
    };
    if p.due(now) {
        p.publish(now, snapshot());
    }
    let d = p.deadline();
    Some(next.map_or(d, |n| n.min(d)))
}

/// The number of IPsec SAs by direction, as gauges (none without IPsec).
pub(crate) fn ipsec_gauges(ipsec: Option<&m6t_ipsec::Ipsec>) -> Vec<crate::metrics::GaugeValue> {
    let Some(i) = ipsec else {
        return Vec::new();
    };
    let inbound = i
        .sad()
        .iter()
        .filter(|e| e.direction == m6t_ipsec::Direction::In)
        .count();
    let all = i.sad().len();
    const HELP: &str = "IPsec security associations installed by direction (in, out)";
    vec![
        crate::metrics::GaugeValue::labelled("ipsec_sas", HELP, "direction", "in", inbound as f64),
        crate::metrics::GaugeValue::labelled(
            "ipsec_sas",
            HELP,
            "direction",
            "out",
            (all - inbound) as f64,
        ),
    ]
}

/// The drop counters in the log: one line per [`m6t_linux::failures::LOG_EVERY`] at most,
/// naming each reason that dropped packets since the last line and how many, so that a
/// flood of refused packets is one line every ten seconds, not one per packet (the
/// counters themselves count every packet, in `m6t status` and the metrics). Checked
/// during the loop's passes with the pass's clock reading, so it costs no wake-up: drops
/// only happen in passes.
pub(crate) struct DropLog {
    next: Instant,
    last: Vec<(String, u64)>,
}

/// True for the counters that count dropped packets (a reason each).
fn is_drop(name: &str) -> bool {
    name.starts_with("drop_") || name.starts_with("ipsec_") || name == "pcap_dropped"
}

impl DropLog {
    /// Starts counting from zero: the first line covers the drops since start.
    pub(crate) fn new(now: Instant) -> Self {
        DropLog {
            next: now + m6t_linux::failures::LOG_EVERY,
            last: Vec::new(),
        }
    }

    /// Whether a line may be written now (the caller then takes the counters).
    pub(crate) fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Logs the drops since the last line, if any, and returns the line.
    pub(crate) fn log(
        &mut self,
        now: Instant,
        counters: &[m6t_proto::stats::Counter],
    ) -> Option<String> {
        self.next = now + m6t_linux::failures::LOG_EVERY;
        let mut parts = Vec::new();
        for c in counters.iter().filter(|c| is_drop(&c.name)) {
            let before = match self.last.iter_mut().find(|(n, _)| *n == c.name) {
                Some((_, v)) => std::mem::replace(v, c.value),
                None => {
                    self.last.push((c.name.clone(), c.value));
                    0
                }
            };
            if c.value > before {
                parts.push(format!("{} {}", c.name, c.value - before));
            }
        }
        if parts.is_empty() {
            return None;
        }
        let line = format!(
            "dropped since the last such line (at most one per {} s): {}",
            m6t_linux::failures::LOG_EVERY.as_secs(),
            parts.join(", ")
        );
        tracing::info!("{line}");
        Some(line)
    }

    /// In a loop pass: logs when due, taking the counters only then.
    pub(crate) fn pass(
        &mut self,
        now: Instant,
        counters: impl FnOnce() -> Vec<m6t_proto::stats::Counter>,
    ) {
        if self.due(now) {
            self.log(now, &counters());
        }
    }
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

/// The process's `--pcap` capture, when one runs (set once, before the daemon starts).
static CAPTURE: std::sync::OnceLock<m6t_linux::capture::Capture> = std::sync::OnceLock::new();

/// The UDP ports and IP protocols of DSMIPv6's tunnels (RFC 5555 section 4.1: UDP 4191;
/// ESP in UDP 4500, RFC 3948; ESP, IPv6 and IPv4 in IPv6, and the Mobility Header with the
/// options and routing headers that carry BU and BA from an IPv6 care-of address).
pub fn dsmip_capture_filter() -> m6t_linux::capture::CaptureFilter {
    m6t_linux::capture::CaptureFilter {
        udp_ports: vec![
            m6t_proto::dsmip::tif::DSMIP_PORT,
            m6t_proto::dsmip::tif::ESP_UDP_PORT,
        ],
        ip_protocols: vec![50, 41, 4, 135, 60, 43],
    }
}

/// Starts `--pcap FILE` for the whole process: what crosses the tunnel (`filter`), outer
/// headers included, as pcapng ([`m6t_linux::capture`]). Its counts join every status
/// report (`pcap_written`, `pcap_dropped`).
pub fn start_capture(
    path: &Path,
    filter: &m6t_linux::capture::CaptureFilter,
) -> Result<(), DaemonError> {
    let c = m6t_linux::capture::Capture::start(path, filter)
        .map_err(io(format!("--pcap {}", path.display())))?;
    tracing::info!("capturing the tunnel's packets to {}", path.display());
    // Set once per process, by main: a second call keeps the first capture.
    let _ = CAPTURE.set(c);
    Ok(())
}

/// Stops the capture, if any, flushing its file: called when the daemon returns (a static
/// is never dropped).
pub fn stop_capture() {
    if let Some(c) = CAPTURE.get() {
        c.stop();
    }
}

/// A machine's counters followed by the driver's failure counters, `extra`, and the
/// capture's counts when `--pcap` is on.
pub(crate) fn counters_with(
    mut counters: Vec<m6t_proto::stats::Counter>,
    failures: &Failures,
    extra: &[(&'static str, u64)],
) -> Vec<m6t_proto::stats::Counter> {
    let capture = CAPTURE.get().map(|c| {
        let [written, dropped] = m6t_linux::capture::COUNTER_NAMES;
        [
            (written, c.stats().written()),
            (dropped, c.stats().dropped()),
        ]
    });
    counters.extend(
        failures
            .snapshot()
            .chain(extra.iter().copied())
            .chain(capture.into_iter().flatten())
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

/// The counters with IKE's appended (`ike_*`), when `[ike]` keys the SAs.
pub(crate) fn with_ike(
    mut counters: Vec<m6t_proto::stats::Counter>,
    ike: Option<&ike::IkeDriver>,
) -> Vec<m6t_proto::stats::Counter> {
    if let Some(i) = ike {
        counters.extend(i.counters());
    }
    counters
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one, never
/// half of one: a temporary file, fsync'd, renamed over it, and the directory fsync'd so
/// the rename itself is on disk.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
}

/// Installs the `[ipsec]` section, if any: its warnings logged, its SAs' IVs seeded from
/// `seed` (random per start, so a manually keyed GCM SA does not repeat IVs after a restart
/// unless its counter does, RFC 4106 section 2 and the README), its outbound counters
/// continued from the sequence file and reserved ahead in it ([`ipsec_upkeep`]).
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
    let mut i = s.install(u64::from_le_bytes(iv))?;
    match &s.sequence_file {
        Some(p) => {
            if let Some(saved) = load_sequences(p)? {
                i.resume(&saved);
            }
            // Before the first packet: a failure here stops the daemon with the file named.
            let r = i.reservations();
            save_sequences(p, &r).map_err(io(format!("[ipsec] sequence_file {}", p.display())))?;
            i.reserved(&r);
        }
        None => i.reserve_unlimited(),
    }
    let manual = i.sad().iter().filter(|e| e.keyed()).count();
    tracing::info!(
        "IPsec: {} policies, {manual} SAs with manual keys, {} keyed by IKEv2",
        i.spd().policies.len(),
        i.sad().len() - manual
    );
    Ok(Some(i))
}

/// One SA's reservation as the sequence file holds it.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedSequence {
    name: String,
    spi: u32,
    upto: u64,
}

fn load_sequences(path: &Path) -> Result<Option<Vec<m6t_ipsec::bits::Reservation>>, DaemonError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(format!("[ipsec] sequence_file {}", path.display()))(e)),
    };
    // A file that does not parse is an error, not a fresh start: starting again from 1
    // is what the file exists to prevent.
    let saved: Vec<SavedSequence> = serde_json::from_str(&text).map_err(|e| DaemonError::Io {
        what: format!("[ipsec] sequence_file {}", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    Ok(Some(
        saved
            .into_iter()
            .map(|s| m6t_ipsec::bits::Reservation {
                name: s.name,
                spi: s.spi,
                upto: s.upto,
            })
            .collect(),
    ))
}

fn save_sequences(path: &Path, r: &[m6t_ipsec::bits::Reservation]) -> std::io::Result<()> {
    let saved: Vec<SavedSequence> = r
        .iter()
        .map(|r| SavedSequence {
            name: r.name.clone(),
            spi: r.spi,
            upto: r.upto,
        })
        .collect();
    let text = serde_json::to_string_pretty(&saved).map_err(std::io::Error::other)?;
    write_atomically(path, text.as_bytes())
}

/// Says what IPsec reported (an exhausted SA), and reserves the next sequence numbers when
/// an outbound SA comes near the end of its reservation (every
/// [`m6t_ipsec::bits::RESERVE_STEP`] / 2 packets): saved first, then granted, so a crash can only skip numbers, never reuse them. A failed save is counted;
/// the SA stops at its reservation (counted as `ipsec_unreserved`) until a save succeeds.
pub(crate) fn ipsec_upkeep(
    ipsec: Option<&mut m6t_ipsec::Ipsec>,
    file: Option<&Path>,
    failures: &Failures,
) {
    let Some(i) = ipsec else {
        return;
    };
    while let Some(e) = i.poll_event() {
        match e {
            m6t_ipsec::IpsecEvent::Exhausted { name, spi } => tracing::error!(
                "[ipsec] SA {name} (SPI {spi:#x}) has used its last sequence number: nothing \
                 more is sent on it until it gets new keys and a new SPI (RFC 4303 section 3.3.3)"
            ),
        }
    }
    let Some(p) = file else {
        return;
    };
    if !i.wants_reservation() {
        return;
    }
    let r = i.reservations();
    match save_sequences(p, &r) {
        Ok(()) => i.reserved(&r),
        Err(e) => failures.record(
            m6t_linux::failures::Failure::StateFile,
            1,
            format_args!("[ipsec] sequence_file {}: {e}", p.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use m6t_proto::stats::Counter;

    fn c(name: &str, value: u64) -> Counter {
        Counter {
            name: name.into(),
            value,
        }
    }

    #[test]
    fn drops_are_logged_at_most_once_per_interval_with_their_counts() {
        let t0 = Instant::now();
        let mut d = DropLog::new(t0);
        assert!(!d.due(t0));
        let every = m6t_linux::failures::LOG_EVERY;
        let mut asked = 0;
        d.pass(t0 + every / 2, || {
            asked += 1;
            Vec::new()
        });
        assert_eq!(asked, 0, "counters taken only when a line is due");
        let first = [
            c("drop_no_state_for_home", 3),
            c("forwarded_to_mn", 100),
            c("ipsec_replay", 0),
        ];
        let line = d.log(t0 + every, &first).unwrap();
        assert!(line.ends_with(": drop_no_state_for_home 3"), "{line}");
        assert!(!d.due(t0 + every + every / 2));
        // Nothing new dropped: no line.
        assert_eq!(d.log(t0 + every * 2, &first), None);
        let later = [
            c("drop_no_state_for_home", 10),
            c("forwarded_to_mn", 500),
            c("ipsec_replay", 2),
            c("pcap_dropped", 1),
        ];
        let line = d.log(t0 + every * 3, &later).unwrap();
        assert!(
            line.ends_with(": drop_no_state_for_home 7, ipsec_replay 2, pcap_dropped 1"),
            "{line}"
        );
    }
}
