//! The DSMIPv6 home agent daemon: a Linux driver around [`HomeAgent`]. It owns the TUN toward
//! the home network and the tunnel-interface sockets (UDP port 4191, raw sockets for
//! IP-in-IP over IPv4 and IPv6, an IPPROTO_RAW sender and a capture of signalling with
//! extension headers); bound home addresses get a route into the TUN and a proxy ND / ARP
//! entry on the home link; the binding cache is saved to its file off the packet path.

use super::ike::IkeDriver;
use super::tif::{from_tunnel, send_signal, to_tunnel, Buffers};
use super::{
    bind_control, counters_with, io, ipsec_gauges, ipsec_upkeep, publish_metrics, serve_reports,
    shutdown, start_metrics, with_ike, with_ipsec, write_atomically, DaemonError,
};
use crate::dsmip_config::Ha;
use crate::metrics::{GaugeValue, Publisher};
use crate::status::{IpsecInfo, Report};
use m6t_linux::budget::{Exempt, SourceBudget};
use m6t_linux::caps::Capability;
use m6t_linux::control::ControlServer;
use m6t_linux::failures::{Failure, Failures};
use m6t_linux::netlink::{Netlink, MAIN_TABLE};
use m6t_linux::raw;
use m6t_linux::runtime::Runtime;
use m6t_linux::tif::{TifSockets, TifSource};
use m6t_linux::{caps, tun::Tun};
use m6t_proto::dsmip::binding_cache::Snapshot;
use m6t_proto::dsmip::home_agent::{HaEvent, HomeAgent};
use m6t_proto::dsmip::tif::DSMIP_PORT;
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a binding change waits before the cache is written: a burst of registrations
/// (a train of mobile nodes moving at once, a restart restoring thousands) costs one write,
/// and a crash loses at most the changes of this last interval.
pub const SAVE_DELAY: Duration = Duration::from_secs(1);

/// The kernel's per-source budget on the home agent's IPv4 UDP ports (4191, 4500), and the
/// senders it lets through unbudgeted: those [`HomeAgent::known_senders`] names (a binding's
/// tunnel, a bound node's authenticated ESP), so that one address flooding BUs, ESP or
/// IKE_SA_INIT costs the kernel a map lookup per datagram, not a read by the loop that also
/// carries every node's traffic.
struct Budget {
    filter: SourceBudget,
    /// What the filter's map holds.
    exempt: BTreeSet<SocketAddrV4>,
    /// The node's [`HomeAgent::senders_version`] when `exempt` was last brought in line.
    version: Option<u64>,
}

impl Budget {
    fn new(cfg: &Ha, socks: &TifSockets) -> Result<Option<Budget>, DaemonError> {
        let Some((rate, burst)) = cfg.source_limit else {
            return Ok(None);
        };
        // A binding's tunnel and its ESP mapping each.
        let peers = u32::try_from(cfg.machine.max_bindings.saturating_mul(2)).unwrap_or(u32::MAX);
        let filter = SourceBudget::new(rate, burst, peers, Exempt::Sender).map_err(io(
            "per-source budget (key `source_packet_rate`; 0 turns it off)",
        ))?;
        for s in [TifSource::Udp, TifSource::EspUdp] {
            if let Some(fd) = socks.fd(s) {
                filter.attach(&fd).map_err(io(format!(
                    "attaching the per-source budget to the {s:?} socket"
                )))?;
            }
        }
        Ok(Some(Budget {
            filter,
            exempt: BTreeSet::new(),
            version: None,
        }))
    }

    /// Brings the filter's exempt senders in line with the node's, when they changed.
    fn sync(&mut self, node: &HomeAgent, failures: &Failures) {
        if self.version == Some(node.senders_version()) {
            return;
        }
        self.version = Some(node.senders_version());
        let now: BTreeSet<SocketAddrV4> = node.known_senders().collect();
        for gone in self.exempt.difference(&now) {
            let r = self.filter.remove_sender(*gone);
            failures.check(Failure::Budget, "the per-source budget's map of senders", r);
        }
        for new in now.difference(&self.exempt) {
            let r = self.filter.add_sender(*new);
            failures.check(Failure::Budget, "the per-source budget's map of senders", r);
        }
        self.exempt = now;
    }

    /// Datagrams the filter dropped; a failed read is counted and reads as 0 this time.
    fn dropped(budget: Option<&Budget>, failures: &Failures) -> u64 {
        budget.map_or(0, |b| {
            b.filter.dropped().unwrap_or_else(|e| {
                failures.record(
                    Failure::Budget,
                    1,
                    format_args!("reading the source budget: {e}"),
                );
                0
            })
        })
    }
}

/// The home agent's event sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Packets from the home network toward home addresses.
    Tun,
    /// A tunnel-interface socket.
    Tif(TifSource),
    /// `m6t status`.
    Control,
}

fn load_snapshot(path: &Path) -> Option<Snapshot> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("ignoring binding cache {}: {e}", path.display());
            None
        }
    }
}

/// Saves the binding cache off the packet path: the loop serializes a snapshot at most
/// once per [`SAVE_DELAY`] after a change and hands the bytes to a writer thread (the
/// fsyncs take milliseconds on a loaded disk; packets do not wait for them).
struct CacheFile {
    path: PathBuf,
    dirty_since: Option<Instant>,
    tx: Option<mpsc::Sender<Vec<u8>>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl CacheFile {
    fn new(path: PathBuf, failures: Arc<Failures>) -> Result<CacheFile, DaemonError> {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let p = path.clone();
        // Writing the daemon's own file needs no capability.
        let writer = m6t_linux::caps::spawn_unprivileged("m6t-ha-save", move |dropped| {
            if let Err(e) = dropped {
                tracing::warn!("binding cache writer: {e}");
            }
            while let Ok(mut bytes) = rx.recv() {
                // Only the newest of several queued snapshots matters.
                while let Ok(newer) = rx.try_recv() {
                    bytes = newer;
                }
                let r = write_atomically(&p, &bytes);
                failures.check(
                    Failure::StateFile,
                    format_args!("saving the binding cache to {}", p.display()),
                    r,
                );
            }
        })
        .map_err(io("binding cache writer thread"))?;
        Ok(CacheFile {
            path,
            dirty_since: None,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    fn changed(&mut self, now: Instant) {
        self.dirty_since.get_or_insert(now);
    }

    /// When the next write is due, if a change waits.
    fn deadline(&self) -> Option<Instant> {
        self.dirty_since.map(|t| t + SAVE_DELAY)
    }

    fn save_if_due(&mut self, node: &HomeAgent, now: Instant, failures: &Failures) {
        if self.deadline().is_some_and(|d| d <= now) {
            self.save(node, now, failures);
        }
    }

    fn save(&mut self, node: &HomeAgent, now: Instant, failures: &Failures) {
        self.dirty_since = None;
        let r = serde_json::to_vec(&node.snapshot(now))
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tx = self.tx.as_ref().ok_or(ErrorKind::BrokenPipe)?;
                tx.send(bytes).map_err(|_| ErrorKind::BrokenPipe.into())
            });
        failures.check(
            Failure::StateFile,
            "handing the binding cache to its writer",
            r,
        );
    }

    /// The last write, at exit, waited for: a clean stop loses nothing.
    fn close(mut self, node: &HomeAgent, now: Instant, failures: &Failures) {
        self.save(node, now, failures);
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                failures.record(Failure::StateFile, 1, "the binding cache writer panicked");
            }
        }
        tracing::info!("binding cache saved to {}", self.path.display());
    }
}

/// Routes and proxy entries of bound home addresses.
struct HomeLink {
    nl: Netlink,
    tun: u32,
    link: Option<u32>,
    metric: u32,
}

impl HomeLink {
    fn apply(&self, e: &HaEvent, failures: &Failures) {
        let r = match *e {
            HaEvent::Bound { hoa, ipv4, tunnel } => {
                tracing::info!("bound {hoa} ipv4 {ipv4:?} via {tunnel:?}");
                self.add(IpAddr::V6(hoa), 128)
                    .and_then(|_| ipv4.map_or(Ok(()), |(a, l)| self.add(IpAddr::V4(a), l)))
            }
            HaEvent::Unbound { hoa, ipv4 } => {
                tracing::info!("unbound {hoa} ipv4 {ipv4:?}");
                self.del(IpAddr::V6(hoa), 128)
                    .and_then(|_| ipv4.map_or(Ok(()), |(a, l)| self.del(IpAddr::V4(a), l)))
            }
            // A mobile network: routed into the TUN, where the node picks the router's
            // tunnel (RFC 3963 section 6.5, the second way); no proxy entry, the home
            // agent is the route toward it.
            HaEvent::Routed { hoa, prefix } => {
                tracing::info!("mobile network {prefix} of {hoa} routed");
                self.nl.replace_route_ip(
                    prefix.addr(),
                    prefix.len(),
                    self.tun,
                    self.metric,
                    MAIN_TABLE,
                )
            }
            HaEvent::Unrouted { hoa, prefix } => {
                tracing::info!("mobile network {prefix} of {hoa} unrouted");
                self.nl.del_route_ip(
                    prefix.addr(),
                    prefix.len(),
                    self.tun,
                    self.metric,
                    MAIN_TABLE,
                )
            }
        };
        failures.check(Failure::Netlink, "home link", r);
    }

    fn add(&self, a: IpAddr, len: u8) -> Result<(), m6t_linux::netlink::NetlinkError> {
        self.nl
            .replace_route_ip(a, len, self.tun, self.metric, MAIN_TABLE)?;
        // Hosts on the home link look the home address up by ND / ARP: the home agent
        // answers for it (RFC 6275 section 10.4.1), then forwards into the TUN.
        match self.link {
            Some(l) if (a.is_ipv6() && len == 128) || (a.is_ipv4() && len == 32) => {
                self.nl.add_proxy(l, a)
            }
            _ => Ok(()),
        }
    }

    fn del(&self, a: IpAddr, len: u8) -> Result<(), m6t_linux::netlink::NetlinkError> {
        self.nl
            .del_route_ip(a, len, self.tun, self.metric, MAIN_TABLE)?;
        match self.link {
            Some(l) => self.nl.del_proxy(l, a),
            None => Ok(()),
        }
    }
}

fn link_index(nl: &Netlink, name: &str) -> Result<u32, DaemonError> {
    nl.links()?
        .into_iter()
        .find(|l| l.name == name)
        .map(|l| l.index)
        .ok_or_else(|| DaemonError::Io {
            what: format!("home_link {name}"),
            source: std::io::Error::new(ErrorKind::NotFound, "no such interface"),
        })
}

/// Runs the home agent until SIGINT/SIGTERM.
pub fn run(cfg: Ha) -> Result<(), DaemonError> {
    crate::status::mark_start();
    caps::check_tunnel_privileges()?;
    warn_unprotected(&cfg);
    // First: a metrics port in use stops the home agent before it changes anything.
    let metrics = start_metrics(cfg.metrics_listen, "ha", false)?;
    let stop = shutdown()?;
    let tun = Tun::open(&cfg.interface, cfg.mtu, cfg.offload)
        .map_err(io(format!("TUN interface {}", cfg.interface)))?;
    let nl = Netlink::open()?;
    let link = match &cfg.home_link {
        Some(n) => Some(link_index(&nl, n)?),
        None => None,
    };
    router_sysctls(&cfg)?;
    let mut socks = TifSockets::home_agent(cfg.address4, cfg.address6, cfg.ipsec.is_some())
        .map_err(|(what, e)| io(what)(e))?;
    if cfg.ike.is_some() {
        // IKE from mobile nodes on IPv6 care-of addresses: port 4500 of the IPv6 address
        // too, as on IPv4 (RFC 5555 section 5: 4500 whether or not a NAT is on the path;
        // see the IKE driver), answered from the address a request came to.
        let a6 = cfg.address6;
        socks
            .bind_esp_udp6(a6)
            .map_err(io(format!("UDP [{a6}]:{}", m6t_ike::endpoint::NAT_T_PORT)))?;
    }
    // The kernel's per-source budget, before the first datagram is read.
    let budget = Budget::new(&cfg, &socks)?;
    let control = bind_control(&cfg.control_socket)?;
    let mut rt = Runtime::new(&stop).map_err(io("epoll"))?;
    rt.add(&tun, Source::Tun).map_err(io("epoll"))?;
    for s in TifSource::ALL {
        if let Some(fd) = socks.fd(s) {
            rt.add(&fd, Source::Tif(s)).map_err(io("epoll"))?;
        }
    }
    rt.add(&control, Source::Control).map_err(io("epoll"))?;
    let failures = Arc::new(Failures::default());
    let file = match &cfg.state_file {
        Some(p) => Some(CacheFile::new(p.clone(), Arc::clone(&failures))?),
        None => None,
    };
    let mut node = match cfg.state_file.as_deref().and_then(load_snapshot) {
        Some(s) => {
            tracing::info!("binding cache restored: {} bindings", s.bindings.len());
            HomeAgent::restore(cfg.machine.clone(), cfg.address6, &s, Instant::now())
        }
        None => HomeAgent::new(cfg.machine.clone(), cfg.address6),
    };
    let seed = super::os_seed()?;
    if let Some(i) = super::install_ipsec(cfg.ipsec.as_ref(), &seed)? {
        node = node.with_ipsec(i);
    }
    let ike = cfg.ike.as_ref().map(|s| IkeDriver::new(s, seed));
    tracing::info!(
        "home agent up: {} {} / {} port {DSMIP_PORT}, home prefix {}",
        tun.name(),
        cfg.address6,
        cfg.address4,
        cfg.machine.home_prefix
    );
    // Everything privileged is open: keep only what the loop still needs.
    super::keep_only(
        cfg.user.as_ref(),
        &[Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW],
    )?;
    m6t_linux::notify::ready();
    let mut d = Driver {
        home: HomeLink {
            nl,
            tun: tun.index(),
            link,
            metric: cfg.route_metric,
        },
        tun,
        socks,
        rt,
        file,
        failures,
        seq_file: cfg.ipsec.as_ref().and_then(|i| i.sequence_file.clone()),
        metrics,
        ike,
        budget,
    };
    let r = d.run(&mut node, &control);
    m6t_linux::notify::stopping();
    d.stop(&node);
    tracing::info!("home agent stopped");
    r
}

/// The daemon's side of the home agent: its interfaces and sockets, the home link it keeps
/// in step with the binding cache, and the cache's file.
struct Driver {
    tun: Tun,
    socks: TifSockets,
    rt: Runtime<Source>,
    home: HomeLink,
    file: Option<CacheFile>,
    failures: Arc<Failures>,
    /// Where IPsec's outbound sequence numbers are reserved.
    seq_file: Option<PathBuf>,
    /// Where the metrics are published, when `metrics_listen` is set.
    metrics: Option<Publisher>,
    /// IKEv2, when `[ike]` keys the SAs.
    ike: Option<IkeDriver>,
    /// The kernel's per-source budget, when `source_packet_rate` is not 0.
    budget: Option<Budget>,
}

impl Driver {
    fn run(&mut self, node: &mut HomeAgent, control: &ControlServer) -> Result<(), DaemonError> {
        let mut tun_rx = self.tun.reader();
        let mut tun_tx = self.tun.writer();
        let mut bufs = Buffers::new();
        // Bindings restored from the file: their routes go in before the first packet.
        let mut next = self.after(node, Instant::now());
        next = publish_metrics(&mut self.metrics, Instant::now(), next, || {
            snapshot(
                node,
                &self.failures,
                self.ike.as_ref(),
                self.budget.as_ref(),
            )
        });
        let mut drops = super::DropLog::new(Instant::now());
        while !self.rt.stopping() {
            let ready = self.rt.wait(next).map_err(io("epoll"))?;
            let now = Instant::now();
            let (socks, failures) = (&self.socks, &*self.failures);
            let ike = &mut self.ike;
            let budget = self.budget.as_ref();
            for &source in ready {
                match source {
                    Source::Tun => to_tunnel(&mut tun_rx, socks, &mut bufs, node, failures, now)
                        .map_err(io("TUN read"))?,
                    Source::Tif(s) => from_tunnel(
                        socks,
                        s,
                        &mut bufs,
                        node,
                        &mut tun_tx,
                        ike.as_mut(),
                        failures,
                        now,
                    ),
                    Source::Control => serve_reports(control, |_| Report::HomeAgent {
                        interface: self.tun.name().to_string(),
                        bindings: node.snapshot(Instant::now()).bindings,
                        ipsec: node.ipsec().map(IpsecInfo::of),
                        start: crate::status::start(),
                        counters: with_ike(
                            with_ipsec(
                                counters_with(
                                    node.counters().snapshot(),
                                    failures,
                                    &[("drop_source_budget", Budget::dropped(budget, failures))],
                                ),
                                node.ipsec(),
                            ),
                            ike.as_ref(),
                        ),
                    }),
                }
            }
            failures.record(Failure::TunWrite, tun_tx.take_errors(), "TUN write refused");
            next = self.after(node, now);
            next = publish_metrics(&mut self.metrics, now, next, || {
                snapshot(
                    node,
                    &self.failures,
                    self.ike.as_ref(),
                    self.budget.as_ref(),
                )
            });
            drops.pass(now, || {
                snapshot(
                    node,
                    &self.failures,
                    self.ike.as_ref(),
                    self.budget.as_ref(),
                )
                .counters
            });
        }
        Ok(())
    }

    /// What the node asked once the sources are handled: lifetimes that ended, BAs to
    /// send, routes and proxy entries to change, and a save of the cache when one is due.
    /// Returns when the loop must wake next (a binding's end or a pending save).
    fn after(&mut self, node: &mut HomeAgent, now: Instant) -> Option<Instant> {
        ipsec_upkeep(node.ipsec_mut(), self.seq_file.as_deref(), &self.failures);
        if let Some(ike) = self.ike.as_mut() {
            // The home agent only answers BUs: nothing waits for its SAs.
            let _ = ike.drive(now, &self.socks, node.ipsec_mut(), &self.failures);
        }
        let mut next = earliest(
            node.poll_timeout(),
            self.ike.as_ref().and_then(IkeDriver::poll_timeout),
        );
        if next.is_some_and(|t| t <= now) {
            node.handle_timeout(now);
            next = earliest(
                node.poll_timeout(),
                self.ike.as_ref().and_then(IkeDriver::poll_timeout),
            );
        }
        // Routes first: the BA of a node returning home (RFC 6275 section 11.5.5) goes to
        // its home address on the home link, not into the TUN whose route just ended.
        while let Some(e) = node.poll_event() {
            self.home.apply(&e, &self.failures);
            if let Some(f) = self.file.as_mut() {
                f.changed(now);
            }
        }
        while let Some(t) = node.poll_transmit() {
            let r = send_signal(&self.socks, &t);
            self.failures.check(Failure::SignalSend, "sending a BA", r);
        }
        if let Some(b) = self.budget.as_mut() {
            b.sync(node, &self.failures);
        }
        let Some(f) = self.file.as_mut() else {
            return next;
        };
        f.save_if_due(node, now, &self.failures);
        earliest(next, f.deadline())
    }

    /// The cache is saved with lifetimes left, and the routes stay consistent with it: a
    /// restarted home agent installs them again from the file.
    fn stop(&mut self, node: &HomeAgent) {
        let now = Instant::now();
        if let Some(f) = self.file.take() {
            f.close(node, now, &self.failures);
        }
        for b in node.snapshot(now).bindings {
            for prefix in &b.mnp {
                let e = HaEvent::Unrouted {
                    hoa: b.hoa,
                    prefix: *prefix,
                };
                self.home.apply(&e, &self.failures);
            }
            let unbound = HaEvent::Unbound {
                hoa: b.hoa,
                ipv4: b.ipv4,
            };
            self.home.apply(&unbound, &self.failures);
        }
    }
}

/// What the metrics show: the counters of `m6t status`, the bindings by tunnel and the
/// IPsec SAs.
fn snapshot(
    node: &HomeAgent,
    failures: &Failures,
    ike: Option<&IkeDriver>,
    budget: Option<&Budget>,
) -> crate::metrics::Snapshot {
    use m6t_proto::dsmip::binding_cache::Tunnel;
    let mut by = [0usize; 4];
    for b in node.snapshot(Instant::now()).bindings {
        by[match b.tunnel {
            Tunnel::Ipv6 { .. } => 0,
            Tunnel::Ipv4 { .. } => 1,
            Tunnel::Udp { .. } => 2,
            Tunnel::Tlv { .. } => 3,
        }] += 1;
    }
    const HELP: &str = "Bindings in the cache by tunnel (ipv6, ip-in-ip, udp, udp-tlv, as m6t \
                        status names them)";
    let mut gauges: Vec<GaugeValue> = ["ipv6", "ip-in-ip", "udp", "udp-tlv"]
        .into_iter()
        .zip(by)
        .map(|(t, n)| GaugeValue::labelled("bindings", HELP, "tunnel", t, n as f64))
        .collect();
    gauges.extend(ipsec_gauges(node.ipsec()));
    crate::metrics::Snapshot {
        counters: with_ike(
            with_ipsec(
                counters_with(
                    node.counters().snapshot(),
                    failures,
                    &[("drop_source_budget", Budget::dropped(budget, failures))],
                ),
                node.ipsec(),
            ),
            ike,
        ),
        gauges,
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn warn_unprotected(cfg: &Ha) {
    if cfg.machine.accept_unprotected {
        tracing::warn!(
            "!!! accept_unprotected = true: Binding Updates WITHOUT IPsec ESP are ACCEPTED. \
             Anyone who can send a packet to this home agent can redirect a home address's \
             traffic. RFC 5555 section 5 requires ESP; use this only in a lab. !!!"
        );
    } else if cfg.ipsec.is_some() {
        tracing::info!("Binding Updates without ESP are discarded (RFC 4877 section 4.1)");
    } else {
        tracing::info!(
            "Binding Updates without ESP are refused (status 129): configure [ipsec] (see \
             the README), or set accept_unprotected = true in a lab"
        );
    }
}

/// A home agent is a router between its home link and the tunnels.
fn router_sysctls(cfg: &Ha) -> Result<(), DaemonError> {
    for (p, v) in [
        ("net/ipv6/conf/all/forwarding", "1"),
        ("net/ipv4/ip_forward", "1"),
        (&format!("net/ipv4/conf/{}/rp_filter", cfg.interface), "0"),
    ] {
        raw::sysctl(p, v).map_err(io(format!("sysctl {p}")))?;
    }
    if let Some(n) = &cfg.home_link {
        let p = format!("net/ipv6/conf/{n}/proxy_ndp");
        raw::sysctl(&p, "1").map_err(io(format!("sysctl {p}")))?;
    }
    Ok(())
}
