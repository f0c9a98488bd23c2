//! The algorithm-specific half of ESP: IV generation, encryption with the ICV, and ICV
//! verification with decryption, over a packet laid out as RFC 4303 section 2 draws it
//! (`SPI | Sequence Number | IV | ciphertext [| ICV]`).
//!
//! Nothing here allocates: keys are expanded once when the SA is made, and every operation
//! works in place on the caller's buffer.

use crate::sa::{Algorithm, SaError};
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, InnerIvInit, KeyInit};
use aes::{Aes128, Aes256};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut};
use hmac::{Hmac, Mac};
use m6t_wire::esp::ESP_HEADER_LEN;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_128_GCM, AES_256_GCM};
use sha2::Sha256;

/// Length of the ICV of every algorithm here: the full GCM tag (RFC 4106 section 6) and
/// HMAC-SHA-256 truncated to 128 bits (RFC 4868 section 2.3).
pub const ICV_LEN: usize = 16;

/// Length of the salt at the end of an AES-GCM key (RFC 4106 section 8.1).
const SALT_LEN: usize = 4;
/// Length of an HMAC-SHA-256 key (RFC 4868 section 2.1.1: the block-size-independent key
/// length equals the output length, 256 bits).
const HMAC_KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// An expanded AES-GCM key (128 or 256 bits: ring's key knows which).
#[derive(Clone)]
pub(crate) struct Gcm(Box<LessSafeKey>);

/// An expanded AES key for CBC.
#[derive(Clone)]
pub(crate) enum Aes {
    A128(Box<Aes128>),
    A256(Box<Aes256>),
}

/// The keys of one SA, expanded. The expanded keys are boxed (once, when the SA is made) so
/// that an `Sa` stays a few dozen bytes when the SAD moves it around.
#[derive(Clone)]
pub(crate) enum Cipher {
    /// RFC 4106: AES-GCM, salt from the last four bytes of the key material.
    Gcm { aead: Gcm, salt: [u8; SALT_LEN] },
    /// RFC 3602 + RFC 4868: AES-CBC for confidentiality, HMAC-SHA-256-128 for integrity.
    Cbc { aes: Aes, mac: Box<HmacSha256> },
}

impl std::fmt::Debug for Cipher {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cipher::Gcm { .. } => "Cipher::Gcm(..)",
            Cipher::Cbc { .. } => "Cipher::Cbc(..)",
        })
    }
}

/// The ICV failed to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadIcv;

impl Cipher {
    /// Expands `keymat`, laid out as IKEv2 derives it (RFC 7296 section 2.17: encryption key
    /// first, then integrity key) and as RFC 4106 section 8.1 appends the GCM salt.
    pub(crate) fn new(algorithm: Algorithm, keymat: &[u8]) -> Result<Cipher, SaError> {
        let expected = algorithm.keymat_len();
        if keymat.len() != expected {
            return Err(SaError::KeyLength {
                algorithm,
                expected,
                got: keymat.len(),
            });
        }
        let bad = |_: ()| SaError::KeyLength {
            algorithm,
            expected,
            got: keymat.len(),
        };
        Ok(match algorithm {
            Algorithm::AesGcm128 | Algorithm::AesGcm256 => {
                let (key, salt) = keymat.split_at(keymat.len() - SALT_LEN);
                let alg = if algorithm == Algorithm::AesGcm128 {
                    &AES_128_GCM
                } else {
                    &AES_256_GCM
                };
                let key = UnboundKey::new(alg, key).map_err(|_| bad(()))?;
                let aead = Gcm(Box::new(LessSafeKey::new(key)));
                let mut s = [0; SALT_LEN];
                s.copy_from_slice(salt);
                Cipher::Gcm { aead, salt: s }
            }
            Algorithm::AesCbc128HmacSha256 | Algorithm::AesCbc256HmacSha256 => {
                let (key, auth) = keymat.split_at(keymat.len() - HMAC_KEY_LEN);
                let aes = if algorithm == Algorithm::AesCbc128HmacSha256 {
                    Aes::A128(Box::new(Aes128::new_from_slice(key).map_err(|_| bad(()))?))
                } else {
                    Aes::A256(Box::new(Aes256::new_from_slice(key).map_err(|_| bad(()))?))
                };
                let mac = <HmacSha256 as Mac>::new_from_slice(auth).map_err(|_| bad(()))?;
                Cipher::Cbc {
                    aes,
                    mac: Box::new(mac),
                }
            }
        })
    }

    /// Writes the IV of the packet with sequence number `seq` into `iv` (8 bytes for GCM,
    /// 16 for CBC).
    ///
    /// - GCM needs an IV that never repeats under a key (RFC 4106 section 3.1): `seed + seq`
    ///   (mod 2^64), unique because the sequence counter never cycles on an SA. The caller's
    ///   random `seed` keeps a manually keyed SA whose counter restarted at zero after a reboot
    ///   from reusing the IVs of before, with high probability (RFC 4106 section 2 forbids
    ///   manual keys for GCM precisely because of that reuse).
    /// - CBC needs an unpredictable IV (RFC 3602 section 2.3): the SA's AES key applied to the
    ///   block `seed || seq`, the first method of NIST SP 800-38A appendix C (the forward
    ///   cipher applied to a nonce under the same key), so no random source is needed here.
    pub(crate) fn make_iv(&self, seed: u64, seq: u64, iv: &mut [u8]) {
        match self {
            Cipher::Gcm { .. } => iv.copy_from_slice(&seed.wrapping_add(seq).to_be_bytes()),
            Cipher::Cbc { aes, .. } => {
                iv[..8].copy_from_slice(&seed.to_be_bytes());
                iv[8..].copy_from_slice(&seq.to_be_bytes());
                let block = GenericArray::from_mut_slice(iv);
                match aes {
                    Aes::A128(k) => k.encrypt_block(block),
                    Aes::A256(k) => k.encrypt_block(block),
                }
            }
        }
    }

    /// Encrypts `packet[ESP_HEADER_LEN + iv_len..]` in place and returns the ICV.
    ///
    /// `packet` is `SPI | Sequence Number | IV | plaintext`, the plaintext already padded to
    /// the algorithm's block (the caller's job, RFC 4303 section 2.4). `seq_high` is the high
    /// half of an Extended Sequence Number, `None` without ESN.
    pub(crate) fn seal(&self, packet: &mut [u8], seq_high: Option<u32>) -> [u8; ICV_LEN] {
        match self {
            Cipher::Gcm { aead, salt } => {
                let (head, plaintext) = packet.split_at_mut(ESP_HEADER_LEN + 8);
                let nonce = gcm_nonce(salt, &head[ESP_HEADER_LEN..]);
                let mut aad = [0; 12];
                let aad = gcm_aad(head, seq_high, &mut aad);
                aead.seal(&nonce, aad, plaintext)
            }
            Cipher::Cbc { aes, mac } => {
                let (head, plaintext) = packet.split_at_mut(ESP_HEADER_LEN + 16);
                aes.cbc_encrypt(&head[ESP_HEADER_LEN..], plaintext);
                let (high, n) = high_bytes(seq_high);
                hmac_icv(mac, &[&*packet, &high[..n]])
            }
        }
    }

    /// Verifies the ICV at the end of `packet` and decrypts the ciphertext in place; no byte
    /// of the plaintext is handed out unless the ICV verified (RFC 4303 section 3.4.4). CBC
    /// checks the HMAC before it decrypts (section 3.4.4.1), so on [`BadIcv`] the buffer is
    /// unchanged; GCM decrypts and authenticates in one pass (section 3.4.4.2), and ring then
    /// zeroes the ciphertext it decrypted.
    ///
    /// `packet` is `SPI | Sequence Number | IV | ciphertext | ICV`, with a ciphertext length
    /// the caller checked against the algorithm's block.
    pub(crate) fn open(&self, packet: &mut [u8], seq_high: Option<u32>) -> Result<(), BadIcv> {
        let (body, icv) = packet.split_at_mut(packet.len() - ICV_LEN);
        match self {
            Cipher::Gcm { aead, salt } => {
                let (head, ciphertext) = body.split_at_mut(ESP_HEADER_LEN + 8);
                let nonce = gcm_nonce(salt, &head[ESP_HEADER_LEN..]);
                let mut aad = [0; 12];
                let aad = gcm_aad(head, seq_high, &mut aad);
                aead.open(&nonce, aad, ciphertext, icv)
            }
            Cipher::Cbc { aes, mac } => {
                // RFC 4303 section 3.4.4.1: the ICV is over SPI .. Next Header, plus the
                // implicit ESN high bits, and is checked before decryption.
                let mut m = (**mac).clone();
                m.update(body);
                let (high, n) = high_bytes(seq_high);
                m.update(&high[..n]);
                m.verify_truncated_left(icv).map_err(|_| BadIcv)?;
                let (head, ciphertext) = body.split_at_mut(ESP_HEADER_LEN + 16);
                aes.cbc_decrypt(&head[ESP_HEADER_LEN..], ciphertext);
                Ok(())
            }
        }
    }
}

/// The high 32 bits of an ESN as they enter the ICV (RFC 4303 section 2.2.1: appended after
/// Next Header for a separate integrity algorithm, never sent); nothing without ESN.
fn high_bytes(seq_high: Option<u32>) -> ([u8; 4], usize) {
    match seq_high {
        Some(h) => (h.to_be_bytes(), 4),
        None => ([0; 4], 0),
    }
}

/// The 12-byte GCM nonce: salt, then the 8-byte IV carried in the packet (RFC 4106 section 4).
fn gcm_nonce(salt: &[u8; SALT_LEN], iv: &[u8]) -> [u8; 12] {
    let mut n = [0; 12];
    n[..SALT_LEN].copy_from_slice(salt);
    n[SALT_LEN..].copy_from_slice(iv);
    n
}

/// The GCM AAD (RFC 4106 section 5): SPI and Sequence Number (Figure 3), or with ESN the SPI
/// and the 64-bit number, high half first (Figure 4). `head` starts with the ESP header.
fn gcm_aad<'a>(head: &[u8], seq_high: Option<u32>, buf: &'a mut [u8; 12]) -> &'a [u8] {
    buf[..4].copy_from_slice(&head[..4]);
    match seq_high {
        None => {
            buf[4..8].copy_from_slice(&head[4..8]);
            &buf[..8]
        }
        Some(h) => {
            buf[4..8].copy_from_slice(&h.to_be_bytes());
            buf[8..12].copy_from_slice(&head[4..8]);
            &buf[..]
        }
    }
}

/// HMAC-SHA-256 over the concatenation of `parts`, truncated to its first 128 bits
/// (RFC 4868 section 2.3). The keyed state is cloned, so the key is not hashed again.
fn hmac_icv(mac: &HmacSha256, parts: &[&[u8]]) -> [u8; ICV_LEN] {
    let mut m = mac.clone();
    for p in parts {
        m.update(p);
    }
    let full = m.finalize().into_bytes();
    let mut icv = [0; ICV_LEN];
    icv.copy_from_slice(&full[..ICV_LEN]);
    icv
}

impl Gcm {
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; ICV_LEN] {
        let nonce = Nonce::assume_unique_for_key(*nonce);
        // Fails only past GCM's 2^36-byte message limit, which a caller that kept the ESP
        // packet within 65535 bytes cannot reach; a zero tag would then fail at the peer.
        let mut icv = [0; ICV_LEN];
        if let Ok(t) = self
            .0
            .seal_in_place_separate_tag(nonce, Aad::from(aad), buf)
        {
            icv.copy_from_slice(t.as_ref());
        }
        icv
    }

    fn open(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8], icv: &[u8]) -> Result<(), BadIcv> {
        let nonce = Nonce::assume_unique_for_key(*nonce);
        let tag = Tag::try_from(icv).map_err(|_| BadIcv)?;
        // ring compares the tag in constant time and zeroes the output if it differs.
        self.0
            .open_in_place_separate_tag(nonce, Aad::from(aad), tag, buf, 0..)
            .map(|_| ())
            .map_err(|_| BadIcv)
    }
}

impl Aes {
    /// CBC without padding (ESP pads, RFC 4303 section 2.4); `buf` is whole blocks.
    fn cbc_encrypt(&self, iv: &[u8], buf: &mut [u8]) {
        let iv = GenericArray::from_slice(iv);
        let len = buf.len();
        // NoPadding only fails on a partial block, which the caller's padding rules out.
        let _ = match self {
            Aes::A128(k) => cbc::Encryptor::<Aes128>::inner_iv_init((**k).clone(), iv)
                .encrypt_padded_mut::<NoPadding>(buf, len)
                .map(|_| ()),
            Aes::A256(k) => cbc::Encryptor::<Aes256>::inner_iv_init((**k).clone(), iv)
                .encrypt_padded_mut::<NoPadding>(buf, len)
                .map(|_| ()),
        };
    }

    /// CBC decryption in place; `buf` is whole blocks (checked by the caller).
    fn cbc_decrypt(&self, iv: &[u8], buf: &mut [u8]) {
        let iv = GenericArray::from_slice(iv);
        let _ = match self {
            Aes::A128(k) => cbc::Decryptor::<Aes128>::inner_iv_init((**k).clone(), iv)
                .decrypt_padded_mut::<NoPadding>(buf)
                .map(|_| ()),
            Aes::A256(k) => cbc::Decryptor::<Aes256>::inner_iv_init((**k).clone(), iv)
                .decrypt_padded_mut::<NoPadding>(buf)
                .map(|_| ()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const GCM_K: &str = "feffe9928665731c6d6a8f9467308308";
    const GCM_P: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39";
    const GCM_C: &str = "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
                         21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091";

    /// McGrew and Viega, "The Galois/Counter Mode of Operation", test case 4 (128-bit key,
    /// 60-byte plaintext, 20-byte AAD), which RFC 4106 section 9 points to; the key and the
    /// 96-bit IV are split as RFC 4106 does: salt cafebabe, ESP IV facedbaddecaf888.
    /// Bytes cross-checked with python3-cryptography's AESGCM.
    #[test]
    fn gcm_test_case_4() {
        let mut keymat = hex(GCM_K);
        keymat.extend_from_slice(&hex("cafebabe"));
        let Cipher::Gcm { aead, salt } = Cipher::new(Algorithm::AesGcm128, &keymat).unwrap() else {
            panic!("not GCM")
        };
        let nonce = gcm_nonce(&salt, &hex("facedbaddecaf888"));
        assert_eq!(nonce.to_vec(), hex("cafebabefacedbaddecaf888"));
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let mut buf = hex(GCM_P);
        let tag = aead.seal(&nonce, &aad, &mut buf);
        assert_eq!(buf, hex(GCM_C));
        assert_eq!(tag.to_vec(), hex("5bc94fbc3221a5db94fae95ae7121a47"));
        aead.open(&nonce, &aad, &mut buf, &tag).unwrap();
        assert_eq!(buf, hex(GCM_P));
        // One bit of the AAD changed: refused, and no plaintext is left in the buffer.
        let mut bad = aad.clone();
        bad[0] ^= 1;
        let mut c = hex(GCM_C);
        assert_eq!(aead.open(&nonce, &bad, &mut c, &tag), Err(BadIcv));
        assert_ne!(c, hex(GCM_P));
    }

    /// RFC 4231 section 4.3, test case 2 (key "Jefe"), HMAC-SHA-256 truncated to the 128 bits
    /// RFC 4868 uses as the ESP ICV. Cross-checked with python3-cryptography.
    #[test]
    fn hmac_sha256_rfc4231_case_2() {
        let mac = <HmacSha256 as Mac>::new_from_slice(b"Jefe").unwrap();
        let icv = hmac_icv(&mac, &[b"what do ya ", b"want for nothing?"]);
        assert_eq!(icv.to_vec(), hex("5bdcc146bf60754e6a042426089575c7"));
    }

    /// RFC 3602 section 4, case #1: AES-128-CBC of one block. Cross-checked with
    /// python3-cryptography.
    #[test]
    fn aes_cbc_rfc3602_case_1() {
        let aes = Aes::A128(Box::new(
            Aes128::new_from_slice(&hex("06a9214036b8a15b512e03d534120006")).unwrap(),
        ));
        let iv = hex("3dafba429d9eb430b422da802c9fac41");
        let mut buf = b"Single block msg".to_vec();
        aes.cbc_encrypt(&iv, &mut buf);
        assert_eq!(buf, hex("e353779c1079aeb82708942dbe77181a"));
        aes.cbc_decrypt(&iv, &mut buf);
        assert_eq!(&buf, b"Single block msg");
    }

    #[test]
    fn key_lengths_are_checked() {
        for a in Algorithm::ALL {
            let n = a.keymat_len();
            assert!(Cipher::new(*a, &vec![7; n]).is_ok());
            for bad in [0, n - 1, n + 1] {
                assert_eq!(
                    Cipher::new(*a, &vec![7; bad]).unwrap_err(),
                    SaError::KeyLength {
                        algorithm: *a,
                        expected: n,
                        got: bad
                    }
                );
            }
        }
    }

    #[test]
    fn ivs_differ_per_sequence_number() {
        for a in Algorithm::ALL {
            let c = Cipher::new(*a, &vec![9; a.keymat_len()]).unwrap();
            let mut seen = std::collections::HashSet::new();
            for seq in 1..1000u64 {
                let mut iv = vec![0; a.iv_len()];
                c.make_iv(0x1234, seq, &mut iv);
                assert!(seen.insert(iv), "{a:?} {seq}");
            }
        }
    }
}
