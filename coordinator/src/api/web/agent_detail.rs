//! An agent's detail on the workspace page: its metadata (the template's
//! `coder_agent` `metadata` blocks, the latest value the agent reported for
//! each), its script logs grouped by log source (`coder_script` display
//! names, the startup and shutdown scripts), and the mesh path coderd has to
//! it. Read once for the page and again for each live update
//! (`super::live`), so both show the same thing.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use codersdk::{AgentLogSource, AgentMetadataDescription, WorkspaceAgentLog};
use serde_json::{json, Value};
use uuid::Uuid;

use super::super::AppState;
use super::pages::esc;
use crate::database::{agent_scripts, agents};

/// Log lines shown per agent on the page (the newest; the API has them all).
const MAX_LOG_LINES: usize = 2000;

/// One metadata item as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataItem {
    pub key: String,
    pub display_name: String,
    /// `None` until the agent's first report.
    pub value: Option<String>,
    pub error: String,
    pub collected_at: Option<DateTime<Utc>>,
}

/// Everything the page shows about one agent besides its row.
#[derive(Debug, Clone, Default)]
pub struct AgentDetail {
    pub metadata: Vec<MetadataItem>,
    pub sources: Vec<AgentLogSource>,
    pub logs: Vec<WorkspaceAgentLog>,
    /// Direct or relayed, and the round-trip time; `None` before coderd
    /// has connected to the agent.
    pub path: Option<(bool, Duration)>,
}

/// The declared metadata with the latest reported values, in the
/// template's order.
pub async fn metadata(state: &AppState, agent: Uuid) -> Result<Vec<MetadataItem>, sqlx::Error> {
    let declared: Vec<AgentMetadataDescription> =
        agents::declared_metadata(&state.db, agent).await?;
    let reported = agents::metadata(&state.db, agent).await?;
    Ok(declared
        .into_iter()
        .map(|d| {
            let r = reported.iter().find(|r| r.key == d.key);
            MetadataItem {
                display_name: if d.display_name.is_empty() {
                    d.key.clone()
                } else {
                    d.display_name
                },
                key: d.key,
                value: r.map(|r| r.value.clone()),
                error: r.map(|r| r.error.clone()).unwrap_or_default(),
                collected_at: r.map(|r| r.collected_at),
            }
        })
        .collect())
}

pub async fn load(state: &AppState, agent: Uuid) -> Result<AgentDetail, sqlx::Error> {
    let mut logs = agents::logs(&state.db, agent).await?;
    if logs.len() > MAX_LOG_LINES {
        logs.drain(..logs.len() - MAX_LOG_LINES);
    }
    Ok(AgentDetail {
        metadata: metadata(state, agent).await?,
        sources: agent_scripts::log_sources(&state.db, agent).await?,
        logs,
        path: state.mesh.path(agent),
    })
}

pub fn path_text(path: Option<(bool, Duration)>) -> String {
    match path {
        Some((true, rtt)) => format!("direct, {} ms", rtt.as_millis()),
        Some((false, rtt)) => format!("relay, {} ms", rtt.as_millis()),
        None => "no connection from the dashboard yet".to_owned(),
    }
}

/// The live part of an agent's detail, for the workspace stream: metadata
/// values and the mesh path change in place; a new log line (`log_id`)
/// makes the page re-render.
pub async fn live(state: &AppState, agent: Uuid) -> Result<Value, sqlx::Error> {
    let items = metadata(state, agent).await?;
    Ok(json!({
        "metadata": items.iter().map(|m| json!({
            "key": m.key,
            "value": m.value,
            "error": m.error,
        })).collect::<Vec<_>>(),
        "log_id": agents::latest_log_id(&state.db, agent).await?,
        "path": path_text(state.mesh.path(agent)),
    }))
}

/// The metadata table: one row per declared item, `data-key` on each row
/// and `data-value` on its value cell (updated live by the page's script).
pub fn metadata_html(items: &[MetadataItem]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        r#"<table class="metadata"><thead><tr><th>Metadata</th><th>Value</th></tr></thead><tbody>"#,
    );
    for m in items {
        let (cls, text) = match (&m.value, m.error.is_empty()) {
            (_, false) => ("error", m.error.clone()),
            (Some(v), true) => ("", v.clone()),
            (None, true) => ("pending", "waiting for the agent's first report".to_owned()),
        };
        let title = m
            .collected_at
            .map(|t| format!(" title=\"collected {}\"", t.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default();
        let _ = write!(
            out,
            r#"<tr data-key="{key}"><td>{name}</td><td class="value {cls}" data-value="{text}"{title}>{text}</td></tr>"#,
            key = esc(&m.key),
            name = esc(&m.display_name),
            text = esc(&text),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The agent's logs, one folded block per log source (in the order the
/// sources were registered; lines without a known source last).
pub fn logs_html(agent: Uuid, sources: &[AgentLogSource], logs: &[WorkspaceAgentLog]) -> String {
    // The newest line's id (as the live stream's `log_id`, `null` for none).
    let newest = logs.last().map_or_else(|| "null".to_owned(), |l| l.id.to_string());
    let mut out = format!(r#"<div class="agent-logs" data-log-id="{newest}"><h4>Logs</h4>"#);
    if logs.is_empty() {
        out.push_str(r#"<p class="empty">No script output yet.</p></div>"#);
        return out;
    }
    let mut groups: Vec<(Option<Uuid>, String, Vec<&WorkspaceAgentLog>)> =
        sources.iter().map(|s| (Some(s.id), s.display_name.clone(), Vec::new())).collect();
    for l in logs {
        let at = groups.iter().position(|(id, name, _)| match (id, l.source_id) {
            (Some(id), Some(s)) => *id == s,
            (None, None) => *name == l.source,
            _ => false,
        });
        match at {
            Some(i) => groups[i].2.push(l),
            None => groups.push((None, l.source.clone(), vec![l])),
        }
    }
    for (id, name, lines) in groups.iter().filter(|g| !g.2.is_empty()) {
        let key = id.map(|i| i.to_string()).unwrap_or_else(|| name.clone());
        let text: String = lines.iter().map(|l| format!("{}\n", l.output)).collect();
        let _ = write!(
            out,
            r#"<details class="log-source" id="logs-{agent}-{dom}" data-source="{name}"><summary>{name} <small>({n} lines)</small></summary><pre>{text}</pre></details>"#,
            dom = esc(&key.replace(|c: char| !c.is_ascii_alphanumeric(), "-")),
            name = esc(name),
            n = lines.len(),
            text = esc(&text),
        );
    }
    out.push_str("</div>");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn log(id: i64, source: &str, source_id: Option<Uuid>, output: &str) -> WorkspaceAgentLog {
        WorkspaceAgentLog {
            id,
            created_at: Utc::now(),
            source: source.to_owned(),
            source_id,
            level: codersdk::LogLevel::Info,
            output: output.to_owned(),
        }
    }

    #[test]
    fn logs_group_by_source_and_escape() {
        let agent = Uuid::from_u128(9);
        let dot = Uuid::from_u128(1);
        let sources = vec![AgentLogSource {
            id: dot,
            workspace_agent_id: agent,
            created_at: Utc::now(),
            display_name: "Dotfiles".into(),
            icon: String::new(),
        }];
        let logs = vec![
            log(1, "Startup Script", None, "up <b>"),
            log(2, "Dotfiles", Some(dot), "linked"),
            log(3, "Startup Script", None, "again"),
        ];
        let html = logs_html(agent, &sources, &logs);
        let dotfiles = html.find("data-source=\"Dotfiles\"").unwrap();
        let startup = html.find("data-source=\"Startup Script\"").unwrap();
        assert!(dotfiles < startup, "{html}");
        assert!(html.contains("up &lt;b&gt;\nagain\n"), "{html}");
        assert!(html.contains("(2 lines)"), "{html}");
        assert!(logs_html(agent, &sources, &[]).contains("No script output yet"));
    }

    #[test]
    fn metadata_shows_values_errors_and_pending() {
        let item = |key: &str, value: Option<&str>, error: &str| MetadataItem {
            key: key.into(),
            display_name: format!("{key} name"),
            value: value.map(str::to_owned),
            error: error.into(),
            collected_at: None,
        };
        let html = metadata_html(&[
            item("load", Some("0.1 0.2 0.3"), ""),
            item("bad", Some(""), "exit status 1"),
            item("new", None, ""),
        ]);
        assert!(html.contains(r#"data-value="0.1 0.2 0.3""#), "{html}");
        assert!(html.contains(r#"class="value error" data-value="exit status 1""#), "{html}");
        assert!(html.contains(r#"class="value pending""#), "{html}");
        assert_eq!(metadata_html(&[]), "");
    }
}
