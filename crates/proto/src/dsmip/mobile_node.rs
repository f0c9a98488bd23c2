//! The mobile node, sans-IO: the protocol module ([`BindingUpdateList`], RFC 6275 section
//! 11.7 and RFC 5555 section 4.4) joined to the tunnel-interface module
//! ([`crate::dsmip::tif`], RFC 5555 section 4.1). The Linux driver reports care-of
//! addresses from movement detection and hands over what its sockets and TUN read; the
//! node answers with a [`Verdict`] per received packet and an [`Outbound`] per packet from
//! the TUN, queues BUs already built as packets ([`Transmit`])
//! (RFC 6275 section 11.7.1: Home Address option from an IPv6 care-of address; RFC 5555
//! section 4.1: from the home address inside UDP/IPv4), and reports registrations.

use crate::dsmip::protect::{self, Through};
use crate::dsmip::tif::{self, Encap, Outer, TifDrop, Up, DSMIP_PORT};
use crate::dsmip::update_list::{BindingUpdateList, Coa, MnConfig, Registration, TunnelMode};
use crate::dsmip::{Outbound, Transmit, Verdict};
use crate::reasons;
use crate::stats::Counters;
use m6t_ipsec::Ipsec;
use m6t_wire::mh::MhMessage;
use m6t_wire::mip6::{self, HomeIn, Signal};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

reasons! {
    /// What the mobile node counts: signalling, data, and every drop by its reason.
    pub enum MnCounter {
        /// Binding Updates sent (retransmissions included).
        BuSent => "bu_sent",
        /// Binding Acknowledgements taken.
        BaReceived => "ba_received",
        /// Data packets from the home agent written to the TUN.
        FromHa => "from_ha",
        /// Data packets from the TUN sent into the tunnel.
        ToHa => "to_ha",
        /// UDP payload neither an IP packet nor a TLV header.
        DropBadEncapsulation => "drop_bad_encapsulation",
        /// Malformed inner packet.
        DropBadInner => "drop_bad_inner",
        /// Signalling that failed a check.
        DropBadSignal => "drop_bad_signal",
        /// Captured packets with extension headers that are not signalling (left to the
        /// kernel; not a drop).
        NotSignal => "captured_not_signal",
        /// Signalling that is not a BA for this mobile node, or a BA no BU waits for.
        DropUnexpectedSignal => "drop_unexpected_signal",
        /// A packet whose outer source is not the home agent.
        DropNotFromHa => "drop_not_from_ha",
        /// Data from the tunnel not addressed to a home address.
        DropNotForUs => "drop_not_for_us",
        /// A packet from the TUN while no registration is in place.
        DropNotRegistered => "drop_not_registered",
        /// A packet from the TUN whose source is not a home address.
        DropWrongSource => "drop_wrong_source",
        /// Dropped by IPsec (the reason is in IPsec's own counters).
        DropIpsec => "drop_ipsec",
        /// A Binding Acknowledgement without ESP while IPsec is configured (RFC 4877
        /// section 4.1: discarded).
        BaUnprotected => "ba_unprotected",
    }
}

/// A change the driver acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MnEvent {
    /// A BA accepted a registration; `took` is from the last transmission of the accepted
    /// BU to its BA.
    Registered {
        /// The registration.
        registration: Registration,
        /// BU sent -> BA received.
        took: Duration,
    },
    /// The registration is gone (no care-of address, or a move under way).
    Unregistered,
}

/// The mobile node: the binding update list joined to the tunnel-interface module. See
/// the module documentation.
#[derive(Debug)]
pub struct MobileNode {
    bul: BindingUpdateList,
    hoa: Ipv6Addr,
    ha6: Ipv6Addr,
    ha4: Ipv4Addr,
    counters: Counters<MnCounter>,
    out: VecDeque<Transmit>,
    events: VecDeque<MnEvent>,
    /// Sequence number and time of the last BU transmission.
    last_bu: Option<(u16, Instant)>,
    registered: Option<Registration>,
    /// The IPsec bump in the stack, when configured.
    ipsec: Option<Ipsec>,
    /// IPsec's output, reused.
    scratch: Vec<u8>,
    /// BUs sent since the last BA was taken: what status reports when registration fails.
    unanswered: u32,
}

fn tif_drop(d: TifDrop) -> MnCounter {
    match d {
        TifDrop::BadEncapsulation => MnCounter::DropBadEncapsulation,
        TifDrop::BadInner => MnCounter::DropBadInner,
        TifDrop::BadSignal => MnCounter::DropBadSignal,
        TifDrop::NotSignal => MnCounter::NotSignal,
    }
}

impl MobileNode {
    /// A mobile node; `seq0` is its first sequence number (random, or from a saved state).
    pub fn new(cfg: MnConfig, seq0: u16) -> Self {
        MobileNode {
            hoa: cfg.hoa,
            ha6: cfg.ha6,
            ha4: cfg.ha4,
            bul: BindingUpdateList::new(cfg, seq0),
            counters: Counters::default(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            last_bu: None,
            registered: None,
            ipsec: None,
            scratch: Vec::new(),
            unanswered: 0,
        }
    }

    /// Puts IPsec between the tunnel-interface module and the binding update list (seed 001
    /// figure 2): BUs go out with ESP when a policy says PROTECT, and BAs must come in
    /// with it.
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

    /// BUs sent since the last Binding Acknowledgement was taken: a registration that
    /// fails shows here (the home agent drops them, e.g. their ESP does not verify, or
    /// cannot be reached).
    pub fn unanswered_bus(&self) -> u32 {
        self.unanswered
    }

    /// The current registration.
    pub fn registration(&self) -> Option<&Registration> {
        self.registered.as_ref()
    }

    /// Counters.
    pub fn counters(&self) -> &Counters<MnCounter> {
        &self.counters
    }

    /// The IPv6 home address.
    pub fn home_address(&self) -> Ipv6Addr {
        self.hoa
    }

    fn pump(&mut self, now: Instant) {
        while let Some(b) = self.bul.poll_transmit() {
            let seq = match b.bu.msg {
                MhMessage::Bu { seq, .. } => seq,
                _ => continue,
            };
            let mut buf = vec![0u8; 40 + 24 + b.bu.emit_len()];
            let t = match b.coa {
                Coa::V6(c) => {
                    let home = if c == self.hoa {
                        HomeIn::Source
                    } else {
                        HomeIn::HomeAddressOption(self.hoa)
                    };
                    mip6::emit(c, self.ha6, home, &b.bu, &mut buf).map(|n| {
                        buf.truncate(n);
                        Transmit::Ipv6 {
                            from: Some(c),
                            to: self.ha6,
                            data: std::mem::take(&mut buf),
                        }
                    })
                }
                Coa::V4(c) => {
                    mip6::emit(self.hoa, self.ha6, HomeIn::Source, &b.bu, &mut buf).map(|n| {
                        buf.truncate(n);
                        Transmit::Udp {
                            from: Some(c),
                            to: SocketAddrV4::new(self.ha4, DSMIP_PORT),
                            data: std::mem::take(&mut buf),
                        }
                    })
                }
            };
            let t = t.map_err(|_| ()).and_then(|t| self.protect(t));
            if let Ok(t) = t {
                self.unanswered = self.unanswered.saturating_add(1);
                self.counters.bump(MnCounter::BuSent);
                self.last_bu = Some((seq, now));
                self.out.push_back(t);
            }
        }
        let now_reg = self.bul.registration().cloned();
        if now_reg != self.registered {
            match &now_reg {
                Some(r) => {
                    let took = self
                        .last_bu
                        .map(|(_, t)| now.saturating_duration_since(t))
                        .unwrap_or_default();
                    self.events.push_back(MnEvent::Registered {
                        registration: r.clone(),
                        took,
                    });
                }
                None => self.events.push_back(MnEvent::Unregistered),
            }
            self.registered = now_reg;
        }
    }

    /// A BU through IPsec (ESP in transport mode after its Home Address option, RFC 3776
    /// section 3.1); a drop is counted.
    fn protect(&mut self, mut t: Transmit) -> Result<Transmit, ()> {
        let (Transmit::Udp { data, .. } | Transmit::Ipv6 { data, .. }) = &mut t;
        let bytes = std::mem::take(data);
        match protect::outbound_signal(self.ipsec.as_mut(), bytes, &mut self.scratch) {
            Ok(bytes) => {
                *data = bytes;
                Ok(t)
            }
            Err(_) => {
                self.counters.bump(MnCounter::DropIpsec);
                Err(())
            }
        }
    }

    /// Reports the care-of addresses movement detection chose (RFC 5555 section 4.4.1).
    pub fn handle_coas(&mut self, now: Instant, v6: Option<Ipv6Addr>, v4: Option<Ipv4Addr>) {
        self.bul.handle_coas(now, v6, v4);
        self.pump(now);
    }

    fn signal(&mut self, now: Instant, s: Signal, protected: bool) -> Verdict<'static, MnCounter> {
        let for_us = match s.home {
            HomeIn::Source => s.dst == self.hoa,
            HomeIn::RoutingHeader(h) => h == self.hoa,
            HomeIn::HomeAddressOption(_) => false,
        };
        if !for_us || s.src != self.ha6 || !matches!(s.mh.msg, MhMessage::Ba { .. }) {
            self.counters.bump(MnCounter::DropUnexpectedSignal);
            return Verdict::Drop(MnCounter::DropUnexpectedSignal);
        }
        if self.ipsec.is_some() && !protected {
            self.counters.bump(MnCounter::BaUnprotected);
            return Verdict::Drop(MnCounter::BaUnprotected);
        }
        // The protocol module checks the sequence number against the BU it waits for.
        if self.bul.handle_ba(now, &s.mh) {
            self.unanswered = 0;
            self.counters.bump(MnCounter::BaReceived);
        } else {
            self.counters.bump(MnCounter::DropUnexpectedSignal);
        }
        self.pump(now);
        Verdict::Handled
    }

    fn data<'a>(&mut self, inner: &'a [u8], dst: IpAddr) -> Verdict<'a, MnCounter> {
        let ours = match dst {
            IpAddr::V6(d) => d == self.hoa,
            IpAddr::V4(d) => self
                .registered
                .as_ref()
                .and_then(|r| r.ipv4_hoa)
                .is_some_and(|a| a == d),
        };
        if !ours {
            self.counters.bump(MnCounter::DropNotForUs);
            return Verdict::Drop(MnCounter::DropNotForUs);
        }
        self.counters.bump(MnCounter::FromHa);
        Verdict::ToTun(inner)
    }

    fn is_from_ha(&self, outer: Outer) -> bool {
        match outer {
            Outer::Udp(s) => *s.ip() == self.ha4 && s.port() == DSMIP_PORT,
            Outer::Ipv4(s) => s == self.ha4,
            Outer::Ipv6(s) => s == self.ha6,
        }
    }

    fn up<'a>(&mut self, now: Instant, through: Through<'a>) -> Verdict<'a, MnCounter> {
        let (up, protected) = match through {
            Through::Up { up, protected } => (up, protected),
            Through::Dropped(_) => {
                self.counters.bump(MnCounter::DropIpsec);
                return Verdict::Drop(MnCounter::DropIpsec);
            }
        };
        match up {
            Up::Signal { outer, .. } | Up::Data { outer, .. } if !self.is_from_ha(outer) => {
                self.counters.bump(MnCounter::DropNotFromHa);
                Verdict::Drop(MnCounter::DropNotFromHa)
            }
            Up::Signal { signal, .. } => self.signal(now, signal, protected),
            Up::Data { inner, dst, .. } => self.data(inner, dst),
            Up::Drop(d) => {
                let c = tif_drop(d);
                self.counters.bump(c);
                Verdict::Drop(c)
            }
        }
    }

    /// A UDP payload from `from` (the home agent's port 4191). IPsec, when configured,
    /// opens ESP in place: the buffer is the caller's scratch.
    pub fn handle_udp<'a>(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        payload: &'a mut [u8],
    ) -> Verdict<'a, MnCounter> {
        let (at, tlv) = match tif::udp_inner(payload) {
            Ok(v) => v,
            Err(d) => {
                return self.up(
                    now,
                    Through::Up {
                        up: Up::Drop(d),
                        protected: false,
                    },
                )
            }
        };
        let t = protect::inbound(
            self.ipsec.as_mut(),
            Outer::Udp(from),
            &mut payload[at..],
            tlv,
        );
        self.up(now, t)
    }

    /// The payload of an IP-in-IP packet from `src`, in place as [`Self::handle_udp`].
    pub fn handle_ip_in_ip<'a>(
        &mut self,
        now: Instant,
        src: IpAddr,
        inner: &'a mut [u8],
    ) -> Verdict<'a, MnCounter> {
        let outer = match src {
            IpAddr::V4(a) => Outer::Ipv4(a),
            IpAddr::V6(a) => Outer::Ipv6(a),
        };
        let t = protect::inbound(self.ipsec.as_mut(), outer, inner, false);
        self.up(now, t)
    }

    /// A whole IPv6 signalling packet captured with its extension headers (a BA with a
    /// type 2 Routing Header, RFC 6275 section 6.4, and ESP after it, RFC 3776 section
    /// 3.2), in place as [`Self::handle_udp`].
    pub fn handle_captured<'a>(
        &mut self,
        now: Instant,
        pkt: &'a mut [u8],
    ) -> Verdict<'a, MnCounter> {
        let t = protect::inbound_captured(self.ipsec.as_mut(), pkt);
        self.up(now, t)
    }

    /// How to send a packet read from the TUN (an application's, from a home address,
    /// RFC 5555 section 4.1): the tunnel of the current registration.
    pub fn handle_from_tun(&mut self, _now: Instant, pkt: &[u8]) -> Outbound<MnCounter> {
        let Some((src, _)) = tif::addresses(pkt) else {
            self.counters.bump(MnCounter::DropBadInner);
            return Outbound::Drop(MnCounter::DropBadInner);
        };
        let Some(r) = &self.registered else {
            self.counters.bump(MnCounter::DropNotRegistered);
            return Outbound::Drop(MnCounter::DropNotRegistered);
        };
        let ok = match src {
            IpAddr::V6(s) => s == self.hoa,
            IpAddr::V4(s) => r.ipv4_hoa == Some(s),
        };
        if !ok {
            self.counters.bump(MnCounter::DropWrongSource);
            return Outbound::Drop(MnCounter::DropWrongSource);
        }
        if !protect::outbound_data(self.ipsec.as_mut(), pkt, &mut self.scratch) {
            self.counters.bump(MnCounter::DropIpsec);
            return Outbound::Drop(MnCounter::DropIpsec);
        }
        let proto = tif::proto_of(pkt);
        self.counters.bump(MnCounter::ToHa);
        Outbound::Send(match r.mode {
            TunnelMode::Ipv6 => Encap::Ipv6 {
                to: self.ha6,
                proto,
            },
            TunnelMode::Ipv4 => Encap::Ipv4 {
                to: self.ha4,
                proto,
            },
            TunnelMode::Udp => Encap::Udp {
                to: SocketAddrV4::new(self.ha4, DSMIP_PORT),
                tlv: false,
            },
            TunnelMode::Tlv => Encap::Udp {
                to: SocketAddrV4::new(self.ha4, DSMIP_PORT),
                tlv: true,
            },
        })
    }

    /// The next BU to send, already built as a packet. Call after every `handle_*` call
    /// until it returns `None`.
    #[must_use = "a queued BU is lost unless sent"]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next registration change. Call after every `handle_*` call until it returns
    /// `None`.
    #[must_use = "a registration change not acted on leaves routes stale"]
    pub fn poll_event(&mut self) -> Option<MnEvent> {
        self.events.pop_front()
    }

    /// When the node next wants [`Self::handle_timeout`] (retransmission or refresh). Ask
    /// again after every `handle_*` call.
    #[must_use = "the deadline must be armed on the driver's timer"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bul.poll_timeout()
    }

    /// Retransmissions and refreshes.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.bul.handle_timeout(now);
        self.pump(now);
    }
}
