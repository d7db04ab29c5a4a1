//! Disco (path discovery) messages and their plaintext encoding.
//!
//! Three messages find and keep a direct UDP path between two peers:
//! - [`Ping`]: "are you there at this address?", carrying a transaction id and
//!   the sender's node key (so a receiver can tie the disco key to a node);
//! - [`Pong`]: the answer, echoing the transaction id and the source address the
//!   receiver saw the ping come from (a free STUN result for the pinger);
//! - [`CallMeMaybe`]: sent through the relay, listing the sender's endpoints, so
//!   the receiver pings them and opens its own NAT toward the sender.
//!
//! This module only turns messages into bytes and back; [`crate::wire`] seals
//! them into datagrams. Layout (all integers big-endian):
//!
//! ```text
//! type:u8 version:u8 body
//! ping          (0x01): tx_id[12] node_key[32] [padding…]
//! pong          (0x02): tx_id[12] addr[16] port:u16 [ignored…]
//! call-me-maybe (0x03): (addr[16] port:u16) × n, n ≤ 64
//! ```
//!
//! Addresses are 16-byte IPv6; IPv4 travels as IPv4-mapped (`::ffff:a.b.c.d`).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::key::NodeKey;

/// The disco message version this crate writes.
pub const DISCO_VERSION: u8 = 1;

/// At most this many endpoints in one [`CallMeMaybe`].
pub const MAX_CALL_ME_MAYBE_ENDPOINTS: usize = 64;

const TYPE_PING: u8 = 0x01;
const TYPE_PONG: u8 = 0x02;
const TYPE_CALL_ME_MAYBE: u8 = 0x03;
const ADDR_LEN: usize = 18;

/// A ping's transaction id, echoed by the pong.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxId(pub [u8; 12]);

impl std::fmt::Debug for TxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tx:{}", hex::encode(self.0))
    }
}

/// "Are you there at this address?"
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// Chosen at random by the pinger.
    pub tx_id: TxId,
    /// The pinger's node key.
    pub node_key: NodeKey,
}

/// The answer to a [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    /// The ping's transaction id.
    pub tx_id: TxId,
    /// The source address the ping arrived from, as the ponger saw it.
    pub src: SocketAddr,
}

/// "Ping me at these endpoints", sent through the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallMeMaybe {
    /// The sender's UDP endpoint candidates.
    pub endpoints: Vec<SocketAddr>,
}

/// A disco message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// See [`Ping`].
    Ping(Ping),
    /// See [`Pong`].
    Pong(Pong),
    /// See [`CallMeMaybe`].
    CallMeMaybe(CallMeMaybe),
}

/// Why a disco payload did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than its type needs.
    #[error("disco message truncated")]
    Truncated,
    /// A message type this version does not know.
    #[error("unknown disco message type {0:#04x}")]
    UnknownType(u8),
    /// A call-me-maybe whose body is not a whole number of endpoints, or too many.
    #[error("malformed call-me-maybe endpoint list")]
    BadEndpointList,
}

impl Message {
    /// Appends the plaintext encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::Ping(ping) => {
                out.extend_from_slice(&[TYPE_PING, DISCO_VERSION]);
                out.extend_from_slice(&ping.tx_id.0);
                out.extend_from_slice(ping.node_key.as_bytes());
            }
            Message::Pong(pong) => {
                out.extend_from_slice(&[TYPE_PONG, DISCO_VERSION]);
                out.extend_from_slice(&pong.tx_id.0);
                encode_addr(pong.src, out);
            }
            Message::CallMeMaybe(cmm) => {
                out.extend_from_slice(&[TYPE_CALL_ME_MAYBE, DISCO_VERSION]);
                for ep in cmm.endpoints.iter().take(MAX_CALL_ME_MAYBE_ENDPOINTS) {
                    encode_addr(*ep, out);
                }
            }
        }
    }

    /// Parses a plaintext payload. Any version is accepted; bytes a newer
    /// version appends to ping and pong are ignored.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let ([kind, _version], body) = split::<2>(bytes)?;
        match kind {
            TYPE_PING => {
                let (tx_id, rest) = split::<12>(body)?;
                let (key, _padding) = split::<32>(rest)?;
                Ok(Message::Ping(Ping { tx_id: TxId(tx_id), node_key: NodeKey::from_bytes(key) }))
            }
            TYPE_PONG => {
                let (tx_id, rest) = split::<12>(body)?;
                let (addr, _rest) = split::<ADDR_LEN>(rest)?;
                Ok(Message::Pong(Pong { tx_id: TxId(tx_id), src: decode_addr(addr) }))
            }
            TYPE_CALL_ME_MAYBE => {
                let chunks = body.chunks_exact(ADDR_LEN);
                if !chunks.remainder().is_empty() || chunks.len() > MAX_CALL_ME_MAYBE_ENDPOINTS {
                    return Err(DecodeError::BadEndpointList);
                }
                let endpoints = chunks
                    .map(|c| split::<ADDR_LEN>(c).map(|(a, _)| decode_addr(a)))
                    .collect::<Result<_, _>>()?;
                Ok(Message::CallMeMaybe(CallMeMaybe { endpoints }))
            }
            other => Err(DecodeError::UnknownType(other)),
        }
    }
}

/// Splits off the first `N` bytes as an array.
fn split<const N: usize>(bytes: &[u8]) -> Result<([u8; N], &[u8]), DecodeError> {
    let (head, rest) = bytes.split_at_checked(N).ok_or(DecodeError::Truncated)?;
    let head = <[u8; N]>::try_from(head).map_err(|_| DecodeError::Truncated)?;
    Ok((head, rest))
}

fn encode_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn decode_addr(bytes: [u8; ADDR_LEN]) -> SocketAddr {
    let [ip @ .., p0, p1] = bytes;
    let ip = Ipv6Addr::from(ip);
    let ip = match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip),
    };
    SocketAddr::new(ip, u16::from_be_bytes([p0, p1]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(msg: &Message) -> String {
        let mut out = Vec::new();
        msg.encode(&mut out);
        hex::encode(out)
    }

    #[test]
    fn ping_snapshot() {
        let msg =
            Message::Ping(Ping { tx_id: TxId([1; 12]), node_key: NodeKey::from_bytes([0xaa; 32]) });
        assert_eq!(encoded(&msg), format!("0101{}{}", "01".repeat(12), "aa".repeat(32)));
    }

    #[test]
    fn pong_snapshot() {
        let msg =
            Message::Pong(Pong { tx_id: TxId([2; 12]), src: "192.0.2.7:41641".parse().unwrap() });
        assert_eq!(
            encoded(&msg),
            format!("0201{}00000000000000000000ffffc0000207a2a9", "02".repeat(12))
        );
    }

    #[test]
    fn call_me_maybe_snapshot() {
        let msg = Message::CallMeMaybe(CallMeMaybe {
            endpoints: vec!["10.0.0.1:1".parse().unwrap(), "[2001:db8::1]:443".parse().unwrap()],
        });
        assert_eq!(
            encoded(&msg),
            concat!(
                "0301",
                "00000000000000000000ffff0a0000010001",
                "20010db800000000000000000000000101bb"
            )
        );
    }

    #[test]
    fn malformed_payloads_are_refused() {
        assert_eq!(Message::decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(Message::decode(&[1, 1, 0]), Err(DecodeError::Truncated));
        assert_eq!(Message::decode(&[9, 1]), Err(DecodeError::UnknownType(9)));
        assert_eq!(Message::decode(&[3, 1, 0]), Err(DecodeError::BadEndpointList));
        let too_many = [vec![3, 1], vec![0; ADDR_LEN * 65]].concat();
        assert_eq!(Message::decode(&too_many), Err(DecodeError::BadEndpointList));
    }

    #[test]
    fn ping_padding_is_ignored() {
        let ping =
            Message::Ping(Ping { tx_id: TxId([3; 12]), node_key: NodeKey::from_bytes([4; 32]) });
        let mut out = Vec::new();
        ping.encode(&mut out);
        out.extend_from_slice(&[0; 100]);
        assert_eq!(Message::decode(&out).unwrap(), ping);
    }

    pub(crate) fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_filter("not v4-mapped", |(ip, _)| Ipv6Addr::from(*ip)
                    .to_ipv4_mapped()
                    .is_none())
                .prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    pub(crate) fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<[u8; 12]>(), any::<[u8; 32]>()).prop_map(|(t, k)| Message::Ping(Ping {
                tx_id: TxId(t),
                node_key: NodeKey::from_bytes(k),
            })),
            (any::<[u8; 12]>(), arb_addr())
                .prop_map(|(t, src)| Message::Pong(Pong { tx_id: TxId(t), src })),
            proptest::collection::vec(arb_addr(), 0..=MAX_CALL_ME_MAYBE_ENDPOINTS)
                .prop_map(|endpoints| Message::CallMeMaybe(CallMeMaybe { endpoints })),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(msg in arb_message()) {
            let mut out = Vec::new();
            msg.encode(&mut out);
            prop_assert_eq!(Message::decode(&out).unwrap(), msg);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Message::decode(&bytes);
        }
    }
}
