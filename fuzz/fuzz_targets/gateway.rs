//! Hostile datagrams from any peer and hostile packets from the home side never panic the
//! gateway, and a packet that fails a check never changes an existing state.
#![no_main]
use libfuzzer_sys::fuzz_target;
use m6t_proto::m6t::gateway::{FromMn, Gateway, GatewayConfig};
use m6t_wire::Ipv6Repr;
use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let ha: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
    let mn: Ipv6Addr = "fd00:1::5".parse().unwrap();
    let mut gw = Gateway::new(
        GatewayConfig {
            ha_addresses: vec![ha],
            mn_prefixes: vec!["fd00:1::/32".parse().unwrap()],
            icmp_source: "2001:db8:1::2".parse().unwrap(),
            ..GatewayConfig::default()
        },
        [0x5a; 32],
    );
    let t0 = Instant::now();
    let mut scratch = vec![0u8; 1280];
    let mut p = vec![0u8; 60];
    Ipv6Repr {
        src: mn,
        dst: ha,
        next_header: 59,
        payload_len: 20,
        hop_limit: 64,
    }
    .emit(&mut p)
    .unwrap();
    let peer: SocketAddrV4 = "198.51.100.7:40000".parse().unwrap();
    let _ = gw.handle_from_mn(t0, 3544, peer, &p, &mut scratch);
    let before = gw.state(t0, mn);
    let split = data
        .first()
        .map(|b| usize::from(*b))
        .unwrap_or(0)
        .min(data.len());
    let (a, b) = data.split_at(split);
    let attacker: SocketAddrV4 = "203.0.113.66:1".parse().unwrap();
    let r = gw.handle_from_mn(
        t0 + Duration::from_millis(1),
        3544,
        attacker,
        b,
        &mut scratch,
    );
    if matches!(r, FromMn::Drop(_)) {
        assert_eq!(gw.state(t0, mn), before);
    }
    let _ = gw.handle_from_home(t0 + Duration::from_millis(2), a, &mut scratch);
    gw.handle_timeout(t0 + Duration::from_secs(3600));
});
