//! The IPsec inbound path (RFC 4301 section 5.2) with hostile input: any bytes into the
//! bump in the stack and into a home agent that has it (UDP 4191, capture, and bare ESP from
//! UDP 4500 and protocol 50), and any corruption of a real
//! ESP-protected BU. No panic; a packet refused before its ICV verified changes no SA
//! (window, counters), nothing but a verified packet is ever accepted, and the home agent
//! neither binds nor exempts anybody on unauthenticated input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use m6t_ipsec::spd::PROTO_MH;
use m6t_ipsec::{
    Action, AddrSel, Algorithm, Direction, EspDrop, Inbound, Ipsec, IpsecDrop, Mode, Outbound,
    Policy, SaConfig, SaParams, Selectors, Spd,
};
use m6t_proto::dsmip::binding_cache::HaConfig;
use m6t_proto::dsmip::home_agent::HomeAgent;
use m6t_proto::dsmip::tif::Outer;
use m6t_wire::mh::{MhMessage, MhRepr};
use m6t_wire::mip6::{self, HomeIn};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Instant;

const HOA: &str = "2001:db8:1::a";
const HA: &str = "2001:db8:1::1";

fn ipsec(mn: bool, algorithm: Algorithm) -> Ipsec {
    let (hoa, ha): (IpAddr, IpAddr) = (HOA.parse().unwrap(), HA.parse().unwrap());
    let sa = |name: &str, direction, spi| SaConfig {
        name: name.into(),
        direction,
        params: SaParams {
            spi,
            mode: Mode::Transport,
            algorithm,
            esn: false,
        },
        keymat: (0..algorithm.keymat_len())
            .map(|i| i as u8 ^ spi as u8)
            .collect(),
        tunnel: None,
    };
    let (local, remote, lt, rt) = if mn { (hoa, ha, 5, 6) } else { (ha, hoa, 6, 5) };
    let sas = if mn {
        [
            sa("SA1", Direction::Out, 0x1001),
            sa("SA2", Direction::In, 0x1002),
        ]
    } else {
        [
            sa("SA2", Direction::Out, 0x1002),
            sa("SA1", Direction::In, 0x1001),
        ]
    };
    let spd = Spd {
        policies: vec![Policy {
            name: "bu".into(),
            selectors: Selectors {
                local: AddrSel::addr(local),
                remote: AddrSel::addr(remote),
                proto: Some(PROTO_MH),
                local_type: Some(lt),
                remote_type: Some(rt),
                ..Selectors::ANY
            },
            action: Action::Protect {
                out: Some(0),
                inbound: Some(1),
            },
        }],
        unmatched: Action::Bypass,
    };
    let mut i = Ipsec::new(spd, &sas, 1).unwrap();
    i.reserve_unlimited();
    i
}

fn protected_bu(algorithm: Algorithm) -> Vec<u8> {
    let mh = MhRepr {
        msg: MhMessage::Bu {
            seq: 1,
            flags: 0xc000,
            lifetime: 10,
        },
        options: vec![],
    };
    let mut b = vec![0u8; 256];
    let n = mip6::emit(
        "2001:db8:5::10".parse().unwrap(),
        HA.parse().unwrap(),
        HomeIn::HomeAddressOption(HOA.parse().unwrap()),
        &mh,
        &mut b,
    )
    .unwrap();
    let mut out = Vec::new();
    assert!(matches!(
        ipsec(true, algorithm).outbound(&b[..n], &mut out),
        Outbound::Transport { .. }
    ));
    out
}

/// Refusals that come before the ICV is verified: they may not touch the SA.
fn unverified(r: &Inbound) -> bool {
    matches!(
        r,
        Inbound::Drop(
            IpsecDrop::Esp(
                EspDrop::NoSa
                    | EspDrop::Truncated
                    | EspDrop::BadLength
                    | EspDrop::BadIcv
                    | EspDrop::Replay
                    | EspDrop::TooOld
            ) | IpsecDrop::Malformed
                | IpsecDrop::Fragment
                | IpsecDrop::Unprotected
        )
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let algorithm = Algorithm::ALL[usize::from(sel) % Algorithm::ALL.len()];
    // Any bytes, every inbound entry.
    let mut ha = ipsec(false, algorithm);
    let _ = ha.inbound_ipv6(&mut rest.to_vec());
    let _ = ha.inbound_esp(&mut rest.to_vec());
    let _ = ha.inbound_clear(rest);
    let mut node = HomeAgent::new(
        HaConfig::new("2001:db8:1::/64".parse().unwrap()),
        HA.parse::<Ipv6Addr>().unwrap(),
    )
    .with_ipsec(ipsec(false, algorithm));
    let from = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 2), 4000);
    let _ = node.handle_udp(Instant::now(), from, &mut rest.to_vec());
    let _ = node.handle_captured(Instant::now(), &mut rest.to_vec());
    let _ = node.handle_esp(Instant::now(), Outer::Udp(from), &mut rest.to_vec());
    let _ = node.handle_esp(Instant::now(), Outer::Ipv4(*from.ip()), &mut rest.to_vec());
    // From the home link: ESP straight after the IPv6 header (RFC 6275 section 11.5.5).
    let hoa = HOA.parse::<Ipv6Addr>().unwrap();
    let _ = node.handle_esp(Instant::now(), Outer::Ipv6(hoa), &mut rest.to_vec());
    // Nothing unauthenticated binds a home address or exempts a sender from the driver's
    // per-source budget (RFC 4877 section 4.1: BUs without valid ESP are discarded).
    assert!(node.binding_cache().is_empty());
    assert_eq!(node.known_senders().count(), 0);

    // A real protected BU, corrupted by the input (XOR): accepted only if it still verifies
    // (then it is the original), and a refusal before the ICV leaves the SA as it was.
    let good = protected_bu(algorithm);
    let mut bad = good.clone();
    for (i, b) in rest.iter().enumerate() {
        bad[i % good.len()] ^= b;
    }
    let mut ha = ipsec(false, algorithm);
    let before = (
        ha.sad()[1]
            .sa
            .as_ref()
            .map_or(0, |s| s.replay_window().top()),
        ha.sad()[1].packets,
    );
    let r = ha.inbound_ipv6(&mut bad);
    if unverified(&r) {
        assert_eq!(
            (
                ha.sad()[1]
                    .sa
                    .as_ref()
                    .map_or(0, |s| s.replay_window().top()),
                ha.sad()[1].packets
            ),
            before
        );
    }
    if let Inbound::Transport { len, .. } = r {
        // ESP does not cover the IPv6 header and the Home Address option: only those may
        // differ from what was sent, and the Mobility Header inside is the one protected.
        let mut again = good.clone();
        let Inbound::Transport { len: l2, .. } = ipsec(false, algorithm).inbound_ipv6(&mut again)
        else {
            panic!("the original does not open");
        };
        assert_eq!(bad[len - 16..len], again[l2 - 16..l2]);
    }
});
