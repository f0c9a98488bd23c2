//! The `[ike]` section of the home agent's and mobile node's files: IKEv2 (RFC 7296) keys
//! the SAs of `[ipsec]` that say `keys = "ike"`, as RFC 4877 section 4 describes for
//! Mobile IPv6: the mobile node's IKE SA runs from its care-of address to the home agent,
//! each policy with IKE-keyed SAs becomes one CHILD_SA (transport mode for BU/BA, tunnel
//! mode for payload) whose traffic selectors are the policy's, and the home agent's Peer
//! Authorization Database (`[[ike.peer]]`) ties each identity to the one home address it
//! may use (section 4.3): a CHILD_SA for any other is refused with TS_UNACCEPTABLE.
//!
//! Authentication here is by pre-shared key (RFC 7296 section 2.15), in a file readable by
//! root only, checked as `[ipsec]` key files are. IKE runs over UDP port 4500 from the first
//! message, with ESP in UDP (RFC 5555 section 5 for a mobile node behind a NAT; RFC 3948).

use crate::config::{ConfigError, V};
use crate::ipsec_config::{IkeChild, IpsecSetup};
use m6t_ike::config::{ChildConfig, Identity, IkeConfig, PeerConfig};
use m6t_ike::suite::{ChildSuite, IkeSuite};
use m6t_ike::{ts, TrafficSelector};
use m6t_ipsec::spd::AddrSel;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default IKE proposals: AES-GCM with Curve25519 first, then what strongSwan's
/// kernel-libipsec peers speak (AES-CBC with HMAC-SHA-256 and MODP-2048).
pub const DEFAULT_PROPOSALS: [&str; 2] =
    ["aes128gcm16-prfsha256-curve25519", "aes128-sha256-modp2048"];

/// The `[ike]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IkeFile {
    /// This node's identity (RFC 4877 section 4.3: the mobile node's `user@FQDN` or FQDN,
    /// the home agent's FQDN); an address is an ID_IPV4_ADDR / ID_IPV6_ADDR.
    pub local_id: String,
    /// Mobile node: the home agent's identity.
    pub remote_id: Option<String>,
    /// Mobile node: the pre-shared key's file (root only, mode 0600).
    pub psk_file: Option<PathBuf>,
    /// IKE proposals in strongSwan's keywords, in order of preference.
    pub proposals: Option<Vec<String>>,
    /// Rekey each CHILD_SA after this many seconds (default 3600).
    pub rekey_child_seconds: Option<u64>,
    /// Rekey the IKE SA after this many seconds (default 14400).
    pub rekey_ike_seconds: Option<u64>,
    /// Liveness check after this many quiet seconds (default 30; 0: never).
    pub dpd_seconds: Option<u64>,
    /// Home agent: the Peer Authorization Database, one entry per mobile node.
    #[serde(default)]
    pub peer: Vec<IkePeerFile>,
}

/// One `[[ike.peer]]` of the home agent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IkePeerFile {
    /// The mobile node's identity.
    pub id: String,
    /// Its pre-shared key's file.
    pub psk_file: PathBuf,
    /// The home address this identity may use (RFC 4877 section 4.3).
    pub home_address: IpAddr,
}

/// A validated `[ike]` section.
#[derive(Debug, Clone)]
pub struct IkeSetup {
    /// The machine's configuration (secrets inside; `Debug` hides them).
    pub config: IkeConfig,
    /// For each CHILD_SA name: the SAD indices of its outbound and inbound SAs.
    pub slots: BTreeMap<String, (usize, usize)>,
}

/// The traffic selector of one side of a policy (RFC 4877 section 4.4): its addresses, the
/// policy's protocol, any port; `any` in the family of the other side.
fn selector(a: &AddrSel, other: &AddrSel, proto: Option<u8>) -> TrafficSelector {
    let mut t = match *a {
        AddrSel::Prefix(addr, len) => ts::prefix(addr, len).unwrap_or(ts::any(addr.is_ipv6())),
        AddrSel::Any => ts::any(!matches!(other, AddrSel::Prefix(IpAddr::V4(_), _))),
    };
    t.protocol = proto.unwrap_or(0);
    t
}

fn child(c: &IkeChild) -> ChildConfig {
    ChildConfig {
        name: c.name.clone(),
        mode: c.mode,
        local_ts: c
            .selectors
            .iter()
            .map(|s| selector(&s.local, &s.remote, s.proto))
            .collect(),
        remote_ts: c
            .selectors
            .iter()
            .map(|s| selector(&s.remote, &s.local, s.proto))
            .collect(),
        proposals: vec![ChildSuite {
            algorithm: c.algorithm,
            esn: c.esn,
            group: None,
        }],
    }
}

/// Reads a pre-shared key file: a regular file owned by root, mode 0600 or 0400, at most
/// 1 KiB, trailing whitespace ignored, at least 16 bytes (a shorter secret is guessable
/// offline from one captured IKE_AUTH).
fn read_psk(file: &Path) -> Result<Vec<u8>, String> {
    let name = file.display();
    let md = std::fs::metadata(file).map_err(|e| format!("key file {name}: {e}"))?;
    if !md.is_file() {
        return Err(format!("key file {name} is not a regular file"));
    }
    let fh = std::fs::File::open(file).map_err(|e| format!("key file {name}: {e}"))?;
    let md = fh.metadata().map_err(|e| format!("key file {name}: {e}"))?;
    if md.uid() != 0 && Some(md.uid()) != crate::ipsec_config::effective_uid() {
        return Err(format!(
            "key file {name} is owned by uid {}: must be owned by root",
            md.uid()
        ));
    }
    let mode = md.mode() & 0o7777;
    if mode != 0o600 && mode != 0o400 {
        return Err(format!(
            "key file {name} is mode {mode:04o}: must be 0600 (readable by root only)"
        ));
    }
    let mut text = Vec::new();
    fh.take(1025)
        .read_to_end(&mut text)
        .map_err(|e| format!("key file {name}: {e}"))?;
    if text.len() > 1024 {
        return Err(format!("key file {name} is longer than 1024 bytes"));
    }
    while text.last().is_some_and(u8::is_ascii_whitespace) {
        text.pop();
    }
    if text.len() < 16 {
        return Err(format!(
            "key file {name} holds {} bytes: a pre-shared key needs at least 16",
            text.len()
        ));
    }
    Ok(text)
}

/// Validates `[ike]` against the `[ipsec]` it keys. `home_agent` selects the home agent's
/// keys (`[[ike.peer]]`) or the mobile node's (`remote_id`, `psk_file`).
pub fn ike_setup(
    path: &Path,
    f: &IkeFile,
    ipsec: Option<&IpsecSetup>,
    home_agent: bool,
) -> Result<IkeSetup, ConfigError> {
    let v = V { path };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let children = match ipsec {
        Some(i) if !i.ike_children.is_empty() => &i.ike_children,
        _ => {
            return Err(v.bad(
                "ike",
                "keys nothing: no [[ipsec.sa]] has keys = \"ike\" (IKEv2 makes the SAs of \
                 the policies that name such SAs)",
            ))
        }
    };
    if f.local_id.is_empty() {
        return Err(v.bad("ike.local_id", "must not be empty"));
    }
    let proposals: Vec<String> = match &f.proposals {
        Some(p) if p.is_empty() => return Err(v.bad("ike.proposals", "must not be empty")),
        Some(p) => p.clone(),
        None => DEFAULT_PROPOSALS.iter().map(|s| s.to_string()).collect(),
    };
    let mut suites = Vec::new();
    for (i, p) in proposals.iter().enumerate() {
        suites.push(IkeSuite::parse(p).map_err(|m| v.bad(format!("ike.proposals[{i}]"), m))?);
    }
    let local_id = Identity::parse(&f.local_id);
    let all: Vec<ChildConfig> = children.iter().map(child).collect();
    let mut peers = Vec::new();
    if home_agent {
        for k in ["remote_id", "psk_file"] {
            let set = match k {
                "remote_id" => f.remote_id.is_some(),
                _ => f.psk_file.is_some(),
            };
            if set {
                return Err(v.bad(
                    format!("ike.{k}"),
                    "is the mobile node's: a home agent lists its peers as [[ike.peer]]",
                ));
            }
        }
        if f.peer.is_empty() {
            return Err(v.bad("ike.peer", "a home agent needs at least one [[ike.peer]]"));
        }
        for (i, p) in f.peer.iter().enumerate() {
            let key = |k: &str| format!("ike.peer[{i}].{k}");
            if p.id.is_empty() {
                return Err(v.bad(key("id"), "must not be empty"));
            }
            let psk = read_psk(&dir.join(&p.psk_file)).map_err(|m| v.bad(key("psk_file"), m))?;
            // The PAD (RFC 4877 section 4.3): this identity's CHILD_SAs are the policies
            // whose remote side is its home address.
            let mine: Vec<ChildConfig> = children
                .iter()
                .filter(|c| {
                    c.selectors.iter().any(|s| match s.remote {
                        AddrSel::Prefix(..) => s.remote.matches(p.home_address),
                        AddrSel::Any => false,
                    })
                })
                .map(child)
                .collect();
            if mine.is_empty() {
                return Err(v.bad(
                    key("home_address"),
                    format!(
                        "no [[ipsec.policy]] with IKE-keyed SAs has remote_address {}: this \
                         peer could have no CHILD_SA",
                        p.home_address
                    ),
                ));
            }
            peers.push(PeerConfig {
                name: p.id.clone(),
                local_id: local_id.clone(),
                remote_id: Identity::parse(&p.id),
                psk: psk.into(),
                children: mine,
            });
        }
    } else {
        if !f.peer.is_empty() {
            return Err(v.bad(
                "ike.peer",
                "is the home agent's: a mobile node names its home agent with remote_id",
            ));
        }
        let remote_id = f
            .remote_id
            .as_ref()
            .ok_or_else(|| v.bad("ike.remote_id", "missing (the home agent's identity)"))?;
        let psk_file = f
            .psk_file
            .as_ref()
            .ok_or_else(|| v.bad("ike.psk_file", "missing (the pre-shared key's file)"))?;
        let psk = read_psk(&dir.join(psk_file)).map_err(|m| v.bad("ike.psk_file", m))?;
        peers.push(PeerConfig {
            name: "home-agent".into(),
            local_id,
            remote_id: Identity::parse(remote_id),
            psk: psk.into(),
            children: all,
        });
    }
    let secs = |k: &str, x: Option<u64>, default: u64| -> Result<Option<Duration>, ConfigError> {
        match x.unwrap_or(default) {
            0 if k == "dpd_seconds" => Ok(None),
            0 => Err(v.bad(format!("ike.{k}"), "must be at least 1")),
            n if n > 7 * 86400 => Err(v.bad(format!("ike.{k}"), "must be at most a week")),
            n => Ok(Some(Duration::from_secs(n))),
        }
    };
    let config = IkeConfig {
        proposals: suites,
        peers,
        rekey_child: secs("rekey_child_seconds", f.rekey_child_seconds, 3600)?,
        rekey_ike: secs("rekey_ike_seconds", f.rekey_ike_seconds, 14400)?,
        dpd: secs("dpd_seconds", f.dpd_seconds, 30)?,
        // RFC 5555 section 5: IKE and ESP in UDP 4500 even when no NAT is detected.
        force_encap: true,
        ..IkeConfig::default()
    };
    let slots = children
        .iter()
        .map(|c| (c.name.clone(), (c.out_sa, c.in_sa)))
        .collect();
    Ok(IkeSetup { config, slots })
}
