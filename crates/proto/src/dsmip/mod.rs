//! Dual-Stack Mobile IPv6 (RFC 5555, seed 002) on the architecture of seed 001: the
//! protocol module's machines. They take Binding Updates and Acknowledgements already
//! parsed by `m6t_wire::mh`, together with how they arrived (the tunnel-interface module
//! records the outer IPv4 source and UDP port for NAT detection), and say what to answer
//! and how to tunnel data.

pub mod ha;
pub mod ha_node;
pub mod mn;
pub mod mn_node;
pub mod seq;
pub mod tif;
