//! TUN devices (through tun-rs): layer-3, no packet-information header, non-blocking.
//!
//! With offload on (IFF_VNET_HDR, TSO4/6), the kernel hands the tunnel whole 64 KiB TCP
//! super-packets, which [`TunRx`] splits into MTU-sized IPv6 packets (one read for dozens of
//! packets), and [`TunTx`] coalesces consecutive TCP segments back into super-packets (one
//! write for dozens), as wireguard-go does. Without offload both move one packet per call.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use tun_rs::{DeviceBuilder, GROTable, SyncDevice, VIRTIO_NET_HDR_LEN};

/// Packets per read or write batch.
pub const BATCH: usize = 128;
/// Transmit queue of the TUN (packets waiting for the daemon to read them). The kernel
/// default of 500 drops bursts from the home side while the daemon is busy with a batch
/// from the UDP side; measured with the bench's load generator.
const TX_QUEUE_LEN: u32 = 4096;
/// Room for the largest packet a segment buffer may hold.
const SLOT: usize = 65536;

/// An open TUN device carrying raw IPv6 packets.
pub struct Tun {
    dev: Arc<SyncDevice>,
    name: String,
    index: u32,
    offload: bool,
}

impl Tun {
    /// Creates (or attaches to) the TUN device `name` with `mtu`, brought up, no address;
    /// `offload` asks for TSO/checksum offload with the virtio-net header.
    pub fn open(name: &str, mtu: u16, offload: bool) -> io::Result<Tun> {
        let mut v = Self::open_queues(name, mtu, offload, 1)?;
        v.pop().ok_or_else(|| io::Error::other("no TUN queue"))
    }

    /// Creates the TUN device with `queues` queues (IFF_MULTI_QUEUE when more than one),
    /// one [`Tun`] per queue, for one worker thread each. The kernel spreads the packets it
    /// sends into the device over the queues by flow.
    pub fn open_queues(name: &str, mtu: u16, offload: bool, queues: usize) -> io::Result<Vec<Tun>> {
        let dev = DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .offload(offload)
            .multi_queue(queues > 1)
            .tx_queue_len(TX_QUEUE_LEN)
            .build_sync()?;
        dev.set_nonblocking(true)?;
        let name = dev.name()?;
        let index = dev.if_index()?;
        let offload = offload && dev.tcp_gso();
        let mut out = Vec::with_capacity(queues);
        for _ in 1..queues {
            let q = dev.try_clone()?;
            q.set_nonblocking(true)?;
            out.push(q);
        }
        out.insert(0, dev);
        Ok(out
            .into_iter()
            .map(|d| Tun {
                dev: Arc::new(d),
                name: name.clone(),
                index,
                offload,
            })
            .collect())
    }

    /// Interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Interface index, for netlink.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Whether TSO/GRO offload is in force.
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// The reading half.
    pub fn reader(&self) -> TunRx {
        TunRx {
            dev: Arc::clone(&self.dev),
            offload: self.offload,
            orig: vec![0; VIRTIO_NET_HDR_LEN + SLOT],
            bufs: vec![vec![0; SLOT]; if self.offload { BATCH } else { 1 }],
            sizes: vec![0; if self.offload { BATCH } else { 1 }],
        }
    }

    /// The writing half.
    pub fn writer(&self) -> TunTx {
        TunTx {
            dev: Arc::clone(&self.dev),
            offload: self.offload,
            gro: GROTable::default(),
            // GRO appends the segments that follow into the buffer of a flow's first one,
            // and only within its capacity: without room for a whole super-packet, nothing
            // would ever be coalesced.
            bufs: (0..BATCH)
                .map(|_| {
                    Vec::with_capacity(if self.offload {
                        2 * VIRTIO_NET_HDR_LEN + SLOT
                    } else {
                        2048
                    })
                })
                .collect(),
            n: 0,
            errors: 0,
        }
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }
}

/// Reads packets from a TUN, one super-packet (split) or one packet per call.
pub struct TunRx {
    dev: Arc<SyncDevice>,
    offload: bool,
    orig: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
}

impl TunRx {
    /// Reads what one read(2) returns: the number of packets now available through
    /// [`Self::packet`]; `WouldBlock` when nothing is queued.
    pub fn recv(&mut self) -> io::Result<usize> {
        if self.offload {
            self.dev
                .recv_multiple(&mut self.orig, &mut self.bufs, &mut self.sizes, 0)
        } else {
            let n = self.dev.recv(&mut self.bufs[0])?;
            self.sizes[0] = n;
            Ok(1)
        }
    }

    /// Packet `i` of the last read.
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.sizes[i]]
    }

    /// Reads at most `reads` times (each read one packet or one split super-packet),
    /// handing every packet to `each`, and stops early when nothing is queued: a busy TUN
    /// cannot starve the loop's other sources.
    pub fn drain(&mut self, reads: usize, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        for _ in 0..reads {
            let n = match self.recv() {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            for i in 0..n {
                each(&self.bufs[i][..self.sizes[i]]);
            }
        }
        Ok(())
    }
}

/// Writes packets to a TUN in batches, coalescing TCP segments when offload is on.
pub struct TunTx {
    dev: Arc<SyncDevice>,
    offload: bool,
    gro: GROTable,
    bufs: Vec<Vec<u8>>,
    n: usize,
    errors: u64,
}

impl TunTx {
    /// Queues a packet; the batch is written when full or on [`Self::flush`].
    pub fn push(&mut self, p: &[u8]) {
        if self.n == self.bufs.len() {
            self.flush();
        }
        let b = &mut self.bufs[self.n];
        b.clear();
        if self.offload {
            b.resize(VIRTIO_NET_HDR_LEN, 0);
        }
        b.extend_from_slice(p);
        self.n += 1;
    }

    /// Writes what is queued. Packets the kernel refuses are dropped and counted.
    pub fn flush(&mut self) {
        if self.n == 0 {
            return;
        }
        if self.offload {
            if self
                .dev
                .send_multiple(&mut self.gro, &mut self.bufs[..self.n], VIRTIO_NET_HDR_LEN)
                .is_err()
            {
                self.errors += 1;
            }
        } else {
            for b in &self.bufs[..self.n] {
                if self.dev.send(b).is_err() {
                    self.errors += 1;
                }
            }
        }
        self.n = 0;
    }

    /// Write errors since the last call (the driver adds them to its failure counters).
    pub fn take_errors(&mut self) -> u64 {
        std::mem::take(&mut self.errors)
    }
}
