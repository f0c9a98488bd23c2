//! Any bytes through the IPv6 view, the keep-alive tests and the Packet Too Big builder.
#![no_main]
use libfuzzer_sys::fuzz_target;
use m6t_wire::{icmpv6, keepalive, Ipv6Packet, Ipv6Repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Ipv6Packet::new_checked(data) {
        let r = Ipv6Repr::parse(&p);
        assert_eq!(usize::from(r.payload_len) + 40, data.len());
        let _ = keepalive::is_request(&p);
        let _ = keepalive::is_echo_for(&p, r.dst);
        let mut out = [0u8; icmpv6::MAX_ERROR_LEN];
        let n = icmpv6::emit_packet_too_big(r.dst, &p, 1472, &mut out).expect("fits");
        assert!(icmpv6::checksum_ok(
            &Ipv6Packet::new_checked(&out[..n]).expect("well formed")
        ));
    }
});
