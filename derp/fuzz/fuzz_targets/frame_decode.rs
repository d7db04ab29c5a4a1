//! Feeds arbitrary bytes to the relay frame decoder, as a relay reads them
//! from a client (or a client from the relay): it must never panic, whatever
//! decodes must encode back to a frame that decodes the same, and the
//! handshake boxes a frame carries must open or fail cleanly.
#![no_main]

use derp::proto::{ClientInfo, Frame, ServerInfo};
use derp::SecretKey;
use libfuzzer_sys::fuzz_target;

/// The keys and challenge the seed corpus was sealed with
/// (`tests/tests/fuzz_corpus.rs`), so seeded boxes really open.
const CLIENT: [u8; 32] = [0x11; 32];
const SERVER: [u8; 32] = [0x22; 32];
const CHALLENGE: [u8; 16] = [7; 16];

fuzz_target!(|data: &[u8]| {
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(frame)) = derp::proto::decode(&mut buf) {
        let encoded = frame.to_bytes().expect("a decoded frame encodes");
        let mut again = bytes::BytesMut::from(&encoded[..]);
        assert_eq!(derp::proto::decode(&mut again).ok().flatten().as_ref(), Some(&frame));
        assert!(again.is_empty(), "re-encoding added bytes");
        match frame {
            Frame::ClientInfo { .. } => {
                let server = SecretKey::from_bytes(SERVER);
                let _ = ClientInfo::open(frame, &server, &CHALLENGE, None);
            }
            Frame::ServerInfo { .. } | Frame::Health { .. } => {
                let client = SecretKey::from_bytes(CLIENT);
                let server = SecretKey::from_bytes(SERVER).public();
                let _ = ServerInfo::open(frame, &client, &server);
            }
            _ => {}
        }
    }
});
