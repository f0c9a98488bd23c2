//! The home agent node, sans-IO: the protocol module ([`BindingCache`], RFC 6275 section
//! 10.3 and RFC 5555 section 4.2) joined to the tunnel-interface module
//! ([`crate::dsmip::tif`], RFC 5555 section 4.1 and seed 001 section 3). The Linux driver
//! hands it what its sockets and TUN read, with the time; it answers with a [`Verdict`] per
//! received packet and an [`Outbound`] per packet from the TUN (no allocation on those
//! paths), queues signalling to send ([`Transmit`]), and reports bindings coming and going
//! ([`HaEvent`]) so the driver can route the home addresses into its TUN.

use crate::dsmip::binding_cache::{status, Arrival, BindingCache, HaConfig, Snapshot, Tunnel};
use crate::dsmip::protect::{self, Through};
use crate::dsmip::tif::{self, Encap, Outer, TifDrop, Up, DSMIP_PORT, ESP_UDP_PORT};
use crate::dsmip::{NetPrefix, Outbound, Transmit, Verdict};
use crate::reasons;
use crate::stats::Counters;
use m6t_ipsec::{Inbound, Ipsec, Outbound as IpsecOut};
use m6t_wire::mh::MhMessage;
use m6t_wire::mip6::{self, HomeIn, Signal};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Instant;

reasons! {
    /// What the home agent counts: signalling handled, and every drop by its reason.
    pub enum HaCounter {
        /// Binding Updates accepted.
        BuAccepted => "bu_accepted",
        /// Binding Updates refused (a BA with status >= 128 answered them).
        BuRefused => "bu_refused",
        /// Binding Updates for a new home address refused with status 130 because the
        /// binding cache held `max_bindings` (not counted in `bu_refused`).
        BuCacheFull => "bu_cache_full",
        /// Binding Updates without ESP: refused with status 129 without IPsec configured,
        /// silently discarded with it (RFC 6275 section 9.5.1, RFC 4877 section 4.1).
        BuUnprotected => "bu_unprotected",
        /// Dropped by IPsec (the reason is in IPsec's own counters).
        DropIpsec => "drop_ipsec",
        /// ESP arrived while IPsec is not configured.
        DropEspWithoutIpsec => "drop_esp_without_ipsec",
        /// IKE on UDP port 4500 (the non-ESP marker, RFC 3948 section 2.2, or a NAT
        /// keep-alive) while IKE is not configured.
        DropIkeWithoutIke => "drop_ike_without_ike",
        /// Authenticated ESP keep-alives (dummy packets, RFC 4303 section 2.6) taken.
        EspKeepalives => "esp_keepalives",
        /// The kernel's own link-local and multicast packets on the TUN (router
        /// solicitations, MLD reports): not for any tunnel, not a fault.
        TunLinkLocal => "tun_link_local",
        /// Binding Acknowledgements sent.
        BaSent => "ba_sent",
        /// Data packets from mobile nodes written to the TUN.
        ToHome => "to_home",
        /// Data packets from the home network sent into a tunnel.
        ToMn => "to_mn",
        /// UDP payload neither an IP packet nor a TLV header.
        DropBadEncapsulation => "drop_bad_encapsulation",
        /// Malformed inner packet.
        DropBadInner => "drop_bad_inner",
        /// Signalling that failed a check (extension headers, MH length or checksum).
        DropBadSignal => "drop_bad_signal",
        /// Captured packets with extension headers that are not signalling (left to the
        /// kernel; not a drop).
        NotSignal => "captured_not_signal",
        /// Signalling other than a BU, or not addressed to this home agent.
        DropUnexpectedSignal => "drop_unexpected_signal",
        /// Data whose inner source is not a home address bound to the tunnel it came from.
        DropNotBound => "drop_not_bound",
        /// A packet from the home network to an address without a binding.
        DropNoBinding => "drop_no_binding",
        /// Data from where a mobile router's tunnel ends whose source is neither a bound
        /// home address nor inside that router's mobile network prefixes (RFC 3963 section
        /// 9: the home agent's ingress filtering of the mobile network).
        DropIngressFilter => "drop_ingress_filter",
    }
}

/// A binding appearing or going, for the driver's routes and proxy entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaEvent {
    /// `hoa` (and its IPv4 home address or prefix, if any) is now bound.
    Bound {
        /// IPv6 home address.
        hoa: Ipv6Addr,
        /// IPv4 home address or prefix.
        ipv4: Option<(Ipv4Addr, u8)>,
        /// The tunnel toward the mobile node.
        tunnel: Tunnel,
    },
    /// `hoa` (and its IPv4 home address) is no longer bound.
    Unbound {
        /// IPv6 home address.
        hoa: Ipv6Addr,
        /// IPv4 home address or prefix it had.
        ipv4: Option<(Ipv4Addr, u8)>,
    },
    /// A mobile network prefix of router `hoa` is now forwarded into its tunnel (RFC 3963
    /// section 6.5): the driver routes it into the TUN.
    Routed {
        /// The router's home address.
        hoa: Ipv6Addr,
        /// The prefix.
        prefix: NetPrefix,
    },
    /// A mobile network prefix is no longer forwarded (deregistration, expiry, or a BU
    /// without it, RFC 3963 sections 6.2 and 6.7).
    Unrouted {
        /// The router's home address.
        hoa: Ipv6Addr,
        /// The prefix.
        prefix: NetPrefix,
    },
}

/// What the driver was told about one binding.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Installed {
    ipv4: Option<(Ipv4Addr, u8)>,
    tunnel: Tunnel,
    router: bool,
    mnp: Vec<NetPrefix>,
}

/// The outer address a tunnel's packets come from (what the ingress counter keys on).
fn outer_ip(t: Tunnel) -> IpAddr {
    match t {
        Tunnel::Ipv6 { coa } => coa.into(),
        Tunnel::Ipv4 { coa } => coa.into(),
        Tunnel::Udp { peer } | Tunnel::Tlv { peer } => (*peer.ip()).into(),
    }
}

fn outer_of(o: Outer) -> IpAddr {
    match o {
        Outer::Ipv6(a) => a.into(),
        Outer::Ipv4(a) => a.into(),
        Outer::Udp(s) => (*s.ip()).into(),
    }
}

/// The home agent node: the binding cache joined to the tunnel-interface module. See the
/// module documentation.
#[derive(Debug)]
pub struct HomeAgent {
    bc: BindingCache,
    addr6: Ipv6Addr,
    counters: Counters<HaCounter>,
    out: VecDeque<Transmit>,
    events: VecDeque<HaEvent>,
    /// What the driver was told is bound, per IPv6 home address.
    installed: BTreeMap<Ipv6Addr, Installed>,
    /// Outer addresses of mobile routers' tunnels (with how many routers use each): data
    /// from there failing the source check is counted as ingress filtering.
    router_outer: BTreeMap<IpAddr, u32>,
    /// Home addresses whose binding ended, reused across `handle_timeout` calls.
    ended: Vec<Ipv6Addr>,
    /// The IPsec bump in the stack, when configured.
    ipsec: Option<Ipsec>,
    /// IPsec's output, reused.
    scratch: Vec<u8>,
    /// The last bare ESP refused for its SPI, for [`Self::take_unknown_spi`].
    unknown_spi: Option<(Outer, u32)>,
    /// Where each mobile node's UDP-encapsulated ESP comes from (the NAT's mapping for port
    /// 4500, which is not its mapping for 4191): learned from authenticated packets only.
    esp_peer: BTreeMap<Ipv6Addr, SocketAddrV4>,
    /// Changes whenever [`HomeAgent::known_senders`] may have changed.
    senders_version: u64,
}

fn tif_drop(d: TifDrop) -> HaCounter {
    match d {
        TifDrop::BadEncapsulation => HaCounter::DropBadEncapsulation,
        TifDrop::BadInner => HaCounter::DropBadInner,
        TifDrop::BadSignal => HaCounter::DropBadSignal,
        TifDrop::NotSignal => HaCounter::NotSignal,
    }
}

fn came_through(t: Tunnel, outer: Outer) -> bool {
    match (t, outer) {
        (Tunnel::Ipv6 { coa }, Outer::Ipv6(s)) => coa == s,
        (Tunnel::Ipv4 { coa }, Outer::Ipv4(s)) => coa == s,
        (Tunnel::Udp { peer } | Tunnel::Tlv { peer }, Outer::Udp(s)) => peer == s,
        // A mobile node registered without NAT may still send in UDP (and the reverse when
        // its NAT vanished); what matters is the outer address it registered.
        (Tunnel::Ipv4 { coa }, Outer::Udp(s)) => coa == *s.ip(),
        (Tunnel::Udp { peer } | Tunnel::Tlv { peer }, Outer::Ipv4(s)) => *peer.ip() == s,
        _ => false,
    }
}

/// Encapsulation toward a binding's tunnel.
pub fn encap_for(t: Tunnel, inner: &[u8]) -> Encap {
    let proto = tif::proto_of(inner);
    match t {
        Tunnel::Ipv6 { coa } => Encap::Ipv6 { to: coa, proto },
        Tunnel::Ipv4 { coa } => Encap::Ipv4 { to: coa, proto },
        Tunnel::Udp { peer } => Encap::Udp {
            to: peer,
            tlv: false,
        },
        Tunnel::Tlv { peer } => Encap::Udp {
            to: peer,
            tlv: true,
        },
    }
}

impl HomeAgent {
    /// A home agent answering at `addr6` (its IPv6 address, the destination of BUs).
    pub fn new(cfg: HaConfig, addr6: Ipv6Addr) -> Self {
        Self::with(BindingCache::new(cfg), addr6)
    }

    /// A home agent whose binding cache is restored from `snap`; a `Bound` event is queued
    /// for every binding so the driver installs their routes again.
    pub fn restore(cfg: HaConfig, addr6: Ipv6Addr, snap: &Snapshot, now: Instant) -> Self {
        let mut n = Self::with(BindingCache::restore(cfg, snap, now), addr6);
        let hoas: Vec<Ipv6Addr> = snap.bindings.iter().map(|b| b.hoa).collect();
        for h in hoas {
            n.reconcile(h);
        }
        n
    }

    fn with(bc: BindingCache, addr6: Ipv6Addr) -> Self {
        HomeAgent {
            bc,
            addr6,
            counters: Counters::default(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            installed: BTreeMap::new(),
            router_outer: BTreeMap::new(),
            ended: Vec::new(),
            ipsec: None,
            scratch: Vec::new(),
            unknown_spi: None,
            esp_peer: BTreeMap::new(),
            senders_version: 0,
        }
    }

    /// The bytes of the last [`Outbound::Protected`]: the ESP packet to send.
    pub fn protected(&self) -> &[u8] {
        &self.scratch
    }

    /// Puts IPsec between the tunnel-interface module and the binding cache (seed 001
    /// figure 2). From then on a BU must arrive protected by ESP through an SA whose policy
    /// names its home address, else it is discarded silently and counted (RFC 4877 section
    /// 4.1), unless the configuration accepts unprotected BUs (labs only).
    pub fn with_ipsec(mut self, ipsec: Ipsec) -> Self {
        self.ipsec = Some(ipsec);
        self
    }

    /// The IPsec SPD and SAD, when configured (for status).
    pub fn ipsec(&self) -> Option<&Ipsec> {
        self.ipsec.as_ref()
    }

    /// The IPsec SPD and SAD, for the driver's sequence-number reservations
    /// ([`Ipsec::wants_reservation`]).
    pub fn ipsec_mut(&mut self) -> Option<&mut Ipsec> {
        self.ipsec.as_mut()
    }

    /// The protocol module: the binding cache.
    pub fn binding_cache(&self) -> &BindingCache {
        &self.bc
    }

    /// The binding cache as saved across restarts.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        self.bc.snapshot(now)
    }

    /// Counters.
    pub fn counters(&self) -> &Counters<HaCounter> {
        &self.counters
    }

    /// A datagram for IKE (port 4500 with the non-ESP marker, or a NAT keep-alive) while
    /// the driver runs no IKE: dropped and counted.
    pub fn handle_ike_without_ike(&mut self) {
        self.counters.bump(HaCounter::DropIkeWithoutIke);
    }

    /// Counts a drop the driver decided (e.g. a packet its socket could not parse).
    pub fn count(&mut self, c: HaCounter) {
        self.counters.bump(c);
    }

    fn reconcile(&mut self, hoa: Ipv6Addr) {
        let now_bound = self.bc.binding(hoa).map(|b| Installed {
            ipv4: b.ipv4,
            tunnel: b.tunnel,
            router: b.router,
            mnp: b.mnp.clone(),
        });
        let before = self.installed.get(&hoa).cloned();
        if now_bound == before {
            return;
        }
        let same_tunnel =
            matches!((&now_bound, &before), (Some(n), Some(b)) if n.tunnel == b.tunnel);
        if !same_tunnel {
            // A new tunnel or none: the NAT mapping for ESP is learned again from the node.
            self.esp_peer.remove(&hoa);
            self.senders_version += 1;
        }
        if let Some(b) = before.as_ref().filter(|b| b.router) {
            let k = outer_ip(b.tunnel);
            if let Some(n) = self.router_outer.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.router_outer.remove(&k);
                }
            }
        }
        if let Some(n) = now_bound.as_ref().filter(|n| n.router) {
            *self.router_outer.entry(outer_ip(n.tunnel)).or_default() += 1;
        }
        let old_mnp = before.as_ref().map(|b| b.mnp.clone()).unwrap_or_default();
        let new_mnp = now_bound
            .as_ref()
            .map(|n| n.mnp.clone())
            .unwrap_or_default();
        for p in old_mnp.iter().filter(|p| !new_mnp.contains(p)) {
            self.events.push_back(HaEvent::Unrouted { hoa, prefix: *p });
        }
        let old_core = before.as_ref().map(|b| (b.ipv4, b.tunnel));
        let new_core = now_bound.as_ref().map(|n| (n.ipv4, n.tunnel));
        if old_core != new_core {
            if let Some((ipv4, _)) = old_core {
                // An IPv4 home address that stays is not withdrawn and re-added.
                let keep_v4 = new_core.is_some_and(|(v, _)| v == ipv4);
                if new_core.is_none() || !keep_v4 {
                    self.events.push_back(HaEvent::Unbound { hoa, ipv4 });
                }
            }
            if let Some((ipv4, tunnel)) = new_core {
                self.events.push_back(HaEvent::Bound { hoa, ipv4, tunnel });
            }
        }
        for p in new_mnp.iter().filter(|p| !old_mnp.contains(p)) {
            self.events.push_back(HaEvent::Routed { hoa, prefix: *p });
        }
        self.senders_version += 1;
        match now_bound {
            Some(n) => {
                self.installed.insert(hoa, n);
            }
            None => {
                self.installed.remove(&hoa);
            }
        }
    }

    fn signal(&mut self, now: Instant, outer: Outer, s: Signal, protected: bool) {
        if !matches!(s.mh.msg, MhMessage::Bu { .. }) || s.dst != self.addr6 {
            self.counters.bump(HaCounter::DropUnexpectedSignal);
            return;
        }
        let (hoa, arrival) = match (outer, s.home) {
            (Outer::Udp(src), HomeIn::Source) => (s.src, Arrival::Udp { src }),
            (Outer::Ipv6(src), HomeIn::HomeAddressOption(h)) => (h, Arrival::Ipv6 { src }),
            // From the home address itself over IPv6: the mobile node is at home.
            (Outer::Ipv6(src), HomeIn::Source) => (src, Arrival::Ipv6 { src }),
            _ => {
                self.counters.bump(HaCounter::DropUnexpectedSignal);
                return;
            }
        };
        // With IPsec, an unprotected BU gets no answer at all (RFC 4877 section 4.1: it
        // MUST be discarded); IPsec itself already dropped those its policies select.
        if self.ipsec.is_some() && !protected && !self.bc.config().accept_unprotected {
            self.counters.bump(HaCounter::BuUnprotected);
            return;
        }
        let ba = self.bc.handle_bu(now, hoa, arrival, protected, &s.mh);
        let status = ba.as_ref().and_then(|b| match b.ba.msg {
            MhMessage::Ba { status, .. } => Some(status),
            _ => None,
        });
        self.counters.bump(match status {
            Some(status::PROHIBITED) => HaCounter::BuUnprotected,
            Some(status::INSUFFICIENT_RESOURCES) => HaCounter::BuCacheFull,
            Some(s) if s >= 128 => HaCounter::BuRefused,
            _ => HaCounter::BuAccepted,
        });
        self.reconcile(hoa);
        let Some(ba) = ba else { return };
        // To a care-of address the home address travels in a type 2 Routing Header (RFC
        // 6275 section 6.4); BAs are in vanilla UDP also when TLV was negotiated.
        let (dst, home) = match ba.via {
            Tunnel::Ipv6 { coa } if coa != ba.to => (coa, HomeIn::RoutingHeader(ba.to)),
            _ => (ba.to, HomeIn::Source),
        };
        let mut buf = vec![0u8; 40 + 24 + ba.ba.emit_len()];
        let Ok(n) = mip6::emit(self.addr6, dst, home, &ba.ba, &mut buf) else {
            return;
        };
        buf.truncate(n);
        let buf = match protect::outbound_signal(self.ipsec.as_mut(), buf, &mut self.scratch) {
            Ok(b) => b,
            Err(_) => {
                self.counters.bump(HaCounter::DropIpsec);
                return;
            }
        };
        let t = match ba.via {
            Tunnel::Udp { peer } | Tunnel::Tlv { peer } => Transmit::Udp {
                from: None,
                to: peer,
                data: buf,
            },
            Tunnel::Ipv4 { coa } => Transmit::Udp {
                from: None,
                to: SocketAddrV4::new(coa, DSMIP_PORT),
                data: buf,
            },
            Tunnel::Ipv6 { coa } => Transmit::Ipv6 {
                from: None,
                to: coa,
                data: buf,
            },
        };
        self.counters.bump(HaCounter::BaSent);
        self.out.push_back(t);
    }

    fn data<'a>(&mut self, outer: Outer, inner: &'a [u8], src: IpAddr) -> Verdict<'a, HaCounter> {
        // A home address, or (RFC 3963 section 9) an address inside the mobile network
        // prefixes of the router whose tunnel it came through.
        let tunnel = match src {
            IpAddr::V6(s) => self.bc.route_v6(s).map(|(_, t)| t),
            IpAddr::V4(s) => self
                .bc
                .tunnel_for_v4(s)
                .filter(|(h, _)| self.bc.binding(*h).is_some())
                .map(|(_, t)| t),
        };
        match tunnel {
            Some(t) if came_through(t, outer) => {
                self.counters.bump(HaCounter::ToHome);
                Verdict::ToTun(inner)
            }
            _ if self.router_outer.contains_key(&outer_of(outer)) => {
                self.counters.bump(HaCounter::DropIngressFilter);
                Verdict::Drop(HaCounter::DropIngressFilter)
            }
            _ => {
                self.counters.bump(HaCounter::DropNotBound);
                Verdict::Drop(HaCounter::DropNotBound)
            }
        }
    }

    fn up<'a>(&mut self, now: Instant, through: Through<'a>) -> Verdict<'a, HaCounter> {
        let (up, protected) = match through {
            Through::Up { up, protected } => (up, protected),
            Through::Dropped(_) => {
                self.counters.bump(HaCounter::DropIpsec);
                return Verdict::Drop(HaCounter::DropIpsec);
            }
        };
        match up {
            Up::Signal { outer, signal, .. } => {
                self.signal(now, outer, signal, protected);
                Verdict::Handled
            }
            Up::Data {
                outer, inner, src, ..
            } => self.data(outer, inner, src),
            Up::Drop(d) => {
                let c = tif_drop(d);
                self.counters.bump(c);
                Verdict::Drop(c)
            }
        }
    }

    /// A UDP payload received on port 4191 from `from`. IPsec, when configured, opens ESP
    /// in place: the buffer is the caller's scratch.
    pub fn handle_udp<'a>(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        payload: &'a mut [u8],
    ) -> Verdict<'a, HaCounter> {
        let t = protect::from_udp(self.ipsec.as_mut(), from, payload);
        self.up(now, t)
    }

    /// The payload of an IP-in-IP packet (IPv4 protocol 4/41, IPv6 Next Header 4/41), in
    /// place as [`Self::handle_udp`].
    pub fn handle_ip_in_ip<'a>(
        &mut self,
        now: Instant,
        src: IpAddr,
        inner: &'a mut [u8],
    ) -> Verdict<'a, HaCounter> {
        let t = protect::from_ip_in_ip(self.ipsec.as_mut(), src, inner);
        self.up(now, t)
    }

    /// A whole IPv6 signalling packet captured with its extension headers (a BU with a Home
    /// Address option, RFC 6275 section 6.1.7 and 11.7.1, and ESP after it, RFC 3776
    /// section 3.1), in place as [`Self::handle_udp`].
    pub fn handle_captured<'a>(
        &mut self,
        now: Instant,
        pkt: &'a mut [u8],
    ) -> Verdict<'a, HaCounter> {
        match protect::inbound_captured(self.ipsec.as_mut(), pkt) {
            // `from_captured` yields signalling or a drop, never data: left to the kernel.
            Through::Up {
                up: Up::Data { .. },
                ..
            } => Verdict::Drop(HaCounter::NotSignal),
            t => self.up(now, t),
        }
    }

    /// How to send a packet read from the TUN (from the home network to a home address,
    /// RFC 5555 section 4.1): the tunnel of its destination's binding. When a policy protects
    /// it, IPsec wraps it in tunnel-mode ESP whose outer destination is the home address, and
    /// the tunnel-interface module sends it to the care-of address instead (seed 001 req. #1:
    /// a move changes no SA): [`Outbound::Protected`], the bytes in [`Self::protected`].
    pub fn handle_from_tun(&mut self, _now: Instant, pkt: &[u8]) -> Outbound<HaCounter> {
        let found = match tif::addresses(pkt) {
            Some((_, d)) if tif::link_local_only(d) => {
                self.counters.bump(HaCounter::TunLinkLocal);
                return Outbound::Drop(HaCounter::TunLinkLocal);
            }
            Some((_, IpAddr::V6(d))) => self.bc.route_v6(d),
            Some((_, IpAddr::V4(d))) => self.bc.tunnel_for_v4(d),
            None => {
                self.counters.bump(HaCounter::DropBadInner);
                return Outbound::Drop(HaCounter::DropBadInner);
            }
        };
        let Some((hoa, t)) = found else {
            self.counters.bump(HaCounter::DropNoBinding);
            return Outbound::Drop(HaCounter::DropNoBinding);
        };
        let Some(ipsec) = self.ipsec.as_mut() else {
            self.counters.bump(HaCounter::ToMn);
            return Outbound::Send(encap_for(t, pkt));
        };
        match ipsec.outbound(pkt, &mut self.scratch) {
            IpsecOut::Bypass => {
                self.counters.bump(HaCounter::ToMn);
                Outbound::Send(encap_for(t, pkt))
            }
            IpsecOut::Tunnel { .. } => {
                self.counters.bump(HaCounter::ToMn);
                Outbound::Protected(match t {
                    Tunnel::Ipv6 { coa } => Encap::EspIp { to: coa.into() },
                    Tunnel::Ipv4 { coa } => Encap::EspIp { to: coa.into() },
                    Tunnel::Udp { peer } | Tunnel::Tlv { peer } => Encap::EspUdp {
                        to: self
                            .esp_peer
                            .get(&hoa)
                            .copied()
                            .unwrap_or(SocketAddrV4::new(*peer.ip(), ESP_UDP_PORT)),
                    },
                })
            }
            // Payload in transport mode is not a DSMIPv6 format (RFC 5555 section 5 tunnels
            // it); the loader refuses such policies, this is the backstop.
            IpsecOut::Transport { .. } | IpsecOut::Drop(_) => {
                self.counters.bump(HaCounter::DropIpsec);
                Outbound::Drop(HaCounter::DropIpsec)
            }
        }
    }

    /// A bare ESP packet (protocol 50 after an IPv4 or IPv6 header, or UDP port 4500, RFC
    /// 3948), opened in place: payload from a mobile node in tunnel mode (RFC 5555 section 5).
    /// It is accepted when IPsec verified it, its policy matched what was inside, a binding
    /// exists for its source, and the SA it came through is that home address's (an IPv4
    /// home address through its IPv6 one, RFC 5555 section 5). The outer address is not
    /// checked (RFC 4877 section 5: the originator is authenticated); from UDP it teaches the
    /// home agent where to send ESP back.
    pub fn handle_esp<'a>(
        &mut self,
        now: Instant,
        outer: Outer,
        esp: &'a mut [u8],
    ) -> Verdict<'a, HaCounter> {
        if let Outer::Ipv6(src) = outer {
            // A BU from the home link (RFC 6275 section 11.5.5) in transport-mode ESP.
            let bu = m6t_wire::mh::MH_TYPE_BU;
            if let Some(mut pkt) =
                protect::signalling_in_esp6(self.ipsec.as_ref(), src, self.addr6, esp, bu)
            {
                let t = protect::inbound_captured(self.ipsec.as_mut(), &mut pkt);
                return match self.up(now, t) {
                    Verdict::Handled => Verdict::Handled,
                    Verdict::Drop(c) => Verdict::Drop(c),
                    Verdict::ToTun(_) => {
                        self.counters.bump(HaCounter::DropUnexpectedSignal);
                        Verdict::Drop(HaCounter::DropUnexpectedSignal)
                    }
                };
            }
        }
        let Some(ipsec) = self.ipsec.as_mut() else {
            self.counters.bump(HaCounter::DropEspWithoutIpsec);
            return Verdict::Drop(HaCounter::DropEspWithoutIpsec);
        };
        let spi = protect::esp_spi(esp);
        let (range, sa) = match ipsec.inbound_esp(esp) {
            Inbound::Tunnel { inner, sa, .. } => (inner, sa),
            Inbound::Dummy { sa } => {
                // A keep-alive proves only the SA: learn the mapping for its home address.
                let hoa = self.hoa_of_sa(sa);
                if let (Some(h), Outer::Udp(from)) = (hoa, outer) {
                    self.learn_esp_peer(h, from);
                }
                self.counters.bump(HaCounter::EspKeepalives);
                return Verdict::Handled;
            }
            r => {
                self.unknown_spi = protect::unknown_spi(&r, outer, spi).or(self.unknown_spi);
                self.counters.bump(HaCounter::DropIpsec);
                return Verdict::Drop(HaCounter::DropIpsec);
            }
        };
        let inner: &'a [u8] = &esp[range];
        let hoa = match tif::addresses(inner) {
            Some((IpAddr::V6(s), _)) => Some(s),
            Some((IpAddr::V4(s), _)) => self.bc.tunnel_for_v4(s).map(|(h, _)| h),
            None => {
                self.counters.bump(HaCounter::DropBadInner);
                return Verdict::Drop(HaCounter::DropBadInner);
            }
        };
        let owned = hoa.filter(|h| {
            self.bc.binding(*h).is_some()
                && self
                    .ipsec
                    .as_ref()
                    .is_some_and(|i| i.sa_selects_remote(sa, IpAddr::V6(*h)))
        });
        let Some(h) = owned else {
            self.counters.bump(HaCounter::DropNotBound);
            return Verdict::Drop(HaCounter::DropNotBound);
        };
        if let Outer::Udp(from) = outer {
            self.learn_esp_peer(h, from);
        }
        self.counters.bump(HaCounter::ToHome);
        Verdict::ToTun(inner)
    }

    /// Where `hoa`'s authenticated ESP came from; the version moves only on a change (this
    /// runs for every packet).
    fn learn_esp_peer(&mut self, hoa: Ipv6Addr, from: SocketAddrV4) {
        if self.esp_peer.insert(hoa, from) != Some(from) {
            self.senders_version += 1;
        }
    }

    /// The UDP senders (IPv4 address and port) whose traffic the home agent serves: each
    /// binding's UDP tunnel (RFC 5555 section 4.1: the NAT's mapping the BU came from) and
    /// where each bound node's authenticated ESP comes from (its mapping for port 4500). A
    /// driver exempts them from a per-source budget that holds everybody else to a
    /// signalling rate; [`Self::senders_version`] says when to read them again.
    pub fn known_senders(&self) -> impl Iterator<Item = SocketAddrV4> + '_ {
        let tunnels = self.installed.values().filter_map(|i| match i.tunnel {
            Tunnel::Udp { peer } | Tunnel::Tlv { peer } => Some(peer),
            Tunnel::Ipv4 { .. } | Tunnel::Ipv6 { .. } => None,
        });
        tunnels.chain(self.esp_peer.values().copied())
    }

    /// A number that changes whenever [`Self::known_senders`] may have changed.
    pub fn senders_version(&self) -> u64 {
        self.senders_version
    }

    /// The bound home address whose policy names inbound SA `sa`.
    fn hoa_of_sa(&self, sa: usize) -> Option<Ipv6Addr> {
        let ipsec = self.ipsec.as_ref()?;
        self.installed
            .keys()
            .copied()
            .find(|h| ipsec.sa_selects_remote(sa, IpAddr::V6(*h)))
    }

    /// The next signalling packet (a Binding Acknowledgement) to send. Call after every
    /// `handle_*` call until it returns `None`.
    #[must_use = "a queued packet is lost unless sent"]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The last bare ESP packet whose SPI no SA has, since the last call: where it came
    /// from and the SPI. The driver's IKE tells a peer it has no IKE SA with (RFC 7296
    /// section 2.21.4), so that a peer we forgot in a restart notices at once.
    pub fn take_unknown_spi(&mut self) -> Option<(Outer, u32)> {
        self.unknown_spi.take()
    }

    /// The next binding change, for the driver's routes and proxy entries. Call after every
    /// `handle_*` call (and after construction by [`Self::restore`]) until it returns `None`.
    #[must_use = "an event not acted on leaves a route missing or stale"]
    pub fn poll_event(&mut self) -> Option<HaEvent> {
        self.events.pop_front()
    }

    /// When the next binding ends: the driver calls [`Self::handle_timeout`] then. Ask again
    /// after every `handle_*` call. O(1).
    #[must_use = "the deadline must be armed on the driver's timer"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bc.poll_timeout()
    }

    /// Ends the bindings whose lifetime is over (queues their `Unbound` events).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut ended = std::mem::take(&mut self.ended);
        self.bc.handle_timeout(now, &mut ended);
        for h in ended.drain(..) {
            self.reconcile(h);
        }
        self.ended = ended;
    }
}
