//! API types shared by `coderd` (which serves them) and the SDK (which sends them).
//!
//! These are the JSON bodies of `/api/v2`. Field names follow Coder's API so
//! that tooling written against Coder reads them unchanged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The body of every error response: what went wrong and what to do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiErrorBody {
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildInfo {
    pub version: String,
    pub external_url: String,
}

/// A role a user holds across the deployment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub roles: Vec<Role>,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateFirstUserRequest {
    pub email: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateFirstUserResponse {
    pub user_id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateUserRequest {
    pub email: String,
    pub username: String,
    pub password: String,
    /// Defaults to `[member]`.
    #[serde(default)]
    pub roles: Vec<Role>,
}

/// Log in with a password. Either `email` or `username` names the user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoginWithPasswordRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginWithPasswordResponse {
    pub session_token: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    pub token_name: String,
    /// Lifetime in seconds; 0 means the deployment default.
    #[serde(default)]
    pub lifetime: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateApiKeyResponse {
    pub key: String,
}

/// A personal API token as listed (the secret is never returned again).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub user_id: Uuid,
    pub token_name: String,
    pub login_type: String,
    pub expires_at: DateTime<Utc>,
    pub last_used: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}
