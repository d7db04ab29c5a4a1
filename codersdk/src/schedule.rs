//! Autostart and autostop: the requests that set a workspace's TTL, its
//! autostart schedule and its deadline, a template's TTL defaults, and the
//! client calls for them (Coder's `PUT /workspaces/{id}/ttl`, `…/autostart`,
//! `…/extend`, `PATCH /templates/{id}`).

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Client, SdkError, Template, Workspace};

/// `PUT /api/v2/workspaces/{id}/ttl`: `None` turns autostop off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpdateWorkspaceTtlRequest {
    pub ttl_ms: Option<i64>,
}

/// `PUT /api/v2/workspaces/{id}/autostart`: `None` turns autostart off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpdateWorkspaceAutostartRequest {
    pub schedule: Option<String>,
}

/// `PUT /api/v2/workspaces/{id}/extend`: the running workspace's new deadline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PutExtendWorkspaceRequest {
    pub deadline: DateTime<Utc>,
}

/// `PATCH /api/v2/templates/{template}`: fields left out stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpdateTemplateMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ttl_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_active_version: Option<bool>,
    /// An icon's URL: `/`-relative or https; empty removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
}

impl Client {
    pub async fn update_workspace_ttl(
        &self,
        workspace: Uuid,
        ttl_ms: Option<i64>,
    ) -> Result<Workspace, SdkError> {
        let req = UpdateWorkspaceTtlRequest { ttl_ms };
        self.request(Method::PUT, &format!("/api/v2/workspaces/{workspace}/ttl"), Some(&req)).await
    }

    pub async fn update_workspace_autostart(
        &self,
        workspace: Uuid,
        schedule: Option<String>,
    ) -> Result<Workspace, SdkError> {
        let req = UpdateWorkspaceAutostartRequest { schedule };
        let path = format!("/api/v2/workspaces/{workspace}/autostart");
        self.request(Method::PUT, &path, Some(&req)).await
    }

    pub async fn extend_workspace(
        &self,
        workspace: Uuid,
        deadline: DateTime<Utc>,
    ) -> Result<Workspace, SdkError> {
        let req = PutExtendWorkspaceRequest { deadline };
        let path = format!("/api/v2/workspaces/{workspace}/extend");
        self.request(Method::PUT, &path, Some(&req)).await
    }

    pub async fn update_template_meta(
        &self,
        template: Uuid,
        req: &UpdateTemplateMeta,
    ) -> Result<Template, SdkError> {
        self.request(Method::PATCH, &format!("/api/v2/templates/{template}"), Some(req)).await
    }
}
