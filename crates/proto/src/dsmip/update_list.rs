//! The mobile node's protocol module (RFC 6275 section 11.7, RFC 5555 section 4.4): the
//! binding update list for the IPv6 and the IPv4 home address, care-of address selection
//! (IPv6 preferred; IPv4 after three failed BUs, section 4.4.1), Binding Updates with the
//! right options for each case, retransmission with exponential backoff, refresh before the
//! lifetime ends and at the NAT keep-alive period, and BA processing (section 4.4, NAT
//! detection switching the tunnel to UDP).
//!
//! This is the signalling logic only ([`BindingUpdateList`]); the node that joins it to the
//! tunnel-interface module, builds the packets and takes bytes is
//! [`crate::dsmip::mobile_node::MobileNode`].

use crate::dsmip::{seq, NetPrefix};
use m6t_wire::mh::{ba_flags, bu_flags, MhMessage, MhRepr, MobilityOption};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// What the mobile node asks for as its IPv4 home address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4HoaRequest {
    /// No IPv4 home address.
    None,
    /// This static address (/32).
    Static(Ipv4Addr),
    /// A dynamic one (0.0.0.0 in the option).
    Dynamic,
}

/// Configuration of a mobile node.
#[derive(Debug, Clone)]
pub struct MnConfig {
    /// IPv6 home address.
    pub hoa: Ipv6Addr,
    /// Home agent's IPv6 address.
    pub ha6: Ipv6Addr,
    /// Home agent's IPv4 address.
    pub ha4: Ipv4Addr,
    /// IPv4 home address wanted.
    pub ipv4_hoa: Ipv4HoaRequest,
    /// Lifetime asked for, in units of 4 s.
    pub lifetime: u16,
    /// Ask the HA to force UDP encapsulation (F flag).
    pub force_udp: bool,
    /// Ask for the TLV-header format (T flag).
    pub request_tlv: bool,
    /// First retransmission timeout of a first registration (InitialBindackTimeoutFirstReg).
    pub first_timeout: Duration,
    /// First retransmission timeout otherwise (INITIAL_BINDACK_TIMEOUT).
    pub initial_timeout: Duration,
    /// Retransmission timeout cap (MAX_BINDACK_TIMEOUT).
    pub max_timeout: Duration,
    /// Unanswered BUs on an IPv6 care-of address before falling back to IPv4.
    pub v6_attempts: u32,
    /// NAT keep-alive period when the HA gives none (NATKATIMEOUT).
    pub nat_keepalive: Duration,
    /// Register as a mobile router (R flag, RFC 3963 section 6.1).
    pub router: bool,
    /// The mobile network prefixes behind the router (IPv6 and IPv4).
    pub mobile_network: Vec<NetPrefix>,
    /// Explicit mode: the BU lists `mobile_network` (Mobile Network Prefix options, RFC
    /// 3963 section 6.2; IPv4 Home Address options with the P flag, RFC 5555 section
    /// 3.1.1). Implicit mode otherwise: the home agent knows them (RFC 3963 section 5.2).
    pub explicit_prefixes: bool,
    /// The node's IKE SA survives a move (it runs from the care-of address and follows
    /// it): K in every BU from a care-of address (RFC 6275 section 11.7.1, RFC 4877
    /// section 4.4.1).
    pub key_management: bool,
}

impl Default for MnConfig {
    /// The RFC defaults (lifetime 400 s, RFC 6275 section 12 timeouts, NATKATIMEOUT of RFC
    /// 5555 section 4.3, IPv4 fallback after three BUs, section 4.4.1); the required
    /// addresses `hoa`, `ha6` and `ha4` are left unspecified (see [`MnConfig::new`]).
    fn default() -> Self {
        MnConfig {
            hoa: Ipv6Addr::UNSPECIFIED,
            ha6: Ipv6Addr::UNSPECIFIED,
            ha4: Ipv4Addr::UNSPECIFIED,
            ipv4_hoa: Ipv4HoaRequest::None,
            lifetime: 100,
            force_udp: false,
            request_tlv: false,
            first_timeout: Duration::from_millis(1500),
            initial_timeout: Duration::from_secs(1),
            max_timeout: Duration::from_secs(32),
            v6_attempts: 3,
            nat_keepalive: Duration::from_secs(110),
            router: false,
            mobile_network: Vec::new(),
            explicit_prefixes: false,
            key_management: false,
        }
    }
}

impl MnConfig {
    /// The RFC defaults around the addresses.
    pub fn new(hoa: Ipv6Addr, ha6: Ipv6Addr, ha4: Ipv4Addr) -> Self {
        MnConfig {
            hoa,
            ha6,
            ha4,
            ..MnConfig::default()
        }
    }
}

/// A care-of address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coa {
    /// IPv6 care-of address: BU over IPv6 with a Home Address option.
    V6(Ipv6Addr),
    /// IPv4 care-of address: BU inside UDP/IPv4 to the HA's port 4191.
    V4(Ipv4Addr),
}

/// How data to the home agent is tunnelled once registered (RFC 5555 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelMode {
    /// IPv6/IPv4 in IPv6 from the IPv6 care-of address.
    Ipv6,
    /// IPv6/IPv4 in IPv4 (no NAT, F not set).
    Ipv4,
    /// In UDP/IPv4, vanilla.
    Udp,
    /// In UDP/IPv4 with the TLV header.
    Tlv,
}

/// A Binding Update to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuOut {
    /// The care-of address it is sent from (and how: IPv6, or UDP/IPv4).
    pub coa: Coa,
    /// The message.
    pub bu: MhRepr,
}

/// The registration as the binding update list knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Care-of address registered.
    pub coa: Coa,
    /// Tunnel to use.
    pub mode: TunnelMode,
    /// Lifetime granted, from the BA.
    pub lifetime: Duration,
    /// The IPv4 home address granted, if any.
    pub ipv4_hoa: Option<Ipv4Addr>,
    /// The last IPv4 acknowledgement status (when an IPv4 HoA was asked for).
    pub ipv4_status: Option<u8>,
    /// The home agent forwards the mobile network (R in the BA, RFC 3963 section 6.6).
    pub router: bool,
    /// The home agent keeps the IKE SA across moves too (K in the BA, RFC 4877 section
    /// 4.4.1); without it, an IKE SA must be made again from each new care-of address.
    pub key_management: bool,
}

#[derive(Debug, Clone)]
struct Pending {
    seq: u16,
    coa: Coa,
    sent: Instant,
    timeout: Duration,
    attempts: u32,
    force_udp: bool,
}

/// The mobile node machine.
#[derive(Debug)]
pub struct BindingUpdateList {
    cfg: MnConfig,
    seq: u16,
    v6: Option<Ipv6Addr>,
    v4: Option<Ipv4Addr>,
    v6_failed: bool,
    pending: Option<Pending>,
    registered: Option<Registration>,
    refresh_at: Option<Instant>,
    outbox: Option<BuOut>,
    /// Whether the HA refused F (status 144): ask no more for this attachment.
    f_refused: bool,
    /// The status of the last refusal (a BA with status >= 128), until a registration.
    refused: Option<u8>,
    /// On the home link (RFC 6275 section 11.5.5): the registration is a deregistration from
    /// the home address, and care-of addresses wait until the node leaves.
    home: bool,
}

impl BindingUpdateList {
    /// A mobile node with no care-of address yet; `seq0` is the first sequence number.
    pub fn new(cfg: MnConfig, seq0: u16) -> Self {
        BindingUpdateList {
            cfg,
            seq: seq0,
            v6: None,
            v4: None,
            v6_failed: false,
            pending: None,
            registered: None,
            refresh_at: None,
            outbox: None,
            f_refused: false,
            refused: None,
            home: false,
        }
    }

    /// The current registration, if the last BU was accepted.
    pub fn registration(&self) -> Option<&Registration> {
        self.registered.as_ref()
    }

    /// The status of the last refused BU (e.g. 140-143 for a mobile router, RFC 3963
    /// section 6.2), cleared by the next registration: what status shows when it fails.
    pub fn last_refusal(&self) -> Option<u8> {
        self.refused
    }

    /// The care-of address movement detection prefers now (RFC 5555 section 4.4.1): the
    /// one a BU under way registers, where the tunnel-interface module sends BUs from.
    pub fn chosen(&self) -> Option<Coa> {
        self.choose()
    }

    fn choose(&self) -> Option<Coa> {
        if self.home {
            // At home the "care-of address" of the deregistration is the home address.
            return Some(Coa::V6(self.cfg.hoa));
        }
        match (self.v6, self.v4) {
            (Some(a), _) if !(self.v6_failed && self.v4.is_some()) => Some(Coa::V6(a)),
            (_, Some(b)) => Some(Coa::V4(b)),
            (Some(a), None) => Some(Coa::V6(a)),
            (None, None) => None,
        }
    }

    /// Reports the care-of addresses movement detection found (the most preferred usable
    /// IPv6 and IPv4 addresses, section 4.4.1). A new choice starts a registration.
    pub fn handle_coas(&mut self, now: Instant, v6: Option<Ipv6Addr>, v4: Option<Ipv4Addr>) {
        if v6 != self.v6 {
            self.v6_failed = false;
        }
        self.v6 = v6;
        self.v4 = v4;
        if self.home {
            // Kept for when the node leaves home.
            return;
        }
        let chosen = self.choose();
        let current = self
            .pending
            .as_ref()
            .map(|p| p.coa)
            .or(self.registered.as_ref().map(|r| r.coa));
        if chosen != current {
            self.f_refused = false;
            match chosen {
                Some(c) => self.start(now, c),
                None => {
                    self.pending = None;
                    self.registered = None;
                    self.refresh_at = None;
                }
            }
        }
    }

    /// Whether the node is on its home link ([`Self::handle_home`]).
    pub fn is_home(&self) -> bool {
        self.home
    }

    /// Whether the node is on its home link and the home agent accepted the deregistration.
    pub fn at_home(&self) -> bool {
        self.home && self.pending.is_none()
    }

    /// Movement detection found the home link (its prefix on-link, RFC 6275 section 11.5.5)
    /// or lost it. Coming home starts a deregistration from the home address (A and H set,
    /// lifetime 0, care-of address = home address); leaving registers anew from the care-of
    /// addresses last reported.
    pub fn handle_home(&mut self, now: Instant, home: bool) {
        if home == self.home {
            return;
        }
        self.home = home;
        self.f_refused = false;
        self.v6_failed = false;
        self.pending = None;
        self.refresh_at = None;
        if home {
            self.start(now, Coa::V6(self.cfg.hoa));
        } else {
            self.registered = None;
            if let Some(c) = self.choose() {
                self.start(now, c);
            }
        }
    }

    fn bu_for(&self, seq: u16, coa: Coa, force_udp: bool) -> MhRepr {
        let mut flags = bu_flags::A | bu_flags::H;
        let mut options = Vec::new();
        if self.cfg.router {
            flags |= bu_flags::R;
        }
        if self.cfg.key_management && coa != Coa::V6(self.cfg.hoa) {
            flags |= bu_flags::K;
        }
        if coa == Coa::V6(self.cfg.hoa) {
            // The deregistration from home (RFC 6275 section 11.5.5): both home addresses'
            // bindings go (RFC 5555 section 4.2.1), no option needed.
            return MhRepr {
                msg: MhMessage::Bu {
                    seq,
                    flags,
                    lifetime: 0,
                },
                options,
            };
        }
        if let Coa::V4(a) = coa {
            if force_udp {
                flags |= bu_flags::F;
            }
            if self.cfg.request_tlv {
                flags |= bu_flags::T;
            }
            options.push(MobilityOption::Ipv4CareOfAddress(a));
        }
        match self.cfg.ipv4_hoa {
            Ipv4HoaRequest::None => {}
            Ipv4HoaRequest::Static(a) => options.insert(
                0,
                MobilityOption::Ipv4HomeAddress {
                    prefix_len: 32,
                    p: false,
                    addr: a,
                },
            ),
            Ipv4HoaRequest::Dynamic => options.insert(
                0,
                MobilityOption::Ipv4HomeAddress {
                    prefix_len: 32,
                    p: false,
                    // Keep the address granted before, if any.
                    addr: self
                        .registered
                        .as_ref()
                        .and_then(|r| r.ipv4_hoa)
                        .unwrap_or(Ipv4Addr::UNSPECIFIED),
                },
            ),
        }
        if self.cfg.router && self.cfg.explicit_prefixes {
            // After the IPv4 Home Address option of the router itself, if any: the home
            // agent answers that one first.
            for p in &self.cfg.mobile_network {
                options.push(match *p {
                    NetPrefix::V6(prefix, len) => {
                        MobilityOption::MobileNetworkPrefix { len, prefix }
                    }
                    NetPrefix::V4(addr, prefix_len) => MobilityOption::Ipv4HomeAddress {
                        prefix_len,
                        p: true,
                        addr,
                    },
                });
            }
        }
        MhRepr {
            msg: MhMessage::Bu {
                seq,
                flags,
                lifetime: self.cfg.lifetime,
            },
            options,
        }
    }

    fn start(&mut self, now: Instant, coa: Coa) {
        self.seq = self.seq.wrapping_add(1);
        let first = self.registered.is_none();
        let timeout = if first {
            self.cfg.first_timeout
        } else {
            self.cfg.initial_timeout
        };
        let force_udp = self.cfg.force_udp && !self.f_refused;
        self.pending = Some(Pending {
            seq: self.seq,
            coa,
            sent: now,
            timeout,
            attempts: 1,
            force_udp,
        });
        self.outbox = Some(BuOut {
            coa,
            bu: self.bu_for(self.seq, coa, force_udp),
        });
    }

    /// The BU to send now, if any. Call after every `handle_*` call.
    #[must_use = "a BU not sent is lost"]
    pub fn poll_transmit(&mut self) -> Option<BuOut> {
        self.outbox.take()
    }

    /// When the machine next wants [`Self::handle_timeout`]. Ask again after every
    /// `handle_*` call.
    #[must_use = "the deadline must be armed on a timer"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.pending {
            Some(p) => Some(p.sent + p.timeout),
            None => self.refresh_at,
        }
    }

    /// Retransmissions (doubling up to the cap; after `v6_attempts` unanswered BUs from an
    /// IPv6 care-of address, fall back to IPv4) and refreshes.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(p) = self.pending.clone() {
            if now < p.sent + p.timeout {
                return;
            }
            if matches!(p.coa, Coa::V6(_))
                && !self.home
                && p.attempts >= self.cfg.v6_attempts
                && self.v4.is_some()
            {
                self.v6_failed = true;
                if let Some(c) = self.choose() {
                    self.registered = None;
                    self.start(now, c);
                }
                return;
            }
            let timeout = (p.timeout * 2).min(self.cfg.max_timeout);
            self.pending = Some(Pending {
                sent: now,
                timeout,
                attempts: p.attempts + 1,
                ..p
            });
            self.outbox = Some(BuOut {
                coa: p.coa,
                bu: self.bu_for(p.seq, p.coa, p.force_udp),
            });
            return;
        }
        if self.refresh_at.is_some_and(|t| now >= t) {
            if let Some(c) = self.registered.as_ref().map(|r| r.coa) {
                self.start(now, c);
            }
        }
    }

    /// The care-of address of the BU outstanding, if any.
    pub fn outstanding(&self) -> Option<Coa> {
        self.pending.as_ref().map(|p| p.coa)
    }

    /// Sends the outstanding BU again now, without counting an attempt or growing its
    /// timeout: the SA protecting it has just been created (RFC 4301 section 5.1: the
    /// packet that waited for an SA goes once the SA exists), so the BU the SPD dropped
    /// need not wait for its retransmission timer. Nothing when no BU is outstanding.
    pub fn send_now(&mut self, now: Instant) {
        if let Some(p) = self.pending.clone() {
            self.outbox = Some(BuOut {
                coa: p.coa,
                bu: self.bu_for(p.seq, p.coa, p.force_udp),
            });
            self.pending = Some(Pending { sent: now, ..p });
        }
    }

    /// Processes a Binding Acknowledgement (section 4.4). Returns false when it is ignored
    /// (no BU outstanding, sequence number not ours).
    pub fn handle_ba(&mut self, now: Instant, ba: &MhRepr) -> bool {
        let MhMessage::Ba {
            status,
            flags,
            seq: s,
            lifetime,
        } = ba.msg
        else {
            return false;
        };
        let Some(p) = self.pending.clone() else {
            return false;
        };
        if status == crate::dsmip::binding_cache::status::SEQ_OUT_OF_WINDOW {
            // The HA remembers a later number: go on from it (RFC 6275 section 11.7.3).
            if !seq::after(p.seq, s) {
                self.seq = s;
                self.start(now, p.coa);
            }
            return true;
        }
        if s != p.seq {
            return false;
        }
        if status == crate::dsmip::binding_cache::status::FORCE_UDP_REFUSED {
            self.f_refused = true;
            self.start(now, p.coa);
            return true;
        }
        if status >= 128 {
            // Refused: keep trying with backoff (another status may follow a fix on the HA;
            // RFC 3963 section 5.4 lets a router try another home agent, m6t has one).
            self.refused = Some(status);
            return true;
        }
        self.refused = None;
        self.pending = None;
        let nat = ba.options.iter().find_map(|o| match o {
            MobilityOption::NatDetection { f, refresh } => Some((*f, *refresh)),
            _ => None,
        });
        let mode = match p.coa {
            Coa::V6(_) => TunnelMode::Ipv6,
            Coa::V4(_) => {
                if flags & ba_flags::T != 0 {
                    TunnelMode::Tlv
                } else if nat.is_some_and(|(f, _)| f) || p.force_udp || self.natted(&nat) {
                    TunnelMode::Udp
                } else {
                    TunnelMode::Ipv4
                }
            }
        };
        // The first acknowledgement answers the node's own IPv4 home address option, which
        // comes first; a router's prefixes follow it.
        let own_v4 = !matches!(self.cfg.ipv4_hoa, Ipv4HoaRequest::None);
        let (ipv4_hoa, ipv4_status) = match ba
            .options
            .iter()
            .find_map(|o| match o {
                MobilityOption::Ipv4AddressAck { status, addr, .. } => Some((*status, *addr)),
                _ => None,
            })
            .filter(|_| own_v4)
        {
            Some((st, a)) if st < 128 => (Some(a), Some(st)),
            Some((st, _)) => (None, Some(st)),
            None => (None, None),
        };
        let granted = Duration::from_secs(u64::from(lifetime) * 4);
        // Refresh before the lifetime ends, and at the NAT keep-alive period in UDP mode
        // (the BU refresh is the NAT keep-alive, section 4.3).
        let mut refresh = granted.mul_f64(0.8);
        if matches!(mode, TunnelMode::Udp | TunnelMode::Tlv) {
            let ka = match nat {
                Some((_, r)) if r != 0 && r != u32::MAX => Duration::from_secs(u64::from(r)),
                _ => self.cfg.nat_keepalive,
            };
            refresh = refresh.min(ka);
        }
        self.refresh_at = (lifetime > 0).then_some(now + refresh);
        self.registered = (lifetime > 0).then_some(Registration {
            coa: p.coa,
            mode,
            lifetime: granted,
            ipv4_hoa,
            ipv4_status,
            router: flags & ba_flags::R != 0,
            key_management: flags & ba_flags::K != 0,
        });
        true
    }

    /// A NAT is in the path when the HA sent NAT Detection in answer to a BU whose outer
    /// source it saw differ from the care-of address. The option alone does not say which:
    /// the HA sends it for every UDP BU, so UDP is used whenever it is present and the HA
    /// did not say "no keep-alive needed" (refresh 0xffffffff).
    fn natted(&self, nat: &Option<(bool, u32)>) -> bool {
        matches!(nat, Some((_, r)) if *r != u32::MAX)
    }
}
