//! `m6t bench`: m6t, the plain path and Teredo measured side by side in the same namespaces
//! in one run, every figure reported as a ratio to its baseline from the same run (absolute
//! numbers move from run to run on shared 2-core machines). Medians of several runs.
//!
//! Two binaries run in the namespaces: the daemons are the `m6t` binary (the lab's
//! [`Lab::bin_path`]), the load generator and the syscall floor the `m6t-lab` binary
//! (`tools`, its hidden `loadgen` and `floor` subcommands).

mod compare;
mod dos;
mod dsmip;
pub mod flood;
pub mod floor;
mod hados;
pub mod loadgen;
pub mod teredo;
mod wireguard;

use crate::lab::{Lab, LabOptions, CN, CN4, HA, MN4};
use crate::netns::{LabError, LabResult};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// Median value.
    pub value: f64,
    /// Unit of `value`.
    pub unit: String,
    /// Every run's value, when the figure is a median of several (its spread).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<f64>,
}

/// A figure in proportion to its baseline from the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// The figure.
    pub name: String,
    /// Its baseline.
    pub baseline: String,
    /// `value / baseline value`.
    pub ratio: f64,
    /// The target the issue sets, as text.
    pub target: Option<String>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Absolute figures (they move from run to run).
    pub figures: Vec<Figure>,
    /// Ratios to baselines measured in the same run.
    pub ratios: Vec<Ratio>,
    /// The comparison's tables (throughput, overhead and MTU, handover and attach), when
    /// the run measured the comparison.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<compare::CompareTable>,
}

/// How long and how often.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// Runs per figure (median).
    pub runs: usize,
    /// Seconds per throughput run.
    pub secs: u32,
    /// State-table sizes for the gateway scale figures.
    pub scale: [u32; 3],
    /// Longest wait for Teredo to work again after a handover.
    pub teredo_handover_cap: Duration,
    /// Seconds of keep-alive load for the idle-MN CPU figure (split into `runs` windows).
    pub idle_secs: f64,
    /// Gateway active-state lifetime: longer than the scale phases take, short enough that
    /// the mass expiry (for the GC figure) comes soon after.
    pub state_lifetime: f64,
}

impl BenchOptions {
    /// The full harness (several minutes).
    pub fn full() -> Self {
        BenchOptions {
            runs: 3,
            secs: 5,
            scale: [1_000, 100_000, 1_000_000],
            teredo_handover_cap: Duration::from_secs(60),
            idle_secs: 30.0,
            state_lifetime: 120.0,
        }
    }
    /// The smoke mode CI runs: every measurement once, briefly.
    pub fn quick() -> Self {
        BenchOptions {
            runs: 1,
            secs: 1,
            scale: [1_000, 5_000, 10_000],
            teredo_handover_cap: Duration::from_secs(40),
            idle_secs: 2.0,
            state_lifetime: 20.0,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Table {
    rows: Vec<Figure>,
    ratios: Vec<Ratio>,
}

impl Table {
    fn add(&mut self, name: &str, value: f64, unit: &str) {
        println!("  {name:<44} {value:>12.3} {unit}");
        self.rows.push(Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            runs: Vec::new(),
        });
    }
    /// Adds the median of several runs, keeping every run's value.
    fn add_runs(&mut self, name: &str, runs: Vec<f64>, unit: &str) {
        let value = median(runs.clone());
        let list: Vec<String> = runs.iter().map(|v| format!("{v:.3}")).collect();
        println!(
            "  {name:<44} {value:>12.3} {unit}  (runs: {})",
            list.join(", ")
        );
        self.rows.push(Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            runs,
        });
    }
    fn get(&self, name: &str) -> f64 {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.value)
            .unwrap_or(f64::NAN)
    }
    fn has(&self, name: &str) -> bool {
        self.rows.iter().any(|r| r.name == name)
    }
    /// Adds a ratio when both figures were measured (a group left out by `--only` has none).
    fn ratio(&mut self, name: &str, baseline: &str, target: Option<&str>) {
        if !self.has(name) || !self.has(baseline) {
            return;
        }
        let ratio = self.get(name) / self.get(baseline);
        self.ratios.push(Ratio {
            name: name.into(),
            baseline: baseline.into(),
            ratio,
            target: target.map(Into::into),
        });
    }
}

fn ping_avg(lab: &Lab, dst: &str, n: u32) -> LabResult<f64> {
    let o = lab
        .net
        .sh("mn", &format!("ping -n -q -c {n} -i 0.01 -W 1 {dst}"))?;
    o.lines()
        .find(|l| l.starts_with("rtt"))
        .and_then(|l| l.split(" = ").nth(1))
        .and_then(|v| v.split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| LabError(format!("ping {dst}: {o}")))
}

fn iperf(
    lab: &mut Lab,
    server: &str,
    dst: &str,
    args: &str,
    secs: u32,
) -> LabResult<serde_json::Value> {
    lab.net
        .spawn(server, "iperf3-server", &["iperf3", "-s", "-1", "-B", dst])?;
    std::thread::sleep(Duration::from_millis(300));
    let out = lab
        .net
        .sh("mn", &format!("iperf3 -c {dst} -t {secs} -J {args}"));
    lab.net.stop("iperf3-server");
    serde_json::from_str(&out?).map_err(|e| LabError(format!("iperf3: {e}")))
}

fn tcp(
    lab: &mut Lab,
    server: &str,
    dst: &str,
    args: &str,
    o: &BenchOptions,
) -> LabResult<Vec<f64>> {
    let mut v = Vec::new();
    for _ in 0..o.runs {
        let j = iperf(lab, server, dst, args, o.secs)?;
        v.push(
            j["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(f64::NAN)
                / 1e9,
        );
    }
    Ok(v)
}

fn udp_pps(lab: &mut Lab, dst: &str, len: u32, o: &BenchOptions) -> LabResult<Vec<f64>> {
    udp_pps_with(lab, dst, len, "", o)
}

/// Packets per second received of `len`-byte UDP datagrams sent as fast as iperf3 can,
/// with `extra` iperf3 client arguments (e.g. `-B` a source address).
fn udp_pps_with(
    lab: &mut Lab,
    dst: &str,
    len: u32,
    extra: &str,
    o: &BenchOptions,
) -> LabResult<Vec<f64>> {
    let mut v = Vec::new();
    for _ in 0..o.runs {
        let j = iperf(lab, "cn", dst, &format!("-u -b 0 -l {len} {extra}"), o.secs)?;
        let s = &j["end"]["sum"];
        let pk = s["packets"].as_f64().unwrap_or(f64::NAN);
        let lost = s["lost_packets"].as_f64().unwrap_or(0.0);
        let secs = s["seconds"].as_f64().unwrap_or(f64::from(o.secs));
        v.push((pk - lost) / secs);
    }
    Ok(v)
}

fn set_offloads(lab: &Lab, on: bool) -> LabResult<()> {
    let v = if on { "on" } else { "off" };
    for r in ["mn", "nat", "gw", "ha", "cn"] {
        lab.net.sh(
            r,
            &format!(
                "for i in $(ls /sys/class/net); do ethtool -K $i tso {v} gso {v} gro {v} >/dev/null 2>&1; \
                 ethtool -K $i tx-udp-segmentation {v} >/dev/null 2>&1; done; true"
            ),
        )?;
    }
    Ok(())
}

/// A probe sending an ICMPv6 echo request every `interval` seconds whatever happens:
/// unlike ping it never backs off after a failed send, so it does not hide the end of a
/// handover.
const PROBE_PY: &str = r#"
import socket, sys, time
dst, secs, interval = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
end = time.time() + secs
seq = 0
while time.time() < end:
    seq = (seq + 1) & 0xffff
    try:
        s.sendto(bytes([128, 0, 0, 0, 0x6d, 0x36]) + seq.to_bytes(2, "big") + b"m6tprobe", (dst, 0))
    except OSError:
        pass
    time.sleep(interval)
"#;

/// Time from an IPv4 address change of the MN until the first packet delivered through
/// the new path. A probe sends an echo request every 0.5 ms from before the change and
/// tcpdump timestamps the echo replies on the tunnel interface `iface`; `ip monitor`
/// timestamps the kernel's removal of the old address (the change), so neither the `ip`
/// commands' own start-up nor the probe's is counted. The clock stops at the first reply to
/// an address other than the one in use before (the new tunnel or Teredo address). Capped
/// at `cap`.
fn handover_to(
    lab: &Lab,
    iface: &str,
    to: &str,
    from: &str,
    dst: &str,
    cap: Duration,
) -> LabResult<f64> {
    let log = lab.net.dir.join("handover-tcpdump.log");
    let mon = lab.net.dir.join("handover-monitor.log");
    let probe = lab.net.write("probe.py", PROBE_PY)?;
    let secs = cap.as_secs_f64().ceil() as u64 + 1;
    let out = lab.net.sh(
        "mn",
        &format!(
            "tcpdump -i {iface} -nn -tt -l 'icmp6 and ip6[40] == 129' > {log} 2>/dev/null & d=$!; \
             ip -ts monitor address > {mon} 2>/dev/null & m=$!; \
             /usr/bin/python3 {probe} {dst} {secs} 0.0005 & p=$!; sleep 0.4; \
             ip addr add {to}/24 dev eth0 && ip addr del {from}/24 dev eth0; sleep 0.05; \
             ts=$(grep -m1 'Deleted.*inet {from}/' {mon} | sed -e 's/^\\[//' -e 's/\\].*//'); \
             t0=$(date -d \"$ts\" +%s.%N); \
             i=0; while [ $i -lt {tries} ]; do sleep 0.05; i=$((i+1)); \
               n=$(awk -v t0=$t0 '$2 == \"IP6\" {{ d=$5; sub(/:$/, \"\", d); if ($1 < t0) old=d; else if (d != old) {{ print $1; exit }} }}' {log}); \
               [ -n \"$n\" ] && break; done; kill $p $d $m 2>/dev/null; wait $d 2>/dev/null; echo $t0 $n",
            log = log.display(),
            mon = mon.display(),
            probe = probe.display(),
            tries = (cap.as_millis() / 50).max(1)
        ),
    )?;
    let mut it = out.split_whitespace();
    let t0: f64 = it
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| LabError(format!("handover: no address-change timestamp: {out}")))?;
    match it.next().and_then(|v| v.parse::<f64>().ok()) {
        Some(t1) => Ok((t1 - t0) * 1000.0),
        None => Ok(f64::INFINITY),
    }
}

/// Runs the load generator (`m6t-lab loadgen`, the `tools` binary) in the attacker's
/// namespace and returns one JSON object per phase.
fn loadgen(
    lab: &Lab,
    tools: &Path,
    pid: u32,
    phases: &[String],
    no_counters: bool,
) -> LabResult<Vec<serde_json::Value>> {
    let tools = tools.display().to_string();
    let mut cmd = format!(
        "{tools} loadgen --gateway 203.0.113.1:3544 --ha {HA} --base fd00:6d36:7400:8:: --control {} --gateway-pid {pid} --sockets 64",
        lab.gw_sock.display()
    );
    if no_counters {
        cmd.push_str(" --no-counters");
    }
    for p in phases {
        cmd.push_str(&format!(" --phase {p}"));
    }
    let out = lab.net.sh("atk", &cmd)?;
    out.lines()
        .map(|l| serde_json::from_str(l).map_err(|e| LabError(format!("loadgen: {e}: {l}"))))
        .collect()
}

/// The `m6t` daemon in `role`'s namespace: the process whose comm is `m6t` (the daemons
/// run from the `m6t` binary; the floor, also in `gw`, is `m6t-lab`).
pub(super) fn daemon_pid(lab: &Lab, role: &str) -> LabResult<u32> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", &lab.net.ns(role)])
        .output()
        .map_err(|e| LabError(format!("ip netns pids: {e}")))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .map(|c| c.trim() == "m6t")
                .unwrap_or(false)
        })
        .ok_or_else(|| LabError(format!("no m6t daemon in namespace {role}")))
}

/// The gateway daemon in the `gw` namespace.
fn gateway_pid(lab: &Lab) -> LabResult<u32> {
    daemon_pid(lab, "gw")
}

/// A part of the harness, to run on its own with `m6t bench --only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// m6t through the tunnel (RTT, TCP, UDP rates, handover) and the plain path with
    /// offloads on.
    Tunnel,
    /// Teredo (miredo) behind the same NAT.
    Teredo,
    /// WireGuard (wireguard-go) behind the same NAT, the userspace tunnel to compare with.
    Wireguard,
    /// DSMIPv6 through the same NAT, payload in the clear and in ESP.
    Dsmip,
    /// The plain path with offloads off and MSS 1220.
    Ceiling,
    /// Gateway forwarding rate and memory at each table size, then the GC pause.
    Scale,
    /// Gateway CPU with 10 k idle MNs sending keep-alives.
    Idle,
    /// The syscall floor (recvmmsg -> TUN write).
    Floor,
    /// The gateway with two workers.
    Workers,
    /// The gateway (defaults) flooded from one IPv4 address: the MN's throughput against
    /// no attack and a CPU-matched control, with and without the kernel's per-source budget;
    /// then the home agent's part ([`Group::HaDos`]).
    Dos,
    /// The DSMIPv6 home agent flooded from one IPv4 address (BUs, ESP, IKE_SA_INIT), with
    /// and without its per-source budget: the second half of `dos`, on its own.
    HaDos,
    /// The comparison of seed 004: the tunnel, Teredo and DSMIPv6 groups, then the ESP rows
    /// over m6t and Teredo, DSMIPv6 handovers and attach with and without IKEv2, and the
    /// three tables (throughput, overhead and MTU, handover and attach).
    Compare,
}

impl std::str::FromStr for Group {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "tunnel" => Group::Tunnel,
            "teredo" => Group::Teredo,
            "wireguard" => Group::Wireguard,
            "dsmip" => Group::Dsmip,
            "ceiling" => Group::Ceiling,
            "scale" => Group::Scale,
            "idle" => Group::Idle,
            "floor" => Group::Floor,
            "workers" => Group::Workers,
            "dos" => Group::Dos,
            "ha-dos" => Group::HaDos,
            "compare" => Group::Compare,
            _ => {
                return Err(format!(
                "unknown group `{s}` (tunnel, teredo, wireguard, dsmip, ceiling, scale, idle, floor, workers, dos, ha-dos, compare)"
            ))
            }
        })
    }
}

/// Runs the harness (the groups in `only`, or all of them when it is empty), prints the
/// table and writes JSON to `out`. A ratio is reported when both its figures were measured.
/// `bin` is the `m6t` binary (the daemons), `tools` the `m6t-lab` binary (the load
/// generator and the syscall floor).
pub fn run(bin: &Path, tools: &Path, o: BenchOptions, only: &[Group], out: &Path) -> LabResult<()> {
    let t0 = Instant::now();
    // The comparison is built on the figures of the systems' own groups.
    let wants = |g: Group| {
        only.is_empty()
            || only.contains(&g)
            || (only.contains(&Group::Compare)
                && matches!(
                    g,
                    Group::Tunnel | Group::Teredo | Group::Wireguard | Group::Dsmip
                ))
    };
    let mut lo = LabOptions::new("m6tbench");
    // Long enough for the scale phases; generous limits for the load generator (one IPv4
    // address standing for many nodes: no per-source budget either; the dos part restarts
    // the gateway with its defaults).
    lo.active_lifetime = o.state_lifetime;
    lo.keepalive_interval = 5.0;
    lo.nat_udp_timeouts = (30, 120);
    lo.gateway_extra = "new_state_rate = 1000000000\nnew_state_burst = 1000000000\n\
                        max_states_per_ipv4 = 2000000\nmax_states = 2000000\n\
                        source_packet_rate = 0\n"
        .into();
    let mut lab = Lab::start(bin, &lo)?;
    let mut t = Table {
        rows: Vec::new(),
        ratios: Vec::new(),
    };
    println!("m6t bench: runs {}, {} s each; medians", o.runs, o.secs);
    if wants(Group::Tunnel) {
        tunnel(&mut lab, &mut t, &o)?;
    }
    if wants(Group::Teredo) {
        teredo_figures(&mut lab, &mut t, &o)?;
    }
    if wants(Group::Wireguard) {
        wireguard::figures(&mut lab, &mut t, &o)?;
    }
    if wants(Group::Dsmip) {
        dsmip::figures(&mut lab, &mut t, &o)?;
    }
    if wants(Group::Compare) {
        compare::esp_rows(&mut lab, &mut t, &o)?;
        compare::dsmip_moves(&mut lab, &mut t, &o)?;
    }
    if wants(Group::Ceiling) {
        // The per-packet ceiling: offloads off, MSS 1220.
        set_offloads(&lab, false)?;
        t.add_runs(
            "plain tcp MN->CN (offloads off, MSS 1220)",
            tcp(&mut lab, "cn", CN4, "-M 1220", &o)?,
            "Gbit/s",
        );
        set_offloads(&lab, true)?;
    }
    if wants(Group::Scale) {
        scale(&lab, tools, &mut t, &o)?;
    }
    if wants(Group::Idle) {
        idle(&lab, tools, &mut t, &o)?;
    }
    if wants(Group::Floor) {
        floor_figure(&mut lab, tools, &mut t, &o)?;
    }
    if wants(Group::Workers) {
        workers(&mut lab, tools, &mut t, &o)?;
    }
    // Last: it restarts the gateway with its defaults.
    if wants(Group::Dos) {
        dos::figures(&mut lab, tools, &mut t, &o)?;
    } else if wants(Group::HaDos) {
        dos::sink(&lab)?;
        hados::figures(&mut lab, tools, &mut t, &o)?;
    }

    let (s0, s2) = (o.scale[0], o.scale[2]);
    t.ratio("m6t handover", "rtt + 5 ms", Some("<= 1"));
    t.ratio("m6t tcp MN->CN", "teredo tcp MN->CN", Some(">= 4"));
    t.ratio("m6t tcp CN->MN", "teredo tcp CN->MN", Some(">= 4"));
    t.ratio("teredo handover", "m6t handover", None);
    t.ratio("wireguard handover", "m6t handover", None);
    for dir in ["tcp MN->CN", "tcp CN->MN", "udp 64 B MN->CN"] {
        t.ratio(
            &format!("dsmip {dir}"),
            &format!("m6t {dir}"),
            Some(">= 0.9"),
        );
        t.ratio(
            &format!("dsmip ip-in-ip {dir}"),
            &format!("m6t {dir}"),
            None,
        );
        t.ratio(&format!("dsmip+esp {dir}"), &format!("dsmip {dir}"), None);
    }
    t.ratio(
        "m6t tcp MN->CN",
        "plain tcp MN->CN (IPv4, offloads on)",
        Some(">= 0.7"),
    );
    t.ratio(
        "m6t udp 64 B MN->CN",
        "plain udp 64 B MN->CN (IPv4, offloads on)",
        Some(">= 0.8"),
    );
    for dir in ["tcp MN->CN", "tcp CN->MN"] {
        t.ratio(&format!("m6t {dir}"), &format!("wireguard {dir}"), None);
        t.ratio(
            &format!("m6t+esp {dir}"),
            &format!("wireguard {dir}"),
            Some(">= 3"),
        );
        t.ratio(&format!("m6t+esp {dir}"), &format!("m6t {dir}"), None);
        t.ratio(
            &format!("teredo+esp {dir}"),
            &format!("m6t+esp {dir}"),
            None,
        );
    }
    for mv in ["IPv4->IPv4", "IPv4->IPv6", "IPv6->IPv4"] {
        t.ratio(&format!("dsmip handover {mv}"), "rtt + 5 ms", Some("<= 1"));
        t.ratio(
            &format!("dsmip+ike handover {mv}"),
            "rtt + 5 ms",
            Some("<= 1"),
        );
    }
    t.ratio(
        "m6t tcp MN->CN",
        "plain tcp MN->CN (offloads off, MSS 1220)",
        Some(">= 1.0"),
    );
    t.ratio(
        "plain tcp MN->CN (offloads off, MSS 1220)",
        "plain tcp MN->CN (IPv4, offloads on)",
        None,
    );
    t.ratio(
        "gateway bytes per state (largest step)",
        "bytes per state target",
        Some("<= 1"),
    );
    t.ratio(
        &format!("gateway fwd pps @ {s2} states"),
        &format!("gateway fwd pps @ {s0} states"),
        Some(">= 0.9"),
    );
    t.ratio("gateway longest GC pass", "GC pause target", Some("<= 1"));
    t.ratio(
        "gateway CPU, 10k idle MNs with keep-alives",
        "idle CPU target",
        Some("< 1"),
    );
    t.ratio(
        &format!("gateway fwd pps @ {s0} states"),
        "syscall floor (recvmmsg -> TUN write)",
        Some(">= 0.8"),
    );
    t.ratio(
        &format!("gateway fwd pps @ {s0} states, 2 workers"),
        &format!("gateway fwd pps @ {s0} states"),
        Some("> 1"),
    );

    let tables = if wants(Group::Compare) {
        compare::tables(&t)
    } else {
        Vec::new()
    };
    println!("\nratios (same run):");
    for r in &t.ratios {
        let tgt = r.target.as_deref().unwrap_or("");
        println!(
            "  {:<44} / {:<44} = {:>9.3}  {tgt}",
            r.name, r.baseline, r.ratio
        );
    }
    let res = Results {
        figures: t.rows,
        ratios: t.ratios,
        tables,
    };
    let json = serde_json::to_string_pretty(&res).unwrap_or_default();
    std::fs::write(out, json).map_err(|e| LabError(format!("{}: {e}", out.display())))?;
    println!(
        "\nwritten {} in {:.0} s",
        out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// m6t through the tunnel, and the plain path with offloads as they are.
fn tunnel(lab: &mut Lab, t: &mut Table, o: &BenchOptions) -> LabResult<()> {
    let rtt = ping_avg(lab, HA, 50)?;
    t.add("m6t rtt MN->HA", rtt, "ms");
    t.add_runs("m6t tcp MN->CN", tcp(lab, "cn", CN, "", o)?, "Gbit/s");
    t.add_runs("m6t tcp CN->MN", tcp(lab, "cn", CN, "-R", o)?, "Gbit/s");
    t.add_runs("m6t udp 64 B MN->CN", udp_pps(lab, CN, 64, o)?, "pkt/s");
    t.add_runs("m6t udp 1400 B MN->CN", udp_pps(lab, CN, 1400, o)?, "pkt/s");
    let mut hos = Vec::new();
    for i in 0..o.runs.max(2) {
        let (to, from) = if i % 2 == 0 {
            (MN4[1], MN4[0])
        } else {
            (MN4[0], MN4[1])
        };
        hos.push(handover_to(
            lab,
            "m6t0",
            to,
            from,
            HA,
            Duration::from_secs(10),
        )?);
        std::thread::sleep(Duration::from_millis(300));
    }
    t.add_runs("m6t handover", hos, "ms");
    t.add("rtt + 5 ms", rtt + 5.0, "ms");
    compare::m6t_attach(lab, t, o)?;
    compare::overhead(lab, t, "m6t", None, CN)?;
    t.add_runs(
        "plain tcp MN->CN (IPv4, offloads on)",
        tcp(lab, "cn", CN4, "", o)?,
        "Gbit/s",
    );
    t.add_runs(
        "plain tcp CN->MN (IPv4, offloads on)",
        tcp(lab, "cn", CN4, "-R", o)?,
        "Gbit/s",
    );
    t.add_runs(
        "plain udp 64 B MN->CN (IPv4, offloads on)",
        udp_pps(lab, CN4, 64, o)?,
        "pkt/s",
    );
    compare::overhead(lab, t, "plain", None, CN4)?;
    Ok(())
}

/// Teredo (miredo client behind the NAT, server and relay on the gateway side).
fn teredo_figures(lab: &mut Lab, t: &mut Table, o: &BenchOptions) -> LabResult<()> {
    teredo::start_infrastructure(lab)?;
    let q = teredo::start_client(lab)?;
    t.add("teredo qualification", q.as_secs_f64() * 1000.0, "ms");
    t.add("teredo rtt MN->HA", ping_avg(lab, HA, 50)?, "ms");
    t.add_runs("teredo tcp MN->CN", tcp(lab, "cn", CN, "", o)?, "Gbit/s");
    t.add_runs("teredo tcp CN->MN", tcp(lab, "cn", CN, "-R", o)?, "Gbit/s");
    let cur = lab.net.sh("mn", "ip -4 -o addr show dev eth0")?;
    let (to, from) = if cur.contains(MN4[0]) {
        (MN4[1], MN4[0])
    } else {
        (MN4[0], MN4[1])
    };
    t.add(
        "teredo handover",
        handover_to(lab, "teredo", to, from, CN, o.teredo_handover_cap)?,
        "ms",
    );
    t.add(
        "teredo attach",
        compare::attach(
            lab,
            None,
            CN,
            Duration::from_millis(1500),
            o.teredo_handover_cap,
        )?,
        "ms",
    );
    compare::overhead(lab, t, "teredo", None, CN)?;
    teredo::stop_client(lab);
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// Gateway forwarding and memory at each table size (median of `runs` blasts each), then
/// the longest GC pass when all those states expire at once.
fn scale(lab: &Lab, tools: &Path, t: &mut Table, o: &BenchOptions) -> LabResult<()> {
    let pid = gateway_pid(lab)?;
    let d = f64::from(o.secs);
    let mut phases = Vec::new();
    for n in o.scale {
        phases.push(format!("create:{n}"));
        // A warm-up run, not counted: the first blast after a large create still meets
        // the tail of the creation (temporary deadlines coming due, the last answers).
        phases.push(format!("blast:{}", (d / 2.0).min(2.0)));
        for _ in 0..o.runs {
            phases.push(format!("blast:{d}"));
        }
    }
    let res = loadgen(lab, tools, pid, &phases, false)?;
    let mut bps = f64::NAN;
    let per = 2 + o.runs;
    for (k, n) in o.scale.iter().enumerate() {
        let c = res.get(per * k).cloned().unwrap_or_default();
        let pps = (0..o.runs)
            .map(|r| {
                res.get(per * k + 2 + r)
                    .and_then(|b| b["pps"].as_f64())
                    .unwrap_or(f64::NAN)
            })
            .collect();
        t.add(
            &format!("gateway states after create {n}"),
            c["states"].as_f64().unwrap_or(f64::NAN),
            "states",
        );
        t.add_runs(&format!("gateway fwd pps @ {n} states"), pps, "pkt/s");
        t.add(
            &format!("gateway rss @ {n} states"),
            c["rss"].as_f64().unwrap_or(f64::NAN) / 1e6,
            "MB",
        );
        bps = c["bytes_per_state"].as_f64().unwrap_or(f64::NAN);
    }
    t.add("gateway bytes per state (largest step)", bps, "B");
    t.add("bytes per state target", 128.0, "B");
    // Let every load-generator state expire at once and read the longest GC pass.
    let wait = Instant::now();
    loop {
        let r = lab.report(&lab.gw_sock.clone()).ok();
        let states = r.as_ref().map(|r| r.counter("states")).unwrap_or(u64::MAX);
        if states <= 1 || wait.elapsed() > Duration::from_secs(240) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let pause = lab.gateway()?.counter("gc_max_pause_us");
    t.add("gateway longest GC pass", pause as f64 / 1000.0, "ms");
    t.add("GC pause target", 10.0, "ms");
    Ok(())
}

/// Gateway CPU while 10 k idle MNs send keep-alives every 30 s (the client's default):
/// the median of `runs` windows of `idle_secs / runs` seconds each.
fn idle(lab: &Lab, tools: &Path, t: &mut Table, o: &BenchOptions) -> LabResult<()> {
    let pid = gateway_pid(lab)?;
    let runs = o.runs.max(1);
    let window = o.idle_secs / runs as f64;
    let mut phases = vec!["create:10000".to_string()];
    phases.extend((0..runs).map(|_| format!("keepalive:10000:30:{window}")));
    let res = loadgen(lab, tools, pid, &phases, false)?;
    let cpu = res
        .iter()
        .skip(1)
        .map(|r| r["gateway_cpu"].as_f64().unwrap_or(f64::NAN) * 100.0)
        .collect();
    t.add_runs(
        "gateway CPU, 10k idle MNs with keep-alives",
        cpu,
        "% of a core",
    );
    t.add("idle CPU target", 1.0, "% of a core");
    Ok(())
}

/// The syscall floor (`m6t-lab floor`, the `tools` binary) on the same socket and TUN, the
/// gateway stopped.
fn floor_figure(lab: &mut Lab, tools: &Path, t: &mut Table, o: &BenchOptions) -> LabResult<()> {
    let d = f64::from(o.secs);
    lab.net.stop("gateway");
    let tools_s = tools.display().to_string();
    let secs_s = format!("{d}");
    lab.net.spawn(
        "gw",
        "floor",
        &[
            &tools_s,
            "floor",
            "--listen",
            "203.0.113.1",
            "--port",
            "3544",
            "--tun",
            "m6tgw0",
            "--secs",
            &secs_s,
        ],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    loadgen(lab, tools, 0, &[format!("blast:{}", d + 1.0)], true)?;
    let w = Instant::now();
    while lab.net.running("floor") && w.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let fl: serde_json::Value = serde_json::from_str(lab.net.log("floor").trim())
        .map_err(|e| LabError(format!("floor output: {e}: {}", lab.net.log("floor"))))?;
    t.add(
        "syscall floor (recvmmsg -> TUN write)",
        fl["floor_pps"].as_f64().unwrap_or(f64::NAN),
        "pkt/s",
    );
    Ok(())
}

/// Multi-core: the forwarding run at the smallest table size against a gateway with two
/// workers (SO_REUSEPORT sockets steered by MN address, two TUN queues, states in two
/// shards), and against one worker when the scale group did not already measure it.
fn workers(lab: &mut Lab, tools: &Path, t: &mut Table, o: &BenchOptions) -> LabResult<()> {
    let d = f64::from(o.secs);
    let s0 = o.scale[0];
    let one = format!("gateway fwd pps @ {s0} states");
    if !t.has(&one) && lab.net.running("gateway") {
        let pid = gateway_pid(lab)?;
        let mut phases = vec![format!("create:{s0}")];
        phases.extend((0..o.runs).map(|_| format!("blast:{d}")));
        let r = loadgen(lab, tools, pid, &phases, false)?;
        let pps = r.iter().skip(1).filter_map(|b| b["pps"].as_f64()).collect();
        t.add_runs(&one, pps, "pkt/s");
    }
    lab.net.stop("gateway");
    let bin_s = lab.bin_path.display().to_string();
    let cfg1 = std::fs::read_to_string(lab.net.dir.join("gateway.toml"))
        .map_err(|e| LabError(format!("gateway.toml: {e}")))?;
    let cfg2 = lab
        .net
        .write("gateway2.toml", &format!("{cfg1}workers = 2\n"))?;
    let _ = std::fs::remove_file(&lab.gw_sock);
    lab.net.spawn(
        "gw",
        "gateway2",
        &[&bin_s, "gateway", "--config", &cfg2.display().to_string()],
    )?;
    let w = Instant::now();
    while !lab.gw_sock.exists() && w.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let pid2 = gateway_pid(lab)?;
    let mut phases = vec![format!("create:{s0}")];
    phases.extend((0..o.runs).map(|_| format!("blast:{d}")));
    let r2 = loadgen(lab, tools, pid2, &phases, false)?;
    let pps = r2
        .iter()
        .skip(1)
        .filter_map(|b| b["pps"].as_f64())
        .collect();
    t.add_runs(
        &format!("gateway fwd pps @ {s0} states, 2 workers"),
        pps,
        "pkt/s",
    );
    lab.net.stop("gateway2");
    Ok(())
}
