//! The DSMIPv6 home agent daemon: a Linux driver around [`HomeAgent`]. It owns the TUN toward
//! the home network, UDP port 4191, raw sockets for IP-in-IP over IPv4 and IPv6, an
//! IPPROTO_RAW sender and a capture of signalling with extension headers; bound home
//! addresses get a route into the TUN and a proxy ND / ARP entry on the home link.

use super::{
    counters_with, io, serve_reports, shutdown_flag, stopping, DaemonError, WakeBy, BURST,
};
use crate::dsmip_config::Ha;
use crate::status::Report;
use m6t_linux::raw::{self, Capture, DsmipUdp, RawIp, RawIpv6Sender};
use m6t_linux::{caps, control::ControlServer, netlink::Netlink, poll, tun::Tun};
use m6t_proto::dsmip::binding_cache::Snapshot;
use m6t_proto::dsmip::home_agent::{HaEvent, HomeAgent};
use m6t_proto::dsmip::tif::{Encap, DSMIP_PORT, PROTO_IPV4, PROTO_IPV6};
use m6t_proto::dsmip::{Outbound, Transmit, Verdict};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

const MAIN_TABLE: u32 = 254;

/// Sockets of the tunnel-interface module.
struct Sockets {
    udp: DsmipUdp,
    /// IPv4 protocol 4 and 41, IPv6 Next Header 4 and 41.
    ip4: [RawIp; 2],
    ip6: [RawIp; 2],
    sender6: RawIpv6Sender,
    capture: Capture,
}

fn idx(proto: u8) -> usize {
    usize::from(proto == PROTO_IPV6)
}

impl Sockets {
    fn open(cfg: &Ha) -> Result<Sockets, DaemonError> {
        let a4 = IpAddr::V4(cfg.address4);
        let a6 = IpAddr::V6(cfg.address6);
        Ok(Sockets {
            udp: DsmipUdp::bind(SocketAddrV4::new(cfg.address4, DSMIP_PORT))
                .map_err(io(format!("UDP {}:{DSMIP_PORT}", cfg.address4)))?,
            ip4: [
                RawIp::open(a4, PROTO_IPV4).map_err(io("raw IPv4 socket (protocol 4)"))?,
                RawIp::open(a4, PROTO_IPV6).map_err(io("raw IPv4 socket (protocol 41)"))?,
            ],
            ip6: [
                RawIp::open(a6, PROTO_IPV4).map_err(io("raw IPv6 socket (next header 4)"))?,
                RawIp::open(a6, PROTO_IPV6).map_err(io("raw IPv6 socket (next header 41)"))?,
            ],
            sender6: RawIpv6Sender::open().map_err(io("IPPROTO_RAW IPv6 socket"))?,
            capture: Capture::open().map_err(io("packet capture socket"))?,
        })
    }

    fn encap(&self, e: Encap, pkt: &[u8]) -> std::io::Result<usize> {
        match e {
            Encap::Udp { to, tlv: false } => self.udp.send(to, pkt),
            Encap::Udp { to, tlv: true } => {
                self.udp
                    .send2(to, &m6t_proto::dsmip::tif::tlv_header(pkt), pkt)
            }
            Encap::Ipv4 { to, proto } => self.ip4[idx(proto)].send(IpAddr::V4(to), pkt),
            Encap::Ipv6 { to, proto } => self.ip6[idx(proto)].send(IpAddr::V6(to), pkt),
        }
    }

    fn transmit(&self, t: &Transmit) {
        let r = match t {
            Transmit::Udp { to, data, .. } => self.udp.send(*to, data),
            Transmit::Ipv6 { to, data, .. } => self.sender6.send(*to, data),
        };
        if let Err(e) = r {
            tracing::warn!("sending a BA: {e}");
        }
    }
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

fn save_snapshot(path: &Path, s: &Snapshot) {
    let tmp = path.with_extension("tmp");
    let r = (|| {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&tmp, serde_json::to_vec_pretty(s).unwrap_or_default())?;
        // rename(2) is atomic: a crash leaves the old file or the new one, never half.
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = r {
        tracing::warn!("saving the binding cache to {}: {e}", path.display());
    }
}

/// Routes and proxy entries of bound home addresses.
struct HomeLink<'a> {
    nl: &'a Netlink,
    tun: u32,
    link: Option<u32>,
    metric: u32,
}

impl HomeLink<'_> {
    fn apply(&self, e: &HaEvent) {
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
        };
        if let Err(e) = r {
            tracing::warn!("home link: {e}");
        }
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
    caps::check_tunnel_privileges()?;
    if cfg.machine.accept_unprotected {
        tracing::warn!(
            "!!! accept_unprotected = true: Binding Updates WITHOUT IPsec ESP are ACCEPTED. \
             Anyone who can send a packet to this home agent can redirect a home address's \
             traffic. RFC 5555 section 5 requires ESP; use this only in a lab. !!!"
        );
    } else {
        tracing::info!(
            "Binding Updates without ESP are refused (status 129); set accept_unprotected = \
             true only in a lab until IPsec is configured"
        );
    }
    let tun = Tun::open(&cfg.interface, cfg.mtu, false)
        .map_err(io(format!("TUN interface {}", cfg.interface)))?;
    let nl = Netlink::open()?;
    let link = match &cfg.home_link {
        Some(n) => Some(link_index(&nl, n)?),
        None => None,
    };
    // A home agent is a router between its home link and the tunnels.
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
    let socks = Sockets::open(&cfg)?;
    let control = ControlServer::bind(&cfg.control_socket).map_err(io(format!(
        "control socket {}",
        cfg.control_socket.display()
    )))?;
    let stop = shutdown_flag().map_err(io("signal handlers"))?;
    let home = HomeLink {
        nl: &nl,
        tun: tun.index(),
        link,
        metric: cfg.route_metric,
    };
    let now = Instant::now();
    let mut node = match cfg.state_file.as_deref().and_then(load_snapshot) {
        Some(s) => {
            tracing::info!("binding cache restored: {} bindings", s.bindings.len());
            HomeAgent::restore(cfg.machine.clone(), cfg.address6, &s, now)
        }
        None => HomeAgent::new(cfg.machine.clone(), cfg.address6),
    };
    tracing::info!(
        "home agent up: {} {} / {} port {DSMIP_PORT}, home prefix {}",
        tun.name(),
        cfg.address6,
        cfg.address4,
        cfg.machine.home_prefix
    );

    let fds = [
        tun.as_raw_fd(),
        socks.udp.as_raw_fd(),
        socks.ip4[0].as_raw_fd(),
        socks.ip4[1].as_raw_fd(),
        socks.ip6[0].as_raw_fd(),
        socks.ip6[1].as_raw_fd(),
        socks.capture.as_raw_fd(),
        control.as_raw_fd(),
    ];
    let mut poller = poll::Poller::new(&fds).map_err(io("epoll"))?;
    let mut ready = Vec::new();
    let mut wake_by = WakeBy::new(Instant::now());
    let mut tun_rx = tun.reader();
    let mut tun_tx = tun.writer();
    let mut buf = vec![0u8; 65536];
    let mut dirty = true;

    while !stopping(&stop) {
        let now = Instant::now();
        poller
            .wait_until(Some(wake_by.deadline(node.poll_timeout(), now)), &mut ready)
            .map_err(io("epoll"))?;
        let now = Instant::now();
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
        if ready[1] {
            for _ in 0..BURST {
                let (n, from) = match socks.udp.recv(&mut buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => continue,
                };
                if let Verdict::ToTun(p) = node.handle_udp(now, from, &buf[..n]) {
                    tun_tx.push(p);
                }
            }
        }
        for (i, s) in socks.ip4.iter().chain(socks.ip6.iter()).enumerate() {
            if !ready[2 + i] {
                continue;
            }
            for _ in 0..BURST {
                let (src, range) = match s.recv(&mut buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => continue,
                };
                if let Verdict::ToTun(p) = node.handle_ip_in_ip(now, src, &buf[range]) {
                    tun_tx.push(p);
                }
            }
        }
        tun_tx.flush();
        if ready[6] {
            for _ in 0..BURST {
                match socks.capture.recv(&mut buf) {
                    Ok(n) => {
                        let _ = node.handle_captured(now, &buf[..n]);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
        }
        if node.poll_timeout().is_some_and(|t| t <= now) {
            node.handle_timeout(now);
        }
        while let Some(t) = node.poll_transmit() {
            socks.transmit(&t);
        }
        while let Some(e) = node.poll_event() {
            home.apply(&e);
            dirty = true;
        }
        if dirty {
            if let Some(p) = &cfg.state_file {
                save_snapshot(p, &node.snapshot(now));
            }
            dirty = false;
        }
        if ready[7] {
            serve_reports(&control, |_| Report::HomeAgent {
                interface: tun.name().to_string(),
                bindings: node.snapshot(Instant::now()).bindings,
                counters: counters_with(
                    node.counters().snapshot(),
                    &[("tun_write_errors", tun_tx.errors())],
                ),
            });
        }
    }
    // The cache is saved with lifetimes left, and the routes stay consistent with it: a
    // restarted home agent installs them again from the file.
    if let Some(p) = &cfg.state_file {
        save_snapshot(p, &node.snapshot(Instant::now()));
    }
    for b in node.snapshot(Instant::now()).bindings {
        home.apply(&HaEvent::Unbound {
            hoa: b.hoa,
            ipv4: b.ipv4,
        });
    }
    tracing::info!("home agent stopped");
    Ok(())
}
