//! Where IPsec sits in a DSMIPv6 node: between the tunnel-interface module and the protocol
//! module, as the bump in the stack of seed 001 figure 2. The tunnel-interface module takes
//! the outer headers off and records the outer source ([`Outer`]: the NAT's address and
//! port, what NAT detection compares, seed 001 req. #4); the inner packet goes through
//! [`Ipsec`] (which opens the ESP of a BU or BA and checks every packet against its SPD);
//! what comes out goes up with the recorded outer source, and with whether ESP protected it.
//! On the way out a BU or BA built by the protocol module goes through [`Ipsec`] before the
//! tunnel-interface module sends it.
//!
//! Neither module reaches into IPsec beyond [`Ipsec`]'s processing and look-ups.

use crate::dsmip::tif::{self, Outer, Up};
use m6t_ipsec::{EspDrop, Inbound, Ipsec, IpsecDrop, Outbound as IpsecOut};
use std::net::{IpAddr, Ipv6Addr, SocketAddrV4};

/// What came out of IPsec for the modules above.
#[derive(Debug)]
pub enum Through<'a> {
    /// Goes up; `protected`: ESP protected it (its SA's policy matched what was inside).
    Up {
        /// The packet as the tunnel-interface module classified it.
        up: Up<'a>,
        /// Whether it arrived protected.
        protected: bool,
    },
    /// IPsec dropped it (counted there by reason).
    Dropped(IpsecDrop),
}

/// An inner packet from the tunnel (`outer` recorded before IPsec) through IPsec, when the
/// node has it, in place.
pub fn inbound<'a>(
    ipsec: Option<&mut Ipsec>,
    outer: Outer,
    inner: &'a mut [u8],
    tlv: bool,
) -> Through<'a> {
    let Some(ipsec) = ipsec else {
        return Through::Up {
            up: tif::inner_up(outer, inner, tlv),
            protected: false,
        };
    };
    let r = if inner.first().is_some_and(|b| b >> 4 == 6) {
        ipsec.inbound_ipv6(inner)
    } else {
        ipsec.inbound_clear(inner)
    };
    let inner: &'a [u8] = inner;
    let (p, protected) = match r {
        Inbound::Clear => (inner, false),
        Inbound::Transport { len, .. } => (&inner[..len], true),
        Inbound::Tunnel { inner: range, .. } => (&inner[range], true),
        Inbound::Drop(d) => return Through::Dropped(d),
        // Dummies come only from bare ESP (`inbound_esp`); here one is nothing to deliver.
        Inbound::Dummy { .. } => return Through::Dropped(IpsecDrop::Esp(EspDrop::Dummy)),
    };
    Through::Up {
        up: tif::inner_up(outer, p, tlv),
        protected,
    }
}

/// A UDP payload from port 4191 (RFC 5555 section 4.1): the tunnel-interface module takes
/// the TLV header off, if any, and the inner packet goes through IPsec in place.
pub fn from_udp<'a>(
    ipsec: Option<&mut Ipsec>,
    from: SocketAddrV4,
    payload: &'a mut [u8],
) -> Through<'a> {
    match tif::udp_inner(payload) {
        Ok((at, tlv)) => inbound(ipsec, Outer::Udp(from), &mut payload[at..], tlv),
        Err(d) => Through::Up {
            up: Up::Drop(d),
            protected: false,
        },
    }
}

/// The inner packet of IP-in-IP from `src` through IPsec, in place.
pub fn from_ip_in_ip<'a>(
    ipsec: Option<&mut Ipsec>,
    src: IpAddr,
    inner: &'a mut [u8],
) -> Through<'a> {
    inbound(ipsec, src.into(), inner, false)
}

/// A whole captured IPv6 signalling packet through IPsec, in place.
pub fn inbound_captured<'a>(ipsec: Option<&mut Ipsec>, pkt: &'a mut [u8]) -> Through<'a> {
    let Some(ipsec) = ipsec else {
        return Through::Up {
            up: tif::from_captured(pkt),
            protected: false,
        };
    };
    let r = ipsec.inbound_ipv6(pkt);
    let pkt: &'a [u8] = pkt;
    let (p, protected) = match r {
        Inbound::Clear => (pkt, false),
        Inbound::Transport { len, .. } => (&pkt[..len], true),
        // Tunnel-mode ESP is payload; the capture is for signalling only.
        Inbound::Tunnel { .. } => {
            return Through::Up {
                up: Up::Drop(tif::TifDrop::NotSignal),
                protected: true,
            }
        }
        Inbound::Drop(d) => return Through::Dropped(d),
        Inbound::Dummy { .. } => return Through::Dropped(IpsecDrop::Esp(EspDrop::Dummy)),
    };
    Through::Up {
        up: tif::from_captured(p),
        protected,
    }
}

/// A signalling packet the protocol module built, through IPsec on its way out: the bytes
/// to send (with ESP when a policy says PROTECT), or the reason IPsec dropped it.
pub fn outbound_signal(
    ipsec: Option<&mut Ipsec>,
    pkt: Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<Vec<u8>, IpsecDrop> {
    let Some(ipsec) = ipsec else {
        return Ok(pkt);
    };
    match ipsec.outbound(&pkt, scratch) {
        IpsecOut::Bypass => Ok(pkt),
        IpsecOut::Transport { .. } => Ok(std::mem::take(scratch)),
        // Signalling is protected in transport mode (RFC 3776 section 4.2, RFC 4877 section
        // 6.1); a tunnel-mode SA selected for it is a configuration the loader refuses.
        IpsecOut::Tunnel { .. } => Err(IpsecDrop::Esp(m6t_ipsec::EspDrop::WrongMode)),
        IpsecOut::Drop(d) => Err(d),
    }
}

/// Signalling in transport-mode ESP straight after the IPv6 header, as it travels on the
/// home link (RFC 6275 section 11.5.5: the BU from the home address has no Home Address
/// option, its BA no Routing Header; RFC 3776 section 3): a raw socket for protocol 50 gets
/// it without the IPv6 header. When the SA its SPI names carries Mobility Header messages of
/// `mh_type` (the "DSMIPv6-IPsec API" look-up, before anything is opened), the IPv6 packet
/// rebuilt around it from `src` to `dst` (ESP's integrity check covers ESP only, so the
/// header is not part of what it verifies), for [`inbound_captured`]; `None` for payload.
pub fn signalling_in_esp6(
    ipsec: Option<&Ipsec>,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    esp: &[u8],
    mh_type: u8,
) -> Option<Vec<u8>> {
    let ipsec = ipsec?;
    let spi = m6t_wire::esp::EspPacket::new_checked(esp).ok()?.spi();
    let sa = ipsec.inbound_sa(spi)?;
    if !ipsec.sa_selects_mh_type(sa, mh_type) {
        return None;
    }
    let len = u16::try_from(esp.len()).ok()?;
    let mut pkt = vec![0u8; 40 + esp.len()];
    pkt[0] = 0x60;
    pkt[4..6].copy_from_slice(&len.to_be_bytes());
    pkt[6] = crate::dsmip::tif::PROTO_ESP;
    pkt[7] = 64;
    pkt[8..24].copy_from_slice(&src.octets());
    pkt[24..40].copy_from_slice(&dst.octets());
    pkt[40..].copy_from_slice(esp);
    Some(pkt)
}

/// Bare ESP from `outer` that `ipsec` refused for its SPI (no SA has it): the SPI, for the
/// driver's IKE to tell the peer (RFC 7296 section 2.21.4: after a restart, the peer's
/// payload is the first news of it). `spi` is read before decapsulation.
pub fn unknown_spi(r: &Inbound, outer: Outer, spi: Option<u32>) -> Option<(Outer, u32)> {
    match r {
        Inbound::Drop(IpsecDrop::Esp(EspDrop::NoSa)) => spi.map(|s| (outer, s)),
        _ => None,
    }
}

/// The SPI of a bare ESP packet (RFC 4303 section 2.1), if it is long enough to have one.
pub fn esp_spi(esp: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(esp.get(..4)?.try_into().ok()?))
}
