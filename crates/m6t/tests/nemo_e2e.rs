//! Mobile routers end to end in network namespaces (RFC 3963 with RFC 5555's IPv4
//! prefixes): `m6t mn` as a mobile router with a host behind it that runs no mobility
//! software, `m6t ha` routing the mobile network into the router's tunnel, the real kernel
//! forwarding on both ends, a real nftables NAT, TCP transfers checked with sha256 across
//! moves, and tshark decoding the R flag and the prefix options independently.

use m6t::status::Report;
use m6t_lab::lab::dsmip::{DsmipOptions, HA4, HOST4, HOST6, MNP4, MNP6};
use m6t_lab::lab::{Lab, LabOptions, CN, CN4, MN4, NAT_PUBLIC};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// One lab at a time: the tests share the two cores and the tool binaries.
static SERIAL: Mutex<()> = Mutex::new(());

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_m6t"))
}

/// A script of `tests/peers`, run with /usr/bin/python3.
fn peer(name: &str) -> String {
    format!("{}/tests/peers/{name}", env!("CARGO_MANIFEST_DIR"))
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

/// The routes of the home agent's TUN.
fn ha_routes(l: &Lab) -> String {
    l.net
        .sh(
            "ha",
            "ip -4 route show dev mip6ha0; ip -6 route show dev mip6ha0",
        )
        .unwrap()
}

/// Starts a TCP transfer from the host behind the router (`src`) to the correspondent
/// (`dst`) for `secs`; IPv4 goes as IPv4-mapped addresses (the peers are AF_INET6).
fn transfer(l: &mut Lab, tag: &str, src: &str, dst: &str, secs: &str) {
    let (sink, source) = (peer("tcp_sink.py"), peer("tcp_source.py"));
    l.net
        .spawn(
            "cn",
            &format!("sink{tag}"),
            &["/usr/bin/python3", &sink, dst],
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    l.net
        .spawn(
            "host",
            &format!("source{tag}"),
            &["/usr/bin/python3", &source, src, dst, secs],
        )
        .unwrap();
}

/// Waits for a transfer's end and checks the sha256 both ends saw.
fn check_transfer(l: &mut Lab, tag: &str) -> u64 {
    let name = format!("source{tag}");
    let t = std::time::Instant::now();
    while l.net.running(&name) && t.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = l.net.log(&name);
    let f: Vec<&str> = out.split_whitespace().collect();
    assert!(
        f.len() >= 5 && f[0] == "sent",
        "{name}: {out}\nsink: {}\nmn: {}\nha: {}",
        l.net.log(&format!("sink{tag}")),
        l.net.log("mn"),
        l.net.log("ha")
    );
    assert_eq!(f[2], f[4], "sha256 differs: {out}");
    assert!(l.net.log(&format!("sink{tag}")).contains(f[2]));
    f[1].parse().unwrap()
}

#[test]
fn host_behind_the_router_keeps_tcp_across_renumbering_and_a_move_to_ipv6_and_back() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Lab::build(bin(), &LabOptions::new("nemomove")).unwrap();
    let o = DsmipOptions {
        mobile_router: Some("explicit"),
        ..DsmipOptions::default()
    };
    l.add_mobile_network().unwrap();
    l.write_dsmip_configs(&o).unwrap();
    l.start_ha().unwrap();
    // The signalling on the home agent's link, for tshark.
    let pcap = l.net.dir.join("sig.pcap");
    let path = pcap.display().to_string();
    l.net
        .spawn(
            "ha",
            "tcpdump",
            &[
                "tcpdump",
                "-n",
                "-U",
                "-i",
                "eth0",
                "-w",
                &path,
                "udp port 4191",
            ],
        )
        .unwrap();
    let t = std::time::Instant::now();
    while !l.net.log("tcpdump").contains("listening on") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "tcpdump did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    l.start_mn().unwrap();
    let m = l.wait_registered("udp", MN4[0], 0).unwrap();
    let t = std::time::Instant::now();
    while std::fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0) < 300
        && t.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    l.net.stop("tcpdump");

    // tshark: R in the BU and the BA, the IPv6 prefix in a Mobile Network Prefix option,
    // the IPv4 one in an IPv4 Home Address option with P, both as configured.
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
    assert_eq!(get("mip6.mhtype"), vec!["5", "6"], "{json}");
    assert_eq!(get("mip6.nemo.bu.r_flag"), vec!["1"]);
    assert_eq!(get("mip6.nemo.ba.r_flag"), vec!["1"]);
    let (p6, l6) = MNP6.split_once('/').unwrap();
    assert_eq!(get("mip6.nemo.mnp.mnp"), vec![p6.to_string()]);
    assert_eq!(get("mip6.nemo.mnp.pfl"), vec![l6.to_string()]);
    let (p4, l4) = MNP4.split_once('/').unwrap();
    // Two IPv4 Home Address options in one BU (tshark's JSON keeps one of equal keys):
    // the router's own (dynamic) address first, then the prefix with P.
    let f = l
        .net
        .sh(
            "ha",
            &format!(
                "tshark -r {} -d udp.port==4191,ipv6 -Y mip6.mhtype==5 -T fields -E occurrence=a \
                 -e mip6.ipv4ha.ha -e mip6.ipv4ha.preflen -e mip6.ipv4ha.p_flag 2>/dev/null",
                pcap.display()
            ),
        )
        .unwrap();
    let cols: Vec<Vec<&str>> = f
        .trim()
        .split('\t')
        .map(|c| c.split(',').collect())
        .collect();
    assert_eq!(cols.len(), 3, "{f}");
    assert_eq!(cols[0], vec!["0.0.0.0", p4], "{f}");
    assert_eq!(cols[1], vec!["32", l4], "{f}");
    let p = &cols[2];
    assert!(p[0] == "0" || p[0] == "False", "{f}");
    assert!(p[1] == "1" || p[1] == "True", "{f}");
    assert_eq!(get("mip6.ba.status"), vec!["0"]);

    // The home agent routes both prefixes into its TUN and lists them in the binding.
    let routes = ha_routes(&l);
    assert!(routes.contains(MNP4) && routes.contains(MNP6), "{routes}");
    let Report::HomeAgent { bindings, .. } = l.ha_report().unwrap() else {
        panic!()
    };
    assert!(bindings[0].router);
    assert_eq!(bindings[0].mnp.len(), 2);

    // Two TCP transfers from the host behind the router, IPv6 and IPv4, across an IPv4
    // address change behind the NAT, a move to the IPv6 network and back.
    transfer(&mut l, "6", HOST6, CN, "12");
    transfer(
        &mut l,
        "4",
        &format!("::ffff:{HOST4}"),
        &format!("::ffff:{CN4}"),
        "12",
    );
    std::thread::sleep(Duration::from_secs(2));
    l.mn_renumber_v4(MN4[0], MN4[1]).unwrap();
    let m2 = l.wait_registered("udp", MN4[1], m.registrations).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    l.mn_to_ipv6(MN4[1]).unwrap();
    let m3 = l
        .wait_registered("ipv6", "2001:db8:5::", m2.registrations)
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    l.mn_to_ipv4(MN4[0]).unwrap();
    l.wait_registered("udp", MN4[0], m3.registrations).unwrap();
    let b6 = check_transfer(&mut l, "6");
    let b4 = check_transfer(&mut l, "4");
    assert!(b6 > 1_000_000 && b4 > 1_000_000, "{b6} {b4}");
    let h = l.ha_report().unwrap();
    assert!(h.counter("bu_accepted") >= 4);
    assert_eq!(h.counter("drop_ingress_filter"), 0);

    // A packet into the router's tunnel whose source is outside the mobile network: the
    // home agent drops and counts it (RFC 3963 section 9). Sent from the router's network
    // through the NAT, as the router's own tunnel packets are.
    let spoof = format!(
        "import socket, struct, ipaddress\n\
         src = ipaddress.IPv6Address('2001:db8:99::1').packed\n\
         dst = ipaddress.IPv6Address('{CN}').packed\n\
         pkt = struct.pack('!IHBB', 0x60000000, 8, 59, 64) + src + dst + bytes(8)\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('{}', 0))\n\
         for _ in range(3): s.sendto(pkt, ('{HA4}', 4191))\n",
        MN4[0]
    );
    let script = l.net.write("spoof.py", &spoof).unwrap();
    l.net
        .sh("mn", &format!("/usr/bin/python3 {}", script.display()))
        .unwrap();
    let t = std::time::Instant::now();
    while l.ha_report().unwrap().counter("drop_ingress_filter") < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "ingress drops not counted: {:?}\nNAT at {}",
            l.ha_report().unwrap(),
            NAT_PUBLIC[0]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn implicit_mode_routes_follow_the_binding_and_end_with_it() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Lab::build(bin(), &LabOptions::new("nemoimpl")).unwrap();
    let o = DsmipOptions {
        mobile_router: Some("implicit"),
        lifetime: 8,
        ..DsmipOptions::default()
    };
    l.start_dsmip(&o).unwrap();
    l.wait_registered("udp", MN4[0], 0).unwrap();
    assert_eq!(l.ping_from("host", HOST6, CN, 3).unwrap(), 3);
    assert_eq!(l.ping_from("host", HOST4, CN4, 3).unwrap(), 3);
    // The router forwards only its mobile network: a source outside the prefixes that
    // reaches its TUN all the same (a rule sends it there) is dropped and counted there.
    l.net
        .sh("host", "ip addr add fd00:99::5/64 dev eth0 nodad")
        .unwrap();
    l.net
        .sh(
            "mn",
            "ip -6 rule add from fd00:99::/64 lookup 206 prio 1001",
        )
        .unwrap();
    assert_eq!(l.ping_from("host", "fd00:99::5", CN, 2).unwrap(), 0);
    assert!(l.mn_info().unwrap().1.counter("drop_wrong_source") >= 2);
    let routes = ha_routes(&l);
    assert!(routes.contains(MNP4) && routes.contains(MNP6), "{routes}");
    // The router stops (no deregistration): the binding ends with its lifetime, and the
    // prefixes' routes go with it.
    l.net.stop("mn");
    let t = std::time::Instant::now();
    loop {
        let routes = ha_routes(&l);
        if !routes.contains(MNP4) && !routes.contains(MNP6) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "routes stayed: {routes}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(l.ping_from("host", HOST6, CN, 1).unwrap(), 0);
}

#[test]
fn the_router_uses_the_m6t_tunnel_as_its_care_of_address() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // m6t client and gateway first (seed 000), then the mobile router preferring m6t0, an
    // externally configured tunnel, over eth0.
    let mut l = Lab::start(bin(), &LabOptions::new("nemom6t")).unwrap();
    l.add_mobile_network().unwrap();
    l.write_dsmip_configs(&DsmipOptions {
        mobile_router: Some("explicit"),
        interfaces: "[[interfaces]]\nname = \"m6t0\"\npreference = 1\ntunnel = true\n\
                     [[interfaces]]\nname = \"eth0\"\npreference = 2\n"
            .into(),
        ..DsmipOptions::default()
    })
    .unwrap();
    l.start_ha().unwrap();
    l.start_mn().unwrap();
    l.wait_registered("ipv6", "fd00:6d36:7400:1:1:", 0).unwrap();
    assert_eq!(l.ping_from("host", HOST6, CN, 3).unwrap(), 3);
    assert_eq!(l.ping_from("host", HOST4, CN4, 3).unwrap(), 3);
    transfer(&mut l, "6", HOST6, CN, "3");
    assert!(check_transfer(&mut l, "6") > 100_000);
}

#[test]
fn a_prefix_outside_the_home_agents_table_is_refused_with_142_and_said() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = Lab::build(bin(), &LabOptions::new("nemo142")).unwrap();
    l.add_mobile_network().unwrap();
    l.write_dsmip_configs(&DsmipOptions {
        mobile_router: Some("explicit"),
        ..DsmipOptions::default()
    })
    .unwrap();
    // The home agent authorises another IPv4 prefix than the one the router asks for.
    let ha = l.net.dir.join("ha.toml");
    let text = std::fs::read_to_string(&ha).unwrap();
    std::fs::write(&ha, text.replace(MNP4, "198.51.100.64/27")).unwrap();
    l.start_ha().unwrap();
    l.start_mn().unwrap();
    let t = std::time::Instant::now();
    while l.mn_info().map(|m| m.0.last_refusal).ok().flatten() != Some(142) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no refusal: {:?}\nmn: {}",
            l.mn_info(),
            l.net.log("mn")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (m, _) = l.mn_info().unwrap();
    assert!(m.coa.is_none());
    assert!(l
        .net
        .log("mn")
        .contains("status 142 (not authorized for prefix"));
    let h = l.ha_report().unwrap();
    assert!(h.counter("bu_refused") >= 1);
    let Report::HomeAgent { bindings, .. } = h else {
        panic!()
    };
    assert!(bindings.is_empty());
    assert!(!ha_routes(&l).contains("198.51.100."));
}
