//! The sockets of the DSMIPv6 tunnel-interface module, for the home agent and the mobile
//! node alike: UDP port 4191 (vanilla or TLV format), raw IPv4 and IPv6 sockets per inner
//! protocol for IP-in-IP, the IPPROTO_RAW sender for signalling with extension headers,
//! and the capture of signalling the kernel would discard (see [`crate::raw`]).

use crate::raw::{Capture, DsmipUdp, RawIp, RawIpv6Sender};
use m6t_proto::dsmip::tif::{tlv_header, Encap, DSMIP_PORT, PROTO_IPV4, PROTO_IPV6};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};

/// One of the tunnel-interface sockets, as a daemon's token names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TifSource {
    /// UDP port 4191 (the mobile node's ephemeral port toward it).
    Udp,
    /// Raw IPv4 socket for inner protocol 4 (`false`) or 41 (`true`).
    Ipv4(bool),
    /// Raw IPv6 socket for inner Next Header 4 (`false`) or 41 (`true`).
    Ipv6(bool),
    /// The signalling capture.
    Capture,
}

impl TifSource {
    /// Every source, for registration.
    pub const ALL: [TifSource; 6] = [
        TifSource::Udp,
        TifSource::Ipv4(false),
        TifSource::Ipv4(true),
        TifSource::Ipv6(false),
        TifSource::Ipv6(true),
        TifSource::Capture,
    ];
}

/// What one receive got; the bytes are in the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TifPacket {
    /// A UDP payload of `len` bytes from `from`.
    Udp {
        /// Outer source (the NAT's address and port when there is one).
        from: SocketAddrV4,
        /// Payload length.
        len: usize,
    },
    /// The inner packet of IP-in-IP, at `range`, from the outer source `src`.
    IpInIp {
        /// Outer source.
        src: IpAddr,
        /// Where the inner packet lies.
        range: Range<usize>,
    },
    /// A whole captured IPv6 signalling packet of `len` bytes.
    Captured {
        /// Length.
        len: usize,
    },
}

fn pair(local: IpAddr) -> io::Result<[RawIp; 2]> {
    Ok([
        RawIp::open(local, PROTO_IPV4)?,
        RawIp::open(local, PROTO_IPV6)?,
    ])
}

fn idx(proto: u8) -> usize {
    usize::from(proto == PROTO_IPV6)
}

/// The tunnel-interface module's sockets. The IP-in-IP senders are bound to the local
/// address the peer knows (the home agent's, or the mobile node's registered care-of
/// address); the mobile node's UDP socket follows its IPv4 care-of address.
pub struct TifSockets {
    udp: Option<DsmipUdp>,
    ip4: [RawIp; 2],
    ip6: [RawIp; 2],
    sender6: RawIpv6Sender,
    capture: Capture,
}

impl TifSockets {
    /// The home agent's: UDP 4191 on `addr4`, IP-in-IP from `addr4` / `addr6`.
    pub fn home_agent(addr4: Ipv4Addr, addr6: Ipv6Addr) -> Result<TifSockets, (String, io::Error)> {
        let ctx = |what: String| move |e| (what, e);
        Ok(TifSockets {
            udp: Some(
                DsmipUdp::bind(SocketAddrV4::new(addr4, DSMIP_PORT))
                    .map_err(ctx(format!("UDP {addr4}:{DSMIP_PORT}")))?,
            ),
            ip4: pair(IpAddr::V4(addr4)).map_err(ctx("raw IPv4 sockets (4, 41)".into()))?,
            ip6: pair(IpAddr::V6(addr6)).map_err(ctx("raw IPv6 sockets (4, 41)".into()))?,
            sender6: RawIpv6Sender::open().map_err(ctx("IPPROTO_RAW IPv6 socket".into()))?,
            capture: Capture::open().map_err(ctx("packet capture socket".into()))?,
        })
    }

    /// The mobile node's: no UDP socket until a care-of address is registered, IP-in-IP
    /// from any address until then.
    pub fn mobile_node() -> Result<TifSockets, (String, io::Error)> {
        let ctx = |what: &'static str| move |e| (what.to_string(), e);
        Ok(TifSockets {
            udp: None,
            ip4: pair(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).map_err(ctx("raw IPv4 sockets"))?,
            ip6: pair(IpAddr::V6(Ipv6Addr::UNSPECIFIED)).map_err(ctx("raw IPv6 sockets"))?,
            sender6: RawIpv6Sender::open().map_err(ctx("IPPROTO_RAW IPv6 socket"))?,
            capture: Capture::open().map_err(ctx("packet capture socket"))?,
        })
    }

    /// The descriptor of a source (absent: the mobile node's UDP socket before its first
    /// IPv4 care-of address).
    pub fn fd(&self, s: TifSource) -> Option<RawFd> {
        Some(match s {
            TifSource::Udp => self.udp.as_ref()?.as_raw_fd(),
            TifSource::Ipv4(b) => self.ip4[usize::from(b)].as_raw_fd(),
            TifSource::Ipv6(b) => self.ip6[usize::from(b)].as_raw_fd(),
            TifSource::Capture => self.capture.as_raw_fd(),
        })
    }

    /// Receives one packet from `s` into `buf`; `WouldBlock` when nothing is queued.
    pub fn recv(&self, s: TifSource, buf: &mut [u8]) -> io::Result<TifPacket> {
        match s {
            TifSource::Udp => {
                let u = self.udp.as_ref().ok_or(io::ErrorKind::WouldBlock)?;
                let (len, from) = u.recv(buf)?;
                Ok(TifPacket::Udp { from, len })
            }
            TifSource::Ipv4(b) | TifSource::Ipv6(b) => {
                let sock = match s {
                    TifSource::Ipv4(_) => &self.ip4[usize::from(b)],
                    _ => &self.ip6[usize::from(b)],
                };
                let (src, range) = sock.recv(buf)?;
                Ok(TifPacket::IpInIp { src, range })
            }
            TifSource::Capture => Ok(TifPacket::Captured {
                len: self.capture.recv(buf)?,
            }),
        }
    }

    /// Sends a data packet the way the machine said.
    pub fn encap(&self, e: Encap, pkt: &[u8]) -> io::Result<usize> {
        match e {
            Encap::Udp { to, tlv } => {
                let u = self.udp.as_ref().ok_or(io::ErrorKind::NotConnected)?;
                if tlv {
                    u.send2(to, &tlv_header(pkt), pkt)
                } else {
                    u.send(to, pkt)
                }
            }
            Encap::Ipv4 { to, proto } => self.ip4[idx(proto)].send(IpAddr::V4(to), pkt),
            Encap::Ipv6 { to, proto } => self.ip6[idx(proto)].send(IpAddr::V6(to), pkt),
        }
    }

    /// Sends a signalling packet inside UDP (from the UDP socket as it is bound).
    pub fn send_udp(&self, to: SocketAddrV4, data: &[u8]) -> io::Result<usize> {
        let u = self.udp.as_ref().ok_or(io::ErrorKind::NotConnected)?;
        u.send(to, data)
    }

    /// Sends a whole IPv6 signalling packet, extension headers included.
    pub fn send_ipv6(&self, to: Ipv6Addr, data: &[u8]) -> io::Result<usize> {
        self.sender6.send(to, data)
    }

    /// Makes the UDP socket leave from `from` (any port): a new care-of address gets a new
    /// socket, so the NAT makes a new mapping. True when the socket was replaced (its
    /// descriptor changed: register it again).
    pub fn bind_udp(&mut self, from: Ipv4Addr) -> io::Result<bool> {
        let current = self
            .udp
            .as_ref()
            .and_then(|u| u.local().ok())
            .is_some_and(|l| *l.ip() == from);
        if current {
            return Ok(false);
        }
        self.udp = None;
        self.udp = Some(DsmipUdp::bind(SocketAddrV4::new(from, 0))?);
        Ok(true)
    }

    /// Makes IP-in-IP toward the peer leave from `local` (the registered care-of address:
    /// the outer source the home agent knows). The replaced descriptors must be registered
    /// again.
    pub fn bind_ip_in_ip(&mut self, local: IpAddr) -> io::Result<()> {
        match local {
            IpAddr::V4(_) => self.ip4 = pair(local)?,
            IpAddr::V6(_) => self.ip6 = pair(local)?,
        }
        Ok(())
    }
}
