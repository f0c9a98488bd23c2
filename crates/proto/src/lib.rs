//! Sans-IO protocol machines of m6t (draft-ebalard-mext-m6t-02).
//!
//! Every machine here follows the same contract: time comes in as an argument (`now`),
//! packets come in as bytes, and the machine answers with a verdict saying what to send
//! where; `poll_timeout` says when it next wants `handle_timeout`. No syscalls, no clock,
//! no threads: the same code runs under the Linux drivers and in virtual-time simulation.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dsmip;
pub mod hash;
pub mod m6t;
pub mod stats;
