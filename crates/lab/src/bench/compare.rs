//! The comparison of seed 004 measured: what the other groups do not measure (the ESP rows
//! over m6t and over Teredo, the per-packet overhead and inner MTU read from captures, the
//! handover and attach times of DSMIPv6 with and without IKEv2), then the three tables —
//! throughput, overhead and MTU, handover and attach — built from every group's figures.

use super::{set_offloads, tcp, teredo, BenchOptions, Table};
use crate::lab::dsmip::{tunnel_interfaces, DsmipOptions, LabIpsec, HOA, MN6};
use crate::lab::{Lab, CN, HA, MN4};
use crate::netns::{LabError, LabResult};
use serde::Serialize;
use std::time::{Duration, Instant};

/// An echo prober that times its own replies: an ICMPv6 echo request every `interval`
/// seconds to `dst` (from `src` unless it is `-`), a 32-bit sequence number in the data,
/// and for every reply a line `seq sent received` (epoch seconds). Unlike ping it never
/// backs off after a failed send, and a reply is matched to the time its request left, so
/// a handover is timed to the first reply to a request sent after the change (replies
/// still in flight from before do not stop the clock).
const PROBE_PY: &str = r#"
import select, socket, sys, time
dst, secs, interval, src = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
if src != "-":
    s.bind((src, 0))
s.setblocking(False)
sent = {}
seq = 0
now = time.time()
end, due = now + secs, now
while now < end:
    if now >= due:
        seq += 1
        sent[seq] = now
        try:
            s.sendto(bytes([128, 0, 0, 0, 0x6d, 0x37, 0, 0]) + seq.to_bytes(4, "big") + b"m6tprobe", (dst, 0))
        except OSError:
            pass
        due = now + interval
    select.select([s], [], [], max(0.0, due - time.time()))
    while True:
        try:
            d = s.recv(2048)
        except (BlockingIOError, InterruptedError):
            break
        if len(d) >= 12 and d[0] == 129 and d[4] == 0x6d and d[5] == 0x37:
            q = int.from_bytes(d[8:12], "big")
            if q in sent:
                print(q, "%.6f" % sent.pop(q), "%.6f" % time.time(), flush=True)
    now = time.time()
"#;

/// The MN's IPv4 address now and the other lab address (the handovers alternate).
pub(super) fn mn_v4(lab: &Lab) -> LabResult<(&'static str, &'static str)> {
    let cur = lab.net.sh("mn", "ip -4 -o addr show dev eth0")?;
    Ok(if cur.contains(&format!("inet {}/", MN4[1])) {
        (MN4[1], MN4[0])
    } else {
        (MN4[0], MN4[1])
    })
}

/// Which `ip monitor address` line starts the clock.
pub(super) struct Event<'a> {
    /// The address leaves (`Deleted`) rather than appears.
    pub deleted: bool,
    /// The address, as `ip` prints it before the `/`.
    pub address: &'a str,
}

/// Milliseconds from the kernel's address event `ev` on the MN (timestamped by
/// `ip -ts monitor address`, so the shell's and `ip`'s own start-up do not count), caused by
/// the commands `change` run in `mn`, to the first echo reply from `dst` to a request sent
/// after it, probing every 0.5 ms from `src` (or the address the kernel picks). Infinite
/// when nothing answers within `cap`.
pub(super) fn timed_change(
    lab: &mut Lab,
    change: &str,
    ev: Event<'_>,
    src: Option<&str>,
    dst: &str,
    cap: Duration,
) -> LabResult<f64> {
    let probe = lab.net.write("probe-timed.py", PROBE_PY)?;
    let secs = format!("{}", cap.as_secs_f64() + 3.0);
    lab.net
        .spawn("mn", "monitor", &["ip", "-ts", "monitor", "address"])?;
    lab.net.spawn(
        "mn",
        "probe",
        &[
            "/usr/bin/python3",
            &probe.display().to_string(),
            dst,
            &secs,
            "0.0005",
            src.unwrap_or("-"),
        ],
    )?;
    std::thread::sleep(Duration::from_millis(400));
    let res = lab.net.sh("mn", change).and_then(|_| {
        let family = if ev.address.contains(':') {
            "inet6"
        } else {
            "inet"
        };
        let needle = format!("{family} {}/", ev.address);
        let t = Instant::now();
        let mut t0: Option<f64> = None;
        while t.elapsed() < cap + Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(20));
            if t0.is_none() {
                let mon = lab.net.log("monitor");
                let line = mon
                    .lines()
                    .find(|l| l.contains(&needle) && l.contains("Deleted") == ev.deleted);
                if let Some(l) = line {
                    let ts = l
                        .strip_prefix('[')
                        .and_then(|l| l.split(']').next())
                        .unwrap_or_default();
                    let s = lab.net.sh("mn", &format!("date -d '{ts}' +%s.%N"))?;
                    t0 = Some(
                        s.trim()
                            .parse()
                            .map_err(|e| LabError(format!("address event time `{ts}`: {e}")))?,
                    );
                }
            }
            let Some(t0) = t0 else { continue };
            let first = lab.net.log("probe").lines().find_map(|l| {
                let v: Vec<f64> = l
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                (v.len() == 3 && v[1] >= t0).then(|| v[2])
            });
            if let Some(t1) = first {
                return Ok((t1 - t0) * 1000.0);
            }
            if t.elapsed() > cap {
                return Ok(f64::INFINITY);
            }
        }
        match t0 {
            Some(_) => Ok(f64::INFINITY),
            None => Err(LabError(format!(
                "no `{needle}` event after `{change}`: {}",
                lab.net.log("monitor")
            ))),
        }
    });
    lab.net.stop("probe");
    lab.net.stop("monitor");
    res
}

/// The MN's IPv4 address goes away and, after `gone`, the other lab address appears with
/// its default route (a new attachment: a new address, so a new NAT mapping): the
/// milliseconds from its appearance to the first reply (`src` to `dst`).
pub(super) fn attach(
    lab: &mut Lab,
    src: Option<&str>,
    dst: &str,
    gone: Duration,
    cap: Duration,
) -> LabResult<f64> {
    let (cur, next) = mn_v4(lab)?;
    lab.net
        .sh("mn", &format!("ip addr del {cur}/24 dev eth0"))?;
    std::thread::sleep(gone);
    timed_change(
        lab,
        &format!("ip addr add {next}/24 dev eth0 && ip route replace default via 192.0.2.1"),
        Event {
            deleted: false,
            address: next,
        },
        src,
        dst,
        cap,
    )
}

/// Bytes on the wire for one full-size TCP segment from the MN, during a one-second
/// transfer at 100 Mbit/s (from `src`, to `dst`) with every offload off (TSO, GSO, GRO and UDP
/// segmentation) so that each packet is one a real link would carry. The bytes and packets
/// come from the kernel's counters of the NAT's public side (what left for the Internet)
/// and of the correspondent's link (what arrived), the largest inner packet from a capture
/// at the correspondent. The overhead per packet is what the wire carried beyond the inner
/// packets, divided by their number, so a tunnel packet fragmented on the way counts with
/// every fragment's headers. Adds `<label> wire bytes per full segment` (the largest inner
/// packet plus that overhead), `<label> inner packet (effective MTU)` and
/// `<label> overhead per packet`.
pub(super) fn overhead(
    lab: &mut Lab,
    t: &mut Table,
    label: &str,
    src: Option<&str>,
    dst: &str,
) -> LabResult<()> {
    let inner = lab
        .net
        .dir
        .join("overhead-inner.pcap")
        .display()
        .to_string();
    set_offloads(lab, false)?;
    lab.net.spawn(
        "cn",
        "tcpdump-inner",
        &[
            "tcpdump", "-i", "eth0", "-Q", "in", "-s", "96", "-w", &inner, "tcp",
        ],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    // IP bytes and packets: the link counters count 14 bytes of Ethernet header a packet.
    let ip_bytes = |lab: &Lab, role: &str, dev: &str, dir: &str| -> LabResult<(f64, f64)> {
        let o = lab.net.sh(
            role,
            &format!(
                "cat /sys/class/net/{dev}/statistics/{dir}_bytes /sys/class/net/{dev}/statistics/{dir}_packets"
            ),
        )?;
        let v: Vec<f64> = o
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        match v[..] {
            [b, p] => Ok((b - 14.0 * p, p)),
            _ => Err(LabError(format!("{dev} counters: {o}"))),
        }
    };
    let (w0, i0) = (
        ip_bytes(lab, "nat", "out0", "tx")?,
        ip_bytes(lab, "cn", "eth0", "rx")?,
    );
    // Paced well below every system's capacity: a segment lost on the way and sent again
    // would count on the wire and not at the correspondent.
    let args = match src {
        Some(s) => format!("-b 100M -B {s}"),
        None => "-b 100M".to_string(),
    };
    let o = BenchOptions {
        runs: 1,
        secs: 1,
        ..BenchOptions::quick()
    };
    let run = tcp(lab, "cn", dst, &args, &o);
    let (w1, i1) = (
        ip_bytes(lab, "nat", "out0", "tx")?,
        ip_bytes(lab, "cn", "eth0", "rx")?,
    );
    std::thread::sleep(Duration::from_millis(300));
    lab.net.stop("tcpdump-inner");
    set_offloads(lab, true)?;
    run?;
    // The correspondent's packets: IPv4 (the plain path) or IPv6 (payload length + 40).
    let o = lab.net.sh(
        "cn",
        &format!("tshark -r {inner} -T fields -E occurrence=f -e ip.len -e ipv6.plen 2>/dev/null"),
    )?;
    let largest = o
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let v4 = f.next().and_then(|v| v.trim().parse::<f64>().ok());
            let v6 = f.next().and_then(|v| v.trim().parse::<f64>().ok());
            v4.or(v6.map(|p| p + 40.0))
        })
        .fold(f64::NAN, f64::max);
    let per = ((w1.0 - w0.0) - (i1.0 - i0.0)) / (i1.1 - i0.1);
    t.add(
        &format!("{label} wire bytes per full segment"),
        largest + per,
        "B",
    );
    t.add(
        &format!("{label} inner packet (effective MTU)"),
        largest,
        "B",
    );
    t.add(&format!("{label} overhead per packet"), per, "B");
    Ok(())
}

/// A DSMIPv6 home agent and mobile node whose care-of address is an IPv6 tunnel interface
/// (`iface`: m6t0, teredo), payload in ESP: TCP both ways on the home address, then the
/// overhead capture.
fn mip6_over(
    lab: &mut Lab,
    t: &mut Table,
    o: &BenchOptions,
    label: &str,
    iface: &str,
    coa_prefix: &str,
) -> LabResult<()> {
    lab.write_dsmip_configs(&DsmipOptions {
        interfaces: tunnel_interfaces(iface),
        ipsec: Some(LabIpsec::gcm_with_payload()?),
        ..DsmipOptions::default()
    })?;
    lab.start_ha()?;
    lab.start_mn()?;
    let res = (|| {
        lab.wait_registered("ipv6", coa_prefix, 0)?;
        super::dsmip::home_tcp(lab, t, o, label)?;
        overhead(lab, t, label, Some(HOA), CN)
    })();
    lab.net.stop("mn");
    lab.stop_ha();
    res
}

/// The ESP rows seed 004 writes as IPv4/UDP/IPv6/ESP/IPv6/TCP: Mobile IPv6 with ESP payload
/// protection (AES-GCM-128) over m6t, and over Teredo.
pub(super) fn esp_rows(lab: &mut Lab, t: &mut Table, o: &BenchOptions) -> LabResult<()> {
    mip6_over(lab, t, o, "m6t+esp", "m6t0", "fd00:6d36:7400:1:1:")?;
    teredo::start_client(lab)?;
    let res = mip6_over(lab, t, o, "teredo+esp", "teredo", "fd00:3544:");
    teredo::stop_client(lab);
    res
}

/// DSMIPv6 handovers (IPv4 -> IPv4, IPv4 -> IPv6, IPv6 -> IPv4) and attach, timed to the
/// first reply on the home address through the new binding; BU and BA in ESP with manual
/// keys (`dsmip`), then keyed by IKEv2 (`dsmip+ike`, whose IKE SA follows the moves
/// without a new exchange), with the IKE SAs made across the moves.
pub(super) fn dsmip_moves(lab: &mut Lab, t: &mut Table, o: &BenchOptions) -> LabResult<()> {
    for (label, ipsec) in [
        ("dsmip", LabIpsec::random()?),
        ("dsmip+ike", LabIpsec::ike()?),
    ] {
        let ike = ipsec.ike_psk.is_some();
        lab.write_dsmip_configs(&DsmipOptions {
            ipsec: Some(ipsec),
            ..DsmipOptions::default()
        })?;
        lab.start_ha()?;
        lab.start_mn()?;
        let res = moves(lab, t, o, label, ike);
        lab.net.stop("mn");
        lab.stop_ha();
        res?;
    }
    Ok(())
}

fn moves(lab: &mut Lab, t: &mut Table, o: &BenchOptions, label: &str, ike: bool) -> LabResult<()> {
    let cap = Duration::from_secs(10);
    let m = lab.wait_registered("udp", "192.0.2.", 0)?;
    let ike_before = lab.mn_info()?.1.counter("ike_established");
    let (mut v44, mut v46, mut v64) = (Vec::new(), Vec::new(), Vec::new());
    let mut regs = m.registrations;
    for _ in 0..o.runs {
        let (cur, next) = mn_v4(lab)?;
        v44.push(timed_change(
            lab,
            &format!(
                "ip addr add {next}/24 dev eth0 && ip addr del {cur}/24 dev eth0 && \
                 ip route replace default via 192.0.2.1"
            ),
            Event {
                deleted: true,
                address: cur,
            },
            Some(HOA),
            CN,
            cap,
        )?);
        regs = lab.wait_registered("udp", next, regs)?.registrations;
        v46.push(timed_change(
            lab,
            &format!(
                "ip -6 addr add {MN6}/64 dev eth0 nodad && \
                 ip -6 route add default via {} && ip addr del {next}/24 dev eth0",
                crate::lab::V6_ROUTER
            ),
            Event {
                deleted: true,
                address: next,
            },
            Some(HOA),
            CN,
            cap,
        )?);
        regs = lab.wait_registered("ipv6", MN6, regs)?.registrations;
        v64.push(timed_change(
            lab,
            &format!(
                "ip addr add {cur}/24 dev eth0 && ip route replace default via 192.0.2.1 && \
                 ip -6 route del default via {} && ip -6 addr del {MN6}/64 dev eth0",
                crate::lab::V6_ROUTER
            ),
            Event {
                deleted: true,
                address: MN6,
            },
            Some(HOA),
            CN,
            cap,
        )?);
        regs = lab.wait_registered("udp", cur, regs)?.registrations;
    }
    t.add_runs(&format!("{label} handover IPv4->IPv4"), v44, "ms");
    t.add_runs(&format!("{label} handover IPv4->IPv6"), v46, "ms");
    t.add_runs(&format!("{label} handover IPv6->IPv4"), v64, "ms");
    if ike {
        let made = lab.mn_info()?.1.counter("ike_established") - ike_before;
        t.add(
            &format!("{label} new IKE SAs per handover"),
            made as f64 / (3 * o.runs) as f64,
            "IKE SAs",
        );
    }
    let mut at = Vec::new();
    for _ in 0..o.runs {
        at.push(attach(
            lab,
            Some(HOA),
            CN,
            Duration::from_millis(1500),
            cap,
        )?);
        let (cur, _) = mn_v4(lab)?;
        regs = lab.wait_registered("udp", cur, regs)?.registrations;
    }
    t.add_runs(&format!("{label} attach"), at, "ms");
    Ok(())
}

/// m6t attach: the MN's IPv4 address comes back, first reply from the home agent.
pub(super) fn m6t_attach(lab: &mut Lab, t: &mut Table, o: &BenchOptions) -> LabResult<()> {
    let mut at = Vec::new();
    for _ in 0..o.runs {
        at.push(attach(
            lab,
            None,
            HA,
            Duration::from_millis(1500),
            Duration::from_secs(10),
        )?);
        lab.wait_client_address(None)?;
    }
    t.add_runs("m6t attach", at, "ms");
    Ok(())
}

/// One of the compared systems: its name in the tables, the prefix of its figures, what it
/// puts around an IPv6 packet, and the servers it needs besides the correspondent.
struct System {
    name: &'static str,
    label: &'static str,
    stack: &'static str,
    infra: &'static str,
}

const SYSTEMS: &[System] = &[
    System {
        name: "plain IPv4 path (no tunnel)",
        label: "plain",
        stack: "IPv4/TCP",
        infra: "none",
    },
    System {
        name: "m6t",
        label: "m6t",
        stack: "IPv4/UDP/IPv6/TCP",
        infra: "m6t gateway",
    },
    System {
        name: "DSMIPv6 behind the NAT",
        label: "dsmip",
        stack: "IPv4/UDP/IPv6/TCP",
        infra: "home agent",
    },
    System {
        name: "DSMIPv6 without a NAT",
        label: "dsmip ip-in-ip",
        stack: "IPv4/IPv6/TCP",
        infra: "home agent",
    },
    System {
        name: "Teredo (miredo)",
        label: "teredo",
        stack: "IPv4/UDP/IPv6/TCP",
        infra: "Teredo server (2 IPv4 addresses) + relay",
    },
    System {
        name: "WireGuard (wireguard-go)",
        label: "wireguard",
        stack: "IPv4/UDP/WireGuard/IPv6/TCP",
        infra: "WireGuard peer",
    },
    System {
        name: "m6t + MIPv6 + ESP",
        label: "m6t+esp",
        stack: "IPv4/UDP/IPv6/ESP/IPv6/TCP",
        infra: "m6t gateway + home agent",
    },
    System {
        name: "DSMIPv6 + ESP",
        label: "dsmip+esp",
        stack: "IPv4/UDP/ESP/IPv6/TCP",
        infra: "home agent",
    },
    System {
        name: "Teredo + MIPv6 + ESP",
        label: "teredo+esp",
        stack: "IPv4/UDP/IPv6/ESP/IPv6/TCP",
        infra: "Teredo server + relay + home agent",
    },
];

/// One printed and JSON table of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CompareTable {
    /// What it shows.
    pub title: String,
    /// Column headings after the system's name.
    pub columns: Vec<String>,
    /// One row per system: its name and a cell per column (text, or a figure; `null` when
    /// the run did not measure it).
    pub rows: Vec<(String, Vec<serde_json::Value>)>,
}

impl CompareTable {
    fn print(&self) {
        println!("\n{}", self.title);
        let mut w: Vec<usize> = self.columns.iter().map(|c| c.len()).collect();
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|(_, r)| r.iter().map(cell).collect())
            .collect();
        for row in &cells {
            for (i, c) in row.iter().enumerate() {
                w[i] = w[i].max(c.len());
            }
        }
        let head: Vec<String> = self
            .columns
            .iter()
            .zip(&w)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        println!("  {:<34} {}", "system", head.join("  "));
        for ((name, _), row) in self.rows.iter().zip(&cells) {
            let r: Vec<String> = row
                .iter()
                .zip(&w)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect();
            println!("  {name:<34} {}", r.join("  "));
        }
    }
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if x >= 1000.0 {
                format!("{x:.0}")
            } else if x >= 10.0 {
                format!("{x:.1}")
            } else {
                format!("{x:.2}")
            }
        }
        serde_json::Value::String(s) => s.clone(),
        _ => "-".into(),
    }
}

fn num(t: &Table, name: &str) -> serde_json::Value {
    if !t.has(name) {
        return serde_json::Value::Null;
    }
    serde_json::Number::from_f64(t.get(name))
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::String("no answer".into()))
}

/// A figure's name for a system: the plain path's carry the way they were measured.
fn fig(label: &str, what: &str) -> String {
    if label == "plain" {
        format!("plain {what} (IPv4, offloads on)")
    } else {
        format!("{label} {what}")
    }
}

/// The three tables of the comparison from the figures `t` holds, printed.
pub(super) fn tables(t: &Table) -> Vec<CompareTable> {
    let col = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let rows = |f: &dyn Fn(&System) -> Vec<serde_json::Value>| {
        SYSTEMS
            .iter()
            .map(|s| (s.name.to_string(), f(s)))
            .filter(|(_, r)| r.iter().skip(1).any(|v| !v.is_null()))
            .collect::<Vec<_>>()
    };
    let text = |s: &str| serde_json::Value::String(s.into());
    let throughput = CompareTable {
        title: "throughput (medians; Gbit/s, pkt/s)".into(),
        columns: col(&[
            "extra servers",
            "tcp MN->CN",
            "tcp CN->MN",
            "udp 64 B MN->CN",
        ]),
        rows: rows(&|s| {
            vec![
                text(s.infra),
                num(t, &fig(s.label, "tcp MN->CN")),
                num(t, &fig(s.label, "tcp CN->MN")),
                num(t, &fig(s.label, "udp 64 B MN->CN")),
            ]
        }),
    };
    let overhead = CompareTable {
        title: "overhead and MTU (bytes; MN->CN TCP at 100 Mbit/s, offloads off: link counters and a capture)"
            .into(),
        columns: col(&["on the wire", "wire bytes", "inner packet", "overhead"]),
        rows: rows(&|s| {
            vec![
                text(s.stack),
                num(t, &format!("{} wire bytes per full segment", s.label)),
                num(t, &format!("{} inner packet (effective MTU)", s.label)),
                num(t, &format!("{} overhead per packet", s.label)),
            ]
        }),
    };
    let handover = CompareTable {
        title: "handover and attach (ms to the first reply through the new path; medians)".into(),
        columns: col(&[
            "extra servers",
            "IPv4->IPv4",
            "IPv4->IPv6",
            "IPv6->IPv4",
            "attach",
        ]),
        rows: [
            ("m6t", "m6t", "m6t gateway"),
            ("DSMIPv6 (manual keys)", "dsmip", "home agent"),
            ("DSMIPv6 + IKEv2", "dsmip+ike", "home agent"),
            ("Teredo (miredo)", "teredo", "Teredo server + relay"),
            ("WireGuard (wireguard-go)", "wireguard", "WireGuard peer"),
        ]
        .iter()
        .map(|(name, l, infra)| {
            let v44 = if t.has(&format!("{l} handover IPv4->IPv4")) {
                num(t, &format!("{l} handover IPv4->IPv4"))
            } else {
                num(t, &format!("{l} handover"))
            };
            (
                name.to_string(),
                vec![
                    text(infra),
                    v44,
                    num(t, &format!("{l} handover IPv4->IPv6")),
                    num(t, &format!("{l} handover IPv6->IPv4")),
                    num(t, &format!("{l} attach")),
                ],
            )
        })
        .filter(|(_, r)| r.iter().skip(1).any(|v| !v.is_null()))
        .collect(),
    };
    let all = vec![throughput, overhead, handover];
    for x in &all {
        x.print();
    }
    all
}
