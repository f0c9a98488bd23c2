//! The generic payload chain (RFC 7296 section 3.2), walked without allocating.

use crate::{be16, payload_type, IkeError};

/// Length of the generic payload header: Next Payload, C and reserved, Payload Length
/// (RFC 7296 section 3.2, Figure 5).
pub const GENERIC_HEADER_LEN: usize = 4;

/// Most payloads accepted in one chain. Real messages carry a handful (strongSwan's
/// IKE_SA_INIT request has seven; IKE_AUTH with certificates and several notifies about
/// fifteen); the bound caps the work and the memory a hostile message can cause.
pub const MAX_PAYLOADS: usize = 64;

/// The critical bit of the generic payload header (section 3.2).
const CRITICAL: u8 = 0x80;

/// Whether this implementation knows a payload type (section 3.2): the critical bit only
/// matters for the others.
pub fn is_known(kind: u8) -> bool {
    (payload_type::SA..=payload_type::EAP).contains(&kind)
}

/// One payload of a chain, as the generic header describes it (RFC 7296 section 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadView<'a> {
    /// This payload's type (named by the previous header's Next Payload field).
    pub kind: u8,
    /// The critical bit as received: senders clear it on the payloads of RFC 7296, and it
    /// only matters for unknown types.
    pub critical: bool,
    /// The Next Payload field: the type of the following payload, or for SK the type of the
    /// first payload inside the ciphertext (section 3.14).
    pub next: u8,
    /// The payload's body, after its 4-byte generic header.
    pub body: &'a [u8],
}

/// Walks a payload chain (section 3.2) and yields each payload with its body, refusing:
///
/// - [`IkeError::Truncated`]: a generic header or a Payload Length beyond the bytes left;
/// - [`IkeError::Malformed`]: a Payload Length below 4, bytes after the last payload, or any
///   payload after SK (section 3.14: SK is the last payload of a message);
/// - [`IkeError::UnsupportedCritical`]: an unknown type with the critical bit set; an
///   unknown type without it is yielded for the caller to skip;
/// - [`IkeError::TooManyPayloads`]: more than [`MAX_PAYLOADS`].
///
/// After the first error the iterator ends. Nothing is allocated.
#[derive(Debug, Clone)]
pub struct Payloads<'a> {
    rest: &'a [u8],
    next: u8,
    count: usize,
    done: bool,
}

impl<'a> Payloads<'a> {
    /// A chain whose first payload has type `first` (the IKE header's Next Payload, or an SK
    /// payload's for the decrypted inner chain) and which fills `bytes` exactly.
    pub fn new(first: u8, bytes: &'a [u8]) -> Self {
        Payloads {
            rest: bytes,
            next: first,
            count: 0,
            done: false,
        }
    }

    fn step(&mut self) -> Result<Option<PayloadView<'a>>, IkeError> {
        if self.next == payload_type::NONE {
            return if self.rest.is_empty() {
                Ok(None)
            } else {
                Err(IkeError::Malformed)
            };
        }
        if self.count == MAX_PAYLOADS {
            return Err(IkeError::TooManyPayloads);
        }
        if self.rest.len() < GENERIC_HEADER_LEN {
            return Err(IkeError::Truncated);
        }
        let len = be16(self.rest, 2) as usize;
        if len < GENERIC_HEADER_LEN {
            return Err(IkeError::Malformed);
        }
        if len > self.rest.len() {
            return Err(IkeError::Truncated);
        }
        let kind = self.next;
        let critical = self.rest[1] & CRITICAL != 0;
        if critical && !is_known(kind) {
            return Err(IkeError::UnsupportedCritical(kind));
        }
        let view = PayloadView {
            kind,
            critical,
            next: self.rest[0],
            body: &self.rest[GENERIC_HEADER_LEN..len],
        };
        self.rest = &self.rest[len..];
        self.count += 1;
        // The Next Payload of SK names what is inside the ciphertext: the outer chain ends.
        self.next = if kind == payload_type::SK {
            if !self.rest.is_empty() {
                return Err(IkeError::Malformed);
            }
            payload_type::NONE
        } else {
            view.next
        };
        Ok(Some(view))
    }
}

impl<'a> Iterator for Payloads<'a> {
    type Item = Result<PayloadView<'a>, IkeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(p)) => Some(Ok(p)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Writes a generic payload header (section 3.2) at the start of `buf`, critical bit clear
/// as section 3.2 requires for the payloads it defines.
pub(crate) fn emit_generic(next: u8, body_len: usize, buf: &mut [u8]) -> Result<(), IkeError> {
    let len = u16::try_from(GENERIC_HEADER_LEN + body_len).map_err(|_| IkeError::Malformed)?;
    let h = buf
        .get_mut(..GENERIC_HEADER_LEN)
        .ok_or(IkeError::BufferTooSmall)?;
    h[0] = next;
    h[1] = 0;
    h[2..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nonce (4 bytes of data) then a Vendor ID (2 bytes), then nothing.
    const CHAIN: [u8; 14] = [43, 0, 0, 8, 1, 2, 3, 4, 0, 0, 0, 6, 0xaa, 0xbb];

    #[test]
    fn walks_a_chain() {
        let v: Vec<_> = Payloads::new(payload_type::NONCE, &CHAIN)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].kind, payload_type::NONCE);
        assert_eq!(v[0].body, &[1, 2, 3, 4]);
        assert_eq!(v[1].kind, payload_type::VENDOR_ID);
        assert_eq!(v[1].body, &[0xaa, 0xbb]);
    }

    #[test]
    fn critical_bit() {
        // Type 200 is unknown: without C it is yielded (to be skipped), with C refused.
        let plain = [0u8, 0, 0, 5, 9];
        let v: Vec<_> = Payloads::new(200, &plain).collect();
        assert_eq!(v.len(), 1);
        assert!(!v[0].unwrap().critical);
        let crit = [0u8, 0x80, 0, 5, 9];
        let v: Vec<_> = Payloads::new(200, &crit).collect();
        assert_eq!(v, vec![Err(IkeError::UnsupportedCritical(200))]);
        // A known type with C set is accepted (the bit is for unknown types).
        let v: Vec<_> = Payloads::new(payload_type::VENDOR_ID, &crit).collect();
        assert!(v[0].unwrap().critical);
    }

    #[test]
    fn refusals() {
        let err = |first: u8, b: &[u8]| Payloads::new(first, b).find_map(|r| r.err());
        assert_eq!(
            err(payload_type::NONCE, &CHAIN[..13]),
            Some(IkeError::Truncated)
        );
        assert_eq!(
            err(payload_type::NONCE, &[0, 0, 0]),
            Some(IkeError::Truncated)
        );
        assert_eq!(
            err(payload_type::NONCE, &[0, 0, 0, 3]),
            Some(IkeError::Malformed)
        );
        assert_eq!(err(payload_type::NONE, &[0]), Some(IkeError::Malformed));
        // Anything after SK.
        assert_eq!(
            err(payload_type::SK, &[33, 0, 0, 4, 0, 0, 0, 4]),
            Some(IkeError::Malformed)
        );
        // 65 empty Vendor IDs.
        let mut many = Vec::new();
        for _ in 0..MAX_PAYLOADS + 1 {
            many.extend_from_slice(&[payload_type::VENDOR_ID, 0, 0, 4]);
        }
        assert_eq!(
            err(payload_type::VENDOR_ID, &many),
            Some(IkeError::TooManyPayloads)
        );
    }
}
