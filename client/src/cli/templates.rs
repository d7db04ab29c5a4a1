//! `coder templates init|push|list|versions`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::build::follow_logs;
use super::output::{self, outln, OutputArgs};
use super::Context_;
use codersdk::{
    CreateTemplateRequest, CreateTemplateVersionRequest, ProvisionerJobStatus, SdkError,
};

/// The example templates `coder templates init` offers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Example {
    /// A directory and an agent process on the coderd host (no cloud needed).
    Local,
    /// The agent in its own network namespace behind a NAT (root; for mesh demos).
    Netns,
    /// A Docker container per workspace, from a locally built image (build-image.sh).
    Docker,
}

impl Example {
    /// Its name, as `--id` takes it and as the directory it is written to.
    fn name(self) -> &'static str {
        match self {
            Example::Local => "local",
            Example::Netns => "netns",
            Example::Docker => "docker",
        }
    }

    /// Its files: (name, contents, executable).
    fn files(self) -> &'static [(&'static str, &'static str, bool)] {
        match self {
            Example::Local => {
                &[("main.tf", include_str!("../../../examples/templates/local/main.tf"), false)]
            }
            Example::Netns => {
                &[("main.tf", include_str!("../../../examples/templates/netns/main.tf"), false)]
            }
            Example::Docker => &[
                ("main.tf", include_str!("../../../examples/templates/docker/main.tf"), false),
                (
                    "build-image.sh",
                    include_str!("../../../examples/templates/docker/build-image.sh"),
                    true,
                ),
            ],
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum TemplatesCommand {
    /// Write an example template into a directory.
    Init {
        /// Directory to create (default: ./<example>).
        dir: Option<PathBuf>,
        /// Which example.
        #[arg(long, value_enum, default_value_t = Example::Local)]
        id: Example,
    },
    /// Upload a directory as a new version of a template (creating the template).
    Push {
        /// Template name.
        name: String,
        /// Directory with the template's .tf files.
        #[arg(short, long, default_value = ".")]
        directory: PathBuf,
        /// Version name (default: generated).
        #[arg(long)]
        version_name: Option<String>,
        /// A message describing the version.
        #[arg(short, long, default_value = "")]
        message: String,
        /// Don't ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
    /// Change a template's autostop defaults (template admins).
    Edit {
        name: String,
        /// The TTL new workspaces get (`8h`; `0s`: none).
        #[arg(long)]
        default_ttl: Option<String>,
        /// The longest TTL a workspace may set, and how long a start may
        /// run however busy (`24h`; `0s`: no maximum).
        #[arg(long)]
        max_ttl: Option<String>,
        /// Starts by users who are not template admins, and autostarts,
        /// build the active version (`--require-active-version=false` to
        /// turn it off).
        #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
        require_active_version: Option<bool>,
        /// An icon's URL: `/`-relative or https (empty: none).
        #[arg(long)]
        icon: Option<String>,
    },
    /// List templates.
    #[command(alias = "ls")]
    List(OutputArgs),
    /// List a template's versions.
    Versions {
        name: String,
        #[command(flatten)]
        out: OutputArgs,
    },
}

pub async fn run(ctx: &Context_, cmd: TemplatesCommand) -> anyhow::Result<()> {
    match cmd {
        TemplatesCommand::Init { dir, id } => init(dir, id),
        TemplatesCommand::Push { name, directory, version_name, message, yes: _ } => {
            push(ctx, &name, &directory, version_name, message).await
        }
        TemplatesCommand::Edit { name, default_ttl, max_ttl, require_active_version, icon } => {
            use super::schedule::{format_ms, parse_duration_ms};
            let client = ctx.client()?;
            let t = client.template(&name).await?;
            let req = codersdk::UpdateTemplateMeta {
                default_ttl_ms: default_ttl.as_deref().map(parse_duration_ms).transpose()?,
                max_ttl_ms: max_ttl.as_deref().map(parse_duration_ms).transpose()?,
                require_active_version,
                icon,
                ..Default::default()
            };
            let t = client.update_template_meta(t.id, &req).await?;
            let show = |ms: i64| if ms == 0 { "none".to_owned() } else { format_ms(ms) };
            outln!(
                "Template {:?}: default TTL {}, max TTL {}, require active version {}.",
                t.name,
                show(t.default_ttl_ms),
                show(t.max_ttl_ms),
                t.require_active_version
            )?;
            Ok(())
        }
        TemplatesCommand::List(out) => {
            let client = ctx.client()?;
            let templates = client.templates().await?;
            let rows = templates
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.active_version_id.to_string(),
                        t.updated_at.format("%Y-%m-%d %H:%M").to_string(),
                    ]
                })
                .collect();
            output::print(out.output, &templates, &["name", "active version", "updated"], rows)
        }
        TemplatesCommand::Versions { name, out } => {
            let client = ctx.client()?;
            let t = client.template(&name).await?;
            let versions = client.template_versions(t.id).await?;
            let rows = versions
                .iter()
                .map(|v| {
                    let active = if v.id == t.active_version_id { "active" } else { "" };
                    vec![
                        v.name.clone(),
                        v.created_at.format("%Y-%m-%d %H:%M").to_string(),
                        format!("{:?}", v.job.status).to_lowercase(),
                        active.to_owned(),
                    ]
                })
                .collect();
            output::print(out.output, &versions, &["name", "created", "status", "active"], rows)
        }
    }
}

fn init(dir: Option<PathBuf>, example: Example) -> anyhow::Result<()> {
    let name = example.name();
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.join("main.tf").exists() {
        bail!("{} already has a main.tf; choose another directory", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    for &(file, contents, executable) in example.files() {
        let path = dir.join(file);
        std::fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    outln!("Wrote the {name:?} example to {}.", dir.display())?;
    if example == Example::Docker {
        outln!("Build its image first (root, dockerd running): {}/build-image.sh", dir.display())?;
    }
    outln!("Push it with: coder templates push {name} -d {}", dir.display())?;
    Ok(())
}

/// Packs a template directory as a tar (skipping terraform's own files).
pub fn pack(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let archive = codersdk::archive::pack_dir(dir)?;
    let has_tf = tar::Archive::new(archive.as_slice()).entries()?.any(|e| {
        e.is_ok_and(|e| {
            e.header().entry_type() == tar::EntryType::Regular
                && e.path().is_ok_and(|p| p.extension().is_some_and(|x| x == "tf"))
        })
    });
    if !has_tf {
        bail!("{} has no .tf files; is it a template directory?", dir.display());
    }
    Ok(archive)
}

async fn push(
    ctx: &Context_,
    name: &str,
    dir: &Path,
    version_name: Option<String>,
    message: String,
) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let archive = pack(dir)?;
    outln!("Uploading {} ({} KiB)…", dir.display(), archive.len().div_ceil(1024))?;
    let file_id = client.upload("application/x-tar", archive).await?;
    let existing = match client.template(name).await {
        Ok(t) => Some(t),
        Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => None,
        Err(e) => return Err(e.into()),
    };
    let version = client
        .create_template_version(&CreateTemplateVersionRequest {
            file_id,
            template_id: existing.as_ref().map(|t| t.id),
            name: version_name.unwrap_or_default(),
            message,
        })
        .await?;
    outln!("Importing version {} (terraform init + plan)…", version.name)?;
    let job =
        follow_logs(&client, &format!("/api/v2/templateversions/{}/logs", version.id)).await?;
    if job.status != ProvisionerJobStatus::Succeeded {
        bail!("the import {}: {}", format!("{:?}", job.status).to_lowercase(), job.error);
    }
    let resources = client.template_version_resources(version.id).await.unwrap_or_default();
    for r in resources.iter().filter(|r| r.transition == codersdk::Transition::Start) {
        let agents: Vec<&str> = r.agents.iter().map(|a| a.name.as_str()).collect();
        outln!(
            "  {}.{}{}",
            r.type_,
            r.name,
            if agents.is_empty() {
                String::new()
            } else {
                format!(" (agents: {})", agents.join(", "))
            }
        )?;
    }
    match existing {
        Some(t) => {
            client.set_active_version(t.id, version.id).await?;
            outln!("Template {name:?} updated; version {} is active.", version.name)?;
        }
        None => {
            let created = client
                .create_template(&CreateTemplateRequest {
                    name: name.to_owned(),
                    template_version_id: version.id,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => outln!(
                    "Template {name:?} created. Create a workspace: coder create <name> -t {name}"
                )?,
                Err(SdkError::Api { body, .. }) => bail!("create template: {}", body.message),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
