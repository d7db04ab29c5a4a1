//! The header that opens every mesh QUIC stream, naming the service it is for.
//!
//! Wire: `len:u8` then `len` bytes of UTF-8, one of `ssh`, `tcp:<port>`,
//! `udp:<port>`, `speedtest`, `listening-ports`, `pty:<id>:<rows>:<cols>`. The acceptor reads the header, then hands the rest
//! of the stream to the named service. A `udp:<port>` stream carries datagrams,
//! each framed as `len:u16` (big-endian) then `len` bytes (`docs/cli.md`).

use std::fmt;
use std::str::FromStr;

/// Buffer size for splicing a TCP socket and a mesh stream: tokio's default
/// 8 KiB cuts a bulk transfer into many small stream writes and socket reads.
pub const COPY_BUFFER: usize = 256 * 1024;

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Service {
    /// The agent's SSH server.
    Ssh,
    /// A TCP port forward to this port on the agent's host.
    Tcp(u16),
    /// UDP datagrams (length-prefixed on the stream) to this port on the agent's host.
    Udp(u16),
    /// Bulk bytes for a throughput test.
    Speedtest,
    /// The TCP ports listening in the workspace, as one JSON document.
    ListeningPorts,
    /// A reconnecting PTY (the web terminal): attach to shell `id`, starting
    /// it at this size if it does not exist. Framing in `docs/dashboard.md`.
    Pty { id: u128, rows: u16, cols: u16 },
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Service::Ssh => f.write_str("ssh"),
            Service::Tcp(port) => write!(f, "tcp:{port}"),
            Service::Udp(port) => write!(f, "udp:{port}"),
            Service::Speedtest => f.write_str("speedtest"),
            Service::ListeningPorts => f.write_str("listening-ports"),
            Service::Pty { id, rows, cols } => write!(f, "pty:{id:032x}:{rows}:{cols}"),
        }
    }
}

/// Why a stream header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceParseError {
    /// Not a service this version knows.
    #[error("unknown service {0:?}")]
    Unknown(String),
    /// Not UTF-8.
    #[error("service name is not UTF-8")]
    NotUtf8,
}

impl FromStr for Service {
    type Err = ServiceParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ssh" => Ok(Service::Ssh),
            "speedtest" => Ok(Service::Speedtest),
            "listening-ports" => Ok(Service::ListeningPorts),
            _ if s.starts_with("pty:") => {
                parse_pty(s).ok_or_else(|| ServiceParseError::Unknown(s.to_string()))
            }
            _ => {
                let port = |prefix: &str| s.strip_prefix(prefix).and_then(|p| p.parse().ok());
                port("tcp:")
                    .map(Service::Tcp)
                    .or_else(|| port("udp:").map(Service::Udp))
                    .ok_or_else(|| ServiceParseError::Unknown(s.to_string()))
            }
        }
    }
}

/// Frames a peer writes on a [`Service::Pty`] stream: `kind:u8 len:u16be payload`.
pub mod pty_frame {
    /// Keystrokes for the shell.
    pub const INPUT: u8 = 0;
    /// A new size: `rows:u16be cols:u16be`.
    pub const RESIZE: u8 = 1;
    /// Longest payload of one frame.
    pub const MAX_PAYLOAD: usize = u16::MAX as usize;

    /// Encodes one frame; a payload longer than [`MAX_PAYLOAD`] is cut.
    pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
        let payload = payload.get(..MAX_PAYLOAD).unwrap_or(payload);
        let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(3 + payload.len());
        out.push(kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A resize frame.
    pub fn resize(rows: u16, cols: u16) -> Vec<u8> {
        let mut p = [0u8; 4];
        p[..2].copy_from_slice(&rows.to_be_bytes());
        p[2..].copy_from_slice(&cols.to_be_bytes());
        encode(RESIZE, &p)
    }
}

/// Application error codes a service's acceptor resets a stream with
/// (`RESET_STREAM`), so the peer can tell why the stream ended
/// (`docs/protocols/mesh.md`, "Streams").
pub mod reset {
    use quinn::VarInt;

    /// The service's target could not be reached: nothing listens on a
    /// `tcp:` forward's port, or the acceptor cannot open a socket for a
    /// `udp:` forward. (`mesh::splice` resets with the same value when the
    /// other side of a splice fails.)
    pub const REFUSED: VarInt = VarInt::from_u32(1);
    /// The acceptor knows the service but does not serve it.
    pub const UNSUPPORTED: VarInt = VarInt::from_u32(2);
}

/// Application error codes a mesh connection is closed with
/// (`CONNECTION_CLOSE`), with a short reason phrase beside them.
pub mod close {
    use quinn::VarInt;

    /// The endpoint is shutting down (`MeshEndpoint::close`).
    pub const CLOSING: VarInt = VarInt::from_u32(0);
    /// The peer is not who it should be: its QUIC key is not the one the
    /// coordinator announced for its address, or the dialled node is not the
    /// one the connection was authorized for.
    pub const WRONG_PEER: VarInt = VarInt::from_u32(1);
    /// The coordinator withdrew the peer (its tunnel was revoked: user
    /// suspended or deleted, token revoked, workspace stopped); the reason
    /// phrase is [`crate::WITHDRAWN_REASON`].
    pub const WITHDRAWN: VarInt = VarInt::from_u32(2);
}

fn parse_pty(s: &str) -> Option<Service> {
    let mut it = s.strip_prefix("pty:")?.split(':');
    let id = it.next().filter(|h| h.len() == 32)?;
    let id = u128::from_str_radix(id, 16).ok()?;
    let rows = it.next()?.parse().ok()?;
    let cols = it.next()?.parse().ok()?;
    it.next().is_none().then_some(Service::Pty { id, rows, cols })
}

impl Service {
    /// The stream header: length byte and name.
    pub fn header(&self) -> Vec<u8> {
        let name = self.to_string();
        let mut out = Vec::with_capacity(name.len() + 1);
        // Every name is far below 256 bytes.
        out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(name.as_bytes());
        out
    }

    /// Parses the name part of a header.
    pub fn from_header_name(name: &[u8]) -> Result<Self, ServiceParseError> {
        std::str::from_utf8(name).map_err(|_| ServiceParseError::NotUtf8)?.parse()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_snapshots() {
        assert_eq!(hex::encode(Service::Ssh.header()), "03737368");
        assert_eq!(hex::encode(Service::Tcp(8080).header()), "087463703a38303830");
        assert_eq!(hex::encode(Service::Udp(53).header()), "067564703a3533");
        assert_eq!(Service::Speedtest.header()[0], 9);
        assert_eq!(
            hex::encode(Service::ListeningPorts.header()),
            "0f6c697374656e696e672d706f727473"
        );
    }

    #[test]
    fn close_and_reset_codes_are_fixed() {
        // Wire values: a peer of another version reads the same numbers.
        assert_eq!(reset::REFUSED.into_inner(), 1);
        assert_eq!(reset::UNSUPPORTED.into_inner(), 2);
        assert_eq!(close::CLOSING.into_inner(), 0);
        assert_eq!(close::WRONG_PEER.into_inner(), 1);
        assert_eq!(close::WITHDRAWN.into_inner(), 2);
    }

    #[test]
    fn pty_frames() {
        assert_eq!(hex::encode(pty_frame::encode(pty_frame::INPUT, b"ls\r")), "0000036c730d");
        assert_eq!(hex::encode(pty_frame::resize(24, 80)), "01000400180050");
        assert_eq!(pty_frame::encode(0, &vec![0u8; 70_000]).len(), 3 + 65_535);
    }

    #[test]
    fn pty_header() {
        let s = Service::Pty { id: 0xabc, rows: 24, cols: 80 };
        assert_eq!(s.to_string(), "pty:00000000000000000000000000000abc:24:80");
        assert_eq!(Service::from_header_name(s.to_string().as_bytes()).unwrap(), s);
        for bad in [
            "pty:",
            "pty:abc:24:80",
            "pty:00000000000000000000000000000abc:24",
            "pty:00000000000000000000000000000abc:24:80:1",
            "pty:0000000000000000000000000000zabc:24:80",
        ] {
            assert!(Service::from_header_name(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_and_malformed_names_are_refused() {
        assert!(matches!(Service::from_header_name(b"ftp"), Err(ServiceParseError::Unknown(_))));
        assert!(Service::from_header_name(b"tcp:99999").is_err());
        assert!(Service::from_header_name(b"tcp:").is_err());
        assert!(Service::from_header_name(b"udp:65536").is_err());
        assert!(Service::from_header_name(b"udp:-1").is_err());
        assert_eq!(Service::from_header_name(&[0xff]), Err(ServiceParseError::NotUtf8));
    }

    proptest! {
        #[test]
        fn round_trip(port in any::<u16>(), id in any::<u128>(), kind in 0..6u8) {
            let service = match kind {
                0 => Service::Ssh,
                5 => Service::Pty { id, rows: port, cols: port.wrapping_add(1) },
                1 => Service::Tcp(port),
                2 => Service::Udp(port),
                3 => Service::ListeningPorts,
                _ => Service::Speedtest,
            };
            let header = service.header();
            prop_assert_eq!(usize::from(header[0]), header.len() - 1);
            prop_assert_eq!(Service::from_header_name(&header[1..]).unwrap(), service);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Service::from_header_name(&bytes);
        }
    }
}
