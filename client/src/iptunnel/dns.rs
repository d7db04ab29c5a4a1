//! A DNS responder for the mesh names ([`super::names`]), sans-IO: a query
//! in, an answer out. One question per query; `A` and `AAAA` are answered
//! from the table, other types get an empty answer, unknown `.coder` names
//! NXDOMAIN, and names outside `.coder` REFUSED (we are no recursive resolver).

use std::net::{IpAddr, Ipv6Addr};

use super::names::Names;

/// Where the responder listens, inside the mesh prefix: node id `0x53`
/// (node ids are hashes of peer ids, so a real node having it is as likely
/// as a SHA-256 collision on 64 bits).
pub const DNS_ADDR: Ipv6Addr = Ipv6Addr::new(0xfd5c, 0x9a3e, 0x71b2, 0, 0, 0, 0, 0x53);

/// Answers' time to live, seconds: short, names come and go.
const TTL: u32 = 30;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_REFUSED: u8 = 5;
const RCODE_FORMERR: u8 = 1;

/// The answer to `query`, or `None` if it is not a DNS query at all.
pub fn answer(query: &[u8], names: &Names) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    let flags = u16::from_be_bytes([header[2], header[3]]);
    if flags & 0x8000 != 0 {
        return None; // a response, not a query
    }
    let qdcount = u16::from_be_bytes([header[4], header[5]]);
    let opcode = (flags >> 11) & 0xf;
    let question = parse_question(query.get(12..)?);
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&header[..2]);
    // QR, opcode, AA, RD copied; RA clear.
    let flags_out = 0x8000 | (flags & 0x7900) | 0x0400;
    let Some((name, qtype, qclass, qlen)) = question.filter(|_| qdcount == 1 && opcode == 0) else {
        out.extend_from_slice(&(flags_out | u16::from(RCODE_FORMERR)).to_be_bytes());
        out.extend_from_slice(&[0; 8]);
        return Some(out);
    };
    let question = query.get(12..12 + qlen)?;
    let ips: Vec<IpAddr> = if !Names::in_domain(&name) {
        return Some(reply(&mut out, flags_out, RCODE_REFUSED, question, &[]));
    } else if let Some(ips) = names.lookup(&name) {
        ips.to_vec()
    } else {
        return Some(reply(&mut out, flags_out, RCODE_NXDOMAIN, question, &[]));
    };
    let wanted: Vec<IpAddr> = ips
        .into_iter()
        .filter(|ip| {
            qclass == CLASS_IN
                && matches!((ip, qtype), (IpAddr::V4(_), TYPE_A) | (IpAddr::V6(_), TYPE_AAAA))
        })
        .collect();
    Some(reply(&mut out, flags_out, 0, question, &wanted))
}

fn reply(out: &mut Vec<u8>, flags: u16, rcode: u8, question: &[u8], ips: &[IpAddr]) -> Vec<u8> {
    out.extend_from_slice(&(flags | u16::from(rcode)).to_be_bytes());
    let ancount = u16::try_from(ips.len()).unwrap_or(0);
    for count in [1, ancount, 0, 0] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out.extend_from_slice(question);
    for ip in ips.iter().take(usize::from(ancount)) {
        // The name is a pointer to the question's (offset 12).
        out.extend_from_slice(&[0xc0, 12]);
        let (rtype, data) = match ip {
            IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
            IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    std::mem::take(out)
}

/// The question's name, type, class and its length in bytes.
fn parse_question(q: &[u8]) -> Option<(String, u16, u16, usize)> {
    let mut name = String::new();
    let mut at = 0;
    loop {
        let len = usize::from(*q.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        // Compression pointers never appear in a question's first name.
        if len > 63 || name.len() > 253 {
            return None;
        }
        let label = std::str::from_utf8(q.get(at..at + len)?).ok()?;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(label);
        at += len;
    }
    let fixed = q.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    Some((name, qtype, qclass, at + 4))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::iptunnel::names::AgentEntry;
    use proptest::prelude::*;
    use uuid::Uuid;

    /// A query for `name` of type `qtype`, id 0x1234, recursion desired.
    pub(crate) fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
        q
    }

    fn names() -> Names {
        let e = AgentEntry {
            owner: "dev".into(),
            workspace: "ws1".into(),
            agent: "main".into(),
            id: Uuid::from_u128(1),
        };
        Names::new(&[e], "dev")
    }

    #[test]
    fn aaaa_answer_snapshot() {
        let a = answer(&query("ws1.coder", TYPE_AAAA), &names()).unwrap();
        let ip = names().lookup("ws1.coder").unwrap()[0];
        let IpAddr::V6(v6) = ip else { panic!() };
        let want = format!(
            "1234{flags}0001000100000000{q}c00c001c00010000001e0010{ip}",
            flags = "8500",
            q = "0377733105636f646572".to_owned() + "00001c0001",
            ip = hex::encode(v6.octets())
        );
        assert_eq!(hex::encode(&a), want);
    }

    #[test]
    fn rcodes() {
        let n = names();
        let a = answer(&query("nope.coder", TYPE_AAAA), &n).unwrap();
        assert_eq!(a[3] & 0xf, RCODE_NXDOMAIN);
        let a = answer(&query("example.com", TYPE_A), &n).unwrap();
        assert_eq!(a[3] & 0xf, RCODE_REFUSED);
        // Known name, no IPv4: empty answer, no error.
        let a = answer(&query("main.ws1.dev.coder", TYPE_A), &n).unwrap();
        assert_eq!((a[3] & 0xf, a[7]), (0, 0));
        assert_eq!(answer(&[0; 5], &n), None);
        let a = answer(&[0x12, 0x34, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0], &n).unwrap();
        assert_eq!(a[3] & 0xf, RCODE_FORMERR);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = answer(&bytes, &names());
        }
    }
}
