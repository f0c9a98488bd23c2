//! What an IKE endpoint is told by its configuration: proposals, peers with their
//! identities and pre-shared keys, and the CHILD_SAs each peer may have (RFC 7296 section
//! 2.9's SPD entries, RFC 4301 section 4.4.3's Peer Authorization Database: RFC 4877
//! section 4.3 asks the home agent to tie each identity to the home address it may use).

use crate::body::{Identification, TrafficSelector};
use crate::suite::{ChildSuite, IkeSuite};
use m6t_ipsec::Mode;
use std::time::Duration;
use zeroize::Zeroizing;

/// An identity of the ID payloads (RFC 7296 section 3.5) in owned form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// ID_FQDN, e.g. `ha.example.org` (RFC 4877 section 4.3 for the HA).
    Fqdn(String),
    /// ID_RFC822_ADDR, `user@FQDN` (RFC 4877 section 4.3 for the MN).
    Email(String),
    /// ID_IPV4_ADDR or ID_IPV6_ADDR.
    Addr(std::net::IpAddr),
}

impl Identity {
    /// Reads swanctl's notation: an address, `user@domain`, or a domain name.
    pub fn parse(s: &str) -> Identity {
        if let Ok(a) = s.parse() {
            Identity::Addr(a)
        } else if s.contains('@') {
            Identity::Email(s.to_owned())
        } else {
            Identity::Fqdn(s.to_owned())
        }
    }

    /// The payload form.
    pub fn payload(&self) -> Identification<'_> {
        match self {
            Identity::Fqdn(s) => Identification::Fqdn(s.as_bytes()),
            Identity::Email(s) => Identification::Rfc822(s.as_bytes()),
            Identity::Addr(std::net::IpAddr::V4(a)) => Identification::Ipv4(*a),
            Identity::Addr(std::net::IpAddr::V6(a)) => Identification::Ipv6(*a),
        }
    }

    /// Whether a received ID payload names this identity.
    pub fn matches(&self, id: &Identification<'_>) -> bool {
        self.payload() == *id
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Fqdn(s) | Identity::Email(s) => f.write_str(s),
            Identity::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// Renders a received identity for logs (non-UTF-8 bytes escaped, long ones cut).
pub fn show_id(id: &Identification<'_>) -> String {
    let text = |b: &[u8]| {
        let s: String = String::from_utf8_lossy(&b[..b.len().min(64)])
            .escape_debug()
            .collect();
        s
    };
    match id {
        Identification::Ipv4(a) => a.to_string(),
        Identification::Ipv6(a) => a.to_string(),
        Identification::Fqdn(b) | Identification::Rfc822(b) => text(b),
        Identification::KeyId(b) => format!("keyid:{}", b.len()),
        Identification::Other { kind, .. } => format!("id type {kind}"),
    }
}

/// One CHILD_SA a peer may have: its mode, its selectors, its ESP proposals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildConfig {
    /// Name, for logs, status and the driver (which SPD entries it feeds).
    pub name: String,
    /// Transport (BU/BA, RFC 4877 section 4.4) or tunnel (payload, section 5).
    pub mode: Mode,
    /// Our side's selectors (TSi when we initiate, TSr when we respond).
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's side.
    pub remote_ts: Vec<TrafficSelector>,
    /// ESP proposals in preference order.
    pub proposals: Vec<ChildSuite>,
}

/// A peer: who it is, how it proves it, which CHILD_SAs it may have.
#[derive(Clone)]
pub struct PeerConfig {
    /// Name, for logs and status.
    pub name: String,
    /// Our identity toward it.
    pub local_id: Identity,
    /// Its identity (matched against its ID payload).
    pub remote_id: Identity,
    /// The shared secret of Shared Key Message Integrity Code authentication (section
    /// 2.15); empty: not accepted from the peer, not used by us. Never logged.
    pub psk: Zeroizing<Vec<u8>>,
    /// Our certificate and key: we authenticate with a digital signature (RFC 7427)
    /// instead of the pre-shared key.
    pub local_cert: Option<std::sync::Arc<crate::cert::Credential>>,
    /// The authorities the peer's certificate must come from; `None`: the peer may not
    /// authenticate with a certificate.
    pub trust: Option<std::sync::Arc<crate::cert::Trust>>,
    /// The CHILD_SAs: an initiator creates the first in IKE_AUTH (the others are for a
    /// later CREATE_CHILD_SA); a responder picks the first whose mode and selectors fit.
    pub children: Vec<ChildConfig>,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("name", &self.name)
            .field("local_id", &self.local_id)
            .field("remote_id", &self.remote_id)
            .field("psk", &"<not shown>")
            .field("local_cert", &self.local_cert)
            .field("trust", &self.trust.as_ref().map(|t| t.len()))
            .field("children", &self.children)
            .finish()
    }
}

/// The whole configuration of an endpoint.
#[derive(Debug, Clone)]
pub struct IkeConfig {
    /// IKE proposals in preference order (the initiator sends one proposal each; the
    /// responder accepts the first of the peer's that is among these).
    pub proposals: Vec<IkeSuite>,
    /// Peers.
    pub peers: Vec<PeerConfig>,
    /// First retransmission timeout of a request (section 2.1).
    pub retransmit_timeout: Duration,
    /// Each further timeout is this many times the one before.
    pub retransmit_base: f64,
    /// Retransmissions before the peer is declared dead (section 2.4).
    pub retransmit_tries: u32,
    /// Liveness check (section 2.4, "dead peer detection") after this long without a
    /// message from the peer; `None` never checks.
    pub dpd: Option<Duration>,
    /// NAT keep-alive interval when this end is behind a NAT (RFC 3948 section 4: 20 s).
    pub nat_keepalive: Duration,
    /// Use UDP encapsulation even when no NAT is detected (RFC 5555 section 5 for a
    /// DSMIPv6 MN behind a NAT; strongSwan's `encap = yes`): the NAT-D source hash is
    /// faked so that the peer sees a NAT (RFC 7296 section 2.23 allows this).
    pub force_encap: bool,
    /// Half-open responder SAs above which a COOKIE is required (section 2.6).
    pub cookie_threshold: usize,
    /// Half-open responder SAs above which new IKE_SA_INIT requests are dropped.
    pub half_open_max: usize,
    /// IKE SAs kept at most (a memory bound).
    pub max_sas: usize,
    /// How long a half-open SA may wait for its IKE_AUTH.
    pub half_open_timeout: Duration,
    /// IKE_SA_INIT requests per second one source address may have answered (statelessly
    /// with a COOKIE or an error, or with a new half-open SA); the rest are dropped before
    /// they are parsed. Section 2.6's cookies keep a flood from making state, not from
    /// costing the responder a reply each: a flood from one address must not take the
    /// responder's time from the others. 0: no budget.
    pub init_rate: u32,
    /// IKE_SA_INIT requests above `init_rate` one source may send at once.
    pub init_burst: u32,
    /// Source addresses whose budget is tracked at once (a memory bound); beyond it, new
    /// sources share one budget of `init_rate`.
    pub init_sources: usize,
    /// Rekey each CHILD_SA this long after it was made (section 2.8); `None` never.
    pub rekey_child: Option<Duration>,
    /// Rekey the IKE SA this long after it was made (section 2.18); `None` never.
    pub rekey_ike: Option<Duration>,
}

impl Default for IkeConfig {
    /// strongSwan-like defaults, tuned for links where a second is long: first
    /// retransmission after 2 s, then 3.6, 6.5, 11.7, 21 s (five tries, about 45 s); CHILD_SAs
    /// rekeyed every hour and the IKE SA every four, as strongSwan does.
    fn default() -> Self {
        IkeConfig {
            proposals: Vec::new(),
            peers: Vec::new(),
            retransmit_timeout: Duration::from_secs(2),
            retransmit_base: 1.8,
            retransmit_tries: 5,
            dpd: Some(Duration::from_secs(30)),
            nat_keepalive: Duration::from_secs(20),
            force_encap: false,
            cookie_threshold: 64,
            half_open_max: 1024,
            max_sas: 4096,
            half_open_timeout: Duration::from_secs(30),
            init_rate: 20,
            init_burst: 20,
            init_sources: 4096,
            rekey_child: Some(Duration::from_secs(3600)),
            rekey_ike: Some(Duration::from_secs(4 * 3600)),
        }
    }
}
