//! The Security Association payload (RFC 7296 section 3.3): proposals, transforms and
//! transform attributes.
//!
//! Unlike the other payloads the SA payload is a list of lists, so [`SaPayload`] owns its
//! proposals; its size is bounded by the message's (a transform takes at least 8 bytes).

use crate::{attribute_type, be16, IkeError};

/// Length of a Proposal Substructure header before its SPI (section 3.3.1, Figure 7).
const PROPOSAL_HEADER_LEN: usize = 8;
/// Length of a Transform Substructure header before its attributes (section 3.3.2, Figure 8).
const TRANSFORM_HEADER_LEN: usize = 8;
/// "Last Substruc" of a proposal followed by another (section 3.3.1).
const MORE_PROPOSALS: u8 = 2;
/// "Last Substruc" of a transform followed by another (section 3.3.2).
const MORE_TRANSFORMS: u8 = 3;
/// The Attribute Format bit: set for the 2-byte TV form (section 3.3.5).
const AF_TV: u16 = 0x8000;

/// A transform attribute (RFC 7296 section 3.3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// Type/Value form (AF = 1): a 16-bit value, as Key Length always is.
    Tv {
        /// Attribute type (15 bits).
        kind: u16,
        /// The value.
        value: u16,
    },
    /// Type/Length/Value form (AF = 0): none is defined by RFC 7296, kept for round trips.
    Tlv {
        /// Attribute type (15 bits).
        kind: u16,
        /// The value.
        value: Vec<u8>,
    },
}

impl Attribute {
    fn emit_len(&self) -> usize {
        match self {
            Attribute::Tv { .. } => 4,
            Attribute::Tlv { value, .. } => 4 + value.len(),
        }
    }
}

/// One transform of a proposal (RFC 7296 section 3.3.2): an algorithm of one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    /// Transform type ([`crate::transform_type`]).
    pub kind: u8,
    /// Transform ID within the type ([`crate::encr`], [`crate::prf`], [`crate::integ`],
    /// [`crate::dh`], [`crate::esn`]).
    pub id: u16,
    /// Attributes in the order received; in practice only Key Length (section 3.3.5).
    pub attributes: Vec<Attribute>,
}

impl Transform {
    /// A transform without attributes.
    pub fn new(kind: u8, id: u16) -> Self {
        Transform {
            kind,
            id,
            attributes: Vec::new(),
        }
    }

    /// A transform with a Key Length attribute in bits (section 3.3.5), as AES needs.
    pub fn with_key_length(kind: u8, id: u16, bits: u16) -> Self {
        Transform {
            kind,
            id,
            attributes: vec![Attribute::Tv {
                kind: attribute_type::KEY_LENGTH,
                value: bits,
            }],
        }
    }

    /// The Key Length attribute in bits, if present (section 3.3.5).
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Tv { kind, value } if *kind == attribute_type::KEY_LENGTH => Some(*value),
            _ => None,
        })
    }

    /// Whether an attribute other than Key Length is present: section 3.3.6 says a
    /// transform with an unrecognized attribute makes its proposal unacceptable.
    pub fn has_unknown_attribute(&self) -> bool {
        self.attributes.iter().any(
            |a| !matches!(a, Attribute::Tv { kind, .. } if *kind == attribute_type::KEY_LENGTH),
        )
    }

    fn emit_len(&self) -> usize {
        TRANSFORM_HEADER_LEN
            + self
                .attributes
                .iter()
                .map(Attribute::emit_len)
                .sum::<usize>()
    }
}

/// One proposal (RFC 7296 section 3.3.1): a protocol, an SPI and the transforms offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal Num: 1 for the first, then consecutive (section 3.3.1); the responder's
    /// answer repeats the number it accepted.
    pub number: u8,
    /// Protocol ID ([`crate::protocol`]).
    pub protocol: u8,
    /// The sender's SPI: empty in IKE_SA_INIT, 8 bytes for an IKE SA rekey, 4 for ESP/AH.
    pub spi: Vec<u8>,
    /// The transforms, all of which apply together (one per type) or several of one type
    /// as alternatives (section 3.3.6).
    pub transforms: Vec<Transform>,
}

impl Proposal {
    /// The first transform of a type, e.g. the D-H group of an IKE proposal.
    pub fn first(&self, kind: u8) -> Option<&Transform> {
        self.transforms.iter().find(|t| t.kind == kind)
    }

    fn emit_len(&self) -> usize {
        PROPOSAL_HEADER_LEN
            + self.spi.len()
            + self
                .transforms
                .iter()
                .map(Transform::emit_len)
                .sum::<usize>()
    }
}

/// The body of an SA payload (RFC 7296 section 3.3): the proposals in order of preference.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SaPayload {
    /// The proposals; a response carries exactly one.
    pub proposals: Vec<Proposal>,
}

/// Splits the next substructure off `rest`: checks its Last Substruc value against `more`
/// and its 16-bit length (at bytes 2..4) against `min` and the bytes left.
fn substructure<'a>(
    rest: &mut &'a [u8],
    min: usize,
    more: u8,
) -> Result<(&'a [u8], bool), IkeError> {
    if rest.len() < min {
        return Err(IkeError::Truncated);
    }
    let len = be16(rest, 2) as usize;
    if len < min {
        return Err(IkeError::Malformed);
    }
    let this = rest.get(..len).ok_or(IkeError::Truncated)?;
    let last = match this[0] {
        0 => true,
        m if m == more => false,
        _ => return Err(IkeError::Malformed),
    };
    *rest = &rest[len..];
    // "Last" must agree with whether bytes remain: anything else is a bad length somewhere.
    if last != rest.is_empty() {
        return Err(IkeError::Malformed);
    }
    Ok((this, last))
}

fn parse_attributes(mut b: &[u8]) -> Result<Vec<Attribute>, IkeError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 4 {
            return Err(IkeError::Truncated);
        }
        let head = be16(b, 0);
        let kind = head & !AF_TV;
        let word = be16(b, 2);
        if head & AF_TV != 0 {
            out.push(Attribute::Tv { kind, value: word });
            b = &b[4..];
        } else {
            let end = 4 + word as usize;
            let value = b.get(4..end).ok_or(IkeError::Truncated)?.to_vec();
            out.push(Attribute::Tlv { kind, value });
            b = &b[end..];
        }
    }
    Ok(out)
}

fn parse_transform(t: &[u8]) -> Result<Transform, IkeError> {
    Ok(Transform {
        kind: t[4],
        id: be16(t, 6),
        attributes: parse_attributes(&t[TRANSFORM_HEADER_LEN..])?,
    })
}

fn parse_proposal(p: &[u8]) -> Result<Proposal, IkeError> {
    let spi_len = p[6] as usize;
    let count = p[7] as usize;
    let spi_end = PROPOSAL_HEADER_LEN + spi_len;
    let spi = p
        .get(PROPOSAL_HEADER_LEN..spi_end)
        .ok_or(IkeError::Truncated)?
        .to_vec();
    let mut rest = &p[spi_end..];
    let mut transforms = Vec::with_capacity(count.min(rest.len() / TRANSFORM_HEADER_LEN));
    while !rest.is_empty() {
        let (t, _) = substructure(&mut rest, TRANSFORM_HEADER_LEN, MORE_TRANSFORMS)?;
        transforms.push(parse_transform(t)?);
    }
    if transforms.len() != count {
        return Err(IkeError::Malformed);
    }
    Ok(Proposal {
        number: p[4],
        protocol: p[5],
        spi,
        transforms,
    })
}

impl SaPayload {
    /// Reads an SA payload body (after the generic header). Refuses with
    /// [`IkeError::Malformed`] an empty SA, a Last Substruc value that is neither 0 nor the
    /// "more" value or disagrees with the bytes left, a transform count that is not the
    /// number of transforms present, and lengths that do not add up; with
    /// [`IkeError::Truncated`] a substructure longer than what holds it.
    pub fn parse(body: &[u8]) -> Result<Self, IkeError> {
        if body.is_empty() {
            return Err(IkeError::Malformed);
        }
        let mut rest = body;
        let mut proposals = Vec::new();
        while !rest.is_empty() {
            let (p, _) = substructure(&mut rest, PROPOSAL_HEADER_LEN, MORE_PROPOSALS)?;
            proposals.push(parse_proposal(p)?);
        }
        Ok(SaPayload { proposals })
    }

    /// Length of the body [`Self::emit`] writes.
    pub fn emit_len(&self) -> usize {
        self.proposals.iter().map(Proposal::emit_len).sum()
    }

    /// Writes the body at the start of `buf`. Fails with [`IkeError::Malformed`] for what
    /// cannot be encoded (no proposal, more than 255 transforms or SPI bytes, a
    /// substructure over 65535 bytes, an attribute type over 15 bits) and with
    /// [`IkeError::BufferTooSmall`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, IkeError> {
        if self.proposals.is_empty() {
            return Err(IkeError::Malformed);
        }
        let total = self.emit_len();
        let buf = buf.get_mut(..total).ok_or(IkeError::BufferTooSmall)?;
        let mut at = 0;
        for (i, p) in self.proposals.iter().enumerate() {
            let last = i + 1 == self.proposals.len();
            let plen = u16::try_from(p.emit_len()).map_err(|_| IkeError::Malformed)?;
            buf[at] = if last { 0 } else { MORE_PROPOSALS };
            buf[at + 1] = 0;
            buf[at + 2..at + 4].copy_from_slice(&plen.to_be_bytes());
            buf[at + 4] = p.number;
            buf[at + 5] = p.protocol;
            buf[at + 6] = u8::try_from(p.spi.len()).map_err(|_| IkeError::Malformed)?;
            buf[at + 7] = u8::try_from(p.transforms.len()).map_err(|_| IkeError::Malformed)?;
            at += PROPOSAL_HEADER_LEN;
            buf[at..at + p.spi.len()].copy_from_slice(&p.spi);
            at += p.spi.len();
            for (j, t) in p.transforms.iter().enumerate() {
                at = emit_transform(t, j + 1 == p.transforms.len(), buf, at)?;
            }
        }
        Ok(total)
    }
}

/// Writes one transform at `at` in `buf` (sized by the caller) and returns where it ends.
fn emit_transform(
    t: &Transform,
    last: bool,
    buf: &mut [u8],
    mut at: usize,
) -> Result<usize, IkeError> {
    let tlen = u16::try_from(t.emit_len()).map_err(|_| IkeError::Malformed)?;
    buf[at] = if last { 0 } else { MORE_TRANSFORMS };
    buf[at + 1] = 0;
    buf[at + 2..at + 4].copy_from_slice(&tlen.to_be_bytes());
    buf[at + 4] = t.kind;
    buf[at + 5] = 0;
    buf[at + 6..at + 8].copy_from_slice(&t.id.to_be_bytes());
    at += TRANSFORM_HEADER_LEN;
    for a in &t.attributes {
        match a {
            Attribute::Tv { kind, value } => {
                if kind & AF_TV != 0 {
                    return Err(IkeError::Malformed);
                }
                buf[at..at + 2].copy_from_slice(&(kind | AF_TV).to_be_bytes());
                buf[at + 2..at + 4].copy_from_slice(&value.to_be_bytes());
                at += 4;
            }
            Attribute::Tlv { kind, value } => {
                let vlen = u16::try_from(value.len()).map_err(|_| IkeError::Malformed)?;
                if kind & AF_TV != 0 {
                    return Err(IkeError::Malformed);
                }
                buf[at..at + 2].copy_from_slice(&kind.to_be_bytes());
                buf[at + 2..at + 4].copy_from_slice(&vlen.to_be_bytes());
                buf[at + 4..at + 4 + value.len()].copy_from_slice(value);
                at += 4 + value.len();
            }
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dh, encr, integ, prf, protocol, transform_type as tt};

    /// One IKE proposal: ENCR_AES_CBC-256, PRF_HMAC_SHA2_256, AUTH_HMAC_SHA2_256_128,
    /// MODP-2048, written by hand from RFC 7296 Figures 7-9.
    const SA_BODY: [u8; 44] = [
        0, 0, 0, 44, 1, 1, 0, 4, // last proposal, length 44, #1, IKE, no SPI, 4 transforms
        3, 0, 0, 12, 1, 0, 0, 12, 0x80, 14, 1, 0, // ENCR 12, Key Length 256
        3, 0, 0, 8, 2, 0, 0, 5, // PRF 5
        3, 0, 0, 8, 3, 0, 0, 12, // INTEG 12
        0, 0, 0, 8, 4, 0, 0, 14, // D-H 14, last transform
    ];

    fn ike_proposal() -> SaPayload {
        SaPayload {
            proposals: vec![Proposal {
                number: 1,
                protocol: protocol::IKE,
                spi: vec![],
                transforms: vec![
                    Transform::with_key_length(tt::ENCR, encr::AES_CBC, 256),
                    Transform::new(tt::PRF, prf::HMAC_SHA2_256),
                    Transform::new(tt::INTEG, integ::HMAC_SHA2_256_128),
                    Transform::new(tt::DH, dh::MODP_2048),
                ],
            }],
        }
    }

    #[test]
    fn bytes_both_ways() {
        let sa = SaPayload::parse(&SA_BODY).unwrap();
        assert_eq!(sa, ike_proposal());
        assert_eq!(sa.proposals[0].transforms[0].key_length(), Some(256));
        assert_eq!(sa.proposals[0].first(tt::DH).unwrap().id, 14);
        let mut out = [0u8; 44];
        assert_eq!(ike_proposal().emit(&mut out), Ok(44));
        assert_eq!(out, SA_BODY);
        assert_eq!(
            ike_proposal().emit(&mut [0u8; 43]),
            Err(IkeError::BufferTooSmall)
        );
    }

    #[test]
    fn esp_proposal_with_spi_and_two_proposals() {
        let sa = SaPayload {
            proposals: vec![
                Proposal {
                    number: 1,
                    protocol: protocol::ESP,
                    spi: vec![0xc0, 0, 0, 1],
                    transforms: vec![
                        Transform::with_key_length(tt::ENCR, encr::AES_GCM_16, 128),
                        Transform::new(tt::ESN, crate::esn::NO),
                    ],
                },
                Proposal {
                    number: 2,
                    protocol: protocol::ESP,
                    spi: vec![0xc0, 0, 0, 1],
                    transforms: vec![Transform {
                        kind: tt::ENCR,
                        id: encr::AES_CBC,
                        attributes: vec![Attribute::Tlv {
                            kind: 99,
                            value: vec![1, 2, 3],
                        }],
                    }],
                },
            ],
        };
        let mut out = vec![0u8; sa.emit_len()];
        sa.emit(&mut out).unwrap();
        assert_eq!(out[0], MORE_PROPOSALS);
        assert_eq!(SaPayload::parse(&out).unwrap(), sa);
        assert!(sa.proposals[1].transforms[0].has_unknown_attribute());
        assert!(!sa.proposals[0].transforms[0].has_unknown_attribute());
    }

    #[test]
    fn refusals() {
        assert_eq!(SaPayload::parse(&[]), Err(IkeError::Malformed));
        let mut count = SA_BODY;
        count[7] = 3;
        assert_eq!(SaPayload::parse(&count), Err(IkeError::Malformed));
        let mut last = SA_BODY;
        last[0] = 2; // says "more" but nothing follows
        assert_eq!(SaPayload::parse(&last), Err(IkeError::Malformed));
        let mut tlast = SA_BODY;
        tlast[36] = 3; // the last transform says "more"
        assert_eq!(SaPayload::parse(&tlast), Err(IkeError::Malformed));
        let mut long = SA_BODY;
        long[3] = 45;
        assert_eq!(SaPayload::parse(&long), Err(IkeError::Truncated));
        let mut attr = SA_BODY;
        attr[16] = 0; // Key Length in TLV form, length 256: beyond the transform
        assert_eq!(SaPayload::parse(&attr), Err(IkeError::Truncated));
        assert_eq!(SaPayload::parse(&SA_BODY[..43]), Err(IkeError::Truncated));
    }
}
