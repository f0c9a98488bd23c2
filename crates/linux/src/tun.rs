//! TUN devices (through tun-rs): layer-3, no packet-information header, non-blocking.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use tun_rs::{DeviceBuilder, SyncDevice};

/// An open TUN device carrying raw IPv6 packets.
pub struct Tun {
    dev: SyncDevice,
    name: String,
    index: u32,
}

impl Tun {
    /// Creates (or attaches to) the TUN device `name` with `mtu`, brought up, no address.
    pub fn open(name: &str, mtu: u16) -> io::Result<Tun> {
        let dev = DeviceBuilder::new().name(name).mtu(mtu).build_sync()?;
        dev.set_nonblocking(true)?;
        let name = dev.name()?;
        let index = dev.if_index()?;
        Ok(Tun { dev, name, index })
    }

    /// Interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Interface index, for netlink.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Reads one packet; `WouldBlock` when none is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.dev.recv(buf)
    }

    /// Writes one packet. A full queue drops it (the kernel would too): counted by caller.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.dev.send(buf)
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }
}
