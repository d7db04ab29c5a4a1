//! Templates: the typed row, lookup by id or name, and the inserts and
//! updates of template management. A template points at its active version.

use chrono::{DateTime, Utc};
use codersdk::Template;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

#[derive(sqlx::FromRow)]
pub struct TemplateRow {
    pub id: Uuid,
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub active_version_id: Uuid,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub default_ttl_ms: i64,
    pub max_ttl_ms: i64,
    pub require_active_version: bool,
    pub icon: String,
}

impl TemplateRow {
    pub fn to_api(&self) -> Template {
        Template {
            id: self.id,
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            description: self.description.clone(),
            active_version_id: self.active_version_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            created_by: self.created_by,
            default_ttl_ms: self.default_ttl_ms,
            max_ttl_ms: self.max_ttl_ms,
            require_active_version: self.require_active_version,
            icon: self.icon.clone(),
        }
    }
}

const COLUMNS: &str = "id, name, display_name, description, active_version_id, created_by,
    created_at, updated_at, default_ttl_ms, max_ttl_ms, require_active_version, icon";

pub async fn by_id(db: &PgPool, id: Uuid) -> Result<Option<TemplateRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM templates WHERE id = $1 AND NOT deleted"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// By name, case-insensitively.
pub async fn by_name(db: &PgPool, name: &str) -> Result<Option<TemplateRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM templates WHERE lower(name) = lower($1) AND NOT deleted"
    ))
    .bind(name)
    .fetch_optional(db)
    .await
}

/// Every template, by name.
pub async fn list(db: &PgPool) -> Result<Vec<TemplateRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM templates WHERE NOT deleted ORDER BY name"))
        .fetch_all(db)
        .await
}

/// A template to create.
pub struct NewTemplate<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub display_name: &'a str,
    pub description: &'a str,
    pub active_version_id: Uuid,
    pub created_by: Uuid,
}

/// Inserts a template; a taken name is a unique violation.
pub async fn insert(db: impl PgExecutor<'_>, t: NewTemplate<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO templates (id, name, display_name, description, active_version_id, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(t.id)
    .bind(t.name)
    .bind(t.display_name)
    .bind(t.description)
    .bind(t.active_version_id)
    .bind(t.created_by)
    .execute(db)
    .await
    .map(drop)
}

pub async fn set_active_version(
    db: impl PgExecutor<'_>,
    template: Uuid,
    version: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE templates SET active_version_id = $1, updated_at = now() WHERE id = $2")
        .bind(version)
        .bind(template)
        .execute(db)
        .await
        .map(drop)
}

/// Sets a template's icon URL (validated by the caller).
pub async fn set_icon(db: impl PgExecutor<'_>, id: Uuid, icon: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE templates SET icon = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(icon)
        .execute(db)
        .await
        .map(|_| ())
}

/// Whether `url` may be a template's icon: empty, `/`-relative (not
/// `//host`), or https, without characters that could leave an attribute.
pub fn icon_allowed(url: &str) -> bool {
    let plain = url.len() <= 2048
        && !url
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'));
    let shape = url.is_empty()
        || (url.starts_with('/') && !url.starts_with("//"))
        || (url.strip_prefix("https://").is_some_and(|rest| !rest.starts_with('/'))
            && url::Url::parse(url).is_ok_and(|u| u.host().is_some()));
    plain && shape
}

/// Sets a template's display name and description.
pub async fn set_names(
    db: impl PgExecutor<'_>,
    template: Uuid,
    display_name: &str,
    description: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE templates SET display_name = $2, description = $3, updated_at = now() WHERE id = $1",
    )
    .bind(template)
    .bind(display_name)
    .bind(description)
    .execute(db)
    .await
    .map(drop)
}

/// Whether starts by non-admins (and autostarts) must use the active version.
pub async fn set_require_active_version(
    db: impl PgExecutor<'_>,
    template: Uuid,
    require: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE templates SET require_active_version = $1, updated_at = now() WHERE id = $2",
    )
    .bind(require)
    .bind(template)
    .execute(db)
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::icon_allowed;

    #[test]
    fn icons_are_relative_or_https_urls() {
        for ok in ["", "/icon/go.svg", "https://example.com/logo.png"] {
            assert!(icon_allowed(ok), "{ok}");
        }
        for bad in [
            "http://example.com/a.png",
            "javascript:alert(1)",
            "data:image/png;base64,AAAA",
            "//evil.example/a.png",
            "icon.png",
            "/a b.png",
            "https:///x",
            "/a\"onerror=\"x",
        ] {
            assert!(!icon_allowed(bad), "{bad}");
        }
    }
}
