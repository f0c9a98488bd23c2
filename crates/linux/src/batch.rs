//! Batched UDP I/O: recvmmsg(2) and sendmmsg(2), so that the data plane makes one system
//! call per batch of datagrams instead of one per datagram. Buffers are allocated once.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

fn to_v4(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    )
}

fn from_v4(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { MaybeUninit::zeroed().assume_init() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = a.port().to_be();
    sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    sa
}

/// Receives up to `n` datagrams per call into preallocated slots.
pub struct RecvBatch {
    slot: usize,
    data: Vec<u8>,
    addrs: Vec<libc::sockaddr_in>,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    count: usize,
}

impl RecvBatch {
    /// `n` slots of `slot` bytes each.
    pub fn new(n: usize, slot: usize) -> Self {
        RecvBatch {
            slot,
            data: vec![0; n * slot],
            // SAFETY: plain old data.
            addrs: vec![unsafe { MaybeUninit::zeroed().assume_init() }; n],
            lens: vec![0; n],
            truncated: vec![false; n],
            count: 0,
        }
    }

    /// Receives what is queued (non-blocking socket): returns how many datagrams arrived;
    /// `WouldBlock` when none.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.lens.len();
        let mut iovs: Vec<libc::iovec> = self
            .data
            .chunks_exact_mut(self.slot)
            .map(|c| libc::iovec {
                iov_base: c.as_mut_ptr() as *mut libc::c_void,
                iov_len: c.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; every pointer set below stays valid for the call.
        let mut hdrs: Vec<libc::mmsghdr> = (0..n)
            .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
            .collect();
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = &mut self.addrs[i] as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: hdrs/iovs/addrs/data outlive the call and are sized as declared.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = r as usize;
        for i in 0..self.count {
            self.lens[i] = (hdrs[i].msg_len as usize).min(self.slot);
            self.truncated[i] = hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        }
        Ok(self.count)
    }

    /// Datagram `i` of the last batch: bytes, sender, and whether it was cut short.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddrV4, bool) {
        let off = i * self.slot;
        (
            &self.data[off..off + self.lens[i]],
            to_v4(&self.addrs[i]),
            self.truncated[i],
        )
    }
}

/// Collects datagrams (copied into one arena) and sends them with one sendmmsg call.
pub struct SendBatch {
    arena: Vec<u8>,
    entries: Vec<(usize, usize, libc::sockaddr_in)>,
    cap: usize,
}

impl SendBatch {
    /// A batch of at most `cap` datagrams.
    pub fn new(cap: usize) -> Self {
        SendBatch {
            arena: Vec::with_capacity(cap * 1500),
            entries: Vec::with_capacity(cap),
            cap,
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

    /// Queues a datagram to `to`.
    pub fn push(&mut self, data: &[u8], to: SocketAddrV4) {
        let off = self.arena.len();
        self.arena.extend_from_slice(data);
        self.entries.push((off, data.len(), from_v4(to)));
    }

    /// Sends everything queued on `fd` and empties the batch. Datagrams the kernel
    /// refuses (full buffer, unreachable) are dropped, like a router would; returns how
    /// many were sent.
    pub fn flush(&mut self, fd: RawFd) -> usize {
        let mut sent = 0;
        let mut iovs: Vec<libc::iovec> = self
            .entries
            .iter()
            .map(|(off, len, _)| libc::iovec {
                iov_base: self.arena[*off..].as_ptr() as *mut libc::c_void,
                iov_len: *len,
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; pointers below stay valid for the calls.
        let mut hdrs: Vec<libc::mmsghdr> = (0..self.entries.len())
            .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
            .collect();
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = &mut self.entries[i].2 as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut start = 0;
        while start < hdrs.len() {
            // SAFETY: the slice from `start` is within hdrs.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs[start..].as_mut_ptr(),
                    (hdrs.len() - start) as libc::c_uint,
                    0,
                )
            };
            if r <= 0 {
                // Skip the datagram that failed and go on with the rest.
                start += 1;
                continue;
            }
            sent += r as usize;
            start += r as usize;
        }
        self.arena.clear();
        self.entries.clear();
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_on_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = match rx.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let mut sb = SendBatch::new(8);
        for i in 0..8u8 {
            sb.push(&vec![i; 10 + usize::from(i)], to);
        }
        assert!(sb.is_full());
        assert_eq!(sb.flush(tx.as_raw_fd()), 8);
        assert!(sb.is_empty());
        let mut rb = RecvBatch::new(16, 16);
        let mut got = Vec::new();
        for _ in 0..200 {
            match rb.recv(rx.as_raw_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        let (d, from, trunc) = rb.get(i);
                        assert_eq!(from.port(), tx.local_addr().unwrap().port());
                        got.push((d.to_vec(), trunc));
                    }
                    if got.len() == 8 {
                        break;
                    }
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
            }
        }
        assert_eq!(got.len(), 8);
        for (i, (d, trunc)) in got.iter().enumerate() {
            let full = 10 + i;
            assert_eq!(*trunc, full > 16, "slot {i}");
            assert_eq!(d.len(), full.min(16));
            assert!(d.iter().all(|b| *b == i as u8));
        }
    }
}
