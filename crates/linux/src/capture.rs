//! `--pcap FILE`: what crosses the tunnel, outer headers included, written as pcapng.
//!
//! The capture is a packet socket of its own (`AF_PACKET`, `SOCK_RAW`: frames as they leave
//! and arrive on every interface of the namespace, link header included), narrowed in the
//! kernel by a classic BPF filter on the IP header (wherever the link header ends) to the
//! tunnel's UDP ports and IP protocols, and
//! read by a thread of its own that writes the file. The data plane never touches it: no
//! code runs per packet in the daemon's loops whether or not a capture is on, and a slow
//! disk cannot stall them. The socket's receive buffer is the bounded queue between the
//! two; when the writer falls behind, the kernel drops records from it and
//! `PACKET_STATISTICS` counts them (`pcap_dropped`).
//!
//! Bytes are those on the wire: packets the stack hands to the device with UDP GSO (one
//! super-packet for many datagrams) are cut back into the datagrams the device sends,
//! each with its own IPv4 identification, lengths and checksums, and checksums left to
//! the device (`CHECKSUM_PARTIAL`) are filled in. The kernel says which packets need this
//! through the `virtio_net_hdr` it puts before each one (`PACKET_VNET_HDR`).
//!
//! Each interface gets its own pcapng interface block with its name, nanosecond timestamps
//! and its link type: Ethernet (1) for Ethernet and loopback devices, RAW (101: IPv4 or
//! IPv6 from the first byte) for TUN and IP tunnel devices; other kinds are left out.
//! Interfaces enslaved to another (bridge, bond or VRF ports) are left out too: the same
//! packet shows again on their master.

use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What to capture: UDP datagrams from or to any of `udp_ports`, and IP packets (IPv4
/// protocol or IPv6 next header right after the fixed header) of any of `ip_protocols`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureFilter {
    /// UDP source or destination ports.
    pub udp_ports: Vec<u16>,
    /// IP protocol numbers (50 ESP, 41 IPv6, 4 IPv4, 135 Mobility Header, ...).
    pub ip_protocols: Vec<u8>,
}

/// The socket receive buffer: the bound on what waits for the writer (about 2000 full-size
/// packets with their kernel overhead).
const RCVBUF: usize = 4 << 20;
/// The writer's buffer; flushed at least every [`FLUSH_EVERY`] so that a running capture
/// can be read.
const WRITE_BUFFER: usize = 256 << 10;
/// Longest time a record waits in the writer's buffer.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// The `virtio_net_hdr` before each packet.
const VNET_HDR_LEN: usize = 10;
/// Largest packet read: a GSO super-packet is at most 64 KiB.
const MAX_PACKET: usize = 65_536 + 256;

// <linux/if_packet.h> and <linux/virtio_net.h>; not in the libc crate.
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_OUTGOING: u8 = 4;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// `struct tpacket_stats`.
#[repr(C)]
#[derive(Default)]
struct TpacketStats {
    packets: u32,
    drops: u32,
}

/// The names of [`CaptureStats::written`] and [`CaptureStats::dropped`] in `m6t status`.
pub const COUNTER_NAMES: [&str; 2] = ["pcap_written", "pcap_dropped"];

/// Counts of a running capture.
#[derive(Debug, Default)]
pub struct CaptureStats {
    written: AtomicU64,
    dropped: AtomicU64,
}

impl CaptureStats {
    /// Packets written to the file (a GSO super-packet counts as the datagrams it carried).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Packets the capture lost: dropped by the kernel while the writer was behind, or too
    /// large to read.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A running capture; dropping it stops the thread and flushes the file.
pub struct Capture {
    stop: Arc<AtomicBool>,
    stats: Arc<CaptureStats>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Capture({})", self.path.display())
    }
}

fn cvt(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
) -> std::io::Result<()> {
    // SAFETY: `v` is a live value of the size given.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The packet socket: filter attached before it is bound, so that nothing unfiltered is
/// ever queued on it.
fn open_socket(filter: &CaptureFilter) -> std::io::Result<OwnedFd> {
    // Protocol 0: the socket receives nothing until bind(2) names one. SOCK_RAW, as
    // PACKET_VNET_HDR needs.
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a descriptor we just opened and nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut prog = bpf_program(filter);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)?;
    setsockopt(&fd, libc::SOL_PACKET, PACKET_VNET_HDR, &1 as &libc::c_int)?;
    setsockopt(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPNS,
        &1 as &libc::c_int,
    )?;
    setsockopt(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        &(RCVBUF as libc::c_int),
    )?;
    // SAFETY: zeroed sockaddr_ll is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = 0;
    // SAFETY: `sll` is a sockaddr_ll of the length given.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

impl Capture {
    /// Opens the packet socket (CAP_NET_RAW), creates `path` (mode 0600) and starts the
    /// writer thread.
    /// Errors are those of the socket or the file, before anything runs.
    pub fn start(path: &Path, filter: &CaptureFilter) -> std::io::Result<Capture> {
        let fd = open_socket(filter)?;
        // Readable by its owner only: m6t's tunnel carries its payload in the clear.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)?
        };
        let writer = PcapNgWriter::new(BufWriter::with_capacity(WRITE_BUFFER, file))
            .map_err(std::io::Error::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(CaptureStats::default());
        let mut w = Writer {
            fd,
            out: writer,
            interfaces: Vec::new(),
            stats: Arc::clone(&stats),
            path: path.to_owned(),
        };
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("pcap".into())
            .spawn(move || w.run(&s))?;
        Ok(Capture {
            stop,
            stats,
            thread: std::sync::Mutex::new(Some(thread)),
            path: path.to_owned(),
        })
    }

    /// The capture's counts.
    pub fn stats(&self) -> &CaptureStats {
        &self.stats
    }

    /// Stops the thread after what is queued now, and flushes the file (also on drop).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An interface seen by the capture: its pcapng interface id and link header length, or
/// `None` when left out.
struct Iface {
    index: i32,
    id: Option<(u32, usize)>,
}

/// The pcapng link type and link header length of a device type (`ARPHRD_*`), for the
/// kinds a tunnel's packets cross.
fn link_type(hatype: u16) -> Option<(DataLink, usize)> {
    match hatype {
        libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK => Some((DataLink::ETHERNET, 14)),
        libc::ARPHRD_NONE | libc::ARPHRD_TUNNEL | libc::ARPHRD_TUNNEL6 | libc::ARPHRD_SIT => {
            Some((DataLink::RAW, 0))
        }
        _ => None,
    }
}

/// Where the IP header starts in a frame whose link header is `l2` bytes long: after an
/// Ethernet header, and after one 802.1Q / 802.1ad tag if there is one.
fn network_offset(frame: &[u8], l2: usize) -> usize {
    if l2 == 14
        && frame.len() >= 18
        && matches!([frame[12], frame[13]], [0x81, 0x00] | [0x88, 0xa8])
    {
        18
    } else {
        l2
    }
}

struct Writer {
    fd: OwnedFd,
    out: PcapNgWriter<BufWriter<File>>,
    interfaces: Vec<Iface>,
    stats: Arc<CaptureStats>,
    path: PathBuf,
}

impl Writer {
    fn run(&mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; VNET_HDR_LEN + MAX_PACKET];
        let mut seg = Vec::with_capacity(MAX_PACKET);
        let mut last_flush = Instant::now();
        let mut result = Ok(());
        while !stop.load(Ordering::Relaxed) && result.is_ok() {
            let mut p = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd, alive for the call.
            unsafe { libc::poll(&mut p, 1, 200) };
            for _ in 0..1024 {
                match self.read_one(&mut buf, &mut seg) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if last_flush.elapsed() >= FLUSH_EVERY {
                result = result.and_then(|()| self.flush());
                last_flush = Instant::now();
            }
        }
        // What arrived before the stop still goes in the file.
        for _ in 0..65_536 {
            if !matches!(result, Ok(())) || !matches!(self.read_one(&mut buf, &mut seg), Ok(true)) {
                break;
            }
        }
        if let Err(e) = result.and_then(|()| self.flush()) {
            tracing::error!("--pcap {}: {e}; capture stopped", self.path.display());
        }
    }

    /// Flushes the file and adds the kernel's drops since the last call.
    fn flush(&mut self) -> std::io::Result<()> {
        let mut st = TpacketStats::default();
        let mut len = std::mem::size_of::<TpacketStats>() as libc::socklen_t;
        // SAFETY: `st` has the length given; the kernel resets its counts on each read.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                (&mut st as *mut TpacketStats).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.stats
                .dropped
                .fetch_add(u64::from(st.drops), Ordering::Relaxed);
        }
        self.out.get_mut().flush()
    }

    /// Reads and writes one packet; `Ok(false)` when none is queued.
    fn read_one(&mut self, buf: &mut [u8], seg: &mut Vec<u8>) -> std::io::Result<bool> {
        // SAFETY: zeroed sockaddr_ll is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cmsg = [0u64; 16];
        // SAFETY: zeroed msghdr is a valid value; fields set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
        // SAFETY: every pointer in `msg` is to a live buffer of the length given.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(false),
                _ => Err(e),
            };
        }
        let n = n as usize;
        if msg.msg_flags & libc::MSG_TRUNC != 0 || n < VNET_HDR_LEN {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        // Loopback shows each packet twice, leaving and arriving: keep the arrival.
        if sll.sll_pkttype == PACKET_OUTGOING && sll.sll_hatype == libc::ARPHRD_LOOPBACK {
            return Ok(true);
        }
        let Some((id, l2)) = self.interface(sll.sll_ifindex, sll.sll_hatype)? else {
            return Ok(true);
        };
        let ts = timestamp(&msg).unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
        });
        let vnet = VnetHdr::parse(&buf[..VNET_HDR_LEN]);
        let pkt = &mut buf[VNET_HDR_LEN..n];
        if vnet.gso_type & !VIRTIO_NET_HDR_GSO_ECN == VIRTIO_NET_HDR_GSO_UDP_L4 && vnet.gso_size > 0
        {
            let mut err = Ok(());
            let mut count = 0;
            let l3 = network_offset(pkt, l2);
            let done = segment_udp(pkt, l3, usize::from(vnet.gso_size), seg, |s| {
                count += 1;
                if err.is_ok() {
                    err = write_packet(&mut self.out, id, ts, s);
                }
            });
            if !done {
                // Not a UDP packet the segmentation understands: as it came.
                count += 1;
                err = write_packet(&mut self.out, id, ts, pkt);
            }
            self.stats.written.fetch_add(count, Ordering::Relaxed);
            return err.map(|()| true);
        }
        if vnet.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            fill_checksum(
                pkt,
                usize::from(vnet.csum_start),
                usize::from(vnet.csum_offset),
            );
        }
        write_packet(&mut self.out, id, ts, pkt)?;
        self.stats.written.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// The pcapng interface id and link header length of `index`, writing its interface
    /// block the first time; `None` for an interface enslaved to another or of a kind left
    /// out.
    fn interface(&mut self, index: i32, hatype: u16) -> std::io::Result<Option<(u32, usize)>> {
        if let Some(i) = self.interfaces.iter().find(|i| i.index == index) {
            return Ok(i.id);
        }
        let name = if_name(index).unwrap_or_else(|| format!("if{index}"));
        let enslaved = Path::new("/sys/class/net")
            .join(&name)
            .join("master")
            .exists();
        let id = match link_type(hatype) {
            Some(_) if enslaved => None,
            None => None,
            Some((linktype, l2)) => {
                let id = self.out.interfaces().len() as u32;
                let idb = InterfaceDescriptionBlock {
                    linktype,
                    snaplen: 0,
                    options: vec![
                        InterfaceDescriptionOption::IfName(Cow::Owned(name)),
                        // Nanoseconds, as EnhancedPacketBlock writes its timestamps.
                        InterfaceDescriptionOption::IfTsResol(9),
                    ],
                };
                self.out
                    .write_pcapng_block(idb)
                    .map_err(std::io::Error::other)?;
                Some((id, l2))
            }
        };
        self.interfaces.push(Iface { index, id });
        Ok(id)
    }
}

fn write_packet(
    out: &mut PcapNgWriter<BufWriter<File>>,
    id: u32,
    ts: Duration,
    data: &[u8],
) -> std::io::Result<()> {
    let epb = EnhancedPacketBlock {
        interface_id: id,
        timestamp: ts,
        original_len: data.len() as u32,
        data: Cow::Borrowed(data),
        options: Vec::new(),
    };
    out.write_pcapng_block(epb)
        .map(drop)
        .map_err(std::io::Error::other)
}

fn if_name(index: i32) -> Option<String> {
    let mut b = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `b` has IF_NAMESIZE bytes, as if_indextoname(3) needs.
    let p = unsafe { libc::if_indextoname(index as libc::c_uint, b.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into `b`.
    let s = unsafe { std::ffi::CStr::from_ptr(b.as_ptr()) };
    Some(s.to_string_lossy().into_owned())
}

/// The kernel's receive time (`SCM_TIMESTAMPNS`), since the Unix epoch.
fn timestamp(msg: &libc::msghdr) -> Option<Duration> {
    // SAFETY: `msg` was filled by recvmsg(2); the CMSG macros walk its control buffer.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// `struct virtio_net_hdr`, in the host's byte order (packet sockets are little-endian
/// virtio on little-endian hosts and native on the others).
#[derive(Debug, Default, Clone, Copy)]
struct VnetHdr {
    flags: u8,
    gso_type: u8,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

impl VnetHdr {
    fn parse(b: &[u8]) -> VnetHdr {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }
}

/// Fills in a checksum left to the device: the field at `start + offset` holds the
/// pseudo-header's sum, and the checksum covers everything from `start`.
fn fill_checksum(pkt: &mut [u8], start: usize, offset: usize) {
    let at = start + offset;
    if at + 2 > pkt.len() || start > pkt.len() {
        return;
    }
    let c = m6t_wire::checksum::finish(m6t_wire::checksum::accumulate(0, &pkt[start..]));
    // UDP sends a computed zero as all ones (zero means "no checksum").
    let c = if c == 0 { 0xffff } else { c };
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Cuts a UDP GSO super-frame (`l3` bytes of link header, an IPv4 or IPv6 header, a UDP
/// header, then datagrams of `gso_size` bytes, the last one shorter) into the frames the
/// device sends, each with the same link header and its own lengths, IPv4 identification
/// (one more per datagram, as the kernel's segmentation gives them) and checksums; `emit`
/// gets each. Returns false, emitting nothing, for a frame that is not IPv4/UDP or
/// IPv6/UDP.
fn segment_udp(
    frame: &[u8],
    l3: usize,
    gso_size: usize,
    out: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> bool {
    let Some(pkt) = frame.get(l3..) else {
        return false;
    };
    let Some(&first) = pkt.first() else {
        return false;
    };
    let (ip_len, v4) = match first >> 4 {
        4 if pkt.len() >= 20 && pkt[9] == 17 => (usize::from(first & 0x0f) * 4, true),
        6 if pkt.len() >= 40 && pkt[6] == 17 => (40, false),
        _ => return false,
    };
    let hdr = ip_len + 8;
    if pkt.len() <= hdr || ip_len < 20 || gso_size == 0 {
        return false;
    }
    let id0 = u16::from_be_bytes([pkt[4], pkt[5]]);
    for (i, chunk) in pkt[hdr..].chunks(gso_size).enumerate() {
        out.clear();
        out.extend_from_slice(&frame[..l3 + hdr]);
        out.extend_from_slice(chunk);
        let o = &mut out[l3..];
        let udp_len = (8 + chunk.len()) as u16;
        if v4 {
            let total = (ip_len + 8 + chunk.len()) as u16;
            o[2..4].copy_from_slice(&total.to_be_bytes());
            o[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            o[10..12].fill(0);
            let c = m6t_wire::checksum::finish(m6t_wire::checksum::accumulate(0, &o[..ip_len]));
            o[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            o[4..6].copy_from_slice(&udp_len.to_be_bytes());
        }
        o[ip_len + 4..ip_len + 6].copy_from_slice(&udp_len.to_be_bytes());
        o[ip_len + 6..ip_len + 8].fill(0);
        // Pseudo-header: addresses, protocol, UDP length (RFC 768; RFC 8200 section 8.1).
        let addrs = if v4 { &o[12..20] } else { &o[8..40] };
        let mut sum = m6t_wire::checksum::accumulate(0, addrs);
        sum = sum.wrapping_add(17).wrapping_add(u32::from(udp_len));
        sum = m6t_wire::checksum::accumulate(sum, &o[ip_len..]);
        let c = m6t_wire::checksum::finish(sum);
        let c = if c == 0 { 0xffff } else { c };
        o[ip_len + 6..ip_len + 8].copy_from_slice(&c.to_be_bytes());
        emit(out);
    }
    true
}

/// One classic BPF instruction before its jumps are resolved.
enum Op {
    /// An instruction without jumps (`code`, `k`).
    Stmt(u16, u32),
    /// A conditional jump (`code`, `k`, then true and false targets; `None`: next).
    Jump(u16, u32, Option<usize>, Option<usize>),
    /// Jump always.
    Ja(usize),
    /// A label (emits nothing).
    Label(usize),
}

// <linux/filter.h> opcodes.
const LDB_ABS: u16 = 0x30;
const LDH_ABS: u16 = 0x28;
const LDH_IND: u16 = 0x48;
const LDXB_MSH: u16 = 0xb1;
const AND_K: u16 = 0x54;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const JA: u16 = 0x05;
const RET_K: u16 = 0x06;

/// Offset `k` from the start of the network header, whatever the link header before it
/// (`SKF_NET_OFF`, <linux/filter.h>).
const fn net(k: u32) -> u32 {
    (libc::SKF_NET_OFF as u32).wrapping_add(k)
}

/// The filter as a classic BPF program reading the IP header (at `SKF_NET_OFF`, so any
/// link type): IPv4 or IPv6, then the protocol, then for UDP the ports (IPv4: first
/// fragments only, after any options; IPv6: UDP right after the fixed header).
fn bpf_program(f: &CaptureFilter) -> Vec<libc::sock_filter> {
    const V4: usize = 0;
    const V6: usize = 1;
    const NOT4: usize = 2;
    const U4: usize = 3;
    const U6: usize = 4;
    const REJECT: usize = 5;
    const ACCEPT: usize = 6;
    let mut ops = vec![
        Op::Stmt(LDB_ABS, net(0)),
        Op::Stmt(AND_K, 0xf0),
        Op::Jump(JEQ_K, 0x40, Some(V4), Some(NOT4)),
        Op::Label(NOT4),
        Op::Jump(JEQ_K, 0x60, Some(V6), Some(REJECT)),
    ];
    let ports = |ops: &mut Vec<Op>, load: Op, load2: Op| {
        for l in [load, load2] {
            ops.push(l);
            for p in &f.udp_ports {
                ops.push(Op::Jump(JEQ_K, u32::from(*p), Some(ACCEPT), None));
            }
        }
        ops.push(Op::Ja(REJECT));
    };
    for (label, proto_at, udp) in [(V4, 9, U4), (V6, 6, U6)] {
        ops.push(Op::Label(label));
        ops.push(Op::Stmt(LDB_ABS, net(proto_at)));
        ops.push(Op::Jump(JEQ_K, 17, Some(udp), None));
        for p in &f.ip_protocols {
            ops.push(Op::Jump(JEQ_K, u32::from(*p), Some(ACCEPT), None));
        }
        ops.push(Op::Ja(REJECT));
    }
    ops.push(Op::Label(U4));
    ops.push(Op::Stmt(LDH_ABS, net(6)));
    ops.push(Op::Jump(JSET_K, 0x1fff, Some(REJECT), None));
    ops.push(Op::Stmt(LDXB_MSH, net(0)));
    ports(
        &mut ops,
        Op::Stmt(LDH_IND, net(0)),
        Op::Stmt(LDH_IND, net(2)),
    );
    ops.push(Op::Label(U6));
    ports(
        &mut ops,
        Op::Stmt(LDH_ABS, net(40)),
        Op::Stmt(LDH_ABS, net(42)),
    );
    ops.push(Op::Label(REJECT));
    ops.push(Op::Stmt(RET_K, 0));
    ops.push(Op::Label(ACCEPT));
    ops.push(Op::Stmt(RET_K, 0x40000));
    assemble(&ops)
}

fn assemble(ops: &[Op]) -> Vec<libc::sock_filter> {
    let mut at = std::collections::HashMap::new();
    let mut n = 0usize;
    for o in ops {
        match o {
            Op::Label(l) => {
                at.insert(*l, n);
            }
            _ => n += 1,
        }
    }
    let mut out = Vec::with_capacity(n);
    for o in ops {
        let here = out.len() + 1;
        // Targets are always ahead; programs are short enough for 8-bit offsets.
        let off = |t: Option<usize>| t.map_or(0, |t| (at[&t] - here) as u8);
        let (code, jt, jf, k) = match *o {
            Op::Label(_) => continue,
            Op::Stmt(c, k) => (c, 0, 0, k),
            Op::Jump(c, k, t, f) => (c, off(t), off(f), k),
            Op::Ja(t) => (JA, 0, 0, (at[&t] - here) as u32),
        };
        out.push(libc::sock_filter { code, jt, jf, k });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic BPF program over `pkt` (the opcodes `bpf_program` uses).
    fn interpret(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let byte = |k: u32| {
            pkt.get(k.wrapping_sub(net(0)) as usize)
                .copied()
                .map(u32::from)
        };
        let half = |k: u32| Some((byte(k)? << 8) | byte(k.wrapping_add(1))?);
        loop {
            let f = &prog[pc];
            pc += 1;
            match f.code {
                LDB_ABS => match byte(f.k) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LDH_ABS | LDH_IND => {
                    let k = f.k.wrapping_add(if f.code == LDH_IND { x } else { 0 });
                    match half(k) {
                        Some(v) => a = v,
                        None => return 0,
                    }
                }
                LDXB_MSH => x = 4 * (byte(f.k).unwrap_or(0) & 0xf),
                AND_K => a &= f.k,
                JEQ_K => pc += usize::from(if a == f.k { f.jt } else { f.jf }),
                JSET_K => pc += usize::from(if a & f.k != 0 { f.jt } else { f.jf }),
                JA => pc += f.k as usize,
                RET_K => return f.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn v4(proto: u8, sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 36, 0, 1];
        p.extend_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&[64, proto, 0, 0, 192, 0, 2, 10, 203, 0, 113, 1]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        p
    }

    fn v6(nh: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 8, nh, 64];
        p.extend_from_slice(&[0x20, 1, 0x0d, 0xb8].repeat(8));
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 8, 0, 0]);
        p
    }

    #[test]
    fn the_filter_takes_the_tunnel_ports_and_protocols_and_nothing_else() {
        let f = CaptureFilter {
            udp_ports: vec![4191, 4500],
            ip_protocols: vec![50, 41],
        };
        let prog = bpf_program(&f);
        let yes = |p: &[u8]| interpret(&prog, p) > 0;
        assert!(yes(&v4(17, 4191, 40000, 0)));
        assert!(yes(&v4(17, 40000, 4500, 0x4000)), "DF set, first fragment");
        assert!(!yes(&v4(17, 40000, 53, 0)));
        assert!(
            !yes(&v4(17, 4191, 4191, 0x2001)),
            "a later fragment has no UDP header"
        );
        assert!(yes(&v4(50, 0, 0, 0)));
        assert!(!yes(&v4(6, 4191, 4191, 0)), "TCP on the port");
        assert!(yes(&v6(17, 1, 4191)));
        assert!(yes(&v6(41, 0, 0)));
        assert!(!yes(&v6(17, 1, 2)));
        assert!(!yes(&v6(58, 4191, 4191)));
        assert!(!yes(&[0x10, 0, 0]));
        assert!(!yes(&[]));
        // Options move the UDP header: the ports are read after them.
        let mut opt = v4(17, 9, 4191, 0);
        opt[0] = 0x46;
        opt.splice(20..20, [1, 1, 1, 1]);
        assert!(yes(&opt));
    }

    fn checksum_ok_v4(p: &[u8]) -> bool {
        let ihl = usize::from(p[0] & 0xf) * 4;
        let ip = m6t_wire::checksum::finish(m6t_wire::checksum::accumulate(0, &p[..ihl]));
        let udp_len = u32::from(u16::from_be_bytes([p[ihl + 4], p[ihl + 5]]));
        let mut s = m6t_wire::checksum::accumulate(0, &p[12..20]);
        s = s.wrapping_add(17).wrapping_add(udp_len);
        s = m6t_wire::checksum::accumulate(s, &p[ihl..]);
        ip == 0 && m6t_wire::checksum::finish(s) == 0
    }

    #[test]
    fn a_gso_super_packet_becomes_the_datagrams_on_the_wire() {
        let payload: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let mut p = vec![
            0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 10, 203, 0, 113, 1,
        ];
        p.extend_from_slice(&[0x9c, 0x40, 0x0d, 0xd8, 0, 0, 0xab, 0xcd]);
        p.extend_from_slice(&payload);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        let eth: Vec<u8> = (0..12).chain([0x08, 0x00]).collect();
        let frame = [eth.clone(), p.clone()].concat();
        let mut segs = Vec::new();
        let mut scratch = Vec::new();
        assert!(segment_udp(&frame, 14, 100, &mut scratch, |s| {
            assert_eq!(&s[..14], &eth[..]);
            segs.push(s[14..].to_vec())
        }));
        assert_eq!(segs.len(), 3);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let want = if i < 2 { 100 } else { 50 };
            assert_eq!(s.len(), 28 + want);
            assert_eq!(u16::from_be_bytes([s[2], s[3]]) as usize, s.len());
            assert_eq!(u16::from_be_bytes([s[4], s[5]]), 0x1234 + i as u16);
            assert_eq!(u16::from_be_bytes([s[24], s[25]]) as usize, 8 + want);
            assert_eq!(&s[20..24], &[0x9c, 0x40, 0x0d, 0xd8]);
            assert!(checksum_ok_v4(s), "segment {i}");
            joined.extend_from_slice(&s[28..]);
        }
        assert_eq!(joined, payload);
        // Not UDP: left alone.
        let mut tcp = p.clone();
        tcp[9] = 6;
        assert!(!segment_udp(&tcp, 0, 100, &mut scratch, |_| panic!(
            "emitted"
        )));
        assert!(!segment_udp(&p[..20], 0, 100, &mut scratch, |_| panic!(
            "emitted"
        )));
        assert!(!segment_udp(&p, 2000, 100, &mut scratch, |_| panic!(
            "emitted"
        )));
        assert_eq!(network_offset(&frame, 14), 14);
        assert_eq!(network_offset(&p, 0), 0);
    }

    #[test]
    fn a_checksum_left_to_the_device_is_filled_in() {
        let mut p = v4(17, 4191, 4191, 0);
        let ihl = 20;
        let udp_len = u32::from(u16::from_be_bytes([p[ihl + 4], p[ihl + 5]]));
        // What the stack leaves: the pseudo-header's sum, not complemented.
        let mut s = m6t_wire::checksum::accumulate(0, &p[12..20]);
        s = s.wrapping_add(17).wrapping_add(udp_len);
        let partial = !m6t_wire::checksum::finish(s);
        p[ihl + 6..ihl + 8].copy_from_slice(&partial.to_be_bytes());
        let ip = m6t_wire::checksum::finish(m6t_wire::checksum::accumulate(0, &p[..ihl]));
        p[10..12].copy_from_slice(&ip.to_be_bytes());
        fill_checksum(&mut p, ihl, 6);
        assert!(checksum_ok_v4(&p));
        // Out of range: nothing happens, nothing panics.
        let before = p.clone();
        fill_checksum(&mut p, 100, 6);
        assert_eq!(p, before);
    }
}
