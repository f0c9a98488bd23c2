//! The DoS figures (issue 14, part `dos`): the MN's TCP throughput through the tunnel while
//! one IPv4 address (the attacker's namespace) floods the gateway, as ratios to the same run
//! without attack and to a control that burns the same attacker CPU without reaching the
//! gateway; the attacker's live states, the gateway's CPU and memory, the kernel's drops.
//!
//! The gateway runs with its defaults (one worker, the per-IPv4 state limits, the kernel's
//! per-source packet budget), restarted for each flood so that every flood meets a fresh
//! gateway; each flood is measured twice, with the budget (`source_packet_rate` at its
//! default) and without it (`source_packet_rate = 0`), in the same run. Then the home agent
//! under attack ([`super::hados`]), with the same control sink.

use super::flood::{FloodArgs, Kind};
use super::loadgen::{cpu_ns, rss_bytes};
use super::{gateway_pid, tcp, BenchOptions, Table};
use crate::lab::{wait_for, Lab, ATTACKER4, CN, GW4, HA};
use crate::netns::{LabError, LabResult};
use m6t::status::Report;
use std::net::SocketAddrV4;
use std::path::Path;
use std::time::{Duration, Instant};

/// The flood's rate (the figure: about 0.5 M datagrams/s from 256 ports).
const RATE: u32 = 500_000;
/// Where the control sends: an address routed into a veth pair on the attacker's side.
const SINK: &str = "198.51.100.250";
/// Base of the flood's new sources: inside the lab's mobile-node prefix, away from the MN.
const FLOOD_BASE: &str = "fd00:6d36:7400:9::";
/// Gateway config keys the bench's other parts raise and this part leaves at their defaults.
const BENCH_KEYS: &[&str] = &[
    "new_state_rate",
    "new_state_burst",
    "max_states_per_ipv4",
    "max_states",
    "source_packet_rate",
    "source_packet_burst",
    "workers",
];

/// What one measurement under a flood gave.
struct Under {
    tcp: Vec<f64>,
    flood_pps: f64,
    attacker_states: f64,
    gateway_cpu: f64,
    kernel_drops_pps: f64,
    rss_before: f64,
    rss_after: f64,
}

/// Restarts the gateway with its defaults, with or without the per-source budget, and waits
/// until the MN is served again (its next packet creates its state anew). Returns the pid.
fn restart_gateway(lab: &mut Lab, budget: bool) -> LabResult<u32> {
    for name in ["gateway", "gateway2", "gateway-dos"] {
        lab.net.stop(name);
    }
    let base = std::fs::read_to_string(lab.net.dir.join("gateway.toml"))
        .map_err(|e| LabError(format!("gateway.toml: {e}")))?;
    let mut cfg: String = base
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            !BENCH_KEYS.contains(&key)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    if !budget {
        cfg.push_str("source_packet_rate = 0\n");
    }
    let path = lab.net.write("gateway-dos.toml", &cfg)?;
    let _ = std::fs::remove_file(&lab.gw_sock);
    let bin = lab.bin_path.display().to_string();
    lab.net.spawn(
        "gw",
        "gateway-dos",
        &[&bin, "gateway", "--config", &path.display().to_string()],
    )?;
    let sock = lab.gw_sock.clone();
    wait_for(
        "the gateway's control socket",
        Duration::from_secs(10),
        || Ok(sock.exists().then_some(())),
    )
    .map_err(|e| LabError(format!("{e}\n{}", lab.net.log("gateway-dos"))))?;
    // The MN's first packet makes its state again; the HA's answer activates it.
    wait_for("the MN served again", Duration::from_secs(20), || {
        Ok((lab.ping("mn", HA, 1, 56)?.received == 1).then_some(()))
    })?;
    gateway_pid(lab)
}

fn flood_json(lab: &Lab) -> serde_json::Value {
    serde_json::from_str(lab.net.log("flood").trim()).unwrap_or_default()
}

/// The MN's TCP throughput while the flooder sends `kind` to `target`; with `pid` (the
/// gateway's), the gateway-side figures too.
fn under(
    lab: &mut Lab,
    tools: &Path,
    kind: Kind,
    target: &str,
    pid: Option<u32>,
    o: &BenchOptions,
) -> LabResult<Under> {
    let spoof = lab
        .client_address()?
        .0
        .ok_or_else(|| LabError("the client has no tunnel address".into()))?;
    let secs = o.runs as f64 * (f64::from(o.secs) + 2.0) + 10.0;
    let rss_before = pid.map_or(f64::NAN, |p| rss_bytes(p) as f64 / 1e6);
    let drops0 = pid.map_or(0, |_| {
        lab.gateway()
            .map(|r| r.counter("drop_source_budget"))
            .unwrap_or(0)
    });
    let bad = |e: std::net::AddrParseError| LabError(format!("flood address: {e}"));
    FloodArgs {
        target: SocketAddrV4::new(target.parse().map_err(bad)?, 3544),
        kind,
        rate: RATE,
        secs,
        ports: 256,
        ha: HA.parse().map_err(bad)?,
        base: FLOOD_BASE.parse().map_err(bad)?,
        spoof,
        spi: 0,
    }
    .spawn(lab, tools)?;
    // Let the flood reach its rate (and the gateway its steady state) first.
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let cpu0 = pid.map_or(0, cpu_ns);
    let tcp = tcp(lab, "cn", CN, "", o);
    let elapsed = t0.elapsed().as_secs_f64();
    let gateway_cpu = pid.map_or(f64::NAN, |p| {
        cpu_ns(p).saturating_sub(cpu0) as f64 / 1e9 / elapsed
    });
    let (attacker_states, drops1, rss_after) = match pid {
        Some(p) => {
            let r = lab.gateway()?;
            let states = match &r {
                Report::Gateway { states, .. } => states
                    .iter()
                    .filter(|s| s.peer.ip().to_string() == ATTACKER4)
                    .count() as f64,
                _ => f64::NAN,
            };
            (
                states,
                r.counter("drop_source_budget"),
                rss_bytes(p) as f64 / 1e6,
            )
        }
        None => (f64::NAN, 0, f64::NAN),
    };
    lab.net.stop("flood");
    let f = flood_json(lab);
    Ok(Under {
        tcp: tcp?,
        flood_pps: f["pps"].as_f64().unwrap_or(f64::NAN),
        attacker_states,
        gateway_cpu,
        // From before the flood started (0.5 s before the TCP runs) to after them.
        kernel_drops_pps: drops1.saturating_sub(drops0) as f64 / (elapsed + 0.5),
        rss_before,
        rss_after,
    })
}

/// Runs the part: the control, the flood with the budget and without it, for every kind.
/// The control's sink: a veth pair inside the attacker's namespace, the far end up without
/// an address (a static neighbour entry spares ARP), forwarding off: the kernel sends,
/// receives and drops each datagram, as it would toward the gateway, and nothing reaches
/// the gateway's namespace.
pub(super) fn sink(lab: &Lab) -> LabResult<()> {
    lab.net.sh(
        "atk",
        &format!(
            "ip link show sink0 >/dev/null 2>&1 || {{ ip link add sink0 type veth peer name sink1 && \
             ip link set sink0 up && ip link set sink1 up && sysctl -qw net.ipv4.ip_forward=0 && \
             ip route add {SINK}/32 dev sink0 && \
             ip neigh replace {SINK} lladdr $(cat /sys/class/net/sink1/address) dev sink0 nud permanent; }}"
        ),
    )?;
    Ok(())
}

pub(super) fn figures(
    lab: &mut Lab,
    tools: &Path,
    t: &mut Table,
    o: &BenchOptions,
) -> LabResult<()> {
    sink(lab)?;
    // The MN alone, with the budget and without (its own traffic is never budgeted).
    for budget in [true, false] {
        restart_gateway(lab, budget)?;
        let tag = if budget { "" } else { ", no budget" };
        t.add_runs(
            &format!("dos: MN tcp, no attack{tag}"),
            tcp(lab, "cn", CN, "", o)?,
            "Gbit/s",
        );
    }
    for kind in Kind::ALL {
        let k = kind.name();
        for budget in [true, false] {
            let pid = restart_gateway(lab, budget)?;
            let tag = if budget { "" } else { ", no budget" };
            // The control first, against the same gateway: the attacker's CPU burnt, the
            // gateway untouched.
            let c = under(lab, tools, kind, SINK, None, o)?;
            t.add_runs(&format!("dos: MN tcp, control {k}{tag}"), c.tcp, "Gbit/s");
            t.add(
                &format!("dos: control rate, {k}{tag}"),
                c.flood_pps,
                "pkt/s",
            );
            let u = under(lab, tools, kind, GW4, Some(pid), o)?;
            t.add_runs(&format!("dos: MN tcp, {k} flood{tag}"), u.tcp, "Gbit/s");
            t.add(&format!("dos: flood rate, {k}{tag}"), u.flood_pps, "pkt/s");
            t.add(
                &format!("dos: attacker states, {k}{tag}"),
                u.attacker_states,
                "states",
            );
            t.add(
                &format!("dos: gateway CPU, {k}{tag}"),
                u.gateway_cpu,
                "cores",
            );
            t.add(
                &format!("dos: kernel drops, {k}{tag}"),
                u.kernel_drops_pps,
                "pkt/s",
            );
            t.add(
                &format!("dos: gateway rss before, {k}{tag}"),
                u.rss_before,
                "MB",
            );
            t.add(
                &format!("dos: gateway rss after, {k}{tag}"),
                u.rss_after,
                "MB",
            );
        }
    }
    t.ratio(
        "dos: MN tcp, no attack",
        "dos: MN tcp, no attack, no budget",
        None,
    );
    for kind in Kind::ALL {
        let k = kind.name();
        for tag in ["", ", no budget"] {
            let name = format!("dos: MN tcp, {k} flood{tag}");
            t.ratio(&name, &format!("dos: MN tcp, no attack{tag}"), None);
            let target = (tag.is_empty()).then_some(">= 0.9");
            t.ratio(&name, &format!("dos: MN tcp, control {k}{tag}"), target);
        }
    }
    super::hados::figures(lab, tools, t, o)
}
