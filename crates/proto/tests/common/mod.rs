//! Helpers shared by the machine tests: packet builders.
#![allow(dead_code)]

use m6t_wire::Ipv6Repr;
use std::net::Ipv6Addr;

/// An IPv6 packet of `total` bytes (header included) from `src` to `dst`, next header UDP.
pub fn pkt(src: &str, dst: &str, total: usize) -> Vec<u8> {
    pkt_a(src.parse().unwrap(), dst.parse().unwrap(), total)
}

/// Same as [`pkt`] with parsed addresses.
pub fn pkt_a(src: Ipv6Addr, dst: Ipv6Addr, total: usize) -> Vec<u8> {
    let mut v = vec![0x5a; total];
    Ipv6Repr {
        src,
        dst,
        next_header: 17,
        payload_len: (total - 40) as u16,
        hop_limit: 64,
    }
    .emit(&mut v)
    .unwrap();
    v
}

/// The reply an echoing HA makes to `p`: addresses swapped.
pub fn swap(p: &[u8]) -> Vec<u8> {
    let mut r = p.to_vec();
    let (a, b) = r[8..40].split_at_mut(16);
    a.swap_with_slice(b);
    r
}
