//! PCP (RFC 6887) MAP messages: the sans-IO codec.
//!
//! PCP is NAT-PMP's successor on the same port (5351): a 24-byte header and,
//! for the MAP opcode, a 36-byte body naming the mapping by a client-chosen
//! nonce, so a renewal or a delete (lifetime 0) refers to the same mapping.
//! Addresses are 16 bytes, IPv4 as IPv4-mapped IPv6. A NAT-PMP-only gateway
//! answers with version 0 ([`DecodeError::Version`]), which tells the client
//! to fall back.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The protocol version this codec speaks.
pub const VERSION: u8 = 2;
const OP_MAP: u8 = 1;
const RESPONSE_BIT: u8 = 0x80;
const UDP: u8 = 17;
const HEADER: usize = 24;
const MAP_BODY: usize = 36;

/// A MAP request: map UDP `internal_port` of `client` (a lifetime of 0
/// deletes the mapping named by `nonce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRequest {
    /// Seconds asked for.
    pub lifetime: u32,
    /// The client's own address (the gateway checks it is the sender's).
    pub client: Ipv4Addr,
    /// Names this mapping across renewals.
    pub nonce: [u8; 12],
    /// The client's port.
    pub internal_port: u16,
    /// The public port asked for (0: any).
    pub external_port: u16,
    /// The public address asked for (unspecified: any).
    pub external_addr: Ipv4Addr,
}

/// The gateway's answer to a MAP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapResponse {
    /// 0 is success (RFC 6887 §7.4: 2 not authorized, 8 no resources, …).
    pub result: u8,
    /// Seconds the mapping lasts (on an error: how long the error holds).
    pub lifetime: u32,
    /// Seconds since the gateway's mappings were last lost.
    pub epoch: u32,
    /// The request's nonce.
    pub nonce: [u8; 12],
    /// The client's port.
    pub internal_port: u16,
    /// The public port assigned.
    pub external_port: u16,
    /// The public address assigned.
    pub external_addr: Ipv4Addr,
}

/// Why the gateway's bytes are no PCP MAP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than a MAP message.
    #[error("PCP message too short ({0} bytes)")]
    Short(usize),
    /// Another version: 0 is a NAT-PMP-only gateway.
    #[error("not PCP version 2 but {0}")]
    Version(u8),
    /// Not an answer to MAP, or not for UDP.
    #[error("not a PCP MAP answer for UDP (opcode {opcode:#x}, protocol {protocol})")]
    NotMap {
        /// The opcode byte.
        opcode: u8,
        /// The protocol field.
        protocol: u8,
    },
    /// The public address is no IPv4 address.
    #[error("PCP answer maps to a non-IPv4 address {0}")]
    NotIpv4(Ipv6Addr),
}

/// An ANNOUNCE request (opcode 0, no body): asks only whether the gateway
/// speaks PCP.
pub fn announce_request(client: Ipv4Addr) -> Vec<u8> {
    let mut b = vec![VERSION, 0, 0, 0, 0, 0, 0, 0];
    b.extend_from_slice(&client.to_ipv6_mapped().octets());
    b
}

/// Whether `b` is a PCP answer of any opcode (version 2, the response bit,
/// a whole header).
pub fn is_answer(b: &[u8]) -> bool {
    b.len() >= HEADER
        && b.first() == Some(&VERSION)
        && b.get(1).is_some_and(|op| op & RESPONSE_BIT != 0)
}

impl MapRequest {
    /// The datagram.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER + MAP_BODY);
        b.extend_from_slice(&[VERSION, OP_MAP, 0, 0]);
        b.extend_from_slice(&self.lifetime.to_be_bytes());
        b.extend_from_slice(&self.client.to_ipv6_mapped().octets());
        put_body(&mut b, &self.nonce, self.internal_port, self.external_port, self.external_addr);
        b
    }

    /// Parses a request (the gateway's side; for tests and round trips).
    pub fn decode(b: &[u8]) -> Result<MapRequest, DecodeError> {
        let m = Message::parse(b, false)?;
        Ok(MapRequest {
            lifetime: m.lifetime,
            client: ipv4(m.header_addr)?,
            nonce: m.nonce,
            internal_port: m.internal_port,
            external_port: m.external_port,
            external_addr: ipv4(m.external_addr)?,
        })
    }
}

impl MapResponse {
    /// The datagram (the gateway's side; for tests and round trips).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER + MAP_BODY);
        b.extend_from_slice(&[VERSION, RESPONSE_BIT | OP_MAP, 0, self.result]);
        b.extend_from_slice(&self.lifetime.to_be_bytes());
        b.extend_from_slice(&self.epoch.to_be_bytes());
        b.extend_from_slice(&[0; 12]);
        put_body(&mut b, &self.nonce, self.internal_port, self.external_port, self.external_addr);
        b
    }

    /// Parses the gateway's answer. Options after the body are ignored.
    pub fn decode(b: &[u8]) -> Result<MapResponse, DecodeError> {
        let m = Message::parse(b, true)?;
        // An error answer may carry any address; only a success must be IPv4.
        let external_addr = match m.result {
            0 => ipv4(m.external_addr)?,
            _ => m.external_addr.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
        };
        Ok(MapResponse {
            result: m.result,
            lifetime: m.lifetime,
            epoch: u32::from_be_bytes(word(&m.header_addr)),
            nonce: m.nonce,
            internal_port: m.internal_port,
            external_port: m.external_port,
            external_addr,
        })
    }
}

/// The fields requests and answers share; `header_addr` is the request's
/// client address, or an answer's epoch and reserved bytes.
struct Message {
    result: u8,
    lifetime: u32,
    header_addr: [u8; 16],
    nonce: [u8; 12],
    internal_port: u16,
    external_port: u16,
    external_addr: Ipv6Addr,
}

impl Message {
    fn parse(b: &[u8], response: bool) -> Result<Message, DecodeError> {
        let version = *b.first().ok_or(DecodeError::Short(0))?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let Some(fixed) = b.get(..HEADER + MAP_BODY) else {
            return Err(DecodeError::Short(b.len()));
        };
        let mut f = [0u8; HEADER + MAP_BODY];
        f.copy_from_slice(fixed);
        let expected = if response { RESPONSE_BIT | OP_MAP } else { OP_MAP };
        let protocol = f[36];
        if f[1] != expected || protocol != UDP {
            return Err(DecodeError::NotMap { opcode: f[1], protocol });
        }
        let pick = |at: usize| [f[at], f[at + 1]];
        let mut header_addr = [0; 16];
        header_addr.copy_from_slice(&f[8..24]);
        let mut nonce = [0; 12];
        nonce.copy_from_slice(&f[24..36]);
        let mut external = [0; 16];
        external.copy_from_slice(&f[44..60]);
        Ok(Message {
            result: if response { f[3] } else { 0 },
            lifetime: u32::from_be_bytes([f[4], f[5], f[6], f[7]]),
            header_addr,
            nonce,
            internal_port: u16::from_be_bytes(pick(40)),
            external_port: u16::from_be_bytes(pick(42)),
            external_addr: Ipv6Addr::from(external),
        })
    }
}

/// The MAP body both directions share.
fn put_body(b: &mut Vec<u8>, nonce: &[u8; 12], internal: u16, external: u16, addr: Ipv4Addr) {
    b.extend_from_slice(nonce);
    b.extend_from_slice(&[UDP, 0, 0, 0]);
    b.extend_from_slice(&internal.to_be_bytes());
    b.extend_from_slice(&external.to_be_bytes());
    b.extend_from_slice(&addr.to_ipv6_mapped().octets());
}

fn word(b: &[u8; 16]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}

fn ipv4(addr: impl Into<Ipv6Addr>) -> Result<Ipv4Addr, DecodeError> {
    let addr = addr.into();
    addr.to_ipv4_mapped().ok_or(DecodeError::NotIpv4(addr))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NONCE: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

    #[test]
    fn hex_snapshots() {
        let req = MapRequest {
            lifetime: 7200,
            client: Ipv4Addr::new(10, 98, 101, 2),
            nonce: NONCE,
            internal_port: 41642,
            external_port: 41642,
            external_addr: Ipv4Addr::UNSPECIFIED,
        };
        assert_eq!(
            hex::encode(req.encode()),
            concat!(
                "0201000000001c2000000000000000000000ffff0a626502",
                "000102030405060708090a0b11000000a2aaa2aa00000000000000000000ffff00000000"
            )
        );
        // miniupnpd 2.3.1's answer, captured in a router namespace.
        let answer = hex::decode(concat!(
            "0281000000001c200000d7e0000000000000000000000000",
            "000102030405060708090a0b11000000a2aaa2aa00000000000000000000ffff0a62000b"
        ))
        .unwrap();
        let decoded = MapResponse::decode(&answer).unwrap();
        assert_eq!(
            decoded,
            MapResponse {
                result: 0,
                lifetime: 7200,
                epoch: 55264,
                nonce: NONCE,
                internal_port: 41642,
                external_port: 41642,
                external_addr: Ipv4Addr::new(10, 98, 0, 11),
            }
        );
        assert_eq!(decoded.encode(), answer);
    }

    #[test]
    fn announce() {
        let req = announce_request(Ipv4Addr::new(10, 98, 101, 2));
        assert_eq!(hex::encode(&req), "020000000000000000000000000000000000ffff0a626502");
        let mut answer = vec![2, 0x80];
        answer.resize(HEADER, 0);
        assert!(is_answer(&answer));
        assert!(!is_answer(&req));
        assert!(!is_answer(&answer[..23]));
        assert!(!is_answer(&[0, 0x80, 0, 1, 0, 0, 0, 0]));
    }

    #[test]
    fn bad_answers_are_errors() {
        assert_eq!(MapResponse::decode(&[]), Err(DecodeError::Short(0)));
        // A NAT-PMP gateway's "unsupported version".
        assert_eq!(MapResponse::decode(&[0, 0x81, 0, 1, 0, 0, 0, 0]), Err(DecodeError::Version(0)));
        assert_eq!(MapResponse::decode(&[2, 0x81, 0, 0]), Err(DecodeError::Short(4)));
        let mut other = vec![2, 0x82];
        other.resize(60, 0);
        other[36] = UDP;
        assert_eq!(
            MapResponse::decode(&other),
            Err(DecodeError::NotMap { opcode: 0x82, protocol: UDP })
        );
        // A success that maps to an IPv6 address.
        let mut v6 = vec![2, 0x81];
        v6.resize(60, 0);
        v6[36] = UDP;
        v6[58] = 1;
        assert!(matches!(MapResponse::decode(&v6), Err(DecodeError::NotIpv4(_))));
    }

    fn request() -> impl Strategy<Value = MapRequest> {
        (any::<u32>(), any::<[u8; 4]>(), any::<[u8; 12]>(), any::<u16>(), any::<u16>())
            .prop_flat_map(|(lifetime, client, nonce, i, e)| {
                any::<[u8; 4]>().prop_map(move |ext| MapRequest {
                    lifetime,
                    client: client.into(),
                    nonce,
                    internal_port: i,
                    external_port: e,
                    external_addr: ext.into(),
                })
            })
    }

    fn response() -> impl Strategy<Value = MapResponse> {
        (any::<u32>(), any::<u32>(), any::<[u8; 12]>(), any::<u16>(), any::<u16>()).prop_flat_map(
            |(lifetime, epoch, nonce, i, e)| {
                (any::<u8>(), any::<[u8; 4]>()).prop_map(move |(result, ext)| MapResponse {
                    result,
                    lifetime,
                    epoch,
                    nonce,
                    internal_port: i,
                    external_port: e,
                    external_addr: ext.into(),
                })
            },
        )
    }

    proptest! {
        #[test]
        fn requests_round_trip(r in request()) {
            prop_assert_eq!(MapRequest::decode(&r.encode()), Ok(r));
        }

        #[test]
        fn responses_round_trip(r in response()) {
            prop_assert_eq!(MapResponse::decode(&r.encode()), Ok(r));
        }

        #[test]
        fn any_bytes_decode_without_panic(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = MapResponse::decode(&b);
            let _ = MapRequest::decode(&b);
        }
    }
}
