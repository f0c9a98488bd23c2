//! DSMIPv6 end to end in network namespaces: `m6t ha` and `m6t mn` with the real kernel,
//! a real nftables NAT, and real tools (ping, a TCP transfer checked with sha256, tshark
//! decoding the signalling independently, scapy building BUs with no code of ours).

use m6t::status::Report;
use m6t_lab::lab::dsmip::{tunnel_interfaces, DsmipOptions, LabIpsec, HA4, HOA, MN6};
use m6t_lab::lab::{Lab, LabOptions, CN, CN4, MN4, NAT_PUBLIC, V6_ROUTER};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// One lab at a time: the tests share the two cores and the tool binaries.
static SERIAL: Mutex<()> = Mutex::new(());

/// The /proc status text of every thread of the `m6t` processes in a role's namespace.
fn thread_status(l: &Lab, role: &str) -> Vec<String> {
    l.net.thread_status(role, "m6t")
}

/// Effective, permitted, bounding and ambient capability masks of every thread of the `m6t`
/// processes in a role's namespace.
fn thread_caps(l: &Lab, role: &str) -> Vec<[u64; 4]> {
    thread_status(l, role)
        .iter()
        .map(|st| {
            let get = |k: &str| {
                st.lines()
                    .find_map(|x| x.strip_prefix(k))
                    .map(|x| u64::from_str_radix(x.trim(), 16).unwrap())
                    .unwrap()
            };
            [
                get("CapEff:"),
                get("CapPrm:"),
                get("CapBnd:"),
                get("CapAmb:"),
            ]
        })
        .collect()
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_m6t"))
}

/// A script of `tests/peers`, run with /usr/bin/python3.
fn peer(name: &str) -> String {
    format!("{}/tests/peers/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn lab(tag: &str, o: &DsmipOptions) -> Lab {
    let mut l =
        Lab::build(bin(), &LabOptions::new(tag)).unwrap_or_else(|e| panic!("lab {tag}: {e}"));
    l.start_dsmip(o)
        .unwrap_or_else(|e| panic!("dsmip {tag}: {e}"));
    l
}

/// Starts tcpdump on `role`'s eth0 for UDP port 4191 into `file` and waits until it listens.
fn capture_4191(l: &mut Lab, role: &str, file: &str, extra: &[&str]) -> std::path::PathBuf {
    // What the wire carries: datagrams one by one, not the daemons' GSO buffers.
    l.segment_udp_on_links().unwrap();
    let pcap = l.net.dir.join(file);
    let path = pcap.display().to_string();
    let mut args = vec!["tcpdump", "-n", "-U"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-i", "eth0", "-w", &path, "udp port 4191"]);
    l.net.spawn(role, "tcpdump", &args).unwrap();
    let t = std::time::Instant::now();
    while !l.net.log("tcpdump").contains("listening on") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "tcpdump did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    pcap
}

/// Stops the capture once `pcap` holds `bytes` (or after 5 s).
fn stop_capture(l: &mut Lab, pcap: &Path, bytes: u64) {
    let t = std::time::Instant::now();
    while std::fs::metadata(pcap).map(|m| m.len()).unwrap_or(0) < bytes
        && t.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    l.net.stop("tcpdump");
}

fn counter(r: &Report, name: &str) -> u64 {
    r.counter(name)
}

#[test]
fn behind_nat_both_home_addresses_reach_the_correspondent_over_udp() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let l = lab("d6nat", &DsmipOptions::default());
    let m = l.wait_registered("udp", MN4[0], 0).unwrap();
    let v4hoa = m.ipv4_home_address.clone().expect("an IPv4 home address");
    assert!(v4hoa.starts_with("198.51.100."), "{v4hoa}");
    let p6 = l.ping_from("mn", HOA, CN, 3).unwrap();
    assert_eq!(p6, 3);
    assert_eq!(l.ping_from("mn", &v4hoa, CN4, 3).unwrap(), 3);
    // The HA saw the NAT's address, not the MN's.
    let Report::HomeAgent { bindings, .. } = l.ha_report().unwrap() else {
        panic!()
    };
    assert_eq!(bindings.len(), 1);
    assert!(bindings[0].nat);
    let t = format!("{:?}", bindings[0].tunnel);
    assert!(t.contains(NAT_PUBLIC[0]), "{t}");
    // Traffic really is UDP port 4191 toward the HA on the NAT's outside.
    let o = l
        .net
        .sh(
            "nat",
            &format!("conntrack -L -p udp -d {HA4} 2>/dev/null | grep -c 'dport=4191' || true"),
        )
        .unwrap();
    assert!(o.trim() != "0", "no UDP 4191 mapping: {o}");
    let r = l.ha_report().unwrap();
    assert!(counter(&r, "to_home") >= 6);
    assert!(counter(&r, "to_mn") >= 6);
}

#[test]
fn tcp_on_the_home_address_survives_renumbering_and_a_move_to_ipv6_and_back() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // As deployed: every BU and BA protected by ESP (RFC 4877 section 6.1 manual SAs).
    let o = DsmipOptions {
        ipsec: Some(LabIpsec::random().unwrap()),
        ..DsmipOptions::default()
    };
    let mut l = lab("d6move", &o);
    let m = l.wait_registered("udp", MN4[0], 0).unwrap();
    let (sink, source) = (peer("tcp_sink.py"), peer("tcp_source.py"));
    l.net
        .spawn("cn", "sink", &["/usr/bin/python3", &sink, CN])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    l.net
        .spawn("mn", "source", &["/usr/bin/python3", &source, HOA, CN, "9"])
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    l.mn_renumber_v4(MN4[0], MN4[1]).unwrap();
    let m2 = l.wait_registered("udp", MN4[1], m.registrations).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    l.mn_to_ipv6(MN4[1]).unwrap();
    let m3 = l
        .wait_registered("ipv6", "2001:db8:5::", m2.registrations)
        .unwrap();
    // The HA holds the IPv6 care-of address; signalling went with a Home Address option
    // and a type 2 Routing Header, data in IPv6-in-IPv6.
    let Report::HomeAgent { bindings, .. } = l.ha_report().unwrap() else {
        panic!()
    };
    assert!(format!("{:?}", bindings[0].tunnel).contains("2001:db8:5::10"));
    std::thread::sleep(Duration::from_secs(2));
    l.mn_to_ipv4(MN4[0]).unwrap();
    l.wait_registered("udp", MN4[0], m3.registrations).unwrap();
    let t = std::time::Instant::now();
    while l.net.running("source") && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = l.net.log("source");
    let f: Vec<&str> = out.split_whitespace().collect();
    assert!(
        f.len() >= 5 && f[0] == "sent",
        "source: {out}\nsink: {}",
        l.net.log("sink")
    );
    let bytes: u64 = f[1].parse().unwrap();
    assert!(bytes > 1_000_000, "{out}");
    assert_eq!(f[2], f[4], "sha256 differs: {out}");
    assert!(l.net.log("sink").contains(f[2]));
    let r = l.mn_info().unwrap().1;
    assert!(r.counter("ba_received") >= 4);
    let h = l.ha_report().unwrap();
    assert!(h.counter("bu_accepted") >= 4);
    for drop in ["ipsec_esp_bad_icv", "ipsec_esp_replay", "ipsec_unprotected"] {
        assert_eq!(h.counter(drop), 0, "{drop}");
    }
}

#[test]
fn without_nat_the_tunnel_is_ip_in_ip() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Lab::build(bin(), &LabOptions::new("d6nonat")).unwrap();
    // No NAT: the MN's address is routed as it is.
    l.net.sh("nat", "nft flush chain ip nat post").unwrap();
    l.start_dsmip(&DsmipOptions::default()).unwrap();
    let m = l.wait_registered("ip-in-ip", MN4[0], 0).unwrap();
    let v4hoa = m.ipv4_home_address.clone().unwrap();
    // Registered: the home agent and the mobile node keep CAP_NET_ADMIN and CAP_NET_RAW at
    // most, in every thread.
    for role in ["ha", "mn"] {
        const KEPT: u64 = (1 << 12) | (1 << 13);
        let caps = thread_caps(&l, role);
        assert!(caps.iter().any(|c| c[0] == KEPT), "{role}: {caps:x?}");
        for c in &caps {
            assert!(
                c[0] & !KEPT == 0 && c[1] & !KEPT == 0 && c[2] & !KEPT == 0 && c[3] == 0,
                "{role}: {caps:x?}"
            );
        }
    }
    l.net
        .spawn(
            "nat",
            "tcpdump",
            &[
                "tcpdump",
                "-n",
                "-i",
                "out0",
                "-c",
                "4",
                "ip proto 41 or ip proto 4",
            ],
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(l.ping_from("mn", HOA, CN, 3).unwrap(), 3);
    assert_eq!(l.ping_from("mn", &v4hoa, CN4, 3).unwrap(), 3);
    let t = std::time::Instant::now();
    while l.net.running("tcpdump") && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let dump = l.net.log("tcpdump");
    assert!(dump.contains("4 packets captured"), "{dump}");
    let Report::HomeAgent { bindings, .. } = l.ha_report().unwrap() else {
        panic!()
    };
    assert!(!bindings[0].nat);
}

#[test]
fn nat_reboot_and_home_agent_restart_recover_by_themselves() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = lab(
        "d6reboot",
        &DsmipOptions {
            nat_keepalive: 2,
            ..DsmipOptions::default()
        },
    );
    l.wait_registered("udp", MN4[0], 0).unwrap();
    assert_eq!(l.ping_from("mn", HOA, CN, 2).unwrap(), 2);
    l.nat_reboot(NAT_PUBLIC[1]).unwrap();
    // The next refresh BU (every 2 s, the keep-alive period the HA announced) makes a new
    // mapping and moves the binding to it.
    let t = std::time::Instant::now();
    loop {
        if let Report::HomeAgent { bindings, .. } = l.ha_report().unwrap() {
            if format!("{:?}", bindings.first().map(|b| b.tunnel)).contains(NAT_PUBLIC[1]) {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "binding never moved to the new NAT address"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(l.ping_from("mn", HOA, CN, 2).unwrap(), 2);

    // HA restart: the binding cache comes back from its file, with routes and proxy entry.
    l.stop_ha();
    let saved = std::fs::read_to_string(l.ha_state_file()).unwrap();
    assert!(saved.contains(HOA), "{saved}");
    l.start_ha().unwrap();
    let Report::HomeAgent { bindings, .. } = l.ha_report().unwrap() else {
        panic!()
    };
    assert_eq!(bindings.len(), 1);
    assert_eq!(l.ping_from("mn", HOA, CN, 2).unwrap(), 2);
    let proxy = l.net.sh("ha", "ip -6 neigh show proxy").unwrap();
    assert!(proxy.contains(HOA), "{proxy}");
    // A host on the home link reaches the home address through the HA's proxy ND.
    assert_eq!(l.ping("gw", HOA, 2, 56).unwrap().received, 2);
}

/// Every string value under `key` anywhere in tshark's JSON.
fn values(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    match x {
                        serde_json::Value::String(s) => out.push(s.clone()),
                        serde_json::Value::Array(a) => {
                            out.extend(a.iter().filter_map(|y| y.as_str().map(String::from)))
                        }
                        _ => {}
                    }
                }
                values(x, key, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| values(x, key, out)),
        _ => {}
    }
}

#[test]
fn tshark_decodes_the_signalling_with_the_configured_values() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Lab::build(bin(), &LabOptions::new("d6shark")).unwrap();
    l.write_dsmip_configs(&DsmipOptions::default()).unwrap();
    l.start_ha().unwrap();
    let pcap = capture_4191(&mut l, "ha", "sig.pcap", &[]);
    l.start_mn().unwrap();
    let m = l.wait_registered("udp", MN4[0], 0).unwrap();
    // Both packets (BU and BA, ~150 bytes each with headers) written before stopping.
    stop_capture(&mut l, &pcap, 300);
    let json = l
        .net
        .sh(
            "ha",
            &format!(
                "tshark -r {} -d udp.port==4191,ipv6 -T json 2>/dev/null",
                pcap.display()
            ),
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let get = |k: &str| {
        let mut o = Vec::new();
        values(&v, k, &mut o);
        o
    };
    // BU: A and H set, lifetime 400 s / 4, dynamic IPv4 HoA request, IPv4 CoA = the MN's
    // address before the NAT.
    assert_eq!(
        get("mip6.mhtype"),
        vec!["5", "6"],
        "{json}\ntcpdump: {}\npcap bytes: {:?}",
        l.net.log("tcpdump"),
        std::fs::metadata(&pcap).map(|m| m.len())
    );
    assert_eq!(get("mip6.bu.a_flag"), vec!["1"]);
    assert_eq!(get("mip6.bu.h_flag"), vec!["1"]);
    assert_eq!(get("mip6.bu.f_flag"), vec!["0"]);
    assert_eq!(get("mip6.bu.lifetime"), vec!["100"]);
    assert_eq!(get("mip6.ipv4ha.preflen")[0], "32");
    assert_eq!(get("mip6.ipv4ha.ha")[0], "0.0.0.0");
    assert_eq!(get("mip6.ipv4coa.addr"), vec![MN4[0]]);
    // BA: accepted, same sequence number, IPv4 acknowledgement success with the address
    // granted, NAT detected with the configured keep-alive (110 s).
    assert_eq!(get("mip6.ba.status"), vec!["0"]);
    assert_eq!(get("mip6.bu.seqnr"), get("mip6.ba.seqnr"));
    assert_eq!(get("mip6.ipv4aa.sts"), vec!["0"]);
    let granted = m.ipv4_home_address.unwrap();
    assert!(json.contains(&granted), "granted {granted} not in the BA");
    assert_eq!(get("mip6.natd.refresh_t"), vec!["110"]);
    assert_eq!(get("mip6.natd.f_flag"), vec!["0"]);
    assert_eq!(get("mip6.ba.lifetime"), vec!["100"]);
}

const SCAPY_BU: &str = r#"
import sys, logging
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import IPv6, IPv6ExtHdrDestOpt, HAO, MIP6MH_BU, send, conf
conf.verb = 0
coa, ha, hoa = sys.argv[1], sys.argv[2], sys.argv[3]
# Flags A and H (scapy orders them AHLKMRP, most significant first).
p = IPv6(src=coa, dst=ha) / IPv6ExtHdrDestOpt(options=[HAO(hoa=hoa)]) / MIP6MH_BU(seq=77, flags="AH", mhtime=10)
send(p)
"#;

#[test]
fn a_scapy_built_bu_with_a_home_address_option_is_accepted() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Lab::build(bin(), &LabOptions::new("d6scapy")).unwrap();
    l.write_dsmip_configs(&DsmipOptions::default()).unwrap();
    l.start_ha().unwrap();
    l.net
        .sh(
            "mn",
            &format!(
                "ip -6 addr add {MN6}/64 dev eth0 nodad && ip -6 route add default via {V6_ROUTER}"
            ),
        )
        .unwrap();
    let py = l.net.write("bu.py", SCAPY_BU).unwrap();
    let other = "2001:db8:1::b";
    l.net
        .sh(
            "mn",
            &format!(
                "/usr/bin/python3 {} {MN6} {} {other}",
                py.display(),
                m6t_lab::lab::HA
            ),
        )
        .unwrap();
    let t = std::time::Instant::now();
    let b = loop {
        if let Report::HomeAgent { bindings, .. } = l.ha_report().unwrap() {
            if let Some(b) = bindings.into_iter().find(|b| b.hoa.to_string() == other) {
                break b;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no binding: {}",
            l.net.log("ha")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(b.seq, 77);
    assert!(format!("{:?}", b.tunnel).contains(MN6));
    assert!(b.remaining_ms <= 40_000 && b.remaining_ms > 30_000);
    assert_eq!(l.ha_report().unwrap().counter("ba_sent"), 1);
}

#[test]
fn the_m6t_tunnel_serves_as_an_ipv6_care_of_address() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // m6t client and gateway first (seed 000), then the mobile node preferring m6t0, marked
    // as an externally configured tunnel, over eth0 (seed 002 on top of seed 000).
    let mut l = Lab::start(bin(), &LabOptions::new("d6m6t")).unwrap();
    l.write_dsmip_configs(&DsmipOptions {
        interfaces: tunnel_interfaces("m6t0"),
        ..DsmipOptions::default()
    })
    .unwrap();
    l.start_ha().unwrap();
    l.start_mn().unwrap();
    let m = l.wait_registered("ipv6", "fd00:6d36:7400:1:1:", 0).unwrap();
    assert_eq!(m.candidates.1.as_deref(), Some(MN4[0]));
    assert_eq!(l.ping_from("mn", HOA, CN, 3).unwrap(), 3);
}

/// A small authoritative DNS server (scapy's DNS classes) for example.com: the SRV record
/// `mip6ha.ipv6.example.com` names ha1.example.com, which has AAAA and A records.
const DNS_PY: &str = r#"
import socket, sys, logging
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import DNS, DNSRR, DNSRRSRV
ha6, ha4 = sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    try:
        q = DNS(data)
        name = q.qd.qname.decode().lower(); t = q.qd.qtype
    except Exception:
        continue
    an = None
    if t == 33 and name == "mip6ha.ipv6.example.com.":
        an = DNSRRSRV(rrname=name, ttl=60, priority=0, weight=0, port=0, target="ha1.example.com.")
    elif t == 28 and name == "ha1.example.com.":
        an = DNSRR(rrname=name, type="AAAA", ttl=60, rdata=ha6)
    elif t == 1 and name == "ha1.example.com.":
        an = DNSRR(rrname=name, type="A", ttl=60, rdata=ha4)
    r = DNS(id=q.id, qr=1, aa=1, rd=q.rd, ra=1, qd=q.qd, an=an, rcode=0 if an else 3)
    s.sendto(bytes(r), peer)
    print("answered", name, t, flush=True)
"#;

#[test]
fn the_home_agent_is_found_through_a_dns_srv_record() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Lab::build(bin(), &LabOptions::new("d6dns")).unwrap();
    let py = l.net.write("dns.py", DNS_PY).unwrap();
    l.net
        .spawn(
            "nat",
            "dns",
            &[
                "/usr/bin/python3",
                &py.display().to_string(),
                "192.0.2.1",
                m6t_lab::lab::HA,
                HA4,
            ],
        )
        .unwrap();
    let t = std::time::Instant::now();
    while !l.net.log("dns").contains("ready") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "dns server: {}",
            l.net.log("dns")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    l.start_dsmip(&DsmipOptions {
        home_agent: "ha_domain = \"example.com\"\nnameservers = [\"192.0.2.1\"]\n".into(),
        ..DsmipOptions::default()
    })
    .unwrap();
    l.wait_registered("udp", MN4[0], 0).unwrap();
    assert_eq!(l.ping_from("mn", HOA, CN, 2).unwrap(), 2);
    let log = l.net.log("dns");
    assert!(
        log.contains("answered mip6ha.ipv6.example.com. 33"),
        "{log}"
    );
    assert!(l.net.log("mn").contains("found in DNS"));
}

/// The registration time the mobile node reports is the one a capture on its own link
/// shows between its BU and the BA (it once reported a second more: the BU waited in the
/// queue while the loop slept), and SIGTERM stops it at once.
#[test]
fn the_reported_registration_time_is_the_one_on_the_wire_and_sigterm_stops_at_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Lab::build(bin(), &LabOptions::new("d6time")).unwrap();
    l.write_dsmip_configs(&DsmipOptions::default()).unwrap();
    l.start_ha().unwrap();
    // Timestamps from the kernel's clock, as the MN's own reading is.
    let pcap = capture_4191(&mut l, "mn", "mn.pcap", &["-j", "adapter_unsynced"]);
    l.start_mn().unwrap();
    let m1 = l.wait_registered("udp", MN4[0], 0).unwrap();
    // A move: the BU leaves on a netlink notification, with nothing else to wake the loop.
    l.mn_renumber_v4(MN4[0], MN4[1]).unwrap();
    let m2 = l.wait_registered("udp", MN4[1], m1.registrations).unwrap();
    stop_capture(&mut l, &pcap, 600);
    // MH type 5 is the BU, 6 the BA (RFC 6275 section 6.1).
    let fields = l
        .net
        .sh(
            "mn",
            &format!(
                "tshark -r {} -d udp.port==4191,ipv6 -T fields -e frame.time_epoch -e mip6.mhtype 2>/dev/null",
                pcap.display()
            ),
        )
        .unwrap();
    let at = |mh: &str| -> Vec<f64> {
        fields
            .lines()
            .filter(|line| line.split_whitespace().nth(1) == Some(mh))
            .filter_map(|line| line.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let (bus, bas) = (at("5"), at("6"));
    assert!(bus.len() >= 2 && bas.len() >= 2, "capture: {fields}");
    for (m, ba) in [(&m1, bas[0]), (&m2, bas[bas.len() - 1])] {
        let bu = bus
            .iter()
            .copied()
            .filter(|t| *t <= ba)
            .fold(f64::MIN, f64::max);
        let wire_ms = (ba - bu) * 1e3;
        let reported = m.last_registration_ms.expect("a registration time");
        // Both clocks read the same moments give or take the stack and a wake-up.
        assert!(
            (reported - wire_ms).abs() < 5.0,
            "reported {reported:.3} ms, capture {wire_ms:.3} ms ({fields})"
        );
    }
    let t = std::time::Instant::now();
    l.net.stop("mn");
    let took = t.elapsed();
    // Before the driver runtime the mobile node took about 1.9 s (a poll(2) it only left
    // once a second); a signal now wakes its loop at once.
    assert!(took < Duration::from_millis(500), "SIGTERM took {took:?}");
    assert!(l.net.log("mn").contains("mobile node stopped"));
}

/// The real and effective uids of every thread of the `m6t` processes in a namespace.
fn thread_uids(l: &Lab, role: &str) -> Vec<String> {
    thread_status(l, role)
        .iter()
        .filter_map(|st| st.lines().find_map(|x| x.strip_prefix("Uid:")))
        .map(|u| u.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Least privilege for the DSMIPv6 daemons (issue 14): a home agent and a mobile node told
/// `user = "nobody"` switch to it in every thread once started (their binding cache writer
/// and metrics server too), keep CAP_NET_ADMIN and CAP_NET_RAW at most (those threads none), and still register with IKEv2 through the NAT, carry payload in ESP
/// on both home addresses, write the binding cache as that user, and keep the home agent's
/// per-source budget in step (its map of exempt senders: the node's TCP far above a 200/s
/// budget, nothing dropped, no budget error).
#[test]
fn home_agent_and_mobile_node_run_as_nobody_register_with_ike_and_carry_payload() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let nobody = m6t_linux::caps::lookup_user("nobody")
        .unwrap()
        .expect("a user `nobody`");
    let o = DsmipOptions {
        ipsec: Some(LabIpsec::ike().unwrap()),
        // With their metrics threads, started before the switch (a thread that dropped its
        // capabilities first made glibc abort the switch).
        ha_extra: "user = \"nobody\"\nsource_packet_rate = 200\nsource_packet_burst = 100\n\
                   metrics_listen = \"127.0.0.1:9464\"\n"
            .into(),
        mn_extra: "user = \"nobody\"\nmetrics_listen = \"127.0.0.1:9464\"\n".into(),
        ..DsmipOptions::default()
    };
    let mut l = Lab::build(bin(), &LabOptions::new("d6nobody")).unwrap();
    l.write_dsmip_configs(&o).unwrap();
    // The binding cache is written as the user: its directory is the user's.
    std::os::unix::fs::chown(&l.net.dir, Some(nobody.uid), Some(nobody.gid)).unwrap();
    l.start_ha().unwrap();
    l.start_mn().unwrap();
    let m = l
        .wait_registered("udp", MN4[0], 0)
        .unwrap_or_else(|e| panic!("{e}\nha log:\n{}", l.net.log("ha")));
    let v4hoa = m.ipv4_home_address.clone().expect("an IPv4 home address");
    assert_eq!(l.ping_from("mn", HOA, CN, 3).unwrap(), 3);
    assert_eq!(l.ping_from("mn", &v4hoa, CN4, 3).unwrap(), 3);
    let gbps = l.tcp_transfer_from("cn", Some(HOA), CN, 1, false).unwrap();
    assert!(gbps > 0.05, "MN TCP {gbps} Gbit/s under a 200/s budget");
    for role in ["ha", "mn"] {
        let uids = thread_uids(&l, role);
        let want = format!("{0} {0}", nobody.uid);
        assert!(
            !uids.is_empty() && uids.iter().all(|u| *u == want),
            "{role}: {uids:?}"
        );
        const KEPT: u64 = (1 << 12) | (1 << 13);
        let caps = thread_caps(&l, role);
        for c in &caps {
            assert!(
                c[0] & !KEPT == 0 && c[1] & !KEPT == 0 && c[2] & !KEPT == 0 && c[3] == 0,
                "{role}: {caps:x?}"
            );
        }
        assert!(caps.iter().any(|c| c[0] != 0), "{role}: {caps:x?}");
    }
    let h = l.ha_report().unwrap();
    assert_eq!(counter(&h, "drop_source_budget"), 0);
    assert_eq!(counter(&h, "budget_errors"), 0);
    assert_eq!(counter(&h, "state_file_errors"), 0);
    // The cache reaches its file within the save delay, owned by the user.
    let file = l.ha_state_file();
    let t = std::time::Instant::now();
    while !file.exists() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(&file).unwrap();
    assert_eq!(md.uid(), nobody.uid);
    assert!(std::fs::read_to_string(&file).unwrap().contains(HOA));
}

/// With the m6t client running beside the mobile node (its default route via `m6t0`), a move
/// to the IPv6 network costs one BU and no retransmission: the new address is a care-of
/// address only once a route toward the home agent leaves by its own interface (not while
/// `m6t0`'s default route alone reaches the home agent, where a BU from that address is
/// dropped as a wrong source), and the IPv6 default route's arrival is noticed. Before, the
/// BU left by `m6t0` and the registration waited for the retransmission, one second later.
#[test]
fn beside_m6t_each_move_between_ipv4_and_ipv6_costs_one_bu() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Lab::start(bin(), &LabOptions::new("d6besidem6t")).unwrap();
    l.write_dsmip_configs(&DsmipOptions {
        ipsec: Some(LabIpsec::random().unwrap()),
        ..DsmipOptions::default()
    })
    .unwrap();
    l.start_ha().unwrap();
    l.start_mn().unwrap();
    let mut regs = l.wait_registered("udp", MN4[0], 0).unwrap().registrations;
    let bu_sent = |l: &Lab| counter(&l.mn_info().unwrap().1, "bu_sent");
    for _ in 0..4 {
        // m6t's default route is back (the client re-attached after the last move).
        let t = std::time::Instant::now();
        while !l
            .net
            .sh("mn", "ip -6 route show default")
            .unwrap()
            .contains("m6t0")
        {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no m6t0 default route"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let before = bu_sent(&l);
        l.net
            .sh(
                "mn",
                &format!(
                    "ip -6 addr add {MN6}/64 dev eth0 nodad && \
                     ip -6 route add default via {V6_ROUTER} && ip addr del {}/24 dev eth0",
                    MN4[0]
                ),
            )
            .unwrap();
        regs = l.wait_registered("ipv6", MN6, regs).unwrap().registrations;
        assert_eq!(bu_sent(&l) - before, 1, "{}", l.net.log("mn"));
        let before = bu_sent(&l);
        l.net
            .sh(
                "mn",
                &format!(
                    "ip addr add {}/24 dev eth0 && ip route replace default via 192.0.2.1 && \
                     ip -6 route del default via {V6_ROUTER} && ip -6 addr del {MN6}/64 dev eth0",
                    MN4[0]
                ),
            )
            .unwrap();
        regs = l
            .wait_registered("udp", MN4[0], regs)
            .unwrap()
            .registrations;
        assert_eq!(bu_sent(&l) - before, 1, "{}", l.net.log("mn"));
    }
    assert_eq!(l.ping_from("mn", HOA, CN, 3).unwrap(), 3);
}
