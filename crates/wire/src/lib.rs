//! Packet formats of m6t (draft-ebalard-mext-m6t-02) and the helpers the tunnel machines need.
//!
//! Every format is a zero-copy view (`Packet<T: AsRef<[u8]>>`) that is checked once by
//! `new_checked` and cannot panic afterwards, plus, where a packet is built, a `Repr` with
//! `parse`/`emit`. Nothing here holds state or touches the operating system.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checksum;
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
