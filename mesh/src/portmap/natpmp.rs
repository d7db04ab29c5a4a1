//! NAT-PMP (RFC 6886) messages: the sans-IO codec.
//!
//! A client asks the gateway on UDP port 5351 for its external address
//! (opcode 0) and for a UDP mapping (opcode 1) of an internal port; a
//! mapping's lifetime of zero deletes it. Every answer is parsed into a
//! [`Response`]; nothing here trusts a length or a field of the router's
//! bytes before checking it.

use std::net::Ipv4Addr;

/// The protocol version this codec speaks.
pub const VERSION: u8 = 0;
/// The gateway's port for NAT-PMP (and PCP).
pub const PORT: u16 = 5351;
const OP_EXTERNAL_ADDRESS: u8 = 0;
const OP_MAP_UDP: u8 = 1;
/// Answers carry the request's opcode plus this.
const OP_RESPONSE: u8 = 128;

/// A client's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// "Which public address do you have?"
    ExternalAddress,
    /// Map UDP `internal_port` (a lifetime of 0 deletes the mapping, and
    /// then `external_port` must be 0 too).
    MapUdp {
        /// The client's port.
        internal_port: u16,
        /// The public port asked for (the gateway may pick another).
        external_port: u16,
        /// Seconds.
        lifetime: u32,
    },
}

/// The gateway's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// The gateway's public address.
    ExternalAddress {
        /// Seconds since the gateway's mappings were last lost.
        epoch: u32,
        /// The address.
        addr: Ipv4Addr,
    },
    /// A mapping was made, renewed or deleted.
    MapUdp {
        /// Seconds since the gateway's mappings were last lost.
        epoch: u32,
        /// The client's port.
        internal_port: u16,
        /// The public port the gateway chose.
        external_port: u16,
        /// Seconds the mapping lasts.
        lifetime: u32,
    },
    /// The gateway refused (RFC 6886 §3.5: 1 unsupported version, 2 not
    /// authorized, 3 network failure, 4 out of resources, 5 unsupported
    /// opcode).
    Refused {
        /// The request's opcode.
        opcode: u8,
        /// The result code.
        code: u16,
    },
}

/// Why the gateway's bytes are no NAT-PMP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Too short for what it claims to be.
    #[error("NAT-PMP message too short ({0} bytes)")]
    Short(usize),
    /// Another version (a PCP server's answer, for example).
    #[error("not NAT-PMP version 0 but {0}")]
    Version(u8),
    /// An opcode this codec does not know.
    #[error("unknown NAT-PMP opcode {0}")]
    Opcode(u8),
}

impl Request {
    /// The datagram.
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            Request::ExternalAddress => vec![VERSION, OP_EXTERNAL_ADDRESS],
            Request::MapUdp { internal_port, external_port, lifetime } => {
                let mut b = vec![VERSION, OP_MAP_UDP, 0, 0];
                b.extend_from_slice(&internal_port.to_be_bytes());
                b.extend_from_slice(&external_port.to_be_bytes());
                b.extend_from_slice(&lifetime.to_be_bytes());
                b
            }
        }
    }

    /// Parses a request (the gateway's side; for tests and round trips).
    pub fn decode(b: &[u8]) -> Result<Request, DecodeError> {
        let (&version, &op) = match b {
            [v, op, ..] => (v, op),
            _ => return Err(DecodeError::Short(b.len())),
        };
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        match op {
            OP_EXTERNAL_ADDRESS => Ok(Request::ExternalAddress),
            OP_MAP_UDP => {
                let f = Fields(b);
                Ok(Request::MapUdp {
                    internal_port: f.u16(4)?,
                    external_port: f.u16(6)?,
                    lifetime: f.u32(8)?,
                })
            }
            other => Err(DecodeError::Opcode(other)),
        }
    }
}

impl Response {
    /// The datagram (the gateway's side; for tests and round trips).
    pub fn encode(&self) -> Vec<u8> {
        let (op, code, epoch) = match *self {
            Response::ExternalAddress { epoch, .. } => (OP_EXTERNAL_ADDRESS, 0, epoch),
            Response::MapUdp { epoch, .. } => (OP_MAP_UDP, 0, epoch),
            Response::Refused { opcode, code } => (opcode, code, 0),
        };
        let mut b = vec![VERSION, OP_RESPONSE | op];
        b.extend_from_slice(&code.to_be_bytes());
        b.extend_from_slice(&epoch.to_be_bytes());
        match *self {
            Response::ExternalAddress { addr, .. } => b.extend_from_slice(&addr.octets()),
            Response::MapUdp { internal_port, external_port, lifetime, .. } => {
                b.extend_from_slice(&internal_port.to_be_bytes());
                b.extend_from_slice(&external_port.to_be_bytes());
                b.extend_from_slice(&lifetime.to_be_bytes());
            }
            Response::Refused { .. } => {}
        }
        b
    }

    /// Parses the gateway's answer.
    pub fn decode(b: &[u8]) -> Result<Response, DecodeError> {
        let f = Fields(b);
        let version = f.u8(0)?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let op = f.u8(1)?;
        if op & OP_RESPONSE == 0 {
            return Err(DecodeError::Opcode(op));
        }
        let opcode = op & !OP_RESPONSE;
        let code = f.u16(2)?;
        if code != 0 {
            return Ok(Response::Refused { opcode, code });
        }
        let epoch = f.u32(4)?;
        match opcode {
            OP_EXTERNAL_ADDRESS => {
                Ok(Response::ExternalAddress { epoch, addr: Ipv4Addr::from(f.u32(8)?) })
            }
            OP_MAP_UDP => Ok(Response::MapUdp {
                epoch,
                internal_port: f.u16(8)?,
                external_port: f.u16(10)?,
                lifetime: f.u32(12)?,
            }),
            other => Err(DecodeError::Opcode(other)),
        }
    }
}

/// Big-endian fields of a message, each checked against its length.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn array<const N: usize>(&self, at: usize) -> Result<[u8; N], DecodeError> {
        self.0
            .get(at..at + N)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(DecodeError::Short(self.0.len()))
    }
    fn u8(&self, at: usize) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(at)?[0])
    }
    fn u16(&self, at: usize) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(at)?))
    }
    fn u32(&self, at: usize) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(at)?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hex_snapshots() {
        let map = Request::MapUdp { internal_port: 41641, external_port: 41641, lifetime: 7200 };
        assert_eq!(hex::encode(map.encode()), "00010000a2a9a2a900001c20");
        assert_eq!(hex::encode(Request::ExternalAddress.encode()), "0000");
        // miniupnpd 2.3.1's answers, captured in a router namespace.
        let answer = hex::decode("008000000000d7e00a62000b").unwrap();
        assert_eq!(
            Response::decode(&answer),
            Ok(Response::ExternalAddress { epoch: 55264, addr: Ipv4Addr::new(10, 98, 0, 11) })
        );
        let answer = hex::decode("008100000000d7e0a2a9a2a900001c20").unwrap();
        let mapped = Response::MapUdp {
            epoch: 55264,
            internal_port: 41641,
            external_port: 41641,
            lifetime: 7200,
        };
        assert_eq!(Response::decode(&answer), Ok(mapped));
        assert_eq!(mapped.encode(), answer);
        let refused = Response::Refused { opcode: 1, code: 2 };
        assert_eq!(hex::encode(refused.encode()), "0081000200000000");
    }

    #[test]
    fn bad_answers_are_errors() {
        assert_eq!(Response::decode(&[]), Err(DecodeError::Short(0)));
        assert_eq!(Response::decode(&[0, 0x81, 0, 0, 0]), Err(DecodeError::Short(5)));
        assert_eq!(Response::decode(&[2, 0x81, 0, 1]), Err(DecodeError::Version(2)));
        assert_eq!(Response::decode(&[0, 1, 0, 0]), Err(DecodeError::Opcode(1)));
        assert_eq!(Response::decode(&[0, 0x87, 0, 0, 0, 0, 0, 0]), Err(DecodeError::Opcode(7)));
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            Just(Request::ExternalAddress),
            (any::<u16>(), any::<u16>(), any::<u32>()).prop_map(|(i, e, l)| Request::MapUdp {
                internal_port: i,
                external_port: e,
                lifetime: l
            }),
        ]
    }

    fn response() -> impl Strategy<Value = Response> {
        prop_oneof![
            (any::<u32>(), any::<[u8; 4]>())
                .prop_map(|(epoch, a)| Response::ExternalAddress { epoch, addr: a.into() }),
            (any::<u32>(), any::<u16>(), any::<u16>(), any::<u32>()).prop_map(
                |(epoch, i, e, l)| {
                    Response::MapUdp { epoch, internal_port: i, external_port: e, lifetime: l }
                }
            ),
            (0u8..128, 1u16..).prop_map(|(opcode, code)| Response::Refused { opcode, code }),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(r in request()) {
            prop_assert_eq!(Request::decode(&r.encode()), Ok(r));
        }

        #[test]
        fn responses_round_trip(r in response()) {
            prop_assert_eq!(Response::decode(&r.encode()), Ok(r));
        }

        #[test]
        fn any_bytes_decode_without_panic(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Response::decode(&b);
            let _ = Request::decode(&b);
        }
    }
}
