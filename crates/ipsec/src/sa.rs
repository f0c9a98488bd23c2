//! A Security Association: what RFC 4301 section 4.4.2.1 lists for an SAD entry that ESP
//! itself uses (SPI, mode, algorithm and keys, sequence counter, anti-replay window, ESN).
//!
//! An SA protects traffic in one direction (RFC 4301 section 4.1): an outbound SA uses its
//! sequence counter ([`Sa::encapsulate_transport`], [`Sa::encapsulate_tunnel`]), an inbound
//! one its anti-replay window ([`Sa::decapsulate`]); the SAD of the next step holds one of
//! each per peer. Selectors, lifetimes and the UDP encapsulation ports are the SAD's, not here.

use crate::cipher::Cipher;
use crate::replay::ReplayWindow;

/// IPsec mode (RFC 4301 section 4.1, RFC 4303 section 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// ESP between an IP header (and the extension headers that stay before it) and the
    /// upper-layer payload (RFC 4303 section 3.1.1); Next Header in the trailer says what
    /// the payload is. RFC 3776 / RFC 4877 protect BU and BA this way.
    Transport,
    /// ESP around a whole inner IPv6 or IPv4 packet (RFC 4303 section 3.1.2), Next Header 41
    /// or 4. RFC 4877 / RFC 5555 protect payload traffic to the home address this way.
    Tunnel,
}

/// ESP transforms this crate implements: the two of RFC 8221 section 5 that the project's
/// issue asks for, each in 128- and 256-bit key sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// AES-GCM with a 128-bit key and a 16-byte ICV (RFC 4106; IKEv2 transform ENCR 20).
    AesGcm128,
    /// AES-GCM with a 256-bit key and a 16-byte ICV (RFC 4106).
    AesGcm256,
    /// AES-CBC with a 128-bit key (RFC 3602) and HMAC-SHA-256-128 (RFC 4868).
    AesCbc128HmacSha256,
    /// AES-CBC with a 256-bit key (RFC 3602) and HMAC-SHA-256-128 (RFC 4868).
    AesCbc256HmacSha256,
}

impl Algorithm {
    /// Every algorithm, for tests, benches and configuration listings.
    pub const ALL: &'static [Algorithm] = &[
        Algorithm::AesGcm128,
        Algorithm::AesGcm256,
        Algorithm::AesCbc128HmacSha256,
        Algorithm::AesCbc256HmacSha256,
    ];

    /// Length of the key material [`Sa::new`] takes, laid out as IKEv2 would derive it (RFC
    /// 7296 section 2.17): GCM, the AES key then the 4-byte salt (RFC 4106 section 8.1: 20
    /// or 36 bytes); CBC, the AES key then the 32-byte HMAC key (RFC 4868 section 2.1.1: 48
    /// or 64 bytes).
    pub fn keymat_len(self) -> usize {
        match self {
            Algorithm::AesGcm128 => 16 + 4,
            Algorithm::AesGcm256 => 32 + 4,
            Algorithm::AesCbc128HmacSha256 => 16 + 32,
            Algorithm::AesCbc256HmacSha256 => 32 + 32,
        }
    }

    /// Length of the IV carried at the start of the payload: 8 bytes for GCM (RFC 4106
    /// section 3.1), one AES block for CBC (RFC 3602 section 3).
    pub fn iv_len(self) -> usize {
        match self {
            Algorithm::AesGcm128 | Algorithm::AesGcm256 => 8,
            Algorithm::AesCbc128HmacSha256 | Algorithm::AesCbc256HmacSha256 => 16,
        }
    }

    /// What the plaintext (payload, padding, Pad Length, Next Header) is padded to a
    /// multiple of (RFC 4303 section 2.4): the AES block for CBC (RFC 3602 section 2.4);
    /// for GCM, a stream mode, only the 4-byte alignment of the trailer that ESP itself
    /// requires (RFC 4106 section 3.2: "less than four octets").
    pub fn block_len(self) -> usize {
        match self {
            Algorithm::AesGcm128 | Algorithm::AesGcm256 => 4,
            Algorithm::AesCbc128HmacSha256 | Algorithm::AesCbc256HmacSha256 => 16,
        }
    }

    /// Length of the ICV, 16 bytes for all of them (RFC 4106 section 6, RFC 4868 section 2.3).
    pub fn icv_len(self) -> usize {
        crate::cipher::ICV_LEN
    }

    /// The most ESP adds to a payload of any length (RFC 4303 section 2): SPI and sequence
    /// number, IV, the longest padding, Pad Length and Next Header, ICV. What a tunnel
    /// reserves below its path MTU so that no protected packet needs fragments.
    pub fn max_overhead(self) -> usize {
        m6t_wire::esp::ESP_HEADER_LEN + self.iv_len() + self.block_len() - 1 + 2 + self.icv_len()
    }

    /// A stable name for configuration and status (strongSwan's proposal keyword).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::AesGcm128 => "aes128gcm16",
            Algorithm::AesGcm256 => "aes256gcm16",
            Algorithm::AesCbc128HmacSha256 => "aes128-sha256",
            Algorithm::AesCbc256HmacSha256 => "aes256-sha256",
        }
    }
}

/// Why an SA could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaError {
    /// SPI 0 is reserved and never sent (RFC 4303 section 2.1).
    #[error("SPI 0 is reserved (RFC 4303 section 2.1)")]
    ZeroSpi,
    /// The key material is not as long as the algorithm needs ([`Algorithm::keymat_len`]).
    #[error("{} needs {expected} bytes of key material, got {got}", .algorithm.name())]
    KeyLength {
        /// The SA's algorithm.
        algorithm: Algorithm,
        /// Bytes it needs.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
}

/// What an SA is, apart from its keys (RFC 4301 section 4.4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SaParams {
    /// Security Parameters Index, chosen by the receiver (RFC 4301 section 4.1); not 0.
    pub spi: u32,
    /// Transport or tunnel.
    pub mode: Mode,
    /// ESP transform.
    pub algorithm: Algorithm,
    /// 64-bit Extended Sequence Numbers (RFC 4303 section 2.2.1), both ends alike.
    pub esn: bool,
}

/// One Security Association as ESP uses it.
#[derive(Debug, Clone)]
pub struct Sa {
    pub(crate) params: SaParams,
    pub(crate) cipher: Cipher,
    /// Mixed into every IV, so that the IVs of two lives of a manually keyed SA differ.
    pub(crate) iv_seed: u64,
    /// The last sequence number sent, 0 before the first (RFC 4303 section 3.3.3).
    pub(crate) sent: u64,
    pub(crate) replay: ReplayWindow,
}

impl Sa {
    /// An SA with fresh counters (RFC 4303 sections 3.3.3 and 3.4.3: both start at zero).
    ///
    /// `keymat` is laid out as [`Algorithm::keymat_len`] says. `iv_seed` should be random
    /// (the caller's seed, this crate has no randomness): it enters every IV (see the crate
    /// doc), and a different seed after a restart keeps GCM IVs from repeating if the
    /// counter was not restored.
    pub fn new(params: SaParams, keymat: &[u8], iv_seed: u64) -> Result<Sa, SaError> {
        if params.spi == 0 {
            return Err(SaError::ZeroSpi);
        }
        Ok(Sa {
            params,
            cipher: Cipher::new(params.algorithm, keymat)?,
            iv_seed,
            sent: 0,
            replay: ReplayWindow::new(params.esn),
        })
    }

    /// The SA's parameters.
    pub fn params(&self) -> SaParams {
        self.params
    }

    /// The SPI (RFC 4303 section 2.1).
    pub fn spi(&self) -> u32 {
        self.params.spi
    }

    /// The last sequence number sent on this SA, 0 before the first (RFC 4303 section 3.3.3).
    /// A daemon with manual keys saves it to resume after a restart.
    pub fn last_sent(&self) -> u64 {
        self.sent
    }

    /// The highest sequence number sent is 2^32 - 1 without ESN and 2^64 - 1 with it: the
    /// counter must not cycle (RFC 4303 section 3.3.3).
    pub fn max_seq(&self) -> u64 {
        if self.params.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        }
    }

    /// Whether the counter is used up: the next encapsulation fails with
    /// [`crate::EspDrop::SeqExhausted`] and the SA must be replaced (section 3.3.3).
    pub fn exhausted(&self) -> bool {
        self.sent >= self.max_seq()
    }

    /// Continues the outbound counter after `last_sent` (RFC 4303 section 3.3.3: with manual
    /// keys and anti-replay, the sender's counter must survive reboots). Values beyond
    /// [`Self::max_seq`] leave the SA exhausted.
    pub fn resume_outbound(&mut self, last_sent: u64) {
        self.sent = last_sent;
    }

    /// Continues the inbound window after `highest` was the last number authenticated
    /// ([`crate::ReplayWindow::resume`]: everything up to it counts as seen).
    pub fn resume_inbound(&mut self, highest: u64) {
        self.replay = ReplayWindow::resume(self.params.esn, highest);
    }

    /// The anti-replay window, for status.
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }

    /// Takes the next outbound sequence number, or refuses at exhaustion without changing
    /// the counter (section 3.3.3: "MUST NOT send a packet on an SA if doing so would cause
    /// the sequence number to cycle").
    pub(crate) fn next_seq(&mut self) -> Option<u64> {
        if self.exhausted() {
            return None;
        }
        self.sent += 1;
        Some(self.sent)
    }

    /// The high 32 bits of `seq` as they enter the ICV with ESN, `None` without.
    pub(crate) fn seq_high(&self, seq: u64) -> Option<u32> {
        self.params.esn.then_some((seq >> 32) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(esn: bool) -> SaParams {
        SaParams {
            spi: 0x100,
            mode: Mode::Transport,
            algorithm: Algorithm::AesGcm128,
            esn,
        }
    }

    #[test]
    fn spi_zero_is_refused() {
        let p = SaParams {
            spi: 0,
            ..params(false)
        };
        assert_eq!(Sa::new(p, &[0; 20], 0).unwrap_err(), SaError::ZeroSpi);
    }

    #[test]
    fn key_length_error_names_the_algorithm() {
        let e = Sa::new(params(false), &[0; 16], 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "aes128gcm16 needs 20 bytes of key material, got 16"
        );
    }

    #[test]
    fn counter_starts_at_one_and_stops_before_cycling() {
        let mut sa = Sa::new(params(false), &[0; 20], 0).unwrap();
        assert_eq!(sa.last_sent(), 0);
        assert_eq!(sa.next_seq(), Some(1));
        sa.resume_outbound(u64::from(u32::MAX) - 1);
        assert_eq!(sa.next_seq(), Some(u64::from(u32::MAX)));
        assert!(sa.exhausted());
        assert_eq!(sa.next_seq(), None);
        assert_eq!(sa.next_seq(), None);
        assert_eq!(sa.last_sent(), u64::from(u32::MAX));

        let mut sa = Sa::new(params(true), &[0; 20], 0).unwrap();
        sa.resume_outbound(u64::from(u32::MAX));
        assert_eq!(sa.next_seq(), Some(1 << 32), "ESN goes on past 2^32 - 1");
        sa.resume_outbound(u64::MAX - 1);
        assert_eq!(sa.next_seq(), Some(u64::MAX));
        assert_eq!(sa.next_seq(), None);
        assert!(sa.exhausted());
    }

    #[test]
    fn seq_high_only_with_esn() {
        let sa = Sa::new(params(false), &[0; 20], 0).unwrap();
        assert_eq!(sa.seq_high(5 << 32), None);
        let sa = Sa::new(params(true), &[0; 20], 0).unwrap();
        assert_eq!(sa.seq_high((5 << 32) + 9), Some(5));
    }

    #[test]
    fn debug_shows_no_key() {
        let sa = Sa::new(params(false), &[0xab; 20], 0).unwrap();
        let s = format!("{sa:?}");
        assert!(
            !s.contains("171") && !s.to_lowercase().contains("abab"),
            "{s}"
        );
    }
}
