//! The AUTH payload both ways (RFC 7296 section 2.15): a pre-shared key's MIC (method 2),
//! or a digital signature (method 14, RFC 7427) with the signer's certificate in a CERT
//! payload (encoding 4, X.509 Certificate - Signature, section 3.6).

use super::*;
use crate::body::Cert;
use crate::cert::{verify_auth, verify_peer};

/// CERT encoding 4: an X.509 certificate for signatures (RFC 7296 section 3.6).
pub(super) const CERT_X509_SIGNATURE: u8 = 4;

/// What we put in IKE_AUTH to prove who we are.
pub(super) struct OurAuth {
    /// AUTH method.
    pub method: u8,
    /// AUTH data.
    pub data: Vec<u8>,
    /// Our certificate (DER), for a CERT payload, when we sign.
    pub cert: Option<Vec<u8>>,
}

impl Endpoint {
    /// Our AUTH for `pc` over our first message, the peer's nonce and our ID payload body
    /// (section 2.15's signed octets).
    pub(super) fn our_auth(
        &mut self,
        pc: &PeerConfig,
        first: &[u8],
        peer_nonce: &[u8],
        sk_p: &[u8],
        id_body: &[u8],
    ) -> OurAuth {
        match &pc.local_cert {
            Some(c) => {
                let octets = signed_octets(first, peer_nonce, sk_p, id_body);
                OurAuth {
                    method: auth_method::DIGITAL_SIGNATURE,
                    data: c.sign(&octets, &mut self.rng),
                    cert: Some(c.cert_der.clone()),
                }
            }
            None => OurAuth {
                method: auth_method::SHARED_KEY_MIC,
                data: psk_auth(&pc.psk, first, peer_nonce, sk_p, id_body).to_vec(),
                cert: None,
            },
        }
    }

    /// Checks the peer's AUTH (and CERT) against `pc`; the error is the log line's reason.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_auth(
        &self,
        pc: &PeerConfig,
        auth: &Auth<'_>,
        cert: Option<&Cert<'_>>,
        id: &Identification<'_>,
        first: &[u8],
        peer_nonce: &[u8],
        sk_p: &[u8],
    ) -> Result<(), String> {
        match auth.method {
            auth_method::SHARED_KEY_MIC => {
                if pc.psk.is_empty() {
                    return Err(
                        "authenticated with a pre-shared key, which is not configured for it"
                            .into(),
                    );
                }
                let want = psk_auth(&pc.psk, first, peer_nonce, sk_p, &id_body(id));
                if want.as_slice() == auth.data {
                    Ok(())
                } else {
                    Err("did not prove the pre-shared key".into())
                }
            }
            auth_method::DIGITAL_SIGNATURE => {
                let Some(trust) = &pc.trust else {
                    return Err("authenticated with a certificate, but no certification authority is configured for it".into());
                };
                let Some(c) = cert.filter(|c| c.encoding == CERT_X509_SIGNATURE) else {
                    return Err("sent a signature without its X.509 certificate".into());
                };
                let key = verify_peer(c.data, trust, self.unix_time, id)
                    .map_err(|e| format!("certificate refused: {e}"))?;
                let octets = signed_octets(first, peer_nonce, sk_p, &id_body(id));
                if verify_auth(&key, &octets, auth.data) {
                    Ok(())
                } else {
                    Err("the signature in AUTH does not verify with its certificate".into())
                }
            }
            m => Err(format!(
                "used AUTH method {m}, not accepted (2: pre-shared key, 14: digital signature)"
            )),
        }
    }
}
