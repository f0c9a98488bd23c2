//! Writes the fuzzers' seed corpus (`fuzz/seeds/<target>/`): one valid input of every kind
//! each target takes, built with the project's own emitters, so a fuzzing run starts from
//! packets that pass the checks and mutates from there (`scripts/fuzz.sh` reads them).
//!
//! `cargo run -p m6t-proto --example fuzz_seeds -- fuzz/seeds`

use m6t_ipsec::spd::PROTO_MH;
use m6t_ipsec::{
    Action, AddrSel, Algorithm, Direction, Ipsec, Mode, Outbound, Policy, SaConfig, SaParams,
    Selectors, Spd,
};
use m6t_proto::dsmip::tif::tlv_header;
use m6t_wire::mh::{bu_flags, MhMessage, MhRepr, MobilityOption};
use m6t_wire::mip6::{self, HomeIn};
use m6t_wire::{keepalive, Ipv4Repr, Ipv6Repr};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// A seed file: its name and bytes.
type Seed = (String, Vec<u8>);

const HOA: &str = "2001:db8:1::a";
const HA: &str = "2001:db8:1::1";
const COA: &str = "2001:db8:5::10";

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn signal(
    src: &str,
    dst: &str,
    home: HomeIn,
    msg: MhMessage,
    options: Vec<MobilityOption>,
) -> Vec<u8> {
    let mh = MhRepr { msg, options };
    let mut b = vec![0u8; 512];
    let n = mip6::emit(a6(src), a6(dst), home, &mh, &mut b).unwrap();
    b.truncate(n);
    b
}

fn ipv6(src: &str, dst: &str, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 40 + payload.len()];
    Ipv6Repr {
        src: a6(src),
        dst: a6(dst),
        next_header,
        payload_len: payload.len() as u16,
        hop_limit: 64,
    }
    .emit(&mut b)
    .unwrap();
    b[40..].copy_from_slice(payload);
    b
}

fn ipv4(payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 20 + payload.len()];
    Ipv4Repr {
        src: Ipv4Addr::new(198, 51, 100, 10),
        dst: Ipv4Addr::new(198, 51, 100, 130),
        protocol: 17,
        payload_len: payload.len() as u16,
        ttl: 64,
        dont_frag: true,
    }
    .emit(&mut b)
    .unwrap();
    b[20..].copy_from_slice(payload);
    b
}

/// A BU protected by the mobile node's SA of the esp target (same SPIs and keys).
fn protected_bu(algorithm: Algorithm, clear: &[u8]) -> Vec<u8> {
    let sa = |name: &str, direction, spi: u32| SaConfig {
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
    let spd = Spd {
        policies: vec![Policy {
            name: "bu".into(),
            selectors: Selectors {
                local: AddrSel::addr(a6(HOA).into()),
                remote: AddrSel::addr(a6(HA).into()),
                proto: Some(PROTO_MH),
                local_type: Some(5),
                remote_type: Some(6),
                ..Selectors::ANY
            },
            action: Action::Protect {
                out: Some(0),
                inbound: Some(1),
            },
        }],
        unmatched: Action::Bypass,
    };
    let sas = [
        sa("SA1", Direction::Out, 0x1001),
        sa("SA2", Direction::In, 0x1002),
    ];
    let mut i = Ipsec::new(spd, &sas, 1).unwrap();
    i.reserve_unlimited();
    let mut out = Vec::new();
    assert!(matches!(
        i.outbound(clear, &mut out),
        Outbound::Transport { .. }
    ));
    out
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: fuzz_seeds DIR");
    let bu = MhMessage::Bu {
        seq: 7,
        flags: bu_flags::A | bu_flags::H,
        lifetime: 100,
    };
    let dsmip_options = vec![
        MobilityOption::Ipv4HomeAddress {
            prefix_len: 32,
            p: false,
            addr: Ipv4Addr::UNSPECIFIED,
        },
        MobilityOption::Ipv4CareOfAddress(Ipv4Addr::new(192, 0, 2, 10)),
    ];
    let bu_hao = signal(COA, HA, HomeIn::HomeAddressOption(a6(HOA)), bu, vec![]);
    let bu_udp = signal(HOA, HA, HomeIn::Source, bu, dsmip_options);
    let ba = MhMessage::Ba {
        status: 0,
        flags: 0,
        seq: 7,
        lifetime: 100,
    };
    let ba_rh2 = signal(HA, COA, HomeIn::RoutingHeader(a6(HOA)), ba, vec![]);
    // A mobile router's BU in explicit mode (RFC 3963, RFC 5555 section 3.1.1).
    let bu_router = signal(
        HOA,
        HA,
        HomeIn::Source,
        MhMessage::Bu {
            seq: 8,
            flags: bu_flags::A | bu_flags::H | bu_flags::R,
            lifetime: 100,
        },
        vec![
            MobilityOption::MobileNetworkPrefix {
                len: 48,
                prefix: a6("2001:db8:77::"),
            },
            MobilityOption::Ipv4HomeAddress {
                prefix_len: 27,
                p: true,
                addr: Ipv4Addr::new(198, 51, 100, 96),
            },
            MobilityOption::Ipv4CareOfAddress(Ipv4Addr::new(192, 0, 2, 10)),
        ],
    );
    // The deregistration from the home link and its BA (RFC 6275 section 11.5.5).
    let bu_home = signal(
        HOA,
        HA,
        HomeIn::Source,
        MhMessage::Bu {
            seq: 9,
            flags: bu_flags::A | bu_flags::H,
            lifetime: 0,
        },
        vec![],
    );
    let ba_home = signal(
        HA,
        HOA,
        HomeIn::Source,
        MhMessage::Ba {
            status: 0,
            flags: 0,
            seq: 9,
            lifetime: 0,
        },
        vec![],
    );
    let data6 = ipv6("fd00:1::5", HA, 59, &[0; 20]);
    let data4 = ipv4(&[0; 8]);
    let mut tlv = tlv_header(&bu_udp).to_vec();
    tlv.extend_from_slice(&bu_udp);
    let keepalive = keepalive::emit(a6("fd00:1::5"), keepalive::KEEPALIVE_PEER).to_vec();
    let mh = bu_udp[40..].to_vec();

    let common: Vec<(&str, Vec<u8>)> = vec![
        ("bu-hao", bu_hao.clone()),
        ("bu-udp", bu_udp.clone()),
        ("ba-rh2", ba_rh2),
        ("bu-router", bu_router),
        ("bu-home", bu_home),
        ("ba-home", ba_home),
        ("data6", data6),
        ("data4", data4),
        ("tlv-bu", tlv),
        ("keepalive", keepalive),
    ];
    let mut seeds: Vec<(&str, Vec<Seed>)> = Vec::new();
    let named = |v: &[(&str, Vec<u8>)]| -> Vec<Seed> {
        v.iter().map(|(n, b)| (n.to_string(), b.clone())).collect()
    };
    for t in ["ipv4", "ipv6", "tlv", "dsmip", "gateway", "client"] {
        seeds.push((t, named(&common)));
    }
    seeds.push(("mh", vec![("bu".into(), mh)]));
    // The esp target's first byte picks the algorithm; the rest is XORed into a real
    // protected BU (all zero: the packet as sent), or fed as it is to the inbound paths.
    let mut esp = Vec::new();
    for (k, alg) in Algorithm::ALL.iter().enumerate() {
        let mut x = vec![k as u8];
        x.extend_from_slice(&[0; 16]);
        esp.push((format!("unchanged-{}", alg.name()), x));
        let mut p = vec![k as u8];
        p.extend_from_slice(&protected_bu(*alg, &bu_hao));
        esp.push((format!("protected-{}", alg.name()), p));
    }
    seeds.push(("esp", esp));
    for (target, files) in seeds {
        let d = Path::new(&dir).join(target);
        std::fs::create_dir_all(&d).unwrap();
        for (name, bytes) in files {
            std::fs::write(d.join(name), bytes).unwrap();
        }
    }
}
