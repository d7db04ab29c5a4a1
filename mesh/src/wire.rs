//! Sealed disco datagrams, and telling disco, QUIC and WireGuard apart.
//!
//! A node's one UDP socket carries three protocols. [`classify`] sorts a
//! datagram by its first bytes:
//!
//! 1. **Disco**: starts with [`DISCO_MAGIC`] `2a 4d 44 49 53 43` (`*MDISC`) and is
//!    at least [`MIN_DISCO_LEN`] long. The first byte `0x2a` has both top bits
//!    clear, so it is neither a QUIC long header (`0x80` set) nor a QUIC short
//!    header (`0x40` fixed bit set; the magic socket turns off fixed-bit greasing,
//!    RFC 9287), and it is not a WireGuard type (1..=4).
//! 2. **WireGuard**: a type byte 1..=4 followed by three zero bytes.
//! 3. **STUN**: the two top bits of the first byte clear, at least 20 bytes, and
//!    the RFC 5389 magic cookie `21 12 a4 42` at offset 4 (the answers to the
//!    node's own STUN probes, which run while the socket carries traffic). A
//!    binding response (`01 01 …`) never looks like WireGuard (second byte 1),
//!    and WireGuard is tested first anyway.
//! 4. **QUIC**: the first byte has `0x80` (long header) or `0x40` (fixed bit) set.
//! 5. Anything else is **Unknown** and dropped.
//!
//! A disco datagram is:
//!
//! ```text
//! magic[6] | sender disco public key[32] | nonce[24] | crypto_box(payload) (payload + 16)
//! ```
//!
//! `crypto_box` is NaCl's box (X25519, XSalsa20-Poly1305) between the sender's and
//! the receiver's disco keys; the payload is a [`Message`] encoding.

use crypto_box::aead::Aead;
use crypto_box::SalsaBox;

use crate::disco::{DecodeError, Message};
use crate::key::{DiscoKey, DiscoSecret};

/// The first six bytes of every disco datagram.
pub const DISCO_MAGIC: [u8; 6] = *b"*MDISC";

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = DISCO_MAGIC.len() + KEY_LEN + NONCE_LEN;

/// A STUN header's length: type, length, cookie, transaction id.
const STUN_HEADER_LEN: usize = 20;

/// The shortest valid disco datagram: header plus an empty sealed payload.
pub const MIN_DISCO_LEN: usize = HEADER_LEN + TAG_LEN;

/// What protocol a datagram on the shared socket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// A sealed path probe.
    Disco,
    /// QUIC, for quinn.
    Quic,
    /// WireGuard, for the tunnel.
    WireGuard,
    /// STUN, the answer to one of our endpoint probes.
    Stun,
    /// None of these; drop it.
    Unknown,
}

/// Sorts a datagram by its first bytes (see the module docs for the rule).
pub fn classify(datagram: &[u8]) -> PacketKind {
    if datagram.len() >= MIN_DISCO_LEN && datagram.starts_with(&DISCO_MAGIC) {
        return PacketKind::Disco;
    }
    match datagram {
        [1..=4, 0, 0, 0, ..] => PacketKind::WireGuard,
        [first, _, _, _, c0, c1, c2, c3, ..]
            if first & 0xc0 == 0
                && datagram.len() >= STUN_HEADER_LEN
                && u32::from_be_bytes([*c0, *c1, *c2, *c3]) == derp::stun::MAGIC_COOKIE =>
        {
            PacketKind::Stun
        }
        [first, ..] if first & 0xc0 != 0 => PacketKind::Quic,
        _ => PacketKind::Unknown,
    }
}

/// Why a disco datagram could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Not a disco datagram: wrong magic or too short.
    #[error("not a disco datagram")]
    NotDisco,
    /// The box did not open: wrong keys or tampered bytes.
    #[error("disco datagram failed authentication")]
    Unauthentic,
    /// The box opened but its payload did not decode.
    #[error("disco payload: {0}")]
    Payload(#[from] DecodeError),
}

/// Seals `msg` from `sender` to `recipient` under `nonce`.
///
/// The nonce must never repeat for a key pair; callers draw it at random.
pub fn seal(sender: &DiscoSecret, recipient: DiscoKey, nonce: [u8; 24], msg: &Message) -> Vec<u8> {
    Sealer::new(sender, recipient).seal(nonce, msg)
}

/// Seals for one recipient with the key exchange done once: birthday
/// probing sends thousands of pings to one peer.
pub(crate) struct Sealer {
    cipher: SalsaBox,
    sender: DiscoKey,
}

impl Sealer {
    pub(crate) fn new(sender: &DiscoSecret, recipient: DiscoKey) -> Self {
        Self {
            cipher: SalsaBox::new(&recipient.to_box_key(), sender.box_key()),
            sender: sender.public(),
        }
    }

    /// What [`seal`] returns.
    pub(crate) fn seal(&self, nonce: [u8; 24], msg: &Message) -> Vec<u8> {
        let mut plain = Vec::with_capacity(64);
        msg.encode(&mut plain);
        let nonce_ga = crypto_box::Nonce::from(nonce);
        let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&DISCO_MAGIC);
        out.extend_from_slice(self.sender.as_bytes());
        out.extend_from_slice(&nonce);
        match self.cipher.encrypt(&nonce_ga, plain.as_slice()) {
            Ok(sealed) => out.extend_from_slice(&sealed),
            // Encryption only fails for AAD or oversized input, neither of which we pass.
            Err(_) => out.clear(),
        }
        out
    }
}

/// The sender's disco key, read without opening the box (to find the peer).
pub fn sender(datagram: &[u8]) -> Result<DiscoKey, OpenError> {
    let (key, _, _) = split_header(datagram)?;
    Ok(key)
}

/// Opens a disco datagram addressed to `receiver`.
pub fn open(receiver: &DiscoSecret, datagram: &[u8]) -> Result<(DiscoKey, Message), OpenError> {
    let (sender, nonce, sealed) = split_header(datagram)?;
    let cipher = SalsaBox::new(&sender.to_box_key(), receiver.box_key());
    let plain = cipher
        .decrypt(&crypto_box::Nonce::from(nonce), sealed)
        .map_err(|_| OpenError::Unauthentic)?;
    Ok((sender, Message::decode(&plain)?))
}

fn split_header(datagram: &[u8]) -> Result<(DiscoKey, [u8; NONCE_LEN], &[u8]), OpenError> {
    if classify(datagram) != PacketKind::Disco {
        return Err(OpenError::NotDisco);
    }
    let rest = datagram.strip_prefix(&DISCO_MAGIC).ok_or(OpenError::NotDisco)?;
    let (key, rest) = rest.split_at_checked(KEY_LEN).ok_or(OpenError::NotDisco)?;
    let (nonce, sealed) = rest.split_at_checked(NONCE_LEN).ok_or(OpenError::NotDisco)?;
    let key = <[u8; KEY_LEN]>::try_from(key).map_err(|_| OpenError::NotDisco)?;
    let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| OpenError::NotDisco)?;
    Ok((DiscoKey::from_bytes(key), nonce, sealed))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::disco::tests::arb_message;
    use crate::disco::{Ping, TxId};
    use crate::key::NodeKey;
    use proptest::prelude::*;

    fn keys() -> (DiscoSecret, DiscoSecret) {
        (DiscoSecret::from_bytes([1; 32]), DiscoSecret::from_bytes([2; 32]))
    }

    fn ping() -> Message {
        Message::Ping(Ping { tx_id: TxId([9; 12]), node_key: NodeKey::from_bytes([5; 32]) })
    }

    #[test]
    fn sealed_ping_snapshot() {
        let (a, b) = keys();
        let packet = seal(&a, b.public(), [7; 24], &ping());
        assert_eq!(packet.len(), MIN_DISCO_LEN + 2 + 12 + 32);
        let hex = hex::encode(&packet);
        assert_eq!(&hex[..12], "2a4d44495343");
        assert_eq!(&hex[12..76], hex::encode(a.public().as_bytes()));
        assert_eq!(&hex[76..124], "07".repeat(24));
        // The sealed part is deterministic for fixed keys and nonce.
        assert_eq!(
            &hex[124..],
            "47fe7c628db6b8bb9af984a9b5e007272985df62f22db013f0a59a7e2a33f0a6185ddeced927eae15c29cf114c2f6c786772b8068b4a5bcef2fa51f0270e"
        );
    }

    #[test]
    fn wrong_receiver_or_tampering_is_unauthentic() {
        let (a, b) = keys();
        let mut packet = seal(&a, b.public(), [7; 24], &ping());
        assert_eq!(open(&a, &packet), Err(OpenError::Unauthentic));
        if let Some(last) = packet.last_mut() {
            *last ^= 1;
        }
        assert_eq!(open(&b, &packet), Err(OpenError::Unauthentic));
        assert_eq!(open(&b, b"*MDISC"), Err(OpenError::NotDisco));
    }

    #[test]
    fn classify_by_first_bytes() {
        let (a, b) = keys();
        assert_eq!(classify(&seal(&a, b.public(), [0; 24], &ping())), PacketKind::Disco);
        assert_eq!(classify(&[1, 0, 0, 0, 9, 9]), PacketKind::WireGuard);
        assert_eq!(classify(&[4, 0, 0, 0]), PacketKind::WireGuard);
        assert_eq!(classify(&[5, 0, 0, 0]), PacketKind::Unknown);
        let txid = derp::stun::TransactionId([7; 12]);
        let answer = derp::stun::binding_response(txid, "192.0.2.1:41641".parse().unwrap());
        assert_eq!(classify(&answer), PacketKind::Stun);
        assert_eq!(classify(&derp::stun::binding_request(txid)), PacketKind::Stun);
        assert_eq!(classify(&answer[..19]), PacketKind::Unknown);
        assert_eq!(classify(&[0xc3, 0, 0, 0, 1]), PacketKind::Quic);
        assert_eq!(classify(&[0x41, 0xde, 0xad]), PacketKind::Quic);
        assert_eq!(classify(&[0x80, 0, 0, 0, 0]), PacketKind::Quic);
        // Magic but too short to hold a box.
        assert_eq!(classify(b"*MDISC"), PacketKind::Unknown);
        assert_eq!(classify(&[]), PacketKind::Unknown);
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(msg in arb_message(), nonce in any::<[u8; 24]>()) {
            let (a, b) = keys();
            let packet = seal(&a, b.public(), nonce, &msg);
            prop_assert_eq!(sender(&packet).unwrap(), a.public());
            prop_assert_eq!(open(&b, &packet).unwrap(), (a.public(), msg));
        }

        #[test]
        fn open_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (_, b) = keys();
            let packet = [DISCO_MAGIC.as_slice(), &tail].concat();
            let _ = open(&b, &packet);
        }

        #[test]
        fn quic_and_wireguard_are_never_disco(first in 0u8..=255, rest in proptest::collection::vec(any::<u8>(), 0..100)) {
            let packet = [&[first][..], &rest].concat();
            let kind = classify(&packet);
            if first & 0xc0 != 0 || (1..=4).contains(&first) {
                prop_assert_ne!(kind, PacketKind::Disco);
            }
        }
    }
}
