//! The tunnel-interface module of seed 001 section 3, sans-IO: below the protocol module,
//! it decapsulates what the sockets received (UDP/IPv4 port 4191 in vanilla or TLV format,
//! IP-in-IP over IPv4 or IPv6, signalling captured with its extension headers), records the
//! outer source of each packet (the IPv4 address and UDP port after any NAT: what NAT
//! detection compares, RFC 5555 section 4.1), and says how to encapsulate data toward a
//! peer, ESP (protocol 50, UDP 4500) included. The protocol module sees only [`Up::Signal`]
//! with its [`Outer`], recorded here before IPsec ([`crate::dsmip::protect`]) opened the
//! packet: what seed 001 req. #4 needs without changing IPsec.

use m6t_wire::mh::NEXT_HEADER_MH;
use m6t_wire::mip6::{self, Signal};
use m6t_wire::{tlv, Ipv4Packet, Ipv6Packet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};

/// The DSMIPv6 UDP port (RFC 5555 section 4.1, IANA "dsmipv6").
pub const DSMIP_PORT: u16 = 4191;
/// IP protocol number of IPv4 inside IP.
pub const PROTO_IPV4: u8 = 4;
/// IP protocol number of IPv6 inside IP.
pub const PROTO_IPV6: u8 = 41;
/// IP protocol number of ESP (payload protected in tunnel mode, RFC 5555 section 5).
pub const PROTO_ESP: u8 = 50;
/// The UDP port of ESP through NATs (RFC 3948; RFC 5555 section 5: payload protection from
/// an IPv4 network).
pub const ESP_UDP_PORT: u16 = m6t_wire::esp::NAT_T_PORT;

/// Where a packet came from, as the outermost header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outer {
    /// UDP/IPv4: the source address and port (the NAT's, when there is one).
    Udp(SocketAddrV4),
    /// IP-in-IPv4 from this address.
    Ipv4(Ipv4Addr),
    /// IP-in-IPv6 or signalling over IPv6 from this address.
    Ipv6(Ipv6Addr),
}

impl From<IpAddr> for Outer {
    /// The outer source of IP-in-IP or of ESP after an IP header.
    fn from(a: IpAddr) -> Outer {
        match a {
            IpAddr::V4(a) => Outer::Ipv4(a),
            IpAddr::V6(a) => Outer::Ipv6(a),
        }
    }
}

/// Why the tunnel-interface module dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TifDrop {
    /// The UDP payload is neither an IP packet nor a well-formed TLV header.
    BadEncapsulation,
    /// The inner packet's header is malformed.
    BadInner,
    /// Signalling that failed a check (extension headers, MH length or checksum).
    BadSignal,
    /// A captured packet with extension headers that is not signalling (e.g. an MLD
    /// report): the kernel handles it, nothing to count.
    NotSignal,
}

/// What a received packet is, once the outer headers are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Up<'a> {
    /// A Mobility Header for the protocol module.
    Signal {
        /// How it arrived.
        outer: Outer,
        /// The parsed signalling packet.
        signal: Signal,
        /// Whether it came in the TLV format.
        tlv: bool,
    },
    /// A data packet for the TUN interface.
    Data {
        /// How it arrived.
        outer: Outer,
        /// The inner packet.
        inner: &'a [u8],
        /// Its source address.
        src: IpAddr,
        /// Its destination address.
        dst: IpAddr,
    },
    /// Dropped.
    Drop(TifDrop),
}

/// Source and destination of an IPv4 or IPv6 packet, checked against its length fields.
pub fn addresses(p: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match p.first()? >> 4 {
        6 => {
            let v = Ipv6Packet::new_checked(p).ok()?;
            Some((v.src_addr().into(), v.dst_addr().into()))
        }
        4 => {
            let v = Ipv4Packet::new_checked(p).ok()?;
            // An inner packet is exactly one datagram: no trailing bytes to smuggle.
            if usize::from(v.total_len()) != p.len() {
                return None;
            }
            Some((v.src_addr().into(), v.dst_addr().into()))
        }
        _ => None,
    }
}

/// What an inner packet is: signalling for the protocol module, or data for the TUN.
pub fn inner_up(outer: Outer, inner: &[u8], tlv: bool) -> Up<'_> {
    let Some((src, dst)) = addresses(inner) else {
        return Up::Drop(TifDrop::BadInner);
    };
    // An IPv6 packet whose header chain ends in a Mobility Header is signalling; other
    // chains (data with extension headers) go to the TUN as they are.
    if inner[0] >> 4 == 6
        && matches!(
            inner[6],
            NEXT_HEADER_MH | mip6::NEXT_HEADER_DSTOPTS | mip6::NEXT_HEADER_ROUTING
        )
    {
        match mip6::parse(inner) {
            Ok(signal) => return Up::Signal { outer, signal, tlv },
            Err(mip6::SignalError::NotMh) => {}
            Err(_) => return Up::Drop(TifDrop::BadSignal),
        }
    }
    Up::Data {
        outer,
        inner,
        src,
        dst,
    }
}

/// Where the inner packet of a UDP payload starts, and whether it came in the TLV format
/// (RFC 5845 section 7.2, told apart by its first nibble).
pub fn udp_inner(payload: &[u8]) -> Result<(usize, bool), TifDrop> {
    match tlv::decode(payload) {
        // The inner packet is always the payload's tail.
        Ok(tlv::Inner::Ipv4(p)) | Ok(tlv::Inner::Ipv6(p)) => {
            Ok((payload.len() - p.len(), payload[0] >> 4 == 0))
        }
        Err(_) => Err(TifDrop::BadEncapsulation),
    }
}

/// A UDP payload received on port 4191 (RFC 5555 section 4.1; TLV format of RFC 5845
/// section 7.2 told apart by its first nibble).
pub fn from_udp(from: SocketAddrV4, payload: &[u8]) -> Up<'_> {
    let outer = Outer::Udp(from);
    match tlv::decode(payload) {
        Ok(tlv::Inner::Ipv4(p)) | Ok(tlv::Inner::Ipv6(p)) => {
            let tlv = payload.first().is_some_and(|b| b >> 4 == 0);
            inner_up(outer, p, tlv)
        }
        Err(_) => Up::Drop(TifDrop::BadEncapsulation),
    }
}

/// The payload of an IP-in-IP packet (protocol 4 or 41) from `src`.
pub fn from_ip_in_ip(src: IpAddr, inner: &[u8]) -> Up<'_> {
    inner_up(src.into(), inner, false)
}

/// A whole IPv6 packet with extension headers, captured below the kernel's IPv6 layer
/// (a BU with a Home Address option, a BA with a type 2 Routing Header: the kernel here
/// has no MIP6 support and would discard both).
pub fn from_captured(pkt: &[u8]) -> Up<'_> {
    match mip6::parse(pkt) {
        Ok(signal) => Up::Signal {
            outer: Outer::Ipv6(signal.src),
            signal,
            tlv: false,
        },
        Err(mip6::SignalError::NotMh) => Up::Drop(TifDrop::NotSignal),
        Err(_) => Up::Drop(TifDrop::BadSignal),
    }
}

/// How to send an inner packet toward a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// As the payload of a UDP datagram to this address and port; `tlv`: behind the 4-byte
    /// TLV header built by [`tlv_header`].
    Udp {
        /// Destination.
        to: SocketAddrV4,
        /// TLV format.
        tlv: bool,
    },
    /// IP-in-IPv4 (protocol 4 or 41) to this address.
    Ipv4 {
        /// Destination.
        to: Ipv4Addr,
        /// Protocol number of the outer header.
        proto: u8,
    },
    /// IP-in-IPv6 (Next Header 4 or 41) to this address.
    Ipv6 {
        /// Destination.
        to: Ipv6Addr,
        /// Next Header of the outer header.
        proto: u8,
    },
    /// ESP after an IPv4 or IPv6 header with protocol 50 to this address (IPv4/ESP/IP
    /// without a NAT, IPv6/ESP/IP from an IPv6 care-of address).
    EspIp {
        /// Destination: the care-of address (seed 001 req. #1: the SA's own tunnel end is the
        /// home address, replaced here after IPsec).
        to: IpAddr,
    },
    /// ESP in UDP between ports 4500 (RFC 3948 section 2.1): IPv4/UDP 4500/ESP/IP behind a
    /// NAT.
    EspUdp {
        /// Destination (the NAT's address and port when there is one).
        to: SocketAddrV4,
    },
}

/// Whether a packet read from the TUN is for the TUN's own link only (the kernel's router
/// solicitations and MLD reports when the interface comes up): a link-local or
/// interface/link-scope multicast destination (RFC 4291 section 2.7), or IPv4's link-local,
/// broadcast and local network control block (224.0.0.0/24, RFC 5771). Such a packet never
/// crosses a tunnel (RFC 6275 section 10.4.2 keeps link-local traffic off it), and dropping
/// it is not a fault an operator should look into.
pub fn link_local_only(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V6(d) => {
            let s = d.segments()[0];
            (s & 0xffc0) == 0xfe80 || (d.is_multicast() && (s & 0x000f) <= 2)
        }
        IpAddr::V4(d) => d.is_broadcast() || d.is_link_local() || d.octets()[..3] == [224, 0, 0],
    }
}

/// The protocol number naming an inner packet's version (4 or 41).
pub fn proto_of(inner: &[u8]) -> u8 {
    if inner.first().is_some_and(|b| b >> 4 == 4) {
        PROTO_IPV4
    } else {
        PROTO_IPV6
    }
}

/// The TLV header (RFC 5845 section 7.2) for an inner packet.
pub fn tlv_header(inner: &[u8]) -> [u8; tlv::TLV_HEADER_LEN] {
    let mut h = [0u8; tlv::TLV_HEADER_LEN];
    // The length fits: inner packets come from a TUN whose MTU is below 64 KiB.
    let _ = tlv::emit_header(proto_of(inner), inner.len().min(0xffff), &mut h);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use m6t_wire::mh::{MhMessage, MhRepr};
    use m6t_wire::mip6::HomeIn;
    use m6t_wire::Ipv6Repr;

    fn a6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn data6() -> Vec<u8> {
        let mut b = vec![0u8; 48];
        Ipv6Repr {
            src: a6("2001:db8:1::a"),
            dst: a6("2001:db8:2::10"),
            next_header: 59,
            payload_len: 8,
            hop_limit: 64,
        }
        .emit(&mut b)
        .unwrap();
        b
    }

    fn bu_packet() -> Vec<u8> {
        let mh = MhRepr {
            msg: MhMessage::Bu {
                seq: 1,
                flags: 0xc000,
                lifetime: 10,
            },
            options: vec![],
        };
        let mut b = vec![0u8; 128];
        let n = mip6::emit(
            a6("2001:db8:1::a"),
            a6("2001:db8:1::1"),
            HomeIn::Source,
            &mh,
            &mut b,
        )
        .unwrap();
        b.truncate(n);
        b
    }

    #[test]
    fn udp_payloads_are_told_apart() {
        let from: SocketAddrV4 = "203.0.113.2:1024".parse().unwrap();
        let d = data6();
        assert!(matches!(from_udp(from, &d), Up::Data { outer: Outer::Udp(f), .. } if f == from));
        let bu = bu_packet();
        assert!(matches!(from_udp(from, &bu), Up::Signal { tlv: false, .. }));
        let mut t = tlv_header(&bu).to_vec();
        t.extend_from_slice(&bu);
        assert!(matches!(from_udp(from, &t), Up::Signal { tlv: true, .. }));
        assert_eq!(
            from_udp(from, &[0x20, 1, 2]),
            Up::Drop(TifDrop::BadEncapsulation)
        );
        assert_eq!(from_udp(from, &d[..30]), Up::Drop(TifDrop::BadInner));
        let mut bad = bu.clone();
        bad[45] ^= 1;
        assert_eq!(from_udp(from, &bad), Up::Drop(TifDrop::BadSignal));
    }

    #[test]
    fn only_link_scoped_destinations_stay_on_the_tun() {
        for d in [
            "ff02::2",
            "ff02::16",
            "fe80::1",
            "ff01::1",
            "224.0.0.22",
            "169.254.1.1",
            "255.255.255.255",
        ] {
            assert!(link_local_only(d.parse().unwrap()), "{d}");
        }
        for d in [
            "2001:db8::1",
            "ff0e::1",
            "ff05::2",
            "198.51.100.1",
            "239.1.1.1",
        ] {
            assert!(!link_local_only(d.parse().unwrap()), "{d}");
        }
    }

    #[test]
    fn ipv4_inner_addresses() {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[12..16].copy_from_slice(&[198, 51, 100, 10]);
        p[16..20].copy_from_slice(&[198, 51, 100, 130]);
        let up = from_ip_in_ip("203.0.113.9".parse().unwrap(), &p);
        assert!(matches!(up, Up::Data { src, .. } if src == IpAddr::from([198, 51, 100, 10])));
        assert_eq!(proto_of(&p), PROTO_IPV4);
        p[3] = 27;
        assert_eq!(
            from_ip_in_ip("203.0.113.9".parse().unwrap(), &p),
            Up::Drop(TifDrop::BadInner)
        );
    }
}
