//! The fixed IPv6 header (RFC 8200 section 3): a read-only view and a Repr that writes it.
//!
//! Extension headers are not parsed here: [`crate::mip6`] walks and writes the few that
//! Mobile IPv6 signalling uses (RFC 6275 sections 6.3, 6.4).

use crate::WireError;
use std::net::Ipv6Addr;

/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Next Header value meaning "no next header" (RFC 8200 section 4.7).
pub const NEXT_HEADER_NONE: u8 = 59;
/// Next Header value of ICMPv6 (RFC 4443).
pub const NEXT_HEADER_ICMPV6: u8 = 58;

/// A read-only view of an IPv6 packet (RFC 8200 section 3). There are no setters: headers
/// are written by [`Ipv6Repr::emit`].
///
/// After [`Ipv6Packet::new_checked`] succeeded, every accessor is in bounds: the buffer holds
/// at least the header, the version is 6 and the payload length matches the buffer exactly.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without any check; accessors may panic on a short buffer.
    /// Use only on buffers this crate built or after [`Self::check`].
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer after checking that it is exactly one well-formed IPv6 packet.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Checks length, version and that the payload length covers the buffer exactly.
    ///
    /// A payload length of zero with a longer buffer would be a jumbogram (RFC 2675); m6t never
    /// carries those, so it is refused as trailing bytes.
    pub fn check(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < IPV6_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::BadVersion);
        }
        let total = IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([b[4], b[5]]));
        match b.len().cmp(&total) {
            std::cmp::Ordering::Less => Err(WireError::Truncated),
            std::cmp::Ordering::Greater => Err(WireError::TrailingBytes),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// The payload length field.
    pub fn payload_len(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[4], b[5]])
    }

    /// The Next Header field.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[6]
    }

    /// The Hop Limit field.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[7]
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[8..24]);
        Ipv6Addr::from(a)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[24..40]);
        Ipv6Addr::from(a)
    }

    /// The bytes after the fixed header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[IPV6_HEADER_LEN..]
    }

    /// The whole packet.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// The fields of a fixed IPv6 header, for building packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next Header.
    pub next_header: u8,
    /// Length of what follows the fixed header.
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
}

impl Ipv6Repr {
    /// Reads the header fields of a checked packet (Traffic Class and Flow Label are
    /// dropped).
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Self {
        Ipv6Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
        }
    }

    /// Writes the 40-byte header (traffic class and flow label zero) at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let h = buf
            .get_mut(..IPV6_HEADER_LEN)
            .ok_or(WireError::BufferTooSmall)?;
        h[0] = 0x60;
        h[1..4].fill(0);
        h[4..6].copy_from_slice(&self.payload_len.to_be_bytes());
        h[6] = self.next_header;
        h[7] = self.hop_limit;
        h[8..24].copy_from_slice(&self.src.octets());
        h[24..40].copy_from_slice(&self.dst.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let mut v = vec![0u8; 44];
        Ipv6Repr {
            src: "fd00:1::2".parse().unwrap(),
            dst: "2001:db8::1".parse().unwrap(),
            next_header: 17,
            payload_len: 4,
            hop_limit: 64,
        }
        .emit(&mut v)
        .unwrap();
        v
    }

    #[test]
    fn known_header_bytes() {
        let v = sample();
        assert_eq!(&v[..8], &[0x60, 0, 0, 0, 0, 4, 17, 64]);
        assert_eq!(v[8], 0xfd);
        assert_eq!(v[24..26], [0x20, 0x01]);
    }

    #[test]
    fn checks() {
        let v = sample();
        assert!(Ipv6Packet::new_checked(&v[..]).is_ok());
        assert_eq!(
            Ipv6Packet::new_checked(&v[..43]).unwrap_err(),
            WireError::Truncated
        );
        let mut long = v.clone();
        long.push(0);
        assert_eq!(
            Ipv6Packet::new_checked(&long[..]).unwrap_err(),
            WireError::TrailingBytes
        );
        let mut v4 = v.clone();
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&v4[..]).unwrap_err(),
            WireError::BadVersion
        );
        assert_eq!(
            Ipv6Packet::new_checked(&v[..39]).unwrap_err(),
            WireError::Truncated
        );
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Ipv6Packet::new_checked(&data[..]) {
                let r = Ipv6Repr::parse(&p);
                prop_assert_eq!(usize::from(r.payload_len) + 40, data.len());
                let _ = p.payload();
            }
        }

        #[test]
        fn round_trip(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), nh in any::<u8>(),
                      hl in any::<u8>(), len in 0u16..300) {
            let r = Ipv6Repr { src: src.into(), dst: dst.into(), next_header: nh,
                               payload_len: len, hop_limit: hl };
            let mut buf = vec![0u8; 40 + usize::from(len)];
            r.emit(&mut buf).unwrap();
            let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Ipv6Repr::parse(&p), r);
        }
    }
}
