//! The mobile node's protocol module in virtual time, alone and talking to the home agent's
//! through a simulated NAT: BU contents per case, retransmission backoff, IPv6 → IPv4
//! fallback after three failures, BA processing (NAT detection, F refused, IPv4 ack,
//! sequence resynchronisation), refresh at the lifetime and at the NAT keep-alive period.

use m6t_proto::dsmip::binding_cache::{Arrival, BindingCache, HaConfig, Tunnel};
use m6t_proto::dsmip::update_list::*;
use m6t_wire::mh::{bu_flags, MhMessage, MhRepr, MobilityOption};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

const HOA: &str = "2001:db8:1::100";

fn cfg() -> MnConfig {
    MnConfig::new(a6(HOA), a6("2001:db8:1::1"), Ipv4Addr::new(203, 0, 113, 1))
}

fn ha() -> BindingCache {
    let mut c = HaConfig::new("2001:db8:1::/64".parse().unwrap());
    c.accept_unprotected = true;
    c.ipv4_pool = vec![Ipv4Addr::new(198, 51, 100, 100)];
    BindingCache::new(c)
}

fn bu_parts(o: &BuOut) -> (u16, u16, u16) {
    match o.bu.msg {
        MhMessage::Bu {
            seq,
            flags,
            lifetime,
        } => (seq, flags, lifetime),
        _ => panic!(),
    }
}

/// Delivers a BU to the HA as it would arrive: over IPv6, or in UDP through a NAT that maps
/// the care-of address to 203.0.113.2:40000 (`nat`) or through no NAT.
fn deliver(ha: &mut BindingCache, now: Instant, o: &BuOut, nat: bool) -> Option<MhRepr> {
    let arrival = match o.coa {
        Coa::V6(a) => Arrival::Ipv6 { src: a },
        Coa::V4(a) => Arrival::Udp {
            src: if nat {
                "203.0.113.2:40000".parse().unwrap()
            } else {
                SocketAddrV4::new(a, 4191)
            },
        },
    };
    ha.handle_bu(now, a6(HOA), arrival, true, &o.bu)
        .map(|b| b.ba)
}

#[test]
fn bu_contents_per_case() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.ipv4_hoa = Ipv4HoaRequest::Dynamic;
    let mut mn = BindingUpdateList::new(c, 10);
    mn.handle_coas(t0, Some(a6("2001:db8:9::5")), None);
    let o = mn.poll_transmit().unwrap();
    assert_eq!(o.coa, Coa::V6(a6("2001:db8:9::5")));
    let (seq, flags, life) = bu_parts(&o);
    assert_eq!((seq, life), (11, 100));
    assert_eq!(flags, bu_flags::A | bu_flags::H);
    assert!(o
        .bu
        .options
        .iter()
        .all(|x| !matches!(x, MobilityOption::Ipv4CareOfAddress(_))));
    assert!(o.bu.options.contains(&MobilityOption::Ipv4HomeAddress {
        prefix_len: 32,
        p: false,
        addr: Ipv4Addr::UNSPECIFIED
    }));
    // IPv4 only: the IPv4 CoA option, F when configured.
    let mut c = cfg();
    c.force_udp = true;
    let mut mn = BindingUpdateList::new(c, 0);
    mn.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    let o = mn.poll_transmit().unwrap();
    assert_eq!(o.coa, Coa::V4(Ipv4Addr::new(192, 0, 2, 10)));
    assert_eq!(bu_parts(&o).1 & bu_flags::F, bu_flags::F);
    assert!(o
        .bu
        .options
        .contains(&MobilityOption::Ipv4CareOfAddress(Ipv4Addr::new(
            192, 0, 2, 10
        ))));
}

#[test]
fn retransmission_backoff_first_registration() {
    let t0 = Instant::now();
    let mut mn = BindingUpdateList::new(cfg(), 0);
    mn.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    let first = mn.poll_transmit().unwrap();
    let mut at = vec![];
    for _ in 0..8 {
        let now = mn.poll_timeout().unwrap();
        mn.handle_timeout(now);
        let o = mn.poll_transmit().expect("retransmission");
        assert_eq!(bu_parts(&o).0, bu_parts(&first).0, "same sequence number");
        at.push((now - t0).as_secs_f64());
    }
    // 1.5 s, then doubling, capped at 32 s.
    assert_eq!(at, vec![1.5, 4.5, 10.5, 22.5, 46.5, 78.5, 110.5, 142.5]);
}

#[test]
fn falls_back_to_ipv4_after_three_failed_bus_on_ipv6() {
    let t0 = Instant::now();
    let mut mn = BindingUpdateList::new(cfg(), 0);
    mn.handle_coas(
        t0,
        Some(a6("2001:db8:9::5")),
        Some(Ipv4Addr::new(192, 0, 2, 10)),
    );
    assert!(matches!(mn.poll_transmit().unwrap().coa, Coa::V6(_)));
    let mut sent = vec![];
    for _ in 0..4 {
        let t = mn.poll_timeout().unwrap();
        mn.handle_timeout(t);
        sent.push(mn.poll_transmit().unwrap().coa);
    }
    assert!(matches!(sent[0], Coa::V6(_)));
    assert!(matches!(sent[1], Coa::V6(_)));
    assert_eq!(
        sent[2],
        Coa::V4(Ipv4Addr::new(192, 0, 2, 10)),
        "third failure: IPv4"
    );
    assert!(matches!(sent[3], Coa::V4(_)));
}

#[test]
fn registration_through_nat_uses_udp_and_refreshes_at_the_keepalive_period() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.ipv4_hoa = Ipv4HoaRequest::Dynamic;
    c.lifetime = 200; // 800 s: the NAT keep-alive (110 s) comes first
    let mut mn = BindingUpdateList::new(c, 0);
    let mut ha = ha();
    mn.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    let o = mn.poll_transmit().unwrap();
    let ba = deliver(&mut ha, t0, &o, true).unwrap();
    assert!(mn.handle_ba(t0, &ba));
    let r = mn.registration().unwrap().clone();
    assert_eq!(r.mode, TunnelMode::Udp);
    assert_eq!(r.ipv4_hoa, Some(Ipv4Addr::new(198, 51, 100, 100)));
    assert_eq!(
        ha.tunnel_for_v6(a6(HOA)),
        Some(Tunnel::Udp {
            peer: "203.0.113.2:40000".parse().unwrap()
        })
    );
    assert_eq!(mn.poll_timeout(), Some(t0 + Duration::from_secs(110)));
    // The refresh keeps the dynamic IPv4 home address.
    let t1 = t0 + Duration::from_secs(110);
    mn.handle_timeout(t1);
    let o = mn.poll_transmit().unwrap();
    assert!(o.bu.options.contains(&MobilityOption::Ipv4HomeAddress {
        prefix_len: 32,
        p: false,
        addr: Ipv4Addr::new(198, 51, 100, 100)
    }));
    let ba = deliver(&mut ha, t1, &o, true).unwrap();
    assert!(mn.handle_ba(t1, &ba));
    assert_eq!(
        mn.registration().unwrap().ipv4_hoa,
        Some(Ipv4Addr::new(198, 51, 100, 100))
    );
}

#[test]
fn registration_without_nat_uses_ip_in_ip_and_refreshes_before_the_lifetime() {
    let t0 = Instant::now();
    let mut mn = BindingUpdateList::new(cfg(), 0);
    let mut ha = ha();
    mn.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    let o = mn.poll_transmit().unwrap();
    let ba = deliver(&mut ha, t0, &o, false).unwrap();
    assert!(mn.handle_ba(t0, &ba));
    assert_eq!(mn.registration().unwrap().mode, TunnelMode::Ipv4);
    assert_eq!(
        ha.tunnel_for_v6(a6(HOA)),
        Some(Tunnel::Ipv4 {
            coa: Ipv4Addr::new(192, 0, 2, 10)
        })
    );
    // 100 × 4 s granted; refresh at 80 %.
    assert_eq!(mn.poll_timeout(), Some(t0 + Duration::from_secs(320)));
}

#[test]
fn ipv6_then_ipv4_then_back_to_ipv6() {
    let t0 = Instant::now();
    let mut mn = BindingUpdateList::new(cfg(), 0);
    let mut ha = ha();
    let v6 = a6("2001:db8:9::5");
    for (i, (c6, c4)) in [
        (Some(v6), None),
        (None, Some(Ipv4Addr::new(192, 0, 2, 10))),
        (Some(v6), None),
    ]
    .into_iter()
    .enumerate()
    {
        let now = t0 + Duration::from_secs(10 * i as u64);
        mn.handle_coas(now, c6, c4);
        let o = mn.poll_transmit().expect("a BU for each move");
        let ba = deliver(&mut ha, now, &o, true).unwrap();
        assert!(mn.handle_ba(now, &ba));
    }
    assert_eq!(mn.registration().unwrap().mode, TunnelMode::Ipv6);
    assert_eq!(ha.tunnel_for_v6(a6(HOA)), Some(Tunnel::Ipv6 { coa: v6 }));
}

#[test]
fn f_refused_is_retried_without_f_and_stale_bas_are_ignored() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.force_udp = true;
    let mut mn = BindingUpdateList::new(c, 0);
    let mut hc = HaConfig::new("2001:db8:1::/64".parse().unwrap());
    hc.accept_unprotected = true;
    hc.accept_force_udp = false;
    let mut ha = BindingCache::new(hc);
    mn.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    let o = mn.poll_transmit().unwrap();
    let ba = deliver(&mut ha, t0, &o, false).unwrap();
    // A BA for another sequence number changes nothing.
    let mut stale = ba.clone();
    if let MhMessage::Ba { ref mut seq, .. } = stale.msg {
        *seq = seq.wrapping_add(5);
    }
    assert!(!mn.handle_ba(t0, &stale));
    assert!(mn.handle_ba(t0, &ba)); // 144
    let o2 = mn.poll_transmit().expect("retry without F");
    assert_eq!(bu_parts(&o2).1 & bu_flags::F, 0);
    let ba2 = deliver(&mut ha, t0, &o2, false).unwrap();
    assert!(mn.handle_ba(t0, &ba2));
    assert_eq!(mn.registration().unwrap().mode, TunnelMode::Ipv4);
}

#[test]
fn sequence_number_resynchronises_after_an_ha_restart_with_a_newer_number() {
    let t0 = Instant::now();
    let mut ha = ha();
    // Another MN instance registered with sequence 500 before (e.g. before a reboot).
    let mut old = BindingUpdateList::new(cfg(), 499);
    old.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    let o = old.poll_transmit().unwrap();
    deliver(&mut ha, t0, &o, true);
    let mut mn = BindingUpdateList::new(cfg(), 0);
    mn.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 11)));
    let o = mn.poll_transmit().unwrap();
    let ba = deliver(&mut ha, t0, &o, true).unwrap();
    assert!(mn.handle_ba(t0, &ba)); // 135 with seq 500
    let o = mn.poll_transmit().expect("resent with a newer number");
    assert_eq!(bu_parts(&o).0, 501);
    let ba = deliver(&mut ha, t0, &o, true).unwrap();
    assert!(mn.handle_ba(t0, &ba));
    assert!(mn.registration().is_some());
}

/// A route change while a BU is outstanding (`MobileNode::paths_changed`, which calls
/// `send_now`): the same BU goes again at once, the retransmission schedule unchanged; with
/// no BU outstanding, nothing goes.
#[test]
fn a_bu_lost_on_a_changed_path_goes_again_at_once() {
    let t0 = Instant::now();
    let mut mn = BindingUpdateList::new(cfg(), 0);
    mn.send_now(t0);
    assert!(mn.poll_transmit().is_none(), "nothing outstanding");
    mn.handle_coas(t0, Some(a6("2001:db8:5::10")), None);
    let first = mn.poll_transmit().unwrap();
    let due = mn.poll_timeout().unwrap();
    let t1 = t0 + Duration::from_millis(3);
    mn.send_now(t1);
    let again = mn.poll_transmit().expect("the BU again");
    assert_eq!(again.coa, first.coa);
    assert_eq!(
        bu_parts(&again).0,
        bu_parts(&first).0,
        "same sequence number"
    );
    assert!(mn.poll_transmit().is_none());
    assert!(
        mn.poll_timeout().unwrap() >= due,
        "no attempt counted: the timeout did not shrink"
    );
    // Answered: a later route change sends nothing.
    let mut h = ha();
    let ba = deliver(&mut h, t1, &again, false).unwrap();
    assert!(mn.handle_ba(t1, &ba));
    mn.send_now(t1);
    assert!(mn.poll_transmit().is_none());
}

/// RFC 4877 section 4.4.1: K in the BU when the node's IKE SA follows its moves; K in the BA
/// only when the home agent's do too and the BU asked; the registration says which.
#[test]
fn k_flag_in_bu_and_ba_only_when_both_keep_ike_sas_across_moves() {
    let t0 = Instant::now();
    for (mn_k, ha_k) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut c = cfg();
        c.key_management = mn_k;
        let mut mn = BindingUpdateList::new(c, 0);
        mn.handle_coas(t0, Some(a6("2001:db8:5::10")), None);
        let o = mn.poll_transmit().unwrap();
        let flags = bu_parts(&o).1;
        assert_eq!(flags & bu_flags::K != 0, mn_k, "BU K, mn {mn_k}");
        let mut h = ha();
        let mut hc = h.config().clone();
        hc.key_management = ha_k;
        h = BindingCache::new(hc);
        let ba = deliver(&mut h, t0, &o, false).unwrap();
        let MhMessage::Ba { flags, .. } = ba.msg else {
            panic!()
        };
        assert_eq!(
            flags & m6t_wire::mh::ba_flags::K != 0,
            mn_k && ha_k,
            "BA K, mn {mn_k} ha {ha_k}"
        );
        assert!(mn.handle_ba(t0, &ba));
        assert_eq!(mn.registration().unwrap().key_management, mn_k && ha_k);
    }
}
