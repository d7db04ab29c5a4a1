//! ID token verification, free of I/O: a signed JWT and the provider's keys
//! (its JWKS) in, the verified claims out.
//!
//! Checked, as OpenID Connect Core §3.1.3.7 asks: the signature (RS256/384/512,
//! PS256/384/512, ES256/384; never `none` or a shared-secret HMAC, whatever
//! the header says), `iss` equal to the discovered issuer, `aud` containing
//! our client id (and `azp` equal to it when there are several audiences),
//! `exp` and `nbf` with a minute of leeway, a non-empty `sub`, and `nonce`
//! equal to the one this login sent (constant-time).

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;

/// Signature algorithms accepted: asymmetric only.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// The provider's signing keys, parsed from its JWKS; keys this build cannot
/// use (encryption keys, unknown types) are left out.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`), skipping keys it cannot use.
    pub fn parse(doc: &Value) -> KeySet {
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter(|k| k.get("use").and_then(Value::as_str).is_none_or(|u| u == "sig"))
                    .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        KeySet { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key a token names by `kid`; without a `kid`, the only key.
    fn find(&self, kid: Option<&str>) -> Option<&Jwk> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.common.key_id.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }

    /// Whether a token's `kid` is one of ours (else the JWKS may have rotated).
    pub fn knows(&self, token: &str) -> bool {
        let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid);
        self.find(kid.as_deref()).is_some()
    }
}

/// What the token must say.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
}

/// Why an ID token was refused; the message is safe to show the user.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdTokenError {
    #[error("the ID token is not a well-formed JWT")]
    Malformed,
    #[error("the ID token is signed with {0}, which is not accepted")]
    Algorithm(String),
    #[error("the ID token names a signing key the provider does not publish")]
    UnknownKey,
    #[error("the ID token's signature does not verify")]
    Signature,
    #[error("the ID token was issued by another issuer")]
    Issuer,
    #[error("the ID token is for another client (audience)")]
    Audience,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token is not valid yet")]
    NotYetValid,
    #[error("the ID token has no subject")]
    Subject,
    #[error("the ID token's nonce does not match this login")]
    Nonce,
    #[error("the ID token is invalid: {0}")]
    Invalid(String),
}

/// Verifies `token` with `keys` and returns its claims.
pub fn verify(
    token: &str,
    keys: &KeySet,
    expected: &Expected<'_>,
) -> Result<Map<String, Value>, IdTokenError> {
    use jsonwebtoken::errors::ErrorKind;
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(IdTokenError::Algorithm(format!("{:?}", header.alg)));
    }
    let jwk = keys.find(header.kid.as_deref()).ok_or(IdTokenError::UnknownKey)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| IdTokenError::UnknownKey)?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(
        |e| match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => IdTokenError::Signature,
            ErrorKind::InvalidIssuer => IdTokenError::Issuer,
            ErrorKind::InvalidAudience => IdTokenError::Audience,
            ErrorKind::ExpiredSignature => IdTokenError::Expired,
            ErrorKind::ImmatureSignature => IdTokenError::NotYetValid,
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) => {
                IdTokenError::Malformed
            }
            ErrorKind::MissingRequiredClaim(c) if c == "sub" => IdTokenError::Subject,
            other => IdTokenError::Invalid(format!("{other:?}")),
        },
    )?;
    let claims = data.claims;
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
    if sub.is_empty() {
        return Err(IdTokenError::Subject);
    }
    // Several audiences: the token must have been issued to us (azp).
    if let Some(Value::Array(aud)) = claims.get("aud") {
        let azp = claims.get("azp").and_then(Value::as_str);
        if aud.len() > 1 && azp != Some(expected.client_id) {
            return Err(IdTokenError::Audience);
        }
    }
    let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or_default();
    if !crate::secrets::constant_time_eq(nonce.as_bytes(), expected.nonce.as_bytes()) {
        return Err(IdTokenError::Nonce);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const ISSUER: &str = "https://idp.example.com";

    /// A fresh P-256 key: its encoding key and its public JWK.
    fn es256_key(kid: &str) -> (EncodingKey, Value) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let public = pair.public_key_raw(); // 0x04 || x || y
        assert_eq!(public.len(), 65);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..]),
        });
        (EncodingKey::from_ec_der(&pair.serialize_der()), jwk)
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn good_claims() -> Value {
        json!({
            "iss": ISSUER, "aud": "coder", "sub": "alice", "nonce": "n-123",
            "exp": now() + 300, "iat": now(), "email": "alice@example.com",
        })
    }

    fn sign(key: &EncodingKey, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn expected() -> Expected<'static> {
        Expected { issuer: ISSUER, client_id: "coder", nonce: "n-123" }
    }

    fn keys(jwks: &[Value]) -> KeySet {
        KeySet::parse(&json!({ "keys": jwks }))
    }

    #[test]
    fn a_good_token_verifies() {
        let (key, jwk) = es256_key("k1");
        let token = sign(&key, "k1", &good_claims());
        let claims = verify(&token, &keys(&[jwk]), &expected()).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["email"], "alice@example.com");
    }

    #[test]
    fn each_wrong_claim_is_refused_for_its_reason() {
        let (key, jwk) = es256_key("k1");
        let set = keys(&[jwk]);
        let cases: Vec<(&str, Value, IdTokenError)> = vec![
            ("iss", json!("https://evil.example.com"), IdTokenError::Issuer),
            ("aud", json!("other-client"), IdTokenError::Audience),
            ("aud", json!(["coder", "other"]), IdTokenError::Audience),
            ("exp", json!(now() - 3600), IdTokenError::Expired),
            ("nbf", json!(now() + 3600), IdTokenError::NotYetValid),
            ("nonce", json!("n-999"), IdTokenError::Nonce),
            ("sub", json!(""), IdTokenError::Subject),
        ];
        for (claim, value, want) in cases {
            let mut claims = good_claims();
            claims[claim] = value.clone();
            let token = sign(&key, "k1", &claims);
            assert_eq!(verify(&token, &set, &expected()), Err(want), "{claim}={value}");
        }
        let mut no_nonce = good_claims();
        no_nonce.as_object_mut().unwrap().remove("nonce");
        let token = sign(&key, "k1", &no_nonce);
        assert_eq!(verify(&token, &set, &expected()), Err(IdTokenError::Nonce));
        // Several audiences are fine when we are the authorized party.
        let mut multi = good_claims();
        multi["aud"] = json!(["coder", "other"]);
        multi["azp"] = json!("coder");
        assert!(verify(&sign(&key, "k1", &multi), &set, &expected()).is_ok());
    }

    #[test]
    fn tampered_or_foreign_signatures_are_refused() {
        let (key, jwk) = es256_key("k1");
        let (other, _) = es256_key("k1");
        let set = keys(&[jwk]);
        // Signed by a key the provider does not publish, under its kid.
        let forged = sign(&other, "k1", &good_claims());
        assert_eq!(verify(&forged, &set, &expected()), Err(IdTokenError::Signature));
        // A payload swapped under a valid signature.
        let token = sign(&key, "k1", &good_claims());
        let parts: Vec<&str> = token.split('.').collect();
        let mut evil = good_claims();
        evil["sub"] = json!("admin");
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil).unwrap());
        let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert_eq!(verify(&tampered, &set, &expected()), Err(IdTokenError::Signature));
        // An unknown kid.
        let token = sign(&key, "k2", &good_claims());
        assert_eq!(verify(&token, &set, &expected()), Err(IdTokenError::UnknownKey));
        assert!(!set.knows(&token));
        assert_eq!(verify("not.a.jwt", &set, &expected()), Err(IdTokenError::Malformed));
    }

    #[test]
    fn none_and_hmac_are_never_accepted() {
        let (_, jwk) = es256_key("k1");
        let set = keys(&[jwk]);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good_claims()).unwrap());
        for alg in ["none", "HS256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"k1"}}"#));
            let token = format!("{header}.{body}.");
            assert!(verify(&token, &set, &expected()).is_err(), "{alg}");
        }
        // An HS256 token keyed with the public key's bytes (key confusion).
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let token =
            jsonwebtoken::encode(&header, &good_claims(), &EncodingKey::from_secret(b"x")).unwrap();
        assert_eq!(verify(&token, &set, &expected()), Err(IdTokenError::Algorithm("HS256".into())));
    }

    #[test]
    fn encryption_keys_and_junk_in_the_jwks_are_skipped() {
        let (key, jwk) = es256_key("k1");
        let mut enc = jwk.clone();
        enc["use"] = json!("enc");
        enc["kid"] = json!("k-enc");
        let set = keys(&[json!({"kty": "nonsense"}), enc, jwk]);
        assert_eq!(set.len(), 1);
        let token = sign(&key, "k1", &good_claims());
        assert!(verify(&token, &set, &expected()).is_ok());
    }
}
