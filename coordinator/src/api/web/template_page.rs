//! The template pages: `/templates` (each template with its active
//! version and a "Create workspace" link) and `/templates/{template}` (its
//! settings form — display name, description, default and maximum autostop
//! TTL, sent to `PATCH /templates/{template}` — and its versions, each with
//! its import logs, streamed when unfolded, and **Promote**). Read through
//! the API handlers; changes go through the API with the CSRF header, and
//! the page shows the API's refusals (template admins and owners may change
//! a template). Pushing a version stays in the CLI.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use codersdk::{ProvisionerJobStatus, Template, TemplateVersion};

use super::super::error::{ApiError, Json, Path};
use super::super::templates;
use super::super::AppState;
use super::pages::{esc, icon_img, layout, Badge};
use super::{page, viewer, Viewer};
use crate::authz::{Action, Object};

pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(v) = viewer(&state, &headers).await? else {
        return Ok(super::super::apps::login_redirect("/templates"));
    };
    let Json(list) = templates::list_templates(State(state.clone()), v.session.clone()).await?;
    let mut rows = Vec::with_capacity(list.len());
    for t in list {
        let Json(versions) = templates::template_versions(
            State(state.clone()),
            v.session.clone(),
            Path(t.id.to_string()),
        )
        .await?;
        let active = versions.into_iter().find(|x| x.id == t.active_version_id);
        rows.push((t, active));
    }
    Ok(page(list_page(&v, &rows)))
}

pub async fn detail(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let Some(v) = viewer(&state, &headers).await? else {
        let to: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        return Ok(super::super::apps::login_redirect(&format!("/templates/{to}")));
    };
    let Json(t) = templates::template(State(state.clone()), v.session.clone(), Path(name)).await?;
    let Json(versions) = templates::template_versions(
        State(state.clone()),
        v.session.clone(),
        Path(t.id.to_string()),
    )
    .await?;
    Ok(page(detail_page(&v, &t, &versions)))
}

fn title(t: &Template) -> &str {
    if t.display_name.is_empty() {
        &t.name
    } else {
        &t.display_name
    }
}

/// A template's icon (the API accepts only `/`-relative and https URLs).
fn icon(t: &Template) -> String {
    icon_img(&t.icon, 24)
}

fn list_page(v: &Viewer, rows: &[(Template, Option<TemplateVersion>)]) -> String {
    let mut body = String::from("<h1>Templates</h1>");
    if rows.is_empty() {
        body.push_str(
            r#"<p class="empty">No templates yet. Push one from the CLI: <code>coder templates init DIR</code>, then <code>coder templates push NAME -d DIR</code>.</p>"#,
        );
        return layout("Templates", Some(v), &body);
    }
    body.push_str(
        r#"<table id="templates"><thead><tr><th>Template</th><th>Description</th><th>Active version</th><th></th></tr></thead><tbody>"#,
    );
    for (t, active) in rows {
        let version = match active {
            Some(a) => format!(
                r#"{} <span class="badge {}">{}</span>"#,
                esc(&a.name),
                a.job.status.class(),
                a.job.status
            ),
            None => String::new(),
        };
        let _ = write!(
            body,
            r#"<tr data-template="{name}"><td>{icon}<a href="/templates/{name}">{title}</a><br><small>{name}</small></td><td>{desc}</td><td>{version}</td><td><a class="button create-ws" href="/templates/{name}/workspace">Create workspace</a></td></tr>"#,
            name = esc(&t.name),
            title = esc(title(t)),
            desc = esc(&t.description),
            icon = icon(t),
        );
    }
    body.push_str("</tbody></table>");
    layout("Templates", Some(v), &body)
}

/// A TTL as typed to `coder templates edit` (`8h`, `1h30m`; `0`: none).
pub fn duration_text(ms: i64) -> String {
    if ms <= 0 {
        return "0".to_owned();
    }
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    if out.is_empty() {
        "0".to_owned()
    } else {
        out
    }
}

fn settings_form(t: &Template) -> String {
    format!(
        r#"<details class="settings" id="template-settings"><summary>Settings</summary><form id="template-edit" data-template-id="{id}">
<label>Display name <input id="tpl-display-name" value="{dn}" maxlength="64" autocomplete="off"></label>
<label>Description <textarea id="tpl-description" rows="2" maxlength="128">{desc}</textarea></label>
<label>Icon URL <input id="tpl-icon" value="{icon}" placeholder="/icon/go.svg or https://…" autocomplete="off"></label>
<label>Default autostop <input id="tpl-default-ttl" value="{def}" pattern="0|([0-9]+h)?([0-9]+m)?([0-9]+s)?" title="A duration such as 8h, 1h30m or 45m; 0 for none"></label>
<label>Maximum autostop <input id="tpl-max-ttl" value="{max}" pattern="0|([0-9]+h)?([0-9]+m)?([0-9]+s)?" title="A duration such as 24h; 0 for no maximum"></label>
<button type="submit" id="tpl-save">Save</button><span class="saved" id="tpl-saved" hidden>Saved.</span></form></details>"#,
        id = t.id,
        dn = esc(&t.display_name),
        desc = esc(&t.description),
        icon = esc(&t.icon),
        def = duration_text(t.default_ttl_ms),
        max = duration_text(t.max_ttl_ms),
    )
}

fn detail_page(v: &Viewer, t: &Template, versions: &[TemplateVersion]) -> String {
    let mut body = format!(
        r#"<p class="crumbs"><a href="/templates">Templates</a></p><h1 data-template="{name}">{icon}{title}</h1><p>{desc}</p>
<p class="open-in"><a class="button create-ws" href="/templates/{name}/workspace">Create workspace</a></p>
<p class="error" id="templates-error" hidden></p>"#,
        name = esc(&t.name),
        title = esc(title(t)),
        desc = esc(&t.description),
        icon = icon(t),
    );
    // Only template admins and owners may change it; others see none.
    if v.session.may(Action::Update, Object::Template) {
        body.push_str(&settings_form(t));
    }
    body.push_str(
        r#"<h2>Versions</h2><table id="versions"><thead><tr><th>Version</th><th>Created</th><th>Import</th><th>Message</th><th></th></tr></thead><tbody>"#,
    );
    for x in versions.iter().rev() {
        let status = x.job.status;
        let is_active = x.id == t.active_version_id;
        let active = if is_active { r#" <span class="badge ok">active</span>"# } else { "" };
        // Promoting needs a template admin; the API refuses anyone else
        // and the page shows its message.
        let promote = if !is_active && status == ProvisionerJobStatus::Succeeded {
            format!(
                r#"<button type="button" class="promote" data-template-id="{}" data-version-id="{}">Promote</button>"#,
                t.id, x.id
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            r#"<tr data-version="{name}" data-active="{is_active}"><td>{name}{active}</td><td>{created}</td><td><span class="badge {cls}">{status}</span></td><td>{msg}</td><td>{promote}</td></tr>
<tr class="version-logs"><td colspan="5"><details id="vlogs-{id}" data-version-id="{id}"><summary>Build logs</summary><pre class="logs"></pre></details></td></tr>"#,
            name = esc(&x.name),
            created = x.created_at.format("%Y-%m-%d %H:%M UTC"),
            cls = status.class(),
            msg = esc(&x.message),
            id = x.id,
        );
    }
    body.push_str("</tbody></table>");
    layout(title(t), Some(v), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_typed() {
        assert_eq!(duration_text(0), "0");
        assert_eq!(duration_text(8 * 3_600_000), "8h");
        assert_eq!(duration_text(5_400_000), "1h30m");
        assert_eq!(duration_text(20_000), "20s");
        assert_eq!(duration_text(500), "0");
    }
}
