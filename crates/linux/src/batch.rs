//! Batched UDP I/O through quinn-udp: receive with recvmmsg and UDP GRO (the kernel hands
//! over up to 64 coalesced datagrams as one), send with UDP GSO (one `sendmsg` carries a run
//! of equal-size datagrams to one peer as a single super-packet through the whole stack).
//! Buffers are allocated once and reused.

use crate::udp::Udp;
use quinn_udp::{RecvMeta, Transmit};
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4};

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

/// Receives batches of datagrams into preallocated slots and splits GRO super-datagrams.
pub struct RecvBatch {
    slot: usize,
    data: Vec<u8>,
    meta: Vec<RecvMeta>,
    index: Vec<(usize, usize, SocketAddrV4)>,
}

impl RecvBatch {
    /// `n` slots of [`RECV_SLOT`] bytes.
    pub fn new(n: usize) -> Self {
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
        let mut iovs: Vec<IoSliceMut<'_>> = self
            .data
            .chunks_exact_mut(self.slot)
            .map(IoSliceMut::new)
            .collect();
        let n = u.state.recv((&u.sock).into(), &mut iovs, &mut self.meta)?;
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
}

/// Collects datagrams (copied into one arena) and sends runs of equal-size datagrams to the
/// same peer as single GSO sends.
pub struct SendBatch {
    arena: Vec<u8>,
    entries: Vec<(usize, usize, SocketAddrV4)>,
    cap: usize,
    errors: u64,
}

impl SendBatch {
    /// A batch of at most `cap` datagrams.
    pub fn new(cap: usize) -> Self {
        SendBatch {
            arena: Vec::with_capacity(cap * 1500),
            entries: Vec::with_capacity(cap),
            cap,
            errors: 0,
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

    /// Sends that failed (full buffers, unreachable): the datagrams are dropped, as a router
    /// would drop them.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Queues a datagram to `to`.
    pub fn push(&mut self, data: &[u8], to: SocketAddrV4) {
        let off = self.arena.len();
        self.arena.extend_from_slice(data);
        self.entries.push((off, data.len(), to));
    }

    /// Sends everything queued on `u` and empties the batch; returns the number of send
    /// calls made.
    pub fn flush(&mut self, u: &Udp) -> usize {
        let max_segs = u.state.max_gso_segments().max(1);
        let mut calls = 0;
        let mut i = 0;
        while i < self.entries.len() {
            let (off, size, to) = self.entries[i];
            // A run: same peer, same size; the last datagram of a run may be shorter.
            let limit = 65000usize
                .checked_div(size)
                .map_or(1, |n| n.clamp(1, max_segs));
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
            let t = Transmit {
                destination: SocketAddr::V4(to),
                ecn: None,
                contents: &self.arena[off..end],
                segment_size: (j - i > 1).then_some(size),
                src_ip: None,
            };
            if u.state.try_send((&u.sock).into(), &t).is_err() {
                self.errors += 1;
            }
            calls += 1;
            i = j;
        }
        self.arena.clear();
        self.entries.clear();
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
}
