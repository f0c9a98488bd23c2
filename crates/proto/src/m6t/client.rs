//! The m6t tunnel client on the mobile node (draft-ebalard-mext-m6t-02 sections 2.2, 2.3,
//! 2.5, 2.6 and 3).
//!
//! While the node has IPv4 connectivity toward the gateway, the client owns one tunnel
//! address `/80 prefix | 48 random bits`, drawn afresh at every IPv4 attachment (section 3),
//! and one UDP socket toward one of the gateway's ports. It carries IPv6 packets as UDP
//! payloads, keeps the NAT mapping open with keep-alives (section 2.3), watches their echoes,
//! and draws a new address and socket by itself when the path is dead, so that the MIPv6
//! layer above just sees a new care-of address.

use crate::reasons;
use crate::stats::Counters;
use m6t_wire::{icmpv6, keepalive, Ipv6Packet, Ipv6Prefix};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Configuration of a client; `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The mobile node's /80 (section 2.2).
    pub prefix: Ipv6Prefix,
    /// Gateway UDP ports in order of preference (section 2.1).
    pub ports: Vec<u16>,
    /// Tunnel MTU (section 2.6).
    pub mtu: u16,
    /// Send a keep-alive after this long without sending anything (section 2.3: 30 s).
    pub keepalive_interval: Duration,
    /// How long to wait for an echo (or any packet) before probing again.
    pub echo_timeout: Duration,
    /// Unanswered probes after which a confirmed path is declared dead.
    pub dead_probes: u32,
    /// How long data sent on a fresh, never-answered address may stay unanswered before the
    /// next gateway port is tried.
    pub port_timeout: Duration,
}

impl Default for ClientConfig {
    /// The documented defaults; the required fields are left unspecified: `prefix` is
    /// `::/0` and `ports` empty (the caller sets both, see [`ClientConfig::new`]).
    fn default() -> Self {
        ClientConfig {
            prefix: Ipv6Prefix::new(Ipv6Addr::UNSPECIFIED, 0).expect("::/0 is a prefix"),
            ports: Vec::new(),
            mtu: 1472,
            keepalive_interval: Duration::from_secs(30),
            echo_timeout: Duration::from_secs(1),
            dead_probes: 3,
            port_timeout: Duration::from_secs(3),
        }
    }
}

impl ClientConfig {
    /// The documented defaults around a /80 and the gateway's ports.
    pub fn new(prefix: Ipv6Prefix, ports: Vec<u16>) -> Self {
        ClientConfig {
            prefix,
            ports,
            ..ClientConfig::default()
        }
    }
}

reasons! {
    /// Why the client dropped a packet, or what else it counted.
    pub enum ClientCounter {
        /// Packet from the TUN that is not one well-formed IPv6 packet.
        MalformedFromTun => "drop_malformed_from_tun",
        /// Packet from the TUN while the tunnel is down.
        TunnelDown => "drop_tunnel_down",
        /// Packet from the TUN whose source is not the current tunnel address.
        WrongSource => "drop_wrong_source",
        /// Too big, and an ICMPv6 error (never answer an error with an error).
        TooBigIcmpError => "drop_too_big_icmp_error",
        /// UDP payload that is not one well-formed IPv6 packet.
        MalformedFromGateway => "drop_malformed_from_gateway",
        /// UDP payload for another address than the current tunnel address.
        WrongDestination => "drop_wrong_destination",
        /// UDP payload received while the tunnel is down.
        ReceivedWhileDown => "drop_received_while_down",
        /// Packets sent into the tunnel.
        Sent => "sent",
        /// Packets delivered to the TUN.
        Received => "received",
        /// Keep-alives sent.
        KeepalivesSent => "keepalives_sent",
        /// Keep-alive echoes received.
        EchoesReceived => "echoes_received",
        /// ICMPv6 Packet Too Big written to the TUN.
        PacketTooBigSent => "packet_too_big_sent",
        /// Paths declared dead (new address drawn).
        PathsDead => "paths_dead",
        /// Fallbacks to the next gateway port.
        PortFallbacks => "port_fallbacks",
        /// Addresses drawn again because another tunnel held the value.
        AddressConflicts => "address_conflicts",
    }
}

/// Why the tunnel address changed; passed to the hook script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeReason {
    /// IPv4 connectivity appeared or the IPv4 attachment changed.
    Attach,
    /// IPv4 connectivity toward the gateway is gone.
    Detach,
    /// The default IPv4 route changed.
    RouteChange,
    /// No echo and no traffic: NAT reboot, rebinding or gateway restart.
    PathDead,
    /// The gateway did not answer on this port: trying the next one.
    PortFallback,
    /// Another tunnel interface holds the same random value (section 2.5).
    Conflict,
}

impl ChangeReason {
    /// Name used in logs and in the hook's environment.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeReason::Attach => "attach",
            ChangeReason::Detach => "detach",
            ChangeReason::RouteChange => "route-change",
            ChangeReason::PathDead => "path-dead",
            ChangeReason::PortFallback => "port-fallback",
            ChangeReason::Conflict => "conflict",
        }
    }
}

/// An instruction to the driver: replace the tunnel address and socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressChange {
    /// Address to remove from the TUN (if any).
    pub old: Option<Ipv6Addr>,
    /// Address to install, with the default route, and gateway port for a fresh UDP socket;
    /// `None`: tunnel down, close the socket.
    pub new: Option<(Ipv6Addr, u16)>,
    /// Why.
    pub reason: ChangeReason,
}

/// What to do with a packet read from the TUN.
#[must_use = "a verdict says where the packet goes"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromTun {
    /// Send it unchanged as the payload of a UDP datagram to the gateway.
    Send,
    /// Write the first `n` bytes of the scratch buffer back to the TUN (Packet Too Big).
    Reply(usize),
    /// Dropped, counted.
    Drop(ClientCounter),
}

/// What to do with a UDP payload received from the gateway.
#[must_use = "a verdict says where the packet goes"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromGateway {
    /// Write it unchanged to the TUN.
    ToTun,
    /// A keep-alive echo: consumed.
    Echo,
    /// Dropped, counted.
    Drop(ClientCounter),
}

#[derive(Debug, Clone)]
struct Up {
    local: Ipv4Addr,
    address: Ipv6Addr,
    port_idx: usize,
    /// Something valid arrived on this address: the path is proven.
    confirmed: bool,
    last_tx: Instant,
    last_rx: Instant,
    /// First data packet sent since the last packet received.
    unanswered_since: Option<Instant>,
    /// Probes sent since the last packet received, and when the next one is due.
    probes: u32,
    next_probe: Option<Instant>,
}

/// Status of a client, as shown by `m6t status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientInfo {
    /// "up" or "down".
    pub state: String,
    /// Current tunnel address.
    pub address: Option<Ipv6Addr>,
    /// Local IPv4 address the tunnel leaves from.
    pub local_ipv4: Option<Ipv4Addr>,
    /// Gateway port in use.
    pub port: Option<u16>,
    /// Whether the gateway answered on this address.
    pub confirmed: bool,
    /// Milliseconds since the last packet received.
    pub idle_rx_ms: Option<u64>,
}

/// The client machine. See the module documentation.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    rng: ChaCha20Rng,
    up: Option<Up>,
    pending_keepalive: bool,
    changes: VecDeque<AddressChange>,
    counters: Counters<ClientCounter>,
}

impl Client {
    /// A client, down until [`Self::handle_attachment`] reports IPv4 connectivity. The seed
    /// feeds the generator of the 48-bit random values; the driver draws it from the OS.
    pub fn new(cfg: ClientConfig, seed: [u8; 32]) -> Self {
        Client {
            cfg,
            rng: ChaCha20Rng::from_seed(seed),
            up: None,
            pending_keepalive: false,
            changes: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Current tunnel address, if the tunnel is up.
    pub fn address(&self) -> Option<Ipv6Addr> {
        self.up.as_ref().map(|u| u.address)
    }

    /// Current gateway port, if the tunnel is up.
    pub fn port(&self) -> Option<u16> {
        self.up
            .as_ref()
            .and_then(|u| self.cfg.ports.get(u.port_idx).copied())
    }

    fn draw(&mut self) -> Ipv6Addr {
        let mut b = [0u8; 8];
        self.rng.fill_bytes(&mut b);
        let r = u64::from_be_bytes(b) & 0xffff_ffff_ffff;
        self.cfg.prefix.with_host(u128::from(r))
    }

    fn go_up(&mut self, now: Instant, local: Ipv4Addr, port_idx: usize, reason: ChangeReason) {
        let old = self.up.as_ref().map(|u| u.address);
        let mut address = self.draw();
        while Some(address) == old {
            address = self.draw();
        }
        let port_idx = if port_idx < self.cfg.ports.len() {
            port_idx
        } else {
            0
        };
        self.up = Some(Up {
            local,
            address,
            port_idx,
            confirmed: false,
            last_tx: now,
            last_rx: now,
            unanswered_since: None,
            probes: 0,
            next_probe: None,
        });
        self.pending_keepalive = false;
        let port = self.cfg.ports.get(port_idx).copied().unwrap_or(0);
        self.changes.push_back(AddressChange {
            old,
            new: Some((address, port)),
            reason,
        });
    }

    /// Reports the node's IPv4 attachment toward the gateway: the local IPv4 address the
    /// kernel would use to reach it, or `None` when there is no address or no route.
    /// A new attachment draws a new random value (section 3).
    pub fn handle_attachment(&mut self, now: Instant, local: Option<Ipv4Addr>) {
        match (local, self.up.as_ref()) {
            (None, None) => {}
            (None, Some(u)) => {
                let old = u.address;
                self.up = None;
                self.pending_keepalive = false;
                self.changes.push_back(AddressChange {
                    old: Some(old),
                    new: None,
                    reason: ChangeReason::Detach,
                });
            }
            (Some(l), Some(u)) if u.local == l => {}
            (Some(l), _) => self.go_up(now, l, 0, ChangeReason::Attach),
        }
    }

    /// Reports that the default IPv4 route changed: a new attachment, with a new address.
    pub fn handle_route_change(&mut self, now: Instant, local: Option<Ipv4Addr>) {
        match local {
            Some(l) if self.up.is_some() => self.go_up(now, l, 0, ChangeReason::RouteChange),
            _ => self.handle_attachment(now, local),
        }
    }

    /// The driver found the drawn address already claimed by another tunnel interface with
    /// the same /80 (section 2.5): draw another one.
    pub fn handle_address_conflict(&mut self, now: Instant) {
        if let Some(u) = self.up.clone() {
            self.counters.bump(ClientCounter::AddressConflicts);
            self.go_up(now, u.local, u.port_idx, ChangeReason::Conflict);
        }
    }

    /// The UDP socket reported the gateway port unreachable (ICMP port unreachable): try
    /// the next port at once.
    pub fn handle_port_unreachable(&mut self, now: Instant) {
        self.fall_back(now);
    }

    fn fall_back(&mut self, now: Instant) {
        if let Some(u) = self.up.clone() {
            self.counters.bump(ClientCounter::PortFallbacks);
            let next = (u.port_idx + 1) % self.cfg.ports.len().max(1);
            self.go_up(now, u.local, next, ChangeReason::PortFallback);
        }
    }

    /// Next address change for the driver to apply, oldest first. Call after every
    /// `handle_*` call until it returns `None`.
    #[must_use = "an address change not applied leaves the TUN on a stale address"]
    pub fn poll_change(&mut self) -> Option<AddressChange> {
        self.changes.pop_front()
    }

    /// A keep-alive to send to the gateway, if one is due (section 2.3). Call after every
    /// `handle_*` call (after [`Self::poll_change`]: it goes on the current socket).
    #[must_use = "a keep-alive not sent lets the NAT mapping lapse"]
    pub fn poll_keepalive(&mut self) -> Option<[u8; keepalive::KEEPALIVE_LEN]> {
        if !std::mem::take(&mut self.pending_keepalive) {
            return None;
        }
        let u = self.up.as_ref()?;
        Some(keepalive::emit(u.address, keepalive::KEEPALIVE_PEER))
    }

    /// Handles an IPv6 packet read from the TUN. `scratch` receives a Packet Too Big when
    /// one is due (needs [`icmpv6::MAX_ERROR_LEN`] bytes).
    pub fn handle_from_tun(&mut self, now: Instant, packet: &[u8], scratch: &mut [u8]) -> FromTun {
        let Ok(p) = Ipv6Packet::new_checked(packet) else {
            self.counters.bump(ClientCounter::MalformedFromTun);
            return FromTun::Drop(ClientCounter::MalformedFromTun);
        };
        let Some(u) = self.up.as_mut() else {
            self.counters.bump(ClientCounter::TunnelDown);
            return FromTun::Drop(ClientCounter::TunnelDown);
        };
        if p.src_addr() != u.address {
            self.counters.bump(ClientCounter::WrongSource);
            return FromTun::Drop(ClientCounter::WrongSource);
        }
        if packet.len() > usize::from(self.cfg.mtu) {
            if icmpv6::is_icmpv6_error(&p) {
                self.counters.bump(ClientCounter::TooBigIcmpError);
                return FromTun::Drop(ClientCounter::TooBigIcmpError);
            }
            let src = u.address;
            return match icmpv6::emit_packet_too_big(src, &p, u32::from(self.cfg.mtu), scratch) {
                Ok(n) => {
                    self.counters.bump(ClientCounter::PacketTooBigSent);
                    FromTun::Reply(n)
                }
                Err(_) => {
                    self.counters.bump(ClientCounter::MalformedFromTun);
                    FromTun::Drop(ClientCounter::MalformedFromTun)
                }
            };
        }
        u.last_tx = now;
        if u.unanswered_since.is_none() {
            u.unanswered_since = Some(now);
        }
        self.counters.bump(ClientCounter::Sent);
        FromTun::Send
    }

    /// Handles a UDP payload received from the gateway on the current socket. Only a
    /// well-formed IPv6 packet addressed to the current tunnel address reaches the TUN.
    pub fn handle_from_gateway(&mut self, now: Instant, payload: &[u8]) -> FromGateway {
        let Ok(p) = Ipv6Packet::new_checked(payload) else {
            self.counters.bump(ClientCounter::MalformedFromGateway);
            return FromGateway::Drop(ClientCounter::MalformedFromGateway);
        };
        let Some(u) = self.up.as_mut() else {
            self.counters.bump(ClientCounter::ReceivedWhileDown);
            return FromGateway::Drop(ClientCounter::ReceivedWhileDown);
        };
        if p.dst_addr() != u.address {
            self.counters.bump(ClientCounter::WrongDestination);
            return FromGateway::Drop(ClientCounter::WrongDestination);
        }
        u.confirmed = true;
        u.last_rx = now;
        u.unanswered_since = None;
        u.probes = 0;
        u.next_probe = None;
        if keepalive::is_echo_for(&p, u.address) {
            self.counters.bump(ClientCounter::EchoesReceived);
            return FromGateway::Echo;
        }
        self.counters.bump(ClientCounter::Received);
        FromGateway::ToTun
    }

    fn send_probe(&mut self, now: Instant) {
        if let Some(u) = self.up.as_mut() {
            u.last_tx = now;
            u.probes += 1;
            u.next_probe = Some(now + self.cfg.echo_timeout);
            self.pending_keepalive = true;
            self.counters.bump(ClientCounter::KeepalivesSent);
        }
    }

    /// When the client next wants [`Self::handle_timeout`]. Ask again after every
    /// `handle_*` call.
    #[must_use = "the deadline must be armed on the driver's timer"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let u = self.up.as_ref()?;
        let mut t = u.last_tx + self.cfg.keepalive_interval;
        if let Some(p) = u.next_probe {
            t = t.min(p);
        }
        if let Some(s) = u.unanswered_since {
            if u.confirmed && u.next_probe.is_none() {
                t = t.min(s + self.cfg.echo_timeout);
            }
            if !u.confirmed && self.cfg.ports.len() > 1 {
                t = t.min(s + self.cfg.port_timeout);
            }
        }
        Some(t)
    }

    /// Runs the timers: keep-alives (section 2.3), echo watching, port fallback.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(u) = self.up.clone() else { return };
        // A never-answered address: data without any answer means this port is not served.
        if !u.confirmed {
            if let Some(s) = u.unanswered_since {
                if now >= s + self.cfg.port_timeout && self.cfg.ports.len() > 1 {
                    self.fall_back(now);
                    return;
                }
            }
        }
        if u.confirmed {
            if let Some(p) = u.next_probe {
                if now >= p {
                    if u.probes >= self.cfg.dead_probes {
                        self.counters.bump(ClientCounter::PathsDead);
                        self.go_up(now, u.local, 0, ChangeReason::PathDead);
                    } else {
                        self.send_probe(now);
                    }
                    return;
                }
            } else if let Some(s) = u.unanswered_since {
                // Data went out and nothing came back: check the path now rather than at
                // the next keep-alive, so a dead mapping is noticed within seconds.
                if now >= s + self.cfg.echo_timeout {
                    self.send_probe(now);
                    return;
                }
            }
        }
        if now >= u.last_tx + self.cfg.keepalive_interval {
            if u.confirmed {
                self.send_probe(now);
            } else if let Some(u) = self.up.as_mut() {
                // Keeps the NAT mapping open; not watched, as the gateway only echoes for
                // active states.
                u.last_tx = now;
                self.pending_keepalive = true;
                self.counters.bump(ClientCounter::KeepalivesSent);
            }
        }
    }

    /// Counter values.
    pub fn counters(&self) -> &Counters<ClientCounter> {
        &self.counters
    }

    /// Status for `m6t status`.
    pub fn info(&self, now: Instant) -> ClientInfo {
        match &self.up {
            None => ClientInfo {
                state: "down".into(),
                address: None,
                local_ipv4: None,
                port: None,
                confirmed: false,
                idle_rx_ms: None,
            },
            Some(u) => ClientInfo {
                state: "up".into(),
                address: Some(u.address),
                local_ipv4: Some(u.local),
                port: self.cfg.ports.get(u.port_idx).copied(),
                confirmed: u.confirmed,
                idle_rx_ms: Some(now.saturating_duration_since(u.last_rx).as_millis() as u64),
            },
        }
    }
}
