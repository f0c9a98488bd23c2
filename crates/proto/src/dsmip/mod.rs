//! Dual-Stack Mobile IPv6 (RFC 5555, seed 002) on the architecture of seed 001.
//!
//! Two layers, each with one module per end:
//!
//! | layer | home agent | mobile node |
//! |---|---|---|
//! | protocol module (RFC 6275 / RFC 5555 signalling state) | [`binding_cache::BindingCache`] | [`update_list::BindingUpdateList`] |
//! | the node: protocol module joined to the tunnel-interface module ([`tif`]) | [`home_agent::HomeAgent`] | [`mobile_node::MobileNode`] |
//!
//! The protocol modules take Binding Updates and Acknowledgements already parsed by
//! `m6t_wire::mh`, together with how they arrived (the tunnel-interface module records the
//! outer IPv4 source and UDP port for NAT detection), and say what to answer and how to
//! tunnel data. The nodes are what a driver runs: they take bytes, answer with a
//! [`Verdict`] or an [`Outbound`], and queue [`Transmit`]s and events.

use m6t_wire::Ipv6Prefix;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::str::FromStr;

pub mod binding_cache;
pub mod home_agent;
pub mod mobile_node;
pub mod protect;
pub mod seq;
pub mod tif;
pub mod update_list;

pub use tif::Encap;

/// What to do with a packet a node received from the network (`handle_udp`,
/// `handle_ip_in_ip`, `handle_captured`); `R` is the node's counter type.
#[must_use = "a verdict says where the packet goes: write ToTun's bytes to the TUN"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a, R> {
    /// Write this inner packet to the TUN.
    ToTun(&'a [u8]),
    /// Signalling, handled (answers are queued for `poll_transmit`).
    Handled,
    /// Dropped (or, for `NotSignal`, left to the kernel), counted under this reason.
    Drop(R),
}

/// What to do with a packet a node read from its TUN (`handle_from_tun`); `R` is the node's
/// counter type.
#[must_use = "an outbound verdict says how to send the packet"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound<R> {
    /// Send the packet with this encapsulation.
    Send(Encap),
    /// Send the node's protected bytes (`protected()`: the ESP packet IPsec made of the
    /// packet) with this encapsulation.
    Protected(Encap),
    /// Dropped, counted under this reason.
    Drop(R),
}

/// A signalling packet (Binding Update or Acknowledgement) a node asks its driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// As the payload of a UDP datagram from port 4191 (RFC 5555 section 4.1).
    Udp {
        /// Local IPv4 address to send from: the mobile node's care-of address; `None` on
        /// the home agent (its configured address).
        from: Option<Ipv4Addr>,
        /// Destination (the NAT's address and port when there is one).
        to: SocketAddrV4,
        /// The IPv6 packet.
        data: Vec<u8>,
    },
    /// An ESP packet (an authenticated keep-alive) in UDP from port 4500 (RFC 3948).
    EspUdp {
        /// Local IPv4 address to send from: the mobile node's care-of address.
        from: Option<Ipv4Addr>,
        /// Destination.
        to: SocketAddrV4,
        /// The ESP packet.
        data: Vec<u8>,
    },
    /// A whole IPv6 packet, extension headers included, to send as it is.
    Ipv6 {
        /// Local IPv6 address to send from: the mobile node's care-of address; `None` on
        /// the home agent.
        from: Option<Ipv6Addr>,
        /// Destination.
        to: Ipv6Addr,
        /// The packet.
        data: Vec<u8>,
    },
}

/// A mobile network prefix (RFC 3963 section 2): an IPv6 prefix carried in a Mobile Network
/// Prefix option, or an IPv4 one in an IPv4 Home Address option with the P flag (RFC 5555
/// section 3.1.1). Host bits are always clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NetPrefix {
    /// An IPv6 prefix.
    V6(Ipv6Addr, u8),
    /// An IPv4 prefix.
    V4(Ipv4Addr, u8),
}

fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

impl NetPrefix {
    /// An IPv6 prefix; `None` when `len` > 128 or host bits are set.
    pub fn v6(addr: Ipv6Addr, len: u8) -> Option<Self> {
        (len <= 128 && u128::from(addr) & !mask6(len) == 0).then_some(NetPrefix::V6(addr, len))
    }

    /// An IPv4 prefix; `None` when `len` > 32 or host bits are set.
    pub fn v4(addr: Ipv4Addr, len: u8) -> Option<Self> {
        (len <= 32 && u32::from(addr) & !mask4(len) == 0).then_some(NetPrefix::V4(addr, len))
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        match self {
            NetPrefix::V6(_, l) | NetPrefix::V4(_, l) => *l,
        }
    }

    /// True for a zero-length prefix (every address of its family).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The prefix address.
    pub fn addr(&self) -> IpAddr {
        match self {
            NetPrefix::V6(a, _) => IpAddr::V6(*a),
            NetPrefix::V4(a, _) => IpAddr::V4(*a),
        }
    }

    /// True when `a` lies inside this prefix.
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self, a) {
            (NetPrefix::V6(p, l), IpAddr::V6(a)) => u128::from(a) & mask6(*l) == u128::from(*p),
            (NetPrefix::V4(p, l), IpAddr::V4(a)) => u32::from(a) & mask4(*l) == u32::from(*p),
            _ => false,
        }
    }

    /// True when the two prefixes share an address.
    pub fn overlaps(&self, o: &NetPrefix) -> bool {
        let shorter = if self.len() <= o.len() { self } else { o };
        let longer = if self.len() <= o.len() { o } else { self };
        shorter.contains(longer.addr())
    }
}

impl From<Ipv6Prefix> for NetPrefix {
    fn from(p: Ipv6Prefix) -> Self {
        NetPrefix::V6(p.addr(), p.len())
    }
}

impl fmt::Display for NetPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len())
    }
}

impl FromStr for NetPrefix {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s.split_once('/').ok_or("missing /length")?;
        let len: u8 = l.parse().map_err(|_| "bad prefix length")?;
        match a.parse::<IpAddr>().map_err(|_| "not an IP address")? {
            IpAddr::V6(a) => NetPrefix::v6(a, len).ok_or("length above 128 or host bits set"),
            IpAddr::V4(a) => NetPrefix::v4(a, len).ok_or("length above 32 or host bits set"),
        }
    }
}

impl serde::Serialize for NetPrefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NetPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("invalid prefix `{s}`: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_contain_and_overlap() {
        let p6: NetPrefix = "2001:db8:77::/48".parse().unwrap();
        let p4: NetPrefix = "198.51.100.128/25".parse().unwrap();
        assert!(p6.contains("2001:db8:77:1::5".parse().unwrap()));
        assert!(!p6.contains("2001:db8:78::5".parse().unwrap()));
        assert!(!p6.contains("198.51.100.130".parse().unwrap()));
        assert!(p4.contains("198.51.100.130".parse().unwrap()));
        assert!(!p4.contains("198.51.100.127".parse().unwrap()));
        assert_eq!(p4.to_string(), "198.51.100.128/25");
        assert!(p4.overlaps(&"198.51.100.0/24".parse().unwrap()));
        assert!(!p4.overlaps(&"198.51.100.0/25".parse().unwrap()));
        assert!(!p4.overlaps(&p6));
        assert!("198.51.100.1/25".parse::<NetPrefix>().is_err());
        assert!("2001:db8::/129".parse::<NetPrefix>().is_err());
        assert!("2001:db8::".parse::<NetPrefix>().is_err());
        let j = serde_json::to_string(&p6).unwrap();
        assert_eq!(serde_json::from_str::<NetPrefix>(&j).unwrap(), p6);
    }
}
