//! ESP per packet, one core: encapsulation then decapsulation of a 1400-byte payload (the size
//! of a full-MTU inner packet in a DSMIPv6 tunnel) for each algorithm, in tunnel mode with
//! ESN, as the payload SAs of RFC 5555 run. `copy 1400 B` is the baseline measured in the
//! same run: the memcpy every forwarder pays. Throughput is in payload bytes per second.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use m6t_ipsec::{Algorithm, Mode, Sa, SaParams};
use m6t_wire::Ipv6Repr;
use std::net::Ipv6Addr;

const LEN: usize = 1400;

fn inner() -> Vec<u8> {
    let mut v = vec![0x5a; LEN];
    let _ = Ipv6Repr {
        src: Ipv6Addr::LOCALHOST,
        dst: Ipv6Addr::LOCALHOST,
        next_header: 17,
        payload_len: (LEN - 40) as u16,
        hop_limit: 64,
    }
    .emit(&mut v);
    v
}

fn esp(c: &mut Criterion) {
    let pkt = inner();
    let mut g = c.benchmark_group("esp");
    g.throughput(Throughput::Bytes(LEN as u64));

    let mut dst = vec![0u8; LEN];
    g.bench_function("copy 1400 B", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&pkt));
            black_box(&dst);
        })
    });

    for &a in Algorithm::ALL {
        let params = SaParams {
            spi: 0x1000,
            mode: Mode::Tunnel,
            algorithm: a,
            esn: true,
        };
        let keymat: Vec<u8> = (0..a.keymat_len() as u8).collect();
        let mut tx = Sa::new(params, &keymat, 1).unwrap();
        let mut rx = Sa::new(params, &keymat, 0).unwrap();
        let mut out = Vec::with_capacity(LEN + 64);
        g.bench_function(format!("encap+decap 1400 B {}", a.name()), |b| {
            b.iter(|| {
                out.clear();
                let seq = tx.encapsulate_tunnel(black_box(&pkt), &mut out).unwrap();
                let o = rx.decapsulate(&mut out).unwrap();
                assert_eq!(o.seq, seq);
                black_box(&out[o.payload]);
            })
        });
        let mut out = Vec::with_capacity(LEN + 64);
        g.bench_function(format!("encap 1400 B {}", a.name()), |b| {
            b.iter(|| {
                out.clear();
                black_box(tx.encapsulate_tunnel(black_box(&pkt), &mut out).unwrap());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, esp);
criterion_main!(benches);
