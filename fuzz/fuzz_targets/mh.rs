//! Any bytes through the Mobility Header parser; what parses re-emits and re-parses equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use m6t_wire::mh::MhRepr;
use std::net::Ipv6Addr;

fuzz_target!(|data: &[u8]| {
    let (src, dst) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
    if let Ok(r) = MhRepr::parse(data, src, dst) {
        let mut out = [0u8; 4096];
        if let Ok(n) = r.emit(src, dst, &mut out) {
            assert_eq!(MhRepr::parse(&out[..n], src, dst).expect("re-parses"), r);
        }
    }
});
