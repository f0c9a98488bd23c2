//! Sans-IO IPsec for m6t's Mobile IPv6 and DSMIPv6: a bump in the stack between the protocol
//! module and the tunnel-interface module (seed 001), which neither of them changes.
//!
//! - [`Ipsec`] ([`bits`]): the processing of RFC 4301 section 5 over an ordered [`Spd`]
//!   ([`spd`]: selectors on addresses, next layer, ports, ICMPv6 and **Mobility Header
//!   type**, actions PROTECT / BYPASS / DISCARD) and a SAD of manually keyed SAs ([`sad`]).
//!   Transport mode puts ESP after the Home Address option of a BU and the type 2 Routing
//!   Header of a BA (RFC 3776 sections 3.1-3.2); selectors see home addresses, not care-of
//!   addresses ([`chain`]); inbound, what ESP opened must match the policy naming its SA
//!   (RFC 4877 section 4.2). Its look-ups ([`Ipsec::inbound_sa`],
//!   [`Ipsec::sa_selects_mh_type`], [`Ipsec::outbound_spi`]) are the "DSMIPv6-IPsec API" of
//!   seed 001 sections 4.3.2 and 4.4.2: the Mobile IPv6 modules use them, and change nothing
//!   inside.
//! - [`Sa`] ([`sa`]): one Security Association (RFC 4301 section 4.4.2.1): SPI, [`Mode`],
//!   [`Algorithm`] and keys, Extended Sequence Numbers, the outbound counter that refuses to
//!   cycle, the inbound [`ReplayWindow`];
//! - [`Sa::encapsulate_transport`], [`Sa::encapsulate_tunnel`] and [`Sa::decapsulate`]
//!   ([`esp`]): RFC 4303 section 3, every refusal an [`EspDrop`] to count;
//! - [`ReplayWindow`] ([`replay`]): the sliding window of section 3.4.3 and appendix A2,
//!   64-bit numbers inferred from the 32 on the wire, O(1) per packet.
//!
//! The ESP header view and the RFC 3948 port-4500 classification are formats, so they are
//! in [`m6t_wire::esp`]. IKEv2 will install its SAs into the same SAD.
//!
//! Like the other machines this crate makes no syscall, reads no clock and draws no random
//! number: IVs come from the sequence counter and a seed the caller passes to [`Sa::new`].
//! Outbound, the ESP packet is appended to a `Vec` the caller reuses; inbound, it is opened in
//! place. No allocation per packet.
//!
//! # Crypto: ring for AES-GCM, RustCrypto for AES-CBC and HMAC-SHA-256
//!
//! Chosen by measuring the three candidates here (x86-64 with AES-NI, VAES, PCLMULQDQ and
//! the SHA extensions; 2 cores; release builds, one core, niced, beside other benchmarks):
//!
//! | AES-128-GCM seal, 1400 B | per packet | per core | clean build of the crate |
//! |---|---|---|---|
//! | RustCrypto `aes-gcm` 0.10.3 | 990 ns | 1.4 GB/s | pure Rust, no C compiler |
//! | `ring` 0.17.14 | 252 ns | 5.6 GB/s | 12 s (C and assembly, `cc`) |
//! | `aws-lc-rs` 1.19 (`aws-lc-sys` 0.47) | 256 ns | 5.5 GB/s | 75 s (builds AWS-LC) |
//!
//! - AES-GCM is `ring` 0.17: as fast as `aws-lc-rs` (the same hand-written AVX2/VAES code
//!   lineage), four times RustCrypto's `aes-gcm` 0.10 (which runs AES-NI and PCLMULQDQ but in
//!   two passes), and a sixth of `aws-lc-rs`'s build time on our two-core machines and CI.
//!   It authenticates in the same pass as it decrypts (RFC 4303 section 3.4.4.2 allows that
//!   for combined modes), compares tags in constant time and zeroes what it decrypted when the
//!   tag is wrong.
//! - AES-CBC and HMAC-SHA-256 are RustCrypto's `aes` 0.8, `cbc` 0.1, `hmac` 0.12 and `sha2`
//!   0.10 (pure Rust, AES-NI and SHA-NI detected at run time through `cpufeatures`): `ring`
//!   has no AES-CBC at all, and `aws-lc-rs` exposes CBC only with PKCS#7 padding where ESP
//!   needs raw CBC over its own padding (RFC 4303 section 2.4). CBC encryption is serial and
//!   HMAC runs on SHA-NI, so a faster library would gain little there. The HMAC is checked
//!   (`verify_truncated_left`, constant time) before anything is decrypted.
//! - Each is pinned to its minor version (`~`): a 0.x minor is a breaking release. The
//!   newer RustCrypto generation (`cipher` 0.5: `aes` 0.9, `cbc` 0.2, `aes-gcm` 0.11) is left
//!   for a later move; the 0.4 generation is the one most of the ecosystem still uses.
//! - All of it sits behind the private `cipher` module: changing a library touches that file
//!   only. `ring` can draw random numbers, but this crate never asks it to.
//!
//! `benches/esp.rs` measures the whole ESP path (criterion; figures in the commit message).
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

pub mod bits;
pub mod chain;
mod cipher;
pub mod esp;
pub mod replay;
pub mod sa;
pub mod sad;
pub mod spd;

pub use bits::{ConfigError, Inbound, Ipsec, IpsecDrop, IpsecEvent, Outbound};
pub use esp::{EspDrop, Opened};
pub use replay::{ReplayDrop, ReplayWindow};
pub use sa::{Algorithm, Mode, Sa, SaError, SaParams};
pub use sad::{SaConfig, SadEntry, TunnelEnds};
pub use spd::{Action, AddrSel, Direction, Policy, Selectors, Spd, Traffic};

/// Length of the ICV of every algorithm here (RFC 4106 section 6, RFC 4868 section 2.3).
pub const ICV_LEN: usize = cipher::ICV_LEN;
