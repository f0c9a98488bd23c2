//! The gateway daemon: UDP sockets on every configured port, one TUN toward the home
//! agent, the mobile-node prefixes routed into it, and the gateway machine in between.
//!
//! With `workers = N` the data plane runs on N threads. Each has its own SO_REUSEPORT
//! socket per port and its own TUN queue (IFF_MULTI_QUEUE); the states are split into N
//! shards by mobile-node address, each shard a whole gateway machine behind its own mutex.
//! The kernel steers a datagram to the worker owning its source's shard (a classic BPF
//! program on the reuseport group), so a worker mostly takes its own, uncontended lock; a
//! packet from the home side locks the shard of its destination, whichever queue it came
//! from. No lock covers all states on the hot path.

use super::{
    counters_with, io, serve_reports, shutdown_flag, stopping, DaemonError, WakeBy, BURST,
};

/// Datagrams per recvmmsg call.
const RECV_BATCH: usize = 32;
/// Smallest batch whose cache misses are started together before handling it.
const PREFETCH_MIN: usize = 4;
/// Most states a status answer lists (the counters still give the total).
const STATUS_STATES_MAX: usize = 1000;
/// Datagrams per sendmmsg call.
const SEND_BATCH: usize = 64;
use crate::config;
use crate::status::{Report, REQUEST_STATUS};
use m6t_linux::batch::{RecvBatch, SendBatch};
use m6t_linux::{caps, control::ControlServer, netlink::Netlink, poll, prefetch, tun::Tun, udp};
use m6t_proto::m6t::gateway::{FromHome, FromMn, Gateway, GatewayEvent};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// What the workers share: the shards and the driver's own counters.
struct Shared {
    shards: Vec<Mutex<Gateway>>,
    tun_write_errors: AtomicU64,
    gc_max_pause_us: AtomicU64,
}

impl Shared {
    fn lock(&self, i: usize) -> MutexGuard<'_, Gateway> {
        // A worker that panicked while holding a shard cannot leave it half-updated in a
        // way that matters more than stopping the gateway would: keep serving.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shard of a mobile node's address: the same function the kernel's steering
    /// program computes from the UDP payload (bytes 20..24 of the IPv6 packet are the last
    /// 32 bits of its source).
    fn shard_of_bytes(&self, b: Option<&[u8]>) -> usize {
        let n = self.shards.len();
        match b {
            Some(b) if n > 1 && b.len() == 4 => {
                (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) % n
            }
            _ => 0,
        }
    }

    fn report(&self, req: &str, interface: &str, ports: &[u16]) -> Report {
        let mut counters: Vec<m6t_proto::stats::Counter> = Vec::new();
        let mut states = Vec::new();
        let mut len = 0;
        let now = Instant::now();
        for i in 0..self.shards.len() {
            let g = self.lock(i);
            for (k, c) in g.counters().snapshot().into_iter().enumerate() {
                match counters.get_mut(k) {
                    Some(t) => t.value += c.value,
                    None => counters.push(c),
                }
            }
            len += g.len();
            // `counters` leaves the (possibly million-entry) state list out.
            if req == REQUEST_STATUS {
                let room = STATUS_STATES_MAX.saturating_sub(states.len());
                states.extend(g.states_up_to(now, room));
            }
        }
        Report::Gateway {
            interface: interface.to_string(),
            ports: ports.to_vec(),
            states,
            counters: counters_with(
                counters,
                &[
                    (
                        "tun_write_errors",
                        self.tun_write_errors.load(Ordering::Relaxed),
                    ),
                    ("states", len as u64),
                    (
                        "gc_max_pause_us",
                        self.gc_max_pause_us.load(Ordering::Relaxed),
                    ),
                ],
            ),
        }
    }
}

/// Runs the gateway until SIGINT/SIGTERM.
pub fn run(cfg: config::Gateway) -> Result<(), DaemonError> {
    caps::check_tunnel_privileges()?;
    let n = cfg.workers.max(1);
    let tuns = Tun::open_queues(&cfg.interface, cfg.machine.mtu, cfg.offload, n)
        .map_err(io(format!("TUN interface {}", cfg.interface)))?;
    let nl = Netlink::open()?;
    let tun_index = tuns[0].index();
    for p in &cfg.machine.mn_prefixes {
        nl.replace_route(p.addr(), p.len(), tun_index, cfg.route_metric)?;
    }
    // socks[w] = worker w's socket for each port, in the order of cfg.ports.
    let mut socks: Vec<Vec<(u16, udp::Udp)>> = (0..n).map(|_| Vec::new()).collect();
    for p in &cfg.ports {
        let group = udp::listen_group(cfg.listen, *p, n).map_err(io(format!("UDP port {p}")))?;
        for (w, s) in group.into_iter().enumerate() {
            socks[w].push((*p, s));
        }
    }
    let control = ControlServer::bind(&cfg.control_socket).map_err(io(format!(
        "control socket {}",
        cfg.control_socket.display()
    )))?;
    let stop = shutdown_flag().map_err(io("signal handlers"))?;
    let shard_cfg = cfg.machine.shard(n);
    let shared = Shared {
        shards: (0..n)
            .map(|_| {
                Ok(Mutex::new(Gateway::new(
                    shard_cfg.clone(),
                    super::client::seed()?,
                )))
            })
            .collect::<Result<_, DaemonError>>()?,
        tun_write_errors: AtomicU64::new(0),
        gc_max_pause_us: AtomicU64::new(0),
    };
    let name = tuns[0].name().to_string();
    tracing::info!(
        "gateway up: {name} ports {:?}, prefixes {:?}, {n} worker(s)",
        cfg.ports,
        cfg.machine
            .mn_prefixes
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
    );
    let result = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        let mut control = Some(control);
        for (w, (tun, s)) in tuns.into_iter().zip(socks).enumerate() {
            let ctl = if w == 0 { control.take() } else { None };
            let shared = &shared;
            let stop = &stop;
            let ports = &cfg.ports;
            let name = &name;
            handles.push(
                std::thread::Builder::new()
                    .name(format!("m6t-gw-{w}"))
                    .spawn_scoped(scope, move || {
                        worker(w, tun, s, ctl, shared, stop, ports, name)
                    })
                    .map_err(io("worker thread"))?,
            );
        }
        let mut r = Ok(());
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // One worker failing stops the others too.
                    stop.store(true, Ordering::Relaxed);
                    r = Err(e);
                }
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    r = Err(io("worker thread")(std::io::Error::other("panicked")));
                }
            }
        }
        r
    });
    for p in &cfg.machine.mn_prefixes {
        let _ = nl.del_route(p.addr(), p.len(), tun_index, cfg.route_metric);
    }
    tracing::info!("gateway stopped");
    result
}

/// Carries out a verdict on a packet from a mobile node.
fn act(
    v: FromMn,
    data: &[u8],
    from: std::net::SocketAddrV4,
    scratch: &[u8],
    tun_tx: &mut m6t_linux::tun::TunTx,
    tx: &mut SendBatch,
    s: &udp::Udp,
) {
    match v {
        FromMn::ToHome => tun_tx.push(data),
        FromMn::Echo(e) => tx.push(&e, from),
        FromMn::Reply(len) => tx.push(&scratch[..len], from),
        FromMn::Drop(_) => {}
    }
    if tx.is_full() {
        tx.flush(s);
    }
}

/// One data-plane thread: its TUN queue, its sockets, the timers of its own shard, and
/// (worker 0) the control socket.
#[allow(clippy::too_many_arguments)]
fn worker(
    me: usize,
    tun: Tun,
    socks: Vec<(u16, udp::Udp)>,
    control: Option<ControlServer>,
    shared: &Shared,
    stop: &AtomicBool,
    ports: &[u16],
    name: &str,
) -> Result<(), DaemonError> {
    let mut fds = vec![tun.as_raw_fd()];
    fds.extend(socks.iter().map(|(_, s)| s.as_raw_fd()));
    if let Some(c) = &control {
        fds.push(c.as_raw_fd());
    }
    let mut poller = poll::Poller::new(&fds).map_err(io("epoll"))?;
    let mut ready = Vec::new();
    let mut wake_by = WakeBy::new(Instant::now());
    let mut tun_rx = tun.reader();
    let mut tun_tx = tun.writer();
    let mut scratch = vec![0u8; m6t_wire::icmpv6::MAX_ERROR_LEN];
    let mut rx = RecvBatch::new(RECV_BATCH);
    let mut tx: Vec<SendBatch> = socks.iter().map(|_| SendBatch::new(SEND_BATCH)).collect();
    let mut reported_tun_errors = 0;
    let mut others: Vec<usize> = Vec::with_capacity(RECV_BATCH * 2);
    // Index positions of a batch being prefetched (a GRO batch holds up to 64 per slot).
    let mut positions: Vec<usize> = Vec::with_capacity(RECV_BATCH * 64);

    let mut now = Instant::now();
    let mut next = shared.lock(me).poll_timeout();
    while !stopping(stop) {
        // `now` is from before the last pass: early enough for the once-a-second stop check,
        // and one clock read fewer per wake-up.
        poller
            .wait_until(Some(wake_by.deadline(next, now)), &mut ready)
            .map_err(io("epoll"))?;
        now = Instant::now();
        if ready[0] {
            for _ in 0..BURST {
                let n = match tun_rx.recv() {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(io("TUN read")(e)),
                };
                for k in 0..n {
                    let pkt = tun_rx.packet(k);
                    // The destination's last 32 bits pick the shard (bytes 36..40).
                    let shard = shared.shard_of_bytes(pkt.get(36..40));
                    let verdict = shared.lock(shard).handle_from_home(now, pkt, &mut scratch);
                    match verdict {
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
                // Packets of this worker's own shard (nearly all: the kernel steers by
                // source) under one lock, their cache misses started together first; the
                // others afterwards, one lock each (never two locks held at once).
                others.clear();
                {
                    let mut g = shared.lock(me);
                    // Prefetching pays off only when there are misses to overlap.
                    if got >= PREFETCH_MIN {
                        // Buckets first, then the slots they name (by then cached); each
                        // address hashed once.
                        positions.clear();
                        for k in 0..got {
                            let d = rx.get(k).0;
                            if shared.shard_of_bytes(d.get(20..24)) == me {
                                if let Some((pos, p)) = g.prefetch_bucket(d) {
                                    prefetch::hint(p);
                                    positions.push(pos);
                                }
                            }
                        }
                        for &pos in &positions {
                            prefetch::hint(g.prefetch_slot(pos));
                        }
                    }
                    for k in 0..got {
                        let (data, from) = rx.get(k);
                        if shared.shard_of_bytes(data.get(20..24)) != me {
                            others.push(k);
                            continue;
                        }
                        let v = g.handle_from_mn(now, *port, from, data, &mut scratch);
                        act(v, data, from, &scratch, &mut tun_tx, &mut tx[i], s);
                    }
                }
                for &k in &others {
                    let (data, from) = rx.get(k);
                    let shard = shared.shard_of_bytes(data.get(20..24));
                    let v = shared
                        .lock(shard)
                        .handle_from_mn(now, *port, from, data, &mut scratch);
                    act(v, data, from, &scratch, &mut tun_tx, &mut tx[i], s);
                }
                tun_tx.flush();
                // A short batch means the socket is drained: save the recvmmsg that would
                // say so (poll is level-triggered; anything late wakes us again). This
                // halves the system calls of an idle gateway answering keep-alives.
                if got < RECV_BATCH {
                    break;
                }
            }
        }
        for (i, (_, s)) in socks.iter().enumerate() {
            if !tx[i].is_empty() {
                tx[i].flush(s);
            }
        }
        let errs = tun_tx.errors();
        if errs != reported_tun_errors {
            shared
                .tun_write_errors
                .fetch_add(errs - reported_tun_errors, Ordering::Relaxed);
            reported_tun_errors = errs;
        }
        if let Some(c) = &control {
            if ready[fds.len() - 1] {
                serve_reports(c, |req| shared.report(req, name, ports));
            }
        }
        let mut g = shared.lock(me);
        next = g.poll_timeout();
        if next.is_some_and(|t| t <= now) {
            // The longest garbage-collection pass, measured here since the machine has no
            // clock.
            let t = Instant::now();
            g.handle_timeout(now);
            let us = t.elapsed().as_micros() as u64;
            shared.gc_max_pause_us.fetch_max(us, Ordering::Relaxed);
            next = g.poll_timeout();
        }
        while let Some(e) = g.poll_event() {
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
    Ok(())
}
