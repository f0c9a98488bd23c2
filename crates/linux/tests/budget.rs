//! The per-source budget (an eBPF socket filter) on real sockets over loopback: a source
//! over its budget is cut to about the burst, every datagram of a GSO packet counts,
//! another source keeps its own budget, and an active state's sender (address, port and
//! the IPv6 source inside, or for the home agent the sender alone) is not budgeted at all. Needs root (CAP_BPF), like the daemons.

use m6t_linux::budget::{Exempt, SourceBudget};
use std::net::UdpSocket;
use std::time::Duration;

fn receiver(budget: &SourceBudget) -> UdpSocket {
    let r = UdpSocket::bind("127.0.0.1:0").unwrap();
    r.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    budget.attach(&r).unwrap();
    r
}

fn drain(r: &UdpSocket) -> u64 {
    let mut b = [0u8; 65536];
    let mut n = 0;
    while r.recv(&mut b).is_ok() {
        n += 1;
    }
    n
}

#[test]
fn a_source_over_budget_is_cut_to_its_burst_and_drops_are_counted() {
    // 10 datagrams/s, 20 at once: 200 sent at once, about 20 pass.
    let budget = SourceBudget::new(10, 20, 16, Exempt::SenderAndInner6).unwrap();
    let r = receiver(&budget);
    let to = r.local_addr().unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..200 {
        s.send_to(b"m6t budget test", to).unwrap();
    }
    let got = drain(&r);
    assert!((20..=22).contains(&got), "{got} passed");
    assert_eq!(budget.dropped().unwrap(), 200 - got);
    // Another source address (127.0.0.2) has a budget of its own.
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    for _ in 0..5 {
        other.send_to(b"m6t budget test", to).unwrap();
    }
    assert_eq!(drain(&r), 5);
    // The first source gets more as time passes (10/s): about 10 a second later.
    let t = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    for _ in 0..40 {
        s.send_to(b"m6t budget test", to).unwrap();
    }
    let secs = t.elapsed().as_secs_f64() + 0.4; // the drain before the sleep
    let later = drain(&r);
    assert!(
        later >= 8 && later as f64 <= secs * 10.0 + 2.0,
        "{later} passed after {secs:.2} s"
    );
}

#[test]
fn every_datagram_of_a_gso_packet_counts() {
    const UDP_SEGMENT: libc::c_int = 103;
    const UDP_GRO: libc::c_int = 104;
    use std::os::fd::AsRawFd;
    let set = |fd: libc::c_int, opt: libc::c_int, v: libc::c_int| {
        // SAFETY: setsockopt with a pointer to an int of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_UDP,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    };
    // 30 at once: one GSO packet of 40 segments is over the budget as a whole.
    let budget = SourceBudget::new(10, 30, 16, Exempt::SenderAndInner6).unwrap();
    let r = receiver(&budget);
    set(r.as_raw_fd(), UDP_GRO, 1);
    let to = r.local_addr().unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    set(s.as_raw_fd(), UDP_SEGMENT, 100);
    s.send_to(&[0x60u8; 4000], to).unwrap();
    assert_eq!(
        drain(&r),
        0,
        "a 40-datagram packet passed a 30-datagram budget"
    );
    assert_eq!(budget.dropped().unwrap(), 40);
    // 20 segments fit.
    s.send_to(&[0x60u8; 2000], to).unwrap();
    assert_eq!(drain(&r), 1);
    assert_eq!(budget.dropped().unwrap(), 40);
}

/// 40 bytes of IPv6 header with source `src`, then a payload.
fn ipv6_from(src: std::net::Ipv6Addr) -> Vec<u8> {
    let mut p = vec![0u8; 60];
    p[0] = 0x60;
    p[5] = 20;
    p[6] = 59;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p
}

#[test]
fn an_active_states_sender_is_not_budgeted_and_only_it() {
    let budget = SourceBudget::new(10, 5, 16, Exempt::SenderAndInner6).unwrap();
    let r = receiver(&budget);
    let to = r.local_addr().unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let std::net::SocketAddr::V4(me) = s.local_addr().unwrap() else {
        unreachable!()
    };
    let mine: std::net::Ipv6Addr = "fd00:6d36:7400:1:1:2:3:4".parse().unwrap();
    let other: std::net::Ipv6Addr = "fd00:6d36:7400:1:1:2:3:5".parse().unwrap();
    budget.add_peer(me, mine).unwrap();
    for _ in 0..200 {
        s.send_to(&ipv6_from(mine), to).unwrap();
    }
    assert_eq!(drain(&r), 200, "the state's own datagrams are all read");
    // The same sender with another IPv6 source (a spoofed or new address), and a short
    // datagram: budgeted (5 at once).
    for _ in 0..50 {
        s.send_to(&ipv6_from(other), to).unwrap();
        s.send_to(b"short", to).unwrap();
    }
    let got = drain(&r);
    assert!((5..=7).contains(&got), "{got} passed");
    // Another port of the same address with the state's IPv6 source: budgeted too.
    let s2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..20 {
        s2.send_to(&ipv6_from(mine), to).unwrap();
    }
    assert!(drain(&r) <= 2);
    // Once the state is gone, its sender is budgeted like anyone.
    budget.remove_peer(me, mine).unwrap();
    budget.remove_peer(me, mine).unwrap();
    for _ in 0..20 {
        s.send_to(&ipv6_from(mine), to).unwrap();
    }
    assert!(drain(&r) <= 2);
}

#[test]
fn by_sender_alone_any_payload_of_the_sender_passes_and_another_port_is_budgeted() {
    let budget = SourceBudget::new(10, 5, 16, Exempt::Sender).unwrap();
    let r = receiver(&budget);
    let to = r.local_addr().unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let std::net::SocketAddr::V4(me) = s.local_addr().unwrap() else {
        unreachable!()
    };
    budget.add_sender(me).unwrap();
    // ESP, a BU, anything: short or long, the exempt sender's datagrams are all read.
    for i in 0..200 {
        s.send_to(&vec![0x55u8; 1 + i % 90], to).unwrap();
    }
    assert_eq!(drain(&r), 200);
    // Another port of the same address: budgeted (5 at once).
    let s2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..50 {
        s2.send_to(b"not a binding's", to).unwrap();
    }
    let got = drain(&r);
    assert!((5..=7).contains(&got), "{got} passed");
    // Once the binding is gone, its sender is budgeted like anyone.
    budget.remove_sender(me).unwrap();
    budget.remove_sender(me).unwrap();
    for _ in 0..50 {
        s.send_to(b"a binding's no more", to).unwrap();
    }
    assert!(drain(&r) <= 7);
    assert!(budget.dropped().unwrap() >= 80);
}
