//! The IKEv2 driver the home agent and the mobile node share: the sans-IO
//! [`m6t_ike::endpoint::Endpoint`] fed with what arrives on UDP port 4500 behind the
//! non-ESP marker, its timers, its datagrams sent from the same socket, and its CHILD_SAs
//! keyed into the SAD slots of `[ipsec]` (RFC 4877 section 4: IKE creates the SAs the SPD
//! names). The mobile node's IKE SA runs from the care-of address it registers, IPv4 or
//! IPv6 (a native IPv6 network, or an m6t tunnel used as the care-of interface), to the
//! home agent's address of the same family; after a move, within a family or across, it
//! continues from the new address without a new IKE SA, as the K flag of RFC 6275 section
//! 11.7.1 allows, and the home agent follows the first authenticated message from there
//! (RFC 7296 section 2.23), answering from the address it came to.
//!
//! Port 4500 in both families, from the first message: RFC 5555 section 5 says the mobile
//! node MUST set its SA up over 4500 whatever the NAT detection finds, "to avoid switching
//! between ports 500 and 4500", and RFC 7296 section 2.23 lets an initiator start there.
//! Over IPv6 no NAT needs it, but the one IKE SA moves between an IPv4 care-of address
//! behind a NAT and an IPv6 one: on 4500 throughout, the move is an address change only
//! (what [`Endpoint::local_moved`] and the home agent's following of authenticated
//! messages on 4500 do), where an SA on 500 would need a new exchange to float to 4500
//! behind the next NAT. strongSwan does the same for a mobile peer: it listens on 500 and
//! 4500 of both families and keeps an SA that floated to 4500 there.

use crate::ike_config::IkeSetup;
use m6t_ike::endpoint::{Endpoint, Failure as IkeFailure, IkeEvent, IkeSaId, NAT_T_PORT};
use m6t_ipsec::{Direction, Ipsec};
use m6t_linux::failures::{Failure, Failures};
use m6t_linux::tif::TifSockets;
use m6t_proto::dsmip::tif::Outer;
use m6t_proto::stats::Counter;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How long the mobile node waits before a new IKE SA after one failed or went down: a
/// second, so that a restarted home agent is back at once, while a refused one (wrong key)
/// costs it one IKE_SA_INIT a second at most.
const RETRY: Duration = Duration::from_secs(1);

/// The IKE endpoint of a daemon and where its CHILD_SAs' keys go.
pub(crate) struct IkeDriver {
    ep: Endpoint,
    /// CHILD_SA name -> (outbound, inbound) SAD slot.
    slots: BTreeMap<String, (usize, usize)>,
    /// Mobile node: the home agent's address and our care-of address (the same family).
    target: Option<(IpAddr, IpAddr)>,
    /// Mobile node: the IKE SA toward the home agent, established or being set up.
    current: Option<IkeSaId>,
    /// Mobile node: no new attempt before this.
    retry_at: Option<Instant>,
    /// Mobile node: the care-of address the current IKE SA was made from.
    made_from: Option<IpAddr>,
    /// Seeds the IVs of the SAs IKE keys.
    iv_seed: u64,
    /// The last failure logged, when, and how many identical ones were not logged since.
    last_failure: Option<(String, Instant, u32)>,
    /// `keylog_file`: IKE keys for tshark, debugging only.
    keylog: Option<std::path::PathBuf>,
    /// `rekey_child_bytes`, and for each CHILD_SA keyed (by name): its IKE SA, inbound SPI
    /// and the slots' byte counts when it was keyed.
    rekey_bytes: Option<u64>,
    keyed: BTreeMap<String, (IkeSaId, u32, u64)>,
}

/// The wall clock for certificate validity (the machine reads none itself).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The same failure is logged at most once in this time, then with its count.
const FAILURE_LOG_GAP: Duration = Duration::from_secs(60);

impl IkeDriver {
    /// The driver for `setup`, its generator seeded from the daemon's randomness.
    pub(crate) fn new(setup: &IkeSetup, seed: [u8; 32]) -> IkeDriver {
        let mut iv = [0u8; 8];
        iv.copy_from_slice(&seed[24..32]);
        if let Some(k) = &setup.keylog {
            tracing::warn!(
                "[ike] keylog_file: IKE SA keys are written to {} for debugging; remove it in production",
                k.display()
            );
        }
        let mut ep = Endpoint::new(setup.config.clone(), seed);
        ep.set_unix_time(unix_now());
        IkeDriver {
            ep,
            slots: setup.slots.clone(),
            target: None,
            current: None,
            retry_at: None,
            made_from: None,
            iv_seed: u64::from_le_bytes(iv),
            last_failure: None,
            keylog: setup.keylog.clone(),
            rekey_bytes: setup.rekey_bytes,
            keyed: BTreeMap::new(),
        }
    }

    /// A UDP payload that arrived on port 4500 (of `local`, IPv4 or IPv6) and is not ESP.
    pub(crate) fn datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
    ) {
        self.ep.set_unix_time(unix_now());
        self.ep.handle(now, local, from, data);
    }

    /// Bare ESP from `outer` with `spi`, which no SA has: the peer is told if we have no
    /// IKE SA with it (we restarted; RFC 7296 section 2.21.4), at the address and port its
    /// IKE uses, 4500 (over a NAT, the mapping the ESP came from).
    pub(crate) fn esp_unknown_spi(
        &mut self,
        now: Instant,
        socks: &TifSockets,
        outer: Outer,
        spi: u32,
    ) {
        let remote = match outer {
            Outer::Udp(from) => SocketAddr::V4(from),
            Outer::Ipv4(a) => SocketAddr::new(IpAddr::V4(a), NAT_T_PORT),
            Outer::Ipv6(a) => SocketAddr::new(IpAddr::V6(a), NAT_T_PORT),
        };
        if let Some(local) = socks.ike_local(remote) {
            self.ep.esp_unknown_spi(now, local, remote, spi);
        }
    }

    /// Mobile node: the IKE SA must run from `coa` to the home agent's address `ha` of the
    /// same family.
    pub(crate) fn attach(&mut self, now: Instant, coa: IpAddr, ha: IpAddr) {
        let moved = self.target.is_some_and(|(_, c)| c != coa);
        self.target = Some((ha, coa));
        if let (true, Some(ike)) = (moved, self.current) {
            let local = SocketAddr::new(coa, NAT_T_PORT);
            if self.ep.sa_with("home-agent") == Some(ike) && self.ep.local_moved(ike, local) {
                // From the other family the home agent is reached at its address of that
                // family, still on 4500; within one family it stays where it is (the home
                // agent is behind no NAT, its port is 4500).
                let remote = self
                    .ep
                    .sas()
                    .into_iter()
                    .find(|s| s.id == ike)
                    .map(|s| s.remote);
                if remote.is_some_and(|r| r.is_ipv4() != coa.is_ipv4()) {
                    self.ep.peer_moved(ike, SocketAddr::new(ha, NAT_T_PORT));
                }
                tracing::info!("IKE SA continues from care-of address {coa}");
                // RFC 5555 section 5.1: an empty INFORMATIONAL, so that the home agent's IKE
                // SA follows (RFC 7296 section 2.23).
                self.ep.check_liveness(now, ike);
            } else {
                // Not established yet: start again from the new address.
                self.ep.close(now, ike);
                self.current = None;
                self.retry_at = None;
            }
        }
    }

    /// Mobile node: the home agent acknowledged a registration from `coa` without K (RFC
    /// 4877 section 4.4.1): its IKE SA does not follow moves, so one made from another
    /// address is closed and a new one made from `coa`. Nothing when the current IKE SA was
    /// made from `coa` (or none exists yet).
    pub(crate) fn home_agent_without_k(&mut self, now: Instant, coa: IpAddr) {
        let Some(ike) = self.current else { return };
        if self.made_from.map_or(true, |m| m == coa) {
            return;
        }
        tracing::info!(
            "the home agent does not keep IKE SAs across moves (no K in its BA): a new IKE SA \
             from {coa}"
        );
        self.ep.close(now, ike);
        self.current = None;
        self.retry_at = None;
        self.made_from = None;
    }

    /// When [`Self::drive`] wants to run next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let connect = match (self.target, self.current) {
            (Some(_), None) => Some(self.retry_at.unwrap_or(Instant::now())),
            _ => None,
        };
        [self.ep.poll_timeout(), connect]
            .into_iter()
            .flatten()
            .min()
    }

    /// Timers, new attempts, datagrams to send and CHILD_SAs to key. True when a
    /// transport-mode CHILD_SA (signalling) was keyed: the node's waiting BU can go.
    pub(crate) fn drive(
        &mut self,
        now: Instant,
        socks: &TifSockets,
        mut ipsec: Option<&mut Ipsec>,
        failures: &Failures,
    ) -> bool {
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        if let (Some((ha, coa)), None) = (self.target, self.current) {
            if self.retry_at.map_or(true, |t| t <= now) {
                let local = SocketAddr::new(coa, NAT_T_PORT);
                let remote = SocketAddr::new(ha, NAT_T_PORT);
                match self.ep.connect(now, "home-agent", local, remote) {
                    Ok(id) => {
                        tracing::info!("IKE: initiating an IKE SA from {local} to {remote}");
                        self.current = Some(id);
                    }
                    Err(e) => {
                        tracing::error!("IKE: {e}");
                        self.retry_at = Some(now + RETRY);
                    }
                }
            }
        }
        if let (Some(limit), Some(ipsec)) = (self.rekey_bytes, ipsec.as_deref()) {
            self.rekey_by_bytes(now, limit, ipsec);
        }
        let mut signalling = false;
        while let Some(e) = self.ep.poll_event() {
            if let IkeEvent::ChildUp(c) = &e {
                signalling |= c.mode == m6t_ipsec::Mode::Transport;
            }
            self.event(now, e, ipsec.as_deref_mut());
        }
        // Last: events ask for exchanges too (the CHILD_SAs after IKE_AUTH), and those
        // must not wait for the next wake-up.
        while let Some(t) = self.ep.poll_transmit() {
            let r = socks.send_ike(t.remote, &t.payload);
            failures.check(Failure::UdpSend, "sending IKE", r);
        }
        signalling
    }

    /// Bytes both slots of a CHILD_SA carried.
    fn slot_bytes(&self, ipsec: &Ipsec, name: &str) -> u64 {
        self.slots.get(name).map_or(0, |&(o, i)| {
            let sad = ipsec.sad();
            sad.get(o).map_or(0, |e| e.bytes) + sad.get(i).map_or(0, |e| e.bytes)
        })
    }

    /// Rekeys (RFC 7296 section 2.8) each CHILD_SA that carried `limit` bytes since it was
    /// keyed: the SAD counts them, the machine does the exchange.
    fn rekey_by_bytes(&mut self, now: Instant, limit: u64, ipsec: &Ipsec) {
        let due: Vec<(String, IkeSaId, u32)> = self
            .keyed
            .iter()
            .filter(|(name, (_, _, base))| {
                self.slot_bytes(ipsec, name).saturating_sub(*base) >= limit
            })
            .map(|(name, (ike, spi, _))| (name.clone(), *ike, *spi))
            .collect();
        for (name, ike, spi) in due {
            if self.ep.rekey_child(now, ike, spi) {
                tracing::info!("CHILD_SA {name}: {limit} bytes carried, rekeying");
            }
            // Counted from now whatever the answer: one attempt per `limit` bytes.
            let b = self.slot_bytes(ipsec, &name);
            if let Some(k) = self.keyed.get_mut(&name) {
                k.2 = b;
            }
        }
    }

    /// Appends an IKE SA's keys to `keylog_file` (Wireshark's ikev2_decryption_table).
    fn log_keys(&self, ike: IkeSaId) {
        let (Some(path), Some(line)) = (&self.keylog, self.ep.wireshark_keys(ike)) else {
            return;
        };
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let r = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = r {
            tracing::warn!("[ike] keylog_file {}: {e}", path.display());
        }
    }

    fn event(&mut self, now: Instant, e: IkeEvent, ipsec: Option<&mut Ipsec>) {
        if let IkeEvent::IkeUp { ike, .. } | IkeEvent::IkeRekeyed { new: ike, .. } = &e {
            self.log_keys(*ike);
        }
        match e {
            IkeEvent::IkeUp {
                ike,
                peer,
                remote,
                suite,
                nat,
                ..
            } => {
                if self.current == Some(ike) {
                    self.made_from = self.target.map(|(_, coa)| coa);
                }
                tracing::info!(
                    "IKE SA with {peer} at {remote} established ({}; NAT here: {}, there: {})",
                    suite.name(),
                    nat.0,
                    nat.1
                );
                // The first CHILD_SA came with IKE_AUTH; the others follow (RFC 4877
                // section 4.4: one per policy).
                if self.target.is_some() {
                    let names: Vec<String> = self.ep.config().peers[0]
                        .children
                        .iter()
                        .skip(1)
                        .map(|c| c.name.clone())
                        .collect();
                    for n in names {
                        self.ep.create_child(now, ike, &n);
                    }
                }
            }
            IkeEvent::ChildUp(c) => {
                let Some(ipsec) = ipsec else { return };
                let Some(&(out, inb)) = self.slots.get(&c.name) else {
                    tracing::error!("IKE: CHILD_SA {} names no SA pair in [ipsec]", c.name);
                    return;
                };
                self.iv_seed = self.iv_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let r = ipsec
                    .key_sa(out, c.outbound.spi, &c.outbound.keymat, self.iv_seed)
                    .and_then(|()| {
                        ipsec.key_sa(inb, c.inbound.spi, &c.inbound.keymat, !self.iv_seed)
                    });
                let bytes = self.slot_bytes(ipsec, &c.name);
                self.keyed
                    .insert(c.name.clone(), (c.ike, c.inbound.spi, bytes));
                match r {
                    Ok(()) => tracing::info!(
                        "CHILD_SA {} with {} {}: SPIs in {:#010x} out {:#010x}, {}",
                        c.name,
                        c.peer,
                        if c.rekeys.is_some() { "rekeyed" } else { "up" },
                        c.inbound.spi,
                        c.outbound.spi,
                        c.suite.algorithm.name()
                    ),
                    Err(e) => tracing::error!("IKE: keying CHILD_SA {}: {e}", c.name),
                }
            }
            IkeEvent::ChildDown {
                name,
                inbound_spi,
                outbound_spi,
                ..
            } => {
                self.keyed.retain(|_, k| k.1 != inbound_spi);
                let Some(ipsec) = ipsec else { return };
                ipsec.forget_spi(inbound_spi);
                if let Some(&(out, _)) = self.slots.get(&name) {
                    let e = &ipsec.sad()[out];
                    if e.direction == Direction::Out && e.keyed() && e.params.spi == outbound_spi {
                        ipsec.unkey_sa(out);
                    }
                }
                tracing::info!("CHILD_SA {name}: SPI {inbound_spi:#010x} deleted");
            }
            IkeEvent::IkeRekeyed { old, new } => {
                if self.current == Some(old) {
                    self.current = Some(new);
                }
                for k in self.keyed.values_mut().filter(|k| k.0 == old) {
                    k.0 = new;
                }
                tracing::info!("IKE SA rekeyed");
            }
            IkeEvent::PeerMoved { remote, .. } => {
                tracing::info!("IKE peer now at {remote}")
            }
            IkeEvent::IkeDown { ike, peer, why } => {
                if why == IkeFailure::Rekeyed {
                    return;
                }
                tracing::warn!("IKE SA with {peer} down: {why}");
                self.keyed.retain(|_, k| k.0 != ike);
                if self.current == Some(ike) {
                    self.current = None;
                    // An SA that ran is made again at once (a home agent that restarted is
                    // back); a setup that fails waits RETRY before the next try.
                    self.retry_at = Some(now);
                }
            }
            IkeEvent::Failed { why, detail, .. } => {
                // A refused peer retries every second: one line a minute for it, counted.
                match &mut self.last_failure {
                    Some((d, at, n)) if *d == detail && now < *at + FAILURE_LOG_GAP => *n += 1,
                    last => {
                        if let Some((d, _, n)) = last.take().filter(|l| l.2 > 0) {
                            tracing::warn!("IKE: {n} more times in the last minute: {d}");
                        }
                        tracing::warn!("IKE: {detail}");
                        *last = Some((detail.clone(), now, 0));
                    }
                }
                // A setup that failed leaves no SA: try again later.
                if self.current.is_some() && self.ep.sa_with("home-agent").is_none() {
                    let gone = self
                        .current
                        .is_some_and(|id| !self.ep.sas().iter().any(|s| s.id == id));
                    if gone {
                        self.current = None;
                        self.retry_at = Some(now + RETRY);
                    }
                }
                let _ = why;
            }
        }
    }

    /// The endpoint's counters, as `m6t status` and the metrics show them.
    pub(crate) fn counters(&self) -> Vec<Counter> {
        self.ep
            .counters()
            .iter()
            .into_iter()
            .map(|(name, value)| Counter {
                name: name.into(),
                value,
            })
            .collect()
    }
}
