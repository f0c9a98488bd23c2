//! Payload bodies of RFC 7296 sections 3.4 to 3.14 other than SA: each a Repr that borrows
//! its variable part from the message, with `parse` (the body after the generic header) and
//! `emit` (into a caller's buffer, returning the bytes written).

use crate::{be16, id_type, ts_type, IkeError};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Copies `src` at the start of `buf` after checking room.
fn put(buf: &mut [u8], at: usize, src: &[u8]) -> Result<(), IkeError> {
    buf.get_mut(at..at + src.len())
        .ok_or(IkeError::BufferTooSmall)?
        .copy_from_slice(src);
    Ok(())
}

/// The Key Exchange payload (RFC 7296 section 3.4): the sender's Diffie-Hellman public value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyExchange<'a> {
    /// The D-H group of the value ([`crate::dh`]); must be the group of the chosen proposal
    /// or the responder answers INVALID_KE_PAYLOAD (section 1.2).
    pub group: u16,
    /// The public value (256 bytes for MODP-2048, 64 for P-256, 32 for Curve25519).
    pub data: &'a [u8],
}

impl<'a> KeyExchange<'a> {
    /// Reads the body: group, two reserved bytes (ignored), data.
    pub fn parse(b: &'a [u8]) -> Result<Self, IkeError> {
        if b.len() < 4 {
            return Err(IkeError::Truncated);
        }
        Ok(KeyExchange {
            group: be16(b, 0),
            data: &b[4..],
        })
    }

    /// Length of the body [`Self::emit`] writes.
    pub fn emit_len(&self) -> usize {
        4 + self.data.len()
    }

    /// Writes the body; the reserved bytes are zero.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, IkeError> {
        let mut head = [0u8; 4];
        head[..2].copy_from_slice(&self.group.to_be_bytes());
        put(buf, 0, &head)?;
        put(buf, 4, self.data)?;
        Ok(self.emit_len())
    }
}

/// The identity of an IDi or IDr payload (RFC 7296 section 3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identification<'a> {
    /// ID_IPV4_ADDR: one IPv4 address.
    Ipv4(Ipv4Addr),
    /// ID_IPV6_ADDR: one IPv6 address.
    Ipv6(Ipv6Addr),
    /// ID_FQDN: a domain name, as bytes (no terminator; not necessarily valid UTF-8).
    Fqdn(&'a [u8]),
    /// ID_RFC822_ADDR: user@domain, as bytes (RFC 4877 section 4.3's user@FQDN).
    Rfc822(&'a [u8]),
    /// ID_KEY_ID: opaque bytes.
    KeyId(&'a [u8]),
    /// Any other type (DER_ASN1_DN, DER_ASN1_GN, ...), kept opaque.
    Other {
        /// The ID Type.
        kind: u8,
        /// The identification data.
        data: &'a [u8],
    },
}

impl<'a> Identification<'a> {
    /// Reads the body: ID Type, three reserved bytes (ignored), data. An address type
    /// whose data is not exactly 4 or 16 bytes is [`IkeError::Malformed`].
    pub fn parse(b: &'a [u8]) -> Result<Self, IkeError> {
        if b.len() < 4 {
            return Err(IkeError::Truncated);
        }
        let data = &b[4..];
        Ok(match b[0] {
            id_type::IPV4_ADDR => Identification::Ipv4(Ipv4Addr::from(
                <[u8; 4]>::try_from(data).map_err(|_| IkeError::Malformed)?,
            )),
            id_type::IPV6_ADDR => Identification::Ipv6(Ipv6Addr::from(
                <[u8; 16]>::try_from(data).map_err(|_| IkeError::Malformed)?,
            )),
            id_type::FQDN => Identification::Fqdn(data),
            id_type::RFC822_ADDR => Identification::Rfc822(data),
            id_type::KEY_ID => Identification::KeyId(data),
            kind => Identification::Other { kind, data },
        })
    }

    fn kind_and_data(&self) -> (u8, &[u8]) {
        match self {
            Identification::Ipv4(_) | Identification::Ipv6(_) => (0, &[]),
            Identification::Fqdn(d) => (id_type::FQDN, d),
            Identification::Rfc822(d) => (id_type::RFC822_ADDR, d),
            Identification::KeyId(d) => (id_type::KEY_ID, d),
            Identification::Other { kind, data } => (*kind, data),
        }
    }

    /// Length of the body [`Self::emit`] writes.
    pub fn emit_len(&self) -> usize {
        4 + match self {
            Identification::Ipv4(_) => 4,
            Identification::Ipv6(_) => 16,
            other => other.kind_and_data().1.len(),
        }
    }

    /// Writes the body; the reserved bytes are zero.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, IkeError> {
        match self {
            Identification::Ipv4(a) => {
                put(buf, 0, &[id_type::IPV4_ADDR, 0, 0, 0])?;
                put(buf, 4, &a.octets())?;
            }
            Identification::Ipv6(a) => {
                put(buf, 0, &[id_type::IPV6_ADDR, 0, 0, 0])?;
                put(buf, 4, &a.octets())?;
            }
            other => {
                let (kind, data) = other.kind_and_data();
                put(buf, 0, &[kind, 0, 0, 0])?;
                put(buf, 4, data)?;
            }
        }
        Ok(self.emit_len())
    }
}

/// A Certificate or Certificate Request payload (RFC 7296 sections 3.6 and 3.7): an encoding
/// octet and opaque data (a certificate, or concatenated SHA-1 hashes of CA public keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cert<'a> {
    /// Certificate Encoding (section 3.6: 4 = X.509 signature, 12 = hash and URL, ...).
    pub encoding: u8,
    /// The certificate data or certification authority data, uninterpreted here.
    pub data: &'a [u8],
}

impl<'a> Cert<'a> {
    /// Reads the body: encoding, data.
    pub fn parse(b: &'a [u8]) -> Result<Self, IkeError> {
        let (&encoding, data) = b.split_first().ok_or(IkeError::Truncated)?;
        Ok(Cert { encoding, data })
    }

    /// Length of the body [`Self::emit`] writes.
    pub fn emit_len(&self) -> usize {
        1 + self.data.len()
    }

    /// Writes the body.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, IkeError> {
        put(buf, 0, &[self.encoding])?;
        put(buf, 1, self.data)?;
        Ok(self.emit_len())
    }
}

/// The Authentication payload (RFC 7296 section 3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth<'a> {
    /// Auth Method ([`crate::auth_method`]).
    pub method: u8,
    /// The authentication data (a MAC for PSK, a signature otherwise).
    pub data: &'a [u8],
}

impl<'a> Auth<'a> {
    /// Reads the body: method, three reserved bytes (ignored), data.
    pub fn parse(b: &'a [u8]) -> Result<Self, IkeError> {
        if b.len() < 4 {
            return Err(IkeError::Truncated);
        }
        Ok(Auth {
            method: b[0],
            data: &b[4..],
        })
    }

    /// Length of the body [`Self::emit`] writes.
    pub fn emit_len(&self) -> usize {
        4 + self.data.len()
    }

    /// Writes the body; the reserved bytes are zero.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, IkeError> {
        put(buf, 0, &[self.method, 0, 0, 0])?;
        put(buf, 4, self.data)?;
        Ok(self.emit_len())
    }
}

/// Shortest Nonce Data (RFC 7296 section 3.9: at least 128 bits).
pub const NONCE_MIN: usize = 16;
/// Longest Nonce Data (RFC 7296 section 3.9: at most 2048 bits).
pub const NONCE_MAX: usize = 256;

/// Checks a Nonce payload body (RFC 7296 section 3.9): between 16 and 256 bytes, else
/// [`IkeError::Malformed`].
pub fn parse_nonce(b: &[u8]) -> Result<&[u8], IkeError> {
    if (NONCE_MIN..=NONCE_MAX).contains(&b.len()) {
        Ok(b)
    } else {
        Err(IkeError::Malformed)
    }
}

/// The Notify payload (RFC 7296 section 3.10): an error or a status, about the IKE SA or a
/// CHILD_SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notify<'a> {
    /// Protocol ID ([`crate::protocol`]); zero when the notification is not about an SA.
    pub protocol: u8,
    /// The SPI of the SA concerned, empty for the IKE SA (section 3.10).
    pub spi: &'a [u8],
    /// Notify Message Type ([`crate::notify`]); unknown ones kept as numbers. A receiver
    /// ignores unknown status types and treats unknown errors as a failure (section 3.10.1).
    pub kind: u16,
    /// Notification Data (a NAT-D hash, a cookie, the group of INVALID_KE_PAYLOAD, ...).
    pub data: &'a [u8],
}

impl<'a> Notify<'a> {
    /// Reads the body: protocol, SPI size, type, SPI, data.
    pub fn parse(b: &'a [u8]) -> Result<Self, IkeError> {
        if b.len() < 4 {
            return Err(IkeError::Truncated);
        }
        let spi_end = 4 + b[1] as usize;
        let spi = b.get(4..spi_end).ok_or(IkeError::Truncated)?;
        Ok(Notify {
            protocol: b[0],
            spi,
            kind: be16(b, 2),
            data: &b[spi_end..],
        })
    }

    /// Whether the type is an error (below 16384, section 3.10.1).
    pub fn is_error(&self) -> bool {
        self.kind < 16384
    }

    /// Length of the body [`Self::emit`] writes.
    pub fn emit_len(&self) -> usize {
        4 + self.spi.len() + self.data.len()
    }

    /// Writes the body; an SPI over 255 bytes is [`IkeError::Malformed`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, IkeError> {
        let spi_len = u8::try_from(self.spi.len()).map_err(|_| IkeError::Malformed)?;
        let k = self.kind.to_be_bytes();
        put(buf, 0, &[self.protocol, spi_len, k[0], k[1]])?;
        put(buf, 4, self.spi)?;
        put(buf, 4 + self.spi.len(), self.data)?;
        Ok(self.emit_len())
    }
}

/// The Delete payload (RFC 7296 section 3.11): SAs the sender has deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delete<'a> {
    /// Protocol ID: IKE (no SPI: the IKE SA of the message) or ESP / AH.
    pub protocol: u8,
    /// SPI Size: 0 for IKE, 4 for ESP and AH.
    pub spi_size: u8,
    /// The SPIs, `spi_size` bytes each, read with [`Self::spis`].
    pub spis: &'a [u8],
}

impl<'a> Delete<'a> {
    /// Reads the body: protocol, SPI size, number of SPIs, SPIs. The SPIs must fill the rest
    /// exactly (else [`IkeError::Malformed`]); a non-zero count with SPI size 0 too.
    pub fn parse(b: &'a [u8]) -> Result<Self, IkeError> {
        if b.len() < 4 {
            return Err(IkeError::Truncated);
        }
        let (size, count) = (b[1], be16(b, 2) as usize);
        let spis = &b[4..];
        if spis.len() != size as usize * count || (size == 0 && count != 0) {
            return Err(IkeError::Malformed);
        }
        Ok(Delete {
            protocol: b[0],
            spi_size: size,
            spis,
        })
    }

    /// The SPIs, one slice each.
    pub fn spis(&self) -> impl Iterator<Item = &'a [u8]> {
        // chunks(0) panics: an SPI size of 0 has no SPIs at all.
        let size = usize::from(self.spi_size).max(1);
        let spis = if self.spi_size == 0 {
            &[][..]
        } else {
            self.spis
        };
        spis.chunks_exact(size)
    }

    /// Length of the body [`Self::emit`] writes.
    pub fn emit_len(&self) -> usize {
        4 + self.spis.len()
    }

    /// Writes the body; SPIs that are not a whole number of `spi_size` are
    /// [`IkeError::Malformed`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, IkeError> {
        let count = match self.spi_size {
            0 if self.spis.is_empty() => 0,
            0 => return Err(IkeError::Malformed),
            s if self.spis.len() % usize::from(s) == 0 => self.spis.len() / usize::from(s),
            _ => return Err(IkeError::Malformed),
        };
        let count = u16::try_from(count).map_err(|_| IkeError::Malformed)?;
        let c = count.to_be_bytes();
        put(buf, 0, &[self.protocol, self.spi_size, c[0], c[1]])?;
        put(buf, 4, self.spis)?;
        Ok(self.emit_len())
    }
}

/// The address range of a traffic selector (RFC 7296 section 3.13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsRange {
    /// TS_IPV4_ADDR_RANGE: first and last address, inclusive.
    V4(Ipv4Addr, Ipv4Addr),
    /// TS_IPV6_ADDR_RANGE: first and last address, inclusive.
    V6(Ipv6Addr, Ipv6Addr),
}

/// One traffic selector (RFC 7296 section 3.13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficSelector {
    /// IP Protocol ID, 0 for any. For ICMP and the Mobility Header (135) the "ports" carry
    /// type and code (RFC 4301 section 4.4.1.1; RFC 4877 section 4.4 selects BU/BA by MH
    /// type this way).
    pub protocol: u8,
    /// First port (or type/code), inclusive.
    pub start_port: u16,
    /// Last port, inclusive.
    pub end_port: u16,
    /// The addresses.
    pub range: TsRange,
}

impl TrafficSelector {
    fn emit_len(&self) -> usize {
        match self.range {
            TsRange::V4(..) => 16,
            TsRange::V6(..) => 40,
        }
    }
}

/// The Traffic Selector payloads TSi and TSr (RFC 7296 section 3.13): a view that yields
/// its selectors without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficSelectors<'a> {
    count: u8,
    selectors: &'a [u8],
}

/// Reads one selector at the start of `b` and returns it with its length.
fn parse_selector(b: &[u8]) -> Result<(TrafficSelector, usize), IkeError> {
    if b.len() < 8 {
        return Err(IkeError::Truncated);
    }
    let len = be16(b, 2) as usize;
    let want = match b[0] {
        ts_type::IPV4_ADDR_RANGE => 16,
        ts_type::IPV6_ADDR_RANGE => 40,
        _ => return Err(IkeError::Malformed),
    };
    if len != want {
        return Err(IkeError::Malformed);
    }
    let s = b.get(..len).ok_or(IkeError::Truncated)?;
    let range = if len == 16 {
        let a: [u8; 4] = s[8..12].try_into().map_err(|_| IkeError::Malformed)?;
        let z: [u8; 4] = s[12..16].try_into().map_err(|_| IkeError::Malformed)?;
        TsRange::V4(a.into(), z.into())
    } else {
        let a: [u8; 16] = s[8..24].try_into().map_err(|_| IkeError::Malformed)?;
        let z: [u8; 16] = s[24..40].try_into().map_err(|_| IkeError::Malformed)?;
        TsRange::V6(a.into(), z.into())
    };
    let ts = TrafficSelector {
        protocol: s[1],
        start_port: be16(s, 4),
        end_port: be16(s, 6),
        range,
    };
    Ok((ts, len))
}

impl<'a> TrafficSelectors<'a> {
    /// Checks the body: Number of TSs, three reserved bytes, then exactly that many
    /// well-formed IPv4 or IPv6 range selectors filling the rest. An unknown TS Type is
    /// [`IkeError::Malformed`] (the responder then answers TS_UNACCEPTABLE or INVALID_SYNTAX).
    pub fn parse(b: &'a [u8]) -> Result<Self, IkeError> {
        if b.len() < 4 {
            return Err(IkeError::Truncated);
        }
        let count = b[0];
        let mut rest = &b[4..];
        for _ in 0..count {
            let (_, len) = parse_selector(rest)?;
            rest = &rest[len..];
        }
        if !rest.is_empty() {
            return Err(IkeError::Malformed);
        }
        Ok(TrafficSelectors {
            count,
            selectors: &b[4..],
        })
    }

    /// Number of selectors.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether there is no selector (a valid but useless payload).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The selectors in order.
    pub fn iter(&self) -> impl Iterator<Item = TrafficSelector> + 'a {
        let mut rest = self.selectors;
        std::iter::from_fn(move || {
            // Checked by parse: an error here only ends the iteration.
            let (ts, len) = parse_selector(rest).ok()?;
            rest = &rest[len..];
            Some(ts)
        })
    }

    /// Length of the body [`Self::emit`] writes back.
    pub fn emit_len(&self) -> usize {
        4 + self.selectors.len()
    }

    /// Length of the body [`Self::emit_selectors`] writes for `selectors`.
    pub fn selectors_emit_len(selectors: &[TrafficSelector]) -> usize {
        4 + selectors
            .iter()
            .map(TrafficSelector::emit_len)
            .sum::<usize>()
    }

    /// Writes the body of a TS payload holding `selectors` (at most 255).
    pub fn emit_selectors(
        selectors: &[TrafficSelector],
        buf: &mut [u8],
    ) -> Result<usize, IkeError> {
        let count = u8::try_from(selectors.len()).map_err(|_| IkeError::Malformed)?;
        put(buf, 0, &[count, 0, 0, 0])?;
        let mut at = 4;
        for ts in selectors {
            let (kind, len) = match ts.range {
                TsRange::V4(..) => (ts_type::IPV4_ADDR_RANGE, 16u16),
                TsRange::V6(..) => (ts_type::IPV6_ADDR_RANGE, 40u16),
            };
            let l = len.to_be_bytes();
            put(buf, at, &[kind, ts.protocol, l[0], l[1]])?;
            put(buf, at + 4, &ts.start_port.to_be_bytes())?;
            put(buf, at + 6, &ts.end_port.to_be_bytes())?;
            match ts.range {
                TsRange::V4(a, z) => {
                    put(buf, at + 8, &a.octets())?;
                    put(buf, at + 12, &z.octets())?;
                }
                TsRange::V6(a, z) => {
                    put(buf, at + 8, &a.octets())?;
                    put(buf, at + 24, &z.octets())?;
                }
            }
            at += usize::from(len);
        }
        Ok(at)
    }

    /// Writes this payload's body back.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, IkeError> {
        put(buf, 0, &[self.count, 0, 0, 0])?;
        put(buf, 4, self.selectors)?;
        Ok(4 + self.selectors.len())
    }
}

/// The Encrypted and Authenticated payload SK (RFC 7296 section 3.14), as an envelope:
/// Initialization Vector, encrypted payloads with padding, and Integrity Checksum Data,
/// whose boundaries depend on the negotiated algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encrypted<'a> {
    /// The type of the first payload inside (the SK payload's Next Payload field).
    pub first_inner: u8,
    /// IV, ciphertext and ICV together.
    pub data: &'a [u8],
}

impl<'a> Encrypted<'a> {
    /// Splits the envelope for a cipher with an `iv_len`-byte IV and an `icv_len`-byte
    /// checksum (e.g. 16 and 16 for AES-CBC with HMAC-SHA-256-128, 8 and 16 for AES-GCM-16,
    /// RFC 5282). [`IkeError::Truncated`] if the envelope is shorter than both.
    pub fn split(&self, iv_len: usize, icv_len: usize) -> Result<SkParts<'a>, IkeError> {
        let ct_end = self
            .data
            .len()
            .checked_sub(icv_len)
            .filter(|&e| e >= iv_len)
            .ok_or(IkeError::Truncated)?;
        Ok(SkParts {
            iv: &self.data[..iv_len],
            ciphertext: &self.data[iv_len..ct_end],
            icv: &self.data[ct_end..],
        })
    }
}

/// The three parts of an SK payload's body (RFC 7296 section 3.14, Figure 21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkParts<'a> {
    /// Initialization Vector.
    pub iv: &'a [u8],
    /// The encrypted payloads, padding and Pad Length.
    pub ciphertext: &'a [u8],
    /// Integrity Checksum Data (for AES-GCM, the tag).
    pub icv: &'a [u8],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{notify, protocol};

    #[test]
    fn key_exchange() {
        let b = [0, 14, 0, 0, 0xaa, 0xbb];
        let ke = KeyExchange::parse(&b).unwrap();
        assert_eq!(ke.group, 14);
        assert_eq!(ke.data, &[0xaa, 0xbb]);
        let mut out = [0xffu8; 6];
        assert_eq!(ke.emit(&mut out), Ok(6));
        assert_eq!(out, b);
        assert_eq!(KeyExchange::parse(&b[..3]), Err(IkeError::Truncated));
        assert_eq!(ke.emit(&mut [0u8; 5]), Err(IkeError::BufferTooSmall));
    }

    #[test]
    fn identification() {
        let cases: [(&[u8], Identification); 5] = [
            (
                &[1, 0, 0, 0, 192, 0, 2, 1],
                Identification::Ipv4(Ipv4Addr::new(192, 0, 2, 1)),
            ),
            (
                &[
                    5, 0, 0, 0, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                ],
                Identification::Ipv6("2001:db8::1".parse().unwrap()),
            ),
            (b"\x02\0\0\0ha.example", Identification::Fqdn(b"ha.example")),
            (
                b"\x03\0\0\0mn@example",
                Identification::Rfc822(b"mn@example"),
            ),
            (&[11, 0, 0, 0, 1, 2], Identification::KeyId(&[1, 2])),
        ];
        for (bytes, id) in cases {
            assert_eq!(Identification::parse(bytes), Ok(id));
            let mut out = vec![0u8; id.emit_len()];
            assert_eq!(id.emit(&mut out), Ok(bytes.len()));
            assert_eq!(out, bytes);
        }
        assert_eq!(
            Identification::parse(&[9, 0, 0, 0, 0x30]),
            Ok(Identification::Other {
                kind: 9,
                data: &[0x30]
            })
        );
        assert_eq!(
            Identification::parse(&[1, 0, 0, 0, 1, 2, 3]),
            Err(IkeError::Malformed)
        );
        assert_eq!(
            Identification::parse(&[5, 0, 0, 0, 1]),
            Err(IkeError::Malformed)
        );
    }

    #[test]
    fn cert_auth_nonce() {
        let c = Cert::parse(&[4, 0x30, 0x82]).unwrap();
        assert_eq!((c.encoding, c.data), (4, &[0x30, 0x82][..]));
        let mut out = [0u8; 3];
        c.emit(&mut out).unwrap();
        assert_eq!(out, [4, 0x30, 0x82]);
        assert_eq!(Cert::parse(&[]), Err(IkeError::Truncated));
        let a = Auth::parse(&[2, 0, 0, 0, 9, 9]).unwrap();
        assert_eq!(
            (a.method, a.data),
            (crate::auth_method::SHARED_KEY_MIC, &[9, 9][..])
        );
        let mut out = [0u8; 6];
        a.emit(&mut out).unwrap();
        assert_eq!(out, [2, 0, 0, 0, 9, 9]);
        assert!(parse_nonce(&[0; 16]).is_ok());
        assert!(parse_nonce(&[0; 256]).is_ok());
        assert_eq!(parse_nonce(&[0; 15]), Err(IkeError::Malformed));
        assert_eq!(parse_nonce(&[0; 257]), Err(IkeError::Malformed));
    }

    #[test]
    fn notify_bytes() {
        // INVALID_KE_PAYLOAD asking for group 19.
        let b = [0, 0, 0, 17, 0, 19];
        let n = Notify::parse(&b).unwrap();
        assert_eq!(n.kind, notify::INVALID_KE_PAYLOAD);
        assert!(n.is_error());
        assert_eq!(n.data, &[0, 19]);
        // REKEY_SA for ESP SPI 0x01020304: a status with an SPI and no data.
        let b2 = [3, 4, 0x40, 0x09, 1, 2, 3, 4];
        let n2 = Notify::parse(&b2).unwrap();
        assert_eq!(
            n2,
            Notify {
                protocol: protocol::ESP,
                spi: &[1, 2, 3, 4],
                kind: notify::REKEY_SA,
                data: &[]
            }
        );
        assert!(!n2.is_error());
        let mut out = [0u8; 8];
        n2.emit(&mut out).unwrap();
        assert_eq!(out, b2);
        assert_eq!(
            Notify::parse(&[3, 5, 0x40, 9, 1, 2, 3, 4]),
            Err(IkeError::Truncated)
        );
    }

    #[test]
    fn delete_bytes() {
        let b = [3, 4, 0, 2, 1, 1, 1, 1, 2, 2, 2, 2];
        let d = Delete::parse(&b).unwrap();
        assert_eq!(
            d.spis().collect::<Vec<_>>(),
            vec![&[1, 1, 1, 1][..], &[2, 2, 2, 2][..]]
        );
        let mut out = [0u8; 12];
        d.emit(&mut out).unwrap();
        assert_eq!(out, b);
        let ike = Delete::parse(&[1, 0, 0, 0]).unwrap();
        assert_eq!(ike.spis().count(), 0);
        assert_eq!(Delete::parse(&b[..11]), Err(IkeError::Malformed));
        assert_eq!(Delete::parse(&[1, 0, 0, 1]), Err(IkeError::Malformed));
    }

    #[test]
    fn traffic_selectors() {
        // Two selectors: IPv4 192.0.2.0-192.0.2.255 any protocol, IPv6 MH (135) type 5-6
        // for 2001:db8::1 (the RFC 4877 section 4.4 shape of a BU selector).
        let mut b = vec![
            2, 0, 0, 0, 7, 0, 0, 16, 0, 0, 0xff, 0xff, 192, 0, 2, 0, 192, 0, 2, 255,
        ];
        b.extend_from_slice(&[8, 135, 0, 40, 0x05, 0x00, 0x06, 0x00]);
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        b.extend_from_slice(&a.octets());
        b.extend_from_slice(&a.octets());
        let ts = TrafficSelectors::parse(&b).unwrap();
        let v: Vec<_> = ts.iter().collect();
        assert_eq!(ts.len(), 2);
        assert_eq!(
            v[0],
            TrafficSelector {
                protocol: 0,
                start_port: 0,
                end_port: 0xffff,
                range: TsRange::V4(Ipv4Addr::new(192, 0, 2, 0), Ipv4Addr::new(192, 0, 2, 255)),
            }
        );
        assert_eq!(v[1].protocol, 135);
        assert_eq!((v[1].start_port, v[1].end_port), (0x0500, 0x0600));
        assert_eq!(v[1].range, TsRange::V6(a, a));
        let mut out = vec![0u8; TrafficSelectors::selectors_emit_len(&v)];
        assert_eq!(TrafficSelectors::emit_selectors(&v, &mut out), Ok(b.len()));
        assert_eq!(out, b);
        let mut again = vec![0u8; b.len()];
        ts.emit(&mut again).unwrap();
        assert_eq!(again, b);
        // One selector too few, an unknown type, a length not matching the type.
        let mut more = b.clone();
        more[0] = 3;
        assert_eq!(TrafficSelectors::parse(&more), Err(IkeError::Truncated));
        let mut less = b.clone();
        less[0] = 1;
        assert_eq!(TrafficSelectors::parse(&less), Err(IkeError::Malformed));
        let mut kind = b.clone();
        kind[4] = 9;
        assert_eq!(TrafficSelectors::parse(&kind), Err(IkeError::Malformed));
        let mut len = b.clone();
        len[7] = 40;
        assert_eq!(TrafficSelectors::parse(&len), Err(IkeError::Malformed));
    }

    #[test]
    fn encrypted_split() {
        let data: Vec<u8> = (0..40).collect();
        let sk = Encrypted {
            first_inner: 35,
            data: &data,
        };
        let p = sk.split(16, 16).unwrap();
        assert_eq!((p.iv.len(), p.ciphertext.len(), p.icv.len()), (16, 8, 16));
        assert_eq!((p.iv[0], p.ciphertext[0], p.icv[0]), (0, 16, 24));
        assert_eq!(sk.split(16, 25), Err(IkeError::Truncated));
        assert_eq!(sk.split(41, 0), Err(IkeError::Truncated));
    }
}
