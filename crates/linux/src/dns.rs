//! Home agent discovery through DNS (DSMIPv6 draft-06 section 2.1 / RFC 5555 section 3.4
//! style): by name (the AAAA and A records of one home agent) or by service (the SRV
//! record `mip6ha.ipv6.<domain>`, whose targets are looked up for AAAA and A). hickory-
//! resolver does the DNS work; the answers must name one physical home agent, so both
//! address families are taken from the same target.

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::Resolver;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// What to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaQuery {
    /// The home agent's name: its AAAA and A records.
    Name(String),
    /// The home domain: SRV `mip6ha.ipv6.<domain>`, then AAAA and A of the targets by
    /// priority (lowest first) and weight (highest first).
    Service(String),
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The resolver could not be set up (e.g. no usable /etc/resolv.conf).
    #[error("resolver: {0}")]
    Setup(std::io::Error),
    /// No answer gave both an IPv6 and an IPv4 address.
    #[error("no home agent with both an AAAA and an A record for {0}")]
    NotFound(String),
}

fn resolver(servers: &[IpAddr]) -> Result<Resolver, DnsError> {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    if servers.is_empty() {
        let (cfg, mut sys) = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| DnsError::Setup(std::io::Error::other(e.to_string())))?;
        sys.timeout = opts.timeout;
        sys.attempts = opts.attempts;
        Resolver::new(cfg, sys).map_err(DnsError::Setup)
    } else {
        let group = NameServerConfigGroup::from_ips_clear(servers, 53, true);
        Resolver::new(ResolverConfig::from_parts(None, vec![], group), opts)
            .map_err(DnsError::Setup)
    }
}

fn fqdn(n: &str) -> String {
    if n.ends_with('.') {
        n.to_string()
    } else {
        format!("{n}.")
    }
}

fn addresses(r: &Resolver, name: &str) -> (Option<Ipv6Addr>, Option<Ipv4Addr>) {
    let v6 = r
        .ipv6_lookup(name)
        .ok()
        .and_then(|l| l.iter().next().map(|a| a.0));
    let v4 = r
        .ipv4_lookup(name)
        .ok()
        .and_then(|l| l.iter().next().map(|a| a.0));
    (v6, v4)
}

/// Looks the home agent up; `servers` overrides the system's name servers when not empty.
pub fn discover(q: &HaQuery, servers: &[IpAddr]) -> Result<(Ipv6Addr, Ipv4Addr), DnsError> {
    let r = resolver(servers)?;
    let names = match q {
        HaQuery::Name(n) => vec![fqdn(n)],
        HaQuery::Service(d) => {
            let srv = format!("mip6ha.ipv6.{}", fqdn(d));
            let mut t: Vec<(u16, u16, String)> = r
                .srv_lookup(srv.as_str())
                .map(|l| {
                    l.iter()
                        .map(|s| (s.priority(), s.weight(), s.target().to_utf8()))
                        .collect()
                })
                .unwrap_or_default();
            t.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            t.into_iter().map(|x| x.2).collect()
        }
    };
    for n in &names {
        if let (Some(a6), Some(a4)) = addresses(&r, n) {
            return Ok((a6, a4));
        }
    }
    Err(DnsError::NotFound(match q {
        HaQuery::Name(n) => n.clone(),
        HaQuery::Service(d) => format!("mip6ha.ipv6.{d}"),
    }))
}
