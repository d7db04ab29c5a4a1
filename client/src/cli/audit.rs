//! `coder audit`: the audit log, newest first (owners and auditors).
//! The flags build Coder's search query; `--query` passes one as is.

use codersdk::{AuditAction, ResourceType};

use super::output::{self, OutputArgs};
use super::Context_;

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Only what this user did.
    #[arg(long)]
    pub user: Option<String>,
    /// Only this action (create, write, delete, start, stop, login, logout, cancel).
    #[arg(long)]
    pub action: Option<AuditAction>,
    /// Only this kind of resource (user, api_key, template, template_version,
    /// workspace, workspace_build).
    #[arg(long)]
    pub resource_type: Option<ResourceType>,
    /// Only the last DURATION (`30m`, `2h`, `7d`).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<chrono::Duration>,
    /// More search terms in Coder's syntax (`time_before:2026-01-02`).
    #[arg(long, default_value = "")]
    pub query: String,
    /// At most this many rows.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[command(flatten)]
    pub out: OutputArgs,
}

fn parse_since(s: &str) -> Result<chrono::Duration, String> {
    let s = s.trim();
    if let Some(days) = s.strip_suffix('d') {
        let d: i64 = days.parse().map_err(|_| format!("{s:?} is not a duration; try 7d or 2h"))?;
        return Ok(chrono::Duration::days(d));
    }
    let d = super::speedtest::parse_duration(s)?;
    chrono::Duration::from_std(d).map_err(|e| e.to_string())
}

/// The search query the flags describe.
fn query(args: &AuditArgs, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut terms = Vec::new();
    if let Some(u) = &args.user {
        terms.push(format!("username:{u}"));
    }
    if let Some(a) = args.action {
        terms.push(format!("action:{a}"));
    }
    if let Some(r) = args.resource_type {
        terms.push(format!("resource_type:{r}"));
    }
    if let Some(since) = args.since {
        terms.push(format!(
            "time_after:{}",
            (now - since).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    if !args.query.trim().is_empty() {
        terms.push(args.query.trim().to_owned());
    }
    terms.join(" ")
}

pub async fn run(ctx: &Context_, args: AuditArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let page = client.audit_logs(&query(&args, chrono::Utc::now()), args.limit, 0).await?;
    let rows = page
        .audit_logs
        .iter()
        .map(|l| {
            vec![
                l.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                l.username.clone(),
                l.action.to_string(),
                l.resource_type.to_string(),
                l.resource_name.clone(),
                l.status_code.to_string(),
                l.ip.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::print(
        args.out.output,
        &page.audit_logs,
        &["time", "user", "action", "resource type", "resource", "status", "ip"],
        rows,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: AuditArgs,
    }

    #[test]
    fn flags_become_a_search_query() {
        let t = T::parse_from(["t", "--user", "alice", "--action", "login", "--since", "2h"]);
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-02T12:00:00Z").unwrap().into();
        assert_eq!(query(&t.a, now), "username:alice action:login time_after:2026-01-02T10:00:00Z");
        assert!(T::try_parse_from(["t", "--action", "explode"]).is_err());
        assert_eq!(parse_since("7d").unwrap(), chrono::Duration::days(7));
    }
}
