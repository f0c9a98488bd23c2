//! Deterministic simulation of whole scenarios in virtual time: many mobile nodes (client
//! machines) behind NATs that time out, reboot and rebind mappings, the gateway machine, and
//! a home agent that answers, on a simulated network with delay and loss. Hours of
//! keep-alives run in a fraction of a second. Everything random comes from one seed (loss,
//! the clients' address draws, the gateway's hash keys) and no map is iterated in hash
//! order, so a run is reproducible bit for bit: its event log shows it.

mod common;
use common::pkt_a;
use m6t_proto::m6t::client::{
    ChangeReason, Client, ClientConfig, ClientCounter, FromGateway, FromTun,
};
use m6t_proto::m6t::gateway::{FromHome, FromMn, Gateway, GatewayConfig};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

const HA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const GW_PORT: u16 = 3544;
const WAN_DELAY: Duration = Duration::from_millis(15);
const HOME_DELAY: Duration = Duration::from_millis(1);

/// A tiny deterministic generator for loss decisions (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn lost(&mut self, percent: u64) -> bool {
        percent > 0 && self.next() % 100 < percent
    }
}

/// An endpoint-independent NAT with address-and-port-dependent filtering whose mappings
/// time out, as Linux masquerade behaves (lab-facts).
struct Nat {
    public: Ipv4Addr,
    timeout: Duration,
    out: BTreeMap<(Ipv4Addr, u16), (u16, Instant)>,
    back: BTreeMap<u16, (Ipv4Addr, u16)>,
    next_port: u16,
}

impl Nat {
    fn new(public: Ipv4Addr, timeout: Duration) -> Self {
        Nat {
            public,
            timeout,
            out: BTreeMap::new(),
            back: BTreeMap::new(),
            next_port: 20000,
        }
    }
    fn outbound(&mut self, now: Instant, inside: (Ipv4Addr, u16)) -> SocketAddrV4 {
        let fresh = match self.out.get(&inside) {
            Some((p, exp)) if *exp > now => Some(*p),
            _ => None,
        };
        let port = fresh.unwrap_or_else(|| {
            self.next_port = self.next_port.wrapping_add(1).max(20000);
            self.next_port
        });
        self.out.insert(inside, (port, now + self.timeout));
        self.back.insert(port, inside);
        SocketAddrV4::new(self.public, port)
    }
    fn inbound(&mut self, now: Instant, port: u16) -> Option<(Ipv4Addr, u16)> {
        let inside = *self.back.get(&port)?;
        let (p, exp) = self.out.get_mut(&inside)?;
        if *p != port || *exp <= now {
            return None;
        }
        *exp = now + self.timeout;
        Some(inside)
    }
    /// Forgets everything and comes back with another public address.
    fn reboot(&mut self, public: Ipv4Addr) {
        self.out.clear();
        self.back.clear();
        self.public = public;
        self.next_port = self.next_port.wrapping_add(1000).max(20000);
    }
}

struct Mn {
    client: Client,
    inside: Ipv4Addr,
    sock_port: u16,
    nat: usize,
    /// The MIPv6 layer above, reduced to its use of the tunnel: on every new care-of
    /// address it sends a BU to the HA and retransmits until answered.
    bu_due: Option<Instant>,
    bu_backoff: Duration,
    delivered: u64,
}

enum Ev {
    ToGateway { from: SocketAddrV4, data: Vec<u8> },
    ToHa { data: Vec<u8> },
    FromHa { data: Vec<u8> },
    ToNat { to: SocketAddrV4, data: Vec<u8> },
}

struct Sim {
    t0: Instant,
    now: Instant,
    gw: Gateway,
    nats: Vec<Nat>,
    mns: Vec<Mn>,
    events: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    payloads: BTreeMap<u64, Ev>,
    seq: u64,
    wakeups: BinaryHeap<Reverse<(Instant, usize)>>,
    rng: Rng,
    loss_percent: u64,
    next_sock_port: u16,
    scratch: Vec<u8>,
    /// Time of the last packet the HA answered, per MN.
    last_answer: Vec<Option<Instant>>,
    /// (NAT, inside address, socket port) -> MN, for delivering inbound packets.
    by_sock: BTreeMap<(usize, Ipv4Addr, u16), usize>,
    /// The one live wake-up of each MN (older heap entries are stale and skipped).
    wake_at: Vec<Option<Instant>>,
    /// Every machine event and address change, with its virtual time.
    log: String,
}

/// The seed the scenario tests run with.
const SEED: u64 = 0;

fn gateway_config() -> GatewayConfig {
    GatewayConfig {
        ha_addresses: vec![HA],
        mn_prefixes: vec!["fd00:6d36:7400::/48".parse().unwrap()],
        icmp_source: "2001:db8:1::2".parse().unwrap(),
        max_states_per_ipv4: 10_000,
        new_state_burst: 10_000,
        new_state_rate: 10_000,
        ..GatewayConfig::default()
    }
}

/// The gateway's hash seed of a simulation seed.
fn gateway_seed(seed: u64) -> [u8; 32] {
    let mut s = [0x67; 32];
    s[..8].copy_from_slice(&seed.to_be_bytes());
    s
}

impl Sim {
    fn new(n_mn: usize, mns_per_nat: usize, nat_timeout: Duration, loss_percent: u64) -> Sim {
        Sim::with_seed(SEED, n_mn, mns_per_nat, nat_timeout, loss_percent)
    }

    fn with_seed(
        seed: u64,
        n_mn: usize,
        mns_per_nat: usize,
        nat_timeout: Duration,
        loss_percent: u64,
    ) -> Sim {
        let t0 = Instant::now();
        let n_nat = n_mn.div_ceil(mns_per_nat);
        let nats = (0..n_nat)
            .map(|i| {
                Nat::new(
                    Ipv4Addr::new(203, 0, (113 + i / 250) as u8, (i % 250) as u8 + 1),
                    nat_timeout,
                )
            })
            .collect();
        let mut sim = Sim {
            t0,
            now: t0,
            gw: Gateway::new(gateway_config(), gateway_seed(seed)),
            nats,
            mns: Vec::new(),
            events: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            seq: 0,
            wakeups: BinaryHeap::new(),
            rng: Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d)),
            loss_percent,
            next_sock_port: 1024,
            scratch: vec![0; 1280],
            last_answer: vec![None; n_mn],
            by_sock: BTreeMap::new(),
            wake_at: vec![None; n_mn],
            log: String::new(),
        };
        let seed_of_sim = seed;
        for i in 0..n_mn {
            let prefix = format!("fd00:6d36:7400:1:{:x}::/80", i + 1)
                .parse()
                .unwrap();
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            seed[8..16].copy_from_slice(&seed_of_sim.to_be_bytes());
            sim.mns.push(Mn {
                client: Client::new(ClientConfig::new(prefix, vec![GW_PORT]), seed),
                inside: Ipv4Addr::new(192, 0, 2, (i % 250) as u8 + 2),
                sock_port: 0,
                nat: i / mns_per_nat,
                bu_due: None,
                bu_backoff: Duration::from_secs(1),
                delivered: 0,
            });
        }
        for i in 0..n_mn {
            let now = sim.now;
            let inside = sim.mns[i].inside;
            sim.mns[i].client.handle_attachment(now, Some(inside));
            sim.service_mn(i);
        }
        sim
    }

    /// Virtual time since the start, for the log.
    fn vt(&self) -> u128 {
        (self.now - self.t0).as_nanos()
    }

    /// Moves the gateway's events to the log.
    fn log_gateway(&mut self) {
        while let Some(e) = self.gw.poll_event() {
            let t = self.vt();
            let _ = writeln!(self.log, "{t} gw {e:?}");
        }
    }

    /// The log with every counter of every machine appended.
    fn log_with_counters(&mut self) -> String {
        self.log_gateway();
        let mut out = std::mem::take(&mut self.log);
        let t = self.vt();
        for c in self.gw.counters().snapshot() {
            let _ = writeln!(out, "{t} gw {} {}", c.name, c.value);
        }
        for (i, m) in self.mns.iter().enumerate() {
            for c in m.client.counters().snapshot() {
                let _ = writeln!(out, "{t} mn{i} {} {}", c.name, c.value);
            }
            let _ = writeln!(out, "{t} mn{i} delivered {}", m.delivered);
        }
        out
    }

    fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    fn schedule(&mut self, delay: Duration, ev: Ev) {
        if self.rng.lost(self.loss_percent) {
            return;
        }
        self.seq += 1;
        self.payloads.insert(self.seq, ev);
        self.events.push(Reverse((self.now + delay, self.seq, 0)));
    }

    /// Sends a packet of MN `i` through its NAT to the gateway.
    fn mn_send(&mut self, i: usize, data: Vec<u8>) {
        let (nat, inside, port) = (self.mns[i].nat, self.mns[i].inside, self.mns[i].sock_port);
        let from = self.nats[nat].outbound(self.now, (inside, port));
        self.schedule(WAN_DELAY, Ev::ToGateway { from, data });
    }

    /// Runs the MN's driver duties: address changes (new socket), keep-alives, BUs, timer.
    fn service_mn(&mut self, i: usize) {
        let now = self.now;
        while let Some(ch) = self.mns[i].client.poll_change() {
            let t = self.vt();
            let _ = writeln!(self.log, "{t} mn{i} {ch:?}");
            self.next_sock_port = self.next_sock_port.wrapping_add(1).max(1024);
            let m = &mut self.mns[i];
            self.by_sock.remove(&(m.nat, m.inside, m.sock_port));
            m.sock_port = self.next_sock_port;
            self.by_sock.insert((m.nat, m.inside, m.sock_port), i);
            if ch.new.is_some() {
                self.mns[i].bu_due = Some(now);
                self.mns[i].bu_backoff = Duration::from_secs(1);
            }
        }
        if let Some(ka) = self.mns[i].client.poll_keepalive() {
            self.mn_send(i, ka.to_vec());
        }
        if self.mns[i].bu_due.is_some_and(|t| t <= now) {
            if let Some(addr) = self.mns[i].client.address() {
                let bu = pkt_a(addr, HA, 80);
                let v = self.mns[i]
                    .client
                    .handle_from_tun(now, &bu, &mut self.scratch);
                if v == FromTun::Send {
                    self.mn_send(i, bu);
                }
                let b = self.mns[i].bu_backoff;
                self.mns[i].bu_due = Some(now + b);
                self.mns[i].bu_backoff = (b * 2).min(Duration::from_secs(32));
            }
        }
        let mut next = self.mns[i].client.poll_timeout();
        if let Some(b) = self.mns[i].bu_due {
            next = Some(next.map_or(b, |n| n.min(b)));
        }
        if next != self.wake_at[i] {
            self.wake_at[i] = next;
            if let Some(t) = next {
                self.wakeups.push(Reverse((t, i)));
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::ToGateway { from, data } => {
                match self
                    .gw
                    .handle_from_mn(now, GW_PORT, from, &data, &mut self.scratch)
                {
                    FromMn::ToHome => self.schedule(HOME_DELAY, Ev::ToHa { data }),
                    FromMn::Echo(e) => self.schedule(
                        WAN_DELAY,
                        Ev::ToNat {
                            to: from,
                            data: e.to_vec(),
                        },
                    ),
                    FromMn::Reply(n) => {
                        let d = self.scratch[..n].to_vec();
                        self.schedule(WAN_DELAY, Ev::ToNat { to: from, data: d })
                    }
                    FromMn::Drop(_) => {}
                }
                self.log_gateway();
            }
            Ev::ToHa { data } => {
                if data.len() >= 40 && data[24..40] == HA.octets() {
                    self.schedule(
                        HOME_DELAY,
                        Ev::FromHa {
                            data: common::swap(&data),
                        },
                    );
                }
            }
            Ev::FromHa { data } => {
                if let FromHome::ToMn { peer, .. } =
                    self.gw.handle_from_home(now, &data, &mut self.scratch)
                {
                    self.schedule(WAN_DELAY, Ev::ToNat { to: peer, data });
                }
                self.log_gateway();
            }
            Ev::ToNat { to, data } => {
                let Some(nat) = self.nats.iter().position(|n| n.public == *to.ip()) else {
                    return;
                };
                let Some((inside, port)) = self.nats[nat].inbound(now, to.port()) else {
                    return;
                };
                let Some(&i) = self.by_sock.get(&(nat, inside, port)) else {
                    return;
                };
                if self.mns[i].client.handle_from_gateway(now, &data) == FromGateway::ToTun {
                    self.mns[i].delivered += 1;
                    self.mns[i].bu_due = None;
                    self.last_answer[i] = Some(now);
                }
                self.service_mn(i);
            }
        }
    }

    /// Runs until virtual time `until`.
    fn run_until(&mut self, until: Instant) {
        loop {
            let te = self.events.peek().map(|Reverse((t, _, _))| *t);
            let tw = self.wakeups.peek().map(|Reverse((t, _))| *t);
            let tg = self.gw.poll_timeout();
            let next = [te, tw, tg].into_iter().flatten().min();
            let Some(next) = next.filter(|t| *t <= until) else {
                self.now = until;
                return;
            };
            self.now = next.max(self.now);
            if te == Some(next) {
                let Reverse((_, seq, _)) = self.events.pop().unwrap();
                if let Some(ev) = self.payloads.remove(&seq) {
                    self.handle(ev);
                }
            } else if tw == Some(next) {
                let Reverse((t, i)) = self.wakeups.pop().unwrap();
                if self.wake_at[i] != Some(t) {
                    continue;
                }
                self.wake_at[i] = None;
                let due = self.mns[i]
                    .client
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now);
                if due {
                    let now = self.now;
                    self.mns[i].client.handle_timeout(now);
                }
                self.service_mn(i);
            } else {
                let now = self.now;
                let n = self.gw.handle_timeout(now);
                if n > 0 {
                    let t = self.vt();
                    let _ = writeln!(self.log, "{t} gw expired {n}");
                }
                self.log_gateway();
            }
        }
    }

    /// The HA sends one packet to every MN's current address; returns how many arrive.
    fn ha_reaches_all(&mut self) -> usize {
        let before: Vec<u64> = self.mns.iter().map(|m| m.delivered).collect();
        for i in 0..self.mns.len() {
            if let Some(a) = self.mns[i].client.address() {
                let p = pkt_a(HA, a, 60);
                self.seq += 1;
                self.payloads.insert(self.seq, Ev::FromHa { data: p });
                self.events.push(Reverse((self.now, self.seq, 0)));
            }
        }
        let until = self.now + Duration::from_secs(1);
        self.run_until(until);
        self.mns
            .iter()
            .zip(before)
            .filter(|(m, b)| m.delivered > *b)
            .count()
    }

    fn total(&self, c: ClientCounter) -> u64 {
        self.mns.iter().map(|m| m.client.counters().get(c)).sum()
    }
}

#[test]
fn two_hours_of_keepalives_keep_a_thousand_mns_reachable() {
    // NAT timeout 60 s (< gateway active lifetime 150 s); keep-alives every 30 s.
    let mut sim = Sim::new(1000, 10, Duration::from_secs(60), 0);
    let t = sim.at(Duration::from_secs(5));
    sim.run_until(t);
    assert_eq!(sim.gw.len(), 1000, "every MN registered");
    let end = sim.at(Duration::from_secs(2 * 3600));
    sim.run_until(end);
    assert_eq!(sim.total(ClientCounter::PathsDead), 0);
    assert_eq!(sim.gw.len(), 1000, "no state lost, none leaked");
    assert_eq!(sim.ha_reaches_all(), 1000);
    // 2 h / 30 s = 240 keep-alives each.
    let ka = sim.total(ClientCounter::KeepalivesSent);
    assert!((239_000..=241_000).contains(&ka), "{ka} keep-alives");
}

#[test]
fn with_loss_every_mn_ends_up_reachable() {
    // 5 % loss on every hop: some paths are declared dead and re-registered; at the end
    // every MN is reachable on its current address and no stale state outlives its life.
    let mut sim = Sim::new(200, 10, Duration::from_secs(60), 5);
    let end = sim.at(Duration::from_secs(3600));
    sim.run_until(end);
    sim.loss_percent = 0;
    let settle = sim.now + Duration::from_secs(70);
    sim.run_until(settle);
    assert_eq!(sim.ha_reaches_all(), 200);
    assert!(sim.gw.len() <= 200 + sim.total(ClientCounter::PathsDead) as usize);
    let t = sim.now + Duration::from_secs(200);
    sim.run_until(t);
    assert_eq!(sim.gw.len(), 200, "stale states collected");
}

/// Sends data from MN 0 every 100 ms and returns how long after `event` the HA's answers
/// came back.
fn recovery_after(event: impl FnOnce(&mut Sim), idle: bool) -> Duration {
    let mut sim = Sim::new(1, 1, Duration::from_secs(60), 0);
    let t = sim.at(Duration::from_secs(10));
    sim.run_until(t);
    assert!(sim.last_answer[0].is_some());
    let t_event = sim.now;
    event(&mut sim);
    let mut t = t_event;
    for _ in 0..1200 {
        t += Duration::from_millis(100);
        if !idle {
            if let Some(a) = sim.mns[0].client.address() {
                let now = sim.now;
                let p = pkt_a(a, HA, 100);
                if sim.mns[0].client.handle_from_tun(now, &p, &mut sim.scratch) == FromTun::Send {
                    sim.mn_send(0, p);
                }
                sim.service_mn(0);
            }
        }
        sim.run_until(t);
        if sim.last_answer[0].is_some_and(|a| a > t_event) {
            return sim.last_answer[0].unwrap() - t_event;
        }
    }
    panic!("never recovered");
}

#[test]
fn recovers_from_a_nat_reboot_by_itself() {
    let d = recovery_after(|s| s.nats[0].reboot(Ipv4Addr::new(198, 51, 100, 99)), false);
    // echo_timeout before the first probe, 3 probes 1 s apart, then a new address and a
    // BU round trip.
    assert!(d <= Duration::from_millis(4_100), "{d:?}");
    assert!(d >= Duration::from_secs(3), "{d:?}");
}

#[test]
fn recovers_from_nat_rebinding_and_from_a_gateway_restart() {
    // Rebinding: same public address, mapping lost (new port).
    let d = recovery_after(
        |s| {
            let p = s.nats[0].public;
            s.nats[0].reboot(p)
        },
        false,
    );
    assert!(d <= Duration::from_millis(4_100), "{d:?}");
    // Gateway restart while the MN is idle: noticed at the next keep-alive.
    let d = recovery_after(
        |s| s.gw = Gateway::new(gateway_config(), gateway_seed(1)),
        true,
    );
    assert!(d <= Duration::from_secs(30 + 4), "{d:?}");
}

#[test]
fn a_dead_path_changes_address_reason_path_dead() {
    let mut sim = Sim::new(1, 1, Duration::from_secs(60), 0);
    let t = sim.at(Duration::from_secs(5));
    sim.run_until(t);
    let a1 = sim.mns[0].client.address().unwrap();
    sim.gw = Gateway::new(gateway_config(), gateway_seed(1));
    let t = sim.at(Duration::from_secs(60));
    sim.run_until(t);
    let a2 = sim.mns[0].client.address().unwrap();
    assert_ne!(a1, a2);
    assert_eq!(sim.total(ClientCounter::PathsDead), 1);
    let _ = ChangeReason::PathDead;
}

/// The 1000-MN scenario of [`two_hours_of_keepalives_keep_a_thousand_mns_reachable`] and
/// its log.
fn thousand_mn_log(seed: u64) -> String {
    // 5 % loss, so the seeded loss decisions are part of what must repeat.
    let mut sim = Sim::with_seed(seed, 1000, 10, Duration::from_secs(60), 5);
    let end = sim.at(Duration::from_secs(2 * 3600));
    sim.run_until(end);
    let reached = sim.ha_reaches_all();
    format!("{}reached {reached}\n", sim.log_with_counters())
}

#[test]
fn the_same_seed_gives_the_same_run_bit_for_bit() {
    let a = thousand_mn_log(7);
    let b = thousand_mn_log(7);
    assert!(a.lines().count() > 3000, "{} lines", a.lines().count());
    if a != b {
        let (n, (x, y)) = a
            .lines()
            .zip(b.lines())
            .enumerate()
            .find(|(_, (x, y))| x != y)
            .unwrap_or((0, ("", "")));
        panic!("runs differ at line {n}: {x:?} vs {y:?}");
    }
    assert_ne!(a, thousand_mn_log(8), "another seed gives another run");
}
