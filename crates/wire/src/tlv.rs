//! The UDP tunnelling formats of DSMIPv6: vanilla (the IPv4 or IPv6 packet directly as the
//! UDP payload, RFC 5555 section 4.1) and the TLV header of RFC 5845 section 7.2 that
//! draft-06 section 4.1 describes as an option (`Type(4)=0 Res(4) Next Header(8)
//! Length(16)`, the Type nibble 0 telling it apart from IPv4 (4) and IPv6 (6) headers).

use crate::WireError;

/// Length of the TLV header.
pub const TLV_HEADER_LEN: usize = 4;
/// Next Header of an IPv4 payload.
pub const NEXT_HEADER_IPV4: u8 = 4;
/// Next Header of an IPv6 payload.
pub const NEXT_HEADER_IPV6: u8 = 41;

/// What a UDP payload of the DSMIPv6 tunnel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inner<'a> {
    /// An IPv4 packet.
    Ipv4(&'a [u8]),
    /// An IPv6 packet.
    Ipv6(&'a [u8]),
}

/// Decodes a tunnel UDP payload in either format. A TLV header must announce exactly the
/// bytes that follow and a payload of the version its Next Header names.
pub fn decode(p: &[u8]) -> Result<Inner<'_>, WireError> {
    let first = *p.first().ok_or(WireError::Truncated)?;
    match first >> 4 {
        4 => Ok(Inner::Ipv4(p)),
        6 => Ok(Inner::Ipv6(p)),
        0 => {
            if p.len() < TLV_HEADER_LEN {
                return Err(WireError::Truncated);
            }
            let len = usize::from(u16::from_be_bytes([p[2], p[3]]));
            let body = &p[TLV_HEADER_LEN..];
            if body.len() != len {
                return Err(if body.len() < len {
                    WireError::Truncated
                } else {
                    WireError::TrailingBytes
                });
            }
            let version = body.first().map(|b| b >> 4);
            match (p[1], version) {
                (NEXT_HEADER_IPV4, Some(4)) => Ok(Inner::Ipv4(body)),
                (NEXT_HEADER_IPV6, Some(6)) => Ok(Inner::Ipv6(body)),
                _ => Err(WireError::Malformed),
            }
        }
        _ => Err(WireError::BadVersion),
    }
}

/// Writes the TLV header for a payload of `len` bytes with `next_header` into `buf`.
pub fn emit_header(next_header: u8, len: usize, buf: &mut [u8]) -> Result<(), WireError> {
    let len = u16::try_from(len).map_err(|_| WireError::Malformed)?;
    let h = buf
        .get_mut(..TLV_HEADER_LEN)
        .ok_or(WireError::BufferTooSmall)?;
    h[0] = 0;
    h[1] = next_header;
    h[2..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn both_formats() {
        let v6 = [0x60u8, 0, 0, 0, 0, 0, 59, 64];
        assert_eq!(decode(&v6), Ok(Inner::Ipv6(&v6[..])));
        let v4 = [0x45u8, 0, 0, 20];
        assert_eq!(decode(&v4), Ok(Inner::Ipv4(&v4[..])));
        let mut t = vec![0u8; 4];
        emit_header(NEXT_HEADER_IPV6, v6.len(), &mut t).unwrap();
        assert_eq!(t, [0, 41, 0, 8]);
        t.extend_from_slice(&v6);
        assert_eq!(decode(&t), Ok(Inner::Ipv6(&v6[..])));
        // Next Header and payload version must agree; the length must be exact.
        let mut bad = t.clone();
        bad[1] = NEXT_HEADER_IPV4;
        assert_eq!(decode(&bad), Err(WireError::Malformed));
        assert_eq!(decode(&t[..t.len() - 1]), Err(WireError::Truncated));
        let mut long = t.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(WireError::TrailingBytes));
        assert_eq!(decode(&[0x10]), Err(WireError::BadVersion));
        assert_eq!(decode(&[]), Err(WireError::Truncated));
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(p in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&p);
        }
    }
}
