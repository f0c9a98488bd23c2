//! The m6t program: configuration, the client and gateway daemons (a Linux driver around
//! each sans-IO machine), status reporting, the prefix tool and the `lab` scenario.
#![warn(missing_docs)]

pub mod bench;
pub mod config;
pub mod daemon;
pub mod dsmip_config;
pub mod lab;
pub mod netns;
pub mod prefix_tool;
pub mod status;
