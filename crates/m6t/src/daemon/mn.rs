//! The DSMIPv6 mobile node daemon: a Linux driver around [`MobileNode`]. Its TUN carries the
//! home addresses (applications bind to them and keep their sessions across moves); "from
//! <home address>" rules send their traffic to a table whose default routes lead into the
//! TUN. Movement detection reads addresses and links from netlink notifications on the
//! configured interfaces, in preference order (UMIP's MnIfPreference), an interface marked
//! `tunnel` being used as it is (UMIP's "Tunnel enabled", e.g. the m6t client's m6t0).

use super::ike::IkeDriver;
use super::tif::{from_tunnel, send_signal, to_tunnel, Buffers};
use super::{
    bind_control, counters_with, io, ipsec_gauges, ipsec_upkeep, publish_metrics, serve_reports,
    shutdown, start_metrics, with_ike, with_ipsec, DaemonError,
};
use crate::dsmip_config::{HaSource, Mn, MnInterface};
use crate::metrics::{GaugeValue, Publisher};
use crate::status::{failing_why, IpsecInfo, MnInfo, Report, FAILING_AFTER};
use m6t_linux::caps::Capability;
use m6t_linux::control::ControlServer;
use m6t_linux::failures::{Failure, Failures};
use m6t_linux::netlink::{Monitor, Netlink, RuleSelector, MAIN_TABLE};
use m6t_linux::runtime::{Runtime, Shutdown};
use m6t_linux::tif::{TifSockets, TifSource, RAW_PROTOCOLS};
use m6t_linux::udp::{routable_by, route_source};
use m6t_linux::{caps, raw, tun::Tun};
use m6t_proto::dsmip::mobile_node::{MnEvent, MobileNode};
use m6t_proto::dsmip::update_list::{Coa, Registration, TunnelMode};
use m6t_proto::dsmip::Transmit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// The mobile node's event sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Packets from applications on the home addresses.
    Tun,
    /// Link, address and route notifications (movement detection).
    Netlink,
    /// `m6t status`.
    Control,
    /// A tunnel-interface socket.
    Tif(TifSource),
}

/// Registers the UDP sockets under their tokens again after one was bound, replaced or
/// promoted (all removed first: a promoted descriptor moves from one token to another).
fn sync_sources(rt: &mut Runtime<Source>, socks: &TifSockets) -> std::io::Result<()> {
    let udp = [
        TifSource::Udp,
        TifSource::UdpNext,
        TifSource::EspUdp,
        TifSource::EspUdp6,
    ];
    for s in udp {
        rt.remove(Source::Tif(s))?;
    }
    for s in udp {
        if let Some(fd) = socks.fd(s) {
            rt.add(&fd, Source::Tif(s))?;
        }
    }
    Ok(())
}

fn global6(a: Ipv6Addr) -> bool {
    let s = a.segments()[0];
    !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || (s & 0xffc0) == 0xfe80)
}

/// Care-of address candidates: the most preferred usable IPv6 and IPv4 addresses on the
/// configured interfaces whose route toward the home agent leaves by that interface
/// (RFC 5555 section 4.4.1 then prefers IPv6).
fn candidates(
    nl: &Netlink,
    ifs: &[MnInterface],
    cfg: &Mn,
    v4hoa: Option<Ipv4Addr>,
) -> (Option<Ipv6Addr>, Option<Ipv4Addr>) {
    let (Ok(links), Ok(addrs)) = (nl.links(), nl.addresses()) else {
        return (None, None);
    };
    let ha6 = IpAddr::V6(cfg.machine.ha6);
    let ha4 = IpAddr::V4(cfg.machine.ha4);
    let mut v6 = None;
    let mut v4 = None;
    for i in ifs {
        let Some(l) = links.iter().find(|l| l.name == i.name) else {
            continue;
        };
        // A tunnel interface (TUN) may not report a carrier the way a NIC does.
        if !l.up && !i.tunnel {
            continue;
        }
        for a in addrs.iter().filter(|a| a.index == l.index && a.usable) {
            match a.addr {
                IpAddr::V6(x)
                    if v6.is_none()
                        && global6(x)
                        && x != cfg.machine.hoa
                        && routable_by(a.addr, &i.name, ha6) =>
                {
                    v6 = Some(x)
                }
                IpAddr::V4(x)
                    if v4.is_none()
                        && !x.is_loopback()
                        && Some(x) != v4hoa
                        && routable_by(a.addr, &i.name, ha4) =>
                {
                    v4 = Some(x)
                }
                _ => {}
            }
        }
    }
    (v6, v4)
}

/// The home link (RFC 6275 section 11.5.5): the first configured interface, up, with an
/// address inside the home prefix other than the home address itself (which the node puts
/// there while at home): its index and name.
fn home_link(
    nl: &Netlink,
    ifs: &[MnInterface],
    prefix: m6t_wire::Ipv6Prefix,
    hoa: Ipv6Addr,
) -> Option<(u32, String)> {
    let (Ok(links), Ok(addrs)) = (nl.links(), nl.addresses()) else {
        return None;
    };
    ifs.iter().filter(|i| !i.tunnel).find_map(|i| {
        let l = links.iter().find(|l| l.name == i.name && l.up)?;
        addrs
            .iter()
            .any(|a| {
                a.index == l.index
                    && a.usable
                    && matches!(a.addr, IpAddr::V6(x) if x != hoa && prefix.contains(x))
            })
            .then(|| (l.index, i.name.clone()))
    })
}

/// What a Binding Acknowledgement's refusal status means (RFC 6275 section 6.1.8, RFC 3963
/// section 6.2, RFC 5555 section 4.5), for the log.
fn refusal_name(st: u8) -> &'static str {
    match st {
        128 => "reason unspecified",
        129 => "administratively prohibited: the BU was not protected by ESP",
        130 => "insufficient resources",
        131 => "home registration not supported",
        132 => "not home subnet",
        133 => "not home agent for this mobile node",
        134 => "duplicate address detection failed",
        135 => "sequence number out of window",
        139 => "registration type change disallowed: a router binding cannot become a host's",
        140 => {
            "mobile router operation not permitted: not a router in the home agent's configuration"
        }
        141 => "invalid prefix",
        142 => "not authorized for prefix: outside the home agent's mobile_network_prefixes",
        143 => "forwarding setup failed: the home agent knows no prefix for this router",
        144 => "forcing UDP encapsulation refused",
        _ => "see RFC 6275 section 6.1.8",
    }
}

fn mode_name(m: TunnelMode) -> &'static str {
    match m {
        TunnelMode::Ipv6 => "ipv6",
        TunnelMode::Ipv4 => "ip-in-ip",
        TunnelMode::Udp => "udp",
        TunnelMode::Tlv => "udp-tlv",
    }
}

/// Finds the home agent through DNS, retrying every 2 s (the mobile node may start before
/// it has a network) until an answer or a stop signal.
fn discover_ha(cfg: &mut Mn, stop: &Shutdown) -> bool {
    let HaSource::Dns(q, servers) = &cfg.ha else {
        return true;
    };
    loop {
        match m6t_linux::dns::discover(q, servers) {
            Ok((a6, a4)) => {
                tracing::info!("home agent {q:?} found in DNS: {a6} / {a4}");
                cfg.machine.ha6 = a6;
                cfg.machine.ha4 = a4;
                return true;
            }
            Err(e) => tracing::warn!("home agent discovery: {e}; retrying in 2 s"),
        }
        for _ in 0..20 {
            if stop.is_set() {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// The daemon's side of the mobile node: its interfaces and sockets, and what it installed
/// for the registration the node reported.
struct Driver {
    cfg: Mn,
    tun: Tun,
    nl: Netlink,
    socks: TifSockets,
    rt: Runtime<Source>,
    failures: Failures,
    info: MnInfo,
    /// The IPv4 home address installed on the TUN, with its source rule.
    v4hoa: Option<Ipv4Addr>,
    /// Whether `routes` are in the main table.
    routes_in: bool,
    /// The home link the node is on (index, name), when at home.
    home: Option<(u32, String)>,
    /// Where the metrics are published, when `metrics_listen` is set.
    metrics: Option<Publisher>,
    /// IKEv2, when `[ike]` keys the SAs.
    ike: Option<IkeDriver>,
    /// The IPv4 care-of address movement detection found last.
    v4_candidate: Option<Ipv4Addr>,
    /// The care-of address the IKE SA runs from.
    ike_from: Option<IpAddr>,
    /// The source addresses the kernel's route lookups pick toward the home agent (IPv6,
    /// IPv4) at the last movement check: which path a BU takes.
    paths: (Option<IpAddr>, Option<IpAddr>),
}

/// Runs the mobile node until SIGINT/SIGTERM.
pub fn run(mut cfg: Mn) -> Result<(), DaemonError> {
    crate::status::mark_start();
    caps::check_tunnel_privileges()?;
    // First: a metrics port in use stops the node before it changes anything.
    let metrics = start_metrics(cfg.metrics_listen, "mn", true)?;
    let stop = shutdown()?;
    if !discover_ha(&mut cfg, &stop) {
        return Ok(());
    }
    let tun = Tun::open(&cfg.interface, cfg.mtu, cfg.offload)
        .map_err(io(format!("TUN interface {}", cfg.interface)))?;
    let nl = Netlink::open()?;
    let hoa = cfg.machine.hoa;
    home_routing(&nl, &tun, &cfg)?;
    if cfg.machine.router {
        mobile_network_routing(&nl, &cfg)?;
    }
    let monitor = Monitor::open_dual().map_err(io("netlink notifications"))?;
    let socks = TifSockets::mobile_node(cfg.ipsec.is_some()).map_err(|(what, e)| io(what)(e))?;
    let control = bind_control(&cfg.control_socket)?;
    let mut rt = Runtime::new(&stop).map_err(io("epoll"))?;
    rt.add(&tun, Source::Tun).map_err(io("epoll"))?;
    rt.add(&monitor, Source::Netlink).map_err(io("epoll"))?;
    rt.add(&control, Source::Control).map_err(io("epoll"))?;
    for s in TifSource::ALL {
        if let Some(fd) = socks.fd(s) {
            rt.add(&fd, Source::Tif(s)).map_err(io("epoll"))?;
        }
    }
    // A random first sequence number; a restarted MN resynchronises on status 135.
    let seed = super::os_seed()?;
    let mut node = MobileNode::new(cfg.machine.clone(), u16::from_be_bytes([seed[0], seed[1]]));
    if let Some(i) = super::install_ipsec(cfg.ipsec.as_ref(), &seed)? {
        node = node.with_ipsec(i).with_bu_detection(cfg.bu_detection);
    }
    let ike = cfg.ike.as_ref().map(|s| IkeDriver::new(s, seed));
    tracing::info!("mobile node up: {} home address {hoa}", tun.name());
    // Everything privileged is open: keep only what the loop still needs.
    super::keep_only(
        cfg.user.as_ref(),
        &[Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW],
    )?;
    m6t_linux::notify::ready();
    let mut d = Driver {
        info: MnInfo {
            home_address: hoa.to_string(),
            ..MnInfo::default()
        },
        cfg,
        tun,
        nl,
        socks,
        rt,
        failures: Failures::default(),
        v4hoa: None,
        routes_in: false,
        home: None,
        metrics,
        ike,
        v4_candidate: None,
        paths: (None, None),
        ike_from: None,
    };
    let r = d.run(&mut node, monitor, &control);
    m6t_linux::notify::stopping();
    d.cleanup();
    tracing::info!("mobile node stopped");
    r
}

/// What the metrics show: the counters of `m6t status` with the registrations accepted,
/// whether the node is registered, and the IPsec SAs.
fn snapshot(
    node: &MobileNode,
    info: &MnInfo,
    failures: &Failures,
    ike: Option<&IkeDriver>,
) -> crate::metrics::Snapshot {
    let registered = info.coa.is_some() && info.unanswered_bus < FAILING_AFTER;
    let mut gauges = vec![GaugeValue::plain(
        "registered",
        "1 when the home agent accepted the current care-of address and the node's \
         registration is not failing",
        if registered { 1.0 } else { 0.0 },
    )];
    gauges.extend(ipsec_gauges(node.ipsec()));
    let mut counters = with_ike(
        with_ipsec(
            counters_with(node.counters().snapshot(), failures, &[]),
            node.ipsec(),
        ),
        ike,
    );
    counters.push(m6t_proto::stats::Counter {
        name: "registrations".into(),
        value: info.registrations,
    });
    crate::metrics::Snapshot { counters, gauges }
}

/// The home address on the TUN, and "from <home address>" into the tunnel's table whatever
/// the main table says.
fn home_routing(nl: &Netlink, tun: &Tun, cfg: &Mn) -> Result<(), DaemonError> {
    let hoa = cfg.machine.hoa;
    nl.add_address(tun.index(), hoa, 128)?;
    let p = format!("net/ipv4/conf/{}/rp_filter", cfg.interface);
    raw::sysctl(&p, "0").map_err(io(format!("sysctl {p}")))?;
    nl.add_source_rule(IpAddr::V6(hoa), cfg.table, cfg.rule_priority)?;
    for default in [
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    ] {
        nl.replace_route_ip(default, 0, tun.index(), 1024, cfg.table)?;
    }
    Ok(())
}

/// The policy rules of a mobile router's mobile network: "from <prefix>" into the tunnel's
/// table (RFC 3963 section 5.5: packets from the mobile network are reverse-tunnelled),
/// after "to <prefix>" in the main table, so that traffic inside the mobile network, and
/// what comes out of the tunnel for it, stays on its ingress link.
fn mnp_rules(cfg: &Mn) -> Vec<(RuleSelector, u32, u32)> {
    let prio = cfg.rule_priority;
    cfg.machine
        .mobile_network
        .iter()
        .flat_map(|p| {
            [
                (
                    RuleSelector::To(p.addr(), p.len()),
                    MAIN_TABLE,
                    prio.saturating_sub(1),
                ),
                (RuleSelector::From(p.addr(), p.len()), cfg.table, prio),
            ]
        })
        .collect()
}

/// A mobile router forwards between its egress (the tunnel) and its ingress links: IPv6
/// and IPv4 forwarding on, and router advertisements still taken on the care-of
/// interfaces (accept_ra 2: a forwarding interface ignores them otherwise, and movement
/// detection needs them).
fn mobile_network_routing(nl: &Netlink, cfg: &Mn) -> Result<(), DaemonError> {
    for (p, v) in [
        ("net/ipv6/conf/all/forwarding", "1"),
        ("net/ipv4/ip_forward", "1"),
    ] {
        raw::sysctl(p, v).map_err(io(format!("sysctl {p}")))?;
    }
    for i in cfg.interfaces.iter().filter(|i| !i.tunnel) {
        let p = format!("net/ipv6/conf/{}/accept_ra", i.name);
        // An interface that appears later keeps the kernel's default: said, not fatal.
        if let Err(e) = raw::sysctl(&p, "2") {
            tracing::warn!("sysctl {p}: {e}");
        }
    }
    for (sel, table, prio) in mnp_rules(cfg) {
        nl.add_rule(sel, table, prio)?;
    }
    tracing::info!(
        "mobile router for {}",
        cfg.machine
            .mobile_network
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

impl Driver {
    fn run(
        &mut self,
        node: &mut MobileNode,
        mut monitor: Monitor,
        control: &ControlServer,
    ) -> Result<(), DaemonError> {
        let mut tun_rx = self.tun.reader();
        let mut tun_tx = self.tun.writer();
        let mut bufs = Buffers::new();
        let mut ready = Vec::new();
        let now = Instant::now();
        self.movement(node, now);
        let mut next = self.after(node, now);
        next = publish_metrics(&mut self.metrics, now, next, || {
            snapshot(node, &self.info, &self.failures, self.ike.as_ref())
        });
        let mut drops = super::DropLog::new(now);
        while !self.rt.stopping() {
            ready.clear();
            ready.extend_from_slice(self.rt.wait(next).map_err(io("epoll"))?);
            let now = Instant::now();
            for &source in &ready {
                match source {
                    Source::Netlink => {
                        if monitor.drain().any() {
                            self.movement(node, now);
                        }
                    }
                    Source::Tun => to_tunnel(
                        &mut tun_rx,
                        &self.socks,
                        &mut bufs,
                        node,
                        &self.failures,
                        now,
                    )
                    .map_err(io("TUN read"))?,
                    Source::Tif(s) => from_tunnel(
                        &self.socks,
                        s,
                        &mut bufs,
                        node,
                        &mut tun_tx,
                        self.ike.as_mut(),
                        &self.failures,
                        now,
                    ),
                    Source::Control => serve_reports(control, |_| Report::MobileNode {
                        interface: self.tun.name().to_string(),
                        mn: self.info.clone(),
                        ipsec: node.ipsec().map(IpsecInfo::of),
                        start: crate::status::start(),
                        counters: with_ike(
                            with_ipsec(
                                counters_with(node.counters().snapshot(), &self.failures, &[]),
                                node.ipsec(),
                            ),
                            self.ike.as_ref(),
                        ),
                    }),
                }
            }
            self.failures
                .record(Failure::TunWrite, tun_tx.take_errors(), "TUN write refused");
            // Right after the inputs, before sleeping again: a BU the node queued leaves
            // now, so the registration time it reports is the one on the wire.
            next = self.after(node, now);
            next = publish_metrics(&mut self.metrics, now, next, || {
                snapshot(node, &self.info, &self.failures, self.ike.as_ref())
            });
            drops.pass(now, || {
                snapshot(node, &self.info, &self.failures, self.ike.as_ref()).counters
            });
        }
        Ok(())
    }

    /// Movement detection: the home link, and the care-of addresses the interfaces offer
    /// now.
    fn movement(&mut self, node: &mut MobileNode, now: Instant) {
        let home = home_link(
            &self.nl,
            &self.cfg.interfaces,
            self.cfg.home_prefix,
            self.cfg.machine.hoa,
        );
        if home.as_ref().map(|h| h.0) != self.home.as_ref().map(|h| h.0) {
            self.set_home(node, now, home);
        }
        let (v6, v4) = candidates(&self.nl, &self.cfg.interfaces, &self.cfg, self.v4hoa);
        let same = (v6.map(|a| a.to_string()), v4.map(|a| a.to_string()));
        let paths = (
            route_source(IpAddr::V6(self.cfg.machine.ha6)),
            route_source(IpAddr::V4(self.cfg.machine.ha4)),
        );
        if same == self.info.candidates && paths != self.paths {
            // The same care-of addresses, but the route toward the home agent changed: an
            // IPv6 address that appeared before its default route sent the BU by another
            // interface's route (an m6t tunnel's), where it was lost. Routes elsewhere (a
            // mobile network's, the home routes, the other family's) leave an outstanding
            // BU alone.
            node.paths_changed(now, paths.0 != self.paths.0, paths.1 != self.paths.1);
        }
        self.paths = paths;
        self.info.candidates = same;
        self.v4_candidate = v4;
        node.handle_coas(now, v6, v4);
        self.ike_follow(node, now, true);
    }

    /// Where the IKE SA runs from (RFC 4877 section 4): the care-of address the node
    /// registers, IPv6 (a native network, or an m6t tunnel as the care-of interface) or
    /// IPv4, over UDP 4500 (RFC 5555 section 5) from the socket of that family; at home,
    /// the IPv4 address movement detection found, as before a care-of address.
    fn ike_coa(&self, node: &MobileNode) -> Option<IpAddr> {
        match node.care_of() {
            Some(Coa::V6(a)) if a != self.cfg.machine.hoa => Some(IpAddr::V6(a)),
            Some(Coa::V4(a)) => Some(IpAddr::V4(a)),
            _ => self.v4_candidate.map(IpAddr::V4),
        }
    }

    /// Moves the IKE SA to the care-of address the node registers: after movement
    /// detection (`always`: the socket is bound again if it was lost), and whenever the
    /// node's choice changes on its own (an IPv6 care-of address given up for the IPv4 one,
    /// RFC 5555 section 4.4.1).
    fn ike_follow(&mut self, node: &MobileNode, now: Instant, always: bool) {
        if self.ike.is_none() {
            return;
        }
        let Some(coa) = self.ike_coa(node) else {
            return;
        };
        if !always && self.ike_from == Some(coa) {
            return;
        }
        let ha = match coa {
            IpAddr::V4(_) => IpAddr::V4(self.cfg.machine.ha4),
            IpAddr::V6(_) => IpAddr::V6(self.cfg.machine.ha6),
        };
        let res = match coa {
            IpAddr::V4(a) => self.socks.bind_esp_udp(a),
            IpAddr::V6(a) => self.socks.bind_esp_udp6(a),
        }
        .and_then(|changed| {
            if changed {
                sync_sources(&mut self.rt, &self.socks)
            } else {
                Ok(())
            }
        });
        self.failures
            .check(Failure::UdpSend, format_args!("UDP 4500 on {coa}"), res);
        self.ike_from = Some(coa);
        if let Some(ike) = self.ike.as_mut() {
            ike.attach(now, coa, ha);
        }
    }

    /// Coming home (RFC 6275 section 11.5.5): the home address leaves the TUN (and its rule
    /// into the tunnel's table, the extra routes, the IPv4 home address) for the home link,
    /// without duplicate address detection, so that the node answers for it there when the
    /// home agent stops; then the deregistration BU leaves from it over the home link.
    /// Leaving home: back onto the TUN with its rule, and a registration anew.
    fn set_home(&mut self, node: &mut MobileNode, now: Instant, home: Option<(u32, String)>) {
        let hoa = self.cfg.machine.hoa;
        let (tun, table, prio) = (self.tun.index(), self.cfg.table, self.cfg.rule_priority);
        if let Some((idx, name)) = self.home.take() {
            let r = self.nl.del_address(idx, hoa);
            self.failures
                .check(Failure::Netlink, format_args!("home address off {name}"), r);
            tracing::info!("left the home link {name}");
        }
        match &home {
            Some((idx, name)) => {
                let r = self
                    .nl
                    .del_source_rule(IpAddr::V6(hoa), table, prio)
                    .and_then(|()| self.nl.del_address(tun, hoa))
                    .and_then(|()| self.nl.add_address(*idx, hoa, self.cfg.home_prefix.len()));
                self.failures.check(
                    Failure::Netlink,
                    format_args!("home address onto {name}"),
                    r,
                );
                if self.routes_in {
                    for (a, l) in &self.cfg.routes {
                        let r = self.nl.del_route_ip(*a, *l, tun, 1024, MAIN_TABLE);
                        self.failures
                            .check(Failure::Netlink, format_args!("route {a}/{l}"), r);
                    }
                    self.routes_in = false;
                }
                self.ipv4_home_address(None);
                tracing::info!("home link {name}: deregistering from {hoa}");
                node.handle_home(now, true);
            }
            None => {
                let r = self
                    .nl
                    .add_address(tun, hoa, 128)
                    .and_then(|()| self.nl.add_source_rule(IpAddr::V6(hoa), table, prio));
                self.failures
                    .check(Failure::Netlink, "home address back onto the TUN", r);
                node.handle_home(now, false);
            }
        }
        self.info.home_link = home.as_ref().map(|h| h.1.clone());
        self.home = home;
    }

    /// What the node asked: timers, BUs to send, registrations to install. Returns the
    /// node's next deadline.
    fn after(&mut self, node: &mut MobileNode, now: Instant) -> Option<Instant> {
        let seq_file = self
            .cfg
            .ipsec
            .as_ref()
            .and_then(|i| i.sequence_file.as_deref());
        ipsec_upkeep(node.ipsec_mut(), seq_file, &self.failures);
        self.ike_follow(node, now, false);
        if let Some(ike) = self.ike.as_mut() {
            if ike.drive(now, &self.socks, node.ipsec_mut(), &self.failures) {
                node.signalling_keyed(now);
            }
        }
        let ike_next = self.ike.as_ref().and_then(IkeDriver::poll_timeout);
        let mut next = node.poll_timeout();
        if next.is_some_and(|t| t <= now) {
            node.handle_timeout(now);
            next = node.poll_timeout();
        }
        let next = [next, ike_next].into_iter().flatten().min();
        while let Some(t) = node.poll_transmit() {
            self.transmit(&t);
        }
        let n = node.unanswered_bus();
        if n != self.info.unanswered_bus {
            self.info.unanswered_bus = n;
            // Said once when it starts failing, then every ten more BUs.
            if n == FAILING_AFTER || (n > FAILING_AFTER && (n - FAILING_AFTER) % 10 == 0) {
                tracing::warn!(
                    "registration failing: {}",
                    failing_why(n, node.ipsec().is_some())
                );
            }
        }
        self.info.at_home = node.at_home();
        let refusal = node.last_refusal();
        if refusal != self.info.last_refusal {
            if let Some(st) = refusal {
                tracing::warn!(
                    "the home agent refused the registration: status {st} ({}); retrying with \
                     backoff",
                    refusal_name(st)
                );
            }
            self.info.last_refusal = refusal;
        }
        while let Some(e) = node.poll_event() {
            match e {
                MnEvent::Registered { registration, took } => {
                    self.registered(&registration, took);
                    self.size_home_interface(node, &registration);
                }
                MnEvent::Unregistered => {
                    tracing::info!("no registration");
                    self.info.coa = None;
                    self.info.mode = None;
                }
            }
        }
        next
    }

    /// Sends a BU from its care-of address (a new IPv4 one gets a new UDP socket).
    fn transmit(&mut self, t: &Transmit) {
        let r = self
            .source_for(t)
            .and_then(|()| send_signal(&self.socks, t));
        self.failures.check(Failure::SignalSend, "sending a BU", r);
    }

    /// A BU inside UDP leaves from its IPv4 care-of address: a new one gets a new socket
    /// (so the NAT makes a new mapping), registered in place of the old one.
    fn source_for(&mut self, t: &Transmit) -> std::io::Result<()> {
        let changed = match t {
            Transmit::Udp {
                from: Some(from), ..
            } => self.socks.bind_udp(*from)?,
            Transmit::EspUdp {
                from: Some(from), ..
            } => self.socks.bind_esp_udp(*from)?,
            _ => false,
        };
        if changed {
            self.sync_udp_sources()?;
        }
        Ok(())
    }

    /// Registers the UDP sockets under their tokens again after one was bound, replaced or
    /// promoted (all removed first: a promoted descriptor moves from one token to another).
    fn sync_udp_sources(&mut self) -> std::io::Result<()> {
        sync_sources(&mut self.rt, &self.socks)
    }

    /// Sizes the home-address interface's MTU to the registered tunnel: the care-of
    /// interface's MTU less the tunnel's and ESP's overhead (`MobileNode::inner_mtu`), so
    /// that a full-size packet from the home address (a TCP segment) leaves in one outer
    /// packet, not two fragments; over m6t0 with ESP that is below the configured 1 400.
    fn size_home_interface(&mut self, node: &MobileNode, r: &Registration) {
        let coa = match r.coa {
            Coa::V6(a) => IpAddr::V6(a),
            Coa::V4(a) => IpAddr::V4(a),
        };
        let link = self.nl.addresses().ok().and_then(|addrs| {
            let index = addrs.iter().find(|a| a.addr == coa)?.index;
            let links = self.nl.links().ok()?;
            links.into_iter().find(|l| l.index == index)
        });
        let Some(link) = link else { return };
        let mtu = node.inner_mtu(r.mode, link.mtu, self.cfg.mtu);
        if self.info.mtu.unwrap_or(self.cfg.mtu) != mtu {
            let res = self.nl.set_mtu(self.tun.index(), u32::from(mtu));
            let what = format_args!("MTU of {}", self.tun.name());
            if self.failures.check(Failure::Netlink, what, res).is_some() {
                tracing::info!(
                    "{} MTU {mtu}: {} has {} less the tunnel's overhead",
                    self.tun.name(),
                    link.name,
                    link.mtu
                );
            } else {
                return;
            }
        }
        self.info.mtu = Some(mtu);
    }

    /// A registration the home agent accepted: the tunnel's sockets, the IPv4 home
    /// address, the extra routes, and the status.
    fn registered(&mut self, r: &Registration, took: Duration) {
        let coa = match r.coa {
            Coa::V6(a) => IpAddr::V6(a),
            Coa::V4(a) => IpAddr::V4(a),
        };
        if let (Some(ike), false) = (self.ike.as_mut(), r.key_management) {
            ike.home_agent_without_k(Instant::now(), coa);
        }
        tracing::info!(
            "registered care-of {coa} tunnel {} lifetime {}s ipv4 home {:?} in {:.2} ms",
            mode_name(r.mode),
            r.lifetime.as_secs(),
            r.ipv4_hoa,
            took.as_secs_f64() * 1e3
        );
        // Payload in UDP now leaves from the socket the accepted BU used (RFC 5555 section
        // 5.1: the old one served until this BA).
        if let Coa::V4(a) = r.coa {
            let res = self.socks.promote_udp(a).and_then(|changed| {
                if changed {
                    self.sync_udp_sources()
                } else {
                    Ok(())
                }
            });
            self.failures
                .check(Failure::UdpSend, format_args!("UDP sockets on {a}"), res);
        }
        // IP-in-IP leaves from the registered care-of address.
        if matches!(r.mode, TunnelMode::Ipv6 | TunnelMode::Ipv4) {
            let res = self
                .socks
                .bind_ip_in_ip(coa)
                .and_then(|()| self.register_ip_in_ip(coa));
            self.failures.check(
                Failure::RawSend,
                format_args!("IP-in-IP sockets on {coa}"),
                res,
            );
        }
        if r.ipv4_hoa != self.v4hoa {
            self.ipv4_home_address(r.ipv4_hoa);
        }
        if !self.routes_in {
            for (a, l) in &self.cfg.routes {
                let res = self
                    .nl
                    .replace_route_ip(*a, *l, self.tun.index(), 1024, MAIN_TABLE);
                self.failures
                    .check(Failure::Netlink, format_args!("route {a}/{l}"), res);
            }
            self.routes_in = true;
        }
        let i = &mut self.info;
        i.coa = Some(coa.to_string());
        i.mode = Some(mode_name(r.mode).into());
        i.lifetime_s = r.lifetime.as_secs();
        i.ipv4_home_address = r.ipv4_hoa.map(|a| a.to_string());
        i.registrations += 1;
        i.last_registration_ms = Some(took.as_secs_f64() * 1e3);
        if let Some(p) = &self.metrics {
            p.metrics().observe_registration(took);
        }
    }

    fn register_ip_in_ip(&mut self, coa: IpAddr) -> std::io::Result<()> {
        for p in RAW_PROTOCOLS {
            let s = match coa {
                IpAddr::V4(_) => TifSource::Ipv4(p),
                IpAddr::V6(_) => TifSource::Ipv6(p),
            };
            if let Some(fd) = self.socks.fd(s) {
                self.rt.replace(&fd, Source::Tif(s))?;
            }
        }
        Ok(())
    }

    /// Moves the IPv4 home address on the TUN (and its source rule) to `new`.
    fn ipv4_home_address(&mut self, new: Option<Ipv4Addr>) {
        let (idx, table, prio) = (self.tun.index(), self.cfg.table, self.cfg.rule_priority);
        if let Some(old) = self.v4hoa {
            let r = self
                .nl
                .del_source_rule(IpAddr::V4(old), table, prio)
                .and_then(|()| self.nl.del_ip(idx, IpAddr::V4(old)));
            self.failures.check(
                Failure::Netlink,
                format_args!("removing IPv4 home address {old}"),
                r,
            );
        }
        if let Some(a) = new {
            let r = self
                .nl
                .add_ip(idx, IpAddr::V4(a), 32)
                .and_then(|()| self.nl.add_source_rule(IpAddr::V4(a), table, prio));
            self.failures.check(
                Failure::Netlink,
                format_args!("installing IPv4 home address {a}"),
                r,
            );
        }
        self.v4hoa = new;
    }

    fn cleanup(&mut self) {
        if let Some((idx, name)) = self.home.take() {
            let r = self.nl.del_address(idx, self.cfg.machine.hoa);
            self.failures
                .check(Failure::Netlink, format_args!("home address off {name}"), r);
        }
        let (table, prio) = (self.cfg.table, self.cfg.rule_priority);
        let r = self
            .nl
            .del_source_rule(IpAddr::V6(self.cfg.machine.hoa), table, prio);
        self.failures
            .check(Failure::Netlink, "removing the home address rule", r);
        if let Some(a) = self.v4hoa {
            let r = self.nl.del_source_rule(IpAddr::V4(a), table, prio);
            self.failures
                .check(Failure::Netlink, "removing the IPv4 home address rule", r);
        }
        if self.cfg.machine.router {
            for (sel, table, prio) in mnp_rules(&self.cfg) {
                let r = self.nl.del_rule(sel, table, prio);
                self.failures
                    .check(Failure::Netlink, "removing a mobile network rule", r);
            }
        }
    }
}
