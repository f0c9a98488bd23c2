//! Sans-IO protocol machines of m6t (draft-ebalard-mext-m6t-02) and of DSMIPv6 (RFC 5555).
//!
//! Every machine follows one API, quinn-proto's shape: time comes in as an argument, never
//! from a clock; packets come in as bytes through `handle_*(now, ..)`, which answers with a
//! verdict that says what to do with them and carries the reason of every drop (the reason
//! is also counted); what the machine wants sent or reported on its own is queued for
//! `poll_transmit()` and `poll_event()`; `poll_timeout()` says when it next wants
//! `handle_timeout(now)`. Every verdict and `poll_*` is `#[must_use]`, and its doc says when
//! to call it. Seeds come in from the caller (the gateway's hash keys, the client's address
//! draws), so a simulation with the same seed runs the same bit for bit. No syscalls, no
//! clock, no threads: the same code runs under the Linux drivers and in virtual time.
//!
//! | module | machine |
//! |---|---|
//! | [`m6t::client`] | [`m6t::client::Client`]: the tunnel client on the mobile node |
//! | [`m6t::gateway`] | [`m6t::gateway::Gateway`]: the tunnel gateway in front of the home agent |
//! | [`dsmip::binding_cache`] | [`dsmip::binding_cache::BindingCache`]: the home agent's protocol module |
//! | [`dsmip::home_agent`] | [`dsmip::home_agent::HomeAgent`]: the home agent node (binding cache + tunnel interface) |
//! | [`dsmip::update_list`] | [`dsmip::update_list::BindingUpdateList`]: the mobile node's protocol module |
//! | [`dsmip::mobile_node`] | [`dsmip::mobile_node::MobileNode`]: the mobile node (update list + tunnel interface) |
//! | [`dsmip::tif`] | the tunnel-interface module both DSMIPv6 nodes share |
//! | [`dsmip`] | [`dsmip::Verdict`], [`dsmip::Outbound`], [`dsmip::Transmit`]: the DSMIPv6 nodes' shared types |
//! | [`stats`], [`hash`] | counters by reason; seeded SipHash for the machines' tables |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dsmip;
pub mod hash;
pub mod m6t;
pub mod stats;
