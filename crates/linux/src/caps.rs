//! Privilege and device checks done before anything is opened, so that a missing capability
//! or device gives one clear error line instead of a later, obscure failure.

use std::path::Path;

/// Bit of CAP_NET_ADMIN in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// What is missing to run a tunnel daemon.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapsError {
    /// The process lacks CAP_NET_ADMIN (needed for TUN, addresses and routes).
    #[error("missing capability CAP_NET_ADMIN (run as root or grant it: setcap cap_net_admin+ep)")]
    NoNetAdmin,
    /// /dev/net/tun does not exist (tun module not loaded, or a container without it).
    #[error("missing /dev/net/tun (load the tun module or pass the device to the container)")]
    NoTunDevice,
}

/// Parses the effective capability mask out of `/proc/self/status` text.
pub fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Checks CAP_NET_ADMIN and /dev/net/tun.
pub fn check_tunnel_privileges() -> Result<(), CapsError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match effective_caps(&status) {
        Some(c) if c & (1 << CAP_NET_ADMIN) != 0 => {}
        _ => return Err(CapsError::NoNetAdmin),
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(CapsError::NoTunDevice);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_capeff() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000001000\n";
        assert_eq!(effective_caps(s), Some(0x1000));
        assert_eq!(effective_caps("nothing"), None);
    }
}
