//! The gateway's per-packet work at 1 k and 1 M states, packets handled one by one and in
//! batches of 32 whose cache misses are started together first
//! (`Gateway::prefetch_bucket` / `prefetch_slot`, as the daemon does for each recvmmsg batch), on 4 KiB
//! pages and on transparent huge pages (the allocator `m6t gateway` turns on; off by
//! default, so each run below sets it explicitly).
//! `cargo run --release -p m6t-lab --example table_lookup`.

use m6t_linux::hugealloc::{set_enabled, HugePageAlloc};
use m6t_proto::m6t::gateway::{Gateway, GatewayConfig};
use m6t_wire::Ipv6Repr;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Instant;

#[global_allocator]
static A: HugePageAlloc = HugePageAlloc;

const HA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

fn pkt(src: Ipv6Addr, dst: Ipv6Addr, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let _ = Ipv6Repr {
        src,
        dst,
        next_header: 17,
        payload_len: (len - 40) as u16,
        hop_limit: 64,
    }
    .emit(&mut v);
    v
}

fn addr(i: u32) -> Ipv6Addr {
    // Random-looking low bits, as real tunnel addresses have.
    let h = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
    Ipv6Addr::from((0xfd00_6d36_7400_0008u128 << 64) | u128::from(h))
}

fn peer(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(198, 51, 100, (i % 250) as u8),
        1024 + (i % 60000) as u16,
    )
}

fn run(n: u32, t0: Instant, batch: bool) -> f64 {
    let mut gw = Gateway::new(
        GatewayConfig {
            ha_addresses: vec![HA],
            mn_prefixes: vec!["fd00:6d36:7400::/48".parse().unwrap()],
            icmp_source: "2001:db8:1::2".parse().unwrap(),
            max_states: 2_000_000,
            max_states_per_ipv4: 2_000_000,
            new_state_burst: u32::MAX / 1000,
            new_state_rate: u32::MAX / 1000,
            ..GatewayConfig::default()
        },
        [0x5a; 32],
    );
    let mut scratch = vec![0u8; 1280];
    let mut p = pkt(addr(0), HA, 100);
    for i in 0..n {
        p[8..24].copy_from_slice(&addr(i).octets());
        let _ = gw.handle_from_mn(t0, 3544, peer(i), &p, &mut scratch);
    }
    let rounds = 4_000_000u64;
    // Batches of 32 packets, as recvmmsg hands them over.
    let mut pkts: Vec<(Vec<u8>, SocketAddrV4)> = (0..32).map(|_| (p.clone(), peer(0))).collect();
    let mut positions = Vec::with_capacity(32);
    let t = Instant::now();
    let mut k = 0u64;
    for _ in 0..rounds / 32 {
        for (q, pe) in pkts.iter_mut() {
            k = k.wrapping_add(2_654_435_761);
            let i = (k % u64::from(n)) as u32;
            q[8..24].copy_from_slice(&addr(i).octets());
            *pe = peer(i);
        }
        if batch {
            positions.clear();
            for (q, _) in &pkts {
                if let Some((pos, p)) = gw.prefetch_bucket(q) {
                    m6t_linux::prefetch::hint(p);
                    positions.push(pos);
                }
            }
            for &pos in &positions {
                m6t_linux::prefetch::hint(gw.prefetch_slot(pos));
            }
        }
        for (q, pe) in &pkts {
            let _ = std::hint::black_box(gw.handle_from_mn(t0, 3544, *pe, q, &mut scratch));
        }
    }
    t.elapsed().as_nanos() as f64 / rounds as f64
}

fn main() {
    let t0 = Instant::now();
    for (huge, batch) in [(false, false), (false, true), (true, true)] {
        set_enabled(huge);
        let a = run(1_000, t0, batch);
        let b = run(1_000_000, t0, batch);
        println!(
            "{:<6} {:<11} 1k states {a:6.1} ns/packet   1M states {b:6.1} ns/packet",
            if huge { "huge" } else { "4 KiB" },
            if batch { "batched" } else { "one by one" },
        );
    }
}
