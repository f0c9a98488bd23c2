//! IPv6 prefixes as configured by operators (`2001:db8::/48`).

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// An IPv6 prefix: address with the host bits cleared, and a length from 0 to 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Prefix {
    addr: Ipv6Addr,
    len: u8,
}

/// Why a prefix string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// No `/len` part.
    #[error("missing /length")]
    MissingLength,
    /// The address part is not an IPv6 address.
    #[error("not an IPv6 address")]
    BadAddress,
    /// The length is not a number from 0 to 128.
    #[error("prefix length must be 0..=128")]
    BadLength,
    /// Bits are set past the prefix length.
    #[error("host bits set past the prefix length")]
    HostBits,
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl Ipv6Prefix {
    /// Builds a prefix; fails when `len` > 128 or bits past `len` are set.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 128 {
            return Err(PrefixError::BadLength);
        }
        if u128::from(addr) & !mask(len) != 0 {
            return Err(PrefixError::HostBits);
        }
        Ok(Ipv6Prefix { addr, len })
    }

    /// The prefix address (host bits zero).
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for `::/0`, which contains every address.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when `a` lies inside this prefix.
    pub fn contains(&self, a: Ipv6Addr) -> bool {
        u128::from(a) & mask(self.len) == u128::from(self.addr)
    }

    /// The address made of this prefix and the low bits of `host` (bits past the length).
    pub fn with_host(&self, host: u128) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) | (host & !mask(self.len)))
    }
}

impl FromStr for Ipv6Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s.split_once('/').ok_or(PrefixError::MissingLength)?;
        let addr: Ipv6Addr = a.parse().map_err(|_| PrefixError::BadAddress)?;
        let len: u8 = l.parse().map_err(|_| PrefixError::BadLength)?;
        Ipv6Prefix::new(addr, len)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl serde::Serialize for Ipv6Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv6Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("invalid IPv6 prefix `{s}`: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contains() {
        let p: Ipv6Prefix = "fd00:1:2:3:4::/80".parse().unwrap();
        assert!(p.contains("fd00:1:2:3:4::1".parse().unwrap()));
        assert!(p.contains("fd00:1:2:3:4:ffff:ffff:ffff".parse().unwrap()));
        assert!(!p.contains("fd00:1:2:3:5::1".parse().unwrap()));
        assert_eq!(p.to_string(), "fd00:1:2:3:4::/80");
        assert_eq!(
            p.with_host(0xabcd_1234_5678),
            "fd00:1:2:3:4:abcd:1234:5678".parse::<Ipv6Addr>().unwrap()
        );
        let all: Ipv6Prefix = "::/0".parse().unwrap();
        assert!(all.contains(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn refuses() {
        assert_eq!(
            "fd00::1/64".parse::<Ipv6Prefix>(),
            Err(PrefixError::HostBits)
        );
        assert_eq!(
            "fd00::/129".parse::<Ipv6Prefix>(),
            Err(PrefixError::BadLength)
        );
        assert_eq!(
            "fd00::".parse::<Ipv6Prefix>(),
            Err(PrefixError::MissingLength)
        );
        assert_eq!("x/64".parse::<Ipv6Prefix>(), Err(PrefixError::BadAddress));
    }
}
