//! Unique Local IPv6 prefixes (RFC 4193 section 3.2.2) and the m6t /80 of a mobile node
//! (draft-ebalard-mext-m6t-02 section 2.2: `/48 ULA | subnet ID | MN ID | 48 random bits`).

use crate::prefix::Ipv6Prefix;
use sha1::{Digest, Sha1};
use std::net::Ipv6Addr;

/// The 40-bit Global ID of RFC 4193 section 3.2.2: the low 40 bits of
/// SHA-1(64-bit NTP time || EUI-64). Both inputs come from the caller (no clock here).
pub fn global_id(ntp_time: u64, eui64: [u8; 8]) -> [u8; 5] {
    let mut h = Sha1::new();
    h.update(ntp_time.to_be_bytes());
    h.update(eui64);
    let d = h.finalize();
    let mut g = [0u8; 5];
    g.copy_from_slice(&d[15..20]);
    g
}

/// The ULA /48 `fd00::/8 | global_id`.
pub fn ula48(global_id: [u8; 5]) -> Ipv6Prefix {
    let mut o = [0u8; 16];
    o[0] = 0xfd;
    o[1..6].copy_from_slice(&global_id);
    // Host bits are zero by construction.
    Ipv6Prefix::new(Ipv6Addr::from(o), 48).unwrap_or_else(|_| unreachable!())
}

/// Why a /80 could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Derive80Error {
    /// The base prefix is not a /48.
    #[error("the base prefix must be a /48")]
    NotSlash48,
}

/// The mobile node's /80: `/48 | subnet ID | MN ID` (section 2.2).
pub fn mn_prefix80(
    base48: Ipv6Prefix,
    subnet_id: u16,
    mn_id: u16,
) -> Result<Ipv6Prefix, Derive80Error> {
    if base48.len() != 48 {
        return Err(Derive80Error::NotSlash48);
    }
    let host = (u128::from(subnet_id) << 64) | (u128::from(mn_id) << 48);
    let a = base48.with_host(host);
    Ok(Ipv6Prefix::new(a, 80).unwrap_or_else(|_| unreachable!()))
}

/// Converts a 48-bit MAC address to a modified EUI-64 (RFC 4291 appendix A).
pub fn eui64_from_mac(mac: [u8; 6]) -> [u8; 8] {
    [
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_id_is_low_40_bits_of_sha1() {
        // SHA-1 of 16 zero bytes = e129f27c5103bc5cc44bcdf0a15e160d445066ff (python hashlib).
        assert_eq!(global_id(0, [0; 8]), [0x0d, 0x44, 0x50, 0x66, 0xff]);
    }

    #[test]
    fn derive_80() {
        let base: Ipv6Prefix = "fd12:3456:789a::/48".parse().unwrap();
        let p = mn_prefix80(base, 1, 0x42).unwrap();
        assert_eq!(p.to_string(), "fd12:3456:789a:1:42::/80");
        assert_eq!(
            mn_prefix80("fd00::/64".parse().unwrap(), 1, 1),
            Err(Derive80Error::NotSlash48)
        );
        let u = ula48([1, 2, 3, 4, 5]);
        assert_eq!(u.to_string(), "fd01:203:405::/48");
        assert_eq!(
            eui64_from_mac([0, 0x11, 0x22, 0x33, 0x44, 0x55])[..4],
            [2, 0x11, 0x22, 0xff]
        );
    }
}
