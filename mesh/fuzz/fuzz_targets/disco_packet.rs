//! Feeds arbitrary datagrams to the disco parser: the classifier, the sealed
//! datagram opener, and the plaintext message decoder. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh::disco::Message;
use mesh::{classify, wire, DiscoSecret};

fuzz_target!(|data: &[u8]| {
    let _ = classify(data);
    let _ = wire::sender(data);
    let receiver = DiscoSecret::from_bytes([1; 32]);
    let _ = wire::open(&receiver, data);
    if let Ok(msg) = Message::decode(data) {
        // What decodes must encode back to something that decodes the same.
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(Message::decode(&out).ok(), Some(msg));
    }
});
