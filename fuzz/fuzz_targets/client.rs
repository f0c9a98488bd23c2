//! Hostile datagrams from the network and packets from the TUN never panic the client.
#![no_main]
use libfuzzer_sys::fuzz_target;
use m6t_proto::m6t::client::{Client, ClientConfig};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let mut c = Client::new(
        ClientConfig::new("fd00:1:2:3:4::/80".parse().unwrap(), vec![3544, 53]),
        [3; 32],
    );
    let t0 = Instant::now();
    c.handle_attachment(t0, Some(Ipv4Addr::new(192, 0, 2, 10)));
    let mut scratch = vec![0u8; 1280];
    let _ = c.handle_from_gateway(t0, data);
    let _ = c.handle_from_tun(t0, data, &mut scratch);
    c.handle_timeout(t0 + Duration::from_secs(100));
    while c.poll_change().is_some() {}
});
