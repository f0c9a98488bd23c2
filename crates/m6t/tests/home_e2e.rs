//! Returning home end to end in network namespaces (RFC 6275 section 11.5.5): `m6t mn`
//! finds its home link, moves its home address there, deregisters from it, and the home
//! agent stops proxying and tunnelling; leaving home registers anew behind the NAT. A TCP
//! transfer on the home address lives across both moves (sha256 equal at both ends).

use m6t::status::Report;
use m6t_lab::lab::dsmip::{DsmipOptions, LabIpsec, HOA};
use m6t_lab::lab::{Lab, LabOptions, CN, MN4};
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

#[test]
fn tcp_on_the_home_address_lives_across_coming_home_and_leaving_again() {
    home_and_away("d6home", None);
}

#[test]
fn with_esp_the_deregistration_from_home_is_protected_too() {
    // BU and BA in transport-mode ESP right after the IPv6 header on the home link.
    home_and_away("d6homeesp", Some(LabIpsec::random().unwrap()));
}

fn home_and_away(tag: &str, ipsec: Option<LabIpsec>) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let with_ipsec = ipsec.is_some();
    let mut l = Lab::build(bin(), &LabOptions::new(tag)).unwrap();
    l.add_home_link_attachment().unwrap();
    let o = DsmipOptions {
        interfaces: "[[interfaces]]\nname = \"eth0\"\npreference = 1\n\
                     [[interfaces]]\nname = \"home1\"\npreference = 2\n"
            .into(),
        ipsec,
        ..DsmipOptions::default()
    };
    l.start_dsmip(&o).unwrap();
    let m = l.wait_registered("udp", MN4[0], 0).unwrap();
    l.net
        .spawn(
            "cn",
            "sink",
            &["/usr/bin/python3", &peer("tcp_sink.py"), CN],
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    l.net
        .spawn(
            "mn",
            "source",
            &["/usr/bin/python3", &peer("tcp_source.py"), HOA, CN, "10"],
        )
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    // Home.
    l.mn_go_home(MN4[0]).unwrap();
    let t = std::time::Instant::now();
    while !l.mn_info().unwrap().0.at_home {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not at home: {:?}\nmn: {}\nha: {}",
            l.mn_info().unwrap().0,
            l.net.log("mn"),
            l.net.log("ha")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let Report::HomeAgent { bindings, .. } = l.ha_report().unwrap() else {
        panic!()
    };
    assert!(bindings.is_empty(), "{bindings:?}");
    let proxies = l.net.sh("ha", "ip -6 neigh show proxy").unwrap();
    assert!(!proxies.contains(HOA), "still proxied: {proxies}");
    let routes = l.net.sh("ha", "ip -6 route show dev mip6ha0").unwrap();
    assert!(!routes.contains(HOA), "{routes}");
    assert!(l
        .net
        .sh("mn", "ip -6 addr show dev home1")
        .unwrap()
        .contains(HOA));
    assert!(!l
        .net
        .sh("mn", "ip -6 addr show dev mip6mn0")
        .unwrap()
        .contains(HOA));
    // Native on the home link: the home agent forwards, nothing comes out of its tunnel.
    let before = l.ha_report().unwrap().counter("to_home");
    assert_eq!(l.ping_from("mn", HOA, CN, 3).unwrap(), 3);
    assert_eq!(l.ha_report().unwrap().counter("to_home"), before);
    std::thread::sleep(Duration::from_secs(2));

    // Away again, behind the NAT.
    l.mn_leave_home(MN4[0]).unwrap();
    l.wait_registered("udp", MN4[0], m.registrations).unwrap();
    assert!(!l.mn_info().unwrap().0.at_home);
    let t = std::time::Instant::now();
    while l.net.running("source") && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = l.net.log("source");
    let f: Vec<&str> = out.split_whitespace().collect();
    assert!(
        f.len() >= 5 && f[0] == "sent",
        "source: {out}\nsink: {}\nmn: {}\nha: {}",
        l.net.log("sink"),
        l.net.log("mn"),
        l.net.log("ha")
    );
    assert!(f[1].parse::<u64>().unwrap() > 1_000_000, "{out}");
    assert_eq!(f[2], f[4], "sha256 differs: {out}");
    assert!(l.net.log("sink").contains(f[2]));
    let h = l.ha_report().unwrap();
    assert!(h.counter("to_home") > before);
    assert!(h.counter("bu_accepted") >= 3);
    if with_ipsec {
        assert_eq!(h.counter("bu_unprotected"), 0);
        for drop in ["ipsec_esp_bad_icv", "ipsec_esp_replay", "ipsec_unprotected"] {
            assert_eq!(h.counter(drop), 0, "{drop}");
        }
    }
}
