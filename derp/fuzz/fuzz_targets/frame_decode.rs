//! Feeds arbitrary bytes to the relay frame decoder: it must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(frame)) = derp::proto::decode(&mut buf) {
        // Whatever decodes must encode again.
        let _ = frame.to_bytes();
    }
});
