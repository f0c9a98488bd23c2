//! The gateway daemon: UDP sockets on every configured port, one TUN toward the home
//! agent, the mobile-node prefixes routed into it, and the gateway machine in between.

use super::{io, shutdown_flag, stopping, until, DaemonError, BURST};

/// Datagrams per recvmmsg call.
const RECV_BATCH: usize = 32;
/// Datagrams per sendmmsg call.
const SEND_BATCH: usize = 64;
use crate::config;
use crate::status::{Report, REQUEST_COUNTERS, REQUEST_STATUS};
use m6t_linux::batch::{RecvBatch, SendBatch};
use m6t_linux::{caps, control::ControlServer, netlink::Netlink, poll, tun::Tun, udp};
use m6t_proto::m6t::gateway::{FromHome, FromMn, Gateway, GatewayEvent};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Runs the gateway until SIGINT/SIGTERM.
pub fn run(cfg: config::Gateway) -> Result<(), DaemonError> {
    caps::check_tunnel_privileges()?;
    let tun = Tun::open(&cfg.interface, cfg.machine.mtu, cfg.offload)
        .map_err(io(format!("TUN interface {}", cfg.interface)))?;
    let nl = Netlink::open()?;
    for p in &cfg.machine.mn_prefixes {
        nl.replace_route(p.addr(), p.len(), tun.index(), cfg.route_metric)?;
    }
    let socks: Vec<(u16, udp::Udp)> = cfg
        .ports
        .iter()
        .map(|p| {
            udp::listen(cfg.listen, *p)
                .map(|s| (*p, s))
                .map_err(io(format!("UDP port {p}")))
        })
        .collect::<Result<_, _>>()?;
    let control = ControlServer::bind(&cfg.control_socket).map_err(io(format!(
        "control socket {}",
        cfg.control_socket.display()
    )))?;
    let stop = shutdown_flag().map_err(io("signal handlers"))?;
    let mut gw = Gateway::new(cfg.machine.clone());
    tracing::info!(
        "gateway up: {} ports {:?}, prefixes {:?}",
        tun.name(),
        cfg.ports,
        cfg.machine
            .mn_prefixes
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
    );

    let mut fds = vec![tun.as_raw_fd()];
    fds.extend(socks.iter().map(|(_, s)| s.as_raw_fd()));
    fds.push(control.as_raw_fd());
    let mut ready = Vec::new();
    let mut tun_rx = tun.reader();
    let mut tun_tx = tun.writer();
    let mut scratch = vec![0u8; m6t_wire::icmpv6::MAX_ERROR_LEN];
    let mut rx = RecvBatch::new(RECV_BATCH);
    let mut tx: Vec<SendBatch> = socks.iter().map(|_| SendBatch::new(SEND_BATCH)).collect();
    // The longest garbage-collection pass, measured here since the machine has no clock.
    let mut gc_max_pause = Duration::ZERO;

    while !stopping(&stop) {
        let now = Instant::now();
        poll::wait_readable(&fds, Some(until(gw.poll_timeout(), now)), &mut ready)
            .map_err(io("poll"))?;
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
                    match gw.handle_from_home(now, pkt, &mut scratch) {
                        FromHome::ToMn { peer, local_port } => {
                            if let Some(i) = socks.iter().position(|(p, _)| *p == local_port) {
                                tx[i].push(pkt, peer);
                                if tx[i].is_full() {
                                    tx[i].flush(&socks[i].1);
                                }
                            }
                        }
                        FromHome::Reply(len) => tun_tx.push(&scratch[..len]),
                        FromHome::Drop(_) => {}
                    }
                }
            }
            tun_tx.flush();
        }
        for (i, (port, s)) in socks.iter().enumerate() {
            if !ready[1 + i] {
                continue;
            }
            for _ in 0..BURST / RECV_BATCH {
                let got = match rx.recv(s) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // ICMP errors from earlier sends surface here; nothing to do.
                    Err(_) => continue,
                };
                for k in 0..got {
                    let (data, from) = rx.get(k);
                    match gw.handle_from_mn(now, *port, from, data, &mut scratch) {
                        FromMn::ToHome => tun_tx.push(data),
                        FromMn::Echo(e) => tx[i].push(&e, from),
                        FromMn::Reply(len) => tx[i].push(&scratch[..len], from),
                        FromMn::Drop(_) => {}
                    }
                    if tx[i].is_full() {
                        tx[i].flush(s);
                    }
                }
                tun_tx.flush();
                if got == 0 {
                    break;
                }
            }
        }
        for (i, (_, s)) in socks.iter().enumerate() {
            if !tx[i].is_empty() {
                tx[i].flush(s);
            }
        }
        if ready[fds.len() - 1] {
            control.serve(|req| {
                if req != REQUEST_STATUS && req != REQUEST_COUNTERS {
                    return "{\"error\":\"unknown request\"}\n".to_string();
                }
                let mut counters = gw.counters().snapshot();
                for (name, value) in [
                    ("tun_write_errors", tun_tx.errors()),
                    ("states", gw.len() as u64),
                    ("gc_max_pause_us", gc_max_pause.as_micros() as u64),
                ] {
                    counters.push(m6t_proto::stats::Counter {
                        name: name.into(),
                        value,
                    });
                }
                // `counters` leaves the (possibly million-entry) state list out.
                let states = if req == REQUEST_STATUS {
                    gw.states(Instant::now())
                } else {
                    Vec::new()
                };
                let r = Report::Gateway {
                    interface: tun.name().to_string(),
                    ports: cfg.ports.clone(),
                    states,
                    counters,
                };
                serde_json::to_string(&r).unwrap_or_default() + "\n"
            });
        }
        if gw.poll_timeout().is_some_and(|t| t <= now) {
            let t = Instant::now();
            gw.handle_timeout(now);
            gc_max_pause = gc_max_pause.max(t.elapsed());
        }
        while let Some(e) = gw.poll_event() {
            match e {
                // Per-state lines at debug level: a mass expiry must not flood the log.
                GatewayEvent::Created { address, peer } => {
                    tracing::debug!("state {address} temporary from {peer}")
                }
                GatewayEvent::Activated { address } => tracing::debug!("state {address} active"),
                GatewayEvent::Expired { address, kind } => {
                    tracing::debug!("state {address} expired ({kind:?})")
                }
            }
        }
    }
    for p in &cfg.machine.mn_prefixes {
        let _ = nl.del_route(p.addr(), p.len(), tun.index(), cfg.route_metric);
    }
    tracing::info!("gateway stopped");
    Ok(())
}
