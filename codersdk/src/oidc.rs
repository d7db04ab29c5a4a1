//! `GET /api/v2/users/authmethods`: which ways of logging in a deployment
//! offers, for the dashboard's login page and `coder login` (Coder's
//! `AuthMethods`, with its JSON spelling).

use serde::{Deserialize, Serialize};

/// The login methods a deployment has enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthMethods {
    pub password: AuthMethod,
    pub oidc: OidcAuthMethod,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthMethod {
    pub enabled: bool,
}

/// OpenID Connect login; the button text is the operator's
/// (`--oidc-sign-in-text`), empty for the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcAuthMethod {
    pub enabled: bool,
    #[serde(rename = "signInText", default)]
    pub sign_in_text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_as_coder_spells_it() {
        let m = AuthMethods {
            password: AuthMethod { enabled: false },
            oidc: OidcAuthMethod { enabled: true, sign_in_text: "Acme SSO".into() },
        };
        let json = serde_json::to_value(&m).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"password": {"enabled": false}, "oidc": {"enabled": true, "signInText": "Acme SSO"}})
        );
    }
}
