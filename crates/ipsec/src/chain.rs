//! Where IPsec looks in an IPv6 packet: the walk of its extension headers to the ESP
//! header or the upper layer (RFC 8200 section 4), and the selector values
//! ([`Traffic`]) Mobile IPv6 gives them (RFC 6275 section 11.3.2, RFC 3776 section 4.1):
//! the home address of a Home Address option as source, of a type 2 Routing Header as
//! destination.
//!
//! The headers that may stand before ESP in transport mode are Hop-by-Hop, Routing and
//! Destination Options (RFC 4303 section 3.1.1; the Home Address option and the type 2
//! Routing Header of a BU and a BA are there in RFC 3776 sections 3.1-3.2). A Fragment header
//! is refused: IPsec sees whole packets (RFC 4301 section 7).

use crate::spd::{Traffic, PROTO_ICMPV6, PROTO_MH, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use m6t_wire::esp::IPPROTO_ESP;
use m6t_wire::mip6;
use m6t_wire::Ipv6Packet;
use std::net::{IpAddr, Ipv6Addr};

const HOPOPTS: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DSTOPTS: u8 = 60;
const IPV6_HEADER_LEN: usize = 40;
/// Extension headers walked before giving up: a chain of empty headers costs nothing to
/// send and must not cost much to receive.
const MAX_EXT_HEADERS: usize = 8;

/// Why a packet's header chain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainError {
    /// Not a well-formed IPv6 packet, or an extension header is truncated or malformed,
    /// or there are too many of them.
    Malformed,
    /// A Fragment header: IPsec needs the whole packet.
    Fragment,
}

/// An IPv6 packet's chain, walked up to ESP or the upper layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// Offset of the byte that holds the Next Header of the last header walked (6 for the
    /// fixed header): what ESP's insertion or removal rewrites.
    pub next_header_at: usize,
    /// That Next Header: 50 when ESP follows, else the upper-layer protocol.
    pub next_header: u8,
    /// Offset of ESP or of the upper-layer header.
    pub upper_at: usize,
    /// The source IPsec sees: a Home Address option's address, else the IPv6 source.
    pub src: Ipv6Addr,
    /// The destination IPsec sees: a type 2 Routing Header's address, else the IPv6
    /// destination.
    pub dst: Ipv6Addr,
}

impl Chain {
    /// Walks `pkt`, which must be a whole IPv6 packet (its length field checked).
    pub fn walk(pkt: &[u8]) -> Result<Chain, ChainError> {
        let p = Ipv6Packet::new_checked(pkt).map_err(|_| ChainError::Malformed)?;
        let mut c = Chain {
            next_header_at: 6,
            next_header: p.next_header(),
            upper_at: IPV6_HEADER_LEN,
            src: p.src_addr(),
            dst: p.dst_addr(),
        };
        for _ in 0..MAX_EXT_HEADERS {
            match c.next_header {
                HOPOPTS | ROUTING | DSTOPTS => {}
                FRAGMENT => return Err(ChainError::Fragment),
                _ => return Ok(c),
            }
            let h = pkt
                .get(c.upper_at..c.upper_at + 2)
                .ok_or(ChainError::Malformed)?;
            let len = (usize::from(h[1]) + 1) * 8;
            let ext = pkt
                .get(c.upper_at..c.upper_at + len)
                .ok_or(ChainError::Malformed)?;
            match c.next_header {
                DSTOPTS => {
                    let hao = mip6::home_address_option(ext).map_err(|_| ChainError::Malformed)?;
                    if let Some(h) = hao {
                        c.src = h;
                    }
                }
                // A type 2 Routing Header names the final destination (RFC 6275 section
                // 6.4); other types are walked over and keep the IPv6 destination.
                ROUTING if ext[2] == 2 => {
                    if len != 24 {
                        return Err(ChainError::Malformed);
                    }
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&ext[8..24]);
                    c.dst = Ipv6Addr::from(a);
                }
                _ => {}
            }
            c.next_header_at = c.upper_at;
            c.next_header = ext[0];
            c.upper_at += len;
        }
        Err(ChainError::Malformed)
    }

    /// Whether ESP follows the headers walked.
    pub fn is_esp(&self) -> bool {
        self.next_header == IPPROTO_ESP
    }

    /// The selector values of the packet, reading the upper-layer header at `upper_at`.
    pub fn traffic(&self, pkt: &[u8]) -> Traffic {
        traffic(
            self.src.into(),
            self.dst.into(),
            self.next_header,
            pkt.get(self.upper_at..).unwrap_or(&[]),
        )
    }
}

/// Selector values from the addresses, the protocol and the first bytes of its header:
/// ports for TCP, UDP and SCTP, the type for ICMPv6 and the Mobility Header (RFC 4301
/// section 4.4.1.1). A header too short to hold them leaves them `None`, which only a
/// policy selecting `ANY` matches.
pub fn traffic(src: IpAddr, dst: IpAddr, proto: u8, upper: &[u8]) -> Traffic {
    let (ports, msg_type) = match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => match upper.get(..4) {
            Some(h) => (
                Some((
                    u16::from_be_bytes([h[0], h[1]]),
                    u16::from_be_bytes([h[2], h[3]]),
                )),
                None,
            ),
            None => (None, None),
        },
        PROTO_ICMPV6 => (None, upper.first().copied()),
        // The MH Type is the third byte (RFC 6275 section 6.1.1).
        PROTO_MH => (None, upper.get(2).copied()),
        _ => (None, None),
    };
    Traffic {
        src,
        dst,
        proto,
        ports,
        msg_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use m6t_wire::mh::{MhMessage, MhRepr};
    use m6t_wire::mip6::{self, HomeIn};

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn signal(src: &str, dst: &str, home: HomeIn, msg: MhMessage) -> Vec<u8> {
        let mh = MhRepr {
            msg,
            options: vec![],
        };
        let mut b = vec![0u8; 256];
        let n = mip6::emit(a(src), a(dst), home, &mh, &mut b).unwrap();
        b.truncate(n);
        b
    }

    const BU: MhMessage = MhMessage::Bu {
        seq: 1,
        flags: 0xc000,
        lifetime: 10,
    };

    #[test]
    fn a_bu_from_a_care_of_address_is_seen_from_its_home_address() {
        let p = signal(
            "2001:db8:5::10",
            "2001:db8:1::1",
            HomeIn::HomeAddressOption(a("2001:db8:1::100")),
            BU,
        );
        let c = Chain::walk(&p).unwrap();
        assert_eq!(c.upper_at, 64);
        assert_eq!(c.next_header_at, 40);
        assert_eq!(c.next_header, PROTO_MH);
        let t = c.traffic(&p);
        assert_eq!(t.src, IpAddr::from(a("2001:db8:1::100")));
        assert_eq!(t.dst, IpAddr::from(a("2001:db8:1::1")));
        assert_eq!(t.msg_type, Some(5));
    }

    #[test]
    fn a_ba_to_a_care_of_address_is_seen_to_its_home_address() {
        let ba = MhMessage::Ba {
            status: 0,
            flags: 0,
            seq: 1,
            lifetime: 10,
        };
        let p = signal(
            "2001:db8:1::1",
            "2001:db8:5::10",
            HomeIn::RoutingHeader(a("2001:db8:1::100")),
            ba,
        );
        let c = Chain::walk(&p).unwrap();
        let t = c.traffic(&p);
        assert_eq!(t.dst, IpAddr::from(a("2001:db8:1::100")));
        assert_eq!(t.msg_type, Some(6));
    }

    #[test]
    fn fragments_and_broken_chains_are_refused() {
        let mut p = signal("2001:db8:1::100", "2001:db8:1::1", HomeIn::Source, BU);
        assert_eq!(Chain::walk(&p).unwrap().upper_at, 40);
        p[6] = FRAGMENT;
        assert_eq!(Chain::walk(&p), Err(ChainError::Fragment));
        p[6] = DSTOPTS;
        // The MH read as an options header: its length byte runs past the end.
        p[41] = 200;
        assert_eq!(Chain::walk(&p), Err(ChainError::Malformed));
        assert_eq!(Chain::walk(&p[..30]), Err(ChainError::Malformed));
    }

    #[test]
    fn short_upper_headers_leave_selectors_unset() {
        let s: IpAddr = a("2001:db8::1").into();
        assert_eq!(traffic(s, s, PROTO_UDP, &[0, 1, 0]).ports, None);
        assert_eq!(traffic(s, s, PROTO_UDP, &[0, 1, 0, 2]).ports, Some((1, 2)));
        assert_eq!(traffic(s, s, PROTO_MH, &[59, 0]).msg_type, None);
        assert_eq!(traffic(s, s, PROTO_ICMPV6, &[128]).msg_type, Some(128));
    }
}
