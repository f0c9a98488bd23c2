//! The home agent's protocol module, [`BindingCache`] (RFC 6275 sections 9.1, 10.3.1 and
//! 10.3.2, RFC 5555 sections 3.2, 4.2 and 4.5, RFC 3963 for prefixes): the binding cache
//! with separate entries for the IPv6 and the IPv4 home address, Binding Update processing
//! with the sequence window and lifetime rules, IPv4 home address assignment (static,
//! dynamic pool, prefixes), NAT detection, and the tunnel each binding needs.
//!
//! This is the signalling logic only, on parsed messages; the node that joins it to the
//! tunnel-interface module and takes bytes is [`crate::dsmip::home_agent::HomeAgent`].
//!
//! Lifetimes live in a deadline heap with lazy deletion (like the m6t gateway's table), so
//! [`BindingCache::poll_timeout`] is O(1) and [`BindingCache::handle_timeout`] touches only
//! what is due; IPv4 home addresses and prefixes have an index, so
//! [`BindingCache::tunnel_for_v4`] is O(log n) per data packet.

use crate::dsmip::{seq, NetPrefix};
use m6t_wire::mh::{ba_flags, bu_flags, MhMessage, MhRepr, MobilityOption};
use m6t_wire::Ipv6Prefix;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Binding Acknowledgement status codes used here (RFC 6275 section 6.1.8, RFC 5555).
pub mod status {
    /// Binding Update accepted.
    pub const ACCEPTED: u8 = 0;
    /// Reason unspecified.
    pub const UNSPECIFIED: u8 = 128;
    /// Administratively prohibited (e.g. an unprotected BU).
    pub const PROHIBITED: u8 = 129;
    /// Insufficient resources: the binding cache is full (RFC 6275 section 6.1.8).
    pub const INSUFFICIENT_RESOURCES: u8 = 130;
    /// Home registration not supported (H flag clear).
    pub const HOME_REGISTRATION_NOT_SUPPORTED: u8 = 131;
    /// Not home subnet.
    pub const NOT_HOME_SUBNET: u8 = 132;
    /// Sequence number out of window.
    pub const SEQ_OUT_OF_WINDOW: u8 = 135;
    /// Registration type change disallowed (the R flag differs from the binding's, RFC
    /// 3963 section 6.2).
    pub const REG_TYPE_CHANGE: u8 = 139;
    /// Mobile Router Operation not permitted (RFC 3963 section 6.2).
    pub const MR_NOT_PERMITTED: u8 = 140;
    /// Invalid Prefix (RFC 3963 section 6.2).
    pub const INVALID_PREFIX: u8 = 141;
    /// Not Authorized for Prefix (RFC 3963 section 6.2).
    pub const PREFIX_NOT_AUTHORIZED: u8 = 142;
    /// Forwarding Setup failed: no prefixes known in implicit mode (RFC 3963 section 6.2).
    pub const FORWARDING_FAILED: u8 = 143;
    /// Forcing UDP encapsulation refused (RFC 5555 section 4.5; IANA lists 144 for
    /// RFC 4285, the conflict is in RFC 5555 itself).
    pub const FORCE_UDP_REFUSED: u8 = 144;
    /// Invalid care-of address.
    pub const INVALID_COA: u8 = 174;
}

/// IPv4 Address Acknowledgement status codes (RFC 5555 section 3.2.1).
pub mod v4status {
    /// Success.
    pub const SUCCESS: u8 = 0;
    /// Incorrect IPv4 home address (not this mobile node's).
    pub const INCORRECT_HOA: u8 = 130;
    /// Invalid IPv4 address (prefix length 0 or above 32).
    pub const INVALID: u8 = 131;
    /// Dynamic IPv4 home address not available.
    pub const DYNAMIC_UNAVAILABLE: u8 = 132;
    /// Prefix allocation unauthorised.
    pub const PREFIX_UNAUTHORIZED: u8 = 133;
}

/// Configuration of a home agent.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// The home prefix the mobile nodes' IPv6 home addresses belong to.
    pub home_prefix: Ipv6Prefix,
    /// Statically assigned IPv4 home addresses (or prefixes), per IPv6 home address.
    pub static_ipv4: BTreeMap<Ipv6Addr, (Ipv4Addr, u8)>,
    /// Pool for dynamic IPv4 home addresses (requests for 0.0.0.0).
    pub ipv4_pool: Vec<Ipv4Addr>,
    /// Mobile nodes (IPv6 home addresses) allowed IPv4 prefixes (P flag).
    pub prefix_holders: BTreeSet<Ipv6Addr>,
    /// Mobile routers (IPv6 home addresses) and the mobile network prefixes each may
    /// register (RFC 3963 section 6.1.2, the Prefix Table): what a BU with the R flag is
    /// checked against, and what implicit mode binds. Two routers' prefixes must not
    /// overlap (the configuration loader refuses it): a prefix has one owner.
    pub routers: BTreeMap<Ipv6Addr, Vec<NetPrefix>>,
    /// Longest lifetime granted.
    pub max_lifetime: Duration,
    /// NAT keep-alive refresh time sent in the NAT Detection option (NATKATIMEOUT, 110 s).
    pub nat_keepalive: u32,
    /// Whether the F flag (force UDP) is accepted; refused with status 144 otherwise.
    pub accept_force_udp: bool,
    /// Whether the TLV-header format (T flag, RFC 5845 section 7.2) is accepted.
    pub accept_tlv: bool,
    /// Whether BUs without ESP are accepted (only until the IPsec work lands).
    pub accept_unprotected: bool,
    /// Most bindings held at once: a BU for a home address not yet bound while the cache
    /// holds this many is refused with status 130, insufficient resources (RFC 6275
    /// sections 6.1.8 and 10.3.1); refreshes and deregistrations of bound ones still pass.
    pub max_bindings: usize,
    /// The home agent's IKE SAs follow their mobile node's moves (they are updated from the
    /// node's authenticated IKE messages on UDP 4500): K in the BA answering a BU with K
    /// (RFC 6275 section 10.3.1, RFC 4877 section 4.4.1).
    pub key_management: bool,
}

impl Default for HaConfig {
    /// No IPv4 home addresses, 1 h lifetimes, NAT keep-alive 110 s (NATKATIMEOUT, RFC 5555
    /// section 4.3), F accepted, TLV refused, unprotected BUs refused, at most 100 000
    /// bindings. The required
    /// `home_prefix` is left unspecified (`::/0`, every address): set it, see
    /// [`HaConfig::new`].
    fn default() -> Self {
        HaConfig {
            home_prefix: Ipv6Prefix::new(Ipv6Addr::UNSPECIFIED, 0).expect("::/0 is a prefix"),
            static_ipv4: BTreeMap::new(),
            ipv4_pool: Vec::new(),
            prefix_holders: BTreeSet::new(),
            routers: BTreeMap::new(),
            max_lifetime: Duration::from_secs(3600),
            nat_keepalive: 110,
            accept_force_udp: true,
            accept_tlv: false,
            accept_unprotected: false,
            max_bindings: 100_000,
            key_management: false,
        }
    }
}

impl HaConfig {
    /// The defaults ([`HaConfig::default`]) around a home prefix.
    pub fn new(home_prefix: Ipv6Prefix) -> Self {
        HaConfig {
            home_prefix,
            ..HaConfig::default()
        }
    }
}

/// How a Binding Update reached the home agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Over IPv6 from this source (the IPv6 care-of address); the home address came in a
    /// Home Address destination option.
    Ipv6 {
        /// Outer IPv6 source.
        src: Ipv6Addr,
    },
    /// Inside UDP/IPv4 (port 4191) from this IPv4 address and port, as seen after any NAT.
    Udp {
        /// Outer IPv4 source and UDP source port.
        src: SocketAddrV4,
    },
}

/// The tunnel a binding needs toward the mobile node (RFC 5555 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Tunnel {
    /// IPv6 or IPv4 in IPv6, to an IPv6 care-of address.
    Ipv6 {
        /// Care-of address.
        coa: Ipv6Addr,
    },
    /// IPv6 or IPv4 in IPv4 (protocols 41 / 4), to an IPv4 care-of address, no NAT.
    Ipv4 {
        /// Care-of address.
        coa: Ipv4Addr,
    },
    /// In UDP/IPv4 (vanilla format), to the NAT's address and port.
    Udp {
        /// Peer.
        peer: SocketAddrV4,
    },
    /// In UDP/IPv4 with the TLV header of RFC 5845 section 7.2.
    Tlv {
        /// Peer.
        peer: SocketAddrV4,
    },
}

/// A binding cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// IPv6 home address.
    pub hoa: Ipv6Addr,
    /// The tunnel toward the mobile node.
    pub tunnel: Tunnel,
    /// Last accepted sequence number.
    pub seq: u16,
    /// When the binding ends.
    pub expires: Instant,
    /// IPv4 home address (or prefix) bound too, with its prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// Whether a NAT was detected.
    pub nat: bool,
    /// Whether the IPv4 home address came from the dynamic pool.
    dynamic: bool,
    /// A mobile router's binding (R flag, RFC 3963 section 6.1.1).
    pub router: bool,
    /// The mobile network prefixes forwarded to it (RFC 3963 section 6.2).
    pub mnp: Vec<NetPrefix>,
}

/// An answer to send: a Binding Acknowledgement to the home address, through `via`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaOut {
    /// The mobile node's IPv6 home address (IPv6 destination of the BA).
    pub to: Ipv6Addr,
    /// The path the BA takes: the same as the BU's (UDP when the BU came in UDP).
    pub via: Tunnel,
    /// The BA.
    pub ba: MhRepr,
}

/// One binding as saved across restarts: what a home agent's users expect is that a restart
/// does not drop every mobile node until its next refresh, and that the sequence window
/// survives (an old BU replayed after a restart must still be refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBinding {
    /// IPv6 home address.
    pub hoa: Ipv6Addr,
    /// Tunnel toward the mobile node.
    pub tunnel: Tunnel,
    /// Last accepted sequence number.
    pub seq: u16,
    /// Lifetime left, in milliseconds.
    pub remaining_ms: u64,
    /// IPv4 home address or prefix.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// NAT detected.
    pub nat: bool,
    /// IPv4 home address from the dynamic pool.
    pub dynamic: bool,
    /// A mobile router's binding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub router: bool,
    /// Its mobile network prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mnp: Vec<NetPrefix>,
}

/// The binding cache as saved: lifetimes are relative, so the file means the same whatever
/// the clock of the process that reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every binding.
    pub bindings: Vec<SavedBinding>,
}

/// The home agent's binding cache and Binding Update processing. See the module
/// documentation.
#[derive(Debug)]
pub struct BindingCache {
    cfg: HaConfig,
    /// Bindings by IPv6 home address (ordered: listings and snapshots come out the same
    /// on every run).
    cache: BTreeMap<Ipv6Addr, Binding>,
    /// Lifetime deadlines: `(expires, hoa)`, one per binding plus stale ones (a binding
    /// refreshed or removed since), skipped when they surface. The top is never stale
    /// (see [`BindingCache::settle`]), so it is the next deadline.
    expiry: BinaryHeap<Reverse<(Instant, Ipv6Addr)>>,
    /// IPv4 home address (or prefix address, as bound) -> IPv6 home address.
    v4: BTreeMap<Ipv4Addr, Ipv6Addr>,
    /// Bound IPv4 prefixes (length below 32) by (length, network) -> IPv6 home address.
    prefixes: BTreeMap<(u8, u32), Ipv6Addr>,
    /// How many entries of `prefixes` have each length: a lookup tries only those.
    prefix_lens: [u32; 32],
    /// Bound IPv6 mobile network prefixes by (length, network) -> the router's home address.
    mnp6: BTreeMap<(u8, u128), Ipv6Addr>,
    /// How many entries of `mnp6` have each length.
    mnp6_lens: [u32; 129],
    /// Bound IPv4 mobile network prefixes by (length, network) -> the router's home address.
    mnp4: BTreeMap<(u8, u32), Ipv6Addr>,
    /// How many entries of `mnp4` have each length.
    mnp4_lens: [u32; 33],
    free_pool: VecDeque<Ipv4Addr>,
}

fn v4_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// The tunnel a BA (or a refusal) goes back through: the way the BU came.
fn back_path(arrival: Arrival) -> Tunnel {
    match arrival {
        Arrival::Ipv6 { src } => Tunnel::Ipv6 { coa: src },
        Arrival::Udp { src } => Tunnel::Udp { peer: src },
    }
}

/// The NAT Detection option a BA carries (RFC 5555 sections 3.2.2 and 4.2.2): whenever
/// the BU came in UDP. As a mobile node that sees the option MUST use UDP (section 4.4),
/// the no-NAT case is told by the refresh time 0xffffffff ("no keep-alive needed"): the
/// mobile node then uses IP-in-IP like the home agent.
fn nat_detection(arrival: Arrival, nat: bool, forced: bool, keepalive: u32) -> Vec<MobilityOption> {
    match arrival {
        Arrival::Udp { .. } => vec![MobilityOption::NatDetection {
            f: forced && !nat,
            refresh: if nat || forced { keepalive } else { u32::MAX },
        }],
        Arrival::Ipv6 { .. } => Vec::new(),
    }
}

/// The IPv4 Home Address option of a BU (RFC 5555 section 3.1.1): length, P flag, address.
/// A mobile router's options with the P flag ask for mobile network prefixes instead
/// ([`BindingCache::mobile_network`]): its own IPv4 home address is the one without.
fn ipv4_hoa_request(bu: &MhRepr, router: bool) -> Option<(u8, bool, Ipv4Addr)> {
    bu.options.iter().find_map(|o| match o {
        MobilityOption::Ipv4HomeAddress {
            prefix_len,
            p,
            addr,
        } if !(router && *p) => Some((*prefix_len, *p, *addr)),
        _ => None,
    })
}

/// Most mobile network prefixes one binding holds (explicit mode; a BU of 64 KiB could
/// carry thousands of options).
pub const MAX_MNP: usize = 64;

/// Whether `p` lies inside one of the prefixes in `allowed` (the Prefix Table check of RFC
/// 3963 section 6.2).
fn authorised(allowed: &[NetPrefix], p: &NetPrefix) -> bool {
    allowed
        .iter()
        .any(|a| a.len() <= p.len() && a.contains(p.addr()))
}

/// Whether a prefix can be a mobile network at all: not empty, and neither multicast nor
/// link-local nor loopback.
fn usable_mnp(p: &NetPrefix) -> bool {
    match p {
        NetPrefix::V6(a, l) => {
            *l > 0 && !a.is_multicast() && !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80
        }
        NetPrefix::V4(a, l) => *l > 0 && !a.is_multicast() && !a.is_loopback() && !a.is_broadcast(),
    }
}

/// The flags of a BU (0 for another message).
fn bu_flags_of(bu: &MhRepr) -> u16 {
    match bu.msg {
        MhMessage::Bu { flags, .. } => flags,
        _ => 0,
    }
}

/// A Binding Acknowledgement (RFC 6275 section 6.1.8; the T flag of RFC 5845 section 7.2
/// when it goes back in the TLV format).
fn ba(
    to: Ipv6Addr,
    via: Tunnel,
    status: u8,
    seq: u16,
    lifetime: u16,
    options: Vec<MobilityOption>,
) -> BaOut {
    BaOut {
        to,
        via,
        ba: MhRepr {
            msg: MhMessage::Ba {
                status,
                flags: if matches!(via, Tunnel::Tlv { .. }) {
                    ba_flags::T
                } else {
                    0
                },
                seq,
                lifetime,
            },
            options,
        },
    }
}

impl BindingCache {
    /// A home agent with an empty binding cache.
    pub fn new(cfg: HaConfig) -> Self {
        let free_pool = cfg.ipv4_pool.iter().copied().collect();
        BindingCache {
            cfg,
            cache: BTreeMap::new(),
            expiry: BinaryHeap::new(),
            v4: BTreeMap::new(),
            prefixes: BTreeMap::new(),
            prefix_lens: [0; 32],
            mnp6: BTreeMap::new(),
            mnp6_lens: [0; 129],
            mnp4: BTreeMap::new(),
            mnp4_lens: [0; 33],
            free_pool,
        }
    }

    /// The binding cache, to save across restarts.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        // The cache is ordered by home address already.
        let bindings = self
            .cache
            .values()
            .map(|b| SavedBinding {
                hoa: b.hoa,
                tunnel: b.tunnel,
                seq: b.seq,
                remaining_ms: u64::try_from(b.expires.saturating_duration_since(now).as_millis())
                    .unwrap_or(u64::MAX),
                ipv4: b.ipv4,
                nat: b.nat,
                dynamic: b.dynamic,
                router: b.router,
                mnp: b.mnp.clone(),
            })
            .collect();
        Snapshot { bindings }
    }

    /// A home agent with a saved binding cache. Entries that do not fit the configuration
    /// any more (home address outside the home prefix, IPv4 home address neither static for
    /// that node nor in the pool, or held twice) are left out; expired ones too.
    pub fn restore(cfg: HaConfig, snap: &Snapshot, now: Instant) -> Self {
        let mut bc = BindingCache::new(cfg);
        for b in &snap.bindings {
            if b.remaining_ms == 0
                || !bc.cfg.home_prefix.contains(b.hoa)
                || bc.cache.contains_key(&b.hoa)
                || (b.router && !bc.restorable_mnp(b.hoa, &b.mnp))
            {
                continue;
            }
            let ipv4 = match b.ipv4 {
                None => None,
                Some((a, l)) => {
                    let ok = if b.dynamic {
                        bc.free_pool.contains(&a)
                    } else {
                        bc.cfg.static_ipv4.get(&b.hoa) == Some(&(a, l))
                    };
                    if !ok || bc.v4.contains_key(&a) {
                        continue;
                    }
                    if b.dynamic {
                        bc.free_pool.retain(|x| *x != a);
                    }
                    bc.index_v4(a, l, b.hoa);
                    Some((a, l))
                }
            };
            let mnp = if b.router { b.mnp.clone() } else { Vec::new() };
            bc.index_mnp(b.hoa, &mnp);
            bc.put(Binding {
                hoa: b.hoa,
                tunnel: b.tunnel,
                seq: b.seq,
                expires: now + Duration::from_millis(b.remaining_ms),
                ipv4,
                nat: b.nat,
                dynamic: b.dynamic && ipv4.is_some(),
                router: b.router,
                mnp,
            });
        }
        bc.settle();
        bc
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &HaConfig {
        &self.cfg
    }

    /// The binding of an IPv6 home address.
    pub fn binding(&self, hoa: Ipv6Addr) -> Option<&Binding> {
        self.cache.get(&hoa)
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// True when the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The tunnel for a packet to an IPv6 destination, if it is a bound home address.
    pub fn tunnel_for_v6(&self, dst: Ipv6Addr) -> Option<Tunnel> {
        self.cache.get(&dst).map(|b| b.tunnel)
    }

    /// The tunnel for a packet to an IPv6 destination that is a bound home address or lies
    /// inside a bound mobile network prefix (RFC 3963 section 6.5), and the home address
    /// of its owner. O(log n): one lookup per prefix length in use.
    pub fn route_v6(&self, dst: Ipv6Addr) -> Option<(Ipv6Addr, Tunnel)> {
        if let Some(b) = self.cache.get(&dst) {
            return Some((dst, b.tunnel));
        }
        let d = u128::from(dst);
        let owner = (0..=128u8)
            .rev()
            .filter(|l| self.mnp6_lens[usize::from(*l)] > 0)
            .find_map(|l| {
                let m = if l == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(l))
                };
                self.mnp6.get(&(l, d & m)).copied()
            })?;
        self.cache.get(&owner).map(|b| (owner, b.tunnel))
    }

    /// The owner of the bound IPv4 mobile network prefix holding `dst`, longest first.
    fn mnp4_owner(&self, dst: Ipv4Addr) -> Option<Ipv6Addr> {
        let d = u32::from(dst);
        (0..=32u8)
            .rev()
            .filter(|l| self.mnp4_lens[usize::from(*l)] > 0)
            .find_map(|l| self.mnp4.get(&(l, d & v4_mask(l))).copied())
    }

    /// The router whose bound mobile network prefixes hold `a`, if any.
    pub fn mnp_owner(&self, a: IpAddr) -> Option<Ipv6Addr> {
        match a {
            IpAddr::V6(d) => self.route_v6(d).map(|(h, _)| h).filter(|h| *h != d),
            IpAddr::V4(d) => self.mnp4_owner(d),
        }
    }

    fn mnp_key6(p: &NetPrefix) -> Option<(u8, u128)> {
        match p {
            NetPrefix::V6(a, l) => Some((*l, u128::from(*a))),
            NetPrefix::V4(..) => None,
        }
    }

    /// Adds a router's mobile network prefixes to the indexes.
    fn index_mnp(&mut self, hoa: Ipv6Addr, mnp: &[NetPrefix]) {
        for p in mnp {
            match *p {
                NetPrefix::V6(..) => {
                    if let Some(k) = Self::mnp_key6(p) {
                        if self.mnp6.insert(k, hoa).is_none() {
                            self.mnp6_lens[usize::from(k.0)] += 1;
                        }
                    }
                }
                NetPrefix::V4(a, l) => {
                    if self.mnp4.insert((l, u32::from(a)), hoa).is_none() {
                        self.mnp4_lens[usize::from(l)] += 1;
                    }
                }
            }
        }
    }

    /// Removes a router's mobile network prefixes from the indexes (only those it owns).
    fn unindex_mnp(&mut self, hoa: Ipv6Addr, mnp: &[NetPrefix]) {
        for p in mnp {
            match *p {
                NetPrefix::V6(..) => {
                    if let Some(k) = Self::mnp_key6(p) {
                        if self.mnp6.get(&k) == Some(&hoa) {
                            self.mnp6.remove(&k);
                            self.mnp6_lens[usize::from(k.0)] -= 1;
                        }
                    }
                }
                NetPrefix::V4(a, l) => {
                    let k = (l, u32::from(a));
                    if self.mnp4.get(&k) == Some(&hoa) {
                        self.mnp4.remove(&k);
                        self.mnp4_lens[usize::from(l)] -= 1;
                    }
                }
            }
        }
    }

    /// A saved router binding is restored only with prefixes the configuration still
    /// authorises for it.
    fn restorable_mnp(&self, hoa: Ipv6Addr, mnp: &[NetPrefix]) -> bool {
        let Some(allowed) = self.cfg.routers.get(&hoa) else {
            return false;
        };
        mnp.iter().all(|p| authorised(allowed, p))
    }

    /// The tunnel for a packet to an IPv4 destination inside a bound IPv4 home address or
    /// prefix, and the IPv6 home address of its owner: the bound address itself, else the
    /// longest bound prefix holding it. O(log n): one lookup per prefix length in use.
    pub fn tunnel_for_v4(&self, dst: Ipv4Addr) -> Option<(Ipv6Addr, Tunnel)> {
        let owner = self.v4.get(&dst).copied().or_else(|| {
            let d = u32::from(dst);
            (0..32u8)
                .rev()
                .filter(|l| self.prefix_lens[usize::from(*l)] > 0)
                .find_map(|l| self.prefixes.get(&(l, d & v4_mask(l))).copied())
        });
        let owner = owner.or_else(|| self.mnp4_owner(dst))?;
        self.cache.get(&owner).map(|b| (owner, b.tunnel))
    }

    /// Adds an IPv4 home address or prefix of `hoa` to the index.
    fn index_v4(&mut self, a: Ipv4Addr, len: u8, hoa: Ipv6Addr) {
        self.v4.insert(a, hoa);
        if len < 32 {
            let key = (len, u32::from(a) & v4_mask(len));
            if self.prefixes.insert(key, hoa).is_none() {
                self.prefix_lens[usize::from(len)] += 1;
            }
        }
    }

    /// Removes an IPv4 home address or prefix of `hoa` from the index.
    fn unindex_v4(&mut self, a: Ipv4Addr, len: u8, hoa: Ipv6Addr) {
        self.v4.remove(&a);
        if len < 32 {
            let key = (len, u32::from(a) & v4_mask(len));
            if self.prefixes.get(&key) == Some(&hoa) {
                self.prefixes.remove(&key);
                self.prefix_lens[usize::from(len)] -= 1;
            }
        }
    }

    /// Inserts or replaces a binding and schedules its end.
    fn put(&mut self, b: Binding) {
        self.expiry.push(Reverse((b.expires, b.hoa)));
        self.cache.insert(b.hoa, b);
    }

    fn remove(&mut self, hoa: Ipv6Addr) {
        if let Some(b) = self.cache.remove(&hoa) {
            self.drop_v4(&b);
            self.unindex_mnp(hoa, &b.mnp);
        }
    }

    fn drop_v4(&mut self, b: &Binding) {
        if let Some((a, l)) = b.ipv4 {
            self.unindex_v4(a, l, b.hoa);
            if b.dynamic {
                self.free_pool.push_back(a);
            }
        }
    }

    fn is_live(&self, e: &Reverse<(Instant, Ipv6Addr)>) -> bool {
        let Reverse((t, h)) = e;
        self.cache.get(h).is_some_and(|b| b.expires == *t)
    }

    /// Keeps the heap's top a live deadline (pops stale entries off it), and the heap
    /// within twice the cache (rebuilt when refreshes left too many stale entries).
    fn settle(&mut self) {
        if self.expiry.len() > 2 * self.cache.len() + 64 {
            self.expiry = self
                .cache
                .values()
                .map(|b| Reverse((b.expires, b.hoa)))
                .collect();
        }
        while let Some(top) = self.expiry.peek() {
            if self.is_live(top) {
                break;
            }
            self.expiry.pop();
        }
    }

    /// Decides the IPv4 home address for an IPv4 Home Address option (RFC 5555 section
    /// 4.2.1, RFC 3963 for prefixes): (ack status, the address and length granted,
    /// whether it came from the pool).
    fn ipv4_hoa(
        &mut self,
        hoa: Ipv6Addr,
        prefix_len: u8,
        p: bool,
        addr: Ipv4Addr,
    ) -> (u8, Option<(Ipv4Addr, u8, bool)>) {
        if prefix_len == 0 || prefix_len > 32 {
            return (v4status::INVALID, None);
        }
        if (p || prefix_len < 32) && !self.cfg.prefix_holders.contains(&hoa) {
            return (v4status::PREFIX_UNAUTHORIZED, None);
        }
        let current = self
            .cache
            .get(&hoa)
            .and_then(|b| b.ipv4.map(|(a, l)| (a, l, b.dynamic)));
        let stat = self.cfg.static_ipv4.get(&hoa).copied();
        if addr.is_unspecified() {
            if let Some((a, l)) = stat {
                return (v4status::SUCCESS, Some((a, l, false)));
            }
            if let Some(c) = current {
                return (v4status::SUCCESS, Some(c));
            }
            if p || prefix_len < 32 {
                return (v4status::DYNAMIC_UNAVAILABLE, None);
            }
            return match self.free_pool.pop_front() {
                Some(a) => (v4status::SUCCESS, Some((a, 32, true))),
                None => (v4status::DYNAMIC_UNAVAILABLE, None),
            };
        }
        if stat == Some((addr, prefix_len)) {
            return (v4status::SUCCESS, Some((addr, prefix_len, false)));
        }
        if let Some((a, l, d)) = current {
            if a == addr && l == prefix_len {
                return (v4status::SUCCESS, Some((a, l, d)));
            }
        }
        (v4status::INCORRECT_HOA, None)
    }

    /// The checks of a Binding Update before any state changes, in the order of RFC 6275
    /// section 10.3.1 (IPsec protection, H flag, home subnet, sequence number window) and
    /// then RFC 5555 section 4.5 (F flag): the refusal's status and the sequence number
    /// its BA carries (the cache's for an out-of-window BU, section 9.5.1).
    fn check(&self, hoa: Ipv6Addr, protected: bool, seq: u16, flags: u16) -> Result<(), (u8, u16)> {
        if !protected && !self.cfg.accept_unprotected {
            return Err((status::PROHIBITED, seq));
        }
        // RFC 3963 section 6.2: a router's BU without H, or from a node configured neither
        // as a router nor as an IPv4 prefix holder (RFC 5555's P flag), is refused with 140.
        if flags & bu_flags::R != 0
            && (flags & bu_flags::H == 0
                || !(self.cfg.routers.contains_key(&hoa) || self.cfg.prefix_holders.contains(&hoa)))
        {
            return Err((status::MR_NOT_PERMITTED, seq));
        }
        if flags & bu_flags::H == 0 {
            return Err((status::HOME_REGISTRATION_NOT_SUPPORTED, seq));
        }
        if !self.cfg.home_prefix.contains(hoa) {
            return Err((status::NOT_HOME_SUBNET, seq));
        }
        if let Some(b) = self.cache.get(&hoa) {
            if !seq::after(seq, b.seq) {
                return Err((status::SEQ_OUT_OF_WINDOW, b.seq));
            }
        }
        if flags & bu_flags::F != 0 && !self.cfg.accept_force_udp {
            return Err((status::FORCE_UDP_REFUSED, seq));
        }
        Ok(())
    }

    /// The tunnel a binding needs and whether a NAT is in the path (RFC 5555 sections 4.1
    /// and 4.2.2: NAT detected when the outer IPv4 source differs from the IPv4 Care-of
    /// Address option; UDP when there is a NAT or F asks for it, TLV when T is accepted;
    /// RFC 6275 section 6.2.5 for the Alternate Care-of Address over IPv6). Refused with
    /// status 174 when a BU in UDP has no IPv4 Care-of Address option.
    fn tunnel_for_bu(
        &self,
        arrival: Arrival,
        flags: u16,
        bu: &MhRepr,
    ) -> Result<(Tunnel, bool), u8> {
        match arrival {
            Arrival::Ipv6 { src } => {
                let alt = bu.options.iter().find_map(|o| match o {
                    MobilityOption::AlternateCoa(a) => Some(*a),
                    _ => None,
                });
                Ok((
                    Tunnel::Ipv6 {
                        coa: alt.unwrap_or(src),
                    },
                    false,
                ))
            }
            Arrival::Udp { src } => {
                let coa = bu
                    .options
                    .iter()
                    .find_map(|o| match o {
                        MobilityOption::Ipv4CareOfAddress(a) => Some(*a),
                        _ => None,
                    })
                    .ok_or(status::INVALID_COA)?;
                let nat = coa != *src.ip();
                let forced = flags & bu_flags::F != 0;
                let tlv = flags & bu_flags::T != 0 && self.cfg.accept_tlv;
                let t = if tlv {
                    Tunnel::Tlv { peer: src }
                } else if nat || forced {
                    Tunnel::Udp { peer: src }
                } else {
                    Tunnel::Ipv4 { coa }
                };
                Ok((t, nat))
            }
        }
    }

    /// The lifetime granted, in units of 4 s: the one asked for, capped by the configured
    /// maximum (RFC 6275 section 10.3.1, "the lifetime ... MAY be reduced").
    fn granted_lifetime(&self, asked: u16) -> u16 {
        let max4 = (self.cfg.max_lifetime.as_secs() / 4).min(u64::from(u16::MAX)) as u16;
        asked.min(max4)
    }

    /// The IPv4 home address part of a registration (RFC 5555 section 4.2.1): the address
    /// or prefix granted for the BU's IPv4 Home Address option, if any, and the IPv4
    /// Address Acknowledgement option that always answers that option (section 3.2.1).
    fn ipv4_registration(
        &mut self,
        hoa: Ipv6Addr,
        bu: &MhRepr,
    ) -> (Option<MobilityOption>, Option<(Ipv4Addr, u8, bool)>) {
        let router = bu_flags_of(bu) & bu_flags::R != 0 && self.cfg.routers.contains_key(&hoa);
        let Some((plen, p, addr)) = ipv4_hoa_request(bu, router) else {
            return (None, None);
        };
        let (st, granted) = self.ipv4_hoa(hoa, plen, p, addr);
        let (a, l) = granted
            .map(|(a, l, _)| (a, l))
            .unwrap_or((addr, plen.min(32)));
        let ack = MobilityOption::Ipv4AddressAck {
            status: st,
            prefix_len: l,
            addr: a,
        };
        (Some(ack), granted)
    }

    /// Creates or replaces the binding cache entry of `hoa` (RFC 6275 section 10.3.1; the
    /// IPv4 binding follows this BU, none without the option, RFC 5555 section 4.2.1).
    /// Returns the IPv4 home address kept: `None` when another mobile node holds the one
    /// granted (a static entry configured twice), which the caller reports in the ack.
    fn install(
        &mut self,
        mut b: Binding,
        ipv4: Option<(Ipv4Addr, u8, bool)>,
    ) -> Option<(Ipv4Addr, u8, bool)> {
        let hoa = b.hoa;
        let mut ipv4 = ipv4;
        if let Some(old) = self.cache.remove(&hoa) {
            self.unindex_mnp(hoa, &old.mnp);
            let keep_dynamic =
                old.dynamic && ipv4.is_some_and(|(a, _, d)| d && Some(a) == old.ipv4.map(|x| x.0));
            if !keep_dynamic {
                self.drop_v4(&old);
            } else if let Some((a, l)) = old.ipv4 {
                self.unindex_v4(a, l, hoa);
            }
        }
        if let Some((a, _, _)) = ipv4 {
            if self.v4.get(&a).is_some_and(|other| *other != hoa) {
                ipv4 = None;
            }
        }
        if let Some((a, l, _)) = ipv4 {
            self.index_v4(a, l, hoa);
        }
        b.ipv4 = ipv4.map(|(a, l, _)| (a, l));
        b.dynamic = ipv4.is_some_and(|(_, _, d)| d);
        let mnp = std::mem::take(&mut b.mnp);
        self.index_mnp(hoa, &mnp);
        b.mnp = mnp;
        self.put(b);
        ipv4
    }

    /// Processes a Binding Update for `hoa` (the inner IPv6 source for a UDP arrival, the
    /// Home Address option for an IPv6 one). `protected`: it came under ESP. Returns the
    /// Binding Acknowledgement to send, if one is due (always on rejection; on success when
    /// the A flag asks for it). RFC 6275 section 10.3.1 (registration) and 10.3.2
    /// (deregistration), RFC 5555 section 4.2.
    pub fn handle_bu(
        &mut self,
        now: Instant,
        hoa: Ipv6Addr,
        arrival: Arrival,
        protected: bool,
        bu: &MhRepr,
    ) -> Option<BaOut> {
        let MhMessage::Bu {
            seq: s,
            flags,
            lifetime,
        } = bu.msg
        else {
            return None;
        };
        let ba = self.register(now, hoa, arrival, protected, bu, s, flags, lifetime);
        self.settle();
        ba
    }

    #[allow(clippy::too_many_arguments)]
    fn register(
        &mut self,
        now: Instant,
        hoa: Ipv6Addr,
        arrival: Arrival,
        protected: bool,
        bu: &MhRepr,
        s: u16,
        flags: u16,
        lifetime: u16,
    ) -> Option<BaOut> {
        let back = back_path(arrival);
        let keepalive = self.cfg.nat_keepalive;
        let refuse = |(st, seq_out): (u8, u16)| {
            Some(ba(
                hoa,
                back,
                st,
                seq_out,
                0,
                nat_detection(arrival, false, false, keepalive),
            ))
        };
        if let Err(e) = self.check(hoa, protected, s, flags) {
            return refuse(e);
        }
        let forced = flags & bu_flags::F != 0;
        let (tunnel, nat) = match self.tunnel_for_bu(arrival, flags, bu) {
            Ok(x) => x,
            Err(st) => return refuse((st, s)),
        };
        let ack_wanted = flags & bu_flags::A != 0;
        let returning_home = matches!(tunnel, Tunnel::Ipv6 { coa } if coa == hoa);
        if lifetime == 0 || returning_home {
            // Deregistration (RFC 6275 section 10.3.2): both entries go.
            self.remove(hoa);
            let opts = nat_detection(arrival, nat, forced, keepalive);
            return ack_wanted.then(|| ba(hoa, back, status::ACCEPTED, s, 0, opts));
        }
        // A router of the Prefix Table; an IPv4 prefix holder that is not one keeps RFC
        // 5555's single IPv4 home prefix (its P option, checked with status 133).
        let router = flags & bu_flags::R != 0 && self.cfg.routers.contains_key(&hoa);
        let key_management = flags & bu_flags::K != 0 && self.cfg.key_management;
        // RFC 3963 section 6.2: a registration does not change its type (a deregistration,
        // above, ignores R).
        if self.cache.get(&hoa).is_some_and(|b| b.router != router) {
            return refuse((status::REG_TYPE_CHANGE, s));
        }
        let mnp = if router {
            match self.mobile_network(hoa, bu) {
                Ok(m) => m,
                Err(st) => return refuse((st, s)),
            }
        } else {
            Vec::new()
        };
        // A new binding only while there is room; the cache never grows past the cap,
        // whatever the number of home addresses asking.
        if !self.cache.contains_key(&hoa) && self.cache.len() >= self.cfg.max_bindings {
            return refuse((status::INSUFFICIENT_RESOURCES, s));
        }
        let (ack, granted_v4) = self.ipv4_registration(hoa, bu);
        let granted = self.granted_lifetime(lifetime);
        // Each IPv4 Home Address option with P is answered (RFC 5555 section 3.2.1): with
        // the IPv4 prefixes bound.
        let p_options = bu
            .options
            .iter()
            .filter(|o| router && matches!(o, MobilityOption::Ipv4HomeAddress { p: true, .. }))
            .count();
        let v4_acks: Vec<MobilityOption> = mnp
            .iter()
            .filter_map(|p| match *p {
                NetPrefix::V4(addr, prefix_len) if p_options > 0 => {
                    Some(MobilityOption::Ipv4AddressAck {
                        status: v4status::SUCCESS,
                        prefix_len,
                        addr,
                    })
                }
                _ => None,
            })
            .collect();
        let kept_v4 = self.install(
            Binding {
                hoa,
                tunnel,
                seq: s,
                expires: now + Duration::from_secs(u64::from(granted) * 4),
                ipv4: None,
                nat,
                dynamic: false,
                router,
                mnp,
            },
            granted_v4,
        );
        let mut options: Vec<MobilityOption> = ack.into_iter().collect();
        if granted_v4.is_some() && kept_v4.is_none() {
            if let Some(MobilityOption::Ipv4AddressAck { status, .. }) = options.first_mut() {
                *status = v4status::INCORRECT_HOA;
            }
        }
        options.extend(v4_acks);
        options.extend(nat_detection(arrival, nat, forced, keepalive));
        let ba_via = match (arrival, tunnel) {
            (Arrival::Udp { .. }, Tunnel::Tlv { peer }) => Tunnel::Tlv { peer },
            _ => back,
        };
        ack_wanted.then(|| {
            let mut out = ba(hoa, ba_via, status::ACCEPTED, s, granted, options);
            // R in the BA: forwarding for the mobile network is set up (RFC 3963 6.6).
            if let MhMessage::Ba { flags, .. } = &mut out.ba.msg {
                if router {
                    *flags |= ba_flags::R;
                }
                if key_management {
                    *flags |= ba_flags::K;
                }
            }
            out
        })
    }

    /// The mobile network prefixes a router's BU registers (RFC 3963 section 6.2): those
    /// of its Mobile Network Prefix options and of its IPv4 Home Address options with the
    /// P flag (RFC 5555 section 3.1.1; 0.0.0.0 asks for the configured IPv4 prefixes) in
    /// explicit mode, the configured ones in implicit mode (no such option). Refusals: 141
    /// for a prefix that cannot be one, 142 for one outside the router's Prefix Table, 143
    /// when implicit mode finds no configured prefix.
    fn mobile_network(&self, hoa: Ipv6Addr, bu: &MhRepr) -> Result<Vec<NetPrefix>, u8> {
        let allowed = self.cfg.routers.get(&hoa).map(Vec::as_slice).unwrap_or(&[]);
        let mut asked: Vec<NetPrefix> = Vec::new();
        let mut explicit = false;
        for o in &bu.options {
            let p = match *o {
                MobilityOption::MobileNetworkPrefix { len, prefix } => NetPrefix::v6(prefix, len),
                MobilityOption::Ipv4HomeAddress {
                    prefix_len,
                    p: true,
                    addr,
                } => {
                    if prefix_len == 0 || prefix_len > 32 {
                        return Err(status::INVALID_PREFIX);
                    }
                    if addr.is_unspecified() {
                        explicit = true;
                        for a in allowed.iter().filter(|a| matches!(a, NetPrefix::V4(..))) {
                            if !asked.contains(a) {
                                asked.push(*a);
                            }
                        }
                        continue;
                    }
                    NetPrefix::v4(addr, prefix_len)
                }
                _ => continue,
            };
            explicit = true;
            let p = p.filter(usable_mnp).ok_or(status::INVALID_PREFIX)?;
            if !asked.contains(&p) {
                // Bounded: a binding holds at most what the Prefix Table holds.
                if asked.len() >= MAX_MNP {
                    return Err(status::INVALID_PREFIX);
                }
                asked.push(p);
            }
        }
        if !explicit {
            if allowed.is_empty() {
                return Err(status::FORWARDING_FAILED);
            }
            return Ok(allowed.to_vec());
        }
        if asked.is_empty() || asked.iter().any(|p| !authorised(allowed, p)) {
            return Err(status::PREFIX_NOT_AUTHORIZED);
        }
        Ok(asked)
    }

    /// When the next binding ends. O(1).
    #[must_use = "the deadline must be armed on a timer"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiry.peek().map(|Reverse((t, _))| *t)
    }

    /// Removes the bindings whose lifetime ended and appends their home addresses to
    /// `ended` (in deadline order): pops only the heap entries that are due.
    pub fn handle_timeout(&mut self, now: Instant, ended: &mut Vec<Ipv6Addr>) {
        while let Some(Reverse((t, hoa))) = self.expiry.peek().copied() {
            if t > now {
                break;
            }
            self.expiry.pop();
            if self.cache.get(&hoa).is_some_and(|b| b.expires == t) {
                self.remove(hoa);
                ended.push(hoa);
            }
        }
        self.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MN1: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xa);
    const MN2: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xb);
    const MN3: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xc);

    fn cfg() -> HaConfig {
        let mut c = HaConfig::new("2001:db8:1::/64".parse().unwrap());
        c.static_ipv4
            .insert(MN1, (Ipv4Addr::new(198, 51, 100, 5), 32));
        c.static_ipv4
            .insert(MN2, (Ipv4Addr::new(198, 51, 100, 64), 26));
        c.prefix_holders.insert(MN2);
        c
    }

    /// A BU in UDP from 192.0.2.<host> (no NAT), lifetime in units of 4 s, asking for the
    /// node's static IPv4 home address when `v4` is given.
    fn bu(
        bc: &mut BindingCache,
        now: Instant,
        hoa: Ipv6Addr,
        seq: u16,
        lifetime: u16,
        v4: Option<(Ipv4Addr, u8)>,
    ) -> u8 {
        let coa = Ipv4Addr::new(192, 0, 2, hoa.segments()[7] as u8);
        let mut options = vec![MobilityOption::Ipv4CareOfAddress(coa)];
        if let Some((addr, prefix_len)) = v4 {
            options.insert(
                0,
                MobilityOption::Ipv4HomeAddress {
                    prefix_len,
                    p: prefix_len < 32,
                    addr,
                },
            );
        }
        let m = MhRepr {
            msg: MhMessage::Bu {
                seq,
                flags: bu_flags::A | bu_flags::H,
                lifetime,
            },
            options,
        };
        let arrival = Arrival::Udp {
            src: SocketAddrV4::new(coa, 4191),
        };
        match bc.handle_bu(now, hoa, arrival, true, &m).unwrap().ba.msg {
            MhMessage::Ba { status, .. } => status,
            _ => unreachable!(),
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn a_full_cache_refuses_new_home_addresses_with_130_and_keeps_serving_bound_ones() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.max_bindings = 2;
        let mut bc = BindingCache::new(c);
        assert_eq!(bu(&mut bc, t0, MN1, 1, 3, None), status::ACCEPTED);
        assert_eq!(bu(&mut bc, t0, MN2, 1, 3, None), status::ACCEPTED);
        assert_eq!(
            bu(&mut bc, t0, MN3, 1, 3, None),
            status::INSUFFICIENT_RESOURCES
        );
        assert_eq!(bc.len(), 2);
        assert!(bc.binding(MN3).is_none());
        // A bound node refreshes, and its deregistration makes room.
        assert_eq!(bu(&mut bc, t0, MN1, 2, 3, None), status::ACCEPTED);
        assert_eq!(bu(&mut bc, t0, MN2, 2, 0, None), status::ACCEPTED);
        assert_eq!(bu(&mut bc, t0, MN3, 2, 3, None), status::ACCEPTED);
        assert_eq!(bc.len(), 2);
    }

    #[test]
    fn bindings_end_in_deadline_order() {
        let t0 = Instant::now();
        let mut bc = BindingCache::new(cfg());
        assert_eq!(bu(&mut bc, t0, MN1, 1, 3, None), status::ACCEPTED);
        assert_eq!(bu(&mut bc, t0, MN2, 1, 1, None), status::ACCEPTED);
        assert_eq!(bu(&mut bc, t0, MN3, 1, 2, None), status::ACCEPTED);
        assert_eq!(bc.poll_timeout(), Some(secs(t0, 4)));
        let mut ended = Vec::new();
        bc.handle_timeout(secs(t0, 3), &mut ended);
        assert!(ended.is_empty());
        bc.handle_timeout(secs(t0, 8), &mut ended);
        assert_eq!(ended, vec![MN2, MN3]);
        assert_eq!(bc.poll_timeout(), Some(secs(t0, 12)));
        bc.handle_timeout(secs(t0, 100), &mut ended);
        assert_eq!(ended, vec![MN2, MN3, MN1]);
        assert_eq!(bc.poll_timeout(), None);
        assert!(bc.is_empty());
    }

    #[test]
    fn a_refreshed_binding_outlives_its_stale_deadline() {
        let t0 = Instant::now();
        let mut bc = BindingCache::new(cfg());
        bu(&mut bc, t0, MN1, 1, 2, None);
        assert_eq!(bc.poll_timeout(), Some(secs(t0, 8)));
        // Refreshed at 4 s for 8 s more: the entry for 8 s is stale, the next deadline 12 s.
        bu(&mut bc, secs(t0, 4), MN1, 2, 2, None);
        assert_eq!(bc.poll_timeout(), Some(secs(t0, 12)));
        let mut ended = Vec::new();
        bc.handle_timeout(secs(t0, 8), &mut ended);
        assert!(ended.is_empty());
        assert!(bc.binding(MN1).is_some());
        // Shortened: the earlier deadline wins, the later one is stale.
        bu(&mut bc, secs(t0, 9), MN1, 3, 1, None);
        assert_eq!(bc.poll_timeout(), Some(secs(t0, 13)));
        bc.handle_timeout(secs(t0, 13), &mut ended);
        assert_eq!(ended, vec![MN1]);
        assert_eq!(bc.poll_timeout(), None);
        // Refreshes never grow the heap without bound.
        bu(&mut bc, t0, MN2, 1, 1000, None);
        for i in 0..1000u16 {
            bu(&mut bc, t0, MN2, i + 2, 1000, None);
        }
        assert!(bc.expiry.len() <= 2 * bc.len() + 65, "{}", bc.expiry.len());
    }

    #[test]
    fn ipv4_index_finds_addresses_and_prefixes_until_deregistration() {
        let t0 = Instant::now();
        let mut bc = BindingCache::new(cfg());
        let a5 = Ipv4Addr::new(198, 51, 100, 5);
        let net = Ipv4Addr::new(198, 51, 100, 64);
        assert_eq!(
            bu(&mut bc, t0, MN1, 1, 10, Some((a5, 32))),
            status::ACCEPTED
        );
        assert_eq!(
            bu(&mut bc, t0, MN2, 1, 10, Some((net, 26))),
            status::ACCEPTED
        );
        assert_eq!(bc.tunnel_for_v4(a5).map(|x| x.0), Some(MN1));
        for host in [64, 100, 127] {
            let a = Ipv4Addr::new(198, 51, 100, host);
            assert_eq!(bc.tunnel_for_v4(a).map(|x| x.0), Some(MN2), "{a}");
        }
        for host in [4, 6, 63, 128] {
            assert!(bc
                .tunnel_for_v4(Ipv4Addr::new(198, 51, 100, host))
                .is_none());
        }
        // Deregistration (lifetime 0) takes both out of the index.
        bu(&mut bc, t0, MN2, 2, 0, None);
        assert!(bc.tunnel_for_v4(Ipv4Addr::new(198, 51, 100, 100)).is_none());
        assert!(bc.prefixes.is_empty());
        assert_eq!(bc.prefix_lens.iter().sum::<u32>(), 0);
        // A refresh without the option drops the IPv4 binding (RFC 5555 section 4.2.1).
        bu(&mut bc, t0, MN1, 2, 10, None);
        assert!(bc.tunnel_for_v4(a5).is_none());
        assert!(bc.binding(MN1).is_some());
        // And the end of a lifetime too.
        bu(&mut bc, t0, MN2, 3, 10, Some((net, 26)));
        assert!(bc.tunnel_for_v4(Ipv4Addr::new(198, 51, 100, 65)).is_some());
        bc.handle_timeout(secs(t0, 40), &mut Vec::new());
        assert!(bc.tunnel_for_v4(Ipv4Addr::new(198, 51, 100, 65)).is_none());
        assert!(bc.v4.is_empty());
    }
}
