//! The `[ipsec]` section of the home agent's and mobile node's files: the SPD and SAD of RFC
//! 4301 (sections 4.4.1 and 4.4.2) with manually configured keys, which RFC 3776 section 5.2
//! and RFC 4877 section 6 require an implementation to support.
//!
//! The keys are those RFC 4877 section 6.1 writes its examples with, so that an operator can
//! translate them line by line: a policy (`[[ipsec.policy]]`) has `local_address`,
//! `remote_address`, `proto`, `local_mh_type`, `remote_mh_type` (or the ICMPv6 types of
//! section 6.3, or ports) and the SAs it uses, `out_sa` and `in_sa`; an SA (`[[ipsec.sa]]`)
//! has its name, direction, SPI, mode, algorithm and a file holding its key.
//!
//! Everything is checked at load time, including that [`m6t_ipsec::Ipsec::new`] accepts the
//! result, so a mistake is one [`ConfigError`] naming the file and the key
//! (`ipsec.sa[1].key_file`, array entries counted from 0) before the daemon touches anything.
//! Key material never appears in an error, a warning or `Debug` output.

use crate::config::{ConfigError, V};
use m6t_ipsec::spd::{PROTO_ICMPV6, PROTO_MH, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use m6t_ipsec::{
    Action, AddrSel, Algorithm, Direction, Ipsec, Mode, Policy, SaConfig, SaParams, Selectors, Spd,
    TunnelEnds,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A value the configuration gives as a name or as a number (`proto = "mh"` or
/// `proto = 135`, `local_mh_type = "bu"` or `local_mh_type = 5`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameOrNumber {
    /// A name, matched without regard to case (RFC 4877 writes `BAck`, `HoTi`, `MH`).
    Name(String),
    /// A number, checked against the field's range.
    Number(i64),
}

impl<'de> Deserialize<'de> for NameOrNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis;
        impl serde::de::Visitor<'_> for Vis {
            type Value = NameOrNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name (string) or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NameOrNumber, E> {
                Ok(NameOrNumber::Name(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<NameOrNumber, E> {
                Ok(NameOrNumber::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<NameOrNumber, E> {
                Ok(NameOrNumber::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        d.deserialize_any(Vis)
    }
}

fn d_bypass() -> String {
    "bypass".into()
}
fn d_any() -> String {
    "any".into()
}
fn d_protect() -> String {
    "protect".into()
}
fn d_transport() -> String {
    "transport".into()
}
fn d_manual() -> String {
    "manual".into()
}

/// The `[ipsec]` section as written: the SPD (RFC 4301 section 4.4.1) and the SAD with
/// manual keys (section 4.4.2, RFC 4877 section 6).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpsecFile {
    /// What traffic no policy selects gets: `"bypass"` (the default) or `"discard"`
    /// ([`Spd::unmatched`]).
    #[serde(default = "d_bypass")]
    pub unmatched: String,
    /// The policies, in order: the first that matches decides (RFC 4301 section 4.4.1).
    #[serde(default)]
    pub policy: Vec<PolicyFile>,
    /// The SAs the policies name.
    #[serde(default)]
    pub sa: Vec<SaFile>,
    /// Mobile node only: how its tunnel module tells a protected BU from protected payload
    /// (seed 001 section 4.3.2): `"spi"` (the default: the SPD/SAD look-up) or
    /// `"heuristic"` (heuristic and locking).
    pub bu_detection: Option<String>,
    /// Where the outbound SAs' sequence numbers are reserved ahead, so that a restart
    /// continues them (RFC 4303 section 3.3.3 with manual keys); relative to the file's
    /// directory; `""` keeps them in memory only. Default: the daemon's (under
    /// /var/lib/m6t).
    pub sequence_file: Option<PathBuf>,
}

/// One `[[ipsec.policy]]`: an SPD entry written as RFC 4877 section 6 writes them
/// ("IF local_address = ... & proto = MH & local_mh_type = BU ... Then use SA SA1 (OUT) and
/// SA2 (IN)").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// A name for status and logs; `policy-<index>` when absent.
    pub name: Option<String>,
    /// `"any"`, an address, or a prefix (`"2001:db8:1::/64"`): this node's side.
    #[serde(default = "d_any")]
    pub local_address: String,
    /// The same for the peer's side.
    #[serde(default = "d_any")]
    pub remote_address: String,
    /// Next-layer protocol: `"mh"`, `"icmpv6"`, `"tcp"`, `"udp"`, `"sctp"`, `"any"` or a
    /// number; any when absent.
    pub proto: Option<NameOrNumber>,
    /// Mobility Header type this node sends (RFC 4877 `local_mh_type`; `proto = "mh"` only).
    pub local_mh_type: Option<NameOrNumber>,
    /// Mobility Header type this node receives (`remote_mh_type`).
    pub remote_mh_type: Option<NameOrNumber>,
    /// ICMPv6 type this node sends (RFC 4877 section 6.3 `local_icmp6_type`; `proto =
    /// "icmpv6"` only).
    pub local_icmp6_type: Option<NameOrNumber>,
    /// ICMPv6 type this node receives.
    pub remote_icmp6_type: Option<NameOrNumber>,
    /// This node's port (TCP, UDP, SCTP only).
    pub local_port: Option<i64>,
    /// The peer's port.
    pub remote_port: Option<i64>,
    /// `"protect"` (the default), `"bypass"` or `"discard"` (RFC 4301 section 4.4.1).
    #[serde(default = "d_protect")]
    pub action: String,
    /// Name of the outbound SA ("use SA SA1 (OUT)").
    pub out_sa: Option<String>,
    /// Name of the inbound SA ("and SA2 (IN)").
    pub in_sa: Option<String>,
}

/// One `[[ipsec.sa]]`: an SAD entry with a manual key, as RFC 4877 section 6 writes them
/// ("SA1(OUT, spi_a, home_agent_1, ESP, TRANSPORT)"). Holds the key file's name, not the key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaFile {
    /// The name policies use in `out_sa` / `in_sa`.
    pub name: String,
    /// `"out"` or `"in"` (RFC 4301 section 4.1: an SA is one-way).
    pub direction: String,
    /// `"manual"` (the default: `spi` and `key_file` below) or `"ike"`: IKEv2 negotiates
    /// the SPI and keys (RFC 4877 section 4; the `[ike]` section), the policy naming this SA
    /// becoming one CHILD_SA.
    #[serde(default = "d_manual")]
    pub keys: String,
    /// The SPI, chosen by the receiving side (RFC 4301 section 4.1); not 0. Manual keys only.
    pub spi: Option<i64>,
    /// `"transport"` (the default) or `"tunnel"`.
    #[serde(default = "d_transport")]
    pub mode: String,
    /// An [`Algorithm::name`]: `aes128gcm16`, `aes256gcm16`, `aes128-sha256`, `aes256-sha256`.
    pub algorithm: String,
    /// 64-bit Extended Sequence Numbers (RFC 4303 section 2.2.1); both ends alike.
    #[serde(default)]
    pub esn: bool,
    /// The file holding the key material in hex, owned by root, mode 0600 or 0400; relative
    /// to the configuration file's directory. Manual keys only.
    pub key_file: Option<PathBuf>,
    /// Tunnel mode only: this node's outer address.
    pub tunnel_local: Option<String>,
    /// Tunnel mode only: the peer's outer address.
    pub tunnel_remote: Option<String>,
}

/// A validated `[ipsec]` section: what [`Ipsec::new`] takes, and the warnings the daemon logs
/// at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsecSetup {
    /// The SPD; PROTECT actions index `sas`.
    pub spd: Spd,
    /// The SAD, in the file's order, keys included (`SaConfig`'s `Debug` hides them).
    pub sas: Vec<SaConfig>,
    /// Things that work but should not be so, one line each (AES-GCM with manual keys, RFC
    /// 4106 section 2; reserved SPIs; SAs no policy uses; no sequence file).
    pub warnings: Vec<String>,
    /// Where sequence numbers are reserved; `None`: in memory only.
    pub sequence_file: Option<PathBuf>,
    /// The policies whose SAs IKE keys, each a CHILD_SA (RFC 4877 sections 4.4 and 5).
    pub ike_children: Vec<IkeChild>,
}

/// A pair of SAs with `keys = "ike"` and the policies naming it: what IKEv2 negotiates
/// as one CHILD_SA, and where its keys go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeChild {
    /// The first policy's name, which is the CHILD_SA's.
    pub name: String,
    /// The SAD index of its outbound SA.
    pub out_sa: usize,
    /// The SAD index of its inbound SA.
    pub in_sa: usize,
    /// Transport (BU/BA) or tunnel (payload).
    pub mode: Mode,
    /// The ESP transform the SAs are configured with.
    pub algorithm: Algorithm,
    /// Extended Sequence Numbers.
    pub esn: bool,
    /// The selectors of the policies naming the pair, from which the traffic selectors are
    /// written.
    pub selectors: Vec<Selectors>,
}

impl IpsecSetup {
    /// Builds the SPD and SAD with fresh counters (RFC 4303 sections 3.3.3 and 3.4.3), the
    /// IVs seeded from `iv_seed`, which should be random (see [`m6t_ipsec::Sa::new`]). Load
    /// time already checked that this succeeds.
    pub fn install(&self, iv_seed: u64) -> Result<Ipsec, m6t_ipsec::ConfigError> {
        Ipsec::new(self.spd.clone(), &self.sas, iv_seed)
    }
}

/// Key material being read: zeroed when dropped, never shown by `Debug`.
struct Secret(Vec<u8>);

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            *b = std::hint::black_box(0);
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes, not shown>", self.0.len())
    }
}

/// Longest key file read: the longest key is 64 bytes, 128 hex digits; the rest is room for
/// whitespace.
const MAX_KEY_FILE: u64 = 4096;

/// Validates the `[ipsec]` section of the file at `path` (named in errors; relative key
/// files are read from its directory); `sequence_file` is the daemon's default for the key
/// of that name.
pub fn ipsec_setup(
    path: &Path,
    f: &IpsecFile,
    sequence_file: &Path,
) -> Result<IpsecSetup, ConfigError> {
    let v = V { path };
    let mut warnings = Vec::new();
    let unmatched = match f.unmatched.to_ascii_lowercase().as_str() {
        "bypass" => Action::Bypass,
        "discard" => Action::Discard,
        _ => {
            return Err(v.bad(
                "ipsec.unmatched",
                "must be \"bypass\" or \"discard\" (traffic no policy selects has no SA)",
            ))
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };

    let mut sas: Vec<SaConfig> = Vec::with_capacity(f.sa.len());
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    let mut inbound_spis: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, s) in f.sa.iter().enumerate() {
        let key = |k: &str| format!("ipsec.sa[{i}].{k}");
        if s.name.is_empty() {
            return Err(v.bad(key("name"), "must not be empty"));
        }
        if let Some(j) = by_name.insert(&s.name, i) {
            return Err(v.bad(
                key("name"),
                format!("`{}` is also the name of ipsec.sa[{j}]", s.name),
            ));
        }
        let direction = match s.direction.to_ascii_lowercase().as_str() {
            "out" => Direction::Out,
            "in" => Direction::In,
            _ => return Err(v.bad(key("direction"), "must be \"out\" or \"in\"")),
        };
        let ike = match s.keys.to_ascii_lowercase().as_str() {
            "manual" => false,
            "ike" => true,
            _ => return Err(v.bad(key("keys"), "must be \"manual\" or \"ike\"")),
        };
        if ike {
            if s.spi.is_some() {
                return Err(v.bad(key("spi"), "not with keys = \"ike\": IKEv2 chooses the SPI"));
            }
            if s.key_file.is_some() {
                return Err(v.bad(
                    key("key_file"),
                    "not with keys = \"ike\": IKEv2 derives the keys",
                ));
            }
        }
        let spi = match s.spi.map(u32::try_from) {
            None if ike => 0,
            None => return Err(v.bad(key("spi"), "missing (manual keys need an SPI)")),
            Some(Ok(0)) => {
                return Err(v.bad(
                    key("spi"),
                    "0 is reserved and never sent (RFC 4303 section 2.1)",
                ))
            }
            Some(Ok(x)) => x,
            Some(Err(_)) => return Err(v.bad(key("spi"), "must be between 1 and 0xffffffff")),
        };
        if !ike && spi <= 255 {
            warnings.push(format!(
                "ipsec.sa[{i}] `{}`: SPI {spi} is in 1-255, reserved by IANA (RFC 4303 section 2.1); \
                 the peer may refuse it",
                s.name
            ));
        }
        if direction == Direction::In && !ike {
            if let Some(j) = inbound_spis.insert(spi, i) {
                return Err(v.bad(
                    key("spi"),
                    format!(
                        "SPI {spi:#x} is also the SPI of inbound ipsec.sa[{j}] `{}`: an inbound \
                         SPI names one SA (RFC 4301 section 4.1)",
                        f.sa[j].name
                    ),
                ));
            }
        }
        let mode = match s.mode.to_ascii_lowercase().as_str() {
            "transport" => Mode::Transport,
            "tunnel" => Mode::Tunnel,
            _ => return Err(v.bad(key("mode"), "must be \"transport\" or \"tunnel\"")),
        };
        let algorithm = Algorithm::ALL
            .iter()
            .copied()
            .find(|a| a.name().eq_ignore_ascii_case(&s.algorithm))
            .ok_or_else(|| {
                let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
                v.bad(
                    key("algorithm"),
                    format!("must be one of {}", names.join(", ")),
                )
            })?;
        if !ike && matches!(algorithm, Algorithm::AesGcm128 | Algorithm::AesGcm256) {
            warnings.push(format!(
                "ipsec.sa[{i}] `{}`: {} with a manual key: RFC 4106 section 2 forbids AES-GCM \
                 with manually configured keys, since a counter that restarts under the same \
                 key reuses IVs (here only a random seed per start makes that unlikely); use \
                 aes128-sha256",
                s.name,
                algorithm.name()
            ));
        }
        let tunnel = match (mode, &s.tunnel_local, &s.tunnel_remote) {
            (Mode::Transport, None, None) => None,
            (Mode::Transport, Some(_), _) => {
                return Err(v.bad(key("tunnel_local"), "only for mode = \"tunnel\""))
            }
            (Mode::Transport, None, Some(_)) => {
                return Err(v.bad(key("tunnel_remote"), "only for mode = \"tunnel\""))
            }
            (Mode::Tunnel, None, _) => {
                return Err(v.bad(
                    key("tunnel_local"),
                    "a tunnel-mode SA needs tunnel_local and tunnel_remote",
                ))
            }
            (Mode::Tunnel, Some(_), None) => {
                return Err(v.bad(
                    key("tunnel_remote"),
                    "a tunnel-mode SA needs tunnel_local and tunnel_remote",
                ))
            }
            (Mode::Tunnel, Some(l), Some(r)) => {
                let local: IpAddr = l
                    .parse()
                    .map_err(|_| v.bad(key("tunnel_local"), format!("`{l}` is not an address")))?;
                let remote: IpAddr = r
                    .parse()
                    .map_err(|_| v.bad(key("tunnel_remote"), format!("`{r}` is not an address")))?;
                if local.is_ipv4() != remote.is_ipv4() {
                    return Err(v.bad(
                        key("tunnel_remote"),
                        "must be of the same family as tunnel_local",
                    ));
                }
                Some(TunnelEnds { local, remote })
            }
        };
        // An IKE-keyed SA has no key material until IKEv2 brings it (an empty keymat).
        let mut keymat = match (&s.key_file, ike) {
            (_, true) => Secret(Vec::new()),
            (None, false) => {
                return Err(v.bad(key("key_file"), "missing (manual keys need a key file)"))
            }
            (Some(f), false) => {
                read_key_file(&dir.join(f), algorithm).map_err(|m| v.bad(key("key_file"), m))?
            }
        };
        sas.push(SaConfig {
            name: s.name.clone(),
            direction,
            params: SaParams {
                spi,
                mode,
                algorithm,
                esn: s.esn,
            },
            // Moved out: the emptied Secret zeroes nothing, the SaConfig zeroes on drop.
            keymat: std::mem::take(&mut keymat.0),
            tunnel,
        });
    }

    let mut policies = Vec::with_capacity(f.policy.len());
    let mut ike_children: Vec<IkeChild> = Vec::new();
    let mut used = vec![false; sas.len()];
    let mut policy_names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, p) in f.policy.iter().enumerate() {
        let key = |k: &str| format!("ipsec.policy[{i}].{k}");
        let name = p.name.clone().unwrap_or_else(|| format!("policy-{i}"));
        if name.is_empty() {
            return Err(v.bad(key("name"), "must not be empty"));
        }
        if let Some(j) = policy_names.insert(name.clone(), i) {
            return Err(v.bad(
                key("name"),
                format!("`{name}` is also the name of ipsec.policy[{j}]"),
            ));
        }
        let local = addr_sel(&p.local_address).map_err(|m| v.bad(key("local_address"), m))?;
        let remote = addr_sel(&p.remote_address).map_err(|m| v.bad(key("remote_address"), m))?;
        let proto = match &p.proto {
            None => None,
            Some(x) => proto_number(x).map_err(|m| v.bad(key("proto"), m))?,
        };
        let mut sel = Selectors {
            local,
            remote,
            proto,
            ..Selectors::ANY
        };
        // Each next-layer selector belongs to one protocol (RFC 4301 section 4.4.1.1): a
        // Mobility Header type on a policy for any protocol would select nothing sensible.
        let types = [
            ("local_mh_type", &p.local_mh_type, PROTO_MH),
            ("remote_mh_type", &p.remote_mh_type, PROTO_MH),
            ("local_icmp6_type", &p.local_icmp6_type, PROTO_ICMPV6),
            ("remote_icmp6_type", &p.remote_icmp6_type, PROTO_ICMPV6),
        ];
        for (k, val, wants) in types {
            let Some(x) = val else { continue };
            if proto != Some(wants) {
                let need = if wants == PROTO_MH { "mh" } else { "icmpv6" };
                return Err(v.bad(key(k), format!("only with proto = \"{need}\"")));
            }
            let t = if wants == PROTO_MH {
                mh_type(x)
            } else {
                icmp6_type(x)
            }
            .map_err(|m| v.bad(key(k), m))?;
            if k.starts_with("local") {
                sel.local_type = Some(t);
            } else {
                sel.remote_type = Some(t);
            }
        }
        for (k, val) in [("local_port", p.local_port), ("remote_port", p.remote_port)] {
            let Some(x) = val else { continue };
            if !matches!(proto, Some(PROTO_TCP | PROTO_UDP | PROTO_SCTP)) {
                return Err(v.bad(key(k), "only with proto = \"tcp\", \"udp\" or \"sctp\""));
            }
            let port =
                u16::try_from(x).map_err(|_| v.bad(key(k), "must be between 0 and 65535"))?;
            if k == "local_port" {
                sel.local_port = Some(port);
            } else {
                sel.remote_port = Some(port);
            }
        }
        let mut find = |k: &str, n: &Option<String>, want: Direction| {
            let Some(n) = n else { return Ok(None) };
            let Some(&j) = by_name.get(n.as_str()) else {
                return Err(v.bad(key(k), format!("no [[ipsec.sa]] is named `{n}`")));
            };
            if sas[j].direction != want {
                let (is, wants) = match want {
                    Direction::Out => ("inbound (direction = \"in\")", "outbound"),
                    Direction::In => ("outbound (direction = \"out\")", "inbound"),
                };
                return Err(v.bad(key(k), format!("SA `{n}` is {is}: {k} names an {wants} SA")));
            }
            used[j] = true;
            Ok(Some(j))
        };
        let action = match p.action.to_ascii_lowercase().as_str() {
            "protect" => {
                let out = find("out_sa", &p.out_sa, Direction::Out)?;
                let inbound = find("in_sa", &p.in_sa, Direction::In)?;
                if out.is_none() && inbound.is_none() {
                    return Err(v.bad(key("action"), "\"protect\" needs out_sa, in_sa or both"));
                }
                Action::Protect { out, inbound }
            }
            a @ ("bypass" | "discard") => {
                let k = if p.out_sa.is_some() {
                    Some("out_sa")
                } else if p.in_sa.is_some() {
                    Some("in_sa")
                } else {
                    None
                };
                if let Some(k) = k {
                    return Err(v.bad(
                        key(k),
                        format!("a \"{a}\" policy uses no SA: only \"protect\" names SAs"),
                    ));
                }
                if a == "bypass" {
                    Action::Bypass
                } else {
                    Action::Discard
                }
            }
            _ => {
                return Err(v.bad(
                    key("action"),
                    "must be \"protect\", \"bypass\" or \"discard\"",
                ))
            }
        };
        // Signalling (BU/BA, MPS/MPA) is protected in transport mode (RFC 4877 sections 6.1
        // and 6.3), payload in tunnel mode (section 6.4, RFC 5555 section 5): the nodes
        // carry no other combination.
        if let Action::Protect { out, inbound } = action {
            let signalling = matches!(sel.proto, Some(PROTO_MH) | Some(PROTO_ICMPV6));
            for (k, idx) in [("out_sa", out), ("in_sa", inbound)] {
                let Some(j) = idx else { continue };
                let mode = sas[j].params.mode;
                let want = if signalling {
                    Mode::Transport
                } else {
                    Mode::Tunnel
                };
                if mode != want {
                    return Err(v.bad(
                        key(k),
                        format!(
                            "SA `{}` is in {} mode, but {} is protected in {} mode (RFC 4877 \
                             section 6)",
                            sas[j].name,
                            mode_name(mode),
                            if signalling {
                                "signalling (proto mh or icmpv6)"
                            } else {
                                "payload (any other proto)"
                            },
                            mode_name(want)
                        ),
                    ));
                }
            }
        }
        // An IKE-keyed pair is one CHILD_SA: both SAs of the policy IKE-keyed, named by no
        // other policy (RFC 4877 section 4.4: one CHILD_SA per protected flow).
        if let Action::Protect { out, inbound } = action {
            let ike = |j: Option<usize>| j.is_some_and(|j| sas[j].keymat.is_empty());
            match (out, inbound) {
                (Some(o), Some(n)) if ike(out) && ike(inbound) => {
                    // Policies naming the same pair share its CHILD_SA, each adding its
                    // selectors (e.g. payload on the IPv6 and the IPv4 home address).
                    match ike_children
                        .iter_mut()
                        .find(|c| c.out_sa == o || c.in_sa == n)
                    {
                        Some(c) if c.out_sa == o && c.in_sa == n => c.selectors.push(sel),
                        Some(c) => {
                            return Err(v.bad(
                                key("in_sa"),
                                format!(
                                    "shares one SA with the CHILD_SA of policy `{}` but not the \
                                     other: IKE-keyed SAs come in pairs (RFC 7296 section 2.17)",
                                    c.name
                                ),
                            ))
                        }
                        None => ike_children.push(IkeChild {
                            name: name.clone(),
                            out_sa: o,
                            in_sa: n,
                            mode: sas[o].params.mode,
                            algorithm: sas[o].params.algorithm,
                            esn: sas[o].params.esn,
                            selectors: vec![sel],
                        }),
                    }
                }
                _ if ike(out) || ike(inbound) => {
                    let k = if ike(out) { "in_sa" } else { "out_sa" };
                    return Err(v.bad(
                        key(k),
                        "a policy with an SA keyed by IKE needs both out_sa and in_sa with \
                         keys = \"ike\" (IKEv2 makes SAs in pairs, RFC 7296 section 2.17)",
                    ));
                }
                _ => {}
            }
        }
        policies.push(Policy {
            name,
            selectors: sel,
            action,
        });
    }
    for (i, u) in used.iter().enumerate() {
        if !u {
            warnings.push(format!(
                "ipsec.sa[{i}] `{}`: no policy names it, so it is never used",
                sas[i].name
            ));
        }
    }
    let spd = Spd {
        policies,
        unmatched,
    };
    // The checks above cover what `Ipsec::new` refuses; this keeps the two from drifting.
    if let Err(e) = Ipsec::new(spd.clone(), &sas, 0) {
        return Err(v.bad("ipsec", e.to_string()));
    }
    let sequence_file = match &f.sequence_file {
        None => Some(sequence_file.to_path_buf()),
        Some(p) if p.as_os_str().is_empty() => {
            warnings.push(
                "sequence_file = \"\": outbound sequence numbers restart at 1 with the \
                 daemon, and the peer drops them as replays until they pass what it saw \
                 (RFC 4303 section 3.3.3)"
                    .to_string(),
            );
            None
        }
        Some(p) => Some(dir.join(p)),
    };
    Ok(IpsecSetup {
        spd,
        sas,
        warnings,
        sequence_file,
        ike_children,
    })
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Transport => "transport",
        Mode::Tunnel => "tunnel",
    }
}

/// `"any"`, an address, or a prefix with no bits set past its length.
fn addr_sel(s: &str) -> Result<AddrSel, String> {
    if s.eq_ignore_ascii_case("any") {
        return Ok(AddrSel::Any);
    }
    let bad = || format!("`{s}` is not \"any\", an address or a prefix");
    let Some((a, l)) = s.split_once('/') else {
        return s.parse().map(AddrSel::addr).map_err(|_| bad());
    };
    let a: IpAddr = a.parse().map_err(|_| bad())?;
    let l: u8 = l.parse().map_err(|_| bad())?;
    let host_bits_set = match a {
        IpAddr::V6(x) => l > 128 || u128::from(x).checked_shl(u32::from(l)).unwrap_or(0) != 0,
        IpAddr::V4(x) => l > 32 || u32::from(x).checked_shl(u32::from(l)).unwrap_or(0) != 0,
    };
    if host_bits_set {
        return Err(format!(
            "`{s}`: the length is too long for the address family, or bits are set past it"
        ));
    }
    Ok(AddrSel::Prefix(a, l))
}

/// A number in 0..=255 given as such.
fn byte(x: i64) -> Result<u8, String> {
    u8::try_from(x).map_err(|_| format!("{x} is not between 0 and 255"))
}

/// `proto`: a name, `"any"` (no selector), or a number.
fn proto_number(x: &NameOrNumber) -> Result<Option<u8>, String> {
    match x {
        NameOrNumber::Number(n) => byte(*n).map(Some),
        NameOrNumber::Name(s) => match s.to_ascii_lowercase().as_str() {
            "any" => Ok(None),
            "mh" => Ok(Some(PROTO_MH)),
            "icmpv6" => Ok(Some(PROTO_ICMPV6)),
            "tcp" => Ok(Some(PROTO_TCP)),
            "udp" => Ok(Some(PROTO_UDP)),
            "sctp" => Ok(Some(PROTO_SCTP)),
            _ => Err(format!(
                "`{s}`: must be \"mh\", \"icmpv6\", \"tcp\", \"udp\", \"sctp\", \"any\" or a number"
            )),
        },
    }
}

/// A Mobility Header type by its RFC 6275 section 6.1.2 name (the abbreviations of RFC 4877
/// section 6) or number.
fn mh_type(x: &NameOrNumber) -> Result<u8, String> {
    match x {
        NameOrNumber::Number(n) => byte(*n),
        NameOrNumber::Name(s) => match s.to_ascii_lowercase().as_str() {
            "brr" => Ok(0),
            "hoti" => Ok(1),
            "coti" => Ok(2),
            "hot" => Ok(3),
            "cot" => Ok(4),
            "bu" => Ok(5),
            "back" | "ba" => Ok(6),
            "be" => Ok(7),
            _ => Err(format!(
                "`{s}`: must be brr, hoti, coti, hot, cot, bu, back (or ba), be, or a number"
            )),
        },
    }
}

/// An ICMPv6 type by number, or the Mobile Prefix Solicitation and Advertisement of RFC 6275
/// sections 6.7 and 6.8 (RFC 4877 section 6.3: `MPS`, `MPA`) by name.
fn icmp6_type(x: &NameOrNumber) -> Result<u8, String> {
    match x {
        NameOrNumber::Number(n) => byte(*n),
        NameOrNumber::Name(s) => match s.to_ascii_lowercase().as_str() {
            "mps" => Ok(146),
            "mpa" => Ok(147),
            _ => Err(format!("`{s}`: must be mps, mpa or a number")),
        },
    }
}

/// The effective uid, from `/proc/self/status` (`Uid:` real, effective, saved, filesystem):
/// std has no call for it and this crate leaves raw syscalls to m6t-linux.
/// The effective uid (from /proc/self/status): files owned by the user running the daemon
/// are accepted as well as root's.
pub(crate) fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Reads a key file: a regular file owned by root (or by the user running this, so tests
/// can run unprivileged) that no one else may read, holding `alg.keymat_len()` bytes in hex.
/// Messages name the file, never the key.
fn read_key_file(file: &Path, alg: Algorithm) -> Result<Secret, String> {
    let name = file.display();
    // Refuse what is not a regular file before opening it: opening a FIFO would block.
    let md = std::fs::metadata(file).map_err(|e| format!("key file {name}: {e}"))?;
    if !md.is_file() {
        return Err(format!("key file {name} is not a regular file"));
    }
    let mut fh = std::fs::File::open(file).map_err(|e| format!("key file {name}: {e}"))?;
    // The checks that matter are on what was opened, not on what the name pointed to before.
    let md = fh.metadata().map_err(|e| format!("key file {name}: {e}"))?;
    if !md.is_file() {
        return Err(format!("key file {name} is not a regular file"));
    }
    if md.uid() != 0 && Some(md.uid()) != effective_uid() {
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
    let mut text = Secret(Vec::with_capacity(256));
    (&mut fh)
        .take(MAX_KEY_FILE + 1)
        .read_to_end(&mut text.0)
        .map_err(|e| format!("key file {name}: {e}"))?;
    if text.0.len() as u64 > MAX_KEY_FILE {
        return Err(format!(
            "key file {name} is longer than {MAX_KEY_FILE} bytes: not a key in hex"
        ));
    }
    let key = decode_hex(&text.0).map_err(|m| format!("key file {name}: {m}"))?;
    let want = alg.keymat_len();
    if key.0.len() != want {
        return Err(format!(
            "key file {name} holds {} bytes of key material, {} needs {want} ({})",
            key.0.len(),
            alg.name(),
            keymat_layout(alg)
        ));
    }
    Ok(key)
}

/// What the key material of `alg` is made of ([`Algorithm::keymat_len`]).
fn keymat_layout(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::AesGcm128 => "16-byte AES key, then 4-byte salt",
        Algorithm::AesGcm256 => "32-byte AES key, then 4-byte salt",
        Algorithm::AesCbc128HmacSha256 => "16-byte AES key, then 32-byte HMAC key",
        Algorithm::AesCbc256HmacSha256 => "32-byte AES key, then 32-byte HMAC key",
    }
}

/// Hex digits in any case, whitespace anywhere, one leading `0x`. Errors give positions, not
/// characters: a stray character may be a key digit mistyped.
fn decode_hex(text: &[u8]) -> Result<Secret, String> {
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let body = match text.get(start..start + 2) {
        Some(p) if p.eq_ignore_ascii_case(b"0x") => start + 2,
        _ => start,
    };
    let mut out = Secret(Vec::with_capacity(text.len() / 2));
    let mut high: Option<u8> = None;
    for (at, &b) in text.iter().enumerate().skip(body) {
        if b.is_ascii_whitespace() {
            continue;
        }
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => {
                return Err(format!(
                    "byte {} of the file is not a hex digit or whitespace",
                    at + 1
                ))
            }
        };
        match high.take() {
            None => high = Some(d),
            Some(h) => out.0.push(h << 4 | d),
        }
    }
    if high.is_some() {
        return Err("odd number of hex digits".into());
    }
    if out.0.is_empty() {
        return Err("no key in it (hex digits expected)".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsmip_config::{ha_from_str, mn_from_str};
    use m6t_ipsec::{Inbound, IpsecDrop, Outbound};
    use std::os::unix::fs::PermissionsExt;

    /// A scratch directory under the system's temporary directory, removed at the end.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let d =
                std::env::temp_dir().join(format!("m6t-ipsec-config-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }

        /// Writes a key file with `mode`, returning its path.
        fn key(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        }

        /// Where the configuration file is taken to be (never written: only its directory
        /// matters, for relative key files).
        fn conf(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// 48 bytes of aes128-sha256 key material, different for each `seed`.
    fn keymat(seed: u8) -> Vec<u8> {
        (0..48u8).map(|i| i.wrapping_mul(7) ^ seed).collect()
    }

    const HOA: &str = "2001:db8:1::100";
    const HA: &str = "2001:db8:1::1";

    const MN_BASE: &str = "home_address = \"2001:db8:1::100\"\nha_address6 = \"2001:db8:1::1\"\nha_address4 = \"198.51.100.2\"\n[[interfaces]]\nname = \"eth0\"\n";
    const HA_BASE: &str = "address6 = \"2001:db8:1::1\"\naddress4 = \"198.51.100.2\"\nhome_prefix = \"2001:db8:1::/64\"\n";

    /// RFC 4877 section 6.1, mobile node: SPD-S and SAD, line by line (spi_a = 0x1001,
    /// spi_b = 0x1002).
    const MN_IPSEC: &str = r#"
[ipsec]
unmatched = "bypass"

# IF local_address = home_address_1 & remote_address = home_agent_1 & proto = MH &
#    local_mh_type = BU & remote_mh_type = BAck
# Then use SA SA1 (OUT) and SA2 (IN)
[[ipsec.policy]]
name = "bu"
local_address = "2001:db8:1::100"
remote_address = "2001:db8:1::1"
proto = "MH"
local_mh_type = "BU"
remote_mh_type = "BAck"
action = "protect"
out_sa = "SA1"
in_sa = "SA2"

# SA1(OUT, spi_a, home_agent_1, ESP, TRANSPORT)
[[ipsec.sa]]
name = "SA1"
direction = "out"
spi = 0x1001
mode = "transport"
algorithm = "aes128-sha256"
key_file = "sa1.key"

# SA2(IN, spi_b, home_address_1, ESP, TRANSPORT)
[[ipsec.sa]]
name = "SA2"
direction = "in"
spi = 0x1002
mode = "transport"
algorithm = "aes128-sha256"
esn = false
key_file = "sa2.key"
"#;

    /// RFC 4877 section 6.1, home agent.
    const HA_IPSEC: &str = r#"
[ipsec]
# IF local_address = home_agent_1 & remote_address = home_address_1 & proto = MH &
#    local_mh_type = BAck & remote_mh_type = BU
# Then use SA SA2 (OUT) and SA1 (IN)
[[ipsec.policy]]
name = "bu"
local_address = "2001:db8:1::1"
remote_address = "2001:db8:1::100"
proto = "mh"
local_mh_type = "back"
remote_mh_type = "bu"
out_sa = "SA2"
in_sa = "SA1"

# SA2(OUT, spi_b, home_address_1, ESP, TRANSPORT)
[[ipsec.sa]]
name = "SA2"
direction = "out"
spi = 0x1002
algorithm = "aes128-sha256"
key_file = "sa2.key"

# SA1(IN, spi_a, home_agent_1, ESP, TRANSPORT)
[[ipsec.sa]]
name = "SA1"
direction = "in"
spi = 4097
algorithm = "AES128-SHA256"
key_file = "sa1.key"
"#;

    /// The two key files of the RFC 4877 example, shared by both ends.
    fn rfc_keys(d: &TempDir) {
        d.key("sa1.key", &format!("{}\n", hex(&keymat(1))), 0o600);
        d.key("sa2.key", &format!("0x{}\n", hex(&keymat(2))), 0o400);
    }

    fn sa(name: &str, direction: Direction, spi: u32, seed: u8) -> SaConfig {
        SaConfig {
            name: name.into(),
            direction,
            params: SaParams {
                spi,
                mode: Mode::Transport,
                algorithm: Algorithm::AesCbc128HmacSha256,
                esn: false,
            },
            keymat: keymat(seed),
            tunnel: None,
        }
    }

    fn bu_policy(local: &str, remote: &str, send: u8, receive: u8) -> Policy {
        Policy {
            name: "bu".into(),
            selectors: Selectors {
                local: AddrSel::addr(local.parse().unwrap()),
                remote: AddrSel::addr(remote.parse().unwrap()),
                proto: Some(PROTO_MH),
                local_type: Some(send),
                remote_type: Some(receive),
                ..Selectors::ANY
            },
            action: Action::Protect {
                out: Some(0),
                inbound: Some(1),
            },
        }
    }

    #[test]
    fn rfc_4877_6_1_mobile_node_parses_into_its_spd_and_sad() {
        let d = TempDir::new("rfc-mn");
        rfc_keys(&d);
        let m = mn_from_str(&d.conf("mn.toml"), &format!("{MN_BASE}{MN_IPSEC}")).unwrap();
        let want = IpsecSetup {
            spd: Spd {
                policies: vec![bu_policy(HOA, HA, 5, 6)],
                unmatched: Action::Bypass,
            },
            sas: vec![
                sa("SA1", Direction::Out, 0x1001, 1),
                sa("SA2", Direction::In, 0x1002, 2),
            ],
            warnings: vec![],
            sequence_file: Some("/var/lib/m6t/mn-ipsec-seq.json".into()),
            ike_children: vec![],
        };
        assert_eq!(m.ipsec, Some(want));
    }

    #[test]
    fn rfc_4877_6_1_home_agent_parses_into_its_spd_and_sad() {
        let d = TempDir::new("rfc-ha");
        rfc_keys(&d);
        let h = ha_from_str(&d.conf("ha.toml"), &format!("{HA_BASE}{HA_IPSEC}")).unwrap();
        let want = IpsecSetup {
            spd: Spd {
                policies: vec![bu_policy(HA, HOA, 6, 5)],
                unmatched: Action::Bypass,
            },
            sas: vec![
                sa("SA2", Direction::Out, 0x1002, 2),
                sa("SA1", Direction::In, 0x1001, 1),
            ],
            warnings: vec![],
            sequence_file: Some("/var/lib/m6t/ha-ipsec-seq.json".into()),
            ike_children: vec![],
        };
        assert_eq!(h.ipsec, Some(want));
    }

    /// An IPv6 packet from `src` to `dst` carrying a Mobility Header of type `mh_type`.
    fn mh_packet(src: &str, dst: &str, mh_type: u8) -> Vec<u8> {
        let src: std::net::Ipv6Addr = src.parse().unwrap();
        let dst: std::net::Ipv6Addr = dst.parse().unwrap();
        // Payload Proto 59, Header Len 1 (16 bytes), type, reserved, checksum, then the
        // message body and a PadN: IPsec reads only the type.
        let mh = [59, 1, mh_type, 0, 0, 0, 0, 1, 0, 0, 0, 100, 1, 2, 0, 0];
        let mut p = vec![0x60, 0, 0, 0, 0, mh.len() as u8, PROTO_MH, 64];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&mh);
        p
    }

    /// The two translations agree: what the mobile node protects, the home agent opens and
    /// accepts, both ways; an unprotected BU is refused.
    #[test]
    fn the_translated_mobile_node_and_home_agent_talk_to_each_other() {
        let d = TempDir::new("rfc-both");
        rfc_keys(&d);
        let m = mn_from_str(&d.conf("mn.toml"), &format!("{MN_BASE}{MN_IPSEC}")).unwrap();
        let h = ha_from_str(&d.conf("ha.toml"), &format!("{HA_BASE}{HA_IPSEC}")).unwrap();
        let mut mn = m.ipsec.unwrap().install(1).unwrap();
        let mut ha = h.ipsec.unwrap().install(2).unwrap();
        // No sequence file in a unit test: numbers are not reserved on disk.
        mn.reserve_unlimited();
        ha.reserve_unlimited();
        let mut out = Vec::new();

        let bu = mh_packet(HOA, HA, 5);
        assert_eq!(mn.outbound(&bu, &mut out), Outbound::Transport { sa: 0 });
        match ha.inbound_ipv6(&mut out) {
            Inbound::Transport { len, sa, policy } => {
                assert_eq!((sa, policy), (1, 0));
                assert_eq!(&out[..len], &bu[..]);
            }
            other => panic!("BU not accepted: {other:?}"),
        }

        let back = mh_packet(HA, HOA, 6);
        assert_eq!(ha.outbound(&back, &mut out), Outbound::Transport { sa: 0 });
        match mn.inbound_ipv6(&mut out) {
            Inbound::Transport { len, sa, .. } => {
                assert_eq!(sa, 1);
                assert_eq!(&out[..len], &back[..]);
            }
            other => panic!("BAck not accepted: {other:?}"),
        }

        let mut clear = bu.clone();
        assert_eq!(
            ha.inbound_ipv6(&mut clear),
            Inbound::Drop(IpsecDrop::Unprotected)
        );
    }

    #[test]
    fn without_an_ipsec_section_nothing_changes() {
        let m = mn_from_str(Path::new("m"), MN_BASE).unwrap();
        assert_eq!(m.ipsec, None);
        let h = ha_from_str(Path::new("h"), HA_BASE).unwrap();
        assert_eq!(h.ipsec, None);
    }

    /// Protocol names and numbers, ICMPv6 and port selectors, prefixes, tunnel mode, ESN,
    /// an absolute key path, and the GCM, reserved-SPI and unused-SA warnings.
    #[test]
    fn the_other_selectors_tunnel_mode_and_warnings() {
        let d = TempDir::new("other");
        let gcm = d.key("gcm.key", &hex(&[9; 20]), 0o600);
        d.key("cbc.key", &hex(&keymat(3)), 0o600);
        let text = format!(
            r#"{MN_BASE}
[ipsec]
unmatched = "DISCARD"

[[ipsec.policy]]
local_address = "2001:db8:1::100"
remote_address = "2001:db8:1::1"
proto = "icmpv6"
local_icmp6_type = "MPS"
remote_icmp6_type = 147
out_sa = "gcm"

[[ipsec.policy]]
name = "payload"
local_address = "2001:db8:1::/64"
proto = 6
remote_port = 22
in_sa = "tun"

[[ipsec.policy]]
proto = "udp"
local_port = 53
action = "bypass"

[[ipsec.policy]]
proto = "any"
local_mh_type = 5
action = "discard"

[[ipsec.sa]]
name = "gcm"
direction = "out"
spi = 0x100
algorithm = "aes128gcm16"
key_file = "{}"

[[ipsec.sa]]
name = "tun"
direction = "in"
spi = 200
mode = "tunnel"
algorithm = "aes128-sha256"
esn = true
key_file = "cbc.key"
tunnel_local = "198.51.100.2"
tunnel_remote = "192.0.2.10"

[[ipsec.sa]]
name = "spare"
direction = "out"
spi = 0x9999
algorithm = "aes128-sha256"
key_file = "cbc.key"
"#,
            gcm.display()
        );
        // proto = "any" with an MH type is an error (checked below); drop that policy here.
        let ok = text.replace("proto = \"any\"\nlocal_mh_type = 5\n", "proto = \"any\"\n");
        let s = mn_from_str(&d.conf("mn.toml"), &ok).unwrap().ipsec.unwrap();
        assert_eq!(s.spd.unmatched, Action::Discard);
        let p = &s.spd.policies;
        assert_eq!(p[0].name, "policy-0");
        assert_eq!(p[0].selectors.proto, Some(PROTO_ICMPV6));
        assert_eq!(
            (p[0].selectors.local_type, p[0].selectors.remote_type),
            (Some(146), Some(147))
        );
        assert_eq!(
            p[0].action,
            Action::Protect {
                out: Some(0),
                inbound: None
            }
        );
        assert_eq!(
            p[1].selectors.local,
            AddrSel::Prefix("2001:db8:1::".parse().unwrap(), 64)
        );
        assert_eq!(p[1].selectors.remote, AddrSel::Any);
        assert_eq!(
            (p[1].selectors.proto, p[1].selectors.remote_port),
            (Some(PROTO_TCP), Some(22))
        );
        assert_eq!(
            p[1].action,
            Action::Protect {
                out: None,
                inbound: Some(1)
            }
        );
        assert_eq!(p[2].selectors.local_port, Some(53));
        assert_eq!(p[2].action, Action::Bypass);
        assert_eq!(p[3].selectors, Selectors::ANY);
        assert_eq!(p[3].action, Action::Discard);
        let t = &s.sas[1];
        assert_eq!(t.params.mode, Mode::Tunnel);
        assert!(t.params.esn);
        assert_eq!(
            t.tunnel,
            Some(TunnelEnds {
                local: "198.51.100.2".parse().unwrap(),
                remote: "192.0.2.10".parse().unwrap()
            })
        );
        assert_eq!(s.sas[0].keymat, vec![9; 20]);
        assert_eq!(s.warnings.len(), 3, "{:?}", s.warnings);
        assert!(s.warnings.iter().any(|w| w.contains("`gcm`")
            && w.contains("RFC 4106 section 2")
            && w.contains("aes128-sha256")));
        assert!(s
            .warnings
            .iter()
            .any(|w| w.contains("`tun`") && w.contains("SPI 200") && w.contains("reserved")));
        assert!(s
            .warnings
            .iter()
            .any(|w| w.contains("`spare`") && w.contains("no policy")));
        assert!(s.install(7).is_ok());

        let e = mn_from_str(&d.conf("mn.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ipsec.policy[3].local_mh_type`"), "{e}");
    }

    /// Each rule broken once: the error names the file and the key.
    #[test]
    fn every_error_names_the_file_and_the_key() {
        let d = TempDir::new("errors");
        d.key("a.key", &hex(&keymat(1)), 0o600);
        d.key("b.key", &hex(&keymat(2)), 0o600);
        let conf = d.conf("mn.toml");
        let pol = "[[ipsec.policy]]\nproto = \"mh\"\nlocal_mh_type = \"bu\"\nout_sa = \"a\"\nin_sa = \"b\"\n";
        let sa_a = "[[ipsec.sa]]\nname = \"a\"\ndirection = \"out\"\nspi = 0x1001\nalgorithm = \"aes128-sha256\"\nkey_file = \"a.key\"\n";
        let sa_b = "[[ipsec.sa]]\nname = \"b\"\ndirection = \"in\"\nspi = 0x1002\nalgorithm = \"aes128-sha256\"\nkey_file = \"b.key\"\n";
        let good = format!("[ipsec]\n{pol}{sa_a}{sa_b}");
        assert!(mn_from_str(&conf, &format!("{MN_BASE}{good}")).is_ok());
        let cases: Vec<(String, &str, &str)> = vec![
            (
                good.replace("[ipsec]\n", "[ipsec]\nunmatched = \"protect\"\n"),
                "ipsec.unmatched",
                "bypass",
            ),
            (
                good.replace("proto = \"mh\"", "proto = \"tcp\""),
                "ipsec.policy[0].local_mh_type",
                "only with proto = \"mh\"",
            ),
            (
                // Signalling in tunnel mode: the nodes protect BU/BA in transport mode only.
                good.replace(
                    "spi = 0x1001\n",
                    "spi = 0x1001\nmode = \"tunnel\"\ntunnel_local = \"2001:db8:1::100\"\ntunnel_remote = \"2001:db8:1::1\"\n",
                ),
                "ipsec.policy[0].out_sa",
                "in tunnel mode, but signalling",
            ),
            (
                good.replace("proto = \"mh\"\n", ""),
                "ipsec.policy[0].local_mh_type",
                "only with proto = \"mh\"",
            ),
            (
                good.replace("local_mh_type = \"bu\"", "local_icmp6_type = \"mps\""),
                "ipsec.policy[0].local_icmp6_type",
                "only with proto = \"icmpv6\"",
            ),
            (
                good.replace("local_mh_type = \"bu\"", "remote_port = 22"),
                "ipsec.policy[0].remote_port",
                "tcp",
            ),
            (
                good.replace("local_mh_type = \"bu\"", "local_mh_type = \"bogus\""),
                "ipsec.policy[0].local_mh_type",
                "`bogus`",
            ),
            (
                good.replace("local_mh_type = \"bu\"", "local_mh_type = 256"),
                "ipsec.policy[0].local_mh_type",
                "256",
            ),
            (
                good.replace("proto = \"mh\"", "proto = \"gre\""),
                "ipsec.policy[0].proto",
                "`gre`",
            ),
            (
                good.replace("[[ipsec.policy]]\n", "[[ipsec.policy]]\nlocal_address = \"2001:db8:1::5/64\"\n"),
                "ipsec.policy[0].local_address",
                "past it",
            ),
            (
                good.replace("[[ipsec.policy]]\n", "[[ipsec.policy]]\nremote_address = \"home_agent_1\"\n"),
                "ipsec.policy[0].remote_address",
                "`home_agent_1`",
            ),
            (
                good.replace("out_sa = \"a\"", "out_sa = \"nope\""),
                "ipsec.policy[0].out_sa",
                "no [[ipsec.sa]] is named `nope`",
            ),
            (
                good.replace("out_sa = \"a\"", "out_sa = \"b\""),
                "ipsec.policy[0].out_sa",
                "SA `b` is inbound",
            ),
            (
                good.replace("in_sa = \"b\"", "in_sa = \"a\""),
                "ipsec.policy[0].in_sa",
                "SA `a` is outbound",
            ),
            (
                good.replace("out_sa = \"a\"\nin_sa = \"b\"\n", ""),
                "ipsec.policy[0].action",
                "needs out_sa, in_sa or both",
            ),
            (
                good.replace("out_sa = \"a\"", "action = \"bypass\"\nout_sa = \"a\""),
                "ipsec.policy[0].out_sa",
                "only \"protect\" names SAs",
            ),
            (
                good.replace("out_sa = \"a\"\n", "action = \"discard\"\n"),
                "ipsec.policy[0].in_sa",
                "only \"protect\" names SAs",
            ),
            (
                good.replace("out_sa = \"a\"", "action = \"allow\"\nout_sa = \"a\""),
                "ipsec.policy[0].action",
                "\"protect\", \"bypass\" or \"discard\"",
            ),
            (
                format!("{good}{}", pol.replace("proto", "name = \"policy-0\"\nproto")),
                "ipsec.policy[1].name",
                "`policy-0` is also the name of ipsec.policy[0]",
            ),
            (
                good.replace("name = \"b\"", "name = \"a\""),
                "ipsec.sa[1].name",
                "`a` is also the name of ipsec.sa[0]",
            ),
            (
                format!("{good}{}", sa_b.replace("name = \"b\"", "name = \"c\"")),
                "ipsec.sa[2].spi",
                "SPI 0x1002 is also the SPI of inbound ipsec.sa[1] `b`",
            ),
            (
                good.replace("spi = 0x1001", "spi = 0"),
                "ipsec.sa[0].spi",
                "RFC 4303 section 2.1",
            ),
            (
                good.replace("spi = 0x1001", "spi = 0x100000000"),
                "ipsec.sa[0].spi",
                "0xffffffff",
            ),
            (
                good.replace("direction = \"out\"", "direction = \"both\""),
                "ipsec.sa[0].direction",
                "\"out\" or \"in\"",
            ),
            (
                good.replace("spi = 0x1001", "spi = 0x1001\nmode = \"beet\""),
                "ipsec.sa[0].mode",
                "\"transport\" or \"tunnel\"",
            ),
            (
                good.replace("spi = 0x1001", "spi = 0x1001\nmode = \"tunnel\""),
                "ipsec.sa[0].tunnel_local",
                "needs tunnel_local and tunnel_remote",
            ),
            (
                good.replace("spi = 0x1001", "spi = 0x1001\nmode = \"tunnel\"\ntunnel_local = \"192.0.2.1\""),
                "ipsec.sa[0].tunnel_remote",
                "needs tunnel_local and tunnel_remote",
            ),
            (
                good.replace("spi = 0x1001", "spi = 0x1001\nmode = \"tunnel\"\ntunnel_local = \"192.0.2.1\"\ntunnel_remote = \"2001:db8::1\""),
                "ipsec.sa[0].tunnel_remote",
                "same family",
            ),
            (
                good.replace("spi = 0x1001", "spi = 0x1001\ntunnel_local = \"192.0.2.1\""),
                "ipsec.sa[0].tunnel_local",
                "only for mode = \"tunnel\"",
            ),
            (
                good.replace("algorithm = \"aes128-sha256\"\nkey_file = \"a.key\"", "algorithm = \"3des\"\nkey_file = \"a.key\""),
                "ipsec.sa[0].algorithm",
                "aes128gcm16, aes256gcm16, aes128-sha256, aes256-sha256",
            ),
            (
                good.replace("key_file = \"a.key\"", "key_file = \"missing.key\""),
                "ipsec.sa[0].key_file",
                "missing.key",
            ),
            (
                good.replace("key_file = \"a.key\"", "key_file = \".\""),
                "ipsec.sa[0].key_file",
                "is not a regular file",
            ),
        ];
        for (ipsec, key, what) in cases {
            let e = mn_from_str(&conf, &format!("{MN_BASE}{ipsec}"))
                .unwrap_err()
                .to_string();
            let file = format!("config {}: key `{key}`: ", conf.display());
            assert!(e.starts_with(&file), "{e}\n(wanted {file})");
            assert!(e.contains(what), "{e}\n(wanted {what})");
        }
        // The home agent's file goes through the same code.
        let e = ha_from_str(
            &d.conf("ha.toml"),
            &format!("{HA_BASE}{}", good.replace("spi = 0x1001", "spi = 0")),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ha.toml: key `ipsec.sa[0].spi`"), "{e}");
        // Unknown keys are refused by the parser, named with their entry, the keys allowed
        // there and their line.
        let e = mn_from_str(
            &conf,
            &format!(
                "{MN_BASE}{}",
                good.replace("spi = 0x1001", "spi = 0x1001\nkey = \"00\"")
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("mn.toml: key `ipsec.sa[0].key`: unknown key; allowed here: name, ")
                && e.contains("key_file")
                && e.ends_with("(line 16)"),
            "{e}"
        );
    }

    /// What the parser refuses in `[ipsec]` (types, missing and unknown keys) is named down to
    /// the array entry, before any key file is read.
    #[test]
    fn parse_errors_in_the_section_name_the_entry() {
        let sa = "[[ipsec.sa]]\nname = \"a\"\ndirection = \"out\"\nspi = 0x1001\nalgorithm = \"aes128-sha256\"\nkey_file = \"a.key\"\n";
        let e = |t: &str| {
            ha_from_str(Path::new("ha.toml"), &format!("{HA_BASE}[ipsec]\n{t}"))
                .unwrap_err()
                .to_string()
        };
        let f = |t: &str| {
            mn_from_str(Path::new("mn.toml"), &format!("{MN_BASE}[ipsec]\n{t}"))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e(&format!("{sa}{}", sa.replace("0x1001", "\"0x1002\""))),
            "config ha.toml: key `ipsec.sa[1].spi`: invalid type: string \"0x1002\", expected \
             i64 (line 14)"
        );
        assert_eq!(
            f(&format!("{sa}{}", sa.replace("name = \"a\"\n", ""))),
            "config mn.toml: key `ipsec.sa[1].name`: missing (required)"
        );
        assert_eq!(
            e("[[ipsec.policy]]\nproto = \"mh\"\nout_sa = \"a\"\nout_spi = 1\n"),
            "config ha.toml: key `ipsec.policy[0].out_spi`: unknown key; allowed here: name, \
             local_address, remote_address, proto, local_mh_type, remote_mh_type, \
             local_icmp6_type, remote_icmp6_type, local_port, remote_port, action, out_sa, \
             in_sa (line 8)"
        );
        assert_eq!(
            f("[[ipsec.policy]]\nproto = 1.5\n"),
            "config mn.toml: key `ipsec.policy[0].proto`: invalid type: floating point `1.5`, \
             expected a name (string) or a number (line 8)"
        );
        // An unknown key named like its table is still put inside it.
        assert!(
            f("ipsec = 1\n").starts_with("config mn.toml: key `ipsec.ipsec`: unknown key; "),
            "{}",
            f("ipsec = 1\n")
        );
        let u = f("unmatch = \"discard\"\n");
        assert!(
            u.starts_with(
                "config mn.toml: key `ipsec.unmatch`: unknown key; allowed here: unmatched, \
                 policy, sa, "
            ) && u.ends_with("(line 7)"),
            "{u}"
        );
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let d = TempDir::new("mode");
        let conf = d.conf("ha.toml");
        for mode in [0o644, 0o640, 0o604, 0o700, 0o4600] {
            let f = d.key("sa1.key", &hex(&keymat(1)), mode);
            let e = read_key_file(&f, Algorithm::AesCbc128HmacSha256).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "key file {} is mode {mode:04o}: must be 0600 (readable by root only)",
                    f.display()
                )
            );
        }
        d.key("sa1.key", &hex(&keymat(1)), 0o644);
        let text = format!(
            "{HA_BASE}[ipsec]\n[[ipsec.policy]]\nproto = \"mh\"\nin_sa = \"SA1\"\n[[ipsec.sa]]\nname = \"SA1\"\ndirection = \"in\"\nspi = 0x1001\nalgorithm = \"aes128-sha256\"\nkey_file = \"sa1.key\"\n"
        );
        let e = ha_from_str(&conf, &text).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "config {}: key `ipsec.sa[0].key_file`: key file {} is mode 0644: must be 0600 (readable by root only)",
                conf.display(),
                d.0.join("sa1.key").display()
            )
        );
        d.key("sa1.key", &hex(&keymat(1)), 0o400);
        assert!(ha_from_str(&conf, &text).is_ok());
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused_without_showing_it() {
        let d = TempDir::new("length");
        let key = [0xa5u8; 20];
        let f = d.key("k", &hex(&key), 0o600);
        let e = read_key_file(&f, Algorithm::AesCbc128HmacSha256).unwrap_err();
        assert_eq!(
            e,
            format!(
                "key file {} holds 20 bytes of key material, aes128-sha256 needs 48 \
                 (16-byte AES key, then 32-byte HMAC key)",
                f.display()
            )
        );
        assert!(!e.to_lowercase().contains("a5"), "{e}");
        let e = read_key_file(&f, Algorithm::AesGcm256).unwrap_err();
        assert!(
            e.contains("holds 20 bytes") && e.contains("needs 36"),
            "{e}"
        );
        assert!(read_key_file(&f, Algorithm::AesGcm128).is_ok());
        // Nor does a stray character show the digits around it.
        let f = d.key("k", "a5a5a5a5 a5zz", 0o600);
        let e = read_key_file(&f, Algorithm::AesGcm128).unwrap_err();
        assert!(
            e.ends_with("byte 12 of the file is not a hex digit or whitespace"),
            "{e}"
        );
        assert!(!e.to_lowercase().contains("a5"), "{e}");
        let f = d.key("k", &"ab".repeat(3000), 0o600);
        let e = read_key_file(&f, Algorithm::AesGcm128).unwrap_err();
        assert!(e.contains("longer than 4096 bytes"), "{e}");
    }

    #[test]
    fn hex_keys_may_have_whitespace_a_0x_and_any_case() {
        let ok = |s: &str| decode_hex(s.as_bytes()).map(|k| k.0.clone());
        assert_eq!(ok("00112233"), Ok(vec![0, 0x11, 0x22, 0x33]));
        assert_eq!(
            ok("  0x00 11\n22\t3a BC\r\n"),
            Ok(vec![0, 0x11, 0x22, 0x3a, 0xbc])
        );
        assert_eq!(ok("0XaBcD"), Ok(vec![0xab, 0xcd]));
        assert_eq!(ok("a b c d"), Ok(vec![0xab, 0xcd]));
        assert_eq!(ok("abc"), Err("odd number of hex digits".into()));
        assert_eq!(ok("0x"), Err("no key in it (hex digits expected)".into()));
        assert_eq!(ok("\n"), Err("no key in it (hex digits expected)".into()));
        assert!(ok("00 0x11").is_err(), "0x only at the start");
        assert!(ok("ab-cd").is_err());
        // xxd -p as the README makes it: one line, then a newline.
        let xxd = format!("{}\n", hex(&keymat(4)));
        assert_eq!(ok(&xxd), Ok(keymat(4)));
    }

    /// The two examples of the README's "IPsec with manual keys" parse into the RFC 4877
    /// section 6.1 setups above, with keys as `xxd -p` and `od -An -v -tx1` write them.
    #[test]
    fn the_readme_examples_are_the_rfc_example() {
        let readme = include_str!("../../../README.md");
        let at = readme
            .find("### IPsec with manual keys")
            .expect("README section");
        let blocks: Vec<&str> = readme[at..]
            .split("```toml\n")
            .skip(1)
            .take(2)
            .map(|b| b.split("```").next().unwrap_or(""))
            .collect();
        assert_eq!(blocks.len(), 2);
        let d = TempDir::new("readme");
        d.key("sa1.key", &format!("{}\n", hex(&keymat(1))), 0o600);
        let od: String = keymat(2)
            .chunks(16)
            .map(|l| l.iter().map(|b| format!(" {b:02x}")).collect::<String>() + "\n")
            .collect();
        d.key("sa2.key", &od, 0o600);
        let keys = format!("{}/", d.0.display());
        let m = mn_from_str(
            &d.conf("mn.toml"),
            &format!("{MN_BASE}{}", blocks[0].replace("/etc/m6t/keys/", &keys)),
        )
        .unwrap();
        let h = ha_from_str(
            &d.conf("ha.toml"),
            &format!("{HA_BASE}{}", blocks[1].replace("/etc/m6t/keys/", &keys)),
        )
        .unwrap();
        let mn = m.ipsec.unwrap();
        let ha = h.ipsec.unwrap();
        assert_eq!(mn.spd.policies, vec![bu_policy(HOA, HA, 5, 6)]);
        assert_eq!(ha.spd.policies, vec![bu_policy(HA, HOA, 6, 5)]);
        assert_eq!(
            mn.sas,
            vec![
                sa("SA1", Direction::Out, 0x1001, 1),
                sa("SA2", Direction::In, 0x1002, 2)
            ]
        );
        assert_eq!(
            ha.sas,
            vec![
                sa("SA2", Direction::Out, 0x1002, 2),
                sa("SA1", Direction::In, 0x1001, 1)
            ]
        );
        assert!(mn.warnings.is_empty() && ha.warnings.is_empty());
    }

    #[test]
    fn debug_output_shows_no_key() {
        let d = TempDir::new("debug");
        rfc_keys(&d);
        let m = mn_from_str(&d.conf("mn.toml"), &format!("{MN_BASE}{MN_IPSEC}")).unwrap();
        let s = format!("{m:?}");
        for k in [keymat(1), keymat(2)] {
            assert!(!s.contains(&hex(&k[..8])), "{s}");
            assert!(!s.contains(&format!("{:?}", &k[..4])), "{s}");
        }
        assert!(s.contains("not shown"), "{s}");
        let sec = decode_hex(b"0102").unwrap();
        assert_eq!(format!("{sec:?}"), "<2 bytes, not shown>");
    }
}
