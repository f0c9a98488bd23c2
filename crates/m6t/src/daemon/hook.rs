//! The client's hook script, run on every address change with the old and new address,
//! the interface and the state in its environment (miredo's client-hook is the model:
//! `STATE`, `IFACE`, `ADDRESS`, plus `OLD_ADDRESS`, `REASON`, `MTU`, `GATEWAY_PORT`).

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Runs the hook without waiting for it; finished children are reaped by [`Hook::reap`].
pub(crate) struct Hook {
    path: Option<PathBuf>,
    children: Vec<Child>,
}

/// What the hook is told.
pub(crate) struct HookCall<'a> {
    pub iface: &'a str,
    pub old: Option<Ipv6Addr>,
    pub new: Option<Ipv6Addr>,
    pub reason: &'a str,
    pub mtu: u16,
    pub port: Option<u16>,
}

impl Hook {
    pub(crate) fn new(path: Option<PathBuf>) -> Self {
        Hook {
            path,
            children: Vec::new(),
        }
    }

    pub(crate) fn run(&mut self, c: &HookCall<'_>) {
        let Some(p) = &self.path else { return };
        let s = |a: Option<Ipv6Addr>| a.map(|a| a.to_string()).unwrap_or_default();
        let r = Command::new(p)
            .env("STATE", if c.new.is_some() { "up" } else { "down" })
            .env("IFACE", c.iface)
            .env("ADDRESS", s(c.new))
            .env("OLD_ADDRESS", s(c.old))
            .env("REASON", c.reason)
            .env("MTU", c.mtu.to_string())
            .env(
                "GATEWAY_PORT",
                c.port.map(|p| p.to_string()).unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .spawn();
        match r {
            Ok(ch) => self.children.push(ch),
            Err(e) => tracing::warn!("hook {}: {e}", p.display()),
        }
    }

    pub(crate) fn reap(&mut self) {
        self.children.retain_mut(|c| match c.try_wait() {
            Ok(Some(st)) => {
                if !st.success() {
                    tracing::warn!("hook exited with {st}");
                }
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
    }
}
