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
use m6t_ike::cert::{Credential, Trust};
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
use std::sync::Arc;
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
    /// This node's certificate (PEM): it authenticates with a digital signature (RFC 7427)
    /// instead of a pre-shared key. With `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM, ECDSA P-256 or RSA; root only, mode 0600).
    pub key_file: Option<PathBuf>,
    /// The certification authorities (PEM bundle) a peer's certificate must be issued by;
    /// absent: peers may not authenticate with certificates.
    pub ca_file: Option<PathBuf>,
    /// Debugging only: append each IKE SA's keys to this file in Wireshark's
    /// ikev2_decryption_table format, so that tshark can decrypt a capture. Keys on disk:
    /// never in production.
    pub keylog_file: Option<PathBuf>,
    /// IKE proposals in strongSwan's keywords, in order of preference.
    pub proposals: Option<Vec<String>>,
    /// Rekey each CHILD_SA after this many seconds (default 3600).
    pub rekey_child_seconds: Option<u64>,
    /// Rekey the IKE SA after this many seconds (default 14400).
    pub rekey_ike_seconds: Option<u64>,
    /// Rekey a CHILD_SA once it carried this many bytes, both directions (default: no
    /// limit by bytes, only by time).
    pub rekey_child_bytes: Option<u64>,
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
    /// Its pre-shared key's file; absent: it must authenticate with a certificate
    /// (`ca_file`).
    pub psk_file: Option<PathBuf>,
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
    /// Where IKE keys are logged for tshark (`keylog_file`, debugging only).
    pub keylog: Option<PathBuf>,
    /// Rekey a CHILD_SA after this many bytes (`rekey_child_bytes`).
    pub rekey_bytes: Option<u64>,
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

/// Reads a pre-shared key file: a secret file ([`read_secret`]), trailing whitespace
/// ignored, at least 16 bytes (a shorter secret is guessable offline from one captured
/// IKE_AUTH).
fn read_psk(file: &Path) -> Result<Vec<u8>, String> {
    let name = file.display();
    let mut text = read_secret(file, 1024)?;
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

/// Reads a file holding a secret: a regular file owned by root (or the daemon's user),
/// mode 0600 or 0400, at most `max` bytes.
fn read_secret(file: &Path, max: u64) -> Result<Vec<u8>, String> {
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
    fh.take(max + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("key file {name}: {e}"))?;
    if text.len() as u64 > max {
        return Err(format!("key file {name} is longer than {max} bytes"));
    }
    Ok(text)
}

/// This node's certificate and key (`cert_file`, `key_file`), and its trusted authorities
/// (`ca_file`).
#[allow(clippy::type_complexity)]
fn credentials(
    v: &V<'_>,
    dir: &Path,
    f: &IkeFile,
) -> Result<(Option<Arc<Credential>>, Option<Arc<Trust>>), ConfigError> {
    let local = match (&f.cert_file, &f.key_file) {
        (None, None) => None,
        (Some(_), None) => return Err(v.bad("ike.key_file", "missing: cert_file needs its key")),
        (None, Some(_)) => {
            return Err(v.bad("ike.cert_file", "missing: key_file needs its certificate"))
        }
        (Some(c), Some(k)) => {
            let cert = std::fs::read_to_string(dir.join(c))
                .map_err(|e| v.bad("ike.cert_file", format!("{}: {e}", dir.join(c).display())))?;
            let key = read_secret(&dir.join(k), 64 * 1024).map_err(|m| v.bad("ike.key_file", m))?;
            let key =
                String::from_utf8(key).map_err(|_| v.bad("ike.key_file", "not a PEM file"))?;
            let cred = Credential::from_pem(&cert, &key)
                .map_err(|e| v.bad("ike.cert_file", e.to_string()))?;
            Some(Arc::new(cred))
        }
    };
    let trust = match &f.ca_file {
        None => None,
        Some(c) => {
            let pem = std::fs::read_to_string(dir.join(c))
                .map_err(|e| v.bad("ike.ca_file", format!("{}: {e}", dir.join(c).display())))?;
            Some(Arc::new(
                Trust::from_pem(&pem).map_err(|e| v.bad("ike.ca_file", e.to_string()))?,
            ))
        }
    };
    Ok((local, trust))
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
    let (local_cert, trust) = credentials(&v, &dir, f)?;
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
            let psk = match &p.psk_file {
                Some(file) => read_psk(&dir.join(file)).map_err(|m| v.bad(key("psk_file"), m))?,
                None if trust.is_some() => Vec::new(),
                None => return Err(v.bad(
                    key("psk_file"),
                    "missing: without ca_file a peer can only prove itself with a pre-shared key",
                )),
            };
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
                local_cert: local_cert.clone(),
                trust: trust.clone(),
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
        let psk = match &f.psk_file {
            Some(file) => read_psk(&dir.join(file)).map_err(|m| v.bad("ike.psk_file", m))?,
            None if local_cert.is_some() => Vec::new(),
            None => {
                return Err(v.bad(
                    "ike.psk_file",
                    "missing (the pre-shared key's file, or cert_file and key_file)",
                ))
            }
        };
        peers.push(PeerConfig {
            name: "home-agent".into(),
            local_id,
            remote_id: Identity::parse(remote_id),
            psk: psk.into(),
            local_cert,
            trust,
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
    Ok(IkeSetup {
        config,
        slots,
        keylog: f.keylog_file.as_ref().map(|k| dir.join(k)),
        rekey_bytes: match f.rekey_child_bytes {
            Some(n) if n < 65536 => {
                return Err(v.bad(
                    "ike.rekey_child_bytes",
                    "must be at least 65536 (a rekey every few packets helps nobody)",
                ))
            }
            n => n,
        },
    })
}

#[cfg(test)]
mod tests {
    use crate::dsmip_config::{ha_from_str, mn_from_str};
    use m6t_ipsec::Mode;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let d =
                std::env::temp_dir().join(format!("m6t-ike-config-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }

        fn file(&self, name: &str, text: &str, mode: u32) {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const MN: &str = "home_address = \"2001:db8:1::10\"\nha_address6 = \"2001:db8:1::1\"\n\
                      ha_address4 = \"198.51.100.2\"\n[[interfaces]]\nname = \"eth0\"\n";
    const HA: &str = "address6 = \"2001:db8:1::1\"\naddress4 = \"198.51.100.2\"\n\
                      home_prefix = \"2001:db8:1::/64\"\n[[mobile_node]]\nhome_address = \"2001:db8:1::10\"\n";

    /// RFC 4877's two pairs, IKE-keyed: BU/BA (transport) and payload (tunnel).
    fn ipsec(mn: bool) -> String {
        let (l, r, lt, rt, o, i, tl, tr) = if mn {
            (
                "2001:db8:1::10",
                "2001:db8:1::1",
                "bu",
                "back",
                "SA1",
                "SA2",
                "2001:db8:1::10",
                "2001:db8:1::1",
            )
        } else {
            (
                "2001:db8:1::1",
                "2001:db8:1::10",
                "back",
                "bu",
                "SA2",
                "SA1",
                "2001:db8:1::1",
                "2001:db8:1::10",
            )
        };
        let (pl, pr) = if mn { (l, "any") } else { ("any", r) };
        format!(
            "[ipsec]\n[[ipsec.policy]]\nname = \"bu-back\"\nlocal_address = \"{l}\"\nremote_address = \"{r}\"\n\
             proto = \"mh\"\nlocal_mh_type = \"{lt}\"\nremote_mh_type = \"{rt}\"\nout_sa = \"{o}\"\nin_sa = \"{i}\"\n\
             [[ipsec.policy]]\nname = \"payload\"\nlocal_address = \"{pl}\"\nremote_address = \"{pr}\"\n\
             out_sa = \"{o}3\"\nin_sa = \"{i}3\"\n\
             [[ipsec.sa]]\nname = \"{o}\"\ndirection = \"out\"\nkeys = \"ike\"\nalgorithm = \"aes128gcm16\"\n\
             [[ipsec.sa]]\nname = \"{i}\"\ndirection = \"in\"\nkeys = \"ike\"\nalgorithm = \"aes128gcm16\"\n\
             [[ipsec.sa]]\nname = \"{o}3\"\ndirection = \"out\"\nkeys = \"ike\"\nalgorithm = \"aes128gcm16\"\n\
             mode = \"tunnel\"\ntunnel_local = \"{tl}\"\ntunnel_remote = \"{tr}\"\n\
             [[ipsec.sa]]\nname = \"{i}3\"\ndirection = \"in\"\nkeys = \"ike\"\nalgorithm = \"aes128gcm16\"\n\
             mode = \"tunnel\"\ntunnel_local = \"{tl}\"\ntunnel_remote = \"{tr}\"\n"
        )
    }

    fn err(r: Result<impl std::fmt::Debug, crate::config::ConfigError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn policies_become_child_sas_and_the_pad_names_the_home_address() {
        let d = TempDir::new("ok");
        d.file("mn.psk", "a pre-shared key of the lab\n", 0o600);
        let conf = d.0.join("mn.toml");
        let text = format!(
            "{MN}{}[ike]\nlocal_id = \"mn1@example.org\"\nremote_id = \"ha.example.org\"\npsk_file = \"mn.psk\"\n",
            ipsec(true)
        );
        let mn = mn_from_str(&conf, &text).unwrap();
        let ike = mn.ike.unwrap();
        let p = &ike.config.peers[0];
        assert_eq!(&p.psk[..], b"a pre-shared key of the lab");
        assert_eq!(p.children.len(), 2);
        assert_eq!(
            (p.children[0].mode, p.children[1].mode),
            (Mode::Transport, Mode::Tunnel)
        );
        assert_eq!(p.children[0].local_ts[0].protocol, 135, "MH selected");
        assert!(
            ike.config.force_encap,
            "RFC 5555 section 5: UDP 4500 always"
        );
        assert_eq!(ike.slots.len(), 2);
        assert!(!format!("{:?}", ike.config).contains("pre-shared key of the lab"));

        let ha_text = format!(
            "{HA}{}[ike]\nlocal_id = \"ha.example.org\"\n[[ike.peer]]\nid = \"mn1@example.org\"\n\
             psk_file = \"mn.psk\"\nhome_address = \"2001:db8:1::10\"\n",
            ipsec(false)
        );
        let ha = ha_from_str(&d.0.join("ha.toml"), &ha_text).unwrap();
        assert_eq!(ha.ike.unwrap().config.peers[0].children.len(), 2);
        // A peer whose home address no policy names could have no CHILD_SA.
        let other = ha_text.replace(
            "home_address = \"2001:db8:1::10\"\n",
            "home_address = \"2001:db8:1::99\"\n",
        );
        let other = other.replacen(
            "home_address = \"2001:db8:1::99\"\n",
            "home_address = \"2001:db8:1::10\"\n",
            1,
        );
        assert!(err(ha_from_str(&d.0.join("ha.toml"), &other)).contains("ike.peer[0].home_address"));
    }

    #[test]
    fn every_mistake_names_its_key() {
        let d = TempDir::new("bad");
        d.file("mn.psk", "a pre-shared key of the lab\n", 0o600);
        d.file("open.psk", "a pre-shared key of the lab\n", 0o644);
        d.file("short.psk", "short\n", 0o600);
        let conf = d.0.join("mn.toml");
        let base = format!("{MN}{}", ipsec(true));
        let ike = "[ike]\nlocal_id = \"mn1@example.org\"\nremote_id = \"ha.example.org\"\n";
        let cases = [
            (base.clone(), "ipsec.sa[0].keys"),
            (format!("{base}{ike}"), "ike.psk_file"),
            (
                format!("{base}{ike}psk_file = \"open.psk\"\n"),
                "ike.psk_file",
            ),
            (
                format!("{base}{ike}psk_file = \"short.psk\"\n"),
                "ike.psk_file",
            ),
            (
                format!("{base}{ike}psk_file = \"mn.psk\"\ncert_file = \"x.pem\"\n"),
                "ike.key_file",
            ),
            (
                format!("{base}{ike}psk_file = \"mn.psk\"\nproposals = [\"des-md5\"]\n"),
                "ike.proposals[0]",
            ),
            (
                format!("{base}{ike}psk_file = \"mn.psk\"\nrekey_child_seconds = 0\n"),
                "ike.rekey_child_seconds",
            ),
            (format!("{MN}{ike}psk_file = \"mn.psk\"\n"), "`ike`"),
            (
                format!("{base}[ike]\nlocal_id = \"mn1@example.org\"\npsk_file = \"mn.psk\"\n"),
                "ike.remote_id",
            ),
            (
                base.replace(
                    "keys = \"ike\"\nalgorithm",
                    "keys = \"ike\"\nspi = 5\nalgorithm",
                ),
                "ipsec.sa[0].spi",
            ),
        ];
        for (text, key) in cases {
            let e = err(mn_from_str(&conf, &text));
            assert!(e.contains(key) && e.contains("mn.toml"), "{key}: {e}");
            assert!(!e.contains("pre-shared key of the lab"), "{e}");
        }
    }
}
