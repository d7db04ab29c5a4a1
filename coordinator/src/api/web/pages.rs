//! HTML for the dashboard pages. Every value from the database or the user
//! goes through [`esc`]; scripts live in `assets/dashboard.js` (the CSP
//! forbids inline ones) and read their inputs from `data-` attributes.

use std::fmt::Write as _;

use codersdk::{
    AppHealth, LifecycleState, ProvisionerJobStatus, Template, Workspace, WorkspaceAgent,
    WorkspaceStatus,
};

use super::agent_detail::{self, AgentDetail};
use super::Viewer;

/// Escapes text for HTML content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn layout(title: &str, viewer: Option<&Viewer>, body: &str) -> String {
    layout_with_head(title, viewer, "", body)
}

/// [`layout`] with more `<head>` content (a page's own stylesheets).
fn layout_with_head(title: &str, viewer: Option<&Viewer>, head: &str, body: &str) -> String {
    let (meta, nav) = match viewer {
        Some(v) => (
            format!(r#"<meta name="csrf-token" content="{}">"#, esc(&v.csrf)),
            format!(
                r#"<nav><a href="/workspaces">Workspaces</a><a href="/templates">Templates</a><a href="/users">Users</a><a href="/audit">Audit</a><span class="who">{}</span><button id="logout" type="button">Log out</button></nav>"#,
                esc(&v.session.user.username)
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
{meta}<title>{} · Coder</title><link rel="stylesheet" href="/assets/dashboard.css">{head}</head>
<body>{nav}<main>{body}</main><script src="/assets/dashboard.js"></script></body></html>"#,
        esc(title)
    )
}

/// The login page: the OpenID Connect button when a provider is configured,
/// and the password form (folded away, for owners, when password login is
/// disabled).
pub fn login(redirect: &str, methods: &codersdk::AuthMethods) -> String {
    let mut body = String::from("<h1>Log in</h1>");
    if methods.oidc.enabled {
        let text = match methods.oidc.sign_in_text.trim() {
            "" => "OpenID Connect",
            t => t,
        };
        let to: String = url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect();
        let _ = write!(
            body,
            r#"<p><a class="button" id="login-oidc" href="/api/v2/users/oidc/start?redirect={}">Log in with {}</a></p>"#,
            esc(&to),
            esc(text)
        );
    }
    let form = format!(
        r#"<form id="login" data-redirect="{}">
<label>Email or username <input name="login" id="login-name" autocomplete="username" required></label>
<label>Password <input name="password" id="login-password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="login-submit">Log in</button>
<p class="error" id="login-error" hidden></p>
</form>"#,
        esc(redirect)
    );
    if methods.password.enabled {
        body.push_str(&form);
    } else {
        let _ = write!(
            body,
            "<details><summary>Password login is disabled; owners may still use one</summary>{form}</details>"
        );
    }
    layout("Log in", None, &body)
}

/// `/cli-auth`: a fresh session token for `coder login` to paste.
pub fn cli_auth(viewer: &Viewer, token: &str) -> String {
    let body = format!(
        r#"<h1>Session token</h1>
<p>Copy this token and paste it into <code>coder login</code>. It is shown once and acts as you; keep it secret.</p>
<pre id="cli-token">{}</pre>"#,
        esc(token)
    );
    layout("Session token", Some(viewer), &body)
}

/// The CSS class of a state's badge: settled well, settled badly, or on
/// its way.
pub(super) trait Badge: Copy {
    fn class(self) -> &'static str;
}

impl Badge for WorkspaceStatus {
    fn class(self) -> &'static str {
        match self {
            WorkspaceStatus::Running => "ok",
            WorkspaceStatus::Failed => "bad",
            WorkspaceStatus::Stopped | WorkspaceStatus::Canceled | WorkspaceStatus::Deleted => {
                "off"
            }
            _ => "busy",
        }
    }
}

impl Badge for LifecycleState {
    fn class(self) -> &'static str {
        match self {
            LifecycleState::Ready => "ok",
            LifecycleState::StartError | LifecycleState::ShutdownError => "bad",
            LifecycleState::StartTimeout | LifecycleState::ShutdownTimeout => "warn",
            LifecycleState::Off => "off",
            _ => "busy",
        }
    }
}

impl Badge for AppHealth {
    fn class(self) -> &'static str {
        match self {
            AppHealth::Healthy => "ok",
            AppHealth::Unhealthy => "bad",
            _ => "busy",
        }
    }
}

impl Badge for ProvisionerJobStatus {
    fn class(self) -> &'static str {
        match self {
            ProvisionerJobStatus::Succeeded => "ok",
            ProvisionerJobStatus::Failed => "bad",
            _ => "busy",
        }
    }
}

/// The badge beside an app link; none for apps without a healthcheck.
/// An icon before a name (escaped; templates and apps store only
/// `/`-relative and https URLs), or nothing when there is none.
pub fn icon_img(url: &str, size: u32) -> String {
    if url.is_empty() {
        return String::new();
    }
    format!(r#"<img class="icon" src="{}" alt="" width="{size}" height="{size}"> "#, esc(url))
}

fn health_badge(h: AppHealth) -> String {
    if h == AppHealth::Disabled {
        return String::new();
    }
    format!(r#" <span class="badge {}" data-health="{h}">{h}</span>"#, h.class(), h = h.as_str())
}

fn agents_summary(agents: &[WorkspaceAgent]) -> String {
    agents
        .iter()
        .map(|a| {
            format!(
                r#"<span class="badge {}">{}: {} / {}</span>"#,
                a.lifecycle_state.class(),
                esc(&a.name),
                a.status,
                a.lifecycle_state
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn create_form(templates: &[Template]) -> String {
    if templates.is_empty() {
        return "<p>No templates yet: push one with <code>coder templates push</code>.</p>".into();
    }
    let options: String = templates
        .iter()
        .map(|t| format!(r#"<option value="{}">{}</option>"#, t.id, esc(&t.name)))
        .collect();
    format!(
        r#"<form id="create" class="inline"><label>New workspace <input id="create-name" name="name" required pattern="[A-Za-z0-9_\-]+" placeholder="name"></label>
<label>Template <select id="create-template" name="template">{options}</select></label>
<button type="submit" id="create-submit">Create</button><p class="error" id="create-error" hidden></p></form>"#
    )
}

/// The "outdated" badge and its Update button (a start build on the
/// template's active version; the API carries the parameter values over),
/// from the API's own `outdated` (one rule, in `database::workspaces`).
fn outdated_badge(w: &Workspace) -> String {
    if !w.outdated {
        return String::new();
    }
    let version = w.template_active_version_id;
    let update = if w.latest_build.status.is_transitioning() {
        String::new()
    } else {
        format!(
            r#" <button type="button" class="update" data-workspace-id="{}" data-version-id="{version}" title="Start a build on the template's active version">Update</button>"#,
            w.id
        )
    };
    format!(
        r#" <span class="badge warn outdated" title="The template's active version is newer than this workspace's">outdated</span>{update}"#
    )
}

pub fn workspaces(
    viewer: &Viewer,
    rows: &[(Workspace, Vec<WorkspaceAgent>)],
    templates: &[Template],
) -> String {
    let mut body = String::from("<h1>Workspaces</h1>");
    body.push_str(&create_form(templates));
    if rows.is_empty() {
        body.push_str(
            "<p>No workspaces yet. Create one with <code>coder create NAME --template T</code>.</p>",
        );
    } else {
        body.push_str(
            r#"<table id="workspaces" data-live="list"><thead><tr><th>Name</th><th>Template</th><th>Status</th><th>Agents</th></tr></thead><tbody>"#,
        );
        for (w, agents) in rows {
            let _ = write!(
                body,
                r#"<tr data-workspace="{name}" data-workspace-id="{id}" data-outdated="{outdated}"><td><a href="/@{owner}/{name}">{owner}/{name}</a></td><td>{tpl}{badge}</td><td><span class="badge {cls}" data-status="{st}">{st}</span></td><td>{agents}</td></tr>"#,
                outdated = w.outdated,
                badge = outdated_badge(w),
                owner = esc(&w.owner_name),
                name = esc(&w.name),
                tpl = esc(&w.template_name),
                cls = w.latest_build.status.class(),
                st = w.latest_build.status,
                agents = agents_summary(agents),
                id = w.id,
            );
        }
        body.push_str("</tbody></table>");
    }
    layout("Workspaces", Some(viewer), &body)
}

/// The `vscode://` URI for VS Code Desktop's Remote-SSH into the
/// workspace, as `coder open vscode --print` builds it: through the
/// `coder.WORKSPACE` host that `coder config-ssh` writes.
fn vscode_uri(workspace: &str, directory: &str) -> String {
    let dir =
        if directory.starts_with('/') { directory.to_owned() } else { format!("/{directory}") };
    format!("vscode://vscode-remote/ssh-remote+coder.{workspace}{dir}")
}

pub fn workspace(
    viewer: &Viewer,
    w: &Workspace,
    agents: &[WorkspaceAgent],
    details: &[AgentDetail],
) -> String {
    let b = &w.latest_build;
    let status = b.status;
    let mut body = format!(
        r#"<h1>{owner}/{name}</h1>
<p>Template <b>{tpl}</b> · build #{num} ({transition}) · <span class="badge {cls}" id="ws-status" data-status="{st}">{st}</span>{outdated}</p>
<div class="actions" id="ws-actions" data-workspace-id="{id}" data-build-id="{build}">"#,
        outdated = outdated_badge(w),
        owner = esc(&w.owner_name),
        name = esc(&w.name),
        tpl = esc(&w.template_name),
        num = b.build_number,
        transition = esc(b.transition.as_str()),
        cls = status.class(),
        st = status,
        id = w.id,
        build = b.id,
    );
    let done = !status.is_transitioning();
    for (t, label, show) in [
        ("start", "Start", done && status != WorkspaceStatus::Running),
        ("stop", "Stop", done && status == WorkspaceStatus::Running),
        ("delete", "Delete", done),
    ] {
        if show {
            let _ = write!(
                body,
                r#"<button type="button" class="transition" id="btn-{t}" data-transition="{t}">{label}</button>"#
            );
        }
    }
    body.push_str("</div><h2>Agents</h2>");
    if agents.is_empty() {
        body.push_str("<p>No agents (the workspace is stopped).</p>");
    }
    for (a, detail) in agents.iter().zip(details) {
        let base = format!("/@{}/{}.{}", esc(&w.owner_name), esc(&w.name), esc(&a.name));
        let _ = write!(
            body,
            r#"<section class="agent" data-agent="{name}" data-status="{st}"><h3>{name} <span class="badge {cls}" data-lifecycle="{lc}">{st} / {lc}</span></h3>
<p>{os}/{arch} · {dir} · mesh path from coderd: <span class="mesh-path" data-agent-id="{id}">{path}</span></p><p class="open-in"><a class="button terminal" href="{base}/terminal">Terminal</a> <a class="button vscode" href="{vscode}" title="Opens VS Code Desktop with Remote-SSH; run coder config-ssh once first">VS Code Desktop</a></p><ul class="apps">"#,
            name = esc(&a.name),
            cls = a.lifecycle_state.class(),
            st = a.status,
            lc = a.lifecycle_state,
            os = esc(&a.os),
            arch = esc(&a.architecture),
            dir = esc(&a.directory),
            path = esc(&agent_detail::path_text(detail.path)),
            id = a.id,
            vscode = esc(&vscode_uri(&w.name, &a.directory)),
        );
        for app in &a.apps {
            let label = if app.display_name.is_empty() { &app.slug } else { &app.display_name };
            if app.url.is_empty() && !app.command.is_empty() {
                // A terminal app: its command in the web terminal.
                let _ = write!(
                    body,
                    r#"<li>{icon}<a class="app terminal-app" data-slug="{slug}" href="{base}/terminal?app={slug}" title="{cmd}">{label}</a> <small>terminal</small></li>"#,
                    icon = icon_img(&app.icon, 16),
                    slug = esc(&app.slug),
                    label = esc(label),
                    cmd = esc(&app.command),
                );
                continue;
            }
            let _ = write!(
                body,
                r#"<li>{icon}<a class="app" data-slug="{slug}" href="{base}/apps/{slug}/" target="_blank" rel="noopener">{label}</a>{health} <small>share: {share}</small></li>"#,
                icon = icon_img(&app.icon, 16),
                slug = esc(&app.slug),
                label = esc(label),
                share = esc(&app.share),
                health = health_badge(app.health),
            );
        }
        body.push_str("</ul>");
        body.push_str(&agent_detail::metadata_html(&detail.metadata));
        if a.status == codersdk::WorkspaceAgentStatus::Connected {
            let _ = write!(
                body,
                r#"<div class="ports" data-agent-id="{id}" data-base="{base}" data-workspace-id="{ws}" data-agent-name="{name}" data-may-share="{may_share}"><h4>Listening ports <button type="button" class="ports-refresh">Refresh</button></h4><table><thead><tr><th>Port</th><th>Process</th><th>Address</th><th></th><th>Shared with</th></tr></thead><tbody></tbody></table><p class="ports-empty" hidden>Nothing is listening on a TCP port yet.</p><p class="error" hidden></p></div>"#,
                id = a.id,
                ws = w.id,
                name = esc(&a.name),
                may_share = viewer.session.may(
                    crate::authz::Action::Update,
                    crate::authz::Object::PortShares { owner: w.owner_id }
                ),
            );
        }
        body.push_str(&agent_detail::logs_html(a.id, &detail.sources, &detail.logs));
        body.push_str("</section>");
    }
    let _ =
        write!(body, r#"<h2>Build logs</h2><pre id="build-logs" data-build-id="{}"></pre>"#, b.id);
    layout(&w.name, Some(viewer), &body)
}

/// The web terminal: xterm.js (loaded before the dashboard script, which
/// starts it) in `#terminal`.
pub fn terminal(viewer: &Viewer, title: &str, agent: uuid::Uuid, command: Option<&str>) -> String {
    let command = command.map(|c| format!(r#" data-command="{}""#, esc(c))).unwrap_or_default();
    let body = format!(
        r#"<h1>Terminal · {}</h1>
<p class="term-status" id="term-status">connecting…</p>
<div id="terminal" data-agent-id="{agent}"{command}></div>
<p><small>Reloading the page, or a dropped connection, reconnects to the same shell with its recent output.</small></p>
<script src="/assets/xterm/xterm.js"></script><script src="/assets/xterm/addon-fit.js"></script>"#,
        esc(title)
    );
    let head = r#"<link rel="stylesheet" href="/assets/xterm/xterm.css">"#;
    layout_with_head(title, Some(viewer), head, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
