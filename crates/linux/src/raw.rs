//! Raw sockets of the DSMIPv6 tunnel-interface module. The kernel here has no ipip, sit,
//! ip6_tunnel or MIP6 support, so IP-in-IP and Mobility Header signalling are done in
//! userspace: raw IPv4 and IPv6 sockets per inner protocol (4, 41) carry IP-in-IP (the
//! kernel adds and removes the outer header), an IPPROTO_RAW IPv6 socket sends whole
//! signalling packets with their extension headers, and a packet socket captures the
//! signalling packets the kernel's IPv6 layer would discard (a Home Address option or a
//! type 2 Routing Header it does not know).

use m6t_wire::Ipv4Packet;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BUFFER_BYTES: usize = 4 << 20;

fn recv_into(s: &Socket, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    // SAFETY: MaybeUninit<u8> has the layout of u8 and the kernel only writes to it.
    let b = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    s.recv_from(b)
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: valid descriptor; the value is a c_int of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A raw IP socket for one inner protocol (IPv4 protocol 4/41 or IPv6 Next Header 4/41):
/// receives the inner packets of IP-in-IP addressed to this host, sends inner packets that
/// the kernel wraps in an outer header from the bound address.
pub struct RawIp {
    sock: Socket,
    v6: bool,
}

impl RawIp {
    /// Opens the socket for `proto`, bound to `local` (the outer source of what it sends).
    pub fn open(local: IpAddr, proto: u8) -> io::Result<RawIp> {
        let (domain, v6) = match local {
            IpAddr::V4(_) => (Domain::IPV4, false),
            IpAddr::V6(_) => (Domain::IPV6, true),
        };
        let sock = Socket::new(domain, Type::RAW, Some(Protocol::from(i32::from(proto))))?;
        sock.set_nonblocking(true)?;
        let _ = sock.set_recv_buffer_size(BUFFER_BYTES);
        let _ = sock.set_send_buffer_size(BUFFER_BYTES);
        if !v6 {
            // Like the UDP path: the outer IPv4 header carries no DF bit.
            set_int(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_DONT,
            )?;
        } else {
            // An IPv6 router never fragments: a tunnel packet larger than the path to the
            // care-of address (an m6t or Teredo tunnel) comes back as a Packet Too Big. The
            // kernel records that path MTU, and fragments the next ones (RFC 2473 section 7),
            // only for a raw socket that asks for errors: without IPV6_RECVERR an unconnected
            // raw socket ignores the message and every large packet is lost for good. The
            // errors then queue on the socket and [`RawIp::recv`] empties that queue.
            set_int(sock.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)?;
        }
        if !local.is_unspecified() {
            sock.bind(&SockAddr::from(SocketAddr::new(local, 0)))?;
        }
        Ok(RawIp { sock, v6 })
    }

    /// Receives one packet: the outer source and where the inner packet lies in `buf` (a
    /// raw IPv4 socket delivers the outer header too; it is skipped, not copied over).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(IpAddr, std::ops::Range<usize>)> {
        let (n, from) = match recv_into(&self.sock, buf) {
            // An ICMPv6 error about an earlier send (IPV6_RECVERR): the kernel has acted
            // on it (a Packet Too Big set the path MTU); not a receive failure.
            Err(e) if self.v6 && e.kind() != io::ErrorKind::WouldBlock => {
                self.drain_errors(buf);
                recv_into(&self.sock, buf)?
            }
            r => r?,
        };
        let src = from
            .as_socket()
            .map(|a| a.ip())
            .ok_or_else(|| io::Error::other("no source address"))?;
        if self.v6 {
            return Ok((src, 0..n));
        }
        let outer = Ipv4Packet::new_checked(&buf[..n]).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("outer IPv4 header: {e}"),
            )
        })?;
        Ok((src, outer.header_len()..usize::from(outer.total_len())))
    }

    /// Empties the error queue IPV6_RECVERR fills (the kernel has already acted on each
    /// error: a Packet Too Big has updated the path MTU), so that it never takes the receive
    /// buffer's room from packets.
    fn drain_errors(&self, buf: &mut [u8]) {
        loop {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: a zeroed msghdr is valid; it names one iovec over `buf`, which outlives
            // the call, and no control buffer (the error's details are not needed).
            let r = unsafe {
                let mut m: libc::msghdr = std::mem::zeroed();
                m.msg_iov = &mut iov;
                m.msg_iovlen = 1;
                libc::recvmsg(
                    self.sock.as_raw_fd(),
                    &mut m,
                    libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                return;
            }
        }
    }

    /// Sends `inner` to `to` inside an outer header built by the kernel.
    pub fn send(&self, to: IpAddr, inner: &[u8]) -> io::Result<usize> {
        self.sock
            .send_to(inner, &SockAddr::from(SocketAddr::new(to, 0)))
    }
}

impl AsRawFd for RawIp {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// An IPPROTO_RAW IPv6 socket: sends whole IPv6 packets, extension headers included, as
/// they are (a BU with a Home Address option, a BA with a type 2 Routing Header).
pub struct RawIpv6Sender {
    sock: Socket,
}

impl RawIpv6Sender {
    /// Opens the socket.
    pub fn open() -> io::Result<RawIpv6Sender> {
        let sock = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )?;
        sock.set_nonblocking(true)?;
        Ok(RawIpv6Sender { sock })
    }

    /// Sends the packet `pkt` toward `to` (its first hop: the destination field).
    pub fn send(&self, to: Ipv6Addr, pkt: &[u8]) -> io::Result<usize> {
        self.sock
            .send_to(pkt, &SockAddr::from(SocketAddrV6::new(to, 0, 0, 0)))
    }
}

/// A packet socket capturing incoming IPv6 packets whose first extension header is
/// Hop-by-Hop, Routing or Destination Options, or a Mobility Header right after the IPv6
/// header (the BU from the home link and its BA, RFC 6275 section 11.5.5), on every
/// interface (a classic BPF filter keeps everything else, data included, out of it).
pub struct Capture {
    fd: OwnedFd,
}

const ETH_P_IPV6: u16 = 0x86dd;
const PACKET_OUTGOING: u8 = 4;

impl Capture {
    /// Opens the capture.
    pub fn open() -> io::Result<Capture> {
        // SAFETY: plain socket(2) call; the descriptor is owned right after.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_IPV6.to_be()),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // ldb [6]; jeq 0/43/60/135 -> accept; ret 0; accept: ret 0xffff (offsets from the
        // network header: SOCK_DGRAM packet sockets strip the link header).
        let prog = [
            libc::sock_filter {
                code: 0x30,
                jt: 0,
                jf: 0,
                k: 6,
            },
            libc::sock_filter {
                code: 0x15,
                jt: 4,
                jf: 0,
                k: 0,
            },
            libc::sock_filter {
                code: 0x15,
                jt: 3,
                jf: 0,
                k: 43,
            },
            libc::sock_filter {
                code: 0x15,
                jt: 2,
                jf: 0,
                k: 60,
            },
            libc::sock_filter {
                code: 0x15,
                jt: 1,
                jf: 0,
                k: 135,
            },
            libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: 0,
            },
            libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: 0xffff,
            },
        ];
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: valid descriptor; fprog points at `prog`, alive for the call.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                &fprog as *const libc::sock_fprog as *const libc::c_void,
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Capture { fd })
    }

    /// Receives one incoming packet into `buf` (outgoing copies are skipped); returns its
    /// length, or WouldBlock when none is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf and sll are valid for the lengths passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                    &mut sll as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if sll.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            return Ok(n as usize);
        }
    }
}

impl AsRawFd for Capture {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A UDP socket of DSMIPv6 (port 4191 on the home agent; on the mobile node an ephemeral
/// port bound to the IPv4 care-of address, so the NAT keeps one mapping for BUs and data).
pub struct DsmipUdp {
    /// The socket, with quinn-udp's state for GSO sends of data batches.
    udp: crate::udp::Udp,
    /// The address it is bound to, asked once: every IKE datagram on port 4500 needs it,
    /// and a getsockname per datagram is a system call a flood would make the daemon pay.
    local: SocketAddrV4,
}

impl DsmipUdp {
    /// Binds `local`.
    pub fn bind(local: SocketAddrV4) -> io::Result<DsmipUdp> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        let _ = s.set_recv_buffer_size(BUFFER_BYTES);
        let _ = s.set_send_buffer_size(BUFFER_BYTES);
        set_int(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DONT,
        )?;
        s.bind(&SockAddr::from(local))?;
        let udp = crate::udp::Udp::new(s)?;
        // quinn-udp turns UDP GRO on; [`Self::recv`] reads one datagram at a time, and a
        // coalesced run would reach it as one.
        set_int(udp.sock.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 0)?;
        let local = udp.local_v4()?;
        Ok(DsmipUdp { udp, local })
    }

    /// Receives what is queued, up to `b`'s slots, in one recvmmsg; `WouldBlock` when none.
    pub fn recv_batch(&self, b: &mut crate::batch::RecvBatch) -> io::Result<usize> {
        b.recv(&self.udp)
    }

    /// Sends what `b` gathered (runs of equal-size datagrams to one peer as one GSO send,
    /// the rest in one sendmmsg); returns the datagrams the kernel refused.
    pub fn flush(&self, b: &mut crate::batch::SendBatch) -> u64 {
        b.flush(&self.udp);
        b.take_errors()
    }

    /// The bound address.
    pub fn local(&self) -> io::Result<SocketAddrV4> {
        Ok(self.local)
    }

    /// Receives one datagram.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
        match self.udp.sock.recv_from(buf)? {
            (n, SocketAddr::V4(a)) => Ok((n, a)),
            _ => Err(io::Error::other("not IPv4")),
        }
    }

    /// Sends one datagram.
    pub fn send(&self, to: SocketAddrV4, data: &[u8]) -> io::Result<usize> {
        self.udp.sock.send_to(data, to)
    }

    /// Sends a datagram made of two parts (a TLV header and the packet) without copying.
    pub fn send2(&self, to: SocketAddrV4, a: &[u8], b: &[u8]) -> io::Result<usize> {
        let s = socket2::SockRef::from(&self.udp.sock);
        s.send_to_vectored(
            &[io::IoSlice::new(a), io::IoSlice::new(b)],
            &SockAddr::from(to),
        )
    }
}

impl AsRawFd for DsmipUdp {
    fn as_raw_fd(&self) -> RawFd {
        self.udp.sock.as_raw_fd()
    }
}

/// A UDP socket over IPv6 for IKE on port 4500 (RFC 7296 section 2.23) from an IPv6 address:
/// the home agent's, or a mobile node's IPv6 care-of address (a native one, or an m6t
/// tunnel's). IPv6 only (a wildcard bind must not take IPv4's port 4500, which
/// [`DsmipUdp`] holds), and free-bound: a care-of address movement detection just saw may
/// still be settling when the socket is made.
pub struct Udp6 {
    sock: std::net::UdpSocket,
}

impl Udp6 {
    /// Binds `local`.
    pub fn bind(local: SocketAddrV6) -> io::Result<Udp6> {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(true)?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        set_int(s.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, 1)?;
        s.bind(&SockAddr::from(local))?;
        Ok(Udp6 { sock: s.into() })
    }

    /// The bound address.
    pub fn local(&self) -> io::Result<SocketAddrV6> {
        match self.sock.local_addr()? {
            SocketAddr::V6(a) => Ok(a),
            SocketAddr::V4(_) => Err(io::Error::other("not IPv6")),
        }
    }

    /// Receives one datagram.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV6)> {
        match self.sock.recv_from(buf)? {
            (n, SocketAddr::V6(a)) => Ok((n, a)),
            _ => Err(io::Error::other("not IPv6")),
        }
    }

    /// Sends one datagram.
    pub fn send(&self, to: SocketAddrV6, data: &[u8]) -> io::Result<usize> {
        self.sock.send_to(data, to)
    }
}

impl AsRawFd for Udp6 {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// Writes a sysctl under /proc/sys (e.g. `net/ipv6/conf/eth0/proxy_ndp`).
pub fn sysctl(path: &str, value: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/{path}"), value)
}

/// The unspecified IPv4 address, for binding ephemeral sockets.
pub const ANY4: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::SendBatch;
    use std::net::Ipv4Addr;

    /// A batch leaves as one GSO run plus singles, and the receiving DSMIPv6 socket, which
    /// reads one datagram per call, gets each datagram alone: quinn-udp's UDP GRO is off
    /// on it, and DF stays clear.
    #[test]
    fn a_batch_reaches_a_dsmip_socket_one_datagram_at_a_time() {
        let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let rx = DsmipUdp::bind(any).unwrap();
        let tx = DsmipUdp::bind(any).unwrap();
        let to = rx.local().unwrap();
        let mut b = SendBatch::new(64);
        for i in 0..20u8 {
            b.push(&[i; 1200], to);
        }
        b.push_parts(&[&[20; 4], &[20; 296]], to);
        assert_eq!(tx.flush(&mut b), 0);
        assert!(b.is_empty());
        let mut buf = [0u8; 65536];
        let mut got = Vec::new();
        for _ in 0..500 {
            match rx.recv(&mut buf) {
                Ok((n, from)) => {
                    assert_eq!(from, tx.local().unwrap());
                    got.push(buf[..n].to_vec());
                    if got.len() == 21 {
                        break;
                    }
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
            }
        }
        assert_eq!(got.len(), 21);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d.len(), if i < 20 { 1200 } else { 300 }, "datagram {i}");
            assert!(d.iter().all(|x| *x == i as u8), "datagram {i}");
        }
        assert!(crate::udp::df_cleared(&tx.udp.sock).unwrap());
    }
}
