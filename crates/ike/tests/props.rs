//! Property tests of the IKEv2 formats (RFC 7296 section 3): any message the emitter can
//! build parses back to itself and re-emits the same bytes; any bytes, and any corruption of
//! a valid message, are refused or read without a panic.

use m6t_ike::{
    Attribute, Auth, Cert, Delete, Encrypted, HeaderRepr, Identification, KeyExchange, Message,
    Notify, Payload, Proposal, SaPayload, TrafficSelector, TrafficSelectors, Transform, TsRange,
};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A payload with owned bytes, from which a borrowed [`Payload`] is made.
#[derive(Debug, Clone)]
enum Owned {
    Sa(SaPayload),
    Ke(u16, Vec<u8>),
    Id(bool, u8, Vec<u8>),
    Cert(bool, u8, Vec<u8>),
    Auth(u8, Vec<u8>),
    Nonce(Vec<u8>),
    Notify(u8, Vec<u8>, u16, Vec<u8>),
    Delete(u8, u8, Vec<u8>),
    Vendor(Vec<u8>),
    Ts(bool, Vec<u8>),
    Cp(Vec<u8>),
    Eap(Vec<u8>),
    Unknown(u8, Vec<u8>),
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn attribute() -> impl Strategy<Value = Attribute> {
    prop_oneof![
        (0u16..0x8000, any::<u16>()).prop_map(|(kind, value)| Attribute::Tv { kind, value }),
        (0u16..0x8000, bytes(8)).prop_map(|(kind, value)| Attribute::Tlv { kind, value }),
    ]
}

fn sa() -> impl Strategy<Value = SaPayload> {
    let transform = (
        1u8..6,
        any::<u16>(),
        proptest::collection::vec(attribute(), 0..3),
    )
        .prop_map(|(kind, id, attributes)| Transform {
            kind,
            id,
            attributes,
        });
    let proposal = (
        any::<u8>(),
        1u8..4,
        prop_oneof![Just(0usize), Just(4), Just(8)],
        proptest::collection::vec(transform, 0..6),
    )
        .prop_map(|(number, protocol, spi_len, transforms)| Proposal {
            number,
            protocol,
            spi: vec![0xa5; spi_len],
            transforms,
        });
    proptest::collection::vec(proposal, 1..4).prop_map(|proposals| SaPayload { proposals })
}

fn selector() -> impl Strategy<Value = TrafficSelector> {
    let range = prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(a, z)| TsRange::V4(Ipv4Addr::from(a), Ipv4Addr::from(z))),
        (any::<u128>(), any::<u128>())
            .prop_map(|(a, z)| TsRange::V6(Ipv6Addr::from(a), Ipv6Addr::from(z))),
    ];
    (any::<u8>(), any::<u16>(), any::<u16>(), range).prop_map(
        |(protocol, start_port, end_port, range)| TrafficSelector {
            protocol,
            start_port,
            end_port,
            range,
        },
    )
}

fn id() -> impl Strategy<Value = (u8, Vec<u8>)> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 4).prop_map(|b| (1, b)),
        proptest::collection::vec(any::<u8>(), 16).prop_map(|b| (5, b)),
        // Anything but the two address types takes any data.
        (
            any::<u8>().prop_filter("not an address", |k| *k != 1 && *k != 5),
            bytes(40)
        ),
    ]
}

fn owned() -> impl Strategy<Value = Owned> {
    prop_oneof![
        sa().prop_map(Owned::Sa),
        (any::<u16>(), bytes(300)).prop_map(|(g, d)| Owned::Ke(g, d)),
        (any::<bool>(), id()).prop_map(|(r, (k, d))| Owned::Id(r, k, d)),
        (any::<bool>(), any::<u8>(), bytes(60)).prop_map(|(r, e, d)| Owned::Cert(r, e, d)),
        (any::<u8>(), bytes(60)).prop_map(|(m, d)| Owned::Auth(m, d)),
        proptest::collection::vec(any::<u8>(), 16..=256).prop_map(Owned::Nonce),
        (any::<u8>(), bytes(9), any::<u16>(), bytes(40))
            .prop_map(|(p, s, k, d)| Owned::Notify(p, s, k, d)),
        (
            any::<u8>(),
            prop_oneof![Just(0u8), Just(4), Just(8)],
            0usize..5
        )
            .prop_map(|(p, size, n)| Owned::Delete(
                p,
                size,
                vec![0x3c; usize::from(size) * n]
            )),
        bytes(40).prop_map(Owned::Vendor),
        (any::<bool>(), proptest::collection::vec(selector(), 0..4)).prop_map(|(r, v)| {
            let mut b = vec![0u8; TrafficSelectors::selectors_emit_len(&v)];
            TrafficSelectors::emit_selectors(&v, &mut b).unwrap();
            Owned::Ts(r, b)
        }),
        bytes(40).prop_map(Owned::Cp),
        bytes(40).prop_map(Owned::Eap),
        (49u8..=255, bytes(40)).prop_map(|(k, b)| Owned::Unknown(k, b)),
    ]
}

impl Owned {
    fn payload(&self) -> Payload<'_> {
        match self {
            Owned::Sa(s) => Payload::Sa(s.clone()),
            Owned::Ke(group, data) => Payload::Ke(KeyExchange {
                group: *group,
                data,
            }),
            Owned::Id(r, k, d) => {
                let id = match *k {
                    1 => Identification::Ipv4(Ipv4Addr::from(<[u8; 4]>::try_from(&d[..]).unwrap())),
                    5 => {
                        Identification::Ipv6(Ipv6Addr::from(<[u8; 16]>::try_from(&d[..]).unwrap()))
                    }
                    2 => Identification::Fqdn(d),
                    3 => Identification::Rfc822(d),
                    11 => Identification::KeyId(d),
                    kind => Identification::Other { kind, data: d },
                };
                if *r {
                    Payload::IdR(id)
                } else {
                    Payload::IdI(id)
                }
            }
            Owned::Cert(req, encoding, data) => {
                let c = Cert {
                    encoding: *encoding,
                    data,
                };
                if *req {
                    Payload::CertReq(c)
                } else {
                    Payload::Cert(c)
                }
            }
            Owned::Auth(method, data) => Payload::Auth(Auth {
                method: *method,
                data,
            }),
            Owned::Nonce(n) => Payload::Nonce(n),
            Owned::Notify(protocol, spi, kind, data) => Payload::Notify(Notify {
                protocol: *protocol,
                spi,
                kind: *kind,
                data,
            }),
            Owned::Delete(protocol, spi_size, spis) => Payload::Delete(Delete {
                protocol: *protocol,
                spi_size: *spi_size,
                spis,
            }),
            Owned::Vendor(v) => Payload::VendorId(v),
            Owned::Ts(r, b) => {
                let t = TrafficSelectors::parse(b).unwrap();
                if *r {
                    Payload::TsR(t)
                } else {
                    Payload::TsI(t)
                }
            }
            Owned::Cp(b) => Payload::Configuration(b),
            Owned::Eap(b) => Payload::Eap(b),
            Owned::Unknown(kind, body) => Payload::Unknown { kind: *kind, body },
        }
    }
}

fn header() -> impl Strategy<Value = HeaderRepr> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u8>(),
        0u8..8,
        any::<u32>(),
    )
        .prop_map(|(i, r, exchange_type, f, message_id)| HeaderRepr {
            initiator_spi: i,
            responder_spi: r,
            exchange_type,
            flags: (f & 1) << 3 | (f & 2) << 3 | (f & 4) << 3,
            message_id,
        })
}

/// An emitted message: header, payloads, optionally an SK envelope last.
fn message_bytes() -> impl Strategy<Value = (Vec<u8>, usize)> {
    (
        header(),
        proptest::collection::vec(owned(), 0..8),
        proptest::option::of((33u8..=48, bytes(64))),
    )
        .prop_map(|(header, owned, sk)| {
            let mut payloads: Vec<Payload> = owned.iter().map(Owned::payload).collect();
            if let Some((first_inner, data)) = &sk {
                payloads.push(Payload::Encrypted(Encrypted {
                    first_inner: *first_inner,
                    data,
                }));
            }
            let m = Message { header, payloads };
            let mut b = vec![0u8; m.emit_len()];
            assert_eq!(m.emit(&mut b), Ok(b.len()));
            // Parse back to the very same Repr.
            let back = Message::parse(&b).expect("an emitted message parses");
            assert_eq!(back, m);
            (b, m.payloads.len())
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn emit_parse_round_trip((bytes, n) in message_bytes()) {
        let m = Message::parse(&bytes).unwrap();
        prop_assert_eq!(m.payloads.len(), n);
        let mut again = vec![0u8; m.emit_len()];
        m.emit(&mut again).unwrap();
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn any_bytes_never_panic(b in bytes(400)) {
        let _ = Message::parse(&b);
    }

    #[test]
    fn any_chain_behind_a_valid_header_never_panics(first in 0u8..=60, chain in bytes(400)) {
        let mut b = vec![1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0, first, 0x20, 34, 8, 0, 0, 0, 0];
        b.extend_from_slice(&((28 + chain.len()) as u32).to_be_bytes());
        b.extend_from_slice(&chain);
        if let Ok(m) = Message::parse(&b) {
            let mut out = vec![0u8; m.emit_len()];
            // What parses re-emits; the bytes may differ only where the reader is lenient.
            m.emit(&mut out).unwrap();
        }
    }

    #[test]
    fn corrupted_messages_never_panic(
        (bytes, _) in message_bytes(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let mut b = bytes;
        for (at, v) in flips {
            let i = at % b.len();
            b[i] = v;
        }
        let _ = Message::parse(&b);
        let _ = Message::parse(&b[..cut % (b.len() + 1)]);
    }
}
