//! Authentication by certificates (RFC 7296 sections 2.15 and 3.6, RFC 7427 digital
//! signatures, RFC 4945 for how an identity is found in a certificate).
//!
//! - [`Credential`]: this end's X.509 certificate and private key (ECDSA P-256 or RSA),
//!   from PEM, checked to belong together; [`Credential::sign`] writes an AUTH payload's data
//!   for method 14 (RFC 7427 section 3): the AlgorithmIdentifier of ecdsa-with-SHA256 or
//!   sha256WithRSAEncryption, then the signature (a DER Ecdsa-Sig-Value for ECDSA).
//!   ECDSA signatures are deterministic (RFC 6979) and RSA ones blinded with the machine's
//!   seeded generator, so no operating-system randomness is read here either.
//! - [`Trust`]: the certification authorities a peer's certificate must be issued by
//!   (directly: no intermediate certificates in this version).
//! - [`verify_peer`]: the peer's certificate is issued by a trusted authority, valid at the
//!   given time, and names the identity of its ID payload in its subjectAltName (dNSName for
//!   ID_FQDN, rfc822Name for ID_RFC822_ADDR, iPAddress for addresses) or, for
//!   ID_DER_ASN1_DN, as its subject; [`verify_auth`] then checks the AUTH data with its key.
//!
//! Verification uses ring (RSA PKCS#1 v1.5 SHA-256, 2048 to 8192 bits; ECDSA P-256 SHA-256);
//! signing uses RustCrypto's p256 and rsa; certificates are parsed by x509-cert.

use crate::body::Identification;
use rand_core::{CryptoRng, RngCore};
use ring::signature;
use std::net::IpAddr;
use x509_cert::der::{Decode, DecodePem, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// AlgorithmIdentifier of sha256WithRSAEncryption, NULL parameters (RFC 7427 appendix A.1.2).
pub const ALG_RSA_SHA256: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
/// AlgorithmIdentifier of ecdsa-with-SHA256 (RFC 7427 appendix A.3.1).
pub const ALG_ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
/// The signature algorithm OIDs of certificates we verify.
const OID_RSA_SHA256: &str = "1.2.840.113549.1.1.11";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
/// The public key algorithm OIDs.
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";

/// Hash algorithm of SIGNATURE_HASH_ALGORITHMS (RFC 7427 section 4, IANA): SHA2-256.
pub const HASH_SHA2_256: u16 = 2;

/// Why a certificate, a key or a signature was refused. The messages name no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Not a certificate, or a key in no format read here.
    #[error("{0}")]
    Format(String),
    /// The private key is not the certificate's.
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    /// Issued by no trusted authority, or its signature does not verify.
    #[error("not issued by a trusted certification authority")]
    Untrusted,
    /// Outside its validity period.
    #[error("not valid now (validity {not_before} to {not_after}, Unix seconds)")]
    Expired {
        /// Start of validity.
        not_before: u64,
        /// End of validity.
        not_after: u64,
    },
    /// The identity is not in the certificate.
    #[error("does not name identity {0}")]
    WrongIdentity(String),
    /// A public key of another kind than ECDSA P-256 or RSA.
    #[error("unsupported public key")]
    UnsupportedKey,
}

enum PrivateKey {
    Ecdsa(p256::ecdsa::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

/// This end's certificate and private key. `Debug` shows the certificate's subject only.
pub struct Credential {
    /// The certificate, DER, as the CERT payload carries it (encoding 4).
    pub cert_der: Vec<u8>,
    subject: String,
    key: PrivateKey,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}, key not shown)", self.subject)
    }
}

/// The subject public key of a certificate: algorithm OID and key bits.
fn spki(c: &Certificate) -> (String, Vec<u8>) {
    let s = &c.tbs_certificate.subject_public_key_info;
    (
        s.algorithm.oid.to_string(),
        s.subject_public_key.raw_bytes().to_vec(),
    )
}

fn parse_cert_pem(pem: &str) -> Result<Certificate, CertError> {
    Certificate::from_pem(pem.as_bytes())
        .map_err(|e| CertError::Format(format!("not a PEM X.509 certificate: {e}")))
}

impl Credential {
    /// Reads a PEM certificate and its PEM private key: PKCS#8 ("PRIVATE KEY"), SEC1 ("EC
    /// PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY").
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Credential, CertError> {
        use p256::pkcs8::DecodePrivateKey;
        use rsa::pkcs1::DecodeRsaPrivateKey;
        let cert = parse_cert_pem(cert_pem)?;
        let cert_der = cert
            .to_der()
            .map_err(|e| CertError::Format(e.to_string()))?;
        let (oid, bits) = spki(&cert);
        let key = if oid == OID_EC {
            let k = p256::SecretKey::from_pkcs8_pem(key_pem)
                .or_else(|_| p256::SecretKey::from_sec1_pem(key_pem))
                .map_err(|_| {
                    CertError::Format("the key is not an ECDSA P-256 private key in PEM".into())
                })?;
            let sk = p256::ecdsa::SigningKey::from(k);
            let point = sk.verifying_key().to_encoded_point(false);
            if point.as_bytes() != bits.as_slice() {
                return Err(CertError::KeyMismatch);
            }
            PrivateKey::Ecdsa(sk)
        } else if oid == OID_RSA {
            use rsa::pkcs1::EncodeRsaPublicKey;
            let k = rsa::RsaPrivateKey::from_pkcs8_pem(key_pem)
                .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(key_pem))
                .map_err(|_| {
                    CertError::Format("the key is not an RSA private key in PEM".into())
                })?;
            let public = k
                .to_public_key()
                .to_pkcs1_der()
                .map_err(|e| CertError::Format(e.to_string()))?;
            if public.as_bytes() != bits.as_slice() {
                return Err(CertError::KeyMismatch);
            }
            PrivateKey::Rsa(Box::new(k))
        } else {
            return Err(CertError::UnsupportedKey);
        };
        Ok(Credential {
            cert_der,
            subject: cert.tbs_certificate.subject.to_string(),
            key,
        })
    }

    /// The subject, for logs.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The AUTH data of method 14 (RFC 7427 section 3) over `octets`: the length of the
    /// AlgorithmIdentifier, the AlgorithmIdentifier, the signature.
    pub fn sign(&self, octets: &[u8], rng: &mut (impl RngCore + CryptoRng)) -> Vec<u8> {
        let (alg, sig) = match &self.key {
            PrivateKey::Ecdsa(k) => {
                use p256::ecdsa::signature::Signer;
                let s: p256::ecdsa::Signature = k.sign(octets);
                (ALG_ECDSA_SHA256, s.to_der().as_bytes().to_vec())
            }
            PrivateKey::Rsa(k) => {
                use rsa::signature::{RandomizedSigner, SignatureEncoding};
                let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new((**k).clone());
                (ALG_RSA_SHA256, signer.sign_with_rng(rng, octets).to_vec())
            }
        };
        let mut out = Vec::with_capacity(1 + alg.len() + sig.len());
        out.push(alg.len() as u8);
        out.extend_from_slice(alg);
        out.extend_from_slice(&sig);
        out
    }
}

/// The certification authorities a peer's certificate must come from.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    anchors: Vec<Certificate>,
}

impl Trust {
    /// Reads every certificate of a PEM bundle.
    pub fn from_pem(pem: &str) -> Result<Trust, CertError> {
        let mut anchors = Vec::new();
        let mut rest = pem;
        const END: &str = "-----END CERTIFICATE-----";
        while let Some(i) = rest.find(END) {
            anchors.push(parse_cert_pem(&rest[..i + END.len()])?);
            rest = &rest[i + END.len()..];
        }
        if anchors.is_empty() {
            return Err(CertError::Format("no PEM certificate in the bundle".into()));
        }
        Ok(Trust { anchors })
    }

    /// The data of a CERTREQ payload naming these authorities (RFC 7296 section 3.7): the
    /// SHA-1 hashes of their SubjectPublicKeyInfo, concatenated. A peer such as strongSwan
    /// sends its certificate only when asked this way.
    pub fn certreq(&self) -> Vec<u8> {
        use sha1::Digest;
        let mut out = Vec::with_capacity(20 * self.anchors.len());
        for a in &self.anchors {
            if let Ok(spki) = a.tbs_certificate.subject_public_key_info.to_der() {
                out.extend_from_slice(&sha1::Sha1::digest(&spki));
            }
        }
        out
    }

    /// Number of authorities.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// A verified peer's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerKey {
    /// An uncompressed P-256 point.
    Ecdsa(Vec<u8>),
    /// An RSAPublicKey, DER.
    Rsa(Vec<u8>),
}

fn verify_with(oid: &str, key: &PeerKey, msg: &[u8], sig: &[u8]) -> bool {
    match (oid, key) {
        (OID_RSA_SHA256, PeerKey::Rsa(k)) => {
            signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, k)
                .verify(msg, sig)
                .is_ok()
        }
        (OID_ECDSA_SHA256, PeerKey::Ecdsa(k)) => {
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, k)
                .verify(msg, sig)
                .is_ok()
        }
        _ => false,
    }
}

fn peer_key(c: &Certificate) -> Result<PeerKey, CertError> {
    let (oid, bits) = spki(c);
    match oid.as_str() {
        OID_EC => Ok(PeerKey::Ecdsa(bits)),
        OID_RSA => Ok(PeerKey::Rsa(bits)),
        _ => Err(CertError::UnsupportedKey),
    }
}

/// Whether the certificate names `id` (RFC 4945 section 3.1).
fn names(c: &Certificate, id: &Identification<'_>) -> bool {
    let sans: Vec<GeneralName> = match c.tbs_certificate.get::<SubjectAltName>() {
        Ok(Some((_, san))) => san.0,
        _ => Vec::new(),
    };
    let ip = |a: IpAddr| {
        sans.iter().any(|g| match g {
            GeneralName::IpAddress(b) => match a {
                IpAddr::V4(x) => b.as_bytes() == x.octets(),
                IpAddr::V6(x) => b.as_bytes() == x.octets(),
            },
            _ => false,
        })
    };
    match id {
        Identification::Fqdn(n) => sans.iter().any(|g| match g {
            GeneralName::DnsName(d) => d.as_str().as_bytes().eq_ignore_ascii_case(n),
            _ => false,
        }),
        Identification::Rfc822(n) => sans.iter().any(|g| match g {
            GeneralName::Rfc822Name(d) => d.as_str().as_bytes().eq_ignore_ascii_case(n),
            _ => false,
        }),
        Identification::Ipv4(a) => ip(IpAddr::V4(*a)),
        Identification::Ipv6(a) => ip(IpAddr::V6(*a)),
        Identification::Other {
            kind: crate::id_type::DER_ASN1_DN,
            data,
        } => c
            .tbs_certificate
            .subject
            .to_der()
            .is_ok_and(|d| d.as_slice() == *data),
        _ => false,
    }
}

/// Checks a peer's certificate (DER, from its CERT payload): issued and signed by one of
/// `trust`, valid at `unix_time`, naming `id`. Returns its key.
pub fn verify_peer(
    cert_der: &[u8],
    trust: &Trust,
    unix_time: u64,
    id: &Identification<'_>,
) -> Result<PeerKey, CertError> {
    let c = Certificate::from_der(cert_der)
        .map_err(|e| CertError::Format(format!("the peer's certificate: {e}")))?;
    let tbs = c
        .tbs_certificate
        .to_der()
        .map_err(|e| CertError::Format(e.to_string()))?;
    let sig_oid = c.signature_algorithm.oid.to_string();
    let sig = c.signature.raw_bytes();
    let issued = trust.anchors.iter().any(|a| {
        a.tbs_certificate.subject == c.tbs_certificate.issuer
            && peer_key(a).is_ok_and(|k| verify_with(&sig_oid, &k, &tbs, sig))
    });
    if !issued {
        return Err(CertError::Untrusted);
    }
    let v = &c.tbs_certificate.validity;
    let not_before = v.not_before.to_unix_duration().as_secs();
    let not_after = v.not_after.to_unix_duration().as_secs();
    if unix_time < not_before || unix_time > not_after {
        return Err(CertError::Expired {
            not_before,
            not_after,
        });
    }
    if !names(&c, id) {
        return Err(CertError::WrongIdentity(crate::config::show_id(id)));
    }
    peer_key(&c)
}

/// Checks AUTH data of method 14 (RFC 7427 section 3) over `octets` with `key`.
pub fn verify_auth(key: &PeerKey, octets: &[u8], auth: &[u8]) -> bool {
    let Some((&n, rest)) = auth.split_first() else {
        return false;
    };
    let n = usize::from(n);
    if rest.len() < n {
        return false;
    }
    let (alg, sig) = rest.split_at(n);
    let oid = if alg == ALG_ECDSA_SHA256 {
        OID_ECDSA_SHA256
    } else if alg == ALG_RSA_SHA256 {
        OID_RSA_SHA256
    } else {
        return false;
    };
    verify_with(oid, key, octets, sig)
}
