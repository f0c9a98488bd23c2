//! The home agent's protocol module (RFC 6275 section 10.3, RFC 5555 sections 4.2 and 4.5,
//! RFC 3963 for prefixes): the binding cache with separate entries for the IPv6 and the
//! IPv4 home address, Binding Update processing with the sequence window and lifetime rules,
//! IPv4 home address assignment (static, dynamic pool, prefixes), NAT detection, and the
//! tunnel each binding needs. The tunnel-interface module below it (Linux layer) passes each
//! BU with how it arrived and carries out the answers.

use crate::dsmip::seq;
use m6t_wire::mh::{ba_flags, bu_flags, MhMessage, MhRepr, MobilityOption};
use m6t_wire::Ipv6Prefix;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Binding Acknowledgement status codes used here (RFC 6275 section 6.1.8, RFC 5555).
pub mod status {
    /// Binding Update accepted.
    pub const ACCEPTED: u8 = 0;
    /// Reason unspecified.
    pub const UNSPECIFIED: u8 = 128;
    /// Administratively prohibited (e.g. an unprotected BU).
    pub const PROHIBITED: u8 = 129;
    /// Home registration not supported (H flag clear).
    pub const HOME_REGISTRATION_NOT_SUPPORTED: u8 = 131;
    /// Not home subnet.
    pub const NOT_HOME_SUBNET: u8 = 132;
    /// Sequence number out of window.
    pub const SEQ_OUT_OF_WINDOW: u8 = 135;
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
    pub static_ipv4: HashMap<Ipv6Addr, (Ipv4Addr, u8)>,
    /// Pool for dynamic IPv4 home addresses (requests for 0.0.0.0).
    pub ipv4_pool: Vec<Ipv4Addr>,
    /// Mobile nodes (IPv6 home addresses) allowed IPv4 prefixes (P flag).
    pub prefix_holders: HashSet<Ipv6Addr>,
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
}

impl HaConfig {
    /// Defaults around a home prefix: no IPv4 home addresses, 1 h lifetimes, NAT
    /// keep-alive 110 s, F accepted, TLV refused, unprotected BUs refused.
    pub fn new(home_prefix: Ipv6Prefix) -> Self {
        HaConfig {
            home_prefix,
            static_ipv4: HashMap::new(),
            ipv4_pool: Vec::new(),
            prefix_holders: HashSet::new(),
            max_lifetime: Duration::from_secs(3600),
            nat_keepalive: 110,
            accept_force_udp: true,
            accept_tlv: false,
            accept_unprotected: false,
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
}

/// The binding cache as saved: lifetimes are relative, so the file means the same whatever
/// the clock of the process that reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every binding.
    pub bindings: Vec<SavedBinding>,
}

/// The home agent machine.
#[derive(Debug)]
pub struct BindingCache {
    cfg: HaConfig,
    cache: HashMap<Ipv6Addr, Binding>,
    /// IPv4 home address -> IPv6 home address.
    v4: HashMap<Ipv4Addr, Ipv6Addr>,
    free_pool: VecDeque<Ipv4Addr>,
}

fn v4_in(a: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let m = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    u32::from(a) & m == u32::from(net) & m
}

impl BindingCache {
    /// A home agent with an empty binding cache.
    pub fn new(cfg: HaConfig) -> Self {
        let free_pool = cfg.ipv4_pool.iter().copied().collect();
        BindingCache {
            cfg,
            cache: HashMap::new(),
            v4: HashMap::new(),
            free_pool,
        }
    }

    /// The binding cache, to save across restarts.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let mut bindings: Vec<SavedBinding> = self
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
            })
            .collect();
        bindings.sort_by_key(|b| b.hoa);
        Snapshot { bindings }
    }

    /// A home agent with a saved binding cache. Entries that do not fit the configuration
    /// any more (home address outside the home prefix, IPv4 home address neither static for
    /// that node nor in the pool, or held twice) are left out; expired ones too.
    pub fn restore(cfg: HaConfig, snap: &Snapshot, now: Instant) -> Self {
        let mut ha = BindingCache::new(cfg);
        for b in &snap.bindings {
            if b.remaining_ms == 0
                || !ha.cfg.home_prefix.contains(b.hoa)
                || ha.cache.contains_key(&b.hoa)
            {
                continue;
            }
            let ipv4 = match b.ipv4 {
                None => None,
                Some((a, l)) => {
                    let ok = if b.dynamic {
                        ha.free_pool.contains(&a)
                    } else {
                        ha.cfg.static_ipv4.get(&b.hoa) == Some(&(a, l))
                    };
                    if !ok || ha.v4.contains_key(&a) {
                        continue;
                    }
                    if b.dynamic {
                        ha.free_pool.retain(|x| *x != a);
                    }
                    ha.v4.insert(a, b.hoa);
                    Some((a, l))
                }
            };
            ha.cache.insert(
                b.hoa,
                Binding {
                    hoa: b.hoa,
                    tunnel: b.tunnel,
                    seq: b.seq,
                    expires: now + Duration::from_millis(b.remaining_ms),
                    ipv4,
                    nat: b.nat,
                    dynamic: b.dynamic && ipv4.is_some(),
                },
            );
        }
        ha
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

    /// The tunnel for a packet to an IPv4 destination inside a bound IPv4 home address or
    /// prefix, and the IPv6 home address of its owner.
    pub fn tunnel_for_v4(&self, dst: Ipv4Addr) -> Option<(Ipv6Addr, Tunnel)> {
        if let Some(h) = self.v4.get(&dst) {
            return self.cache.get(h).map(|b| (*h, b.tunnel));
        }
        self.cache.values().find_map(|b| match b.ipv4 {
            Some((net, len)) if len < 32 && v4_in(dst, net, len) => Some((b.hoa, b.tunnel)),
            _ => None,
        })
    }

    fn ba(
        &self,
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

    fn remove(&mut self, hoa: Ipv6Addr) {
        if let Some(b) = self.cache.remove(&hoa) {
            self.drop_v4(&b);
        }
    }

    fn drop_v4(&mut self, b: &Binding) {
        if let Some((a, _)) = b.ipv4 {
            self.v4.remove(&a);
            if b.dynamic {
                self.free_pool.push_back(a);
            }
        }
    }

    /// Decides the IPv4 home address for an IPv4 Home Address option: (ack status, the
    /// address and length granted, whether it came from the pool).
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

    /// Processes a Binding Update for `hoa` (the inner IPv6 source for a UDP arrival, the
    /// Home Address option for an IPv6 one). `protected`: it came under ESP. Returns the
    /// Binding Acknowledgement to send, if one is due (always on rejection; on success when
    /// the A flag asks for it).
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
        let back = match arrival {
            Arrival::Ipv6 { src } => Tunnel::Ipv6 { coa: src },
            Arrival::Udp { src } => Tunnel::Udp { peer: src },
        };
        let keepalive = self.cfg.nat_keepalive;
        let nat_opt = move |nat: bool, forced: bool| -> Vec<MobilityOption> {
            match arrival {
                // The BA carries NAT Detection whenever the BU came in UDP (section 4.2). As
                // a mobile node that sees the option MUST use UDP (section 4.4), the no-NAT
                // case is told by the refresh time 0xffffffff ("no keep-alive needed",
                // section 3.2.2): the mobile node then uses IP-in-IP like the home agent.
                Arrival::Udp { .. } => vec![MobilityOption::NatDetection {
                    f: forced && !nat,
                    refresh: if nat || forced { keepalive } else { u32::MAX },
                }],
                Arrival::Ipv6 { .. } => Vec::new(),
            }
        };
        let reject = |this: &Self, st: u8, seq_out: u16| {
            Some(this.ba(hoa, back, st, seq_out, 0, nat_opt(false, false)))
        };
        if !protected && !self.cfg.accept_unprotected {
            return reject(self, status::PROHIBITED, s);
        }
        if flags & bu_flags::H == 0 {
            return reject(self, status::HOME_REGISTRATION_NOT_SUPPORTED, s);
        }
        if !self.cfg.home_prefix.contains(hoa) {
            return reject(self, status::NOT_HOME_SUBNET, s);
        }
        if let Some(b) = self.cache.get(&hoa) {
            if !seq::after(s, b.seq) {
                return reject(self, status::SEQ_OUT_OF_WINDOW, b.seq);
            }
        }
        let forced = flags & bu_flags::F != 0;
        if forced && !self.cfg.accept_force_udp {
            return reject(self, status::FORCE_UDP_REFUSED, s);
        }
        let v4coa = bu.options.iter().find_map(|o| match o {
            MobilityOption::Ipv4CareOfAddress(a) => Some(*a),
            _ => None,
        });
        let alt = bu.options.iter().find_map(|o| match o {
            MobilityOption::AlternateCoa(a) => Some(*a),
            _ => None,
        });
        // The tunnel this binding needs, and whether a NAT is in the path.
        let (tunnel, nat) = match arrival {
            Arrival::Ipv6 { src } => (
                Tunnel::Ipv6 {
                    coa: alt.unwrap_or(src),
                },
                false,
            ),
            Arrival::Udp { src } => {
                let Some(coa) = v4coa else {
                    return reject(self, status::INVALID_COA, s);
                };
                let nat = coa != *src.ip();
                let tlv = flags & bu_flags::T != 0 && self.cfg.accept_tlv;
                let t = if tlv {
                    Tunnel::Tlv { peer: src }
                } else if nat || forced {
                    Tunnel::Udp { peer: src }
                } else {
                    Tunnel::Ipv4 { coa }
                };
                (t, nat)
            }
        };
        let returning_home = matches!(tunnel, Tunnel::Ipv6 { coa } if coa == hoa);
        if lifetime == 0 || returning_home {
            // Deregistration (RFC 6275 section 10.3.2): both entries go.
            self.remove(hoa);
            let ba = self.ba(hoa, back, status::ACCEPTED, s, 0, nat_opt(nat, forced));
            return (flags & bu_flags::A != 0).then_some(ba);
        }
        let mut options = Vec::new();
        let v4req = bu.options.iter().find_map(|o| match o {
            MobilityOption::Ipv4HomeAddress {
                prefix_len,
                p,
                addr,
            } => Some((*prefix_len, *p, *addr)),
            _ => None,
        });
        let mut ipv4 = None;
        if let Some((plen, p, addr)) = v4req {
            let (st, granted) = self.ipv4_hoa(hoa, plen, p, addr);
            // The acknowledgement always answers the option (section 3.2.1).
            let (a, l) = granted
                .map(|(a, l, _)| (a, l))
                .unwrap_or((addr, plen.min(32)));
            options.push(MobilityOption::Ipv4AddressAck {
                status: st,
                prefix_len: l,
                addr: a,
            });
            ipv4 = granted;
        }
        options.extend(nat_opt(nat, forced));
        let max4 = (self.cfg.max_lifetime.as_secs() / 4).min(u64::from(u16::MAX)) as u16;
        let granted = lifetime.min(max4);
        // Replace the entry: the IPv4 binding follows this BU (none without the option).
        if let Some(old) = self.cache.remove(&hoa) {
            let keep_dynamic =
                old.dynamic && ipv4.is_some_and(|(a, _, d)| d && Some(a) == old.ipv4.map(|x| x.0));
            if !keep_dynamic {
                self.drop_v4(&old);
            } else if let Some((a, _)) = old.ipv4 {
                self.v4.remove(&a);
            }
        }
        if let Some((a, _, _)) = ipv4 {
            if let Some(other) = self.v4.get(&a).copied() {
                // Another mobile node holds it (a static entry configured twice): refuse.
                if other != hoa {
                    ipv4 = None;
                    if let Some(MobilityOption::Ipv4AddressAck { status, .. }) = options.first_mut()
                    {
                        *status = v4status::INCORRECT_HOA;
                    }
                }
            }
        }
        if let Some((a, _, _)) = ipv4 {
            self.v4.insert(a, hoa);
        }
        self.cache.insert(
            hoa,
            Binding {
                hoa,
                tunnel,
                seq: s,
                expires: now + Duration::from_secs(u64::from(granted) * 4),
                ipv4: ipv4.map(|(a, l, _)| (a, l)),
                nat,
                dynamic: ipv4.is_some_and(|(_, _, d)| d),
            },
        );
        let ba_via = match (arrival, tunnel) {
            (Arrival::Udp { .. }, Tunnel::Tlv { peer }) => Tunnel::Tlv { peer },
            _ => back,
        };
        let ba = self.ba(hoa, ba_via, status::ACCEPTED, s, granted, options);
        (flags & bu_flags::A != 0).then_some(ba)
    }

    /// When the next binding ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.cache.values().map(|b| b.expires).min()
    }

    /// Removes the bindings whose lifetime ended; returns their home addresses.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Ipv6Addr> {
        let gone: Vec<Ipv6Addr> = self
            .cache
            .values()
            .filter(|b| b.expires <= now)
            .map(|b| b.hoa)
            .collect();
        for h in &gone {
            self.remove(*h);
        }
        gone
    }
}
