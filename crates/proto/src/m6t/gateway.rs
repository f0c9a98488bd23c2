//! The m6t tunnel gateway (draft-ebalard-mext-m6t-02 sections 2.3, 2.4, 3 and 6.1.3).
//!
//! The gateway keeps one state per mobile-node tunnel address: the IPv4 address and UDP port
//! it came from (as seen after the NAT) and the local port it arrived on. A state is created
//! *temporary* by a valid first packet from an unknown IPv6 source, becomes *active* when the
//! home side sends a packet to that address, and is garbage collected when its lifetime ends.
//! Address fields are never updated (section 2.4): a packet that matches a state's IPv6
//! address but not its IPv4 address and port is dropped and changes nothing.

use crate::hash::SeededState;
use crate::m6t::ratelimit::{time_to_full, Bucket};
use crate::m6t::table::{Slot, Table};
use crate::reasons;
use crate::stats::Counters;
use m6t_wire::{icmpv6, keepalive, Ipv6Packet, Ipv6Prefix};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Most deadline-heap entries handled (state removed, or deadline pushed back because
/// traffic extended it) by one `handle_timeout` call, so that a mass expiry never stalls the
/// data plane: the rest is done on the next (immediate) wake-up.
pub const GC_BATCH: usize = 128;
/// Longest tick the garbage-collection wake-ups are rounded up to, in milliseconds.
pub const GC_TICK_MS: u64 = 250;
/// Most events kept for `poll_event`; older ones are counted as lost.
const EVENT_QUEUE_CAP: usize = 4096;

/// Configuration of a gateway; `Default` gives the documented defaults with empty lists.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Home agent addresses: the destinations a mobile node may send to (section 6.1.3).
    pub ha_addresses: Vec<Ipv6Addr>,
    /// Extra allowed destinations (off by default: the gateway is never an open relay).
    pub allowed_destinations: Vec<Ipv6Prefix>,
    /// Prefixes the mobile nodes' tunnel addresses come from; a state is only created for a
    /// source inside one of them (section 6.1.3).
    pub mn_prefixes: Vec<Ipv6Prefix>,
    /// The gateway's own IPv6 address, source of the ICMPv6 errors it sends.
    pub icmp_source: Ipv6Addr,
    /// Tunnel MTU (section 2.6, default 1472 = 1500 - 20 - 8).
    pub mtu: u16,
    /// Lifetime of a temporary state (section 2.4: "some milli-seconds to a few seconds").
    pub temporary_lifetime: Duration,
    /// Lifetime of an active state after the last packet either way ("~ NAT timeout").
    pub active_lifetime: Duration,
    /// New states per second allowed per IPv4 source address (port ignored).
    pub new_state_rate: u32,
    /// Burst of new states allowed per IPv4 source address.
    pub new_state_burst: u32,
    /// Most states (temporary + active) per IPv4 source address.
    pub max_states_per_ipv4: u32,
    /// Most states in all.
    pub max_states: usize,
}

impl GatewayConfig {
    /// The configuration of one of `n` shards of a gateway whose states are split by
    /// mobile-node address: the global and per-IPv4 caps and the per-IPv4 creation rate
    /// are divided among the shards (rounded up, at least 1). With addresses spread evenly
    /// by their random bits, a source gets about the configured totals; a single shard
    /// never exceeds its part.
    pub fn shard(&self, n: usize) -> GatewayConfig {
        let n32 = n.max(1) as u32;
        let div = |x: u32| x.div_ceil(n32).max(1);
        GatewayConfig {
            new_state_rate: div(self.new_state_rate),
            new_state_burst: div(self.new_state_burst),
            max_states_per_ipv4: div(self.max_states_per_ipv4),
            max_states: self.max_states.div_ceil(n.max(1)).max(1),
            ..self.clone()
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            ha_addresses: Vec::new(),
            allowed_destinations: Vec::new(),
            mn_prefixes: Vec::new(),
            icmp_source: Ipv6Addr::UNSPECIFIED,
            mtu: 1472,
            temporary_lifetime: Duration::from_secs(2),
            active_lifetime: Duration::from_secs(150),
            new_state_rate: 10,
            new_state_burst: 20,
            max_states_per_ipv4: 64,
            max_states: 1_000_000,
        }
    }
}

reasons! {
    /// Why the gateway dropped a packet, or what else it counted.
    pub enum GatewayCounter {
        /// UDP payload that is not exactly one well-formed IPv6 packet.
        MalformedFromMn => "drop_malformed_from_mn",
        /// IPv6 source multicast, unspecified, loopback or link-local.
        BadSource => "drop_bad_source",
        /// Destination neither an HA address nor an allowed prefix (no open relay).
        DestinationNotAllowed => "drop_destination_not_allowed",
        /// New source outside the configured mobile-node prefixes.
        SourceOutsidePrefix => "drop_source_outside_prefix",
        /// Known IPv6 source from another IPv4 address or port (section 2.4): never updated.
        AddressMismatch => "drop_address_mismatch",
        /// New state refused: per-IPv4 creation rate exceeded.
        RateLimited => "drop_rate_limited",
        /// New state refused: per-IPv4 state cap reached.
        PerSourceCap => "drop_per_source_cap",
        /// New state refused: global state cap reached.
        TableFull => "drop_table_full",
        /// Keep-alive from an unknown source.
        KeepaliveNoState => "drop_keepalive_no_state",
        /// Keep-alive for a state still temporary.
        KeepaliveNotActive => "drop_keepalive_not_active",
        /// Keep-alive whose IPv4 address or port does not match the state.
        KeepaliveMismatch => "drop_keepalive_mismatch",
        /// Too big, and it is an ICMPv6 error (never answer an error with an error).
        TooBigIcmpError => "drop_too_big_icmp_error",
        /// Packet from the home side that is not a well-formed IPv6 packet.
        MalformedFromHome => "drop_malformed_from_home",
        /// Packet from the home side to an address with no state.
        NoStateForHome => "drop_no_state_for_home",
        /// Packets forwarded from mobile nodes to the home side.
        ForwardedToHome => "forwarded_to_home",
        /// Packets forwarded from the home side to mobile nodes.
        ForwardedToMn => "forwarded_to_mn",
        /// Keep-alives answered.
        KeepalivesAnswered => "keepalives_answered",
        /// ICMPv6 Packet Too Big messages sent.
        PacketTooBigSent => "packet_too_big_sent",
        /// States created (temporary).
        StatesCreated => "states_created",
        /// Temporary states made active.
        StatesActivated => "states_activated",
        /// States garbage collected.
        StatesExpired => "states_expired",
        /// Events lost because nobody polled them.
        EventsLost => "events_lost",
    }
}

/// Whether a state has seen an answer from the home side yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateKind {
    /// Created by a mobile node's packet; waits for the home side's answer.
    Temporary,
    /// The home side answered; lifetime extended by traffic either way.
    Active,
}

#[derive(Debug)]
struct Source {
    states: u32,
    bucket: Bucket,
}

/// What to do with a packet received from a mobile node over UDP.
#[must_use = "a verdict says where the packet goes"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromMn {
    /// Write the packet, unchanged, to the home-side TUN interface.
    ToHome,
    /// Send these 40 bytes back to the same peer from the same local port (keep-alive echo).
    Echo([u8; keepalive::KEEPALIVE_LEN]),
    /// Send the first `n` bytes of the scratch buffer back to the same peer (Packet Too Big).
    Reply(usize),
    /// Dropped, counted under this reason.
    Drop(GatewayCounter),
}

/// What to do with a packet read from the home-side TUN interface.
#[must_use = "a verdict says where the packet goes"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromHome {
    /// Send the packet, unchanged, to `peer` from local UDP port `local_port`.
    ToMn {
        /// The mobile node's NAT-mapped IPv4 address and port.
        peer: SocketAddrV4,
        /// The gateway port the mobile node used.
        local_port: u16,
    },
    /// Write the first `n` bytes of the scratch buffer to the TUN (Packet Too Big).
    Reply(usize),
    /// Dropped, counted under this reason.
    Drop(GatewayCounter),
}

/// Something the operator may want logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayEvent {
    /// A temporary state was created.
    Created {
        /// Tunnel address of the mobile node.
        address: Ipv6Addr,
        /// Its IPv4 address and port after NAT.
        peer: SocketAddrV4,
    },
    /// A temporary state became active.
    Activated {
        /// Tunnel address of the mobile node.
        address: Ipv6Addr,
        /// Its IPv4 address and UDP port after NAT (the driver's per-source budget lets
        /// this exact sender through unbudgeted while the state is active).
        peer: SocketAddrV4,
    },
    /// A state was garbage collected.
    Expired {
        /// Tunnel address of the mobile node.
        address: Ipv6Addr,
        /// Its IPv4 address and UDP port after NAT.
        peer: SocketAddrV4,
        /// Kind it had when it expired.
        kind: StateKind,
    },
}

/// One state as shown by `m6t status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateInfo {
    /// Tunnel address of the mobile node.
    pub address: Ipv6Addr,
    /// IPv4 address and UDP port after NAT.
    pub peer: SocketAddrV4,
    /// Gateway UDP port it talks to.
    pub local_port: u16,
    /// Temporary or active.
    pub kind: StateKind,
    /// Milliseconds since creation.
    pub age_ms: u64,
    /// Milliseconds since the last packet either way.
    pub idle_ms: u64,
    /// Packets both ways.
    pub packets: u64,
    /// Bytes (IPv6 packets) both ways.
    pub bytes: u64,
}

/// The gateway machine. See the module documentation.
#[derive(Debug)]
pub struct Gateway {
    cfg: GatewayConfig,
    table: Table,
    /// Per IPv4 source; keyed with the seed like the table.
    sources: HashMap<Ipv4Addr, Source, SeededState>,
    /// Sources whose last state went away, to forget once their bucket is full again.
    idle_sources: VecDeque<(Instant, Ipv4Addr)>,
    counters: Counters<GatewayCounter>,
    events: VecDeque<GatewayEvent>,
    /// Active states, kept as they change so that metrics get states by kind without a
    /// walk over a table that may hold a million of them.
    active: usize,
}

fn usable_source(a: Ipv6Addr) -> bool {
    !(a.is_multicast()
        || a.is_unspecified()
        || a.is_loopback()
        || (a.segments()[0] & 0xffc0) == 0xfe80)
}

impl Gateway {
    /// A gateway with an empty state table. `seed` keys its hash tables: the driver draws
    /// it from the OS (the keys must stay secret from whoever picks the addresses); a
    /// simulation passes a fixed one, and the same seed then gives the same run.
    pub fn new(cfg: GatewayConfig, seed: [u8; 32]) -> Self {
        let [table_keys, source_keys] = SeededState::derive::<2>(seed);
        Gateway {
            cfg,
            table: Table::new(table_keys),
            sources: HashMap::with_hasher(source_keys),
            idle_sources: VecDeque::new(),
            counters: Counters::default(),
            events: VecDeque::new(),
            active: 0,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// Expiry of a state in table milliseconds.
    fn deadline(cfg: &GatewayConfig, s: &Slot) -> u64 {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match s.kind {
            StateKind::Temporary => s.created.saturating_add(ms(cfg.temporary_lifetime)),
            StateKind::Active => s.last_seen.saturating_add(ms(cfg.active_lifetime)),
        }
    }

    fn destination_allowed(&self, dst: Ipv6Addr) -> bool {
        self.cfg.ha_addresses.contains(&dst)
            || self
                .cfg
                .allowed_destinations
                .iter()
                .any(|p| p.contains(dst))
    }

    fn push_event(&mut self, e: GatewayEvent) {
        if self.events.len() >= EVENT_QUEUE_CAP {
            self.events.pop_front();
            self.counters.bump(GatewayCounter::EventsLost);
        }
        self.events.push_back(e);
    }

    fn drop_mn(&mut self, r: GatewayCounter) -> FromMn {
        self.counters.bump(r);
        FromMn::Drop(r)
    }

    fn drop_home(&mut self, r: GatewayCounter) -> FromHome {
        self.counters.bump(r);
        FromHome::Drop(r)
    }

    /// The first memory [`Self::handle_from_mn`] will touch for this payload, its state's
    /// index bucket, for a prefetch hint; with a position to pass to
    /// [`Self::prefetch_slot`] once the buckets of the whole batch are hinted. `None` when
    /// the payload is too short to name a state. Only an address: nothing is read.
    pub fn prefetch_bucket(&self, payload: &[u8]) -> Option<(usize, *const u8)> {
        let a = <[u8; 16]>::try_from(payload.get(8..24)?).ok()?;
        Some(self.table.bucket_addr(&Ipv6Addr::from(a)))
    }

    /// The second memory [`Self::handle_from_mn`] will touch: the slot the bucket at `pos`
    /// (from [`Self::prefetch_bucket`]) names, or null. Reads that bucket only.
    pub fn prefetch_slot(&self, pos: usize) -> *const u8 {
        self.table.slot_addr(pos)
    }

    /// Handles a UDP payload received on local port `local_port` from `peer`
    /// (sections 2.3, 2.4, 3, 6.1.3). `scratch` receives a Packet Too Big when one is due;
    /// it must hold [`icmpv6::MAX_ERROR_LEN`] bytes for that.
    pub fn handle_from_mn(
        &mut self,
        now: Instant,
        local_port: u16,
        peer: SocketAddrV4,
        payload: &[u8],
        scratch: &mut [u8],
    ) -> FromMn {
        let Ok(p) = Ipv6Packet::new_checked(payload) else {
            return self.drop_mn(GatewayCounter::MalformedFromMn);
        };
        let src = p.src_addr();
        if keepalive::is_request(&p) {
            return self.keepalive(now, peer, src);
        }
        if !usable_source(src) {
            return self.drop_mn(GatewayCounter::BadSource);
        }
        if !self.destination_allowed(p.dst_addr()) {
            return self.drop_mn(GatewayCounter::DestinationNotAllowed);
        }
        let too_big = payload.len() > usize::from(self.cfg.mtu);
        let t = self.table.ms(now);
        match self.table.get_mut(&src) {
            Some(s) => {
                if s.peer != peer || s.local_port != local_port {
                    return self.drop_mn(GatewayCounter::AddressMismatch);
                }
                // A temporary state keeps its short deadline whatever the MN sends: only
                // the home side's answer may extend it (section 6.1.3).
                s.last_seen = t;
                s.packets = s.packets.wrapping_add(1);
                s.bytes += payload.len() as u64;
            }
            None => {
                if !self.cfg.mn_prefixes.iter().any(|pr| pr.contains(src)) {
                    return self.drop_mn(GatewayCounter::SourceOutsidePrefix);
                }
                if let Err(r) = self.create(now, src, peer, local_port, payload.len()) {
                    return self.drop_mn(r);
                }
            }
        }
        if too_big {
            return match self.packet_too_big(&p, scratch, GatewayCounter::MalformedFromMn) {
                Ok(n) => FromMn::Reply(n),
                Err(r) => self.drop_mn(r),
            };
        }
        self.counters.bump(GatewayCounter::ForwardedToHome);
        FromMn::ToHome
    }

    /// Builds the ICMPv6 Packet Too Big owed for `p` (RFC 4443 section 3.2) into `scratch`,
    /// unless `p` is itself an ICMPv6 error (section 2.4 (e)).
    fn packet_too_big(
        &mut self,
        p: &Ipv6Packet<&[u8]>,
        scratch: &mut [u8],
        malformed: GatewayCounter,
    ) -> Result<usize, GatewayCounter> {
        if icmpv6::is_icmpv6_error(p) {
            return Err(GatewayCounter::TooBigIcmpError);
        }
        let n =
            icmpv6::emit_packet_too_big(self.cfg.icmp_source, p, u32::from(self.cfg.mtu), scratch)
                .map_err(|_| malformed)?;
        self.counters.bump(GatewayCounter::PacketTooBigSent);
        Ok(n)
    }

    fn keepalive(&mut self, now: Instant, peer: SocketAddrV4, src: Ipv6Addr) -> FromMn {
        let t = self.table.ms(now);
        let r = match self.table.get_mut(&src) {
            None => Err(GatewayCounter::KeepaliveNoState),
            Some(s) if s.peer != peer => Err(GatewayCounter::KeepaliveMismatch),
            Some(s) if s.kind != StateKind::Active => Err(GatewayCounter::KeepaliveNotActive),
            Some(s) => {
                s.last_seen = t;
                s.packets = s.packets.wrapping_add(1);
                s.bytes += keepalive::KEEPALIVE_LEN as u64;
                Ok(())
            }
        };
        match r {
            Err(r) => self.drop_mn(r),
            Ok(()) => {
                self.counters.bump(GatewayCounter::KeepalivesAnswered);
                FromMn::Echo(keepalive::emit(keepalive::KEEPALIVE_PEER, src))
            }
        }
    }

    fn create(
        &mut self,
        now: Instant,
        src: Ipv6Addr,
        peer: SocketAddrV4,
        local_port: u16,
        len: usize,
    ) -> Result<(), GatewayCounter> {
        if self.table.len() >= self.cfg.max_states {
            return Err(GatewayCounter::TableFull);
        }
        let (rate, burst, cap) = (
            self.cfg.new_state_rate,
            self.cfg.new_state_burst,
            self.cfg.max_states_per_ipv4,
        );
        let source = self.sources.entry(*peer.ip()).or_insert(Source {
            states: 0,
            bucket: Bucket::full(now, burst),
        });
        if source.states >= cap {
            return Err(GatewayCounter::PerSourceCap);
        }
        if !source.bucket.take(now, rate, burst) {
            return Err(GatewayCounter::RateLimited);
        }
        source.states += 1;
        let t = self.table.ms(now);
        let s = Slot {
            address: src,
            peer,
            local_port,
            kind: StateKind::Temporary,
            created: t,
            last_seen: t,
            packets: 1,
            bytes: len as u64,
        };
        let deadline = Self::deadline(&self.cfg, &s);
        self.table.insert(s, deadline);
        self.counters.bump(GatewayCounter::StatesCreated);
        self.push_event(GatewayEvent::Created { address: src, peer });
        Ok(())
    }

    /// Handles a packet read from the home-side TUN interface (sections 3 and 6.1.3).
    /// `scratch` receives a Packet Too Big when one is due (see [`Self::handle_from_mn`]).
    pub fn handle_from_home(
        &mut self,
        now: Instant,
        packet: &[u8],
        scratch: &mut [u8],
    ) -> FromHome {
        let Ok(p) = Ipv6Packet::new_checked(packet) else {
            return self.drop_home(GatewayCounter::MalformedFromHome);
        };
        let dst = p.dst_addr();
        let t = self.table.ms(now);
        let Some(s) = self.table.get_mut(&dst) else {
            return self.drop_home(GatewayCounter::NoStateForHome);
        };
        if packet.len() > usize::from(self.cfg.mtu) {
            return match self.packet_too_big(&p, scratch, GatewayCounter::MalformedFromHome) {
                Ok(n) => FromHome::Reply(n),
                Err(r) => self.drop_home(r),
            };
        }
        let activated = s.kind == StateKind::Temporary;
        s.kind = StateKind::Active;
        s.last_seen = t;
        s.packets = s.packets.wrapping_add(1);
        s.bytes += packet.len() as u64;
        let out_peer = s.peer;
        let out = FromHome::ToMn {
            peer: s.peer,
            local_port: s.local_port,
        };
        if activated {
            // The heap entry still carries the temporary deadline, which is earlier than the
            // active one: GC will find the state alive and push the right deadline then.
            self.counters.bump(GatewayCounter::StatesActivated);
            self.active += 1;
            self.push_event(GatewayEvent::Activated {
                address: dst,
                peer: out_peer,
            });
        }
        self.counters.bump(GatewayCounter::ForwardedToMn);
        out
    }

    /// When the gateway next wants [`Self::handle_timeout`]. Ask again after every
    /// `handle_*` call.
    #[must_use = "the deadline must be armed on the driver's timer"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Deadlines are rounded up to a coarse tick, so that thousands of states expiring
        // at spread-out instants cost a few wake-ups per second, not one each (idle
        // gateways with many mobile nodes). The tick is small against every lifetime.
        let tick = (self.cfg.temporary_lifetime.as_millis() as u64 / 8).clamp(1, GC_TICK_MS);
        let a = self
            .table
            .next_deadline()
            .and_then(|t| self.table.instant(t.div_ceil(tick) * tick));
        let b = self
            .idle_sources
            .front()
            // ms_ro truncates: one more millisecond keeps the rounded instant after `t`.
            .and_then(|(t, _)| {
                let ms = self.table.ms_ro(*t) + 1;
                self.table.instant(ms.div_ceil(tick) * tick)
            });
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Garbage-collects expired states (at most [`GC_BATCH`] per call) and forgets idle
    /// IPv4 sources whose rate-limit bucket is full again. Returns how many states went.
    pub fn handle_timeout(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        let t = self.table.ms(now);
        for _ in 0..GC_BATCH {
            let Some((i, s)) = self.table.pop_due(t) else {
                break;
            };
            let real = Self::deadline(&self.cfg, s);
            if real > t {
                self.table.reschedule(i, real);
                continue;
            }
            let (kind, peer, addr) = (s.kind, s.peer, s.address);
            let v4 = *peer.ip();
            self.table.remove(i);
            removed += 1;
            if kind == StateKind::Active {
                self.active -= 1;
            }
            self.counters.bump(GatewayCounter::StatesExpired);
            self.push_event(GatewayEvent::Expired {
                address: addr,
                peer,
                kind,
            });
            if let Some(src) = self.sources.get_mut(&v4) {
                src.states = src.states.saturating_sub(1);
                if src.states == 0 {
                    let full = time_to_full(self.cfg.new_state_rate, self.cfg.new_state_burst);
                    self.idle_sources.push_back((now + full, v4));
                }
            }
        }
        let (rate, burst) = (self.cfg.new_state_rate, self.cfg.new_state_burst);
        while let Some((t, v4)) = self.idle_sources.front().copied() {
            if t > now {
                break;
            }
            self.idle_sources.pop_front();
            if let Some(src) = self.sources.get_mut(&v4) {
                if src.states == 0 && src.bucket.is_full(now, rate, burst) {
                    self.sources.remove(&v4);
                }
            }
        }
        removed
    }

    /// Next event for the log, if any. Call after every `handle_*` call until it returns
    /// `None` (at most 4096 are kept; older ones are counted as lost).
    #[must_use = "an event not polled is eventually counted as lost"]
    pub fn poll_event(&mut self) -> Option<GatewayEvent> {
        self.events.pop_front()
    }

    /// Counter values.
    pub fn counters(&self) -> &Counters<GatewayCounter> {
        &self.counters
    }

    /// Number of states.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Number of active states (the others are temporary).
    pub fn active_len(&self) -> usize {
        self.active
    }

    /// True when there is no state.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Number of IPv4 sources tracked for rate limiting.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    fn info(&self, now: u64, s: &Slot) -> StateInfo {
        StateInfo {
            address: s.address,
            peer: s.peer,
            local_port: s.local_port,
            kind: s.kind,
            age_ms: now.saturating_sub(s.created),
            idle_ms: now.saturating_sub(s.last_seen),
            packets: u64::from(s.packets),
            bytes: s.bytes,
        }
    }

    /// One state, for status and tests.
    pub fn state(&self, now: Instant, address: Ipv6Addr) -> Option<StateInfo> {
        let t = self.table.ms_ro(now);
        self.table.get(&address).map(|s| self.info(t, s))
    }

    /// Every state (for `m6t status`), sorted by address.
    pub fn states(&self, now: Instant) -> Vec<StateInfo> {
        self.states_up_to(now, usize::MAX)
    }

    /// At most `max` states (in table order, then sorted by address): what a status query
    /// on a gateway holding a million states can list without stalling the data plane
    /// behind the shard lock or printing a hundred megabytes.
    pub fn states_up_to(&self, now: Instant, max: usize) -> Vec<StateInfo> {
        let t = self.table.ms_ro(now);
        let mut v: Vec<StateInfo> = self
            .table
            .iter()
            .take(max)
            .map(|s| self.info(t, s))
            .collect();
        v.sort_by_key(|s| s.address);
        v
    }
}
