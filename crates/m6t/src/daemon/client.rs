//! The client daemon: one TUN carrying the tunnel address, one UDP socket toward the
//! gateway (a fresh one at every address change), netlink notifications for IPv4
//! attachment, and the client machine in between.

use super::hook::{Hook, HookCall};
use super::{io, serve_reports, shutdown_flag, stopping, until, DaemonError, BURST};

/// Datagrams per recvmmsg call.
const RECV_BATCH: usize = 32;
/// Datagrams per sendmmsg call.
const SEND_BATCH: usize = 64;
use crate::config;
use crate::status::Report;
use m6t_linux::batch::{RecvBatch, SendBatch};
use m6t_linux::claims::Claims;
use m6t_linux::netlink::{Monitor, Netlink};
use m6t_linux::{caps, control::ControlServer, poll, tun::Tun, udp};
use m6t_proto::m6t::client::{Client, FromGateway, FromTun};
use std::io::{ErrorKind, Read};
use std::net::{Ipv6Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Instant;

pub(super) fn seed() -> Result<[u8; 32], DaemonError> {
    let mut s = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut s))
        .map_err(io("/dev/urandom"))?;
    Ok(s)
}

struct Driver {
    cfg: config::Client,
    tun: Tun,
    nl: Netlink,
    claims: Claims,
    hook: Hook,
    sock: Option<udp::Udp>,
    installed: Option<Ipv6Addr>,
    route: bool,
}

impl Driver {
    fn gateway(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.cfg.gateway, port)
    }

    /// Carries out every address change the machine asked for.
    fn apply(&mut self, m: &mut Client, now: Instant) -> Result<(), DaemonError> {
        while let Some(ch) = m.poll_change() {
            // The socket first: the new address must be the only one ever sent from it.
            self.sock = None;
            match ch.new {
                Some((addr, port)) => {
                    if !self.claims.claim(addr).map_err(io("claims directory"))? {
                        tracing::info!("{addr} is used by another tunnel interface: drawing again");
                        m.handle_address_conflict(now);
                        continue;
                    }
                    // New address before the old one goes, so that source selection never
                    // falls back to a link-local address in between.
                    self.nl.add_address(self.tun.index(), addr, 128)?;
                    self.sock = Some(
                        udp::connect(self.gateway(port))
                            .map_err(io(format!("UDP socket to {}", self.gateway(port))))?,
                    );
                    if let Some(old) = self.installed.replace(addr) {
                        if old != addr {
                            self.nl.del_address(self.tun.index(), old)?;
                            self.claims.release(old);
                        }
                    }
                    if !self.route {
                        self.nl.replace_route(
                            Ipv6Addr::UNSPECIFIED,
                            0,
                            self.tun.index(),
                            self.cfg.metric,
                        )?;
                        self.route = true;
                    }
                    tracing::info!(
                        "tunnel address {addr} via {}:{port} ({})",
                        self.cfg.gateway,
                        ch.reason.as_str()
                    );
                }
                None => {
                    if let Some(old) = self.installed.take() {
                        self.nl.del_address(self.tun.index(), old)?;
                        self.claims.release(old);
                    }
                    if self.route {
                        self.nl.del_route(
                            Ipv6Addr::UNSPECIFIED,
                            0,
                            self.tun.index(),
                            self.cfg.metric,
                        )?;
                        self.route = false;
                    }
                    tracing::info!("tunnel down ({})", ch.reason.as_str());
                }
            }
            self.hook.run(&HookCall {
                iface: self.tun.name(),
                old: ch.old,
                new: ch.new.map(|n| n.0),
                reason: ch.reason.as_str(),
                mtu: self.cfg.machine.mtu,
                port: ch.new.map(|n| n.1),
            });
        }
        Ok(())
    }

    fn attachment(&self) -> Option<std::net::Ipv4Addr> {
        udp::source_toward(self.gateway(self.cfg.machine.ports[0]))
    }

    fn cleanup(&mut self) {
        if let Some(a) = self.installed.take() {
            let _ = self.nl.del_address(self.tun.index(), a);
            self.claims.release(a);
            self.hook.run(&HookCall {
                iface: self.tun.name(),
                old: Some(a),
                new: None,
                reason: "stop",
                mtu: self.cfg.machine.mtu,
                port: None,
            });
        }
        if self.route {
            let _ = self
                .nl
                .del_route(Ipv6Addr::UNSPECIFIED, 0, self.tun.index(), self.cfg.metric);
        }
    }
}

/// Runs the client until SIGINT/SIGTERM.
pub fn run(cfg: config::Client) -> Result<(), DaemonError> {
    caps::check_tunnel_privileges()?;
    let tun = Tun::open(&cfg.interface, cfg.machine.mtu, cfg.offload)
        .map_err(io(format!("TUN interface {}", cfg.interface)))?;
    let nl = Netlink::open()?;
    let mut mon = Monitor::open().map_err(io("netlink notifications"))?;
    let claims = Claims::new(&cfg.claims_dir, std::process::id())
        .map_err(io(format!("claims directory {}", cfg.claims_dir.display())))?;
    let control = ControlServer::bind(&cfg.control_socket).map_err(io(format!(
        "control socket {}",
        cfg.control_socket.display()
    )))?;
    let stop = shutdown_flag().map_err(io("signal handlers"))?;
    let mut m = Client::new(cfg.machine.clone(), seed()?);
    let mut d = Driver {
        hook: Hook::new(cfg.hook.clone()),
        cfg,
        tun,
        nl,
        claims,
        sock: None,
        installed: None,
        route: false,
    };
    let r = run_loop(&mut d, &mut m, &mut mon, &control, &stop);
    d.cleanup();
    r
}

fn run_loop(
    d: &mut Driver,
    m: &mut Client,
    mon: &mut Monitor,
    control: &ControlServer,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), DaemonError> {
    let now = Instant::now();
    m.handle_attachment(now, d.attachment());
    d.apply(m, now)?;
    if m.address().is_none() {
        tracing::info!("no IPv4 route toward {}: waiting", d.cfg.gateway);
    }
    let mut ready = Vec::new();
    let mut tun_rx = d.tun.reader();
    let mut tun_tx = d.tun.writer();
    let mut udp_rx = RecvBatch::new(RECV_BATCH);
    let mut udp_tx = SendBatch::new(SEND_BATCH);
    let mut scratch = vec![0u8; m6t_wire::icmpv6::MAX_ERROR_LEN];
    while !stopping(stop) {
        d.hook.reap();
        let mut fds = vec![d.tun.as_raw_fd(), mon.as_raw_fd(), control.as_raw_fd()];
        if let Some(s) = &d.sock {
            fds.push(s.as_raw_fd());
        }
        let now = Instant::now();
        poll::wait_readable(&fds, Some(until(m.poll_timeout(), now)), &mut ready)
            .map_err(io("poll"))?;
        let now = Instant::now();
        if ready[1] {
            let ev = mon.drain();
            if ev.any() {
                let local = d.attachment();
                if ev.default_route {
                    m.handle_route_change(now, local);
                } else {
                    m.handle_attachment(now, local);
                }
                d.apply(m, now)?;
            }
        }
        if ready[0] {
            let gw = d.sock.as_ref().map(|_| d.gateway(m.port().unwrap_or(0)));
            for _ in 0..BURST {
                let n = match tun_rx.recv() {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(io("TUN read")(e)),
                };
                for k in 0..n {
                    let pkt = tun_rx.packet(k);
                    match m.handle_from_tun(now, pkt, &mut scratch) {
                        FromTun::Send => {
                            if let Some(g) = gw {
                                udp_tx.push(pkt, g);
                            }
                        }
                        FromTun::Reply(len) => tun_tx.push(&scratch[..len]),
                        FromTun::Drop(_) => {}
                    }
                }
                if let Some(s) = &d.sock {
                    if udp_tx.len() >= SEND_BATCH {
                        udp_tx.flush(s);
                    }
                }
            }
            if let Some(s) = &d.sock {
                udp_tx.flush(s);
                // An ICMP port unreachable for an earlier datagram shows up as a pending error.
                if let Ok(Some(e)) = s.sock.take_error() {
                    if udp::is_unreachable(&e) {
                        m.handle_port_unreachable(now);
                    }
                }
            }
            tun_tx.flush();
        }
        if ready.len() > 3 && ready[3] {
            if let Some(s) = &d.sock {
                for _ in 0..BURST / RECV_BATCH {
                    let got = match udp_rx.recv(s) {
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            if udp::is_unreachable(&e) {
                                m.handle_port_unreachable(now);
                            }
                            break;
                        }
                    };
                    for k in 0..got {
                        let (data, _) = udp_rx.get(k);
                        if m.handle_from_gateway(now, data) == FromGateway::ToTun {
                            tun_tx.push(data);
                        }
                    }
                    tun_tx.flush();
                    if got == 0 {
                        break;
                    }
                }
            }
        }
        if ready[2] {
            serve_reports(control, |_| Report::Client {
                interface: d.tun.name().to_string(),
                tunnel: m.info(Instant::now()),
                counters: m.counters().snapshot(),
            });
        }
        if m.poll_timeout().is_some_and(|t| t <= now) {
            m.handle_timeout(now);
        }
        if let (Some(ka), Some(s)) = (m.poll_keepalive(), &d.sock) {
            if let Err(e) = s.sock.send(&ka) {
                if udp::is_unreachable(&e) {
                    m.handle_port_unreachable(now);
                }
            }
        }
        d.apply(m, now)?;
    }
    Ok(())
}
