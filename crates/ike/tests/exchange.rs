//! Two of our IKE endpoints, a mobile node initiating and a home agent responding, in
//! virtual time through a simulated network that can lose, rewrite (a NAT) or forge
//! datagrams. Each test checks what RFC 7296 says must happen, from the outside: events,
//! counters, what crosses the wire.

use m6t_ike::config::{ChildConfig, Identity, IkeConfig, PeerConfig};
use m6t_ike::endpoint::{give_up_after, Endpoint, Failure, IkeEvent, Transmit, NAT_T_PORT};
use m6t_ike::suite::{ChildSuite, IkeSuite};
use m6t_ike::{ts, Message};
use m6t_ipsec::Mode;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const MN: &str = "192.0.2.10:500";
const HA: &str = "198.51.100.1:500";
const NAT_PUBLIC: &str = "203.0.113.7";

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn prefix(s: &str) -> m6t_ike::TrafficSelector {
    let (a, l) = s.split_once('/').unwrap();
    ts::prefix(a.parse::<IpAddr>().unwrap(), l.parse().unwrap()).unwrap()
}

/// RFC 4877 section 4.4's two CHILD_SAs seen from the MN: BU/BA in transport mode between
/// home address and HA, payload in tunnel mode from the home address to anything.
fn mn_children(hoa: &str, esp: &str) -> Vec<ChildConfig> {
    let suite = vec![ChildSuite::parse(esp).unwrap()];
    vec![
        ChildConfig {
            name: "payload".into(),
            mode: Mode::Tunnel,
            local_ts: vec![prefix(&format!("{hoa}/128"))],
            remote_ts: vec![ts::any(true)],
            proposals: suite.clone(),
        },
        ChildConfig {
            name: "mh".into(),
            mode: Mode::Transport,
            local_ts: vec![prefix(&format!("{hoa}/128"))],
            remote_ts: vec![prefix("2001:db8:1::1/128")],
            proposals: suite,
        },
    ]
}

/// The HA's view: this identity may use this home address only (the PAD of RFC 4877
/// section 4.3).
fn ha_children(hoa: &str, esp: &str) -> Vec<ChildConfig> {
    mn_children(hoa, esp)
        .into_iter()
        .map(|c| ChildConfig {
            local_ts: c.remote_ts,
            remote_ts: c.local_ts,
            ..c
        })
        .collect()
}

fn config(ike: &[&str], peer: PeerConfig) -> IkeConfig {
    IkeConfig {
        proposals: ike.iter().map(|s| IkeSuite::parse(s).unwrap()).collect(),
        peers: vec![peer],
        retransmit_timeout: Duration::from_millis(500),
        ..IkeConfig::default()
    }
}

fn mn_peer(psk: &str, hoa: &str, esp: &str) -> PeerConfig {
    PeerConfig {
        name: "ha".into(),
        local_id: Identity::parse("mn1@example.org"),
        remote_id: Identity::parse("ha.example.org"),
        psk: psk.as_bytes().to_vec().into(),
        local_cert: None,
        trust: None,
        children: mn_children(hoa, esp),
    }
}

fn ha_peer(psk: &str, hoa: &str, esp: &str) -> PeerConfig {
    PeerConfig {
        name: "mn1".into(),
        local_id: Identity::parse("ha.example.org"),
        remote_id: Identity::parse("mn1@example.org"),
        psk: psk.as_bytes().to_vec().into(),
        local_cert: None,
        trust: None,
        children: ha_children(hoa, esp),
    }
}

/// Decides which datagrams are lost: (direction MN to HA, datagram) -> lost.
type Loss = Box<dyn FnMut(bool, &Transmit) -> bool>;

/// The simulated network: `a` (MN) behind an optional NAT, `b` (HA) on the Internet.
struct Net {
    now: Instant,
    a: Endpoint,
    b: Endpoint,
    a_events: Vec<IkeEvent>,
    b_events: Vec<IkeEvent>,
    /// NAT: the public address the MN's packets leave with (port + 10000).
    nat: Option<IpAddr>,
    /// Returns false to lose a datagram (direction: true = MN to HA).
    lose: Loss,
    /// Every datagram that crossed, with its direction.
    wire: Vec<(bool, Transmit)>,
}

impl Net {
    fn new(a: IkeConfig, b: IkeConfig) -> Net {
        Net {
            now: Instant::now(),
            a: Endpoint::new(a, [1; 32]),
            b: Endpoint::new(b, [2; 32]),
            a_events: Vec::new(),
            b_events: Vec::new(),
            nat: None,
            lose: Box::new(|_, _| false),
            wire: Vec::new(),
        }
    }

    fn outside(&self, local: SocketAddr) -> SocketAddr {
        match self.nat {
            Some(ip) => SocketAddr::new(ip, local.port() + 10000),
            None => local,
        }
    }

    fn inside(&self, public: SocketAddr) -> SocketAddr {
        match self.nat {
            Some(_) => SocketAddr::new(sock(MN).ip(), public.port() - 10000),
            None => public,
        }
    }

    /// Delivers everything in flight, repeatedly, without advancing time.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                self.wire.push((true, t.clone()));
                if !(self.lose)(true, &t) {
                    let from = self.outside(t.local);
                    self.b.handle(self.now, t.remote, from, &t.payload);
                }
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                self.wire.push((false, t.clone()));
                if !(self.lose)(false, &t) {
                    let to = self.inside(t.remote);
                    self.a.handle(self.now, to, t.local, &t.payload);
                }
            }
            while let Some(e) = self.a.poll_event() {
                self.a_events.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                self.b_events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs timers and deliveries for `d` of virtual time.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        self.pump();
        loop {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn connect(&mut self) {
        self.a.connect(self.now, "ha", sock(MN), sock(HA)).unwrap();
        self.run(Duration::from_millis(1));
    }
}

fn children(events: &[IkeEvent]) -> Vec<&m6t_ike::endpoint::ChildSa> {
    events
        .iter()
        .filter_map(|e| match e {
            IkeEvent::ChildUp(c) => Some(&**c),
            _ => None,
        })
        .collect()
}

fn failures(events: &[IkeEvent]) -> Vec<Failure> {
    events
        .iter()
        .filter_map(|e| match e {
            IkeEvent::Failed { why, .. } | IkeEvent::IkeDown { why, .. } => Some(*why),
            _ => None,
        })
        .collect()
}

const HOA: &str = "2001:db8:1::10";

#[test]
fn ike_sa_and_tunnel_child_come_up_in_every_suite() {
    for (ike, esp) in [
        ("aes128-sha256-modp2048", "aes128-sha256"),
        ("aes256-sha256-ecp256", "aes256-sha256-esn"),
        ("aes128gcm16-prfsha256-curve25519", "aes128gcm16"),
        ("aes256gcm16-prfsha256-modp2048", "aes256gcm16"),
    ] {
        let mut n = Net::new(
            config(&[ike], mn_peer("secret", HOA, esp)),
            config(&[ike], ha_peer("secret", HOA, esp)),
        );
        n.connect();
        let (a, b) = (children(&n.a_events), children(&n.b_events));
        assert_eq!(
            (a.len(), b.len()),
            (1, 1),
            "{ike}: {:?} {:?}",
            n.a_events,
            n.b_events
        );
        let (a, b) = (a[0], b[0]);
        // Each side's outbound half is the other's inbound half, keys included.
        assert_eq!(a.outbound, b.inbound, "{ike}");
        assert_eq!(a.inbound, b.outbound, "{ike}");
        assert_ne!(a.inbound.keymat, a.outbound.keymat);
        assert_eq!(a.inbound.keymat.len(), a.suite.algorithm.keymat_len());
        assert_eq!((a.mode, a.name.as_str()), (Mode::Tunnel, "payload"));
        assert_eq!(a.suite, ChildSuite::parse(esp).unwrap());
        // The HA narrowed "anything" from the MN's side to the MN's home address.
        assert_eq!(b.remote_ts, vec![prefix(&format!("{HOA}/128"))]);
        assert_eq!(a.local_ts, b.remote_ts);
        assert!(!a.udp_encap, "no NAT, nothing forced");
        assert_eq!(n.a.counters().ike_established, 1);
        assert_eq!(n.b.counters().ike_established, 1);
        // IKE_SA_INIT and IKE_AUTH, each a request and a response: four datagrams.
        assert_eq!(n.wire.len(), 4, "{ike}");
        // And the keys shown for Wireshark are the same on both sides.
        let ka = n.a.sas()[0].id;
        let kb = n.b.sas()[0].id;
        assert_eq!(n.a.wireshark_keys(ka), n.b.wireshark_keys(kb));
    }
}

#[test]
fn transport_mode_child_for_binding_updates() {
    let esp = "aes128gcm16";
    let mut mn = mn_peer("s", HOA, esp);
    mn.children.swap(0, 1); // the MN asks for the MH transport SA first
    let mut n = Net::new(
        config(&["aes128gcm16-prfsha256-curve25519"], mn),
        config(
            &["aes128gcm16-prfsha256-curve25519"],
            ha_peer("s", HOA, esp),
        ),
    );
    n.connect();
    let a = children(&n.a_events);
    let b = children(&n.b_events);
    assert_eq!(a[0].mode, Mode::Transport);
    assert_eq!(b[0].mode, Mode::Transport);
    assert_eq!(b[0].name, "mh");
}

#[test]
fn wrong_psk_fails_on_both_sides_with_one_clear_reason() {
    let mut n = Net::new(
        config(
            &["aes128-sha256-modp2048"],
            mn_peer("right", HOA, "aes128-sha256"),
        ),
        config(
            &["aes128-sha256-modp2048"],
            ha_peer("wrong", HOA, "aes128-sha256"),
        ),
    );
    n.connect();
    assert_eq!(failures(&n.b_events), vec![Failure::AuthenticationFailed]);
    assert_eq!(failures(&n.a_events), vec![Failure::AuthenticationFailed]);
    let detail = |ev: &[IkeEvent]| match &ev[0] {
        IkeEvent::Failed { detail, .. } => detail.clone(),
        e => panic!("{e:?}"),
    };
    assert!(
        detail(&n.b_events).contains("mn1@example.org"),
        "{}",
        detail(&n.b_events)
    );
    assert!(detail(&n.a_events).contains("AUTHENTICATION_FAILED"));
    assert!(
        !detail(&n.a_events).contains("right") && !detail(&n.b_events).contains("wrong"),
        "no key in logs"
    );
    assert!(children(&n.a_events).is_empty() && children(&n.b_events).is_empty());
    assert_eq!(n.a.counters().auth_failed, 1);
    assert_eq!(n.b.counters().auth_failed, 1);
    assert!(
        n.a.sas().is_empty() && n.b.sas().is_empty(),
        "nothing left behind"
    );
}

#[test]
fn another_home_address_is_ts_unacceptable_but_the_ike_sa_stays() {
    let mut n = Net::new(
        config(
            &["aes128-sha256-modp2048"],
            mn_peer("s", "2001:db8:1::99", "aes128-sha256"),
        ),
        config(
            &["aes128-sha256-modp2048"],
            ha_peer("s", HOA, "aes128-sha256"),
        ),
    );
    n.connect();
    assert_eq!(failures(&n.b_events), vec![Failure::TsUnacceptable]);
    assert_eq!(failures(&n.a_events), vec![Failure::TsUnacceptable]);
    assert!(children(&n.a_events).is_empty());
    assert_eq!(n.b.counters().ts_unacceptable, 1);
    assert_eq!(n.a.counters().ike_established, 1);
}

#[test]
fn no_common_proposal() {
    let mut n = Net::new(
        config(
            &["aes128-sha256-ecp256"],
            mn_peer("s", HOA, "aes128-sha256"),
        ),
        config(
            &["aes256gcm16-prfsha256-modp2048"],
            ha_peer("s", HOA, "aes128-sha256"),
        ),
    );
    n.connect();
    assert_eq!(failures(&n.b_events), vec![Failure::NoProposalChosen]);
    assert_eq!(failures(&n.a_events), vec![Failure::NoProposalChosen]);
    assert!(n.b.sas().is_empty(), "the responder kept no state");
    // And the ESP proposal: the IKE SA comes up, the CHILD_SA does not.
    let mut n = Net::new(
        config(
            &["aes128-sha256-modp2048"],
            mn_peer("s", HOA, "aes128gcm16"),
        ),
        config(
            &["aes128-sha256-modp2048"],
            ha_peer("s", HOA, "aes256-sha256"),
        ),
    );
    n.connect();
    assert_eq!(failures(&n.a_events), vec![Failure::NoProposalChosen]);
    assert_eq!(n.a.counters().ike_established, 1);
}

#[test]
fn invalid_ke_payload_is_retried_in_the_group_the_responder_wants() {
    let mut n = Net::new(
        config(
            &["aes128-sha256-ecp256", "aes128-sha256-modp2048"],
            mn_peer("s", HOA, "aes128-sha256"),
        ),
        config(
            &["aes128-sha256-modp2048"],
            ha_peer("s", HOA, "aes128-sha256"),
        ),
    );
    n.connect();
    assert_eq!(children(&n.a_events).len(), 1, "{:?}", n.a_events);
    assert_eq!(n.a.counters().invalid_ke, 1);
    assert_eq!(n.b.counters().invalid_ke, 1);
    assert_eq!(n.b.sas()[0].suite.unwrap().name(), "aes128-sha256-modp2048");
}

#[test]
fn cookies_when_the_responder_is_loaded() {
    let mut ha = config(
        &["aes128-sha256-modp2048"],
        ha_peer("s", HOA, "aes128-sha256"),
    );
    ha.cookie_threshold = 0;
    let mut n = Net::new(
        config(
            &["aes128-sha256-modp2048"],
            mn_peer("s", HOA, "aes128-sha256"),
        ),
        ha,
    );
    n.connect();
    assert_eq!(children(&n.a_events).len(), 1);
    assert_eq!(n.b.counters().cookies, 1, "one COOKIE sent");
    assert_eq!(n.a.counters().cookies, 1, "and echoed");
    // The first answer was the COOKIE, with no responder SPI: no state for it.
    let first_answer = &n.wire.iter().find(|(up, _)| !up).unwrap().1;
    let m = Message::parse(&first_answer.payload).unwrap();
    assert_eq!(m.header.responder_spi, 0);
    assert!(m.notify(m6t_ike::notify::COOKIE).is_some());
    // A forged or stale cookie is dropped without an answer.
    let mut fake = n.wire[2].1.payload.clone(); // the retried request, COOKIE first
    let cookie_at = 28 + 8;
    fake[cookie_at + 4] ^= 0xff;
    fake[0] ^= 1; // another initiator SPI so it is not a repeat
    let before = n.b.counters().drop_cookie;
    n.b.handle(n.now, sock(HA), sock(MN), &fake);
    assert_eq!(n.b.counters().drop_cookie, before + 1);
    assert!(n.b.poll_transmit().is_none());
}

#[test]
fn a_lost_response_is_answered_again_not_processed_twice() {
    let mut n = Net::new(
        config(
            &["aes128-sha256-modp2048"],
            mn_peer("s", HOA, "aes128-sha256"),
        ),
        config(
            &["aes128-sha256-modp2048"],
            ha_peer("s", HOA, "aes128-sha256"),
        ),
    );
    let mut lost = 0;
    n.lose = Box::new(move |up, t| {
        // Lose the HA's IKE_AUTH response once.
        let auth = Message::parse(&t.payload)
            .is_ok_and(|m| m.header.exchange_type == m6t_ike::exchange::IKE_AUTH);
        if !up && auth && lost == 0 {
            lost += 1;
            return true;
        }
        false
    });
    n.connect();
    n.run(Duration::from_secs(2));
    assert_eq!(children(&n.a_events).len(), 1);
    assert_eq!(
        children(&n.b_events).len(),
        1,
        "the repeat did not make a second CHILD_SA"
    );
    assert_eq!(n.a.counters().retransmits, 1);
}

#[test]
fn a_silent_peer_times_out_after_the_backoff() {
    let mut n = Net::new(
        config(
            &["aes128-sha256-modp2048"],
            mn_peer("s", HOA, "aes128-sha256"),
        ),
        config(
            &["aes128-sha256-modp2048"],
            ha_peer("s", HOA, "aes128-sha256"),
        ),
    );
    n.lose = Box::new(|_, _| true);
    let t0 = n.now;
    n.connect();
    let limit = give_up_after(n.a.config());
    n.run(limit - Duration::from_millis(10));
    assert!(failures(&n.a_events).is_empty(), "not before the last try");
    n.run(Duration::from_millis(20));
    assert_eq!(failures(&n.a_events), vec![Failure::Timeout]);
    assert_eq!(
        n.a.counters().retransmits,
        u64::from(n.a.config().retransmit_tries)
    );
    assert!(n.now - t0 >= limit);
    assert!(n.a.sas().is_empty());
}

#[test]
fn delete_and_dead_peer_detection() {
    let mut n = Net::new(
        config(
            &["aes128-sha256-modp2048"],
            mn_peer("s", HOA, "aes128-sha256"),
        ),
        config(
            &["aes128-sha256-modp2048"],
            ha_peer("s", HOA, "aes128-sha256"),
        ),
    );
    n.connect();
    let id = n.a.sas()[0].id;
    n.a.close(n.now, id);
    n.run(Duration::from_millis(10));
    for ev in [&n.a_events, &n.b_events] {
        assert!(
            ev.iter().any(|e| matches!(e, IkeEvent::ChildDown { .. })),
            "{ev:?}"
        );
        assert!(
            ev.iter().any(|e| matches!(e, IkeEvent::IkeDown { .. })),
            "{ev:?}"
        );
    }
    assert!(n.a.sas().is_empty() && n.b.sas().is_empty());

    // Liveness: the HA goes silent after the SA is up; the MN's check times out.
    let mut n = Net::new(
        config(
            &["aes128-sha256-modp2048"],
            mn_peer("s", HOA, "aes128-sha256"),
        ),
        config(
            &["aes128-sha256-modp2048"],
            ha_peer("s", HOA, "aes128-sha256"),
        ),
    );
    n.connect();
    n.run(Duration::from_secs(65));
    assert!(
        failures(&n.a_events).is_empty(),
        "answered checks keep it up"
    );
    assert!(n.a.counters().dpd_sent >= 2, "{:?}", n.a.counters());
    n.lose = Box::new(|_, _| true);
    let dpd = n.a.config().dpd.unwrap();
    n.run(dpd + give_up_after(n.a.config()) + Duration::from_secs(1));
    assert_eq!(failures(&n.a_events), vec![Failure::Timeout]);
    assert!(n
        .a_events
        .iter()
        .any(|e| matches!(e, IkeEvent::ChildDown { .. })));
}

#[test]
fn behind_a_nat_ike_moves_to_4500_and_keeps_the_mapping() {
    let mut n = Net::new(
        config(
            &["aes128-sha256-modp2048"],
            mn_peer("s", HOA, "aes128-sha256"),
        ),
        config(
            &["aes128-sha256-modp2048"],
            ha_peer("s", HOA, "aes128-sha256"),
        ),
    );
    n.nat = Some(NAT_PUBLIC.parse().unwrap());
    n.connect();
    let a = children(&n.a_events)[0].clone();
    let b = children(&n.b_events)[0].clone();
    assert!(a.udp_encap && b.udp_encap);
    assert_eq!(a.remote, SocketAddr::new(sock(HA).ip(), NAT_T_PORT));
    assert_eq!(
        b.remote,
        SocketAddr::new(NAT_PUBLIC.parse().unwrap(), NAT_T_PORT + 10000)
    );
    // IKE_AUTH went on 4500 with the non-ESP marker.
    let auth = &n.wire[2].1;
    assert_eq!(auth.local.port(), NAT_T_PORT);
    assert_eq!(&auth.payload[..4], &[0, 0, 0, 0]);
    // Keep-alives from the MN (behind the NAT), none from the HA.
    n.run(Duration::from_secs(41));
    assert_eq!(n.a.counters().keepalives, 2);
    assert_eq!(n.b.counters().keepalives, 0);
    assert!(n.wire.iter().any(|(up, t)| *up && t.payload == [0xff]));
    // The NAT rebinds: the HA follows the new port on the next authenticated message.
    n.nat = Some("203.0.113.8".parse().unwrap());
    n.run(Duration::from_secs(31));
    assert!(n.b_events.iter().any(|e| matches!(e, IkeEvent::PeerMoved { remote, .. } if remote.ip().to_string() == "203.0.113.8")), "{:?}", n.b_events);
}

#[test]
fn forced_encapsulation_without_a_nat() {
    let mut mn = config(
        &["aes128-sha256-modp2048"],
        mn_peer("s", HOA, "aes128-sha256"),
    );
    mn.force_encap = true;
    let mut n = Net::new(
        mn,
        config(
            &["aes128-sha256-modp2048"],
            ha_peer("s", HOA, "aes128-sha256"),
        ),
    );
    n.connect();
    assert!(children(&n.a_events)[0].udp_encap);
    assert!(
        children(&n.b_events)[0].udp_encap,
        "the HA saw the faked NAT"
    );
}

#[test]
fn unauthenticated_packets_change_nothing() {
    let mut n = Net::new(
        config(
            &["aes128-sha256-modp2048"],
            mn_peer("s", HOA, "aes128-sha256"),
        ),
        config(
            &["aes128-sha256-modp2048"],
            ha_peer("s", HOA, "aes128-sha256"),
        ),
    );
    n.connect();
    let before_a = n.a.sas();
    let before_b = n.b.sas();
    // Every IKE_AUTH and later datagram seen, with one bit flipped anywhere.
    let seen: Vec<(bool, Transmit)> = n.wire.clone();
    for (up, t) in seen.iter().skip(2) {
        for at in (0..t.payload.len()).step_by(7) {
            let mut bad = t.payload.clone();
            bad[at] ^= 0x40;
            if *up {
                n.b.handle(n.now, t.remote, t.local, &bad);
            } else {
                n.a.handle(n.now, t.remote, t.local, &bad);
            }
        }
    }
    // Garbage and truncations.
    for len in [0usize, 1, 27, 28, 29, 100] {
        n.b.handle(n.now, sock(HA), sock(MN), &vec![0x5a; len]);
    }
    n.pump();
    assert_eq!(n.a.sas(), before_a);
    assert_eq!(n.b.sas(), before_b);
    assert_eq!(
        n.a_events
            .iter()
            .filter(|e| !matches!(e, IkeEvent::IkeUp { .. } | IkeEvent::ChildUp(_)))
            .count(),
        0
    );
    assert!(
        n.b.counters().drop_integrity
            + n.b.counters().drop_malformed
            + n.b.counters().drop_unknown_spi
            > 0
    );
}

#[test]
fn half_open_sas_are_bounded_and_expire() {
    let mut ha = config(
        &["aes128-sha256-modp2048"],
        ha_peer("s", HOA, "aes128-sha256"),
    );
    ha.cookie_threshold = 1000;
    ha.half_open_max = 5;
    let mut b = Endpoint::new(ha, [3; 32]);
    let now = Instant::now();
    for i in 0..8u16 {
        let mut mn = Endpoint::new(
            config(
                &["aes128-sha256-modp2048"],
                mn_peer("s", HOA, "aes128-sha256"),
            ),
            [i as u8 + 10; 32],
        );
        let from = SocketAddr::new(sock(MN).ip(), 1000 + i);
        mn.connect(now, "ha", from, sock(HA)).unwrap();
        let t = mn.poll_transmit().unwrap();
        b.handle(now, sock(HA), from, &t.payload);
    }
    assert_eq!(b.sas().len(), 5);
    assert_eq!(b.counters().drop_half_open, 3);
    b.handle_timeout(now + Duration::from_secs(31));
    assert!(b.sas().is_empty());
    assert_eq!(b.counters().half_open_expired, 5);
}

#[test]
fn second_child_by_create_child_sa_as_rfc4877_needs() {
    let esp = "aes128gcm16";
    let mut n = Net::new(
        config(
            &["aes128gcm16-prfsha256-curve25519"],
            mn_peer("s", HOA, esp),
        ),
        config(
            &["aes128gcm16-prfsha256-curve25519"],
            ha_peer("s", HOA, esp),
        ),
    );
    n.connect();
    let ike = n.a.sas()[0].id;
    assert!(n.a.create_child(n.now, ike, "mh"));
    n.run(Duration::from_millis(10));
    let (a, b) = (children(&n.a_events), children(&n.b_events));
    assert_eq!((a.len(), b.len()), (2, 2), "{:?}", n.b_events);
    assert_eq!((a[1].mode, b[1].mode), (Mode::Transport, Mode::Transport));
    assert_eq!(a[1].outbound, b[1].inbound);
    assert_eq!(a[1].inbound, b[1].outbound);
    assert_ne!(
        a[1].inbound.keymat, a[0].inbound.keymat,
        "fresh nonces, fresh keys"
    );
    assert!(!n.a.create_child(n.now, ike, "nonexistent"));
    // With PFS (a KE in CREATE_CHILD_SA, section 1.3.1) too.
    let pfs = "aes128gcm16-modp2048";
    let mut n = Net::new(
        config(
            &["aes128gcm16-prfsha256-curve25519"],
            mn_peer("s", HOA, pfs),
        ),
        config(
            &["aes128gcm16-prfsha256-curve25519"],
            ha_peer("s", HOA, pfs),
        ),
    );
    n.connect();
    // IKE_AUTH proposes without the group (section 1.2)...
    let first = children(&n.a_events)[0].clone();
    assert_eq!(first.suite.group, None);
    // ...and CREATE_CHILD_SA with it: a KE exchange mixed into the keys.
    let ike = n.a.sas()[0].id;
    n.a.create_child(n.now, ike, "mh");
    n.run(Duration::from_millis(10));
    let (a, b) = (children(&n.a_events), children(&n.b_events));
    assert_eq!(a.len(), 2, "{:?}", n.a_events);
    assert_eq!(a[1].suite.group, Some(m6t_ike::group::Group::Modp2048));
    assert_eq!(a[1].outbound, b[1].inbound);
}

#[test]
fn child_and_ike_rekeys_by_time_from_either_side() {
    for mn_rekeys in [true, false] {
        let esp = "aes128-sha256";
        let mut mn = config(&["aes128-sha256-modp2048"], mn_peer("s", HOA, esp));
        let mut ha = config(&["aes128-sha256-modp2048"], ha_peer("s", HOA, esp));
        let (r, q) = if mn_rekeys {
            (&mut mn, &mut ha)
        } else {
            (&mut ha, &mut mn)
        };
        r.rekey_child = Some(Duration::from_secs(100));
        r.rekey_ike = Some(Duration::from_secs(250));
        q.rekey_child = None;
        q.rekey_ike = None;
        let mut n = Net::new(mn, ha);
        n.connect();
        n.run(Duration::from_secs(101));
        let (a, b) = (children(&n.a_events), children(&n.b_events));
        assert_eq!((a.len(), b.len()), (2, 2), "one rekey: {:?}", n.a_events);
        assert_eq!(a[1].rekeys, Some(a[0].inbound.spi));
        assert_eq!(b[1].rekeys, Some(b[0].inbound.spi));
        assert_eq!(a[1].outbound, b[1].inbound);
        // The old pair was deleted on both sides; one pair left each.
        let downs = |ev: &[IkeEvent]| {
            ev.iter()
                .filter(|e| matches!(e, IkeEvent::ChildDown { .. }))
                .count()
        };
        assert_eq!((downs(&n.a_events), downs(&n.b_events)), (1, 1));
        assert_eq!(n.a.sas()[0].children.len(), 1);
        // The IKE SA rekey: a new handle, the CHILD_SA moved, the old SA gone.
        n.run(Duration::from_secs(150));
        for (ep, ev) in [(&n.a, &n.a_events), (&n.b, &n.b_events)] {
            assert!(
                ev.iter().any(|e| matches!(e, IkeEvent::IkeRekeyed { .. })),
                "{ev:?}"
            );
            assert!(ev.iter().any(|e| matches!(
                e,
                IkeEvent::IkeDown {
                    why: Failure::Rekeyed,
                    ..
                }
            )));
            let sas = ep.sas();
            assert_eq!(sas.len(), 1, "{sas:?}");
            assert_eq!(sas[0].children.len(), 1, "the CHILD_SA moved");
        }
        // The new IKE SA works: another CHILD_SA rekey runs on it.
        n.run(Duration::from_secs(100));
        assert!(children(&n.a_events).len() >= 3, "{:?}", n.a_events);
        assert_eq!(downs(&n.a_events), children(&n.a_events).len() - 1);
        assert!(failures(&n.a_events).iter().all(|f| *f == Failure::Rekeyed));
        // Keys of the new IKE SA differ from the old.
        let id_a = n.a.sas()[0].id;
        let id_b = n.b.sas()[0].id;
        assert_eq!(n.a.wireshark_keys(id_a), n.b.wireshark_keys(id_b));
    }
}

#[test]
fn simultaneous_child_rekeys_resolve() {
    let esp = "aes128-sha256";
    let mut mn = config(&["aes128-sha256-modp2048"], mn_peer("s", HOA, esp));
    let mut ha = config(&["aes128-sha256-modp2048"], ha_peer("s", HOA, esp));
    mn.rekey_ike = None;
    ha.rekey_ike = None;
    mn.rekey_child = None;
    ha.rekey_child = None;
    let mut n = Net::new(mn, ha);
    n.connect();
    let (ia, ib) = (n.a.sas()[0].id, n.b.sas()[0].id);
    let (sa_, sb) = (
        children(&n.a_events)[0].inbound.spi,
        children(&n.b_events)[0].inbound.spi,
    );
    assert!(n.a.rekey_child(n.now, ia, sa_));
    assert!(n.b.rekey_child(n.now, ib, sb));
    n.run(Duration::from_millis(10));
    // Each refused the other's with TEMPORARY_FAILURE: no duplicate pair.
    assert_eq!(children(&n.a_events).len(), 1);
    assert_eq!(n.a.sas()[0].children.len(), 1);
    // Then one side tries again and succeeds.
    assert!(n.a.rekey_child(n.now, ia, sa_));
    n.run(Duration::from_millis(10));
    assert_eq!(children(&n.a_events).len(), 2);
    assert_eq!(n.b.sas()[0].children.len(), 1);
}

/// RFC 4877 section 4.4.1: with the K flag a handover costs no IKE exchange (the MN sends
/// from its new care-of address, the HA follows when it accepts the BU); without it the MN
/// re-establishes the IKE SA from the new address. Counted on the wire.
#[test]
fn ike_exchanges_per_handover_with_and_without_the_k_flag() {
    let exchanges = |wire: &[(bool, Transmit)]| {
        wire.iter()
            .filter(|(up, t)| *up && t.payload.len() > 1)
            .count()
    };
    for k_flag in [true, false] {
        let esp = "aes128gcm16";
        let mut n = Net::new(
            config(
                &["aes128gcm16-prfsha256-curve25519"],
                mn_peer("s", HOA, esp),
            ),
            config(
                &["aes128gcm16-prfsha256-curve25519"],
                ha_peer("s", HOA, esp),
            ),
        );
        n.connect();
        let before = exchanges(&n.wire);
        let ike = n.a.sas()[0].id;
        let ha_ike = n.b.sas()[0].id;
        // The MN moves from 192.0.2.10 to 192.0.2.11.
        let new_local: SocketAddr = "192.0.2.11:500".parse().unwrap();
        if k_flag {
            assert!(n.a.local_moved(ike, new_local));
            // The HA accepted a BU with K from the new care-of address.
            assert!(n.b.peer_moved(ha_ike, new_local));
            n.run(Duration::from_millis(10));
            assert_eq!(exchanges(&n.wire) - before, 0, "no IKE exchange with K");
            // And the SA still works from there: a liveness check both ways.
            n.run(Duration::from_secs(31));
            let last_up = n.wire.iter().rev().find(|(up, _)| *up).unwrap();
            assert_eq!(last_up.1.local, new_local);
            assert!(failures(&n.a_events).is_empty());
        } else {
            n.a.close(n.now, ike);
            n.run(Duration::from_millis(10));
            let mid = exchanges(&n.wire);
            assert_eq!(mid - before, 1, "one Delete");
            n.a.connect(n.now, "ha", new_local, sock(HA)).unwrap();
            n.run(Duration::from_millis(10));
            assert_eq!(
                exchanges(&n.wire) - mid,
                2,
                "IKE_SA_INIT and IKE_AUTH again"
            );
            assert_eq!(children(&n.a_events).len(), 2);
        }
    }
}

/// Runs `n` for `d`, after which the mobile node has declared the home agent dead.
fn declared_dead_within(n: &mut Net, d: Duration) {
    n.run(d);
    assert_eq!(
        failures(&n.a_events),
        vec![Failure::Timeout],
        "{:?}",
        n.a_events
    );
}

/// The restart tests' configurations: the home agent's (`ha`) or the mobile node's.
fn restart_config(ha: bool) -> IkeConfig {
    let esp = "aes128gcm16";
    let peer = if ha {
        ha_peer("s", HOA, esp)
    } else {
        mn_peer("s", HOA, esp)
    };
    config(&["aes128gcm16-prfsha256-curve25519"], peer)
}

/// Section 2.21.4: the home agent restarts and forgets the IKE SA. The mobile node's next
/// liveness check is answered, unprotected, with INVALID_IKE_SPI; that hint changes no SA
/// by itself but hurries the check's verdict (two quick tries instead of the long backoff),
/// after which a new IKE SA comes up. A forged hint without a request outstanding does
/// nothing.
#[test]
fn a_restarted_responder_is_noticed_within_a_second_of_the_liveness_check() {
    let mut n = Net::new(restart_config(false), restart_config(true));
    n.connect();
    // A forged INVALID_IKE_SPI with nothing outstanding: ignored.
    let ike = n.a.sas()[0].id;
    let spi_r = n.b.sas()[0].id;
    let forged = Message {
        header: m6t_ike::HeaderRepr {
            initiator_spi: ike,
            responder_spi: spi_r,
            exchange_type: m6t_ike::exchange::INFORMATIONAL,
            flags: m6t_ike::flags::R,
            message_id: 1,
        },
        payloads: vec![m6t_ike::Payload::Notify(m6t_ike::Notify {
            protocol: 0,
            spi: &[],
            kind: m6t_ike::notify::INVALID_IKE_SPI,
            data: &[],
        })],
    };
    let mut bytes = vec![0u8; forged.emit_len()];
    forged.emit(&mut bytes).unwrap();
    n.a.handle(n.now, sock(MN), sock(HA), &bytes);
    assert_eq!(n.a.counters().invalid_spi_hints, 0);
    assert_eq!(n.a.sas().len(), 1);
    // The HA restarts.
    n.b = Endpoint::new(restart_config(true), [9; 32]);
    let dpd = n.a.config().dpd.unwrap();
    n.run(dpd + Duration::from_millis(10));
    assert_eq!(n.b.counters().invalid_spi_sent, 1, "{:?}", n.b.counters());
    assert_eq!(n.a.counters().invalid_spi_hints, 1);
    assert!(
        failures(&n.a_events).is_empty(),
        "not torn down by the hint itself"
    );
    declared_dead_within(&mut n, Duration::from_millis(1100));
    // And a new IKE SA comes up with the restarted HA.
    n.a.connect(n.now, "ha", sock(MN), sock(HA)).unwrap();
    n.run(Duration::from_millis(10));
    assert_eq!(children(&n.a_events).len(), 2);
}

/// Section 2.21.4, from the ESP side: the home agent restarts while the mobile node's
/// payload flows and the node's liveness check is a quiet period away. The first ESP packet
/// with an SPI the restarted HA does not know is answered, unprotected, with INVALID_SPI;
/// the node checks liveness at once, gets INVALID_IKE_SPI, and declares the HA dead within
/// about a second of the HA's return instead of after its quiet period and backoff. A
/// notice naming an SPI that is not ours, or from another address, changes nothing, and no
/// notice is ever answered.
#[test]
fn esp_to_a_restarted_responder_brings_an_invalid_spi_notice_that_starts_a_liveness_check() {
    let mut n = Net::new(restart_config(false), restart_config(true));
    n.connect();
    let ours: Vec<u32> = children(&n.a_events)
        .iter()
        .map(|c| c.outbound.spi)
        .collect();
    assert!(!ours.is_empty());
    let dpd = n.a.config().dpd.unwrap();
    // While the HA has the IKE SA, ESP with a stale SPI is no news: no notice.
    n.b.esp_unknown_spi(n.now, sock(HA), sock(MN), 0x1234_5678);
    assert!(n.b.poll_transmit().is_none());

    n.run(Duration::from_secs(2));
    n.b = Endpoint::new(restart_config(true), [9; 32]);
    let sent_before = n.a.counters().dpd_sent;
    n.b.esp_unknown_spi(n.now, sock(HA), sock(MN), ours[0]);
    // Rate-limited: a second packet right after brings no second notice.
    n.b.esp_unknown_spi(n.now, sock(HA), sock(MN), ours[0]);
    let notice = n.b.poll_transmit().expect("an INVALID_SPI notice");
    assert!(n.b.poll_transmit().is_none());
    assert_eq!(n.b.counters().invalid_spi_sent, 1);
    let m = Message::parse(&notice.payload).unwrap();
    let spi = ours[0].to_be_bytes();
    assert_eq!(m.header.exchange_type, m6t_ike::exchange::INFORMATIONAL);
    assert_eq!(m.header.flags & m6t_ike::flags::R, 0);
    assert_eq!(
        m.notify(m6t_ike::notify::INVALID_SPI)
            .map(|x| (x.protocol, x.spi)),
        Some((m6t_ike::protocol::ESP, &spi[..]))
    );

    // The same notice from another address, or naming an SPI not ours: nothing.
    n.a.handle(n.now, sock(MN), sock("192.0.2.99:4500"), &notice.payload);
    let mut other = notice.payload.clone();
    let len = other.len();
    other[len - 1] ^= 1;
    n.a.handle(n.now, sock(MN), sock(HA), &other);
    assert!(n.a.poll_transmit().is_none(), "no answer, no check");
    assert_eq!(n.a.counters().dpd_sent, sent_before);
    assert_eq!(n.a.counters().invalid_spi_hints, 0);

    // The real one: a liveness check at once, the HA's INVALID_IKE_SPI hurries it.
    let start = n.now;
    n.a.handle(n.now, sock(MN), sock(HA), &notice.payload);
    assert_eq!(n.a.counters().dpd_sent, sent_before + 1);
    declared_dead_within(&mut n, Duration::from_millis(1100));
    assert!(n.now - start < dpd, "well before the quiet period ends");
    assert_eq!(n.a.counters().invalid_spi_hints, 2, "{:?}", n.a.counters());
    assert!(
        n.wire
            .iter()
            .all(|(to_ha, t)| *to_ha || t.payload != notice.payload),
        "the notice went only where the test put it"
    );
}

/// A forged INVALID_SPI (right SPI, right source address) while a request is under way and
/// the peer is merely slow: the request goes again at once, but its verdict is not hurried
/// (only an INVALID_IKE_SPI naming our IKE SPIs does that), so the SA outlives the second
/// a hinted check would give it.
#[test]
fn a_forged_invalid_spi_notice_resends_but_does_not_hurry_the_verdict() {
    let mut n = Net::new(restart_config(false), restart_config(true));
    n.connect();
    let spi = children(&n.a_events)[0].outbound.spi;
    let ike = n.a.sas()[0].id;
    // The HA hears nothing from now on.
    n.lose = Box::new(|to_ha, _| to_ha);
    assert!(n.a.check_liveness(n.now, ike));
    n.run(Duration::from_millis(100));
    let mut forger = Endpoint::new(restart_config(true), [7; 32]);
    forger.esp_unknown_spi(n.now, sock(HA), sock(MN), spi);
    let notice = forger.poll_transmit().unwrap();
    let resent = n.a.counters().retransmits;
    n.a.handle(n.now, sock(MN), sock(HA), &notice.payload);
    n.run(Duration::from_millis(1));
    assert_eq!(n.a.counters().retransmits, resent + 1, "sent again at once");
    // A second notice within the second: nothing more.
    n.a.handle(n.now, sock(MN), sock(HA), &notice.payload);
    n.run(Duration::from_millis(1));
    assert_eq!(n.a.counters().retransmits, resent + 1);
    n.run(Duration::from_millis(1500));
    assert!(failures(&n.a_events).is_empty(), "{:?}", n.a_events);
    assert_eq!(n.a.sas().len(), 1);
}
