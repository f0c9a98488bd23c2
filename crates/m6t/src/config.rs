//! Configuration files (TOML) of the client and the gateway, with validation that names the
//! offending key. Every default is the one the README documents, with its draft section.

use m6t_proto::m6t::client::ClientConfig;
use m6t_proto::m6t::gateway::GatewayConfig;
use m6t_wire::{ula, Ipv6Prefix};
use serde::Deserialize;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem, always naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax error: it comes before any key is read, so it has none to name; the
    /// message ends with the line.
    #[error("config {path}: {msg}")]
    Parse {
        /// File.
        path: String,
        /// Parser message.
        msg: String,
    },
    /// A key that is wrong: a value of the wrong type or not acceptable, a required key
    /// missing, an unknown key (the message then lists the keys allowed beside it).
    #[error("config {path}: key `{key}`: {msg}")]
    Invalid {
        /// File.
        path: String,
        /// Offending key: a dotted path, with indices for array entries
        /// (`ipsec.sa[1].key_file`).
        key: String,
        /// What is wrong.
        msg: String,
    },
}

fn d_true() -> bool {
    true
}
fn d_ports() -> Vec<u16> {
    vec![3544]
}
fn d_client_iface() -> String {
    "m6t0".into()
}
fn d_gw_iface() -> String {
    "m6tgw0".into()
}
// The machine values default to the machines' own `Default`s (one place for each value);
// the driver-only ones (interface names, metrics, paths) are here.
fn d_client_mtu() -> u16 {
    ClientConfig::default().mtu
}
fn d_keepalive() -> f64 {
    ClientConfig::default().keepalive_interval.as_secs_f64()
}
fn d_echo_timeout() -> f64 {
    ClientConfig::default().echo_timeout.as_secs_f64()
}
fn d_dead_probes() -> u32 {
    ClientConfig::default().dead_probes
}
fn d_port_timeout() -> f64 {
    ClientConfig::default().port_timeout.as_secs_f64()
}
fn d_client_metric() -> u32 {
    4096
}
fn d_gw_metric() -> u32 {
    1024
}
fn d_claims() -> PathBuf {
    m6t_linux::claims::DEFAULT_DIR.into()
}
fn d_listen() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}
fn d_gw_mtu() -> u16 {
    GatewayConfig::default().mtu
}
fn d_temp() -> f64 {
    GatewayConfig::default().temporary_lifetime.as_secs_f64()
}
fn d_active() -> f64 {
    GatewayConfig::default().active_lifetime.as_secs_f64()
}
fn d_rate() -> u32 {
    GatewayConfig::default().new_state_rate
}
fn d_burst() -> u32 {
    GatewayConfig::default().new_state_burst
}
fn d_per_ip() -> u32 {
    GatewayConfig::default().max_states_per_ipv4
}
fn d_max_states() -> usize {
    GatewayConfig::default().max_states
}
fn d_gw_socket() -> PathBuf {
    "/run/m6t/gateway.sock".into()
}

/// The client's file, as written by the operator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// Gateway IPv4 address (section 3).
    pub gateway: Ipv4Addr,
    /// Gateway UDP ports, tried in order (section 2.1).
    #[serde(default = "d_ports")]
    pub ports: Vec<u16>,
    /// The /80 (section 2.2); or give `ula`, `subnet_id` and `mn_id`.
    pub prefix: Option<Ipv6Prefix>,
    /// ULA /48 from which the /80 is derived.
    pub ula: Option<Ipv6Prefix>,
    /// 16-bit subnet ID (section 2.2).
    pub subnet_id: Option<u16>,
    /// 16-bit MN ID (section 2.2).
    pub mn_id: Option<u16>,
    /// Tunnel interface name.
    #[serde(default = "d_client_iface")]
    pub interface: String,
    /// Tunnel MTU (section 2.6).
    #[serde(default = "d_client_mtu")]
    pub mtu: u16,
    /// Keep-alive interval in seconds (section 2.3).
    #[serde(default = "d_keepalive")]
    pub keepalive_interval: f64,
    /// Seconds to wait for an echo before probing again.
    #[serde(default = "d_echo_timeout")]
    pub echo_timeout: f64,
    /// Unanswered probes before the path is declared dead.
    #[serde(default = "d_dead_probes")]
    pub dead_probes: u32,
    /// Seconds of unanswered data on a fresh address before trying the next port.
    #[serde(default = "d_port_timeout")]
    pub port_timeout: f64,
    /// Metric of the default IPv6 route through the tunnel.
    #[serde(default = "d_client_metric")]
    pub metric: u32,
    /// Script run on every address change.
    pub hook: Option<PathBuf>,
    /// TUN segmentation/coalescing offload (virtio-net header, TSO).
    #[serde(default = "d_true")]
    pub offload: bool,
    /// Control socket path (default `/run/m6t/client-<interface>.sock`).
    pub control_socket: Option<PathBuf>,
    /// Directory of random-value claims shared by tunnel interfaces (section 2.5).
    #[serde(default = "d_claims")]
    pub claims_dir: PathBuf,
    /// Prometheus metrics over HTTP on this address and port (`GET /metrics`); absent:
    /// no metrics server. Any TOML value here, so that a wrong type too gets an error
    /// naming the key (from [`V::metrics_listen`]) rather than a line number.
    pub metrics_listen: Option<toml::Value>,
    /// The user to run as once started (`user = "name"`); absent: root. Any TOML value
    /// here, so that a wrong type too gets an error naming the key (from [`V::user`]).
    pub user: Option<toml::Value>,
}

/// The gateway's file, as written by the operator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// IPv4 address to listen on.
    #[serde(default = "d_listen")]
    pub listen: Ipv4Addr,
    /// UDP ports to listen on, all at once (section 2.1).
    #[serde(default = "d_ports")]
    pub ports: Vec<u16>,
    /// Home-side TUN interface name.
    #[serde(default = "d_gw_iface")]
    pub interface: String,
    /// Tunnel MTU (section 2.6).
    #[serde(default = "d_gw_mtu")]
    pub mtu: u16,
    /// The gateway's own IPv6 address (source of its ICMPv6 errors).
    pub address: Ipv6Addr,
    /// Home agent addresses (section 6.1.3).
    pub ha_addresses: Vec<Ipv6Addr>,
    /// Mobile-node prefixes, routed into the TUN (sections 2.2, 2.4).
    pub mn_prefixes: Vec<Ipv6Prefix>,
    /// Extra allowed destinations (empty: never an open relay).
    #[serde(default)]
    pub allowed_destinations: Vec<Ipv6Prefix>,
    /// Temporary state lifetime, seconds (section 6.1.3).
    #[serde(default = "d_temp")]
    pub temporary_lifetime: f64,
    /// Active state lifetime, seconds (section 6.1.3).
    #[serde(default = "d_active")]
    pub active_lifetime: f64,
    /// New states per second per IPv4 address (section 6.1.3).
    #[serde(default = "d_rate")]
    pub new_state_rate: u32,
    /// Burst of new states per IPv4 address.
    #[serde(default = "d_burst")]
    pub new_state_burst: u32,
    /// Most states per IPv4 address.
    #[serde(default = "d_per_ip")]
    pub max_states_per_ipv4: u32,
    /// Most states in all.
    #[serde(default = "d_max_states")]
    pub max_states: usize,
    /// TUN segmentation/coalescing offload (virtio-net header, TSO).
    #[serde(default = "d_true")]
    pub offload: bool,
    /// Metric of the routes of `mn_prefixes` into the TUN.
    #[serde(default = "d_gw_metric")]
    pub route_metric: u32,
    /// Control socket path.
    #[serde(default = "d_gw_socket")]
    pub control_socket: PathBuf,
    /// Worker threads (each with its own UDP sockets and TUN queue, state sharded by
    /// mobile-node address).
    #[serde(default = "d_workers")]
    pub workers: usize,
    /// Prometheus metrics over HTTP on this address and port (`GET /metrics`); absent:
    /// no metrics server. Any TOML value here, so that a wrong type too gets an error
    /// naming the key (from [`V::metrics_listen`]) rather than a line number.
    pub metrics_listen: Option<toml::Value>,
    /// The user to run as once started (`user = "name"`); absent: root. Any TOML value
    /// here, so that a wrong type too gets an error naming the key (from [`V::user`]).
    pub user: Option<toml::Value>,
    /// Datagrams per second one IPv4 source may send to the gateway's ports that no active
    /// state accepts, enforced by the kernel (an eBPF socket filter) before they reach the
    /// gateway; 0: no budget.
    #[serde(default = "d_source_rate")]
    pub source_packet_rate: u32,
    /// Datagrams above `source_packet_rate` one source may send at once.
    #[serde(default = "d_source_burst")]
    pub source_packet_burst: u32,
}

fn d_workers() -> usize {
    1
}
fn d_source_rate() -> u32 {
    DEFAULT_SOURCE_PACKET_RATE
}
fn d_source_burst() -> u32 {
    DEFAULT_SOURCE_PACKET_BURST
}

/// Default `source_packet_rate`: datagrams per second one IPv4 source may send that no
/// active state accepts (counted by the kernel before the gateway reads them, each datagram
/// of a GRO batch counted). A state's own traffic is never budgeted; what is left for a
/// legitimate sender is the first packets of new states (at most `new_state_rate` of them a
/// second) and traffic a NAT rebinding strands, far below it; a flood keeps at most this.
pub const DEFAULT_SOURCE_PACKET_RATE: u32 = 5_000;
/// Default `source_packet_burst`: a second at the default rate.
pub const DEFAULT_SOURCE_PACKET_BURST: u32 = 5_000;

pub(crate) fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Parses a config file's text into its `*File` struct. Every error that concerns a key names
/// it as a dotted path with array entries counted from 0 (`interfaces[1].name`,
/// `ipsec.sa[0].spi`), from serde_path_to_error, and gives the line from toml's span; only
/// TOML syntax errors, which precede any key, come without one.
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text))
        .map_err(|e| parse_error(path, text, e))
}

/// One line number for a byte offset, counted from 1.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at).map_or(0, |t| t.matches('\n').count()) + 1
}

/// The names between backquotes in a serde message, in order (`unknown field `x`, expected
/// one of `a`, `b``).
fn quoted(msg: &str) -> Vec<&str> {
    msg.split('`').skip(1).step_by(2).collect()
}

fn parse_error(
    path: &Path,
    text: &str,
    e: serde_path_to_error::Error<toml::de::Error>,
) -> ConfigError {
    // The path of the value being read when the error came: "." at the top level.
    let at = e.path().to_string();
    let at = if at == "." { String::new() } else { at };
    let inner = e.into_inner();
    let line = inner
        .span()
        .map(|s| format!(" (line {})", line_of(text, s.start)))
        .unwrap_or_default();
    // One line: a daemon's error is one line on stderr (toml's syntax messages have two).
    let msg = inner.message().trim().replace('\n', "; ");
    let msg = msg.as_str();
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    let path = path.display().to_string();
    // serde's own wording for the two struct errors (serde::de::Error::missing_field and
    // unknown_field), turned into the key they are about: serde_path_to_error gives the
    // path of the table, not of the missing or unknown key.
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let name = rest.trim_end_matches('`');
        return ConfigError::Invalid {
            path,
            key: join(name),
            msg: "missing (required)".into(),
        };
    }
    if msg.starts_with("unknown field `") {
        let names = quoted(msg);
        if let Some((name, allowed)) = names.split_first() {
            // toml hands serde the key before the field name is matched, so the path
            // already ends with the unknown key; joined only if it does not.
            let key = if at == *name || at.ends_with(&format!(".{name}")) {
                at.clone()
            } else {
                join(name)
            };
            let allowed = if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            };
            return ConfigError::Invalid {
                path,
                key,
                msg: format!("unknown key; allowed here: {allowed}{line}"),
            };
        }
    }
    if at.is_empty() {
        return ConfigError::Parse {
            path,
            msg: format!("{msg}{line}"),
        };
    }
    ConfigError::Invalid {
        path,
        key: at,
        msg: format!("{msg}{line}"),
    }
}

pub(crate) struct V<'a> {
    pub(crate) path: &'a Path,
}

impl V<'_> {
    /// `source_packet_rate` and `source_packet_burst` (gateway and home agent): the
    /// kernel's per-source budget as `(rate, burst)`, `None` when the rate is 0.
    pub(crate) fn source_limit(
        &self,
        rate: u32,
        burst: u32,
    ) -> Result<Option<(u32, u32)>, ConfigError> {
        if rate > 100_000_000 {
            return Err(self.bad(
                "source_packet_rate",
                "must be at most 100000000 datagrams/s (0 turns the budget off)",
            ));
        }
        if rate > 0 && !(1..=100_000_000).contains(&burst) {
            return Err(self.bad(
                "source_packet_burst",
                "must be between 1 and 100000000 (set source_packet_rate = 0 to turn the budget off)",
            ));
        }
        Ok((rate > 0).then_some((rate, burst)))
    }

    pub(crate) fn bad(&self, key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.display().to_string(),
            key: key.into(),
            msg: msg.into(),
        }
    }
    pub(crate) fn secs(
        &self,
        key: &'static str,
        v: f64,
        min: f64,
        max: f64,
    ) -> Result<Duration, ConfigError> {
        if !(v.is_finite() && v >= min && v <= max) {
            return Err(self.bad(key, format!("must be between {min} and {max} seconds")));
        }
        Ok(Duration::from_secs_f64(v))
    }
    pub(crate) fn mtu(&self, v: u16) -> Result<u16, ConfigError> {
        if !(1280..=65507).contains(&v) {
            return Err(self.bad("mtu", "must be between 1280 (IPv6 minimum) and 65507"));
        }
        Ok(v)
    }
    fn ports(&self, v: &[u16]) -> Result<(), ConfigError> {
        if v.is_empty() || v.contains(&0) {
            return Err(self.bad("ports", "must list at least one port, none of them 0"));
        }
        let mut s = v.to_vec();
        s.sort_unstable();
        s.dedup();
        if s.len() != v.len() {
            return Err(self.bad("ports", "lists a port twice"));
        }
        Ok(())
    }
    /// `metrics_listen`: an address and a port, the port not 0 (Prometheus needs to know
    /// where to scrape). Parsed here rather than by serde so the error names the key.
    pub(crate) fn metrics_listen(
        &self,
        v: Option<&toml::Value>,
    ) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let Some(v) = v else {
            return Ok(None);
        };
        let s = v.as_str().unwrap_or("");
        match s.parse::<std::net::SocketAddr>() {
            Ok(a) if a.port() != 0 => Ok(Some(a)),
            _ => Err(self.bad(
                "metrics_listen",
                format!(
                    "{v} is not an address and port for the metrics server, e.g. \
                     \"127.0.0.1:9464\" or \"[::1]:9464\" (a string; port not 0)"
                ),
            )),
        }
    }
    /// `user`: the name of an existing user (looked up now, so that a typo stops the daemon
    /// before it opens anything).
    pub(crate) fn user(
        &self,
        v: Option<&toml::Value>,
    ) -> Result<Option<m6t_linux::caps::RunAs>, ConfigError> {
        let Some(v) = v else {
            return Ok(None);
        };
        let name = match v.as_str() {
            Some(s) if !s.is_empty() => s,
            _ => {
                return Err(self.bad(
                    "user",
                    format!("{v} is not a user name (a non-empty string, e.g. \"m6t\")"),
                ))
            }
        };
        match m6t_linux::caps::lookup_user(name) {
            Ok(Some(u)) => Ok(Some(u)),
            Ok(None) => Err(self.bad("user", format!("no user `{name}` on this system"))),
            Err(e) => Err(self.bad("user", format!("looking up `{name}`: {e}"))),
        }
    }
    pub(crate) fn iface(&self, v: &str) -> Result<(), ConfigError> {
        if v.is_empty() || v.len() > 15 || v.contains('/') || v.contains(char::is_whitespace) {
            return Err(self.bad("interface", "must be 1 to 15 characters, no '/' or space"));
        }
        Ok(())
    }
}

/// A validated client configuration.
#[derive(Debug, Clone)]
pub struct Client {
    /// Machine configuration.
    pub machine: ClientConfig,
    /// Gateway IPv4 address.
    pub gateway: Ipv4Addr,
    /// Tunnel interface name.
    pub interface: String,
    /// Default-route metric.
    pub metric: u32,
    /// Hook script.
    pub hook: Option<PathBuf>,
    /// Control socket.
    pub control_socket: PathBuf,
    /// Claims directory.
    pub claims_dir: PathBuf,
    /// TUN offload.
    pub offload: bool,
    /// Where the Prometheus metrics are served (`metrics_listen`); `None`: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The user to run as once started (`user`); `None`: stays root.
    pub user: Option<m6t_linux::caps::RunAs>,
}

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Machine configuration.
    pub machine: GatewayConfig,
    /// Listen address.
    pub listen: Ipv4Addr,
    /// Listen ports.
    pub ports: Vec<u16>,
    /// TUN name.
    pub interface: String,
    /// Route metric.
    pub route_metric: u32,
    /// Control socket.
    pub control_socket: PathBuf,
    /// TUN offload.
    pub offload: bool,
    /// Worker threads.
    pub workers: usize,
    /// Where the Prometheus metrics are served (`metrics_listen`); `None`: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The user to run as once started (`user`); `None`: stays root.
    pub user: Option<m6t_linux::caps::RunAs>,
    /// The kernel's per-source packet budget (`source_packet_rate`, `source_packet_burst`):
    /// `(rate, burst)`, `None` when `source_packet_rate = 0`.
    pub source_limit: Option<(u32, u32)>,
}

/// Reads and validates a client configuration file.
pub fn load_client(path: &Path) -> Result<Client, ConfigError> {
    client_from_str(path, &read(path)?)
}

/// Validates client configuration text (`path` only names it in errors).
pub fn client_from_str(path: &Path, text: &str) -> Result<Client, ConfigError> {
    let f: ClientFile = parse(path, text)?;
    let v = V { path };
    v.ports(&f.ports)?;
    v.iface(&f.interface)?;
    let mtu = v.mtu(f.mtu)?;
    let prefix = match (f.prefix, f.ula, f.subnet_id, f.mn_id) {
        (Some(p), None, None, None) => {
            if p.len() != 80 {
                return Err(v.bad("prefix", "must be a /80 (section 2.2)"));
            }
            p
        }
        (None, Some(u), Some(s), Some(m)) => {
            ula::mn_prefix80(u, s, m).map_err(|e| v.bad("ula", e.to_string()))?
        }
        (None, Some(_), _, _) => return Err(v.bad("ula", "needs subnet_id and mn_id too")),
        (None, None, _, _) => {
            return Err(v.bad(
                "prefix",
                "missing: give `prefix` (a /80) or `ula` + `subnet_id` + `mn_id`",
            ))
        }
        _ => {
            return Err(v.bad(
                "prefix",
                "give either `prefix` or `ula` + `subnet_id` + `mn_id`, not both",
            ))
        }
    };
    if f.gateway.is_unspecified() || f.gateway.is_broadcast() || f.gateway.is_multicast() {
        return Err(v.bad("gateway", "must be a unicast IPv4 address"));
    }
    let mut machine = ClientConfig::new(prefix, f.ports.clone());
    machine.mtu = mtu;
    machine.keepalive_interval =
        v.secs("keepalive_interval", f.keepalive_interval, 0.1, 86400.0)?;
    machine.echo_timeout = v.secs("echo_timeout", f.echo_timeout, 0.01, 600.0)?;
    machine.port_timeout = v.secs("port_timeout", f.port_timeout, 0.1, 600.0)?;
    if f.dead_probes == 0 || f.dead_probes > 100 {
        return Err(v.bad("dead_probes", "must be between 1 and 100"));
    }
    machine.dead_probes = f.dead_probes;
    if let Some(h) = &f.hook {
        if !h.is_absolute() {
            return Err(v.bad("hook", "must be an absolute path"));
        }
    }
    let control_socket = f
        .control_socket
        .unwrap_or_else(|| format!("/run/m6t/client-{}.sock", f.interface).into());
    Ok(Client {
        machine,
        gateway: f.gateway,
        interface: f.interface,
        metric: f.metric,
        hook: f.hook,
        control_socket,
        claims_dir: f.claims_dir,
        offload: f.offload,
        metrics_listen: v.metrics_listen(f.metrics_listen.as_ref())?,
        user: v.user(f.user.as_ref())?,
    })
}

/// Reads and validates a gateway configuration file.
pub fn load_gateway(path: &Path) -> Result<Gateway, ConfigError> {
    gateway_from_str(path, &read(path)?)
}

/// Validates gateway configuration text (`path` only names it in errors).
pub fn gateway_from_str(path: &Path, text: &str) -> Result<Gateway, ConfigError> {
    let f: GatewayFile = parse(path, text)?;
    let v = V { path };
    v.ports(&f.ports)?;
    v.iface(&f.interface)?;
    let mtu = v.mtu(f.mtu)?;
    if f.ha_addresses.is_empty() {
        return Err(v.bad("ha_addresses", "must list at least one home agent address"));
    }
    if f.mn_prefixes.is_empty() {
        return Err(v.bad("mn_prefixes", "must list at least one prefix"));
    }
    if f.mn_prefixes.iter().any(|p| p.len() < 8) {
        return Err(v.bad(
            "mn_prefixes",
            "prefixes shorter than /8 would capture the whole Internet",
        ));
    }
    // Two prefixes overlap when the shorter one holds the other's address.
    let overlap = |a: &Ipv6Prefix, b: &Ipv6Prefix| a.contains(b.addr()) || b.contains(a.addr());
    for (i, p) in f.mn_prefixes.iter().enumerate() {
        if let Some(q) = f.mn_prefixes[..i].iter().find(|q| overlap(p, q)) {
            return Err(v.bad(
                format!("mn_prefixes[{i}]"),
                format!("{p} overlaps {q} listed before it"),
            ));
        }
    }
    // An allowed destination inside a mobile-node prefix would let one mobile node's
    // packets reach another's tunnel without the home agent.
    for (i, p) in f.allowed_destinations.iter().enumerate() {
        if let Some(q) = f.mn_prefixes.iter().find(|q| overlap(p, q)) {
            return Err(v.bad(
                format!("allowed_destinations[{i}]"),
                format!("{p} overlaps the mobile-node prefix {q}"),
            ));
        }
    }
    if f.address.is_unspecified() || f.address.is_multicast() {
        return Err(v.bad("address", "must be a unicast IPv6 address of the gateway"));
    }
    let temporary_lifetime = v.secs("temporary_lifetime", f.temporary_lifetime, 0.001, 3600.0)?;
    let active_lifetime = v.secs("active_lifetime", f.active_lifetime, 1.0, 86400.0)?;
    if f.new_state_burst == 0 {
        return Err(v.bad("new_state_burst", "must be at least 1"));
    }
    if f.max_states_per_ipv4 == 0 {
        return Err(v.bad("max_states_per_ipv4", "must be at least 1"));
    }
    if f.max_states == 0 || f.max_states > 100_000_000 {
        return Err(v.bad("max_states", "must be between 1 and 100000000"));
    }
    if !(1..=64).contains(&f.workers) {
        return Err(v.bad("workers", "must be between 1 and 64"));
    }
    let source_limit = v.source_limit(f.source_packet_rate, f.source_packet_burst)?;
    let machine = GatewayConfig {
        ha_addresses: f.ha_addresses,
        allowed_destinations: f.allowed_destinations,
        mn_prefixes: f.mn_prefixes,
        icmp_source: f.address,
        mtu,
        temporary_lifetime,
        active_lifetime,
        new_state_rate: f.new_state_rate,
        new_state_burst: f.new_state_burst,
        max_states_per_ipv4: f.max_states_per_ipv4,
        max_states: f.max_states,
    };
    Ok(Gateway {
        machine,
        listen: f.listen,
        ports: f.ports,
        interface: f.interface,
        route_metric: f.route_metric,
        control_socket: f.control_socket,
        offload: f.offload,
        workers: f.workers,
        metrics_listen: v.metrics_listen(f.metrics_listen.as_ref())?,
        user: v.user(f.user.as_ref())?,
        source_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(t: &str) -> Result<Client, ConfigError> {
        client_from_str(Path::new("c.toml"), t)
    }
    fn g(t: &str) -> Result<Gateway, ConfigError> {
        gateway_from_str(Path::new("g.toml"), t)
    }

    /// Errors the parser finds (types, missing and unknown keys) name the file and the key,
    /// array entries with their index, as the checks after parsing do.
    #[test]
    fn parse_errors_name_the_file_and_the_key() {
        let base = "gateway = \"203.0.113.1\"\nprefix = \"fd00:1:2:3:4::/80\"\n";
        let e = |t: &str| c(t).unwrap_err().to_string();
        // A type error: the key, serde's words, the line.
        assert_eq!(
            e(&format!("{base}\n\n\nmtu = \"big\"\n")),
            "config c.toml: key `mtu`: invalid type: string \"big\", expected u16 (line 6)"
        );
        assert_eq!(
            e(&format!("{base}mtu = 70000\n")),
            "config c.toml: key `mtu`: invalid value: integer `70000`, expected u16 (line 3)"
        );
        // A missing required key: its name, no line (it has none).
        assert_eq!(
            e("prefix = \"fd00:1:2:3:4::/80\"\n"),
            "config c.toml: key `gateway`: missing (required)"
        );
        // An unknown key: its name and the keys allowed beside it.
        let u = e(&format!("{base}gatway = \"203.0.113.1\"\n"));
        assert!(
            u.starts_with(
                "config c.toml: key `gatway`: unknown key; allowed here: gateway, ports, "
            ) && u.contains(", claims_dir, ")
                && u.ends_with(" (line 3)"),
            "{u}"
        );
        // An array entry, counted from 0.
        assert_eq!(
            e(&format!("{base}ports = [3544, \"x\"]\n")),
            "config c.toml: key `ports[1]`: invalid type: string \"x\", expected u16 (line 3)"
        );
        // A value of a type of ours (its own parser's message).
        assert_eq!(
            e("gateway = \"nope\"\nprefix = \"fd00:1:2:3:4::/80\"\n"),
            "config c.toml: key `gateway`: invalid IPv4 address syntax (line 1)"
        );
        // TOML syntax: no key yet, but the line, and one line of text.
        let s = e("gateway = = 1\n");
        assert!(
            s.starts_with("config c.toml: ") && s.ends_with("(line 1)") && !s.contains('\n'),
            "{s}"
        );

        let base = "address = \"2001:db8:1::2\"\nha_addresses = [\"2001:db8:1::1\"]\nmn_prefixes = [\"fd00:1::/48\"]\n";
        let e = |t: &str| g(t).unwrap_err().to_string();
        assert_eq!(
            e(&format!("{base}workers = 1.5\n")),
            "config g.toml: key `workers`: invalid type: floating point `1.5`, expected usize (line 4)"
        );
        assert_eq!(
            e("address = \"2001:db8:1::2\"\nmn_prefixes = [\"fd00:1::/48\"]\n"),
            "config g.toml: key `ha_addresses`: missing (required)"
        );
        let u = e(&format!("{base}[metrics]\nlisten = 1\n"));
        assert!(
            u.starts_with(
                "config g.toml: key `metrics`: unknown key; allowed here: listen, ports, "
            ),
            "{u}"
        );
        assert_eq!(
            e(&base.replace("[\"fd00:1::/48\"]", "[\"fd00:1::/48\", \"fd00:2::/129\"]")),
            "config g.toml: key `mn_prefixes[1]`: invalid IPv6 prefix `fd00:2::/129`: prefix length \
             must be 0..=128 (line 3)"
        );
    }

    #[test]
    fn client_defaults() {
        let x = c("gateway = \"203.0.113.1\"\nprefix = \"fd00:1:2:3:4::/80\"\n").unwrap();
        assert_eq!(x.interface, "m6t0");
        assert_eq!(x.machine.mtu, 1472);
        assert_eq!(x.machine.ports, vec![3544]);
        assert_eq!(x.machine.keepalive_interval, Duration::from_secs(30));
        assert_eq!(x.control_socket, PathBuf::from("/run/m6t/client-m6t0.sock"));
        let y = c("gateway = \"203.0.113.1\"\nula = \"fd12:3456:789a::/48\"\nsubnet_id = 1\nmn_id = 0x42\n").unwrap();
        assert_eq!(y.machine.prefix.to_string(), "fd12:3456:789a:1:42::/80");
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_a_bad_one_names_file_and_key() {
        let base = "gateway = \"203.0.113.1\"\nprefix = \"fd00:1:2:3:4::/80\"\n";
        assert_eq!(c(base).unwrap().metrics_listen, None);
        let x = c(&format!("{base}metrics_listen = \"[::1]:9464\"\n")).unwrap();
        assert_eq!(x.metrics_listen, Some("[::1]:9464".parse().unwrap()));
        for bad in [
            "\"9464\"",
            "\"localhost:9464\"",
            "\"127.0.0.1:0\"",
            "\"1.2.3.4\"",
            "9464",
            "[\"127.0.0.1:9464\"]",
        ] {
            let e = c(&format!("{base}metrics_listen = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("config c.toml: key `metrics_listen`: "),
                "{e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let gw =
            "address = \"fd00::1\"\nha_addresses = [\"fd00::2\"]\nmn_prefixes = [\"fd01::/48\"]\n";
        assert_eq!(g(gw).unwrap().metrics_listen, None);
        let x = g(&format!("{gw}metrics_listen = \"10.0.0.1:9464\"\n")).unwrap();
        assert_eq!(x.metrics_listen, Some("10.0.0.1:9464".parse().unwrap()));
        let e = g(&format!("{gw}metrics_listen = \"10.0.0.1\"\n")).unwrap_err();
        assert!(
            e.to_string().contains("g.toml: key `metrics_listen`"),
            "{e}"
        );
    }

    #[test]
    fn client_errors_name_the_key() {
        let e = c("gateway = \"203.0.113.1\"\nprefix = \"fd00::/64\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`prefix`"), "{e}");
        let e = c("gateway = \"203.0.113.1\"\nprefix = \"fd00:1:2:3:4::/80\"\nmtu = 100\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`mtu`"), "{e}");
        let e = c("gateway = \"203.0.113.1\"\nprefix = \"fd00:1:2:3:4::/80\"\nports = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ports`"), "{e}");
        let e = c("gateway = \"nope\"\nprefix = \"fd00:1:2:3:4::/80\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gateway") || e.contains("IP"), "{e}");
        let e = c("gateway = \"203.0.113.1\"\nprefix = \"fd00:1:2:3:4::/80\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = c(
            "gateway = \"203.0.113.1\"\nprefix = \"fd00:1:2:3:4::/80\"\nkeepalive_interval = -1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`keepalive_interval`"), "{e}");
        let e = c("prefix = \"fd00:1:2:3:4::/80\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gateway"), "{e}");
    }

    #[test]
    fn gateway_defaults_and_errors() {
        let base = "address = \"2001:db8:1::2\"\nha_addresses = [\"2001:db8:1::1\"]\nmn_prefixes = [\"fd00:1::/48\"]\n";
        let x = g(base).unwrap();
        assert_eq!(x.ports, vec![3544]);
        assert_eq!(x.machine.temporary_lifetime, Duration::from_secs(2));
        assert_eq!(x.machine.active_lifetime, Duration::from_secs(150));
        assert!(x.machine.allowed_destinations.is_empty());
        let e = g(&format!("{base}ports = [3544, 3544]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ports`"), "{e}");
        let e =
            g("address = \"2001:db8:1::2\"\nha_addresses = []\nmn_prefixes = [\"fd00:1::/48\"]\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("`ha_addresses`"), "{e}");
        let e = g(&format!("{base}max_states = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`max_states`"), "{e}");
        let e = g(&format!("{base}interface = \"a-name-much-too-long\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`interface`"), "{e}");
    }
}
