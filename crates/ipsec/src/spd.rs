//! The Security Policy Database of RFC 4301 section 4.4.1: an ordered list of policies, each
//! a set of selectors and an action (PROTECT, BYPASS, DISCARD), looked up with the selector
//! values of a packet ([`Traffic`]).
//!
//! The selectors are those of section 4.4.1.1 that Mobile IPv6 needs: local and remote
//! addresses (any, one address, or a prefix), the next-layer protocol, and for it the ports
//! (TCP, UDP, SCTP), the ICMPv6 type, or the **Mobility Header type** (RFC 4301 section
//! 4.4.1.1 "if the Next Layer Protocol is a Mobility Header", RFC 4877 section 4.2). As RFC
//! 4877 section 6 writes them, a policy carries a type for each direction:
//! `local_type` is what this node sends (`local_mh_type = BU` on a mobile node), `remote_type`
//! what it receives (`remote_mh_type = BAck`).
//!
//! Policies are host-wide: none names an interface (seed 001 section 4.2.2, req. #2). A
//! packet's addresses are the ones IPsec sees in Mobile IPv6 (RFC 6275 section 11.3.2, RFC
//! 3776 section 4.1): the home address of a Home Address option or a type 2 Routing Header,
//! not the care-of address, so a move changes no selector.

use std::net::IpAddr;

/// Next Header of the Mobility Header (RFC 6275 section 6.1).
pub const PROTO_MH: u8 = 135;
/// Next Header of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// Next Header of TCP.
pub const PROTO_TCP: u8 = 6;
/// Next Header of UDP.
pub const PROTO_UDP: u8 = 17;
/// Next Header of SCTP.
pub const PROTO_SCTP: u8 = 132;

/// An address selector (RFC 4301 section 4.4.1.1: a list of ranges; one range is what the
/// Mobile IPv6 policies need).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrSel {
    /// Any address (`ANY`).
    Any,
    /// The addresses of a prefix: `/128` (or `/32`) is one address.
    Prefix(IpAddr, u8),
}

impl AddrSel {
    /// One address.
    pub fn addr(a: IpAddr) -> AddrSel {
        let len = if a.is_ipv4() { 32 } else { 128 };
        AddrSel::Prefix(a, len)
    }

    /// Whether `a` is in the selector. An IPv4 prefix never matches an IPv6 address and the
    /// reverse.
    pub fn matches(&self, a: IpAddr) -> bool {
        match (*self, a) {
            (AddrSel::Any, _) => true,
            (AddrSel::Prefix(IpAddr::V6(p), len), IpAddr::V6(a)) => {
                let shift = 128 - u32::from(len.min(128));
                u128::from(p).checked_shr(shift).unwrap_or(0)
                    == u128::from(a).checked_shr(shift).unwrap_or(0)
            }
            (AddrSel::Prefix(IpAddr::V4(p), len), IpAddr::V4(a)) => {
                let shift = 32 - u32::from(len.min(32));
                u32::from(p).checked_shr(shift).unwrap_or(0)
                    == u32::from(a).checked_shr(shift).unwrap_or(0)
            }
            _ => false,
        }
    }
}

/// The selectors of one policy (RFC 4301 section 4.4.1.1), from this node's point of view.
/// `None` is `ANY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Selectors {
    /// This node's address: the source of what it sends, the destination of what it receives.
    pub local: AddrSel,
    /// The peer's address.
    pub remote: AddrSel,
    /// Next-layer protocol (after the IPv6 extension headers).
    pub proto: Option<u8>,
    /// Local port (TCP, UDP, SCTP).
    pub local_port: Option<u16>,
    /// Remote port (TCP, UDP, SCTP).
    pub remote_port: Option<u16>,
    /// Mobility Header or ICMPv6 type of what this node sends (RFC 4877 `local_mh_type`,
    /// `local_icmp6_type`).
    pub local_type: Option<u8>,
    /// Mobility Header or ICMPv6 type of what this node receives (`remote_mh_type`).
    pub remote_type: Option<u8>,
}

impl Selectors {
    /// Selectors that match everything.
    pub const ANY: Selectors = Selectors {
        local: AddrSel::Any,
        remote: AddrSel::Any,
        proto: None,
        local_port: None,
        remote_port: None,
        local_type: None,
        remote_type: None,
    };

    /// Whether a packet with these selector values, going in direction `dir`, matches.
    pub fn matches(&self, dir: Direction, t: &Traffic) -> bool {
        let (local, remote) = match dir {
            Direction::Out => (t.src, t.dst),
            Direction::In => (t.dst, t.src),
        };
        if !self.local.matches(local) || !self.remote.matches(remote) {
            return false;
        }
        if self.proto.is_some_and(|p| p != t.proto) {
            return false;
        }
        let (lp, rp) = match (dir, t.ports) {
            (_, None) => (None, None),
            (Direction::Out, Some((s, d))) => (Some(s), Some(d)),
            (Direction::In, Some((s, d))) => (Some(d), Some(s)),
        };
        let port_ok = |sel: Option<u16>, v: Option<u16>| sel.is_none() || sel == v;
        if !port_ok(self.local_port, lp) || !port_ok(self.remote_port, rp) {
            return false;
        }
        let wanted = match dir {
            Direction::Out => self.local_type,
            Direction::In => self.remote_type,
        };
        wanted.is_none() || wanted == t.msg_type
    }
}

/// Direction of traffic or of an SA (RFC 4301 section 4.4.1: SPD-O and SPD-I).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by this node.
    Out,
    /// Received by this node.
    In,
}

/// The selector values of one packet (RFC 4301 section 5.1 step 1 / 5.2 step 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Traffic {
    /// Source: the home address when a Home Address option carries one.
    pub src: IpAddr,
    /// Destination: the home address when a type 2 Routing Header carries one.
    pub dst: IpAddr,
    /// The next-layer protocol after the extension headers.
    pub proto: u8,
    /// Source and destination ports, for TCP, UDP and SCTP when the header is there.
    pub ports: Option<(u16, u16)>,
    /// Mobility Header type or ICMPv6 type.
    pub msg_type: Option<u8>,
}

/// What a policy does with the traffic it selects (RFC 4301 section 4.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Protected by ESP: sent through the SA at `out`, accepted only through the SA at
    /// `inbound` (indices in the SAD; RFC 4301 section 4.4.1.2 "pointer to SAD entries").
    /// Either may be absent for one-way policies; a packet with no SA in its direction is
    /// discarded.
    Protect {
        /// The outbound SA.
        out: Option<usize>,
        /// The inbound SA.
        inbound: Option<usize>,
    },
    /// Sent and accepted without IPsec.
    Bypass,
    /// Dropped.
    Discard,
}

/// One SPD entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// A name for status and logs (the configuration's).
    pub name: String,
    /// What it selects.
    pub selectors: Selectors,
    /// What it does.
    pub action: Action,
}

/// The ordered SPD: the first policy whose selectors match decides (RFC 4301 section 4.4.1:
/// "the SPD is ordered"). Traffic no policy selects gets [`Spd::unmatched`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spd {
    /// The policies, first match wins.
    pub policies: Vec<Policy>,
    /// The action for traffic no policy selects: RFC 4301 section 4.4.1 makes it DISCARD for
    /// a general-purpose host; a Mobile IPv6 node that protects only its signalling names
    /// BYPASS here, and still cannot receive an unprotected BU, because the BU policy selects
    /// it and says PROTECT.
    pub unmatched: Action,
}

impl Spd {
    /// The index of the first policy matching `t` in direction `dir`, or `None`.
    pub fn lookup(&self, dir: Direction, t: &Traffic) -> Option<usize> {
        self.policies
            .iter()
            .position(|p| p.selectors.matches(dir, t))
    }

    /// The action for `t` in direction `dir`, with the index of the policy that gave it.
    pub fn decide(&self, dir: Direction, t: &Traffic) -> (Option<usize>, Action) {
        match self.lookup(dir, t) {
            Some(i) => (Some(i), self.policies[i].action),
            None => (None, self.unmatched),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_match_their_addresses_only() {
        let p = AddrSel::Prefix(a("2001:db8:1::"), 64);
        assert!(p.matches(a("2001:db8:1::ffff")));
        assert!(!p.matches(a("2001:db8:2::1")));
        assert!(!p.matches(a("192.0.2.1")));
        let one = AddrSel::addr(a("2001:db8:1::5"));
        assert!(one.matches(a("2001:db8:1::5")));
        assert!(!one.matches(a("2001:db8:1::6")));
        assert!(AddrSel::Prefix(a("::"), 0).matches(a("2001:db8::1")));
        let v4 = AddrSel::Prefix(a("198.51.100.0"), 24);
        assert!(v4.matches(a("198.51.100.9")));
        assert!(!v4.matches(a("198.51.101.9")));
        assert!(AddrSel::Prefix(a("0.0.0.0"), 0).matches(a("203.0.113.1")));
        assert!(!AddrSel::Prefix(Ipv6Addr::UNSPECIFIED.into(), 0).matches(a("203.0.113.1")));
    }

    /// RFC 4877 section 6.1, the mobile node's SPD-S entry, both ways.
    #[test]
    fn the_rfc_4877_bu_policy_selects_bu_out_and_back_in() {
        let (hoa, ha) = (a("2001:db8:1::100"), a("2001:db8:1::1"));
        let sel = Selectors {
            local: AddrSel::addr(hoa),
            remote: AddrSel::addr(ha),
            proto: Some(PROTO_MH),
            local_type: Some(5),
            remote_type: Some(6),
            ..Selectors::ANY
        };
        let bu = Traffic {
            src: hoa,
            dst: ha,
            proto: PROTO_MH,
            ports: None,
            msg_type: Some(5),
        };
        let back = Traffic {
            src: ha,
            dst: hoa,
            msg_type: Some(6),
            ..bu
        };
        assert!(sel.matches(Direction::Out, &bu));
        assert!(sel.matches(Direction::In, &back));
        // A BA going out, a BU coming in, another home address: not this policy.
        assert!(!sel.matches(
            Direction::Out,
            &Traffic {
                msg_type: Some(6),
                ..bu
            }
        ));
        assert!(!sel.matches(
            Direction::In,
            &Traffic {
                msg_type: Some(5),
                ..back
            }
        ));
        let other = Traffic {
            src: a("2001:db8:1::101"),
            ..bu
        };
        assert!(!sel.matches(Direction::Out, &other));
        assert!(!sel.matches(
            Direction::Out,
            &Traffic {
                proto: PROTO_TCP,
                ..bu
            }
        ));
    }

    #[test]
    fn ports_are_read_from_this_nodes_side() {
        let sel = Selectors {
            proto: Some(PROTO_TCP),
            local_port: Some(22),
            ..Selectors::ANY
        };
        let t = Traffic {
            src: a("2001:db8::1"),
            dst: a("2001:db8::2"),
            proto: PROTO_TCP,
            ports: Some((22, 40000)),
            msg_type: None,
        };
        assert!(sel.matches(Direction::Out, &t));
        assert!(!sel.matches(Direction::In, &t));
        let back = Traffic {
            src: t.dst,
            dst: t.src,
            ports: Some((40000, 22)),
            ..t
        };
        assert!(sel.matches(Direction::In, &back));
        assert!(!sel.matches(
            Direction::In,
            &Traffic {
                ports: None,
                ..back
            }
        ));
    }

    #[test]
    fn the_first_match_decides_and_unmatched_traffic_gets_the_default() {
        let t = Traffic {
            src: a("2001:db8::1"),
            dst: a("2001:db8::2"),
            proto: PROTO_UDP,
            ports: Some((1, 2)),
            msg_type: None,
        };
        let spd = Spd {
            policies: vec![
                Policy {
                    name: "udp".into(),
                    selectors: Selectors {
                        proto: Some(PROTO_UDP),
                        ..Selectors::ANY
                    },
                    action: Action::Discard,
                },
                Policy {
                    name: "all".into(),
                    selectors: Selectors::ANY,
                    action: Action::Bypass,
                },
            ],
            unmatched: Action::Discard,
        };
        assert_eq!(spd.decide(Direction::Out, &t), (Some(0), Action::Discard));
        let tcp = Traffic {
            proto: PROTO_TCP,
            ..t
        };
        assert_eq!(spd.decide(Direction::Out, &tcp), (Some(1), Action::Bypass));
        let empty = Spd {
            policies: vec![],
            unmatched: Action::Bypass,
        };
        assert_eq!(empty.decide(Direction::In, &tcp), (None, Action::Bypass));
    }
}
