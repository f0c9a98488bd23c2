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
    drop_bounding(&keep_set)?;
    caps::clear(None, caps::CapSet::Ambient).map_err(|e| err("ambient", e))?;
    caps::clear(None, caps::CapSet::Inheritable).map_err(|e| err("inheritable", e))?;
    // Effective before permitted: the effective set must stay inside the permitted one.
    let have = caps::read(None, caps::CapSet::Permitted).map_err(|e| err("permitted", e))?;
    let kept: caps::CapsHashSet = keep_set.intersection(&have).copied().collect();
    caps::set(None, caps::CapSet::Effective, &kept).map_err(|e| err("effective", e))?;
    caps::set(None, caps::CapSet::Permitted, &kept).map_err(|e| err("permitted", e))?;
    Ok(())
}

/// Whether the daemon's main thread has settled its privileges (see [`settled`]).
static SETTLED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
static SETTLED_NOW: std::sync::Condvar = std::sync::Condvar::new();

/// Says that the main thread has switched user (if it does) and kept its capabilities:
/// threads of [`spawn_unprivileged`] go on.
pub fn settled() {
    let mut s = SETTLED.lock().unwrap_or_else(|e| e.into_inner());
    *s = true;
    SETTLED_NOW.notify_all();
}

/// Spawns a helper thread (the metrics server, the binding cache's writer) that runs `f`
/// with no capability once the daemon has settled its privileges ([`settled`]); `f` is told
/// if dropping them failed. The thread drops its bounding set before this returns, while it
/// still has CAP_SETPCAP to do so (a user switch clears the effective set of a thread that
/// did not ask to keep it), and the rest only after the switch: dropping everything at once
/// would break it, since glibc changes ids in every thread of the process (its setxid
/// broadcast) and aborts the process when one thread, with no CAP_SETUID left, fails while
/// the others succeeded.
pub fn spawn_unprivileged<F>(name: &str, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce(std::io::Result<()>) + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let bounding = drop_bounding(&caps::CapsHashSet::new());
            let _ = tx.send(());
            let mut s = SETTLED.lock().unwrap_or_else(|e| e.into_inner());
            while !*s {
                s = SETTLED_NOW.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            drop(s);
            f(bounding.and_then(|()| keep_only(&[])))
        })?;
    // The thread has dropped its bounding set (or is gone) once this returns.
    let _ = rx.recv();
    Ok(handle)
}

/// Drops every capability but `keep` from the calling thread's bounding set, when it may
/// (changing it needs CAP_SETPCAP in the effective set).
fn drop_bounding(keep: &caps::CapsHashSet) -> std::io::Result<()> {
    if caps::has_cap(None, caps::CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for c in caps::all() {
            if !keep.contains(&c) && caps::has_cap(None, caps::CapSet::Bounding, c).unwrap_or(false)
            {
                caps::drop(None, caps::CapSet::Bounding, c).map_err(|e| {
                    std::io::Error::other(format!("dropping capabilities (bounding): {e}"))
                })?;
            }
        }
    }
    Ok(())
}

/// A user a daemon runs as once started (`user = "name"`): its uid and primary group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The name as configured.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

/// Looks `name` up in the user database (getpwnam_r: /etc/passwd and whatever NSS adds).
/// `Ok(None)`: no such user.
pub fn lookup_user(name: &str) -> std::io::Result<Option<RunAs>> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| std::io::Error::other("a user name cannot contain a NUL byte"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        let mut pw = std::mem::MaybeUninit::<libc::passwd>::uninit();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: the name is NUL-terminated, `pw` and
        // `buf` are writable for their sizes, `out` receives a pointer into them or null.
        let r = unsafe {
            libc::getpwnam_r(
                c.as_ptr(),
                pw.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut out,
            )
        };
        if r == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if r != 0 {
            return Err(std::io::Error::from_raw_os_error(r));
        }
        if out.is_null() {
            return Ok(None);
        }
        // SAFETY: filled by the successful call above (`out` points to it).
        let pw = unsafe { pw.assume_init() };
        return Ok(Some(RunAs {
            name: name.to_owned(),
            uid: pw.pw_uid,
            gid: pw.pw_gid,
        }));
    }
}

/// Switches every thread of the process to `user` (supplementary groups: its primary group
/// only), keeping the calling thread's permitted capabilities across the switch
/// (PR_SET_KEEPCAPS, capabilities(7) "Effect of user ID changes on capabilities") and
/// raising its effective set to them again: [`keep_only`] then narrows them. The C
/// library's set*id wrappers change every thread's credentials, so no thread started before
/// stays root; those threads lose their capabilities (PR_SET_KEEPCAPS is per thread), which
/// suits the ones that run now (they keep none).
pub fn switch_user(user: &RunAs) -> std::io::Result<()> {
    let last = std::io::Error::last_os_error;
    // SAFETY: plain system calls with valid arguments; `groups` outlives setgroups.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::other(format!(
                "PR_SET_KEEPCAPS: {}",
                last()
            )));
        }
        let groups = [user.gid];
        if libc::setgroups(1, groups.as_ptr()) != 0 {
            return Err(std::io::Error::other(format!("setgroups: {}", last())));
        }
        if libc::setresgid(user.gid, user.gid, user.gid) != 0 {
            return Err(std::io::Error::other(format!("setresgid: {}", last())));
        }
        if libc::setresuid(user.uid, user.uid, user.uid) != 0 {
            return Err(std::io::Error::other(format!("setresuid: {}", last())));
        }
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
    }
    // The uid change cleared the effective set; the permitted one is intact.
    let err = |e: caps::errors::CapsError| std::io::Error::other(format!("capabilities: {e}"));
    let have = caps::read(None, caps::CapSet::Permitted).map_err(err)?;
    caps::set(None, caps::CapSet::Effective, &have).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_users() {
        let root = lookup_user("root").unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(lookup_user("no-such-user-m6t").unwrap(), None);
        assert!(lookup_user("a\0b").is_err());
    }

    #[test]
    fn parses_capeff() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000001000\n";
        assert_eq!(effective_caps(s), Some(0x1000));
        assert_eq!(effective_caps("nothing"), None);
    }
}
