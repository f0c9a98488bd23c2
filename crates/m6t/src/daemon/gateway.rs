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
    bind_control, counters_with, io, os_seed, publish_metrics, serve_reports, shutdown,
    start_metrics, DaemonError, BURST,
};
use crate::metrics::{GaugeValue, Publisher, Snapshot};
use m6t_linux::caps::Capability;

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
use m6t_linux::budget::{Exempt, SourceBudget};
use m6t_linux::failures::{Failure, Failures};
use m6t_linux::runtime::{Runtime, Shutdown};
use m6t_linux::{caps, control::ControlServer, netlink::Netlink, prefetch, tun::Tun, udp};
use m6t_proto::m6t::gateway::{FromHome, FromMn, Gateway, GatewayEvent, StateKind};
use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// A worker's event sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Its TUN queue: packets from the home side.
    Tun,
    /// Its socket for the port at this position of `ports`.
    Udp(usize),
    /// `m6t status` (worker 0 only).
    Control,
}

/// What the workers share: the shards and the driver's own counters.
struct Shared {
    shards: Vec<Mutex<Gateway>>,
    failures: Failures,
    gc_max_pause_us: AtomicU64,
    /// The kernel's per-source budget, when configured (its drop counter).
    budget: Option<SourceBudget>,
    /// The drop log of all shards, written by whichever worker passes when it is due.
    drops: Mutex<super::DropLog>,
}

impl Shared {
    /// Datagrams the kernel's per-source budget dropped (0 without one). A failed read of
    /// the counter is counted and reads as 0 this time.
    fn source_drops(&self) -> u64 {
        match &self.budget {
            Some(b) => b.dropped().unwrap_or_else(|e| {
                self.failures.record(
                    Failure::Budget,
                    1,
                    format_args!("reading the source budget: {e}"),
                );
                0
            }),
            None => 0,
        }
    }

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

    /// What the metrics show: the counters of [`Self::report`] (summed over the shards),
    /// the states by kind and the longest garbage-collection pause.
    fn snapshot(&self) -> Snapshot {
        let mut counters: Vec<m6t_proto::stats::Counter> = Vec::new();
        let (mut len, mut active) = (0, 0);
        for i in 0..self.shards.len() {
            let g = self.lock(i);
            for (k, c) in g.counters().snapshot().into_iter().enumerate() {
                match counters.get_mut(k) {
                    Some(t) => t.value += c.value,
                    None => counters.push(c),
                }
            }
            len += g.len();
            active += g.active_len();
        }
        const STATES: &str = "States of mobile nodes by kind (temporary, active)";
        Snapshot {
            counters: counters_with(
                counters,
                &self.failures,
                &[("drop_source_budget", self.source_drops())],
            ),
            gauges: vec![
                GaugeValue::labelled("states", STATES, "kind", "temporary", (len - active) as f64),
                GaugeValue::labelled("states", STATES, "kind", "active", active as f64),
                GaugeValue::plain(
                    "gc_max_pause_seconds",
                    "Longest garbage-collection pass of a shard since start in seconds",
                    self.gc_max_pause_us.load(Ordering::Relaxed) as f64 / 1e6,
                ),
            ],
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
            start: crate::status::start(),
            counters: counters_with(
                counters,
                &self.failures,
                &[
                    ("drop_source_budget", self.source_drops()),
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
    crate::status::mark_start();
    caps::check_tunnel_privileges()?;
    // First: a metrics port in use stops the gateway before it changes anything.
    let publisher = start_metrics(cfg.metrics_listen, "gateway", false)?;
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
    // The kernel's per-source budget on every socket, before the first datagram is read.
    let budget = match cfg.source_limit {
        Some((rate, burst)) => {
            let peers = u32::try_from(cfg.machine.max_states).unwrap_or(u32::MAX);
            let b = SourceBudget::new(rate, burst, peers, Exempt::SenderAndInner6).map_err(io(
                "per-source budget (key `source_packet_rate`; 0 turns it off)",
            ))?;
            for (p, s) in socks.iter().flatten() {
                b.attach(s).map_err(io(format!(
                    "attaching the per-source budget to UDP port {p}"
                )))?;
            }
            Some(b)
        }
        None => None,
    };
    let control = bind_control(&cfg.control_socket)?;
    let stop = shutdown()?;
    let shard_cfg = cfg.machine.shard(n);
    let mut shards = Vec::with_capacity(n);
    for _ in 0..n {
        shards.push(Mutex::new(Gateway::new(shard_cfg.clone(), os_seed()?)));
    }
    let shared = Shared {
        shards,
        failures: Failures::default(),
        gc_max_pause_us: AtomicU64::new(0),
        budget,
        drops: Mutex::new(super::DropLog::new(Instant::now())),
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
    // Everything privileged is open: keep only what the loop still needs.
    super::keep_only(cfg.user.as_ref(), &[Capability::CAP_NET_ADMIN])?;
    m6t_linux::notify::ready();
    let result = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        let mut control = Some(control);
        let mut publisher = publisher;
        for (w, (tun, s)) in tuns.into_iter().zip(socks).enumerate() {
            // Worker 0 answers `m6t status` and publishes the metrics for all.
            let ctl = if w == 0 { control.take() } else { None };
            let publisher = if w == 0 { publisher.take() } else { None };
            let shared = &shared;
            let stop = &stop;
            let ports = &cfg.ports;
            let name = &name;
            handles.push(
                std::thread::Builder::new()
                    .name(format!("m6t-gw-{w}"))
                    .spawn_scoped(scope, move || {
                        worker(w, tun, s, ctl, publisher, shared, stop, ports, name)
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
                    stop.stop();
                    r = Err(e);
                }
                Err(_) => {
                    stop.stop();
                    r = Err(io("worker thread")(std::io::Error::other("panicked")));
                }
            }
        }
        r
    });
    m6t_linux::notify::stopping();
    for p in &cfg.machine.mn_prefixes {
        let r = nl.del_route(p.addr(), p.len(), tun_index, cfg.route_metric);
        shared.failures.check(
            Failure::Netlink,
            format_args!("removing the route to {p}"),
            r,
        );
    }
    tracing::info!("gateway stopped");
    result
}

/// One data-plane thread: its TUN queue, its sockets, the timers of its own shard, and
/// (worker 0) the control socket.
#[allow(clippy::too_many_arguments)]
fn worker(
    me: usize,
    tun: Tun,
    socks: Vec<(u16, udp::Udp)>,
    control: Option<ControlServer>,
    mut publisher: Option<Publisher>,
    shared: &Shared,
    stop: &Shutdown,
    ports: &[u16],
    name: &str,
) -> Result<(), DaemonError> {
    let mut rt = Runtime::new(stop).map_err(io("epoll"))?;
    rt.add(&tun, Source::Tun).map_err(io("epoll"))?;
    for (i, (_, s)) in socks.iter().enumerate() {
        rt.add(s, Source::Udp(i)).map_err(io("epoll"))?;
    }
    if let Some(c) = &control {
        rt.add(c, Source::Control).map_err(io("epoll"))?;
    }
    let mut w = Worker {
        me,
        shared,
        tun_tx: tun.writer(),
        scratch: vec![0u8; m6t_wire::icmpv6::MAX_ERROR_LEN],
        rx: RecvBatch::new(RECV_BATCH),
        tx: socks.iter().map(|_| SendBatch::new(SEND_BATCH)).collect(),
        others: Vec::with_capacity(RECV_BATCH * 2),
        positions: Vec::with_capacity(RECV_BATCH * 64),
        socks,
    };
    let mut tun_rx = tun.reader();
    let mut next = shared.lock(me).poll_timeout();
    next = publish_metrics(&mut publisher, Instant::now(), next, || shared.snapshot());
    while !rt.stopping() {
        let ready = rt.wait(next).map_err(io("epoll"))?;
        // One clock read per wake-up, shared by the whole pass.
        let now = Instant::now();
        for &source in ready {
            match source {
                Source::Tun => w.on_home(&mut tun_rx, now).map_err(io("TUN read"))?,
                Source::Udp(i) => w.on_mn(i, now),
                Source::Control => {
                    if let Some(c) = &control {
                        serve_reports(c, |req| shared.report(req, name, ports));
                    }
                }
            }
        }
        next = w.after(now);
        next = publish_metrics(&mut publisher, now, next, || shared.snapshot());
        // Uncontended but for the moment one worker logs; a busy lock means it does.
        if let Ok(mut d) = shared.drops.try_lock() {
            d.pass(now, || shared.snapshot().counters);
        }
    }
    Ok(())
}

/// A worker's buffers, allocated once, and what it needs to carry out verdicts.
struct Worker<'a> {
    me: usize,
    shared: &'a Shared,
    socks: Vec<(u16, udp::Udp)>,
    tun_tx: m6t_linux::tun::TunTx,
    scratch: Vec<u8>,
    rx: RecvBatch,
    /// One send batch per socket.
    tx: Vec<SendBatch>,
    /// Positions in a received batch that belong to another worker's shard.
    others: Vec<usize>,
    /// Index positions of a batch being prefetched (a GRO batch holds up to 64 per slot).
    positions: Vec<usize>,
}

impl Worker<'_> {
    /// Packets from the home side: to the mobile node's NAT mapping, through the socket of
    /// the port its state was created on.
    fn on_home(&mut self, tun_rx: &mut m6t_linux::tun::TunRx, now: Instant) -> std::io::Result<()> {
        let (shared, socks, tx, scratch, tun_tx) = (
            self.shared,
            &self.socks,
            &mut self.tx,
            &mut self.scratch,
            &mut self.tun_tx,
        );
        tun_rx.drain(BURST, |pkt| {
            // The destination's last 32 bits pick the shard (bytes 36..40).
            let shard = shared.shard_of_bytes(pkt.get(36..40));
            let verdict = shared.lock(shard).handle_from_home(now, pkt, scratch);
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
        })?;
        tun_tx.flush();
        Ok(())
    }

    /// Datagrams on socket `i`: the ones of this worker's own shard (nearly all: the kernel
    /// steers by source) under one lock, their cache misses started together first; the
    /// others afterwards, one lock each (never two locks held at once).
    fn on_mn(&mut self, i: usize, now: Instant) {
        let (port, s) = (self.socks[i].0, &self.socks[i].1);
        let shared = self.shared;
        for _ in 0..BURST / RECV_BATCH {
            let got = match self.rx.recv(s) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // ICMP errors from earlier sends surface here: counted, nothing else to do.
                Err(e) => {
                    shared
                        .failures
                        .record(Failure::Recv, 1, format_args!("UDP port {port}: {e}"));
                    continue;
                }
            };
            self.others.clear();
            {
                let mut g = shared.lock(self.me);
                // Prefetching pays off only when there are misses to overlap.
                if got >= PREFETCH_MIN {
                    // Buckets first, then the slots they name (by then cached); each
                    // address hashed once.
                    self.positions.clear();
                    for k in 0..got {
                        let d = self.rx.get(k).0;
                        if shared.shard_of_bytes(d.get(20..24)) == self.me {
                            if let Some((pos, p)) = g.prefetch_bucket(d) {
                                prefetch::hint(p);
                                self.positions.push(pos);
                            }
                        }
                    }
                    for &pos in &self.positions {
                        prefetch::hint(g.prefetch_slot(pos));
                    }
                }
                for k in 0..got {
                    let (data, from) = self.rx.get(k);
                    if shared.shard_of_bytes(data.get(20..24)) != self.me {
                        self.others.push(k);
                        continue;
                    }
                    let v = g.handle_from_mn(now, port, from, data, &mut self.scratch);
                    act(
                        v,
                        data,
                        from,
                        &self.scratch,
                        &mut self.tun_tx,
                        &mut self.tx[i],
                        s,
                    );
                }
            }
            for &k in &self.others {
                let (data, from) = self.rx.get(k);
                let shard = shared.shard_of_bytes(data.get(20..24));
                let v = shared
                    .lock(shard)
                    .handle_from_mn(now, port, from, data, &mut self.scratch);
                act(
                    v,
                    data,
                    from,
                    &self.scratch,
                    &mut self.tun_tx,
                    &mut self.tx[i],
                    s,
                );
            }
            self.tun_tx.flush();
            // A short batch means the socket is drained: save the recvmmsg that would say
            // so (epoll is level-triggered; anything late wakes us again). This halves the
            // system calls of an idle gateway answering keep-alives.
            if got < RECV_BATCH {
                break;
            }
        }
    }

    /// After the sources: the queued sends, the failures of this pass, the shard's timers
    /// and events. Returns the shard's next deadline.
    fn after(&mut self, now: Instant) -> Option<Instant> {
        let shared = self.shared;
        for (i, (port, s)) in self.socks.iter().enumerate() {
            if !self.tx[i].is_empty() {
                self.tx[i].flush(s);
            }
            shared.failures.record(
                Failure::UdpSend,
                self.tx[i].take_errors(),
                format_args!("UDP port {port}: send refused"),
            );
        }
        shared.failures.record(
            Failure::TunWrite,
            self.tun_tx.take_errors(),
            "TUN write refused",
        );
        let mut g = shared.lock(self.me);
        let mut next = g.poll_timeout();
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
            // An active state's sender passes the kernel's budget; an expired one no more.
            if let Some(b) = &shared.budget {
                let r = match &e {
                    GatewayEvent::Activated { address, peer } => b.add_peer(*peer, *address),
                    GatewayEvent::Expired {
                        address,
                        peer,
                        kind: StateKind::Active,
                    } => b.remove_peer(*peer, *address),
                    _ => Ok(()),
                };
                if let Err(err) = r {
                    shared.failures.record(
                        Failure::Budget,
                        1,
                        format_args!("the per-source budget's map of active states: {err}"),
                    );
                }
            }
            match e {
                // Per-state lines at debug level: a mass expiry must not flood the log.
                GatewayEvent::Created { address, peer } => {
                    tracing::debug!("state {address} temporary from {peer}")
                }
                GatewayEvent::Activated { address, .. } => {
                    tracing::debug!("state {address} active")
                }
                GatewayEvent::Expired { address, kind, .. } => {
                    tracing::debug!("state {address} expired ({kind:?})")
                }
            }
        }
        next
    }
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
