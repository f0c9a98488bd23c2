//! Privilege and device checks done before anything is opened, so that a missing capability
//! or device gives one clear error line instead of a later, obscure failure.

use std::path::Path;

pub use caps::Capability;

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

/// Keeps only `keep` for the calling thread, for good: the effective and permitted sets
/// become `keep`, the inheritable and ambient sets empty, and every other capability leaves
/// the bounding set, so no program it runs (a hook script run by root included) gets one
/// back. Capabilities are per thread: a daemon calls this in its main thread before it
/// starts its workers (which inherit the sets) and in each thread started before.
///
/// Without CAP_SETPCAP (a daemon given only its capabilities, e.g. by systemd) the
/// bounding set cannot be changed and is left as it is; the other sets still shrink.
pub fn keep_only(keep: &[Capability]) -> std::io::Result<()> {
    let err = |what: &str, e: caps::errors::CapsError| {
        std::io::Error::other(format!("dropping capabilities ({what}): {e}"))
    };
    let keep_set: caps::CapsHashSet = keep.iter().copied().collect();
    // The bounding set first: changing it needs CAP_SETPCAP in the effective set.
    if caps::has_cap(None, caps::CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for c in caps::all() {
            if !keep_set.contains(&c)
                && caps::has_cap(None, caps::CapSet::Bounding, c).unwrap_or(false)
            {
                caps::drop(None, caps::CapSet::Bounding, c).map_err(|e| err("bounding", e))?;
            }
        }
    }
    caps::clear(None, caps::CapSet::Ambient).map_err(|e| err("ambient", e))?;
    caps::clear(None, caps::CapSet::Inheritable).map_err(|e| err("inheritable", e))?;
    // Effective before permitted: the effective set must stay inside the permitted one.
    let have = caps::read(None, caps::CapSet::Permitted).map_err(|e| err("permitted", e))?;
    let kept: caps::CapsHashSet = keep_set.intersection(&have).copied().collect();
    caps::set(None, caps::CapSet::Effective, &kept).map_err(|e| err("effective", e))?;
    caps::set(None, caps::CapSet::Permitted, &kept).map_err(|e| err("permitted", e))?;
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
