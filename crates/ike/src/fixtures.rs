//! A fixed mobile node / home agent pair with deterministic seeds, shared by the fuzz
//! targets (fuzz/fuzz_targets/ike_responder.rs), their seed writer
//! (`cargo run -p m6t-ike --example ike_fuzz_seeds`) and benchmarks: the same bytes every run,
//! so a recorded initiator transcript establishes an SA with a fresh responder each time.

use crate::config::{ChildConfig, Identity, IkeConfig, PeerConfig};
use crate::endpoint::Endpoint;
use crate::suite::{ChildSuite, IkeSuite};
use crate::ts;
use m6t_ipsec::Mode;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Instant;

/// The home agent's IKE address.
pub const HA: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 500);
/// The mobile node's.
pub const MN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 500);
/// The mobile node's home address.
pub const HOA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);

fn config(initiator: bool) -> IkeConfig {
    let hoa = ts::prefix(IpAddr::V6(HOA), 128).expect("prefix");
    let (local_ts, remote_ts) = if initiator {
        (vec![hoa], vec![ts::any(true)])
    } else {
        (vec![ts::any(true)], vec![hoa])
    };
    let (me, peer) = if initiator {
        ("mn1@example.org", "ha.example.org")
    } else {
        ("ha.example.org", "mn1@example.org")
    };
    IkeConfig {
        proposals: vec![IkeSuite::parse("aes128gcm16-prfsha256-curve25519").expect("suite")],
        peers: vec![PeerConfig {
            name: "peer".into(),
            local_id: Identity::parse(me),
            remote_id: Identity::parse(peer),
            psk: b"fixture only".to_vec().into(),
            local_cert: None,
            trust: None,
            children: vec![ChildConfig {
                name: "payload".into(),
                mode: Mode::Tunnel,
                local_ts,
                remote_ts,
                proposals: vec![ChildSuite::parse("aes128gcm16").expect("suite")],
            }],
        }],
        ..IkeConfig::default()
    }
}

/// A fresh home agent (responder), always seeded alike.
pub fn responder() -> Endpoint {
    Endpoint::new(config(false), [2; 32])
}

/// A fresh mobile node (initiator), always seeded alike.
pub fn initiator() -> Endpoint {
    Endpoint::new(config(true), [1; 32])
}

/// The initiator's IKE_SA_INIT and IKE_AUTH requests of an exchange with [`responder`]: fed
/// to a fresh responder, they establish an IKE SA and a CHILD_SA.
pub fn transcript() -> &'static [Vec<u8>] {
    static T: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    T.get_or_init(|| {
        let now = Instant::now();
        let (mut i, mut r) = (initiator(), responder());
        i.connect(now, "peer", MN, HA).expect("configured");
        let mut sent = Vec::new();
        for _ in 0..2 {
            while let Some(t) = i.poll_transmit() {
                r.handle(now, HA, MN, &t.payload);
                sent.push(t.payload);
            }
            while let Some(t) = r.poll_transmit() {
                i.handle(now, MN, HA, &t.payload);
            }
        }
        sent
    })
}

/// A responder that has taken the [`transcript`], holding its one established IKE SA and
/// CHILD_SA with its datagrams and events drained, and the instant that happened at. Built
/// once (a Diffie-Hellman and an authentication); callers clone it per use, as the
/// `ike_responder` fuzz target does per input, and get the same state a fresh responder has
/// after the transcript, random generator included. Only with the `fixtures` feature: it
/// needs [`Endpoint`]'s `Clone`, which copies secrets.
#[cfg(any(test, feature = "fixtures"))]
pub fn established() -> &'static (Endpoint, Instant) {
    static E: OnceLock<(Endpoint, Instant)> = OnceLock::new();
    E.get_or_init(|| {
        let now = Instant::now();
        let mut r = responder();
        for m in transcript() {
            r.handle(now, HA, MN, m);
        }
        while r.poll_transmit().is_some() {}
        while r.poll_event().is_some() {}
        assert_eq!(r.sas().len(), 1, "the transcript establishes one SA");
        (r, now)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transcript_establishes_with_a_fresh_responder() {
        let now = Instant::now();
        let mut r = responder();
        for m in transcript() {
            r.handle(now, HA, MN, m);
        }
        assert_eq!(transcript().len(), 2);
        assert_eq!(r.counters().child_established, 1);
        assert_eq!(r.sas().len(), 1);
    }

    /// Everything `r` sends for `m` from the mobile node's address.
    fn answers(r: &mut Endpoint, now: Instant, m: &[u8]) -> Vec<Vec<u8>> {
        r.handle(now, HA, MN, m);
        std::iter::from_fn(|| r.poll_transmit().map(|t| t.payload)).collect()
    }

    #[test]
    fn a_clone_of_the_established_responder_acts_as_a_fresh_replay_and_alone() {
        let (snapshot, now) = established();
        let now = *now;
        let counters = *snapshot.counters();
        let mut copy = snapshot.clone();
        let mut fresh = responder();
        for m in transcript() {
            fresh.handle(now, HA, MN, m);
        }
        while fresh.poll_transmit().is_some() {}
        while fresh.poll_event().is_some() {}
        assert_eq!(copy.sas(), fresh.sas());
        assert_eq!(copy.counters(), fresh.counters());
        // The same answers byte for byte: a new IKE_SA_INIT draws SPI, nonce and key from
        // the generator (so its state was copied, not restarted), and a repeated IKE_AUTH
        // gets the stored response (so the SA's state was).
        for m in [init_with_spi(7), transcript()[1].clone()] {
            let (a, b) = (answers(&mut copy, now, &m), answers(&mut fresh, now, &m));
            assert_eq!(a.len(), 1);
            assert_eq!(a, b);
        }
        assert_eq!(copy.sas().len(), 2);
        // The copy's new half-open SA and counts stayed its own.
        assert_eq!(snapshot.sas().len(), 1);
        assert_eq!(*snapshot.counters(), counters);
    }

    /// The transcript's IKE_SA_INIT with another initiator SPI.
    fn init_with_spi(spi: u64) -> Vec<u8> {
        let mut m = transcript()[0].clone();
        m[0..8].copy_from_slice(&spi.to_be_bytes());
        m
    }

    #[test]
    fn one_source_gets_its_init_budget_and_no_more_and_others_keep_theirs() {
        let t0 = Instant::now();
        let mut r = responder();
        let burst = u64::from(r.config().init_burst);
        let rate = r.config().init_rate;
        let answered = |r: &mut Endpoint| std::iter::from_fn(|| r.poll_transmit()).count() as u64;
        // A flood from one address at one instant: the burst answered, the rest dropped
        // unread (counted), no half-open SA beyond the burst.
        for spi in 1..=1000u64 {
            r.handle(t0, HA, MN, &init_with_spi(spi));
        }
        assert_eq!(answered(&mut r), burst);
        assert_eq!(r.counters().drop_init_budget, 1000 - burst);
        assert!(r.sas().len() as u64 <= burst);
        // Another address of the same flood's time is answered.
        let other = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)), 500);
        r.handle(t0, HA, other, &init_with_spi(5000));
        assert_eq!(answered(&mut r), 1);
        // Refilled with the time elapsed, also at sub-millisecond spacing: a second's worth
        // of requests 100 us apart gets `rate` answers (give or take one).
        let mut n = 0;
        for i in 0..10_000u64 {
            let now = t0 + std::time::Duration::from_micros(100 * (i + 1));
            r.handle(now, HA, MN, &init_with_spi(10_000 + i));
            n += answered(&mut r);
        }
        assert!(
            n.abs_diff(u64::from(rate)) <= 1,
            "{n} answers in 1 s at {rate}/s"
        );
    }
}
