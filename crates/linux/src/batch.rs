//! Batched UDP I/O through quinn-udp: receive with recvmmsg and UDP GRO (the kernel hands
//! over up to 64 coalesced datagrams as one), send with UDP GSO (one `sendmsg` carries a run
//! of equal-size datagrams to one peer as a single super-packet through the whole stack).
//! Buffers are allocated once and reused.

use crate::udp::Udp;
use quinn_udp::{RecvMeta, Transmit};
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

/// Receive slot: room for the largest GRO super-datagram (64 segments, 64 KiB total).
pub const RECV_SLOT: usize = 1 << 17;

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        // An IPv4 socket only ever reports IPv4 peers; map anything else to 0.0.0.0:0,
        // which no state matches.
        SocketAddr::V6(a) => a
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, a.port()))
            .unwrap_or(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0)),
    }
}

/// Most datagrams one [`RecvBatch::recv`] call asks for.
pub const MAX_SLOTS: usize = 64;

/// Receives batches of datagrams into preallocated slots and splits GRO super-datagrams.
pub struct RecvBatch {
    slot: usize,
    data: Vec<u8>,
    meta: Vec<RecvMeta>,
    index: Vec<(usize, usize, SocketAddrV4)>,
}

impl RecvBatch {
    /// `n` slots of [`RECV_SLOT`] bytes (at most [`MAX_SLOTS`]).
    pub fn new(n: usize) -> Self {
        let n = n.clamp(1, MAX_SLOTS);
        RecvBatch {
            slot: RECV_SLOT,
            data: vec![0; n * RECV_SLOT],
            meta: vec![RecvMeta::default(); n],
            index: Vec::with_capacity(n * 64),
        }
    }

    /// Receives what is queued: returns how many datagrams are now available through
    /// [`Self::get`]; `WouldBlock` when none.
    pub fn recv(&mut self, u: &Udp) -> io::Result<usize> {
        // The I/O vectors live on the stack: no allocation per call.
        let mut chunks = self.data.chunks_exact_mut(self.slot);
        let mut iovs: [IoSliceMut<'_>; MAX_SLOTS] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or(&mut [])));
        let k = self.meta.len().min(MAX_SLOTS);
        let n = u
            .state
            .recv((&u.sock).into(), &mut iovs[..k], &mut self.meta[..k])?;
        self.index.clear();
        for (i, m) in self.meta.iter().take(n).enumerate() {
            let from = v4(m.addr);
            let len = m.len.min(self.slot);
            let stride = if m.stride == 0 { len } else { m.stride };
            let mut off = 0;
            while off < len {
                let l = stride.min(len - off);
                self.index.push((i * self.slot + off, l, from));
                off += l;
            }
            if len == 0 {
                self.index.push((i * self.slot, 0, from));
            }
        }
        Ok(self.index.len())
    }

    /// Datagram `i` of the last batch and its sender.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddrV4) {
        let (off, len, from) = self.index[i];
        (&self.data[off..off + len], from)
    }

    /// Datagram `i` of the last batch, writable (opened in place), and its sender.
    pub fn get_mut(&mut self, i: usize) -> (&mut [u8], SocketAddrV4) {
        let (off, len, from) = self.index[i];
        (&mut self.data[off..off + len], from)
    }
}

/// Collects datagrams (copied into one arena) and sends runs of equal-size datagrams to the
/// same peer as single GSO sends.
pub struct SendBatch {
    arena: Vec<u8>,
    entries: Vec<(usize, usize, SocketAddrV4)>,
    cap: usize,
    errors: u64,
    // sendmmsg scratch, allocated once.
    singles: Vec<(usize, usize, SocketAddrV4)>,
    iov: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    msgs: Vec<libc::mmsghdr>,
    /// Every datagram its own message of one sendmmsg, never a GSO run.
    no_gso: bool,
}

impl SendBatch {
    /// A batch of at most `cap` datagrams, equal-size runs sent with GSO.
    pub fn new(cap: usize) -> Self {
        Self::with_gso(cap, true)
    }

    /// A batch of at most `cap` datagrams sent as one sendmmsg of separate datagrams,
    /// without GSO: each reaches the peer as a packet of its own, as from a sender that
    /// does not segment late (the bench's flooder).
    pub fn without_gso(cap: usize) -> Self {
        Self::with_gso(cap, false)
    }

    fn with_gso(cap: usize, gso: bool) -> Self {
        SendBatch {
            no_gso: !gso,
            arena: Vec::with_capacity(cap * 1500),
            entries: Vec::with_capacity(cap),
            cap,
            errors: 0,
            singles: Vec::with_capacity(cap),
            iov: Vec::with_capacity(cap),
            names: Vec::with_capacity(cap),
            msgs: Vec::with_capacity(cap),
        }
    }

    /// True when no more datagram fits.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.cap
    }

    /// Number of datagrams queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.arena.clear();
        self.entries.clear();
    }

    /// Sends that failed since the last call (full buffers, unreachable): the datagrams
    /// are dropped, as a router would drop them; the driver counts them.
    pub fn take_errors(&mut self) -> u64 {
        std::mem::take(&mut self.errors)
    }

    /// Queues a datagram to `to`.
    pub fn push(&mut self, data: &[u8], to: SocketAddrV4) {
        self.push_parts(&[data], to);
    }

    /// Queues a datagram made of `parts` (a header and a packet) to `to`.
    pub fn push_parts(&mut self, parts: &[&[u8]], to: SocketAddrV4) {
        let off = self.arena.len();
        for p in parts {
            self.arena.extend_from_slice(p);
        }
        self.entries.push((off, self.arena.len() - off, to));
    }

    /// Sends everything queued on `u` and empties the batch; returns the number of send
    /// calls made. Runs of equal-size datagrams to one peer go as single GSO sends; single
    /// datagrams to different peers (keep-alive echoes, ACKs to many mobile nodes) are
    /// gathered into one sendmmsg call.
    pub fn flush(&mut self, u: &Udp) -> usize {
        let max_segs = u.state.max_gso_segments().max(1);
        let mut calls = 0;
        let mut singles: Vec<(usize, usize, SocketAddrV4)> = std::mem::take(&mut self.singles);
        singles.clear();
        let mut i = 0;
        while i < self.entries.len() {
            let (off, size, to) = self.entries[i];
            // A run: same peer, same size; the last datagram of a run may be shorter.
            let limit = if self.no_gso {
                1
            } else {
                65000usize
                    .checked_div(size)
                    .map_or(1, |n| n.clamp(1, max_segs))
            };
            let mut j = i + 1;
            let mut end = off + size;
            while j < self.entries.len() && j - i < limit {
                let (o, l, t) = self.entries[j];
                if t != to || l > size || o != end {
                    break;
                }
                end += l;
                j += 1;
                if l < size {
                    break;
                }
            }
            if j - i == 1 {
                singles.push((off, size, to));
            } else {
                calls += self.send_singles(u, &mut singles);
                let t = Transmit {
                    destination: SocketAddr::V4(to),
                    ecn: None,
                    contents: &self.arena[off..end],
                    segment_size: Some(size),
                    src_ip: None,
                };
                if u.state.try_send((&u.sock).into(), &t).is_err() {
                    self.errors += 1;
                }
                calls += 1;
            }
            i = j;
        }
        calls += self.send_singles(u, &mut singles);
        self.singles = singles;
        self.arena.clear();
        self.entries.clear();
        calls
    }

    /// Sends the gathered single datagrams with sendmmsg(2); returns the calls made.
    fn send_singles(&mut self, u: &Udp, singles: &mut Vec<(usize, usize, SocketAddrV4)>) -> usize {
        match singles.len() {
            0 => return 0,
            1 => {
                let (off, size, to) = singles[0];
                singles.clear();
                let t = Transmit {
                    destination: SocketAddr::V4(to),
                    ecn: None,
                    contents: &self.arena[off..off + size],
                    segment_size: None,
                    src_ip: None,
                };
                if u.state.try_send((&u.sock).into(), &t).is_err() {
                    self.errors += 1;
                }
                return 1;
            }
            _ => {}
        }
        let n = singles.len();
        self.iov.clear();
        self.names.clear();
        for &(off, size, to) in singles.iter() {
            self.iov.push(libc::iovec {
                iov_base: self.arena[off..].as_ptr() as *mut libc::c_void,
                iov_len: size,
            });
            self.names.push(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: to.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*to.ip()).to_be(),
                },
                sin_zero: [0; 8],
            });
        }
        self.msgs.clear();
        for k in 0..n {
            // SAFETY: mmsghdr is plain data; zeroed is a valid value.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = &mut self.names[k] as *mut libc::sockaddr_in as *mut libc::c_void;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &mut self.iov[k] as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            self.msgs.push(m);
        }
        let mut calls = 0;
        let mut sent = 0;
        while sent < n {
            // SAFETY: msgs[sent..n] point into names, iov and arena, all alive and unmoved
            // for the duration of the call.
            let r = unsafe {
                libc::sendmmsg(
                    u.sock.as_raw_fd(),
                    self.msgs[sent..].as_mut_ptr(),
                    (n - sent) as libc::c_uint,
                    0,
                )
            };
            calls += 1;
            if r <= 0 {
                // The first datagram of the rest failed (full buffer, unreachable): drop
                // it, as a router would, and go on with the others.
                self.errors += 1;
                sent += 1;
            } else {
                sent += r as usize;
            }
        }
        singles.clear();
        calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn gso_runs_arrive_as_separate_datagrams() {
        let rx = crate::udp::listen(Ipv4Addr::LOCALHOST, 0).unwrap();
        let tx = crate::udp::listen(Ipv4Addr::LOCALHOST, 0).unwrap();
        let to = rx.local_v4().unwrap();
        let mut sb = SendBatch::new(64);
        // A run of 10 equal datagrams and a short last one, then odd sizes.
        for i in 0..10u8 {
            sb.push(&[i; 1000], to);
        }
        sb.push(&[10; 300], to);
        sb.push(&[11; 1200], to);
        sb.push(&[12; 5], to);
        let calls = sb.flush(&tx);
        assert!(
            calls <= 3 || tx.state.max_gso_segments() == 1,
            "{calls} calls"
        );
        let mut rb = RecvBatch::new(8);
        let mut got: Vec<Vec<u8>> = Vec::new();
        for _ in 0..500 {
            match rb.recv(&rx) {
                Ok(n) => {
                    for i in 0..n {
                        let (d, from) = rb.get(i);
                        assert_eq!(from, tx.local_v4().unwrap());
                        got.push(d.to_vec());
                    }
                    if got.len() >= 13 {
                        break;
                    }
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
            }
        }
        assert_eq!(got.len(), 13);
        for (i, d) in got.iter().enumerate() {
            let want = match i {
                0..=9 => 1000,
                10 => 300,
                11 => 1200,
                _ => 5,
            };
            assert_eq!(d.len(), want, "datagram {i}");
            assert!(d.iter().all(|b| *b == i as u8));
        }
        assert!(crate::udp::df_cleared(&tx.sock).unwrap());
    }

    #[test]
    fn singles_to_different_peers_go_in_one_sendmmsg() {
        let rxs: Vec<Udp> = (0..3)
            .map(|_| crate::udp::listen(Ipv4Addr::LOCALHOST, 0).unwrap())
            .collect();
        let tx = crate::udp::listen(Ipv4Addr::LOCALHOST, 0).unwrap();
        let mut sb = SendBatch::new(64);
        for (i, r) in rxs.iter().enumerate() {
            sb.push(&[i as u8; 40], r.local_v4().unwrap());
        }
        assert_eq!(sb.flush(&tx), 1);
        for (i, r) in rxs.iter().enumerate() {
            let mut rb = RecvBatch::new(4);
            let mut got = None;
            for _ in 0..500 {
                if let Ok(n) = rb.recv(r) {
                    if n > 0 {
                        got = Some(rb.get(0).0.to_vec());
                        break;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            assert_eq!(got, Some(vec![i as u8; 40]));
        }
    }
}
