//! Writes the committed seed corpora of the IKE fuzz targets from the fixture pair
//! ([`m6t_ike::fixtures`]): every message of a full exchange for `ike` (the parser), and
//! datagram sequences for `ike_responder` (a repeated IKE_SA_INIT, a repeated IKE_AUTH, an
//! IKE_SA_INIT on port 4500).
//!
//! `cargo run -p m6t-ike --example ike_fuzz_seeds -- fuzz/seeds`

use m6t_ike::fixtures::{initiator, responder, transcript, HA, MN};
use std::path::Path;
use std::time::Instant;

fn framed(msgs: &[(&[u8], bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (m, nat_t) in msgs {
        let mut head = m.len() as u16 & 0x7fff;
        if *nat_t {
            head |= 0x8000;
        }
        out.extend_from_slice(&head.to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds".into());
    let dir = Path::new(&dir);
    let now = Instant::now();
    let (mut i, mut r) = (initiator(), responder());
    i.connect(now, "peer", MN, HA).expect("configured");
    let mut all = Vec::new();
    for _ in 0..3 {
        while let Some(t) = i.poll_transmit() {
            r.handle(now, HA, MN, &t.payload);
            all.push(t.payload);
        }
        while let Some(t) = r.poll_transmit() {
            i.handle(now, MN, HA, &t.payload);
            all.push(t.payload);
        }
    }
    let ike = dir.join("ike");
    std::fs::create_dir_all(&ike).expect("mkdir");
    for (n, m) in all.iter().enumerate() {
        std::fs::write(ike.join(format!("exchange-{n}")), m).expect("write");
    }
    let t = transcript();
    let resp = dir.join("ike_responder");
    std::fs::create_dir_all(&resp).expect("mkdir");
    std::fs::write(resp.join("repeat-sa-init"), framed(&[(&t[0], false)])).expect("write");
    std::fs::write(resp.join("repeat-auth"), framed(&[(&t[1], false)])).expect("write");
    let mut marked = vec![0u8; 4];
    marked.extend_from_slice(&t[0]);
    std::fs::write(resp.join("sa-init-on-4500"), framed(&[(&marked, true)])).expect("write");
    println!(
        "wrote {} ike and 3 ike_responder seeds under {}",
        all.len(),
        dir.display()
    );
}
