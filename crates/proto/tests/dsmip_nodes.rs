//! The whole DSMIPv6 nodes (protocol module over tunnel-interface module) in virtual time,
//! exchanging real packets: BUs built as IPv6 packets (Home Address option from an IPv6
//! care-of address, plain inside UDP), BAs with a type 2 Routing Header, data in every
//! tunnel format, through a simulated NAT that rewrites the outer IPv4 source and port;
//! ingress checks, NAT rebinding, HA restart from a saved binding cache.

use m6t_proto::dsmip::binding_cache::{HaConfig, Tunnel};
use m6t_proto::dsmip::home_agent::{HaCounter, HaEvent, HomeAgent};
use m6t_proto::dsmip::mobile_node::{MnCounter, MnEvent, MobileNode};
use m6t_proto::dsmip::tif::{self, Encap};
use m6t_proto::dsmip::update_list::{Coa, Ipv4HoaRequest, MnConfig, TunnelMode};
use m6t_proto::dsmip::{Outbound, Transmit, Verdict as HaVerdict, Verdict as MnVerdict};
use m6t_wire::Ipv6Repr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

const HOA: &str = "2001:db8:1::a";
const HA6: &str = "2001:db8:1::1";
const HA4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const NAT_PUB: &str = "203.0.113.2:40000";

fn ha_cfg() -> HaConfig {
    let mut c = HaConfig::new("2001:db8:1::/64".parse().unwrap());
    c.accept_unprotected = true;
    c.ipv4_pool = vec![Ipv4Addr::new(198, 51, 100, 10)];
    c
}

fn mn() -> MobileNode {
    let mut c = MnConfig::new(a6(HOA), a6(HA6), HA4);
    c.ipv4_hoa = Ipv4HoaRequest::Dynamic;
    MobileNode::new(c, 100)
}

/// Carries every queued BU to the HA (through the NAT when `nat`) and every BA back.
fn exchange(m: &mut MobileNode, h: &mut HomeAgent, now: Instant, nat: bool) {
    while let Some(t) = m.poll_transmit() {
        match t {
            Transmit::Udp { from, to, data } => {
                assert_eq!(to, SocketAddrV4::new(HA4, 4191));
                let src = if nat {
                    NAT_PUB.parse().unwrap()
                } else {
                    SocketAddrV4::new(from.unwrap(), 50000)
                };
                assert_eq!(
                    h.handle_udp(now, src, &mut data.clone()),
                    HaVerdict::Handled
                );
            }
            Transmit::Ipv6 { to, data, .. } => {
                assert_eq!(to, a6(HA6));
                let _ = h.handle_captured(now, &mut data.clone());
            }
            Transmit::EspUdp { .. } => panic!("ESP keep-alive without IPsec"),
        }
    }
    while let Some(t) = h.poll_transmit() {
        match t {
            Transmit::Udp { to, data, .. } => {
                if nat {
                    assert_eq!(to, NAT_PUB.parse().unwrap());
                }
                assert_eq!(
                    m.handle_udp(now, SocketAddrV4::new(HA4, 4191), &mut data.clone()),
                    MnVerdict::Handled
                );
            }
            Transmit::Ipv6 { data, .. } => {
                let _ = m.handle_captured(now, &mut data.clone());
            }
            Transmit::EspUdp { .. } => panic!("ESP keep-alive from the home agent"),
        }
    }
}

fn packet6(src: &str, dst: &str) -> Vec<u8> {
    let mut b = vec![0u8; 48];
    Ipv6Repr {
        src: a6(src),
        dst: a6(dst),
        next_header: 59,
        payload_len: 8,
        hop_limit: 64,
    }
    .emit(&mut b)
    .unwrap();
    b
}

fn packet4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

fn registered(m: &mut MobileNode) -> Option<(TunnelMode, Option<Ipv4Addr>)> {
    let mut last = None;
    while let Some(e) = m.poll_event() {
        if let MnEvent::Registered { registration, .. } = e {
            last = Some((registration.mode, registration.ipv4_hoa));
        }
    }
    last
}

#[test]
fn behind_a_nat_udp_both_ways_with_ingress_checks() {
    let t0 = Instant::now();
    let mut h = HomeAgent::new(ha_cfg(), a6(HA6));
    let mut m = mn();
    m.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    exchange(&mut m, &mut h, t0, true);
    let v4hoa = Ipv4Addr::new(198, 51, 100, 10);
    assert_eq!(registered(&mut m), Some((TunnelMode::Udp, Some(v4hoa))));
    assert_eq!(
        h.poll_event(),
        Some(HaEvent::Bound {
            hoa: a6(HOA),
            ipv4: Some((v4hoa, 32)),
            tunnel: Tunnel::Udp {
                peer: NAT_PUB.parse().unwrap()
            }
        })
    );

    // MN -> CN over IPv6 and IPv4, through UDP, accepted only from the bound peer.
    let up6 = packet6(HOA, "2001:db8:2::10");
    let Outbound::Send(enc) = m.handle_from_tun(t0, &up6) else {
        panic!("not sent");
    };
    assert_eq!(
        enc,
        Encap::Udp {
            to: SocketAddrV4::new(HA4, 4191),
            tlv: false
        }
    );
    let nat: SocketAddrV4 = NAT_PUB.parse().unwrap();
    assert_eq!(
        h.handle_udp(t0, nat, &mut up6.clone()),
        HaVerdict::ToTun(&up6)
    );
    let up4 = packet4(v4hoa, Ipv4Addr::new(198, 51, 100, 130));
    assert_eq!(
        h.handle_udp(t0, nat, &mut up4.clone()),
        HaVerdict::ToTun(&up4)
    );
    let other: SocketAddrV4 = "203.0.113.66:40000".parse().unwrap();
    assert_eq!(
        h.handle_udp(t0, other, &mut up6.clone()),
        HaVerdict::Drop(HaCounter::DropNotBound)
    );
    // A source that is not a home address is refused at the MN already.
    assert_eq!(
        m.handle_from_tun(t0, &packet6("2001:db8:9::1", "2001:db8:2::10")),
        Outbound::Drop(MnCounter::DropWrongSource)
    );

    // CN -> MN: the HA tunnels to the NAT's address and port; the MN takes it only from
    // the HA and only for its home addresses.
    let down = packet6("2001:db8:2::10", HOA);
    assert_eq!(
        h.handle_from_tun(t0, &down),
        Outbound::Send(Encap::Udp {
            to: nat,
            tlv: false
        })
    );
    let down4 = packet4(Ipv4Addr::new(198, 51, 100, 130), v4hoa);
    assert_eq!(
        h.handle_from_tun(t0, &down4),
        Outbound::Send(Encap::Udp {
            to: nat,
            tlv: false
        })
    );
    let ha_src = SocketAddrV4::new(HA4, 4191);
    assert_eq!(
        m.handle_udp(t0, ha_src, &mut down.clone()),
        MnVerdict::ToTun(&down)
    );
    assert_eq!(
        m.handle_udp(t0, ha_src, &mut down4.clone()),
        MnVerdict::ToTun(&down4)
    );
    assert_eq!(
        m.handle_udp(t0, other, &mut down.clone()),
        MnVerdict::Drop(MnCounter::DropNotFromHa)
    );
    assert_eq!(
        h.handle_from_tun(t0, &packet6("2001:db8:2::10", "2001:db8:1::b")),
        Outbound::Drop(HaCounter::DropNoBinding)
    );
    assert_eq!(h.counters().get(HaCounter::DropNotBound), 1);
}

#[test]
fn without_nat_ip_in_ip_and_ipv6_care_of_address_with_routing_header() {
    let t0 = Instant::now();
    let mut h = HomeAgent::new(ha_cfg(), a6(HA6));
    let mut m = mn();
    let coa4 = Ipv4Addr::new(192, 0, 2, 10);
    m.handle_coas(t0, None, Some(coa4));
    exchange(&mut m, &mut h, t0, false);
    assert_eq!(registered(&mut m).map(|r| r.0), Some(TunnelMode::Ipv4));
    let up = packet6(HOA, "2001:db8:2::10");
    assert_eq!(
        m.handle_from_tun(t0, &up),
        Outbound::Send(Encap::Ipv4 {
            to: HA4,
            proto: tif::PROTO_IPV6
        })
    );
    assert_eq!(
        h.handle_ip_in_ip(t0, IpAddr::V4(coa4), &mut up.clone()),
        HaVerdict::ToTun(&up)
    );
    assert_eq!(
        h.handle_from_tun(t0, &packet6("2001:db8:2::10", HOA)),
        Outbound::Send(Encap::Ipv4 {
            to: coa4,
            proto: tif::PROTO_IPV6
        })
    );

    // Move to an IPv6 network: BU with a Home Address option, BA with a routing header.
    let t1 = t0 + Duration::from_secs(5);
    let coa6 = a6("2001:db8:5::10");
    m.handle_coas(t1, Some(coa6), None);
    exchange(&mut m, &mut h, t1, false);
    assert_eq!(registered(&mut m).map(|r| r.0), Some(TunnelMode::Ipv6));
    assert_eq!(
        h.binding_cache().binding(a6(HOA)).unwrap().tunnel,
        Tunnel::Ipv6 { coa: coa6 }
    );
    assert_eq!(
        m.handle_from_tun(t1, &up),
        Outbound::Send(Encap::Ipv6 {
            to: a6(HA6),
            proto: tif::PROTO_IPV6
        })
    );
    assert_eq!(
        h.handle_ip_in_ip(t1, IpAddr::V6(coa6), &mut up.clone()),
        HaVerdict::ToTun(&up)
    );
    // The old IPv4 care-of address is no longer accepted.
    assert_eq!(
        h.handle_ip_in_ip(t1, IpAddr::V4(coa4), &mut up.clone()),
        HaVerdict::Drop(HaCounter::DropNotBound)
    );
}

#[test]
fn nat_rebinding_is_followed_at_the_next_refresh_and_restart_keeps_bindings() {
    let t0 = Instant::now();
    let mut h = HomeAgent::new(ha_cfg(), a6(HA6));
    let mut m = mn();
    m.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    exchange(&mut m, &mut h, t0, true);
    assert!(registered(&mut m).is_some());
    // The HA restarts from its saved cache: routes come back as events, data flows.
    let snap = h.snapshot(t0);
    let mut h = HomeAgent::restore(ha_cfg(), a6(HA6), &snap, t0 + Duration::from_secs(1));
    assert!(matches!(h.poll_event(), Some(HaEvent::Bound { .. })));
    let nat: SocketAddrV4 = NAT_PUB.parse().unwrap();
    let up = packet6(HOA, "2001:db8:2::10");
    assert_eq!(
        h.handle_udp(t0, nat, &mut up.clone()),
        HaVerdict::ToTun(&up)
    );
    // The NAT reboots with a new mapping: data from it is refused until the refresh BU
    // (due at the NAT keep-alive period, 110 s) moves the binding.
    let new_nat: SocketAddrV4 = "203.0.113.3:41000".parse().unwrap();
    assert_eq!(
        h.handle_udp(t0, new_nat, &mut up.clone()),
        HaVerdict::Drop(HaCounter::DropNotBound)
    );
    let due = m.poll_timeout().unwrap();
    assert!(due <= t0 + Duration::from_secs(110));
    m.handle_timeout(due);
    let Some(Transmit::Udp { data, .. }) = m.poll_transmit() else {
        panic!("no refresh BU");
    };
    assert_eq!(
        h.handle_udp(due, new_nat, &mut data.clone()),
        HaVerdict::Handled
    );
    assert!(matches!(h.poll_transmit(), Some(Transmit::Udp { to, .. }) if to == new_nat));
    assert_eq!(
        h.handle_udp(due, new_nat, &mut up.clone()),
        HaVerdict::ToTun(&up)
    );
    assert!(matches!(
        h.poll_event(),
        Some(HaEvent::Bound { tunnel: Tunnel::Udp { peer }, .. }) if peer == new_nat
    ));
    let _ = Coa::V4(Ipv4Addr::UNSPECIFIED);
}

#[test]
fn lifetime_end_unbinds_and_hostile_input_is_counted() {
    let t0 = Instant::now();
    let mut h = HomeAgent::new(ha_cfg(), a6(HA6));
    let from: SocketAddrV4 = "203.0.113.66:1".parse().unwrap();
    for p in [&[][..], &[0x60, 0, 0][..], &[0x10; 60][..]] {
        assert!(matches!(
            h.handle_udp(t0, from, &mut p.to_vec()),
            HaVerdict::Drop(_)
        ));
    }
    let _ = h.handle_captured(t0, &mut [0x60; 100]);
    assert!(h.counters().get(HaCounter::DropBadEncapsulation) >= 1);
    assert!(h.counters().get(HaCounter::DropBadSignal) >= 1);
    let mut m = mn();
    m.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    exchange(&mut m, &mut h, t0, true);
    assert!(matches!(h.poll_event(), Some(HaEvent::Bound { .. })));
    let end = h.poll_timeout().unwrap();
    h.handle_timeout(end);
    assert!(matches!(
        h.poll_event(),
        Some(HaEvent::Unbound { ipv4: Some(_), .. })
    ));
    assert!(h.binding_cache().is_empty());
}

/// A full binding cache: the next home address is refused with status 130 and counted in
/// `bu_cache_full`, not in `bu_refused`; the bound node keeps its binding.
#[test]
fn a_full_binding_cache_refuses_the_next_home_address_and_counts_it() {
    let t0 = Instant::now();
    let mut c = ha_cfg();
    c.max_bindings = 1;
    c.ipv4_pool = Vec::new();
    let mut h = HomeAgent::new(c, a6(HA6));
    let node = |hoa: &str| {
        let c = MnConfig::new(a6(hoa), a6(HA6), HA4);
        MobileNode::new(c, 100)
    };
    let mut m1 = node(HOA);
    m1.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    exchange(&mut m1, &mut h, t0, false);
    assert!(registered(&mut m1).is_some());
    let mut m2 = node("2001:db8:1::b");
    m2.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 11)));
    exchange(&mut m2, &mut h, t0, false);
    assert!(registered(&mut m2).is_none());
    assert_eq!(h.counters().get(HaCounter::BuCacheFull), 1);
    assert_eq!(h.counters().get(HaCounter::BuRefused), 0);
    assert_eq!(h.counters().get(HaCounter::BuAccepted), 1);
}

/// A route change while a BU is outstanding resends it only when the path of the BU's own
/// family changed: a BU from an IPv4 care-of address stays put when only the route toward
/// the home agent's IPv6 address moved (an IPv6 network being left behind), and goes again
/// at once when the IPv4 one did.
#[test]
fn a_route_change_resends_an_outstanding_bu_only_for_its_own_family() {
    let t0 = Instant::now();
    let mut m = mn();
    m.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    let first = m
        .poll_transmit()
        .expect("the BU from the IPv4 care-of address");
    assert!(matches!(first, Transmit::Udp { .. }));
    assert!(m.poll_transmit().is_none());
    m.paths_changed(t0, true, false);
    assert!(m.poll_transmit().is_none(), "only the IPv6 path changed");
    m.paths_changed(t0, false, true);
    assert_eq!(m.poll_transmit(), Some(first), "the same BU, at once");
    // Answered: nothing goes on later changes.
    let mut h = HomeAgent::new(ha_cfg(), a6(HA6));
    m.paths_changed(t0, false, true);
    exchange(&mut m, &mut h, t0, true);
    assert!(registered(&mut m).is_some());
    m.paths_changed(t0, true, true);
    assert!(m.poll_transmit().is_none());
}
