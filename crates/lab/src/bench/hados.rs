//! The home agent under attack (issue 14, part `dos`): a DSMIPv6 home agent keyed by IKEv2,
//! a mobile node registered through the NAT doing TCP on its home address, and the
//! attacker's namespace flooding the home agent's IPv4 address (through the gateway's
//! router) with Binding Updates without ESP, ESP that no SA opens (a random SPI, or the
//! mobile node's SPI with a wrong ICV) and IKE_SA_INIT requests. For each flood: the MN's
//! TCP throughput as a ratio to the same run without attack and to a control that burns the
//! same attacker CPU without reaching the home agent (the `dos` part's sink), the home
//! agent's memory and CPU, the drop counters that show the flood was seen and dropped, and
//! whether anything of the mobile node's state moved (its binding, its registration, the
//! inbound SA's replay window): nothing should (RFC 4877 section 4.1, RFC 4303 section
//! 3.4.3, RFC 7296 section 2.6). The home agent runs with its defaults, so the kernel's
//! per-source budget (`drop_source_budget`, 1000 datagrams/s) cuts each flood before the
//! home agent reads it; of what passes, IKE_SA_INIT meets the IKE per-source budget
//! (`ike_drop_init_budget`) before the half-open count reaches the COOKIE threshold.

use super::flood::{FloodArgs, Kind};
use super::loadgen::{cpu_ns, rss_bytes};
use super::{tcp, BenchOptions, Table};
use crate::lab::dsmip::{DsmipOptions, LabIpsec, HA4, HOA};
use crate::lab::{Lab, CN, GW4, HA};
use crate::netns::{LabError, LabResult};
use m6t::status::Report;
use std::net::SocketAddrV4;
use std::path::Path;
use std::time::{Duration, Instant};

/// The floods' rate toward the home agent, datagrams/s from 256 ports (a fifth of the
/// gateway floods': the home agent serves signalling, not a data plane at line rate).
const RATE: u32 = 100_000;
/// The control's sink (set up by the `dos` part in the attacker's namespace).
const SINK: &str = "198.51.100.250";
/// Where the attacker's other home addresses start (inside the home prefix, away from the
/// MN's).
const BU_BASE: &str = "2001:db8:1::1000";

/// The home agent's counters that show each flood was seen and dropped.
fn counters(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::HaBu => &[
            "drop_source_budget",
            "bu_unprotected",
            "drop_ipsec",
            "ipsec_unprotected",
            "ipsec_policy_mismatch",
            "bu_accepted",
        ],
        Kind::HaEsp => &[
            "drop_source_budget",
            "ipsec_esp_no_sa",
            "ipsec_esp_bad_icv",
            "ipsec_esp_replay",
            "drop_ipsec",
        ],
        _ => &[
            "drop_source_budget",
            "ike_drop_init_budget",
            "ike_cookies",
            "ike_drop_half_open",
            "ike_drop_cookie",
            "ike_drop_malformed",
        ],
    }
}

/// The home agent's process (the one `m6t` in its namespace).
fn ha_pid(lab: &Lab) -> LabResult<u32> {
    super::daemon_pid(lab, "ha")
}

/// What of the mobile node's state a flood must not move: its binding (tunnel and IPv4
/// home address) and the number of bindings, the inbound payload SA's highest sequence
/// number, and its registration (care-of address, mode; the MN's own refreshes may come
/// at any time and are not counted).
#[derive(Debug, PartialEq)]
struct MnState {
    bindings: Vec<String>,
    sa_seq: u64,
    coa: (Option<String>, Option<String>),
}

/// The inbound tunnel-mode SA (the MN's payload) of the home agent's report: SPI and
/// highest sequence number received.
fn payload_sa(r: &Report) -> Option<(u32, u64)> {
    match r {
        Report::HomeAgent { ipsec: Some(i), .. } => i
            .sas
            .iter()
            .find(|s| s.direction == "in" && s.mode == "tunnel")
            .map(|s| (s.spi, s.seq)),
        _ => None,
    }
}

fn mn_state(lab: &Lab) -> LabResult<(MnState, Report)> {
    let r = lab.ha_report()?;
    let bindings = match &r {
        Report::HomeAgent { bindings, .. } => bindings
            .iter()
            .map(|b| format!("{} {:?} {:?}", b.hoa, b.tunnel, b.ipv4))
            .collect(),
        _ => Vec::new(),
    };
    let (m, _) = lab.mn_info()?;
    Ok((
        MnState {
            bindings,
            sa_seq: payload_sa(&r).map_or(0, |s| s.1),
            coa: (m.coa, m.mode),
        },
        r,
    ))
}

/// Datagrams the kernel dropped at full UDP receive buffers in the home agent's namespace.
fn rcvbuf_errors(lab: &Lab) -> u64 {
    lab.net
        .sh("ha", "cat /proc/net/snmp")
        .ok()
        .and_then(|s| {
            let mut udp = s.lines().filter(|l| l.starts_with("Udp:"));
            let (h, v) = (udp.next()?, udp.next()?);
            let i = h.split_whitespace().position(|k| k == "RcvbufErrors")?;
            v.split_whitespace().nth(i)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Starts a flood of `kind` toward `target` (the home agent or the sink) for longer than
/// the TCP runs take.
fn start_flood(
    lab: &mut Lab,
    tools: &Path,
    kind: Kind,
    target: &str,
    spi: u32,
    o: &BenchOptions,
) -> LabResult<()> {
    let port = if kind == Kind::HaBu { 4191 } else { 4500 };
    let bad = |e: std::net::AddrParseError| LabError(format!("flood address: {e}"));
    FloodArgs {
        target: SocketAddrV4::new(target.parse().map_err(bad)?, port),
        kind,
        rate: RATE,
        secs: o.runs as f64 * (f64::from(o.secs) + 2.0) + 10.0,
        ports: 256,
        ha: HA.parse().map_err(bad)?,
        base: BU_BASE.parse().map_err(bad)?,
        spoof: HOA.parse().map_err(bad)?,
        spi,
    }
    .spawn(lab, tools)?;
    // Let the flood reach its rate first.
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// The flooder's JSON line, after it stopped.
fn stop_flood(lab: &mut Lab) -> serde_json::Value {
    lab.net.stop("flood");
    serde_json::from_str(lab.net.log("flood").trim()).unwrap_or_default()
}

/// Runs the part: the home agent and mobile node started, the MN alone, then each flood
/// after its control; both stopped at the end.
pub(super) fn figures(
    lab: &mut Lab,
    tools: &Path,
    t: &mut Table,
    o: &BenchOptions,
) -> LabResult<()> {
    // The attacker reaches the home agent's IPv4 address through the gateway's router, as
    // any host of the Internet would.
    lab.net
        .sh("atk", &format!("ip route replace {HA4}/32 via {GW4}"))?;
    // With the home agent's defaults (the kernel's per-source budget), then without it.
    for budget in [true, false] {
        lab.write_dsmip_configs(&DsmipOptions {
            ipsec: Some(LabIpsec::ike()?),
            ha_extra: if budget {
                String::new()
            } else {
                "source_packet_rate = 0\n".into()
            },
            ..DsmipOptions::default()
        })?;
        lab.start_ha()?;
        lab.start_mn()?;
        let tag = if budget { "" } else { ", no budget" };
        let res = measure(lab, tools, t, o, tag);
        lab.net.stop("flood");
        lab.net.stop("mn");
        lab.stop_ha();
        res?;
    }
    Ok(())
}

/// The MN alone, then each flood after its control; `tag` ends every figure's name.
fn measure(
    lab: &mut Lab,
    tools: &Path,
    t: &mut Table,
    o: &BenchOptions,
    tag: &str,
) -> LabResult<()> {
    // Wherever the earlier parts left the MN's IPv4 address.
    lab.wait_registered("udp", "192.0.2.", 0)?;
    let pid = ha_pid(lab)?;
    let from_hoa = format!("-B {HOA}");
    t.add_runs(
        &format!("hados: MN tcp, no attack{tag}"),
        tcp(lab, "cn", CN, &from_hoa, o)?,
        "Gbit/s",
    );
    let (_, r) = mn_state(lab)?;
    let spi = payload_sa(&r)
        .map(|s| s.0)
        .ok_or_else(|| LabError("the home agent has no inbound payload SA".into()))?;
    for kind in Kind::HA {
        let k = kind.name();
        // The control: the same datagrams at the same rate into the attacker's sink.
        start_flood(lab, tools, kind, SINK, spi, o)?;
        let c = tcp(lab, "cn", CN, &from_hoa, o);
        let cf = stop_flood(lab);
        t.add_runs(&format!("hados: MN tcp, control {k}{tag}"), c?, "Gbit/s");
        t.add(
            &format!("hados: control rate, {k}{tag}"),
            cf["pps"].as_f64().unwrap_or(f64::NAN),
            "pkt/s",
        );

        let (before, r0) = mn_state(lab)?;
        let rss0 = rss_bytes(pid) as f64 / 1e6;
        let rcv0 = rcvbuf_errors(lab);
        start_flood(lab, tools, kind, HA4, spi, o)?;
        let t0 = Instant::now();
        let cpu0 = cpu_ns(pid);
        let u = tcp(lab, "cn", CN, &from_hoa, o);
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = cpu_ns(pid).saturating_sub(cpu0) as f64 / 1e9 / elapsed;
        let f = stop_flood(lab);
        // What the flood left behind (its last datagrams are read by now).
        std::thread::sleep(Duration::from_millis(200));
        let (after, r1) = mn_state(lab)?;
        let rss1 = rss_bytes(pid) as f64 / 1e6;
        t.add_runs(&format!("hados: MN tcp, {k} flood{tag}"), u?, "Gbit/s");
        t.add(
            &format!("hados: flood rate, {k}{tag}"),
            f["pps"].as_f64().unwrap_or(f64::NAN),
            "pkt/s",
        );
        t.add(
            &format!("hados: flood sent, {k}{tag}"),
            f["sent"].as_f64().unwrap_or(f64::NAN),
            "pkts",
        );
        for c in counters(kind) {
            t.add(
                &format!("hados: HA {c}, {k} flood{tag}"),
                r1.counter(c).saturating_sub(r0.counter(c)) as f64,
                "pkts",
            );
        }
        t.add(
            &format!("hados: HA kernel rcvbuf drops, {k}{tag}"),
            rcvbuf_errors(lab).saturating_sub(rcv0) as f64,
            "pkts",
        );
        t.add(&format!("hados: HA CPU, {k}{tag}"), cpu, "cores");
        t.add(&format!("hados: HA rss before, {k}{tag}"), rss0, "MB");
        t.add(&format!("hados: HA rss after, {k}{tag}"), rss1, "MB");
        t.add(
            &format!("hados: HA bindings after, {k}{tag}"),
            after.bindings.len() as f64,
            "bindings",
        );
        // The MN's own traffic moves the SA's sequence number forward; the flood's
        // sequence numbers start at 2^30, far ahead of it: a window moved there is the
        // flood's doing.
        let moved = before.bindings != after.bindings
            || before.coa != after.coa
            || after.sa_seq >= 0x4000_0000;
        t.add(
            &format!("hados: MN state moved, {k}{tag}"),
            f64::from(u8::from(moved)),
            "bool",
        );
    }
    for kind in Kind::HA {
        let k = kind.name();
        let name = format!("hados: MN tcp, {k} flood{tag}");
        t.ratio(&name, &format!("hados: MN tcp, no attack{tag}"), None);
        let target = tag.is_empty().then_some(">= 0.9");
        t.ratio(&name, &format!("hados: MN tcp, control {k}{tag}"), target);
    }
    Ok(())
}
