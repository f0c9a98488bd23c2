//! The DSMIPv6 nodes with IPsec between their two modules (seed 001 figure 2), in virtual
//! time: BU and BA protected by ESP in transport mode as RFC 4877 section 6.1 configures
//! them, behind a NAT (inside UDP 4191) and from an IPv6 care-of address (after the Home
//! Address option and the type 2 Routing Header, RFC 3776 sections 3.1-3.2); NAT detection
//! still sees the outer source recorded before IPsec (seed 001 req. #4); unprotected,
//! wrongly keyed, replayed and misdirected BUs get no binding.

use m6t_ipsec::spd::PROTO_MH;
use m6t_ipsec::{
    Action, AddrSel, Algorithm, Direction, Ipsec, IpsecDrop, Mode, Policy, SaConfig, SaParams,
    Selectors, Spd,
};
use m6t_proto::dsmip::binding_cache::{HaConfig, Tunnel};
use m6t_proto::dsmip::home_agent::{HaCounter, HaEvent, HomeAgent};
use m6t_proto::dsmip::mobile_node::{MnCounter, MnEvent, MobileNode};
use m6t_proto::dsmip::update_list::{MnConfig, TunnelMode};
use m6t_proto::dsmip::{Transmit, Verdict};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Instant;

const HOA: &str = "2001:db8:1::a";
const HOA2: &str = "2001:db8:1::b";
const HA6: &str = "2001:db8:1::1";
const HA4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const COA4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NAT_PUB: &str = "203.0.113.2:40000";
const BU: u8 = 5;
const BA: u8 = 6;

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn sa(name: &str, direction: Direction, spi: u32, key: u8) -> SaConfig {
    let algorithm = Algorithm::AesCbc128HmacSha256;
    SaConfig {
        name: name.into(),
        direction,
        params: SaParams {
            spi,
            mode: Mode::Transport,
            algorithm,
            esn: false,
        },
        keymat: (0..algorithm.keymat_len()).map(|i| key ^ i as u8).collect(),
        tunnel: None,
    }
}

/// RFC 4877 section 6.1 for the mobile nodes `hoas` (SPIs 0x100 + 2i out of the MN, 0x101
/// + 2i into it), on a mobile node (`mn`, one home address) or the home agent.
fn ipsec(mn: bool, hoas: &[&str], key: u8) -> Ipsec {
    let mut policies = Vec::new();
    let mut sas = Vec::new();
    for (i, hoa) in hoas.iter().enumerate() {
        let hoa: IpAddr = hoa.parse().unwrap();
        let ha: IpAddr = HA6.parse().unwrap();
        let (spi_a, spi_b) = (0x100 + 2 * i as u32, 0x101 + 2 * i as u32);
        let (local, remote, lt, rt) = if mn {
            (hoa, ha, BU, BA)
        } else {
            (ha, hoa, BA, BU)
        };
        let (out, inb) = if mn {
            (
                sa("sa1", Direction::Out, spi_a, key),
                sa("sa2", Direction::In, spi_b, key + 1),
            )
        } else {
            (
                sa("sa2", Direction::Out, spi_b, key + 1),
                sa("sa1", Direction::In, spi_a, key),
            )
        };
        policies.push(Policy {
            name: format!("bu-ba-{i}"),
            selectors: Selectors {
                local: AddrSel::addr(local),
                remote: AddrSel::addr(remote),
                proto: Some(PROTO_MH),
                local_type: Some(lt),
                remote_type: Some(rt),
                ..Selectors::ANY
            },
            action: Action::Protect {
                out: Some(sas.len()),
                inbound: Some(sas.len() + 1),
            },
        });
        sas.push(out);
        sas.push(inb);
    }
    let spd = Spd {
        policies,
        unmatched: Action::Bypass,
    };
    let mut i = Ipsec::new(spd, &sas, 42).unwrap();
    i.reserve_unlimited();
    i
}

fn ha() -> HomeAgent {
    let mut c = HaConfig::new("2001:db8:1::/64".parse().unwrap());
    c.ipv4_pool = vec![Ipv4Addr::new(198, 51, 100, 10)];
    HomeAgent::new(c, a6(HA6)).with_ipsec(ipsec(false, &[HOA, HOA2], 1))
}

fn mn(hoa: &str, key: u8) -> MobileNode {
    MobileNode::new(MnConfig::new(a6(hoa), a6(HA6), HA4), 100).with_ipsec(ipsec(true, &[hoa], key))
}

/// What crossed the wire in one exchange.
#[derive(Default)]
struct Wire {
    bus: Vec<Vec<u8>>,
    bas: Vec<Vec<u8>>,
}

/// Carries every queued BU to the HA (through the NAT when `nat`) and every BA back.
fn exchange(m: &mut MobileNode, h: &mut HomeAgent, now: Instant, nat: bool) -> Wire {
    let mut w = Wire::default();
    while let Some(t) = m.poll_transmit() {
        match t {
            Transmit::Udp { from, data, .. } => {
                let src = if nat {
                    NAT_PUB.parse().unwrap()
                } else {
                    SocketAddrV4::new(from.unwrap(), 4191)
                };
                w.bus.push(data.clone());
                let _ = h.handle_udp(now, src, &mut data.clone());
            }
            Transmit::Ipv6 { data, .. } => {
                w.bus.push(data.clone());
                let _ = h.handle_captured(now, &mut data.clone());
            }
            Transmit::EspUdp { data, .. } => {
                let from = "203.0.113.2:40001".parse().unwrap();
                let outer = m6t_proto::dsmip::tif::Outer::Udp(from);
                let _ = h.handle_esp(now, outer, &mut data.clone());
            }
        }
    }
    while let Some(t) = h.poll_transmit() {
        let (Transmit::Udp { data, .. }
        | Transmit::Ipv6 { data, .. }
        | Transmit::EspUdp { data, .. }) = &t;
        w.bas.push(data.clone());
        match t {
            Transmit::Udp { data, .. } => {
                let _ = m.handle_udp(now, SocketAddrV4::new(HA4, 4191), &mut data.clone());
            }
            Transmit::Ipv6 { data, .. } => {
                let _ = m.handle_captured(now, &mut data.clone());
            }
            Transmit::EspUdp { .. } => panic!("the home agent sends no keep-alive"),
        }
    }
    w
}

fn registered(m: &mut MobileNode) -> Option<TunnelMode> {
    let mut last = None;
    while let Some(e) = m.poll_event() {
        if let MnEvent::Registered { registration, .. } = e {
            last = Some(registration.mode);
        }
    }
    last
}

/// The Next Header that follows the headers before ESP's place: 50 when ESP is there.
fn after_home_headers(ipv6: &[u8]) -> u8 {
    match ipv6[6] {
        60 | 43 => ipv6[40],
        nh => nh,
    }
}

#[test]
fn behind_a_nat_the_bu_and_ba_travel_in_esp_and_nat_detection_still_works() {
    let t0 = Instant::now();
    let (mut h, mut m) = (ha(), mn(HOA, 1));
    m.handle_coas(t0, None, Some(COA4));
    let w = exchange(&mut m, &mut h, t0, true);
    // Req. #4: the outer source recorded before IPsec differs from the IPv4 CoA option: UDP.
    assert_eq!(registered(&mut m), Some(TunnelMode::Udp));
    assert!(matches!(
        h.poll_event(),
        Some(HaEvent::Bound { tunnel: Tunnel::Udp { peer }, .. }) if peer == NAT_PUB.parse().unwrap()
    ));
    assert_eq!((w.bus.len(), w.bas.len()), (1, 1));
    // Inside UDP the BU's IPv6 header is followed by ESP, not by a Mobility Header.
    assert_eq!(w.bus[0][6], 50);
    assert_eq!(&w.bus[0][40..44], &0x100u32.to_be_bytes());
    assert_eq!(w.bas[0][6], 50);
    assert_eq!(&w.bas[0][40..44], &0x101u32.to_be_bytes());
    assert_eq!(h.counters().get(HaCounter::BuAccepted), 1);
    assert_eq!(m.unanswered_bus(), 0);
}

#[test]
fn without_a_nat_detection_says_no_nat_through_esp_too() {
    let t0 = Instant::now();
    let (mut h, mut m) = (ha(), mn(HOA, 1));
    m.handle_coas(t0, None, Some(COA4));
    exchange(&mut m, &mut h, t0, false);
    assert_eq!(registered(&mut m), Some(TunnelMode::Ipv4));
}

#[test]
fn from_an_ipv6_care_of_address_esp_follows_the_home_address_option_and_the_routing_header() {
    let t0 = Instant::now();
    let (mut h, mut m) = (ha(), mn(HOA, 1));
    m.handle_coas(t0, Some(a6("2001:db8:5::10")), None);
    let w = exchange(&mut m, &mut h, t0, false);
    assert_eq!(registered(&mut m), Some(TunnelMode::Ipv6));
    assert_eq!((w.bus[0][6], after_home_headers(&w.bus[0])), (60, 50));
    assert_eq!((w.bas[0][6], after_home_headers(&w.bas[0])), (43, 50));
}

#[test]
fn an_unprotected_bu_gets_no_answer_and_no_binding() {
    let t0 = Instant::now();
    let mut h = ha();
    let mut plain = MobileNode::new(MnConfig::new(a6(HOA), a6(HA6), HA4), 100);
    plain.handle_coas(t0, None, Some(COA4));
    let w = exchange(&mut plain, &mut h, t0, true);
    assert_eq!((w.bus.len(), w.bas.len()), (1, 0));
    assert!(h.binding_cache().is_empty());
    let ipsec = h.ipsec().unwrap();
    assert_eq!(ipsec.dropped(IpsecDrop::Unprotected), 1);
    assert_eq!(h.counters().get(HaCounter::DropIpsec), 1);
}

#[test]
fn a_wrong_key_gets_no_binding_and_the_mobile_node_counts_unanswered_bus() {
    let t0 = Instant::now();
    let (mut h, mut m) = (ha(), mn(HOA, 7));
    m.handle_coas(t0, None, Some(COA4));
    let w = exchange(&mut m, &mut h, t0, true);
    assert_eq!(w.bas.len(), 0);
    for _ in 0..3 {
        let now = m.poll_timeout().unwrap();
        m.handle_timeout(now);
        exchange(&mut m, &mut h, now, true);
    }
    assert!(h.binding_cache().is_empty());
    assert_eq!(
        h.ipsec()
            .unwrap()
            .dropped(IpsecDrop::Esp(m6t_ipsec::EspDrop::BadIcv)),
        4
    );
    assert_eq!(m.unanswered_bus(), 4);
    assert_eq!(registered(&mut m), None);
}

#[test]
fn a_replayed_bu_is_dropped() {
    let t0 = Instant::now();
    let (mut h, mut m) = (ha(), mn(HOA, 1));
    m.handle_coas(t0, None, Some(COA4));
    let w = exchange(&mut m, &mut h, t0, true);
    let nat: SocketAddrV4 = NAT_PUB.parse().unwrap();
    let mut again = w.bus[0].clone();
    let v = h.handle_udp(t0, nat, &mut again);
    assert_eq!(v, Verdict::Drop(HaCounter::DropIpsec));
    assert_eq!(
        h.ipsec()
            .unwrap()
            .dropped(IpsecDrop::Esp(m6t_ipsec::EspDrop::Replay)),
        1
    );
    assert!(h.poll_transmit().is_none());
}

/// RFC 4877 section 4.2: the second node's SA carries only BUs for the second home address.
#[test]
fn a_bu_for_another_home_address_through_my_sa_is_refused() {
    let t0 = Instant::now();
    let mut h = ha();
    let mut first = mn(HOA, 1);
    first.handle_coas(t0, None, Some(COA4));
    exchange(&mut first, &mut h, t0, true);
    let _ = h.poll_event();
    // The second node's keys and SPIs (index 1 at the HA), but its policy rewritten to
    // claim the first node's home address, as a hostile node holding those keys would.
    let hostile_sas = [
        sa("sa1", Direction::Out, 0x102, 1),
        sa("sa2", Direction::In, 0x103, 2),
    ];
    let spd = Spd {
        policies: vec![Policy {
            name: "any".into(),
            selectors: Selectors {
                proto: Some(PROTO_MH),
                ..Selectors::ANY
            },
            action: Action::Protect {
                out: Some(0),
                inbound: Some(1),
            },
        }],
        unmatched: Action::Bypass,
    };
    let mut hostile = MobileNode::new(MnConfig::new(a6(HOA), a6(HA6), HA4), 9000).with_ipsec({
        let mut i = Ipsec::new(spd, &hostile_sas, 5).unwrap();
        i.reserve_unlimited();
        i
    });
    hostile.handle_coas(t0, None, Some(Ipv4Addr::new(192, 0, 2, 66)));
    let w = exchange(&mut hostile, &mut h, t0, true);
    assert_eq!(w.bas.len(), 0);
    assert_eq!(h.ipsec().unwrap().dropped(IpsecDrop::PolicyMismatch), 1);
    assert!(
        h.poll_event().is_none(),
        "the first node's binding did not move"
    );
    assert_eq!(hostile.counters().get(MnCounter::BaReceived), 0);
}

/// A tunnel-mode SA for payload (RFC 4877 section 6.4, RFC 5555 section 5).
fn tunnel_sa(
    name: &str,
    direction: Direction,
    spi: u32,
    key: u8,
    local: &str,
    remote: &str,
) -> SaConfig {
    let mut s = sa(name, direction, spi, key);
    s.params.mode = Mode::Tunnel;
    s.tunnel = Some(m6t_ipsec::TunnelEnds {
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
    });
    s
}

/// One mobile node's signalling SAs (as [`ipsec`]) and payload SAs: tunnel mode, selected
/// last on the home addresses alone (seed 001 section 4.2.2), IPv6 and IPv4.
fn with_payload(mn: bool, v4hoa: &str) -> Ipsec {
    let base = ipsec(mn, &[HOA], 1);
    let mut policies = base.spd().policies.clone();
    let ha = HA6;
    let mut sas = vec![
        if mn {
            sa("sa1", Direction::Out, 0x100, 1)
        } else {
            sa("sa2", Direction::Out, 0x101, 2)
        },
        if mn {
            sa("sa2", Direction::In, 0x101, 2)
        } else {
            sa("sa1", Direction::In, 0x100, 1)
        },
    ];
    let (out, inb) = if mn {
        (
            tunnel_sa("sa3", Direction::Out, 0x300, 3, HOA, ha),
            tunnel_sa("sa4", Direction::In, 0x301, 4, ha, HOA),
        )
    } else {
        (
            tunnel_sa("sa4", Direction::Out, 0x301, 4, ha, HOA),
            tunnel_sa("sa3", Direction::In, 0x300, 3, HOA, ha),
        )
    };
    sas.push(out);
    sas.push(inb);
    for home in [HOA, v4hoa] {
        let home = AddrSel::addr(home.parse().unwrap());
        policies.push(Policy {
            name: format!("payload {home:?}"),
            selectors: Selectors {
                local: if mn { home } else { AddrSel::Any },
                remote: if mn { AddrSel::Any } else { home },
                ..Selectors::ANY
            },
            action: Action::Protect {
                out: Some(2),
                inbound: Some(3),
            },
        });
    }
    let spd = Spd {
        policies,
        unmatched: Action::Bypass,
    };
    let mut i = Ipsec::new(spd, &sas, 7).unwrap();
    i.reserve_unlimited();
    i
}

fn packet(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut b = vec![0u8; 48];
            m6t_wire::Ipv6Repr {
                src: s,
                dst: d,
                next_header: 59,
                payload_len: 8,
                hop_limit: 64,
            }
            .emit(&mut b)
            .unwrap();
            b
        }
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = vec![0u8; 28];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&28u16.to_be_bytes());
            p[8] = 64;
            p[9] = 17;
            p[12..16].copy_from_slice(&s.octets());
            p[16..20].copy_from_slice(&d.octets());
            p
        }
        _ => unreachable!(),
    }
}

/// A home agent with `v4hoa` in its pool and a mobile node asking for a dynamic IPv4 home
/// address, both protecting payload, the node on its IPv4 care-of address.
fn payload_pair(t0: Instant, v4hoa: &str) -> (HomeAgent, MobileNode) {
    let mut c = HaConfig::new("2001:db8:1::/64".parse().unwrap());
    c.ipv4_pool = vec![v4hoa.parse().unwrap()];
    let h = HomeAgent::new(c, a6(HA6)).with_ipsec(with_payload(false, v4hoa));
    let mut mc = MnConfig::new(a6(HOA), a6(HA6), HA4);
    mc.ipv4_hoa = m6t_proto::dsmip::update_list::Ipv4HoaRequest::Dynamic;
    let mut m = MobileNode::new(mc, 100).with_ipsec(with_payload(true, v4hoa));
    m.handle_coas(t0, None, Some(COA4));
    (h, m)
}

/// RFC 5555 section 5 behind a NAT: payload in tunnel-mode ESP over UDP 4500 both ways, for
/// both home addresses; the home agent learns the NAT's 4500 mapping from the mobile node's
/// authenticated keep-alive; cleartext payload from the home address is refused.
#[test]
fn payload_goes_in_tunnel_mode_esp_over_udp_4500_behind_a_nat() {
    use m6t_proto::dsmip::tif::Outer;
    use m6t_proto::dsmip::{Encap, Outbound};
    let t0 = Instant::now();
    let v4hoa = "198.51.100.10";
    let (mut h, mut m) = payload_pair(t0, v4hoa);
    // The BU goes to port 4191; the keep-alive queued at registration goes to 4500 and
    // comes out of the NAT from another port.
    let nat_esp: SocketAddrV4 = "203.0.113.2:40001".parse().unwrap();
    let w = exchange(&mut m, &mut h, t0, true);
    assert_eq!(w.bas.len(), 1);
    assert_eq!(registered(&mut m), Some(TunnelMode::Udp));
    let Some(Transmit::EspUdp { to, data, .. }) = m.poll_transmit() else {
        panic!("no ESP keep-alive after registration");
    };
    assert_eq!(to, SocketAddrV4::new(HA4, 4500));
    assert_eq!(&data[..4], &0x300u32.to_be_bytes());
    assert_eq!(
        h.handle_esp(t0, Outer::Udp(nat_esp), &mut data.clone()),
        Verdict::Handled
    );
    assert_eq!(h.counters().get(HaCounter::EspKeepalives), 1);

    for (src, cn) in [
        (IpAddr::from(a6(HOA)), IpAddr::from(a6("2001:db8:2::10"))),
        (v4hoa.parse().unwrap(), "198.51.100.130".parse().unwrap()),
    ] {
        // Up: ESP to the home agent's port 4500, opened there into the very packet.
        let up = packet(src, cn);
        assert_eq!(
            m.handle_from_tun(t0, &up),
            Outbound::Protected(Encap::EspUdp {
                to: SocketAddrV4::new(HA4, 4500)
            })
        );
        let mut esp = m.protected().to_vec();
        assert_ne!(esp, up);
        assert_eq!(
            h.handle_esp(t0, Outer::Udp(nat_esp), &mut esp),
            Verdict::ToTun(&up[..])
        );
        // Down: to the learned mapping, not to the BU's 4191 one (seed 001 req. #1: the SA's
        // tunnel end is the home address; the tunnel module sends to the care-of address).
        let down = packet(cn, src);
        assert_eq!(
            h.handle_from_tun(t0, &down),
            Outbound::Protected(Encap::EspUdp { to: nat_esp })
        );
        let mut esp = h.protected().to_vec();
        let from_ha = Outer::Udp(SocketAddrV4::new(HA4, 4500));
        assert_eq!(
            m.handle_esp(t0, from_ha, &mut esp),
            Verdict::ToTun(&down[..])
        );
    }
    // Cleartext payload from the home address through the 4191 tunnel: its policy says
    // protect, so it is refused.
    let nat: SocketAddrV4 = NAT_PUB.parse().unwrap();
    let plain = packet(a6(HOA).into(), a6("2001:db8:2::10").into());
    assert_eq!(
        h.handle_udp(t0, nat, &mut plain.clone()),
        Verdict::Drop(HaCounter::DropIpsec)
    );
    assert!(h.ipsec().unwrap().dropped(IpsecDrop::Unprotected) >= 1);
    // A keep-alive is due again 20 s later.
    let due = m.poll_timeout().unwrap();
    assert!(due <= t0 + std::time::Duration::from_secs(20));
}

/// The senders a driver exempts from its per-source budget: the binding's UDP tunnel at
/// once, the NAT's 4500 mapping once authenticated ESP came from it (a packet failing its
/// ICV from elsewhere adds nothing), each change moving the version and a repeat not; and
/// none once the binding ended.
#[test]
fn known_senders_are_the_bindings_tunnel_and_its_authenticated_esp_mapping() {
    use m6t_proto::dsmip::tif::Outer;
    let t0 = Instant::now();
    let v4hoa = "198.51.100.10";
    let (mut h, mut m) = payload_pair(t0, v4hoa);
    assert_eq!(h.known_senders().count(), 0);
    let v0 = h.senders_version();
    exchange(&mut m, &mut h, t0, true);
    let nat: SocketAddrV4 = NAT_PUB.parse().unwrap();
    assert_eq!(h.known_senders().collect::<Vec<_>>(), vec![nat]);
    let v1 = h.senders_version();
    assert_ne!(v1, v0);
    let Some(Transmit::EspUdp { data, .. }) = m.poll_transmit() else {
        panic!("no ESP keep-alive after registration");
    };
    // Forged: the keep-alive with its ICV broken, from an attacker's port.
    let atk: SocketAddrV4 = "203.0.113.66:4500".parse().unwrap();
    let mut bad = data.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        h.handle_esp(t0, Outer::Udp(atk), &mut bad),
        Verdict::Drop(_)
    ));
    assert_eq!(h.senders_version(), v1);
    let nat_esp: SocketAddrV4 = "203.0.113.2:40001".parse().unwrap();
    assert_eq!(
        h.handle_esp(t0, Outer::Udp(nat_esp), &mut data.clone()),
        Verdict::Handled
    );
    let mut s: Vec<_> = h.known_senders().collect();
    s.sort();
    assert_eq!(s, vec![nat, nat_esp]);
    let v2 = h.senders_version();
    assert_ne!(v2, v1);
    // The next keep-alive from the same mapping changes nothing.
    m.handle_timeout(t0 + std::time::Duration::from_secs(21));
    let again = std::iter::from_fn(|| m.poll_transmit())
        .find_map(|t| match t {
            Transmit::EspUdp { data, .. } => Some(data),
            _ => None,
        })
        .expect("a second keep-alive");
    assert_eq!(
        h.handle_esp(t0, Outer::Udp(nat_esp), &mut again.clone()),
        Verdict::Handled
    );
    assert_eq!(h.senders_version(), v2);
    // The binding's lifetime ends: nobody is exempt any more.
    h.handle_timeout(t0 + std::time::Duration::from_secs(100_000));
    assert_eq!(h.known_senders().count(), 0);
    assert_ne!(h.senders_version(), v2);
}

/// From an IPv6 care-of address and without a NAT, payload goes as IP/ESP (protocol 50).
#[test]
fn payload_goes_as_protocol_50_without_a_nat_and_from_an_ipv6_care_of_address() {
    use m6t_proto::dsmip::tif::Outer;
    use m6t_proto::dsmip::{Encap, Outbound};
    for v6 in [false, true] {
        let t0 = Instant::now();
        let mut h = ha();
        h = h.with_ipsec(with_payload(false, "198.51.100.10"));
        let mut m = mn(HOA, 1).with_ipsec(with_payload(true, "198.51.100.10"));
        let coa6 = a6("2001:db8:5::10");
        if v6 {
            m.handle_coas(t0, Some(coa6), None);
        } else {
            m.handle_coas(t0, None, Some(COA4));
        }
        exchange(&mut m, &mut h, t0, false);
        assert!(registered(&mut m).is_some());
        let up = packet(a6(HOA).into(), a6("2001:db8:2::10").into());
        let (to, outer): (IpAddr, Outer) = if v6 {
            (a6(HA6).into(), Outer::Ipv6(coa6))
        } else {
            (HA4.into(), Outer::Ipv4(COA4))
        };
        assert_eq!(
            m.handle_from_tun(t0, &up),
            Outbound::Protected(Encap::EspIp { to })
        );
        let mut esp = m.protected().to_vec();
        assert_eq!(h.handle_esp(t0, outer, &mut esp), Verdict::ToTun(&up[..]));
        let down = packet(a6("2001:db8:2::10").into(), a6(HOA).into());
        let coa: IpAddr = if v6 { coa6.into() } else { COA4.into() };
        assert_eq!(
            h.handle_from_tun(t0, &down),
            Outbound::Protected(Encap::EspIp { to: coa })
        );
        // Only one SA's holder: the other mobile node's keys cannot inject for this one.
        let mut forged = h.protected().to_vec();
        forged[20] ^= 1;
        let from_ha = if v6 {
            Outer::Ipv6(a6(HA6))
        } else {
            Outer::Ipv4(HA4)
        };
        assert_eq!(
            m.handle_esp(t0, from_ha, &mut forged),
            Verdict::Drop(MnCounter::DropIpsec)
        );
    }
}

/// Seed 001 req. #3 (RFC 5555 section 5.1): after a move the BU, protected by ESP, leaves
/// from the new IPv4 care-of address while payload keeps the old tunnel until the BA; the
/// tunnel module knows the BU only by its SPI, with either technique of section 4.3.2.
#[test]
fn after_a_move_the_protected_bu_leaves_from_the_new_address_and_payload_keeps_the_old_tunnel() {
    use m6t_proto::dsmip::mobile_node::BuDetection;
    use m6t_proto::dsmip::update_list::Coa;
    use m6t_proto::dsmip::Outbound;
    for detection in [BuDetection::SpiLookup, BuDetection::HeuristicLocking] {
        let t0 = Instant::now();
        let v4hoa = "198.51.100.10";
        let mut h = ha().with_ipsec(with_payload(false, v4hoa));
        let mut m = mn(HOA, 1)
            .with_ipsec(with_payload(true, v4hoa))
            .with_bu_detection(detection);
        m.handle_coas(t0, None, Some(COA4));
        exchange(&mut m, &mut h, t0, true);
        assert_eq!(registered(&mut m), Some(TunnelMode::Udp));
        while m.poll_transmit().is_some() {}
        let up = packet(a6(HOA).into(), a6("2001:db8:2::10").into());
        assert!(matches!(m.handle_from_tun(t0, &up), Outbound::Protected(_)));

        // The move: a second IPv4 address is preferred now; the old one still works.
        let coa2 = Ipv4Addr::new(192, 0, 2, 77);
        m.handle_coas(t0, None, Some(coa2));
        let Some(Transmit::Udp { from, data, .. }) = m.poll_transmit() else {
            panic!("{detection:?}: no BU");
        };
        assert_eq!(
            from,
            Some(coa2),
            "{detection:?}: the BU leaves from the new address"
        );
        assert_eq!(data[6], 50, "{detection:?}: the BU is in ESP");
        // Until the BA, payload goes through the registered (old) tunnel, and is not taken
        // for a BU.
        assert_eq!(m.registration().unwrap().coa, Coa::V4(COA4));
        for _ in 0..3 {
            assert!(matches!(
                m.handle_from_tun(t0, &up),
                Outbound::Protected(m6t_proto::dsmip::Encap::EspUdp { .. })
            ));
        }
        assert_eq!(
            m.counters().get(MnCounter::BuRecognised),
            2,
            "{detection:?}"
        );
        assert_eq!(m.counters().get(MnCounter::Misrouted), 0, "{detection:?}");
        // The BA moves the tunnel.
        let nat: SocketAddrV4 = "203.0.113.2:40002".parse().unwrap();
        assert_eq!(h.handle_udp(t0, nat, &mut data.clone()), Verdict::Handled);
        let Some(Transmit::Udp { data: ba, .. }) = h.poll_transmit() else {
            panic!("no BA")
        };
        let _ = m.handle_udp(t0, SocketAddrV4::new(HA4, 4191), &mut ba.clone());
        assert_eq!(m.registration().unwrap().coa, Coa::V4(coa2));
    }
}

/// SAs keyed by IKE (RFC 4877 section 4): before the keys the BU is dropped by IPsec and
/// counted; once IKE keys the pair, `signalling_keyed` sends the waiting BU at once (no
/// retransmission timer) and the home agent binds it.
#[test]
fn a_bu_waits_for_ike_keyed_sas_and_goes_as_soon_as_they_are_keyed() {
    let unkeyed = |mn_side: bool, hoas: &[&str]| {
        let mut i = ipsec(mn_side, hoas, 1);
        for slot in 0..i.sad().len() {
            i.unkey_sa(slot);
        }
        i
    };
    let mut m = MobileNode::new(MnConfig::new(a6(HOA), a6(HA6), HA4), 100)
        .with_ipsec(unkeyed(true, &[HOA]));
    let mut c = HaConfig::new("2001:db8:1::/64".parse().unwrap());
    c.ipv4_pool = vec![Ipv4Addr::new(198, 51, 100, 10)];
    let mut h = HomeAgent::new(c, a6(HA6)).with_ipsec(unkeyed(false, &[HOA]));
    let now = Instant::now();
    m.handle_coas(now, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    let w = exchange(&mut m, &mut h, now, true);
    assert!(
        w.bus.is_empty() && w.bas.is_empty(),
        "nothing leaves unprotected"
    );
    assert_eq!(m.ipsec().unwrap().dropped(IpsecDrop::NotKeyed), 1);
    // IKE keys both ends alike (what the CHILD_SA events carry).
    let key = |k: u8| -> Vec<u8> {
        (0..Algorithm::AesCbc128HmacSha256.keymat_len())
            .map(|i| k ^ i as u8)
            .collect()
    };
    for (node_mn, slot_out, slot_in) in [(true, 0, 1), (false, 0, 1)] {
        let ip = if node_mn {
            m.ipsec_mut().unwrap()
        } else {
            h.ipsec_mut().unwrap()
        };
        let (o, i) = if node_mn {
            (0x7001, 0x7002)
        } else {
            (0x7002, 0x7001)
        };
        let (ko, ki) = if node_mn { (3, 4) } else { (4, 3) };
        ip.key_sa(slot_out, o, &key(ko), 5).unwrap();
        ip.key_sa(slot_in, i, &key(ki), 6).unwrap();
    }
    m.signalling_keyed(now);
    let w = exchange(&mut m, &mut h, now, true);
    assert_eq!(w.bus.len(), 1, "the BU went at once, same instant");
    assert_eq!(registered(&mut m), Some(TunnelMode::Udp));
}

/// On the home link the BU and the BA carry ESP right after the IPv6 header (RFC 6275 section
/// 11.5.5, RFC 3776 section 3: no Home Address option, no Routing Header), and a raw socket
/// for protocol 50 hands over the ESP without that header: each node rebuilds it from the
/// addresses, tells signalling from payload by the SA the SPI names, and opens it.
#[test]
fn returning_home_the_deregistration_and_its_ba_travel_in_esp_from_the_home_address() {
    use m6t_proto::dsmip::tif::Outer;
    let t0 = Instant::now();
    let (mut h, mut m) = (ha(), mn(HOA, 1));
    m.handle_coas(t0, None, Some(COA4));
    exchange(&mut m, &mut h, t0, true);
    assert_eq!(registered(&mut m), Some(TunnelMode::Udp));
    while h.poll_event().is_some() {}

    m.handle_home(t0, true);
    let Some(Transmit::Ipv6 { from, to, data }) = m.poll_transmit() else {
        panic!("no BU from home")
    };
    assert_eq!((from, to), (Some(a6(HOA)), a6(HA6)));
    // IPv6 header, then ESP with SA1's SPI: what the raw socket strips, and what it keeps.
    assert_eq!(data[6], 50);
    assert_eq!(&data[8..24], &a6(HOA).octets());
    let mut esp = data[40..].to_vec();
    assert_eq!(
        h.handle_esp(t0, Outer::Ipv6(a6(HOA)), &mut esp),
        Verdict::Handled
    );
    assert!(h.binding_cache().is_empty());
    assert!(matches!(h.poll_event(), Some(HaEvent::Unbound { .. })));
    // The same again is a replay, dropped by IPsec (the window moved).
    let mut again = data[40..].to_vec();
    assert_eq!(
        h.handle_esp(t0, Outer::Ipv6(a6(HOA)), &mut again),
        Verdict::Drop(HaCounter::DropIpsec)
    );
    let Some(Transmit::Ipv6 { to, data, .. }) = h.poll_transmit() else {
        panic!("no BA")
    };
    assert_eq!(to, a6(HOA));
    assert_eq!(data[6], 50);
    // A BA whose ESP claims to come from someone else than the home agent is not taken.
    let mut stray = data[40..].to_vec();
    assert_eq!(
        m.handle_esp(t0, Outer::Ipv6(a6("2001:db8:1::99")), &mut stray),
        Verdict::Drop(MnCounter::DropNotFromHa)
    );
    let mut ba = data[40..].to_vec();
    assert_eq!(
        m.handle_esp(t0, Outer::Ipv6(a6(HA6)), &mut ba),
        Verdict::Handled
    );
    assert!(m.at_home());
    assert_eq!(m.unanswered_bus(), 0);
}

/// The home-address interface's MTU leaves room for the tunnel and, with payload
/// protected, for ESP's worst case, so that inner packets up to it never fragment outside:
/// over m6t0 (1 472) from its IPv6 address, ESP takes the node from its 1 400 to 1 472 -
/// 40 - ESP. Never above the configured MTU; when room for the tunnel would take it below
/// IPv6's 1 280 (Teredo's 1 280 link), fragments are unavoidable and the configured MTU
/// makes the fewest.
#[test]
fn the_home_address_mtu_leaves_room_for_the_tunnel_and_esp() {
    let (_, m) = payload_pair(Instant::now(), "198.51.100.17");
    let plain = MobileNode::new(MnConfig::new(a6(HOA), a6(HA6), HA4), 100);
    let esp = sa("x", Direction::Out, 1, 1)
        .params
        .algorithm
        .max_overhead();
    assert!(esp >= 37, "{esp}");
    assert_eq!(
        m.inner_mtu(TunnelMode::Ipv6, 1472, 1400) as usize,
        1472 - 40 - esp
    );
    assert_eq!(plain.inner_mtu(TunnelMode::Ipv6, 1472, 1400), 1400);
    assert_eq!(plain.inner_mtu(TunnelMode::Ipv6, 1420, 1400), 1380);
    assert_eq!(plain.inner_mtu(TunnelMode::Udp, 1420, 1400), 1392);
    assert_eq!(plain.inner_mtu(TunnelMode::Tlv, 1420, 1400), 1388);
    assert_eq!(plain.inner_mtu(TunnelMode::Ipv4, 1420, 1400), 1400);
    assert_eq!(
        m.inner_mtu(TunnelMode::Udp, 1450, 1500) as usize,
        1450 - 28 - esp
    );
    assert_eq!(
        m.inner_mtu(TunnelMode::Ipv4, 1450, 1500) as usize,
        1450 - 20 - esp
    );
    assert_eq!(m.inner_mtu(TunnelMode::Udp, 1500, 1400), 1400);
    assert_eq!(
        m.inner_mtu(TunnelMode::Ipv6, 1280 + 40 + esp as u32, 1400),
        1280
    );
    assert_eq!(m.inner_mtu(TunnelMode::Ipv6, 1280, 1400), 1400);
    assert_eq!(m.inner_mtu(TunnelMode::Ipv6, 0, 1400), 1400);
}
