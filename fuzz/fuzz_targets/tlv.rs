//! Any bytes through the DSMIPv6 UDP tunnel decoder.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = m6t_wire::tlv::decode(data);
});
