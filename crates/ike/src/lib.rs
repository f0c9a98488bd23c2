//! Sans-IO IKEv2 for m6t (RFC 7296), keying the IPsec of Mobile IPv6 and DSMIPv6 as RFC
//! 4877 describes.
//!
//! - The message formats of RFC 7296 section 3, in the shapes of `m6t_wire`: [`IkeHeader`]
//!   ([`header`]) is a read-only zero-copy view of the fixed 28-byte header (section 3.1),
//!   checked once by `new_checked`; [`Payloads`] ([`payload`]) walks the generic payload
//!   chain (section 3.2) without allocating, refusing an unknown critical payload and more
//!   than [`MAX_PAYLOADS`]; [`Payload`] is the typed form of one payload; [`Message`] a
//!   header plus its payloads, with `parse` and `emit` that round-trip byte for byte.
//! - The cryptography: the Diffie-Hellman groups ([`group`]), the PRF and prf+ ([`kdf`]),
//!   the key derivation and PSK authentication ([`keys`]), the SK payload ([`sk`]),
//!   proposals in strongSwan's keywords ([`suite`]), traffic selector narrowing ([`ts`]).
//! - The machine ([`endpoint`]): IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA and INFORMATIONAL
//!   as initiator and responder, quinn-proto's shape (`handle`, `handle_timeout`,
//!   `poll_transmit`, `poll_event`, `poll_timeout`), configured by [`config`].
//!
//! Nothing in this crate reads a clock or touches the operating system; the only binary,
//! `ike-peer`, is a test tool around the machine.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod body;
pub mod cert;
pub mod config;
pub mod endpoint;
pub mod fixtures;
pub mod group;
pub mod header;
pub mod kdf;
pub mod keys;
pub mod message;
pub mod payload;
pub mod sa;
pub mod sk;
pub mod suite;
pub mod ts;

pub use body::{
    Auth, Cert, Delete, Encrypted, Identification, KeyExchange, Notify, SkParts, TrafficSelector,
    TrafficSelectors, TsRange,
};
pub use header::{HeaderRepr, IkeHeader, IKE_HEADER_LEN};
pub use message::{Message, Payload};
pub use payload::{PayloadView, Payloads, GENERIC_HEADER_LEN, MAX_PAYLOADS};
pub use sa::{Attribute, Proposal, SaPayload, Transform};

/// The UDP port of IKE (RFC 7296 section 2): IKE_SA_INIT starts here, and moves to
/// [`m6t_wire`]'s NAT-T port 4500 when a NAT is detected (section 2.23).
pub const IKE_PORT: u16 = 500;

/// Exchange types of the IKE header (RFC 7296 section 3.1, IANA "IKEv2 Exchange Types").
pub mod exchange {
    /// IKE_SA_INIT (section 1.2): negotiates the IKE SA's algorithms, nonces and DH.
    pub const IKE_SA_INIT: u8 = 34;
    /// IKE_AUTH (section 1.2): authenticates and sets up the first CHILD_SA.
    pub const IKE_AUTH: u8 = 35;
    /// CREATE_CHILD_SA (section 1.3): new or rekeyed CHILD_SAs, IKE SA rekey.
    pub const CREATE_CHILD_SA: u8 = 36;
    /// INFORMATIONAL (section 1.4): delete, errors, liveness checks.
    pub const INFORMATIONAL: u8 = 37;
}

/// Flags of the IKE header (RFC 7296 section 3.1).
pub mod flags {
    /// Initiator: set in messages sent by the original initiator of the IKE SA.
    pub const I: u8 = 0x08;
    /// Version: the sender could speak a higher major version (never set by IKEv2 senders).
    pub const V: u8 = 0x10;
    /// Response: the message answers a request with the same Message ID.
    pub const R: u8 = 0x20;
}

/// Payload types (RFC 7296 section 3.2, IANA "IKEv2 Payload Types").
pub mod payload_type {
    /// No Next Payload: the last payload of a chain.
    pub const NONE: u8 = 0;
    /// Security Association (section 3.3).
    pub const SA: u8 = 33;
    /// Key Exchange (section 3.4).
    pub const KE: u8 = 34;
    /// Identification - Initiator (section 3.5).
    pub const IDI: u8 = 35;
    /// Identification - Responder (section 3.5).
    pub const IDR: u8 = 36;
    /// Certificate (section 3.6).
    pub const CERT: u8 = 37;
    /// Certificate Request (section 3.7).
    pub const CERTREQ: u8 = 38;
    /// Authentication (section 3.8).
    pub const AUTH: u8 = 39;
    /// Nonce (section 3.9).
    pub const NONCE: u8 = 40;
    /// Notify (section 3.10).
    pub const NOTIFY: u8 = 41;
    /// Delete (section 3.11).
    pub const DELETE: u8 = 42;
    /// Vendor ID (section 3.12).
    pub const VENDOR_ID: u8 = 43;
    /// Traffic Selector - Initiator (section 3.13).
    pub const TSI: u8 = 44;
    /// Traffic Selector - Responder (section 3.13).
    pub const TSR: u8 = 45;
    /// Encrypted and Authenticated (section 3.14).
    pub const SK: u8 = 46;
    /// Configuration (section 3.15), kept opaque here.
    pub const CP: u8 = 47;
    /// Extensible Authentication (section 3.16), kept opaque here.
    pub const EAP: u8 = 48;
}

/// Protocol IDs of proposals, Notify and Delete payloads (RFC 7296 section 3.3.1).
pub mod protocol {
    /// IKE: the IKE SA itself.
    pub const IKE: u8 = 1;
    /// AH (RFC 4302).
    pub const AH: u8 = 2;
    /// ESP (RFC 4303).
    pub const ESP: u8 = 3;
}

/// Notify Message Types (RFC 7296 section 3.10.1, IANA "IKEv2 Notify Message Types"):
/// below 16384 errors, from 16384 status. Types not named here are kept as numbers.
pub mod notify {
    /// A critical payload of an unknown type was received; data: its one-octet type.
    pub const UNSUPPORTED_CRITICAL_PAYLOAD: u16 = 1;
    /// A message arrived for an IKE SPI the receiver does not know (section 2.21).
    pub const INVALID_IKE_SPI: u16 = 4;
    /// The major version is not one the receiver speaks (section 2.5).
    pub const INVALID_MAJOR_VERSION: u16 = 5;
    /// A malformed or out-of-range message (section 2.21).
    pub const INVALID_SYNTAX: u16 = 7;
    /// Message ID outside the window (section 2.3).
    pub const INVALID_MESSAGE_ID: u16 = 9;
    /// ESP or AH for an SPI the receiver does not know.
    pub const INVALID_SPI: u16 = 11;
    /// None of the proposals is acceptable (section 2.7).
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    /// The KE payload's group is not the one the responder wants; data: that group
    /// (section 1.2).
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    /// The AUTH payload did not verify (section 2.15).
    pub const AUTHENTICATION_FAILED: u16 = 24;
    /// Only one pair of traffic selectors is acceptable (section 2.9).
    pub const SINGLE_PAIR_REQUIRED: u16 = 34;
    /// The responder accepts no more CHILD_SAs on this IKE SA.
    pub const NO_ADDITIONAL_SAS: u16 = 35;
    /// No internal address could be assigned (section 3.15.4).
    pub const INTERNAL_ADDRESS_FAILURE: u16 = 36;
    /// A CP payload was required and missing (section 2.19).
    pub const FAILED_CP_REQUIRED: u16 = 37;
    /// The traffic selectors are not acceptable (section 2.9); RFC 4877 sections 4.4-5 use it
    /// for a home address the identity may not use.
    pub const TS_UNACCEPTABLE: u16 = 38;
    /// A packet arrived on a CHILD_SA whose selectors it does not match (section 2.9).
    pub const INVALID_SELECTORS: u16 = 39;
    /// MOBIKE (RFC 4555 section 4.2.4): the new addresses are not acceptable.
    pub const UNACCEPTABLE_ADDRESSES: u16 = 40;
    /// MOBIKE (RFC 4555 section 4.2.4): a NAT was detected where NO_NATS_ALLOWED forbade one.
    pub const UNEXPECTED_NAT_DETECTED: u16 = 41;
    /// Try again later (section 2.25), e.g. during a simultaneous rekey.
    pub const TEMPORARY_FAILURE: u16 = 43;
    /// The CHILD_SA named by a request does not exist (section 2.25).
    pub const CHILD_SA_NOT_FOUND: u16 = 44;

    /// First contact after a restart: delete older IKE SAs with this peer (section 2.4).
    pub const INITIAL_CONTACT: u16 = 16384;
    /// The sender's window size (section 2.3).
    pub const SET_WINDOW_SIZE: u16 = 16385;
    /// More traffic selectors could be accepted in another CHILD_SA (section 2.9).
    pub const ADDITIONAL_TS_POSSIBLE: u16 = 16386;
    /// IPComp is supported (section 2.22).
    pub const IPCOMP_SUPPORTED: u16 = 16387;
    /// Hash of the sender's address and port, for NAT detection (section 2.23).
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    /// Hash of the receiver's address and port as the sender sees them (section 2.23).
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    /// The responder's stateless cookie, to be echoed (section 2.6).
    pub const COOKIE: u16 = 16390;
    /// Transport mode is requested for the CHILD_SA (section 1.3.1); RFC 4877 section 4.4
    /// uses it for the SA protecting BU and BA.
    pub const USE_TRANSPORT_MODE: u16 = 16391;
    /// Certificates may be fetched by URL (section 3.6).
    pub const HTTP_CERT_LOOKUP_SUPPORTED: u16 = 16392;
    /// The CHILD_SA being rekeyed, by SPI (section 1.3.3).
    pub const REKEY_SA: u16 = 16393;
    /// The sender does not accept TFC padding (section 1.3.1).
    pub const ESP_TFC_PADDING_NOT_SUPPORTED: u16 = 16394;
    /// Non-first fragments travel on this SA too (section 1.3.1).
    pub const NON_FIRST_FRAGMENTS_ALSO: u16 = 16395;
    /// MOBIKE is supported (RFC 4555 section 3.3).
    pub const MOBIKE_SUPPORTED: u16 = 16396;
    /// MOBIKE: another IPv4 address of the sender (RFC 4555 section 3.6).
    pub const ADDITIONAL_IP4_ADDRESS: u16 = 16397;
    /// MOBIKE: another IPv6 address of the sender (RFC 4555 section 3.6).
    pub const ADDITIONAL_IP6_ADDRESS: u16 = 16398;
    /// MOBIKE: the sender has no other address (RFC 4555 section 3.6).
    pub const NO_ADDITIONAL_ADDRESSES: u16 = 16399;
    /// MOBIKE: move the SAs to the addresses of this message (RFC 4555 section 3.5).
    pub const UPDATE_SA_ADDRESSES: u16 = 16400;
    /// MOBIKE: return routability check (RFC 4555 section 3.5).
    pub const COOKIE2: u16 = 16401;
    /// MOBIKE: the addresses must not be translated (RFC 4555 section 3.9).
    pub const NO_NATS_ALLOWED: u16 = 16402;
    /// Redirects are supported (RFC 5685 section 3).
    pub const REDIRECT_SUPPORTED: u16 = 16406;
    /// IKE message fragmentation is supported (RFC 7383 section 2.3).
    pub const IKEV2_FRAGMENTATION_SUPPORTED: u16 = 16430;
    /// The hash algorithms accepted in digital signatures (RFC 7427 section 4).
    pub const SIGNATURE_HASH_ALGORITHMS: u16 = 16431;
}

/// Transform types (RFC 7296 section 3.3.2, IANA "Transform Type Values").
pub mod transform_type {
    /// Encryption Algorithm (ENCR), IKE and ESP.
    pub const ENCR: u8 = 1;
    /// Pseudorandom Function (PRF), IKE only.
    pub const PRF: u8 = 2;
    /// Integrity Algorithm (INTEG), IKE, AH and optional in ESP.
    pub const INTEG: u8 = 3;
    /// Diffie-Hellman group (D-H; "Key Exchange Method" in later registries).
    pub const DH: u8 = 4;
    /// Extended Sequence Numbers (ESN), AH and ESP.
    pub const ESN: u8 = 5;
}

/// Transform IDs of type ENCR (IANA "Transform Type 1 - Encryption Algorithm Transform IDs",
/// which RFC 7296 section 3.3.2 started; checked against Wireshark's table by tests/tshark.rs).
pub mod encr {
    /// AES in CBC mode (RFC 3602), with a Key Length attribute of 128, 192 or 256: 12, listed
    /// in RFC 7296 section 3.3.2 itself.
    pub const AES_CBC: u16 = 12;
    /// AES-GCM with a 16-octet ICV (RFC 4106 section 8 for ESP, RFC 5282 for IKE), with a
    /// Key Length attribute: 20 (IANA; not in RFC 7296's own list).
    pub const AES_GCM_16: u16 = 20;
}

/// Transform IDs of type PRF (IANA "Transform Type 2 - Pseudorandom Function Transform IDs",
/// started by RFC 7296 section 3.3.2).
pub mod prf {
    /// PRF_HMAC_SHA2_256 (RFC 4868): 5 (IANA; RFC 7296's list stops at 4).
    pub const HMAC_SHA2_256: u16 = 5;
}

/// Transform IDs of type INTEG (IANA "Transform Type 3 - Integrity Algorithm Transform IDs",
/// started by RFC 7296 section 3.3.2).
pub mod integ {
    /// NONE: no separate integrity, with a combined-mode cipher such as AES-GCM: 0 (RFC 7296
    /// section 3.3.2).
    pub const NONE: u16 = 0;
    /// AUTH_HMAC_SHA2_256_128 (RFC 4868): 12 (IANA; RFC 7296's list stops at 5).
    pub const HMAC_SHA2_256_128: u16 = 12;
}

/// Transform IDs of type D-H (IANA "Transform Type 4 - Diffie-Hellman Group Transform IDs",
/// started by RFC 7296 section 3.3.2 and appendix B).
pub mod dh {
    /// 2048-bit MODP group (RFC 3526 section 3): 14, listed in RFC 7296 section 3.3.2.
    pub const MODP_2048: u16 = 14;
    /// 256-bit random ECP group, NIST P-256 (RFC 5903 section 3.1): 19 (IANA).
    pub const ECP_256: u16 = 19;
    /// Curve25519 (RFC 8031 section 4): 31 (IANA).
    pub const CURVE25519: u16 = 31;
}

/// Transform IDs of type ESN (RFC 7296 section 3.3.2; IANA "Transform Type 5").
pub mod esn {
    /// No Extended Sequence Numbers: 0.
    pub const NO: u16 = 0;
    /// Extended Sequence Numbers (RFC 4303 section 2.2.1): 1.
    pub const YES: u16 = 1;
}

/// Transform attribute types (RFC 7296 section 3.3.5).
pub mod attribute_type {
    /// Key Length in bits, always in the TV format (section 3.3.5): 14.
    pub const KEY_LENGTH: u16 = 14;
}

/// ID types of IDi / IDr (RFC 7296 section 3.5).
pub mod id_type {
    /// A single four-octet IPv4 address.
    pub const IPV4_ADDR: u8 = 1;
    /// A fully qualified domain name, no terminator.
    pub const FQDN: u8 = 2;
    /// An RFC 822 address (user@domain), no terminator; RFC 4877 section 4.3's
    /// "user@FQDN" identity.
    pub const RFC822_ADDR: u8 = 3;
    /// A single sixteen-octet IPv6 address.
    pub const IPV6_ADDR: u8 = 5;
    /// DER encoding of an ASN.1 X.500 Distinguished Name.
    pub const DER_ASN1_DN: u8 = 9;
    /// DER encoding of an ASN.1 X.509 GeneralName.
    pub const DER_ASN1_GN: u8 = 10;
    /// An opaque octet stream for vendor-specific identities.
    pub const KEY_ID: u8 = 11;
}

/// Authentication methods of the AUTH payload (RFC 7296 section 3.8, RFC 7427 section 3).
pub mod auth_method {
    /// RSA Digital Signature (PKCS#1 v1.5 over SHA-1).
    pub const RSA_SIG: u8 = 1;
    /// Shared Key Message Integrity Code (section 2.15).
    pub const SHARED_KEY_MIC: u8 = 2;
    /// DSS Digital Signature.
    pub const DSS_SIG: u8 = 3;
    /// Digital Signature (RFC 7427 section 3): the algorithm named inside the data.
    pub const DIGITAL_SIGNATURE: u8 = 14;
}

/// Traffic selector types (RFC 7296 section 3.13.1).
pub mod ts_type {
    /// A range of IPv4 addresses.
    pub const IPV4_ADDR_RANGE: u8 = 7;
    /// A range of IPv6 addresses.
    pub const IPV6_ADDR_RANGE: u8 = 8;
}

/// Why a message or a payload was refused, and how the peer is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IkeError {
    /// The buffer is shorter than a header or than the length a header announces.
    #[error("truncated IKE message")]
    Truncated,
    /// The buffer is longer than the IKE header's Length (section 3.1: Length is the whole
    /// message).
    #[error("IKE message longer than its header says")]
    TrailingBytes,
    /// The major version is not 2 (section 3.1); answered with INVALID_MAJOR_VERSION
    /// (section 2.5).
    #[error("IKE major version {0} not supported")]
    BadVersion(u8),
    /// A payload of an unknown type with the critical bit set (section 3.2); the message is
    /// refused and a request answered with UNSUPPORTED_CRITICAL_PAYLOAD carrying the type.
    #[error("unsupported critical payload type {0}")]
    UnsupportedCritical(u8),
    /// More payloads than [`MAX_PAYLOADS`] in one chain.
    #[error("too many payloads")]
    TooManyPayloads,
    /// A field holds a value the format forbids, or lengths do not add up; answered with
    /// INVALID_SYNTAX (section 2.21).
    #[error("malformed IKE payload")]
    Malformed,
    /// The output buffer is too small for `emit`.
    #[error("buffer too small")]
    BufferTooSmall,
}

impl IkeError {
    /// The Notify Message Type that tells the peer about this error (section 2.21), when the
    /// message was a request worth answering: `None` for errors of our own `emit`.
    pub fn notify_type(&self) -> Option<u16> {
        match self {
            IkeError::BadVersion(_) => Some(notify::INVALID_MAJOR_VERSION),
            IkeError::UnsupportedCritical(_) => Some(notify::UNSUPPORTED_CRITICAL_PAYLOAD),
            IkeError::Truncated
            | IkeError::TrailingBytes
            | IkeError::TooManyPayloads
            | IkeError::Malformed => Some(notify::INVALID_SYNTAX),
            IkeError::BufferTooSmall => None,
        }
    }
}

/// Reads a big-endian u16 at `at`; the caller has checked the bounds.
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian u32 at `at`; the caller has checked the bounds.
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a big-endian u64 at `at`; the caller has checked the bounds.
fn be64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(w)
}

/// Hex digits (whitespace ignored) to bytes, for the test vectors of the unit tests.
#[cfg(test)]
pub(crate) fn test_hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
