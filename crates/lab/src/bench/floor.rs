//! The syscall floor: the least a userspace gateway must do per packet — recvmmsg from the
//! same kind of UDP socket, one write to the same kind of TUN — with no protocol work. The
//! gateway's forwarding rate is reported in proportion to this loop's rate.

use m6t_linux::batch::RecvBatch;
use m6t_linux::runtime::{Runtime, Shutdown};
use m6t_linux::{tun::Tun, udp};
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The floor's one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Socket;

/// Forwards UDP payloads from `listen:port` to TUN `tun` for `secs` after the first
/// packet; prints `{"floor_pps": …}`.
pub fn run(listen: Ipv4Addr, port: u16, tun: &str, secs: f64) -> Result<(), String> {
    let t = Tun::open(tun, 1472, false).map_err(|e| format!("TUN {tun}: {e}"))?;
    let s = udp::listen(listen, port).map_err(|e| format!("UDP {port}: {e}"))?;
    let mut rx = RecvBatch::new(32);
    let mut tx = t.writer();
    let stop = Shutdown::install().map_err(|e| format!("signal handlers: {e}"))?;
    let mut rt = Runtime::new(&stop).map_err(|e| format!("epoll: {e}"))?;
    rt.add(&s, Socket).map_err(|e| format!("epoll: {e}"))?;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut count = 0u64;
    let limit = Duration::from_secs_f64(secs);
    let deadline = Instant::now() + limit + Duration::from_secs(30);
    while Instant::now() < deadline && !rt.stopping() {
        if first.is_some_and(|f| f.elapsed() >= limit) {
            break;
        }
        rt.wait(Some(Instant::now() + Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        loop {
            match rx.recv(&s) {
                Ok(n) => {
                    for k in 0..n {
                        tx.push(rx.get(k).0);
                        tx.flush();
                    }
                    count += n as u64;
                    last = Instant::now();
                    first.get_or_insert(last);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
    }
    let span = first.map(|f| (last - f).as_secs_f64()).unwrap_or(0.0);
    let pps = if span > 0.0 { count as f64 / span } else { 0.0 };
    println!("{{\"floor_pps\":{pps:.0},\"packets\":{count},\"secs\":{span:.3}}}");
    Ok(())
}
