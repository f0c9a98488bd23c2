//! What the home agent and the mobile node daemons share: moving packets between the
//! tunnel-interface sockets, the node and the TUN. Both nodes take the same inputs (UDP
//! payloads, IP-in-IP inner packets, captured signalling, packets from the TUN), so one
//! pump serves both.

use super::ike::IkeDriver;
use super::BURST;
use m6t_linux::batch::RecvBatch;
use m6t_linux::failures::{Failure, Failures};
use m6t_linux::tif::{TifPacket, TifSockets, TifSource, UdpBatches};
use m6t_linux::tun::{TunRx, TunTx};
use m6t_proto::dsmip::home_agent::{HaCounter, HomeAgent};
use m6t_proto::dsmip::mobile_node::{MnCounter, MobileNode};
use m6t_proto::dsmip::tif::Outer;
use m6t_proto::dsmip::{Encap, Outbound, Transmit, Verdict};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddrV4};
use std::time::Instant;

/// A DSMIPv6 node as the pumps see it: the inputs of the tunnel-interface module and the
/// encapsulation of what the TUN hands over ([`HomeAgent`] and [`MobileNode`] have the
/// same shape).
pub(crate) trait TunnelEnd {
    /// The node's counter, naming why a packet was dropped.
    type Reason;
    /// A UDP payload (opened in place when IPsec protects it).
    fn udp<'a>(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        p: &'a mut [u8],
    ) -> Verdict<'a, Self::Reason>;
    /// An IP-in-IP inner packet.
    fn ip_in_ip<'a>(
        &mut self,
        now: Instant,
        src: IpAddr,
        p: &'a mut [u8],
    ) -> Verdict<'a, Self::Reason>;
    /// A captured signalling packet.
    fn captured<'a>(&mut self, now: Instant, p: &'a mut [u8]) -> Verdict<'a, Self::Reason>;
    /// A bare ESP packet (protocol 50 or UDP 4500).
    fn esp<'a>(&mut self, now: Instant, outer: Outer, p: &'a mut [u8])
        -> Verdict<'a, Self::Reason>;
    /// A packet read from the TUN.
    fn tun(&mut self, now: Instant, p: &[u8]) -> Outbound<Self::Reason>;
    /// The bytes of the last [`Outbound::Protected`].
    fn protected(&self) -> &[u8];
    /// IKE on port 4500 while no IKE runs.
    fn ike_without_ike(&mut self);
    /// The last bare ESP refused for its unknown SPI.
    fn take_unknown_spi(&mut self) -> Option<(Outer, u32)>;
}

macro_rules! tunnel_end {
    ($node:ty, $reason:ty) => {
        impl TunnelEnd for $node {
            type Reason = $reason;
            fn udp<'a>(
                &mut self,
                now: Instant,
                from: SocketAddrV4,
                p: &'a mut [u8],
            ) -> Verdict<'a, $reason> {
                self.handle_udp(now, from, p)
            }
            fn ip_in_ip<'a>(
                &mut self,
                now: Instant,
                src: IpAddr,
                p: &'a mut [u8],
            ) -> Verdict<'a, $reason> {
                self.handle_ip_in_ip(now, src, p)
            }
            fn captured<'a>(&mut self, now: Instant, p: &'a mut [u8]) -> Verdict<'a, $reason> {
                self.handle_captured(now, p)
            }
            fn esp<'a>(
                &mut self,
                now: Instant,
                outer: Outer,
                p: &'a mut [u8],
            ) -> Verdict<'a, $reason> {
                self.handle_esp(now, outer, p)
            }
            fn tun(&mut self, now: Instant, p: &[u8]) -> Outbound<$reason> {
                self.handle_from_tun(now, p)
            }
            fn protected(&self) -> &[u8] {
                <$node>::protected(self)
            }
            fn ike_without_ike(&mut self) {
                self.handle_ike_without_ike()
            }
            fn take_unknown_spi(&mut self) -> Option<(Outer, u32)> {
                <$node>::take_unknown_spi(self)
            }
        }
    };
}

tunnel_end!(HomeAgent, HaCounter);
tunnel_end!(MobileNode, MnCounter);

/// The data path's buffers, allocated once: one packet read at a time (raw sockets, the
/// capture), batches read from the UDP sockets (recvmmsg), and the UDP datagrams a TUN
/// drain gathers for GSO sends.
pub(crate) struct Buffers {
    one: Vec<u8>,
    rx: RecvBatch,
    tx: UdpBatches,
}

impl Buffers {
    /// Slots of UDP datagrams read per recvmmsg.
    const RECV_SLOTS: usize = 16;

    pub(crate) fn new() -> Buffers {
        Buffers {
            one: vec![0u8; 65536],
            rx: RecvBatch::new(Self::RECV_SLOTS),
            tx: UdpBatches::new(),
        }
    }
}

/// Drains one tunnel-interface socket into the node, and what the node lets through into
/// the TUN.
#[allow(clippy::too_many_arguments)]
pub(crate) fn from_tunnel(
    socks: &TifSockets,
    source: TifSource,
    bufs: &mut Buffers,
    node: &mut impl TunnelEnd,
    tun_tx: &mut TunTx,
    mut ike: Option<&mut IkeDriver>,
    failures: &Failures,
    now: Instant,
) {
    let mut one = |p: TifPacket, buf: &mut [u8]| {
        // Drops are counted by the node under their reason.
        let verdict = match p {
            TifPacket::Udp { from, len } => node.udp(now, from, &mut buf[..len]),
            TifPacket::IpInIp { src, range } => node.ip_in_ip(now, src, &mut buf[range]),
            TifPacket::Captured { len } => node.captured(now, &mut buf[..len]),
            TifPacket::Esp { outer, range } => node.esp(now, outer, &mut buf[range]),
            // IKE and NAT-keepalives on port 4500 are not the tunnel's but IKE's.
            TifPacket::NotEsp { local, from, len } => {
                match ike.as_deref_mut() {
                    Some(ike) => ike.datagram(now, local, from, &buf[..len]),
                    None => node.ike_without_ike(),
                }
                return;
            }
        };
        if let Verdict::ToTun(p) = verdict {
            tun_tx.push(p);
        }
        // ESP for an SA we do not have: perhaps we restarted and the peer does not know.
        if let (Some(ike), Some((outer, spi))) = (ike.as_deref_mut(), node.take_unknown_spi()) {
            ike.esp_unknown_spi(now, socks, outer, spi);
        }
    };
    for _ in 0..BURST {
        let r = if source.batched() {
            socks.recv_batch(source, &mut bufs.rx).map(|n| {
                for i in 0..n {
                    if let Ok((p, d)) = socks.batched_packet(source, &mut bufs.rx, i) {
                        one(p, d);
                    }
                }
            })
        } else {
            socks
                .recv(source, &mut bufs.one)
                .map(|p| one(p, &mut bufs.one))
        };
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            // ICMP errors of earlier sends surface here.
            Err(e) => failures.record(Failure::Recv, 1, format_args!("{source:?} receive: {e}")),
        }
    }
    tun_tx.flush();
}

/// Drains the TUN into the tunnel: the UDP datagrams gathered in `bufs` and sent in as
/// few calls as the kernel allows once the drain is over.
pub(crate) fn to_tunnel(
    tun_rx: &mut TunRx,
    socks: &TifSockets,
    bufs: &mut Buffers,
    node: &mut impl TunnelEnd,
    failures: &Failures,
    now: Instant,
) -> std::io::Result<()> {
    let r = tun_rx.drain(BURST, |pkt| {
        let (e, bytes) = match node.tun(now, pkt) {
            Outbound::Send(e) => (e, pkt),
            Outbound::Protected(e) => (e, node.protected()),
            Outbound::Drop(_) => return,
        };
        let reason = match e {
            Encap::Udp { .. } | Encap::EspUdp { .. } => Failure::UdpSend,
            _ => Failure::RawSend,
        };
        if let Err(err) = socks.encap_batched(e, bytes, &mut bufs.tx) {
            failures.record(reason, 1, format_args!("sending to {e:?}: {err}"));
        }
    });
    socks.flush(&mut bufs.tx);
    let refused = bufs.tx.take_errors();
    if refused > 0 {
        failures.record(
            Failure::UdpSend,
            refused,
            format_args!("{refused} UDP datagrams refused by the kernel"),
        );
    }
    r
}

/// Sends a signalling packet the node queued (a BU from the mobile node's care-of address,
/// a BA from the home agent).
pub(crate) fn send_signal(socks: &TifSockets, t: &Transmit) -> std::io::Result<usize> {
    match t {
        Transmit::Udp { from, to, data } => socks.send_udp(*from, *to, data),
        Transmit::Ipv6 { to, data, .. } => socks.send_ipv6(*to, data),
        Transmit::EspUdp { to, data, .. } => socks.send_esp_udp(*to, data),
    }
}
