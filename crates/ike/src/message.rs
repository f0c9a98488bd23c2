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
