//! ICMPv6 (RFC 4443): the Packet Too Big message a tunnel endpoint sends when an IPv6 packet
//! exceeds the tunnel MTU (RFC 4443 section 3.2, RFC 8201), and the error-message test of
//! section 2.4 (e) that forbids answering an error with an error.

use crate::checksum;
use crate::ipv6::{Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN, NEXT_HEADER_ICMPV6};
use crate::WireError;
use std::net::Ipv6Addr;

/// ICMPv6 type of Packet Too Big.
pub const TYPE_PACKET_TOO_BIG: u8 = 2;
/// An ICMPv6 error message must not exceed the IPv6 minimum MTU (RFC 4443 section 2.4 (c)).
pub const MIN_MTU: usize = 1280;
/// Longest Packet Too Big this module emits: a buffer of this size always suffices.
pub const MAX_ERROR_LEN: usize = MIN_MTU;
const ICMP_HEADER_LEN: usize = 8;

/// True when a checked IPv6 packet carries an ICMPv6 error message (type < 128) directly
/// after its fixed header. Such packets never get an ICMPv6 error in answer.
pub fn is_icmpv6_error<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> bool {
    p.next_header() == NEXT_HEADER_ICMPV6 && p.payload().first().is_some_and(|t| *t < 128)
}

/// Builds a Packet Too Big from `src` to the source of `invoking`, announcing `mtu`, into
/// `out`; returns its length. As much of the invoking packet is quoted as fits in 1280 bytes.
pub fn emit_packet_too_big<T: AsRef<[u8]>>(
    src: Ipv6Addr,
    invoking: &Ipv6Packet<T>,
    mtu: u32,
    out: &mut [u8],
) -> Result<usize, WireError> {
    let quoted = invoking.as_bytes();
    let quote_len = quoted
        .len()
        .min(MAX_ERROR_LEN - IPV6_HEADER_LEN - ICMP_HEADER_LEN);
    let icmp_len = ICMP_HEADER_LEN + quote_len;
    let total = IPV6_HEADER_LEN + icmp_len;
    if out.len() < total {
        return Err(WireError::BufferTooSmall);
    }
    let dst = invoking.src_addr();
    Ipv6Repr {
        src,
        dst,
        next_header: NEXT_HEADER_ICMPV6,
        payload_len: icmp_len as u16,
        hop_limit: 64,
    }
    .emit(out)?;
    let icmp = &mut out[IPV6_HEADER_LEN..total];
    icmp[0] = TYPE_PACKET_TOO_BIG;
    icmp[1] = 0;
    icmp[2..4].fill(0);
    icmp[4..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..].copy_from_slice(&quoted[..quote_len]);
    let sum = checksum::accumulate(
        checksum::pseudo_header(&src, &dst, NEXT_HEADER_ICMPV6, icmp_len as u32),
        icmp,
    );
    icmp[2..4].copy_from_slice(&checksum::finish(sum).to_be_bytes());
    Ok(total)
}

/// Verifies the ICMPv6 checksum of a checked packet whose Next Header is ICMPv6.
pub fn checksum_ok<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> bool {
    let icmp = p.payload();
    let sum = checksum::accumulate(
        checksum::pseudo_header(
            &p.src_addr(),
            &p.dst_addr(),
            NEXT_HEADER_ICMPV6,
            icmp.len() as u32,
        ),
        icmp,
    );
    checksum::finish(sum) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big_packet(len: usize) -> Vec<u8> {
        let mut v = vec![0xaau8; len];
        Ipv6Repr {
            src: "2001:db8:1::10".parse().unwrap(),
            dst: "fd00:1::5".parse().unwrap(),
            next_header: 17,
            payload_len: (len - 40) as u16,
            hop_limit: 63,
        }
        .emit(&mut v)
        .unwrap();
        v
    }

    #[test]
    fn ptb_is_well_formed_and_capped() {
        let inv = big_packet(1500);
        let p = Ipv6Packet::new_checked(&inv[..]).unwrap();
        let mut out = [0u8; MAX_ERROR_LEN];
        let gw: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
        let n = emit_packet_too_big(gw, &p, 1472, &mut out).unwrap();
        assert_eq!(n, 1280);
        let e = Ipv6Packet::new_checked(&out[..n]).unwrap();
        assert_eq!(e.dst_addr(), p.src_addr());
        assert_eq!(e.src_addr(), gw);
        assert_eq!(e.payload()[0], TYPE_PACKET_TOO_BIG);
        assert_eq!(&e.payload()[4..8], &1472u32.to_be_bytes());
        assert!(checksum_ok(&e));
        assert!(is_icmpv6_error(&e));
        assert!(!is_icmpv6_error(&p));
        // Flip one bit: the checksum must notice.
        let mut bad = out;
        bad[100] ^= 1;
        assert!(!checksum_ok(&Ipv6Packet::new_checked(&bad[..n]).unwrap()));
    }

    #[test]
    fn small_invoking_packet_quoted_whole() {
        let inv = big_packet(100);
        let p = Ipv6Packet::new_checked(&inv[..]).unwrap();
        let mut out = [0u8; MAX_ERROR_LEN];
        let n = emit_packet_too_big(Ipv6Addr::LOCALHOST, &p, 90, &mut out).unwrap();
        assert_eq!(n, 40 + 8 + 100);
        let mut small = [0u8; 100];
        assert_eq!(
            emit_packet_too_big(Ipv6Addr::LOCALHOST, &p, 90, &mut small),
            Err(WireError::BufferTooSmall)
        );
    }
}
