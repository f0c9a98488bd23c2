//! Packet formats of m6t (draft-ebalard-mext-m6t-02) and DSMIPv6 (RFC 5555), and the helpers
//! the tunnel machines need.
//!
//! Two shapes:
//!
//! - the IP headers, [`ipv4`] and [`ipv6`], are read-only zero-copy views
//!   ([`Ipv4Packet`], [`Ipv6Packet`], generic over `T: AsRef<[u8]>`) checked once by
//!   `new_checked`, after which no accessor can panic, plus a `Repr` ([`Ipv4Repr`],
//!   [`Ipv6Repr`]) whose `parse` reads a checked view and whose `emit` writes a header into
//!   a caller's buffer; there are no writable views or setters;
//! - the other formats have no view of their own: functions (and [`mh::MhRepr::parse`])
//!   read them, from bytes or from a checked [`Ipv6Packet`], into values that are owned or
//!   borrow slices of the input (as [`tlv::decode`] does), and `emit` functions build them
//!   ([`mh`], [`mip6`], [`tlv`], [`icmpv6`], [`keepalive`]).
//!
//! [`checksum`], [`prefix`] and [`ula`] are helpers, not formats. Nothing here holds state or
//! touches the operating system.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checksum;
pub mod esp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod keepalive;
pub mod mh;
pub mod mip6;
pub mod prefix;
pub mod tlv;
pub mod ula;

pub use ipv4::{Ipv4Packet, Ipv4Repr, IPV4_HEADER_LEN};
pub use ipv6::{Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN};
pub use prefix::Ipv6Prefix;

/// Why a buffer was refused by a `new_checked` or `parse` function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header or than the length the header announces.
    #[error("truncated packet")]
    Truncated,
    /// The buffer is longer than the length the header announces (trailing bytes).
    #[error("packet longer than its header says")]
    TrailingBytes,
    /// The IP version field is not the one expected.
    #[error("wrong IP version")]
    BadVersion,
    /// A field holds a value the format forbids.
    #[error("malformed field")]
    Malformed,
    /// The output buffer is too small for `emit`.
    #[error("buffer too small")]
    BufferTooSmall,
}
