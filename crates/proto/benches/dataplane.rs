//! Micro-benchmarks of the per-packet work: encapsulation (client, TUN -> UDP), decapsulation
//! (client, UDP -> TUN), and the gateway's state lookup both ways with 1 k and 1 M states.
//! `copy 1400 B` is the baseline measured in the same run: the memcpy every forwarder pays;
//! std's `RandomState` is the baseline of the seeded hasher.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use m6t_proto::hash::SeededState;
use m6t_proto::m6t::client::{Client, ClientConfig};
use m6t_proto::m6t::gateway::{Gateway, GatewayConfig};
use m6t_wire::Ipv6Repr;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Instant;

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

fn mn_addr(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(0xfd00_6d36_7400_0008_0000_0000_0000_0000u128 + u128::from(i))
}

fn gateway_with(n: u32, t0: Instant) -> Gateway {
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
    for i in 0..n {
        let p = pkt(mn_addr(i), HA, 60);
        let peer = SocketAddrV4::new(
            Ipv4Addr::new(198, 51, 100, (i % 250) as u8),
            1024 + (i % 60000) as u16,
        );
        let _ = gw.handle_from_mn(t0, 3544, peer, &p, &mut scratch);
        let _ = gw.handle_from_home(t0, &pkt(HA, mn_addr(i), 60), &mut scratch);
    }
    gw
}

fn benches(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut scratch = vec![0u8; 1280];

    let src = vec![0x5au8; 1400];
    let mut dst = vec![0u8; 1400];
    c.bench_function("copy 1400 B (baseline)", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)))
    });

    // The gateway's index keys SipHash-1-3 from its seed (m6t_proto::hash) instead of
    // std's OS-keyed RandomState: the same algorithm, measured against it in the same run.
    let std_state = std::collections::hash_map::RandomState::new();
    let [seeded] = SeededState::derive::<1>([0x5a; 32]);
    let mut a: u128 = 0xfd00_6d36_7400_0008_0000_0000_0000_0000;
    c.bench_function("hash an address, std RandomState (baseline)", |b| {
        b.iter(|| {
            a = a.wrapping_add(1);
            std_state.hash_one(black_box(a))
        })
    });
    c.bench_function("hash an address, SeededState", |b| {
        b.iter(|| {
            a = a.wrapping_add(1);
            seeded.hash_one(black_box(a))
        })
    });

    let mut client = Client::new(
        ClientConfig::new("fd00:6d36:7400:1:1::/80".parse().unwrap(), vec![3544]),
        [1; 32],
    );
    client.handle_attachment(t0, Some(Ipv4Addr::new(192, 0, 2, 10)));
    let me = client
        .poll_change()
        .and_then(|c| c.new)
        .map(|n| n.0)
        .unwrap();
    let up = pkt(me, HA, 1400);
    let down = pkt(HA, me, 1400);
    c.bench_function("client encapsulate 1400 B", |b| {
        b.iter(|| client.handle_from_tun(t0, black_box(&up), &mut scratch))
    });
    c.bench_function("client decapsulate 1400 B", |b| {
        b.iter(|| client.handle_from_gateway(t0, black_box(&down)))
    });

    for n in [1_000u32, 1_000_000] {
        let mut gw = gateway_with(n, t0);
        let mut k: u64 = 0;
        c.bench_function(&format!("gateway from MN, {n} states"), |b| {
            b.iter_batched(
                || {
                    k += 1;
                    let i = (k.wrapping_mul(2_654_435_761) % u64::from(n)) as u32;
                    let peer = SocketAddrV4::new(
                        Ipv4Addr::new(198, 51, 100, (i % 250) as u8),
                        1024 + (i % 60000) as u16,
                    );
                    (pkt(mn_addr(i), HA, 100), peer)
                },
                |(p, peer)| gw.handle_from_mn(t0, 3544, peer, &p, &mut scratch),
                BatchSize::SmallInput,
            )
        });
        c.bench_function(&format!("gateway from home, {n} states"), |b| {
            b.iter_batched(
                || {
                    k += 1;
                    let i = (k.wrapping_mul(2_654_435_761) % u64::from(n)) as u32;
                    pkt(HA, mn_addr(i), 100)
                },
                |p| gw.handle_from_home(t0, &p, &mut scratch),
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(dataplane, benches);
criterion_main!(dataplane);
