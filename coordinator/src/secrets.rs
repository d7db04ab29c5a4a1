//! Secrets: session tokens, password hashes, constant-time comparison.
//!
//! A session token is `<id>-<secret>` (Coder's form): the 10-character id is
//! the row's primary key; only SHA-256 of the 22-character secret is stored.
//! Passwords are hashed with argon2id into a PHC string.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const TOKEN_ID_LEN: usize = 10;
pub const TOKEN_SECRET_LEN: usize = 22;

/// A freshly generated token: the string to hand out once, and what to store.
#[derive(Debug)]
pub struct NewToken {
    pub id: String,
    pub token: String,
    pub hashed_secret: Vec<u8>,
}

pub fn random_string(len: usize) -> String {
    rand::rngs::OsRng.sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

pub fn new_token() -> NewToken {
    let id = random_string(TOKEN_ID_LEN);
    let secret = random_string(TOKEN_SECRET_LEN);
    let hashed_secret = hash_secret(&secret);
    NewToken { token: format!("{id}-{secret}"), id, hashed_secret }
}

pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Splits a presented token into id and secret; `None` when malformed.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('-')?;
    let well_formed =
        |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (well_formed(id, TOKEN_ID_LEN) && well_formed(secret, TOKEN_SECRET_LEN)).then_some((id, secret))
}

/// Compares a presented secret with a stored hash in constant time.
/// Byte equality in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

pub fn secret_matches(secret: &str, stored_hash: &[u8]) -> bool {
    hash_secret(secret).ct_eq(stored_hash).into()
}

pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Verifies a password against a PHC string; a malformed hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the user does not exist, so a login for an
/// unknown user takes as long as one with a wrong password.
pub fn dummy_password_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("not a real password").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn token_round_trip() {
        let t = new_token();
        let (id, secret) = split_token(&t.token).unwrap();
        assert_eq!(id, t.id);
        assert!(secret_matches(secret, &t.hashed_secret));
        assert!(!secret_matches("x", &t.hashed_secret));
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in
            ["", "-", "abc", "abcdefghij-", "abcdefghij-short", "abcdefghij-abcdefghijklmnopqrstu!"]
        {
            assert!(split_token(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn password_hash_verifies() {
        let h = hash_password("hunter22").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("hunter22", &h));
        assert!(!verify_password("hunter23", &h));
        assert!(!verify_password("hunter22", "garbage"));
    }
}
