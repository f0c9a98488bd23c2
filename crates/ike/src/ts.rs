//! Traffic selector narrowing (RFC 7296 section 2.9): the responder answers with the part of
//! what the initiator proposed that its own policy allows, or TS_UNACCEPTABLE when nothing
//! is left. RFC 4877 sections 4.4 and 5 lean on this: a mobile node's CHILD_SAs name its home
//! address, and a home agent's policy for that identity narrows everything else away.

use crate::body::{TrafficSelector, TsRange};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The selector that covers every address of one family, any protocol and port.
pub fn any(v6: bool) -> TrafficSelector {
    let range = if v6 {
        TsRange::V6(Ipv6Addr::UNSPECIFIED, Ipv6Addr::from(u128::MAX))
    } else {
        TsRange::V4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)
    };
    TrafficSelector {
        protocol: 0,
        start_port: 0,
        end_port: u16::MAX,
        range,
    }
}

/// The selector of one prefix, any protocol and port (what swanctl writes `fd00::1/128`).
pub fn prefix(addr: IpAddr, len: u8) -> Option<TrafficSelector> {
    let range = match addr {
        IpAddr::V4(a) if len <= 32 => {
            let a = u32::from(a);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            TsRange::V4(Ipv4Addr::from(a & mask), Ipv4Addr::from(a | !mask))
        }
        IpAddr::V6(a) if len <= 128 => {
            let a = u128::from(a);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            TsRange::V6(Ipv6Addr::from(a & mask), Ipv6Addr::from(a | !mask))
        }
        _ => return None,
    };
    Some(TrafficSelector {
        protocol: 0,
        start_port: 0,
        end_port: u16::MAX,
        range,
    })
}

/// The intersection of two selectors, if not empty: same family, compatible protocol (0
/// is any), overlapping ports and addresses.
pub fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    let protocol = match (a.protocol, b.protocol) {
        (0, p) | (p, 0) => p,
        (p, q) if p == q => p,
        _ => return None,
    };
    let start_port = a.start_port.max(b.start_port);
    let end_port = a.end_port.min(b.end_port);
    if start_port > end_port {
        return None;
    }
    let range = match (a.range, b.range) {
        (TsRange::V4(a0, a1), TsRange::V4(b0, b1)) => {
            let (lo, hi) = (a0.max(b0), a1.min(b1));
            (lo <= hi).then_some(TsRange::V4(lo, hi))?
        }
        (TsRange::V6(a0, a1), TsRange::V6(b0, b1)) => {
            let (lo, hi) = (a0.max(b0), a1.min(b1));
            (lo <= hi).then_some(TsRange::V6(lo, hi))?
        }
        _ => return None,
    };
    Some(TrafficSelector {
        protocol,
        start_port,
        end_port,
        range,
    })
}

/// Narrows `proposed` to `allowed`: every non-empty pairwise intersection, without
/// duplicates, at most `limit` of them (a bound on what a hostile list can cost).
pub fn narrow(
    proposed: &[TrafficSelector],
    allowed: &[TrafficSelector],
    limit: usize,
) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for p in proposed {
        for a in allowed {
            if out.len() >= limit {
                return out;
            }
            if let Some(x) = intersect(p, a) {
                if !out.contains(&x) {
                    out.push(x);
                }
            }
        }
    }
    out
}

/// Whether `inner` lies inside `outer` (an initiator's check that the responder's narrowed
/// answer is within what it proposed).
pub fn within(inner: &TrafficSelector, outer: &TrafficSelector) -> bool {
    intersect(inner, outer) == Some(*inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_keeps_the_common_part() {
        let home: IpAddr = "2001:db8:1::10".parse().unwrap();
        let hoa = prefix(home, 128).unwrap();
        let all6 = any(true);
        assert_eq!(narrow(&[all6], &[hoa], 8), vec![hoa]);
        assert_eq!(narrow(&[hoa], &[all6], 8), vec![hoa]);
        let other = prefix("2001:db8:1::11".parse().unwrap(), 128).unwrap();
        assert!(
            narrow(&[other], &[hoa], 8).is_empty(),
            "another home address"
        );
        assert!(
            narrow(&[any(false)], &[hoa], 8).is_empty(),
            "another family"
        );
        let mut mh = all6;
        mh.protocol = 135;
        mh.start_port = 5 << 8;
        mh.end_port = (6 << 8) | 0xff;
        let got = narrow(&[mh], &[hoa], 8);
        assert_eq!(got[0].protocol, 135);
        assert!(within(&got[0], &mh) && within(&got[0], &hoa));
        assert!(!within(&all6, &hoa));
        let mut udp = all6;
        udp.protocol = 17;
        assert!(intersect(&udp, &mh).is_none());
        let net = prefix("192.0.2.77".parse().unwrap(), 24).unwrap();
        assert_eq!(
            net.range,
            TsRange::V4("192.0.2.0".parse().unwrap(), "192.0.2.255".parse().unwrap())
        );
        assert!(prefix(home, 129).is_none());
    }
}
