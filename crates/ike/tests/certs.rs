//! Certificates and RFC 7427 signatures against a PKI that openssl made: our signatures
//! verify, a foreign CA's certificate, a certificate for another identity, one used after
//! its validity and a changed signature are each refused with their own reason; and two of
//! our endpoints authenticate each other with certificates, ECDSA P-256 and RSA.

mod common;

use common::pki::{self, Kind};
use m6t_ike::cert::{verify_auth, verify_peer, CertError, Credential, Trust};
use m6t_ike::config::{ChildConfig, Identity, IkeConfig, PeerConfig};
use m6t_ike::endpoint::{Endpoint, Failure, IkeEvent};
use m6t_ike::suite::{ChildSuite, IkeSuite};
use m6t_ike::{ts, Identification};
use rand_chacha::rand_core::SeedableRng;
use std::sync::Arc;
use std::time::Instant;

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn signatures_and_certificates_are_checked_each_way() {
    let d = pki::Dir::new("certs");
    for kind in [Kind::Ec, Kind::Rsa] {
        let ca = pki::ca(&d.0, "ca", kind);
        let other_ca = pki::ca(&d.0, "other", kind);
        let (cert, key) = pki::leaf(&d.0, "ca", "ha", "DNS:ha.example.org", kind);
        let (ocert, okey) = pki::leaf(&d.0, "other", "ho", "DNS:ha.example.org", kind);
        let cred = Credential::from_pem(&read(&cert), &read(&key)).unwrap();
        let trust = Trust::from_pem(&read(&ca)).unwrap();
        let id = Identification::Fqdn(b"ha.example.org");
        let now = pki::now_unix();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let octets = b"RealMessage | Nonce | prf(SK_p, ID)";
        let auth = cred.sign(octets, &mut rng);
        let k = verify_peer(&cred.cert_der, &trust, now, &id).unwrap();
        assert!(verify_auth(&k, octets, &auth), "{kind:?}");
        let mut bad = auth.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(
            !verify_auth(&k, octets, &bad),
            "{kind:?}: changed signature"
        );
        assert!(!verify_auth(&k, b"other octets", &auth));
        // Another CA's certificate, another identity, outside its validity.
        let foreign = Credential::from_pem(&read(&ocert), &read(&okey)).unwrap();
        assert_eq!(
            verify_peer(&foreign.cert_der, &trust, now, &id),
            Err(CertError::Untrusted)
        );
        let both = Trust::from_pem(&(read(&ca) + &read(&other_ca))).unwrap();
        assert_eq!(both.len(), 2);
        assert!(verify_peer(&foreign.cert_der, &both, now, &id).is_ok());
        assert!(matches!(
            verify_peer(
                &cred.cert_der,
                &trust,
                now,
                &Identification::Fqdn(b"mn.example.org")
            ),
            Err(CertError::WrongIdentity(_))
        ));
        assert!(matches!(
            verify_peer(&cred.cert_der, &trust, now + 60 * 86400, &id),
            Err(CertError::Expired { .. })
        ));
        // A key that is not the certificate's.
        assert_eq!(
            Credential::from_pem(&read(&cert), &read(&okey)).unwrap_err(),
            CertError::KeyMismatch
        );
        assert!(format!("{cred:?}").contains("key not shown"));
    }
}

fn peer(
    me: &str,
    them: &str,
    cred: Option<Credential>,
    trust: Option<Trust>,
    local: &str,
    remote: &str,
) -> PeerConfig {
    let hoa = ts::prefix(local.parse().unwrap(), 128).unwrap();
    let any = ts::prefix(remote.parse().unwrap(), 0).unwrap();
    PeerConfig {
        name: "p".into(),
        local_id: Identity::parse(me),
        remote_id: Identity::parse(them),
        psk: Vec::new().into(),
        local_cert: cred.map(Arc::new),
        trust: trust.map(Arc::new),
        children: vec![ChildConfig {
            name: "c".into(),
            mode: m6t_ipsec::Mode::Tunnel,
            local_ts: vec![hoa],
            remote_ts: vec![any],
            proposals: vec![ChildSuite::parse("aes128gcm16").unwrap()],
        }],
    }
}

fn run(mn: PeerConfig, ha: PeerConfig) -> (Vec<IkeEvent>, Vec<IkeEvent>) {
    let cfg = |p| IkeConfig {
        proposals: vec![IkeSuite::parse("aes128gcm16-prfsha256-curve25519").unwrap()],
        peers: vec![p],
        ..IkeConfig::default()
    };
    let (mut i, mut r) = (
        Endpoint::new(cfg(mn), [1; 32]),
        Endpoint::new(cfg(ha), [2; 32]),
    );
    let t = pki::now_unix();
    i.set_unix_time(t);
    r.set_unix_time(t);
    let now = Instant::now();
    let (a, b) = (
        "192.0.2.10:500".parse().unwrap(),
        "198.51.100.1:500".parse().unwrap(),
    );
    i.connect(now, "p", a, b).unwrap();
    for _ in 0..4 {
        while let Some(x) = i.poll_transmit() {
            r.handle(now, b, a, &x.payload);
        }
        while let Some(x) = r.poll_transmit() {
            i.handle(now, a, b, &x.payload);
        }
    }
    let drain = |e: &mut Endpoint| std::iter::from_fn(|| e.poll_event()).collect::<Vec<_>>();
    (drain(&mut i), drain(&mut r))
}

#[test]
fn our_endpoints_authenticate_each_other_with_certificates() {
    let d = pki::Dir::new("mutual");
    for kind in [Kind::Ec, Kind::Rsa] {
        let ca = pki::ca(&d.0, "ca", kind);
        let (hc, hk) = pki::leaf(&d.0, "ca", "ha", "DNS:ha.example.org", kind);
        let (mc, mk) = pki::leaf(&d.0, "ca", "mn", "email:mn1@example.org", kind);
        let trust = || Some(Trust::from_pem(&read(&ca)).unwrap());
        let mn = || Some(Credential::from_pem(&read(&mc), &read(&mk)).unwrap());
        let ha = || Some(Credential::from_pem(&read(&hc), &read(&hk)).unwrap());
        let (a, b) = run(
            peer(
                "mn1@example.org",
                "ha.example.org",
                mn(),
                trust(),
                "2001:db8:1::10",
                "::",
            ),
            peer(
                "ha.example.org",
                "mn1@example.org",
                ha(),
                trust(),
                "::",
                "2001:db8:1::10",
            ),
        );
        let up = |e: &[IkeEvent]| {
            e.iter()
                .filter(|x| matches!(x, IkeEvent::ChildUp(_)))
                .count()
        };
        assert_eq!((up(&a), up(&b)), (1, 1), "{kind:?}: {a:?} {b:?}");
        // The HA does not trust the MN's CA: AUTHENTICATION_FAILED, with the reason.
        let (a, b) = run(
            peer(
                "mn1@example.org",
                "ha.example.org",
                mn(),
                trust(),
                "2001:db8:1::10",
                "::",
            ),
            peer(
                "ha.example.org",
                "mn1@example.org",
                ha(),
                None,
                "::",
                "2001:db8:1::10",
            ),
        );
        let failed = |e: &[IkeEvent]| {
            e.iter()
                .find_map(|x| match x {
                    IkeEvent::Failed {
                        why: Failure::AuthenticationFailed,
                        detail,
                        ..
                    } => Some(detail.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{e:?}"))
        };
        assert!(
            failed(&b).contains("no certification authority"),
            "{}",
            failed(&b)
        );
        assert!(failed(&a).contains("AUTHENTICATION_FAILED"));
        // A certificate for another identity.
        let (oc, ok) = pki::leaf(&d.0, "ca", "intruder", "email:mn2@example.org", kind);
        let intruder = Some(Credential::from_pem(&read(&oc), &read(&ok)).unwrap());
        let (_, b) = run(
            peer(
                "mn1@example.org",
                "ha.example.org",
                intruder,
                trust(),
                "2001:db8:1::10",
                "::",
            ),
            peer(
                "ha.example.org",
                "mn1@example.org",
                ha(),
                trust(),
                "::",
                "2001:db8:1::10",
            ),
        );
        assert!(
            failed(&b).contains("does not name identity"),
            "{}",
            failed(&b)
        );
    }
}
