//! Workspace lifecycle commands: `create`, `list`, `show`, `start`, `stop`,
//! `restart`, `delete`, `logs` (`update` is in `super::update`). Each build command streams the build's logs
//! live and exits non-zero, naming the failing stage, when the build fails.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context};

use super::confirm::confirm;
use super::output::{self, out, outln, OutputArgs, OutputFormat};
use super::Context_;
use codersdk::{
    Client, CreateWorkspaceBuildRequest, CreateWorkspaceRequest, ProvisionerJob,
    ProvisionerJobStatus, SdkError, TemplateVersionParameter, Transition, Workspace,
    WorkspaceBuildParameter,
};

/// Prints a job's logs as they arrive; returns the finished job. Stops as
/// soon as stdout fails (the reader went away), with that error.
pub async fn follow_logs(client: &Client, logs_path: &str) -> anyhow::Result<ProvisionerJob> {
    let mut stage = String::new();
    let mut last_stage = String::new();
    // The callback cannot fail the follow, so it parks the error and wakes
    // the select below, which drops the follow.
    let failed = std::cell::Cell::new(None);
    let wake = tokio::sync::Notify::new();
    let follow = client.follow_job_logs(logs_path, |log| {
        let printed = (|| {
            if log.stage != stage {
                stage = log.stage.clone();
                outln!("==> {stage}")?;
            }
            let prefix = if log.level == codersdk::LogLevel::Error { "error: " } else { "" };
            outln!("    {prefix}{}", log.output)
        })();
        last_stage = log.stage.clone();
        if let Err(e) = printed {
            failed.set(Some(e));
            wake.notify_one();
        }
    });
    let job = tokio::select! {
        job = follow => job?,
        () = wake.notified() => {
            return Err(failed.take().map_or_else(|| anyhow::anyhow!("stdout failed"), Into::into))
        }
    };
    if job.status == ProvisionerJobStatus::Failed && !last_stage.is_empty() {
        eprintln!("The build failed during \"{last_stage}\".");
    }
    Ok(job)
}

/// `[OWNER/]NAME`.
pub async fn resolve(client: &Client, name: &str) -> anyhow::Result<Workspace> {
    let (owner, ws) = name.split_once('/').unwrap_or(("me", name));
    match client.workspace_by_owner_and_name(owner, ws).await {
        Ok(w) => Ok(w),
        Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
            bail!("No workspace named {name:?}. See your workspaces with `coder list`.")
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) fn parse_params(raw: &[String]) -> anyhow::Result<Vec<WorkspaceBuildParameter>> {
    raw.iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .with_context(|| format!("--parameter {p:?} must look like name=value"))?;
            Ok(WorkspaceBuildParameter { name: k.to_owned(), value: v.to_owned() })
        })
        .collect()
}

/// Asks on the terminal for each declared parameter that neither `given`
/// nor `carried` (a previous build's values) has: every one without a
/// default, and with `ask_defaults` also those with one (Enter keeps the
/// default). Without a terminal, a parameter without a default is an error
/// that says how to pass it; the others take their defaults.
pub(super) fn ask_missing(
    declared: &[TemplateVersionParameter],
    given: &mut Vec<WorkspaceBuildParameter>,
    carried: &[WorkspaceBuildParameter],
    ask_defaults: bool,
) -> anyhow::Result<()> {
    let terminal = std::io::stdin().is_terminal();
    for p in declared {
        let known = |v: &[WorkspaceBuildParameter]| v.iter().any(|g| g.name == p.name);
        if known(given) || known(carried) || (p.default_value.is_some() && !ask_defaults) {
            continue;
        }
        if !terminal {
            if p.default_value.is_none() {
                bail!("Parameter {:?} is required; pass --parameter {}=<value>.", p.name, p.name);
            }
            continue;
        }
        let default = p.default_value.clone().unwrap_or_default();
        out!(
            "{} ({}){}: ",
            if p.display_name.is_empty() { &p.name } else { &p.display_name },
            p.type_,
            if default.is_empty() { String::new() } else { format!(" [{default}]") }
        )?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let v = line.trim();
        let v = if v.is_empty() { default } else { v.to_owned() };
        given.push(WorkspaceBuildParameter { name: p.name.clone(), value: v });
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Workspace name.
    pub name: String,
    /// Template name.
    #[arg(short, long)]
    pub template: String,
    /// Parameter values, `name=value` (repeatable).
    #[arg(long = "parameter", value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
    /// Don't prompt: use defaults for unset parameters.
    #[arg(short, long)]
    pub yes: bool,
}

pub async fn create(ctx: &Context_, args: CreateArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let template = match client.template(&args.template).await {
        Ok(t) => t,
        Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
            bail!("No template named {:?}. See `coder templates list`.", args.template)
        }
        Err(e) => return Err(e.into()),
    };
    let mut params = parse_params(&args.parameters)?;
    let declared = client.template_version_parameters(template.active_version_id).await?;
    ask_missing(&declared, &mut params, &[], !args.yes)?;
    let ws = client
        .create_workspace(
            "me",
            &CreateWorkspaceRequest {
                name: args.name.clone(),
                template_id: template.id,
                template_version_id: None,
                rich_parameter_values: params,
            },
        )
        .await
        .map_err(api_message)?;
    outln!("Building workspace {:?} from template {:?}…", ws.name, template.name)?;
    finish_build(&client, ws.latest_build.id, &ws.name, Transition::Start).await
}

pub(super) fn api_message(e: SdkError) -> anyhow::Error {
    match e {
        SdkError::Api { body, .. } if !body.detail.is_empty() => {
            anyhow::anyhow!("{} {}", body.message, body.detail)
        }
        SdkError::Api { body, .. } => anyhow::anyhow!("{}", body.message),
        e => e.into(),
    }
}

pub(super) async fn finish_build(
    client: &Client,
    build: uuid::Uuid,
    name: &str,
    t: Transition,
) -> anyhow::Result<()> {
    let job = follow_logs(client, &format!("/api/v2/workspacebuilds/{build}/logs")).await?;
    match job.status {
        ProvisionerJobStatus::Succeeded => {
            let done = match t {
                Transition::Start => "is running",
                Transition::Stop => "is stopped",
                Transition::Delete => "was deleted",
            };
            outln!("Workspace {name:?} {done}.")?;
            Ok(())
        }
        s => bail!(
            "the {} build of {name:?} {}: {}",
            t.as_str(),
            format!("{s:?}").to_lowercase(),
            job.error
        ),
    }
}

pub async fn transition(
    ctx: &Context_,
    name: &str,
    t: Transition,
    params: &[String],
) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let ws = resolve(&client, name).await?;
    build(&client, &ws, t, params).await
}

/// `coder delete`: asks first unless `yes` (and refuses without a terminal
/// to ask on), then builds the `delete` transition.
pub async fn delete(ctx: &Context_, name: &str, yes: bool) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let ws = resolve(&client, name).await?;
    confirm(&format!("delete workspace {}/{}", ws.owner_name, ws.name), yes)?;
    build(&client, &ws, Transition::Delete, &[]).await
}

/// Starts a build of `ws` and follows it to its end.
pub(super) async fn build(
    client: &Client,
    ws: &Workspace,
    t: Transition,
    params: &[String],
) -> anyhow::Result<()> {
    let b = client
        .create_workspace_build(
            ws.id,
            &CreateWorkspaceBuildRequest {
                transition: t,
                template_version_id: None,
                rich_parameter_values: parse_params(params)?,
            },
        )
        .await
        .map_err(api_message)?;
    outln!(
        "{} workspace {:?} (build #{})…",
        match t {
            Transition::Start => "Starting",
            Transition::Stop => "Stopping",
            Transition::Delete => "Deleting",
        },
        ws.name,
        b.build_number
    )?;
    finish_build(client, b.id, &ws.name, t).await
}

pub async fn list(ctx: &Context_, all: bool, out: OutputArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let list = client.workspaces(all).await?;
    let now = chrono::Utc::now();
    let rows = list
        .iter()
        .map(|w| {
            vec![
                format!("{}/{}", w.owner_name, w.name),
                w.template_name.clone(),
                w.latest_build.status.to_string(),
                w.latest_build.created_at.format("%Y-%m-%d %H:%M").to_string(),
                super::schedule::deadline(w)
                    .map_or_else(|| "-".to_owned(), |d| super::schedule::format_deadline(d, now)),
                w.outdated.to_string(),
            ]
        })
        .collect();
    let headers = ["workspace", "template", "status", "last built", "stops at", "outdated"];
    output::print(out.output, &list, &headers, rows)
}

pub async fn show(ctx: &Context_, name: &str, out: OutputArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let ws = resolve(&client, name).await?;
    let resources = client.workspace_build_resources(ws.latest_build.id).await?;
    if out.output == OutputFormat::Json {
        let mut v = BTreeMap::new();
        v.insert("workspace", serde_json::to_value(&ws)?);
        v.insert("resources", serde_json::to_value(&resources)?);
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    outln!(
        "{}/{}  template {}  status {}{}",
        ws.owner_name,
        ws.name,
        ws.template_name,
        ws.latest_build.status,
        if ws.outdated {
            "  (outdated: `coder update` moves it to the active version)"
        } else {
            ""
        }
    )?;
    let mut rows = Vec::new();
    for r in &resources {
        let kind = format!(
            "{}, {}",
            if r.computational { "computational" } else { "peripheral" },
            if r.persistent { "persistent" } else { "ephemeral" }
        );
        rows.push(vec![format!("{}.{}", r.type_, r.name), kind, String::new()]);
        for a in &r.agents {
            rows.push(vec![
                format!("  └ agent {}", a.name),
                format!("{} / {}", a.status, a.lifecycle_state),
                a.apps
                    .iter()
                    .map(|p| match p.health {
                        codersdk::AppHealth::Disabled => p.slug.clone(),
                        h => format!("{} ({})", p.slug, h.as_str()),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ]);
            for m in client.agent_metadata(a.id).await.unwrap_or_default() {
                let v = if m.error.is_empty() { m.value } else { format!("error: {}", m.error) };
                rows.push(vec![format!("      {}", m.key), v, String::new()]);
            }
        }
    }
    out!("{}", output::table(&["resource", "kind", "apps"], &rows))?;
    Ok(())
}

pub async fn logs(ctx: &Context_, name: &str, follow: bool) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let ws = resolve(&client, name).await?;
    let path = format!("/api/v2/workspacebuilds/{}/logs", ws.latest_build.id);
    if follow {
        follow_logs(&client, &path).await?;
    } else {
        for log in client.job_logs(&path, 0).await? {
            outln!("{} [{}] {}", log.created_at.format("%H:%M:%S"), log.stage, log.output)?;
        }
    }
    Ok(())
}

/// Starts a build and waits for it without printing to stdout (which may be
/// an SSH stream); progress goes to stderr.
pub async fn transition_quiet(
    client: &Client,
    ws: &Workspace,
    t: Transition,
) -> anyhow::Result<()> {
    let b = client
        .create_workspace_build(
            ws.id,
            &CreateWorkspaceBuildRequest {
                transition: t,
                template_version_id: None,
                rich_parameter_values: vec![],
            },
        )
        .await
        .map_err(api_message)?;
    let job = client
        .follow_job_logs(&format!("/api/v2/workspacebuilds/{}/logs", b.id), |l| {
            eprintln!("    {}", l.output)
        })
        .await?;
    if job.status != ProvisionerJobStatus::Succeeded {
        bail!(
            "the {} build of {:?} {}: {}",
            t.as_str(),
            ws.name,
            format!("{:?}", job.status).to_lowercase(),
            job.error
        );
    }
    Ok(())
}
