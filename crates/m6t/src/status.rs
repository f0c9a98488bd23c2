//! What `m6t status` asks a running daemon and how it prints the answer (table or JSON).

use m6t_proto::dsmip::binding_cache::SavedBinding;
use m6t_proto::m6t::client::ClientInfo;
use m6t_proto::m6t::gateway::{StateInfo, StateKind};
use m6t_proto::stats::Counter;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// The full status request: states and counters.
pub const REQUEST_STATUS: &str = "status";
/// Counters only (a gateway with a million states answers this one quickly).
pub const REQUEST_COUNTERS: &str = "counters";

/// A daemon's answer to [`REQUEST_STATUS`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Report {
    /// A gateway: its states and counters.
    Gateway {
        /// TUN interface.
        interface: String,
        /// Listening ports.
        ports: Vec<u16>,
        /// Every state.
        states: Vec<StateInfo>,
        /// Counters, drops by reason included.
        counters: Vec<Counter>,
    },
    /// A client: its tunnel and counters.
    Client {
        /// TUN interface.
        interface: String,
        /// Tunnel state.
        tunnel: ClientInfo,
        /// Counters, drops by reason included.
        counters: Vec<Counter>,
    },
    /// A DSMIPv6 home agent: its binding cache and counters.
    #[serde(rename = "ha")]
    HomeAgent {
        /// TUN interface.
        interface: String,
        /// The binding cache (lifetimes left).
        bindings: Vec<SavedBinding>,
        /// Counters, drops by reason included.
        counters: Vec<Counter>,
    },
    /// A DSMIPv6 mobile node: its registration and counters.
    #[serde(rename = "mn")]
    MobileNode {
        /// TUN interface.
        interface: String,
        /// Registration.
        mn: MnInfo,
        /// Counters, drops by reason included.
        counters: Vec<Counter>,
    },
}

/// A mobile node's registration as `m6t status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MnInfo {
    /// IPv6 home address.
    pub home_address: String,
    /// IPv4 home address granted.
    pub ipv4_home_address: Option<String>,
    /// Care-of addresses movement detection chose (IPv6, IPv4).
    pub candidates: (Option<String>, Option<String>),
    /// Registered care-of address.
    pub coa: Option<String>,
    /// Tunnel in use: ipv6, ipv4 (IP-in-IP), udp, tlv.
    pub mode: Option<String>,
    /// Lifetime granted, seconds.
    pub lifetime_s: u64,
    /// Accepted registrations since start.
    pub registrations: u64,
    /// BU sent -> BA received of the last registration, milliseconds.
    pub last_registration_ms: Option<f64>,
}

impl Report {
    /// The value of a counter by name (0 when absent).
    pub fn counter(&self, name: &str) -> u64 {
        let c = match self {
            Report::Gateway { counters, .. }
            | Report::Client { counters, .. }
            | Report::HomeAgent { counters, .. }
            | Report::MobileNode { counters, .. } => counters,
        };
        c.iter()
            .find(|c| c.name == name)
            .map(|c| c.value)
            .unwrap_or(0)
    }
}

fn secs(ms: u64) -> String {
    format!("{}.{:01}s", ms / 1000, (ms % 1000) / 100)
}

/// Human-readable rendering of a report.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    match r {
        Report::Gateway {
            interface,
            ports,
            states,
            counters,
        } => {
            let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
            let _ = writeln!(
                o,
                "gateway  interface {interface}  udp ports {}",
                ports.join(",")
            );
            let total = counters
                .iter()
                .find(|c| c.name == "states")
                .map_or(states.len() as u64, |c| c.value);
            if total > states.len() as u64 {
                let _ = writeln!(o, "states: {total} (the first {} listed)", states.len());
            } else {
                let _ = writeln!(o, "states: {total}");
            }
            if !states.is_empty() {
                let _ = writeln!(
                    o,
                    "  {:<40} {:<22} {:<6} {:<9} {:>8} {:>8} {:>9} {:>11}",
                    "address", "ipv4:port", "via", "kind", "age", "idle", "packets", "bytes"
                );
                for s in states {
                    let kind = match s.kind {
                        StateKind::Temporary => "temporary",
                        StateKind::Active => "active",
                    };
                    let _ = writeln!(
                        o,
                        "  {:<40} {:<22} {:<6} {:<9} {:>8} {:>8} {:>9} {:>11}",
                        s.address.to_string(),
                        s.peer.to_string(),
                        s.local_port,
                        kind,
                        secs(s.age_ms),
                        secs(s.idle_ms),
                        s.packets,
                        s.bytes
                    );
                }
            }
            render_counters(&mut o, counters);
        }
        Report::Client {
            interface,
            tunnel,
            counters,
        } => {
            let _ = writeln!(o, "client  interface {interface}  tunnel {}", tunnel.state);
            if let Some(a) = tunnel.address {
                let _ = writeln!(o, "  address    {a}");
            }
            if let Some(v4) = tunnel.local_ipv4 {
                let _ = writeln!(o, "  ipv4       {v4}");
            }
            if let Some(p) = tunnel.port {
                let _ = writeln!(o, "  port       {p}");
            }
            let _ = writeln!(o, "  confirmed  {}", tunnel.confirmed);
            if let Some(i) = tunnel.idle_rx_ms {
                let _ = writeln!(o, "  idle rx    {}", secs(i));
            }
            render_counters(&mut o, counters);
        }
        Report::HomeAgent {
            interface,
            bindings,
            counters,
        } => {
            let _ = writeln!(o, "home agent  interface {interface}");
            let _ = writeln!(o, "bindings: {}", bindings.len());
            if !bindings.is_empty() {
                let _ = writeln!(
                    o,
                    "  {:<40} {:<18} {:<32} {:>6} {:>9} {:<3}",
                    "home address", "ipv4 home", "tunnel", "seq", "left", "nat"
                );
            }
            for b in bindings {
                let v4 = b.ipv4.map(|(a, l)| format!("{a}/{l}")).unwrap_or_default();
                let t = match b.tunnel {
                    m6t_proto::dsmip::binding_cache::Tunnel::Ipv6 { coa } => format!("ipv6 {coa}"),
                    m6t_proto::dsmip::binding_cache::Tunnel::Ipv4 { coa } => {
                        format!("ip-in-ip {coa}")
                    }
                    m6t_proto::dsmip::binding_cache::Tunnel::Udp { peer } => format!("udp {peer}"),
                    m6t_proto::dsmip::binding_cache::Tunnel::Tlv { peer } => {
                        format!("udp-tlv {peer}")
                    }
                };
                let _ = writeln!(
                    o,
                    "  {:<40} {:<18} {:<32} {:>6} {:>9} {:<3}",
                    b.hoa.to_string(),
                    v4,
                    t,
                    b.seq,
                    secs(b.remaining_ms),
                    if b.nat { "yes" } else { "no" }
                );
            }
            render_counters(&mut o, counters);
        }
        Report::MobileNode {
            interface,
            mn,
            counters,
        } => {
            let _ = writeln!(o, "mobile node  interface {interface}");
            let _ = writeln!(o, "  home address   {}", mn.home_address);
            if let Some(a) = &mn.ipv4_home_address {
                let _ = writeln!(o, "  ipv4 home      {a}");
            }
            let dash = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
            let _ = writeln!(
                o,
                "  candidates     ipv6 {}  ipv4 {}",
                dash(&mn.candidates.0),
                dash(&mn.candidates.1)
            );
            let _ = writeln!(o, "  care-of        {}", dash(&mn.coa));
            let _ = writeln!(o, "  tunnel         {}", dash(&mn.mode));
            let _ = writeln!(o, "  lifetime       {}s", mn.lifetime_s);
            if let Some(ms) = mn.last_registration_ms {
                let _ = writeln!(o, "  registration   {ms:.2} ms (BU sent -> BA received)");
            }
            render_counters(&mut o, counters);
        }
    }
    o
}

fn render_counters(o: &mut String, counters: &[Counter]) {
    let _ = writeln!(o, "counters:");
    for c in counters {
        let _ = writeln!(o, "  {:<32} {}", c.name, c.value);
    }
}
