//! The IKE header (RFC 7296 section 3.1): a zero-copy view checked once, and its Repr.

use crate::{be32, be64, flags, IkeError};

/// Length of the fixed IKE header (RFC 7296 section 3.1, Figure 4).
pub const IKE_HEADER_LEN: usize = 28;

/// The version octet every IKEv2 message carries: major 2, minor 0 (section 3.1).
const VERSION_2_0: u8 = 0x20;

/// Byte offsets of the header fields (RFC 7296 section 3.1, Figure 4).
mod field {
    use std::ops::Range;

    /// IKE SA Initiator's SPI.
    pub const ISPI: Range<usize> = 0..8;
    /// IKE SA Responder's SPI (zero in the first IKE_SA_INIT request).
    pub const RSPI: Range<usize> = 8..16;
    /// Next Payload: the type of the first payload.
    pub const NEXT_PAYLOAD: usize = 16;
    /// Major version (high 4 bits) and minor version (low 4 bits).
    pub const VERSION: usize = 17;
    /// Exchange Type.
    pub const EXCHANGE: usize = 18;
    /// Flags (I, V, R).
    pub const FLAGS: usize = 19;
    /// Message ID.
    pub const MESSAGE_ID: Range<usize> = 20..24;
    /// Length of the whole message, header included.
    pub const LENGTH: Range<usize> = 24..28;
}

/// A read-only view of an IKE message (RFC 7296 section 3.1): the header and the payload
/// chain after it, exactly as a UDP payload on port 500 carries it (after the Non-ESP Marker
/// on port 4500).
///
/// After [`IkeHeader::new_checked`] succeeded every accessor is in bounds: the buffer holds
/// the 28-byte header, the major version is 2 and the Length field equals the buffer length.
#[derive(Debug, Clone, Copy)]
pub struct IkeHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IkeHeader<T> {
    /// Wraps a buffer without any check; accessors may panic on a short buffer.
    /// Use only on buffers this crate built or after [`Self::check`].
    pub fn new_unchecked(buffer: T) -> Self {
        IkeHeader { buffer }
    }

    /// Wraps a buffer after [`Self::check`].
    pub fn new_checked(buffer: T) -> Result<Self, IkeError> {
        let h = Self::new_unchecked(buffer);
        h.check()?;
        Ok(h)
    }

    /// Checks what makes every accessor safe and the message whole (section 3.1):
    ///
    /// - [`IkeError::Truncated`]: shorter than 28 bytes or than the Length field;
    /// - [`IkeError::BadVersion`]: a major version other than 2 (section 2.5: answered with
    ///   INVALID_MAJOR_VERSION; the minor version is ignored on receipt);
    /// - [`IkeError::Malformed`]: a Length below 28;
    /// - [`IkeError::TrailingBytes`]: bytes after Length (UDP carries one message per
    ///   datagram, so anything more is not ours to skip).
    pub fn check(&self) -> Result<(), IkeError> {
        let b = self.buffer.as_ref();
        if b.len() < IKE_HEADER_LEN {
            return Err(IkeError::Truncated);
        }
        let major = b[field::VERSION] >> 4;
        if major != 2 {
            return Err(IkeError::BadVersion(major));
        }
        let len = be32(b, field::LENGTH.start) as usize;
        if len < IKE_HEADER_LEN {
            return Err(IkeError::Malformed);
        }
        if b.len() < len {
            return Err(IkeError::Truncated);
        }
        if b.len() > len {
            return Err(IkeError::TrailingBytes);
        }
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The IKE SA Initiator's SPI (section 3.1), chosen by the initiator, never zero.
    pub fn initiator_spi(&self) -> u64 {
        be64(self.bytes(), field::ISPI.start)
    }

    /// The IKE SA Responder's SPI (section 3.1): zero in the first IKE_SA_INIT request.
    pub fn responder_spi(&self) -> u64 {
        be64(self.bytes(), field::RSPI.start)
    }

    /// The type of the first payload (section 3.2), [`crate::payload_type::NONE`] if none.
    pub fn next_payload(&self) -> u8 {
        self.bytes()[field::NEXT_PAYLOAD]
    }

    /// The minor version, ignored on receipt (section 3.1).
    pub fn minor_version(&self) -> u8 {
        self.bytes()[field::VERSION] & 0x0f
    }

    /// The exchange type ([`crate::exchange`]).
    pub fn exchange_type(&self) -> u8 {
        self.bytes()[field::EXCHANGE]
    }

    /// The flags octet: [`flags::I`], [`flags::V`], [`flags::R`]; other bits are reserved.
    pub fn flags(&self) -> u8 {
        self.bytes()[field::FLAGS]
    }

    /// The Message ID (section 2.2): matches responses to requests, protects against replay.
    pub fn message_id(&self) -> u32 {
        be32(self.bytes(), field::MESSAGE_ID.start)
    }

    /// The Length field: equal to the buffer length in a checked message.
    pub fn length(&self) -> u32 {
        be32(self.bytes(), field::LENGTH.start)
    }

    /// The payload chain after the header (section 3.2), walked by [`crate::Payloads`].
    pub fn payload(&self) -> &[u8] {
        &self.bytes()[IKE_HEADER_LEN..]
    }

    /// The whole buffer.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes()
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// The IKE header's fields, for building messages (RFC 7296 section 3.1).
///
/// Next Payload and Length are not here: they describe the payload chain, so
/// [`crate::Message::emit`] fills them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    /// IKE SA Initiator's SPI.
    pub initiator_spi: u64,
    /// IKE SA Responder's SPI (zero in the first IKE_SA_INIT request).
    pub responder_spi: u64,
    /// Exchange type ([`crate::exchange`]).
    pub exchange_type: u8,
    /// I, V and R ([`flags`]); [`Self::parse`] drops the reserved bits, which are ignored
    /// on receipt and sent as zero (section 3.1).
    pub flags: u8,
    /// Message ID (section 2.2).
    pub message_id: u32,
}

impl HeaderRepr {
    /// Reads the header of a checked message.
    pub fn parse<T: AsRef<[u8]>>(h: &IkeHeader<T>) -> Self {
        HeaderRepr {
            initiator_spi: h.initiator_spi(),
            responder_spi: h.responder_spi(),
            exchange_type: h.exchange_type(),
            flags: h.flags() & (flags::I | flags::V | flags::R),
            message_id: h.message_id(),
        }
    }

    /// Writes the 28-byte header at the start of `buf`, version 2.0, with the given first
    /// payload type and total message length.
    pub fn emit(&self, next_payload: u8, length: u32, buf: &mut [u8]) -> Result<(), IkeError> {
        let h = buf
            .get_mut(..IKE_HEADER_LEN)
            .ok_or(IkeError::BufferTooSmall)?;
        h[field::ISPI].copy_from_slice(&self.initiator_spi.to_be_bytes());
        h[field::RSPI].copy_from_slice(&self.responder_spi.to_be_bytes());
        h[field::NEXT_PAYLOAD] = next_payload;
        h[field::VERSION] = VERSION_2_0;
        h[field::EXCHANGE] = self.exchange_type;
        h[field::FLAGS] = self.flags & (flags::I | flags::V | flags::R);
        h[field::MESSAGE_ID].copy_from_slice(&self.message_id.to_be_bytes());
        h[field::LENGTH].copy_from_slice(&length.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange;

    /// An IKE_SA_INIT request header with no payloads: ISPI 0x0102030405060708, RSPI 0,
    /// next payload 0, version 2.0, exchange 34, flags I, message ID 0, length 28.
    const HEADER: [u8; 28] = [
        1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 34, 0x08, 0, 0, 0, 0, 0, 0, 0, 28,
    ];

    #[test]
    fn fields_and_round_trip() {
        let h = IkeHeader::new_checked(&HEADER[..]).unwrap();
        let r = HeaderRepr::parse(&h);
        assert_eq!(r.initiator_spi, 0x0102_0304_0506_0708);
        assert_eq!(r.responder_spi, 0);
        assert_eq!(r.exchange_type, exchange::IKE_SA_INIT);
        assert_eq!(r.flags, flags::I);
        assert_eq!(h.length(), 28);
        assert!(h.payload().is_empty());
        let mut out = [0u8; 28];
        r.emit(0, 28, &mut out).unwrap();
        assert_eq!(out, HEADER);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            IkeHeader::new_checked(&HEADER[..27]).unwrap_err(),
            IkeError::Truncated
        );
        let mut v1 = HEADER;
        v1[17] = 0x10;
        assert_eq!(
            IkeHeader::new_checked(&v1[..]).unwrap_err(),
            IkeError::BadVersion(1)
        );
        let mut minor = HEADER;
        minor[17] = 0x21;
        assert!(IkeHeader::new_checked(&minor[..]).is_ok(), "minor ignored");
        let mut long = HEADER.to_vec();
        long.push(0);
        assert_eq!(
            IkeHeader::new_checked(&long[..]).unwrap_err(),
            IkeError::TrailingBytes
        );
        let mut claims_more = HEADER;
        claims_more[27] = 29;
        assert_eq!(
            IkeHeader::new_checked(&claims_more[..]).unwrap_err(),
            IkeError::Truncated
        );
        let mut too_small = HEADER;
        too_small[27] = 27;
        assert_eq!(
            IkeHeader::new_checked(&too_small[..]).unwrap_err(),
            IkeError::Malformed
        );
        let mut short = [0u8; 27];
        assert_eq!(
            HeaderRepr::parse(&IkeHeader::new_checked(&HEADER[..]).unwrap())
                .emit(0, 28, &mut short)
                .unwrap_err(),
            IkeError::BufferTooSmall
        );
    }
}
