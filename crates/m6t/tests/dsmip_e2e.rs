//! DSMIPv6 end to end in network namespaces: `m6t ha` and `m6t mn` with the real kernel,
//! a real nftables NAT, and real tools (ping, a TCP transfer checked with sha256, tshark
//! decoding the signalling independently, scapy building BUs with no code of ours).

use m6t::lab::dsmip::{DsmipOptions, HA4, HOA, MN6};
use m6t::lab::{Lab, LabOptions, CN, CN4, MN4, NAT_PUBLIC};
use m6t::status::Report;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// One lab at a time: the tests share the two cores and the tool binaries.
static SERIAL: Mutex<()> = Mutex::new(());

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_m6t"))
}

fn lab(tag: &str, o: &DsmipOptions) -> Lab {
    let mut l = Lab::build(bin(), &LabOptions::new(tag)).unwrap_or_else(|e| panic!("lab {tag}: {e}"));
    l.start_dsmip(o).unwrap_or_else(|e| panic!("dsmip {tag}: {e}"));
    l
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
    if p6 != 3 {
        for (role, c) in [("mn", "ip rule; ip -6 rule; ip -6 route show table 206; ip route show table 206; ip addr; ip -6 route get 2001:db8:2::10 from 2001:db8:1::a"), ("ha", "ip -6 route; ip route; ip -6 neigh show proxy")] {
            eprintln!("[{role}] {}", l.net.sh_output(role, c).map(|o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)).unwrap_or_default());
        }
        eprintln!("{}", m6t::status::render(&l.ha_report().unwrap()));
        eprintln!("{}", m6t::status::render(&l.mn_info().unwrap().1));
        eprintln!("{}\n{}", l.net.log("ha"), l.net.log("mn"));
    }
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
        .sh("nat", &format!("conntrack -L -p udp -d {HA4} 2>/dev/null | grep -c 'dport=4191' || true"))
        .unwrap();
    assert!(o.trim() != "0", "no UDP 4191 mapping: {o}");
    let r = l.ha_report().unwrap();
    assert!(counter(&r, "to_home") >= 6);
    assert!(counter(&r, "to_mn") >= 6);
}
