//! Sealing and opening the Encrypted and Authenticated payload SK (RFC 7296 section 3.14)
//! with the IKE SA's keys: AES-CBC with HMAC-SHA-256-128 (sections 3.14 and 2.14, RFC 4868),
//! or AES-GCM with a 16-byte ICV (RFC 5282 sections 3 to 5).
//!
//! Every message after IKE_SA_INIT carries exactly one SK payload as its only payload, as
//! strongSwan and RFC 7296 section 1 send them; [`open`] still accepts unencrypted payloads
//! before it (section 3.14 allows them) and authenticates them with the rest.

use crate::header::{HeaderRepr, IkeHeader, IKE_HEADER_LEN};
use crate::message::Payload;
use crate::payload::{emit_generic, Payloads, GENERIC_HEADER_LEN};
use crate::suite::{Encr, IkeSuite, INTEG_ICV_LEN};
use crate::{payload_type as pt, IkeError};
use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use rand_core::RngCore;
use ring::aead;
use sha2::Sha256;

/// The ICV of both ciphers: HMAC-SHA-256-128's truncation and the GCM tag.
const ICV_LEN: usize = 16;
/// AES block, the CBC IV and padding unit.
const BLOCK: usize = 16;
/// GCM's explicit IV (RFC 5282 section 3.1).
const GCM_IV_LEN: usize = 8;

/// Why an SK payload could not be opened. Section 2.21.2: a message that fails its
/// integrity check is dropped without an answer, so none of these is ever answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkError {
    /// The message is not a well-formed header and chain ending in SK.
    #[error("malformed encrypted message: {0}")]
    Format(IkeError),
    /// The ICV or the GCM tag does not verify: not from the peer, or altered.
    #[error("integrity check failed")]
    Integrity,
    /// Decrypted, but the padding does not fit (CBC: Pad Length beyond the plaintext).
    #[error("bad padding")]
    Padding,
}

/// The keys of one direction.
#[derive(Clone, Copy)]
pub struct SkKeys<'a> {
    /// SK_e of this direction (key, then the 4-byte salt for GCM).
    pub encr: &'a [u8],
    /// SK_a of this direction (empty for GCM).
    pub integ: &'a [u8],
}

fn iv_len(e: Encr) -> usize {
    match e {
        Encr::AesCbc(_) => BLOCK,
        Encr::AesGcm16(_) => GCM_IV_LEN,
    }
}

fn gcm_key(e: Encr, key: &[u8]) -> Option<aead::LessSafeKey> {
    let alg = if e.key_len() == 16 {
        &aead::AES_128_GCM
    } else {
        &aead::AES_256_GCM
    };
    aead::UnboundKey::new(alg, key)
        .ok()
        .map(aead::LessSafeKey::new)
}

fn hmac_icv(key: &[u8], data: &[u8]) -> [u8; INTEG_ICV_LEN] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    let mut out = [0u8; INTEG_ICV_LEN];
    out.copy_from_slice(&mac.finalize().into_bytes()[..INTEG_ICV_LEN]);
    out
}

/// Writes a message whose only payload is SK holding `inner`, with `header`'s fields
/// (Next Payload and Length are filled in), encrypted and authenticated under `keys`.
pub fn seal(
    suite: &IkeSuite,
    keys: SkKeys<'_>,
    header: &HeaderRepr,
    inner: &[Payload<'_>],
    rng: &mut impl RngCore,
) -> Result<Vec<u8>, IkeError> {
    let e = suite.encr;
    let inner_len: usize = inner.iter().map(Payload::emit_len).sum();
    // CBC: padding so that payloads | padding | Pad Length fill whole blocks; GCM is a
    // stream mode whose block size is one octet (RFC 5282 section 3), so no padding.
    let pad = match e {
        Encr::AesCbc(_) => (BLOCK - (inner_len + 1) % BLOCK) % BLOCK,
        Encr::AesGcm16(_) => 0,
    };
    let plain_len = inner_len + pad + 1;
    let ivl = iv_len(e);
    let sk_start = IKE_HEADER_LEN;
    let body_start = sk_start + GENERIC_HEADER_LEN;
    let ct_start = body_start + ivl;
    let total = ct_start + plain_len + ICV_LEN;
    let mut buf = vec![0u8; total];
    let first_inner = inner.first().map_or(pt::NONE, Payload::kind);
    header.emit(
        pt::SK,
        u32::try_from(total).map_err(|_| IkeError::Malformed)?,
        &mut buf,
    )?;
    emit_generic(
        first_inner,
        total - body_start,
        &mut buf[sk_start..body_start],
    )?;
    rng.fill_bytes(&mut buf[body_start..ct_start]);
    let mut at = ct_start;
    for (i, p) in inner.iter().enumerate() {
        let next = inner.get(i + 1).map_or(pt::NONE, Payload::kind);
        at += p.emit(next, &mut buf[at..])?;
    }
    // Padding octets stay zero ("any value chosen by the sender"); then Pad Length.
    buf[ct_start + plain_len - 1] = pad as u8;
    match e {
        Encr::AesCbc(n) => {
            let (head, rest) = buf.split_at_mut(ct_start);
            let iv = &head[body_start..];
            let data = &mut rest[..plain_len];
            let res = if n == 16 {
                cbc::Encryptor::<aes::Aes128>::new_from_slices(keys.encr, iv)
                    .map_err(|_| IkeError::Malformed)?
                    .encrypt_padded_mut::<NoPadding>(data, plain_len)
                    .map(|_| ())
            } else {
                cbc::Encryptor::<aes::Aes256>::new_from_slices(keys.encr, iv)
                    .map_err(|_| IkeError::Malformed)?
                    .encrypt_padded_mut::<NoPadding>(data, plain_len)
                    .map(|_| ())
            };
            res.map_err(|_| IkeError::Malformed)?;
            let icv = hmac_icv(keys.integ, &buf[..ct_start + plain_len]);
            buf[ct_start + plain_len..].copy_from_slice(&icv);
        }
        Encr::AesGcm16(n) => {
            let (key, salt) = keys.encr.split_at(n);
            let key = gcm_key(e, key).ok_or(IkeError::Malformed)?;
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(salt);
            nonce[4..].copy_from_slice(&buf[body_start..ct_start]);
            let (aad, rest) = buf.split_at_mut(ct_start);
            // RFC 5282 section 5.1: the AAD is everything before the IV.
            let aad = aead::Aad::from(&aad[..body_start]);
            let (data, tag_out) = rest.split_at_mut(plain_len);
            let tag = key
                .seal_in_place_separate_tag(aead::Nonce::assume_unique_for_key(nonce), aad, data)
                .map_err(|_| IkeError::Malformed)?;
            tag_out.copy_from_slice(tag.as_ref());
        }
    }
    Ok(buf)
}

/// What [`open`] found: the type of the first inner payload and the decrypted chain
/// (padding removed), for [`Payload::parse_chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The SK payload's Next Payload.
    pub first_inner: u8,
    /// The inner payloads, exactly.
    pub plain: Vec<u8>,
}

/// Checks and decrypts the SK payload of `msg` (a whole message) under `keys`. The
/// integrity check covers the whole message before anything is decrypted (CBC), or is the
/// tag check of the AEAD (GCM); nothing is returned from a message that fails it.
pub fn open(suite: &IkeSuite, keys: SkKeys<'_>, msg: &[u8]) -> Result<Opened, SkError> {
    let h = IkeHeader::new_checked(msg).map_err(SkError::Format)?;
    let mut sk = None;
    for v in Payloads::new(h.next_payload(), &msg[IKE_HEADER_LEN..]) {
        let v = v.map_err(SkError::Format)?;
        if v.kind == pt::SK {
            // Offsets inside `msg`, from the view's borrowed body.
            let body_start = v.body.as_ptr() as usize - msg.as_ptr() as usize;
            sk = Some((v.next, body_start));
        }
    }
    let (first_inner, body_start) = sk.ok_or(SkError::Format(IkeError::Malformed))?;
    let e = suite.encr;
    let ivl = iv_len(e);
    let ct_start = body_start + ivl;
    let ct_end = msg
        .len()
        .checked_sub(ICV_LEN)
        .filter(|&end| end >= ct_start)
        .ok_or(SkError::Format(IkeError::Truncated))?;
    let mut plain = msg[ct_start..ct_end].to_vec();
    match e {
        Encr::AesCbc(n) => {
            let icv = hmac_icv(keys.integ, &msg[..ct_end]);
            if !constant_time_eq(&icv, &msg[ct_end..]) {
                return Err(SkError::Integrity);
            }
            if plain.is_empty() || plain.len() % BLOCK != 0 {
                return Err(SkError::Padding);
            }
            let iv = &msg[body_start..ct_start];
            let res = if n == 16 {
                cbc::Decryptor::<aes::Aes128>::new_from_slices(keys.encr, iv)
                    .map_err(|_| SkError::Integrity)?
                    .decrypt_padded_mut::<NoPadding>(&mut plain)
                    .map(|_| ())
            } else {
                cbc::Decryptor::<aes::Aes256>::new_from_slices(keys.encr, iv)
                    .map_err(|_| SkError::Integrity)?
                    .decrypt_padded_mut::<NoPadding>(&mut plain)
                    .map(|_| ())
            };
            res.map_err(|_| SkError::Padding)?;
        }
        Encr::AesGcm16(n) => {
            if keys.encr.len() != n + 4 {
                return Err(SkError::Integrity);
            }
            let (key, salt) = keys.encr.split_at(n);
            let key = gcm_key(e, key).ok_or(SkError::Integrity)?;
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(salt);
            nonce[4..].copy_from_slice(&msg[body_start..ct_start]);
            plain.extend_from_slice(&msg[ct_end..]);
            let aad = aead::Aad::from(&msg[..body_start]);
            let len = key
                .open_in_place(aead::Nonce::assume_unique_for_key(nonce), aad, &mut plain)
                .map_err(|_| SkError::Integrity)?
                .len();
            plain.truncate(len);
        }
    }
    let pad = usize::from(*plain.last().ok_or(SkError::Padding)?);
    let inner_len = plain.len().checked_sub(pad + 1).ok_or(SkError::Padding)?;
    plain.truncate(inner_len);
    Ok(Opened { first_inner, plain })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::Group;
    use crate::{exchange, flags};
    use rand_chacha::rand_core::SeedableRng;

    fn suites() -> Vec<IkeSuite> {
        [
            "aes128-sha256-modp2048",
            "aes256-sha256-modp2048",
            "aes128gcm16-prfsha256-ecp256",
            "aes256gcm16-prfsha256-curve25519",
        ]
        .iter()
        .map(|s| IkeSuite::parse(s).unwrap())
        .collect()
    }

    fn header() -> HeaderRepr {
        HeaderRepr {
            initiator_spi: 0x0102030405060708,
            responder_spi: 0x1112131415161718,
            exchange_type: exchange::IKE_AUTH,
            flags: flags::I,
            message_id: 1,
        }
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        for suite in suites() {
            let enc = vec![7u8; suite.encr.sk_e_len()];
            let integ = if suite.integ { vec![9u8; 32] } else { vec![] };
            let keys = SkKeys {
                encr: &enc,
                integ: &integ,
            };
            for n in [16usize, 17, 31, 32, 100] {
                let nonce = vec![0x5a; n];
                let inner = [Payload::Nonce(&nonce), Payload::VendorId(b"m6t")];
                let msg = seal(&suite, keys, &header(), &inner, &mut rng).unwrap();
                let m = crate::Message::parse(&msg).unwrap();
                assert_eq!(m.header, header());
                let o = open(&suite, keys, &msg).unwrap();
                assert_eq!(o.first_inner, pt::NONCE);
                assert_eq!(
                    Payload::parse_chain(o.first_inner, &o.plain).unwrap(),
                    inner
                );
                // Any flipped bit, header included, fails the check.
                for at in [0, 20, 30, msg.len() / 2, msg.len() - 1] {
                    let mut bad = msg.clone();
                    bad[at] ^= 1;
                    assert!(open(&suite, keys, &bad).is_err(), "{suite:?} byte {at}");
                }
                // Wrong key.
                let other = vec![8u8; suite.encr.sk_e_len()];
                let wrong = SkKeys {
                    encr: &other,
                    integ: &integ,
                };
                if !suite.integ {
                    assert_eq!(open(&suite, wrong, &msg), Err(SkError::Integrity));
                }
            }
        }
    }

    #[test]
    fn truncated_or_plain_messages_are_refused() {
        let suite = IkeSuite::parse("aes128-sha256-modp2048").unwrap();
        let enc = [1u8; 16];
        let keys = SkKeys {
            encr: &enc,
            integ: &[2u8; 32],
        };
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let msg = seal(&suite, keys, &header(), &[], &mut rng).unwrap();
        assert!(open(&suite, keys, &msg).unwrap().plain.is_empty());
        for cut in [0, 27, 28, 32, 40, msg.len() - 1] {
            assert!(open(&suite, keys, &msg[..cut]).is_err());
        }
        let _ = Group::Modp2048;
    }
}
