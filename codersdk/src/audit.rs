//! The audit log on the wire: `GET /api/v2/audit?q=…&limit=&offset=`
//! (Coder's `AuditLogsRequest`/`AuditLogResponse`) and the [`Client`] call.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::http::{Client, SdkError};
use crate::{AuditAction, ResourceType};

/// One audited state change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditLog {
    pub id: Uuid,
    pub time: DateTime<Utc>,
    /// `None` for a failed login of an unknown user.
    pub user_id: Option<Uuid>,
    /// Who acted, as they were named then (the attempted login, for a
    /// failed one).
    pub username: String,
    pub action: AuditAction,
    pub resource_type: ResourceType,
    pub resource_id: Option<Uuid>,
    pub resource_name: String,
    /// `{"field": {"old": …, "new": …}}` of the fields the change touched.
    pub diff: serde_json::Value,
    /// The client's address as coderd's listener saw it.
    pub ip: Option<String>,
    pub user_agent: String,
    pub status_code: u16,
}

/// A page of the audit log, newest first, with the number of rows that
/// match the query in all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditLogsResponse {
    pub audit_logs: Vec<AuditLog>,
    pub count: i64,
}

impl Client {
    /// `q` in Coder's search syntax: `username:alice action:login
    /// resource_type:user time_after:2026-01-02T00:00:00Z`.
    pub async fn audit_logs(
        &self,
        q: &str,
        limit: u32,
        offset: u32,
    ) -> Result<AuditLogsResponse, SdkError> {
        let mut url = url::Url::parse("http://x/api/v2/audit").map_err(SdkError::from)?;
        url.query_pairs_mut()
            .append_pair("q", q)
            .append_pair("limit", &limit.to_string())
            .append_pair("offset", &offset.to_string());
        let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
        self.request::<(), _>(Method::GET, &path, None).await
    }
}
