//! OpenID Connect login against the operator's identity provider: the
//! authorization code flow with PKCE (S256), as Coder's `--oidc-*` flags set
//! it up.
//!
//! At start, [`Provider::discover`] reads `{issuer}/.well-known/openid-configuration`
//! and the provider's JWKS. A login then goes:
//!
//! 1. [`LoginStart::new`] draws a `state`, a `nonce` and a PKCE verifier;
//!    the API stores them (keyed by the state's hash) and binds the state to
//!    the browser with a short-lived cookie, then redirects to
//!    [`Provider::authorize_url`].
//! 2. The provider redirects back with `code` and `state`; the API checks the
//!    state against the cookie and consumes its row, then
//!    [`Provider::exchange`] trades the code (with the verifier) for tokens,
//!    verifies the ID token ([`id_token`]: signature, `iss`, `aud`, `exp`,
//!    `nonce`) and merges the userinfo claims (same `sub` only).
//! 3. [`claims::identity`] decides whether that person may log in and what
//!    they are called; the API links or creates the account and syncs roles.
//!
//! Keys are fetched again when a token names a `kid` we do not have (key
//! rotation), at most once per [`JWKS_REFRESH`].

pub mod claims;
pub mod id_token;

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

pub use claims::{Identity, Refusal, RoleMapping};
use id_token::{Expected, IdTokenError, KeySet};

/// The least time between two JWKS fetches caused by unknown key ids.
pub const JWKS_REFRESH: Duration = Duration::from_secs(30);

/// How long a started login may take to come back.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(600);

const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// The `--oidc-*` settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OidcConfig {
    pub issuer: Url,
    pub client_id: String,
    pub client_secret: String,
    /// Only these email domains may log in (empty: any).
    pub email_domains: Vec<String>,
    /// Whether a first login creates an account.
    pub allow_signups: bool,
    /// The claim that names the username (else the email's local part).
    pub username_field: String,
    /// The claim listing the user's groups (for the role mapping).
    pub group_field: Option<String>,
    /// Group → roles; when set, roles follow it on every login.
    pub role_mapping: Option<RoleMapping>,
    /// Text of the login button (empty: "OpenID Connect").
    pub sign_in_text: String,
    /// Scopes asked for.
    pub scopes: Vec<String>,
}

impl OidcConfig {
    pub fn new(issuer: Url, client_id: String, client_secret: String) -> Self {
        OidcConfig {
            issuer,
            client_id,
            client_secret,
            email_domains: Vec::new(),
            allow_signups: true,
            username_field: "preferred_username".into(),
            group_field: None,
            role_mapping: None,
            sign_in_text: String::new(),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
        }
    }
}

/// Why the provider could not be used; the message names what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    #[error("cannot reach the OpenID provider at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the OpenID provider answered {url} with {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("the OpenID provider's {what} is not valid: {detail}")]
    Document { what: &'static str, detail: String },
    #[error("the provider did not accept the authorization code (it may have expired or been used already): {0}")]
    Exchange(String),
    #[error(transparent)]
    IdToken(#[from] IdTokenError),
    #[error("the userinfo endpoint answered for another subject")]
    UserinfoSubject,
}

/// The parts of the discovery document we use.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
    #[serde(default)]
    pub userinfo_endpoint: Option<Url>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

/// A discovered provider and its current keys.
#[derive(Debug)]
pub struct Provider {
    pub config: OidcConfig,
    pub metadata: Metadata,
    http: reqwest::Client,
    /// Held only to read or swap the set, never across an await.
    keys: Mutex<Keys>,
}

#[derive(Debug)]
struct Keys {
    set: KeySet,
    fetched: Instant,
}

/// The secrets of one login in flight.
#[derive(Debug, Clone)]
pub struct LoginStart {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl LoginStart {
    pub fn new() -> Self {
        LoginStart { state: random(), nonce: random(), verifier: random() }
    }

    /// The PKCE S256 challenge of the verifier.
    pub fn challenge(&self) -> String {
        pkce_challenge(&self.verifier)
    }
}

impl Default for LoginStart {
    fn default() -> Self {
        Self::new()
    }
}

/// 32 random bytes, base64url: a state, nonce or PKCE verifier (43 chars).
fn random() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// RFC 7636 S256: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The state's storage key: the state itself is a bearer value.
pub fn state_hash(state: &str) -> Vec<u8> {
    Sha256::digest(state.as_bytes()).to_vec()
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
}

impl Provider {
    /// Reads the discovery document and the keys. Fails when the provider is
    /// unreachable or its document does not describe this issuer.
    pub async fn discover(config: OidcConfig) -> Result<Provider, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| OidcError::Unreachable { url: config.issuer.to_string(), source })?;
        let base = config.issuer.as_str().trim_end_matches('/');
        let url = format!("{base}/.well-known/openid-configuration");
        let doc = get_json(&http, &url, None).await?;
        let metadata: Metadata = serde_json::from_value(doc).map_err(|e| OidcError::Document {
            what: "discovery document",
            detail: e.to_string(),
        })?;
        if metadata.issuer.trim_end_matches('/') != base {
            return Err(OidcError::Document {
                what: "discovery document",
                detail: format!(
                    "it names the issuer {:?}, not {base:?} (--oidc-issuer-url must be the issuer exactly)",
                    metadata.issuer
                ),
            });
        }
        if let Some(methods) = &metadata.code_challenge_methods_supported {
            if !methods.iter().any(|m| m == "S256") {
                return Err(OidcError::Document {
                    what: "discovery document",
                    detail: "it does not support PKCE with S256".into(),
                });
            }
        }
        let set = fetch_keys(&http, &metadata.jwks_uri).await?;
        Ok(Provider {
            config,
            metadata,
            http,
            keys: Mutex::new(Keys { set, fetched: Instant::now() }),
        })
    }

    /// Where the browser goes to log in.
    pub fn authorize_url(&self, start: &LoginStart, redirect_uri: &Url) -> Url {
        let mut url = self.metadata.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect_uri.as_str())
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &start.state)
            .append_pair("nonce", &start.nonce)
            .append_pair("code_challenge", &start.challenge())
            .append_pair("code_challenge_method", "S256");
        url
    }

    /// Trades `code` for tokens and returns the verified, merged claims.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
        redirect_uri: &Url,
    ) -> Result<Map<String, Value>, OidcError> {
        let resp = self
            .http
            .post(self.metadata.token_endpoint.clone())
            .basic_auth(
                form_encode(&self.config.client_id),
                Some(form_encode(&self.config.client_secret)),
            )
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri.as_str()),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .map_err(|source| OidcError::Unreachable {
                url: self.metadata.token_endpoint.to_string(),
                source,
            })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let error = body.get("error").and_then(Value::as_str).unwrap_or("unknown error");
            return Err(OidcError::Exchange(format!("{status}: {error}")));
        }
        let tokens: TokenResponse = serde_json::from_value(body)
            .map_err(|e| OidcError::Document { what: "token response", detail: e.to_string() })?;
        let Some(id_token) = tokens.id_token else {
            return Err(OidcError::Document {
                what: "token response",
                detail: "it has no id_token (is the `openid` scope allowed?)".into(),
            });
        };
        let mut claims = self.verify(&id_token, nonce).await?;
        if let (Some(endpoint), Some(access)) =
            (&self.metadata.userinfo_endpoint, &tokens.access_token)
        {
            let info = get_json(&self.http, endpoint.as_str(), Some(access)).await?;
            let Value::Object(info) = info else {
                return Err(OidcError::Document {
                    what: "userinfo",
                    detail: "not a JSON object".into(),
                });
            };
            if info.get("sub") != claims.get("sub") {
                return Err(OidcError::UserinfoSubject);
            }
            for (k, v) in info {
                claims.entry(k).or_insert(v);
            }
        }
        Ok(claims)
    }

    /// Verifies an ID token, fetching the keys again once if it names an
    /// unknown key and the last fetch is older than [`JWKS_REFRESH`].
    async fn verify(&self, token: &str, nonce: &str) -> Result<Map<String, Value>, OidcError> {
        let (set, stale) = {
            let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
            (keys.set.clone(), keys.fetched.elapsed() >= JWKS_REFRESH)
        };
        let set = if !set.knows(token) && stale {
            let fresh = fetch_keys(&self.http, &self.metadata.jwks_uri).await?;
            let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
            *keys = Keys { set: fresh.clone(), fetched: Instant::now() };
            fresh
        } else {
            set
        };
        let expected =
            Expected { issuer: &self.metadata.issuer, client_id: &self.config.client_id, nonce };
        Ok(id_token::verify(token, &set, &expected)?)
    }
}

/// RFC 6749 §2.3.1: client credentials in Basic auth are form-encoded first.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn fetch_keys(http: &reqwest::Client, url: &Url) -> Result<KeySet, OidcError> {
    let doc = get_json(http, url.as_str(), None).await?;
    let set = KeySet::parse(&doc);
    if set.is_empty() {
        return Err(OidcError::Document {
            what: "JWKS",
            detail: "it has no usable signing key".into(),
        });
    }
    Ok(set)
}

async fn get_json(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
) -> Result<Value, OidcError> {
    let mut req = http.get(url).header(reqwest::header::ACCEPT, "application/json");
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let resp = req
        .send()
        .await
        .map_err(|source| OidcError::Unreachable { url: url.to_owned(), source })?;
    let status = resp.status();
    if !status.is_success() {
        let body: String = resp.text().await.unwrap_or_default().chars().take(200).collect();
        return Err(OidcError::Status { url: url.to_owned(), status: status.as_u16(), body });
    }
    resp.json()
        .await
        .map_err(|e| OidcError::Document { what: "response", detail: format!("{url}: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_the_rfc_example() {
        // RFC 7636 Appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn each_login_draws_fresh_secrets() {
        let (a, b) = (LoginStart::new(), LoginStart::new());
        assert_ne!(a.state, b.state);
        assert_ne!(a.nonce, a.state);
        assert_eq!(a.verifier.len(), 43);
        assert_eq!(state_hash(&a.state).len(), 32);
    }
}
