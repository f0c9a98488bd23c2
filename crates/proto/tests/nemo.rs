//! Mobile routers (NEMO Basic Support, RFC 3963, with the IPv4 mobile network prefixes of
//! RFC 5555 section 3.1.1) on the whole DSMIPv6 nodes in virtual time: BUs with the R flag
//! in implicit and explicit mode, the home agent's Prefix Table checks (statuses 139-143),
//! forwarding of the bound prefixes into the router's tunnel across moves, the ingress
//! checks on both ends (RFC 3963 section 9), and the routes coming and going.

use m6t_proto::dsmip::binding_cache::{status, Arrival, BindingCache, HaConfig, Snapshot, Tunnel};
use m6t_proto::dsmip::home_agent::{HaCounter, HaEvent, HomeAgent};
use m6t_proto::dsmip::mobile_node::{MnCounter, MnEvent, MobileNode};
use m6t_proto::dsmip::tif::Encap;
use m6t_proto::dsmip::update_list::{Ipv4HoaRequest, MnConfig, TunnelMode};
use m6t_proto::dsmip::{NetPrefix, Outbound, Transmit, Verdict};
use m6t_wire::mh::{ba_flags, bu_flags, MhMessage, MhRepr, MobilityOption};
use m6t_wire::mip6;
use m6t_wire::Ipv6Repr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn np(s: &str) -> NetPrefix {
    s.parse().unwrap()
}

const MR: &str = "2001:db8:1::a";
const HA6: &str = "2001:db8:1::1";
const HA4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const NAT_PUB: &str = "203.0.113.2:40000";
const CN6: &str = "2001:db8:2::10";
const CN4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
const NET6: &str = "2001:db8:77::/48";
const NET4: &str = "198.51.100.128/25";
const HOST6: &str = "2001:db8:77:1::5";
const HOST4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 130);

fn ha_cfg() -> HaConfig {
    let mut c = HaConfig::new("2001:db8:1::/64".parse().unwrap());
    c.accept_unprotected = true;
    c.static_ipv4
        .insert(a6(MR), (Ipv4Addr::new(198, 51, 100, 10), 32));
    c.routers.insert(a6(MR), vec![np(NET6), np(NET4)]);
    c
}

fn mr(explicit: bool) -> MobileNode {
    let mut c = MnConfig::new(a6(MR), a6(HA6), HA4);
    c.ipv4_hoa = Ipv4HoaRequest::Static(Ipv4Addr::new(198, 51, 100, 10));
    c.router = true;
    c.mobile_network = vec![np(NET6), np(NET4)];
    c.explicit_prefixes = explicit;
    MobileNode::new(c, 100)
}

/// The Mobility Header of a BU or BA packet.
fn mh_of(data: &[u8]) -> MhRepr {
    mip6::parse(data).expect("signalling").mh
}

/// Carries every queued BU to the HA (through the NAT at `nat`) and every BA back; returns
/// the BUs and BAs seen.
fn exchange(
    m: &mut MobileNode,
    h: &mut HomeAgent,
    now: Instant,
    nat: SocketAddrV4,
) -> (Vec<MhRepr>, Vec<MhRepr>) {
    let (mut bus, mut bas) = (Vec::new(), Vec::new());
    while let Some(t) = m.poll_transmit() {
        match t {
            Transmit::Udp { data, .. } => {
                bus.push(mh_of(&data));
                assert_eq!(h.handle_udp(now, nat, &mut data.clone()), Verdict::Handled);
            }
            Transmit::Ipv6 { data, .. } => {
                let _ = h.handle_captured(now, &mut data.clone());
            }
            Transmit::EspUdp { .. } => panic!("ESP keep-alive without IPsec"),
        }
    }
    while let Some(t) = h.poll_transmit() {
        match t {
            Transmit::Udp { data, .. } => {
                bas.push(mh_of(&data));
                let _ = m.handle_udp(now, SocketAddrV4::new(HA4, 4191), &mut data.clone());
            }
            Transmit::Ipv6 { data, .. } => {
                let _ = m.handle_captured(now, &mut data.clone());
            }
            Transmit::EspUdp { .. } => panic!("ESP keep-alive from the home agent"),
        }
    }
    (bus, bas)
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

fn events(h: &mut HomeAgent) -> Vec<HaEvent> {
    std::iter::from_fn(|| h.poll_event()).collect()
}

fn bu_flags_of(m: &MhRepr) -> u16 {
    match m.msg {
        MhMessage::Bu { flags, .. } => flags,
        _ => panic!("not a BU"),
    }
}

fn ba_of(m: &MhRepr) -> (u8, u8) {
    match m.msg {
        MhMessage::Ba { status, flags, .. } => (status, flags),
        _ => panic!("not a BA"),
    }
}

fn routed(ev: &[HaEvent]) -> Vec<NetPrefix> {
    ev.iter()
        .filter_map(|e| match e {
            HaEvent::Routed { prefix, .. } => Some(*prefix),
            _ => None,
        })
        .collect()
}

fn unrouted(ev: &[HaEvent]) -> Vec<NetPrefix> {
    ev.iter()
        .filter_map(|e| match e {
            HaEvent::Unrouted { prefix, .. } => Some(*prefix),
            _ => None,
        })
        .collect()
}

#[test]
fn explicit_mode_forwards_both_prefixes_through_a_nat_and_across_moves() {
    let t0 = Instant::now();
    let mut h = HomeAgent::new(ha_cfg(), a6(HA6));
    let mut m = mr(true);
    let nat: SocketAddrV4 = NAT_PUB.parse().unwrap();
    m.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    let (bus, bas) = exchange(&mut m, &mut h, t0, nat);
    // The BU: R and H, the router's own IPv4 home address first, then its prefixes.
    assert_eq!(bus.len(), 1);
    assert_ne!(bu_flags_of(&bus[0]) & bu_flags::R, 0);
    let opts = &bus[0].options;
    assert!(matches!(
        opts[0],
        MobilityOption::Ipv4HomeAddress {
            p: false,
            prefix_len: 32,
            ..
        }
    ));
    assert!(opts.contains(&MobilityOption::MobileNetworkPrefix {
        len: 48,
        prefix: a6("2001:db8:77::")
    }));
    assert!(opts.contains(&MobilityOption::Ipv4HomeAddress {
        prefix_len: 25,
        p: true,
        addr: Ipv4Addr::new(198, 51, 100, 128)
    }));
    // The BA: accepted with R, the own address acknowledged first, then the prefix.
    let (st, fl) = ba_of(&bas[0]);
    assert_eq!(st, status::ACCEPTED);
    assert_ne!(fl & ba_flags::R, 0);
    let acks: Vec<_> = bas[0]
        .options
        .iter()
        .filter_map(|o| match o {
            MobilityOption::Ipv4AddressAck {
                status,
                prefix_len,
                addr,
            } => Some((*status, *prefix_len, *addr)),
            _ => None,
        })
        .collect();
    assert_eq!(
        acks,
        vec![
            (0, 32, Ipv4Addr::new(198, 51, 100, 10)),
            (0, 25, Ipv4Addr::new(198, 51, 100, 128))
        ]
    );
    let r = match m.poll_event() {
        Some(MnEvent::Registered { registration, .. }) => registration,
        e => panic!("{e:?}"),
    };
    assert!(r.router);
    assert_eq!(r.mode, TunnelMode::Udp);
    assert_eq!(r.ipv4_hoa, Some(Ipv4Addr::new(198, 51, 100, 10)));
    let ev = events(&mut h);
    assert_eq!(routed(&ev), vec![np(NET6), np(NET4)]);

    // CN -> host behind the router: the HA tunnels to the NAT, the MR takes it.
    for down in [packet6(CN6, HOST6), packet4(CN4, HOST4)] {
        assert_eq!(
            h.handle_from_tun(t0, &down),
            Outbound::Send(Encap::Udp {
                to: nat,
                tlv: false
            })
        );
        assert_eq!(
            m.handle_udp(t0, SocketAddrV4::new(HA4, 4191), &mut down.clone()),
            Verdict::ToTun(&down)
        );
    }
    // Outside the prefixes: no binding at the HA, not for the router at the MR.
    let stray = packet6(CN6, "2001:db8:78::5");
    assert_eq!(
        h.handle_from_tun(t0, &stray),
        Outbound::Drop(HaCounter::DropNoBinding)
    );
    assert_eq!(
        m.handle_udp(t0, SocketAddrV4::new(HA4, 4191), &mut stray.clone()),
        Verdict::Drop(MnCounter::DropNotForUs)
    );

    // Host -> CN: the MR tunnels sources inside its prefixes only; the HA takes them from
    // the router's tunnel only, and counts the rest from there as ingress filtering.
    for up in [packet6(HOST6, CN6), packet4(HOST4, CN4)] {
        assert!(matches!(
            m.handle_from_tun(t0, &up),
            Outbound::Send(Encap::Udp { .. })
        ));
        assert_eq!(h.handle_udp(t0, nat, &mut up.clone()), Verdict::ToTun(&up));
    }
    assert_eq!(
        m.handle_from_tun(t0, &packet6("2001:db8:78::5", CN6)),
        Outbound::Drop(MnCounter::DropWrongSource)
    );
    for spoof in [
        packet6("2001:db8:78::5", CN6),
        packet4(Ipv4Addr::new(198, 51, 100, 127), CN4),
    ] {
        assert_eq!(
            h.handle_udp(t0, nat, &mut spoof.clone()),
            Verdict::Drop(HaCounter::DropIngressFilter)
        );
    }
    let other: SocketAddrV4 = "203.0.113.66:40000".parse().unwrap();
    assert_eq!(
        h.handle_udp(t0, other, &mut packet6(HOST6, CN6)),
        Verdict::Drop(HaCounter::DropNotBound)
    );
    assert_eq!(h.counters().get(HaCounter::DropIngressFilter), 2);

    // A new IPv4 address behind another NAT: same prefixes, no route churn.
    let t1 = t0 + Duration::from_secs(5);
    let nat2: SocketAddrV4 = "203.0.113.3:40001".parse().unwrap();
    m.handle_coas(t1, None, Some(Ipv4Addr::new(192, 0, 2, 11)));
    exchange(&mut m, &mut h, t1, nat2);
    let ev = events(&mut h);
    assert!(routed(&ev).is_empty() && unrouted(&ev).is_empty(), "{ev:?}");
    assert_eq!(
        h.handle_from_tun(t1, &packet6(CN6, HOST6)),
        Outbound::Send(Encap::Udp {
            to: nat2,
            tlv: false
        })
    );
    // The old NAT is no router's any more.
    assert_eq!(
        h.handle_udp(t1, nat, &mut packet6("2001:db8:78::5", CN6)),
        Verdict::Drop(HaCounter::DropNotBound)
    );

    // To an IPv6 network: the prefixes follow into the IPv6 tunnel.
    let t2 = t1 + Duration::from_secs(5);
    let coa6 = a6("2001:db8:5::10");
    m.handle_coas(t2, Some(coa6), None);
    exchange(&mut m, &mut h, t2, nat2);
    assert_eq!(
        h.binding_cache().binding(a6(MR)).unwrap().tunnel,
        Tunnel::Ipv6 { coa: coa6 }
    );
    assert!(matches!(
        h.handle_from_tun(t2, &packet4(CN4, HOST4)),
        Outbound::Send(Encap::Ipv6 { to, .. }) if to == coa6
    ));
    let up = packet6(HOST6, CN6);
    assert_eq!(
        h.handle_ip_in_ip(t2, IpAddr::V6(coa6), &mut up.clone()),
        Verdict::ToTun(&up)
    );
    assert_eq!(
        h.handle_ip_in_ip(t2, IpAddr::V6(coa6), &mut packet6("2001:db8:78::1", CN6)),
        Verdict::Drop(HaCounter::DropIngressFilter)
    );

    // Deregistration (lifetime 0) withdraws both prefixes.
    let ev = {
        let bu = MhRepr {
            msg: MhMessage::Bu {
                seq: 200,
                flags: bu_flags::A | bu_flags::H | bu_flags::R,
                lifetime: 0,
            },
            options: vec![MobilityOption::Ipv4CareOfAddress(Ipv4Addr::new(
                192, 0, 2, 11,
            ))],
        };
        let mut buf = vec![0u8; 200];
        let n = mip6::emit(a6(MR), a6(HA6), mip6::HomeIn::Source, &bu, &mut buf).unwrap();
        buf.truncate(n);
        assert_eq!(h.handle_udp(t2, nat2, &mut buf), Verdict::Handled);
        events(&mut h)
    };
    assert_eq!(unrouted(&ev), vec![np(NET6), np(NET4)]);
    assert_eq!(
        h.handle_from_tun(t2, &packet6(CN6, HOST6)),
        Outbound::Drop(HaCounter::DropNoBinding)
    );
}

#[test]
fn implicit_mode_binds_the_configured_prefixes_until_the_lifetime_ends() {
    let t0 = Instant::now();
    let mut h = HomeAgent::new(ha_cfg(), a6(HA6));
    let mut m = mr(false);
    let nat: SocketAddrV4 = NAT_PUB.parse().unwrap();
    m.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    let (bus, bas) = exchange(&mut m, &mut h, t0, nat);
    assert_ne!(bu_flags_of(&bus[0]) & bu_flags::R, 0);
    assert!(!bus[0].options.iter().any(|o| matches!(
        o,
        MobilityOption::MobileNetworkPrefix { .. }
            | MobilityOption::Ipv4HomeAddress { p: true, .. }
    )));
    assert_eq!(ba_of(&bas[0]), (status::ACCEPTED, ba_flags::R));
    assert_eq!(routed(&events(&mut h)), vec![np(NET6), np(NET4)]);
    assert!(matches!(
        h.handle_from_tun(t0, &packet4(CN4, HOST4)),
        Outbound::Send(_)
    ));
    // The router stops refreshing (no more care-of address): the binding ends, and with it
    // the routes, whose Unrouted events come before the Unbound.
    m.handle_coas(t0, None, None);
    let end = h.poll_timeout().unwrap();
    h.handle_timeout(end);
    let ev = events(&mut h);
    assert_eq!(unrouted(&ev), vec![np(NET6), np(NET4)]);
    assert!(matches!(ev.last(), Some(HaEvent::Unbound { .. })));
    assert!(h.binding_cache().mnp_owner(a6(HOST6).into()).is_none());
}

/// A BU straight into a binding cache; returns the BA's status and flags.
fn bu(
    bc: &mut BindingCache,
    now: Instant,
    seq: u16,
    flags: u16,
    options: Vec<MobilityOption>,
) -> (u8, u8) {
    let m = MhRepr {
        msg: MhMessage::Bu {
            seq,
            flags: flags | bu_flags::A,
            lifetime: 100,
        },
        options: [
            vec![MobilityOption::Ipv4CareOfAddress(Ipv4Addr::new(
                192, 0, 2, 10,
            ))],
            options,
        ]
        .concat(),
    };
    let arrival = Arrival::Udp {
        src: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 4191),
    };
    ba_of(&bc.handle_bu(now, a6(MR), arrival, true, &m).unwrap().ba)
}

#[test]
fn prefix_table_refusals_140_to_143_and_139() {
    let t0 = Instant::now();
    let hr = bu_flags::H | bu_flags::R;
    let mnp = |p: &str| {
        let NetPrefix::V6(prefix, len) = np(p) else {
            unreachable!()
        };
        MobilityOption::MobileNetworkPrefix { len, prefix }
    };
    // Not configured as a router: 140; nor without H.
    let mut bc = BindingCache::new(HaConfig {
        routers: Default::default(),
        ..ha_cfg()
    });
    assert_eq!(bu(&mut bc, t0, 1, hr, vec![]).0, status::MR_NOT_PERMITTED);
    let mut bc = BindingCache::new(ha_cfg());
    assert_eq!(
        bu(&mut bc, t0, 1, bu_flags::R, vec![]).0,
        status::MR_NOT_PERMITTED
    );
    // Invalid prefixes: link-local, multicast, length 0, IPv4 length 0 or host bits.
    for o in [
        mnp("fe80::/64"),
        mnp("ff0e::/16"),
        MobilityOption::MobileNetworkPrefix {
            len: 0,
            prefix: Ipv6Addr::UNSPECIFIED,
        },
        MobilityOption::MobileNetworkPrefix {
            len: 48,
            prefix: a6("2001:db8:77::1"),
        },
        MobilityOption::Ipv4HomeAddress {
            prefix_len: 0,
            p: true,
            addr: Ipv4Addr::new(198, 51, 100, 128),
        },
        MobilityOption::Ipv4HomeAddress {
            prefix_len: 25,
            p: true,
            addr: Ipv4Addr::new(198, 51, 100, 129),
        },
    ] {
        assert_eq!(
            bu(&mut bc, t0, 2, hr, vec![o.clone()]).0,
            status::INVALID_PREFIX,
            "{o:?}"
        );
    }
    // Outside the Prefix Table (or wider than what it allows): 142; inside it: accepted.
    for p in ["2001:db8:78::/48", "2001:db8::/32", "198.51.100.0/24"] {
        let o = match np(p) {
            NetPrefix::V6(prefix, len) => MobilityOption::MobileNetworkPrefix { len, prefix },
            NetPrefix::V4(addr, prefix_len) => MobilityOption::Ipv4HomeAddress {
                prefix_len,
                p: true,
                addr,
            },
        };
        assert_eq!(
            bu(&mut bc, t0, 3, hr, vec![o]).0,
            status::PREFIX_NOT_AUTHORIZED,
            "{p}"
        );
    }
    assert!(bc.is_empty());
    assert_eq!(
        bu(&mut bc, t0, 4, hr, vec![mnp("2001:db8:77:5::/64")]),
        (0, ba_flags::R)
    );
    let b = bc.binding(a6(MR)).unwrap();
    assert_eq!(b.mnp, vec![np("2001:db8:77:5::/64")]);
    // A refresh without it drops that prefix (RFC 3963 section 6.2), implicit binds all.
    assert_eq!(bu(&mut bc, t0, 5, hr, vec![]), (0, ba_flags::R));
    assert_eq!(bc.binding(a6(MR)).unwrap().mnp, vec![np(NET6), np(NET4)]);
    assert_eq!(bc.mnp_owner(a6("2001:db8:77:5::1").into()), Some(a6(MR)));
    // 0.0.0.0 with P asks for the configured IPv4 prefixes.
    let any4 = MobilityOption::Ipv4HomeAddress {
        prefix_len: 25,
        p: true,
        addr: Ipv4Addr::UNSPECIFIED,
    };
    assert_eq!(bu(&mut bc, t0, 6, hr, vec![any4]).0, 0);
    assert_eq!(bc.binding(a6(MR)).unwrap().mnp, vec![np(NET4)]);
    // The registration type does not change while bound: 139; a host may not become one.
    assert_eq!(
        bu(&mut bc, t0, 7, bu_flags::H, vec![]).0,
        status::REG_TYPE_CHANGE
    );
    assert_eq!(bc.binding(a6(MR)).unwrap().mnp, vec![np(NET4)]);
    // Implicit mode without configured prefixes: 143.
    let mut cfg = ha_cfg();
    cfg.routers.insert(a6(MR), vec![]);
    let mut bc = BindingCache::new(cfg);
    assert_eq!(bu(&mut bc, t0, 1, hr, vec![]).0, status::FORWARDING_FAILED);
    assert!(bc.is_empty());
}

#[test]
fn router_bindings_survive_a_restart_only_with_authorised_prefixes() {
    let t0 = Instant::now();
    let mut bc = BindingCache::new(ha_cfg());
    assert_eq!(bu(&mut bc, t0, 1, bu_flags::H | bu_flags::R, vec![]).0, 0);
    let snap = bc.snapshot(t0);
    let json = serde_json::to_string(&snap).unwrap();
    let back: Snapshot = serde_json::from_str(&json).unwrap();
    let mut h = HomeAgent::restore(ha_cfg(), a6(HA6), &back, t0);
    let ev = events(&mut h);
    assert!(matches!(ev[0], HaEvent::Bound { .. }));
    assert_eq!(routed(&ev), vec![np(NET6), np(NET4)]);
    assert!(matches!(
        h.handle_from_tun(t0, &packet6(CN6, HOST6)),
        Outbound::Send(_)
    ));
    // The prefix taken from this router in the configuration: the binding is not restored.
    let mut cfg = ha_cfg();
    cfg.routers.insert(a6(MR), vec![np(NET6)]);
    let h = HomeAgent::restore(cfg, a6(HA6), &back, t0);
    assert!(h.binding_cache().is_empty());
    // A host's saved binding from before routers existed still loads (no new fields).
    let old = r#"{"bindings":[{"hoa":"2001:db8:1::b","tunnel":{"kind":"ipv6","coa":"2001:db8:5::1"},"seq":1,"remaining_ms":5000,"ipv4":null,"nat":false,"dynamic":false}]}"#;
    let s: Snapshot = serde_json::from_str(old).unwrap();
    assert_eq!(BindingCache::restore(ha_cfg(), &s, t0).len(), 1);
}

mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const ROUTERS: [&str; 3] = ["2001:db8:1::a", "2001:db8:1::b", "2001:db8:1::c"];
    /// Each router's Prefix Table: one IPv6 and one IPv4 prefix, disjoint between routers.
    fn table(i: usize) -> Vec<NetPrefix> {
        vec![
            np(&format!("2001:db8:7{i}::/48")),
            np(&format!("198.51.100.{}/28", 64 + 16 * i)),
        ]
    }
    /// What a BU may ask for: the table's prefixes, a longer one inside, one outside, a
    /// link-local one.
    fn candidates(i: usize) -> Vec<NetPrefix> {
        let mut c = table(i);
        c.push(np(&format!("2001:db8:7{i}:5::/64")));
        c.push(np("2001:db8:99::/48"));
        c.push(np("fe80::/64"));
        c
    }

    fn cfg() -> HaConfig {
        let mut c = HaConfig::new("2001:db8:1::/64".parse().unwrap());
        c.accept_unprotected = true;
        for (i, r) in ROUTERS.iter().enumerate() {
            c.routers.insert(a6(r), table(i));
        }
        c
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Router i registers: R flag or not, lifetime (0: deregistration), the candidate
        /// prefixes picked by the mask (none: implicit mode).
        Bu {
            i: usize,
            r: bool,
            lifetime: u16,
            mask: u8,
        },
        /// Time passes, in seconds.
        Wait(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3usize, any::<bool>(), prop_oneof![Just(0u16), 1..5u16], any::<u8>())
                .prop_map(|(i, r, lifetime, mask)| Op::Bu { i, r, lifetime, mask }),
            1 => (1..30u16).prop_map(Op::Wait),
        ]
    }

    fn bu_packet(i: usize, seq: u16, r: bool, lifetime: u16, mask: u8) -> Vec<u8> {
        let mut options = vec![MobilityOption::Ipv4CareOfAddress(Ipv4Addr::new(
            192,
            0,
            2,
            10 + i as u8,
        ))];
        for (k, p) in candidates(i).iter().enumerate() {
            if mask & (1 << k) != 0 {
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
        let flags = bu_flags::A | bu_flags::H | if r { bu_flags::R } else { 0 };
        let bu = MhRepr {
            msg: MhMessage::Bu {
                seq,
                flags,
                lifetime,
            },
            options,
        };
        let mut buf = vec![0u8; 400];
        let n = mip6::emit(a6(ROUTERS[i]), a6(HA6), mip6::HomeIn::Source, &bu, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever BUs and timeouts come, the routes the driver was told about are exactly
        /// the bound prefixes, each bound prefix leads to its router's tunnel, nothing else
        /// does, and every refusal is one of RFC 3963's statuses.
        #[test]
        fn routes_indexes_and_bindings_agree(ops in proptest::collection::vec(op(), 1..40)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut h = HomeAgent::new(cfg(), a6(HA6));
            let mut seq = [1u16; 3];
            let mut routed: BTreeSet<NetPrefix> = BTreeSet::new();
            for o in ops {
                match o {
                    Op::Bu { i, r, lifetime, mask } => {
                        seq[i] += 1;
                        let mut p = bu_packet(i, seq[i], r, lifetime, mask);
                        let peer = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10 + i as u8), 4191);
                        prop_assert_eq!(h.handle_udp(now, peer, &mut p), Verdict::Handled);
                        while let Some(t) = h.poll_transmit() {
                            let Transmit::Udp { data, .. } = t else { panic!() };
                            let (st, fl) = ba_of(&mh_of(&data));
                            prop_assert!(
                                st == 0 || (139..=143).contains(&st),
                                "status {}", st
                            );
                            if st == 0 && lifetime > 0 {
                                prop_assert_eq!(fl & ba_flags::R != 0, r);
                            }
                        }
                    }
                    Op::Wait(s) => {
                        now += Duration::from_secs(u64::from(s));
                        h.handle_timeout(now);
                    }
                }
                for e in events(&mut h) {
                    match e {
                        HaEvent::Routed { prefix, .. } => prop_assert!(routed.insert(prefix)),
                        HaEvent::Unrouted { prefix, .. } => prop_assert!(routed.remove(&prefix)),
                        _ => {}
                    }
                }
                let bc = h.binding_cache();
                let mut bound = BTreeSet::new();
                for (i, r) in ROUTERS.iter().enumerate() {
                    let b = bc.binding(a6(r));
                    for p in b.map(|b| b.mnp.clone()).unwrap_or_default() {
                        prop_assert!(b.unwrap().router);
                        prop_assert_eq!(bc.mnp_owner(p.addr()), Some(a6(r)));
                        bound.insert(p);
                    }
                    for p in candidates(i) {
                        let inside = bound.iter().any(|q| q.contains(p.addr()));
                        prop_assert_eq!(bc.mnp_owner(p.addr()).is_some(), inside, "{}", p);
                    }
                }
                prop_assert_eq!(&routed, &bound);
            }
        }
    }
}
