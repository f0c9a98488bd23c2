//! Whole IPv6 packets carrying Mobility Header signalling (RFC 6275 sections 6.3, 6.4 and
//! 9.5.4 / 11.7.1): a Binding Update from a care-of address carries the home address in a
//! Home Address destination option; a Binding Acknowledgement to a care-of address carries
//! it in a type 2 Routing Header; inside UDP/IPv4 (RFC 5555 section 4.1) the BU is sent
//! from the home address itself and needs neither. The checksum pseudo-header of the
//! Mobility Header uses the home address in both cases (RFC 6275 sections 6.3, 6.4).

use crate::ipv6::{Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN};
use crate::mh::{MhError, MhRepr, NEXT_HEADER_MH};
use crate::WireError;
use std::net::Ipv6Addr;

/// Next Header of a Hop-by-Hop Options header.
pub const NEXT_HEADER_HOPOPTS: u8 = 0;
/// Next Header of a Routing header.
pub const NEXT_HEADER_ROUTING: u8 = 43;
/// Next Header of a Destination Options header.
pub const NEXT_HEADER_DSTOPTS: u8 = 60;
/// Option type of the Home Address destination option (RFC 6275 section 6.3).
pub const OPT_HOME_ADDRESS: u8 = 201;
/// Routing type of the type 2 Routing Header (RFC 6275 section 6.4).
pub const ROUTING_TYPE_2: u8 = 2;
/// Hop limit of the signalling packets built here.
pub const HOP_LIMIT: u8 = 64;
/// Extension headers walked before giving up (a chain of empty headers costs nothing to
/// send and must not cost much to receive).
const MAX_EXT_HEADERS: usize = 8;

/// Length of the Destination Options header holding the Home Address option: 2 bytes of
/// header, PadN of 4 so that the option starts at 8n+6, and the 18-byte option.
const DSTOPTS_LEN: usize = 24;
/// Length of the type 2 Routing Header.
const RH2_LEN: usize = 24;

/// How the home address travels in a signalling packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeIn {
    /// The source is the home address (BU inside UDP/IPv4, or at home).
    Source,
    /// In a Home Address destination option; the source is the care-of address.
    HomeAddressOption(Ipv6Addr),
    /// In a type 2 Routing Header; the destination is the care-of address.
    RoutingHeader(Ipv6Addr),
}

/// Why a signalling packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// Not a well-formed IPv6 packet.
    #[error("IPv6 header: {0}")]
    Ipv6(WireError),
    /// An extension header is truncated, malformed or there are too many.
    #[error("malformed extension header")]
    ExtHeader,
    /// The chain does not end in a Mobility Header.
    #[error("not a Mobility Header")]
    NotMh,
    /// The Mobility Header itself was refused.
    #[error("mobility header: {0:?}")]
    Mh(MhError),
}

/// A parsed signalling packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// Outer IPv6 source (the care-of address when a Home Address option is present).
    pub src: Ipv6Addr,
    /// Outer IPv6 destination (the care-of address when a type 2 Routing Header is present).
    pub dst: Ipv6Addr,
    /// Where the home address was found.
    pub home: HomeIn,
    /// The Mobility Header.
    pub mh: MhRepr,
}

impl Signal {
    /// The mobile node's home address: from the option or routing header, else the source
    /// (a BU) — callers pick by message direction.
    pub fn home_address(&self) -> Option<Ipv6Addr> {
        match self.home {
            HomeIn::HomeAddressOption(a) | HomeIn::RoutingHeader(a) => Some(a),
            HomeIn::Source => None,
        }
    }
}

/// Parses an IPv6 packet whose header chain (Hop-by-Hop, Destination Options, type 2
/// Routing) ends in a Mobility Header, verifying the MH checksum with the home address in
/// the pseudo-header as RFC 6275 sections 6.3 and 6.4 say.
pub fn parse(pkt: &[u8]) -> Result<Signal, SignalError> {
    let p = Ipv6Packet::new_checked(pkt).map_err(SignalError::Ipv6)?;
    let (src, dst) = (p.src_addr(), p.dst_addr());
    let payload = p.payload();
    let mut nh = p.next_header();
    let mut off = 0usize;
    let mut home = HomeIn::Source;
    for _ in 0..MAX_EXT_HEADERS {
        match nh {
            NEXT_HEADER_MH => {
                let (psrc, pdst) = match home {
                    HomeIn::Source => (src, dst),
                    HomeIn::HomeAddressOption(h) => (h, dst),
                    HomeIn::RoutingHeader(h) => (src, h),
                };
                let mh = MhRepr::parse(&payload[off..], psrc, pdst).map_err(SignalError::Mh)?;
                return Ok(Signal { src, dst, home, mh });
            }
            NEXT_HEADER_HOPOPTS | NEXT_HEADER_DSTOPTS | NEXT_HEADER_ROUTING => {
                let h = payload.get(off..off + 2).ok_or(SignalError::ExtHeader)?;
                let len = (usize::from(h[1]) + 1) * 8;
                let ext = payload.get(off..off + len).ok_or(SignalError::ExtHeader)?;
                match nh {
                    NEXT_HEADER_DSTOPTS => {
                        if let Some(a) = home_address_option(ext)? {
                            if home != HomeIn::Source {
                                return Err(SignalError::ExtHeader);
                            }
                            home = HomeIn::HomeAddressOption(a);
                        }
                    }
                    NEXT_HEADER_ROUTING => {
                        // Only type 2 with one address and segments left 1 (section 6.4).
                        if ext[2] != ROUTING_TYPE_2 || len != RH2_LEN || ext[3] != 1 {
                            return Err(SignalError::ExtHeader);
                        }
                        if home != HomeIn::Source {
                            return Err(SignalError::ExtHeader);
                        }
                        let mut a = [0u8; 16];
                        a.copy_from_slice(&ext[8..24]);
                        home = HomeIn::RoutingHeader(Ipv6Addr::from(a));
                    }
                    _ => {}
                }
                nh = ext[0];
                off += len;
            }
            _ => return Err(SignalError::NotMh),
        }
    }
    Err(SignalError::ExtHeader)
}

/// Finds the Home Address option in an options header `ext` (the whole header, its two
/// first bytes included; TLV walk, RFC 8200 section 4.2): none, one (RFC 6275 section
/// 6.3), or an error for a truncated option, a wrong length or a second one.
pub fn home_address_option(ext: &[u8]) -> Result<Option<Ipv6Addr>, SignalError> {
    let mut i = 2;
    let mut found = None;
    while i < ext.len() {
        let t = ext[i];
        if t == 0 {
            i += 1;
            continue;
        }
        let l = usize::from(*ext.get(i + 1).ok_or(SignalError::ExtHeader)?);
        let data = ext.get(i + 2..i + 2 + l).ok_or(SignalError::ExtHeader)?;
        if t == OPT_HOME_ADDRESS {
            if l != 16 || found.is_some() {
                return Err(SignalError::ExtHeader);
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(data);
            found = Some(Ipv6Addr::from(a));
        }
        i += 2 + l;
    }
    Ok(found)
}

/// Builds a signalling packet into `buf` and returns its length. `src`/`dst` are the outer
/// addresses; `home` says where the home address goes (RFC 6275 sections 6.3, 6.4,
/// 11.7.1: a BU from a care-of address uses [`HomeIn::HomeAddressOption`], the home
/// agent's BA to a care-of address [`HomeIn::RoutingHeader`]).
pub fn emit(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    home: HomeIn,
    mh: &MhRepr,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    let ext_len = match home {
        HomeIn::Source => 0,
        HomeIn::HomeAddressOption(_) => DSTOPTS_LEN,
        HomeIn::RoutingHeader(_) => RH2_LEN,
    };
    let mh_len = mh.emit_len();
    let total = IPV6_HEADER_LEN + ext_len + mh_len;
    if buf.len() < total {
        return Err(WireError::BufferTooSmall);
    }
    let (first, psrc, pdst) = match home {
        HomeIn::Source => (NEXT_HEADER_MH, src, dst),
        HomeIn::HomeAddressOption(h) => (NEXT_HEADER_DSTOPTS, h, dst),
        HomeIn::RoutingHeader(h) => (NEXT_HEADER_ROUTING, src, h),
    };
    Ipv6Repr {
        src,
        dst,
        next_header: first,
        payload_len: (ext_len + mh_len) as u16,
        hop_limit: HOP_LIMIT,
    }
    .emit(buf)?;
    let ext = &mut buf[IPV6_HEADER_LEN..IPV6_HEADER_LEN + ext_len];
    match home {
        HomeIn::Source => {}
        HomeIn::HomeAddressOption(h) => {
            ext.copy_from_slice(&[0; DSTOPTS_LEN]);
            ext[0] = NEXT_HEADER_MH;
            ext[1] = (DSTOPTS_LEN / 8 - 1) as u8;
            // PadN (type 1, length 2) puts the option type at offset 6 = 8n+6.
            ext[2] = 1;
            ext[3] = 2;
            ext[6] = OPT_HOME_ADDRESS;
            ext[7] = 16;
            ext[8..24].copy_from_slice(&h.octets());
        }
        HomeIn::RoutingHeader(h) => {
            ext.copy_from_slice(&[0; RH2_LEN]);
            ext[0] = NEXT_HEADER_MH;
            ext[1] = (RH2_LEN / 8 - 1) as u8;
            ext[2] = ROUTING_TYPE_2;
            ext[3] = 1;
            ext[8..24].copy_from_slice(&h.octets());
        }
    }
    mh.emit(psrc, pdst, &mut buf[IPV6_HEADER_LEN + ext_len..total])?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mh::{bu_flags, MhMessage, MobilityOption};
    use proptest::prelude::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn bu() -> MhRepr {
        MhRepr {
            msg: MhMessage::Bu {
                seq: 7,
                flags: bu_flags::A | bu_flags::H,
                lifetime: 100,
            },
            options: vec![MobilityOption::Ipv4HomeAddress {
                prefix_len: 32,
                p: false,
                addr: "198.51.100.10".parse().unwrap(),
            }],
        }
    }

    #[test]
    fn bu_with_home_address_option_round_trips() {
        let mut b = [0u8; 256];
        let n = emit(
            a("2001:db8:5::10"),
            a("2001:db8:1::1"),
            HomeIn::HomeAddressOption(a("2001:db8:1::a")),
            &bu(),
            &mut b,
        )
        .unwrap();
        // Destination options header, option at 8n+6 (RFC 6275 section 6.3).
        assert_eq!(b[6], NEXT_HEADER_DSTOPTS);
        assert_eq!(&b[40..48], &[135, 2, 1, 2, 0, 0, 201, 16]);
        let s = parse(&b[..n]).unwrap();
        assert_eq!(s.home, HomeIn::HomeAddressOption(a("2001:db8:1::a")));
        assert_eq!(s.src, a("2001:db8:5::10"));
        assert_eq!(s.mh, bu());
    }

    #[test]
    fn checksum_uses_the_home_address() {
        let mut b = [0u8; 256];
        let n = emit(
            a("2001:db8:5::10"),
            a("2001:db8:1::1"),
            HomeIn::HomeAddressOption(a("2001:db8:1::a")),
            &bu(),
            &mut b,
        )
        .unwrap();
        // The same MH checked against the care-of address fails.
        let mh = &b[40 + DSTOPTS_LEN..n];
        assert!(MhRepr::parse(mh, a("2001:db8:5::10"), a("2001:db8:1::1")).is_err());
        assert!(MhRepr::parse(mh, a("2001:db8:1::a"), a("2001:db8:1::1")).is_ok());
    }

    #[test]
    fn ba_with_routing_header_round_trips() {
        let ba = MhRepr {
            msg: MhMessage::Ba {
                status: 0,
                flags: 0,
                seq: 7,
                lifetime: 100,
            },
            options: vec![],
        };
        let mut b = [0u8; 256];
        let n = emit(
            a("2001:db8:1::1"),
            a("2001:db8:5::10"),
            HomeIn::RoutingHeader(a("2001:db8:1::a")),
            &ba,
            &mut b,
        )
        .unwrap();
        assert_eq!(&b[40..44], &[135, 2, 2, 1]);
        let s = parse(&b[..n]).unwrap();
        assert_eq!(s.home, HomeIn::RoutingHeader(a("2001:db8:1::a")));
        assert_eq!(s.mh, ba);
    }

    #[test]
    fn refuses_other_routing_types_and_non_mh() {
        let mut b = [0u8; 256];
        let n = emit(
            a("2001:db8:1::1"),
            a("2001:db8:5::10"),
            HomeIn::RoutingHeader(a("2001:db8:1::a")),
            &bu(),
            &mut b,
        )
        .unwrap();
        let mut t0 = b;
        t0[42] = 0;
        assert_eq!(parse(&t0[..n]), Err(SignalError::ExtHeader));
        let mut udp = b;
        udp[40] = 17;
        assert_eq!(parse(&udp[..n]), Err(SignalError::NotMh));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&data);
        }

        #[test]
        fn chains_of_garbage_after_a_valid_header(tail in proptest::collection::vec(any::<u8>(), 0..120), nh in prop_oneof![Just(0u8), Just(43u8), Just(60u8), Just(135u8)]) {
            let mut b = vec![0u8; 40 + tail.len()];
            Ipv6Repr { src: a("2001:db8::1"), dst: a("2001:db8::2"), next_header: nh, payload_len: tail.len() as u16, hop_limit: 64 }.emit(&mut b).unwrap();
            b[40..].copy_from_slice(&tail);
            let _ = parse(&b);
        }
    }
}
