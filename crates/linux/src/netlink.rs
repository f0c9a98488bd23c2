//! Netlink: tunnel addresses and routes (through rtnetlink), and IPv4 attachment events
//! (address and route changes, RTMGRP_IPV4_IFADDR / RTMGRP_IPV4_ROUTE), learned from the
//! kernel's notifications, never by polling.

use futures::TryStreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::route::RouteHeader;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};

/// Errors of netlink requests, with the operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("netlink {op}: {source}")]
pub struct NetlinkError {
    op: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn err<E: std::error::Error + Send + Sync + 'static>(
    op: &'static str,
) -> impl FnOnce(E) -> NetlinkError {
    move |e| NetlinkError {
        op,
        source: Box::new(e),
    }
}

/// A netlink request channel. rtnetlink is asynchronous; requests here are few (one per
/// address change), so a private current-thread runtime runs each one to completion.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    /// Opens the request channel.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(err("runtime"))?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(err("connect"))?;
            tokio::spawn(conn);
            Ok::<_, NetlinkError>(handle)
        })?;
        Ok(Netlink { rt, handle })
    }

    /// Adds `addr/prefix_len` to interface `index`.
    pub fn add_address(
        &self,
        index: u32,
        addr: Ipv6Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        self.rt.block_on(async {
            let mut req = self
                .handle
                .address()
                .add(index, IpAddr::V6(addr), prefix_len)
                .replace();
            // No duplicate address detection: the address is unique by construction, and a
            // tentative address is not chosen as source while a handover is under way.
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
            req.execute().await.map_err(err("add address"))
        })
    }

    /// Removes `addr` from interface `index` (no error when it is not there).
    pub fn del_address(&self, index: u32, addr: Ipv6Addr) -> Result<(), NetlinkError> {
        self.rt.block_on(async {
            let mut s = self
                .handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute();
            let mut found = Vec::new();
            while let Some(m) = s.try_next().await.map_err(err("list addresses"))? {
                let hit = m
                    .attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Address(IpAddr::V6(x)) if *x == addr));
                if hit {
                    found.push(m);
                }
            }
            for m in found {
                self.handle
                    .address()
                    .del(m)
                    .execute()
                    .await
                    .map_err(err("delete address"))?;
            }
            Ok(())
        })
    }

    fn route(
        dst: Ipv6Addr,
        len: u8,
        index: u32,
        metric: u32,
    ) -> netlink_packet_route::route::RouteMessage {
        RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(dst, len)
            .output_interface(index)
            .priority(metric)
            .build()
    }

    /// Adds (or replaces) the route `dst/len` through interface `index` with `metric`.
    pub fn replace_route(
        &self,
        dst: Ipv6Addr,
        len: u8,
        index: u32,
        metric: u32,
    ) -> Result<(), NetlinkError> {
        self.rt.block_on(async {
            self.handle
                .route()
                .add(Self::route(dst, len, index, metric))
                .replace()
                .execute()
                .await
                .map_err(err("add route"))
        })
    }

    /// Removes the route `dst/len` through `index` with `metric` (no error when absent).
    pub fn del_route(
        &self,
        dst: Ipv6Addr,
        len: u8,
        index: u32,
        metric: u32,
    ) -> Result<(), NetlinkError> {
        self.rt.block_on(async {
            match self
                .handle
                .route()
                .del(Self::route(dst, len, index, metric))
                .execute()
                .await
            {
                Ok(()) => Ok(()),
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.raw_code() == -libc::ESRCH || e.raw_code() == -libc::ENOENT =>
                {
                    Ok(())
                }
                Err(e) => Err(err("delete route")(e)),
            }
        })
    }
}

/// What a batch of notifications said about IPv4 attachment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AttachmentEvents {
    /// An IPv4 address was added or removed somewhere.
    pub address: bool,
    /// An IPv4 default route (main table) was added, replaced or removed.
    pub default_route: bool,
    /// Another IPv4 route changed (may change the source toward the gateway).
    pub other_route: bool,
}

impl AttachmentEvents {
    /// True when anything changed.
    pub fn any(&self) -> bool {
        self.address || self.default_route || self.other_route
    }
}

/// A netlink socket subscribed to IPv4 address and route notifications.
pub struct Monitor {
    sock: Socket,
    buf: Vec<u8>,
}

const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RT_TABLE_MAIN: u8 = 254;

fn is_default_v4(h: &RouteHeader) -> bool {
    h.address_family == AddressFamily::Inet
        && h.destination_prefix_length == 0
        && h.table == RT_TABLE_MAIN
}

impl Monitor {
    /// Subscribes to the notifications.
    pub fn open() -> io::Result<Monitor> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind(&SocketAddr::new(0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE))?;
        sock.set_non_blocking(true)?;
        Ok(Monitor {
            sock,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Reads every queued notification and sums them up. An overrun (ENOBUFS) counts as
    /// "everything may have changed".
    pub fn drain(&mut self) -> AttachmentEvents {
        let mut ev = AttachmentEvents::default();
        loop {
            let n = match self.sock.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    ev.address = true;
                    ev.default_route = true;
                    continue;
                }
                Err(_) => break,
            };
            let mut off = 0;
            while off < n {
                let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                else {
                    break;
                };
                let len = msg.header.length as usize;
                if let NetlinkPayload::InnerMessage(m) = msg.payload {
                    match m {
                        RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a)
                            if a.header.family == AddressFamily::Inet =>
                        {
                            ev.address = true
                        }
                        RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
                            if is_default_v4(&r.header) {
                                ev.default_route = true;
                            } else if r.header.address_family == AddressFamily::Inet {
                                ev.other_route = true;
                            }
                        }
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
        ev
    }
}

impl AsRawFd for Monitor {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}
