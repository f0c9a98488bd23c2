//! Dual-Stack Mobile IPv6 (RFC 5555, seed 002) on the architecture of seed 001.
//!
//! Two layers, each with one module per end:
//!
//! | layer | home agent | mobile node |
//! |---|---|---|
//! | protocol module (RFC 6275 / RFC 5555 signalling state) | [`binding_cache::BindingCache`] | [`update_list::BindingUpdateList`] |
//! | the node: protocol module joined to the tunnel-interface module ([`tif`]) | [`home_agent::HomeAgent`] | [`mobile_node::MobileNode`] |
//!
//! The protocol modules take Binding Updates and Acknowledgements already parsed by
//! `m6t_wire::mh`, together with how they arrived (the tunnel-interface module records the
//! outer IPv4 source and UDP port for NAT detection), and say what to answer and how to
//! tunnel data. The nodes are what a driver runs: they take bytes, answer with a
//! [`Verdict`] or an [`Outbound`], and queue [`Transmit`]s and events.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

pub mod binding_cache;
pub mod home_agent;
pub mod mobile_node;
pub mod protect;
pub mod seq;
pub mod tif;
pub mod update_list;

pub use tif::Encap;

/// What to do with a packet a node received from the network (`handle_udp`,
/// `handle_ip_in_ip`, `handle_captured`); `R` is the node's counter type.
#[must_use = "a verdict says where the packet goes: write ToTun's bytes to the TUN"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a, R> {
    /// Write this inner packet to the TUN.
    ToTun(&'a [u8]),
    /// Signalling, handled (answers are queued for `poll_transmit`).
    Handled,
    /// Dropped (or, for `NotSignal`, left to the kernel), counted under this reason.
    Drop(R),
}

/// What to do with a packet a node read from its TUN (`handle_from_tun`); `R` is the node's
/// counter type.
#[must_use = "an outbound verdict says how to send the packet"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound<R> {
    /// Send the packet with this encapsulation.
    Send(Encap),
    /// Dropped, counted under this reason.
    Drop(R),
}

/// A signalling packet (Binding Update or Acknowledgement) a node asks its driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// As the payload of a UDP datagram from port 4191 (RFC 5555 section 4.1).
    Udp {
        /// Local IPv4 address to send from: the mobile node's care-of address; `None` on
        /// the home agent (its configured address).
        from: Option<Ipv4Addr>,
        /// Destination (the NAT's address and port when there is one).
        to: SocketAddrV4,
        /// The IPv6 packet.
        data: Vec<u8>,
    },
    /// A whole IPv6 packet, extension headers included, to send as it is.
    Ipv6 {
        /// Local IPv6 address to send from: the mobile node's care-of address; `None` on
        /// the home agent.
        from: Option<Ipv6Addr>,
        /// Destination.
        to: Ipv6Addr,
        /// The packet.
        data: Vec<u8>,
    },
}
