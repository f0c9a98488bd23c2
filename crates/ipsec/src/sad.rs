//! The Security Association Database of RFC 4301 section 4.4.2, as configured by hand (RFC
//! 3776 section 5.2 and RFC 4877 section 6: manual keys MUST be supported): each entry an
//! [`Sa`] with its name and direction, inbound entries found by SPI.

use crate::sa::{Sa, SaError, SaParams};
use crate::spd::Direction;
use std::fmt;
use std::net::IpAddr;

/// The outer addresses of a tunnel-mode SA (RFC 4301 section 4.4.2.1 "tunnel header IP
/// source and destination address"). On a home agent the remote end is the mobile node's
/// home address: the tunnel-interface module rewrites it to the current care-of address
/// after IPsec (seed 001 section 4.1, req. #1), so a move changes no SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelEnds {
    /// This node's end.
    pub local: IpAddr,
    /// The peer's end.
    pub remote: IpAddr,
}

/// One SA as its configuration gives it, keys included. `Debug` never shows the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct SaConfig {
    /// Name in the configuration, for policies, status and logs.
    pub name: String,
    /// Which way it protects traffic (RFC 4301 section 4.1: an SA is one-way).
    pub direction: Direction,
    /// SPI, mode, algorithm, ESN.
    pub params: SaParams,
    /// Key material, as [`crate::Algorithm::keymat_len`] lays it out; empty for an SA that
    /// IKE keys later ([`crate::Ipsec::key_sa`]), which carries nothing until then.
    pub keymat: Vec<u8>,
    /// Tunnel mode only: the outer addresses.
    pub tunnel: Option<TunnelEnds>,
}

impl fmt::Debug for SaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaConfig")
            .field("name", &self.name)
            .field("direction", &self.direction)
            .field("params", &self.params)
            .field(
                "keymat",
                &format_args!("<{} bytes, not shown>", self.keymat.len()),
            )
            .field("tunnel", &self.tunnel)
            .finish()
    }
}

impl Drop for SaConfig {
    fn drop(&mut self) {
        // Keys do not outlive their configuration in freed memory (best effort: the
        // cipher's own key schedule is the crypto library's). black_box keeps the compiler
        // from dropping writes to memory about to be freed.
        for b in self.keymat.iter_mut() {
            *b = std::hint::black_box(0);
        }
    }
}

/// One SAD entry.
#[derive(Debug, Clone)]
pub struct SadEntry {
    /// Name in the configuration.
    pub name: String,
    /// Which way.
    pub direction: Direction,
    /// Tunnel mode: the outer addresses.
    pub tunnel: Option<TunnelEnds>,
    /// The SA; `None` while an IKE-keyed entry waits for its keys.
    pub sa: Option<Sa>,
    /// Mode, algorithm, ESN, and the SPI (the configured one, or the last IKE gave).
    pub params: SaParams,
    /// Packets processed (protected outbound, accepted inbound).
    pub packets: u64,
    /// Bytes of payload processed.
    pub bytes: u64,
    /// Outbound: the highest sequence number the driver has put on stable storage as
    /// reserved ([`crate::Ipsec::reserved`]); the SA sends nothing beyond it.
    pub reserved: u64,
}

impl SadEntry {
    /// Builds the entry, its SA seeded with `iv_seed`; without key material, an entry
    /// waiting for IKE.
    pub fn new(cfg: &SaConfig, iv_seed: u64) -> Result<SadEntry, SaError> {
        let sa = if cfg.keymat.is_empty() {
            None
        } else {
            Some(Sa::new(cfg.params, &cfg.keymat, iv_seed)?)
        };
        Ok(SadEntry {
            name: cfg.name.clone(),
            direction: cfg.direction,
            tunnel: cfg.tunnel,
            sa,
            params: cfg.params,
            packets: 0,
            bytes: 0,
            reserved: 0,
        })
    }

    /// The SA's parameters.
    pub fn params(&self) -> SaParams {
        self.params
    }

    /// Whether it has keys (manual ones, or IKE's).
    pub fn keyed(&self) -> bool {
        self.sa.is_some()
    }
}
