//! The Internet checksum (RFC 1071) and the IPv6 pseudo-header of RFC 8200 section 8.1.

use std::net::Ipv6Addr;

/// Adds `data` to a running one's-complement sum (not yet folded).
pub fn accumulate(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

/// Folds a running sum into the final 16-bit one's-complement checksum.
pub fn finish(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 section 8.1) for an upper-layer packet.
pub fn pseudo_header(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, upper_len: u32) -> u32 {
    let mut sum = accumulate(0, &src.octets());
    sum = accumulate(sum, &dst.octets());
    sum = sum
        .wrapping_add(upper_len >> 16)
        .wrapping_add(upper_len & 0xffff);
    sum.wrapping_add(u32::from(next_header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: sum 0xddf2, checksum its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(accumulate(0, &data)), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(accumulate(0, &[0xab]), 0xab00);
    }
}
