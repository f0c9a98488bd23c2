//! Hostile datagrams against an IKE responder (RFC 7296) that already holds an established
//! IKE SA: the machine never panics, an unauthenticated datagram never changes the
//! established SA (state, addresses, CHILD_SAs), and half-open state stays within its cap.
//!
//! The input is a sequence of datagrams, each a 2-byte length then its bytes; the top bit
//! of the length sends it to port 4500 (non-ESP marker rules) instead of 500.
//!
//! Each input gets a copy of one responder established once (`fixtures::established`), all
//! at the instant it was established: the state a fresh responder has after the transcript,
//! without a Diffie-Hellman and an authentication per input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use m6t_ike::endpoint::IkeEvent;
use m6t_ike::fixtures::{established, HA, MN};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let (snapshot, now) = established();
    let now = *now;
    let mut r = snapshot.clone();
    let before = r.sas();
    assert_eq!(before.len(), 1, "the transcript establishes one SA");
    let mut rest = data;
    while rest.len() >= 2 {
        let head = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(head & 0x7fff).min(rest.len() - 2);
        let d = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let mut local = HA;
        let mut remote = MN;
        if head & 0x8000 != 0 {
            local.set_port(4500);
            remote.set_port(4500);
        }
        r.handle(now, local, remote, d);
        while r.poll_transmit().is_some() {}
        while let Some(e) = r.poll_event() {
            // Nothing unauthenticated may bring an SA or a CHILD_SA up or down; a refused
            // setup (a log line) is all it may cause.
            assert!(
                matches!(e, IkeEvent::Failed { .. }),
                "from unauthenticated input: {e:?}"
            );
        }
    }
    let after = r.sas();
    let established = after
        .iter()
        .find(|s| s.id == before[0].id)
        .expect("still there");
    assert_eq!(*established, before[0]);
    assert!(after.len() <= 1 + r.config().half_open_max);
    r.handle_timeout(now + Duration::from_secs(3600));
    assert!(r.sas().len() <= 1);
});
