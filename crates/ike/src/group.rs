//! The Diffie-Hellman groups of the IKE SA and of CREATE_CHILD_SA with PFS (RFC 7296 sections
//! 1.2 and 2.14): MODP-2048 (group 14, RFC 3526 section 3), ECP-256 (group 19, RFC 5903) and
//! Curve25519 (group 31, RFC 8031).
//!
//! Private values come from the caller's bytes (the machine's seeded generator), never from
//! the operating system, so a run is reproducible in virtual time. MODP exponentiation is
//! crypto-bigint's constant-time Montgomery ladder; the curves are RustCrypto's p256 and
//! curve25519-dalek. Every peer value is checked before use (RFC 7296 section 5: "the
//! recipient of a DH public value MUST check it"), and a failed check is
//! [`DhError::BadPublic`], answered like a malformed KE payload.

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Encoding, U2048};
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

/// The prime of the 2048-bit MODP group, RFC 3526 section 3 (generator 2); the same bytes
/// as `openssl genpkey -genparam -algorithm DH -pkeyopt group:modp_2048`.
const MODP_2048_P: U2048 = U2048::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
));

/// Bits of the MODP private exponent: twice the group's 112-bit strength rounded up to a
/// comfortable 512 (RFC 3526 section 8 asks for at least twice the strength). The ladder
/// runs over these bits only, which keeps a 2048-bit exchange near a millisecond.
const MODP_EXPONENT_BITS: usize = 512;

/// A Diffie-Hellman group this implementation offers and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// 2048-bit MODP, transform ID 14 (RFC 3526 section 3).
    Modp2048,
    /// NIST P-256, transform ID 19 (RFC 5903 section 3.1): KE data is x | y, the shared
    /// secret the x coordinate (section 7).
    Ecp256,
    /// Curve25519, transform ID 31 (RFC 8031 section 2): 32-byte values.
    Curve25519,
}

/// Why a peer's public value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DhError {
    /// Wrong length, or a value outside the group (1, p-1 and beyond for MODP; not on the
    /// curve for ECP; an all-zero Curve25519 result, RFC 8031 section 2.3).
    #[error("invalid Diffie-Hellman public value")]
    BadPublic,
}

impl Group {
    /// The group of a D-H transform ID, if offered here.
    pub fn from_id(id: u16) -> Option<Group> {
        match id {
            crate::dh::MODP_2048 => Some(Group::Modp2048),
            crate::dh::ECP_256 => Some(Group::Ecp256),
            crate::dh::CURVE25519 => Some(Group::Curve25519),
            _ => None,
        }
    }

    /// The transform ID (IANA "Transform Type 4").
    pub fn id(self) -> u16 {
        match self {
            Group::Modp2048 => crate::dh::MODP_2048,
            Group::Ecp256 => crate::dh::ECP_256,
            Group::Curve25519 => crate::dh::CURVE25519,
        }
    }

    /// Length of the Key Exchange Data (RFC 7296 section 3.4: fixed per group).
    pub fn public_len(self) -> usize {
        match self {
            Group::Modp2048 => 256,
            Group::Ecp256 => 64,
            Group::Curve25519 => 32,
        }
    }

    /// strongSwan's keyword, for logs and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Group::Modp2048 => "modp2048",
            Group::Ecp256 => "ecp256",
            Group::Curve25519 => "curve25519",
        }
    }

    /// The group of a strongSwan keyword.
    pub fn from_name(name: &str) -> Option<Group> {
        [Group::Modp2048, Group::Ecp256, Group::Curve25519]
            .into_iter()
            .find(|g| g.name() == name)
    }
}

/// One side's ephemeral key pair in a group. Not `Clone` but with the `fixtures` feature
/// (test tools that copy a whole endpoint): a private value is never copied in the daemons.
#[cfg_attr(any(test, feature = "fixtures"), derive(Clone))]
pub struct KeyPair {
    group: Group,
    secret: Secret,
    public: Vec<u8>,
}

#[cfg_attr(any(test, feature = "fixtures"), derive(Clone))]
enum Secret {
    Modp(Box<U2048>),
    Ecp(p256::NonZeroScalar),
    X25519(x25519_dalek::StaticSecret),
}

impl Drop for KeyPair {
    fn drop(&mut self) {
        if let Secret::Modp(x) = &mut self.secret {
            x.as_mut().zeroize();
        }
        // p256's NonZeroScalar and dalek's StaticSecret zeroize themselves on drop.
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

fn modp_params() -> DynResidueParams<{ U2048::LIMBS }> {
    DynResidueParams::new(&MODP_2048_P)
}

impl KeyPair {
    /// A fresh key pair drawn from `rng`.
    pub fn generate(group: Group, rng: &mut (impl RngCore + CryptoRng)) -> KeyPair {
        let secret = match group {
            Group::Modp2048 => {
                let mut bytes = Zeroizing::new([0u8; 256]);
                rng.fill_bytes(&mut bytes[256 - MODP_EXPONENT_BITS / 8..]);
                // The top bit set keeps the exponent at its full length and away from 0/1.
                bytes[256 - MODP_EXPONENT_BITS / 8] |= 0x80;
                Secret::Modp(Box::new(U2048::from_be_slice(&bytes[..])))
            }
            Group::Ecp256 => Secret::Ecp(p256::NonZeroScalar::random(rng)),
            Group::Curve25519 => Secret::X25519(x25519_dalek::StaticSecret::random_from_rng(rng)),
        };
        Self::from_secret(group, secret)
    }

    fn from_secret(group: Group, secret: Secret) -> KeyPair {
        let public = match &secret {
            Secret::Modp(x) => {
                let g = DynResidue::new(&U2048::from_u8(2), modp_params());
                g.pow_bounded_exp(x, MODP_EXPONENT_BITS)
                    .retrieve()
                    .to_be_bytes()
                    .to_vec()
            }
            Secret::Ecp(d) => {
                let point = p256::PublicKey::from_secret_scalar(d);
                let enc =
                    p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&point, false);
                enc.as_bytes()[1..].to_vec()
            }
            Secret::X25519(s) => x25519_dalek::PublicKey::from(s).as_bytes().to_vec(),
        };
        KeyPair {
            group,
            secret,
            public,
        }
    }

    /// A key pair from a known private value, for test vectors: a big-endian MODP exponent
    /// of at most 64 bytes, a P-256 scalar, or a Curve25519 scalar.
    pub fn from_private(group: Group, private: &[u8]) -> Option<KeyPair> {
        let secret = match group {
            Group::Modp2048 => {
                if private.len() > MODP_EXPONENT_BITS / 8 {
                    return None;
                }
                let mut bytes = Zeroizing::new([0u8; 256]);
                bytes[256 - private.len()..].copy_from_slice(private);
                Secret::Modp(Box::new(U2048::from_be_slice(&bytes[..])))
            }
            Group::Ecp256 => {
                let key = p256::SecretKey::from_slice(private).ok()?;
                Secret::Ecp(key.to_nonzero_scalar())
            }
            Group::Curve25519 => {
                let b: [u8; 32] = private.try_into().ok()?;
                Secret::X25519(x25519_dalek::StaticSecret::from(b))
            }
        };
        Some(Self::from_secret(group, secret))
    }

    /// The group.
    pub fn group(&self) -> Group {
        self.group
    }

    /// The Key Exchange Data to send (RFC 7296 section 3.4).
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret g^ir with the peer's Key Exchange Data (RFC 7296 section 2.14: for
    /// MODP zero-padded to the prime's length; RFC 5903 section 7 and RFC 8031 section 2.2
    /// for the curves).
    pub fn shared(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, DhError> {
        if peer.len() != self.group.public_len() {
            return Err(DhError::BadPublic);
        }
        match &self.secret {
            Secret::Modp(x) => {
                let y = U2048::from_be_slice(peer);
                let p_minus_1 = MODP_2048_P.wrapping_sub(&U2048::ONE);
                // RFC 7296 section 5 and NIST SP 800-56A 5.6.2.3.1: 1 < y < p-1.
                if y <= U2048::ONE || y >= p_minus_1 {
                    return Err(DhError::BadPublic);
                }
                let z = DynResidue::new(&y, modp_params())
                    .pow_bounded_exp(x, MODP_EXPONENT_BITS)
                    .retrieve();
                Ok(Zeroizing::new(z.to_be_bytes().to_vec()))
            }
            Secret::Ecp(d) => {
                let mut sec1 = [0u8; 65];
                sec1[0] = 4;
                sec1[1..].copy_from_slice(peer);
                let point =
                    p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| DhError::BadPublic)?;
                let z = p256::ecdh::diffie_hellman(d, point.as_affine());
                Ok(Zeroizing::new(z.raw_secret_bytes().to_vec()))
            }
            Secret::X25519(s) => {
                let b: [u8; 32] = peer.try_into().map_err(|_| DhError::BadPublic)?;
                let z = s.diffie_hellman(&x25519_dalek::PublicKey::from(b));
                if !z.was_contributory() {
                    return Err(DhError::BadPublic);
                }
                Ok(Zeroizing::new(z.as_bytes().to_vec()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    use crate::test_hex as hex;

    /// RFC 5903 section 8.1, the 256-bit random ECP group test vector.
    #[test]
    fn ecp256_rfc5903_vector() {
        let i = KeyPair::from_private(
            Group::Ecp256,
            &hex("C88F01F5 10D9AC3F 70A292DA A2316DE5 44E9AAB8 AFE84049 C62A9C57 862D1433"),
        )
        .unwrap();
        let gix = "DAD0B653 94221CF9 B051E1FE CA5787D0 98DFE637 FC90B9EF 945D0C37 72581180";
        let giy = "5271A046 1CDB8252 D61F1C45 6FA3E59A B1F45B33 ACCF5F58 389E0577 B8990BB3";
        assert_eq!(i.public(), hex(&format!("{gix}{giy}")));
        let r = KeyPair::from_private(
            Group::Ecp256,
            &hex("C6EF9C5D 78AE012A 011164AC B397CE20 88685D8F 06BF9BE0 B283AB46 476BEE53"),
        )
        .unwrap();
        let grx = "D12DFB52 89C8D4F8 1208B702 70398C34 2296970A 0BCCB74C 736FC755 4494BF63";
        let gry = "56FBF3CA 366CC23E 8157854C 13C58D6A AC23F046 ADA30F83 53E74F33 039872AB";
        assert_eq!(r.public(), hex(&format!("{grx}{gry}")));
        let z = "D6840F6B 42F6EDAF D13116E0 E1256520 2FEF8E9E CE7DCE03 812464D0 4B9442DE";
        assert_eq!(&i.shared(r.public()).unwrap()[..], hex(z));
        assert_eq!(&r.shared(i.public()).unwrap()[..], hex(z));
    }

    /// RFC 7748 section 6.1, the X25519 Diffie-Hellman vector (RFC 8031 uses X25519 as is).
    #[test]
    fn curve25519_rfc7748_vector() {
        let a = KeyPair::from_private(
            Group::Curve25519,
            &hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
        )
        .unwrap();
        assert_eq!(
            a.public(),
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let b = KeyPair::from_private(
            Group::Curve25519,
            &hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
        )
        .unwrap();
        assert_eq!(
            b.public(),
            hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        let k = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(&a.shared(b.public()).unwrap()[..], k);
        assert_eq!(&b.shared(a.public()).unwrap()[..], k);
        // A low-order point gives an all-zero result: refused (RFC 8031 section 2.3).
        assert_eq!(a.shared(&[0u8; 32]), Err(DhError::BadPublic));
    }

    /// MODP-2048 against Python's arbitrary-precision `pow(2, x, p)` (computed once with the
    /// prime above; no RFC gives a vector for this group).
    #[test]
    fn modp2048_matches_python_pow() {
        let x = hex("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        let k = KeyPair::from_private(Group::Modp2048, &x).unwrap();
        assert_eq!(k.public(), hex(MODP_PY_2X));
    }

    #[test]
    fn agreement_in_every_group_and_bad_values_refused() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        for g in [Group::Modp2048, Group::Ecp256, Group::Curve25519] {
            let a = KeyPair::generate(g, &mut rng);
            let b = KeyPair::generate(g, &mut rng);
            assert_eq!(a.public().len(), g.public_len());
            assert_eq!(a.shared(b.public()).unwrap(), b.shared(a.public()).unwrap());
            assert_eq!(a.shared(&[]), Err(DhError::BadPublic), "{g:?}");
            assert_eq!(Group::from_id(g.id()), Some(g));
            assert_eq!(Group::from_name(g.name()), Some(g));
        }
        let a = KeyPair::generate(Group::Modp2048, &mut rng);
        let mut one = vec![0u8; 256];
        one[255] = 1;
        assert_eq!(a.shared(&one), Err(DhError::BadPublic));
        assert_eq!(a.shared(&[0xff; 256]), Err(DhError::BadPublic));
        let p_minus_1 = MODP_2048_P.wrapping_sub(&U2048::ONE).to_be_bytes();
        assert_eq!(a.shared(&p_minus_1), Err(DhError::BadPublic));
        let e = KeyPair::generate(Group::Ecp256, &mut rng);
        assert_eq!(
            e.shared(&[1u8; 64]),
            Err(DhError::BadPublic),
            "not on the curve"
        );
    }

    const MODP_PY_2X: &str = concat!(
        "a7383dc35b35b44a7c5fbce0aac79e1189d4aee40391a62a0168b0a5f2aa2ce5",
        "bc5f465a02da130cf68adc1509dee1c41a8341be9c59e32fc83d665725f3acae",
        "e06ee07fe1302cef14da974736f2287c8907b959a7f527f151d9c7b278d203b9",
        "f37f4f14b5639a9dadca80951a4d8dac0890b4b003657dfbf779b6d9f706f0e3",
        "0eaad5dbb946371e7a48dbc5d05bd8cfd34d710673d98624468334983d6d0ffe",
        "6b94319b9ca03786ca0afa950c89ac7a9c7ed10f3d26b16d8b65e217029ebc51",
        "e877d332d0b601cf8500aa2bff76b40f755d9e2ea41d0f4f24a53595518521e0",
        "2fa6b73fa18180195d4f9682620198f01cba3fe33ac41ece743370904d7da7ab",
    );
}
