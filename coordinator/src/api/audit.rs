//! The audit log: the writer handlers call inside the transaction of each
//! state change, and `GET /api/v2/audit` (owners and auditors).
//!
//! A handler extracts [`Origin`] (the client's address and user agent),
//! makes its change in a transaction, calls [`Origin::record`] on that
//! transaction with an [`Entry`], and commits: the change and its row land
//! together or not at all. Failed password logins change nothing and are
//! recorded on their own.
//!
//! The address is the connection's peer address: coderd has no setting that
//! trusts a proxy, so `X-Forwarded-For` (which any client can send) is
//! ignored. Diffs are built with [`changes`], which refuses fields that name
//! a secret, so a password hash or token never reaches a row.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use chrono::{DateTime, NaiveDate, Utc};
use codersdk::{AuditAction, AuditLogsResponse, ResourceType};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::auth::Session;
use super::error::{ApiError, ApiResult, Json};
use super::AppState;
use crate::authz::{Action, Object};
use crate::database::audit::{self, Filter, NewAuditLog};

/// Where a request came from, for its audit row.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<IpAddr>,
    pub user_agent: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect())
            .unwrap_or_default();
        Ok(Origin { ip, user_agent })
    }
}

/// Who acted: a user, or for a failed login possibly only a name.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub id: Option<Uuid>,
    pub username: &'a str,
}

impl<'a> From<&'a Session> for Actor<'a> {
    fn from(s: &'a Session) -> Self {
        Actor { id: Some(s.user.id), username: &s.user.username }
    }
}

/// What happened to which resource.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub action: AuditAction,
    pub resource_type: ResourceType,
    pub resource_id: Option<Uuid>,
    pub resource_name: &'a str,
    pub diff: Value,
    pub status: StatusCode,
}

impl<'a> Entry<'a> {
    pub fn new(action: AuditAction, resource_type: ResourceType, id: Uuid, name: &'a str) -> Self {
        Entry {
            action,
            resource_type,
            resource_id: Some(id),
            resource_name: name,
            diff: json!({}),
            status: StatusCode::OK,
        }
    }

    pub fn diff(mut self, diff: Value) -> Self {
        self.diff = diff;
        self
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl Origin {
    /// Writes the row; call it on the transaction that makes the change.
    pub async fn record(
        &self,
        db: impl PgExecutor<'_>,
        actor: Actor<'_>,
        e: Entry<'_>,
    ) -> Result<(), sqlx::Error> {
        let row = NewAuditLog {
            user_id: actor.id,
            username: actor.username,
            action: e.action,
            resource_type: e.resource_type,
            resource_id: e.resource_id,
            resource_name: e.resource_name,
            diff: e.diff,
            ip: self.ip,
            user_agent: &self.user_agent,
            status_code: e.status.as_u16(),
        };
        audit::insert(db, row).await
    }
}

/// Field names that may never appear in a diff.
fn names_a_secret(field: &str) -> bool {
    let f = field.to_ascii_lowercase();
    ["password", "token", "secret", "hash", "key"].iter().any(|s| f.contains(s))
}

/// A diff of `(field, old, new)`: unchanged fields are left out, and a field
/// that names a secret is recorded only as changed, never with its values.
pub fn changes(fields: &[(&str, Value, Value)]) -> Value {
    let mut out = Map::new();
    for (field, old, new) in fields {
        if old == new {
            continue;
        }
        let v = if names_a_secret(field) {
            json!({"old": "", "new": "", "secret": true})
        } else {
            json!({"old": old, "new": new})
        };
        out.insert((*field).to_owned(), v);
    }
    Value::Object(out)
}

/// A created resource's fields, as a diff from nothing.
pub fn created(fields: &[(&str, Value)]) -> Value {
    let f: Vec<(&str, Value, Value)> =
        fields.iter().map(|(k, v)| (*k, Value::Null, v.clone())).collect();
    changes(&f)
}

#[derive(Debug, Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
}

/// Largest page.
const MAX_LIMIT: i64 = 1000;

/// Parses Coder's search syntax: space-separated `key:value` terms
/// (`username:`/`user:`, `action:`, `resource_type:`, `time_after:`,
/// `time_before:`; times as RFC 3339 or `YYYY-MM-DD`).
pub fn parse_query(q: &str) -> Result<Filter, String> {
    let mut f = Filter::default();
    for term in q.split_whitespace() {
        let Some((key, value)) = term.split_once(':') else {
            return Err(format!("{term:?} is not a key:value term."));
        };
        match key {
            "username" | "user" => f.username = Some(value.to_owned()),
            "action" => f.action = Some(value.parse().map_err(|e| format!("{e}"))?),
            "resource_type" => f.resource_type = Some(value.parse().map_err(|e| format!("{e}"))?),
            "time_after" => f.time_after = Some(parse_time(value)?),
            "time_before" => f.time_before = Some(parse_time(value)?),
            _ => {
                return Err(format!(
                    "Unknown filter {key:?}; use username, action, resource_type, time_after \
                     or time_before."
                ))
            }
        }
    }
    Ok(f)
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("{s:?} is not a time (RFC 3339, or YYYY-MM-DD)."))
}

/// `GET /api/v2/audit?q=&limit=&offset=`.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<AuditLogsResponse>> {
    session.authorize(Action::Read, Object::AuditLog)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request("Invalid query.").detail(e.body_text()))?;
    let filter = parse_query(&q.q)
        .map_err(|e| ApiError::bad_request("Invalid audit search query.").detail(e))?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let offset = q.offset.unwrap_or(0).max(0);
    let (audit_logs, count) = audit::list(&state.db, &filter, limit, offset).await?;
    Ok(Json(AuditLogsResponse { audit_logs, count }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn queries_parse_like_coders() {
        let f = parse_query("user:Alice action:login resource_type:user time_after:2026-01-02")
            .unwrap();
        assert_eq!(f.username.as_deref(), Some("Alice"));
        assert_eq!(f.action, Some(AuditAction::Login));
        assert_eq!(f.resource_type, Some(ResourceType::User));
        assert_eq!(f.time_after.unwrap().to_rfc3339(), "2026-01-02T00:00:00+00:00");
        assert_eq!(parse_query("").unwrap(), Filter::default());
        assert!(parse_query("action:explode").is_err());
        assert!(parse_query("bogus:1").is_err());
        assert!(parse_query("alice").is_err());
        assert!(parse_query("time_before:yesterday").is_err());
    }

    #[test]
    fn diffs_leave_out_unchanged_fields_and_never_hold_a_secret() {
        let d = changes(&[
            ("status", json!("active"), json!("suspended")),
            ("roles", json!(["member"]), json!(["member"])),
            ("hashed_password", json!("$argon2id$v=19$…"), json!("$argon2id$v=19$new")),
        ]);
        assert_eq!(d["status"], json!({"old": "active", "new": "suspended"}));
        assert!(d.get("roles").is_none());
        assert_eq!(d["hashed_password"]["secret"], json!(true));
        assert!(!d.to_string().contains("argon2"), "{d}");
    }
}
