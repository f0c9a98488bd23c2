//! The m6t program: configuration, the client, gateway, home agent and mobile node daemons
//! (a Linux driver around each sans-IO machine), status reporting and the prefix tool. The
//! lab and the benchmarks live in the `m6t-lab` crate.
#![warn(missing_docs)]

pub mod config;
pub mod daemon;
pub mod docs;
pub mod dsmip_config;
pub mod ike_config;
pub mod ipsec_config;
pub mod logging;
pub mod metrics;
pub mod prefix_tool;
pub mod status;
