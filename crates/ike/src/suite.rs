//! What an IKE SA and a CHILD_SA may be made of, how a proposal is written from a
//! configuration and how a responder picks one (RFC 7296 sections 2.7 and 3.3), with
//! strongSwan's keywords so that an operator's `proposals = aes128-sha256-modp2048` means
//! the same here as in swanctl.conf.

use crate::group::Group;
use crate::sa::{Proposal, Transform};
use crate::{encr, esn, integ, prf, protocol, transform_type as tt};
use m6t_ipsec::Algorithm;

/// The cipher of the SK payload (RFC 7296 section 3.14, RFC 5282 for GCM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encr {
    /// AES-CBC with a key of 16 or 32 bytes (RFC 3602), with HMAC-SHA-256-128.
    AesCbc(usize),
    /// AES-GCM with a 16-byte ICV and a key of 16 or 32 bytes (RFC 5282).
    AesGcm16(usize),
}

impl Encr {
    /// Key length in bytes, the salt not included.
    pub fn key_len(self) -> usize {
        match self {
            Encr::AesCbc(n) | Encr::AesGcm16(n) => n,
        }
    }

    /// Length of SK_e: the key, plus the 4-byte salt for GCM (RFC 5282 section 7.1).
    pub fn sk_e_len(self) -> usize {
        match self {
            Encr::AesCbc(n) => n,
            Encr::AesGcm16(n) => n + 4,
        }
    }

    /// Whether it is a combined mode, which takes no INTEG transform (RFC 5282 section 8).
    pub fn is_aead(self) -> bool {
        matches!(self, Encr::AesGcm16(_))
    }

    fn transform(self) -> Transform {
        let (id, n) = match self {
            Encr::AesCbc(n) => (encr::AES_CBC, n),
            Encr::AesGcm16(n) => (encr::AES_GCM_16, n),
        };
        Transform::with_key_length(tt::ENCR, id, (n * 8) as u16)
    }

    fn from_transform(t: &Transform) -> Option<Encr> {
        let bits = t.key_length()?;
        if t.has_unknown_attribute() || !(bits == 128 || bits == 256) {
            return None;
        }
        let n = usize::from(bits / 8);
        match t.id {
            encr::AES_CBC => Some(Encr::AesCbc(n)),
            encr::AES_GCM_16 => Some(Encr::AesGcm16(n)),
            _ => None,
        }
    }
}

/// The algorithms of one IKE SA (RFC 7296 section 3.3.3's mandatory types: ENCR, PRF,
/// INTEG unless ENCR is combined, D-H).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IkeSuite {
    /// The SK payload's cipher.
    pub encr: Encr,
    /// HMAC-SHA-256-128 for CBC, none for GCM; PRF_HMAC_SHA2_256 is the only PRF.
    pub integ: bool,
    /// The D-H group.
    pub group: Group,
}

/// Integrity key length of AUTH_HMAC_SHA2_256_128 (RFC 4868 section 2.1.1).
pub const INTEG_KEY_LEN: usize = 32;
/// Its truncated ICV (RFC 4868 section 2.1.1).
pub const INTEG_ICV_LEN: usize = 16;

impl IkeSuite {
    /// Reads a strongSwan IKE proposal keyword string, e.g. `aes128-sha256-modp2048`,
    /// `aes256gcm16-prfsha256-curve25519`: one cipher, `sha256` (INTEG and PRF for CBC) or
    /// `prfsha256` (PRF only, for GCM), one group. Lists of several per type are not
    /// accepted here: write several proposals instead.
    pub fn parse(s: &str) -> Result<IkeSuite, String> {
        let mut encr_ = None;
        let mut integ_ = false;
        let mut prf_ = false;
        let mut group = None;
        for tok in s.split('-') {
            match tok {
                "aes128" => encr_ = Some(Encr::AesCbc(16)),
                "aes256" => encr_ = Some(Encr::AesCbc(32)),
                "aes128gcm16" => encr_ = Some(Encr::AesGcm16(16)),
                "aes256gcm16" => encr_ = Some(Encr::AesGcm16(32)),
                "sha256" => {
                    integ_ = true;
                    prf_ = true;
                }
                "prfsha256" => prf_ = true,
                g => {
                    group = Some(Group::from_name(g).ok_or_else(|| {
                        format!(
                            "unknown keyword {g:?} in IKE proposal {s:?} (known: aes128, aes256, \
                             aes128gcm16, aes256gcm16, sha256, prfsha256, modp2048, ecp256, curve25519)"
                        )
                    })?)
                }
            }
        }
        let encr = encr_.ok_or_else(|| format!("IKE proposal {s:?} names no cipher"))?;
        let group = group.ok_or_else(|| format!("IKE proposal {s:?} names no DH group"))?;
        if !prf_ {
            return Err(format!(
                "IKE proposal {s:?} names no PRF (sha256 or prfsha256)"
            ));
        }
        if encr.is_aead() {
            integ_ = false;
        } else if !integ_ {
            return Err(format!(
                "IKE proposal {s:?}: AES-CBC needs sha256 for integrity"
            ));
        }
        Ok(IkeSuite {
            encr,
            integ: integ_,
            group,
        })
    }

    /// strongSwan's way of writing it.
    pub fn name(&self) -> String {
        let e = match self.encr {
            Encr::AesCbc(16) => "aes128",
            Encr::AesCbc(_) => "aes256",
            Encr::AesGcm16(16) => "aes128gcm16",
            Encr::AesGcm16(_) => "aes256gcm16",
        };
        let p = if self.integ { "sha256" } else { "prfsha256" };
        format!("{e}-{p}-{}", self.group.name())
    }

    /// The proposal that offers exactly this suite (section 3.3.1); the SPI is empty in an
    /// IKE_SA_INIT, the new initiator SPI in an IKE SA rekey.
    pub fn proposal(&self, number: u8, spi: Vec<u8>) -> Proposal {
        let mut transforms = vec![self.encr.transform()];
        transforms.push(Transform::new(tt::PRF, prf::HMAC_SHA2_256));
        if self.integ {
            transforms.push(Transform::new(tt::INTEG, integ::HMAC_SHA2_256_128));
        }
        transforms.push(Transform::new(tt::DH, self.group.id()));
        Proposal {
            number,
            protocol: protocol::IKE,
            spi,
            transforms,
        }
    }

    /// The suite a proposal with one transform of each type names, if we implement it
    /// (what an initiator checks the responder's answer against).
    pub fn from_single(p: &Proposal) -> Option<IkeSuite> {
        if p.protocol != protocol::IKE {
            return None;
        }
        let mut counts = [0usize; 6];
        for t in &p.transforms {
            if let Some(c) = counts.get_mut(usize::from(t.kind)) {
                *c += 1;
            } else {
                return None;
            }
        }
        if counts[1] != 1 || counts[2] != 1 || counts[3] > 1 || counts[4] != 1 || counts[5] != 0 {
            return None;
        }
        let encr = Encr::from_transform(p.first(tt::ENCR)?)?;
        if p.first(tt::PRF)?.id != prf::HMAC_SHA2_256 {
            return None;
        }
        let integ = match p.first(tt::INTEG).map(|t| t.id) {
            Some(integ::HMAC_SHA2_256_128) => true,
            None | Some(integ::NONE) => false,
            Some(_) => return None,
        };
        if integ == encr.is_aead() {
            return None;
        }
        let group = Group::from_id(p.first(tt::DH)?.id)?;
        Some(IkeSuite { encr, integ, group })
    }
}

/// The algorithms of one CHILD_SA for ESP (RFC 7296 section 3.3.3: ENCR, INTEG unless
/// combined, optional D-H for PFS, ESN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChildSuite {
    /// The ESP transform, as the IPsec crate implements it.
    pub algorithm: Algorithm,
    /// Extended Sequence Numbers.
    pub esn: bool,
    /// A D-H group for PFS in CREATE_CHILD_SA (section 1.3.1); not used in IKE_AUTH.
    pub group: Option<Group>,
}

impl ChildSuite {
    /// Reads a strongSwan ESP proposal: `aes128gcm16`, `aes256gcm16`, `aes128-sha256`,
    /// `aes256-sha256`, optionally followed by a group for PFS and by `esn` or `noesn`.
    pub fn parse(s: &str) -> Result<ChildSuite, String> {
        let (mut esn_, mut group) = (false, None);
        let mut head = Vec::new();
        for tok in s.split('-') {
            match tok {
                "esn" => esn_ = true,
                "noesn" => esn_ = false,
                t if Group::from_name(t).is_some() => group = Group::from_name(t),
                t => head.push(t),
            }
        }
        let name = head.join("-");
        let algorithm = Algorithm::ALL
            .iter()
            .copied()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown ESP algorithm {name:?} in {s:?} (known: aes128gcm16, aes256gcm16, \
                     aes128-sha256, aes256-sha256)"
                )
            })?;
        Ok(ChildSuite {
            algorithm,
            esn: esn_,
            group,
        })
    }

    /// The same without PFS group, as IKE_AUTH proposes it (RFC 7296 section 1.2).
    pub fn without_group(&self) -> ChildSuite {
        ChildSuite {
            group: None,
            ..*self
        }
    }

    /// The ESP proposal for it, with our inbound SPI (section 3.3.1: 4 bytes).
    pub fn proposal(&self, number: u8, spi: u32) -> Proposal {
        let encr = match self.algorithm {
            Algorithm::AesGcm128 => Encr::AesGcm16(16),
            Algorithm::AesGcm256 => Encr::AesGcm16(32),
            Algorithm::AesCbc128HmacSha256 => Encr::AesCbc(16),
            Algorithm::AesCbc256HmacSha256 => Encr::AesCbc(32),
        };
        let mut transforms = vec![encr.transform()];
        if !encr.is_aead() {
            transforms.push(Transform::new(tt::INTEG, integ::HMAC_SHA2_256_128));
        }
        if let Some(g) = self.group {
            transforms.push(Transform::new(tt::DH, g.id()));
        }
        transforms.push(Transform::new(
            tt::ESN,
            if self.esn { esn::YES } else { esn::NO },
        ));
        Proposal {
            number,
            protocol: protocol::ESP,
            spi: spi.to_be_bytes().to_vec(),
            transforms,
        }
    }

    /// The suite and peer SPI of an ESP proposal with one transform of each type.
    pub fn from_single(p: &Proposal) -> Option<(ChildSuite, u32)> {
        if p.protocol != protocol::ESP {
            return None;
        }
        let spi = u32::from_be_bytes(p.spi.as_slice().try_into().ok()?);
        let mut counts = [0usize; 6];
        for t in &p.transforms {
            *counts.get_mut(usize::from(t.kind))? += 1;
        }
        if counts[1] != 1 || counts[2] != 0 || counts[3] > 1 || counts[4] > 1 || counts[5] > 1 {
            return None;
        }
        let encr = Encr::from_transform(p.first(tt::ENCR)?)?;
        let integ = match p.first(tt::INTEG).map(|t| t.id) {
            Some(integ::HMAC_SHA2_256_128) => true,
            None | Some(integ::NONE) => false,
            Some(_) => return None,
        };
        let algorithm = match (encr, integ) {
            (Encr::AesGcm16(16), false) => Algorithm::AesGcm128,
            (Encr::AesGcm16(32), false) => Algorithm::AesGcm256,
            (Encr::AesCbc(16), true) => Algorithm::AesCbc128HmacSha256,
            (Encr::AesCbc(32), true) => Algorithm::AesCbc256HmacSha256,
            _ => return None,
        };
        let group = match p.first(tt::DH) {
            None => None,
            Some(t) if t.id == 0 => None,
            Some(t) => Some(Group::from_id(t.id)?),
        };
        let esn_ = match p.first(tt::ESN).map(|t| t.id) {
            None | Some(esn::NO) => false,
            Some(esn::YES) => true,
            Some(_) => return None,
        };
        Some((
            ChildSuite {
                algorithm,
                esn: esn_,
                group,
            },
            spi,
        ))
    }
}

/// Every single-transform-per-type combination a proposal offers, in the order the
/// proposal lists them (first transform of each type first), at most `limit` of them: what
/// a responder walks to pick the first acceptable one (section 2.7).
pub fn combinations(p: &Proposal, limit: usize) -> Vec<Proposal> {
    let mut by_type: Vec<(u8, Vec<&Transform>)> = Vec::new();
    for t in &p.transforms {
        match by_type.iter_mut().find(|(k, _)| *k == t.kind) {
            Some((_, v)) => v.push(t),
            None => by_type.push((t.kind, vec![t])),
        }
    }
    let mut out = vec![Vec::<Transform>::new()];
    for (_, ts) in &by_type {
        let mut next = Vec::new();
        for prefix in &out {
            for t in ts {
                if next.len() >= limit {
                    break;
                }
                let mut v = prefix.clone();
                v.push((*t).clone());
                next.push(v);
            }
        }
        out = next;
    }
    out.into_iter()
        .take(limit)
        .map(|transforms| Proposal {
            number: p.number,
            protocol: p.protocol,
            spi: p.spi.clone(),
            transforms,
        })
        .collect()
}

/// The responder's choice among the peer's proposals (section 2.7): the first combination,
/// in the peer's order, that `accept` takes; `None` is NO_PROPOSAL_CHOSEN.
pub fn choose<T>(
    proposals: &[Proposal],
    mut accept: impl FnMut(&Proposal) -> Option<T>,
) -> Option<(Proposal, T)> {
    // A bound on the work a hostile SA payload can cause: 64 payloads of ~255 transforms
    // could otherwise multiply out to billions of combinations.
    const LIMIT: usize = 256;
    proposals.iter().find_map(|p| {
        combinations(p, LIMIT)
            .into_iter()
            .find_map(|c| accept(&c).map(|t| (c, t)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_round_trip_and_proposals_read_back() {
        for s in [
            "aes128-sha256-modp2048",
            "aes256-sha256-ecp256",
            "aes128gcm16-prfsha256-curve25519",
            "aes256gcm16-prfsha256-modp2048",
        ] {
            let suite = IkeSuite::parse(s).unwrap();
            assert_eq!(suite.name(), s);
            assert_eq!(
                IkeSuite::from_single(&suite.proposal(1, vec![])),
                Some(suite)
            );
        }
        assert!(IkeSuite::parse("aes128-modp2048")
            .unwrap_err()
            .contains("PRF"));
        assert!(IkeSuite::parse("3des-sha1-modp1024")
            .unwrap_err()
            .contains("3des"));
        for s in ["aes128gcm16", "aes256-sha256-esn", "aes128-sha256-modp2048"] {
            let c = ChildSuite::parse(s).unwrap();
            assert_eq!(
                ChildSuite::from_single(&c.proposal(1, 0x1234)),
                Some((c, 0x1234))
            );
        }
        assert!(ChildSuite::parse("chacha20poly1305").is_err());
    }

    #[test]
    fn responder_takes_the_first_acceptable_combination() {
        // strongSwan's style: several transforms of one type in one proposal.
        let mut p = IkeSuite::parse("aes256-sha256-modp2048")
            .unwrap()
            .proposal(1, vec![]);
        p.transforms.push(Transform::new(tt::DH, 15));
        p.transforms
            .insert(0, Transform::with_key_length(tt::ENCR, 3, 0));
        let want = IkeSuite::parse("aes256-sha256-modp2048").unwrap();
        let (chosen, suite) =
            choose(&[p], |c| IkeSuite::from_single(c).filter(|s| *s == want)).unwrap();
        assert_eq!(suite, want);
        assert_eq!(chosen.transforms.len(), 4);
        // Nothing acceptable: NO_PROPOSAL_CHOSEN.
        let other = IkeSuite::parse("aes128-sha256-ecp256")
            .unwrap()
            .proposal(1, vec![]);
        assert!(choose(&[other], |c| IkeSuite::from_single(c)
            .filter(|s| *s == want))
        .is_none());
    }

    #[test]
    fn combination_count_is_bounded() {
        let mut p = Proposal {
            number: 1,
            protocol: protocol::IKE,
            spi: vec![],
            transforms: vec![],
        };
        for kind in 1..=4u8 {
            for id in 0..50u16 {
                p.transforms.push(Transform::new(kind, id));
            }
        }
        assert_eq!(combinations(&p, 256).len(), 256);
    }
}
