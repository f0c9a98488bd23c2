//! Hostile IKE messages (RFC 7296 section 3) never panic the parser; what parses re-emits
//! without error, and a message's SK envelope splits or is refused for any IV/ICV size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use m6t_ike::{Message, Payload};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::parse(data) else {
        return;
    };
    let mut out = vec![0u8; m.emit_len()];
    m.emit(&mut out).expect("a parsed message re-emits");
    for p in &m.payloads {
        if let Payload::Encrypted(sk) = p {
            let _ = sk.split(16, 16);
            let _ = sk.split(8, 16);
            let _ = Payload::parse_chain(sk.first_inner, sk.data);
        }
    }
});
