//! DSMIPv6 keyed by IKEv2 end to end (RFC 4877 section 4, RFC 5555 section 5): `m6t ha` and
//! `m6t mn` in network namespaces, the mobile node behind a real nftables NAT. The mobile
//! node's IKE SA runs from its care-of address over UDP 4500; IKE_AUTH brings the BU/BA
//! transport-mode CHILD_SA, CREATE_CHILD_SA the payload tunnel-mode one, and the SAs the
//! `[ipsec]` sections name with `keys = "ike"` are keyed with what was negotiated. A TCP
//! transfer on the home address survives IPv4 moves, a move to IPv6 and back with one IKE
//! SA throughout (no IKE_SA_INIT per handover, counted on the wire by tshark), and a wrong
//! pre-shared key is one clear line on each side. From IPv6 care-of addresses too: a mobile
//! node that starts in the IPv6 network, one whose care-of interface is the m6t tunnel, and
//! one IKE SA that follows the node to IPv6 and back and answers its liveness checks there;
//! and a restarted home agent that tells a sending node at once (INVALID_SPI). Over m6t0
//! the home-address interface is sized so that ESP needs no fragments.

use m6t::status::{self, Report};
use m6t_lab::lab::dsmip::{tunnel_interfaces, DsmipOptions, LabIpsec, HA4, HOA, MN6};
use m6t_lab::lab::{Lab, LabOptions, CN, HA, MN4};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One lab at a time: the tests share the two cores and the tool binaries.
static SERIAL: Mutex<()> = Mutex::new(());

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_m6t"))
}

fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// Starts tcpdump on `role`'s eth0 with `filter` into `file` and waits until it listens.
fn capture(l: &mut Lab, role: &str, file: &str, filter: &str) -> PathBuf {
    // What the wire carries: datagrams one by one, not the daemons' GSO buffers.
    l.segment_udp_on_links().unwrap();
    let pcap = l.net.dir.join(file);
    let p = pcap.display().to_string();
    l.net
        .spawn(
            role,
            "tcpdump",
            // Immediate mode: packets reach the file as they come, not when the kernel's
            // buffer block times out (a capture stopped right after the scene missed them).
            &[
                "tcpdump",
                "-i",
                "eth0",
                "--immediate-mode",
                "-U",
                "-n",
                "-w",
                &p,
                filter,
            ],
        )
        .unwrap();
    let t = Instant::now();
    while !l.net.log("tcpdump").contains("listening") {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "tcpdump did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    pcap
}

fn report(r: &Report) -> String {
    status::render(r)
}

fn wait_counter(what: &str, get: impl Fn() -> Report, name: &str, at_least: u64) -> Report {
    let t = Instant::now();
    loop {
        let r = get();
        if r.counter(name) >= at_least {
            return r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{what}: {name} < {at_least}\n{}",
            report(&r)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ikev2_keys_bu_ba_and_payload_and_one_ike_sa_survives_the_moves() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut i = LabIpsec::ike().unwrap();
    i.ike_keylog = true;
    // CHILD_SAs rekeyed every 4 MB of the transfer: the rekeys happen under load.
    i.ike_rekey_bytes = Some(4_000_000);
    let o = DsmipOptions {
        ipsec: Some(i),
        ..DsmipOptions::default()
    };
    let mut l = Lab::build(bin(), &LabOptions::new("d6ike")).unwrap();
    l.write_dsmip_configs(&o).unwrap();
    l.start_ha().unwrap();
    let pcap = capture(&mut l, "mn", "mn.pcap", "udp port 4500");
    l.start_mn().unwrap();
    let m = l
        .wait_registered("udp", MN4[0], 0)
        .unwrap_or_else(|e| panic!("{e}\nmn: {}\nha: {}", l.net.log("mn"), l.net.log("ha")));
    let mn = wait_counter("MN", || l.mn_info().unwrap().1, "ike_child_established", 2);
    assert_eq!(mn.counter("ike_established"), 1, "{}", report(&mn));
    let sent = l
        .tcp_across_moves(&peers(), &m, 8)
        .unwrap_or_else(|e| panic!("{e}"));
    l.net.stop("tcpdump");
    assert!(sent > 1_000_000, "{sent} bytes");

    // One IKE SA through every move: IKE_SA_INIT crossed once each way (tshark counts).
    let pcap_s = pcap.display().to_string();
    let tshark = std::process::Command::new("tshark")
        .args([
            "-n",
            "-r",
            &pcap_s,
            "-Y",
            "isakmp",
            "-T",
            "fields",
            "-e",
            "isakmp.exchangetype",
        ])
        .output()
        .expect("tshark");
    let types = String::from_utf8_lossy(&tshark.stdout);
    let sa_init = types.lines().filter(|t| *t == "34").count();
    let auth = types.lines().filter(|t| *t == "35").count();
    assert_eq!(
        (sa_init, auth),
        (2, 2),
        "IKE exchanges on the wire: {types}"
    );

    // tshark decrypts every IKE message with the keys the mobile node's keylog_file holds
    // (Wireshark's ikev2_decryption_table syntax, one line per IKE SA).
    let keys = std::fs::read_to_string(l.net.dir.join("mn-ike.keys")).unwrap();
    assert_eq!(keys.lines().count(), 1, "one IKE SA: {keys}");
    let mut cmd = std::process::Command::new("tshark");
    cmd.args(["-n", "-r", &pcap_s]);
    for k in keys.lines() {
        cmd.args(["-o", &format!("uat:ikev2_decryption_table:{k}")]);
    }
    cmd.args(["-Y", "isakmp", "-T", "fields", "-E", "separator=|"]);
    cmd.args(["-e", "isakmp.exchangetype", "-e", "isakmp.id.data.fqdn"]);
    cmd.args([
        "-e",
        "isakmp.ts.start_ipv6",
        "-e",
        "_ws.malformed",
        "-e",
        "_ws.expert.message",
    ]);
    let out = cmd.output().expect("tshark");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    let auth: Vec<&Vec<&str>> = lines.iter().filter(|f| f[0] == "35").collect();
    assert!(
        auth.len() == 2 && auth.iter().all(|f| f[1].contains("ha.example.org")),
        "IKE_AUTH not decrypted: {text}"
    );
    let child = lines
        .iter()
        .filter(|f| f[0] == "36" && f[2].contains(HOA))
        .count();
    assert!(
        child >= 4,
        "CREATE_CHILD_SA (the payload SA, then its rekeys) with the home address inside: {text}"
    );
    assert!(
        lines.iter().filter(|f| f[0] == "37").count() >= 2,
        "liveness checks after the moves: {text}"
    );
    assert!(
        !text.contains("Malformed") && !text.to_lowercase().contains("checksum"),
        "{text}"
    );
    let mn = l.mn_info().unwrap().1;
    let ha = l.ha_report().unwrap();
    for r in [&mn, &ha] {
        assert_eq!(r.counter("ike_established"), 1, "{}", report(r));
        assert_eq!(r.counter("ike_auth_failed"), 0, "{}", report(r));
        assert_eq!(r.counter("ipsec_unprotected"), 0, "{}", report(r));
    }
    // Two CHILD_SAs, then at least one rekey by bytes (RFC 7296 section 2.8).
    assert!(ha.counter("ike_child_established") > 2, "{}", report(&ha));
    let log = l.net.log("mn");
    assert!(
        log.contains("IKE SA continues from care-of address"),
        "{log}"
    );
    let ms = attach_ms(&log);
    eprintln!("attach to BA with IKEv2: {ms:.1} ms");
    assert!(ms < 1000.0, "attach to BA took {ms:.1} ms: {log}");
}

/// Attach to BA with IKE: from the IKE_SA_INIT to the first registration, read from the
/// mobile node's log (the BU waits for its SA, then goes at once).
fn attach_ms(log: &str) -> f64 {
    let at = |what: &str| -> f64 {
        let line = log
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("{what}: {log}"));
        let t = &line[11..26]; // HH:MM:SS.ffffff
        let f: Vec<f64> = t.split(':').map(|x| x.parse().unwrap()).collect();
        f[0] * 3600.0 + f[1] * 60.0 + f[2]
    };
    (at("registered care-of") - at("initiating an IKE SA")) * 1e3
}

/// Both ends have one IKE SA, established once, and no failure.
fn one_ike_sa(l: &Lab) {
    let mn = l.mn_info().unwrap().1;
    let ha = l.ha_report().unwrap();
    for r in [&mn, &ha] {
        assert_eq!(r.counter("ike_established"), 1, "{}", report(r));
        assert_eq!(r.counter("ike_auth_failed"), 0, "{}", report(r));
        assert_eq!(r.counter("ike_timeouts"), 0, "{}", report(r));
        assert!(r.counter("ike_child_established") >= 2, "{}", report(r));
    }
}

#[test]
fn a_mobile_node_starting_on_an_ipv6_care_of_address_is_keyed_from_there() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let o = DsmipOptions {
        ipsec: Some(LabIpsec::ike().unwrap()),
        ..DsmipOptions::default()
    };
    let mut l = Lab::build(bin(), &LabOptions::new("d6ik6")).unwrap();
    l.write_dsmip_configs(&o).unwrap();
    l.start_ha().unwrap();
    // In the IPv6 network before the node starts: no IPv4 address at all.
    l.mn_to_ipv6(MN4[0]).unwrap();
    let pcap = capture(&mut l, "mn", "mn6.pcap", "ip6 and udp port 4500");
    l.start_mn().unwrap();
    let m = l
        .wait_registered("ipv6", MN6, 0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.candidates.1, None, "{m:?}");
    one_ike_sa(&l);
    assert_eq!(l.ping_from("mn", HOA, CN, 3).unwrap(), 3);
    l.net.stop("tcpdump");
    let log = l.net.log("mn");
    let from = format!("initiating an IKE SA from [{MN6}]:4500 to [{HA}]:4500");
    assert!(log.contains(&from), "{log}");
    // On the wire: IKE_SA_INIT and IKE_AUTH over IPv6, UDP 4500 with the non-ESP marker
    // (tshark dissects it as ISAKMP only behind the marker).
    let rows = ike_over_ipv6(&pcap);
    for (src, ex) in [(MN6, "34"), (HA, "34"), (MN6, "35"), (HA, "35")] {
        assert!(
            rows.lines().any(|r| r == format!("{src}\t{ex}")),
            "{src} {ex}: {rows}\n{}\n{}",
            l.net.log("tcpdump"),
            l.net
                .sh("mn", &format!("tshark -n -r {} 2>&1", pcap.display()))
                .unwrap_or_default()
        );
    }
    let ms = attach_ms(&log);
    eprintln!(
        "attach to BA with IKEv2 from an IPv6 care-of address: {ms:.1} ms (BU -> BA {:.2} ms)",
        m.last_registration_ms.unwrap_or_default()
    );
    assert!(ms < 1000.0, "attach to BA took {ms:.1} ms: {log}");
}

fn mn_sh(l: &Lab, c: &str) -> String {
    String::from_utf8_lossy(&l.net.sh_output("mn", c).unwrap().stdout).to_string()
}

/// The MTU of the mobile node's interface `dev`, as `ip link` says.
fn mn_link_mtu(l: &Lab, dev: &str) -> u32 {
    let out = mn_sh(l, &format!("ip -o link show {dev}"));
    let after = out.split(" mtu ").nth(1).unwrap_or_else(|| panic!("{out}"));
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// The mobile node's kernel's count of IPv6 fragments it made (Ip6FragCreates).
fn mn_fragments_made(l: &Lab) -> u64 {
    let snmp = mn_sh(l, "cat /proc/net/snmp6");
    let line = snmp.lines().find(|x| x.starts_with("Ip6FragCreates"));
    line.and_then(|x| x.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("{snmp}"))
}

#[test]
fn ike_runs_over_the_m6t_tunnel_as_the_care_of_interface() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Lab::start(bin(), &LabOptions::new("d6ikt")).unwrap();
    l.write_dsmip_configs(&DsmipOptions {
        interfaces: tunnel_interfaces("m6t0"),
        ipsec: Some(LabIpsec::ike().unwrap()),
        ..DsmipOptions::default()
    })
    .unwrap();
    l.start_ha().unwrap();
    l.start_mn().unwrap();
    let m = l
        .wait_registered("ipv6", "fd00:6d36:7400:1:1:", 0)
        .unwrap_or_else(|e| panic!("{e}"));
    one_ike_sa(&l);
    let log = l.net.log("mn");
    let coa = m.coa.clone().unwrap();
    assert!(
        log.contains(&format!("initiating an IKE SA from [{coa}]:4500")),
        "{log}"
    );
    assert_eq!(l.ping_from("mn", HOA, CN, 3).unwrap(), 3);
    // The home-address interface is sized to what m6t0 carries once IPv6 and ESP
    // (AES-GCM: at most 37 bytes) wrap a packet, so that a full-size segment needs no
    // fragments: the kernel's own count of IPv6 fragments made stays where it was.
    let inner = mn_link_mtu(&l, "m6t0") - 40 - 37;
    assert_eq!(mn_link_mtu(&l, "mip6mn0"), inner);
    assert_eq!(l.mn_info().unwrap().0.mtu, Some(inner as u16));
    assert!(l
        .net
        .log("mn")
        .contains(&format!("mip6mn0 MTU {inner}: m6t0 has")));
    let made = mn_fragments_made(&l);
    // TCP both ways on the home address, through ESP inside the m6t tunnel.
    for reverse in [false, true] {
        let gbps = l
            .tcp_transfer_from("cn", Some(HOA), CN, 2, reverse)
            .unwrap();
        eprintln!("TCP over m6t0 with IKE-keyed ESP, reverse {reverse}: {gbps:.3} Gbit/s");
        // 2 s at 0.005 Gbit/s: more than 1 MB, as before.
        assert!(gbps > 0.005, "reverse {reverse}: {gbps} Gbit/s");
    }
    assert_eq!(
        mn_fragments_made(&l),
        made,
        "IPv6 fragments made on the mobile node"
    );
    one_ike_sa(&l);
    let ms = attach_ms(&log);
    eprintln!("attach to BA with IKEv2 over m6t0: {ms:.1} ms");
}

#[test]
fn one_ike_sa_goes_to_ipv6_and_back_and_answers_liveness_checks_there() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let o = DsmipOptions {
        ipsec: Some(LabIpsec::ike().unwrap()),
        ..DsmipOptions::default()
    };
    let mut l = Lab::build(bin(), &LabOptions::new("d6ikr")).unwrap();
    l.write_dsmip_configs(&o).unwrap();
    l.start_ha().unwrap();
    let pcap = capture(&mut l, "mn", "round.pcap", "udp port 4500");
    l.start_mn().unwrap();
    let m = l
        .wait_registered("udp", MN4[0], 0)
        .unwrap_or_else(|e| panic!("{e}"));
    wait_counter("MN", || l.mn_info().unwrap().1, "ike_child_established", 2);
    one_ike_sa(&l);
    let before = l.mn_info().unwrap().1;
    l.mn_to_ipv6(MN4[0]).unwrap();
    let m2 = l
        .wait_registered("ipv6", MN6, m.registrations)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "IPv4 -> IPv6 with the IKE SA moved: registered in {:.2} ms",
        m2.last_registration_ms.unwrap_or_default()
    );
    // The lab's dpd_seconds is 2: past it and a few seconds more, the checks from the IPv6
    // care-of address were answered (none retransmitted, none timed out).
    std::thread::sleep(Duration::from_secs(2 + 4));
    let on6 = l.mn_info().unwrap().1;
    assert!(
        on6.counter("ike_dpd_sent") >= before.counter("ike_dpd_sent") + 2,
        "{}",
        report(&on6)
    );
    assert_eq!(
        on6.counter("ike_retransmits"),
        before.counter("ike_retransmits"),
        "{}",
        report(&on6)
    );
    one_ike_sa(&l);
    assert_eq!(l.ping_from("mn", HOA, CN, 2).unwrap(), 2);
    l.mn_to_ipv4(MN4[0]).unwrap();
    let m3 = l
        .wait_registered("udp", MN4[0], m2.registrations)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "IPv6 -> IPv4 behind the NAT: registered in {:.2} ms",
        m3.last_registration_ms.unwrap_or_default()
    );
    assert_eq!(l.ping_from("mn", HOA, CN, 2).unwrap(), 2);
    std::thread::sleep(Duration::from_millis(300));
    l.net.stop("tcpdump");
    one_ike_sa(&l);
    let hl = l.net.log("ha");
    assert!(
        hl.contains(&format!("IKE peer now at [{MN6}]:4500")),
        "{hl}"
    );
    // On the wire: one IKE_SA_INIT exchange in all, and liveness checks answered over IPv6.
    let rows = ike_over_ipv6(&pcap);
    let n = |f: &dyn Fn(&str) -> bool| rows.lines().filter(|r| f(r)).count();
    assert_eq!(n(&|r| r.ends_with("\t34")), 2, "{rows}");
    assert!(
        n(&|r| *r == format!("{HA}\t37")) >= 3,
        "answers from the home agent's IPv6 address: {rows}"
    );
}

#[test]
fn a_wrong_pre_shared_key_is_one_clear_line_each_side_and_no_registration() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut i = LabIpsec::ike().unwrap();
    i.mn_wrong_key = true;
    let o = DsmipOptions {
        ipsec: Some(i),
        ..DsmipOptions::default()
    };
    let mut l = Lab::build(bin(), &LabOptions::new("d6ikw")).unwrap();
    l.write_dsmip_configs(&o).unwrap();
    l.start_ha().unwrap();
    l.start_mn().unwrap();
    let ha = wait_counter("HA", || l.ha_report().unwrap(), "ike_auth_failed", 1);
    let mn = wait_counter("MN", || l.mn_info().unwrap().1, "ike_auth_failed", 1);
    assert_eq!(ha.counter("ike_established"), 0, "{}", report(&ha));
    assert_eq!(mn.counter("ike_child_established"), 0, "{}", report(&mn));
    let (hl, ml) = (l.net.log("ha"), l.net.log("mn"));
    assert!(
        hl.contains("mn1@example.org") && hl.contains("did not prove the pre-shared key"),
        "{hl}"
    );
    assert!(ml.contains("AUTHENTICATION_FAILED"), "{ml}");
    assert!(
        l.mn_info().unwrap().1.counter("registrations") == 0 || !ml.contains("registered care-of")
    );
}

/// The IKE messages of a capture (tshark dissects UDP 4500 as ISAKMP only behind the
/// non-ESP marker): a line `<IPv6 source>\t<exchange type>` each.
fn ike_over_ipv6(pcap: &Path) -> String {
    let out = std::process::Command::new("tshark")
        .args(["-n", "-r", &pcap.display().to_string(), "-Y", "isakmp"])
        .args([
            "-T",
            "fields",
            "-e",
            "ipv6.src",
            "-e",
            "isakmp.exchangetype",
        ])
        .output()
        .expect("tshark");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// RFC 7296 section 2.21.4, from the payload: the home agent restarts and forgets the IKE
/// SA while the mobile node pings its correspondent, the node's next liveness check a
/// minute away (`dpd_seconds = 60`). The restarted HA answers the node's first ESP with an
/// unprotected INVALID_SPI; the node checks liveness at once, the HA's INVALID_IKE_SPI cuts
/// the check short, and a new IKE SA follows (the binding came back from the cache file): the pings are answered
/// again within seconds, not after the quiet period.
#[test]
fn a_restarted_home_agent_tells_a_sending_mobile_node_at_once_by_invalid_spi() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut i = LabIpsec::ike().unwrap();
    i.ike_dpd_seconds = 60;
    let o = DsmipOptions {
        ipsec: Some(i),
        ..DsmipOptions::default()
    };
    let mut l = Lab::build(bin(), &LabOptions::new("d6ikrs")).unwrap();
    l.write_dsmip_configs(&o).unwrap();
    l.start_ha().unwrap();
    let pcap = capture(&mut l, "mn", "restart.pcap", "udp port 4500");
    l.start_mn().unwrap();
    l.wait_registered("udp", MN4[0], 0)
        .unwrap_or_else(|e| panic!("{e}\nmn: {}\nha: {}", l.net.log("mn"), l.net.log("ha")));
    wait_counter("MN", || l.mn_info().unwrap().1, "ike_child_established", 2);
    assert_eq!(l.ping_from("mn", HOA, CN, 2).unwrap(), 2);

    l.stop_ha();
    l.start_ha().unwrap();
    let t = Instant::now();
    while l.ping_from("mn", HOA, CN, 1).unwrap() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no answer 20 s after the restart\nmn: {}\nha: {}",
            l.net.log("mn"),
            l.net.log("ha")
        );
    }
    eprintln!(
        "pings answered again {:.2} s after the home agent's restart",
        t.elapsed().as_secs_f64()
    );
    let ha = l.ha_report().unwrap();
    let mn = l.mn_info().unwrap().1;
    assert!(ha.counter("ike_invalid_spi_sent") >= 1, "{}", report(&ha));
    assert!(mn.counter("ike_invalid_spi_hints") >= 1, "{}", report(&mn));
    // The old IKE SA declared dead once, a new one made.
    assert_eq!(mn.counter("ike_timeouts"), 1, "{}", report(&mn));
    assert_eq!(mn.counter("ike_established"), 2, "{}", report(&mn));
    assert_eq!(ha.counter("ike_established"), 1, "{}", report(&ha));

    // tshark reads the notice as we mean it: an INFORMATIONAL request, unprotected, with
    // an INVALID_SPI notify (type 11) for ESP naming the node's first payload SPI.
    std::thread::sleep(Duration::from_millis(300));
    l.net.stop("tcpdump");
    let log = l.net.log("mn");
    let old = log
        .lines()
        .find(|x| x.contains("CHILD_SA payload-v6 with home-agent up"))
        .and_then(|x| x.split(" out 0x").nth(1))
        .and_then(|x| x.split(',').next())
        .unwrap_or_else(|| panic!("{log}"));
    let out = std::process::Command::new("tshark")
        .args(["-n", "-r", &pcap.display().to_string()])
        .args(["-Y", "isakmp.notify.msgtype == 11", "-T", "fields"])
        .args([
            "-E",
            "separator=|",
            "-e",
            "isakmp.exchangetype",
            "-e",
            "isakmp.flag_r",
        ])
        .args([
            "-e",
            "isakmp.notify.protoid",
            "-e",
            "isakmp.spi",
            "-e",
            "_ws.malformed",
        ])
        .args(["-e", "ip.src"])
        .output()
        .expect("tshark");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().collect();
    assert!(!rows.is_empty(), "no INVALID_SPI on the wire");
    for r in &rows {
        let f: Vec<&str> = r.split('|').collect();
        assert_eq!(f, ["37", "0", "3", old, "", HA4], "{text}");
    }
}
