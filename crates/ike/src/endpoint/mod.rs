//! The IKEv2 machine (RFC 7296), sans-IO in the shape of quinn-proto: the driver passes in
//! datagrams with their addresses ([`Endpoint::handle`]) and the time, and takes out what to
//! send ([`Endpoint::poll_transmit`]), what happened ([`Endpoint::poll_event`]: IKE SAs and
//! CHILD_SAs up and down, each with the keys the IPsec crate's SAD needs) and when to wake
//! it next ([`Endpoint::poll_timeout`]). It reads no clock and no operating-system
//! randomness: its generator is seeded by the caller.
//!
//! What it does, by RFC 7296 section:
//! - 1.2: IKE_SA_INIT and IKE_AUTH as initiator and responder, with the first CHILD_SA;
//!   INVALID_KE_PAYLOAD answered and retried (section 1.2), NO_PROPOSAL_CHOSEN,
//!   AUTHENTICATION_FAILED, TS_UNACCEPTABLE sent and understood;
//! - 1.3.1 / 1.4: USE_TRANSPORT_MODE, INFORMATIONAL with Delete (IKE SA and CHILD_SAs) and
//!   empty liveness checks, both ways;
//! - 2.1 / 2.3 / 2.4: a window of one request, retransmission with exponential backoff,
//!   responses retransmitted for repeated requests, the peer declared dead after the last
//!   try, liveness checks after a quiet period;
//! - 2.6: stateless COOKIEs when half-open SAs pile up, and a hard cap beyond;
//! - 2.9: traffic selector narrowing ([`crate::ts`]);
//! - 2.15: pre-shared key authentication ([`crate::keys::psk_auth`]);
//! - 2.23 and RFC 3948: NAT detection, the move to port 4500 with the non-ESP marker, the
//!   peer address followed from authenticated messages, NAT keep-alives.
//!
//! - 1.3: CREATE_CHILD_SA, both roles ([`create_child`]): more CHILD_SAs, CHILD_SA and IKE
//!   SA rekeys, by time or on request;
//! - RFC 6275 section 11.7.1's K flag: an IKE SA that follows its mobile node's moves
//!   without an exchange ([`Endpoint::local_moved`], [`Endpoint::peer_moved`]).

use crate::body::TrafficSelectors;
use crate::body::{Auth, Delete, Identification, KeyExchange, Notify, TrafficSelector};
use crate::config::{show_id, IkeConfig, PeerConfig};
use crate::group::{Group, KeyPair};
use crate::header::{HeaderRepr, IkeHeader};
use crate::keys::{child_keymat, psk_auth, signed_octets, IkeKeys};
use crate::message::{Message, Payload};
use crate::sa::SaPayload;
use crate::sk::{open, seal, SkKeys};
use crate::suite::{choose, ChildSuite, IkeSuite};
use crate::{auth_method, exchange, flags, notify, protocol};
use m6t_ipsec::Mode;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha1::{Digest, Sha1};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

mod auth;
mod create_child;
mod restart;

use restart::{HINTED_GAP, HINTED_TRIES};

/// The NAT-T port (RFC 3948 section 2.2, RFC 7296 section 2.23).
pub const NAT_T_PORT: u16 = 4500;
/// The non-ESP marker before an IKE message on port 4500 (RFC 3948 section 2.2).
const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// SIGNATURE_HASH_ALGORITHMS data (RFC 7427 section 4): SHA2-256, the hash of the
/// signatures we make and accept.
const HASHES: [u8; 2] = crate::cert::HASH_SHA2_256.to_be_bytes();
/// Our nonces: 32 bytes, at least half the PRF's key size as section 2.10 asks.
const NONCE_LEN: usize = 32;
/// Traffic selectors kept from one payload (a bound on hostile lists).
const TS_LIMIT: usize = 16;
/// Requests waiting behind the one outstanding (window size 1, section 2.3).
const QUEUE_LIMIT: usize = 8;

/// Our handle of an IKE SA: our own SPI, unique in this endpoint.
pub type IkeSaId = u64;

/// A datagram to send: `payload` is the whole UDP payload, the non-ESP marker included on
/// port 4500.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Our address and port to send from.
    pub local: SocketAddr,
    /// The peer's.
    pub remote: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// One direction of a CHILD_SA: the SPI and its key material, laid out as
/// [`m6t_ipsec::Algorithm::keymat_len`] wants. `Debug` hides the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct SaHalf {
    /// The SPI (inbound: ours; outbound: the peer's).
    pub spi: u32,
    /// The keys (RFC 7296 section 2.17).
    pub keymat: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SaHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SaHalf {{ spi: {:#010x}, keymat: <not shown> }}",
            self.spi
        )
    }
}

/// A negotiated CHILD_SA pair, ready for the SAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSa {
    /// The IKE SA it belongs to.
    pub ike: IkeSaId,
    /// The peer's name in the configuration.
    pub peer: String,
    /// The child's name in the configuration.
    pub name: String,
    /// Transport or tunnel.
    pub mode: Mode,
    /// ESP algorithm and ESN.
    pub suite: ChildSuite,
    /// What we receive.
    pub inbound: SaHalf,
    /// What we send.
    pub outbound: SaHalf,
    /// Our selectors, as narrowed.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's selectors, as narrowed.
    pub remote_ts: Vec<TrafficSelector>,
    /// Our IKE address (the tunnel's local end).
    pub local: SocketAddr,
    /// The peer's IKE address (the tunnel's remote end, and with `udp_encap` the address
    /// and port ESP-in-UDP goes to).
    pub remote: SocketAddr,
    /// ESP in UDP 4500 (RFC 3948), because a NAT was detected or it was forced.
    pub udp_encap: bool,
    /// A rekey (section 1.3.3): the inbound SPI of the pair this one replaces. Outbound
    /// traffic moves to the new pair now; the old one is reported down when deleted.
    pub rekeys: Option<u32>,
}

/// Why an exchange or an SA failed, each with its own counter and log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No proposal acceptable to both (NO_PROPOSAL_CHOSEN, section 2.7).
    NoProposalChosen,
    /// AUTH did not verify, or the identity is unknown (AUTHENTICATION_FAILED, 2.15).
    AuthenticationFailed,
    /// The traffic selectors left nothing (TS_UNACCEPTABLE, section 2.9).
    TsUnacceptable,
    /// The peer did not answer the last retransmission (section 2.4).
    Timeout,
    /// The peer sent another error notify.
    PeerError(u16),
    /// The peer deleted the SA.
    PeerDeleted,
    /// We closed it.
    Closed,
    /// A half-open SA whose IKE_AUTH never came (section 2.6).
    HalfOpenExpired,
    /// Replaced by its rekeyed successor (section 1.3.2).
    Rekeyed,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoProposalChosen => f.write_str("NO_PROPOSAL_CHOSEN"),
            Failure::AuthenticationFailed => f.write_str("AUTHENTICATION_FAILED"),
            Failure::TsUnacceptable => f.write_str("TS_UNACCEPTABLE"),
            Failure::Timeout => f.write_str("peer did not answer (timeout)"),
            Failure::PeerError(n) => write!(f, "peer sent error notify {n}"),
            Failure::PeerDeleted => f.write_str("deleted by the peer"),
            Failure::Closed => f.write_str("closed"),
            Failure::HalfOpenExpired => f.write_str("half-open SA expired"),
            Failure::Rekeyed => f.write_str("replaced by its rekeyed successor"),
        }
    }
}

/// What the driver learns from the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IkeEvent {
    /// An IKE SA is established (IKE_AUTH done).
    IkeUp {
        /// Handle.
        ike: IkeSaId,
        /// Peer name.
        peer: String,
        /// Our address.
        local: SocketAddr,
        /// Its address.
        remote: SocketAddr,
        /// Algorithms.
        suite: IkeSuite,
        /// Whether a NAT was detected in front of us / in front of the peer.
        nat: (bool, bool),
    },
    /// A CHILD_SA is up: install both halves.
    ChildUp(Box<ChildSa>),
    /// A CHILD_SA is gone: remove both halves.
    ChildDown {
        /// Its IKE SA.
        ike: IkeSaId,
        /// Child name.
        name: String,
        /// Our inbound SPI.
        inbound_spi: u32,
        /// The peer's.
        outbound_spi: u32,
    },
    /// The peer's address changed (a NAT rebinding seen on an authenticated message,
    /// section 2.23): the CHILD_SAs' outer destination follows.
    PeerMoved {
        /// Handle.
        ike: IkeSaId,
        /// The new address.
        remote: SocketAddr,
    },
    /// The IKE SA was rekeyed (section 1.3.2): its CHILD_SAs now belong to `new`; `old`
    /// goes down with [`Failure::Rekeyed`] once deleted.
    IkeRekeyed {
        /// The handle that goes.
        old: IkeSaId,
        /// The handle of the successor.
        new: IkeSaId,
    },
    /// An IKE SA is gone (its CHILD_SAs were reported down first).
    IkeDown {
        /// Handle.
        ike: IkeSaId,
        /// Peer name.
        peer: String,
        /// Why.
        why: Failure,
    },
    /// An exchange failed: a setup that never came up, or a CHILD_SA refused inside an
    /// IKE_AUTH whose IKE SA stays up.
    Failed {
        /// Peer name, or its address when no configuration matched.
        peer: String,
        /// Why.
        why: Failure,
        /// One line for the log, with what the peer proposed or claimed.
        detail: String,
    },
}

/// Counters of the endpoint, every drop by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IkeCounters {
    /// IKE SAs established.
    pub ike_established: u64,
    /// CHILD_SAs established.
    pub child_established: u64,
    /// AUTHENTICATION_FAILED, sent or received.
    pub auth_failed: u64,
    /// NO_PROPOSAL_CHOSEN, sent or received.
    pub no_proposal_chosen: u64,
    /// TS_UNACCEPTABLE, sent or received.
    pub ts_unacceptable: u64,
    /// INVALID_KE_PAYLOAD, sent or received.
    pub invalid_ke: u64,
    /// COOKIEs sent (responder under load) or echoed (initiator).
    pub cookies: u64,
    /// Requests retransmitted.
    pub retransmits: u64,
    /// Peers declared dead after the last retransmission.
    pub timeouts: u64,
    /// Liveness checks sent.
    pub dpd_sent: u64,
    /// NAT keep-alives sent.
    pub keepalives: u64,
    /// Dropped: not a parseable IKE message.
    pub drop_malformed: u64,
    /// Dropped: SK integrity check failed (section 2.21.2: silently).
    pub drop_integrity: u64,
    /// Dropped: no IKE SA with these SPIs.
    pub drop_unknown_spi: u64,
    /// Dropped: a Message ID outside the window, or an unexpected response.
    pub drop_message_id: u64,
    /// Dropped: an IKE_SA_INIT beyond the half-open or SA limits.
    pub drop_half_open: u64,
    /// Dropped: an IKE_SA_INIT with a missing or wrong COOKIE while cookies are required.
    pub drop_cookie: u64,
    /// Dropped unread: an IKE_SA_INIT beyond its source address's budget (`init_rate`).
    pub drop_init_budget: u64,
    /// Dropped: a request of an exchange not valid in the SA's state.
    pub drop_state: u64,
    /// Half-open SAs expired.
    pub half_open_expired: u64,
    /// Unprotected INVALID_IKE_SPI answers sent to requests for unknown IKE SAs, and
    /// INVALID_SPI notices sent for ESP with unknown SPIs from peers without an IKE SA (we
    /// restarted).
    pub invalid_spi_sent: u64,
    /// Unprotected INVALID_IKE_SPI (answering a request of ours) or INVALID_SPI (naming one
    /// of our outbound ESP SPIs) received: that IKE SA's liveness check was started or
    /// hurried (the peer restarted, or a forgery: nothing else changes).
    pub invalid_spi_hints: u64,
}

impl IkeCounters {
    /// Every counter with its name, for status and metrics.
    pub fn iter(&self) -> [(&'static str, u64); 22] {
        [
            ("ike_established", self.ike_established),
            ("ike_child_established", self.child_established),
            ("ike_auth_failed", self.auth_failed),
            ("ike_no_proposal_chosen", self.no_proposal_chosen),
            ("ike_ts_unacceptable", self.ts_unacceptable),
            ("ike_invalid_ke", self.invalid_ke),
            ("ike_cookies", self.cookies),
            ("ike_retransmits", self.retransmits),
            ("ike_timeouts", self.timeouts),
            ("ike_dpd_sent", self.dpd_sent),
            ("ike_keepalives", self.keepalives),
            ("ike_drop_malformed", self.drop_malformed),
            ("ike_drop_integrity", self.drop_integrity),
            ("ike_drop_unknown_spi", self.drop_unknown_spi),
            ("ike_drop_message_id", self.drop_message_id),
            ("ike_drop_half_open", self.drop_half_open),
            ("ike_drop_cookie", self.drop_cookie),
            ("ike_drop_init_budget", self.drop_init_budget),
            ("ike_drop_state", self.drop_state),
            ("ike_half_open_expired", self.half_open_expired),
            ("ike_invalid_spi_sent", self.invalid_spi_sent),
            ("ike_invalid_spi_hints", self.invalid_spi_hints),
        ]
    }
}

/// Where an IKE SA stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IkeState {
    /// Initiator: IKE_SA_INIT request sent.
    InitSent,
    /// Initiator: IKE_AUTH request sent.
    AuthSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH (half-open).
    InitAnswered,
    /// Authenticated.
    Established,
    /// Our Delete sent, waiting for its answer.
    Deleting,
}

/// A summary of one IKE SA, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSaInfo {
    /// Handle.
    pub id: IkeSaId,
    /// Peer name (empty while a responder does not know it yet).
    pub peer: String,
    /// Whether we initiated it.
    pub initiator: bool,
    /// State.
    pub state: IkeState,
    /// Our address.
    pub local: SocketAddr,
    /// Its address.
    pub remote: SocketAddr,
    /// Algorithms, once chosen.
    pub suite: Option<IkeSuite>,
    /// CHILD_SAs (name, inbound SPI, outbound SPI).
    pub children: Vec<(String, u32, u32)>,
}

/// A request we will send when the window opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    Liveness,
    DeleteIke,
    /// A new CHILD_SA of the peer's child configuration with this index (section 1.3.1).
    CreateChild(usize),
    /// A rekey of the CHILD_SA with this inbound SPI (section 1.3.3).
    RekeyChild(u32),
    /// A rekey of the IKE SA (section 1.3.2).
    RekeyIke,
    /// A Delete of the CHILD_SA with this inbound SPI (section 1.4.1).
    DeleteChild(u32),
}

#[derive(Debug)]
#[cfg_attr(any(test, feature = "fixtures"), derive(Clone))]
struct Outstanding {
    message_id: u32,
    exchange: u8,
    bytes: Vec<u8>,
    tries: u32,
    next_at: Instant,
    /// What this request was, for its answer.
    what: Option<Queued>,
    /// An INVALID_IKE_SPI hint came: few, quick tries left (section 2.21.4).
    hinted: bool,
}

#[derive(Debug, Clone)]
struct Child {
    name: String,
    /// Index in the peer's children.
    config: usize,
    inbound: u32,
    outbound: u32,
    created: Instant,
    /// A rekey of ours is under way (section 1.3.3).
    rekeying: bool,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
}

/// What [`Endpoint::child_up`] records and reports.
struct NewChild<'a> {
    /// (peer, child) indices in the configuration.
    config: (usize, usize),
    suite: ChildSuite,
    inbound: u32,
    outbound: u32,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    /// Whether we initiated the exchange that created it.
    we_initiated: bool,
    /// The PFS shared secret of a CREATE_CHILD_SA with KE.
    g_ir: Option<&'a [u8]>,
    ni: &'a [u8],
    nr: &'a [u8],
    rekeys: Option<u32>,
}

/// The initiator's CHILD_SA request in IKE_AUTH, remembered until the answer.
#[derive(Debug, Clone)]
struct ChildRequest {
    config: usize,
    inbound: u32,
    tsi: Vec<TrafficSelector>,
    tsr: Vec<TrafficSelector>,
}

#[cfg_attr(any(test, feature = "fixtures"), derive(Clone))]
struct IkeSa {
    initiator: bool,
    peer: Option<usize>,
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
    state: IkeState,
    suite: Option<IkeSuite>,
    keypair: Option<KeyPair>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    keys: Option<IkeKeys>,
    /// The initiator's IKE_SA_INIT request and the responder's answer, as sent: AUTH signs
    /// them (section 2.15).
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    cookie: Option<Vec<u8>>,
    next_id: u32,
    peer_next_id: u32,
    outstanding: Option<Outstanding>,
    queue: VecDeque<Queued>,
    last_response: Option<(u32, Vec<u8>)>,
    nat_local: bool,
    nat_remote: bool,
    children: Vec<Child>,
    child_request: Option<ChildRequest>,
    /// Our CREATE_CHILD_SA under way.
    pending: Option<create_child::Pending>,
    /// Rekeyed: its CHILD_SAs live on in its successor (section 1.3.2).
    replaced: bool,
    created: Instant,
    last_heard: Instant,
    last_keepalive: Instant,
    /// When an INVALID_SPI notice last started a liveness check (see `restart`).
    last_notice_check: Option<Instant>,
}

impl IkeSa {
    /// An SA with nothing negotiated yet, to be completed by struct update.
    fn blank(
        initiator: bool,
        state: IkeState,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
    ) -> IkeSa {
        IkeSa {
            initiator,
            peer: None,
            spi_i: 0,
            spi_r: 0,
            local,
            remote,
            state,
            suite: None,
            keypair: None,
            ni: Vec::new(),
            nr: Vec::new(),
            keys: None,
            init_request: Vec::new(),
            init_response: Vec::new(),
            cookie: None,
            next_id: 0,
            peer_next_id: 0,
            outstanding: None,
            queue: VecDeque::new(),
            last_response: None,
            nat_local: false,
            nat_remote: false,
            children: Vec::new(),
            child_request: None,
            pending: None,
            replaced: false,
            created: now,
            last_heard: now,
            last_keepalive: now,
            last_notice_check: None,
        }
    }

    fn ours(&self) -> u64 {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    fn udp_encap(&self) -> bool {
        self.nat_local || self.nat_remote || self.local.port() == NAT_T_PORT
    }

    /// The keys that protect what we send and what we receive.
    fn sk_keys(&self, outbound: bool) -> Option<SkKeys<'_>> {
        let k = self.keys.as_ref()?;
        let from_initiator = self.initiator == outbound;
        Some(if from_initiator {
            SkKeys {
                encr: &k.sk_ei,
                integ: &k.sk_ai,
            }
        } else {
            SkKeys {
                encr: &k.sk_er,
                integ: &k.sk_ar,
            }
        })
    }
}

/// The IKE endpoint of one daemon: all its IKE SAs, as initiator and responder.
///
/// With the `fixtures` feature (test tools only) it is `Clone`, secrets included, so a fuzz
/// target can copy an established endpoint instead of negotiating one per input.
#[cfg_attr(any(test, feature = "fixtures"), derive(Clone))]
pub struct Endpoint {
    config: IkeConfig,
    rng: ChaCha20Rng,
    sas: HashMap<IkeSaId, IkeSa>,
    /// Responder half-open SAs by (initiator SPI, peer address), to answer a repeated
    /// IKE_SA_INIT with the same response (section 2.1).
    by_initiator: HashMap<(u64, SocketAddr), IkeSaId>,
    cookie_secret: [u8; 32],
    /// When the last unprotected INVALID_IKE_SPI answer went out.
    ike_notice_sent: Option<Instant>,
    /// When the last unprotected INVALID_SPI notice went out.
    esp_notice_sent: Option<Instant>,
    /// IKE_SA_INIT budgets by source address (tokens, last refill), and the one shared by
    /// sources beyond `init_sources`.
    init_budgets: HashMap<IpAddr, (f64, Instant)>,
    init_overflow: Option<(f64, Instant)>,
    /// Wall-clock time (Unix seconds) for certificate validity, set by the driver.
    unix_time: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<IkeEvent>,
    counters: IkeCounters,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("sas", &self.sas.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Why [`Endpoint::connect`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// No peer of that name in the configuration.
    #[error("no IKE peer named {0:?} in the configuration")]
    UnknownPeer(String),
    /// The peer has no CHILD_SA to create in IKE_AUTH.
    #[error("IKE peer {0:?} has no children")]
    NoChild(String),
    /// No IKE proposal configured.
    #[error("no IKE proposal configured")]
    NoProposal,
}

fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(spi_i.to_be_bytes());
    h.update(spi_r.to_be_bytes());
    match addr {
        SocketAddr::V4(a) => h.update(a.ip().octets()),
        SocketAddr::V6(a) => h.update(a.ip().octets()),
    }
    h.update(addr.port().to_be_bytes());
    h.finalize().into()
}

fn id_body(id: &Identification<'_>) -> Vec<u8> {
    let mut b = vec![0u8; id.emit_len()];
    // The buffer has exactly the room emit asks for.
    let _ = id.emit(&mut b);
    b
}

fn ts_bytes(ts: &[TrafficSelector]) -> Vec<u8> {
    let mut b = vec![0u8; TrafficSelectors::selectors_emit_len(ts)];
    let _ = TrafficSelectors::emit_selectors(ts, &mut b);
    b
}

fn ts_view(bytes: &[u8]) -> TrafficSelectors<'_> {
    // Our own encoding always parses.
    TrafficSelectors::parse(bytes)
        .unwrap_or_else(|_| TrafficSelectors::parse(&[0, 0, 0, 0]).expect("empty selector list"))
}

/// Whether `got` is one of `configured`, comparing D-H groups only where the exchange
/// carries one (CREATE_CHILD_SA with PFS; never IKE_AUTH, section 1.2).
fn offered(configured: &[ChildSuite], got: &ChildSuite, with_group: bool) -> bool {
    configured.iter().any(|c| {
        if with_group {
            c == got
        } else {
            c.without_group() == *got
        }
    })
}

fn notify_payload(kind: u16, data: &[u8]) -> Payload<'_> {
    Payload::Notify(Notify {
        protocol: 0,
        spi: &[],
        kind,
        data,
    })
}

impl Endpoint {
    /// An endpoint with `config`, its generator seeded with `seed` (the driver's
    /// randomness; a test's fixed bytes).
    pub fn new(config: IkeConfig, seed: [u8; 32]) -> Endpoint {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut cookie_secret = [0u8; 32];
        rng.fill_bytes(&mut cookie_secret);
        Endpoint {
            config,
            rng,
            sas: HashMap::new(),
            by_initiator: HashMap::new(),
            cookie_secret,
            ike_notice_sent: None,
            esp_notice_sent: None,
            init_budgets: HashMap::new(),
            init_overflow: None,
            unix_time: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: IkeCounters::default(),
        }
    }

    /// Sets the wall-clock time (Unix seconds) certificates are checked against (RFC 5280
    /// section 6.1.3's "current time"): the machine reads no clock, so a driver that
    /// authenticates with certificates calls this before [`Self::handle`].
    pub fn set_unix_time(&mut self, secs: u64) {
        self.unix_time = secs;
    }

    /// The configuration.
    pub fn config(&self) -> &IkeConfig {
        &self.config
    }

    /// The counters.
    pub fn counters(&self) -> &IkeCounters {
        &self.counters
    }

    /// Every IKE SA, for status.
    pub fn sas(&self) -> Vec<IkeSaInfo> {
        let mut v: Vec<IkeSaInfo> = self
            .sas
            .iter()
            .map(|(id, sa)| IkeSaInfo {
                id: *id,
                peer: sa
                    .peer
                    .map(|p| self.config.peers[p].name.clone())
                    .unwrap_or_default(),
                initiator: sa.initiator,
                state: sa.state,
                local: sa.local,
                remote: sa.remote,
                suite: sa.suite,
                children: sa
                    .children
                    .iter()
                    .map(|c| (c.name.clone(), c.inbound, c.outbound))
                    .collect(),
            })
            .collect();
        v.sort_by_key(|i| i.id);
        v
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<IkeEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas
            .values()
            .filter_map(|sa| self.next_deadline(sa))
            .min()
    }

    fn next_deadline(&self, sa: &IkeSa) -> Option<Instant> {
        let mut t: Option<Instant> = sa.outstanding.as_ref().map(|o| o.next_at);
        let mut at = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        match sa.state {
            IkeState::InitAnswered => at(sa.created + self.config.half_open_timeout),
            IkeState::Established => {
                if let (Some(d), None) = (self.config.dpd, &sa.outstanding) {
                    at(sa.last_heard + d);
                }
                if sa.nat_local {
                    at(sa.last_keepalive + self.config.nat_keepalive);
                }
                if sa.outstanding.is_none() {
                    if let Some(r) = self.config.rekey_ike {
                        at(sa.created + r);
                    }
                    if let Some(r) = self.config.rekey_child {
                        for c in sa.children.iter().filter(|c| !c.rekeying) {
                            at(c.created + r);
                        }
                    }
                }
            }
            _ => {}
        }
        t
    }

    fn fresh_spi(&mut self) -> u64 {
        loop {
            let s = self.rng.next_u64();
            if s != 0 && !self.sas.contains_key(&s) {
                return s;
            }
        }
    }

    fn fresh_child_spi(&mut self) -> u32 {
        loop {
            let s = self.rng.next_u32();
            // 1-255 are reserved by IANA (RFC 4303 section 2.1).
            if s > 255
                && !self
                    .sas
                    .values()
                    .any(|sa| sa.children.iter().any(|c| c.inbound == s))
            {
                return s;
            }
        }
    }

    fn nonce(&mut self) -> Vec<u8> {
        let mut n = vec![0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut n);
        n
    }

    fn send(&mut self, local: SocketAddr, remote: SocketAddr, msg: &[u8]) {
        let mut payload = Vec::with_capacity(msg.len() + 4);
        if local.port() == NAT_T_PORT {
            payload.extend_from_slice(&NON_ESP_MARKER);
        }
        payload.extend_from_slice(msg);
        self.transmits.push_back(Transmit {
            local,
            remote,
            payload,
        });
    }

    /// Starts an IKE SA with the configured peer `peer` from `local` to `remote`; the
    /// first CHILD_SA of that peer comes with IKE_AUTH.
    pub fn connect(
        &mut self,
        now: Instant,
        peer: &str,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<IkeSaId, ConnectError> {
        let p = self
            .config
            .peers
            .iter()
            .position(|c| c.name == peer)
            .ok_or_else(|| ConnectError::UnknownPeer(peer.to_owned()))?;
        if self.config.peers[p].children.is_empty() {
            return Err(ConnectError::NoChild(peer.to_owned()));
        }
        let group = self
            .config
            .proposals
            .first()
            .ok_or(ConnectError::NoProposal)?
            .group;
        let spi = self.fresh_spi();
        let keypair = KeyPair::generate(group, &mut self.rng);
        let ni = self.nonce();
        let mut sa = IkeSa {
            peer: Some(p),
            spi_i: spi,
            keypair: Some(keypair),
            ni,
            ..IkeSa::blank(true, IkeState::InitSent, local, remote, now)
        };
        self.send_sa_init(now, &mut sa);
        self.sas.insert(spi, sa);
        Ok(spi)
    }

    /// Sends (again) the IKE_SA_INIT request: with the current group, cookie and nonce.
    fn send_sa_init(&mut self, now: Instant, sa: &mut IkeSa) {
        let keypair = sa.keypair.as_ref().expect("initiator has a key pair");
        let group = keypair.group();
        // Our preferred group's proposals first, then the others (section 1.2: the KE
        // must be in the first proposal's group to avoid a round trip).
        let mut suites: Vec<IkeSuite> = self.config.proposals.clone();
        suites.sort_by_key(|s| s.group != group);
        let sa_payload = SaPayload {
            proposals: suites
                .iter()
                .enumerate()
                .map(|(i, s)| s.proposal(i as u8 + 1, Vec::new()))
                .collect(),
        };
        let src = if self.config.force_encap {
            // Section 2.23: a fake source hash makes the peer see a NAT and use UDP 4500.
            let mut h = [0u8; 20];
            self.rng.fill_bytes(&mut h);
            h
        } else {
            nat_hash(sa.spi_i, 0, sa.local)
        };
        let dst = nat_hash(sa.spi_i, 0, sa.remote);
        let mut payloads = Vec::new();
        if let Some(c) = &sa.cookie {
            payloads.push(notify_payload(notify::COOKIE, c));
        }
        payloads.push(Payload::Sa(sa_payload));
        payloads.push(Payload::Ke(KeyExchange {
            group: group.id(),
            data: keypair.public(),
        }));
        payloads.push(Payload::Nonce(&sa.ni));
        payloads.push(notify_payload(notify::NAT_DETECTION_SOURCE_IP, &src));
        payloads.push(notify_payload(notify::NAT_DETECTION_DESTINATION_IP, &dst));
        payloads.push(notify_payload(notify::SIGNATURE_HASH_ALGORITHMS, &HASHES));
        let m = Message {
            header: HeaderRepr {
                initiator_spi: sa.spi_i,
                responder_spi: 0,
                exchange_type: exchange::IKE_SA_INIT,
                flags: flags::I,
                message_id: 0,
            },
            payloads,
        };
        let mut bytes = vec![0u8; m.emit_len()];
        if m.emit(&mut bytes).is_err() {
            return;
        }
        sa.init_request = bytes.clone();
        sa.next_id = 1;
        self.send(sa.local, sa.remote, &bytes);
        sa.outstanding = Some(Outstanding {
            message_id: 0,
            exchange: exchange::IKE_SA_INIT,
            bytes,
            tries: 0,
            next_at: now + self.config.retransmit_timeout,
            what: None,
            hinted: false,
        });
    }

    /// This end moved: the IKE SA now runs from `local` (a mobile node's new care-of
    /// address). With the K flag of RFC 6275 section 11.7.1 (RFC 4877 section 4.4.1) the
    /// IKE SA survives the move and the next message simply leaves from there; the peer
    /// follows when it accepts the binding update ([`Self::peer_moved`]). No IKE exchange.
    pub fn local_moved(&mut self, ike: IkeSaId, local: SocketAddr) -> bool {
        let Some(sa) = self.sas.get_mut(&ike) else {
            return false;
        };
        let mut l = local;
        // Port 4500 stays 4500 (RFC 3948 section 2.1: both ends keep it once moved there).
        if sa.local.port() == NAT_T_PORT {
            l.set_port(NAT_T_PORT);
        }
        sa.local = l;
        true
    }

    /// The peer moved to `remote`, as a binding update accepted with the K flag says (RFC
    /// 4877 section 4.4.1: the home agent updates the IKE SA's peer address from the
    /// care-of address of the BU). No IKE exchange; the CHILD_SAs' outer destination is the
    /// tunnel module's business.
    pub fn peer_moved(&mut self, ike: IkeSaId, remote: SocketAddr) -> bool {
        let Some(sa) = self.sas.get_mut(&ike) else {
            return false;
        };
        sa.remote = remote;
        true
    }

    /// Sends a liveness check now (section 1.4: an empty INFORMATIONAL request), e.g.
    /// from a new address after [`Self::local_moved`], so that a peer behind which we moved
    /// follows (section 2.23) before its own checks would.
    pub fn check_liveness(&mut self, now: Instant, ike: IkeSaId) -> bool {
        self.with_sa(now, ike, |_, _| Some(Queued::Liveness))
    }

    /// The established IKE SA with the configured peer `peer`, if any (what a mobile node
    /// looks up after a move).
    pub fn sa_with(&self, peer: &str) -> Option<IkeSaId> {
        self.sas
            .iter()
            .find(|(_, sa)| {
                sa.state == IkeState::Established
                    && sa.peer.is_some_and(|p| self.config.peers[p].name == peer)
            })
            .map(|(id, _)| *id)
    }

    /// Deletes an IKE SA and its CHILD_SAs with the peer (section 1.4.1); the events come
    /// when the peer answers, or when it does not.
    pub fn close(&mut self, now: Instant, ike: IkeSaId) {
        if let Some(mut sa) = self.sas.remove(&ike) {
            if sa.state == IkeState::Established {
                self.enqueue(now, &mut sa, Queued::DeleteIke);
                self.sas.insert(ike, sa);
            } else {
                self.teardown(sa, Failure::Closed);
            }
        }
    }

    fn enqueue(&mut self, now: Instant, sa: &mut IkeSa, q: Queued) {
        if sa.outstanding.is_none() {
            self.send_queued(now, sa, q);
        } else if sa.queue.len() < QUEUE_LIMIT && !sa.queue.contains(&q) {
            sa.queue.push_back(q);
        }
    }

    fn send_queued(&mut self, now: Instant, sa: &mut IkeSa, q: Queued) {
        let ispi;
        let del = match q {
            Queued::Liveness => {
                self.counters.dpd_sent += 1;
                None
            }
            Queued::DeleteIke => {
                sa.state = IkeState::Deleting;
                ispi = Vec::new();
                Some(Delete {
                    protocol: protocol::IKE,
                    spi_size: 0,
                    spis: &ispi,
                })
            }
            Queued::DeleteChild(inbound) => {
                ispi = inbound.to_be_bytes().to_vec();
                Some(Delete {
                    protocol: protocol::ESP,
                    spi_size: 4,
                    spis: &ispi,
                })
            }
            Queued::CreateChild(_) | Queued::RekeyChild(_) | Queued::RekeyIke => {
                self.send_create_child(now, sa, q);
                return;
            }
        };
        let payloads: Vec<Payload> = del.into_iter().map(Payload::Delete).collect();
        self.send_request(now, sa, exchange::INFORMATIONAL, &payloads, Some(q));
    }

    fn send_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        exchange_type: u8,
        payloads: &[Payload<'_>],
        what: Option<Queued>,
    ) {
        let header = HeaderRepr {
            initiator_spi: sa.spi_i,
            responder_spi: sa.spi_r,
            exchange_type,
            flags: if sa.initiator { flags::I } else { 0 },
            message_id: sa.next_id,
        };
        let (Some(suite), Some(keys)) = (sa.suite, sa.sk_keys(true)) else {
            return;
        };
        let Ok(bytes) = seal(&suite, keys, &header, payloads, &mut self.rng) else {
            return;
        };
        self.send(sa.local, sa.remote, &bytes);
        sa.outstanding = Some(Outstanding {
            message_id: sa.next_id,
            exchange: exchange_type,
            bytes,
            tries: 0,
            next_at: now + self.config.retransmit_timeout,
            what,
            hinted: false,
        });
        sa.next_id = sa.next_id.wrapping_add(1);
    }

    fn send_response(&mut self, sa: &mut IkeSa, exchange_type: u8, payloads: &[Payload<'_>]) {
        let header = HeaderRepr {
            initiator_spi: sa.spi_i,
            responder_spi: sa.spi_r,
            exchange_type,
            flags: flags::R | if sa.initiator { flags::I } else { 0 },
            message_id: sa.peer_next_id,
        };
        let (Some(suite), Some(keys)) = (sa.suite, sa.sk_keys(true)) else {
            return;
        };
        let Ok(bytes) = seal(&suite, keys, &header, payloads, &mut self.rng) else {
            return;
        };
        self.send(sa.local, sa.remote, &bytes);
        sa.last_response = Some((sa.peer_next_id, bytes));
        sa.peer_next_id = sa.peer_next_id.wrapping_add(1);
    }

    /// Takes one datagram received on `local` from `remote` (the whole UDP payload; on
    /// port 4500 the non-ESP marker is checked and removed here, and a NAT keep-alive is
    /// ignored).
    pub fn handle(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, datagram: &[u8]) {
        let data = if local.port() == NAT_T_PORT {
            if datagram == [0xff] {
                return; // RFC 3948 section 2.3: a keep-alive, nothing to do.
            }
            match datagram.strip_prefix(&NON_ESP_MARKER[..]) {
                Some(d) => d,
                None => {
                    // ESP: the driver's business, not ours.
                    self.counters.drop_malformed += 1;
                    return;
                }
            }
        } else {
            datagram
        };
        let Ok(h) = IkeHeader::new_checked(data) else {
            self.counters.drop_malformed += 1;
            return;
        };
        let hdr = HeaderRepr::parse(&h);
        // Section 2.21.4: the peer restarted and tells us so about our ESP, without an IKE
        // SA to protect the notice.
        if hdr.exchange_type == exchange::INFORMATIONAL && hdr.flags & flags::R == 0 {
            if let Ok(m) = Message::parse(data) {
                if self.invalid_spi_notice(now, remote, &m) {
                    return;
                }
            }
        }
        if hdr.exchange_type == exchange::IKE_SA_INIT
            && hdr.flags & flags::R == 0
            && hdr.responder_spi == 0
        {
            self.respond_sa_init(now, local, remote, data, &hdr);
            return;
        }
        let ours = if hdr.flags & flags::I != 0 {
            hdr.responder_spi
        } else {
            hdr.initiator_spi
        };
        let from_initiator = hdr.flags & flags::I != 0;
        let Some(mut sa) = self.sas.remove(&ours) else {
            self.counters.drop_unknown_spi += 1;
            // Section 2.21.4: a request for an IKE SA we do not know (we restarted and
            // forgot it) may be answered, unprotected, with INVALID_IKE_SPI, which the peer
            // takes as a hint to check liveness. At most ten a second: it costs a reply.
            if hdr.flags & flags::R == 0 && Self::notice_allowed(&mut self.ike_notice_sent, now) {
                self.counters.invalid_spi_sent += 1;
                let m = Message {
                    header: HeaderRepr {
                        // A response; I set when the request came from a responder.
                        flags: flags::R | if from_initiator { 0 } else { flags::I },
                        ..hdr
                    },
                    payloads: vec![notify_payload(notify::INVALID_IKE_SPI, &[])],
                };
                let mut bytes = vec![0u8; m.emit_len()];
                if m.emit(&mut bytes).is_ok() {
                    self.send(local, remote, &bytes);
                }
            }
            return;
        };
        // The I flag must say the peer is the other role, and the other SPI must match
        // once known (an IKE_SA_INIT response brings it).
        let other_ok = if sa.initiator {
            !from_initiator
                && (sa.spi_r == hdr.responder_spi
                    || (sa.state == IkeState::InitSent
                        && hdr.exchange_type == exchange::IKE_SA_INIT))
        } else {
            from_initiator && sa.spi_i == hdr.initiator_spi
        };
        if !other_ok {
            self.counters.drop_unknown_spi += 1;
            self.sas.insert(ours, sa);
            return;
        }
        let keep = if hdr.flags & flags::R != 0 {
            self.on_response(now, &mut sa, local, remote, data, &hdr)
        } else {
            self.on_request(now, &mut sa, local, remote, data, &hdr)
        };
        if keep {
            self.sas.insert(ours, sa);
        }
    }

    /// Section 2.6: the cookie is a hash of the initiator's nonce, address and SPI with a
    /// secret of ours, so checking it needs no state.
    fn cookie_for(&self, ni: &[u8], remote: SocketAddr, spi_i: u64) -> Vec<u8> {
        let mut h = Sha1::new();
        h.update(ni);
        match remote {
            SocketAddr::V4(a) => h.update(a.ip().octets()),
            SocketAddr::V6(a) => h.update(a.ip().octets()),
        }
        h.update(spi_i.to_be_bytes());
        h.update(self.cookie_secret);
        let mut c = vec![0u8; 4]; // a version of the secret, section 2.6: always 0 here
        c.extend_from_slice(&h.finalize());
        c
    }

    fn half_open(&self) -> usize {
        self.sas
            .values()
            .filter(|s| s.state == IkeState::InitAnswered)
            .count()
    }

    /// An unauthenticated answer to an IKE_SA_INIT request that creates no state: an
    /// error notify or a COOKIE, with responder SPI 0.
    fn answer_init_stateless(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        spi_i: u64,
        kind: u16,
        data: &[u8],
    ) {
        let m = Message {
            header: HeaderRepr {
                initiator_spi: spi_i,
                responder_spi: 0,
                exchange_type: exchange::IKE_SA_INIT,
                flags: flags::R,
                message_id: 0,
            },
            payloads: vec![notify_payload(kind, data)],
        };
        let mut bytes = vec![0u8; m.emit_len()];
        if m.emit(&mut bytes).is_ok() {
            self.send(local, remote, &bytes);
        }
    }

    /// Takes one IKE_SA_INIT from `src`'s budget (a token bucket of `init_rate` per second,
    /// `init_burst` deep, refilled with the time elapsed at sub-second resolution); false
    /// when it is empty.
    fn init_budget(&mut self, now: Instant, src: IpAddr) -> bool {
        let rate = f64::from(self.config.init_rate);
        if rate == 0.0 {
            return true;
        }
        let burst = f64::from(self.config.init_burst.max(1));
        let take = |b: &mut (f64, Instant)| {
            let dt = now.saturating_duration_since(b.1).as_secs_f64();
            b.0 = (b.0 + dt * rate).min(burst);
            b.1 = now;
            if b.0 >= 1.0 {
                b.0 -= 1.0;
                true
            } else {
                false
            }
        };
        if !self.init_budgets.contains_key(&src)
            && self.init_budgets.len() >= self.config.init_sources
        {
            // Forget the sources whose budget has refilled: they are where a new one starts.
            self.init_budgets.retain(|_, b| {
                b.0 + now.saturating_duration_since(b.1).as_secs_f64() * rate < burst
            });
        }
        if let Some(b) = self.init_budgets.get_mut(&src) {
            return take(b);
        }
        if self.init_budgets.len() < self.config.init_sources {
            let mut b = (burst, now);
            let ok = take(&mut b);
            self.init_budgets.insert(src, b);
            return ok;
        }
        take(self.init_overflow.get_or_insert((burst, now)))
    }

    fn respond_sa_init(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
        hdr: &HeaderRepr,
    ) {
        if hdr.message_id != 0 {
            self.counters.drop_message_id += 1;
            return;
        }
        if !self.init_budget(now, remote.ip()) {
            self.counters.drop_init_budget += 1;
            return;
        }
        // A repeated request: the same answer again (section 2.1), no new state.
        if let Some(id) = self.by_initiator.get(&(hdr.initiator_spi, remote)) {
            if let Some(sa) = self.sas.get(id) {
                if sa.init_request == data {
                    let resp = sa.init_response.clone();
                    let l = sa.local;
                    self.send(l, remote, &resp);
                } else {
                    self.counters.drop_state += 1;
                }
                return;
            }
        }
        let Ok(m) = Message::parse(data) else {
            self.counters.drop_malformed += 1;
            return;
        };
        let (mut sa_p, mut ke, mut ni) = (None, None, None);
        for p in &m.payloads {
            match p {
                Payload::Sa(s) => sa_p = Some(s),
                Payload::Ke(k) => ke = Some(*k),
                Payload::Nonce(n) => ni = Some(*n),
                _ => {}
            }
        }
        let (Some(sa_p), Some(ke), Some(ni)) = (sa_p, ke, ni) else {
            self.counters.drop_malformed += 1;
            return;
        };
        let half_open = self.half_open();
        if half_open >= self.config.half_open_max || self.sas.len() >= self.config.max_sas {
            self.counters.drop_half_open += 1;
            return;
        }
        if half_open >= self.config.cookie_threshold {
            let want = self.cookie_for(ni, remote, hdr.initiator_spi);
            match m.notify(notify::COOKIE) {
                Some(n) if n.data == want.as_slice() => {}
                Some(_) => {
                    self.counters.drop_cookie += 1;
                    return;
                }
                None => {
                    self.counters.cookies += 1;
                    self.answer_init_stateless(
                        local,
                        remote,
                        hdr.initiator_spi,
                        notify::COOKIE,
                        &want,
                    );
                    return;
                }
            }
        }
        let accepted = &self.config.proposals;
        let Some((chosen, suite)) = choose(&sa_p.proposals, |c| {
            IkeSuite::from_single(c).filter(|s| accepted.contains(s))
        }) else {
            self.counters.no_proposal_chosen += 1;
            self.events.push_back(IkeEvent::Failed {
                peer: remote.to_string(),
                why: Failure::NoProposalChosen,
                detail: format!(
                    "IKE_SA_INIT from {remote}: none of its {} proposals is among ours ({})",
                    sa_p.proposals.len(),
                    self.config
                        .proposals
                        .iter()
                        .map(IkeSuite::name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
            self.answer_init_stateless(
                local,
                remote,
                hdr.initiator_spi,
                notify::NO_PROPOSAL_CHOSEN,
                &[],
            );
            return;
        };
        if ke.group != suite.group.id() {
            self.counters.invalid_ke += 1;
            let g = suite.group.id().to_be_bytes();
            self.answer_init_stateless(
                local,
                remote,
                hdr.initiator_spi,
                notify::INVALID_KE_PAYLOAD,
                &g,
            );
            return;
        }
        let keypair = KeyPair::generate(suite.group, &mut self.rng);
        let Ok(shared) = keypair.shared(ke.data) else {
            self.counters.drop_malformed += 1;
            return;
        };
        let spi_r = self.fresh_spi();
        let nr = self.nonce();
        let keys = IkeKeys::new(&suite, &shared, ni, &nr, hdr.initiator_spi, spi_r);
        // NAT detection (section 2.23): the peer's source hash against the address we see,
        // its destination hash against ours.
        let nat_remote = match m.notify(notify::NAT_DETECTION_SOURCE_IP) {
            Some(n) => n.data != nat_hash(hdr.initiator_spi, 0, remote),
            None => false,
        };
        let nat_local = match m.notify(notify::NAT_DETECTION_DESTINATION_IP) {
            Some(n) => n.data != nat_hash(hdr.initiator_spi, 0, local),
            None => false,
        };
        let src = nat_hash(hdr.initiator_spi, spi_r, local);
        let dst = nat_hash(hdr.initiator_spi, spi_r, remote);
        // The peer is unknown until IKE_AUTH: ask for certificates from every CA trusted
        // for some peer (section 3.7).
        let certreq: Vec<u8> = self
            .config
            .peers
            .iter()
            .filter_map(|p| p.trust.as_ref())
            .flat_map(|t| t.certreq())
            .collect();
        let resp = Message {
            header: HeaderRepr {
                initiator_spi: hdr.initiator_spi,
                responder_spi: spi_r,
                exchange_type: exchange::IKE_SA_INIT,
                flags: flags::R,
                message_id: 0,
            },
            payloads: vec![
                Payload::Sa(SaPayload {
                    proposals: vec![chosen],
                }),
                Payload::Ke(KeyExchange {
                    group: suite.group.id(),
                    data: keypair.public(),
                }),
                Payload::Nonce(&nr),
                notify_payload(notify::NAT_DETECTION_SOURCE_IP, &src),
                notify_payload(notify::NAT_DETECTION_DESTINATION_IP, &dst),
                notify_payload(notify::SIGNATURE_HASH_ALGORITHMS, &HASHES),
            ],
        };
        let mut resp = resp;
        if !certreq.is_empty() {
            resp.payloads.push(Payload::CertReq(crate::body::Cert {
                encoding: auth::CERT_X509_SIGNATURE,
                data: &certreq,
            }));
        }
        let mut bytes = vec![0u8; resp.emit_len()];
        if resp.emit(&mut bytes).is_err() {
            return;
        }
        self.send(local, remote, &bytes);
        let sa = IkeSa {
            spi_i: hdr.initiator_spi,
            spi_r,
            suite: Some(suite),
            ni: ni.to_vec(),
            nr,
            keys: Some(keys),
            init_request: data.to_vec(),
            init_response: bytes,
            peer_next_id: 1,
            nat_local,
            nat_remote,
            ..IkeSa::blank(false, IkeState::InitAnswered, local, remote, now)
        };
        self.by_initiator.insert((hdr.initiator_spi, remote), spi_r);
        self.sas.insert(spi_r, sa);
    }

    /// Checks and decrypts the SK payload of a message from the peer with the SA's keys,
    /// counting why when it cannot (no keys yet, or the integrity check failed: section
    /// 2.21.2, dropped without an answer).
    fn open_sk(&mut self, sa: &IkeSa, data: &[u8]) -> Option<crate::sk::Opened> {
        let (Some(suite), Some(keys)) = (sa.suite, sa.sk_keys(false)) else {
            self.counters.drop_state += 1;
            return None;
        };
        match open(&suite, keys, data) {
            Ok(o) => Some(o),
            Err(_) => {
                self.counters.drop_integrity += 1;
                None
            }
        }
    }

    /// A request from the peer (section 2.3: in order, one at a time; a repeat gets the
    /// same response again). Returns whether the SA lives on.
    fn on_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
        hdr: &HeaderRepr,
    ) -> bool {
        if let Some((id, bytes)) = &sa.last_response {
            if hdr.message_id == *id {
                // Only a request that authenticates earns a retransmitted answer.
                if let (Some(suite), Some(k)) = (sa.suite, sa.sk_keys(false)) {
                    if open(&suite, k, data).is_ok() {
                        let b = bytes.clone();
                        self.send(sa.local, sa.remote, &b);
                    }
                }
                return true;
            }
        }
        if hdr.message_id != sa.peer_next_id {
            self.counters.drop_message_id += 1;
            return true;
        }
        let Some(opened) = self.open_sk(sa, data) else {
            return true;
        };
        let Ok(inner) = Payload::parse_chain(opened.first_inner, &opened.plain) else {
            self.counters.drop_malformed += 1;
            return true;
        };
        // Authenticated: the peer is alive, and may have moved behind its NAT (2.23).
        sa.last_heard = now;
        self.follow_peer(sa, local, remote);
        match (hdr.exchange_type, sa.state) {
            (exchange::IKE_AUTH, IkeState::InitAnswered) => self.respond_auth(now, sa, &inner),
            (exchange::INFORMATIONAL, IkeState::Established | IkeState::Deleting) => {
                self.respond_informational(sa, &inner)
            }
            (exchange::CREATE_CHILD_SA, IkeState::Established) => {
                self.respond_create_child(now, sa, &inner)
            }
            _ => {
                self.counters.drop_state += 1;
                true
            }
        }
    }

    fn follow_peer(&mut self, sa: &mut IkeSa, local: SocketAddr, remote: SocketAddr) {
        if sa.remote != remote && (sa.nat_remote || local.port() == NAT_T_PORT) {
            sa.remote = remote;
            sa.local = local;
            if sa.state == IkeState::Established {
                self.events.push_back(IkeEvent::PeerMoved {
                    ike: sa.ours(),
                    remote,
                });
            }
        } else if sa.local.port() != local.port() && local.port() == NAT_T_PORT {
            sa.local = local;
        }
    }

    fn respond_auth(&mut self, now: Instant, sa: &mut IkeSa, inner: &[Payload<'_>]) -> bool {
        let mut idi = None;
        let mut cert = None;
        let mut auth = None;
        let mut child_sa = None;
        let (mut tsi, mut tsr) = (None, None);
        let mut transport = false;
        for p in inner {
            match p {
                Payload::IdI(i) => idi = Some(*i),
                Payload::Auth(a) => auth = Some(*a),
                Payload::Cert(c) if cert.is_none() => cert = Some(*c),
                Payload::Sa(s) => child_sa = Some(s),
                Payload::TsI(t) => tsi = Some(*t),
                Payload::TsR(t) => tsr = Some(*t),
                Payload::Notify(n) if n.kind == notify::USE_TRANSPORT_MODE => transport = true,
                _ => {}
            }
        }
        let (Some(idi), Some(auth)) = (idi, auth) else {
            self.counters.drop_malformed += 1;
            self.send_response(
                sa,
                exchange::IKE_AUTH,
                &[notify_payload(notify::INVALID_SYNTAX, &[])],
            );
            self.forget(sa);
            return false;
        };
        let peer = self
            .config
            .peers
            .iter()
            .position(|p| p.remote_id.matches(&idi));
        let verified = match peer {
            None => Err(String::new()),
            Some(p) => {
                let keys = sa.keys.as_ref().expect("keys after IKE_SA_INIT");
                self.check_auth(
                    &self.config.peers[p],
                    &auth,
                    cert.as_ref(),
                    &idi,
                    &sa.init_request,
                    &sa.nr,
                    &keys.sk_pi,
                )
            }
        };
        let (Some(p), Ok(())) = (peer, &verified) else {
            self.counters.auth_failed += 1;
            self.events.push_back(IkeEvent::Failed {
                peer: peer.map_or_else(
                    || sa.remote.to_string(),
                    |p| self.config.peers[p].name.clone(),
                ),
                why: Failure::AuthenticationFailed,
                detail: match peer {
                    None => format!(
                        "IKE_AUTH from {}: identity {:?} is not a configured peer",
                        sa.remote,
                        show_id(&idi)
                    ),
                    Some(_) => format!(
                        "IKE_AUTH from {}: identity {:?} {}",
                        sa.remote,
                        show_id(&idi),
                        verified.as_ref().err().map_or("", String::as_str)
                    ),
                },
            });
            self.send_response(
                sa,
                exchange::IKE_AUTH,
                &[notify_payload(notify::AUTHENTICATION_FAILED, &[])],
            );
            self.forget(sa);
            return false;
        };
        sa.peer = Some(p);
        let pc: PeerConfig = self.config.peers[p].clone();
        let idr = pc.local_id.payload();
        let sk_pr = sa
            .keys
            .as_ref()
            .expect("keys after IKE_SA_INIT")
            .sk_pr
            .clone();
        let my_auth = self.our_auth(&pc, &sa.init_response, &sa.ni, &sk_pr, &id_body(&idr));
        sa.state = IkeState::Established;
        self.by_initiator.remove(&(sa.spi_i, sa.remote));
        self.counters.ike_established += 1;
        self.events.push_back(IkeEvent::IkeUp {
            ike: sa.ours(),
            peer: pc.name.clone(),
            local: sa.local,
            remote: sa.remote,
            suite: sa.suite.expect("suite"),
            nat: (sa.nat_local, sa.nat_remote),
        });
        let mut out = vec![Payload::IdR(idr)];
        if let Some(c) = &my_auth.cert {
            out.push(Payload::Cert(crate::body::Cert {
                encoding: auth::CERT_X509_SIGNATURE,
                data: c,
            }));
        }
        out.push(Payload::Auth(Auth {
            method: my_auth.method,
            data: &my_auth.data,
        }));
        // The CHILD_SA (section 1.2): a failure here leaves the IKE SA up.
        let child = match (child_sa, tsi, tsr) {
            (Some(s), Some(i), Some(r)) => {
                let tsi: Vec<_> = i.iter().take(TS_LIMIT).collect();
                let tsr: Vec<_> = r.iter().take(TS_LIMIT).collect();
                self.pick_child(&pc, &s.proposals, &tsi, &tsr, transport, false)
            }
            _ => Err((
                notify::INVALID_SYNTAX,
                Failure::PeerError(notify::INVALID_SYNTAX),
                String::from("no SA, TSi or TSr"),
            )),
        };
        match child {
            Ok((ci, chosen, suite, peer_spi, ntsi, ntsr)) => {
                let inbound = self.fresh_child_spi();
                let mut prop = chosen;
                prop.spi = inbound.to_be_bytes().to_vec();
                let tsi_b = ts_bytes(&ntsi);
                let tsr_b = ts_bytes(&ntsr);
                if transport {
                    out.push(notify_payload(notify::USE_TRANSPORT_MODE, &[]));
                }
                out.push(Payload::Sa(SaPayload {
                    proposals: vec![prop],
                }));
                out.push(Payload::TsI(ts_view(&tsi_b)));
                out.push(Payload::TsR(ts_view(&tsr_b)));
                self.send_response(sa, exchange::IKE_AUTH, &out);
                let (ni, nr) = (sa.ni.clone(), sa.nr.clone());
                self.child_up(
                    now,
                    sa,
                    NewChild {
                        config: (p, ci),
                        suite,
                        inbound,
                        outbound: peer_spi,
                        local_ts: ntsr,
                        remote_ts: ntsi,
                        we_initiated: false,
                        g_ir: None,
                        ni: &ni,
                        nr: &nr,
                        rekeys: None,
                    },
                );
            }
            Err((kind, why, detail)) => {
                out.push(notify_payload(kind, &[]));
                self.send_response(sa, exchange::IKE_AUTH, &out);
                self.events.push_back(IkeEvent::Failed {
                    peer: pc.name.clone(),
                    why,
                    detail,
                });
            }
        }
        true
    }

    /// The responder's choice of CHILD_SA configuration (section 2.9): the first of the
    /// peer's children with the requested mode, an acceptable proposal and selectors left
    /// after narrowing.
    #[allow(clippy::type_complexity)]
    fn pick_child(
        &mut self,
        pc: &PeerConfig,
        proposals: &[crate::sa::Proposal],
        tsi: &[TrafficSelector],
        tsr: &[TrafficSelector],
        transport: bool,
        pfs: bool,
    ) -> Result<
        (
            usize,
            crate::sa::Proposal,
            ChildSuite,
            u32,
            Vec<TrafficSelector>,
            Vec<TrafficSelector>,
        ),
        (u16, Failure, String),
    > {
        let mut any_proposal = false;
        for (ci, cc) in pc.children.iter().enumerate() {
            if (cc.mode == Mode::Transport) != transport {
                continue;
            }
            let Some((chosen, (suite, spi))) = choose(proposals, |c| {
                ChildSuite::from_single(c)
                    .filter(|(s, spi)| *spi > 255 && offered(&cc.proposals, s, pfs))
            }) else {
                continue;
            };
            any_proposal = true;
            let ntsi = crate::ts::narrow(tsi, &cc.remote_ts, TS_LIMIT);
            let ntsr = crate::ts::narrow(tsr, &cc.local_ts, TS_LIMIT);
            if !ntsi.is_empty() && !ntsr.is_empty() {
                self.counters.child_established += 1;
                return Ok((ci, chosen, suite, spi, ntsi, ntsr));
            }
        }
        let show = |ts: &[TrafficSelector]| format!("{ts:?}");
        if any_proposal {
            self.counters.ts_unacceptable += 1;
            Err((
                notify::TS_UNACCEPTABLE,
                Failure::TsUnacceptable,
                format!(
                    "peer {} asked for a {} CHILD_SA with TSi {} TSr {}: not allowed for its identity",
                    pc.name,
                    if transport { "transport" } else { "tunnel" },
                    show(tsi),
                    show(tsr)
                ),
            ))
        } else {
            self.counters.no_proposal_chosen += 1;
            Err((
                notify::NO_PROPOSAL_CHOSEN,
                Failure::NoProposalChosen,
                format!(
                    "peer {} offered no acceptable ESP proposal for a {} CHILD_SA",
                    pc.name,
                    if transport { "transport" } else { "tunnel" }
                ),
            ))
        }
    }

    /// Records a negotiated CHILD_SA and reports it with its keys (section 2.17: KEYMAT
    /// from SK_d and the nonces of the exchange that created it, the initiator-to-responder
    /// keys first, "initiator" meaning that exchange's initiator).
    fn child_up(&mut self, now: Instant, sa: &mut IkeSa, c: NewChild<'_>) {
        let keys = sa.keys.as_ref().expect("keys");
        let (i2r, r2i) = child_keymat(&keys.sk_d, c.suite.algorithm, c.g_ir, c.ni, c.nr);
        let (ink, outk) = if c.we_initiated {
            (r2i, i2r)
        } else {
            (i2r, r2i)
        };
        let pc = &self.config.peers[c.config.0];
        let cc = &pc.children[c.config.1];
        sa.children.push(Child {
            name: cc.name.clone(),
            config: c.config.1,
            inbound: c.inbound,
            outbound: c.outbound,
            created: now,
            rekeying: false,
            local_ts: c.local_ts.clone(),
            remote_ts: c.remote_ts.clone(),
        });
        self.events.push_back(IkeEvent::ChildUp(Box::new(ChildSa {
            ike: sa.ours(),
            peer: pc.name.clone(),
            name: cc.name.clone(),
            mode: cc.mode,
            suite: c.suite,
            inbound: SaHalf {
                spi: c.inbound,
                keymat: ink,
            },
            outbound: SaHalf {
                spi: c.outbound,
                keymat: outk,
            },
            local_ts: c.local_ts,
            remote_ts: c.remote_ts,
            local: sa.local,
            remote: sa.remote,
            udp_encap: sa.udp_encap(),
            rekeys: c.rekeys,
        })));
    }

    fn respond_informational(&mut self, sa: &mut IkeSa, inner: &[Payload<'_>]) -> bool {
        let mut delete_ike = false;
        let mut gone = Vec::new();
        for p in inner {
            if let Payload::Delete(d) = p {
                match d.protocol {
                    protocol::IKE => delete_ike = true,
                    protocol::ESP if d.spi_size == 4 => {
                        for s in d.spis() {
                            if let Ok(b) = <[u8; 4]>::try_from(s) {
                                gone.push(u32::from_be_bytes(b));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if delete_ike {
            self.send_response(sa, exchange::INFORMATIONAL, &[]);
            let id = sa.ours();
            let taken = std::mem::replace(sa, self.placeholder(sa));
            self.teardown(taken, Failure::PeerDeleted);
            let _ = id;
            return false;
        }
        // Section 1.4.1: answer with the inbound SPIs of the pairs the peer deleted.
        let mut ours = Vec::new();
        let ike = sa.ours();
        sa.children.retain(|c| {
            if gone.contains(&c.outbound) {
                ours.extend_from_slice(&c.inbound.to_be_bytes());
                self.events.push_back(IkeEvent::ChildDown {
                    ike,
                    name: c.name.clone(),
                    inbound_spi: c.inbound,
                    outbound_spi: c.outbound,
                });
                false
            } else {
                true
            }
        });
        if ours.is_empty() {
            self.send_response(sa, exchange::INFORMATIONAL, &[]);
        } else {
            let d = Delete {
                protocol: protocol::ESP,
                spi_size: 4,
                spis: &ours,
            };
            self.send_response(sa, exchange::INFORMATIONAL, &[Payload::Delete(d)]);
        }
        true
    }

    /// An empty shell to swap in when an SA is taken apart in place.
    fn placeholder(&self, sa: &IkeSa) -> IkeSa {
        IkeSa {
            last_heard: sa.last_heard,
            last_keepalive: sa.last_keepalive,
            ..IkeSa::blank(
                sa.initiator,
                IkeState::Deleting,
                sa.local,
                sa.remote,
                sa.created,
            )
        }
    }

    /// Drops a half-open SA without events (it never came up).
    fn forget(&mut self, sa: &IkeSa) {
        self.by_initiator.remove(&(sa.spi_i, sa.remote));
    }

    /// Reports the CHILD_SAs and the IKE SA down (or the setup failed) and forgets it.
    fn teardown(&mut self, sa: IkeSa, why: Failure) {
        self.forget(&sa);
        let why = if sa.replaced { Failure::Rekeyed } else { why };
        let ike = sa.ours();
        for c in &sa.children {
            self.events.push_back(IkeEvent::ChildDown {
                ike,
                name: c.name.clone(),
                inbound_spi: c.inbound,
                outbound_spi: c.outbound,
            });
        }
        let peer = sa
            .peer
            .map(|p| self.config.peers[p].name.clone())
            .unwrap_or_else(|| sa.remote.to_string());
        match sa.state {
            IkeState::Established | IkeState::Deleting => {
                self.events.push_back(IkeEvent::IkeDown { ike, peer, why })
            }
            _ => self.events.push_back(IkeEvent::Failed {
                peer,
                why,
                detail: format!("IKE SA with {} not established: {why}", sa.remote),
            }),
        }
    }

    /// A response to our outstanding request. Returns whether the SA lives on.
    fn on_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
        hdr: &HeaderRepr,
    ) -> bool {
        let Some(out) = &sa.outstanding else {
            self.counters.drop_message_id += 1;
            return true;
        };
        if out.message_id != hdr.message_id || out.exchange != hdr.exchange_type {
            self.counters.drop_message_id += 1;
            return true;
        }
        if hdr.exchange_type == exchange::IKE_SA_INIT {
            return self.on_sa_init_response(now, sa, data, hdr);
        }
        // Section 2.21.4: an unprotected INVALID_IKE_SPI answering our request says the
        // peer may have restarted. It MUST NOT change any SA: it only hurries this
        // request's liveness verdict (a few quick tries instead of the long backoff).
        if remote == sa.remote {
            if let Ok(m) = Message::parse(data) {
                let unprotected = !m
                    .payloads
                    .iter()
                    .any(|p| matches!(p, Payload::Encrypted(_)));
                if unprotected && m.notify(notify::INVALID_IKE_SPI).is_some() {
                    self.hint(now, sa);
                    return true;
                }
            }
        }
        let Some(opened) = self.open_sk(sa, data) else {
            return true;
        };
        let Ok(inner) = Payload::parse_chain(opened.first_inner, &opened.plain) else {
            self.counters.drop_malformed += 1;
            return true;
        };
        let what = sa.outstanding.take().and_then(|o| o.what);
        sa.last_heard = now;
        self.follow_peer(sa, local, remote);
        let keep = match hdr.exchange_type {
            exchange::IKE_AUTH => self.on_auth_response(now, sa, &inner),
            exchange::CREATE_CHILD_SA => self.on_create_child_response(now, sa, &inner),
            exchange::INFORMATIONAL => {
                if let Some(Queued::DeleteChild(spi)) = what {
                    let ike = sa.ours();
                    if let Some(i) = sa.children.iter().position(|c| c.inbound == spi) {
                        let c = sa.children.remove(i);
                        self.events.push_back(IkeEvent::ChildDown {
                            ike,
                            name: c.name,
                            inbound_spi: c.inbound,
                            outbound_spi: c.outbound,
                        });
                    }
                }
                what != Some(Queued::DeleteIke)
            }
            _ => true,
        };
        if !keep {
            let why = if what == Some(Queued::DeleteIke) {
                Failure::Closed
            } else {
                Failure::AuthenticationFailed
            };
            if why == Failure::Closed {
                let taken = std::mem::replace(sa, self.placeholder(sa));
                self.teardown(taken, why);
            }
            return false;
        }
        if let Some(q) = sa.queue.pop_front() {
            self.send_queued(now, sa, q);
        }
        true
    }

    fn on_sa_init_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        data: &[u8],
        hdr: &HeaderRepr,
    ) -> bool {
        let Ok(m) = Message::parse(data) else {
            self.counters.drop_malformed += 1;
            return true;
        };
        // Unauthenticated errors (section 2.21.1): COOKIE and INVALID_KE_PAYLOAD are
        // retried; the others end the attempt, but only once the retransmissions are spent
        // would be safer against forgeries: an attacker on the path can stop us anyway.
        if let Some(c) = m.notify(notify::COOKIE) {
            if c.data.len() <= 64 && sa.cookie.is_none() {
                self.counters.cookies += 1;
                sa.cookie = Some(c.data.to_vec());
                self.send_sa_init(now, sa);
            }
            return true;
        }
        if let Some(n) = m.notify(notify::INVALID_KE_PAYLOAD) {
            self.counters.invalid_ke += 1;
            let want = (n.data.len() == 2)
                .then(|| u16::from_be_bytes([n.data[0], n.data[1]]))
                .and_then(Group::from_id)
                .filter(|g| self.config.proposals.iter().any(|s| s.group == *g));
            let current = sa.keypair.as_ref().map(KeyPair::group);
            match want {
                Some(g) if Some(g) != current => {
                    sa.keypair = Some(KeyPair::generate(g, &mut self.rng));
                    self.send_sa_init(now, sa);
                    return true;
                }
                _ => {
                    let taken = std::mem::replace(sa, self.placeholder(sa));
                    self.teardown(taken, Failure::PeerError(notify::INVALID_KE_PAYLOAD));
                    return false;
                }
            }
        }
        if let Some(e) = m.notifies().find(|n| n.is_error()) {
            let why = match e.kind {
                notify::NO_PROPOSAL_CHOSEN => {
                    self.counters.no_proposal_chosen += 1;
                    Failure::NoProposalChosen
                }
                k => Failure::PeerError(k),
            };
            let taken = std::mem::replace(sa, self.placeholder(sa));
            self.teardown(taken, why);
            return false;
        }
        let (mut sa_p, mut ke, mut nr) = (None, None, None);
        for p in &m.payloads {
            match p {
                Payload::Sa(s) => sa_p = Some(s),
                Payload::Ke(k) => ke = Some(*k),
                Payload::Nonce(n) => nr = Some(*n),
                _ => {}
            }
        }
        let (Some(sa_p), Some(ke), Some(nr)) = (sa_p, ke, nr) else {
            self.counters.drop_malformed += 1;
            return true;
        };
        let keypair = sa.keypair.as_ref().expect("initiator key pair");
        let suite = match sa_p.proposals.as_slice() {
            [p] => IkeSuite::from_single(p)
                .filter(|s| self.config.proposals.contains(s) && s.group == keypair.group()),
            _ => None,
        };
        let Some(suite) = suite.filter(|s| ke.group == s.group.id()) else {
            // Not what we offered: a broken or forged answer; keep waiting.
            self.counters.drop_malformed += 1;
            return true;
        };
        let Ok(shared) = keypair.shared(ke.data) else {
            self.counters.drop_malformed += 1;
            return true;
        };
        sa.outstanding = None;
        sa.spi_r = hdr.responder_spi;
        sa.nr = nr.to_vec();
        sa.suite = Some(suite);
        sa.keys = Some(IkeKeys::new(
            &suite, &shared, &sa.ni, nr, sa.spi_i, sa.spi_r,
        ));
        sa.keypair = None;
        sa.init_response = data.to_vec();
        sa.nat_remote = match m.notify(notify::NAT_DETECTION_SOURCE_IP) {
            Some(n) => n.data != nat_hash(sa.spi_i, sa.spi_r, sa.remote),
            None => false,
        };
        sa.nat_local = match m.notify(notify::NAT_DETECTION_DESTINATION_IP) {
            Some(n) => n.data != nat_hash(sa.spi_i, sa.spi_r, sa.local),
            None => false,
        };
        // Section 2.23: with a NAT (or encapsulation forced), IKE_AUTH goes to 4500.
        if (sa.nat_local || sa.nat_remote || self.config.force_encap)
            && sa.local.port() != NAT_T_PORT
        {
            sa.local.set_port(NAT_T_PORT);
            sa.remote.set_port(NAT_T_PORT);
        }
        sa.last_heard = now;
        self.send_auth(now, sa);
        true
    }

    fn send_auth(&mut self, now: Instant, sa: &mut IkeSa) {
        let p = sa.peer.expect("initiator knows its peer");
        let pc = self.config.peers[p].clone();
        let cc = &pc.children[0];
        let inbound = self.fresh_child_spi();
        let idi = pc.local_id.payload();
        let sk_pi = sa.keys.as_ref().expect("keys").sk_pi.clone();
        let auth = self.our_auth(&pc, &sa.init_request, &sa.nr, &sk_pi, &id_body(&idi));
        let tsi_b = ts_bytes(&cc.local_ts);
        let tsr_b = ts_bytes(&cc.remote_ts);
        let child = SaPayload {
            proposals: cc
                .proposals
                .iter()
                .enumerate()
                // Section 1.2: no D-H in IKE_AUTH; the group is for later rekeys.
                .map(|(i, s)| s.without_group().proposal(i as u8 + 1, inbound))
                .collect(),
        };
        let mut payloads = vec![Payload::IdI(idi)];
        if let Some(c) = &auth.cert {
            payloads.push(Payload::Cert(crate::body::Cert {
                encoding: auth::CERT_X509_SIGNATURE,
                data: c,
            }));
        }
        let certreq = pc.trust.as_ref().map(|t| t.certreq());
        if let Some(c) = certreq.as_ref().filter(|c| !c.is_empty()) {
            payloads.push(Payload::CertReq(crate::body::Cert {
                encoding: auth::CERT_X509_SIGNATURE,
                data: c,
            }));
        }
        payloads.extend([
            notify_payload(notify::INITIAL_CONTACT, &[]),
            Payload::IdR(pc.remote_id.payload()),
            Payload::Auth(Auth {
                method: auth.method,
                data: &auth.data,
            }),
        ]);
        if cc.mode == Mode::Transport {
            payloads.push(notify_payload(notify::USE_TRANSPORT_MODE, &[]));
        }
        payloads.push(Payload::Sa(child));
        payloads.push(Payload::TsI(ts_view(&tsi_b)));
        payloads.push(Payload::TsR(ts_view(&tsr_b)));
        sa.child_request = Some(ChildRequest {
            config: 0,
            inbound,
            tsi: cc.local_ts.clone(),
            tsr: cc.remote_ts.clone(),
        });
        sa.state = IkeState::AuthSent;
        self.send_request(now, sa, exchange::IKE_AUTH, &payloads, None);
    }

    fn on_auth_response(&mut self, now: Instant, sa: &mut IkeSa, inner: &[Payload<'_>]) -> bool {
        let p = sa.peer.expect("initiator knows its peer");
        let pc = self.config.peers[p].clone();
        let mut idr = None;
        let mut auth = None;
        let mut cert = None;
        let mut child_sa = None;
        let (mut tsi, mut tsr) = (None, None);
        let mut transport = false;
        let mut error = None;
        for x in inner {
            match x {
                Payload::IdR(i) => idr = Some(*i),
                Payload::Auth(a) => auth = Some(*a),
                Payload::Cert(c) if cert.is_none() => cert = Some(*c),
                Payload::Sa(s) => child_sa = Some(s),
                Payload::TsI(t) => tsi = Some(*t),
                Payload::TsR(t) => tsr = Some(*t),
                Payload::Notify(n) if n.kind == notify::USE_TRANSPORT_MODE => transport = true,
                Payload::Notify(n) if n.is_error() && error.is_none() => error = Some(n.kind),
                _ => {}
            }
        }
        let verified = match (idr, auth) {
            (Some(idr), Some(auth)) if pc.remote_id.matches(&idr) => {
                let keys = sa.keys.as_ref().expect("keys");
                self.check_auth(
                    &pc,
                    &auth,
                    cert.as_ref(),
                    &idr,
                    &sa.init_response,
                    &sa.ni,
                    &keys.sk_pr,
                )
            }
            _ => Err("did not authenticate".to_string()),
        };
        if let Err(why) = verified {
            self.counters.auth_failed += 1;
            let detail = match (error, idr) {
                (Some(notify::AUTHENTICATION_FAILED), _) => format!(
                    "{} refused our authentication as {} (AUTHENTICATION_FAILED): check {} and identities",
                    sa.remote,
                    pc.local_id,
                    // What the peer most likely refused: the key we share, or our
                    // certificate (e.g. from a CA it does not trust).
                    if pc.local_cert.is_some() {
                        "that it trusts our certificate's CA"
                    } else {
                        "the pre-shared key"
                    }
                ),
                (Some(k), _) => format!("{} answered IKE_AUTH with error notify {k}", sa.remote),
                (None, Some(i)) if !pc.remote_id.matches(&i) => format!(
                    "{} identified as {:?}, expected {}",
                    sa.remote,
                    show_id(&i),
                    pc.remote_id
                ),
                _ => format!("{} as {}: {why}", sa.remote, pc.remote_id),
            };
            self.events.push_back(IkeEvent::Failed {
                peer: pc.name.clone(),
                why: Failure::AuthenticationFailed,
                detail,
            });
            return false;
        }
        sa.state = IkeState::Established;
        self.counters.ike_established += 1;
        self.events.push_back(IkeEvent::IkeUp {
            ike: sa.ours(),
            peer: pc.name.clone(),
            local: sa.local,
            remote: sa.remote,
            suite: sa.suite.expect("suite"),
            nat: (sa.nat_local, sa.nat_remote),
        });
        let Some(req) = sa.child_request.take() else {
            return true;
        };
        let cc = &pc.children[req.config];
        let checked = match (error, child_sa, tsi, tsr) {
            (None, Some(s), Some(i), Some(r)) => {
                let got = match s.proposals.as_slice() {
                    [one] => ChildSuite::from_single(one)
                        .filter(|(suite, spi)| *spi > 255 && offered(&cc.proposals, suite, false)),
                    _ => None,
                };
                let ntsi: Vec<_> = i.iter().take(TS_LIMIT).collect();
                let ntsr: Vec<_> = r.iter().take(TS_LIMIT).collect();
                let inside = |got: &[TrafficSelector], asked: &[TrafficSelector]| {
                    !got.is_empty()
                        && got
                            .iter()
                            .all(|g| asked.iter().any(|a| crate::ts::within(g, a)))
                };
                match got {
                    Some((suite, spi))
                        if inside(&ntsi, &req.tsi)
                            && inside(&ntsr, &req.tsr)
                            && transport == (cc.mode == Mode::Transport) =>
                    {
                        Ok((suite, spi, ntsi, ntsr))
                    }
                    _ => Err(Failure::PeerError(notify::INVALID_SYNTAX)),
                }
            }
            (Some(notify::NO_PROPOSAL_CHOSEN), ..) => {
                self.counters.no_proposal_chosen += 1;
                Err(Failure::NoProposalChosen)
            }
            (Some(notify::TS_UNACCEPTABLE), ..) => {
                self.counters.ts_unacceptable += 1;
                Err(Failure::TsUnacceptable)
            }
            (Some(k), ..) => Err(Failure::PeerError(k)),
            _ => Err(Failure::PeerError(notify::INVALID_SYNTAX)),
        };
        match checked {
            Ok((suite, spi, ntsi, ntsr)) => {
                self.counters.child_established += 1;
                let (ni, nr) = (sa.ni.clone(), sa.nr.clone());
                self.child_up(
                    now,
                    sa,
                    NewChild {
                        config: (p, req.config),
                        suite,
                        inbound: req.inbound,
                        outbound: spi,
                        local_ts: ntsi,
                        remote_ts: ntsr,
                        we_initiated: true,
                        g_ir: None,
                        ni: &ni,
                        nr: &nr,
                        rekeys: None,
                    },
                );
            }
            Err(why) => self.events.push_back(IkeEvent::Failed {
                peer: pc.name.clone(),
                why,
                detail: format!("CHILD_SA {} with {} refused: {why}", cc.name, sa.remote),
            }),
        }
        true
    }

    /// Retransmissions, liveness checks, NAT keep-alives and half-open expiry due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<IkeSaId> = self
            .sas
            .iter()
            .filter(|(_, sa)| self.next_deadline(sa).is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(mut sa) = self.sas.remove(&id) else {
                continue;
            };
            if self.timeout_one(now, &mut sa) {
                self.sas.insert(id, sa);
            }
        }
    }

    fn timeout_one(&mut self, now: Instant, sa: &mut IkeSa) -> bool {
        if sa.state == IkeState::InitAnswered && now >= sa.created + self.config.half_open_timeout {
            self.counters.half_open_expired += 1;
            self.forget(sa);
            return false;
        }
        if let Some(o) = &mut sa.outstanding {
            if o.next_at <= now {
                let last = if o.hinted {
                    HINTED_TRIES
                } else {
                    self.config.retransmit_tries
                };
                if o.tries >= last {
                    self.counters.timeouts += 1;
                    let taken = std::mem::replace(sa, self.placeholder(sa));
                    self.teardown(taken, Failure::Timeout);
                    return false;
                }
                o.tries += 1;
                let factor = self.config.retransmit_base.powi(o.tries as i32);
                o.next_at = if o.hinted {
                    now + HINTED_GAP
                } else {
                    now + self.config.retransmit_timeout.mul_f64(factor)
                };
                let b = o.bytes.clone();
                self.counters.retransmits += 1;
                let (l, r) = (sa.local, sa.remote);
                self.send(l, r, &b);
            }
        }
        if sa.state == IkeState::Established {
            if let (Some(d), None) = (self.config.dpd, &sa.outstanding) {
                if now >= sa.last_heard + d {
                    // Counted as heard so that one check goes out per quiet period.
                    sa.last_heard = now;
                    self.enqueue(now, sa, Queued::Liveness);
                }
            }
            // Rekeying by time (sections 2.8 and 1.3.2); the timer restarts so that a
            // refused rekey is tried again one period later, not in a loop.
            if sa.outstanding.is_none() {
                if self.config.rekey_ike.is_some_and(|r| now >= sa.created + r) {
                    sa.created = now;
                    self.enqueue(now, sa, Queued::RekeyIke);
                } else if let Some(r) = self.config.rekey_child {
                    let due = sa
                        .children
                        .iter_mut()
                        .find(|c| !c.rekeying && now >= c.created + r);
                    if let Some(c) = due {
                        c.created = now;
                        c.rekeying = true;
                        let spi = c.inbound;
                        self.enqueue(now, sa, Queued::RekeyChild(spi));
                    }
                }
            }
            if sa.nat_local && now >= sa.last_keepalive + self.config.nat_keepalive {
                sa.last_keepalive = now;
                self.counters.keepalives += 1;
                let remote = sa.remote;
                // RFC 3948 section 2.3: one 0xFF octet, from port 4500, without marker.
                self.transmits.push_back(Transmit {
                    local: sa.local,
                    remote,
                    payload: vec![0xff],
                });
            }
        }
        true
    }

    /// Whether the datagram received on port 4500 is IKE (non-ESP marker) or a keep-alive,
    /// rather than ESP (RFC 3948 section 2.2): what a driver asks before handing it here.
    pub fn is_ike_on_nat_t(datagram: &[u8]) -> bool {
        datagram == [0xff] || datagram.starts_with(&NON_ESP_MARKER)
    }

    /// The decryption keys of an IKE SA in the format of Wireshark's
    /// `isakmp.ikev2_decryption_table` (SPIi, SPIr, SK_ei, SK_er, encryption, SK_ai, SK_ar,
    /// integrity), for a key log that the daemons write only when a debug option asks.
    pub fn wireshark_keys(&self, ike: IkeSaId) -> Option<String> {
        let sa = self.sas.get(&ike)?;
        let (suite, k) = (sa.suite?, sa.keys.as_ref()?);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let (encr, integ) = match suite.encr {
            crate::suite::Encr::AesCbc(16) => {
                ("AES-CBC-128 [RFC3602]", "HMAC_SHA2_256_128 [RFC4868]")
            }
            crate::suite::Encr::AesCbc(_) => {
                ("AES-CBC-256 [RFC3602]", "HMAC_SHA2_256_128 [RFC4868]")
            }
            crate::suite::Encr::AesGcm16(16) => {
                ("AES-GCM-128 with 16 octet ICV [RFC5282]", "NONE [RFC4306]")
            }
            crate::suite::Encr::AesGcm16(_) => {
                ("AES-GCM-256 with 16 octet ICV [RFC5282]", "NONE [RFC4306]")
            }
        };
        Some(format!(
            "{:016x},{:016x},{},{},\"{encr}\",{},{},\"{integ}\"",
            sa.spi_i,
            sa.spi_r,
            hex(&k.sk_ei),
            hex(&k.sk_er),
            hex(&k.sk_ai),
            hex(&k.sk_ar)
        ))
    }
}

/// The time a request is retransmitted for the last time plus its wait: how long a dead
/// peer takes to be noticed with `config` (for documentation and tests).
pub fn give_up_after(config: &IkeConfig) -> Duration {
    (0..=config.retransmit_tries)
        .map(|i| {
            config
                .retransmit_timeout
                .mul_f64(config.retransmit_base.powi(i as i32))
        })
        .sum()
}
