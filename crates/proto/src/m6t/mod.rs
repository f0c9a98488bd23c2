//! The two ends of the m6t tunnel: the client on the mobile node and the gateway in front of
//! the home agent (draft-ebalard-mext-m6t-02 sections 2 and 3).

pub mod client;
pub mod gateway;
mod ratelimit;
mod table;
