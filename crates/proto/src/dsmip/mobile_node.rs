//! The mobile node, sans-IO: the protocol module ([`BindingUpdateList`], RFC 6275 section
//! 11.7 and RFC 5555 section 4.4) joined to the tunnel-interface module
//! ([`crate::dsmip::tif`], RFC 5555 section 4.1). The Linux driver reports care-of
//! addresses from movement detection and hands over what its sockets and TUN read; the
//! node answers with a [`Verdict`] per received packet and an [`Outbound`] per packet from
//! the TUN, queues BUs already built as packets ([`Transmit`])
//! (RFC 6275 section 11.7.1: Home Address option from an IPv6 care-of address; RFC 5555
//! section 4.1: from the home address inside UDP/IPv4), and reports registrations.

use crate::dsmip::protect::{self, Through};
use crate::dsmip::tif::{self, Encap, Outer, TifDrop, Up, DSMIP_PORT, ESP_UDP_PORT};
use crate::dsmip::update_list::{BindingUpdateList, Coa, MnConfig, Registration, TunnelMode};
use crate::dsmip::{NetPrefix, Outbound, Transmit, Verdict};
use crate::reasons;
use crate::stats::Counters;
use m6t_ipsec::{Direction, Inbound, Ipsec, Mode, Outbound as IpsecOut, Traffic};
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
        /// ESP arrived while IPsec is not configured.
        DropEspWithoutIpsec => "drop_esp_without_ipsec",
        /// IKE on UDP port 4500 (the non-ESP marker, RFC 3948 section 2.2, or a NAT
        /// keep-alive) while IKE is not configured.
        DropIkeWithoutIke => "drop_ike_without_ike",
        /// Authenticated ESP keep-alives sent on UDP port 4500 (RFC 4303 section 2.6 dummy
        /// packets: they keep the NAT's mapping and tell the home agent where it is).
        EspKeepalives => "esp_keepalives",
        /// The kernel's own link-local and multicast packets on the TUN (router
        /// solicitations, MLD reports): not for the tunnel, not a fault.
        TunLinkLocal => "tun_link_local",
        /// Protected BUs the tunnel module recognised by SPI (look-up or heuristic) and sent
        /// from the new care-of address.
        BuRecognised => "bu_recognised",
        /// Packets the tunnel module routed against their kind (a BU taken for payload, or
        /// payload for a BU): the chosen BU detection failed them.
        Misrouted => "misrouted",
    }
}

/// How the tunnel-interface module tells an ESP-protected BU from ESP-protected payload on
/// the way out, so that the BU leaves from the new care-of address while payload keeps the
/// old tunnel until the BA (RFC 5555 section 5.1; seed 001 section 4.3.2, req. #3). Neither
/// needs anything attached to the BU through IPsec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BuDetection {
    /// The "DSMIPv6-IPsec API": the SPI names an outbound SA, and IPsec says whether the
    /// policies naming that SA select BUs (RFC 4301 section 4.4.2: SAD entries are pointed to
    /// by SPD-S entries).
    #[default]
    SpiLookup,
    /// "Heuristic and locking": the protocol module locks the tunnel just before it sends a
    /// BU; the first packet then whose SPI is not the one payload has been using is the BU,
    /// and the lock is released.
    HeuristicLocking,
}

/// Where the tunnel-interface module sends a packet leaving the mobile node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// A BU: from the care-of address movement detection chose now.
    NewCareOf,
    /// Anything else: through the registered tunnel.
    Tunnel,
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
    /// The last bare ESP refused for its SPI, for [`Self::take_unknown_spi`].
    unknown_spi: Option<(Outer, u32)>,
    /// BUs sent since the last BA was taken: what status reports when registration fails.
    unanswered: u32,
    /// When the next ESP keep-alive is due (registered in UDP with payload protection).
    esp_keepalive: Option<Instant>,
    /// How protected BUs are told from payload.
    bu_detection: BuDetection,
    /// Heuristic and locking: a BU is about to leave.
    locked: bool,
    /// Heuristic and locking: the SPI payload has been using.
    payload_spi: Option<u32>,
    /// A mobile router's mobile network prefixes (empty for a host).
    mobile_network: Vec<NetPrefix>,
}

/// How often a mobile node behind a NAT sends an ESP keep-alive on port 4500: RFC 3948
/// section 2.3's NAT-keepalive period.
pub const ESP_KEEPALIVE: Duration = Duration::from_secs(20);

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
            mobile_network: if cfg.router {
                cfg.mobile_network.clone()
            } else {
                Vec::new()
            },
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
            unknown_spi: None,
            unanswered: 0,
            esp_keepalive: None,
            bu_detection: BuDetection::default(),
            locked: false,
            payload_spi: None,
        }
    }

    /// Chooses how protected BUs are told from payload ([`BuDetection`]).
    pub fn with_bu_detection(mut self, d: BuDetection) -> Self {
        self.bu_detection = d;
        self
    }

    /// The tunnel-interface module's forwarding decision for an outbound packet IPsec
    /// produced: by its SPI only (none: no IPsec, the packet is readable, and `is_bu`
    /// says what it is).
    fn route(&mut self, spi: Option<u32>, is_bu: bool) -> Route {
        let Some(spi) = spi else {
            return if is_bu {
                Route::NewCareOf
            } else {
                Route::Tunnel
            };
        };
        let bu = match self.bu_detection {
            BuDetection::SpiLookup => self.ipsec.as_ref().is_some_and(|i| {
                i.outbound_sa(spi)
                    .is_some_and(|sa| i.sa_selects_mh_type(sa, m6t_wire::mh::MH_TYPE_BU))
            }),
            BuDetection::HeuristicLocking => {
                if self.locked && self.payload_spi != Some(spi) {
                    self.locked = false;
                    true
                } else {
                    self.payload_spi = Some(spi);
                    false
                }
            }
        };
        if bu != is_bu {
            self.counters.bump(MnCounter::Misrouted);
        }
        if bu {
            Route::NewCareOf
        } else {
            Route::Tunnel
        }
    }

    /// The bytes of the last [`Outbound::Protected`]: the ESP packet to send.
    pub fn protected(&self) -> &[u8] {
        &self.scratch
    }

    /// Sends an ESP keep-alive now if registered in UDP and payload is protected, and says
    /// when the next is due.
    fn esp_keepalive(&mut self, now: Instant) {
        self.esp_keepalive = None;
        let Some(r) = &self.registered else { return };
        let (TunnelMode::Udp | TunnelMode::Tlv, Coa::V4(coa)) = (r.mode, r.coa) else {
            return;
        };
        let Some(ipsec) = self.ipsec.as_mut() else {
            return;
        };
        // What the payload policy would protect: the home address to the home agent.
        let t = Traffic {
            src: self.hoa.into(),
            dst: self.ha6.into(),
            proto: m6t_wire::mh::PAYLOAD_PROTO_NONE,
            ports: None,
            msg_type: None,
        };
        if ipsec.outbound_dummy(&t, &mut self.scratch).is_none() {
            return;
        }
        self.out.push_back(Transmit::EspUdp {
            from: Some(coa),
            to: SocketAddrV4::new(self.ha4, ESP_UDP_PORT),
            data: std::mem::take(&mut self.scratch),
        });
        self.counters.bump(MnCounter::EspKeepalives);
        self.esp_keepalive = Some(now + ESP_KEEPALIVE);
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

    /// The care-of address the node registers (RFC 5555 section 4.4.1: the one movement
    /// detection prefers, which a BU under way carries; the home address at home): where
    /// its IKE SA runs from (RFC 4877 section 4.4.1).
    pub fn care_of(&self) -> Option<Coa> {
        self.bul.chosen()
    }

    /// The current registration.
    pub fn registration(&self) -> Option<&Registration> {
        self.registered.as_ref()
    }

    /// Counters.
    pub fn counters(&self) -> &Counters<MnCounter> {
        &self.counters
    }

    /// A datagram for IKE (port 4500 with the non-ESP marker, or a NAT keep-alive) while
    /// the driver runs no IKE: dropped and counted.
    pub fn handle_ike_without_ike(&mut self) {
        self.counters.bump(MnCounter::DropIkeWithoutIke);
    }

    /// The IPv6 home address.
    pub fn home_address(&self) -> Ipv6Addr {
        self.hoa
    }

    /// The status of the last refused BU, until a registration ([`BindingUpdateList::last_refusal`]).
    pub fn last_refusal(&self) -> Option<u8> {
        self.bul.last_refusal()
    }

    /// Whether `a` is inside the mobile network while the home agent forwards it (a
    /// registration whose BA had R, RFC 3963 section 6.6).
    fn in_mobile_network(&self, a: IpAddr) -> bool {
        self.registered.as_ref().is_some_and(|r| r.router)
            && self.mobile_network.iter().any(|p| p.contains(a))
    }

    fn pump(&mut self, now: Instant) {
        while let Some(b) = self.bul.poll_transmit() {
            let seq = match b.bu.msg {
                MhMessage::Bu { seq, .. } => seq,
                _ => continue,
            };
            // The protocol module's packet: from the care-of address with a Home Address
            // option over IPv6 (RFC 6275 section 11.7.1), from the home address inside UDP
            // (RFC 5555 section 4.1).
            let mut buf = vec![0u8; 40 + 24 + b.bu.emit_len()];
            let (src, home) = match b.coa {
                Coa::V6(c) if c == self.hoa => (c, HomeIn::Source),
                Coa::V6(c) => (c, HomeIn::HomeAddressOption(self.hoa)),
                Coa::V4(_) => (self.hoa, HomeIn::Source),
            };
            let Ok(n) = mip6::emit(src, self.ha6, home, &b.bu, &mut buf) else {
                continue;
            };
            buf.truncate(n);
            // Through IPsec, then the tunnel-interface module's forwarding, which knows the
            // packet only by its SPI: a BU leaves from the care-of address movement
            // detection chose, anything else through the registered tunnel.
            self.locked = true;
            let Ok(bytes) = self.protect(buf) else {
                self.locked = false;
                continue;
            };
            let spi = self.ipsec.as_ref().and_then(|_| esp_spi(&bytes));
            let via = match self.route(spi, true) {
                Route::NewCareOf => {
                    if spi.is_some() {
                        self.counters.bump(MnCounter::BuRecognised);
                    }
                    self.bul.chosen()
                }
                Route::Tunnel => self.registered.as_ref().map(|r| r.coa),
            };
            self.locked = false;
            let t = match via {
                Some(Coa::V6(c)) => Transmit::Ipv6 {
                    from: Some(c),
                    to: self.ha6,
                    data: bytes,
                },
                Some(Coa::V4(c)) => Transmit::Udp {
                    from: Some(c),
                    to: SocketAddrV4::new(self.ha4, DSMIP_PORT),
                    data: bytes,
                },
                None => continue,
            };
            self.unanswered = self.unanswered.saturating_add(1);
            self.counters.bump(MnCounter::BuSent);
            self.last_bu = Some((seq, now));
            self.out.push_back(t);
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
            // At once on a new registration: the home agent learns the NAT's mapping for
            // port 4500 before it has anything to send.
            self.esp_keepalive(now);
        }
    }

    /// A BU through IPsec (ESP in transport mode after its Home Address option, RFC 3776
    /// section 3.1); a drop is counted.
    fn protect(&mut self, pkt: Vec<u8>) -> Result<Vec<u8>, ()> {
        protect::outbound_signal(self.ipsec.as_mut(), pkt, &mut self.scratch).map_err(|_| {
            self.counters.bump(MnCounter::DropIpsec);
        })
    }

    /// Reports whether the home link is attached (RFC 6275 section 11.5.5): coming home
    /// queues the deregistration BU from the home address, which the driver sends over the
    /// home link once the home address is there; leaving registers anew.
    pub fn handle_home(&mut self, now: Instant, home: bool) {
        self.bul.handle_home(now, home);
        self.pump(now);
    }

    /// On the home link with the deregistration accepted: the home agent no longer
    /// intercepts the home address.
    pub fn at_home(&self) -> bool {
        self.bul.at_home()
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
        } || self.in_mobile_network(dst);
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
        let t = protect::from_udp(self.ipsec.as_mut(), from, payload);
        self.up(now, t)
    }

    /// The payload of an IP-in-IP packet from `src`, in place as [`Self::handle_udp`].
    pub fn handle_ip_in_ip<'a>(
        &mut self,
        now: Instant,
        src: IpAddr,
        inner: &'a mut [u8],
    ) -> Verdict<'a, MnCounter> {
        let t = protect::from_ip_in_ip(self.ipsec.as_mut(), src, inner);
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
        let Some((src, dst)) = tif::addresses(pkt) else {
            self.counters.bump(MnCounter::DropBadInner);
            return Outbound::Drop(MnCounter::DropBadInner);
        };
        if tif::link_local_only(dst) {
            self.counters.bump(MnCounter::TunLinkLocal);
            return Outbound::Drop(MnCounter::TunLinkLocal);
        }
        let Some(r) = &self.registered else {
            self.counters.bump(MnCounter::DropNotRegistered);
            return Outbound::Drop(MnCounter::DropNotRegistered);
        };
        // A router forwards its mobile network's packets too, and only those (RFC 3963
        // section 9: ingress filtering on the mobile router).
        let ok = match src {
            IpAddr::V6(s) => s == self.hoa,
            IpAddr::V4(s) => r.ipv4_hoa == Some(s),
        } || self.in_mobile_network(src);
        if !ok {
            self.counters.bump(MnCounter::DropWrongSource);
            return Outbound::Drop(MnCounter::DropWrongSource);
        }
        let mode = r.mode;
        if let Some(ipsec) = self.ipsec.as_mut() {
            match ipsec.outbound(pkt, &mut self.scratch) {
                IpsecOut::Bypass => {}
                IpsecOut::Tunnel { .. } => {
                    let spi = esp_spi(&self.scratch);
                    if self.route(spi, false) != Route::Tunnel {
                        return Outbound::Drop(MnCounter::Misrouted);
                    }
                    self.counters.bump(MnCounter::ToHa);
                    return Outbound::Protected(match mode {
                        TunnelMode::Ipv6 => Encap::EspIp {
                            to: self.ha6.into(),
                        },
                        TunnelMode::Ipv4 => Encap::EspIp {
                            to: self.ha4.into(),
                        },
                        TunnelMode::Udp | TunnelMode::Tlv => Encap::EspUdp {
                            to: SocketAddrV4::new(self.ha4, ESP_UDP_PORT),
                        },
                    });
                }
                IpsecOut::Transport { .. } | IpsecOut::Drop(_) => {
                    self.counters.bump(MnCounter::DropIpsec);
                    return Outbound::Drop(MnCounter::DropIpsec);
                }
            }
        }
        let proto = tif::proto_of(pkt);
        self.counters.bump(MnCounter::ToHa);
        Outbound::Send(match mode {
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

    /// The MTU the home-address interface should have when the tunnel in `mode` leaves by
    /// an interface of MTU `link_mtu`: what is left once the outer header, UDP (and TLV),
    /// and ESP's worst case (when payload is protected: in UDP 4500 behind a NAT, RFC 3948,
    /// as protocol 50 otherwise) are taken off, so that no inner packet up
    /// to it needs fragments outside. At most `max` (the configured MTU); when that would
    /// go below 1 280, IPv6's minimum (RFC 8200 section 5), fragments cannot be avoided and
    /// `max` it is.
    pub fn inner_mtu(&self, mode: TunnelMode, link_mtu: u32, max: u16) -> u16 {
        let esp = self.ipsec.as_ref().and_then(|i| {
            i.sad()
                .iter()
                .filter(|e| e.direction == Direction::Out && e.params.mode == Mode::Tunnel)
                .map(|e| e.params.algorithm.max_overhead())
                .max()
        });
        let outer = match (mode, esp) {
            (TunnelMode::Ipv6, e) => 40 + e.unwrap_or(0),
            (TunnelMode::Ipv4, None) => 20,
            (TunnelMode::Udp, None) => 20 + 8,
            (TunnelMode::Tlv, None) => 20 + 8 + m6t_wire::tlv::TLV_HEADER_LEN,
            (TunnelMode::Ipv4, Some(e)) => 20 + e,
            (TunnelMode::Udp | TunnelMode::Tlv, Some(e)) => 20 + 8 + e,
        };
        let fits = u64::from(link_mtu).saturating_sub(outer as u64);
        if fits < 1280 {
            // Fragments cannot be avoided: the largest inner packets make the fewest.
            return max;
        }
        fits.min(u64::from(max)) as u16
    }

    /// The last bare ESP packet whose SPI no SA has, since the last call: where it came
    /// from and the SPI. The driver's IKE tells a peer it has no IKE SA with (RFC 7296
    /// section 2.21.4), so that a peer we forgot in a restart notices at once.
    pub fn take_unknown_spi(&mut self) -> Option<(Outer, u32)> {
        self.unknown_spi.take()
    }

    /// The next registration change. Call after every `handle_*` call until it returns
    /// `None`.
    #[must_use = "a registration change not acted on leaves routes stale"]
    pub fn poll_event(&mut self) -> Option<MnEvent> {
        self.events.pop_front()
    }

    /// When the node next wants [`Self::handle_timeout`] (retransmission, refresh, ESP
    /// keep-alive). Ask again after every `handle_*` call.
    #[must_use = "the deadline must be armed on the driver's timer"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.bul.poll_timeout(), self.esp_keepalive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The SAs protecting signalling were just created (keyed by IKE, RFC 4877 section 4):
    /// the outstanding BU, which IPsec dropped while they did not exist, goes now rather
    /// than at its retransmission time.
    pub fn signalling_keyed(&mut self, now: Instant) {
        self.bul.send_now(now);
        self.pump(now);
    }

    /// The routes toward the home agent changed while the care-of addresses stayed
    /// (movement detection, RFC 6275 section 11.5.1): toward its IPv6 address (`v6`), its
    /// IPv4 address (`v4`), or both. An outstanding BU whose path is among them may have
    /// left by a path that is gone or was the wrong one (an address that appeared before
    /// its default route), so it goes again now instead of at its retransmission time.
    /// Nothing when no BU is outstanding or only the other family's path changed.
    pub fn paths_changed(&mut self, now: Instant, v6: bool, v4: bool) {
        let ours = match self.bul.outstanding() {
            Some(Coa::V6(_)) => v6,
            Some(Coa::V4(_)) => v4,
            None => false,
        };
        if ours {
            self.signalling_keyed(now);
        }
    }

    /// Retransmissions, refreshes and ESP keep-alives.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.bul.handle_timeout(now);
        self.pump(now);
        if self.esp_keepalive.is_some_and(|t| t <= now) {
            self.esp_keepalive(now);
        }
    }

    /// A bare ESP packet from the home agent (protocol 50 after an IPv4 or IPv6 header, or
    /// UDP port 4500), opened in place: payload in tunnel mode (RFC 5555 section 5) for a
    /// home address.
    pub fn handle_esp<'a>(
        &mut self,
        now: Instant,
        outer: Outer,
        esp: &'a mut [u8],
    ) -> Verdict<'a, MnCounter> {
        let from_ha = match outer {
            Outer::Udp(s) => *s.ip() == self.ha4,
            Outer::Ipv4(s) => s == self.ha4,
            Outer::Ipv6(s) => s == self.ha6,
        };
        if !from_ha {
            self.counters.bump(MnCounter::DropNotFromHa);
            return Verdict::Drop(MnCounter::DropNotFromHa);
        }
        if let Outer::Ipv6(src) = outer {
            // The BA on the home link (RFC 6275 section 11.5.5) in transport-mode ESP.
            let ba = m6t_wire::mh::MH_TYPE_BA;
            if let Some(mut pkt) =
                protect::signalling_in_esp6(self.ipsec.as_ref(), src, self.hoa, esp, ba)
            {
                let t = protect::inbound_captured(self.ipsec.as_mut(), &mut pkt);
                return match self.up(now, t) {
                    Verdict::Handled => Verdict::Handled,
                    Verdict::Drop(c) => Verdict::Drop(c),
                    Verdict::ToTun(_) => {
                        self.counters.bump(MnCounter::DropUnexpectedSignal);
                        Verdict::Drop(MnCounter::DropUnexpectedSignal)
                    }
                };
            }
        }
        let Some(ipsec) = self.ipsec.as_mut() else {
            self.counters.bump(MnCounter::DropEspWithoutIpsec);
            return Verdict::Drop(MnCounter::DropEspWithoutIpsec);
        };
        let spi = protect::esp_spi(esp);
        let range = match ipsec.inbound_esp(esp) {
            Inbound::Tunnel { inner, .. } => inner,
            Inbound::Dummy { .. } => return Verdict::Handled,
            r => {
                self.unknown_spi = protect::unknown_spi(&r, outer, spi).or(self.unknown_spi);
                self.counters.bump(MnCounter::DropIpsec);
                return Verdict::Drop(MnCounter::DropIpsec);
            }
        };
        let inner: &'a [u8] = &esp[range];
        match tif::addresses(inner) {
            Some((_, dst)) => self.data(inner, dst),
            None => {
                self.counters.bump(MnCounter::DropBadInner);
                Verdict::Drop(MnCounter::DropBadInner)
            }
        }
    }
}

/// The SPI of what IPsec produced: a bare ESP packet (tunnel mode, its outer header still to
/// come) or an IPv6 packet whose ESP follows its extension headers (transport mode).
fn esp_spi(bytes: &[u8]) -> Option<u32> {
    let esp = if bytes.first().is_some_and(|b| b >> 4 == 6) {
        let c = m6t_ipsec::chain::Chain::walk(bytes)
            .ok()
            .filter(|c| c.is_esp())?;
        bytes.get(c.upper_at..)?
    } else {
        bytes
    };
    m6t_wire::esp::EspPacket::new_checked(esp)
        .ok()
        .map(|p| p.spi())
}
