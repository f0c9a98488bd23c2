//! Temporary: DSMIPv6 IPv4 -> IPv6 moves with the m6t client running, timed.
use m6t_lab::lab::dsmip::{DsmipOptions, LabIpsec, MN6};
use m6t_lab::lab::{Lab, LabOptions, MN4, V6_ROUTER};
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn v46_moves() {
    let bin = Path::new(env!("CARGO_BIN_EXE_m6t"));
    let mut l = Lab::start(bin, &LabOptions::new("tmpv46")).unwrap();
    l.write_dsmip_configs(&DsmipOptions {
        ipsec: Some(LabIpsec::random().unwrap()),
        ..DsmipOptions::default()
    })
    .unwrap();
    l.start_ha().unwrap();
    l.start_mn().unwrap();
    let mut regs = l.wait_registered("udp", MN4[0], 0).unwrap().registrations;
    let mut times = Vec::new();
    for i in 0..15 {
        let t = Instant::now();
        l.net
            .sh(
                "mn",
                &format!(
                    "ip -6 addr add {MN6}/64 dev eth0 nodad && ip -6 route add default via {V6_ROUTER} && ip addr del {}/24 dev eth0",
                    MN4[0]
                ),
            )
            .unwrap();
        regs = l.wait_registered("ipv6", MN6, regs).unwrap().registrations;
        let v46 = t.elapsed();
        let t = Instant::now();
        l.net
            .sh(
                "mn",
                &format!(
                    "ip addr add {}/24 dev eth0 && ip route replace default via 192.0.2.1 && ip -6 route del default via {V6_ROUTER} && ip -6 addr del {MN6}/64 dev eth0",
                    MN4[0]
                ),
            )
            .unwrap();
        regs = l.wait_registered("udp", MN4[0], regs).unwrap().registrations;
        let v64 = t.elapsed();
        eprintln!("run {i}: v4->v6 {v46:?}  v6->v4 {v64:?}");
        times.push((v46, v64));
        if v46 > Duration::from_millis(500) || v64 > Duration::from_millis(500) {
            eprintln!("SLOW; mn log tail:\n{}", l.net.log("mn").lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
