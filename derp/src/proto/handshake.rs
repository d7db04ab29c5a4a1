//! The connection handshake, as pure functions over frames.
//!
//! ```text
//! server → client  ServerKey { server key, random challenge }
//! client → server  ClientInfo { node key, box(node secret → server key, JSON ClientInfo) }
//! server → client  ServerInfo { box(server secret → node key, JSON ServerInfo) }
//!                  or Health { reason } and close, when refused
//! ```
//!
//! Opening the client's box proves it holds the secret for the node key it
//! claims; echoing the per-connection challenge inside the box stops a
//! recorded handshake from being replayed. Opening the server's box proves
//! to the client that it reached the relay whose key it was told.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::frame::{Frame, CHALLENGE_LEN};
use crate::key::{MeshKey, PublicKey, SecretKey};

/// The relay protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// What a client tells the relay about itself, sealed to the relay's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    pub version: u32,
    /// The challenge from the server's `ServerKey` frame, hex.
    #[serde(with = "hex::serde")]
    pub challenge: [u8; CHALLENGE_LEN],
    /// Present only on relay-to-relay mesh connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_key: Option<MeshKey>,
}

/// What the relay tells a client after accepting it, sealed to the node key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    pub version: u32,
    /// Per-client receive rate limit; 0 means unlimited.
    #[serde(default)]
    pub token_bucket_bytes_per_second: u32,
    #[serde(default)]
    pub token_bucket_bytes_burst: u32,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    #[error("expected a {expected} frame, got {got:?}")]
    UnexpectedFrame { expected: &'static str, got: Box<Frame> },
    #[error("client info box could not be opened: the client does not hold key {0}")]
    KeyNotProven(PublicKey),
    #[error("server info box could not be opened: the relay does not hold key {0}")]
    ServerNotProven(PublicKey),
    #[error("handshake JSON is malformed: {0}")]
    Json(#[from] serde_json::Error),
    #[error("client answered a different challenge (replayed handshake?)")]
    ChallengeMismatch,
    #[error("mesh key does not match")]
    BadMeshKey,
    #[error("relay refused the connection: {0}")]
    Refused(String),
}

impl ClientInfo {
    pub fn new(challenge: [u8; CHALLENGE_LEN], mesh_key: Option<MeshKey>) -> Self {
        Self { version: PROTOCOL_VERSION, challenge, mesh_key }
    }

    /// Seals this info from `client` to `server`, as a `ClientInfo` frame.
    pub fn seal(&self, client: &SecretKey, server: &PublicKey) -> Result<Frame, HandshakeError> {
        let json = serde_json::to_vec(self)?;
        Ok(Frame::ClientInfo {
            key: client.public(),
            sealed: Bytes::from(client.seal_to(server, &json)),
        })
    }

    /// Server side: opens a `ClientInfo` frame and checks the challenge and,
    /// when the client presents one, the mesh key. Returns the proven node
    /// key and whether the client is an authenticated mesh peer.
    pub fn open(
        frame: Frame,
        server: &SecretKey,
        challenge: &[u8; CHALLENGE_LEN],
        mesh_key: Option<&MeshKey>,
    ) -> Result<(PublicKey, ClientInfo, bool), HandshakeError> {
        let Frame::ClientInfo { key, sealed } = frame else {
            return Err(HandshakeError::UnexpectedFrame {
                expected: "ClientInfo",
                got: Box::new(frame),
            });
        };
        let json =
            server.open_from(&key, &sealed).map_err(|_| HandshakeError::KeyNotProven(key))?;
        let info: ClientInfo = serde_json::from_slice(&json)?;
        // Not secret, but compare in constant time anyway: it costs nothing.
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&info.challenge[..], &challenge[..])) {
            return Err(HandshakeError::ChallengeMismatch);
        }
        let is_mesh = match (&info.mesh_key, mesh_key) {
            (None, _) => false,
            (Some(theirs), Some(ours)) if theirs == ours => true,
            (Some(_), _) => return Err(HandshakeError::BadMeshKey),
        };
        Ok((key, info, is_mesh))
    }
}

impl ServerInfo {
    pub fn seal(&self, server: &SecretKey, client: &PublicKey) -> Result<Frame, HandshakeError> {
        let json = serde_json::to_vec(self)?;
        Ok(Frame::ServerInfo { sealed: Bytes::from(server.seal_to(client, &json)) })
    }

    /// Client side: opens the server's answer. A `Health` frame instead of
    /// `ServerInfo` means the relay refused us and says why.
    pub fn open(
        frame: Frame,
        client: &SecretKey,
        server: &PublicKey,
    ) -> Result<ServerInfo, HandshakeError> {
        match frame {
            Frame::ServerInfo { sealed } => {
                let json = client
                    .open_from(server, &sealed)
                    .map_err(|_| HandshakeError::ServerNotProven(*server))?;
                Ok(serde_json::from_slice(&json)?)
            }
            Frame::Health { problem } => Err(HandshakeError::Refused(problem)),
            got => {
                Err(HandshakeError::UnexpectedFrame { expected: "ServerInfo", got: Box::new(got) })
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn client_info_proves_key_and_challenge() {
        let server = SecretKey::generate();
        let client = SecretKey::generate();
        let challenge = [9; CHALLENGE_LEN];
        let frame = ClientInfo::new(challenge, None).seal(&client, &server.public()).unwrap();
        let (key, info, mesh) = ClientInfo::open(frame.clone(), &server, &challenge, None).unwrap();
        assert_eq!((key, info.version, mesh), (client.public(), PROTOCOL_VERSION, false));
        // Replayed against a fresh challenge.
        let err = ClientInfo::open(frame, &server, &[1; CHALLENGE_LEN], None).unwrap_err();
        assert!(matches!(err, HandshakeError::ChallengeMismatch));
    }

    #[test]
    fn claiming_someone_elses_key_is_refused() {
        let server = SecretKey::generate();
        let victim = SecretKey::generate().public();
        let mallory = SecretKey::generate();
        let Frame::ClientInfo { sealed, .. } =
            ClientInfo::new([0; CHALLENGE_LEN], None).seal(&mallory, &server.public()).unwrap()
        else {
            unreachable!()
        };
        let forged = Frame::ClientInfo { key: victim, sealed };
        let err = ClientInfo::open(forged, &server, &[0; CHALLENGE_LEN], None).unwrap_err();
        assert!(matches!(err, HandshakeError::KeyNotProven(k) if k == victim));
    }

    #[test]
    fn mesh_key_checked() {
        let server = SecretKey::generate();
        let client = SecretKey::generate();
        let ours = MeshKey::generate();
        let c = [0; CHALLENGE_LEN];
        let good = ClientInfo::new(c, Some(ours.clone())).seal(&client, &server.public()).unwrap();
        assert!(ClientInfo::open(good, &server, &c, Some(&ours)).unwrap().2);
        let bad =
            ClientInfo::new(c, Some(MeshKey::generate())).seal(&client, &server.public()).unwrap();
        let err = ClientInfo::open(bad, &server, &c, Some(&ours)).unwrap_err();
        assert!(matches!(err, HandshakeError::BadMeshKey));
    }

    #[test]
    fn server_info_round_trip_and_refusal() {
        let server = SecretKey::generate();
        let client = SecretKey::generate();
        let info = ServerInfo {
            version: 1,
            token_bucket_bytes_per_second: 5,
            token_bucket_bytes_burst: 9,
        };
        let frame = info.seal(&server, &client.public()).unwrap();
        assert_eq!(ServerInfo::open(frame, &client, &server.public()).unwrap(), info);
        let refused = Frame::Health { problem: "no".into() };
        let err = ServerInfo::open(refused, &client, &server.public()).unwrap_err();
        assert!(matches!(err, HandshakeError::Refused(p) if p == "no"));
    }

    #[test]
    fn client_info_json_shape() {
        let info = ClientInfo::new([0xab; CHALLENGE_LEN], None);
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(json, format!("{{\"version\":1,\"challenge\":\"{}\"}}", "ab".repeat(16)));
    }
}
