//! The pseudorandom function of the IKE SA and its expansion prf+ (RFC 7296 section 2.13),
//! with the one PRF offered here, PRF_HMAC_SHA2_256 (RFC 4868 section 2.1.2).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Output and preferred key length of PRF_HMAC_SHA2_256 (RFC 4868 section 2.1.2): 32 bytes,
/// the length of SK_d, SK_pi and SK_pr (RFC 7296 section 2.14).
pub const PRF_LEN: usize = 32;

/// prf+ stops at 255 blocks (RFC 7296 section 2.13: the counter is one octet).
pub const PRF_PLUS_MAX: usize = 255 * PRF_LEN;

/// prf(key, data) with HMAC-SHA-256 over the concatenation of `data`'s parts. HMAC takes a
/// key of any length, so Ni | Nr is used whole (RFC 7296 section 2.14).
pub fn prf(key: &[u8], data: &[&[u8]]) -> [u8; PRF_LEN] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for d in data {
        mac.update(d);
    }
    mac.finalize().into_bytes().into()
}

/// prf+(key, seed) truncated to `len` bytes (RFC 7296 section 2.13): T1 = prf(K, S | 0x01),
/// Tn = prf(K, Tn-1 | S | n). `None` beyond [`PRF_PLUS_MAX`] bytes.
pub fn prf_plus(key: &[u8], seed: &[&[u8]], len: usize) -> Option<Zeroizing<Vec<u8>>> {
    if len > PRF_PLUS_MAX {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(len + PRF_LEN));
    let mut t = Zeroizing::new([0u8; PRF_LEN]);
    let mut n = 1u8;
    while out.len() < len {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        if n > 1 {
            mac.update(&t[..]);
        }
        for s in seed {
            mac.update(s);
        }
        mac.update(&[n]);
        t.copy_from_slice(&mac.finalize().into_bytes());
        out.extend_from_slice(&t[..]);
        n = n.wrapping_add(1);
    }
    out.truncate(len);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_hex as hex;

    /// RFC 4868 section 2.7.1, PRF-HMAC-SHA-256 test cases 1, 2 and 4.
    #[test]
    fn rfc4868_prf_vectors() {
        assert_eq!(
            prf(&[0x0b; 20], &[b"Hi There"]).to_vec(),
            hex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
        assert_eq!(
            prf(b"Jefe", &[b"what do ya want ", b"for nothing?"]).to_vec(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(
            prf(
                &[0xaa; 131],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )
            .to_vec(),
            hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        );
    }

    /// prf+ follows its definition block by block, and its prefix property holds.
    #[test]
    fn prf_plus_is_the_iterated_prf() {
        let k = b"key";
        let s: &[&[u8]] = &[b"seed", b"more"];
        let t1 = prf(k, &[b"seed", b"more", &[1]]);
        let t2 = prf(k, &[&t1, b"seed", b"more", &[2]]);
        let t3 = prf(k, &[&t2, b"seed", b"more", &[3]]);
        let out = prf_plus(k, s, 80).unwrap();
        assert_eq!(&out[..32], t1);
        assert_eq!(&out[32..64], t2);
        assert_eq!(&out[64..80], &t3[..16]);
        assert_eq!(&prf_plus(k, s, 40).unwrap()[..], &out[..40]);
        assert_eq!(prf_plus(k, s, PRF_PLUS_MAX).unwrap().len(), PRF_PLUS_MAX);
        assert!(prf_plus(k, s, PRF_PLUS_MAX + 1).is_none());
    }
}
