//! A whole IKE message (RFC 7296 section 3): the header and its typed payloads.

use crate::body::{parse_nonce, Auth, Cert, Delete, Encrypted, Identification, KeyExchange};
use crate::body::{Notify, TrafficSelectors};
use crate::header::{HeaderRepr, IkeHeader, IKE_HEADER_LEN};
use crate::payload::{emit_generic, PayloadView, Payloads, GENERIC_HEADER_LEN};
use crate::sa::SaPayload;
use crate::{payload_type as pt, IkeError};

/// One payload in its typed form (RFC 7296 sections 3.3 to 3.16), borrowing from the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Security Association (section 3.3).
    Sa(SaPayload),
    /// Key Exchange (section 3.4).
    Ke(KeyExchange<'a>),
    /// Identification of the initiator (section 3.5).
    IdI(Identification<'a>),
    /// Identification of the responder (section 3.5).
    IdR(Identification<'a>),
    /// Certificate (section 3.6).
    Cert(Cert<'a>),
    /// Certificate Request (section 3.7).
    CertReq(Cert<'a>),
    /// Authentication (section 3.8).
    Auth(Auth<'a>),
    /// Nonce (section 3.9): 16 to 256 bytes.
    Nonce(&'a [u8]),
    /// Notify (section 3.10).
    Notify(Notify<'a>),
    /// Delete (section 3.11).
    Delete(Delete<'a>),
    /// Vendor ID (section 3.12): opaque.
    VendorId(&'a [u8]),
    /// Traffic Selector - Initiator (section 3.13).
    TsI(TrafficSelectors<'a>),
    /// Traffic Selector - Responder (section 3.13).
    TsR(TrafficSelectors<'a>),
    /// Encrypted and Authenticated (section 3.14): always the last payload.
    Encrypted(Encrypted<'a>),
    /// Configuration (section 3.15), opaque in this step.
    Configuration(&'a [u8]),
    /// Extensible Authentication (section 3.16), opaque.
    Eap(&'a [u8]),
    /// A payload of a type this implementation does not know, without the critical bit:
    /// section 3.2 says to ignore it, which the machines do; it is kept here only so that
    /// re-emitting a message gives back the same bytes.
    Unknown {
        /// The payload type.
        kind: u8,
        /// Its body.
        body: &'a [u8],
    },
}

impl<'a> Payload<'a> {
    /// Types one payload of a chain walked by [`Payloads`].
    pub fn parse(v: &PayloadView<'a>) -> Result<Self, IkeError> {
        let b = v.body;
        Ok(match v.kind {
            pt::SA => Payload::Sa(SaPayload::parse(b)?),
            pt::KE => Payload::Ke(KeyExchange::parse(b)?),
            pt::IDI => Payload::IdI(Identification::parse(b)?),
            pt::IDR => Payload::IdR(Identification::parse(b)?),
            pt::CERT => Payload::Cert(Cert::parse(b)?),
            pt::CERTREQ => Payload::CertReq(Cert::parse(b)?),
            pt::AUTH => Payload::Auth(Auth::parse(b)?),
            pt::NONCE => Payload::Nonce(parse_nonce(b)?),
            pt::NOTIFY => Payload::Notify(Notify::parse(b)?),
            pt::DELETE => Payload::Delete(Delete::parse(b)?),
            pt::VENDOR_ID => Payload::VendorId(b),
            pt::TSI => Payload::TsI(TrafficSelectors::parse(b)?),
            pt::TSR => Payload::TsR(TrafficSelectors::parse(b)?),
            pt::SK => Payload::Encrypted(Encrypted {
                first_inner: v.next,
                data: b,
            }),
            pt::CP => Payload::Configuration(b),
            pt::EAP => Payload::Eap(b),
            kind => Payload::Unknown { kind, body: b },
        })
    }

    /// Parses a whole chain: the payloads of a message, or those an SK payload held once
    /// decrypted (`first` is then [`Encrypted::first_inner`]). Any refusal of
    /// [`Payloads`] or of a payload's own `parse` refuses the whole chain.
    pub fn parse_chain(first: u8, bytes: &'a [u8]) -> Result<Vec<Self>, IkeError> {
        Payloads::new(first, bytes)
            .map(|v| v.and_then(|v| Payload::parse(&v)))
            .collect()
    }

    /// The payload type this payload is sent as (section 3.2).
    pub fn kind(&self) -> u8 {
        match self {
            Payload::Sa(_) => pt::SA,
            Payload::Ke(_) => pt::KE,
            Payload::IdI(_) => pt::IDI,
            Payload::IdR(_) => pt::IDR,
            Payload::Cert(_) => pt::CERT,
            Payload::CertReq(_) => pt::CERTREQ,
            Payload::Auth(_) => pt::AUTH,
            Payload::Nonce(_) => pt::NONCE,
            Payload::Notify(_) => pt::NOTIFY,
            Payload::Delete(_) => pt::DELETE,
            Payload::VendorId(_) => pt::VENDOR_ID,
            Payload::TsI(_) => pt::TSI,
            Payload::TsR(_) => pt::TSR,
            Payload::Encrypted(_) => pt::SK,
            Payload::Configuration(_) => pt::CP,
            Payload::Eap(_) => pt::EAP,
            Payload::Unknown { kind, .. } => *kind,
        }
    }

    /// Length of the body (without the generic header).
    fn body_len(&self) -> usize {
        match self {
            Payload::Sa(s) => s.emit_len(),
            Payload::Ke(k) => k.emit_len(),
            Payload::IdI(i) | Payload::IdR(i) => i.emit_len(),
            Payload::Cert(c) | Payload::CertReq(c) => c.emit_len(),
            Payload::Auth(a) => a.emit_len(),
            Payload::Notify(n) => n.emit_len(),
            Payload::Delete(d) => d.emit_len(),
            Payload::TsI(t) | Payload::TsR(t) => t.emit_len(),
            Payload::Encrypted(e) => e.data.len(),
            Payload::Nonce(b)
            | Payload::VendorId(b)
            | Payload::Configuration(b)
            | Payload::Eap(b)
            | Payload::Unknown { body: b, .. } => b.len(),
        }
    }

    /// Length of the payload with its generic header.
    pub fn emit_len(&self) -> usize {
        GENERIC_HEADER_LEN + self.body_len()
    }

    /// Writes the payload, generic header first, with `next` as its Next Payload (ignored
    /// for SK, whose Next Payload is [`Encrypted::first_inner`]); returns its length.
    pub fn emit(&self, next: u8, buf: &mut [u8]) -> Result<usize, IkeError> {
        let len = self.emit_len();
        let buf = buf.get_mut(..len).ok_or(IkeError::BufferTooSmall)?;
        let next = match self {
            Payload::Encrypted(e) => e.first_inner,
            _ => next,
        };
        emit_generic(next, len - GENERIC_HEADER_LEN, buf)?;
        let body = &mut buf[GENERIC_HEADER_LEN..];
        match self {
            Payload::Sa(s) => s.emit(body)?,
            Payload::Ke(k) => k.emit(body)?,
            Payload::IdI(i) | Payload::IdR(i) => i.emit(body)?,
            Payload::Cert(c) | Payload::CertReq(c) => c.emit(body)?,
            Payload::Auth(a) => a.emit(body)?,
            Payload::Notify(n) => n.emit(body)?,
            Payload::Delete(d) => d.emit(body)?,
            Payload::TsI(t) | Payload::TsR(t) => t.emit(body)?,
            Payload::Encrypted(Encrypted { data: b, .. })
            | Payload::Nonce(b)
            | Payload::VendorId(b)
            | Payload::Configuration(b)
            | Payload::Eap(b)
            | Payload::Unknown { body: b, .. } => {
                body.copy_from_slice(b);
                b.len()
            }
        };
        Ok(len)
    }
}

/// An IKE message (RFC 7296 section 3): header fields and payloads in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The header; Next Payload and Length come from the payloads.
    pub header: HeaderRepr,
    /// The payloads, in the order sent. An SK payload, if any, is the last.
    pub payloads: Vec<Payload<'a>>,
}

impl<'a> Message<'a> {
    /// Checks and reads a whole message: the header ([`IkeHeader::check`]), the chain
    /// ([`Payloads`]) and every payload. A message with an unknown critical payload is
    /// refused with [`IkeError::UnsupportedCritical`], whose
    /// [`IkeError::notify_type`] the responder sends back.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, IkeError> {
        let h = IkeHeader::new_checked(bytes)?;
        let header = HeaderRepr::parse(&h);
        let payloads = Payload::parse_chain(h.next_payload(), &bytes[IKE_HEADER_LEN..])?;
        Ok(Message { header, payloads })
    }

    /// The first Notify of a type, e.g. [`crate::notify::COOKIE`].
    pub fn notify(&self, kind: u16) -> Option<&Notify<'a>> {
        self.notifies().find(|n| n.kind == kind)
    }

    /// Every Notify payload, in order.
    pub fn notifies(&self) -> impl Iterator<Item = &Notify<'a>> {
        self.payloads.iter().filter_map(|p| match p {
            Payload::Notify(n) => Some(n),
            _ => None,
        })
    }

    /// Length of the message [`Self::emit`] writes.
    pub fn emit_len(&self) -> usize {
        IKE_HEADER_LEN + self.payloads.iter().map(Payload::emit_len).sum::<usize>()
    }

    /// Writes the message into `buf` and returns its length. Refuses with
    /// [`IkeError::Malformed`] an SK payload that is not the last (section 3.14) or a
    /// payload that cannot be encoded; with [`IkeError::BufferTooSmall`] a short buffer.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, IkeError> {
        let n = self.payloads.len();
        if self.payloads[..n.saturating_sub(1)]
            .iter()
            .any(|p| matches!(p, Payload::Encrypted(_)))
        {
            return Err(IkeError::Malformed);
        }
        let len = self.emit_len();
        let total = u32::try_from(len).map_err(|_| IkeError::Malformed)?;
        let buf = buf.get_mut(..len).ok_or(IkeError::BufferTooSmall)?;
        let first = self.payloads.first().map_or(pt::NONE, Payload::kind);
        self.header.emit(first, total, buf)?;
        let mut at = IKE_HEADER_LEN;
        for (i, p) in self.payloads.iter().enumerate() {
            let next = self.payloads.get(i + 1).map_or(pt::NONE, Payload::kind);
            at += p.emit(next, &mut buf[at..])?;
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sa::{Proposal, Transform};
    use crate::{dh, encr, exchange, flags, integ, notify, prf, protocol, transform_type as tt};

    /// An IKE_SA_INIT request written by hand from RFC 7296 Figures 4-9, 10, 15 and 16:
    /// SA (one IKE proposal: AES-CBC-128, PRF-HMAC-SHA2-256, HMAC-SHA2-256-128, MODP-2048),
    /// KE (group 14, a 4-byte stand-in for the 256-byte value), Nonce (16 bytes), and a
    /// NAT_DETECTION_SOURCE_IP notify with a 4-byte stand-in for its 20-byte hash.
    fn sa_init_bytes() -> Vec<u8> {
        let mut m = vec![
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0, 0, 0, 0, 0, 0, 0, 0, // SPIs
            33, 0x20, 34, 0x08, 0, 0, 0, 0, 0, 0, 0, 120, // SA first, 2.0, SA_INIT, I, 0, len
        ];
        m.extend_from_slice(&[34, 0, 0, 48]); // SA, next KE
        m.extend_from_slice(&[0, 0, 0, 44, 1, 1, 0, 4]);
        m.extend_from_slice(&[3, 0, 0, 12, 1, 0, 0, 12, 0x80, 14, 0, 128]);
        m.extend_from_slice(&[3, 0, 0, 8, 2, 0, 0, 5]);
        m.extend_from_slice(&[3, 0, 0, 8, 3, 0, 0, 12]);
        m.extend_from_slice(&[0, 0, 0, 8, 4, 0, 0, 14]);
        m.extend_from_slice(&[40, 0, 0, 12, 0, 14, 0, 0, 0xde, 0xad, 0xbe, 0xef]); // KE
        m.extend_from_slice(&[41, 0, 0, 20]); // Nonce, next N
        m.extend_from_slice(&[7; 16]);
        m.extend_from_slice(&[0, 0, 0, 12, 0, 0, 0x40, 0x04, 1, 2, 3, 4]); // N(NAT_D_SRC)
        assert_eq!(m.len(), 120);
        m
    }

    fn sa_init() -> Message<'static> {
        Message {
            header: HeaderRepr {
                initiator_spi: 0x1122_3344_5566_7788,
                responder_spi: 0,
                exchange_type: exchange::IKE_SA_INIT,
                flags: flags::I,
                message_id: 0,
            },
            payloads: vec![
                Payload::Sa(SaPayload {
                    proposals: vec![Proposal {
                        number: 1,
                        protocol: protocol::IKE,
                        spi: vec![],
                        transforms: vec![
                            Transform::with_key_length(tt::ENCR, encr::AES_CBC, 128),
                            Transform::new(tt::PRF, prf::HMAC_SHA2_256),
                            Transform::new(tt::INTEG, integ::HMAC_SHA2_256_128),
                            Transform::new(tt::DH, dh::MODP_2048),
                        ],
                    }],
                }),
                Payload::Ke(KeyExchange {
                    group: dh::MODP_2048,
                    data: &[0xde, 0xad, 0xbe, 0xef],
                }),
                Payload::Nonce(&[7; 16]),
                Payload::Notify(Notify {
                    protocol: 0,
                    spi: &[],
                    kind: notify::NAT_DETECTION_SOURCE_IP,
                    data: &[1, 2, 3, 4],
                }),
            ],
        }
    }

    #[test]
    fn sa_init_both_ways() {
        let bytes = sa_init_bytes();
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m, sa_init());
        assert_eq!(
            m.notify(notify::NAT_DETECTION_SOURCE_IP).unwrap().data,
            &[1, 2, 3, 4]
        );
        assert!(m.notify(notify::COOKIE).is_none());
        let mut out = vec![0u8; sa_init().emit_len()];
        assert_eq!(sa_init().emit(&mut out), Ok(120));
        assert_eq!(out, bytes);
        assert_eq!(
            sa_init().emit(&mut [0u8; 119]),
            Err(IkeError::BufferTooSmall)
        );
    }

    /// Appends an unknown payload (type 200, 2-byte body) after the last one.
    fn with_unknown(critical: bool) -> Vec<u8> {
        let mut b = sa_init_bytes();
        b[108] = 200; // the notify's Next Payload
        b.extend_from_slice(&[0, if critical { 0x80 } else { 0 }, 0, 6, 0xab, 0xcd]);
        b[27] = 126;
        b
    }

    #[test]
    fn unknown_payloads() {
        let plain = with_unknown(false);
        let m = Message::parse(&plain).unwrap();
        assert_eq!(m.payloads.len(), 5);
        assert_eq!(
            m.payloads[4],
            Payload::Unknown {
                kind: 200,
                body: &[0xab, 0xcd]
            }
        );
        let mut out = vec![0u8; m.emit_len()];
        m.emit(&mut out).unwrap();
        assert_eq!(out, plain);
        let err = Message::parse(&with_unknown(true)).unwrap_err();
        assert_eq!(err, IkeError::UnsupportedCritical(200));
        assert_eq!(
            err.notify_type(),
            Some(notify::UNSUPPORTED_CRITICAL_PAYLOAD)
        );
    }

    #[test]
    fn refusals() {
        let mut short_nonce = sa_init_bytes();
        short_nonce[91] = 19; // Nonce payload length 19: 15 bytes of data, then garbage
        assert!(Message::parse(&short_nonce).is_err());
        let mut v3 = sa_init_bytes();
        v3[17] = 0x30;
        let e = Message::parse(&v3).unwrap_err();
        assert_eq!(e.notify_type(), Some(notify::INVALID_MAJOR_VERSION));
        let mut trailing = sa_init_bytes();
        trailing.push(0);
        trailing[27] = 121; // the header covers it, the chain does not
        assert_eq!(Message::parse(&trailing), Err(IkeError::Malformed));
        let mut sk_first = sa_init();
        sk_first.payloads.insert(
            0,
            Payload::Encrypted(Encrypted {
                first_inner: 35,
                data: &[0; 32],
            }),
        );
        assert_eq!(sk_first.emit(&mut [0u8; 512]), Err(IkeError::Malformed));
    }

    #[test]
    fn encrypted_last_and_inner_chain() {
        // An IKE_AUTH request: SK holding (in this test, in clear) IDi then AUTH.
        let inner = [
            39u8, 0, 0, 12, 2, 0, 0, 0, b'm', b'n', b'@', b'x', 0, 0, 0, 8, 2, 0, 0, 0,
        ];
        let m = Message {
            header: HeaderRepr {
                initiator_spi: 1,
                responder_spi: 2,
                exchange_type: exchange::IKE_AUTH,
                flags: flags::I,
                message_id: 1,
            },
            payloads: vec![Payload::Encrypted(Encrypted {
                first_inner: pt::IDI,
                data: &inner,
            })],
        };
        let mut out = vec![0u8; m.emit_len()];
        m.emit(&mut out).unwrap();
        assert_eq!(out[16], pt::SK);
        assert_eq!(
            out[28],
            pt::IDI,
            "SK's Next Payload names the first inner payload"
        );
        let back = Message::parse(&out).unwrap();
        assert_eq!(back, m);
        let Payload::Encrypted(sk) = back.payloads[0] else {
            panic!("not SK")
        };
        let chain = Payload::parse_chain(sk.first_inner, sk.data).unwrap();
        assert_eq!(chain[0], Payload::IdI(Identification::Fqdn(b"mn@x")));
        assert_eq!(
            chain[1],
            Payload::Auth(Auth {
                method: 2,
                data: &[]
            })
        );
    }
}
