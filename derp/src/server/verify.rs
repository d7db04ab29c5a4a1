//! Client verification: which node keys may use the relay.
//!
//! A relay with a [`ClientVerifier`] asks it about every client once the
//! client has proved it holds its key (the `ClientInfo` box opened) and
//! before the client is registered; a refused client gets a `Health` frame
//! saying why and is closed, without ever being reachable or able to send.
//! Mesh links (they proved the region's mesh key) are not asked.
//!
//! Two verifiers exist: `coderd` answers for its embedded relay from the
//! coordination state, and `derper --verify-clients` asks a coordinator over
//! HTTP with [`UrlVerifier`] (`docs/protocols/relay.md`, "Client
//! verification").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::key::PublicKey;

/// What a verifier decided about one client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    Allow,
    /// Refused; `reason` is sent to the client and logged.
    Deny {
        reason: String,
    },
}

impl Verdict {
    pub fn deny(reason: impl Into<String>) -> Self {
        Verdict::Deny { reason: reason.into() }
    }
}

/// A boxed verification in flight.
pub type VerifyFuture<'a> = Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>;

/// Decides whether the holder of a node key may use the relay. Called once
/// per client connection, after the client proved the key; it may wait (the
/// relay bounds it by its handshake timeout, and refuses on timeout).
pub trait VerifyClient: Send + Sync + 'static {
    fn verify(&self, key: PublicKey) -> VerifyFuture<'_>;
}

/// A shareable [`VerifyClient`], as [`super::ServerConfig::verify_clients`] holds it.
#[derive(Clone)]
pub struct ClientVerifier(Arc<dyn VerifyClient>);

impl ClientVerifier {
    pub fn new(verifier: impl VerifyClient) -> Self {
        ClientVerifier(Arc::new(verifier))
    }

    pub fn verify(&self, key: PublicKey) -> VerifyFuture<'_> {
        self.0.verify(key)
    }
}

impl std::fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientVerifier")
    }
}

/// The body of a verification request (`POST` to the verify URL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyClientRequest {
    /// The key the client proved, `nodekey:<64 hex digits>`.
    pub node_key: String,
}

/// The answer to a [`VerifyClientRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyClientResponse {
    pub allow: bool,
}

/// The printed form of a node key on the wire of the verify URL (and in the
/// coordinator's node records): `nodekey:` and 64 hex digits.
pub fn node_key_text(key: &PublicKey) -> String {
    format!("nodekey:{}", hex::encode(key.as_bytes()))
}

/// Asks a coordinator whether a key may use the relay: `POST url` with a
/// [`VerifyClientRequest`] and `Authorization: Bearer <secret>`, answered by
/// a [`VerifyClientResponse`]. Fails closed: a coordinator that cannot be
/// reached, refuses the secret or answers nonsense refuses the client.
#[derive(Debug, Clone)]
pub struct UrlVerifier {
    http: reqwest::Client,
    url: reqwest::Url,
    secret: String,
}

impl UrlVerifier {
    /// `secret` is the pre-shared key the coordinator was given.
    pub fn new(url: reqwest::Url, secret: String) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(8)).build()?;
        Ok(UrlVerifier { http, url, secret })
    }

    async fn ask(&self, key: PublicKey) -> Verdict {
        let body = VerifyClientRequest { node_key: node_key_text(&key) };
        let sent = self.http.post(self.url.clone()).bearer_auth(&self.secret).json(&body).send();
        let resp = match sent.await {
            Ok(resp) => resp,
            Err(err) => {
                tracing::warn!(%err, url = %self.url, "cannot reach the client verification URL");
                return Verdict::deny("the relay cannot verify clients right now; retry shortly");
            }
        };
        let status = resp.status();
        if !status.is_success() {
            tracing::warn!(%status, url = %self.url, "the client verification URL refused our request (check the shared secret)");
            return Verdict::deny("the relay cannot verify clients right now; retry shortly");
        }
        match resp.json::<VerifyClientResponse>().await {
            Ok(VerifyClientResponse { allow: true }) => Verdict::Allow,
            Ok(VerifyClientResponse { allow: false }) => {
                Verdict::deny("the coordinator knows no connected peer with this node key")
            }
            Err(err) => {
                tracing::warn!(%err, url = %self.url, "the client verification URL answered nonsense");
                Verdict::deny("the relay cannot verify clients right now; retry shortly")
            }
        }
    }
}

impl VerifyClient for UrlVerifier {
    fn verify(&self, key: PublicKey) -> VerifyFuture<'_> {
        Box::pin(self.ask(key))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::key::SecretKey;

    #[test]
    fn request_json_names_the_key_like_node_records() {
        let key = SecretKey::from_bytes([7; 32]).public();
        let json =
            serde_json::to_value(VerifyClientRequest { node_key: node_key_text(&key) }).unwrap();
        let text = json["node_key"].as_str().unwrap();
        assert_eq!(text, format!("nodekey:{}", hex::encode(key.as_bytes())));
        assert_eq!(text.len(), "nodekey:".len() + 64);
    }
}
