//! Feeds arbitrary datagrams to the STUN parsers: they must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = derp::stun::parse_binding_request(data);
    let _ = derp::stun::parse_binding_response(data);
});
