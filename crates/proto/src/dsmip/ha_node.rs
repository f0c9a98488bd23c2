//! The home agent as a whole, sans-IO: the protocol module ([`HomeAgent`]) on top of the
//! tunnel-interface module ([`crate::dsmip::tif`]). The Linux driver hands it what its
//! sockets and TUN read, with the time; it answers with a verdict per data packet (no
//! allocation on that path), queues signalling to send, and reports bindings coming and
//! going so the driver can route the home addresses into its TUN.

use crate::dsmip::ha::{status, Arrival, HaConfig, HomeAgent, Snapshot, Tunnel};
use crate::dsmip::tif::{self, Encap, Outer, TifDrop, Up, DSMIP_PORT};
use crate::reasons;
use crate::stats::Counters;
use m6t_wire::mh::MhMessage;
use m6t_wire::mip6::{self, HomeIn, Signal};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Instant;

reasons! {
    /// What the home agent counts: signalling handled, and every drop by its reason.
    pub enum HaCounter {
        /// Binding Updates accepted.
        BuAccepted => "bu_accepted",
        /// Binding Updates refused (a BA with status >= 128 answered them).
        BuRefused => "bu_refused",
        /// Binding Updates refused because they were not protected by ESP.
        BuUnprotected => "bu_unprotected",
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
    }
}

/// A signalling packet to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// As the payload of a UDP datagram from port 4191.
    Udp {
        /// Destination (the NAT's address and port when there is one).
        to: SocketAddrV4,
        /// The IPv6 packet.
        data: Vec<u8>,
    },
    /// A whole IPv6 packet, extension headers included, to send as it is.
    Ipv6 {
        /// Destination.
        to: Ipv6Addr,
        /// The packet.
        data: Vec<u8>,
    },
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
}

/// What to do with a received data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Write this inner packet to the TUN.
    ToTun(&'a [u8]),
    /// Signalling, handled (answers are queued).
    Handled,
    /// Dropped, counted under this reason.
    Drop(HaCounter),
}

/// The home agent node.
#[derive(Debug)]
pub struct HaNode {
    ha: HomeAgent,
    addr6: Ipv6Addr,
    counters: Counters<HaCounter>,
    out: VecDeque<Transmit>,
    events: VecDeque<HaEvent>,
    /// What the driver was told is bound: IPv4 home address per IPv6 home address.
    installed: HashMap<Ipv6Addr, (Option<(Ipv4Addr, u8)>, Tunnel)>,
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

impl HaNode {
    /// A home agent answering at `addr6` (its IPv6 address, the destination of BUs).
    pub fn new(cfg: HaConfig, addr6: Ipv6Addr) -> Self {
        Self::with(HomeAgent::new(cfg), addr6)
    }

    /// A home agent whose binding cache is restored from `snap`; a `Bound` event is queued
    /// for every binding so the driver installs their routes again.
    pub fn restore(cfg: HaConfig, addr6: Ipv6Addr, snap: &Snapshot, now: Instant) -> Self {
        let mut n = Self::with(HomeAgent::restore(cfg, snap, now), addr6);
        let hoas: Vec<Ipv6Addr> = snap.bindings.iter().map(|b| b.hoa).collect();
        for h in hoas {
            n.reconcile(h);
        }
        n
    }

    fn with(ha: HomeAgent, addr6: Ipv6Addr) -> Self {
        HaNode {
            ha,
            addr6,
            counters: Counters::default(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            installed: HashMap::new(),
        }
    }

    /// The protocol module (binding cache).
    pub fn home_agent(&self) -> &HomeAgent {
        &self.ha
    }

    /// The binding cache as saved across restarts.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        self.ha.snapshot(now)
    }

    /// Counters.
    pub fn counters(&self) -> &Counters<HaCounter> {
        &self.counters
    }

    /// Counts a drop the driver decided (e.g. a packet its socket could not parse).
    pub fn count(&mut self, c: HaCounter) {
        self.counters.bump(c);
    }

    fn reconcile(&mut self, hoa: Ipv6Addr) {
        let now_bound = self.ha.binding(hoa).map(|b| (b.ipv4, b.tunnel));
        let before = self.installed.get(&hoa).copied();
        if now_bound == before {
            return;
        }
        if let Some((ipv4, _)) = before {
            // An IPv4 home address that stays is not withdrawn and re-added.
            let keep_v4 = now_bound.is_some_and(|(v, _)| v == ipv4);
            if now_bound.is_none() || !keep_v4 {
                self.events.push_back(HaEvent::Unbound {
                    hoa,
                    ipv4: if now_bound.is_none() || !keep_v4 {
                        ipv4
                    } else {
                        None
                    },
                });
            }
        }
        match now_bound {
            Some((ipv4, tunnel)) => {
                self.installed.insert(hoa, (ipv4, tunnel));
                self.events.push_back(HaEvent::Bound { hoa, ipv4, tunnel });
            }
            None => {
                self.installed.remove(&hoa);
            }
        }
    }

    fn signal(&mut self, now: Instant, outer: Outer, s: Signal) {
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
        // No ESP yet: every BU is unprotected (RFC 5555 section 5 wants ESP; the home
        // agent refuses unless its configuration explicitly accepts them).
        let ba = self.ha.handle_bu(now, hoa, arrival, false, &s.mh);
        let status = ba.as_ref().and_then(|b| match b.ba.msg {
            MhMessage::Ba { status, .. } => Some(status),
            _ => None,
        });
        self.counters.bump(match status {
            Some(status::PROHIBITED) => HaCounter::BuUnprotected,
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
        let t = match ba.via {
            Tunnel::Udp { peer } | Tunnel::Tlv { peer } => Transmit::Udp {
                to: peer,
                data: buf,
            },
            Tunnel::Ipv4 { coa } => Transmit::Udp {
                to: SocketAddrV4::new(coa, DSMIP_PORT),
                data: buf,
            },
            Tunnel::Ipv6 { coa } => Transmit::Ipv6 { to: coa, data: buf },
        };
        self.counters.bump(HaCounter::BaSent);
        self.out.push_back(t);
    }

    fn data<'a>(&mut self, outer: Outer, inner: &'a [u8], src: IpAddr) -> Verdict<'a> {
        let tunnel = match src {
            IpAddr::V6(s) => self.ha.tunnel_for_v6(s),
            IpAddr::V4(s) => self
                .ha
                .tunnel_for_v4(s)
                .filter(|(h, _)| self.ha.binding(*h).is_some())
                .map(|(_, t)| t),
        };
        match tunnel {
            Some(t) if came_through(t, outer) => {
                self.counters.bump(HaCounter::ToHome);
                Verdict::ToTun(inner)
            }
            _ => {
                self.counters.bump(HaCounter::DropNotBound);
                Verdict::Drop(HaCounter::DropNotBound)
            }
        }
    }

    fn up<'a>(&mut self, now: Instant, up: Up<'a>) -> Verdict<'a> {
        match up {
            Up::Signal { outer, signal, .. } => {
                self.signal(now, outer, signal);
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

    /// A UDP payload received on port 4191 from `from`.
    pub fn handle_udp<'a>(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        payload: &'a [u8],
    ) -> Verdict<'a> {
        self.up(now, tif::from_udp(from, payload))
    }

    /// The payload of an IP-in-IP packet (IPv4 protocol 4/41, IPv6 Next Header 4/41).
    pub fn handle_ip_in_ip<'a>(
        &mut self,
        now: Instant,
        src: IpAddr,
        inner: &'a [u8],
    ) -> Verdict<'a> {
        self.up(now, tif::from_ip_in_ip(src, inner))
    }

    /// A whole IPv6 signalling packet captured with its extension headers.
    pub fn handle_captured(&mut self, now: Instant, pkt: &[u8]) {
        match tif::from_captured(pkt) {
            Up::Signal { outer, signal, .. } => self.signal(now, outer, signal),
            Up::Drop(d) => self.counters.bump(tif_drop(d)),
            Up::Data { .. } => {}
        }
    }

    /// How to send a packet read from the TUN (from the home network to a home address).
    pub fn route_from_home(&mut self, pkt: &[u8]) -> Result<Encap, HaCounter> {
        let t = match tif::addresses(pkt) {
            Some((_, IpAddr::V6(d))) => self.ha.tunnel_for_v6(d),
            Some((_, IpAddr::V4(d))) => self.ha.tunnel_for_v4(d).map(|(_, t)| t),
            None => {
                self.counters.bump(HaCounter::DropBadInner);
                return Err(HaCounter::DropBadInner);
            }
        };
        match t {
            Some(t) => {
                self.counters.bump(HaCounter::ToMn);
                Ok(encap_for(t, pkt))
            }
            None => {
                self.counters.bump(HaCounter::DropNoBinding);
                Err(HaCounter::DropNoBinding)
            }
        }
    }

    /// The next signalling packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next binding change.
    pub fn poll_event(&mut self) -> Option<HaEvent> {
        self.events.pop_front()
    }

    /// When the next binding ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.ha.poll_timeout()
    }

    /// Ends the bindings whose lifetime is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        for h in self.ha.handle_timeout(now) {
            self.reconcile(h);
        }
    }
}
