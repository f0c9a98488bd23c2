//! The Mobility Header (RFC 6275 section 6.1) with the messages a home agent and a mobile
//! node exchange (BRR, BU, BA, BE), the mobility options of RFC 6275 section 6.2 and
//! RFC 3963 (Mobile Network Prefix), and the DSMIPv6 options of RFC 5555 section 3 (IPv4
//! Home Address, IPv4 Address Acknowledgement, NAT Detection, IPv4 Care-of Address).
//! Values are the IANA ones (../shared/specs/numbers.md), not the TBDs of the draft.
//!
//! There is no zero-copy view of a Mobility Header: [`MhRepr::parse`] checks a message
//! (length, Payload Proto, checksum, known type and option lengths) and copies it into an
//! owned [`MhRepr`]; [`MhRepr::emit`] writes one, padded and with its checksum.

use crate::checksum;
use crate::WireError;
use std::net::{Ipv4Addr, Ipv6Addr};

/// IPv6 Next Header value of the Mobility Header.
pub const NEXT_HEADER_MH: u8 = 135;
/// Payload Proto a sender sets (IPPROTO_NONE, RFC 6275 section 6.1.1).
pub const PAYLOAD_PROTO_NONE: u8 = 59;
/// Most options accepted in one message (a 2 KiB message holds at most ~1000 Pad1s; real
/// messages carry a handful): bounds the work and memory a hostile message can cause.
pub const MAX_OPTIONS: usize = 64;

/// BU flags (RFC 6275 section 6.1.7, RFC 3963, RFC 5555 section 3.1.3).
pub mod bu_flags {
    /// Acknowledge.
    pub const A: u16 = 0x8000;
    /// Home registration.
    pub const H: u16 = 0x4000;
    /// Link-local address compatibility.
    pub const L: u16 = 0x2000;
    /// Key management mobility capability.
    pub const K: u16 = 0x1000;
    /// MAP registration (RFC 5380).
    pub const M: u16 = 0x0800;
    /// Mobile router (RFC 3963).
    pub const R: u16 = 0x0400;
    /// Proxy registration (RFC 5213).
    pub const P: u16 = 0x0200;
    /// Force UDP encapsulation (RFC 5555).
    pub const F: u16 = 0x0100;
    /// TLV-header format (RFC 5845 section 7.2).
    pub const T: u16 = 0x0080;
}

/// BA flags (RFC 6275 section 6.1.8, RFC 3963, RFC 5845).
pub mod ba_flags {
    /// Key management mobility capability.
    pub const K: u8 = 0x80;
    /// Mobile router.
    pub const R: u8 = 0x40;
    /// Proxy registration.
    pub const P: u8 = 0x20;
    /// TLV-header format accepted.
    pub const T: u8 = 0x10;
}

/// Mobility option types.
pub mod opt {
    /// Pad1 (one octet, no length).
    pub const PAD1: u8 = 0;
    /// PadN.
    pub const PADN: u8 = 1;
    /// Binding Refresh Advice.
    pub const BRA: u8 = 2;
    /// Alternate Care-of Address.
    pub const ALT_COA: u8 = 3;
    /// Mobile Network Prefix (RFC 3963).
    pub const MNP: u8 = 6;
    /// IPv4 Home Address (RFC 5555).
    pub const IPV4_HOA: u8 = 29;
    /// IPv4 Address Acknowledgement (RFC 5555).
    pub const IPV4_ACK: u8 = 30;
    /// NAT Detection (RFC 5555).
    pub const NAT_DETECTION: u8 = 31;
    /// IPv4 Care-of Address (RFC 5555).
    pub const IPV4_COA: u8 = 32;
}

/// One mobility option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MobilityOption {
    /// Binding Refresh Advice: refresh interval in units of 4 seconds.
    BindingRefreshAdvice(u16),
    /// Alternate Care-of Address.
    AlternateCoa(Ipv6Addr),
    /// Mobile Network Prefix (RFC 3963 section 6.2).
    MobileNetworkPrefix {
        /// Prefix length.
        len: u8,
        /// Prefix.
        prefix: Ipv6Addr,
    },
    /// IPv4 Home Address (RFC 5555 section 3.1.1); 0.0.0.0 asks for a dynamic address.
    Ipv4HomeAddress {
        /// Prefix length (6 bits, 1..=32).
        prefix_len: u8,
        /// P flag: a prefix is requested.
        p: bool,
        /// The address.
        addr: Ipv4Addr,
    },
    /// IPv4 Address Acknowledgement (RFC 5555 section 3.2.1).
    Ipv4AddressAck {
        /// Status (0-127 success).
        status: u8,
        /// Prefix length (6 bits).
        prefix_len: u8,
        /// The IPv4 home address.
        addr: Ipv4Addr,
    },
    /// NAT Detection (RFC 5555 section 3.2.2).
    NatDetection {
        /// F flag: UDP encapsulation forced.
        f: bool,
        /// Keep-alive refresh time in seconds.
        refresh: u32,
    },
    /// IPv4 Care-of Address (RFC 5555 section 3.1.2).
    Ipv4CareOfAddress(Ipv4Addr),
    /// An option this implementation does not know: skipped (RFC 6275 section 6.2.1),
    /// only its type kept ([`MhRepr::emit`] writes it back with no data).
    Unknown(u8),
}

impl MobilityOption {
    fn kind(&self) -> u8 {
        match self {
            MobilityOption::BindingRefreshAdvice(_) => opt::BRA,
            MobilityOption::AlternateCoa(_) => opt::ALT_COA,
            MobilityOption::MobileNetworkPrefix { .. } => opt::MNP,
            MobilityOption::Ipv4HomeAddress { .. } => opt::IPV4_HOA,
            MobilityOption::Ipv4AddressAck { .. } => opt::IPV4_ACK,
            MobilityOption::NatDetection { .. } => opt::NAT_DETECTION,
            MobilityOption::Ipv4CareOfAddress(_) => opt::IPV4_COA,
            MobilityOption::Unknown(t) => *t,
        }
    }

    /// Alignment `(x, y)`: the option's type octet goes at an offset `x*n + y` from the
    /// start of the Mobility Header (RFC 6275 section 6.2 notation).
    fn alignment(&self) -> (usize, usize) {
        match self {
            MobilityOption::BindingRefreshAdvice(_) => (2, 0),
            MobilityOption::AlternateCoa(_) => (8, 6),
            MobilityOption::MobileNetworkPrefix { .. } => (8, 4),
            _ => (4, 0),
        }
    }

    fn data_len(&self) -> usize {
        match self {
            MobilityOption::BindingRefreshAdvice(_) => 2,
            MobilityOption::AlternateCoa(_) => 16,
            MobilityOption::MobileNetworkPrefix { .. } => 18,
            MobilityOption::Unknown(_) => 0,
            _ => 6,
        }
    }

    fn emit_data(&self, d: &mut [u8]) {
        match self {
            MobilityOption::BindingRefreshAdvice(v) => d.copy_from_slice(&v.to_be_bytes()),
            MobilityOption::AlternateCoa(a) => d.copy_from_slice(&a.octets()),
            MobilityOption::MobileNetworkPrefix { len, prefix } => {
                d[0] = 0;
                d[1] = *len;
                d[2..].copy_from_slice(&prefix.octets());
            }
            MobilityOption::Ipv4HomeAddress {
                prefix_len,
                p,
                addr,
            } => {
                let w = (u16::from(*prefix_len & 0x3f) << 10) | if *p { 0x0200 } else { 0 };
                d[..2].copy_from_slice(&w.to_be_bytes());
                d[2..].copy_from_slice(&addr.octets());
            }
            MobilityOption::Ipv4AddressAck {
                status,
                prefix_len,
                addr,
            } => {
                d[0] = *status;
                d[1] = (prefix_len & 0x3f) << 2;
                d[2..].copy_from_slice(&addr.octets());
            }
            MobilityOption::NatDetection { f, refresh } => {
                d[0] = if *f { 0x80 } else { 0 };
                d[1] = 0;
                d[2..].copy_from_slice(&refresh.to_be_bytes());
            }
            MobilityOption::Ipv4CareOfAddress(a) => {
                d[..2].fill(0);
                d[2..].copy_from_slice(&a.octets());
            }
            MobilityOption::Unknown(_) => {}
        }
    }

    fn parse(t: u8, d: &[u8]) -> Result<Self, WireError> {
        let need = |n: usize| {
            if d.len() == n {
                Ok(())
            } else {
                Err(WireError::Malformed)
            }
        };
        let v4 = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
        let v6 = |b: &[u8]| {
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            Ipv6Addr::from(o)
        };
        Ok(match t {
            opt::BRA => {
                need(2)?;
                MobilityOption::BindingRefreshAdvice(u16::from_be_bytes([d[0], d[1]]))
            }
            opt::ALT_COA => {
                need(16)?;
                MobilityOption::AlternateCoa(v6(d))
            }
            opt::MNP => {
                need(18)?;
                if d[1] > 128 {
                    return Err(WireError::Malformed);
                }
                MobilityOption::MobileNetworkPrefix {
                    len: d[1],
                    prefix: v6(&d[2..]),
                }
            }
            opt::IPV4_HOA => {
                need(6)?;
                let w = u16::from_be_bytes([d[0], d[1]]);
                MobilityOption::Ipv4HomeAddress {
                    prefix_len: (w >> 10) as u8,
                    p: w & 0x0200 != 0,
                    addr: v4(&d[2..]),
                }
            }
            opt::IPV4_ACK => {
                need(6)?;
                MobilityOption::Ipv4AddressAck {
                    status: d[0],
                    prefix_len: d[1] >> 2,
                    addr: v4(&d[2..]),
                }
            }
            opt::NAT_DETECTION => {
                need(6)?;
                MobilityOption::NatDetection {
                    f: d[0] & 0x80 != 0,
                    refresh: u32::from_be_bytes([d[2], d[3], d[4], d[5]]),
                }
            }
            opt::IPV4_COA => {
                need(6)?;
                MobilityOption::Ipv4CareOfAddress(v4(&d[2..]))
            }
            other => MobilityOption::Unknown(other),
        })
    }
}

/// The message of a Mobility Header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MhMessage {
    /// Binding Refresh Request (type 0).
    Brr,
    /// Binding Update (type 5).
    Bu {
        /// Sequence number.
        seq: u16,
        /// Flags word (see [`bu_flags`]).
        flags: u16,
        /// Lifetime in units of 4 seconds.
        lifetime: u16,
    },
    /// Binding Acknowledgement (type 6).
    Ba {
        /// Status (< 128 accepted).
        status: u8,
        /// Flags octet (see [`ba_flags`]).
        flags: u8,
        /// Sequence number.
        seq: u16,
        /// Granted lifetime in units of 4 seconds.
        lifetime: u16,
    },
    /// Binding Error (type 7).
    Be {
        /// Status (1: unknown binding for Home Address option, 2: unrecognised MH type).
        status: u8,
        /// The home address concerned.
        home: Ipv6Addr,
    },
}

/// MH Type of a Binding Refresh Request (RFC 6275 section 6.1.2).
pub const MH_TYPE_BRR: u8 = 0;
/// MH Type of a Binding Update.
pub const MH_TYPE_BU: u8 = 5;
/// MH Type of a Binding Acknowledgement.
pub const MH_TYPE_BA: u8 = 6;
/// MH Type of a Binding Error.
pub const MH_TYPE_BE: u8 = 7;

impl MhMessage {
    fn mh_type(&self) -> u8 {
        match self {
            MhMessage::Brr => MH_TYPE_BRR,
            MhMessage::Bu { .. } => MH_TYPE_BU,
            MhMessage::Ba { .. } => MH_TYPE_BA,
            MhMessage::Be { .. } => MH_TYPE_BE,
        }
    }

    fn fixed_len(t: u8) -> Option<usize> {
        match t {
            0 => Some(2),
            5 => Some(6),
            6 => Some(6),
            7 => Some(18),
            _ => None,
        }
    }
}

/// Why a Mobility Header was refused, with what RFC 6275 section 9.2 says to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MhError {
    /// Shorter than its Header Len says, or not a multiple of 8, or options run past the end:
    /// ICMPv6 Parameter Problem code 0 (pointing at Header Len).
    BadLength,
    /// Payload Proto is not 59: ICMPv6 Parameter Problem code 0.
    BadPayloadProto,
    /// Checksum does not verify: silently dropped.
    BadChecksum,
    /// MH Type not known: Binding Error status 2.
    UnknownType(u8),
    /// A known option with a wrong length.
    BadOption,
}

/// A parsed (or to-be-emitted) Mobility Header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MhRepr {
    /// The message.
    pub msg: MhMessage,
    /// Its options, in order, padding left out.
    pub options: Vec<MobilityOption>,
}

impl MhRepr {
    /// Parses and verifies a Mobility Header carried from `src` to `dst` (the addresses of
    /// the checksum pseudo-header). The message is the first (Header Len + 1) * 8 bytes of
    /// `b`; bytes after it are ignored.
    pub fn parse(b: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<MhRepr, MhError> {
        if b.len() < 8 {
            return Err(MhError::BadLength);
        }
        let total = (usize::from(b[1]) + 1) * 8;
        if b.len() < total {
            return Err(MhError::BadLength);
        }
        let b = &b[..total];
        if b[0] != PAYLOAD_PROTO_NONE {
            return Err(MhError::BadPayloadProto);
        }
        let sum = checksum::accumulate(
            checksum::pseudo_header(&src, &dst, NEXT_HEADER_MH, total as u32),
            b,
        );
        if checksum::finish(sum) != 0 {
            return Err(MhError::BadChecksum);
        }
        let t = b[2];
        let fixed = MhMessage::fixed_len(t).ok_or(MhError::UnknownType(t))?;
        if 6 + fixed > total {
            return Err(MhError::BadLength);
        }
        let d = &b[6..6 + fixed];
        let msg = match t {
            0 => MhMessage::Brr,
            5 => MhMessage::Bu {
                seq: u16::from_be_bytes([d[0], d[1]]),
                flags: u16::from_be_bytes([d[2], d[3]]),
                lifetime: u16::from_be_bytes([d[4], d[5]]),
            },
            6 => MhMessage::Ba {
                status: d[0],
                flags: d[1],
                seq: u16::from_be_bytes([d[2], d[3]]),
                lifetime: u16::from_be_bytes([d[4], d[5]]),
            },
            _ => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&d[2..18]);
                MhMessage::Be {
                    status: d[0],
                    home: Ipv6Addr::from(o),
                }
            }
        };
        let mut options = Vec::new();
        let mut i = 6 + fixed;
        while i < total {
            let typ = b[i];
            if typ == opt::PAD1 {
                i += 1;
                continue;
            }
            if i + 2 > total {
                return Err(MhError::BadLength);
            }
            let len = usize::from(b[i + 1]);
            if i + 2 + len > total {
                return Err(MhError::BadLength);
            }
            if typ != opt::PADN {
                if options.len() >= MAX_OPTIONS {
                    return Err(MhError::BadOption);
                }
                let o = MobilityOption::parse(typ, &b[i + 2..i + 2 + len])
                    .map_err(|_| MhError::BadOption)?;
                options.push(o);
            }
            i += 2 + len;
        }
        Ok(MhRepr { msg, options })
    }

    /// Length `emit` will write.
    pub fn emit_len(&self) -> usize {
        let mut off = 6 + MhMessage::fixed_len(self.msg.mh_type()).unwrap_or(0);
        for o in &self.options {
            off += pad_to(off, o.alignment());
            off += 2 + o.data_len();
        }
        off.div_ceil(8) * 8
    }

    /// Writes the Mobility Header (options aligned as RFC 6275 section 6.2 and RFC 5555
    /// require, padded to 8 octets, checksum over the pseudo-header of `src`, `dst`) into
    /// `buf`; returns its length. Fails with [`WireError::BufferTooSmall`] when `buf` is
    /// shorter than [`Self::emit_len`] or the message would exceed 2048 bytes, the most
    /// Header Len can describe.
    pub fn emit(&self, src: Ipv6Addr, dst: Ipv6Addr, buf: &mut [u8]) -> Result<usize, WireError> {
        let total = self.emit_len();
        if buf.len() < total || total > 2048 {
            return Err(WireError::BufferTooSmall);
        }
        let b = &mut buf[..total];
        b.fill(0);
        b[0] = PAYLOAD_PROTO_NONE;
        b[1] = (total / 8 - 1) as u8;
        b[2] = self.msg.mh_type();
        match self.msg {
            MhMessage::Brr => {}
            MhMessage::Bu {
                seq,
                flags,
                lifetime,
            } => {
                b[6..8].copy_from_slice(&seq.to_be_bytes());
                b[8..10].copy_from_slice(&flags.to_be_bytes());
                b[10..12].copy_from_slice(&lifetime.to_be_bytes());
            }
            MhMessage::Ba {
                status,
                flags,
                seq,
                lifetime,
            } => {
                b[6] = status;
                b[7] = flags;
                b[8..10].copy_from_slice(&seq.to_be_bytes());
                b[10..12].copy_from_slice(&lifetime.to_be_bytes());
            }
            MhMessage::Be { status, home } => {
                b[6] = status;
                b[8..24].copy_from_slice(&home.octets());
            }
        }
        let mut off = 6 + MhMessage::fixed_len(self.msg.mh_type()).unwrap_or(0);
        for o in &self.options {
            let pad = pad_to(off, o.alignment());
            write_pad(&mut b[off..off + pad]);
            off += pad;
            b[off] = o.kind();
            b[off + 1] = o.data_len() as u8;
            o.emit_data(&mut b[off + 2..off + 2 + o.data_len()]);
            off += 2 + o.data_len();
        }
        write_pad(&mut b[off..total]);
        let sum = checksum::accumulate(
            checksum::pseudo_header(&src, &dst, NEXT_HEADER_MH, total as u32),
            b,
        );
        b[4..6].copy_from_slice(&checksum::finish(sum).to_be_bytes());
        Ok(total)
    }
}

fn pad_to(off: usize, (x, y): (usize, usize)) -> usize {
    (x + y - off % x) % x
}

fn write_pad(p: &mut [u8]) {
    match p.len() {
        0 => {}
        1 => p[0] = opt::PAD1,
        n => {
            p[0] = opt::PADN;
            p[1] = (n - 2) as u8;
            p[2..].fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const MN: &str = "2001:db8:1::100";
    const HA: &str = "2001:db8:1::1";
    const BU: &str = "3b030500115b0007d10000641d0680000000000020060000c000020a01020000";
    const BA: &str = "3b03060017f40080000700641e0600800a0000051f0600000000006e01020000";

    #[test]
    fn golden_bu_parses_and_re_emits_byte_for_byte() {
        let (mn, ha) = (MN.parse().unwrap(), HA.parse().unwrap());
        let b = hex(BU);
        let r = MhRepr::parse(&b, mn, ha).unwrap();
        assert_eq!(
            r.msg,
            MhMessage::Bu {
                seq: 7,
                flags: bu_flags::A | bu_flags::H | bu_flags::K | bu_flags::F,
                lifetime: 100
            }
        );
        assert_eq!(
            r.options,
            vec![
                MobilityOption::Ipv4HomeAddress {
                    prefix_len: 32,
                    p: false,
                    addr: Ipv4Addr::UNSPECIFIED
                },
                MobilityOption::Ipv4CareOfAddress(Ipv4Addr::new(192, 0, 2, 10)),
            ]
        );
        let mut out = [0u8; 64];
        let n = r.emit(mn, ha, &mut out).unwrap();
        assert_eq!(&out[..n], &b[..]);
    }

    #[test]
    fn golden_ba_parses_and_re_emits_byte_for_byte() {
        let (mn, ha): (Ipv6Addr, Ipv6Addr) = (MN.parse().unwrap(), HA.parse().unwrap());
        let b = hex(BA);
        let r = MhRepr::parse(&b, ha, mn).unwrap();
        assert_eq!(
            r.msg,
            MhMessage::Ba {
                status: 0,
                flags: ba_flags::K,
                seq: 7,
                lifetime: 100
            }
        );
        assert_eq!(
            r.options,
            vec![
                MobilityOption::Ipv4AddressAck {
                    status: 0,
                    prefix_len: 32,
                    addr: Ipv4Addr::new(10, 0, 0, 5)
                },
                MobilityOption::NatDetection {
                    f: false,
                    refresh: 110
                },
            ]
        );
        let mut out = [0u8; 64];
        let n = r.emit(ha, mn, &mut out).unwrap();
        assert_eq!(&out[..n], &b[..]);
    }

    #[test]
    fn errors_of_section_9_2() {
        let (mn, ha) = (MN.parse().unwrap(), HA.parse().unwrap());
        let b = hex(BU);
        let mut bad = b.clone();
        bad[30] ^= 1;
        assert_eq!(MhRepr::parse(&bad, mn, ha), Err(MhError::BadChecksum));
        assert_eq!(MhRepr::parse(&b[..24], mn, ha), Err(MhError::BadLength));
        let mut pp = b.clone();
        pp[0] = 6;
        assert_eq!(MhRepr::parse(&pp, mn, ha), Err(MhError::BadPayloadProto));
        // Unknown MH type with a valid checksum.
        let mut ut = b.clone();
        ut[2] = 42;
        ut[4..6].fill(0);
        let s = checksum::finish(checksum::accumulate(
            checksum::pseudo_header(&mn, &ha, NEXT_HEADER_MH, 32),
            &ut,
        ));
        ut[4..6].copy_from_slice(&s.to_be_bytes());
        assert_eq!(MhRepr::parse(&ut, mn, ha), Err(MhError::UnknownType(42)));
    }

    #[test]
    fn unknown_options_are_skipped_and_alignment_holds() {
        let (mn, ha) = (MN.parse().unwrap(), HA.parse().unwrap());
        let r = MhRepr {
            msg: MhMessage::Bu {
                seq: 1,
                flags: bu_flags::A | bu_flags::H | bu_flags::R,
                lifetime: 10,
            },
            options: vec![
                MobilityOption::AlternateCoa("2001:db8:9::1".parse().unwrap()),
                MobilityOption::MobileNetworkPrefix {
                    len: 48,
                    prefix: "2001:db8:7::".parse().unwrap(),
                },
                MobilityOption::BindingRefreshAdvice(30),
                MobilityOption::Ipv4HomeAddress {
                    prefix_len: 24,
                    p: true,
                    addr: Ipv4Addr::new(192, 0, 2, 0),
                },
            ],
        };
        let mut out = [0u8; 128];
        let n = r.emit(mn, ha, &mut out).unwrap();
        assert_eq!(n % 8, 0);
        // Alternate CoA type at 8n+6, MNP at 8n+4, IPv4 HoA at 4n.
        let mut i = 12;
        while i < n {
            match out[i] {
                0 => {
                    i += 1;
                    continue;
                }
                3 => assert_eq!(i % 8, 6),
                6 => assert_eq!(i % 8, 4),
                2 => assert_eq!(i % 2, 0),
                29 => assert_eq!(i % 4, 0),
                _ => {}
            }
            i += 2 + usize::from(out[i + 1]);
        }
        assert_eq!(MhRepr::parse(&out[..n], mn, ha).unwrap(), r);
        // Insert an unknown option (type 99) by hand: it is skipped, the rest parsed.
        let with_unknown = MhRepr {
            msg: r.msg,
            options: vec![MobilityOption::Unknown(99)],
        };
        let m = with_unknown.emit(mn, ha, &mut out).unwrap();
        let p = MhRepr::parse(&out[..m], mn, ha).unwrap();
        assert_eq!(p.options, vec![MobilityOption::Unknown(99)]);
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = MhRepr::parse(&data, Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
        }

        #[test]
        fn bu_round_trip(seq in any::<u16>(), flags in any::<u16>(), life in any::<u16>(),
                         hoa in any::<[u8; 4]>(), plen in 1u8..=32, p in any::<bool>(),
                         coa in any::<[u8; 4]>(), refresh in any::<u32>()) {
            let r = MhRepr {
                msg: MhMessage::Bu { seq, flags, lifetime: life },
                options: vec![
                    MobilityOption::Ipv4HomeAddress { prefix_len: plen, p, addr: hoa.into() },
                    MobilityOption::Ipv4CareOfAddress(coa.into()),
                    MobilityOption::NatDetection { f: p, refresh },
                ],
            };
            let mut out = [0u8; 128];
            let n = r.emit(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED, &mut out).unwrap();
            prop_assert_eq!(MhRepr::parse(&out[..n], Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED).unwrap(), r);
        }
    }
}
