//! Returning home (RFC 6275 section 11.5.5) on the whole DSMIPv6 nodes in virtual time: the
//! deregistration BU from the home address over the home link, the home agent's answer
//! straight to the home address, nothing tunnelled while at home, retransmissions staying
//! on the home link, and a new registration on leaving.

use m6t_proto::dsmip::binding_cache::HaConfig;
use m6t_proto::dsmip::home_agent::{HaEvent, HomeAgent};
use m6t_proto::dsmip::mobile_node::{MnCounter, MnEvent, MobileNode};
use m6t_proto::dsmip::update_list::{Ipv4HoaRequest, MnConfig, TunnelMode};
use m6t_proto::dsmip::{Outbound, Transmit, Verdict};
use m6t_wire::mh::{bu_flags, MhMessage};
use m6t_wire::mip6::{self, HomeIn};
use m6t_wire::Ipv6Repr;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

const HOA: &str = "2001:db8:1::a";
const HA6: &str = "2001:db8:1::1";
const HA4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const NAT: &str = "203.0.113.2:40000";

fn nodes() -> (MobileNode, HomeAgent) {
    let mut c = HaConfig::new("2001:db8:1::/64".parse().unwrap());
    c.accept_unprotected = true;
    c.ipv4_pool = vec![Ipv4Addr::new(198, 51, 100, 10)];
    let mut m = MnConfig::new(a6(HOA), a6(HA6), HA4);
    m.ipv4_hoa = Ipv4HoaRequest::Dynamic;
    (MobileNode::new(m, 7), HomeAgent::new(c, a6(HA6)))
}

/// Carries the queued signalling both ways; returns the IPv6 packets the MN sent.
fn exchange(m: &mut MobileNode, h: &mut HomeAgent, now: Instant) -> Vec<(Ipv6Addr, Vec<u8>)> {
    let mut sent6 = Vec::new();
    while let Some(t) = m.poll_transmit() {
        match t {
            Transmit::Udp { data, .. } => {
                let _ = h.handle_udp(now, NAT.parse().unwrap(), &mut data.clone());
            }
            Transmit::Ipv6 { from, to, data } => {
                assert_eq!(to, a6(HA6));
                sent6.push((from.unwrap(), data.clone()));
                assert_eq!(h.handle_captured(now, &mut data.clone()), Verdict::Handled);
            }
            Transmit::EspUdp { .. } => panic!("no IPsec here"),
        }
    }
    while let Some(t) = h.poll_transmit() {
        match t {
            Transmit::Udp { data, .. } => {
                let _ = m.handle_udp(now, SocketAddrV4::new(HA4, 4191), &mut data.clone());
            }
            Transmit::Ipv6 { to, data, .. } => {
                // Straight to the home address at home, else with a routing header.
                let s = mip6::parse(&data).unwrap();
                if to == a6(HOA) {
                    assert_eq!(s.home, HomeIn::Source);
                } else {
                    assert_eq!(s.home, HomeIn::RoutingHeader(a6(HOA)));
                }
                assert_eq!(m.handle_captured(now, &mut data.clone()), Verdict::Handled);
            }
            Transmit::EspUdp { .. } => panic!("no IPsec here"),
        }
    }
    sent6
}

fn last_event(m: &mut MobileNode) -> Option<MnEvent> {
    std::iter::from_fn(|| m.poll_event()).last()
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

#[test]
fn home_deregisters_from_the_home_address_and_leaving_registers_again() {
    let t0 = Instant::now();
    let (mut m, mut h) = nodes();
    let coa4 = Ipv4Addr::new(192, 0, 2, 10);
    m.handle_coas(t0, None, Some(coa4));
    exchange(&mut m, &mut h, t0);
    assert!(matches!(
        last_event(&mut m),
        Some(MnEvent::Registered { .. })
    ));
    while h.poll_event().is_some() {}

    // Home: one BU from the home address to the home agent, no Home Address option,
    // A and H, lifetime 0.
    let t1 = t0 + Duration::from_secs(3);
    m.handle_home(t1, true);
    assert!(!m.at_home());
    let sent = exchange(&mut m, &mut h, t1);
    assert_eq!(sent.len(), 1);
    let (from, bu) = &sent[0];
    assert_eq!(*from, a6(HOA));
    let s = mip6::parse(bu).unwrap();
    assert_eq!((s.src, s.home), (a6(HOA), HomeIn::Source));
    match s.mh.msg {
        MhMessage::Bu {
            flags, lifetime, ..
        } => {
            assert_eq!(
                flags & (bu_flags::A | bu_flags::H),
                bu_flags::A | bu_flags::H
            );
            assert_eq!(lifetime, 0);
        }
        ref o => panic!("{o:?}"),
    }
    assert!(s.mh.options.is_empty());
    // The home agent dropped both bindings (and says so to its driver: no more proxy).
    assert!(h.binding_cache().is_empty());
    assert!(matches!(
        h.poll_event(),
        Some(HaEvent::Unbound { ipv4: Some(_), .. })
    ));
    assert!(m.at_home());
    assert_eq!(last_event(&mut m), Some(MnEvent::Unregistered));
    // Nothing goes through the tunnel at home, and new care-of addresses wait.
    assert_eq!(
        m.handle_from_tun(t1, &packet6(HOA, "2001:db8:2::10")),
        Outbound::Drop(MnCounter::DropNotRegistered)
    );
    m.handle_coas(t1, Some(a6("2001:db8:5::10")), Some(coa4));
    assert!(m.poll_transmit().is_none());
    assert_eq!(m.poll_timeout(), None);

    // Leaving home: a new registration from the care-of address (IPv6 preferred).
    let t2 = t1 + Duration::from_secs(3);
    m.handle_home(t2, false);
    exchange(&mut m, &mut h, t2);
    match last_event(&mut m) {
        Some(MnEvent::Registered { registration, .. }) => {
            assert_eq!(registration.mode, TunnelMode::Ipv6)
        }
        e => panic!("{e:?}"),
    }
    assert!(!m.at_home());
    assert!(h.binding_cache().binding(a6(HOA)).is_some());
}

#[test]
fn an_unanswered_deregistration_from_home_is_retransmitted_from_home() {
    let t0 = Instant::now();
    let (mut m, _h) = nodes();
    m.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    while m.poll_transmit().is_some() {}
    m.handle_home(t0, true);
    let mut now = t0;
    for i in 0..6 {
        match m.poll_transmit() {
            Some(Transmit::Ipv6 { from, .. }) => assert_eq!(from, Some(a6(HOA)), "BU {i}"),
            t => panic!("BU {i}: {t:?}"),
        }
        now = m.poll_timeout().unwrap();
        m.handle_timeout(now);
    }
    // Backoff as for any BU (RFC 6275 section 11.8), never the IPv4 fallback.
    assert!(now - t0 >= Duration::from_secs(1 + 2 + 4 + 8 + 16));
    assert!(!m.at_home());
}
