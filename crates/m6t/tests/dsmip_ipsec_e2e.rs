//! DSMIPv6 with IPsec end to end in network namespaces: `m6t ha` and `m6t mn` protecting
//! BU and BA with the manual SAs of RFC 4877 section 6.1, behind a real nftables NAT and
//! from an IPv6 care-of address, judged by peers we did not write: tshark decrypts and
//! authenticates our ESP with the configured keys, and scapy (with python3-cryptography)
//! plays a mobile node whose ESP our home agent accepts and which decrypts our BA.

use m6t::status::{self, Report};
use m6t_lab::lab::dsmip::{
    tunnel_interfaces, DsmipOptions, LabIpsec, HA4, HOA, SPI_A, SPI_B, SPI_C, SPI_D,
};
use m6t_lab::lab::{Lab, LabOptions, CN, GW4, HA, MN4};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One lab at a time: the tests share the two cores and the tool binaries.
static SERIAL: Mutex<()> = Mutex::new(());

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_m6t"))
}

fn with_ipsec(wrong_key: bool) -> DsmipOptions {
    let mut i = LabIpsec::random().unwrap();
    i.mn_wrong_key = wrong_key;
    DsmipOptions {
        ipsec: Some(i),
        ..DsmipOptions::default()
    }
}

fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

fn peer(name: &str) -> String {
    format!("{}/tests/peers/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Starts tcpdump on `role`'s eth0 with `filter` into `file` and waits until it listens.
fn capture(l: &mut Lab, role: &str, file: &str, filter: &str) -> PathBuf {
    // What the wire carries: datagrams one by one, not the daemons' GSO buffers.
    l.segment_udp_on_links().unwrap();
    let pcap = l.net.dir.join(file);
    let path = pcap.display().to_string();
    l.net
        .spawn(
            role,
            "tcpdump",
            &[
                "tcpdump",
                "-n",
                "-U",
                "--immediate-mode",
                "-i",
                "eth0",
                "-w",
                &path,
                filter,
            ],
        )
        .unwrap();
    let t = Instant::now();
    while !l.net.log("tcpdump").contains("listening on") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "tcpdump did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    pcap
}

/// Waits until `f` holds on the home agent's report (5 s at most).
fn wait_ha(l: &Lab, what: &str, f: impl Fn(&Report) -> bool) -> Report {
    let t = Instant::now();
    loop {
        let r = l.ha_report().unwrap();
        if f(&r) {
            return r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{what}: {}\nha log:\n{}",
            status::render(&r),
            l.net.log("ha")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The values of some tshark fields, one line per packet, fields separated by tabs.
fn tshark_fields(l: &Lab, pcap: &Path, opts: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let f: Vec<String> = fields.iter().map(|f| format!("-e {f}")).collect();
    let out = l
        .net
        .sh(
            "ha",
            &format!(
                "tshark -r {} -d udp.port==4191,ipv6 {opts} -T fields {} 2>/dev/null",
                pcap.display(),
                f.join(" ")
            ),
        )
        .unwrap();
    out.lines()
        .map(|line| line.split('\t').map(String::from).collect())
        .collect()
}

/// tshark's ESP SA table (the `esp_sa` UAT) for the lab's SAs, outer IPv4 or IPv6, any
/// addresses: the outer addresses of a BU from a care-of address are not the home address.
fn esp_sa_uat(i: &LabIpsec) -> String {
    let mut sas = vec![(SPI_A, &i.sa1_key), (SPI_B, &i.sa2_key)];
    if let Some((k3, k4)) = &i.payload {
        sas.extend([(SPI_C, k3), (SPI_D, k4)]);
    }
    let mut o = String::from(
        "-o esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:TRUE",
    );
    for (spi, key) in sas {
        for ip in ["IPv4", "IPv6"] {
            o += &format!(
                " -o 'uat:esp_sa:\"{ip}\",\"*\",\"*\",\"{spi:#010x}\",\"AES-CBC [RFC3602]\",\"0x{}\",\"HMAC-SHA-256-128 [RFC4868]\",\"0x{}\"'",
                &key[..32],
                &key[32..96]
            );
        }
    }
    o
}

#[test]
fn bu_and_ba_travel_in_esp_that_tshark_decrypts_and_authenticates() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let o = with_ipsec(false);
    let mut l = Lab::build(bin(), &LabOptions::new("d6esp")).unwrap();
    l.write_dsmip_configs(&o).unwrap();
    l.start_ha().unwrap();
    // The signalling between the NAT and the home agent, in UDP and, after the move, in
    // IPv6 with a Home Address option or a type 2 Routing Header (TCP and ICMPv6 left out).
    let pcap = capture(
        &mut l,
        "ha",
        "esp.pcap",
        "udp port 4191 or (ip6 and ip6[6] != 6 and ip6[6] != 58)",
    );
    l.start_mn().unwrap();
    let m = l.wait_registered("udp", MN4[0], 0).unwrap();
    assert_eq!(l.ping_from("mn", HOA, CN, 2).unwrap(), 2);
    l.mn_to_ipv6(MN4[0]).unwrap();
    let m2 = l
        .wait_registered("ipv6", "2001:db8:5::", m.registrations)
        .unwrap();
    l.mn_to_ipv4(MN4[0]).unwrap();
    l.wait_registered("udp", MN4[0], m2.registrations).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    l.net.stop("tcpdump");

    // Without the keys: ESP with our two SPIs, and not one readable Mobility Header.
    let plain = tshark_fields(&l, &pcap, "", &["esp.spi", "mip6.mhtype"]);
    let spis: Vec<&str> = plain.iter().map(|f| f[0].as_str()).collect();
    let n_a = spis.iter().filter(|s| **s == "0x00001001").count();
    let n_b = spis.iter().filter(|s| **s == "0x00001002").count();
    assert!(
        n_a >= 3 && n_b >= 3,
        "SPIs on the wire: {spis:?}\ncapture: {}\n{}",
        l.net.log("tcpdump"),
        l.net
            .sh(
                "ha",
                &format!("tshark -r {} -d udp.port==4191,ipv6 2>&1", pcap.display())
            )
            .unwrap_or_default()
    );
    assert!(
        plain
            .iter()
            .all(|f| f.get(1).map_or(true, |t| t.is_empty())),
        "a cleartext Mobility Header crossed: {plain:?}"
    );

    // With the keys: tshark opens every one, checks every ICV, and finds BU and BA inside,
    // the BU from the IPv6 care-of address behind a Home Address option.
    let i = o.ipsec.as_ref().unwrap();
    let open = tshark_fields(
        &l,
        &pcap,
        &esp_sa_uat(i),
        &[
            "esp.spi",
            "mip6.mhtype",
            "esp.icv_good",
            "ipv6.opt.mipv6.home_address",
            "mip6.ipv4coa.addr",
        ],
    );
    let esp: Vec<&Vec<String>> = open.iter().filter(|f| !f[0].is_empty()).collect();
    assert!(!esp.is_empty());
    for f in &esp {
        let want = if f[0] == "0x00001001" { "5" } else { "6" };
        assert_eq!(f[1], want, "SPI {} carried {:?}", f[0], f);
        assert!(
            f[2] == "1" || f[2] == "True",
            "ICV not verified by tshark: {f:?}"
        );
    }
    assert!(
        esp.iter().any(|f| f[3] == HOA && f[1] == "5"),
        "no BU with a Home Address option: {open:?}"
    );
    assert!(
        esp.iter().any(|f| f[4] == MN4[0]),
        "no IPv4 CoA option: {open:?}"
    );
    // The SAs' counters agree with the wire.
    let Report::HomeAgent {
        ipsec: Some(ipsec), ..
    } = l.ha_report().unwrap()
    else {
        panic!("no ipsec in the report")
    };
    let sa1 = ipsec.sas.iter().find(|s| s.spi == SPI_A).unwrap();
    assert_eq!(sa1.packets as usize, n_a, "{ipsec:?}");
}

const UNPROTECTED_BU: &str = r#"
import sys, logging
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import IPv6, MIP6MH_BU, IP, UDP, send, conf
conf.verb = 0
hoa, ha6, ha4 = sys.argv[1], sys.argv[2], sys.argv[3]
send(IP(dst=ha4) / UDP(sport=4191, dport=4191) / IPv6(src=hoa, dst=ha6) / MIP6MH_BU(seq=5, flags="AH", mhtime=25))
"#;

#[test]
fn a_scapy_mobile_node_registers_through_esp_and_an_unprotected_bu_is_discarded() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let o = with_ipsec(false);
    let mut l = Lab::build(bin(), &LabOptions::new("d6sesp")).unwrap();
    l.write_dsmip_configs(&o).unwrap();
    l.start_ha().unwrap();
    // First without ESP: no answer, no binding, counted.
    let py = l.net.write("plain_bu.py", UNPROTECTED_BU).unwrap();
    l.net
        .sh(
            "mn",
            &format!("/usr/bin/python3 {} {HOA} {HA} {HA4}", py.display()),
        )
        .unwrap();
    let r = wait_ha(&l, "the unprotected BU counted", |r| {
        r.counter("ipsec_unprotected") >= 1
    });
    assert_eq!(r.counter("ba_sent"), 0);
    assert_eq!(r.counter("bu_accepted"), 0);
    // Then scapy's ESP with the home agent's own key files: accepted, and scapy decrypts
    // the BA (status 0 for its sequence number) that came back through the NAT.
    let dir = l.net.dir.display().to_string();
    let out = l
        .net
        .sh(
            "mn",
            &format!(
                "/usr/bin/python3 {} {HOA} {HA} {HA4} {} {SPI_A:#x} {dir}/ha-sa1.key {SPI_B:#x} {dir}/ha-sa2.key 4242",
                peer("esp_bu.py"),
                MN4[0]
            ),
        )
        .unwrap_or_else(|e| panic!("{e}\nha log:\n{}", l.net.log("ha")));
    let ba: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(ba["status"], 0, "{out}");
    assert_eq!(ba["seq"], 4242);
    assert_eq!(ba["esp_next"], 50, "the BA came in ESP");
    let Report::HomeAgent { bindings, .. } =
        wait_ha(&l, "scapy's binding", |r| r.counter("bu_accepted") == 1)
    else {
        panic!()
    };
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].hoa.to_string(), HOA);
    // NAT detection through ESP: the outer source recorded before IPsec was the NAT's.
    assert!(bindings[0].nat, "{bindings:?}");
}

#[test]
fn a_wrong_key_is_dropped_at_the_home_agent_and_the_mobile_node_says_why() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Lab::build(bin(), &LabOptions::new("d6wkey")).unwrap();
    l.start_dsmip(&with_ipsec(true)).unwrap();
    let t = Instant::now();
    let (m, r) = loop {
        if let Ok((m, r)) = l.mn_info() {
            if m.unanswered_bus >= status::FAILING_AFTER {
                break (m, r);
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the mobile node never reported failing:\n{}",
            l.net.log("mn")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(m.coa.is_none() && m.registrations == 0, "{m:?}");
    let shown = status::render(&r);
    assert!(shown.contains("FAILING"), "{shown}");
    assert!(shown.contains("[ipsec]"), "{shown}");
    let h = l.ha_report().unwrap();
    assert!(
        h.counter("ipsec_esp_bad_icv") >= 3,
        "{}",
        status::render(&h)
    );
    assert_eq!(h.counter("ba_sent"), 0);
    let Report::HomeAgent { bindings, .. } = h else {
        panic!()
    };
    assert!(bindings.is_empty());
    assert!(
        l.net.log("mn").contains("registration failing"),
        "{}",
        l.net.log("mn")
    );
    // The keys are in no log.
    let key = &ha_sa1_key(&l);
    assert!(!l.net.log("ha").contains(key.as_str()) && !l.net.log("mn").contains(key.as_str()));
}

/// The home agent's SA1 key as written in the lab.
fn ha_sa1_key(l: &Lab) -> String {
    std::fs::read_to_string(l.net.dir.join("ha-sa1.key"))
        .unwrap()
        .trim()
        .to_string()
}

const REPLAY: &str = r#"
import sys, socket, logging
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import rdpcap, UDP
pcap, ha4, spi = sys.argv[1], sys.argv[2], int(sys.argv[3], 0)
for p in rdpcap(pcap):
    if UDP in p and p[UDP].dport == 4191:
        payload = bytes(p[UDP].payload)
        if payload[6] == 50 and int.from_bytes(payload[40:44], "big") == spi:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(payload, (ha4, 4191))
            print("replayed", len(payload))
            break
"#;

#[test]
fn a_replayed_bu_is_dropped_and_counted() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Lab::build(bin(), &LabOptions::new("d6replay")).unwrap();
    l.write_dsmip_configs(&with_ipsec(false)).unwrap();
    l.start_ha().unwrap();
    let pcap = capture(&mut l, "ha", "bu.pcap", "udp dst port 4191");
    l.start_mn().unwrap();
    l.wait_registered("udp", MN4[0], 0).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    l.net.stop("tcpdump");
    let before = l.ha_report().unwrap();
    let py = l.net.write("replay.py", REPLAY).unwrap();
    let out = l
        .net
        .sh(
            "mn",
            &format!(
                "/usr/bin/python3 {} {} {HA4} {SPI_A:#x}",
                py.display(),
                pcap.display()
            ),
        )
        .unwrap();
    assert!(
        out.starts_with("replayed"),
        "{out}\ncapture: {}\n{}",
        l.net.log("tcpdump"),
        l.net
            .sh("ha", &format!("tshark -r {} 2>&1", pcap.display()))
            .unwrap_or_default()
    );
    let r = wait_ha(&l, "the replay counted", |r| {
        r.counter("ipsec_esp_replay") >= 1
    });
    assert_eq!(r.counter("bu_accepted"), before.counter("bu_accepted"));
    assert_eq!(r.counter("ba_sent"), before.counter("ba_sent"));
}

/// RFC 5555 section 5: payload in tunnel-mode ESP (UDP 4500 behind the NAT, IPv6/ESP from
/// the IPv6 network). A TCP transfer on the home address survives a renumbering and a move
/// to IPv6 and back with the sha256 equal; on the mobile node's link not one TCP segment or
/// Mobility Header crosses in the clear, and tshark, given the keys, decrypts the payload
/// and finds the transfer inside.
#[test]
fn payload_in_esp_carries_tcp_across_moves_and_nothing_crosses_in_the_clear() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let o = DsmipOptions {
        ipsec: Some(LabIpsec::random_with_payload().unwrap()),
        ..DsmipOptions::default()
    };
    let mut l = Lab::build(bin(), &LabOptions::new("d6pay")).unwrap();
    l.write_dsmip_configs(&o).unwrap();
    l.start_ha().unwrap();
    let pcap = capture(&mut l, "mn", "mn.pcap", "not arp and not icmp6");
    l.start_mn().unwrap();
    let m = l.wait_registered("udp", MN4[0], 0).unwrap();
    let sent = l
        .tcp_across_moves(&peers(), &m, 8)
        .unwrap_or_else(|e| panic!("{e}"));
    l.net.stop("tcpdump");
    assert!(sent > 1_000_000, "{sent} bytes");

    // In the clear on the MN's link: nothing of the transfer, no Mobility Header.
    let clear = tshark_fields(
        &l,
        &pcap,
        "",
        &["frame.number", "tcp.port", "mip6.mhtype", "esp.spi"],
    );
    let leaked: Vec<&Vec<String>> = clear
        .iter()
        .filter(|f| f.len() > 2 && (!f[1].is_empty() || !f[2].is_empty()))
        .collect();
    assert!(leaked.is_empty(), "in the clear: {leaked:?}");
    let count = |spi: &str| {
        clear
            .iter()
            .filter(|f| f.get(3).is_some_and(|s| s == spi))
            .count()
    };
    let (up, down) = (count("0x00001003"), count("0x00001004"));
    assert!(
        up > 100 && down > 100,
        "payload SPIs on the wire: {up} up, {down} down"
    );

    // With the keys tshark opens the payload: the transfer is inside, every ICV good.
    let i = o.ipsec.as_ref().unwrap();
    let open = tshark_fields(
        &l,
        &pcap,
        &esp_sa_uat(i),
        &["esp.spi", "tcp.dstport", "esp.icv_good"],
    );
    let inside = open
        .iter()
        .filter(|f| f[0] == "0x00001003" && f.get(1).is_some_and(|p| p == "5001"))
        .count();
    assert!(
        inside > 100,
        "tshark found {inside} TCP segments to port 5001 inside SA3"
    );
    assert!(
        open.iter()
            .filter(|f| !f[0].is_empty())
            .all(|f| f.get(2).is_some_and(|g| g == "1" || g == "True")),
        "an ICV tshark did not verify"
    );
    let h = l.ha_report().unwrap();
    assert!(h.counter("esp_keepalives") >= 2, "{}", status::render(&h));
    assert_eq!(h.counter("ipsec_unprotected"), 0, "{}", status::render(&h));
}

/// Seed 001 req. #3 (RFC 5555 section 5.1): the mobile node moves to a second IPv4 address
/// while the first stays usable; its tunnel module tells the ESP-protected BU from
/// ESP-protected payload by SPI alone — by the SPD/SAD look-up, then by heuristic and
/// locking — so the BU leaves from the new address while payload keeps the old tunnel until
/// the BA, read from a capture on the mobile node's link.
#[test]
fn the_bu_leaves_from_the_new_address_while_payload_keeps_the_old_tunnel_until_the_ba() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (tag, detection) in [("d6spi", "spi"), ("d6heur", "heuristic")] {
        let mut ipsec = LabIpsec::random_with_payload().unwrap();
        ipsec.bu_detection = Some(detection);
        let o = DsmipOptions {
            ipsec: Some(ipsec),
            ..DsmipOptions::default()
        };
        let mut l = Lab::build(bin(), &LabOptions::new(tag)).unwrap();
        l.write_dsmip_configs(&o).unwrap();
        l.start_ha().unwrap();
        let pcap = capture(&mut l, "mn", "move.pcap", "udp");
        l.start_mn().unwrap();
        let m = l.wait_registered("udp", MN4[0], 0).unwrap();
        // Payload all along: a ping every 2 ms from the home address.
        l.net
            .spawn(
                "mn",
                "ping",
                &[
                    "ping", "-n", "-q", "-i", "0.002", "-c", "1500", "-I", HOA, CN,
                ],
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        // The first BA from the new address is held back for a second (the mobile node
        // retransmits its BU after one, RFC 6275 section 11.8), so the move is under way
        // long enough to see where payload goes meanwhile.
        l.net
            .sh(
                "mn",
                "nft add table inet hold && nft add chain inet hold in '{ type filter hook input priority 0; }' && nft add rule inet hold in udp sport 4191 drop",
            )
            .unwrap();
        l.mn_prefer_v4(MN4[0], MN4[1]).unwrap();
        std::thread::sleep(Duration::from_millis(900));
        l.net.sh("mn", "nft delete table inet hold").unwrap();
        l.wait_registered("udp", MN4[1], m.registrations).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        l.net.stop("ping");
        l.net.stop("tcpdump");
        let rows = tshark_fields(
            &l,
            &pcap,
            "",
            &[
                "frame.time_relative",
                "ip.src",
                "ip.dst",
                "udp.srcport",
                "udp.dstport",
                "esp.spi",
            ],
        );
        let t = |r: &Vec<String>| r[0].parse::<f64>().unwrap_or(f64::NAN);
        let (old, new) = (MN4[0], MN4[1]);
        let bu_new: Vec<f64> = rows
            .iter()
            .filter(|r| r[1] == new && r[4] == "4191")
            .map(t)
            .collect();
        // The BA that got through (the capture sees the held ones too: it is taken before the
        // input hook).
        let ba_new = rows
            .iter()
            .filter(|r| r[2] == new && r[3] == "4191")
            .map(t)
            .fold(f64::NAN, f64::max);
        assert!(
            !bu_new.is_empty() && ba_new.is_finite(),
            "{detection}: no BU from {new} or no BA to it: {rows:?}"
        );
        let payload_up = |src: &str| -> Vec<f64> {
            rows.iter()
                .filter(|r| r[1] == src && r[4] == "4500" && r[5] == "0x00001003")
                .map(t)
                .collect()
        };
        let (from_old, from_new) = (payload_up(old), payload_up(new));
        let during = from_old
            .iter()
            .filter(|x| **x > bu_new[0] && **x < ba_new)
            .count();
        assert!(
            during > 50,
            "{detection}: {during} payload packets from {old} while the move was under way"
        );
        assert!(
            from_new.iter().all(|x| *x >= ba_new),
            "{detection}: payload left from {new} before the BA ({ba_new}): {from_new:?}"
        );
        assert!(
            from_new.len() > 20,
            "{detection}: payload did not follow to {new} after the BA"
        );
        let (_, r) = l.mn_info().unwrap();
        assert!(r.counter("bu_recognised") >= 2, "{}", status::render(&r));
        assert_eq!(r.counter("misrouted"), 0, "{}", status::render(&r));
    }
}

/// Without a NAT payload goes as IPv4/ESP (protocol 50; RFC 5555 section 5), not IP-in-IP,
/// for both home addresses; over the m6t tunnel as an IPv6 care-of address (seed 000 below
/// seed 002) as IPv6/ESP, the BU with its Home Address option and ESP through m6t0.
#[test]
fn without_a_nat_payload_is_ipv4_esp_and_over_m6t0_ipv6_esp() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let o = DsmipOptions {
        ipsec: Some(LabIpsec::random_with_payload().unwrap()),
        ..DsmipOptions::default()
    };
    let mut l = Lab::build(bin(), &LabOptions::new("d6enonat")).unwrap();
    l.net.sh("nat", "nft flush chain ip nat post").unwrap();
    l.write_dsmip_configs(&o).unwrap();
    l.start_ha().unwrap();
    let pcap = capture(&mut l, "mn", "nonat.pcap", "ip");
    l.start_mn().unwrap();
    let m = l.wait_registered("ip-in-ip", MN4[0], 0).unwrap();
    let v4hoa = m.ipv4_home_address.clone().unwrap();
    assert_eq!(l.ping_from("mn", HOA, CN, 3).unwrap(), 3);
    assert_eq!(l.ping_from("mn", &v4hoa, m6t_lab::lab::CN4, 3).unwrap(), 3);
    std::thread::sleep(Duration::from_millis(200));
    l.net.stop("tcpdump");
    let rows = tshark_fields(&l, &pcap, "", &["ip.proto", "esp.spi"]);
    let esp = |spi: &str| rows.iter().filter(|r| r[0] == "50" && r[1] == spi).count();
    assert!(esp("0x00001003") >= 6 && esp("0x00001004") >= 6, "{rows:?}");
    assert!(
        rows.iter().all(|r| r[0] != "4" && r[0] != "41"),
        "payload in IP-in-IP: {rows:?}"
    );
    drop(l);

    let mut l = Lab::start(bin(), &LabOptions::new("d6em6t")).unwrap();
    l.write_dsmip_configs(&DsmipOptions {
        interfaces: tunnel_interfaces("m6t0"),
        ..o
    })
    .unwrap();
    l.start_ha().unwrap();
    l.start_mn().unwrap();
    l.wait_registered("ipv6", "fd00:6d36:7400:1:1:", 0).unwrap();
    assert_eq!(l.ping_from("mn", HOA, CN, 3).unwrap(), 3);
    let Report::HomeAgent {
        ipsec: Some(ipsec), ..
    } = l.ha_report().unwrap()
    else {
        panic!("no ipsec")
    };
    let packets = |spi: u32| ipsec.sas.iter().find(|s| s.spi == spi).unwrap().packets;
    assert!(packets(SPI_A) >= 1, "the BU came through SA1: {ipsec:?}");
    assert!(packets(SPI_C) >= 3 && packets(SPI_D) >= 3, "{ipsec:?}");
}

/// Full-size TCP both ways on the home address with the payload in ESP over the m6t tunnel
/// as the care-of address: the ESP-wrapped segments are larger than m6t0's MTU, so the
/// tunnel entry points must fragment the outer packet (RFC 2473 section 7: the mobile node
/// at its interface's MTU, the home agent at the path MTU a Packet Too Big from the gateway
/// teaches it) and the far end reassemble it; neither direction may stall.
#[test]
fn esp_payload_over_m6t0_carries_full_size_tcp_both_ways() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Lab::start(bin(), &LabOptions::new("d6emtu")).unwrap();
    l.write_dsmip_configs(&DsmipOptions {
        interfaces: tunnel_interfaces("m6t0"),
        ipsec: Some(LabIpsec::gcm_with_payload().unwrap()),
        ..DsmipOptions::default()
    })
    .unwrap();
    l.start_ha().unwrap();
    l.start_mn().unwrap();
    l.wait_registered("ipv6", "fd00:6d36:7400:1:1:", 0).unwrap();
    for reverse in [false, true] {
        let gbps = l
            .tcp_transfer_from("cn", Some(HOA), CN, 2, reverse)
            .unwrap();
        // Before the home agent's raw socket took Packet Too Big into account, CN -> MN
        // carried nothing: every full-size segment died at the gateway.
        assert!(gbps > 0.05, "reverse {reverse}: {gbps} Gbit/s");
    }
}

/// The home agent's per-source budget (issue 14): one IPv4 address flooding UDP 4191 and
/// 4500 with what no binding sends is cut by the kernel to about its burst and rate, each
/// drop counted (`drop_source_budget`); the bound node's own traffic — BUs through its
/// tunnel's mapping, payload ESP from its 4500 mapping, far above the budget's rate — is
/// never budgeted, and the node stays registered and served.
#[test]
fn one_address_flooding_the_home_agent_is_cut_by_the_kernel_and_the_bound_node_is_not() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let o = DsmipOptions {
        ipsec: Some(LabIpsec::gcm_with_payload().unwrap()),
        ha_extra: "source_packet_rate = 200\nsource_packet_burst = 100\n".into(),
        ..DsmipOptions::default()
    };
    let mut l = Lab::build(bin(), &LabOptions::new("d6budget")).unwrap();
    l.write_dsmip_configs(&o).unwrap();
    l.start_ha().unwrap();
    l.start_mn().unwrap();
    l.wait_registered("udp", MN4[0], 0).unwrap();
    assert_eq!(l.ping_from("mn", HOA, CN, 3).unwrap(), 3);
    // The bound node's payload: full-size TCP, thousands of datagrams a second from its
    // 4500 mapping, none of them budgeted.
    let before = l.ha_report().unwrap().counter("drop_source_budget");
    let gbps = l.tcp_transfer_from("cn", Some(HOA), CN, 2, false).unwrap();
    assert!(gbps > 0.05, "MN TCP {gbps} Gbit/s under a 200/s budget");
    let h = l.ha_report().unwrap();
    assert_eq!(
        h.counter("drop_source_budget"),
        before,
        "{}",
        status::render(&h)
    );

    // 20000 datagrams to each port from one address (ESP-looking garbage: a non-zero SPI),
    // through the gateway's router as from anywhere on the Internet.
    l.net
        .sh("atk", &format!("ip route replace {HA4}/32 via {GW4}"))
        .unwrap();
    let script = l
        .net
        .write(
            "flood.py",
            "import socket, sys, time\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('203.0.113.66', 0))\n\
             t = time.time()\n\
             for i in range(20000):\n\
             \x20   for p in (4191, 4500):\n\
             \x20       s.sendto(b'\\x7f\\x00\\x00\\x01' + i.to_bytes(4, 'big') + b'x' * 56, (sys.argv[1], p))\n\
             print(time.time() - t)\n",
        )
        .unwrap();
    let secs: f64 = l
        .net
        .sh(
            "atk",
            &format!("/usr/bin/python3 {} {HA4}", script.display()),
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let read_most = 100.0 + 200.0 * (secs + 1.0);
    let h = wait_ha(&l, "budget drops", |r| {
        (r.counter("drop_source_budget") - before) as f64 >= 40000.0 - read_most
    });
    let dropped = h.counter("drop_source_budget") - before;
    assert!(
        dropped <= 40000 - 90,
        "{dropped} of 40000 dropped: the burst should have passed"
    );
    // What passed was read and refused: as no encapsulation on 4191, by SPI on 4500.
    assert_eq!(
        h.counter("drop_bad_encapsulation") + h.counter("ipsec_esp_no_sa"),
        40000 - dropped,
        "{}",
        status::render(&h)
    );
    // The node is still bound and served, its refreshes and payload unbudgeted.
    assert_eq!(l.ping_from("mn", HOA, CN, 3).unwrap(), 3);
    let Report::HomeAgent { bindings, .. } = l.ha_report().unwrap() else {
        panic!()
    };
    assert_eq!(bindings.len(), 1);
    let again = l.ha_report().unwrap().counter("drop_source_budget");
    let gbps = l.tcp_transfer_from("cn", Some(HOA), CN, 1, false).unwrap();
    assert!(gbps > 0.05, "MN TCP {gbps} Gbit/s after the flood");
    assert_eq!(l.ha_report().unwrap().counter("drop_source_budget"), again);
    // IKE (the non-ESP marker) to a home agent keyed by hand: dropped and counted, from
    // behind the NAT (a source the budget has not charged).
    l.net
        .sh(
            "mn",
            &format!(
                "/usr/bin/python3 -c \"import socket; s = socket.socket(socket.AF_INET, \
                 socket.SOCK_DGRAM); [s.sendto(bytes(4) + b'ike' * 10, ('{HA4}', 4500)) \
                 for _ in range(3)]\""
            ),
        )
        .unwrap();
    wait_ha(&l, "IKE without IKE", |r| {
        r.counter("drop_ike_without_ike") == 3
    });
}
