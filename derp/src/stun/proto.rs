//! STUN (RFC 5389) binding requests and responses, free of I/O.
//!
//! Only what endpoint discovery needs: a client builds a binding request
//! with a random transaction id; a server answers with the source address it
//! saw in an XOR-MAPPED-ADDRESS attribute; the client matches the id and
//! reads the address back. FINGERPRINT is added to requests and checked
//! when present.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The fixed cookie in every RFC 5389 header.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// Pre-RFC 5389 servers put XOR-MAPPED-ADDRESS here.
const ATTR_XOR_MAPPED_ADDRESS_OLD: u16 = 0x8020;
const ATTR_FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554e;
const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

/// The 96-bit id that pairs a response with its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    pub fn random() -> Self {
        Self(rand::random())
    }
}

/// A datagram is not the STUN message we expected.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StunError {
    #[error("not a STUN message")]
    NotStun,
    #[error("STUN message is truncated")]
    Truncated,
    #[error("STUN message type {0:#06x} is not the one expected")]
    UnexpectedType(u16),
    #[error("STUN fingerprint does not match")]
    BadFingerprint,
    #[error("STUN attribute {0:#06x} is malformed")]
    BadAttribute(u16),
    #[error("STUN response carries no mapped address")]
    NoMappedAddress,
}

/// Whether `packet` looks like STUN: for demultiplexing a shared UDP socket.
pub fn is_stun(packet: &[u8]) -> bool {
    header(packet).is_ok()
}

/// A binding request with FINGERPRINT.
pub fn binding_request(txid: TransactionId) -> Vec<u8> {
    let mut msg = header_bytes(BINDING_REQUEST, txid, 8);
    append_fingerprint(&mut msg);
    msg
}

/// Server side: the transaction id of a binding request.
pub fn parse_binding_request(packet: &[u8]) -> Result<TransactionId, StunError> {
    let (ty, txid, attrs) = header(packet)?;
    if ty != BINDING_REQUEST {
        return Err(StunError::UnexpectedType(ty));
    }
    // Walk the attributes so malformed ones are rejected.
    for attr in Attributes::new(attrs) {
        attr?;
    }
    Ok(txid)
}

/// A success response telling the client the address we saw it at.
pub fn binding_response(txid: TransactionId, addr: SocketAddr) -> Vec<u8> {
    let value = xor_address(txid, addr);
    let attr_len = u16::try_from(value.len()).unwrap_or(0);
    let mut msg = header_bytes(BINDING_SUCCESS, txid, 4 + attr_len);
    msg.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    msg.extend_from_slice(&attr_len.to_be_bytes());
    msg.extend_from_slice(&value);
    msg
}

/// Client side: the transaction id and mapped address of a success response.
pub fn parse_binding_response(packet: &[u8]) -> Result<(TransactionId, SocketAddr), StunError> {
    let (ty, txid, attrs) = header(packet)?;
    if ty != BINDING_SUCCESS {
        return Err(StunError::UnexpectedType(ty));
    }
    let mut fallback = None;
    for attr in Attributes::new(attrs) {
        let (ty, value) = attr?;
        match ty {
            ATTR_XOR_MAPPED_ADDRESS | ATTR_XOR_MAPPED_ADDRESS_OLD => {
                let addr = read_address(value, Some(txid)).ok_or(StunError::BadAttribute(ty))?;
                return Ok((txid, addr));
            }
            ATTR_MAPPED_ADDRESS => {
                fallback = Some(read_address(value, None).ok_or(StunError::BadAttribute(ty))?);
            }
            _ => {}
        }
    }
    fallback.map(|addr| (txid, addr)).ok_or(StunError::NoMappedAddress)
}

fn header_bytes(ty: u16, txid: TransactionId, attrs_len: u16) -> Vec<u8> {
    let mut msg = Vec::with_capacity(HEADER_LEN + usize::from(attrs_len));
    msg.extend_from_slice(&ty.to_be_bytes());
    msg.extend_from_slice(&attrs_len.to_be_bytes());
    msg.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    msg.extend_from_slice(&txid.0);
    msg
}

/// Splits a message into type, id and attribute bytes, checking the
/// header, the declared length and the fingerprint.
fn header(packet: &[u8]) -> Result<(u16, TransactionId, &[u8]), StunError> {
    let head = packet.get(..HEADER_LEN).ok_or(StunError::NotStun)?;
    let ty = be16(head, 0).ok_or(StunError::NotStun)?;
    let len = usize::from(be16(head, 2).ok_or(StunError::NotStun)?);
    let cookie = head.get(4..8).and_then(|b| <[u8; 4]>::try_from(b).ok());
    if ty & 0xc000 != 0 || cookie != Some(MAGIC_COOKIE.to_be_bytes()) || len % 4 != 0 {
        return Err(StunError::NotStun);
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(head.get(8..HEADER_LEN).ok_or(StunError::NotStun)?);
    let attrs = packet.get(HEADER_LEN..HEADER_LEN + len).ok_or(StunError::Truncated)?;
    check_fingerprint(packet.get(..HEADER_LEN + len).unwrap_or_default(), attrs)?;
    Ok((ty, TransactionId(txid), attrs))
}

/// If the last attribute is FINGERPRINT, it must match the bytes before it.
fn check_fingerprint(msg: &[u8], attrs: &[u8]) -> Result<(), StunError> {
    if attrs.len() < 8 {
        return Ok(());
    }
    let tail = attrs.len() - 8;
    if be16(attrs, tail) != Some(ATTR_FINGERPRINT) {
        return Ok(());
    }
    let covered = msg.get(..msg.len() - 8).ok_or(StunError::Truncated)?;
    let got =
        attrs.get(tail + 4..).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes);
    if got != Some(crc32(covered) ^ FINGERPRINT_XOR) {
        return Err(StunError::BadFingerprint);
    }
    Ok(())
}

/// Appends FINGERPRINT; the header's length must already count it.
fn append_fingerprint(msg: &mut Vec<u8>) {
    let value = crc32(msg) ^ FINGERPRINT_XOR;
    msg.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
    msg.extend_from_slice(&4u16.to_be_bytes());
    msg.extend_from_slice(&value.to_be_bytes());
}

/// Iterates `(type, value)` over attribute TLVs padded to 4 bytes.
struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Attributes<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Self { rest }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(u16, &'a [u8]), StunError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let ty = be16(self.rest, 0).ok_or(StunError::Truncated)?;
            let len = usize::from(be16(self.rest, 2).ok_or(StunError::BadAttribute(ty))?);
            let value = self.rest.get(4..4 + len).ok_or(StunError::BadAttribute(ty))?;
            let padded = (4 + len).next_multiple_of(4);
            self.rest = self.rest.get(padded..).unwrap_or_default();
            Ok((ty, value))
        })();
        if parsed.is_err() {
            self.rest = &[];
        }
        Some(parsed)
    }
}

fn xor_address(txid: TransactionId, addr: SocketAddr) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut out = vec![0];
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(FAMILY_V4);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            out.push(FAMILY_V6);
            out.extend_from_slice(&port.to_be_bytes());
            let mask = xor_mask_v6(txid);
            out.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
    }
    out
}

/// Reads a (XOR-)MAPPED-ADDRESS value; `txid` set means XOR-ed.
fn read_address(value: &[u8], txid: Option<TransactionId>) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let mut port = be16(value, 2)?;
    if txid.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match family {
        FAMILY_V4 => {
            let raw = u32::from_be_bytes(value.get(4..8)?.try_into().ok()?);
            let raw = if txid.is_some() { raw ^ MAGIC_COOKIE } else { raw };
            IpAddr::V4(Ipv4Addr::from(raw))
        }
        FAMILY_V6 => {
            let mut octets: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            if let Some(txid) = txid {
                for (o, m) in octets.iter_mut().zip(xor_mask_v6(txid)) {
                    *o ^= m;
                }
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn xor_mask_v6(txid: TransactionId) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(&txid.0);
    mask
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at + 2)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

/// CRC-32 (IEEE, reflected), as FINGERPRINT needs; bitwise is fast enough
/// for 28-byte messages.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const TXID: TransactionId = TransactionId([0x5a; 12]);

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn request_hex_snapshot() {
        let req = binding_request(TXID);
        let hex = hex::encode(&req);
        assert!(hex.starts_with("000100082112a442"), "{hex}");
        assert!(hex[40..].starts_with("80280004"), "{hex}");
        assert_eq!(parse_binding_request(&req).unwrap(), TXID);
    }

    #[test]
    fn response_hex_snapshot_v4() {
        let addr: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let resp = binding_response(TXID, addr);
        // Port 32853 ^ 0x2112 = 0xa147; 192.0.2.1 ^ 0x2112a442 = 0xe112a643.
        assert_eq!(
            hex::encode(&resp),
            format!("0101000c2112a442{}002000080001a147e112a643", "5a".repeat(12))
        );
        assert_eq!(parse_binding_response(&resp).unwrap(), (TXID, addr));
    }

    #[test]
    fn response_v6_round_trip() {
        let addr: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let resp = binding_response(TXID, addr);
        assert_eq!(parse_binding_response(&resp).unwrap(), (TXID, addr));
    }

    #[test]
    fn corrupted_fingerprint_rejected() {
        let mut req = binding_request(TXID);
        let last = req.len() - 1;
        req[last] ^= 1;
        assert_eq!(parse_binding_request(&req), Err(StunError::BadFingerprint));
    }

    #[test]
    fn wrong_kinds_rejected() {
        assert_eq!(parse_binding_request(b"hello"), Err(StunError::NotStun));
        let resp = binding_response(TXID, "1.2.3.4:5".parse().unwrap());
        assert_eq!(parse_binding_request(&resp), Err(StunError::UnexpectedType(BINDING_SUCCESS)));
        assert!(is_stun(&resp));
        assert_eq!(parse_binding_response(&resp[..24]), Err(StunError::Truncated));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse_binding_request(&bytes);
            let _ = parse_binding_response(&bytes);
        }

        #[test]
        fn parsers_never_panic_on_stun_shaped(ty in any::<u16>(), attrs in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut msg = header_bytes(ty & 0x3fff, TXID, attrs.len() as u16);
            msg.extend_from_slice(&attrs);
            let _ = parse_binding_request(&msg);
            let _ = parse_binding_response(&msg);
        }

        #[test]
        fn response_round_trip(ip in any::<[u8; 16]>(), v4 in any::<bool>(), port in any::<u16>(), id in any::<[u8; 12]>()) {
            let ip = if v4 {
                IpAddr::from(<[u8; 4]>::try_from(&ip[..4]).unwrap())
            } else {
                IpAddr::from(ip)
            };
            let addr = SocketAddr::new(ip, port);
            let txid = TransactionId(id);
            prop_assert_eq!(parse_binding_response(&binding_response(txid, addr)).unwrap(), (txid, addr));
            prop_assert_eq!(parse_binding_request(&binding_request(txid)).unwrap(), txid);
        }
    }
}
