//! Any bytes into the DSMIPv6 home agent and mobile node, by every path a packet reaches
//! them (UDP 4191, IP-in-IP, captured signalling, TUN), the mobile node as a mobile router
//! (RFC 3963) and at home too: no panic; a signalling packet that parses re-emits and
//! re-parses equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use m6t_proto::dsmip::binding_cache::HaConfig;
use m6t_proto::dsmip::home_agent::HomeAgent;
use m6t_proto::dsmip::mobile_node::MobileNode;
use m6t_proto::dsmip::update_list::MnConfig;
use m6t_proto::dsmip::NetPrefix;
use m6t_wire::mip6;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let ha6: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
    let ha4 = Ipv4Addr::new(198, 51, 100, 2);
    let mut c = HaConfig::new("2001:db8:1::/64".parse().unwrap());
    c.accept_unprotected = true;
    let mnp: Vec<NetPrefix> = vec![
        "2001:db8:77::/48".parse().unwrap(),
        "198.51.100.96/27".parse().unwrap(),
    ];
    c.routers.insert("2001:db8:1::a".parse().unwrap(), mnp.clone());
    let mut h = HomeAgent::new(c, ha6);
    let from = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 2), 4000);
    let _ = h.handle_udp(now, from, &mut data.to_vec());
    let _ = h.handle_ip_in_ip(now, IpAddr::V4(*from.ip()), &mut data.to_vec());
    let _ = h.handle_captured(now, &mut data.to_vec());
    let _ = h.handle_from_tun(now, data);
    while h.poll_transmit().is_some() {}
    let mut mc = MnConfig::new("2001:db8:1::a".parse().unwrap(), ha6, ha4);
    mc.router = data.first().is_some_and(|b| b & 1 == 1);
    mc.explicit_prefixes = data.first().is_some_and(|b| b & 2 == 2);
    mc.mobile_network = mnp;
    let mut m = MobileNode::new(mc, 1);
    m.handle_coas(now, None, Some(Ipv4Addr::new(192, 0, 2, 10)));
    let _ = m.handle_udp(now, SocketAddrV4::new(ha4, 4191), &mut data.to_vec());
    let _ = m.handle_captured(now, &mut data.to_vec());
    let _ = m.handle_from_tun(now, data);
    m.handle_home(now, true);
    let _ = m.handle_captured(now, &mut data.to_vec());
    let _ = m.handle_from_tun(now, data);
    if let Ok(s) = mip6::parse(data) {
        let mut out = [0u8; 4096];
        if let Ok(n) = mip6::emit(s.src, s.dst, s.home, &s.mh, &mut out) {
            assert_eq!(mip6::parse(&out[..n]).expect("re-parses"), s);
        }
    }
});
