//! The ESP header (RFC 4303 section 2) and the classification of what arrives on UDP port 4500
//! (RFC 3948 section 2).
//!
//! Only the two cleartext fields of ESP, the SPI and the Sequence Number, can be read without
//! the Security Association: the rest (IV, ciphertext, trailer, ICV) has lengths that depend on
//! the SA's algorithm, so [`EspPacket::payload`] hands it out as opaque bytes for the IPsec
//! crate to open. [`EspRepr`] writes the 8-byte header.

use crate::WireError;

/// Length of the cleartext ESP header: SPI and Sequence Number (RFC 4303 section 2).
pub const ESP_HEADER_LEN: usize = 8;
/// The IP protocol number of ESP (RFC 4303 section 2), in an IPv4 Protocol or an IPv6 Next
/// Header field.
pub const IPPROTO_ESP: u8 = 50;
/// The UDP port of IKE and UDP-encapsulated ESP behind a NAT (RFC 3948 section 2.1,
/// RFC 7296 section 2.23).
pub const NAT_T_PORT: u16 = 4500;
/// The Non-ESP Marker: four zero bytes where an ESP packet has its SPI, telling an IKE
/// message on port 4500 from ESP (RFC 3948 section 2.2).
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// The one byte of a NAT-keepalive (RFC 3948 section 2.3).
pub const NAT_KEEPALIVE: u8 = 0xff;

/// Byte offsets of the header fields (RFC 4303 section 2, Figure 1).
mod field {
    use std::ops::Range;

    /// Security Parameters Index.
    pub const SPI: Range<usize> = 0..4;
    /// Sequence Number (the low 32 bits when Extended Sequence Numbers are used).
    pub const SEQ: Range<usize> = 4..8;
}

/// A read-only view of an ESP packet (RFC 4303 section 2): the bytes from the SPI to the end of
/// the ICV, as they follow an IP header with protocol 50 or a UDP header on port 4500.
///
/// After [`EspPacket::new_checked`] succeeded, every accessor is in bounds: the buffer holds at
/// least the 8-byte header and the SPI is not zero.
#[derive(Debug, Clone, Copy)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    /// Wraps a buffer without any check; accessors may panic on a short buffer.
    /// Use only on buffers this crate built or after [`Self::check`].
    pub fn new_unchecked(buffer: T) -> Self {
        EspPacket { buffer }
    }

    /// Wraps a buffer after [`Self::check`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Checks what makes every accessor safe:
    ///
    /// - [`WireError::Truncated`]: shorter than the 8-byte header;
    /// - [`WireError::Malformed`]: the SPI is zero, which RFC 4303 section 2.1 reserves for
    ///   local use and forbids on the wire (and which on port 4500 is the Non-ESP Marker of an
    ///   IKE message, RFC 3948 section 2.2).
    ///
    /// Whether the rest is long enough for the SA's IV, trailer and ICV is for the SA to say.
    pub fn check(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < ESP_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::SPI] == NON_ESP_MARKER {
            return Err(WireError::Malformed);
        }
        Ok(())
    }

    fn u32_at(&self, r: std::ops::Range<usize>) -> u32 {
        let b = &self.buffer.as_ref()[r];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The Security Parameters Index (RFC 4303 section 2.1): with the destination, it names the
    /// SA the receiver opens the packet with. Never zero in a checked packet.
    pub fn spi(&self) -> u32 {
        self.u32_at(field::SPI)
    }

    /// The Sequence Number field (RFC 4303 section 2.2): with Extended Sequence Numbers, only
    /// the low 32 bits of the 64-bit counter (section 2.2.1). Not integrity-protected until
    /// the SA verified the ICV.
    pub fn seq(&self) -> u32 {
        self.u32_at(field::SEQ)
    }

    /// Everything after the header: IV, ciphertext (payload, padding, Pad Length, Next
    /// Header) and ICV, opaque without the SA (RFC 4303 section 2, Figure 1).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[ESP_HEADER_LEN..]
    }

    /// The whole buffer.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// The cleartext ESP header, for building packets (RFC 4303 section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspRepr {
    /// Security Parameters Index (RFC 4303 section 2.1); zero is refused by [`Self::emit`].
    pub spi: u32,
    /// Sequence Number, the low 32 bits of the counter (RFC 4303 sections 2.2, 2.2.1).
    pub seq: u32,
}

impl EspRepr {
    /// Reads the header of a checked packet.
    pub fn parse<T: AsRef<[u8]>>(p: &EspPacket<T>) -> Self {
        EspRepr {
            spi: p.spi(),
            seq: p.seq(),
        }
    }

    /// Writes the 8-byte header at the start of `buf`.
    ///
    /// Fails with [`WireError::BufferTooSmall`] if `buf` is shorter than 8 bytes and with
    /// [`WireError::Malformed`] for SPI zero (RFC 4303 section 2.1: never sent).
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        if self.spi == 0 {
            return Err(WireError::Malformed);
        }
        let h = buf
            .get_mut(..ESP_HEADER_LEN)
            .ok_or(WireError::BufferTooSmall)?;
        h[field::SPI].copy_from_slice(&self.spi.to_be_bytes());
        h[field::SEQ].copy_from_slice(&self.seq.to_be_bytes());
        Ok(())
    }
}

/// What a UDP payload on port 4500 is (RFC 3948 section 2).
#[derive(Debug, Clone, Copy)]
pub enum Udp4500<'a> {
    /// UDP-encapsulated ESP (section 2.1): the first four bytes are a nonzero SPI.
    Esp(EspPacket<&'a [u8]>),
    /// An IKE message (section 2.2): the bytes after the Non-ESP Marker, uninterpreted.
    Ike(&'a [u8]),
    /// A NAT-keepalive (section 2.3), which the receiver ignores.
    KeepAlive,
}

/// Tells apart the three things RFC 3948 section 2 sends on UDP port 4500, from the UDP
/// payload alone:
///
/// - exactly one byte 0xff: a NAT-keepalive (section 2.3);
/// - four zero bytes first: the Non-ESP Marker of an IKE message (section 2.2);
/// - otherwise an ESP packet, checked by [`EspPacket::new_checked`]: anything shorter than the
///   8-byte ESP header (including an empty payload and a short keep-alive look-alike) is
///   [`WireError::Truncated`].
pub fn classify_udp_4500(payload: &[u8]) -> Result<Udp4500<'_>, WireError> {
    if payload == &[NAT_KEEPALIVE][..] {
        return Ok(Udp4500::KeepAlive);
    }
    if let Some(rest) = payload.strip_prefix(&NON_ESP_MARKER) {
        return Ok(Udp4500::Ike(rest));
    }
    EspPacket::new_checked(payload).map(Udp4500::Esp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// SPI 0x00001001, sequence 0xfffffffe, then four bytes standing for IV, ciphertext, ICV.
    const PACKET: [u8; 12] = [
        0x00, 0x00, 0x10, 0x01, 0xff, 0xff, 0xff, 0xfe, 0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn header_fields() {
        let p = EspPacket::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.spi(), 0x1001);
        assert_eq!(p.seq(), 0xffff_fffe);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(p.as_bytes(), &PACKET);
        assert_eq!(
            EspRepr::parse(&p),
            EspRepr {
                spi: 0x1001,
                seq: 0xffff_fffe
            }
        );
        assert_eq!(p.into_inner().len(), 12);
    }

    #[test]
    fn header_only_has_empty_payload() {
        let p = EspPacket::new_checked(&PACKET[..8]).unwrap();
        assert!(p.payload().is_empty());
    }

    #[test]
    fn rejections() {
        for n in 0..ESP_HEADER_LEN {
            assert_eq!(
                EspPacket::new_checked(&PACKET[..n]).unwrap_err(),
                WireError::Truncated,
                "length {n}"
            );
        }
        let mut zero_spi = PACKET;
        zero_spi[..4].fill(0);
        assert_eq!(
            EspPacket::new_checked(&zero_spi[..]).unwrap_err(),
            WireError::Malformed
        );
    }

    #[test]
    fn emit_writes_the_header() {
        let mut b = [0xaau8; 9];
        EspRepr {
            spi: 0x1001,
            seq: 0xffff_fffe,
        }
        .emit(&mut b)
        .unwrap();
        assert_eq!(&b[..8], &PACKET[..8]);
        assert_eq!(b[8], 0xaa, "nothing written past the header");
        let r = EspRepr { spi: 1, seq: 0 };
        assert_eq!(r.emit(&mut [0u8; 7]), Err(WireError::BufferTooSmall));
        let zero = EspRepr { spi: 0, seq: 1 };
        assert_eq!(zero.emit(&mut b), Err(WireError::Malformed));
    }

    #[test]
    fn classify_keepalive() {
        assert!(matches!(classify_udp_4500(&[0xff]), Ok(Udp4500::KeepAlive)));
        // Only the one-byte form is a keep-alive; other short payloads are truncated ESP.
        for short in [&[][..], &[0x00], &[0xfe], &[0xff, 0xff], &[0xff, 0, 0]] {
            assert_eq!(
                classify_udp_4500(short).unwrap_err(),
                WireError::Truncated,
                "{short:?}"
            );
        }
    }

    #[test]
    fn classify_ike() {
        let ike = [0, 0, 0, 0, 1, 2, 3];
        match classify_udp_4500(&ike) {
            Ok(Udp4500::Ike(rest)) => assert_eq!(rest, &[1, 2, 3]),
            other => panic!("{other:?}"),
        }
        // The marker alone is an (empty, for the IKE parser to refuse) IKE message.
        assert!(matches!(classify_udp_4500(&[0; 4]), Ok(Udp4500::Ike(&[]))));
    }

    #[test]
    fn classify_esp() {
        match classify_udp_4500(&PACKET) {
            Ok(Udp4500::Esp(p)) => {
                assert_eq!(p.spi(), 0x1001);
                assert_eq!(p.seq(), 0xffff_fffe);
            }
            other => panic!("{other:?}"),
        }
        // An SPI whose first byte is 0xff is ESP, not a keep-alive.
        let mut b = PACKET;
        b[0] = 0xff;
        assert!(matches!(classify_udp_4500(&b), Ok(Udp4500::Esp(_))));
        // Nonzero SPI but shorter than the header.
        assert_eq!(
            classify_udp_4500(&PACKET[..7]).unwrap_err(),
            WireError::Truncated
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = EspPacket::new_checked(&data[..]) {
                prop_assert!(p.spi() != 0);
                prop_assert_eq!(p.payload().len() + ESP_HEADER_LEN, data.len());
                let _ = p.seq();
                let r = EspRepr::parse(&p);
                let mut h = [0u8; ESP_HEADER_LEN];
                r.emit(&mut h).unwrap();
                prop_assert_eq!(&h[..], &data[..ESP_HEADER_LEN]);
            }
            match classify_udp_4500(&data) {
                Ok(Udp4500::KeepAlive) => prop_assert_eq!(&data[..], &[0xff][..]),
                Ok(Udp4500::Ike(rest)) => {
                    prop_assert_eq!(&data[..4], &[0u8; 4][..]);
                    prop_assert_eq!(rest, &data[4..]);
                }
                Ok(Udp4500::Esp(p)) => {
                    prop_assert!(data.len() >= ESP_HEADER_LEN);
                    prop_assert!(p.spi() != 0);
                }
                Err(e) => prop_assert!(e == WireError::Truncated && data.len() < 8),
            }
        }

        #[test]
        fn round_trip(spi in 1u32.., seq in any::<u32>(), tail in proptest::collection::vec(any::<u8>(), 0..20)) {
            let mut b = vec![0u8; ESP_HEADER_LEN];
            EspRepr { spi, seq }.emit(&mut b).unwrap();
            b.extend_from_slice(&tail);
            let p = EspPacket::new_checked(&b[..]).unwrap();
            prop_assert_eq!(EspRepr::parse(&p), EspRepr { spi, seq });
            prop_assert_eq!(p.payload(), &tail[..]);
            prop_assert!(matches!(classify_udp_4500(&b), Ok(Udp4500::Esp(_))));
        }
    }
}
