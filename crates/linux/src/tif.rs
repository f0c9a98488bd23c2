//! The sockets of the DSMIPv6 tunnel-interface module, for the home agent and the mobile
//! node alike: UDP port 4191 (vanilla or TLV format), raw IPv4 and IPv6 sockets per inner
//! protocol for IP-in-IP and for ESP (protocol 50), UDP port 4500 for ESP through NATs (RFC
//! 3948), the IPPROTO_RAW sender for signalling with extension headers, and the capture of
//! signalling the kernel would discard (see [`crate::raw`]).

use crate::batch::{RecvBatch, SendBatch};
use crate::raw::{Capture, DsmipUdp, RawIp, RawIpv6Sender, Udp6};
use crate::tun::BATCH;
use m6t_proto::dsmip::tif::{
    tlv_header, Encap, Outer, DSMIP_PORT, ESP_UDP_PORT, PROTO_ESP, PROTO_IPV4, PROTO_IPV6,
};
use m6t_wire::esp::{classify_udp_4500, Udp4500};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};

/// One of the tunnel-interface sockets, as a daemon's token names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TifSource {
    /// UDP port 4191 (the mobile node's ephemeral port toward it, from its registered
    /// care-of address).
    Udp,
    /// The mobile node's UDP socket on the care-of address a BU under way registers: BUs
    /// and their BA use it, payload keeps [`TifSource::Udp`] until the BA (RFC 5555 section
    /// 5.1).
    UdpNext,
    /// UDP port 4500: ESP through NATs (RFC 3948), when payload may be protected.
    EspUdp,
    /// UDP port 4500 over IPv6: IKE from an IPv6 care-of address (the home agent's
    /// IPv6 address, the mobile node's IPv6 care-of address), when IKE keys the SAs.
    EspUdp6,
    /// Raw IPv4 socket for protocol 4, 41 or 50 (the number held).
    Ipv4(u8),
    /// Raw IPv6 socket for Next Header 4, 41 or 50.
    Ipv6(u8),
    /// The signalling capture.
    Capture,
}

/// The protocols with a raw socket each: IPv4 and IPv6 inside IP, and ESP.
pub const RAW_PROTOCOLS: [u8; 3] = [PROTO_IPV4, PROTO_IPV6, PROTO_ESP];

impl TifSource {
    /// One of the IPv4 UDP sockets, read in batches ([`TifSockets::recv_batch`]).
    pub fn batched(self) -> bool {
        matches!(
            self,
            TifSource::Udp | TifSource::UdpNext | TifSource::EspUdp
        )
    }

    /// Every source, for registration.
    pub const ALL: [TifSource; 11] = [
        TifSource::Udp,
        TifSource::UdpNext,
        TifSource::EspUdp,
        TifSource::EspUdp6,
        TifSource::Ipv4(PROTO_IPV4),
        TifSource::Ipv4(PROTO_IPV6),
        TifSource::Ipv4(PROTO_ESP),
        TifSource::Ipv6(PROTO_IPV4),
        TifSource::Ipv6(PROTO_IPV6),
        TifSource::Ipv6(PROTO_ESP),
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
    /// A bare ESP packet at `range` (after protocol 50, or in UDP port 4500).
    Esp {
        /// How it arrived: the outer source (with the NAT's port for UDP).
        outer: Outer,
        /// Where the ESP packet lies.
        range: Range<usize>,
    },
    /// Something on port 4500 that is not ESP (an IKE message behind the Non-ESP Marker, a
    /// NAT-keepalive byte): not for the tunnel (RFC 3948 section 2), for IKE. Over IPv6,
    /// everything on port 4500 is IKE's: DSMIPv6 carries ESP over IPv6 without UDP (RFC
    /// 5555 section 4.1), so the IKE endpoint checks the marker and counts the rest.
    NotEsp {
        /// The address and port it came to (where the answer leaves from).
        local: SocketAddr,
        /// Outer source.
        from: SocketAddr,
        /// Length of the UDP payload in the buffer.
        len: usize,
    },
}

/// Data datagrams for the UDP sockets, gathered over one drain of the TUN
/// ([`TifSockets::encap_batched`]): one batch for UDP 4191, one for ESP in UDP 4500.
pub struct UdpBatches {
    dsmip: SendBatch,
    esp: SendBatch,
    errors: u64,
}

impl UdpBatches {
    /// Empty batches, room allocated once.
    pub fn new() -> UdpBatches {
        UdpBatches {
            dsmip: SendBatch::new(BATCH),
            esp: SendBatch::new(BATCH),
            errors: 0,
        }
    }

    /// Datagrams the kernel refused since the last call.
    pub fn take_errors(&mut self) -> u64 {
        std::mem::take(&mut self.errors)
    }
}

impl Default for UdpBatches {
    fn default() -> Self {
        Self::new()
    }
}

impl DsmipUdp {
    /// What a datagram `d` from `from` on port 4500 is: ESP (RFC 3948), or IKE and NAT
    /// keep-alives for the IKE endpoint.
    fn classify_4500(&self, d: &[u8], from: SocketAddrV4) -> io::Result<TifPacket> {
        Ok(match classify_udp_4500(d) {
            Ok(Udp4500::Esp(_)) => TifPacket::Esp {
                outer: Outer::Udp(from),
                range: 0..d.len(),
            },
            _ => TifPacket::NotEsp {
                local: SocketAddr::V4(self.local()?),
                from: SocketAddr::V4(from),
                len: d.len(),
            },
        })
    }
}

/// Whether the socket is bound to `addr`.
fn is_on(u: &DsmipUdp, addr: Ipv4Addr) -> bool {
    u.local().is_ok_and(|l| *l.ip() == addr)
}

fn trio(local: IpAddr) -> io::Result<[RawIp; 3]> {
    Ok([
        RawIp::open(local, PROTO_IPV4)?,
        RawIp::open(local, PROTO_IPV6)?,
        RawIp::open(local, PROTO_ESP)?,
    ])
}

fn idx(proto: u8) -> usize {
    match proto {
        PROTO_IPV4 => 0,
        PROTO_IPV6 => 1,
        _ => 2,
    }
}

/// The tunnel-interface module's sockets. The IP-in-IP senders are bound to the local
/// address the peer knows (the home agent's, or the mobile node's registered care-of
/// address); the mobile node's UDP socket follows its IPv4 care-of address.
pub struct TifSockets {
    udp: Option<DsmipUdp>,
    /// The mobile node's socket for BUs from a new IPv4 care-of address, until its BA.
    udp_next: Option<DsmipUdp>,
    /// UDP port 4500, when ESP is configured.
    esp_udp: Option<DsmipUdp>,
    /// UDP port 4500 over IPv6, for IKE (see [`TifSource::EspUdp6`]).
    esp_udp6: Option<Udp6>,
    esp: bool,
    ip4: [RawIp; 3],
    ip6: [RawIp; 3],
    sender6: RawIpv6Sender,
    capture: Capture,
}

impl TifSockets {
    /// The home agent's: UDP 4191 on `addr4` (and 4500 with `esp`), IP-in-IP and ESP from
    /// `addr4` / `addr6`.
    pub fn home_agent(
        addr4: Ipv4Addr,
        addr6: Ipv6Addr,
        esp: bool,
    ) -> Result<TifSockets, (String, io::Error)> {
        let ctx = |what: String| move |e| (what, e);
        let esp_udp = if esp {
            Some(
                DsmipUdp::bind(SocketAddrV4::new(addr4, ESP_UDP_PORT))
                    .map_err(ctx(format!("UDP {addr4}:{ESP_UDP_PORT}")))?,
            )
        } else {
            None
        };
        Ok(TifSockets {
            udp: Some(
                DsmipUdp::bind(SocketAddrV4::new(addr4, DSMIP_PORT))
                    .map_err(ctx(format!("UDP {addr4}:{DSMIP_PORT}")))?,
            ),
            udp_next: None,
            esp_udp,
            esp_udp6: None,
            esp,
            ip4: trio(IpAddr::V4(addr4)).map_err(ctx("raw IPv4 sockets (4, 41, 50)".into()))?,
            ip6: trio(IpAddr::V6(addr6)).map_err(ctx("raw IPv6 sockets (4, 41, 50)".into()))?,
            sender6: RawIpv6Sender::open().map_err(ctx("IPPROTO_RAW IPv6 socket".into()))?,
            capture: Capture::open().map_err(ctx("packet capture socket".into()))?,
        })
    }

    /// The mobile node's: no UDP socket until a care-of address is registered (then port
    /// 4500 too with `esp`), IP-in-IP and ESP from any address until then.
    pub fn mobile_node(esp: bool) -> Result<TifSockets, (String, io::Error)> {
        let ctx = |what: &'static str| move |e| (what.to_string(), e);
        Ok(TifSockets {
            udp: None,
            udp_next: None,
            esp_udp: None,
            esp_udp6: None,
            esp,
            ip4: trio(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).map_err(ctx("raw IPv4 sockets"))?,
            ip6: trio(IpAddr::V6(Ipv6Addr::UNSPECIFIED)).map_err(ctx("raw IPv6 sockets"))?,
            sender6: RawIpv6Sender::open().map_err(ctx("IPPROTO_RAW IPv6 socket"))?,
            capture: Capture::open().map_err(ctx("packet capture socket"))?,
        })
    }

    /// The descriptor of a source (absent: the mobile node's UDP socket before its first
    /// IPv4 care-of address).
    pub fn fd(&self, s: TifSource) -> Option<RawFd> {
        Some(match s {
            TifSource::Udp => self.udp.as_ref()?.as_raw_fd(),
            TifSource::UdpNext => self.udp_next.as_ref()?.as_raw_fd(),
            TifSource::EspUdp => self.esp_udp.as_ref()?.as_raw_fd(),
            TifSource::EspUdp6 => self.esp_udp6.as_ref()?.as_raw_fd(),
            TifSource::Ipv4(p) => self.ip4[idx(p)].as_raw_fd(),
            TifSource::Ipv6(p) => self.ip6[idx(p)].as_raw_fd(),
            TifSource::Capture => self.capture.as_raw_fd(),
        })
    }

    /// Receives one packet from `s` into `buf`; `WouldBlock` when nothing is queued.
    pub fn recv(&self, s: TifSource, buf: &mut [u8]) -> io::Result<TifPacket> {
        match s {
            TifSource::Udp | TifSource::UdpNext => {
                let u = match s {
                    TifSource::Udp => self.udp.as_ref(),
                    _ => self.udp_next.as_ref(),
                };
                let (len, from) = u.ok_or(io::ErrorKind::WouldBlock)?.recv(buf)?;
                Ok(TifPacket::Udp { from, len })
            }
            TifSource::EspUdp => {
                let u = self.esp_udp.as_ref().ok_or(io::ErrorKind::WouldBlock)?;
                let (len, from) = u.recv(buf)?;
                u.classify_4500(&buf[..len], from)
            }
            TifSource::EspUdp6 => {
                let u = self.esp_udp6.as_ref().ok_or(io::ErrorKind::WouldBlock)?;
                let (len, from) = u.recv(buf)?;
                Ok(TifPacket::NotEsp {
                    local: SocketAddr::V6(u.local()?),
                    from: SocketAddr::V6(from),
                    len,
                })
            }
            TifSource::Ipv4(p) | TifSource::Ipv6(p) => {
                let sock = match s {
                    TifSource::Ipv4(_) => &self.ip4[idx(p)],
                    _ => &self.ip6[idx(p)],
                };
                let (src, range) = sock.recv(buf)?;
                if p == PROTO_ESP {
                    return Ok(TifPacket::Esp {
                        outer: src.into(),
                        range,
                    });
                }
                Ok(TifPacket::IpInIp { src, range })
            }
            TifSource::Capture => Ok(TifPacket::Captured {
                len: self.capture.recv(buf)?,
            }),
        }
    }

    /// Receives what one of the [`TifSource::batched`] sockets has queued, in one recvmmsg:
    /// the number of datagrams now in `rb`, each read with [`Self::batched_packet`];
    /// `WouldBlock` when none.
    pub fn recv_batch(&self, s: TifSource, rb: &mut RecvBatch) -> io::Result<usize> {
        let u = match s {
            TifSource::Udp => self.udp.as_ref(),
            TifSource::UdpNext => self.udp_next.as_ref(),
            TifSource::EspUdp => self.esp_udp.as_ref(),
            _ => None,
        };
        u.ok_or(io::ErrorKind::WouldBlock)?.recv_batch(rb)
    }

    /// Datagram `i` of the batch [`Self::recv_batch`] read from `s`, classified as
    /// [`Self::recv`] does, with the buffer its lengths and ranges refer to.
    pub fn batched_packet<'b>(
        &self,
        s: TifSource,
        rb: &'b mut RecvBatch,
        i: usize,
    ) -> io::Result<(TifPacket, &'b mut [u8])> {
        let (d, from) = rb.get_mut(i);
        let p = match (s, &self.esp_udp) {
            (TifSource::EspUdp, Some(u)) => u.classify_4500(d, from)?,
            _ => TifPacket::Udp { from, len: d.len() },
        };
        Ok((p, d))
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
            Encap::EspIp { to } => match to {
                IpAddr::V4(_) => self.ip4[idx(PROTO_ESP)].send(to, pkt),
                IpAddr::V6(_) => self.ip6[idx(PROTO_ESP)].send(to, pkt),
            },
            Encap::EspUdp { to } => self.send_esp_udp(to, pkt),
        }
    }

    /// As [`Self::encap`], but a datagram for a UDP socket (UDP 4191, ESP in UDP 4500) is
    /// gathered into `b` until [`Self::flush`]: a TUN read of a TCP super-packet yields
    /// dozens of equal-size segments to one peer, and those leave as one GSO send.
    pub fn encap_batched(&self, e: Encap, pkt: &[u8], b: &mut UdpBatches) -> io::Result<()> {
        let (batch, to) = match e {
            Encap::Udp { to, .. } if self.udp.is_some() => (&mut b.dsmip, to),
            Encap::EspUdp { to } if self.esp_udp.is_some() => (&mut b.esp, to),
            _ => return self.encap(e, pkt).map(|_| ()),
        };
        if batch.is_full() {
            self.flush(b);
            return self.encap_batched(e, pkt, b);
        }
        match e {
            Encap::Udp { tlv: true, .. } => batch.push_parts(&[&tlv_header(pkt), pkt], to),
            _ => batch.push(pkt, to),
        }
        Ok(())
    }

    /// Sends what [`Self::encap_batched`] gathered; the datagrams refused are counted in
    /// `b` ([`UdpBatches::take_errors`]).
    pub fn flush(&self, b: &mut UdpBatches) {
        for (u, batch) in [(&self.udp, &mut b.dsmip), (&self.esp_udp, &mut b.esp)] {
            if batch.is_empty() {
                continue;
            }
            b.errors += match u {
                Some(u) => u.flush(batch),
                None => {
                    let n = batch.len() as u64;
                    batch.clear();
                    n
                }
            };
        }
    }

    /// Where IKE messages to `to`'s family leave from: the address and port 4500 the
    /// socket is bound to, if there is one.
    pub fn ike_local(&self, to: SocketAddr) -> Option<SocketAddr> {
        match to {
            SocketAddr::V4(_) => self.esp_udp.as_ref()?.local().ok().map(SocketAddr::V4),
            SocketAddr::V6(_) => self.esp_udp6.as_ref()?.local().ok().map(SocketAddr::V6),
        }
    }

    /// Sends an IKE message (its non-ESP marker included) from port 4500 of the family
    /// of `to`.
    pub fn send_ike(&self, to: SocketAddr, data: &[u8]) -> io::Result<usize> {
        match to {
            SocketAddr::V4(to) => self.send_esp_udp(to, data),
            SocketAddr::V6(to) => {
                let u = self.esp_udp6.as_ref().ok_or(io::ErrorKind::NotConnected)?;
                u.send(to, data)
            }
        }
    }

    /// Sends an ESP packet in UDP from port 4500 (RFC 3948).
    pub fn send_esp_udp(&self, to: SocketAddrV4, data: &[u8]) -> io::Result<usize> {
        let u = self.esp_udp.as_ref().ok_or(io::ErrorKind::NotConnected)?;
        u.send(to, data)
    }

    /// Sends a signalling packet inside UDP: from the socket bound to `from` (the mobile
    /// node's registered or new care-of address), or the home agent's.
    pub fn send_udp(
        &self,
        from: Option<Ipv4Addr>,
        to: SocketAddrV4,
        data: &[u8],
    ) -> io::Result<usize> {
        let u = [self.udp_next.as_ref(), self.udp.as_ref()]
            .into_iter()
            .flatten()
            .find(|u| from.is_none() || from.is_some_and(|f| is_on(u, f)))
            .ok_or(io::ErrorKind::NotConnected)?;
        u.send(to, data)
    }

    /// Sends a whole IPv6 signalling packet, extension headers included.
    pub fn send_ipv6(&self, to: Ipv6Addr, data: &[u8]) -> io::Result<usize> {
        self.sender6.send(to, data)
    }

    /// Makes a BU able to leave from `from` (any port), so the NAT makes a new mapping for
    /// it: the first care-of address gets the socket payload uses too; a later one a second
    /// socket, while payload keeps the registered one until [`Self::promote_udp`] (RFC 5555
    /// section 5.1). True when a descriptor changed (register the UDP sources again).
    pub fn bind_udp(&mut self, from: Ipv4Addr) -> io::Result<bool> {
        let on = |u: &Option<DsmipUdp>| u.as_ref().is_some_and(|u| is_on(u, from));
        if on(&self.udp) || on(&self.udp_next) {
            return Ok(false);
        }
        let s = Some(DsmipUdp::bind(SocketAddrV4::new(from, 0))?);
        if self.udp.is_none() {
            self.udp = s;
            self.bind_esp_udp(from)?;
        } else {
            self.udp_next = s;
        }
        Ok(true)
    }

    /// The BA for `coa` arrived: its BU's socket becomes the one payload uses, and port
    /// 4500 follows. True when a descriptor changed.
    pub fn promote_udp(&mut self, coa: Ipv4Addr) -> io::Result<bool> {
        if !self.udp_next.as_ref().is_some_and(|u| is_on(u, coa)) {
            return Ok(false);
        }
        self.udp = self.udp_next.take();
        self.bind_esp_udp(coa)?;
        Ok(true)
    }

    /// Binds port 4500 on `from` (both ends use 4500, RFC 3948 section 2.1) when ESP is
    /// configured and it is not bound there yet. True when the descriptor changed.
    pub fn bind_esp_udp(&mut self, from: Ipv4Addr) -> io::Result<bool> {
        if !self.esp || self.esp_udp.as_ref().is_some_and(|u| is_on(u, from)) {
            return Ok(false);
        }
        self.esp_udp = None;
        self.esp_udp = Some(DsmipUdp::bind(SocketAddrV4::new(from, ESP_UDP_PORT))?);
        Ok(true)
    }

    /// Binds port 4500 on the IPv6 address `from` for IKE (the home agent's address, or the
    /// mobile node's IPv6 care-of address) when ESP is configured and it is not bound there
    /// yet. True when the descriptor changed (register it again).
    pub fn bind_esp_udp6(&mut self, from: Ipv6Addr) -> io::Result<bool> {
        let on = |u: &Udp6| u.local().is_ok_and(|l| *l.ip() == from);
        if !self.esp || self.esp_udp6.as_ref().is_some_and(on) {
            return Ok(false);
        }
        self.esp_udp6 = None;
        self.esp_udp6 = Some(Udp6::bind(SocketAddrV6::new(from, ESP_UDP_PORT, 0, 0))?);
        Ok(true)
    }

    /// Makes IP-in-IP toward the peer leave from `local` (the registered care-of address:
    /// the outer source the home agent knows). The replaced descriptors must be registered
    /// again.
    pub fn bind_ip_in_ip(&mut self, local: IpAddr) -> io::Result<()> {
        match local {
            IpAddr::V4(_) => self.ip4 = trio(local)?,
            IpAddr::V6(_) => self.ip6 = trio(local)?,
        }
        Ok(())
    }
}
