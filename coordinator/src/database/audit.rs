//! The audit log's table: one insert (always inside the transaction of the
//! change it records) and the filtered, paginated listing behind
//! `GET /api/v2/audit`.

use chrono::{DateTime, Utc};
use codersdk::{AuditAction, AuditLog, ResourceType};
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

/// A row to write.
#[derive(Debug, Clone)]
pub struct NewAuditLog<'a> {
    pub user_id: Option<Uuid>,
    pub username: &'a str,
    pub action: AuditAction,
    pub resource_type: ResourceType,
    pub resource_id: Option<Uuid>,
    pub resource_name: &'a str,
    pub diff: serde_json::Value,
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: &'a str,
    pub status_code: u16,
}

pub async fn insert(db: impl PgExecutor<'_>, row: NewAuditLog<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_logs (id, user_id, username, action, resource_type, resource_id,
             resource_name, diff, ip, user_agent, status_code)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::inet, $10, $11)",
    )
    .bind(Uuid::new_v4())
    .bind(row.user_id)
    .bind(row.username)
    .bind(row.action.as_str())
    .bind(row.resource_type.as_str())
    .bind(row.resource_id)
    .bind(row.resource_name)
    .bind(row.diff)
    .bind(row.ip.map(|ip| ip.to_string()))
    .bind(row.user_agent)
    .bind(i32::from(row.status_code))
    .execute(db)
    .await
    .map(drop)
}

/// What a listing keeps; every field set narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The acting user's name (case-insensitive; also matches a failed
    /// login's attempted name).
    pub username: Option<String>,
    pub action: Option<AuditAction>,
    pub resource_type: Option<ResourceType>,
    pub time_after: Option<DateTime<Utc>>,
    pub time_before: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    time: DateTime<Utc>,
    user_id: Option<Uuid>,
    username: String,
    #[sqlx(try_from = "String")]
    action: AuditAction,
    #[sqlx(try_from = "String")]
    resource_type: ResourceType,
    resource_id: Option<Uuid>,
    resource_name: String,
    diff: serde_json::Value,
    ip: Option<String>,
    user_agent: String,
    status_code: i32,
}

impl Row {
    fn into_api(self) -> AuditLog {
        AuditLog {
            id: self.id,
            time: self.time,
            user_id: self.user_id,
            username: self.username,
            action: self.action,
            resource_type: self.resource_type,
            resource_id: self.resource_id,
            resource_name: self.resource_name,
            diff: self.diff,
            ip: self.ip,
            user_agent: self.user_agent,
            status_code: u16::try_from(self.status_code).unwrap_or_default(),
        }
    }
}

fn push_filter(q: &mut QueryBuilder<'_, Postgres>, f: &Filter) {
    q.push(" WHERE true");
    if let Some(u) = &f.username {
        q.push(" AND lower(username) = lower(").push_bind(u.clone()).push(")");
    }
    if let Some(a) = f.action {
        q.push(" AND action = ").push_bind(a.as_str());
    }
    if let Some(r) = f.resource_type {
        q.push(" AND resource_type = ").push_bind(r.as_str());
    }
    if let Some(t) = f.time_after {
        q.push(" AND time >= ").push_bind(t);
    }
    if let Some(t) = f.time_before {
        q.push(" AND time < ").push_bind(t);
    }
}

/// A page of matching rows, newest first, and how many match in all.
pub async fn list(
    db: &sqlx::PgPool,
    f: &Filter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<AuditLog>, i64), sqlx::Error> {
    let mut q = QueryBuilder::new(
        "SELECT id, time, user_id, username, action, resource_type, resource_id, resource_name,
             diff, host(ip) AS ip, user_agent, status_code FROM audit_logs",
    );
    push_filter(&mut q, f);
    q.push(" ORDER BY time DESC, id LIMIT ").push_bind(limit).push(" OFFSET ").push_bind(offset);
    let rows: Vec<Row> = q.build_query_as().fetch_all(db).await?;
    let mut c = QueryBuilder::new("SELECT count(*) FROM audit_logs");
    push_filter(&mut c, f);
    let count: i64 = c.build_query_scalar().fetch_one(db).await?;
    Ok((rows.into_iter().map(Row::into_api).collect(), count))
}
