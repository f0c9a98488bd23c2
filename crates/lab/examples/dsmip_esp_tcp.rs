//! What IPsec costs DSMIPv6's data path, measured in the lab: iperf3 TCP on the IPv6 home
//! address through the NAT, mobile node -> correspondent and back (`-R`), with BU/BA in ESP
//! and payload in the clear, then with payload in tunnel-mode ESP over UDP 4500 (RFC 5555
//! section 5, aes128-sha256). Three runs of 5 s per figure, medians, the ratio from the same
//! run.
//!
//! `cargo build --release -p m6t -p m6t-lab --examples`, then as root:
//! `target/release/examples/dsmip_esp_tcp target/release/m6t`

use m6t_lab::lab::dsmip::{DsmipOptions, LabIpsec, HOA};
use m6t_lab::lab::{Lab, LabOptions, CN, MN4};
use std::path::PathBuf;
use std::time::Duration;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Gbit/s of one iperf3 run from the MN's home address (`-R`: toward it).
fn iperf(lab: &mut Lab, reverse: bool) -> f64 {
    lab.net
        .spawn("cn", "iperf3-server", &["iperf3", "-s", "-1", "-B", CN])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = if reverse { "-R" } else { "" };
    let out = lab
        .net
        .sh("mn", &format!("iperf3 -c {CN} -B {HOA} -t 5 -J {r}"))
        .unwrap();
    lab.net.stop("iperf3-server");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e9
}

fn measure(bin: &std::path::Path, tag: &str, payload: bool) -> (f64, f64) {
    let ipsec = if payload {
        LabIpsec::random_with_payload()
    } else {
        LabIpsec::random()
    };
    let o = DsmipOptions {
        ipsec: Some(ipsec.unwrap()),
        ..DsmipOptions::default()
    };
    let mut lab = Lab::build(bin, &LabOptions::new(tag)).unwrap();
    lab.start_dsmip(&o).unwrap();
    lab.wait_registered("udp", MN4[0], 0).unwrap();
    let up = median((0..3).map(|_| iperf(&mut lab, false)).collect());
    let down = median((0..3).map(|_| iperf(&mut lab, true)).collect());
    (up, down)
}

fn main() {
    let bin = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: dsmip_esp_tcp PATH/TO/m6t"),
    );
    let clear = measure(&bin, "espb0", false);
    let esp = measure(&bin, "espb1", true);
    println!("DSMIPv6 TCP on the home address through the NAT (Gbit/s, median of 3 x 5 s)");
    println!(
        "  payload in the clear (UDP 4191):      MN->CN {:.2}  CN->MN {:.2}",
        clear.0, clear.1
    );
    println!(
        "  payload in ESP tunnel mode (UDP 4500): MN->CN {:.2}  CN->MN {:.2}",
        esp.0, esp.1
    );
    println!(
        "  ratio ESP / clear:                     MN->CN {:.2}  CN->MN {:.2}",
        esp.0 / clear.0,
        esp.1 / clear.1
    );
}
