//! What the home agent and the mobile node daemons share: moving packets between the
//! tunnel-interface sockets, the node and the TUN. Both nodes take the same inputs (UDP
//! payloads, IP-in-IP inner packets, captured signalling, packets from the TUN), so one
//! pump serves both.

use super::BURST;
use m6t_linux::failures::{Failure, Failures};
use m6t_linux::tif::{TifPacket, TifSockets, TifSource};
use m6t_linux::tun::{TunRx, TunTx};
use m6t_proto::dsmip::tif::Encap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddrV4};
use std::time::Instant;

/// A DSMIPv6 node as the pumps see it: the inputs of the tunnel-interface module and the
/// encapsulation of what the TUN hands over.
pub(crate) trait TunnelEnd {
    /// A UDP payload; the inner packet to write to the TUN, if any.
    fn udp<'a>(&mut self, now: Instant, from: SocketAddrV4, p: &'a [u8]) -> Option<&'a [u8]>;
    /// An IP-in-IP inner packet; the packet to write to the TUN, if any.
    fn ip_in_ip<'a>(&mut self, now: Instant, src: IpAddr, p: &'a [u8]) -> Option<&'a [u8]>;
    /// A captured signalling packet.
    fn captured(&mut self, now: Instant, p: &[u8]);
    /// How to send a packet read from the TUN, if at all.
    fn encapsulation(&mut self, now: Instant, p: &[u8]) -> Option<Encap>;
}

/// Drains one tunnel-interface socket into the node, and what the node lets through into
/// the TUN.
pub(crate) fn from_tunnel(
    socks: &TifSockets,
    source: TifSource,
    buf: &mut [u8],
    node: &mut impl TunnelEnd,
    tun_tx: &mut TunTx,
    failures: &Failures,
    now: Instant,
) {
    for _ in 0..BURST {
        let inner = match socks.recv(source, buf) {
            Ok(TifPacket::Udp { from, len }) => node.udp(now, from, &buf[..len]),
            Ok(TifPacket::IpInIp { src, range }) => node.ip_in_ip(now, src, &buf[range]),
            Ok(TifPacket::Captured { len }) => {
                node.captured(now, &buf[..len]);
                None
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            // ICMP errors of earlier sends surface here.
            Err(e) => {
                failures.record(Failure::Recv, 1, format_args!("{source:?} receive: {e}"));
                continue;
            }
        };
        if let Some(p) = inner {
            tun_tx.push(p);
        }
    }
    tun_tx.flush();
}

/// Drains the TUN into the tunnel.
pub(crate) fn to_tunnel(
    tun_rx: &mut TunRx,
    socks: &TifSockets,
    node: &mut impl TunnelEnd,
    failures: &Failures,
    now: Instant,
) -> std::io::Result<()> {
    tun_rx.drain(BURST, |pkt| {
        if let Some(e) = node.encapsulation(now, pkt) {
            let reason = match e {
                Encap::Udp { .. } => Failure::UdpSend,
                _ => Failure::RawSend,
            };
            if let Err(err) = socks.encap(e, pkt) {
                failures.record(reason, 1, format_args!("sending to {e:?}: {err}"));
            }
        }
    })
}

impl TunnelEnd for m6t_proto::dsmip::ha_node::HaNode {
    fn udp<'a>(&mut self, now: Instant, from: SocketAddrV4, p: &'a [u8]) -> Option<&'a [u8]> {
        match self.handle_udp(now, from, p) {
            m6t_proto::dsmip::ha_node::Verdict::ToTun(p) => Some(p),
            _ => None,
        }
    }
    fn ip_in_ip<'a>(&mut self, now: Instant, src: IpAddr, p: &'a [u8]) -> Option<&'a [u8]> {
        match self.handle_ip_in_ip(now, src, p) {
            m6t_proto::dsmip::ha_node::Verdict::ToTun(p) => Some(p),
            _ => None,
        }
    }
    fn captured(&mut self, now: Instant, p: &[u8]) {
        self.handle_captured(now, p)
    }
    fn encapsulation(&mut self, _now: Instant, p: &[u8]) -> Option<Encap> {
        self.route_from_home(p).ok()
    }
}

impl TunnelEnd for m6t_proto::dsmip::mn_node::MnNode {
    fn udp<'a>(&mut self, now: Instant, from: SocketAddrV4, p: &'a [u8]) -> Option<&'a [u8]> {
        match self.handle_udp(now, from, p) {
            m6t_proto::dsmip::mn_node::Verdict::ToTun(p) => Some(p),
            _ => None,
        }
    }
    fn ip_in_ip<'a>(&mut self, now: Instant, src: IpAddr, p: &'a [u8]) -> Option<&'a [u8]> {
        match self.handle_ip_in_ip(now, src, p) {
            m6t_proto::dsmip::mn_node::Verdict::ToTun(p) => Some(p),
            _ => None,
        }
    }
    fn captured(&mut self, now: Instant, p: &[u8]) {
        self.handle_captured(now, p)
    }
    fn encapsulation(&mut self, _now: Instant, p: &[u8]) -> Option<Encap> {
        self.route_to_home(p).ok()
    }
}
