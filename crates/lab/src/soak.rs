//! `m6t-lab soak`: the fault soak of issue 14. In the lab's namespaces, in real time, the
//! m6t client and gateway and, on top of them, the DSMIPv6 mobile node registered from its
//! m6t tunnel address (`m6t0` as an IPv6 care-of interface, seed 002 on top of seed 000)
//! with its home agent, while a schedule of faults cycles: NAT rebinding (a new port, or a
//! new public address) every other slot, and between them a NAT reboot, 1 % and 10 % loss,
//! a gateway restart, a home agent restart, an IPv4 address change of the mobile node, a
//! move to the IPv6 network and back. Through all of it a paced TCP transfer runs from the
//! DSMIPv6 home address to the correspondent (sha256 of both ends compared at the end), and
//! two probes send an ICMPv6 echo request every 100 ms to the correspondent: one from the
//! current m6t tunnel address, one from the home address.
//!
//! Per fault the report gives the outage of each probe (the longest run of unanswered
//! probes in the fault's slot, from the fault, or the first lost probe, to the next reply),
//! the probes lost in the slot, and the TCP stall (the longest pause of the receiver's
//! progress overlapping the slot); then the worst recovery as a multiple of the client's
//! keep-alive period (target <= 2). The soak fails only if the bytes received differ from
//! those sent, a daemon died, or the probes are not answered again at the end.

use crate::lab::dsmip::{tunnel_interfaces, DsmipOptions, LabIpsec, HOA};
use crate::lab::{wait_for, Lab, LabOptions, CN, MN4, NAT_PUBLIC};
use crate::netns::{LabError, LabResult};
use m6t::status::Report;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Echo probe every `interval` seconds from `mode` to `dst`: `dev:IFACE` sends from the
/// interface's current global address (re-read before every probe, so it follows the m6t
/// tunnel address across NAT rebindings), anything else is a fixed source address. Each
/// probe carries its sequence number and send time; the log has `s SEQ T` per probe sent,
/// `n SEQ T` when there was no source address (a lost probe too) and `r SEQ TSENT TRECV`
/// per reply.
const PROBE_PY: &str = r#"
import socket, struct, sys, time, select
mode, dst, ident, interval, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setblocking(False)
out = open(log, "w", buffering=1)
def source():
    if not mode.startswith("dev:"):
        return mode
    try:
        for l in open("/proc/net/if_inet6"):
            f = l.split()
            if f[5] == mode[4:] and f[3] == "00":
                return ":".join(f[0][i:i + 4] for i in range(0, 32, 4))
    except OSError:
        pass
    return None
seq = 0; nxt = time.time()
while True:
    now = time.time()
    if now >= nxt:
        seq += 1
        a = source()
        if a is None:
            out.write("n %d %.6f\n" % (seq, now))
        else:
            p = bytes([128, 0, 0, 0]) + struct.pack("!HH", ident, seq & 0xffff) + b"m6ts" + struct.pack("!Id", seq, now)
            info = socket.inet_pton(socket.AF_INET6, a) + struct.pack("@I", 0)
            try:
                s.sendmsg([p], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)], 0, (dst, 0))
                out.write("s %d %.6f\n" % (seq, now))
            except OSError:
                out.write("n %d %.6f\n" % (seq, now))
        nxt += interval
        if nxt < now:
            nxt = now + interval
    r, _, _ = select.select([s], [], [], max(0.0, nxt - time.time()))
    while r:
        try:
            d, _ = s.recvfrom(2048)
        except (BlockingIOError, InterruptedError):
            break
        t = time.time()
        if len(d) >= 24 and d[0] == 129 and d[4:6] == struct.pack("!H", ident) and d[8:12] == b"m6ts":
            sq, ts = struct.unpack("!Id", d[12:24])
            out.write("r %d %.6f %.6f\n" % (sq, ts, t))
"#;

/// TCP receiver on port 5001 of ADDRESS: hashes what it gets, answers the sha256; logs
/// `g START END` for every pause of more than 0.3 s between two reads (times in seconds
/// since the epoch) and `received N SHA256` at the end.
const SINK_PY: &str = r#"
import socket, hashlib, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(1)
c, _ = s.accept()
h = hashlib.sha256(); n = 0; last = time.time()
while True:
    b = c.recv(65536)
    t = time.time()
    if t - last > 0.3:
        print("g %.6f %.6f" % (last, t), flush=True)
    last = t
    if not b:
        break
    h.update(b); n += len(b)
c.sendall(h.hexdigest().encode()); c.close()
print("received", n, h.hexdigest(), flush=True)
"#;

/// TCP sender bound to SRC: pseudo-random bytes to DST port 5001 at RATE bytes/s (paced on
/// the clock: after an outage it catches up) for SECS seconds; TCP's own retransmissions
/// carry it across outages. Prints `sent N SHA256 peer SHA256`.
const SOURCE_PY: &str = r#"
import socket, hashlib, sys, time, random
src, dst, secs, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.bind((src, 0)); s.settimeout(60); s.connect((dst, 5001)); s.settimeout(None)
r = random.Random(42); h = hashlib.sha256(); n = 0; t0 = time.time(); chunk = 16384
while time.time() - t0 < secs:
    due = t0 + n / rate
    if time.time() < due:
        time.sleep(min(0.05, due - time.time()))
        continue
    b = r.randbytes(chunk); s.sendall(b); h.update(b); n += len(b)
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    b = s.recv(100)
    if not b:
        break
    got += b
print("sent", n, h.hexdigest(), "peer", got.decode(), flush=True)
"#;

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The NAT forgets the mobile node's mapping; the next packet gets another port.
    RebindPort,
    /// The NAT forgets the mapping and maps to its other public address.
    RebindAddress,
    /// The NAT is down 2 s, then comes back with every mapping forgotten (conntrack
    /// flushed) and the other public address.
    NatReboot,
    /// This percentage of the packets the NAT forwards (both directions) dropped at random
    /// (nftables `numgen`) for the whole slot.
    Loss(u32),
    /// The m6t gateway stopped (SIGTERM) and started again: its states are gone.
    GatewayRestart,
    /// The home agent stopped (SIGTERM, it saves its binding cache) and started again.
    HaRestart,
    /// The mobile node's IPv4 address changes (same network behind the NAT).
    MnIpv4Change,
    /// The mobile node moves to the IPv6 network (no IPv4 there: m6t cannot work, the
    /// mobile node registers from its IPv6 address on `eth0`).
    MnToIpv6,
    /// Back to the IPv4 network behind the NAT.
    MnBackToIpv4,
}

/// What the daemons say at one moment: evidence that a fault changed what it should.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// The client's tunnel address.
    pub tunnel_address: Option<String>,
    /// The IPv4 address and port the gateway sees that address from (the NAT mapping).
    pub gateway_peer: Option<String>,
    /// The mobile node's care-of address.
    pub care_of: Option<String>,
    /// The mobile node's registrations so far.
    pub registrations: Option<u64>,
}

impl Snapshot {
    fn take(lab: &Lab) -> Snapshot {
        let tunnel_address = lab.client_address().ok().and_then(|a| a.0);
        let gateway_peer = match (lab.gateway(), tunnel_address) {
            (Ok(Report::Gateway { states, .. }), Some(a)) => states
                .iter()
                .find(|s| s.address == a)
                .map(|s| s.peer.to_string()),
            _ => None,
        };
        let mn = lab.mn_info().ok().map(|m| m.0);
        Snapshot {
            tunnel_address: tunnel_address.map(|a| a.to_string()),
            gateway_peer,
            care_of: mn.as_ref().and_then(|m| m.coa.clone()),
            registrations: mn.map(|m| m.registrations),
        }
    }

    /// What differs from `before`, in words.
    fn changes(&self, before: &Snapshot) -> String {
        let mut v = Vec::new();
        if self.gateway_peer != before.gateway_peer {
            v.push("mapping");
        }
        if self.tunnel_address != before.tunnel_address {
            v.push("address");
        }
        if self.care_of != before.care_of {
            v.push("CoA");
        }
        if self.registrations != before.registrations {
            v.push("BU");
        }
        if v.is_empty() {
            "-".into()
        } else {
            v.join(",")
        }
    }
}

impl Fault {
    /// Its name in the report.
    pub fn name(self) -> String {
        match self {
            Fault::RebindPort => "NAT rebinding (new port)".into(),
            Fault::RebindAddress => "NAT rebinding (new address)".into(),
            Fault::NatReboot => "NAT reboot (2 s down, flushed)".into(),
            Fault::Loss(p) => format!("{p} % loss for the slot"),
            Fault::GatewayRestart => "gateway restart".into(),
            Fault::HaRestart => "home agent restart".into(),
            Fault::MnIpv4Change => "MN IPv4 address change".into(),
            Fault::MnToIpv6 => "MN moves to IPv6".into(),
            Fault::MnBackToIpv4 => "MN back to IPv4".into(),
        }
    }
}

/// The faults between two rebindings, in order.
const OTHERS: [Fault; 8] = [
    Fault::NatReboot,
    Fault::Loss(1),
    Fault::Loss(10),
    Fault::GatewayRestart,
    Fault::HaRestart,
    Fault::MnIpv4Change,
    Fault::MnToIpv6,
    Fault::MnBackToIpv4,
];

/// Knobs of the soak.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Namespace tag.
    pub tag: String,
    /// Length of the fault schedule (the last slot may end a little later: the mobile node
    /// always comes back to IPv4).
    pub duration: Duration,
    /// Time between two faults.
    pub slot: Duration,
    /// Smoke mode: each fault once (both kinds of rebinding first), no rebinding between.
    pub smoke: bool,
    /// The m6t client's keep-alive interval, seconds (the unit of the recovery multiple).
    pub keepalive: f64,
    /// The NAT's conntrack UDP timeouts (unreplied, stream), seconds: above the keep-alive.
    pub nat_udp_timeouts: (u32, u32),
    /// The TCP transfer's rate, bytes/s.
    pub rate: u32,
    /// Every daemon writes a capture (`--pcap`), kept with the logs.
    pub pcap: bool,
}

impl SoakOptions {
    /// The full soak: `minutes` of faults, one every `slot_secs` (30 s by default: a
    /// rebinding every 60 s).
    ///
    /// Keep-alive every 5 s rather than the client's default 30 s: the soak is about
    /// recovery, which the keep-alive period bounds, and 5 s makes a 30-minute soak go
    /// through each fault several times; the NAT keeps Linux's own UDP timeouts (30 s
    /// unreplied, 120 s stream), comfortably above it, as a home router would.
    pub fn full(minutes: f64, slot_secs: f64) -> Self {
        SoakOptions {
            tag: "m6tsoak".into(),
            duration: Duration::from_secs_f64(minutes * 60.0),
            slot: Duration::from_secs_f64(slot_secs),
            smoke: false,
            keepalive: 5.0,
            nat_udp_timeouts: (30, 120),
            rate: 1_000_000,
            pcap: false,
        }
    }

    /// The CI smoke: each fault once, 12 s apart (about two and a half minutes).
    pub fn smoke(tag: &str) -> Self {
        SoakOptions {
            tag: tag.into(),
            smoke: true,
            slot: Duration::from_secs(12),
            duration: Duration::from_secs(12 * 10),
            ..SoakOptions::full(0.0, 12.0)
        }
    }

    /// The faults in order.
    pub fn schedule(&self) -> Vec<Fault> {
        if self.smoke {
            let mut v = vec![Fault::RebindPort, Fault::RebindAddress];
            v.extend(OTHERS);
            return v;
        }
        let slots = (self.duration.as_secs_f64() / self.slot.as_secs_f64()).floor() as usize;
        let mut v = Vec::new();
        let mut rebinds = 0;
        let mut others = OTHERS.iter().cycle();
        while v.len() < slots.max(1) {
            // No rebinding while the mobile node is in the IPv6 network: it has no
            // mapping in the NAT then.
            if v.last() != Some(&Fault::MnToIpv6) {
                v.push(if rebinds % 2 == 0 {
                    Fault::RebindPort
                } else {
                    Fault::RebindAddress
                });
                rebinds += 1;
                if v.len() >= slots {
                    break;
                }
            }
            v.push(*others.next().unwrap_or(&Fault::NatReboot));
        }
        if v.last() == Some(&Fault::MnToIpv6) {
            v.push(Fault::MnBackToIpv4);
        }
        v
    }
}

/// One fault's figures.
#[derive(Debug, Clone, Serialize)]
pub struct FaultResult {
    /// What.
    pub fault: String,
    /// When, seconds after the first fault's slot began.
    pub start_s: f64,
    /// Longest outage of the m6t probe in the slot, seconds (0: no probe lost); `None`:
    /// not answered again before the end.
    pub m6t_outage_s: Option<f64>,
    /// Probes of the m6t probe lost in the slot, percent.
    pub m6t_lost_pct: f64,
    /// Same for the home address probe.
    pub hoa_outage_s: Option<f64>,
    /// Same for the home address probe.
    pub hoa_lost_pct: f64,
    /// Longest pause of the TCP receiver overlapping the slot, seconds.
    pub tcp_stall_s: f64,
    /// How long the fault itself cuts the path (the NAT reboot's 2 s), seconds.
    pub blackout_s: f64,
    /// The worst outage of the two probes less the blackout: how long recovery took once
    /// the path was back (`None`: never).
    pub recovery_s: Option<f64>,
    /// What the daemons said when the fault began.
    pub before: Snapshot,
    /// What they said at the end of the slot.
    pub after: Snapshot,
    /// The m6t probe cannot be answered in this slot by design (the MN is in the IPv6
    /// network, where the IPv4 gateway is out of reach); not counted in the worst recovery.
    pub m6t_unreachable_by_design: bool,
}

/// The soak's report (also written as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// The client's keep-alive interval, seconds.
    pub keepalive_s: f64,
    /// The NAT's conntrack UDP timeouts, seconds.
    pub nat_udp_timeouts_s: (u32, u32),
    /// Time between faults, seconds.
    pub slot_s: f64,
    /// From the first fault to the end of the transfer, seconds.
    pub duration_s: f64,
    /// IPsec of the DSMIPv6 half.
    pub ipsec: String,
    /// Each fault.
    pub faults: Vec<FaultResult>,
    /// Bytes the TCP source sent.
    pub bytes_sent: u64,
    /// Bytes the TCP sink received.
    pub bytes_received: u64,
    /// sha256 of what was sent.
    pub sha256_sent: String,
    /// sha256 of what was received.
    pub sha256_received: String,
    /// The worst recovery (m6t or home address probe, blackout excluded), seconds.
    pub worst_recovery_s: f64,
    /// The fault it followed.
    pub worst_fault: String,
    /// `worst_recovery_s` over the keep-alive interval.
    pub worst_multiple: f64,
    /// The target for `worst_multiple`.
    pub target_multiple: f64,
    /// Probes sent / answered over the whole soak (m6t, home address).
    pub probes: [(u64, u64); 2],
    /// The daemons' nonzero drop counters at the end, and how often the client declared
    /// its path dead and the mobile node sent and got a BA (`daemon.counter`).
    pub counters: std::collections::BTreeMap<String, u64>,
}

/// The counters of [`SoakReport::counters`].
fn counters(lab: &Lab) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    let reports = [
        ("gateway", lab.gateway()),
        ("client", lab.report(&lab.client_sock)),
        ("ha", lab.ha_report()),
        ("mn", lab.mn_info().map(|x| x.1)),
    ];
    for (who, r) in reports {
        let Ok(r) = r else { continue };
        let c = match &r {
            Report::Gateway { counters, .. }
            | Report::Client { counters, .. }
            | Report::HomeAgent { counters, .. }
            | Report::MobileNode { counters, .. } => counters,
        };
        for c in c {
            let wanted = c.name.starts_with("drop")
                || ["paths_dead", "bu_sent", "ba_received", "port_fallbacks"]
                    .contains(&c.name.as_str());
            if wanted && c.value > 0 {
                m.insert(format!("{who}.{}", c.name), c.value);
            }
        }
    }
    m
}

/// One probe: send time, receive time if answered.
type Probe = (f64, Option<f64>);

fn parse_probes(log: &str) -> Vec<Probe> {
    let mut sent: Vec<(u64, f64)> = Vec::new();
    let mut replies = std::collections::HashMap::new();
    for l in log.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            ["s" | "n", seq, t] => {
                if let (Ok(seq), Ok(t)) = (seq.parse(), t.parse()) {
                    sent.push((seq, t));
                }
            }
            ["r", seq, _, t] => {
                if let (Ok(seq), Ok(t)) = (seq.parse::<u64>(), t.parse::<f64>()) {
                    replies.entry(seq).or_insert(t);
                }
            }
            _ => {}
        }
    }
    sent.iter()
        .map(|(seq, t)| (*t, replies.get(seq).copied()))
        .collect()
}

/// The longest outage among the probes sent in `[from, to)`: each run of unanswered
/// probes lasts from the first of them (or `from`, when the run opens the slot) to the
/// reply of the next answered probe, looked for after the slot too; `None` if none came.
/// Also the share of the slot's probes lost, percent.
fn outage(probes: &[Probe], from: f64, to: f64) -> (Option<f64>, f64) {
    let first = probes.partition_point(|p| p.0 < from);
    let end = probes.partition_point(|p| p.0 < to);
    let n = end.saturating_sub(first);
    let lost = probes[first..end].iter().filter(|p| p.1.is_none()).count();
    let mut worst = Some(0.0f64);
    let mut i = first;
    while i < end {
        if probes[i].1.is_some() {
            i += 1;
            continue;
        }
        let start = if i == first { from } else { probes[i].0 };
        let mut j = i;
        while j < probes.len() && probes[j].1.is_none() {
            j += 1;
        }
        match probes.get(j).and_then(|p| p.1) {
            Some(r) => worst = worst.map(|w| w.max(r - start)),
            None => worst = None,
        }
        i = j;
    }
    (
        worst,
        if n == 0 {
            0.0
        } else {
            100.0 * lost as f64 / n as f64
        },
    )
}

/// The longest receiver pause overlapping `[from, to)`.
fn stall(gaps: &[(f64, f64)], from: f64, to: f64) -> f64 {
    gaps.iter()
        .filter(|(a, b)| *b > from && *a < to)
        .map(|(a, b)| b - a)
        .fold(0.0, f64::max)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The daemons and helpers that must stay up (the restarts start them again themselves).
const ALIVE: [&str; 7] = [
    "gateway",
    "client",
    "ha",
    "mn",
    "sink",
    "source",
    "probe-m6t",
];

struct Scene {
    lab: Lab,
    v4: usize,
    public: usize,
}

impl Scene {
    fn snat(&self, public: usize) -> LabResult<()> {
        self.lab.net.sh(
            "nat",
            &format!(
                "nft flush chain ip nat post && \
                 nft add rule ip nat post oifname out0 snat to {} random",
                NAT_PUBLIC[public]
            ),
        )?;
        Ok(())
    }

    fn apply(&mut self, f: Fault, slot: Duration) -> LabResult<()> {
        let net = &self.lab.net;
        match f {
            Fault::RebindPort => {
                net.sh(
                    "nat",
                    &format!(
                        "conntrack -D -p udp -s {} >/dev/null 2>&1; true",
                        MN4[self.v4]
                    ),
                )?;
            }
            Fault::RebindAddress => {
                self.public ^= 1;
                self.snat(self.public)?;
                net.sh(
                    "nat",
                    &format!(
                        "conntrack -D -p udp -s {} >/dev/null 2>&1; true",
                        MN4[self.v4]
                    ),
                )?;
            }
            Fault::NatReboot => {
                net.sh(
                    "nat",
                    "nft add table inet soakdown && \
                     nft add chain inet soakdown pass '{ type filter hook forward priority -10; policy drop; }'",
                )?;
                std::thread::sleep(Duration::from_secs(2));
                self.public ^= 1;
                self.snat(self.public)?;
                net.sh(
                    "nat",
                    "conntrack -F >/dev/null 2>&1; nft delete table inet soakdown",
                )?;
            }
            Fault::Loss(p) => {
                net.sh(
                    "nat",
                    &format!(
                        "nft add table inet soakloss && \
                         nft add chain inet soakloss pass '{{ type filter hook forward priority -10; }}' && \
                         nft add rule inet soakloss pass numgen random mod 100 lt {p} drop"
                    ),
                )?;
                std::thread::sleep(slot.saturating_sub(Duration::from_millis(200)));
                net.sh("nat", "nft delete table inet soakloss")?;
            }
            Fault::GatewayRestart => {
                self.lab.net.stop("gateway");
                let _ = std::fs::remove_file(&self.lab.gw_sock);
                let bin = self.lab.bin_path.display().to_string();
                let cfg = self.lab.net.dir.join("gateway.toml").display().to_string();
                self.lab
                    .spawn_daemon("gw", "gateway", &[&bin, "gateway", "--config", &cfg])?;
                let sock = self.lab.gw_sock.clone();
                wait_for(
                    "the restarted gateway's control socket",
                    Duration::from_secs(10),
                    || Ok(sock.exists().then_some(())),
                )?;
            }
            Fault::HaRestart => {
                self.lab.stop_ha();
                self.lab.start_ha()?;
            }
            Fault::MnIpv4Change => {
                let to = self.v4 ^ 1;
                self.lab.mn_renumber_v4(MN4[self.v4], MN4[to])?;
                self.v4 = to;
            }
            Fault::MnToIpv6 => self.lab.mn_to_ipv6(MN4[self.v4])?,
            Fault::MnBackToIpv4 => self.lab.mn_to_ipv4(MN4[self.v4])?,
        }
        Ok(())
    }

    /// Every process of [`ALIVE`] still runs; with `transfer` false, the transfer's sink and
    /// source may have ended (after the last fault: their bytes and sha256 are checked).
    fn check_alive(&mut self, transfer: bool) -> LabResult<()> {
        for d in ALIVE {
            if !transfer && (d == "sink" || d == "source") {
                continue;
            }
            if !self.lab.net.running(d) {
                let log = self.lab.net.log(d);
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(LabError(format!(
                    "{d} died during the soak; its log ends:\n{}",
                    tail.join("\n")
                )));
            }
        }
        Ok(())
    }
}

/// Runs the soak, prints the table, writes the JSON to `out` if given. Returns the report,
/// or an error if a daemon died, the transfer did not end with equal sha256 and byte
/// counts, or the probes are not answered at the end. `stop` interrupts it (every
/// namespace and process is removed all the same).
pub fn run(
    bin: &Path,
    o: &SoakOptions,
    out: Option<&Path>,
    stop: &AtomicBool,
) -> LabResult<SoakReport> {
    let schedule = o.schedule();
    println!(
        "m6t soak: {} faults, one every {:.0} s; keep-alive {} s, NAT UDP timeouts {} s / {} s; \
         TCP from the home address at {} kB/s",
        schedule.len(),
        o.slot.as_secs_f64(),
        o.keepalive,
        o.nat_udp_timeouts.0,
        o.nat_udp_timeouts.1,
        o.rate / 1000
    );
    let lab = Lab::start(
        bin,
        &LabOptions {
            keepalive_interval: o.keepalive,
            nat_udp_timeouts: o.nat_udp_timeouts,
            // Longer than a keep-alive period and the slowest recovery, so a state is
            // only collected once its mapping is really gone.
            active_lifetime: 4.0 * o.keepalive,
            snat_flags: "random".into(),
            pcap: o.pcap,
            ..LabOptions::new(&o.tag)
        },
    )?;
    let mut sc = Scene {
        lab,
        v4: 0,
        public: 0,
    };
    let r = soak(&mut sc, o, &schedule, out, stop);
    if let Some(out) = out {
        keep_logs(&sc.lab, &out.with_extension("logs"));
    }
    r
}

/// Copies the daemons' logs, configurations and probe logs out of the scratch directory
/// (removed with the lab) to `dir`, for a look after the run.
fn keep_logs(lab: &Lab, dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(&lab.net.dir) {
        for e in rd.flatten() {
            let p = e.path();
            let keep = matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("log" | "txt" | "toml" | "pcapng")
            );
            if keep {
                if let Some(n) = p.file_name() {
                    let _ = std::fs::copy(&p, dir.join(n));
                }
            }
        }
    }
    println!("logs kept in {}", dir.display());
}

fn soak(
    sc: &mut Scene,
    o: &SoakOptions,
    schedule: &[Fault],
    out: Option<&Path>,
    stop: &AtomicBool,
) -> LabResult<SoakReport> {
    let lab = &mut sc.lab;
    // As deployed: IPsec keyed by IKEv2 from the care-of address (the m6t tunnel's, the
    // IPv6 network's, the IPv4 one), BU, BA and the payload of both home addresses in ESP.
    lab.write_dsmip_configs(&DsmipOptions {
        interfaces: tunnel_interfaces("m6t0"),
        ipsec: Some(LabIpsec::ike()?),
        ..DsmipOptions::default()
    })?;
    lab.start_ha()?;
    lab.start_mn()?;
    lab.wait_registered("ipv6", "fd00:6d36:7400:1:1:", 0)?;
    let d = lab.net.dir.clone();
    let probe = lab.net.write("probe.py", PROBE_PY)?.display().to_string();
    let sink = lab.net.write("sink.py", SINK_PY)?.display().to_string();
    let source = lab.net.write("source.py", SOURCE_PY)?.display().to_string();
    let (log_m6t, log_hoa) = (
        d.join("probe-m6t.txt").display().to_string(),
        d.join("probe-hoa.txt").display().to_string(),
    );
    lab.net
        .spawn("cn", "sink", &["/usr/bin/python3", &sink, CN])?;
    let py = "/usr/bin/python3";
    lab.net.spawn(
        "mn",
        "probe-m6t",
        &[py, &probe, "dev:m6t0", CN, "27905", "0.1", &log_m6t],
    )?;
    lab.net.spawn(
        "mn",
        "probe-hoa",
        &[py, &probe, HOA, CN, "27906", "0.1", &log_hoa],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    // One slot beyond the last fault's: a fault that takes long to apply (a restart
    // waiting for its daemon) delays the schedule, and the transfer must outlast it.
    let total = o.slot.as_secs_f64() * (schedule.len() + 1) as f64 + 2.0;
    lab.net.spawn(
        "mn",
        "source",
        &[
            py,
            &source,
            HOA,
            CN,
            &format!("{total:.1}"),
            &o.rate.to_string(),
        ],
    )?;
    std::thread::sleep(Duration::from_secs(2));
    sc.check_alive(true)?;

    let t0 = now();
    let start = Instant::now();
    let mut starts = Vec::new();
    let mut snaps = Vec::new();
    for (i, f) in schedule.iter().enumerate() {
        let due = o.slot.mul_f64(i as f64);
        while start.elapsed() < due {
            if stop.load(Ordering::Relaxed) {
                return Err(LabError("interrupted".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        sc.check_alive(true)?;
        snaps.push(Snapshot::take(&sc.lab));
        let at = now();
        println!("  +{:6.1} s  {}", at - t0, f.name());
        sc.apply(*f, o.slot)
            .map_err(|e| LabError(format!("{}: {e}", f.name())))?;
        starts.push(at);
    }
    let end_of_faults = o.slot.mul_f64(schedule.len() as f64);
    while start.elapsed() < end_of_faults {
        std::thread::sleep(Duration::from_millis(50));
    }
    sc.check_alive(false)?;
    snaps.push(Snapshot::take(&sc.lab));
    let counters = counters(&sc.lab);
    let t_end = now();
    // The transfer ends by itself; TCP may still be retransmitting after a long outage.
    let lab = &mut sc.lab;
    let t = Instant::now();
    while lab.net.running("source") && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    lab.net.stop("probe-m6t");
    lab.net.stop("probe-hoa");
    let src = lab.net.log("source");
    let snk = lab.net.log("sink");
    let sf: Vec<&str> = src.split_whitespace().collect();
    let rf = snk
        .lines()
        .find(|l| l.starts_with("received"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_default();
    let why = |w: &str| {
        LabError(format!(
            "{w}\nsource: {src}\nsink (last lines): {}\nmn log:\n{}",
            snk.lines().rev().take(5).collect::<Vec<_>>().join(" | "),
            lab.net.log("mn")
        ))
    };
    if sf.len() < 5 || sf[0] != "sent" || rf.len() < 3 {
        return Err(why("the TCP transfer did not end"));
    }
    let gaps: Vec<(f64, f64)> = snk
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["g", a, b] => Some((a.parse().ok()?, b.parse().ok()?)),
                _ => None,
            }
        })
        .collect();
    let pm = parse_probes(&std::fs::read_to_string(&log_m6t).unwrap_or_default());
    let ph = parse_probes(&std::fs::read_to_string(&log_hoa).unwrap_or_default());
    let mut faults = Vec::new();
    for (i, f) in schedule.iter().enumerate() {
        let from = starts[i];
        let to = starts.get(i + 1).copied().unwrap_or(t_end);
        let (mo, ml) = outage(&pm, from, to);
        let (ho, hl) = outage(&ph, from, to);
        let by_design = *f == Fault::MnToIpv6;
        let blackout = if *f == Fault::NatReboot { 2.0 } else { 0.0 };
        let worst = [if by_design { Some(0.0) } else { mo }, ho]
            .iter()
            .map(|v| v.unwrap_or(f64::INFINITY))
            .fold(0.0, f64::max);
        faults.push(FaultResult {
            fault: f.name(),
            start_s: from - t0,
            m6t_outage_s: mo,
            m6t_lost_pct: ml,
            hoa_outage_s: ho,
            hoa_lost_pct: hl,
            tcp_stall_s: stall(&gaps, from, to),
            m6t_unreachable_by_design: by_design,
            blackout_s: blackout,
            recovery_s: worst.is_finite().then_some((worst - blackout).max(0.0)),
            before: snaps[i].clone(),
            after: snaps[i + 1].clone(),
        });
    }
    let mut worst = (0.0f64, String::new());
    for r in &faults {
        let v = r.recovery_s.unwrap_or(f64::INFINITY);
        if v > worst.0 || worst.1.is_empty() {
            worst = (v, r.fault.clone());
        }
    }
    let count = |p: &[Probe]| {
        (
            p.len() as u64,
            p.iter().filter(|x| x.1.is_some()).count() as u64,
        )
    };
    let report = SoakReport {
        keepalive_s: o.keepalive,
        nat_udp_timeouts_s: o.nat_udp_timeouts,
        slot_s: o.slot.as_secs_f64(),
        duration_s: now() - t0,
        ipsec: "keyed by IKEv2 (BU/BA and payload in ESP, AES-GCM-128)".into(),
        faults,
        bytes_sent: sf[1].parse().unwrap_or(0),
        bytes_received: rf[1].parse().unwrap_or(0),
        sha256_sent: sf[2].to_string(),
        sha256_received: rf[2].to_string(),
        worst_recovery_s: worst.0,
        worst_fault: worst.1,
        worst_multiple: worst.0 / o.keepalive,
        target_multiple: 2.0,
        probes: [count(&pm), count(&ph)],
        counters,
    };
    print!("{}", render(&report));
    if let Some(p) = out {
        let j = serde_json::to_string_pretty(&report).map_err(|e| LabError(e.to_string()))?;
        std::fs::write(p, j + "\n").map_err(|e| LabError(format!("{}: {e}", p.display())))?;
        println!("figures written to {}", p.display());
    }
    // The end: both probes answered again in the last seconds.
    let answered_late = |p: &[Probe]| p.iter().any(|x| x.0 > t_end - 3.0 && x.1.is_some());
    if report.sha256_sent != report.sha256_received
        || report.bytes_sent != report.bytes_received
        || sf[2] != sf[4]
    {
        return Err(why("the bytes received differ from those sent"));
    }
    if !answered_late(&pm) || !answered_late(&ph) {
        return Err(LabError(format!(
            "no recovery: the {} probe is not answered at the end\nmn log:\n{}\nclient log:\n{}",
            if answered_late(&pm) {
                "home address"
            } else {
                "m6t"
            },
            lab.net.log("mn"),
            lab.net.log("client")
        )));
    }
    Ok(report)
}

fn secs(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:.2} s"),
        None => "never".into(),
    }
}

/// The report as a table.
pub fn render(r: &SoakReport) -> String {
    let mut s = format!(
        "\n{:<31} {:>7} {:>10} {:>6} {:>10} {:>6} {:>9} {:>9} {:>5}  {}\n",
        "fault",
        "start",
        "m6t out",
        "lost",
        "HoA out",
        "lost",
        "TCP stall",
        "recovery",
        "x ka",
        "changed"
    );
    for f in &r.faults {
        let m = if f.m6t_unreachable_by_design {
            "(no IPv4)".to_string()
        } else {
            secs(f.m6t_outage_s)
        };
        s += &format!(
            "{:<31} {:>5.0} s {:>10} {:>5.1}% {:>10} {:>5.1}% {:>7.2} s {:>9} {:>5.2}  {}\n",
            f.fault,
            f.start_s,
            m,
            f.m6t_lost_pct,
            secs(f.hoa_outage_s),
            f.hoa_lost_pct,
            f.tcp_stall_s,
            secs(f.recovery_s),
            f.recovery_s.unwrap_or(f64::INFINITY) / r.keepalive_s,
            f.after.changes(&f.before)
        );
    }
    s += &format!(
        "\nTCP from the home address: {} bytes sent, {} received, sha256 {}\n\
         probes answered: m6t {}/{}, home address {}/{}\n\
         worst recovery: {:.2} s after \"{}\" = {:.2} x the keep-alive period ({} s); target <= {}: {}\n",
        r.bytes_sent,
        r.bytes_received,
        if r.sha256_sent == r.sha256_received {
            "equal"
        } else {
            "DIFFERS"
        },
        r.probes[0].1,
        r.probes[0].0,
        r.probes[1].1,
        r.probes[1].0,
        r.worst_recovery_s,
        r.worst_fault,
        r.worst_multiple,
        r.keepalive_s,
        r.target_multiple,
        if r.worst_multiple <= r.target_multiple {
            "met"
        } else {
            "MISSED"
        }
    );
    let c: Vec<String> = r.counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
    s += &format!("counters at the end: {}\n", c.join(", "));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_runs_from_the_fault_to_the_next_reply() {
        // Probes every 0.1 s from 10.0; 10.0..10.3 lost, 10.4 answered at 10.45.
        let p: Vec<Probe> = (0..10)
            .map(|i| {
                let t = 10.0 + i as f64 * 0.1;
                (t, (i >= 4).then_some(t + 0.05))
            })
            .collect();
        let (o, lost) = outage(&p, 9.95, 11.0);
        assert!((o.unwrap() - 0.5).abs() < 1e-9, "{o:?}");
        assert!((lost - 40.0).abs() < 1e-9);
        // Nothing lost: no outage.
        assert_eq!(outage(&p, 10.35, 11.0).0, Some(0.0));
        // Lost to the end: never recovered.
        let q: Vec<Probe> = vec![(1.0, Some(1.01)), (1.1, None), (1.2, None)];
        assert_eq!(outage(&q, 1.05, 2.0).0, None);
        // A run inside the slot starts at its first lost probe.
        let r: Vec<Probe> = vec![(1.0, Some(1.01)), (1.1, None), (1.2, Some(1.25))];
        assert!((outage(&r, 0.9, 2.0).0.unwrap() - 0.15).abs() < 1e-9);
    }

    #[test]
    fn probe_logs_parse_with_lost_and_addressless_probes() {
        let p = parse_probes(
            "s 1 1.0\nr 1 1.0 1.01\nn 2 1.1\ns 3 1.2\nr 3 1.2 1.3\nr 3 1.2 1.4\ngarbage\n",
        );
        assert_eq!(p, vec![(1.0, Some(1.01)), (1.1, None), (1.2, Some(1.3))]);
    }

    #[test]
    fn the_schedule_rebinds_between_faults_but_not_in_the_ipv6_network() {
        let o = SoakOptions::full(30.0, 30.0);
        let s = o.schedule();
        assert!(s.len() >= 60);
        for w in s.windows(2) {
            if w[0] == Fault::MnToIpv6 {
                assert_eq!(w[1], Fault::MnBackToIpv4);
            }
        }
        for f in OTHERS {
            assert!(s.contains(&f), "{f:?}");
        }
        assert!(s.contains(&Fault::RebindPort) && s.contains(&Fault::RebindAddress));
        assert_ne!(s.last(), Some(&Fault::MnToIpv6));
        let smoke = SoakOptions::smoke("t").schedule();
        assert_eq!(smoke.len(), 10);
        assert_eq!(
            stall(&[(1.0, 3.0), (5.0, 5.5)], 2.0, 6.0),
            2.0,
            "a pause that began before the slot counts"
        );
    }
}
