//! Any bytes through the IPv4 view; what is accepted re-emits (without options) and re-parses
//! equal, with a checksum that verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use m6t_wire::{Ipv4Packet, Ipv4Repr, IPV4_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Ipv4Packet::new_checked(data) {
        let r = Ipv4Repr::parse(&p);
        let (hl, total) = (p.header_len(), usize::from(p.total_len()));
        assert!(hl >= IPV4_HEADER_LEN && hl <= total && total <= data.len());
        assert_eq!(usize::from(r.payload_len) + hl, total);
        assert_eq!(p.options().len(), hl - IPV4_HEADER_LEN);
        assert_eq!(p.payload(), &data[hl..total]);
        let _ = (
            p.dscp(),
            p.ecn(),
            p.ident(),
            p.more_frags(),
            p.frag_offset(),
        );
        let _ = (p.checksum(), p.verify_checksum());
        let mut out = vec![0u8; IPV4_HEADER_LEN + usize::from(r.payload_len)];
        r.emit(&mut out).expect("a parsed payload length fits");
        out[IPV4_HEADER_LEN..].copy_from_slice(p.payload());
        let q = Ipv4Packet::new_checked(&out[..]).expect("well formed");
        assert!(q.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&q), r);
        assert_eq!(q.payload(), p.payload());
    }
});
