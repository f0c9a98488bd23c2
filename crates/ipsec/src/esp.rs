//! ESP processing (RFC 4303 section 3): building a protected packet from a payload, and
//! opening one, with the reason for every packet refused.
//!
//! Outbound, [`Sa::encapsulate_transport`] and [`Sa::encapsulate_tunnel`] append
//! `SPI | Sequence Number | IV | ciphertext | ICV` to the caller's buffer: what precedes it (the
//! outer IP header, the extension headers that stay before ESP, a UDP header for RFC 3948) is
//! the caller's, who sets the Next Header or Protocol before ESP to 50 (or UDP) and the
//! lengths. Inbound, [`Sa::decapsulate`] opens the ESP part of a packet in place.

use crate::cipher::ICV_LEN;
use crate::replay::ReplayDrop;
use crate::sa::{Mode, Sa};
use m6t_wire::esp::{EspPacket, ESP_HEADER_LEN};
use m6t_wire::{Ipv4Packet, Ipv6Packet, WireError};
use std::ops::Range;

/// Next Header of an inner IPv4 packet in tunnel mode (RFC 4303 section 2.6).
pub const NEXT_HEADER_IPV4: u8 = 4;
/// Next Header of an inner IPv6 packet in tunnel mode (RFC 4303 section 2.6).
pub const NEXT_HEADER_IPV6: u8 = 41;
/// Next Header of a dummy packet, sent for traffic flow confidentiality and silently
/// discarded by the receiver (RFC 4303 section 2.6).
pub const NEXT_HEADER_DUMMY: u8 = 59;
/// The largest ESP packet built: it must fit an IPv6 payload or an IPv4 datagram, whose
/// length fields are 16 bits (jumbograms are not carried).
pub const MAX_ESP_LEN: usize = 65535;

/// Why a packet was not protected or not accepted: each is a counter (RFC 4303 section 3.4
/// makes most of them auditable events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EspDrop {
    /// The SPI is not this SA's, or is 0 (RFC 4303 section 3.4.2: no SA, discard).
    NoSa,
    /// Shorter than the header, IV, a Pad Length and Next Header, and the ICV together.
    Truncated,
    /// The ciphertext is not a whole number of the algorithm's blocks (RFC 4303 section 2.4,
    /// RFC 3602 section 3).
    BadLength,
    /// The sequence number was already received (RFC 4303 section 3.4.3).
    Replay,
    /// The sequence number is left of the anti-replay window (RFC 4303 section 3.4.3).
    TooOld,
    /// The ICV did not verify (RFC 4303 section 3.4.4): forged, corrupted, wrong key, or an
    /// ESN inferred in the wrong subspace.
    BadIcv,
    /// Pad Length longer than the plaintext, or padding bytes not 1, 2, 3... (RFC 4303
    /// section 2.4: the receiver SHOULD inspect them).
    BadPad,
    /// Next Header 59: a dummy packet, discarded (RFC 4303 section 2.6).
    Dummy,
    /// Tunnel mode: the inner packet is not a well-formed IPv6 (41) or IPv4 (4) packet as
    /// Next Header says, or Next Header is something else (RFC 4303 section 3.1.2).
    BadInner,
    /// `encapsulate_transport` on a tunnel-mode SA or `encapsulate_tunnel` on a transport one.
    WrongMode,
    /// The ESP packet would exceed [`MAX_ESP_LEN`].
    TooLong,
    /// The outbound counter reached its maximum: the SA must be replaced, it may not cycle
    /// (RFC 4303 section 3.3.3).
    SeqExhausted,
}

impl EspDrop {
    /// Every reason, in the order status shows them.
    pub const ALL: &'static [EspDrop] = &[
        EspDrop::NoSa,
        EspDrop::Truncated,
        EspDrop::BadLength,
        EspDrop::Replay,
        EspDrop::TooOld,
        EspDrop::BadIcv,
        EspDrop::BadPad,
        EspDrop::Dummy,
        EspDrop::BadInner,
        EspDrop::WrongMode,
        EspDrop::TooLong,
        EspDrop::SeqExhausted,
    ];

    /// A stable snake_case name for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            EspDrop::NoSa => "no_sa",
            EspDrop::Truncated => "truncated",
            EspDrop::BadLength => "bad_length",
            EspDrop::Replay => "replay",
            EspDrop::TooOld => "too_old",
            EspDrop::BadIcv => "bad_icv",
            EspDrop::BadPad => "bad_pad",
            EspDrop::Dummy => "dummy",
            EspDrop::BadInner => "bad_inner",
            EspDrop::WrongMode => "wrong_mode",
            EspDrop::TooLong => "too_long",
            EspDrop::SeqExhausted => "seq_exhausted",
        }
    }
}

impl From<ReplayDrop> for EspDrop {
    fn from(r: ReplayDrop) -> Self {
        match r {
            ReplayDrop::Duplicate => EspDrop::Replay,
            ReplayDrop::TooOld => EspDrop::TooOld,
        }
    }
}

/// An opened ESP packet (RFC 4303 section 3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The full (64-bit with ESN) sequence number, authenticated.
    pub seq: u64,
    /// The Next Header of the trailer: the upper-layer protocol in transport mode, 41 or 4 in
    /// tunnel mode.
    pub next_header: u8,
    /// Where the decrypted payload is in the buffer given to [`Sa::decapsulate`]: the
    /// upper-layer data in transport mode, the whole inner packet in tunnel mode.
    pub payload: Range<usize>,
}

/// Padding length so that payload, padding, Pad Length and Next Header fill whole blocks
/// (RFC 4303 section 2.4; the block is at least 4 bytes, which also aligns the ICV).
fn pad_len(block: usize, payload_len: usize) -> usize {
    (block - (payload_len + 2) % block) % block
}

/// The Next Header that says what `inner` is, if it is a well-formed IP packet.
fn inner_next_header(inner: &[u8]) -> Option<u8> {
    match inner.first()? >> 4 {
        6 if Ipv6Packet::new_checked(inner).is_ok() => Some(NEXT_HEADER_IPV6),
        4 if Ipv4Packet::new_checked(inner).is_ok() => Some(NEXT_HEADER_IPV4),
        _ => None,
    }
}

impl Sa {
    /// Bytes that ESP adds to a payload of `payload_len` bytes: header, IV, padding, Pad
    /// Length, Next Header and ICV. A caller reserves this much to encapsulate with no
    /// allocation.
    pub fn overhead(&self, payload_len: usize) -> usize {
        let a = self.params.algorithm;
        ESP_HEADER_LEN + a.iv_len() + pad_len(a.block_len(), payload_len) + 2 + ICV_LEN
    }

    /// Protects an upper-layer payload in transport mode (RFC 4303 section 3.1.1): appends the
    /// ESP packet to `out`, `next_header` in its trailer, and returns the sequence number used.
    ///
    /// `out` may already hold the headers that go before ESP; it grows by
    /// [`Self::overhead`]`(payload.len())` + `payload.len()` bytes and does not allocate if it
    /// has that capacity. On error nothing is appended and no sequence number is used.
    pub fn encapsulate_transport(
        &mut self,
        next_header: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u64, EspDrop> {
        if self.params.mode != Mode::Transport {
            return Err(EspDrop::WrongMode);
        }
        self.encapsulate(next_header, payload, out)
    }

    /// Protects a whole IPv6 or IPv4 packet in tunnel mode (RFC 4303 section 3.1.2): Next
    /// Header 41 or 4 from the packet's version, after checking it with the wire views
    /// ([`EspDrop::BadInner`] otherwise). As [`Self::encapsulate_transport`] otherwise.
    pub fn encapsulate_tunnel(&mut self, inner: &[u8], out: &mut Vec<u8>) -> Result<u64, EspDrop> {
        if self.params.mode != Mode::Tunnel {
            return Err(EspDrop::WrongMode);
        }
        let next_header = inner_next_header(inner).ok_or(EspDrop::BadInner)?;
        self.encapsulate(next_header, payload_of(inner), out)
    }

    /// A dummy packet (RFC 4303 section 2.6: Next Header 59, no payload), which the receiver
    /// authenticates and discards: an authenticated keep-alive. Either mode.
    pub fn encapsulate_dummy(&mut self, out: &mut Vec<u8>) -> Result<u64, EspDrop> {
        self.encapsulate(NEXT_HEADER_DUMMY, &[], out)
    }

    /// RFC 4303 section 3.3: sequence number, IV, padding, encryption, ICV.
    fn encapsulate(
        &mut self,
        next_header: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u64, EspDrop> {
        let a = self.params.algorithm;
        let pad = pad_len(a.block_len(), payload.len());
        if payload.len() + self.overhead(payload.len()) > MAX_ESP_LEN {
            return Err(EspDrop::TooLong);
        }
        let seq = self.next_seq().ok_or(EspDrop::SeqExhausted)?;
        let start = out.len();
        out.reserve(payload.len() + self.overhead(payload.len()));
        out.extend_from_slice(&self.params.spi.to_be_bytes());
        // Only the low 32 bits travel (RFC 4303 section 2.2.1).
        out.extend_from_slice(&(seq as u32).to_be_bytes());
        let iv_at = out.len();
        out.resize(iv_at + a.iv_len(), 0);
        self.cipher.make_iv(self.iv_seed, seq, &mut out[iv_at..]);
        out.extend_from_slice(payload);
        // The default padding, 1, 2, 3... (RFC 4303 section 2.4); pad < 16 so it fits a u8.
        out.extend(1..=pad as u8);
        out.push(pad as u8);
        out.push(next_header);
        let icv = self.cipher.seal(&mut out[start..], self.seq_high(seq));
        out.extend_from_slice(&icv);
        Ok(seq)
    }

    /// Opens an ESP packet (`SPI` to the end of the ICV) in place, in the order of RFC 4303
    /// section 3.4: SPI, lengths, the anti-replay check, the ICV (before anything inside is
    /// trusted or decrypted), then the window is moved, and only then padding and Next Header
    /// are read. Tunnel mode also checks the inner packet with the wire views.
    ///
    /// On success the buffer holds the plaintext at [`Opened::payload`]. A packet refused
    /// before its ICV verified leaves the SA unchanged, and the buffer too except that a GCM
    /// packet with a bad ICV has its ciphertext zeroed (decryption and authentication are one
    /// pass, RFC 4303 section 3.4.4.2); one refused after
    /// (bad padding, dummy, bad inner packet) has used up its sequence number, as the section
    /// says the window moves once integrity is verified.
    pub fn decapsulate(&mut self, packet: &mut [u8]) -> Result<Opened, EspDrop> {
        let (spi, seq_low) = match EspPacket::new_checked(&packet[..]) {
            Ok(p) => (p.spi(), p.seq()),
            Err(WireError::Truncated) => return Err(EspDrop::Truncated),
            Err(_) => return Err(EspDrop::NoSa),
        };
        if spi != self.params.spi {
            return Err(EspDrop::NoSa);
        }
        let a = self.params.algorithm;
        let start = ESP_HEADER_LEN + a.iv_len();
        let ct_len = packet
            .len()
            .checked_sub(start + ICV_LEN)
            .filter(|n| *n >= 2)
            .ok_or(EspDrop::Truncated)?;
        if ct_len % a.block_len() != 0 {
            return Err(EspDrop::BadLength);
        }
        let seq = self.replay.check(seq_low)?;
        self.cipher
            .open(packet, self.seq_high(seq))
            .map_err(|_| EspDrop::BadIcv)?;
        self.replay.accept(seq)?;
        let end = start + ct_len;
        let (pad, next_header) = (usize::from(packet[end - 2]), packet[end - 1]);
        let payload_end = (end - 2).checked_sub(pad).filter(|e| *e >= start);
        let payload_end = payload_end.ok_or(EspDrop::BadPad)?;
        let padding = &packet[payload_end..end - 2];
        if !padding.iter().zip(1..=u8::MAX).all(|(b, i)| *b == i) {
            return Err(EspDrop::BadPad);
        }
        if next_header == NEXT_HEADER_DUMMY {
            return Err(EspDrop::Dummy);
        }
        let payload = start..payload_end;
        if self.params.mode == Mode::Tunnel
            && inner_next_header(&packet[payload.clone()]) != Some(next_header)
        {
            return Err(EspDrop::BadInner);
        }
        Ok(Opened {
            seq,
            next_header,
            payload,
        })
    }
}

/// The bytes of a checked inner packet that are the packet: an IPv4 datagram up to its Total
/// Length (link-layer padding after it is not carried), an IPv6 packet whole.
fn payload_of(inner: &[u8]) -> &[u8] {
    match Ipv4Packet::new_checked(inner) {
        Ok(p) => &inner[..usize::from(p.total_len())],
        Err(_) => inner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sa::{Algorithm, SaParams};
    use m6t_wire::{Ipv4Repr, Ipv6Repr};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn keymat(a: Algorithm, fill: u8) -> Vec<u8> {
        (0..a.keymat_len())
            .map(|i| fill.wrapping_add(i as u8))
            .collect()
    }

    /// A sending and a receiving SA with the same parameters and keys.
    fn pair(a: Algorithm, mode: Mode, esn: bool) -> (Sa, Sa) {
        let p = SaParams {
            spi: 0x4242,
            mode,
            algorithm: a,
            esn,
        };
        let k = keymat(a, 3);
        (Sa::new(p, &k, 77).unwrap(), Sa::new(p, &k, 0).unwrap())
    }

    fn ipv6_packet(payload_len: usize) -> Vec<u8> {
        let mut b = vec![0xa5; 40 + payload_len];
        Ipv6Repr {
            src: Ipv6Addr::LOCALHOST,
            dst: "2001:db8::1".parse().unwrap(),
            next_header: 17,
            payload_len: payload_len as u16,
            hop_limit: 64,
        }
        .emit(&mut b)
        .unwrap();
        b
    }

    fn ipv4_packet(payload_len: usize) -> Vec<u8> {
        let mut b = vec![0x5a; 20 + payload_len];
        Ipv4Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(198, 51, 100, 7),
            protocol: 17,
            payload_len: payload_len as u16,
            ttl: 64,
            dont_frag: true,
        }
        .emit(&mut b)
        .unwrap();
        b
    }

    #[test]
    fn max_overhead_is_the_largest_overhead_of_any_payload_length() {
        for &a in Algorithm::ALL {
            let most = (0..2000)
                .map(|n| ESP_HEADER_LEN + a.iv_len() + pad_len(a.block_len(), n) + 2 + ICV_LEN)
                .max();
            assert_eq!(most, Some(a.max_overhead()), "{a:?}");
        }
        assert_eq!(Algorithm::AesGcm128.max_overhead(), 37);
    }

    #[test]
    fn pad_lengths() {
        // GCM: trailer ends on 4 bytes; CBC: on 16.
        assert_eq!(pad_len(4, 0), 2);
        assert_eq!(pad_len(4, 2), 0);
        assert_eq!(pad_len(4, 3), 3);
        assert_eq!(pad_len(16, 14), 0);
        assert_eq!(pad_len(16, 15), 15);
        assert_eq!(pad_len(16, 0), 14);
        for block in [4, 16] {
            for n in 0..100 {
                let p = pad_len(block, n);
                assert!(p < block && (n + p + 2) % block == 0);
            }
        }
    }

    #[test]
    fn transport_round_trip_every_algorithm_and_length() {
        for &a in Algorithm::ALL {
            for esn in [false, true] {
                let (mut tx, mut rx) = pair(a, Mode::Transport, esn);
                for n in 0..70usize {
                    let payload: Vec<u8> = (0..n as u8).collect();
                    let mut out = vec![0xee; 3];
                    let seq = tx.encapsulate_transport(135, &payload, &mut out).unwrap();
                    assert_eq!(out.len(), 3 + n + tx.overhead(n));
                    assert_eq!(&out[..3], &[0xee; 3], "what was in out is kept");
                    let esp = &mut out[3..];
                    // Trailer and ICV aligned (RFC 4303 section 2.4), ciphertext in blocks.
                    assert_eq!(esp.len() % 4, 0);
                    assert_eq!((esp.len() - 8 - a.iv_len() - 16) % a.block_len(), 0);
                    let o = rx.decapsulate(esp).unwrap();
                    assert_eq!(o.seq, seq);
                    assert_eq!(o.next_header, 135);
                    assert_eq!(&esp[o.payload], &payload[..], "{a:?} esn {esn} len {n}");
                }
            }
        }
    }

    #[test]
    fn tunnel_round_trip_ipv6_and_ipv4() {
        for &a in Algorithm::ALL {
            let (mut tx, mut rx) = pair(a, Mode::Tunnel, true);
            for (inner, nh) in [(ipv6_packet(100), 41), (ipv4_packet(33), 4)] {
                let mut out = Vec::new();
                tx.encapsulate_tunnel(&inner, &mut out).unwrap();
                let o = rx.decapsulate(&mut out).unwrap();
                assert_eq!(o.next_header, nh);
                assert_eq!(&out[o.payload], &inner[..]);
            }
            // Link-layer padding after an IPv4 datagram is not carried.
            let mut padded = ipv4_packet(6);
            padded.resize(46, 0);
            let mut out = Vec::new();
            tx.encapsulate_tunnel(&padded, &mut out).unwrap();
            let o = rx.decapsulate(&mut out).unwrap();
            assert_eq!(&out[o.payload], &padded[..26]);
        }
    }

    #[test]
    fn tunnel_refuses_what_is_not_ip() {
        let (mut tx, _) = pair(Algorithm::AesGcm128, Mode::Tunnel, false);
        let mut out = Vec::new();
        for bad in [&[][..], &[0x60; 39], &[0x45; 20], &[0x10; 60]] {
            assert_eq!(tx.encapsulate_tunnel(bad, &mut out), Err(EspDrop::BadInner));
        }
        let mut v6 = ipv6_packet(10);
        v6.push(0);
        assert_eq!(tx.encapsulate_tunnel(&v6, &mut out), Err(EspDrop::BadInner));
        assert!(out.is_empty());
        assert_eq!(tx.last_sent(), 0, "no sequence number used");
    }

    #[test]
    fn modes_are_not_mixed() {
        let (mut tx, _) = pair(Algorithm::AesGcm128, Mode::Tunnel, false);
        let mut out = Vec::new();
        assert_eq!(
            tx.encapsulate_transport(6, b"x", &mut out),
            Err(EspDrop::WrongMode)
        );
        let (mut tx, _) = pair(Algorithm::AesGcm128, Mode::Transport, false);
        assert_eq!(
            tx.encapsulate_tunnel(&ipv6_packet(0), &mut out),
            Err(EspDrop::WrongMode)
        );
        assert_eq!(tx.last_sent(), 0);
    }

    /// A transport SA and a tunnel SA sharing SPI and keys: what the transport one sends with
    /// Next Header 41 but a non-IPv6 payload is refused by the tunnel one after the ICV.
    #[test]
    fn tunnel_checks_the_inner_packet_after_the_icv() {
        for &a in Algorithm::ALL {
            let (mut tx, _) = pair(a, Mode::Transport, false);
            let (_, mut rx) = pair(a, Mode::Tunnel, false);
            let mut out = Vec::new();
            tx.encapsulate_transport(41, &ipv4_packet(8), &mut out)
                .unwrap();
            assert_eq!(rx.decapsulate(&mut out), Err(EspDrop::BadInner));
            out.clear();
            tx.encapsulate_transport(6, &ipv6_packet(8), &mut out)
                .unwrap();
            assert_eq!(rx.decapsulate(&mut out), Err(EspDrop::BadInner));
            assert_eq!(
                rx.replay_window().top(),
                2,
                "the numbers are used up all the same"
            );
        }
    }

    #[test]
    fn dummy_packets_are_discarded() {
        let (mut tx, mut rx) = pair(Algorithm::AesCbc128HmacSha256, Mode::Transport, false);
        let mut out = Vec::new();
        tx.encapsulate_transport(NEXT_HEADER_DUMMY, &[0; 20], &mut out)
            .unwrap();
        assert_eq!(rx.decapsulate(&mut out), Err(EspDrop::Dummy));
    }

    #[test]
    fn replay_and_too_old() {
        for &a in Algorithm::ALL {
            let (mut tx, mut rx) = pair(a, Mode::Transport, false);
            let mut first = Vec::new();
            tx.encapsulate_transport(17, b"hello", &mut first).unwrap();
            let copy = first.clone();
            rx.decapsulate(&mut first).unwrap();
            let mut again = copy.clone();
            assert_eq!(rx.decapsulate(&mut again), Err(EspDrop::Replay));
            assert_eq!(again, copy, "refused before the ICV: buffer untouched");
            // Push the window far ahead: the first packet is now too old.
            tx.resume_outbound(10_000);
            let mut later = Vec::new();
            tx.encapsulate_transport(17, b"later", &mut later).unwrap();
            rx.decapsulate(&mut later).unwrap();
            let mut again = copy.clone();
            assert_eq!(rx.decapsulate(&mut again), Err(EspDrop::TooOld));
        }
    }

    /// Every single byte changed after the header, and every byte of the SPI and sequence
    /// number, is refused without moving the window; a CBC packet's buffer is not touched.
    #[test]
    fn every_tampered_byte_is_refused() {
        for &a in Algorithm::ALL {
            for esn in [false, true] {
                let (mut tx, mut rx) = pair(a, Mode::Transport, esn);
                let mut pkt = Vec::new();
                tx.encapsulate_transport(17, &[1, 2, 3, 4, 5, 6, 7], &mut pkt)
                    .unwrap();
                for i in 0..pkt.len() {
                    let mut bad = pkt.clone();
                    // The top bit: flipping the low one of the sequence number 1 would make it
                    // 0, refused as a replay before the ICV.
                    bad[i] ^= 0x80;
                    let copy = bad.clone();
                    let got = rx.decapsulate(&mut bad);
                    let expect = if i < 4 {
                        EspDrop::NoSa
                    } else {
                        EspDrop::BadIcv
                    };
                    assert_eq!(got, Err(expect), "{a:?} esn {esn} byte {i}");
                    if a.iv_len() == 16 || i < 4 {
                        assert_eq!(bad, copy);
                    }
                    assert_eq!(rx.replay_window().top(), 0);
                }
                assert!(rx.decapsulate(&mut pkt).is_ok());
            }
        }
    }

    #[test]
    fn wrong_key_is_bad_icv() {
        for &a in Algorithm::ALL {
            let (mut tx, _) = pair(a, Mode::Transport, false);
            let p = tx.params();
            let mut rx = Sa::new(p, &keymat(a, 4), 0).unwrap();
            let mut pkt = Vec::new();
            tx.encapsulate_transport(17, b"secret", &mut pkt).unwrap();
            assert_eq!(rx.decapsulate(&mut pkt), Err(EspDrop::BadIcv));
        }
    }

    #[test]
    fn lengths_are_checked_before_anything_else() {
        for &a in Algorithm::ALL {
            let (mut tx, mut rx) = pair(a, Mode::Transport, false);
            let mut pkt = Vec::new();
            tx.encapsulate_transport(17, &[9; 30], &mut pkt).unwrap();
            let min = 8 + a.iv_len() + a.block_len() + 16;
            for n in 0..min {
                let mut short = pkt[..n].to_vec();
                // Room for header, IV, Pad Length, Next Header and ICV, or truncated; then the
                // ciphertext is shorter than a block, so not a whole number of them.
                let expect = if n < 8 + a.iv_len() + 2 + 16 {
                    EspDrop::Truncated
                } else {
                    EspDrop::BadLength
                };
                assert_eq!(rx.decapsulate(&mut short), Err(expect), "{a:?} {n}");
            }
            // One byte short: the ciphertext is no longer whole blocks.
            let mut cut = pkt[..pkt.len() - 1].to_vec();
            assert_eq!(rx.decapsulate(&mut cut), Err(EspDrop::BadLength));
            let mut zero_spi = pkt.clone();
            zero_spi[..4].fill(0);
            assert_eq!(rx.decapsulate(&mut zero_spi), Err(EspDrop::NoSa));
        }
    }

    #[test]
    fn exhaustion_refuses_and_says_so() {
        for esn in [false, true] {
            let (mut tx, mut rx) = pair(Algorithm::AesGcm256, Mode::Transport, esn);
            let last = if esn { u64::MAX } else { u64::from(u32::MAX) };
            tx.resume_outbound(last - 1);
            rx.resume_inbound(last - 2);
            let mut out = Vec::new();
            assert_eq!(tx.encapsulate_transport(17, b"x", &mut out), Ok(last));
            assert_eq!(rx.decapsulate(&mut out).unwrap().seq, last);
            let mut more = Vec::new();
            assert_eq!(
                tx.encapsulate_transport(17, b"y", &mut more),
                Err(EspDrop::SeqExhausted)
            );
            assert!(more.is_empty());
            assert!(tx.exhausted());
            assert_eq!(tx.last_sent(), last);
        }
    }

    #[test]
    fn esn_crosses_the_32_bit_boundary() {
        for &a in Algorithm::ALL {
            let (mut tx, mut rx) = pair(a, Mode::Transport, true);
            tx.resume_outbound(u64::from(u32::MAX) - 3);
            rx.resume_inbound(u64::from(u32::MAX) - 3);
            let mut pkts = Vec::new();
            for i in 0..8u8 {
                let mut out = Vec::new();
                tx.encapsulate_transport(17, &[i], &mut out).unwrap();
                pkts.push(out);
            }
            // Deliver in reverse: the later ones (subspace 1) first, then the earlier ones,
            // whose high bits are inferred back to subspace 0.
            for (i, p) in pkts.iter_mut().enumerate().rev() {
                let o = rx.decapsulate(p).unwrap();
                assert_eq!(o.seq, u64::from(u32::MAX) - 2 + i as u64, "{a:?}");
                assert_eq!(&p[o.payload], &[i as u8]);
            }
        }
    }

    /// Without ESN the high bits are not in the ICV: an ESN receiver cannot open it.
    #[test]
    fn esn_mismatch_is_bad_icv() {
        for &a in Algorithm::ALL {
            let (mut tx, _) = pair(a, Mode::Transport, false);
            let (_, mut rx) = pair(a, Mode::Transport, true);
            tx.resume_outbound(1 << 20);
            rx.resume_inbound(1 << 20);
            let mut out = Vec::new();
            tx.encapsulate_transport(17, b"z", &mut out).unwrap();
            // Seq high is 0 on both sides here, so GCM's AAD differs (8 vs 12 bytes) and
            // CBC's ICV input differs (4 more bytes): both refuse.
            assert_eq!(rx.decapsulate(&mut out), Err(EspDrop::BadIcv));
        }
    }

    #[test]
    fn too_long_is_refused_before_a_number_is_used() {
        let (mut tx, _) = pair(Algorithm::AesGcm128, Mode::Transport, false);
        let big = vec![0; MAX_ESP_LEN];
        let mut out = Vec::new();
        assert_eq!(
            tx.encapsulate_transport(17, &big, &mut out),
            Err(EspDrop::TooLong)
        );
        assert_eq!(tx.last_sent(), 0);
        // ESP packets are whole 4-byte words: 65532 bytes is the most, a 65498-byte payload
        // with no padding; one byte more needs three of padding and goes past 65535.
        assert_eq!(tx.encapsulate_transport(17, &big[..65498], &mut out), Ok(1));
        assert_eq!(out.len(), 65532);
        out.clear();
        assert_eq!(
            tx.encapsulate_transport(17, &big[..65499], &mut out),
            Err(EspDrop::TooLong)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn drop_names_are_unique() {
        let names: std::collections::HashSet<_> = EspDrop::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(names.len(), EspDrop::ALL.len());
    }

    proptest! {
        /// Random bytes under a valid SPI never panic and are never accepted.
        #[test]
        fn random_packets_are_refused(alg in 0usize..4, esn in any::<bool>(),
                                      mut body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let a = Algorithm::ALL[alg];
            let (_, mut rx) = pair(a, Mode::Transport, esn);
            if body.len() >= 4 {
                body[..4].copy_from_slice(&0x4242u32.to_be_bytes());
            }
            prop_assert!(rx.decapsulate(&mut body).is_err());
            prop_assert_eq!(rx.replay_window().top(), 0);
        }

        #[test]
        fn round_trip(alg in 0usize..4, esn in any::<bool>(), nh in any::<u8>(),
                      payload in proptest::collection::vec(any::<u8>(), 0..300), start in any::<u64>()) {
            prop_assume!(nh != NEXT_HEADER_DUMMY);
            let a = Algorithm::ALL[alg];
            let (mut tx, mut rx) = pair(a, Mode::Transport, esn);
            let start = if esn { start >> 1 } else { start % u64::from(u32::MAX - 1) };
            tx.resume_outbound(start);
            rx.resume_inbound(start);
            let mut out = Vec::new();
            let seq = tx.encapsulate_transport(nh, &payload, &mut out).unwrap();
            let o = rx.decapsulate(&mut out).unwrap();
            prop_assert_eq!(o.seq, seq);
            prop_assert_eq!(o.next_header, nh);
            prop_assert_eq!(&out[o.payload], &payload[..]);
        }
    }
}
