//! The DSMIPv6 mobile node daemon: a Linux driver around [`MobileNode`]. Its TUN carries the
//! home addresses (applications bind to them and keep their sessions across moves); "from
//! <home address>" rules send their traffic to a table whose default routes lead into the
//! TUN. Movement detection reads addresses and links from netlink notifications on the
//! configured interfaces, in preference order (UMIP's MnIfPreference), an interface marked
//! `tunnel` being used as it is (UMIP's "Tunnel enabled", e.g. the m6t client's m6t0).

use super::{counters_with, io, serve_reports, shutdown_flag, stopping, until, DaemonError, BURST};
use crate::dsmip_config::{HaSource, Mn, MnInterface};
use crate::status::{MnInfo, Report};
use m6t_linux::netlink::{Monitor, Netlink};
use m6t_linux::raw::{self, Capture, DsmipUdp, RawIp, RawIpv6Sender};
use m6t_linux::{caps, control::ControlServer, poll, tun::Tun};
use m6t_proto::dsmip::mobile_node::{MnEvent, MobileNode};
use m6t_proto::dsmip::tif::{Encap, PROTO_IPV4, PROTO_IPV6};
use m6t_proto::dsmip::update_list::{Coa, TunnelMode};
use m6t_proto::dsmip::{Outbound, Transmit, Verdict};
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

const MAIN_TABLE: u32 = 254;

fn idx(proto: u8) -> usize {
    usize::from(proto == PROTO_IPV6)
}

/// True when the kernel has a route from `src` toward `dst` (connect(2) on a UDP socket
/// does the lookup and sends nothing).
fn routable(src: IpAddr, dst: IpAddr) -> bool {
    let Ok(s) = UdpSocket::bind(SocketAddr::new(src, 0)) else {
        return false;
    };
    s.connect(SocketAddr::new(dst, 9)).is_ok()
}

fn global6(a: Ipv6Addr) -> bool {
    let s = a.segments()[0];
    !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || (s & 0xffc0) == 0xfe80)
}

/// Care-of address candidates: the most preferred usable IPv6 and IPv4 addresses on the
/// configured interfaces (RFC 5555 section 4.4.1 then prefers IPv6).
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
                        && routable(a.addr, ha6) =>
                {
                    v6 = Some(x)
                }
                IpAddr::V4(x)
                    if v4.is_none()
                        && !x.is_loopback()
                        && Some(x) != v4hoa
                        && routable(a.addr, ha4) =>
                {
                    v4 = Some(x)
                }
                _ => {}
            }
        }
    }
    (v6, v4)
}

/// Sockets toward the home agent; the IP-in-IP ones are re-bound to the registered care-of
/// address so the outer source is the one the home agent knows.
struct Sockets {
    udp: Option<DsmipUdp>,
    ip4: [RawIp; 2],
    ip6: [RawIp; 2],
    sender6: RawIpv6Sender,
    capture: Capture,
}

fn raw_pair(local: IpAddr) -> std::io::Result<[RawIp; 2]> {
    Ok([
        RawIp::open(local, PROTO_IPV4)?,
        RawIp::open(local, PROTO_IPV6)?,
    ])
}

impl Sockets {
    fn udp_from(&mut self, from: Ipv4Addr) -> Option<&DsmipUdp> {
        let stale = self
            .udp
            .as_ref()
            .is_none_or(|u| u.local().map(|l| *l.ip() != from).unwrap_or(true));
        if stale {
            // A new care-of address gets a new socket: the NAT makes a new mapping.
            self.udp = match DsmipUdp::bind(SocketAddrV4::new(from, 0)) {
                Ok(u) => Some(u),
                Err(e) => {
                    tracing::warn!("UDP socket on {from}: {e}");
                    None
                }
            };
        }
        self.udp.as_ref()
    }

    fn encap(&self, e: Encap, pkt: &[u8]) -> std::io::Result<usize> {
        match e {
            Encap::Udp { to, tlv } => match &self.udp {
                Some(u) if tlv => u.send2(to, &m6t_proto::dsmip::tif::tlv_header(pkt), pkt),
                Some(u) => u.send(to, pkt),
                None => Err(ErrorKind::NotConnected.into()),
            },
            Encap::Ipv4 { to, proto } => self.ip4[idx(proto)].send(IpAddr::V4(to), pkt),
            Encap::Ipv6 { to, proto } => self.ip6[idx(proto)].send(IpAddr::V6(to), pkt),
        }
    }

    fn fds(&self) -> Vec<RawFd> {
        let mut v = vec![
            self.ip4[0].as_raw_fd(),
            self.ip4[1].as_raw_fd(),
            self.ip6[0].as_raw_fd(),
            self.ip6[1].as_raw_fd(),
            self.capture.as_raw_fd(),
        ];
        if let Some(u) = &self.udp {
            v.push(u.as_raw_fd());
        }
        v
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
fn discover_ha(cfg: &mut Mn, stop: &std::sync::atomic::AtomicBool) -> bool {
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
            if stopping(stop) {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Runs the mobile node until SIGINT/SIGTERM.
pub fn run(mut cfg: Mn) -> Result<(), DaemonError> {
    caps::check_tunnel_privileges()?;
    let stop = shutdown_flag().map_err(io("signal handlers"))?;
    if !discover_ha(&mut cfg, &stop) {
        return Ok(());
    }
    let tun = Tun::open(&cfg.interface, cfg.mtu, false)
        .map_err(io(format!("TUN interface {}", cfg.interface)))?;
    let nl = Netlink::open()?;
    let hoa = cfg.machine.hoa;
    nl.add_address(tun.index(), hoa, 128)?;
    let p = format!("net/ipv4/conf/{}/rp_filter", cfg.interface);
    raw::sysctl(&p, "0").map_err(io(format!("sysctl {p}")))?;
    // Traffic from the home addresses goes into the tunnel whatever the main table says.
    nl.add_source_rule(IpAddr::V6(hoa), cfg.table, cfg.rule_priority)?;
    nl.replace_route_ip(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        0,
        tun.index(),
        1024,
        cfg.table,
    )?;
    nl.replace_route_ip(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        0,
        tun.index(),
        1024,
        cfg.table,
    )?;
    let mut monitor = Monitor::open_dual().map_err(io("netlink notifications"))?;
    let mut socks = Sockets {
        udp: None,
        ip4: raw_pair(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).map_err(io("raw IPv4 sockets"))?,
        ip6: raw_pair(IpAddr::V6(Ipv6Addr::UNSPECIFIED)).map_err(io("raw IPv6 sockets"))?,
        sender6: RawIpv6Sender::open().map_err(io("IPPROTO_RAW IPv6 socket"))?,
        capture: Capture::open().map_err(io("packet capture socket"))?,
    };
    let control = ControlServer::bind(&cfg.control_socket).map_err(io(format!(
        "control socket {}",
        cfg.control_socket.display()
    )))?;
    let seq0: u16 = {
        let mut b = [0u8; 2];
        // A random first sequence number; a restarted MN resynchronises on status 135.
        let _ = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
        u16::from_be_bytes(b)
    };
    let mut node = MobileNode::new(cfg.machine.clone(), seq0);
    let mut info = MnInfo {
        home_address: hoa.to_string(),
        ..MnInfo::default()
    };
    let mut v4hoa: Option<Ipv4Addr> = None;
    let mut routes_in = false;
    tracing::info!("mobile node up: {} home address {hoa}", tun.name());

    let mut ready = Vec::new();
    let mut tun_rx = tun.reader();
    let mut tun_tx = tun.writer();
    let mut buf = vec![0u8; 65536];
    let mut moved = true;

    while !stopping(&stop) {
        if moved {
            moved = false;
            let (v6, v4) = candidates(&nl, &cfg.interfaces, &cfg, v4hoa);
            info.candidates = (v6.map(|a| a.to_string()), v4.map(|a| a.to_string()));
            node.handle_coas(Instant::now(), v6, v4);
        }
        let mut fds = vec![tun.as_raw_fd(), monitor.as_raw_fd(), control.as_raw_fd()];
        fds.extend(socks.fds());
        let now = Instant::now();
        poll::wait_readable(&fds, Some(until(node.poll_timeout(), now)), &mut ready)
            .map_err(io("poll"))?;
        let now = Instant::now();
        if ready[1] && monitor.drain().any() {
            moved = true;
        }
        if ready[0] {
            for _ in 0..BURST {
                let n = match tun_rx.recv() {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(io("TUN read")(e)),
                };
                for k in 0..n {
                    let pkt = tun_rx.packet(k);
                    if let Outbound::Send(e) = node.handle_from_tun(now, pkt) {
                        let _ = socks.encap(e, pkt);
                    }
                }
            }
        }
        for i in 0..fds.len().saturating_sub(3) {
            if !ready[3 + i] {
                continue;
            }
            for _ in 0..BURST {
                match i {
                    0..=3 => {
                        let s = if i < 2 {
                            &socks.ip4[i]
                        } else {
                            &socks.ip6[i - 2]
                        };
                        let (src, range) = match s.recv(&mut buf) {
                            Ok(x) => x,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(_) => continue,
                        };
                        if let Verdict::ToTun(p) = node.handle_ip_in_ip(now, src, &buf[range]) {
                            tun_tx.push(p);
                        }
                    }
                    4 => match socks.capture.recv(&mut buf) {
                        Ok(n) => {
                            let _ = node.handle_captured(now, &buf[..n]);
                        }
                        Err(_) => break,
                    },
                    _ => {
                        let Some(u) = &socks.udp else { break };
                        let (n, from) = match u.recv(&mut buf) {
                            Ok(x) => x,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(_) => continue,
                        };
                        if let Verdict::ToTun(p) = node.handle_udp(now, from, &buf[..n]) {
                            tun_tx.push(p);
                        }
                    }
                }
            }
        }
        tun_tx.flush();
        if node.poll_timeout().is_some_and(|t| t <= now) {
            node.handle_timeout(now);
        }
        while let Some(t) = node.poll_transmit() {
            let r = match &t {
                Transmit::Udp { from, to, data } => match from.and_then(|f| socks.udp_from(f)) {
                    Some(u) => u.send(*to, data),
                    None => Err(ErrorKind::NotConnected.into()),
                },
                Transmit::Ipv6 { to, data, .. } => socks.sender6.send(*to, data),
            };
            if let Err(e) = r {
                tracing::debug!("sending a BU: {e}");
            }
        }
        while let Some(e) = node.poll_event() {
            match e {
                MnEvent::Registered {
                    registration: r,
                    took,
                } => {
                    let coa = match r.coa {
                        Coa::V6(a) => IpAddr::V6(a),
                        Coa::V4(a) => IpAddr::V4(a),
                    };
                    tracing::info!(
                        "registered care-of {coa} tunnel {} lifetime {}s ipv4 home {:?} in {:.2} ms",
                        mode_name(r.mode),
                        r.lifetime.as_secs(),
                        r.ipv4_hoa,
                        took.as_secs_f64() * 1e3
                    );
                    // IP-in-IP leaves from the registered care-of address.
                    match r.mode {
                        TunnelMode::Ipv6 => {
                            if let Ok(p) = raw_pair(coa) {
                                socks.ip6 = p;
                            }
                        }
                        TunnelMode::Ipv4 => {
                            if let Ok(p) = raw_pair(coa) {
                                socks.ip4 = p;
                            }
                        }
                        _ => {}
                    }
                    if r.ipv4_hoa != v4hoa {
                        if let Some(old) = v4hoa {
                            let _ =
                                nl.del_source_rule(IpAddr::V4(old), cfg.table, cfg.rule_priority);
                            let _ = nl.del_ip(tun.index(), IpAddr::V4(old));
                        }
                        if let Some(a) = r.ipv4_hoa {
                            let _ = nl.add_ip(tun.index(), IpAddr::V4(a), 32);
                            let _ = nl.add_source_rule(IpAddr::V4(a), cfg.table, cfg.rule_priority);
                        }
                        v4hoa = r.ipv4_hoa;
                    }
                    if !routes_in {
                        for (a, l) in &cfg.routes {
                            if let Err(e) =
                                nl.replace_route_ip(*a, *l, tun.index(), 1024, MAIN_TABLE)
                            {
                                tracing::warn!("route {a}/{l}: {e}");
                            }
                        }
                        routes_in = true;
                    }
                    info.coa = Some(coa.to_string());
                    info.mode = Some(mode_name(r.mode).into());
                    info.lifetime_s = r.lifetime.as_secs();
                    info.ipv4_home_address = r.ipv4_hoa.map(|a| a.to_string());
                    info.registrations += 1;
                    info.last_registration_ms = Some(took.as_secs_f64() * 1e3);
                }
                MnEvent::Unregistered => {
                    tracing::info!("no registration");
                    info.coa = None;
                    info.mode = None;
                }
            }
        }
        if ready[2] {
            serve_reports(&control, |_| Report::MobileNode {
                interface: tun.name().to_string(),
                mn: info.clone(),
                counters: counters_with(
                    node.counters().snapshot(),
                    &[("tun_write_errors", tun_tx.errors())],
                ),
            });
        }
    }
    let _ = nl.del_source_rule(IpAddr::V6(hoa), cfg.table, cfg.rule_priority);
    if let Some(a) = v4hoa {
        let _ = nl.del_source_rule(IpAddr::V4(a), cfg.table, cfg.rule_priority);
    }
    tracing::info!("mobile node stopped");
    Ok(())
}
