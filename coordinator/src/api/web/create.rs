//! `/templates/{template}/workspace`: create a workspace through a form of
//! the template's active version's `coder_parameter`s (Coder's page of that
//! path). Each parameter is rendered by its type as the API lists it
//! (`GET /templateversions/{id}/parameters`): options as a select, `bool`
//! as true/false, `number` with its validation's `min`/`max`, `string`
//! with its `regex` (the browser checks it first; coderd checks everything
//! again), `list(string)` as a JSON list. The page's script posts the
//! values to `POST /users/me/workspaces`, as `coder create` does.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use codersdk::{Template, TemplateVersionParameter};

use super::super::error::{ApiError, Json, Path};
use super::super::templates;
use super::super::AppState;
use super::pages::{esc, layout};
use super::{page, viewer, Viewer};

pub async fn page_for(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let Some(v) = viewer(&state, &headers).await? else {
        let to = format!("/templates/{}/workspace", urlencode(&name));
        return Ok(super::super::apps::login_redirect(&to));
    };
    let Json(t) = templates::template(State(state.clone()), v.session.clone(), Path(name)).await?;
    let Json(params) = templates::version_parameters(
        State(state.clone()),
        v.session.clone(),
        Path(t.active_version_id),
    )
    .await?;
    Ok(page(create_page(&v, &t, &params)))
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A validation field (`min`, `max`, `regex`, `error`), if set.
fn rule<'a>(p: &'a TemplateVersionParameter, key: &str) -> Option<&'a serde_json::Value> {
    p.validation.as_ref().and_then(|v| v.get(key)).filter(|v| !v.is_null())
}

/// One parameter's input: `data-param` carries its name, the value is the
/// element's `value`.
fn input(p: &TemplateVersionParameter) -> String {
    let name = esc(&p.name);
    let default = p.default_value.as_deref().unwrap_or("");
    let required = if p.required || p.default_value.is_none() { " required" } else { "" };
    let common = format!(r#"id="param-{name}" name="{name}" data-param="{name}"{required}"#);
    if !p.options.is_empty() {
        let mut out = format!("<select {common}>");
        if p.default_value.is_none() {
            out.push_str(r#"<option value="">Choose…</option>"#);
        }
        for o in &p.options {
            let _ = write!(
                out,
                r#"<option value="{v}"{sel} title="{d}">{n}</option>"#,
                v = esc(&o.value),
                sel = if o.value == default { " selected" } else { "" },
                d = esc(&o.description),
                n = esc(if o.name.is_empty() { &o.value } else { &o.name }),
            );
        }
        out.push_str("</select>");
        return out;
    }
    match p.type_.as_str() {
        "bool" => format!(
            r#"<select {common}><option value="true"{t}>true</option><option value="false"{f}>false</option></select>"#,
            t = if default == "true" { " selected" } else { "" },
            f = if default == "true" { "" } else { " selected" },
        ),
        "number" => {
            let mut attrs = String::new();
            for key in ["min", "max"] {
                if let Some(n) = rule(p, key).and_then(|v| v.as_i64()) {
                    let _ = write!(attrs, r#" {key}="{n}""#);
                }
            }
            format!(r#"<input type="number" step="any" {common} value="{}"{attrs}>"#, esc(default))
        }
        "list(string)" => format!(
            r#"<textarea {common} rows="3" placeholder='["a", "b"]'>{}</textarea>"#,
            esc(default)
        ),
        _ => {
            let mut attrs = String::new();
            if let Some(re) = rule(p, "regex").and_then(|v| v.as_str()).filter(|r| !r.is_empty()) {
                let _ = write!(attrs, r#" pattern="{}""#, esc(re));
            }
            if let Some(e) = rule(p, "error").and_then(|v| v.as_str()).filter(|e| !e.is_empty()) {
                let _ = write!(attrs, r#" title="{}""#, esc(e));
            }
            format!(r#"<input type="text" {common} value="{}"{attrs}>"#, esc(default))
        }
    }
}

/// What the validation allows, in words (shown under the input).
fn hint(p: &TemplateVersionParameter) -> String {
    let mut parts = Vec::new();
    match (rule(p, "min").and_then(|v| v.as_i64()), rule(p, "max").and_then(|v| v.as_i64())) {
        (Some(a), Some(b)) => parts.push(format!("{a} to {b}")),
        (Some(a), None) => parts.push(format!("at least {a}")),
        (None, Some(b)) => parts.push(format!("at most {b}")),
        (None, None) => {}
    }
    if let Some(m) = rule(p, "monotonic").and_then(|v| v.as_str()).filter(|m| !m.is_empty()) {
        parts.push(format!("may only {}", if m == "decreasing" { "decrease" } else { "increase" }));
    }
    if !p.mutable {
        parts.push("cannot be changed after the workspace is created".to_owned());
    }
    parts.join("; ")
}

fn create_page(v: &Viewer, t: &Template, params: &[TemplateVersionParameter]) -> String {
    let title = if t.display_name.is_empty() { &t.name } else { &t.display_name };
    let mut body = format!(
        r#"<p class="crumbs"><a href="/templates">Templates</a> / <a href="/templates/{tn}">{title}</a></p><h1>New workspace</h1><p>{desc}</p>
<form id="create-ws" class="params" data-template-id="{id}"><label>Name <input id="create-ws-name" name="name" required pattern="[A-Za-z0-9_\-]+" autocomplete="off"></label>"#,
        tn = esc(&t.name),
        title = esc(title),
        desc = esc(&t.description),
        id = t.id,
    );
    if params.is_empty() {
        body.push_str(r#"<p class="empty">This template has no parameters.</p>"#);
    } else {
        body.push_str("<fieldset><legend>Parameters</legend>");
    }
    for p in params {
        let label = if p.display_name.is_empty() { &p.name } else { &p.display_name };
        let badge = if p.mutable { "" } else { r#" <span class="badge">immutable</span>"# };
        let _ = write!(
            body,
            r#"<div class="param" data-type="{ty}"><label for="param-{name}">{label}{badge} <small>{ty}</small></label>{input}<p class="help">{desc}</p><p class="help rule">{hint}</p></div>"#,
            name = esc(&p.name),
            label = esc(label),
            ty = esc(&p.type_),
            input = input(p),
            desc = esc(&p.description),
            hint = esc(&hint(p)),
        );
    }
    if !params.is_empty() {
        body.push_str("</fieldset>");
    }
    body.push_str(
        r#"<button type="submit" id="create-ws-submit">Create workspace</button><p class="error" id="create-ws-error" hidden></p></form>"#,
    );
    layout("New workspace", Some(v), &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use codersdk::ParameterOption;
    use serde_json::json;

    fn param(ty: &str, default: Option<&str>) -> TemplateVersionParameter {
        TemplateVersionParameter {
            name: "p".into(),
            display_name: String::new(),
            description: String::new(),
            type_: ty.into(),
            mutable: true,
            default_value: default.map(str::to_owned),
            required: false,
            options: vec![],
            validation: None,
        }
    }

    #[test]
    fn inputs_follow_type_validation_and_options() {
        let mut n = param("number", Some("8000"));
        n.validation = Some(json!({"min": 1024, "max": 65535, "regex": null}));
        let html = input(&n);
        assert!(html.contains(r#"type="number""#) && html.contains(r#"min="1024""#), "{html}");
        assert!(html.contains(r#"max="65535""#) && html.contains(r#"value="8000""#), "{html}");
        assert!(!html.contains("required"), "{html}");
        assert_eq!(hint(&n), "1024 to 65535");

        let mut s = param("string", None);
        s.validation = Some(json!({"regex": "^[a-z]+\"$", "error": "lower <case>"}));
        let html = input(&s);
        assert!(html.contains(r#"pattern="^[a-z]+&quot;$""#), "{html}");
        assert!(html.contains(r#"title="lower &lt;case&gt;""#) && html.contains("required"));

        let mut o = param("string", Some("b"));
        o.options = ["a", "b"]
            .map(|v| ParameterOption {
                name: v.to_uppercase(),
                value: v.into(),
                description: "".into(),
            })
            .to_vec();
        let html = input(&o);
        assert!(html.contains(r#"<option value="b" selected"#), "{html}");
        assert!(!html.contains("Choose"), "{html}");

        let b = input(&param("bool", Some("true")));
        assert!(b.contains(r#"value="true" selected"#), "{b}");
        let mut imm = param("bool", None);
        imm.mutable = false;
        assert!(hint(&imm).contains("cannot be changed"));
    }
}
