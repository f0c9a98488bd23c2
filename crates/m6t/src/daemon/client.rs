//! The client daemon: one TUN carrying the tunnel address, one UDP socket toward the
//! gateway (a fresh one at every address change), netlink notifications for IPv4
//! attachment, and the client machine in between.

use super::hook::{Hook, HookCall};
use super::{
    bind_control, counters_with, io, os_seed, publish_metrics, serve_reports, shutdown,
    start_metrics, DaemonError, BURST,
};
use crate::config;
use crate::metrics::{GaugeValue, Publisher, Snapshot};
use crate::status::Report;
use m6t_linux::batch::{RecvBatch, SendBatch};
use m6t_linux::caps::Capability;
use m6t_linux::claims::Claims;
use m6t_linux::control::ControlServer;
use m6t_linux::failures::{Failure, Failures};
use m6t_linux::netlink::{Monitor, Netlink};
use m6t_linux::runtime::Runtime;
use m6t_linux::tun::{Tun, TunTx};
use m6t_linux::{caps, udp};
use m6t_proto::m6t::client::{Client, FromGateway, FromTun};
use std::io::ErrorKind;
use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::Instant;

/// Datagrams per recvmmsg call.
const RECV_BATCH: usize = 32;
/// Datagrams per sendmmsg call.
const SEND_BATCH: usize = 64;

/// The client's event sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Packets from the mobile node's stack.
    Tun,
    /// IPv4 address and route notifications (attachment).
    Netlink,
    /// `m6t status`.
    Control,
    /// The UDP socket toward the gateway (replaced at every address change).
    Gateway,
}

struct Driver {
    cfg: config::Client,
    tun: Tun,
    nl: Netlink,
    claims: Claims,
    hook: Hook,
    rt: Runtime<Source>,
    sock: Option<udp::Udp>,
    installed: Option<Ipv6Addr>,
    route: bool,
    failures: Failures,
    metrics: Option<Publisher>,
}

impl Driver {
    fn gateway(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.cfg.gateway, port)
    }

    /// Carries out every address change the machine asked for.
    fn apply(&mut self, m: &mut Client, now: Instant) -> Result<(), DaemonError> {
        while let Some(ch) = m.poll_change() {
            // The socket first: the new address must be the only one ever sent from it.
            if self.sock.take().is_some() {
                self.rt.remove(Source::Gateway).map_err(io("epoll"))?;
            }
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
                    let sock = udp::connect(self.gateway(port))
                        .map_err(io(format!("UDP socket to {}", self.gateway(port))))?;
                    self.rt.add(&sock, Source::Gateway).map_err(io("epoll"))?;
                    self.sock = Some(sock);
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
            let r = self.nl.del_address(self.tun.index(), a);
            self.failures
                .check(Failure::Netlink, format_args!("removing {a}"), r);
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
            let r = self
                .nl
                .del_route(Ipv6Addr::UNSPECIFIED, 0, self.tun.index(), self.cfg.metric);
            self.failures
                .check(Failure::Netlink, "removing the default route", r);
        }
    }
}

/// Runs the client until SIGINT/SIGTERM.
pub fn run(cfg: config::Client) -> Result<(), DaemonError> {
    crate::status::mark_start();
    caps::check_tunnel_privileges()?;
    // First: a metrics port in use stops the client before it changes anything.
    let metrics = start_metrics(cfg.metrics_listen, "client", false)?;
    let stop = shutdown()?;
    let tun = Tun::open(&cfg.interface, cfg.machine.mtu, cfg.offload)
        .map_err(io(format!("TUN interface {}", cfg.interface)))?;
    let nl = Netlink::open()?;
    let mon = Monitor::open().map_err(io("netlink notifications"))?;
    let claims = Claims::new(&cfg.claims_dir, std::process::id())
        .map_err(io(format!("claims directory {}", cfg.claims_dir.display())))?;
    let control = bind_control(&cfg.control_socket)?;
    let mut rt = Runtime::new(&stop).map_err(io("epoll"))?;
    rt.add(&tun, Source::Tun).map_err(io("epoll"))?;
    rt.add(&mon, Source::Netlink).map_err(io("epoll"))?;
    rt.add(&control, Source::Control).map_err(io("epoll"))?;
    // Everything privileged is open: keep only what the loop still needs.
    super::keep_only(cfg.user.as_ref(), &[Capability::CAP_NET_ADMIN])?;
    m6t_linux::notify::ready();
    let mut m = Client::new(cfg.machine.clone(), os_seed()?);
    let mut d = Driver {
        hook: Hook::new(cfg.hook.clone()),
        cfg,
        tun,
        nl,
        claims,
        rt,
        sock: None,
        installed: None,
        route: false,
        failures: Failures::default(),
        metrics,
    };
    let r = Loop::new(&d).run(&mut d, &mut m, mon, &control);
    m6t_linux::notify::stopping();
    d.cleanup();
    r
}

/// What the metrics show: the counters of `m6t status`, whether the tunnel is up and whether
/// the gateway answered on its address.
fn snapshot(m: &Client, failures: &Failures) -> Snapshot {
    let info = m.info(Instant::now());
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    Snapshot {
        counters: counters_with(m.counters().snapshot(), failures, &[]),
        gauges: vec![
            GaugeValue::plain(
                "tunnel_up",
                "1 when the tunnel has an address (an IPv4 path toward the gateway)",
                flag(info.address.is_some()),
            ),
            GaugeValue::plain(
                "tunnel_confirmed",
                "1 when the gateway answered on the current tunnel address",
                flag(info.confirmed),
            ),
        ],
    }
}

/// The data path's buffers, allocated once.
struct Loop {
    tun_tx: TunTx,
    udp_rx: RecvBatch,
    udp_tx: SendBatch,
    scratch: Vec<u8>,
}

impl Loop {
    fn new(d: &Driver) -> Self {
        Loop {
            tun_tx: d.tun.writer(),
            udp_rx: RecvBatch::new(RECV_BATCH),
            udp_tx: SendBatch::new(SEND_BATCH),
            scratch: vec![0u8; m6t_wire::icmpv6::MAX_ERROR_LEN],
        }
    }

    fn run(
        &mut self,
        d: &mut Driver,
        m: &mut Client,
        mut mon: Monitor,
        control: &ControlServer,
    ) -> Result<(), DaemonError> {
        let now = Instant::now();
        m.handle_attachment(now, d.attachment());
        d.apply(m, now)?;
        if m.address().is_none() {
            tracing::info!("no IPv4 route toward {}: waiting", d.cfg.gateway);
        }
        let mut tun_rx = d.tun.reader();
        let mut ready = Vec::new();
        let mut publish_at = publish_metrics(&mut d.metrics, Instant::now(), None, || {
            snapshot(m, &d.failures)
        });
        let mut drops = super::DropLog::new(now);
        while !d.rt.stopping() {
            d.hook.reap();
            ready.clear();
            let next = match (m.poll_timeout(), publish_at) {
                (Some(t), Some(p)) => Some(t.min(p)),
                (t, p) => t.or(p),
            };
            ready.extend_from_slice(d.rt.wait(next).map_err(io("epoll"))?);
            let now = Instant::now();
            for &source in &ready {
                match source {
                    Source::Netlink => {
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
                    Source::Tun => {
                        self.on_tun(d, m, &mut tun_rx, now)
                            .map_err(io("TUN read"))?;
                    }
                    Source::Gateway => self.on_gateway(d, m, now),
                    Source::Control => serve_reports(control, |_| Report::Client {
                        interface: d.tun.name().to_string(),
                        tunnel: m.info(Instant::now()),
                        start: crate::status::start(),
                        counters: counters_with(m.counters().snapshot(), &d.failures, &[]),
                    }),
                }
            }
            self.after(d, m, now)?;
            // With the pass's clock reading: no extra one per wake-up, metrics or not.
            publish_at = publish_metrics(&mut d.metrics, now, None, || snapshot(m, &d.failures));
            drops.pass(now, || snapshot(m, &d.failures).counters);
        }
        Ok(())
    }

    /// Packets from the stack: into the tunnel, or a Packet Too Big back.
    fn on_tun(
        &mut self,
        d: &Driver,
        m: &mut Client,
        tun_rx: &mut m6t_linux::tun::TunRx,
        now: Instant,
    ) -> std::io::Result<()> {
        let gw = d.sock.as_ref().map(|_| d.gateway(m.port().unwrap_or(0)));
        let (tun_tx, udp_tx, scratch) = (&mut self.tun_tx, &mut self.udp_tx, &mut self.scratch);
        tun_rx.drain(BURST, |pkt| match m.handle_from_tun(now, pkt, scratch) {
            FromTun::Send => {
                if let (Some(g), Some(s)) = (gw, &d.sock) {
                    udp_tx.push(pkt, g);
                    if udp_tx.len() >= SEND_BATCH {
                        udp_tx.flush(s);
                    }
                }
            }
            FromTun::Reply(len) => tun_tx.push(&scratch[..len]),
            FromTun::Drop(_) => {}
        })?;
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
        Ok(())
    }

    /// Datagrams from the gateway: into the TUN.
    fn on_gateway(&mut self, d: &Driver, m: &mut Client, now: Instant) {
        let Some(s) = &d.sock else { return };
        for _ in 0..BURST / RECV_BATCH {
            let got = match self.udp_rx.recv(s) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    if udp::is_unreachable(&e) {
                        m.handle_port_unreachable(now);
                    } else {
                        d.failures
                            .record(Failure::Recv, 1, format_args!("UDP receive: {e}"));
                    }
                    break;
                }
            };
            for k in 0..got {
                let (data, _) = self.udp_rx.get(k);
                if m.handle_from_gateway(now, data) == FromGateway::ToTun {
                    self.tun_tx.push(data);
                }
            }
            self.tun_tx.flush();
            if got < RECV_BATCH {
                break;
            }
        }
    }

    /// What the machine asked once the sources are handled: timers, keep-alives, address
    /// changes; and the failures of this pass counted.
    fn after(&mut self, d: &mut Driver, m: &mut Client, now: Instant) -> Result<(), DaemonError> {
        if m.poll_timeout().is_some_and(|t| t <= now) {
            m.handle_timeout(now);
        }
        if let (Some(ka), Some(s)) = (m.poll_keepalive(), &d.sock) {
            if let Err(e) = s.sock.send(&ka) {
                if udp::is_unreachable(&e) {
                    m.handle_port_unreachable(now);
                } else {
                    d.failures
                        .record(Failure::UdpSend, 1, format_args!("keep-alive: {e}"));
                }
            }
        }
        d.apply(m, now)?;
        d.failures.record(
            Failure::TunWrite,
            self.tun_tx.take_errors(),
            "TUN write refused",
        );
        d.failures.record(
            Failure::UdpSend,
            self.udp_tx.take_errors(),
            "UDP send to the gateway refused",
        );
        Ok(())
    }
}
