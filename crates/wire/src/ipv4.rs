//! The IPv4 header (RFC 791 section 3.1): the outer header of UDP/IPv4 and IP-in-IP tunnels
//! and the inner header of IPv4 packets a DSMIPv6 tunnel carries (RFC 5555 section 4.1).
//!
//! [`Ipv4Packet`] is a read-only zero-copy view; [`Ipv4Repr`] builds a header without
//! options. Options are handed out as bytes, never interpreted; fragments are not reassembled.

use crate::checksum;
use crate::WireError;
use std::net::Ipv4Addr;

/// Length of an IPv4 header without options (IHL 5, RFC 791 section 3.1).
pub const IPV4_HEADER_LEN: usize = 20;

/// Byte offsets of the header fields (RFC 791 section 3.1).
mod field {
    use std::ops::Range;

    /// Version (high nibble) and IHL (low nibble).
    pub const VER_IHL: usize = 0;
    /// Type of Service, now DSCP (high 6 bits) and ECN (low 2 bits).
    pub const TOS: usize = 1;
    /// Total Length.
    pub const TOTAL_LEN: Range<usize> = 2..4;
    /// Identification.
    pub const IDENT: Range<usize> = 4..6;
    /// Flags (3 bits) and Fragment Offset (13 bits).
    pub const FLG_OFF: Range<usize> = 6..8;
    /// Time to Live.
    pub const TTL: usize = 8;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Header Checksum.
    pub const CHECKSUM: Range<usize> = 10..12;
    /// Source Address.
    pub const SRC_ADDR: Range<usize> = 12..16;
    /// Destination Address.
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// Don't Fragment bit of the flags word (RFC 791 section 3.1, "Flags", bit 1).
const FLAG_DF: u16 = 0x4000;
/// More Fragments bit of the flags word (RFC 791 section 3.1, "Flags", bit 2).
const FLAG_MF: u16 = 0x2000;
/// Fragment Offset bits of the flags word (RFC 791 section 3.1).
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A read-only view of an IPv4 packet (RFC 791 section 3.1).
///
/// After [`Ipv4Packet::new_checked`] succeeded, every accessor is in bounds: the buffer holds
/// at least 20 bytes, the version is 4, the IHL is at least 5, and the header length and the
/// Total Length both fit in the buffer with Total Length not below the header length. Bytes
/// beyond Total Length (link-layer padding) are accepted and left out of [`Self::payload`].
/// The header checksum is not checked by `new_checked`: see [`Self::verify_checksum`].
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without any check; accessors may panic on a short buffer.
    /// Use only on buffers this crate built or after [`Self::check`].
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer after checking that it starts with one well-formed IPv4 packet
    /// (see [`Self::check`]).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Checks what makes every accessor safe (RFC 791 section 3.1):
    ///
    /// - [`WireError::Truncated`]: shorter than 20 bytes, shorter than the header length
    ///   (IHL * 4), or shorter than Total Length;
    /// - [`WireError::BadVersion`]: the version is not 4;
    /// - [`WireError::Malformed`]: IHL below 5, or Total Length below the header length.
    ///
    /// A buffer longer than Total Length is accepted (Ethernet pads short frames).
    pub fn check(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < IPV4_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let header_len = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if header_len < IPV4_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if header_len > b.len() {
            return Err(WireError::Truncated);
        }
        let total = usize::from(u16::from_be_bytes([
            b[field::TOTAL_LEN.start],
            b[field::TOTAL_LEN.start + 1],
        ]));
        if total < header_len {
            return Err(WireError::Malformed);
        }
        if total > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The Version field (4 in a checked packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes: the IHL field (RFC 791 section 3.1) times 4, 20 to 60.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The Differentiated Services Code Point: the high six bits of RFC 791's Type of
    /// Service octet, as RFC 2474 section 3 redefines them.
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::TOS] >> 2
    }

    /// The ECN field: the low two bits of the Type of Service octet (RFC 3168 section 5).
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::TOS] & 0x03
    }

    /// The Total Length field: header and data in bytes (RFC 791 section 3.1).
    pub fn total_len(&self) -> u16 {
        self.u16_at(field::TOTAL_LEN)
    }

    /// The Identification field, which groups the fragments of one datagram
    /// (RFC 791 section 3.1, RFC 6864).
    pub fn ident(&self) -> u16 {
        self.u16_at(field::IDENT)
    }

    /// The Don't Fragment flag (RFC 791 section 3.1, "Flags", bit 1).
    pub fn dont_frag(&self) -> bool {
        self.u16_at(field::FLG_OFF) & FLAG_DF != 0
    }

    /// The More Fragments flag (RFC 791 section 3.1, "Flags", bit 2).
    pub fn more_frags(&self) -> bool {
        self.u16_at(field::FLG_OFF) & FLAG_MF != 0
    }

    /// The Fragment Offset in bytes (the field counts 8-octet units, RFC 791 section 3.1).
    /// A packet with a nonzero offset or [`Self::more_frags`] set is a fragment.
    pub fn frag_offset(&self) -> u16 {
        (self.u16_at(field::FLG_OFF) & FRAG_OFFSET_MASK) * 8
    }

    /// The Time to Live field.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The Protocol field: what the payload is (17 UDP, 4 IPv4, 41 IPv6; IANA numbers).
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The Header Checksum field as it is in the buffer.
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// Whether the Header Checksum verifies over the whole header, options included
    /// (RFC 791 section 3.1, computed as RFC 1071 describes).
    pub fn verify_checksum(&self) -> bool {
        let h = &self.buffer.as_ref()[..self.header_len()];
        checksum::finish(checksum::accumulate(0, h)) == 0
    }

    /// The Source Address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The Destination Address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The options (RFC 791 section 3.1, "Options"), uninterpreted: the bytes between the
    /// fixed 20-byte header and the header length; empty when IHL is 5.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[IPV4_HEADER_LEN..self.header_len()]
    }

    /// The data: the bytes from the header length to Total Length. Whatever the buffer
    /// holds beyond Total Length (link-layer padding) is left out.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }

    /// The whole buffer, including any bytes beyond Total Length.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// The fields of an IPv4 header without options, for building packets (RFC 791 section 3.1).
///
/// What it leaves out: options, Type of Service, Identification, the More Fragments flag
/// and Fragment Offset, and the checksum (computed by [`Self::emit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source Address.
    pub src: Ipv4Addr,
    /// Destination Address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Length of the data after the header (Total Length minus the header length).
    pub payload_len: u16,
    /// Time to Live.
    pub ttl: u8,
    /// Don't Fragment flag.
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Reads the header fields of a checked packet. The fields the Repr has no place for
    /// (see [`Ipv4Repr`]) are dropped; the checksum is not verified (see
    /// [`Ipv4Packet::verify_checksum`]) and a fragment is not told apart from a whole datagram
    /// (see [`Ipv4Packet::more_frags`], [`Ipv4Packet::frag_offset`]).
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Self {
        Ipv4Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            protocol: p.protocol(),
            // check() guarantees total_len >= header_len (and header_len <= 60).
            payload_len: p.total_len().saturating_sub(p.header_len() as u16),
            ttl: p.ttl(),
            dont_frag: p.dont_frag(),
        }
    }

    /// Writes the 20-byte header at the start of `buf`: IHL 5, Type of Service zero,
    /// Identification zero (as RFC 6864 section 4.1 allows for datagrams with Don't Fragment
    /// set), no fragment fields, and a correct Header Checksum. The payload is the caller's.
    ///
    /// Fails with [`WireError::BufferTooSmall`] if `buf` is shorter than 20 bytes and with
    /// [`WireError::Malformed`] if 20 + `payload_len` exceeds 65535 (Total Length is 16 bits).
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let total = u16::try_from(IPV4_HEADER_LEN + usize::from(self.payload_len))
            .map_err(|_| WireError::Malformed)?;
        let h = buf
            .get_mut(..IPV4_HEADER_LEN)
            .ok_or(WireError::BufferTooSmall)?;
        h[field::VER_IHL] = 0x45;
        h[field::TOS] = 0;
        h[field::TOTAL_LEN].copy_from_slice(&total.to_be_bytes());
        h[field::IDENT].fill(0);
        let flags = if self.dont_frag { FLAG_DF } else { 0 };
        h[field::FLG_OFF].copy_from_slice(&flags.to_be_bytes());
        h[field::TTL] = self.ttl;
        h[field::PROTOCOL] = self.protocol;
        h[field::CHECKSUM].fill(0);
        h[field::SRC_ADDR].copy_from_slice(&self.src.octets());
        h[field::DST_ADDR].copy_from_slice(&self.dst.octets());
        let sum = checksum::finish(checksum::accumulate(0, h));
        h[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A UDP/IPv4 header written out by hand (a widely quoted worked example of the header
    /// checksum; 0xb861 recomputed outside this crate):
    /// Total Length 115, DF, TTL 64, UDP, 192.168.0.1 -> 192.168.0.199.
    const UDP_HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    /// A 24-byte header with a Router Alert option (RFC 2113), Identification 0x1c46, TTL 1,
    /// UDP, 10.0.0.1 -> 224.0.0.22, Total Length 32 (eight bytes of UDP header), checksum
    /// 0x1e6c; the datagram is padded with zeros to Ethernet's 46-byte minimum.
    fn with_option_and_padding() -> Vec<u8> {
        let mut v = vec![
            0x46, 0x00, 0x00, 0x20, 0x1c, 0x46, 0x00, 0x00, 0x01, 0x11, 0x1e, 0x6c, 0x0a, 0x00,
            0x00, 0x01, 0xe0, 0x00, 0x00, 0x16, 0x94, 0x04, 0x00, 0x00,
        ];
        v.extend_from_slice(&[0x12, 0x34, 0x10, 0x92, 0x00, 0x08, 0x00, 0x00]);
        v.resize(46, 0);
        v
    }

    fn udp_packet() -> Vec<u8> {
        let mut v = UDP_HEADER.to_vec();
        v.resize(0x73, 0xaa);
        v
    }

    fn err(b: &[u8]) -> WireError {
        Ipv4Packet::new_checked(b).unwrap_err()
    }

    #[test]
    fn known_header_fields() {
        let v = udp_packet();
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!((p.dscp(), p.ecn()), (0, 0));
        assert_eq!(p.total_len(), 115);
        assert_eq!(p.ident(), 0);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.checksum(), 0xb861);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert!(p.options().is_empty());
        assert_eq!(p.payload().len(), 95);
        assert_eq!(p.as_bytes().len(), 115);
    }

    #[test]
    fn emit_writes_the_known_header() {
        let r = Ipv4Repr {
            src: Ipv4Addr::new(192, 168, 0, 1),
            dst: Ipv4Addr::new(192, 168, 0, 199),
            protocol: 17,
            payload_len: 95,
            ttl: 64,
            dont_frag: true,
        };
        let mut buf = [0xffu8; 20];
        r.emit(&mut buf).unwrap();
        assert_eq!(buf, UDP_HEADER);
        let v = udp_packet();
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_checked(&v[..]).unwrap()),
            r
        );
    }

    #[test]
    fn options_and_link_padding() {
        let v = with_option_and_padding();
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.ident(), 0x1c46);
        assert!(!p.dont_frag());
        assert_eq!(p.ttl(), 1);
        assert_eq!(p.checksum(), 0x1e6c);
        assert!(p.verify_checksum());
        // Eight bytes of UDP, not the 14 bytes of padding after them.
        assert_eq!(
            p.payload(),
            &[0x12, 0x34, 0x10, 0x92, 0x00, 0x08, 0x00, 0x00]
        );
        assert_eq!(p.as_bytes().len(), 46);
        let r = Ipv4Repr::parse(&p);
        assert_eq!(r.payload_len, 8);
        assert_eq!(r.dst, Ipv4Addr::new(224, 0, 0, 22));
    }

    #[test]
    fn checksum_covers_options() {
        let mut v = with_option_and_padding();
        v[21] ^= 0x01;
        assert!(!Ipv4Packet::new_checked(&v[..]).unwrap().verify_checksum());
    }

    #[test]
    fn fragment_fields() {
        let mut v = udp_packet();
        // MF set, offset 185 units = 1480 bytes, checksum no longer right.
        v[6] = 0x20;
        v[7] = 0xb9;
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert!(p.more_frags());
        assert!(!p.dont_frag());
        assert_eq!(p.frag_offset(), 1480);
        assert!(!p.verify_checksum());
        v[6] = 0x1f;
        v[7] = 0xff;
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).unwrap().frag_offset(),
            65528
        );
    }

    #[test]
    fn dscp_and_ecn() {
        let mut v = udp_packet();
        v[1] = 0xb9; // EF (46) with ECT(1)
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert_eq!((p.dscp(), p.ecn()), (46, 1));
    }

    #[test]
    fn rejections() {
        let v = udp_packet();
        // Shorter than the fixed header, down to empty.
        for n in 0..20 {
            assert_eq!(err(&v[..n]), WireError::Truncated, "length {n}");
        }
        // Not version 4.
        for ver in [0u8, 6, 15] {
            let mut b = v.clone();
            b[0] = (ver << 4) | 5;
            assert_eq!(err(&b), WireError::BadVersion, "version {ver}");
        }
        // IHL below 5.
        for ihl in 0u8..5 {
            let mut b = v.clone();
            b[0] = 0x40 | ihl;
            assert_eq!(err(&b), WireError::Malformed, "ihl {ihl}");
        }
        // Header length (60) beyond the buffer (40), Total Length in range.
        let mut b = v[..40].to_vec();
        b[0] = 0x4f;
        b[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(err(&b), WireError::Truncated);
        // Total Length below the header length.
        let mut b = v.clone();
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(err(&b), WireError::Malformed);
        let o = with_option_and_padding();
        let mut b = o.clone();
        b[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(err(&b), WireError::Malformed);
        // Total Length beyond the buffer.
        assert_eq!(err(&v[..114]), WireError::Truncated);
        assert_eq!(err(&o[..31]), WireError::Truncated);
    }

    #[test]
    fn acceptance_edges() {
        let v = udp_packet();
        // Total Length equal to the header length: empty payload.
        let mut b = v[..20].to_vec();
        b[2..4].copy_from_slice(&20u16.to_be_bytes());
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.payload().is_empty());
        // The largest header, exactly filling the buffer.
        let mut b = [0u8; 60];
        b[0] = 0x4f;
        b[2..4].copy_from_slice(&60u16.to_be_bytes());
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.options().len(), 40);
        assert!(p.payload().is_empty());
        // Trailing bytes after Total Length are padding, not an error.
        let mut long = v.clone();
        long.extend_from_slice(&[0; 7]);
        let p = Ipv4Packet::new_checked(&long[..]).unwrap();
        assert_eq!(p.payload(), &v[20..]);
        assert_eq!(p.into_inner().len(), 122);
    }

    #[test]
    fn emit_limits() {
        let mut r = Ipv4Repr {
            src: Ipv4Addr::LOCALHOST,
            dst: Ipv4Addr::BROADCAST,
            protocol: 4,
            payload_len: 0,
            ttl: 255,
            dont_frag: false,
        };
        assert_eq!(r.emit(&mut [0u8; 19]), Err(WireError::BufferTooSmall));
        r.payload_len = 65515;
        let mut h = [0u8; 20];
        r.emit(&mut h).unwrap();
        assert_eq!(&h[2..4], &[0xff, 0xff]);
        r.payload_len = 65516;
        assert_eq!(r.emit(&mut h), Err(WireError::Malformed));
        r.payload_len = u16::MAX;
        assert_eq!(r.emit(&mut h), Err(WireError::Malformed));
    }

    /// Every accessor of a checked packet, with the invariants `check` promises.
    fn exercise(data: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(p) = Ipv4Packet::new_checked(data) {
            prop_assert_eq!(p.version(), 4);
            let hl = p.header_len();
            prop_assert!((20..=60).contains(&hl));
            let total = usize::from(p.total_len());
            prop_assert!(hl <= total && total <= data.len());
            prop_assert_eq!(p.options().len(), hl - 20);
            prop_assert_eq!(p.payload(), &data[hl..total]);
            let _ = (p.dscp(), p.ecn(), p.ident(), p.dont_frag(), p.more_frags());
            let _ = (p.frag_offset(), p.ttl(), p.protocol(), p.checksum());
            let _ = (p.verify_checksum(), p.src_addr(), p.dst_addr());
            let r = Ipv4Repr::parse(&p);
            prop_assert_eq!(usize::from(r.payload_len) + hl, total);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            exercise(&data)?;
        }

        /// Random bytes with version 4 and a Total Length near the buffer length, so that most
        /// cases get past the version test and both sides of every length test are reached.
        #[test]
        fn near_valid_never_panic(mut data in proptest::collection::vec(any::<u8>(), 20..120),
                                  ihl in 0u8..16, slack in -70i32..10) {
            data[0] = 0x40 | ihl;
            let total = (data.len() as i32 + slack).clamp(0, 0xffff) as u16;
            data[2..4].copy_from_slice(&total.to_be_bytes());
            exercise(&data)?;
        }

        #[test]
        fn round_trip(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), protocol in any::<u8>(),
                      ttl in any::<u8>(), dont_frag in any::<bool>(), len in 0u16..=65515,
                      pad in 0usize..8) {
            let r = Ipv4Repr { src: src.into(), dst: dst.into(), protocol, payload_len: len,
                               ttl, dont_frag };
            let mut buf = vec![0u8; 20 + usize::from(len) + pad];
            r.emit(&mut buf).unwrap();
            let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum());
            prop_assert_eq!(p.payload().len(), usize::from(len));
            prop_assert_eq!(Ipv4Repr::parse(&p), r);
        }

        /// Any one flipped bit among TTL, Protocol, Header Checksum and the addresses is caught.
        #[test]
        fn one_bit_flip_is_caught(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
                                  bit in 64usize..160) {
            let r = Ipv4Repr { src: src.into(), dst: dst.into(), protocol: 17, payload_len: 0,
                               ttl: 64, dont_frag: true };
            let mut h = [0u8; 20];
            r.emit(&mut h).unwrap();
            h[bit / 8] ^= 0x80 >> (bit % 8);
            prop_assert!(!Ipv4Packet::new_checked(&h[..]).unwrap().verify_checksum());
        }
    }
}
