//! Configuration files (TOML) of the DSMIPv6 home agent (`m6t ha`) and mobile node
//! (`m6t mn`), validated with errors naming the key. Defaults are the RFC 5555 / RFC 6275
//! values the README lists.

use crate::config::{parse, read, ConfigError, V};
use crate::ike_config::{ike_setup, IkeFile, IkeSetup};
use crate::ipsec_config::{ipsec_setup, IpsecFile, IpsecSetup};
use m6t_proto::dsmip::binding_cache::HaConfig;
use m6t_proto::dsmip::mobile_node::BuDetection;
use m6t_proto::dsmip::update_list::{Ipv4HoaRequest, MnConfig};
use m6t_proto::dsmip::NetPrefix;
use m6t_wire::Ipv6Prefix;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn d_ha_iface() -> String {
    "mip6ha0".into()
}
fn d_mn_iface() -> String {
    "mip6mn0".into()
}
fn d_offload() -> bool {
    true
}

fn d_mtu() -> u16 {
    1400
}
// The machine values default to the machines' own `Default`s (one place for each value);
// the driver-only ones (interface names, TUN MTU, metrics, tables, paths) are here.
fn d_max_lifetime() -> f64 {
    HaConfig::default().max_lifetime.as_secs_f64()
}
fn d_max_bindings() -> usize {
    HaConfig::default().max_bindings
}
fn d_nat_keepalive() -> u32 {
    HaConfig::default().nat_keepalive
}
fn d_accept_force_udp() -> bool {
    HaConfig::default().accept_force_udp
}
fn d_accept_tlv() -> bool {
    HaConfig::default().accept_tlv
}
fn d_accept_unprotected() -> bool {
    HaConfig::default().accept_unprotected
}
fn d_force_udp() -> bool {
    MnConfig::default().force_udp
}
fn d_request_tlv() -> bool {
    MnConfig::default().request_tlv
}
fn d_metric() -> u32 {
    1024
}
fn d_state_file() -> PathBuf {
    "/var/lib/m6t/ha-bindings.json".into()
}
fn d_ha_socket() -> PathBuf {
    "/run/m6t/ha.sock".into()
}
fn d_mn_socket() -> PathBuf {
    "/run/m6t/mn.sock".into()
}
fn d_lifetime() -> f64 {
    (u64::from(MnConfig::default().lifetime) * 4) as f64
}
fn d_v4hoa() -> String {
    match MnConfig::default().ipv4_hoa {
        Ipv4HoaRequest::None => "none".into(),
        Ipv4HoaRequest::Dynamic => "dynamic".into(),
        Ipv4HoaRequest::Static(a) => a.to_string(),
    }
}
fn d_table() -> u32 {
    206
}
fn d_rule_priority() -> u32 {
    1000
}

/// One mobile node the home agent knows (static IPv4 home address, prefix rights).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobileNodeEntry {
    /// Its IPv6 home address.
    pub home_address: Ipv6Addr,
    /// Its static IPv4 home address or prefix ("198.51.100.5" or "198.51.100.64/28").
    pub ipv4_home_address: Option<String>,
    /// Whether it may hold an IPv4 prefix (P flag, RFC 5555 section 3.1.1).
    #[serde(default)]
    pub ipv4_prefix_allowed: bool,
    /// A mobile router (RFC 3963): its BUs with the R flag are accepted.
    #[serde(default)]
    pub router: bool,
    /// The mobile network prefixes the router may register (IPv6 and IPv4; the Prefix
    /// Table of RFC 3963 section 6.1.2), bound in implicit mode.
    #[serde(default)]
    pub mobile_network_prefixes: Vec<String>,
}

/// Parses a list of mobile network prefixes (for key `key`): IPv6 or IPv4, not empty,
/// neither link-local nor multicast, each listed once.
fn mobile_network(v: &V, key: &str, list: &[String]) -> Result<Vec<NetPrefix>, ConfigError> {
    let mut out: Vec<NetPrefix> = Vec::new();
    for p in list {
        let n: NetPrefix = p
            .parse()
            .map_err(|e| v.bad(key, format!("`{p}` is not a prefix: {e}")))?;
        let bad = match n.addr() {
            IpAddr::V6(a) => a.is_multicast() || (a.segments()[0] & 0xffc0) == 0xfe80,
            IpAddr::V4(a) => a.is_multicast() || a.is_loopback(),
        };
        if n.is_empty() || bad {
            return Err(v.bad(key, format!("`{p}` cannot be a mobile network")));
        }
        if let Some(o) = out.iter().find(|o| o.overlaps(&n)) {
            return Err(v.bad(key, format!("`{p}` overlaps `{o}`")));
        }
        out.push(n);
    }
    Ok(out)
}

/// The home agent's file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaFile {
    /// The home agent's IPv6 address (destination of BUs).
    pub address6: Ipv6Addr,
    /// The home agent's IPv4 address (UDP 4191 and IP-in-IP).
    pub address4: Ipv4Addr,
    /// The home prefix the IPv6 home addresses belong to.
    pub home_prefix: Ipv6Prefix,
    /// The home link: bound home addresses are answered for here (proxy ND / ARP).
    pub home_link: Option<String>,
    /// TUN interface carrying the mobile nodes' traffic.
    #[serde(default = "d_ha_iface")]
    pub interface: String,
    /// Its MTU.
    #[serde(default = "d_mtu")]
    pub mtu: u16,
    /// TUN segmentation and coalescing offload (virtio-net header, TSO): one read for a
    /// 64 KiB TCP super-packet, one write for many segments.
    #[serde(default = "d_offload")]
    pub offload: bool,
    /// Longest lifetime granted, seconds.
    #[serde(default = "d_max_lifetime")]
    pub max_lifetime: f64,
    /// NAT keep-alive refresh time sent in NAT Detection, seconds (NATKATIMEOUT).
    #[serde(default = "d_nat_keepalive")]
    pub nat_keepalive: u32,
    /// Most bindings at once; a BU for a new home address beyond it gets status 130.
    #[serde(default = "d_max_bindings")]
    pub max_bindings: usize,
    /// Accept the F flag (force UDP); refused with status 144 otherwise.
    #[serde(default = "d_accept_force_udp")]
    pub accept_force_udp: bool,
    /// Accept the TLV-header format (T flag).
    #[serde(default = "d_accept_tlv")]
    pub accept_tlv: bool,
    /// Accept BUs not protected by ESP (RFC 5555 section 5 requires ESP; only for tests).
    #[serde(default = "d_accept_unprotected")]
    pub accept_unprotected: bool,
    /// Dynamic IPv4 home addresses: addresses or prefixes ("198.51.100.16/28").
    #[serde(default)]
    pub ipv4_pool: Vec<String>,
    /// Metric of the routes to bound home addresses.
    #[serde(default = "d_metric")]
    pub route_metric: u32,
    /// Where the binding cache is saved across restarts ("" to keep it in memory only).
    #[serde(default = "d_state_file")]
    pub state_file: PathBuf,
    /// Control socket for `m6t status`.
    #[serde(default = "d_ha_socket")]
    pub control_socket: PathBuf,
    /// Known mobile nodes.
    #[serde(default)]
    pub mobile_node: Vec<MobileNodeEntry>,
    /// Prometheus metrics over HTTP on this address and port (`GET /metrics`); absent:
    /// no metrics server. Any TOML value, so that a wrong type names the key too.
    pub metrics_listen: Option<toml::Value>,
    /// The user to run as once started (`user = "name"`); absent: root. Any TOML value,
    /// so that a wrong type names the key too.
    pub user: Option<toml::Value>,
    /// Datagrams per second one IPv4 source may send to the UDP ports (4191, 4500) that
    /// are neither a binding's tunnel nor a bound node's authenticated ESP, enforced by the
    /// kernel (an eBPF socket filter) before the home agent reads them; 0: no budget.
    #[serde(default = "d_source_rate")]
    pub source_packet_rate: u32,
    /// Datagrams above `source_packet_rate` one source may send at once.
    #[serde(default = "d_source_burst")]
    pub source_packet_burst: u32,
    /// SPD and SAD with manual keys (RFC 4877 section 6); absent: no IPsec.
    pub ipsec: Option<IpsecFile>,
    /// IKEv2 for the SAs of `[ipsec]` with `keys = "ike"` (RFC 4877 section 4).
    pub ike: Option<IkeFile>,
}

fn d_source_rate() -> u32 {
    HA_SOURCE_PACKET_RATE
}
fn d_source_burst() -> u32 {
    HA_SOURCE_PACKET_BURST
}

/// Default `source_packet_rate` of the home agent: what a source that is not (yet) a
/// bound node's sends is signalling (BUs, IKE exchanges, keep-alives, the first ESP of a
/// new NAT mapping), a few datagrams a second per node even for many nodes behind one NAT;
/// a flood keeps at most this. IKE_SA_INIT has its own, lower, budget behind it.
pub const HA_SOURCE_PACKET_RATE: u32 = 1_000;
/// Default `source_packet_burst` of the home agent: two seconds at the default rate (every
/// node behind a NAT registering again after a home agent restart).
pub const HA_SOURCE_PACKET_BURST: u32 = 2_000;

/// A validated home agent configuration.
#[derive(Debug, Clone)]
pub struct Ha {
    /// The protocol module's configuration.
    pub machine: HaConfig,
    /// IPv6 address.
    pub address6: Ipv6Addr,
    /// IPv4 address.
    pub address4: Ipv4Addr,
    /// Home link interface.
    pub home_link: Option<String>,
    /// TUN name.
    pub interface: String,
    /// TUN MTU.
    pub mtu: u16,
    /// TUN offload.
    pub offload: bool,
    /// Route metric.
    pub route_metric: u32,
    /// Binding cache file.
    pub state_file: Option<PathBuf>,
    /// Control socket.
    pub control_socket: PathBuf,
    /// Where the Prometheus metrics are served (`metrics_listen`); `None`: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The user to run as once started (`user`); `None`: stays root.
    pub user: Option<m6t_linux::caps::RunAs>,
    /// The `[ipsec]` section, validated (keys read); `None` when absent.
    pub ipsec: Option<IpsecSetup>,
    /// The `[ike]` section, validated; `None` when absent.
    pub ike: Option<IkeSetup>,
    /// The kernel's per-source packet budget (`source_packet_rate`, `source_packet_burst`):
    /// `(rate, burst)`, `None` when `source_packet_rate = 0`.
    pub source_limit: Option<(u32, u32)>,
}

fn v4_prefix(s: &str) -> Option<(Ipv4Addr, u8)> {
    match s.split_once('/') {
        Some((a, l)) => {
            let l: u8 = l.parse().ok()?;
            (1..=32).contains(&l).then_some(())?;
            Some((a.parse().ok()?, l))
        }
        None => Some((s.parse().ok()?, 32)),
    }
}

/// Reads and validates a home agent file.
pub fn load_ha(path: &Path) -> Result<Ha, ConfigError> {
    ha_from_str(path, &read(path)?)
}

/// Validates a home agent file's text. `path` names it in errors, and relative `key_file`s of
/// its `[ipsec]` section are read from its directory.
pub fn ha_from_str(path: &Path, text: &str) -> Result<Ha, ConfigError> {
    let f: HaFile = parse(path, text)?;
    let v = V { path };
    v.iface(&f.interface)?;
    let mtu = v.mtu(f.mtu)?;
    let max_lifetime = v.secs("max_lifetime", f.max_lifetime, 4.0, 262_140.0)?;
    if f.nat_keepalive == 0 {
        return Err(v.bad("nat_keepalive", "must be at least 1 second"));
    }
    if !(1..=10_000_000).contains(&f.max_bindings) {
        return Err(v.bad("max_bindings", "must be between 1 and 10000000"));
    }
    if !f.home_prefix.contains(f.address6) {
        return Err(v.bad("address6", "must be inside home_prefix"));
    }
    let mut pool = Vec::new();
    for p in &f.ipv4_pool {
        let (a, l) = v4_prefix(p).ok_or_else(|| {
            v.bad(
                "ipv4_pool",
                format!("`{p}` is not an IPv4 address or prefix"),
            )
        })?;
        if l < 16 {
            return Err(v.bad("ipv4_pool", format!("`{p}`: prefixes longer than /16 only")));
        }
        let base = u32::from(a) & (u32::MAX << (32 - u32::from(l)).min(31));
        let n = 1u32 << (32 - u32::from(l));
        for i in 0..n {
            let x = Ipv4Addr::from(base + i);
            // A /31 or /32 is all usable; otherwise skip the network and broadcast ones.
            if l < 31 && (i == 0 || i == n - 1) {
                continue;
            }
            if x != f.address4 {
                pool.push(x);
            }
        }
    }
    let mut machine = HaConfig::new(f.home_prefix);
    machine.max_lifetime = max_lifetime;
    machine.nat_keepalive = f.nat_keepalive;
    machine.max_bindings = f.max_bindings;
    machine.accept_force_udp = f.accept_force_udp;
    machine.accept_tlv = f.accept_tlv;
    machine.accept_unprotected = f.accept_unprotected;
    let mut statics = BTreeMap::new();
    let mut holders = BTreeSet::new();
    for (i, m) in f.mobile_node.iter().enumerate() {
        let key = |k: &str| format!("mobile_node[{i}].{k}");
        if !f.home_prefix.contains(m.home_address) {
            return Err(v.bad(
                key("home_address"),
                format!("{} is not inside home_prefix", m.home_address),
            ));
        }
        if let Some(s) = &m.ipv4_home_address {
            let p = v4_prefix(s).ok_or_else(|| {
                v.bad(
                    key("ipv4_home_address"),
                    format!("`{s}` is not an IPv4 address or prefix"),
                )
            })?;
            if p.1 < 32 && !m.ipv4_prefix_allowed {
                return Err(v.bad(
                    key("ipv4_home_address"),
                    "a prefix needs ipv4_prefix_allowed = true",
                ));
            }
            pool.retain(|a| *a != p.0);
            if statics.insert(m.home_address, p).is_some() {
                return Err(v.bad(
                    key("home_address"),
                    format!("{} listed twice", m.home_address),
                ));
            }
        }
        if m.ipv4_prefix_allowed {
            holders.insert(m.home_address);
        }
        let mnp = mobile_network(
            &v,
            &key("mobile_network_prefixes"),
            &m.mobile_network_prefixes,
        )?;
        if !m.router && !mnp.is_empty() {
            return Err(v.bad(key("mobile_network_prefixes"), "needs router = true"));
        }
        if m.router {
            // One owner per prefix: a packet to the mobile network has one tunnel.
            for (other, theirs) in &machine.routers {
                if let Some(p) = mnp.iter().find(|p| theirs.iter().any(|q| q.overlaps(p))) {
                    return Err(v.bad(
                        key("mobile_network_prefixes"),
                        format!("`{p}` overlaps a prefix of mobile router {other}"),
                    ));
                }
            }
            machine.routers.insert(m.home_address, mnp);
        }
    }
    machine.ipv4_pool = pool;
    machine.static_ipv4 = statics;
    machine.prefix_holders = holders;
    let ipsec = f
        .ipsec
        .as_ref()
        .map(|i| ipsec_setup(path, i, Path::new("/var/lib/m6t/ha-ipsec-seq.json")))
        .transpose()?;
    if f.ipsec.as_ref().is_some_and(|i| i.bu_detection.is_some()) {
        return Err(v.bad(
            "ipsec.bu_detection",
            "is the mobile node's (how it routes its own BUs); a home agent has none",
        ));
    }
    let ike = ike_section(
        &v,
        path,
        f.ike.as_ref(),
        f.ipsec.as_ref(),
        ipsec.as_ref(),
        true,
    )?;
    // RFC 4877 section 4.4.1: with IKEv2, the home agent's IKE SAs follow their node.
    machine.key_management = ike.is_some();
    if let Some(h) = &f.home_link {
        if h.is_empty() || h.len() > 15 {
            return Err(v.bad(
                "home_link",
                "must be an interface name of 1 to 15 characters",
            ));
        }
    }
    Ok(Ha {
        machine,
        address6: f.address6,
        address4: f.address4,
        home_link: f.home_link,
        interface: f.interface,
        mtu,
        offload: f.offload,
        route_metric: f.route_metric,
        state_file: (!f.state_file.as_os_str().is_empty()).then_some(f.state_file),
        control_socket: f.control_socket,
        metrics_listen: v.metrics_listen(f.metrics_listen.as_ref())?,
        user: v.user(f.user.as_ref())?,
        source_limit: v.source_limit(f.source_packet_rate, f.source_packet_burst)?,
        ipsec,
        ike,
    })
}

/// An interface the mobile node may use for care-of addresses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MnInterface {
    /// Interface name.
    pub name: String,
    /// Preference: lower is preferred (UMIP's MnIfPreference, 1 is the highest).
    #[serde(default = "d_pref")]
    pub preference: u32,
    /// An externally configured tunnel (UMIP's "Tunnel enabled"): its address is used as
    /// it is, e.g. the m6t client's m6t0.
    #[serde(default)]
    pub tunnel: bool,
}

fn d_pref() -> u32 {
    5
}

/// The mobile node's file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MnFile {
    /// The IPv6 home address.
    pub home_address: Ipv6Addr,
    /// The home agent's IPv6 address (with `ha_address4`; or give `ha_name` or `ha_domain`).
    pub ha_address6: Option<Ipv6Addr>,
    /// The home agent's IPv4 address.
    pub ha_address4: Option<Ipv4Addr>,
    /// The home agent's DNS name (its AAAA and A records).
    pub ha_name: Option<String>,
    /// The home domain: the home agent is found by SRV `mip6ha.ipv6.<domain>`.
    pub ha_domain: Option<String>,
    /// Name servers for `ha_name` / `ha_domain` (default: /etc/resolv.conf).
    #[serde(default)]
    pub nameservers: Vec<std::net::IpAddr>,
    /// "none", "dynamic", or a static IPv4 home address.
    #[serde(default = "d_v4hoa")]
    pub ipv4_home_address: String,
    /// TUN interface carrying the home addresses.
    #[serde(default = "d_mn_iface")]
    pub interface: String,
    /// Its MTU: the most it gets (each registration sizes it to the tunnel and ESP).
    #[serde(default = "d_mtu")]
    pub mtu: u16,
    /// TUN segmentation and coalescing offload (virtio-net header, TSO): one read for a
    /// 64 KiB TCP super-packet, one write for many segments.
    #[serde(default = "d_offload")]
    pub offload: bool,
    /// Lifetime asked for, seconds (sent in units of 4 s).
    #[serde(default = "d_lifetime")]
    pub lifetime: f64,
    /// Ask the home agent to force UDP encapsulation (F flag).
    #[serde(default = "d_force_udp")]
    pub force_udp: bool,
    /// Ask for the TLV-header format (T flag).
    #[serde(default = "d_request_tlv")]
    pub request_tlv: bool,
    /// Routing table holding the default routes into the tunnel for traffic from the home
    /// addresses (selected by "from <home address>" rules).
    #[serde(default = "d_table")]
    pub table: u32,
    /// Priority of those rules.
    #[serde(default = "d_rule_priority")]
    pub rule_priority: u32,
    /// Prefixes also routed into the tunnel in the main table (with the home address as
    /// source): e.g. the correspondents reached only through home.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Control socket for `m6t status`.
    #[serde(default = "d_mn_socket")]
    pub control_socket: PathBuf,
    /// Interfaces for care-of addresses, with preferences.
    pub interfaces: Vec<MnInterface>,
    /// Prometheus metrics over HTTP on this address and port (`GET /metrics`); absent:
    /// no metrics server. Any TOML value, so that a wrong type names the key too.
    pub metrics_listen: Option<toml::Value>,
    /// The user to run as once started (`user = "name"`); absent: root. Any TOML value,
    /// so that a wrong type names the key too.
    pub user: Option<toml::Value>,
    /// SPD and SAD with manual keys (RFC 4877 section 6); absent: no IPsec.
    pub ipsec: Option<IpsecFile>,
    /// IKEv2 for the SAs of `[ipsec]` with `keys = "ike"` (RFC 4877 section 4).
    pub ike: Option<IkeFile>,
    /// Act as a mobile router (RFC 3963): BUs with the R flag, and forwarding between the
    /// tunnel and the mobile network.
    #[serde(default)]
    pub router: bool,
    /// The mobile network behind the router (IPv6 and IPv4 prefixes).
    #[serde(default)]
    pub mobile_network_prefixes: Vec<String>,
    /// "explicit" (the BU lists the prefixes, RFC 3963 section 5.2) or "implicit" (the home
    /// agent knows them).
    #[serde(default = "d_prefix_mode")]
    pub prefix_mode: String,
    /// The home link's prefix: when it is on-link on one of `interfaces`, the node is at
    /// home (RFC 6275 section 11.5.5). Default: the home address's /64.
    pub home_prefix: Option<Ipv6Prefix>,
}

fn d_prefix_mode() -> String {
    "explicit".into()
}

/// Where the mobile node gets its home agent's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaSource {
    /// Configured.
    Addresses,
    /// Through DNS (draft-06 section 2.1), with these name servers (empty: the system's).
    Dns(m6t_linux::dns::HaQuery, Vec<std::net::IpAddr>),
}

/// A validated mobile node configuration.
#[derive(Debug, Clone)]
pub struct Mn {
    /// The protocol module's configuration (home agent addresses unspecified until DNS
    /// answered, when `ha` says DNS).
    pub machine: MnConfig,
    /// Where the home agent's addresses come from.
    pub ha: HaSource,
    /// TUN name.
    pub interface: String,
    /// TUN MTU, the most: each registration sizes it to the tunnel and ESP.
    pub mtu: u16,
    /// TUN offload.
    pub offload: bool,
    /// Policy table.
    pub table: u32,
    /// Rule priority.
    pub rule_priority: u32,
    /// Extra routes (address, length).
    pub routes: Vec<(std::net::IpAddr, u8)>,
    /// Control socket.
    pub control_socket: PathBuf,
    /// Where the Prometheus metrics are served (`metrics_listen`); `None`: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The user to run as once started (`user`); `None`: stays root.
    pub user: Option<m6t_linux::caps::RunAs>,
    /// Interfaces, most preferred first.
    pub interfaces: Vec<MnInterface>,
    /// The `[ipsec]` section, validated (keys read); `None` when absent.
    pub ipsec: Option<IpsecSetup>,
    /// The `[ike]` section, validated; `None` when absent.
    pub ike: Option<IkeSetup>,
    /// How the tunnel module tells a protected BU from payload (`ipsec.bu_detection`).
    pub bu_detection: BuDetection,
    /// The home link's prefix (home detection).
    pub home_prefix: Ipv6Prefix,
}

/// Reads and validates a mobile node file.
pub fn load_mn(path: &Path) -> Result<Mn, ConfigError> {
    mn_from_str(path, &read(path)?)
}

/// Validates a mobile node file's text. `path` names it in errors, and relative `key_file`s of
/// its `[ipsec]` section are read from its directory.
pub fn mn_from_str(path: &Path, text: &str) -> Result<Mn, ConfigError> {
    let f: MnFile = parse(path, text)?;
    let v = V { path };
    v.iface(&f.interface)?;
    let mtu = v.mtu(f.mtu)?;
    let lifetime = v.secs("lifetime", f.lifetime, 4.0, 262_140.0)?;
    let ipv4_hoa = match f.ipv4_home_address.as_str() {
        "none" => Ipv4HoaRequest::None,
        "dynamic" => Ipv4HoaRequest::Dynamic,
        s => Ipv4HoaRequest::Static(s.parse().map_err(|_| {
            v.bad(
                "ipv4_home_address",
                "must be \"none\", \"dynamic\" or an IPv4 address",
            )
        })?),
    };
    if f.interfaces.is_empty() {
        return Err(v.bad("interfaces", "must list at least one interface"));
    }
    let mut ifs = f.interfaces.clone();
    // Checked before sorting, so that the index is the one in the file.
    for (n, i) in ifs.iter().enumerate() {
        if i.name.is_empty() || i.name.len() > 15 || i.name == f.interface {
            return Err(v.bad(
                format!("interfaces[{n}].name"),
                format!("`{}` is not a usable interface name", i.name),
            ));
        }
    }
    ifs.sort_by_key(|i| i.preference);
    let mut routes = Vec::new();
    for r in &f.routes {
        let ok = r
            .parse::<Ipv6Prefix>()
            .ok()
            .map(|p| (std::net::IpAddr::V6(p.addr()), p.len()))
            .or_else(|| v4_prefix(r).map(|(a, l)| (std::net::IpAddr::V4(a), l)));
        routes.push(ok.ok_or_else(|| v.bad("routes", format!("`{r}` is not a prefix")))?);
    }
    if f.table == 0 || f.table == 253 || f.table == 254 || f.table == 255 {
        return Err(v.bad("table", "must not be 0 or a reserved table (253-255)"));
    }
    let ha = match (f.ha_address6, f.ha_address4, &f.ha_name, &f.ha_domain) {
        (Some(_), Some(_), None, None) => HaSource::Addresses,
        (None, None, Some(n), None) => HaSource::Dns(m6t_linux::dns::HaQuery::Name(n.clone()), f.nameservers.clone()),
        (None, None, None, Some(d)) => HaSource::Dns(m6t_linux::dns::HaQuery::Service(d.clone()), f.nameservers.clone()),
        _ => {
            return Err(v.bad(
                "ha_address6",
                "give the home agent as ha_address6 + ha_address4, or ha_name, or ha_domain (one of the three)",
            ))
        }
    };
    let mut machine = MnConfig::new(
        f.home_address,
        f.ha_address6.unwrap_or(Ipv6Addr::UNSPECIFIED),
        f.ha_address4.unwrap_or(Ipv4Addr::UNSPECIFIED),
    );
    machine.ipv4_hoa = ipv4_hoa;
    machine.lifetime = (lifetime.as_secs() / 4).clamp(1, u64::from(u16::MAX)) as u16;
    machine.force_udp = f.force_udp;
    machine.request_tlv = f.request_tlv;
    machine.mobile_network =
        mobile_network(&v, "mobile_network_prefixes", &f.mobile_network_prefixes)?;
    machine.router = f.router;
    machine.explicit_prefixes = match f.prefix_mode.as_str() {
        "explicit" => true,
        "implicit" => false,
        _ => return Err(v.bad("prefix_mode", "must be \"explicit\" or \"implicit\"")),
    };
    if f.router && machine.mobile_network.is_empty() {
        return Err(v.bad(
            "mobile_network_prefixes",
            "a mobile router needs at least one prefix",
        ));
    }
    if !f.router && !machine.mobile_network.is_empty() {
        return Err(v.bad("mobile_network_prefixes", "needs router = true"));
    }
    let ipsec = f
        .ipsec
        .as_ref()
        .map(|i| ipsec_setup(path, i, Path::new("/var/lib/m6t/mn-ipsec-seq.json")))
        .transpose()?;
    let bu_detection = match f.ipsec.as_ref().and_then(|i| i.bu_detection.as_deref()) {
        None | Some("spi") => BuDetection::SpiLookup,
        Some("heuristic") => BuDetection::HeuristicLocking,
        Some(other) => {
            return Err(v.bad(
                "ipsec.bu_detection",
                format!("`{other}` is not \"spi\" or \"heuristic\" (seed 001 section 4.3.2)"),
            ))
        }
    };
    let ike = ike_section(
        &v,
        path,
        f.ike.as_ref(),
        f.ipsec.as_ref(),
        ipsec.as_ref(),
        false,
    )?;
    // RFC 4877 section 4.4.1: the IKE SA runs from the care-of address and follows it.
    machine.key_management = ike.is_some();
    let home_prefix = match f.home_prefix {
        Some(p) if !p.contains(f.home_address) => {
            return Err(v.bad(
                "home_prefix",
                format!("{p} does not hold home_address {}", f.home_address),
            ))
        }
        Some(p) if p.len() == 128 => return Err(v.bad("home_prefix", "must be shorter than /128")),
        Some(p) => p,
        None => {
            let a = u128::from(f.home_address) & !((1u128 << 64) - 1);
            Ipv6Prefix::new(Ipv6Addr::from(a), 64).expect("host bits cleared")
        }
    };
    Ok(Mn {
        home_prefix,
        machine,
        ha,
        interface: f.interface,
        mtu,
        offload: f.offload,
        table: f.table,
        rule_priority: f.rule_priority,
        routes,
        control_socket: f.control_socket,
        metrics_listen: v.metrics_listen(f.metrics_listen.as_ref())?,
        user: v.user(f.user.as_ref())?,
        interfaces: ifs,
        ipsec,
        ike,
        bu_detection,
    })
}

/// `[ike]` if present, and the rule that IKE-keyed SAs need it.
fn ike_section(
    v: &V<'_>,
    path: &Path,
    f: Option<&IkeFile>,
    ipsec_file: Option<&IpsecFile>,
    ipsec: Option<&IpsecSetup>,
    home_agent: bool,
) -> Result<Option<IkeSetup>, ConfigError> {
    match f {
        Some(f) => ike_setup(path, f, ipsec, home_agent).map(Some),
        None => {
            let ike_sa = ipsec_file
                .and_then(|i| i.sa.iter().position(|s| s.keys.eq_ignore_ascii_case("ike")));
            match ike_sa {
                Some(i) => Err(v.bad(
                    format!("ipsec.sa[{i}].keys"),
                    "\"ike\" needs an [ike] section (identities and pre-shared key)",
                )),
                None => Ok(None),
            }
        }
    }
}

/// The lifetime as a duration (for display).
pub fn lifetime_of(m: &MnConfig) -> Duration {
    Duration::from_secs(u64::from(m.lifetime) * 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HA: &str = "address6 = \"2001:db8:1::1\"\naddress4 = \"198.51.100.2\"\nhome_prefix = \"2001:db8:1::/64\"\n";
    const MN: &str = "home_address = \"2001:db8:1::a\"\nha_address6 = \"2001:db8:1::1\"\nha_address4 = \"198.51.100.2\"\n[[interfaces]]\nname = \"eth0\"\n";

    #[test]
    fn ha_defaults_and_pool() {
        let h = ha_from_str(Path::new("h"), &format!("{HA}ipv4_pool = [\"198.51.100.0/29\"]\n[[mobile_node]]\nhome_address = \"2001:db8:1::a\"\nipv4_home_address = \"198.51.100.3\"\n")).unwrap();
        assert_eq!(h.interface, "mip6ha0");
        assert_eq!(h.mtu, 1400);
        assert!(!h.machine.accept_unprotected);
        assert_eq!(h.machine.nat_keepalive, 110);
        // .0 and .7 skipped, .2 is the HA, .3 is static.
        assert_eq!(h.machine.ipv4_pool.len(), 4);
        assert_eq!(
            h.state_file,
            Some(PathBuf::from("/var/lib/m6t/ha-bindings.json"))
        );
        assert_eq!(
            h.source_limit,
            Some((HA_SOURCE_PACKET_RATE, HA_SOURCE_PACKET_BURST))
        );
        let off = ha_from_str(Path::new("h"), &format!("source_packet_rate = 0\n{HA}")).unwrap();
        assert_eq!(off.source_limit, None);
    }

    #[test]
    fn metrics_listen_of_ha_and_mn() {
        let h = ha_from_str(Path::new("h"), HA).unwrap();
        assert_eq!(h.metrics_listen, None);
        let h = ha_from_str(
            Path::new("h"),
            &format!("metrics_listen = \"[::1]:9465\"\n{HA}"),
        )
        .unwrap();
        assert_eq!(h.metrics_listen, Some("[::1]:9465".parse().unwrap()));
        let e = ha_from_str(Path::new("h"), &format!("metrics_listen = \"::1\"\n{HA}"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config h: key `metrics_listen`: "), "{e}");
        let m = mn_from_str(Path::new("m"), MN).unwrap();
        assert_eq!(m.metrics_listen, None);
        let m = mn_from_str(
            Path::new("m"),
            &format!("metrics_listen = \"127.0.0.1:9466\"\n{MN}"),
        )
        .unwrap();
        assert_eq!(m.metrics_listen, Some("127.0.0.1:9466".parse().unwrap()));
        let e = mn_from_str(Path::new("m"), &format!("metrics_listen = 9466\n{MN}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config m: key `metrics_listen`: 9466 is not"),
            "{e}"
        );
    }

    #[test]
    fn ha_errors_name_the_key() {
        for (extra, key) in [
            ("ipv4_pool = [\"x\"]\n", "`ipv4_pool`"),
            ("nat_keepalive = 0\n", "`nat_keepalive`"),
            ("mtu = 100\n", "`mtu`"),
            ("[[mobile_node]]\nhome_address = \"2001:db8:9::a\"\n", "`mobile_node[0].home_address`"),
            ("[[mobile_node]]\nhome_address = \"2001:db8:1::a\"\nipv4_home_address = \"198.51.100.64/28\"\n", "`mobile_node[0].ipv4_home_address`"),
        ] {
            let e = ha_from_str(Path::new("h"), &format!("{HA}{extra}")).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        let e = ha_from_str(Path::new("h"), "address6 = \"2001:db8:1::1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("address4"), "{e}");
    }

    /// Errors the parser finds name the file and the key, array entries with their index.
    #[test]
    fn ha_parse_errors_name_the_file_and_the_key() {
        let e = |t: &str| {
            ha_from_str(Path::new("ha.toml"), t)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e(&format!("{HA}mtu = \"big\"\n")),
            "config ha.toml: key `mtu`: invalid type: string \"big\", expected u16 (line 4)"
        );
        assert_eq!(
            e("address4 = \"198.51.100.2\"\nhome_prefix = \"2001:db8:1::/64\"\n"),
            "config ha.toml: key `address6`: missing (required)"
        );
        let u = e(&format!("{HA}home_links = \"eth1\"\n"));
        assert!(
            u.starts_with(
                "config ha.toml: key `home_links`: unknown key; allowed here: address6, address4, \
                 home_prefix, home_link, "
            ) && u.ends_with("(line 4)"),
            "{u}"
        );
        let mn = "[[mobile_node]]\nhome_address = \"2001:db8:1::a\"\n";
        assert_eq!(
            e(&format!("{HA}{mn}[[mobile_node]]\nhome_address = \"x\"\n")),
            "config ha.toml: key `mobile_node[1].home_address`: invalid IPv6 address syntax \
             (line 7)"
        );
        assert_eq!(
            e(&format!(
                "{HA}{mn}[[mobile_node]]\nipv4_prefix_allowed = true\n"
            )),
            "config ha.toml: key `mobile_node[1].home_address`: missing (required)"
        );
        let u = e(&format!("{HA}{mn}prefix_allowed = true\n"));
        assert!(
            u.starts_with(
                "config ha.toml: key `mobile_node[0].prefix_allowed`: unknown key; allowed here: \
                 home_address, ipv4_home_address, ipv4_prefix_allowed, router, \
                 mobile_network_prefixes (line 6)"
            ),
            "{u}"
        );
        // The checks after parsing index their entries too.
        assert_eq!(
            e(&format!(
                "{HA}{mn}[[mobile_node]]\nhome_address = \"2001:db8:9::a\"\n"
            )),
            "config ha.toml: key `mobile_node[1].home_address`: 2001:db8:9::a is not inside \
             home_prefix"
        );
    }

    #[test]
    fn mobile_routers_of_ha_and_mn() {
        let r = "[[mobile_node]]\nhome_address = \"2001:db8:1::a\"\nrouter = true\n\
                 mobile_network_prefixes = [\"2001:db8:77::/48\", \"198.51.100.96/27\"]\n";
        let h = ha_from_str(Path::new("h"), &format!("{HA}{r}")).unwrap();
        let a: Ipv6Addr = "2001:db8:1::a".parse().unwrap();
        assert_eq!(
            h.machine.routers.get(&a).unwrap(),
            &vec![
                "2001:db8:77::/48".parse().unwrap(),
                "198.51.100.96/27".parse().unwrap()
            ]
        );
        let e = |t: &str| {
            ha_from_str(Path::new("ha.toml"), t)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e(&format!("{HA}{}", r.replace("router = true\n", ""))),
            "config ha.toml: key `mobile_node[0].mobile_network_prefixes`: needs router = true"
        );
        assert_eq!(
            e(&format!("{HA}{}", r.replace("/27", "/33"))),
            "config ha.toml: key `mobile_node[0].mobile_network_prefixes`: `198.51.100.96/33` \
             is not a prefix: length above 32 or host bits set"
        );
        assert_eq!(
            e(&format!(
                "{HA}{}",
                r.replace("198.51.100.96/27", "fe80::/64")
            )),
            "config ha.toml: key `mobile_node[0].mobile_network_prefixes`: `fe80::/64` cannot \
             be a mobile network"
        );
        let second = r
            .replace("::a", "::b")
            .replace("2001:db8:77::/48", "2001:db8:78::/48")
            .replace("96/27", "112/28");
        assert_eq!(
            e(&format!("{HA}{r}{second}")),
            "config ha.toml: key `mobile_node[1].mobile_network_prefixes`: `198.51.100.112/28` \
             overlaps a prefix of mobile router 2001:db8:1::a"
        );
        // The mobile router: explicit by default, implicit on request.
        let top = |extra: &str| MN.replace("[[interfaces]]", &format!("{extra}[[interfaces]]"));
        let mr = "router = true\nmobile_network_prefixes = [\"2001:db8:77::/48\"]\n";
        let m = mn_from_str(Path::new("m"), &top(mr)).unwrap();
        assert!(m.machine.router && m.machine.explicit_prefixes);
        assert_eq!(m.machine.mobile_network.len(), 1);
        let m = mn_from_str(
            Path::new("m"),
            &top(&format!("{mr}prefix_mode = \"implicit\"\n")),
        )
        .unwrap();
        assert!(!m.machine.explicit_prefixes);
        let e = |t: &str| {
            mn_from_str(Path::new("mn.toml"), t)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e(&top("router = true\n")),
            "config mn.toml: key `mobile_network_prefixes`: a mobile router needs at least one \
             prefix"
        );
        assert_eq!(
            e(&top(&format!("{mr}prefix_mode = \"both\"\n"))),
            "config mn.toml: key `prefix_mode`: must be \"explicit\" or \"implicit\""
        );
    }

    #[test]
    fn mn_parse_errors_name_the_file_and_the_key() {
        let e = |t: &str| {
            mn_from_str(Path::new("mn.toml"), t)
                .unwrap_err()
                .to_string()
        };
        let top = |extra: &str| MN.replace("[[interfaces]]", &format!("{extra}[[interfaces]]"));
        assert_eq!(
            e(&top("table = -1\n")),
            "config mn.toml: key `table`: invalid value: integer `-1`, expected u32 (line 4)"
        );
        assert_eq!(
            e(&MN.replace("[[interfaces]]\nname = \"eth0\"\n", "")),
            "config mn.toml: key `interfaces`: missing (required)"
        );
        let u = e(&top("ha_adress4 = \"198.51.100.2\"\n"));
        assert!(
            u.starts_with(
                "config mn.toml: key `ha_adress4`: unknown key; allowed here: home_address, "
            ) && u.ends_with("(line 4)"),
            "{u}"
        );
        assert_eq!(
            e(&format!(
                "{MN}[[interfaces]]\nname = \"wlan0\"\npreference = \"high\"\n"
            )),
            "config mn.toml: key `interfaces[1].preference`: invalid type: string \"high\", \
             expected u32 (line 8)"
        );
        assert_eq!(
            e(&format!("{MN}[[interfaces]]\npreference = 1\n")),
            "config mn.toml: key `interfaces[1].name`: missing (required)"
        );
        assert_eq!(
            e(&format!(
                "{MN}[[interfaces]]\nname = \"wlan0\"\ntunel = true\n"
            )),
            "config mn.toml: key `interfaces[1].tunel`: unknown key; allowed here: name, \
             preference, tunnel (line 8)"
        );
        assert_eq!(
            e(&format!("{MN}[[interfaces]]\nname = \"mip6mn0\"\n")),
            "config mn.toml: key `interfaces[1].name`: `mip6mn0` is not a usable interface name"
        );
    }

    #[test]
    fn mn_defaults_and_errors() {
        let m = mn_from_str(Path::new("m"), MN).unwrap();
        assert_eq!(m.machine.lifetime, 100);
        assert_eq!(m.machine.ipv4_hoa, Ipv4HoaRequest::None);
        assert_eq!(m.table, 206);
        assert_eq!(m.home_prefix.to_string(), "2001:db8:1::/64");
        let hp = |p: &str| {
            mn_from_str(
                Path::new("mn.toml"),
                &MN.replace(
                    "[[interfaces]]",
                    &format!("home_prefix = \"{p}\"\n[[interfaces]]"),
                ),
            )
        };
        assert_eq!(hp("2001:db8::/32").unwrap().home_prefix.len(), 32);
        assert_eq!(
            hp("2001:db8:9::/64").unwrap_err().to_string(),
            "config mn.toml: key `home_prefix`: 2001:db8:9::/64 does not hold home_address \
             2001:db8:1::a"
        );
        let m = mn_from_str(Path::new("m"), &MN.replace("[[interfaces]]", "ipv4_home_address = \"dynamic\"\nroutes = [\"2001:db8:2::/64\", \"198.51.100.128/25\"]\n[[interfaces]]")).unwrap();
        assert_eq!(m.machine.ipv4_hoa, Ipv4HoaRequest::Dynamic);
        assert_eq!(m.routes.len(), 2);
        let by_srv = "home_address = \"2001:db8:1::a\"\nha_domain = \"example.com\"\nnameservers = [\"192.0.2.1\"]\n[[interfaces]]\nname = \"eth0\"\n";
        let m = mn_from_str(Path::new("m"), by_srv).unwrap();
        assert!(
            matches!(m.ha, HaSource::Dns(m6t_linux::dns::HaQuery::Service(ref d), ref s) if d == "example.com" && s.len() == 1)
        );
        for (extra, key) in [
            ("ipv4_home_address = \"maybe\"\n", "`ipv4_home_address`"),
            ("routes = [\"nope\"]\n", "`routes`"),
            ("table = 254\n", "`table`"),
            ("lifetime = 1\n", "`lifetime`"),
            ("ha_name = \"ha.example.com\"\n", "`ha_address6`"),
        ] {
            let e = mn_from_str(
                Path::new("m"),
                &MN.replace("[[interfaces]]", &format!("{extra}[[interfaces]]")),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(key), "{e}");
        }
    }
}
