//! The m6t keep-alive message (draft-ebalard-mext-m6t-02 section 2.3).
//!
//! An IPv6 header alone: Next Header 59, payload length 0, source the tunnel address,
//! destination `fe80::1`. The gateway answers with the two addresses swapped.

use crate::ipv6::{Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN, NEXT_HEADER_NONE};
use std::net::Ipv6Addr;

/// The destination address of a keep-alive sent by a mobile node.
pub const KEEPALIVE_PEER: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Length of a keep-alive message on the wire (inside UDP).
pub const KEEPALIVE_LEN: usize = IPV6_HEADER_LEN;
/// Hop limit used for keep-alives; they never leave the tunnel.
const KEEPALIVE_HOP_LIMIT: u8 = 255;

/// Builds a keep-alive (or its echo) from `src` to `dst`.
pub fn emit(src: Ipv6Addr, dst: Ipv6Addr) -> [u8; KEEPALIVE_LEN] {
    let mut b = [0u8; KEEPALIVE_LEN];
    let r = Ipv6Repr {
        src,
        dst,
        next_header: NEXT_HEADER_NONE,
        payload_len: 0,
        hop_limit: KEEPALIVE_HOP_LIMIT,
    };
    // The array is exactly one header long, so emit cannot fail.
    if r.emit(&mut b).is_err() {
        unreachable!("keep-alive buffer is header-sized");
    }
    b
}

/// True when a checked packet is a keep-alive sent by a mobile node (to `fe80::1`).
pub fn is_request<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> bool {
    p.next_header() == NEXT_HEADER_NONE && p.payload_len() == 0 && p.dst_addr() == KEEPALIVE_PEER
}

/// True when a checked packet is the gateway's echo of a keep-alive of `tunnel_addr`.
pub fn is_echo_for<T: AsRef<[u8]>>(p: &Ipv6Packet<T>, tunnel_addr: Ipv6Addr) -> bool {
    p.next_header() == NEXT_HEADER_NONE
        && p.payload_len() == 0
        && p.src_addr() == KEEPALIVE_PEER
        && p.dst_addr() == tunnel_addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_echo() {
        let me: Ipv6Addr = "fd00:1:2:3:4::5".parse().unwrap();
        let req = emit(me, KEEPALIVE_PEER);
        let p = Ipv6Packet::new_checked(&req[..]).unwrap();
        assert!(is_request(&p));
        assert!(!is_echo_for(&p, me));
        let echo = emit(KEEPALIVE_PEER, me);
        let e = Ipv6Packet::new_checked(&echo[..]).unwrap();
        assert!(is_echo_for(&e, me));
        assert!(!is_request(&e));
        assert_eq!(&req[..8], &[0x60, 0, 0, 0, 0, 0, 59, 255]);
    }
}
