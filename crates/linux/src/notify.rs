//! Readiness and stop notices to the service manager (the `sd_notify` protocol of
//! systemd: one datagram of `KEY=VALUE` lines to the Unix socket named by `$NOTIFY_SOCKET`).
//!
//! The units in `packaging/systemd/` are `Type=notify`: systemd holds back units ordered after
//! a daemon, and `systemctl start` returns, only once the daemon said `READY=1`, which each
//! daemon sends when its tunnel interface and sockets are up. Without the variable (started
//! by hand, by the lab or the tests) every call does nothing. The protocol is a single
//! `sendto`, so it is written here rather than taken from a crate.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=VALUE` assignments, e.g. `READY=1`) to the socket
/// named `socket`: a path, or an abstract socket name written with a leading `@`.
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let bytes = socket.as_bytes();
    let addr = match bytes.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])?
        }
        Some(b'/') => SocketAddr::from_pathname(socket)?,
        // systemd itself only hands out these two forms to Unix-socket services (vsock
        // addresses exist for virtual machines, not for us).
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{NOTIFY_SOCKET}={}: not a path or @name",
                    socket.to_string_lossy()
                ),
            ))
        }
    };
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short notify datagram",
        ));
    }
    Ok(())
}

/// Sends `state` to `$NOTIFY_SOCKET`. `Ok(false)` when the variable is unset (not started
/// by a service manager), `Ok(true)` once sent.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(s) if !s.is_empty() => notify_to(&s, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` and logs a failure instead of returning it: a daemon that could not tell
/// systemd it is ready is still serving (systemd will time the start out and say so).
fn notify_logged(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!("telling the service manager {state:?}: {e}");
    }
}

/// Tells the service manager the daemon is up (`READY=1`): call once the tunnel interface
/// and every socket are open.
pub fn ready() {
    notify_logged("READY=1");
}

/// Tells the service manager the daemon is stopping (`STOPPING=1`): call when the event
/// loop has ended, before the cleanup (routes, addresses, files), which may take a moment.
pub fn stopping() {
    notify_logged("STOPPING=1");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(s: &UnixDatagram) -> String {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = s.recv(&mut buf).expect("a notify datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn path_socket_receives_the_state() {
        let dir = std::env::temp_dir().join(format!("m6t-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(receive(&listener), "READY=1");
        notify_to(path.as_os_str(), "STOPPING=1\nSTATUS=bye").unwrap();
        assert_eq!(receive(&listener), "STOPPING=1\nSTATUS=bye");
        drop(listener);
        // Nobody listening any more: the error comes back instead of being lost.
        assert!(notify_to(path.as_os_str(), "READY=1").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn abstract_socket_receives_the_state() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("m6t-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        assert_eq!(receive(&listener), "READY=1");
    }

    #[test]
    fn other_forms_are_refused() {
        for bad in ["", "relative/path", "vsock:2:1234"] {
            let e = notify_to(OsStr::new(bad), "READY=1").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
    }
}
