//! The fault soak's CI smoke (`m6t-lab soak --smoke`, crates/lab/src/soak.rs): in the lab's
//! namespaces, m6t with the DSMIPv6 mobile node registered from its m6t tunnel address,
//! each fault once (NAT rebinding to a new port and to a new address, NAT reboot, 1 % and
//! 10 % loss, gateway restart, home agent restart, IPv4 address change, a move to IPv6 and
//! back) while a TCP transfer runs on the home address and probes run on both addresses.

use m6t_lab::lab::NAT_PUBLIC;
use m6t_lab::soak::{render, run, SoakOptions};
use std::path::Path;
use std::sync::atomic::AtomicBool;

#[test]
fn every_fault_once_recovers_within_two_keepalives_and_the_transfer_arrives_intact() {
    let o = SoakOptions::smoke("soaksmoke");
    let stop = AtomicBool::new(false);
    let r = run(Path::new(env!("CARGO_BIN_EXE_m6t")), &o, None, &stop)
        .unwrap_or_else(|e| panic!("{e}"));
    let table = render(&r);
    assert_eq!(r.bytes_sent, r.bytes_received, "{table}");
    assert_eq!(r.sha256_sent, r.sha256_received, "{table}");
    // 1 MB/s for the whole schedule (two minutes), outages included.
    assert!(r.bytes_sent > 60_000_000, "{table}");
    assert_eq!(r.faults.len(), 10);
    let cap = 2.0 * o.keepalive;
    for f in &r.faults {
        let rec = f
            .recovery_s
            .unwrap_or_else(|| panic!("{}: never recovered\n{table}", f.fault));
        assert!(rec <= cap, "{}: {rec:.2} s > {cap} s\n{table}", f.fault);
        assert!(f.tcp_stall_s <= 2.0 * cap, "{}\n{table}", f.fault);
    }
    // Each fault did what it says: read from the daemons, not from the schedule.
    let by = |name: &str| r.faults.iter().find(|f| f.fault.starts_with(name)).unwrap();
    let port = by("NAT rebinding (new port)");
    assert_ne!(port.before.gateway_peer, port.after.gateway_peer, "{table}");
    let addr = by("NAT rebinding (new address)");
    assert!(
        addr.after
            .gateway_peer
            .as_deref()
            .is_some_and(|p| p.starts_with(NAT_PUBLIC[1])),
        "{:?}",
        addr.after
    );
    let reboot = by("NAT reboot");
    assert!(
        reboot
            .after
            .gateway_peer
            .as_deref()
            .is_some_and(|p| p.starts_with(NAT_PUBLIC[0])),
        "{:?}",
        reboot.after
    );
    let v6 = by("MN moves to IPv6");
    assert!(v6.m6t_unreachable_by_design && v6.m6t_lost_pct > 50.0);
    assert!(
        v6.after
            .care_of
            .as_deref()
            .is_some_and(|c| c.starts_with("2001:db8:5::")),
        "{:?}",
        v6.after
    );
    let back = by("MN back to IPv4");
    assert!(
        back.after
            .care_of
            .as_deref()
            .is_some_and(|c| c.starts_with("fd00:6d36:7400:1:1:")),
        "{:?}",
        back.after
    );
    assert!(
        by("MN IPv4 address change").after.registrations
            > by("MN IPv4 address change").before.registrations
    );
    // The 10 % loss is there, both ways: about 19 % of the probes lost.
    let loss = by("10 % loss");
    assert!(loss.m6t_lost_pct > 5.0, "{table}");
}
