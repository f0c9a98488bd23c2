//! What `m6t status` asks a running daemon and how it prints the answer (table or JSON).

use m6t_proto::dsmip::binding_cache::SavedBinding;
use m6t_proto::m6t::client::ClientInfo;
use m6t_proto::m6t::gateway::{StateInfo, StateKind};
use m6t_proto::stats::Counter;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
        /// When the daemon started; its counters count from then. Absent in the answers
        /// of daemons older than this field.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<Start>,
        /// Counters, drops by reason included.
        counters: Vec<Counter>,
    },
    /// A client: its tunnel and counters.
    Client {
        /// TUN interface.
        interface: String,
        /// Tunnel state.
        tunnel: ClientInfo,
        /// When the daemon started; its counters count from then. Absent in the answers
        /// of daemons older than this field.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<Start>,
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
        /// IPsec, when configured.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ipsec: Option<IpsecInfo>,
        /// When the daemon started; its counters count from then. Absent in the answers
        /// of daemons older than this field.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<Start>,
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
        /// IPsec, when configured.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ipsec: Option<IpsecInfo>,
        /// When the daemon started; its counters count from then. Absent in the answers
        /// of daemons older than this field.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<Start>,
        /// Counters, drops by reason included.
        counters: Vec<Counter>,
    },
}

/// When a daemon started, in its report: the counters count from then.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Start {
    /// Start time, seconds since the Unix epoch (the wall clock then).
    pub unix_s: u64,
    /// Seconds since then when the report was made, on the monotonic clock: what `m6t
    /// status` shows, right even if the wall clock was set since.
    pub uptime_s: u64,
}

/// The moment the daemon of this process started ([`mark_start`]).
static STARTED: OnceLock<(Instant, SystemTime)> = OnceLock::new();

/// Notes that the daemon starts now (its machine and counters are about to be made); later
/// calls change nothing. Each daemon calls it first thing.
pub fn mark_start() {
    STARTED.get_or_init(|| (Instant::now(), SystemTime::now()));
}

/// The daemon's [`Start`] for a report; `None` before [`mark_start`].
pub fn start() -> Option<Start> {
    STARTED.get().map(|&(at, wall)| Start {
        unix_s: wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        uptime_s: at.elapsed().as_secs(),
    })
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
    /// The home-address interface's MTU, sized to the tunnel in use.
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Accepted registrations since start.
    pub registrations: u64,
    /// BU sent -> BA received of the last registration, milliseconds.
    pub last_registration_ms: Option<f64>,
    /// BUs sent since the last BA was taken: a registration that fails shows here.
    #[serde(default)]
    pub unanswered_bus: u32,
    /// On the home link, deregistered (RFC 6275 section 11.5.5): the home address is on
    /// `home_link`, nothing is tunnelled.
    #[serde(default)]
    pub at_home: bool,
    /// The interface of the home link while the node is there.
    #[serde(default)]
    pub home_link: Option<String>,
    /// The status of the last refused BU (e.g. 140-143 for a mobile router), until a
    /// registration.
    #[serde(default)]
    pub last_refusal: Option<u8>,
}

/// Unanswered BUs from which the mobile node says its registration fails (the first BU
/// and two retransmissions, RFC 6275 section 11.8: about 3 s).
pub const FAILING_AFTER: u32 = 3;

/// IPsec as `m6t status` shows it: the SPD in order, the SAD with what each SA carried.
/// Drops by reason are among the counters, as `ipsec_<reason>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IpsecInfo {
    /// Policies, first match wins.
    pub policies: Vec<PolicyInfo>,
    /// Security associations.
    pub sas: Vec<SaInfo>,
}

/// One SPD entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PolicyInfo {
    /// Its name.
    pub name: String,
    /// Its selectors, as RFC 4877 section 6 writes them.
    pub selectors: String,
    /// protect (with the SAs' names), bypass or discard.
    pub action: String,
}

/// One SAD entry (never its keys).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SaInfo {
    /// Its name.
    pub name: String,
    /// in or out.
    pub direction: String,
    /// SPI.
    pub spi: u32,
    /// transport or tunnel.
    pub mode: String,
    /// Algorithm (strongSwan's proposal keyword).
    pub algorithm: String,
    /// Packets protected (out) or accepted (in).
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Out: the last sequence number sent; in: the highest received.
    pub seq: u64,
}

impl IpsecInfo {
    /// What a running IPsec shows.
    pub fn of(ipsec: &m6t_ipsec::Ipsec) -> IpsecInfo {
        use m6t_ipsec::{Action, AddrSel, Direction, Mode};
        let sad = ipsec.sad();
        let sa_name = |i: Option<usize>| i.and_then(|i| sad.get(i)).map(|e| e.name.as_str());
        let policies = ipsec
            .spd()
            .policies
            .iter()
            .map(|p| {
                let s = &p.selectors;
                let addr = |a: AddrSel| match a {
                    AddrSel::Any => "any".to_string(),
                    AddrSel::Prefix(a, l) if l == if a.is_ipv4() { 32 } else { 128 } => {
                        a.to_string()
                    }
                    AddrSel::Prefix(a, l) => format!("{a}/{l}"),
                };
                let mut sel = format!(
                    "local_address = {} & remote_address = {}",
                    addr(s.local),
                    addr(s.remote)
                );
                if let Some(pr) = s.proto {
                    let name = match pr {
                        m6t_ipsec::spd::PROTO_MH => "MH".to_string(),
                        m6t_ipsec::spd::PROTO_ICMPV6 => "ICMPv6".to_string(),
                        m6t_ipsec::spd::PROTO_TCP => "TCP".to_string(),
                        m6t_ipsec::spd::PROTO_UDP => "UDP".to_string(),
                        n => n.to_string(),
                    };
                    let _ = write!(sel, " & proto = {name}");
                }
                // As RFC 4877 section 6 writes them: `local_mh_type = BU`.
                let kind = match s.proto {
                    Some(m6t_ipsec::spd::PROTO_MH) => "mh",
                    Some(m6t_ipsec::spd::PROTO_ICMPV6) => "icmp6",
                    _ => "msg",
                };
                for (side, v) in [("local", s.local_type), ("remote", s.remote_type)] {
                    if let Some(v) = v {
                        let _ = write!(sel, " & {side}_{kind}_type = {}", mh_type_name(kind, v));
                    }
                }
                for (k, v) in [("local_port", s.local_port), ("remote_port", s.remote_port)] {
                    if let Some(v) = v {
                        let _ = write!(sel, " & {k} = {v}");
                    }
                }
                let action = match p.action {
                    Action::Protect { out, inbound } => format!(
                        "protect out {} in {}",
                        sa_name(out).unwrap_or("-"),
                        sa_name(inbound).unwrap_or("-")
                    ),
                    Action::Bypass => "bypass".into(),
                    Action::Discard => "discard".into(),
                };
                PolicyInfo {
                    name: p.name.clone(),
                    selectors: sel,
                    action,
                }
            })
            .collect();
        let sas = sad
            .iter()
            .map(|e| {
                let p = e.params();
                SaInfo {
                    name: e.name.clone(),
                    direction: match e.direction {
                        Direction::Out => "out".into(),
                        Direction::In => "in".into(),
                    },
                    spi: p.spi,
                    mode: match p.mode {
                        Mode::Transport => "transport".into(),
                        Mode::Tunnel => "tunnel".into(),
                    },
                    algorithm: p.algorithm.name().into(),
                    packets: e.packets,
                    bytes: e.bytes,
                    // 0 for an SA that IKE has not keyed yet.
                    seq: match (&e.sa, e.direction) {
                        (None, _) => 0,
                        (Some(sa), Direction::Out) => sa.last_sent(),
                        (Some(sa), Direction::In) => sa.replay_window().top(),
                    },
                }
            })
            .collect();
        IpsecInfo { policies, sas }
    }

    /// IPsec's drops as counters named `ipsec_<reason>`.
    pub fn counters(ipsec: &m6t_ipsec::Ipsec) -> Vec<Counter> {
        ipsec
            .drops()
            .map(|(d, value)| Counter {
                name: format!("ipsec_{}", d.name()),
                value,
            })
            .collect()
    }
}

/// A Mobility Header type by its RFC 6275 name (section 6.1.2), other types as numbers.
fn mh_type_name(kind: &str, t: u8) -> String {
    let name = match (kind, t) {
        ("mh", 0) => "BRR",
        ("mh", 1) => "HoTI",
        ("mh", 2) => "CoTI",
        ("mh", 3) => "HoT",
        ("mh", 4) => "CoT",
        ("mh", 5) => "BU",
        ("mh", 6) => "BAck",
        ("mh", 7) => "BE",
        _ => return t.to_string(),
    };
    name.to_string()
}

fn render_ipsec(o: &mut String, ipsec: &IpsecInfo) {
    let _ = writeln!(o, "ipsec policies (first match wins):");
    for p in &ipsec.policies {
        let _ = writeln!(o, "  {:<16} {}  => {}", p.name, p.selectors, p.action);
    }
    let _ = writeln!(o, "ipsec SAs:");
    let _ = writeln!(
        o,
        "  {:<16} {:<4} {:>10} {:<10} {:<14} {:>9} {:>11} {:>9}",
        "name", "dir", "spi", "mode", "algorithm", "packets", "bytes", "seq"
    );
    for s in &ipsec.sas {
        let _ = writeln!(
            o,
            "  {:<16} {:<4} {:>#10x} {:<10} {:<14} {:>9} {:>11} {:>9}",
            s.name, s.direction, s.spi, s.mode, s.algorithm, s.packets, s.bytes, s.seq
        );
    }
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

/// An uptime in days, hours and minutes, for uptimes long enough that seconds are hard to
/// read: " (2 d 3 h 4 min)"; nothing under a minute.
fn ago(s: u64) -> String {
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    match (d, h) {
        _ if s < 60 => String::new(),
        (0, 0) => format!(" ({m} min)"),
        (0, _) => format!(" ({h} h {m} min)"),
        _ => format!(" ({d} d {h} h {m} min)"),
    }
}

fn secs(ms: u64) -> String {
    format!("{}.{:01}s", ms / 1000, (ms % 1000) / 100)
}

/// One line saying whether the daemon does its job, in an operator's words: a client's path
/// (alive, confirmed, when the gateway was last heard), a mobile node's registration, what a
/// gateway or home agent serves. `m6t status` prints it under each daemon's heading.
pub fn health(r: &Report) -> String {
    match r {
        Report::Client { tunnel, .. } => match (tunnel.state.as_str(), tunnel.idle_rx_ms) {
            ("up", Some(idle)) if tunnel.confirmed => format!(
                "path alive: the gateway answered, last heard {} ago",
                secs(idle)
            ),
            ("up", _) => "path up, not yet confirmed: no answer from the gateway on this \
                          address yet"
                .to_string(),
            _ => "DOWN: no path to the gateway (no IPv4 route, or its echoes went unanswered)"
                .to_string(),
        },
        Report::MobileNode { mn, ipsec, .. } => {
            if mn.at_home {
                format!(
                    "at home on {}: deregistered, the home address is on the home link",
                    mn.home_link.as_deref().unwrap_or("-")
                )
            } else if mn.unanswered_bus >= FAILING_AFTER {
                format!(
                    "registration FAILING: {} Binding Updates unanswered",
                    mn.unanswered_bus
                ) + if ipsec.is_some() {
                    " (check the [ipsec] SAs)"
                } else {
                    ""
                }
            } else {
                match (&mn.coa, &mn.mode) {
                    (Some(coa), mode) => format!(
                        "registered: care-of {coa}, tunnel {}, {} registrations",
                        mode.as_deref().unwrap_or("-"),
                        mn.registrations
                    ),
                    (None, _) => "not registered (no care-of address, or waiting for the \
                                  Binding Acknowledgement)"
                        .to_string(),
                }
            }
        }
        Report::Gateway {
            states, counters, ..
        } => {
            let total = counters
                .iter()
                .find(|c| c.name == "states")
                .map_or(states.len() as u64, |c| c.value);
            format!("serving: {total} states")
        }
        Report::HomeAgent { bindings, .. } => format!("serving: {} bindings", bindings.len()),
    }
}

/// Human-readable rendering of a report.
pub fn render(r: &Report) -> String {
    let o = render_body(r);
    // The health line goes right under the heading (the body's first line).
    let at = o.find('\n').map_or(o.len(), |i| i + 1);
    format!("{}health: {}\n{}", &o[..at], health(r), &o[at..])
}

fn render_body(r: &Report) -> String {
    let mut o = String::new();
    match r {
        Report::Gateway {
            interface,
            ports,
            states,
            start,
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
            render_counters(&mut o, start, counters);
        }
        Report::Client {
            interface,
            tunnel,
            start,
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
            render_counters(&mut o, start, counters);
        }
        Report::HomeAgent {
            interface,
            bindings,
            ipsec,
            start,
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
                if b.router {
                    let p: Vec<String> = b.mnp.iter().map(|p| p.to_string()).collect();
                    let _ = writeln!(o, "    mobile router, network {}", p.join(" "));
                }
            }
            if let Some(i) = ipsec {
                render_ipsec(&mut o, i);
            }
            render_counters(&mut o, start, counters);
        }
        Report::MobileNode {
            interface,
            mn,
            ipsec,
            start,
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
            if let Some(m) = mn.mtu {
                let _ = writeln!(o, "  inner MTU      {m}");
            }
            let _ = writeln!(o, "  lifetime       {}s", mn.lifetime_s);
            if let Some(ms) = mn.last_registration_ms {
                let _ = writeln!(o, "  registration   {ms:.2} ms (BU sent -> BA received)");
            }
            if mn.at_home {
                let _ = writeln!(
                    o,
                    "  at home        on {} (deregistered, RFC 6275 section 11.5.5)",
                    dash(&mn.home_link)
                );
            }
            if let Some(st) = mn.last_refusal {
                let _ = writeln!(o, "  last refusal   BA status {st}");
            }
            if mn.unanswered_bus >= FAILING_AFTER {
                let _ = writeln!(
                    o,
                    "  registration   FAILING: {}",
                    failing_why(mn.unanswered_bus, ipsec.is_some())
                );
            }
            if let Some(i) = ipsec {
                render_ipsec(&mut o, i);
            }
            render_counters(&mut o, start, counters);
        }
    }
    o
}

/// Why a mobile node's registration fails, in an operator's words (status and log).
pub fn failing_why(unanswered: u32, ipsec: bool) -> String {
    let mut s = format!(
        "{unanswered} Binding Updates sent without a Binding Acknowledgement: the home agent \
         cannot be reached, or drops them"
    );
    if ipsec {
        s.push_str(
            "; check that the home agent's [ipsec] SAs match this node's (SPIs swapped: its \
             inbound SA is this node's outbound one, same keys and algorithm), and its \
             ipsec_esp_bad_icv / ipsec_esp_no_sa / ipsec_policy_mismatch counters",
        );
    }
    s
}

fn render_counters(o: &mut String, start: &Option<Start>, counters: &[Counter]) {
    match start {
        Some(s) => {
            let _ = writeln!(
                o,
                "counters since start, {} s ago{}:",
                s.uptime_s,
                ago(s.uptime_s)
            );
        }
        // A daemon from before `start` was reported.
        None => {
            let _ = writeln!(o, "counters:");
        }
    }
    for c in counters {
        let _ = writeln!(o, "  {:<32} {}", c.name, c.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(start: Option<Start>) -> Report {
        Report::Client {
            interface: "m6t0".into(),
            tunnel: ClientInfo {
                state: "up".into(),
                address: None,
                local_ipv4: None,
                port: None,
                confirmed: false,
                idle_rx_ms: None,
            },
            start,
            counters: vec![Counter {
                name: "rx_packets".into(),
                value: 7,
            }],
        }
    }

    #[test]
    fn the_table_says_since_when_counters_count() {
        let start = |uptime_s| {
            Some(Start {
                unix_s: 1_800_000_000,
                uptime_s,
            })
        };
        let t = render(&client(start(42)));
        assert!(t.contains("\ncounters since start, 42 s ago:\n"), "{t}");
        let t = render(&client(start(3725)));
        assert!(
            t.contains("\ncounters since start, 3725 s ago (1 h 2 min):\n"),
            "{t}"
        );
        let t = render(&client(start(2 * 86_400 + 3 * 3600 + 4 * 60 + 5)));
        assert!(t.contains("s ago (2 d 3 h 4 min):\n"), "{t}");
        assert!(
            t.starts_with("client  interface m6t0  tunnel up\nhealth: path up, not yet"),
            "{t}"
        );
        // A daemon from before the field: no uptime to give.
        let t = render(&client(None));
        assert!(t.contains("\ncounters:\n"), "{t}");
    }

    #[test]
    fn reports_without_a_start_still_parse() {
        let with = client(Some(Start {
            unix_s: 1_800_000_000,
            uptime_s: 9,
        }));
        let json = serde_json::to_string(&with).unwrap();
        assert!(
            json.contains("\"start\":{\"unix_s\":1800000000,\"uptime_s\":9}"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), with);
        // What an older daemon answers.
        let old = serde_json::to_string(&client(None)).unwrap();
        assert!(!old.contains("start"), "{old}");
        assert_eq!(serde_json::from_str::<Report>(&old).unwrap(), client(None));
    }

    #[test]
    fn the_start_is_the_first_mark() {
        mark_start();
        let a = start().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        mark_start();
        let b = start().unwrap();
        assert_eq!(a.unix_s, b.unix_s);
        assert!(b.uptime_s < 60);
    }

    #[test]
    fn health_says_in_one_line_whether_the_daemon_works() {
        let mut r = client(None);
        if let Report::Client { tunnel, .. } = &mut r {
            tunnel.confirmed = true;
            tunnel.idle_rx_ms = Some(1200);
        }
        assert_eq!(
            health(&r),
            "path alive: the gateway answered, last heard 1.2s ago"
        );
        if let Report::Client { tunnel, .. } = &mut r {
            tunnel.state = "down".into();
        }
        assert!(health(&r).starts_with("DOWN: "));
        let mut mn = MnInfo {
            coa: Some("192.0.2.10".into()),
            mode: Some("udp".into()),
            registrations: 2,
            ..MnInfo::default()
        };
        let mn_report = |mn: &MnInfo, ipsec| Report::MobileNode {
            interface: "mip6mn0".into(),
            mn: mn.clone(),
            ipsec,
            start: None,
            counters: vec![],
        };
        assert_eq!(
            health(&mn_report(&mn, None)),
            "registered: care-of 192.0.2.10, tunnel udp, 2 registrations"
        );
        mn.unanswered_bus = FAILING_AFTER;
        assert_eq!(
            health(&mn_report(&mn, Some(IpsecInfo::default()))),
            "registration FAILING: 3 Binding Updates unanswered (check the [ipsec] SAs)"
        );
        mn.unanswered_bus = 0;
        mn.coa = None;
        assert!(health(&mn_report(&mn, None)).starts_with("not registered"));
        let t = render(&mn_report(&mn, None));
        assert!(
            t.starts_with("mobile node  interface mip6mn0\nhealth: not registered"),
            "{t}"
        );
        let g = Report::Gateway {
            interface: "m6tgw0".into(),
            ports: vec![3544],
            states: vec![],
            start: None,
            counters: vec![Counter {
                name: "states".into(),
                value: 12,
            }],
        };
        assert_eq!(health(&g), "serving: 12 states");
    }
}
