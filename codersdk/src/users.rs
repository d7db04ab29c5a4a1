//! User lifecycle on the wire: status changes, roles, passwords, deletion
//! (Coder's `PUT /users/{user}/status/suspend`, `PUT /users/{user}/roles`,
//! `PUT /users/{user}/password`, `DELETE /users/{user}`), and the
//! [`Client`] calls that send them.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::http::{Client, SdkError};
use crate::{Role, User};

/// `PUT /api/v2/users/{user}/roles`: the user's roles afterwards (every
/// user is a member whatever this says).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpdateRolesRequest {
    pub roles: Vec<Role>,
}

/// `PUT /api/v2/users/{user}/password`. Changing one's own password needs
/// the old one; an owner or user admin resetting another's leaves it empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdatePasswordRequest {
    #[serde(default)]
    pub old_password: String,
    pub password: String,
}

fn user_path(user: &str, rest: &str) -> String {
    format!("/api/v2/users/{user}{rest}")
}

impl Client {
    /// `user`: a username, an id, or `me`.
    pub async fn user(&self, user: &str) -> Result<User, SdkError> {
        self.request::<(), _>(Method::GET, &user_path(user, ""), None).await
    }

    pub async fn suspend_user(&self, user: &str) -> Result<User, SdkError> {
        self.request::<(), _>(Method::PUT, &user_path(user, "/status/suspend"), None).await
    }

    pub async fn activate_user(&self, user: &str) -> Result<User, SdkError> {
        self.request::<(), _>(Method::PUT, &user_path(user, "/status/activate"), None).await
    }

    pub async fn update_roles(&self, user: &str, roles: &[Role]) -> Result<User, SdkError> {
        let req = UpdateRolesRequest { roles: roles.to_vec() };
        self.request(Method::PUT, &user_path(user, "/roles"), Some(&req)).await
    }

    pub async fn update_password(
        &self,
        user: &str,
        req: &UpdatePasswordRequest,
    ) -> Result<(), SdkError> {
        self.send(Method::PUT, &user_path(user, "/password"), Some(req)).await?;
        Ok(())
    }

    /// Deletes a user; 409 while they still have workspaces.
    pub async fn delete_user(&self, user: &str) -> Result<(), SdkError> {
        self.send::<()>(Method::DELETE, &user_path(user, ""), None).await?;
        Ok(())
    }
}
