//! Unit tests of the client machine in virtual time: attachment, keep-alives (section 2.3),
//! echo watching, dead-path recovery, port fallback (section 2.1), conflicts (section 2.5).

mod common;
use common::{pkt_a, swap};
use m6t_proto::m6t::client::*;
use m6t_wire::keepalive;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

const HA: &str = "2001:db8:1::1";

fn client(ports: Vec<u16>) -> (Client, Instant) {
    let cfg = ClientConfig::new("fd00:1:2:3:4::/80".parse().unwrap(), ports);
    (Client::new(cfg, [7; 32]), Instant::now())
}

fn ms(t0: Instant, v: u64) -> Instant {
    t0 + Duration::from_millis(v)
}

fn ha() -> Ipv6Addr {
    HA.parse().unwrap()
}

const V4A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const V4B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);

/// Brings the client up and confirms its path with one round trip.
fn up_confirmed(c: &mut Client, t0: Instant) -> Ipv6Addr {
    c.handle_attachment(t0, Some(V4A));
    let ch = c.poll_change().unwrap();
    let addr = ch.new.unwrap().0;
    let p = pkt_a(addr, ha(), 80);
    let mut s = [0u8; 1280];
    assert_eq!(c.handle_from_tun(t0, &p, &mut s), FromTun::Send);
    assert_eq!(c.handle_from_gateway(t0, &swap(&p)), FromGateway::ToTun);
    addr
}

#[test]
fn attachment_draws_an_address_in_the_prefix() {
    let (mut c, t0) = client(vec![3544, 53]);
    assert!(c.poll_timeout().is_none(), "down: no timer");
    c.handle_attachment(t0, Some(V4A));
    let ch = c.poll_change().unwrap();
    assert_eq!(ch.old, None);
    assert_eq!(ch.reason, ChangeReason::Attach);
    let (addr, port) = ch.new.unwrap();
    assert_eq!(port, 3544);
    assert!(c.config().prefix.contains(addr));
    // Same attachment again: nothing.
    c.handle_attachment(t0, Some(V4A));
    assert!(c.poll_change().is_none());
    // New IPv4 address: new random value, old one to remove.
    c.handle_attachment(t0, Some(V4B));
    let ch2 = c.poll_change().unwrap();
    assert_eq!(ch2.old, Some(addr));
    let (addr2, _) = ch2.new.unwrap();
    assert_ne!(addr2, addr);
    assert!(c.config().prefix.contains(addr2));
    // Route change on the same address: a new address too.
    c.handle_route_change(t0, Some(V4B));
    let ch3 = c.poll_change().unwrap();
    assert_eq!(ch3.reason, ChangeReason::RouteChange);
    assert_ne!(ch3.new.unwrap().0, addr2);
    // Loss of connectivity.
    c.handle_attachment(t0, None);
    let ch4 = c.poll_change().unwrap();
    assert_eq!(ch4.new, None);
    assert_eq!(ch4.reason, ChangeReason::Detach);
    assert!(c.address().is_none());
}

#[test]
fn tun_and_gateway_checks() {
    let (mut c, t0) = client(vec![3544]);
    let mut s = [0u8; 1280];
    let other: Ipv6Addr = "fd00:1:2:3:4::99".parse().unwrap();
    assert_eq!(
        c.handle_from_tun(t0, &pkt_a(other, ha(), 60), &mut s),
        FromTun::Drop(ClientCounter::TunnelDown)
    );
    let addr = up_confirmed(&mut c, t0);
    assert_eq!(
        c.handle_from_tun(t0, &pkt_a(other, ha(), 60), &mut s),
        FromTun::Drop(ClientCounter::WrongSource)
    );
    assert_eq!(
        c.handle_from_tun(t0, b"junk", &mut s),
        FromTun::Drop(ClientCounter::MalformedFromTun)
    );
    assert_eq!(
        c.handle_from_gateway(t0, &pkt_a(ha(), other, 60)),
        FromGateway::Drop(ClientCounter::WrongDestination)
    );
    assert_eq!(
        c.handle_from_gateway(t0, &[0x60; 39]),
        FromGateway::Drop(ClientCounter::MalformedFromGateway)
    );
    assert_eq!(
        c.handle_from_tun(t0, &pkt_a(addr, ha(), 1472), &mut s),
        FromTun::Send
    );
    match c.handle_from_tun(t0, &pkt_a(addr, ha(), 1473), &mut s) {
        FromTun::Reply(n) => {
            let e = m6t_wire::Ipv6Packet::new_checked(&s[..n]).unwrap();
            assert_eq!(e.payload()[0], 2);
            assert_eq!(e.dst_addr(), addr);
        }
        other => panic!("expected PTB, got {other:?}"),
    }
}

#[test]
fn keepalive_after_interval_without_sending() {
    let (mut c, t0) = client(vec![3544]);
    let addr = up_confirmed(&mut c, t0);
    assert_eq!(c.poll_timeout(), Some(ms(t0, 30_000)));
    c.handle_timeout(ms(t0, 29_999));
    assert!(c.poll_keepalive().is_none());
    c.handle_timeout(ms(t0, 30_000));
    let ka = c.poll_keepalive().expect("keep-alive due");
    assert_eq!(ka, keepalive::emit(addr, keepalive::KEEPALIVE_PEER));
    assert!(c.poll_keepalive().is_none());
    // Echo arrives: next keep-alive 30 s after this one.
    let echo = keepalive::emit(keepalive::KEEPALIVE_PEER, addr);
    assert_eq!(
        c.handle_from_gateway(ms(t0, 30_010), &echo),
        FromGateway::Echo
    );
    assert_eq!(c.poll_timeout(), Some(ms(t0, 60_000)));
    // Sending data postpones the keep-alive.
    let mut s = [0u8; 1280];
    let _ = c.handle_from_tun(ms(t0, 50_000), &pkt_a(addr, ha(), 60), &mut s);
    let _ = c.handle_from_gateway(ms(t0, 50_005), &pkt_a(ha(), addr, 60));
    c.handle_timeout(ms(t0, 60_000));
    assert!(c.poll_keepalive().is_none());
    assert_eq!(c.poll_timeout(), Some(ms(t0, 80_000)));
}

#[test]
fn dead_path_draws_a_new_address_by_itself() {
    let (mut c, t0) = client(vec![3544]);
    let addr = up_confirmed(&mut c, t0);
    let mut now = 30_000;
    c.handle_timeout(ms(t0, now));
    assert!(c.poll_keepalive().is_some());
    // No echo: two more probes an echo_timeout apart (three in all), then dead.
    for _ in 0..2 {
        let t = c.poll_timeout().unwrap();
        assert!(t > ms(t0, now));
        now = t.duration_since(t0).as_millis() as u64;
        c.handle_timeout(t);
        if let Some(ch) = c.poll_change() {
            assert_eq!(ch.reason, ChangeReason::PathDead);
            assert_eq!(ch.old, Some(addr));
            panic!("declared dead too early");
        }
        assert!(c.poll_keepalive().is_some());
    }
    let t = c.poll_timeout().unwrap();
    c.handle_timeout(t);
    let ch = c.poll_change().expect("path declared dead");
    assert_eq!(ch.reason, ChangeReason::PathDead);
    assert_eq!(ch.old, Some(addr));
    assert_ne!(ch.new.unwrap().0, addr);
    assert_eq!(t, ms(t0, 30_000 + 3 * 1000));
    assert_eq!(c.counters().get(ClientCounter::PathsDead), 1);
}

#[test]
fn unanswered_data_on_a_confirmed_path_is_noticed_in_seconds() {
    let (mut c, t0) = client(vec![3544]);
    let addr = up_confirmed(&mut c, t0);
    let mut s = [0u8; 1280];
    let start = 5_000;
    let _ = c.handle_from_tun(ms(t0, start), &pkt_a(addr, ha(), 60), &mut s);
    let mut changed_at = None;
    for step in 0..200 {
        let now = ms(t0, start + step * 100);
        c.handle_timeout(now);
        let _ = c.poll_keepalive();
        if c.poll_change().is_some() {
            changed_at = Some(step * 100);
            break;
        }
        if step % 5 == 0 {
            let _ = c.handle_from_tun(now, &pkt_a(addr, ha(), 60), &mut s);
        }
    }
    // echo_timeout before the first probe, then 3 probes an echo_timeout apart.
    assert_eq!(changed_at, Some(4_000));
}

#[test]
fn unconfirmed_address_is_not_rotated_by_keepalives() {
    let (mut c, t0) = client(vec![3544]);
    c.handle_attachment(t0, Some(V4A));
    let addr = c.poll_change().unwrap().new.unwrap().0;
    for k in 1..=20 {
        c.handle_timeout(ms(t0, k * 30_000));
        assert!(c.poll_keepalive().is_some(), "NAT keep-alive {k}");
        assert!(c.poll_change().is_none());
    }
    assert_eq!(c.address(), Some(addr));
}

#[test]
fn falls_back_to_the_next_port_when_the_gateway_does_not_answer() {
    let (mut c, t0) = client(vec![3544, 53, 4500]);
    c.handle_attachment(t0, Some(V4A));
    let (addr, port) = c.poll_change().unwrap().new.unwrap();
    assert_eq!(port, 3544);
    let mut s = [0u8; 1280];
    let _ = c.handle_from_tun(ms(t0, 100), &pkt_a(addr, ha(), 60), &mut s);
    assert_eq!(c.poll_timeout(), Some(ms(t0, 3_100)));
    c.handle_timeout(ms(t0, 3_100));
    let ch = c.poll_change().unwrap();
    assert_eq!(ch.reason, ChangeReason::PortFallback);
    let (addr2, port2) = ch.new.unwrap();
    assert_eq!(port2, 53);
    assert_ne!(addr2, addr);
    // ICMP port unreachable: next port at once, and round to the first after the last.
    c.handle_port_unreachable(ms(t0, 3_200));
    assert_eq!(c.poll_change().unwrap().new.unwrap().1, 4500);
    c.handle_port_unreachable(ms(t0, 3_300));
    assert_eq!(c.poll_change().unwrap().new.unwrap().1, 3544);
}

#[test]
fn conflict_draws_again_on_the_same_port() {
    let (mut c, t0) = client(vec![3544, 53]);
    c.handle_attachment(t0, Some(V4A));
    let (a1, _) = c.poll_change().unwrap().new.unwrap();
    c.handle_address_conflict(t0);
    let ch = c.poll_change().unwrap();
    assert_eq!(ch.reason, ChangeReason::Conflict);
    assert_eq!(ch.old, Some(a1));
    assert_ne!(ch.new.unwrap().0, a1);
    assert_eq!(ch.new.unwrap().1, 3544);
}

#[test]
fn random_values_are_48_bits_and_vary() {
    let (mut c, t0) = client(vec![3544]);
    let mut seen = std::collections::HashSet::new();
    for i in 0..200u8 {
        c.handle_attachment(t0, Some(Ipv4Addr::new(192, 0, 2, i)));
        let a = c.poll_change().unwrap().new.unwrap().0;
        assert!(c.config().prefix.contains(a));
        assert!(seen.insert(a));
    }
}
