//! The home agent's protocol module in virtual time: sequence window, lifetimes and
//! expiry, deregistration, BA status codes, IPv4 home addresses (static, dynamic pool and
//! its exhaustion, prefixes), NAT / no NAT, F and T negotiation (RFC 6275 section 10.3,
//! RFC 5555 sections 3, 4.2 and 4.5).

use m6t_proto::dsmip::binding_cache::*;
use m6t_wire::mh::{ba_flags, bu_flags, MhMessage, MhRepr, MobilityOption};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

const MN: &str = "2001:db8:1::100";
const MN2: &str = "2001:db8:1::200";
const MN3: &str = "2001:db8:1::300";

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn cfg() -> HaConfig {
    let mut c = HaConfig::new("2001:db8:1::/64".parse().unwrap());
    c.static_ipv4
        .insert(a6(MN), (Ipv4Addr::new(198, 51, 100, 5), 32));
    c.ipv4_pool = vec![
        Ipv4Addr::new(198, 51, 100, 100),
        Ipv4Addr::new(198, 51, 100, 101),
    ];
    c.accept_unprotected = true;
    c
}

fn bu(seq: u16, flags: u16, lifetime: u16, options: Vec<MobilityOption>) -> MhRepr {
    MhRepr {
        msg: MhMessage::Bu {
            seq,
            flags,
            lifetime,
        },
        options,
    }
}

const AH: u16 = bu_flags::A | bu_flags::H;

fn udp(ip: [u8; 4], port: u16) -> Arrival {
    Arrival::Udp {
        src: SocketAddrV4::new(ip.into(), port),
    }
}

fn coa4(ip: [u8; 4]) -> MobilityOption {
    MobilityOption::Ipv4CareOfAddress(ip.into())
}

fn ba_of(o: &BaOut) -> (u8, u8, u16, u16) {
    match o.ba.msg {
        MhMessage::Ba {
            status,
            flags,
            seq,
            lifetime,
        } => (status, flags, seq, lifetime),
        _ => panic!("not a BA"),
    }
}

fn ack(o: &BaOut) -> Option<(u8, u8, Ipv4Addr)> {
    o.ba.options.iter().find_map(|x| match x {
        MobilityOption::Ipv4AddressAck {
            status,
            prefix_len,
            addr,
        } => Some((*status, *prefix_len, *addr)),
        _ => None,
    })
}

fn natdet(o: &BaOut) -> Option<(bool, u32)> {
    o.ba.options.iter().find_map(|x| match x {
        MobilityOption::NatDetection { f, refresh } => Some((*f, *refresh)),
        _ => None,
    })
}

#[test]
fn ipv4_coa_without_nat_uses_ip_in_ip_and_ba_goes_in_udp_with_nat_detection() {
    let mut ha = BindingCache::new(cfg());
    let t0 = Instant::now();
    let o = ha
        .handle_bu(
            t0,
            a6(MN),
            udp([192, 0, 2, 10], 4191),
            true,
            &bu(1, AH, 100, vec![coa4([192, 0, 2, 10])]),
        )
        .unwrap();
    assert_eq!(ba_of(&o), (status::ACCEPTED, 0, 1, 100));
    assert_eq!(
        o.via,
        Tunnel::Udp {
            peer: "192.0.2.10:4191".parse().unwrap()
        }
    );
    assert_eq!(
        natdet(&o),
        Some((false, u32::MAX)),
        "no NAT: no keep-alive needed"
    );
    assert_eq!(
        ha.tunnel_for_v6(a6(MN)),
        Some(Tunnel::Ipv4 {
            coa: Ipv4Addr::new(192, 0, 2, 10)
        })
    );
    assert!(!ha.binding(a6(MN)).unwrap().nat);
    // The BA re-parses from its bytes.
    let mut b = [0u8; 128];
    let n =
        o.ba.emit("2001:db8:1::1".parse().unwrap(), a6(MN), &mut b)
            .unwrap();
    assert_eq!(
        MhRepr::parse(&b[..n], "2001:db8:1::1".parse().unwrap(), a6(MN)).unwrap(),
        o.ba
    );
}

#[test]
fn nat_detected_when_outer_source_differs_from_the_coa_option() {
    let mut ha = BindingCache::new(cfg());
    let o = ha
        .handle_bu(
            Instant::now(),
            a6(MN),
            udp([203, 0, 113, 2], 40000),
            true,
            &bu(1, AH, 100, vec![coa4([192, 0, 2, 10])]),
        )
        .unwrap();
    assert_eq!(ba_of(&o).0, status::ACCEPTED);
    assert_eq!(natdet(&o), Some((false, 110)));
    let peer: SocketAddrV4 = "203.0.113.2:40000".parse().unwrap();
    assert_eq!(ha.tunnel_for_v6(a6(MN)), Some(Tunnel::Udp { peer }));
    assert!(ha.binding(a6(MN)).unwrap().nat);
    // A UDP BU without the IPv4 CoA option is refused.
    let o = ha
        .handle_bu(
            Instant::now(),
            a6(MN2),
            udp([203, 0, 113, 2], 40001),
            true,
            &bu(1, AH, 100, vec![]),
        )
        .unwrap();
    assert_eq!(ba_of(&o).0, status::INVALID_COA);
}

#[test]
fn force_udp_and_tlv_negotiation() {
    let mut ha = BindingCache::new(cfg());
    let t0 = Instant::now();
    let o = ha
        .handle_bu(
            t0,
            a6(MN),
            udp([192, 0, 2, 10], 4191),
            true,
            &bu(1, AH | bu_flags::F, 100, vec![coa4([192, 0, 2, 10])]),
        )
        .unwrap();
    assert_eq!(ba_of(&o).0, status::ACCEPTED);
    assert_eq!(
        natdet(&o),
        Some((true, 110)),
        "F accepted without NAT: UDP forced"
    );
    assert!(matches!(ha.tunnel_for_v6(a6(MN)), Some(Tunnel::Udp { .. })));

    let mut c = cfg();
    c.accept_force_udp = false;
    let mut ha = BindingCache::new(c);
    let o = ha
        .handle_bu(
            t0,
            a6(MN),
            udp([192, 0, 2, 10], 4191),
            true,
            &bu(1, AH | bu_flags::F, 100, vec![coa4([192, 0, 2, 10])]),
        )
        .unwrap();
    assert_eq!(ba_of(&o).0, status::FORCE_UDP_REFUSED);
    assert!(ha.is_empty());

    // T asked but not accepted: vanilla UDP; accepted: TLV, and the BA says T.
    let mut ha = BindingCache::new(cfg());
    ha.handle_bu(
        t0,
        a6(MN),
        udp([203, 0, 113, 2], 1),
        true,
        &bu(1, AH | bu_flags::T, 100, vec![coa4([192, 0, 2, 10])]),
    )
    .unwrap();
    assert!(matches!(ha.tunnel_for_v6(a6(MN)), Some(Tunnel::Udp { .. })));
    let mut c = cfg();
    c.accept_tlv = true;
    let mut ha = BindingCache::new(c);
    let o = ha
        .handle_bu(
            t0,
            a6(MN),
            udp([203, 0, 113, 2], 1),
            true,
            &bu(1, AH | bu_flags::T, 100, vec![coa4([192, 0, 2, 10])]),
        )
        .unwrap();
    assert_eq!(ba_of(&o).1 & ba_flags::T, ba_flags::T);
    assert!(matches!(ha.tunnel_for_v6(a6(MN)), Some(Tunnel::Tlv { .. })));
}

#[test]
fn ipv6_coa_and_alternate_coa() {
    let mut ha = BindingCache::new(cfg());
    let t0 = Instant::now();
    let coa = a6("2001:db8:9::5");
    let o = ha
        .handle_bu(
            t0,
            a6(MN),
            Arrival::Ipv6 { src: coa },
            true,
            &bu(1, AH, 100, vec![]),
        )
        .unwrap();
    assert_eq!(ba_of(&o).0, status::ACCEPTED);
    assert_eq!(natdet(&o), None, "no NAT Detection over IPv6");
    assert_eq!(ha.tunnel_for_v6(a6(MN)), Some(Tunnel::Ipv6 { coa }));
    let alt = a6("2001:db8:9::6");
    ha.handle_bu(
        t0,
        a6(MN),
        Arrival::Ipv6 { src: coa },
        true,
        &bu(2, AH, 100, vec![MobilityOption::AlternateCoa(alt)]),
    );
    assert_eq!(ha.tunnel_for_v6(a6(MN)), Some(Tunnel::Ipv6 { coa: alt }));
    // Returning home (CoA = HoA) deregisters.
    let o = ha
        .handle_bu(
            t0,
            a6(MN),
            Arrival::Ipv6 { src: a6(MN) },
            true,
            &bu(3, AH, 100, vec![]),
        )
        .unwrap();
    assert_eq!(ba_of(&o), (status::ACCEPTED, 0, 3, 0));
    assert!(ha.is_empty());
}

#[test]
fn status_codes_for_rejected_bus_even_without_a() {
    let mut c = cfg();
    c.accept_unprotected = false;
    let mut ha = BindingCache::new(c);
    let t0 = Instant::now();
    let b = bu(1, bu_flags::H, 100, vec![coa4([192, 0, 2, 10])]);
    let o = ha
        .handle_bu(t0, a6(MN), udp([192, 0, 2, 10], 4191), false, &b)
        .unwrap();
    assert_eq!(ba_of(&o).0, status::PROHIBITED, "unprotected BU refused");
    let mut ha = BindingCache::new(cfg());
    let o = ha
        .handle_bu(
            t0,
            a6(MN),
            udp([192, 0, 2, 10], 4191),
            true,
            &bu(1, bu_flags::A, 100, vec![coa4([192, 0, 2, 10])]),
        )
        .unwrap();
    assert_eq!(ba_of(&o).0, status::HOME_REGISTRATION_NOT_SUPPORTED);
    let o = ha
        .handle_bu(
            t0,
            a6("2001:db8:2::1"),
            udp([192, 0, 2, 10], 4191),
            true,
            &bu(1, AH, 100, vec![coa4([192, 0, 2, 10])]),
        )
        .unwrap();
    assert_eq!(ba_of(&o).0, status::NOT_HOME_SUBNET);
    // Success without A: no BA.
    assert!(ha
        .handle_bu(
            t0,
            a6(MN),
            udp([192, 0, 2, 10], 4191),
            true,
            &bu(1, bu_flags::H, 100, vec![coa4([192, 0, 2, 10])])
        )
        .is_none());
    assert_eq!(ha.len(), 1);
}

#[test]
fn sequence_window() {
    let mut ha = BindingCache::new(cfg());
    let t0 = Instant::now();
    let mut send = |seq: u16| {
        let o = ha
            .handle_bu(
                t0,
                a6(MN),
                udp([192, 0, 2, 10], 4191),
                true,
                &bu(seq, AH, 100, vec![coa4([192, 0, 2, 10])]),
            )
            .unwrap();
        ba_of(&o)
    };
    assert_eq!(send(65534).0, status::ACCEPTED);
    assert_eq!(
        send(65534),
        (status::SEQ_OUT_OF_WINDOW, 0, 65534, 0),
        "same seq again"
    );
    assert_eq!(send(65533).0, status::SEQ_OUT_OF_WINDOW, "older");
    assert_eq!(send(65535).0, status::ACCEPTED);
    assert_eq!(send(0).0, status::ACCEPTED, "wraps");
    assert_eq!(
        send(32768).0,
        status::SEQ_OUT_OF_WINDOW,
        "half a window away"
    );
    assert_eq!(send(32767).0, status::ACCEPTED);
}

#[test]
fn lifetime_is_capped_and_bindings_expire() {
    let mut c = cfg();
    c.max_lifetime = Duration::from_secs(200);
    let mut ha = BindingCache::new(c);
    let t0 = Instant::now();
    let o = ha
        .handle_bu(
            t0,
            a6(MN),
            udp([192, 0, 2, 10], 4191),
            true,
            &bu(1, AH, 1000, vec![coa4([192, 0, 2, 10])]),
        )
        .unwrap();
    assert_eq!(ba_of(&o).3, 50, "200 s = 50 units of 4 s");
    assert_eq!(ha.poll_timeout(), Some(t0 + Duration::from_secs(200)));
    let mut ended = Vec::new();
    ha.handle_timeout(t0 + Duration::from_secs(199), &mut ended);
    assert!(ended.is_empty());
    ha.handle_timeout(t0 + Duration::from_secs(200), &mut ended);
    assert_eq!(ended, vec![a6(MN)]);
    assert!(ha.is_empty());
    // Lifetime 0 deregisters.
    ha.handle_bu(
        t0,
        a6(MN),
        udp([192, 0, 2, 10], 4191),
        true,
        &bu(2, AH, 10, vec![coa4([192, 0, 2, 10])]),
    );
    let o = ha
        .handle_bu(
            t0,
            a6(MN),
            udp([192, 0, 2, 10], 4191),
            true,
            &bu(3, AH, 0, vec![coa4([192, 0, 2, 10])]),
        )
        .unwrap();
    assert_eq!(ba_of(&o).3, 0);
    assert!(ha.is_empty());
}

fn hoa_opt(plen: u8, p: bool, a: [u8; 4]) -> MobilityOption {
    MobilityOption::Ipv4HomeAddress {
        prefix_len: plen,
        p,
        addr: a.into(),
    }
}

#[test]
fn static_ipv4_home_address_checked() {
    let mut ha = BindingCache::new(cfg());
    let t0 = Instant::now();
    let o = ha
        .handle_bu(
            t0,
            a6(MN),
            udp([203, 0, 113, 2], 9),
            true,
            &bu(
                1,
                AH,
                100,
                vec![hoa_opt(32, false, [198, 51, 100, 5]), coa4([192, 0, 2, 10])],
            ),
        )
        .unwrap();
    assert_eq!(
        ack(&o),
        Some((v4status::SUCCESS, 32, Ipv4Addr::new(198, 51, 100, 5)))
    );
    assert_eq!(
        ha.tunnel_for_v4(Ipv4Addr::new(198, 51, 100, 5))
            .map(|x| x.0),
        Some(a6(MN))
    );
    // Not this MN's address: 130, IPv6 binding still accepted, no IPv4 binding.
    let o = ha
        .handle_bu(
            t0,
            a6(MN2),
            udp([203, 0, 113, 2], 10),
            true,
            &bu(
                1,
                AH,
                100,
                vec![hoa_opt(32, false, [198, 51, 100, 5]), coa4([192, 0, 2, 11])],
            ),
        )
        .unwrap();
    assert_eq!(ba_of(&o).0, status::ACCEPTED);
    assert_eq!(ack(&o).unwrap().0, v4status::INCORRECT_HOA);
    assert!(ha.binding(a6(MN2)).unwrap().ipv4.is_none());
    assert_eq!(
        ha.tunnel_for_v4(Ipv4Addr::new(198, 51, 100, 5))
            .map(|x| x.0),
        Some(a6(MN))
    );
    // Prefix length 0 is invalid.
    let o = ha
        .handle_bu(
            t0,
            a6(MN2),
            udp([203, 0, 113, 2], 10),
            true,
            &bu(
                2,
                AH,
                100,
                vec![hoa_opt(0, false, [0, 0, 0, 0]), coa4([192, 0, 2, 11])],
            ),
        )
        .unwrap();
    assert_eq!(ack(&o).unwrap().0, v4status::INVALID);
    // A BU without the option removes the IPv4 binding.
    ha.handle_bu(
        t0,
        a6(MN),
        udp([203, 0, 113, 2], 9),
        true,
        &bu(2, AH, 100, vec![coa4([192, 0, 2, 10])]),
    );
    assert!(ha.tunnel_for_v4(Ipv4Addr::new(198, 51, 100, 5)).is_none());
    assert!(ha.binding(a6(MN)).is_some());
}

#[test]
fn dynamic_pool_allocation_reuse_exhaustion_and_release() {
    let mut ha = BindingCache::new(cfg());
    let t0 = Instant::now();
    let dynreq = |seq| {
        bu(
            seq,
            AH,
            25,
            vec![hoa_opt(32, false, [0, 0, 0, 0]), coa4([192, 0, 2, 10])],
        )
    };
    let a = ack(&ha
        .handle_bu(t0, a6(MN2), udp([203, 0, 113, 2], 1), true, &dynreq(1))
        .unwrap())
    .unwrap();
    assert_eq!(a, (v4status::SUCCESS, 32, Ipv4Addr::new(198, 51, 100, 100)));
    // Re-registration keeps the same address.
    let a2 = ack(&ha
        .handle_bu(t0, a6(MN2), udp([203, 0, 113, 2], 1), true, &dynreq(2))
        .unwrap())
    .unwrap();
    assert_eq!(a2.2, a.2);
    let b = ack(&ha
        .handle_bu(t0, a6(MN3), udp([203, 0, 113, 2], 2), true, &dynreq(1))
        .unwrap())
    .unwrap();
    assert_eq!(b.2, Ipv4Addr::new(198, 51, 100, 101));
    // Pool exhausted.
    let c = ack(&ha
        .handle_bu(
            t0,
            a6("2001:db8:1::400"),
            udp([203, 0, 113, 2], 3),
            true,
            &dynreq(1),
        )
        .unwrap())
    .unwrap();
    assert_eq!(c.0, v4status::DYNAMIC_UNAVAILABLE);
    // The static MN asking for 0.0.0.0 gets its static address.
    let s = ack(&ha
        .handle_bu(t0, a6(MN), udp([203, 0, 113, 2], 4), true, &dynreq(1))
        .unwrap())
    .unwrap();
    assert_eq!(s.2, Ipv4Addr::new(198, 51, 100, 5));
    // Expiry frees the addresses back to the pool.
    ha.handle_timeout(t0 + Duration::from_secs(100), &mut Vec::new());
    assert!(ha.is_empty());
    let d = ack(&ha
        .handle_bu(
            t0,
            a6("2001:db8:1::400"),
            udp([203, 0, 113, 2], 3),
            true,
            &dynreq(2),
        )
        .unwrap())
    .unwrap();
    assert_eq!(d.0, v4status::SUCCESS);
}

#[test]
fn ipv4_prefixes_need_authorisation() {
    let mut c = cfg();
    c.static_ipv4
        .insert(a6(MN2), (Ipv4Addr::new(198, 51, 100, 64), 26));
    let mut ha = BindingCache::new(c.clone());
    let t0 = Instant::now();
    let req = bu(
        1,
        AH | bu_flags::R,
        100,
        vec![hoa_opt(26, true, [198, 51, 100, 64]), coa4([192, 0, 2, 10])],
    );
    // With R from a node that is neither a router nor a prefix holder: 140 (RFC 3963
    // section 6.2); without R, the P flag is refused in the acknowledgement.
    let o = ha
        .handle_bu(t0, a6(MN2), udp([203, 0, 113, 2], 1), true, &req)
        .unwrap();
    assert!(matches!(o.ba.msg, MhMessage::Ba { status: 140, .. }));
    let host = bu(
        2,
        AH,
        100,
        vec![hoa_opt(26, true, [198, 51, 100, 64]), coa4([192, 0, 2, 10])],
    );
    let o = ha
        .handle_bu(t0, a6(MN2), udp([203, 0, 113, 2], 1), true, &host)
        .unwrap();
    assert_eq!(ack(&o).unwrap().0, v4status::PREFIX_UNAUTHORIZED);
    c.prefix_holders.insert(a6(MN2));
    let mut ha = BindingCache::new(c);
    let o = ha
        .handle_bu(t0, a6(MN2), udp([203, 0, 113, 2], 1), true, &req)
        .unwrap();
    assert_eq!(
        ack(&o),
        Some((v4status::SUCCESS, 26, Ipv4Addr::new(198, 51, 100, 64)))
    );
    assert_eq!(
        ha.tunnel_for_v4(Ipv4Addr::new(198, 51, 100, 100))
            .map(|x| x.0),
        Some(a6(MN2))
    );
    assert!(ha.tunnel_for_v4(Ipv4Addr::new(198, 51, 100, 128)).is_none());
}

#[test]
fn binding_cache_survives_a_restart() {
    let mut ha = BindingCache::new(cfg());
    let t0 = Instant::now();
    let dynreq = |seq| {
        bu(
            seq,
            AH,
            100,
            vec![hoa_opt(32, false, [0, 0, 0, 0]), coa4([192, 0, 2, 10])],
        )
    };
    ha.handle_bu(t0, a6(MN2), udp([203, 0, 113, 2], 1), true, &dynreq(7));
    ha.handle_bu(
        t0,
        a6(MN),
        udp([192, 0, 2, 10], 4191),
        true,
        &bu(
            3,
            AH,
            100,
            vec![hoa_opt(32, false, [198, 51, 100, 5]), coa4([192, 0, 2, 10])],
        ),
    );
    let t1 = t0 + Duration::from_secs(100);
    let saved = serde_json::to_string(&ha.snapshot(t1)).unwrap();
    // A new process, another clock.
    let t2 = Instant::now() + Duration::from_secs(5000);
    let snap: Snapshot = serde_json::from_str(&saved).unwrap();
    let mut back = BindingCache::restore(cfg(), &snap, t2);
    assert_eq!(back.len(), 2);
    assert_eq!(back.tunnel_for_v6(a6(MN)), ha.tunnel_for_v6(a6(MN)));
    assert_eq!(
        back.tunnel_for_v4(Ipv4Addr::new(198, 51, 100, 100))
            .map(|x| x.0),
        Some(a6(MN2))
    );
    assert_eq!(
        back.binding(a6(MN2)).unwrap().expires,
        t2 + Duration::from_secs(300)
    );
    // The sequence window survives: a replayed BU is refused.
    let o = back
        .handle_bu(t2, a6(MN2), udp([203, 0, 113, 2], 1), true, &dynreq(7))
        .unwrap();
    assert_eq!(ba_of(&o).0, status::SEQ_OUT_OF_WINDOW);
    // The pool knows the restored allocation: the next MN gets the other address.
    let o = back
        .handle_bu(t2, a6(MN3), udp([203, 0, 113, 2], 2), true, &dynreq(1))
        .unwrap();
    assert_eq!(ack(&o).unwrap().2, Ipv4Addr::new(198, 51, 100, 101));
    // Entries that no longer fit the configuration are left out.
    let mut other = cfg();
    other.static_ipv4.clear();
    let back = BindingCache::restore(other, &snap, t2);
    assert!(back.binding(a6(MN)).is_none());
    assert!(back.binding(a6(MN2)).is_some());
}
