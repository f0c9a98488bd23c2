//! Key derivation of the IKE SA and its CHILD_SAs (RFC 7296 sections 2.14, 2.17 and 2.18)
//! and the AUTH value of a pre-shared key (section 2.15).

use crate::kdf::{prf, prf_plus, PRF_LEN};
use crate::suite::{IkeSuite, INTEG_KEY_LEN};
use m6t_ipsec::Algorithm;
use zeroize::Zeroizing;

/// The seven keys of an IKE SA (section 2.14). `Debug` shows none of them.
#[derive(Clone)]
pub struct IkeKeys {
    /// Derives CHILD_SA keys and the keys of a rekeyed IKE SA.
    pub sk_d: Zeroizing<Vec<u8>>,
    /// Integrity of messages from the original initiator (empty with GCM).
    pub sk_ai: Zeroizing<Vec<u8>>,
    /// Integrity of messages from the original responder (empty with GCM).
    pub sk_ar: Zeroizing<Vec<u8>>,
    /// Encryption of messages from the original initiator (key, then salt for GCM).
    pub sk_ei: Zeroizing<Vec<u8>>,
    /// Encryption of messages from the original responder.
    pub sk_er: Zeroizing<Vec<u8>>,
    /// The initiator's AUTH input (section 2.15).
    pub sk_pi: Zeroizing<Vec<u8>>,
    /// The responder's AUTH input.
    pub sk_pr: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IkeKeys(<not shown>)")
    }
}

impl IkeKeys {
    /// Derives the keys of a new IKE SA from SKEYSEED = prf(Ni | Nr, g^ir) (section 2.14).
    pub fn new(
        suite: &IkeSuite,
        g_ir: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> IkeKeys {
        let skeyseed = Zeroizing::new(prf(&[ni, nr].concat(), &[g_ir]));
        Self::expand(suite, &skeyseed[..], ni, nr, spi_i, spi_r)
    }

    /// Derives the keys of the IKE SA that rekeys this one, SKEYSEED = prf(SK_d (old),
    /// g^ir (new) | Ni | Nr) (section 2.18), with the new SPIs.
    pub fn rekey(
        &self,
        suite: &IkeSuite,
        g_ir: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> IkeKeys {
        let skeyseed = Zeroizing::new(prf(&self.sk_d, &[g_ir, ni, nr]));
        Self::expand(suite, &skeyseed[..], ni, nr, spi_i, spi_r)
    }

    fn expand(
        suite: &IkeSuite,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> IkeKeys {
        let a = if suite.integ { INTEG_KEY_LEN } else { 0 };
        let e = suite.encr.sk_e_len();
        let total = PRF_LEN * 3 + 2 * a + 2 * e;
        let km = prf_plus(
            skeyseed,
            &[ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()],
            total,
        )
        .expect("under 255 blocks");
        let mut at = 0;
        let mut take = |n: usize| {
            let k = Zeroizing::new(km[at..at + n].to_vec());
            at += n;
            k
        };
        IkeKeys {
            sk_d: take(PRF_LEN),
            sk_ai: take(a),
            sk_ar: take(a),
            sk_ei: take(e),
            sk_er: take(e),
            sk_pi: take(PRF_LEN),
            sk_pr: take(PRF_LEN),
        }
    }
}

/// The key material of one CHILD_SA (section 2.17): KEYMAT = prf+(SK_d, [g^ir (new) |] Ni |
/// Nr), the initiator-to-responder SA's keys first, then the other direction's, each laid
/// out as [`Algorithm::keymat_len`] wants it.
pub fn child_keymat(
    sk_d: &[u8],
    algorithm: Algorithm,
    g_ir: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
) -> (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>) {
    let n = algorithm.keymat_len();
    let km = match g_ir {
        Some(g) => prf_plus(sk_d, &[g, ni, nr], 2 * n),
        None => prf_plus(sk_d, &[ni, nr], 2 * n),
    }
    .expect("under 255 blocks");
    (
        Zeroizing::new(km[..n].to_vec()),
        Zeroizing::new(km[n..].to_vec()),
    )
}

/// The pad of section 2.15.
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// AUTH for a pre-shared key (section 2.15): prf(prf(Shared Secret, "Key Pad for IKEv2"),
/// <SignedOctets>), where the signed octets are the sender's first message as sent, the
/// peer's nonce, and prf(SK_p, the sender's ID payload body).
pub fn psk_auth(
    secret: &[u8],
    first_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
) -> [u8; PRF_LEN] {
    let pad = Zeroizing::new(prf(secret, &[KEY_PAD]));
    let maced_id = prf(sk_p, &[id_body]);
    prf(&pad[..], &[first_message, peer_nonce, &maced_id])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::Group;
    use crate::suite::Encr;

    #[test]
    fn key_lengths_follow_the_suite() {
        let cbc = IkeSuite {
            encr: Encr::AesCbc(16),
            integ: true,
            group: Group::Modp2048,
        };
        let k = IkeKeys::new(&cbc, b"shared", &[1; 32], &[2; 32], 1, 2);
        assert_eq!(
            (k.sk_d.len(), k.sk_ai.len(), k.sk_ei.len(), k.sk_pr.len()),
            (32, 32, 16, 32)
        );
        let gcm = IkeSuite {
            encr: Encr::AesGcm16(32),
            integ: false,
            group: Group::Curve25519,
        };
        let g = IkeKeys::new(&gcm, b"shared", &[1; 32], &[2; 32], 1, 2);
        assert_eq!((g.sk_ai.len(), g.sk_ei.len()), (0, 36));
        // The keys are consecutive pieces of one prf+ stream.
        let seed = prf(&[[1u8; 32], [2u8; 32]].concat(), &[b"shared"]);
        let km = prf_plus(
            &seed,
            &[&[1; 32], &[2; 32], &1u64.to_be_bytes(), &2u64.to_be_bytes()],
            200,
        )
        .unwrap();
        assert_eq!(&k.sk_d[..], &km[..32]);
        assert_eq!(&k.sk_ar[..], &km[64..96]);
        assert_eq!(&k.sk_er[..], &km[112..128]);
        assert_eq!(&k.sk_pr[..], &km[160..192]);
        assert_eq!(format!("{k:?}"), "IkeKeys(<not shown>)");
        // A rekey gives other keys.
        let r = k.rekey(&cbc, b"new", &[3; 32], &[4; 32], 5, 6);
        assert_ne!(r.sk_d, k.sk_d);
    }

    #[test]
    fn child_keymat_splits_per_direction() {
        let (i2r, r2i) = child_keymat(
            &[9; 32],
            Algorithm::AesCbc128HmacSha256,
            None,
            &[1; 16],
            &[2; 16],
        );
        let all = prf_plus(&[9; 32], &[&[1; 16], &[2; 16]], 96).unwrap();
        assert_eq!(&i2r[..], &all[..48]);
        assert_eq!(&r2i[..], &all[48..]);
        let (a, _) = child_keymat(
            &[9; 32],
            Algorithm::AesGcm128,
            Some(b"g"),
            &[1; 16],
            &[2; 16],
        );
        assert_eq!(a.len(), 20);
    }
}
