//! `notify::ready` / `stopping` through `$NOTIFY_SOCKET`, as systemd sets it. Alone in its
//! own test binary, with one test function: it changes the process environment, which is
//! only sound while no other thread reads it.

use m6t_linux::notify;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

fn receive(s: &UnixDatagram) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    let n = s.recv(&mut buf).expect("a notify datagram");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_and_stopping_reach_notify_socket() {
    // Unset: nothing is sent and nothing fails (a daemon started by hand).
    std::env::remove_var(notify::NOTIFY_SOCKET);
    assert!(!notify::notify("READY=1").unwrap());
    std::env::set_var(notify::NOTIFY_SOCKET, "");
    assert!(!notify::notify("READY=1").unwrap());

    // A path, as systemd < 254 and most service managers give it.
    let dir = std::env::temp_dir().join(format!("m6t-notify-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    std::env::set_var(notify::NOTIFY_SOCKET, &path);
    notify::ready();
    assert_eq!(receive(&sock), "READY=1");
    notify::stopping();
    assert_eq!(receive(&sock), "STOPPING=1");
    std::fs::remove_dir_all(&dir).unwrap();

    // An abstract name, written with '@'.
    let name = format!("m6t-notify-env-{}", std::process::id());
    let sock =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    std::env::set_var(notify::NOTIFY_SOCKET, format!("@{name}"));
    assert!(notify::notify("READY=1").unwrap());
    assert_eq!(receive(&sock), "READY=1");
    std::env::remove_var(notify::NOTIFY_SOCKET);
}
