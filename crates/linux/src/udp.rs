//! UDP sockets of the tunnel: outer IPv4 without the DF bit (draft section 2.6), large
//! buffers, non-blocking.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

/// Socket buffer size asked for; the kernel caps it at net.core.[rw]mem_max.
const BUFFER_BYTES: usize = 4 << 20;

fn clear_df(s: &Socket) -> io::Result<()> {
    let v: libc::c_int = libc::IP_PMTUDISC_DONT;
    // SAFETY: valid socket, option value is a c_int of the size passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn base() -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    clear_df(&s)?;
    let _ = s.set_recv_buffer_size(BUFFER_BYTES);
    let _ = s.set_send_buffer_size(BUFFER_BYTES);
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A tunnel UDP socket with its quinn-udp state (GSO/GRO capabilities).
pub struct Udp {
    /// The socket.
    pub sock: UdpSocket,
    /// Batched-I/O state.
    pub state: quinn_udp::UdpSocketState,
}

impl Udp {
    pub(crate) fn new(s: Socket) -> io::Result<Udp> {
        let sock: UdpSocket = s.into();
        let state = quinn_udp::UdpSocketState::new((&sock).into())?;
        // quinn-udp asks for DF (PMTUDISC_PROBE); m6t must not set it (draft section 2.6).
        clear_df(&Socket::from(sock.try_clone()?))?;
        Ok(Udp { sock, state })
    }

    /// The local IPv4 address and port.
    pub fn local_v4(&self) -> io::Result<SocketAddrV4> {
        match self.sock.local_addr()? {
            SocketAddr::V4(a) => Ok(a),
            SocketAddr::V6(_) => Err(io::Error::other("not an IPv4 socket")),
        }
    }
}

impl AsRawFd for Udp {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

/// A gateway socket listening on `addr:port`.
pub fn listen(addr: Ipv4Addr, port: u16) -> io::Result<Udp> {
    let s = base()?;
    s.bind(&SockAddr::from(SocketAddrV4::new(addr, port)))?;
    Udp::new(s)
}

/// One socket per worker on `addr:port`, in a SO_REUSEPORT group whose classic BPF program
/// (SO_ATTACH_REUSEPORT_CBPF) steers each datagram by the last 32 bits of the IPv6 source
/// inside it (UDP payload bytes 20..24: the random part of an m6t tunnel address) modulo
/// the number of sockets, so that a mobile node's packets reach the worker owning its
/// state. Datagrams too short for that load go to socket 0.
pub fn listen_group(addr: Ipv4Addr, port: u16, n: usize) -> io::Result<Vec<Udp>> {
    if n <= 1 {
        return Ok(vec![listen(addr, port)?]);
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let s = base()?;
        s.set_reuse_port(true)?;
        s.bind(&SockAddr::from(SocketAddrV4::new(addr, port)))?;
        v.push(s);
    }
    // ld [20]; mod #n; ret a (offsets from the UDP payload, where the kernel runs it).
    let prog = [
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 20,
        },
        libc::sock_filter {
            code: 0x94,
            jt: 0,
            jf: 0,
            k: n as u32,
        },
        libc::sock_filter {
            code: 0x16,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: valid socket; fprog points at `prog`, alive for the call.
    let r = unsafe {
        libc::setsockopt(
            v[0].as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    v.into_iter().map(Udp::new).collect()
}

/// The worker [`listen_group`] steers a datagram to (the same function in userspace).
pub fn steer(payload: &[u8], n: usize) -> usize {
    match payload.get(20..24) {
        Some(b) if n > 1 => (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) % n,
        _ => 0,
    }
}

/// A fresh client socket connected to the gateway (a new local port every time, so that
/// the NAT makes a new mapping for a new tunnel address).
pub fn connect(gateway: SocketAddrV4) -> io::Result<Udp> {
    let s = base()?;
    s.bind(&SockAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))?;
    s.connect(&SockAddr::from(gateway))?;
    Udp::new(s)
}

/// The local IPv4 address the kernel would use toward `gateway`, or `None` when there is
/// no address or no route (connect(2) on a UDP socket does the route lookup, sends nothing).
pub fn source_toward(gateway: SocketAddrV4) -> Option<Ipv4Addr> {
    match route_source(IpAddr::V4(*gateway.ip()))? {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

/// The source address the kernel's route lookup picks toward `dst` (either family), or
/// `None` without an address or a route: a cheap fingerprint of the path a packet to `dst`
/// would take now, since the preferred source follows the chosen route.
pub fn route_source(dst: IpAddr) -> Option<IpAddr> {
    let any = match dst {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let s = UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
    s.connect(SocketAddr::new(dst, 9)).ok()?;
    Some(s.local_addr().ok()?.ip()).filter(|a| !a.is_unspecified())
}

/// Whether a packet from `src` to `dst` would leave by interface `dev`: the kernel's route
/// lookup with that source and that output interface (a socket bound to both, connected;
/// nothing is sent). An address is a usable care-of address only when it is: with another
/// interface's route in the way (an m6t tunnel's default route while a new network's own
/// default route is not there yet), what it sends would leave by that interface and be
/// dropped as a wrong source further on.
pub fn routable_by(src: IpAddr, dev: &str, dst: IpAddr) -> bool {
    let domain = match dst {
        IpAddr::V4(_) => Domain::IPV4,
        IpAddr::V6(_) => Domain::IPV6,
    };
    let Ok(s) = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)) else {
        return false;
    };
    s.bind_device(Some(dev.as_bytes())).is_ok()
        && s.bind(&SockAddr::from(SocketAddr::new(src, 0))).is_ok()
        && s.connect(&SockAddr::from(SocketAddr::new(dst, 9))).is_ok()
}

/// True when an error from a connected UDP socket means ICMP port/host unreachable.
pub fn is_unreachable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED) | Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH)
    )
}

/// The DF setting of a socket, for tests: true when the socket never sets DF.
pub fn df_cleared(s: &UdpSocket) -> io::Result<bool> {
    let mut v: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid socket, out-pointers sized as passed.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v == libc::IP_PMTUDISC_DONT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_never_set_df_and_talk_on_loopback() {
        let l = listen(Ipv4Addr::LOCALHOST, 0).unwrap();
        let port = l.local_v4().unwrap().port();
        let c = connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).unwrap();
        assert!(df_cleared(&l.sock).unwrap());
        assert!(df_cleared(&c.sock).unwrap());
        c.sock.send(b"x").unwrap();
        let mut b = [0u8; 4];
        let mut got = None;
        for _ in 0..100 {
            match l.sock.recv_from(&mut b) {
                Ok(r) => {
                    got = Some(r);
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        assert_eq!(got.map(|(n, _)| n), Some(1));
        assert_eq!(
            source_toward(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9)),
            Some(Ipv4Addr::LOCALHOST)
        );
    }
}
