//! The Linux layer of m6t: everything that touches the kernel. TUN devices, UDP sockets,
//! netlink (addresses, routes, events), the control socket, claims of random values shared
//! by several tunnel interfaces, privilege checks. Protocol logic lives in `m6t-proto`; this
//! crate only moves bytes and applies what the machines decide.
#![warn(missing_docs)]

pub mod batch;
pub mod budget;
pub mod caps;
pub mod capture;
pub mod claims;
pub mod control;
pub mod dns;
pub mod failures;
pub mod hugealloc;
pub mod netlink;
pub mod notify;
pub mod prefetch;
pub mod raw;
pub mod runtime;
pub mod seed;
pub mod tif;
pub mod tun;
pub mod udp;
