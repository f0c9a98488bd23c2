//! Sans-IO IPsec for m6t's Mobile IPv6 and DSMIPv6: a bump in the stack between the protocol
//! module and the tunnel-interface module (seed 001), which neither of them changes.
//!
//! This first part is the ESP core of RFC 4303:
//!
//! - [`Sa`] ([`sa`]): one Security Association (RFC 4301 section 4.4.2.1): SPI, [`Mode`],
//!   [`Algorithm`] and keys, Extended Sequence Numbers, the outbound counter that refuses to
//!   cycle, the inbound [`ReplayWindow`];
//! - [`Sa::encapsulate_transport`], [`Sa::encapsulate_tunnel`] and [`Sa::decapsulate`]
//!   ([`esp`]): RFC 4303 section 3, every refusal an [`EspDrop`] to count;
//! - [`ReplayWindow`] ([`replay`]): the sliding window of section 3.4.3 and appendix A2,
//!   64-bit numbers inferred from the 32 on the wire, O(1) per packet.
//!
//! The SPD and SAD of RFC 4301 (selectors on addresses, next layer, Mobility Header type),
//! UDP encapsulation on the socket side, configuration and the daemons come next and reach
//! ESP only through these types. The ESP header view and the RFC 3948 port-4500
//! classification are formats, so they are in [`m6t_wire::esp`].
//!
//! Like the other machines this crate makes no syscall, reads no clock and draws no random
//! number: IVs come from the sequence counter and a seed the caller passes to [`Sa::new`].
//! Outbound, the ESP packet is appended to a `Vec` the caller reuses; inbound, it is opened in
//! place. No allocation per packet.
//!
//! # Crypto: RustCrypto
//!
//! The primitives are RustCrypto's `aes-gcm` 0.10, `aes` 0.8, `cbc` 0.1, `hmac` 0.12 and
//! `sha2` 0.10, each pinned to its minor version (`~`) since a 0.x minor is a breaking
//! release. Why these and not `ring` or `aws-lc-rs`:
//!
//! - they cover both transforms the issue asks for. `ring` has AES-GCM and HMAC but no
//!   AES-CBC at all, so it could not do RFC 3602 alone; `aws-lc-rs` exposes CBC only with
//!   PKCS#7 padding, while ESP needs raw CBC over its own padding (RFC 4303 section 2.4);
//! - they are pure Rust: no C or assembly build, no `cmake`, nothing for this workspace's
//!   two-core machines and CI to compile beyond Rust, and they work in place on a `&mut [u8]`
//!   with a detached tag, as ESP lays out its ICV;
//! - they still use the hardware: AES-NI for AES and PCLMULQDQ for GHASH (through
//!   `cpufeatures`, detected at run time, with a constant-time software fallback), and the
//!   SHA extensions for SHA-256 where the CPU has them;
//! - tags are compared in constant time (`subtle` in `aes-gcm`, `verify_truncated_left` in
//!   `hmac`), and `aes-gcm` checks the tag before it decrypts.
//!
//! What it costs: `ring` and `aws-lc-rs` have hand-written AES-GCM assembly (AVX2 / VAES) that
//! is faster per byte; the bench `benches/esp.rs` measures what we get, and the primitives sit
//! behind the private `cipher` module, so a change of library touches that file only.
//!
//! # IVs
//!
//! - AES-GCM: IV = seed + sequence number (mod 2^64). RFC 4106 section 3.1 needs only
//!   uniqueness under a key, which a counter that never cycles gives. RFC 4106 section 2 also
//!   forbids GCM with manual keys, because a restarted counter would reuse IVs: the random
//!   seed makes that unlikely, but with manual keys AES-CBC/HMAC is the safe choice, or the
//!   counter must be restored ([`Sa::resume_outbound`]).
//! - AES-CBC: IV = AES_K(seed || sequence number), unpredictable as RFC 3602 section 2.3
//!   requires, by the first method of NIST SP 800-38A appendix C.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cipher;
pub mod esp;
pub mod replay;
pub mod sa;

pub use esp::{EspDrop, Opened};
pub use replay::{ReplayDrop, ReplayWindow};
pub use sa::{Algorithm, Mode, Sa, SaError, SaParams};

/// Length of the ICV of every algorithm here (RFC 4106 section 6, RFC 4868 section 2.3).
pub const ICV_LEN: usize = cipher::ICV_LEN;
