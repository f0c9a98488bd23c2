//! Unit tests of the gateway machine in virtual time: every state transition, expiry, the
//! never-update rule, rate limits and caps, keep-alive rules (draft sections 2.3, 2.4, 6.1.3).

mod common;
use common::{pkt, swap};
use m6t_proto::m6t::gateway::*;
use m6t_wire::keepalive;
use proptest::prelude::*;
use std::net::{Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

const HA: &str = "2001:db8:1::1";
const MN: &str = "fd00:1:2:3:4::5";

fn cfg() -> GatewayConfig {
    GatewayConfig {
        ha_addresses: vec![HA.parse().unwrap()],
        mn_prefixes: vec!["fd00:1::/32".parse().unwrap()],
        icmp_source: "2001:db8:1::2".parse().unwrap(),
        ..GatewayConfig::default()
    }
}

fn peer(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

struct T {
    gw: Gateway,
    t0: Instant,
    scratch: Vec<u8>,
}

impl T {
    fn new(c: GatewayConfig) -> Self {
        T {
            gw: Gateway::new(c, [3; 32]),
            t0: Instant::now(),
            scratch: vec![0; 1280],
        }
    }
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }
    fn mn(&mut self, ms: u64, from: &str, p: &[u8]) -> FromMn {
        let now = self.at(ms);
        self.gw
            .handle_from_mn(now, 3544, peer(from), p, &mut self.scratch)
    }
    fn home(&mut self, ms: u64, p: &[u8]) -> FromHome {
        let now = self.at(ms);
        self.gw.handle_from_home(now, p, &mut self.scratch)
    }
    fn tick(&mut self, ms: u64) -> usize {
        self.gw.handle_timeout(self.at(ms))
    }
    fn kind(&self, ms: u64, addr: &str) -> Option<StateKind> {
        self.gw.state(self.at(ms), a(addr)).map(|s| s.kind)
    }
}

#[test]
fn first_packet_creates_temporary_home_reply_activates() {
    let mut t = T::new(cfg());
    let p = pkt(MN, HA, 100);
    assert_eq!(t.mn(0, "198.51.100.7:40000", &p), FromMn::ToHome);
    assert_eq!(t.kind(0, MN), Some(StateKind::Temporary));
    let r = t.home(50, &swap(&p));
    assert_eq!(
        r,
        FromHome::ToMn {
            peer: peer("198.51.100.7:40000"),
            local_port: 3544
        }
    );
    assert_eq!(t.kind(50, MN), Some(StateKind::Active));
    assert_eq!(t.gw.counters().get(GatewayCounter::StatesCreated), 1);
    assert_eq!(t.gw.counters().get(GatewayCounter::StatesActivated), 1);
    let ev: Vec<_> = std::iter::from_fn(|| t.gw.poll_event()).collect();
    assert_eq!(ev.len(), 2);
}

#[test]
fn temporary_state_expires_after_its_lifetime_even_with_mn_traffic() {
    let mut t = T::new(cfg());
    let p = pkt(MN, HA, 100);
    let _ = t.mn(0, "198.51.100.7:40000", &p);
    // MN traffic does not extend a temporary state.
    let _ = t.mn(1500, "198.51.100.7:40000", &p);
    assert_eq!(t.tick(1999), 0);
    assert!(t.kind(1999, MN).is_some());
    assert_eq!(t.gw.poll_timeout(), Some(t.at(2000)));
    assert_eq!(t.tick(2000), 1);
    assert!(t.kind(2000, MN).is_none());
    // A temporary state going does not touch the active count.
    assert_eq!(t.gw.active_len(), 0);
    assert_eq!(
        t.home(2001, &swap(&p)),
        FromHome::Drop(GatewayCounter::NoStateForHome)
    );
}

#[test]
fn active_state_lifetime_is_refreshed_by_traffic_either_way() {
    let mut c = cfg();
    c.active_lifetime = Duration::from_secs(10);
    let mut t = T::new(c);
    let p = pkt(MN, HA, 100);
    let _ = t.mn(0, "198.51.100.7:40000", &p);
    assert_eq!(t.gw.active_len(), 0);
    let _ = t.home(10, &swap(&p));
    assert_eq!(t.gw.active_len(), 1);
    let _ = t.home(20, &swap(&p)); // an active state is counted once
    assert_eq!(t.gw.active_len(), 1);
    let _ = t.mn(8_000, "198.51.100.7:40000", &p); // refresh from the MN side
    t.tick(12_000);
    assert_eq!(t.kind(12_000, MN), Some(StateKind::Active));
    let _ = t.home(17_000, &swap(&p)); // refresh from the home side
    t.tick(26_999);
    assert!(t.kind(26_999, MN).is_some());
    t.tick(27_000);
    assert!(t.kind(27_000, MN).is_none());
    assert_eq!(t.gw.counters().get(GatewayCounter::StatesExpired), 1);
    assert!(t.gw.is_empty());
    assert_eq!(t.gw.active_len(), 0);
}

#[test]
fn address_fields_are_never_updated() {
    let mut t = T::new(cfg());
    let p = pkt(MN, HA, 100);
    let _ = t.mn(0, "198.51.100.7:40000", &p);
    let _ = t.home(1, &swap(&p));
    let before = t.gw.state(t.at(1), a(MN)).unwrap();
    // Same IPv6 source from another port, then from another address.
    assert_eq!(
        t.mn(2, "198.51.100.7:40001", &p),
        FromMn::Drop(GatewayCounter::AddressMismatch)
    );
    assert_eq!(
        t.mn(3, "203.0.113.9:40000", &p),
        FromMn::Drop(GatewayCounter::AddressMismatch)
    );
    // Same peer, other gateway port.
    let now = t.at(4);
    let r =
        t.gw.handle_from_mn(now, 53, peer("198.51.100.7:40000"), &p, &mut t.scratch);
    assert_eq!(r, FromMn::Drop(GatewayCounter::AddressMismatch));
    let after = t.gw.state(t.at(1), a(MN)).unwrap();
    assert_eq!(before, after, "a mismatching packet changed the state");
    assert_eq!(
        t.home(5, &swap(&p)),
        FromHome::ToMn {
            peer: peer("198.51.100.7:40000"),
            local_port: 3544
        }
    );
}

#[test]
fn sanity_checks_before_state_creation() {
    let mut t = T::new(cfg());
    let from = "198.51.100.7:40000";
    assert_eq!(
        t.mn(0, from, &pkt(MN, "2001:db8:1::99", 60)),
        FromMn::Drop(GatewayCounter::DestinationNotAllowed)
    );
    assert_eq!(
        t.mn(0, from, &pkt("fd99::1", HA, 60)),
        FromMn::Drop(GatewayCounter::SourceOutsidePrefix)
    );
    assert_eq!(
        t.mn(0, from, &pkt("fe80::1", HA, 60)),
        FromMn::Drop(GatewayCounter::BadSource)
    );
    assert_eq!(
        t.mn(0, from, &pkt("ff02::1", HA, 60)),
        FromMn::Drop(GatewayCounter::BadSource)
    );
    assert_eq!(
        t.mn(0, from, &pkt("::", HA, 60)),
        FromMn::Drop(GatewayCounter::BadSource)
    );
    assert_eq!(
        t.mn(0, from, b"hello"),
        FromMn::Drop(GatewayCounter::MalformedFromMn)
    );
    let mut trailing = pkt(MN, HA, 60);
    trailing.push(0);
    assert_eq!(
        t.mn(0, from, &trailing),
        FromMn::Drop(GatewayCounter::MalformedFromMn)
    );
    assert!(t.gw.is_empty());
    assert_eq!(t.gw.tracked_sources(), 0);
}

#[test]
fn allowed_destinations_widen_the_check() {
    let mut c = cfg();
    c.allowed_destinations = vec!["2001:db8:5::/48".parse().unwrap()];
    let mut t = T::new(c);
    assert_eq!(
        t.mn(0, "198.51.100.7:1", &pkt(MN, "2001:db8:5::9", 60)),
        FromMn::ToHome
    );
    assert_eq!(
        t.mn(0, "198.51.100.7:1", &pkt(MN, "2001:db8:6::9", 60)),
        FromMn::Drop(GatewayCounter::DestinationNotAllowed)
    );
}

#[test]
fn creation_is_rate_limited_per_ipv4_address_not_port() {
    let mut c = cfg();
    c.new_state_rate = 1;
    c.new_state_burst = 3;
    let mut t = T::new(c);
    for i in 0..3 {
        let src = format!("fd00:1::{}", i + 1);
        assert_eq!(
            t.mn(0, &format!("198.51.100.7:{}", 1000 + i), &pkt(&src, HA, 60)),
            FromMn::ToHome
        );
    }
    assert_eq!(
        t.mn(0, "198.51.100.7:2000", &pkt("fd00:1::99", HA, 60)),
        FromMn::Drop(GatewayCounter::RateLimited)
    );
    // Another IPv4 address is not affected.
    assert_eq!(
        t.mn(0, "198.51.100.8:2000", &pkt("fd00:1::98", HA, 60)),
        FromMn::ToHome
    );
    // One token back after a second.
    assert_eq!(
        t.mn(1000, "198.51.100.7:2000", &pkt("fd00:1::99", HA, 60)),
        FromMn::ToHome
    );
    assert_eq!(
        t.mn(1000, "198.51.100.7:2001", &pkt("fd00:1::97", HA, 60)),
        FromMn::Drop(GatewayCounter::RateLimited)
    );
}

#[test]
fn per_source_and_global_caps() {
    let mut c = cfg();
    c.max_states_per_ipv4 = 2;
    c.max_states = 3;
    c.new_state_burst = 100;
    let mut t = T::new(c);
    assert_eq!(
        t.mn(0, "198.51.100.7:1", &pkt("fd00:1::1", HA, 60)),
        FromMn::ToHome
    );
    assert_eq!(
        t.mn(0, "198.51.100.7:2", &pkt("fd00:1::2", HA, 60)),
        FromMn::ToHome
    );
    assert_eq!(
        t.mn(0, "198.51.100.7:3", &pkt("fd00:1::3", HA, 60)),
        FromMn::Drop(GatewayCounter::PerSourceCap)
    );
    assert_eq!(
        t.mn(0, "198.51.100.8:3", &pkt("fd00:1::3", HA, 60)),
        FromMn::ToHome
    );
    assert_eq!(
        t.mn(0, "198.51.100.9:3", &pkt("fd00:1::4", HA, 60)),
        FromMn::Drop(GatewayCounter::TableFull)
    );
    // After expiry the cap frees up; the idle source is forgotten once its bucket is full.
    t.tick(2000);
    assert!(t.gw.is_empty());
    assert_eq!(
        t.mn(2001, "198.51.100.7:3", &pkt("fd00:1::3", HA, 60)),
        FromMn::ToHome
    );
    t.tick(4001);
    let far = 4001 + 60_000;
    t.tick(far);
    assert_eq!(t.gw.tracked_sources(), 0);
}

#[test]
fn keepalive_rules() {
    let mut t = T::new(cfg());
    let ka = keepalive::emit(a(MN), keepalive::KEEPALIVE_PEER);
    let from = "198.51.100.7:40000";
    assert_eq!(
        t.mn(0, from, &ka),
        FromMn::Drop(GatewayCounter::KeepaliveNoState)
    );
    assert!(t.gw.is_empty(), "a keep-alive must not create a state");
    let p = pkt(MN, HA, 100);
    let _ = t.mn(0, from, &p);
    assert_eq!(
        t.mn(1, from, &ka),
        FromMn::Drop(GatewayCounter::KeepaliveNotActive)
    );
    let _ = t.home(2, &swap(&p));
    assert_eq!(
        t.mn(3, "198.51.100.7:40001", &ka),
        FromMn::Drop(GatewayCounter::KeepaliveMismatch)
    );
    assert_eq!(
        t.mn(3, "198.51.100.9:40000", &ka),
        FromMn::Drop(GatewayCounter::KeepaliveMismatch)
    );
    match t.mn(4, from, &ka) {
        FromMn::Echo(e) => assert_eq!(e, keepalive::emit(keepalive::KEEPALIVE_PEER, a(MN))),
        other => panic!("expected an echo, got {other:?}"),
    }
    assert_eq!(
        t.gw.state(t.at(4), a(MN)).unwrap().idle_ms,
        0,
        "keep-alive refreshes"
    );
    assert_eq!(t.gw.counters().get(GatewayCounter::KeepalivesAnswered), 1);
}

#[test]
fn keepalives_keep_an_active_state_alive_for_hours() {
    let mut c = cfg();
    c.active_lifetime = Duration::from_secs(45);
    let mut t = T::new(c);
    let p = pkt(MN, HA, 100);
    let from = "198.51.100.7:40000";
    let _ = t.mn(0, from, &p);
    let _ = t.home(1, &swap(&p));
    let ka = keepalive::emit(a(MN), keepalive::KEEPALIVE_PEER);
    for k in 1..=240u64 {
        t.tick(k * 30_000 - 1);
        assert!(
            matches!(t.mn(k * 30_000, from, &ka), FromMn::Echo(_)),
            "keep-alive {k}"
        );
    }
    t.tick(240 * 30_000 + 45_000);
    assert!(t.gw.is_empty());
}

#[test]
fn packet_too_big_both_ways() {
    let mut t = T::new(cfg());
    let from = "198.51.100.7:40000";
    let ok = pkt(MN, HA, 1472);
    assert_eq!(t.mn(0, from, &ok), FromMn::ToHome);
    assert!(matches!(t.home(1, &swap(&ok)), FromHome::ToMn { .. }));
    let big = pkt(MN, HA, 1473);
    match t.mn(2, from, &big) {
        FromMn::Reply(n) => {
            let e = m6t_wire::Ipv6Packet::new_checked(&t.scratch[..n]).unwrap();
            assert_eq!(e.dst_addr(), a(MN));
            assert_eq!(e.payload()[0], 2);
            assert_eq!(&e.payload()[4..8], &1472u32.to_be_bytes());
            assert!(m6t_wire::icmpv6::checksum_ok(&e));
        }
        other => panic!("expected PTB, got {other:?}"),
    }
    match t.home(3, &swap(&big)) {
        FromHome::Reply(n) => {
            let e = m6t_wire::Ipv6Packet::new_checked(&t.scratch[..n]).unwrap();
            assert_eq!(e.dst_addr(), a(HA));
        }
        other => panic!("expected PTB, got {other:?}"),
    }
    assert_eq!(t.gw.counters().get(GatewayCounter::PacketTooBigSent), 2);
}

#[test]
fn home_side_checks() {
    let mut t = T::new(cfg());
    assert_eq!(
        t.home(0, &pkt(HA, MN, 80)),
        FromHome::Drop(GatewayCounter::NoStateForHome)
    );
    assert_eq!(
        t.home(0, &[0x60, 0, 0]),
        FromHome::Drop(GatewayCounter::MalformedFromHome)
    );
    assert_eq!(t.gw.counters().get(GatewayCounter::NoStateForHome), 1);
}

#[test]
fn mass_expiry_is_done_in_bounded_batches() {
    let mut c = cfg();
    c.max_states = 100_000;
    c.max_states_per_ipv4 = 100_000;
    c.new_state_burst = 100_000;
    let mut t = T::new(c);
    let n = 10_000u32;
    for i in 0..n {
        let src = format!("fd00:1::{:x}:{:x}", i >> 16, i & 0xffff);
        let r = t.mn(
            0,
            &format!("198.51.100.{}:{}", i % 200, 1024 + i / 200),
            &pkt(&src, HA, 60),
        );
        assert_eq!(r, FromMn::ToHome);
    }
    assert_eq!(t.gw.len(), n as usize);
    let mut passes = 0;
    let mut total = 0;
    while let Some(d) = t.gw.poll_timeout() {
        if d > t.at(2000) {
            break;
        }
        let removed = t.tick(2000);
        assert!(removed <= GC_BATCH);
        total += removed;
        passes += 1;
        if removed == 0 {
            break;
        }
    }
    assert_eq!(total, n as usize);
    assert!(passes >= (n as usize).div_ceil(GC_BATCH));
    assert!(t.gw.is_empty());
}

proptest! {
    /// Hostile bytes never panic and never create or change a state.
    #[test]
    fn garbage_changes_nothing(data in proptest::collection::vec(any::<u8>(), 0..120)) {
        let mut t = T::new(cfg());
        let p = pkt(MN, HA, 100);
        let _ = t.mn(0, "198.51.100.7:40000", &p);
        let _ = t.home(1, &swap(&p));
        let before = t.gw.states(t.at(1));
        let r = t.mn(2, "203.0.113.5:999", &data);
        prop_assert!(matches!(r, FromMn::Drop(_)) || matches!(r, FromMn::ToHome));
        if r == FromMn::ToHome {
            // Only a well-formed packet from the MN prefix to the HA may pass; it makes
            // its own state and never touches the existing one.
            prop_assert_eq!(t.gw.state(t.at(1), MN.parse().unwrap()), before.first().cloned());
        } else {
            prop_assert_eq!(t.gw.states(t.at(1)), before);
        }
        let _ = t.home(3, &data);
    }
}

#[test]
fn a_status_listing_can_be_capped_and_stays_sorted() {
    let mut t = T::new(cfg());
    for i in 0..10u16 {
        let src = format!("fd00:1:2:3:4::{:x}", 100 - i);
        let _ = t.mn(0, "198.51.100.7:40000", &pkt(&src, HA, 100));
    }
    assert_eq!(t.gw.states(t.at(1)).len(), 10);
    let some = t.gw.states_up_to(t.at(1), 4);
    assert_eq!(some.len(), 4);
    assert!(some.windows(2).all(|w| w[0].address < w[1].address));
    assert!(t.gw.states_up_to(t.at(1), 0).is_empty());
}

#[test]
fn prefetch_addresses_name_the_state_of_a_payload_and_nothing_for_garbage() {
    let mut t = T::new(cfg());
    let p = pkt(MN, HA, 100);
    assert!(t.gw.prefetch_bucket(&p[..20]).is_none());
    // No state yet: a bucket to hint, but no slot behind it.
    let (pos, b) = t.gw.prefetch_bucket(&p).unwrap();
    assert!(!b.is_null());
    assert!(t.gw.prefetch_slot(pos).is_null());
    let _ = t.mn(0, "198.51.100.7:40000", &p);
    let (pos, _) = t.gw.prefetch_bucket(&p).unwrap();
    assert!(!t.gw.prefetch_slot(pos).is_null());
    // Out-of-range positions are harmless.
    assert!(t.gw.prefetch_slot(usize::MAX).is_null());
}

/// The event queue is bounded: a driver that never polls loses the newest events, counted,
/// and the machine holds at most 4096 of them.
#[test]
fn unpolled_events_are_bounded_and_counted() {
    let mut c = cfg();
    c.new_state_rate = 1_000_000;
    c.new_state_burst = 1_000_000;
    c.max_states_per_ipv4 = 1_000_000;
    let mut t = T::new(c);
    for i in 0..5000u32 {
        let src = format!("fd00:1:2:3:4::{:x}:{:x}", i >> 16, i & 0xffff);
        assert_eq!(
            t.mn(0, "198.51.100.7:40000", &pkt(&src, HA, 60)),
            FromMn::ToHome
        );
    }
    assert_eq!(t.gw.counters().get(GatewayCounter::StatesCreated), 5000);
    assert_eq!(t.gw.counters().get(GatewayCounter::EventsLost), 5000 - 4096);
    let mut n = 0;
    while t.gw.poll_event().is_some() {
        n += 1;
    }
    assert_eq!(n, 4096);
}

/// The events of an active state carry its sender, which the driver's per-source budget
/// lets through while the state is active.
#[test]
fn activation_and_expiry_events_name_the_sender() {
    let mut t = T::new(cfg());
    let p = pkt(MN, HA, 100);
    assert_eq!(t.mn(0, "198.51.100.7:40000", &p), FromMn::ToHome);
    assert!(matches!(t.home(10, &swap(&p)), FromHome::ToMn { .. }));
    let mut got = Vec::new();
    while let Some(e) = t.gw.poll_event() {
        got.push(e);
    }
    assert!(got.contains(&GatewayEvent::Activated {
        address: a(MN),
        peer: peer("198.51.100.7:40000")
    }));
    t.tick(1_000_000);
    let mut expired = false;
    while let Some(e) = t.gw.poll_event() {
        if let GatewayEvent::Expired {
            address,
            peer: p,
            kind,
        } = e
        {
            assert_eq!(
                (address, p, kind),
                (a(MN), peer("198.51.100.7:40000"), StateKind::Active)
            );
            expired = true;
        }
    }
    assert!(expired);
}
