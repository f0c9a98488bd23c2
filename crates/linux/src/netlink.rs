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

/// What a policy rule selects on: the source or the destination prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSelector {
    /// "from address/len".
    From(IpAddr, u8),
    /// "to address/len".
    To(IpAddr, u8),
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

    /// Adds (or replaces) the route `dst/len` through interface `index` with `metric`.
    pub fn replace_route(
        &self,
        dst: Ipv6Addr,
        len: u8,
        index: u32,
        metric: u32,
    ) -> Result<(), NetlinkError> {
        self.replace_route_ip(IpAddr::V6(dst), len, index, metric, MAIN_TABLE)
    }

    /// Removes the route `dst/len` through `index` with `metric` (no error when absent).
    pub fn del_route(
        &self,
        dst: Ipv6Addr,
        len: u8,
        index: u32,
        metric: u32,
    ) -> Result<(), NetlinkError> {
        self.del_route_ip(IpAddr::V6(dst), len, index, metric, MAIN_TABLE)
    }

    /// Sends a request the rtnetlink crate has no builder for, with `flags`, and waits
    /// for the kernel's acknowledgement.
    fn raw_request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &'static str,
    ) -> Result<(), NetlinkError> {
        self.rt.block_on(async {
            let mut req = NetlinkMessage::from(msg);
            req.header.flags = netlink_packet_core::NLM_F_REQUEST
                | netlink_packet_core::NLM_F_ACK
                | netlink_packet_core::NLM_F_CREATE
                | flags;
            let mut h = self.handle.clone();
            let mut resp = h.request(req).map_err(err(op))?;
            while let Some(m) = futures::StreamExt::next(&mut resp).await {
                if let NetlinkPayload::Error(e) = m.payload {
                    if e.code.is_some() {
                        return Err(err(op)(io::Error::from_raw_os_error(-e.raw_code())));
                    }
                }
            }
            Ok(())
        })
    }
}

/// The main routing table (`ip route` without `table`).
pub const MAIN_TABLE: u32 = 254;

/// An address as the kernel lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddress {
    /// Interface index.
    pub index: u32,
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Usable as a source: not tentative, not deprecated, not failed DAD.
    pub usable: bool,
}

/// An interface as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfLink {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Administratively up and with a carrier (IFF_UP and IFF_RUNNING).
    pub up: bool,
    /// Its MTU (0 if the kernel did not say).
    pub mtu: u32,
}

fn route_ip(
    dst: IpAddr,
    len: u8,
    index: u32,
    metric: u32,
    table: u32,
) -> netlink_packet_route::route::RouteMessage {
    match dst {
        IpAddr::V6(d) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(d, len)
            .output_interface(index)
            .priority(metric)
            .table_id(table)
            .build(),
        IpAddr::V4(d) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(d, len)
            .output_interface(index)
            .priority(metric)
            .table_id(table)
            .build(),
    }
}

fn absent(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.raw_code() == -libc::ESRCH || m.raw_code() == -libc::ENOENT || m.raw_code() == -libc::EADDRNOTAVAIL)
}

impl Netlink {
    /// Adds `addr/prefix_len` (IPv4 or IPv6, IPv6 without DAD) to interface `index`.
    pub fn add_ip(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<(), NetlinkError> {
        match addr {
            IpAddr::V6(a) => self.add_address(index, a, prefix_len),
            IpAddr::V4(_) => self.rt.block_on(async {
                self.handle
                    .address()
                    .add(index, addr, prefix_len)
                    .replace()
                    .execute()
                    .await
                    .map_err(err("add address"))
            }),
        }
    }

    /// Removes `addr` (IPv4 or IPv6) from interface `index` (no error when absent).
    pub fn del_ip(&self, index: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        self.rt.block_on(async {
            let mut s = self
                .handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute();
            let mut found = Vec::new();
            while let Some(m) = s.try_next().await.map_err(err("list addresses"))? {
                if m.attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Address(x) if *x == addr))
                {
                    found.push(m);
                }
            }
            for m in found {
                match self.handle.address().del(m).execute().await {
                    Ok(()) => {}
                    Err(e) if absent(&e) => {}
                    Err(e) => return Err(err("delete address")(e)),
                }
            }
            Ok(())
        })
    }

    /// Every address of every interface.
    pub fn addresses(&self) -> Result<Vec<IfAddress>, NetlinkError> {
        self.rt.block_on(async {
            let mut s = self.handle.address().get().execute();
            let mut out = Vec::new();
            while let Some(m) = s.try_next().await.map_err(err("list addresses"))? {
                let mut flags = AddressFlags::from_bits_retain(u32::from(m.header.flags.bits()));
                let mut addr = None;
                for a in &m.attributes {
                    match a {
                        // IFA_ADDRESS is the peer on point-to-point links; IFA_LOCAL, when
                        // present, is the local address.
                        AddressAttribute::Local(x) => addr = Some(*x),
                        AddressAttribute::Address(x) if addr.is_none() => addr = Some(*x),
                        AddressAttribute::Flags(f) => flags = *f,
                        _ => {}
                    }
                }
                if let Some(addr) = addr {
                    let usable = !flags.intersects(
                        AddressFlags::Tentative
                            | AddressFlags::Deprecated
                            | AddressFlags::Dadfailed,
                    );
                    out.push(IfAddress {
                        index: m.header.index,
                        addr,
                        prefix_len: m.header.prefix_len,
                        usable,
                    });
                }
            }
            Ok(out)
        })
    }

    /// Every interface.
    pub fn links(&self) -> Result<Vec<IfLink>, NetlinkError> {
        use netlink_packet_route::link::{LinkAttribute, LinkFlags};
        self.rt.block_on(async {
            let mut s = self.handle.link().get().execute();
            let mut out = Vec::new();
            while let Some(m) = s.try_next().await.map_err(err("list links"))? {
                let name = m.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                });
                let mtu = m.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Mtu(n) => Some(*n),
                    _ => None,
                });
                let f = m.header.flags;
                out.push(IfLink {
                    index: m.header.index,
                    name: name.unwrap_or_default(),
                    up: f.contains(LinkFlags::Up) && f.contains(LinkFlags::Running),
                    mtu: mtu.unwrap_or(0),
                });
            }
            Ok(out)
        })
    }

    /// Sets interface `index`'s MTU.
    pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let msg = rtnetlink::LinkUnspec::new_with_index(index)
            .mtu(mtu)
            .build();
        self.rt.block_on(async {
            self.handle
                .link()
                .set(msg)
                .execute()
                .await
                .map_err(err("set MTU"))
        })
    }

    /// Adds (or replaces) the route `dst/len` through interface `index`, in `table`.
    pub fn replace_route_ip(
        &self,
        dst: IpAddr,
        len: u8,
        index: u32,
        metric: u32,
        table: u32,
    ) -> Result<(), NetlinkError> {
        self.rt.block_on(async {
            self.handle
                .route()
                .add(route_ip(dst, len, index, metric, table))
                .replace()
                .execute()
                .await
                .map_err(err("add route"))
        })
    }

    /// Removes the route `dst/len` through `index` in `table` (no error when absent).
    pub fn del_route_ip(
        &self,
        dst: IpAddr,
        len: u8,
        index: u32,
        metric: u32,
        table: u32,
    ) -> Result<(), NetlinkError> {
        self.rt.block_on(async {
            match self
                .handle
                .route()
                .del(route_ip(dst, len, index, metric, table))
                .execute()
                .await
            {
                Ok(()) => Ok(()),
                Err(e) if absent(&e) => Ok(()),
                Err(e) => Err(err("delete route")(e)),
            }
        })
    }

    fn rule_msg(
        &self,
        sel: RuleSelector,
        table: u32,
        priority: u32,
    ) -> netlink_packet_route::rule::RuleMessage {
        let (a, len, from) = match sel {
            RuleSelector::From(a, l) => (a, l, true),
            RuleSelector::To(a, l) => (a, l, false),
        };
        match a {
            IpAddr::V6(a) => {
                let r = self.handle.rule().add().v6();
                let mut r = if from {
                    r.source_prefix(a, len)
                } else {
                    r.destination_prefix(a, len)
                }
                .table_id(table)
                .priority(priority)
                .action(netlink_packet_route::rule::RuleAction::ToTable);
                r.message_mut().clone()
            }
            IpAddr::V4(a) => {
                let r = self.handle.rule().add().v4();
                let mut r = if from {
                    r.source_prefix(a, len)
                } else {
                    r.destination_prefix(a, len)
                }
                .table_id(table)
                .priority(priority)
                .action(netlink_packet_route::rule::RuleAction::ToTable);
                r.message_mut().clone()
            }
        }
    }

    /// Adds the policy rule "from `src` lookup `table`" at `priority` (replacing an equal
    /// one left by an earlier run).
    pub fn add_source_rule(
        &self,
        src: IpAddr,
        table: u32,
        priority: u32,
    ) -> Result<(), NetlinkError> {
        let len = if src.is_ipv6() { 128 } else { 32 };
        self.add_rule(RuleSelector::From(src, len), table, priority)
    }

    /// Removes the rule [`Self::add_source_rule`] added (no error when absent).
    pub fn del_source_rule(
        &self,
        src: IpAddr,
        table: u32,
        priority: u32,
    ) -> Result<(), NetlinkError> {
        let len = if src.is_ipv6() { 128 } else { 32 };
        self.del_rule(RuleSelector::From(src, len), table, priority)
    }

    /// Adds the policy rule "from|to `prefix` lookup `table`" at `priority` (replacing an
    /// equal one left by an earlier run).
    pub fn add_rule(
        &self,
        sel: RuleSelector,
        table: u32,
        priority: u32,
    ) -> Result<(), NetlinkError> {
        let _ = self.del_rule(sel, table, priority);
        let msg = self.rule_msg(sel, table, priority);
        self.raw_request(
            RouteNetlinkMessage::NewRule(msg),
            netlink_packet_core::NLM_F_EXCL,
            "add rule",
        )
    }

    /// Removes the rule [`Self::add_rule`] added (no error when absent).
    pub fn del_rule(
        &self,
        sel: RuleSelector,
        table: u32,
        priority: u32,
    ) -> Result<(), NetlinkError> {
        let msg = self.rule_msg(sel, table, priority);
        self.rt.block_on(async {
            match self.handle.rule().del(msg).execute().await {
                Ok(()) => Ok(()),
                Err(e) if absent(&e) => Ok(()),
                Err(e) => Err(err("delete rule")(e)),
            }
        })
    }

    fn proxy_msg(index: u32, addr: IpAddr) -> netlink_packet_route::neighbour::NeighbourMessage {
        use netlink_packet_route::neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
        };
        let mut m = NeighbourMessage::default();
        m.header.family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        m.header.ifindex = index;
        m.header.flags = NeighbourFlags::Proxy;
        m.attributes
            .push(NeighbourAttribute::Destination(match addr {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        m
    }

    /// Answers neighbour discovery (IPv6) or ARP (IPv4) for `addr` on interface `index`
    /// (a proxy entry, "ip neigh add proxy").
    pub fn add_proxy(&self, index: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        let msg = Self::proxy_msg(index, addr);
        self.raw_request(
            RouteNetlinkMessage::NewNeighbour(msg),
            netlink_packet_core::NLM_F_REPLACE,
            "add proxy",
        )
    }

    /// Removes a proxy entry (no error when absent).
    pub fn del_proxy(&self, index: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        let msg = Self::proxy_msg(index, addr);
        self.rt.block_on(async {
            match self.handle.neighbours().del(msg).execute().await {
                Ok(()) => Ok(()),
                Err(e) if absent(&e) => Ok(()),
                Err(e) => Err(err("delete proxy")(e)),
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
    /// Another route changed (may change the source toward the gateway), or a link, or an
    /// IPv6 address (with [`Monitor::open_dual`]).
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
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

fn is_default_v4(h: &RouteHeader) -> bool {
    h.address_family == AddressFamily::Inet
        && h.destination_prefix_length == 0
        && h.table == MAIN_TABLE as u8
}

impl Monitor {
    /// Subscribes to the IPv4 notifications.
    pub fn open() -> io::Result<Monitor> {
        Self::with_groups(RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE)
    }

    /// Subscribes to IPv4 and IPv6 address and route notifications and to link changes
    /// (the mobile node's movement detection).
    pub fn open_dual() -> io::Result<Monitor> {
        Self::with_groups(
            RTMGRP_LINK
                | RTMGRP_IPV4_IFADDR
                | RTMGRP_IPV4_ROUTE
                | RTMGRP_IPV6_IFADDR
                | RTMGRP_IPV6_ROUTE,
        )
    }

    fn with_groups(groups: u32) -> io::Result<Monitor> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind(&SocketAddr::new(0, groups))?;
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
                        RouteNetlinkMessage::NewAddress(_)
                        | RouteNetlinkMessage::DelAddress(_)
                        | RouteNetlinkMessage::NewLink(_)
                        | RouteNetlinkMessage::DelLink(_) => ev.other_route = true,
                        RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
                            // IPv6 routes reach only a dual monitor (the mobile node's): a
                            // new network's default route makes its address usable.
                            if is_default_v4(&r.header) {
                                ev.default_route = true;
                            } else {
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
