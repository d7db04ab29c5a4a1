//! Hex snapshots of every frame and property tests for the codec.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

fn key(b: u8) -> PublicKey {
    PublicKey::from_bytes([b; KEY_LEN])
}

fn hex_of(frame: &Frame) -> String {
    hex::encode(frame.to_bytes().unwrap())
}

fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(frame) = decode(&mut buf)? {
        out.push(frame);
    }
    Ok(out)
}

/// Each frame's encoding, written out by hand from the protocol page.
#[test]
fn hex_snapshots() {
    let k1 = "11".repeat(32);
    let k2 = "22".repeat(32);
    let cases: Vec<(Frame, String)> = vec![
        (
            Frame::ServerKey { key: key(0x11), challenge: [0xcc; CHALLENGE_LEN] },
            format!("0100000038{}{k1}{}", "44455250f09f9491", "cc".repeat(16)),
        ),
        (
            Frame::ClientInfo { key: key(0x11), sealed: Bytes::from_static(b"\xab\xcd") },
            format!("0200000022{k1}abcd"),
        ),
        (
            Frame::ServerInfo { sealed: Bytes::from_static(b"\x01\x02\x03") },
            "0300000003010203".into(),
        ),
        (
            Frame::SendPacket { dst: key(0x22), data: Bytes::from_static(b"hi") },
            format!("0400000022{k2}6869"),
        ),
        (
            Frame::RecvPacket { src: key(0x11), data: Bytes::from_static(b"hi") },
            format!("0500000022{k1}6869"),
        ),
        (Frame::KeepAlive, "0600000000".into()),
        (Frame::NotePreferred { preferred: true }, "070000000101".into()),
        (
            Frame::PeerGone { key: key(0x22), reason: PeerGoneReason::NotHere },
            format!("0800000021{k2}01"),
        ),
        (Frame::PeerPresent { key: key(0x11) }, format!("0900000020{k1}")),
        (
            Frame::ForwardPacket { src: key(0x11), dst: key(0x22), data: Bytes::from_static(b"x") },
            format!("0a00000041{k1}{k2}78"),
        ),
        (Frame::WatchConns, "1000000000".into()),
        (Frame::Ping { data: *b"01234567" }, "12000000083031323334353637".into()),
        (Frame::Pong { data: *b"01234567" }, "13000000083031323334353637".into()),
        (Frame::Health { problem: "bad".into() }, "1400000003626164".into()),
        (
            Frame::Restarting {
                reconnect_in: Duration::from_millis(500),
                try_for: Duration::from_secs(10),
            },
            "1500000008000001f400002710".into(),
        ),
    ];
    for (frame, expected) in cases {
        assert_eq!(hex_of(&frame), expected, "{frame:?}");
        let bytes = hex::decode(&expected).unwrap();
        assert_eq!(decode_all(&bytes).unwrap(), vec![frame]);
    }
}

#[test]
fn partial_input_waits_for_more() {
    let bytes = Frame::Ping { data: [7; 8] }.to_bytes().unwrap();
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(decode(&mut buf), Ok(None), "cut at {cut}");
    }
}

#[test]
fn unknown_frame_types_are_skipped() {
    let mut bytes = hex::decode("7f00000003aabbcc").unwrap();
    bytes.extend_from_slice(&Frame::KeepAlive.to_bytes().unwrap());
    assert_eq!(decode_all(&bytes).unwrap(), vec![Frame::KeepAlive]);
}

#[test]
fn oversized_header_is_rejected_before_payload() {
    let bytes = hex::decode("0400010001").unwrap();
    assert_eq!(
        decode_all(&bytes),
        Err(DecodeError::TooLarge { frame_type: 4, len: MAX_FRAME_LEN + 1 })
    );
}

#[test]
fn short_frames_are_typed_errors() {
    assert_eq!(
        decode_all(&hex::decode("0400000003aabbcc").unwrap()),
        Err(DecodeError::TooShort { frame_type: FrameType::SendPacket, len: 3, min: KEY_LEN })
    );
    assert_eq!(
        decode_all(&hex::decode("120000000101").unwrap()),
        Err(DecodeError::TooShort { frame_type: FrameType::Ping, len: 1, min: 8 })
    );
    let mut bad_magic = hex::decode("0100000038").unwrap();
    bad_magic.extend_from_slice(&[0u8; 56]);
    assert_eq!(decode_all(&bad_magic), Err(DecodeError::BadMagic));
    assert_eq!(decode_all(&hex::decode("1400000001ff").unwrap()), Err(DecodeError::InvalidUtf8));
}

#[test]
fn oversized_packet_cannot_be_encoded() {
    let frame = Frame::SendPacket { dst: key(1), data: Bytes::from(vec![0; MAX_FRAME_LEN]) };
    assert_eq!(frame.to_bytes(), Err(EncodeError::TooLarge { len: MAX_FRAME_LEN + KEY_LEN }));
    let max = Frame::ForwardPacket {
        src: key(1),
        dst: key(2),
        data: Bytes::from(vec![0; MAX_PACKET_SIZE]),
    };
    assert!(max.to_bytes().is_ok());
}

fn arb_key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; KEY_LEN]>().prop_map(PublicKey::from_bytes)
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_millis() -> impl Strategy<Value = Duration> {
    any::<u32>().prop_map(|ms| Duration::from_millis(ms.into()))
}

pub(crate) fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (arb_key(), any::<[u8; CHALLENGE_LEN]>())
            .prop_map(|(key, challenge)| Frame::ServerKey { key, challenge }),
        (arb_key(), arb_bytes(200)).prop_map(|(key, sealed)| Frame::ClientInfo { key, sealed }),
        arb_bytes(200).prop_map(|sealed| Frame::ServerInfo { sealed }),
        (arb_key(), arb_bytes(2000)).prop_map(|(dst, data)| Frame::SendPacket { dst, data }),
        (arb_key(), arb_bytes(2000)).prop_map(|(src, data)| Frame::RecvPacket { src, data }),
        Just(Frame::KeepAlive),
        any::<bool>().prop_map(|preferred| Frame::NotePreferred { preferred }),
        (arb_key(), any::<u8>())
            .prop_map(|(key, r)| Frame::PeerGone { key, reason: PeerGoneReason::from_byte(r) }),
        arb_key().prop_map(|key| Frame::PeerPresent { key }),
        (arb_key(), arb_key(), arb_bytes(2000)).prop_map(|(src, dst, data)| Frame::ForwardPacket {
            src,
            dst,
            data
        }),
        Just(Frame::WatchConns),
        any::<[u8; 8]>().prop_map(|data| Frame::Ping { data }),
        any::<[u8; 8]>().prop_map(|data| Frame::Pong { data }),
        ".{0,100}".prop_map(|problem| Frame::Health { problem }),
        (arb_millis(), arb_millis())
            .prop_map(|(reconnect_in, try_for)| Frame::Restarting { reconnect_in, try_for }),
    ]
}

proptest! {
    #[test]
    fn round_trip_every_frame(frames in proptest::collection::vec(arb_frame(), 1..8)) {
        let mut buf = BytesMut::new();
        for frame in &frames {
            frame.encode(&mut buf).unwrap();
        }
        prop_assert_eq!(decode_all(&buf).unwrap(), frames);
    }

    #[test]
    fn split_anywhere_round_trip(frame in arb_frame(), cut in any::<prop::sample::Index>()) {
        let bytes = frame.to_bytes().unwrap();
        let cut = cut.index(bytes.len() + 1);
        let mut buf = BytesMut::from(&bytes[..cut]);
        let first = decode(&mut buf).unwrap();
        buf.extend_from_slice(&bytes[cut..]);
        let got = match first {
            Some(f) => f,
            None => decode(&mut buf).unwrap().unwrap(),
        };
        prop_assert_eq!(got, frame);
    }

    /// The decoder never panics on arbitrary input and always makes progress.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            let before = buf.len();
            match decode(&mut buf) {
                Ok(Some(_)) => prop_assert!(buf.len() < before),
                Ok(None) | Err(_) => break,
            }
        }
    }
}
